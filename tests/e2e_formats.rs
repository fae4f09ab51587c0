//! Contribution formats browsers cannot decode (10-bit, 4:2:2, 4:4:4). Its own test
//! binary: decoding 10-bit 4:4:4 takes a whole core.

mod common;

use std::{process::Command, time::Duration};

use common::*;

/// A 10-bit 4:4:4 H.264 contribution (what an unpinned GStreamer x264enc sends) is never
/// passed through to browsers: with a ladder the rungs carry it as 8-bit 4:2:0; without
/// one the stream is refused with the profile and what to change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_444_10bit_is_transcoded_or_refused_clearly() {
    let cfg = r#"
[ladder]
passthrough = true
[[ladder.rungs]]
name = "360p"
codec = "h264"
width = 640
height = 360
bitrate_kbps = 700
preset = "ultrafast"
[streams.hi]
[streams.plain]
[streams.plain.ladder]
passthrough = true
"#;
    let node = Node::start("hi444", cfg);
    let mut args = x264_args(30);
    args.extend(["-pix_fmt".to_owned(), "yuv444p10le".to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _hi = ffmpeg_publish_with(&srt_url(&node, "hi", None), 30, &args, "1280x720");
    let _plain = ffmpeg_publish_with(&srt_url(&node, "plain", None), 30, &args, "1280x720");
    let mv = wait_ok(&node.url("/live/hi/index.m3u8"), Duration::from_secs(30)).await;
    let lines = parse_playlist(&mv.text());
    let variants: Vec<String> = lines
        .iter()
        .filter_map(|l| match l {
            Line::Uri(u) => Some(u.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        variants,
        ["360p/index.m3u8"],
        "no passthrough of 4:4:4 10-bit"
    );
    let pl = parse_playlist(&get(&node.url("/live/hi/360p/index.m3u8")).await.text());
    let (_, _, uri) = segments(&pl).last().cloned().unwrap();
    let init = get(&node.url("/live/hi/360p/init.mp4")).await;
    let seg = get(&node.url(&format!("/live/hi/360p/{uri}"))).await;
    let f = node.dir.join("hi-360p.mp4");
    std::fs::write(&f, [init.body.to_vec(), seg.body.to_vec()].concat()).unwrap();
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=codec_name,profile,pix_fmt",
            "-of",
            "csv=p=0",
        ])
        .arg(&f)
        .output()
        .unwrap();
    let probe = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(probe.starts_with("h264,"), "{probe}");
    assert!(probe.ends_with(",yuv420p"), "{probe}");

    wait_metric(
        &node,
        "estuary_stream_errors_total",
        "reason=\"unplayable_format\"",
        1.0,
        Duration::from_secs(20),
    )
    .await;
    let log = node.log();
    assert!(
        log.contains("high-4:4:4 (4:4:4 10-bit) cannot be passed through"),
        "{log}"
    );
}
