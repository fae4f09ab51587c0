//! RTMP ingest end to end: ffmpeg and GStreamer publish over RTMP and RTMPS, refusals,
//! reconnects, idle publishers.

mod common;
mod rtmp_support;

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::*;
use rtmp_support::{probe_latest, self_signed_cert, wait_segments};

const KEY: &str = "right-key-123";

fn config() -> String {
    // Dotted keys before the tables: the harness sets rtmp.listen the same way.
    format!(
        "rtmp.handshake_timeout = \"2s\"\nrtmp.idle_timeout = \"3s\"\n\
         [streams.demo]\n[streams.keyed]\nrtmp_key = \"{KEY}\"\n\
         [streams.srtonly]\npassphrase = \"0123456789abcdef\"\n"
    )
}

fn rtmp(node: &Node) -> SocketAddr {
    node.rtmp.expect("RTMP listens")
}

async fn parts_of(node: &Node, stream: &str) -> f64 {
    metric(
        node,
        "estuary_parts_published_total",
        &format!("stream=\"{stream}\""),
    )
    .await
}

/// ffmpeg publishes `rtmp://HOST/live/demo`; the LL-HLS playlists appear and decode; the
/// stream list shows the RTMP URL and OBS's Server / Stream key fields; SIGTERM with the
/// publisher live exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_publishes_over_rtmp() {
    let mut node = Node::start("rtmp-ffmpeg", &config());
    let addr = rtmp(&node);
    let _p = ffmpeg_rtmp(&format!("rtmp://{addr}/live/demo"), 30);
    let lines = wait_segments(&node, "demo", "source", 2).await;
    assert!(!tags(&lines, "EXT-X-PART").is_empty());
    let master = get(&node.url("/live/demo/index.m3u8")).await;
    assert_eq!(master.status, 200);
    assert!(master.text().contains("mp4a.40.2"), "{}", master.text());
    let video = probe_latest(&node, "demo", "source").await;
    assert!(video.starts_with("h264,640,360,"), "{video}");
    let audio = probe_latest(&node, "demo", "audio").await;
    assert!(audio.starts_with("aac,"), "{audio}");
    assert!(node.log().contains("publisher connected"));

    let api: serde_json::Value =
        serde_json::from_slice(&get(&node.url("/api/streams")).await.body).unwrap();
    let find = |n: &str| {
        api.as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == n)
            .cloned()
            .unwrap()
    };
    let port = addr.port();
    let demo = find("demo");
    assert_eq!(
        demo["rtmp_url"],
        format!("rtmp://127.0.0.1:{port}/live/demo")
    );
    assert_eq!(
        demo["obs_rtmp"]["server"],
        format!("rtmp://127.0.0.1:{port}/live")
    );
    assert_eq!(demo["obs_rtmp"]["stream_key"], "demo");
    assert!(demo["rtmps_url"].is_null());
    assert!(demo["live"].as_bool().unwrap());
    // The stream API names the RTMP publisher.
    let detail: serde_json::Value =
        serde_json::from_slice(&get(&node.url("/api/streams/demo")).await.body).unwrap();
    assert_eq!(detail["publisher"]["protocol"], "rtmp", "{detail}");
    assert!(
        detail["publisher"]["bytes"].as_u64().unwrap() > 0,
        "{detail}"
    );
    assert!(detail["publisher"]["srt"].is_null(), "{detail}");
    let keyed = find("keyed");
    assert_eq!(keyed["obs_rtmp"]["stream_key"], "keyed?key=YOUR_RTMP_KEY");
    assert_eq!(keyed["rtmp_key_required"], true);
    // A stream SRT protects with a passphrase is not offered over RTMP.
    assert!(find("srtonly")["rtmp_url"].is_null());

    // SIGTERM with an RTMP publisher live: the node drains and exits cleanly.
    assert!(node.terminate().success());
}

/// GStreamer's rtmp2sink (flvmux streamable=true) publishes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gstreamer_rtmp2sink_publishes() {
    let node = Node::start("rtmp-gst", &config());
    let location = format!("location=rtmp://{}/live/demo", rtmp(&node));
    let pipeline = format!(
        "videotestsrc is-live=true pattern=ball num-buffers=900 \
         ! video/x-raw,format=I420,width=640,height=360,framerate=30/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 bitrate=1000 \
         ! h264parse ! queue ! flvmux name=mux streamable=true ! rtmp2sink {location} \
         audiotestsrc is-live=true wave=sine ! audio/x-raw,rate=48000,channels=2 \
         ! audioconvert ! avenc_aac ! aacparse ! queue ! mux."
    );
    let mut args: Vec<&str> = vec!["-q"];
    args.extend(pipeline.split_whitespace());
    let gst = Command::new("gst-launch-1.0")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("gst-launch-1.0");
    let _gst = Publisher(gst);
    wait_segments(&node, "demo", "source", 2).await;
    let video = probe_latest(&node, "demo", "source").await;
    assert!(video.starts_with("h264,640,360,"), "{video}");
    let audio = probe_latest(&node, "demo", "audio").await;
    assert!(audio.starts_with("aac,"), "{audio}");
}

/// Unknown stream, wrong or missing key, a passphrase-only stream, a second publisher
/// and a silent client are refused and counted; the first publisher keeps going.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_counted_and_the_live_publisher_keeps_going() {
    let node = Node::start("rtmp-refuse", &config());
    let addr = rtmp(&node);
    let rejected = "estuary_rtmp_rejected_total";
    for (path, reason, count) in [
        ("live/nosuch", "unknown_stream", 1.0),
        ("live/keyed?key=wrong-key-456", "bad_key", 1.0),
        ("live/keyed", "bad_key", 2.0),
        ("live/srtonly", "rtmp_not_allowed", 1.0),
        ("other/demo", "bad_app", 1.0),
    ] {
        let mut p = ffmpeg_rtmp(&format!("rtmp://{addr}/{path}"), 5);
        assert_eq!(
            p.wait_exit(Duration::from_secs(15)),
            Some(false),
            "{path} should be refused"
        );
        wait_metric(
            &node,
            rejected,
            &format!("reason=\"{reason}\""),
            count,
            Duration::from_secs(5),
        )
        .await;
    }
    assert_eq!(parts_of(&node, "keyed").await, 0.0);
    assert_eq!(parts_of(&node, "nosuch").await, 0.0);

    // OBS's form: Server rtmp://HOST/live, Stream key keyed?key=KEY.
    let _first = ffmpeg_rtmp(&format!("rtmp://{addr}/live/keyed?key={KEY}"), 40);
    wait_segments(&node, "keyed", "source", 1).await;
    let mut second = ffmpeg_rtmp(&format!("rtmp://{addr}/live/keyed?key={KEY}"), 5);
    assert_eq!(second.wait_exit(Duration::from_secs(15)), Some(false));
    wait_metric(
        &node,
        rejected,
        "reason=\"already_publishing\"",
        1.0,
        Duration::from_secs(5),
    )
    .await;
    let before = parts_of(&node, "keyed").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(parts_of(&node, "keyed").await > before);

    // A client that connects and says nothing is dropped at rtmp.handshake_timeout.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(&mut silent, &mut buf),
    )
    .await
    .expect("the node closes a silent connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    wait_metric(
        &node,
        rejected,
        "reason=\"timeout\"",
        1.0,
        Duration::from_secs(5),
    )
    .await;
    let log = node.log();
    assert!(log.contains("publisher refused"));
    assert!(!log.contains(KEY), "the key must not be logged");
}

/// A publisher that ends (deleteStream / FCUnpublish) and comes back continues the same
/// playlists: one EXT-X-DISCONTINUITY, media sequence numbers keep counting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_gives_discontinuity_and_monotonic_msn() {
    let node = Node::start("rtmp-reconnect", &config());
    let addr = rtmp(&node);
    let url = node.url("/live/demo/source/index.m3u8");
    let mut first = ffmpeg_rtmp(&format!("rtmp://{addr}/live/demo"), 5);
    assert_eq!(first.wait_exit(Duration::from_secs(20)), Some(true));
    let deadline = Instant::now() + Duration::from_secs(10);
    let before = loop {
        let text = wait_ok(&url, Duration::from_secs(5)).await.text();
        if !text.contains("PRELOAD-HINT") {
            break segments(&parse_playlist(&text));
        }
        assert!(Instant::now() < deadline, "publisher end not noticed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let last_before = before.last().unwrap().0;
    wait_publishers(&node, 0.0, Duration::from_secs(10)).await;

    let _second = ffmpeg_rtmp(&format!("rtmp://{addr}/live/demo"), 30);
    let deadline = Instant::now() + Duration::from_secs(25);
    let lines = loop {
        let lines = parse_playlist(&get(&url).await.text());
        if segments(&lines).last().unwrap().0 >= last_before + 3 {
            break lines;
        }
        assert!(Instant::now() < deadline, "no new segments after reconnect");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(tags(&lines, "EXT-X-DISCONTINUITY").len(), 1);
    let mut msn: u64 = tag(&lines, "EXT-X-MEDIA-SEQUENCE").parse().unwrap();
    let (mut msns, mut disc_before, mut pending) = (Vec::new(), None, false);
    for l in &lines {
        match l {
            Line::Tag(n, _) if n == "EXT-X-DISCONTINUITY" => pending = true,
            Line::Uri(_) => {
                if std::mem::take(&mut pending) {
                    disc_before = Some(msn);
                }
                msns.push(msn);
                msn += 1;
            }
            _ => {}
        }
    }
    assert_eq!(disc_before, Some(last_before + 1));
    assert!(msns.windows(2).all(|w| w[1] == w[0] + 1));
}

/// A publisher that stops sending (frozen, not closed) is dropped after
/// `rtmp.idle_timeout`, and the stream is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_publisher_is_dropped_after_idle_timeout() {
    let node = Node::start("rtmp-idle", &config());
    let p = ffmpeg_rtmp(&format!("rtmp://{}/live/demo", rtmp(&node)), 60);
    wait_segments(&node, "demo", "source", 1).await;
    let pid = p.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    wait_metric(
        &node,
        "estuary_stream_errors_total",
        "reason=\"idle\"",
        1.0,
        Duration::from_secs(15),
    )
    .await;
    wait_publishers(&node, 0.0, Duration::from_secs(10)).await;
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
}

/// RTMPS with a self-signed certificate made here: ffmpeg (which does not verify by
/// default) publishes to `rtmps://HOST:PORT/live/demo`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmps_publishes_with_a_self_signed_certificate() {
    let (cert, key) = self_signed_cert("rtmps-cert");
    let extra = format!(
        "rtmp.tls_cert = \"{}\"\nrtmp.tls_key = \"{}\"\n{}",
        cert.display(),
        key.display(),
        config()
    );
    let node = Node::start("rtmps", &extra);
    let addr = node.rtmps.expect("RTMPS listens with a certificate");
    assert_ne!(Some(addr), node.rtmp);
    let _p = ffmpeg_rtmp(&format!("rtmps://{addr}/live/demo"), 30);
    wait_segments(&node, "demo", "source", 1).await;
    let video = probe_latest(&node, "demo", "source").await;
    assert!(video.starts_with("h264,640,360,"), "{video}");

    let api: serde_json::Value =
        serde_json::from_slice(&get(&node.url("/api/streams")).await.body).unwrap();
    let demo = api
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "demo")
        .unwrap();
    assert_eq!(
        demo["rtmps_url"],
        format!("rtmps://127.0.0.1:{}/live/demo", addr.port())
    );
}

/// `rtmp.max_connections` caps connections (the next is closed at once and counted), and
/// `rtmp.enabled = false` binds no RTMP port at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_and_disabled_listener() {
    use tokio::io::AsyncReadExt;
    let node = Node::start(
        "rtmp-cap",
        &format!("rtmp.max_connections = 1\n{}", config()),
    );
    let _held = tokio::net::TcpStream::connect(rtmp(&node)).await.unwrap();
    // The listener accepts in arrival order; the first holds the only permit.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut second = tokio::net::TcpStream::connect(rtmp(&node)).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(1), second.read(&mut buf))
        .await
        .expect("the second connection is closed at once (before the 2 s handshake timeout)");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    wait_metric(
        &node,
        "estuary_rtmp_rejected_total",
        "reason=\"overload\"",
        1.0,
        Duration::from_secs(5),
    )
    .await;

    let off = Node::start("rtmp-off", &format!("rtmp.enabled = false\n{}", config()));
    assert_eq!((off.rtmp, off.rtmps), (None, None));
    let api: serde_json::Value =
        serde_json::from_slice(&get(&off.url("/api/streams")).await.body).unwrap();
    assert!(api[0]["rtmp_url"].is_null() && api[0]["obs_rtmp"].is_null());
}
