//! The edge's own view of a followed rendition: its segments under the edge's media
//! sequence numbers and local object names, and the playlists rendered from it.
//!
//! Rendering is a pure function of this state, like the packager's. The edge keeps the
//! origin's URIs (as local names), PDT, DISCONTINUITY, DATERANGE and PART-INF/
//! TARGETDURATION, and writes its own MEDIA-SEQUENCE, DISCONTINUITY-SEQUENCE, SKIP and
//! SERVER-CONTROL, because it serves blocking reload and delta updates itself.

use std::{collections::VecDeque, fmt::Write};

use bytes::Bytes;

use super::playlist::Attrs;
use crate::store::RenditionView;

/// The protocol version the edge declares (9 for `EXT-X-SKIP`).
const VERSION: u32 = 9;

/// A part as the edge lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgePart {
    /// Local object name.
    pub name: String,
    /// Its attributes, `URI` already local.
    pub attrs: Attrs,
    /// Duration in seconds.
    pub duration: f64,
}

/// A segment as the edge lists it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EdgeSegment {
    /// The edge's media sequence number.
    pub msn: u64,
    /// Local object name; `None` while the segment is open.
    pub name: Option<String>,
    /// `EXTINF` duration as written (empty while open).
    pub duration: String,
    /// Duration in seconds (sum of parts while open).
    pub secs: f64,
    /// `EXTINF` title.
    pub title: String,
    /// Local name of its init segment.
    pub map: Option<String>,
    /// Preceded by `EXT-X-DISCONTINUITY`.
    pub discontinuity: bool,
    /// `EXT-X-PROGRAM-DATE-TIME`, as the origin wrote it.
    pub pdt: Option<String>,
    /// Its parts (all that were seen).
    pub parts: Vec<EdgePart>,
    /// Whether the parts are listed (only near the live edge, as upstream does).
    pub list_parts: bool,
    /// Other tags carried through.
    pub tags: Vec<String>,
}

impl EdgeSegment {
    /// Where the segment ends on the wall clock, when it has a PDT.
    pub fn pdt_end(&self) -> Option<std::time::SystemTime> {
        let start = humantime::parse_rfc3339_weak(self.pdt.as_deref()?).ok()?;
        Some(start + std::time::Duration::from_secs_f64(self.secs.max(0.0)))
    }
}

/// Playlist-wide values taken from the latest upstream playlist.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Header {
    /// `EXT-X-TARGETDURATION`.
    pub target_duration: u64,
    /// `PART-TARGET`, as written.
    pub part_target: Option<String>,
    /// Upstream `PART-HOLD-BACK`, as written.
    pub part_hold_back: Option<String>,
    /// Upstream `HOLD-BACK`, as written.
    pub hold_back: Option<String>,
    /// Carried tags (`EXT-X-INDEPENDENT-SEGMENTS`, `EXT-X-START`).
    pub tags: Vec<String>,
    /// `EXT-X-DATERANGE` lines.
    pub dateranges: Vec<String>,
    /// Local name of the preload hint.
    pub hint: Option<String>,
    /// Rendition reports: (URI, LAST-MSN, LAST-PART) in the edge's numbering.
    pub reports: Vec<(String, u64, Option<u64>)>,
    /// `EXT-X-ENDLIST` upstream.
    pub ended: bool,
}

/// The edge's window of one rendition.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// Complete segments, oldest first.
    pub segments: VecDeque<EdgeSegment>,
    /// The segment being built.
    pub open: Option<EdgeSegment>,
    /// `EXT-X-DISCONTINUITY-SEQUENCE` of the first listed segment.
    pub dseq: u64,
    /// Playlist-wide values.
    pub header: Header,
}

impl Window {
    /// The MSN the next new segment takes.
    pub fn next_msn(&self) -> Option<u64> {
        self.open
            .as_ref()
            .map(|o| o.msn)
            .or_else(|| self.segments.back().map(|s| s.msn + 1))
    }

    /// Completes the open segment (for a failover): it keeps the parts it has and
    /// becomes a segment named `name`. An open segment without parts is dropped.
    pub fn close_open(&mut self, name: impl FnOnce(u64) -> String) -> Option<EdgeSegment> {
        let mut o = self.open.take()?;
        if o.parts.is_empty() {
            return None;
        }
        o.name = Some(name(o.msn));
        o.duration = format!("{:.3}", o.secs);
        self.segments.push_back(o.clone());
        Some(o)
    }

    /// Drops segments beyond `max` and returns the local names no longer listed.
    pub fn trim(&mut self, max: usize) -> Vec<String> {
        let mut gone = Vec::new();
        while self.segments.len() > max.max(1) {
            let Some(s) = self.segments.pop_front() else {
                break;
            };
            // "If the server removes an EXT-X-DISCONTINUITY tag from the Playlist, it MUST
            // increment the value of the EXT-X-DISCONTINUITY-SEQUENCE tag" (§6.2.2).
            if s.discontinuity {
                self.dseq += 1;
            }
            gone.extend(s.name);
            gone.extend(s.parts.into_iter().map(|p| p.name));
        }
        gone
    }

    /// Lists parts for the last `n` complete segments only.
    pub fn list_parts_of_last(&mut self, n: usize) {
        let len = self.segments.len();
        for (i, s) in self.segments.iter_mut().enumerate() {
            s.list_parts = i + n >= len;
        }
    }

    /// The latest part as (MSN, index), or the latest segment's MSN with its part count
    /// minus one (0 without parts).
    pub fn last(&self) -> Option<(u64, u64)> {
        if let Some(o) = self.open.as_ref().filter(|o| !o.parts.is_empty()) {
            return Some((o.msn, o.parts.len() as u64 - 1));
        }
        self.segments
            .back()
            .map(|s| (s.msn, (s.parts.len() as u64).saturating_sub(1)))
    }

    /// Renders the full playlist, or the delta update when `skip`.
    pub fn render(&self, skip: bool) -> String {
        let h = &self.header;
        let td = h.target_duration.max(1);
        let mut out = String::with_capacity(4096);
        let _ = writeln!(out, "#EXTM3U\n#EXT-X-VERSION:{VERSION}");
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{td}");
        if let Some(pt) = &h.part_target {
            let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={pt}");
        }
        // The edge answers blocking reloads and delta updates itself, whatever the origin.
        let _ = write!(
            out,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={}.0",
            td * 6
        );
        if let Some(v) = &h.part_hold_back {
            let _ = write!(out, ",PART-HOLD-BACK={v}");
        }
        if let Some(v) = &h.hold_back {
            let _ = write!(out, ",HOLD-BACK={v}");
        }
        out.push('\n');
        for t in &h.tags {
            let _ = writeln!(out, "{t}");
        }
        let first = self
            .segments
            .front()
            .or(self.open.as_ref())
            .map_or(0, |s| s.msn);
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{first}");
        let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{}", self.dseq);
        let total: f64 = self
            .segments
            .iter()
            .chain(self.open.as_ref())
            .map(|s| s.secs)
            .sum();
        let skip_until = (td * 6) as f64;
        let mut skipped = 0;
        if skip && total > skip_until {
            let boundary = total - skip_until;
            let mut end = 0.0;
            for s in &self.segments {
                end += s.secs;
                if end > boundary {
                    break;
                }
                skipped += 1;
            }
        }
        if skipped > 0 {
            let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
        }
        for d in &h.dateranges {
            let _ = writeln!(out, "{d}");
        }
        let mut map: Option<&str> = None;
        for s in self.segments.iter().skip(skipped).chain(self.open.as_ref()) {
            if s.map.is_some() && s.map.as_deref() != map {
                let _ = writeln!(
                    out,
                    "#EXT-X-MAP:URI=\"{}\"",
                    s.map.as_deref().unwrap_or_default()
                );
                map = s.map.as_deref();
            }
            if s.discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if let Some(p) = &s.pdt {
                let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{p}");
            }
            for t in &s.tags {
                let _ = writeln!(out, "{t}");
            }
            if s.list_parts || s.name.is_none() {
                for p in &s.parts {
                    let _ = writeln!(out, "#EXT-X-PART:{}", p.attrs.render());
                }
            }
            if let Some(name) = &s.name {
                let _ = writeln!(out, "#EXTINF:{},{}\n{name}", s.duration, s.title);
            }
        }
        if let (Some(hint), false) = (&h.hint, h.ended) {
            let _ = writeln!(out, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{hint}\"");
        }
        for (uri, msn, part) in &h.reports {
            let _ = write!(out, "#EXT-X-RENDITION-REPORT:URI=\"{uri}\",LAST-MSN={msn}");
            if let Some(p) = part {
                let _ = write!(out, ",LAST-PART={p}");
            }
            out.push('\n');
        }
        if h.ended {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        out
    }

    /// The store view of this window (what the HTTP side serves and waits on).
    pub fn view(&self, inits: &[(String, Bytes)]) -> RenditionView {
        let last = self.last();
        let last_pdt = self
            .open
            .as_ref()
            .or(self.segments.back())
            .and_then(EdgeSegment::pdt_end);
        RenditionView {
            playlist: Bytes::from(self.render(false)),
            delta: Bytes::from(self.render(true)),
            last,
            media_sequence: self
                .segments
                .front()
                .or(self.open.as_ref())
                .map_or(0, |s| s.msn),
            segments: self
                .segments
                .iter()
                .map(|s| (s.msn, s.parts.len() as u64))
                .collect(),
            open: self
                .open
                .as_ref()
                .filter(|o| !o.parts.is_empty())
                .map(|o| (o.msn, o.parts.len() as u64)),
            target_duration: self.header.target_duration.max(1),
            live: !self.header.ended,
            inits: inits.to_vec(),
            last_pdt,
            hint: self.header.hint.clone().filter(|_| !self.header.ended),
            part_published: None,
            previous: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(name: &str, independent: bool) -> EdgePart {
        let mut attrs = Attrs::parse("DURATION=0.200").unwrap();
        attrs.set_quoted("URI", name);
        if independent {
            attrs.0.push(("INDEPENDENT".into(), "YES".into()));
        }
        EdgePart {
            name: name.into(),
            attrs,
            duration: 0.2,
        }
    }

    fn seg(msn: u64, parts: usize) -> EdgeSegment {
        EdgeSegment {
            msn,
            name: Some(format!("{msn}.m4s")),
            duration: "1.000".into(),
            secs: 1.0,
            map: Some("init.mp4".into()),
            pdt: Some(format!("2023-11-14T22:13:{:02}.000Z", 20 + msn)),
            parts: (0..parts)
                .map(|p| part(&format!("{msn}.{p}.m4s"), p == 0))
                .collect(),
            ..Default::default()
        }
    }

    fn window(n: u64) -> Window {
        let mut w = Window {
            header: Header {
                target_duration: 1,
                part_target: Some("0.200".into()),
                part_hold_back: Some("0.600".into()),
                hint: Some("9.2.m4s".into()),
                reports: vec![("../audio/index.m3u8".into(), 9, Some(1))],
                dateranges: vec![
                    "#EXT-X-DATERANGE:ID=\"a\",START-DATE=\"2023-11-14T22:13:20.000Z\"".into(),
                ],
                ..Default::default()
            },
            ..Default::default()
        };
        for m in 0..n {
            w.segments.push_back(seg(m, 5));
        }
        w.open = Some(EdgeSegment {
            name: None,
            secs: 0.4,
            ..seg(n, 2)
        });
        w.list_parts_of_last(1);
        w
    }

    #[test]
    fn renders_like_an_origin() {
        let w = window(2);
        let text = w.render(false);
        let expected = "#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:1
#EXT-X-PART-INF:PART-TARGET=0.200
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=6.0,PART-HOLD-BACK=0.600
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-DISCONTINUITY-SEQUENCE:0
#EXT-X-DATERANGE:ID=\"a\",START-DATE=\"2023-11-14T22:13:20.000Z\"
#EXT-X-MAP:URI=\"init.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z
#EXTINF:1.000,
0.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:21.000Z
#EXT-X-PART:DURATION=0.200,URI=\"1.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.200,URI=\"1.1.m4s\"
#EXT-X-PART:DURATION=0.200,URI=\"1.2.m4s\"
#EXT-X-PART:DURATION=0.200,URI=\"1.3.m4s\"
#EXT-X-PART:DURATION=0.200,URI=\"1.4.m4s\"
#EXTINF:1.000,
1.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:22.000Z
#EXT-X-PART:DURATION=0.200,URI=\"2.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.200,URI=\"2.1.m4s\"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"9.2.m4s\"
#EXT-X-RENDITION-REPORT:URI=\"../audio/index.m3u8\",LAST-MSN=9,LAST-PART=1
";
        assert_eq!(text, expected);
        let v = w.view(&[]);
        assert_eq!(v.last, Some((2, 1)));
        assert_eq!(v.segments, vec![(0, 5), (1, 5)]);
        assert_eq!(v.open, Some((2, 2)));
        assert!(v.live && v.has(2, Some(1)) && !v.has(2, Some(2)));
        assert_eq!(v.hint.as_deref(), Some("9.2.m4s"));
    }

    #[test]
    fn delta_skips_and_trim_counts_discontinuities() {
        let mut w = window(10);
        let d = w.render(true);
        // 10.4 s listed, 6 s kept: segments ending at or before 4.4 s are skipped (0..=3).
        assert!(d.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=4\n"), "{d}");
        assert!(!d.contains("\n3.m4s\n") && d.contains("\n4.m4s\n"));
        assert!(d.contains("#EXT-X-MAP:URI=\"init.mp4\"\n"));
        w.segments[1].discontinuity = true;
        w.segments[2].discontinuity = true;
        let gone = w.trim(8);
        // Segment 1's tag left the playlist; segment 2's is still listed.
        assert_eq!(w.dseq, 1);
        assert!(w.render(false).contains("#EXT-X-DISCONTINUITY\n"));
        assert!(gone.contains(&"0.m4s".to_owned()) && gone.contains(&"1.4.m4s".to_owned()));
        assert!(w.render(false).contains("#EXT-X-MEDIA-SEQUENCE:2\n"));
        let closed = w.close_open(|m| format!("c{m}.m4s")).unwrap();
        assert_eq!(closed.name.as_deref(), Some("c10.m4s"));
        assert_eq!(w.next_msn(), Some(11));
        w.header.ended = true;
        let t = w.render(false);
        assert!(t.ends_with("#EXT-X-ENDLIST\n") && !t.contains("PRELOAD-HINT"));
    }
}
