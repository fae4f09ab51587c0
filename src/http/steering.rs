//! Content steering on the HTTP side: the pathways added to a viewer's multivariant
//! playlist, and `GET /live/{stream}/steering.json`, the steering manifest.

use bytes::Bytes;
use hyper::{header, HeaderMap, Response, StatusCode};

use super::{error, full, AppState, Body};
use crate::{
    auth::{carry, Admitted},
    steering::Token,
};

/// The multivariant playlist as served to this request: with the pathways when steering
/// is on, except to a node of the tier pulling it (which adds its own).
pub(super) fn playlist(
    state: &AppState,
    headers: &HeaderMap,
    stream: &str,
    admitted: &Admitted,
    plain: Bytes,
) -> Bytes {
    let Some(s) = &state.steering else {
        return plain;
    };
    let cfg = state.cfg.load();
    if crate::upstream::from_tier(&cfg.upstream, headers) {
        return plain;
    }
    let (pair, segment) = match &admitted.token {
        Some((t, _)) => (
            carry::query_pair(&cfg.auth.token_name, t),
            carry::path_segment(t),
        ),
        None => (String::new(), String::new()),
    };
    let token = admitted.token.as_ref().map(|(_, source)| Token {
        pair: &pair,
        segment: &segment,
        source: *source,
    });
    Bytes::from(s.playlist(&String::from_utf8_lossy(&plain), stream, token))
}

/// `GET /live/{stream}/steering.json[?_HLS_pathway=…]`: the pathways in this node's
/// order of priority. `RELOAD-URI` is this same manifest, with the viewer's query token.
pub(super) fn manifest(
    state: &AppState,
    query: Option<&str>,
    admitted: &Admitted,
) -> Response<Body> {
    let Some(s) = &state.steering else {
        return error(
            StatusCode::NOT_FOUND,
            "steering_off",
            "content steering is off",
        );
    };
    // "_HLS_pathway": the pathway the player is on (Content Steering spec,
    // "Steering Query Parameters").
    let current = query.and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "_HLS_pathway")
            .map(|(_, v)| v.into_owned())
    });
    let reload = match &admitted.carry {
        Some(pair) => format!("steering.json?{pair}"),
        None => "steering.json".to_owned(),
    };
    let mut r = full(
        StatusCode::OK,
        "application/json",
        s.manifest(current.as_deref(), &reload),
    );
    // Per viewer (its token) and per moment (the peers' health): never shared.
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}
