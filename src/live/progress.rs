//! What a live publish session has done so far, and who publishes: shared by the ingest
//! loop, the packaging task, the stream API and the admin API.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        OnceLock,
    },
    time::{Instant, SystemTime},
};

use tokio_util::sync::CancellationToken;

/// What a publish session has done so far, shared by its ingest loop and its packaging
/// task (across pipeline rebuilds).
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes pushed into the pipeline.
    pub input_bytes: AtomicU64,
    /// Media chunks (parts) published, over every rendition.
    pub chunks: AtomicU64,
    /// When the session started (monotonic, and wall clock for the API).
    pub started: OnceLock<(Instant, SystemTime)>,
    /// Who publishes, set by the ingest that accepted them.
    pub publisher: OnceLock<PublisherMeta>,
    /// SRT link statistics (zero for other protocols).
    pub srt: SrtStats,
    /// Cancelled by an operator's kick (`POST /admin/publishers/{stream}/kick`): the
    /// ingest loop then closes the publisher's connection and ends the session as if it
    /// had left, so the stream's playlists stay and continue on a reconnect.
    pub kick: CancellationToken,
}

impl Progress {
    /// The publisher's statistics as the stream and admin APIs show them: protocol,
    /// remote address, start, uptime, bytes, average bit rate, parts, and for SRT the
    /// link's round-trip time, loss, retransmissions, drops and negotiated latency.
    pub fn stats_json(&self) -> serde_json::Value {
        let (t0, since) = self
            .started
            .get()
            .copied()
            .unwrap_or((Instant::now(), SystemTime::now()));
        let uptime = t0.elapsed().as_secs_f64();
        let bytes = self.input_bytes.load(Relaxed);
        let meta = self.publisher.get();
        let mut v = serde_json::json!({
            "protocol": meta.map(|m| m.protocol),
            "remote": meta.map(|m| m.remote.to_string()),
            "since": humantime::format_rfc3339_millis(since).to_string(),
            "uptime_s": (uptime * 10.0).round() / 10.0,
            "bytes": bytes,
            "bitrate_kbps": if uptime > 0.0 { (bytes as f64 * 8.0 / uptime / 1000.0).round() } else { 0.0 },
            "parts": self.chunks.load(Relaxed),
        });
        if meta.is_some_and(|m| m.protocol == "srt") {
            v["srt"] = serde_json::json!({
                "rtt_ms": self.srt.rtt_us.load(Relaxed) as f64 / 1000.0,
                "lost": self.srt.lost.load(Relaxed),
                "retransmitted": self.srt.retransmitted.load(Relaxed),
                "dropped": self.srt.dropped.load(Relaxed),
                "latency_ms": self.srt.latency_ms.load(Relaxed),
            });
        }
        v
    }
}

/// The publisher of a session.
#[derive(Debug, Clone)]
pub struct PublisherMeta {
    /// `srt`, `rtmp` or `rtmps`.
    pub protocol: &'static str,
    /// Remote address.
    pub remote: std::net::SocketAddr,
}

/// An SRT publisher's link, as its socket reports it.
#[derive(Debug, Default)]
pub struct SrtStats {
    /// Smoothed round-trip time, microseconds.
    pub rtt_us: AtomicU64,
    /// Packets lost on the way (receiver side).
    pub lost: AtomicU64,
    /// Retransmitted packets received.
    pub retransmitted: AtomicU64,
    /// Packets dropped as too late.
    pub dropped: AtomicU64,
    /// Negotiated receive latency, milliseconds.
    pub latency_ms: AtomicU64,
}
