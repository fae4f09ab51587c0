//! Builds the components from a config and runs them until the token is cancelled.

use std::{net::SocketAddr, sync::Arc};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::{Config, SharedConfig},
    http::{AppState, HttpError, Server},
    ingest::{
        rtmp::{RtmpError, RtmpIngest},
        Ingest, IngestError,
    },
    interact::{Interact, Timeline},
    live::Hub,
    media::MediaError,
    metrics::Metrics,
    store::{MemoryStore, Store},
};

/// What the interaction channel asks of the media side: where the timeline is, and which
/// streams are real (configured, publishing here, or followed from an origin).
struct MediaSide {
    store: Store,
    hub: Arc<Hub>,
    /// Its streams are the configured ones (a reload adds or removes rooms' streams).
    cfg: SharedConfig,
}

impl Timeline for MediaSide {
    fn now(&self, stream: &str) -> Option<crate::interact::TimelineStamp> {
        self.store.now(stream)
    }

    fn exists(&self, stream: &str) -> bool {
        self.cfg.load().streams.contains_key(stream)
            || self.hub.is_live(stream)
            || self.now(stream).is_some()
    }
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// GStreamer or an element is missing.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// The SRT listener could not bind.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// An RTMP listener could not bind, or the RTMPS certificate is unusable.
    #[error(transparent)]
    Rtmp(#[from] RtmpError),
    /// The HTTP server could not start.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The interaction channel could not start (e.g. Redis unreachable).
    #[error(transparent)]
    Interact(#[from] crate::interact::InteractError),
    /// The upstream client could not be built (CA file).
    #[error(transparent)]
    Upstream(#[from] crate::upstream::UpstreamError),
    /// The webhook client could not be built.
    #[error("auth: {0}")]
    Auth(String),
    /// The steering probes' client could not be built.
    #[error("steering: {0}")]
    Steering(String),
}

/// A started node.
pub struct Node {
    /// Where HTTP listens.
    pub http_addr: SocketAddr,
    /// Where SRT listens.
    pub srt_addr: SocketAddr,
    /// Where RTMP listens (`None` when `rtmp.enabled` is false).
    pub rtmp_addr: Option<SocketAddr>,
    /// Where RTMPS listens (`None` without a certificate).
    pub rtmps_addr: Option<SocketAddr>,
    tracker: TaskTracker,
    state: Arc<AppState>,
}

impl Node {
    /// Binds every listener and starts serving.
    ///
    /// # Errors
    /// [`NodeError`] when a listener cannot bind or GStreamer is unusable.
    pub async fn start(cfg: Config, token: CancellationToken) -> Result<Self, NodeError> {
        Self::start_with(cfg, token, crate::systemd::Inherited::default()).await
    }

    /// Like [`Node::start`], taking over the sockets systemd handed over (socket
    /// activation) instead of binding `http.listen` / `srt.listen` where given.
    ///
    /// # Errors
    /// [`NodeError`] when a listener cannot bind or GStreamer is unusable.
    pub async fn start_with(
        cfg: Config,
        token: CancellationToken,
        inherited: crate::systemd::Inherited,
    ) -> Result<Self, NodeError> {
        crate::media::init()?;
        let shared = SharedConfig::new(cfg);
        let cfg = shared.get();
        let registry = prometheus::Registry::new();
        let reloader = Arc::new(crate::reload::Reloader::register(shared.clone(), &registry));
        let metrics = Metrics::register(&registry);
        crate::heap::HeapStats::register(&registry);
        let cache = MemoryStore::new(cfg.cache.max_bytes, metrics.clone());
        let store = Store::new(Arc::new(cache.clone()));
        let hub = Hub::new(shared.clone(), store.clone(), metrics.clone());
        let auth =
            Arc::new(crate::auth::Auth::new(shared.clone(), &registry).map_err(NodeError::Auth)?);
        let mut ingest =
            Ingest::bind_with(shared.clone(), hub.clone(), metrics.clone(), inherited.srt).await?;
        ingest.set_hooks(auth.hooks().clone());
        let rtmp = RtmpIngest::bind_with(
            shared.clone(),
            hub.clone(),
            metrics.clone(),
            &registry,
            ingest.draining(),
        )
        .await?
        .map(|r| r.with_hooks(auth.hooks().clone()));
        let rtmp_addr = rtmp.as_ref().and_then(RtmpIngest::local_addr);
        let rtmps_addr = rtmp.as_ref().and_then(RtmpIngest::tls_local_addr);
        let interact = Interact::start(
            cfg.interact.clone(),
            Arc::new(MediaSide {
                store: store.clone(),
                hub: hub.clone(),
                cfg: shared.clone(),
            }),
            &registry,
            token.child_token(),
        )
        .await?;
        let source = interact.clone();
        hub.set_dateranges(Arc::new(move |stream: &str| source.dateranges(stream)));
        let upstream = if cfg.upstream.origins.is_empty() && cfg.upstream.redis.is_none() {
            None
        } else {
            Some(crate::upstream::Upstream::new(
                shared.clone(),
                store.clone(),
                &registry,
                token.child_token(),
            )?)
        };
        let hub_for_directory = hub.clone();
        let admin = crate::admin::Admin::register(&registry);
        let steering = crate::steering::Steering::new(&cfg.steering, ingest.draining());
        let probes = match &steering {
            Some(s) => Some(
                s.start_probes(
                    cfg.upstream.ca_file.as_deref(),
                    &registry,
                    token.child_token(),
                )
                .map_err(NodeError::Steering)?,
            ),
            None => None,
        };
        let state = Arc::new(AppState {
            cfg: shared.clone(),
            reloader,
            store,
            hub,
            metrics,
            registry,
            cache,
            srt_addr: ingest.local_addr(),
            rtmp_addr,
            rtmps_addr,
            interact: interact.clone(),
            upstream: upstream.clone(),
            draining: ingest.draining(),
            admin,
            auth,
            steering,
        });
        let server = Server::bind_with(state.clone(), inherited.http).await?;
        if let Some(up) = &upstream {
            up.register_streams(hub_for_directory, server.local_addr());
        }
        let (http_addr, srt_addr) = (server.local_addr(), ingest.local_addr());
        let tracker = TaskTracker::new();
        tracker.spawn(ingest.run(token.clone()));
        if let Some(rtmp) = rtmp {
            tracker.spawn(rtmp.run(token.clone()));
        }
        tracker.spawn(server.run(token.clone()));
        if let Some(up) = upstream {
            tracker.spawn(async move { up.closed().await });
        }
        if let Some(p) = probes {
            tracker.spawn(async move {
                let _ = p.await;
            });
        }
        // The interaction hub keeps its own `[interact]`: hand it each reloaded one.
        let mut generations = shared.subscribe();
        let for_reload = interact.clone();
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    Ok(()) = generations.changed() => {
                        for_reload.reconfigure(shared.get().interact.clone());
                    }
                }
            }
            interact.closed().await;
        });
        tracker.close();
        Ok(Self {
            http_addr,
            srt_addr,
            rtmp_addr,
            rtmps_addr,
            tracker,
            state,
        })
    }

    /// Waits until every component has stopped.
    pub async fn wait(self) {
        self.tracker.wait().await;
    }

    /// Reloads the config (SIGHUP; `POST /admin/reload` calls the same).
    pub fn reloader(&self) -> Arc<crate::reload::Reloader> {
        self.state.reloader.clone()
    }

    /// The config in force now.
    pub fn config(&self) -> Arc<Config> {
        self.state.cfg.get()
    }

    /// The drain switch (`POST /admin/drain`, SIGUSR1).
    pub fn drain(&self) -> crate::drain::Drain {
        self.state.draining.clone()
    }

    /// Publishers connected and interaction viewers, for the drain to wait on.
    pub fn sessions(&self) -> (i64, i64) {
        sessions(&self.state)
    }

    /// One line for `systemctl status`: publishers connected and interaction viewers.
    pub fn status_line(&self) -> String {
        self.status_fn()()
    }

    /// A closure computing [`Node::status_line`], for a task that outlives a borrow.
    pub fn status_fn(&self) -> impl Fn() -> String + Send + Sync + 'static {
        let state = self.state.clone();
        move || {
            let (publishers, viewers) = sessions(&state);
            let line = crate::systemd::status_line(publishers, viewers);
            if state.draining.is_draining() {
                format!("draining: {line}")
            } else {
                line
            }
        }
    }
}

fn sessions(state: &AppState) -> (i64, i64) {
    let viewers = state
        .registry
        .gather()
        .iter()
        .find(|f| f.name() == "estuary_interact_connections")
        .and_then(|f| {
            f.get_metric()
                .first()
                .map(|m| m.get_gauge().get_value() as i64)
        })
        .unwrap_or(0);
    (state.metrics.publishers_active.get(), viewers)
}
