//! Server-to-client frames on the wire: each broadcast is framed once, and a connection
//! writes whatever it has queued in one vectored write.
//!
//! A server frame is never masked (RFC 6455 §5.1), so one complete frame (header and
//! payload) is the same bytes for every receiver. The room builds it once with tungstenite's
//! own framing; connections hand the shared [`Bytes`] to the socket as they are, without a
//! per-connection copy into tungstenite's write buffer.

use std::{collections::VecDeque, io, io::IoSlice};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{
    protocol::frame::{
        coding::{Data, OpCode},
        Frame,
    },
    Utf8Bytes,
};

/// One complete, unmasked, final WebSocket text frame.
#[derive(Clone, Debug)]
pub(crate) struct WireFrame(Bytes);

impl WireFrame {
    /// Frames `text` (one copy, into the frame's own buffer).
    pub fn text(text: Utf8Bytes) -> Self {
        let frame = Frame::message(text, OpCode::Data(Data::Text), true);
        let mut buf = Vec::with_capacity(frame.len());
        // Formatting into a Vec only fails if allocation does, which aborts anyway.
        let _ = frame.format(&mut buf);
        Self(Bytes::from(buf))
    }

    /// The frame as written to the socket.
    #[cfg(test)]
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// The frame's text, read back through tungstenite's header parser.
    #[cfg(test)]
    pub fn payload(&self) -> &str {
        use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
        let mut cur = io::Cursor::new(&self.0[..]);
        let (_, len) = FrameHeader::parse(&mut cur)
            .ok()
            .flatten()
            .expect("a whole frame");
        let start = cur.position() as usize;
        std::str::from_utf8(&self.0[start..start + len as usize]).expect("text")
    }
}

/// Frames waiting for one socket. Writing is cancel-safe: a write cut short (a timeout)
/// leaves exactly the unwritten rest here, so the byte stream stays whole frames.
#[derive(Default)]
pub(super) struct Outbox {
    frames: VecDeque<Bytes>,
    /// Bytes left, over all frames.
    len: usize,
}

impl Outbox {
    pub fn push(&mut self, f: &WireFrame) {
        self.len += f.0.len();
        self.frames.push_back(f.0.clone());
    }

    /// Room for `n` more frames, so that draining a queue does not grow the outbox step by
    /// step.
    pub fn reserve(&mut self, n: usize) {
        self.frames.reserve(n);
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes everything queued (vectored, up to 64 frames a system call) and flushes once.
    ///
    /// # Errors
    /// The socket's error; what was not written stays queued.
    pub async fn write_to<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> io::Result<()> {
        io.write_all_buf(self).await?;
        io.flush().await?;
        // An idle connection keeps no queue memory (one allocation a write is cheap next
        // to the system call).
        self.frames = VecDeque::new();
        Ok(())
    }
}

impl Buf for Outbox {
    fn remaining(&self) -> usize {
        self.len
    }

    fn chunk(&self) -> &[u8] {
        self.frames.front().map_or(&[], |b| &b[..])
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.len, "advance past the end of the outbox");
        self.len -= cnt;
        while cnt > 0 {
            let Some(front) = self.frames.front_mut() else {
                return;
            };
            if cnt < front.len() {
                front.advance(cnt);
                return;
            }
            cnt -= front.len();
            self.frames.pop_front();
        }
        // Drop empty frames left at the front so `chunk` is never empty while bytes remain.
        while self.frames.front().is_some_and(|b| b.is_empty()) {
            self.frames.pop_front();
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, b) in dst
            .iter_mut()
            .zip(self.frames.iter().filter(|b| !b.is_empty()))
        {
            *slot = IoSlice::new(b);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use std::{
        pin::Pin,
        task::{Context, Poll},
    };

    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::{
        tungstenite::{protocol::Role, Message},
        WebSocketStream,
    };

    use super::*;

    fn frame(i: usize, len: usize) -> WireFrame {
        let text = format!("{i}:{}", "x".repeat(len));
        WireFrame::text(Utf8Bytes::from(text))
    }

    #[test]
    fn frames_carry_their_text_with_every_length_form() {
        // 7-bit, 16-bit and 64-bit payload lengths.
        for len in [0, 125, 126, 65_535, 65_536] {
            let f = WireFrame::text(Utf8Bytes::from("y".repeat(len)));
            assert_eq!(f.payload().len(), len);
            assert_eq!(f.bytes()[0], 0x81, "FIN + text");
            assert_eq!(f.bytes()[1] & 0x80, 0, "server frames are unmasked");
        }
    }

    /// A writer that takes at most `step` bytes a call, and every `stall`th call returns
    /// `Pending` (waking itself), like a socket with a small, filling buffer.
    struct Trickle {
        out: Vec<u8>,
        step: usize,
        calls: usize,
        stall: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.calls += 1;
            if self.calls.is_multiple_of(self.stall) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = buf.len().min(self.step);
            self.out.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            self.poll_write(cx, &joined)
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// What an independent reader (tungstenite's client side) makes of `bytes`.
    async fn read_back(bytes: Vec<u8>) -> Vec<String> {
        let (mut a, b) = tokio::io::duplex(1 << 20);
        let reader = tokio::spawn(async move {
            let mut ws = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
            let mut got = Vec::new();
            while let Some(Ok(Message::Text(t))) = ws.next().await {
                got.push(t.as_str().to_owned());
            }
            got
        });
        a.write_all(&bytes).await.unwrap();
        drop(a);
        reader.await.unwrap()
    }

    #[tokio::test]
    async fn coalesced_frames_stay_whole_frames_in_order() {
        let frames: Vec<WireFrame> = (0..300).map(|i| frame(i, i * 7 % 400)).collect();
        let mut out = Outbox::default();
        let mut io = Trickle {
            out: Vec::new(),
            step: 997,
            calls: 0,
            stall: 5,
        };
        // Three batches, as a connection drains its queue three times.
        for batch in frames.chunks(100) {
            for f in batch {
                out.push(f);
            }
            out.write_to(&mut io).await.unwrap();
            assert!(out.is_empty());
        }
        let got = read_back(io.out).await;
        let want: Vec<String> = frames.iter().map(|f| f.payload().to_owned()).collect();
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn a_cut_short_write_resumes_where_it_stopped() {
        let frames: Vec<WireFrame> = (0..50).map(|i| frame(i, 300)).collect();
        let mut out = Outbox::default();
        for f in &frames {
            out.push(f);
        }
        let mut io = Trickle {
            out: Vec::new(),
            step: 1_000,
            calls: 0,
            stall: 3,
        };
        // Cancel the write at its first `Pending`, as the write timeout does.
        let first = futures_util::poll!(Box::pin(out.write_to(&mut io)));
        assert!(first.is_pending());
        assert!(!out.is_empty());
        let written = io.out.len();
        assert!(written > 0 && written < frames.iter().map(|f| f.bytes().len()).sum::<usize>());
        out.write_to(&mut io).await.unwrap();
        let got = read_back(io.out).await;
        assert_eq!(got.len(), 50);
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, t)| t.starts_with(&format!("{i}:"))));
    }

    #[tokio::test]
    async fn raw_frames_interleave_with_tungstenite_frames() {
        // A reply through tungstenite, then shared frames, then another reply: the client
        // reads them in that order.
        let (server, client) = tokio::io::duplex(1 << 16);
        let mut ws = WebSocketStream::from_raw_socket(server, Role::Server, None).await;
        let reader = tokio::spawn(async move {
            let mut c = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
            let mut got = Vec::new();
            for _ in 0..4 {
                match c.next().await {
                    Some(Ok(Message::Text(t))) => got.push(t.as_str().to_owned()),
                    other => panic!("unexpected {other:?}"),
                }
            }
            got
        });
        ws.send(Message::text("a")).await.unwrap();
        let mut out = Outbox::default();
        out.push(&WireFrame::text("b".into()));
        out.push(&WireFrame::text("c".into()));
        ws.flush().await.unwrap();
        out.write_to(ws.get_mut()).await.unwrap();
        ws.send(Message::text("d")).await.unwrap();
        assert_eq!(reader.await.unwrap(), ["a", "b", "c", "d"]);
    }
}
