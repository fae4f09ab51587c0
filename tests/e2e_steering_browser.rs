//! Content steering in a real browser: hls.js in Debian's Chromium (driven by
//! playwright-core, `web/tests/steering.mjs`) plays the watch page of edge `a`, pathway
//! `a`; the test stops edge `a`; hls.js must move to pathway `b` (edge `b`) and keep
//! playing. The steering manifests come from the origin (`steering.server`), which
//! probes both edges and puts the stopped one last; or, by default, from edge `a` itself,
//! and then hls.js moves on its own errors. Its own test binary, its two tests one after
//! the other, so a browser never shares the CPU with another.
//!
//! Needs `/usr/bin/chromium`, `node` and `npm ci` in `web/` (scripts/setup.sh --test).

mod common;
mod edge_support;

use std::{process::Stdio, time::Duration};

use common::*;
use edge_support::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hlsjs_moves_to_the_other_pathway_when_its_edge_stops() {
    moves_when_edge_a_stops(true).await;
}

/// With no `steering.server`, edge `a` answers its own viewers' manifests: once it is
/// gone, hls.js moves on its own errors, down the last `PATHWAY-PRIORITY` it got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hlsjs_moves_on_its_errors_when_the_stopped_edge_was_its_steering_server() {
    moves_when_edge_a_stops(false).await;
}

/// hls.js on edge `a`'s watch page; edge `a` is killed; hls.js must be on edge `b` and
/// playing. `steering_at_origin`: the origin answers the steering manifests.
async fn moves_when_edge_a_stops(steering_at_origin: bool) {
    // One browser at a time: a starved browser stalls whatever the server does.
    let _one = BROWSER.lock().await;
    let (web, pages) = browser::web_pages();
    let (pa, pb) = (free_port(), free_port());
    let origin = Node::start(
        "steer-br-origin",
        &format!("[streams.demo]\n{}", steering_cfg(pa, pb, "", "")),
    );
    let server = if steering_at_origin {
        format!("server = \"http://{}\"\n", origin.http)
    } else {
        String::new()
    };
    let edge = |tag: &str, port: u16, id: &str| {
        Node::start_at(
            tag,
            port,
            &format!(
                "{pages}{}{}",
                upstream_cfg(&[&origin], ""),
                steering_cfg(pa, pb, id, &server)
            ),
        )
    };
    let a = edge("steer-br-a", pa, "a");
    let b = edge("steer-br-b", pb, "b");
    let _pub = small_publish(&origin, "demo", 150);
    wait_ok(
        &a.url("/live/demo/source/index.m3u8"),
        Duration::from_secs(30),
    )
    .await;

    let mut script = tokio::process::Command::new("node")
        .arg(web.join("tests/steering.mjs"))
        .current_dir(&web)
        .args(["--url", &a.url("/watch/demo?q=source")])
        .args(["--from", "a", "--from-host", &a.http.to_string()])
        .args(["--to", "b", "--to-host", &b.http.to_string()])
        .args(["--secs", "45"])
        .args([
            "--manifest-after-kill",
            if steering_at_origin { "yes" } else { "no" },
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node");
    let mut stdin = script.stdin.take().unwrap();
    let mut out = BufReader::new(script.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    let playing = next_line(&mut out, &mut seen, "PLAYING ").await;
    let Some(playing) = playing else {
        let err = script.wait_with_output().await.unwrap();
        panic!(
            "hls.js never played on pathway a: {seen}{}",
            String::from_utf8_lossy(&err.stderr)
        );
    };
    println!("before: {playing}");
    // Stop edge a, as a crashed node: killed, no drain.
    drop(a);
    stdin.write_all(b"killed\n").await.unwrap();
    let result = next_line(&mut out, &mut seen, "RESULT ").await;
    let status = script.wait().await.unwrap();
    let Some(result) = result else {
        panic!("no RESULT from steering.mjs ({status}): {seen}");
    };
    println!("after: {result}");
    let v: serde_json::Value = serde_json::from_str(&result).unwrap();
    assert_eq!(v["switched"], true, "{result}\n{seen}");
    assert_eq!(v["pathway"], "b", "{result}");
    assert!(
        v["level_url"]
            .as_str()
            .is_some_and(|u| u.starts_with(&format!("http://{}/live/demo/", b.http))),
        "{result}"
    );
    assert!(v["advanced_s"].as_f64().unwrap() >= 4.0, "{result}");
    assert_eq!(v["fatal_errors"], 0, "{result}");
    assert!(status.success(), "{result}");
    // The origin and edge b saw edge a go down.
    for n in [&origin, &b] {
        let v = metric(n, "estuary_steering_pathway_health", "pathway=\"a\"").await;
        assert_eq!(v, 2.0, "{result}");
    }
    // Edge b served hls.js's requests: it pulled the stream from the origin.
    assert!(metric(&b, "estuary_upstream_requests_total", "result=\"ok\"").await > 0.0);
}

type Lines = tokio::io::Lines<BufReader<tokio::process::ChildStdout>>;

/// The rest of the next line of the script starting with `prefix`; every line read is
/// kept in `seen`. `None` when the script ends or says nothing for two minutes.
async fn next_line(out: &mut Lines, seen: &mut String, prefix: &str) -> Option<String> {
    // Bounded: the script's own limits are shorter than this.
    for _ in 0..1000 {
        let line = tokio::time::timeout(Duration::from_secs(120), out.next_line())
            .await
            .ok()?
            .ok()??;
        seen.push_str(&line);
        seen.push('\n');
        if let Some(rest) = line.strip_prefix(prefix) {
            return Some(rest.to_owned());
        }
    }
    None
}
