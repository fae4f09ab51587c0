//! End to end in a real browser, through the edge: hls.js in Debian's Chromium (driven by
//! playwright-core, `web/tests/latency.mjs`) plays LL-HLS from an edge that pulls from an
//! origin. Its own test binary, so it never shares the CPU with the other edge tests
//! (a starved browser stalls whatever the server does).
//!
//! Needs `/usr/bin/chromium`, `node` and `npm ci` in `web/` (scripts/setup.sh --test).

mod common;
mod edge_support;

use std::time::Duration;

use common::*;
use edge_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hlsjs_in_chromium_plays_ll_hls_from_the_edge() {
    // Needs /usr/bin/chromium, node and `npm ci` in web/ (scripts/setup.sh --test), like
    // e2e_browser: a missing prerequisite is a failure, not a skip.
    let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    for m in ["playwright-core/package.json", "hls.js/dist/hls.min.js"] {
        assert!(
            web.join("node_modules").join(m).exists(),
            "web/node_modules/{m} is missing: run `npm ci` in web/ (scripts/setup.sh --test)"
        );
    }
    let pages = format!(
        "http.web_root = {:?}\nhttp.hlsjs = {:?}\n",
        web.display().to_string(),
        web.join("node_modules/hls.js/dist/hls.min.js")
            .display()
            .to_string()
    );
    let origin = Node::start("hlsjs-origin", "[streams.demo]\n");
    let edge = Node::start(
        "hlsjs-edge",
        &format!("{pages}{}", upstream_cfg(&[&origin], "")),
    );
    let _pub = small_publish(&origin, "demo", 90);
    wait_ok(
        &edge.url("/live/demo/source/index.m3u8"),
        Duration::from_secs(30),
    )
    .await;
    let out = tokio::time::timeout(
        Duration::from_secs(150),
        tokio::process::Command::new("node")
            .arg(web.join("tests/latency.mjs"))
            .current_dir(&web)
            .args(["--url", &edge.url("/watch/demo?q=source")])
            .args(["--secs", "15", "--settle", "3", "--label", "edge"])
            .output(),
    )
    .await
    .expect("latency.mjs did not finish")
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT: {text}"));
    let v: serde_json::Value = serde_json::from_str(result).unwrap();
    println!("{result}");
    assert_eq!(v["fatal_errors"], 0, "{result}");
    assert_eq!(v["stalls"], 0, "{result}");
    // LL-HLS: hls.js loaded parts (not whole segments) at the edge, at real speed.
    assert!(v["parts_loaded"].as_u64().unwrap() >= 30, "{result}");
    let rate = v["playback_rate_ok"].as_f64().unwrap();
    assert!((0.8..1.3).contains(&rate), "{result}");
    assert!(
        v["hls_latency_median_ms"].as_f64().unwrap() < 3000.0,
        "{result}"
    );
}
