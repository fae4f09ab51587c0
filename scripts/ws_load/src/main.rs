//! Load generator for the interaction channel.
//!
//! `ws_load run` opens `--clients` WebSocket clients in one room, then one host connection
//! publishes chat at `--rate` messages/s for `--secs` seconds. Each message carries its send
//! time; every client timestamps deliveries. Prints deliveries/s, p50/p99 delivery latency
//! and, with `--pid`, the node's RSS per idle connection.
//!
//! `ws_load serve` runs an in-process node (interaction routes only) for when the `estuary`
//! binary is not at hand; it prints `{"http":"ADDR","pid":PID}`.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the load against a node.
    Run {
        /// Node HTTP address, e.g. 127.0.0.1:8080.
        #[arg(long)]
        addr: String,
        /// Stream (room) name.
        #[arg(long, default_value = "load")]
        stream: String,
        /// Viewer connections.
        #[arg(long, default_value_t = 10_000)]
        clients: usize,
        /// Chat messages per second from the publisher.
        #[arg(long, default_value_t = 50)]
        rate: u64,
        /// Publishing time.
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Token secret of the node (`interact.token_secret`), to mint the publisher's host token.
        #[arg(long)]
        secret: String,
        /// Node pid, to read its RSS from /proc.
        #[arg(long)]
        pid: Option<u32>,
        /// Concurrent connection attempts.
        #[arg(long, default_value_t = 200)]
        connect_parallel: usize,
    },
    /// Serve an in-process node on 127.0.0.1 with a load-friendly config.
    Serve {
        /// Token secret.
        #[arg(long)]
        secret: String,
    },
}

/// Latency histogram: 100 µs buckets up to 10 s.
struct Hist {
    buckets: Vec<AtomicU64>,
}

const BUCKET_US: u64 = 100;

impl Hist {
    fn new() -> Self {
        Self {
            buckets: (0..100_001).map(|_| AtomicU64::new(0)).collect(),
        }
    }
    fn add(&self, us: u64) {
        let i = ((us / BUCKET_US) as usize).min(self.buckets.len() - 1);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }
    fn quantile(&self, q: f64) -> f64 {
        let total: u64 = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum();
        let want = (total as f64 * q).ceil() as u64;
        let mut acc = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            acc += b.load(Ordering::Relaxed);
            if acc >= want.max(1) {
                return (i as u64 * BUCKET_US + BUCKET_US / 2) as f64 / 1000.0;
            }
        }
        f64::NAN
    }
}

fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Send time (µs since `t0`) from a chat frame whose text is `L<us>:...`, without a JSON parse.
fn sent_us(text: &str) -> Option<u64> {
    let i = text.find("\"text\":\"L")? + 9;
    let rest = &text[i..];
    let end = rest.find(':')?;
    rest[..end].parse().ok()
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Run {
            addr,
            stream,
            clients,
            rate,
            secs,
            secret,
            pid,
            connect_parallel,
        } => {
            let token = estuary::interact::mint_token(
                &secret,
                estuary::interact::Role::Host,
                "load-publisher",
                "Load",
                Some(stream.as_str()),
                Duration::from_secs(3600),
            )?;
            run(
                addr,
                stream,
                clients,
                rate,
                secs,
                token,
                pid,
                connect_parallel,
            )
            .await
        }
        Cmd::Serve { secret } => serve(secret).await,
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    addr: String,
    stream: String,
    clients: usize,
    rate: u64,
    secs: u64,
    token: String,
    pid: Option<u32>,
    parallel: usize,
) -> Result<()> {
    let url = format!("ws://{addr}/live/{stream}/events");
    let t0 = Instant::now();
    let hist = Arc::new(Hist::new());
    let delivered = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let rss0 = pid.and_then(rss_kb);
    let sem = Arc::new(tokio::sync::Semaphore::new(parallel));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<bool>(clients.max(1));
    let stop = tokio_util::sync::CancellationToken::new();
    for _ in 0..clients {
        let (url, hist, delivered, dropped, sem, ready, stop) = (
            url.clone(),
            hist.clone(),
            delivered.clone(),
            dropped.clone(),
            sem.clone(),
            ready_tx.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let permit = sem.acquire_owned().await;
            let ws = tokio::time::timeout(
                Duration::from_secs(30),
                tokio_tungstenite::connect_async(&url),
            )
            .await;
            drop(permit);
            let mut ws = match ws {
                Ok(Ok((ws, _))) => ws,
                _ => {
                    let _ = ready.send(false).await;
                    return;
                }
            };
            let _ = ready.send(true).await;
            drop(ready);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    m = ws.next() => match m {
                        Some(Ok(Message::Text(t))) => {
                            if let Some(us) = sent_us(t.as_str()) {
                                let now = t0.elapsed().as_micros() as u64;
                                hist.add(now.saturating_sub(us));
                                delivered.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => {
                            dropped.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }
            }
        });
    }
    drop(ready_tx);
    let mut ok = 0;
    let mut failed = 0;
    // Each client reports once; the senders live on in the client tasks.
    for _ in 0..clients {
        match ready_rx.recv().await {
            Some(true) => ok += 1,
            Some(false) => failed += 1,
            None => break,
        }
    }
    let connect_secs = t0.elapsed().as_secs_f64();
    eprintln!("connected {ok} clients ({failed} failed) in {connect_secs:.1}s");
    // Let the node settle, then read its idle RSS.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss1 = pid.and_then(rss_kb);
    let (host, _) = tokio_tungstenite::connect_async(format!("{url}?token={token}"))
        .await
        .context("publisher connect")?;
    // Drain the publisher's own frames so it is never a slow consumer.
    let (mut sink, mut src) = host.split();
    tokio::spawn(async move { while let Some(Ok(_)) = src.next().await {} });
    let before = delivered.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    let total = rate * secs;
    for i in 0..total {
        tick.tick().await;
        let us = t0.elapsed().as_micros() as u64;
        let f = format!(
            r#"{{"v":1,"type":"chat","text":"L{us}:message {i} from the load publisher"}}"#
        );
        sink.send(Message::text(f)).await?;
    }
    let pub_secs = start.elapsed().as_secs_f64();
    // Wait (bounded) for the tail of deliveries.
    let expect = before + total * ok as u64;
    for _ in 0..100 {
        if delivered.load(Ordering::Relaxed) >= expect {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs_all = start.elapsed().as_secs_f64();
    stop.cancel();
    let got = delivered.load(Ordering::Relaxed) - before;
    println!(
        "clients            {ok} (failed {failed}, dropped by server {})",
        dropped.load(Ordering::Relaxed)
    );
    println!("published          {total} msgs at {rate}/s in {pub_secs:.2}s");
    println!("deliveries         {got} of {expect} expected");
    println!("deliveries/s       {:.0}", got as f64 / secs_all);
    println!("latency p50        {:.2} ms", hist.quantile(0.50));
    println!("latency p99        {:.2} ms", hist.quantile(0.99));
    println!("latency max bucket {:.2} ms", hist.quantile(1.0));
    if let (Some(a), Some(b)) = (rss0, rss1) {
        println!("node RSS           {a} KiB idle before, {b} KiB with {ok} clients");
        if ok > 0 {
            println!(
                "RSS per connection {:.2} KiB",
                (b.saturating_sub(a)) as f64 / ok as f64
            );
        }
    }
    if ok == 0 {
        bail!("no client connected");
    }
    Ok(())
}

async fn serve(secret: String) -> Result<()> {
    use estuary::interact::{Interact, InteractConfig, WallClock};
    let cfg: InteractConfig = toml::from_str(&format!(
        "token_secret = \"{secret}\"\nconn_rate_per_sec = 1000000\nconn_burst = 1000000\nmax_connections = 100000\nsend_queue = 4096\n"
    ))?;
    let token = tokio_util::sync::CancellationToken::new();
    let hub = Interact::start(
        cfg,
        Arc::new(WallClock),
        &prometheus::Registry::new(),
        token,
    )
    .await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!(
        "{{\"http\":\"{}\",\"pid\":{}}}",
        listener.local_addr()?,
        std::process::id()
    );
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let hub = hub.clone();
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let hub = hub.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let resp = match path
                            .strip_prefix("/live/")
                            .and_then(|r| r.strip_suffix("/events"))
                        {
                            Some(s) => hub.handle_ws(s, req),
                            None => hub.handle_api(&path, req).await,
                        };
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                .with_upgrades()
                .await;
        });
    }
}
