//! Single byte ranges on media objects (RFC 9110 §14): `206` with `Content-Range`, `416`
//! for a range outside the object. Several ranges in one request get the whole object
//! (`200`), which the RFC allows.

use std::sync::Arc;

use bytes::Bytes;

/// What a `Range` header asks of an object of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ranged {
    /// No usable range: send the whole object.
    Whole,
    /// Bytes `start..=end`.
    Part(u64, u64),
    /// Nothing of the object is in the range.
    Unsatisfiable,
}

/// Parses a `Range` header value against an object of `len` bytes.
pub fn parse(header: Option<&str>, len: u64) -> Ranged {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ranged::Whole;
    };
    if spec.contains(',') {
        return Ranged::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ranged::Whole;
    };
    let num = |s: &str| {
        (!s.is_empty() && s.len() <= 19 && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match (a.trim(), b.trim()) {
        // `bytes=-N`: the last N bytes.
        ("", n) => match num(n) {
            Some(0) => Ranged::Unsatisfiable,
            Some(n) if len > 0 => Ranged::Part(len.saturating_sub(n), len - 1),
            Some(_) => Ranged::Unsatisfiable,
            None => Ranged::Whole,
        },
        (s, "") => match num(s) {
            Some(s) if s < len => Ranged::Part(s, len - 1),
            Some(_) => Ranged::Unsatisfiable,
            None => Ranged::Whole,
        },
        (s, e) => match (num(s), num(e)) {
            (Some(s), Some(e)) if s <= e && s < len => Ranged::Part(s, e.min(len - 1)),
            (Some(s), Some(e)) if s <= e => Ranged::Unsatisfiable,
            _ => Ranged::Whole,
        },
    }
}

/// The chunks covering bytes `start..=end`, sliced without copying.
pub fn slice(chunks: &[Bytes], start: u64, end: u64) -> Arc<[Bytes]> {
    let mut out = Vec::new();
    let mut at = 0u64;
    for c in chunks {
        let (c_start, c_end) = (at, at + c.len() as u64);
        at = c_end;
        if c_end <= start || c_start > end {
            continue;
        }
        let from = start.saturating_sub(c_start) as usize;
        let to = ((end + 1).min(c_end) - c_start) as usize;
        out.push(c.slice(from..to));
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse(None, 100), Ranged::Whole);
        assert_eq!(parse(Some("bytes=0-9"), 100), Ranged::Part(0, 9));
        assert_eq!(parse(Some("bytes=90-"), 100), Ranged::Part(90, 99));
        assert_eq!(parse(Some("bytes=-10"), 100), Ranged::Part(90, 99));
        assert_eq!(parse(Some("bytes=50-500"), 100), Ranged::Part(50, 99));
        assert_eq!(parse(Some("bytes=100-"), 100), Ranged::Unsatisfiable);
        assert_eq!(parse(Some("bytes=200-300"), 100), Ranged::Unsatisfiable);
        assert_eq!(parse(Some("bytes=-0"), 100), Ranged::Unsatisfiable);
        assert_eq!(parse(Some("bytes=0-1,5-6"), 100), Ranged::Whole);
        assert_eq!(parse(Some("bytes=9-1"), 100), Ranged::Whole);
        assert_eq!(parse(Some("items=0-1"), 100), Ranged::Whole);
        assert_eq!(parse(Some("bytes=x-1"), 100), Ranged::Whole);
    }

    #[test]
    fn slices_span_chunks() {
        let chunks = [
            Bytes::from_static(b"abcd"),
            Bytes::from_static(b"efgh"),
            Bytes::from_static(b"ij"),
        ];
        let s = slice(&chunks, 2, 8);
        assert_eq!(s.concat(), b"cdefghi");
        assert_eq!(slice(&chunks, 0, 9).concat(), b"abcdefghij");
        assert_eq!(slice(&chunks, 9, 9).concat(), b"j");
    }
}
