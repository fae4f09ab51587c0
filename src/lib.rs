//! # Estuary
//!
//! An edge node for interactive low-latency live streaming: SRT or RTMP in, CMAF LL-HLS out.
//!
//! # Layout
//! - [`auth`]: signed playback URLs (EdgeAuth tokens) and the publish/play webhooks.
//! - [`config`]: typed TOML configuration with defaults and `validate()`.
//! - [`ingest`]: the SRT and RTMP/RTMPS listeners, streamid parsing and publish authorisation.
//! - [`media`]: GStreamer pipelines (tsdemux or flvdemux, parsers, cmafmux) producing CMAF chunks.
//! - [`packager`]: the pure segmenter and playlist renderer.
//! - [`live`]: one stream's session glue: pipeline output → packager → store.
//! - [`store`]: the moka media cache and per-rendition live state.
//! - [`http`]: hyper server (HTTP/1.1, HTTP/2, TLS), LL-HLS routes, metrics.
//! - [`interact`]: the WebSocket interaction channel: chat, polls, Q&A, reactions, tips;
//!   rooms as actors, in-process or Redis bus.
//! - [`logging`]: log setup, with a rate limit on what outside input makes libraries log.
//! - [`upstream`]: the edge tier: followers of an origin's LL-HLS for streams not
//!   published here.
//! - [`steering`]: HLS content steering across the tier's regional nodes: pathways in
//!   the multivariant playlist, the steering manifest, peer health probes.
//! - [`metrics`]: metric families registered on a passed-down registry.
//! - [`heap`]: the heap's live and resident bytes on `/metrics` (jemalloc's statistics).
//! - [`node`]: builds the components and runs them until shutdown.
//! - [`admin`]: the admin API under `/admin` (publishers, kick, viewers, cache, config,
//!   reload, drain) and the `estuary admin` client.
//! - [`reload`]: live config reload (`SIGHUP`, `POST /admin/reload`): what applies live,
//!   what needs a restart, resizable connection caps.
//! - [`drain`]: the drain switch (`POST /admin/drain`, SIGUSR1).
//! - [`systemd`]: readiness, status and watchdog over `sd_notify`, socket activation.
//! - [`demo`]: the `--demo` publisher (test pattern with a burnt-in clock, over SRT).
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod config;
pub mod demo;
pub mod drain;
pub mod heap;
pub mod http;
pub mod ingest;
pub mod interact;
pub mod live;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod node;
pub mod packager;
pub mod reload;
pub mod steering;
pub mod store;
pub mod systemd;
pub mod upstream;
