//! Load generator for the interaction channel.
//!
//! `ws_load run` opens `--clients` WebSocket clients in one room, then one host connection
//! publishes chat at `--rate` messages/s for `--secs` seconds. Each message carries its send
//! time; every client timestamps deliveries. Prints deliveries/s, p50/p99 delivery latency
//! and, with `--pid`, the node's RSS per idle connection.
//!
//! `ws_load idle` opens `--conns` WebSocket connections that stay idle (they answer pings),
//! spread over several source addresses (`--bind`) so that no source runs out of ephemeral
//! ports, and prints the node's RSS growth per connection; then it closes them and prints
//! the RSS after.
//!
//! `ws_load serve` runs an in-process node (interaction routes only) for when the `estuary`
//! binary is not at hand; it prints `{"http":"ADDR","pid":PID}`.
//!
//! `--threads` sizes the client's runtime: one when the script pins the client to one core.

mod idle;

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::{
    tungstenite::{protocol::WebSocketConfig, Message},
    MaybeTlsStream, WebSocketStream,
};

#[derive(Parser)]
struct Cli {
    /// Runtime worker threads (default: one per core the process may run on).
    #[arg(long, global = true)]
    threads: Option<usize>,
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
        /// Source addresses for the viewers, comma-separated, used in turn (default: the
        /// system's choice).
        #[arg(long, value_delimiter = ',')]
        bind: Vec<IpAddr>,
    },
    /// Open idle connections and measure the node's memory per connection.
    Idle {
        /// Node HTTP address.
        #[arg(long)]
        addr: String,
        /// Stream (room) name.
        #[arg(long, default_value = "load")]
        stream: String,
        /// Connections to open.
        #[arg(long, default_value_t = 10_000)]
        conns: usize,
        /// Node pid, to read its RSS from /proc.
        #[arg(long)]
        pid: u32,
        /// Source addresses, comma-separated, used in turn (each gives one ephemeral port
        /// range, about 28,000 connections).
        #[arg(long, value_delimiter = ',')]
        bind: Vec<IpAddr>,
        /// Concurrent connection attempts.
        #[arg(long, default_value_t = 200)]
        connect_parallel: usize,
        /// How long to hold the connections open after the last one is up.
        #[arg(long, default_value_t = 5)]
        hold_secs: u64,
    },
    /// Serve an in-process node with a load-friendly config.
    Serve {
        /// Token secret.
        #[arg(long)]
        secret: String,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
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

/// A viewer's WebSocket, its TCP connection made from `bind` when given.
async fn connect(
    url: &str,
    addr: &str,
    bind: Option<IpAddr>,
) -> Result<WebSocketStream<MaybeTlsStream<TcpStream>>> {
    let target: SocketAddr = tokio::net::lookup_host(addr)
        .await?
        .next()
        .context("no address")?;
    let sock = match target {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(ip) = bind {
        sock.bind(SocketAddr::new(ip, 0))?;
    }
    let tcp = sock.connect(target).await?;
    tcp.set_nodelay(true)?;
    // Small buffers: 100k idle clients must not cost the client gigabytes.
    let cfg = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(url, MaybeTlsStream::Plain(tcp), Some(cfg))
            .await?;
    Ok(ws)
}

/// Waits for `n` connection attempts to report; returns (connected, failed). Each reports
/// once; the senders live on in the connection tasks.
pub(crate) async fn count_ready(
    rx: &mut tokio::sync::mpsc::Receiver<bool>,
    n: usize,
) -> (usize, usize) {
    let (mut ok, mut failed) = (0, 0);
    for _ in 0..n {
        match rx.recv().await {
            Some(true) => ok += 1,
            Some(false) => failed += 1,
            None => break,
        }
    }
    (ok, failed)
}

/// A counter from the node's `/metrics` (None when the node has no such route).
async fn metric(addr: &str, name: &str) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.ok()?;
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut body))
        .await
        .ok()?
        .ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// User + system CPU time of `pid` so far, in seconds (from /proc/PID/stat).
fn cpu_secs(pid: u32) -> Option<f64> {
    cpu_split(pid).map(|(u, s)| u + s)
}

/// User and system (kernel) CPU time of `pid` so far, in seconds.
fn cpu_split(pid: u32) -> Option<(f64, f64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let user: u64 = f.get(11)?.parse().ok()?;
    let system: u64 = f.get(12)?.parse().ok()?;
    // USER_HZ is 100 on Linux.
    Some((user as f64 / 100.0, system as f64 / 100.0))
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

fn main() -> Result<()> {
    let cli = Cli::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.threads {
        rt.worker_threads(n.max(1));
    }
    rt.enable_all().build()?.block_on(run_cli(cli.cmd))
}

async fn run_cli(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Run {
            addr,
            stream,
            clients,
            rate,
            secs,
            secret,
            pid,
            connect_parallel,
            bind,
        } => {
            let token = estuary::interact::mint_token(
                &secret,
                estuary::interact::Role::Host,
                "load-publisher",
                "Load",
                Some(stream.as_str()),
                Duration::from_secs(3600),
            )?;
            run(Load {
                addr,
                stream,
                clients,
                rate,
                secs,
                token,
                pid,
                parallel: connect_parallel,
                bind,
            })
            .await
        }
        Cmd::Idle {
            addr,
            stream,
            conns,
            pid,
            bind,
            connect_parallel,
            hold_secs,
        } => {
            idle::run(idle::Idle {
                addr,
                stream,
                conns,
                pid,
                bind,
                parallel: connect_parallel,
                hold: Duration::from_secs(hold_secs),
            })
            .await
        }
        Cmd::Serve { secret, listen } => serve(secret, listen).await,
    }
}

/// A fan-out run's parameters.
struct Load {
    addr: String,
    stream: String,
    clients: usize,
    rate: u64,
    secs: u64,
    token: String,
    pid: Option<u32>,
    parallel: usize,
    bind: Vec<IpAddr>,
}

async fn run(load: Load) -> Result<()> {
    let (clients, rate, secs, pid) = (load.clients, load.rate, load.secs, load.pid);
    let (addr, bind, token) = (&load.addr, &load.bind, &load.token);
    let url = format!("ws://{addr}/live/{}/events", load.stream);
    let t0 = Instant::now();
    let hist = Arc::new(Hist::new());
    let delivered = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let rss0 = pid.and_then(rss_kb);
    let sem = Arc::new(tokio::sync::Semaphore::new(load.parallel));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<bool>(clients.max(1));
    let stop = tokio_util::sync::CancellationToken::new();
    for i in 0..clients {
        let src = (!bind.is_empty()).then(|| bind[i % bind.len()]);
        let (url, addr, hist, delivered, dropped, sem, ready, stop) = (
            url.clone(),
            addr.clone(),
            hist.clone(),
            delivered.clone(),
            dropped.clone(),
            sem.clone(),
            ready_tx.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let permit = sem.acquire_owned().await;
            let ws = tokio::time::timeout(Duration::from_secs(30), connect(&url, &addr, src)).await;
            drop(permit);
            let mut ws = match ws {
                Ok(Ok(ws)) => ws,
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
    let (ok, failed) = count_ready(&mut ready_rx, clients).await;
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
    let cpu0 = pid.and_then(cpu_secs);
    let split0 = pid.and_then(cpu_split);
    let own0 = cpu_secs(std::process::id());
    let writes0 = metric(addr, "estuary_interact_broadcast_writes_total").await;
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
    let node_cpu = pid
        .and_then(cpu_secs)
        .zip(cpu0)
        .map(|(b, a)| b - a)
        .unwrap_or(f64::NAN);
    let kernel_share = pid
        .and_then(cpu_split)
        .zip(split0)
        .map(|((u1, s1), (u0, s0))| (s1 - s0) / ((u1 - u0) + (s1 - s0)).max(1e-9))
        .unwrap_or(f64::NAN);
    let own_cpu = cpu_secs(std::process::id())
        .zip(own0)
        .map(|(b, a)| b - a)
        .unwrap_or(f64::NAN);
    let writes = metric(addr, "estuary_interact_broadcast_writes_total")
        .await
        .zip(writes0)
        .map(|(b, a)| b - a);
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
    println!(
        "node CPU           {node_cpu:.2} s in {secs_all:.1} s ({:.0} % of a core, {:.0} % of it in the kernel, {:.1} µs per delivery)",
        node_cpu / secs_all * 100.0,
        kernel_share * 100.0,
        node_cpu * 1e6 / got.max(1) as f64
    );
    if let Some(w) = writes.filter(|w| *w > 0.0) {
        println!(
            "socket writes      {w:.0} ({:.1} frames a write, {:.1} µs of node CPU a write)",
            got as f64 / w,
            node_cpu * 1e6 / w
        );
    }
    println!(
        "client CPU         {own_cpu:.2} s ({:.0} % of a core)",
        own_cpu / secs_all * 100.0
    );
    println!(
        "RESULT fanout clients={ok} failed={failed} dropped={} rate={rate} secs={secs} delivered={got} expected={expect} per_sec={:.0} p50_ms={:.2} p99_ms={:.2} node_cpu_pct={:.0} client_cpu_pct={:.0}",
        dropped.load(Ordering::Relaxed),
        got as f64 / secs_all,
        hist.quantile(0.50),
        hist.quantile(0.99),
        node_cpu / secs_all * 100.0,
        own_cpu / secs_all * 100.0
    );
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

async fn serve(secret: String, listen: SocketAddr) -> Result<()> {
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
    let listener = tokio::net::TcpListener::bind(listen).await?;
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
