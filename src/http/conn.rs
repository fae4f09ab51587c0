//! Connection bookkeeping: when each connection last moved a byte, how many requests it
//! has in flight, and the set of open connections, so idle ones are closed after
//! `http.idle_timeout` and the longest-idle one makes room when the cap is reached.
//! Also which HTTP version a connection speaks ([`Proto`]) and the loop that drives it
//! ([`drive`]).

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

impl Tracked<tokio::net::TcpStream> {
    /// Reads the first bytes the client sent without taking them off the socket; waits
    /// for at least one.
    pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.peek(buf).await
    }
}

/// How a connection speaks HTTP.
///
/// hyper-util's auto-detecting server reads the first 24 bytes into a buffer of its
/// own and hands them to hyper ahead of the socket. hyper then reads the rest of the
/// request into a buffer that, 24 bytes short of its 8 KiB, it doubles to 16 KiB; so an
/// HTTP/1.1 connection held 16 KiB of read buffer for as long as it lived (a parked
/// blocking request included). Deciding the version first (by ALPN, or by peeking at
/// the socket) lets hyper's own HTTP/1.1 or HTTP/2 server read from the socket directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.x.
    H1,
    /// HTTP/2: the client's preface, or ALPN's `h2`.
    H2,
    /// Not known yet (too few bytes to tell, or TLS without ALPN): hyper-util's
    /// auto-detection reads and decides.
    Sniff,
}

/// The client connection preface of HTTP/2 (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl Proto {
    /// From the first bytes a client sent on a plain connection.
    pub fn of_preface(first: &[u8]) -> Self {
        let n = first.len().min(H2_PREFACE.len());
        if first[..n] != H2_PREFACE[..n] {
            Self::H1
        } else if n == H2_PREFACE.len() {
            Self::H2
        } else {
            Self::Sniff
        }
    }

    /// From the protocol a TLS handshake agreed by ALPN.
    pub fn of_alpn(alpn: Option<&[u8]>) -> Self {
        match alpn {
            Some(b"h2") => Self::H2,
            Some(b"http/1.1") => Self::H1,
            _ => Self::Sniff,
        }
    }

    /// Peeks at a plain connection's first bytes (at most the preface's length; waits
    /// for at least one).
    pub async fn of_stream(tcp: &Tracked<tokio::net::TcpStream>) -> io::Result<Self> {
        let mut buf = [0u8; H2_PREFACE.len()];
        let n = tcp.peek(&mut buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(Self::of_preface(&buf[..n]))
    }
}

/// A served connection that can be asked to finish its requests and close.
pub trait Shutdown: std::future::Future {
    /// Stops taking new requests; the future resolves once those in flight are done.
    fn shutdown(self: Pin<&mut Self>);
}

impl<I, S, B> Shutdown for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B, E> Shutdown for hyper::server::conn::http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B, E> Shutdown for hyper_util::server::conn::auto::UpgradeableConnection<'_, I, S, E>
where
    S: hyper::service::Service<
        hyper::Request<hyper::body::Incoming>,
        Response = hyper::Response<B>,
    >,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: 'static,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Why [`drive`] stopped a connection before it ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The client closed it, or it failed.
    ByItself,
    /// No request and no byte for `http.idle_timeout`.
    Idle,
    /// Shed to make room for a newcomer at `http.max_connections`.
    Shed,
    /// The server is shutting down: it finished its requests first.
    Shutdown,
}

impl Ended {
    /// Counts a close the node made on `estuary_http_connections_closed_total`.
    pub fn count(self, closed: &prometheus::IntCounterVec) {
        match self {
            Self::Idle => closed.with_label_values(&["idle"]).inc(),
            Self::Shed => closed.with_label_values(&["shed"]).inc(),
            Self::ByItself | Self::Shutdown => {}
        }
    }
}

/// Serves a connection until it ends, goes idle for `idle`, is shed, or the server stops
/// (then its requests in flight finish first).
pub async fn drive<C: Shutdown>(conn: C, reg: &Registered, idle: Duration) -> Ended {
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => Ended::ByItself,
        () = reg.act.idle_for(idle) => Ended::Idle,
        () = reg.close.cancelled() => {
            if reg.closed_by() == Ended::Shed {
                return Ended::Shed;
            }
            conn.as_mut().shutdown();
            let _ = conn.await;
            Ended::Shutdown
        }
    }
}

/// The open connections: activity and a token that closes each.
pub struct Conns {
    next: AtomicU64,
    open: Mutex<HashMap<u64, (Arc<Activity>, CancellationToken)>>,
    /// The server's stop; each connection's `close` is a child of it.
    stop: CancellationToken,
}

/// A registered connection; deregisters on drop.
pub struct Registered {
    conns: Arc<Conns>,
    id: u64,
    /// Its activity.
    pub act: Arc<Activity>,
    /// Cancelled to close it: shed for a newcomer, or the server stops
    /// ([`Registered::stopping`] tells which). A child of the server's stop token, so
    /// that a connection's task waits on this one token for both.
    pub close: CancellationToken,
}

impl Registered {
    /// The server is stopping (rather than this connection being shed).
    pub fn stopping(&self) -> bool {
        self.conns.stop.is_cancelled()
    }

    /// Why `close` fired: the server stops, or this connection was shed.
    pub fn closed_by(&self) -> Ended {
        if self.stopping() {
            Ended::Shutdown
        } else {
            Ended::Shed
        }
    }
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
    /// No connections yet; `stop` closes them all when the server stops.
    pub fn new(stop: CancellationToken) -> Self {
        Self {
            next: AtomicU64::new(0),
            open: Mutex::default(),
            stop,
        }
    }

    /// Registers a new connection and wraps its stream.
    pub fn register<T>(self: &Arc<Self>, io: T) -> (Tracked<T>, Registered) {
        let act = Arc::new(Activity::new());
        let close = self.stop.child_token();
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
    fn the_version_is_told_from_the_first_bytes() {
        assert_eq!(Proto::of_preface(b"GET / HTTP/1.1\r\n"), Proto::H1);
        assert_eq!(Proto::of_preface(b"G"), Proto::H1);
        // "PUT" shares its first letter with the preface's "PRI".
        assert_eq!(Proto::of_preface(b"PUT /x HTTP/1.1\r\n"), Proto::H1);
        assert_eq!(Proto::of_preface(H2_PREFACE), Proto::H2);
        let mut more = H2_PREFACE.to_vec();
        more.extend_from_slice(b"\0\0\x12\x04");
        assert_eq!(Proto::of_preface(&more), Proto::H2);
        // Too short to tell: hyper-util's detection reads on.
        assert_eq!(Proto::of_preface(b"PRI * HT"), Proto::Sniff);
        assert_eq!(Proto::of_preface(b""), Proto::Sniff);
        assert_eq!(Proto::of_alpn(Some(b"h2")), Proto::H2);
        assert_eq!(Proto::of_alpn(Some(b"http/1.1")), Proto::H1);
        assert_eq!(Proto::of_alpn(None), Proto::Sniff);
    }

    #[test]
    fn the_longest_idle_is_shed() {
        let stop = CancellationToken::new();
        let conns = Arc::new(Conns::new(stop.clone()));
        let (_io1, r1) = conns.register(());
        let (_io2, r2) = conns.register(());
        let _busy = r1.act.request();
        assert!(conns.shed_oldest_idle());
        assert!(!r1.close.is_cancelled());
        assert!(r2.close.is_cancelled());
        assert!(!r2.stopping());
        assert!(!conns.shed_oldest_idle());
        // Stopping the server closes every connection, and each can tell it from a shed.
        stop.cancel();
        assert!(r1.close.is_cancelled());
        assert!(r1.stopping());
    }
}
