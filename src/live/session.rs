//! A publisher's session: feeds the pipeline, rebuilds it when the source changes, and
//! parks the stream's state in the hub when it ends.

use std::{
    collections::VecDeque,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Hub, LiveStream, Progress, PublisherMeta, MAX_REBUILDS, REBUILD_WINDOW};
use crate::media::{EsSample, Input, MediaError, Pipeline};

/// One pipeline run inside a session.
pub(super) struct Run {
    pub(super) pipeline: Pipeline,
    pub(super) failed: CancellationToken,
    pub(super) stop: CancellationToken,
    pub(super) task: JoinHandle<(Box<LiveStream>, Option<MediaError>)>,
}

/// One publisher's session. Always end it with [`Session::finish`].
pub struct Session {
    pub(super) name: String,
    pub(super) hub: Arc<Hub>,
    /// The container the publisher sends; a rebuilt pipeline keeps it.
    pub(super) input: Input,
    pub(super) run: Option<Run>,
    pub(super) progress: Arc<Progress>,
    /// When the pipeline was rebuilt lately, for the rebuild limit.
    pub(super) rebuilds: VecDeque<Instant>,
    /// The config in force when the session started: a rebuild keeps its ladder.
    pub(super) cfg: Arc<crate::config::Config>,
    /// The last seconds of MPEG-TS input, so a rebuild starts where the change began.
    pub(super) replay: Option<std::sync::Mutex<super::replay::Replay>>,
}

impl Session {
    /// Feeds bytes (in the session's [`Input`] container) to the pipeline; never blocks.
    pub fn push(&self, data: Bytes) {
        if let Some(r) = &self.run {
            self.progress
                .input_bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            if let Some(replay) = &self.replay {
                replay.lock().expect("not poisoned").observe(&data);
            }
            r.pipeline.push(data);
        }
    }

    /// Feeds one elementary-stream sample (for input no demuxer reads); never blocks.
    pub fn push_es(&self, sample: EsSample) {
        if let Some(r) = &self.run {
            let len = match &sample {
                EsSample::Config { record, .. } => record.len(),
                EsSample::Frame { data, .. } => data.len(),
            };
            self.progress
                .input_bytes
                .fetch_add(len as u64, Ordering::Relaxed);
            r.pipeline.push_es(sample);
        }
    }

    /// What the session has done so far.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Records who publishes (shown by `/api/streams/{stream}`).
    pub fn describe(&self, protocol: &'static str, remote: std::net::SocketAddr) {
        let _ = self
            .progress
            .publisher
            .set(PublisherMeta { protocol, remote });
    }

    /// Cancelled when the media side has failed (or must be rebuilt).
    pub fn failed(&self) -> CancellationToken {
        self.run
            .as_ref()
            .map_or_else(CancellationToken::new, |r| r.failed.clone())
    }

    /// Stops the current run. `drain` sends EOS first so cmafmux flushes its last chunk.
    async fn stop_run(&mut self, drain: bool) -> Option<(Box<LiveStream>, Option<MediaError>)> {
        let Run {
            pipeline,
            failed,
            stop,
            mut task,
        } = self.run.take()?;
        // A failed pipeline has nothing worth draining: stop it at once, so a rebuild
        // loses as little as it can. Otherwise let cmafmux flush, but not for long.
        let joined = if drain && !failed.is_cancelled() {
            pipeline.end_of_stream();
            tokio::time::timeout(Duration::from_millis(500), &mut task)
                .await
                .ok()
        } else {
            None
        };
        pipeline.stop().await;
        stop.cancel();
        let result = match joined {
            Some(r) => r,
            None => task.await,
        };
        match result {
            Ok(r) => Some(r),
            Err(e) => {
                // The packaging task panicked: start the stream afresh next time.
                tracing::error!(stream = %self.name, error = %e, "packaging task failed");
                self.hub
                    .slots
                    .lock()
                    .expect("not poisoned")
                    .remove(&self.name);
                None
            }
        }
    }

    /// After [`Session::failed`] fired: when the source changed mid-stream (codec, size,
    /// PIDs, sample rate, a timestamp jump) or an element failed on what arrived, rebuilds
    /// the pipeline under the same publisher (the next segment gets a discontinuity and
    /// the MSN keeps counting) and returns `Ok` with the cause. Returns the error that
    /// ends the session when it cannot be recovered, or after too many rebuilds.
    pub async fn recover(&mut self) -> Result<MediaError, Option<MediaError>> {
        let Some((stream, err)) = self.stop_run(false).await else {
            return Err(None);
        };
        let now = Instant::now();
        while self
            .rebuilds
            .front()
            .is_some_and(|t| now.duration_since(*t) > REBUILD_WINDOW)
        {
            self.rebuilds.pop_front();
        }
        let recoverable = matches!(
            err,
            Some(MediaError::SourceChanged(_) | MediaError::Pipeline { .. })
        ) && self.rebuilds.len() < MAX_REBUILDS;
        let cause = match err {
            Some(cause) if recoverable => cause,
            other => {
                self.hub.release(&self.name, stream);
                return Err(other);
            }
        };
        self.rebuilds.push_back(now);
        match self.hub.start_run(
            &self.cfg,
            &self.name,
            self.input,
            stream,
            self.progress.clone(),
        ) {
            Ok(run) => {
                // Feed the new pipeline from where the change began, not from now.
                if let Some(resume) = self
                    .replay
                    .as_ref()
                    .and_then(|r| r.lock().expect("not poisoned").take(cause.change()))
                {
                    let bytes: usize = resume.data.iter().map(Bytes::len).sum();
                    tracing::info!(stream = %self.name, why = resume.why, bytes, "rebuilt pipeline starts at the change");
                    for b in resume.data {
                        run.pipeline.push(b);
                    }
                }
                self.run = Some(run);
                Ok(cause)
            }
            Err((e, stream)) => {
                self.hub.release(&self.name, stream);
                Err(Some(e))
            }
        }
    }

    /// Ends the session: drains the pipeline briefly, stops it, closes the open segment
    /// with a discontinuity to follow, and parks the stream state for a reconnect.
    /// Returns the media error that ended it, if any.
    pub async fn finish(mut self) -> Option<MediaError> {
        self.hub.metrics.publishers_active.dec();
        let (stream, err) = self.stop_run(true).await?;
        self.hub.release(&self.name, stream);
        err
    }
}
