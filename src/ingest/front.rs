//! The SRT port's UDP front: it owns the public socket and sees every datagram before
//! srt-tokio does.
//!
//! srt-protocol 0.4.4 parses a handshake as a whole, and one it cannot parse is dropped
//! without an answer (`PacketSocket::parse` in srt-tokio 0.4.4 only counts a parse error):
//! a caller whose streamid is not UTF-8 (`PacketParseError::StreamTypeNotUtf8`) would wait
//! out its connect timeout, uncounted. The front answers such a conclusion handshake itself
//! with a rejection (`SRT_REJX_BAD_REQUEST`) and counts it.
//!
//! Everything else goes on to srt-tokio's listener, which listens on a loopback socket:
//! each caller gets a loopback socket of its own, so srt-tokio still tells callers apart,
//! and [`Front::caller`] maps that socket's address back to the caller's. Datagrams from an
//! address that has not begun with a handshake are dropped (junk never reaches srt-tokio).

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use srt_protocol::packet::{Packet, RejectReason, ServerRejectReason, ShakeType};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Callers relayed at once; a handshake from another address is dropped beyond this.
const MAX_PEERS: usize = 1024;
/// A caller with no datagram either way for this long is forgotten (an SRT session sends
/// keep-alives or ACKs at least every second).
const PEER_IDLE: Duration = Duration::from_secs(10);
/// The SRT header and the handshake's fixed part (HSv5 extensions follow).
const HANDSHAKE_LEN: usize = 64;
/// The handshake type and socket id fields.
const SHAKE_TYPE: std::ops::Range<usize> = 36..40;
const SOCKET_ID: std::ops::Range<usize> = 40..44;

/// A running front; stops when dropped.
pub struct Front {
    inner: Arc<Inner>,
    stop: CancellationToken,
}

struct Inner {
    public: UdpSocket,
    local: SocketAddr,
    /// srt-tokio's loopback socket (a new one after a rebind).
    backend: Mutex<SocketAddr>,
    peers: Mutex<Peers>,
    metrics: Metrics,
    /// At most one line a second about refused handshakes, and one about junk.
    refusals: LogLimit,
    junk: LogLimit,
    start: Instant,
}

/// One log line a second at most; counts what it held back.
#[derive(Default)]
struct LogLimit(Mutex<(Option<Instant>, u64)>);

impl LogLimit {
    /// Counts an event; `Some(events since the last line)` when a line may be written.
    fn note(&self) -> Option<u64> {
        let mut s = self.0.lock().expect("not poisoned");
        s.1 += 1;
        let now = Instant::now();
        match s.0 {
            Some(t) if now.duration_since(t) < Duration::from_secs(1) => None,
            _ => {
                s.0 = Some(now);
                Some(std::mem::take(&mut s.1))
            }
        }
    }
}

#[derive(Default)]
struct Peers {
    by_caller: HashMap<SocketAddr, Peer>,
    /// Loopback address to caller.
    callers: HashMap<SocketAddr, SocketAddr>,
}

struct Peer {
    sock: Arc<UdpSocket>,
    local: SocketAddr,
    /// Milliseconds since the front started, at the last datagram either way.
    seen: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl Drop for Front {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Front {
    /// Starts relaying from `public` to `backend`.
    ///
    /// # Errors
    /// When the socket's address cannot be read.
    pub fn start(
        public: UdpSocket,
        backend: SocketAddr,
        metrics: Metrics,
    ) -> std::io::Result<Front> {
        let local = public.local_addr()?;
        let inner = Arc::new(Inner {
            public,
            local,
            backend: Mutex::new(backend),
            peers: Mutex::default(),
            metrics,
            refusals: LogLimit::default(),
            junk: LogLimit::default(),
            start: Instant::now(),
        });
        let stop = CancellationToken::new();
        tokio::spawn(inner.clone().run(stop.clone()));
        Ok(Front { inner, stop })
    }

    /// The public address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    /// Relays to a new srt-tokio socket; callers of the old one are forgotten.
    pub fn set_backend(&self, backend: SocketAddr) {
        *self.inner.backend.lock().expect("not poisoned") = backend;
        let old = std::mem::take(&mut *self.inner.peers.lock().expect("not poisoned"));
        for p in old.by_caller.into_values() {
            p.stop.cancel();
        }
    }

    /// The caller behind a loopback address srt-tokio reports (itself when unknown).
    pub fn caller(&self, relayed: SocketAddr) -> SocketAddr {
        let peers = self.inner.peers.lock().expect("not poisoned");
        peers.callers.get(&relayed).copied().unwrap_or(relayed)
    }
}

impl Inner {
    async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut buf = vec![0u8; 65536];
        loop {
            let (n, from) = tokio::select! {
                () = stop.cancelled() => break,
                r = self.public.recv_from(&mut buf) => match r {
                    Ok(r) => r,
                    // (An ICMP error for an earlier send; nothing to do.)
                    Err(_) => continue,
                },
            };
            self.datagram(&buf[..n], from).await;
        }
        let peers = std::mem::take(&mut *self.peers.lock().expect("not poisoned"));
        for p in peers.by_caller.into_values() {
            p.stop.cancel();
        }
    }

    async fn datagram(self: &Arc<Self>, data: &[u8], from: SocketAddr) {
        let handshake = is_handshake(data);
        if handshake {
            if let Some(why) = unparsable_conclusion(data, self.local.is_ipv6()) {
                return self.refuse(data, from, why).await;
            }
        }
        let now = self.millis();
        let sock = {
            let peers = self.peers.lock().expect("not poisoned");
            peers.by_caller.get(&from).map(|p| {
                p.seen.store(now, Ordering::Relaxed);
                p.sock.clone()
            })
        };
        let sock = match sock {
            Some(s) => s,
            // Only a handshake opens a way through.
            None if handshake => match self.open(from).await {
                Some(s) => s,
                None => return,
            },
            None => {
                if let Some(n) = self.junk.note() {
                    tracing::warn!(remote = %from, dropped = n,
                        "SRT port: datagrams from no caller dropped (count since the last such line)");
                }
                return;
            }
        };
        let _ = sock.send(data).await;
    }

    /// Answers a conclusion srt-tokio would drop, with a rejection, a metric and a log line.
    async fn refuse(&self, data: &[u8], to: SocketAddr, why: PacketError) {
        let _ = self.public.send_to(&rejection(data), to).await;
        self.metrics
            .srt_rejected
            .with_label_values(&[why.reason()])
            .inc();
        if let Some(n) = self.refusals.note() {
            tracing::warn!(remote = %to, reason = why.reason(), error = %why.0, refused = n,
                "publisher refused: handshake unreadable (count since the last such line)");
        }
    }

    /// A loopback socket for a new caller, relaying srt-tokio's answers back to it.
    async fn open(self: &Arc<Self>, caller: SocketAddr) -> Option<Arc<UdpSocket>> {
        if self.peers.lock().expect("not poisoned").by_caller.len() >= MAX_PEERS {
            tracing::debug!(remote = %caller, "SRT front full; handshake dropped");
            return None;
        }
        let backend = *self.backend.lock().expect("not poisoned");
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.ok()?;
        sock.connect(backend).await.ok()?;
        let local = sock.local_addr().ok()?;
        let sock = Arc::new(sock);
        let peer = Peer {
            sock: sock.clone(),
            local,
            seen: Arc::new(AtomicU64::new(self.millis())),
            stop: CancellationToken::new(),
        };
        let (seen, stop) = (peer.seen.clone(), peer.stop.clone());
        {
            let mut peers = self.peers.lock().expect("not poisoned");
            peers.callers.insert(local, caller);
            if let Some(old) = peers.by_caller.insert(caller, peer) {
                old.stop.cancel();
                peers.callers.remove(&old.local);
            }
        }
        tokio::spawn(self.clone().back(caller, sock.clone(), seen, stop));
        Some(sock)
    }

    /// Relays srt-tokio's datagrams for `caller` until the caller goes quiet.
    async fn back(
        self: Arc<Self>,
        caller: SocketAddr,
        sock: Arc<UdpSocket>,
        seen: Arc<AtomicU64>,
        stop: CancellationToken,
    ) {
        let mut buf = vec![0u8; 65536];
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                r = sock.recv(&mut buf) => match r {
                    Ok(n) => {
                        seen.store(self.millis(), Ordering::Relaxed);
                        let _ = self.public.send_to(&buf[..n], caller).await;
                    }
                    // The backend is gone (a rebind): forget the caller.
                    Err(_) => break,
                },
                _ = tick.tick() => {
                    let idle = self.millis().saturating_sub(seen.load(Ordering::Relaxed));
                    if idle > PEER_IDLE.as_millis() as u64 {
                        break;
                    }
                }
            }
        }
        let mut peers = self.peers.lock().expect("not poisoned");
        if peers
            .by_caller
            .get(&caller)
            .is_some_and(|p| Arc::ptr_eq(&p.sock, &sock))
        {
            if let Some(p) = peers.by_caller.remove(&caller) {
                peers.callers.remove(&p.local);
            }
        }
    }

    fn millis(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}

/// Why srt-protocol could not read a conclusion handshake.
struct PacketError(srt_protocol::packet::PacketParseError);

impl PacketError {
    fn reason(&self) -> &'static str {
        match self.0 {
            srt_protocol::packet::PacketParseError::StreamTypeNotUtf8(_) => "bad_streamid",
            _ => "bad_handshake",
        }
    }
}

/// An SRT control packet of type handshake, at least as long as its fixed part.
fn is_handshake(data: &[u8]) -> bool {
    data.len() >= HANDSHAKE_LEN && data[0] == 0x80 && data[1] == 0
}

/// A conclusion handshake (the one carrying the streamid) that srt-protocol fails to parse.
fn unparsable_conclusion(data: &[u8], ipv6: bool) -> Option<PacketError> {
    let shake = i32::from_be_bytes(data[SHAKE_TYPE].try_into().ok()?);
    if shake != i32::from(ShakeType::Conclusion) {
        return None;
    }
    Packet::parse(&mut &data[..], ipv6).err().map(PacketError)
}

/// The rejection answering `request`: its header and fixed part, addressed to the caller's
/// socket, with the handshake type set to the reject code and no extensions.
fn rejection(request: &[u8]) -> [u8; HANDSHAKE_LEN] {
    let mut r = [0u8; HANDSHAKE_LEN];
    r.copy_from_slice(&request[..HANDSHAKE_LEN]);
    // Control, handshake; no type-specific information.
    r[0..8].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0]);
    // Destination: the caller's socket id.
    r[12..16].copy_from_slice(&request[SOCKET_ID]);
    // No extensions follow.
    r[22..24].copy_from_slice(&[0, 0]);
    let code = ShakeType::Rejection(RejectReason::Server(ServerRejectReason::BadRequest));
    r[SHAKE_TYPE].copy_from_slice(&i32::from(code).to_be_bytes());
    // Our socket id: none was made; any non-zero value will do.
    r[SOCKET_ID].copy_from_slice(&1u32.to_be_bytes());
    r
}

/// The HSv5 conclusion extensions a libsrt caller sends (HSREQ: SRT 1.5.0, TSBPD both
/// ways, 120 ms; then the streamid, packed in 32-bit words of reversed bytes and padded
/// with zeros), for callers written by hand: the tests, which must send what libsrt
/// refuses to (a streamid over 512 bytes).
pub fn extensions(sid: &[u8]) -> Vec<u8> {
    let mut p = vec![0, 1, 0, 3, 0, 1, 5, 0, 0, 0, 0, 0xbf, 0, 0x78, 0, 0x78];
    let mut sid = sid.to_vec();
    sid.resize(sid.len().div_ceil(4) * 4, 0);
    p.extend_from_slice(&5u16.to_be_bytes());
    p.extend_from_slice(&((sid.len() / 4) as u16).to_be_bytes());
    for w in sid.chunks(4) {
        p.extend(w.iter().rev());
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A conclusion handshake as libsrt sends it, with `sid` as its streamid extension.
    fn conclusion(sid: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        p.extend_from_slice(&5u32.to_be_bytes()); // version
        p.extend_from_slice(&[0, 0, 0, 5]); // no encryption; HSREQ and CONFIG extensions
        p.extend_from_slice(&7u32.to_be_bytes()); // initial sequence number
        p.extend_from_slice(&1500u32.to_be_bytes());
        p.extend_from_slice(&8192u32.to_be_bytes());
        p.extend_from_slice(&(-1i32).to_be_bytes());
        p.extend_from_slice(&0x1234_5678u32.to_be_bytes()); // caller's socket id
        p.extend_from_slice(&99i32.to_be_bytes()); // cookie
        p.extend_from_slice(&[127, 0, 0, 1]);
        p.extend_from_slice(&[0; 12]);
        p.extend_from_slice(&extensions(sid));
        p
    }

    #[test]
    fn only_unreadable_conclusions_are_refused() {
        let good = conclusion(b"live/demo");
        assert!(is_handshake(&good));
        assert!(unparsable_conclusion(&good, false).is_none());
        let bad = conclusion(&[0xff, 0xfe, b'a', b'b', b'c']);
        assert!(is_handshake(&bad));
        let why = unparsable_conclusion(&bad, false).expect("refused");
        assert_eq!(why.reason(), "bad_streamid");
        // Data packets and short junk are not handshakes.
        assert!(!is_handshake(&[0u8; 100]));
        assert!(!is_handshake(&[0x80, 0, 0, 0]));
    }

    #[test]
    fn rejection_answers_the_callers_socket_with_bad_request() {
        let bad = conclusion(&[0xff, 0xfe]);
        let r = rejection(&bad);
        let p = Packet::parse(&mut &r[..], false).expect("parses");
        let Packet::Control(c) = p else {
            panic!("not control")
        };
        assert_eq!(c.dest_sockid.0, 0x1234_5678);
        let srt_protocol::packet::ControlTypes::Handshake(h) = c.control_type else {
            panic!("not a handshake")
        };
        assert_eq!(
            h.shake_type,
            ShakeType::Rejection(RejectReason::Server(ServerRejectReason::BadRequest))
        );
    }
}
