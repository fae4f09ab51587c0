//! The admin API under `/admin`, behind `[admin] token` (`Authorization: Bearer …`), and
//! the `estuary admin …` client that calls it.
//!
//! | route | what |
//! |---|---|
//! | `GET /admin/publishers` | live publishers with their statistics, and bans in force |
//! | `POST /admin/publishers/{stream}/kick[?ban=30s]` | close a publisher's connection |
//! | `POST /admin/publishers/{stream}/unban` | lift a ban early |
//! | `GET /admin/viewers` | viewers per stream and rendition (see [`viewers`]) |
//! | `GET /admin/cache` | cache occupancy, in all and by stream |
//! | `GET /admin/config` | the config in force, secrets redacted |
//! | `POST /admin/drain` | start the drain (see [`crate::drain`]) |
//! | `POST /admin/reload` | read the config file again (as SIGHUP; see [`crate::reload`]) |
//!
//! Without a token configured every route answers 404 (`admin_disabled`); a missing or
//! wrong token answers 401 (`unauthorized`). Answers are JSON; errors have the API's
//! shape `{"code": …, "message": …}` (see `http::error`).

pub mod client;
mod config_view;
pub mod viewers;

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::{body::Incoming, header, Method, Request, Response, StatusCode};
use prometheus::{IntCounterVec, Opts, Registry};
use serde_json::json;

use crate::http::{AppState, Body};

pub use config_view::REDACTED;
pub use viewers::Viewers;

/// Longest ban a kick may set.
pub const MAX_BAN: Duration = Duration::from_secs(24 * 3600);
/// How long a kick waits for the publisher's session to end before answering.
const KICK_WAIT: Duration = Duration::from_secs(5);

/// The admin API's own state: the viewer tracker and the kick counter.
pub struct Admin {
    /// HLS viewers seen by media playlist requests.
    pub viewers: Viewers,
    kicked: IntCounterVec,
}

impl Admin {
    /// Registers `estuary_publishers_kicked_total{protocol}` on `registry`.
    pub fn register(registry: &Registry) -> Self {
        let kicked = IntCounterVec::new(
            Opts::new(
                "estuary_publishers_kicked_total",
                "Publishers disconnected by POST /admin/publishers/{stream}/kick",
            ),
            &["protocol"],
        )
        .expect("valid metric");
        // Registered once per registry; a duplicate only happens in tests sharing one.
        let _ = registry.register(Box::new(kicked.clone()));
        // Exported at 0 from the start, so dashboards and alerts find the series.
        for protocol in ["srt", "rtmp", "rtmps"] {
            kicked.with_label_values(&[protocol]);
        }
        Self {
            viewers: Viewers::default(),
            kicked,
        }
    }
}

/// Answers a request under `/admin`.
pub async fn handle(state: &AppState, req: Request<Incoming>) -> Response<Body> {
    let want = &state.cfg.load().admin.token;
    if want.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            "admin_disabled",
            "the admin API is off: set [admin] token in the config",
        );
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !constant_time_eq(given.as_bytes(), want.as_bytes()) {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the admin API needs Authorization: Bearer <admin.token>",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    let path = req.uri().path().to_owned();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').skip(1).collect();
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    let post = req.method() == Method::POST;
    match segs.as_slice() {
        ["drain"] if post => drain(state),
        ["reload"] if post => reload(state).await,
        ["publishers"] if get => publishers(state),
        ["publishers", stream, "kick"] if post => kick(state, stream, req.uri().query()).await,
        ["publishers", stream, "unban"] if post => unban(state, stream),
        ["viewers"] if get => viewers(state),
        ["cache"] if get => ok(&state.cache.occupancy()),
        ["config"] if get => ok(&config_view::redacted(&state.cfg.load())),
        ["drain" | "reload" | "publishers" | "viewers" | "cache" | "config"]
        | ["publishers", _, "kick" | "unban"] => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("{} is not allowed on {path}", req.method()),
        ),
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such admin route"),
    }
}

fn drain(state: &AppState) -> Response<Body> {
    if state.draining.start() {
        tracing::warn!("drain requested over /admin/drain");
    }
    reply(
        StatusCode::ACCEPTED,
        &json!({ "draining": true, "drain_timeout_secs": state.cfg.load().drain_timeout.as_secs() }),
    )
}

/// 200 with what changed and what needs a restart; 400 `invalid_config` naming the key
/// of a bad file (the running config stays); 409 `no_config_file` on built-in defaults.
async fn reload(state: &AppState) -> Response<Body> {
    match state.reloader.reload().await {
        Ok(report) => ok(&report),
        Err(e) => {
            let status = match e {
                crate::reload::ReloadError::NoFile => StatusCode::CONFLICT,
                crate::reload::ReloadError::Config(_) => StatusCode::BAD_REQUEST,
                crate::reload::ReloadError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            // The API's error shape, plus the failing key.
            reply(
                status,
                &json!({ "code": e.code(), "message": e.to_string(), "key": e.key() }),
            )
        }
    }
}

fn publishers(state: &AppState) -> Response<Body> {
    let list: Vec<_> = state
        .hub
        .live_streams()
        .into_iter()
        .filter_map(|name| {
            let mut v = state.hub.session(&name)?.stats_json();
            v["stream"] = json!(name);
            Some(v)
        })
        .collect();
    let bans: Vec<_> = state
        .hub
        .bans()
        .into_iter()
        .map(|(stream, left)| json!({ "stream": stream, "remaining_s": left.as_secs_f64().ceil() as u64 }))
        .collect();
    ok(&json!({ "publishers": list, "bans": bans }))
}

async fn kick(state: &AppState, stream: &str, query: Option<&str>) -> Response<Body> {
    let ban = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "ban")
        .map(|(_, v)| humantime::parse_duration(&v).map_err(|e| format!("ban={v}: {e}")));
    let ban = match ban {
        None => Duration::ZERO,
        Some(Ok(b)) if b <= MAX_BAN => b,
        Some(Ok(_)) => {
            let max = humantime::format_duration(MAX_BAN);
            return error(
                StatusCode::BAD_REQUEST,
                "bad_ban",
                &format!("ban is longer than {max}"),
            );
        }
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, "bad_ban", &e),
    };
    let Some(session) = state.hub.kick(stream, ban) else {
        return error(
            StatusCode::NOT_FOUND,
            "no_publisher",
            &format!("stream {stream:?} has no publisher"),
        );
    };
    let meta = session.publisher.get();
    let protocol = meta.map_or("unknown", |m| m.protocol);
    let remote = meta.map(|m| m.remote.to_string());
    state.admin.kicked.with_label_values(&[protocol]).inc();
    tracing::warn!(stream, protocol, remote = ?remote, ban = ?ban, "publisher kicked over /admin");
    // Answer once the session has ended, so `estuary admin kick` can say it is gone.
    let deadline = tokio::time::Instant::now() + KICK_WAIT;
    let closed = loop {
        let current = state.hub.session(stream);
        if !current.is_some_and(|c| std::sync::Arc::ptr_eq(&c, &session)) {
            break true;
        }
        if tokio::time::Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    ok(&json!({
        "stream": stream,
        "kicked": true,
        "closed": closed,
        "protocol": protocol,
        "remote": remote,
        "ban_s": ban.as_secs(),
    }))
}

fn unban(state: &AppState, stream: &str) -> Response<Body> {
    if state.hub.unban(stream) {
        tracing::info!(stream, "publish ban lifted over /admin");
        ok(&json!({ "stream": stream, "banned": false }))
    } else {
        error(
            StatusCode::NOT_FOUND,
            "not_banned",
            &format!("stream {stream:?} is not banned"),
        )
    }
}

fn viewers(state: &AppState) -> Response<Body> {
    let hls = state.admin.viewers.snapshot();
    let mut names: Vec<String> = hls.keys().cloned().collect();
    names.extend(state.hub.live_streams());
    names.extend(state.store.stream_names());
    names.sort();
    names.dedup();
    let streams: Vec<_> = names
        .iter()
        .map(|name| {
            let v = hls.get(name).cloned().unwrap_or_default();
            json!({
                "stream": name,
                "hls": v.hls,
                "renditions": v.renditions,
                "websocket": state.viewers(name),
            })
        })
        .collect();
    ok(&json!({ "window_s": viewers::WINDOW.as_secs(), "streams": streams }))
}

fn ok(body: &impl serde::Serialize) -> Response<Body> {
    reply(StatusCode::OK, body)
}

fn reply(status: StatusCode, body: &impl serde::Serialize) -> Response<Body> {
    let mut r = crate::http::full(
        status,
        "application/json",
        serde_json::to_vec(body).unwrap_or_default(),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    crate::interact::error_response(status, code, message).map(BodyExt::boxed)
}

/// Compares without an early exit, so response timing does not leak the token's prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
