//! `--demo`: a built-in publisher. A GStreamer test pattern with a burnt-in wall clock
//! (milliseconds) and frame counter, encoded to H.264 + AAC in MPEG-TS and pushed over
//! real SRT to the node's own listener, so a newcomer sees video at `/watch/demo` at once.
//! Each frame also carries its capture time as machine-readable blocks ([`clock`]), which
//! the latency page reads back to measure camera-to-eye latency.

pub mod clock;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use futures_util::SinkExt;
use gst::prelude::*;
use srt_tokio::SrtSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::media::MediaError;

/// How the demo publishes.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// The node's SRT address.
    pub srt: SocketAddr,
    /// Stream name.
    pub stream: String,
    /// The stream's passphrase, if it has one.
    pub passphrase: Option<String>,
}

fn build(tx: mpsc::Sender<Bytes>) -> Result<gst::Pipeline, MediaError> {
    crate::media::init()?;
    let desc = "videotestsrc is-live=true pattern=smpte \
        ! video/x-raw,format=I420,width=1280,height=720,framerate=30/1 \
        ! textoverlay name=clock halignment=left valignment=top font-desc=\"Monospace 36\" shaded-background=true \
        ! videoconvert ! video/x-raw,format=I420 ! x264enc tune=zerolatency speed-preset=veryfast bitrate=3000 key-int-max=30 \
        ! h264parse config-interval=-1 ! queue ! mpegtsmux name=mux alignment=7 \
        ! appsink name=out sync=false \
        audiotestsrc is-live=true wave=sine freq=440 volume=0.2 ! audioconvert ! audioresample \
        ! avenc_aac bitrate=128000 ! aacparse ! queue ! mux.";
    let pipeline = gst::parse::launch(desc)
        .map_err(|e| MediaError::Setup(format!("demo pipeline: {e}")))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| MediaError::Setup("demo pipeline is not a pipeline".into()))?;
    let overlay = pipeline
        .by_name("clock")
        .ok_or_else(|| MediaError::Setup("no clock overlay".into()))?;
    // Stamp each frame with the wall clock at capture and its number, in milliseconds,
    // so glass-to-glass latency can be read off a screenshot, and draw the same instant
    // as the machine-readable strip of `clock`.
    let frames = Arc::new(AtomicU64::new(0));
    let sinkpad = overlay
        .static_pad("video_sink")
        .expect("textoverlay has video_sink");
    let weak = overlay.downgrade();
    sinkpad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let n = frames.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now();
        if let Some(o) = weak.upgrade() {
            let text = humantime::format_rfc3339_millis(now).to_string();
            o.set_property("text", format!("{} UTC  frame {n}", &text[11..23]));
        }
        let ms = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let video = pad
            .current_caps()
            .and_then(|c| gst_video::VideoInfo::from_caps(&c).ok());
        if let (Some(video), Some(buf)) = (video, info.buffer_mut()) {
            stamp(buf.make_mut(), &video, ms);
        }
        gst::PadProbeReturn::Ok
    });
    let sink = pipeline
        .by_name("out")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| MediaError::Setup("no appsink".into()))?;
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let buf = sample.buffer().ok_or(gst::FlowError::Error)?;
                let map = buf.map_readable().map_err(|_| gst::FlowError::Error)?;
                // SRT carries up to 1316 bytes (7 TS packets) per message.
                for chunk in map.as_slice().chunks(1316) {
                    // Dropped rather than blocking GStreamer when SRT is not connected.
                    let _ = tx.try_send(Bytes::copy_from_slice(chunk));
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    Ok(pipeline)
}

/// Draws the capture-time strip into an I420 frame (other formats are left alone).
fn stamp(buf: &mut gst::BufferRef, video: &gst_video::VideoInfo, ms: u64) {
    if video.format() != gst_video::VideoFormat::I420 {
        return;
    }
    let Ok(mut frame) = gst_video::VideoFrameRef::from_buffer_ref_writable(buf, video) else {
        return;
    };
    let (w, h) = (video.width() as usize, video.height() as usize);
    let strides = [0, 1, 2].map(|i| video.stride()[i] as usize);
    let [y, u, v, _] = frame.planes_data_mut();
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let plane = |data, stride, width, height| clock::Plane {
        data,
        stride,
        width,
        height,
    };
    clock::draw(
        plane(y, strides[0], w, h),
        [plane(u, strides[1], cw, ch), plane(v, strides[2], cw, ch)],
        ms,
    );
}

/// Publishes until `token` is cancelled, reconnecting when the connection drops.
pub async fn run(cfg: DemoConfig, token: CancellationToken) {
    let (tx, mut rx) = mpsc::channel::<Bytes>(4096);
    let pipeline = match build(tx) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "demo publisher cannot start");
            return;
        }
    };
    if let Err(e) = pipeline.set_state(gst::State::Playing) {
        tracing::error!(error = %e, "demo publisher cannot start");
        return;
    }
    let mut backoff = Duration::from_millis(500);
    while !token.is_cancelled() {
        let mut b = SrtSocket::builder().latency(Duration::from_millis(120));
        if let Some(p) = &cfg.passphrase {
            b = b.encryption(16, p.clone());
        }
        let sid = format!("#!::r=live/{},m=publish", cfg.stream);
        let connected = tokio::select! {
            r = b.call(cfg.srt, Some(sid.as_str())) => r,
            () = token.cancelled() => break,
        };
        match connected {
            Ok(mut socket) => {
                tracing::info!(stream = %cfg.stream, "demo publisher connected");
                backoff = Duration::from_millis(500);
                while rx.try_recv().is_ok() {}
                loop {
                    let data = tokio::select! {
                        d = rx.recv() => match d { Some(d) => d, None => break },
                        () = token.cancelled() => break,
                    };
                    if socket.send((Instant::now(), data)).await.is_err() {
                        break;
                    }
                }
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), socket.close_and_finish()).await;
            }
            Err(e) => tracing::warn!(error = %e, "demo publisher cannot connect"),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = token.cancelled() => break,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
    let _ = tokio::task::spawn_blocking(move || pipeline.set_state(gst::State::Null)).await;
}
