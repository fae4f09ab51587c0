//! Pipeline branches, built when tsdemux exposes an elementary stream.
//!
//! ```text
//! video: queue ! parse ! capsfilter(avc|hvc1) ! tee
//!          tee. ! queue ! cmafmux ! appsink                        (passthrough "source")
//!          tee. ! queue ! avdec ! tee                               (one decode)
//!                   tee. ! queue(leaky) ! videoscale ! videorate ! capsfilter(raw)
//!                          ! x264enc|x265enc ! parse ! capsfilter ! cmafmux ! appsink  (per rung)
//!                   (a smaller rung may scale from a larger rung's frames: see `rungs`)
//! audio: queue ! aacparse ! capsfilter(raw AAC) ! cmafmux ! appsink ("audio")
//! ```
//! Rungs are added when the parser's caps tell the source size, before the first frame.
//! Every rung's cmafmux asks its encoder for keyframes at the same running times, so
//! segments line up across renditions.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use gst::prelude::*;

use super::{MediaConfig, MediaError, MediaEvent, TrackInfo, AUDIO, PASSTHROUGH};
use crate::{config::RungCodec, packager::ChunkKind};

mod chunks;
mod probes;
mod rungs;
mod select;
mod timing;
use chunks::{chunks_of, Parts};
use probes::{
    arrivals_of, drop_until_timestamped, guard_adts, log_arrivals, on_caps, watch_timestamps,
};
use rungs::add_rungs;
pub(super) use select::{take_fallback, Fallback};
use timing::{chunk_duration, fragment_duration, Track};

/// What every branch builder needs.
#[derive(Clone)]
pub(super) struct Ctx {
    pub pipeline: gst::glib::WeakRef<gst::Pipeline>,
    pub cfg: Arc<MediaConfig>,
    pub tx: super::EventTx,
    /// Names of the demuxer pads that feed the video and audio branches: when one goes
    /// away mid-stream (a PMT, PID, program or codec change), the pipeline is rebuilt.
    pub main_pads: Arc<Mutex<Vec<String>>>,
    /// An audio track set aside for not being in the configured language.
    pub audio_fallback: Fallback,
}

/// When each frame left the demuxer, by PTS (bounded; shared by every rendition made
/// from one elementary stream).
type Arrivals = Arc<Mutex<VecDeque<(u64, Instant)>>>;
const ARRIVALS_KEPT: usize = 1024;

fn make(factory: &str, name: Option<&str>) -> Result<gst::Element, MediaError> {
    let mut b = gst::ElementFactory::make(factory);
    if let Some(n) = name {
        b = b.name(n);
    }
    b.build()
        .map_err(|e| MediaError::Setup(format!("{factory}: {e}")))
}

fn setup<E: std::fmt::Display>(e: E) -> MediaError {
    MediaError::Setup(e.to_string())
}

/// Terminates a pad we do not use (an extra track, audio we cannot decode). The queue
/// matters: tsdemux pushes every PID from one thread, and a bare fakesink on one of its
/// pads stalls all the others.
pub(super) fn link_fakesink(pipeline: &gst::Pipeline, pad: &gst::Pad) -> Result<(), MediaError> {
    let q = queue(Duration::from_millis(200), true)?;
    let sink = make("fakesink", None)?;
    sink.set_property("sync", false);
    sink.set_property("async", false);
    pipeline.add_many([&q, &sink]).map_err(setup)?;
    q.link(&sink).map_err(setup)?;
    sync(&[&q, &sink])?;
    pad.link(&q.static_pad("sink").expect("queue has a sink pad"))
        .map_err(|e| setup(format!("{e:?}")))?;
    tracing::info!(pad = %pad.name(), "extra track ignored");
    Ok(())
}

fn add_and_link(pipeline: &gst::Pipeline, elements: &[&gst::Element]) -> Result<(), MediaError> {
    pipeline.add_many(elements.iter().copied()).map_err(setup)?;
    gst::Element::link_many(elements.iter().copied()).map_err(setup)?;
    Ok(())
}

fn sync(elements: &[&gst::Element]) -> Result<(), MediaError> {
    for e in elements {
        e.sync_state_with_parent().map_err(setup)?;
    }
    Ok(())
}

fn queue(max: Duration, leaky: bool) -> Result<gst::Element, MediaError> {
    let q = make("queue", None)?;
    q.set_property("max-size-time", max.as_nanos() as u64);
    q.set_property("max-size-buffers", 0u32);
    q.set_property("max-size-bytes", 0u32);
    if leaky {
        q.set_property_from_str("leaky", "downstream");
    }
    Ok(q)
}

/// Builds the branch for one demuxed pad with its `caps`, if it is a track the stream uses.
pub(super) fn add(ctx: &Ctx, pad: &gst::Pad, caps: gst::Caps) -> Result<(), MediaError> {
    add_track(ctx, pad, caps, false)
}

/// Builds the branch for an audio pad set aside for its language, after all.
fn add_forced(ctx: &Ctx, pad: &gst::Pad) -> Result<(), MediaError> {
    add_track(ctx, pad, super::pad_caps(pad), true)
}

fn add_track(ctx: &Ctx, pad: &gst::Pad, caps: gst::Caps, forced: bool) -> Result<(), MediaError> {
    let pipeline = ctx
        .pipeline
        .upgrade()
        .ok_or_else(|| setup("pipeline gone"))?;
    tracing::debug!(pad = %pad.name(), caps = %caps, "elementary stream");
    let s = caps.structure(0).ok_or_else(|| setup("empty caps"))?;
    let (kind, parser, filter, decoder) = match s.name().as_str() {
        "video/x-h264" => (
            "video",
            "h264parse",
            parsed_caps(RungCodec::H264),
            "avdec_h264",
        ),
        "video/x-h265" => (
            "video",
            "h265parse",
            parsed_caps(RungCodec::H265),
            "avdec_h265",
        ),
        "audio/mpeg" if matches!(s.get::<i32>("mpegversion"), Ok(2 | 4)) => {
            ("audio", "aacparse", aac_caps(), "")
        }
        other if other.starts_with("audio/") && audio_decodable(&caps) => {
            // Not AAC: decoded and encoded to AAC once, into the shared audio group.
            ("audio", "decodebin", aac_caps(), "")
        }
        other => {
            return Err(MediaError::Unsupported {
                kind: if other.starts_with("video/") {
                    "video"
                } else {
                    "audio"
                },
                caps: other.to_owned(),
            })
        }
    };
    if let select::Choice::Ignored = select::choose(ctx, &pipeline, pad, kind, forced)? {
        return Ok(());
    }
    let q = queue(Duration::from_secs(2), false)?;
    q.set_property("name", select::marker(kind));
    let capsfilter = make("capsfilter", None)?;
    capsfilter.set_property("caps", &filter);
    let parse = if parser == "decodebin" {
        audio_transcoder(&pipeline, &q, &capsfilter)?
    } else {
        let parse = make(parser, None)?;
        add_and_link(&pipeline, &[&q, &parse, &capsfilter])?;
        parse
    };
    drop_until_timestamped(&q);
    if parser == "aacparse" && s.get::<&str>("stream-format").ok() == Some("adts") {
        guard_adts(ctx, &q);
    }
    // Per frame, after the parser: a PES can hold several frames, and cmafmux wants each
    // frame's decode time to move forward.
    watch_timestamps(ctx, &capsfilter, kind);
    let arrivals = log_arrivals(&q);

    if kind == "audio" {
        let r: Arc<str> = Arc::from(AUDIO);
        watch_track(ctx, &capsfilter, r.clone(), true);
        let tail = sink_branch(ctx, &pipeline, r, false, arrivals)?;
        capsfilter.link(&tail).map_err(setup)?;
    } else {
        let ladder = &ctx.cfg.ladder;
        let tee = make("tee", None)?;
        tee.set_property("allow-not-linked", true);
        pipeline.add(&tee).map_err(setup)?;
        capsfilter.link(&tee).map_err(setup)?;
        // Source changes are watched on the parsed stream whether or not it is passed on.
        // A format browsers cannot decode is not passed through: the rungs carry it, or
        // the stream is refused with what to change.
        let pass_ok = Arc::new(AtomicBool::new(true));
        watch_track_gated(
            ctx,
            &capsfilter,
            Arc::from(PASSTHROUGH),
            ladder.passthrough,
            Some(pass_ok.clone()),
        );
        if ladder.passthrough {
            let pq = queue(Duration::from_secs(2), false)?;
            pipeline.add(&pq).map_err(setup)?;
            tee.link(&pq).map_err(setup)?;
            let gate = pass_ok.clone();
            pq.static_pad("sink")
                .expect("queue has a sink pad")
                .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                    if gate.load(Ordering::Relaxed) {
                        gst::PadProbeReturn::Ok
                    } else {
                        gst::PadProbeReturn::Drop
                    }
                });
            let tail = sink_branch(
                ctx,
                &pipeline,
                Arc::from(PASSTHROUGH),
                false,
                arrivals.clone(),
            )?;
            pq.link(&tail).map_err(setup)?;
            sync(&[&pq])?;
        }
        if !ladder.rungs.is_empty() {
            let dq = queue(Duration::from_secs(2), false)?;
            let dec = make(decoder, None)?;
            // Without direct rendering the decoder copies each picture into a buffer of
            // its pool. With it, libav still holds the picture as a reference frame when
            // the decoder finishes it, so GstVideoDecoder copies it anyway, into a fresh
            // allocation: with the mmap threshold pinned (main.rs) that is an mmap, page
            // faults and zeroing per frame (3 MiB at 1080p).
            dec.set_property("direct-rendering", false);
            let dtee = make("tee", None)?;
            dtee.set_property("allow-not-linked", true);
            pipeline.add_many([&dq, &dec, &dtee]).map_err(setup)?;
            tee.link(&dq).map_err(setup)?;
            gst::Element::link_many([&dq, &dec, &dtee]).map_err(setup)?;
            sync(&[&dq, &dec, &dtee])?;
            // Add the rungs once the source size is known, before the first frame.
            let ctx2 = ctx.clone();
            let mut done = false;
            on_caps(&capsfilter, move |caps| {
                if std::mem::replace(&mut done, true) {
                    return;
                }
                let passthrough = ctx2.cfg.ladder.passthrough && pass_ok.load(Ordering::Relaxed);
                if let Err(e) = add_rungs(&ctx2, &dtee, caps, &arrivals, passthrough) {
                    let _ = ctx2.tx.send(MediaEvent::Error(e));
                }
            });
        }
        sync(&[&tee])?;
    }
    sync(&[&q, &parse, &capsfilter])?;
    pad.link(&q.static_pad("sink").expect("queue has a sink pad"))
        .map_err(|e| setup(format!("link: {e:?}")))?;
    ctx.main_pads
        .lock()
        .expect("not poisoned")
        .push(pad.name().to_string());
    Ok(())
}

fn aac_caps() -> gst::Caps {
    gst::Caps::builder("audio/mpeg")
        .field("mpegversion", 4i32)
        .field("stream-format", "raw")
        .build()
}

/// Whether an installed decoder takes these audio caps (checked up front: a decodebin
/// that finds none would fail the whole pipeline, where dropping the audio is better).
fn audio_decodable(caps: &gst::Caps) -> bool {
    let decoders = gst::ElementFactory::factories_with_type(
        gst::ElementFactoryType::DECODER | gst::ElementFactoryType::MEDIA_AUDIO,
        gst::Rank::MARGINAL,
    );
    let parsers = gst::ElementFactory::factories_with_type(
        gst::ElementFactoryType::PARSER | gst::ElementFactoryType::MEDIA_AUDIO,
        gst::Rank::MARGINAL,
    );
    let takes = |list: &gst::glib::List<gst::ElementFactory>| {
        list.iter().any(|f| f.can_sink_any_caps(caps))
    };
    takes(&decoders) || takes(&parsers)
}

/// `q ! decodebin ! audioconvert ! audioresample ! avenc_aac ! aacparse ! capsfilter`,
/// the decodebin pad linked when it appears. Returns the decodebin.
fn audio_transcoder(
    pipeline: &gst::Pipeline,
    q: &gst::Element,
    capsfilter: &gst::Element,
) -> Result<gst::Element, MediaError> {
    let dec = make("decodebin", None)?;
    let convert = make("audioconvert", None)?;
    let resample = make("audioresample", None)?;
    let enc = make("avenc_aac", None)?;
    enc.set_property_from_str("bitrate", "128000");
    let parse = make("aacparse", None)?;
    pipeline
        .add_many([q, &dec, &convert, &resample, &enc, &parse, capsfilter])
        .map_err(setup)?;
    q.link(&dec).map_err(setup)?;
    gst::Element::link_many([&convert, &resample, &enc, &parse, capsfilter]).map_err(setup)?;
    let sink = convert
        .static_pad("sink")
        .expect("audioconvert has a sink pad");
    dec.connect_pad_added(move |_, pad| {
        let raw = pad
            .current_caps()
            .unwrap_or_else(|| pad.query_caps(None))
            .structure(0)
            .is_some_and(|s| s.name().starts_with("audio/x-raw"));
        if raw && !sink.is_linked() {
            let _ = pad.link(&sink);
        }
    });
    sync(&[&dec, &convert, &resample, &enc, &parse])?;
    Ok(dec)
}

fn parsed_caps(codec: RungCodec) -> gst::Caps {
    match codec {
        RungCodec::H264 => gst::Caps::builder("video/x-h264")
            .field("stream-format", "avc")
            .field("alignment", "au")
            .build(),
        // `hvc1`: parameter sets only in the sample entry, which Safari requires.
        RungCodec::H265 => gst::Caps::builder("video/x-h265")
            .field("stream-format", "hvc1")
            .field("alignment", "au")
            .build(),
    }
}

/// `cmafmux ! appsink` for one rendition; returns the mux to link into.
fn sink_branch(
    ctx: &Ctx,
    pipeline: &gst::Pipeline,
    rendition: Arc<str>,
    force_keyunit: bool,
    arrivals: Arrivals,
) -> Result<gst::Element, MediaError> {
    let mux = make("cmafmux", Some(&format!("mux-{rendition}")))?;
    mux.set_property(
        "fragment-duration",
        fragment_duration(ctx.cfg.part_target, ctx.cfg.segment_target).as_nanos() as u64,
    );
    let track = if *rendition == *AUDIO {
        Track::Audio
    } else if force_keyunit {
        Track::Rung
    } else {
        Track::Passthrough
    };
    mux.set_property(
        "chunk-duration",
        chunk_duration(ctx.cfg.part_target, track).as_nanos() as u64,
    );
    // In passthrough there is no encoder to ask for keyframes.
    mux.set_property("send-force-keyunit", force_keyunit);
    let sink = gst_app::AppSink::builder()
        .name(format!("sink-{rendition}"))
        .sync(false)
        .buffer_list(true)
        .build();
    // No preroll: a sink that waits for its first buffer would take the whole live
    // pipeline back to PAUSED, where appsrc pushes nothing (a passthrough closed for an
    // unplayable format never gets one).
    sink.set_property("async", false);
    pipeline
        .add_many([&mux, sink.upcast_ref()])
        .map_err(setup)?;
    mux.link(&sink).map_err(setup)?;
    let tx = Arc::new(super::events::RenditionTx::new(
        ctx.tx.clone(),
        rendition.clone(),
    ));
    // A passthrough's chunks are joined into parts here; the others' are parts already.
    let parts = (track == Track::Passthrough)
        .then(|| Arc::new(std::sync::Mutex::new(Parts::new(ctx.cfg.part_target))));
    let (eos_parts, eos_tx) = (parts.clone(), tx.clone());
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .eos(move |_| {
                // The part still open at the end of the input is published too.
                if let Some(mut p) = eos_parts.as_ref().and_then(|p| p.lock().ok()) {
                    for part in p.flush() {
                        let _ = eos_tx.send(part);
                    }
                }
            })
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                // Timestamps are compared across renditions as running time: encoders
                // shift their output segment (x264enc by 1000 hours) to keep DTS positive.
                let segment = sample
                    .segment()
                    .and_then(|s| s.downcast_ref::<gst::ClockTime>().cloned());
                for (mut chunk, frame) in chunks_of(&sample) {
                    chunk.pts = chunk.pts.and_then(|p| {
                        let p = gst::ClockTime::from_nseconds(p.as_nanos() as u64);
                        let rt = match &segment {
                            Some(seg) => seg.to_running_time(p)?,
                            None => p,
                        };
                        Some(Duration::from_nanos(rt.nseconds()))
                    });
                    if let (Some(pts), ChunkKind::SegmentStart | ChunkKind::PartStart) =
                        (chunk.pts, chunk.kind)
                    {
                        (chunk.first_input, chunk.last_input) =
                            arrivals_of(&arrivals, pts, pts + chunk.duration);
                    }
                    let done = match &parts {
                        Some(p) => p.lock().expect("not poisoned").push(chunk, frame),
                        None => vec![chunk],
                    };
                    for part in done {
                        if tx.send(part).is_err() {
                            return Err(gst::FlowError::Flushing);
                        }
                    }
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    sync(&[&mux, sink.upcast_ref()])?;
    Ok(mux)
}

/// Reports a rendition's track info from its parsed caps; on the source's own stream, a
/// later change of size, rate or codec is reported as [`MediaError::SourceChanged`].
fn watch_track(ctx: &Ctx, capsfilter: &gst::Element, rendition: Arc<str>, report: bool) {
    watch_track_gated(ctx, capsfilter, rendition, report, None);
}

/// Why browsers cannot decode parsed video caps as they are (10-bit, 4:2:2, 4:4:4), if so.
fn not_browser_safe(caps: &gst::CapsRef) -> Option<String> {
    let s = caps.structure(0)?;
    let chroma = s.get::<&str>("chroma-format").ok();
    let depth = s.get::<u32>("bit-depth-luma").ok();
    let bad = chroma.is_some_and(|c| c != "4:2:0") || depth.is_some_and(|d| d > 8);
    bad.then(|| {
        format!(
            "{} {} ({} {}-bit)",
            if s.name().as_str() == "video/x-h265" {
                "HEVC"
            } else {
                "H.264"
            },
            s.get::<&str>("profile").unwrap_or("?"),
            chroma.unwrap_or("?"),
            depth.unwrap_or(8)
        )
    })
}

/// Like [`watch_track`]; with a `gate`, the passthrough is closed (and not reported)
/// when its format is not browser-safe, and the stream fails with
/// [`MediaError::UnplayableFormat`] when no rung can carry it instead.
fn watch_track_gated(
    ctx: &Ctx,
    capsfilter: &gst::Element,
    rendition: Arc<str>,
    report: bool,
    gate: Option<Arc<AtomicBool>>,
) {
    let tx = ctx.tx.clone();
    let has_rungs = !ctx.cfg.ladder.rungs.is_empty();
    let watch_changes = *rendition == *PASSTHROUGH || *rendition == *AUDIO;
    let mut last: Option<TrackInfo> = None;
    on_caps(capsfilter, move |caps| {
        let Some(info) = track_info(caps, &rendition) else {
            return;
        };
        if let Some(prev) = last.as_ref() {
            if *prev != info && watch_changes {
                let change = if *rendition == *AUDIO {
                    crate::media::Change::Audio
                } else {
                    crate::media::Change::Video
                };
                let detail = format!(
                    "{} {:?} -> {} {:?}",
                    prev.codecs, prev.resolution, info.codecs, info.resolution
                );
                let _ = tx.send(MediaEvent::Error(crate::media::format_changed(
                    change, &detail,
                )));
            }
            return;
        }
        last = Some(info.clone());
        if let (Some(gate), true, Some(why)) = (&gate, report, not_browser_safe(caps)) {
            gate.store(false, Ordering::Relaxed);
            if has_rungs {
                tracing::warn!(format = %why, "not passed through (browsers cannot decode it); the ladder carries it");
            } else {
                let _ = tx.send(MediaEvent::Error(MediaError::UnplayableFormat(why)));
            }
            return;
        }
        if report {
            let _ = tx.send(MediaEvent::Track {
                rendition: rendition.clone(),
                info,
            });
        }
    });
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
