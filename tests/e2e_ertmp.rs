//! Enhanced RTMP end to end: an OBS-like publisher (tests/ertmp_support) sends HEVC with
//! B-frames in extended video tags plus AAC, over RTMP and RTMPS; the node passes the
//! HEVC through, transcodes an H.264 rung, carries the audio and follows a mid-stream
//! codec change with a discontinuity. Unknown FourCCs are refused by name.

mod common;
mod rtmp_support;

use std::time::{Duration, Instant};

use common::*;
use rtmp_support::*;

/// Passthrough plus one small H.264 rung (cheap on a shared machine).
const CONFIG: &str = r#"
rtmp.handshake_timeout = "2s"
rtmp.idle_timeout = "5s"
[ladder]
passthrough = true
[[ladder.rungs]]
name = "240p"
codec = "h264"
width = 426
height = 240
bitrate_kbps = 400
preset = "ultrafast"
[streams.demo]
"#;

/// Publishes 640x360 `fourcc` video + AAC over plain RTMP to `demo`.
async fn publish(node: &Node, fourcc: &[u8; 4], plan: Plan) -> rtmp_support::Publisher {
    let encoder = Encoder::start(fourcc, 640, 360).await;
    let client = rtmp_client(node.rtmp.expect("RTMP listens"), "demo").await;
    publish_enhanced(client, encoder, plan)
}

/// Checks what an Enhanced RTMP HEVC publisher gives: HEVC passed through, an H.264
/// rung that decodes, AAC audio, parts published.
async fn assert_hevc_stream(node: &Node) {
    wait_segments(node, "demo", "source", 2).await;
    let source = probe_latest(node, "demo", "source").await;
    assert!(source.starts_with("hevc,640,360,"), "{source}");
    // The B-frames came through in decode order with their composition offsets: ffmpeg
    // decodes them as B pictures, in presentation order.
    let frames = stdout_of(
        std::process::Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
            .args(["frame=pict_type,pts_time", "-of", "csv=p=0"])
            .arg(node.dir.join("demo-source.mp4")),
    );
    let pts: Vec<f64> = frames
        .lines()
        .filter_map(|l| l.split(',').next()?.parse().ok())
        .collect();
    assert!(frames.contains(",B"), "{frames}");
    assert!(pts.windows(2).all(|w| w[0] < w[1]), "{frames}");
    let rung = probe_latest(node, "demo", "240p").await;
    assert!(rung.starts_with("h264,426,240,"), "{rung}");
    // ffprobe decoded the rung's frames (`-count_frames`).
    let frames: u32 = rung.split(',').nth(3).unwrap().parse().unwrap();
    assert!(frames > 0, "{rung}");
    let audio = probe_latest(node, "demo", "audio").await;
    assert!(audio.starts_with("aac,"), "{audio}");
    let master = get(&node.url("/live/demo/index.m3u8")).await.text();
    assert!(master.contains("hvc1."), "{master}");
    assert!(master.contains("avc1."), "{master}");
    assert!(master.contains("mp4a.40.2"), "{master}");
    let parts = metric(node, "estuary_parts_published_total", "stream=\"demo\"").await;
    assert!(parts > 0.0);
    assert!(node.log().contains("Enhanced RTMP video"));
    assert_eq!(
        metric(node, "estuary_rtmp_rejected_total", "").await,
        0.0,
        "{}",
        node.log()
    );
}

/// OBS 29.1+ with HEVC over RTMP: passthrough HEVC, an H.264 rung and AAC audio, with
/// LL-HLS parts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obs_style_hevc_publishes_over_rtmp() {
    let node = Node::start("ertmp-hevc", CONFIG);
    let _p = publish(&node, b"hvc1", Plan::default()).await;
    assert_hevc_stream(&node).await;
    let lines = wait_segments(&node, "demo", "source", 2).await;
    assert!(!tags(&lines, "EXT-X-PART").is_empty());
    let detail: serde_json::Value =
        serde_json::from_slice(&get(&node.url("/api/streams/demo")).await.body).unwrap();
    assert_eq!(detail["publisher"]["protocol"], "rtmp", "{detail}");
}

/// Enhanced RTMP H.264 (`avc1`, with B-frames) is taken the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enhanced_avc_publishes_over_rtmp() {
    let node = Node::start("ertmp-avc", CONFIG);
    let _p = publish(&node, b"avc1", Plan::default()).await;
    wait_segments(&node, "demo", "source", 2).await;
    let source = probe_latest(&node, "demo", "source").await;
    assert!(source.starts_with("h264,640,360,"), "{source}");
    let rung = probe_latest(&node, "demo", "240p").await;
    assert!(rung.starts_with("h264,426,240,"), "{rung}");
    let audio = probe_latest(&node, "demo", "audio").await;
    assert!(audio.starts_with("aac,"), "{audio}");
}

/// The same over RTMPS, the client verifying the node's certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obs_style_hevc_publishes_over_rtmps() {
    let (cert, key) = self_signed_cert("ertmps-cert");
    let extra = format!(
        "rtmp.tls_cert = \"{}\"\nrtmp.tls_key = \"{}\"\n{CONFIG}",
        cert.display(),
        key.display(),
    );
    let node = Node::start("ertmps-hevc", &extra);
    let encoder = Encoder::start(b"hvc1", 640, 360).await;
    let client = rtmps_client(node.rtmps.expect("RTMPS listens"), &cert, "demo").await;
    let _p = publish_enhanced(client, encoder, Plan::default());
    assert_hevc_stream(&node).await;
    let detail: serde_json::Value =
        serde_json::from_slice(&get(&node.url("/api/streams/demo")).await.body).unwrap();
    assert_eq!(detail["publisher"]["protocol"], "rtmps", "{detail}");
}

/// A new hvcC mid-stream (the encoder restarted at another size) is a source change: the
/// pipeline is rebuilt, the playlist gets a discontinuity, the stream goes on at the new
/// size under the same publisher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mid_stream_sequence_start_gives_a_discontinuity() {
    let node = Node::start("ertmp-resize", CONFIG);
    let plan = Plan {
        resize_after: Some(Duration::from_secs(8)),
        ..Plan::default()
    };
    let _p = publish(&node, b"hvc1", plan).await;
    wait_segments(&node, "demo", "source", 1).await;
    wait_metric(
        &node,
        "estuary_stream_errors_total",
        "reason=\"source_changed\"",
        1.0,
        Duration::from_secs(30),
    )
    .await;
    let url = node.url("/live/demo/source/index.m3u8");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lines = parse_playlist(&get(&url).await.text());
        let after = lines
            .iter()
            .position(|l| matches!(l, Line::Tag(t, _) if t == "EXT-X-DISCONTINUITY"))
            .map(|i| {
                lines[i..]
                    .iter()
                    .filter(|l| matches!(l, Line::Uri(_)))
                    .count()
            });
        if after.is_some_and(|n| n >= 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no segment after a discontinuity\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let source = probe_latest(&node, "demo", "source").await;
    assert!(source.starts_with("hevc,320,180,"), "{source}");
    wait_publishers(&node, 1.0, Duration::from_secs(5)).await;
}

/// Enhanced RTMP codecs the node does not carry (AV1, VP9) are refused by name: logged,
/// counted as `unsupported_codec`, the connection closed, nothing published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fourcc_is_refused_by_name() {
    let node = Node::start("ertmp-av1", CONFIG);
    for (n, fourcc) in [b"av01", b"vp09"].into_iter().enumerate() {
        let mut c = rtmp_client(node.rtmp.expect("RTMP listens"), "demo").await;
        // An AV1 or VP9 SequenceStart with a (dummy) configuration record.
        c.video(ex_video(fourcc, true, 0, None, &[0x81, 0, 0, 0]), 0)
            .await
            .unwrap();
        wait_metric(
            &node,
            "estuary_rtmp_rejected_total",
            "reason=\"unsupported_codec\"",
            n as f64 + 1.0,
            Duration::from_secs(10),
        )
        .await;
        assert!(c.closed_by_peer().await, "connection still open");
        let name = format!("{:?}", std::str::from_utf8(fourcc).unwrap());
        let log = node.log();
        assert!(
            log.contains(&format!("Enhanced RTMP video codec {name}")),
            "{log}"
        );
        wait_publishers(&node, 0.0, Duration::from_secs(10)).await;
    }
    assert_eq!(
        metric(&node, "estuary_parts_published_total", "stream=\"demo\"").await,
        0.0
    );
}
