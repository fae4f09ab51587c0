//! GStreamer media pipelines: MPEG-TS (SRT) or FLV (RTMP) bytes in, CMAF chunks out.
//!
//! One pipeline per publish session:
//! `appsrc ! tsdemux` (or `appsrc ! flvdemux`, or one `appsrc` per track fed with
//! elementary-stream samples, see [`es`]), then per elementary stream
//! `queue ! {h264,h265,aac}parse ! capsfilter ! cmafmux ! appsink`.
//! GStreamer runs on its own threads; appsink callbacks hand chunks to tokio over a
//! bounded channel ([`events`]) and never block: a packager that falls behind costs
//! dropped media and a discontinuity, never memory. Bus errors and EOS arrive on the
//! same channel.

use std::{
    sync::{Arc, Once},
    time::Duration,
};

use bytes::Bytes;
use futures_util::StreamExt;
use gst::prelude::*;

use crate::packager::ChunkKind;

pub(crate) mod adts;
mod branch;
pub mod es;
pub mod events;
pub(crate) mod ts;

pub use es::{EsCodec, EsSample};
pub use events::{EventRx, EventTx};

/// Rendition names used for the passthrough copy and the shared audio group.
pub const PASSTHROUGH: &str = "source";
/// The audio rendition.
pub const AUDIO: &str = "audio";

/// Why a pipeline could not be built or failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MediaError {
    /// GStreamer could not be initialised or an element is missing.
    #[error("gstreamer setup failed: {0}")]
    Setup(String),
    /// The contribution carries a codec we do not handle.
    #[error("unsupported {kind} codec {caps}")]
    Unsupported {
        /// `video` or `audio`.
        kind: &'static str,
        /// The caps name.
        caps: String,
    },
    /// No video track showed up in time (the input has a program, but no video in it).
    #[error("no video track in the stream")]
    NoVideo,
    /// The demuxer found no program at all in time: no PAT/PMT it could read, or not
    /// MPEG-TS (or FLV) at all.
    #[error("no program in the input: no readable PAT/PMT (is it MPEG-TS?)")]
    NoProgram,
    /// A video track exists but nothing decodable came on it in time (no parameter sets
    /// or keyframe).
    #[error("the video track carries nothing decodable (no SPS/PPS or keyframe)")]
    UndecodableVideo,
    /// The video cannot be passed through to browsers (10-bit, 4:2:2 or 4:4:4) and the
    /// stream has no encoded rung to carry it instead.
    #[error("{0} cannot be passed through to browsers: set the encoder to 8-bit 4:2:0 (H.264 High or Main, HEVC Main), or give the stream a ladder so the node transcodes it")]
    UnplayableFormat(String),
    /// The source changed resolution, frame rate or codec mid-stream; the pipeline must
    /// be rebuilt (cmafmux cannot change its init segment).
    #[error("source changed: {0}")]
    SourceChanged(String),
    /// An element posted an error.
    #[error("pipeline error from {source_element}: {message}")]
    Pipeline {
        /// The element's name.
        source_element: String,
        /// The error text.
        message: String,
    },
}

/// Which part of the source a [`MediaError::SourceChanged`] is about, so a rebuild can
/// start where the change began (see `live::replay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The audio format (sample rate, channels, codec).
    Audio,
    /// The video format (size, frame rate, codec or profile).
    Video,
    /// Anything else: PIDs, program, timestamps, or not a source change.
    Other,
}

const AUDIO_CHANGED: &str = "audio format changed: ";
const VIDEO_CHANGED: &str = "video format changed: ";

/// The error that rebuilds the pipeline for a change of the audio or video format.
pub(crate) fn format_changed(change: Change, detail: &str) -> MediaError {
    let what = match change {
        Change::Audio => AUDIO_CHANGED,
        Change::Video => VIDEO_CHANGED,
        Change::Other => "",
    };
    MediaError::SourceChanged(format!("{what}{detail}"))
}

impl MediaError {
    /// Which part of the source changed, for a [`MediaError::SourceChanged`].
    pub fn change(&self) -> Change {
        match self {
            MediaError::SourceChanged(m) if m.starts_with(AUDIO_CHANGED) => Change::Audio,
            MediaError::SourceChanged(m) if m.starts_with(VIDEO_CHANGED) => Change::Video,
            _ => Change::Other,
        }
    }

    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            MediaError::Setup(_) => "setup",
            MediaError::Unsupported { .. } => "unsupported_codec",
            MediaError::NoVideo => "no_video",
            MediaError::NoProgram => "no_program",
            MediaError::UnplayableFormat(_) => "unplayable_format",
            MediaError::UndecodableVideo => "undecodable_video",
            MediaError::Pipeline { .. } => "pipeline_error",
            MediaError::SourceChanged(_) => "source_changed",
        }
    }
}

/// Static description of a track, from its caps.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackInfo {
    /// RFC 6381 codec string.
    pub codecs: String,
    /// Video size.
    pub resolution: Option<(u32, u32)>,
    /// Video frame rate.
    pub frame_rate: Option<f64>,
    /// Audio channels.
    pub channels: Option<u32>,
    /// Whether this is the audio rendition.
    pub audio: bool,
}

/// A CMAF piece leaving a pipeline.
#[derive(Debug, Clone)]
pub struct MediaChunk {
    /// Which piece.
    pub kind: ChunkKind,
    /// Its bytes.
    pub data: Bytes,
    /// Presentation time of its first sample (pipeline running time).
    pub pts: Option<Duration>,
    /// Its duration.
    pub duration: Duration,
    /// When the demuxer released the chunk's last frame: the moment its bytes had all
    /// arrived over SRT. The part-latency metric is measured from here.
    pub last_input: Option<std::time::Instant>,
    /// When the demuxer released the chunk's first frame; program date times are anchored
    /// on it, so they tell when the picture reached this node.
    pub first_input: Option<std::time::Instant>,
}

/// What a pipeline reports.
#[derive(Debug, Clone)]
pub enum MediaEvent {
    /// A track's caps became known (or changed).
    Track {
        /// Rendition name.
        rendition: Arc<str>,
        /// Its description.
        info: TrackInfo,
    },
    /// The demuxer exposed an elementary stream (before it is used or ignored).
    Stream {
        /// Whether it is video.
        video: bool,
    },
    /// A CMAF piece.
    Chunk {
        /// Rendition name.
        rendition: Arc<str>,
        /// The piece.
        chunk: MediaChunk,
    },
    /// The pipeline failed.
    Error(MediaError),
    /// A rung dropped a frame because its encoder fell behind.
    FrameDropped {
        /// Rendition name.
        rendition: Arc<str>,
    },
    /// The packager fell behind and a rendition's chunks were dropped up to here; its
    /// next segment starts after a gap.
    Gap {
        /// Rendition name.
        rendition: Arc<str>,
        /// How many chunks were dropped.
        dropped: u64,
    },
    /// The input ended and everything was drained.
    Eos,
}

/// The container a publisher's bytes arrive in; it picks the demuxer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Input {
    /// MPEG-TS (SRT): `tsdemux`.
    #[default]
    MpegTs,
    /// An FLV byte stream (header, then tags), as the RTMP ingest frames it: `flvdemux`.
    Flv,
}

impl Input {
    fn demuxer(self) -> &'static str {
        match self {
            Input::MpegTs => "tsdemux",
            Input::Flv => "flvdemux",
        }
    }

    fn caps(self) -> gst::Caps {
        match self {
            // No `packetsize`: tsdemux detects 188-byte TS and 192-byte M2TS itself.
            Input::MpegTs => gst::Caps::builder("video/mpegts")
                .field("systemstream", true)
                .build(),
            Input::Flv => gst::Caps::builder("video/x-flv").build(),
        }
    }
}

/// What a pipeline makes: segmentation parameters for cmafmux and the ladder.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Part target: video chunks are exactly this long, audio chunks 85 % of it so AAC
    /// parts stay within it.
    pub part_target: Duration,
    /// Fragment (segment) duration. Passthrough cuts at the first keyframe after it;
    /// encoded rungs get keyframes forced at exactly these instants.
    pub segment_target: Duration,
    /// Renditions to make.
    pub ladder: crate::config::LadderConfig,
    /// The video track's PID, when the stream picks one (else the first video track).
    pub video_pid: Option<u16>,
    /// The audio track's PID, when the stream picks one (else the first audio track).
    pub audio_pid: Option<u16>,
    /// The audio track's ISO 639 language, when the stream picks one (else, or when no
    /// track has it, the first audio track).
    pub audio_language: Option<String>,
}

/// Initialises GStreamer and registers cmafmux statically, once per process.
///
/// # Errors
/// [`MediaError::Setup`] if GStreamer or a needed element is missing.
pub fn init() -> Result<(), MediaError> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = gst::init()
            .map_err(|e| MediaError::Setup(e.to_string()))
            .and_then(|_| {
                gstfmp4::plugin_register_static().map_err(|e| MediaError::Setup(e.to_string()))
            });
    });
    result?;
    for f in [
        "appsrc",
        "tsdemux",
        "flvdemux",
        "h264parse",
        "h265parse",
        "aacparse",
        "cmafmux",
        "appsink",
        "queue",
    ] {
        if gst::ElementFactory::find(f).is_none() {
            return Err(MediaError::Setup(format!(
                "GStreamer element {f} is missing; run scripts/setup.sh"
            )));
        }
    }
    Ok(())
}

/// A running pipeline for one publish session.
pub struct Pipeline {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    /// Set once the input ends or the pipeline stops: the demuxer then removes its pads,
    /// which is no source change.
    ending: Arc<std::sync::atomic::AtomicBool>,
    /// Tracks handed over as elementary streams beside (or instead of) the container.
    es: std::sync::Mutex<es::EsInput>,
}

/// A demuxer pad's caps.
fn pad_caps(pad: &gst::Pad) -> gst::Caps {
    pad.current_caps().unwrap_or_else(|| pad.query_caps(None))
}

/// A live source of the publisher's input with `caps`.
fn input_src(name: &str, caps: &gst::Caps) -> gst_app::AppSrc {
    let src = gst_app::AppSrc::builder()
        .name(name)
        .caps(caps)
        .is_live(true)
        .format(gst::Format::Time)
        // The stream's own PTS, not arrival stamps: tsdemux would skew-correct arrival
        // stamps, and the jittered frame durations make parts run over PART-TARGET.
        .do_timestamp(false)
        .max_bytes(16 * 1024 * 1024)
        .block(false)
        .build();
    // A stalled pipeline drops old input rather than growing without bound.
    src.set_property_from_str("leaky-type", "downstream");
    src
}

/// A new elementary stream (a demuxer pad, or an elementary-stream source): announced,
/// then given its branch; audio that cannot be carried is dropped, anything else that
/// fails is reported.
fn on_stream(ctx: &branch::Ctx, pad: &gst::Pad, caps: gst::Caps) {
    let Some(pipeline) = ctx.pipeline.upgrade() else {
        return;
    };
    let video = caps
        .structure(0)
        .is_some_and(|s| s.name().starts_with("video/"));
    let _ = ctx.tx.send(MediaEvent::Stream { video });
    if let Err(e) = branch::add(ctx, pad, caps) {
        tracing::warn!(error = %e, "cannot handle elementary stream");
        if matches!(e, MediaError::Unsupported { kind: "audio", .. }) {
            // Audio we cannot carry is dropped; the video still plays.
            let _ = branch::link_fakesink(&pipeline, pad);
        } else {
            let _ = ctx.tx.send(MediaEvent::Error(e));
        }
    }
}

impl Pipeline {
    /// Builds and starts a pipeline for `input`'s container; events go to `events`.
    ///
    /// # Errors
    /// [`MediaError::Setup`] when an element is missing or the pipeline will not start.
    pub fn start(
        stream: &str,
        cfg: MediaConfig,
        input: Input,
        events: EventTx,
    ) -> Result<Self, MediaError> {
        init()?;
        let pipeline = gst::Pipeline::with_name(&format!("ingest-{stream}"));
        let src = input_src("src", &input.caps());
        let demux = gst::ElementFactory::make(input.demuxer())
            .name("demux")
            .build()
            .map_err(|e| MediaError::Setup(format!("{}: {e}", input.demuxer())))?;
        pipeline
            .add_many([src.upcast_ref(), &demux])
            .map_err(|e| MediaError::Setup(e.to_string()))?;
        src.link(&demux)
            .map_err(|e| MediaError::Setup(e.to_string()))?;

        let ctx = branch::Ctx {
            pipeline: pipeline.downgrade(),
            cfg: Arc::new(cfg),
            tx: events.clone(),
            main_pads: Arc::default(),
            audio_fallback: Arc::default(),
        };
        let ending = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (main_pads, removed_tx, end) = (ctx.main_pads.clone(), events.clone(), ending.clone());
        demux.connect_pad_removed(move |_, pad| {
            if end.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            let name = pad.name();
            if main_pads
                .lock()
                .expect("not poisoned")
                .iter()
                .any(|n| *n == name)
            {
                let _ = removed_tx.send(MediaEvent::Error(MediaError::SourceChanged(format!(
                    "elementary stream {name} went away (PMT, PID, program or codec change)"
                ))));
            }
        });
        let fallback_ctx = ctx.clone();
        demux.connect_no_more_pads(move |_| branch::take_fallback(&fallback_ctx));
        let es = std::sync::Mutex::new(es::EsInput::new(ctx.clone()));
        demux.connect_pad_added(move |_, pad| on_stream(&ctx, pad, pad_caps(pad)));

        let bus = pipeline.bus().expect("a pipeline has a bus");
        let tx = events;
        let mut messages = bus.stream();
        tokio::spawn(async move {
            while let Some(msg) = messages.next().await {
                use gst::MessageView;
                match msg.view() {
                    MessageView::Error(err) => {
                        let e = MediaError::Pipeline {
                            source_element: err
                                .src()
                                .map(|s| s.name().to_string())
                                .unwrap_or_default(),
                            message: match err.debug() {
                                Some(d) => format!("{} ({d})", err.error()),
                                None => err.error().to_string(),
                            },
                        };
                        let _ = tx.send(MediaEvent::Error(e));
                        break;
                    }
                    MessageView::Eos(_) => {
                        let _ = tx.send(MediaEvent::Eos);
                        break;
                    }
                    MessageView::Warning(w) => {
                        tracing::debug!(warning = %w.error(), "gstreamer warning");
                    }
                    _ => {}
                }
            }
        });

        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| MediaError::Setup(format!("cannot start pipeline: {e}")))?;
        Ok(Self {
            pipeline,
            src,
            ending,
            es,
        })
    }

    /// Feeds input bytes (MPEG-TS or FLV, as started). Never blocks: appsrc queues (bounded, leaky).
    pub fn push(&self, data: Bytes) {
        let buf = gst::Buffer::from_slice(data);
        let _ = self.src.push_buffer(buf);
    }

    /// Feeds one elementary-stream sample (see [`es`]). Never blocks.
    pub fn push_es(&self, sample: EsSample) {
        self.es.lock().expect("not poisoned").push(sample);
    }

    /// Signals the end of input; remaining data drains and EOS is reported.
    pub fn end_of_stream(&self) {
        self.ending
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let es = self.es.lock().expect("not poisoned");
        if es.active() {
            // The container carried no track then: its demuxer would call EOS an error.
            es.end_of_stream();
        } else {
            let _ = self.src.end_of_stream();
        }
    }

    /// Stops the pipeline off the async runtime (state changes join GStreamer threads).
    pub async fn stop(self) {
        self.ending
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let p = self.pipeline;
        let _ = tokio::task::spawn_blocking(move || {
            let _ = p.set_state(gst::State::Null);
        })
        .await;
    }
}
