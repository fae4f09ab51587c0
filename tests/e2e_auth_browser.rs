//! hls.js in Debian's Chromium (playwright-core, `web/tests/latency.mjs`) plays a signed
//! stream with the token only in the page URL (`/watch/paid?__token__=…`): the page
//! hands it to the multivariant playlist and the node carries it into every URI after
//! that (media playlists, init segments, parts, preload hints, rendition reports).
//!
//! Needs `/usr/bin/chromium`, `node` and `npm ci` in `web/` (scripts/setup.sh --test);
//! a missing prerequisite is a failure, not a skip.

mod auth_support;
mod common;
mod edge_support;

use std::time::Duration;

use auth_support::*;
use common::*;
use edge_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hlsjs_plays_a_signed_stream_with_the_token_in_the_page_url_only() {
    let (_, pages) = browser::web_pages();
    let node = Node::start(
        "auth-browser",
        &format!(
            "{pages}[auth]\nplayback_key = \"{KEY}\"\n[streams.paid]\nplayback = \"signed\"\n"
        ),
    );
    let _pub = small_publish(&node, "paid", 90);
    let token = sign(&node, "paid", &["--ttl", "1h"]);
    wait_ok(
        &node.url(&format!(
            "/live/paid/source/index.m3u8?__token__={}",
            q(&token)
        )),
        Duration::from_secs(30),
    )
    .await;
    let served_parts = || {
        metric(
            &node,
            "estuary_http_requests_total",
            "route=\"part\",status=\"200\"",
        )
    };
    let parts_before = served_parts().await;
    let page = node.url(&format!("/watch/paid?q=source&__token__={}", q(&token)));
    let v = browser::play(&page, 10, 2, "signed").await;
    assert_eq!(v["fatal_errors"], 0, "{v}");
    assert!(v["parts_loaded"].as_u64().unwrap() >= 20, "{v}");
    let rate = v["playback_rate_ok"].as_f64().unwrap();
    assert!((0.8..1.3).contains(&rate), "{v}");
    // Every media request the browser made carried the token: none was refused, and
    // the parts it played were served.
    assert_eq!(
        metric(&node, "estuary_playback_refused_total", "").await,
        0.0
    );
    assert!(served_parts().await - parts_before >= 20.0);
}
