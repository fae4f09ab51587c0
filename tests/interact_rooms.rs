//! Rooms exist only for real streams: made-up names are refused without using up
//! `max_rooms` (also with `allow_unknown_streams`), a real viewer still gets in, and an idle
//! room is closed and opens again for a live stream. Real binary, real WebSocket clients,
//! real ffmpeg publishing over SRT.

mod common;
mod interact_support;

use std::time::Duration;

use anyhow::Result;
use common::{ffmpeg_publish, metric, srt_url, wait_metric_until, wait_ok, Node};
use estuary::interact::Role;
use interact_support::{refused, token_for, Client, SECRET};
use serde_json::json;

fn ws(node: &Node, stream: &str, token: Option<&str>) -> String {
    let q = token.map(|t| format!("?token={t}")).unwrap_or_default();
    format!("ws://{}/live/{stream}/events{q}", node.http)
}

/// A GET to the server API; returns the status and the `error` code of the body.
async fn api_state(node: &Node, stream: &str, token: &str) -> (u16, String) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let req = hyper::Request::get(node.url(&format!("/api/streams/{stream}/state")))
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = common::into_resp(client.request(req).await.unwrap()).await;
    let body: serde_json::Value = serde_json::from_str(&resp.text()).unwrap_or_default();
    (
        resp.status,
        body["code"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn made_up_rooms_are_refused_and_a_real_viewer_gets_in() -> Result<()> {
    // Any name may publish here, and the cap is small: made-up names must still not count.
    let node = Node::start(
        "rooms-cap",
        &format!(
            "allow_unknown_streams = true\n[streams.demo]\n[interact]\ntoken_secret = \"{SECRET}\"\nmax_rooms = 2\n"
        ),
    );
    let host = token_for(Role::Host, "ops", Some("*"));
    for i in 0..1_000 {
        let name = format!("made-up-{i}");
        let t = (i % 2 == 0).then_some(host.as_str());
        assert_eq!(
            refused(&ws(&node, &name, t)).await?,
            (404, "unknown_stream".into()),
            "{name}"
        );
        if i % 100 == 0 {
            assert_eq!(
                api_state(&node, &name, &host).await,
                (404, "unknown_stream".into())
            );
        }
    }
    assert_eq!(metric(&node, "estuary_interact_rooms", "").await, 0.0);
    assert_eq!(
        metric(
            &node,
            "estuary_interact_refused_total",
            "reason=\"unknown_stream\""
        )
        .await,
        1_000.0
    );
    // The configured stream opens its room (not live yet: a lobby before the show).
    let mut viewer = Client::connect(&ws(&node, "demo", None)).await?;
    viewer.expect("state").await?;
    let mut host_c = Client::connect(&ws(&node, "demo", Some(&host))).await?;
    let r = host_c
        .request(json!({"type":"chat","text":"welcome"}), "1")
        .await?;
    assert_eq!(r["type"], "ack", "{r}");
    assert_eq!(viewer.expect("chat").await?["text"], "welcome");
    assert_eq!(api_state(&node, "demo", &host).await.0, 200);
    assert_eq!(metric(&node, "estuary_interact_rooms", "").await, 1.0);
    Ok(())
}

#[tokio::test]
async fn idle_room_is_closed_and_opens_again_for_a_live_stream() -> Result<()> {
    let node = Node::start(
        "rooms-idle",
        &format!(
            "allow_unknown_streams = true\n[interact]\ntoken_secret = \"{SECRET}\"\nroom_idle_timeout = \"1s\"\n"
        ),
    );
    // Not configured and not live: no room yet.
    assert_eq!(
        refused(&ws(&node, "pop", None)).await?,
        (404, "unknown_stream".into())
    );
    let _publisher = ffmpeg_publish(&srt_url(&node, "pop", None), 60, 30);
    wait_ok(&node.url("/live/pop/index.m3u8"), Duration::from_secs(30)).await;
    // Live now: a viewer gets in.
    let mut viewer = Client::connect(&ws(&node, "pop", None)).await?;
    viewer.expect("state").await?;
    assert_eq!(metric(&node, "estuary_interact_rooms", "").await, 1.0);
    // The viewer leaves; after room_idle_timeout the room is closed.
    viewer.ws.close(None).await?;
    drop(viewer);
    wait_metric_until(
        &node,
        "estuary_interact_rooms_evicted_total",
        "",
        |v| v >= 1.0,
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(metric(&node, "estuary_interact_rooms", "").await, 0.0);
    // The stream is still live: the next viewer opens the room again.
    let mut again = Client::connect(&ws(&node, "pop", None)).await?;
    again.expect("state").await?;
    assert_eq!(metric(&node, "estuary_interact_rooms", "").await, 1.0);
    Ok(())
}
