//! The host server API, for integrations that hold no WebSocket:
//!
//! | method and path | body | does |
//! |---|---|---|
//! | `POST /api/streams/{s}/polls` | `{"question","options":[..],"duration_secs"}` | opens a poll |
//! | `POST /api/streams/{s}/polls/{id}/close` | none | closes it early |
//! | `POST /api/streams/{s}/tips` | `{"from","amount_minor","currency","message"?}` | announces a tip |
//! | `POST /api/streams/{s}/messages` | `{"text"}` | posts a system message |
//! | `GET /api/streams/{s}/state` | none | polls, top questions, pinned message, viewers |
//!
//! Every call needs `Authorization: Bearer <host token>`.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;

use super::{
    error_response, json_response,
    protocol::{encode, ClientFrame, ClientMsg, ErrorCode, PollSpec, ServerMsg, TipSpec, UserInfo},
    room::Actor,
    token::{verify_token, Role},
    Interact, InteractError,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageBody {
    text: String,
}

fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::AuthRequired => StatusCode::UNAUTHORIZED,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::RateLimited | ErrorCode::SlowMode => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Closed | ErrorCode::Duplicate | ErrorCode::Full => StatusCode::CONFLICT,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    }
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| e.to_string())
}

pub(super) async fn handle(
    hub: &Arc<Interact>,
    path: &str,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let Some(rest) = path.strip_prefix("/api/streams/") else {
        return error_response(StatusCode::NOT_FOUND, "not_found", "no such API");
    };
    let (stream, action) = rest.split_once('/').unwrap_or((rest, ""));
    if !super::valid_stream(stream) {
        return error_response(StatusCode::NOT_FOUND, "bad_stream", "bad stream name");
    }
    let token = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned());
    let Some(token) = token else {
        return error_response(
            StatusCode::UNAUTHORIZED,
            "token_required",
            "Authorization: Bearer <host token> is required",
        );
    };
    let cfg = hub.cfg.load_full();
    let claims = match verify_token(&cfg.token_secret, &token, cfg.max_token_ttl) {
        Ok(c) => c,
        Err(e) => return error_response(StatusCode::UNAUTHORIZED, "bad_token", &e.to_string()),
    };
    if let Err(e) = claims.check_stream(stream, cfg.unscoped_tokens) {
        return error_response(StatusCode::FORBIDDEN, e.code(), e.message());
    }
    if claims.role != Role::Host {
        return error_response(StatusCode::FORBIDDEN, "forbidden", "needs a host token");
    }
    let method = req.method().clone();
    let body = match Limited::new(req.into_body(), cfg.max_frame_size)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error_response(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "body too large")
        }
    };
    let msg = match (&method, action.split('/').collect::<Vec<_>>().as_slice()) {
        (&Method::POST, ["polls"]) => match parse::<PollSpec>(&body) {
            Ok(s) => ClientMsg::PollOpen(s),
            Err(e) => return error_response(StatusCode::BAD_REQUEST, "bad_frame", &e),
        },
        (&Method::POST, ["polls", id, "close"]) => ClientMsg::PollClose {
            poll: (*id).to_owned(),
        },
        (&Method::POST, ["tips"]) => match parse::<TipSpec>(&body) {
            Ok(s) => ClientMsg::Tip(s),
            Err(e) => return error_response(StatusCode::BAD_REQUEST, "bad_frame", &e),
        },
        (&Method::POST, ["messages"]) => match parse::<MessageBody>(&body) {
            Ok(b) => ClientMsg::System { text: b.text },
            Err(e) => return error_response(StatusCode::BAD_REQUEST, "bad_frame", &e),
        },
        (&Method::GET, ["state"]) => {
            let room = match hub.room(stream) {
                Ok(r) => r,
                Err(e) => return room_error(e),
            };
            let viewers = room.viewers();
            return match room.snapshot().await {
                Some(state) => {
                    let mut v: serde_json::Value =
                        serde_json::from_str(&encode(&state)).unwrap_or_default();
                    v["viewers"] = viewers.into();
                    json_response(StatusCode::OK, v.to_string())
                }
                None => error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "room closed",
                ),
            };
        }
        _ => return error_response(StatusCode::NOT_FOUND, "not_found", "no such API"),
    };
    let room = match hub.room(stream) {
        Ok(r) => r,
        Err(e) => return room_error(e),
    };
    let actor = Actor {
        user: UserInfo {
            id: claims.sub,
            name: claims.name,
            role: claims.role,
        },
        anonymous: false,
    };
    match room.act(actor, ClientFrame { r#ref: None, msg }).await {
        ServerMsg::Ack { id, .. } => json_response(
            if method == Method::POST && !action.ends_with("/close") {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            serde_json::json!({ "id": id }).to_string(),
        ),
        ServerMsg::Error { code, message, .. } => {
            let code_s = serde_json::to_value(code)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            error_response(status_of(code), &code_s, &message)
        }
        _ => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "unexpected reply",
        ),
    }
}

fn room_error(e: InteractError) -> Response<Full<Bytes>> {
    match e {
        InteractError::BadStream => {
            error_response(StatusCode::NOT_FOUND, "bad_stream", "bad stream name")
        }
        e @ InteractError::UnknownStream => {
            error_response(StatusCode::NOT_FOUND, "unknown_stream", &e.to_string())
        }
        e @ InteractError::TooManyRooms => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_rooms",
            &e.to_string(),
        ),
        e => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            &e.to_string(),
        ),
    }
}
