//! The chunk and fragment durations cmafmux is given for a part and segment target.

use std::time::Duration;

/// What a video chunk is shortened by, so cmafmux closes it on the first frame past it.
///
/// cmafmux (gst-plugin-fmp4 0.14, `check_stream_filled`) finishes a chunk only once it
/// holds a frame that starts *more than* the chunk duration after the chunk start. With a
/// chunk of exactly the part target (200 ms = 6 frames at 30 fps), the first frame of the
/// next part starts exactly there, so the chunk waited for the frame after it: a part was
/// published two frame intervals after its last frame arrived, not one. 100 µs is far
/// below any frame interval and above nanosecond rounding of 90 kHz timestamps.
const NUDGE: Duration = Duration::from_micros(100);

/// The shortest part target whose passthrough is cut into half-part chunks.
pub(super) const MIN_HALVED: Duration = Duration::from_millis(180);

/// What a `cmafmux ! appsink` branch carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Track {
    Audio,
    /// The contribution's own video, which may have B-frames.
    Passthrough,
    /// An encoded rung (no B-frames).
    Rung,
}

/// cmafmux closes a chunk at the first sample boundary at or past its chunk duration, and
/// a fragment only at a chunk boundary. Encoded rungs get chunks of the part target (less
/// [`NUDGE`]), which divides the segment target and is a whole number of frames at
/// 25/30/50/60 fps, so keyframes fall on chunk boundaries. A passthrough gets half that,
/// joined into parts by `chunks::Parts`: with B-frames a chunk can hold more than its
/// duration's worth of frames. AAC frames (1024 samples) never divide the part target, so
/// audio asks for 85 %: its parts then stay within `PART-TARGET` at 44.1 and 48 kHz, as
/// the draft requires.
pub(super) fn chunk_duration(part_target: Duration, track: Track) -> Duration {
    match track {
        Track::Audio => part_target.mul_f64(0.85),
        // Halves of at least three frames at 30 fps; a shorter half would hold two, and
        // two halves of two frames never fit a part of three.
        Track::Passthrough if part_target >= MIN_HALVED => (part_target - NUDGE) / 2,
        Track::Passthrough => part_target - NUDGE,
        Track::Rung => part_target - NUDGE,
    }
}

/// The fragment duration: the segment target, shortened by one [`NUDGE`] per whole part
/// in it, so a fragment's nominal end is its last video chunk's end and cmafmux closes
/// the fragment on the next keyframe itself (every rendition, audio too, gets the same
/// value, so segments stay aligned). cmafmux starts each fragment at the keyframe it
/// drained up to, so the nudges never add up across segments.
pub(super) fn fragment_duration(part_target: Duration, segment_target: Duration) -> Duration {
    let parts = (segment_target.as_nanos() / part_target.as_nanos().max(1)) as u32;
    segment_target.saturating_sub(NUDGE * parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_duration_keeps_common_parts_within_target() {
        // 100 ms is no whole number of 25 fps frames (40 ms): such parts are 120 ms, which
        // README states; every other pair here fits.
        let rates = [30.0, 25.0, 50.0, 60.0];
        for t in [Duration::from_millis(100), Duration::from_millis(200)] {
            let video = rates
                .iter()
                .filter(|&&fps| t.as_millis() == 200 || fps != 25.0)
                .flat_map(|fps| [(1.0 / fps, Track::Rung), (1.0 / fps, Track::Passthrough)]);
            let audio = [
                (1024.0 / 44100.0, Track::Audio),
                (1024.0 / 48000.0, Track::Audio),
            ];
            for (frame, track) in video.chain(audio) {
                let c = chunk_duration(t, track);
                let frames = (c.as_secs_f64() / frame - 1e-9).ceil();
                assert!(
                    frames * frame <= t.as_secs_f64() + 1e-9,
                    "frame {frame}: {} s",
                    frames * frame
                );
            }
        }
    }

    #[test]
    fn the_last_chunk_ends_where_the_fragment_does() {
        for (part, seg) in [(100, 1000), (200, 1000), (200, 2000), (100, 2000)] {
            let (p, s) = (Duration::from_millis(part), Duration::from_millis(seg));
            let chunk = chunk_duration(p, Track::Rung);
            assert_eq!(chunk * (seg / part) as u32, fragment_duration(p, s));
            let pass = chunk_duration(p, Track::Passthrough);
            let halves = if p >= MIN_HALVED { 2 } else { 1 };
            assert_eq!(pass * halves * (seg / part) as u32, fragment_duration(p, s));
            // Every video frame boundary of the segment stays on the same side of a chunk
            // boundary as without the nudge, at 60 fps too.
            assert!(NUDGE * (seg / part) as u32 * 60 < Duration::from_secs(1));
        }
    }
}
