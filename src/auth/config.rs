//! `[auth]`: signed playback URLs and the publish/play webhooks.

use std::{collections::BTreeMap, time::Duration};

use serde::Deserialize;

use crate::config::StreamConfig;

/// Default name of the token's query parameter and cookie (Akamai's default).
pub const DEFAULT_TOKEN_NAME: &str = "__token__";
/// Default time a webhook may take before it counts as failed. libsrt callers (ffmpeg,
/// OBS) give up a handshake after 3 s, so the publish hook must answer well within it.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(2);
/// Default time a play decision is reused for the same token (or viewer address).
pub const DEFAULT_PLAY_CACHE_TTL: Duration = Duration::from_secs(60);
/// Default largest number of cached play decisions.
pub const DEFAULT_PLAY_CACHE_ENTRIES: u64 = 100_000;

/// Who may play a stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Playback {
    /// Anyone who knows the URL.
    #[default]
    Public,
    /// Only requests carrying a valid EdgeAuth token (see [`crate::auth::token`]).
    Signed,
}

/// Access control settings.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Hex key (16+ bytes, i.e. 32+ hex digits) that signs playback tokens; a stream
    /// may replace it with its own `playback_key`.
    pub playback_key: Option<String>,
    /// Playback of streams that set no `playback` of their own, including streams an
    /// edge pulls from upstream without a `[streams.NAME]` entry.
    pub playback: Playback,
    /// Akamai's optional `salt`: a second secret appended to the signed text.
    pub playback_salt: Option<String>,
    /// Name of the query parameter and of the cookie that carry the token.
    pub token_name: String,
    /// Webhook asked whether a publisher may publish (SRT during the handshake, RTMP at
    /// `publish`); it may return the SRT passphrase or RTMP key for this publisher.
    pub publish_url: Option<String>,
    /// How long the publish hook may take.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// When the publish hook fails or times out: true lets the publisher in (the
    /// configured passphrase or key still applies), false refuses it.
    pub publish_fail_open: bool,
    /// Webhook asked whether a viewer may play, on the viewer's first request.
    pub play_url: Option<String>,
    /// How long the play hook may take.
    #[serde(with = "humantime_serde")]
    pub play_timeout: Duration,
    /// When the play hook fails or times out: true lets the viewer play, false refuses.
    pub play_fail_open: bool,
    /// How long a play decision is reused for the same token (or, without a token, the
    /// same viewer address) and stream.
    #[serde(with = "humantime_serde")]
    pub play_cache_ttl: Duration,
    /// Largest number of cached play decisions.
    pub play_cache_entries: u64,
    /// Sent to both webhooks as `Authorization: Bearer <hook_secret>`, so the
    /// operator's server knows the call comes from this node.
    pub hook_secret: Option<String>,
    /// PEM file of extra CA certificates trusted for `https://` webhooks (beside the
    /// system's).
    pub hook_ca_file: Option<std::path::PathBuf>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            playback_key: None,
            playback: Playback::Public,
            playback_salt: None,
            token_name: DEFAULT_TOKEN_NAME.into(),
            publish_url: None,
            publish_timeout: DEFAULT_HOOK_TIMEOUT,
            publish_fail_open: false,
            play_url: None,
            play_timeout: DEFAULT_HOOK_TIMEOUT,
            play_fail_open: false,
            play_cache_ttl: DEFAULT_PLAY_CACHE_TTL,
            play_cache_entries: DEFAULT_PLAY_CACHE_ENTRIES,
            hook_secret: None,
            hook_ca_file: None,
        }
    }
}

/// Decodes a hex key, refusing short ones (HMAC-SHA256 wants at least 128 bits).
pub(crate) fn decode_key(hex_key: &str) -> Result<Vec<u8>, &'static str> {
    let k = hex::decode(hex_key.trim()).map_err(|_| "must be an even number of hex digits")?;
    if k.len() < 16 {
        return Err("must be at least 16 bytes (32 hex digits)");
    }
    Ok(k)
}

impl AuthConfig {
    /// Checks keys, URLs and ranges, with the streams' own `playback` settings.
    ///
    /// # Errors
    /// The key and the reason.
    pub fn validate(
        &self,
        streams: &BTreeMap<String, StreamConfig>,
    ) -> Result<(), (String, &'static str)> {
        let err = |k: &str, r| Err((k.to_owned(), r));
        if let Some(k) = &self.playback_key {
            decode_key(k).map_err(|r| ("auth.playback_key".to_owned(), r))?;
        }
        if self.playback == Playback::Signed && self.playback_key.is_none() {
            return err(
                "auth.playback_key",
                "auth.playback = \"signed\" needs a key",
            );
        }
        let name_ok = |n: &str| {
            (1..=64).contains(&n.len())
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        };
        if !name_ok(&self.token_name) {
            return err(
                "auth.token_name",
                "must be 1-64 characters of [A-Za-z0-9_.-]",
            );
        }
        for (key, url) in [
            ("auth.publish_url", &self.publish_url),
            ("auth.play_url", &self.play_url),
        ] {
            if let Some(u) = url {
                let ok = u.parse::<hyper::Uri>().ok().is_some_and(|u| {
                    matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
                });
                if !ok {
                    return err(key, "must be an http:// or https:// URL");
                }
            }
        }
        for (key, t) in [
            ("auth.publish_timeout", self.publish_timeout),
            ("auth.play_timeout", self.play_timeout),
        ] {
            if t < Duration::from_millis(50) || t > Duration::from_secs(30) {
                return err(key, "must be between 50ms and 30s");
            }
        }
        if self.play_cache_ttl > Duration::from_secs(86_400) {
            return err("auth.play_cache_ttl", "must be at most 24h");
        }
        if self.play_cache_entries == 0 {
            return err("auth.play_cache_entries", "must be at least 1");
        }
        for (name, s) in streams {
            if let Some(k) = &s.playback_key {
                if decode_key(k).is_err() {
                    return Err((
                        format!("streams.{name}.playback_key"),
                        "must be 32+ hex digits (an even number)",
                    ));
                }
            }
            let signed = s.playback.unwrap_or(self.playback) == Playback::Signed;
            if signed && s.playback_key.is_none() && self.playback_key.is_none() {
                return Err((
                    format!("streams.{name}.playback"),
                    "a signed stream needs streams.NAME.playback_key or auth.playback_key",
                ));
            }
        }
        Ok(())
    }

    /// Whether `stream` needs a token, and the key that signs it.
    pub fn signed_key(
        &self,
        streams: &BTreeMap<String, StreamConfig>,
        stream: &str,
    ) -> Option<Vec<u8>> {
        let s = streams.get(stream);
        let mode = s.and_then(|s| s.playback).unwrap_or(self.playback);
        if mode == Playback::Public {
            return None;
        }
        let hex_key = s
            .and_then(|s| s.playback_key.as_deref())
            .or(self.playback_key.as_deref())?;
        // Validated at load; an undecodable key would refuse every token, never open.
        Some(decode_key(hex_key).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const KEY: &str = "00112233445566778899aabbccddeeff";

    #[test]
    fn defaults_and_validation() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.auth.token_name, "__token__");
        assert_eq!(c.auth.playback, Playback::Public);
        let e = Config::from_toml("[auth]\nplayback_key = \"abc\"").unwrap_err();
        assert!(e.to_string().contains("auth.playback_key"), "{e}");
        let e = Config::from_toml("[auth]\nplayback_key = \"0011\"").unwrap_err();
        assert!(e.to_string().contains("auth.playback_key"), "{e}");
        let e = Config::from_toml("[streams.x]\nplayback = \"signed\"").unwrap_err();
        assert!(e.to_string().contains("streams.x.playback"), "{e}");
        let e = Config::from_toml("[auth]\nplay_url = \"ftp://x\"").unwrap_err();
        assert!(e.to_string().contains("auth.play_url"), "{e}");
        let e = Config::from_toml("[auth]\ntoken_name = \"a b\"").unwrap_err();
        assert!(e.to_string().contains("auth.token_name"), "{e}");
        let e = Config::from_toml("[auth]\nplay_timeout = \"1ms\"").unwrap_err();
        assert!(e.to_string().contains("auth.play_timeout"), "{e}");
        let c = Config::from_toml(&format!(
            "[auth]\nplayback_key = \"{KEY}\"\n[streams.a]\nplayback = \"signed\"\n[streams.b]\n\
             [streams.c]\nplayback = \"signed\"\nplayback_key = \"{}\"",
            "ff".repeat(32)
        ))
        .unwrap();
        assert_eq!(
            c.auth.signed_key(&c.streams, "a"),
            Some(hex::decode(KEY).unwrap())
        );
        assert_eq!(c.auth.signed_key(&c.streams, "b"), None);
        assert_eq!(c.auth.signed_key(&c.streams, "zz"), None);
        assert_eq!(c.auth.signed_key(&c.streams, "c"), Some(vec![0xff; 32]));
    }
}
