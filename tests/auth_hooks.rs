//! The publish and play webhooks against a small hyper server the test starts: allow,
//! deny, a hook slower than its timeout (fail closed and fail open), a passphrase (SRT)
//! and a key (RTMP) returned by the hook and used by ffmpeg with its default options,
//! and a play decision reused for its TTL (the hook's calls are counted).

mod auth_support;
mod common;
mod edge_support;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use auth_support::*;
use common::*;
use edge_support::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);
const HOOK_SECRET: &str = "hook-secret-0123456789";
const PASSPHRASE: &str = "hook-pass-12345";
const RTMP_KEY: &str = "hook-key-123";
const SLOW: Duration = Duration::from_secs(3);

/// The operator's user database, in a few lines: decisions by stream (publish) and by
/// token (play).
fn script() -> HookScript {
    Arc::new(|v: &Value| {
        let allow = |extra: Value| {
            let mut a = json!({ "allow": true });
            a.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            a
        };
        let deny = json!({ "allow": false, "reason": "no ticket" });
        let none = Duration::ZERO;
        match v["action"].as_str() {
            Some("publish") => match v["stream"].as_str().unwrap_or_default() {
                "denied" => (none, 200, deny),
                "forbidden" => (none, 403, json!({})),
                "slow" => (SLOW, 200, allow(json!({}))),
                "keyed" if v["protocol"] == "srt" => {
                    (none, 200, allow(json!({ "passphrase": PASSPHRASE })))
                }
                "keyed" => (none, 200, allow(json!({ "rtmp_key": RTMP_KEY }))),
                _ => (none, 200, allow(json!({}))),
            },
            _ => match v["token"].as_str() {
                Some("no") => (none, 200, deny),
                Some("slow") => (SLOW, 200, allow(json!({}))),
                Some("broken") => (none, 500, json!({})),
                _ => (none, 200, allow(json!({}))),
            },
        }
    })
}

fn hook_cfg(hooks: &HookServer, fail_open: bool, ttl: &str) -> String {
    format!(
        "[auth]\npublish_url = \"{url}\"\nplay_url = \"{url}\"\npublish_timeout = \"500ms\"\n\
         play_timeout = \"500ms\"\npublish_fail_open = {fail_open}\nplay_fail_open = {fail_open}\n\
         play_cache_ttl = \"{ttl}\"\nhook_secret = \"{HOOK_SECRET}\"\n",
        url = hooks.url()
    )
}

async fn refused(node: &Node, family: &str, reason: &str, n: f64) {
    wait_metric(node, family, &format!("reason=\"{reason}\""), n, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publish_hook_decides_srt_and_rtmp_publishers() {
    let hooks = HookServer::start(script()).await;
    // No [streams]: the hook is the allow-list.
    let node = Node::start("hooks-publish", &hook_cfg(&hooks, false, "10s"));
    let rtmp = node.rtmp.expect("RTMP listens");

    let _allowed = small_publish(&node, "allowed", 60);
    wait_ok(&node.url("/live/allowed/index.m3u8"), WAIT).await;
    let (call, auth) = hooks.last("publish");
    assert_eq!(auth, format!("Bearer {HOOK_SECRET}"));
    assert_eq!(call["protocol"], "srt");
    assert_eq!(call["stream"], "allowed");
    assert_eq!(call["streamid"], "allowed");
    assert!(
        call["remote_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{call}"
    );

    // Denied by the answer, by a bare 403, and by a hook too slow (fail closed).
    let _d = small_publish(&node, "denied", 10);
    refused(&node, "estuary_srt_rejected_total", "hook_denied", 1.0).await;
    let _f = small_publish(&node, "forbidden", 10);
    refused(&node, "estuary_srt_rejected_total", "hook_denied", 2.0).await;
    let _s = small_publish(&node, "slow", 10);
    refused(&node, "estuary_srt_rejected_total", "hook_failed", 1.0).await;
    wait_metric(
        &node,
        "estuary_auth_hook_calls_total",
        "result=\"timeout\"",
        1.0,
        WAIT,
    )
    .await;

    // The hook's passphrase: a caller without it fails the handshake, ffmpeg with it
    // (libsrt defaults, no pbkeylen) publishes encrypted.
    let _nokey = small_publish(&node, "keyed", 10);
    refused(&node, "estuary_srt_rejected_total", "handshake_failed", 1.0).await;
    let x264 = x264_args(30);
    let args: Vec<&str> = x264.iter().map(String::as_str).collect();
    let _keyed = ffmpeg_publish_with(
        &srt_url(&node, "keyed", Some(PASSPHRASE)),
        60,
        &args,
        "640x360",
    );
    wait_ok(&node.url("/live/keyed/index.m3u8"), WAIT).await;
    assert_eq!(get(&node.url("/live/denied/index.m3u8")).await.status, 404);

    // RTMP: the same hook, with the stream key's `key`.
    let _r = ffmpeg_rtmp(&format!("rtmp://{rtmp}/live/rtmp-ok"), 60);
    wait_ok(&node.url("/live/rtmp-ok/index.m3u8"), WAIT).await;
    assert_eq!(hooks.last("publish").0["protocol"], "rtmp");
    let _rd = ffmpeg_rtmp(&format!("rtmp://{rtmp}/live/denied"), 10);
    refused(&node, "estuary_rtmp_rejected_total", "hook_denied", 1.0).await;
    let _wrong = ffmpeg_rtmp(&format!("rtmp://{rtmp}/live/keyed2?key=wrong-key-1"), 10);
    let _rk = ffmpeg_rtmp(&format!("rtmp://{rtmp}/live/keyed?key=wrong-key-1"), 10);
    refused(&node, "estuary_rtmp_rejected_total", "bad_key", 1.0).await;
    let (call, _) = hooks
        .calls
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(v, _)| v["protocol"] == "rtmp" && v["stream"] == "keyed")
        .cloned()
        .unwrap();
    assert_eq!(call["key"], "wrong-key-1");
    // keyed2 has no key from the hook and no [streams] entry: open.
    wait_ok(&node.url("/live/keyed2/index.m3u8"), WAIT).await;
    // The live publishers were never disturbed.
    assert_eq!(get(&node.url("/live/allowed/index.m3u8")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hooks_fail_open_when_told() {
    let hooks = HookServer::start(script()).await;
    let node = Node::start("hooks-open", &hook_cfg(&hooks, true, "10s"));
    let _s = small_publish(&node, "slow", 60);
    wait_ok(&node.url("/live/slow/index.m3u8"), WAIT).await;
    assert!(hooks.count("publish", Some("slow")) >= 1);
    for token in ["slow", "broken"] {
        let r = get(&node.url(&format!("/live/slow/index.m3u8?__token__={token}"))).await;
        assert_eq!(r.status, 200, "{token}: {}", r.text());
    }
    // A deny is still a deny.
    assert_refused(
        &get(&node.url("/live/slow/index.m3u8?__token__=no")).await,
        "denied",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn play_hook_decides_once_per_token_for_the_ttl() {
    let hooks = HookServer::start(script()).await;
    let node = Node::start(
        "hooks-play",
        &format!("{}[streams.live]\n", hook_cfg(&hooks, false, "15s")),
    );
    let _p = small_publish(&node, "live", 90);
    let url = |t: &str| node.url(&format!("/live/live/index.m3u8?__token__={t}"));
    wait_ok(&url("warm-up"), WAIT).await;
    let started = Instant::now();
    let calls = |t: &str| {
        hooks
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(v, _)| v["action"] == "play" && v["token"] == t)
            .count()
    };
    // A viewer's playlists and media: one hook call for the token.
    let mv = get(&url("ok-1")).await;
    let media = resolve(&url("ok-1"), &all_uris(&mv.text())[0]);
    let pl = get(&media).await;
    let init = resolve(
        &media,
        &attrs(tag(&parse_playlist(&pl.text()), "EXT-X-MAP"))["URI"],
    );
    assert_eq!(get(&init).await.status, 200);
    assert_eq!(calls("ok-1"), 1);
    let (call, auth) = hooks.last("play");
    assert_eq!(auth, format!("Bearer {HOOK_SECRET}"));
    assert_eq!(call["stream"], "live");
    assert_eq!(call["token"], "ok-1");
    assert!(call["remote_addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    // Another viewer gets their own decision; a denied one a 403, also cached.
    assert_eq!(get(&url("ok-2")).await.status, 200);
    assert_eq!(calls("ok-2"), 1);
    assert_refused(&get(&url("no")).await, "denied");
    assert_refused(&get(&url("no")).await, "denied");
    assert_eq!(calls("no"), 1);
    // Slow or broken (fail closed): refused, and not cached: asked again next time.
    assert_refused(&get(&url("slow")).await, "hook_failed");
    assert_refused(&get(&url("broken")).await, "hook_failed");
    assert_refused(&get(&url("broken")).await, "hook_failed");
    assert_eq!(calls("broken"), 2);
    // No token: decided per viewer address.
    assert_eq!(get(&node.url("/live/live/index.m3u8")).await.status, 200);
    assert_eq!(get(&node.url("/live/live/index.m3u8")).await.status, 200);
    assert_eq!(hooks.count("play", None) - hooks_with_token(&hooks), 1);
    // After the TTL the hook is asked again.
    let ttl = Duration::from_secs(15);
    tokio::time::sleep(ttl.saturating_sub(started.elapsed()) + Duration::from_secs(1)).await;
    assert_eq!(get(&url("ok-1")).await.status, 200);
    assert_eq!(calls("ok-1"), 2);
    assert!(metric(&node, "estuary_playback_refused_total", "reason=\"denied\"").await >= 2.0);
}

fn hooks_with_token(hooks: &HookServer) -> usize {
    hooks
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(v, _)| v["action"] == "play" && v["token"].is_string())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hooks_speak_http2_over_rustls_to_a_trusted_https_server() {
    let pki = tempdir("hooks-pki");
    let (ca, cert, key) = test_pki(&pki);
    let hooks = HookServer::start_tls(script(), &cert, &key).await;
    let url = hooks.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let trusting = Node::start(
        "hooks-tls",
        &format!(
            "[auth]\nplay_url = \"{url}\"\nhook_ca_file = {:?}\n",
            ca.display().to_string()
        ),
    );
    // Allowed by the hook; 404 only because nothing is published.
    let r = get(&trusting.url("/live/any/index.m3u8?__token__=ok-tls")).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(hooks.count("play", Some("any")), 1);
    assert_eq!(
        hooks.versions.lock().unwrap().as_slice(),
        [hyper::Version::HTTP_2]
    );
    assert_refused(
        &get(&trusting.url("/live/any/index.m3u8?__token__=no")).await,
        "denied",
    );
    // A node that does not trust the hook's CA never gets an answer: fail closed.
    let wary = Node::start("hooks-tls-wary", &format!("[auth]\nplay_url = \"{url}\"\n"));
    assert_refused(
        &get(&wary.url("/live/any/index.m3u8?__token__=ok-tls")).await,
        "hook_failed",
    );
    assert_eq!(hooks.count("play", Some("any")), 2);
}
