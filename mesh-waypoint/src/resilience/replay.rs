//! A request body that can be sent again: streamed to the first try as it arrives while a copy
//! is kept, up to [`REPLAY_LIMIT`] bytes; a retry's body replays the copy, then goes on reading
//! where the previous try stopped (Linkerd's replay body). Beyond the limit the copy is dropped
//! and the request is not retried (the body was partly sent and cannot be sent again).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// Bytes of request body kept for retries.
pub const REPLAY_LIMIT: usize = 64 * 1024;

#[derive(Debug)]
struct Kept<B> {
    rest: Option<B>,
    chunks: Vec<Bytes>,
    len: usize,
    trailers: Option<HeaderMap>,
    ended: bool,
    overflow: bool,
}

/// The request body shared by the tries of one request.
#[derive(Debug)]
pub struct Replay<B = Incoming> {
    kept: Arc<Mutex<Kept<B>>>,
}

fn lock<B>(m: &Mutex<Kept<B>>) -> std::sync::MutexGuard<'_, Kept<B>> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<B> Replay<B> {
    /// Keeps `body` for the tries.
    pub fn new(body: B) -> Replay<B> {
        Replay {
            kept: Arc::new(Mutex::new(Kept {
                rest: Some(body),
                chunks: Vec::new(),
                len: 0,
                trailers: None,
                ended: false,
                overflow: false,
            })),
        }
    }

    /// The body of the next try, or why there is none.
    pub fn body(&self) -> Result<ReplayBody<B>, &'static str> {
        let mut kept = lock(&self.kept);
        if kept.overflow {
            return Err("request body beyond the replay limit");
        }
        if !kept.ended && kept.rest.is_none() {
            return Err("request body still held by the previous try");
        }
        Ok(ReplayBody {
            kept: self.kept.clone(),
            replay: kept.chunks.iter().cloned().collect(),
            trailers: if kept.ended {
                kept.trailers.clone()
            } else {
                None
            },
            rest: kept.rest.take(),
        })
    }

    /// The whole body, if it has been read to its end and kept (for a mirror).
    pub fn complete(&self) -> Option<(Bytes, Option<HeaderMap>)> {
        let kept = lock(&self.kept);
        if !kept.ended || kept.overflow {
            return None;
        }
        let mut all = Vec::with_capacity(kept.len);
        for c in &kept.chunks {
            all.extend_from_slice(c);
        }
        Some((Bytes::from(all), kept.trailers.clone()))
    }
}

/// One try's view of the request body.
#[derive(Debug)]
pub struct ReplayBody<B = Incoming> {
    kept: Arc<Mutex<Kept<B>>>,
    replay: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    rest: Option<B>,
}

impl<B: Body<Data = Bytes> + Unpin> Body for ReplayBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        if let Some(chunk) = this.replay.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        let Some(rest) = this.rest.as_mut() else {
            return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
        };
        match Pin::new(rest).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.rest = None;
                lock(&this.kept).ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                let mut kept = lock(&this.kept);
                if let Some(data) = frame.data_ref() {
                    if !kept.overflow {
                        if kept.len + data.len() > REPLAY_LIMIT {
                            kept.overflow = true;
                            kept.chunks = Vec::new();
                        } else {
                            kept.len += data.len();
                            kept.chunks.push(data.clone());
                        }
                    }
                } else if let Some(t) = frame.trailers_ref() {
                    kept.trailers = Some(t.clone());
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.replay.is_empty()
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let replayed: usize = self.replay.iter().map(Bytes::len).sum();
        let rest = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |r| r.size_hint());
        let mut hint = SizeHint::new();
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + replayed as u64);
        }
        hint.set_lower(rest.lower() + replayed as u64);
        hint
    }
}

impl<B> Drop for ReplayBody<B> {
    fn drop(&mut self) {
        if let Some(rest) = self.rest.take() {
            lock(&self.kept).rest = Some(rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Full};

    use super::*;

    async fn collect<B: Body<Data = Bytes> + Unpin>(body: B) -> Vec<u8>
    where
        B::Error: std::fmt::Debug,
    {
        body.collect().await.expect("body").to_bytes().to_vec()
    }

    #[tokio::test]
    async fn a_retry_replays_what_was_sent() {
        let replay = Replay::new(Full::new(Bytes::from_static(b"hello")));
        let first = replay.body().expect("first");
        assert_eq!(collect(first).await, b"hello");
        let second = replay.body().expect("second");
        assert_eq!(collect(second).await, b"hello");
        assert_eq!(
            replay.complete().map(|(b, _)| b),
            Some(Bytes::from_static(b"hello"))
        );
    }

    #[tokio::test]
    async fn a_try_that_never_read_hands_the_body_on() {
        let replay = Replay::new(Full::new(Bytes::from_static(b"abc")));
        drop(replay.body().expect("first"));
        assert_eq!(replay.complete(), None, "not read yet");
        assert_eq!(collect(replay.body().expect("second")).await, b"abc");
    }

    #[tokio::test]
    async fn a_held_or_oversized_body_is_not_replayed() {
        let replay = Replay::new(Full::new(Bytes::from(vec![7u8; REPLAY_LIMIT + 1])));
        let held = replay.body().expect("first");
        assert_eq!(
            replay.body().err(),
            Some("request body still held by the previous try")
        );
        assert_eq!(collect(held).await.len(), REPLAY_LIMIT + 1);
        assert_eq!(
            replay.body().err(),
            Some("request body beyond the replay limit")
        );
        assert_eq!(replay.complete(), None);
    }
}
