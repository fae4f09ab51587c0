//! Which elementary streams feed the pipeline: the configured PID, or for audio the
//! configured language, else the first track of each kind. Extra tracks are ignored
//! with one log line.
//!
//! A language is only known per pad, and tsdemux adds a program's pads one by one, so an
//! audio track in another language is set aside (into a fakesink) as the fallback; if
//! no track in the wanted language came by the demuxer's `no-more-pads`, the fallback
//! is taken back and used, with a warning.

use std::sync::{Arc, Mutex};

use gst::prelude::*;

use super::{link_fakesink, Ctx};
use crate::media::MediaError;

/// The first audio pad set aside because its language did not match.
pub(in crate::media) type Fallback = Arc<Mutex<Option<gst::Pad>>>;

/// Whether a pad of `kind` (`video`/`audio`) is used.
pub(super) enum Choice {
    Use,
    /// Ignored: already terminated in a fakesink.
    Ignored,
}

/// Decides about `pad`, terminating it when it is not used. `forced` skips the language
/// test (the fallback being taken back).
pub(super) fn choose(
    ctx: &Ctx,
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    kind: &str,
    forced: bool,
) -> Result<Choice, MediaError> {
    let wanted = if kind == "video" {
        ctx.cfg.video_pid
    } else {
        ctx.cfg.audio_pid
    };
    if let (Some(want), Some(pid)) = (wanted, pad_pid(pad)) {
        if want != pid {
            tracing::info!(pad = %pad.name(), pid, want, "track ignored: not the configured PID");
            link_fakesink(pipeline, pad)?;
            return Ok(Choice::Ignored);
        }
    }
    // One track of each kind: a second video or audio track is dropped.
    if pipeline.by_name(&marker(kind)).is_some() {
        link_fakesink(pipeline, pad)?;
        return Ok(Choice::Ignored);
    }
    if let (false, "audio", Some(want)) = (forced, kind, &ctx.cfg.audio_language) {
        let lang = pad_language(pad);
        if !lang.as_deref().is_some_and(|l| same_language(l, want)) {
            tracing::info!(pad = %pad.name(), language = ?lang, want = %want, "audio track set aside: not the configured language");
            link_fakesink(pipeline, pad)?;
            ctx.audio_fallback
                .lock()
                .expect("not poisoned")
                .get_or_insert_with(|| pad.clone());
            return Ok(Choice::Ignored);
        }
    }
    Ok(Choice::Use)
}

/// The name of the first element of the branch that uses a track of `kind`.
pub(super) fn marker(kind: &str) -> String {
    format!("elementary-{kind}")
}

/// On the demuxer's `no-more-pads`: when no audio track was in the configured language,
/// the first one set aside is used after all.
pub(in crate::media) fn take_fallback(ctx: &Ctx) {
    let Some(pad) = ctx.audio_fallback.lock().expect("not poisoned").take() else {
        return;
    };
    let Some(pipeline) = ctx.pipeline.upgrade() else {
        return;
    };
    if pipeline.by_name(&marker("audio")).is_some() {
        return;
    }
    tracing::warn!(
        pad = %pad.name(),
        language = ?pad_language(&pad),
        want = ?ctx.cfg.audio_language,
        "no audio track in the configured language: using the first audio track"
    );
    // Take the pad back from its fakesink: queue ! fakesink, both removed.
    if let Some(q) = pad.peer().and_then(|p| p.parent_element()) {
        let sink = q
            .static_pad("src")
            .and_then(|p| p.peer())
            .and_then(|p| p.parent_element());
        let _ = pad.unlink(&q.static_pad("sink").expect("queue has a sink pad"));
        for e in std::iter::once(q).chain(sink) {
            let _ = e.set_state(gst::State::Null);
            let _ = pipeline.remove(&e);
        }
    }
    if let Err(e) = super::add_forced(ctx, &pad) {
        tracing::warn!(error = %e, "cannot use the fallback audio track");
    }
}

/// The MPEG-TS PID from a tsdemux pad name (`audio_0_0101`).
pub(super) fn pad_pid(pad: &gst::Pad) -> Option<u16> {
    let name = pad.name();
    let hex = name.rsplit('_').next()?;
    (hex.len() == 4)
        .then(|| u16::from_str_radix(hex, 16).ok())
        .flatten()
}

/// The track's language from its stream tags (tsdemux reads the PMT's ISO 639 descriptor
/// into them before it adds the pad), or from a tag event already on the pad.
fn pad_language(pad: &gst::Pad) -> Option<String> {
    let from_stream = pad.stream().and_then(|s| s.tags()).and_then(|t| {
        t.get::<gst::tags::LanguageCode>()
            .map(|v| v.get().to_owned())
    });
    from_stream.or_else(|| {
        pad.sticky_event::<gst::event::Tag>(0).and_then(|ev| {
            ev.tag()
                .get::<gst::tags::LanguageCode>()
                .map(|v| v.get().to_owned())
        })
    })
}

/// Whether two ISO 639 codes (two- or three-letter, bibliographic or terminology) name
/// the same language: `fr`, `fra` and `fre` do.
fn same_language(a: &str, b: &str) -> bool {
    let norm = |c: &str| {
        let c = c.trim().to_ascii_lowercase();
        gst_tag::language_codes::language_code_iso_639_1(&c).map_or(c, |g| g.as_str().to_owned())
    };
    norm(a) == norm(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_codes_compare_across_iso_639_forms() {
        crate::media::init().unwrap();
        assert!(same_language("fr", "fra"));
        assert!(same_language("fre", "FRA"));
        assert!(same_language("eng", "en"));
        assert!(!same_language("eng", "fra"));
        assert!(same_language("qaa", "qaa"));
    }
}
