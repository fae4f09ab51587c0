//! Connection bookkeeping: when each connection last moved a byte, how many requests it
//! has in flight, and the set of open connections, so idle ones are closed after
//! `http.idle_timeout` and the longest-idle one makes room when the cap is reached.

use std::{
    collections::HashMap,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

/// One connection's activity.
#[derive(Debug)]
pub struct Activity {
    base: Instant,
    /// Milliseconds from `base` to the last byte read or written.
    last_ms: AtomicU64,
    /// Requests whose handler has not returned yet (a parked blocking reload counts).
    inflight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
            inflight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    fn idle(&self) -> bool {
        self.inflight.load(Ordering::Relaxed) == 0
    }

    /// Marks a request in flight until the guard drops.
    pub fn request(self: &Arc<Self>) -> RequestGuard {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        RequestGuard(self.clone())
    }

    /// Resolves once the connection has had no request in flight and no byte moving for
    /// `limit`.
    pub async fn idle_for(&self, limit: Duration) {
        loop {
            let deadline = self.last() + limit;
            tokio::time::sleep_until(deadline).await;
            if self.idle() && self.last() + limit <= Instant::now() {
                return;
            }
            if !self.idle() {
                // A request is running (perhaps parked for a while): look again later.
                tokio::time::sleep(limit.min(Duration::from_secs(1))).await;
            }
        }
    }
}

/// Ends a request's in-flight mark.
pub struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// An IO stream that records activity on every byte read or written.
pub struct Tracked<T> {
    inner: T,
    act: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.act.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.act.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.act.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The open connections: activity and a token that closes each.
#[derive(Default)]
pub struct Conns {
    next: AtomicU64,
    open: Mutex<HashMap<u64, (Arc<Activity>, CancellationToken)>>,
}

/// A registered connection; deregisters on drop.
pub struct Registered {
    conns: Arc<Conns>,
    id: u64,
    /// Its activity.
    pub act: Arc<Activity>,
    /// Cancelled to close it (shed for a newcomer).
    pub close: CancellationToken,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.conns
            .open
            .lock()
            .expect("not poisoned")
            .remove(&self.id);
    }
}

impl Conns {
    /// Registers a new connection and wraps its stream.
    pub fn register<T>(self: &Arc<Self>, io: T) -> (Tracked<T>, Registered) {
        let act = Arc::new(Activity::new());
        let close = CancellationToken::new();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.open
            .lock()
            .expect("not poisoned")
            .insert(id, (act.clone(), close.clone()));
        (
            Tracked {
                inner: io,
                act: act.clone(),
            },
            Registered {
                conns: self.clone(),
                id,
                act,
                close,
            },
        )
    }

    /// Closes the connection that has been idle the longest (no request in flight).
    /// Returns false when every connection is busy.
    pub fn shed_oldest_idle(&self) -> bool {
        let open = self.open.lock().expect("not poisoned");
        let oldest = open
            .values()
            .filter(|(a, c)| a.idle() && !c.is_cancelled())
            .min_by_key(|(a, _)| a.last());
        match oldest {
            Some((_, close)) => {
                close.cancel();
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_waits_for_requests_and_bytes() {
        let a = Arc::new(Activity::new());
        let g = a.request();
        // A request in flight keeps it open past the limit.
        let r =
            tokio::time::timeout(Duration::from_secs(5), a.idle_for(Duration::from_secs(2))).await;
        assert!(r.is_err());
        drop(g);
        let t0 = Instant::now();
        a.idle_for(Duration::from_secs(2)).await;
        assert!(t0.elapsed() >= Duration::from_secs(2));
    }

    #[test]
    fn the_longest_idle_is_shed() {
        let conns = Arc::new(Conns::default());
        let (_io1, r1) = conns.register(());
        let (_io2, r2) = conns.register(());
        let _busy = r1.act.request();
        assert!(conns.shed_oldest_idle());
        assert!(!r1.close.is_cancelled());
        assert!(r2.close.is_cancelled());
        assert!(!conns.shed_oldest_idle());
    }
}
