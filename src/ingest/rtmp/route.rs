//! Where a publisher's media goes: framed as FLV for `flvdemux` (legacy tags: H.264,
//! AAC, MP3...), or as elementary streams (Enhanced RTMP video and the AAC beside it).
//!
//! The first video tag decides. OBS sends its audio configuration before its video one,
//! so audio waits (a few tags, bounded) until then; an audio-only publisher is framed
//! as FLV once the wait is over.
//!
//! A changed codec configuration rebuilds the pipeline (the node cannot change an init
//! segment). The samples that follow it are kept (bounded) until then, so the rebuilt
//! pipeline starts at the change, with the keyframe that came with it, rather than a GOP
//! later.

use bytes::Bytes;

use super::{
    enhanced::{self, Audio, Refusal, Video},
    flv,
};
use crate::{live::Session, media::EsSample};

/// Audio tags held before the first video tag decides the path (about 6 s of AAC).
const PENDING_AUDIO: usize = 256;
/// Samples kept after a configuration change for the rebuilt pipeline (about 6 s of
/// 30 fps video with AAC); past that, the rebuild has long happened.
const SINCE_CHANGE: usize = 512;

enum Mode {
    /// No video yet: audio tags wait here.
    Pending(Vec<(u32, Bytes)>),
    /// Legacy FLV tags into `flvdemux`.
    Container,
    /// Enhanced RTMP: samples into the pipeline's elementary-stream sources.
    Elementary,
}

/// One publisher's media routing.
pub(super) struct Router {
    mode: Mode,
    /// The latest codec configurations (video, audio) with their timestamps: a rebuilt
    /// pipeline gets them again, or it would not know the codecs.
    headers: [Option<(u32, Bytes)>; 2],
    /// Elementary samples since a changed configuration, for the rebuilt pipeline.
    since_change: Option<Vec<EsSample>>,
    /// Whether dropping non-AAC audio beside extended video was logged.
    warned: bool,
}

impl Router {
    pub(super) fn new() -> Self {
        Self {
            mode: Mode::Pending(Vec::new()),
            headers: [None, None],
            since_change: None,
            warned: false,
        }
    }

    /// Routes one audio (`flv::AUDIO`) or video (`flv::VIDEO`) message body.
    ///
    /// # Errors
    /// A [`Refusal`] when the media cannot be carried: the publisher is disconnected.
    pub(super) fn media(
        &mut self,
        kind: u8,
        ts: u32,
        body: Bytes,
        session: &Session,
    ) -> Result<(), Refusal> {
        if kind == flv::AUDIO {
            enhanced::check_audio(&body)?;
            if let Mode::Pending(queue) = &mut self.mode {
                queue.push((ts, body));
                if queue.len() >= PENDING_AUDIO {
                    self.settle(false, session)?;
                }
                return Ok(());
            }
            return self.audio(ts, body, session);
        }
        let extended = enhanced::is_enhanced(&body);
        self.settle(extended, session)?;
        if !extended {
            if flv::is_sequence_header(kind, &body) {
                self.headers[0] = Some((ts, body.clone()));
            }
            push_tag(session, kind, ts, &body);
            return Ok(());
        }
        if let Video::Sample(sample) = enhanced::video(&body, ts)? {
            self.push_es(0, (ts, body), sample, session);
        }
        Ok(())
    }

    /// Passes an elementary sample on, keeping the configurations (slot 0 video, 1 audio)
    /// for a rebuilt pipeline and, after one changed, the samples that follow it.
    fn push_es(&mut self, slot: usize, tag: (u32, Bytes), sample: EsSample, session: &Session) {
        if let EsSample::Config { .. } = sample {
            if self.headers[slot]
                .as_ref()
                .is_some_and(|(_, h)| *h != tag.1)
            {
                self.since_change = Some(Vec::new());
            }
            self.headers[slot] = Some(tag);
        } else if let Some(kept) = &mut self.since_change {
            if kept.len() < SINCE_CHANGE {
                kept.push(sample.clone());
            } else {
                self.since_change = None;
            }
        }
        session.push_es(sample);
    }

    /// Feeds a rebuilt pipeline what it needs first: the FLV header, the latest codec
    /// configurations and what followed a configuration change.
    pub(super) fn replay(&mut self, session: &Session) {
        session.push(flv::header());
        for (kind, h) in [flv::VIDEO, flv::AUDIO]
            .into_iter()
            .zip(self.headers.clone())
        {
            if let Some((ts, body)) = h {
                // Known codecs only were stored, so nothing is refused here.
                let _ = self.media(kind, ts, body, session);
            }
        }
        for sample in self.since_change.take().unwrap_or_default() {
            session.push_es(sample);
        }
    }

    /// Fixes the path on the first video tag (or when audio waited long enough), then
    /// sends the waiting audio along it. A later change of path is refused.
    fn settle(&mut self, extended: bool, session: &Session) -> Result<(), Refusal> {
        match (&mut self.mode, extended) {
            (Mode::Pending(queue), _) => {
                let queue = std::mem::take(queue);
                self.mode = if extended {
                    tracing::info!("Enhanced RTMP video: taken as elementary streams");
                    Mode::Elementary
                } else {
                    Mode::Container
                };
                for (ts, body) in queue {
                    self.audio(ts, body, session)?;
                }
                Ok(())
            }
            (Mode::Container, false) | (Mode::Elementary, true) => Ok(()),
            _ => Err(Refusal::Switched),
        }
    }

    fn audio(&mut self, ts: u32, body: Bytes, session: &Session) -> Result<(), Refusal> {
        if !matches!(self.mode, Mode::Elementary) {
            if flv::is_sequence_header(flv::AUDIO, &body) {
                self.headers[1] = Some((ts, body.clone()));
            }
            push_tag(session, flv::AUDIO, ts, &body);
            return Ok(());
        }
        match enhanced::audio(&body, ts)? {
            Audio::Sample(sample) => self.push_es(1, (ts, body), sample, session),
            Audio::Other(format) if !std::mem::replace(&mut self.warned, true) => {
                tracing::warn!(
                    sound_format = format,
                    "audio beside Enhanced RTMP video must be AAC: this audio is dropped"
                );
            }
            Audio::Other(_) | Audio::Skip => {}
        }
        Ok(())
    }
}

fn push_tag(session: &Session, kind: u8, ts: u32, body: &[u8]) {
    if let Some(tag) = flv::tag(kind, ts, body) {
        session.push(tag);
    }
}
