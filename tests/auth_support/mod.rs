//! Helpers for the access-control tests: tokens minted by the `estuary sign` subcommand
//! and, independently, by openssl; requests with headers from a chosen local address;
//! every URI of a playlist; and a webhook server (hyper) whose answers the test scripts.
#![allow(dead_code)]

use std::{
    convert::Infallible,
    io::Write,
    net::{IpAddr, SocketAddr},
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioIo},
};
use serde_json::Value;

use crate::common::*;

/// The node-wide playback key in these tests (hex, 32 bytes).
pub const KEY: &str = "5ec7e7c0ffee00112233445566778899aabbccddeeff00112233445566778899";
/// Another key, for tokens that must not verify.
pub const OTHER_KEY: &str = "0000000000000000000000000000000000000000000000000000000000000001";

/// `estuary sign` with the node's config; `extra` adds flags (`--ip`, `--start`…).
pub fn sign(node: &Node, stream: &str, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_estuary"))
        .arg("--config")
        .arg(node.dir.join("estuary.toml"))
        .args(["sign", "--stream", stream])
        .args(extra)
        .output()
        .expect("run estuary sign");
    assert!(
        out.status.success(),
        "estuary sign failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(t.contains("~hmac="), "not a token: {t:?}");
    t
}

/// A token signed by openssl (the README's shell recipe): `body~hmac=HMAC-SHA256(key, body)`.
pub fn openssl_token(key_hex: &str, body: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-mac", "HMAC", "-macopt"])
        .arg(format!("hexkey:{key_hex}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mac = text.trim().rsplit(' ').next().unwrap().to_owned();
    assert_eq!(mac.len(), 64, "openssl said {text:?}");
    format!("{body}~hmac={mac}")
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The token as a query value (what `__token__=` carries).
pub fn q(token: &str) -> String {
    token
        .replace('%', "%25")
        .replace('/', "%2F")
        .replace('&', "%26")
        .replace('+', "%2B")
}

/// GET `url` with `headers`, from `local` when given (e.g. 127.0.0.2).
pub async fn get_with(url: &str, local: Option<IpAddr>, headers: &[(&str, &str)]) -> Resp {
    let mut http = HttpConnector::new();
    http.set_local_address(local);
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(http);
    let mut req = hyper::Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(20),
        client.request(req.body(Empty::new()).unwrap()),
    )
    .await
    .expect("request timed out")
    .expect("request failed");
    into_resp(resp).await
}

/// Asserts a 403 with the JSON refusal `code`.
pub fn assert_refused(r: &Resp, code: &str) {
    assert_eq!(r.status, 403, "expected 403 {code}: {}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap_or_else(|_| panic!("{}", r.text()));
    assert_eq!(v["code"], code, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert_eq!(r.header("content-type"), "application/json");
}

/// Every URI in a playlist: URI lines and `URI="…"` attributes of every tag.
pub fn all_uris(text: &str) -> Vec<String> {
    parse_playlist(text)
        .into_iter()
        .flat_map(|l| match l {
            Line::Uri(u) => vec![u],
            Line::Tag(_, v) if v.contains("URI=\"") => attrs(&v)
                .into_iter()
                .filter(|(k, _)| k == "URI")
                .map(|(_, u)| u)
                .collect(),
            Line::Tag(..) => vec![],
        })
        .collect()
}

/// Resolves a relative `uri` against `base` (a URL of a playlist).
pub fn resolve(base: &str, uri: &str) -> String {
    let dir = &base[..base.split('?').next().unwrap().rfind('/').unwrap() + 1];
    let mut parts: Vec<&str> = dir.trim_end_matches('/').split('/').collect();
    let mut rest = uri;
    while let Some(r) = rest.strip_prefix("../") {
        parts.pop();
        rest = r;
    }
    format!("{}/{rest}", parts.join("/"))
}

/// What the scripted webhook answers: a delay, a status and a JSON body.
pub type HookScript = Arc<dyn Fn(&Value) -> (Duration, u16, Value) + Send + Sync>;

/// A webhook server: records every call's JSON body (and its `Authorization`) and
/// answers what `script` says.
pub struct HookServer {
    pub addr: SocketAddr,
    pub calls: Arc<Mutex<Vec<(Value, String)>>>,
    /// The HTTP version of each call.
    pub versions: Arc<Mutex<Vec<hyper::Version>>>,
    tls: bool,
}

impl HookServer {
    pub async fn start(script: HookScript) -> HookServer {
        Self::start_with(script, None).await
    }

    /// Over TLS with `cert.pem` / `key.pem`, offering h2 and http/1.1 by ALPN.
    pub async fn start_tls(script: HookScript, cert: &Path, key: &Path) -> HookServer {
        use tokio_rustls::rustls;
        let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
            std::fs::File::open(cert).unwrap(),
        ))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
        let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
            std::fs::File::open(key).unwrap(),
        ))
        .unwrap()
        .unwrap();
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self::start_with(script, Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))).await
    }

    async fn start_with(script: HookScript, tls: Option<tokio_rustls::TlsAcceptor>) -> HookServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls: Arc<Mutex<Vec<(Value, String)>>> = Arc::default();
        let versions: Arc<Mutex<Vec<hyper::Version>>> = Arc::default();
        let (rec, vrec) = (calls.clone(), versions.clone());
        let is_tls = tls.is_some();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (script, rec, vrec) = (script.clone(), rec.clone(), vrec.clone());
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (script, rec) = (script.clone(), rec.clone());
                        vrec.lock().unwrap().push(req.version());
                        async move {
                            let auth = req
                                .headers()
                                .get("authorization")
                                .map(|v| v.to_str().unwrap().to_owned())
                                .unwrap_or_default();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            rec.lock().unwrap().push((v.clone(), auth));
                            let (delay, status, answer) = script(&v);
                            tokio::time::sleep(delay).await;
                            let resp = hyper::Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(answer.to_string())))
                                .unwrap();
                            Ok::<_, Infallible>(resp)
                        }
                    },
                );
                let tls = tls.clone();
                tokio::spawn(async move {
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = match tls {
                        None => builder.serve_connection(TokioIo::new(tcp), svc).await,
                        Some(acc) => match acc.accept(tcp).await {
                            Ok(io) => builder.serve_connection(TokioIo::new(io), svc).await,
                            Err(_) => return,
                        },
                    };
                });
            }
        });
        HookServer {
            addr,
            calls,
            versions,
            tls: is_tls,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/hook", self.addr)
    }

    /// Calls so far with `"action": action` (and `"stream": stream` when given).
    pub fn count(&self, action: &str, stream: Option<&str>) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(v, _)| v["action"] == action && stream.is_none_or(|s| v["stream"] == s))
            .count()
    }

    /// The last call with `"action": action`.
    pub fn last(&self, action: &str) -> (Value, String) {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(v, _)| v["action"] == action)
            .cloned()
            .expect("no such call")
    }
}
