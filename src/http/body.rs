//! A body that sends an object's chunks as they are stored: a segment goes out as its
//! parts, with no copy to join them.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// Streams a list of shared byte chunks.
pub struct ChunksBody {
    chunks: Arc<[Bytes]>,
    next: usize,
}

impl ChunksBody {
    /// A body over `chunks`.
    pub fn new(chunks: Arc<[Bytes]>) -> Self {
        Self { chunks, next: 0 }
    }
}

impl Body for ChunksBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let i = self.next;
        if i >= self.chunks.len() {
            return Poll::Ready(None);
        }
        self.next += 1;
        Poll::Ready(Some(Ok(Frame::data(self.chunks[i].clone()))))
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.chunks.len()
    }

    fn size_hint(&self) -> SizeHint {
        let rest: u64 = self.chunks[self.next.min(self.chunks.len())..]
            .iter()
            .map(|c| c.len() as u64)
            .sum();
        SizeHint::with_exact(rest)
    }
}
