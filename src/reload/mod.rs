//! Live reload: `SIGHUP` or `POST /admin/reload` reads the config file again and puts
//! what can change live in force, without dropping a connection.
//!
//! - [`plan`]: which keys apply live and which need a restart.
//! - [`cap`]: connection caps that follow the config without closing connections.
//!
//! A file that does not parse or validate changes nothing: the running config stays, the
//! log line and the admin answer name the failing key. Components read the config in
//! force through [`SharedConfig`] (lock-free); those that keep state sized by it (the
//! connection caps, the interaction rooms) follow [`SharedConfig::subscribe`].

pub mod cap;
pub mod plan;

use std::{
    sync::{Arc, OnceLock},
    time::{SystemTime, UNIX_EPOCH},
};

use prometheus::{Gauge, IntCounterVec, IntGauge, Opts, Registry};

use crate::config::{Config, ConfigError, SharedConfig};

pub use cap::Cap;
pub use plan::Plan;

/// Reads the config again: the file, with the command line's overrides applied.
pub type Source = Arc<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// What an applied reload did (the `POST /admin/reload` answer).
#[derive(Debug, serde::Serialize)]
pub struct Report {
    /// The generation now in force (1 at start, +1 per reload that changed something).
    pub generation: u64,
    /// Keys now applied, and keys left for a restart.
    #[serde(flatten)]
    pub plan: Plan,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The node runs without a config file (built-in defaults).
    #[error("the node runs on built-in defaults (no --config): nothing to reload")]
    NoFile,
    /// The file did not read, parse or validate; the running config stays.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The reload task failed.
    #[error("reload failed: {0}")]
    Internal(String),
}

impl ReloadError {
    /// The API's error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoFile => "no_config_file",
            Self::Config(_) => "invalid_config",
            Self::Internal(_) => "reload_failed",
        }
    }

    /// The key the error is about, when known.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Config(e) => e.key(),
            _ => None,
        }
    }
}

/// Reloads the config on request, one reload at a time.
pub struct Reloader {
    shared: SharedConfig,
    source: OnceLock<Source>,
    one_at_a_time: tokio::sync::Mutex<()>,
    reloads: IntCounterVec,
    generation: IntGauge,
    loaded: Gauge,
}

impl Reloader {
    /// Registers `estuary_config_reloads_total{result}`, `estuary_config_generation` and
    /// `estuary_config_loaded_timestamp_seconds` on `registry`.
    pub fn register(shared: SharedConfig, registry: &Registry) -> Self {
        let reloads = IntCounterVec::new(
            Opts::new(
                "estuary_config_reloads_total",
                "Config reloads (SIGHUP, POST /admin/reload), by result: ok, error",
            ),
            &["result"],
        )
        .expect("valid metric");
        let generation = IntGauge::new(
            "estuary_config_generation",
            "Generation of the config in force: 1 at start, +1 per reload that changed it",
        )
        .expect("valid metric");
        let loaded = Gauge::new(
            "estuary_config_loaded_timestamp_seconds",
            "Unix time the config in force was loaded (at start or by the last reload)",
        )
        .expect("valid metric");
        // Registered once per registry; a duplicate only happens in tests sharing one.
        let _ = registry.register(Box::new(reloads.clone()));
        let _ = registry.register(Box::new(generation.clone()));
        let _ = registry.register(Box::new(loaded.clone()));
        for result in ["ok", "error"] {
            reloads.with_label_values(&[result]);
        }
        generation.set(i64::try_from(shared.generation()).unwrap_or(i64::MAX));
        loaded.set(unix_now());
        Self {
            shared,
            source: OnceLock::new(),
            one_at_a_time: tokio::sync::Mutex::new(()),
            reloads,
            generation,
            loaded,
        }
    }

    /// Sets where the config comes from; without it a reload answers
    /// [`ReloadError::NoFile`]. Only the first call counts.
    pub fn set_source(&self, source: Source) {
        let _ = self.source.set(source);
    }

    /// Reads the config again and puts what can change live in force.
    ///
    /// # Errors
    /// [`ReloadError`]; the running config then stays in force, unchanged.
    pub async fn reload(&self) -> Result<Report, ReloadError> {
        let _one = self.one_at_a_time.lock().await;
        crate::systemd::reloading();
        let r = self.apply().await;
        crate::systemd::reloaded();
        match &r {
            Ok(report) => {
                self.reloads.with_label_values(&["ok"]).inc();
                tracing::info!(
                    generation = report.generation,
                    changed = ?report.plan.changed,
                    "config reloaded"
                );
                if !report.plan.restart_required.is_empty() {
                    tracing::warn!(
                        keys = ?report.plan.restart_required,
                        "config reload: these keys need a restart and keep their running value"
                    );
                }
            }
            Err(e) => {
                self.reloads.with_label_values(&["error"]).inc();
                tracing::error!(key = e.key().unwrap_or(""), error = %e, "config reload failed; the running config stays");
            }
        }
        r
    }

    async fn apply(&self) -> Result<Report, ReloadError> {
        let source = self.source.get().ok_or(ReloadError::NoFile)?.clone();
        // Reading the file is blocking I/O.
        let new = tokio::task::spawn_blocking(move || source())
            .await
            .map_err(|e| ReloadError::Internal(e.to_string()))??;
        let (cfg, plan) = plan::merge(&self.shared.load(), new)
            .map_err(|e| ReloadError::Internal(e.to_string()))?;
        let generation = if plan.changed.is_empty() {
            self.shared.generation()
        } else {
            let g = self.shared.store(cfg);
            self.generation.set(i64::try_from(g).unwrap_or(i64::MAX));
            self.loaded.set(unix_now());
            g
        };
        Ok(Report { generation, plan })
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
