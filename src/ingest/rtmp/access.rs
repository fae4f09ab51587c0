//! Who may publish over RTMP: the stream key's name and `key`, the allow-list and
//! per-stream keys, or the publish webhook's answer.

use std::net::SocketAddr;

use super::{Shared, APP};
use crate::config::Config;

impl Shared {
    pub(super) fn refused(&self, reason: &'static str, detail: &str) {
        tracing::warn!(reason, detail, "publisher refused");
        self.rejected.with_label_values(&[reason]).inc();
    }

    /// Whether `name` may publish over RTMP with `key` (the `?key=` of the stream key):
    /// the publish webhook's answer when one is configured, else the allow-list.
    pub(super) async fn authorize(
        &self,
        name: &str,
        key: Option<&str>,
        (protocol, remote): (&'static str, SocketAddr),
    ) -> Result<(), &'static str> {
        use crate::auth::PublishVerdict;
        if self.draining.is_draining() {
            return Err("draining");
        }
        if self.hub.banned(name).is_some() {
            return Err("banned");
        }
        let verdict = match &self.hooks {
            Some(h) => {
                let call = crate::auth::PublishCall {
                    action: "publish",
                    protocol,
                    stream: name,
                    streamid: None,
                    key,
                    remote_addr: remote,
                };
                h.publish(&call).await
            }
            None => None,
        };
        let cfg = self.cfg.load();
        match verdict {
            None => authorize(&cfg, name, key)?,
            Some(PublishVerdict::Deny(why)) => return Err(why),
            // The hook's key replaces the configured one; without one, a configured
            // stream keeps its own rules and an unconfigured one is open.
            Some(PublishVerdict::Allow { rtmp_key, .. }) => match rtmp_key {
                Some(want)
                    if key.is_some_and(|k| constant_time_eq(want.as_bytes(), k.as_bytes())) => {}
                Some(_) => return Err("bad_key"),
                None if cfg.streams.contains_key(name) => authorize(&cfg, name, key)?,
                None => {}
            },
        }
        // Checked again when the session claims the stream; this only spares a pipeline.
        if self.hub.is_live(name) {
            return Err("already_publishing");
        }
        Ok(())
    }
}

/// The stream name and key in a publish request: app `live` with stream key
/// `NAME[?key=KEY]` (OBS's Server and Stream key fields, ffmpeg's `.../live/NAME`), or
/// app `live/NAME` with an empty stream key.
pub(super) fn target(
    app: &str,
    stream_key: &str,
) -> Result<(String, Option<String>), &'static str> {
    let app = app.split('?').next().unwrap_or_default().trim_matches('/');
    let (path, query) = match stream_key.split_once('?') {
        Some((p, q)) => (p, q),
        None => (stream_key, ""),
    };
    let name = match app.split_once('/') {
        None if app == APP => path,
        Some((a, n)) if a == APP && path.is_empty() => n,
        _ => return Err("bad_app"),
    };
    if crate::ingest::streamid::validate_name(name).is_err() {
        return Err("bad_stream_key");
    }
    let key = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "key")
        .map(|(_, v)| v.into_owned());
    Ok((name.to_owned(), key))
}

/// The allow-list and per-stream key. A stream with an SRT passphrase but no
/// `rtmp_key` is closed to RTMP, so RTMP never opens what SRT protects.
fn authorize(cfg: &Config, name: &str, key: Option<&str>) -> Result<(), &'static str> {
    let Some(stream) = cfg.streams.get(name) else {
        return if cfg.allow_unknown_streams {
            Ok(())
        } else {
            Err("unknown_stream")
        };
    };
    match (&stream.rtmp_key, key) {
        (Some(want), Some(got)) if constant_time_eq(want.as_bytes(), got.as_bytes()) => Ok(()),
        (Some(_), _) => Err("bad_key"),
        (None, _) if stream.passphrase.is_some() => Err("rtmp_not_allowed"),
        (None, _) => Ok(()),
    }
}

/// Compares secrets without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(target("live", "demo"), Ok(("demo".into(), None)));
        assert_eq!(
            target("live", "demo?key=s3cr%2Bet"),
            Ok(("demo".into(), Some("s3cr+et".into())))
        );
        assert_eq!(target("live/", "demo"), Ok(("demo".into(), None)));
        assert_eq!(target("live/demo", ""), Ok(("demo".into(), None)));
        assert_eq!(target("other", "demo"), Err("bad_app"));
        assert_eq!(target("live/demo", "x"), Err("bad_app"));
        assert_eq!(target("live", ""), Err("bad_stream_key"));
        assert_eq!(target("live", "a b"), Err("bad_stream_key"));
    }

    #[test]
    fn authorization() {
        let cfg = Config::from_toml(
            r#"
            [streams.open]
            [streams.keyed]
            rtmp_key = "right-key-1"
            [streams.srt_only]
            passphrase = "0123456789abc"
            "#,
        )
        .unwrap();
        assert_eq!(authorize(&cfg, "open", None), Ok(()));
        assert_eq!(authorize(&cfg, "open", Some("anything")), Ok(()));
        assert_eq!(authorize(&cfg, "keyed", Some("right-key-1")), Ok(()));
        assert_eq!(
            authorize(&cfg, "keyed", Some("wrong-key-1")),
            Err("bad_key")
        );
        assert_eq!(authorize(&cfg, "keyed", None), Err("bad_key"));
        assert_eq!(authorize(&cfg, "srt_only", None), Err("rtmp_not_allowed"));
        assert_eq!(authorize(&cfg, "nope", None), Err("unknown_stream"));
        let mut open = cfg.clone();
        open.allow_unknown_streams = true;
        assert_eq!(authorize(&open, "nope", None), Ok(()));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
