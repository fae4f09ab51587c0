//! The transcoding ladder end to end: ffmpeg publishes 720p30 over SRT; the node encodes
//! H.264 and HEVC rungs (240p scaled from 360p's frames); ffprobe checks sizes, colour
//! matrix and keyframes; playlists are checked for codecs, resolutions and aligned
//! segment boundaries. Also a mid-stream source change.

mod common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::*;

const LADDER: &str = r#"
[ladder]
passthrough = true
[[ladder.rungs]]
name = "480p"
codec = "h264"
width = 854
height = 480
max_fps = 30
bitrate_kbps = 1200
preset = "ultrafast"
[[ladder.rungs]]
name = "360p"
codec = "h264"
width = 640
height = 360
bitrate_kbps = 700
preset = "ultrafast"
[[ladder.rungs]]
name = "240p"
codec = "h264"
width = 426
height = 240
bitrate_kbps = 400
preset = "ultrafast"
[[ladder.rungs]]
name = "hevc360"
codec = "h265"
width = 640
height = 360
bitrate_kbps = 500
preset = "ultrafast"
[[ladder.rungs]]
name = "1080p"
codec = "h264"
width = 1920
height = 1080
bitrate_kbps = 5000
[streams.demo]
"#;

fn first_frames(path: &std::path::Path) -> Vec<(bool, f64)> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_frames"])
        .args([
            "-show_entries",
            "frame=key_frame,pts_time",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut it = l.split(',');
            let k = it.next()? == "1";
            let t = it.next()?.parse().ok()?;
            Some((k, t))
        })
        .collect()
}

fn color_space(path: &std::path::Path) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v"])
        .args(["-show_entries", "stream=color_space", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn pdt_of(lines: &[Line], msn: u64) -> Option<f64> {
    let mut n: u64 = tag(lines, "EXT-X-MEDIA-SEQUENCE").parse().unwrap();
    let mut pdt = None;
    for l in lines {
        match l {
            Line::Tag(t, v) if t == "EXT-X-PROGRAM-DATE-TIME" => pdt = Some(v.clone()),
            Line::Uri(_) => {
                if n == msn {
                    let v = pdt?;
                    let t = humantime::parse_rfc3339(&v).ok()?;
                    return Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs_f64());
                }
                n += 1;
            }
            _ => {}
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ladder_rungs_decode_and_line_up() {
    let node = Node::start("ladder", LADDER);
    let _pub = ffmpeg_publish(&srt_url(&node, "demo", None), 40, 30);
    let mv = wait_ok(&node.url("/live/demo/index.m3u8"), Duration::from_secs(30)).await;
    let lines = parse_playlist(&mv.text());
    let mut seen = std::collections::BTreeMap::new();
    let mut uri_next = false;
    let mut last = None;
    for l in &lines {
        match l {
            Line::Tag(t, v) if t == "EXT-X-STREAM-INF" => {
                last = Some(attrs(v));
                uri_next = true;
            }
            Line::Uri(u) if uri_next => {
                seen.insert(
                    u.trim_end_matches("/index.m3u8").to_owned(),
                    last.take().unwrap(),
                );
                uri_next = false;
            }
            _ => {}
        }
    }
    // The 1080p rung is taller than the 720p source: never upscaled, so left out.
    let names: Vec<_> = seen.keys().cloned().collect();
    assert_eq!(names, ["240p", "360p", "480p", "hevc360", "source"]);
    let expect = [
        ("480p", "854x480", "avc1."),
        ("360p", "640x360", "avc1."),
        // Scaled from the 360p rung's frames, not from the source's.
        ("240p", "426x240", "avc1."),
        ("hevc360", "640x360", "hvc1."),
    ];
    for (name, res, codec) in expect {
        let a = &seen[name];
        assert_eq!(a["RESOLUTION"], res, "{name}");
        assert!(
            a["CODECS"].to_ascii_lowercase().starts_with(codec),
            "{name}: {}",
            a["CODECS"]
        );
        assert!(a["CODECS"].ends_with(",mp4a.40.2"));
        assert_eq!(a["FRAME-RATE"], "30.000");
        let bw: u64 = a["BANDWIDTH"].parse().unwrap();
        assert!(bw > 100_000, "{name} BANDWIDTH {bw}");
    }
    let bws: Vec<u64> = lines
        .iter()
        .filter_map(|l| match l {
            Line::Tag(t, v) if t == "EXT-X-STREAM-INF" => attrs(v)["BANDWIDTH"].parse().ok(),
            _ => None,
        })
        .collect();
    assert!(
        bws.windows(2).all(|w| w[0] >= w[1]),
        "variants are listed highest first"
    );

    // Let a few segments accumulate in every rung.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let rungs = ["480p", "360p", "240p", "hevc360"];
    let mut playlists = Vec::new();
    for r in rungs {
        let pl = parse_playlist(
            &get(&node.url(&format!("/live/demo/{r}/index.m3u8")))
                .await
                .text(),
        );
        let reports = tags(&pl, "EXT-X-RENDITION-REPORT");
        assert_eq!(reports.len(), 5, "{r} reports its 5 siblings");
        playlists.push(pl);
    }
    // An MSN that every rung lists, past the first (start-up) segment.
    let common_msn = playlists
        .iter()
        .map(|pl| segments(pl).last().unwrap().0)
        .min()
        .unwrap()
        - 1;
    let pdts: Vec<f64> = playlists
        .iter()
        .map(|pl| pdt_of(pl, common_msn).unwrap())
        .collect();
    for p in &pdts {
        assert!(
            (p - pdts[0]).abs() <= 1.0 / 30.0 + 1e-3,
            "MSN {common_msn} starts apart: {pdts:?}"
        );
    }
    let durs: Vec<f64> = playlists
        .iter()
        .map(|pl| {
            segments(pl)
                .into_iter()
                .find(|s| s.0 == common_msn)
                .unwrap()
                .1
        })
        .collect();
    for d in &durs {
        assert!(
            (d - durs[0]).abs() <= 1.0 / 30.0 + 1e-3,
            "MSN {common_msn} durations {durs:?}"
        );
    }

    for (r, (w, h)) in rungs
        .iter()
        .zip([(854, 480), (640, 360), (426, 240), (640, 360)])
    {
        let init = get(&node.url(&format!("/live/demo/{r}/init.mp4"))).await;
        let seg = get(&node.url(&format!("/live/demo/{r}/{common_msn}.m4s"))).await;
        assert_eq!(seg.status, 200);
        let f = node.dir.join(format!("{r}.mp4"));
        std::fs::write(&f, [init.body.to_vec(), seg.body.to_vec()].concat()).unwrap();
        let probe = ffprobe(&f);
        let codec = if *r == "hevc360" { "hevc" } else { "h264" };
        assert!(
            probe.starts_with(&format!("{codec},{w},{h},")),
            "{r}: {probe}"
        );
        // Scaled without a colour-matrix conversion: the untagged 720p source is BT.709 to
        // GStreamer, and an SD rung keeps that (it was once converted to BT.601).
        assert_eq!(color_space(&f), "bt709", "{r}");
        // The segment, and so its first part, starts with a keyframe.
        let frames = first_frames(&f);
        assert!(frames.len() >= 25, "{r}: {} frames", frames.len());
        assert!(frames[0].0, "{r}: segment does not start with a keyframe");
        // The first part of the newest segment with listed parts starts with a keyframe
        // and says so.
        let pl = parse_playlist(
            &get(&node.url(&format!("/live/demo/{r}/index.m3u8")))
                .await
                .text(),
        );
        let (_, parts) = segment_parts(&pl)
            .into_iter()
            .rev()
            .find(|(_, p)| !p.is_empty())
            .expect("listed parts");
        assert_eq!(parts[0].get("INDEPENDENT").map(String::as_str), Some("YES"));
        let p0 = get(&node.url(&format!("/live/demo/{r}/{}", parts[0]["URI"]))).await;
        assert_eq!(p0.status, 200);
        let f0 = node.dir.join(format!("{r}-part.mp4"));
        std::fs::write(&f0, [init.body.to_vec(), p0.body.to_vec()].concat()).unwrap();
        assert!(
            first_frames(&f0).first().is_some_and(|f| f.0),
            "{r}: first part not independent"
        );
    }
    assert!(
        metric(
            &node,
            "estuary_rendition_realtime_factor",
            "rendition=\"480p\""
        )
        .await
            > 0.5
    );
    assert!(
        metric(
            &node,
            "estuary_part_publish_latency_seconds_count",
            "rendition=\"hevc360\""
        )
        .await
            > 10.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_change_mid_stream_gives_discontinuity() {
    let node = Node::start("change", "[streams.demo]\n");
    // Two clips of different sizes, sent as one SRT connection.
    let mk = |name: &str, size: &str, secs: u32| {
        let f = node.dir.join(name);
        let ok = ffmpeg_source(size, secs, false)
            .args(x264_args(30))
            .args(["-c:a", "aac", "-f", "mpegts"])
            .arg(&f)
            .status()
            .unwrap();
        assert!(ok.success());
        f
    };
    let a = mk("a.ts", "640x360", 6);
    let b = mk("b.ts", "1280x720", 8);
    let list = node.dir.join("list.txt");
    std::fs::write(
        &list,
        format!("file '{}'\nfile '{}'\n", a.display(), b.display()),
    )
    .unwrap();
    let child = ffmpeg_quiet(true)
        .args(["-f", "concat", "-safe", "0", "-i"])
        .arg(&list)
        .args(["-c", "copy", "-f", "mpegts"])
        .arg(srt_url(&node, "demo", None))
        .spawn()
        .unwrap();
    let _pub = Publisher(child);
    let url = node.url("/live/demo/source/index.m3u8");
    let deadline = Instant::now() + Duration::from_secs(30);
    let lines = loop {
        let r = get(&url).await;
        if r.status == 200 {
            let lines = parse_playlist(&r.text());
            // Wait for a complete segment listed after the second EXT-X-MAP (the map
            // appears first with the open segment).
            let mut maps_seen = 0;
            let mut after_second = 0;
            for l in &lines {
                match l {
                    Line::Tag(t, _) if t == "EXT-X-MAP" => maps_seen += 1,
                    Line::Uri(_) if maps_seen == 2 => after_second += 1,
                    _ => {}
                }
            }
            if maps_seen == 2 && after_second >= 1 {
                break lines;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no second init after the change\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(tags(&lines, "EXT-X-DISCONTINUITY").len(), 1);
    let maps: Vec<_> = tags(&lines, "EXT-X-MAP")
        .into_iter()
        .map(|m| attrs(m)["URI"].clone())
        .collect();
    assert_eq!(maps[0], "init.mp4");
    assert_ne!(maps[1], "init.mp4");
    // MSNs keep counting; the segments before decode at 360p, after at 720p.
    let mut current_map = String::new();
    let mut sizes = Vec::new();
    let mut msn: u64 = tag(&lines, "EXT-X-MEDIA-SEQUENCE").parse().unwrap();
    for l in &lines {
        match l {
            Line::Tag(t, v) if t == "EXT-X-MAP" => current_map = attrs(v)["URI"].clone(),
            Line::Uri(u) => {
                let init = get(&node.url(&format!("/live/demo/source/{current_map}"))).await;
                let seg = get(&node.url(&format!("/live/demo/source/{u}"))).await;
                assert_eq!(seg.status, 200);
                assert_eq!(*u, format!("{msn}.m4s"));
                let f = node.dir.join(format!("s{msn}.mp4"));
                std::fs::write(&f, [init.body.to_vec(), seg.body.to_vec()].concat()).unwrap();
                sizes.push(
                    ffprobe(&f)
                        .split(',')
                        .skip(1)
                        .take(2)
                        .collect::<Vec<_>>()
                        .join("x"),
                );
                msn += 1;
            }
            _ => {}
        }
    }
    assert_eq!(sizes.first().unwrap(), "640x360", "{sizes:?}");
    assert_eq!(sizes.last().unwrap(), "1280x720", "{sizes:?}");
    assert!(
        metric(
            &node,
            "estuary_stream_errors_total",
            "reason=\"source_changed\""
        )
        .await
            >= 1.0
    );
    assert_eq!(metric(&node, "estuary_publishers_active", "").await, 1.0);
}
