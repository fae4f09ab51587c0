//! Live config reload against the real binary: SIGHUP, `POST /admin/reload` and
//! `estuary admin reload`. ffmpeg publishes over SRT with libsrt's default options; a
//! viewer keeps doing LL-HLS blocking playlist reloads and holds a WebSocket the whole
//! time, and must see no error and no disconnect.

mod common;
mod interact_support;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::{admin::*, *};
use estuary::interact::Role;
use serde_json::{json, Value};

const TOKEN: &str = "reload-admin-token-0123456789";
const OLD: &str = "old-passphrase-0001";
const NEW: &str = "new-passphrase-0002";
const LIMIT: Duration = Duration::from_secs(40);

/// The test's config file, rewritten between reloads (the harness's listen lines kept).
struct File {
    path: std::path::PathBuf,
    base: String,
}

impl File {
    fn of(node: &Node, first: &str) -> Self {
        let path = node.dir.join("estuary.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let base = text.strip_suffix(first).expect("harness config").to_owned();
        Self { path, base }
    }

    fn write(&self, extra: &str) {
        std::fs::write(&self.path, format!("{}{extra}", self.base)).unwrap();
    }
}

/// Root keys every config of these tests has: the admin token and the interaction secret.
fn head() -> String {
    format!(
        "admin.token = \"{TOKEN}\"\ninteract.token_secret = \"{}\"\n",
        interact_support::SECRET
    )
}

fn publish(node: &Node, stream: &str, passphrase: Option<&str>, secs: u32) -> Publisher {
    let x264 = x264_args(30);
    let args: Vec<&str> = x264.iter().map(String::as_str).collect();
    ffmpeg_publish_with(&srt_url(node, stream, passphrase), secs, &args, "640x360")
}

/// A publisher that must be refused: ffmpeg gives up with an error, and the stream never
/// gets a playlist.
async fn refused(node: &Node, stream: &str, passphrase: Option<&str>) {
    let mut p = publish(node, stream, passphrase, 20);
    assert_eq!(
        p.wait_exit(Duration::from_secs(30)),
        Some(false),
        "ffmpeg should be refused on {stream}\n{}",
        node.log()
    );
    let r = get(&node.url(&format!("/live/{stream}/source/index.m3u8"))).await;
    assert_eq!(r.status, 404, "{stream} must have no playlist");
}

/// A publisher that must get in: its stream's playlist appears.
async fn admitted(node: &Node, stream: &str, passphrase: Option<&str>) -> Publisher {
    let p = publish(node, stream, passphrase, 120);
    wait_ok(
        &node.url(&format!("/live/{stream}/source/index.m3u8")),
        LIMIT,
    )
    .await;
    p
}

async fn reload_metric(node: &Node, result: &str) -> f64 {
    metric(
        node,
        "estuary_config_reloads_total",
        &format!("result=\"{result}\""),
    )
    .await
}

/// A viewer at the live edge: blocking playlist reloads in a loop, and a WebSocket.
struct Viewer {
    stop: Arc<AtomicBool>,
    /// Blocking reloads answered 200 so far.
    ok: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Vec<String>>,
    ws: interact_support::Client,
}

impl Viewer {
    async fn start(node: &Node, stream: &str) -> Self {
        let url = node.url(&format!("/live/{stream}/source/index.m3u8"));
        wait_ok(&url, LIMIT).await;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let ok = Arc::new(AtomicU64::new(0));
        let count = ok.clone();
        let task = tokio::spawn(async move {
            let mut errors = Vec::new();
            let mut lines = parse_playlist(&get(&url).await.text());
            // Bounded: at most 2,000 reloads, stopped long before by the test.
            for _ in 0..2_000 {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let (msn, part) = next_part_target(&lines);
                let r = get(&format!("{url}?_HLS_msn={msn}&_HLS_part={part}")).await;
                if r.status == 200 {
                    count.fetch_add(1, Ordering::Relaxed);
                    lines = parse_playlist(&r.text());
                } else {
                    errors.push(format!("{msn}.{part}: {}", r.status));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    lines = parse_playlist(&get(&url).await.text());
                }
            }
            errors
        });
        let token = interact_support::token_for(Role::Viewer, "watcher", Some(stream));
        let ws_url = format!("ws://{}/live/{stream}/events?token={token}", node.http);
        let ws = interact_support::Client::connect(&ws_url).await.unwrap();
        Self { stop, ok, task, ws }
    }

    /// Every blocking reload answered 200 and the WebSocket still carries chat.
    async fn finish(mut self, node: &Node) {
        let ack = self
            .ws
            .request(json!({"type": "chat", "text": "still here"}), "r1")
            .await
            .expect("the WebSocket stays open across reloads");
        assert_eq!(ack["type"], "ack", "{ack}");
        // At least ten parts' worth of blocking reloads (bounded wait: a fast test run
        // may finish before the viewer has made them).
        let deadline = Instant::now() + LIMIT;
        while self.ok.load(Ordering::Relaxed) < 10 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.stop.store(true, Ordering::Relaxed);
        let errors = self.task.await.unwrap();
        let ok = self.ok.load(Ordering::Relaxed);
        assert!(
            errors.is_empty(),
            "blocking reloads failed: {errors:?}\n{}",
            node.log()
        );
        assert!(ok >= 10, "only {ok} blocking reloads");
    }
}

/// Waits until `cond` holds on the log, for at most `LIMIT`.
async fn wait_log(node: &Node, what: &str, cond: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !cond(&node.log()) {
        assert!(
            Instant::now() < deadline,
            "log never showed {what}\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn admin_config(node: &Node) -> Value {
    let (status, body) = curl("GET", &node.url("/admin/config"), Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_new_stream_new_passphrase_and_a_broken_file() {
    let h = head();
    let first = format!(
        "{h}[streams.keep]\npassphrase = \"{OLD}\"\n[streams.pass]\npassphrase = \"{OLD}\"\n"
    );
    let node = Node::start("reload-hup", &first);
    let file = File::of(&node, &first);
    let mut keep = admitted(&node, "keep", Some(OLD)).await;
    let viewer = Viewer::start(&node, "keep").await;
    assert_eq!(metric(&node, "estuary_config_generation", "").await, 1.0);

    // Before: a stream that is not configured is refused at the handshake.
    refused(&node, "newcam", None).await;

    // A new stream; both passphrases changed (keep's publisher is connected).
    file.write(&format!(
        "{h}[streams.keep]\npassphrase = \"{NEW}\"\n[streams.pass]\npassphrase = \"{NEW}\"\n\
         [streams.newcam]\n"
    ));
    node.signal("HUP");
    wait_metric(
        &node,
        "estuary_config_reloads_total",
        "result=\"ok\"",
        1.0,
        LIMIT,
    )
    .await;
    assert_eq!(metric(&node, "estuary_config_generation", "").await, 2.0);
    assert!(metric(&node, "estuary_config_loaded_timestamp_seconds", "").await > 1.0e9);

    let newcam = admitted(&node, "newcam", None).await;
    drop(newcam);
    // The old passphrase fails the next handshake; the new one gets in.
    refused(&node, "pass", Some(OLD)).await;
    let pass = admitted(&node, "pass", Some(NEW)).await;
    drop(pass);
    // The publisher connected with the old passphrase keeps publishing.
    assert!(
        keep.0.try_wait().unwrap().is_none(),
        "keep's publisher ended"
    );

    // A broken file: the running config stays, the log names the key, the node serves.
    file.write(&format!(
        "{h}[streams.keep]\npassphrase = \"{NEW}\"\n[streams.pass]\npassphrase = \"short\"\n"
    ));
    node.signal("HUP");
    wait_metric(
        &node,
        "estuary_config_reloads_total",
        "result=\"error\"",
        1.0,
        LIMIT,
    )
    .await;
    wait_log(&node, "the failing key", |l| {
        l.contains("config reload failed") && l.contains("streams.pass.passphrase")
    })
    .await;
    assert_eq!(metric(&node, "estuary_config_generation", "").await, 2.0);
    assert_eq!(reload_metric(&node, "ok").await, 1.0);
    let cfg = admin_config(&node);
    assert!(cfg["streams"]["newcam"].is_object(), "{cfg}");
    let newcam = admitted(&node, "newcam", None).await;
    drop(newcam);

    viewer.finish(&node).await;
    assert!(
        keep.0.try_wait().unwrap().is_none(),
        "keep's publisher ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reload_over_http_and_the_cli() {
    let h = head();
    let first = format!("{h}[streams.keep]\n[streams.gone]\n");
    let node = Node::start("reload-admin", &first);
    let file = File::of(&node, &first);
    let _keep = admitted(&node, "keep", None).await;
    let viewer = Viewer::start(&node, "keep").await;
    let mut gone = admitted(&node, "gone", None).await;
    refused(&node, "newcam", None).await;

    // POST /admin/reload: a stream added, a live one removed, and two restart-only keys.
    let base = file.base.clone();
    let moved = File {
        path: file.path.clone(),
        base: base.replace(
            "http.listen = \"127.0.0.1:0\"",
            "http.listen = \"127.0.0.1:1\"",
        ),
    };
    assert_ne!(moved.base, base);
    moved.write(&format!(
        "{h}[hls]\npart_target = \"300ms\"\n[streams.keep]\n[streams.newcam]\n"
    ));
    let (status, body) = curl("POST", &node.url("/admin/reload"), Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["generation"], 2, "{v}");
    assert_eq!(
        v["changed"],
        json!(["streams.gone", "streams.newcam"]),
        "{v}"
    );
    assert_eq!(
        v["restart_required"],
        json!(["hls.part_target", "http.listen"]),
        "{v}"
    );
    wait_log(&node, "the restart-only keys", |l| {
        l.contains("need a restart") && l.contains("http.listen")
    })
    .await;
    let cfg = admin_config(&node);
    assert_eq!(cfg["hls"]["part_target"], "200ms", "{cfg}");
    assert!(cfg["streams"]["gone"].is_null(), "{cfg}");

    let newcam = admitted(&node, "newcam", None).await;
    drop(newcam);
    // A removed stream's publisher continues until it leaves; then it is refused.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        gone.0.try_wait().unwrap().is_none(),
        "gone's publisher ended"
    );
    wait_ok(&node.url("/live/gone/source/index.m3u8"), LIMIT).await;
    drop(gone);
    wait_publishers(&node, 1.0, LIMIT).await;
    let before = metric(
        &node,
        "estuary_srt_rejected_total",
        "reason=\"unknown_stream\"",
    )
    .await;
    let mut again = publish(&node, "gone", None, 20);
    assert_eq!(again.wait_exit(Duration::from_secs(30)), Some(false));
    let after = metric(
        &node,
        "estuary_srt_rejected_total",
        "reason=\"unknown_stream\"",
    )
    .await;
    assert!(after > before, "{before} -> {after}");

    // A TOML error: the CLI fails naming the key; the API answers it as JSON.
    let url = node.url("");
    let cli = ["--url", url.as_str(), "--token", TOKEN, "reload"];
    file.write(&format!(
        "{h}[hls]\npart_target = \"soon\"\n[streams.keep]\n"
    ));
    let r = estuary_admin(&cli, &[]).await;
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("invalid_config") && r.stderr.contains("hls.part_target"),
        "{}",
        r.stderr
    );
    let (status, body) = curl("POST", &node.url("/admin/reload"), Some(TOKEN));
    assert_eq!(status, 400, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["code"].as_str(), v["key"].as_str()),
        (Some("invalid_config"), Some("hls.part_target")),
        "{v}"
    );
    assert_eq!(reload_metric(&node, "error").await, 2.0);
    assert_eq!(metric(&node, "estuary_config_generation", "").await, 2.0);

    // A good file again, through the CLI: newcam removed, late added, and a new
    // interaction secret: tokens of the old one are refused from now on, while the
    // viewer's WebSocket, opened with one, stays.
    let fresh = "fresh-interact-secret-0123456789";
    file.write(&format!(
        "admin.token = \"{TOKEN}\"\ninteract.token_secret = \"{fresh}\"\n\
         [streams.keep]\n[streams.late]\n"
    ));
    let r = estuary_admin(&cli, &[]).await;
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("generation 3") && r.stdout.contains("streams.late"),
        "{}",
        r.stdout
    );
    let late = admitted(&node, "late", None).await;
    drop(late);
    let old_token = interact_support::token_for(Role::Viewer, "other", Some("keep"));
    let ws_url = format!("ws://{}/live/keep/events?token={old_token}", node.http);
    let (status, body) = interact_support::refused(&ws_url).await.unwrap();
    assert_eq!(status, 401, "{body}");

    viewer.finish(&node).await;
}
