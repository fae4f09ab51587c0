//! The multivariant playlist with content steering: every variant and rendition once per
//! pathway, and the `EXT-X-CONTENT-STEERING` tag. Pure text in, text out.
//!
//! Pathways are listed explicitly, each with its own URIs, rather than left to the
//! player to clone (`PATHWAY-CLONES` with a `URI-REPLACEMENT`): hls.js replaces only the
//! host name in a clone (never the port or path), and Safari and hls.js both play listed
//! pathways, which the spec has had since its first version.

use std::fmt::Write;

use crate::upstream::playlist::Attrs;

/// How one pathway's URIs are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathwayUris {
    /// The `PATHWAY-ID`.
    pub id: String,
    /// Put before each URI of the plain playlist (relative to `/live/{stream}/`): empty
    /// for the serving node's own pathway, `{base}/live/{stream}/` for another node.
    pub prefix: String,
    /// A `name=value` query pair appended to this pathway's URIs (a token that the
    /// playlist's own carrying would not add).
    pub pair: Option<String>,
}

impl PathwayUris {
    fn uri(&self, uri: &str) -> String {
        let mut u = format!("{}{uri}", self.prefix);
        if let Some(p) = &self.pair {
            u.push(if u.contains('?') { '&' } else { '?' });
            u.push_str(p);
        }
        u
    }
}

/// The `GROUP-ID` of a rendition group on one pathway: each pathway needs its own groups,
/// since their URIs differ (as hls.js names the groups of a cloned pathway).
fn group(g: &str, pathway: &str) -> String {
    format!("{g}@{pathway}")
}

/// A stable id from a URI: the characters `STABLE-VARIANT-ID` and `STABLE-RENDITION-ID`
/// allow ("[a-z], [A-Z], [0-9], '+', '/', '=', '.', '-', and '_'"), others as `_`.
fn stable_id(uri: &str) -> String {
    uri.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+/=.-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One item of the plain playlist's body.
enum Item<'a> {
    /// `#EXT-X-MEDIA`.
    Media(Attrs),
    /// `#EXT-X-STREAM-INF` and its URI line.
    Variant(Attrs, &'a str),
    /// `#EXT-X-I-FRAME-STREAM-INF`.
    IFrame(Attrs),
    /// Any other line, written once.
    Other(&'a str),
}

/// Adds content steering to a plain multivariant playlist (one without pathways).
///
/// "#EXT-X-CONTENT-STEERING ... SERVER-URI ... PATHWAY-ID" (RFC 8216bis §4.4.6.6): the
/// manifest's address, and the pathway to play until it has been read. Each variant gets
/// "PATHWAY-ID" and a "STABLE-VARIANT-ID" shared by its copies on every pathway
/// (§4.4.6.2), each rendition a "STABLE-RENDITION-ID" (§4.4.6.1). `server_uri` is written
/// as given (the token carrying adds a query token to it as to every URI).
///
/// A playlist that already names pathways, or cannot be read, is returned as it is.
pub fn with_pathways(
    plain: &str,
    server_uri: &str,
    initial: &str,
    pathways: &[PathwayUris],
) -> String {
    let mut head = String::with_capacity(plain.len() * (pathways.len() + 1));
    let mut body = Vec::new();
    let mut lines = plain.lines();
    while let Some(raw) = lines.next() {
        let line = raw.trim_end();
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let item = match name {
            "" => continue,
            "#EXT-X-CONTENT-STEERING" => return plain.to_owned(),
            "#EXT-X-MEDIA" => Attrs::parse(value).map(Item::Media),
            "#EXT-X-I-FRAME-STREAM-INF" => Attrs::parse(value).map(Item::IFrame),
            "#EXT-X-STREAM-INF" => {
                let uri = lines.by_ref().map(str::trim).find(|l| !l.is_empty());
                Attrs::parse(value)
                    .zip(uri)
                    .map(|(a, u)| Item::Variant(a, u))
            }
            _ if body.is_empty() => {
                head.push_str(line);
                head.push('\n');
                continue;
            }
            _ => Some(Item::Other(line)),
        };
        match item {
            Some(Item::Variant(a, _) | Item::Media(a) | Item::IFrame(a))
                if a.get("PATHWAY-ID").is_some() =>
            {
                return plain.to_owned()
            }
            Some(i) => body.push(i),
            None => return plain.to_owned(),
        }
    }
    let mut out = head;
    let _ = writeln!(
        out,
        "#EXT-X-CONTENT-STEERING:SERVER-URI=\"{server_uri}\",PATHWAY-ID=\"{initial}\""
    );
    for (n, p) in pathways.iter().enumerate() {
        for item in &body {
            match item {
                Item::Media(a) => {
                    let mut a = a.clone();
                    if let Some(g) = a.get("GROUP-ID").map(str::to_owned) {
                        a.set_quoted("GROUP-ID", &group(&g, &p.id));
                    }
                    if let Some(u) = a.get("URI").map(str::to_owned) {
                        if a.get("STABLE-RENDITION-ID").is_none() {
                            a.set_quoted("STABLE-RENDITION-ID", &stable_id(&u));
                        }
                        a.set_quoted("URI", &p.uri(&u));
                    }
                    let _ = writeln!(out, "#EXT-X-MEDIA:{}", a.render());
                }
                Item::Variant(a, uri) => {
                    let mut a = a.clone();
                    for key in ["AUDIO", "VIDEO", "SUBTITLES"] {
                        if let Some(g) = a.get(key).map(str::to_owned) {
                            a.set_quoted(key, &group(&g, &p.id));
                        }
                    }
                    if a.get("STABLE-VARIANT-ID").is_none() {
                        a.set_quoted("STABLE-VARIANT-ID", &stable_id(uri));
                    }
                    a.set_quoted("PATHWAY-ID", &p.id);
                    let _ = writeln!(out, "#EXT-X-STREAM-INF:{}\n{}", a.render(), p.uri(uri));
                }
                Item::IFrame(a) => {
                    let mut a = a.clone();
                    if let Some(u) = a.get("URI").map(str::to_owned) {
                        a.set_quoted("URI", &p.uri(&u));
                    }
                    a.set_quoted("PATHWAY-ID", &p.id);
                    let _ = writeln!(out, "#EXT-X-I-FRAME-STREAM-INF:{}", a.render());
                }
                Item::Other(line) if n == 0 => {
                    out.push_str(line);
                    out.push('\n');
                }
                Item::Other(_) => {}
            }
        }
    }
    out
}

/// The pathway a variant or rendition belongs to ("." when it names none, §4.4.6.2).
fn pathway_of(a: &Attrs) -> &str {
    a.get("PATHWAY-ID").unwrap_or(".")
}

/// An upstream multivariant playlist reduced to one pathway, for an edge to follow: the
/// one its `EXT-X-CONTENT-STEERING` starts on (else the first variant's), with the
/// rendition groups its variants use, without `PATHWAY-ID` or the steering tag. An edge
/// pulls from its own upstream, and advertises its own pathways. A playlist without
/// pathways is returned as it is.
pub fn one_pathway(text: &str) -> std::borrow::Cow<'_, str> {
    let tag_attrs = |prefix: &'static str| {
        text.lines()
            .filter_map(move |l| l.trim_end().strip_prefix(prefix))
            .filter_map(Attrs::parse)
    };
    let variants: Vec<Attrs> = tag_attrs("#EXT-X-STREAM-INF:").collect();
    if variants.iter().all(|a| a.get("PATHWAY-ID").is_none()) {
        return text.into();
    }
    let initial = tag_attrs("#EXT-X-CONTENT-STEERING:")
        .find_map(|a| a.get("PATHWAY-ID").map(str::to_owned))
        .filter(|p| variants.iter().any(|a| pathway_of(a) == p));
    let keep = initial.unwrap_or_else(|| pathway_of(&variants[0]).to_owned());
    let groups: Vec<&str> = variants
        .iter()
        .filter(|a| pathway_of(a) == keep)
        .flat_map(|a| ["AUDIO", "VIDEO", "SUBTITLES"].map(|k| a.get(k)))
        .flatten()
        .collect();
    let mut out = String::with_capacity(text.len());
    let mut lines = text.lines();
    while let Some(raw) = lines.next() {
        let line = raw.trim_end();
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let attrs = || Attrs::parse(value).unwrap_or_default();
        let kept = match name {
            "#EXT-X-CONTENT-STEERING" => None,
            "#EXT-X-STREAM-INF" | "#EXT-X-I-FRAME-STREAM-INF" => {
                let a = attrs();
                let mine = pathway_of(&a) == keep;
                if name == "#EXT-X-STREAM-INF" && !mine {
                    // Its URI line goes too.
                    lines.by_ref().find(|l| !l.trim().is_empty());
                }
                mine.then_some(a)
            }
            "#EXT-X-MEDIA" => Some(attrs()).filter(|a| {
                a.get("GROUP-ID").is_some_and(|g| groups.contains(&g))
                    && a.get("PATHWAY-ID").is_none_or(|p| p == keep)
            }),
            _ => {
                out.push_str(line);
                out.push('\n');
                continue;
            }
        };
        if let Some(mut a) = kept {
            a.0.retain(|(k, _)| k != "PATHWAY-ID");
            let _ = writeln!(out, "{name}:{}", a.render());
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &str = "#EXTM3U
#EXT-X-VERSION:9
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"main\",DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"2\",URI=\"audio/index.m3u8\"
#EXT-X-STREAM-INF:BANDWIDTH=2500000,AVERAGE-BANDWIDTH=2000000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720,FRAME-RATE=30.000,AUDIO=\"audio\"
source/index.m3u8
";

    fn pathways() -> Vec<PathwayUris> {
        vec![
            PathwayUris {
                id: "eu".into(),
                prefix: String::new(),
                pair: None,
            },
            PathwayUris {
                id: "us".into(),
                prefix: "https://us.example.com/live/demo/".into(),
                pair: Some("__token__=t%2F1".into()),
            },
        ]
    }

    #[test]
    fn every_pathway_lists_every_variant_with_its_own_groups() {
        let out = with_pathways(PLAIN, "steering.json", "eu", &pathways());
        assert_eq!(
            out,
            "#EXTM3U
#EXT-X-VERSION:9
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-CONTENT-STEERING:SERVER-URI=\"steering.json\",PATHWAY-ID=\"eu\"
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio@eu\",NAME=\"main\",DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"2\",URI=\"audio/index.m3u8\",STABLE-RENDITION-ID=\"audio/index.m3u8\"
#EXT-X-STREAM-INF:BANDWIDTH=2500000,AVERAGE-BANDWIDTH=2000000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720,FRAME-RATE=30.000,AUDIO=\"audio@eu\",STABLE-VARIANT-ID=\"source/index.m3u8\",PATHWAY-ID=\"eu\"
source/index.m3u8
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio@us\",NAME=\"main\",DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"2\",URI=\"https://us.example.com/live/demo/audio/index.m3u8?__token__=t%2F1\",STABLE-RENDITION-ID=\"audio/index.m3u8\"
#EXT-X-STREAM-INF:BANDWIDTH=2500000,AVERAGE-BANDWIDTH=2000000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720,FRAME-RATE=30.000,AUDIO=\"audio@us\",STABLE-VARIANT-ID=\"source/index.m3u8\",PATHWAY-ID=\"us\"
https://us.example.com/live/demo/source/index.m3u8?__token__=t%2F1
"
        );
    }

    #[test]
    fn an_edge_follows_one_pathway_of_its_upstream() {
        let both = with_pathways(PLAIN, "s.json", "us", &pathways());
        let us = one_pathway(&both);
        assert!(
            !us.contains("PATHWAY-ID") && !us.contains("EXT-X-CONTENT-STEERING"),
            "{us}"
        );
        assert_eq!(us.matches("#EXT-X-STREAM-INF:").count(), 1, "{us}");
        assert_eq!(us.matches("#EXT-X-MEDIA:").count(), 1, "{us}");
        assert!(us.contains("GROUP-ID=\"audio@us\"") && us.contains("AUDIO=\"audio@us\""));
        assert!(
            us.contains("\nhttps://us.example.com/live/demo/source/index.m3u8?"),
            "{us}"
        );
        // No steering tag: the first variant's pathway.
        let eu = one_pathway(both.replace("#EXT-X-CONTENT-STEERING", "#X").as_str()).into_owned();
        assert!(
            eu.contains("\nsource/index.m3u8\n") && !eu.contains("us.example"),
            "{eu}"
        );
        // Without pathways nothing changes.
        assert!(matches!(one_pathway(PLAIN), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn playlists_with_pathways_or_unreadable_ones_stay_as_they_are() {
        let once = with_pathways(PLAIN, "s.json", "eu", &pathways());
        assert_eq!(with_pathways(&once, "s.json", "eu", &pathways()), once);
        let bad = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH\nx/index.m3u8\n";
        assert_eq!(with_pathways(bad, "s.json", "eu", &pathways()), bad);
        let no_uri = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n";
        assert_eq!(with_pathways(no_uri, "s.json", "eu", &pathways()), no_uri);
        assert_eq!(stable_id("a b/ü.m3u8"), "a_b/_.m3u8");
    }
}
