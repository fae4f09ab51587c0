//! RTMP and RTMPS ingest: the listeners, publish authorisation, one task per connection.
//!
//! The protocol (handshake, chunk stream, AMF0 commands) is `rml_rtmp`'s; this module
//! decides who may publish and turns the publisher's audio and video messages into an
//! FLV byte stream for the same media pipeline SRT feeds (`appsrc ! flvdemux`), or, for
//! Enhanced RTMP (HEVC with a FourCC, as OBS 29.1+ sends it), into elementary-stream
//! samples for that pipeline's own sources (`route`, `enhanced`).
//!
//! OBS: Server `rtmp://HOST/live`, Stream key `NAME` (or `NAME?key=KEY` when the stream
//! has an `rtmp_key`); ffmpeg: `-f flv rtmp://HOST/live/NAME`. The stream allow-list is
//! SRT's (`[streams]`, `allow_unknown_streams`). A refusal answers the `publish` command
//! with an error, closes the connection, logs a line and counts
//! `estuary_rtmp_rejected_total{reason}`.

mod access;
use access::target;
mod enhanced;
mod flv;
mod route;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use prometheus::{IntCounterVec, Opts, Registry};
use rml_rtmp::{
    handshake::{Handshake, HandshakeProcessResult, PeerType},
    sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    time::Instant,
};
use tokio_rustls::TlsAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

use crate::{
    config::SharedConfig,
    live::{Hub, PublishError, Session},
    media::Input,
    metrics::Metrics,
    reload::Cap,
};

/// The RTMP application publishers use: `rtmp://HOST/live`.
pub const APP: &str = "live";

/// Why the RTMP listeners could not start.
#[derive(Debug, thiserror::Error)]
pub enum RtmpError {
    /// A TCP listener could not bind.
    #[error("cannot bind RTMP listener on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The RTMPS certificate or key could not be loaded.
    #[error("RTMPS certificate: {0}")]
    Tls(String),
}

/// Why a connection ended before or while publishing (for the log only).
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("RTMP handshake: {0}")]
    Handshake(String),
    #[error("RTMP session: {0}")]
    Session(String),
    #[error("connection closed")]
    Closed,
}

/// The RTMP listener, and the RTMPS one when a certificate is configured.
pub struct RtmpIngest {
    shared: Arc<Shared>,
    plain: TcpListener,
    tls: Option<(TcpListener, TlsAcceptor)>,
}

/// What every connection task needs.
struct Shared {
    /// Read per connection: keys, streams and timeouts follow a reload.
    cfg: SharedConfig,
    hub: Arc<Hub>,
    metrics: Metrics,
    rejected: IntCounterVec,
    /// While on, new publishers are refused (reason `draining`).
    draining: crate::drain::Drain,
    /// The publish webhook, when `auth.publish_url` is set.
    hooks: Option<crate::auth::Hooks>,
}

impl RtmpIngest {
    /// Binds the listeners; `None` when `rtmp.enabled` is false. Registers
    /// `estuary_rtmp_rejected_total` on `registry`.
    ///
    /// # Errors
    /// [`RtmpError::Bind`] when an address is taken; [`RtmpError::Tls`] when the RTMPS
    /// certificate or key cannot be read.
    pub async fn bind(
        cfg: impl Into<SharedConfig>,
        hub: Arc<Hub>,
        metrics: Metrics,
        registry: &Registry,
    ) -> Result<Option<Self>, RtmpError> {
        Self::bind_with(cfg, hub, metrics, registry, crate::drain::Drain::default()).await
    }

    /// Like [`RtmpIngest::bind`], refusing new publishers while `draining` is on.
    ///
    /// # Errors
    /// As [`RtmpIngest::bind`].
    pub async fn bind_with(
        cfg: impl Into<SharedConfig>,
        hub: Arc<Hub>,
        metrics: Metrics,
        registry: &Registry,
        draining: crate::drain::Drain,
    ) -> Result<Option<Self>, RtmpError> {
        let shared: SharedConfig = cfg.into();
        let cfg = shared.get();
        if !cfg.rtmp.enabled {
            return Ok(None);
        }
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| RtmpError::Bind { addr, source })
        };
        let plain = bind(cfg.rtmp.listen).await?;
        let tls = match cfg.rtmp.tls_files(&cfg.http) {
            Some((cert, key)) => Some((bind(cfg.rtmp.tls_listen).await?, acceptor(cert, key)?)),
            None => None,
        };
        let rejected = IntCounterVec::new(
            Opts::new(
                "estuary_rtmp_rejected_total",
                "RTMP publishers refused, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        // A second node in one process (tests) registers again: keep counting, unexported.
        let _ = registry.register(Box::new(rejected.clone()));
        Ok(Some(Self {
            shared: Arc::new(Shared {
                cfg: shared,
                hub,
                metrics,
                rejected,
                draining,
                hooks: None,
            }),
            plain,
            tls,
        }))
    }

    /// Asks `hooks`' publish webhook (when one is configured) at each `publish`.
    pub fn with_hooks(mut self, hooks: crate::auth::Hooks) -> Self {
        if let Some(sh) = Arc::get_mut(&mut self.shared) {
            sh.hooks = Some(hooks).filter(crate::auth::Hooks::publishing);
        }
        self
    }

    /// Where RTMP listens.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.plain.local_addr().ok()
    }

    /// Where RTMPS listens, if it does.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// Accepts publishers until `token` is cancelled, then waits for their sessions to end.
    pub async fn run(self, token: CancellationToken) {
        // Resized to `rtmp.max_connections` on each accept, so a reload applies it.
        let permits = Cap::new(self.shared.cfg.load().rtmp.max_connections);
        let tracker = TaskTracker::new();
        loop {
            let (tcp, remote, tls) = tokio::select! {
                () = token.cancelled() => break,
                r = self.plain.accept() => match r {
                    Ok((s, a)) => (s, a, None),
                    Err(e) => { accept_failed(e).await; continue; }
                },
                r = accept_tls(&self.tls) => match r {
                    Ok((s, a, acc)) => (s, a, Some(acc)),
                    Err(e) => { accept_failed(e).await; continue; }
                },
            };
            let span = tracing::info_span!(
                "rtmp",
                %remote,
                tls = tls.is_some(),
                app = tracing::field::Empty,
                stream = tracing::field::Empty,
            );
            permits.follow(self.shared.cfg.load().rtmp.max_connections);
            let Ok(permit) = permits.permits().clone().try_acquire_owned() else {
                span.in_scope(|| tracing::warn!(reason = "overload", "publisher refused"));
                self.shared.rejected.with_label_values(&["overload"]).inc();
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (shared, token) = (self.shared.clone(), token.clone());
            tracker.spawn(
                async move {
                    let _permit = permit;
                    let deadline = Instant::now() + shared.cfg.load().rtmp.handshake_timeout;
                    match tls {
                        None => serve(tcp, &shared, deadline, token, ("rtmp", remote)).await,
                        Some(acceptor) => {
                            match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
                                Ok(Ok(io)) => {
                                    serve(io, &shared, deadline, token, ("rtmps", remote)).await
                                }
                                Ok(Err(e)) => tracing::info!(error = %e, "TLS handshake failed"),
                                Err(_) => {
                                    shared.refused("timeout", "no TLS handshake in time");
                                }
                            }
                        }
                    }
                }
                .instrument(span),
            );
        }
        tracker.close();
        tracker.wait().await;
    }
}

async fn accept_tls(
    tls: &Option<(TcpListener, TlsAcceptor)>,
) -> std::io::Result<(TcpStream, SocketAddr, TlsAcceptor)> {
    match tls {
        Some((l, acc)) => l.accept().await.map(|(s, a)| (s, a, acc.clone())),
        None => std::future::pending().await,
    }
}

/// Out of file descriptors, most likely: pause rather than spin.
async fn accept_failed(e: std::io::Error) {
    tracing::warn!(error = %e, "RTMP accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// A rustls acceptor for RTMPS (no ALPN: RTMP has no registered protocol id).
fn acceptor(cert: &std::path::Path, key: &std::path::Path) -> Result<TlsAcceptor, RtmpError> {
    use std::io::BufReader;
    let read = |p: &std::path::Path| {
        std::fs::File::open(p)
            .map(BufReader::new)
            .map_err(|e| RtmpError::Tls(format!("{}: {e}", p.display())))
    };
    let certs = rustls_pemfile::certs(&mut read(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RtmpError::Tls(format!("{}: {e}", cert.display())))?;
    let key = rustls_pemfile::private_key(&mut read(key)?)
        .map_err(|e| RtmpError::Tls(format!("{}: {e}", key.display())))?
        .ok_or_else(|| RtmpError::Tls(format!("{}: no private key", key.display())))?;
    let cfg = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| RtmpError::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| RtmpError::Tls(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// One RTMP connection: the byte stream and the protocol state on it.
struct Conn<S> {
    io: S,
    rtmp: ServerSession,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Runs the RTMP handshake (C0-C2 / S0-S2) and starts the server session.
    async fn handshake(mut io: S) -> Result<(Self, Vec<ServerSessionEvent>), ConnError> {
        let mut hs = Handshake::new(PeerType::Server);
        let mut buf = vec![0u8; 64 * 1024];
        let rest = loop {
            let n = io.read(&mut buf).await?;
            if n == 0 {
                return Err(ConnError::Closed);
            }
            match hs
                .process_bytes(&buf[..n])
                .map_err(|e| ConnError::Handshake(format!("{e:?}")))?
            {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    io.write_all(&response_bytes).await?;
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    io.write_all(&response_bytes).await?;
                    break remaining_bytes;
                }
            }
        };
        let (rtmp, first) = ServerSession::new(ServerSessionConfig::new())
            .map_err(|e| ConnError::Session(format!("{e:?}")))?;
        let mut conn = Self { io, rtmp, buf };
        let mut events = conn.send(first).await?;
        if !rest.is_empty() {
            let results = conn
                .rtmp
                .handle_input(&rest)
                .map_err(|e| ConnError::Session(format!("{e:?}")))?;
            events.extend(conn.send(results).await?);
        }
        Ok((conn, events))
    }

    /// Writes the packets among `results` and returns the events.
    async fn send(
        &mut self,
        results: Vec<ServerSessionResult>,
    ) -> Result<Vec<ServerSessionEvent>, ConnError> {
        let mut events = Vec::new();
        for r in results {
            match r {
                ServerSessionResult::OutboundResponse(p) => self.io.write_all(&p.bytes).await?,
                ServerSessionResult::RaisedEvent(e) => events.push(e),
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        self.io.flush().await?;
        Ok(events)
    }

    /// Reads what arrives next and returns its events.
    async fn next(&mut self) -> Result<Vec<ServerSessionEvent>, ConnError> {
        let n = self.read().await?;
        self.process(n).await
    }

    /// Reads bytes into the buffer; cancel-safe, so it may sit in a `select!`.
    async fn read(&mut self) -> Result<usize, ConnError> {
        match self.io.read(&mut self.buf).await? {
            0 => Err(ConnError::Closed),
            n => Ok(n),
        }
    }

    /// Hands the first `n` buffered bytes to the session, writes its answers and returns
    /// its events. Not cancel-safe (a half-written chunk would corrupt the stream): await
    /// it outside `select!`.
    async fn process(&mut self, n: usize) -> Result<Vec<ServerSessionEvent>, ConnError> {
        let results = self
            .rtmp
            .handle_input(&self.buf[..n])
            .map_err(|e| ConnError::Session(format!("{e:?}")))?;
        self.send(results).await
    }

    /// Answers an outstanding request.
    async fn answer(&mut self, request_id: u32, refusal: Option<&str>) -> Result<(), ConnError> {
        let results = match refusal {
            None => self.rtmp.accept_request(request_id),
            Some(why) => self
                .rtmp
                .reject_request(request_id, "NetStream.Publish.Rejected", why),
        }
        .map_err(|e| ConnError::Session(format!("{e:?}")))?;
        self.send(results).await?;
        Ok(())
    }

    async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.io.shutdown()).await;
    }
}

/// A publish request that passed: the stream name and the rest of the first read.
struct Accepted {
    name: String,
    session: Session,
    pending: Vec<ServerSessionEvent>,
}

/// Serves one connection: handshake, `connect`, `publish` (all before `deadline`), then
/// media until the publisher leaves.
async fn serve<S>(
    io: S,
    sh: &Shared,
    deadline: Instant,
    token: CancellationToken,
    (protocol, remote): (&'static str, std::net::SocketAddr),
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut conn, events) = match tokio::time::timeout_at(deadline, Conn::handshake(io)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::info!(error = %e, "RTMP handshake failed");
            return;
        }
        Err(_) => {
            sh.refused("timeout", "no RTMP handshake in time");
            return;
        }
    };
    let accepted = tokio::select! {
        () = token.cancelled() => None,
        r = tokio::time::timeout_at(deadline, negotiate(&mut conn, sh, events, (protocol, remote))) => match r {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                tracing::info!(error = %e, "RTMP client left before publishing");
                None
            }
            Err(_) => {
                sh.refused("timeout", "no publish command in time");
                None
            }
        },
    };
    let Some(Accepted {
        name,
        mut session,
        pending,
    }) = accepted
    else {
        conn.close().await;
        return;
    };
    session.describe(protocol, remote);
    tracing::info!(stream = %name, "publisher connected");
    let mut p = Publishing::new(&name, sh);
    session.push(flv::header());
    let end = p.run(&mut conn, &mut session, pending, token).await;
    if let Some(reason) = end {
        sh.rejected.with_label_values(&[reason]).inc();
    }
    if let Some(e) = session.finish().await {
        sh.metrics
            .stream_errors
            .with_label_values(&[e.reason()])
            .inc();
        tracing::error!(stream = %name, error = %e, "stream torn down");
    }
    conn.close().await;
    tracing::info!(stream = %name, "publisher gone");
}

/// Answers `connect` and `publish` until a publish is accepted (`Some`) or refused
/// (`None`; the refusal is logged and counted).
async fn negotiate<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    sh: &Shared,
    mut events: Vec<ServerSessionEvent>,
    peer: (&'static str, SocketAddr),
) -> Result<Option<Accepted>, ConnError> {
    let span = tracing::Span::current();
    loop {
        let mut queue = std::mem::take(&mut events).into_iter();
        while let Some(ev) = queue.next() {
            match ev {
                ServerSessionEvent::ConnectionRequested {
                    request_id,
                    app_name,
                } => {
                    span.record("app", app_name.as_str());
                    conn.answer(request_id, None).await?;
                }
                ServerSessionEvent::PublishStreamRequested {
                    request_id,
                    app_name,
                    stream_key,
                    ..
                } => {
                    let (name, key) = match target(&app_name, &stream_key) {
                        Ok(t) => t,
                        Err(why) => {
                            // The key may carry a secret: log the app only.
                            sh.refused(why, &format!("app {app_name:?}"));
                            conn.answer(request_id, Some(why)).await?;
                            return Ok(None);
                        }
                    };
                    span.record("stream", name.as_str());
                    let allowed = sh.authorize(&name, key.as_deref(), peer).await;
                    let claimed = allowed.and_then(|()| {
                        sh.hub.publish(&name, Input::Flv).map_err(|e| match e {
                            PublishError::AlreadyLive(_) => "already_publishing",
                            PublishError::Media(e) => {
                                tracing::error!(error = %e, "pipeline did not start");
                                "pipeline"
                            }
                        })
                    });
                    let session = match claimed {
                        Ok(s) => s,
                        Err(why) => {
                            sh.refused(why, &name);
                            conn.answer(request_id, Some(why)).await?;
                            return Ok(None);
                        }
                    };
                    if let Err(e) = conn.answer(request_id, None).await {
                        if let Some(e) = session.finish().await {
                            tracing::error!(error = %e, "stream torn down");
                        }
                        return Err(e);
                    }
                    return Ok(Some(Accepted {
                        name,
                        session,
                        pending: queue.collect(),
                    }));
                }
                // Play requests and anything else before publish: this is an ingest.
                ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                    sh.refused("play_not_supported", "RTMP playback is not offered");
                    conn.answer(request_id, Some("play_not_supported")).await?;
                    return Ok(None);
                }
                _ => {}
            }
        }
        events = conn.next().await?;
    }
}

/// A live RTMP publisher's media state.
struct Publishing<'a> {
    name: &'a str,
    sh: &'a Shared,
    /// Where the media goes (FLV for flvdemux, or elementary streams).
    router: route::Router,
    bytes: prometheus::IntCounter,
}

impl<'a> Publishing<'a> {
    fn new(name: &'a str, sh: &'a Shared) -> Self {
        Self {
            name,
            sh,
            router: route::Router::new(),
            bytes: sh.metrics.ingest_bytes.with_label_values(&[name]),
        }
    }

    /// Moves media into the session until the publisher ends, fails or idles; returns a
    /// refusal reason when the media itself is refused.
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<S>,
        session: &mut Session,
        pending: Vec<ServerSessionEvent>,
        token: CancellationToken,
    ) -> Option<&'static str> {
        let idle = self.sh.cfg.load().rtmp.idle_timeout;
        let metrics = &self.sh.metrics;
        let mut failed = session.failed();
        // Idle means no media, not no bytes: a publisher may send only metadata or pings.
        let mut media = (std::time::Instant::now(), 0u64);
        let mut idle_check = tokio::time::interval(Duration::from_secs(1));
        let mut events = pending;
        let kicked = session.progress().kick.clone();
        loop {
            for ev in std::mem::take(&mut events) {
                match self.on_event(ev, session) {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::info!("publisher ended the stream");
                        return None;
                    }
                    Err(why) => return Some(why),
                }
            }
            tokio::select! {
                () = token.cancelled() => return None,
                () = kicked.cancelled() => {
                    tracing::warn!(stream = %self.name, "publisher kicked by the admin API, closing");
                    return None;
                }
                () = failed.cancelled() => match session.recover().await {
                    Ok(why) => {
                        metrics.stream_errors.with_label_values(&[why.reason()]).inc();
                        tracing::info!(stream = %self.name, cause = %why, "pipeline rebuilt");
                        failed = session.failed();
                        media.0 = std::time::Instant::now();
                        self.router.replay(session);
                    }
                    Err(e) => {
                        if let Some(e) = e {
                            metrics.stream_errors.with_label_values(&[e.reason()]).inc();
                            tracing::error!(stream = %self.name, error = %e, "stream torn down");
                        }
                        return None;
                    }
                },
                r = tokio::time::timeout(idle, conn.read()) => match r {
                    // Acknowledgements are written here, bounded by the idle time too.
                    Ok(Ok(n)) => match tokio::time::timeout(idle, conn.process(n)).await {
                        Ok(Ok(evs)) => events = evs,
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "RTMP session error");
                            return None;
                        }
                        Err(_) => {
                            tracing::warn!("publisher does not read its acknowledgements, disconnecting");
                            return None;
                        }
                    },
                    Ok(Err(ConnError::Closed)) => {
                        tracing::info!("publisher closed the connection");
                        return None;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "RTMP receive error");
                        return None;
                    }
                    Err(_) => {
                        tracing::warn!(idle = ?idle, "publisher idle, disconnecting");
                        metrics.stream_errors.with_label_values(&["idle"]).inc();
                        return None;
                    }
                },
                _ = idle_check.tick() => {
                    let chunks = session.progress().chunks.load(std::sync::atomic::Ordering::Relaxed);
                    // Before the first part, allow for a long first GOP as well.
                    let limit = if chunks == 0 { idle + Duration::from_secs(10) } else { idle };
                    if chunks != media.1 {
                        media = (std::time::Instant::now(), chunks);
                    } else if media.0.elapsed() > limit {
                        tracing::warn!(idle = ?idle, "publisher sends no media, disconnecting");
                        metrics.stream_errors.with_label_values(&["idle"]).inc();
                        return None;
                    }
                }
            }
        }
    }

    /// Handles one event of a publishing connection: `Ok(false)` when the publisher
    /// ended the stream, `Err` with a reason when its media is refused.
    fn on_event(
        &mut self,
        ev: ServerSessionEvent,
        session: &Session,
    ) -> Result<bool, &'static str> {
        let (kind, data, ts) = match ev {
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } => (flv::VIDEO, data, timestamp.value),
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } => (flv::AUDIO, data, timestamp.value),
            ServerSessionEvent::PublishStreamFinished { .. } => return Ok(false),
            ServerSessionEvent::UnhandleableAmf0Command { command_name, .. }
                if command_name == "FCUnpublish" =>
            {
                return Ok(false)
            }
            _ => return Ok(true),
        };
        self.bytes.inc_by(data.len() as u64);
        if let Err(why) = self.router.media(kind, ts, data, session) {
            tracing::error!(error = %why, "media refused");
            return Err(why.reason());
        }
        Ok(true)
    }
}
