//! `ws_load idle`: many idle WebSocket connections, and the node's RSS per connection.

use std::{net::IpAddr, sync::Arc, time::Duration};

use anyhow::{bail, Result};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::{connect, count_ready, rss_kb};

/// An idle run's parameters.
pub struct Idle {
    pub addr: String,
    pub stream: String,
    pub conns: usize,
    pub pid: u32,
    pub bind: Vec<IpAddr>,
    pub parallel: usize,
    pub hold: Duration,
}

pub async fn run(p: Idle) -> Result<()> {
    let url = format!("ws://{}/live/{}/events", p.addr, p.stream);
    let Some(rss0) = rss_kb(p.pid) else {
        bail!("cannot read the RSS of pid {}", p.pid);
    };
    let sem = Arc::new(tokio::sync::Semaphore::new(p.parallel.max(1)));
    let stop = CancellationToken::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<bool>(p.conns.max(1));
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..p.conns {
        let src = (!p.bind.is_empty()).then(|| p.bind[i % p.bind.len()]);
        let (url, addr, sem, ready, stop) = (
            url.clone(),
            p.addr.clone(),
            sem.clone(),
            ready_tx.clone(),
            stop.clone(),
        );
        tasks.spawn(async move {
            let permit = sem.acquire_owned().await;
            let ws = tokio::time::timeout(Duration::from_secs(30), connect(&url, &addr, src)).await;
            drop(permit);
            let Ok(Ok(mut ws)) = ws else {
                let _ = ready.send(false).await;
                return false;
            };
            let _ = ready.send(true).await;
            drop(ready);
            // Idle, but reading: tungstenite answers the node's pings while it reads.
            let mut alive = true;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    m = ws.next() => match m {
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                            alive = false;
                            break;
                        }
                        Some(Ok(_)) => {}
                    }
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), ws.close(None)).await;
            alive
        });
    }
    drop(ready_tx);
    let (ok, failed) = count_ready(&mut ready_rx, p.conns).await;
    let open_secs = started.elapsed().as_secs_f64();
    eprintln!("opened {ok} connections ({failed} failed) in {open_secs:.1}s");
    // Let the node finish the upgrades and settle.
    tokio::time::sleep(p.hold).await;
    let rss1 = rss_kb(p.pid).unwrap_or(rss0);
    stop.cancel();
    let mut survived = 0;
    while let Some(r) = tasks.join_next().await {
        if r.unwrap_or(false) {
            survived += 1;
        }
    }
    // Give the node time to drop the closed connections' state.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss2 = rss_kb(p.pid).unwrap_or(rss1);
    let per = if ok > 0 {
        rss1.saturating_sub(rss0) as f64 * 1024.0 / ok as f64
    } else {
        f64::NAN
    };
    println!("idle connections   {ok} open ({failed} failed, {survived} alive at the end), opened in {open_secs:.1}s");
    println!(
        "node RSS           {rss0} KiB before, {rss1} KiB with {ok} open, {rss2} KiB after closing"
    );
    println!(
        "RSS per connection {per:.0} bytes ({:.2} KiB)",
        per / 1024.0
    );
    println!(
        "RESULT idle conns={ok} failed={failed} rss_before_kib={rss0} rss_open_kib={rss1} rss_after_kib={rss2} bytes_per_conn={per:.0}"
    );
    if ok == 0 {
        bail!("no connection opened");
    }
    Ok(())
}
