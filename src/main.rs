//! The `estuary` binary: parses the CLI, loads the config, runs the node until SIGTERM.
//! The only unsafe code is one `mallopt` call ([`pin_mmap_threshold`]); the library
//! forbids it. Rust's allocations go to jemalloc ([`GLOBAL`]); GStreamer's stay on glibc.
#![deny(unsafe_code)]

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use estuary::{
    config::Config,
    interact::{mint_token, Role},
    node::Node,
};
use tokio_util::sync::CancellationToken;

/// Edge node for interactive low-latency live streaming (SRT in, LL-HLS out).
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// TOML config file; without one the built-in defaults run (one open stream `demo`).
    #[arg(short, long, env = "ESTUARY_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Override `http.listen`.
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// Override `srt.listen`.
    #[arg(long)]
    srt_listen: Option<SocketAddr>,
    /// Override `rtmp.listen`.
    #[arg(long)]
    rtmp_listen: Option<SocketAddr>,
    /// Also publish a built-in test pattern (burnt-in clock and frame counter) over SRT
    /// to this node as stream `demo`; watch it at /watch/demo.
    #[arg(long)]
    demo: bool,
    /// Log line format: `text` or `json` (one object per line).
    #[arg(
        long,
        env = "ESTUARY_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    log_format: estuary::logging::LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate a config file without starting anything: exit 0, or 64 with a message
    /// naming the key.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
    /// Mint an interaction token (HS256) and print it.
    Token {
        /// `viewer`, `moderator` or `host`.
        #[arg(long, default_value = "viewer")]
        role: String,
        /// User id.
        #[arg(long)]
        user: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// The stream the token is good for: a name or a glob (`live/*`, `*`). Required for
        /// moderator and host tokens; a viewer token without it works in every room.
        #[arg(long)]
        stream: Option<String>,
        /// Lifetime, e.g. `1h`, `30m`.
        #[arg(long, default_value = "12h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// Signing secret; defaults to `interact.token_secret` from the config.
        #[arg(long, env = "ESTUARY_TOKEN_SECRET")]
        secret: Option<String>,
    },
    /// Call a running node's admin API (`[admin] token`): publishers, kick, viewers,
    /// cache, config, drain.
    Admin(estuary::admin::client::AdminArgs),
    /// Mint a signed playback token (Akamai EdgeAuth, ACL `/live/NAME/*`) with the key
    /// from the config, and print it.
    Sign {
        /// The stream.
        #[arg(long)]
        stream: String,
        /// Lifetime, e.g. `1h`, `30m`.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// Valid from this Unix time (written as `st`); without it, valid at once.
        #[arg(long)]
        start: Option<u64>,
        /// Bind the token to this client address.
        #[arg(long)]
        ip: Option<std::net::IpAddr>,
        /// Session id (`id`), e.g. the order or viewer id; the play webhook sees it.
        #[arg(long)]
        id: Option<String>,
    },
}

/// Exit status for a bad config (EX_USAGE), as sysexits.h has it.
const EX_USAGE: u8 = 64;

/// Fixes glibc's mmap threshold at its initial 128 KiB, before any thread starts.
///
/// glibc raises the threshold to the size of each large block it unmaps (up to 32 MiB),
/// after which video frames, x264's buffers and segments come from the heap arenas,
/// which fragment and are never given back: RSS grew about 40 MB at every publisher
/// reconnect on the shipped ladder (`scripts/soak.sh`), with the media cache flat. Set
/// explicitly, the threshold stops moving, so large blocks go back to the kernel when
/// freed. An operator's own `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=…` (or
/// `MALLOC_MMAP_THRESHOLD_`) wins.
fn pin_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tuned = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("mmap_threshold"))
            || std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some();
        if !tuned {
            // SAFETY: mallopt only sets an allocator parameter; it is called first thing
            // in main, before any other thread exists. A 0 return (refused) changes nothing.
            #[allow(unsafe_code)]
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
            }
        }
    }
}

/// The node's Rust heap is jemalloc, not glibc's malloc. Media parts (tens to hundreds
/// of KiB each) are allocated and freed across the tokio workers and GStreamer's
/// threads; glibc spreads threads over many arenas and keeps what is freed in them, so
/// under load RSS grew about 15 MB a minute (`scripts/soak.sh`) while the live data stayed
/// flat. jemalloc returns freed pages to the kernel after a decay time (`dirty_decay_ms`,
/// 10 s), with a background thread doing it when the node is quiet. `_RJEM_MALLOC_CONF`
/// sets its options; its symbols are prefixed, so glibc's `malloc` stays GStreamer's.
/// `/metrics` shows its figures ([`estuary::heap`]).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    pin_mmap_threshold();
    // Purge freed pages on jemalloc's decay schedule even when no thread allocates.
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
    let cli = Cli::parse();
    if let Some(Command::CheckConfig { file }) = &cli.command {
        return match Config::load(file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("estuary: {e}");
                ExitCode::from(EX_USAGE)
            }
        };
    }
    if let Some(Command::Admin(args)) = &cli.command {
        // The config is optional here: it only supplies the URL and token defaults.
        let cfg = match cli.config.as_deref().map(Config::load).transpose() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("estuary: {e}");
                return ExitCode::from(EX_USAGE);
            }
        };
        return ExitCode::from(estuary::admin::client::run(args, cfg.as_ref()));
    }
    let log_limit = estuary::logging::init(cli.log_format);
    // Before any thread starts: taking the descriptors unsets LISTEN_FDS in the environment.
    let inherited = match estuary::systemd::Inherited::from_env() {
        Ok(i) => i,
        Err(e) => {
            eprintln!("estuary: socket activation: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let mut cfg = match &cli.config {
        Some(p) => match Config::load(p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("estuary: {e}");
                return ExitCode::from(EX_USAGE);
            }
        },
        None => Config::builtin(),
    };
    if let Some(Command::Token {
        role,
        user,
        name,
        stream,
        ttl,
        secret,
    }) = &cli.command
    {
        let secret = secret
            .clone()
            .unwrap_or_else(|| cfg.interact.token_secret.clone());
        if secret.is_empty() {
            eprintln!(
                "estuary: no secret: set interact.token_secret in the config or pass --secret"
            );
            return ExitCode::from(EX_USAGE);
        }
        if *ttl > cfg.interact.max_token_ttl {
            eprintln!(
                "estuary: --ttl is longer than interact.max_token_ttl ({}); the node would refuse the token",
                humantime::format_duration(cfg.interact.max_token_ttl)
            );
            return ExitCode::from(EX_USAGE);
        }
        let minted = role
            .parse()
            .map_err(|e: estuary::interact::InteractError| e.to_string())
            .and_then(|role| match (role, stream) {
                (Role::Moderator | Role::Host, None) => Err(
                    "moderator and host tokens need --stream NAME (or a glob such as 'live/*')"
                        .to_owned(),
                ),
                (role, stream) => mint_token(&secret, role, user, name, stream.as_deref(), *ttl)
                    .map_err(|e| e.to_string()),
            });
        return print_minted(minted);
    }
    if let Some(Command::Sign {
        stream,
        ttl,
        start,
        ip,
        id,
    }) = &cli.command
    {
        let ip = ip.map(|i| i.to_string());
        return print_minted(estuary::auth::mint_for(
            &cfg,
            stream,
            *ttl,
            *start,
            ip,
            id.clone(),
        ));
    }
    let overrides = Overrides {
        http: cli.http_listen,
        srt: cli.srt_listen,
        rtmp: cli.rtmp_listen,
        // A secret for this run only, so the demo can hand out host and viewer links.
        demo_secret: cli.demo.then(|| random_hex(32)),
    };
    overrides.apply(&mut cfg);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("estuary: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A reload reads the file again and applies the same command-line overrides.
    let source = cli.config.clone().map(|path| -> estuary::reload::Source {
        std::sync::Arc::new(move || {
            let mut cfg = Config::load(&path)?;
            overrides.apply(&mut cfg);
            Ok(cfg)
        })
    });
    rt.block_on(run(cfg, cli.demo, log_limit, inherited, source))
}

/// What the command line changes in the file's config, at start and on each reload.
struct Overrides {
    http: Option<SocketAddr>,
    srt: Option<SocketAddr>,
    rtmp: Option<SocketAddr>,
    /// With `--demo`: the interaction secret used when the file has none.
    demo_secret: Option<String>,
}

impl Overrides {
    fn apply(&self, cfg: &mut Config) {
        if let Some(a) = self.http {
            cfg.http.listen = a;
        }
        if let Some(a) = self.srt {
            cfg.srt.listen = a;
        }
        if let Some(a) = self.rtmp {
            cfg.rtmp.listen = a;
        }
        if let Some(secret) = &self.demo_secret {
            cfg.streams.entry("demo".into()).or_default();
            if cfg.interact.token_secret.is_empty() {
                cfg.interact.token_secret = secret.clone();
            }
        }
    }
}

/// Prints a minted token (exit 0) or the error (exit 64).
fn print_minted(minted: Result<String, String>) -> ExitCode {
    match minted {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("estuary: {e}");
            ExitCode::from(EX_USAGE)
        }
    }
}

async fn run(
    cfg: Config,
    demo: bool,
    log_limit: std::sync::Arc<estuary::logging::RateLimit>,
    inherited: estuary::systemd::Inherited,
    source: Option<estuary::reload::Source>,
) -> ExitCode {
    use tokio::signal::unix::{signal, SignalKind};
    // Installed before anything listens: the default action of each of these signals
    // ends the process at once, so one sent right after "listening" (systemd stopping a
    // unit that has just started, a test) would skip the graceful shutdown.
    let mut hangup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut usr1 = signal(SignalKind::user_defined1()).expect("SIGUSR1 handler");
    let token = CancellationToken::new();
    tokio::spawn(estuary::logging::report(log_limit, token.clone()));
    let demo_cfg_secret = cfg.interact.token_secret.clone();
    let demo_cfg = estuary::demo::DemoConfig {
        srt: cfg.srt.listen,
        stream: "demo".into(),
        passphrase: cfg.streams.get("demo").and_then(|s| s.passphrase.clone()),
    };
    let activated = inherited.any();
    let node = match Node::start_with(cfg, token.clone(), inherited).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("estuary: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(http = %node.http_addr, srt = %node.srt_addr, rtmp = ?node.rtmp_addr, rtmps = ?node.rtmps_addr, socket_activated = activated, "estuary listening");
    // One machine-readable line, so tests and scripts can find ports bound as :0. RTMP and
    // RTMPS appear only when they listen.
    let optional =
        |k: &str, a: Option<SocketAddr>| a.map(|a| format!(",\"{k}\":\"{a}\"")).unwrap_or_default();
    println!(
        "{{\"event\":\"listening\",\"http\":\"{}\",\"srt\":\"{}\"{}{}}}",
        node.http_addr,
        node.srt_addr,
        optional("rtmp", node.rtmp_addr),
        optional("rtmps", node.rtmps_addr),
    );
    // Every listener is bound: tell systemd (Type=notify), then keep STATUS= current and
    // feed the watchdog from a task that proves the runtime still schedules work.
    let reloader = node.reloader();
    if let Some(source) = source {
        reloader.set_source(source);
    }
    // SIGHUP reloads the config (`systemctl reload estuary`); the reload logs its outcome.
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the config");
            let _ = reloader.reload().await;
        }
    });
    let status = node.status_fn();
    estuary::systemd::ready(&status());
    tokio::spawn(estuary::systemd::supervise(status, token.clone()));
    if demo {
        let secret = &demo_cfg_secret;
        let host = mint_token(
            secret,
            Role::Host,
            "host",
            "Host",
            Some("demo"),
            std::time::Duration::from_secs(86_400),
        );
        let viewer = mint_token(
            secret,
            Role::Viewer,
            "viewer",
            "Viewer",
            Some("demo"),
            std::time::Duration::from_secs(86_400),
        );
        if let (Ok(h), Ok(v)) = (host, viewer) {
            let base = format!("http://localhost:{}/watch/demo", node.http_addr.port());
            eprintln!(
                "\n  demo player:  {base}?token={v}\n  demo host:    {base}?role=host&token={h}\n"
            );
        }
    }
    let demo_task = demo.then(|| {
        let mut c = demo_cfg;
        c.srt = match node.srt_addr {
            a if a.ip().is_unspecified() => SocketAddr::new([127, 0, 0, 1].into(), a.port()),
            a => a,
        };
        tokio::spawn(estuary::demo::run(c, token.clone()))
    });
    let drain = node.drain();
    tokio::select! {
        _ = term.recv() => {}
        _ = interrupt.recv() => {}
        () = drained(&node, &drain, &mut usr1) => {}
    }
    // Read now: a reload may have changed it.
    let grace = node.config().shutdown_grace;
    estuary::systemd::stopping();
    tracing::info!(grace = ?grace, "shutting down");
    token.cancel();
    if let Some(t) = demo_task {
        let _ = t.await;
    }
    if tokio::time::timeout(grace + std::time::Duration::from_secs(1), node.wait())
        .await
        .is_err()
    {
        tracing::warn!("components did not stop within the grace period");
    }
    ExitCode::SUCCESS
}

/// Waits for a drain to start (`POST /admin/drain` or SIGUSR1) and to finish: no
/// publisher and no interaction viewer left, or `timeout`. SIGTERM still cuts it short.
async fn drained(
    node: &Node,
    drain: &estuary::drain::Drain,
    usr1: &mut tokio::signal::unix::Signal,
) {
    tokio::select! {
        () = drain.started() => {}
        _ = usr1.recv() => {
            drain.start();
        }
    }
    let timeout = node.config().drain_timeout;
    let (publishers, viewers) = node.sessions();
    tracing::warn!(publishers, viewers, timeout = ?timeout, "draining: refusing new publishers, /readyz is 503");
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {
                let (publishers, viewers) = node.sessions();
                tracing::warn!(publishers, viewers, "drain_timeout reached; stopping");
                return;
            }
            _ = tick.tick() => {}
        }
        if node.sessions() == (0, 0) {
            tracing::info!("drained: no publisher or viewer left");
            return;
        }
    }
}

fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_err()
    {
        // Still unique per run, if not secret: only used for --demo.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return format!("{:032x}{:08x}", t.as_nanos(), std::process::id());
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
