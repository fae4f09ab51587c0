//! Unit tests of the room actor (paused time, memory backend).

use std::{sync::Arc, time::Duration};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::interact::{
    protocol::{ClientMsg, PollSpec, QuestionState, TipSpec},
    token::Role,
    WallClock,
};

fn actor(id: &str, role: Role) -> Actor {
    Actor {
        user: UserInfo {
            id: id.into(),
            name: id.into(),
            role,
        },
        anonymous: false,
    }
}

fn start(cfg: InteractConfig) -> (RoomHandle, CancellationToken) {
    let metrics = Metrics::register(&prometheus::Registry::new()).unwrap();
    let (h, room) = Room::new(
        "s".into(),
        Arc::new(cfg),
        Arc::new(WallClock),
        metrics,
        None,
        tokio::sync::watch::channel(Arc::new(Vec::new())).0,
        CancellationToken::new(),
    );
    let token = h.token();
    tokio::spawn(room.run(token.clone()));
    (h, token)
}

async fn act(h: &RoomHandle, a: &Actor, msg: ClientMsg) -> ServerMsg {
    h.act(a.clone(), ClientFrame { r#ref: None, msg }).await
}

fn ack_id(m: ServerMsg) -> String {
    match m {
        ServerMsg::Ack { id: Some(id), .. } => id,
        other => panic!("expected ack with id, got {other:?}"),
    }
}

fn err_code(m: ServerMsg) -> ErrorCode {
    match m {
        ServerMsg::Error { code, .. } => code,
        other => panic!("expected error, got {other:?}"),
    }
}

fn decode(b: &WireFrame) -> ServerMsg {
    serde_json::from_str(b.payload()).unwrap()
}

/// Broadcast frames received so far.
fn drain(rx: &mut broadcast::Receiver<WireFrame>) -> Vec<ServerMsg> {
    let mut out = Vec::new();
    while let Ok(b) = rx.try_recv() {
        out.push(decode(&b));
    }
    out
}

#[tokio::test(start_paused = true)]
async fn history_resume_is_gapless_and_flags_gaps() {
    let (h, _t) = start(InteractConfig {
        history_size: 3,
        ..Default::default()
    });
    let host = actor("h", Role::Host);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(ack_id(
            act(
                &h,
                &host,
                ClientMsg::Chat {
                    text: format!("m{i}"),
                },
            )
            .await,
        ));
    }
    // Ids increase in room order.
    let parsed: Vec<ChatId> = ids.iter().map(|i| ChatId::parse(i).unwrap()).collect();
    assert!(parsed.windows(2).all(|w| w[0] < w[1]));
    let j = h.join(Some(ids[2].clone())).await.unwrap();
    match decode(&j.frames[0]) {
        ServerMsg::History { messages, complete } => {
            assert!(complete);
            let texts: Vec<_> = messages.iter().map(|m| m.text.as_str()).collect();
            assert_eq!(texts, ["m3", "m4"]);
        }
        other => panic!("{other:?}"),
    }
    // m0 and m1 fell out of the window: resuming after m0 has a gap.
    let j = h.join(Some(ids[0].clone())).await.unwrap();
    match decode(&j.frames[0]) {
        ServerMsg::History { messages, complete } => {
            assert!(!complete);
            assert_eq!(messages.len(), 3);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn reactions_are_batched_per_interval() {
    let (h, _t) = start(InteractConfig::default());
    let mut rx = h.join(None).await.unwrap().rx;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drain(&mut rx);
    for _ in 0..1000 {
        h.react(0);
    }
    h.react(2);
    tokio::time::sleep(Duration::from_millis(260)).await;
    let frames = drain(&mut rx);
    assert_eq!(frames.len(), 1, "{frames:?}");
    match &frames[0] {
        ServerMsg::Reactions { counts, window_ms } => {
            assert_eq!(counts.get("❤️"), Some(&1000));
            assert_eq!(counts.get("😂"), Some(&1));
            assert_eq!(*window_ms, 250);
        }
        other => panic!("{other:?}"),
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(drain(&mut rx).is_empty(), "no frame without reactions");
}

#[tokio::test(start_paused = true)]
async fn tallies_are_rate_bounded_and_polls_close_on_time() {
    let (h, _t) = start(InteractConfig::default());
    let host = actor("h", Role::Host);
    let mut rx = h.join(None).await.unwrap().rx;
    let poll = ack_id(
        act(
            &h,
            &host,
            ClientMsg::PollOpen(PollSpec {
                question: "Best?".into(),
                options: vec!["a".into(), "b".into(), "c".into()],
                duration_secs: 10,
            }),
        )
        .await,
    );
    for i in 0..100 {
        let v = actor(&format!("v{i}"), Role::Viewer);
        let r = act(
            &h,
            &v,
            ClientMsg::Vote {
                poll: poll.clone(),
                option: i % 3,
            },
        )
        .await;
        assert!(matches!(r, ServerMsg::Ack { .. }), "{r:?}");
    }
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let frames = drain(&mut rx);
    let tallies: Vec<_> = frames
        .iter()
        .filter_map(|f| match f {
            ServerMsg::PollTally { tallies, .. } => Some(tallies.clone()),
            _ => None,
        })
        .collect();
    // 100 votes, at most one tally per 500 ms interval.
    assert!(!tallies.is_empty() && tallies.len() <= 5, "{tallies:?}");
    assert_eq!(tallies.last().unwrap(), &vec![34, 33, 33]);
    assert_eq!(h.dateranges().len(), 1);
    assert_eq!(h.dateranges()[0].end, None);
    tokio::time::sleep(Duration::from_secs(9)).await;
    let closed: Vec<_> = drain(&mut rx)
        .into_iter()
        .filter_map(|f| match f {
            ServerMsg::PollClosed(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].tallies, vec![34, 33, 33]);
    assert!(closed[0].closed.is_some());
    let dr = h.dateranges();
    assert!(dr[0].end.is_some());
    assert!(dr[0]
        .attrs
        .iter()
        .any(|(k, v)| k == "X-RESULTS" && v == "34,33,33"));
    let late = act(
        &h,
        &actor("late", Role::Viewer),
        ClientMsg::Vote { poll, option: 0 },
    )
    .await;
    assert_eq!(err_code(late), ErrorCode::Closed);
}

#[tokio::test(start_paused = true)]
async fn vote_change_rules() {
    for change in [true, false] {
        let (h, _t) = start(InteractConfig {
            poll_vote_change: change,
            ..Default::default()
        });
        let host = actor("h", Role::Host);
        let poll = ack_id(
            act(
                &h,
                &host,
                ClientMsg::PollOpen(PollSpec {
                    question: "q".into(),
                    options: vec!["a".into(), "b".into()],
                    duration_secs: 60,
                }),
            )
            .await,
        );
        let v = actor("v", Role::Viewer);
        act(
            &h,
            &v,
            ClientMsg::Vote {
                poll: poll.clone(),
                option: 0,
            },
        )
        .await;
        let second = act(
            &h,
            &v,
            ClientMsg::Vote {
                poll: poll.clone(),
                option: 1,
            },
        )
        .await;
        if change {
            assert!(matches!(second, ServerMsg::Ack { .. }));
        } else {
            assert_eq!(err_code(second), ErrorCode::Duplicate);
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        let state = h.snapshot().await.unwrap();
        let ServerMsg::State { polls, .. } = state else {
            panic!()
        };
        assert_eq!(
            polls[0].tallies,
            if change { vec![0, 1] } else { vec![1, 0] }
        );
        let bad = act(
            &h,
            &v,
            ClientMsg::Vote {
                poll: poll.clone(),
                option: 2,
            },
        )
        .await;
        assert_eq!(err_code(bad), ErrorCode::BadFrame);
    }
}

#[tokio::test(start_paused = true)]
async fn permission_matrix() {
    let (h, _t) = start(InteractConfig::default());
    let viewer = actor("v", Role::Viewer);
    let moder = actor("m", Role::Moderator);
    let host = actor("h", Role::Host);
    let anon = Actor {
        anonymous: true,
        ..actor("anon-1", Role::Viewer)
    };
    let msg = ack_id(act(&h, &viewer, ClientMsg::Chat { text: "hi".into() }).await);
    let spec = PollSpec {
        question: "q".into(),
        options: vec!["a".into(), "b".into()],
        duration_secs: 60,
    };
    let host_only = [
        ClientMsg::PollOpen(spec.clone()),
        ClientMsg::Pin {
            id: Some(msg.clone()),
        },
        ClientMsg::System { text: "x".into() },
        ClientMsg::Tip(TipSpec {
            from: "a".into(),
            amount_minor: 100,
            currency: "EUR".into(),
            message: None,
        }),
    ];
    let mod_only = [
        ClientMsg::Ban { user: "x".into() },
        ClientMsg::SlowMode { secs: 0 },
        ClientMsg::Timeout {
            user: "x".into(),
            secs: 5,
        },
        ClientMsg::Unban { user: "x".into() },
    ];
    for m in host_only.iter() {
        assert_eq!(
            err_code(act(&h, &viewer, m.clone()).await),
            ErrorCode::Forbidden,
            "{m:?}"
        );
        assert_eq!(
            err_code(act(&h, &moder, m.clone()).await),
            ErrorCode::Forbidden,
            "{m:?}"
        );
        assert!(
            matches!(act(&h, &host, m.clone()).await, ServerMsg::Ack { .. }),
            "{m:?}"
        );
    }
    for m in mod_only.iter() {
        assert_eq!(
            err_code(act(&h, &viewer, m.clone()).await),
            ErrorCode::Forbidden,
            "{m:?}"
        );
        assert!(
            matches!(act(&h, &moder, m.clone()).await, ServerMsg::Ack { .. }),
            "{m:?}"
        );
    }
    assert_eq!(
        err_code(act(&h, &viewer, ClientMsg::Delete { id: msg.clone() }).await),
        ErrorCode::Forbidden
    );
    assert!(matches!(
        act(&h, &moder, ClientMsg::Delete { id: msg }).await,
        ServerMsg::Ack { .. }
    ));
    assert_eq!(
        err_code(act(&h, &anon, ClientMsg::Chat { text: "x".into() }).await),
        ErrorCode::AuthRequired
    );
    // A ban mutes chat and questions.
    act(&h, &moder, ClientMsg::Ban { user: "v".into() }).await;
    assert_eq!(
        err_code(act(&h, &viewer, ClientMsg::Chat { text: "x".into() }).await),
        ErrorCode::Muted
    );
    assert_eq!(
        err_code(act(&h, &viewer, ClientMsg::Ask { text: "x".into() }).await),
        ErrorCode::Muted
    );
}

#[tokio::test(start_paused = true)]
async fn slow_mode_rate_limit_and_blocked_words() {
    let (h, _t) = start(InteractConfig {
        blocked_words: vec!["Spam".into()],
        chat_burst: 3,
        ..Default::default()
    });
    let viewer = actor("v", Role::Viewer);
    let moder = actor("m", Role::Moderator);
    assert_eq!(
        err_code(
            act(
                &h,
                &viewer,
                ClientMsg::Chat {
                    text: "buy SPAM now".into()
                }
            )
            .await
        ),
        ErrorCode::Blocked
    );
    for _ in 0..3 {
        ack_id(act(&h, &viewer, ClientMsg::Chat { text: "x".into() }).await);
    }
    match act(&h, &viewer, ClientMsg::Chat { text: "x".into() }).await {
        ServerMsg::Error {
            code: ErrorCode::RateLimited,
            retry_after_ms: Some(ms),
            ..
        } => assert!(ms > 0),
        other => panic!("{other:?}"),
    }
    act(&h, &moder, ClientMsg::SlowMode { secs: 5 }).await;
    let v2 = actor("v2", Role::Viewer);
    ack_id(act(&h, &v2, ClientMsg::Chat { text: "a".into() }).await);
    match act(&h, &v2, ClientMsg::Chat { text: "b".into() }).await {
        ServerMsg::Error {
            code: ErrorCode::SlowMode,
            retry_after_ms: Some(ms),
            ..
        } => {
            assert!(ms > 4_000 && ms <= 5_000, "{ms}")
        }
        other => panic!("{other:?}"),
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    ack_id(act(&h, &v2, ClientMsg::Chat { text: "c".into() }).await);
    // Moderators are exempt.
    ack_id(act(&h, &moder, ClientMsg::Chat { text: "1".into() }).await);
    ack_id(act(&h, &moder, ClientMsg::Chat { text: "2".into() }).await);
    let long = "x".repeat(501);
    assert_eq!(
        err_code(act(&h, &moder, ClientMsg::Chat { text: long }).await),
        ErrorCode::BadLength
    );
}

#[tokio::test(start_paused = true)]
async fn questions_upvote_once_and_top_list() {
    let (h, _t) = start(InteractConfig::default());
    let host = actor("h", Role::Host);
    let q1 = ack_id(
        act(
            &h,
            &actor("a", Role::Viewer),
            ClientMsg::Ask {
                text: "one?".into(),
            },
        )
        .await,
    );
    let q2 = ack_id(
        act(
            &h,
            &actor("b", Role::Viewer),
            ClientMsg::Ask {
                text: "two?".into(),
            },
        )
        .await,
    );
    for i in 0..3 {
        let v = actor(&format!("u{i}"), Role::Viewer);
        assert!(matches!(
            act(
                &h,
                &v,
                ClientMsg::Upvote {
                    question: q2.clone()
                }
            )
            .await,
            ServerMsg::Ack { .. }
        ));
        assert_eq!(
            err_code(
                act(
                    &h,
                    &v,
                    ClientMsg::Upvote {
                        question: q2.clone()
                    }
                )
                .await
            ),
            ErrorCode::Duplicate
        );
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let ServerMsg::State { questions, .. } = h.snapshot().await.unwrap() else {
        panic!()
    };
    assert_eq!(questions[0].id, q2);
    assert_eq!(questions[0].votes, 3);
    act(
        &h,
        &host,
        ClientMsg::QuestionState {
            question: q1.clone(),
            state: QuestionState::Pinned,
        },
    )
    .await;
    let ServerMsg::State { questions, .. } = h.snapshot().await.unwrap() else {
        panic!()
    };
    assert_eq!(questions[0].id, q1);
    assert!(questions[0].stamp.is_some(), "host events are stamped");
    let moder = actor("m", Role::Moderator);
    assert_eq!(
        err_code(
            act(
                &h,
                &moder,
                ClientMsg::QuestionState {
                    question: q1.clone(),
                    state: QuestionState::Answered
                }
            )
            .await
        ),
        ErrorCode::Forbidden
    );
    act(
        &h,
        &moder,
        ClientMsg::QuestionState {
            question: q1,
            state: QuestionState::Dismissed,
        },
    )
    .await;
    let ServerMsg::State { questions, .. } = h.snapshot().await.unwrap() else {
        panic!()
    };
    assert_eq!(questions.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn slow_consumer_lags_without_blocking_the_room() {
    let (h, _t) = start(InteractConfig {
        send_queue: 8,
        ..Default::default()
    });
    let host = actor("h", Role::Host);
    let mut slow = h.join(None).await.unwrap().rx;
    let mut fast = h.join(None).await.unwrap().rx;
    for i in 0..20 {
        ack_id(
            act(
                &h,
                &host,
                ClientMsg::Chat {
                    text: format!("{i}"),
                },
            )
            .await,
        );
        let _ = fast.try_recv();
    }
    assert!(matches!(
        slow.try_recv(),
        Err(broadcast::error::TryRecvError::Lagged(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_reloaded_config_applies_to_an_open_room() {
    let (h, _t) = start(InteractConfig {
        blocked_words: vec!["spoiler".into()],
        ..InteractConfig::default()
    });
    let viewer = actor("v", Role::Viewer);
    let chat = |t: &str| ClientMsg::Chat { text: t.into() };
    assert_eq!(
        err_code(act(&h, &viewer, chat("no spoiler here")).await),
        ErrorCode::Blocked
    );
    let reloaded = InteractConfig {
        blocked_words: vec!["ending".into()],
        ..InteractConfig::default()
    };
    h.inbox()
        .send(RoomCmd::Reconfigure(Arc::new(reloaded)))
        .await
        .unwrap();
    ack_id(act(&h, &viewer, chat("no spoiler here")).await);
    assert_eq!(
        err_code(act(&h, &viewer, chat("the ending")).await),
        ErrorCode::Blocked
    );
}
