//! The transcoding ladder (`[ladder]`, `[streams.NAME.ladder]`): rungs and their validation.

use serde::Deserialize;

use super::{invalid, ConfigError};

/// Video codec of a ladder rung.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RungCodec {
    /// H.264 with x264enc.
    H264,
    /// HEVC with x265enc, packaged as `hvc1`.
    H265,
}

/// Encoder speed presets both x264enc and x265enc accept.
pub const PRESETS: &[&str] = &[
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
];
/// Encoder tunes both x264enc and x265enc accept.
pub const TUNES: &[&str] = &[
    "zerolatency",
    "fastdecode",
    "psnr",
    "ssim",
    "grain",
    "animation",
];

/// A transcoding ladder.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LadderConfig {
    /// Keep the publisher's own video as the `source` rendition.
    pub passthrough: bool,
    /// Encoded renditions.
    pub rungs: Vec<RungConfig>,
}

impl Default for LadderConfig {
    fn default() -> Self {
        Self {
            passthrough: true,
            rungs: Vec::new(),
        }
    }
}

/// One encoded rendition. Its size is a bounding box: the source's aspect ratio is kept,
/// and a rung taller than the source is left out (never upscaled).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RungConfig {
    /// Name used in URLs (`/live/{stream}/{name}/index.m3u8`).
    pub name: String,
    /// `h264` or `h265`.
    pub codec: RungCodec,
    /// Largest width.
    pub width: u32,
    /// Largest height.
    pub height: u32,
    /// Frame-rate cap (frames are dropped above it).
    #[serde(default)]
    pub max_fps: Option<u32>,
    /// Target bit rate in kbit/s.
    pub bitrate_kbps: u32,
    /// Encoder speed preset.
    #[serde(default = "default_preset")]
    pub preset: String,
    /// Encoder tune.
    #[serde(default = "default_tune")]
    pub tune: String,
}

fn default_preset() -> String {
    "veryfast".into()
}

fn default_tune() -> String {
    "zerolatency".into()
}

impl LadderConfig {
    pub(super) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if !self.passthrough && self.rungs.is_empty() {
            return Err(invalid(
                key,
                "a ladder needs passthrough or at least one rung",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, r) in self.rungs.iter().enumerate() {
            let k = format!("{key}.rungs[{i}]");
            let name_ok = !r.name.is_empty()
                && r.name.len() <= 32
                && r.name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            if !name_ok || r.name == "source" || r.name == "audio" {
                return Err(invalid(
                    format!("{k}.name"),
                    "1-32 characters of [a-z0-9_-], not \"source\" or \"audio\"",
                ));
            }
            if !seen.insert(&r.name) {
                return Err(invalid(format!("{k}.name"), "rung names must be unique"));
            }
            if !(16..=7680).contains(&r.width) || !(16..=4320).contains(&r.height) {
                return Err(invalid(
                    format!("{k}.width"),
                    "width 16-7680 and height 16-4320",
                ));
            }
            if r.max_fps.is_some_and(|f| !(1..=240).contains(&f)) {
                return Err(invalid(format!("{k}.max_fps"), "must be 1-240"));
            }
            if !(50..=100_000).contains(&r.bitrate_kbps) {
                return Err(invalid(format!("{k}.bitrate_kbps"), "must be 50-100000"));
            }
            if !PRESETS.contains(&r.preset.as_str()) {
                return Err(invalid(
                    format!("{k}.preset"),
                    format!("one of {PRESETS:?}"),
                ));
            }
            if !TUNES.contains(&r.tune.as_str()) {
                return Err(invalid(format!("{k}.tune"), format!("one of {TUNES:?}")));
            }
        }
        Ok(())
    }
}
