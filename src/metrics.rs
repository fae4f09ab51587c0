//! Metric families, registered on a registry passed down from `main` (no globals).

use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Every metric the media path records.
#[derive(Clone)]
pub struct Metrics {
    /// Publishers connected now.
    pub publishers_active: IntGauge,
    /// SRT callers refused at the handshake, by reason.
    pub srt_rejected: IntCounterVec,
    /// Payload bytes received over SRT, by stream.
    pub ingest_bytes: IntCounterVec,
    /// SRT round-trip time in milliseconds, by stream.
    pub srt_rtt_ms: IntGaugeVec,
    /// SRT packets lost (receiver side), by stream.
    pub srt_lost_packets: IntCounterVec,
    /// SRT retransmitted packets received, by stream.
    pub srt_retransmits: IntCounterVec,
    /// SRT packets the receiver discarded, by stream (with too-late drop off: copies that
    /// came after their packet was delivered, or a full buffer).
    pub srt_dropped_packets: IntCounterVec,
    /// SRT messages delivered over 50 ms past their play time, by stream.
    pub srt_late_packets: IntCounterVec,
    /// Streams torn down, by reason.
    pub stream_errors: IntCounterVec,
    /// Parts published, by stream and rendition.
    pub parts: IntCounterVec,
    /// Segments published, by stream and rendition.
    pub segments: IntCounterVec,
    /// Seconds from a part's last media arriving at ingest to the part being served, by
    /// rendition: for an encoded rung this is also its decode + queue + encode delay.
    pub part_latency: HistogramVec,
    /// Media seconds produced per wall second over the last few seconds, by stream and
    /// rendition; below 1 the encoder cannot keep up.
    pub realtime_factor: GaugeVec,
    /// Frames a rung dropped because its encoder fell behind.
    pub frames_dropped: IntCounterVec,
    /// CMAF chunks dropped between a pipeline and its packager because the packager fell
    /// behind (the queue between them is bounded).
    pub chunks_dropped: IntCounterVec,
    /// Segments cut at `hls.max_segment` because no keyframe came in time (a GOP longer
    /// than the bound, or none at all), by stream and rendition.
    pub segments_cut: IntCounterVec,
    /// HTTP requests by route and status.
    pub http_requests: IntCounterVec,
    /// HTTP connections the node closed, by reason (`idle`, `shed` to make room at the
    /// cap, `limit` when every connection was busy).
    pub http_closed: IntCounterVec,
    /// Seconds a blocking request waited, by route.
    pub http_blocking_wait: HistogramVec,
    /// Cache lookups, by result (`hit`, `miss`).
    pub cache_lookups: IntCounterVec,
    /// Bytes held by the media cache.
    pub cache_bytes: IntGauge,
    /// Cache entries evicted for size before their expiry.
    pub cache_evicted: IntCounterVec,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone()))
        .expect("metric names are unique and valid");
    c
}

impl Metrics {
    /// Creates the families and registers them on `r`.
    pub fn register(r: &Registry) -> Self {
        let cv = |name: &str, help: &str, labels: &[&str]| {
            reg(
                r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid"),
            )
        };
        Self {
            publishers_active: reg(
                r,
                IntGauge::new("estuary_publishers_active", "Publishers connected now").expect("valid"),
            ),
            srt_rejected: cv(
                "estuary_srt_rejected_total",
                "SRT callers refused at the handshake",
                &["reason"],
            ),
            ingest_bytes: cv(
                "estuary_ingest_bytes_total",
                "Payload bytes received over SRT",
                &["stream"],
            ),
            srt_rtt_ms: reg(
                r,
                IntGaugeVec::new(
                    Opts::new("estuary_srt_rtt_milliseconds", "SRT round-trip time"),
                    &["stream"],
                )
                .expect("valid"),
            ),
            srt_lost_packets: cv(
                "estuary_srt_lost_packets_total",
                "SRT data packets detected lost by the receiver",
                &["stream"],
            ),
            srt_retransmits: cv(
                "estuary_srt_retransmitted_packets_total",
                "SRT retransmitted data packets received",
                &["stream"],
            ),
            srt_dropped_packets: cv(
                "estuary_srt_dropped_packets_total",
                "SRT data packets the receiver discarded (a retransmitted copy after delivery, or a full buffer)",
                &["stream"],
            ),
            srt_late_packets: cv(
                "estuary_srt_late_packets_total",
                "SRT messages delivered over 50 ms past their play time (a retransmission outlasted srt.latency)",
                &["stream"],
            ),
            stream_errors: cv(
                "estuary_stream_errors_total",
                "Streams refused or torn down after they were accepted",
                &["reason"],
            ),
            parts: cv(
                "estuary_parts_published_total",
                "LL-HLS parts published",
                &["stream", "rendition"],
            ),
            segments: cv(
                "estuary_segments_published_total",
                "Media segments published",
                &["stream", "rendition"],
            ),
            part_latency: reg(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "estuary_part_publish_latency_seconds",
                        "From the arrival at ingest of a part's last media to the part being servable",
                    )
                    .buckets(vec![
                        0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0,
                    ]),
                    &["rendition"],
                )
                .expect("valid"),
            ),
            realtime_factor: reg(
                r,
                GaugeVec::new(
                    Opts::new(
                        "estuary_rendition_realtime_factor",
                        "Media seconds produced per wall second (below 1: falling behind)",
                    ),
                    &["stream", "rendition"],
                )
                .expect("valid"),
            ),
            frames_dropped: cv(
                "estuary_frames_dropped_total",
                "Frames dropped before an encoder that fell behind",
                &["stream", "rendition"],
            ),
            chunks_dropped: cv(
                "estuary_media_chunks_dropped_total",
                "CMAF chunks dropped because the packager fell behind (bounded queue)",
                &["stream", "rendition"],
            ),
            segments_cut: cv(
                "estuary_segments_cut_total",
                "Segments cut at hls.max_segment without a keyframe (GOP too long)",
                &["stream", "rendition"],
            ),
            http_closed: cv(
                "estuary_http_connections_closed_total",
                "HTTP connections closed by the node, by reason",
                &["reason"],
            ),
            http_requests: cv(
                "estuary_http_requests_total",
                "HTTP requests",
                &["route", "status"],
            ),
            http_blocking_wait: reg(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "estuary_http_blocking_wait_seconds",
                        "Time blocking playlist reloads and preload-hinted parts waited",
                    )
                    .buckets(vec![0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4]),
                    &["route"],
                )
                .expect("valid"),
            ),
            cache_lookups: cv(
                "estuary_cache_lookups_total",
                "Media cache lookups",
                &["result"],
            ),
            cache_bytes: reg(
                r,
                IntGauge::new("estuary_cache_bytes", "Bytes held by the media cache").expect("valid"),
            ),
            cache_evicted: cv(
                "estuary_cache_evicted_total",
                "Media cache entries removed, by cause",
                &["cause"],
            ),
        }
    }
}
