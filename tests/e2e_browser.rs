//! End to end in a real browser: ffmpeg publishes over SRT to the real binary, and Debian's
//! Chromium, driven by playwright-core (`web/tests/e2e.mjs`), opens the front page and two
//! player pages (a viewer and a host). The script checks playback, LL-HLS parts, chat,
//! polls in step with the video, reactions and Q&A, takes screenshots into the test's temp
//! dir and prints the latency it measured. This test fails when the script fails.
//!
//! Needs `/usr/bin/chromium` (or `CHROMIUM`), `node`, and `npm ci` done in `web/`
//! (scripts/setup.sh --test does all three). A missing prerequisite is a failure, not a skip.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::*;

const SECRET: &str = "browser-e2e-secret-0123456789abcdef";
/// The script bounds itself (HARD_LIMIT_MS); this is the backstop.
const SCRIPT_LIMIT: Duration = Duration::from_secs(200);

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web")
}

fn require_prerequisites() -> PathBuf {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: run scripts/setup.sh --test (Debian package chromium)"
    );
    let node_ok = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(node_ok, "node is missing: run scripts/setup.sh --test");
    let web = web_dir();
    for m in ["playwright-core/package.json", "hls.js/dist/hls.min.js"] {
        assert!(
            web.join("node_modules").join(m).exists(),
            "web/node_modules/{m} is missing: run `npm ci` in web/ (scripts/setup.sh --test)"
        );
    }
    web
}

/// Mints a token for `demo` (the `estuary token` subcommand, the secret from the config).
fn mint(node: &Node, role: &str, user: &str, name: &str) -> String {
    mint_token(node, role, user, name, "demo")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn player_page_plays_ll_hls_and_overlays_work_in_chromium() {
    let web = require_prerequisites();
    let hlsjs = web.join("node_modules/hls.js/dist/hls.min.js");
    let node = Node::start(
        "browser",
        &format!(
            "http.web_root = {:?}\nhttp.hlsjs = {:?}\n[interact]\ntoken_secret = {SECRET:?}\n[streams.demo]\n",
            web.display().to_string(),
            hlsjs.display().to_string(),
        ),
    );
    let host_token = mint(&node, "host", "alice", "Alice");
    let viewer_token = mint(&node, "viewer", "bob", "Bob");

    let _pub = ffmpeg_publish(&srt_url(&node, "demo", None), 150, 30);
    wait_ok(
        &node.url("/live/demo/source/index.m3u8"),
        Duration::from_secs(20),
    )
    .await;
    // The page and hls.js are served by the node itself.
    assert_eq!(get(&node.url("/watch/demo")).await.status, 200);
    assert_eq!(
        get(&node.url("/static/vendor/hls.min.js")).await.status,
        200
    );

    let shots = node.dir.join("shots");
    let log_path = node.dir.join("browser.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new("node")
        .arg(web.join("tests/e2e.mjs"))
        .current_dir(&web)
        .env("ESTUARY_URL", format!("http://{}", node.http))
        .env("STREAM", "demo")
        .env("HOST_TOKEN", &host_token)
        .env("VIEWER_TOKEN", &viewer_token)
        .env("OUT_DIR", &shots)
        .env("PLAY_SECS", "20")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("run node web/tests/e2e.mjs");
    let deadline = Instant::now() + SCRIPT_LIMIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    println!("{output}");
    println!("screenshots in {}", shots.display());
    let status =
        status.unwrap_or_else(|| panic!("browser script ran over {SCRIPT_LIMIT:?}\n{output}"));
    assert!(
        status.success(),
        "browser checks failed ({status}); node log in {}\n{output}",
        node.dir.display()
    );
    assert!(shots.join("viewer.png").exists() && shots.join("host.png").exists());
}
