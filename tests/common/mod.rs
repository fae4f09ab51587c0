//! Test harness: starts the real `estuary` binary on loopback ports chosen by the OS,
//! publishes with real ffmpeg / srt-live-transmit, and reads playlists with a small
//! attribute-list parser of its own (independent of the renderer).
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub mod admin;
pub mod browser;
pub mod corpus;
pub mod impair;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

/// A running node; killed on drop.
pub struct Node {
    child: Child,
    pub http: SocketAddr,
    pub srt: SocketAddr,
    /// Where RTMP listens (absent when the test's config disables it).
    pub rtmp: Option<SocketAddr>,
    /// Where RTMPS listens (only with a certificate).
    pub rtmps: Option<SocketAddr>,
    pub dir: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback TCP port that was free a moment ago (the OS picked it; it is released for
/// the node to bind).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "estuary-test-{tag}-{}-{:x}",
        std::process::id(),
        rand_u64()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(42);
    h.finish()
}

impl Node {
    /// Starts the binary with `extra` TOML appended to a loopback base config.
    pub fn start(tag: &str, extra: &str) -> Node {
        Self::start_with_args(tag, extra, &[])
    }

    /// Like [`Node::start`], with extra command-line arguments.
    pub fn start_with_args(tag: &str, extra: &str, args: &[&str]) -> Node {
        Self::start_with_env(tag, extra, args, &[])
    }

    /// Like [`Node::start_with_args`], with extra environment variables.
    pub fn start_with_env(tag: &str, extra: &str, args: &[&str], env: &[(&str, &str)]) -> Node {
        Self::launch(tag, 0, extra, args, env)
    }

    /// Like [`Node::start`], with HTTP on a given loopback port (from [`free_port`]), for
    /// configs that must name a node's address before it starts (peers naming each other).
    pub fn start_at(tag: &str, http_port: u16, extra: &str) -> Node {
        Self::launch(tag, http_port, extra, &[], &[])
    }

    fn launch(tag: &str, http_port: u16, extra: &str, args: &[&str], env: &[(&str, &str)]) -> Node {
        let dir = tempdir(tag);
        let cfg = dir.join("estuary.toml");
        // Root-level dotted keys, so `extra` may add more `srt.*` / `http.*` / `rtmp.*` keys
        // before its own tables (an `[rtmp]` table would clash with them).
        // RTMP is on by default: loopback port 0 too, so parallel tests never share :1935.
        let base = format!(
            "srt.listen = \"127.0.0.1:0\"\nhttp.listen = \"127.0.0.1:{http_port}\"\n\
             rtmp.listen = \"127.0.0.1:0\"\nrtmp.tls_listen = \"127.0.0.1:0\"\n"
        );
        std::fs::write(&cfg, format!("{base}{extra}")).unwrap();
        let log = std::fs::File::create(dir.join("node.log")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_estuary"))
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .env("RUST_LOG", "info,estuary=debug")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start estuary");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let optional = |k: &str| -> Option<SocketAddr> {
            let start = line.find(&format!("\"{k}\":\""))? + k.len() + 4;
            let end = start + line[start..].find('"').unwrap();
            Some(line[start..end].parse().unwrap())
        };
        let field = |k: &str| -> SocketAddr {
            optional(k).unwrap_or_else(|| panic!("no {k} in {line:?}; log in {}", dir.display()))
        };
        let (http, srt) = (field("http"), field("srt"));
        let (rtmp, rtmps) = (optional("rtmp"), optional("rtmps"));
        Node {
            child,
            http,
            srt,
            rtmp,
            rtmps,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// A field of the node's `/proc/PID/status` (`"VmRSS"`, `"SigCgt"`, …), trimmed.
    pub fn proc_status(&self, field: &str) -> String {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("node running");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .unwrap_or_else(|| panic!("{field} in /proc status"))
            .trim()
            .to_owned()
    }

    /// The node's resident set size in KiB, from `/proc`.
    pub fn rss_kib(&self) -> u64 {
        let v = self.proc_status("VmRSS");
        v.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .expect("VmRSS in KiB")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    /// Sends a signal (`"USR1"`, `"TERM"`, …) to the node.
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// Waits up to `limit` for the node to exit on its own; `None` if it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "node did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A publisher process; killed on drop.
pub struct Publisher(pub Child);

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Publisher {
    /// Waits up to `limit` for the process to exit; returns its success.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<bool> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(s) = self.0.try_wait().unwrap() {
                return Some(s.success());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

/// The SRT URL ffmpeg uses, as OBS builds it: libsrt's defaults (no `pbkeylen`).
pub fn srt_url(node: &Node, streamid: &str, passphrase: Option<&str>) -> String {
    let mut u = format!("srt://{}?streamid={streamid}&latency=120000", node.srt);
    if let Some(p) = passphrase {
        u.push_str(&format!("&passphrase={p}"));
    }
    u
}

/// ffmpeg, quiet, with the lavfi test source as input: a `size` pattern at 30 fps and a
/// 48 kHz tone, for `secs` seconds, read in real time when `realtime` (as a live encoder
/// would). Add codec and output arguments, then spawn.
pub fn ffmpeg_source(size: &str, secs: u32, realtime: bool) -> Command {
    let mut cmd = ffmpeg_quiet(realtime);
    cmd.args([
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size={size}:rate=30"),
    ])
    .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
    .args(["-t", &secs.to_string()]);
    cmd
}

/// ffmpeg with quiet logging and no stdio, reading its input in real time when
/// `realtime`. Add input, codec and output arguments, then spawn.
pub fn ffmpeg_quiet(realtime: bool) -> Command {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-y"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if realtime {
        cmd.arg("-re");
    }
    cmd
}

/// Polls a metric until `ok(value)` holds, for at most `limit`; the panic message shows
/// the last value and the node's log.
pub async fn wait_metric_until(
    node: &Node,
    name: &str,
    labels: &str,
    ok: impl Fn(f64) -> bool,
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    loop {
        let v = metric(node, name, labels).await;
        if ok(v) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{{{labels}}} = {v} after {limit:?}\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until exactly `n` publishers are connected (sessions wind down after a close).
pub async fn wait_publishers(node: &Node, n: f64, limit: Duration) {
    wait_metric_until(node, "estuary_publishers_active", "", |v| v == n, limit).await;
}

/// Polls a metric until it reaches at least `min`.
pub async fn wait_metric(node: &Node, name: &str, labels: &str, min: f64, limit: Duration) {
    wait_metric_until(node, name, labels, |v| v >= min, limit).await;
}

/// x264 as OBS sets it up for low latency, with a GOP of `gop` frames.
pub fn x264_args(gop: u32) -> Vec<String> {
    let gop = gop.to_string();
    [
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-tune",
        "zerolatency",
        "-g",
        &gop,
        "-keyint_min",
        &gop,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// ffmpeg pushing a 720p30 H.264 + AAC test pattern for `secs` seconds, like OBS.
pub fn ffmpeg_publish(url: &str, secs: u32, gop: u32) -> Publisher {
    let args = x264_args(gop);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ffmpeg_publish_with(url, secs, &args, "1280x720")
}

/// Like [`ffmpeg_publish`], with other video codec arguments and size.
pub fn ffmpeg_publish_with(url: &str, secs: u32, vcodec: &[&str], size: &str) -> Publisher {
    let mut cmd = ffmpeg_source(size, secs, true);
    cmd.args(vcodec).args([
        "-b:v", "2M", "-c:a", "aac", "-b:a", "128k", "-f", "mpegts", url,
    ]);
    Publisher(cmd.spawn().expect("ffmpeg"))
}

/// ffmpeg pushing a 640x360 H.264 + AAC test pattern over RTMP(S) in real time, as OBS.
pub fn ffmpeg_rtmp(url: &str, secs: u32) -> Publisher {
    let mut cmd = ffmpeg_source("640x360", secs, true);
    cmd.args(x264_args(30))
        .args([
            "-pix_fmt", "yuv420p", "-b:v", "1M", "-c:a", "aac", "-b:a", "96k",
        ])
        .args(["-f", "flv", url]);
    Publisher(cmd.spawn().expect("ffmpeg"))
}

/// An HTTP response.
pub struct Resp {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
    pub version: hyper::Version,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, k: &str) -> String {
        self.headers
            .get(k)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }
}

pub async fn get(url: &str) -> Resp {
    request(url, false).await
}

pub async fn get_h2c(url: &str) -> Resp {
    request(url, true).await
}

async fn request(url: &str, h2: bool) -> Resp {
    let mut b = Client::builder(TokioExecutor::new());
    b.http2_only(h2);
    let client: Client<_, Empty<Bytes>> = b.build_http();
    let resp = tokio::time::timeout(Duration::from_secs(20), client.get(url.parse().unwrap()))
        .await
        .expect("request timed out")
        .expect("request failed");
    into_resp(resp).await
}

/// Polls `url` until it answers 200, for at most `limit`.
pub async fn wait_ok(url: &str, limit: Duration) -> Resp {
    let deadline = Instant::now() + limit;
    loop {
        let r = get(url).await;
        if r.status == 200 {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{url} never answered 200 (last {})",
            r.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One playlist line: a tag with its value, or a URI.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    Tag(String, String),
    Uri(String),
}

/// Parses playlist text into lines (written for the tests, from RFC 8216bis §4.1).
pub fn parse_playlist(text: &str) -> Vec<Line> {
    assert!(text.starts_with("#EXTM3U"), "not a playlist: {text}");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| {
            if let Some(t) = l.strip_prefix('#') {
                if !t.starts_with("EXT") {
                    return None;
                }
                let (name, value) = t.split_once(':').unwrap_or((t, ""));
                Some(Line::Tag(name.to_owned(), value.to_owned()))
            } else {
                Some(Line::Uri(l.to_owned()))
            }
        })
        .collect()
}

/// Parses an attribute list (`KEY=VALUE,KEY="quoted, value"`) per RFC 8216bis §4.2.
pub fn attrs(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let eq = rest.find('=').expect("attribute without =");
        let key = rest[..eq].to_owned();
        assert!(
            key.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-'),
            "bad attribute name {key:?}"
        );
        rest = &rest[eq + 1..];
        let value;
        if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').expect("unterminated quoted string");
            value = r[..end].to_owned();
            rest = &r[end + 1..];
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].to_owned();
            rest = &rest[end..];
        }
        rest = rest.strip_prefix(',').unwrap_or(rest);
        assert!(
            out.insert(key.clone(), value).is_none(),
            "duplicate attribute {key}"
        );
    }
    out
}

pub fn tags<'a>(lines: &'a [Line], name: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter_map(|l| match l {
            Line::Tag(n, v) if n == name => Some(v.as_str()),
            _ => None,
        })
        .collect()
}

pub fn tag<'a>(lines: &'a [Line], name: &str) -> &'a str {
    let t = tags(lines, name);
    assert_eq!(t.len(), 1, "expected one {name}");
    t[0]
}

/// Segments listed: (msn, duration, uri), with MSNs counted from EXT-X-MEDIA-SEQUENCE
/// (and EXT-X-SKIP).
pub fn segments(lines: &[Line]) -> Vec<(u64, f64, String)> {
    let mut msn: u64 = tag(lines, "EXT-X-MEDIA-SEQUENCE").parse().unwrap();
    if let Some(s) = tags(lines, "EXT-X-SKIP").first() {
        msn += attrs(s)["SKIPPED-SEGMENTS"].parse::<u64>().unwrap();
    }
    let mut out = Vec::new();
    let mut dur = None;
    for l in lines {
        match l {
            Line::Tag(n, v) if n == "EXTINF" => {
                dur = Some(v.split(',').next().unwrap().parse::<f64>().unwrap())
            }
            Line::Uri(u) => {
                out.push((msn, dur.take().expect("URI without EXTINF"), u.clone()));
                msn += 1;
            }
            _ => {}
        }
    }
    out
}

/// The parts of each segment, the open one last: `(msn, [EXT-X-PART attributes])`, read
/// from the playlist's structure (part URIs are opaque names).
pub fn segment_parts(lines: &[Line]) -> Vec<(u64, Vec<BTreeMap<String, String>>)> {
    let mut msn: u64 = tag(lines, "EXT-X-MEDIA-SEQUENCE").parse().unwrap();
    if let Some(s) = tags(lines, "EXT-X-SKIP").first() {
        msn += attrs(s)["SKIPPED-SEGMENTS"].parse::<u64>().unwrap();
    }
    let mut out = Vec::new();
    let mut parts = Vec::new();
    for l in lines {
        match l {
            Line::Tag(n, v) if n == "EXT-X-PART" => parts.push(attrs(v)),
            Line::Uri(_) => {
                out.push((msn, std::mem::take(&mut parts)));
                msn += 1;
            }
            _ => {}
        }
    }
    if !parts.is_empty() {
        out.push((msn, parts));
    }
    out
}

/// `(msn, part)` just after the newest listed part: what a blocking reload asks for next.
pub fn next_part_target(lines: &[Line]) -> (u64, u64) {
    let (msn, parts) = segment_parts(lines)
        .into_iter()
        .rev()
        .find(|(_, p)| !p.is_empty())
        .expect("a listed part");
    (msn, parts.len() as u64)
}

/// One step of a player following a rendition: the hinted part of `lines` and the
/// blocking reload for the part after the newest listed one, asked for at once, as
/// hls.js does. Returns the hinted URI, the `(msn, part)` reloaded for, and both answers.
pub async fn hint_and_reload(
    url: &str,
    base: &str,
    lines: &[Line],
) -> (String, (u64, u64), Resp, Resp) {
    let hint = attrs(tag(lines, "EXT-X-PRELOAD-HINT"))["URI"].clone();
    let (m, p) = next_part_target(lines);
    let (part_url, reload_url) = (
        format!("{base}{hint}"),
        format!("{url}?_HLS_msn={m}&_HLS_part={p}"),
    );
    let (part, next) = tokio::join!(get(&part_url), get(&reload_url));
    (hint, (m, p), part, next)
}

/// Runs ffprobe on a file and returns `codec_name,width,height,frames` of the first
/// stream.
pub fn ffprobe(path: &std::path::Path) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "0"])
        .args([
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames,nb_read_packets",
        ])
        .args(["-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe");
    assert!(
        out.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Reads one counter or gauge value from `/metrics`, summed over label sets that contain
/// `labels` (e.g. `reason="unknown_stream"`).
pub async fn metric(node: &Node, name: &str, labels: &str) -> f64 {
    let text = get(&node.url("/metrics")).await.text();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            let n = l.split(['{', ' ']).next().unwrap();
            n == name && l.contains(labels)
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// Reads a client response whole into a [`Resp`].
pub async fn into_resp(resp: hyper::Response<hyper::body::Incoming>) -> Resp {
    let status = resp.status().as_u16();
    let version = resp.version();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Resp {
        status,
        headers,
        body,
        version,
    }
}

/// ffmpeg's HLS demuxer (what ffplay uses) reads `secs` of the first video track from
/// `url` frame by frame; returns the number of frames. Fails when ffmpeg does.
pub async fn hls_frames(url: &str, secs: u32) -> usize {
    let out = tokio::time::timeout(
        Duration::from_secs(60 + u64::from(secs)),
        tokio::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-i", url])
            .args([
                "-t",
                &secs.to_string(),
                "-map",
                "0:v:0",
                "-f",
                "framemd5",
                "-",
            ])
            .output(),
    )
    .await
    .expect("ffmpeg hung")
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count()
}

/// Runs `cmd` to the end and returns its standard output; fails with its standard error
/// when it fails.
pub fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run the command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Mints an interaction token for `stream` with the `estuary token` subcommand, reading
/// the secret from `node`'s config.
pub fn mint_token(node: &Node, role: &str, user: &str, name: &str, stream: &str) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_estuary"));
    cmd.args(["token", "--role", role, "--user", user, "--name", name])
        .args(["--stream", stream, "--config"])
        .arg(node.dir.join("estuary.toml"));
    let token = stdout_of(&mut cmd).trim().to_owned();
    assert!(token.split('.').count() == 3, "not a token: {token:?}");
    token
}
