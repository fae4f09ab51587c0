//! Every refused SRT handshake gets an SRT rejection at once, and a metric: a streamid that
//! is not UTF-8 (which srt-protocol cannot even parse; the node's UDP front answers it),
//! one longer than SRT's 512 bytes, and none at all. Real callers (ffmpeg and
//! srt-live-transmit, both libsrt) see the rejection well within libsrt's 3 s connect
//! timeout, and a publisher on the same listener keeps going throughout.

mod common;

use std::{
    ffi::OsString,
    os::unix::ffi::OsStringExt,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::*;

/// Runs a libsrt caller that should be refused; returns how long it took and its stderr.
fn refused_caller(mut cmd: Command) -> (Duration, String) {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("caller starts");
    // Bounded: a caller that is not refused is killed after 10 s (and fails the test).
    while start.elapsed() < Duration::from_secs(10) {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = start.elapsed();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    (took, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// ffmpeg publishing one second of a tiny picture to `url` (raw bytes: it may be non-UTF-8).
fn ffmpeg_to(url: Vec<u8>) -> Command {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-f", "lavfi"])
        .args(["-i", "testsrc=size=64x64:rate=5", "-t", "1"])
        .args(["-c:v", "mpeg2video", "-f", "mpegts"])
        .arg(OsString::from_vec(url));
    cmd
}

/// A raw SRT caller (libsrt and srt-tokio refuse to send a streamid over 512 bytes): the
/// induction, then a conclusion with `sid` from `sock`; returns the handshake type of the
/// answer.
async fn raw_conclusion(node: &Node, sock: &tokio::net::UdpSocket, sid: &[u8]) -> Option<i32> {
    sock.connect(node.srt).await.unwrap();
    let socket_id = 0x2468_ace0u32;
    let handshake = |version: u32, ext: u16, shake: i32, cookie: i32| {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        p.extend_from_slice(&version.to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(&ext.to_be_bytes());
        p.extend_from_slice(&1000u32.to_be_bytes()); // initial sequence number
        p.extend_from_slice(&1500u32.to_be_bytes());
        p.extend_from_slice(&8192u32.to_be_bytes());
        p.extend_from_slice(&shake.to_be_bytes());
        p.extend_from_slice(&socket_id.to_be_bytes());
        p.extend_from_slice(&cookie.to_be_bytes());
        p.extend_from_slice(&[127, 0, 0, 1]);
        p.extend_from_slice(&[0; 12]);
        p
    };
    // Induction (version 4, UDT_DGRAM).
    sock.send(&handshake(4, 2, 1, 0)).await.unwrap();
    let induction = answer(sock).await?;
    let cookie = i32::from_be_bytes(induction[44..48].try_into().unwrap());
    // Conclusion: HSv5 with HSREQ and the streamid.
    let mut p = handshake(5, 0x5, -1, cookie);
    p.extend_from_slice(&estuary::ingest::front::extensions(sid));
    sock.send(&p).await.unwrap();
    let r = answer(sock).await?;
    Some(i32::from_be_bytes(r[36..40].try_into().unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_streamids_are_rejected_at_once_and_counted() {
    let node = Node::start("srtreject", "[streams.demo]\n");
    let _good = ffmpeg_publish(&srt_url(&node, "demo", None), 40, 30);
    let parts = "estuary_parts_published_total";
    let labels = "rendition=\"source\",stream=\"demo\"";
    wait_metric(&node, parts, labels, 3.0, Duration::from_secs(30)).await;
    let before = metric(&node, parts, labels).await;

    let srt = node.srt;
    let nonutf8 = |prefix: &str| {
        let mut u = format!("{prefix}srt://{srt}?streamid=").into_bytes();
        u.extend_from_slice(&[0xff, 0xfe, b'd', b'e', b'm', b'o']);
        u
    };
    let mut slt = Command::new("srt-live-transmit");
    let udp_in = free_port();
    slt.args(["-a:no", &format!("udp://127.0.0.1:{udp_in}")])
        .arg(OsString::from_vec(nonutf8("")));
    let callers = [
        ("ffmpeg, streamid not UTF-8", ffmpeg_to(nonutf8(""))),
        ("srt-live-transmit, streamid not UTF-8", slt),
        (
            "ffmpeg, no streamid",
            ffmpeg_to(format!("srt://{srt}").into_bytes()),
        ),
    ];
    for (what, cmd) in callers {
        let (took, stderr) = tokio::task::spawn_blocking(move || refused_caller(cmd))
            .await
            .unwrap();
        println!("{what}: refused after {took:?}: {}", stderr.trim());
        assert!(took < Duration::from_secs(3), "{what}: {took:?}\n{stderr}");
        // libsrt logs the rejection itself ("REJECT reported from HS processing").
        assert!(stderr.contains("REJECT"), "{what}: {stderr}");
    }
    // Over 512 bytes: only a hand-made caller sends it; it is answered SRT_REJX_BAD_REQUEST
    // (1400, sent as handshake type 1000 + 1400).
    let start = Instant::now();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let shake = raw_conclusion(&node, &sock, &[b'a'; 600]).await;
    assert_eq!(shake, Some(2400), "600-byte streamid");
    assert!(start.elapsed() < Duration::from_secs(3));
    // The refusal names the caller's own address, not the front's loopback relay.
    let me = sock.local_addr().unwrap().to_string();
    assert!(
        node.log().contains(&me),
        "{me} not in the log\n{}",
        node.log()
    );

    let refused = metric(
        &node,
        "estuary_srt_rejected_total",
        "reason=\"bad_streamid\"",
    )
    .await;
    assert_eq!(refused, 4.0, "{}", node.log());
    // The publisher never noticed.
    wait_metric(&node, parts, labels, before + 5.0, Duration::from_secs(20)).await;
    assert_eq!(metric(&node, "estuary_publishers_active", "").await, 1.0);
    assert!(
        node.log().contains("handshake unreadable"),
        "the front logs what it refused"
    );
}

/// The next datagram (at least a handshake's length) within 3 s.
async fn answer(sock: &tokio::net::UdpSocket) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(3), sock.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    (n >= 64).then(|| buf[..n].to_vec())
}
