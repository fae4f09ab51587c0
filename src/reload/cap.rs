//! A connection cap that can be resized while connections hold its permits.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use tokio::sync::Semaphore;

/// A semaphore of connection permits whose size follows the config.
///
/// Growing adds permits at once. Shrinking never closes a connection: a background task
/// takes the surplus permits as connections leave and forgets them, so the cap comes down
/// as the count does. Callers check the config on each accept with [`Cap::follow`]: an
/// atomic compare, no lock.
#[derive(Debug)]
pub struct Cap {
    permits: Arc<Semaphore>,
    size: AtomicUsize,
}

impl Cap {
    /// A cap of `size` permits.
    pub fn new(size: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(size)),
            size: AtomicUsize::new(size),
        }
    }

    /// The semaphore connections take their permit from.
    pub fn permits(&self) -> &Arc<Semaphore> {
        &self.permits
    }

    /// The size last set.
    pub fn size(&self) -> usize {
        self.size.load(Ordering::Acquire)
    }

    /// Sets the cap to `size` (see the type's doc); a no-op when it already is. Call it
    /// inside a tokio runtime.
    pub fn follow(&self, size: usize) {
        if self.size() == size {
            return;
        }
        // The swap makes concurrent callers each apply their own step exactly once.
        let was = self.size.swap(size, Ordering::AcqRel);
        if size > was {
            self.permits.add_permits(size - was);
        } else if size < was {
            let surplus = u32::try_from(was - size).unwrap_or(u32::MAX);
            let permits = self.permits.clone();
            // The semaphore is fair: released permits go to this waiter first, so new
            // connections are held back until the count is under the new cap. The task
            // ends once it has them (or when the semaphore closes).
            tokio::spawn(async move {
                if let Ok(p) = permits.acquire_many_owned(surplus).await {
                    p.forget();
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn grows_at_once_and_shrinks_as_permits_return() {
        let cap = Cap::new(2);
        let a = cap.permits().clone().try_acquire_owned().unwrap();
        let b = cap.permits().clone().try_acquire_owned().unwrap();
        cap.follow(3);
        let c = cap.permits().clone().try_acquire_owned().unwrap();
        assert!(cap.permits().clone().try_acquire_owned().is_err());
        cap.follow(1);
        tokio::task::yield_now().await;
        // Nothing was taken from the three holders.
        drop((a, b));
        tokio::task::yield_now().await;
        assert!(cap.permits().clone().try_acquire_owned().is_err());
        drop(c);
        tokio::task::yield_now().await;
        let d = cap.permits().clone().try_acquire_owned().unwrap();
        assert!(cap.permits().clone().try_acquire_owned().is_err());
        drop(d);
        assert_eq!(cap.size(), 1);
    }
}
