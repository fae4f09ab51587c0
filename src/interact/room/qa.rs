//! Q&A: questions, upvotes (once per user id, atomic in the backend), vote counts
//! published at most once per `poll_tally_interval`, and the host's answer, pin or dismiss.

use std::{cmp::Reverse, time::SystemTime};

use super::{backend::Backend, polls::poll_num, refuse, rfc3339, Actor, Refusal, Reply, Room};
use crate::interact::{
    protocol::{ErrorCode, Question, QuestionState, ServerMsg},
    token::Role,
};

/// A question as this room knows it.
pub(super) struct QuestionEntry {
    q: Question,
    /// A vote count computed here and not yet published.
    pending_votes: Option<u64>,
}

impl Room {
    pub(super) async fn ask(&mut self, actor: &Actor, text: &str) -> Result<Reply, Refusal> {
        let text = self.check_text(text, self.cfg.question_max_len)?;
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

    pub(super) async fn upvote(&mut self, actor: &Actor, question: &str) -> Result<Reply, Refusal> {
        if !self.questions.contains_key(question) {
            return Err(refuse(ErrorCode::NotFound, "no such question"));
        }
        let votes = match &mut self.backend {
            Backend::Memory(m) => m.upvote(question, &actor.user.id),
            Backend::Redis(r) => r.upvote(&self.stream, question, &actor.user.id).await?,
        };
        let votes = votes.ok_or_else(|| refuse(ErrorCode::Duplicate, "already upvoted"))?;
        if let Some(e) = self.questions.get_mut(question) {
            e.pending_votes = Some(e.pending_votes.unwrap_or(0).max(votes));
        }
        Ok(Reply::Ack(None))
    }

    /// Hosts answer, pin or dismiss; moderators may only dismiss.
    pub(super) async fn set_question_state(
        &mut self,
        role: Role,
        question: String,
        state: QuestionState,
    ) -> Result<Reply, Refusal> {
        if !(role == Role::Host || role == Role::Moderator && state == QuestionState::Dismissed) {
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

    pub(super) fn insert_question(&mut self, q: Question) {
        self.questions.insert(
            q.id.clone(),
            QuestionEntry {
                q,
                pending_votes: None,
            },
        );
    }

    /// Applies a question event; false if it is stale or one we already have.
    pub(super) fn apply_question(&mut self, msg: ServerMsg) -> bool {
        match msg {
            ServerMsg::QuestionAsked(q) => {
                if self.questions.contains_key(&q.id) {
                    return false;
                }
                self.insert_question(q);
            }
            ServerMsg::QuestionVotes { ref id, votes } => {
                let Some(e) = self.questions.get_mut(id) else {
                    return false;
                };
                if votes <= e.q.votes {
                    return false;
                }
                e.q.votes = votes;
            }
            ServerMsg::QuestionState {
                ref id,
                state,
                stamp,
            } => {
                let Some(e) = self.questions.get_mut(id) else {
                    return false;
                };
                e.q.state = state;
                e.q.stamp = Some(stamp);
            }
            _ => return false,
        }
        true
    }

    /// Publishes the vote counts computed since the last tick.
    pub(super) async fn question_tick(&mut self) {
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
    }

    /// The top `qa_top` questions: pinned first, answered last, then by votes and age.
    pub(super) fn top_questions(&self) -> Vec<Question> {
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
        questions
            .into_iter()
            .take(self.cfg.qa_top)
            .cloned()
            .collect()
    }
}
