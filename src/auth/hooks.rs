//! The publish and play webhooks: a JSON `POST` to the operator's server, over HTTP/1.1
//! or HTTP/2 (ALPN) with rustls, within a timeout, with `fail_open` deciding a failure.
//!
//! Request bodies ([`PublishCall`], [`PlayCall`]) and the answer ([`Answer`]) are the
//! documented wire format (README, "Webhooks"). A 2xx answer with `{"allow": …}` decides;
//! a 403 is a deny without a body; anything else (another status, a bad body, no
//! answer in time) is a failure.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{header, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use prometheus::{IntCounterVec, Opts, Registry};
use serde::{Deserialize, Serialize};

use super::AuthConfig;

/// Largest webhook answer read, in bytes.
const MAX_ANSWER: usize = 64 * 1024;

/// The body of a publish hook call.
#[derive(Debug, Serialize)]
pub struct PublishCall<'a> {
    /// Always `"publish"`.
    pub action: &'static str,
    /// `srt`, `rtmp` or `rtmps`.
    pub protocol: &'a str,
    /// The stream name.
    pub stream: &'a str,
    /// SRT: the caller's whole streamid.
    pub streamid: Option<&'a str>,
    /// RTMP: the `key` of the stream key (`NAME?key=KEY`), if any.
    pub key: Option<&'a str>,
    /// The publisher's address (`ip:port`).
    pub remote_addr: SocketAddr,
}

/// The body of a play hook call.
#[derive(Debug, Serialize)]
pub struct PlayCall<'a> {
    /// Always `"play"`.
    pub action: &'static str,
    /// The stream name.
    pub stream: &'a str,
    /// The playback token as the viewer sent it, if any.
    pub token: Option<&'a str>,
    /// The verified token's `id` (session id), if any.
    pub token_id: Option<&'a str>,
    /// The viewer's address (`ip:port`).
    pub remote_addr: SocketAddr,
    /// The request path (without a path-prefix token).
    pub path: &'a str,
    /// The viewer's `User-Agent`, if any.
    pub user_agent: Option<&'a str>,
}

/// A webhook's answer.
#[derive(Debug, Default, Deserialize)]
pub struct Answer {
    /// Whether to let the publisher or viewer in.
    pub allow: bool,
    /// Publish, SRT: the passphrase this publisher must use (10-79 characters).
    #[serde(default)]
    pub passphrase: Option<String>,
    /// Publish, RTMP: the key this publisher must give (`NAME?key=KEY`).
    #[serde(default)]
    pub rtmp_key: Option<String>,
    /// Why, for the log.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Why a call did not decide.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connecting or sending failed.
    #[error("request failed: {0}")]
    Request(String),
    /// A status other than 2xx or 403.
    #[error("answered {0}")]
    Status(u16),
    /// The body is not the expected JSON.
    #[error("bad answer: {0}")]
    Body(String),
}

impl HookError {
    fn label(&self) -> &'static str {
        match self {
            HookError::Timeout(_) => "timeout",
            _ => "error",
        }
    }
}

/// A publish decision after `fail_open` is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishVerdict {
    /// Let in; a secret from the hook replaces the configured one.
    Allow {
        /// SRT passphrase from the hook.
        passphrase: Option<String>,
        /// RTMP key from the hook.
        rtmp_key: Option<String>,
    },
    /// Refuse, with the metric reason (`hook_denied`, `hook_failed`).
    Deny(&'static str),
}

/// The webhook client, shared by ingest and HTTP.
#[derive(Clone)]
pub struct Hooks {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    cfg: Arc<AuthConfig>,
    auth: Option<header::HeaderValue>,
    calls: IntCounterVec,
}

impl Hooks {
    /// Builds the client and registers `estuary_auth_hook_calls_total`.
    ///
    /// # Errors
    /// A message when `hook_secret` is not a header value or TLS cannot be set up.
    pub fn new(cfg: Arc<AuthConfig>, registry: &Registry) -> Result<Self, String> {
        let tls = crate::upstream::tls_client_config(cfg.hook_ca_file.as_deref(), None)
            .map_err(|e| format!("auth.hook_ca_file: {e}"))?;
        let client = crate::upstream::client::small_client(tls);
        let auth = cfg
            .hook_secret
            .as_ref()
            .map(|s| header::HeaderValue::from_str(&format!("Bearer {s}")))
            .transpose()
            .map_err(|_| "auth.hook_secret is not a header value".to_owned())?;
        let calls = IntCounterVec::new(
            Opts::new(
                "estuary_auth_hook_calls_total",
                "Webhook calls, by hook (publish, play) and result (allow, deny, error, timeout)",
            ),
            &["hook", "result"],
        )
        .expect("valid");
        let _ = registry.register(Box::new(calls.clone()));
        Ok(Self {
            client,
            cfg,
            auth,
            calls,
        })
    }

    /// Whether a publish hook is configured.
    pub fn publishing(&self) -> bool {
        self.cfg.publish_url.is_some()
    }

    /// Asks the publish hook; `None` when none is configured.
    pub async fn publish(&self, call: &PublishCall<'_>) -> Option<PublishVerdict> {
        let url = self.cfg.publish_url.as_deref()?;
        let r = self
            .call("publish", url, call, self.cfg.publish_timeout)
            .await;
        Some(match r {
            Ok(a) if a.allow => PublishVerdict::Allow {
                passphrase: a.passphrase,
                rtmp_key: a.rtmp_key,
            },
            Ok(a) => {
                tracing::info!(stream = call.stream, reason = ?a.reason, "publish hook denied");
                PublishVerdict::Deny("hook_denied")
            }
            Err(e) if self.cfg.publish_fail_open => {
                tracing::warn!(stream = call.stream, error = %e, "publish hook failed; letting in (publish_fail_open)");
                PublishVerdict::Allow {
                    passphrase: None,
                    rtmp_key: None,
                }
            }
            Err(e) => {
                tracing::warn!(stream = call.stream, error = %e, "publish hook failed; refusing");
                PublishVerdict::Deny("hook_failed")
            }
        })
    }

    /// Asks the play hook (one call, no cache; see [`super::Auth`]).
    ///
    /// # Errors
    /// [`HookError`] when the hook did not decide.
    pub async fn play(&self, url: &str, call: &PlayCall<'_>) -> Result<bool, HookError> {
        let a = self.call("play", url, call, self.cfg.play_timeout).await?;
        if !a.allow {
            tracing::info!(stream = call.stream, reason = ?a.reason, "play hook denied");
        }
        Ok(a.allow)
    }

    async fn call(
        &self,
        hook: &'static str,
        url: &str,
        body: &impl Serialize,
        timeout: Duration,
    ) -> Result<Answer, HookError> {
        let r = match tokio::time::timeout(timeout, self.post(url, body)).await {
            Ok(r) => r,
            Err(_) => Err(HookError::Timeout(timeout)),
        };
        let result = match &r {
            Ok(a) if a.allow => "allow",
            Ok(_) => "deny",
            Err(e) => e.label(),
        };
        self.calls.with_label_values(&[hook, result]).inc();
        r
    }

    async fn post(&self, url: &str, body: &impl Serialize) -> Result<Answer, HookError> {
        let json = serde_json::to_vec(body).map_err(|e| HookError::Request(e.to_string()))?;
        let mut req = Request::post(url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("estuary/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(json)))
            .map_err(|e| HookError::Request(e.to_string()))?;
        if let Some(a) = &self.auth {
            req.headers_mut().insert(header::AUTHORIZATION, a.clone());
        }
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| HookError::Request(e.to_string()))?;
        let status = resp.status();
        if status == StatusCode::FORBIDDEN {
            return Ok(Answer::default());
        }
        if !status.is_success() {
            return Err(HookError::Status(status.as_u16()));
        }
        let body = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| HookError::Body(e.to_string()))?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| HookError::Body(e.to_string()))
    }
}
