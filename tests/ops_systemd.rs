//! Operations against the real binary: sd_notify readiness, status and watchdog (with a
//! notify socket the test binds), the watchdog stall switch, socket activation under
//! `systemd-socket-activate`, the unit's hardening score, `check-config` and JSON logs.

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    os::unix::net::UnixDatagram,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{free_port, tempdir, Node};

/// Collects notify datagrams for `limit`.
fn collect(sock: &UnixDatagram, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if left.is_zero() {
            break;
        }
        sock.set_read_timeout(Some(left)).unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => out.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => break,
        }
    }
    out
}

fn notify_socket(tag: &str) -> (UnixDatagram, String) {
    let dir = tempdir(tag);
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    (sock, path.to_str().unwrap().to_owned())
}

/// A blocking HTTP/1.1 GET; returns the whole response.
fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp
}

/// A blocking HTTP/1.1 GET; returns the status code.
fn http_status(addr: SocketAddr, path: &str) -> u16 {
    let resp = http_get(addr, path);
    resp.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn notify_ready_status_watchdog_and_stopping() {
    let (sock, path) = notify_socket("notify");
    let mut node = Node::start_with_env(
        "notify",
        "",
        &[],
        &[("NOTIFY_SOCKET", &path), ("WATCHDOG_USEC", "1000000")],
    );
    // The listening line is printed after every listener is bound; READY=1 follows it.
    let msgs = collect(&sock, Duration::from_secs(3));
    let first = msgs.first().expect("no sd_notify datagram within 3 s");
    assert!(first.contains("READY=1\n"), "{msgs:?}");
    assert!(
        first.contains("STATUS=publishers 0, viewers 0\n"),
        "{msgs:?}"
    );
    // 1 s watchdog: a ping every 0.5 s, so at least 4 in 3 s.
    let pings = msgs.iter().filter(|m| m.contains("WATCHDOG=1\n")).count();
    assert!(pings >= 4, "only {pings} watchdog pings in 3 s: {msgs:?}");
    assert!(msgs.iter().skip(1).all(|m| m.contains("STATUS=publishers")));
    assert!(node.terminate().success());
    let after = collect(&sock, Duration::from_millis(500));
    assert!(after.iter().any(|m| m.contains("STOPPING=1")), "{after:?}");
}

#[test]
fn sighup_reloads_between_reloading_and_ready() {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/estuary.service"),
    )
    .unwrap();
    assert!(
        unit.contains("\nExecReload=/bin/kill -HUP $MAINPID\n"),
        "{unit}"
    );
    let (sock, path) = notify_socket("notify-reload");
    let node = Node::start_with_env("notify-reload", "", &[], &[("NOTIFY_SOCKET", &path)]);
    let msgs = collect(&sock, Duration::from_secs(1));
    assert!(msgs.iter().any(|m| m.contains("READY=1\n")), "{msgs:?}");
    node.signal("HUP");
    let msgs = collect(&sock, Duration::from_secs(2));
    let reloading = msgs
        .iter()
        .position(|m| m.contains("RELOADING=1\n") && m.contains("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no RELOADING=1: {msgs:?}"));
    assert!(
        msgs[reloading + 1..]
            .iter()
            .any(|m| m.contains("READY=1\n")),
        "no READY=1 after RELOADING=1: {msgs:?}"
    );
    assert!(node.log().contains("config reloaded"), "{}", node.log());
}

#[test]
fn watchdog_pings_stop_when_the_runtime_probe_stalls() {
    let (sock, path) = notify_socket("stall");
    let node = Node::start_with_env(
        "stall",
        "",
        &[],
        &[
            ("NOTIFY_SOCKET", &path),
            ("WATCHDOG_USEC", "1000000"),
            ("ESTUARY_DEBUG_STALL_WATCHDOG", "1"),
        ],
    );
    let msgs = collect(&sock, Duration::from_secs(3));
    assert!(
        msgs.first().is_some_and(|m| m.contains("READY=1")),
        "{msgs:?}"
    );
    assert!(
        !msgs.iter().any(|m| m.contains("WATCHDOG=1")),
        "pings despite a stalled probe: {msgs:?}"
    );
    // Only the probe is stalled: the node itself still serves.
    assert_eq!(http_status(node.http, "/healthz"), 200);
}

#[test]
fn no_notify_socket_no_harm() {
    // Without NOTIFY_SOCKET (plain `cargo run`) everything is a no-op.
    let node = Node::start("nonotify", "");
    assert_eq!(http_status(node.http, "/readyz"), 200);
}

fn free_port_udp() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// systemd-socket-activate handles one socket type per run but passes inherited
/// descriptors through, so two nested runs hand over a TCP listener (HTTP) and a UDP
/// socket (SRT), named as the .socket units name them.
#[test]
fn socket_activation_takes_over_tcp_and_udp() {
    let dir = tempdir("activate");
    let cfg = dir.join("estuary.toml");
    // The config's own addresses are ephemeral: the node must use the inherited ones.
    std::fs::write(
        &cfg,
        "srt.listen = \"127.0.0.1:0\"\nhttp.listen = \"127.0.0.1:0\"\nrtmp.enabled = false\n\
         [ladder]\npassthrough = true\nrungs = []\n[streams.demo]\n",
    )
    .unwrap();
    let (http_port, srt_port) = (free_port(), free_port_udp());
    let http: SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();
    let log = std::fs::File::create(dir.join("node.log")).unwrap();
    let mut child = Command::new("systemd-socket-activate")
        .args(["-l", &http.to_string(), "--"])
        .args(["systemd-socket-activate", "--datagram"])
        .args(["-l", &format!("127.0.0.1:{srt_port}")])
        .args(["--fdname=http:srt", "--"])
        .arg(env!("CARGO_BIN_EXE_estuary"))
        .arg("--config")
        .arg(&cfg)
        .args(["--log-format", "json"])
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("systemd-socket-activate (package systemd)");
    let _guard = KillOnDrop(child.id());
    // The first connection starts the node; it is accepted once the node runs.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Ok(mut s) = TcpStream::connect_timeout(&http, Duration::from_secs(1)) {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            write!(
                s,
                "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut resp = String::new();
            let _ = s.read_to_string(&mut resp);
            break resp;
        }
        assert!(Instant::now() < deadline, "socket-activate never listened");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.starts_with("HTTP/1.1 200"), "{status:?}");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.contains(&format!("\"http\":\"{http}\"")), "{line}");
    assert!(
        line.contains(&format!("\"srt\":\"127.0.0.1:{srt_port}\"")),
        "{line}"
    );
    let log = std::fs::read_to_string(dir.join("node.log")).unwrap();
    assert!(log.contains("\"socket_activated\":true"), "{log}");
    // A real publisher over the inherited UDP socket.
    let mut publisher = common::ffmpeg_publish(
        &format!("srt://127.0.0.1:{srt_port}?streamid=demo&latency=120000"),
        15,
        30,
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = http_get(http, "/metrics");
        if m.lines().any(|l| l == "estuary_publishers_active 1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no publisher over the inherited SRT socket; log in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = publisher.0.kill();
    let _ = child.kill();
    let _ = child.wait();
}

struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.to_string()).status();
    }
}

#[test]
fn unit_hardening_exposure_at_most_2() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/estuary.service");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze (package systemd)");
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for estuary.service: ")
                .nth(1)
        })
        .and_then(|r| r.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in: {text}"));
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{text}");
    // The unit must stay usable: network families, notify and the watchdog present.
    let unit = std::fs::read_to_string(&unit).unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "ExecStart=/usr/bin/estuary --config /etc/estuary/estuary.toml",
    ] {
        assert!(unit.contains(line), "unit lacks {line}");
    }
}

#[test]
fn check_config_accepts_the_default_and_names_a_bad_key() {
    let bin = env!("CARGO_BIN_EXE_estuary");
    let good = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/estuary.toml");
    let out = Command::new(bin)
        .arg("check-config")
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let dir = tempdir("checkcfg");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[hls]\npart_target = \"5ms\"\n").unwrap();
    let out = Command::new(bin)
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("hls.part_target"));
    std::fs::write(&bad, "[http]\nlisten_typo = 1\n").unwrap();
    let out = Command::new(bin)
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen_typo"));
}

#[test]
fn json_logs_are_one_object_per_line() {
    let mut node = Node::start_with_env("jsonlog", "", &[], &[("ESTUARY_LOG_FORMAT", "json")]);
    assert_eq!(http_status(node.http, "/healthz"), 200);
    assert!(node.terminate().success());
    let log = node.log();
    let mut n = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
        n += 1;
    }
    assert!(log.contains("\"message\":\"estuary listening\""), "{log}");
    assert!(n >= 2, "{log}");
}

/// SIGTERM or SIGUSR1 sent the moment the node says it listens (systemd stopping a unit
/// that has just started, an orchestrator draining a fresh node) is handled, not fatal:
/// the node shuts down or drains and exits 0.
#[test]
fn signals_right_after_listening_are_handled() {
    for round in 0..8 {
        let sig = if round % 2 == 0 { "TERM" } else { "USR1" };
        let mut node = Node::start("earlysig", "");
        // Caught already when the node says it listens: SIGHUP (1), SIGINT (2), SIGUSR1
        // (10) and SIGTERM (15) in the caught-signals mask.
        let caught = u64::from_str_radix(&node.proc_status("SigCgt"), 16).unwrap();
        for n in [1, 2, 10, 15] {
            assert!(
                caught & (1 << (n - 1)) != 0,
                "signal {n} not caught yet: {caught:x}"
            );
        }
        node.signal(sig);
        let status = node
            .wait_exit(Duration::from_secs(15))
            .unwrap_or_else(|| panic!("round {round}: SIG{sig}: still running\n{}", node.log()));
        let log = node.log();
        assert!(
            status.success(),
            "round {round}: SIG{sig} ended the node with {status:?}\n{log}"
        );
        assert!(
            log.contains("shutting down"),
            "round {round}: SIG{sig}\n{log}"
        );
    }
}
