//! SRT ingest: the listener, publish authorisation at the handshake, one task per
//! publisher. RTMP and RTMPS ingest live in [`rtmp`].
//!
//! A caller's streamid is read before the handshake completes, so an unknown stream, a
//! wrong or missing passphrase, or a stream that already has a publisher never gets a
//! connection. The public UDP socket belongs to [`front`], which answers handshakes
//! srt-tokio cannot read and relays the rest to srt-tokio's listener on loopback.

pub mod front;
pub mod rtmp;
pub mod streamid;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use futures_util::StreamExt;
use srt_protocol::{
    options::KeySize,
    packet::{RejectReason, ServerRejectReason},
    settings::KeySettings,
};
use srt_tokio::{options::Passphrase, ConnectionRequest, SrtListener, SrtSocket};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

use crate::{
    config::{Config, SharedConfig},
    live::Hub,
    metrics::Metrics,
    reload::Cap,
};

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The UDP socket or SRT listener could not bind.
    #[error("cannot bind SRT listener on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// The SRT listener.
pub struct Ingest {
    cfg: SharedConfig,
    hub: Arc<Hub>,
    metrics: Metrics,
    listener: SrtListener,
    incoming: srt_tokio::SrtIncoming,
    /// The public socket (bound here or handed over by systemd); srt-tokio listens behind
    /// it on loopback, so a rebind needs a new loopback socket only.
    front: front::Front,
    /// Set while the node drains: new publishers are refused at the handshake.
    draining: crate::drain::Drain,
    /// The publish webhook, asked during the handshake when `auth.publish_url` is set.
    hooks: Option<crate::auth::Hooks>,
}

enum Decision {
    Accept(Option<KeySettings>),
    Reject(&'static str, ServerRejectReason),
}

impl Ingest {
    /// Binds the listener.
    ///
    /// # Errors
    /// [`IngestError::Bind`] when the address is taken or invalid.
    pub async fn bind(
        cfg: impl Into<SharedConfig>,
        hub: Arc<Hub>,
        metrics: Metrics,
    ) -> Result<Self, IngestError> {
        Self::bind_with(cfg, hub, metrics, None).await
    }

    /// Like [`Ingest::bind`], on a UDP socket inherited from systemd when one is given.
    ///
    /// # Errors
    /// [`IngestError::Bind`] when the address is taken or the socket unusable.
    pub async fn bind_with(
        cfg: impl Into<SharedConfig>,
        hub: Arc<Hub>,
        metrics: Metrics,
        inherited: Option<std::net::UdpSocket>,
    ) -> Result<Self, IngestError> {
        let cfg: SharedConfig = cfg.into();
        let (addr, latency) = (cfg.load().srt.listen, cfg.load().srt.latency);
        let bind_err = |source| IngestError::Bind { addr, source };
        let public = match inherited {
            Some(s) => {
                s.set_nonblocking(true).map_err(bind_err)?;
                tokio::net::UdpSocket::from_std(s).map_err(bind_err)?
            }
            None => tokio::net::UdpSocket::bind(addr).await.map_err(bind_err)?,
        };
        let (listener, incoming, backend) = srt_listener(latency).await.map_err(bind_err)?;
        let front = front::Front::start(public, backend, metrics.clone()).map_err(bind_err)?;
        Ok(Self {
            cfg,
            hub,
            metrics,
            listener,
            incoming,
            front,
            draining: crate::drain::Drain::default(),
            hooks: None,
        })
    }

    /// Asks `hooks`' publish webhook (when one is configured) about each caller.
    pub fn set_hooks(&mut self, hooks: crate::auth::Hooks) {
        self.hooks = Some(hooks).filter(crate::auth::Hooks::publishing);
    }

    /// The drain switch: while it is on, new publishers are refused.
    pub fn draining(&self) -> crate::drain::Drain {
        self.draining.clone()
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.front.local_addr()
    }

    /// Accepts publishers until `token` is cancelled, then waits for their sessions to end.
    pub async fn run(mut self, token: CancellationToken) {
        // Resized to `srt.max_connections` on each caller, so a reload applies it.
        let permits = Cap::new(self.cfg.load().srt.max_connections);
        let tracker = TaskTracker::new();
        loop {
            let req = tokio::select! {
                () = token.cancelled() => break,
                r = self.incoming.incoming().next() => match r {
                    Some(r) => r,
                    None => {
                        // srt-protocol's listener task panics on some handshakes it does
                        // not implement (key material it did not expect). Every SRT
                        // session goes with it; bind a new listener so publishers can
                        // reconnect, rather than leaving ingest dead.
                        self.metrics.stream_errors.with_label_values(&["srt_listener_failed"]).inc();
                        tracing::error!("SRT listener stopped unexpectedly; binding it again");
                        if !self.rebind(&token).await {
                            break;
                        }
                        continue;
                    }
                },
            };
            let remote = self.front.caller(req.remote());
            let sid = req.stream_id().map(|s| s.to_string()).unwrap_or_default();
            let span = tracing::info_span!("publisher", %remote, streamid = %sid);
            permits.follow(self.cfg.load().srt.max_connections);
            let Ok(permit) = permits.permits().clone().try_acquire_owned() else {
                refuse(
                    &self.metrics,
                    req,
                    "overload",
                    ServerRejectReason::Overload,
                    &span,
                );
                continue;
            };
            let name = match streamid::parse(&sid) {
                Ok(r) => r.name,
                Err(e) => {
                    span.in_scope(|| tracing::warn!(error = %e, "bad streamid"));
                    refuse(
                        &self.metrics,
                        req,
                        "bad_streamid",
                        ServerRejectReason::BadRequest,
                        &span,
                    );
                    continue;
                }
            };
            // Without a webhook the decision is immediate; with one it waits for the
            // hook in the connection's task, while the caller's handshake is held
            // (srt-protocol ignores its retransmitted conclusions meanwhile).
            let hook = self.hooks.clone();
            let mut key = None;
            if hook.is_none() {
                match self.decider().decide(&name, req.key_size(), None) {
                    Decision::Accept(k) => key = k,
                    Decision::Reject(why, code) => {
                        refuse(&self.metrics, req, why, code, &span);
                        continue;
                    }
                }
                // A live stream refuses a second publisher at the handshake. The stream
                // is claimed only once the handshake succeeds, so a caller with a wrong
                // passphrase never holds it, even briefly.
                if self.hub.is_live(&name) {
                    let why = ServerRejectReason::Conflict;
                    refuse(&self.metrics, req, "already_publishing", why, &span);
                    continue;
                }
            }
            let decider = self.decider();
            let (cfg, metrics, token) = (self.cfg.get(), self.metrics.clone(), token.clone());
            let hub = self.hub.clone();
            tracker.spawn(
                async move {
                    let _permit = permit;
                    if let Some(hook) = hook {
                        let call = crate::auth::PublishCall {
                            action: "publish",
                            protocol: "srt",
                            stream: &name,
                            streamid: Some(&sid),
                            key: None,
                            remote_addr: remote,
                        };
                        let verdict = hook.publish(&call).await;
                        let span = tracing::Span::current();
                        match decider.decide(&name, req.key_size(), verdict) {
                            Decision::Accept(k) if !hub.is_live(&name) => key = k,
                            Decision::Accept(_) => {
                                let why = ServerRejectReason::Conflict;
                                return refuse(&metrics, req, "already_publishing", why, &span);
                            }
                            Decision::Reject(why, code) => {
                                return refuse(&metrics, req, why, code, &span);
                            }
                        }
                    }
                    let mut socket = match req.accept(key).await {
                        Ok(s) => s,
                        Err(e) => {
                            // A wrong passphrase ends here: the key unwrap fails inside the
                            // handshake and the caller gets SRT_REJ_BADSECRET.
                            metrics.srt_rejected.with_label_values(&["handshake_failed"]).inc();
                            tracing::warn!(error = %e, "publisher refused: handshake failed (wrong or missing passphrase?)");
                            return;
                        }
                    };
                    let mut session = match hub.publish(&name, crate::media::Input::MpegTs) {
                        Ok(s) => s,
                        Err(e) => {
                            // Another publisher finished its handshake first, or the
                            // pipeline could not start: this one is closed.
                            let reason = match e {
                                crate::live::PublishError::AlreadyLive(_) => "already_publishing",
                                crate::live::PublishError::Media(_) => "pipeline",
                            };
                            metrics.srt_rejected.with_label_values(&[reason]).inc();
                            tracing::warn!(error = %e, "publisher refused after the handshake");
                            let _ = tokio::time::timeout(
                                Duration::from_secs(1),
                                socket.close_and_finish(),
                            )
                            .await;
                            return;
                        }
                    };
                    session.describe("srt", remote);
                    session.progress().srt.latency_ms.store(
                        socket.settings().recv_tsbpd_latency.as_millis() as u64,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    tracing::info!(stream = %name, "publisher connected");
                    publish(socket, &name, &mut session, &cfg, &metrics, token).await;
                    if let Some(e) = session.finish().await {
                        metrics.stream_errors.with_label_values(&[e.reason()]).inc();
                        tracing::error!(stream = %name, error = %e, "stream torn down");
                    }
                    tracing::info!(stream = %name, "publisher gone");
                }
                .instrument(span),
            );
        }
        self.listener.close().await;
        tracker.close();
        tracker.wait().await;
    }

    /// Binds the listener again behind the front. Returns false when cancelled or out of
    /// tries.
    async fn rebind(&mut self, token: &CancellationToken) -> bool {
        for _ in 0..60 {
            let latency = self.cfg.load().srt.latency;
            match srt_listener(latency).await {
                Ok((listener, incoming, backend)) => {
                    self.listener = listener;
                    self.incoming = incoming;
                    self.front.set_backend(backend);
                    tracing::info!(addr = %self.local_addr(), "SRT listener bound again");
                    return true;
                }
                Err(e) => tracing::debug!(error = %e, "SRT rebind failed; retrying"),
            }
            tokio::select! {
                () = token.cancelled() => return false,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
        tracing::error!(addr = %self.local_addr(), "SRT listener could not be bound again");
        false
    }

    /// The publish decision, detached from the listener (it moves into a task).
    fn decider(&self) -> Decider {
        Decider {
            cfg: self.cfg.clone(),
            draining: self.draining.clone(),
            hub: self.hub.clone(),
        }
    }
}

/// The publish decision at the handshake, movable into a connection's task.
struct Decider {
    /// Read at each handshake, so a reload's streams and passphrases apply to the next
    /// caller while connected publishers keep their session.
    cfg: SharedConfig,
    draining: crate::drain::Drain,
    /// For the admin API's bans.
    hub: Arc<Hub>,
}

impl Decider {
    /// `verdict` is the publish webhook's answer, when one is configured: its deny
    /// refuses; its allow admits a stream even when it is not configured, with the
    /// hook's passphrase, else the configured one.
    fn decide(
        &self,
        name: &str,
        caller_key: KeySize,
        verdict: Option<crate::auth::PublishVerdict>,
    ) -> Decision {
        use crate::auth::PublishVerdict;
        if self.draining.is_draining() {
            return Decision::Reject("draining", ServerRejectReason::Down);
        }
        if self.hub.banned(name).is_some() {
            return Decision::Reject("banned", ServerRejectReason::Forbidden);
        }
        let cfg = self.cfg.load();
        let configured = cfg.streams.get(name);
        let passphrase = match verdict {
            Some(PublishVerdict::Deny(why)) => {
                return Decision::Reject(why, ServerRejectReason::Forbidden)
            }
            Some(PublishVerdict::Allow { passphrase, .. }) => {
                passphrase.or_else(|| configured.and_then(|s| s.passphrase.clone()))
            }
            None => match configured {
                Some(s) => s.passphrase.clone(),
                None if cfg.allow_unknown_streams && caller_key == KeySize::Unspecified => {
                    return Decision::Accept(None)
                }
                None => return Decision::Reject("unknown_stream", ServerRejectReason::Notfound),
            },
        };
        match (passphrase, caller_key) {
            (None, KeySize::Unspecified) => Decision::Accept(None),
            // srt-protocol panics when a caller sends key material that the listener did not
            // expect, so an encrypted caller on an open stream is refused here.
            (None, _) => Decision::Reject("unexpected_encryption", ServerRejectReason::BadMode),
            // libsrt callers (ffmpeg, OBS, srt-live-transmit, GStreamer) leave `pbkeylen` at
            // 0 by default and announce no key size, yet send AES-128 key material. Accept
            // them with the stream's passphrase and let the key exchange decide: a wrong or
            // missing passphrase then fails the handshake (BADSECRET / UNSECURE).
            (Some(p), size) => match Passphrase::try_from(p) {
                Ok(passphrase) => Decision::Accept(Some(KeySettings {
                    key_size: size,
                    passphrase,
                })),
                Err(_) => Decision::Reject("bad_config", ServerRejectReason::InternalServerError),
            },
        }
    }
}

/// Refuses a caller at the handshake, with a log line and a metric.
fn refuse(
    metrics: &Metrics,
    req: ConnectionRequest,
    why: &'static str,
    code: ServerRejectReason,
    span: &tracing::Span,
) {
    span.in_scope(|| tracing::warn!(reason = why, "publisher refused"));
    metrics.srt_rejected.with_label_values(&[why]).inc();
    tokio::spawn(async move {
        let _ = req.reject(RejectReason::Server(code)).await;
    });
}

/// Binds srt-tokio's listener on a loopback socket (the front relays to it).
///
/// Too-late packet drop is off: a packet whose retransmission outlasts `srt.latency`
/// delays the stream instead of being skipped. srt-protocol 0.4.4's receive buffer
/// (`ReceiveBuffer::drop_too_late_packets`) does not skip only the missing packet, as
/// libsrt does: once the packet after the gap is 5 ms past its play time it drops the
/// gap and every received packet behind it that is due, and it schedules no wake-up while
/// the gap heads the buffer, so that next packet is always among them. One late packet
/// thus cost a run of good ones (a corrupted picture). srt-protocol announces no TLPKTDROP
/// in its handshake, so libsrt senders never give up on a packet either: every gap is
/// filled, late at worst (`estuary_srt_late_packets_total`).
///
/// # Errors
/// When the loopback socket cannot be bound.
pub async fn srt_listener(
    latency: Duration,
) -> std::io::Result<(SrtListener, srt_tokio::SrtIncoming, SocketAddr)> {
    let udp = tokio::net::UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
    let local = udp.local_addr()?;
    let (listener, incoming) = SrtListener::builder()
        .latency(latency)
        .set(|o| o.receiver.too_late_packet_drop = false)
        .socket(udp)
        .bind(local)
        .await?;
    Ok((listener, incoming, local))
}

/// Moves bytes from the SRT socket into the session until either side ends.
async fn publish(
    mut socket: SrtSocket,
    name: &str,
    session: &mut crate::live::Session,
    cfg: &Config,
    metrics: &Metrics,
    token: CancellationToken,
) {
    let bytes_ctr = metrics.ingest_bytes.with_label_values(&[name]);
    let late_ctr = metrics.srt_late_packets.with_label_values(&[name]);
    // Past its play time by more than this, a message counts as late (the slack covers
    // scheduling between srt-tokio's task and this one).
    let late_after = socket.settings().recv_tsbpd_latency + Duration::from_millis(50);
    let mut stats = socket.statistics().clone();
    let (mut lost, mut retrans, mut dropped) = (0u64, 0u64, 0u64);
    let idle = cfg.srt.idle_timeout;
    let mut failed = session.failed();
    // Idle means no media, not no packets: SRT keep-alives, null packets or bare PSI tables
    // keep the socket busy without producing a single part.
    let mut media = (std::time::Instant::now(), 0u64);
    let mut idle_check = tokio::time::interval(Duration::from_secs(1));
    let kicked = session.progress().kick.clone();
    loop {
        tokio::select! {
            () = token.cancelled() => break,
            () = kicked.cancelled() => {
                tracing::warn!(stream = %name, "publisher kicked by the admin API, closing");
                break;
            }
            () = failed.cancelled() => match session.recover().await {
                Ok(why) => {
                    metrics.stream_errors.with_label_values(&[why.reason()]).inc();
                    tracing::info!(stream = %name, cause = %why, "pipeline rebuilt");
                    failed = session.failed();
                    media.0 = std::time::Instant::now();
                }
                Err(e) => {
                    if let Some(e) = e {
                        metrics.stream_errors.with_label_values(&[e.reason()]).inc();
                        tracing::error!(stream = %name, error = %e, "stream torn down");
                    }
                    break;
                }
            },
            item = tokio::time::timeout(idle, socket.next()) => match item {
                Ok(Some(Ok((sent, data)))) => {
                    // (srt-tokio gives the sender's time on our clock; play time is that
                    // plus the latency.)
                    if sent.elapsed() > late_after {
                        late_ctr.inc();
                    }
                    bytes_ctr.inc_by(data.len() as u64);
                    session.push(data);
                }
                Ok(Some(Err(e))) => {
                    tracing::warn!(error = %e, "SRT receive error");
                    break;
                }
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(idle = ?idle, "publisher idle, disconnecting");
                    metrics.stream_errors.with_label_values(&["idle"]).inc();
                    break;
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
                    break;
                }
            }
            Some(s) = stats.next() => {
                metrics.srt_rtt_ms.with_label_values(&[name]).set(s.rx_average_rtt.as_millis() as i64);
                let inc = |c: &prometheus::IntCounterVec, last: &mut u64, now: u64| {
                    c.with_label_values(&[name]).inc_by(now.saturating_sub(*last));
                    *last = now;
                };
                inc(&metrics.srt_lost_packets, &mut lost, s.rx_loss_data);
                inc(&metrics.srt_retransmits, &mut retrans, s.rx_retransmit_data);
                inc(&metrics.srt_dropped_packets, &mut dropped, s.rx_dropped_data);
                let link = &session.progress().srt;
                let set = |a: &std::sync::atomic::AtomicU64, v: u64| a.store(v, std::sync::atomic::Ordering::Relaxed);
                set(&link.rtt_us, s.rx_average_rtt.as_micros() as u64);
                set(&link.lost, s.rx_loss_data);
                set(&link.retransmitted, s.rx_retransmit_data);
                set(&link.dropped, s.rx_dropped_data);
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.close_and_finish()).await;
}
