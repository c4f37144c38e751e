//! A CONNECT stream as a byte stream: `AsyncRead` + `AsyncWrite` over an h2 send/receive pair,
//! with HTTP/2 flow control released as the reader consumes data.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use h2::{Reason, RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Runs a function when dropped (the pool releases its stream slot), whether or not the stream
/// it was meant for was ever established.
pub(crate) struct OnDrop(Option<Box<dyn FnOnce() + Send + Sync>>);

impl OnDrop {
    pub(crate) fn new(f: impl FnOnce() + Send + Sync + 'static) -> Self {
        OnDrop(Some(Box::new(f)))
    }
}

impl Drop for OnDrop {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// One tunnelled TCP connection: bytes written go to the peer, bytes read come from it.
/// Shutting down the write side sends END_STREAM (a TCP half-close).
pub struct HboneStream {
    pub(crate) send: SendStream<Bytes>,
    pub(crate) recv: RecvStream,
    /// Received from h2, not yet read.
    pub(crate) buf: Bytes,
    /// END_STREAM sent: dropping the stream is no abort.
    pub(crate) write_closed: bool,
    /// Dropped after `Drop::drop` has reset the stream.
    _on_drop: Option<OnDrop>,
}

impl std::fmt::Debug for HboneStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HboneStream")
            .field("buffered", &self.buf.len())
            .field("write_closed", &self.write_closed)
            .finish_non_exhaustive()
    }
}

impl HboneStream {
    pub(crate) fn new(send: SendStream<Bytes>, recv: RecvStream, on_drop: Option<OnDrop>) -> Self {
        HboneStream {
            send,
            recv,
            buf: Bytes::new(),
            write_closed: false,
            _on_drop: on_drop,
        }
    }
}

impl Drop for HboneStream {
    fn drop(&mut self) {
        if !self.write_closed {
            // Dropping without a shutdown is an abort, as closing a socket with unread data.
            self.send.send_reset(Reason::CANCEL);
        }
    }
}

fn h2_to_io(err: h2::Error) -> io::Error {
    if err.is_io() {
        match err.into_io() {
            Some(io) => io,
            None => io::Error::new(io::ErrorKind::BrokenPipe, "h2 I/O error"),
        }
    } else {
        io::Error::other(err)
    }
}

impl AsyncRead for HboneStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.buf.is_empty() {
            this.buf = loop {
                match ready!(this.recv.poll_data(cx)) {
                    None => return Poll::Ready(Ok(())),
                    Some(Ok(data)) if data.is_empty() && !this.recv.is_end_stream() => continue,
                    Some(Ok(data)) => break data,
                    Some(Err(e)) => {
                        return Poll::Ready(match e.reason() {
                            // The peer closed without error: end of stream.
                            Some(Reason::NO_ERROR) => Ok(()),
                            Some(Reason::CANCEL) | Some(Reason::STREAM_CLOSED) => {
                                Err(io::ErrorKind::ConnectionReset.into())
                            }
                            _ => Err(h2_to_io(e)),
                        });
                    }
                }
            };
        }
        let n = this.buf.len().min(out.remaining());
        out.put_slice(&this.buf[..n]);
        this.buf.advance(n);
        // The window opens again only for what the application actually consumed.
        let _ = this.recv.flow_control().release_capacity(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for HboneStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        this.send.reserve_capacity(buf.len());
        let written = match ready!(this.send.poll_capacity(cx)) {
            Some(Ok(0)) => {
                // Capacity was granted then taken back: wait for more.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Some(Ok(cap)) => {
                let n = cap.min(buf.len());
                this.send
                    .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                    .ok()
                    .map(|()| n)
            }
            None | Some(Err(_)) => None,
        };
        if let Some(n) = written {
            return Poll::Ready(Ok(n));
        }
        // The stream is gone: report why.
        Poll::Ready(Err(match ready!(this.send.poll_reset(cx)) {
            Ok(Reason::NO_ERROR) | Ok(Reason::CANCEL) | Ok(Reason::STREAM_CLOSED) => {
                io::ErrorKind::BrokenPipe.into()
            }
            Ok(reason) => io::Error::other(h2::Error::from(reason)),
            Err(e) => h2_to_io(e),
        }))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // h2 sends data as soon as the connection task runs; nothing is buffered here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.write_closed {
            return Poll::Ready(Ok(()));
        }
        this.write_closed = true;
        match this.send.send_data(Bytes::new(), true) {
            Ok(()) => Poll::Ready(Ok(())),
            // Already reset by the peer: there is nothing left to close.
            Err(e) if e.is_reset() => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(h2_to_io(e))),
        }
    }
}
