//! The Redis bus: pub/sub carries live events, a stream keeps chat history, Lua scripts do
//! the votes, upvotes and poll closes atomically, so every node shows the same tallies.
//!
//! Keys (the stream name in braces is a cluster hash tag): `estuary:{S}:events` (channel),
//! `estuary:{S}:chat` (stream, `XADD MAXLEN ~ history_size`), `estuary:{S}:seq:{kind}`,
//! `estuary:{S}:polls` and `estuary:{S}:questions` (hashes of JSON), `estuary:{S}:poll:{id}:*`
//! (voters, tally, version, closed flag), `estuary:{S}:qvotes` and `estuary:{S}:q:{id}:voters`,
//! `estuary:{S}:mutes` (bans and timeouts) and `estuary:{S}:slowmode`.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, RwLock,
    },
    time::Duration,
};

use bytes::Bytes;
use futures_util::StreamExt;
use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    AsyncCommands, RedisResult, Script,
};
use tokio_util::sync::CancellationToken;

use super::{
    metrics::Metrics,
    protocol::{encode, ChatMsg, Poll, Question, ServerMsg},
};

/// Result of a vote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VoteResult {
    /// Counted: new version and tallies.
    Counted(u64, Vec<u64>),
    /// Already voted and votes cannot change.
    Duplicate,
    /// The poll is closed.
    Closed,
}

/// Result of closing a poll.
pub(crate) enum PollClose {
    /// We closed it: final tallies.
    Closed(Vec<u64>),
    /// Someone (another node) closed it first.
    AlreadyClosed,
}

const VOTE: &str = r"
if redis.call('EXISTS', KEYS[4]) == 1 then return {-2} end
local prev = redis.call('HGET', KEYS[1], ARGV[1])
if prev then
  if ARGV[3] == '0' then return {-1} end
  if prev ~= ARGV[2] then
    redis.call('HINCRBY', KEYS[2], prev, -1)
    redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  end
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
end
local out = {redis.call('INCR', KEYS[3])}
for i = 0, tonumber(ARGV[4]) - 1 do
  out[#out + 1] = tonumber(redis.call('HGET', KEYS[2], tostring(i)) or '0')
end
return out
";

const CLOSE: &str = r"
if not redis.call('SET', KEYS[1], '1', 'NX') then return {-1} end
local out = {0}
for i = 0, tonumber(ARGV[1]) - 1 do
  out[#out + 1] = tonumber(redis.call('HGET', KEYS[2], tostring(i)) or '0')
end
return out
";

const UPVOTE: &str = r"
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then
  return redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
end
return -1
";

/// XADD and PUBLISH in one script, so the publish order is the id order on every node.
const CHAT: &str = r"
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'r', ARGV[3])
redis.call('PUBLISH', KEYS[2], ARGV[2] .. id .. ARGV[3])
return id
";

/// The start of an encoded chat frame, up to the id's value.
const CHAT_PREFIX: &str = r#"{"v":1,"type":"chat","id":""#;

struct Scripts {
    vote: Script,
    close: Script,
    upvote: Script,
    chat: Script,
}

/// Longest a room waits for one Redis call (a script, a command, or a reconnect under way):
/// past it the call fails and the client gets an error frame, so a Redis outage never
/// stalls a room's actor.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest a room waits for its state when it opens.
const LOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause between two pub/sub reconnect attempts: events published while this
/// node is not subscribed do not reach its viewers, so it comes back soon after Redis does.
const MAX_PUBSUB_BACKOFF: Duration = Duration::from_secs(1);
/// Consecutive failed calls after which the connection manager is replaced by a new one.
const FAILURES_BEFORE_RENEW: u32 = 3;

/// How the connection manager reconnects. The crate's default retries 6 times with
/// exponential backoff (up to ~6 s of sleeping) inside one reconnect, and every command
/// waits for it; a Redis restart then stalls rooms past any client timeout. Here a
/// reconnect gives up quickly and the next command starts a fresh one, and a slow answer
/// under load is waited for rather than treated as a dead link.
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500))
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(CALL_TIMEOUT))
}

/// A connection to the Redis bus; cheap to clone.
#[derive(Clone)]
pub(crate) struct RedisBus {
    client: redis::Client,
    /// Reconnects by itself after Redis restarts or the link drops. Replaced after
    /// [`FAILURES_BEFORE_RENEW`] failures in a row, because a reconnect that failed with a
    /// reply (not an I/O error) is never retried by the crate. Locked only to clone it.
    conn: Arc<RwLock<ConnectionManager>>,
    failures: Arc<AtomicU32>,
    scripts: Arc<Scripts>,
}

fn key(stream: &str, rest: &str) -> String {
    format!("estuary:{{{stream}}}:{rest}")
}

impl RedisBus {
    /// Connects and checks the server answers.
    pub async fn connect(url: &str) -> RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let mut conn = tokio::time::timeout(
            Duration::from_secs(5),
            client.get_connection_manager_with_config(manager_config()),
        )
        .await
        .map_err(|_| {
            redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "timed out connecting to redis",
            ))
        })??;
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok(Self {
            client,
            conn: Arc::new(RwLock::new(conn)),
            failures: Arc::new(AtomicU32::new(0)),
            scripts: Arc::new(Scripts {
                vote: Script::new(VOTE),
                close: Script::new(CLOSE),
                upvote: Script::new(UPVOTE),
                chat: Script::new(CHAT),
            }),
        })
    }

    /// Receives every room's events and hands each to `route(stream, payload)`; reconnects
    /// with backoff until `token` is cancelled.
    pub async fn dispatch<F>(self, token: CancellationToken, metrics: Metrics, route: F)
    where
        F: Fn(&str, Bytes) -> Option<bool>,
    {
        let mut backoff = Duration::from_millis(100);
        while !token.is_cancelled() {
            let mut pubsub = match self.client.get_async_pubsub().await {
                Ok(p) => p,
                Err(e) => {
                    metrics.bus_errors.inc();
                    tracing::warn!(error = %e, "redis pub/sub connect failed");
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_PUBSUB_BACKOFF);
                    continue;
                }
            };
            if let Err(e) = pubsub.psubscribe("estuary:*:events").await {
                metrics.bus_errors.inc();
                tracing::warn!(error = %e, "redis psubscribe failed");
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_PUBSUB_BACKOFF);
                continue;
            }
            backoff = Duration::from_millis(100);
            let mut stream = pubsub.into_on_message();
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    m = stream.next() => match m {
                        Some(m) => {
                            let channel = m.get_channel_name();
                            let Some(name) = channel
                                .strip_prefix("estuary:{")
                                .and_then(|r| r.strip_suffix("}:events"))
                            else {
                                continue;
                            };
                            route(name, Bytes::copy_from_slice(m.get_payload_bytes()));
                        }
                        None => {
                            metrics.bus_errors.inc();
                            tracing::warn!("redis pub/sub connection lost, reconnecting");
                            break;
                        }
                    },
                }
            }
        }
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs one call with a deadline; counts failures and renews the connection manager
    /// after [`FAILURES_BEFORE_RENEW`] in a row.
    async fn guard<T>(
        &self,
        limit: Duration,
        call: impl Future<Output = RedisResult<T>>,
    ) -> RedisResult<T> {
        let out = match tokio::time::timeout(limit, call).await {
            Ok(r) => r,
            Err(_) => Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "redis call timed out",
            ))),
        };
        match &out {
            Ok(_) => self.failures.store(0, Ordering::Relaxed),
            Err(e) => {
                if self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= FAILURES_BEFORE_RENEW {
                    self.renew(e);
                }
            }
        }
        out
    }

    fn renew(&self, cause: &redis::RedisError) {
        match ConnectionManager::new_lazy_with_config(self.client.clone(), manager_config()) {
            Ok(fresh) => {
                tracing::warn!(error = %cause, "redis calls keep failing; new connection");
                *self.conn.write().unwrap_or_else(|p| p.into_inner()) = fresh;
                self.failures.store(0, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "cannot make a new redis connection"),
        }
    }

    pub async fn publish(&self, stream: &str, payload: &str) -> RedisResult<()> {
        let call = async {
            self.conn()
                .publish::<_, _, ()>(key(stream, "events"), payload)
                .await
        };
        self.guard(CALL_TIMEOUT, call).await
    }

    pub async fn next_id(&self, stream: &str, kind: &str) -> RedisResult<u64> {
        let call = async {
            self.conn()
                .incr(key(stream, &format!("seq:{kind}")), 1)
                .await
        };
        self.guard(CALL_TIMEOUT, call).await
    }

    /// Appends a chat message to the history stream and publishes it; returns its id.
    pub async fn chat(&self, stream: &str, maxlen: usize, msg: &ChatMsg) -> RedisResult<String> {
        let mut m = msg.clone();
        m.id = String::new();
        let text = encode(&ServerMsg::Chat(m));
        let rest = text.strip_prefix(CHAT_PREFIX).ok_or_else(|| {
            redis::RedisError::from(std::io::Error::other("unexpected chat encoding"))
        })?;
        let call = async {
            self.scripts
                .chat
                .key(key(stream, "chat"))
                .key(key(stream, "events"))
                .arg(maxlen)
                .arg(CHAT_PREFIX)
                .arg(rest)
                .invoke_async(&mut self.conn())
                .await
        };
        self.guard(CALL_TIMEOUT, call).await
    }

    pub async fn delete_chat(&self, stream: &str, id: &str) -> RedisResult<()> {
        let call = async {
            redis::cmd("XDEL")
                .arg(key(stream, "chat"))
                .arg(id)
                .query_async::<()>(&mut self.conn())
                .await
        };
        self.guard(CALL_TIMEOUT, call).await
    }

    pub async fn save_poll(&self, stream: &str, poll: &Poll) -> RedisResult<()> {
        let json = serde_json::to_string(poll).unwrap_or_default();
        let call = async {
            self.conn()
                .hset::<_, _, _, ()>(key(stream, "polls"), &poll.id, json)
                .await
        };
        self.guard(CALL_TIMEOUT, call).await
    }

    pub async fn save_question(&self, stream: &str, q: &Question) -> RedisResult<()> {
        let json = serde_json::to_string(q).unwrap_or_default();
        let call = async {
            self.conn()
                .hset::<_, _, _, ()>(key(stream, "questions"), &q.id, json)
                .await
        };
        self.guard(CALL_TIMEOUT, call).await
    }

    pub async fn vote(
        &self,
        stream: &str,
        poll: &str,
        user: &str,
        option: usize,
        n: usize,
        change: bool,
    ) -> RedisResult<VoteResult> {
        let call = async {
            self.scripts
                .vote
                .key(key(stream, &format!("poll:{poll}:voters")))
                .key(key(stream, &format!("poll:{poll}:tally")))
                .key(key(stream, &format!("poll:{poll}:ver")))
                .key(key(stream, &format!("poll:{poll}:closed")))
                .arg(user)
                .arg(option)
                .arg(if change { 1 } else { 0 })
                .arg(n)
                .invoke_async(&mut self.conn())
                .await
        };
        let out: Vec<i64> = self.guard(CALL_TIMEOUT, call).await?;
        Ok(match out.first() {
            Some(-1) => VoteResult::Duplicate,
            Some(-2) | None => VoteResult::Closed,
            Some(v) => VoteResult::Counted(
                *v as u64,
                out[1..].iter().map(|t| (*t).max(0) as u64).collect(),
            ),
        })
    }

    pub async fn close_poll(&self, stream: &str, poll: &str, n: usize) -> RedisResult<PollClose> {
        let call = async {
            self.scripts
                .close
                .key(key(stream, &format!("poll:{poll}:closed")))
                .key(key(stream, &format!("poll:{poll}:tally")))
                .arg(n)
                .invoke_async(&mut self.conn())
                .await
        };
        let out: Vec<i64> = self.guard(CALL_TIMEOUT, call).await?;
        Ok(match out.first() {
            Some(0) => PollClose::Closed(out[1..].iter().map(|t| (*t).max(0) as u64).collect()),
            _ => PollClose::AlreadyClosed,
        })
    }

    /// Upvotes once per user; `None` if this user already did.
    pub async fn upvote(&self, stream: &str, q: &str, user: &str) -> RedisResult<Option<u64>> {
        let call = async {
            self.scripts
                .upvote
                .key(key(stream, &format!("q:{q}:voters")))
                .key(key(stream, "qvotes"))
                .arg(user)
                .arg(q)
                .invoke_async(&mut self.conn())
                .await
        };
        let n: i64 = self.guard(CALL_TIMEOUT, call).await?;
        Ok((n >= 0).then_some(n as u64))
    }

    /// Stores a moderation decision for nodes started later: `Some("ban")`,
    /// `Some("until:<unix ms>")` for a timeout, or `None` to lift it.
    pub async fn save_mute(
        &self,
        stream: &str,
        user: &str,
        value: Option<&str>,
    ) -> RedisResult<()> {
        let k = key(stream, "mutes");
        let call = async {
            match value {
                Some(v) => self.conn().hset::<_, _, _, ()>(k, user, v).await,
                None => self.conn().hdel::<_, _, ()>(k, user).await,
            }
        };
        self.guard(CALL_TIMEOUT, call).await
    }

    /// Stores the room's slow mode for nodes started later.
    pub async fn save_slow_mode(&self, stream: &str, secs: u64) -> RedisResult<()> {
        let call = async {
            self.conn()
                .set::<_, _, ()>(key(stream, "slowmode"), secs)
                .await
        };
        self.guard(CALL_TIMEOUT, call).await
    }

    /// Loads a room's history, polls (with tallies and versions) and questions (with votes).
    pub async fn load(&self, stream: &str, history: usize) -> RedisResult<Loaded> {
        self.guard(LOAD_TIMEOUT, self.load_unguarded(stream, history))
            .await
    }

    async fn load_unguarded(&self, stream: &str, history: usize) -> RedisResult<Loaded> {
        let mut c = self.conn();
        let entries: Vec<(String, Vec<String>)> = redis::cmd("XREVRANGE")
            .arg(key(stream, "chat"))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(history)
            .query_async(&mut c)
            .await?;
        let mut msgs = Vec::with_capacity(entries.len());
        for (id, fields) in entries.into_iter().rev() {
            let Some(rest) = fields.get(1) else { continue };
            let text = format!("{CHAT_PREFIX}{id}{rest}");
            if let Ok(ServerMsg::Chat(m)) = serde_json::from_str::<ServerMsg>(&text) {
                msgs.push(m);
            }
        }
        let polls_raw: Vec<(String, String)> = c.hgetall(key(stream, "polls")).await?;
        let mut polls = Vec::new();
        for (id, json) in polls_raw {
            let Ok(mut p) = serde_json::from_str::<Poll>(&json) else {
                continue;
            };
            let tally: Vec<(String, i64)> =
                c.hgetall(key(stream, &format!("poll:{id}:tally"))).await?;
            for (i, n) in tally {
                if let Some(t) = i.parse::<usize>().ok().and_then(|i| p.tallies.get_mut(i)) {
                    *t = n.max(0) as u64;
                }
            }
            let ver: Option<u64> = c.get(key(stream, &format!("poll:{id}:ver"))).await?;
            polls.push((p, ver.unwrap_or(0)));
        }
        let qs: Vec<(String, String)> = c.hgetall(key(stream, "questions")).await?;
        let votes: std::collections::HashMap<String, i64> =
            c.hgetall(key(stream, "qvotes")).await?;
        let questions = qs
            .into_iter()
            .filter_map(|(id, json)| {
                let mut q = serde_json::from_str::<Question>(&json).ok()?;
                q.votes = votes.get(&id).copied().unwrap_or(0).max(0) as u64;
                Some(q)
            })
            .collect();
        let mutes: Vec<(String, String)> = c.hgetall(key(stream, "mutes")).await?;
        let slow_mode: Option<u64> = c.get(key(stream, "slowmode")).await?;
        Ok(Loaded {
            history: msgs,
            polls,
            questions,
            mutes,
            slow_mode,
        })
    }
}

/// A room's state as stored in Redis.
pub(crate) struct Loaded {
    pub history: Vec<ChatMsg>,
    pub polls: Vec<(Poll, u64)>,
    pub questions: Vec<Question>,
    /// Banned and timed-out users: `ban` or `until:<unix ms>`.
    pub mutes: Vec<(String, String)>,
    pub slow_mode: Option<u64>,
}
