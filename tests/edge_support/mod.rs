//! Peers for the edge tier's end-to-end tests: a tiny file server standing in for a
//! plain HLS origin, a hostile HTTP/1.1 server, Varnish, Redis and a test CA, plus
//! playlist helpers. Every server binds 127.0.0.1 on a port the OS picks.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{Empty, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

use crate::common::*;

pub fn small_publish(node: &Node, stream: &str, secs: u32) -> Publisher {
    let x264 = x264_args(30);
    let args: Vec<&str> = x264.iter().map(String::as_str).collect();
    ffmpeg_publish_with(&srt_url(node, stream, None), secs, &args, "640x360")
}

pub fn upstream_cfg(origins: &[&Node], extra: &str) -> String {
    let list: Vec<String> = origins
        .iter()
        .map(|n| format!("\"http://{}/live\"", n.http))
        .collect();
    format!("[upstream]\norigins = [{}]\n{extra}", list.join(", "))
}

/// `[steering]` naming edge `a` on port `pa` and edge `b` on `pb`.
pub fn steering_cfg(pa: u16, pb: u16, self_id: &str, extra: &str) -> String {
    format!(
        "[steering]\npathways = [{{ id = \"a\", base = \"http://127.0.0.1:{pa}\" }}, \
         {{ id = \"b\", base = \"http://127.0.0.1:{pb}\" }}]\nself_id = \"{self_id}\"\n\
         ttl = \"1s\"\nprobe_interval = \"300ms\"\nprobe_timeout = \"250ms\"\n{extra}"
    )
}

/// GET with an `Authorization: Bearer` header, over h2c.
pub async fn get_auth(url: &str, secret: &str) -> Resp {
    request_auth(hyper::Method::GET, url, secret).await
}

/// A request with an `Authorization: Bearer` header and no body, over h2c.
pub async fn request_auth(method: hyper::Method, url: &str, secret: &str) -> Resp {
    let mut b = Client::builder(TokioExecutor::new());
    b.http2_only(true);
    let client: Client<_, Empty<Bytes>> = b.build_http();
    let req = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {secret}"))
        .body(Empty::new())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    into_resp(resp).await
}

/// The part after the newest listed one: (MSN, part index), read from the playlist.
pub fn next_part(lines: &[Line]) -> (u64, u64) {
    let mut msn: u64 = tag(lines, "EXT-X-MEDIA-SEQUENCE").parse().unwrap();
    if let Some(s) = tags(lines, "EXT-X-SKIP").first() {
        msn += attrs(s)["SKIPPED-SEGMENTS"].parse::<u64>().unwrap();
    }
    let mut parts = 0;
    for l in lines {
        match l {
            Line::Tag(n, _) if n == "EXT-X-PART" => parts += 1,
            Line::Uri(_) => {
                msn += 1;
                parts = 0;
            }
            _ => {}
        }
    }
    (msn, parts)
}

/// Parts listed per segment MSN (complete and open), in order.
pub fn parts_by_msn(lines: &[Line]) -> BTreeMap<u64, Vec<String>> {
    let mut msn: u64 = tag(lines, "EXT-X-MEDIA-SEQUENCE").parse().unwrap();
    if let Some(s) = tags(lines, "EXT-X-SKIP").first() {
        msn += attrs(s)["SKIPPED-SEGMENTS"].parse::<u64>().unwrap();
    }
    let mut out: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for l in lines {
        match l {
            Line::Tag(n, v) if n == "EXT-X-PART" => {
                out.entry(msn).or_default().push(attrs(v)["URI"].clone())
            }
            Line::Uri(_) => msn += 1,
            _ => {}
        }
    }
    out
}

/// Waits until a metric stops changing (the followers went quiet), within `limit`.
pub async fn settle(node: &Node, name: &str, labels: &str, limit: Duration) -> f64 {
    let deadline = Instant::now() + limit;
    let mut last = metric(node, name, labels).await;
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let v = metric(node, name, labels).await;
        if v == last {
            return v;
        }
        assert!(Instant::now() < deadline, "{name} still changing");
        last = v;
    }
}

/// (first MSN, last MSN, number of EXT-X-DISCONTINUITY) of a media playlist.
pub fn msn_span(lines: &[Line]) -> (u64, u64, usize) {
    let segs = segments(lines);
    let first: u64 = tag(lines, "EXT-X-MEDIA-SEQUENCE").parse().unwrap();
    let last = segs.last().map_or(first, |s| s.0);
    let discs = lines
        .iter()
        .filter(|l| matches!(l, Line::Tag(n, _) if n == "EXT-X-DISCONTINUITY"))
        .count();
    (first, last, discs)
}

/// A tiny static file server (HTTP/1.1 and h2c) for `/live/plain/…` from `dir`, standing
/// in for the web server in front of a plain HLS packager.
pub async fn file_server(dir: PathBuf) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let dir = dir.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let path = req.uri().path().to_owned();
                        let dir = dir.clone();
                        async move {
                            let file = path
                                .strip_prefix("/live/plain/")
                                .filter(|p| !p.contains(".."))
                                .map(|p| dir.join(p));
                            let resp = match file.map(std::fs::read) {
                                Some(Ok(b)) => hyper::Response::new(Full::new(Bytes::from(b))),
                                _ => {
                                    let mut r = hyper::Response::new(Full::new(Bytes::new()));
                                    *r.status_mut() = hyper::StatusCode::NOT_FOUND;
                                    r
                                }
                            };
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

/// ffmpeg's HLS muxer writing 1 s fMP4 segments (`N.m4s`, `init.mp4`) to `dir/v/`, with
/// a hand-written multivariant playlist beside it.
pub fn ffmpeg_hls(dir: &Path, secs: u32) -> Publisher {
    std::fs::create_dir_all(dir.join("v")).unwrap();
    std::fs::write(
        dir.join("index.m3u8"),
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1500000,CODECS=\"avc1.64001e,mp4a.40.2\"\nv/index.m3u8\n",
    )
    .unwrap();
    let mut cmd = ffmpeg_source("640x360", secs, true);
    cmd.args(x264_args(30))
        .args([
            "-c:a",
            "aac",
            "-f",
            "hls",
            "-hls_time",
            "1",
            "-hls_list_size",
            "6",
        ])
        .args([
            "-hls_segment_type",
            "fmp4",
            "-hls_fmp4_init_filename",
            "init.mp4",
        ])
        .args(["-hls_flags", "delete_segments+temp_file+program_date_time"])
        .arg("-hls_segment_filename")
        .arg(dir.join("v/%d.m4s"))
        .arg(dir.join("v/index.m3u8"));
    Publisher(cmd.spawn().expect("ffmpeg"))
}

/// A hostile HTTP/1.1 upstream on a raw socket: a good multivariant playlist whose media
/// playlists answer 500, a truncated body, garbage, or nothing at all.
pub async fn hostile_server() -> SocketAddr {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let Some(path) = read_request_path(&mut tcp).await else {
                    return;
                };
                let ok = |body: &str| {
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                let resp = match path.as_str() {
                    "/live/bad/index.m3u8" => ok("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nr500/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=1\ntrunc/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=1\njunk/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=1\nstall/index.m3u8\n"),
                    "/live/badmv/index.m3u8" => ok("<html>not a playlist</html>"),
                    "/live/bad/r500/index.m3u8" => "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".into(),
                    "/live/bad/trunc/index.m3u8" => "HTTP/1.1 200 OK\r\ncontent-length: 5000\r\nconnection: close\r\n\r\n#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\n".into(),
                    "/live/bad/junk/index.m3u8" => ok("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:banana,\n0.m4s\n\u{0}\u{1}"),
                    "/live/bad/stall/index.m3u8" => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        return;
                    }
                    _ => "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".into(),
                };
                let _ = tcp.write_all(resp.as_bytes()).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    addr
}

/// varnishd in the foreground with `config/varnish.vcl` pointed at `backend`; killed on
/// drop.
pub struct Varnish {
    child: std::process::Child,
    pub addr: SocketAddr,
}

impl Drop for Varnish {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// SIGTERM, so a manager process stops its children too (SIGKILL would orphan them),
/// then SIGKILL after a bounded wait.
fn stop(child: &mut std::process::Child) {
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub async fn start_varnish(backend: SocketAddr, dir: &Path) -> Varnish {
    let vcl = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/varnish.vcl"))
        .unwrap()
        .replace(
            ".port = \"8080\";",
            &format!(".port = \"{}\";", backend.port()),
        );
    let vcl_path = dir.join("varnish.vcl");
    std::fs::write(&vcl_path, vcl).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let log = std::fs::File::create(dir.join("varnish.log")).unwrap();
    let child = std::process::Command::new("varnishd")
        .args([
            "-F",
            "-j",
            "none",
            "-a",
            &addr.to_string(),
            "-s",
            "malloc,64m",
        ])
        .arg("-f")
        .arg(&vcl_path)
        .arg("-n")
        .arg(dir.join("varnish-work"))
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("varnishd (scripts/setup.sh --test installs it)");
    let v = Varnish { child, addr };
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "varnishd did not listen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    v
}

/// A test CA and a server certificate it signs for 127.0.0.1: (ca.pem, cert.pem, key.pem).
pub fn test_pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &["-days", "1", "-subj", "/CN=estuary-test-ca"],
        &[
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
        &["-keyout", "ca.key", "-out", "ca.pem"],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-subj",
            "/CN=origin",
            "-keyout",
            "key.pem",
            "-out",
            "csr.pem",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "csr.pem",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    )
}

/// A redis-server on a free loopback port, killed on drop.
pub struct Redis {
    child: std::process::Child,
    pub port: u16,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_redis() -> Redis {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("redis-server");
    // Killed and reaped on drop, whether or not it came up.
    let redis = Redis { child, port };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return redis;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("redis-server did not start");
}

/// What a scripted origin serves: path → body; the test changes it while the edge
/// follows.
pub type Script = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>>;

/// An HTTP/1.1 origin on a raw socket that serves whatever `script` holds (404 else),
/// standing in for a foreign HLS origin whose every answer the test decides.
pub async fn scripted_server(script: Script) -> SocketAddr {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let script = script.clone();
            tokio::spawn(async move {
                let Some(path) = read_request_path(&mut tcp).await else {
                    return;
                };
                let body = script.lock().unwrap().get(&path).cloned();
                let mut resp = match &body {
                    Some(b) => format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        b.len()
                    )
                    .into_bytes(),
                    None => {
                        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                resp.extend(body.unwrap_or_default());
                let _ = tcp.write_all(&resp).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    addr
}

/// A client certificate (clientAuth) signed by the CA `test_pki` made in `dir`:
/// (client.pem, client.key).
pub fn client_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        "/CN=edge",
        "-keyout",
        "client.key",
        "-out",
        "client.csr",
    ]);
    std::fs::write(
        dir.join("client.cnf"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "client.cnf",
        "-out",
        "client.pem",
    ]);
    (dir.join("client.pem"), dir.join("client.key"))
}

/// nginx serving `www` at `/live/plain/` over TLS (h2 by ALPN) and requiring a client
/// certificate signed by `ca`; killed on drop.
pub struct Nginx {
    child: std::process::Child,
    pub addr: SocketAddr,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

pub async fn start_nginx_mtls(dir: &Path, www: &Path, pki: &Path) -> Nginx {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let d = dir.display();
    let conf = format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nevents {{ worker_connections 64; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
         types {{ application/vnd.apple.mpegurl m3u8; video/mp4 mp4; video/iso.segment m4s; }}\n\
         server {{\n  listen {addr} ssl http2;\n  ssl_certificate {p}/cert.pem;\n\
         ssl_certificate_key {p}/key.pem;\n  ssl_client_certificate {p}/ca.pem;\n\
         ssl_verify_client on;\n  location /live/plain/ {{ alias {w}/; }}\n }}\n}}\n",
        p = pki.display(),
        w = www.display(),
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let child = std::process::Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(dir.join("nginx-error.log"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nginx (scripts/setup.sh --test installs it)");
    let n = Nginx { child, addr };
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not listen: {}",
            std::fs::read_to_string(dir.join("nginx-error.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    n
}

/// Reads one request's head from `tcp` and returns its path without the query; `None`
/// when the peer closes first.
async fn read_request_path(tcp: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 4096];
    let mut n = 0;
    while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") && n < buf.len() {
        match tcp.read(&mut buf[n..]).await {
            Ok(0) | Err(_) => return None,
            Ok(k) => n += k,
        }
    }
    let req = String::from_utf8_lossy(&buf[..n]).into_owned();
    let path = req.split(' ').nth(1)?.split('?').next()?;
    Some(path.to_owned())
}
