//! 100 ms parts end to end: ffmpeg publishes over SRT (libsrt's default options) to the
//! real binary set to `hls.part_target = "100ms"`; hls.js in Debian's Chromium plays the
//! stream with parts and without a stall, while an HTTP client follows the playlist with
//! blocking reloads and checks it: a fixed `PART-TARGET`, every part within it,
//! `PART-HOLD-BACK` of at least three part targets, `CAN-BLOCK-RELOAD`, parts addressable
//! by `_HLS_msn`/`_HLS_part`, and every preload hint a part that comes to exist. The
//! picture carries the in-picture capture clock, and the page reads it back.

mod common;

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use common::*;

/// Follows `url` with blocking reloads for `secs`, fetching each hinted part as hls.js
/// does; returns how many hinted parts were fetched, and the 100 ms checks' failures.
async fn follow(url: String, base: String, secs: u64) -> (u32, Vec<String>) {
    let mut bad = Vec::new();
    let mut fetched = 0u32;
    let mut uris = BTreeSet::new();
    let end = Instant::now() + Duration::from_secs(secs);
    let mut lines = parse_playlist(&wait_ok(&url, Duration::from_secs(10)).await.text());
    while Instant::now() < end && bad.len() < 20 {
        let part_inf = attrs(tag(&lines, "EXT-X-PART-INF"));
        if part_inf["PART-TARGET"] != "0.100" {
            bad.push(format!("PART-TARGET {}", part_inf["PART-TARGET"]));
        }
        let control = attrs(tag(&lines, "EXT-X-SERVER-CONTROL"));
        let hold_back: f64 = control["PART-HOLD-BACK"].parse().unwrap();
        if hold_back < 0.3 || control.get("CAN-BLOCK-RELOAD").map(String::as_str) != Some("YES") {
            bad.push(format!("EXT-X-SERVER-CONTROL {control:?}"));
        }
        for (msn, parts) in segment_parts(&lines) {
            for p in parts {
                let d: f64 = p["DURATION"].parse().unwrap();
                if d > 0.1 || d <= 0.0 {
                    bad.push(format!("{msn}: part {} of {d} s", p["URI"]));
                }
                uris.insert(p["URI"].clone());
            }
        }
        let (hint, (m, p), part, next) = hint_and_reload(&url, &base, &lines).await;
        if part.status == 200 {
            fetched += 1;
        } else {
            bad.push(format!("hinted {hint}: {}", part.status));
        }
        assert_eq!(next.status, 200, "blocking reload {m}.{p}");
        lines = parse_playlist(&next.text());
        // The reload answered for part `m.p`: the playlist lists it, and it is the part
        // that was hinted.
        let listed = segment_parts(&lines)
            .into_iter()
            .find(|(msn, _)| *msn == m)
            .and_then(|(_, ps)| ps.get(p as usize).map(|a| a["URI"].clone()))
            .or_else(|| {
                // The hinted part opened the next segment.
                segment_parts(&lines)
                    .into_iter()
                    .find(|(msn, _)| *msn == m + 1)
                    .and_then(|(_, ps)| ps.first().map(|a| a["URI"].clone()))
            });
        if listed.as_deref() != Some(hint.as_str()) {
            bad.push(format!("reload {m}.{p} lists {listed:?}, hinted {hint}"));
        }
    }
    assert!(uris.len() as u32 >= fetched, "part URIs repeat");
    (fetched, bad)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_ms_parts_play_in_chromium_and_the_playlist_keeps_the_rules() {
    let (_, pages) = common::browser::web_pages();
    let node = Node::start(
        "parts100",
        &format!("{pages}hls.part_target = \"100ms\"\n[streams.demo]\n"),
    );
    // 360p: what is tested is the part timing, and a smaller picture leaves the shared
    // cores to the encoder and the browser, so a stall is the node's, not the machine's.
    // The picture carries the in-picture capture clock, drawn by scripts/clock-filter.sh.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let filter = node.dir.join("clock-filter.txt");
    std::fs::write(
        &filter,
        stdout_of(
            std::process::Command::new(root.join("scripts/clock-filter.sh")).args(["640", "360"]),
        ),
    )
    .unwrap();
    let mut cmd = ffmpeg_source("640x360", 90, true);
    cmd.arg("-filter_script:v")
        .arg(&filter)
        .args(x264_args(30))
        .args(["-b:v", "1M", "-c:a", "aac", "-b:a", "96k", "-f", "mpegts"])
        .arg(srt_url(&node, "demo", None));
    let _p = Publisher(cmd.spawn().expect("ffmpeg"));
    let url = node.url("/live/demo/source/index.m3u8");
    wait_ok(&url, Duration::from_secs(30)).await;
    let checker = tokio::spawn(follow(url, node.url("/live/demo/source/"), 40));
    let v = common::browser::play(&node.url("/watch/demo?q=source"), 20, 8, "parts100").await;
    assert_eq!(v["part_target_s"], 0.1, "{v}");
    // 20 s at 100 ms parts is 200 parts; hls.js must use parts, not whole segments.
    common::browser::assert_played_smoothly(&v, 150);
    assert_eq!(v["segments_loaded"], 0, "{v}");
    // The page read the capture clock back from the frames it showed (nearly all of them:
    // a frame caught mid-change may not read), and each was shown after its capture.
    let (frames, unreadable) = (
        v["clock_frames"].as_u64().unwrap(),
        v["clock_unreadable"].as_u64().unwrap(),
    );
    assert!(frames > 100 && unreadable * 10 < frames, "{v}");
    assert!(v["clock_p10_ms"].as_i64().unwrap() > 0, "{v}");
    let (fetched, bad) = checker.await.unwrap();
    assert!(bad.is_empty(), "{bad:#?}");
    // 40 s of 100 ms parts, one blocking reload at a time.
    assert!(fetched > 200, "only {fetched} hinted parts fetched");
}
