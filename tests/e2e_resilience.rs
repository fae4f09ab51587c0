//! Contribution resilience: awkward inputs from `common::corpus` (codec, PID, program,
//! sample-rate and channel changes, timestamp jumps, M2TS packets, extra tracks,
//! corruption) are pushed over SRT through srt-live-transmit at the same time, beside a
//! healthy ffmpeg publisher. The node must stay up, the healthy stream must keep going,
//! every faulty stream must keep playing after its change, and no playlist may ever change
//! its TARGETDURATION or PART-TARGET.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use common::{corpus::Case, *};

async fn parts(node: &Node, stream: &str, rendition: &str) -> f64 {
    metric(
        node,
        "estuary_parts_published_total",
        &format!("rendition=\"{rendition}\",stream=\"{stream}\""),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mid_stream_changes_keep_the_stream_and_its_playlists_valid() {
    let dir = tempdir("corpus");
    // Make the inputs two at a time (2 cores).
    let files: BTreeMap<String, std::path::PathBuf> = std::thread::scope(|s| {
        let mut out = BTreeMap::new();
        for pair in Case::ALL.chunks(2) {
            let hs: Vec<_> = pair
                .iter()
                .map(|c| {
                    let dir = &dir;
                    s.spawn(move || (c.name(), corpus::make(dir, *c)))
                })
                .collect();
            for h in hs {
                let (k, v) = h.join().unwrap();
                out.insert(k, v);
            }
        }
        out
    });
    let mut cfg = String::from("[streams.healthy]\n");
    for c in Case::ALL {
        cfg.push_str(&format!("[streams.{}]\n", c.name()));
    }
    let node = Node::start("resilience", &cfg);
    let _healthy = ffmpeg_publish(&srt_url(&node, "healthy", None), 40, 30);
    wait_ok(
        &node.url("/live/healthy/index.m3u8"),
        Duration::from_secs(20),
    )
    .await;
    let secs = 2 * corpus::HALF;
    let _pushers: Vec<_> = Case::ALL
        .iter()
        .map(|c| corpus::push(&files[&c.name()], node.srt, &c.name(), secs))
        .collect();

    // While they play, every playlist keeps its TARGETDURATION and PART-TARGET; every
    // segment listed is kept, to add up the media each stream published.
    let mut seen: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    let mut media: BTreeMap<String, BTreeMap<u64, f64>> = BTreeMap::new();
    let healthy_before = parts(&node, "healthy", "source").await;
    let end = Instant::now() + Duration::from_secs(u64::from(secs) + 4);
    while Instant::now() < end {
        for name in Case::ALL
            .iter()
            .map(|c| c.name())
            .chain(["healthy".to_string()])
        {
            for r in ["source", "audio"] {
                let resp = get(&node.url(&format!("/live/{name}/{r}/index.m3u8"))).await;
                if resp.status != 200 {
                    continue;
                }
                let lines = parse_playlist(&resp.text());
                let td = tag(&lines, "EXT-X-TARGETDURATION").to_string();
                let pt = attrs(tag(&lines, "EXT-X-PART-INF"))["PART-TARGET"].clone();
                seen.entry(format!("{name}/{r}"))
                    .or_default()
                    .insert((td, pt));
                if r == "source" {
                    let kept = media.entry(name.clone()).or_default();
                    kept.extend(segments(&lines).into_iter().map(|(msn, d, _)| (msn, d)));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert_eq!(get(&node.url("/healthz")).await.status, 200);
    for (k, v) in &seen {
        assert_eq!(v.len(), 1, "{k}: TARGETDURATION/PART-TARGET changed: {v:?}");
    }
    assert!(
        parts(&node, "healthy", "source").await > healthy_before + 80.0,
        "the healthy stream stalled beside the faulty ones"
    );

    // The media a stream without a mid-stream change published in the same time: what a
    // changing one should publish too, less what its rebuild cost.
    let seconds = |name: &str| media.get(name).map_or(0.0, |m| m.values().sum::<f64>());
    let reference = Case::ALL
        .iter()
        .filter(|c| matches!(c, Case::M2ts | Case::EightAudio | Case::TwoVideo))
        .map(|c| seconds(&c.name()))
        .fold(f64::INFINITY, f64::min);
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for c in Case::ALL {
        let name = c.name();
        if c.changes() {
            // The rebuild starts from where the change began in the input, so it costs
            // at most the part the old pipeline had open (0.2 s). An audio-only change
            // restarts the video at its next keyframe: at most a GOP (1 s) more.
            let allowed = match c {
                Case::SampleRateChange | Case::ChannelChange => 1.5,
                _ => 0.5,
            };
            let lost = reference - seconds(&name);
            report.push(format!("{name}: lost {lost:.2} s of video in the rebuild"));
            if lost > allowed {
                failures.push(format!(
                    "{name}: the rebuild lost {lost:.2} s of video (allowed {allowed} s; \
                     {reference:.1} s published without a change)"
                ));
            }
        }
        let v = parts(&node, &name, "source").await;
        let a = parts(&node, &name, "audio").await;
        let pl = get(&node.url(&format!("/live/{name}/source/index.m3u8"))).await;
        if pl.status != 200 {
            failures.push(format!("{name}: source playlist answers {}", pl.status));
            continue;
        }
        let lines = parse_playlist(&pl.text());
        let disc = tags(&lines, "EXT-X-DISCONTINUITY").len();
        report.push(format!(
            "{name}: video parts {v}, audio parts {a}, discontinuities {disc}"
        ));
        // 20 s of media is 100 parts of 200 ms. A change may cost a rebuild (up to about
        // 4 s); a stream whose video stopped at the change would have about 50.
        if v < 78.0 {
            failures.push(format!("{name}: only {v} video parts"));
        }
        if a < 78.0 {
            failures.push(format!("{name}: only {a} audio parts"));
        }
        if c.changes() && disc == 0 && v >= 78.0 {
            // Fine only if the change needed no rebuild at all (the parts are all there).
            if v < 95.0 {
                failures.push(format!("{name}: parts lost but no discontinuity"));
            }
        }
        // The newest segment decodes, with its own init segment.
        let (Some((_, _, uri)), Some(map)) = (
            segments(&lines).last().cloned(),
            tags(&lines, "EXT-X-MAP")
                .last()
                .map(|m| attrs(m)["URI"].clone()),
        ) else {
            failures.push(format!("{name}: no segment listed ({})", pl.status));
            continue;
        };
        let init = get(&node.url(&format!("/live/{name}/source/{map}"))).await;
        let seg = get(&node.url(&format!("/live/{name}/source/{uri}"))).await;
        let f = node.dir.join(format!("{name}-last.mp4"));
        std::fs::write(&f, [init.body.to_vec(), seg.body.to_vec()].concat()).unwrap();
        let probe = ffprobe(&f);
        let want = if c == Case::CodecChange {
            "hevc,"
        } else {
            "h264,"
        };
        if !probe.starts_with(want) {
            failures.push(format!("{name}: last segment probes as {probe:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{failures:#?}\n{report:#?}\nlog: {}",
        node.dir.join("node.log").display()
    );
    eprintln!("{report:#?}");
}

/// Idle means no media: a publisher whose encoder stopped but whose connection keeps
/// sending (null packets here, keep-alives in general) is dropped after
/// `srt.idle_timeout`, not held for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_that_sends_no_media_is_dropped() {
    let dir = tempdir("idle");
    let file = corpus::media_then_null(&dir, 4, 20);
    let node = Node::start("idle", "srt.idle_timeout = \"3s\"\n[streams.quiet]\n");
    let _push = corpus::push(&file, node.srt, "quiet", 24);
    wait_ok(&node.url("/live/quiet/index.m3u8"), Duration::from_secs(20)).await;
    assert_eq!(metric(&node, "estuary_publishers_active", "").await, 1.0);
    // Media ends about 4 s in; null packets keep flowing until 24 s. The node lets go
    // about 3 s after the last part, long before the packets stop.
    wait_metric(
        &node,
        "estuary_stream_errors_total",
        "reason=\"idle\"",
        1.0,
        Duration::from_secs(12),
    )
    .await;
    assert!(node.log().contains("publisher sends no media"));
}

/// A 10 s GOP (an encoder left at a long keyframe interval) is cut at `hls.max_segment`
/// (2 s by default): TARGETDURATION stays 2, no segment runs longer, the cut segments say
/// they start without an independent frame, and a metric counts the cuts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_gop_is_cut_at_the_segment_bound() {
    let node = Node::start("longgop", "[streams.gop]\n");
    let _p = ffmpeg_publish(&srt_url(&node, "gop", None), 25, 300);
    let url = node.url("/live/gop/source/index.m3u8");
    wait_ok(&url, Duration::from_secs(20)).await;
    let end = Instant::now() + Duration::from_secs(16);
    let mut targets = BTreeSet::new();
    let mut lines = Vec::new();
    while Instant::now() < end {
        lines = parse_playlist(&get(&url).await.text());
        targets.insert(tag(&lines, "EXT-X-TARGETDURATION").to_string());
        for (_, d, u) in segments(&lines) {
            assert!(d <= 2.1, "segment {u} of {d} s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(targets, BTreeSet::from(["2".to_string()]));
    let starts: Vec<bool> = segment_parts(&lines)
        .iter()
        .filter_map(|(_, p)| p.first())
        .map(|a| a.get("INDEPENDENT").is_some())
        .collect();
    assert!(starts.contains(&false), "cut segments: {starts:?}");
    assert!(
        metric(
            &node,
            "estuary_segments_cut_total",
            "rendition=\"source\",stream=\"gop\""
        )
        .await
            >= 3.0
    );
    assert!(node.log().contains("no keyframe within hls.max_segment"));
}

/// A publisher whose video never brings a keyframe or parameter sets (joined mid-GOP, a
/// 100 s keyframe interval) is torn down with that cause, not "no video track".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_without_a_keyframe_is_refused_with_its_cause() {
    let dir = tempdir("nokey");
    let file = corpus::no_keyframe(&dir, 12);
    let node = Node::start("nokey", "srt.no_video_timeout = \"3s\"\n[streams.nokey]\n");
    let _push = corpus::push(&file, node.srt, "nokey", 12);
    wait_metric(
        &node,
        "estuary_stream_errors_total",
        "reason=\"undecodable_video\"",
        1.0,
        Duration::from_secs(15),
    )
    .await;
    assert!(node.log().contains("carries nothing decodable"));
    assert!(!node.log().contains("no video track"));
}

/// `video_pid` and `audio_pid` pick the tracks to use when a multiplex carries several.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_pids_pick_the_tracks() {
    let dir = tempdir("pids");
    let file = dir.join("two-programs.ts");
    // PIDs from 0x100 in map order: video 320x240 (0x100), video 640x360 (0x101),
    // audio 48 kHz (0x102), audio 44.1 kHz (0x103).
    multiplex(
        &file,
        &[
            "testsrc2=size=320x240:rate=30",
            "testsrc2=size=640x360:rate=30",
            "sine=sample_rate=48000",
            "sine=sample_rate=44100",
        ],
        &["-map", "0:v", "-map", "1:v", "-map", "2:a", "-map", "3:a"],
    );
    let node = Node::start(
        "pids",
        "[streams.pick]\nvideo_pid = 0x101\naudio_pid = 0x103\n",
    );
    let _push = corpus::push(&file, node.srt, "pick", 15);
    let mv = wait_ok(&node.url("/live/pick/index.m3u8"), Duration::from_secs(20)).await;
    let inf = attrs(tag(&parse_playlist(&mv.text()), "EXT-X-STREAM-INF"));
    assert_eq!(inf["RESOLUTION"], "640x360");
    assert_eq!(audio_rate(&node, "pick", &dir).await, "44100");
    assert!(node.log().contains("not the configured PID"));
}

/// The sample rate of the latest audio segment `stream` lists.
async fn audio_rate(node: &Node, stream: &str, dir: &std::path::Path) -> String {
    let alines = parse_playlist(
        &get(&node.url(&format!("/live/{stream}/audio/index.m3u8")))
            .await
            .text(),
    );
    let (_, _, auri) = segments(&alines).last().cloned().unwrap();
    let init = get(&node.url(&format!("/live/{stream}/audio/init.mp4"))).await;
    let seg = get(&node.url(&format!("/live/{stream}/audio/{auri}"))).await;
    let f = dir.join(format!("{stream}-audio.mp4"));
    std::fs::write(&f, [init.body.to_vec(), seg.body.to_vec()].concat()).unwrap();
    let rate = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=sample_rate"])
        .args(["-of", "csv=p=0"])
        .arg(&f)
        .output()
        .unwrap();
    String::from_utf8_lossy(&rate.stdout).trim().to_owned()
}

/// `audio_language` picks the audio track by the PMT's ISO 639 descriptor, in any of
/// its code forms; when no track has the language, the first audio track plays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_language_picks_the_track_or_falls_back_to_the_first() {
    let dir = tempdir("lang");
    let file = dir.join("two-languages.ts");
    // French at 48 kHz first, English at 44.1 kHz second.
    multiplex(
        &file,
        &[
            "testsrc2=size=320x240:rate=30",
            "sine=sample_rate=48000",
            "sine=sample_rate=44100:frequency=880",
        ],
        &[
            "-map",
            "0:v",
            "-map",
            "1:a",
            "-map",
            "2:a",
            "-metadata:s:a:0",
            "language=fra",
            "-metadata:s:a:1",
            "language=eng",
        ],
    );
    let node = Node::start(
        "lang",
        "[streams.english]\naudio_language = \"en\"\n\
         [streams.german]\naudio_language = \"deu\"\n",
    );
    let _en = corpus::push(&file, node.srt, "english", 15);
    let _de = corpus::push(&file, node.srt, "german", 15);
    for s in ["english", "german"] {
        // The multivariant playlist appears with the first complete segment.
        wait_ok(
            &node.url(&format!("/live/{s}/index.m3u8")),
            Duration::from_secs(20),
        )
        .await;
    }
    assert_eq!(audio_rate(&node, "english", &dir).await, "44100");
    assert_eq!(audio_rate(&node, "german", &dir).await, "48000");
    let log = node.log();
    assert!(log.contains("not the configured language"), "{log}");
    assert!(
        log.contains("no audio track in the configured language: using the first audio track"),
        "{log}"
    );
}

/// Writes a 15 s MPEG-TS to `file` from lavfi `sources`, with `maps` (and per-track
/// metadata): H.264 ultrafast with a 1 s GOP, AAC.
fn multiplex(file: &std::path::Path, sources: &[&str], maps: &[&str]) {
    let mut cmd = std::process::Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-y"]);
    for s in sources {
        cmd.args(["-f", "lavfi", "-i", s]);
    }
    cmd.args(maps)
        .args([
            "-t",
            "15",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "30",
        ])
        .args(["-c:a", "aac", "-f", "mpegts"])
        .arg(file);
    stdout_of(&mut cmd);
}
