//! LL-HLS exactness on a ladder stream: every preload hint names a part that comes to
//! exist. Its own test binary, so its 60 s of encoding does not share the two cores with
//! the ladder alignment tests.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Every `EXT-X-PRELOAD-HINT` names a part that comes to exist, in every rendition of a
/// ladder stream (encoded rungs and audio cut segments at exact instants, the passthrough
/// at keyframes): a player follows each rendition for 60 s with blocking reloads and
/// fetches every hinted URI before it is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_preload_hint_is_a_part_that_exists() {
    let ladder = r#"
[ladder]
passthrough = true
[[ladder.rungs]]
name = "360p"
codec = "h264"
width = 640
height = 360
bitrate_kbps = 700
preset = "ultrafast"
[streams.demo]
"#;
    let node = Node::start("hints", ladder);
    let _p = ffmpeg_publish(&srt_url(&node, "demo", None), 80, 30);
    wait_ok(&node.url("/live/demo/index.m3u8"), Duration::from_secs(30)).await;
    let follow = |rendition: &'static str| {
        let url = node.url(&format!("/live/demo/{rendition}/index.m3u8"));
        let base = node.url(&format!("/live/demo/{rendition}/"));
        tokio::spawn(async move {
            let (mut ok, mut bad) = (0u32, Vec::new());
            let mut seen_boundary = 0u32;
            let end = Instant::now() + Duration::from_secs(60);
            let mut lines = parse_playlist(&wait_ok(&url, Duration::from_secs(10)).await.text());
            while Instant::now() < end {
                // The hinted part and the playlist that lists it, asked for at once, as
                // hls.js does.
                let (hint, _, part, next) = hint_and_reload(&url, &base, &lines).await;
                if part.status == 200 {
                    ok += 1;
                } else {
                    bad.push((hint.clone(), part.status));
                }
                assert_eq!(next.status, 200, "{rendition}: blocking reload");
                lines = parse_playlist(&next.text());
                // Count hints that turned out to open a new segment: the case that used to 404.
                let opened = segment_parts(&lines)
                    .iter()
                    .any(|(_, ps)| ps.first().is_some_and(|a| a["URI"] == hint));
                seen_boundary += u32::from(opened);
            }
            (rendition, ok, bad, seen_boundary)
        })
    };
    let tasks = ["source", "360p", "audio"].map(follow);
    for t in tasks {
        let (rendition, ok, bad, boundaries) = t.await.unwrap();
        assert!(
            bad.is_empty(),
            "{rendition}: hinted parts not served: {bad:?}"
        );
        // 60 s at 200 ms parts, one at a time: well over 100 hints each.
        assert!(ok > 100, "{rendition}: only {ok} hinted parts fetched");
        assert!(
            boundaries > 20,
            "{rendition}: only {boundaries} hints fell on a segment start"
        );
    }
}
