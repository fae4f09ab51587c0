//! The config in force, swappable at run time (`SIGHUP`, `POST /admin/reload`).
//!
//! Readers take a snapshot with [`SharedConfig::load`]: an `arc-swap` load is a few atomic
//! operations, with no lock, so request and handshake paths read the current config for
//! free. A component that must react to a change (resize a connection cap) watches
//! [`SharedConfig::subscribe`].

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use tokio::sync::watch;

use super::Config;

/// The config in force, shared by every component; cheap to clone.
#[derive(Clone)]
pub struct SharedConfig {
    current: Arc<ArcSwap<Config>>,
    generation: Arc<watch::Sender<u64>>,
}

impl std::fmt::Debug for SharedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedConfig")
            .field("generation", &*self.generation.borrow())
            .finish_non_exhaustive()
    }
}

impl SharedConfig {
    /// Generation 1: the config the node started with.
    pub fn new(cfg: impl Into<Arc<Config>>) -> Self {
        Self {
            current: Arc::new(ArcSwap::new(cfg.into())),
            generation: Arc::new(watch::channel(1).0),
        }
    }

    /// The config in force now (lock-free). Hold it briefly; for a whole session take
    /// [`SharedConfig::get`].
    pub fn load(&self) -> Guard<Arc<Config>> {
        self.current.load()
    }

    /// The config in force now, as an owned snapshot a session keeps for its life.
    pub fn get(&self) -> Arc<Config> {
        self.current.load_full()
    }

    /// How many configs have been in force: 1 at start, plus one per applied reload.
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// A receiver that sees the generation change after each applied reload.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Puts `cfg` in force and tells the subscribers; returns the new generation.
    pub(crate) fn store(&self, cfg: Config) -> u64 {
        self.current.store(Arc::new(cfg));
        let mut generation = 0;
        self.generation.send_modify(|g| {
            *g += 1;
            generation = *g;
        });
        generation
    }
}

impl From<Config> for SharedConfig {
    fn from(cfg: Config) -> Self {
        Self::new(cfg)
    }
}

impl From<Arc<Config>> for SharedConfig {
    fn from(cfg: Arc<Config>) -> Self {
        Self::new(cfg)
    }
}
