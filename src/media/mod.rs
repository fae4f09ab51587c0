//! GStreamer media pipelines: MPEG-TS bytes in, CMAF chunks out.
//!
//! One pipeline per publish session:
//! `appsrc ! tsdemux`, then per elementary stream
//! `queue ! {h264,h265,aac}parse ! capsfilter ! cmafmux ! appsink`.
//! GStreamer runs on its own threads; appsink callbacks hand chunks to tokio over an
//! unbounded channel and never block. Bus errors and EOS arrive on the same channel.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, Once},
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use gst::prelude::*;
use tokio::sync::mpsc::UnboundedSender;

use crate::packager::ChunkKind;

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
    /// No video track showed up in time.
    #[error("no video track in the stream")]
    NoVideo,
    /// An element posted an error.
    #[error("pipeline error from {source_element}: {message}")]
    Pipeline {
        /// The element's name.
        source_element: String,
        /// The error text.
        message: String,
    },
}

impl MediaError {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            MediaError::Setup(_) => "setup",
            MediaError::Unsupported { .. } => "unsupported_codec",
            MediaError::NoVideo => "no_video",
            MediaError::Pipeline { .. } => "pipeline_error",
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
    /// A CMAF piece.
    Chunk {
        /// Rendition name.
        rendition: Arc<str>,
        /// The piece.
        chunk: MediaChunk,
    },
    /// The pipeline failed.
    Error(MediaError),
    /// The input ended and everything was drained.
    Eos,
}

/// Segmentation parameters handed to cmafmux.
#[derive(Debug, Clone, Copy)]
pub struct MediaConfig {
    /// Chunk (part) duration.
    pub part_target: Duration,
    /// Fragment (segment) duration; passthrough cuts at the first keyframe after it.
    pub segment_target: Duration,
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
}

fn make(factory: &str, name: Option<&str>) -> Result<gst::Element, MediaError> {
    let mut b = gst::ElementFactory::make(factory);
    if let Some(n) = name {
        b = b.name(n);
    }
    b.build()
        .map_err(|e| MediaError::Setup(format!("{factory}: {e}")))
}

impl Pipeline {
    /// Builds and starts a pipeline; events go to `events`.
    ///
    /// # Errors
    /// [`MediaError::Setup`] when an element is missing or the pipeline will not start.
    pub fn start(
        stream: &str,
        cfg: MediaConfig,
        events: UnboundedSender<MediaEvent>,
    ) -> Result<Self, MediaError> {
        init()?;
        let pipeline = gst::Pipeline::with_name(&format!("ingest-{stream}"));
        let src = gst_app::AppSrc::builder()
            .name("src")
            .caps(
                &gst::Caps::builder("video/mpegts")
                    .field("systemstream", true)
                    .field("packetsize", 188i32)
                    .build(),
            )
            .is_live(true)
            .format(gst::Format::Time)
            .do_timestamp(true)
            .max_bytes(16 * 1024 * 1024)
            .block(false)
            .build();
        // A stalled pipeline drops old input rather than growing without bound.
        src.set_property_from_str("leaky-type", "downstream");
        let demux = make("tsdemux", Some("demux"))?;
        pipeline
            .add_many([src.upcast_ref(), &demux])
            .map_err(|e| MediaError::Setup(e.to_string()))?;
        src.link(&demux)
            .map_err(|e| MediaError::Setup(e.to_string()))?;

        let weak = pipeline.downgrade();
        let tx = events.clone();
        demux.connect_pad_added(move |_, pad| {
            let Some(pipeline) = weak.upgrade() else {
                return;
            };
            if let Err(e) = add_branch(&pipeline, pad, cfg, &tx) {
                tracing::warn!(error = %e, "cannot handle elementary stream");
                if matches!(e, MediaError::Unsupported { kind: "audio", .. }) {
                    // Audio we cannot carry is dropped; the video still plays.
                    let _ = link_fakesink(&pipeline, pad);
                } else {
                    let _ = tx.send(MediaEvent::Error(e));
                }
            }
        });

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
                            message: err.error().to_string(),
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
        Ok(Self { pipeline, src })
    }

    /// Feeds MPEG-TS bytes. Never blocks: appsrc queues (bounded, leaky).
    pub fn push(&self, data: Bytes) {
        let buf = gst::Buffer::from_slice(data);
        let _ = self.src.push_buffer(buf);
    }

    /// Signals the end of input; remaining data drains and EOS is reported.
    pub fn end_of_stream(&self) {
        let _ = self.src.end_of_stream();
    }

    /// Stops the pipeline off the async runtime (state changes join GStreamer threads).
    pub async fn stop(self) {
        let p = self.pipeline;
        let _ = tokio::task::spawn_blocking(move || {
            let _ = p.set_state(gst::State::Null);
        })
        .await;
    }
}

fn link_fakesink(pipeline: &gst::Pipeline, pad: &gst::Pad) -> Result<(), MediaError> {
    let sink = make("fakesink", None)?;
    sink.set_property("sync", false);
    sink.set_property("async", false);
    pipeline
        .add(&sink)
        .map_err(|e| MediaError::Setup(e.to_string()))?;
    sink.sync_state_with_parent()
        .map_err(|e| MediaError::Setup(e.to_string()))?;
    pad.link(&sink.static_pad("sink").expect("fakesink has a sink pad"))
        .map_err(|e| MediaError::Setup(e.to_string()))?;
    Ok(())
}

/// Builds `queue ! parse ! capsfilter ! cmafmux ! appsink` for one demuxed pad.
fn add_branch(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    cfg: MediaConfig,
    tx: &UnboundedSender<MediaEvent>,
) -> Result<(), MediaError> {
    let caps = pad
        .current_caps()
        .or_else(|| Some(pad.query_caps(None)))
        .ok_or_else(|| MediaError::Setup("pad without caps".into()))?;
    let s = caps
        .structure(0)
        .ok_or_else(|| MediaError::Setup("empty caps".into()))?;
    let (rendition, parser, filter) = match s.name().as_str() {
        "video/x-h264" => (
            PASSTHROUGH,
            "h264parse",
            gst::Caps::builder("video/x-h264")
                .field("stream-format", "avc")
                .field("alignment", "au")
                .build(),
        ),
        "video/x-h265" => (
            PASSTHROUGH,
            "h265parse",
            gst::Caps::builder("video/x-h265")
                .field("stream-format", "hvc1")
                .field("alignment", "au")
                .build(),
        ),
        "audio/mpeg" if matches!(s.get::<i32>("mpegversion"), Ok(2 | 4)) => (
            AUDIO,
            "aacparse",
            gst::Caps::builder("audio/mpeg")
                .field("mpegversion", 4i32)
                .field("stream-format", "raw")
                .build(),
        ),
        other if other.starts_with("video/") => {
            return Err(MediaError::Unsupported {
                kind: "video",
                caps: other.to_owned(),
            })
        }
        other => {
            return Err(MediaError::Unsupported {
                kind: "audio",
                caps: other.to_owned(),
            })
        }
    };
    // One track of each kind: a second video or audio PID is dropped.
    if pipeline.by_name(&format!("mux-{rendition}")).is_some() {
        return link_fakesink(pipeline, pad);
    }

    let queue = make("queue", None)?;
    queue.set_property("max-size-time", 2_000_000_000u64);
    queue.set_property("max-size-buffers", 0u32);
    queue.set_property("max-size-bytes", 0u32);
    let parse = make(parser, None)?;
    let capsfilter = make("capsfilter", None)?;
    capsfilter.set_property("caps", &filter);
    let mux = make("cmafmux", Some(&format!("mux-{rendition}")))?;
    mux.set_property("fragment-duration", cfg.segment_target.as_nanos() as u64);
    mux.set_property("chunk-duration", cfg.part_target.as_nanos() as u64);
    // In passthrough there is no encoder to ask for keyframes.
    mux.set_property("send-force-keyunit", false);
    let sink = gst_app::AppSink::builder()
        .name(format!("sink-{rendition}"))
        .sync(false)
        .buffer_list(true)
        .build();

    let elements = [&queue, &parse, &capsfilter, &mux, sink.upcast_ref()];
    pipeline
        .add_many(elements)
        .map_err(|e| MediaError::Setup(e.to_string()))?;
    gst::Element::link_many(elements).map_err(|e| MediaError::Setup(e.to_string()))?;

    let rendition: Arc<str> = Arc::from(rendition);
    // Track info from the parsed caps (profile/level need the parser's codec_data).
    let tx_caps = tx.clone();
    let r = rendition.clone();
    capsfilter
        .static_pad("src")
        .expect("capsfilter has a src pad")
        .add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
            if let Some(gst::PadProbeData::Event(ev)) = &info.data {
                if let gst::EventView::Caps(c) = ev.view() {
                    if let Some(info) = track_info(c.caps(), &r) {
                        let _ = tx_caps.send(MediaEvent::Track {
                            rendition: r.clone(),
                            info,
                        });
                    }
                }
            }
            gst::PadProbeReturn::Ok
        });

    // Arrival log: when each frame left the demuxer, by PTS, so the sink can tell how
    // long a part took from its last frame's arrival to publication.
    let arrivals: Arc<Mutex<VecDeque<(u64, Instant)>>> = Arc::default();
    let log = arrivals.clone();
    queue
        .static_pad("sink")
        .expect("queue has a sink pad")
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(pts) = info.buffer().and_then(|b| b.pts()) {
                let mut log = log.lock().expect("not poisoned");
                if log.len() >= 1024 {
                    log.pop_front();
                }
                log.push_back((pts.nseconds(), Instant::now()));
            }
            gst::PadProbeReturn::Ok
        });

    let tx_data = tx.clone();
    let r = rendition;
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                for mut chunk in chunks_of(&sample) {
                    if let (Some(pts), ChunkKind::SegmentStart | ChunkKind::PartStart) =
                        (chunk.pts, chunk.kind)
                    {
                        (chunk.first_input, chunk.last_input) =
                            arrivals_of(&arrivals, pts, pts + chunk.duration);
                    }
                    if tx_data
                        .send(MediaEvent::Chunk {
                            rendition: r.clone(),
                            chunk,
                        })
                        .is_err()
                    {
                        return Err(gst::FlowError::Flushing);
                    }
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );

    for e in elements {
        e.sync_state_with_parent()
            .map_err(|e| MediaError::Setup(e.to_string()))?;
    }
    pad.link(&queue.static_pad("sink").expect("queue has a sink pad"))
        .map_err(|e| MediaError::Setup(format!("link: {e:?}")))?;
    Ok(())
}

fn track_info(caps: &gst::CapsRef, rendition: &str) -> Option<TrackInfo> {
    let s = caps.structure(0)?;
    let codecs = gst_pbutils::codec_utils_caps_get_mime_codec(caps)
        .ok()?
        .to_string();
    let frame_rate = s
        .get::<gst::Fraction>("framerate")
        .ok()
        .filter(|f| f.numer() > 0 && f.denom() > 0)
        .map(|f| f.numer() as f64 / f.denom() as f64);
    let resolution = match (s.get::<i32>("width"), s.get::<i32>("height")) {
        (Ok(w), Ok(h)) if w > 0 && h > 0 => Some((w as u32, h as u32)),
        _ => None,
    };
    Some(TrackInfo {
        codecs,
        resolution,
        frame_rate,
        channels: s.get::<i32>("channels").ok().map(|c| c as u32),
        audio: rendition == AUDIO,
    })
}

/// Splits an appsink sample (a buffer list from cmafmux) into pieces: each `HEADER`
/// buffer starts one, and the data buffers after it belong to it.
/// Arrival times of the first and the last frame of a chunk spanning `[start, end)`;
/// entries before `end` are dropped.
fn arrivals_of(
    log: &Mutex<VecDeque<(u64, Instant)>>,
    start: Duration,
    end: Duration,
) -> (Option<Instant>, Option<Instant>) {
    let (start, end) = (start.as_nanos() as u64, end.as_nanos() as u64);
    let mut log = log.lock().expect("not poisoned");
    let in_chunk = || log.iter().filter(|(p, _)| *p < end);
    let first = in_chunk()
        .filter(|(p, _)| *p >= start)
        .min_by_key(|(p, _)| *p)
        .map(|(_, t)| *t);
    let last = in_chunk().map(|(_, t)| *t).max();
    // Frames are logged in decode order, so a frame that starts before this chunk's end
    // and was logged before the last one used is done with.
    while log.front().is_some_and(|(p, _)| *p < end) {
        log.pop_front();
    }
    (first, last)
}

fn chunks_of(sample: &gst::Sample) -> Vec<MediaChunk> {
    let mut out: Vec<(MediaChunk, BytesMut)> = Vec::new();
    let mut visit = |buf: &gst::BufferRef| {
        let flags = buf.flags();
        if flags.contains(gst::BufferFlags::HEADER) {
            // The init segment is `DISCONT|HEADER`; the first fragment after it may carry
            // DISCONT too, so an init is also recognised by its leading `ftyp`.
            let kind = if flags.contains(gst::BufferFlags::DISCONT)
                && (buf.pts().is_none() || is_init(buf))
            {
                ChunkKind::Init
            } else if flags.contains(gst::BufferFlags::DELTA_UNIT) {
                ChunkKind::PartStart
            } else {
                ChunkKind::SegmentStart
            };
            let pts = buf.pts().map(|t| Duration::from_nanos(t.nseconds()));
            let duration = buf
                .duration()
                .map(|t| Duration::from_nanos(t.nseconds()))
                .unwrap_or_default();
            out.push((
                MediaChunk {
                    kind,
                    data: Bytes::new(),
                    pts: if kind == ChunkKind::Init { None } else { pts },
                    duration: if kind == ChunkKind::Init {
                        Duration::ZERO
                    } else {
                        duration
                    },
                    last_input: None,
                    first_input: None,
                },
                BytesMut::new(),
            ));
        }
        if let (Some((_, acc)), Ok(map)) = (out.last_mut(), buf.map_readable()) {
            acc.extend_from_slice(map.as_slice());
        }
    };
    if let Some(list) = sample.buffer_list() {
        for buf in list.iter() {
            visit(buf);
        }
    } else if let Some(buf) = sample.buffer() {
        visit(buf);
    }
    out.into_iter()
        .map(|(mut c, acc)| {
            c.data = acc.freeze();
            c
        })
        .collect()
}

/// An init segment starts with an `ftyp` box.
fn is_init(buf: &gst::BufferRef) -> bool {
    buf.map_readable()
        .map(|m| m.len() >= 8 && &m[4..8] == b"ftyp")
        .unwrap_or(false)
}
