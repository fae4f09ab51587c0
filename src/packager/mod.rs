//! The segmenter: CMAF chunks in, numbered parts and segments out.
//!
//! Pure and deterministic: no I/O, no clocks. The caller stamps each chunk with its
//! program date time and hands the outputs to a store.
//!
//! cmafmux emits, per track, an init segment and then fragments cut into chunks. A
//! fragment start becomes a new media segment (MSN + 1) and every chunk is one LL-HLS
//! partial segment. A segment's bytes are exactly its parts' bytes, in order.

pub mod playlist;

use std::{collections::VecDeque, time::Duration, time::SystemTime};

use bytes::Bytes;

/// What kind of CMAF piece a chunk is, told apart by cmafmux's buffer flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkKind {
    /// `ftyp` + `moov` (buffer flags `DISCONT|HEADER`).
    Init,
    /// The first chunk of a fragment (`HEADER`): starts a new segment.
    SegmentStart,
    /// A further chunk of the current fragment (`HEADER|DELTA_UNIT`).
    PartStart,
}

/// One CMAF piece with its timing.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Which piece.
    pub kind: ChunkKind,
    /// Its bytes (for a part: `moof` + `mdat`, possibly with `styp`).
    pub data: Bytes,
    /// Media duration (zero for an init segment).
    pub duration: Duration,
    /// Whether the chunk starts with an independent (sync) sample.
    pub independent: bool,
    /// Wall-clock time of the chunk's first sample.
    pub pdt: SystemTime,
}

/// Packaging parameters, fixed for the life of a stream.
#[derive(Debug, Clone, Copy)]
pub struct PackagerConfig {
    /// `PART-TARGET`.
    pub part_target: Duration,
    /// `PART-HOLD-BACK`.
    pub part_hold_back: Duration,
    /// Nominal segment duration.
    pub segment_target: Duration,
    /// Longest segment: a longer one is cut at the next part. `EXT-X-TARGETDURATION` is
    /// its ceiling, fixed for the life of the stream.
    pub max_segment: Duration,
    /// Complete segments the playlist lists.
    pub window_segments: usize,
    /// Complete segments, at the end of the window, whose parts are listed too.
    pub part_segments: usize,
}

/// A published object: the store keys it by `uri` under the rendition.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A new init segment.
    Init {
        /// Relative URI (`init.mp4`, `init-1.mp4`, ...).
        uri: String,
        /// Its bytes.
        data: Bytes,
    },
    /// A complete part.
    Part {
        /// Relative URI (`p{seq}.m4s`).
        uri: String,
        /// Its bytes.
        data: Bytes,
    },
    /// A complete segment, as its parts in order.
    Segment {
        /// Relative URI (`{msn}.m4s`).
        uri: String,
        /// The part bytes, whose concatenation is the segment.
        parts: Vec<Bytes>,
    },
}

/// One listed part.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PartInfo {
    /// Its running number in the rendition, which names it (`p{seq}.m4s`).
    pub seq: u64,
    /// Its duration.
    pub duration: Duration,
    /// Starts with an independent frame.
    pub independent: bool,
}

/// A segment in the live window.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Media sequence number.
    pub msn: u64,
    /// Sum of its parts.
    pub duration: Duration,
    /// Program date time of its first sample.
    pub pdt: SystemTime,
    /// Its parts.
    pub parts: Vec<PartInfo>,
    /// Preceded by `EXT-X-DISCONTINUITY`.
    pub discontinuity: bool,
    /// Which init segment it needs.
    pub init_gen: u32,
    /// Size in bytes.
    pub bytes: u64,
}

/// Why a chunk was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackagerError {
    /// Media arrived before any init segment.
    #[error("media chunk before an init segment")]
    NoInit,
}

/// Per-rendition segmenter and live window.
#[derive(Debug)]
pub struct Segmenter {
    cfg: PackagerConfig,
    /// Complete segments, oldest first.
    segments: VecDeque<Segment>,
    /// The segment being built, with its part bytes.
    open: Option<(Segment, Vec<Bytes>)>,
    next_msn: u64,
    /// The running number of the next part. Parts are named by it, not by their place in
    /// a segment, so the preload hint always names a part that will exist: where a
    /// segment ends is only known once the next part starts it.
    next_part_seq: u64,
    init: Option<(u32, Bytes)>,
    next_init_gen: u32,
    discontinuity_pending: bool,
    /// Discontinuities that have left the window (`EXT-X-DISCONTINUITY-SEQUENCE`).
    discontinuity_sequence: u64,
    longest_part: Duration,
    /// Segments cut at `max_segment` because no keyframe came in time.
    cut_segments: u64,
}

impl Segmenter {
    /// A new, empty rendition.
    pub fn new(cfg: PackagerConfig) -> Self {
        Self {
            cfg,
            segments: VecDeque::new(),
            open: None,
            next_msn: 0,
            next_part_seq: 0,
            init: None,
            next_init_gen: 0,
            discontinuity_pending: false,
            discontinuity_sequence: 0,
            longest_part: Duration::ZERO,
            cut_segments: 0,
        }
    }

    /// The packaging parameters.
    pub fn config(&self) -> &PackagerConfig {
        &self.cfg
    }

    /// Takes one chunk and returns what became available.
    ///
    /// # Errors
    /// [`PackagerError::NoInit`] for media before any init segment; nothing changes.
    pub fn push(&mut self, chunk: Chunk) -> Result<Vec<Output>, PackagerError> {
        let mut out = Vec::with_capacity(2);
        match chunk.kind {
            ChunkKind::Init => {
                if self.init.as_ref().is_some_and(|(_, d)| *d == chunk.data) {
                    return Ok(out);
                }
                let gen = self.next_init_gen;
                self.next_init_gen += 1;
                self.init = Some((gen, chunk.data.clone()));
                out.push(Output::Init {
                    uri: init_uri(gen),
                    data: chunk.data,
                });
            }
            ChunkKind::SegmentStart | ChunkKind::PartStart => {
                let Some((init_gen, _)) = self.init else {
                    return Err(PackagerError::NoInit);
                };
                // A GOP longer than `max_segment` (or none at all) would grow the segment
                // past TARGETDURATION: cut it at this part, which then starts a segment
                // without an independent frame.
                let too_long = self.open.as_ref().is_some_and(|(s, _)| {
                    s.duration + chunk.duration > self.cfg.max_segment + MAX_SEGMENT_SLACK
                });
                if too_long && chunk.kind == ChunkKind::PartStart {
                    self.cut_segments += 1;
                }
                let starts_segment = chunk.kind == ChunkKind::SegmentStart
                    || too_long
                    || self.open.is_none()
                    || self
                        .open
                        .as_ref()
                        .is_some_and(|(s, _)| s.init_gen != init_gen);
                if starts_segment {
                    if let Some(o) = self.close_open() {
                        out.push(o);
                    }
                    let seg = Segment {
                        msn: self.next_msn,
                        duration: Duration::ZERO,
                        pdt: chunk.pdt,
                        parts: Vec::new(),
                        discontinuity: std::mem::take(&mut self.discontinuity_pending),
                        init_gen,
                        bytes: 0,
                    };
                    self.next_msn += 1;
                    self.open = Some((seg, Vec::new()));
                }
                let (seg, parts) = self.open.as_mut().expect("opened above");
                let idx = seg.parts.len();
                let seq = self.next_part_seq;
                self.next_part_seq += 1;
                seg.parts.push(PartInfo {
                    seq,
                    duration: chunk.duration,
                    // The first part of a segment always starts at a fragment boundary,
                    // which cmafmux places on a keyframe.
                    independent: chunk.independent
                        || (idx == 0 && chunk.kind == ChunkKind::SegmentStart),
                });
                seg.duration += chunk.duration;
                seg.bytes += chunk.data.len() as u64;
                self.longest_part = self.longest_part.max(chunk.duration);
                parts.push(chunk.data.clone());
                out.push(Output::Part {
                    uri: part_uri(seq),
                    data: chunk.data,
                });
            }
        }
        Ok(out)
    }

    /// Ends the current publish session: closes the open segment and marks the next one
    /// with a discontinuity. Numbering continues.
    pub fn end_session(&mut self) -> Option<Output> {
        let out = self.close_open();
        if !self.segments.is_empty() {
            self.discontinuity_pending = true;
        }
        out
    }

    fn close_open(&mut self) -> Option<Output> {
        let (seg, parts) = self.open.take()?;
        let uri = segment_uri(seg.msn);
        self.segments.push_back(seg);
        while self.segments.len() > self.cfg.window_segments {
            // "If the server removes an EXT-X-DISCONTINUITY tag from the Playlist, it MUST
            // increment the value of the EXT-X-DISCONTINUITY-SEQUENCE tag" (§6.2.2).
            if self
                .segments
                .pop_front()
                .is_some_and(|old| old.discontinuity)
            {
                self.discontinuity_sequence += 1;
            }
        }
        Some(Output::Segment { uri, parts })
    }

    /// Complete segments, oldest first.
    pub fn segments(&self) -> &VecDeque<Segment> {
        &self.segments
    }

    /// The segment under construction, if any.
    pub fn open_segment(&self) -> Option<&Segment> {
        self.open.as_ref().map(|(s, _)| s)
    }

    /// MSN of the first listed segment.
    pub fn media_sequence(&self) -> u64 {
        self.segments
            .front()
            .or(self.open_segment())
            .map_or(self.next_msn, |s| s.msn)
    }

    /// `EXT-X-DISCONTINUITY-SEQUENCE`.
    pub fn discontinuity_sequence(&self) -> u64 {
        self.discontinuity_sequence
    }

    /// The latest published part as (MSN, part index), if any.
    pub fn last_part(&self) -> Option<(u64, u64)> {
        if let Some(s) = self.open_segment().filter(|s| !s.parts.is_empty()) {
            return Some((s.msn, s.parts.len() as u64 - 1));
        }
        self.segments
            .back()
            .map(|s| (s.msn, s.parts.len().saturating_sub(1) as u64))
    }

    /// URI of the part a player should preload next (`EXT-X-PRELOAD-HINT`). It exists
    /// as soon as the next chunk arrives, whichever segment that chunk belongs to.
    pub fn next_part_uri(&self) -> String {
        part_uri(self.next_part_seq)
    }

    /// The current init segment's generation.
    pub fn init_gen(&self) -> Option<u32> {
        self.init.as_ref().map(|(g, _)| *g)
    }

    /// `EXT-X-TARGETDURATION`: "The EXTINF duration of each Media Segment in a Playlist
    /// file, when rounded to the nearest integer, MUST be less than or equal to the Target
    /// Duration" (§4.4.3.1). Computed from the configured `max_segment` alone, so it never
    /// changes during a stream's life, whatever arrives: segments are cut at that bound.
    pub fn target_duration(&self) -> u64 {
        let t = self.cfg.max_segment + MAX_SEGMENT_SLACK;
        ((t.as_millis() as u64 + 500) / 1000).max(1)
    }

    /// Segments cut at `max_segment` because no keyframe came in time.
    pub fn cut_segments(&self) -> u64 {
        self.cut_segments
    }

    /// `PART-TARGET`: the configured part target, fixed for the life of the stream (the
    /// media side sizes chunks to stay within it).
    pub fn part_target(&self) -> Duration {
        self.cfg.part_target
    }

    /// Peak and average bit rates over the window, in bits per second.
    pub fn bitrates(&self) -> Option<(u64, u64)> {
        let (mut peak, mut bytes, mut dur) = (0u64, 0u64, Duration::ZERO);
        for s in &self.segments {
            if s.duration.is_zero() {
                continue;
            }
            let bps = (s.bytes as f64 * 8.0 / s.duration.as_secs_f64()) as u64;
            peak = peak.max(bps);
            bytes += s.bytes;
            dur += s.duration;
        }
        (!dur.is_zero()).then(|| (peak, (bytes as f64 * 8.0 / dur.as_secs_f64()) as u64))
    }

    /// The longest part seen.
    pub fn longest_part(&self) -> Duration {
        self.longest_part
    }
}

/// How far past `max_segment` a segment may run before it is cut: a keyframe a little
/// late (frame-rate jitter) still starts the next segment. Rounding keeps the EXTINF within
/// TARGETDURATION.
const MAX_SEGMENT_SLACK: Duration = Duration::from_millis(100);

/// URI of init generation `gen`: the first is `init.mp4`, later ones (after a publisher
/// reconnect changed the codec setup) `init-{gen}.mp4`.
pub fn init_uri(gen: u32) -> String {
    if gen == 0 {
        "init.mp4".into()
    } else {
        format!("init-{gen}.mp4")
    }
}

/// URI of a segment.
pub fn segment_uri(msn: u64) -> String {
    format!("{msn}.m4s")
}

/// URI of a part: its running number in the rendition.
pub fn part_uri(seq: u64) -> String {
    format!("p{seq}.m4s")
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn cfg() -> PackagerConfig {
        PackagerConfig {
            part_target: Duration::from_millis(200),
            part_hold_back: Duration::from_millis(600),
            segment_target: Duration::from_secs(1),
            max_segment: Duration::from_secs(2),
            window_segments: 4,
            part_segments: 2,
        }
    }

    fn chunk(kind: ChunkKind, data: &'static [u8], ms: u64) -> Chunk {
        Chunk {
            kind,
            data: Bytes::from_static(data),
            duration: Duration::from_millis(ms),
            independent: false,
            pdt: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn media_before_init_is_refused() {
        let mut s = Segmenter::new(cfg());
        assert_eq!(
            s.push(chunk(ChunkKind::SegmentStart, b"x", 200)),
            Err(PackagerError::NoInit)
        );
    }

    #[test]
    fn parts_and_segments_are_numbered_and_concatenated() {
        let mut s = Segmenter::new(cfg());
        let out = s.push(chunk(ChunkKind::Init, b"INIT", 0)).unwrap();
        assert_eq!(
            out,
            vec![Output::Init {
                uri: "init.mp4".into(),
                data: Bytes::from_static(b"INIT")
            }]
        );
        let o = s.push(chunk(ChunkKind::SegmentStart, b"a0", 200)).unwrap();
        assert!(matches!(&o[..], [Output::Part { uri, .. }] if uri == "p0.m4s"));
        s.push(chunk(ChunkKind::PartStart, b"a1", 200)).unwrap();
        s.push(chunk(ChunkKind::PartStart, b"a2", 200)).unwrap();
        assert_eq!(s.last_part(), Some((0, 2)));
        assert_eq!(s.next_part_uri(), "p3.m4s");
        let o = s.push(chunk(ChunkKind::SegmentStart, b"b0", 200)).unwrap();
        match &o[..] {
            [Output::Segment { uri, parts }, Output::Part { uri: p, .. }] => {
                assert_eq!(uri, "0.m4s");
                // The hint named p3 while segment 0 was open; p3 is the part that came.
                assert_eq!(p, "p3.m4s");
                assert_eq!(parts.concat(), b"a0a1a2");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(s.segments()[0].duration, Duration::from_millis(600));
        assert!(s.segments()[0].parts[0].independent);
        assert!(!s.segments()[0].parts[1].independent);
        assert_eq!(s.next_part_uri(), "p4.m4s");
    }

    #[test]
    fn window_slides_and_discontinuity_sequence_counts() {
        let mut s = Segmenter::new(cfg());
        s.push(chunk(ChunkKind::Init, b"I", 0)).unwrap();
        for _ in 0..3 {
            s.push(chunk(ChunkKind::SegmentStart, b"x", 1000)).unwrap();
        }
        s.end_session();
        // Same init again after the reconnect: no new generation, but a discontinuity.
        assert!(s.push(chunk(ChunkKind::Init, b"I", 0)).unwrap().is_empty());
        s.push(chunk(ChunkKind::SegmentStart, b"y", 1000)).unwrap();
        let disc: Vec<_> = s
            .segments()
            .iter()
            .map(|x| x.discontinuity)
            .chain(s.open_segment().map(|x| x.discontinuity))
            .collect();
        assert_eq!(disc, vec![false, false, false, true]);
        for _ in 0..6 {
            s.push(chunk(ChunkKind::SegmentStart, b"z", 1000)).unwrap();
        }
        assert_eq!(s.segments().len(), 4);
        assert_eq!(s.media_sequence(), 5);
        assert_eq!(s.discontinuity_sequence(), 1);
    }

    #[test]
    fn new_init_starts_a_new_segment_and_generation() {
        let mut s = Segmenter::new(cfg());
        s.push(chunk(ChunkKind::Init, b"I0", 0)).unwrap();
        s.push(chunk(ChunkKind::SegmentStart, b"x", 500)).unwrap();
        let o = s.push(chunk(ChunkKind::Init, b"I1", 0)).unwrap();
        assert!(matches!(&o[..], [Output::Init { uri, .. }] if uri == "init-1.mp4"));
        // A part right after a new init cannot continue the old segment.
        let o = s.push(chunk(ChunkKind::PartStart, b"y", 500)).unwrap();
        assert!(
            matches!(&o[..], [Output::Segment { .. }, Output::Part { uri, .. }] if uri == "p1.m4s")
        );
        assert_eq!(s.open_segment().unwrap().init_gen, 1);
    }

    #[test]
    fn target_duration_is_fixed_and_long_gops_are_cut() {
        let mut s = Segmenter::new(cfg());
        assert_eq!(s.target_duration(), 2);
        s.push(chunk(ChunkKind::Init, b"I", 0)).unwrap();
        s.push(chunk(ChunkKind::SegmentStart, b"0123456789", 1500))
            .unwrap();
        s.push(chunk(ChunkKind::SegmentStart, b"01234", 1000))
            .unwrap();
        s.push(chunk(ChunkKind::SegmentStart, b"", 1000)).unwrap();
        assert_eq!(s.target_duration(), 2);
        let (peak, avg) = s.bitrates().unwrap();
        assert_eq!(peak, 53);
        assert_eq!(avg, 48);
        // A 10 s GOP of 200 ms parts: cut every 2 s, the cut segments not independent.
        let mut s = Segmenter::new(cfg());
        s.push(chunk(ChunkKind::Init, b"I", 0)).unwrap();
        s.push(chunk(ChunkKind::SegmentStart, b"k", 200)).unwrap();
        for _ in 0..49 {
            s.push(chunk(ChunkKind::PartStart, b"p", 200)).unwrap();
        }
        let durs: Vec<_> = s.segments().iter().map(|x| x.duration).collect();
        assert!(
            durs.iter().all(|d| *d == Duration::from_secs(2)),
            "{durs:?}"
        );
        assert_eq!(s.cut_segments(), 4);
        assert!(s.segments()[0].parts[0].independent);
        assert!(!s.segments()[1].parts[0].independent);
        assert_eq!(s.target_duration(), 2);
        let text = playlist::render_media(&s, &[], &[], playlist::MediaRender::default());
        assert!(text.contains("#EXT-X-TARGETDURATION:2\n"));
    }
}
