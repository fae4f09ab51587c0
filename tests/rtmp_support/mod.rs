//! RTMP test support: playlist and probe helpers shared by the RTMP tests, and a test
//! publisher for what no installed encoder sends: Enhanced RTMP (HEVC in FLV with
//! a FourCC header, as OBS 29.1+ publishes it).
//!
//! The RTMP side is `rml_rtmp`'s client handshake and `ClientSession`. The media is real:
//! GStreamer encodes a test pattern with x265 (B-frames, a keyframe every 2 s, as OBS
//! does by default) and a tone with AAC; the access units go out as extended video tags
//! (`SequenceStart` with the hvcC, then `CodedFrames` with their composition offsets) and
//! the audio as legacy AAC tags, audio configuration first, as OBS orders them.
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::{BufMut, Bytes, BytesMut};
use gst::prelude::*;
use rml_rtmp::{
    handshake::{Handshake, HandshakeProcessResult, PeerType},
    sessions::{
        ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
        PublishRequestType, StreamMetadata,
    },
    time::RtmpTimestamp,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::common::*;

/// Waits until `stream`'s `rendition` playlist lists at least `n` complete segments.
pub async fn wait_segments(node: &Node, stream: &str, rendition: &str, n: usize) -> Vec<Line> {
    let url = node.url(&format!("/live/{stream}/{rendition}/index.m3u8"));
    wait_ok(&url, Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lines = parse_playlist(&get(&url).await.text());
        if segments(&lines).len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{stream}/{rendition}: fewer than {n} segments\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Fetches the newest segment of `rendition` with its init segment (the newest
/// EXT-X-MAP: a rebuilt pipeline has a new one) and returns ffprobe's summary
/// (`codec,width,height,frames` for video).
pub async fn probe_latest(node: &Node, stream: &str, rendition: &str) -> String {
    let lines = wait_segments(node, stream, rendition, 1).await;
    let (_, _, uri) = segments(&lines).last().cloned().expect("a segment");
    let map = attrs(tags(&lines, "EXT-X-MAP").last().expect("EXT-X-MAP"))["URI"].clone();
    let init = get(&node.url(&format!("/live/{stream}/{rendition}/{map}"))).await;
    let seg = get(&node.url(&format!("/live/{stream}/{rendition}/{uri}"))).await;
    assert_eq!((init.status, seg.status), (200, 200));
    let file = node.dir.join(format!("{stream}-{rendition}.mp4"));
    std::fs::write(&file, [init.body.to_vec(), seg.body.to_vec()].concat()).unwrap();
    ffprobe(&file)
}

/// A self-signed P-256 certificate for IP 127.0.0.1 (an end-entity one, so a client
/// that trusts it verifies the node), written under a new temp dir: (cert, key).
pub fn self_signed_cert(tag: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = tempdir(tag);
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    stdout_of(
        std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args([
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    (cert, key)
}

/// A connected publisher: the byte stream and the RTMP session on it.
pub struct Client<S> {
    pub io: S,
    pub session: ClientSession,
}

/// Connects to app `live` over plain TCP and publishes `key`.
pub async fn rtmp_client(addr: SocketAddr, key: &str) -> Client<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    publish_on(tcp, key).await
}

/// Connects over TLS (RTMPS), trusting the self-signed certificate at `cert` (which must
/// name IP 127.0.0.1), and publishes `key`.
pub async fn rtmps_client(
    addr: SocketAddr,
    cert: &std::path::Path,
    key: &str,
) -> Client<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(cert).unwrap();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the node");
    publish_on(tls, key).await
}

/// Runs the RTMP handshake, `connect` to app `live` and `publish` of `key` on `io`;
/// returns once the publish is accepted.
pub async fn publish_on<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, key: &str) -> Client<S> {
    let mut hs = Handshake::new(PeerType::Client);
    io.write_all(&hs.generate_outbound_p0_and_p1().unwrap())
        .await
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut rest = Vec::new();
    for _ in 0..100 {
        let n = io.read(&mut buf).await.unwrap();
        assert!(n > 0, "server closed during the handshake");
        match hs.process_bytes(&buf[..n]).unwrap() {
            HandshakeProcessResult::InProgress { response_bytes } => {
                io.write_all(&response_bytes).await.unwrap()
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                io.write_all(&response_bytes).await.unwrap();
                rest = remaining_bytes;
                break;
            }
        }
    }
    let (mut session, _) = ClientSession::new(ClientSessionConfig::new()).unwrap();
    let mut out = vec![session.request_connection("live".into()).unwrap()];
    let mut input = rest;
    for _ in 0..200 {
        out.extend(session.handle_input(&input).unwrap());
        let mut published = false;
        for r in std::mem::take(&mut out) {
            match r {
                ClientSessionResult::OutboundResponse(p) => io.write_all(&p.bytes).await.unwrap(),
                ClientSessionResult::RaisedEvent(ClientSessionEvent::ConnectionRequestAccepted) => {
                    let r = session
                        .request_publishing(key.into(), PublishRequestType::Live)
                        .unwrap();
                    if let ClientSessionResult::OutboundResponse(p) = r {
                        io.write_all(&p.bytes).await.unwrap();
                    }
                }
                ClientSessionResult::RaisedEvent(ClientSessionEvent::PublishRequestAccepted) => {
                    published = true
                }
                _ => {}
            }
        }
        if published {
            return Client { io, session };
        }
        let n = tokio::time::timeout(Duration::from_secs(5), io.read(&mut buf))
            .await
            .expect("server answers")
            .unwrap();
        assert!(n > 0, "server closed before accepting the publish");
        input = buf[..n].to_vec();
    }
    panic!("publish not accepted");
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Sends one video message body at `ts` ms.
    pub async fn video(&mut self, body: Bytes, ts: u32) -> std::io::Result<()> {
        let r = self
            .session
            .publish_video_data(body, RtmpTimestamp::new(ts), false)
            .unwrap();
        self.write(r).await
    }

    /// Sends one audio message body at `ts` ms.
    pub async fn audio(&mut self, body: Bytes, ts: u32) -> std::io::Result<()> {
        let r = self
            .session
            .publish_audio_data(body, RtmpTimestamp::new(ts), false)
            .unwrap();
        self.write(r).await
    }

    async fn write(&mut self, r: ClientSessionResult) -> std::io::Result<()> {
        if let ClientSessionResult::OutboundResponse(p) = r {
            self.io.write_all(&p.bytes).await?;
        }
        Ok(())
    }

    /// Whether the node closes the connection (reads end within a bounded number of
    /// tries).
    pub async fn closed_by_peer(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        for _ in 0..50 {
            match tokio::time::timeout(Duration::from_secs(5), self.io.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
        false
    }
}

/// An extended video tag body: `IsExHeader | FrameType | PacketType`, the FourCC, then
/// (for `CodedFrames`) the SI24 composition offset, then `payload`.
pub fn ex_video(
    fourcc: &[u8; 4],
    keyframe: bool,
    packet_type: u8,
    cts: Option<i32>,
    payload: &[u8],
) -> Bytes {
    let mut b = BytesMut::with_capacity(8 + payload.len());
    b.put_u8(0x80 | if keyframe { 0x10 } else { 0x20 } | packet_type);
    b.put_slice(fourcc);
    if let Some(cts) = cts {
        b.put_slice(&cts.to_be_bytes()[1..]);
    }
    b.put_slice(payload);
    b.freeze()
}

/// A legacy AAC audio tag body (44 kHz, 16-bit, stereo flags as FLV wants for AAC).
fn aac(packet_type: u8, payload: &[u8]) -> Bytes {
    [&[0xAF, packet_type][..], payload].concat().into()
}

/// What the encoders produced, in the order they produced it.
enum Media {
    Video {
        config: Bytes,
        dts_ms: i64,
        cts_ms: i32,
        keyframe: bool,
        data: Bytes,
    },
    Audio {
        config: Bytes,
        ms: i64,
        data: Bytes,
    },
}

/// The encoders: `width`x`height` at 30 fps, x265 (`hvc1`) or x264 (`avc1`) with 2
/// B-frames and a 2 s GOP, and 48 kHz stereo AAC. Samples go to `tx` until it closes or
/// `stop` is cancelled.
fn encode(
    fourcc: [u8; 4],
    (width, height): (u32, u32),
    tx: tokio::sync::mpsc::Sender<Media>,
    stop: CancellationToken,
) {
    gst::init().unwrap();
    let video = match &fourcc {
        b"hvc1" => {
            "x265enc speed-preset=ultrafast bitrate=800 key-int-max=60 \
                    option-string=bframes=2:scenecut=0:open-gop=0 \
                    ! h265parse ! video/x-h265,stream-format=hvc1,alignment=au"
        }
        _ => {
            "x264enc speed-preset=ultrafast bitrate=800 key-int-max=60 bframes=2 b-adapt=false \
              ! h264parse ! video/x-h264,stream-format=avc,alignment=au"
        }
    };
    let desc = format!(
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},framerate=30/1,format=I420 \
         ! {video} ! appsink name=v sync=false \
         audiotestsrc is-live=true wave=sine ! audio/x-raw,rate=48000,channels=2 ! audioconvert ! avenc_aac \
         ! aacparse ! audio/mpeg,mpegversion=4,stream-format=raw ! appsink name=a sync=false"
    );
    let pipeline = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = |n: &str| {
        pipeline
            .by_name(n)
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap()
    };
    let (v, a) = (sink("v"), sink("a"));
    pipeline.set_state(gst::State::Playing).unwrap();
    let ms = |s: &gst::Sample, t: Option<gst::ClockTime>| -> i64 {
        let seg = s
            .segment()
            .and_then(|g| g.downcast_ref::<gst::ClockTime>().cloned())
            .unwrap();
        match t.map(|t| seg.to_running_time_full(t)) {
            Some(Some(gst::Signed::Positive(t))) => t.mseconds() as i64,
            Some(Some(gst::Signed::Negative(t))) => -(t.mseconds() as i64),
            _ => 0,
        }
    };
    let config = |s: &gst::Sample| -> Bytes {
        let caps = s.caps().unwrap();
        let data = caps
            .structure(0)
            .unwrap()
            .get::<gst::Buffer>("codec_data")
            .unwrap();
        let map = data.map_readable().unwrap();
        Bytes::copy_from_slice(&map)
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    while !stop.is_cancelled() && Instant::now() < deadline {
        if let Some(s) = v.try_pull_sample(gst::ClockTime::from_mseconds(5)) {
            let b = s.buffer().unwrap();
            let (dts, pts) = (ms(&s, b.dts().or(b.pts())), ms(&s, b.pts()));
            let m = Media::Video {
                config: config(&s),
                dts_ms: dts,
                cts_ms: (pts - dts) as i32,
                keyframe: !b.flags().contains(gst::BufferFlags::DELTA_UNIT),
                data: Bytes::copy_from_slice(&b.map_readable().unwrap()),
            };
            if tx.blocking_send(m).is_err() {
                break;
            }
        }
        if let Some(s) = a.try_pull_sample(gst::ClockTime::from_mseconds(5)) {
            let b = s.buffer().unwrap();
            let m = Media::Audio {
                config: config(&s),
                ms: ms(&s, b.pts()),
                data: Bytes::copy_from_slice(&b.map_readable().unwrap()),
            };
            if tx.blocking_send(m).is_err() {
                break;
            }
        }
    }
    let _ = pipeline.set_state(gst::State::Null);
}

/// Running encoders (see [`encode`]), stopped on drop.
pub struct Encoder {
    fourcc: [u8; 4],
    size: (u32, u32),
    rx: tokio::sync::mpsc::Receiver<Media>,
    /// What came while waiting for the encoders to start.
    early: Vec<Media>,
    _stop: tokio_util::sync::DropGuard,
}

impl Encoder {
    /// Starts the encoders for `fourcc` (`hvc1` or `avc1`) at `width`x`height` and waits
    /// (bounded) for their first output, so a publisher connecting next sends media at
    /// once.
    pub async fn start(fourcc: &[u8; 4], width: u32, height: u32) -> Encoder {
        let fourcc = *fourcc;
        let (tx, mut rx) = tokio::sync::mpsc::channel(256);
        let stop = CancellationToken::new();
        let token = stop.clone();
        std::thread::spawn(move || encode(fourcc, (width, height), tx, token));
        let first = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("the encoders start")
            .expect("the encoders run");
        Encoder {
            fourcc,
            size: (width, height),
            rx,
            early: vec![first],
            _stop: stop.drop_guard(),
        }
    }

    async fn next(&mut self) -> Option<Media> {
        if !self.early.is_empty() {
            return Some(self.early.remove(0));
        }
        self.rx.recv().await
    }
}

/// How the publisher behaves.
#[derive(Clone, Copy)]
pub struct Plan {
    /// Send for this long (then `SequenceEnd` and close).
    pub secs: u64,
    /// After this long, restart the encoder at (`width`/2 x `height`/2): a new hvcC in a
    /// mid-stream `SequenceStart`, as OBS sends when its output settings change.
    pub resize_after: Option<Duration>,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            secs: 60,
            resize_after: None,
        }
    }
}

/// A running Enhanced RTMP publisher; dropping it stops it.
pub struct Publisher {
    stop: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Publishes `encoder`'s video (HEVC or H.264 in extended tags) + AAC as OBS 29.1+ does
/// over `client`, following `plan`.
pub fn publish_enhanced<S>(mut client: Client<S>, encoder: Encoder, plan: Plan) -> Publisher
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let stop = CancellationToken::new();
    let token = stop.clone();
    let task = tokio::spawn(async move {
        // OBS announces the codec by its FourCC in onMetaData.
        let mut meta = StreamMetadata::new();
        let ((width, height), fourcc) = (encoder.size, encoder.fourcc);
        meta.video_width = Some(width);
        meta.video_height = Some(height);
        meta.video_codec_id = Some(u32::from_be_bytes(fourcc));
        meta.video_frame_rate = Some(30.0);
        meta.audio_codec_id = Some(10);
        meta.encoder = Some("estuary-test (OBS-like Enhanced RTMP)".into());
        let r = client.session.publish_metadata(&meta).unwrap();
        if client.write(r).await.is_err() {
            return;
        }
        let end = Instant::now() + Duration::from_secs(plan.secs);
        let mut encoder = Some(encoder);
        // Timestamps continue across an encoder restart, as one OBS session's do.
        let mut base = 0i64;
        for i in 0..2 {
            let until = match (i, plan.resize_after) {
                (0, Some(after)) => Instant::now() + after,
                (0, None) => end,
                (_, None) => break,
                (_, Some(_)) => {
                    encoder = Some(Encoder::start(&fourcc, width / 2, height / 2).await);
                    end
                }
            };
            let enc = encoder.take().expect("an encoder");
            match run_encoder(&mut client, enc, base, until, &token).await {
                Some(last) => base = last + 40,
                None => return,
            }
        }
        let _ = client
            .video(ex_video(&fourcc, false, 2, None, &[]), base as u32)
            .await;
        let _ = client.io.shutdown().await;
    });
    Publisher { stop, task }
}

/// Runs one encoder until `until` and sends its media; returns the last timestamp sent,
/// or `None` when the connection failed or the publisher was stopped.
async fn run_encoder<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Client<S>,
    mut encoder: Encoder,
    base: i64,
    until: Instant,
    token: &CancellationToken,
) -> Option<i64> {
    // Encoder time starts near 0 and may be negative for the first decode times (B-frames):
    // lift it so every timestamp sent is positive.
    let ts = |t: i64| (base + 200 + t).max(0) as u32;
    let (mut video_cfg, mut audio_cfg) = (None::<Bytes>, None::<Bytes>);
    let mut held = Vec::new();
    let mut headers_sent = false;
    let mut last = base;
    loop {
        let m = tokio::select! {
            () = token.cancelled() => return None,
            () = tokio::time::sleep_until(until.into()) => return Some(last),
            m = encoder.next() => m?,
        };
        // Headers first, audio's before video's (OBS's order): hold media until both
        // encoders have told their configuration.
        match &m {
            Media::Video { config, .. } if video_cfg.is_none() => video_cfg = Some(config.clone()),
            Media::Audio { config, .. } if audio_cfg.is_none() => audio_cfg = Some(config.clone()),
            _ => {}
        }
        held.push(m);
        if !headers_sent {
            let (Some(v), Some(a)) = (&video_cfg, &audio_cfg) else {
                continue;
            };
            let first = held
                .iter()
                .map(|m| match m {
                    Media::Video { dts_ms, .. } => ts(*dts_ms),
                    Media::Audio { ms, .. } => ts(*ms),
                })
                .min()
                .unwrap_or_default();
            client.audio(aac(0, a), first).await.ok()?;
            client
                .video(ex_video(&encoder.fourcc, true, 0, None, v), first)
                .await
                .ok()?;
            headers_sent = true;
        }
        for m in held.drain(..) {
            let r = match m {
                Media::Video {
                    dts_ms,
                    cts_ms,
                    keyframe,
                    data,
                    ..
                } => {
                    last = i64::from(ts(dts_ms));
                    client
                        .video(
                            ex_video(&encoder.fourcc, keyframe, 1, Some(cts_ms), &data),
                            ts(dts_ms),
                        )
                        .await
                }
                Media::Audio { ms, data, .. } => client.audio(aac(1, &data), ts(ms)).await,
            };
            r.ok()?;
        }
    }
}
