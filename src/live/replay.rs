//! The last few seconds of an MPEG-TS contribution, and where in them a mid-stream change
//! began. When the source changes (a new PAT or PMT: other PIDs, another program, another
//! codec; or a timestamp jump: an encoder restart behind a gateway), the pipeline is
//! rebuilt; without this the new pipeline would start from whatever arrives after the
//! rebuild and wait for the next keyframe, losing up to a GOP. With it, the new pipeline
//! is fed from the change itself (behind the current PAT and PMT), so nothing of the new
//! source is lost.
//!
//! A change of video format (size, frame rate, profile) shows as new parameter sets at a
//! keyframe, and the new pipeline starts at that keyframe. A change of audio format
//! (sample rate, channels) is found in the ADTS headers; the
//! pipeline's own guard confirms it. The new pipeline is then fed from the last video
//! keyframe before the change, without the old audio in between, so the video loses
//! nothing either.
//!
//! Only changes that damage cannot fake are marked: PSI sections must pass their CRC, a
//! PTS jump counts only once the PCR jumps with it or the next PES continues from it, and
//! an audio or video change is used only when the pipeline itself reports that change.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use bytes::Bytes;

use crate::media::{
    adts::{self, AdtsFormat},
    ts::{self, TS},
    Change,
};

/// Input kept for a replay: enough to reach back from a change to its detection.
const KEEP: Duration = Duration::from_secs(4);
const KEEP_BYTES: usize = 32 * 1024 * 1024;
/// A change older than this is not what a rebuild is for.
const MARK_TTL: Duration = Duration::from_secs(3);
/// PTS steps that count as a jump (the pipeline's own thresholds, in 90 kHz ticks).
const JUMP_FORWARD: i64 = 3 * 90_000;
const JUMP_BACK: i64 = -45_000;
/// How close the PCR's jump must be to the PTS's for the two to confirm each other.
const JUMP_MATCH: i64 = 90_000;

/// Where a change began, and the PSI packets in force there.
struct Mark {
    at: u64,
    when: Instant,
    why: &'static str,
    psi: Vec<Bytes>,
}

/// An audio format that differs from the established one, from the PES at `at` on.
struct AudioChange {
    at: u64,
    when: Instant,
    format: AdtsFormat,
    psi: Vec<Bytes>,
}

/// A PTS jump not confirmed yet.
struct Jump {
    at: u64,
    pts: u64,
    step: i64,
}

/// What [`Replay::take`] gives back: the cause and the bytes to feed a new pipeline.
pub(crate) struct Resume {
    pub why: &'static str,
    pub data: Vec<Bytes>,
}

/// The kept input and what was read from it.
#[derive(Default)]
pub(crate) struct Replay {
    chunks: VecDeque<(u64, Instant, Bytes)>,
    held: usize,
    end: u64,
    /// An incomplete packet from the previous chunk, starting at offset `carry_at`.
    carry: Vec<u8>,
    carry_at: u64,
    /// Bytes before each packet's sync byte: 0 for TS, 4 for M2TS; `None` before sync.
    lead: Option<usize>,
    pat: Option<(Vec<u8>, Bytes)>,
    pmts: HashMap<u16, (Vec<u8>, Bytes)>,
    pmt_pids: Vec<u16>,
    /// What the first program's PMT lists.
    prog: Option<ts::Program>,
    /// The parameter sets of the latest keyframe that had them whole.
    params: Option<Vec<u8>>,
    video_change: Option<Mark>,
    audio: Option<AdtsFormat>,
    audio_change: Option<AudioChange>,
    last_pts: Option<u64>,
    last_pcr: Option<u64>,
    /// The latest PCR jump: (offset, step).
    pcr_jump: Option<(u64, i64)>,
    pending: Option<Jump>,
    mark: Option<Mark>,
}

impl Replay {
    /// Keeps `data` and reads the packets it completes.
    pub fn observe(&mut self, data: &Bytes) {
        let now = Instant::now();
        self.chunks.push_back((self.end, now, data.clone()));
        self.held += data.len();
        while self.chunks.len() > 1
            && (self.held > KEEP_BYTES
                || self
                    .chunks
                    .front()
                    .is_some_and(|c| now.duration_since(c.1) > KEEP))
        {
            let (_, _, c) = self.chunks.pop_front().expect("not empty");
            self.held -= c.len();
        }
        // Read in place; only a packet split across chunks is copied.
        let (buf, base): (std::borrow::Cow<[u8]>, u64) = if self.carry.is_empty() {
            (std::borrow::Cow::Borrowed(&data[..]), self.end)
        } else {
            let mut b = std::mem::take(&mut self.carry);
            b.extend_from_slice(data);
            (std::borrow::Cow::Owned(b), self.carry_at)
        };
        self.end += data.len() as u64;
        let mut i = 0;
        loop {
            let lead = match self.lead {
                Some(l) if buf.get(i + l) == Some(&0x47) => l,
                _ => match sync(&buf[i..]) {
                    Some((skip, l)) => {
                        i += skip;
                        self.lead = Some(l);
                        l
                    }
                    None => break,
                },
            };
            let stride = TS + lead;
            if i + stride > buf.len() {
                break;
            }
            self.packet(&buf[i..i + stride], lead, base + i as u64);
            i += stride;
        }
        // Keep an incomplete packet (or what sync needs) for the next chunk; of junk that
        // never syncs only the tail is kept.
        if buf.len() - i > 4 * (TS + 4) {
            i = buf.len() - 3 * (TS + 4);
        }
        self.carry = buf[i..].to_vec();
        self.carry_at = base + i as u64;
    }

    fn packet(&mut self, raw: &[u8], lead: usize, at: u64) {
        let Some(p) = ts::packet(&raw[lead..]) else {
            return;
        };
        if p.start && p.pid == 0 {
            if let Some(s) = ts::section(p.payload) {
                if self.pat.as_ref().is_none_or(|(old, _)| old != s) {
                    let changed = self.pat.is_some();
                    self.pat = Some((s.to_vec(), Bytes::copy_from_slice(raw)));
                    self.pmt_pids = ts::pat_pmt_pids(s);
                    if changed {
                        self.changed(at, "PAT changed");
                    }
                }
            }
            return;
        }
        if p.start && self.pmt_pids.contains(&p.pid) {
            if let Some(s) = ts::section(p.payload) {
                let old = self.pmts.get(&p.pid).map(|(o, _)| o.as_slice());
                if old != Some(s) {
                    let changed = old.is_some();
                    self.pmts
                        .insert(p.pid, (s.to_vec(), Bytes::copy_from_slice(raw)));
                    if self.pmt_pids.first() == Some(&p.pid) {
                        self.prog = ts::pmt(s);
                    }
                    if changed {
                        self.changed(at, "PMT changed");
                    }
                }
            }
            return;
        }
        let Some(prog) = self.prog else {
            return;
        };
        if p.start && Some(p.pid) == prog.audio {
            self.on_audio(at, p.payload);
        }
        if p.pid == prog.pcr {
            if let Some(pcr) = p.pcr {
                if let Some(last) = self.last_pcr {
                    let step = ts::step(last, pcr);
                    if !(JUMP_BACK..=JUMP_FORWARD).contains(&step) {
                        self.pcr_jump = Some((at, step));
                    }
                }
                self.last_pcr = Some(pcr);
            }
        }
        if p.start && Some(p.pid) == prog.video {
            if p.rai {
                let params = ts::pes_data(p.payload).and_then(|es| ts::param_sets(prog.hevc, es));
                if let Some(params) = params {
                    if self.params.as_ref().is_some_and(|old| *old != params) {
                        self.video_change = Some(Mark {
                            at,
                            when: Instant::now(),
                            why: "video format changed",
                            psi: self.psi(),
                        });
                    }
                    self.params = Some(params);
                }
            }
            if let Some(pts) = ts::pes_pts(p.payload) {
                self.on_pts(at, pts);
            }
        }
        self.confirm_jump();
    }

    fn on_audio(&mut self, at: u64, payload: &[u8]) {
        let Some(f) = ts::pes_data(payload).and_then(adts::header_format) else {
            return;
        };
        match self.audio {
            None => self.audio = Some(f),
            Some(est) if est == f => self.audio_change = None,
            Some(_) => {
                if self.audio_change.as_ref().is_none_or(|c| c.format != f) {
                    self.audio_change = Some(AudioChange {
                        at,
                        when: Instant::now(),
                        format: f,
                        psi: self.psi(),
                    });
                }
            }
        }
    }

    fn psi(&self) -> Vec<Bytes> {
        let mut psi: Vec<Bytes> = self.pat.iter().map(|(_, p)| p.clone()).collect();
        psi.extend(
            self.pmt_pids
                .iter()
                .filter_map(|pid| self.pmts.get(pid).map(|(_, p)| p.clone())),
        );
        psi
    }

    fn on_pts(&mut self, at: u64, pts: u64) {
        let Some(last) = self.last_pts else {
            self.last_pts = Some(pts);
            return;
        };
        let step = ts::step(last, pts);
        if (JUMP_BACK..=JUMP_FORWARD).contains(&step) {
            // The old timeline goes on: a pending jump was a damaged header.
            self.pending = None;
            self.last_pts = Some(pts);
            return;
        }
        if let Some(j) = &self.pending {
            if (JUMP_BACK..=JUMP_FORWARD).contains(&ts::step(j.pts, pts)) {
                let at = j.at;
                self.pending = None;
                self.last_pts = Some(pts);
                self.changed(at, "timestamp jump");
                return;
            }
        }
        self.pending = Some(Jump { at, pts, step });
    }

    fn confirm_jump(&mut self) {
        let (Some(j), Some((_, pcr_step))) = (&self.pending, self.pcr_jump) else {
            return;
        };
        if (j.step - pcr_step).abs() <= JUMP_MATCH {
            let (at, pts) = (j.at, j.pts);
            self.pending = None;
            self.pcr_jump = None;
            self.last_pts = Some(pts);
            self.changed(at, "timestamp jump");
        }
    }

    fn changed(&mut self, at: u64, why: &'static str) {
        let psi = self.psi();
        // A new program: timestamps, keyframes and audio are followed afresh.
        if why != "timestamp jump" {
            self.last_pts = None;
            self.last_pcr = None;
            self.pending = None;
            self.pcr_jump = None;
            self.params = None;
            self.video_change = None;
            self.audio = None;
            self.audio_change = None;
        }
        self.mark = Some(Mark {
            at,
            when: Instant::now(),
            why,
            psi,
        });
    }

    /// The input from the latest change on, behind the PAT and PMT in force there, if a
    /// change was seen lately and its start is still kept. Each change is given once.
    pub fn take(&mut self, cause: Change) -> Option<Resume> {
        let m = match cause {
            Change::Audio => {
                let c = self.audio_change.take()?;
                self.audio = Some(c.format);
                self.mark = None;
                Mark {
                    at: c.at,
                    when: c.when,
                    why: "audio format changed",
                    psi: c.psi,
                }
            }
            Change::Video => {
                self.mark = None;
                self.video_change.take()?
            }
            _ => self.mark.take()?,
        };
        if m.when.elapsed() > MARK_TTL || m.at < self.chunks.front()?.0 {
            return None;
        }
        let mut data = m.psi;
        data.extend(self.kept_from(m.at));
        Some(Resume { why: m.why, data })
    }

    /// The kept input from offset `at` on.
    fn kept_from(&self, at: u64) -> Vec<Bytes> {
        self.chunks
            .iter()
            .filter(|(start, _, c)| start + c.len() as u64 > at)
            .map(|(start, _, c)| c.slice(at.saturating_sub(*start) as usize..))
            .collect()
    }
}

/// Finds packet sync in `b`: (bytes to skip, lead) where three packets line up.
fn sync(b: &[u8]) -> Option<(usize, usize)> {
    for (skip, _) in b.iter().enumerate().filter(|(_, x)| **x == 0x47) {
        for (lead, stride) in [(0, TS), (4, TS + 4)] {
            if skip < lead {
                continue;
            }
            if (1..3).all(|k| b.get(skip + k * stride) == Some(&0x47)) {
                return Some((skip - lead, lead));
            }
        }
        if skip + 3 * (TS + 4) > b.len() {
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::ts::tests::{make_packet, pat, pes, pmt_packet, pmt_with};

    fn video(pts: u64, pcr: Option<u64>) -> Vec<u8> {
        make_packet(0x100, true, pcr, &pes(pts))
    }

    fn feed(r: &mut Replay, packets: &[Vec<u8>]) {
        // In chunks that split packets, as a network would.
        let all = packets.concat();
        for c in all.chunks(1000) {
            r.observe(&Bytes::copy_from_slice(c));
        }
    }

    fn start(r: &mut Replay) {
        let mut v = vec![pat(0x1000), pmt_packet(0x1000, 0x1B, 0x100)];
        for i in 0..30 {
            v.push(video(i * 3000, Some(i * 3000)));
        }
        feed(r, &v);
    }

    #[test]
    fn a_pmt_change_replays_from_the_new_pmt() {
        let mut r = Replay::default();
        start(&mut r);
        assert!(r.take(Change::Other).is_none(), "nothing changed yet");
        let before = r.end;
        let new = pmt_packet(0x1000, 0x24, 0x100);
        feed(&mut r, &[pat(0x1000), new.clone(), video(0, Some(0))]);
        let got = r.take(Change::Other).expect("the change is marked");
        assert_eq!(got.why, "PMT changed");
        let bytes: Vec<u8> = got.data.iter().flat_map(|b| b.to_vec()).collect();
        // PAT and the new PMT, then the input from the new PMT on.
        assert_eq!(&bytes[..TS], &pat(0x1000)[..]);
        assert_eq!(&bytes[TS..2 * TS], &new[..]);
        assert_eq!(
            bytes.len() as u64,
            2 * TS as u64 + (r.end - before - TS as u64)
        );
        assert!(r.take(Change::Other).is_none(), "given once");
    }

    #[test]
    fn a_damaged_pmt_is_no_change() {
        let mut r = Replay::default();
        start(&mut r);
        let mut bad = pmt_packet(0x1000, 0x24, 0x100);
        bad[20] ^= 1;
        feed(&mut r, &[bad]);
        assert!(r.take(Change::Other).is_none());
    }

    #[test]
    fn a_timestamp_jump_counts_when_the_pcr_jumps_with_it() {
        let mut r = Replay::default();
        start(&mut r);
        let jump = 90_000 * 3600;
        feed(&mut r, &[video(jump, Some(jump))]);
        let got = r.take(Change::Other).expect("jump marked");
        assert_eq!(got.why, "timestamp jump");
        assert_eq!(got.data.iter().map(Bytes::len).sum::<usize>(), 3 * TS);
    }

    #[test]
    fn a_lone_damaged_pts_is_no_jump() {
        let mut r = Replay::default();
        start(&mut r);
        // One PES with a wild PTS and no PCR, then the old timeline goes on.
        feed(&mut r, &[video(1 << 32, None), video(31 * 3000, None)]);
        assert!(r.take(Change::Other).is_none());
        // A jump whose next PES continues from it is real, PCR or not.
        feed(&mut r, &[video(5_000_000, None), video(5_003_000, None)]);
        assert_eq!(r.take(Change::Other).expect("jump").why, "timestamp jump");
    }

    #[test]
    fn m2ts_packets_are_read_too() {
        let mut r = Replay::default();
        let m2ts = |p: Vec<u8>| [vec![0, 0, 0, 0], p].concat();
        let mut v: Vec<Vec<u8>> = vec![m2ts(pat(0x1000)), m2ts(pmt_packet(0x1000, 0x1B, 0x100))];
        v.extend((0..5).map(|i| m2ts(video(i * 3000, None))));
        v.push(m2ts(pmt_packet(0x1000, 0x24, 0x100)));
        feed(&mut r, &v);
        let got = r.take(Change::Other).expect("change seen in M2TS");
        assert_eq!(got.data[0].len(), TS + 4);
    }

    /// An audio PES whose first ADTS header announces `rate_index`.
    fn audio(rate_index: u8) -> Vec<u8> {
        let mut pes = vec![0, 0, 1, 0xC0, 0, 0, 0x80, 0, 0];
        pes.extend_from_slice(&[0xFF, 0xF1, (1 << 6) | (rate_index << 2), 0x80, 0, 0, 0]);
        make_packet(0x101, true, None, &pes)
    }

    #[test]
    fn an_audio_change_replays_from_its_first_pes() {
        let mut r = Replay::default();
        let (old, new) = (audio(3), audio(4));
        let prelude = [
            pat(0x1000),
            pmt_with(0x1000, &[(0x1B, 0x100), (0x0F, 0x101)], 0x100),
        ];
        feed(&mut r, &prelude);
        feed(&mut r, &[old.clone(), video(0, Some(0)), old]);
        let plain = video(3000, None);
        feed(&mut r, &[new.clone(), plain.clone(), new.clone()]);
        assert!(
            r.take(Change::Other).is_none(),
            "an audio change is no PSI change"
        );
        let got = r.take(Change::Audio).expect("audio change");
        let bytes: Vec<u8> = got.data.iter().flat_map(|b| b.to_vec()).collect();
        assert_eq!(bytes, [prelude.concat(), new.clone(), plain, new].concat());
        assert!(r.take(Change::Audio).is_none(), "given once");
    }

    /// A keyframe whose access unit starts with an SPS ending in `tag`.
    fn keyframe(pts: u64, tag: u8) -> Vec<u8> {
        let es = [
            &[0, 0, 0, 1, 9, 0xF0][..],
            &[0, 0, 0, 1, 0x67, 0x42, 0xC0, tag],
            &[0, 0, 0, 1, 0x68, 0xCE],
            &[0, 0, 1, 0x65, 0x88],
        ]
        .concat();
        make_packet(0x100, true, Some(pts), &[pes(pts), es].concat())
    }

    #[test]
    fn a_video_change_replays_from_its_keyframe() {
        let mut r = Replay::default();
        feed(&mut r, &[pat(0x1000), pmt_packet(0x1000, 0x1B, 0x100)]);
        feed(
            &mut r,
            &[keyframe(0, 1), video(3000, None), keyframe(6000, 1)],
        );
        assert!(r.take(Change::Video).is_none(), "same parameter sets");
        let new = keyframe(9000, 2);
        feed(&mut r, &[new.clone(), video(12_000, None)]);
        assert!(
            r.take(Change::Other).is_none(),
            "a video change is no PSI change"
        );
        // Taking it for another cause cleared nothing of the video mark.
        let got = r.take(Change::Video).expect("video change");
        let bytes: Vec<u8> = got.data.iter().flat_map(|b| b.to_vec()).collect();
        assert_eq!(&bytes[2 * TS..3 * TS], &new[..]);
        assert_eq!(bytes.len(), 4 * TS);
    }
}
