//! Upstream metric families, registered on the node's registry (no globals).

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// What the edge tier records.
#[derive(Clone)]
pub struct UpstreamMetrics {
    /// Upstream requests by kind (`multivariant`, `playlist`, `blocking`, `hint`,
    /// `part`, `segment`, `init`) and result (`ok`, `not_found`, `status`, `timeout`,
    /// `connect`, `body`, `malformed`, `url`).
    pub requests: IntCounterVec,
    /// Body bytes pulled from upstream.
    pub bytes: IntCounter,
    /// Objects stored from upstream, by kind (`part`, `segment`, `init`); a segment
    /// joined from parts already held counts as `segment_joined` and costs no request.
    pub objects: IntCounterVec,
    /// Upstream answers the edge could not use, by what they were (`multivariant`,
    /// `playlist`): not a playlist, malformed, or inconsistent with what came before.
    pub rejected: IntCounterVec,
    /// Followers running now.
    pub followers_active: IntGauge,
    /// Moves to another origin (or a fresh start on the same one) after a stall.
    pub failovers: IntCounter,
    /// Seconds from the upstream playlist answer that showed new media to the edge
    /// publishing it (fetching any part it did not hold yet).
    pub edge_latency: Histogram,
}

impl UpstreamMetrics {
    /// Creates the families and registers them on `r`.
    pub fn register(r: &Registry) -> Self {
        fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
            r.register(Box::new(c.clone()))
                .expect("metric names are unique and valid");
            c
        }
        Self {
            requests: reg(
                r,
                IntCounterVec::new(
                    Opts::new("estuary_upstream_requests_total", "Upstream requests"),
                    &["kind", "result"],
                )
                .expect("valid"),
            ),
            bytes: reg(
                r,
                IntCounter::new(
                    "estuary_upstream_bytes_total",
                    "Body bytes pulled from upstream",
                )
                .expect("valid"),
            ),
            objects: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "estuary_upstream_objects_total",
                        "Media objects stored from upstream (each once)",
                    ),
                    &["kind"],
                )
                .expect("valid"),
            ),
            rejected: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "estuary_upstream_rejected_total",
                        "Upstream answers the edge could not use",
                    ),
                    &["what"],
                )
                .expect("valid"),
            ),
            followers_active: reg(
                r,
                IntGauge::new(
                    "estuary_upstream_followers_active",
                    "Renditions followed from upstream now",
                )
                .expect("valid"),
            ),
            failovers: reg(
                r,
                IntCounter::new(
                    "estuary_upstream_failovers_total",
                    "Moves to the next origin after a stall",
                )
                .expect("valid"),
            ),
            edge_latency: reg(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "estuary_upstream_edge_latency_seconds",
                        "From an upstream playlist answer with new media to the edge publishing it",
                    )
                    .buckets(vec![
                        0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0,
                    ]),
                )
                .expect("valid"),
            ),
        }
    }
}
