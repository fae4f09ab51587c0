//! The `[interact]` config section: bus, auth, limits and timings of the interaction channel.

use std::time::Duration;

use serde::Deserialize;

/// Default [`InteractConfig::bus`]: the in-process bus, no server needed.
pub const DEFAULT_BUS: &str = "memory";
/// Default [`InteractConfig::allow_anonymous`].
pub const DEFAULT_ALLOW_ANONYMOUS: bool = true;
/// Default [`InteractConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
/// Default [`InteractConfig::max_rooms`].
pub const DEFAULT_MAX_ROOMS: usize = 1_000;
/// Default [`InteractConfig::room_idle_timeout`].
pub const DEFAULT_ROOM_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Default [`InteractConfig::unscoped_tokens`]: least privilege.
pub const DEFAULT_UNSCOPED_TOKENS: UnscopedTokens = UnscopedTokens::Viewer;
/// Default [`InteractConfig::chat_max_len`] (characters).
pub const DEFAULT_CHAT_MAX_LEN: usize = 500;
/// Default [`InteractConfig::chat_rate_per_min`].
pub const DEFAULT_CHAT_RATE_PER_MIN: u32 = 20;
/// Default [`InteractConfig::chat_burst`].
pub const DEFAULT_CHAT_BURST: u32 = 5;
/// Default [`InteractConfig::conn_rate_per_sec`].
pub const DEFAULT_CONN_RATE_PER_SEC: u32 = 20;
/// Default [`InteractConfig::conn_burst`].
pub const DEFAULT_CONN_BURST: u32 = 40;
/// Default [`InteractConfig::slow_mode`]: off.
pub const DEFAULT_SLOW_MODE: Duration = Duration::ZERO;
/// Default [`InteractConfig::history_size`].
pub const DEFAULT_HISTORY_SIZE: usize = 200;
/// Default [`InteractConfig::reactions`].
pub const DEFAULT_REACTIONS: &[&str] = &["❤️", "👍", "😂", "😮", "👏", "🔥"];
/// Default [`InteractConfig::reaction_interval`].
pub const DEFAULT_REACTION_INTERVAL: Duration = Duration::from_millis(250);
/// Default [`InteractConfig::poll_max_options`].
pub const DEFAULT_POLL_MAX_OPTIONS: usize = 10;
/// Default [`InteractConfig::poll_max_duration`].
pub const DEFAULT_POLL_MAX_DURATION: Duration = Duration::from_secs(3600);
/// Default [`InteractConfig::poll_tally_interval`].
pub const DEFAULT_POLL_TALLY_INTERVAL: Duration = Duration::from_millis(500);
/// Default [`InteractConfig::poll_vote_change`].
pub const DEFAULT_POLL_VOTE_CHANGE: bool = true;
/// Default [`InteractConfig::question_max_len`] (characters).
pub const DEFAULT_QUESTION_MAX_LEN: usize = 300;
/// Default [`InteractConfig::qa_top`].
pub const DEFAULT_QA_TOP: usize = 20;
/// Default [`InteractConfig::qa_max_questions`].
pub const DEFAULT_QA_MAX_QUESTIONS: usize = 1_000;
/// Default [`InteractConfig::max_frame_size`] (bytes).
pub const DEFAULT_MAX_FRAME_SIZE: usize = 4_096;
/// Default [`InteractConfig::ping_interval`].
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(20);
/// Default [`InteractConfig::ping_timeout`].
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`InteractConfig::send_queue`] (frames).
pub const DEFAULT_SEND_QUEUE: usize = 1_024;
/// Default [`InteractConfig::max_errors`].
pub const DEFAULT_MAX_ERRORS: u32 = 10;
/// Default [`InteractConfig::daterange_keep`].
pub const DEFAULT_DATERANGE_KEEP: Duration = Duration::from_secs(600);
/// Default [`InteractConfig::tip_max_minor`].
pub const DEFAULT_TIP_MAX_MINOR: u64 = 100_000_000;

/// Default longest token lifetime: 7 days.
pub const DEFAULT_MAX_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// What a token without a `stream` claim (minted before tokens were scoped) may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnscopedTokens {
    /// Refused everywhere: every token must name its stream (or a glob).
    None,
    /// Viewer tokens work in every room (they only carry an identity); moderator and host
    /// tokens are refused (`token_not_scoped`).
    Viewer,
    /// Every role works in every room: the behaviour before scopes, for a migration only.
    All,
}

/// Config section `[interact]` of `config/estuary.toml`: the WebSocket interaction channel.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InteractConfig {
    /// Event bus: `"memory"` (in-process, one node) or a `redis://host:port[/db]` URL
    /// (pub/sub for live events, streams for chat history, atomic tallies) to share rooms
    /// across nodes.
    pub bus: String,
    /// HMAC secret (HS256) that signs viewer, moderator and host tokens. Empty: no token is
    /// accepted, everyone is anonymous and the server API is disabled.
    pub token_secret: String,
    /// Whether a client without a token may connect (read and react only).
    pub allow_anonymous: bool,
    /// Longest token lifetime (`exp - iat`) accepted; longer-lived tokens are refused, so a
    /// leaked token cannot be good for a century.
    #[serde(with = "humantime_serde")]
    pub max_token_ttl: std::time::Duration,
    /// Most WebSocket connections open at once on this node; more get 503.
    pub max_connections: usize,
    /// Most rooms (streams with an interaction channel) on this node. A room exists only
    /// for a configured (`[streams.NAME]`) or live stream, so made-up names never count.
    pub max_rooms: usize,
    /// A room with no connection and no activity for this long is closed (its state stays
    /// in Redis with the Redis bus); the next viewer opens it again.
    #[serde(with = "humantime_serde")]
    pub room_idle_timeout: Duration,
    /// What a token without a `stream` claim may do: `"none"`, `"viewer"` (default: viewer
    /// tokens anywhere, moderator and host tokens refused) or `"all"` (migration only).
    pub unscoped_tokens: UnscopedTokens,
    /// Longest chat message, in characters.
    pub chat_max_len: usize,
    /// Chat messages (and questions) per user per minute, across connections (token bucket).
    pub chat_rate_per_min: u32,
    /// Burst of chat messages a user may send before the per-minute rate applies.
    pub chat_burst: u32,
    /// Frames per second one connection may send, of any type (token bucket).
    pub conn_rate_per_sec: u32,
    /// Burst of frames one connection may send before the per-second rate applies.
    pub conn_burst: u32,
    /// Initial slow mode: least time between two chat messages of one viewer (0s = off).
    /// Moderators change it live.
    #[serde(with = "humantime_serde")]
    pub slow_mode: Duration,
    /// Chat messages kept for late joiners and resume (also the Redis stream MAXLEN).
    pub history_size: usize,
    /// Reaction emoji viewers may send.
    pub reactions: Vec<String>,
    /// Reactions are counted and broadcast once per this interval.
    #[serde(with = "humantime_serde")]
    pub reaction_interval: Duration,
    /// Most options in a poll (at least 2 always).
    pub poll_max_options: usize,
    /// Longest poll duration.
    #[serde(with = "humantime_serde")]
    pub poll_max_duration: Duration,
    /// Live poll tallies (and question votes) are broadcast at most once per this interval.
    #[serde(with = "humantime_serde")]
    pub poll_tally_interval: Duration,
    /// Whether a second vote in a poll replaces the first (`true`) or is refused (`false`).
    pub poll_vote_change: bool,
    /// Longest question, in characters.
    pub question_max_len: usize,
    /// How many top questions (by votes) a late joiner gets.
    pub qa_top: usize,
    /// Most questions kept per room; later ones are refused.
    pub qa_max_questions: usize,
    /// Words refused in chat and questions (case-insensitive substring match).
    pub blocked_words: Vec<String>,
    /// Largest WebSocket frame (and message) a client may send, in bytes.
    pub max_frame_size: usize,
    /// Interval between server pings.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// A client silent for `ping_interval + ping_timeout` is dropped; also the write timeout.
    #[serde(with = "humantime_serde")]
    pub ping_timeout: Duration,
    /// Frames a connection may fall behind the room before it is dropped as a slow consumer.
    pub send_queue: usize,
    /// Bad frames (bad JSON, unknown type, refused action) a connection may send before it
    /// is closed.
    pub max_errors: u32,
    /// How long a closed poll stays in media playlists as `EXT-X-DATERANGE`.
    #[serde(with = "humantime_serde")]
    pub daterange_keep: Duration,
    /// Largest tip, in minor units of the currency.
    pub tip_max_minor: u64,
}

impl Default for InteractConfig {
    fn default() -> Self {
        Self {
            bus: DEFAULT_BUS.to_owned(),
            token_secret: String::new(),
            allow_anonymous: DEFAULT_ALLOW_ANONYMOUS,
            max_token_ttl: DEFAULT_MAX_TOKEN_TTL,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_rooms: DEFAULT_MAX_ROOMS,
            room_idle_timeout: DEFAULT_ROOM_IDLE_TIMEOUT,
            unscoped_tokens: DEFAULT_UNSCOPED_TOKENS,
            chat_max_len: DEFAULT_CHAT_MAX_LEN,
            chat_rate_per_min: DEFAULT_CHAT_RATE_PER_MIN,
            chat_burst: DEFAULT_CHAT_BURST,
            conn_rate_per_sec: DEFAULT_CONN_RATE_PER_SEC,
            conn_burst: DEFAULT_CONN_BURST,
            slow_mode: DEFAULT_SLOW_MODE,
            history_size: DEFAULT_HISTORY_SIZE,
            reactions: DEFAULT_REACTIONS.iter().map(|s| (*s).to_owned()).collect(),
            reaction_interval: DEFAULT_REACTION_INTERVAL,
            poll_max_options: DEFAULT_POLL_MAX_OPTIONS,
            poll_max_duration: DEFAULT_POLL_MAX_DURATION,
            poll_tally_interval: DEFAULT_POLL_TALLY_INTERVAL,
            poll_vote_change: DEFAULT_POLL_VOTE_CHANGE,
            question_max_len: DEFAULT_QUESTION_MAX_LEN,
            qa_top: DEFAULT_QA_TOP,
            qa_max_questions: DEFAULT_QA_MAX_QUESTIONS,
            blocked_words: Vec::new(),
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            ping_interval: DEFAULT_PING_INTERVAL,
            ping_timeout: DEFAULT_PING_TIMEOUT,
            send_queue: DEFAULT_SEND_QUEUE,
            max_errors: DEFAULT_MAX_ERRORS,
            daterange_keep: DEFAULT_DATERANGE_KEEP,
            tip_max_minor: DEFAULT_TIP_MAX_MINOR,
        }
    }
}

impl InteractConfig {
    /// Checks ranges and combinations.
    ///
    /// # Errors
    /// A message that names the offending key, e.g. `interact.chat_max_len: must be ...`.
    pub fn validate(&self) -> Result<(), String> {
        fn need(ok: bool, key: &str, what: &str) -> Result<(), String> {
            if ok {
                Ok(())
            } else {
                Err(format!("interact.{key}: {what}"))
            }
        }
        need(
            self.bus == "memory"
                || self.bus.starts_with("redis://")
                || self.bus.starts_with("rediss://"),
            "bus",
            "must be \"memory\" or a redis:// URL",
        )?;
        if self.bus != "memory" {
            need(
                redis::Client::open(self.bus.as_str()).is_ok(),
                "bus",
                "is not a valid redis:// URL",
            )?;
        }
        need(
            self.token_secret.is_empty() || self.token_secret.len() >= 16,
            "token_secret",
            "must be empty or at least 16 bytes",
        )?;
        need(
            self.allow_anonymous || !self.token_secret.is_empty(),
            "allow_anonymous",
            "cannot be false while interact.token_secret is empty (nobody could connect)",
        )?;
        need(
            self.max_connections > 0,
            "max_connections",
            "must be at least 1",
        )?;
        need(self.max_rooms > 0, "max_rooms", "must be at least 1")?;
        need(
            self.room_idle_timeout >= Duration::from_secs(1),
            "room_idle_timeout",
            "must be at least 1s",
        )?;
        need(
            (1..=10_000).contains(&self.chat_max_len),
            "chat_max_len",
            "must be between 1 and 10000",
        )?;
        need(
            self.chat_rate_per_min > 0,
            "chat_rate_per_min",
            "must be at least 1",
        )?;
        need(self.chat_burst > 0, "chat_burst", "must be at least 1")?;
        need(
            self.conn_rate_per_sec > 0,
            "conn_rate_per_sec",
            "must be at least 1",
        )?;
        need(self.conn_burst > 0, "conn_burst", "must be at least 1")?;
        need(
            (1..=100_000).contains(&self.history_size),
            "history_size",
            "must be between 1 and 100000",
        )?;
        need(
            !self.reactions.is_empty(),
            "reactions",
            "must list at least one emoji",
        )?;
        need(
            self.reactions
                .iter()
                .all(|r| !r.is_empty() && r.len() <= 32),
            "reactions",
            "each entry must be 1 to 32 bytes",
        )?;
        need(
            self.reaction_interval >= Duration::from_millis(10),
            "reaction_interval",
            "must be at least 10ms",
        )?;
        need(
            (2..=10).contains(&self.poll_max_options),
            "poll_max_options",
            "must be between 2 and 10",
        )?;
        need(
            self.poll_max_duration >= Duration::from_secs(1),
            "poll_max_duration",
            "must be at least 1s",
        )?;
        need(
            self.poll_tally_interval >= Duration::from_millis(10),
            "poll_tally_interval",
            "must be at least 10ms",
        )?;
        need(
            (1..=10_000).contains(&self.question_max_len),
            "question_max_len",
            "must be between 1 and 10000",
        )?;
        need(
            self.qa_max_questions > 0,
            "qa_max_questions",
            "must be at least 1",
        )?;
        need(
            (256..=1 << 20).contains(&self.max_frame_size),
            "max_frame_size",
            "must be between 256 and 1048576 bytes",
        )?;
        need(
            self.max_frame_size >= self.chat_max_len * 4 + 64,
            "max_frame_size",
            "must hold a chat message of interact.chat_max_len characters (4 bytes each + 64)",
        )?;
        need(
            self.ping_interval >= Duration::from_millis(100),
            "ping_interval",
            "must be at least 100ms",
        )?;
        need(
            self.ping_timeout >= Duration::from_millis(100),
            "ping_timeout",
            "must be at least 100ms",
        )?;
        need(
            (8..=1 << 20).contains(&self.send_queue),
            "send_queue",
            "must be between 8 and 1048576",
        )?;
        need(self.max_errors > 0, "max_errors", "must be at least 1")?;
        need(
            self.tip_max_minor > 0,
            "tip_max_minor",
            "must be at least 1",
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        InteractConfig::default().validate().unwrap();
    }

    #[test]
    fn parses_toml_with_durations() {
        let c: InteractConfig = toml::from_str(
            r#"
            bus = "redis://127.0.0.1:6379"
            slow_mode = "5s"
            reaction_interval = "100ms"
            reactions = ["❤️"]
            "#,
        )
        .unwrap();
        assert_eq!(c.slow_mode, Duration::from_secs(5));
        assert_eq!(c.reaction_interval, Duration::from_millis(100));
        assert_eq!(c.chat_max_len, DEFAULT_CHAT_MAX_LEN);
        c.validate().unwrap();
    }

    #[test]
    fn unknown_key_is_refused() {
        assert!(toml::from_str::<InteractConfig>("chat_max_length = 3").is_err());
    }

    #[test]
    fn errors_name_the_key() {
        let c = InteractConfig {
            chat_max_len: 0,
            ..Default::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .starts_with("interact.chat_max_len:"));
        let c = InteractConfig {
            bus: "nats://x".into(),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().starts_with("interact.bus:"));
        let c = InteractConfig {
            allow_anonymous: false,
            ..Default::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .starts_with("interact.allow_anonymous:"));
        let c = InteractConfig {
            poll_tally_interval: Duration::ZERO,
            ..Default::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .starts_with("interact.poll_tally_interval:"));
    }
}
