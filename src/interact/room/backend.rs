//! Where the atomic operations go: the in-process [`MemStore`], or the Redis bus (Lua
//! scripts), plus loading a room's state from Redis when it starts.

use std::{
    collections::{HashMap, HashSet},
    time::SystemTime,
};

use super::{unix_ms, ChatId, Room};
use crate::interact::redis::{PollClose, RedisBus, VoteResult};

/// The in-process backend: votes and counters kept in the room.
#[derive(Default)]
pub(super) struct MemStore {
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
    pub(super) fn next_id(&mut self, kind: &'static str) -> u64 {
        let n = self.seq.entry(kind).or_insert(0);
        *n += 1;
        *n
    }

    pub(super) fn next_chat_id(&mut self) -> ChatId {
        let ms = unix_ms(SystemTime::now());
        self.last_chat = if ms > self.last_chat.0 {
            ChatId(ms, 0)
        } else {
            ChatId(self.last_chat.0, self.last_chat.1 + 1)
        };
        self.last_chat
    }

    pub(super) fn vote(
        &mut self,
        poll: &str,
        user: &str,
        option: usize,
        n: usize,
        change: bool,
    ) -> VoteResult {
        let p = self.poll(poll, n);
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

    pub(super) fn close(&mut self, poll: &str, n: usize) -> PollClose {
        let p = self.poll(poll, n);
        if p.closed {
            return PollClose::AlreadyClosed;
        }
        p.closed = true;
        PollClose::Closed(p.tallies.clone())
    }

    fn poll(&mut self, poll: &str, n: usize) -> &mut MemPoll {
        self.polls
            .entry(poll.to_owned())
            .or_insert_with(|| MemPoll {
                voters: HashMap::new(),
                tallies: vec![0; n],
                version: 0,
                closed: false,
            })
    }

    pub(super) fn upvote(&mut self, q: &str, user: &str) -> Option<u64> {
        let set = self.upvoters.entry(q.to_owned()).or_default();
        set.insert(user.to_owned()).then_some(set.len() as u64)
    }
}

pub(super) enum Backend {
    Memory(Box<MemStore>),
    Redis(Box<RedisBus>),
}

impl Room {
    /// With Redis, loads history, polls, questions, mutes and slow mode (a room that starts
    /// on a second node, or after an eviction, carries on where the others are).
    pub(super) async fn load(&mut self) {
        let Backend::Redis(r) = &self.backend else {
            return;
        };
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
                    self.insert_question(q);
                }
                self.load_moderation(loaded.mutes, loaded.slow_mode);
                self.update_dateranges();
            }
            Err(e) => {
                self.metrics.bus_errors.inc();
                tracing::warn!(stream = %self.stream, error = %e, "cannot load room state from redis");
            }
        }
    }
}
