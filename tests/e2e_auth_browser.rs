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
    let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    for m in ["playwright-core/package.json", "hls.js/dist/hls.min.js"] {
        assert!(
            web.join("node_modules").join(m).exists(),
            "web/node_modules/{m} is missing: run `npm ci` in web/ (scripts/setup.sh --test)"
        );
    }
    let node = Node::start(
        "auth-browser",
        &format!(
            "http.web_root = {:?}\nhttp.hlsjs = {:?}\n[auth]\nplayback_key = \"{KEY}\"\n\
             [streams.paid]\nplayback = \"signed\"\n",
            web.display().to_string(),
            web.join("node_modules/hls.js/dist/hls.min.js")
                .display()
                .to_string()
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
    let parts_before = metric(
        &node,
        "estuary_http_requests_total",
        "route=\"part\",status=\"200\"",
    )
    .await;
    let out = tokio::time::timeout(
        Duration::from_secs(150),
        tokio::process::Command::new("node")
            .arg(web.join("tests/latency.mjs"))
            .current_dir(&web)
            .args([
                "--url",
                &node.url(&format!("/watch/paid?q=source&__token__={}", q(&token))),
            ])
            .args(["--secs", "10", "--settle", "2", "--label", "signed"])
            .output(),
    )
    .await
    .expect("latency.mjs did not finish")
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}\nnode log in {}",
        String::from_utf8_lossy(&out.stderr),
        node.dir.display()
    );
    let result = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT: {text}"));
    let v: serde_json::Value = serde_json::from_str(result).unwrap();
    println!("{result}");
    assert_eq!(v["fatal_errors"], 0, "{result}");
    assert!(v["parts_loaded"].as_u64().unwrap() >= 20, "{result}");
    let rate = v["playback_rate_ok"].as_f64().unwrap();
    assert!((0.8..1.3).contains(&rate), "{result}");
    // Every media request the browser made carried the token: none was refused, and
    // the parts it played were served.
    assert_eq!(
        metric(&node, "estuary_playback_refused_total", "").await,
        0.0
    );
    assert!(
        metric(
            &node,
            "estuary_http_requests_total",
            "route=\"part\",status=\"200\""
        )
        .await
            - parts_before
            >= 20.0
    );
}
