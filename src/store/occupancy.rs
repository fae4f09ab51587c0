//! What the memory cache holds, for the admin API: entries and bytes, in all and by
//! stream. Walks the cache once (an admin request, never the media path).

use std::collections::BTreeMap;

use serde::Serialize;

use super::MemoryStore;

/// Entries and bytes of one part of the cache. Bytes are the cache's own weights: the
/// object's length plus its key and a fixed overhead, as `cache.max_bytes` counts them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Objects held.
    pub entries: u64,
    /// Bytes held.
    pub bytes: u64,
}

/// The cache's occupancy.
#[derive(Debug, Default, Serialize)]
pub struct Occupancy {
    /// The byte bound (`cache.max_bytes`).
    pub max_bytes: u64,
    /// Everything held.
    pub total: Usage,
    /// By stream name (the first part of an object's key `stream/rendition/uri`).
    pub streams: BTreeMap<String, Usage>,
}

impl MemoryStore {
    /// Entries and bytes held, in all and by stream (after pending maintenance, so
    /// expired objects are not counted).
    pub fn occupancy(&self) -> Occupancy {
        self.cache.run_pending_tasks();
        let mut o = Occupancy {
            max_bytes: self.cache.policy().max_capacity().unwrap_or(0),
            ..Occupancy::default()
        };
        for (key, obj) in self.cache.iter() {
            let bytes = u64::from(super::weight(&key, &obj));
            let stream = key.split('/').next().unwrap_or_default();
            let u = match o.streams.get_mut(stream) {
                Some(u) => u,
                None => o.streams.entry(stream.to_owned()).or_default(),
            };
            for u in [u, &mut o.total] {
                u.entries += 1;
                u.bytes += bytes;
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use bytes::Bytes;

    use super::*;
    use crate::store::{Object, ObjectKind, ObjectStore};

    #[test]
    fn counts_by_stream() {
        let registry = prometheus::Registry::new();
        let s = MemoryStore::new(10_000_000, crate::metrics::Metrics::register(&registry));
        let obj = |n: usize| Object {
            kind: ObjectKind::Part,
            chunks: Arc::from(vec![Bytes::from(vec![0u8; n])]),
            ttl: Duration::from_secs(60),
        };
        s.put("a/720p/1.0.m4s".into(), obj(1000));
        s.put("a/audio/1.0.m4s".into(), obj(100));
        s.put("b/720p/init.mp4".into(), obj(10));
        let o = s.occupancy();
        assert_eq!(o.max_bytes, 10_000_000);
        assert_eq!(o.total.entries, 3);
        assert_eq!(o.streams["a"].entries, 2);
        assert_eq!(o.streams["b"].entries, 1);
        assert_eq!(o.total.bytes, o.streams["a"].bytes + o.streams["b"].bytes);
        assert!(o.streams["a"].bytes >= 1100);
        assert_eq!(o.total.bytes, s.weighted_size());
    }
}
