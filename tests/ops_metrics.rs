//! Every metric name `config/grafana-estuary.json` and `config/prometheus-alerts.yml` use
//! exists on a real node's `/metrics`. A labelled family appears only once a child exists,
//! so the test makes each thing happen once: a publisher (noise at a high bitrate, long
//! GOP) into a tiny cache with a rung too slow to keep up, refused SRT and RTMP
//! publishers, a non-TS publisher, an idle HTTP connection, blocking requests, and an
//! interaction client sending good, bad and oversized frames.

mod common;

use std::{
    collections::BTreeSet,
    path::Path,
    time::{Duration, Instant},
};

use common::{ffmpeg_quiet, ffmpeg_source, get, next_part_target, parse_playlist, Node, Publisher};
use futures_util::{SinkExt, StreamExt};

/// Names starting `estuary_` in a file (PromQL inside YAML or JSON strings).
fn names_in(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("estuary_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        // "estuary_*" in prose is not a name.
        if end > "estuary_".len() {
            out.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    out
}

/// Families in an exposition text: every sample's name.
fn exposed(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

const CONFIG: &str = r#"cache.max_bytes = 8388608
http.idle_timeout = "1s"
hls.max_segment = "2s"
[ladder]
passthrough = true
[[ladder.rungs]]
name = "slow"
codec = "h265"
width = 640
height = 360
max_fps = 30
bitrate_kbps = 4000
preset = "veryslow"
[streams.demo]
[streams.junk]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_alerts_use_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dash = names_in(&root.join("config/grafana-estuary.json"));
    let rules = names_in(&root.join("config/prometheus-alerts.yml"));
    assert!(dash.len() >= 25, "dashboard names: {dash:?}");
    assert!(rules.len() >= 8, "rule names: {rules:?}");
    let wanted: BTreeSet<String> = dash.union(&rules).cloned().collect();

    let node = Node::start("opsmetrics", CONFIG);
    let srt = |stream: &str| format!("srt://{}?streamid={stream}&latency=120000", node.srt);
    // Incompressible noise at 12 Mbit/s fills the 8 MiB cache in seconds (evictions for
    // size); a 3 s GOP is longer than hls.max_segment (segments cut); veryslow x265 on
    // noise cannot keep up (dropped frames, realtime factor).
    let mut main = ffmpeg_source("640x360", 20, true);
    main.args(["-vf", "noise=alls=60:allf=t"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
        ])
        .args(["-g", "90", "-pix_fmt", "yuv420p"])
        .args(["-b:v", "12M", "-maxrate", "12M", "-bufsize", "3M"])
        .args(["-c:a", "aac", "-f", "mpegts", &srt("demo")]);
    let _main = Publisher(main.spawn().expect("ffmpeg"));
    // Refused at the SRT handshake (unknown stream) and by RTMP.
    let mut refused = ffmpeg_source("320x240", 3, true);
    refused.args([
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-f",
        "mpegts",
        &srt("nope"),
    ]);
    let _refused = Publisher(refused.spawn().expect("ffmpeg"));
    let rtmp = node.rtmp.expect("rtmp listens");
    let mut rtmp_refused = ffmpeg_source("320x240", 3, true);
    rtmp_refused
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            "-f",
            "flv",
        ])
        .arg(format!("rtmp://{rtmp}/live/nope"));
    let _rtmp_refused = Publisher(rtmp_refused.spawn().expect("ffmpeg"));
    // Not MPEG-TS: a stream error.
    let mut junk = ffmpeg_quiet(true);
    junk.args([
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=30",
        "-t",
        "8",
    ])
    .args([
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-f",
        "flv",
        &srt("junk"),
    ]);
    let _junk = Publisher(junk.spawn().expect("ffmpeg"));
    // An idle connection, closed after http.idle_timeout.
    let _idle = std::net::TcpStream::connect(node.http).unwrap();

    // Interaction: refused (no upgrade), a good frame, a bad frame, an oversized frame.
    get(&node.url("/live/demo/events")).await;
    let url = format!("ws://{}/live/demo/events", node.http);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("ws");
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::text(r#"{"v":1,"type":"react","emoji":"🔥"}"#))
        .await
        .unwrap();
    ws.send(Message::text("not json")).await.unwrap();
    ws.send(Message::text("x".repeat(10_000))).await.unwrap();
    // Drain what the server answers until it closes (bounded).
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;

    let deadline = Instant::now() + Duration::from_secs(45);
    let mut missing;
    loop {
        // Playlist, a blocking reload and a part: blocking-wait histogram, cache lookups.
        let r = get(&node.url("/live/demo/source/index.m3u8")).await;
        if r.status == 200 {
            let (msn, part) = next_part_target(&parse_playlist(&r.text()));
            get(&node.url(&format!(
                "/live/demo/source/index.m3u8?_HLS_msn={msn}&_HLS_part={part}"
            )))
            .await;
            get(&node.url("/live/demo/source/init.mp4")).await;
        }
        let text = get(&node.url("/metrics")).await.text();
        let have = exposed(&text);
        missing = wanted
            .iter()
            .filter(|n| !have.contains(*n))
            .cloned()
            .collect::<Vec<_>>();
        if missing.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        missing.is_empty(),
        "referenced but not exposed: {missing:?}; log in {}",
        node.dir.display()
    );
}

/// The binary's Rust heap is jemalloc, and `/metrics` reads its statistics: live bytes
/// above zero (an idle node holds its tables, tasks and buffers), resident at least that,
/// and both within the process's RSS. With the system allocator the figures would be
/// jemalloc's idle zeros.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heap_figures_come_from_jemalloc() {
    let node = Node::start("opsheap", "[streams.demo]\n");
    let allocated = common::metric(&node, "estuary_heap_allocated_bytes", "").await;
    let resident = common::metric(&node, "estuary_heap_resident_bytes", "").await;
    let rss = (node.rss_kib() * 1024) as f64;
    assert!(allocated > 100_000.0, "allocated {allocated}");
    assert!(
        resident >= allocated,
        "resident {resident} < allocated {allocated}"
    );
    assert!(resident < rss, "resident {resident} >= RSS {rss}");
}
