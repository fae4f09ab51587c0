//! From cmafmux's output to parts. cmafmux cuts a chunk at the first sample, in decode
//! order, whose presentation time reaches the chunk's end; with B-frames that sample
//! comes after frames reordered from before it, so a chunk cut at 200 ms may hold
//! 8 frames (0.267 s at 30 fps: OBS's x264 defaults and x265 both do this). A passthrough
//! (whose encoder may use B-frames) is therefore cut into half-part chunks, and [`Parts`]
//! joins whole chunks into parts that never run over `PART-TARGET`. A part made of
//! several `moof`+`mdat` pairs is valid CMAF. (Smaller chunks still would follow the
//! reorder groups more closely, but cmafmux then no longer closes fragments at the first
//! keyframe past the fragment duration.)

use std::time::Duration;

use bytes::BytesMut;

use crate::{media::MediaChunk, packager::ChunkKind};

/// Slack when comparing durations (frame intervals are rounded to nanoseconds).
const SLACK: Duration = Duration::from_millis(1);

/// Joins a video rendition's chunks into parts of at most the part target.
pub(super) struct Parts {
    target: Duration,
    /// The part being built, with its bytes.
    open: Option<(MediaChunk, BytesMut)>,
    /// The shortest frame interval seen.
    frame: Option<Duration>,
    /// An init segment held back until the first part that uses it is complete: cmafmux
    /// hands the two over together, and a playlist must not list an init with no part.
    init: Option<MediaChunk>,
}

impl Parts {
    pub(super) fn new(target: Duration) -> Self {
        Parts {
            target,
            open: None,
            frame: None,
            init: None,
        }
    }

    /// Takes one chunk (and its shortest sample) and returns the parts it completes.
    pub(super) fn push(&mut self, c: MediaChunk, frame: Option<Duration>) -> Vec<MediaChunk> {
        if let Some(f) = frame {
            self.frame = Some(self.frame.map_or(f, |m| m.min(f)));
        }
        let mut done = Vec::new();
        match c.kind {
            ChunkKind::Init => {
                done.extend(self.flush());
                self.init = Some(c);
                return done;
            }
            ChunkKind::SegmentStart => done.extend(self.flush()),
            ChunkKind::PartStart => {
                if self
                    .open
                    .as_ref()
                    .is_some_and(|(p, _)| p.duration + c.duration > self.target + SLACK)
                {
                    done.extend(self.flush());
                }
            }
        }
        match &mut self.open {
            Some((p, data)) => {
                data.extend_from_slice(&c.data);
                p.duration += c.duration;
                p.first_input = p.first_input.or(c.first_input);
                p.last_input = c.last_input.or(p.last_input);
            }
            None => {
                let data = BytesMut::from(&c.data[..]);
                self.open = Some((c, data));
            }
        }
        // Full when one more frame would not fit.
        let frame = self.frame.unwrap_or(SLACK);
        if self
            .open
            .as_ref()
            .is_some_and(|(p, _)| p.duration + frame > self.target + SLACK)
        {
            done.extend(self.flush());
        }
        done
    }

    /// The part being built, as it is (at the end of the input), after the init segment
    /// it needs if that was held back.
    pub(super) fn flush(&mut self) -> Vec<MediaChunk> {
        let Some((mut p, data)) = self.open.take() else {
            return Vec::new();
        };
        p.data = data.freeze();
        self.init.take().into_iter().chain([p]).collect()
    }
}

/// Splits an appsink sample (a buffer list from cmafmux) into pieces: each `HEADER`
/// buffer starts one, and the data buffers after it belong to it. Each piece comes with
/// its shortest sample's duration (a frame interval, for video).
///
/// A piece lasts as long as its samples' durations add up to (its decode duration), not
/// the presentation span cmafmux stamps on its header: with B-frames a chunk holds frames
/// reordered from the span before it, and the span says nothing of how many it holds.
pub(super) fn chunks_of(sample: &gst::Sample) -> Vec<(MediaChunk, Option<Duration>)> {
    // (chunk, its bytes, the sum of its samples' durations, the shortest one)
    let mut out: Vec<(MediaChunk, BytesMut, Duration, Option<Duration>)> = Vec::new();
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
            let init = kind == ChunkKind::Init;
            out.push((
                MediaChunk {
                    kind,
                    data: bytes::Bytes::new(),
                    pts: buf
                        .pts()
                        .filter(|_| !init)
                        .map(|t| Duration::from_nanos(t.nseconds())),
                    duration: buf
                        .duration()
                        .filter(|_| !init)
                        .map(|t| Duration::from_nanos(t.nseconds()))
                        .unwrap_or_default(),
                    last_input: None,
                    first_input: None,
                },
                BytesMut::new(),
                Duration::ZERO,
                None,
            ));
        } else if let (Some((_, _, sum, min)), Some(d)) = (out.last_mut(), buf.duration()) {
            // Samples carry durations; the `mdat` header before them does not.
            let d = Duration::from_nanos(d.nseconds());
            *sum += d;
            *min = Some(min.map_or(d, |m| m.min(d)));
        }
        if let (Some((_, acc, _, _)), Ok(map)) = (out.last_mut(), buf.map_readable()) {
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
        .map(|(mut c, acc, samples, min)| {
            c.data = acc.freeze();
            if !samples.is_zero() && c.kind != ChunkKind::Init {
                c.duration = samples;
            }
            (c, min)
        })
        .collect()
}

/// An init segment starts with an `ftyp` box.
fn is_init(buf: &gst::BufferRef) -> bool {
    buf.map_readable()
        .map(|m| m.len() >= 8 && &m[4..8] == b"ftyp")
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: Duration = Duration::from_nanos(33_333_333);

    fn chunk(kind: ChunkKind, frames: u32, byte: u8) -> MediaChunk {
        MediaChunk {
            kind,
            data: bytes::Bytes::from(vec![byte; frames as usize]),
            pts: Some(Duration::ZERO),
            duration: FRAME * frames,
            last_input: None,
            first_input: None,
        }
    }

    fn run(groups: &[(ChunkKind, u32)]) -> Vec<(ChunkKind, u32)> {
        let mut p = Parts::new(Duration::from_millis(200));
        let mut out = Vec::new();
        for (i, (k, n)) in groups.iter().enumerate() {
            out.extend(p.push(chunk(*k, *n, i as u8), Some(FRAME)));
        }
        out.extend(p.flush());
        out.iter()
            .filter(|c| c.kind != ChunkKind::Init)
            .map(|c| {
                assert_eq!(
                    c.data.len() as u32,
                    (c.duration.as_nanos() / FRAME.as_nanos()) as u32
                );
                (c.kind, c.data.len() as u32)
            })
            .collect()
    }

    #[test]
    fn reorder_groups_make_parts_within_the_target() {
        use ChunkKind::{PartStart as P, SegmentStart as S};
        // x264 with 2 B-frames: the keyframe alone, then groups of three.
        assert_eq!(
            run(&[
                (S, 1),
                (P, 3),
                (P, 3),
                (P, 3),
                (P, 3),
                (P, 3),
                (S, 1),
                (P, 3)
            ]),
            vec![(S, 4), (P, 6), (P, 6), (S, 4)]
        );
        // x265: groups of four never pair up within 200 ms.
        assert_eq!(
            run(&[(S, 1), (P, 4), (P, 4), (P, 4)]),
            vec![(S, 5), (P, 4), (P, 4)]
        );
        // No B-frames: one frame a chunk, six to a part, published on the sixth.
        let mut p = Parts::new(Duration::from_millis(200));
        let mut got = Vec::new();
        for i in 0..6 {
            got = p.push(chunk(if i == 0 { S } else { P }, 1, 0), Some(FRAME));
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data.len(), 6);
    }

    #[test]
    fn an_init_closes_the_open_part_and_waits_for_its_own() {
        use ChunkKind::{Init, SegmentStart};
        let mut p = Parts::new(Duration::from_millis(200));
        assert!(p.push(chunk(SegmentStart, 2, 1), Some(FRAME)).is_empty());
        let out = p.push(chunk(Init, 0, 0), None);
        assert_eq!(
            out.iter().map(|c| c.kind).collect::<Vec<_>>(),
            [SegmentStart]
        );
        let out = p.push(chunk(SegmentStart, 6, 2), Some(FRAME));
        assert_eq!(
            out.iter().map(|c| c.kind).collect::<Vec<_>>(),
            [Init, SegmentStart]
        );
    }
}
