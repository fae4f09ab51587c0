//! Just enough MPEG-TS reading to follow a contribution's structure from outside the
//! pipeline: packet sync (188-byte TS and 192-byte M2TS), PCR, PSI sections checked by
//! their CRC, PAT and PMT entries, and a PES header's PTS. [`crate::live`] uses it to
//! find where a mid-stream change begins, so a rebuilt pipeline can start from there.

use crc::{Crc, CRC_32_MPEG_2};

/// The size of a TS packet.
pub const TS: usize = 188;

/// PSI sections carry CRC-32/MPEG-2: a damaged section never passes for a changed one.
const CRC: Crc<u32> = Crc::<u32>::new(&CRC_32_MPEG_2);

/// One TS packet.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    /// Packet identifier.
    pub pid: u16,
    /// `payload_unit_start_indicator`: a PES or a section starts here.
    pub start: bool,
    /// The program clock reference's 90 kHz base, when the adaptation field has one.
    pub pcr: Option<u64>,
    /// `random_access_indicator`: a keyframe starts here (as ffmpeg and most encoders
    /// flag it).
    pub rai: bool,
    /// What follows the header and adaptation field.
    pub payload: &'a [u8],
}

/// Parses one 188-byte packet; `None` when it does not start with the sync byte or its
/// adaptation field does not fit.
pub fn packet(p: &[u8]) -> Option<Packet<'_>> {
    if p.len() < TS || p[0] != 0x47 {
        return None;
    }
    let pid = (u16::from(p[1] & 0x1F) << 8) | u16::from(p[2]);
    let start = p[1] & 0x40 != 0;
    let afc = (p[3] >> 4) & 3;
    let mut at = 4;
    let mut pcr = None;
    let mut rai = false;
    if afc & 2 != 0 {
        let len = usize::from(p[4]);
        if 5 + len > TS {
            return None;
        }
        rai = len >= 1 && p[5] & 0x40 != 0;
        if len >= 7 && p[5] & 0x10 != 0 {
            let b = &p[6..11];
            pcr = Some(
                (u64::from(b[0]) << 25)
                    | (u64::from(b[1]) << 17)
                    | (u64::from(b[2]) << 9)
                    | (u64::from(b[3]) << 1)
                    | (u64::from(b[4]) >> 7),
            );
        }
        at = 5 + len;
    }
    let payload = if afc & 1 != 0 { &p[at..TS] } else { &[][..] };
    Some(Packet {
        pid,
        start,
        pcr,
        rai,
        payload,
    })
}

/// The complete PSI section that starts in `payload` (of a packet with `start` set),
/// CRC included, if it fits in this packet and its CRC is right.
pub fn section(payload: &[u8]) -> Option<&[u8]> {
    let pointer = usize::from(*payload.first()?);
    let s = payload.get(1 + pointer..)?;
    if s.len() < 3 {
        return None;
    }
    let total = 3 + ((usize::from(s[1] & 0x0F) << 8) | usize::from(s[2]));
    let s = s.get(..total)?;
    if total < 12 {
        return None;
    }
    let (body, crc) = s.split_at(total - 4);
    (CRC.checksum(body) == u32::from_be_bytes(crc.try_into().ok()?)).then_some(s)
}

/// The PMT PIDs a PAT section lists (program 0, the network PID, left out).
pub fn pat_pmt_pids(s: &[u8]) -> Vec<u16> {
    if s.first() != Some(&0) {
        return Vec::new();
    }
    s[8..s.len() - 4]
        .chunks_exact(4)
        .filter(|e| e[0] != 0 || e[1] != 0)
        .map(|e| (u16::from(e[2] & 0x1F) << 8) | u16::from(e[3]))
        .collect()
}

/// What a PMT lists that the replay follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Program {
    /// The first video elementary stream (H.264, HEVC or MPEG-2/4 video).
    pub video: Option<u16>,
    /// Whether that video is HEVC (else H.264 for [`param_sets`]).
    pub hevc: bool,
    /// The first ADTS AAC elementary stream.
    pub audio: Option<u16>,
    /// The PCR PID.
    pub pcr: u16,
}

/// Reads a PMT section.
pub fn pmt(s: &[u8]) -> Option<Program> {
    if s.first() != Some(&2) || s.len() < 16 {
        return None;
    }
    let mut prog = Program {
        video: None,
        hevc: false,
        audio: None,
        pcr: (u16::from(s[8] & 0x1F) << 8) | u16::from(s[9]),
    };
    let mut at = 12 + ((usize::from(s[10] & 0x0F) << 8) | usize::from(s[11]));
    let end = s.len() - 4;
    while at + 5 <= end {
        let kind = s[at];
        let pid = (u16::from(s[at + 1] & 0x1F) << 8) | u16::from(s[at + 2]);
        match kind {
            0x01 | 0x02 | 0x10 | 0x1B | 0x24 if prog.video.is_none() => {
                prog.video = Some(pid);
                prog.hevc = kind == 0x24;
            }
            0x0F if prog.audio.is_none() => prog.audio = Some(pid),
            _ => {}
        }
        at += 5 + ((usize::from(s[at + 3] & 0x0F) << 8) | usize::from(s[at + 4]));
    }
    Some(prog)
}

/// The elementary-stream bytes after the PES header that starts `payload`.
pub fn pes_data(payload: &[u8]) -> Option<&[u8]> {
    if payload.len() < 9 || payload[..3] != [0, 0, 1] {
        return None;
    }
    payload.get(9 + usize::from(payload[8])..)
}

/// The sequence parameter sets (and HEVC's video parameter sets) that `es`, the start of
/// a keyframe's access unit, holds whole: what a change of size, frame rate, profile or
/// codec settings changes. `None` when no whole SPS is in `es`.
pub fn param_sets(hevc: bool, es: &[u8]) -> Option<Vec<u8>> {
    let starts: Vec<usize> = es
        .windows(3)
        .enumerate()
        .filter(|(_, w)| *w == [0, 0, 1])
        .map(|(i, _)| i + 3)
        .collect();
    let mut out = Vec::new();
    let mut sps = false;
    for (n, &at) in starts.iter().enumerate() {
        // A NAL is whole when another start code follows it here.
        let Some(&next) = starts.get(n + 1) else {
            break;
        };
        let Some(&head) = es.get(at) else {
            break;
        };
        let kind = if hevc {
            (head >> 1) & 0x3F
        } else {
            head & 0x1F
        };
        let is_sps = if hevc { kind == 33 } else { kind == 7 };
        if is_sps || (hevc && kind == 32) {
            sps |= is_sps;
            out.extend_from_slice(&es[at..next - 3]);
        }
    }
    sps.then_some(out)
}

/// The 90 kHz PTS of the PES header that starts `payload`, if it has one.
pub fn pes_pts(payload: &[u8]) -> Option<u64> {
    if payload.len() < 14 || payload[..3] != [0, 0, 1] || payload[7] & 0x80 == 0 {
        return None;
    }
    let b = &payload[9..14];
    Some(
        (u64::from((b[0] >> 1) & 7) << 30)
            | (u64::from(b[1]) << 22)
            | (u64::from(b[2] >> 1) << 15)
            | (u64::from(b[3]) << 7)
            | (u64::from(b[4]) >> 1),
    )
}

/// `b - a` on the 33-bit 90 kHz clock, as a signed step (a wrap at 2^33 is a small step).
pub fn step(a: u64, b: u64) -> i64 {
    const WRAP: i64 = 1 << 33;
    let d = (b as i64 - a as i64).rem_euclid(WRAP);
    if d >= WRAP / 2 {
        d - WRAP
    } else {
        d
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A packet on `pid` carrying `payload` (padded with 0xFF), with an adaptation field
    /// holding `pcr` and the random-access flag when `pcr` is given (a keyframe).
    pub fn make_packet(pid: u16, start: bool, pcr: Option<u64>, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x47, ((pid >> 8) as u8 & 0x1F), pid as u8, 0x10];
        if start {
            p[1] |= 0x40;
        }
        if let Some(pcr) = pcr {
            p[3] = 0x30;
            p.extend_from_slice(&[
                7,
                0x50,
                (pcr >> 25) as u8,
                (pcr >> 17) as u8,
                (pcr >> 9) as u8,
                (pcr >> 1) as u8,
                ((pcr & 1) as u8) << 7 | 0x7E,
                0,
            ]);
        }
        p.extend_from_slice(payload);
        p.resize(TS, 0xFF);
        p
    }

    /// A PSI section with a right CRC, behind a zero pointer field.
    pub fn psi(table: u8, body: &[u8]) -> Vec<u8> {
        let len = 5 + body.len() + 4;
        let mut s = vec![table, 0xB0 | (len >> 8) as u8, len as u8, 0, 1, 0xC1, 0, 0];
        s.extend_from_slice(body);
        let crc = CRC.checksum(&s);
        s.extend_from_slice(&crc.to_be_bytes());
        [vec![0], s].concat()
    }

    pub fn pat(pmt_pid: u16) -> Vec<u8> {
        make_packet(
            0,
            true,
            None,
            &psi(0, &[0, 1, 0xE0 | (pmt_pid >> 8) as u8, pmt_pid as u8]),
        )
    }

    pub fn pmt_packet(pid: u16, stream_type: u8, video: u16) -> Vec<u8> {
        pmt_with(pid, &[(stream_type, video)], video)
    }

    /// A PMT listing `streams` (type, PID), with `pcr` as the PCR PID.
    pub fn pmt_with(pid: u16, streams: &[(u8, u16)], pcr: u16) -> Vec<u8> {
        let mut body = vec![0xE0 | (pcr >> 8) as u8, pcr as u8, 0xF0, 0];
        for (kind, es) in streams {
            body.extend_from_slice(&[*kind, 0xE0 | (es >> 8) as u8, *es as u8, 0xF0, 0]);
        }
        make_packet(pid, true, None, &psi(2, &body))
    }

    pub fn pes(pts: u64) -> Vec<u8> {
        vec![
            0,
            0,
            1,
            0xE0,
            0,
            0,
            0x80,
            0x80,
            5,
            0x21 | (((pts >> 30) as u8 & 7) << 1),
            (pts >> 22) as u8,
            ((pts >> 15) as u8) << 1 | 1,
            (pts >> 7) as u8,
            (pts as u8) << 1 | 1,
        ]
    }

    #[test]
    fn reads_psi_pes_and_pcr() {
        let p = pat(0x1000);
        let s = section(packet(&p).unwrap().payload).unwrap();
        assert_eq!(pat_pmt_pids(s), vec![0x1000]);
        let p = pmt_packet(0x1000, 0x24, 0x100);
        let s = section(packet(&p).unwrap().payload).unwrap();
        assert_eq!(
            pmt(s),
            Some(Program {
                video: Some(0x100),
                hevc: true,
                audio: None,
                pcr: 0x100
            })
        );
        let p = make_packet(0x100, true, Some(123_456_789), &pes(8_589_934_000));
        let pk = packet(&p).unwrap();
        assert_eq!(pk.pcr, Some(123_456_789));
        assert!(pk.rai);
        assert_eq!(pes_pts(pk.payload), Some(8_589_934_000));
    }

    #[test]
    fn a_damaged_section_is_not_read() {
        let mut p = pmt_packet(0x1000, 0x1B, 0x100);
        p[12] ^= 0x04;
        assert!(section(packet(&p).unwrap().payload).is_none());
    }

    #[test]
    fn param_sets_are_read_whole() {
        let aud = [0, 0, 0, 1, 9, 0xF0];
        let sps = [0, 0, 0, 1, 0x67, 0x42, 0xC0, 0x1E, 0xAB];
        let pps = [0, 0, 0, 1, 0x68, 0xCE, 0x3C, 0x80];
        let idr = [0, 0, 1, 0x65, 0x88, 0x84];
        let au = [&aud[..], &sps, &pps, &idr].concat();
        assert_eq!(
            param_sets(false, &au),
            Some(vec![0x67, 0x42, 0xC0, 0x1E, 0xAB, 0])
        );
        // Cut inside the SPS: not whole, so not read.
        assert_eq!(param_sets(false, &au[..10]), None);
    }

    #[test]
    fn steps_cross_the_wrap() {
        assert_eq!(step((1 << 33) - 10, 20), 30);
        assert_eq!(step(20, (1 << 33) - 10), -30);
        assert_eq!(step(0, 90_000 * 3600), 90_000 * 3600);
    }
}
