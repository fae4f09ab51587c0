//! A corpus of awkward contributions, made with ffmpeg the way broadcast equipment would
//! send them, and a paced sender that pushes one through srt-live-transmit (libsrt with
//! its default options) as a hardware encoder or SRT gateway would.
//!
//! Each input is two halves cut together at `HALF` seconds: the second half changes
//! something mid-stream (codec, PIDs, program, sample rate, timestamps), or the whole
//! input is unusual (M2TS packets, many tracks, corruption).

use std::{
    io::Read,
    net::UdpSocket,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::Publisher;

/// Seconds of media in each half.
pub const HALF: u32 = 10;

/// One kind of input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// H.264 then HEVC on the same PID, timestamps continuous.
    CodecChange,
    /// The second half's elementary streams and PMT on other PIDs.
    PidChange,
    /// The second half is another program (service id), on other PIDs.
    ProgramChange,
    /// Audio at 48 kHz, then 44.1 kHz.
    SampleRateChange,
    /// Stereo, then mono.
    ChannelChange,
    /// AAC, then MPEG-1 Layer II audio (which the node encodes to AAC).
    AudioCodecChange,
    /// 640x360, then 1280x720.
    ResolutionChange,
    /// 30 fps, then 25 fps.
    FrameRateChange,
    /// Timestamps jump forward by an hour (an encoder restart behind a gateway).
    JumpForward,
    /// Timestamps jump back by 5 s.
    JumpBack,
    /// 192-byte packets (a 4-byte arrival timestamp before each TS packet, as M2TS and
    /// some broadcast gear send).
    M2ts,
    /// One video and eight audio tracks.
    EightAudio,
    /// Two video tracks and one audio track.
    TwoVideo,
    /// PTS crossing the 2^33 wrap (26.5 h) about 8 s in.
    PtsWrap,
    /// One TS packet in 500 lost: continuity-counter errors.
    Continuity,
    /// 0.1 % of the bytes corrupted (after the first 100 kB).
    Corrupt,
}

impl Case {
    /// Every case.
    pub const ALL: [Case; 16] = [
        Case::CodecChange,
        Case::PidChange,
        Case::ProgramChange,
        Case::SampleRateChange,
        Case::ChannelChange,
        Case::AudioCodecChange,
        Case::ResolutionChange,
        Case::FrameRateChange,
        Case::JumpForward,
        Case::JumpBack,
        Case::M2ts,
        Case::EightAudio,
        Case::TwoVideo,
        Case::PtsWrap,
        Case::Continuity,
        Case::Corrupt,
    ];

    /// A stream name for the case.
    pub fn name(self) -> String {
        format!("{self:?}").to_lowercase()
    }

    /// Whether the input changes mid-stream, so a discontinuity is expected.
    pub fn changes(self) -> bool {
        !matches!(
            self,
            Case::M2ts
                | Case::EightAudio
                | Case::TwoVideo
                | Case::PtsWrap
                | Case::Continuity
                | Case::Corrupt
        )
    }
}

/// What one half looks like.
struct Half<'a> {
    vcodec: &'a [&'a str],
    acodec: &'a [&'a str],
    size: &'a str,
    /// Frames per second; the GOP is one second.
    fps: u32,
    rate: u32,
    channels: u32,
    /// `-output_ts_offset`, seconds.
    offset: u32,
    extra: &'a [&'a str],
    audio_tracks: u32,
    video_tracks: u32,
}

const H264: &[&str] = &[
    "-c:v",
    "libx264",
    "-preset",
    "ultrafast",
    "-tune",
    "zerolatency",
];
const AAC: &[&str] = &["-c:a", "aac", "-b:a", "96k"];
const MP2: &[&str] = &["-c:a", "mp2", "-b:a", "128k"];
const HEVC: &[&str] = &[
    "-c:v",
    "libx265",
    "-preset",
    "ultrafast",
    "-x265-params",
    "keyint=30:log-level=error",
    "-tag:v",
    "hvc1",
];

impl Default for Half<'_> {
    fn default() -> Self {
        Half {
            vcodec: H264,
            acodec: AAC,
            size: "640x360",
            fps: 30,
            rate: 48_000,
            channels: 2,
            offset: 0,
            extra: &[],
            audio_tracks: 1,
            video_tracks: 1,
        }
    }
}

fn encode(out: &Path, h: &Half) {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size={}:rate={}", h.size, h.fps),
        ])
        .args([
            "-f",
            "lavfi",
            "-i",
            &format!("sine=frequency=440:sample_rate={}:duration={HALF}", h.rate),
        ])
        .args(["-t", &HALF.to_string()]);
    for _ in 0..h.video_tracks {
        cmd.args(["-map", "0:v"]);
    }
    for _ in 0..h.audio_tracks {
        cmd.args(["-map", "1:a"]);
    }
    cmd.args(h.vcodec)
        .args(["-g", &h.fps.to_string()])
        .args(["-b:v", "800k"])
        .args(h.acodec)
        .args(["-ac", &h.channels.to_string()])
        .args(["-output_ts_offset", &h.offset.to_string()])
        .args(h.extra)
        .args(["-f", "mpegts"])
        .arg(out)
        .stdin(Stdio::null());
    let st = cmd.status().expect("ffmpeg");
    assert!(st.success(), "ffmpeg failed making {}", out.display());
}

/// Makes the input file for `case` in `dir` and returns its path.
pub fn make(dir: &Path, case: Case) -> PathBuf {
    let a = dir.join(format!("{}-a.ts", case.name()));
    let b = dir.join(format!("{}-b.ts", case.name()));
    let out = dir.join(format!("{}.ts", case.name()));
    let first = Half::default();
    let next = Half {
        offset: HALF,
        ..Half::default()
    };
    let (first, second) = match case {
        Case::CodecChange => (
            first,
            Some(Half {
                vcodec: HEVC,
                ..next
            }),
        ),
        Case::PidChange => (
            first,
            Some(Half {
                extra: &[
                    "-mpegts_start_pid",
                    "0x300",
                    "-mpegts_pmt_start_pid",
                    "0x1200",
                ],
                ..next
            }),
        ),
        Case::ProgramChange => (
            first,
            Some(Half {
                extra: &[
                    "-mpegts_service_id",
                    "7",
                    "-mpegts_start_pid",
                    "0x400",
                    "-mpegts_pmt_start_pid",
                    "0x1300",
                ],
                ..next
            }),
        ),
        Case::SampleRateChange => (
            first,
            Some(Half {
                rate: 44_100,
                ..next
            }),
        ),
        Case::ChannelChange => (
            first,
            Some(Half {
                channels: 1,
                ..next
            }),
        ),
        Case::AudioCodecChange => (
            first,
            Some(Half {
                acodec: MP2,
                ..next
            }),
        ),
        Case::ResolutionChange => (
            first,
            Some(Half {
                size: "1280x720",
                ..next
            }),
        ),
        Case::FrameRateChange => (first, Some(Half { fps: 25, ..next })),
        Case::JumpForward => (
            first,
            Some(Half {
                offset: HALF + 3600,
                ..next
            }),
        ),
        Case::JumpBack => (
            first,
            Some(Half {
                offset: HALF - 5,
                ..next
            }),
        ),
        Case::M2ts | Case::Continuity | Case::Corrupt => (first, Some(next)),
        Case::PtsWrap => {
            // 2^33 / 90 kHz = 95443.7 s; ffmpeg's muxer starts 1.4 s after the offset and
            // writes timestamps modulo 2^33.
            let wrap = (1u64 << 33) / 90_000;
            let offset = wrap as u32 - 9;
            (
                Half { offset, ..first },
                Some(Half {
                    offset: offset + HALF,
                    ..next
                }),
            )
        }
        Case::EightAudio => (
            Half {
                audio_tracks: 8,
                ..first
            },
            Some(Half {
                audio_tracks: 8,
                ..next
            }),
        ),
        Case::TwoVideo => (
            Half {
                video_tracks: 2,
                ..first
            },
            Some(Half {
                video_tracks: 2,
                ..next
            }),
        ),
    };
    encode(&a, &first);
    let mut bytes = std::fs::read(&a).unwrap();
    if let Some(h) = second {
        encode(&b, &h);
        bytes.extend(std::fs::read(&b).unwrap());
    }
    match case {
        Case::Corrupt => corrupt(&mut bytes, 0.001),
        Case::Continuity => {
            bytes = bytes
                .chunks(188)
                .enumerate()
                .filter(|(i, _)| i % 500 != 499)
                .flat_map(|(_, p)| p.to_vec())
                .collect();
        }
        Case::M2ts => {
            // A 27 MHz arrival clock in the low 30 bits, as M2TS's TP_extra_header has it.
            bytes = bytes
                .chunks(188)
                .enumerate()
                .flat_map(|(i, p)| {
                    let ats = ((i as u32).wrapping_mul(2700)) & 0x3FFF_FFFF;
                    ats.to_be_bytes().into_iter().chain(p.iter().copied())
                })
                .collect();
        }
        _ => {}
    }
    std::fs::write(&out, bytes).unwrap();
    out
}

/// Flips one bit in `fraction` of the bytes after the first 100 kB, at pseudo-random
/// places (a fixed seed, so every run sends the same damage).
fn corrupt(bytes: &mut [u8], fraction: f64) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let n = ((bytes.len() as f64) * fraction) as usize;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = 100_000 + (x as usize) % (bytes.len() - 100_000);
        bytes[i] ^= 1 << (x % 8);
    }
}

/// Pushes `file` over SRT to `srt_target` (`host:port`) as stream `streamid`: a thread
/// paces UDP datagrams of 7 TS packets to srt-live-transmit, which forwards them with
/// libsrt's defaults. The file's bytes are spread evenly over `secs` seconds.
pub fn push(file: &Path, srt_target: std::net::SocketAddr, streamid: &str, secs: u32) -> Publisher {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let slt = Command::new("srt-live-transmit")
        .args([
            "-q".to_string(),
            format!("udp://127.0.0.1:{port}"),
            format!("srt://{srt_target}?streamid={streamid}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("srt-live-transmit");
    let mut data = Vec::new();
    std::fs::File::open(file)
        .unwrap()
        .read_to_end(&mut data)
        .unwrap();
    std::thread::spawn(move || {
        // Let srt-live-transmit bind its UDP input and connect first.
        std::thread::sleep(Duration::from_millis(500));
        let start = Instant::now();
        let per_sec = data.len() as f64 / f64::from(secs);
        for (i, chunk) in data.chunks(1316).enumerate() {
            let due = start + Duration::from_secs_f64((i * 1316) as f64 / per_sec);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if udp.send_to(chunk, ("127.0.0.1", port)).is_err() {
                break;
            }
        }
    });
    Publisher(slt)
}

/// `secs_media` seconds of a normal contribution followed by `secs_null` seconds' worth
/// of TS null packets (PID 0x1FFF) at the same byte rate: a publisher whose encoder has
/// stopped while its SRT connection and packet flow go on.
pub fn media_then_null(dir: &Path, secs_media: u32, secs_null: u32) -> PathBuf {
    let a = dir.join("media.ts");
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
        .args(["-t", &secs_media.to_string()])
        .args(H264)
        .args(["-g", "30", "-b:v", "800k", "-f", "mpegts"])
        .arg(&a)
        .stdin(Stdio::null());
    assert!(cmd.status().expect("ffmpeg").success());
    let mut bytes = std::fs::read(&a).unwrap();
    let null_packets = bytes.len() / 188 * secs_null as usize / secs_media as usize;
    let mut null = [0xFFu8; 188];
    null[..4].copy_from_slice(&[0x47, 0x1F, 0xFF, 0x10]);
    for _ in 0..null_packets {
        bytes.extend_from_slice(&null);
    }
    let out = dir.join("media-then-null.ts");
    std::fs::write(&out, bytes).unwrap();
    out
}

/// A contribution joined mid-GOP whose encoder sends one keyframe (with its SPS/PPS) per
/// 100 s: `secs` seconds with no keyframe and no parameter sets at all.
pub fn no_keyframe(dir: &Path, secs: u32) -> PathBuf {
    let a = dir.join("long-gop.ts");
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
        .args(["-t", &(secs + 2).to_string()])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
        ])
        .args(["-g", "3000", "-keyint_min", "3000", "-sc_threshold", "0"])
        .args(["-b:v", "800k", "-f", "mpegts"])
        .arg(&a)
        .stdin(Stdio::null());
    assert!(cmd.status().expect("ffmpeg").success());
    let bytes = std::fs::read(&a).unwrap();
    // Skip the first two seconds (the only keyframe), on a packet boundary.
    let skip = (bytes.len() * 2 / (secs as usize + 2)) / 188 * 188;
    let out = dir.join("no-keyframe.ts");
    std::fs::write(&out, &bytes[skip..]).unwrap();
    out
}
