//! Drain against the real binary: `POST /admin/drain` (bearer `admin.token`) and SIGUSR1
//! turn `/readyz` to 503 at once and refuse new SRT and RTMP publishers, while the publisher
//! already live keeps publishing; the node exits 0 when it leaves, or at `drain_timeout`.

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use common::{ffmpeg_publish, metric, srt_url, wait_metric, Node};

const TOKEN: &str = "drain-test-token-0123456789";

/// A blocking HTTP/1.1 request; returns the status code.
fn request(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> u16 {
    let resp = request_full(addr, method, path, token);
    resp.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A blocking HTTP/1.1 request; returns the whole response.
fn request_full(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp
}

fn config(drain_timeout: &str) -> String {
    format!(
        "drain_timeout = \"{drain_timeout}\"\nadmin.token = \"{TOKEN}\"\n\
         [ladder]\npassthrough = true\nrungs = []\n[streams.demo]\n[streams.other]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_drain_refuses_new_publishers_and_exits_when_the_last_leaves() {
    let mut node = Node::start("drain", &config("60s"));
    let mut publisher = ffmpeg_publish(&srt_url(&node, "demo", None), 30, 30);
    wait_metric(
        &node,
        "estuary_publishers_active",
        "",
        1.0,
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(request(node.http, "GET", "/readyz", None), 200);

    // The admin API wants the token.
    let denied = request_full(node.http, "POST", "/admin/drain", None);
    assert!(denied.starts_with("HTTP/1.1 401"), "{denied}");
    assert!(denied.contains("{\"code\":\"unauthorized\""), "{denied}");
    assert_eq!(
        request(
            node.http,
            "POST",
            "/admin/drain",
            Some("wrong-token-wrong-token")
        ),
        401
    );
    assert_eq!(request(node.http, "GET", "/readyz", None), 200);
    let ok = request_full(node.http, "POST", "/admin/drain", Some(TOKEN));
    assert!(ok.starts_with("HTTP/1.1 202"), "{ok}");
    assert!(ok.contains("\"draining\":true"), "{ok}");
    // At once, not eventually.
    assert_eq!(request(node.http, "GET", "/readyz", None), 503);
    assert_eq!(request(node.http, "GET", "/healthz", None), 200);

    // A new publisher is refused at the handshake.
    let mut late = ffmpeg_publish(&srt_url(&node, "other", None), 5, 30);
    assert_eq!(late.wait_exit(Duration::from_secs(10)), Some(false));
    assert!(
        metric(&node, "estuary_srt_rejected_total", "reason=\"draining\"").await >= 1.0,
        "no draining refusal counted"
    );

    // So is a new RTMP publisher.
    let rtmp = node.rtmp.expect("rtmp listens");
    let mut cmd = common::ffmpeg_source("320x240", 5, true);
    cmd.args([
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:a",
        "aac",
        "-f",
        "flv",
    ])
    .arg(format!("rtmp://{rtmp}/live/other"));
    let mut late_rtmp = common::Publisher(cmd.spawn().expect("ffmpeg"));
    assert_eq!(late_rtmp.wait_exit(Duration::from_secs(10)), Some(false));
    assert!(
        metric(&node, "estuary_rtmp_rejected_total", "reason=\"draining\"").await >= 1.0,
        "no RTMP draining refusal counted"
    );

    // The live publisher goes on: parts keep coming while draining.
    let before = metric(
        &node,
        "estuary_parts_published_total",
        "rendition=\"source\"",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = metric(
        &node,
        "estuary_parts_published_total",
        "rendition=\"source\"",
    )
    .await;
    assert!(
        after > before,
        "publishing stopped while draining ({before} -> {after})"
    );
    assert!(
        node.wait_exit(Duration::from_millis(10)).is_none(),
        "exited with a publisher live"
    );

    // The last publisher leaves: the node exits 0 on its own (srt idle_timeout 5 s).
    let _ = publisher.0.kill();
    let _ = publisher.0.wait();
    let status = node.wait_exit(Duration::from_secs(20)).unwrap_or_else(|| {
        panic!(
            "did not exit after the drain; log in {}",
            node.dir.display()
        )
    });
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_drains_and_drain_timeout_bounds_it() {
    let mut node = Node::start("drain-usr1", &config("2s"));
    let _publisher = ffmpeg_publish(&srt_url(&node, "demo", None), 30, 30);
    wait_metric(
        &node,
        "estuary_publishers_active",
        "",
        1.0,
        Duration::from_secs(15),
    )
    .await;
    let started = Instant::now();
    node.signal("USR1");
    let deadline = Instant::now() + Duration::from_secs(2);
    while request(node.http, "GET", "/readyz", None) != 503 {
        assert!(Instant::now() < deadline, "/readyz still 200 after SIGUSR1");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The publisher stays, so drain_timeout (2 s) ends the drain.
    let status = node.wait_exit(Duration::from_secs(15)).unwrap_or_else(|| {
        panic!(
            "drain_timeout did not end it; log in {}",
            node.dir.display()
        )
    });
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "exited before drain_timeout"
    );
    assert!(
        node.log().contains("drain_timeout reached"),
        "{}",
        node.log()
    );
}

#[test]
fn admin_api_is_off_without_a_token() {
    let node = Node::start("drain-off", "");
    assert_eq!(request(node.http, "POST", "/admin/drain", Some(TOKEN)), 404);
    assert_eq!(request(node.http, "GET", "/readyz", None), 200);
}
