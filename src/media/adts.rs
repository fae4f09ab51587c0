//! A guard for ADTS audio before it is parsed: a corrupted header (one flipped bit in its
//! sampling-rate or channel field) would make aacparse announce new caps for one frame,
//! which cmafmux refuses, failing the whole pipeline. The guard drops such blips and
//! reports a format that really changed, so the pipeline is rebuilt for it.

/// The format an ADTS header announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdtsFormat {
    /// `sampling_frequency_index`.
    pub rate_index: u8,
    /// `channel_configuration`.
    pub channels: u8,
}

/// The format of every ADTS frame in `data` (a PES payload), or `None` when the frames
/// disagree or `data` does not start with an ADTS header.
#[cfg(test)]
fn format_of(data: &[u8]) -> Option<AdtsFormat> {
    frames_of(data).map(|(f, _)| f)
}

/// The format every ADTS frame in `data` (a PES payload) announces, and how many frames
/// it holds; `None` when the frames disagree or `data` does not start with a header.
fn frames_of(data: &[u8]) -> Option<(AdtsFormat, u32)> {
    let mut at = 0;
    let mut found = None;
    let mut frames = 0;
    while at + 7 <= data.len() {
        let h = &data[at..at + 7];
        let Some(f) = header_format(h) else {
            break;
        };
        match found {
            None => found = Some(f),
            Some(prev) if prev != f => return None,
            Some(_) => {}
        }
        let len =
            (usize::from(h[3] & 0x03) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
        if len < 7 {
            return None;
        }
        at += len;
        frames += 1;
    }
    found.map(|f| (f, frames))
}

/// The format one ADTS header (at the start of `h`) announces.
pub fn header_format(h: &[u8]) -> Option<AdtsFormat> {
    if h.len() < 4 || h[0] != 0xFF || h[1] & 0xF0 != 0xF0 {
        return None;
    }
    Some(AdtsFormat {
        rate_index: (h[2] >> 2) & 0x0F,
        channels: ((h[2] & 0x01) << 2) | (h[3] >> 6),
    })
}

/// The error that rebuilds the pipeline for a confirmed change of audio format.
pub fn change_error(from: AdtsFormat, to: AdtsFormat) -> crate::media::MediaError {
    crate::media::format_changed(crate::media::Change::Audio, &format!("{from:?} -> {to:?}"))
}

/// What to do with one audio buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Same format as before: pass it on.
    Pass,
    /// A different format not (yet) confirmed: drop it.
    Drop,
    /// A different format has lasted long enough: a real change.
    Changed(AdtsFormat, AdtsFormat),
}

/// Tracks the established format and confirms changes.
#[derive(Debug, Default)]
pub struct Guard {
    established: Option<AdtsFormat>,
    /// A new format and the frames seen with it.
    pending: Option<(AdtsFormat, u32)>,
}

/// Frames a new format must last, all agreeing, before it counts as a real change (about
/// 230 ms at 44.1 kHz). Counted in frames, not PES packets: ffmpeg packs up to ten AAC
/// frames in one PES, and twenty of those would hold a real change back for 4.6 s. Damage
/// flips one header, which makes its PES disagree with itself; it never makes ten frames
/// agree on a new format.
pub const CONFIRM: u32 = 10;

impl Guard {
    /// Judges one buffer's payload.
    pub fn check(&mut self, data: &[u8]) -> Verdict {
        let Some((f, frames)) = frames_of(data) else {
            // Mixed formats inside one PES, or no header where one must be: damaged.
            return if self.established.is_some() {
                Verdict::Drop
            } else {
                Verdict::Pass
            };
        };
        let Some(est) = self.established else {
            self.established = Some(f);
            return Verdict::Pass;
        };
        if f == est {
            self.pending = None;
            return Verdict::Pass;
        }
        let n = match &mut self.pending {
            Some((p, n)) if *p == f => {
                *n += frames;
                *n
            }
            _ => {
                self.pending = Some((f, frames));
                frames
            }
        };
        if n >= CONFIRM {
            Verdict::Changed(est, f)
        } else {
            Verdict::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(rate_index: u8, channels: u8, len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[0] = 0xFF;
        f[1] = 0xF1;
        f[2] = (1 << 6) | (rate_index << 2) | (channels >> 2);
        f[3] = ((channels & 3) << 6) | ((len >> 11) as u8 & 3);
        f[4] = (len >> 3) as u8;
        f[5] = ((len & 7) as u8) << 5 | 0x1F;
        f[6] = 0xFC;
        f
    }

    #[test]
    fn formats_are_read_from_every_frame() {
        let a = frame(3, 2, 300);
        assert_eq!(
            format_of(&a),
            Some(AdtsFormat {
                rate_index: 3,
                channels: 2
            })
        );
        let two = [frame(3, 2, 200), frame(3, 2, 250)].concat();
        assert!(format_of(&two).is_some());
        let mixed = [frame(3, 2, 200), frame(4, 2, 250)].concat();
        assert_eq!(format_of(&mixed), None);
        assert_eq!(format_of(b"not adts at all"), None);
    }

    #[test]
    fn blips_are_dropped_and_real_changes_confirmed() {
        let mut g = Guard::default();
        let a = frame(3, 2, 300);
        let b = frame(4, 2, 300);
        assert_eq!(g.check(&a), Verdict::Pass);
        assert_eq!(g.check(&b), Verdict::Drop);
        assert_eq!(g.check(&a), Verdict::Pass);
        for _ in 1..CONFIRM {
            assert_eq!(g.check(&b), Verdict::Drop);
        }
        assert!(
            matches!(g.check(&b), Verdict::Changed(x, y) if x.rate_index == 3 && y.rate_index == 4)
        );
        // Ten frames of a new format in one PES are a change at once.
        let mut g = Guard::default();
        assert_eq!(g.check(&a), Verdict::Pass);
        let ten: Vec<u8> = (0..CONFIRM).flat_map(|_| frame(4, 1, 200)).collect();
        assert!(matches!(g.check(&ten), Verdict::Changed(_, y) if y.channels == 1));
    }
}
