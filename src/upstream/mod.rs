//! The edge tier: a node serves streams it has no publisher for by following an
//! origin's LL-HLS (another Estuary node, a mid-tier edge, or any LL-HLS server).
//!
//! # Layout
//! - [`config`]: `[upstream]`: origins, secret, CA, idle and failover times.
//! - [`client`]: hyper's client, h2c or h2 over rustls, with the shared secret.
//! - [`playlist`]: parsing of upstream playlists and the multivariant rewrite.
//! - [`window`]: the edge's own window of a rendition and its rendering.
//! - `follower` (with `follower/objects`): one actor per watched (stream, rendition):
//!   one blocking reload and one preload-hint GET outstanding upstream; each object
//!   stored once.
//! - `directory`: origin discovery through Redis (registration under a lease).
//! - [`metrics`]: requests by result, bytes pulled, active followers, edge latency.
//!
//! [`Upstream`] keeps the followed streams: the first viewer request for a stream not published
//! here fetches the multivariant playlist once (concurrent misses wait on the same
//! fetch), and followers start for the renditions viewers actually ask for.

pub mod client;
pub mod config;
mod directory;
mod follower;
pub mod metrics;
pub mod playlist;
pub mod window;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use hyper::{header, HeaderMap, StatusCode};
use tokio::sync::{watch, OnceCell};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use client::tls_client_config;
pub use config::UpstreamConfig;

use crate::{config::SharedConfig, store::Store};
use client::Client;
use metrics::UpstreamMetrics;
use playlist::Rendition;

/// Why the edge could not serve a stream from upstream.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// No origin has the stream or rendition.
    #[error("not found upstream")]
    NotFound,
    /// Upstream answered another non-success status.
    #[error("upstream answered {0}")]
    Status(u16),
    /// Upstream did not answer in time.
    #[error("upstream request timed out")]
    Timeout,
    /// The connection failed.
    #[error("upstream connection failed: {0}")]
    Connect(String),
    /// The body was cut short or too large.
    #[error("upstream body failed: {0}")]
    Body(String),
    /// The playlist could not be used.
    #[error("unusable upstream playlist: {0}")]
    Malformed(String),
    /// A URL that cannot be requested.
    #[error("bad upstream URL {0}")]
    Url(String),
    /// The client could not be built (CA file, secret).
    #[error("upstream setup: {0}")]
    Setup(String),
}

impl UpstreamError {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::Status(_) => "status",
            Self::Timeout => "timeout",
            Self::Connect(_) => "connect",
            Self::Body(_) => "body",
            Self::Malformed(_) => "malformed",
            Self::Url(_) => "url",
            Self::Setup(_) => "setup",
        }
    }

    /// The status a viewer gets: 404 when upstream has no such thing, else 503.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Origin side: whether a request carries the upstream secret, when it is required.
pub fn authorized(cfg: &UpstreamConfig, headers: &HeaderMap) -> bool {
    !cfg.require_secret || credentialed(cfg, headers)
}

/// Sent on every upstream request: a node of the tier pulling. Such a request gets the
/// plain multivariant playlist, without the serving node's content steering (the edge
/// adds its own).
pub const TIER_HEADER: &str = "x-estuary-tier";

/// Whether a request comes from a node of the tier (its `upstream.secret`, or the
/// [`TIER_HEADER`] every upstream request carries).
pub fn from_tier(cfg: &UpstreamConfig, headers: &HeaderMap) -> bool {
    headers.contains_key(TIER_HEADER) || credentialed(cfg, headers)
}

/// Whether the request carries this node's `upstream.secret`: another node of the
/// tier pulling on its own credential, which a signed stream lets in without a viewer
/// token (the edge checks its viewers' tokens itself).
pub fn credentialed(cfg: &UpstreamConfig, headers: &HeaderMap) -> bool {
    let Some(secret) = &cfg.secret else {
        return false;
    };
    let want = format!("Bearer {secret}");
    headers
        .get(header::AUTHORIZATION)
        .is_some_and(|v| constant_time_eq(v.as_bytes(), want.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a follower has published yet.
#[derive(Debug, Clone)]
enum Readiness {
    Starting,
    Published,
    Failed(UpstreamError),
}

/// A follower's link to the viewers: when they last asked, and whether it is ready.
struct Activity {
    last: AtomicU64,
    ready: watch::Sender<Readiness>,
}

impl Activity {
    fn new(now_ms: u64) -> Self {
        Self {
            last: AtomicU64::new(now_ms),
            ready: watch::channel(Readiness::Starting).0,
        }
    }
}

/// Where a stopped follower left its numbering, so a new one never goes back.
#[derive(Debug, Clone, Copy, Default)]
struct Resume {
    next_msn: u64,
    epoch: u32,
}

/// The renditions of a followed stream, from its multivariant playlist.
struct Catalog {
    renditions: Vec<Rendition>,
}

/// A stream this node follows.
struct Remote {
    name: String,
    catalog: OnceCell<Arc<Catalog>>,
    /// The origins to try: the one registered in the directory first, then the static
    /// ones.
    origins: Mutex<Arc<[String]>>,
    /// Index of the origin that answered the multivariant playlist.
    origin: AtomicUsize,
    followers: Mutex<HashMap<String, Arc<Activity>>>,
    /// Set (under the followers lock) when its last follower stopped: the stream is
    /// forgotten, so the next viewer fetches its multivariant playlist afresh.
    retired: std::sync::atomic::AtomicBool,
}

struct Inner {
    /// `[upstream]` is restart-only (see [`crate::reload::plan`]); `hls.blocking_timeout`
    /// follows a reload.
    cfg: SharedConfig,
    static_origins: Arc<[String]>,
    discovery: Option<Arc<directory::Discovery>>,
    /// This node's own advertised base URL (never pulled from).
    advertise: std::sync::OnceLock<String>,
    client: Client,
    store: Store,
    metrics: UpstreamMetrics,
    remotes: Mutex<HashMap<String, Arc<Remote>>>,
    /// Where stopped followers left their numbering, by (stream, rendition).
    resume: Mutex<HashMap<(String, String), Resume>>,
    /// Streams this node has followed (their store entries are not local streams).
    followed: Mutex<HashSet<String>>,
    /// Recent failures by stream (and by `stream/rendition`), so a dead origin costs a
    /// few requests a second, not some per viewer.
    failures: moka::sync::Cache<String, UpstreamError>,
    started: Instant,
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Inner {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Where to pull `stream` from: the directory's answer first, then the static list.
    async fn origins_for(&self, stream: &str) -> Arc<[String]> {
        let mut out: Vec<String> = Vec::with_capacity(self.static_origins.len() + 1);
        if let Some(d) = &self.discovery {
            if let Some(url) = d.lookup(stream).await {
                let url = url.trim_end_matches('/').to_owned();
                if self.advertise.get() != Some(&url) {
                    out.push(url);
                }
            }
        }
        for o in self.static_origins.iter() {
            if !out.contains(o) {
                out.push(o.clone());
            }
        }
        out.into()
    }
}

/// The edge tier of a node.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

impl Upstream {
    /// Builds the client and the directory; followers run until `token` is cancelled.
    ///
    /// # Errors
    /// [`UpstreamError::Setup`] when the CA file or the secret cannot be used.
    pub fn new(
        shared: impl Into<SharedConfig>,
        store: Store,
        registry: &prometheus::Registry,
        token: CancellationToken,
    ) -> Result<Self, UpstreamError> {
        let shared: SharedConfig = shared.into();
        let cfg = shared.get();
        let metrics = UpstreamMetrics::register(registry);
        let client = Client::new(&cfg.upstream, metrics.clone())?;
        let discovery = match &cfg.upstream.redis {
            Some(url) => Some(Arc::new(directory::Discovery::new(url)?)),
            None => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                static_origins: cfg.upstream.origin_bases().into(),
                discovery,
                advertise: std::sync::OnceLock::new(),
                cfg: shared,
                client,
                store,
                metrics,
                remotes: Mutex::default(),
                resume: Mutex::default(),
                followed: Mutex::default(),
                failures: moka::sync::Cache::builder()
                    .max_capacity(10_000)
                    .time_to_live(Duration::from_secs(1))
                    .build(),
                started: Instant::now(),
                token,
                tracker: TaskTracker::new(),
            }),
        })
    }

    /// With `upstream.redis`, registers the streams published on this node (bound at
    /// `http_addr`) in the origin directory until shutdown.
    pub fn register_streams(&self, hub: Arc<crate::live::Hub>, http_addr: std::net::SocketAddr) {
        let inner = &self.inner;
        let Some(d) = inner.discovery.clone() else {
            return;
        };
        let cfg = inner.cfg.get();
        let advertise = match &cfg.upstream.advertise {
            Some(a) => a.trim_end_matches('/').to_owned(),
            None if http_addr.ip().is_unspecified() => {
                tracing::warn!("upstream.redis is set but http.listen is a wildcard address: set upstream.advertise to register streams");
                return;
            }
            None => {
                let scheme = if cfg.http.tls_cert.is_some() {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{http_addr}/live")
            }
        };
        let _ = inner.advertise.set(advertise.clone());
        inner.tracker.spawn(d.run_registrar(
            hub,
            advertise,
            cfg.upstream.lease,
            inner.token.clone(),
        ));
    }

    /// Waits until every follower has stopped (after the token is cancelled).
    pub async fn closed(&self) {
        self.inner.token.cancelled().await;
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }

    /// Called on every viewer request for `/live/{stream}/…`: for a stream not
    /// published here, makes sure its multivariant playlist is published and, for a
    /// rendition, that its follower runs and has published; counts as viewer activity.
    ///
    /// # Errors
    /// [`UpstreamError`] when upstream has no such stream or rendition (404 for the
    /// viewer) or cannot serve it now (503).
    pub async fn ensure(&self, stream: &str, rendition: Option<&str>) -> Result<(), UpstreamError> {
        // A stream whose last follower just stopped is fetched afresh: twice at most.
        for _ in 0..2 {
            if let Some(r) = self.try_ensure(stream, rendition).await {
                return r;
            }
        }
        Err(UpstreamError::Timeout)
    }

    /// [`Upstream::ensure`], or `None` when the stream was retired meanwhile.
    async fn try_ensure(
        &self,
        stream: &str,
        rendition: Option<&str>,
    ) -> Option<Result<(), UpstreamError>> {
        let inner = &self.inner;
        let existing = inner
            .remotes
            .lock()
            .expect("not poisoned")
            .get(stream)
            .cloned();
        let remote = match existing {
            Some(r) => r,
            None => {
                let followed = inner
                    .followed
                    .lock()
                    .expect("not poisoned")
                    .contains(stream);
                if !followed && inner.store.stream(stream).is_some() {
                    return Some(Ok(())); // Published here.
                }
                if crate::ingest::streamid::validate_name(stream).is_err() {
                    return Some(Err(UpstreamError::NotFound));
                }
                inner
                    .remotes
                    .lock()
                    .expect("not poisoned")
                    .entry(stream.to_owned())
                    .or_insert_with(|| {
                        Arc::new(Remote {
                            name: stream.to_owned(),
                            catalog: OnceCell::new(),
                            origins: Mutex::new(Arc::from(Vec::new())),
                            origin: AtomicUsize::new(0),
                            followers: Mutex::default(),
                            retired: std::sync::atomic::AtomicBool::new(false),
                        })
                    })
                    .clone()
            }
        };
        let catalog = match self.catalog(&remote).await {
            Ok(c) => c,
            Err(e) => {
                // Forget a stream upstream does not have: names are the viewers' to pick.
                let mut m = inner.remotes.lock().expect("not poisoned");
                if m.get(stream).is_some_and(|r| Arc::ptr_eq(r, &remote))
                    && remote.catalog.get().is_none()
                {
                    m.remove(stream);
                }
                return Some(Err(e));
            }
        };
        let Some(rendition) = rendition else {
            return Some(Ok(()));
        };
        let Some(r) = catalog.renditions.iter().find(|r| r.name == rendition) else {
            return Some(Err(UpstreamError::NotFound));
        };
        if let Some(e) = inner.failures.get(&format!("{stream}/{}", r.name)) {
            let running = remote
                .followers
                .lock()
                .expect("not poisoned")
                .contains_key(&r.name);
            if !running {
                return Some(Err(e));
            }
        }
        let activity = self.touch_or_start(&remote, &catalog, r)?;
        let mut rx = activity.ready.subscribe();
        let wait = inner.cfg.load().hls.blocking_timeout;
        let state = tokio::time::timeout(wait, rx.wait_for(|s| !matches!(s, Readiness::Starting)))
            .await
            .map(|r| r.map(|s| s.clone()));
        Some(match state {
            Ok(Ok(Readiness::Published)) => Ok(()),
            Ok(Ok(Readiness::Failed(e))) => Err(e),
            _ => Err(UpstreamError::Timeout),
        })
    }

    /// The stream's renditions, fetching its multivariant playlist on first use; one
    /// fetch however many viewers ask at once.
    async fn catalog(&self, remote: &Arc<Remote>) -> Result<Arc<Catalog>, UpstreamError> {
        let inner = &self.inner;
        remote
            .catalog
            .get_or_try_init(|| async {
                if let Some(e) = inner.failures.get(&remote.name) {
                    return Err(e);
                }
                let r = self.fetch_catalog(remote).await;
                if let Err(e) = &r {
                    inner.failures.insert(remote.name.clone(), e.clone());
                }
                r
            })
            .await
            .cloned()
    }

    async fn fetch_catalog(&self, remote: &Remote) -> Result<Arc<Catalog>, UpstreamError> {
        let inner = &self.inner;
        let mut last = UpstreamError::NotFound;
        let origins = inner.origins_for(&remote.name).await;
        *remote.origins.lock().expect("not poisoned") = origins.clone();
        for (idx, origin) in origins.iter().enumerate() {
            let url = format!("{origin}/{}/index.m3u8", remote.name);
            let body = match inner
                .client
                .get(
                    &url,
                    client::Kind::Multivariant,
                    inner.cfg.load().upstream.request_timeout,
                )
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let parsed = std::str::from_utf8(&body)
                .map_err(|_| "not UTF-8".to_owned())
                .and_then(|t| {
                    let t = crate::steering::playlist::one_pathway(t);
                    playlist::rewrite_multivariant(&t).map_err(|e| e.to_string())
                });
            match parsed {
                Ok((text, renditions)) => {
                    remote.origin.store(idx, Ordering::Relaxed);
                    inner
                        .followed
                        .lock()
                        .expect("not poisoned")
                        .insert(remote.name.clone());
                    inner
                        .store
                        .stream_or_create(&remote.name)
                        .publish_multivariant(text.into());
                    tracing::info!(stream = %remote.name, %origin, renditions = renditions.len(), "following stream from upstream");
                    return Ok(Arc::new(Catalog { renditions }));
                }
                Err(reason) => {
                    inner
                        .metrics
                        .rejected
                        .with_label_values(&["multivariant"])
                        .inc();
                    tracing::warn!(%url, %reason, "unusable multivariant playlist");
                    last = UpstreamError::Malformed(reason);
                }
            }
        }
        Err(last)
    }

    /// Marks viewer activity on a rendition's follower, starting it if none runs;
    /// `None` if the stream was retired meanwhile.
    fn touch_or_start(
        &self,
        remote: &Arc<Remote>,
        catalog: &Arc<Catalog>,
        r: &Rendition,
    ) -> Option<Arc<Activity>> {
        let inner = &self.inner;
        let now = inner.now_ms();
        let mut followers = remote.followers.lock().expect("not poisoned");
        if remote.retired.load(Ordering::Relaxed) {
            return None;
        }
        if let Some(a) = followers.get(&r.name) {
            a.last.store(now, Ordering::Relaxed);
            return Some(a.clone());
        }
        let activity = Arc::new(Activity::new(now));
        followers.insert(r.name.clone(), activity.clone());
        let resume = inner
            .resume
            .lock()
            .expect("not poisoned")
            .get(&(remote.name.clone(), r.name.clone()))
            .copied()
            .unwrap_or_default();
        let f = follower::Follower::new(follower::Start {
            up: inner.clone(),
            remote: remote.clone(),
            catalog: catalog.clone(),
            rendition: r.clone(),
            activity: activity.clone(),
            resume,
        });
        inner.tracker.spawn(f.run());
        Some(activity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_check() {
        let mut cfg = UpstreamConfig::default();
        let mut h = HeaderMap::new();
        assert!(authorized(&cfg, &h));
        cfg.require_secret = true;
        cfg.secret = Some("s3cret".into());
        assert!(!authorized(&cfg, &h));
        h.insert(header::AUTHORIZATION, "Bearer s3cre".parse().unwrap());
        assert!(!authorized(&cfg, &h));
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(authorized(&cfg, &h));
    }

    #[test]
    fn statuses() {
        assert_eq!(UpstreamError::NotFound.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            UpstreamError::Status(500).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(UpstreamError::Body("cut".into()).label(), "body");
    }
}
