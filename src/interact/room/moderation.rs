//! Moderation: timeouts, bans and unbans, slow mode, the per-user rate limit, and the
//! checks chat and questions go through.

use std::time::{Duration, SystemTime};

use governor::clock::Clock;
use tokio::time::Instant;

use super::{refuse, unix_ms, Actor, Refusal, Reply, Room};
use crate::interact::{
    protocol::{ErrorCode, ServerMsg},
    token::Role,
};

/// Longest timeout a moderator may give.
const MAX_TIMEOUT_SECS: u64 = 7 * 24 * 3600;
/// Longest slow mode.
const MAX_SLOW_MODE_SECS: u64 = 3600;

/// Why a user may not chat or ask.
pub(super) enum Mute {
    Until(SystemTime),
    Banned,
}

impl Room {
    pub(super) async fn timeout(&mut self, user: String, secs: u64) -> Result<Reply, Refusal> {
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

    /// `ban` or `unban`.
    pub(super) async fn moderate(&mut self, user: String, action: &str) -> Result<Reply, Refusal> {
        self.emit(ServerMsg::Moderation {
            user,
            action: action.into(),
            until_ms: None,
        })
        .await?;
        Ok(Reply::Ack(None))
    }

    pub(super) async fn set_slow_mode(&mut self, secs: u64) -> Result<Reply, Refusal> {
        if secs > MAX_SLOW_MODE_SECS {
            return Err(refuse(
                ErrorCode::BadFrame,
                format!("secs must be at most {MAX_SLOW_MODE_SECS}"),
            ));
        }
        self.emit(ServerMsg::SlowMode { secs }).await?;
        Ok(Reply::Ack(None))
    }

    /// Applies a moderation or slow-mode event.
    pub(super) fn apply_moderation(&mut self, msg: ServerMsg) {
        match msg {
            ServerMsg::Moderation {
                user,
                action,
                until_ms,
            } => match action.as_str() {
                "timeout" => {
                    let until =
                        SystemTime::UNIX_EPOCH + Duration::from_millis(until_ms.unwrap_or(0));
                    self.muted.insert(user, Mute::Until(until));
                }
                "ban" => {
                    self.muted.insert(user, Mute::Banned);
                }
                _ => {
                    self.muted.remove(&user);
                }
            },
            ServerMsg::SlowMode { secs } => self.slow_mode = Duration::from_secs(secs),
            _ => {}
        }
    }

    /// Bans, running timeouts and slow mode as stored in Redis (`ban` or `until:<ms>`).
    pub(super) fn load_moderation(&mut self, mutes: Vec<(String, String)>, slow: Option<u64>) {
        let now = SystemTime::now();
        for (user, value) in mutes {
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
        if let Some(secs) = slow {
            self.slow_mode = Duration::from_secs(secs);
        }
    }

    pub(super) fn check_muted(&self, user: &str) -> Result<(), Refusal> {
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
    pub(super) fn check_pace(&self, actor: &Actor) -> Result<(), Refusal> {
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

    pub(super) fn check_rate(&self, user: &str) -> Result<(), Refusal> {
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

    /// Forgets rate-limit state, slow-mode stamps and timeouts that no longer matter.
    pub(super) fn housekeeping(&mut self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        let slow = self.slow_mode;
        let now = Instant::now();
        self.last_chat.retain(|_, t| now.duration_since(*t) < slow);
        let wall = SystemTime::now();
        self.muted
            .retain(|_, m| matches!(m, Mute::Banned) || matches!(m, Mute::Until(t) if *t > wall));
    }
}
