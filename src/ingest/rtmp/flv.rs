//! FLV framing of RTMP media messages, for `flvdemux`.
//!
//! An RTMP audio or video message body is exactly an FLV tag body (E.4 of the FLV spec,
//! "FLV Tag Definition"), so an FLV stream is the file header followed by one tag per
//! message: an 11-byte tag header before the body and the 4-byte `PreviousTagSize` after.

use bytes::{BufMut, Bytes, BytesMut};

/// FLV `TagType` of an audio tag.
pub const AUDIO: u8 = 8;
/// FLV `TagType` of a video tag.
pub const VIDEO: u8 = 9;

/// The FLV file header ("FLV", version 1, audio and video present, header size 9)
/// followed by `PreviousTagSize0` = 0.
pub fn header() -> Bytes {
    Bytes::from_static(b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00")
}

/// One FLV tag: `TagType`, `DataSize` (24 bits), `Timestamp` (lower 24 bits, then the
/// upper 8 in `TimestampExtended`), `StreamID` (always 0), the body, then
/// `PreviousTagSize` (11 + body length). Bodies over 16 MiB cannot be framed: `None`.
pub fn tag(kind: u8, timestamp_ms: u32, body: &[u8]) -> Option<Bytes> {
    let len = u32::try_from(body.len()).ok().filter(|l| *l < 1 << 24)?;
    let mut b = BytesMut::with_capacity(11 + body.len() + 4);
    b.put_u8(kind);
    b.put_uint(u64::from(len), 3);
    b.put_uint(u64::from(timestamp_ms & 0x00FF_FFFF), 3);
    b.put_u8((timestamp_ms >> 24) as u8);
    b.put_uint(0, 3);
    b.put_slice(body);
    b.put_u32(11 + len);
    Some(b.freeze())
}

/// Whether a tag body is a codec configuration ("sequence header"): an AVC
/// `AVCDecoderConfigurationRecord` (`AVCPacketType` 0) or an AAC `AudioSpecificConfig`
/// (`AACPacketType` 0). A rebuilt pipeline needs them again before any frame.
pub fn is_sequence_header(kind: u8, body: &[u8]) -> bool {
    match (kind, body) {
        (VIDEO, [first, 0, ..]) => first & 0x80 == 0 && first & 0x0F == 7,
        (AUDIO, [first, 0, ..]) => first >> 4 == 10,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_layout() {
        let t = tag(VIDEO, 0x0123_4567, &[0x17, 0x01, 0xAA]).unwrap();
        assert_eq!(
            &t[..],
            &[
                9, 0, 0, 3, // type, size
                0x23, 0x45, 0x67, 0x01, // timestamp lower 24 bits, then upper 8
                0, 0, 0, // stream id
                0x17, 0x01, 0xAA, // body
                0, 0, 0, 14, // previous tag size
            ]
        );
        assert_eq!(&header()[..3], b"FLV");
        assert_eq!(header().len(), 13);
        assert!(tag(AUDIO, 0, &vec![0; 1 << 24]).is_none());
    }

    #[test]
    fn sequence_headers() {
        assert!(is_sequence_header(VIDEO, &[0x17, 0, 0, 0, 0]));
        assert!(!is_sequence_header(VIDEO, &[0x17, 1, 0, 0, 0]));
        assert!(!is_sequence_header(VIDEO, &[0x90, 0, 0, 0, 0]));
        assert!(is_sequence_header(AUDIO, &[0xAF, 0, 0x12, 0x10]));
        assert!(!is_sequence_header(AUDIO, &[0xAF, 1, 0x21]));
        assert!(!is_sequence_header(AUDIO, &[0x2F, 0]));
    }
}
