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
        let front = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let back = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        back.connect(target).await.unwrap();
        let addr = front.local_addr().unwrap();
        let link = Arc::new(Link {
            front,
            back,
            client: Mutex::default(),
            rng: std::sync::Mutex::new(Rng(seed | 1)),
            late: Arc::default(),
            imp,
        });
        // Caller -> node.
        let up = tokio::spawn({
            let link = link.clone();
            async move {
                let mut buf = vec![0u8; 2048];
                while let Ok((n, from)) = link.front.recv_from(&mut buf).await {
                    *link.client.lock().await = Some(from);
                    link.forward(&buf[..n], None);
                }
            }
        });
        // Node -> caller.
        let down = tokio::spawn({
            let link = link.clone();
            async move {
                let mut buf = vec![0u8; 2048];
                while let Ok(n) = link.back.recv(&mut buf).await {
                    if let Some(to) = *link.client.lock().await {
                        link.forward(&buf[..n], Some(to));
                    }
                }
            }
        });
        Relay {
            addr,
            max_late_us: link.late.clone(),
            tasks: vec![up, down],
        }
    }
}

/// Both sockets and the impairment, shared by the two directions.
struct Link {
    front: UdpSocket,
    back: UdpSocket,
    client: Mutex<Option<SocketAddr>>,
    rng: std::sync::Mutex<Rng>,
    late: Arc<std::sync::atomic::AtomicU64>,
    imp: Impairment,
}

impl Link {
    /// Sends `data` on after its drawn delay (to the node, or to the caller `to`), unless
    /// it is drawn lost.
    fn forward(self: &Arc<Self>, data: &[u8], to: Option<SocketAddr>) {
        let Some(delay) = pass(&self.rng, self.imp) else {
            return;
        };
        let (link, data) = (self.clone(), data.to_vec());
        let due = tokio::time::Instant::now() + delay;
        tokio::spawn(async move {
            tokio::time::sleep_until(due).await;
            let us = due.elapsed().as_micros() as u64;
            link.late
                .fetch_max(us, std::sync::atomic::Ordering::Relaxed);
            let _ = match to {
                None => link.back.send(&data).await,
                Some(to) => link.front.send_to(&data, to).await,
            };
        });
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
