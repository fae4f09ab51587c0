//! One room per stream: an actor owning chat history, polls, questions and moderation state.
//!
//! Every change is an event ([`ServerMsg`]) that goes through the bus and comes back to
//! `Room::apply` on every node, which updates local state and broadcasts the event's bytes
//! (serialized once) to this node's connections. With the memory bus, "through the bus" is
//! a direct call. Operations that must be atomic across nodes (message ids, votes, upvotes,
//! closing a poll) go to the backend first: in-room maps for memory, Lua scripts for Redis.
//!
//! # Layout
//! - this file: the handle, the shared counters, the room's state and its constructor.
//! - `core`: the actor loop, the bus, `apply` (events to state) and the action dispatcher.
//! - `backend`: the memory backend and loading a room from Redis.
//! - `chat`: chat, system messages, history and resume, pins, deletes, tips.
//! - `polls`: polls, votes, tallies and their `EXT-X-DATERANGE`s.
//! - `qa`: questions, upvotes and the host's answers.
//! - `reactions`: reaction batches.
//! - `moderation`: timeouts, bans, slow mode, rate limits.

mod backend;
mod chat;
mod core;
mod moderation;
mod polls;
mod qa;
mod reactions;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    num::NonZeroU32,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::{
    sync::{broadcast, mpsc, oneshot, watch},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::{
    config::InteractConfig,
    metrics::Metrics,
    protocol::{ChatMsg, ClientFrame, ErrorCode, Limits, ServerMsg, UserInfo},
    redis::RedisBus,
    wire::WireFrame,
    DateRange, Timeline,
};

use backend::Backend;
use moderation::Mute;
use polls::PollEntry;
use qa::QuestionEntry;

/// Capacity of a room's command inbox.
const INBOX: usize = 1_024;
/// Capacity of a room's bus inbox (events from Redis).
const BUS_INBOX: usize = 8_192;

/// Who acts: from a verified token, or anonymous.
#[derive(Debug, Clone)]
pub(crate) struct Actor {
    pub user: UserInfo,
    pub anonymous: bool,
}

/// What a new connection gets from its room.
pub(crate) struct Joined {
    /// Broadcast frames from now on.
    pub rx: broadcast::Receiver<WireFrame>,
    /// `history` then `state`, to send first.
    pub frames: Vec<WireFrame>,
}

pub(crate) enum RoomCmd {
    Join {
        after: Option<String>,
        reply: oneshot::Sender<Joined>,
    },
    Act {
        actor: Actor,
        frame: ClientFrame,
        reply: oneshot::Sender<ServerMsg>,
    },
    Snapshot {
        reply: oneshot::Sender<ServerMsg>,
    },
    /// A reloaded config: limits, blocked words and lengths apply from the next command
    /// (what a room fixed when it opened is restart-only, see `crate::reload::plan`).
    Reconfigure(Arc<InteractConfig>),
}

struct Shared {
    tx: mpsc::Sender<RoomCmd>,
    bus_tx: mpsc::Sender<Bytes>,
    viewers: AtomicUsize,
    /// Reaction counts of the current batch, indexed like `cfg.reactions`; connections add,
    /// the room swaps them out each `reaction_interval`, so reactions never queue.
    reactions: Vec<AtomicU64>,
    dateranges: watch::Receiver<Arc<Vec<DateRange>>>,
    metrics: Metrics,
    /// Stops this room (cancelled on shutdown or eviction).
    token: CancellationToken,
    /// When the room was made; `active_ms` counts from here.
    born: Instant,
    /// Last command, bus event or hand-out, in milliseconds since `born`.
    active_ms: AtomicU64,
}

impl Shared {
    fn touch(&self) {
        let ms = self.born.elapsed().as_millis() as u64;
        self.active_ms.fetch_max(ms, Ordering::Relaxed);
    }
}

/// A cheap handle to a room.
#[derive(Clone)]
pub(crate) struct RoomHandle(Arc<Shared>);

/// Counts a connection as a viewer while alive.
pub(crate) struct ViewerGuard(Arc<Shared>);

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        self.0.viewers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl RoomHandle {
    /// The room's command inbox, to hand it a reloaded config.
    pub fn inbox(&self) -> mpsc::Sender<RoomCmd> {
        self.0.tx.clone()
    }

    pub fn viewers(&self) -> usize {
        self.0.viewers.load(Ordering::Relaxed)
    }

    pub fn viewer(&self) -> ViewerGuard {
        self.0.viewers.fetch_add(1, Ordering::Relaxed);
        ViewerGuard(self.0.clone())
    }

    #[cfg(test)]
    pub fn dateranges(&self) -> Vec<DateRange> {
        self.0.dateranges.borrow().as_ref().clone()
    }

    pub fn is_closed(&self) -> bool {
        self.0.tx.is_closed() || self.0.token.is_cancelled()
    }

    /// The room's own token (a child of the hub's).
    pub fn token(&self) -> CancellationToken {
        self.0.token.clone()
    }

    /// Marks the room active now.
    pub fn touch(&self) {
        self.0.touch();
    }

    /// Whether the room has had no connection, no activity and no poll in the playlists
    /// for `timeout`.
    pub fn idle_for(&self, timeout: Duration) -> bool {
        let idle = self.0.born.elapsed().saturating_sub(Duration::from_millis(
            self.0.active_ms.load(Ordering::Relaxed),
        ));
        self.viewers() == 0 && idle >= timeout && self.0.dateranges.borrow().is_empty()
    }

    /// Adds one reaction (index into `cfg.reactions`) to the current batch.
    pub fn react(&self, idx: usize) {
        if let Some(c) = self.0.reactions.get(idx) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Hands a bus payload to the room; drops it (counted) if the room is far behind.
    pub fn deliver_bus(&self, payload: Bytes) -> bool {
        let ok = self.0.bus_tx.try_send(payload).is_ok();
        if !ok {
            self.0.metrics.bus_dropped.inc();
        }
        ok
    }

    pub async fn join(&self, after: Option<String>) -> Option<Joined> {
        let (reply, rx) = oneshot::channel();
        self.0.tx.send(RoomCmd::Join { after, reply }).await.ok()?;
        rx.await.ok()
    }

    /// Asks the room to do something; the reply is an `ack`, `error` or `history` frame.
    pub async fn act(&self, actor: Actor, frame: ClientFrame) -> ServerMsg {
        let r#ref = frame.r#ref.clone();
        let (reply, rx) = oneshot::channel();
        if self
            .0
            .tx
            .send(RoomCmd::Act {
                actor,
                frame,
                reply,
            })
            .await
            .is_err()
        {
            return super::protocol::error(ErrorCode::Unavailable, "room closed", r#ref);
        }
        rx.await.unwrap_or_else(|_| {
            super::protocol::error(ErrorCode::Unavailable, "room closed", r#ref)
        })
    }

    pub async fn snapshot(&self) -> Option<ServerMsg> {
        let (reply, rx) = oneshot::channel();
        self.0.tx.send(RoomCmd::Snapshot { reply }).await.ok()?;
        rx.await.ok()
    }
}

/// A chat message id, `"<ms>-<seq>"` (the Redis stream id format), ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct ChatId(u64, u64);

impl ChatId {
    pub fn parse(s: &str) -> Option<Self> {
        let (a, b) = s.split_once('-')?;
        Some(Self(a.parse().ok()?, b.parse().ok()?))
    }

    fn pred(self) -> Self {
        match self {
            ChatId(ms, 0) => ChatId(ms.saturating_sub(1), u64::MAX),
            ChatId(ms, seq) => ChatId(ms, seq - 1),
        }
    }
}

impl std::fmt::Display for ChatId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// A refused action.
struct Refusal {
    code: ErrorCode,
    message: String,
    retry_after: Option<Duration>,
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
        retry_after: None,
    }
}

impl From<::redis::RedisError> for Refusal {
    fn from(e: ::redis::RedisError) -> Self {
        tracing::warn!(error = %e, "interaction bus error");
        refuse(ErrorCode::Unavailable, "bus unavailable, try again")
    }
}

enum Reply {
    Ack(Option<String>),
    Frame(Box<ServerMsg>),
}

pub(crate) struct Room {
    stream: String,
    cfg: Arc<InteractConfig>,
    timeline: Arc<dyn Timeline>,
    metrics: Metrics,
    backend: Backend,
    shared: Arc<Shared>,
    out: broadcast::Sender<WireFrame>,
    rx: mpsc::Receiver<RoomCmd>,
    bus_rx: mpsc::Receiver<Bytes>,
    dateranges: watch::Sender<Arc<Vec<DateRange>>>,
    history: VecDeque<ChatMsg>,
    last_id: Option<ChatId>,
    last_evicted: Option<ChatId>,
    polls: BTreeMap<(usize, String), PollEntry>,
    questions: HashMap<String, QuestionEntry>,
    pinned: Option<ChatMsg>,
    slow_mode: Duration,
    last_chat: HashMap<String, Instant>,
    muted: HashMap<String, Mute>,
    limiter: DefaultKeyedRateLimiter<String>,
}

impl Room {
    pub fn new(
        stream: String,
        cfg: Arc<InteractConfig>,
        timeline: Arc<dyn Timeline>,
        metrics: Metrics,
        redis: Option<RedisBus>,
        dateranges: watch::Sender<Arc<Vec<DateRange>>>,
        token: CancellationToken,
    ) -> (RoomHandle, Self) {
        let (tx, rx) = mpsc::channel(INBOX);
        let (bus_tx, bus_rx) = mpsc::channel(BUS_INBOX);
        let (out, _) = broadcast::channel(cfg.send_queue);
        // A new room starts with no polls (a Redis load brings them back).
        dateranges.send_replace(Arc::new(Vec::new()));
        let dr_rx = dateranges.subscribe();
        let shared = Arc::new(Shared {
            tx,
            bus_tx,
            viewers: AtomicUsize::new(0),
            reactions: cfg.reactions.iter().map(|_| AtomicU64::new(0)).collect(),
            dateranges: dr_rx,
            metrics: metrics.clone(),
            token,
            born: Instant::now(),
            active_ms: AtomicU64::new(0),
        });
        let quota = Quota::with_period(Duration::from_secs(60) / cfg.chat_rate_per_min.max(1))
            .unwrap_or_else(|| Quota::per_minute(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(cfg.chat_burst).unwrap_or(NonZeroU32::MIN));
        let room = Self {
            stream,
            slow_mode: cfg.slow_mode,
            cfg,
            timeline,
            metrics,
            backend: match redis {
                Some(r) => Backend::Redis(Box::new(r)),
                None => Backend::Memory(Box::default()),
            },
            shared: shared.clone(),
            out,
            rx,
            bus_rx,
            dateranges,
            history: VecDeque::new(),
            last_id: None,
            last_evicted: None,
            polls: BTreeMap::new(),
            questions: HashMap::new(),
            pinned: None,
            last_chat: HashMap::new(),
            muted: HashMap::new(),
            limiter: RateLimiter::keyed(quota),
        };
        (RoomHandle(shared), room)
    }

    /// The `welcome` frame for a connection.
    pub fn welcome(cfg: &InteractConfig, conn: u64, actor: &Actor, stream: &str) -> ServerMsg {
        ServerMsg::Welcome {
            conn,
            user: actor.user.clone(),
            anonymous: actor.anonymous,
            stream: stream.to_owned(),
            limits: Limits {
                chat_max_len: cfg.chat_max_len,
                question_max_len: cfg.question_max_len,
                reactions: cfg.reactions.clone(),
                poll_vote_change: cfg.poll_vote_change,
                max_frame_size: cfg.max_frame_size,
            },
        }
    }
}

pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
