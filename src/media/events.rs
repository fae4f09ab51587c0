//! The one channel from a pipeline's GStreamer threads to its tokio task, bounded.
//!
//! GStreamer callbacks must never block, so a full queue cannot push back: it drops.
//! Everything travels on one queue, so the tokio side sees events in the order they
//! happened (a track before its chunks, the end of stream after the last chunk). What
//! bounds it is a budget of queued media: at most [`MAX_CHUNKS`] chunks and
//! [`MAX_BYTES`] bytes. A chunk over budget is dropped, and so is the rest of its
//! rendition until the next segment start (a keyframe), so a player never gets a part
//! that depends on a lost one; the rendition then resumes after a [`MediaEvent::Gap`],
//! which gives the next segment a discontinuity. Small notices (tracks, streams, frames
//! an encoder dropped) have their own count limit; errors and the end of stream always
//! pass, and there are a handful per pipeline.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use tokio::sync::mpsc;

use super::{MediaChunk, MediaEvent};
use crate::packager::ChunkKind;

/// Chunks that may wait for the packager: about 20 s of a six-rendition ladder at
/// 200 ms parts.
pub const MAX_CHUNKS: usize = 512;
/// Bytes of media that may wait for the packager.
pub const MAX_BYTES: usize = 48 * 1024 * 1024;
/// Small notices that may wait.
const MAX_NOTICES: usize = 1024;

#[derive(Default)]
struct Budget {
    chunks: AtomicUsize,
    bytes: AtomicUsize,
    notices: AtomicUsize,
    /// Video chunks the pipeline produced, queued or not: a packager that is behind
    /// is no stalled pipeline.
    video_produced: AtomicU64,
    /// Chunks dropped since the receiver last looked, by rendition.
    dropped: Mutex<BTreeMap<Arc<str>, u64>>,
}

impl Budget {
    fn take(counter: &AtomicUsize, n: usize, max: usize) -> bool {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                (v + n <= max).then_some(v + n)
            })
            .is_ok()
    }

    fn take_chunk(&self, bytes: usize) -> bool {
        if !Self::take(&self.chunks, 1, MAX_CHUNKS) {
            return false;
        }
        // One chunk bigger than the whole byte budget still passes into an empty queue.
        let limit = MAX_BYTES.max(bytes);
        if !Self::take(&self.bytes, bytes, limit) {
            self.chunks.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    fn give_back(&self, ev: &MediaEvent) {
        match ev {
            MediaEvent::Chunk { chunk, .. } => {
                self.chunks.fetch_sub(1, Ordering::AcqRel);
                self.bytes.fetch_sub(chunk.data.len(), Ordering::AcqRel);
            }
            MediaEvent::Error(_) | MediaEvent::Eos => {}
            _ => {
                self.notices.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

/// The sending side, cloned into every callback of one pipeline.
#[derive(Clone)]
pub struct EventTx {
    tx: mpsc::UnboundedSender<MediaEvent>,
    budget: Arc<Budget>,
}

/// The receiving side, owned by the stream's task.
pub struct EventRx {
    rx: mpsc::UnboundedReceiver<MediaEvent>,
    budget: Arc<Budget>,
}

/// A new bounded event channel.
pub fn channel() -> (EventTx, EventRx) {
    let (tx, rx) = mpsc::unbounded_channel();
    let budget = Arc::new(Budget::default());
    (
        EventTx {
            tx,
            budget: budget.clone(),
        },
        EventRx { rx, budget },
    )
}

/// Why a chunk was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Over budget: the packager is behind.
    Full,
    /// The receiver is gone: the pipeline is being torn down.
    Closed,
}

impl EventTx {
    /// Queues a notice, an error or the end of stream. Notices over their limit are
    /// dropped; returns whether the event was queued.
    pub fn send(&self, ev: MediaEvent) -> bool {
        debug_assert!(
            !matches!(ev, MediaEvent::Chunk { .. }),
            "chunks use try_chunk"
        );
        let notice = !matches!(ev, MediaEvent::Error(_) | MediaEvent::Eos);
        if notice && !Budget::take(&self.budget.notices, 1, MAX_NOTICES) {
            return false;
        }
        if self.tx.send(ev).is_err() {
            if notice {
                self.budget.notices.fetch_sub(1, Ordering::AcqRel);
            }
            return false;
        }
        true
    }

    /// Queues a chunk if the budget allows.
    ///
    /// # Errors
    /// [`Refused::Full`] over budget, [`Refused::Closed`] when the receiver is gone.
    pub fn try_chunk(&self, rendition: Arc<str>, chunk: MediaChunk) -> Result<(), Refused> {
        if self.tx.is_closed() {
            return Err(Refused::Closed);
        }
        let len = chunk.data.len();
        if !self.budget.take_chunk(len) {
            return Err(Refused::Full);
        }
        if self
            .tx
            .send(MediaEvent::Chunk { rendition, chunk })
            .is_err()
        {
            self.budget.chunks.fetch_sub(1, Ordering::AcqRel);
            self.budget.bytes.fetch_sub(len, Ordering::AcqRel);
            return Err(Refused::Closed);
        }
        Ok(())
    }
}

impl EventRx {
    /// Video chunks the pipeline has produced so far, whether queued or dropped.
    pub fn video_produced(&self) -> u64 {
        self.budget.video_produced.load(Ordering::Acquire)
    }

    /// Chunks dropped since the last call, by rendition.
    pub fn take_dropped(&self) -> BTreeMap<Arc<str>, u64> {
        std::mem::take(&mut *self.budget.dropped.lock().expect("not poisoned"))
    }

    /// The next event; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<MediaEvent> {
        let ev = self.rx.recv().await?;
        self.budget.give_back(&ev);
        Some(ev)
    }
}

/// One rendition's sender: drops what the budget refuses until the rendition can
/// restart cleanly at a segment start, and then announces the gap.
pub struct RenditionTx {
    tx: EventTx,
    rendition: Arc<str>,
    state: Mutex<Resync>,
}

#[derive(Default)]
struct Resync {
    /// Chunks dropped since the last one that went through; non-zero means resyncing.
    dropped: u64,
    /// The latest init segment, resent on resuming (the packager ignores a repeat).
    init: Option<MediaChunk>,
}

impl RenditionTx {
    /// A sender for `rendition`'s chunks.
    pub fn new(tx: EventTx, rendition: Arc<str>) -> Self {
        Self {
            tx,
            rendition,
            state: Mutex::new(Resync::default()),
        }
    }

    /// Sends one chunk in order, or drops it.
    ///
    /// # Errors
    /// [`Refused::Closed`] when the pipeline is being torn down.
    pub fn send(&self, chunk: MediaChunk) -> Result<(), Refused> {
        if *self.rendition != *super::AUDIO && chunk.kind != ChunkKind::Init {
            self.tx.budget.video_produced.fetch_add(1, Ordering::AcqRel);
        }
        let mut st = self.state.lock().expect("not poisoned");
        if chunk.kind == ChunkKind::Init {
            st.init = Some(chunk.clone());
        }
        if st.dropped > 0 {
            if chunk.kind != ChunkKind::SegmentStart {
                self.drop_one(&mut st);
                return Ok(());
            }
            // Resume: the gap first (it closes the open segment), then the init the
            // fragments refer to, then the segment start.
            let gap = MediaEvent::Gap {
                rendition: self.rendition.clone(),
                dropped: st.dropped,
            };
            if !self.tx.send(gap) {
                self.drop_one(&mut st);
                return Ok(());
            }
            st.dropped = 0;
            if let Some(init) = st.init.clone() {
                if !self.queue(&mut st, init)? {
                    return Ok(());
                }
            }
        }
        self.queue(&mut st, chunk).map(|_| ())
    }

    fn drop_one(&self, st: &mut Resync) {
        st.dropped += 1;
        *self
            .tx
            .budget
            .dropped
            .lock()
            .expect("not poisoned")
            .entry(self.rendition.clone())
            .or_default() += 1;
    }

    /// Whether the chunk was queued (`false`: dropped, and resyncing from now on).
    fn queue(&self, st: &mut Resync, chunk: MediaChunk) -> Result<bool, Refused> {
        match self.tx.try_chunk(self.rendition.clone(), chunk) {
            Ok(()) => Ok(true),
            Err(Refused::Full) => {
                if st.dropped == 0 {
                    tracing::warn!(rendition = %self.rendition, "packager behind: dropping media until the next keyframe");
                }
                self.drop_one(st);
                Ok(false)
            }
            Err(Refused::Closed) => Err(Refused::Closed),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;

    fn chunk(kind: ChunkKind, len: usize) -> MediaChunk {
        MediaChunk {
            kind,
            data: Bytes::from(vec![0u8; len]),
            pts: None,
            duration: Duration::from_millis(200),
            last_input: None,
            first_input: None,
        }
    }

    fn kinds(evs: &[MediaEvent]) -> Vec<String> {
        evs.iter()
            .map(|e| match e {
                MediaEvent::Chunk { chunk, .. } => format!("{:?}", chunk.kind),
                MediaEvent::Gap { dropped, .. } => format!("Gap{dropped}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    async fn drain(rx: &mut EventRx, n: usize) -> Vec<MediaEvent> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(rx.recv().await.expect("queued"));
        }
        out
    }

    #[tokio::test]
    async fn full_queue_drops_until_a_segment_start_then_announces_the_gap() {
        let (tx, mut rx) = channel();
        let r = RenditionTx::new(tx.clone(), "720p".into());
        r.send(chunk(ChunkKind::Init, 10)).unwrap();
        r.send(chunk(ChunkKind::SegmentStart, 10)).unwrap();
        for _ in 2..MAX_CHUNKS {
            r.send(chunk(ChunkKind::PartStart, 10)).unwrap();
        }
        // Over budget: these three are dropped, and so is the next part even once there
        // is room, because it depends on a lost one.
        for _ in 0..3 {
            r.send(chunk(ChunkKind::PartStart, 10)).unwrap();
        }
        let first = drain(&mut rx, MAX_CHUNKS).await;
        assert_eq!(kinds(&first[..2]), ["Init", "SegmentStart"]);
        r.send(chunk(ChunkKind::PartStart, 10)).unwrap();
        r.send(chunk(ChunkKind::SegmentStart, 10)).unwrap();
        r.send(chunk(ChunkKind::PartStart, 10)).unwrap();
        let resumed = drain(&mut rx, 4).await;
        assert_eq!(
            kinds(&resumed),
            ["Gap4", "Init", "SegmentStart", "PartStart"]
        );
        assert_eq!(rx.take_dropped().get("720p"), Some(&4));
        assert!(rx.take_dropped().is_empty());
        assert_eq!(rx.video_produced(), MAX_CHUNKS as u64 + 5);
        assert_eq!(tx.budget.chunks.load(Ordering::Acquire), 0);
        assert_eq!(tx.budget.bytes.load(Ordering::Acquire), 0);
        assert_eq!(tx.budget.notices.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn bytes_bound_the_queue_and_one_huge_chunk_still_passes_alone() {
        let (tx, mut rx) = channel();
        tx.try_chunk("a".into(), chunk(ChunkKind::PartStart, MAX_BYTES + 1))
            .unwrap();
        assert_eq!(
            tx.try_chunk("a".into(), chunk(ChunkKind::PartStart, 1)),
            Err(Refused::Full)
        );
        drain(&mut rx, 1).await;
        tx.try_chunk("a".into(), chunk(ChunkKind::PartStart, MAX_BYTES / 2))
            .unwrap();
        tx.try_chunk("a".into(), chunk(ChunkKind::PartStart, MAX_BYTES / 2))
            .unwrap();
        assert_eq!(
            tx.try_chunk("a".into(), chunk(ChunkKind::PartStart, 1)),
            Err(Refused::Full)
        );
    }

    #[tokio::test]
    async fn errors_pass_when_notices_are_full_and_a_closed_receiver_is_reported() {
        let (tx, rx) = channel();
        for _ in 0..MAX_NOTICES {
            assert!(tx.send(MediaEvent::Stream { video: true }));
        }
        assert!(!tx.send(MediaEvent::Stream { video: true }));
        assert!(tx.send(MediaEvent::Eos));
        drop(rx);
        assert_eq!(
            tx.try_chunk("a".into(), chunk(ChunkKind::PartStart, 1)),
            Err(Refused::Closed)
        );
        assert!(!tx.send(MediaEvent::Eos));
    }
}
