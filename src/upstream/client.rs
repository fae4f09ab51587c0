//! The upstream HTTP client: hyper's pooled client, HTTP/2 with prior knowledge to
//! `http://` origins (one connection carries every follower's requests), ALPN h2 or
//! HTTP/1.1 over rustls to `https://` origins, with the shared secret on every request.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{header, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client as HyperClient},
    rt::TokioExecutor,
};

use super::{config::UpstreamConfig, metrics::UpstreamMetrics, UpstreamError};

/// What a request is for (its metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The multivariant playlist.
    Multivariant,
    /// A media playlist, not blocking.
    Playlist,
    /// A blocking media playlist reload.
    Blocking,
    /// The preload-hinted part, requested before it exists.
    Hint,
    /// A listed part.
    Part,
    /// A segment.
    Segment,
    /// An init segment.
    Init,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Multivariant => "multivariant",
            Kind::Playlist => "playlist",
            Kind::Blocking => "blocking",
            Kind::Hint => "hint",
            Kind::Part => "part",
            Kind::Segment => "segment",
            Kind::Init => "init",
        }
    }
}

/// The shared client.
#[derive(Clone)]
pub struct Client {
    plain: HyperClient<HttpConnector, Empty<Bytes>>,
    tls: HyperClient<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    auth: Option<header::HeaderValue>,
    max_body: usize,
    metrics: UpstreamMetrics,
}

impl Client {
    /// Builds the client; reads the CA file when one is configured.
    ///
    /// # Errors
    /// [`UpstreamError::Setup`] when the CA file or the secret cannot be used.
    pub fn new(cfg: &UpstreamConfig, metrics: UpstreamMetrics) -> Result<Self, UpstreamError> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(Duration::from_secs(3)));
        http.set_nodelay(true);
        http.enforce_http(false);
        // HTTP/2 pings find a connection that died silently (no FIN, no RST), which the
        // pool would otherwise keep handing out.
        let builder = || {
            let mut b = HyperClient::builder(TokioExecutor::new());
            b.pool_idle_timeout(Duration::from_secs(90))
                .timer(hyper_util::rt::TokioTimer::new())
                .pool_timer(hyper_util::rt::TokioTimer::new())
                .http2_keep_alive_interval(Duration::from_secs(5))
                .http2_keep_alive_timeout(Duration::from_secs(5))
                .http2_keep_alive_while_idle(true)
                // Segments cross long paths too: let the window grow with the link.
                .http2_adaptive_window(true);
            b
        };
        let plain = builder()
            .http2_only(cfg.cleartext_http2)
            .build(http.clone());

        let identity = match (&cfg.client_cert, &cfg.client_key) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            _ => None,
        };
        let tls_cfg =
            tls_client_config(cfg.ca_file.as_deref(), identity).map_err(UpstreamError::Setup)?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_cfg)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let tls = builder().build(https);
        let auth = match &cfg.secret {
            Some(s) => Some(
                header::HeaderValue::from_str(&format!("Bearer {s}")).map_err(|_| {
                    UpstreamError::Setup("upstream.secret is not a header value".into())
                })?,
            ),
            None => None,
        };
        Ok(Self {
            plain,
            tls,
            auth,
            max_body: usize::try_from(cfg.max_body).unwrap_or(usize::MAX),
            metrics,
        })
    }

    /// GETs `url` and collects its body within `timeout`.
    ///
    /// # Errors
    /// [`UpstreamError`] for a bad URL, a refused or failed connection, a status other
    /// than 2xx, a body that is cut short or too large, or the timeout.
    pub async fn get(
        &self,
        url: &str,
        kind: Kind,
        timeout: Duration,
    ) -> Result<Bytes, UpstreamError> {
        let r = match tokio::time::timeout(timeout, self.fetch(url)).await {
            Ok(r) => r,
            Err(_) => Err(UpstreamError::Timeout),
        };
        let result = match &r {
            Ok(b) => {
                self.metrics.bytes.inc_by(b.len() as u64);
                "ok"
            }
            Err(e) => e.label(),
        };
        self.metrics
            .requests
            .with_label_values(&[kind.label(), result])
            .inc();
        if let Err(e) = &r {
            tracing::debug!(%url, kind = kind.label(), error = %e, "upstream request failed");
        }
        r
    }

    async fn fetch(&self, url: &str) -> Result<Bytes, UpstreamError> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|_| UpstreamError::Url(url.to_owned()))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(UpstreamError::Url(url.to_owned())),
        };
        let mut req = Request::get(uri)
            .body(Empty::new())
            .map_err(|_| UpstreamError::Url(url.to_owned()))?;
        if let Some(a) = &self.auth {
            req.headers_mut().insert(header::AUTHORIZATION, a.clone());
        }
        req.headers_mut()
            .insert(super::TIER_HEADER, header::HeaderValue::from_static("pull"));
        let resp = if https {
            self.tls.request(req).await
        } else {
            self.plain.request(req).await
        }
        .map_err(|e| UpstreamError::Connect(error_chain(&e)))?;
        match resp.status() {
            s if s.is_success() => {}
            StatusCode::NOT_FOUND | StatusCode::GONE => return Err(UpstreamError::NotFound),
            s => return Err(UpstreamError::Status(s.as_u16())),
        }
        let body = Limited::new(resp.into_body(), self.max_body)
            .collect()
            .await
            .map_err(|e| UpstreamError::Body(e.to_string()))?;
        Ok(body.to_bytes())
    }
}

/// A pooled client for small requests to `http://` or `https://` URLs (HTTP/1.1, or
/// HTTP/2 by ALPN): the webhooks' and the steering probes'.
pub fn small_client<B>(
    tls: tokio_rustls::rustls::ClientConfig,
) -> HyperClient<HttpsConnector<HttpConnector>, B>
where
    B: hyper::body::Body + Send,
    B::Data: Send,
{
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(Duration::from_secs(3)));
    http.set_nodelay(true);
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    HyperClient::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(https)
}

/// A rustls client config trusting the system's roots plus `ca_file`, presenting
/// `identity` (certificate chain, key) to servers that ask for one. Shared by the
/// upstream client and the auth webhooks.
///
/// # Errors
/// A message naming the file that cannot be used.
pub fn tls_client_config(
    ca_file: Option<&std::path::Path>,
    identity: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<tokio_rustls::rustls::ClientConfig, String> {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
    if let Some(path) = ca_file {
        let setup = |e: String| format!("{}: {e}", path.display());
        let f = std::fs::File::open(path).map_err(|e| setup(e.to_string()))?;
        let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(f))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| setup(e.to_string()))?;
        if certs.is_empty() {
            return Err(setup("no certificate".into()));
        }
        for c in certs {
            roots.add(c).map_err(|e| setup(e.to_string()))?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots);
    match identity {
        Some((cert, key)) => {
            let (chain, key) = client_identity(cert, key).map_err(|e| e.to_string())?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("upstream.client_cert: {e}"))
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

/// Reads the client certificate chain and key for `https://` origins that ask for one.
fn client_identity(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<
    (
        Vec<tokio_rustls::rustls::pki_types::CertificateDer<'static>>,
        tokio_rustls::rustls::pki_types::PrivateKeyDer<'static>,
    ),
    UpstreamError,
> {
    let open = |p: &std::path::Path| {
        std::fs::File::open(p)
            .map(std::io::BufReader::new)
            .map_err(|e| UpstreamError::Setup(format!("{}: {e}", p.display())))
    };
    let chain = rustls_pemfile::certs(&mut open(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| UpstreamError::Setup(format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(UpstreamError::Setup(format!(
            "{}: no certificate",
            cert.display()
        )));
    }
    let key = rustls_pemfile::private_key(&mut open(key)?)
        .map_err(|e| UpstreamError::Setup(format!("{}: {e}", key.display())))?
        .ok_or_else(|| UpstreamError::Setup(format!("{}: no private key", key.display())))?;
    Ok((chain, key))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
