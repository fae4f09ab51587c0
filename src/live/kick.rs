//! Operator kicks and the short publish ban that may follow one, so an encoder's
//! auto-reconnect does not bring a kicked publisher straight back.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{Hub, Progress};

/// Most bans kept at once; expired ones are dropped first, then the one ending soonest.
const MAX_BANS: usize = 10_000;

/// Streams that refuse publishers until an instant.
#[derive(Debug, Default)]
pub(super) struct Bans(Mutex<HashMap<String, Instant>>);

impl Bans {
    fn set(&self, name: &str, until: Instant) {
        let mut bans = self.0.lock().expect("not poisoned");
        if bans.len() >= MAX_BANS && !bans.contains_key(name) {
            let now = Instant::now();
            bans.retain(|_, t| *t > now);
            if bans.len() >= MAX_BANS {
                if let Some(k) = bans.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone()) {
                    bans.remove(&k);
                }
            }
        }
        bans.insert(name.to_owned(), until);
    }

    fn left(&self, name: &str) -> Option<Duration> {
        let mut bans = self.0.lock().expect("not poisoned");
        let left = bans.get(name)?.checked_duration_since(Instant::now());
        if left.is_none() {
            bans.remove(name);
        }
        left
    }
}

impl Hub {
    /// Kicks the publisher of `name`: its connection is closed and its session ends as
    /// when a publisher leaves, so the stream's playlists stay valid and a reconnect
    /// continues them (after a discontinuity). A non-zero `ban` then refuses publishers
    /// of `name` for that long. Returns the kicked session, or `None` (and bans nothing)
    /// when the stream has no publisher.
    pub fn kick(&self, name: &str, ban: Duration) -> Option<Arc<Progress>> {
        let session = self.session(name)?;
        // Ban first, so an encoder reconnecting at once is already refused.
        if !ban.is_zero() {
            self.bans.set(name, Instant::now() + ban);
        }
        session.kick.cancel();
        Some(session)
    }

    /// How long `name` still refuses publishers after a kick with a ban, if it does.
    pub fn banned(&self, name: &str) -> Option<Duration> {
        self.bans.left(name)
    }

    /// Lifts a ban early; false when `name` was not banned.
    pub fn unban(&self, name: &str) -> bool {
        let removed = self.bans.0.lock().expect("not poisoned").remove(name);
        removed.is_some_and(|t| t > Instant::now())
    }

    /// Every ban in force, with the time left, by stream name.
    pub fn bans(&self) -> Vec<(String, Duration)> {
        let now = Instant::now();
        let mut bans = self.bans.0.lock().expect("not poisoned");
        bans.retain(|_, t| *t > now);
        let mut v: Vec<_> = bans.iter().map(|(k, t)| (k.clone(), *t - now)).collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_expire_and_stay_bounded() {
        let bans = Bans::default();
        bans.set("a", Instant::now() + Duration::from_secs(60));
        bans.set("gone", Instant::now());
        assert!(bans.left("a").is_some());
        assert!(bans.left("gone").is_none());
        assert!(bans.left("other").is_none());
        for i in 0..MAX_BANS + 5 {
            bans.set(&format!("s{i}"), Instant::now() + Duration::from_secs(60));
        }
        assert!(bans.0.lock().unwrap().len() <= MAX_BANS);
    }
}
