//! How a node knows a peer is failing: it GETs each other pathway's `/readyz` (or its
//! `probe` URL) every `probe_interval`, all at once, each within `probe_timeout`.
//!
//! - 200: up. 503 with the code `draining`: draining (the drain switch of that node).
//! - Anything else (another status, a refused connection, no answer in time) counts as a
//!   failure; [`FAILS_BEFORE_DOWN`] failures in a row mark the peer down, so one lost
//!   probe does not move every viewer. One good answer makes it up again.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::StatusCode;
use prometheus::{IntGaugeVec, Opts, Registry};
use tokio_util::sync::CancellationToken;

use super::{Health, Steering};

/// Failed probes in a row before a peer counts as down.
pub const FAILS_BEFORE_DOWN: u32 = 2;

/// What one probe saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// 200.
    Ready,
    /// 503 `draining`.
    Draining,
    /// Anything else.
    Failed,
}

/// A peer's health after a probe, from its run of failures (updated in place).
pub fn next(seen: Seen, fails: &mut u32, before: Health) -> Health {
    match seen {
        Seen::Ready => {
            *fails = 0;
            Health::Up
        }
        Seen::Draining => {
            *fails = 0;
            Health::Draining
        }
        Seen::Failed => {
            *fails = fails.saturating_add(1);
            if *fails >= FAILS_BEFORE_DOWN {
                Health::Down
            } else {
                before
            }
        }
    }
}

type ProbeClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Empty<Bytes>,
>;

/// Whether a 503 body is a drain: `{"code": "draining", …}` (or an older node's plain
/// `draining`).
fn says_draining(body: &[u8]) -> bool {
    body.starts_with(b"draining")
        || serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| v["code"] == "draining")
}

async fn probe(client: &ProbeClient, url: &str, timeout: Duration) -> Seen {
    let Ok(uri) = url.parse::<hyper::Uri>() else {
        return Seen::Failed;
    };
    let ask = async {
        let resp = client.get(uri).await.ok()?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), 256).collect().await.ok()?;
        Some((status, body.to_bytes()))
    };
    match tokio::time::timeout(timeout, ask).await {
        Ok(Some((StatusCode::OK, _))) => Seen::Ready,
        Ok(Some((StatusCode::SERVICE_UNAVAILABLE, b))) if says_draining(&b) => Seen::Draining,
        _ => Seen::Failed,
    }
}

impl Steering {
    /// Probes the peers until `token` is cancelled; `estuary_steering_pathway_health`
    /// (0 up, 1 draining, 2 down) shows what this node sees.
    ///
    /// # Errors
    /// A message when the TLS client cannot be set up (`upstream.ca_file`).
    pub fn start_probes(
        &self,
        ca_file: Option<&std::path::Path>,
        registry: &Registry,
        token: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, String> {
        let tls = crate::upstream::tls_client_config(ca_file, None)
            .map_err(|e| format!("upstream.ca_file: {e}"))?;
        let client: ProbeClient = crate::upstream::client::small_client(tls);
        let gauge = IntGaugeVec::new(
            Opts::new(
                "estuary_steering_pathway_health",
                "Health of each steering pathway as this node sees it: 0 up, 1 draining, 2 down",
            ),
            &["pathway"],
        )
        .expect("valid");
        let _ = registry.register(Box::new(gauge.clone()));
        let me = self.clone();
        Ok(tokio::spawn(async move {
            me.probe_loop(client, gauge, token).await
        }))
    }

    async fn probe_loop(self, client: ProbeClient, gauge: IntGaugeVec, token: CancellationToken) {
        let cfg = self.cfg.clone();
        let own = cfg.self_index();
        let peers: Vec<(usize, String)> = cfg
            .pathways
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != own)
            .map(|(i, p)| {
                let url = p
                    .probe
                    .clone()
                    .unwrap_or_else(|| format!("{}/readyz", p.base));
                (i, url)
            })
            .collect();
        let mut fails = vec![0u32; cfg.pathways.len()];
        let mut tick = tokio::time::interval(cfg.probe_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                _ = tick.tick() => {}
            }
            let seen = futures_util::future::join_all(
                peers
                    .iter()
                    .map(|(_, url)| probe(&client, url, cfg.probe_timeout)),
            )
            .await;
            for ((i, url), seen) in peers.iter().zip(seen) {
                let before = self.health(*i);
                let now = next(seen, &mut fails[*i], before);
                if now != before {
                    let id = &cfg.pathways[*i].id;
                    tracing::warn!(pathway = %id, %url, from = before.label(), to = now.label(), "steering pathway health changed");
                }
                self.set_health(*i, now);
            }
            for i in 0..cfg.pathways.len() {
                gauge
                    .with_label_values(&[&cfg.pathways[i].id])
                    .set(self.health(i) as i64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lost_probe_is_not_down() {
        let mut f = 0;
        let h = next(Seen::Failed, &mut f, Health::Up);
        assert_eq!((h, f), (Health::Up, 1));
        let h = next(Seen::Failed, &mut f, h);
        assert_eq!(h, Health::Down);
        assert_eq!(next(Seen::Failed, &mut f, h), Health::Down);
        assert_eq!(next(Seen::Draining, &mut f, h), Health::Draining);
        assert_eq!(f, 0);
        assert_eq!(
            next(Seen::Failed, &mut f, Health::Draining),
            Health::Draining
        );
        assert_eq!(next(Seen::Ready, &mut f, Health::Draining), Health::Up);
    }

    #[tokio::test]
    async fn probes_read_readyz() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            for answer in [
                "200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nready",
                "503 Service Unavailable\r\nConnection: close\r\nContent-Length: 40\r\n\r\n{\"code\":\"draining\",\"message\":\"draining\"}",
                "503 Service Unavailable\r\nConnection: close\r\nContent-Length: 9\r\n\r\ndraining\n",
                "503 Service Unavailable\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbusy",
            ] {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let r = format!("HTTP/1.1 {answer}");
                s.write_all(r.as_bytes()).await.unwrap();
                let _ = s.shutdown().await;
            }
        });
        let tls = crate::upstream::tls_client_config(None, None).unwrap();
        let c: ProbeClient = crate::upstream::client::small_client(tls);
        let url = format!("http://{addr}/readyz");
        let t = Duration::from_secs(5);
        assert_eq!(probe(&c, &url, t).await, Seen::Ready);
        assert_eq!(probe(&c, &url, t).await, Seen::Draining);
        assert_eq!(probe(&c, &url, t).await, Seen::Draining);
        assert_eq!(probe(&c, &url, t).await, Seen::Failed);
        assert_eq!(
            probe(&c, "http://127.0.0.1:1/readyz", t).await,
            Seen::Failed
        );
        assert_eq!(probe(&c, "not a url", t).await, Seen::Failed);
    }
}
