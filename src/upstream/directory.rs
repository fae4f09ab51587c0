//! Origin discovery through Redis: a node registers each stream published to it under
//! `estuary:origin:{stream}` → its advertised base URL, with a lease refreshed every
//! third of it; an edge looks a stream up there before its static `origins`.

use std::{collections::HashSet, sync::Arc, time::Duration};

use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use super::UpstreamError;
use crate::live::Hub;

fn key(stream: &str) -> String {
    format!("estuary:origin:{stream}")
}

/// How often the registrar looks for streams that started or ended.
const REGISTRAR_POLL: Duration = Duration::from_millis(500);

/// Deletes a registration only if it is still ours (another node may have taken it).
const UNREGISTER: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

/// The Redis side of the origin directory.
pub(super) struct Discovery {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
}

impl Discovery {
    pub(super) fn new(url: &str) -> Result<Self, UpstreamError> {
        let client = redis::Client::open(url)
            .map_err(|e| UpstreamError::Setup(format!("upstream.redis: {e}")))?;
        Ok(Self {
            client,
            conn: OnceCell::new(),
        })
    }

    /// The connection, made on first use (Redis may start after the node); the manager
    /// reconnects by itself afterwards.
    async fn conn(&self) -> Option<ConnectionManager> {
        self.conn
            .get_or_try_init(|| async {
                match tokio::time::timeout(
                    Duration::from_secs(2),
                    self.client.get_connection_manager(),
                )
                .await
                {
                    Ok(Ok(c)) => Ok(c),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("timed out".to_owned()),
                }
            })
            .await
            .map_err(|e| tracing::warn!(error = %e, "origin directory: cannot reach Redis"))
            .ok()
            .cloned()
    }

    /// Where `stream` is published now, if any node registered it.
    pub(super) async fn lookup(&self, stream: &str) -> Option<String> {
        let mut c = self.conn().await?;
        let mut cmd = redis::cmd("GET");
        cmd.arg(key(stream));
        let q = cmd.query_async::<Option<String>>(&mut c);
        match tokio::time::timeout(Duration::from_secs(1), q).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "origin directory lookup failed");
                None
            }
            Err(_) => None,
        }
    }

    /// Keeps the streams published on this node registered until `token` is cancelled.
    pub(super) async fn run_registrar(
        self: Arc<Self>,
        hub: Arc<Hub>,
        advertise: String,
        lease: Duration,
        token: CancellationToken,
    ) {
        let script = redis::Script::new(UNREGISTER);
        let mut registered: HashSet<String> = HashSet::new();
        // Streams that start or end are seen within a poll; registrations are refreshed
        // every third of the lease.
        let mut tick = tokio::time::interval(REGISTRAR_POLL.min(lease / 3));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refreshed = tokio::time::Instant::now();
        tracing::info!(%advertise, "registering published streams in the origin directory");
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = token.cancelled() => break,
            }
            let live: HashSet<String> = hub.live_streams().into_iter().collect();
            let refresh = refreshed.elapsed() >= lease / 3;
            if live == registered && !refresh {
                continue;
            }
            let Some(mut c) = self.conn().await else {
                continue;
            };
            let mut ok = true;
            for s in live.iter().filter(|s| refresh || !registered.contains(*s)) {
                let mut cmd = redis::cmd("SET");
                cmd.arg(key(s))
                    .arg(&advertise)
                    .arg("PX")
                    .arg(lease.as_millis() as u64);
                if let Err(e) = cmd.query_async::<()>(&mut c).await {
                    tracing::warn!(stream = %s, error = %e, "origin registration failed");
                    ok = false;
                }
            }
            for s in registered.difference(&live) {
                let _ = script
                    .key(key(s))
                    .arg(&advertise)
                    .invoke_async::<i64>(&mut c)
                    .await;
            }
            if refresh && ok {
                refreshed = tokio::time::Instant::now();
            }
            // A failed registration is retried at the next poll.
            registered = if ok { live } else { HashSet::new() };
        }
        if let Some(mut c) = self.conn().await {
            for s in &registered {
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    script
                        .key(key(s))
                        .arg(&advertise)
                        .invoke_async::<i64>(&mut c),
                )
                .await;
            }
        }
    }
}
