//! Pad probes on a branch's elementary stream: what arrives damaged or out of step is
//! dropped or reported here, before it can fail cmafmux; arrival times are logged for the
//! latency metric and program date times.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use gst::prelude::*;

use super::{Arrivals, Ctx, ARRIVALS_KEPT};
use crate::media::{MediaError, MediaEvent};

/// tsdemux cannot stamp PES packets that come before the first PCR (ffmpeg's `tee` muxer
/// starts audio that way), and cmafmux refuses untimestamped buffers with a flow error.
/// Those leading buffers are dropped; after the first timestamped one the parsers
/// interpolate any PES without a PTS.
pub(super) fn drop_until_timestamped(q: &gst::Element) {
    let seen = std::sync::atomic::AtomicBool::new(false);
    q.static_pad("src").expect("queue has a src pad").add_probe(
        gst::PadProbeType::BUFFER,
        move |_, info| {
            use std::sync::atomic::Ordering;
            if seen.load(Ordering::Relaxed) {
                return gst::PadProbeReturn::Ok;
            }
            match info.buffer() {
                Some(b) if b.pts().is_some() || b.dts().is_some() => {
                    seen.store(true, Ordering::Relaxed);
                    gst::PadProbeReturn::Ok
                }
                _ => gst::PadProbeReturn::Drop,
            }
        },
    );
}

/// Guards ADTS audio before aacparse (see [`super::adts`]): damaged headers are dropped,
/// a format that really changed is reported so the pipeline is rebuilt for it.
pub(super) fn guard_adts(ctx: &Ctx, q: &gst::Element) {
    let tx = ctx.tx.clone();
    let guard = Mutex::new((crate::media::adts::Guard::default(), false));
    q.static_pad("src").expect("queue has a src pad").add_probe(
        gst::PadProbeType::BUFFER,
        move |_, info| {
            let Some(b) = info.buffer() else {
                return gst::PadProbeReturn::Ok;
            };
            let Ok(map) = b.map_readable() else {
                return gst::PadProbeReturn::Drop;
            };
            let mut g = guard.lock().expect("not poisoned");
            match g.0.check(map.as_slice()) {
                crate::media::adts::Verdict::Pass => gst::PadProbeReturn::Ok,
                crate::media::adts::Verdict::Drop => gst::PadProbeReturn::Drop,
                crate::media::adts::Verdict::Changed(from, to) => {
                    if !std::mem::replace(&mut g.1, true) {
                        let _ = tx.send(MediaEvent::Error(crate::media::adts::change_error(
                            from, to,
                        )));
                    }
                    gst::PadProbeReturn::Drop
                }
            }
        },
    );
}

/// A forward jump larger than this, or any backward jump larger than
/// [`TIMESTAMP_JUMP_BACK`], in one elementary stream's decode times is a timestamp
/// discontinuity (an encoder restart behind a gateway, a switcher cut).
const TIMESTAMP_JUMP_FORWARD: Duration = Duration::from_secs(3);
const TIMESTAMP_JUMP_BACK: Duration = Duration::from_millis(500);

/// Reports a timestamp jump as [`MediaError::SourceChanged`], so the pipeline is rebuilt
/// and the next segment carries a discontinuity, and drops what follows it: cmafmux would
/// otherwise make one chunk spanning the jump (an hour-long "part").
pub(super) fn watch_timestamps(ctx: &Ctx, element: &gst::Element, kind: &'static str) {
    let tx = ctx.tx.clone();
    let last = Mutex::new((None::<u64>, false));
    element
        .static_pad("src")
        .expect("element has a src pad")
        .add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let mut last = last.lock().expect("not poisoned");
            if last.1 {
                return gst::PadProbeReturn::Drop;
            }
            let Some(b) = info.buffer() else {
                return gst::PadProbeReturn::Ok;
            };
            if b.pts().is_none() {
                // A frame whose PES header was damaged carries no presentation time;
                // cmafmux fails the pipeline on it ("Require timestamped buffers").
                return gst::PadProbeReturn::Drop;
            }
            let segment = pad
                .sticky_event::<gst::event::Segment>(0)
                .and_then(|e| e.segment().downcast_ref::<gst::ClockTime>().cloned());
            // Decode order must never go back: DTS where the stream has it, and audio's
            // PTS (which is its decode order).
            let monotonic = b.dts().is_some() || kind == "audio";
            let t = b.dts().or(b.pts()).and_then(|t| match &segment {
                Some(seg) => seg.to_running_time(t),
                None => Some(t),
            });
            let Some(t) = t.map(|t| t.nseconds()) else {
                return gst::PadProbeReturn::Drop;
            };
            if let Some(prev) = last.0 {
                let fwd = t.saturating_sub(prev);
                let back = prev.saturating_sub(t);
                if back > 0 && back <= TIMESTAMP_JUMP_BACK.as_nanos() as u64 && monotonic {
                    // A damaged or repeated timestamp a little behind the last: cmafmux
                    // fails the pipeline on it ("Decreasing PTS"), so the frame goes.
                    return gst::PadProbeReturn::Drop;
                }
                if fwd > TIMESTAMP_JUMP_FORWARD.as_nanos() as u64
                    || back > TIMESTAMP_JUMP_BACK.as_nanos() as u64
                {
                    last.1 = true;
                    let secs = (t as f64 - prev as f64) / 1e9;
                    let _ = tx.send(MediaEvent::Error(MediaError::SourceChanged(format!(
                        "{kind} timestamps jumped by {secs:+.1} s"
                    ))));
                    return gst::PadProbeReturn::Drop;
                }
            }
            last.0 = Some(t);
            gst::PadProbeReturn::Ok
        });
}

pub(super) fn log_arrivals(q: &gst::Element) -> Arrivals {
    let arrivals: Arrivals = Arc::default();
    let log = arrivals.clone();
    q.static_pad("sink")
        .expect("queue has a sink pad")
        .add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let segment = pad
                .sticky_event::<gst::event::Segment>(0)
                .and_then(|e| e.segment().downcast_ref::<gst::ClockTime>().cloned());
            let pts = info.buffer().and_then(|b| b.pts());
            let rt = match (&segment, pts) {
                (Some(seg), Some(p)) => seg.to_running_time(p),
                (None, p) => p,
                _ => None,
            };
            if let Some(pts) = rt {
                let mut log = log.lock().expect("not poisoned");
                if log.len() >= ARRIVALS_KEPT {
                    log.pop_front();
                }
                log.push_back((pts.nseconds(), Instant::now()));
            }
            gst::PadProbeReturn::Ok
        });
    arrivals
}

/// Arrival times of the first and the last frame of a chunk spanning `[start, end)`.
pub(super) fn arrivals_of(
    log: &Mutex<VecDeque<(u64, Instant)>>,
    start: Duration,
    end: Duration,
) -> (Option<Instant>, Option<Instant>) {
    let (start, end) = (start.as_nanos() as u64, end.as_nanos() as u64);
    let log = log.lock().expect("not poisoned");
    let in_chunk = || log.iter().filter(|(p, _)| *p >= start && *p < end);
    let first = in_chunk().min_by_key(|(p, _)| *p).map(|(_, t)| *t);
    let last = in_chunk().map(|(_, t)| *t).max();
    (first, last)
}

/// Calls `f` with every caps event leaving `element`'s src pad (on the streaming thread,
/// before the buffers that follow it).
pub(super) fn on_caps(element: &gst::Element, f: impl FnMut(&gst::CapsRef) + Send + 'static) {
    // Probes are `Fn`; caps events on one pad are serialised, so the lock never waits.
    let f = Mutex::new(f);
    element
        .static_pad("src")
        .expect("element has a src pad")
        .add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
            if let Some(gst::PadProbeData::Event(ev)) = &info.data {
                if let gst::EventView::Caps(c) = ev.view() {
                    (f.lock().expect("not poisoned"))(c.caps());
                }
            }
            gst::PadProbeReturn::Ok
        });
}
