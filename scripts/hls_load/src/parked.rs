//! `hls_load parked`: many blocking requests parked at once on one node, released by one
//! part's publication.
//!
//! Each round synchronises on a fresh part (one blocking reload on a separate
//! connection), then sends `--reloads` blocking playlist reloads for the next part and
//! `--hints` GETs of its preload-hinted URI, spread over `--conns` connections (HTTP/2:
//! streams share connections; HTTP/1.1: one request per connection, so `--conns` must
//! equal their sum). They stay parked until the node publishes that part. The node's own
//! publication time (`part_published_unix_ms` in `/api/streams/{stream}`, stamped when
//! the part enters its store) is the zero of every release latency: the arrival of each
//! whole response minus that time, on the same machine's clock.
//!
//! Memory and CPU are read from `/proc/{--node-pid}`: RSS before any connection, with the
//! connections open and idle, and with every request parked (just before the publish);
//! CPU over the parked stretch and over the release. The node's live Rust heap
//! (`estuary_heap_allocated_bytes` on `/metrics`) is read at the same three points.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{client::conn, Request};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{net::TcpSocket, sync::Semaphore, task::JoinSet};

use crate::{blocking_url, client, get, next_of, resolve};

/// What `hls_load parked` is told.
#[derive(clap::Args)]
pub struct Args {
    /// Media playlist URL, e.g. http://127.0.0.1:8080/live/bench/source/index.m3u8.
    #[arg(long)]
    pub url: String,
    /// Blocking playlist reloads parked per round.
    #[arg(long, default_value_t = 10_000)]
    pub reloads: usize,
    /// Preload-hint part GETs parked per round.
    #[arg(long, default_value_t = 10_000)]
    pub hints: usize,
    /// Connections carrying them (HTTP/1.1: exactly reloads + hints).
    #[arg(long, default_value_t = 1_000)]
    pub conns: usize,
    /// HTTP/2 with prior knowledge instead of HTTP/1.1.
    #[arg(long)]
    pub h2: bool,
    /// Local addresses to bind connections to, in turn (more ephemeral ports), e.g.
    /// 127.0.0.2,127.0.0.3.
    #[arg(long, value_delimiter = ',')]
    pub sources: Vec<IpAddr>,
    /// Publishes measured.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// The node's process id (RSS and CPU are read from /proc).
    #[arg(long)]
    pub node_pid: u32,
}

/// One connection's request sender.
#[derive(Clone)]
enum Sender {
    H1(Arc<tokio::sync::Mutex<conn::http1::SendRequest<Empty<Bytes>>>>),
    H2(conn::http2::SendRequest<Empty<Bytes>>),
}

impl Sender {
    /// Status, when the response head arrived, and when its whole body had.
    async fn get(&self, url: &str) -> Result<(u16, SystemTime, SystemTime)> {
        let resp = match self {
            Self::H1(s) => {
                // A bare HTTP/1.1 connection adds no Host header of its own.
                let uri: hyper::Uri = url.parse()?;
                let host = uri.authority().context("no host")?.to_string();
                let req = Request::get(uri)
                    .header(hyper::header::HOST, host)
                    .body(Empty::new())?;
                let mut s = s.lock().await;
                s.ready().await?;
                s.send_request(req).await?
            }
            Self::H2(s) => {
                s.clone()
                    .send_request(Request::get(url).body(Empty::new())?)
                    .await?
            }
        };
        let head = SystemTime::now();
        let status = resp.status().as_u16();
        resp.into_body().collect().await?;
        Ok((status, head, SystemTime::now()))
    }
}

async fn open(addr: SocketAddr, src: IpAddr, h2: bool) -> Result<Sender> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(src, 0))?;
    let tcp = sock.connect(addr).await?;
    tcp.set_nodelay(true)?;
    let io = TokioIo::new(tcp);
    if h2 {
        let (s, c) = conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(c);
        Ok(Sender::H2(s))
    } else {
        let (s, c) = conn::http1::handshake(io).await?;
        tokio::spawn(c);
        Ok(Sender::H1(Arc::new(tokio::sync::Mutex::new(s))))
    }
}

/// Resident memory (kB) and CPU time (ms) of a process.
fn proc_usage(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .context("no VmRSS")?
        .parse()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): utime and stime are the
    // 12th and 13th of them, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit(')').next().context("bad stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        f.get(11).context("utime")?.parse::<u64>()? + f.get(12).context("stime")?.parse::<u64>()?;
    Ok((rss, ticks * 10))
}

fn unix_ms(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

fn part_number(uri: &str) -> Option<u64> {
    uri.strip_prefix('p')?.strip_suffix(".m4s")?.parse().ok()
}

/// The node's `/api/streams/{stream}` and `/metrics` URLs for a media playlist URL, and
/// the rendition's name.
fn api_of(url: &str) -> Result<(String, String, String)> {
    let base = url.split('?').next().unwrap_or(url);
    let (host, path) = base
        .split_once("/live/")
        .context("URL has no /live/ path")?;
    let mut p = path.split('/');
    let (Some(stream), Some(rendition)) = (p.next(), p.next()) else {
        bail!("URL is not /live/{{stream}}/{{rendition}}/index.m3u8");
    };
    Ok((
        format!("{host}/api/streams/{stream}"),
        format!("{host}/metrics"),
        rendition.to_owned(),
    ))
}

/// When the node published `part` (its running number): polls the node's stream API
/// (bounded: 5 s) until that part is the latest, and reads its stamp. The answer may come
/// late under load; the stamp is the node's own, so that does not matter as long as it
/// is read before the next part replaces it.
async fn published_ms(c: &crate::Http, api: &str, rendition: &str, part: u64) -> Result<f64> {
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let resp = c.get(api.parse()?).await?;
        let body = resp.into_body().collect().await?.to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        let r = &v["renditions"][rendition];
        match r["hint"].as_str().and_then(part_number) {
            Some(h) if h == part + 1 => {
                return r["part_published_unix_ms"]
                    .as_f64()
                    .context("no part_published_unix_ms")
            }
            Some(h) if h > part + 1 => {
                bail!("the node is past part {part} already (hint p{h}); the round is void")
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    bail!("part {part} was not published within 5 s")
}

/// Requests the node has parked so far (`estuary_http_blocking_wait_seconds_count`, both
/// routes): a request answered at once is not counted, so the difference over a round
/// says how many really waited for the publish.
async fn parked_count(c: &crate::Http, metrics: &str) -> Result<u64> {
    let resp = c.get(metrics.parse()?).await?;
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| l.starts_with("estuary_http_blocking_wait_seconds_count"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum())
}

/// The node's live Rust heap (`estuary_heap_allocated_bytes`, jemalloc's own count), in
/// kB: unlike RSS it leaves out freed pages the allocator keeps and GStreamer's buffers,
/// so its difference is what the parked requests themselves hold.
async fn heap_kb(c: &crate::Http, metrics: &str) -> Result<u64> {
    let resp = c.get(metrics.parse()?).await?;
    let body = resp.into_body().collect().await?.to_bytes();
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix("estuary_heap_allocated_bytes "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|b| b / 1024)
        .context("no estuary_heap_allocated_bytes on /metrics")
}

/// Latencies of one round, ms after the node published the part.
struct Round {
    parked: u64,
    /// Arrival of each response's head and of its whole body.
    latencies: Vec<(f64, f64)>,
    errors: Vec<String>,
    rss_parked: u64,
    heap_parked: u64,
    cpu_parked_pct: f64,
    cpu_release_ms: u64,
}

/// The node's URLs: `/api/streams/{stream}`, `/metrics`, and the rendition's name.
struct Node {
    api: String,
    metrics: String,
    rendition: String,
}

async fn round(a: &Args, senders: &[Sender], obs: &crate::Http, node: &Node) -> Result<Round> {
    let Node {
        api,
        metrics,
        rendition,
    } = node;
    // Start right after a publish, so the whole part interval is left for parking.
    let (s, _, text) = get(obs, &a.url).await?;
    ensure!(s == 200, "playlist: status {s}");
    let n = next_of(&text)?;
    let (s, _, text) = get(obs, &blocking_url(&a.url, &n)).await?;
    ensure!(s == 200, "sync reload: status {s}");
    let counted = parked_count(obs, metrics).await?;
    let synced = Instant::now();
    let target = next_of(&text)?;
    let hint = target.hint.clone().context("no preload hint")?;
    let part = part_number(&hint).context("hint is not a running part number")?;
    let reload = Arc::new(blocking_url(&a.url, &target));
    let hinted = Arc::new(resolve(&a.url, &hint));
    let mut set = JoinSet::new();
    for i in 0..a.reloads + a.hints {
        let s = senders[i % senders.len()].clone();
        let u = if i < a.reloads {
            reload.clone()
        } else {
            hinted.clone()
        };
        set.spawn(tokio::time::timeout(Duration::from_secs(15), async move {
            s.get(&u).await
        }));
    }
    // Parked: sample after a settle, well before the next publish (one part target on).
    let settle = target.part_target.mul_f64(0.35);
    tokio::time::sleep_until((synced + settle).into()).await;
    let (_, cpu0) = proc_usage(a.node_pid)?;
    let t0 = Instant::now();
    tokio::time::sleep_until((synced + target.part_target.mul_f64(0.8)).into()).await;
    let (rss_parked, cpu1) = proc_usage(a.node_pid)?;
    let heap_parked = heap_kb(obs, metrics).await?;
    let cpu_parked_pct = (cpu1 - cpu0) as f64 / (t0.elapsed().as_secs_f64() * 1e3) * 100.0;
    let mut arrivals = Vec::with_capacity(a.reloads + a.hints);
    let mut errors = Vec::new();
    let collect = async {
        while let Some(r) = set.join_next().await {
            match r {
                Ok(Ok(Ok((200, head, done)))) => arrivals.push((head, done)),
                Ok(Ok(Ok((s, _, _)))) => errors.push(format!("status {s}")),
                Ok(Ok(Err(e))) => errors.push(format!("{e:#}")),
                Ok(Err(_)) => errors.push("timed out".into()),
                Err(e) => errors.push(format!("task: {e}")),
            }
        }
    };
    let (zero, ()) = tokio::join!(published_ms(obs, api, rendition, part), collect);
    let (_, cpu2) = proc_usage(a.node_pid)?;
    if let Some(e) = errors.first() {
        eprintln!("round: {} errors, first: {e}", errors.len());
    }
    let zero = zero?;
    let parked = parked_count(obs, metrics).await? - counted;
    let latencies = arrivals
        .iter()
        .map(|(h, d)| (unix_ms(*h) - zero, unix_ms(*d) - zero))
        .collect();
    Ok(Round {
        parked,
        latencies,
        errors,
        rss_parked,
        heap_parked,
        cpu_parked_pct,
        cpu_release_ms: cpu2 - cpu1,
    })
}

/// Runs the benchmark and prints its figures.
pub async fn run(a: Args) -> Result<()> {
    let total = a.reloads + a.hints;
    ensure!(total > 0 && a.conns > 0, "nothing to park");
    ensure!(
        a.h2 || a.conns == total,
        "HTTP/1.1 carries one request per connection: --conns must be --reloads + --hints"
    );
    let (api, metrics, rendition) = api_of(&a.url)?;
    let node = Node {
        api,
        metrics,
        rendition,
    };
    let addr: SocketAddr = {
        let uri: hyper::Uri = a.url.parse()?;
        let host = uri.host().context("no host")?;
        format!("{host}:{}", uri.port_u16().unwrap_or(80)).parse()?
    };
    let sources = if a.sources.is_empty() {
        vec![addr.ip()]
    } else {
        a.sources.clone()
    };
    let obs = client(false);
    let (rss_base, _) = proc_usage(a.node_pid)?;
    let heap_base = heap_kb(&obs, &node.metrics).await?;
    // Connect with bounded concurrency, so the listen backlog never overflows.
    let gate = Arc::new(Semaphore::new(256));
    let mut set = JoinSet::new();
    for i in 0..a.conns {
        let (gate, src, h2) = (gate.clone(), sources[i % sources.len()], a.h2);
        set.spawn(async move {
            let _p = gate.acquire_owned().await?;
            tokio::time::timeout(Duration::from_secs(10), open(addr, src, h2))
                .await
                .context("connect timed out")?
        });
    }
    let mut senders = Vec::with_capacity(a.conns);
    while let Some(r) = set.join_next().await {
        senders.push(r?.context("connecting")?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_idle, _) = proc_usage(a.node_pid)?;
    let heap_idle = heap_kb(&obs, &node.metrics).await?;
    let mut lat = Vec::new();
    let (mut errors, mut voids) = (Vec::new(), 0);
    let mut heap_parked = 0;
    let (mut rss_parked, mut cpu_pct, mut cpu_rel) = (0, Vec::new(), Vec::new());
    let mut parked = Vec::new();
    // Each round's RSS and heap with every request parked: the first round's connections
    // have never answered, later ones have (and hold what that touched).
    let (mut rss_rounds, mut heap_rounds) = (Vec::new(), Vec::new());
    for _ in 0..a.rounds {
        match round(&a, &senders, &obs, &node).await {
            Ok(r) => {
                lat.extend(r.latencies);
                parked.push(r.parked);
                errors.extend(r.errors);
                rss_parked = rss_parked.max(r.rss_parked);
                heap_parked = heap_parked.max(r.heap_parked);
                rss_rounds.push(r.rss_parked);
                heap_rounds.push(r.heap_parked);
                cpu_pct.push(r.cpu_parked_pct);
                cpu_rel.push(r.cpu_release_ms as f64);
            }
            Err(e) => {
                eprintln!("round void: {e:#}");
                voids += 1;
            }
        }
    }
    let mut heads: Vec<f64> = lat.iter().map(|l| l.0).collect();
    let mut bodies: Vec<f64> = lat.iter().map(|l| l.1).collect();
    heads.sort_by(f64::total_cmp);
    bodies.sort_by(f64::total_cmp);
    let q = |v: &[f64], p: f64| {
        if v.is_empty() {
            0.0
        } else {
            v[((v.len() - 1) as f64 * p).round() as usize]
        }
    };
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    println!("protocol {}", if a.h2 { "h2" } else { "http/1.1" });
    println!("connections {}", a.conns);
    println!(
        "parked_per_round {total} (reloads {}, hints {})",
        a.reloads, a.hints
    );
    println!("rounds {} void {voids}", a.rounds);
    println!("released {}", lat.len());
    println!(
        "parked_by_node min {} max {} per round",
        parked.iter().min().unwrap_or(&0),
        parked.iter().max().unwrap_or(&0)
    );
    println!("early {}", heads.iter().filter(|l| **l < 0.0).count());
    println!("errors {}", errors.len());
    if let Some(e) = errors.first() {
        println!("first_error {e}");
    }
    println!("rss_kb before {rss_base} idle_conns {rss_idle} parked {rss_parked}");
    println!(
        "per_parked_request_kb {:.1} (connections included) {:.1} (requests only)",
        rss_parked.saturating_sub(rss_base) as f64 / total as f64,
        rss_parked.saturating_sub(rss_idle) as f64 / total as f64
    );
    let per = |v: &[u64], base: u64| {
        v.iter()
            .map(|x| format!("{:.1}", x.saturating_sub(base) as f64 / total as f64))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "per_parked_request_kb by round {} (connections included)",
        per(&rss_rounds, rss_base)
    );
    println!("heap_kb before {heap_base} idle_conns {heap_idle} parked {heap_parked}");
    println!(
        "heap_per_parked_request_kb by round {} (connections included)",
        per(&heap_rounds, heap_base)
    );
    println!(
        "heap_per_parked_request_kb {:.1} (connections included) {:.1} (requests only)",
        heap_parked.saturating_sub(heap_base) as f64 / total as f64,
        heap_parked.saturating_sub(heap_idle) as f64 / total as f64
    );
    println!(
        "cpu parked {:.1}% release {:.0} ms",
        mean(&cpu_pct),
        mean(&cpu_rel)
    );
    for (what, v) in [("release_ms", &heads), ("whole_body_ms", &bodies)] {
        println!(
            "{what} p50 {:.1} p99 {:.1} max {:.1}",
            q(v, 0.5),
            q(v, 0.99),
            v.last().copied().unwrap_or(0.0)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_urls_and_part_numbers() {
        let (api, metrics, r) =
            api_of("http://127.0.0.1:8080/live/bench/source/index.m3u8").unwrap();
        assert_eq!(api, "http://127.0.0.1:8080/api/streams/bench");
        assert_eq!(metrics, "http://127.0.0.1:8080/metrics");
        assert_eq!(r, "source");
        assert!(api_of("http://h/x/index.m3u8").is_err());
        assert_eq!(part_number("p123.m4s"), Some(123));
        assert_eq!(part_number("12.m4s"), None);
    }
}
