//! Access control: signed playback URLs (Akamai EdgeAuth tokens), and the publish and
//! play webhooks that plug in an operator's own user database.
//!
//! # Layout
//! - [`config`]: `[auth]` and the per-stream `playback` / `playback_key`.
//! - [`token`]: the EdgeAuth token format: verify, mint, ACL patterns.
//! - [`carry`]: where a token is found in a request and how playlists carry it on.
//! - [`hooks`]: the webhook client and its JSON bodies.
//!
//! A request for `/live/{stream}/…` (playlists and media, not the interaction channel)
//! passes [`Auth::admit`]: a node of the tier pulling with the shared `upstream.secret`
//! goes through; a signed stream needs a valid token whose ACL covers the path; then
//! the play hook, if configured, decides once per token (or viewer address) and stream,
//! and the answer is reused for `play_cache_ttl`. Cache keys of media objects never see
//! the token: one cached part serves every entitled viewer.

pub mod carry;
pub mod config;
pub mod hooks;
pub mod token;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{header, HeaderMap, Response, StatusCode};
use moka::sync::Cache;
use prometheus::{IntCounterVec, Opts, Registry};
use tokio::sync::OnceCell;

pub use config::{AuthConfig, Playback};
pub use hooks::{Hooks, PublishCall, PublishVerdict};
pub use token::{Grant, Refusal};

use crate::config::{Config, SharedConfig};

/// One viewer's request, as far as access control looks at it.
pub struct Viewer<'a> {
    /// The stream.
    pub stream: &'a str,
    /// The path checked against the ACL (`/live/{stream}/…`, without a path prefix).
    pub path: &'a str,
    /// The query string.
    pub query: Option<&'a str>,
    /// The request headers (cookie, user agent, upstream credential).
    pub headers: &'a HeaderMap,
    /// A token taken from a `/token/{token}/` path prefix.
    pub path_token: Option<String>,
    /// The client's address.
    pub remote: SocketAddr,
}

/// Let in; what the served playlists must carry.
#[derive(Debug, Default)]
pub struct Admitted {
    /// `name=token` to append to every playlist URI (the token came as a query
    /// parameter).
    pub carry: Option<String>,
    /// The viewer's token and where it came from (content steering writes it into the
    /// URIs that lead to other nodes).
    pub token: Option<(String, carry::Source)>,
}

/// The play decision cache: (stream, token or address) → allowed. The cell makes
/// concurrent first requests of one viewer share one hook call.
type PlayCache = Cache<(String, String), Arc<OnceCell<bool>>>;

/// Access control for the HTTP side; the webhook client for ingest.
pub struct Auth {
    /// Read per request: keys and playback modes follow a reload.
    cfg: SharedConfig,
    hooks: Hooks,
    plays: PlayCache,
    refused: IntCounterVec,
}

impl Auth {
    /// Builds the webhook client and registers the metrics.
    ///
    /// # Errors
    /// A message when the webhook client cannot be set up.
    pub fn new(shared: impl Into<SharedConfig>, registry: &Registry) -> Result<Self, String> {
        let shared: SharedConfig = shared.into();
        let cfg = shared.get();
        let hooks = Hooks::new(Arc::new(cfg.auth.clone()), registry)?;
        let refused = IntCounterVec::new(
            Opts::new(
                "estuary_playback_refused_total",
                "Playback requests refused (403), by reason",
            ),
            &["reason"],
        )
        .expect("valid");
        let _ = registry.register(Box::new(refused.clone()));
        let plays = Cache::builder()
            .max_capacity(cfg.auth.play_cache_entries)
            .time_to_live(cfg.auth.play_cache_ttl.max(Duration::from_millis(1)))
            .build();
        Ok(Self {
            cfg: shared,
            hooks,
            plays,
            refused,
        })
    }

    /// The webhook client (ingest asks the publish hook through it).
    pub fn hooks(&self) -> &Hooks {
        &self.hooks
    }

    /// Decides a playback request.
    ///
    /// # Errors
    /// The 403 answer (`{"code": …, "message": …}`), already counted.
    pub async fn admit(&self, v: Viewer<'_>) -> Result<Admitted, Response<Full<Bytes>>> {
        self.decide(v).await.map_err(|r| {
            self.refused.with_label_values(&[r.code()]).inc();
            refusal(r)
        })
    }

    async fn decide(&self, mut v: Viewer<'_>) -> Result<Admitted, Refusal> {
        // An owned snapshot: it is held across the play hook's await.
        let cfg = self.cfg.get();
        if crate::upstream::credentialed(&cfg.upstream, v.headers) {
            return Ok(Admitted::default());
        }
        let a = &cfg.auth;
        let (tok, source) = match v.path_token.take() {
            Some(t) => (Some(t), carry::Source::Path),
            None => match carry::from_query(v.query, &a.token_name) {
                Some(t) => (Some(t), carry::Source::Query),
                None => (
                    carry::from_cookie(v.headers, &a.token_name),
                    carry::Source::Cookie,
                ),
            },
        };
        let mut id = None;
        if let Some(key) = a.signed_key(&cfg.streams, v.stream) {
            let t = tok.as_deref().ok_or(Refusal::Missing)?;
            let claims = token::verify(
                t,
                &key,
                a.playback_salt.as_deref(),
                v.path,
                v.remote.ip(),
                unix_now(),
            )?;
            id = claims.id;
        }
        if let Some(url) = &a.play_url {
            // Boxed: the hook's HTTP call is a large future, and every request's future
            // (parked blocking reloads included) would otherwise carry room for it.
            Box::pin(self.play_hook(url, &v, tok.as_deref(), id.as_deref())).await?;
        }
        Ok(Admitted {
            carry: tok
                .as_ref()
                .filter(|_| source == carry::Source::Query)
                .map(|t| carry::query_pair(&a.token_name, t)),
            token: tok.map(|t| (t, source)),
        })
    }

    /// The cached play decision, asking the hook on a miss. A failed call is not cached.
    async fn play_hook(
        &self,
        url: &str,
        v: &Viewer<'_>,
        tok: Option<&str>,
        id: Option<&str>,
    ) -> Result<(), Refusal> {
        let who = tok.map_or_else(|| format!("ip:{}", v.remote.ip()), |t| format!("token:{t}"));
        let cell = self
            .plays
            .get_with((v.stream.to_owned(), who), || Arc::new(OnceCell::new()));
        let call = hooks::PlayCall {
            action: "play",
            stream: v.stream,
            token: tok,
            token_id: id,
            remote_addr: v.remote,
            path: v.path,
            user_agent: v
                .headers
                .get(header::USER_AGENT)
                .and_then(|h| h.to_str().ok()),
        };
        let r = cell
            .get_or_try_init(|| self.hooks.play(url, &call))
            .await
            .copied();
        match r {
            Ok(true) => Ok(()),
            Ok(false) => Err(Refusal::Denied),
            Err(e) if self.cfg.load().auth.play_fail_open => {
                tracing::warn!(stream = v.stream, error = %e, "play hook failed; letting in (play_fail_open)");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(stream = v.stream, error = %e, "play hook failed; refusing");
                Err(Refusal::HookFailed)
            }
        }
    }
}

/// The 403 answer.
fn refusal(r: Refusal) -> Response<Full<Bytes>> {
    crate::http::error::full(StatusCode::FORBIDDEN, r.code(), r.message())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Mints a token for `stream` with the key the config gives it: ACL `/live/{stream}/*`,
/// valid for `ttl` from `start` (Unix seconds, written as `st`) or from now.
///
/// # Errors
/// A message when the config has no key for the stream.
pub fn mint_for(
    cfg: &Config,
    stream: &str,
    ttl: Duration,
    start: Option<u64>,
    ip: Option<String>,
    id: Option<String>,
) -> Result<String, String> {
    let hex_key = cfg
        .streams
        .get(stream)
        .and_then(|s| s.playback_key.as_deref())
        .or(cfg.auth.playback_key.as_deref())
        .ok_or_else(|| {
            format!("no key: set auth.playback_key or streams.{stream}.playback_key in the config")
        })?;
    let key = config::decode_key(hex_key).map_err(|e| format!("playback key {e}"))?;
    let from = start.unwrap_or_else(unix_now);
    Ok(token::mint(
        &key,
        cfg.auth.playback_salt.as_deref(),
        &Grant {
            acl: vec![format!("/live/{stream}/*")],
            start,
            exp: from + ttl.as_secs().max(1),
            ip,
            id,
            data: None,
        },
    ))
}
