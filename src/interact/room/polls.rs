//! Polls: opening, votes (once per user id, atomic in the backend), tallies published at
//! most once per `poll_tally_interval`, closing on time or early, and the
//! `EXT-X-DATERANGE` each poll puts in the media playlists.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::time::Instant;

use super::{backend::Backend, refuse, rfc3339, Actor, Refusal, Reply, Room};
use crate::interact::{
    protocol::{ErrorCode, Poll, PollSpec, PollState, ServerMsg},
    redis::{PollClose, VoteResult},
    DateRange,
};

/// Longest poll option, in characters.
const POLL_OPTION_MAX_LEN: usize = 100;

/// A poll as this room knows it.
pub(super) struct PollEntry {
    pub(super) poll: Poll,
    /// Version of the tallies shown; a closed poll is at `u64::MAX`.
    version: u64,
    /// A tally computed here and not yet published (published each `poll_tally_interval`).
    pending: Option<(u64, Vec<u64>)>,
    deadline: Instant,
    closed_at: Option<Instant>,
}

impl Room {
    pub(super) async fn vote(
        &mut self,
        actor: &Actor,
        poll: &str,
        option: usize,
    ) -> Result<Reply, Refusal> {
        let change = self.cfg.poll_vote_change;
        let e = self
            .find_poll(poll)
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
            Backend::Memory(m) => m.vote(poll, &actor.user.id, option, n, change),
            Backend::Redis(r) => {
                r.vote(&self.stream, poll, &actor.user.id, option, n, change)
                    .await?
            }
        };
        match result {
            VoteResult::Counted(version, tallies) => {
                if let Some(e) = self.find_poll_mut(poll) {
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

    /// The host closes a poll before its time.
    pub(super) async fn close_poll_early(&mut self, poll: String) -> Result<Reply, Refusal> {
        let e = self
            .find_poll(&poll)
            .ok_or_else(|| refuse(ErrorCode::NotFound, "no such poll"))?;
        if e.poll.state == PollState::Closed {
            return Err(refuse(ErrorCode::Closed, "poll already closed"));
        }
        self.close_poll(&poll).await?;
        Ok(Reply::Ack(Some(poll)))
    }

    pub(super) async fn open_poll(&mut self, spec: PollSpec) -> Result<String, Refusal> {
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

    /// Applies a poll event; false if it is stale or one we already have.
    pub(super) fn apply_poll(&mut self, msg: ServerMsg) -> bool {
        match msg {
            ServerMsg::PollOpened(p) => {
                if self.find_poll(&p.id).is_some() {
                    return false;
                }
                self.insert_poll(p, 0);
                self.update_dateranges();
            }
            ServerMsg::PollTally {
                ref poll,
                tallies,
                version,
            } => {
                let Some(e) = self.find_poll_mut(poll) else {
                    return false;
                };
                if version <= e.version || e.poll.tallies.len() != tallies.len() {
                    return false; // stale or from a closed poll
                }
                e.version = version;
                e.poll.tallies = tallies;
            }
            ServerMsg::PollClosed(p) => {
                match self.find_poll_mut(&p.id) {
                    Some(e) => {
                        if e.poll.state == PollState::Closed {
                            return false;
                        }
                        e.poll = p;
                        e.version = u64::MAX;
                        e.closed_at = Some(Instant::now());
                    }
                    None => self.insert_poll(p, u64::MAX),
                }
                self.update_dateranges();
            }
            _ => return false,
        }
        true
    }

    /// Publishes pending tallies, closes polls past their deadline, and drops closed polls
    /// after `daterange_keep`.
    pub(super) async fn poll_tick(&mut self) {
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

    pub(super) fn insert_poll(&mut self, poll: Poll, version: u64) {
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

    pub(super) fn update_dateranges(&mut self) {
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
}

/// Numeric part of `p12` / `q3`, for ordering.
pub(super) fn poll_num(id: &str) -> usize {
    id.get(1..)
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
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
