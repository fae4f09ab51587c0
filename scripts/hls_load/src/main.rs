//! LL-HLS player load for Estuary.
//!
//! `hls_load play` runs `--players` players against one media playlist for `--secs`
//! seconds. Each behaves as hls.js does at the live edge: one blocking playlist reload
//! (`_HLS_msn`/`_HLS_part` of the next part) and one GET of the preload-hinted part
//! outstanding at a time. It prints parts fetched, errors by status, players that went
//! without a new part for longer than three part targets, parts skipped (listed in a
//! reload past the part the player fetched last) and the wait for hinted parts. With
//! `--events`, also one `error_at UNIX_SECS WHAT` line per error and one `skip_at
//! UNIX_SECS N` line per skip on stderr, so a caller can tell when they happened
//! (`scripts/soak.sh` does).
//!
//! `hls_load parked` parks thousands of blocking reloads and preload-hint GETs on one
//! node at once and times their release from the node's publication of the part (see
//! `parked.rs`).
//!
//! `hls_load paired` issues the same blocking reload to two servers at once (an origin
//! and an edge of it), `--parts` times in a row, and prints how much later the second
//! answered: the latency the edge adds, as a player sees it.

mod parked;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Players on one media playlist.
    Play {
        /// Media playlist URL, e.g. http://127.0.0.1:8080/live/demo/source/index.m3u8.
        #[arg(long)]
        url: String,
        /// Concurrent players.
        #[arg(long, default_value_t = 100)]
        players: usize,
        /// How long they play.
        #[arg(long, default_value_t = 20)]
        secs: u64,
        /// HTTP/2 over one cleartext connection (prior knowledge) instead of HTTP/1.1
        /// connections (two per player).
        #[arg(long)]
        h2: bool,
        /// Players started per 100 ms while ramping up.
        #[arg(long, default_value_t = 100)]
        ramp: usize,
        /// Also print each error and skip on stderr with its time (`error_at`, `skip_at`).
        #[arg(long)]
        events: bool,
    },
    /// Blocking requests parked at once, released by one publish: memory, CPU, latency.
    Parked(parked::Args),
    /// The same blocking reloads at two servers; how much later B answers than A.
    Paired {
        /// Media playlist at the origin.
        #[arg(long)]
        a: String,
        /// The same playlist at the edge.
        #[arg(long)]
        b: String,
        /// Consecutive parts to time.
        #[arg(long, default_value_t = 100)]
        parts: usize,
    },
}

type Http = Client<HttpConnector, Empty<Bytes>>;

fn client(h2: bool) -> Http {
    let mut b = Client::builder(TokioExecutor::new());
    // Below the node's `http.idle_timeout` (20 s by default): a pooled connection the
    // node is closing for idleness is never reused. Browsers retry such a request
    // themselves; this client counts every failure as an error, so it must not race.
    b.pool_idle_timeout(Duration::from_secs(10));
    if h2 {
        b.http2_only(true);
    }
    b.build_http()
}

/// Status and body size of a GET, and the body when it is text.
async fn get(c: &Http, url: &str) -> Result<(u16, usize, String)> {
    let resp = tokio::time::timeout(Duration::from_secs(15), c.get(url.parse()?))
        .await
        .context("timed out")??;
    let status = resp.status().as_u16();
    let body = tokio::time::timeout(Duration::from_secs(15), resp.into_body().collect())
        .await
        .context("body timed out")??
        .to_bytes();
    let text = if body.starts_with(b"#EXTM3U") {
        String::from_utf8_lossy(&body).into_owned()
    } else {
        String::new()
    };
    Ok((status, body.len(), text))
}

/// Where a live media playlist goes next: the (MSN, part) a blocking reload asks for,
/// the preload-hinted part URI, and the part target.
struct Next {
    msn: u64,
    part: u64,
    hint: Option<String>,
    part_target: Duration,
}

fn next_of(playlist: &str) -> Result<Next> {
    let mut msn = None;
    let mut parts = 0;
    let mut hint = None;
    let mut part_target = Duration::from_millis(200);
    for line in playlist.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            msn = Some(v.trim().parse::<u64>()?);
        } else if line.starts_with("#EXT-X-PART:") {
            parts += 1;
        } else if let Some(v) = line.strip_prefix("#EXT-X-PART-INF:PART-TARGET=") {
            part_target = Duration::from_secs_f64(v.trim().parse()?);
        } else if let Some(v) = line.strip_prefix("#EXT-X-PRELOAD-HINT:") {
            hint = v
                .split("URI=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .map(str::to_owned);
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            *msn.as_mut()
                .context("segment before EXT-X-MEDIA-SEQUENCE")? += 1;
            parts = 0;
        }
    }
    Ok(Next {
        msn: msn.context("no EXT-X-MEDIA-SEQUENCE")?,
        part: parts,
        hint,
        part_target,
    })
}

fn resolve(playlist_url: &str, uri: &str) -> String {
    if uri.contains("://") {
        return uri.to_owned();
    }
    let base = playlist_url.split('?').next().unwrap_or(playlist_url);
    let dir = &base[..base.rfind('/').map_or(base.len(), |i| i + 1)];
    format!("{dir}{uri}")
}

fn blocking_url(url: &str, n: &Next) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}_HLS_msn={}&_HLS_part={}", n.msn, n.part)
}

#[derive(Default)]
struct Stats {
    parts: AtomicU64,
    part_bytes: AtomicU64,
    reloads: AtomicU64,
    stalls: AtomicU64,
    skipped: AtomicU64,
    /// Print each error and skip with its time.
    events: bool,
    errors: Mutex<BTreeMap<String, u64>>,
    /// Milliseconds each hinted part GET waited.
    part_waits: Mutex<Vec<u32>>,
}

impl Stats {
    fn error(&self, what: String) {
        if self.events {
            eprintln!("error_at {:.3} {what}", unix_now());
        }
        *self.errors.lock().unwrap().entry(what).or_default() += 1;
    }

    fn skip(&self, n: u64) {
        if self.events {
            eprintln!("skip_at {:.3} {n}", unix_now());
        }
        self.skipped.fetch_add(n, Ordering::Relaxed);
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Parts a media playlist lists after the part with URI `fetched`: the ones a player
/// that fetched that part and jumps to this playlist's preload hint never gets. Parts
/// are matched by URI, not by (MSN, part index): a hint names the next part before its
/// segment is known (the publisher's keyframe decides whether it is the open segment's
/// next part or the next segment's first), and a blocking reload for index k of a
/// segment that ends with k parts is answered once the next segment's part 0 exists,
/// so counting by index would call that part skipped though it was fetched.
/// A playlist that does not list `fetched` skips nothing by this count.
fn parts_after(playlist: &str, fetched: &str) -> u64 {
    let mut after = None;
    for line in playlist.lines() {
        if !line.starts_with("#EXT-X-PART:") {
            continue;
        }
        let uri = line
            .split("URI=\"")
            .nth(1)
            .and_then(|r| r.split('"').next());
        match after.as_mut() {
            Some(n) => *n += 1,
            None if uri == Some(fetched) => after = Some(0),
            None => {}
        }
    }
    after.unwrap_or(0)
}

async fn player(c: Http, url: String, until: Instant, stats: Arc<Stats>) {
    let mut next = match get(&c, &url).await.and_then(|(s, _, t)| {
        if s != 200 {
            bail!("status {s}");
        }
        next_of(&t)
    }) {
        Ok(n) => n,
        Err(e) => return stats.error(format!("join: {e}")),
    };
    let mut last_part = Instant::now();
    // Bounded by time: every request has a 15 s timeout and the loop ends at `until`.
    while Instant::now() < until {
        let reload = blocking_url(&url, &next);
        let hinted = next.hint.as_ref().map(|h| resolve(&url, h));
        let started = Instant::now();
        let part = async {
            match &hinted {
                Some(u) => Some((get(&c, u).await, started.elapsed())),
                None => None,
            }
        };
        let (pl, part) = tokio::join!(get(&c, &reload), part);
        stats.reloads.fetch_add(1, Ordering::Relaxed);
        match part {
            Some((Ok((200, len, _)), waited)) => {
                stats.parts.fetch_add(1, Ordering::Relaxed);
                stats.part_bytes.fetch_add(len as u64, Ordering::Relaxed);
                stats
                    .part_waits
                    .lock()
                    .unwrap()
                    .push(waited.as_millis() as u32);
                if last_part.elapsed() > next.part_target * 3 {
                    stats.stalls.fetch_add(1, Ordering::Relaxed);
                }
                last_part = Instant::now();
            }
            Some((Ok((s, _, _)), _)) => stats.error(format!("part {s}")),
            Some((Err(e), _)) => stats.error(format!("part: {e}")),
            None => stats.error("no preload hint".into()),
        }
        match pl {
            Ok((200, _, text)) => match next_of(&text) {
                Ok(n) => {
                    let skipped = next.hint.as_deref().map_or(0, |h| parts_after(&text, h));
                    if skipped > 0 {
                        stats.skip(skipped);
                    }
                    next = n;
                }
                Err(e) => return stats.error(format!("playlist: {e}")),
            },
            Ok((s, _, _)) => {
                stats.error(format!("reload {s}"));
                tokio::time::sleep(next.part_target).await;
            }
            Err(e) => {
                stats.error(format!("reload: {e}"));
                tokio::time::sleep(next.part_target).await;
            }
        }
    }
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn play(
    url: String,
    players: usize,
    secs: u64,
    h2: bool,
    ramp: usize,
    events: bool,
) -> Result<()> {
    let c = client(h2);
    let stats = Arc::new(Stats {
        events,
        ..Stats::default()
    });
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let mut tasks = Vec::with_capacity(players);
    for i in 0..players {
        if i > 0 && i % ramp.max(1) == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tasks.push(tokio::spawn(player(
            c.clone(),
            url.clone(),
            until,
            stats.clone(),
        )));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut waits = stats.part_waits.lock().unwrap().clone();
    waits.sort_unstable();
    println!("players {players}");
    println!("protocol {}", if h2 { "h2" } else { "http/1.1" });
    println!("seconds {elapsed:.1}");
    println!("parts {}", stats.parts.load(Ordering::Relaxed));
    println!("part_bytes {}", stats.part_bytes.load(Ordering::Relaxed));
    println!("reloads {}", stats.reloads.load(Ordering::Relaxed));
    println!("stalls {}", stats.stalls.load(Ordering::Relaxed));
    println!("skipped {}", stats.skipped.load(Ordering::Relaxed));
    println!(
        "part_wait_ms p50 {} p99 {} max {}",
        pct(&waits, 0.5),
        pct(&waits, 0.99),
        waits.last().copied().unwrap_or(0)
    );
    let errors = stats.errors.lock().unwrap();
    println!("errors {}", errors.values().sum::<u64>());
    for (what, n) in errors.iter() {
        println!("error {n} {what}");
    }
    Ok(())
}

async fn paired(a: String, b: String, parts: usize) -> Result<()> {
    let c = client(false);
    let (s, _, text) = get(&c, &a).await?;
    if s != 200 {
        bail!("{a}: status {s}");
    }
    let mut next = next_of(&text)?;
    let mut deltas = Vec::with_capacity(parts);
    for _ in 0..parts {
        let t0 = Instant::now();
        let timed = |u: String| {
            let c = c.clone();
            async move {
                let r = get(&c, &u).await;
                (r, t0.elapsed())
            }
        };
        let ((ra, ta), (rb, tb)) = tokio::join!(
            timed(blocking_url(&a, &next)),
            timed(blocking_url(&b, &next))
        );
        let (sa, _, text) = ra?;
        let (sb, _, _) = rb?;
        if sa != 200 || sb != 200 {
            bail!(
                "statuses {sa} / {sb} for msn {} part {}",
                next.msn,
                next.part
            );
        }
        deltas.push(tb.as_secs_f64() * 1e3 - ta.as_secs_f64() * 1e3);
        next = next_of(&text)?;
    }
    deltas.sort_by(f64::total_cmp);
    let p = |q: f64| deltas[((deltas.len() - 1) as f64 * q).round() as usize];
    println!("parts {}", deltas.len());
    println!(
        "edge_added_ms p50 {:.1} p90 {:.1} p99 {:.1} max {:.1}",
        p(0.5),
        p(0.9),
        p(0.99),
        deltas.last().copied().unwrap_or(0.0)
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Play {
            url,
            players,
            secs,
            h2,
            ramp,
            events,
        } => play(url, players, secs, h2, ramp, events).await,
        Cmd::Paired { a, b, parts } => paired(a, b, parts).await,
        Cmd::Parked(a) => parked::run(a).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_part_follows_the_open_segment_and_the_hint() {
        let pl = "#EXTM3U\n#EXT-X-PART-INF:PART-TARGET=0.200\n#EXT-X-MEDIA-SEQUENCE:7\n\
                  #EXT-X-PART:DURATION=0.2,URI=\"p1.m4s\"\n#EXTINF:2.0,\n7.m4s\n\
                  #EXT-X-PART:DURATION=0.2,URI=\"p11.m4s\"\n#EXT-X-PART:DURATION=0.2,URI=\"p12.m4s\"\n\
                  #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p13.m4s\"\n";
        let n = next_of(pl).unwrap();
        assert_eq!((n.msn, n.part), (8, 2));
        assert_eq!(n.hint.as_deref(), Some("p13.m4s"));
        assert_eq!(n.part_target, Duration::from_millis(200));
        assert_eq!(
            resolve("http://h/live/d/source/index.m3u8?x=1", "p13.m4s"),
            "http://h/live/d/source/p13.m4s"
        );
    }

    #[test]
    fn parts_after_counts_what_a_jump_to_the_hint_skips() {
        // Segment 7 has parts p0 and p1; segment 8 has p2 and p3 so far.
        let pl = "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:7\n\
                  #EXT-X-PART:DURATION=0.2,URI=\"p0.m4s\"\n\
                  #EXT-X-PART:DURATION=0.2,URI=\"p1.m4s\",INDEPENDENT=YES\n\
                  #EXTINF:0.4,\n7.m4s\n\
                  #EXT-X-PART:DURATION=0.2,URI=\"p2.m4s\",INDEPENDENT=YES\n\
                  #EXT-X-PART:DURATION=0.2,URI=\"p3.m4s\"\n\
                  #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p4.m4s\"\n";
        assert_eq!(parts_after(pl, "p3.m4s"), 0);
        assert_eq!(parts_after(pl, "p2.m4s"), 1);
        assert_eq!(parts_after(pl, "p1.m4s"), 2);
        assert_eq!(parts_after(pl, "p0.m4s"), 3);
        // Not listed (not published yet, or already out of the window): nothing counted.
        assert_eq!(parts_after(pl, "p4.m4s"), 0);
    }

    #[test]
    fn a_hint_that_became_the_next_segments_first_part_is_no_skip() {
        // The player saw segment 7 open with 2 parts and hint p2, and asked for
        // _HLS_msn=7&_HLS_part=2; a keyframe closed 7, so p2 is part 0 of segment 8.
        let before = "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:7\n\
                      #EXT-X-PART:DURATION=0.2,URI=\"p0.m4s\",INDEPENDENT=YES\n\
                      #EXT-X-PART:DURATION=0.2,URI=\"p1.m4s\"\n\
                      #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p2.m4s\"\n";
        let n = next_of(before).unwrap();
        assert_eq!((n.msn, n.part, n.hint.as_deref()), (7, 2, Some("p2.m4s")));
        let after = "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:7\n\
                     #EXT-X-PART:DURATION=0.2,URI=\"p0.m4s\",INDEPENDENT=YES\n\
                     #EXT-X-PART:DURATION=0.2,URI=\"p1.m4s\"\n\
                     #EXTINF:0.4,\n7.m4s\n\
                     #EXT-X-PART:DURATION=0.2,URI=\"p2.m4s\",INDEPENDENT=YES\n\
                     #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p3.m4s\"\n";
        assert_eq!(parts_after(after, "p2.m4s"), 0);
    }
}
