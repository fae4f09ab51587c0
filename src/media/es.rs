//! Elementary-stream input: codec configurations and frames handed over one by one, for
//! what no GStreamer 1.22 demuxer reads (Enhanced RTMP's HEVC in FLV).
//!
//! Each track gets its own `appsrc` with caps built from the codec configuration record
//! (`codec_data`), made when the first configuration arrives and handed to the same
//! branch builder a demuxer pad goes to:
//! ```text
//! appsrc(video/x-h265,stream-format=hvc1,codec_data=hvcC) -> h265parse -> ... (branch.rs)
//! appsrc(audio/mpeg,mpegversion=4,stream-format=raw,codec_data=ASC) -> aacparse -> ...
//! ```
//! Timestamps are the publisher's (decode time, and presentation time = decode time +
//! composition offset), in one time base for both tracks.

use std::time::Duration;

use bytes::Bytes;
use gst::prelude::*;

use super::{branch, Change, MediaError, MediaEvent};

/// A codec an elementary stream may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EsCodec {
    /// H.264; the record is an `AVCDecoderConfigurationRecord` (ISO/IEC 14496-15 5.3.3).
    H264,
    /// HEVC; the record is an `HEVCDecoderConfigurationRecord` (ISO/IEC 14496-15 8.3.3).
    H265,
    /// AAC; the record is an `AudioSpecificConfig` (ISO/IEC 14496-3 1.6.2.1).
    Aac,
}

impl EsCodec {
    fn video(self) -> bool {
        self != EsCodec::Aac
    }

    /// The appsrc caps: length-prefixed access units (video) or raw AAC frames.
    fn caps(self, record: &Bytes) -> gst::Caps {
        let data = gst::Buffer::from_slice(record.clone());
        let b = match self {
            EsCodec::H264 => gst::Caps::builder("video/x-h264")
                .field("stream-format", "avc")
                .field("alignment", "au"),
            EsCodec::H265 => gst::Caps::builder("video/x-h265")
                .field("stream-format", "hvc1")
                .field("alignment", "au"),
            EsCodec::Aac => gst::Caps::builder("audio/mpeg")
                .field("mpegversion", 4i32)
                .field("stream-format", "raw"),
        };
        b.field("codec_data", data).build()
    }
}

/// One item of an elementary stream.
#[derive(Debug, Clone, PartialEq)]
pub enum EsSample {
    /// A codec configuration: defines the track (its first) or changes it mid-stream.
    Config {
        /// The codec.
        codec: EsCodec,
        /// Its configuration record.
        record: Bytes,
    },
    /// One access unit (video: length-prefixed NAL units; audio: one raw AAC frame).
    Frame {
        /// Whether it is video.
        video: bool,
        /// Decode time.
        dts: Duration,
        /// Presentation time.
        pts: Duration,
        /// Whether it can be decoded on its own.
        keyframe: bool,
        /// Its bytes.
        data: Bytes,
    },
}

/// One track's source.
struct Track {
    src: gst_app::AppSrc,
    codec: EsCodec,
    record: Bytes,
    /// Video waits for a keyframe: frames before it cannot be decoded.
    keyed: bool,
}

/// The elementary-stream sources of one pipeline (none until a configuration arrives).
pub(super) struct EsInput {
    ctx: branch::Ctx,
    /// Video, audio.
    tracks: [Option<Track>; 2],
}

impl EsInput {
    pub(super) fn new(ctx: branch::Ctx) -> Self {
        Self {
            ctx,
            tracks: [None, None],
        }
    }

    /// Whether any track was made: the pipeline's input is then elementary.
    pub(super) fn active(&self) -> bool {
        self.tracks.iter().any(Option::is_some)
    }

    /// Feeds one sample; never blocks (appsrc queues, bounded and leaky).
    pub(super) fn push(&mut self, sample: EsSample) {
        match sample {
            EsSample::Config { codec, record } => self.configure(codec, record),
            EsSample::Frame {
                video,
                dts,
                pts,
                keyframe,
                data,
            } => {
                let Some(t) = self.tracks[usize::from(!video)].as_mut() else {
                    return;
                };
                t.keyed |= keyframe || !video;
                if !t.keyed {
                    return;
                }
                let mut buf = gst::Buffer::from_slice(data);
                let b = buf.get_mut().expect("a new buffer is writable");
                b.set_dts(gst::ClockTime::from_nseconds(dts.as_nanos() as u64));
                b.set_pts(gst::ClockTime::from_nseconds(pts.as_nanos() as u64));
                if !keyframe && video {
                    b.set_flags(gst::BufferFlags::DELTA_UNIT);
                }
                let _ = t.src.push_buffer(buf);
            }
        }
    }

    /// The first configuration of a track makes its source and branch; a different one
    /// later is a source change (the pipeline is rebuilt, as for any mid-stream change:
    /// cmafmux cannot change its init segment). A repeated one is ignored.
    fn configure(&mut self, codec: EsCodec, record: Bytes) {
        let slot = usize::from(!codec.video());
        if let Some(t) = &self.tracks[slot] {
            if t.codec != codec || t.record != record {
                let change = if codec.video() {
                    Change::Video
                } else {
                    Change::Audio
                };
                let detail = format!("new {codec:?} configuration mid-stream");
                let _ = self
                    .ctx
                    .tx
                    .send(MediaEvent::Error(super::format_changed(change, &detail)));
            }
            return;
        }
        match self.make(codec, &record) {
            Ok(src) => {
                self.tracks[slot] = Some(Track {
                    src,
                    codec,
                    record,
                    keyed: false,
                })
            }
            Err(e) => {
                let _ = self.ctx.tx.send(MediaEvent::Error(e));
            }
        }
    }

    fn make(&self, codec: EsCodec, record: &Bytes) -> Result<gst_app::AppSrc, MediaError> {
        let pipeline = self
            .ctx
            .pipeline
            .upgrade()
            .ok_or_else(|| MediaError::Setup("pipeline gone".into()))?;
        let kind = if codec.video() { "video" } else { "audio" };
        let src = super::input_src(&format!("es-{kind}"), &codec.caps(record));
        pipeline
            .add(&src)
            .map_err(|e| MediaError::Setup(e.to_string()))?;
        let pad = src.static_pad("src").expect("appsrc has a src pad");
        // The caps are given: an appsrc answers a caps query only once it has pushed them.
        super::on_stream(&self.ctx, &pad, codec.caps(record));
        src.sync_state_with_parent()
            .map_err(|e| MediaError::Setup(e.to_string()))?;
        Ok(src)
    }

    /// Ends every track; the pipeline drains and reports EOS.
    pub(super) fn end_of_stream(&self) {
        for t in self.tracks.iter().flatten() {
            let _ = t.src.end_of_stream();
        }
    }
}
