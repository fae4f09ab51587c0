//! `[upstream]`: where an edge pulls streams it has no publisher for, and how.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

/// Default time a follower runs with no viewer request for its rendition.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(60);
/// Default time without a new part before the follower moves to the next origin.
pub const DEFAULT_FAILOVER_AFTER: Duration = Duration::from_secs(3);
/// Default timeout of a non-blocking upstream request (playlist, segment, init).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Default largest upstream body accepted, in bytes.
pub const DEFAULT_MAX_BODY: u64 = 32 * 1024 * 1024;
/// Default lease of an origin registration in Redis (refreshed at a third of it).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// Whether `o` is an `http://` or `https://` base URL without query or fragment.
pub fn is_base_url(o: &str) -> bool {
    let rest = o
        .strip_prefix("http://")
        .or_else(|| o.strip_prefix("https://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/') && !r.contains(['?', '#', ' ']))
}

/// Upstream (edge tier) settings. With no `origins` the node only serves what is
/// published to it.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Ordered base URLs of origins (another Estuary node, an edge, or any LL-HLS
    /// server), under which `{base}/{stream}/index.m3u8` is the multivariant playlist,
    /// e.g. `http://origin-a:8080/live`. The first is preferred; the next is tried after
    /// `failover_after` without a new part.
    pub origins: Vec<String>,
    /// Shared secret sent upstream as `Authorization: Bearer <secret>`.
    pub secret: Option<String>,
    /// Origin side: refuse HLS requests (playlists and media) without the secret, for an
    /// origin that only edges may pull from.
    pub require_secret: bool,
    /// PEM file of extra CA certificates trusted for `https://` origins (beside the
    /// system's).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain presented to `https://` origins that require one
    /// (with `client_key`).
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// A follower with no viewer request for this long stops pulling.
    #[serde(with = "humantime_serde")]
    pub idle: Duration,
    /// No new part from the current origin for this long: move to the next origin.
    #[serde(with = "humantime_serde")]
    pub failover_after: Duration,
    /// Timeout of a non-blocking upstream request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Speak HTTP/2 with prior knowledge (h2c) to `http://` origins; set false for an
    /// HTTP/1.1-only origin (a plain web server). `https://` origins negotiate by ALPN.
    pub cleartext_http2: bool,
    /// Largest body accepted from upstream, in bytes.
    pub max_body: u64,
    /// Redis URL for origin discovery: a node registers the streams published to it
    /// (stream → `advertise`, under a refreshed lease), and looks a stream up there
    /// before trying `origins`.
    pub redis: Option<String>,
    /// Base URL other nodes pull this node's streams from (like an `origins` entry);
    /// by default `http://{http.listen}/live` when that address is a specific one.
    pub advertise: Option<String>,
    /// Lease of a registration; it is refreshed every third of it while the stream is
    /// published, and removed when it ends.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            origins: Vec::new(),
            secret: None,
            require_secret: false,
            ca_file: None,
            client_cert: None,
            client_key: None,
            idle: DEFAULT_IDLE,
            failover_after: DEFAULT_FAILOVER_AFTER,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            cleartext_http2: true,
            max_body: DEFAULT_MAX_BODY,
            redis: None,
            advertise: None,
            lease: DEFAULT_LEASE,
        }
    }
}

impl UpstreamConfig {
    /// Checks ranges.
    ///
    /// # Errors
    /// `(key, reason)` naming the dotted key.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, r: &str| Err((format!("upstream.{k}"), r.to_owned()));
        let base_url_ok = is_base_url;
        for (i, o) in self.origins.iter().enumerate() {
            if !base_url_ok(o) {
                return bad(
                    &format!("origins[{i}]"),
                    "must be an http:// or https:// base URL without query",
                );
            }
        }
        if self.advertise.as_deref().is_some_and(|a| !base_url_ok(a)) {
            return bad(
                "advertise",
                "must be an http:// or https:// base URL without query",
            );
        }
        if self
            .redis
            .as_deref()
            .is_some_and(|r| !r.starts_with("redis://") && !r.starts_with("rediss://"))
        {
            return bad("redis", "must be a redis:// or rediss:// URL");
        }
        if self.lease < Duration::from_secs(2) || self.lease > Duration::from_secs(300) {
            return bad("lease", "must be between 2s and 5m");
        }
        if self.secret.as_deref().is_some_and(|s| {
            s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic()) || s.len() > 512
        }) {
            return bad("secret", "must be 1-512 printable ASCII characters");
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return bad(
                "client_cert",
                "upstream.client_cert and upstream.client_key go together",
            );
        }
        if self.require_secret && self.secret.is_none() {
            return bad("require_secret", "needs upstream.secret");
        }
        if self.idle < Duration::from_secs(1) || self.idle > Duration::from_secs(3600) {
            return bad("idle", "must be between 1s and 1h");
        }
        if self.failover_after < Duration::from_millis(200)
            || self.failover_after > Duration::from_secs(60)
        {
            return bad("failover_after", "must be between 200ms and 60s");
        }
        if self.request_timeout < Duration::from_millis(100)
            || self.request_timeout > Duration::from_secs(60)
        {
            return bad("request_timeout", "must be between 100ms and 60s");
        }
        if self.max_body < 64 * 1024 {
            return bad("max_body", "must be at least 64 KiB");
        }
        Ok(())
    }

    /// The origins with any trailing `/` removed.
    pub fn origin_bases(&self) -> Vec<String> {
        self.origins
            .iter()
            .map(|o| o.trim_end_matches('/').to_owned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> UpstreamConfig {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn defaults_and_durations() {
        let c = parse(
            "origins = [\"http://a:8080/live/\"]\nidle = \"90s\"\nfailover_after = \"1500ms\"",
        );
        assert_eq!(c.idle, Duration::from_secs(90));
        assert_eq!(c.failover_after, Duration::from_millis(1500));
        assert_eq!(c.origin_bases(), vec!["http://a:8080/live".to_owned()]);
        assert!(c.validate().is_ok());
        let d = UpstreamConfig::default();
        assert_eq!(d.idle, DEFAULT_IDLE);
        assert!(d.cleartext_http2 && d.origins.is_empty());
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("origins = [\"ftp://x\"]").validate().unwrap_err();
        assert_eq!(e.0, "upstream.origins[0]");
        let e = parse("require_secret = true").validate().unwrap_err();
        assert_eq!(e.0, "upstream.require_secret");
        let e = parse("failover_after = \"10ms\"").validate().unwrap_err();
        assert_eq!(e.0, "upstream.failover_after");
        let e = parse("secret = \"a b\"").validate().unwrap_err();
        assert_eq!(e.0, "upstream.secret");
        let e = parse("redis = \"http://x\"").validate().unwrap_err();
        assert_eq!(e.0, "upstream.redis");
        let e = parse("advertise = \"x:1\"").validate().unwrap_err();
        assert_eq!(e.0, "upstream.advertise");
        let e = parse("lease = \"1s\"").validate().unwrap_err();
        assert_eq!(e.0, "upstream.lease");
    }
}
