//! Reactions: connections add to per-emoji counters; the room swaps them out and
//! broadcasts one batch per `reaction_interval`, so reactions never queue.

use std::{collections::BTreeMap, sync::atomic::Ordering};

use super::{refuse, Refusal, Reply, Room};
use crate::interact::protocol::{ErrorCode, ServerMsg};

impl Room {
    pub(super) fn react(&self, emoji: &str) -> Result<Reply, Refusal> {
        match self.cfg.reactions.iter().position(|r| r == emoji) {
            Some(i) => {
                self.shared.reactions[i].fetch_add(1, Ordering::Relaxed);
                Ok(Reply::Ack(None))
            }
            None => Err(refuse(ErrorCode::BadReaction, "not an allowed reaction")),
        }
    }

    pub(super) async fn flush_reactions(&mut self) {
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
}
