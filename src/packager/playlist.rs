//! Playlist rendering: a pure function of the segmenter's state.
//!
//! Tags follow the HLS protocol draft (RFC 8216bis, protocol version 9+). Each tag is
//! written by one small function whose doc quotes the draft.

use std::{fmt::Write, time::Duration, time::SystemTime};

use super::{init_uri, part_uri, segment_uri, Segmenter};

/// The protocol version we declare. Version 9 is needed for `EXT-X-SKIP`.
pub const VERSION: u32 = 9;

/// Another rendition of the same stream, for `EXT-X-RENDITION-REPORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenditionReport {
    /// URI of its media playlist, relative to the one being rendered.
    pub uri: String,
    /// Its last MSN.
    pub last_msn: u64,
    /// Its last part index in that segment.
    pub last_part: u64,
}

/// An `EXT-X-DATERANGE` to carry, such as a poll placed on the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateRange {
    /// `ID`, unique in the playlist.
    pub id: String,
    /// `CLASS`.
    pub class: String,
    /// `START-DATE`.
    pub start: SystemTime,
    /// `END-DATE`, when known.
    pub end: Option<SystemTime>,
    /// Client attributes (`X-…`), raw values without `"`, CR or LF.
    pub attrs: Vec<(String, String)>,
}

/// `#EXT-X-DATERANGE:<attribute-list>`: "associates a Date Range (i.e., a range of time
/// defined by a starting and ending date) with a set of attribute/value pairs" ... "ID
/// ... REQUIRED", "START-DATE ... REQUIRED", "Attributes prefixed with X- are reserved for
/// client-defined attributes" (RFC 8216bis §4.4.5.1).
fn daterange(out: &mut String, d: &DateRange) {
    let clean = |v: &str| v.replace(['"', '\r', '\n'], "");
    let _ = write!(
        out,
        "#EXT-X-DATERANGE:ID=\"{}\",CLASS=\"{}\",START-DATE=\"{}\"",
        clean(&d.id),
        clean(&d.class),
        pdt(d.start)
    );
    if let Some(end) = d.end.filter(|e| *e >= d.start) {
        let _ = write!(out, ",END-DATE=\"{}\"", pdt(end));
    }
    for (k, v) in &d.attrs {
        let name_ok = k.starts_with("X-")
            && k.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-');
        if name_ok {
            let _ = write!(out, ",{k}=\"{}\"", clean(v));
        }
    }
    out.push('\n');
}

/// What a media playlist request asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct MediaRender {
    /// `_HLS_skip=YES`: render a delta update.
    pub skip: bool,
    /// The publisher is connected: add a preload hint for the next part.
    pub live: bool,
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

fn pdt(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// `#EXT-X-SERVER-CONTROL:<attribute-list>`: "CAN-BLOCK-RELOAD=YES ... indicates that the
/// server supports Blocking Playlist Reload"; "CAN-SKIP-UNTIL ... MUST be at least six
/// times the Target Duration"; "PART-HOLD-BACK ... MUST be at least three times the Part
/// Target Duration" (RFC 8216bis §4.4.3.8). The hold-back is configured
/// (`hls.part_hold_back`, by default [`part_hold_back`]).
fn server_control(out: &mut String, target: u64, part_hold_back: Duration) {
    let _ = writeln!(
        out,
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={}.0,PART-HOLD-BACK={}",
        target * 6,
        secs(part_hold_back)
    );
}

/// The least buffer a player is told to keep. ffmpeg's CLI muxer sends AAC in PES of
/// about 230 ms, so an audio part can be published that much after the video beside it;
/// at 0.5 s hls.js's audio buffer ran down to 16 ms and stalled (`e2e_parts100` in CI,
/// its stall log). 0.75 s leaves a quarter second more for the player's own hiccups.
pub const MIN_PART_HOLD_BACK: Duration = Duration::from_millis(750);

/// The default `PART-HOLD-BACK` for a part target: three parts, and at least
/// [`MIN_PART_HOLD_BACK`].
pub fn part_hold_back(part_target: Duration) -> Duration {
    (part_target * 3).max(MIN_PART_HOLD_BACK)
}

/// `#EXT-X-PART:<attribute-list>`: "identifies a Partial Segment ... DURATION ... URI ...
/// INDEPENDENT=YES indicates that the Partial Segment contains an independent frame"
/// (RFC 8216bis §4.4.4.9).
fn part(out: &mut String, info: &super::PartInfo) {
    let _ = write!(
        out,
        "#EXT-X-PART:DURATION={},URI=\"{}\"",
        secs(info.duration),
        part_uri(info.seq)
    );
    out.push_str(if info.independent {
        ",INDEPENDENT=YES\n"
    } else {
        "\n"
    });
}

/// Renders a media playlist.
///
/// `EXT-X-SKIP` replaces the segments that end more than `CAN-SKIP-UNTIL` before the end
/// of the playlist when `req.skip` is set ("the Server MUST ... replace ... with an
/// EXT-X-SKIP tag", §6.2.5.1).
pub fn render_media(
    seg: &Segmenter,
    reports: &[RenditionReport],
    dateranges: &[DateRange],
    req: MediaRender,
) -> String {
    let cfg = seg.config();
    let target = seg.target_duration();
    let mut out = String::with_capacity(2048);
    let _ = writeln!(out, "#EXTM3U\n#EXT-X-VERSION:{VERSION}");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
    let part_target = seg.part_target();
    let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={}", secs(part_target));
    server_control(&mut out, target, cfg.part_hold_back);
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", seg.media_sequence());
    let _ = writeln!(
        out,
        "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
        seg.discontinuity_sequence()
    );

    let complete = seg.segments();
    let total: Duration = complete
        .iter()
        .chain(seg.open_segment())
        .map(|s| s.duration)
        .sum();
    let skip_until = Duration::from_secs(target * 6);
    let mut skipped = 0;
    if req.skip && total > skip_until {
        let boundary = total - skip_until;
        let mut end = Duration::ZERO;
        for s in complete {
            end += s.duration;
            if end > boundary {
                break;
            }
            skipped += 1;
        }
    }
    if skipped > 0 {
        let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
    }
    for d in dateranges {
        daterange(&mut out, d);
    }

    let parts_from = complete.len().saturating_sub(cfg.part_segments);
    let mut current_init = None;
    for (i, s) in complete.iter().enumerate().skip(skipped) {
        if current_init != Some(s.init_gen) {
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", init_uri(s.init_gen));
            current_init = Some(s.init_gen);
        }
        if s.discontinuity {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", pdt(s.pdt));
        if i >= parts_from {
            for info in &s.parts {
                part(&mut out, info);
            }
        }
        let _ = writeln!(out, "#EXTINF:{},\n{}", secs(s.duration), segment_uri(s.msn));
    }
    if let Some(s) = seg.open_segment() {
        if current_init != Some(s.init_gen) {
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", init_uri(s.init_gen));
        }
        if s.discontinuity {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", pdt(s.pdt));
        for info in &s.parts {
            part(&mut out, info);
        }
    }
    if req.live {
        // "#EXT-X-PRELOAD-HINT ... TYPE=PART ... URI" (§4.4.5.3): the next part, named
        // by its running number, so it exists whichever segment it ends up in.
        let _ = writeln!(
            out,
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"",
            seg.next_part_uri()
        );
    }
    // "#EXT-X-RENDITION-REPORT ... LAST-MSN ... LAST-PART" (§4.4.5.4).
    for r in reports {
        let _ = writeln!(
            out,
            "#EXT-X-RENDITION-REPORT:URI=\"{}\",LAST-MSN={},LAST-PART={}",
            r.uri, r.last_msn, r.last_part
        );
    }
    out
}

/// A video variant for `EXT-X-STREAM-INF`.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// Media playlist URI, relative to the multivariant playlist.
    pub uri: String,
    /// Peak bit rate including audio.
    pub bandwidth: u64,
    /// Average bit rate including audio.
    pub average_bandwidth: u64,
    /// RFC 6381 codec string of the video (`avc1.64001f`, `hvc1.1.6.L93.B0`).
    pub codecs: String,
    /// Width and height.
    pub resolution: Option<(u32, u32)>,
    /// Frames per second.
    pub frame_rate: Option<f64>,
}

/// The shared audio rendition for `EXT-X-MEDIA:TYPE=AUDIO`.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioRendition {
    /// Media playlist URI.
    pub uri: String,
    /// RFC 6381 codec string (`mp4a.40.2`).
    pub codecs: String,
    /// Channel count.
    pub channels: Option<u32>,
}

/// Renders the multivariant playlist.
///
/// "#EXT-X-STREAM-INF ... BANDWIDTH ... MUST be present ... CODECS ... SHOULD be present"
/// (§4.4.6.2); "#EXT-X-MEDIA ... TYPE=AUDIO ... GROUP-ID" (§4.4.6.1).
pub fn render_multivariant(variants: &[Variant], audio: Option<&AudioRendition>) -> String {
    let mut out = String::with_capacity(512);
    let _ = writeln!(
        out,
        "#EXTM3U\n#EXT-X-VERSION:{VERSION}\n#EXT-X-INDEPENDENT-SEGMENTS"
    );
    if let Some(a) = audio {
        let _ = write!(
            out,
            "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"main\",DEFAULT=YES,AUTOSELECT=YES,"
        );
        if let Some(c) = a.channels {
            let _ = write!(out, "CHANNELS=\"{c}\",");
        }
        let _ = writeln!(out, "URI=\"{}\"", a.uri);
    }
    for v in variants {
        let codecs = match audio {
            Some(a) => format!("{},{}", v.codecs, a.codecs),
            None => v.codecs.clone(),
        };
        let _ = write!(
            out,
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},CODECS=\"{codecs}\"",
            v.bandwidth, v.average_bandwidth
        );
        if let Some((w, h)) = v.resolution {
            let _ = write!(out, ",RESOLUTION={w}x{h}");
        }
        if let Some(f) = v.frame_rate {
            let _ = write!(out, ",FRAME-RATE={f:.3}");
        }
        if audio.is_some() {
            out.push_str(",AUDIO=\"audio\"");
        }
        let _ = writeln!(out, "\n{}", v.uri);
    }
    out
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::packager::{Chunk, ChunkKind, PackagerConfig};

    fn filled(segments: usize, parts: usize) -> Segmenter {
        let mut s = Segmenter::new(PackagerConfig {
            part_target: Duration::from_millis(200),
            part_hold_back: part_hold_back(Duration::from_millis(200)),
            segment_target: Duration::from_secs(1),
            max_segment: Duration::from_secs(1),
            window_segments: 20,
            part_segments: 2,
        });
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mk = |kind, n: u64| Chunk {
            kind,
            data: Bytes::from_static(b"data"),
            duration: Duration::from_millis(200),
            independent: false,
            pdt: t0 + Duration::from_millis(200 * n),
        };
        s.push(Chunk {
            kind: ChunkKind::Init,
            ..mk(ChunkKind::Init, 0)
        })
        .unwrap();
        let mut n = 0;
        for _ in 0..segments {
            for p in 0..5 {
                let kind = if p == 0 {
                    ChunkKind::SegmentStart
                } else {
                    ChunkKind::PartStart
                };
                s.push(mk(kind, n)).unwrap();
                n += 1;
            }
        }
        for _ in 0..parts {
            let kind = if parts > 0 && n % 5 == 0 {
                ChunkKind::SegmentStart
            } else {
                ChunkKind::PartStart
            };
            s.push(mk(kind, n)).unwrap();
            n += 1;
        }
        s
    }

    #[test]
    fn media_playlist_text() {
        let s = filled(3, 2);
        let reports = [RenditionReport {
            uri: "../audio/index.m3u8".into(),
            last_msn: 3,
            last_part: 1,
        }];
        let text = render_media(
            &s,
            &reports,
            &[],
            MediaRender {
                skip: false,
                live: true,
            },
        );
        let expected = "#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:1
#EXT-X-PART-INF:PART-TARGET=0.200
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=6.0,PART-HOLD-BACK=0.750
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-DISCONTINUITY-SEQUENCE:0
#EXT-X-MAP:URI=\"init.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z
#EXTINF:1.000,
0.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:21.000Z
#EXT-X-PART:DURATION=0.200,URI=\"p5.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.200,URI=\"p6.m4s\"
#EXT-X-PART:DURATION=0.200,URI=\"p7.m4s\"
#EXT-X-PART:DURATION=0.200,URI=\"p8.m4s\"
#EXT-X-PART:DURATION=0.200,URI=\"p9.m4s\"
#EXTINF:1.000,
1.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:22.000Z
#EXT-X-PART:DURATION=0.200,URI=\"p10.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.200,URI=\"p11.m4s\"
#EXT-X-PART:DURATION=0.200,URI=\"p12.m4s\"
#EXT-X-PART:DURATION=0.200,URI=\"p13.m4s\"
#EXT-X-PART:DURATION=0.200,URI=\"p14.m4s\"
#EXTINF:1.000,
2.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:23.000Z
#EXT-X-PART:DURATION=0.200,URI=\"p15.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.200,URI=\"p16.m4s\"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p17.m4s\"
#EXT-X-RENDITION-REPORT:URI=\"../audio/index.m3u8\",LAST-MSN=3,LAST-PART=1
";
        assert_eq!(text, expected);
    }

    #[test]
    fn delta_update_skips_old_segments() {
        let s = filled(10, 1);
        // 10.2 s listed, skip boundary 6 s: segments ending before 4.2 s go (0..=3).
        let text = render_media(
            &s,
            &[],
            &[],
            MediaRender {
                skip: true,
                live: true,
            },
        );
        assert!(text.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=4\n"), "{text}");
        assert!(!text.contains("\n3.m4s\n"));
        assert!(text.contains("\n4.m4s\n"));
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:0\n"));
        let full = render_media(
            &s,
            &[],
            &[],
            MediaRender {
                skip: false,
                live: false,
            },
        );
        assert!(!full.contains("EXT-X-SKIP"));
        assert!(!full.contains("PRELOAD-HINT"));
        assert!(full.contains("\n0.m4s\n"));
    }

    #[test]
    fn dateranges_are_rendered_and_sanitised() {
        let s = filled(1, 0);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let d = DateRange {
            id: "poll-p1".into(),
            class: "com.estuary.poll".into(),
            start: t0,
            end: Some(t0 + Duration::from_secs(30)),
            attrs: vec![
                ("X-QUESTION".into(), "Tea or \"coffee\"?".into()),
                ("bad name".into(), "x".into()),
            ],
        };
        let text = render_media(&s, &[], &[d], MediaRender::default());
        assert!(text.contains("#EXT-X-DATERANGE:ID=\"poll-p1\",CLASS=\"com.estuary.poll\",START-DATE=\"2023-11-14T22:13:20.000Z\",END-DATE=\"2023-11-14T22:13:50.000Z\",X-QUESTION=\"Tea or coffee?\"\n"), "{text}");
        assert!(!text.contains("bad name"));
    }

    #[test]
    fn multivariant_text() {
        let v = [Variant {
            uri: "source/index.m3u8".into(),
            bandwidth: 2_500_000,
            average_bandwidth: 2_000_000,
            codecs: "avc1.64001f".into(),
            resolution: Some((1280, 720)),
            frame_rate: Some(30.0),
        }];
        let a = AudioRendition {
            uri: "audio/index.m3u8".into(),
            codecs: "mp4a.40.2".into(),
            channels: Some(2),
        };
        assert_eq!(
            render_multivariant(&v, Some(&a)),
            "#EXTM3U
#EXT-X-VERSION:9
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"main\",DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"2\",URI=\"audio/index.m3u8\"
#EXT-X-STREAM-INF:BANDWIDTH=2500000,AVERAGE-BANDWIDTH=2000000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720,FRAME-RATE=30.000,AUDIO=\"audio\"
source/index.m3u8
"
        );
    }
}
