//! `estuary admin …`: calls a node's admin API and prints a table, or the API's JSON
//! with `--json`.
//!
//! Exit status: 0 when the node did it, 1 when it refused or failed (the message names
//! the API's error code), 64 on a usage error (no token), 69 when the node is
//! unreachable.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{header, Method, Request};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::Value;

use crate::config::Config;

const EX_USAGE: u8 = 64;
const EX_UNAVAILABLE: u8 = 69;
/// Longest wait for an answer (a kick waits up to 5 s for the publisher to go).
const TIMEOUT: Duration = Duration::from_secs(20);
/// Largest answer read.
const MAX_BODY: usize = 16 << 20;

/// `estuary admin` options.
#[derive(clap::Args, Debug)]
pub struct AdminArgs {
    /// Base URL of the node (e.g. `http://127.0.0.1:8080`); by default derived from
    /// `http.listen` of `--config`, else `http://127.0.0.1:8080`.
    #[arg(long, env = "ESTUARY_ADMIN_URL", global = true)]
    pub url: Option<String>,
    /// The admin token (`[admin] token`); by default the one in `--config`.
    #[arg(
        long,
        env = "ESTUARY_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
    /// Print the API's JSON answer instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// The admin actions.
#[derive(clap::Subcommand, Debug)]
pub enum AdminCommand {
    /// List live publishers with their statistics, and publish bans in force.
    Publishers,
    /// Close a stream's publisher connection; its playlists stay and continue when it
    /// reconnects.
    Kick {
        /// The stream.
        stream: String,
        /// Also refuse publishers of the stream for this long (e.g. `60s`, `10m`), so an
        /// encoder's auto-reconnect does not come straight back.
        #[arg(long, value_parser = humantime::parse_duration)]
        ban: Option<Duration>,
    },
    /// Lift a publish ban early.
    Unban {
        /// The stream.
        stream: String,
    },
    /// HLS viewers (distinct clients fetching media playlists lately) per stream and
    /// rendition, and WebSocket connections.
    Viewers,
    /// Cache occupancy, in all and by stream.
    Cache,
    /// The config in force, secrets redacted (always JSON).
    Config,
    /// Start draining the node: `/readyz` 503, new publishers refused, exit once the
    /// last publisher and viewer leave (or after `drain_timeout`).
    Drain,
}

/// Runs an admin command; returns the exit status.
pub fn run(args: &AdminArgs, cfg: Option<&Config>) -> u8 {
    let Some(token) = args
        .token
        .clone()
        .or_else(|| cfg.map(|c| c.admin.token.clone()))
        .filter(|t| !t.is_empty())
    else {
        eprintln!("estuary admin: no token: pass --token, set ESTUARY_ADMIN_TOKEN, or --config with [admin] token");
        return EX_USAGE;
    };
    let base = args
        .url
        .clone()
        .unwrap_or_else(|| cfg.map_or_else(|| "http://127.0.0.1:8080".into(), default_url));
    let (method, path) = match &args.command {
        AdminCommand::Publishers => (Method::GET, "/admin/publishers".to_owned()),
        AdminCommand::Kick { stream, .. } | AdminCommand::Unban { stream }
            if crate::ingest::streamid::validate_name(stream).is_err() =>
        {
            eprintln!("estuary admin: {stream:?} is not a valid stream name");
            return EX_USAGE;
        }
        AdminCommand::Kick { stream, ban } => {
            let q = ban.map_or(String::new(), |b| format!("?ban={}ms", b.as_millis()));
            (Method::POST, format!("/admin/publishers/{stream}/kick{q}"))
        }
        AdminCommand::Unban { stream } => {
            (Method::POST, format!("/admin/publishers/{stream}/unban"))
        }
        AdminCommand::Viewers => (Method::GET, "/admin/viewers".into()),
        AdminCommand::Cache => (Method::GET, "/admin/cache".into()),
        AdminCommand::Config => (Method::GET, "/admin/config".into()),
        AdminCommand::Drain => (Method::POST, "/admin/drain".into()),
    };
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("estuary admin: {e}");
            return 1;
        }
    };
    let (status, body) = match rt.block_on(call(method, &url, &token)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("estuary admin: {url}: {e}");
            return EX_UNAVAILABLE;
        }
    };
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if !status.is_success() {
        let code = json["code"].as_str().unwrap_or("error");
        let msg = json["message"].as_str().map_or_else(
            || String::from_utf8_lossy(&body).trim().to_owned(),
            str::to_owned,
        );
        eprintln!("estuary admin: {status} {code}: {msg}");
        return 1;
    }
    if args.json || matches!(args.command, AdminCommand::Config) {
        println!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        );
    } else {
        print!("{}", render(&args.command, &json));
    }
    0
}

/// `http(s)://{http.listen}`, with a wildcard address replaced by loopback.
fn default_url(cfg: &Config) -> String {
    let mut addr = cfg.http.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let scheme = if cfg.http.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{addr}")
}

async fn call(
    method: Method,
    url: &str,
    token: &str,
) -> Result<(hyper::StatusCode, Bytes), String> {
    let roots = {
        let mut r = tokio_rustls::rustls::RootCertStore::empty();
        for c in rustls_native_certs::load_native_certs().certs {
            let _ = r.add(c);
        }
        r
    };
    let tls = tokio_rustls::rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(TIMEOUT, client.request(req))
        .await
        .map_err(|_| "no answer in time".to_owned())?
        .map_err(|e| {
            format!(
                "{e} ({})",
                std::error::Error::source(&e)
                    .map(ToString::to_string)
                    .unwrap_or_default()
            )
        })?;
    let status = resp.status();
    let body = tokio::time::timeout(TIMEOUT, Limited::new(resp.into_body(), MAX_BODY).collect())
        .await
        .map_err(|_| "answer too slow".to_owned())?
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// A readable rendering of an answer.
fn render(cmd: &AdminCommand, v: &Value) -> String {
    let s = |v: &Value| match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let list = |k: &str| v[k].as_array().cloned().unwrap_or_default();
    match cmd {
        AdminCommand::Publishers => {
            let rows = list("publishers")
                .iter()
                .map(|p| {
                    let srt = &p["srt"];
                    vec![
                        s(&p["stream"]),
                        s(&p["protocol"]),
                        s(&p["remote"]),
                        format!("{}s", s(&p["uptime_s"])),
                        p["bitrate_kbps"].as_f64().map_or("-".into(), |b| format!("{b:.0} kb/s")),
                        s(&p["bytes"]),
                        srt["rtt_ms"].as_f64().map_or("-".into(), |r| format!("{r:.1} ms")),
                        s(&srt["lost"]),
                        srt["latency_ms"].as_u64().map_or("-".into(), |l| format!("{l} ms")),
                    ]
                })
                .collect();
            let mut out = table(
                &["STREAM", "PROTOCOL", "REMOTE", "UPTIME", "BITRATE", "BYTES", "RTT", "LOST", "LATENCY"],
                rows,
            );
            for b in list("bans") {
                out.push_str(&format!("banned: {} for {}s more\n", s(&b["stream"]), s(&b["remaining_s"])));
            }
            out
        }
        AdminCommand::Kick { .. } => {
            let mut out = format!(
                "kicked {} ({} from {})",
                s(&v["stream"]),
                s(&v["protocol"]),
                s(&v["remote"])
            );
            if v["closed"] != Value::Bool(true) {
                out.push_str("; its session is still closing");
            }
            if v["ban_s"].as_u64().unwrap_or(0) > 0 {
                out.push_str(&format!("; publishing refused for {}s", s(&v["ban_s"])));
            }
            out + "\n"
        }
        AdminCommand::Unban { .. } => format!("{}: ban lifted\n", s(&v["stream"])),
        AdminCommand::Viewers => {
            let rows = list("streams")
                .iter()
                .map(|st| {
                    let renditions = st["renditions"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, n)| format!("{k}={n}"))
                                .collect::<Vec<_>>()
                                .join(" ")
                        })
                        .unwrap_or_default();
                    vec![s(&st["stream"]), s(&st["hls"]), s(&st["websocket"]), renditions]
                })
                .collect();
            let mut out = table(&["STREAM", "HLS", "WEBSOCKET", "RENDITIONS"], rows);
            out.push_str(&format!(
                "(HLS: distinct clients that fetched a media playlist in the last {}s)\n",
                s(&v["window_s"])
            ));
            out
        }
        AdminCommand::Cache => {
            let mut rows: Vec<Vec<String>> = v["streams"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, u)| vec![k.clone(), s(&u["entries"]), s(&u["bytes"])])
                        .collect()
                })
                .unwrap_or_default();
            rows.push(vec![
                "(total)".into(),
                s(&v["total"]["entries"]),
                format!("{} of {}", s(&v["total"]["bytes"]), s(&v["max_bytes"])),
            ]);
            table(&["STREAM", "ENTRIES", "BYTES"], rows)
        }
        AdminCommand::Drain => format!(
            "draining: /readyz answers 503, new publishers are refused; the node exits when the last publisher and viewer leave, or after {}s\n",
            s(&v["drain_timeout_secs"])
        ),
        AdminCommand::Config => format!("{v:#}\n"),
    }
}

/// Left-aligned columns, two spaces apart.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut l = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        l.truncate(l.trim_end().len());
        l + "\n"
    };
    let mut out = line(headers.iter().map(|h| (*h).to_owned()).collect());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(&["A", "BB"], vec![vec!["long".into(), "x".into()]]);
        assert_eq!(t, "A     BB\nlong  x\n");
    }

    #[test]
    fn default_url_uses_loopback_for_a_wildcard() {
        let mut cfg = Config::builtin();
        cfg.http.listen = "0.0.0.0:8081".parse().unwrap();
        assert_eq!(default_url(&cfg), "http://127.0.0.1:8081");
        cfg.http.listen = "[::]:8081".parse().unwrap();
        assert_eq!(default_url(&cfg), "http://[::1]:8081");
    }
}
