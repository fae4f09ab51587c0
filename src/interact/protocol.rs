//! The wire protocol: JSON text frames, each with a `type` and a version `v`.
//!
//! Client frames are decoded by [`decode`] (the fuzz target's entry point); server frames
//! are [`ServerMsg`], serialized once per broadcast by [`encode`]. The same server frames
//! travel on the bus between nodes, so a frame from Redis is forwarded to clients as is.
//! `docs/interaction.md` documents every frame with examples.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::token::Role;

/// Protocol version carried in every frame's `v`.
pub const VERSION: u64 = 1;
/// Longest client correlation id (`ref`), in bytes.
pub const MAX_REF_LEN: usize = 64;

/// A decoded client frame with its optional correlation id, echoed in `ack` and `error`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientFrame {
    /// The client's `ref`, if any.
    pub r#ref: Option<String>,
    /// What the client asks for.
    pub msg: ClientMsg,
}

/// What a client may send. Permissions are checked by the room, not here.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMsg {
    /// `chat`: post a chat message.
    Chat {
        /// Message text.
        text: String,
    },
    /// `react`: one reaction from the configured set.
    React {
        /// The emoji.
        emoji: String,
    },
    /// `vote`: vote in an open poll (option index from 0).
    Vote {
        /// Poll id.
        poll: String,
        /// Option index.
        option: usize,
    },
    /// `ask`: submit a question.
    Ask {
        /// Question text.
        text: String,
    },
    /// `upvote`: upvote a question, once per user.
    Upvote {
        /// Question id.
        question: String,
    },
    /// `resume`: send the chat history after this message id.
    Resume {
        /// Last message id the client saw.
        after: String,
    },
    /// `delete` (moderator): delete a chat message.
    Delete {
        /// Message id.
        id: String,
    },
    /// `timeout` (moderator): mute a user for some seconds.
    Timeout {
        /// User id.
        user: String,
        /// Seconds.
        secs: u64,
    },
    /// `ban` (moderator): mute a user until unbanned.
    Ban {
        /// User id.
        user: String,
    },
    /// `unban` (moderator).
    Unban {
        /// User id.
        user: String,
    },
    /// `slow_mode` (moderator): least seconds between two messages of a viewer; 0 = off.
    SlowMode {
        /// Seconds.
        secs: u64,
    },
    /// `poll_open` (host).
    PollOpen(PollSpec),
    /// `poll_close` (host): close a poll early.
    PollClose {
        /// Poll id.
        poll: String,
    },
    /// `question_state` (host; moderators may only dismiss).
    QuestionState {
        /// Question id.
        question: String,
        /// New state.
        state: QuestionState,
    },
    /// `pin` (host): pin a chat message, or unpin with no id.
    Pin {
        /// Message id, or `None` to unpin.
        id: Option<String>,
    },
    /// `tip` (host): announce a tip. No payment is processed.
    Tip(TipSpec),
    /// `system` (host): post a system message.
    System {
        /// Message text.
        text: String,
    },
}

/// A poll to open.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct PollSpec {
    /// The question.
    pub question: String,
    /// 2 to `poll_max_options` options.
    pub options: Vec<String>,
    /// Seconds until the poll closes by itself.
    pub duration_secs: u64,
}

/// A tip to announce.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct TipSpec {
    /// Who tipped (display name).
    pub from: String,
    /// Amount in minor units (cents).
    pub amount_minor: u64,
    /// ISO 4217 currency code, three upper-case letters.
    pub currency: String,
    /// Optional message shown with the tip.
    #[serde(default)]
    pub message: Option<String>,
}

/// Why a client frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or not a JSON object.
    #[error("not a JSON object: {0}")]
    BadJson(String),
    /// `v` is present and is not [`VERSION`].
    #[error("unsupported protocol version {0}")]
    Version(u64),
    /// No `type`, or an unknown one.
    #[error("unknown frame type {0:?}")]
    UnknownType(String),
    /// A field is missing, of the wrong type or out of range.
    #[error("bad {ty} frame: {msg}")]
    BadFrame {
        /// The frame type.
        ty: &'static str,
        /// What is wrong.
        msg: String,
    },
}

impl DecodeError {
    /// The error code sent in the `error` frame.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::BadJson(_) => ErrorCode::BadJson,
            DecodeError::Version(_) => ErrorCode::UnsupportedVersion,
            DecodeError::UnknownType(_) => ErrorCode::UnknownType,
            DecodeError::BadFrame { .. } => ErrorCode::BadFrame,
        }
    }
}

#[derive(Deserialize)]
struct Head {
    v: Option<serde_json::Value>,
    #[serde(rename = "type")]
    ty: Option<serde_json::Value>,
    #[serde(rename = "ref")]
    r#ref: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Text {
    text: String,
}
#[derive(Deserialize)]
struct React {
    emoji: String,
}
#[derive(Deserialize)]
struct Vote {
    poll: String,
    option: usize,
}
#[derive(Deserialize)]
struct Upvote {
    question: String,
}
#[derive(Deserialize)]
struct Resume {
    after: String,
}
#[derive(Deserialize)]
struct Id {
    id: String,
}
#[derive(Deserialize)]
struct Timeout {
    user: String,
    secs: u64,
}
#[derive(Deserialize)]
struct User {
    user: String,
}
#[derive(Deserialize)]
struct Secs {
    secs: u64,
}
#[derive(Deserialize)]
struct PollRef {
    poll: String,
}
#[derive(Deserialize)]
struct QState {
    question: String,
    state: QuestionState,
}
#[derive(Deserialize)]
struct Pin {
    #[serde(default)]
    id: Option<String>,
}

fn body<'a, T: Deserialize<'a>>(ty: &'static str, bytes: &'a [u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(bytes).map_err(|e| DecodeError::BadFrame {
        ty,
        msg: e.to_string(),
    })
}

/// Decodes one client text frame. Never panics, whatever the input.
///
/// # Errors
/// A [`DecodeError`] naming what is wrong; the caller answers with an `error` frame.
pub fn decode(bytes: &[u8]) -> Result<ClientFrame, DecodeError> {
    let head: Head =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::BadJson(e.to_string()))?;
    match &head.v {
        None => {}
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(VERSION) => {}
        Some(serde_json::Value::Number(n)) => {
            return Err(DecodeError::Version(n.as_u64().unwrap_or(0)))
        }
        Some(_) => return Err(DecodeError::Version(0)),
    }
    let r#ref = match head.r#ref {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) if s.len() <= MAX_REF_LEN => Some(s),
        Some(_) => {
            return Err(DecodeError::BadFrame {
                ty: "any",
                msg: format!("ref must be a string of at most {MAX_REF_LEN} bytes"),
            })
        }
    };
    let ty = match head.ty {
        Some(serde_json::Value::String(s)) => s,
        Some(other) => return Err(DecodeError::UnknownType(other.to_string())),
        None => return Err(DecodeError::UnknownType(String::new())),
    };
    let msg = match ty.as_str() {
        "chat" => ClientMsg::Chat {
            text: body::<Text>("chat", bytes)?.text,
        },
        "react" => ClientMsg::React {
            emoji: body::<React>("react", bytes)?.emoji,
        },
        "vote" => {
            let b: Vote = body("vote", bytes)?;
            ClientMsg::Vote {
                poll: b.poll,
                option: b.option,
            }
        }
        "ask" => ClientMsg::Ask {
            text: body::<Text>("ask", bytes)?.text,
        },
        "upvote" => ClientMsg::Upvote {
            question: body::<Upvote>("upvote", bytes)?.question,
        },
        "resume" => ClientMsg::Resume {
            after: body::<Resume>("resume", bytes)?.after,
        },
        "delete" => ClientMsg::Delete {
            id: body::<Id>("delete", bytes)?.id,
        },
        "timeout" => {
            let b: Timeout = body("timeout", bytes)?;
            ClientMsg::Timeout {
                user: b.user,
                secs: b.secs,
            }
        }
        "ban" => ClientMsg::Ban {
            user: body::<User>("ban", bytes)?.user,
        },
        "unban" => ClientMsg::Unban {
            user: body::<User>("unban", bytes)?.user,
        },
        "slow_mode" => ClientMsg::SlowMode {
            secs: body::<Secs>("slow_mode", bytes)?.secs,
        },
        "poll_open" => ClientMsg::PollOpen(body("poll_open", bytes)?),
        "poll_close" => ClientMsg::PollClose {
            poll: body::<PollRef>("poll_close", bytes)?.poll,
        },
        "question_state" => {
            let b: QState = body("question_state", bytes)?;
            ClientMsg::QuestionState {
                question: b.question,
                state: b.state,
            }
        }
        "pin" => ClientMsg::Pin {
            id: body::<Pin>("pin", bytes)?.id,
        },
        "tip" => ClientMsg::Tip(body("tip", bytes)?),
        "system" => ClientMsg::System {
            text: body::<Text>("system", bytes)?.text,
        },
        _ => return Err(DecodeError::UnknownType(ty)),
    };
    Ok(ClientFrame { r#ref, msg })
}

/// Who sent something, as shown to everyone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// User id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: Role,
}

/// Where the video was when a host event happened. `msn`/`part` are absent when the stream
/// was not live (then `pdt` is the wall clock).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// Program date time, RFC 3339 with milliseconds.
    pub pdt: String,
    /// Media sequence number of the latest part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msn: Option<u64>,
    /// Part index within that segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<u64>,
}

/// A chat message (or a host's system message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMsg {
    /// Id, `"<ms>-<seq>"`, increasing in room order (a Redis stream id on the Redis bus).
    pub id: String,
    /// Sender.
    pub user: UserInfo,
    /// Text.
    pub text: String,
    /// Server time, RFC 3339 with milliseconds.
    pub ts: String,
    /// Set on system messages from the host or the server API.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub system: bool,
    /// Video timeline, on system messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp: Option<Stamp>,
}

/// Poll state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PollState {
    /// Taking votes.
    Open,
    /// Final.
    Closed,
}

/// A poll with its tallies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Poll {
    /// Id, `"p<n>"`.
    pub id: String,
    /// The question.
    pub question: String,
    /// Options.
    pub options: Vec<String>,
    /// Votes per option.
    pub tallies: Vec<u64>,
    /// Open or closed.
    pub state: PollState,
    /// When it closes by itself (RFC 3339).
    pub closes_at: String,
    /// Video timeline at open.
    pub opened: Stamp,
    /// Video timeline at close.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<Stamp>,
}

/// Question state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuestionState {
    /// Waiting.
    Open,
    /// Answered by the host.
    Answered,
    /// Pinned by the host (shown first).
    Pinned,
    /// Dismissed (hidden from the top list).
    Dismissed,
}

/// A question with its votes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Question {
    /// Id, `"q<n>"`.
    pub id: String,
    /// Text.
    pub text: String,
    /// Who asked.
    pub user: UserInfo,
    /// Upvotes.
    pub votes: u64,
    /// State.
    pub state: QuestionState,
    /// Server time of the question (RFC 3339).
    pub ts: String,
    /// Video timeline of the last host state change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp: Option<Stamp>,
}

/// Limits a client should know about, sent in `welcome`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Longest chat message, characters.
    pub chat_max_len: usize,
    /// Longest question, characters.
    pub question_max_len: usize,
    /// Allowed reactions.
    pub reactions: Vec<String>,
    /// Whether a second vote replaces the first.
    pub poll_vote_change: bool,
    /// Largest frame a client may send, bytes.
    pub max_frame_size: usize,
}

/// Error codes of the `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON.
    BadJson,
    /// Wrong `v`.
    UnsupportedVersion,
    /// Unknown `type`.
    UnknownType,
    /// Bad or missing field.
    BadFrame,
    /// Frame larger than `max_frame_size`, or a binary frame.
    TooLarge,
    /// Text longer than allowed, or empty.
    BadLength,
    /// Rate limit; see `retry_after_ms`.
    RateLimited,
    /// Slow mode; see `retry_after_ms`.
    SlowMode,
    /// The role may not do this.
    Forbidden,
    /// Needs a token (anonymous connection).
    AuthRequired,
    /// Timed out or banned.
    Muted,
    /// Contains a blocked word.
    Blocked,
    /// No such poll, question or message.
    NotFound,
    /// Poll closed.
    Closed,
    /// Already voted (when votes cannot change) or already upvoted.
    Duplicate,
    /// Reaction not in the configured set.
    BadReaction,
    /// The room holds too many questions.
    Full,
    /// The bus (Redis) failed.
    Unavailable,
}

/// A frame from the server (and, unchanged, a bus event between nodes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// First frame on a connection.
    Welcome {
        /// Connection id on this node.
        conn: u64,
        /// Who the server thinks you are.
        user: UserInfo,
        /// No token: read and react only.
        anonymous: bool,
        /// Stream name.
        stream: String,
        /// Limits.
        limits: Limits,
    },
    /// Chat history: the last messages, or those after a resume id.
    History {
        /// Oldest first.
        messages: Vec<ChatMsg>,
        /// False when the resume id is older than the history window (a gap).
        complete: bool,
    },
    /// Room state for a late joiner.
    State {
        /// Open polls and those closed recently.
        polls: Vec<Poll>,
        /// Top questions: pinned first, then by votes.
        questions: Vec<Question>,
        /// The pinned message.
        pinned: Option<ChatMsg>,
        /// Current slow mode, seconds (0 = off).
        slow_mode_secs: u64,
    },
    /// A chat message.
    Chat(ChatMsg),
    /// A message was deleted by a moderator.
    Deleted {
        /// Message id.
        id: String,
    },
    /// A user was timed out, banned or unbanned.
    Moderation {
        /// User id.
        user: String,
        /// `timeout`, `ban` or `unban`.
        action: String,
        /// End of a timeout, ms since the epoch.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until_ms: Option<u64>,
    },
    /// Slow mode changed.
    SlowMode {
        /// Seconds, 0 = off.
        secs: u64,
    },
    /// A message was pinned (or unpinned).
    Pinned {
        /// The message, or none when unpinned.
        message: Option<ChatMsg>,
        /// Video timeline.
        stamp: Stamp,
    },
    /// A poll opened.
    PollOpened(Poll),
    /// Live tallies (at most once per `poll_tally_interval` per node).
    PollTally {
        /// Poll id.
        poll: String,
        /// Votes per option.
        tallies: Vec<u64>,
        /// Increases with every vote; older tallies are ignored.
        version: u64,
    },
    /// A poll closed, with final tallies.
    PollClosed(Poll),
    /// A question was asked.
    QuestionAsked(Question),
    /// A question's votes changed (batched like tallies).
    QuestionVotes {
        /// Question id.
        id: String,
        /// Upvotes.
        votes: u64,
    },
    /// A host or moderator changed a question's state.
    QuestionState {
        /// Question id.
        id: String,
        /// New state.
        state: QuestionState,
        /// Video timeline.
        stamp: Stamp,
    },
    /// Reaction counts of the last interval.
    Reactions {
        /// Emoji to count.
        counts: BTreeMap<String, u64>,
        /// The interval, ms.
        window_ms: u64,
    },
    /// A tip (announcement only; no payment is processed).
    Tip {
        /// Id, `"t<n>"`.
        id: String,
        /// Who tipped.
        from: String,
        /// Amount in minor units.
        amount_minor: u64,
        /// ISO 4217 code.
        currency: String,
        /// Optional message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// Video timeline.
        stamp: Stamp,
    },
    /// The request with this `ref` was accepted.
    Ack {
        /// The client's ref.
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        r#ref: Option<String>,
        /// Id of what was created (message, poll, question, tip).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// The request was refused; the connection stays open unless abuse repeats.
    Error {
        /// Machine-readable code.
        code: ErrorCode,
        /// Human-readable reason.
        message: String,
        /// The client's ref.
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        r#ref: Option<String>,
        /// When to retry (rate limit, slow mode).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

/// Serializes a server frame with its version field: `{"v":1,"type":...}`.
pub fn encode(msg: &ServerMsg) -> String {
    // A derived Serialize of this internally tagged enum cannot fail (string keys only)
    // and always yields an object starting with `{`.
    let body = serde_json::to_string(msg).unwrap_or_else(|_| String::from("{}"));
    let mut out = String::with_capacity(body.len() + 7);
    out.push_str("{\"v\":1,");
    out.push_str(body.get(1..).unwrap_or("}"));
    out
}

/// Builds an `error` frame.
pub fn error(code: ErrorCode, message: impl Into<String>, r#ref: Option<String>) -> ServerMsg {
    ServerMsg::Error {
        code,
        message: message.into(),
        r#ref,
        retry_after_ms: None,
    }
}

#[cfg(test)]
mod tests;
