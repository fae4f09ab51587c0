//! B-frames in passthrough, as OBS's x264 sends them by default (`bframes=2`, no
//! zerolatency tune): the packaged CMAF keeps the composition offsets, so the frames
//! come out in presentation order, and hls.js in Chromium plays them. Its own test
//! binary, so the browser does not share the CPU with other tests.
//!
//! Needs `/usr/bin/chromium`, `node` and `npm ci` in `web/` (scripts/setup.sh --test).

mod common;

use std::time::Duration;

use common::*;

/// Picture types and presentation times of the video frames in `file`, in decode order.
fn frames(file: &std::path::Path) -> Vec<(String, f64)> {
    let mut probe = std::process::Command::new("ffprobe");
    probe
        .args(["-v", "error", "-select_streams", "v:0", "-show_frames"])
        .args([
            "-show_entries",
            "frame=pict_type,pts_time",
            "-of",
            "csv=p=0",
        ])
        .arg(file);
    stdout_of(&mut probe)
        .lines()
        .filter_map(|l| {
            let mut it = l.split(',');
            let pts = it.next()?.parse().ok()?;
            Some((it.next()?.trim().to_owned(), pts))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_frames_pass_through_and_play_in_chromium() {
    let (_, pages) = browser::web_pages();
    let node = Node::start(
        "bframes",
        &format!("{pages}[ladder]\npassthrough = true\nrungs = []\n[streams.demo]\n"),
    );
    // OBS's x264 defaults: veryfast, High profile, 2 B-frames, 2 s keyframe interval.
    let url = srt_url(&node, "demo", None);
    let _publisher = ffmpeg_publish_with(
        &url,
        120,
        &[
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-profile:v",
            "high",
            "-bf",
            "2",
            "-g",
            "60",
            "-pix_fmt",
            "yuv420p",
        ],
        "1280x720",
    );
    let mv = wait_ok(&node.url("/live/demo/index.m3u8"), Duration::from_secs(30)).await;
    assert!(mv.text().contains("avc1.64"), "High profile: {}", mv.text());

    // A complete segment decodes with B-frames, in presentation order.
    let lines = parse_playlist(&get(&node.url("/live/demo/source/index.m3u8")).await.text());
    let (_, _, seg) = segments(&lines).last().cloned().expect("a segment");
    let init = get(&node.url("/live/demo/source/init.mp4")).await;
    let media = get(&node.url(&format!("/live/demo/source/{seg}"))).await;
    let file = node.dir.join("segment.mp4");
    std::fs::write(&file, [init.body.to_vec(), media.body.to_vec()].concat()).unwrap();
    let frames = frames(&file);
    let b = frames.iter().filter(|(t, _)| t == "B").count();
    assert!(b > frames.len() / 4, "B-frames kept: {frames:?}");
    let pts: Vec<f64> = frames.iter().map(|(_, p)| *p).collect();
    assert!(
        pts.windows(2).all(|w| w[1] > w[0]),
        "frames leave the decoder in presentation order: {pts:?}"
    );
    assert_eq!(frames.first().map(|(t, _)| t.as_str()), Some("I"));

    let v = browser::play(&node.url("/watch/demo?q=source"), 15, 3, "bframes").await;
    browser::assert_played_smoothly(&v, 30);

    // cmafmux cuts chunks in decode order at a presentation time, so with B-frames a
    // chunk may hold frames reordered from before it; the node joins whole chunks so no
    // part runs over PART-TARGET (0.267 s parts at 0.2 s before), and every segment is the
    // sum of its parts.
    let lines = parse_playlist(&get(&node.url("/live/demo/source/index.m3u8")).await.text());
    let target: f64 = attrs(tag(&lines, "EXT-X-PART-INF"))["PART-TARGET"]
        .parse()
        .unwrap();
    let parts = segment_parts(&lines);
    let listed: Vec<f64> = parts
        .iter()
        .flat_map(|(_, ps)| ps.iter().map(|p| p["DURATION"].parse::<f64>().unwrap()))
        .collect();
    assert!(listed.len() >= 10, "{listed:?}");
    assert!(
        listed.iter().all(|d| *d <= target + 1e-6),
        "every part within PART-TARGET {target}: {listed:?}"
    );
    for (msn, d, _) in segments(&lines) {
        // Parts are listed for the last few segments only.
        let Some((_, ps)) = parts.iter().find(|(m, ps)| *m == msn && !ps.is_empty()) else {
            continue;
        };
        let sum: f64 = ps
            .iter()
            .map(|p| p["DURATION"].parse::<f64>().unwrap())
            .sum();
        // Each figure is rounded to the millisecond.
        let slack = 0.0005 * (ps.len() + 1) as f64;
        assert!(
            (sum - d).abs() <= slack,
            "segment {msn}: EXTINF {d}, parts {sum}"
        );
    }
}
