//! systemd integration: readiness and status over `sd_notify`, the watchdog, and
//! socket activation. Every piece is a no-op when the node does not run under systemd
//! (`NOTIFY_SOCKET`, `WATCHDOG_USEC`, `LISTEN_FDS` unset), so `cargo run` behaves as before.
//!
//! - `sd-notify` (pure Rust, no libsystemd to link or ship) sends the datagrams.
//! - `listenfd` turns the inherited descriptors into std sockets after checking each one's
//!   family and type, so this crate keeps `#![forbid(unsafe_code)]`.

use std::{
    net::{TcpListener, UdpSocket},
    time::Duration,
};

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// How often `STATUS=` is refreshed when no watchdog asks for more.
pub const STATUS_EVERY: Duration = Duration::from_secs(5);

/// Env var that, in debug builds only, makes the watchdog's runtime probe never complete,
/// so tests can see the pings stop as they would on a stalled runtime.
#[cfg(debug_assertions)]
pub const DEBUG_STALL_WATCHDOG: &str = "ESTUARY_DEBUG_STALL_WATCHDOG";

/// Sockets handed over by the service manager (`LISTEN_FDS`), by role.
///
/// Roles come from `LISTEN_FDNAMES` (`FileDescriptorName=` in the `.socket` units:
/// `http`, `srt`). Unnamed descriptors are assigned by type: the first TCP listener
/// serves HTTP, the first UDP socket SRT. RTMP always binds its own address.
#[derive(Debug, Default)]
pub struct Inherited {
    /// The HTTP (or HTTPS) listener.
    pub http: Option<TcpListener>,
    /// The SRT UDP socket.
    pub srt: Option<UdpSocket>,
}

impl Inherited {
    /// Takes the inherited descriptors out of the environment. Call it before any thread
    /// starts: it unsets `LISTEN_FDS`/`LISTEN_PID` so children do not inherit them.
    ///
    /// # Errors
    /// A message naming the descriptor that is of a kind or name the node cannot use.
    pub fn from_env() -> Result<Self, String> {
        let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
            .map(|n| n.split(':').map(str::to_owned).collect())
            .unwrap_or_default();
        let mut fds = listenfd::ListenFd::from_env();
        let mut out = Self::default();
        for i in 0..fds.len() {
            let name = names.get(i).map(String::as_str).unwrap_or("");
            let fd = 3 + i;
            match name {
                "http" => {
                    out.http = fds
                        .take_tcp_listener(i)
                        .map_err(|e| format!("inherited fd {fd} (http): {e}"))?;
                }
                "srt" => {
                    out.srt = fds
                        .take_udp_socket(i)
                        .map_err(|e| format!("inherited fd {fd} (srt): {e}"))?;
                }
                // systemd names unnamed sockets "unknown"; systemd-socket-activate too.
                "" | "unknown" | "stored" | "connection" => {
                    if let Ok(Some(l)) = fds.take_tcp_listener(i) {
                        if out.http.is_none() {
                            out.http = Some(l);
                            continue;
                        }
                        return Err(format!("inherited fd {fd}: a second TCP listener (only HTTP is socket-activated)"));
                    }
                    match fds.take_udp_socket(i) {
                        Ok(Some(s)) if out.srt.is_none() => out.srt = Some(s),
                        _ => {
                            return Err(format!(
                            "inherited fd {fd}: not a TCP listener or UDP socket the node can use"
                        ))
                        }
                    }
                }
                other => {
                    return Err(format!(
                        "inherited fd {fd}: unknown FileDescriptorName {other:?} (http or srt)"
                    ))
                }
            }
        }
        Ok(out)
    }

    /// Whether any socket was inherited.
    pub fn any(&self) -> bool {
        self.http.is_some() || self.srt.is_some()
    }
}

/// Tells the service manager the node is up (`READY=1`) with a first status line.
pub fn ready(status: &str) {
    if let Err(e) = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)]) {
        tracing::warn!(error = %e, "sd_notify READY failed");
    }
}

/// Tells the service manager the node is stopping.
pub fn stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

/// Tells the service manager a reload started (`RELOADING=1`, with the
/// `MONOTONIC_USEC=` systemd 253+ asks for beside it).
pub fn reloading() {
    let mut states = vec![
        NotifyState::Reloading,
        NotifyState::Status("reloading config"),
    ];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    let _ = sd_notify::notify(&states);
}

/// Tells the service manager the reload is over and the node is ready (`READY=1`).
pub fn reloaded() {
    let _ = sd_notify::notify(&[NotifyState::Ready]);
}

/// The status line: what an operator wants from `systemctl status`.
pub fn status_line(publishers: i64, viewers: i64) -> String {
    format!("publishers {publishers}, viewers {viewers}")
}

/// Sends `STATUS=` lines every [`STATUS_EVERY`] and, when systemd asked for a watchdog
/// (`WatchdogSec=`), `WATCHDOG=1` at half its interval, until cancelled.
///
/// A ping is sent only after a probe task spawned on the runtime has run and answered:
/// a runtime whose workers are all blocked, or whose timer no longer fires, stops the
/// pings and systemd restarts the node.
pub async fn supervise(status: impl Fn() -> String + Send, token: CancellationToken) {
    let watchdog = sd_notify::watchdog_enabled();
    let every = watchdog.map_or(STATUS_EVERY, |w| (w / 2).min(STATUS_EVERY));
    if let Some(w) = watchdog {
        tracing::info!(interval = ?w, "systemd watchdog enabled");
    }
    #[cfg(debug_assertions)]
    let stall = std::env::var_os(DEBUG_STALL_WATCHDOG).is_some_and(|v| v == "1");
    #[cfg(not(debug_assertions))]
    let stall = false;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        let line = status();
        let mut states = vec![NotifyState::Status(&line)];
        if watchdog.is_some() {
            // The round trip: a fresh task must be scheduled, run and reply.
            let probe = tokio::spawn(async move {
                if stall {
                    std::future::pending::<()>().await;
                }
            });
            tokio::select! {
                () = token.cancelled() => return,
                r = probe => if r.is_ok() { states.push(NotifyState::Watchdog) },
            }
        }
        if let Err(e) = sd_notify::notify(&states) {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_publishers_and_viewers() {
        assert_eq!(status_line(2, 31), "publishers 2, viewers 31");
    }
}
