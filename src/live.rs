//! Live streams: the glue between a publish session's media pipeline, the packager and
//! the store.
//!
//! The [`Hub`] holds every stream's packaging state between sessions, so that a publisher
//! that reconnects continues the same media sequence (with a discontinuity). A stream is
//! either idle (state parked in the hub) or live (state owned by its session task), which
//! is also how a second publisher is refused.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{atomic::Ordering, Arc, Mutex, OnceLock},
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

mod kick;
mod progress;
mod replay;
mod session;

pub use progress::{Progress, PublisherMeta, SrtStats};
use session::Run;
pub use session::Session;

use crate::{
    config::{Config, SharedConfig},
    media::{Input, MediaChunk, MediaConfig, MediaError, MediaEvent, Pipeline, TrackInfo, AUDIO},
    metrics::Metrics,
    packager::{
        playlist::{self, AudioRendition, DateRange, MediaRender, RenditionReport, Variant},
        Chunk, ChunkKind, Output, PackagerConfig, Segmenter,
    },
    store::{Object, ObjectKind, RenditionView, Store, StreamEntry},
};

/// Why a publish was refused.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The stream already has a publisher.
    #[error("stream {0} already has a publisher")]
    AlreadyLive(String),
    /// The media pipeline could not start.
    #[error(transparent)]
    Media(#[from] MediaError),
}

enum Slot {
    Idle(Box<LiveStream>),
    Live,
}

/// At most this many pipeline rebuilds in [`REBUILD_WINDOW`]; past that the source is
/// considered broken and the session ends, so a flapping input cannot spin for ever.
const MAX_REBUILDS: usize = 8;
const REBUILD_WINDOW: Duration = Duration::from_secs(60);

/// Where playlists get their `EXT-X-DATERANGE`s (the interaction channel's polls): a watch
/// per stream, taken once when the stream is first published.
pub type DateRangeSource = Arc<dyn Fn(&str) -> DateRanges + Send + Sync>;

/// One stream's current date ranges.
pub type DateRanges = tokio::sync::watch::Receiver<Arc<Vec<DateRange>>>;

/// Every stream's packaging state, and the factory of publish sessions.
pub struct Hub {
    cfg: SharedConfig,
    store: Store,
    metrics: Metrics,
    slots: Mutex<HashMap<String, Slot>>,
    /// The live sessions' progress, for the stream API.
    sessions: Mutex<HashMap<String, Arc<Progress>>>,
    dateranges: Arc<OnceLock<DateRangeSource>>,
    /// Streams refusing publishers for a while after a kick.
    bans: kick::Bans,
}

impl Hub {
    /// A hub publishing into `store`.
    pub fn new(cfg: impl Into<SharedConfig>, store: Store, metrics: Metrics) -> Arc<Self> {
        Arc::new(Self {
            cfg: cfg.into(),
            store,
            metrics,
            slots: Mutex::default(),
            sessions: Mutex::default(),
            dateranges: Arc::default(),
            bans: kick::Bans::default(),
        })
    }

    /// Sets where playlists take their date ranges from (once, at startup).
    pub fn set_dateranges(&self, source: DateRangeSource) {
        let _ = self.dateranges.set(source);
    }

    /// Whether `name` has a publisher now.
    pub fn is_live(&self, name: &str) -> bool {
        matches!(
            self.slots.lock().expect("not poisoned").get(name),
            Some(Slot::Live)
        )
    }

    /// Names of streams with a publisher now.
    pub fn live_streams(&self) -> Vec<String> {
        let slots = self.slots.lock().expect("not poisoned");
        let mut v: Vec<_> = slots
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Live))
            .map(|(k, _)| k.clone())
            .collect();
        v.sort();
        v
    }

    /// Starts a publish session for `name`: claims the stream and starts its pipeline,
    /// whose demuxer suits `input` (MPEG-TS from SRT, FLV from RTMP).
    ///
    /// # Errors
    /// [`PublishError::AlreadyLive`] if the stream has a publisher; [`PublishError::Media`]
    /// if the pipeline cannot start (the stream is released again).
    pub fn publish(self: &Arc<Self>, name: &str, input: Input) -> Result<Session, PublishError> {
        // The session keeps the config of its start (ladder, PIDs) for its whole life,
        // across pipeline rebuilds; a reload applies to the next session.
        let cfg = self.cfg.get();
        let stream = {
            let mut slots = self.slots.lock().expect("not poisoned");
            match slots.insert(name.to_owned(), Slot::Live) {
                Some(Slot::Live) => return Err(PublishError::AlreadyLive(name.to_owned())),
                Some(Slot::Idle(s)) => s,
                None => Box::new(LiveStream::new(
                    name,
                    &cfg,
                    self.store.clone(),
                    self.metrics.clone(),
                    self.dateranges.clone(),
                )),
            }
        };
        let progress = Arc::new(Progress::default());
        let _ = progress.started.set((Instant::now(), SystemTime::now()));
        let run = match self.start_run(&cfg, name, input, stream, progress.clone()) {
            Ok(r) => r,
            Err((e, stream)) => {
                self.release(name, stream);
                return Err(e.into());
            }
        };
        self.metrics.publishers_active.inc();
        self.sessions
            .lock()
            .expect("not poisoned")
            .insert(name.to_owned(), progress.clone());
        Ok(Session {
            name: name.to_owned(),
            hub: self.clone(),
            input,
            run: Some(run),
            progress,
            cfg,
            rebuilds: VecDeque::new(),
            replay: (input == Input::MpegTs).then(Default::default),
        })
    }

    fn start_run(
        self: &Arc<Self>,
        cfg: &Config,
        name: &str,
        input: Input,
        stream: Box<LiveStream>,
        progress: Arc<Progress>,
    ) -> Result<Run, (MediaError, Box<LiveStream>)> {
        let (tx, rx) = crate::media::events::channel();
        let media_cfg = MediaConfig {
            part_target: cfg.hls.part_target,
            segment_target: cfg.hls.segment_target,
            ladder: cfg.ladder_for(name).clone(),
            video_pid: cfg.streams.get(name).and_then(|s| s.video_pid),
            audio_pid: cfg.streams.get(name).and_then(|s| s.audio_pid),
            audio_language: cfg.streams.get(name).and_then(|s| s.audio_language.clone()),
        };
        let pipeline = match Pipeline::start(name, media_cfg, input, tx) {
            Ok(p) => p,
            Err(e) => return Err((e, stream)),
        };
        let failed = CancellationToken::new();
        let stop = CancellationToken::new();
        let task = tokio::spawn(
            stream
                .run(
                    rx,
                    failed.clone(),
                    stop.clone(),
                    cfg.srt.no_video_timeout,
                    progress,
                )
                .instrument(tracing::info_span!("stream", stream = %name)),
        );
        Ok(Run {
            pipeline,
            failed,
            stop,
            task,
        })
    }

    /// The live session of `name`, if it has one: its publisher and progress.
    pub fn session(&self, name: &str) -> Option<Arc<Progress>> {
        self.sessions
            .lock()
            .expect("not poisoned")
            .get(name)
            .cloned()
    }

    fn release(&self, name: &str, stream: Box<LiveStream>) {
        self.sessions.lock().expect("not poisoned").remove(name);
        self.slots
            .lock()
            .expect("not poisoned")
            .insert(name.to_owned(), Slot::Idle(stream));
    }
}

struct Rendition {
    seg: Segmenter,
    info: Option<TrackInfo>,
    /// `stream/rendition/`, the store key prefix (shared, cloned per chunk).
    key_prefix: Arc<str>,
    /// Every init segment of the stream's life, by URI: few and small, kept here so they
    /// are served even if the cache evicted them.
    inits: Vec<(String, Bytes)>,
    /// (arrival, media duration) of recent chunks, for the real-time factor.
    recent: std::collections::VecDeque<(std::time::Instant, Duration)>,
    warned_at: Option<std::time::Instant>,
    /// When a GOP-too-long warning was last logged.
    warned_cut: Option<Instant>,
}

impl Rendition {
    fn new(pkg: PackagerConfig, stream: &str, name: &str) -> Self {
        // Every rendition gets the same bound, rungs too: a rung that drops the frame its
        // keyframe was forced on (an encoder falling behind) must not be cut where the
        // others are not, or MSNs would stop lining up across the ladder.
        Self {
            seg: Segmenter::new(pkg),
            info: None,
            key_prefix: Arc::from(format!("{stream}/{name}/")),
            inits: Vec::new(),
            recent: Default::default(),
            warned_at: None,
            warned_cut: None,
        }
    }
}

/// One stream's packaging state; lives across publish sessions.
struct LiveStream {
    name: String,
    pkg: PackagerConfig,
    renditions: BTreeMap<Arc<str>, Rendition>,
    entry: Arc<StreamEntry>,
    store: Store,
    metrics: Metrics,
    /// Maps media time to wall-clock time: (pts, arrival at ingest) of the session's first
    /// chunk. Audio and video share it, so their program date times line up.
    anchor: Option<(Duration, SystemTime)>,
    part_ttl: Duration,
    segment_ttl: Duration,
    dateranges: Option<DateRanges>,
}

impl LiveStream {
    fn new(
        name: &str,
        cfg: &Config,
        store: Store,
        metrics: Metrics,
        dateranges: Arc<OnceLock<DateRangeSource>>,
    ) -> Self {
        let pkg = PackagerConfig {
            part_target: cfg.hls.part_target,
            part_hold_back: cfg.hls.part_hold_back(),
            segment_target: cfg.hls.segment_target,
            max_segment: cfg.hls.max_segment(),
            window_segments: cfg.hls.window_segments,
            part_segments: 3,
        };
        // Kept a while after leaving the playlist, so a player that just read it never
        // meets a 404. Target durations are bounded by validate() (at most 10 s).
        let slack = Duration::from_secs(30);
        let seg_max = cfg.hls.max_segment().max(Duration::from_secs(4));
        Self {
            name: name.to_owned(),
            pkg,
            renditions: BTreeMap::new(),
            entry: store.stream_or_create(name),
            store,
            metrics,
            anchor: None,
            part_ttl: seg_max * (pkg.part_segments as u32 + 2) + slack,
            segment_ttl: seg_max * (cfg.hls.window_segments as u32 + 2) + slack,
            dateranges: dateranges.get().map(|source| source(name)),
        }
    }

    async fn run(
        mut self: Box<Self>,
        mut rx: crate::media::EventRx,
        failed: CancellationToken,
        stop: CancellationToken,
        no_video_timeout: Duration,
        progress: Arc<Progress>,
    ) -> (Box<Self>, Option<MediaError>) {
        self.anchor = None;
        let rebuilt = progress.chunks.load(Ordering::Relaxed) > 0;
        // (any elementary stream, a video one): names the cause if no video comes.
        let mut streams_seen = (false, false);
        let mut error = None;
        let mut video_seen = false;
        let no_video = tokio::time::sleep(no_video_timeout);
        tokio::pin!(no_video);
        // Video that stops while input keeps arriving (a PMT or PID change, a new program,
        // a codec switch the demuxer does not announce) is rebuilt, not left silent.
        let stall_after = (self.pkg.segment_target * 2).max(Duration::from_millis(1500));
        // (when, input bytes then) of the latest video chunk the pipeline produced; the
        // stall check starts with the first one (encoders take a while to start).
        let mut last_video: Option<(Instant, u64)> = None;
        let mut video_produced = 0;
        let mut check = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(MediaEvent::Track { rendition, info }) => {
                        video_seen |= !info.audio;
                        tracing::info!(rendition = %rendition, codecs = %info.codecs, resolution = ?info.resolution, "track");
                        self.rendition(&rendition).info = Some(info);
                    }
                    // After an error nothing more is published from this pipeline: after a
                    // source change its output no longer matches the init segment.
                    Some(MediaEvent::Chunk { rendition, chunk }) if error.is_none() => {
                        if chunk.kind != ChunkKind::Init {
                            progress.chunks.fetch_add(1, Ordering::Relaxed);
                        }
                        self.on_chunk(&rendition, chunk);
                        if let Some(d) = slow_packager() {
                            tokio::time::sleep(d).await;
                        }
                    }
                    Some(MediaEvent::Chunk { .. }) => {}
                    Some(MediaEvent::Stream { video }) => {
                        streams_seen = (true, streams_seen.1 || video);
                    }
                    Some(MediaEvent::FrameDropped { rendition }) => self
                        .metrics
                        .frames_dropped
                        .with_label_values(&[self.name.as_str(), &rendition])
                        .inc(),
                    Some(MediaEvent::Error(e)) => {
                        if error.is_none() {
                            tracing::warn!(error = %e, "media pipeline reports");
                            error = Some(e);
                            failed.cancel();
                        }
                    }
                    Some(MediaEvent::Gap { rendition, dropped }) => self.on_gap(&rendition, dropped),
                    Some(MediaEvent::Eos) | None => break,
                },
                () = &mut no_video, if !video_seen && error.is_none() => {
                    // After a rebuild the stream had video before: its absence now is a
                    // stall (a damaged input still settling), tried again within the
                    // session's rebuild limit.
                    error = Some(if rebuilt {
                        MediaError::SourceChanged("no video after the rebuild".into())
                    } else if !streams_seen.0 {
                        MediaError::NoProgram
                    } else if streams_seen.1 {
                        MediaError::UndecodableVideo
                    } else {
                        MediaError::NoVideo
                    });
                    failed.cancel();
                }
                _ = check.tick() => {
                    self.count_dropped(&rx);
                    // Video the pipeline produced but this task has not taken yet (or
                    // dropped) is progress too: a packager behind is no stalled pipeline.
                    let produced = rx.video_produced();
                    if produced != video_produced {
                        video_produced = produced;
                        last_video = Some((Instant::now(), progress.input_bytes.load(Ordering::Relaxed)));
                    }
                    let Some((at, bytes)) = last_video.filter(|_| error.is_none()) else {
                        continue;
                    };
                    let flowing = progress.input_bytes.load(Ordering::Relaxed) > bytes + 64 * 1024;
                    if at.elapsed() > stall_after && flowing {
                        let e = MediaError::SourceChanged(format!(
                            "no video for {:.1} s while input keeps arriving (PMT, PID or codec change?)",
                            at.elapsed().as_secs_f64()
                        ));
                        tracing::warn!(error = %e, "media pipeline stalled");
                        error = Some(e);
                        failed.cancel();
                    }
                }
                () = stop.cancelled() => break,
            }
        }
        self.count_dropped(&rx);
        for name in self.renditions.keys().cloned().collect::<Vec<_>>() {
            let r = self.renditions.get_mut(&name).expect("listed");
            if let Some(out) = r.seg.end_session() {
                let prefix = r.key_prefix.clone();
                self.store_output(&prefix, &name, out);
            }
        }
        for name in self.renditions.keys().cloned().collect::<Vec<_>>() {
            self.publish_view(&name, false);
        }
        self.publish_multivariant();
        (self, error)
    }

    fn count_dropped(&self, rx: &crate::media::EventRx) {
        for (rendition, n) in rx.take_dropped() {
            self.metrics
                .chunks_dropped
                .with_label_values(&[self.name.as_str(), &rendition])
                .inc_by(n);
        }
    }

    /// The pipeline dropped `dropped` chunks of `name` because this task fell behind
    /// (counted by the check tick): the open segment ends with what it has and the next one starts after a
    /// discontinuity (its timeline jumps).
    fn on_gap(&mut self, name: &Arc<str>, dropped: u64) {
        tracing::warn!(rendition = %name, dropped, "packager fell behind: media dropped, next segment is a discontinuity");
        let Some(r) = self.renditions.get_mut(name) else {
            return;
        };
        if let Some(out) = r.seg.end_session() {
            let prefix = r.key_prefix.clone();
            self.store_output(&prefix, name, out);
        }
        self.publish_view(name, true);
    }

    fn rendition(&mut self, name: &Arc<str>) -> &mut Rendition {
        let (pkg, stream) = (self.pkg, &self.name);
        self.renditions
            .entry(name.clone())
            .or_insert_with(|| Rendition::new(pkg, stream, name))
    }

    fn on_chunk(&mut self, name: &Arc<str>, c: MediaChunk) {
        let pdt = match (c.pts, c.kind) {
            (_, ChunkKind::Init) | (None, _) => SystemTime::now(),
            (Some(pts), _) => {
                let arrived = c
                    .first_input
                    .map_or_else(SystemTime::now, |t| SystemTime::now() - t.elapsed());
                let (p0, w0) = *self.anchor.get_or_insert((pts, arrived));
                if pts >= p0 {
                    w0 + (pts - p0)
                } else {
                    w0 - (p0 - pts)
                }
            }
        };
        let is_part = c.kind != ChunkKind::Init;
        let chunk = Chunk {
            kind: c.kind,
            data: c.data,
            duration: c.duration,
            independent: **name == *AUDIO,
            pdt,
        };
        // Field borrows, not `self.rendition()`: the metrics and name are read alongside.
        let (pkg, stream) = (self.pkg, &self.name);
        let r = self
            .renditions
            .entry(name.clone())
            .or_insert_with(|| Rendition::new(pkg, stream, name));
        if is_part {
            track_speed(r, &self.metrics, stream, name, c.duration);
        }
        let prefix = r.key_prefix.clone();
        let cut_before = r.seg.cut_segments();
        let outs = match r.seg.push(chunk) {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(rendition = %name, error = %e, "chunk dropped");
                return;
            }
        };
        if r.seg.cut_segments() > cut_before {
            self.metrics
                .segments_cut
                .with_label_values(&[stream.as_str(), name])
                .inc();
            if r.warned_cut
                .is_none_or(|t| t.elapsed() > Duration::from_secs(60))
            {
                r.warned_cut = Some(Instant::now());
                tracing::warn!(
                    rendition = %name,
                    max_segment = ?self.pkg.max_segment,
                    "no keyframe within hls.max_segment: segment cut without an independent start; set the encoder's keyframe interval to 1-2 s"
                );
            }
        }
        let mut segment_done = false;
        for out in outs {
            segment_done |= matches!(out, Output::Segment { .. });
            if let (Output::Init { uri, data }, Some(r)) = (&out, self.renditions.get_mut(name)) {
                r.inits.push((uri.clone(), data.clone()));
            }
            self.store_output(&prefix, name, out);
        }
        self.publish_view(name, true);
        if let (true, Some(t)) = (is_part, c.last_input) {
            self.metrics
                .part_latency
                .with_label_values(&[name])
                .observe(t.elapsed().as_secs_f64());
        }
        if segment_done {
            self.publish_multivariant();
        }
    }

    fn store_output(&self, prefix: &str, rendition: &str, out: Output) {
        let (uri, kind, chunks, ttl) = match out {
            Output::Init { uri, data } => (
                uri,
                ObjectKind::Init,
                vec![data],
                Duration::from_secs(86_400),
            ),
            Output::Part { uri, data } => {
                self.metrics
                    .parts
                    .with_label_values(&[self.name.as_str(), rendition])
                    .inc();
                (uri, ObjectKind::Part, vec![data], self.part_ttl)
            }
            Output::Segment { uri, parts } => {
                self.metrics
                    .segments
                    .with_label_values(&[self.name.as_str(), rendition])
                    .inc();
                (uri, ObjectKind::Segment, parts, self.segment_ttl)
            }
        };
        self.store.objects.put(
            format!("{prefix}{uri}"),
            Object {
                kind,
                chunks: chunks.into(),
                ttl,
            },
        );
    }

    fn publish_view(&self, name: &Arc<str>, live: bool) {
        let Some(r) = self.renditions.get(name) else {
            return;
        };
        let reports: Vec<RenditionReport> = self
            .renditions
            .iter()
            .filter(|(n, _)| *n != name)
            .filter_map(|(n, o)| {
                o.seg.last_part().map(|(m, p)| RenditionReport {
                    uri: format!("../{n}/index.m3u8"),
                    last_msn: m,
                    last_part: p,
                })
            })
            .collect();
        let seg = &r.seg;
        let dr = self
            .dateranges
            .as_ref()
            .map(|rx| rx.borrow().clone())
            .unwrap_or_default();
        let full = playlist::render_media(seg, &reports, &dr, MediaRender { skip: false, live });
        let delta = playlist::render_media(seg, &reports, &dr, MediaRender { skip: true, live });
        let view = RenditionView {
            playlist: Bytes::from(full),
            delta: Bytes::from(delta),
            last: seg.last_part(),
            media_sequence: seg.media_sequence(),
            segments: seg
                .segments()
                .iter()
                .map(|s| (s.msn, s.parts.len() as u64))
                .collect(),
            open: seg.open_segment().map(|s| (s.msn, s.parts.len() as u64)),
            target_duration: seg.target_duration(),
            live,
            inits: r.inits.clone(),
            last_pdt: seg
                .open_segment()
                .or(seg.segments().back())
                .map(|s| s.pdt + s.duration),
            hint: Some(seg.next_part_uri()),
            part_published: None,
            previous: Default::default(),
        };
        self.entry.publish(name, view);
    }

    /// Renders the multivariant playlist once every rendition has a complete segment.
    fn publish_multivariant(&self) {
        if self.renditions.is_empty()
            || self
                .renditions
                .values()
                .any(|r| r.info.is_none() || r.seg.segments().is_empty())
        {
            return;
        }
        let audio = self.renditions.get(AUDIO).and_then(|r| {
            let info = r.info.as_ref()?;
            Some((
                AudioRendition {
                    uri: format!("{AUDIO}/index.m3u8"),
                    codecs: info.codecs.clone(),
                    channels: info.channels,
                },
                r.seg.bitrates().unwrap_or((0, 0)),
            ))
        });
        let (a_peak, a_avg) = audio.as_ref().map_or((0, 0), |(_, b)| *b);
        let mut variants: Vec<Variant> = self
            .renditions
            .iter()
            .filter(|(n, _)| ***n != *AUDIO)
            .filter_map(|(n, r)| {
                let info = r.info.as_ref()?;
                let (peak, avg) = r.seg.bitrates()?;
                Some(Variant {
                    uri: format!("{n}/index.m3u8"),
                    bandwidth: peak + a_peak,
                    average_bandwidth: avg + a_avg,
                    codecs: info.codecs.clone(),
                    resolution: info.resolution,
                    frame_rate: info.frame_rate,
                })
            })
            .collect();
        if variants.is_empty() {
            return;
        }
        // Highest first: players that take the first listed variant start at the top.
        variants.sort_by_key(|v| std::cmp::Reverse(v.bandwidth));
        let text = playlist::render_multivariant(&variants, audio.as_ref().map(|(a, _)| a));
        self.entry.publish_multivariant(Bytes::from(text));
    }
}

/// Real-time factor over the last few seconds: media time produced per wall second.
const SPEED_WINDOW: Duration = Duration::from_secs(5);

fn track_speed(r: &mut Rendition, metrics: &Metrics, stream: &str, name: &str, d: Duration) {
    let now = std::time::Instant::now();
    r.recent.push_back((now, d));
    while r
        .recent
        .front()
        .is_some_and(|(t, _)| now.duration_since(*t) > SPEED_WINDOW)
    {
        r.recent.pop_front();
    }
    let Some((first, _)) = r.recent.front() else {
        return;
    };
    let wall = now.duration_since(*first);
    // Judge only over a nearly full window: the first seconds include pipeline start-up.
    if wall < SPEED_WINDOW.mul_f64(0.9) {
        return;
    }
    // The first chunk's own duration was produced before the window started.
    let media: Duration = r.recent.iter().skip(1).map(|(_, d)| *d).sum();
    let rtf = media.as_secs_f64() / wall.as_secs_f64();
    metrics
        .realtime_factor
        .with_label_values(&[stream, name])
        .set(rtf);
    if rtf < 0.9
        && r.warned_at
            .is_none_or(|t| now.duration_since(t) > Duration::from_secs(10))
    {
        r.warned_at = Some(now);
        tracing::warn!(
            rendition = %name,
            realtime_factor = format!("{rtf:.2}"),
            "rendition is falling behind real time; frames are being dropped"
        );
    }
}

/// Env var that, in debug builds only, makes the packager wait `MS` milliseconds after
/// each chunk, for `SECS` seconds from its first chunk (`MS` or `MS:SECS`), so tests can
/// hold it back and see the bounded queue drop and the stream resume.
#[cfg(debug_assertions)]
pub const DEBUG_SLOW_PACKAGER: &str = "ESTUARY_DEBUG_SLOW_PACKAGER_MS";

#[cfg(debug_assertions)]
fn slow_packager() -> Option<Duration> {
    type Slow = Option<(Duration, Option<Instant>)>;
    static SLOW: std::sync::OnceLock<Slow> = std::sync::OnceLock::new();
    let (pause, until) = SLOW
        .get_or_init(|| {
            let v = std::env::var(DEBUG_SLOW_PACKAGER).ok()?;
            let (ms, secs) = v
                .split_once(':')
                .map_or((v.as_str(), None), |(a, b)| (a, Some(b)));
            let until = secs.and_then(|s| s.parse().ok());
            Some((
                Duration::from_millis(ms.parse().ok()?),
                until.map(|s| Instant::now() + Duration::from_secs(s)),
            ))
        })
        .as_ref()?;
    until.is_none_or(|u| Instant::now() < u).then_some(*pause)
}

#[cfg(not(debug_assertions))]
fn slow_packager() -> Option<Duration> {
    None
}
