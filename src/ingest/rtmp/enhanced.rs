//! Enhanced RTMP (veovera "enhanced-rtmp" v1, as OBS 29.1+ sends HEVC): video tags with
//! a FourCC instead of a legacy `CodecID`, read into elementary-stream samples, since
//! GStreamer 1.22's `flvdemux` knows nothing of them. AAC audio tags beside them are read
//! too, so both tracks share one time base.
//!
//! An extended video tag body (spec "ExVideoTagHeader"):
//! ```text
//! UB[1] IsExHeader = 1 | UB[3] FrameType | UB[4] PacketType | FOURCC VideoFourCc
//! PacketType 0 SequenceStart:   the codec configuration record (hvcC, avcC)
//!            1 CodedFrames:     SI24 CompositionTime, then length-prefixed NAL units
//!            2 SequenceEnd, 4 Metadata: nothing to pass on
//!            3 CodedFramesX:    NAL units, composition time 0
//!            5 MPEG2TSSequenceStart (AV1 only)
//! ```
//! FrameType 1 is a keyframe, 5 a command frame (no media). The FLV timestamp is the
//! decode time; presentation time = decode time + CompositionTime.

use std::time::Duration;

use bytes::Bytes;

use crate::media::{EsCodec, EsSample};

/// What an extended video tag carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Video {
    /// A sample for the pipeline.
    Sample(EsSample),
    /// Nothing to pass on (SequenceEnd, Metadata, a command frame, an empty frame).
    Skip,
}

/// Why a tag is refused; its text tells the publisher what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A FourCC other than `hvc1` or `avc1` (`av01`, `vp09`...).
    #[error("Enhanced RTMP video codec {0:?} is not supported; publish HEVC (hvc1) or H.264")]
    VideoCodec(String),
    /// Enhanced RTMP audio (`SoundFormat` 9: Opus, FLAC, AC-3... by FourCC).
    #[error("Enhanced RTMP audio codec {0:?} is not supported; publish AAC")]
    AudioCodec(String),
    /// Legacy and extended video on one connection: the pipeline was built for one.
    #[error("the publisher switched between legacy and Enhanced RTMP video mid-stream; reconnect")]
    Switched,
    /// Enhanced RTMP v2 packet types (multitrack, ModEx).
    #[error("Enhanced RTMP packet type {0} (v2 multitrack or ModEx) is not supported")]
    PacketType(u8),
}

impl Refusal {
    /// The `estuary_rtmp_rejected_total` reason.
    pub fn reason(&self) -> &'static str {
        "unsupported_codec"
    }
}

/// Whether a video tag body is an extended one (`IsExHeader` set).
pub fn is_enhanced(body: &[u8]) -> bool {
    body.first().is_some_and(|b| b & 0x80 != 0)
}

fn fourcc(body: &[u8]) -> String {
    String::from_utf8_lossy(body.get(1..5).unwrap_or_default()).into_owned()
}

/// Reads an extended video tag body sent at `timestamp_ms` (its decode time).
///
/// # Errors
/// A [`Refusal`] for a codec or packet type not handled.
pub fn video(body: &Bytes, timestamp_ms: u32) -> Result<Video, Refusal> {
    let Some(&first) = body.first() else {
        return Ok(Video::Skip);
    };
    let (frame_type, packet_type) = ((first >> 4) & 0x07, first & 0x0F);
    if packet_type > 5 {
        return Err(Refusal::PacketType(packet_type));
    }
    let codec = match body.get(1..5) {
        Some(b"hvc1") => EsCodec::H265,
        Some(b"avc1") => EsCodec::H264,
        Some(_) => return Err(Refusal::VideoCodec(fourcc(body))),
        None => return Ok(Video::Skip),
    };
    if frame_type == 5 {
        return Ok(Video::Skip);
    }
    let (cts, data) = match packet_type {
        0 if body.len() > 5 => {
            return Ok(Video::Sample(EsSample::Config {
                codec,
                record: body.slice(5..),
            }))
        }
        1 if body.len() > 8 => {
            // SI24, big-endian: sign-extend from the top byte.
            let cts = i32::from_be_bytes([body[5], body[6], body[7], 0]) >> 8;
            (cts, body.slice(8..))
        }
        3 if body.len() > 5 => (0, body.slice(5..)),
        _ => return Ok(Video::Skip),
    };
    let dts = Duration::from_millis(u64::from(timestamp_ms));
    let offset = Duration::from_millis(u64::from(cts.unsigned_abs()));
    let pts = if cts >= 0 {
        dts + offset
    } else {
        dts.saturating_sub(offset)
    };
    Ok(Video::Sample(EsSample::Frame {
        video: true,
        dts,
        pts,
        keyframe: frame_type == 1,
        data,
    }))
}

/// What an audio tag carries, beside extended video.
#[derive(Debug, Clone, PartialEq)]
pub enum Audio {
    /// AAC: its configuration or a frame.
    Sample(EsSample),
    /// A legacy codec other than AAC (MP3, Speex...), which this path does not carry.
    Other(u8),
    /// Nothing (an empty tag).
    Skip,
}

/// Reads a legacy audio tag body sent at `timestamp_ms`: AAC (`SoundFormat` 10) with
/// `AACPacketType` 0 (AudioSpecificConfig) or 1 (a raw frame).
///
/// # Errors
/// [`Refusal::AudioCodec`] for Enhanced RTMP audio (`SoundFormat` 9), in any mode.
pub fn audio(body: &Bytes, timestamp_ms: u32) -> Result<Audio, Refusal> {
    let Some(&first) = body.first() else {
        return Ok(Audio::Skip);
    };
    Ok(match (first >> 4, body.get(1)) {
        (9, _) => return Err(Refusal::AudioCodec(fourcc(body))),
        (10, Some(0)) if body.len() > 2 => Audio::Sample(EsSample::Config {
            codec: EsCodec::Aac,
            record: body.slice(2..),
        }),
        (10, Some(1)) if body.len() > 2 => {
            let t = Duration::from_millis(u64::from(timestamp_ms));
            Audio::Sample(EsSample::Frame {
                video: false,
                dts: t,
                pts: t,
                keyframe: true,
                data: body.slice(2..),
            })
        }
        (10, _) => Audio::Skip,
        (other, _) => Audio::Other(other),
    })
}

/// Refuses Enhanced RTMP audio before it reaches a demuxer that would misread it.
///
/// # Errors
/// As [`audio`].
pub fn check_audio(body: &[u8]) -> Result<(), Refusal> {
    match body.first() {
        Some(b) if b >> 4 == 9 => Err(Refusal::AudioCodec(fourcc(body))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(v: Video) -> (Duration, Duration, bool, Bytes) {
        match v {
            Video::Sample(EsSample::Frame {
                dts,
                pts,
                keyframe,
                data,
                ..
            }) => (dts, pts, keyframe, data),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hevc_sequence_start_and_frames() {
        let start = Bytes::from_static(b"\x90hvc1\x01\x02\x03");
        assert_eq!(
            video(&start, 0).unwrap(),
            Video::Sample(EsSample::Config {
                codec: EsCodec::H265,
                record: Bytes::from_static(b"\x01\x02\x03"),
            })
        );
        // Keyframe, CodedFrames, CTS +66 ms.
        let key = Bytes::from_static(b"\x91hvc1\x00\x00\x42\x00\x00\x00\x01\xAA");
        let (dts, pts, k, data) = frame(video(&key, 1000).unwrap());
        assert_eq!(
            (dts, pts, k),
            (Duration::from_secs(1), Duration::from_millis(1066), true)
        );
        assert_eq!(&data[..], b"\x00\x00\x00\x01\xAA");
        // Inter frame, CTS -33 ms (SI24 sign extension).
        let b = Bytes::from_static(b"\xA1hvc1\xFF\xFF\xDF\x00\x00\x00\x01\xBB");
        let (dts, pts, k, _) = frame(video(&b, 1000).unwrap());
        assert_eq!(
            (dts, pts, k),
            (Duration::from_secs(1), Duration::from_millis(967), false)
        );
        // CodedFramesX: no CTS field.
        let x = Bytes::from_static(b"\xA3avc1\x00\x00\x00\x01\xCC");
        let (dts, pts, _, data) = frame(video(&x, 40).unwrap());
        assert_eq!(dts, pts);
        assert_eq!(data.len(), 5);
    }

    #[test]
    fn nothing_to_pass_on_is_skipped() {
        for body in [
            &b"\x92hvc1"[..],            // SequenceEnd
            b"\x94hvc1\x02\x00",         // Metadata
            b"\xD1hvc1\x00\x00\x00\x01", // command frame
            b"\x91hvc1\x00\x00",         // frame too short for its CTS
            b"\x90hv",                   // truncated FourCC
            b"",
        ] {
            assert_eq!(
                video(&Bytes::copy_from_slice(body), 0),
                Ok(Video::Skip),
                "{body:?}"
            );
        }
    }

    #[test]
    fn unknown_codecs_and_v2_packets_are_refused_by_name() {
        let av1 = Bytes::from_static(b"\x90av01\x81\x00");
        let e = video(&av1, 0).unwrap_err();
        assert_eq!(e, Refusal::VideoCodec("av01".into()));
        assert!(e.to_string().contains("\"av01\""));
        assert_eq!(e.reason(), "unsupported_codec");
        assert_eq!(
            video(&Bytes::from_static(b"\x96\x00hvc1"), 0),
            Err(Refusal::PacketType(6))
        );
        let opus = Bytes::from_static(b"\x90Opus\x00");
        assert_eq!(audio(&opus, 0), Err(Refusal::AudioCodec("Opus".into())));
        assert!(check_audio(&opus).is_err());
        assert!(check_audio(b"\xAF\x01\x21").is_ok());
    }

    #[test]
    fn aac_tags() {
        let asc = Bytes::from_static(b"\xAF\x00\x12\x10");
        assert_eq!(
            audio(&asc, 0).unwrap(),
            Audio::Sample(EsSample::Config {
                codec: EsCodec::Aac,
                record: Bytes::from_static(b"\x12\x10"),
            })
        );
        match audio(&Bytes::from_static(b"\xAF\x01\x21\x22"), 23).unwrap() {
            Audio::Sample(EsSample::Frame { dts, pts, data, .. }) => {
                assert_eq!(
                    (dts, pts),
                    (Duration::from_millis(23), Duration::from_millis(23))
                );
                assert_eq!(&data[..], b"\x21\x22");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            audio(&Bytes::from_static(b"\x2F\x00"), 0),
            Ok(Audio::Other(2))
        );
        assert_eq!(audio(&Bytes::new(), 0), Ok(Audio::Skip));
    }
}
