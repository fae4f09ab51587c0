//! Where a playback token travels: found in a request (path prefix, query parameter or
//! cookie), and carried into every URI of a playlist when it came as a query parameter,
//! so a player handed one tokenised URL fetches everything else with the token too.
//!
//! A path-prefix token (`/token/{percent-encoded token}/live/…`) needs no carrying: the
//! playlists' URIs are relative, so they resolve under the same prefix. A cookie is sent
//! by the browser on every request by itself.

use hyper::{header, HeaderMap};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

/// The first path segment of a path-prefix token.
pub const PATH_PREFIX: &str = "token";

/// Encoded in a token placed in a query value or a path segment: what would end the
/// value, the segment or the playlist's quoted string, and `+` (read as a space by
/// form decoders). `=`, `~`, `*`, `!` and `:` stay readable, as CDNs print them.
const TOKEN_SET: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b'/')
    .add(b'?')
    .add(b'<')
    .add(b'>')
    .add(b'`');

/// How the token arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `/token/{token}/live/…`.
    Path,
    /// `?{token_name}=…`.
    Query,
    /// `Cookie: {token_name}=…`.
    Cookie,
}

/// Splits `/token/{token}/live/…` into the token and the path after it; `None` for any
/// other path.
pub fn split_path(path: &str) -> Option<(String, &str)> {
    let rest = path
        .strip_prefix('/')?
        .strip_prefix(PATH_PREFIX)?
        .strip_prefix('/')?;
    let (tok, tail) = rest.split_at(rest.find('/')?);
    if !tail.starts_with("/live/") || tok.is_empty() {
        return None;
    }
    let tok = percent_decode_str(tok).decode_utf8().ok()?.into_owned();
    Some((tok, tail))
}

/// The token in the query string (`%XX` decoded; a `+` stays a `+`, since Akamai's
/// escaped fields use it literally).
pub fn from_query(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| percent_decode_str(v).decode_utf8().ok())
        .map(|v| v.into_owned())
        .filter(|v| !v.is_empty())
}

/// The token in a `Cookie` header.
pub fn from_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| percent_decode_str(v.trim_matches('"')).decode_utf8().ok())
        .map(|v| v.into_owned())
        .filter(|v| !v.is_empty())
}

/// The `name=value` pair appended to URIs.
pub fn query_pair(name: &str, token: &str) -> String {
    format!("{name}={}", utf8_percent_encode(token, TOKEN_SET))
}

/// `token` as the first segment of a path-prefix URL.
pub fn path_segment(token: &str) -> String {
    utf8_percent_encode(token, TOKEN_SET).to_string()
}

/// Appends `pair` to every URI of a playlist: the URI lines (variants, segments) and
/// every `URI="…"` attribute (`EXT-X-MEDIA`, `EXT-X-MAP`, `EXT-X-PART`,
/// `EXT-X-PRELOAD-HINT`, `EXT-X-RENDITION-REPORT`, `EXT-X-I-FRAME-STREAM-INF`,
/// `EXT-X-KEY`…) and the `SERVER-URI` of `EXT-X-CONTENT-STEERING`.
pub fn carry(playlist: &str, pair: &str) -> String {
    let mut out = String::with_capacity(playlist.len() + playlist.len() / 4);
    for line in playlist.split_inclusive('\n') {
        let (body, eol) = match line.strip_suffix('\n') {
            Some(b) => match b.strip_suffix('\r') {
                Some(b) => (b, "\r\n"),
                None => (b, "\n"),
            },
            None => (line, ""),
        };
        if body.is_empty() {
        } else if body.starts_with('#') {
            carry_attributes(body, pair, &mut out);
        } else {
            append(body, pair, &mut out);
        }
        out.push_str(eol);
    }
    out
}

fn append(uri: &str, pair: &str, out: &mut String) {
    out.push_str(uri);
    out.push(if uri.contains('?') { '&' } else { '?' });
    out.push_str(pair);
}

/// Rewrites each `URI="…"` attribute of a tag line (only where `URI` is the whole
/// attribute name: after `:` or `,`).
fn carry_attributes(line: &str, pair: &str, out: &mut String) {
    const ATTR: &str = "URI=\"";
    let mut rest = line;
    while let Some(i) = rest.find(ATTR) {
        // `SERVER-URI` (`EXT-X-CONTENT-STEERING`) is a URI too.
        let before = &rest[..i];
        let at_start = |b: &str| matches!(b.as_bytes().last(), Some(b':' | b','));
        let boundary = at_start(before) || before.strip_suffix("SERVER-").is_some_and(at_start);
        let start = i + ATTR.len();
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let Some(end) = rest.find('"') else { break };
        if boundary {
            append(&rest[..end], pair, out);
        } else {
            out.push_str(&rest[..end]);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "exp=9~acl=/live/demo/*~hmac=ab";

    #[test]
    fn every_uri_carries_the_pair() {
        let pair = query_pair("__token__", T);
        assert_eq!(pair, "__token__=exp=9~acl=%2Flive%2Fdemo%2F*~hmac=ab");
        let media = "#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXT-X-PART:DURATION=0.2,URI=\"p1.m4s\",INDEPENDENT=YES\n\
#EXTINF:2.0,\n1.m4s\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p2.m4s\"\n\
#EXT-X-RENDITION-REPORT:URI=\"../audio/index.m3u8\",LAST-MSN=3,LAST-PART=1\n\
#EXT-X-DATERANGE:ID=\"x\",X-COM-URI=\"keep\"\n";
        let out = carry(media, &pair);
        assert_eq!(
            out,
            format!(
                "#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4?{pair}\"\n#EXT-X-PART:DURATION=0.2,URI=\"p1.m4s?{pair}\",INDEPENDENT=YES\n\
#EXTINF:2.0,\n1.m4s?{pair}\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p2.m4s?{pair}\"\n\
#EXT-X-RENDITION-REPORT:URI=\"../audio/index.m3u8?{pair}\",LAST-MSN=3,LAST-PART=1\n\
#EXT-X-DATERANGE:ID=\"x\",X-COM-URI=\"keep\"\n"
            )
        );
        let mv = "#EXTM3U\r\n#EXT-X-MEDIA:TYPE=AUDIO,URI=\"audio/index.m3u8\"\r\n#EXT-X-STREAM-INF:BANDWIDTH=1\r\nsrc/index.m3u8?a=1";
        assert_eq!(
            carry(mv, "t=1"),
            "#EXTM3U\r\n#EXT-X-MEDIA:TYPE=AUDIO,URI=\"audio/index.m3u8?t=1\"\r\n#EXT-X-STREAM-INF:BANDWIDTH=1\r\nsrc/index.m3u8?a=1&t=1"
        );
        assert_eq!(
            carry(
                "#EXT-X-CONTENT-STEERING:SERVER-URI=\"s.json\",PATHWAY-ID=\"a\"",
                "t=1"
            ),
            "#EXT-X-CONTENT-STEERING:SERVER-URI=\"s.json?t=1\",PATHWAY-ID=\"a\""
        );
        assert_eq!(carry("#X:XSERVER-URI=\"a\"", "t=1"), "#X:XSERVER-URI=\"a\"");
        // An unterminated attribute is left as it is.
        assert_eq!(carry("#X:URI=\"a", "t=1"), "#X:URI=\"a");
    }

    #[test]
    fn finding_the_token() {
        let seg = path_segment(T);
        let path = format!("/token/{seg}/live/demo/index.m3u8");
        assert_eq!(
            split_path(&path),
            Some((T.to_owned(), "/live/demo/index.m3u8"))
        );
        assert_eq!(split_path("/live/demo/index.m3u8"), None);
        assert_eq!(split_path("/token//live/x"), None);
        assert_eq!(split_path("/token/abc/watch/x"), None);
        let q = format!("_HLS_msn=1&{}", query_pair("__token__", T));
        assert_eq!(from_query(Some(&q), "__token__").as_deref(), Some(T));
        assert_eq!(from_query(Some("a=1"), "__token__"), None);
        assert_eq!(
            from_query(Some("__token__=id=a+b"), "__token__").as_deref(),
            Some("id=a+b")
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            format!("a=1; __token__={T}").parse().unwrap(),
        );
        assert_eq!(from_cookie(&h, "__token__").as_deref(), Some(T));
        assert_eq!(from_cookie(&h, "other"), None);
    }
}
