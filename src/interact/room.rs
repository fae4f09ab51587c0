//! One room per stream: an actor owning chat history, polls, questions and moderation state.
//!
//! Every change is an event ([`ServerMsg`]) that goes through the bus and comes back to
//! [`Room::apply`] on every node, which updates local state and broadcasts the event's bytes
//! (serialized once) to this node's connections. With the memory bus, "through the bus" is
//! a direct call. Operations that must be atomic across nodes (message ids, votes, upvotes,
//! closing a poll) go to the backend first: in-room maps for memory, Lua scripts for Redis.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    num::NonZeroU32,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use governor::{clock::Clock, DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::{
    sync::{broadcast, mpsc, oneshot, watch},
    time::{Instant, MissedTickBehavior},
};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use super::{
    config::InteractConfig,
    metrics::Metrics,
    protocol::{
        encode, ChatMsg, ClientFrame, ClientMsg, ErrorCode, Limits, Poll, PollSpec, PollState,
        Question, QuestionState, ServerMsg, Stamp, TipSpec, UserInfo,
    },
    redis::{PollClose, RedisBus, VoteResult},
    token::Role,
    DateRange, Timeline,
};

/// Capacity of a room's command inbox.
const INBOX: usize = 1_024;
/// Capacity of a room's bus inbox (events from Redis).
const BUS_INBOX: usize = 8_192;
/// Longest poll option, in characters.
const POLL_OPTION_MAX_LEN: usize = 100;
/// Longest timeout a moderator may give.
const MAX_TIMEOUT_SECS: u64 = 7 * 24 * 3600;
/// Longest slow mode.
const MAX_SLOW_MODE_SECS: u64 = 3600;

/// Who acts: from a verified token, or anonymous.
#[derive(Debug, Clone)]
pub(crate) struct Actor {
    pub user: UserInfo,
    pub anonymous: bool,
}

/// What a new connection gets from its room.
pub(crate) struct Joined {
    /// Broadcast frames from now on.
    pub rx: broadcast::Receiver<Utf8Bytes>,
    /// `history` then `state`, to send first.
    pub frames: Vec<Utf8Bytes>,
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
    pub fn viewers(&self) -> usize {
        self.0.viewers.load(Ordering::Relaxed)
    }

    pub fn viewer(&self) -> ViewerGuard {
        self.0.viewers.fetch_add(1, Ordering::Relaxed);
        ViewerGuard(self.0.clone())
    }

    pub fn dateranges(&self) -> Vec<DateRange> {
        self.0.dateranges.borrow().as_ref().clone()
    }

    pub fn is_closed(&self) -> bool {
        self.0.tx.is_closed()
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

struct PollEntry {
    poll: Poll,
    /// Version of the tallies shown; a closed poll is at `u64::MAX`.
    version: u64,
    /// A tally computed here and not yet published (published each `poll_tally_interval`).
    pending: Option<(u64, Vec<u64>)>,
    deadline: Instant,
    closed_at: Option<Instant>,
}

struct QuestionEntry {
    q: Question,
    pending_votes: Option<u64>,
}

enum Mute {
    Until(SystemTime),
    Banned,
}

/// The in-process backend: votes and counters kept in the room.
#[derive(Default)]
struct MemStore {
    seq: HashMap<&'static str, u64>,
    last_chat: ChatId,
    polls: HashMap<String, MemPoll>,
    upvoters: HashMap<String, HashSet<String>>,
}

struct MemPoll {
    voters: HashMap<String, usize>,
    tallies: Vec<u64>,
    version: u64,
    closed: bool,
}

impl MemStore {
    fn next_id(&mut self, kind: &'static str) -> u64 {
        let n = self.seq.entry(kind).or_insert(0);
        *n += 1;
        *n
    }

    fn next_chat_id(&mut self) -> ChatId {
        let ms = unix_ms(SystemTime::now());
        self.last_chat = if ms > self.last_chat.0 {
            ChatId(ms, 0)
        } else {
            ChatId(self.last_chat.0, self.last_chat.1 + 1)
        };
        self.last_chat
    }

    fn vote(
        &mut self,
        poll: &str,
        user: &str,
        option: usize,
        n: usize,
        change: bool,
    ) -> VoteResult {
        let p = self
            .polls
            .entry(poll.to_owned())
            .or_insert_with(|| MemPoll {
                voters: HashMap::new(),
                tallies: vec![0; n],
                version: 0,
                closed: false,
            });
        if p.closed {
            return VoteResult::Closed;
        }
        match p.voters.get(user).copied() {
            Some(_) if !change => return VoteResult::Duplicate,
            Some(prev) if prev != option => {
                p.tallies[prev] = p.tallies[prev].saturating_sub(1);
                p.tallies[option] += 1;
            }
            Some(_) => {}
            None => p.tallies[option] += 1,
        }
        p.voters.insert(user.to_owned(), option);
        p.version += 1;
        VoteResult::Counted(p.version, p.tallies.clone())
    }

    fn close(&mut self, poll: &str, n: usize) -> PollClose {
        let p = self
            .polls
            .entry(poll.to_owned())
            .or_insert_with(|| MemPoll {
                voters: HashMap::new(),
                tallies: vec![0; n],
                version: 0,
                closed: false,
            });
        if p.closed {
            return PollClose::AlreadyClosed;
        }
        p.closed = true;
        PollClose::Closed(p.tallies.clone())
    }

    fn upvote(&mut self, q: &str, user: &str) -> Option<u64> {
        let set = self.upvoters.entry(q.to_owned()).or_default();
        set.insert(user.to_owned()).then_some(set.len() as u64)
    }
}

enum Backend {
    Memory(Box<MemStore>),
    Redis(Box<RedisBus>),
}

pub(crate) struct Room {
    stream: String,
    cfg: Arc<InteractConfig>,
    timeline: Arc<dyn Timeline>,
    metrics: Metrics,
    backend: Backend,
    shared: Arc<Shared>,
    out: broadcast::Sender<Utf8Bytes>,
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
    ) -> (RoomHandle, Self) {
        let (tx, rx) = mpsc::channel(INBOX);
        let (bus_tx, bus_rx) = mpsc::channel(BUS_INBOX);
        let (out, _) = broadcast::channel(cfg.send_queue);
        let (dateranges, dr_rx) = watch::channel(Arc::new(Vec::new()));
        let shared = Arc::new(Shared {
            tx,
            bus_tx,
            viewers: AtomicUsize::new(0),
            reactions: cfg.reactions.iter().map(|_| AtomicU64::new(0)).collect(),
            dateranges: dr_rx,
            metrics: metrics.clone(),
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

    /// Runs the room until `token` is cancelled.
    pub async fn run(mut self, token: CancellationToken) {
        if let Backend::Redis(r) = &self.backend {
            match r.load(&self.stream, self.cfg.history_size).await {
                Ok(loaded) => {
                    if loaded.history.len() >= self.cfg.history_size {
                        self.last_evicted = loaded
                            .history
                            .first()
                            .and_then(|m| ChatId::parse(&m.id))
                            .map(ChatId::pred);
                    }
                    for m in loaded.history {
                        self.push_history(m);
                    }
                    for (poll, version) in loaded.polls {
                        self.insert_poll(poll, version);
                    }
                    for q in loaded.questions {
                        self.questions.insert(
                            q.id.clone(),
                            QuestionEntry {
                                q,
                                pending_votes: None,
                            },
                        );
                    }
                    let now = SystemTime::now();
                    for (user, value) in loaded.mutes {
                        let mute = match value.strip_prefix("until:") {
                            None if value == "ban" => Mute::Banned,
                            Some(ms) => match ms.parse::<u64>() {
                                Ok(ms) => {
                                    let until = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
                                    if until <= now {
                                        continue;
                                    }
                                    Mute::Until(until)
                                }
                                Err(_) => continue,
                            },
                            None => continue,
                        };
                        self.muted.insert(user, mute);
                    }
                    if let Some(secs) = loaded.slow_mode {
                        self.slow_mode = Duration::from_secs(secs);
                    }
                    self.update_dateranges();
                }
                Err(e) => {
                    self.metrics.bus_errors.inc();
                    tracing::warn!(stream = %self.stream, error = %e, "cannot load room state from redis");
                }
            }
        }
        let mut reactions = tokio::time::interval(self.cfg.reaction_interval);
        reactions.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut tallies = tokio::time::interval(self.cfg.poll_tally_interval);
        tallies.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut housekeeping = tokio::time::interval(Duration::from_secs(60));
        housekeeping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tracing::debug!(stream = %self.stream, "room started");
        loop {
            // Bus events first: they are other nodes' (and, with Redis, our own) accepted
            // events, and applying them promptly keeps history and tallies current.
            tokio::select! {
                biased;
                _ = token.cancelled() => break,
                Some(p) = self.bus_rx.recv() => self.on_bus(p),
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => self.on_cmd(cmd).await,
                    None => break,
                },
                _ = reactions.tick() => self.flush_reactions().await,
                _ = tallies.tick() => self.on_tally_tick().await,
                _ = housekeeping.tick() => self.housekeeping(),
            }
        }
        tracing::debug!(stream = %self.stream, "room stopped");
    }

    fn on_bus(&mut self, payload: Bytes) {
        let Ok(text) = Utf8Bytes::try_from(payload) else {
            self.metrics.bus_errors.inc();
            return;
        };
        match serde_json::from_str::<ServerMsg>(text.as_str()) {
            Ok(msg) => self.apply(msg, text),
            Err(e) => {
                self.metrics.bus_errors.inc();
                tracing::warn!(stream = %self.stream, error = %e, "bad bus event");
            }
        }
    }

    async fn on_cmd(&mut self, cmd: RoomCmd) {
        match cmd {
            RoomCmd::Join { after, reply } => {
                let rx = self.out.subscribe();
                let frames = vec![
                    Utf8Bytes::from(encode(&self.history_after(after.as_deref()))),
                    Utf8Bytes::from(encode(&self.state())),
                ];
                let _ = reply.send(Joined { rx, frames });
            }
            RoomCmd::Snapshot { reply } => {
                let _ = reply.send(self.state());
            }
            RoomCmd::Act {
                actor,
                frame,
                reply,
            } => {
                let r#ref = frame.r#ref;
                let out = match self.act(&actor, frame.msg).await {
                    Ok(Reply::Ack(id)) => ServerMsg::Ack { r#ref, id },
                    Ok(Reply::Frame(f)) => *f,
                    Err(r) => ServerMsg::Error {
                        code: r.code,
                        message: r.message,
                        r#ref,
                        retry_after_ms: r.retry_after.map(|d| d.as_millis().max(1) as u64),
                    },
                };
                let _ = reply.send(out);
            }
        }
    }

    fn stamp(&self) -> Stamp {
        match self.timeline.now(&self.stream) {
            Some(t) => Stamp {
                pdt: rfc3339(t.pdt),
                msn: Some(t.msn),
                part: Some(t.part),
            },
            None => Stamp {
                pdt: rfc3339(SystemTime::now()),
                msn: None,
                part: None,
            },
        }
    }

    /// Sends an event to every node (this one included).
    async fn emit(&mut self, msg: ServerMsg) -> Result<(), Refusal> {
        let text = encode(&msg);
        match &self.backend {
            Backend::Memory(_) => {
                self.apply(msg, Utf8Bytes::from(text));
                Ok(())
            }
            Backend::Redis(r) => {
                // Moderation is stored before it is announced, so that a node started later
                // (which loads the room from Redis) enforces it too.
                let saved = match &msg {
                    ServerMsg::Moderation {
                        user,
                        action,
                        until_ms,
                    } => {
                        let value = match (action.as_str(), until_ms) {
                            ("ban", _) => Some("ban".to_owned()),
                            ("timeout", Some(ms)) => Some(format!("until:{ms}")),
                            _ => None,
                        };
                        r.save_mute(&self.stream, user, value.as_deref()).await
                    }
                    ServerMsg::SlowMode { secs } => r.save_slow_mode(&self.stream, *secs).await,
                    _ => Ok(()),
                };
                if let Err(e) = saved {
                    self.metrics.bus_errors.inc();
                    return Err(e.into());
                }
                match r.publish(&self.stream, &text).await {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        self.metrics.bus_errors.inc();
                        Err(e.into())
                    }
                }
            }
        }
    }

    fn broadcast(&self, bytes: Utf8Bytes) {
        self.metrics.broadcasts.inc();
        // No receivers is fine: nobody is watching.
        let _ = self.out.send(bytes);
    }

    /// Applies an accepted event to local state and broadcasts it.
    fn apply(&mut self, msg: ServerMsg, bytes: Utf8Bytes) {
        match msg {
            ServerMsg::Chat(m) => {
                let Some(id) = ChatId::parse(&m.id) else {
                    return;
                };
                if self.last_id.is_some_and(|l| id <= l) {
                    return; // already have it (Redis load overlap)
                }
                self.push_history(m);
            }
            ServerMsg::Deleted { ref id } => {
                self.history.retain(|m| &m.id != id);
                if self.pinned.as_ref().is_some_and(|p| &p.id == id) {
                    self.pinned = None;
                }
            }
            ServerMsg::Moderation {
                ref user,
                ref action,
                until_ms,
            } => match action.as_str() {
                "timeout" => {
                    let until =
                        SystemTime::UNIX_EPOCH + Duration::from_millis(until_ms.unwrap_or(0));
                    self.muted.insert(user.clone(), Mute::Until(until));
                }
                "ban" => {
                    self.muted.insert(user.clone(), Mute::Banned);
                }
                _ => {
                    self.muted.remove(user);
                }
            },
            ServerMsg::SlowMode { secs } => self.slow_mode = Duration::from_secs(secs),
            ServerMsg::Pinned { ref message, .. } => self.pinned = message.clone(),
            ServerMsg::PollOpened(ref p) => {
                if self.find_poll(&p.id).is_some() {
                    return;
                }
                self.insert_poll(p.clone(), 0);
                self.update_dateranges();
            }
            ServerMsg::PollTally {
                ref poll,
                ref tallies,
                version,
            } => {
                let Some(e) = self.find_poll_mut(poll) else {
                    return;
                };
                if version <= e.version || e.poll.tallies.len() != tallies.len() {
                    return; // stale or from a closed poll
                }
                e.version = version;
                e.poll.tallies.clone_from(tallies);
            }
            ServerMsg::PollClosed(ref p) => {
                match self.find_poll_mut(&p.id) {
                    Some(e) => {
                        if e.poll.state == PollState::Closed {
                            return;
                        }
                        e.poll = p.clone();
                        e.version = u64::MAX;
                        e.closed_at = Some(Instant::now());
                    }
                    None => self.insert_poll(p.clone(), u64::MAX),
                }
                self.update_dateranges();
            }
            ServerMsg::QuestionAsked(ref q) => {
                if self.questions.contains_key(&q.id) {
                    return;
                }
                self.questions.insert(
                    q.id.clone(),
                    QuestionEntry {
                        q: q.clone(),
                        pending_votes: None,
                    },
                );
            }
            ServerMsg::QuestionVotes { ref id, votes } => {
                let Some(e) = self.questions.get_mut(id) else {
                    return;
                };
                if votes <= e.q.votes {
                    return;
                }
                e.q.votes = votes;
            }
            ServerMsg::QuestionState {
                ref id,
                state,
                ref stamp,
            } => {
                let Some(e) = self.questions.get_mut(id) else {
                    return;
                };
                e.q.state = state;
                e.q.stamp = Some(stamp.clone());
            }
            ServerMsg::Reactions { .. } | ServerMsg::Tip { .. } => {}
            // Not events: never broadcast.
            ServerMsg::Welcome { .. }
            | ServerMsg::History { .. }
            | ServerMsg::State { .. }
            | ServerMsg::Ack { .. }
            | ServerMsg::Error { .. } => return,
        }
        self.broadcast(bytes);
    }

    fn push_history(&mut self, m: ChatMsg) {
        if let Some(id) = ChatId::parse(&m.id) {
            self.last_id = Some(self.last_id.map_or(id, |l| l.max(id)));
        }
        self.history.push_back(m);
        while self.history.len() > self.cfg.history_size {
            if let Some(old) = self.history.pop_front() {
                self.last_evicted = ChatId::parse(&old.id).or(self.last_evicted);
            }
        }
    }

    fn insert_poll(&mut self, poll: Poll, version: u64) {
        let num = poll_num(&poll.id);
        let closed = poll.state == PollState::Closed;
        let remaining = humantime::parse_rfc3339(&poll.closes_at)
            .ok()
            .and_then(|t| t.duration_since(SystemTime::now()).ok())
            .unwrap_or(Duration::ZERO);
        self.polls.insert(
            (num, poll.id.clone()),
            PollEntry {
                poll,
                version: if closed { u64::MAX } else { version },
                pending: None,
                deadline: Instant::now() + remaining,
                closed_at: closed.then(Instant::now),
            },
        );
    }

    fn find_poll(&self, id: &str) -> Option<&PollEntry> {
        self.polls.get(&(poll_num(id), id.to_owned()))
    }

    fn find_poll_mut(&mut self, id: &str) -> Option<&mut PollEntry> {
        self.polls.get_mut(&(poll_num(id), id.to_owned()))
    }

    fn history_after(&self, after: Option<&str>) -> ServerMsg {
        let Some(after) = after else {
            return ServerMsg::History {
                messages: self.history.iter().cloned().collect(),
                complete: self.last_evicted.is_none(),
            };
        };
        let Some(a) = ChatId::parse(after) else {
            return ServerMsg::History {
                messages: self.history.iter().cloned().collect(),
                complete: false,
            };
        };
        let messages = self
            .history
            .iter()
            .filter(|m| ChatId::parse(&m.id).is_some_and(|id| id > a))
            .cloned()
            .collect();
        ServerMsg::History {
            messages,
            complete: self.last_evicted.is_none_or(|e| a >= e),
        }
    }

    fn state(&self) -> ServerMsg {
        let mut questions: Vec<&Question> = self
            .questions
            .values()
            .map(|e| &e.q)
            .filter(|q| q.state != QuestionState::Dismissed)
            .collect();
        questions.sort_by_key(|q| {
            (
                q.state != QuestionState::Pinned,
                q.state == QuestionState::Answered,
                Reverse(q.votes),
                poll_num(&q.id),
            )
        });
        ServerMsg::State {
            polls: self.polls.values().map(|e| e.poll.clone()).collect(),
            questions: questions
                .into_iter()
                .take(self.cfg.qa_top)
                .cloned()
                .collect(),
            pinned: self.pinned.clone(),
            slow_mode_secs: self.slow_mode.as_secs(),
        }
    }

    async fn act(&mut self, actor: &Actor, msg: ClientMsg) -> Result<Reply, Refusal> {
        let role = actor.user.role;
        let need = |min: Role| {
            if role >= min {
                Ok(())
            } else {
                Err(refuse(
                    ErrorCode::Forbidden,
                    format!("needs the {min} role"),
                ))
            }
        };
        let identified = || {
            if actor.anonymous {
                Err(refuse(
                    ErrorCode::AuthRequired,
                    "sign in (a token) to do this",
                ))
            } else {
                Ok(())
            }
        };
        match msg {
            ClientMsg::Chat { text } => {
                identified()?;
                let text = self.check_text(&text, self.cfg.chat_max_len)?;
                self.check_muted(&actor.user.id)?;
                self.check_pace(actor)?;
                let id = self
                    .publish_chat(ChatMsg {
                        id: String::new(),
                        user: actor.user.clone(),
                        text,
                        ts: rfc3339(SystemTime::now()),
                        system: false,
                        stamp: None,
                    })
                    .await?;
                self.last_chat.insert(actor.user.id.clone(), Instant::now());
                Ok(Reply::Ack(Some(id)))
            }
            ClientMsg::System { text } => {
                need(Role::Host)?;
                let text = self.check_text(&text, self.cfg.chat_max_len)?;
                let stamp = self.stamp();
                let id = self
                    .publish_chat(ChatMsg {
                        id: String::new(),
                        user: actor.user.clone(),
                        text,
                        ts: rfc3339(SystemTime::now()),
                        system: true,
                        stamp: Some(stamp),
                    })
                    .await?;
                Ok(Reply::Ack(Some(id)))
            }
            ClientMsg::React { emoji } => match self.cfg.reactions.iter().position(|r| *r == emoji)
            {
                Some(i) => {
                    self.shared.reactions[i].fetch_add(1, Ordering::Relaxed);
                    Ok(Reply::Ack(None))
                }
                None => Err(refuse(ErrorCode::BadReaction, "not an allowed reaction")),
            },
            ClientMsg::Resume { after } => {
                Ok(Reply::Frame(Box::new(self.history_after(Some(&after)))))
            }
            ClientMsg::Vote { poll, option } => {
                identified()?;
                let change = self.cfg.poll_vote_change;
                let e = self
                    .find_poll(&poll)
                    .ok_or_else(|| refuse(ErrorCode::NotFound, "no such poll"))?;
                if e.poll.state == PollState::Closed {
                    return Err(refuse(ErrorCode::Closed, "poll closed"));
                }
                let n = e.poll.options.len();
                if option >= n {
                    return Err(refuse(
                        ErrorCode::BadFrame,
                        format!("option must be below {n}"),
                    ));
                }
                let result = match &mut self.backend {
                    Backend::Memory(m) => m.vote(&poll, &actor.user.id, option, n, change),
                    Backend::Redis(r) => {
                        r.vote(&self.stream, &poll, &actor.user.id, option, n, change)
                            .await?
                    }
                };
                match result {
                    VoteResult::Counted(version, tallies) => {
                        if let Some(e) = self.find_poll_mut(&poll) {
                            if e.pending.as_ref().is_none_or(|(v, _)| version > *v) {
                                e.pending = Some((version, tallies));
                            }
                        }
                        Ok(Reply::Ack(None))
                    }
                    VoteResult::Duplicate => Err(refuse(
                        ErrorCode::Duplicate,
                        "already voted; votes cannot be changed",
                    )),
                    VoteResult::Closed => Err(refuse(ErrorCode::Closed, "poll closed")),
                }
            }
            ClientMsg::Ask { text } => {
                identified()?;
                let text = self.check_text(&text, self.cfg.question_max_len)?;
                self.check_muted(&actor.user.id)?;
                if actor.user.role == Role::Viewer {
                    self.check_rate(&actor.user.id)?;
                }
                if self.questions.len() >= self.cfg.qa_max_questions {
                    return Err(refuse(ErrorCode::Full, "too many questions in this room"));
                }
                let id = format!("q{}", self.next_id("q").await?);
                let q = Question {
                    id: id.clone(),
                    text,
                    user: actor.user.clone(),
                    votes: 0,
                    state: QuestionState::Open,
                    ts: rfc3339(SystemTime::now()),
                    stamp: None,
                };
                if let Backend::Redis(r) = &self.backend {
                    r.save_question(&self.stream, &q).await?;
                }
                self.emit(ServerMsg::QuestionAsked(q)).await?;
                Ok(Reply::Ack(Some(id)))
            }
            ClientMsg::Upvote { question } => {
                identified()?;
                if !self.questions.contains_key(&question) {
                    return Err(refuse(ErrorCode::NotFound, "no such question"));
                }
                let votes = match &mut self.backend {
                    Backend::Memory(m) => m.upvote(&question, &actor.user.id),
                    Backend::Redis(r) => r.upvote(&self.stream, &question, &actor.user.id).await?,
                };
                let votes = votes.ok_or_else(|| refuse(ErrorCode::Duplicate, "already upvoted"))?;
                if let Some(e) = self.questions.get_mut(&question) {
                    e.pending_votes = Some(e.pending_votes.unwrap_or(0).max(votes));
                }
                Ok(Reply::Ack(None))
            }
            ClientMsg::QuestionState { question, state } => {
                if !(role == Role::Host
                    || role == Role::Moderator && state == QuestionState::Dismissed)
                {
                    return Err(refuse(
                        ErrorCode::Forbidden,
                        "needs the host role (moderators may only dismiss)",
                    ));
                }
                let e = self
                    .questions
                    .get(&question)
                    .ok_or_else(|| refuse(ErrorCode::NotFound, "no such question"))?;
                let stamp = self.stamp();
                if let Backend::Redis(r) = &self.backend {
                    let mut q = e.q.clone();
                    q.state = state;
                    q.stamp = Some(stamp.clone());
                    r.save_question(&self.stream, &q).await?;
                }
                self.emit(ServerMsg::QuestionState {
                    id: question,
                    state,
                    stamp,
                })
                .await?;
                Ok(Reply::Ack(None))
            }
            ClientMsg::Delete { id } => {
                need(Role::Moderator)?;
                if !self.history.iter().any(|m| m.id == id) {
                    return Err(refuse(ErrorCode::NotFound, "no such message in history"));
                }
                if let Backend::Redis(r) = &self.backend {
                    r.delete_chat(&self.stream, &id).await?;
                }
                self.emit(ServerMsg::Deleted { id }).await?;
                Ok(Reply::Ack(None))
            }
            ClientMsg::Timeout { user, secs } => {
                need(Role::Moderator)?;
                if secs == 0 || secs > MAX_TIMEOUT_SECS {
                    return Err(refuse(
                        ErrorCode::BadFrame,
                        format!("secs must be 1 to {MAX_TIMEOUT_SECS}"),
                    ));
                }
                let until = unix_ms(SystemTime::now()) + secs * 1000;
                self.emit(ServerMsg::Moderation {
                    user,
                    action: "timeout".into(),
                    until_ms: Some(until),
                })
                .await?;
                Ok(Reply::Ack(None))
            }
            ClientMsg::Ban { user } => {
                need(Role::Moderator)?;
                self.emit(ServerMsg::Moderation {
                    user,
                    action: "ban".into(),
                    until_ms: None,
                })
                .await?;
                Ok(Reply::Ack(None))
            }
            ClientMsg::Unban { user } => {
                need(Role::Moderator)?;
                self.emit(ServerMsg::Moderation {
                    user,
                    action: "unban".into(),
                    until_ms: None,
                })
                .await?;
                Ok(Reply::Ack(None))
            }
            ClientMsg::SlowMode { secs } => {
                need(Role::Moderator)?;
                if secs > MAX_SLOW_MODE_SECS {
                    return Err(refuse(
                        ErrorCode::BadFrame,
                        format!("secs must be at most {MAX_SLOW_MODE_SECS}"),
                    ));
                }
                self.emit(ServerMsg::SlowMode { secs }).await?;
                Ok(Reply::Ack(None))
            }
            ClientMsg::Pin { id } => {
                need(Role::Host)?;
                let message = match id {
                    Some(id) => Some(
                        self.history
                            .iter()
                            .find(|m| m.id == id)
                            .cloned()
                            .ok_or_else(|| {
                                refuse(ErrorCode::NotFound, "no such message in history")
                            })?,
                    ),
                    None => None,
                };
                let stamp = self.stamp();
                self.emit(ServerMsg::Pinned { message, stamp }).await?;
                Ok(Reply::Ack(None))
            }
            ClientMsg::PollOpen(spec) => {
                need(Role::Host)?;
                let id = self.open_poll(spec).await?;
                Ok(Reply::Ack(Some(id)))
            }
            ClientMsg::PollClose { poll } => {
                need(Role::Host)?;
                let e = self
                    .find_poll(&poll)
                    .ok_or_else(|| refuse(ErrorCode::NotFound, "no such poll"))?;
                if e.poll.state == PollState::Closed {
                    return Err(refuse(ErrorCode::Closed, "poll already closed"));
                }
                self.close_poll(&poll).await?;
                Ok(Reply::Ack(Some(poll)))
            }
            ClientMsg::Tip(spec) => {
                need(Role::Host)?;
                let id = self.tip(spec).await?;
                Ok(Reply::Ack(Some(id)))
            }
        }
    }

    fn check_text(&self, text: &str, max: usize) -> Result<String, Refusal> {
        // Bidi overrides and zero-width characters could spoof text in the overlay.
        let cleaned = super::text::strip_invisible(text);
        let t = cleaned.trim();
        let n = t.chars().count();
        if n == 0 || n > max {
            return Err(refuse(
                ErrorCode::BadLength,
                format!("text must be 1 to {max} characters"),
            ));
        }
        if t.chars().any(|c| c.is_control() && c != '\n') {
            return Err(refuse(
                ErrorCode::BadFrame,
                "control characters are not allowed",
            ));
        }
        if !self.cfg.blocked_words.is_empty() {
            let lower = t.to_lowercase();
            if self
                .cfg
                .blocked_words
                .iter()
                .any(|w| !w.is_empty() && lower.contains(&w.to_lowercase()))
            {
                return Err(refuse(ErrorCode::Blocked, "contains a blocked word"));
            }
        }
        Ok(t.to_owned())
    }

    fn check_muted(&self, user: &str) -> Result<(), Refusal> {
        match self.muted.get(user) {
            Some(Mute::Banned) => Err(refuse(ErrorCode::Muted, "banned from this room")),
            Some(Mute::Until(t)) => match t.duration_since(SystemTime::now()) {
                Ok(left) if !left.is_zero() => Err(Refusal {
                    code: ErrorCode::Muted,
                    message: "timed out".into(),
                    retry_after: Some(left),
                }),
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// Slow mode and the per-user rate limit; moderators and hosts are exempt.
    fn check_pace(&self, actor: &Actor) -> Result<(), Refusal> {
        if actor.user.role != Role::Viewer {
            return Ok(());
        }
        if !self.slow_mode.is_zero() {
            if let Some(last) = self.last_chat.get(&actor.user.id) {
                let next = *last + self.slow_mode;
                let now = Instant::now();
                if next > now {
                    return Err(Refusal {
                        code: ErrorCode::SlowMode,
                        message: format!(
                            "slow mode: one message per {}s",
                            self.slow_mode.as_secs()
                        ),
                        retry_after: Some(next - now),
                    });
                }
            }
        }
        self.check_rate(&actor.user.id)
    }

    fn check_rate(&self, user: &str) -> Result<(), Refusal> {
        match self.limiter.check_key(&user.to_owned()) {
            Ok(()) => Ok(()),
            Err(not_until) => Err(Refusal {
                code: ErrorCode::RateLimited,
                message: "too many messages".into(),
                retry_after: Some(
                    not_until.wait_time_from(governor::clock::DefaultClock::default().now()),
                ),
            }),
        }
    }

    async fn next_id(&mut self, kind: &'static str) -> Result<u64, Refusal> {
        match &mut self.backend {
            Backend::Memory(m) => Ok(m.next_id(kind)),
            Backend::Redis(r) => Ok(r.next_id(&self.stream, kind).await?),
        }
    }

    async fn publish_chat(&mut self, mut msg: ChatMsg) -> Result<String, Refusal> {
        match &mut self.backend {
            Backend::Memory(m) => {
                let id = m.next_chat_id().to_string();
                msg.id.clone_from(&id);
                self.emit(ServerMsg::Chat(msg)).await?;
                Ok(id)
            }
            Backend::Redis(r) => {
                let r = r.as_ref().clone();
                match r.chat(&self.stream, self.cfg.history_size, &msg).await {
                    Ok(id) => Ok(id),
                    Err(e) => {
                        self.metrics.bus_errors.inc();
                        Err(e.into())
                    }
                }
            }
        }
    }

    async fn open_poll(&mut self, spec: PollSpec) -> Result<String, Refusal> {
        let question = self.check_text(&spec.question, self.cfg.question_max_len)?;
        let n = spec.options.len();
        if n < 2 || n > self.cfg.poll_max_options {
            return Err(refuse(
                ErrorCode::BadFrame,
                format!("a poll has 2 to {} options", self.cfg.poll_max_options),
            ));
        }
        let options = spec
            .options
            .iter()
            .map(|o| self.check_text(o, POLL_OPTION_MAX_LEN))
            .collect::<Result<Vec<_>, _>>()?;
        let max = self.cfg.poll_max_duration.as_secs();
        if spec.duration_secs == 0 || spec.duration_secs > max {
            return Err(refuse(
                ErrorCode::BadFrame,
                format!("duration_secs must be 1 to {max}"),
            ));
        }
        let id = format!("p{}", self.next_id("poll").await?);
        let poll = Poll {
            id: id.clone(),
            question,
            tallies: vec![0; n],
            options,
            state: PollState::Open,
            closes_at: rfc3339(SystemTime::now() + Duration::from_secs(spec.duration_secs)),
            opened: self.stamp(),
            closed: None,
        };
        if let Backend::Redis(r) = &self.backend {
            r.save_poll(&self.stream, &poll).await?;
        }
        self.emit(ServerMsg::PollOpened(poll)).await?;
        Ok(id)
    }

    async fn close_poll(&mut self, id: &str) -> Result<(), Refusal> {
        let Some(e) = self.find_poll(id) else {
            return Ok(());
        };
        let n = e.poll.options.len();
        let mut poll = e.poll.clone();
        let outcome = match &mut self.backend {
            Backend::Memory(m) => m.close(id, n),
            Backend::Redis(r) => r.close_poll(&self.stream, id, n).await?,
        };
        let PollClose::Closed(tallies) = outcome else {
            return Ok(()); // another node closed it; its event will come
        };
        poll.tallies = tallies;
        poll.state = PollState::Closed;
        poll.closed = Some(self.stamp());
        if let Some(e) = self.find_poll_mut(id) {
            e.pending = None;
        }
        if let Backend::Redis(r) = &self.backend {
            r.save_poll(&self.stream, &poll).await?;
        }
        self.emit(ServerMsg::PollClosed(poll)).await
    }

    async fn tip(&mut self, spec: TipSpec) -> Result<String, Refusal> {
        let from = self.check_text(&spec.from, super::token::MAX_ID_LEN)?;
        if spec.amount_minor == 0 || spec.amount_minor > self.cfg.tip_max_minor {
            return Err(refuse(
                ErrorCode::BadFrame,
                format!("amount_minor must be 1 to {}", self.cfg.tip_max_minor),
            ));
        }
        if spec.currency.len() != 3 || !spec.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(refuse(
                ErrorCode::BadFrame,
                "currency must be an ISO 4217 code (three upper-case letters)",
            ));
        }
        let message = match spec.message {
            Some(m) if !m.trim().is_empty() => Some(self.check_text(&m, self.cfg.chat_max_len)?),
            _ => None,
        };
        let id = format!("t{}", self.next_id("tip").await?);
        let stamp = self.stamp();
        self.emit(ServerMsg::Tip {
            id: id.clone(),
            from,
            amount_minor: spec.amount_minor,
            currency: spec.currency,
            message,
            stamp,
        })
        .await?;
        Ok(id)
    }

    async fn flush_reactions(&mut self) {
        let mut counts = BTreeMap::new();
        for (i, c) in self.shared.reactions.iter().enumerate() {
            let n = c.swap(0, Ordering::Relaxed);
            if n > 0 {
                counts.insert(self.cfg.reactions[i].clone(), n);
            }
        }
        if counts.is_empty() {
            return;
        }
        let window_ms = self.cfg.reaction_interval.as_millis() as u64;
        let _ = self.emit(ServerMsg::Reactions { counts, window_ms }).await;
    }

    async fn on_tally_tick(&mut self) {
        let now = Instant::now();
        let mut tallies = Vec::new();
        let mut expired = Vec::new();
        for e in self.polls.values_mut() {
            if let Some((version, t)) = e.pending.take() {
                tallies.push(ServerMsg::PollTally {
                    poll: e.poll.id.clone(),
                    tallies: t,
                    version,
                });
            }
            if e.poll.state == PollState::Open && e.deadline <= now {
                expired.push(e.poll.id.clone());
            }
        }
        for t in tallies {
            let _ = self.emit(t).await;
        }
        let mut votes = Vec::new();
        for e in self.questions.values_mut() {
            if let Some(v) = e.pending_votes.take() {
                votes.push(ServerMsg::QuestionVotes {
                    id: e.q.id.clone(),
                    votes: v,
                });
            }
        }
        for v in votes {
            let _ = self.emit(v).await;
        }
        for id in expired {
            if self.close_poll(&id).await.is_err() {
                // Retry on the next tick; push the deadline so we do not spin on a dead bus.
                if let Some(e) = self.find_poll_mut(&id) {
                    e.deadline = now + Duration::from_secs(1);
                }
            }
        }
        // Closed polls leave the playlists after `daterange_keep`.
        let keep = self.cfg.daterange_keep;
        let before = self.polls.len();
        self.polls
            .retain(|_, e| e.closed_at.is_none_or(|t| now.duration_since(t) < keep));
        if self.polls.len() != before {
            self.update_dateranges();
        }
    }

    fn housekeeping(&mut self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        let slow = self.slow_mode;
        let now = Instant::now();
        self.last_chat.retain(|_, t| now.duration_since(*t) < slow);
        let wall = SystemTime::now();
        self.muted
            .retain(|_, m| matches!(m, Mute::Banned) || matches!(m, Mute::Until(t) if *t > wall));
    }

    fn update_dateranges(&mut self) {
        let list: Vec<DateRange> = self.polls.values().map(|e| daterange(&e.poll)).collect();
        self.dateranges.send_if_modified(|cur| {
            if cur.as_slice() == list.as_slice() {
                false
            } else {
                *cur = Arc::new(list);
                true
            }
        });
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

/// Numeric part of `p12` / `q3`, for ordering.
fn poll_num(id: &str) -> usize {
    id.get(1..)
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// HLS quoted-strings may not hold `"`, CR or LF.
fn hls_safe(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '"' => '\'',
            '\r' | '\n' => ' ',
            c => c,
        })
        .collect()
}

fn daterange(p: &Poll) -> DateRange {
    let start = humantime::parse_rfc3339(&p.opened.pdt).unwrap_or(SystemTime::UNIX_EPOCH);
    let end = p
        .closed
        .as_ref()
        .and_then(|s| humantime::parse_rfc3339(&s.pdt).ok());
    let mut attrs = vec![
        ("X-POLL-ID".to_owned(), p.id.clone()),
        ("X-QUESTION".to_owned(), hls_safe(&p.question)),
        (
            "X-OPTIONS".to_owned(),
            p.options
                .iter()
                .map(|o| hls_safe(o).replace('|', "/"))
                .collect::<Vec<_>>()
                .join("|"),
        ),
    ];
    if p.state == PollState::Closed {
        attrs.push((
            "X-RESULTS".to_owned(),
            p.tallies
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ));
    }
    DateRange {
        id: format!("poll-{}", p.id),
        class: "com.estuary.poll".to_owned(),
        start,
        end,
        attrs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interact::WallClock;

    fn actor(id: &str, role: Role) -> Actor {
        Actor {
            user: UserInfo {
                id: id.into(),
                name: id.into(),
                role,
            },
            anonymous: false,
        }
    }

    fn start(cfg: InteractConfig) -> (RoomHandle, CancellationToken) {
        let metrics = Metrics::register(&prometheus::Registry::new()).unwrap();
        let (h, room) = Room::new(
            "s".into(),
            Arc::new(cfg),
            Arc::new(WallClock),
            metrics,
            None,
        );
        let token = CancellationToken::new();
        tokio::spawn(room.run(token.clone()));
        (h, token)
    }

    async fn act(h: &RoomHandle, a: &Actor, msg: ClientMsg) -> ServerMsg {
        h.act(a.clone(), ClientFrame { r#ref: None, msg }).await
    }

    fn ack_id(m: ServerMsg) -> String {
        match m {
            ServerMsg::Ack { id: Some(id), .. } => id,
            other => panic!("expected ack with id, got {other:?}"),
        }
    }

    fn err_code(m: ServerMsg) -> ErrorCode {
        match m {
            ServerMsg::Error { code, .. } => code,
            other => panic!("expected error, got {other:?}"),
        }
    }

    fn decode(b: &Utf8Bytes) -> ServerMsg {
        serde_json::from_str(b.as_str()).unwrap()
    }

    /// Broadcast frames received so far.
    fn drain(rx: &mut broadcast::Receiver<Utf8Bytes>) -> Vec<ServerMsg> {
        let mut out = Vec::new();
        while let Ok(b) = rx.try_recv() {
            out.push(decode(&b));
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn history_resume_is_gapless_and_flags_gaps() {
        let (h, _t) = start(InteractConfig {
            history_size: 3,
            ..Default::default()
        });
        let host = actor("h", Role::Host);
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(ack_id(
                act(
                    &h,
                    &host,
                    ClientMsg::Chat {
                        text: format!("m{i}"),
                    },
                )
                .await,
            ));
        }
        // Ids increase in room order.
        let parsed: Vec<ChatId> = ids.iter().map(|i| ChatId::parse(i).unwrap()).collect();
        assert!(parsed.windows(2).all(|w| w[0] < w[1]));
        let j = h.join(Some(ids[2].clone())).await.unwrap();
        match decode(&j.frames[0]) {
            ServerMsg::History { messages, complete } => {
                assert!(complete);
                let texts: Vec<_> = messages.iter().map(|m| m.text.as_str()).collect();
                assert_eq!(texts, ["m3", "m4"]);
            }
            other => panic!("{other:?}"),
        }
        // m0 and m1 fell out of the window: resuming after m0 has a gap.
        let j = h.join(Some(ids[0].clone())).await.unwrap();
        match decode(&j.frames[0]) {
            ServerMsg::History { messages, complete } => {
                assert!(!complete);
                assert_eq!(messages.len(), 3);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn reactions_are_batched_per_interval() {
        let (h, _t) = start(InteractConfig::default());
        let mut rx = h.join(None).await.unwrap().rx;
        tokio::time::sleep(Duration::from_millis(300)).await;
        drain(&mut rx);
        for _ in 0..1000 {
            h.react(0);
        }
        h.react(2);
        tokio::time::sleep(Duration::from_millis(260)).await;
        let frames = drain(&mut rx);
        assert_eq!(frames.len(), 1, "{frames:?}");
        match &frames[0] {
            ServerMsg::Reactions { counts, window_ms } => {
                assert_eq!(counts.get("❤️"), Some(&1000));
                assert_eq!(counts.get("😂"), Some(&1));
                assert_eq!(*window_ms, 250);
            }
            other => panic!("{other:?}"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(drain(&mut rx).is_empty(), "no frame without reactions");
    }

    #[tokio::test(start_paused = true)]
    async fn tallies_are_rate_bounded_and_polls_close_on_time() {
        let (h, _t) = start(InteractConfig::default());
        let host = actor("h", Role::Host);
        let mut rx = h.join(None).await.unwrap().rx;
        let poll = ack_id(
            act(
                &h,
                &host,
                ClientMsg::PollOpen(PollSpec {
                    question: "Best?".into(),
                    options: vec!["a".into(), "b".into(), "c".into()],
                    duration_secs: 10,
                }),
            )
            .await,
        );
        for i in 0..100 {
            let v = actor(&format!("v{i}"), Role::Viewer);
            let r = act(
                &h,
                &v,
                ClientMsg::Vote {
                    poll: poll.clone(),
                    option: i % 3,
                },
            )
            .await;
            assert!(matches!(r, ServerMsg::Ack { .. }), "{r:?}");
        }
        tokio::time::sleep(Duration::from_millis(2_100)).await;
        let frames = drain(&mut rx);
        let tallies: Vec<_> = frames
            .iter()
            .filter_map(|f| match f {
                ServerMsg::PollTally { tallies, .. } => Some(tallies.clone()),
                _ => None,
            })
            .collect();
        // 100 votes, at most one tally per 500 ms interval.
        assert!(!tallies.is_empty() && tallies.len() <= 5, "{tallies:?}");
        assert_eq!(tallies.last().unwrap(), &vec![34, 33, 33]);
        assert_eq!(h.dateranges().len(), 1);
        assert_eq!(h.dateranges()[0].end, None);
        tokio::time::sleep(Duration::from_secs(9)).await;
        let closed: Vec<_> = drain(&mut rx)
            .into_iter()
            .filter_map(|f| match f {
                ServerMsg::PollClosed(p) => Some(p),
                _ => None,
            })
            .collect();
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].tallies, vec![34, 33, 33]);
        assert!(closed[0].closed.is_some());
        let dr = h.dateranges();
        assert!(dr[0].end.is_some());
        assert!(dr[0]
            .attrs
            .iter()
            .any(|(k, v)| k == "X-RESULTS" && v == "34,33,33"));
        let late = act(
            &h,
            &actor("late", Role::Viewer),
            ClientMsg::Vote { poll, option: 0 },
        )
        .await;
        assert_eq!(err_code(late), ErrorCode::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn vote_change_rules() {
        for change in [true, false] {
            let (h, _t) = start(InteractConfig {
                poll_vote_change: change,
                ..Default::default()
            });
            let host = actor("h", Role::Host);
            let poll = ack_id(
                act(
                    &h,
                    &host,
                    ClientMsg::PollOpen(PollSpec {
                        question: "q".into(),
                        options: vec!["a".into(), "b".into()],
                        duration_secs: 60,
                    }),
                )
                .await,
            );
            let v = actor("v", Role::Viewer);
            act(
                &h,
                &v,
                ClientMsg::Vote {
                    poll: poll.clone(),
                    option: 0,
                },
            )
            .await;
            let second = act(
                &h,
                &v,
                ClientMsg::Vote {
                    poll: poll.clone(),
                    option: 1,
                },
            )
            .await;
            if change {
                assert!(matches!(second, ServerMsg::Ack { .. }));
            } else {
                assert_eq!(err_code(second), ErrorCode::Duplicate);
            }
            tokio::time::sleep(Duration::from_millis(600)).await;
            let state = h.snapshot().await.unwrap();
            let ServerMsg::State { polls, .. } = state else {
                panic!()
            };
            assert_eq!(
                polls[0].tallies,
                if change { vec![0, 1] } else { vec![1, 0] }
            );
            let bad = act(
                &h,
                &v,
                ClientMsg::Vote {
                    poll: poll.clone(),
                    option: 2,
                },
            )
            .await;
            assert_eq!(err_code(bad), ErrorCode::BadFrame);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn permission_matrix() {
        let (h, _t) = start(InteractConfig::default());
        let viewer = actor("v", Role::Viewer);
        let moder = actor("m", Role::Moderator);
        let host = actor("h", Role::Host);
        let anon = Actor {
            anonymous: true,
            ..actor("anon-1", Role::Viewer)
        };
        let msg = ack_id(act(&h, &viewer, ClientMsg::Chat { text: "hi".into() }).await);
        let spec = PollSpec {
            question: "q".into(),
            options: vec!["a".into(), "b".into()],
            duration_secs: 60,
        };
        let host_only = [
            ClientMsg::PollOpen(spec.clone()),
            ClientMsg::Pin {
                id: Some(msg.clone()),
            },
            ClientMsg::System { text: "x".into() },
            ClientMsg::Tip(TipSpec {
                from: "a".into(),
                amount_minor: 100,
                currency: "EUR".into(),
                message: None,
            }),
        ];
        let mod_only = [
            ClientMsg::Ban { user: "x".into() },
            ClientMsg::SlowMode { secs: 0 },
            ClientMsg::Timeout {
                user: "x".into(),
                secs: 5,
            },
            ClientMsg::Unban { user: "x".into() },
        ];
        for m in host_only.iter() {
            assert_eq!(
                err_code(act(&h, &viewer, m.clone()).await),
                ErrorCode::Forbidden,
                "{m:?}"
            );
            assert_eq!(
                err_code(act(&h, &moder, m.clone()).await),
                ErrorCode::Forbidden,
                "{m:?}"
            );
            assert!(
                matches!(act(&h, &host, m.clone()).await, ServerMsg::Ack { .. }),
                "{m:?}"
            );
        }
        for m in mod_only.iter() {
            assert_eq!(
                err_code(act(&h, &viewer, m.clone()).await),
                ErrorCode::Forbidden,
                "{m:?}"
            );
            assert!(
                matches!(act(&h, &moder, m.clone()).await, ServerMsg::Ack { .. }),
                "{m:?}"
            );
        }
        assert_eq!(
            err_code(act(&h, &viewer, ClientMsg::Delete { id: msg.clone() }).await),
            ErrorCode::Forbidden
        );
        assert!(matches!(
            act(&h, &moder, ClientMsg::Delete { id: msg }).await,
            ServerMsg::Ack { .. }
        ));
        assert_eq!(
            err_code(act(&h, &anon, ClientMsg::Chat { text: "x".into() }).await),
            ErrorCode::AuthRequired
        );
        // A ban mutes chat and questions.
        act(&h, &moder, ClientMsg::Ban { user: "v".into() }).await;
        assert_eq!(
            err_code(act(&h, &viewer, ClientMsg::Chat { text: "x".into() }).await),
            ErrorCode::Muted
        );
        assert_eq!(
            err_code(act(&h, &viewer, ClientMsg::Ask { text: "x".into() }).await),
            ErrorCode::Muted
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slow_mode_rate_limit_and_blocked_words() {
        let (h, _t) = start(InteractConfig {
            blocked_words: vec!["Spam".into()],
            chat_burst: 3,
            ..Default::default()
        });
        let viewer = actor("v", Role::Viewer);
        let moder = actor("m", Role::Moderator);
        assert_eq!(
            err_code(
                act(
                    &h,
                    &viewer,
                    ClientMsg::Chat {
                        text: "buy SPAM now".into()
                    }
                )
                .await
            ),
            ErrorCode::Blocked
        );
        for _ in 0..3 {
            ack_id(act(&h, &viewer, ClientMsg::Chat { text: "x".into() }).await);
        }
        match act(&h, &viewer, ClientMsg::Chat { text: "x".into() }).await {
            ServerMsg::Error {
                code: ErrorCode::RateLimited,
                retry_after_ms: Some(ms),
                ..
            } => assert!(ms > 0),
            other => panic!("{other:?}"),
        }
        act(&h, &moder, ClientMsg::SlowMode { secs: 5 }).await;
        let v2 = actor("v2", Role::Viewer);
        ack_id(act(&h, &v2, ClientMsg::Chat { text: "a".into() }).await);
        match act(&h, &v2, ClientMsg::Chat { text: "b".into() }).await {
            ServerMsg::Error {
                code: ErrorCode::SlowMode,
                retry_after_ms: Some(ms),
                ..
            } => {
                assert!(ms > 4_000 && ms <= 5_000, "{ms}")
            }
            other => panic!("{other:?}"),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        ack_id(act(&h, &v2, ClientMsg::Chat { text: "c".into() }).await);
        // Moderators are exempt.
        ack_id(act(&h, &moder, ClientMsg::Chat { text: "1".into() }).await);
        ack_id(act(&h, &moder, ClientMsg::Chat { text: "2".into() }).await);
        let long = "x".repeat(501);
        assert_eq!(
            err_code(act(&h, &moder, ClientMsg::Chat { text: long }).await),
            ErrorCode::BadLength
        );
    }

    #[tokio::test(start_paused = true)]
    async fn questions_upvote_once_and_top_list() {
        let (h, _t) = start(InteractConfig::default());
        let host = actor("h", Role::Host);
        let q1 = ack_id(
            act(
                &h,
                &actor("a", Role::Viewer),
                ClientMsg::Ask {
                    text: "one?".into(),
                },
            )
            .await,
        );
        let q2 = ack_id(
            act(
                &h,
                &actor("b", Role::Viewer),
                ClientMsg::Ask {
                    text: "two?".into(),
                },
            )
            .await,
        );
        for i in 0..3 {
            let v = actor(&format!("u{i}"), Role::Viewer);
            assert!(matches!(
                act(
                    &h,
                    &v,
                    ClientMsg::Upvote {
                        question: q2.clone()
                    }
                )
                .await,
                ServerMsg::Ack { .. }
            ));
            assert_eq!(
                err_code(
                    act(
                        &h,
                        &v,
                        ClientMsg::Upvote {
                            question: q2.clone()
                        }
                    )
                    .await
                ),
                ErrorCode::Duplicate
            );
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        let ServerMsg::State { questions, .. } = h.snapshot().await.unwrap() else {
            panic!()
        };
        assert_eq!(questions[0].id, q2);
        assert_eq!(questions[0].votes, 3);
        act(
            &h,
            &host,
            ClientMsg::QuestionState {
                question: q1.clone(),
                state: QuestionState::Pinned,
            },
        )
        .await;
        let ServerMsg::State { questions, .. } = h.snapshot().await.unwrap() else {
            panic!()
        };
        assert_eq!(questions[0].id, q1);
        assert!(questions[0].stamp.is_some(), "host events are stamped");
        let moder = actor("m", Role::Moderator);
        assert_eq!(
            err_code(
                act(
                    &h,
                    &moder,
                    ClientMsg::QuestionState {
                        question: q1.clone(),
                        state: QuestionState::Answered
                    }
                )
                .await
            ),
            ErrorCode::Forbidden
        );
        act(
            &h,
            &moder,
            ClientMsg::QuestionState {
                question: q1,
                state: QuestionState::Dismissed,
            },
        )
        .await;
        let ServerMsg::State { questions, .. } = h.snapshot().await.unwrap() else {
            panic!()
        };
        assert_eq!(questions.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_consumer_lags_without_blocking_the_room() {
        let (h, _t) = start(InteractConfig {
            send_queue: 8,
            ..Default::default()
        });
        let host = actor("h", Role::Host);
        let mut slow = h.join(None).await.unwrap().rx;
        let mut fast = h.join(None).await.unwrap().rx;
        for i in 0..20 {
            ack_id(
                act(
                    &h,
                    &host,
                    ClientMsg::Chat {
                        text: format!("{i}"),
                    },
                )
                .await,
            );
            let _ = fast.try_recv();
        }
        assert!(matches!(
            slow.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
    }
}
