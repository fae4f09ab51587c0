//! The HTTP server: HTTP/1.1 and HTTP/2 (h2c by prior knowledge, or h2 over TLS by
//! ALPN), routing, LL-HLS blocking semantics, cache headers and CORS.

mod body;
mod conn;
pub mod error;
mod hls;
mod range;
mod steering;
mod web;

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::{body::Incoming, header, Method, Request, Response, StatusCode};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::error;

use crate::{config::SharedConfig, live::Hub, metrics::Metrics, reload::Cap, store::Store};

pub use body::ChunksBody;
pub use hls::{parse_delivery, Delivery};

/// The response body type of every route.
pub type Body = BoxBody<Bytes, Infallible>;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The TCP listener could not bind.
    #[error("cannot bind HTTP listener on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The certificate or key could not be loaded.
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// Everything a request handler reads.
pub struct AppState {
    /// The config in force (read per request, so a reload applies at once).
    pub cfg: SharedConfig,
    /// Reloads it (`POST /admin/reload`, SIGHUP).
    pub reloader: Arc<crate::reload::Reloader>,
    /// Media objects and live state.
    pub store: Store,
    /// Live streams.
    pub hub: Arc<Hub>,
    /// Metric families.
    pub metrics: Metrics,
    /// The registry `/metrics` renders.
    pub registry: prometheus::Registry,
    /// The memory cache, for its size gauge.
    pub cache: crate::store::MemoryStore,
    /// Where SRT listens (the front page shows it).
    pub srt_addr: SocketAddr,
    /// Where RTMP listens, if it does (the stream list shows it).
    pub rtmp_addr: Option<SocketAddr>,
    /// Where RTMPS listens, if it does.
    pub rtmps_addr: Option<SocketAddr>,
    /// The interaction channel.
    pub interact: Arc<crate::interact::Interact>,
    /// The edge tier, when `upstream.origins` or `upstream.redis` is set.
    pub upstream: Option<crate::upstream::Upstream>,
    /// The drain switch: while on, `/readyz` answers 503 so balancers move new viewers.
    pub draining: crate::drain::Drain,
    /// The admin API's state (viewer tracker, kick counter).
    pub admin: crate::admin::Admin,
    /// Playback tokens and the play webhook.
    pub auth: Arc<crate::auth::Auth>,
    /// Content steering, when `steering.pathways` is set.
    pub steering: Option<crate::steering::Steering>,
}

impl AppState {
    /// Viewers of a stream (open interaction connections on this node).
    pub fn viewers(&self, stream: &str) -> usize {
        self.interact.viewers(stream)
    }
}

/// A bound HTTP server.
pub struct Server {
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<AppState>,
}

impl Server {
    /// Binds the listener and loads TLS material if configured.
    ///
    /// # Errors
    /// [`HttpError`] when the address is taken or the certificate cannot be read.
    pub async fn bind(state: Arc<AppState>) -> Result<Self, HttpError> {
        Self::bind_with(state, None).await
    }

    /// Like [`Server::bind`], on a listener inherited from systemd when one is given.
    ///
    /// # Errors
    /// [`HttpError`] when the address is taken or the certificate cannot be read.
    pub async fn bind_with(
        state: Arc<AppState>,
        inherited: Option<std::net::TcpListener>,
    ) -> Result<Self, HttpError> {
        let addr = state.cfg.load().http.listen;
        let bind_err = |source| HttpError::Bind { addr, source };
        let listener = match inherited {
            Some(l) => {
                l.set_nonblocking(true).map_err(bind_err)?;
                TcpListener::from_std(l).map_err(bind_err)?
            }
            None => TcpListener::bind(addr).await.map_err(bind_err)?,
        };
        let tls = match (
            &state.cfg.load().http.tls_cert,
            &state.cfg.load().http.tls_key,
        ) {
            (Some(c), Some(k)) => Some(tls_acceptor(c, k)?),
            _ => None,
        };
        Ok(Self {
            listener,
            tls,
            state,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound")
    }

    /// Serves until `token` is cancelled, then lets open connections finish within the
    /// grace period.
    pub async fn run(self, token: CancellationToken) {
        // Resized to `http.max_connections` on each accept, so a reload applies it.
        let permits = Cap::new(self.state.cfg.load().http.max_connections);
        let servers = Arc::new(Servers::new());
        // Every connection task, so shutdown can wait for them (up to the grace period).
        let tasks = tokio_util::task::TaskTracker::new();
        let conns = Arc::new(conn::Conns::new(token.clone()));
        loop {
            let (tcp, remote) = tokio::select! {
                () = token.cancelled() => break,
                r = self.listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            // Per connection: a reload's cap and idle timeout apply to the next ones.
            let (cap, idle) = {
                let cfg = self.state.cfg.load();
                (cfg.http.max_connections, cfg.http.idle_timeout)
            };
            permits.follow(cap);
            let permit = match permits.permits().clone().try_acquire_owned() {
                Ok(p) => p,
                // At the cap: the connection idle the longest makes room, so silent or
                // idle sockets cannot lock real viewers out.
                Err(_) if conns.shed_oldest_idle() => {
                    match tokio::time::timeout(
                        Duration::from_secs(1),
                        permits.permits().clone().acquire_owned(),
                    )
                    .await
                    {
                        Ok(Ok(p)) => p,
                        _ => {
                            self.state
                                .metrics
                                .http_closed
                                .with_label_values(&["limit"])
                                .inc();
                            tracing::warn!(%remote, "connection limit reached, closing");
                            continue;
                        }
                    }
                }
                Err(_) => {
                    self.state
                        .metrics
                        .http_closed
                        .with_label_values(&["limit"])
                        .inc();
                    tracing::warn!(%remote, "connection limit reached and none idle, closing");
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (tcp, reg) = conns.register(tcp);
            let closed = self.state.metrics.http_closed.clone();
            let state = self.state.clone();
            let act = reg.act.clone();
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                let guard = act.request();
                async move {
                    let r = handle(state, req, remote).await;
                    drop(guard);
                    Ok::<_, Infallible>(r)
                }
            });
            let servers = servers.clone();
            // Plain and TLS connections are separate tasks, each sized for its own
            // stream type (a TLS stream holds rustls' state, several KiB).
            let tracker = tasks.clone();
            match self.tls.clone() {
                None => tasks.spawn(async move {
                    let _permit = permit;
                    // The version from the first bytes, without taking them.
                    let proto = tokio::select! {
                        r = conn::Proto::of_stream(&tcp) => r,
                        () = reg.act.idle_for(idle) => {
                            closed.with_label_values(&["idle"]).inc();
                            return;
                        }
                        () = reg.close.cancelled() => {
                            reg.closed_by().count(&closed);
                            return;
                        }
                    };
                    let Ok(proto) = proto else { return };
                    if proto == conn::Proto::H1 {
                        let ended = servers.serve_h1(tcp, svc, &reg, idle).await;
                        ended.count(&closed);
                    } else {
                        // HTTP/2 moves to a task of its own size, so that this one,
                        // which every plain connection has, stays sized for HTTP/1.1.
                        tracker.spawn(async move {
                            let _permit = _permit;
                            let ended = servers.serve(proto, tcp, svc, &reg, idle).await;
                            ended.count(&closed);
                        });
                    }
                }),
                Some(acceptor) => tasks.spawn(async move {
                    let _permit = permit;
                    let tls = tokio::select! {
                        r = tokio::time::timeout(idle.min(Duration::from_secs(10)), acceptor.accept(tcp)) => r,
                        () = reg.close.cancelled() => {
                            reg.closed_by().count(&closed);
                            return;
                        }
                    };
                    let Ok(Ok(tls)) = tls else {
                        tracing::debug!(%remote, "TLS handshake failed");
                        return;
                    };
                    let proto = conn::Proto::of_alpn(tls.get_ref().1.alpn_protocol());
                    let ended = servers.serve(proto, tls, svc, &reg, idle).await;
                    ended.count(&closed);
                }),
            };
        }
        drop(self.listener);
        tasks.close();
        let grace = self.state.cfg.load().shutdown_grace;
        if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
            tracing::warn!("HTTP connections still open after the grace period");
        }
    }
}

/// A connection's byte stream (plain TCP or TLS).
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Io for T {}

/// The request handler as hyper's servers take it.
trait Svc:
    hyper::service::Service<
        Request<Incoming>,
        Response = Response<Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}
impl<T> Svc for T where
    T: hyper::service::Service<
            Request<Incoming>,
            Response = Response<Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// hyper's servers, configured once: HTTP/1.1 and HTTP/2 for a connection whose version
/// is known ([`conn::Proto`]), and hyper-util's auto-detection for the rest.
struct Servers {
    h1: hyper::server::conn::http1::Builder,
    h2: hyper::server::conn::http2::Builder<TokioExecutor>,
    auto: auto::Builder<TokioExecutor>,
}

impl Servers {
    fn new() -> Self {
        let mut h1 = hyper::server::conn::http1::Builder::new();
        // Media bodies are shared `Bytes` chunks: send them with vectored writes rather
        // than copying them into hyper's buffer.
        h1.writev(true);
        // Without a timer hyper applies no header timeout: a client that trickles its
        // request headers would hold a connection slot for ever.
        h1.timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10));
        let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        h2.timer(hyper_util::rt::TokioTimer::new());
        let mut auto = auto::Builder::new(TokioExecutor::new());
        auto.http1()
            .writev(true)
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10));
        auto.http2().timer(hyper_util::rt::TokioTimer::new());
        Self { h1, h2, auto }
    }

    /// Serves an HTTP/1.1 connection.
    async fn serve_h1<I, S>(
        &self,
        io: I,
        svc: S,
        reg: &conn::Registered,
        idle: Duration,
    ) -> conn::Ended
    where
        I: Io,
        S: Svc,
    {
        let c = self
            .h1
            .serve_connection(TokioIo::new(io), svc)
            .with_upgrades();
        conn::drive(c, reg, idle).await
    }

    /// Serves one connection in the version `proto` says.
    async fn serve<I, S>(
        &self,
        proto: conn::Proto,
        io: I,
        svc: S,
        reg: &conn::Registered,
        idle: Duration,
    ) -> conn::Ended
    where
        I: Io,
        S: Svc,
    {
        match proto {
            conn::Proto::H1 => self.serve_h1(io, svc, reg, idle).await,
            conn::Proto::H2 => {
                let c = self.h2.serve_connection(TokioIo::new(io), svc);
                conn::drive(c, reg, idle).await
            }
            conn::Proto::Sniff => {
                let c = self
                    .auto
                    .serve_connection_with_upgrades(TokioIo::new(io), svc);
                conn::drive(c, reg, idle).await
            }
        }
    }
}

fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, HttpError> {
    use std::io::BufReader;
    let read = |p: &std::path::Path| {
        std::fs::File::open(p)
            .map(BufReader::new)
            .map_err(|e| HttpError::Tls(format!("{}: {e}", p.display())))
    };
    let certs = rustls_pemfile::certs(&mut read(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| HttpError::Tls(format!("{}: {e}", cert.display())))?;
    let key = rustls_pemfile::private_key(&mut read(key)?)
        .map_err(|e| HttpError::Tls(format!("{}: {e}", key.display())))?
        .ok_or_else(|| HttpError::Tls(format!("{}: no private key", key.display())))?;
    let mut cfg = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| HttpError::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| HttpError::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// A response with a fixed body.
pub fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(body.into()).boxed())
        .expect("valid response")
}

/// A plain-text response (health checks; errors use [`error()`]).
pub fn text(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = full(status, "text/plain; charset=utf-8", format!("{msg}\n"));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

/// One request. A plain fn returning an `async move` block rather than an `async fn`:
/// an async fn moves its arguments into locals and keeps both copies in its future, and
/// this future is what every parked blocking request holds (see `request_future_size`).
#[allow(clippy::manual_async_fn)]
fn handle(
    state: Arc<AppState>,
    req: Request<Incoming>,
    remote: SocketAddr,
) -> impl std::future::Future<Output = Response<Body>> + Send {
    async move {
        let path = req.uri().path().to_owned();
        let head = req.method() == Method::HEAD;
        // Media playlist fetches count HLS viewers (see admin::viewers).
        let client = path
            .ends_with("/index.m3u8")
            .then(|| state.admin.viewers.client(&req, remote.ip()));
        // "A server MUST respond with a 400 (Bad Request) status code to any HTTP/1.1 request
        // message that lacks a Host header field" (RFC 9112 §3.2).
        let (route, mut resp) = if req.version() == hyper::Version::HTTP_11
            && !req.headers().contains_key(header::HOST)
        {
            (
                "other",
                error(
                    StatusCode::BAD_REQUEST,
                    "missing_host",
                    "missing Host header",
                ),
            )
        } else {
            route(&state, req, remote).await
        };
        if let Some(c) =
            client.filter(|_| route == "media_playlist" && resp.status() == StatusCode::OK)
        {
            state.admin.viewers.seen(&path, c);
        }
        state
            .metrics
            .http_requests
            .with_label_values(&[route, resp.status().as_str()])
            .inc();
        let h = resp.headers_mut();
        // The default `*` needs no copy per request.
        let cors = match state.cfg.load().http.cors_origin.as_str() {
            "*" => Ok(header::HeaderValue::from_static("*")),
            o => header::HeaderValue::from_str(o),
        };
        if let Ok(v) = cors {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        }
        if head {
            let (parts, _) = resp.into_parts();
            return Response::from_parts(parts, http_body_util::Empty::new().boxed());
        }
        if resp.status().is_server_error() {
            tracing::debug!(path = %path, status = %resp.status(), "request failed");
        }
        resp
    }
}

/// The route of a request (a plain fn for the reason given at [`handle`]).
#[allow(clippy::manual_async_fn)]
fn route(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    remote: SocketAddr,
) -> impl std::future::Future<Output = (&'static str, Response<Body>)> + Send + '_ {
    async move {
        if req.method() == Method::OPTIONS {
            let r = Response::builder()
                .status(StatusCode::NO_CONTENT)
                .header(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    "GET, HEAD, POST, OPTIONS",
                )
                .header(header::ACCESS_CONTROL_ALLOW_HEADERS, "*")
                .header(header::ACCESS_CONTROL_MAX_AGE, "86400")
                .body(http_body_util::Empty::new().boxed())
                .expect("valid");
            return ("preflight", r);
        }
        // `/token/{token}/live/…`: a playback token as a path prefix (see `auth::carry`).
        let (path, path_token) = match crate::auth::carry::split_path(req.uri().path()) {
            Some((tok, rest)) => (rest.to_owned(), Some(tok)),
            None => (req.uri().path().to_owned(), None),
        };
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let is_get = matches!(*req.method(), Method::GET | Method::HEAD);
        match segs.as_slice() {
            ["healthz"] => ("healthz", text(StatusCode::OK, "ok")),
            // Rare routes with large futures are boxed, so that the future of every request
            // (a parked blocking reload's included) is sized for the media routes only.
            ["admin", ..] => ("admin", Box::pin(crate::admin::handle(state, req)).await),
            ["readyz"] if state.draining.is_draining() => (
                "readyz",
                error(StatusCode::SERVICE_UNAVAILABLE, "draining", "draining"),
            ),
            ["readyz"] => ("readyz", text(StatusCode::OK, "ready")),
            ["metrics"] if is_get => ("metrics", metrics(state)),
            ["api", "streams"] if is_get => ("api_streams", web::streams(state, &req)),
            ["api", "streams", name] if is_get => ("api_stream", web::stream_detail(state, name)),
            ["live", stream, "events"] => (
                "events",
                state.interact.handle_ws(stream, req).map(BodyExt::boxed),
            ),
            ["api", ..] => (
                "api",
                Box::pin(state.interact.handle_api(&path, req))
                    .await
                    .map(BodyExt::boxed),
            ),
            [""] | ["watch", _] | ["static", ..] if is_get => {
                ("web", web::page(state, &segs).await)
            }
            ["live", stream, rest @ ..] if is_get => {
                hls::live(state, &req, stream, rest, (&path, path_token, remote)).await
            }
            _ if !is_get => {
                let mut r = error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "method not allowed",
                );
                r.headers_mut().insert(
                    header::ALLOW,
                    header::HeaderValue::from_static("GET, HEAD, OPTIONS"),
                );
                ("other", r)
            }
            _ => (
                "other",
                error(StatusCode::NOT_FOUND, "not_found", "not found"),
            ),
        }
    }
}

fn metrics(state: &AppState) -> Response<Body> {
    use prometheus::Encoder;
    state
        .metrics
        .cache_bytes
        .set(state.cache.weighted_size() as i64);
    let mut buf = Vec::with_capacity(16 * 1024);
    let enc = prometheus::TextEncoder::new();
    if let Err(e) = enc.encode(&state.registry.gather(), &mut buf) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &e.to_string(),
        );
    }
    full(StatusCode::OK, enc.format_type(), buf)
}

#[cfg(test)]
mod tests {
    /// The size of the future an async fn of three arguments returns.
    fn future_size<A, B, C, Fut, F: Fn(A, B, C) -> Fut>(_: &F) -> usize {
        std::mem::size_of::<Fut>()
    }

    /// Every request's future is allocated per connection by hyper and held for as long
    /// as the request is parked (10,000 parked blocking reloads hold 10,000 of them), so
    /// it is kept to the media routes' needs: rare routes, the play hook and the edge's
    /// pull are boxed, and `handle`/`route` hold their arguments once. It was 3,248
    /// bytes before that, 1,648 after (rustc 1.95, x86_64).
    #[test]
    fn request_future_size() {
        let n = future_size(&super::handle);
        eprintln!("handle future: {n} bytes");
        assert!(n <= 2048, "the per-request future grew to {n} bytes");
    }
}
