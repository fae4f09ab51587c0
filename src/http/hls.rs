//! LL-HLS routes: playlists with blocking reload and delta updates, and media objects
//! with blocking preload-hinted parts.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{header, Response, StatusCode};
use tokio::{sync::watch, time::Instant};

use super::range::Ranged;
use super::{error, full, AppState, Body, ChunksBody};
use crate::store::{ObjectKind, RenditionView};

const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";

/// `GET /live/{stream}/…` (playlists and media): the upstream secret when an origin
/// requires one, then access control, then the route. `at` is the path without a
/// path-prefix token, that token, and the client's address.
pub(super) async fn live(
    state: &Arc<AppState>,
    req: &hyper::Request<hyper::body::Incoming>,
    stream: &str,
    rest: &[&str],
    (path, path_token, remote): (&str, Option<String>, std::net::SocketAddr),
) -> (&'static str, Response<Body>) {
    if !crate::upstream::authorized(&state.cfg.load().upstream, req.headers()) {
        return (
            "unauthorized",
            error(
                StatusCode::UNAUTHORIZED,
                "upstream_secret_required",
                "upstream secret required",
            ),
        );
    }
    let viewer = crate::auth::Viewer {
        stream,
        path,
        query: req.uri().query(),
        headers: req.headers(),
        path_token,
        remote,
    };
    let admitted = match state.auth.admit(viewer).await {
        Ok(a) => a,
        Err(r) => return ("refused", r.map(BodyExt::boxed)),
    };
    let carry = admitted.carry.as_deref();
    match rest {
        ["index.m3u8"] => (
            "multivariant",
            multivariant(state, req.headers(), stream, &admitted).await,
        ),
        ["steering.json"] => (
            "steering",
            super::steering::manifest(state, req.uri().query(), &admitted),
        ),
        [rendition, "index.m3u8"] => (
            "media_playlist",
            media_playlist(state, stream, rendition, req.uri().query(), carry).await,
        ),
        [rendition, file] => {
            let range = req
                .headers()
                .get(header::RANGE)
                .and_then(|v| v.to_str().ok());
            object(state, stream, rendition, file, range).await
        }
        _ => (
            "other",
            error(StatusCode::NOT_FOUND, "not_found", "not found"),
        ),
    }
}

/// A playlist answer; `carry` (`name=token`) is appended to every URI in it.
fn playlist_response(body: Bytes, blocking: bool, carry: Option<&str>) -> Response<Body> {
    let body = match carry {
        Some(pair) => Bytes::from(crate::auth::carry::carry(
            &String::from_utf8_lossy(&body),
            pair,
        )),
        None => body,
    };
    let mut r = full(StatusCode::OK, PLAYLIST_TYPE, body);
    // A blocking request names a future playlist; any answer to it stays valid briefly,
    // so caches between us and players may hold it (Apple's LL-HLS guidance). One second:
    // a CDN collapses every viewer's request for the same _HLS_msn/_HLS_part into one,
    // and caches add `Age`, which hls.js reads to place the live edge.
    let cc = if blocking {
        "public, max-age=1"
    } else {
        "no-cache"
    };
    r.headers_mut()
        .insert(header::CACHE_CONTROL, header::HeaderValue::from_static(cc));
    r
}

/// Edge tier: a stream not published here is pulled from upstream first.
async fn upstream(
    state: &AppState,
    stream: &str,
    rendition: Option<&str>,
) -> Result<(), Response<Body>> {
    let Some(up) = &state.upstream else {
        return Ok(());
    };
    // Boxed (edges only): the pull is a large future, and every request's future (parked
    // blocking reloads included) would otherwise carry room for it.
    Box::pin(up.ensure(stream, rendition)).await.map_err(|e| {
        error(
            e.status(),
            &format!("upstream_{}", e.label()),
            &e.to_string(),
        )
    })
}

/// `GET /live/{stream}/index.m3u8`: waits briefly for a stream that is just starting.
async fn multivariant(
    state: &Arc<AppState>,
    headers: &hyper::HeaderMap,
    stream: &str,
    admitted: &crate::auth::Admitted,
) -> Response<Body> {
    if let Err(r) = upstream(state, stream, None).await {
        return r;
    }
    let Some(entry) = state.store.stream(stream) else {
        return error(StatusCode::NOT_FOUND, "no_stream", "no such stream");
    };
    let mut rx = entry.multivariant();
    let wait = state.cfg.load().hls.blocking_timeout;
    let text_now = match tokio::time::timeout(wait, rx.wait_for(Option::is_some)).await {
        Ok(Ok(v)) => v.clone(),
        _ => None,
    };
    match text_now {
        Some(t) => {
            let t = super::steering::playlist(state, headers, stream, admitted, t);
            playlist_response(t, false, admitted.carry.as_deref())
        }
        None => error(
            StatusCode::NOT_FOUND,
            "no_media_yet",
            "stream has no media yet",
        ),
    }
}

/// Query parameters of a media playlist request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    /// `_HLS_msn`.
    pub msn: Option<u64>,
    /// `_HLS_part`.
    pub part: Option<u64>,
    /// `_HLS_skip=YES` (or `v2`).
    pub skip: bool,
}

/// Parses `_HLS_msn`, `_HLS_part` and `_HLS_skip` (RFC 8216bis §6.2.5). Other parameters
/// are ignored, as the draft asks of servers.
///
/// # Errors
/// A message for the 400 answer when a value is malformed or `_HLS_part` comes alone.
pub fn parse_delivery(query: Option<&str>) -> Result<Delivery, &'static str> {
    let mut d = Delivery::default();
    let Some(q) = query else { return Ok(d) };
    if q.len() > 1024 {
        return Err("query too long");
    }
    for (k, v) in form_urlencoded::parse(q.as_bytes()) {
        let num = |v: &str| {
            if v.is_empty() || v.len() > 19 || !v.bytes().all(|b| b.is_ascii_digit()) {
                Err("not a decimal integer")
            } else {
                v.parse::<u64>().map_err(|_| "not a decimal integer")
            }
        };
        match k.as_ref() {
            "_HLS_msn" => d.msn = Some(num(&v).map_err(|_| "_HLS_msn must be a decimal integer")?),
            "_HLS_part" => {
                d.part = Some(num(&v).map_err(|_| "_HLS_part must be a decimal integer")?)
            }
            "_HLS_skip" => match v.as_ref() {
                "YES" | "v2" => d.skip = true,
                _ => return Err("_HLS_skip must be YES or v2"),
            },
            _ => {}
        }
    }
    if d.part.is_some() && d.msn.is_none() {
        return Err("_HLS_part requires _HLS_msn");
    }
    Ok(d)
}

/// `GET /live/{stream}/{rendition}/index.m3u8[?_HLS_msn=&_HLS_part=&_HLS_skip=]`.
async fn media_playlist(
    state: &Arc<AppState>,
    stream: &str,
    rendition: &str,
    query: Option<&str>,
    carry: Option<&str>,
) -> Response<Body> {
    let d = match parse_delivery(query) {
        Ok(d) => d,
        Err(msg) => return error(StatusCode::BAD_REQUEST, "bad_delivery_directive", msg),
    };
    if let Err(r) = upstream(state, stream, Some(rendition)).await {
        return r;
    }
    let Some(mut rx) = state
        .store
        .stream(stream)
        .and_then(|e| e.rendition(rendition))
    else {
        return error(StatusCode::NOT_FOUND, "no_rendition", "no such rendition");
    };
    let pick = |v: &RenditionView| {
        if d.skip {
            v.delta.clone()
        } else {
            v.playlist.clone()
        }
    };
    let Some(msn) = d.msn else {
        let v = rx.borrow().clone();
        return playlist_response(pick(&v), false, carry);
    };
    let view = rx.borrow().clone();
    // "If the _HLS_msn is greater than the Media Sequence Number of the last Media Segment
    // in the current Playlist plus two ... the Server SHOULD immediately return Bad Request"
    // (§6.2.5.2); a part index past what one segment can hold is equally impossible.
    let last_msn = view.last.map_or(view.media_sequence, |(m, _)| m);
    if msn > last_msn + 2 {
        return error(
            StatusCode::BAD_REQUEST,
            "msn_too_far",
            "_HLS_msn is too far in the future",
        );
    }
    let max_parts = max_parts_per_segment(state, &view);
    if d.part.is_some_and(|p| p >= max_parts) {
        return error(
            StatusCode::BAD_REQUEST,
            "part_out_of_range",
            "_HLS_part is out of range",
        );
    }
    if view.has(msn, d.part) {
        return playlist_response(pick(&view.first_with(msn, d.part)), true, carry);
    }
    // "the server SHOULD hold the request ... for up to three times the Target Duration";
    // past that it answers 503.
    let wait = state
        .cfg
        .load()
        .hls
        .blocking_timeout
        .min(Duration::from_secs(view.target_duration.max(1) * 3));
    let started = Instant::now();
    let r = tokio::time::timeout(wait, rx.wait_for(|v| v.has(msn, d.part))).await;
    state
        .metrics
        .http_blocking_wait
        .with_label_values(&["playlist"])
        .observe(started.elapsed().as_secs_f64());
    match r {
        Ok(Ok(v)) => {
            let v = v.clone().first_with(msn, d.part);
            playlist_response(pick(&v), true, carry)
        }
        _ => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "blocking_timeout",
            "the requested segment or part did not appear in time",
        ),
    }
}

fn max_parts_per_segment(state: &AppState, view: &RenditionView) -> u64 {
    let td = Duration::from_secs(view.target_duration.max(1)) * 2;
    (td.as_nanos() / state.cfg.load().hls.part_target.as_nanos().max(1)) as u64 + 2
}

enum File {
    Init,
    Segment,
    Part,
}

fn parse_file(name: &str) -> Option<File> {
    if name == "init.mp4" || (name.starts_with("init-") && name.ends_with(".mp4")) {
        return Some(File::Init);
    }
    let stem = name.strip_suffix(".m4s")?;
    let num = |s: &str| {
        (!s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match stem.strip_prefix('p') {
        None => num(stem).map(|_| File::Segment),
        Some(seq) => num(seq).map(|_| File::Part),
    }
}

fn object_response(
    state: &AppState,
    kind: ObjectKind,
    chunks: Arc<[Bytes]>,
    range: Option<&str>,
) -> Response<Body> {
    let len: u64 = chunks.iter().map(|c| c.len() as u64).sum();
    let ct = if kind == ObjectKind::Init {
        "video/mp4"
    } else {
        "video/iso.segment"
    };
    let cc = format!(
        "public, max-age={}, immutable",
        state.cfg.load().hls.media_max_age.as_secs()
    );
    let b = Response::builder()
        .header(header::CONTENT_TYPE, ct)
        .header(header::CACHE_CONTROL, cc)
        .header(header::ACCEPT_RANGES, "bytes");
    let r = match super::range::parse(range, len) {
        Ranged::Whole => b
            .status(StatusCode::OK)
            .header(header::CONTENT_LENGTH, len)
            .body(ChunksBody::new(chunks).boxed()),
        Ranged::Part(start, end) => b
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"))
            .header(header::CONTENT_LENGTH, end - start + 1)
            .body(ChunksBody::new(super::range::slice(&chunks, start, end)).boxed()),
        Ranged::Unsatisfiable => b
            .status(StatusCode::RANGE_NOT_SATISFIABLE)
            .header(header::CONTENT_RANGE, format!("bytes */{len}"))
            .header(header::CONTENT_LENGTH, 0)
            .body(http_body_util::Empty::new().boxed()),
    };
    r.expect("valid response")
}

/// `GET /live/{stream}/{rendition}/{init.mp4 | N.m4s | pN.m4s}`.
async fn object(
    state: &Arc<AppState>,
    stream: &str,
    rendition: &str,
    file: &str,
    range: Option<&str>,
) -> (&'static str, Response<Body>) {
    if let Err(r) = upstream(state, stream, Some(rendition)).await {
        return ("object", r);
    }
    let (parsed, route) = match parse_file(file) {
        Some(File::Init) => (File::Init, "init"),
        Some(File::Segment) => (File::Segment, "segment"),
        Some(File::Part) => (File::Part, "part"),
        // An edge keeps a foreign origin's names: served from the store, or waited for
        // like a part when it is the hinted one.
        None if state.upstream.is_some() => (File::Part, "object"),
        None => {
            return (
                "other",
                error(StatusCode::NOT_FOUND, "not_found", "not found"),
            )
        }
    };
    let key = format!("{stream}/{rendition}/{file}");
    if let Some(obj) = state.store.objects.get(&key) {
        return (route, object_response(state, obj.kind, obj.chunks, range));
    }
    let Some(rx) = state
        .store
        .stream(stream)
        .and_then(|e| e.rendition(rendition))
    else {
        return (
            route,
            error(StatusCode::NOT_FOUND, "no_rendition", "no such rendition"),
        );
    };
    let resp = match parsed {
        File::Init => {
            let v = rx.borrow().clone();
            match v.inits.iter().find(|(u, _)| u == file) {
                Some((_, b)) => {
                    object_response(state, ObjectKind::Init, vec![b.clone()].into(), range)
                }
                None => error(StatusCode::NOT_FOUND, "no_init", "no such init segment"),
            }
        }
        File::Segment => error(StatusCode::NOT_FOUND, "no_segment", "no such segment"),
        File::Part => blocking_part(state, rx, &key, file, range).await,
    };
    (route, resp)
}

/// A part that is not there yet: only the one the preload hint names is waited for
/// ("the server MUST ... block" until it is complete, §6.2.6); any other is 404. Parts are
/// named by a running number, so the hinted one is the next published, whichever segment
/// it lands in.
async fn blocking_part(
    state: &AppState,
    mut rx: watch::Receiver<Arc<RenditionView>>,
    key: &str,
    file: &str,
    range: Option<&str>,
) -> Response<Body> {
    let hinted = |v: &RenditionView| v.hint.as_deref() == Some(file);
    if !hinted(&rx.borrow()) {
        // The part may have been published since the caller looked in the store: the
        // packager puts a part in the store before the view moves its hint on, so with the
        // hint gone the store has it now (a hinted part never answers 404 for this race).
        return match state.store.objects.get(key) {
            Some(obj) => object_response(state, obj.kind, obj.chunks, range),
            None => error(StatusCode::NOT_FOUND, "no_part", "no such part"),
        };
    }
    let started = Instant::now();
    let r = tokio::time::timeout(
        state.cfg.load().hls.blocking_timeout,
        rx.wait_for(|v| !hinted(v)),
    )
    .await;
    state
        .metrics
        .http_blocking_wait
        .with_label_values(&["part"])
        .observe(started.elapsed().as_secs_f64());
    match r {
        Ok(Ok(_)) => match state.store.objects.get(key) {
            Some(obj) => object_response(state, obj.kind, obj.chunks, range),
            None => error(
                StatusCode::NOT_FOUND,
                "part_not_produced",
                "part was not produced",
            ),
        },
        _ => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "blocking_timeout",
            "part did not appear in time",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_directives() {
        assert_eq!(parse_delivery(None), Ok(Delivery::default()));
        assert_eq!(
            parse_delivery(Some("_HLS_msn=12&_HLS_part=3&_HLS_skip=YES&x=1")),
            Ok(Delivery {
                msn: Some(12),
                part: Some(3),
                skip: true
            })
        );
        assert!(parse_delivery(Some("_HLS_part=3")).is_err());
        assert!(parse_delivery(Some("_HLS_msn=-1")).is_err());
        assert!(parse_delivery(Some("_HLS_msn=1e3")).is_err());
        assert!(parse_delivery(Some("_HLS_msn=99999999999999999999")).is_err());
        assert!(parse_delivery(Some("_HLS_msn=")).is_err());
        assert!(parse_delivery(Some("_HLS_skip=NO")).is_err());
        assert!(parse_delivery(Some(&"a".repeat(2000))).is_err());
    }

    #[test]
    fn file_names() {
        assert!(matches!(parse_file("init.mp4"), Some(File::Init)));
        assert!(matches!(parse_file("init-2.mp4"), Some(File::Init)));
        assert!(matches!(parse_file("12.m4s"), Some(File::Segment)));
        assert!(matches!(parse_file("p123.m4s"), Some(File::Part)));
        assert!(parse_file("12.3.m4s").is_none());
        assert!(parse_file("p.m4s").is_none());
        assert!(parse_file("pp1.m4s").is_none());
        assert!(parse_file("+1.m4s").is_none());
        assert!(parse_file(".m4s").is_none());
        assert!(parse_file("x.mp4").is_none());
    }
}
