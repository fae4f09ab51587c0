//! Chat: messages, system messages, history and resume, deletes, pins, and tips (host
//! announcements that ride along the chat).

use std::time::SystemTime;

use tokio::time::Instant;

use super::{backend::Backend, refuse, rfc3339, Actor, ChatId, Refusal, Reply, Room};
use crate::interact::{
    protocol::{ChatMsg, ErrorCode, ServerMsg, Stamp, TipSpec},
    text::strip_invisible,
    token::MAX_ID_LEN,
};

impl Room {
    pub(super) async fn chat(&mut self, actor: &Actor, text: &str) -> Result<Reply, Refusal> {
        let text = self.check_text(text, self.cfg.chat_max_len)?;
        self.check_muted(&actor.user.id)?;
        self.check_pace(actor)?;
        let reply = self.post(actor, text, None).await?;
        self.last_chat.insert(actor.user.id.clone(), Instant::now());
        Ok(reply)
    }

    /// A host's system message, stamped on the video timeline.
    pub(super) async fn system(&mut self, actor: &Actor, text: &str) -> Result<Reply, Refusal> {
        let text = self.check_text(text, self.cfg.chat_max_len)?;
        let stamp = self.stamp();
        self.post(actor, text, Some(stamp)).await
    }

    /// Posts checked text; a stamped post is a system message.
    async fn post(
        &mut self,
        actor: &Actor,
        text: String,
        stamp: Option<Stamp>,
    ) -> Result<Reply, Refusal> {
        let id = self
            .publish_chat(ChatMsg {
                id: String::new(),
                user: actor.user.clone(),
                text,
                ts: rfc3339(SystemTime::now()),
                system: stamp.is_some(),
                stamp,
            })
            .await?;
        Ok(Reply::Ack(Some(id)))
    }

    pub(super) async fn delete(&mut self, id: String) -> Result<Reply, Refusal> {
        if !self.history.iter().any(|m| m.id == id) {
            return Err(refuse(ErrorCode::NotFound, "no such message in history"));
        }
        if let Backend::Redis(r) = &self.backend {
            r.delete_chat(&self.stream, &id).await?;
        }
        self.emit(ServerMsg::Deleted { id }).await?;
        Ok(Reply::Ack(None))
    }

    pub(super) async fn pin(&mut self, id: Option<String>) -> Result<Reply, Refusal> {
        let message = match id {
            Some(id) => Some(
                self.history
                    .iter()
                    .find(|m| m.id == id)
                    .cloned()
                    .ok_or_else(|| refuse(ErrorCode::NotFound, "no such message in history"))?,
            ),
            None => None,
        };
        let stamp = self.stamp();
        self.emit(ServerMsg::Pinned { message, stamp }).await?;
        Ok(Reply::Ack(None))
    }

    /// Applies a chat, delete or pin event; false if it is one we already have.
    pub(super) fn apply_chat(&mut self, msg: ServerMsg) -> bool {
        match msg {
            ServerMsg::Chat(m) => {
                let Some(id) = ChatId::parse(&m.id) else {
                    return false;
                };
                if self.last_id.is_some_and(|l| id <= l) {
                    return false; // already have it (Redis load overlap)
                }
                self.push_history(m);
            }
            ServerMsg::Deleted { ref id } => {
                self.history.retain(|m| &m.id != id);
                if self.pinned.as_ref().is_some_and(|p| &p.id == id) {
                    self.pinned = None;
                }
            }
            ServerMsg::Pinned { message, .. } => self.pinned = message,
            _ => return false,
        }
        true
    }

    pub(super) fn push_history(&mut self, m: ChatMsg) {
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

    pub(super) fn history_after(&self, after: Option<&str>) -> ServerMsg {
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

    pub(super) fn check_text(&self, text: &str, max: usize) -> Result<String, Refusal> {
        // Bidi overrides and zero-width characters could spoof text in the overlay.
        let cleaned = strip_invisible(text);
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

    pub(super) async fn tip(&mut self, spec: TipSpec) -> Result<String, Refusal> {
        let from = self.check_text(&spec.from, MAX_ID_LEN)?;
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
}
