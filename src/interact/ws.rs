//! One task per WebSocket connection: upgrade checks, then a loop that relays the room's
//! broadcast to the socket (batched writes) and the client's frames to the room.

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use governor::{
    clock::{Clock, DefaultClock},
    DefaultDirectRateLimiter, Quota, RateLimiter,
};
use http_body_util::Full;
use hyper::{header, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::{
    sync::broadcast::error::{RecvError, TryRecvError},
    time::Instant,
};
use tokio_tungstenite::{
    tungstenite::{
        self,
        protocol::{frame::coding::CloseCode, CloseFrame, WebSocketConfig},
        Message, Utf8Bytes,
    },
    WebSocketStream,
};

use super::{
    error_response,
    protocol::{self, encode, ClientMsg, ErrorCode, ServerMsg, UserInfo},
    room::{Actor, Room, RoomHandle},
    token::{verify_token, Role},
    wire::Outbox,
    Interact, InteractError,
};

/// Frames above `max_frame_size` up to this size get an error frame and the connection
/// lives; larger ones close it (1009) without being read, so a peer cannot make us buffer
/// much.
fn hard_cap(max_frame_size: usize) -> usize {
    (max_frame_size * 4).max(64 * 1024)
}

/// Application close codes (4000-4999 are private use, RFC 6455 §7.4.2).
const CLOSE_SLOW: u16 = 4001;
const CLOSE_ABUSE: u16 = 4002;
const CLOSE_TIMEOUT: u16 = 4003;

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn header_has_token(
    req: &Request<hyper::body::Incoming>,
    name: header::HeaderName,
    token: &str,
) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Token from `?token=` (browsers cannot set headers on a WebSocket) or `Authorization`.
pub(super) fn bearer(req: &Request<hyper::body::Incoming>) -> Option<String> {
    if let Some(t) = query_param(req.uri().query(), "token") {
        return Some(t);
    }
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(|s| s.trim().to_owned())
}

pub(super) fn handle(
    hub: &Arc<Interact>,
    stream: &str,
    mut req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let refuse = |status: StatusCode, reason: &'static str, msg: &str| {
        hub.metrics.refused.with_label_values(&[reason]).inc();
        tracing::debug!(stream, reason, "websocket upgrade refused");
        error_response(status, reason, msg)
    };
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    let is_ws = req.method() == hyper::Method::GET
        && header_has_token(&req, header::CONNECTION, "upgrade")
        && header_has_token(&req, header::UPGRADE, "websocket")
        && req
            .headers()
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13")
        && key.is_some();
    let Some(key) = key.filter(|_| is_ws) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "not_websocket",
            "expected a WebSocket upgrade (version 13)",
        );
    };
    if !super::valid_stream(stream) {
        return refuse(StatusCode::BAD_REQUEST, "bad_stream", "bad stream name");
    }
    let cfg = hub.cfg.load_full();
    let conn_id = hub.next_conn_id();
    let actor = match bearer(&req) {
        Some(t) => match verify_token(&cfg.token_secret, &t, cfg.max_token_ttl) {
            Ok(c) => {
                if let Err(e) = c.check_stream(stream, cfg.unscoped_tokens) {
                    return refuse(StatusCode::FORBIDDEN, e.code(), e.message());
                }
                Actor {
                    user: UserInfo {
                        id: c.sub,
                        name: c.name,
                        role: c.role,
                    },
                    anonymous: false,
                }
            }
            Err(e) => {
                return refuse(StatusCode::UNAUTHORIZED, "bad_token", &e.to_string());
            }
        },
        None if cfg.allow_anonymous => Actor {
            user: UserInfo {
                id: format!("anon-{}-{conn_id}", hub.node_id),
                name: "anonymous".into(),
                role: Role::Viewer,
            },
            anonymous: true,
        },
        None => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "token_required",
                "a token is required",
            )
        }
    };
    let after = query_param(req.uri().query(), "after");
    hub.conns.follow(cfg.max_connections);
    let Ok(permit) = hub.conns.permits().clone().try_acquire_owned() else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            "too many connections",
        );
    };
    let room = match hub.room(stream) {
        Ok(r) => r,
        Err(InteractError::TooManyRooms) => {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_rooms",
                "too many rooms",
            )
        }
        Err(e @ InteractError::UnknownStream) => {
            return refuse(StatusCode::NOT_FOUND, "unknown_stream", &e.to_string())
        }
        Err(_) => {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "shutting down",
            )
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let hub2 = hub.clone();
    let stream_name = stream.to_owned();
    hub.tracker.spawn(async move {
        let _permit = permit;
        match on_upgrade.await {
            Ok(up) => {
                let cfg = hub2.cfg.load_full();
                let ws_cfg = WebSocketConfig::default()
                    .read_buffer_size(1024)
                    .write_buffer_size(16 * 1024)
                    .max_write_buffer_size(1 << 20)
                    .max_message_size(Some(hard_cap(cfg.max_frame_size)))
                    .max_frame_size(Some(hard_cap(cfg.max_frame_size)));
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(up),
                    tungstenite::protocol::Role::Server,
                    Some(ws_cfg),
                )
                .await;
                Conn {
                    hub: hub2.clone(),
                    room,
                    actor,
                    conn_id,
                    stream: stream_name,
                }
                .run(ws, after)
                .await;
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    });
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("upgrade"),
    );
    h.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

struct Conn {
    hub: Arc<Interact>,
    room: RoomHandle,
    actor: Actor,
    conn_id: u64,
    stream: String,
}

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Why a connection ends.
enum End {
    Client,
    Close(u16, &'static str),
}

impl Conn {
    async fn run(self, mut ws: Ws, after: Option<String>) {
        let m = &self.hub.metrics;
        m.connections.inc();
        let _viewer = self.room.viewer();
        let span = tracing::debug_span!("ws", stream = %self.stream, conn = self.conn_id, user = %self.actor.user.id);
        let mut out = Outbox::default();
        let end =
            tracing::Instrument::instrument(self.serve(&mut ws, &mut out, after), span.clone())
                .await;
        match end {
            End::Client => span.in_scope(|| tracing::debug!("websocket closed by the client")),
            End::Close(code, reason) => {
                // Every server-side close is counted by reason on /metrics
                // (estuary_interact_closed_total, ..._slow_consumer_drops_total); the line is
                // debug so that a flood of bad clients cannot flood the log.
                span.in_scope(|| tracing::debug!(code, reason, "websocket closed by the node"));
                let frame = CloseFrame {
                    code: CloseCode::from(code),
                    reason: Utf8Bytes::from_static(reason),
                };
                // Whatever frames were already taken from the room go first, so the close
                // frame never lands in the middle of one.
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    if !out.is_empty() {
                        out.write_to(ws.get_mut()).await?;
                    }
                    ws.close(Some(frame)).await.map_err(std::io::Error::other)
                })
                .await;
            }
        }
        m.connections.dec();
    }

    async fn send(&self, ws: &mut Ws, msg: Message) -> Result<(), End> {
        let timeout = self.hub.cfg.load().ping_timeout;
        match tokio::time::timeout(timeout, ws.send(msg)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Client),
            Err(_) => Err(End::Close(CLOSE_TIMEOUT, "write timeout")),
        }
    }

    async fn reply(&self, ws: &mut Ws, msg: &ServerMsg) -> Result<(), End> {
        if let ServerMsg::Error { code, .. } = msg {
            self.hub
                .metrics
                .errors
                .with_label_values(&[&format!("{code:?}")])
                .inc();
        }
        self.send(ws, Message::Text(Utf8Bytes::from(encode(msg))))
            .await
    }

    /// Counts and ends a connection that fell `send_queue` frames behind its room; the
    /// client is told with close code 4001 and can `resume` from its last chat id.
    fn slow(&self) -> End {
        self.hub.metrics.slow_drops.inc();
        End::Close(CLOSE_SLOW, "too slow: fell behind the room")
    }

    /// Serves the connection. Invariant: `out` is empty whenever tungstenite writes (a
    /// reply, a ping), so raw frames and tungstenite's frames never interleave mid-frame;
    /// it is non-empty only when a write was cut short, and then serving ends.
    async fn serve(&self, ws: &mut Ws, out: &mut Outbox, after: Option<String>) -> End {
        // This connection's settings, fixed for its life.
        let cfg = self.hub.cfg.load_full();
        let m = self.hub.metrics.clone();
        // Join before the welcome: a client that has read `welcome` misses no event, even
        // one an API call makes right after.
        let Some(joined) = self.room.join(after).await else {
            return End::Close(1001, "room closed");
        };
        let welcome = Room::welcome(&cfg, self.conn_id, &self.actor, &self.stream);
        if let Err(e) = self.reply(ws, &welcome).await {
            return e;
        }
        for f in &joined.frames {
            out.push(f);
        }
        match tokio::time::timeout(cfg.ping_timeout, write_out(ws, out)).await {
            Ok(Ok(())) => {}
            Ok(Err(())) => return End::Client,
            Err(_) => return End::Close(CLOSE_TIMEOUT, "write timeout"),
        }
        let mut rx = joined.rx;
        let limiter = RateLimiter::direct(
            Quota::per_second(NonZeroU32::new(cfg.conn_rate_per_sec).unwrap_or(NonZeroU32::MIN))
                .allow_burst(NonZeroU32::new(cfg.conn_burst).unwrap_or(NonZeroU32::MIN)),
        );
        let mut abuse = 0u32;
        let mut last_seen = Instant::now();
        let mut ping =
            tokio::time::interval_at(Instant::now() + cfg.ping_interval, cfg.ping_interval);
        // One waiter on the hub's token for the connection's life, not one per wake-up:
        // every connection of a room shares that token.
        let cancelled = self.hub.token.cancelled();
        tokio::pin!(cancelled);
        loop {
            tokio::select! {
                _ = &mut cancelled => return End::Close(1001, "server shutting down"),
                r = rx.recv() => {
                    let first = match r {
                        Ok(f) => f,
                        Err(RecvError::Lagged(_)) => return self.slow(),
                        Err(RecvError::Closed) => return End::Close(1001, "room closed"),
                    };
                    // Coalesce: everything queued now goes out in one vectored write and
                    // one flush. The ring holds at most `send_queue` frames, which bounds
                    // the drain.
                    out.reserve(rx.len() + 1);
                    out.push(&first);
                    let mut n = 1u64;
                    while n < cfg.send_queue as u64 {
                        match rx.try_recv() {
                            Ok(f) => {
                                out.push(&f);
                                n += 1;
                            }
                            // What was queued before the gap is still written (on close).
                            Err(TryRecvError::Lagged(_)) => return self.slow(),
                            Err(_) => break,
                        }
                    }
                    match tokio::time::timeout(cfg.ping_timeout, write_out(ws, out)).await {
                        Ok(Ok(())) => {
                            m.deliveries.inc_by(n);
                            m.broadcast_writes.inc();
                        }
                        Ok(Err(())) => return End::Client,
                        // A write stuck while the room queued `send_queue` frames more is a
                        // slow consumer (the lag would be seen at the next read); a stuck
                        // write with little behind it is a dead or stalled peer.
                        Err(_) if rx.len() >= cfg.send_queue => return self.slow(),
                        Err(_) => {
                            m.closed_abuse.with_label_values(&["write_timeout"]).inc();
                            return End::Close(CLOSE_TIMEOUT, "write timeout");
                        }
                    }
                }
                msg = ws.next() => {
                    last_seen = Instant::now();
                    let text = match msg {
                        None => return End::Client,
                        Some(Err(tungstenite::Error::Capacity(_))) => {
                            m.closed_abuse.with_label_values(&["too_large"]).inc();
                            let _ = self.reply(ws, &protocol::error(
                                ErrorCode::TooLarge,
                                format!("frames are limited to {} bytes", cfg.max_frame_size),
                                None,
                            )).await;
                            return End::Close(1009, "frame too large");
                        }
                        Some(Err(_)) => return End::Client,
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Binary(_))) => {
                            abuse += 1;
                            if let Err(e) = self.reply(ws, &protocol::error(
                                ErrorCode::BadFrame,
                                "binary frames are not accepted; send JSON text",
                                None,
                            )).await {
                                return e;
                            }
                            if abuse >= cfg.max_errors {
                                m.closed_abuse.with_label_values(&["abuse"]).inc();
                                return End::Close(CLOSE_ABUSE, "too many bad frames");
                            }
                            continue;
                        }
                        Some(Ok(Message::Close(_))) => {
                            let _ = ws.flush().await;
                            return End::Client;
                        }
                        // tungstenite queues the pong while reading; send it now, so
                        // that tungstenite holds nothing when the outbox is written.
                        Some(Ok(Message::Ping(_))) => {
                            match tokio::time::timeout(cfg.ping_timeout, ws.flush()).await {
                                Ok(Ok(())) => continue,
                                Ok(Err(_)) => return End::Client,
                                Err(_) => return End::Close(CLOSE_TIMEOUT, "write timeout"),
                            }
                        }
                        Some(Ok(_)) => continue,
                    };
                    let reply = if text.len() > cfg.max_frame_size {
                        Some(protocol::error(
                            ErrorCode::TooLarge,
                            format!("frames are limited to {} bytes", cfg.max_frame_size),
                            None,
                        ))
                    } else {
                        self.on_text(&limiter, text.as_str()).await
                    };
                    if let Some(reply) = reply {
                        if let ServerMsg::Error { code, .. } = &reply {
                            if is_abuse(*code) {
                                abuse += 1;
                            }
                        }
                        if let Err(e) = self.reply(ws, &reply).await {
                            return e;
                        }
                        if abuse >= cfg.max_errors {
                            m.closed_abuse.with_label_values(&["abuse"]).inc();
                            return End::Close(CLOSE_ABUSE, "too many bad frames");
                        }
                    }
                }
                _ = ping.tick() => {
                    if last_seen.elapsed() > cfg.ping_interval + cfg.ping_timeout {
                        m.closed_abuse.with_label_values(&["ping_timeout"]).inc();
                        return End::Close(CLOSE_TIMEOUT, "ping timeout");
                    }
                    if let Err(e) = self.send(ws, Message::Ping(Bytes::new())).await {
                        return e;
                    }
                }
            }
        }
    }

    /// Handles one client text frame; returns the reply to send, if any.
    async fn on_text(&self, limiter: &DefaultDirectRateLimiter, text: &str) -> Option<ServerMsg> {
        let m = &self.hub.metrics;
        if let Err(nu) = limiter.check() {
            let wait = nu.wait_time_from(DefaultClock::default().now());
            return Some(ServerMsg::Error {
                code: ErrorCode::RateLimited,
                message: "too many frames on this connection".into(),
                r#ref: None,
                retry_after_ms: Some(wait.as_millis().max(1) as u64),
            });
        }
        let frame = match protocol::decode(text.as_bytes()) {
            Ok(f) => f,
            Err(e) => {
                m.frames_in.with_label_values(&["invalid"]).inc();
                return Some(protocol::error(e.code(), e.to_string(), None));
            }
        };
        m.frames_in
            .with_label_values(&[frame_type(&frame.msg)])
            .inc();
        if let ClientMsg::React { emoji } = &frame.msg {
            // Reactions skip the room inbox: an atomic add per reaction.
            return match self
                .hub
                .cfg
                .load()
                .reactions
                .iter()
                .position(|r| r == emoji)
            {
                Some(i) => {
                    self.room.react(i);
                    frame.r#ref.map(|r| ServerMsg::Ack {
                        r#ref: Some(r),
                        id: None,
                    })
                }
                None => Some(protocol::error(
                    ErrorCode::BadReaction,
                    "not an allowed reaction",
                    frame.r#ref,
                )),
            };
        }
        Some(self.room.act(self.actor.clone(), frame).await)
    }
}

/// Errors that count toward `max_errors`: malformed or forbidden input, not ordinary
/// refusals such as slow mode or a closed poll.
fn is_abuse(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::BadJson
            | ErrorCode::UnsupportedVersion
            | ErrorCode::UnknownType
            | ErrorCode::BadFrame
            | ErrorCode::TooLarge
            | ErrorCode::Forbidden
            | ErrorCode::RateLimited
            | ErrorCode::BadReaction
    )
}

fn frame_type(m: &ClientMsg) -> &'static str {
    match m {
        ClientMsg::Chat { .. } => "chat",
        ClientMsg::React { .. } => "react",
        ClientMsg::Vote { .. } => "vote",
        ClientMsg::Ask { .. } => "ask",
        ClientMsg::Upvote { .. } => "upvote",
        ClientMsg::Resume { .. } => "resume",
        ClientMsg::Delete { .. } => "delete",
        ClientMsg::Timeout { .. } => "timeout",
        ClientMsg::Ban { .. } => "ban",
        ClientMsg::Unban { .. } => "unban",
        ClientMsg::SlowMode { .. } => "slow_mode",
        ClientMsg::PollOpen(_) => "poll_open",
        ClientMsg::PollClose { .. } => "poll_close",
        ClientMsg::QuestionState { .. } => "question_state",
        ClientMsg::Pin { .. } => "pin",
        ClientMsg::Tip(_) => "tip",
        ClientMsg::System { .. } => "system",
    }
}

/// Writes the outbox straight to the socket. tungstenite holds nothing at this point: its
/// writes (replies, pings, pongs) are flushed when they are made.
async fn write_out(ws: &mut Ws, out: &mut Outbox) -> Result<(), ()> {
    out.write_to(ws.get_mut()).await.map_err(|_| ())
}
