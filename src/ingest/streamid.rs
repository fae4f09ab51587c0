//! SRT streamid parsing.
//!
//! Two forms are accepted, as OBS, ffmpeg and hardware encoders send them:
//! - the SRT Access Control syntax (`#!::r=live/NAME,m=publish`), from the SRT
//!   documentation "SRT Access Control (Stream ID) Guidelines": a `#!::` prefix, then
//!   comma-separated `key=value` pairs. The keys we read are `r` (resource name) and
//!   `m` (mode: `request`, `publish` or `bidirectional`; `request` is the default when absent
//!   in the guideline, but an ingest-only listener reads an absent `m` as `publish`, as
//!   other media servers do). `u`, `h`, `s` and `t` are accepted and ignored.
//! - a plain name: `NAME` or `live/NAME`.

use std::fmt;

/// The longest streamid SRT carries (SRTO_STREAMID is limited to 512 bytes).
pub const MAX_STREAMID_LEN: usize = 512;
/// The longest stream name.
pub const MAX_NAME_LEN: usize = 64;

/// Why a streamid was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamIdError {
    /// Empty streamid or no resource.
    #[error("streamid names no stream")]
    Missing,
    /// Longer than SRT allows.
    #[error("streamid is longer than {MAX_STREAMID_LEN} bytes")]
    TooLong,
    /// A `#!::` pair without `=`, or a key given twice.
    #[error("malformed streamid pair {0:?}")]
    Malformed(String),
    /// `m=` is not `publish`.
    #[error("mode {0:?} is not supported; this listener takes publishers only (m=publish)")]
    Mode(String),
    /// The resource has an application other than `live`.
    #[error("application {0:?} is unknown; use live/NAME")]
    App(String),
    /// The name has characters outside `[A-Za-z0-9_-]` or is too long.
    #[error("stream name {0:?} must be 1-64 characters of [A-Za-z0-9_-]")]
    Name(String),
}

/// What a publisher asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRequest {
    /// The stream name.
    pub name: String,
    /// The `u=` user, if any (logged only).
    pub user: Option<String>,
}

impl fmt::Display for PublishRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// Checks a stream name.
///
/// # Errors
/// [`StreamIdError::Name`] when it is empty, too long, or has other characters.
pub fn validate_name(name: &str) -> Result<(), StreamIdError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(StreamIdError::Name(name.chars().take(80).collect()))
    }
}

fn resource_to_name(resource: &str) -> Result<String, StreamIdError> {
    let name = match resource.split_once('/') {
        Some(("live", name)) => name,
        Some((app, _)) => return Err(StreamIdError::App(app.chars().take(80).collect())),
        None => resource,
    };
    validate_name(name)?;
    Ok(name.to_owned())
}

/// Parses a streamid into a publish request.
///
/// # Errors
/// [`StreamIdError`] saying what is wrong.
pub fn parse(streamid: &str) -> Result<PublishRequest, StreamIdError> {
    if streamid.len() > MAX_STREAMID_LEN {
        return Err(StreamIdError::TooLong);
    }
    let Some(body) = streamid.strip_prefix("#!::") else {
        if streamid.is_empty() {
            return Err(StreamIdError::Missing);
        }
        return Ok(PublishRequest {
            name: resource_to_name(streamid)?,
            user: None,
        });
    };
    let (mut resource, mut mode, mut user) = (None, None, None);
    for pair in body.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| StreamIdError::Malformed(pair.chars().take(80).collect()))?;
        let slot = match k {
            "r" => &mut resource,
            "m" => &mut mode,
            "u" => &mut user,
            _ => continue,
        };
        if slot.replace(v).is_some() {
            return Err(StreamIdError::Malformed(pair.chars().take(80).collect()));
        }
    }
    if let Some(m) = mode {
        if m != "publish" {
            return Err(StreamIdError::Mode(m.chars().take(40).collect()));
        }
    }
    let resource = resource
        .filter(|r| !r.is_empty())
        .ok_or(StreamIdError::Missing)?;
    Ok(PublishRequest {
        name: resource_to_name(resource)?,
        user: user.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Result<String, StreamIdError> {
        parse(s).map(|r| r.name)
    }

    #[test]
    fn access_control_syntax() {
        assert_eq!(name("#!::r=live/demo,m=publish").unwrap(), "demo");
        assert_eq!(name("#!::m=publish,r=live/cam-1").unwrap(), "cam-1");
        assert_eq!(name("#!::r=demo").unwrap(), "demo");
        let r = parse("#!::u=alice,r=live/demo,m=publish,s=abc,t=stream").unwrap();
        assert_eq!(r.user.as_deref(), Some("alice"));
    }

    #[test]
    fn plain_names() {
        assert_eq!(name("demo").unwrap(), "demo");
        assert_eq!(name("live/demo").unwrap(), "demo");
        assert_eq!(name("Cam_2").unwrap(), "Cam_2");
    }

    #[test]
    fn refusals() {
        assert_eq!(name(""), Err(StreamIdError::Missing));
        assert_eq!(name("#!::"), Err(StreamIdError::Missing));
        assert_eq!(name("#!::m=publish"), Err(StreamIdError::Missing));
        assert_eq!(
            name("#!::r=live/demo,m=request"),
            Err(StreamIdError::Mode("request".into()))
        );
        assert!(matches!(
            name("#!::r=a,r=b"),
            Err(StreamIdError::Malformed(_))
        ));
        assert!(matches!(
            name("#!::rlive"),
            Err(StreamIdError::Malformed(_))
        ));
        assert!(matches!(name("vod/x"), Err(StreamIdError::App(_))));
        assert!(matches!(name("live/a/b"), Err(StreamIdError::Name(_))));
        assert!(matches!(name("../etc"), Err(StreamIdError::App(_))));
        assert!(matches!(name("a b"), Err(StreamIdError::Name(_))));
        assert!(matches!(name("dé"), Err(StreamIdError::Name(_))));
        assert_eq!(name(&"a".repeat(600)), Err(StreamIdError::TooLong));
        assert!(matches!(name(&"a".repeat(65)), Err(StreamIdError::Name(_))));
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        // A cheap exhaustive-ish sweep over short strings built from the syntax's own
        // characters; the fuzz target covers the rest.
        let alphabet = ['#', '!', ':', '=', ',', 'r', 'm', '/', 'a', 'é', '\0'];
        let mut buf = String::new();
        for a in alphabet {
            for b in alphabet {
                for c in alphabet {
                    for d in alphabet {
                        buf.clear();
                        buf.extend([a, b, c, d]);
                        let _ = parse(&buf);
                        let _ = parse(&format!("#!::{buf}"));
                    }
                }
            }
        }
    }
}
