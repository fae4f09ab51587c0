//! The exact bytes through the impairment relay. ffmpeg publishes a fixed 5 s MPEG-TS file
//! (`-re -c copy`; the tee muxer writes the same bytes to a file) through the relay at 0 %
//! loss, 50 ms RTT and reordering jitter, to srt-tokio's listener set up as the node sets it
//! up ([`estuary::ingest::srt_listener`]). Each run must deliver what ffmpeg sent, byte for
//! byte, up to the last moment: ffmpeg's close loses the final ~0.1 s, relayed or not.
//!
//! `scripts/srt-relay-bytes.sh RUNS LATENCY_MS [tlpktdrop]` repeats it; with `tlpktdrop` it
//! uses srt-tokio's default receiver (too-late drop on) and only reports: the defect README
//! describes ("Lossy contribution links").

mod common;

use std::{sync::atomic::Ordering, time::Duration};

use common::{impair::*, *};
use futures_util::StreamExt;

/// One publish through the relay; returns the bytes sent and the bytes delivered.
async fn run(
    input: &std::path::Path,
    sent: &std::path::Path,
    latency: Duration,
    drop: bool,
    loss: f64,
    seed: u64,
) -> (Vec<u8>, Vec<u8>, u64) {
    let (_listener, mut incoming, addr) = if drop {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        let (l, i) = srt_tokio::SrtListener::builder()
            .latency(latency)
            .socket(udp)
            .bind(addr)
            .await
            .unwrap();
        (l, i, addr)
    } else {
        estuary::ingest::srt_listener(latency).await.unwrap()
    };
    let imp = Impairment {
        loss,
        delay: Duration::from_millis(25),
        jitter: Duration::from_millis(4),
    };
    let relay = Relay::start(addr, imp, seed).await;
    let tee = format!(
        "[f=mpegts]srt\\://{}?streamid=demo|[f=mpegts]{}",
        relay.addr,
        sent.display()
    );
    let mut ff = ffmpeg_quiet(true);
    ff.arg("-i")
        .arg(input)
        .args(["-c", "copy", "-map", "0", "-f", "tee", &tee]);
    let mut ff = ff.spawn().expect("ffmpeg");
    let req = tokio::time::timeout(Duration::from_secs(10), incoming.incoming().next())
        .await
        .expect("a caller")
        .expect("listener open");
    let mut socket = req.accept(None).await.unwrap();
    let mut got = Vec::new();
    // Bounded: the file lasts 5 s; the socket ends when ffmpeg closes.
    while let Ok(Some(Ok((_, data)))) =
        tokio::time::timeout(Duration::from_secs(3), socket.next()).await
    {
        got.extend_from_slice(&data);
        assert!(got.len() < 64 << 20, "runaway");
    }
    let _ = tokio::task::spawn_blocking(move || ff.wait()).await;
    let late = relay.max_late_us.load(Ordering::Relaxed) / 1000;
    (std::fs::read(sent).unwrap(), got, late)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_bytes_arrive_exactly() {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let runs = env("ESTUARY_RELAY_RUNS", 1);
    let latency = Duration::from_millis(env("ESTUARY_RELAY_LATENCY_MS", 120));
    let drop = std::env::var("ESTUARY_RELAY_TLPKTDROP").is_ok();
    let loss = env("ESTUARY_RELAY_LOSS_PERCENT", 0) as f64 / 100.0;
    let dir = tempdir("relaybytes");
    let input = dir.join("in.ts");
    let mut enc = ffmpeg_source("640x360", 5, false);
    enc.args(x264_args(30))
        .args(["-b:v", "2M", "-c:a", "aac", "-b:a", "128k", "-f", "mpegts"])
        .arg(&input);
    assert!(enc.status().unwrap().success());
    let mut damaged = 0;
    for i in 0..runs {
        let (sent, got, relay_late) =
            run(&input, &dir.join("sent.ts"), latency, drop, loss, 7 + i).await;
        let differs = sent.iter().zip(&got).position(|(a, b)| a != b);
        let short = sent.len().saturating_sub(got.len());
        println!(
            "run {i}: sent {} B, delivered {} B, first difference at {differs:?}, short by {short} B, relay late by up to {relay_late} ms",
            sent.len(),
            got.len()
        );
        // Damaged: a difference, or more missing than the close loses (~0.1 s, 40 KB).
        if differs.is_some() || short > 64 * 1024 {
            damaged += 1;
        }
    }
    println!(
        "damaged runs: {damaged} of {runs} (latency {latency:?}, too-late drop {})",
        if drop { "on" } else { "off" }
    );
    if !drop {
        assert_eq!(damaged, 0);
    }
}
