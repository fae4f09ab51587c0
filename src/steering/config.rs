//! `[steering]`: HLS content steering across the regional nodes of a tier.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default `TTL` of a steering manifest: how long a player waits before asking again.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// Default time between two `/readyz` probes of each peer.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// Default timeout of one probe.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Most pathways a config may name.
pub const MAX_PATHWAYS: usize = 16;

/// One pathway: a regional node (or the CDN in front of it) that serves every stream.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Pathway {
    /// The `PATHWAY-ID`: 1-32 characters of `[A-Za-z0-9_.-]`.
    pub id: String,
    /// The public base URL viewers reach this node at, e.g. `https://eu.example.com`:
    /// its variants are `{base}/live/{stream}/…`.
    pub base: String,
    /// What peers probe for health (default `{base}/readyz`); e.g. the node's internal
    /// address when `base` is a CDN.
    #[serde(default)]
    pub probe: Option<String>,
}

/// Content steering settings. With no `pathways`, playlists carry no steering.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SteeringConfig {
    /// The tier's pathways, in order of preference; every node of the tier lists the same.
    pub pathways: Vec<Pathway>,
    /// This node's own pathway `id` (its variants stay relative URIs); empty when this
    /// node is not one of them (an origin behind the edges, or a steering-only server).
    pub self_id: String,
    /// Base URL of the node that answers steering manifests (`SERVER-URI` is
    /// `{server}/live/{stream}/steering.json`); empty: the node serving the playlist.
    /// Point it at a name balanced over ready nodes so steering outlives any one node.
    pub server: String,
    /// `TTL` of the steering manifest (whole seconds).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Time between two probes of each peer's `/readyz`.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// Timeout of one probe.
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
}

impl Default for SteeringConfig {
    fn default() -> Self {
        Self {
            pathways: Vec::new(),
            self_id: String::new(),
            server: String::new(),
            ttl: DEFAULT_TTL,
            probe_interval: DEFAULT_PROBE_INTERVAL,
            probe_timeout: DEFAULT_PROBE_TIMEOUT,
        }
    }
}

/// Whether `id` is a legal Pathway ID (the Content Steering spec's character set).
pub fn is_pathway_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl SteeringConfig {
    /// Whether steering is on.
    pub fn enabled(&self) -> bool {
        !self.pathways.is_empty()
    }

    /// The index of this node's own pathway.
    pub fn self_index(&self) -> Option<usize> {
        self.pathways.iter().position(|p| p.id == self.self_id)
    }

    /// Checks ids, URLs and times.
    ///
    /// # Errors
    /// The dotted key and what is wrong with it.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, r: &str| Err((format!("steering.{k}"), r.to_owned()));
        let url_ok = |u: &str| crate::upstream::config::is_base_url(u) && !u.ends_with('/');
        if self.pathways.len() > MAX_PATHWAYS {
            return bad("pathways", "at most 16 pathways");
        }
        for (i, p) in self.pathways.iter().enumerate() {
            if !is_pathway_id(&p.id) {
                return bad(
                    &format!("pathways[{i}].id"),
                    "1-32 characters of [A-Za-z0-9_.-]",
                );
            }
            if self.pathways[..i].iter().any(|q| q.id == p.id) {
                return bad(&format!("pathways[{i}].id"), "pathway ids must be unique");
            }
            if !url_ok(&p.base) {
                return bad(
                    &format!("pathways[{i}].base"),
                    "an http:// or https:// base URL, without query or trailing slash",
                );
            }
            if p.probe.as_deref().is_some_and(|u| !url_ok(u)) {
                return bad(
                    &format!("pathways[{i}].probe"),
                    "an http:// or https:// URL without query",
                );
            }
        }
        if !self.self_id.is_empty() && self.self_index().is_none() {
            return bad("self_id", "must be the id of one of steering.pathways");
        }
        if !self.server.is_empty() && !url_ok(&self.server) {
            return bad(
                "server",
                "an http:// or https:// base URL, without query or trailing slash",
            );
        }
        if self.ttl < Duration::from_secs(1)
            || self.ttl > Duration::from_secs(3600)
            || self.ttl.subsec_nanos() != 0
        {
            return bad("ttl", "whole seconds between 1s and 1h");
        }
        if self.probe_interval < Duration::from_millis(100)
            || self.probe_interval > Duration::from_secs(600)
        {
            return bad("probe_interval", "between 100ms and 10min");
        }
        if self.probe_timeout < Duration::from_millis(50)
            || self.probe_timeout > self.probe_interval
        {
            return bad("probe_timeout", "at least 50ms and at most probe_interval");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> SteeringConfig {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn pathways_parse_and_validate() {
        let c = parse(
            r#"
            pathways = [{ id = "eu", base = "https://eu.example.com" },
                        { id = "us", base = "https://us.example.com", probe = "http://10.0.0.2:8080/readyz" }]
            self_id = "eu"
            ttl = "30s"
            "#,
        );
        assert!(c.validate().is_ok());
        assert!(c.enabled());
        assert_eq!(c.self_index(), Some(0));
        assert_eq!(c.ttl, Duration::from_secs(30));
        assert_eq!(
            c.pathways[1].probe.as_deref(),
            Some("http://10.0.0.2:8080/readyz")
        );
        let d = SteeringConfig::default();
        assert!(!d.enabled() && d.validate().is_ok());
        assert_eq!(d.ttl, DEFAULT_TTL);
    }

    #[test]
    fn shipped_config_documents_the_defaults() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/estuary.toml");
        let s = crate::config::Config::load(&path).unwrap().steering;
        let d = SteeringConfig::default();
        assert_eq!(
            (s.ttl, s.probe_interval, s.probe_timeout),
            (d.ttl, d.probe_interval, d.probe_timeout)
        );
        assert!(s.pathways.is_empty() && s.self_id.is_empty() && s.server.is_empty());
    }

    #[test]
    fn errors_name_the_key() {
        let one = "pathways = [{ id = \"eu\", base = \"https://eu.example.com\" }]\n";
        for (extra, key) in [
            ("self_id = \"us\"", "steering.self_id"),
            ("ttl = \"1500ms\"", "steering.ttl"),
            ("server = \"eu.example.com\"", "steering.server"),
            ("probe_timeout = \"5s\"", "steering.probe_timeout"),
        ] {
            let e = parse(&format!("{one}{extra}")).validate().unwrap_err();
            assert_eq!(e.0, key, "{extra}");
        }
        let e = parse("pathways = [{ id = \"e u\", base = \"https://x\" }]")
            .validate()
            .unwrap_err();
        assert_eq!(e.0, "steering.pathways[0].id");
        let e = parse("pathways = [{ id = \"a\", base = \"https://x/\" }]")
            .validate()
            .unwrap_err();
        assert_eq!(e.0, "steering.pathways[0].base");
        let e = parse(
            "pathways = [{ id = \"a\", base = \"https://x\" }, { id = \"a\", base = \"https://y\" }]",
        )
        .validate()
        .unwrap_err();
        assert_eq!(e.0, "steering.pathways[1].id");
        assert!(toml::from_str::<SteeringConfig>("pathways = [{ id = \"a\" }]").is_err());
    }
}
