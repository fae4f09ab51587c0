//! How a follower gets and keeps objects: local names, the store, the outstanding
//! preload-hint GET, fetching ahead when joining, and segments joined from parts.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;

use super::{is_older, Follower, JOIN_CONCURRENCY, MAX_INITS};
use crate::{
    store::{Object, ObjectKind},
    upstream::{
        client::Kind,
        playlist::{self, is_simple_name, MediaPlaylist},
        window::EdgePart,
        UpstreamError,
    },
};

impl Follower {
    pub(super) fn local_name(&self, written: &str, abs: &str) -> String {
        local_name(self.epoch, written, abs)
    }

    pub(super) fn ttl(&self) -> Duration {
        let td = self.window.header.target_duration.max(1);
        let listed = self.window.segments.len() as u64 + 4;
        Duration::from_secs(td * listed).max(Duration::from_secs(30))
    }

    pub(super) fn store(&mut self, name: &str, kind: ObjectKind, chunks: Vec<Bytes>, label: &str) {
        let ttl = if kind == ObjectKind::Init {
            Duration::from_secs(86_400)
        } else {
            self.ttl()
        };
        self.up.store.objects.put(
            format!("{}/{}/{name}", self.remote.name, self.rendition.name),
            Object {
                kind,
                chunks: chunks.into(),
                ttl,
            },
        );
        self.held.insert(name.to_owned());
        self.up.metrics.objects.with_label_values(&[label]).inc();
    }

    /// An object's bytes: fetched ahead, from the preload-hint GET, or fetched now.
    pub(super) async fn obtain(
        &mut self,
        url: &str,
        name: &str,
        kind: Kind,
    ) -> Result<Bytes, UpstreamError> {
        if let Some(b) = self.prefetched.remove(name) {
            return Ok(b);
        }
        if self.hint.as_ref().is_some_and(|(n, _)| n == name) {
            if let Some((_, task)) = self.hint.take() {
                if let Ok(Ok(b)) = task.await {
                    return Ok(b);
                }
            }
        }
        self.up
            .client
            .get(url, kind, self.up.cfg.load().upstream.request_timeout)
            .await
    }

    pub(super) async fn init_for(
        &mut self,
        written: &str,
        base: &str,
    ) -> Result<String, UpstreamError> {
        let abs =
            playlist::resolve(base, written).ok_or_else(|| UpstreamError::Url(written.into()))?;
        if let Some(n) = self.init_names.get(&abs) {
            return Ok(n.clone());
        }
        let name = self.local_name(written, &abs);
        let bytes = self.obtain(&abs, &name, Kind::Init).await?;
        self.store(&name, ObjectKind::Init, vec![bytes.clone()], "init");
        self.inits.push((name.clone(), bytes));
        if self.inits.len() > MAX_INITS {
            self.inits.remove(0);
        }
        self.init_names.insert(abs, name.clone());
        Ok(name)
    }

    /// Joining: fetch what the playlist lists, several at a time.
    pub(super) async fn prefetch(
        &mut self,
        segments: &[playlist::Segment],
        base: &str,
        last_end: Option<SystemTime>,
    ) {
        let mut want = Vec::new();
        for s in segments.iter().filter(|s| !is_older(s, last_end)) {
            let objs = s
                .parts
                .iter()
                .filter(|p| p.attrs.get("GAP") != Some("YES"))
                .map(|p| (p.uri.as_str(), Kind::Part))
                .chain(
                    s.uri
                        .iter()
                        .filter(|_| !is_gap(s))
                        .map(|u| (u.as_str(), Kind::Segment)),
                );
            for (written, kind) in objs {
                if let Some(abs) = playlist::resolve(base, written) {
                    let name = self.local_name(written, &abs);
                    let hinted = self.hint.as_ref().is_some_and(|(h, _)| *h == name);
                    if !self.held.contains(&name) && !hinted {
                        want.push((abs, name, kind));
                    }
                }
            }
        }
        let client = self.up.client.clone();
        let timeout = self.up.cfg.load().upstream.request_timeout;
        let got: Vec<_> = futures_util::stream::iter(want)
            .map(|(abs, name, kind)| {
                let client = client.clone();
                async move { (name, client.get(&abs, kind, timeout).await) }
            })
            .buffer_unordered(JOIN_CONCURRENCY)
            .collect()
            .await;
        for (name, r) in got {
            if let Ok(b) = r {
                self.prefetched.insert(name, b);
            }
        }
    }

    pub(super) async fn fetch_part(
        &mut self,
        p: &playlist::Part,
        base: &str,
    ) -> Result<(EdgePart, Option<Bytes>), UpstreamError> {
        let abs =
            playlist::resolve(base, &p.uri).ok_or_else(|| UpstreamError::Url(p.uri.clone()))?;
        let name = self.local_name(&p.uri, &abs);
        // "GAP=YES ... the Partial Segment is not available" (§4.4.4.9): listed, not fetched.
        let bytes = if p.attrs.get("GAP") == Some("YES") {
            None
        } else {
            let b = self.obtain(&abs, &name, Kind::Part).await?;
            self.store(&name, ObjectKind::Part, vec![b.clone()], "part");
            Some(b)
        };
        let mut attrs = p.attrs.clone();
        attrs.set_quoted("URI", &name);
        Ok((
            EdgePart {
                name,
                attrs,
                duration: p.duration,
            },
            bytes,
        ))
    }

    /// Stores a complete segment: joined from its parts when the edge holds them all
    /// (no request), else fetched.
    pub(super) async fn segment_object(
        &mut self,
        s: &playlist::Segment,
        uri: &str,
        base: &str,
        parts: Option<Vec<Bytes>>,
    ) -> Result<String, UpstreamError> {
        let abs = playlist::resolve(base, uri).ok_or_else(|| UpstreamError::Url(uri.into()))?;
        let name = self.local_name(uri, &abs);
        // "EXT-X-GAP ... indicates that the segment URI ... is not available" (§4.4.4.7).
        if self.held.contains(&name) || is_gap(s) {
            return Ok(name);
        }
        match parts {
            Some(chunks) if !chunks.is_empty() => {
                self.store(&name, ObjectKind::Segment, chunks, "segment_joined");
            }
            _ => {
                let bytes = self.obtain(&abs, &name, Kind::Segment).await?;
                self.store(&name, ObjectKind::Segment, vec![bytes], "segment");
            }
        }
        Ok(name)
    }

    /// Keeps one GET of the preload-hinted part outstanding.
    pub(super) fn start_hint(&mut self, pl: &MediaPlaylist, base: &str) {
        let want = pl
            .hint
            .as_ref()
            .filter(|_| !pl.endlist)
            .and_then(|h| playlist::resolve(base, h).map(|u| (self.local_name(h, &u), u)));
        if let (Some((have, _)), Some((name, _))) = (&self.hint, &want) {
            if have == name {
                return;
            }
        }
        if let Some((_, t)) = self.hint.take() {
            t.abort();
        }
        let Some((name, url)) = want else { return };
        if self.held.contains(&name) {
            return;
        }
        let client = self.up.client.clone();
        let cfg = self.up.cfg.load();
        let timeout =
            cfg.hls.blocking_timeout.max(cfg.upstream.failover_after) + Duration::from_secs(1);
        let task = tokio::spawn(async move { client.get(&url, Kind::Hint, timeout).await });
        self.hint = Some((name, task));
    }
}

/// Whether a segment is marked `EXT-X-GAP` (no media to fetch).
pub(super) fn is_gap(s: &playlist::Segment) -> bool {
    s.tags.iter().any(|t| t == "#EXT-X-GAP")
}

/// The name an upstream URI is kept under at the edge: the URI itself when it is a plain
/// file name, else a hash of the absolute URL with its extension; prefixed after the
/// first origin (`epoch`), so another origin's names cannot collide with it.
fn local_name(epoch: u32, written: &str, abs: &str) -> String {
    let base = if is_simple_name(written) {
        written.to_owned()
    } else {
        let path = abs.split(['?', '#']).next().unwrap_or_default();
        let ext = path
            .rsplit('/')
            .next()
            .and_then(|f| f.rsplit_once('.'))
            .map(|(_, e)| e)
            .filter(|e| (1..=5).contains(&e.len()) && e.bytes().all(|b| b.is_ascii_alphanumeric()))
            .unwrap_or("bin");
        format!("u{:016x}.{ext}", fnv1a(abs.as_bytes()))
    };
    if epoch == 0 {
        base
    } else {
        format!("e{epoch}-{base}")
    }
}

/// FNV-1a, for stable local names of URIs that cannot be used as they are.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_names() {
        let abs = "http://o/live/s/v/p12.m4s";
        assert_eq!(local_name(0, "p12.m4s", abs), "p12.m4s");
        assert_eq!(local_name(2, "p12.m4s", abs), "e2-p12.m4s");
        let odd = local_name(
            0,
            "../x/p12.m4s?token=a",
            "http://o/live/s/x/p12.m4s?token=a",
        );
        assert!(odd.starts_with('u') && odd.ends_with(".m4s"), "{odd}");
        assert!(is_simple_name(&odd));
        // Same URL, same name; another URL, another name.
        assert_eq!(
            odd,
            local_name(
                0,
                "../x/p12.m4s?token=a",
                "http://o/live/s/x/p12.m4s?token=a"
            )
        );
        assert_ne!(
            odd,
            local_name(
                0,
                "../x/p12.m4s?token=b",
                "http://o/live/s/x/p12.m4s?token=b"
            )
        );
        assert!(local_name(0, "https://cdn/a", "https://cdn/a").ends_with(".bin"));
        assert!(local_name(0, ".hidden", "http://o/.hidden").starts_with('u'));
    }
}
