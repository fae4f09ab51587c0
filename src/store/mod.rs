//! The media store: a moka cache of init segments, parts and segments bounded by bytes,
//! and the live state of every rendition behind a watch channel.
//!
//! The packaging side publishes into it; the HTTP side reads and waits on it. An edge
//! tier fills the same store from an origin (the [`ObjectStore`] trait is the seam).

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex, RwLock, Weak},
    time::{Duration, Instant},
};

use bytes::Bytes;
use moka::{notification::RemovalCause, policy::EvictionPolicy, sync::Cache, Expiry};
use tokio::sync::watch;

use crate::metrics::Metrics;

mod occupancy;

pub use occupancy::{Occupancy, Usage};

/// What an entry weighs against `cache.max_bytes`: its object, its key, and a fixed
/// allowance for the cache's own bookkeeping.
fn weight(key: &str, obj: &Object) -> u32 {
    u32::try_from(obj.len() + key.len() as u64 + 64).unwrap_or(u32::MAX)
}

/// What kind of object, which sets its content type and lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// An init segment (`ftyp`+`moov`): kept for the life of the stream.
    Init,
    /// A partial segment: listed only near the live edge.
    Part,
    /// A whole segment: listed for the playlist window.
    Segment,
}

/// An immutable media object, kept as the chunks it was made of (a segment is its parts;
/// no copy is made to join them).
#[derive(Debug, Clone)]
pub struct Object {
    /// Its kind.
    pub kind: ObjectKind,
    /// Its bytes, in order.
    pub chunks: Arc<[Bytes]>,
    /// How long the store must keep it.
    pub ttl: Duration,
}

impl Object {
    /// Total length in bytes.
    pub fn len(&self) -> u64 {
        self.chunks.iter().map(|c| c.len() as u64).sum()
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where media objects are kept; the upstream (edge) tier fills one too.
pub trait ObjectStore: Send + Sync {
    /// Stores an object under `key` (`stream/rendition/uri`).
    fn put(&self, key: String, obj: Object);
    /// Looks an object up.
    fn get(&self, key: &str) -> Option<Object>;
}

struct PerObjectTtl;

impl Expiry<String, Object> for PerObjectTtl {
    fn expire_after_create(&self, _k: &String, v: &Object, _now: Instant) -> Option<Duration> {
        Some(v.ttl)
    }
}

/// The bounded in-memory cache.
#[derive(Clone)]
pub struct MemoryStore {
    cache: Cache<String, Object>,
    /// `cache_lookups{result="hit"}` and `{result="miss"}`, looked up once: every media
    /// request counts one.
    hits: prometheus::IntCounter,
    misses: prometheus::IntCounter,
}

impl MemoryStore {
    /// A cache holding at most `max_bytes` of media.
    ///
    /// Eviction is LRU (not TinyLFU): a fresh part must always be admitted, since a
    /// player is about to ask for it, and the oldest media is the least useful.
    pub fn new(max_bytes: u64, metrics: Metrics) -> Self {
        let m = metrics.clone();
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &String, v: &Object| weight(k, v))
            .eviction_policy(EvictionPolicy::lru())
            .expire_after(PerObjectTtl)
            .eviction_listener(move |_k, _v, cause| {
                let cause = match cause {
                    RemovalCause::Size => "size",
                    RemovalCause::Expired => "expired",
                    RemovalCause::Explicit => "explicit",
                    RemovalCause::Replaced => "replaced",
                };
                m.cache_evicted.with_label_values(&[cause]).inc();
            })
            .build();
        Self {
            cache,
            hits: metrics.cache_lookups.with_label_values(&["hit"]),
            misses: metrics.cache_lookups.with_label_values(&["miss"]),
        }
    }

    /// Bytes held now (after pending maintenance).
    pub fn weighted_size(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }
}

impl ObjectStore for MemoryStore {
    fn put(&self, key: String, obj: Object) {
        self.cache.insert(key, obj);
    }

    fn get(&self, key: &str) -> Option<Object> {
        let r = self.cache.get(key);
        if r.is_some() {
            &self.hits
        } else {
            &self.misses
        }
        .inc();
        r
    }
}

/// A snapshot of one rendition, replaced on every publish.
#[derive(Debug, Clone, Default)]
pub struct RenditionView {
    /// The full media playlist.
    pub playlist: Bytes,
    /// The delta update (`_HLS_skip=YES`).
    pub delta: Bytes,
    /// Latest part (MSN, index).
    pub last: Option<(u64, u64)>,
    /// First listed MSN.
    pub media_sequence: u64,
    /// Complete segments in the window: (MSN, number of parts).
    pub segments: Vec<(u64, u64)>,
    /// The segment being built: (MSN, parts so far).
    pub open: Option<(u64, u64)>,
    /// Target duration in seconds.
    pub target_duration: u64,
    /// Whether a publisher is connected.
    pub live: bool,
    /// Init segments by URI (small; kept here so they outlive any cache pressure).
    pub inits: Vec<(String, Bytes)>,
    /// Program date time of the latest part.
    pub last_pdt: Option<std::time::SystemTime>,
    /// URI of the next part (the preload hint), kept while the publisher is away too: the
    /// part with that name is the next one published, whenever that is.
    pub hint: Option<String>,
    /// When the latest part (`last`) was published here: stamped by
    /// [`StreamEntry::publish`], the moment parked requests for it are released (the
    /// parked-request benchmark measures release latency from it).
    pub part_published: Option<std::time::SystemTime>,
    /// The view published before this one, while the entry still keeps it (the last
    /// [`KEPT_VIEWS`]): see [`RenditionView::first_with`].
    pub previous: Weak<RenditionView>,
}

/// How many of a rendition's latest views stay reachable from the newest one.
pub const KEPT_VIEWS: usize = 4;

impl RenditionView {
    /// Whether the playlist already holds part (msn, part) (or a later one), which is what
    /// a blocking reload with `_HLS_msn`/`_HLS_part` waits for.
    pub fn has(&self, msn: u64, part: Option<u64>) -> bool {
        let Some((lm, lp)) = self.last else {
            return false;
        };
        match part {
            None => self.segments.last().is_some_and(|(m, _)| *m >= msn) || lm > msn,
            Some(p) => lm > msn || (lm == msn && lp >= p),
        }
    }

    /// The kept view that holds part (msn, part) and no later one: the playlist as it was
    /// when that part was published (or as last republished with the same newest part:
    /// without the preload hint once the publisher left, with `EXT-X-ENDLIST` once an
    /// origin ended), which is what a blocking reload for it gets. A burst of
    /// parts (ffmpeg's CLI sends ~230 ms of audio per PES) is published part by part, and
    /// a player waiting for the first of them then learns of each in turn; answered with
    /// the newest playlist, it would learn of a segment's last part and the next segment's
    /// first at once, and hls.js then loads the second and skips the first (a hole in its
    /// audio buffer and a stall). It also makes the answer to each `_HLS_msn`/`_HLS_part`
    /// URL the same for every client, whenever it asks.
    pub fn first_with(self: &Arc<Self>, msn: u64, part: Option<u64>) -> Arc<Self> {
        let (mut answer, mut v) = (self.clone(), self.clone());
        for _ in 0..KEPT_VIEWS {
            match v.previous.upgrade() {
                Some(p) if p.has(msn, part) => {
                    // Walking back, the first view of an earlier newest part is that
                    // part's latest republish.
                    if p.last != v.last {
                        answer = p.clone();
                    }
                    v = p;
                }
                _ => break,
            }
        }
        answer
    }
}

/// One rendition's views: the newest for subscribers, and the last few kept alive for
/// [`RenditionView::first_with`].
#[derive(Debug)]
struct Rendition {
    tx: watch::Sender<Arc<RenditionView>>,
    kept: Mutex<VecDeque<Arc<RenditionView>>>,
}

/// One stream's live state.
#[derive(Debug)]
pub struct StreamEntry {
    renditions: RwLock<BTreeMap<String, Rendition>>,
    multivariant: watch::Sender<Option<Bytes>>,
}

impl StreamEntry {
    fn new() -> Self {
        Self {
            renditions: RwLock::new(BTreeMap::new()),
            multivariant: watch::channel(None).0,
        }
    }

    /// Publishes a rendition's new view, stamping when its latest part appeared.
    pub fn publish(&self, rendition: &str, mut view: RenditionView) {
        let renditions = self.renditions.read().expect("not poisoned");
        let Some(r) = renditions.get(rendition) else {
            drop(renditions);
            view.part_published = view.last.map(|_| std::time::SystemTime::now());
            let view = Arc::new(view);
            let r = Rendition {
                tx: watch::channel(view.clone()).0,
                kept: Mutex::new(VecDeque::from([view])),
            };
            self.renditions
                .write()
                .expect("not poisoned")
                .insert(rendition.to_owned(), r);
            return;
        };
        {
            let before = r.tx.borrow();
            view.part_published = if before.last == view.last {
                before.part_published
            } else {
                view.last.map(|_| std::time::SystemTime::now())
            };
            view.previous = Arc::downgrade(&before);
        }
        let view = Arc::new(view);
        {
            let mut kept = r.kept.lock().expect("not poisoned");
            if kept.len() >= KEPT_VIEWS {
                kept.pop_front();
            }
            kept.push_back(view.clone());
        }
        r.tx.send_replace(view);
    }

    /// Subscribes to a rendition.
    pub fn rendition(&self, name: &str) -> Option<watch::Receiver<Arc<RenditionView>>> {
        self.renditions
            .read()
            .expect("not poisoned")
            .get(name)
            .map(|r| r.tx.subscribe())
    }

    /// The latest view of a rendition.
    pub fn view(&self, name: &str) -> Option<Arc<RenditionView>> {
        self.renditions
            .read()
            .expect("not poisoned")
            .get(name)
            .map(|r| r.tx.borrow().clone())
    }

    /// Names of the renditions.
    pub fn rendition_names(&self) -> Vec<String> {
        self.renditions
            .read()
            .expect("not poisoned")
            .keys()
            .cloned()
            .collect()
    }

    /// Publishes the multivariant playlist.
    pub fn publish_multivariant(&self, text: Bytes) {
        self.multivariant.send_replace(Some(text));
    }

    /// Subscribes to the multivariant playlist.
    pub fn multivariant(&self) -> watch::Receiver<Option<Bytes>> {
        self.multivariant.subscribe()
    }
}

/// The store: objects plus per-stream live state.
#[derive(Clone)]
pub struct Store {
    /// The object cache.
    pub objects: Arc<dyn ObjectStore>,
    streams: Arc<RwLock<HashMap<String, Arc<StreamEntry>>>>,
}

impl Store {
    /// A store over an object cache.
    pub fn new(objects: Arc<dyn ObjectStore>) -> Self {
        Self {
            objects,
            streams: Arc::default(),
        }
    }

    /// The entry of a stream, made on first use.
    pub fn stream_or_create(&self, name: &str) -> Arc<StreamEntry> {
        if let Some(e) = self.stream(name) {
            return e;
        }
        self.streams
            .write()
            .expect("not poisoned")
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(StreamEntry::new()))
            .clone()
    }

    /// The entry of a stream that has published.
    pub fn stream(&self, name: &str) -> Option<Arc<StreamEntry>> {
        self.streams
            .read()
            .expect("not poisoned")
            .get(name)
            .cloned()
    }

    /// Names of the streams that have published.
    pub fn stream_names(&self) -> Vec<String> {
        let mut v: Vec<_> = self
            .streams
            .read()
            .expect("not poisoned")
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }
}

impl crate::interact::Timeline for Store {
    /// The latest part of the stream's first video rendition (the passthrough `source`
    /// when there is one), while a publisher is connected.
    fn now(&self, stream: &str) -> Option<crate::interact::TimelineStamp> {
        let entry = self.stream(stream)?;
        let mut names = entry.rendition_names();
        names.retain(|n| n != "audio");
        names.sort_by_key(|n| n != "source");
        let view = entry.view(names.first()?)?;
        if !view.live {
            return None;
        }
        let (msn, part) = view.last?;
        Some(crate::interact::TimelineStamp {
            pdt: view.last_pdt?,
            msn,
            part,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(segments: Vec<(u64, u64)>, open: Option<(u64, u64)>) -> RenditionView {
        let last = open
            .filter(|(_, n)| *n > 0)
            .map(|(m, n)| (m, n - 1))
            .or(segments.last().map(|(m, n)| (*m, n - 1)));
        RenditionView {
            media_sequence: segments.first().map_or(0, |s| s.0),
            segments,
            open,
            last,
            ..Default::default()
        }
    }

    #[test]
    fn blocking_reload_targets() {
        let v = view(vec![(4, 5), (5, 6)], Some((6, 2)));
        assert!(v.has(6, Some(1)));
        assert!(!v.has(6, Some(2)));
        assert!(v.has(5, None));
        assert!(!v.has(6, None));
        // A part index past the end of a closed segment means the next segment's first.
        assert!(v.has(5, Some(6)));
        assert!(!v.has(7, Some(0)));
    }

    #[test]
    fn a_new_part_is_stamped_once() {
        let e = StreamEntry::new();
        e.publish("v", view(vec![], None));
        assert!(e.view("v").unwrap().part_published.is_none());
        e.publish("v", view(vec![(4, 5)], Some((5, 1))));
        let first = e.view("v").unwrap().part_published.expect("stamped");
        // A republish with the same latest part (a playlist change) keeps its stamp.
        std::thread::sleep(Duration::from_millis(2));
        e.publish("v", view(vec![(4, 5)], Some((5, 1))));
        assert_eq!(e.view("v").unwrap().part_published, Some(first));
        e.publish("v", view(vec![(4, 5)], Some((5, 2))));
        assert!(e.view("v").unwrap().part_published.unwrap() > first);
    }

    #[test]
    fn a_blocking_reload_gets_the_view_its_part_was_published_in() {
        let e = StreamEntry::new();
        // Parts 5.0..=5.2, then segment 5 closes with 6.0, all before the waiter looks.
        for open in [(5, 1), (5, 2), (5, 3)] {
            e.publish("a", view(vec![(4, 5)], Some(open)));
        }
        e.publish("a", view(vec![(4, 5), (5, 3)], Some((6, 1))));
        let newest = e.view("a").unwrap();
        assert_eq!(newest.first_with(5, Some(1)).last, Some((5, 1)));
        assert_eq!(newest.first_with(5, Some(2)).last, Some((5, 2)));
        // Segment 5 whole, or a part index past its end: the view that closed it.
        assert_eq!(newest.first_with(5, None).last, Some((6, 0)));
        assert_eq!(newest.first_with(5, Some(3)).last, Some((6, 0)));
        assert_eq!(newest.first_with(6, Some(0)).last, Some((6, 0)));
        // A republish with the same newest part (the publisher left: no preload hint)
        // is what that part's URL answers from then on.
        let mut gone = view(vec![(4, 5), (5, 3)], Some((6, 1)));
        gone.playlist = Bytes::from_static(b"no hint");
        e.publish("a", gone);
        let newest = e.view("a").unwrap();
        let answer = newest.first_with(6, Some(0));
        assert_eq!(answer.last, Some((6, 0)));
        assert_eq!(answer.playlist, "no hint");
        assert_eq!(newest.first_with(5, Some(2)).last, Some((5, 2)));
        // Only the last KEPT_VIEWS stay reachable: older parts get the oldest one kept.
        for n in 2..=6 {
            e.publish("a", view(vec![(4, 5), (5, 3)], Some((6, n))));
        }
        let newest = e.view("a").unwrap();
        // The newest is 6.5; the oldest kept is KEPT_VIEWS - 1 parts before it.
        let oldest_kept = (6, 5 - (KEPT_VIEWS as u64 - 1));
        assert_eq!(newest.first_with(5, Some(1)).last, Some(oldest_kept));
        assert_eq!(newest.first_with(6, Some(5)).last, Some((6, 5)));
    }

    #[test]
    fn cache_is_bounded_by_bytes() {
        let m = Metrics::register(&prometheus::Registry::new());
        let s = MemoryStore::new(1_000_000, m.clone());
        for i in 0..40 {
            s.put(
                format!("k{i}"),
                Object {
                    kind: ObjectKind::Part,
                    chunks: vec![Bytes::from(vec![0u8; 50_000])].into(),
                    ttl: Duration::from_secs(60),
                },
            );
        }
        assert!(s.weighted_size() <= 1_000_000);
        // LRU admits the newest entries.
        assert!(s.get("k39").is_some());
        assert!(s.get("k0").is_none());
        assert!(m.cache_evicted.with_label_values(&["size"]).get() > 0);
    }
}
