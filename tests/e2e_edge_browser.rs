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
    let (_, pages) = browser::web_pages();
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
    let v = browser::play(&edge.url("/watch/demo?q=source"), 15, 3, "edge").await;
    browser::assert_played_smoothly(&v, 30);
    let result = v.to_string();
    assert!(
        v["hls_latency_median_ms"].as_f64().unwrap() < 3000.0,
        "{result}"
    );
}
