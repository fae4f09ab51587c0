//! Typed configuration: one serde struct per component, each field with a default.
//!
//! The file is TOML (`config/estuary.toml`). Every section and key is optional; with no
//! file at all the node runs on defaults: SRT on `:9000`, HTTP on `:8080`, one open
//! stream named `demo` with no passphrase.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

mod ladder;
mod shared;
pub use ladder::{LadderConfig, RungCodec, RungConfig, PRESETS, TUNES};
pub use shared::SharedConfig;

/// Default SRT listen address.
/// Default `http.idle_timeout`.
pub const DEFAULT_HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(20);
pub const DEFAULT_SRT_LISTEN: &str = "0.0.0.0:9000";
/// Default HTTP listen address.
pub const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:8080";
/// Default SRT receive latency (the jitter buffer SRT keeps for retransmissions).
pub const DEFAULT_SRT_LATENCY: Duration = Duration::from_millis(120);
/// Default number of concurrent SRT connections (publishers and pending handshakes).
pub const DEFAULT_MAX_PUBLISHERS: usize = 64;
/// Default LL-HLS part target.
pub const DEFAULT_PART_TARGET: Duration = Duration::from_millis(200);
/// Default segment target (passthrough follows the source GOP, at least this long).
pub const DEFAULT_SEGMENT_TARGET: Duration = Duration::from_secs(1);
/// Default number of segments a media playlist lists.
pub const DEFAULT_WINDOW_SEGMENTS: usize = 20;
/// Default cache bound in bytes.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 512 * 1024 * 1024;
/// Default longest wait of a blocking playlist reload or preload-hinted part.
pub const DEFAULT_BLOCKING_TIMEOUT: Duration = Duration::from_secs(6);
/// Default max-age of immutable media objects.
pub const DEFAULT_MEDIA_MAX_AGE: Duration = Duration::from_secs(60);
/// Default cap on concurrent HTTP connections.
pub const DEFAULT_MAX_HTTP_CONNECTIONS: usize = 20_000;
/// Default time a stream with no data is considered dead.
pub const DEFAULT_INGEST_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time to wait for a video track before refusing a stream.
pub const DEFAULT_NO_VIDEO_TIMEOUT: Duration = Duration::from_secs(5);
/// Default folder of the web pages.
pub const DEFAULT_WEB_ROOT: &str = "web";
/// Default path of hls.js, installed by `scripts/setup.sh` with npm.
pub const DEFAULT_HLSJS: &str = "web/node_modules/hls.js/dist/hls.min.js";
/// Default RTMP listen address (TCP).
pub const DEFAULT_RTMP_LISTEN: &str = "0.0.0.0:1935";
/// Default RTMPS (RTMP over TLS) listen address; used only when a certificate is set.
pub const DEFAULT_RTMPS_LISTEN: &str = "0.0.0.0:1936";
/// Default number of concurrent RTMP connections (publishers and pending handshakes).
pub const DEFAULT_RTMP_MAX_CONNECTIONS: usize = 64;
/// Default time an RTMP client has from its TCP connect to its `publish` command.
pub const DEFAULT_RTMP_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default shutdown grace period.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Default longest drain (`POST /admin/drain`, SIGUSR1) before the node exits anyway.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(300);

/// A configuration error; the message names the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The path that was read.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML did not parse or had an unknown key or a wrong type.
    #[error("invalid config {path}: {source}")]
    Parse {
        /// The path that was read.
        path: PathBuf,
        /// The parser's error, which names the key.
        source: Box<toml::de::Error>,
        /// The dotted key the error is at, when the parser points at one.
        key: Option<String>,
    },
    /// A value parsed but is out of range.
    #[error("invalid config: {key}: {reason}")]
    Invalid {
        /// Dotted key, for example `hls.part_target`.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

impl ConfigError {
    /// The dotted key the error is about (`hls.part_target`, `streams.cam1.passphrase`),
    /// when known; a file that cannot be read has none.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Read { .. } => None,
            Self::Parse { key, .. } => key.as_deref(),
            Self::Invalid { key, .. } => Some(key),
        }
    }
}

fn parse_error(path: &std::path::Path, text: &str, e: toml::de::Error) -> ConfigError {
    let key = e.span().and_then(|s| key_at(text, s.start));
    ConfigError::Parse {
        path: path.to_owned(),
        source: Box::new(e),
        key,
    }
}

/// The dotted key of the TOML line holding byte `at`: the `[table]` above it joined
/// with the key left of `=` (or the table itself when `at` is on its header).
fn key_at(text: &str, at: usize) -> Option<String> {
    let upto = text.get(..at.min(text.len()))?;
    let line_start = upto.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("").trim();
    let header = |l: &str| {
        l.starts_with('[')
            .then(|| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned())
    };
    if let Some(table) = header(line) {
        return Some(table);
    }
    let name = line.split('=').next()?.trim().trim_matches('"').to_owned();
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find_map(header);
    match table {
        _ if name.is_empty() => None,
        Some(t) => Some(format!("{t}.{name}")),
        None => Some(name),
    }
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// SRT ingest.
    pub srt: SrtConfig,
    /// RTMP and RTMPS ingest.
    pub rtmp: RtmpConfig,
    /// HTTP serving.
    pub http: HttpConfig,
    /// LL-HLS packaging.
    pub hls: HlsConfig,
    /// The in-memory media cache.
    pub cache: CacheConfig,
    /// The default transcoding ladder.
    pub ladder: LadderConfig,
    /// The interaction channel.
    pub interact: crate::interact::InteractConfig,
    /// The edge tier: where streams not published here are pulled from.
    pub upstream: crate::upstream::UpstreamConfig,
    /// Configured streams, by name. The name is what appears in the SRT streamid and URLs.
    pub streams: BTreeMap<String, StreamConfig>,
    /// Let any stream name publish without a passphrase (development only).
    pub allow_unknown_streams: bool,
    /// Shutdown grace period.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Longest drain: after it the node exits even with publishers or viewers left.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// The operations API under `/admin`.
    pub admin: AdminConfig,
    /// Signed playback URLs and the publish/play webhooks.
    pub auth: crate::auth::AuthConfig,
    /// HLS content steering across the tier's regional nodes.
    pub steering: crate::steering::SteeringConfig,
}

/// The operations API (`/admin/...`).
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Bearer token for the admin API under `/admin` (16+ characters); empty turns it off (404).
    pub token: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            srt: SrtConfig::default(),
            rtmp: RtmpConfig::default(),
            http: HttpConfig::default(),
            hls: HlsConfig::default(),
            cache: CacheConfig::default(),
            ladder: LadderConfig::default(),
            interact: crate::interact::InteractConfig::default(),
            upstream: crate::upstream::UpstreamConfig::default(),
            streams: BTreeMap::new(),
            allow_unknown_streams: false,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            admin: AdminConfig::default(),
            auth: crate::auth::AuthConfig::default(),
            steering: crate::steering::SteeringConfig::default(),
        }
    }
}

/// SRT ingest settings.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SrtConfig {
    /// UDP address the SRT listener binds.
    pub listen: SocketAddr,
    /// SRT receive latency.
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    /// Cap on concurrent SRT connections.
    pub max_connections: usize,
    /// A publisher that sends nothing for this long is disconnected.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A stream that shows no video track within this time is refused.
    #[serde(with = "humantime_serde")]
    pub no_video_timeout: Duration,
}

impl Default for SrtConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_SRT_LISTEN.parse().expect("valid default"),
            latency: DEFAULT_SRT_LATENCY,
            max_connections: DEFAULT_MAX_PUBLISHERS,
            idle_timeout: DEFAULT_INGEST_IDLE_TIMEOUT,
            no_video_timeout: DEFAULT_NO_VIDEO_TIMEOUT,
        }
    }
}

/// RTMP ingest settings (OBS: Server `rtmp://HOST/live`, Stream key `NAME`).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtmpConfig {
    /// Run the RTMP listener (and the RTMPS one when a certificate is set).
    pub enabled: bool,
    /// TCP address of the RTMP listener.
    pub listen: SocketAddr,
    /// TCP address of the RTMPS listener, which runs when `tls_cert` and `tls_key` are set,
    /// or else when `http.tls_cert` and `http.tls_key` are (the same certificate is reused).
    pub tls_listen: SocketAddr,
    /// PEM certificate chain for RTMPS; defaults to `http.tls_cert`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for RTMPS; defaults to `http.tls_key`.
    pub tls_key: Option<PathBuf>,
    /// Cap on concurrent RTMP and RTMPS connections together.
    pub max_connections: usize,
    /// Time from the TCP connect (and TLS) to the `publish` command; slower clients are
    /// dropped.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// A publisher that sends no media for this long is dropped.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: DEFAULT_RTMP_LISTEN.parse().expect("valid default"),
            tls_listen: DEFAULT_RTMPS_LISTEN.parse().expect("valid default"),
            tls_cert: None,
            tls_key: None,
            max_connections: DEFAULT_RTMP_MAX_CONNECTIONS,
            handshake_timeout: DEFAULT_RTMP_HANDSHAKE_TIMEOUT,
            idle_timeout: DEFAULT_INGEST_IDLE_TIMEOUT,
        }
    }
}

impl RtmpConfig {
    /// The certificate and key RTMPS uses: its own, else the HTTP server's; `None` means
    /// no RTMPS listener.
    pub fn tls_files<'a>(
        &'a self,
        http: &'a HttpConfig,
    ) -> Option<(&'a std::path::Path, &'a std::path::Path)> {
        match (&self.tls_cert, &self.tls_key, &http.tls_cert, &http.tls_key) {
            (Some(c), Some(k), _, _) | (None, None, Some(c), Some(k)) => Some((c, k)),
            _ => None,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_connections == 0 {
            return Err(invalid("rtmp.max_connections", "must be at least 1"));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(invalid(
                "rtmp.tls_cert",
                "rtmp.tls_cert and rtmp.tls_key go together",
            ));
        }
        if self.handshake_timeout < Duration::from_secs(1)
            || self.handshake_timeout > Duration::from_secs(120)
        {
            return Err(invalid(
                "rtmp.handshake_timeout",
                "must be between 1s and 120s",
            ));
        }
        if self.idle_timeout < Duration::from_secs(1)
            || self.idle_timeout > Duration::from_secs(600)
        {
            return Err(invalid("rtmp.idle_timeout", "must be between 1s and 600s"));
        }
        if self.enabled && self.listen == self.tls_listen && self.listen.port() != 0 {
            return Err(invalid("rtmp.tls_listen", "must differ from rtmp.listen"));
        }
        Ok(())
    }
}

/// HTTP settings.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// TCP address the HTTP server binds (HTTP/1.1 and h2c, or h2 + HTTP/1.1 over TLS).
    pub listen: SocketAddr,
    /// PEM certificate chain; with `tls_key`, the server speaks TLS only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    pub tls_key: Option<PathBuf>,
    /// Cap on concurrent connections. When it is reached, the connection idle the longest
    /// is closed to make room.
    pub max_connections: usize,
    /// A connection with no request in flight and no byte moving for this long is closed:
    /// an idle keep-alive, an HTTP/2 connection with no streams, a socket that never sent
    /// a byte, a TLS handshake or WebSocket upgrade that never comes.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Value of `Access-Control-Allow-Origin`.
    pub cors_origin: String,
    /// Folder of the player and front pages (`web/` in the repository).
    pub web_root: PathBuf,
    /// hls.js as installed from the npm registry at setup time (served at
    /// `/static/vendor/hls.min.js`; never fetched from a CDN).
    pub hlsjs: PathBuf,
    /// Host name put in the SRT URL shown on the front page; the request's Host when empty.
    pub public_host: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_HTTP_LISTEN.parse().expect("valid default"),
            tls_cert: None,
            tls_key: None,
            max_connections: DEFAULT_MAX_HTTP_CONNECTIONS,
            idle_timeout: DEFAULT_HTTP_IDLE_TIMEOUT,
            cors_origin: "*".into(),
            web_root: PathBuf::from(DEFAULT_WEB_ROOT),
            hlsjs: PathBuf::from(DEFAULT_HLSJS),
            public_host: String::new(),
        }
    }
}

/// LL-HLS packaging settings. The part target is fixed for the life of a stream.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HlsConfig {
    /// Part target duration (`EXT-X-PART-INF:PART-TARGET`).
    #[serde(with = "humantime_serde")]
    pub part_target: Duration,
    /// Segment target; passthrough segments follow the source GOP and are at least this long.
    #[serde(with = "humantime_serde")]
    pub segment_target: Duration,
    /// Longest segment: a GOP longer than this (or a stream with no keyframes) is cut
    /// here, without an independent start. `EXT-X-TARGETDURATION` is computed from it
    /// once and never changes. Default: twice `segment_target`.
    #[serde(with = "humantime_serde", default)]
    pub max_segment: Option<Duration>,
    /// `PART-HOLD-BACK`: how far behind the live edge players hold (hls.js and Safari
    /// take it as their target latency). Default: three part targets, and never under
    /// 0.75 s ([`crate::packager::playlist::part_hold_back`]).
    #[serde(with = "humantime_serde", default)]
    pub part_hold_back: Option<Duration>,
    /// Number of segments each media playlist lists.
    pub window_segments: usize,
    /// Longest wait for a blocking reload or a preload-hinted part.
    #[serde(with = "humantime_serde")]
    pub blocking_timeout: Duration,
    /// `max-age` of parts, segments and init segments.
    #[serde(with = "humantime_serde")]
    pub media_max_age: Duration,
}

impl Default for HlsConfig {
    fn default() -> Self {
        Self {
            part_target: DEFAULT_PART_TARGET,
            segment_target: DEFAULT_SEGMENT_TARGET,
            max_segment: None,
            part_hold_back: None,
            window_segments: DEFAULT_WINDOW_SEGMENTS,
            blocking_timeout: DEFAULT_BLOCKING_TIMEOUT,
            media_max_age: DEFAULT_MEDIA_MAX_AGE,
        }
    }
}

impl HlsConfig {
    /// The longest segment (`max_segment`, or twice `segment_target`).
    pub fn max_segment(&self) -> Duration {
        self.max_segment.unwrap_or(self.segment_target * 2)
    }

    /// `PART-HOLD-BACK` (`part_hold_back`, or the default for the part target).
    pub fn part_hold_back(&self) -> Duration {
        self.part_hold_back
            .unwrap_or_else(|| crate::packager::playlist::part_hold_back(self.part_target))
    }
}

/// Cache settings.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Upper bound of the media cache, in bytes.
    pub max_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_CACHE_MAX_BYTES,
        }
    }
}

/// One configured stream.
#[derive(Debug, Clone, Deserialize, serde::Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// SRT passphrase (10–79 characters). Without it the stream takes unencrypted publishers.
    pub passphrase: Option<String>,
    /// RTMP publish key (8–128 characters of `[A-Za-z0-9_.~-]`). When set, an RTMP
    /// publisher's stream key must be `NAME?key=KEY`; without it any RTMP publisher of
    /// this stream is accepted.
    pub rtmp_key: Option<String>,
    /// This stream's ladder, replacing the default `[ladder]`.
    pub ladder: Option<LadderConfig>,
    /// MPEG-TS PID of the video track to use; without it, the first video track. Other
    /// video tracks are ignored with one log line.
    pub video_pid: Option<u16>,
    /// MPEG-TS PID of the audio track to use; without it, the first audio track.
    pub audio_pid: Option<u16>,
    /// ISO 639 language of the audio track to use (`en`, `eng`, `fra`...), from the
    /// PMT's language descriptor; when no track has it, the first audio track.
    pub audio_language: Option<String>,
    /// Who may play: `public` or `signed` (a token is needed); default `auth.playback`.
    pub playback: Option<crate::auth::Playback>,
    /// This stream's hex token key, replacing `auth.playback_key`.
    pub playback_key: Option<String>,
}

impl Config {
    /// Reads and validates a TOML file.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, or the key that is wrong.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let cfg: Config = toml::from_str(&text).map_err(|e| parse_error(path, &text, e))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses TOML text and validates it.
    ///
    /// # Errors
    /// [`ConfigError`] naming the key that is wrong.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text)
            .map_err(|e| parse_error(std::path::Path::new("<inline>"), text, e))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges and cross-field rules.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let h = &self.hls;
        if h.part_target < Duration::from_millis(50) || h.part_target > Duration::from_secs(2) {
            return Err(invalid("hls.part_target", "must be between 50ms and 2s"));
        }
        if h.segment_target < h.part_target * 2 || h.segment_target > Duration::from_secs(10) {
            return Err(invalid(
                "hls.segment_target",
                "must be at least twice hls.part_target and at most 10s",
            ));
        }
        // "PART-HOLD-BACK ... MUST be at least three times the Part Target Duration"
        // (RFC 8216bis §4.4.3.8); a player holding back past a minute would start
        // before the window that playlists list.
        if h.part_hold_back() < h.part_target * 3 || h.part_hold_back() > Duration::from_secs(60) {
            return Err(invalid(
                "hls.part_hold_back",
                "must be at least three times hls.part_target and at most 60s",
            ));
        }
        if h.max_segment() < h.segment_target || h.max_segment() > Duration::from_secs(20) {
            return Err(invalid(
                "hls.max_segment",
                "must be at least hls.segment_target and at most 20s",
            ));
        }
        if !(3..=100).contains(&h.window_segments) {
            return Err(invalid("hls.window_segments", "must be between 3 and 100"));
        }
        if h.blocking_timeout < Duration::from_millis(100)
            || h.blocking_timeout > Duration::from_secs(60)
        {
            return Err(invalid(
                "hls.blocking_timeout",
                "must be between 100ms and 60s",
            ));
        }
        if self.cache.max_bytes < 8 * 1024 * 1024 {
            return Err(invalid("cache.max_bytes", "must be at least 8 MiB"));
        }
        self.rtmp.validate()?;
        if self.srt.max_connections == 0 {
            return Err(invalid("srt.max_connections", "must be at least 1"));
        }
        // Zero would drop every publisher at once (no media "for 0 s") or before its
        // first frame.
        if self.srt.idle_timeout < Duration::from_secs(1)
            || self.srt.idle_timeout > Duration::from_secs(600)
        {
            return Err(invalid("srt.idle_timeout", "must be between 1s and 600s"));
        }
        if self.srt.no_video_timeout < Duration::from_secs(1)
            || self.srt.no_video_timeout > Duration::from_secs(600)
        {
            return Err(invalid(
                "srt.no_video_timeout",
                "must be between 1s and 600s",
            ));
        }
        if self.http.idle_timeout < Duration::from_secs(1)
            || self.http.idle_timeout > Duration::from_secs(600)
        {
            return Err(invalid("http.idle_timeout", "must be between 1s and 10min"));
        }
        if self.http.max_connections == 0 {
            return Err(invalid("http.max_connections", "must be at least 1"));
        }
        if self.http.tls_cert.is_some() != self.http.tls_key.is_some() {
            return Err(invalid(
                "http.tls_cert",
                "http.tls_cert and http.tls_key go together",
            ));
        }
        if !self.admin.token.is_empty() && self.admin.token.len() < 16 {
            return Err(invalid(
                "admin.token",
                "must be empty (admin API off) or 16+ characters",
            ));
        }
        if self.drain_timeout > Duration::from_secs(86_400) {
            return Err(invalid("drain_timeout", "must be at most 24h"));
        }
        self.ladder.validate("ladder")?;
        self.interact.validate().map_err(|msg| {
            // The message is "interact.KEY: reason".
            let (key, reason) = msg.split_once(": ").unwrap_or(("interact", msg.as_str()));
            invalid(key, reason)
        })?;
        self.upstream
            .validate()
            .map_err(|(key, reason)| invalid(key, reason))?;
        self.auth
            .validate(&self.streams)
            .map_err(|(key, reason)| invalid(key, reason))?;
        self.steering
            .validate()
            .map_err(|(key, reason)| invalid(key, reason))?;
        for (name, s) in &self.streams {
            if let Some(l) = &s.ladder {
                l.validate(&format!("streams.{name}.ladder"))?;
            }
            if crate::ingest::streamid::validate_name(name).is_err() {
                return Err(invalid(
                    format!("streams.{name}"),
                    "stream names are 1-64 characters of [A-Za-z0-9_-]",
                ));
            }
            if let Some(k) = &s.rtmp_key {
                let ok = (8..=128).contains(&k.len())
                    && k.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'~' | b'-')
                    });
                if !ok {
                    return Err(invalid(
                        format!("streams.{name}.rtmp_key"),
                        "an RTMP key is 8 to 128 characters of [A-Za-z0-9_.~-]",
                    ));
                }
            }
            if let Some(l) = &s.audio_language {
                let key = format!("streams.{name}.audio_language");
                if !(2..=3).contains(&l.len()) || !l.bytes().all(|b| b.is_ascii_alphabetic()) {
                    return Err(invalid(
                        key,
                        "an ISO 639 code of 2 or 3 letters, e.g. \"en\" or \"eng\"",
                    ));
                }
                if s.audio_pid.is_some() {
                    return Err(invalid(key, "set audio_pid or audio_language, not both"));
                }
            }
            if let Some(p) = &s.passphrase {
                if !(10..=79).contains(&p.len()) {
                    return Err(invalid(
                        format!("streams.{name}.passphrase"),
                        "an SRT passphrase is 10 to 79 characters",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The ladder a stream uses.
    pub fn ladder_for(&self, stream: &str) -> &LadderConfig {
        self.streams
            .get(stream)
            .and_then(|s| s.ladder.as_ref())
            .unwrap_or(&self.ladder)
    }

    /// The config used when no file is given: one open stream `demo`.
    pub fn builtin() -> Self {
        let mut cfg = Config::default();
        cfg.streams.insert("demo".into(), StreamConfig::default());
        cfg
    }
}

#[cfg(test)]
mod tests;
