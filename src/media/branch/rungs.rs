//! The ladder's rungs: each scales the decoded video, or a larger rung's scaled frames,
//! to its size and encodes it.
//!
//! ```text
//! tee ! queue(leaky) ! videoconvert ! videoscale ! videorate ! capsfilter(raw)
//!        [! tee ! queue(leaky)]  ! x264enc|x265enc ! parse ! capsfilter ! cmafmux ! appsink
//!          tee. ! queue(leaky) ! videoconvert ! videoscale ! ...  (a smaller rung)
//! ```
//! A rung at most two thirds the height of a larger one scales from that rung's frames
//! (the smallest such), not from the decoder's: 1080p -> 720p -> 480p and 360p costs
//! less than three scalings of 1080p. The raw caps keep the source's colorimetry, so
//! scaling is only scaling: without it GStreamer assumes BT.601 below 577 lines and
//! converts the colour matrix of SD rungs, which cost more than the scaling itself.

use std::{sync::Arc, time::Duration};

use gst::prelude::*;

use super::{
    add_and_link, make, parsed_caps, queue, setup, sink_branch, sync, watch_track, Arrivals, Ctx,
};
use crate::{
    config::{RungCodec, RungConfig},
    media::{MediaError, MediaEvent},
};

/// The output size of a rung: the source's display aspect inside the rung's box, never
/// larger than the source, rounded to even numbers. `None` when the rung is taller than
/// the source.
fn rung_size(rung: &RungConfig, src: (u32, u32), par: (i32, i32)) -> Option<(u32, u32)> {
    let (sw, sh) = src;
    if sw == 0 || sh == 0 || rung.height > sh {
        return None;
    }
    let display_w = sw as f64 * par.0.max(1) as f64 / par.1.max(1) as f64;
    let scale = (rung.width as f64 / display_w)
        .min(rung.height as f64 / sh as f64)
        .min(1.0);
    let even = |x: f64| ((x / 2.0).round() as u32 * 2).max(16);
    Some((even(display_w * scale), even(sh as f64 * scale)))
}

pub(super) fn add_rungs(
    ctx: &Ctx,
    dtee: &gst::Element,
    caps: &gst::CapsRef,
    arrivals: &Arrivals,
    passthrough: bool,
) -> Result<(), MediaError> {
    let pipeline = ctx
        .pipeline
        .upgrade()
        .ok_or_else(|| setup("pipeline gone"))?;
    let s = caps.structure(0).ok_or_else(|| setup("empty caps"))?;
    let src = (
        s.get::<i32>("width").unwrap_or(0).max(0) as u32,
        s.get::<i32>("height").unwrap_or(0).max(0) as u32,
    );
    let par = s
        .get::<gst::Fraction>("pixel-aspect-ratio")
        .map(|f| (f.numer(), f.denom()))
        .unwrap_or((1, 1));
    let ladder = &ctx.cfg.ladder;
    let mut rungs: Vec<(&RungConfig, (u32, u32))> = ladder
        .rungs
        .iter()
        .filter_map(|r| rung_size(r, src, par).map(|d| (r, d)))
        .collect();
    if rungs.is_empty() && !passthrough {
        // Every rung is taller than the source: make the smallest at the source's size.
        if let Some(r) = ladder.rungs.iter().min_by_key(|r| r.height) {
            let fitted = RungConfig {
                height: src.1,
                ..r.clone()
            };
            if let Some(d) = rung_size(&fitted, src, par) {
                rungs.push((r, d));
            }
        }
    }
    let colorimetry = s
        .get::<String>("colorimetry")
        .ok()
        .or_else(|| default_colorimetry(src));
    // Larger rungs first, so a smaller one finds the rung it scales from.
    rungs.sort_by_key(|(_, (_, h))| std::cmp::Reverse(*h));
    // Each rung's feeder: the smallest larger rung it can scale from.
    let feeder: Vec<Option<usize>> = rungs
        .iter()
        .enumerate()
        .map(|(i, (r, (_, h)))| {
            (0..i)
                .filter(|&j| can_feed(rungs[j].1 .1, rungs[j].0.max_fps, *h, r.max_fps))
                .min_by_key(|&j| rungs[j].1 .1)
        })
        .collect();
    let mut tees: Vec<Option<gst::Element>> = Vec::new();
    for (i, &(rung, size)) in rungs.iter().enumerate() {
        let from = feeder[i].map_or("decoder", |j| rungs[j].0.name.as_str());
        tracing::info!(rung = %rung.name, width = size.0, height = size.1, from, "adding rung");
        let input = match feeder[i] {
            Some(j) => tees[j].as_ref().expect("a feeder has a tee"),
            None => dtee,
        };
        let feeds_others = feeder.contains(&Some(i));
        let tee = add_rung(
            ctx,
            &pipeline,
            input,
            rung,
            size,
            colorimetry.as_deref(),
            feeds_others,
            arrivals.clone(),
        )?;
        tees.push(tee);
    }
    Ok(())
}

/// Whether a rung `height` high (frame rate capped at `fps`) can feed one `to_height` high
/// capped at `to_fps`: it is at least 1.5 times as tall (a finer step would blur twice
/// for little saving), and it passes every frame the smaller rung keeps.
fn can_feed(height: u32, fps: Option<u32>, to_height: u32, to_fps: Option<u32>) -> bool {
    let fps_ok = match (fps, to_fps) {
        (None, _) => true,
        (Some(f), Some(t)) => f >= t,
        (Some(_), None) => false,
    };
    height * 2 >= to_height * 3 && fps_ok
}

/// The colorimetry GStreamer assumes for raw video of this size when caps name none
/// (BT.709 above 576 lines, BT.601 at or below).
fn default_colorimetry((w, h): (u32, u32)) -> Option<String> {
    let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::I420, w, h)
        .build()
        .ok()?;
    Some(info.colorimetry().to_string())
}

#[allow(clippy::too_many_arguments)]
/// Builds one rung fed from `input` (the decoder's tee or a larger rung's); with
/// `feeds_others`, returns the tee on its scaled frames.
fn add_rung(
    ctx: &Ctx,
    pipeline: &gst::Pipeline,
    input: &gst::Element,
    rung: &RungConfig,
    (w, h): (u32, u32),
    colorimetry: Option<&str>,
    feeds_others: bool,
    arrivals: Arrivals,
) -> Result<Option<gst::Element>, MediaError> {
    let r: Arc<str> = Arc::from(rung.name.as_str());
    // Frames are dropped here, not queued without bound, when the encoder falls behind.
    let q = queue(Duration::from_millis(500), true)?;
    on_overrun(ctx, &q, &r);
    // 10-bit or 4:2:2/4:4:4 sources become 8-bit 4:2:0, which every browser decodes
    // (passthrough, free, when the decoder already gives I420).
    let convert = make("videoconvert", None)?;
    let scale = make("videoscale", None)?;
    // Multi-tap bilinear: the default 2-tap bilinear reads 2 of every 3 source pixels at
    // 1080p -> 360p (aliasing), and costs about the same once rungs scale in a chain.
    scale.set_property_from_str("method", "bilinear2");
    let rate = make("videorate", None)?;
    rate.set_property("drop-only", true);
    if let Some(f) = rung.max_fps {
        rate.set_property_from_str("max-rate", &f.to_string());
    }
    let raw = make("capsfilter", None)?;
    let mut caps = gst::Caps::builder("video/x-raw")
        .field("format", "I420")
        .field("width", w as i32)
        .field("height", h as i32)
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1));
    if let Some(c) = colorimetry {
        caps = caps.field("colorimetry", c);
    }
    raw.set_property("caps", caps.build());
    let (enc, parser) = match rung.codec {
        RungCodec::H264 => (make("x264enc", None)?, make("h264parse", None)?),
        RungCodec::H265 => (make("x265enc", None)?, make("h265parse", None)?),
    };
    // Set from strings: x264enc and x265enc declare the same properties with different
    // integer types, and a typed set of the wrong type panics in glib.
    enc.set_property_from_str("bitrate", &rung.bitrate_kbps.to_string());
    enc.set_property_from_str("speed-preset", &rung.preset);
    enc.set_property_from_str("tune", &rung.tune);
    // Keyframes come from cmafmux's force-keyunit requests at segment boundaries; the
    // interval is only a backstop.
    let fps = rung.max_fps.unwrap_or(60);
    let kint = ((ctx.cfg.segment_target.as_secs_f64() * 2.0 * fps as f64) as u32).max(1);
    enc.set_property_from_str("key-int-max", &kint.to_string());
    if rung.codec == RungCodec::H264 {
        enc.set_property_from_str("b-adapt", "false");
        enc.set_property_from_str("bframes", "0");
    }
    let out = make("capsfilter", None)?;
    out.set_property("caps", parsed_caps(rung.codec));
    let feed = if feeds_others {
        let tee = make("tee", None)?;
        tee.set_property("allow-not-linked", true);
        let eq = queue(Duration::from_millis(500), true)?;
        on_overrun(ctx, &eq, &r);
        Some((tee, eq))
    } else {
        None
    };
    let mut chain = vec![&q, &convert, &scale, &rate, &raw];
    if let Some((tee, eq)) = &feed {
        chain.extend([tee, eq]);
    }
    chain.extend([&enc, &parser, &out]);
    add_and_link(pipeline, &chain)?;
    watch_track(ctx, &out, r.clone(), true);
    let tail = sink_branch(ctx, pipeline, r, true, arrivals)?;
    out.link(&tail).map_err(setup)?;
    sync(&chain)?;
    input.link(&q).map_err(setup)?;
    Ok(feed.map(|(tee, _)| tee))
}

/// Reports a frame dropped by a leaky queue in front of a rung's scaler or encoder.
fn on_overrun(ctx: &Ctx, q: &gst::Element, rendition: &Arc<str>) {
    let tx = ctx.tx.clone();
    let r = rendition.clone();
    q.connect("overrun", false, move |_| {
        let _ = tx.send(MediaEvent::FrameDropped {
            rendition: r.clone(),
        });
        None
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rung(w: u32, h: u32) -> RungConfig {
        RungConfig {
            name: "r".into(),
            codec: RungCodec::H264,
            width: w,
            height: h,
            max_fps: None,
            bitrate_kbps: 1000,
            preset: "veryfast".into(),
            tune: "zerolatency".into(),
        }
    }

    #[test]
    fn rungs_scale_from_a_rung_half_again_as_tall_that_keeps_their_frames() {
        assert!(can_feed(720, None, 480, None));
        assert!(can_feed(720, None, 360, Some(30)));
        assert!(
            !can_feed(480, None, 360, None),
            "4:3 step: scaled from the source"
        );
        assert!(can_feed(720, Some(30), 360, Some(30)));
        assert!(!can_feed(720, Some(30), 360, None), "would lose frames");
        assert!(!can_feed(720, Some(25), 360, Some(30)));
    }

    #[test]
    fn rung_sizes_keep_aspect_and_never_upscale() {
        // (rung box, source size, pixel aspect, expected size)
        let cases = [
            ((1280, 720), (1920, 1080), (1, 1), Some((1280, 720))),
            ((854, 480), (1280, 720), (1, 1), Some((854, 480))),
            ((640, 360), (1280, 720), (1, 1), Some((640, 360))),
            // 4:3 source in a 16:9 box: height bound.
            ((1280, 720), (1440, 1080), (1, 1), Some((960, 720))),
            // Taller than the source: left out.
            ((1920, 1080), (1280, 720), (1, 1), None),
            // Same height: kept at the source size.
            ((1280, 720), (1280, 720), (1, 1), Some((1280, 720))),
            // Anamorphic 1440x1080 with 4:3 pixels displays as 1920x1080.
            ((1280, 720), (1440, 1080), (4, 3), Some((1280, 720))),
        ];
        for ((w, h), src, par, want) in cases {
            assert_eq!(
                rung_size(&rung(w, h), src, par),
                want,
                "{w}x{h} from {src:?}"
            );
        }
    }
}
