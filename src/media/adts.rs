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
pub fn format_of(data: &[u8]) -> Option<AdtsFormat> {
    let mut at = 0;
    let mut found = None;
    while at + 7 <= data.len() {
        let h = &data[at..at + 7];
        if h[0] != 0xFF || h[1] & 0xF0 != 0xF0 {
            break;
        }
        let f = AdtsFormat {
            rate_index: (h[2] >> 2) & 0x0F,
            channels: ((h[2] & 0x01) << 2) | (h[3] >> 6),
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
    }
    found
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
    pending: Option<(AdtsFormat, u32)>,
}

/// Buffers a new format must last before it counts as a real change (PES packets, each one
/// or a few AAC frames: about half a second).
pub const CONFIRM: u32 = 20;

impl Guard {
    /// Judges one buffer's payload.
    pub fn check(&mut self, data: &[u8]) -> Verdict {
        let Some(f) = format_of(data) else {
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
                *n += 1;
                *n
            }
            _ => {
                self.pending = Some((f, 1));
                1
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
    }
}
