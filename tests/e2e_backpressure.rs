//! The queue between a pipeline's GStreamer threads and its packager is bounded: a
//! packager held back drops media (with a metric and a discontinuity) instead of
//! growing memory, and the stream keeps publishing parts.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_packager_drops_with_a_metric_and_memory_stays_bounded() {
    // For its first 70 s the packager waits a second after every chunk (a debug-build
    // switch): it takes one chunk a second while ~10 arrive, ~4 MB/s of media at
    // 30 Mbit/s. Then it catches up.
    let node = Node::start_with_env(
        "backpressure",
        "[ladder]\npassthrough = true\nrungs = []\n[streams.demo]\n",
        &[],
        &[("ESTUARY_DEBUG_SLOW_PACKAGER_MS", "1000:70")],
    );
    let url = srt_url(&node, "demo", None);
    let mut cmd = ffmpeg_source("1280x720", 90, true);
    cmd.args(x264_args(60)).args([
        "-b:v",
        "30M",
        "-minrate",
        "30M",
        "-maxrate",
        "30M",
        "-bufsize",
        "4M",
        "-x264-params",
        "nal-hrd=cbr",
        "-c:a",
        "aac",
        "-f",
        "mpegts",
        &url,
    ]);
    let _publisher = Publisher(cmd.spawn().expect("ffmpeg"));

    // The queue fills (its budget is 48 MB) and the pipeline starts dropping.
    let dropped = "estuary_media_chunks_dropped_total";
    let labels = "rendition=\"source\",stream=\"demo\"";
    wait_metric(&node, dropped, labels, 1.0, Duration::from_secs(60)).await;
    let rss_at_full = node.rss_kib();
    let parts_at_full = metric(&node, "estuary_parts_published_total", labels).await;

    // 20 s more input: ~75 MB of media that an unbounded queue would hold.
    let mut peak = rss_at_full;
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak = peak.max(node.rss_kib());
    }
    let grew_mib = peak.saturating_sub(rss_at_full) / 1024;
    assert!(
        grew_mib < 40,
        "RSS grew {grew_mib} MiB after the queue was full ({} -> {} KiB)",
        rss_at_full,
        peak
    );
    assert!(
        metric(&node, dropped, labels).await > 10.0,
        "drops keep being counted"
    );
    // The packager still publishes what it is given; once it catches up, the rendition
    // resumes at a keyframe after a discontinuity, in the same playlist.
    assert!(metric(&node, "estuary_parts_published_total", labels).await > parts_at_full);
    let deadline = Instant::now() + Duration::from_secs(90);
    let playlist = loop {
        let p = get(&node.url("/live/demo/source/index.m3u8")).await;
        if p.status == 200 && p.text().contains("#EXT-X-DISCONTINUITY\n") {
            break p.text();
        }
        assert!(
            Instant::now() < deadline,
            "no discontinuity after the gap:\n{}\n{}",
            p.text(),
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(node.log().contains("packager fell behind: media dropped"));
    // Parts keep coming after the gap, and the publisher was never disconnected.
    let parts = metric(&node, "estuary_parts_published_total", labels).await;
    wait_metric(
        &node,
        "estuary_parts_published_total",
        labels,
        parts + 10.0,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(metric(&node, "estuary_publishers_active", "").await, 1.0);
    let lines = parse_playlist(&playlist);
    assert!(!segments(&lines).is_empty(), "{playlist}");
}
