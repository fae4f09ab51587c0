//! The interaction channel: chat, polls, Q&A, reactions and tips over a WebSocket beside
//! the video, stamped with the video timeline.
//!
//! # Layout
//! - [`config`]: the `[interact]` config section.
//! - [`token`]: HS256 tokens with a role, user id, display name, the stream (or glob) they
//!   are good for, and an expiry.
//! - [`protocol`]: client and server JSON frames; [`protocol::decode`] is fuzzed.
//! - `room`: one actor per stream owning chat history, polls, questions, moderation state
//!   (one file per feature under `room/`); it serializes each broadcast once and fans the
//!   shared bytes out over a bounded `tokio::sync::broadcast` (a lagging receiver is a slow
//!   consumer and is dropped). A room exists only for a real stream (configured or live)
//!   and is closed after `room_idle_timeout` without connections or activity.
//! - `redis`: the Redis bus (pub/sub for events, a stream for history, Lua scripts for
//!   atomic tallies); the memory bus is the room applying its own events.
//! - `wire`: a broadcast framed once (`WireFrame`, the same bytes for every
//!   receiver) and a connection's outbox, written in one vectored write.
//! - `ws`: one task per WebSocket connection (tokio-tungstenite reads client frames and
//!   writes replies; broadcasts go to the socket from the outbox).
//! - `api`: the host server API.
//!
//! The media path only sees [`Timeline`] (what we read from it) and a `watch` of each
//! stream's [`DateRange`]s (what it reads from us, see [`Interact::dateranges`]); no lock is
//! shared with it.

mod api;
pub mod config;
mod metrics;
pub mod protocol;
mod redis;
mod room;
pub mod text;
pub mod token;
mod wire;
mod ws;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use config::{InteractConfig, UnscopedTokens};
pub use token::{mint_token, verify_token, Claims, Role, ScopeError};

use metrics::Metrics;
use room::RoomHandle;

/// Where the video timeline is now, supplied by the media side.
pub trait Timeline: Send + Sync + 'static {
    /// Program date time, MSN and part index of the latest published part of `stream`, if
    /// the stream is live.
    fn now(&self, stream: &str) -> Option<TimelineStamp>;

    /// Whether `stream` is real: configured, or live here (published, or followed from an
    /// origin). Only real streams get a room, so made-up names cannot use up `max_rooms`.
    fn exists(&self, stream: &str) -> bool {
        self.now(stream).is_some()
    }
}

/// A timeline that is never live: events are stamped with the wall clock. With no media side
/// to ask, every stream name counts as real.
#[derive(Debug, Default, Clone, Copy)]
pub struct WallClock;

impl Timeline for WallClock {
    fn now(&self, _stream: &str) -> Option<TimelineStamp> {
        None
    }

    fn exists(&self, _stream: &str) -> bool {
        true
    }
}

/// A point on a stream's video timeline.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct TimelineStamp {
    /// Program date time of the latest part (serialized as RFC 3339 with milliseconds).
    #[serde(serialize_with = "ser_rfc3339_millis")]
    pub pdt: SystemTime,
    /// Media sequence number.
    pub msn: u64,
    /// Part index within the segment.
    pub part: u64,
}

fn ser_rfc3339_millis<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

/// A poll (or other host event) to show in media playlists as `EXT-X-DATERANGE`: the
/// packager's own type. Client attribute values (`X-POLL-ID`, `X-QUESTION`, `X-OPTIONS`,
/// `X-RESULTS`) are raw and never contain `"`, CR or LF.
pub use crate::packager::playlist::DateRange;

/// Errors at the interaction module boundary.
#[derive(Debug, thiserror::Error)]
pub enum InteractError {
    /// The Redis bus failed or cannot be reached.
    #[error("interaction bus: {0}")]
    Bus(#[from] ::redis::RedisError),
    /// Minting or checking a token failed.
    #[error("token: {0}")]
    Token(String),
    /// Not a role name.
    #[error("unknown role {0:?} (viewer, moderator or host)")]
    BadRole(String),
    /// The config is invalid.
    #[error("{0}")]
    Config(String),
    /// Registering metrics failed (e.g. registered twice).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// `max_rooms` rooms exist already.
    #[error("too many rooms")]
    TooManyRooms,
    /// The stream name is not acceptable.
    #[error("bad stream name")]
    BadStream,
    /// The stream is neither configured nor live, so it has no room.
    #[error("no such stream (not configured and not live)")]
    UnknownStream,
    /// The room or the hub is shut down.
    #[error("shutting down")]
    Closed,
}

/// The interaction hub: rooms by stream, the bus, connection limits.
pub struct Interact {
    /// Swapped by a reload ([`Interact::reconfigure`]); read lock-free.
    cfg: arc_swap::ArcSwap<InteractConfig>,
    timeline: Arc<dyn Timeline>,
    metrics: Metrics,
    token: CancellationToken,
    tracker: TaskTracker,
    /// Room handles by stream. A plain mutex: held only to look up or insert a handle,
    /// never across an await, and never shared with the media path.
    rooms: Mutex<HashMap<String, RoomHandle>>,
    /// Each stream's date ranges: rooms send, live streams hold a receiver (taken once per
    /// stream, so the media path never takes this lock). Outlives room evictions.
    dateranges: Mutex<HashMap<String, watch::Sender<Arc<Vec<DateRange>>>>>,
    redis: Option<redis::RedisBus>,
    conns: crate::reload::Cap,
    next_conn: AtomicU64,
    node_id: String,
}

impl std::fmt::Debug for Interact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interact")
            .field("bus", &self.cfg.load().bus)
            .field("node", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Interact {
    /// Starts the hub (rooms, bus connection).
    ///
    /// # Errors
    /// [`InteractError::Config`] for an invalid config, [`InteractError::Bus`] if the Redis
    /// bus cannot be reached, [`InteractError::Metrics`] if the metric names are taken.
    pub async fn start(
        cfg: InteractConfig,
        timeline: Arc<dyn Timeline>,
        registry: &prometheus::Registry,
        token: CancellationToken,
    ) -> Result<Arc<Self>, InteractError> {
        cfg.validate().map_err(InteractError::Config)?;
        let metrics = Metrics::register(registry)?;
        let node_id = format!(
            "{:x}{:x}",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        );
        let tracker = TaskTracker::new();
        let redis = if cfg.bus == "memory" {
            None
        } else {
            Some(redis::RedisBus::connect(&cfg.bus).await?)
        };
        let hub = Arc::new(Self {
            conns: crate::reload::Cap::new(cfg.max_connections),
            cfg: arc_swap::ArcSwap::from_pointee(cfg),
            timeline,
            metrics,
            token,
            tracker,
            rooms: Mutex::new(HashMap::new()),
            dateranges: Mutex::new(HashMap::new()),
            redis,
            next_conn: AtomicU64::new(1),
            node_id,
        });
        if let Some(bus) = &hub.redis {
            let weak = Arc::downgrade(&hub);
            let bus = bus.clone();
            let token = hub.token.clone();
            let metrics = hub.metrics.clone();
            hub.tracker.spawn(async move {
                bus.dispatch(token, metrics, move |stream, payload| {
                    weak.upgrade()
                        .and_then(|h| h.existing_room(stream))
                        .map(|r| r.deliver_bus(payload))
                })
                .await;
            });
        }
        let weak = Arc::downgrade(&hub);
        let period = (hub.cfg.load().room_idle_timeout / 4)
            .clamp(Duration::from_millis(250), Duration::from_secs(30));
        let token = hub.token.clone();
        hub.tracker.spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tick.tick() => match weak.upgrade() {
                        Some(hub) => hub.evict_idle(),
                        None => return,
                    },
                }
            }
        });
        tracing::info!(bus = %hub.cfg.load().bus, node = %hub.node_id, "interaction hub started");
        Ok(hub)
    }

    /// GET `/live/{stream}/events`: WebSocket upgrade. Returns 101, or 400 (not a WebSocket
    /// request, bad stream name), 401 (bad or missing token), 503 (too many connections or
    /// rooms, shutting down).
    pub fn handle_ws(
        self: &Arc<Self>,
        stream: &str,
        req: Request<hyper::body::Incoming>,
    ) -> Response<Full<Bytes>> {
        ws::handle(self, stream, req)
    }

    /// `/api/...` server API (host token in `Authorization: Bearer`): `POST
    /// /api/streams/{stream}/polls`, `POST /api/streams/{stream}/polls/{id}/close`, `POST
    /// /api/streams/{stream}/tips`, `POST /api/streams/{stream}/messages`, `GET
    /// /api/streams/{stream}/state`. `path` is the full request path.
    pub async fn handle_api(
        self: &Arc<Self>,
        path: &str,
        req: Request<hyper::body::Incoming>,
    ) -> Response<Full<Bytes>> {
        api::handle(self, path, req).await
    }

    /// A watch of the active `EXT-X-DATERANGE` entries for a stream's media playlists (open
    /// polls and polls closed less than `daterange_keep` ago). A live stream takes it once
    /// and reads it for every part without touching the rooms.
    pub fn dateranges(&self, stream: &str) -> watch::Receiver<Arc<Vec<DateRange>>> {
        self.daterange_sender(stream).subscribe()
    }

    fn daterange_sender(&self, stream: &str) -> watch::Sender<Arc<Vec<DateRange>>> {
        self.dateranges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(stream.to_owned())
            .or_insert_with(|| watch::channel(Arc::new(Vec::new())).0)
            .clone()
    }

    /// Rooms open on this node.
    pub fn rooms(&self) -> usize {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Viewer count (open WebSocket connections on this node) per stream.
    pub fn viewers(&self, stream: &str) -> usize {
        self.existing_room(stream).map(|r| r.viewers()).unwrap_or(0)
    }

    /// Waits until every connection and room task has ended (after the token is cancelled).
    pub async fn closed(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    fn existing_room(&self, stream: &str) -> Option<RoomHandle> {
        self.rooms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(stream)
            .cloned()
    }

    /// The open room of `stream`, marked active.
    fn live_room(&self, stream: &str) -> Option<RoomHandle> {
        let rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let r = rooms.get(stream).filter(|r| !r.is_closed())?;
        r.touch();
        Some(r.clone())
    }

    /// Gets or creates the room of `stream`, which must be real (see [`Timeline::exists`]).
    fn room(self: &Arc<Self>, stream: &str) -> Result<RoomHandle, InteractError> {
        if self.token.is_cancelled() {
            return Err(InteractError::Closed);
        }
        if !valid_stream(stream) {
            return Err(InteractError::BadStream);
        }
        // Touched under the lock that eviction takes, so a room handed out is never one
        // being closed.
        if let Some(r) = self.live_room(stream) {
            return Ok(r);
        }
        // Asked outside the rooms lock: it reads the media side's state.
        if !self.timeline.exists(stream) {
            return Err(InteractError::UnknownStream);
        }
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = rooms.get(stream).filter(|r| !r.is_closed()) {
            r.touch();
            return Ok(r.clone());
        }
        rooms.retain(|_, r| !r.is_closed());
        if rooms.len() >= self.cfg.load().max_rooms {
            return Err(InteractError::TooManyRooms);
        }
        let (handle, room) = room::Room::new(
            stream.to_owned(),
            self.cfg.load_full(),
            self.timeline.clone(),
            self.metrics.clone(),
            self.redis.clone(),
            self.daterange_sender(stream),
            self.token.child_token(),
        );
        rooms.insert(stream.to_owned(), handle.clone());
        self.metrics.rooms.set(rooms.len() as i64);
        let span = tracing::info_span!("room", stream = %stream);
        self.tracker.spawn(tracing::Instrument::instrument(
            room.run(handle.token()),
            span,
        ));
        Ok(handle)
    }

    /// Puts a reloaded `[interact]` in force: token keys and connection limits at once,
    /// room limits from each room's next command. Connections stay open.
    pub fn reconfigure(&self, cfg: InteractConfig) {
        let cfg = Arc::new(cfg);
        self.cfg.store(cfg.clone());
        let rooms: Vec<_> = {
            let rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
            rooms.values().map(room::RoomHandle::inbox).collect()
        };
        for inbox in rooms {
            let cmd = room::RoomCmd::Reconfigure(cfg.clone());
            // Queued behind the room's commands; ends once delivered or the room closes.
            self.tracker.spawn(async move {
                let _ = inbox.send(cmd).await;
            });
        }
    }

    /// Closes rooms idle for `room_idle_timeout`: no connection, no command or bus event, and
    /// no poll in the playlists. A room just handed out counts as active, so a joining viewer
    /// never gets a room that is being closed.
    fn evict_idle(&self) {
        let timeout = self.cfg.load().room_idle_timeout;
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let before = rooms.len();
        rooms.retain(|stream, r| {
            if r.is_closed() {
                return false;
            }
            if !r.idle_for(timeout) {
                return true;
            }
            tracing::debug!(stream = %stream, "idle room closed");
            r.token().cancel();
            self.metrics.rooms_evicted.inc();
            false
        });
        if rooms.len() != before {
            self.metrics.rooms.set(rooms.len() as i64);
        }
        // Date-range channels nobody reads or writes any more.
        self.dateranges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|stream, tx| tx.receiver_count() > 0 || rooms.contains_key(stream));
    }

    fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}

/// Stream names: 1 to 64 bytes of `[A-Za-z0-9_.-]`, not starting with a dot.
pub(crate) fn valid_stream(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

pub(crate) fn json_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    r
}

pub(crate) fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
) -> Response<Full<Bytes>> {
    crate::http::error::full(status, code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names() {
        assert!(valid_stream("demo"));
        assert!(valid_stream("a.b-c_1"));
        assert!(!valid_stream(""));
        assert!(!valid_stream(".."));
        assert!(!valid_stream("a/b"));
        assert!(!valid_stream(&"x".repeat(65)));
    }

    #[test]
    fn timeline_stamp_serializes_rfc3339_millis() {
        let t = TimelineStamp {
            pdt: SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123),
            msn: 4,
            part: 2,
        };
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"pdt":"2023-11-14T22:13:20.123Z","msn":4,"part":2}"#
        );
    }
}
