//! Parsing of upstream playlists (RFC 8216bis), written for the edge: it keeps what the
//! edge re-renders (URIs, PDT, DISCONTINUITY, DATERANGE, parts, hints, reports) and
//! treats every URI as opaque.
//!
//! `m3u8-rs` was considered; it keeps LL-HLS tags (`EXT-X-PART`, `EXT-X-PRELOAD-HINT`,
//! `EXT-X-RENDITION-REPORT`, `EXT-X-SKIP`) only as unknown tags detached from their
//! order, which is what the edge needs most, so this small parser is our own.

use std::fmt::Write;

/// Why a playlist was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    /// 1-based line number (0: the whole text).
    pub line: usize,
    /// What is wrong.
    pub reason: &'static str,
}

fn err(line: usize, reason: &'static str) -> ParseError {
    ParseError { line, reason }
}

/// An attribute list (§4.2), values kept as written (quoted strings keep their quotes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attrs(pub Vec<(String, String)>);

impl Attrs {
    /// Parses `KEY=VALUE,KEY="quoted, value"`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut out = Vec::new();
        let mut rest = s.trim();
        while !rest.is_empty() {
            let eq = rest.find('=')?;
            let key = rest[..eq].trim();
            if key.is_empty()
                || !key
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
            {
                return None;
            }
            rest = &rest[eq + 1..];
            let value;
            if let Some(r) = rest.strip_prefix('"') {
                let end = r.find('"')?;
                value = &rest[..end + 2];
                rest = &r[end + 1..];
            } else {
                let end = rest.find(',').unwrap_or(rest.len());
                value = rest[..end].trim();
                rest = &rest[end..];
            }
            out.push((key.to_owned(), value.to_owned()));
            rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
            if out.len() > 64 {
                return None;
            }
        }
        Some(Self(out))
    }

    /// A value with its quotes removed.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.trim_matches('"'))
    }

    /// Replaces (or adds) a quoted-string value.
    pub fn set_quoted(&mut self, key: &str, value: &str) {
        let v = format!("\"{}\"", value.replace(['"', '\r', '\n'], ""));
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = v,
            None => self.0.push((key.to_owned(), v)),
        }
    }

    /// Renders the list back.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(s, "{k}={v}");
        }
        s
    }
}

/// `#EXT-X-PART`: "identifies a Partial Segment" (§4.4.4.9).
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// `URI`, as written.
    pub uri: String,
    /// `DURATION` in seconds.
    pub duration: f64,
    /// Every attribute, for re-rendering with another URI.
    pub attrs: Attrs,
}

/// A media segment, complete (`uri` set) or the one being built (only parts).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Segment {
    /// Media sequence number.
    pub msn: u64,
    /// The segment URI; `None` for the trailing segment that has only parts so far.
    pub uri: Option<String>,
    /// `EXTINF` duration as written and in seconds.
    pub duration: (String, f64),
    /// `EXTINF` title.
    pub title: String,
    /// The `EXT-X-MAP` URI in effect.
    pub map: Option<String>,
    /// Preceded by `EXT-X-DISCONTINUITY`.
    pub discontinuity: bool,
    /// `EXT-X-PROGRAM-DATE-TIME`, as written.
    pub pdt: Option<String>,
    /// Listed parts.
    pub parts: Vec<Part>,
    /// Other segment tags carried through (`EXT-X-GAP`, `EXT-X-BITRATE`).
    pub tags: Vec<String>,
}

/// `#EXT-X-RENDITION-REPORT` (§4.4.5.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// `URI`, as written (relative to the playlist).
    pub uri: String,
    /// `LAST-MSN`.
    pub last_msn: Option<u64>,
    /// `LAST-PART`.
    pub last_part: Option<u64>,
}

/// A media playlist.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MediaPlaylist {
    /// `EXT-X-VERSION`.
    pub version: u32,
    /// `EXT-X-TARGETDURATION`.
    pub target_duration: u64,
    /// `EXT-X-PART-INF:PART-TARGET`, as written.
    pub part_target: Option<String>,
    /// `EXT-X-SERVER-CONTROL` attributes.
    pub server_control: Attrs,
    /// `EXT-X-MEDIA-SEQUENCE`.
    pub media_sequence: u64,
    /// `EXT-X-DISCONTINUITY-SEQUENCE`.
    pub discontinuity_sequence: u64,
    /// `EXT-X-SKIP:SKIPPED-SEGMENTS`.
    pub skipped: u64,
    /// Playlist tags carried through (`EXT-X-INDEPENDENT-SEGMENTS`, `EXT-X-START`).
    pub header_tags: Vec<String>,
    /// `EXT-X-DATERANGE` lines, as written.
    pub dateranges: Vec<String>,
    /// Segments in order; the last may be open (parts only).
    pub segments: Vec<Segment>,
    /// `EXT-X-PRELOAD-HINT:TYPE=PART` URI.
    pub hint: Option<String>,
    /// Rendition reports.
    pub reports: Vec<Report>,
    /// `EXT-X-ENDLIST`.
    pub endlist: bool,
}

impl MediaPlaylist {
    /// Complete segments.
    pub fn complete(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter().filter(|s| s.uri.is_some())
    }

    /// Whether the playlist uses parts.
    pub fn has_parts(&self) -> bool {
        self.part_target.is_some() || self.segments.iter().any(|s| !s.parts.is_empty())
    }

    /// The part after the newest listed one, as `(msn, part)` for `_HLS_msn`/`_HLS_part`;
    /// for a playlist without parts, the next segment with no part.
    pub fn next(&self) -> (u64, Option<u64>) {
        let Some(last) = self.segments.last() else {
            return (self.media_sequence + self.skipped, None);
        };
        if !self.has_parts() {
            return (last.msn + 1, None);
        }
        match last.uri {
            None => (last.msn, Some(last.parts.len() as u64)),
            Some(_) => (last.msn + 1, Some(0)),
        }
    }
}

fn duration(v: &str) -> Option<f64> {
    v.trim()
        .parse::<f64>()
        .ok()
        .filter(|d| d.is_finite() && *d >= 0.0 && *d < 86_400.0)
}

/// Largest sequence number or count accepted: far beyond any real stream, and small
/// enough that the edge's arithmetic on it cannot overflow.
pub const MAX_NUMBER: u64 = 1 << 53;

fn int(v: &str) -> Option<u64> {
    let v = v.trim();
    (!v.is_empty() && v.len() <= 19 && v.bytes().all(|b| b.is_ascii_digit()))
        .then(|| v.parse().ok())
        .flatten()
        .filter(|n| *n <= MAX_NUMBER)
}

/// Parses a media playlist.
///
/// # Errors
/// [`ParseError`] for text that is not a media playlist, lacks a required value, or uses
/// what the edge cannot carry (byte ranges, encryption).
pub fn parse_media(text: &str) -> Result<MediaPlaylist, ParseError> {
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, l)) if l.trim_end() == "#EXTM3U" => {}
        _ => return Err(err(1, "does not start with #EXTM3U")),
    }
    let mut p = MediaPlaylist::default();
    let mut target = None;
    let mut cur = Segment::default();
    let mut map: Option<String> = None;
    let mut extinf = false;
    let mut msn_base_fixed = false;
    let mut next_msn = 0;
    for (i, raw) in lines {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if !line.starts_with('#') {
            if !extinf {
                return Err(err(n, "URI without EXTINF"));
            }
            if !msn_base_fixed {
                next_msn = p.media_sequence + p.skipped;
                msn_base_fixed = true;
            }
            cur.msn = next_msn;
            next_msn += 1;
            cur.uri = Some(line.to_owned());
            cur.map.clone_from(&map);
            p.segments.push(std::mem::take(&mut cur));
            extinf = false;
            continue;
        }
        let Some(tag) = line.strip_prefix("#EXT") else {
            continue; // a comment
        };
        let (name, value) = tag.split_once(':').unwrap_or((tag, ""));
        let attrs = || Attrs::parse(value).ok_or_else(|| err(n, "bad attribute list"));
        match name {
            "M3U" => {}
            "-X-VERSION" => p.version = int(value).ok_or_else(|| err(n, "bad version"))? as u32,
            "-X-TARGETDURATION" => {
                target = Some(
                    int(value)
                        .filter(|t| *t <= 86_400)
                        .ok_or_else(|| err(n, "bad target duration"))?,
                )
            }
            "-X-PART-INF" => p.part_target = attrs()?.get("PART-TARGET").map(str::to_owned),
            "-X-SERVER-CONTROL" => p.server_control = attrs()?,
            "-X-MEDIA-SEQUENCE" => {
                p.media_sequence = int(value).ok_or_else(|| err(n, "bad media sequence"))?
            }
            "-X-DISCONTINUITY-SEQUENCE" => {
                p.discontinuity_sequence =
                    int(value).ok_or_else(|| err(n, "bad discontinuity sequence"))?
            }
            "-X-SKIP" => {
                p.skipped = attrs()?
                    .get("SKIPPED-SEGMENTS")
                    .and_then(int)
                    .ok_or_else(|| err(n, "bad EXT-X-SKIP"))?
            }
            "-X-INDEPENDENT-SEGMENTS" | "-X-START" => p.header_tags.push(line.to_owned()),
            "-X-PLAYLIST-TYPE" | "-X-ALLOW-CACHE" | "-X-CONTENT-STEERING" => {}
            "-X-ENDLIST" => p.endlist = true,
            "-X-MAP" => {
                let a = attrs()?;
                if a.get("BYTERANGE").is_some() {
                    return Err(err(n, "byte-range EXT-X-MAP is not supported"));
                }
                map = Some(
                    a.get("URI")
                        .ok_or_else(|| err(n, "EXT-X-MAP without URI"))?
                        .into(),
                );
            }
            "-X-DISCONTINUITY" => cur.discontinuity = true,
            "-X-PROGRAM-DATE-TIME" => cur.pdt = Some(value.trim().to_owned()),
            "-X-DATERANGE" => {
                attrs()?;
                p.dateranges.push(line.to_owned());
            }
            "-X-GAP" | "-X-BITRATE" => cur.tags.push(line.to_owned()),
            "-X-KEY" if attrs()?.get("METHOD") != Some("NONE") => {
                return Err(err(n, "encrypted media is not supported"));
            }
            "-X-BYTERANGE" => return Err(err(n, "byte-range segments are not supported")),
            "-X-PART" => {
                let a = attrs()?;
                if a.get("BYTERANGE").is_some() {
                    return Err(err(n, "byte-range parts are not supported"));
                }
                let uri = a
                    .get("URI")
                    .ok_or_else(|| err(n, "EXT-X-PART without URI"))?;
                let d = a
                    .get("DURATION")
                    .and_then(duration)
                    .ok_or_else(|| err(n, "EXT-X-PART without DURATION"))?;
                cur.parts.push(Part {
                    uri: uri.to_owned(),
                    duration: d,
                    attrs: a,
                });
                if cur.parts.len() > 1000 {
                    return Err(err(n, "too many parts in one segment"));
                }
            }
            "INF" => {
                let (d, title) = value.split_once(',').unwrap_or((value, ""));
                let secs = duration(d).ok_or_else(|| err(n, "bad EXTINF duration"))?;
                cur.duration = (d.trim().to_owned(), secs);
                cur.title = title.trim().to_owned();
                extinf = true;
            }
            "-X-PRELOAD-HINT" => {
                let a = attrs()?;
                if a.get("TYPE") == Some("PART") && a.get("BYTERANGE-START").is_none() {
                    p.hint = a.get("URI").map(str::to_owned);
                }
            }
            "-X-RENDITION-REPORT" => {
                let a = attrs()?;
                if let Some(uri) = a.get("URI") {
                    p.reports.push(Report {
                        uri: uri.to_owned(),
                        last_msn: a.get("LAST-MSN").and_then(int),
                        last_part: a.get("LAST-PART").and_then(int),
                    });
                }
            }
            "-X-STREAM-INF" | "-X-MEDIA" | "-X-I-FRAME-STREAM-INF" => {
                return Err(err(n, "a multivariant playlist, not a media playlist"))
            }
            _ => {} // Unknown tags are ignored, as clients must (§4.1).
        }
    }
    p.target_duration = target.ok_or_else(|| err(0, "no EXT-X-TARGETDURATION"))?;
    if !cur.parts.is_empty() {
        if !msn_base_fixed {
            next_msn = p.media_sequence + p.skipped;
        }
        cur.msn = next_msn;
        cur.map = map;
        p.segments.push(cur);
    }
    if p.segments.len() > 10_000 {
        return Err(err(0, "too many segments"));
    }
    Ok(p)
}

/// One media playlist a multivariant playlist names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendition {
    /// The local rendition name (its folder under `/live/{stream}/`).
    pub name: String,
    /// The upstream URI, as written in the multivariant playlist.
    pub uri: String,
}

/// Whether `s` can be used as one URL path segment as it is.
pub fn is_simple_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Rewrites a multivariant playlist for the edge: every media playlist URI becomes
/// `{name}/index.m3u8`, keeping the upstream name when it is already of that form.
/// Content steering is dropped: the edge follows one pathway
/// ([`crate::steering::playlist::one_pathway`]) and advertises its own.
///
/// # Errors
/// [`ParseError`] if it is not a multivariant playlist.
pub fn rewrite_multivariant(text: &str) -> Result<(String, Vec<Rendition>), ParseError> {
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, l)) if l.trim_end() == "#EXTM3U" => {}
        _ => return Err(err(1, "does not start with #EXTM3U")),
    }
    let mut out = String::from("#EXTM3U\n");
    let mut renditions: Vec<Rendition> = Vec::new();
    let name_for = |uri: &str, renditions: &mut Vec<Rendition>| -> String {
        if let Some(r) = renditions.iter().find(|r| r.uri == uri) {
            return r.name.clone();
        }
        let own = uri
            .strip_suffix("/index.m3u8")
            .filter(|n| is_simple_name(n) && !renditions.iter().any(|r| r.name == *n));
        let name = own.map_or_else(|| format!("r{}", renditions.len()), str::to_owned);
        renditions.push(Rendition {
            name: name.clone(),
            uri: uri.to_owned(),
        });
        name
    };
    let mut expect_uri = false;
    for (i, raw) in lines {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if !line.starts_with('#') {
            if !expect_uri {
                return Err(err(i + 1, "URI without EXT-X-STREAM-INF"));
            }
            let name = name_for(line, &mut renditions);
            let _ = writeln!(out, "{name}/index.m3u8");
            expect_uri = false;
            continue;
        }
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        match name {
            "#EXT-X-STREAM-INF" => {
                expect_uri = true;
                out.push_str(line);
                out.push('\n');
            }
            "#EXT-X-MEDIA" | "#EXT-X-I-FRAME-STREAM-INF" => {
                let mut a = Attrs::parse(value).ok_or_else(|| err(i + 1, "bad attribute list"))?;
                if let Some(uri) = a.get("URI").map(str::to_owned) {
                    let local = name_for(&uri, &mut renditions);
                    a.set_quoted("URI", &format!("{local}/index.m3u8"));
                }
                let _ = writeln!(out, "{name}:{}", a.render());
            }
            "#EXT-X-CONTENT-STEERING" | "#EXTM3U" => {}
            "#EXTINF" | "#EXT-X-TARGETDURATION" | "#EXT-X-PART" => {
                return Err(err(i + 1, "a media playlist, not a multivariant playlist"))
            }
            _ if line.starts_with("#EXT") => {
                out.push_str(line);
                out.push('\n');
            }
            _ => {}
        }
    }
    if renditions.is_empty() {
        return Err(err(0, "no variant"));
    }
    Ok((out, renditions))
}

/// Resolves `uri` against the URL of the playlist that names it (RFC 3986 §5.2, for
/// the forms playlists use). `None` for other schemes.
pub fn resolve(base: &str, uri: &str) -> Option<String> {
    if uri.starts_with("http://") || uri.starts_with("https://") {
        return Some(uri.to_owned());
    }
    if uri.contains("://") || uri.starts_with("//") {
        return None;
    }
    let scheme_end = base.find("://")? + 3;
    let base = base.split(['?', '#']).next()?;
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |p| p + scheme_end);
    let origin = &base[..path_start];
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (uri, None),
    };
    let joined = if path.starts_with('/') {
        path.to_owned()
    } else {
        let dir = &base[path_start..];
        let dir = &dir[..dir.rfind('/').map_or(0, |i| i + 1)];
        format!("{}{path}", if dir.is_empty() { "/" } else { dir })
    };
    let mut out: Vec<&str> = Vec::new();
    let segs: Vec<&str> = joined.split('/').collect();
    for (i, s) in segs.iter().enumerate() {
        match *s {
            "." => {}
            ".." => {
                if out.len() > 1 {
                    out.pop();
                }
            }
            _ => out.push(s),
        }
        if (*s == "." || *s == "..") && i == segs.len() - 1 {
            out.push("");
        }
    }
    let mut url = format!("{origin}{}", out.join("/"));
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    Some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LL: &str = "#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:1
#EXT-X-PART-INF:PART-TARGET=0.200
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=6.0,PART-HOLD-BACK=0.600
#EXT-X-MEDIA-SEQUENCE:7
#EXT-X-DISCONTINUITY-SEQUENCE:1
#EXT-X-DATERANGE:ID=\"poll-1\",CLASS=\"com.estuary.poll\",START-DATE=\"2023-11-14T22:13:20.000Z\",X-Q=\"a, b\"
#EXT-X-MAP:URI=\"init.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z
#EXTINF:1.000,
7.m4s
#EXT-X-DISCONTINUITY
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:21.000Z
#EXT-X-PART:DURATION=0.200,URI=\"p10.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.200,URI=\"p11.m4s\"
#EXTINF:0.400,
8.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:21.400Z
#EXT-X-PART:DURATION=0.200,URI=\"p12.m4s\",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p13.m4s\"
#EXT-X-RENDITION-REPORT:URI=\"../audio/index.m3u8\",LAST-MSN=9,LAST-PART=0
";

    #[test]
    fn ll_hls_media_playlist() {
        let p = parse_media(LL).unwrap();
        assert_eq!(p.target_duration, 1);
        assert_eq!(p.part_target.as_deref(), Some("0.200"));
        assert_eq!(p.server_control.get("CAN-BLOCK-RELOAD"), Some("YES"));
        assert_eq!((p.media_sequence, p.discontinuity_sequence), (7, 1));
        assert_eq!(p.dateranges.len(), 1);
        assert_eq!(p.segments.len(), 3);
        let s = &p.segments[1];
        assert_eq!((s.msn, s.uri.as_deref()), (8, Some("8.m4s")));
        assert!(s.discontinuity && !p.segments[0].discontinuity);
        assert_eq!(s.map.as_deref(), Some("init.mp4"));
        assert_eq!(s.parts.len(), 2);
        assert_eq!(s.parts[0].attrs.get("INDEPENDENT"), Some("YES"));
        assert_eq!(s.duration.0, "0.400");
        let open = &p.segments[2];
        assert_eq!((open.msn, open.uri.as_ref()), (9, None));
        assert_eq!(open.parts[0].uri, "p12.m4s");
        assert_eq!(p.hint.as_deref(), Some("p13.m4s"));
        assert_eq!(p.reports[0].last_msn, Some(9));
        assert_eq!(p.next(), (9, Some(1)));
        assert!(!p.endlist);
    }

    #[test]
    fn skip_and_plain_playlists() {
        let d = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:3\n#EXT-X-SKIP:SKIPPED-SEGMENTS=4\n#EXTINF:2.0,\na.ts\n#EXTINF:2.0,x\nb.ts\n#EXT-X-ENDLIST\n";
        let p = parse_media(d).unwrap();
        assert_eq!(p.segments[0].msn, 7);
        assert_eq!(p.segments[1].title, "x");
        assert_eq!(p.next(), (9, None));
        assert!(p.endlist && !p.has_parts());
    }

    #[test]
    fn hostile_playlists_are_refused() {
        for bad in [
            "",
            "hello",
            "#EXTM3U\n#EXTINF:1,\na.ts\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\nfoo.ts\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:x\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:NaN,\na\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-PART:DURATION=0.2\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-PART:URI=\"a\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-KEY:METHOD=AES-128,URI=\"k\"\n",
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\na.m3u8\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:99999999999999999999\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:9223372036854775800\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:9999999999999999\n",
        ] {
            assert!(parse_media(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn multivariant_is_rewritten_to_local_names() {
        let mv = "#EXTM3U
#EXT-X-VERSION:9
#EXT-X-CONTENT-STEERING:SERVER-URI=\"/steer\"
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"main\",URI=\"audio/index.m3u8\"
#EXT-X-STREAM-INF:BANDWIDTH=2500000,CODECS=\"avc1.64001f,mp4a.40.2\",AUDIO=\"audio\"
source/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=800000
../other/low.m3u8?x=1
";
        let (text, r) = rewrite_multivariant(mv).unwrap();
        assert_eq!(
            r,
            vec![
                Rendition {
                    name: "audio".into(),
                    uri: "audio/index.m3u8".into()
                },
                Rendition {
                    name: "source".into(),
                    uri: "source/index.m3u8".into()
                },
                Rendition {
                    name: "r2".into(),
                    uri: "../other/low.m3u8?x=1".into()
                },
            ]
        );
        assert!(text.contains("URI=\"audio/index.m3u8\""));
        assert!(text.contains("\nr2/index.m3u8\n"));
        assert!(text.contains("CODECS=\"avc1.64001f,mp4a.40.2\""));
        assert!(!text.contains("STEERING"));
        assert!(rewrite_multivariant(LL).is_err());
    }

    #[test]
    fn uris_resolve_against_the_playlist() {
        let b = "http://o:8080/live/demo/source/index.m3u8?_HLS_msn=3";
        assert_eq!(
            resolve(b, "p1.m4s").unwrap(),
            "http://o:8080/live/demo/source/p1.m4s"
        );
        assert_eq!(
            resolve(b, "../audio/index.m3u8").unwrap(),
            "http://o:8080/live/demo/audio/index.m3u8"
        );
        assert_eq!(
            resolve(b, "/x/y.m4s?a=b").unwrap(),
            "http://o:8080/x/y.m4s?a=b"
        );
        assert_eq!(resolve(b, "https://c/d.m4s").unwrap(), "https://c/d.m4s");
        assert_eq!(resolve("http://o", "a.m3u8").unwrap(), "http://o/a.m3u8");
        assert_eq!(
            resolve(b, "../../../../x.m4s").unwrap(),
            "http://o:8080/x.m4s"
        );
        assert!(resolve(b, "file:///etc/passwd").is_none());
    }

    /// Mutated playlists (truncations, byte flips, spliced lines) parse or are refused,
    /// never panic, and what parses is consistent. Deterministic, so a failure replays.
    #[test]
    fn mutated_playlists_never_panic() {
        let mv = "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",URI=\"audio/index.m3u8\"\n#EXT-X-STREAM-INF:BANDWIDTH=1\nsource/index.m3u8\n";
        let seeds = [LL, mv];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"#:,=\"\n.-_/?&0123456789ABEIMNPRSTXYZaeimnpsu \x00\xff";
        for i in 0..30_000 {
            let seed = seeds[i % seeds.len()].as_bytes();
            let mut b = seed.to_vec();
            for _ in 0..(next() % 6 + 1) {
                let at = (next() as usize) % (b.len() + 1);
                match next() % 4 {
                    0 => b.truncate(at),
                    1 if at < b.len() => b[at] = alphabet[(next() as usize) % alphabet.len()],
                    2 => b.insert(
                        at.min(b.len()),
                        alphabet[(next() as usize) % alphabet.len()],
                    ),
                    _ => {
                        let from = (next() as usize) % seed.len();
                        let len = (next() as usize) % 40;
                        let piece = &seed[from..(from + len).min(seed.len())];
                        let at = at.min(b.len());
                        b.splice(at..at, piece.iter().copied());
                    }
                }
            }
            let text = String::from_utf8_lossy(&b);
            if let Ok(p) = parse_media(&text) {
                assert!(p.segments.windows(2).all(|w| w[1].msn == w[0].msn + 1));
                assert!(p.segments.iter().rev().skip(1).all(|s| s.uri.is_some()));
                let _ = p.next();
                for u in p.segments.iter().flat_map(|s| s.uri.iter()) {
                    let _ = resolve("http://o:1/live/s/v/index.m3u8", u);
                }
            }
            if let Ok((out, r)) = rewrite_multivariant(&text) {
                assert!(!r.is_empty() && out.starts_with("#EXTM3U\n"));
                assert!(r.iter().all(|r| is_simple_name(&r.name)));
            }
        }
    }

    #[test]
    fn attribute_lists_round_trip() {
        let a = Attrs::parse("DURATION=0.200,URI=\"a,b.m4s\",INDEPENDENT=YES").unwrap();
        assert_eq!(a.get("URI"), Some("a,b.m4s"));
        assert_eq!(a.render(), "DURATION=0.200,URI=\"a,b.m4s\",INDEPENDENT=YES");
        assert!(Attrs::parse("lower=1").is_none());
        assert!(Attrs::parse("A=\"open").is_none());
    }
}
