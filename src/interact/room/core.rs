//! The room's actor loop: commands and bus events in, `apply` (an accepted event to local
//! state and to this node's connections), and the dispatcher that hands each client action
//! to its feature.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use super::{backend::Backend, refuse, rfc3339, Actor, Joined, Refusal, Reply, Room, RoomCmd};
use crate::interact::{
    protocol::{encode, ClientMsg, ErrorCode, ServerMsg, Stamp},
    token::Role,
    wire::WireFrame,
};

impl Room {
    /// Runs the room until `token` is cancelled.
    pub async fn run(mut self, token: CancellationToken) {
        self.shared.touch();
        self.load().await;
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
                Some(p) = self.bus_rx.recv() => {
                    self.shared.touch();
                    self.on_bus(p);
                }
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => {
                        self.shared.touch();
                        self.on_cmd(cmd).await;
                    }
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
                    WireFrame::text(encode(&self.history_after(after.as_deref())).into()),
                    WireFrame::text(encode(&self.state()).into()),
                ];
                let _ = reply.send(Joined { rx, frames });
            }
            RoomCmd::Snapshot { reply } => {
                let _ = reply.send(self.state());
            }
            RoomCmd::Reconfigure(cfg) => self.cfg = cfg,
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

    pub(super) fn stamp(&self) -> Stamp {
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
    pub(super) async fn emit(&mut self, msg: ServerMsg) -> Result<(), Refusal> {
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
                    Ok(()) => {
                        // A new poll or question is applied here at once, so the id in the
                        // ack can be voted on through this node straight away; its echo from
                        // Redis is then a duplicate and is dropped.
                        if matches!(msg, ServerMsg::PollOpened(_) | ServerMsg::QuestionAsked(_)) {
                            self.apply(msg, Utf8Bytes::from(text));
                        }
                        Ok(())
                    }
                    Err(e) => {
                        self.metrics.bus_errors.inc();
                        Err(e.into())
                    }
                }
            }
        }
    }

    /// Frames the event once; every connection writes the same bytes.
    fn broadcast(&self, bytes: Utf8Bytes) {
        self.metrics.broadcasts.inc();
        // No receivers is fine: nobody is watching.
        if self.out.receiver_count() > 0 {
            let _ = self.out.send(WireFrame::text(bytes));
        }
    }

    /// Applies an accepted event to local state and broadcasts it (unless it is stale or a
    /// duplicate).
    pub(super) fn apply(&mut self, msg: ServerMsg, bytes: Utf8Bytes) {
        let fresh = match msg {
            ServerMsg::Chat(_) | ServerMsg::Deleted { .. } | ServerMsg::Pinned { .. } => {
                self.apply_chat(msg)
            }
            ServerMsg::Moderation { .. } | ServerMsg::SlowMode { .. } => {
                self.apply_moderation(msg);
                true
            }
            ServerMsg::PollOpened(_) | ServerMsg::PollTally { .. } | ServerMsg::PollClosed(_) => {
                self.apply_poll(msg)
            }
            ServerMsg::QuestionAsked(_)
            | ServerMsg::QuestionVotes { .. }
            | ServerMsg::QuestionState { .. } => self.apply_question(msg),
            ServerMsg::Reactions { .. } | ServerMsg::Tip { .. } => true,
            // Not events: never broadcast.
            ServerMsg::Welcome { .. }
            | ServerMsg::History { .. }
            | ServerMsg::State { .. }
            | ServerMsg::Ack { .. }
            | ServerMsg::Error { .. } => false,
        };
        if fresh {
            self.broadcast(bytes);
        }
    }

    /// The `state` frame: polls, top questions, the pinned message and slow mode.
    pub(super) fn state(&self) -> ServerMsg {
        ServerMsg::State {
            polls: self.polls.values().map(|e| e.poll.clone()).collect(),
            questions: self.top_questions(),
            pinned: self.pinned.clone(),
            slow_mode_secs: self.slow_mode.as_secs(),
        }
    }

    /// Checks the actor's role and hands the action to its feature.
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
                self.chat(actor, &text).await
            }
            ClientMsg::System { text } => {
                need(Role::Host)?;
                self.system(actor, &text).await
            }
            ClientMsg::React { emoji } => self.react(&emoji),
            ClientMsg::Resume { after } => {
                Ok(Reply::Frame(Box::new(self.history_after(Some(&after)))))
            }
            ClientMsg::Vote { poll, option } => {
                identified()?;
                self.vote(actor, &poll, option).await
            }
            ClientMsg::Ask { text } => {
                identified()?;
                self.ask(actor, &text).await
            }
            ClientMsg::Upvote { question } => {
                identified()?;
                self.upvote(actor, &question).await
            }
            ClientMsg::QuestionState { question, state } => {
                self.set_question_state(role, question, state).await
            }
            ClientMsg::Delete { id } => {
                need(Role::Moderator)?;
                self.delete(id).await
            }
            ClientMsg::Timeout { user, secs } => {
                need(Role::Moderator)?;
                self.timeout(user, secs).await
            }
            ClientMsg::Ban { user } => {
                need(Role::Moderator)?;
                self.moderate(user, "ban").await
            }
            ClientMsg::Unban { user } => {
                need(Role::Moderator)?;
                self.moderate(user, "unban").await
            }
            ClientMsg::SlowMode { secs } => {
                need(Role::Moderator)?;
                self.set_slow_mode(secs).await
            }
            ClientMsg::Pin { id } => {
                need(Role::Host)?;
                self.pin(id).await
            }
            ClientMsg::PollOpen(spec) => {
                need(Role::Host)?;
                let id = self.open_poll(spec).await?;
                Ok(Reply::Ack(Some(id)))
            }
            ClientMsg::PollClose { poll } => {
                need(Role::Host)?;
                self.close_poll_early(poll).await
            }
            ClientMsg::Tip(spec) => {
                need(Role::Host)?;
                let id = self.tip(spec).await?;
                Ok(Reply::Ack(Some(id)))
            }
        }
    }

    /// Publishes pending tallies and vote counts, closes polls that ran out of time.
    async fn on_tally_tick(&mut self) {
        self.poll_tick().await;
        self.question_tick().await;
    }

    /// Next number of a sequence (`q`, `poll`, `tip`), atomic across nodes.
    pub(super) async fn next_id(&mut self, kind: &'static str) -> Result<u64, Refusal> {
        match &mut self.backend {
            Backend::Memory(m) => Ok(m.next_id(kind)),
            Backend::Redis(r) => Ok(r.next_id(&self.stream, kind).await?),
        }
    }
}
