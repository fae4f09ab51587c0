//! HLS content steering across the tier's regional nodes (RFC 8216bis §4.4.6.6 and the
//! Content Steering spec).
//!
//! # Layout
//! - [`config`]: `[steering]`: the pathways, this node's own, the manifest's server and TTL.
//! - [`playlist`]: the multivariant playlist with every variant once per pathway.
//! - [`probe`]: the health of the peers, from their `/readyz`.
//!
//! Every node that serves a viewer's multivariant playlist adds the steering from its own
//! config, whether the stream is published there or pulled from an origin: the stored
//! playlist is plain (an edge drops the steering of the playlist it pulls, and a node
//! gives none to a pulling node), and the pathways are added as it is served, with the
//! viewer's token in each URI. The node also answers the steering manifest
//! (`/live/{stream}/steering.json`): `PATHWAY-PRIORITY` lists the healthy pathways first
//! (the viewer's current one, then this node's own, then the configured order), then the
//! draining ones, then the failing ones.

pub mod config;
pub mod playlist;
pub mod probe;

use std::sync::{
    atomic::{AtomicU8, Ordering},
    Arc,
};

pub use config::{Pathway, SteeringConfig};
use playlist::PathwayUris;

use crate::{auth::carry, drain::Drain};

/// A pathway's health as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    /// Ready (`/readyz` 200), or not probed yet.
    Up = 0,
    /// Draining (`/readyz` 503 "draining"): it serves its viewers but wants no new ones.
    Draining = 1,
    /// Unready or unreachable on consecutive probes.
    Down = 2,
}

impl Health {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Health::Up,
            1 => Health::Draining,
            _ => Health::Down,
        }
    }

    /// The label value of the metric.
    pub fn label(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Draining => "draining",
            Health::Down => "down",
        }
    }
}

/// The pathways in order of priority: healthy before draining before failing; among
/// equals the viewer's `current` pathway, then `own`, then the configured order.
pub fn order(
    ids: &[&str],
    health: &[Health],
    own: Option<usize>,
    current: Option<&str>,
) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..ids.len()).collect();
    idx.sort_by_key(|&i| {
        let pref = if current == Some(ids[i]) {
            0
        } else if own == Some(i) {
            1
        } else {
            2
        };
        (health[i], pref, i)
    });
    idx
}

/// A viewer's token and how it came (see [`carry`]).
#[derive(Debug, Clone, Copy)]
pub struct Token<'a> {
    /// `name=value` for a query string.
    pub pair: &'a str,
    /// The token as a path segment (`/token/{segment}/live/…`).
    pub segment: &'a str,
    /// Where the viewer's request had it.
    pub source: carry::Source,
}

/// Content steering of this node: config, the peers' health and the drain switch.
/// Cloning shares the state.
#[derive(Clone)]
pub struct Steering {
    cfg: Arc<SteeringConfig>,
    health: Arc<[AtomicU8]>,
    drain: Drain,
}

impl Steering {
    /// The steering of `cfg`; `None` when it names no pathway.
    pub fn new(cfg: &SteeringConfig, drain: Drain) -> Option<Self> {
        cfg.enabled().then(|| Self {
            health: cfg.pathways.iter().map(|_| AtomicU8::new(0)).collect(),
            cfg: Arc::new(cfg.clone()),
            drain,
        })
    }

    /// The config.
    pub fn config(&self) -> &SteeringConfig {
        &self.cfg
    }

    /// The health of pathway `i`: this node's own follows its drain switch.
    pub fn health(&self, i: usize) -> Health {
        if Some(i) == self.cfg.self_index() {
            return if self.drain.is_draining() {
                Health::Draining
            } else {
                Health::Up
            };
        }
        Health::from_u8(self.health[i].load(Ordering::Relaxed))
    }

    fn set_health(&self, i: usize, h: Health) {
        self.health[i].store(h as u8, Ordering::Relaxed);
    }

    /// Pathway ids in order of priority for a viewer on `current`.
    pub fn priority(&self, current: Option<&str>) -> Vec<&str> {
        let ids: Vec<&str> = self.cfg.pathways.iter().map(|p| p.id.as_str()).collect();
        let health: Vec<Health> = (0..ids.len()).map(|i| self.health(i)).collect();
        order(&ids, &health, self.cfg.self_index(), current)
            .into_iter()
            .map(|i| ids[i])
            .collect()
    }

    /// The steering manifest (JSON): "VERSION" 1, "TTL" in seconds, "RELOAD-URI" and
    /// "PATHWAY-PRIORITY" (Content Steering spec, "Steering Manifest").
    pub fn manifest(&self, current: Option<&str>, reload_uri: &str) -> String {
        serde_json::json!({
            "VERSION": 1,
            "TTL": self.cfg.ttl.as_secs(),
            "RELOAD-URI": reload_uri,
            "PATHWAY-PRIORITY": self.priority(current),
        })
        .to_string()
    }

    /// The plain multivariant playlist of `stream` with the pathways, for a viewer with
    /// `token`. A query token is then carried into every URI by the caller, as in any
    /// playlist; a path or cookie token is written here into the URIs that leave this
    /// node (a cookie does not follow a viewer to another host, so it goes as a query).
    pub fn playlist(&self, plain: &str, stream: &str, token: Option<Token<'_>>) -> String {
        let own = self.cfg.self_index();
        let (path_prefix, pair) = match token {
            Some(t) if t.source == carry::Source::Path => {
                (format!("/{}/{}", carry::PATH_PREFIX, t.segment), None)
            }
            Some(t) if t.source == carry::Source::Cookie => (String::new(), Some(t.pair)),
            _ => (String::new(), None),
        };
        let pathways: Vec<PathwayUris> = self
            .cfg
            .pathways
            .iter()
            .enumerate()
            .map(|(i, p)| PathwayUris {
                id: p.id.clone(),
                prefix: if Some(i) == own {
                    String::new()
                } else {
                    format!("{}{path_prefix}/live/{stream}/", p.base)
                },
                pair: pair.filter(|_| Some(i) != own).map(str::to_owned),
            })
            .collect();
        let server = if self.cfg.server.is_empty() {
            "steering.json".to_owned()
        } else {
            let mut u = format!(
                "{}{path_prefix}/live/{stream}/steering.json",
                self.cfg.server
            );
            if let Some(p) = pair {
                u.push('?');
                u.push_str(p);
            }
            u
        };
        let initial = self.priority(None)[0];
        playlist::with_pathways(plain, &server, initial, &pathways)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steering(self_id: &str, server: &str) -> Steering {
        let cfg: SteeringConfig = toml::from_str(&format!(
            r#"
            pathways = [{{ id = "a", base = "http://a.example" }},
                        {{ id = "b", base = "http://b.example" }},
                        {{ id = "c", base = "http://c.example:8080" }}]
            self_id = "{self_id}"
            server = "{server}"
            ttl = "5s"
            "#
        ))
        .unwrap();
        cfg.validate().unwrap();
        Steering::new(&cfg, Drain::default()).unwrap()
    }

    #[test]
    fn draining_and_failing_pathways_go_last() {
        use Health::*;
        let ids = ["a", "b", "c"];
        assert_eq!(order(&ids, &[Up, Up, Up], None, None), [0, 1, 2]);
        assert_eq!(order(&ids, &[Up, Up, Up], Some(2), None), [2, 0, 1]);
        assert_eq!(order(&ids, &[Up, Up, Up], Some(2), Some("b")), [1, 2, 0]);
        assert_eq!(
            order(&ids, &[Down, Draining, Up], None, Some("a")),
            [2, 1, 0]
        );
        assert_eq!(order(&ids, &[Draining, Up, Up], Some(0), None), [1, 2, 0]);

        let s = steering("b", "");
        assert_eq!(s.priority(None), ["b", "a", "c"]);
        s.set_health(0, Down);
        assert_eq!(s.priority(Some("a")), ["b", "c", "a"]);
        s.drain.start();
        assert_eq!(s.priority(None), ["c", "b", "a"]);
        let m: serde_json::Value =
            serde_json::from_str(&s.manifest(None, "steering.json")).unwrap();
        assert_eq!(
            m,
            serde_json::json!({"VERSION": 1, "TTL": 5, "RELOAD-URI": "steering.json",
                               "PATHWAY-PRIORITY": ["c", "b", "a"]})
        );
        assert!(Steering::new(&SteeringConfig::default(), Drain::default()).is_none());
    }

    const PLAIN: &str = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nsrc/index.m3u8\n";

    fn uris(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn tokens_follow_the_viewer_to_every_pathway() {
        let s = steering("a", "");
        let out = s.playlist(PLAIN, "demo", None);
        assert!(
            out.contains("#EXT-X-CONTENT-STEERING:SERVER-URI=\"steering.json\",PATHWAY-ID=\"a\"\n"),
            "{out}"
        );
        assert_eq!(
            uris(&out),
            [
                "src/index.m3u8",
                "http://b.example/live/demo/src/index.m3u8",
                "http://c.example:8080/live/demo/src/index.m3u8"
            ]
        );
        let tok = |source| Token {
            pair: "__token__=x%2Fy",
            segment: "x%2Fy",
            source,
        };
        let path = s.playlist(PLAIN, "demo", Some(tok(carry::Source::Path)));
        assert_eq!(
            uris(&path)[1],
            "http://b.example/token/x%2Fy/live/demo/src/index.m3u8"
        );
        let cookie = s.playlist(PLAIN, "demo", Some(tok(carry::Source::Cookie)));
        assert_eq!(uris(&cookie)[0], "src/index.m3u8");
        assert_eq!(
            uris(&cookie)[1],
            "http://b.example/live/demo/src/index.m3u8?__token__=x%2Fy"
        );
        // A query token is carried afterwards, into SERVER-URI too.
        let query = carry::carry(
            &s.playlist(PLAIN, "demo", Some(tok(carry::Source::Query))),
            "__token__=x%2Fy",
        );
        assert!(
            query.contains("SERVER-URI=\"steering.json?__token__=x%2Fy\""),
            "{query}"
        );
        assert_eq!(
            uris(&query)[2],
            "http://c.example:8080/live/demo/src/index.m3u8?__token__=x%2Fy"
        );

        // A steering server elsewhere; a node that is no pathway starts viewers on the
        // first healthy one.
        let s = steering("", "https://steer.example");
        let out = s.playlist(PLAIN, "demo", Some(tok(carry::Source::Path)));
        assert!(out.contains("SERVER-URI=\"https://steer.example/token/x%2Fy/live/demo/steering.json\",PATHWAY-ID=\"a\""), "{out}");
        assert_eq!(
            uris(&out)[0],
            "http://a.example/token/x%2Fy/live/demo/src/index.m3u8"
        );
        s.set_health(0, Health::Draining);
        assert!(s
            .playlist(PLAIN, "demo", None)
            .contains("PATHWAY-ID=\"b\"\n"));
    }
}
