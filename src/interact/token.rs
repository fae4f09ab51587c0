//! Signed tokens (JWT, HS256) carrying a role, a user id, a display name, the stream (or a
//! glob of streams) they are good for, and an expiry.

use std::{fmt, str::FromStr, time::Duration};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{InteractError, UnscopedTokens};

/// What a connection may do. Ordered: a host may do everything a moderator may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads, chats, votes, asks, upvotes and reacts.
    Viewer,
    /// A viewer who also deletes messages, times out and bans users, sets slow mode and
    /// dismisses questions.
    Moderator,
    /// A moderator who also opens and closes polls, answers and pins questions, pins
    /// messages, posts system messages and tips.
    Host,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Viewer => "viewer",
            Role::Moderator => "moderator",
            Role::Host => "host",
        })
    }
}

impl FromStr for Role {
    type Err = InteractError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "moderator" => Ok(Role::Moderator),
            "host" => Ok(Role::Host),
            other => Err(InteractError::BadRole(other.to_owned())),
        }
    }
}

/// The claims of an Estuary token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// The stream this token is good for: a name or a glob (`*` any run of characters, `?`
    /// one), optionally written as a path (`live/show`, `live/*`). Absent in tokens minted
    /// before scopes; `interact.unscoped_tokens` decides what those may do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
}

/// Why a verified token is not good for a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeError {
    /// The token names another stream.
    WrongStream,
    /// The token names no stream and its role needs one (`interact.unscoped_tokens`).
    NotScoped,
}

impl ScopeError {
    /// The stable error code (`wrong_stream`, `token_not_scoped`).
    pub fn code(self) -> &'static str {
        match self {
            ScopeError::WrongStream => "wrong_stream",
            ScopeError::NotScoped => "token_not_scoped",
        }
    }

    /// A message for people.
    pub fn message(self) -> &'static str {
        match self {
            ScopeError::WrongStream => "this token is for another stream",
            ScopeError::NotScoped => {
                "this token names no stream; moderator and host tokens must (estuary token --stream)"
            }
        }
    }
}

impl Claims {
    /// Whether this token may be used in `stream`'s room.
    ///
    /// # Errors
    /// [`ScopeError::WrongStream`] when the token's stream does not match,
    /// [`ScopeError::NotScoped`] when it has none and `unscoped` does not allow its role.
    pub fn check_stream(&self, stream: &str, unscoped: UnscopedTokens) -> Result<(), ScopeError> {
        match &self.stream {
            Some(pattern) if stream_matches(pattern, stream) => Ok(()),
            Some(_) => Err(ScopeError::WrongStream),
            None => match unscoped {
                UnscopedTokens::All => Ok(()),
                UnscopedTokens::Viewer if self.role == Role::Viewer => Ok(()),
                _ => Err(ScopeError::NotScoped),
            },
        }
    }
}

/// Longest stream pattern a token may carry, in bytes.
pub const MAX_STREAM_PATTERN_LEN: usize = 128;

/// A stream pattern: an optional `live/` (the URL path), then stream-name characters and
/// the wildcards `*` and `?`.
pub fn valid_stream_pattern(p: &str) -> bool {
    let body = p.strip_prefix("live/").unwrap_or(p);
    !body.is_empty()
        && p.len() <= MAX_STREAM_PATTERN_LEN
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'*' | b'?'))
}

/// Whether `stream` matches `pattern` (see [`Claims::stream`]). Hand-written: two wildcards
/// over names of at most 64 bytes need no glob crate; this is the classic linear matcher
/// that backtracks only to the last `*`.
pub fn stream_matches(pattern: &str, stream: &str) -> bool {
    let p = pattern.strip_prefix("live/").unwrap_or(pattern).as_bytes();
    let s = stream.as_bytes();
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Longest user id and display name a token may carry, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Mints a signed token for `stream` (a name or glob; `None` mints an unscoped token); used
/// by the `estuary token` CLI subcommand.
///
/// # Errors
/// [`InteractError::Token`] if the secret is empty, the id or name is empty or too long, or
/// the stream pattern is not one.
pub fn mint_token(
    secret: &str,
    role: Role,
    user_id: &str,
    display_name: &str,
    stream: Option<&str>,
    ttl: Duration,
) -> Result<String, InteractError> {
    if stream.is_some_and(|p| !valid_stream_pattern(p)) {
        return Err(InteractError::Token(format!(
            "stream must be a stream name or glob (letters, digits, _ . - * ?), at most {MAX_STREAM_PATTERN_LEN} bytes"
        )));
    }
    if secret.is_empty() {
        return Err(InteractError::Token("the token secret is empty".into()));
    }
    if user_id.is_empty() || user_id.len() > MAX_ID_LEN {
        return Err(InteractError::Token(format!(
            "user id must be 1 to {MAX_ID_LEN} bytes"
        )));
    }
    if display_name.is_empty() || display_name.len() > MAX_ID_LEN {
        return Err(InteractError::Token(format!(
            "display name must be 1 to {MAX_ID_LEN} bytes"
        )));
    }
    let now = jsonwebtoken::get_current_timestamp();
    let claims = Claims {
        sub: user_id.to_owned(),
        name: display_name.to_owned(),
        role,
        exp: now.saturating_add(ttl.as_secs()),
        iat: now,
        stream: stream.map(str::to_owned),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| InteractError::Token(e.to_string()))
}

/// How far in the future a token's `iat` may be (clock skew between the issuer and us).
pub const MAX_CLOCK_SKEW: u64 = 60;

/// Checks a token's signature, expiry, issue time and lifetime, and returns its claims
/// (display name cleaned of invisible and bidi-control characters).
///
/// # Errors
/// [`InteractError::Token`] when the token is malformed, forged, expired, issued in the
/// future, lives longer than `max_ttl`, or carries out-of-range fields.
pub fn verify_token(
    secret: &str,
    token: &str,
    max_ttl: std::time::Duration,
) -> Result<Claims, InteractError> {
    if secret.is_empty() {
        return Err(InteractError::Token("tokens are disabled".into()));
    }
    let mut v = Validation::new(Algorithm::HS256);
    v.leeway = 5;
    let data =
        jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret.as_bytes()), &v)
            .map_err(|e| InteractError::Token(e.to_string()))?;
    let mut c = data.claims;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if c.iat > now + MAX_CLOCK_SKEW {
        return Err(InteractError::Token("token issued in the future".into()));
    }
    if c.exp.saturating_sub(c.iat) > max_ttl.as_secs() {
        return Err(InteractError::Token(format!(
            "token lifetime over the {} s maximum",
            max_ttl.as_secs()
        )));
    }
    c.name = super::text::strip_invisible(&c.name);
    if c.sub.is_empty()
        || c.sub.len() > MAX_ID_LEN
        || c.name.is_empty()
        || c.name.len() > MAX_ID_LEN
        || c.stream
            .as_deref()
            .is_some_and(|p| !valid_stream_pattern(p))
    {
        return Err(InteractError::Token("user id or name out of range".into()));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123";
    const TTL: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

    #[test]
    fn future_and_overlong_tokens_are_refused() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let forge = |iat: u64, exp: u64, name: &str| {
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &Claims {
                    sub: "u1".into(),
                    name: name.into(),
                    role: Role::Viewer,
                    exp,
                    iat,
                    stream: None,
                },
                &EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .unwrap()
        };
        // Issued a year ahead.
        let t = forge(now + 365 * 86_400, now + 366 * 86_400, "x");
        assert!(verify_token(SECRET, &t, TTL).is_err());
        // Good for a century.
        let t = forge(now, now + 100 * 365 * 86_400, "x");
        assert!(verify_token(SECRET, &t, TTL).is_err());
        // A right-to-left override in the display name is stripped.
        let t = forge(now, now + 3600, "ev\u{202E}il");
        assert_eq!(verify_token(SECRET, &t, TTL).unwrap().name, "evil");
    }

    #[test]
    fn mint_then_verify() {
        let t = mint_token(
            SECRET,
            Role::Moderator,
            "u1",
            "Ann",
            None,
            Duration::from_secs(60),
        )
        .unwrap();
        let c = verify_token(SECRET, &t, TTL).unwrap();
        assert_eq!(
            (c.sub.as_str(), c.name.as_str(), c.role),
            ("u1", "Ann", Role::Moderator)
        );
    }

    #[test]
    fn wrong_secret_and_expired_are_refused() {
        let t = mint_token(
            SECRET,
            Role::Host,
            "u1",
            "Ann",
            None,
            Duration::from_secs(60),
        )
        .unwrap();
        assert!(verify_token("another-secret-0000", &t, TTL).is_err());
        let t = mint_token(SECRET, Role::Host, "u1", "Ann", None, Duration::ZERO).unwrap();
        // Expired now; leeway is 5 s, so forge an older token instead of sleeping.
        let _ = t;
        let old = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                sub: "u1".into(),
                name: "Ann".into(),
                role: Role::Host,
                exp: 1_000,
                iat: 900,
                stream: None,
            },
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert!(verify_token(SECRET, &old, TTL).is_err());
        assert!(verify_token(SECRET, "not.a.token", TTL).is_err());
    }

    #[test]
    fn role_round_trips() {
        for r in [Role::Viewer, Role::Moderator, Role::Host] {
            assert_eq!(r.to_string().parse::<Role>().unwrap(), r);
        }
        assert!("admin".parse::<Role>().is_err());
        assert!(Role::Host > Role::Moderator && Role::Moderator > Role::Viewer);
    }

    #[test]
    fn stream_globs() {
        for (p, s, ok) in [
            ("show", "show", true),
            ("show", "show2", false),
            ("live/show", "show", true),
            ("*", "anything", true),
            ("live/*", "x", true),
            ("cam*", "cam1", true),
            ("cam*", "cam", true),
            ("cam*", "xcam1", false),
            ("*-hd", "a-b-hd", true),
            ("*-hd", "a-hd-x", false),
            ("c?m", "cam", true),
            ("c?m", "cm", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
        ] {
            assert_eq!(stream_matches(p, s), ok, "{p} vs {s}");
        }
        assert!(valid_stream_pattern("live/*"));
        assert!(!valid_stream_pattern("live/"));
        assert!(!valid_stream_pattern("a/b"));
        assert!(!valid_stream_pattern(""));
    }

    /// The linear matcher agrees with the obvious recursive definition on every pattern and
    /// name of up to 4 characters over a small alphabet.
    #[test]
    fn stream_matches_agrees_with_the_definition() {
        fn reference(p: &[u8], s: &[u8]) -> bool {
            match (p.first(), s.first()) {
                (None, _) => s.is_empty(),
                (Some(b'*'), _) => {
                    reference(&p[1..], s) || (!s.is_empty() && reference(p, &s[1..]))
                }
                (Some(_), None) => false,
                (Some(&c), Some(&d)) => (c == b'?' || c == d) && reference(&p[1..], &s[1..]),
            }
        }
        fn all(alphabet: &[u8], max: usize) -> Vec<String> {
            let mut out = vec![String::new()];
            let mut level = vec![String::new()];
            for _ in 0..max {
                level = level
                    .iter()
                    .flat_map(|w| alphabet.iter().map(move |&c| format!("{w}{}", c as char)))
                    .collect();
                out.extend(level.iter().cloned());
            }
            out
        }
        let names = all(b"ab", 4);
        for p in all(b"ab*?", 4) {
            for n in &names {
                assert_eq!(
                    stream_matches(&p, n),
                    reference(p.as_bytes(), n.as_bytes()),
                    "{p:?} vs {n:?}"
                );
            }
        }
    }

    #[test]
    fn scopes_and_unscoped_policy() {
        let mint = |role, stream| {
            let t = mint_token(SECRET, role, "u", "U", stream, Duration::from_secs(60)).unwrap();
            verify_token(SECRET, &t, TTL).unwrap()
        };
        let host_a = mint(Role::Host, Some("a"));
        assert_eq!(host_a.check_stream("a", UnscopedTokens::None), Ok(()));
        assert_eq!(
            host_a.check_stream("b", UnscopedTokens::All),
            Err(ScopeError::WrongStream)
        );
        let host = mint(Role::Host, None);
        let viewer = mint(Role::Viewer, None);
        assert_eq!(
            host.check_stream("a", UnscopedTokens::Viewer),
            Err(ScopeError::NotScoped)
        );
        assert_eq!(viewer.check_stream("a", UnscopedTokens::Viewer), Ok(()));
        assert_eq!(
            viewer.check_stream("a", UnscopedTokens::None),
            Err(ScopeError::NotScoped)
        );
        assert_eq!(host.check_stream("a", UnscopedTokens::All), Ok(()));
        assert!(mint_token(SECRET, Role::Host, "u", "U", Some("a/b"), TTL).is_err());
    }
}
