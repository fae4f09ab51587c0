//! Drain: stop taking new work, let current publishers and viewers finish, then exit.
//!
//! Started by `POST /admin/drain` or SIGUSR1. At once `/readyz` answers 503 (balancers move
//! new viewers away) and SRT refuses new publishers at the handshake; `main` then waits
//! until no publisher and no interaction viewer is left, or `drain_timeout`, and shuts
//! down as on SIGTERM.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use tokio_util::sync::CancellationToken;

/// The drain switch, shared by HTTP, ingest and `main`. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct Drain {
    flag: Arc<AtomicBool>,
    started: CancellationToken,
}

impl Drain {
    /// Starts draining; returns false if it had already started.
    pub fn start(&self) -> bool {
        let first = !self.flag.swap(true, Ordering::SeqCst);
        self.started.cancel();
        first
    }

    /// Whether the node drains (cheap; checked per request and per handshake).
    pub fn is_draining(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    /// Resolves once draining has started.
    pub async fn started(&self) {
        self.started.cancelled().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn start_once_and_wake_waiters() {
        let d = Drain::default();
        assert!(!d.is_draining());
        let w = d.clone();
        let waiter = tokio::spawn(async move { w.started().await });
        assert!(d.start());
        assert!(!d.start());
        assert!(d.is_draining());
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
