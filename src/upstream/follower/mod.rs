//! One follower per watched (stream, rendition): an actor that owns the edge's window of
//! the rendition and keeps it in step with upstream.
//!
//! It keeps one blocking playlist reload (`_HLS_msn`/`_HLS_part` of the next part) and
//! one GET of the preload-hinted part outstanding upstream, stores every object once,
//! and publishes a playlist only once the objects it lists are stored, so a viewer never
//! waits on a second upstream fetch. With no new part for `failover_after` it moves to
//! the next origin: the edge's media sequence keeps increasing and the first segment
//! from there carries `EXT-X-DISCONTINUITY`; what is already listed stays listed.

use std::{
    collections::{HashMap, HashSet},
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use tokio::task::JoinHandle;
use tracing::Instrument;

mod objects;

use super::{
    client::Kind,
    playlist::{self, MediaPlaylist, Rendition},
    window::{EdgeSegment, Window},
    Activity, Catalog, Inner, Readiness, Remote, Resume, UpstreamError,
};
use crate::store::{ObjectKind, StreamEntry};

/// Init segments a rendition keeps (a new one comes with each codec change or origin).
const MAX_INITS: usize = 8;
/// Most segments taken when joining (the live end of upstream's playlist).
const MAX_JOIN_SEGMENTS: usize = 20;
/// Most segments a window keeps, whatever upstream lists.
const MAX_WINDOW: usize = 100;
/// Shortest pause between playlist reloads that bring nothing new.
const MIN_RELOAD_INTERVAL: Duration = Duration::from_millis(100);
/// Concurrent object fetches when joining a stream.
const JOIN_CONCURRENCY: usize = 8;

/// What a follower starts from.
pub(super) struct Start {
    pub up: Arc<Inner>,
    pub remote: Arc<Remote>,
    pub catalog: Arc<Catalog>,
    pub rendition: Rendition,
    pub activity: Arc<Activity>,
    pub resume: Resume,
}

type Fetch = JoinHandle<Result<Bytes, UpstreamError>>;

/// The follower actor.
pub(super) struct Follower {
    up: Arc<Inner>,
    remote: Arc<Remote>,
    catalog: Arc<Catalog>,
    rendition: Rendition,
    activity: Arc<Activity>,
    entry: Arc<StreamEntry>,
    /// Where to pull from, in order of preference.
    origins: Arc<[String]>,
    /// Index of the origin followed now.
    origin: usize,
    /// Origins moved to so far (prefixes local names after the first).
    epoch: u32,
    /// The edge's MSN minus upstream's, for the current origin.
    offset: i64,
    /// Whether `offset` is known for the current origin.
    synced: bool,
    /// The least MSN a fresh window may start at (where a previous follower stopped).
    floor: u64,
    window: Window,
    /// Bytes of the open segment's parts, to join into the segment when it completes.
    /// (`None` for a part marked `GAP=YES`, which has no bytes).
    open_bytes: Vec<Option<Bytes>>,
    inits: Vec<(String, Bytes)>,
    init_names: HashMap<String, String>,
    /// Local names of the parts and segments stored.
    held: HashSet<String>,
    /// Objects fetched ahead when joining.
    prefetched: HashMap<String, Bytes>,
    /// The outstanding preload-hint GET: (local name, task).
    hint: Option<(String, Fetch)>,
    /// The next blocking reload, in upstream numbering, once one playlist was read.
    next: Option<(u64, Option<u64>)>,
    can_block: bool,
    last_progress: Instant,
    ready: bool,
    failures: u32,
    dirty: bool,
    /// Segments the window keeps.
    window_len: usize,
}

impl Follower {
    pub(super) fn new(s: Start) -> Self {
        let entry = s.up.store.stream_or_create(&s.remote.name);
        let origins = s.remote.origins.lock().expect("not poisoned").clone();
        let origin = s.remote.origin.load(Ordering::Relaxed) % origins.len().max(1);
        Self {
            entry,
            origins,
            origin,
            epoch: s.resume.epoch,
            offset: 0,
            synced: false,
            floor: s.resume.next_msn,
            window: Window::default(),
            open_bytes: Vec::new(),
            inits: Vec::new(),
            init_names: HashMap::new(),
            held: HashSet::new(),
            prefetched: HashMap::new(),
            hint: None,
            next: None,
            can_block: false,
            last_progress: Instant::now(),
            ready: false,
            failures: 0,
            dirty: false,
            window_len: 0,
            up: s.up,
            remote: s.remote,
            catalog: s.catalog,
            rendition: s.rendition,
            activity: s.activity,
        }
    }

    /// Follows until no viewer asked for `upstream.idle`, or shutdown.
    pub(super) async fn run(mut self) {
        let span = tracing::info_span!("follower", stream = %self.remote.name, rendition = %self.rendition.name);
        async move {
            let gauge = self.up.metrics.followers_active.clone();
            gauge.inc();
            tracing::info!(origin = %self.origin_url(), "follower started");
            let token = self.up.token.clone();
            loop {
                if token.is_cancelled() || self.retire_if_idle() {
                    break;
                }
                // An ended stream brings no news, and that is no reason to move.
                if self.last_progress.elapsed() >= self.stall_after() && !self.window.header.ended {
                    self.failover().await;
                }
                let r = tokio::select! {
                    r = self.step() => r,
                    () = token.cancelled() => break,
                };
                if self.dirty {
                    self.publish();
                }
                match r {
                    Ok(()) => self.failures = 0,
                    Err(e) => {
                        self.failures += 1;
                        if !self.ready {
                            // Before the first publish, try every origin at once.
                            let n = self.origins.len().max(1);
                            self.origin = (self.origin + 1) % n;
                            if self.failures as usize >= n {
                                self.activity
                                    .ready
                                    .send_replace(Readiness::Failed(e.clone()));
                            }
                            if self.failures as usize >= 3 * n {
                                // Viewers asking again within a second get this answer
                                // rather than a new follower each.
                                self.up.failures.insert(
                                    format!("{}/{}", self.remote.name, self.rendition.name),
                                    e,
                                );
                                self.retire();
                                break;
                            }
                        }
                        let pause = Duration::from_millis(100 * u64::from(self.failures.min(10)));
                        tokio::select! {
                            () = tokio::time::sleep(pause) => {}
                            () = token.cancelled() => break,
                        }
                    }
                }
            }
            if let Some((_, t)) = self.hint.take() {
                t.abort();
            }
            gauge.dec();
            tracing::info!("follower stopped");
        }
        .instrument(span)
        .await;
    }

    fn idle_for(&self) -> Duration {
        let last = self.activity.last.load(Ordering::Relaxed);
        Duration::from_millis(self.up.now_ms().saturating_sub(last))
    }

    /// Stops when idle; the check and the removal hold the directory's lock, so a viewer
    /// request either finds this follower running or starts a new one.
    fn retire_if_idle(&self) -> bool {
        let idle = self.up.cfg.load().upstream.idle;
        if self.idle_for() < idle {
            return false;
        }
        let mut f = self.remote.followers.lock().expect("not poisoned");
        if self.idle_for() < idle {
            return false;
        }
        tracing::info!(idle = ?idle, "no viewer; stopping");
        self.leave(&mut f);
        true
    }

    fn retire(&self) {
        let mut f = self.remote.followers.lock().expect("not poisoned");
        self.leave(&mut f);
    }

    /// Leaves the directory (its followers lock held): parks the numbering for the
    /// next follower, and retires the stream when this was its last follower.
    fn leave(&self, followers: &mut HashMap<String, Arc<Activity>>) {
        if followers
            .get(&self.rendition.name)
            .is_some_and(|a| Arc::ptr_eq(a, &self.activity))
        {
            followers.remove(&self.rendition.name);
        }
        self.up.resume.lock().expect("not poisoned").insert(
            (self.remote.name.clone(), self.rendition.name.clone()),
            Resume {
                next_msn: self.window.next_msn().unwrap_or(self.floor),
                epoch: self.epoch + 1,
            },
        );
        if followers.is_empty() {
            self.remote.retired.store(true, Ordering::Relaxed);
            let mut remotes = self.up.remotes.lock().expect("not poisoned");
            if remotes
                .get(&self.remote.name)
                .is_some_and(|r| Arc::ptr_eq(r, &self.remote))
            {
                remotes.remove(&self.remote.name);
            }
        }
    }

    fn stall_after(&self) -> Duration {
        let fa = self.up.cfg.load().upstream.failover_after;
        if self.window.header.part_target.is_some() {
            fa
        } else {
            // Without parts, news comes once a segment.
            fa.max(Duration::from_secs(self.window.header.target_duration.max(1)).mul_f64(1.5))
        }
    }

    /// No new part for too long: move to the next origin (or start afresh on the only
    /// one). The open segment is completed with the parts it has.
    async fn failover(&mut self) {
        self.last_progress = Instant::now();
        self.next = None;
        let from_url = self.origins.get(self.origin).cloned();
        // The directory may know where the stream went.
        let fresh = self.up.origins_for(&self.remote.name).await;
        if !fresh.is_empty() {
            *self.remote.origins.lock().expect("not poisoned") = fresh.clone();
            self.origins = fresh;
        }
        let n = self.origins.len().max(1);
        let at = from_url
            .as_ref()
            .and_then(|u| self.origins.iter().position(|o| o == u));
        self.origin = match at {
            Some(i) => (i + 1) % n,
            None => 0,
        };
        let from = from_url.unwrap_or_default();
        if from == self.origin_url() {
            // The only origin: start over with a plain reload; its names and numbers
            // still hold (a restart that went back is caught when applying).
            tracing::info!(origin = %from, "no new media upstream; reloading");
            return;
        }
        if let Some((_, t)) = self.hint.take() {
            t.abort();
        }
        self.synced = false;
        if !self.ready {
            return;
        }
        self.up.metrics.failovers.inc();
        self.new_epoch();
        tracing::warn!(%from, to = %self.origin_url(), "no new media upstream; moving to the next origin");
    }

    /// Whether upstream went back behind what the edge lists (an origin that restarted
    /// its numbering): its names and numbers no longer match ours.
    fn upstream_went_back(&self, pl: &MediaPlaylist) -> bool {
        let (Some(up), Some(ours)) = (
            pl.segments.last(),
            self.window.open.as_ref().or(self.window.segments.back()),
        ) else {
            return false;
        };
        (up.msn as i64 + self.offset) < ours.msn as i64
    }

    /// Another origin, or the same one numbering afresh: its names may collide with what
    /// is held, so new local names get a new prefix (init segments included).
    fn new_epoch(&mut self) {
        self.epoch += 1;
        self.init_names.clear();
        self.close_open();
    }

    fn close_open(&mut self) {
        let epoch = self.epoch;
        let bytes: Option<Vec<Bytes>> = std::mem::take(&mut self.open_bytes).into_iter().collect();
        if let Some(seg) = self.window.close_open(|m| format!("e{epoch}-s{m}.m4s")) {
            if let Some(bytes) = bytes.filter(|b| b.len() == seg.parts.len()) {
                let name = seg.name.clone().unwrap_or_default();
                self.store(&name, ObjectKind::Segment, bytes, "segment_joined");
            } else {
                self.window.segments.pop_back();
            }
            self.dirty = true;
        }
    }

    fn origin_url(&self) -> &str {
        self.origins.get(self.origin).map_or("", String::as_str)
    }

    fn playlist_url(&self) -> Result<(String, String), UpstreamError> {
        if self.origins.is_empty() {
            return Err(UpstreamError::NotFound);
        }
        let mv = format!("{}/{}/index.m3u8", self.origin_url(), self.remote.name);
        let url = playlist::resolve(&mv, &self.rendition.uri)
            .ok_or_else(|| UpstreamError::Url(self.rendition.uri.clone()))?;
        Ok((mv, url))
    }

    /// One upstream playlist answer, applied.
    async fn step(&mut self) -> Result<(), UpstreamError> {
        let (mv, base) = self.playlist_url()?;
        let cfg = self.up.cfg.get();
        let cfg = &cfg.upstream;
        let (url, kind, timeout) = match self.next {
            Some((msn, part)) if self.can_block && !self.window.header.ended => {
                let sep = if base.contains('?') { '&' } else { '?' };
                let mut u = format!("{base}{sep}_HLS_msn={msn}");
                if let Some(p) = part {
                    u.push_str(&format!("&_HLS_part={p}"));
                }
                (u, Kind::Blocking, cfg.failover_after)
            }
            Some(_) => {
                // No blocking reload upstream: poll at half the target duration (§6.3.4).
                let td = Duration::from_secs(self.window.header.target_duration.max(1));
                tokio::time::sleep(
                    (td / 2).clamp(Duration::from_millis(200), Duration::from_secs(2)),
                )
                .await;
                (base.clone(), Kind::Playlist, cfg.request_timeout)
            }
            None => (base.clone(), Kind::Playlist, cfg.request_timeout),
        };
        let asked = Instant::now();
        let body = match self.up.client.get(&url, kind, timeout).await {
            Ok(b) => b,
            // A blocking reload that ends without news is not an error.
            Err(UpstreamError::Timeout | UpstreamError::Status(503)) if kind == Kind::Blocking => {
                return Ok(())
            }
            Err(e) => {
                self.next = None;
                return Err(e);
            }
        };
        let answered = Instant::now();
        let pl = std::str::from_utf8(&body)
            .map_err(|_| "not UTF-8".to_owned())
            .and_then(|t| playlist::parse_media(t).map_err(|e| e.to_string()));
        let pl = match pl {
            Ok(p) => p,
            Err(reason) => {
                self.up
                    .metrics
                    .rejected
                    .with_label_values(&["playlist"])
                    .inc();
                tracing::warn!(%url, %reason, "unusable media playlist");
                self.next = None;
                return Err(UpstreamError::Malformed(reason));
            }
        };
        let progress = self.apply(&pl, &base, &mv).await;
        if kind == Kind::Blocking
            && matches!(progress, Ok(false))
            && asked.elapsed() < MIN_RELOAD_INTERVAL
        {
            // An upstream that answers blocking reloads at once without news (one that
            // ignores the directives) is polled, not hammered.
            tokio::time::sleep(MIN_RELOAD_INTERVAL).await;
        }
        match progress {
            Ok(true) => {
                self.last_progress = Instant::now();
                self.up
                    .metrics
                    .edge_latency
                    .observe(answered.elapsed().as_secs_f64());
            }
            Ok(false) => {}
            Err(e) => {
                self.next = None;
                return Err(e);
            }
        }
        self.next = Some(pl.next());
        self.can_block = pl.server_control.get("CAN-BLOCK-RELOAD") == Some("YES");
        self.start_hint(&pl, &base);
        if !self.ready {
            self.dirty = true;
        }
        Ok(())
    }

    /// Publishes the window; the first publish makes the follower ready.
    fn publish(&mut self) {
        self.dirty = false;
        self.entry
            .publish(&self.rendition.name, self.window.view(&self.inits));
        if !self.ready {
            self.ready = true;
            self.activity.ready.send_replace(Readiness::Published);
        }
    }

    /// Brings the window up to date with an upstream playlist. Returns whether new
    /// media was added. Each step leaves the window consistent, so an error part-way
    /// keeps what was stored.
    async fn apply(
        &mut self,
        pl: &MediaPlaylist,
        base: &str,
        mv: &str,
    ) -> Result<bool, UpstreamError> {
        let h = &mut self.window.header;
        let before = h.clone();
        h.target_duration = pl.target_duration;
        h.part_target.clone_from(&pl.part_target);
        h.part_hold_back = pl.server_control.get("PART-HOLD-BACK").map(str::to_owned);
        h.hold_back = pl.server_control.get("HOLD-BACK").map(str::to_owned);
        h.tags.clone_from(&pl.header_tags);
        h.dateranges.clone_from(&pl.dateranges);
        h.ended = pl.endlist;
        let mut progress = false;
        let last_end = self
            .window
            .open
            .as_ref()
            .or(self.window.segments.back())
            .and_then(EdgeSegment::pdt_end);
        if self.synced && self.upstream_went_back(pl) {
            tracing::warn!("upstream numbering went back; resynchronising");
            if let Some((_, t)) = self.hint.take() {
                t.abort();
            }
            self.new_epoch();
            self.synced = false;
        }
        // Joining takes the live end only: a long (DVR or event) playlist is not
        // pulled whole.
        let join_from = pl.segments.len().saturating_sub(MAX_JOIN_SEGMENTS + 1);
        if !self.synced {
            self.prefetch(&pl.segments[join_from..], base, last_end)
                .await;
        }
        for (i, s) in pl.segments.iter().enumerate() {
            let mut disc = s.discontinuity;
            if !self.synced {
                // Joining (or after a failover): take what is newer than what we list.
                if i < join_from || is_older(s, last_end) {
                    continue;
                }
                if self.window.open.is_some() {
                    self.close_open();
                }
                let next = self.window.next_msn();
                let target = next.unwrap_or_else(|| s.msn.max(self.floor));
                self.offset = target as i64 - s.msn as i64;
                disc |= next.is_some() || self.floor > 0;
                self.synced = true;
            }
            let e = s.msn as i64 + self.offset;
            if e < 0 {
                self.synced = false;
                return Err(UpstreamError::Malformed(
                    "media sequence went backwards".into(),
                ));
            }
            let mut e = e as u64;
            if self.window.open.as_ref().is_some_and(|o| o.msn == e) {
                progress |= self.extend_open(s, base).await?;
                continue;
            }
            if let Some(o) = &self.window.open {
                if e > o.msn {
                    // Its completion was missed: complete it with what it has.
                    self.close_open();
                }
            }
            let expected = self.window.next_msn();
            if expected.is_some_and(|x| e < x) {
                continue; // Already listed.
            }
            if let Some(x) = expected.filter(|x| e > *x) {
                // A gap upstream (or a window that moved past us): renumber to stay
                // contiguous, and mark the break.
                tracing::info!(
                    expected = x,
                    got = e,
                    "upstream skipped ahead; discontinuity"
                );
                self.offset = x as i64 - s.msn as i64;
                e = x;
                disc = true;
            }
            self.add_segment(s, e, disc, base).await?;
            progress = true;
        }
        // Mirror upstream's window length (the longest seen, so a restarted origin's
        // short playlist does not drop what players may still be reading) and how many
        // segments list their parts.
        self.window_len = self
            .window_len
            .max(pl.skipped as usize + pl.complete().count())
            .clamp(3, MAX_WINDOW);
        for gone in self.window.trim(self.window_len) {
            self.held.remove(&gone);
        }
        let with_parts = pl.complete().filter(|s| !s.parts.is_empty()).count();
        self.window.list_parts_of_last(with_parts);
        self.prefetched.clear();
        self.update_reports(pl, base, mv);
        self.window.header.hint = pl
            .hint
            .as_ref()
            .filter(|_| !pl.endlist)
            .and_then(|h| playlist::resolve(base, h).map(|u| self.local_name(h, &u)));
        if progress || self.window.header != before {
            self.dirty = true;
        }
        Ok(progress)
    }

    /// New parts of the open segment, and its completion.
    async fn extend_open(
        &mut self,
        s: &playlist::Segment,
        base: &str,
    ) -> Result<bool, UpstreamError> {
        let mut progress = false;
        let have = self.window.open.as_ref().map_or(0, |o| o.parts.len());
        for p in s.parts.iter().skip(have) {
            let (part, bytes) = self.fetch_part(p, base).await?;
            if let Some(o) = self.window.open.as_mut() {
                o.secs += part.duration;
                o.parts.push(part);
                self.open_bytes.push(bytes);
            }
            progress = true;
        }
        if let Some(uri) = &s.uri {
            let Some(mut o) = self.window.open.take() else {
                return Ok(progress);
            };
            let held = std::mem::take(&mut self.open_bytes);
            let joined = (o.parts.len() == s.parts.len() && held.len() == o.parts.len())
                .then(|| held.iter().cloned().collect::<Option<Vec<Bytes>>>())
                .flatten();
            let name = match self.segment_object(s, uri, base, joined).await {
                Ok(n) => n,
                Err(e) => {
                    self.window.open = Some(o);
                    self.open_bytes = held;
                    return Err(e);
                }
            };
            o.name = Some(name);
            o.duration.clone_from(&s.duration.0);
            o.secs = s.duration.1;
            o.title.clone_from(&s.title);
            self.window.segments.push_back(o);
            progress = true;
        }
        Ok(progress)
    }

    async fn add_segment(
        &mut self,
        s: &playlist::Segment,
        msn: u64,
        disc: bool,
        base: &str,
    ) -> Result<(), UpstreamError> {
        let map = match &s.map {
            Some(m) => Some(self.init_for(m, base).await?),
            None => None,
        };
        let mut seg = EdgeSegment {
            msn,
            name: None,
            duration: String::new(),
            secs: 0.0,
            title: String::new(),
            map,
            discontinuity: disc,
            // A segment without its own PDT follows on from the previous one (§4.4.4.6);
            // written out, so it survives the previous one leaving the window.
            pdt: s.pdt.clone().or_else(|| {
                let prev = self.window.segments.back().filter(|_| !disc)?;
                Some(humantime::format_rfc3339_millis(prev.pdt_end()?).to_string())
            }),
            parts: Vec::new(),
            list_parts: true,
            tags: s.tags.clone(),
        };
        if s.uri.is_none() {
            // Open: listed part by part as they are stored.
            self.window.open = Some(seg);
            self.open_bytes.clear();
            self.extend_open(s, base).await?;
            return Ok(());
        }
        for p in &s.parts {
            let (part, _) = self.fetch_part(p, base).await?;
            seg.parts.push(part);
        }
        // First seen complete: its listed parts may not be all of it (a server may drop
        // the oldest parts one by one), so the segment itself is fetched.
        let uri = s.uri.as_deref().unwrap_or_default();
        let name = self.segment_object(s, uri, base, None).await?;
        seg.name = Some(name);
        seg.duration.clone_from(&s.duration.0);
        seg.secs = s.duration.1;
        seg.title.clone_from(&s.title);
        self.window.segments.push_back(seg);
        Ok(())
    }

    /// Rendition reports, renamed to the edge's folders and numbering; renditions nobody
    /// watches here are reported from upstream's reports without being pulled.
    fn update_reports(&mut self, pl: &MediaPlaylist, base: &str, mv: &str) {
        let strip = |u: &str| u.split(['?', '#']).next().unwrap_or_default().to_owned();
        let mut out = Vec::new();
        for r in &pl.reports {
            let Some(abs) = playlist::resolve(base, &r.uri).map(|u| strip(&u)) else {
                continue;
            };
            let Some(name) = self
                .catalog
                .renditions
                .iter()
                .find(|c| playlist::resolve(mv, &c.uri).is_some_and(|u| strip(&u) == abs))
            else {
                continue;
            };
            let Some(msn) = r.last_msn else { continue };
            let msn = (msn as i64 + self.offset).max(0) as u64;
            out.push((format!("../{}/index.m3u8", name.name), msn, r.last_part));
        }
        self.window.header.reports = out;
    }
}

/// Whether an upstream segment (complete, or open with its parts so far) ends no later
/// than what the edge lists already, by program date time; without PDT nothing is older.
fn is_older(s: &playlist::Segment, last_end: Option<SystemTime>) -> bool {
    let secs = match s.uri {
        Some(_) => s.duration.1,
        None => s.parts.iter().map(|p| p.duration).sum(),
    };
    let probe = EdgeSegment {
        pdt: s.pdt.clone(),
        secs,
        ..Default::default()
    };
    match (last_end, probe.pdt_end()) {
        (Some(last), Some(end)) => end <= last + Duration::from_millis(1),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(pdt: Option<&str>, secs: f64, complete: bool, parts: &[f64]) -> playlist::Segment {
        playlist::Segment {
            uri: complete.then(|| "s.m4s".to_owned()),
            duration: (format!("{secs:.3}"), secs),
            pdt: pdt.map(str::to_owned),
            parts: parts
                .iter()
                .map(|d| playlist::Part {
                    uri: "p.m4s".into(),
                    duration: *d,
                    attrs: Default::default(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn older_by_program_date_time() {
        let t0 = humantime::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
        let last = Some(t0 + Duration::from_secs(2));
        let at = |s| Some(s);
        assert!(is_older(
            &seg(at("2026-01-01T00:00:01.000Z"), 1.0, true, &[]),
            last
        ));
        assert!(!is_older(
            &seg(at("2026-01-01T00:00:01.500Z"), 1.0, true, &[]),
            last
        ));
        // An open segment counts its parts so far.
        assert!(is_older(
            &seg(at("2026-01-01T00:00:01.600Z"), 0.0, false, &[0.2, 0.2]),
            last
        ));
        assert!(!is_older(
            &seg(at("2026-01-01T00:00:01.600Z"), 0.0, false, &[0.2, 0.2, 0.2]),
            last
        ));
        // Without PDT on either side nothing is older.
        assert!(!is_older(&seg(None, 1.0, true, &[]), last));
        assert!(!is_older(
            &seg(at("2026-01-01T00:00:00.000Z"), 1.0, true, &[]),
            None
        ));
    }
}
