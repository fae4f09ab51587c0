//! The config in force, as JSON with its secrets redacted.
//!
//! Redaction goes by key name, so a secret added to the config later is covered without
//! a list to keep up to date: a string under a key whose last `_` word is `passphrase`,
//! `secret`, `token`, `password`, `key`, `keys`, `credentials` or `salt` (`streams.*.passphrase`,
//! `streams.*.rtmp_key`, `admin.token`, `interact.token_secret`, `upstream.secret`, …)
//! becomes `"<redacted>"`; an empty one (unset) stays empty, and booleans and numbers stay.
//! File names of TLS keys are not secrets and are shown. Any URL's user information
//! (`redis://:password@host`) is redacted wherever it appears.

use serde_json::Value;

use crate::config::Config;

/// What a redacted secret reads as.
pub const REDACTED: &str = "<redacted>";

const SECRET_WORDS: &[&str] = &[
    "passphrase",
    "secret",
    "token",
    "password",
    "key",
    "keys",
    "credentials",
    "salt",
];
/// Keys matching the rule that hold file names, not key material.
const PATH_KEYS: &[&str] = &["tls_key", "client_key"];

/// `cfg` as JSON, secrets redacted.
pub fn redacted(cfg: &Config) -> Value {
    let mut v = serde_json::to_value(cfg).unwrap_or(Value::Null);
    redact(&mut v, false);
    v
}

fn secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    let last = key.rsplit(['_', '-']).next().unwrap_or_default();
    SECRET_WORDS.contains(&last) && !PATH_KEYS.contains(&key.as_str())
}

fn redact(v: &mut Value, secret: bool) {
    match v {
        Value::String(s) if secret && !s.is_empty() => *s = REDACTED.into(),
        Value::String(s) => {
            if let Some(clean) = redact_userinfo(s) {
                *s = clean;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| redact(i, secret)),
        Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                redact(item, secret || secret_key(k));
            }
        }
        _ => {}
    }
}

/// `scheme://user:pass@host/…` → `scheme://<redacted>@host/…`; `None` when `s` has no
/// user information.
fn redact_userinfo(s: &str) -> Option<String> {
    let (scheme, rest) = s.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    Some(format!("{scheme}://{REDACTED}{}", &rest[at..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_and_the_rest_shown() {
        let mut cfg = Config::builtin();
        cfg.admin.token = "admin-token-0123456789".into();
        cfg.interact.token_secret = "interact-secret".into();
        cfg.interact.bus = "redis://:bus-password@127.0.0.1:6379/0".into();
        cfg.upstream.secret = Some("upstream-secret".into());
        cfg.upstream.origins = vec!["https://user:origin-pass@origin/live".into()];
        cfg.http.tls_key = Some("/etc/estuary/key.pem".into());
        let s = cfg.streams.entry("demo".into()).or_default();
        s.passphrase = Some("stream-passphrase".into());
        s.rtmp_key = Some("rtmp-key".into());
        let v = redacted(&cfg);
        let text = v.to_string();
        for secret in [
            "admin-token-0123456789",
            "interact-secret",
            "bus-password",
            "upstream-secret",
            "origin-pass",
            "stream-passphrase",
            "rtmp-key",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(v["admin"]["token"], REDACTED);
        assert_eq!(v["streams"]["demo"]["rtmp_key"], REDACTED);
        assert_eq!(v["interact"]["bus"], "redis://<redacted>@127.0.0.1:6379/0");
        assert_eq!(
            v["upstream"]["origins"][0],
            "https://<redacted>@origin/live"
        );
        assert_eq!(v["http"]["tls_key"], "/etc/estuary/key.pem");
        assert_eq!(v["upstream"]["require_secret"], false);
        assert!(v["interact"]["max_token_ttl"].is_string());
        assert_eq!(v["hls"]["window_segments"], cfg.hls.window_segments);
    }

    #[test]
    fn userinfo_only() {
        assert_eq!(redact_userinfo("http://host/a@b"), None);
        assert_eq!(redact_userinfo("memory"), None);
        assert_eq!(
            redact_userinfo("redis://u:p@h:1?x=@"),
            Some("redis://<redacted>@h:1?x=@".into())
        );
    }
}
