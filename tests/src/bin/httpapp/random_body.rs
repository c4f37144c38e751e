//! A request body of pseudo-random bytes generated as it is sent, 64 KiB at a time, with a
//! shared count of what was handed out (so a stalled upload can be told from a slow one).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use hyper::body::{Body, Frame};

/// The size of one generated frame.
const CHUNK: u64 = 64 * 1024;

#[derive(Debug)]
pub struct RandomBody {
    remaining: u64,
    state: u64,
    sent: Arc<AtomicU64>,
}

impl RandomBody {
    /// `len` bytes from the xorshift64 sequence of `seed` (0 is taken as 1); `sent` counts them.
    pub fn new(len: u64, seed: u64, sent: Arc<AtomicU64>) -> Self {
        RandomBody {
            remaining: len,
            state: seed.max(1),
            sent,
        }
    }

    fn next_word(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }

    /// The next frame's bytes, or `None` at the end.
    pub fn next_chunk(&mut self) -> Option<Bytes> {
        if self.remaining == 0 {
            return None;
        }
        let len = self.remaining.min(CHUNK);
        // len <= CHUNK, so it fits.
        let len_usize = usize::try_from(len).unwrap_or(0);
        let mut buf = BytesMut::with_capacity(len_usize + 8);
        while buf.len() < len_usize {
            let word = self.next_word();
            buf.put_u64_le(word);
        }
        buf.truncate(len_usize);
        self.remaining -= len;
        self.sent.fetch_add(len, Ordering::Relaxed);
        Some(buf.freeze())
    }
}

impl Body for RandomBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().next_chunk().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    // The size hint stays unknown on purpose: HTTP/1.1 sends the body chunked.
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_their_length_in_bounded_chunks() {
        for len in [0u64, 1, 7, 8, 65_535, 65_536, 65_537, 1_000_000] {
            let sent = Arc::new(AtomicU64::new(0));
            let mut body = RandomBody::new(len, 42, sent.clone());
            let mut total = 0u64;
            let mut frames = 0;
            while let Some(chunk) = body.next_chunk() {
                assert!(chunk.len() as u64 <= CHUNK && !chunk.is_empty());
                total += chunk.len() as u64;
                frames += 1;
            }
            assert_eq!(total, len);
            assert_eq!(sent.load(Ordering::Relaxed), len);
            assert_eq!(frames, len.div_ceil(CHUNK));
            assert!(body.is_end_stream());
        }
    }

    #[test]
    fn bytes_are_not_a_constant_pattern() {
        let mut body = RandomBody::new(4096, 7, Arc::new(AtomicU64::new(0)));
        let chunk = body.next_chunk().unwrap();
        let distinct: std::collections::BTreeSet<u8> = chunk.iter().copied().collect();
        assert!(
            distinct.len() > 200,
            "only {} distinct bytes",
            distinct.len()
        );
    }
}
