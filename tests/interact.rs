//! Interaction channel against a real node with real WebSocket clients (tokio-tungstenite):
//! chat order and resume, rate limits, the permission matrix, polls, Q&A, reactions,
//! bad frames, slow consumers and dead clients, stream-scoped tokens, and votes counted once
//! per user id.

mod interact_support;

use std::time::Duration;

use anyhow::Result;
use estuary::interact::Role;
use interact_support::{one_ack_one_duplicate, refused, token, token_for, Client, Node};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn chat_order_history_and_resume() -> Result<()> {
    let node = Node::start("history_size = 50").await?;
    let host = token(Role::Host, "host");
    let mut h = node.connect("room1", Some(&host)).await?;
    assert_eq!(h.welcome["user"]["role"], "host");
    let mut watcher = node.connect("room1", None).await?;
    assert_eq!(watcher.welcome["anonymous"], true);
    watcher.expect("state").await?;
    let mut ids = Vec::new();
    for i in 0..10 {
        let r = h
            .request(
                json!({"type": "chat", "text": format!("m{i}")}),
                &format!("c{i}"),
            )
            .await?;
        assert_eq!(r["type"], "ack", "{r}");
        ids.push(r["id"].as_str().unwrap().to_owned());
    }
    // The watcher sees all ten in order.
    for (i, id) in ids.iter().enumerate() {
        let m = watcher.expect("chat").await?;
        assert_eq!(m["text"], format!("m{i}"));
        assert_eq!(m["id"], id.as_str());
        assert_eq!(m["user"]["id"], "host");
    }
    // A late joiner gets the history.
    let mut late = node.connect("room1", None).await?;
    let hist = late.expect("history").await?;
    let texts: Vec<&str> = hist["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, (0..10).map(|i| format!("m{i}")).collect::<Vec<_>>());
    // A reconnecting client resumes after the last id it saw: no gap, no duplicate.
    let mut resumed = Client::connect(&node.ws_url("room1", &format!("?after={}", ids[5]))).await?;
    let hist = resumed.expect("history").await?;
    assert_eq!(hist["complete"], true);
    let got: Vec<&str> = hist["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, ids[6..].iter().map(String::as_str).collect::<Vec<_>>());
    // Resume by frame too.
    resumed
        .send(json!({"v":1,"type":"resume","after": ids[8]}))
        .await?;
    let hist = resumed.expect("history").await?;
    assert_eq!(hist["messages"].as_array().unwrap().len(), 1);
    Ok(())
}

#[tokio::test]
async fn rate_limits_refuse_with_retry_after() -> Result<()> {
    let node =
        Node::start("chat_burst = 2\nchat_rate_per_min = 1\nconn_burst = 8\nconn_rate_per_sec = 1")
            .await?;
    let v = token(Role::Viewer, "v1");
    let mut c = node.connect("rl", Some(&v)).await?;
    for i in 0..2 {
        let r = c
            .request(json!({"type":"chat","text":"hi"}), &format!("a{i}"))
            .await?;
        assert_eq!(r["type"], "ack", "{r}");
    }
    let r = c.request(json!({"type":"chat","text":"hi"}), "a2").await?;
    assert_eq!(r["code"], "rate_limited", "{r}");
    assert!(r["retry_after_ms"].as_u64().unwrap() > 0);
    // The limit is per user: a second connection of the same user is refused too.
    let mut c2 = node.connect("rl", Some(&v)).await?;
    let r = c2.request(json!({"type":"chat","text":"hi"}), "b0").await?;
    assert_eq!(r["code"], "rate_limited", "{r}");
    // Per connection: frames beyond the burst are refused whatever their type.
    let mut refused = 0;
    for _ in 0..12 {
        c2.send(json!({"v":1,"type":"resume","after":"0-0"}))
            .await?;
    }
    for _ in 0..12 {
        let f = c2
            .expect_where("history or error", |f| {
                f["type"] == "history" || f["type"] == "error"
            })
            .await?;
        if f["code"] == "rate_limited" {
            refused += 1;
        }
    }
    assert!(refused >= 4, "refused {refused}");
    Ok(())
}

#[tokio::test]
async fn permission_matrix() -> Result<()> {
    let node = Node::start("").await?;
    let mut viewer = node
        .connect("perm", Some(&token(Role::Viewer, "v")))
        .await?;
    let mut moder = node
        .connect("perm", Some(&token(Role::Moderator, "m")))
        .await?;
    let mut host = node.connect("perm", Some(&token(Role::Host, "h"))).await?;
    let mut anon = node.connect("perm", None).await?;
    let msg = viewer
        .request(json!({"type":"chat","text":"hello"}), "1")
        .await?;
    let msg_id = msg["id"].as_str().unwrap().to_owned();
    let poll = json!({"type":"poll_open","question":"q?","options":["a","b"],"duration_secs":30});
    let host_only = [
        poll.clone(),
        json!({"type":"pin","id": msg_id}),
        json!({"type":"system","text":"hi all"}),
        json!({"type":"tip","from":"Ann","amount_minor":500,"currency":"EUR"}),
    ];
    let mod_only = [
        json!({"type":"timeout","user":"x","secs":5}),
        json!({"type":"ban","user":"x"}),
        json!({"type":"unban","user":"x"}),
        json!({"type":"slow_mode","secs":0}),
    ];
    for (i, f) in host_only.iter().enumerate() {
        assert_eq!(
            viewer.request(f.clone(), &format!("hv{i}")).await?["code"],
            "forbidden",
            "{f}"
        );
        assert_eq!(
            moder.request(f.clone(), &format!("hm{i}")).await?["code"],
            "forbidden",
            "{f}"
        );
        assert_eq!(
            host.request(f.clone(), &format!("hh{i}")).await?["type"],
            "ack",
            "{f}"
        );
    }
    // Host-originated events carry the timeline stamp.
    let tip = anon.expect("tip").await?;
    assert!(tip["stamp"]["pdt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(tip["amount_minor"], 500);
    for (i, f) in mod_only.iter().enumerate() {
        assert_eq!(
            viewer.request(f.clone(), &format!("mv{i}")).await?["code"],
            "forbidden",
            "{f}"
        );
        assert_eq!(
            moder.request(f.clone(), &format!("mm{i}")).await?["type"],
            "ack",
            "{f}"
        );
        assert_eq!(
            host.request(f.clone(), &format!("mh{i}")).await?["type"],
            "ack",
            "{f}"
        );
    }
    assert_eq!(
        viewer
            .request(json!({"type":"delete","id": msg_id}), "d1")
            .await?["code"],
        "forbidden"
    );
    assert_eq!(
        moder
            .request(json!({"type":"delete","id": msg_id}), "d2")
            .await?["type"],
        "ack"
    );
    anon.expect_where("deleted", |f| {
        f["type"] == "deleted" && f["id"] == msg_id.as_str()
    })
    .await?;
    let mut late = node.connect("perm", None).await?;
    let state = late.expect("state").await?;
    assert!(
        state["pinned"].is_null(),
        "deleting the pinned message unpins it: {state}"
    );
    // Anonymous: read and react only.
    assert_eq!(
        anon.request(json!({"type":"chat","text":"x"}), "a1")
            .await?["code"],
        "auth_required"
    );
    assert_eq!(
        anon.request(json!({"type":"react","emoji":"🔥"}), "a2")
            .await?["type"],
        "ack"
    );
    // Tokens: a forged one is refused at the upgrade; the API needs a host token.
    assert!(node.connect("perm", Some("not-a-token")).await.is_err());
    let body = r#"{"question":"q","options":["a","b"],"duration_secs":5}"#;
    assert_eq!(
        node.http("POST", "/api/streams/perm/polls", None, body)
            .await?
            .0,
        401
    );
    assert_eq!(
        node.http(
            "POST",
            "/api/streams/perm/polls",
            Some(&token(Role::Moderator, "m")),
            body
        )
        .await?
        .0,
        403
    );
    assert_eq!(
        node.http(
            "POST",
            "/api/streams/perm/polls",
            Some(&token(Role::Host, "h")),
            body
        )
        .await?
        .0,
        201
    );
    Ok(())
}

fn tallies(f: &Value) -> Vec<u64> {
    f["tallies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn poll_voting_rules_and_tallies() -> Result<()> {
    let node = Node::start("").await?;
    let host = token(Role::Host, "h");
    let mut watcher = node.connect("poll", None).await?;
    let (status, body) = node
        .http(
            "POST",
            "/api/streams/poll/polls",
            Some(&host),
            r#"{"question":"Which?","options":["a","b","c"],"duration_secs":60}"#,
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<Value>(&body)?["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let opened = watcher.expect("poll_opened").await?;
    assert_eq!(opened["id"], id.as_str());
    assert!(opened["opened"]["pdt"].is_string());
    let mut voters = Vec::new();
    for i in 0..5 {
        let mut c = node
            .connect("poll", Some(&token(Role::Viewer, &format!("v{i}"))))
            .await?;
        let r = c
            .request(json!({"type":"vote","poll": id, "option": i % 2}), "v")
            .await?;
        assert_eq!(r["type"], "ack", "{r}");
        voters.push(c);
    }
    // A second vote replaces the first (poll_vote_change = true).
    let r = voters[0]
        .request(json!({"type":"vote","poll": id, "option": 2}), "again")
        .await?;
    assert_eq!(r["type"], "ack");
    let bad = voters[0]
        .request(json!({"type":"vote","poll": id, "option": 9}), "bad")
        .await?;
    assert_eq!(bad["code"], "bad_frame");
    let anon = watcher
        .request(json!({"type":"vote","poll": id, "option": 0}), "anon")
        .await?;
    assert_eq!(anon["code"], "auth_required");
    let t = watcher
        .expect_where("final tally", |f| {
            f["type"] == "poll_tally" && tallies(f) == vec![2, 2, 1]
        })
        .await?;
    assert_eq!(t["poll"], id.as_str());
    let (status, _) = node
        .http(
            "POST",
            &format!("/api/streams/poll/polls/{id}/close"),
            Some(&host),
            "",
        )
        .await?;
    assert_eq!(status, 200);
    let closed = watcher.expect("poll_closed").await?;
    assert_eq!(tallies(&closed), vec![2, 2, 1]);
    assert_eq!(closed["state"], "closed");
    assert!(closed["closed"]["pdt"].is_string());
    let late = voters[1]
        .request(json!({"type":"vote","poll": id, "option": 0}), "late")
        .await?;
    assert_eq!(late["code"], "closed");
    // A late joiner sees the closed poll in the state frame.
    let mut late = node.connect("poll", None).await?;
    let state = late.expect("state").await?;
    assert_eq!(state["polls"][0]["state"], "closed");
    Ok(())
}

#[tokio::test]
async fn questions_upvote_once() -> Result<()> {
    let node = Node::start("").await?;
    let mut asker = node
        .connect("qa", Some(&token(Role::Viewer, "asker")))
        .await?;
    let q = asker
        .request(json!({"type":"ask","text":"Why?"}), "q")
        .await?;
    let qid = q["id"].as_str().unwrap().to_owned();
    for i in 0..3 {
        let mut c = node
            .connect("qa", Some(&token(Role::Viewer, &format!("u{i}"))))
            .await?;
        assert_eq!(
            c.request(json!({"type":"upvote","question": qid}), "1")
                .await?["type"],
            "ack"
        );
        assert_eq!(
            c.request(json!({"type":"upvote","question": qid}), "2")
                .await?["code"],
            "duplicate"
        );
    }
    asker
        .expect_where("3 votes", |f| {
            f["type"] == "question_votes" && f["votes"] == 3
        })
        .await?;
    let mut host = node.connect("qa", Some(&token(Role::Host, "h"))).await?;
    let r = host
        .request(
            json!({"type":"question_state","question": qid, "state":"answered"}),
            "s",
        )
        .await?;
    assert_eq!(r["type"], "ack");
    let st = asker.expect("question_state").await?;
    assert_eq!(st["state"], "answered");
    assert!(st["stamp"]["pdt"].is_string());
    let mut late = node.connect("qa", None).await?;
    let state = late.expect("state").await?;
    assert_eq!(state["questions"][0]["votes"], 3);
    Ok(())
}

#[tokio::test]
async fn reactions_are_aggregated() -> Result<()> {
    let node = Node::start("conn_burst = 100\nreaction_interval = \"200ms\"").await?;
    let mut watcher = node.connect("react", None).await?;
    let mut senders = Vec::new();
    for _ in 0..3 {
        senders.push(node.connect("react", None).await?);
    }
    for s in senders.iter_mut() {
        for _ in 0..30 {
            s.send(json!({"v":1,"type":"react","emoji":"❤️"})).await?;
        }
    }
    let bad = senders[0]
        .request(json!({"type":"react","emoji":"💩"}), "bad")
        .await?;
    assert_eq!(bad["code"], "bad_reaction");
    let mut total = 0;
    let mut frames = 0;
    while total < 90 && frames < 50 {
        let f = watcher.expect("reactions").await?;
        total += f["counts"]["❤️"].as_u64().unwrap_or(0);
        frames += 1;
    }
    assert_eq!(total, 90);
    // 90 reactions arrive in a few batched frames, not 90.
    assert!(frames <= 10, "{frames} frames");
    Ok(())
}

#[tokio::test]
async fn bad_frames_get_error_frames_then_close() -> Result<()> {
    let node = Node::start("max_errors = 5\nmax_frame_size = 4096").await?;
    let mut c = node.connect("bad", Some(&token(Role::Viewer, "v"))).await?;
    c.expect("state").await?;
    c.send_raw("not json").await?;
    assert_eq!(c.expect("error").await?["code"], "bad_json");
    c.send_raw(r#"{"v":1,"type":"dance"}"#).await?;
    assert_eq!(c.expect("error").await?["code"], "unknown_type");
    c.send_raw(r#"{"v":9,"type":"chat","text":"x"}"#).await?;
    assert_eq!(c.expect("error").await?["code"], "unsupported_version");
    c.send_raw(r#"{"v":1,"type":"chat","text":42}"#).await?;
    assert_eq!(c.expect("error").await?["code"], "bad_frame");
    // Still usable after errors.
    assert_eq!(
        c.request(json!({"type":"chat","text":"ok"}), "ok").await?["type"],
        "ack"
    );
    c.ws.send(tokio_tungstenite::tungstenite::Message::binary(vec![
        1u8, 2, 3,
    ]))
    .await?;
    assert_eq!(c.expect("error").await?["code"], "bad_frame");
    // The fifth bad frame closes the connection with 4002.
    c.send_raw("{").await?;
    assert_eq!(c.close_code(100).await?, Some(4002));
    // Oversized frame: an error frame; the connection lives.
    let mut c = node
        .connect("bad", Some(&token(Role::Viewer, "v2")))
        .await?;
    c.send_raw(&"x".repeat(10_000)).await?;
    assert_eq!(c.expect("error").await?["code"], "too_large");
    assert_eq!(
        c.request(json!({"type":"chat","text":"still here"}), "ok")
            .await?["type"],
        "ack"
    );
    // Not a WebSocket request.
    let (status, body) = node.http("GET", "/live/bad/events", None, "").await?;
    assert_eq!(status, 400, "{body}");
    Ok(())
}

use futures_util::SinkExt;

#[tokio::test]
async fn dead_client_is_dropped_by_ping_timeout() -> Result<()> {
    let node = Node::start("ping_interval = \"200ms\"\nping_timeout = \"200ms\"").await?;
    let mut c = node.connect("ping", None).await?;
    // Not reading means not answering pings; the server gives up after interval + timeout.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(c.close_code(100).await?, Some(4003));
    Ok(())
}

#[tokio::test]
async fn slow_consumer_is_dropped_and_room_goes_on() -> Result<()> {
    let node = Node::start(
        "send_queue = 16\nchat_max_len = 2000\nmax_frame_size = 16384\nconn_burst = 100000\nconn_rate_per_sec = 100000\nping_timeout = \"1s\"",
    )
    .await?;
    let host = token(Role::Host, "h");
    // A client with a tiny receive buffer that never reads.
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.set_recv_buffer_size(4096)?;
    let tcp = sock.connect(node.http).await?;
    let (mut slow, _) = tokio_tungstenite::client_async(node.ws_url("slow", ""), tcp).await?;
    let mut fast = node.connect("slow", None).await?;
    let mut h = node.connect("slow", Some(&host)).await?;
    let text = "y".repeat(1_900);
    let n = 2_000;
    let mut got = 0;
    for i in 0..n {
        let r = h
            .request(json!({"type":"chat","text": text}), &format!("{i}"))
            .await?;
        assert_eq!(r["type"], "ack", "{r}");
        if i % 50 == 49 {
            // Keep the fast client draining as the room goes.
            while got < i - 20 {
                fast.expect("chat").await?;
                got += 1;
            }
        }
    }
    while got < n {
        fast.expect("chat").await?;
        got += 1;
    }
    // The fast client got everything; the slow one was cut off: its stream ends (with close
    // code 4001 when the close frame still fits in its socket) before all messages.
    let mut slow_got = 0;
    let mut code = None;
    for _ in 0..(n + 10) {
        match tokio::time::timeout(
            Duration::from_secs(10),
            futures_util::StreamExt::next(&mut slow),
        )
        .await
        {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f)))) => {
                code = f.map(|f| u16::from(f.code));
                break;
            }
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(_)))) => slow_got += 1,
            Ok(Some(Ok(_))) => continue,
            Ok(_) => break,
            Err(_) => panic!("the slow client was not dropped"),
        }
    }
    assert!(slow_got < n, "slow client got {slow_got} of {n}");
    assert!(code.is_none() || code == Some(4001), "{code:?}");
    Ok(())
}

/// A viewer that stops reading while the host sends a burst gets the burst later, drained
/// in few coalesced writes, yet as whole frames in send order, with the pong to its ping and
/// the reply to its request (written by the WebSocket library, not from the shared frames)
/// in between.
#[tokio::test]
async fn a_burst_read_late_arrives_whole_and_in_order() -> Result<()> {
    let node = Node::start(
        "send_queue = 4096\nchat_rate_per_min = 1000000\nchat_burst = 100000\nconn_burst = 100000\nconn_rate_per_sec = 100000",
    )
    .await?;
    let host = token(Role::Host, "h");
    let mut h = node.connect("room1", Some(&host)).await?;
    let mut v = node.connect("room1", None).await?;
    v.expect("state").await?;
    let n = 1_000;
    for i in 0..n {
        h.send_ref(
            json!({"type":"chat","text": format!("b{i}")}),
            &format!("{i}"),
        )
        .await?;
        if i == n / 4 {
            // The pong is the library's too.
            v.ws.send(Message::Ping("p".into())).await?;
        }
        if i == n / 2 {
            v.send(json!({"v":1,"type":"resume","after":"0-0"})).await?;
        }
    }
    for i in 0..n {
        let r = h.reply(&format!("{i}")).await?;
        assert_eq!(r["type"], "ack", "{r}");
    }
    let (mut next, mut history) = (0, 0);
    for _ in 0..(n + 10) {
        if next == n && history == 1 {
            break;
        }
        let f = v.next().await?;
        match f["type"].as_str() {
            Some("chat") => {
                assert_eq!(f["text"], format!("b{next}"), "{f}");
                next += 1;
            }
            Some("history") => history += 1,
            _ => panic!("unexpected frame {f}"),
        }
    }
    assert_eq!((next, history), (n, 1));
    Ok(())
}

/// Invisible and bidi-control characters never reach other viewers (a right-to-left
/// override would let a viewer spoof text in the overlay), and tokens issued in the future
/// or living longer than `max_token_ttl` are refused at the WebSocket upgrade.
#[tokio::test]
async fn bidi_text_and_odd_tokens_are_refused() -> Result<()> {
    use estuary::interact::token::Claims;
    use jsonwebtoken::{encode, EncodingKey, Header};
    let node = Node::start("max_token_ttl = \"1day\"").await?;
    let viewer = token(Role::Viewer, "v1");
    let mut v = node.connect("bidi", Some(&viewer)).await?;
    let mut watcher = node.connect("bidi", None).await?;
    watcher.expect("state").await?;
    let r = v
        .request(
            json!({"type": "chat", "text": "pay \u{202E}moc.live\u{202C} now\u{200B}"}),
            "c1",
        )
        .await?;
    assert_eq!(r["type"], "ack", "{r}");
    let m = watcher.expect("chat").await?;
    assert_eq!(m["text"], "pay moc.live now");

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let forge = |iat: u64, exp: u64| {
        encode(
            &Header::default(),
            &Claims {
                sub: "u9".into(),
                name: "u9".into(),
                role: Role::Host,
                exp,
                iat,
                stream: Some("bidi".into()),
            },
            &EncodingKey::from_secret(interact_support::SECRET.as_bytes()),
        )
        .unwrap()
    };
    for (what, t) in [
        (
            "issued a year ahead",
            forge(now + 365 * 86_400, now + 366 * 86_400),
        ),
        ("good for a century", forge(now, now + 100 * 365 * 86_400)),
        ("longer than max_token_ttl", forge(now, now + 2 * 86_400)),
    ] {
        let r = node.connect("bidi", Some(&t)).await;
        assert!(r.is_err(), "{what}: accepted");
    }
    // Within the limits, the same forge is accepted.
    assert!(node
        .connect("bidi", Some(&forge(now, now + 3600)))
        .await
        .is_ok());
    Ok(())
}

/// Opens a poll in `stream` through the server API with `token`: the status and the error
/// code (empty on success).
async fn post_poll(node: &Node, stream: &str, token: &str) -> Result<(u16, String)> {
    let (status, body) = node.post_poll(stream, token).await?;
    Ok((status, body["code"].as_str().unwrap_or_default().to_owned()))
}

/// A host token for one stream is refused in another, on the WebSocket and the server API
/// alike; a glob token works on every stream it matches; an unscoped host token is refused
/// and an unscoped viewer token works (`unscoped_tokens = "viewer"`, the default).
#[tokio::test]
async fn tokens_are_scoped_to_their_stream() -> Result<()> {
    let node = Node::start("").await?;
    let ws = |stream: &str, t: &str| node.ws_url(stream, &format!("?token={t}"));
    let wrong = (403, "wrong_stream".to_owned());
    let created = (201, String::new());

    let host_perm = token_for(Role::Host, "h", Some("perm"));
    let mut c = Client::connect(&ws("perm", &host_perm)).await?;
    assert_eq!(c.welcome["user"]["role"], "host");
    let r = c.request(json!({"type":"ban","user":"x"}), "b").await?;
    assert_eq!(r["type"], "ack", "{r}");
    assert_eq!(refused(&ws("poll", &host_perm)).await?, wrong);
    assert_eq!(post_poll(&node, "perm", &host_perm).await?, created);
    assert_eq!(post_poll(&node, "poll", &host_perm).await?, wrong);
    // The same for a moderator token.
    let mod_perm = token_for(Role::Moderator, "m", Some("perm"));
    assert_eq!(refused(&ws("qa", &mod_perm)).await?, wrong);

    // A glob: `p*` (also written `live/p*`) matches perm and poll, not qa.
    for pattern in ["p*", "live/p*"] {
        let glob = token_for(Role::Host, "g", Some(pattern));
        for stream in ["perm", "poll"] {
            let c = Client::connect(&ws(stream, &glob)).await?;
            assert_eq!(c.welcome["user"]["role"], "host", "{pattern} on {stream}");
            assert_eq!(post_poll(&node, stream, &glob).await?, created, "{pattern}");
        }
        assert_eq!(refused(&ws("qa", &glob)).await?, wrong);
        assert_eq!(post_poll(&node, "qa", &glob).await?, wrong);
    }

    // Tokens without a stream claim: host refused, viewer accepted.
    let not_scoped = (403, "token_not_scoped".to_owned());
    let unscoped_host = token_for(Role::Host, "old", None);
    assert_eq!(refused(&ws("perm", &unscoped_host)).await?, not_scoped);
    assert_eq!(post_poll(&node, "perm", &unscoped_host).await?, not_scoped);
    let unscoped_viewer = token_for(Role::Viewer, "fan", None);
    let mut v = Client::connect(&ws("qa", &unscoped_viewer)).await?;
    let r = v.request(json!({"type":"chat","text":"hi"}), "c").await?;
    assert_eq!(r["type"], "ack", "{r}");
    Ok(())
}

/// One user id counts once in a poll and in a question's upvotes, however many connections
/// it opens, whether the vote may change or not.
#[tokio::test]
async fn votes_and_upvotes_count_once_per_user() -> Result<()> {
    for change in [false, true] {
        let node = Node::start(&format!("poll_vote_change = {change}")).await?;
        let id = node.open_poll("poll", &token(Role::Host, "h")).await?;
        let dup = token(Role::Viewer, "dup");
        let mut one = node.connect("poll", Some(&dup)).await?;
        let mut two = node.connect("poll", Some(&dup)).await?;
        // Both connections vote before either reads its reply.
        one.send_ref(json!({"type":"vote","poll": id, "option": 0}), "a")
            .await?;
        two.send_ref(json!({"type":"vote","poll": id, "option": 1}), "b")
            .await?;
        let (a, b) = (one.reply("a").await?, two.reply("b").await?);
        if change {
            // The second vote replaces the first.
            assert!(a["type"] == "ack" && b["type"] == "ack", "{a} {b}");
        } else {
            one_ack_one_duplicate(&a, &b);
        }
        // The tally counts the user once.
        let t = one
            .expect_where("tally", |f| f["type"] == "poll_tally")
            .await?;
        assert_eq!(tallies(&t).iter().sum::<u64>(), 1, "{t}");

        let q = one
            .request(json!({"type":"ask","text":"Once?"}), "q")
            .await?;
        let qid = q["id"].as_str().unwrap().to_owned();
        let mut fan = node
            .connect("poll", Some(&token(Role::Viewer, "fan")))
            .await?;
        let mut fan2 = node
            .connect("poll", Some(&token(Role::Viewer, "fan")))
            .await?;
        assert_eq!(
            fan.request(json!({"type":"upvote","question": qid}), "u1")
                .await?["type"],
            "ack"
        );
        assert_eq!(
            fan2.request(json!({"type":"upvote","question": qid}), "u2")
                .await?["code"],
            "duplicate"
        );
        fan.expect_where("1 vote", |f| {
            f["type"] == "question_votes" && f["votes"] == 1
        })
        .await?;
        let mut late = node.connect("poll", None).await?;
        let state = late.expect("state").await?;
        assert_eq!(state["questions"][0]["votes"], 1, "{state}");
    }
    Ok(())
}
