//! Unit tests of the wire protocol: encoding, decoding and limits.

use super::*;

#[test]
fn decodes_every_type() {
    let cases: &[(&str, ClientMsg)] = &[
        (
            r#"{"v":1,"type":"chat","text":"hi"}"#,
            ClientMsg::Chat { text: "hi".into() },
        ),
        (
            r#"{"type":"react","emoji":"🔥"}"#,
            ClientMsg::React {
                emoji: "🔥".into()
            },
        ),
        (
            r#"{"v":1,"type":"vote","poll":"p1","option":2}"#,
            ClientMsg::Vote {
                poll: "p1".into(),
                option: 2,
            },
        ),
        (r#"{"v":1,"type":"pin"}"#, ClientMsg::Pin { id: None }),
        (
            r#"{"v":1,"type":"question_state","question":"q1","state":"answered"}"#,
            ClientMsg::QuestionState {
                question: "q1".into(),
                state: QuestionState::Answered,
            },
        ),
        (
            r#"{"v":1,"type":"tip","from":"Bo","amount_minor":500,"currency":"EUR"}"#,
            ClientMsg::Tip(TipSpec {
                from: "Bo".into(),
                amount_minor: 500,
                currency: "EUR".into(),
                message: None,
            }),
        ),
    ];
    for (json, want) in cases {
        assert_eq!(&decode(json.as_bytes()).unwrap().msg, want, "{json}");
    }
    let f = decode(br#"{"v":1,"type":"chat","text":"x","ref":"c7"}"#).unwrap();
    assert_eq!(f.r#ref.as_deref(), Some("c7"));
}

#[test]
fn bad_input_gets_typed_errors() {
    assert_eq!(decode(b"nope").unwrap_err().code(), ErrorCode::BadJson);
    assert_eq!(decode(b"[1,2]").unwrap_err().code(), ErrorCode::BadJson);
    assert_eq!(
        decode(br#"{"v":2,"type":"chat"}"#).unwrap_err().code(),
        ErrorCode::UnsupportedVersion
    );
    assert_eq!(
        decode(br#"{"v":"1","type":"chat"}"#).unwrap_err().code(),
        ErrorCode::UnsupportedVersion
    );
    assert_eq!(
        decode(br#"{"v":1,"type":"dance"}"#).unwrap_err().code(),
        ErrorCode::UnknownType
    );
    assert_eq!(
        decode(br#"{"v":1}"#).unwrap_err().code(),
        ErrorCode::UnknownType
    );
    assert_eq!(
        decode(br#"{"v":1,"type":7}"#).unwrap_err().code(),
        ErrorCode::UnknownType
    );
    assert_eq!(
        decode(br#"{"v":1,"type":"chat","text":5}"#)
            .unwrap_err()
            .code(),
        ErrorCode::BadFrame
    );
    assert_eq!(
        decode(br#"{"v":1,"type":"vote","poll":"p","option":-1}"#)
            .unwrap_err()
            .code(),
        ErrorCode::BadFrame
    );
    let long_ref = format!(r#"{{"type":"chat","text":"x","ref":"{}"}}"#, "r".repeat(65));
    assert_eq!(
        decode(long_ref.as_bytes()).unwrap_err().code(),
        ErrorCode::BadFrame
    );
}

#[test]
fn server_frames_carry_version_and_round_trip() {
    let m = ServerMsg::PollTally {
        poll: "p1".into(),
        tallies: vec![1, 2],
        version: 3,
    };
    let s = encode(&m);
    assert!(s.starts_with(r#"{"v":1,"type":"poll_tally","#), "{s}");
    let back: ServerMsg = serde_json::from_str(&s).unwrap();
    assert_eq!(back, m);
    let a = encode(&ServerMsg::Ack {
        r#ref: None,
        id: None,
    });
    assert_eq!(a, r#"{"v":1,"type":"ack"}"#);
}

#[test]
fn decode_never_panics_on_truncated_or_mutated_seeds() {
    let seeds = [
        r#"{"v":1,"type":"chat","text":"hi","ref":"c1"}"#,
        r#"{"v":1,"type":"poll_open","question":"q","options":["a","b"],"duration_secs":30}"#,
        r#"{"v":1,"type":"tip","from":"A","amount_minor":500,"currency":"EUR"}"#,
        r#"{"v":1,"type":"question_state","question":"q1","state":"pinned"}"#,
    ];
    for seed in seeds {
        let b = seed.as_bytes();
        for cut in 0..b.len() {
            let _ = decode(&b[..cut]);
        }
        for i in 0..b.len() {
            for x in [0u8, b'"', b'{', b'}', 0xff, b'9', b'-'] {
                let mut m = b.to_vec();
                m[i] = x;
                if let Err(e) = decode(&m) {
                    let _ = encode(&error(e.code(), e.to_string(), None));
                }
            }
        }
    }
}
