//! Log setup: `RUST_LOG` filtering, and a rate limit on what outside input makes
//! libraries log.
//!
//! Junk UDP on the SRT port makes srt-protocol log one WARN line per packet; an attacker
//! could fill the disk through the journal. Events from other crates are let through at
//! most once a second per (target, level); what is held back is counted and summed up
//! in one line every [`SUMMARY_EVERY`]. Estuary's own events are never limited (its
//! per-event paths have metrics and rate-limited warnings of their own).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use tracing::Metadata;
use tracing_subscriber::fmt::{writer::EitherWriter, MakeWriter};

/// How often held-back lines are summed up.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);
/// At most one line per kind in this window.
const WINDOW: Duration = Duration::from_secs(1);
/// Most kinds tracked; past that, unknown kinds are let through (bounded memory).
const MAX_KINDS: usize = 1024;

/// Counts and limits library log lines.
#[derive(Debug, Default)]
pub struct RateLimit {
    last: Mutex<HashMap<(String, tracing::Level), Instant>>,
    suppressed: AtomicU64,
}

impl RateLimit {
    /// Whether an event may be written now.
    pub fn allow(&self, meta: &Metadata<'_>) -> bool {
        if !meta.is_event() || meta.target().starts_with("estuary") {
            return true;
        }
        let mut last = self.last.lock().expect("not poisoned");
        let now = Instant::now();
        let key = (meta.target().to_owned(), *meta.level());
        match last.get_mut(&key) {
            Some(t) if now.duration_since(*t) < WINDOW => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                false
            }
            Some(t) => {
                *t = now;
                true
            }
            None => {
                if last.len() < MAX_KINDS {
                    last.insert(key, now);
                }
                true
            }
        }
    }

    /// Lines held back since the last call.
    pub fn take_suppressed(&self) -> u64 {
        self.suppressed.swap(0, Ordering::Relaxed)
    }
}

/// stderr for the events the limit lets through, a sink for the rest. The fmt layer asks
/// for a writer once per event it writes (filters may be asked more than once per event,
/// which would count one event twice).
struct LimitedStderr(Arc<RateLimit>);

impl<'a> MakeWriter<'a> for LimitedStderr {
    type Writer = EitherWriter<std::io::Stderr, std::io::Sink>;

    fn make_writer(&'a self) -> Self::Writer {
        EitherWriter::A(std::io::stderr())
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        if self.0.allow(meta) {
            EitherWriter::A(std::io::stderr())
        } else {
            EitherWriter::B(std::io::sink())
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (the default; journald adds its own timestamps).
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`, `span`,
    /// `spans`), for log shippers such as Vector, Loki or Elasticsearch.
    Json,
}

/// Installs the global subscriber (stderr, `RUST_LOG` or `info`) and returns the limiter,
/// whose count [`report`] logs. The limit applies to both formats.
pub fn init(format: LogFormat) -> Arc<RateLimit> {
    let limit = Arc::new(RateLimit::default());
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LimitedStderr(limit.clone()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().with_current_span(true).init(),
    }
    limit
}

/// Logs how many lines were held back, every [`SUMMARY_EVERY`], until cancelled.
pub async fn report(limit: Arc<RateLimit>, token: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(SUMMARY_EVERY);
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        let n = limit.take_suppressed();
        if n > 0 {
            tracing::warn!(
                suppressed = n,
                "library log lines held back (at most one a second per kind; junk input?)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_per_kind() {
        static CS: tracing::callsite::DefaultCallsite = {
            static META: Metadata<'static> = tracing::metadata!(
                name: "e",
                target: "srt_protocol::listener",
                level: tracing::Level::WARN,
                fields: &[],
                callsite: &CS,
                kind: tracing::metadata::Kind::EVENT,
            );
            tracing::callsite::DefaultCallsite::new(&META)
        };
        let meta = tracing::Callsite::metadata(&CS);
        let r = RateLimit::default();
        assert!(r.allow(meta));
        for _ in 0..100 {
            assert!(!r.allow(meta));
        }
        assert_eq!(r.take_suppressed(), 100);
        assert_eq!(r.take_suppressed(), 0);
    }
}
