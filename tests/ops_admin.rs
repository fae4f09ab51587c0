//! The admin API against the real binary, driven by `estuary admin …` run as a process
//! (and curl for the raw refusals): auth, publishers with statistics, kicks of an SRT
//! and an RTMP publisher (ffmpeg, default options) with and without a ban, HLS and
//! WebSocket viewers, cache occupancy, the redacted config, and drain.

mod common;
mod interact_support;

use std::{process::Stdio, time::Duration};

use common::*;
use serde_json::Value;

const TOKEN: &str = "admin-test-token-0123456789";
const PASSPHRASE: &str = "secret-passphrase-42";
const RTMP_KEY: &str = "secret-rtmp-key-42";
const INTERACT_SECRET: &str = "secret-interact-0123456789";
const UPSTREAM_SECRET: &str = "secret-upstream-42";

/// What an `estuary admin` run printed.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{e}: {} / {}", self.stdout, self.stderr))
    }
}

/// Runs `estuary admin ARGS` with `env`, for at most 30 s.
async fn estuary_admin(args: &[&str], env: &[(&str, &str)]) -> Run {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_estuary"))
        .arg("admin")
        .args(args)
        .env_remove("ESTUARY_ADMIN_TOKEN")
        .env_remove("ESTUARY_ADMIN_URL")
        .env_remove("ESTUARY_CONFIG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("estuary admin");
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("estuary admin did not finish")
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `estuary admin --url NODE --token TOKEN ARGS`, which must succeed.
async fn admin_ok(node: &Node, args: &[&str]) -> Run {
    let url = node.url("");
    let mut all = vec!["--url", url.as_str(), "--token", TOKEN];
    all.extend_from_slice(args);
    let r = estuary_admin(&all, &[]).await;
    assert_eq!(
        r.code, 0,
        "estuary admin {args:?}: {}{}",
        r.stdout, r.stderr
    );
    r
}

/// `estuary admin … ARGS --json`, parsed.
async fn admin_json(node: &Node, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    admin_ok(node, &all).await.json()
}

/// curl `method url` with an optional bearer token: (status, body).
fn curl(method: &str, url: &str, token: Option<&str>) -> (u16, String) {
    let mut cmd = std::process::Command::new("curl");
    cmd.args([
        "-s",
        "--max-time",
        "10",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd.arg(url).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_owned())
}

fn config() -> String {
    format!(
        "admin.token = \"{TOKEN}\"\ninteract.token_secret = \"{INTERACT_SECRET}\"\n\
         upstream.secret = \"{UPSTREAM_SECRET}\"\n\
         [ladder]\npassthrough = true\nrungs = []\n\
         [streams.a]\n[streams.b]\n[streams.secure]\npassphrase = \"{PASSPHRASE}\"\n\
         rtmp_key = \"{RTMP_KEY}\"\n"
    )
}

fn publisher<'a>(list: &'a Value, stream: &str) -> Option<&'a Value> {
    list["publishers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["stream"] == stream)
}

async fn wait_segments(node: &Node, stream: &str, n: usize) -> Vec<(u64, f64, String)> {
    let url = node.url(&format!("/live/{stream}/source/index.m3u8"));
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let r = get(&url).await;
        if r.status == 200 {
            let segs = segments(&parse_playlist(&r.text()));
            if segs.len() >= n {
                return segs;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{url}: fewer than {n} segments (last {})\n{}",
            r.status,
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_the_redacted_config() {
    let node = Node::start("admin-auth", &config());
    let url = node.url("");
    // curl: no token, a wrong token → 401 in the API's JSON shape.
    for token in [None, Some("wrong-token-wrong-token")] {
        let (status, body) = curl("GET", &node.url("/admin/publishers"), token);
        assert_eq!(status, 401, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["code"], "unauthorized", "{body}");
        assert!(v["message"].as_str().unwrap().contains("Bearer"), "{body}");
    }
    let (status, body) = curl("GET", &node.url("/admin/nothing"), Some(TOKEN));
    assert_eq!((status, body.contains("not_found")), (404, true), "{body}");
    let (status, body) = curl("GET", &node.url("/admin/drain"), Some(TOKEN));
    assert_eq!(
        (status, body.contains("method_not_allowed")),
        (405, true),
        "{body}"
    );
    // The CLI: a wrong token is refused (exit 1, the API's code); none at all is a usage
    // error (64); an unreachable node is 69.
    let r = estuary_admin(&["--url", &url, "--token", "wrong", "publishers"], &[]).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("401") && r.stderr.contains("unauthorized"),
        "{}",
        r.stderr
    );
    let r = estuary_admin(&["--url", &url, "publishers"], &[]).await;
    assert_eq!(r.code, 64, "{}", r.stderr);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let r = estuary_admin(
        &[
            "--url",
            &format!("http://{closed}"),
            "--token",
            TOKEN,
            "cache",
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, 69, "{}", r.stderr);

    // The config in force, token from the environment: every secret redacted.
    let r = estuary_admin(
        &["--url", &url, "config"],
        &[("ESTUARY_ADMIN_TOKEN", TOKEN)],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    for secret in [
        TOKEN,
        PASSPHRASE,
        RTMP_KEY,
        INTERACT_SECRET,
        UPSTREAM_SECRET,
    ] {
        assert!(!r.stdout.contains(secret), "{secret} shown:\n{}", r.stdout);
    }
    let cfg = r.json();
    assert_eq!(cfg["admin"]["token"], "<redacted>");
    assert_eq!(cfg["streams"]["secure"]["passphrase"], "<redacted>");
    assert_eq!(cfg["streams"]["secure"]["rtmp_key"], "<redacted>");
    assert_eq!(cfg["interact"]["token_secret"], "<redacted>");
    assert_eq!(cfg["upstream"]["secret"], "<redacted>");
    assert!(cfg["streams"]["a"]["passphrase"].is_null());
    assert_eq!(cfg["http"]["listen"], "127.0.0.1:0");
    assert_eq!(cfg["ladder"]["passthrough"], true);
    // The token can come from --config too (the URL too, but this one listens on :0).
    let r = estuary_admin(
        &[
            "--config",
            node.dir.join("estuary.toml").to_str().unwrap(),
            "--url",
            &url,
            "viewers",
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.starts_with("STREAM"), "{}", r.stdout);

    // Without a token configured the admin API is off.
    let off = Node::start("admin-off", "[streams.a]\n");
    let (status, body) = curl("GET", &off.url("/admin/publishers"), Some(TOKEN));
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("admin_disabled"), "{body}");
    let r = estuary_admin(&["--url", &off.url(""), "--token", TOKEN, "cache"], &[]).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("admin_disabled"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_listed_then_kicked_over_srt_and_rtmp() {
    let node = Node::start("admin-kick", &config());
    let mut srt = ffmpeg_publish(&srt_url(&node, "a", None), 120, 30);
    let mut rtmp = ffmpeg_rtmp(
        &format!("rtmp://{}/live/b", node.rtmp.expect("RTMP listens")),
        120,
    );
    wait_publishers(&node, 2.0, Duration::from_secs(30)).await;
    let before = wait_segments(&node, "a", 2).await;
    wait_segments(&node, "b", 1).await;

    // Both listed with their statistics.
    let list = admin_json(&node, &["publishers"]).await;
    let a = publisher(&list, "a").unwrap_or_else(|| panic!("{list}"));
    assert_eq!(a["protocol"], "srt", "{a}");
    assert!(
        a["remote"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{a}"
    );
    for (k, v) in ["bytes", "bitrate_kbps", "uptime_s", "parts"]
        .map(|k| (k, &a[k]))
        .into_iter()
        .chain([("srt.latency_ms", &a["srt"]["latency_ms"])])
    {
        assert!(v.as_f64().unwrap() > 0.0, "{k}: {a}");
    }
    assert!(
        a["srt"]["rtt_ms"].is_number() && a["srt"]["lost"].is_number(),
        "{a}"
    );
    let b = publisher(&list, "b").unwrap_or_else(|| panic!("{list}"));
    assert_eq!(b["protocol"], "rtmp", "{b}");
    assert!(b["srt"].is_null(), "{b}");
    let table = admin_ok(&node, &["publishers"]).await.stdout;
    assert!(table.starts_with("STREAM"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("a ") && l.contains("srt")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("b ") && l.contains("rtmp")),
        "{table}"
    );

    // Kick the SRT publisher with a ban: its connection closes, the RTMP one stays.
    let kicked = admin_ok(&node, &["kick", "a", "--ban", "60s"]).await.stdout;
    assert!(
        kicked.starts_with("kicked a (srt from 127.0.0.1:"),
        "{kicked}"
    );
    assert!(kicked.contains("refused for 60s"), "{kicked}");
    wait_publishers(&node, 1.0, Duration::from_secs(10)).await;
    assert!(
        srt.wait_exit(Duration::from_secs(15)).is_some(),
        "ffmpeg SRT kept running"
    );
    assert_eq!(
        metric(&node, "estuary_publishers_kicked_total", "protocol=\"srt\"").await,
        1.0
    );
    let list = admin_json(&node, &["publishers"]).await;
    assert!(publisher(&list, "a").is_none(), "{list}");
    let b_bytes = publisher(&list, "b").unwrap()["bytes"].as_u64().unwrap();
    assert_eq!(list["bans"][0]["stream"], "a", "{list}");
    assert!(
        node.log().contains("publisher kicked"),
        "no log line of the kick"
    );
    // The kicked stream's playlist stays valid.
    assert_eq!(
        get(&node.url("/live/a/source/index.m3u8")).await.status,
        200
    );

    // While banned, the encoder's reconnect is refused at the SRT handshake.
    let _refused = ffmpeg_publish(&srt_url(&node, "a", None), 30, 30);
    wait_metric(
        &node,
        "estuary_srt_rejected_total",
        "reason=\"banned\"",
        1.0,
        Duration::from_secs(15),
    )
    .await;
    // The ban is the stream's, whatever the protocol: RTMP refuses it too.
    let _refused_rtmp = ffmpeg_rtmp(&format!("rtmp://{}/live/a", node.rtmp.unwrap()), 30);
    wait_metric(
        &node,
        "estuary_rtmp_rejected_total",
        "reason=\"banned\"",
        1.0,
        Duration::from_secs(15),
    )
    .await;
    drop(_refused_rtmp);
    let r = admin_ok(&node, &["unban", "a"]).await;
    assert!(r.stdout.contains("ban lifted"), "{}", r.stdout);
    drop(_refused);
    // Lifted: it publishes again and the playlist continues (numbering keeps counting).
    let _srt = ffmpeg_publish(&srt_url(&node, "a", None), 120, 30);
    wait_publishers(&node, 2.0, Duration::from_secs(30)).await;
    let last_before = before.last().unwrap().0;
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let text = get(&node.url("/live/a/source/index.m3u8")).await.text();
        let lines = parse_playlist(&text);
        let after = segments(&lines);
        if !tags(&lines, "EXT-X-DISCONTINUITY").is_empty()
            && after.last().is_some_and(|s| s.0 > last_before + 1)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "playlist did not continue:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The RTMP publisher is undisturbed, then kicked too (no ban).
    let list = admin_json(&node, &["publishers"]).await;
    assert!(
        publisher(&list, "b").unwrap()["bytes"].as_u64().unwrap() > b_bytes,
        "{list}"
    );
    let kicked = admin_json(&node, &["kick", "b"]).await;
    assert_eq!(kicked["protocol"], "rtmp", "{kicked}");
    assert_eq!(kicked["closed"], true, "{kicked}");
    assert_eq!(kicked["ban_s"], 0, "{kicked}");
    wait_publishers(&node, 1.0, Duration::from_secs(10)).await;
    assert!(
        rtmp.wait_exit(Duration::from_secs(15)).is_some(),
        "ffmpeg RTMP kept running"
    );
    assert_eq!(
        metric(
            &node,
            "estuary_publishers_kicked_total",
            "protocol=\"rtmp\""
        )
        .await,
        1.0
    );
    let list = admin_json(&node, &["publishers"]).await;
    assert!(publisher(&list, "b").is_none(), "{list}");
    assert_eq!(publisher(&list, "a").unwrap()["protocol"], "srt", "{list}");
    assert!(list["bans"].as_array().unwrap().is_empty(), "{list}");

    // Nothing to kick.
    let r = estuary_admin(
        &["--url", &node.url(""), "--token", TOKEN, "kick", "b"],
        &[],
    )
    .await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("no_publisher"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_cache_and_drain() {
    let node = Node::start("admin-viewers", &config());
    let _p = ffmpeg_publish(&srt_url(&node, "a", None), 120, 30);
    wait_segments(&node, "a", 2).await;
    let media = node.url("/live/a/source/index.m3u8");

    // Two HLS clients (curl, and ffprobe playing the stream) and a WebSocket viewer.
    for _ in 0..3 {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "10",
                &media,
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    }
    let probe = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
        ])
        .arg(node.url("/live/a/index.m3u8"))
        .output()
        .expect("ffprobe");
    assert!(
        String::from_utf8_lossy(&probe.stdout).contains("h264"),
        "{probe:?}"
    );
    let ws_url = format!("ws://{}/live/a/events", node.http);
    let _ws = interact_support::Client::connect(&ws_url).await.unwrap();

    let v = admin_json(&node, &["viewers"]).await;
    let a = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stream"] == "a")
        .unwrap_or_else(|| panic!("{v}"))
        .clone();
    assert!(a["hls"].as_u64().unwrap() >= 2, "{v}");
    let by_rendition: u64 = a["renditions"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(by_rendition, a["hls"].as_u64().unwrap(), "{v}");
    assert!(a["renditions"]["source"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(a["websocket"], 1, "{v}");
    assert_eq!(v["window_s"], 15, "{v}");
    let table = admin_ok(&node, &["viewers"]).await.stdout;
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("a ") && l.contains("source=")),
        "{table}"
    );

    // The cache holds the stream's media.
    let c = admin_json(&node, &["cache"]).await;
    assert!(c["total"]["entries"].as_u64().unwrap() > 0, "{c}");
    assert!(c["total"]["bytes"].as_u64().unwrap() > 0, "{c}");
    assert!(c["streams"]["a"]["bytes"].as_u64().unwrap() > 0, "{c}");
    assert!(
        c["max_bytes"].as_u64().unwrap() >= c["total"]["bytes"].as_u64().unwrap(),
        "{c}"
    );
    let table = admin_ok(&node, &["cache"]).await.stdout;
    assert!(table.lines().any(|l| l.starts_with("a ")), "{table}");
    assert!(table.lines().any(|l| l.starts_with("(total)")), "{table}");

    // Drain from the CLI: /readyz goes 503 at once.
    assert_eq!(get(&node.url("/readyz")).await.status, 200);
    let r = admin_ok(&node, &["drain"]).await;
    assert!(r.stdout.starts_with("draining"), "{}", r.stdout);
    assert_eq!(get(&node.url("/readyz")).await.status, 503);
}
