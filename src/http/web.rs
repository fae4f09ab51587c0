//! The player and front pages, their static files, and the stream list they read.

use std::{path::Path, sync::Arc};

use hyper::{header, Request, Response, StatusCode};

use super::{error, full, AppState, Body};

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("map") => "application/json",
        _ => "application/octet-stream",
    }
}

/// A file name we are willing to serve: no separators, no leading dot.
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

async fn file(path: &Path, name: &str) -> Response<Body> {
    match tokio::fs::read(path).await {
        Ok(bytes) => {
            let mut r = full(StatusCode::OK, content_type(name), bytes);
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-cache"),
            );
            r
        }
        Err(_) => error(StatusCode::NOT_FOUND, "not_found", "not found"),
    }
}

/// `GET /`, `/watch/{stream}` and `/static/{file}`.
pub(super) async fn page(state: &AppState, segs: &[&str]) -> Response<Body> {
    let root = &state.cfg.load().http.web_root;
    match segs {
        [""] => file(&root.join("index.html"), "index.html").await,
        ["watch", stream] if crate::ingest::streamid::validate_name(stream).is_ok() => {
            file(&root.join("watch.html"), "watch.html").await
        }
        ["static", "vendor", "hls.min.js"] => {
            let r = file(&state.cfg.load().http.hlsjs, "hls.min.js").await;
            if r.status() == StatusCode::NOT_FOUND {
                return error(
                    StatusCode::NOT_FOUND,
                    "hlsjs_missing",
                    "hls.js is not installed: run scripts/setup.sh (npm install in web/)",
                );
            }
            r
        }
        ["static", name] if safe_name(name) => file(&root.join(name), name).await,
        _ => error(StatusCode::NOT_FOUND, "not_found", "not found"),
    }
}

/// `GET /api/streams`: configured and live streams, with what OBS needs to publish.
pub(super) fn streams(
    state: &Arc<AppState>,
    req: &Request<hyper::body::Incoming>,
) -> Response<Body> {
    let cfg = state.cfg.load();
    let host = if cfg.http.public_host.is_empty() {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().host())
            .map(|h| {
                // Strip the port, keeping IPv6 brackets intact.
                match h.rfind(':') {
                    Some(i) if !h[i..].contains(']') => h[..i].to_owned(),
                    _ => h.to_owned(),
                }
            })
            .unwrap_or_else(|| "localhost".into())
    } else {
        cfg.http.public_host.clone()
    };
    let live = state.hub.live_streams();
    let mut names: Vec<String> = cfg.streams.keys().cloned().collect();
    for n in live.iter().chain(state.store.stream_names().iter()) {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    names.sort();
    let port = state.srt_addr.port();
    let list: Vec<serde_json::Value> = names
        .iter()
        .map(|n| {
            let conf = cfg.streams.get(n);
            let pass = conf.is_some_and(|s| s.passphrase.is_some());
            let rtmp_key = conf.is_some_and(|s| s.rtmp_key.is_some());
            // RTMP never opens a stream SRT protects with a passphrase (see ingest::rtmp).
            let rtmp_open = rtmp_key || !pass;
            let key = if rtmp_key { "?key=YOUR_RTMP_KEY" } else { "" };
            let rtmp_url = |scheme: &str, addr: Option<std::net::SocketAddr>| {
                addr.filter(|_| rtmp_open)
                    .map(|a| format!("{scheme}://{host}:{}/live/{n}{key}", a.port()))
            };
            let obs_rtmp = state.rtmp_addr.filter(|_| rtmp_open).map(|a| {
                serde_json::json!({
                    "server": format!("rtmp://{host}:{}/live", a.port()),
                    "stream_key": format!("{n}{key}"),
                })
            });
            let mut srt = format!("srt://{host}:{port}?streamid=#!::r=live/{n},m=publish");
            if pass {
                srt.push_str("&passphrase=YOUR_PASSPHRASE");
            }
            serde_json::json!({
                "name": n,
                "live": live.contains(n),
                "viewers": state.viewers(n),
                "playlist": format!("/live/{n}/index.m3u8"),
                "watch": format!("/watch/{n}"),
                "srt_url": srt,
                "obs": { "server": format!("srt://{host}:{port}"), "stream_key": n },
                "passphrase_required": pass,
                "rtmp_url": rtmp_url("rtmp", state.rtmp_addr),
                "rtmps_url": rtmp_url("rtmps", state.rtmps_addr),
                "obs_rtmp": obs_rtmp,
                "rtmp_key_required": rtmp_key,
            })
        })
        .collect();
    let mut r = full(
        StatusCode::OK,
        "application/json",
        serde_json::to_vec(&list).unwrap_or_default(),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    r
}

/// `GET /api/streams/{stream}`: the stream and, while it is live, its publisher:
/// protocol, remote address, uptime, bytes and average bit rate, and for SRT the link's
/// round-trip time, loss, retransmissions, drops and negotiated latency.
pub(super) fn stream_detail(state: &AppState, name: &str) -> Response<Body> {
    let known = state.cfg.load().streams.contains_key(name) || state.store.stream(name).is_some();
    let session = state.hub.session(name);
    if !known && session.is_none() {
        return error(StatusCode::NOT_FOUND, "no_stream", "no such stream");
    }
    let publisher = session.map(|p| p.stats_json());
    // Each rendition's latest part and when it was published (Unix ms): the node-side
    // clock the parked-request benchmark measures release latency from.
    let renditions: serde_json::Map<_, _> = state
        .store
        .stream(name)
        .map(|e| {
            e.rendition_names()
                .into_iter()
                .filter_map(|r| e.view(&r).map(|v| (r, v)))
                .map(|(r, v)| {
                    let ms = v.part_published.and_then(|t| {
                        t.duration_since(std::time::UNIX_EPOCH)
                            .ok()
                            .map(|d| d.as_secs_f64() * 1e3)
                    });
                    let j = serde_json::json!({
                        "last_part": v.last,
                        "hint": v.hint,
                        "part_published_unix_ms": ms,
                    });
                    (r, j)
                })
                .collect()
        })
        .unwrap_or_default();
    let body = serde_json::json!({
        "name": name,
        "live": publisher.is_some(),
        "publisher": publisher,
        "renditions": renditions,
        "playlist": format!("/live/{name}/index.m3u8"),
    });
    let mut r = full(
        StatusCode::OK,
        "application/json",
        serde_json::to_vec(&body).unwrap_or_default(),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(safe_name("watch.js"));
        assert!(!safe_name("../etc/passwd"));
        assert!(!safe_name(".env"));
        assert!(!safe_name("a/b"));
        assert!(!safe_name(""));
    }
}
