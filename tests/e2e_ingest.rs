//! Ingest end to end: who gets in at the SRT handshake, reconnects, bad input, and TLS.

mod common;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::*;

const PASS: &str = "0123456789abcdef";

fn config() -> String {
    format!(
        "srt.no_video_timeout = \"2s\"\n[streams.demo]\n[streams.other]\n[streams.junk]\n[streams.novideo]\n[streams.mpeg2]\n[streams.secret]\npassphrase = \"{PASS}\"\n"
    )
}

async fn parts_of(node: &Node, stream: &str) -> f64 {
    metric(
        node,
        "estuary_parts_published_total",
        &format!("stream=\"{stream}\""),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_refusals_and_srt_live_transmit() {
    let node = Node::start("auth", &config());

    // Unknown stream, missing passphrase, wrong passphrase: ffmpeg never connects.
    for (sid, pass, reason) in [
        ("#!::r=live/nosuch,m=publish", None, "unknown_stream"),
        // A caller without a passphrase fails the key exchange (SRT_REJ_UNSECURE).
        ("secret", None, "handshake_failed"),
        ("secret", Some("wrong-passphrase"), "handshake_failed"),
        ("#!::r=live/demo,m=request", None, "bad_streamid"),
    ] {
        let mut p = ffmpeg_publish(&srt_url(&node, sid, pass), 5, 30);
        let ok = p.wait_exit(Duration::from_secs(15));
        assert_eq!(ok, Some(false), "{sid} with {pass:?} should be refused");
        wait_metric(
            &node,
            "estuary_srt_rejected_total",
            &format!("reason=\"{reason}\""),
            1.0,
            Duration::from_secs(5),
        )
        .await;
    }
    assert_eq!(parts_of(&node, "secret").await, 0.0);

    // srt-live-transmit with the right passphrase gets in (ffmpeg → UDP → SLT → SRT).
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    drop(udp);
    let slt = Command::new("srt-live-transmit")
        .args([
            "-q".to_string(),
            format!("udp://127.0.0.1:{udp_port}"),
            format!("srt://{}?streamid=secret&passphrase={PASS}", node.srt),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("srt-live-transmit");
    let _slt = Publisher(slt);
    let _src = ffmpeg_publish(&format!("udp://127.0.0.1:{udp_port}?pkt_size=1316"), 30, 30);
    wait_ok(
        &node.url("/live/secret/index.m3u8"),
        Duration::from_secs(20),
    )
    .await;
    assert!(parts_of(&node, "secret").await > 0.0);

    // A second publisher on a live stream is refused; the first keeps going.
    let mut second = ffmpeg_publish(&srt_url(&node, "secret", Some(PASS)), 5, 30);
    assert_eq!(second.wait_exit(Duration::from_secs(15)), Some(false));
    wait_metric(
        &node,
        "estuary_srt_rejected_total",
        "reason=\"already_publishing\"",
        1.0,
        Duration::from_secs(5),
    )
    .await;
    let before = parts_of(&node, "secret").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(parts_of(&node, "secret").await > before);
    assert!(node.log().contains("publisher refused"));
}

/// Waits until `stream` publishes new parts (past `before`), then for the publisher to
/// finish on its own; returns the new part count.
async fn publishes(node: &Node, stream: &str, before: f64, p: &mut Publisher, what: &str) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut now = parts_of(node, stream).await;
    while now < before + 3.0 {
        assert!(
            Instant::now() < deadline,
            "{what}: no parts published\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        now = parts_of(node, stream).await;
    }
    assert!(
        p.wait_exit(Duration::from_secs(20)).is_some(),
        "{what}: still running"
    );
    // The stream is free for the next publisher once the session has wound down.
    wait_metric_until(
        node,
        "estuary_publishers_active",
        "",
        |v| v == 0.0,
        Duration::from_secs(10),
    )
    .await;
    now
}

/// SRT encryption works with every common caller's defaults (libsrt's `pbkeylen=0`, which
/// announces no key size) and with explicit 16, 24 and 32 byte keys: ffmpeg (OBS's path),
/// srt-live-transmit and GStreamer's srtsink. The URL `/api/streams` shows is pasted into
/// ffmpeg as it is, with only the passphrase filled in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passphrase_interop_with_callers_defaults() {
    let node = Node::start("passmatrix", &config());
    let mut parts = 0.0;
    let api: serde_json::Value =
        serde_json::from_slice(&get(&node.url("/api/streams")).await.body).unwrap();
    let shown = api
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "secret")
        .unwrap()["srt_url"]
        .as_str()
        .unwrap()
        .replace("YOUR_PASSPHRASE", PASS);
    // The page shows the host the browser asked for; the test asked 127.0.0.1.
    assert!(
        shown.starts_with(&format!("srt://{}?", node.srt)),
        "{shown}"
    );
    let mut p = ffmpeg_publish(&shown, 3, 30);
    parts = publishes(&node, "secret", parts, &mut p, "ffmpeg, /api/streams URL").await;

    for keylen in ["", "&pbkeylen=16", "&pbkeylen=24", "&pbkeylen=32"] {
        let url = format!("{}{keylen}", srt_url(&node, "secret", Some(PASS)));
        let mut p = ffmpeg_publish(&url, 3, 30);
        parts = publishes(&node, "secret", parts, &mut p, &format!("ffmpeg {keylen}")).await;
    }

    for keylen in ["", "&pbkeylen=32"] {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let udp_port = udp.local_addr().unwrap().port();
        drop(udp);
        let slt = Command::new("srt-live-transmit")
            .args([
                "-q".to_string(),
                format!("udp://127.0.0.1:{udp_port}"),
                format!(
                    "srt://{}?streamid=secret&passphrase={PASS}{keylen}",
                    node.srt
                ),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("srt-live-transmit");
        let slt = Publisher(slt);
        let mut src = ffmpeg_publish(&format!("udp://127.0.0.1:{udp_port}?pkt_size=1316"), 4, 30);
        let deadline = Instant::now() + Duration::from_secs(20);
        while parts_of(&node, "secret").await < parts + 3.0 {
            assert!(
                Instant::now() < deadline,
                "srt-live-transmit {keylen}: no parts\n{}",
                node.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        src.wait_exit(Duration::from_secs(20));
        drop(slt);
        wait_publishers(&node, 0.0, Duration::from_secs(15)).await;
        parts = parts_of(&node, "secret").await;
    }

    for keylen in ["", "pbkeylen=32"] {
        let gst = Command::new("gst-launch-1.0")
            .arg("-q")
            .args("videotestsrc is-live=true num-buffers=120 ! video/x-raw,width=320,height=240,framerate=30/1 ! x264enc tune=zerolatency key-int-max=30 ! video/x-h264,profile=high ! h264parse ! mpegtsmux alignment=7 ! srtsink".split(' '))
            .arg(format!("uri=srt://{}", node.srt))
            .arg("streamid=secret")
            .arg(format!("passphrase={PASS}"))
            .args((!keylen.is_empty()).then_some(keylen))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("gst-launch-1.0");
        let mut p = Publisher(gst);
        parts = publishes(&node, "secret", parts, &mut p, &format!("srtsink {keylen}")).await;
    }

    // A caller that sends a passphrase to an open stream trips a panic inside srt-protocol's
    // listener; the node binds the listener again and the next publisher gets in.
    let mut enc = ffmpeg_publish(&srt_url(&node, "demo", Some(PASS)), 3, 30);
    assert_eq!(enc.wait_exit(Duration::from_secs(20)), Some(false));
    let demo = parts_of(&node, "demo").await;
    let mut plain = ffmpeg_publish(&srt_url(&node, "demo", None), 3, 30);
    publishes(
        &node,
        "demo",
        demo,
        &mut plain,
        "plain caller after an encrypted one",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_gives_discontinuity_and_monotonic_msn() {
    let node = Node::start("reconnect", &config());
    let url = node.url("/live/demo/source/index.m3u8");
    let mut first = ffmpeg_publish(&srt_url(&node, "demo", None), 5, 30);
    assert_eq!(first.wait_exit(Duration::from_secs(20)), Some(true));
    // Once the node sees the publisher leave, the playlist drops its preload hint.
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

    let _second = ffmpeg_publish(&srt_url(&node, "demo", None), 30, 30);
    let deadline = Instant::now() + Duration::from_secs(25);
    let lines = loop {
        let lines = parse_playlist(&get(&url).await.text());
        let segs = segments(&lines);
        if segs.last().unwrap().0 >= last_before + 3 {
            break lines;
        }
        assert!(Instant::now() < deadline, "no new segments after reconnect");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(tags(&lines, "EXT-X-DISCONTINUITY").len(), 1);
    // The discontinuity sits right before the first segment of the new session.
    let mut msns = Vec::new();
    let mut disc_before = None;
    let mut pending = false;
    let mut msn: u64 = tag(&lines, "EXT-X-MEDIA-SEQUENCE").parse().unwrap();
    for l in &lines {
        match l {
            Line::Tag(n, _) if n == "EXT-X-DISCONTINUITY" => pending = true,
            Line::Uri(_) => {
                if pending {
                    disc_before = Some(msn);
                    pending = false;
                }
                msns.push(msn);
                msn += 1;
            }
            _ => {}
        }
    }
    assert_eq!(disc_before, Some(last_before + 1));
    assert!(msns.windows(2).all(|w| w[1] == w[0] + 1));
    // The old session's segments are still served.
    let old = get(&node.url(&format!("/live/demo/source/{last_before}.m4s"))).await;
    assert_eq!(old.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_torn_down_without_disturbing_other_streams() {
    let node = Node::start("badinput", &config());
    let _good = ffmpeg_publish(&srt_url(&node, "other", None), 40, 30);
    wait_ok(&node.url("/live/other/index.m3u8"), Duration::from_secs(20)).await;

    // Random bytes in real time (not MPEG-TS at all).
    let junk = ffmpeg_quiet(true)
        .args([
            "-f",
            "lavfi",
            "-i",
            "anoisesrc=r=48000:a=1",
            "-t",
            "20",
            "-f",
            "s16le",
        ])
        .arg(srt_url(&node, "junk", None))
        .spawn()
        .unwrap();
    let _junk = Publisher(junk);
    // A TS with audio only.
    let novideo = ffmpeg_quiet(true)
        .args([
            "-f", "lavfi", "-i", "sine", "-t", "20", "-c:a", "aac", "-f", "mpegts",
        ])
        .arg(srt_url(&node, "novideo", None))
        .spawn()
        .unwrap();
    let _novideo = Publisher(novideo);
    // A video codec we do not carry.
    let _mpeg2 = ffmpeg_publish_with(
        &srt_url(&node, "mpeg2", None),
        20,
        &["-c:v", "mpeg2video"],
        "640x360",
    );

    let before = parts_of(&node, "other").await;
    wait_metric(
        &node,
        "estuary_stream_errors_total",
        "reason=\"unsupported_codec\"",
        1.0,
        Duration::from_secs(20),
    )
    .await;
    // Audio only: no video track. Noise: no program at all.
    for reason in ["no_video", "no_program"] {
        wait_metric(
            &node,
            "estuary_stream_errors_total",
            &format!("reason=\"{reason}\""),
            1.0,
            Duration::from_secs(20),
        )
        .await;
    }
    assert!(
        parts_of(&node, "other").await > before,
        "the good stream kept going"
    );
    let log = node.log();
    assert!(log.contains("no video track"), "{log}");
    assert!(log.contains("no program in the input"), "{log}");
    assert!(log.contains("unsupported video codec"), "{log}");
    assert!(!log.contains("panicked"));
    assert_eq!(get(&node.url("/live/other/index.m3u8")).await.status, 200);
    // The torn-down publishers are released (after their SRT close), the good one stays.
    wait_publishers(&node, 1.0, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_h2_and_http11() {
    let dir = tempdir("tls");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    let mut node = Node::start(
        "tls",
        &format!(
            "http.tls_cert = \"{}\"\nhttp.tls_key = \"{}\"\n[streams.demo]\n",
            cert.display(),
            key.display()
        ),
    );
    for (flag, want) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let out = Command::new("curl")
            .args([
                "-sk",
                flag,
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{http_code}",
            ])
            .arg(format!("https://localhost:{}/healthz", node.http.port()))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{want} 200"));
    }
    // SIGTERM drains and exits cleanly.
    assert!(node.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untimestamped_leading_audio_is_tolerated() {
    // ffmpeg's tee muxer starts the TS with audio before the first PCR; tsdemux cannot
    // stamp those packets. The stream must still play, audio included.
    let node = Node::start("tee", "[streams.demo]\n");
    let tee = format!("[f=mpegts]{}", srt_url(&node, "demo", None));
    let child = ffmpeg_source("640x360", 20, true)
        .args(x264_args(30))
        .args([
            "-c:a", "aac", "-map", "0:v", "-map", "1:a", "-f", "tee", &tee,
        ])
        .spawn()
        .unwrap();
    let _p = Publisher(child);
    let mv = wait_ok(&node.url("/live/demo/index.m3u8"), Duration::from_secs(20)).await;
    assert!(mv.text().contains("mp4a.40.2"));
    wait_metric(
        &node,
        "estuary_segments_published_total",
        "rendition=\"audio\"",
        2.0,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        metric(&node, "estuary_stream_errors_total", "").await,
        0.0,
        "{}",
        node.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_aac_audio_is_encoded_to_aac_once() {
    let node = Node::start("mp2", "[streams.demo]\n");
    let child = ffmpeg_source("640x360", 20, true)
        .args(x264_args(30))
        .args(["-c:a", "mp2", "-f", "mpegts"])
        .arg(srt_url(&node, "demo", None))
        .spawn()
        .unwrap();
    let _p = Publisher(child);
    let mv = wait_ok(&node.url("/live/demo/index.m3u8"), Duration::from_secs(20)).await;
    assert!(mv.text().contains("TYPE=AUDIO"), "{}", mv.text());
    assert!(mv.text().contains(",mp4a.40.2\""), "{}", mv.text());
    let pl = parse_playlist(&get(&node.url("/live/demo/audio/index.m3u8")).await.text());
    let (_, _, uri) = segments(&pl).last().cloned().unwrap();
    let init = get(&node.url("/live/demo/audio/init.mp4")).await;
    let seg = get(&node.url(&format!("/live/demo/audio/{uri}"))).await;
    let f = node.dir.join("audio.mp4");
    std::fs::write(&f, [init.body.to_vec(), seg.body.to_vec()].concat()).unwrap();
    assert!(ffprobe(&f).starts_with("aac,"), "{}", ffprobe(&f));
    for p in tags(&pl, "EXT-X-PART") {
        let d: f64 = attrs(p)["DURATION"].parse().unwrap();
        assert!(d <= 0.2 + 1e-9, "audio part {p} over PART-TARGET");
    }
}

/// Junk UDP on the SRT port does not flood the log: srt-protocol warns once per packet, and
/// the node lets at most one such line a second through, then sums up what it held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_udp_does_not_flood_the_log() {
    let node = Node::start("junk", &config());
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for i in 0..20_000u32 {
        let mut pkt = [0u8; 100];
        for b in pkt.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let _ = sock.send_to(&pkt, node.srt);
        if i % 2000 == 1999 {
            // Paced a little, so the node reads them rather than the kernel dropping them.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // The UDP front drops datagrams from addresses that began with no handshake, with
    // at most a line a second that counts them.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !node.log().contains("datagrams from no caller dropped") {
        assert!(Instant::now() < deadline, "no summary line\n{}", node.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let lines = node
        .log()
        .lines()
        .filter(|l| l.contains("srt_protocol") || l.contains("datagrams from no caller"))
        .count();
    assert!(lines <= 20, "{lines} lines for 20,000 junk packets");
    // And the listener still takes a real publisher.
    let _p = ffmpeg_publish(&srt_url(&node, "demo", None), 10, 30);
    wait_ok(&node.url("/live/demo/index.m3u8"), Duration::from_secs(20)).await;
}

/// `/api/streams/{stream}` shows the live publisher: protocol, remote address, uptime,
/// bytes and bit rate, and for SRT the link (RTT, loss, drops, negotiated latency).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_api_shows_the_publisher_and_its_link() {
    let node = Node::start("pubstats", &config());
    let idle: serde_json::Value =
        serde_json::from_slice(&get(&node.url("/api/streams/demo")).await.body).unwrap();
    assert_eq!(idle["live"], false);
    assert!(idle["publisher"].is_null());
    let missing = get(&node.url("/api/streams/nosuch")).await;
    assert_eq!(missing.status, 404);
    let err: serde_json::Value = serde_json::from_slice(&missing.body).unwrap();
    assert_eq!(err["code"], "no_stream");

    let _p = ffmpeg_publish(&srt_url(&node, "demo", None), 15, 30);
    wait_ok(&node.url("/live/demo/index.m3u8"), Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let v: serde_json::Value =
        serde_json::from_slice(&get(&node.url("/api/streams/demo")).await.body).unwrap();
    assert_eq!(v["live"], true, "{v}");
    let p = &v["publisher"];
    assert_eq!(p["protocol"], "srt", "{v}");
    assert!(
        p["remote"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{v}"
    );
    assert!(p["uptime_s"].as_f64().unwrap() > 1.0, "{v}");
    assert!(p["bytes"].as_u64().unwrap() > 100_000, "{v}");
    // ffmpeg's test pattern at -b:v 2M with 128k audio: roughly 2 Mbit/s.
    let kbps = p["bitrate_kbps"].as_f64().unwrap();
    assert!((300.0..20_000.0).contains(&kbps), "{v}");
    // The node's srt.latency (120 ms) or the caller's, whichever is larger.
    assert!(p["srt"]["latency_ms"].as_u64().unwrap() >= 120, "{v}");
    assert!(p["srt"]["rtt_ms"].as_f64().is_some(), "{v}");
    assert_eq!(p["srt"]["dropped"], 0, "{v}");
}
