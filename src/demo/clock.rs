//! The in-picture capture clock: a strip of black and white blocks along the bottom of
//! each frame that holds the wall clock at capture, in milliseconds, so a player can read
//! it back from the decoded picture and measure camera-to-eye latency without trusting
//! any timestamp of the delivery path (`web/clock.js` reads it; `scripts/clock-filter.sh`
//! draws the same strip with ffmpeg).
//!
//! Layout (proportional, so it survives every ladder rung's downscale):
//! - the strip is the bottom [`STRIP_DIV`]th of the picture height, cut into [`CELLS`]
//!   equal cells across the full width;
//! - cell 0 is white and cell 1 black: the reader's references for its threshold;
//! - cells 2..=29 hold `ms mod 2^28` (Unix time in milliseconds, about 74 hours before it
//!   wraps), most significant bit first, white for 1;
//! - cell 30 is even parity over those 28 bits (white when their count of ones is odd);
//! - cell 31 is white.
//!
//! Cells are at least 40 × 60 pixels at 720p and 7 × 10 at 144p: big flat blocks that
//! x264 keeps clean at any bit rate a rung would use.

/// Cells across the strip.
pub const CELLS: u32 = 32;
/// Bits of milliseconds the strip holds.
pub const BITS: u32 = 28;
/// The strip is the bottom `1 / STRIP_DIV` of the picture.
pub const STRIP_DIV: u32 = 12;
/// Video-range luma of a white and a black cell.
const WHITE: u8 = 235;
const BLACK: u8 = 16;

/// Whether cell `i` is white for a capture time of `ms` (Unix milliseconds).
pub fn cell_is_white(ms: u64, i: u32) -> bool {
    let m = ms & ((1 << BITS) - 1);
    match i {
        0 | 31 => true,
        1 => false,
        2..=29 => (m >> (29 - i)) & 1 == 1,
        30 => m.count_ones() % 2 == 1,
        _ => false,
    }
}

/// One plane of a planar YUV picture, writable.
pub struct Plane<'a> {
    /// Its bytes.
    pub data: &'a mut [u8],
    /// Bytes per row.
    pub stride: usize,
    /// Its width and height in samples (a chroma plane of 4:2:0 is half of each).
    pub width: usize,
    /// Rows.
    pub height: usize,
}

/// Draws the strip for capture time `ms` into a picture's luma plane; `chroma` (U and V)
/// are set to grey under the strip so the cells carry no colour.
pub fn draw(luma: Plane<'_>, chroma: [Plane<'_>; 2], ms: u64) {
    fill(luma, |i| if cell_is_white(ms, i) { WHITE } else { BLACK });
    for c in chroma {
        fill(c, |_| 128);
    }
}

/// Fills the strip area of `p`, cell by cell, with `value(cell)`.
fn fill(p: Plane<'_>, value: impl Fn(u32) -> u8) {
    let top = p.height - p.height / STRIP_DIV as usize;
    for row in top..p.height {
        let line = &mut p.data[row * p.stride..row * p.stride + p.width];
        for (x, px) in line.iter_mut().enumerate() {
            *px = value((x * CELLS as usize / p.width) as u32);
        }
    }
}

/// Reads the strip back from a luma plane (the page does the same on a canvas): the
/// capture time modulo `2^BITS` ms, or `None` when the strip is not clean.
pub fn read(luma: &[u8], stride: usize, width: usize, height: usize) -> Option<u64> {
    let strip = height / STRIP_DIV as usize;
    let row = height - strip / 2;
    let sample = |i: u32| {
        let x = (2 * i as usize + 1) * width / (2 * CELLS as usize);
        f64::from(luma[row * stride + x])
    };
    let (white, black) = (sample(0), sample(1));
    if white - black < 64.0 {
        return None;
    }
    let mid = (white + black) / 2.0;
    let bit = |i: u32| sample(i) > mid;
    let mut m = 0u64;
    for i in 2..=29 {
        m = (m << 1) | u64::from(bit(i));
    }
    (bit(30) == (m.count_ones() % 2 == 1) && bit(31)).then_some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picture(w: usize, h: usize, ms: u64) -> Vec<u8> {
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let mut y = vec![90u8; w * h];
        let mut u = vec![30u8; cw * ch];
        let mut v = vec![200u8; cw * ch];
        let plane = |data, width, height| Plane {
            data,
            stride: width,
            width,
            height,
        };
        draw(
            plane(&mut y, w, h),
            [plane(&mut u, cw, ch), plane(&mut v, cw, ch)],
            ms,
        );
        assert!(u[cw * (ch - 1)..].iter().all(|&b| b == 128));
        y
    }

    #[test]
    fn strip_reads_back_at_every_rung_size() {
        let ms = 1_795_000_123_456u64;
        for (w, h) in [
            (1280, 720),
            (854, 480),
            (640, 360),
            (256, 144),
            (1920, 1080),
        ] {
            let y = picture(w, h, ms);
            assert_eq!(read(&y, w, w, h), Some(ms % (1 << BITS)), "{w}x{h}");
            // The picture above the strip is untouched.
            assert_eq!(y[0], 90);
        }
    }

    #[test]
    fn a_flipped_bit_fails_the_parity() {
        let (w, h) = (640, 360);
        let mut y = picture(w, h, 123_456_789);
        let row = h - h / STRIP_DIV as usize / 2;
        let x = 5 * w / CELLS as usize + w / 64;
        y[row * w + x] = if y[row * w + x] > 128 { 16 } else { 235 };
        assert_eq!(read(&y, w, w, h), None);
        // No strip at all: no reference contrast.
        assert_eq!(read(&vec![90u8; w * h], w, w, h), None);
    }
}
