//! Helpers for the interaction integration tests: a node (the real `estuary` binary, or an
//! in-process hyper server routing to `Interact` while the binary is not wired), and a real
//! WebSocket client (tokio-tungstenite) with bounded waits.
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use estuary::interact::{mint_token, Interact, InteractConfig, Role, WallClock};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::{TcpListener, TcpStream},
};
use tokio_tungstenite::{
    tungstenite::{self, protocol::frame::coding::CloseCode, Message},
    MaybeTlsStream, WebSocketStream,
};
use tokio_util::sync::CancellationToken;

/// The token secret every test node uses.
pub const SECRET: &str = "test-secret-0123456789";
/// Longest wait for any one expected frame.
pub const WAIT: Duration = Duration::from_secs(10);

/// Mints a token for the test secret, good for every stream (`*`).
pub fn token(role: Role, id: &str) -> String {
    token_for(role, id, Some("*"))
}

/// Mints a token for the test secret scoped to `stream` (a name or glob; `None`: unscoped).
pub fn token_for(role: Role, id: &str, stream: Option<&str>) -> String {
    mint_token(
        SECRET,
        role,
        id,
        &format!("{id}-name"),
        stream,
        Duration::from_secs(600),
    )
    .unwrap()
}

/// Streams every binary test node configures (`[streams.NAME]`): a room exists only for a
/// configured or live stream, and the tests use these names without publishing.
pub const STREAMS: &[&str] = &[
    "bad", "bidi", "demo", "perm", "ping", "poll", "qa", "react", "rl", "room1", "show", "slow",
];

/// How the node runs.
enum Kind {
    Binary(Box<tokio::process::Child>, tempdir::Dir),
    InProcess(CancellationToken),
}

/// A running node with an HTTP address.
pub struct Node {
    /// The HTTP listen address.
    pub http: SocketAddr,
    kind: Kind,
}

mod tempdir {
    /// A temporary directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Whether to run the real binary: yes when it is built and routes the interaction
/// channel; `ESTUARY_INTERACT_INPROCESS=1` forces the in-process server.
fn use_binary() -> Option<&'static str> {
    if std::env::var_os("ESTUARY_INTERACT_INPROCESS").is_some() {
        return None;
    }
    option_env!("CARGO_BIN_EXE_estuary").filter(|_| BINARY_WIRED)
}

/// Set once `estuary` routes `/live/{s}/events` and `/api/` to `Interact`.
const BINARY_WIRED: bool = true;

impl Node {
    /// Starts a node with `interact` (TOML lines of the `[interact]` section, without the
    /// header) on top of the test defaults (token secret, fast tally and reaction timers).
    pub async fn start(interact: &str) -> Result<Self> {
        let mut section = format!("token_secret = \"{SECRET}\"\n{interact}\n");
        for (k, v) in [
            ("poll_tally_interval", "\"100ms\""),
            ("reaction_interval", "\"100ms\""),
        ] {
            if !interact.contains(k) {
                section.push_str(&format!("{k} = {v}\n"));
            }
        }
        match use_binary() {
            Some(bin) => Self::start_binary(bin, &section).await,
            None => Self::start_in_process(&section).await,
        }
    }

    async fn start_binary(bin: &str, section: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "estuary-interact-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir)?;
        let dir = tempdir::Dir(dir);
        let cfg = dir.0.join("estuary.toml");
        let streams: String = STREAMS.iter().map(|s| format!("[streams.{s}]\n")).collect();
        std::fs::write(
            &cfg,
            format!(
                "allow_unknown_streams = true\n{streams}[http]\nlisten = \"127.0.0.1:0\"\n[srt]\nlisten = \"127.0.0.1:0\"\n[rtmp]\nlisten = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\n[interact]\n{section}\n"
            ),
        )?;
        let mut child = tokio::process::Command::new(bin)
            .arg("--config")
            .arg(&cfg)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("spawning estuary")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let http = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if v["event"] == "listening" {
                    return v["http"]
                        .as_str()
                        .context("no http address")?
                        .parse::<SocketAddr>()
                        .context("bad http address");
                }
            }
            bail!("estuary exited before listening")
        })
        .await
        .context("timed out waiting for estuary to listen")??;
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            http,
            kind: Kind::Binary(Box::new(child), dir),
        })
    }

    async fn start_in_process(section: &str) -> Result<Self> {
        let cfg: InteractConfig = toml::from_str(section)?;
        let token = CancellationToken::new();
        let hub = Interact::start(
            cfg,
            Arc::new(WallClock),
            &prometheus::Registry::new(),
            token.clone(),
        )
        .await?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let http = listener.local_addr()?;
        let t = token.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    _ = t.cancelled() => return,
                    r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                };
                // Frames are small and already batched per flush: Nagle would only add delay.
                let _ = tcp.set_nodelay(true);
                let hub = hub.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let hub = hub.clone();
                            async move {
                                let path = req.uri().path().to_owned();
                                let resp = if let Some(s) = path
                                    .strip_prefix("/live/")
                                    .and_then(|r| r.strip_suffix("/events"))
                                {
                                    hub.handle_ws(s, req)
                                } else if path.starts_with("/api/") {
                                    hub.handle_api(&path, req).await
                                } else {
                                    let mut r = hyper::Response::new(http_body_util::Full::new(
                                        bytes::Bytes::new(),
                                    ));
                                    *r.status_mut() = hyper::StatusCode::NOT_FOUND;
                                    r
                                };
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Ok(Self {
            http,
            kind: Kind::InProcess(token),
        })
    }

    /// `ws://` URL of a stream's events with optional query.
    pub fn ws_url(&self, stream: &str, query: &str) -> String {
        format!("ws://{}/live/{stream}/events{query}", self.http)
    }

    /// Connects with an optional token.
    pub async fn connect(&self, stream: &str, token: Option<&str>) -> Result<Client> {
        let q = token.map(|t| format!("?token={t}")).unwrap_or_default();
        Client::connect(&self.ws_url(stream, &q)).await
    }

    /// Kills the node (binary) or cancels it (in-process).
    pub async fn stop(&mut self) {
        match &mut self.kind {
            Kind::Binary(child, _) => {
                let _ = child.kill().await;
            }
            Kind::InProcess(t) => t.cancel(),
        }
    }

    /// A plain HTTP request to the node; returns status and body.
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: &str,
    ) -> Result<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = TcpStream::connect(self.http).await?;
        let auth = bearer
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.http,
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await??;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| anyhow!("bad response {text:?}"))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        // Chunked bodies: keep only the JSON object.
        let body = match (body.find('{'), body.rfind('}')) {
            (Some(a), Some(b)) if b >= a => body[a..=b].to_owned(),
            _ => body,
        };
        Ok((status, body))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Kind::InProcess(t) = &self.kind {
            t.cancel();
        }
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A WebSocket client.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The welcome frame.
    pub welcome: Value,
}

impl Client {
    /// Connects and reads the welcome frame.
    pub async fn connect(url: &str) -> Result<Self> {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url)).await??;
        let mut c = Self {
            ws,
            welcome: Value::Null,
        };
        c.welcome = c.expect("welcome").await?;
        Ok(c)
    }

    /// Sends a JSON value as a text frame.
    pub async fn send(&mut self, v: Value) -> Result<()> {
        self.ws.send(Message::text(v.to_string())).await?;
        Ok(())
    }

    /// Sends raw text.
    pub async fn send_raw(&mut self, s: &str) -> Result<()> {
        self.ws.send(Message::text(s.to_owned())).await?;
        Ok(())
    }

    /// Next JSON frame (skipping pings), within [`WAIT`].
    pub async fn next(&mut self) -> Result<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = tokio::time::timeout(left, self.ws.next())
                .await
                .map_err(|_| anyhow!("timed out waiting for a frame"))?
                .ok_or_else(|| anyhow!("connection ended"))??;
            match m {
                Message::Text(t) => return Ok(serde_json::from_str(t.as_str())?),
                Message::Close(f) => bail!("closed: {f:?}"),
                _ => continue,
            }
        }
    }

    /// Next frame of type `ty`, skipping at most 10,000 others, within [`WAIT`].
    pub async fn expect(&mut self, ty: &str) -> Result<Value> {
        let deadline = Instant::now() + WAIT;
        for _ in 0..10_000 {
            if Instant::now() > deadline {
                break;
            }
            let v = self.next().await?;
            assert_eq!(v["v"], 1, "every frame has v=1: {v}");
            if v["type"] == ty {
                return Ok(v);
            }
        }
        bail!("no {ty} frame")
    }

    /// Next frame matching `pred`, skipping at most 10,000 others, within [`WAIT`].
    pub async fn expect_where(
        &mut self,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + WAIT;
        for _ in 0..10_000 {
            if Instant::now() > deadline {
                break;
            }
            let v = self.next().await?;
            if pred(&v) {
                return Ok(v);
            }
        }
        bail!("no frame matching {what}")
    }

    /// Sends `v` with a `ref` and returns the matching `ack` or `error`.
    pub async fn request(&mut self, v: Value, r: &str) -> Result<Value> {
        self.send_ref(v, r).await?;
        self.reply(r).await
    }

    /// Reads until the server closes; returns the close code, reading at most `max` frames.
    pub async fn close_code(&mut self, max: usize) -> Result<Option<u16>> {
        let deadline = Instant::now() + Duration::from_secs(20);
        for _ in 0..max {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => bail!("timed out waiting for close"),
                Ok(None) => return Ok(None),
                Ok(Some(Err(tungstenite::Error::ConnectionClosed))) => return Ok(None),
                Ok(Some(Err(_))) => return Ok(None),
                Ok(Some(Ok(Message::Close(f)))) => {
                    return Ok(f.map(|f| u16::from(f.code)));
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
        bail!("no close within {max} frames")
    }
}

/// A WebSocket upgrade the node must refuse: its HTTP status and the `error` code of its
/// JSON body.
pub async fn refused(url: &str) -> Result<(u16, String)> {
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url)).await? {
        Ok(_) => bail!("{url}: upgrade accepted"),
        Err(tungstenite::Error::Http(resp)) => {
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap_or_default())
                .context("refusal body is not JSON")?;
            Ok((
                resp.status().as_u16(),
                body["code"].as_str().unwrap_or_default().to_owned(),
            ))
        }
        Err(e) => bail!("{url}: {e}"),
    }
}

impl Node {
    /// POSTs a two-option poll to `stream`'s server API with `token`: the status and the
    /// JSON body.
    pub async fn post_poll(&self, stream: &str, token: &str) -> Result<(u16, Value)> {
        let (status, body) = self
            .http(
                "POST",
                &format!("/api/streams/{stream}/polls"),
                Some(token),
                r#"{"question":"Q?","options":["x","y"],"duration_secs":60}"#,
            )
            .await?;
        Ok((status, serde_json::from_str(&body)?))
    }

    /// Opens a two-option poll in `stream` through the server API; returns its id.
    pub async fn open_poll(&self, stream: &str, host: &str) -> Result<String> {
        let (status, body) = self.post_poll(stream, host).await?;
        anyhow::ensure!(status == 201, "poll not opened: {status} {body}");
        Ok(body["id"].as_str().context("no poll id")?.to_owned())
    }
}

impl Client {
    /// Sends chat every 200 ms, at most 50 times, until one is acknowledged.
    pub async fn chat_until_ack(&mut self) -> Result<bool> {
        for i in 0..50 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let r = self
                .request(
                    serde_json::json!({"type":"chat","text":format!("again {i}")}),
                    &format!("again{i}"),
                )
                .await?;
            if r["type"] == "ack" {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Sends `v` with `ref` = `r` without waiting; read the reply with [`Client::reply`].
    pub async fn send_ref(&mut self, mut v: Value, r: &str) -> Result<()> {
        v["ref"] = r.into();
        v["v"] = 1.into();
        self.send(v).await
    }

    /// The `ack` or `error` for `ref` = `r`.
    pub async fn reply(&mut self, r: &str) -> Result<Value> {
        let r = r.to_owned();
        self.expect_where("reply", move |f| {
            (f["type"] == "ack" || f["type"] == "error") && f["ref"] == r.as_str()
        })
        .await
    }
}

/// Of two replies to the same action by one user, exactly one is an `ack` and the other a
/// `duplicate` error.
pub fn one_ack_one_duplicate(a: &Value, b: &Value) {
    let acks = [a, b].iter().filter(|f| f["type"] == "ack").count();
    assert_eq!(acks, 1, "{a} {b}");
    let refusal = if a["type"] == "error" { a } else { b };
    assert_eq!(refusal["code"], "duplicate", "{refusal}");
}

/// Close code helper for readability.
pub fn code(c: CloseCode) -> u16 {
    u16::from(c)
}
