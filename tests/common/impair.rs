//! A UDP impairment relay for lossy-link tests (this kernel has no netem): it sits between
//! an SRT caller and the node and drops, delays and reorders datagrams in both directions.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::UdpSocket, sync::Mutex, task::JoinHandle};

/// How the link misbehaves, each way.
#[derive(Debug, Clone, Copy)]
pub struct Impairment {
    /// Fraction of datagrams dropped (0.0–1.0).
    pub loss: f64,
    /// One-way delay (RTT is twice this).
    pub delay: Duration,
    /// Extra random delay up to this much, which reorders datagrams.
    pub jitter: Duration,
}

/// A running relay; stops when dropped.
pub struct Relay {
    /// Where callers connect.
    pub addr: SocketAddr,
    /// The most a datagram was forwarded later than its drawn delay, in microseconds: a
    /// starved test process holds datagrams longer than the link would.
    pub max_late_us: Arc<std::sync::atomic::AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A small xorshift generator (deterministic per relay, no extra crate).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Relay {
    /// Starts a relay to `target` on loopback.
    pub async fn start(target: SocketAddr, imp: Impairment, seed: u64) -> Relay {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        back.connect(target).await.unwrap();
        let addr = front.local_addr().unwrap();
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let rng = Arc::new(std::sync::Mutex::new(Rng(seed | 1)));
        let max_late_us = Arc::new(std::sync::atomic::AtomicU64::new(0));
        // Caller -> node.
        let up = {
            let (front, back, client, rng, late) = (
                front.clone(),
                back.clone(),
                client.clone(),
                rng.clone(),
                max_late_us.clone(),
            );
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                while let Ok((n, from)) = front.recv_from(&mut buf).await {
                    *client.lock().await = Some(from);
                    let Some(delay) = pass(&rng, imp) else {
                        continue;
                    };
                    let (back, data, late) = (back.clone(), buf[..n].to_vec(), late.clone());
                    let due = tokio::time::Instant::now() + delay;
                    tokio::spawn(async move {
                        tokio::time::sleep_until(due).await;
                        note_late(&late, due);
                        let _ = back.send(&data).await;
                    });
                }
            })
        };
        // Node -> caller.
        let down = {
            let (front, back, client, rng, late) = (
                front.clone(),
                back.clone(),
                client.clone(),
                rng.clone(),
                max_late_us.clone(),
            );
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                while let Ok(n) = back.recv(&mut buf).await {
                    let Some(to) = *client.lock().await else {
                        continue;
                    };
                    let Some(delay) = pass(&rng, imp) else {
                        continue;
                    };
                    let (front, data, late) = (front.clone(), buf[..n].to_vec(), late.clone());
                    let due = tokio::time::Instant::now() + delay;
                    tokio::spawn(async move {
                        tokio::time::sleep_until(due).await;
                        note_late(&late, due);
                        let _ = front.send_to(&data, to).await;
                    });
                }
            })
        };
        Relay {
            addr,
            max_late_us,
            tasks: vec![up, down],
        }
    }
}

/// The delay for one datagram, or `None` when it is lost.
fn pass(rng: &std::sync::Mutex<Rng>, imp: Impairment) -> Option<Duration> {
    let mut r = rng.lock().unwrap();
    if r.next() < imp.loss {
        return None;
    }
    Some(imp.delay + imp.jitter.mul_f64(r.next()))
}

fn note_late(late: &std::sync::atomic::AtomicU64, due: tokio::time::Instant) {
    let us = due.elapsed().as_micros() as u64;
    late.fetch_max(us, std::sync::atomic::Ordering::Relaxed);
}
