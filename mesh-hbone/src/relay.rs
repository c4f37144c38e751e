//! Relays that own no buffer while the connection is idle: TCP ↔ HBONE stream and TCP ↔ TCP.
//!
//! `tokio::io::copy_bidirectional` keeps two 8 KiB buffers per relay for the life of the
//! connection, idle or not. These relays wait for readiness first and only then take memory:
//! - TCP → HBONE: once the socket is readable, read into a fresh [`BytesMut`] (4 KiB, or 64 KiB
//!   while data comes in bulk; later reads of a burst reuse its spare capacity) and hand the
//!   frozen [`Bytes`] to h2 without a copy; when the socket has nothing more to give, the spare
//!   capacity is dropped;
//! - HBONE → TCP: h2 already yields [`Bytes`]: write them out, release flow-control capacity for
//!   exactly the bytes written, hold nothing once they are;
//! - TCP → TCP: read into a per-thread scratch buffer and write straight on; only what the writer
//!   would not take right away is kept, until it does.
//!
//! Both directions run in one future (one task, one waker). EOF on one side half-closes the other
//! (TCP `shutdown(Write)`, h2 END_STREAM); a read or write error, or a reset of the HBONE stream,
//! ends the whole relay. Byte counts are kept per direction whatever the ending.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use h2::{Reason, RecvStream, SendStream};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use crate::hbone::HboneStream;

/// Read allocation while data comes in bulk (a read filled the last one): a few TLS records and
/// h2 frames per read.
pub const READ_CHUNK: usize = 64 * 1024;
/// Read allocation for request/response traffic. Small enough to be recycled by the allocator
/// without touching the heap's top: a 64 KiB allocation per 64-byte message made glibc trim
/// and regrow its heap (syscalls and page faults) on every message.
pub const SMALL_READ_CHUNK: usize = 4 * 1024;
/// Below this much spare capacity, the next read of a burst takes a fresh allocation.
const MIN_SPARE: usize = 1024;
/// The per-thread scratch buffer of TCP → TCP relays.
pub const SCRATCH_LEN: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Which way bytes were moving when a relay failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the relay's first side to its second.
    Forward,
    /// From the second side to the first.
    Backward,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Forward => "forward",
            Direction::Backward => "backward",
        })
    }
}

/// Why a relay ended before both directions closed in order.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Reading a TCP socket failed (e.g. reset by its peer).
    #[error("{direction}: reading: {source}")]
    Read {
        /// The direction whose source failed.
        direction: Direction,
        /// The socket error.
        source: io::Error,
    },
    /// Writing a TCP socket failed (e.g. its peer is gone).
    #[error("{direction}: writing: {source}")]
    Write {
        /// The direction whose destination failed.
        direction: Direction,
        /// The socket error.
        source: io::Error,
    },
    /// The peer reset the HBONE stream.
    #[error("HBONE stream reset by the peer ({0})")]
    Reset(Reason),
    /// The HTTP/2 stream or its connection failed.
    #[error("HTTP/2: {0}")]
    H2(#[from] h2::Error),
    /// The relay was cut on purpose before it ended (see [`TcpRelay::cut`]).
    #[error("cut: {0}")]
    Cut(&'static str),
}

/// What a relay moved, and how it ended.
#[derive(Debug)]
pub struct Relayed {
    /// Bytes delivered from the first side to the second.
    pub forward: u64,
    /// Bytes delivered from the second side to the first.
    pub backward: u64,
    /// `Ok` when both directions ended with an orderly close.
    pub result: Result<(), RelayError>,
}

impl Relayed {
    /// The same figures seen from the other side (forward and backward swapped).
    pub fn reversed(self) -> Relayed {
        Relayed {
            forward: self.backward,
            backward: self.forward,
            result: self.result,
        }
    }
}

/// Relays between `tcp` (first side) and `hbone` (second side) until both directions are closed
/// or one fails; `forward` counts TCP → HBONE bytes.
pub fn tcp_hbone(tcp: TcpStream, mut hbone: HboneStream) -> HboneRelay {
    // Bytes a reader of the stream had already taken from h2 but not consumed go out first.
    let pending = std::mem::take(&mut hbone.buf);
    HboneRelay {
        tcp,
        hbone,
        up: TcpToHbone::default(),
        down: HboneToTcp {
            pending,
            ..HboneToTcp::default()
        },
    }
}

/// Relays between two TCP sockets until both directions are closed or one fails; `forward`
/// counts `a` → `b` bytes.
pub fn tcp_tcp(a: TcpStream, b: TcpStream) -> TcpRelay {
    TcpRelay {
        a,
        b,
        forward: TcpToTcp::default(),
        backward: TcpToTcp::default(),
    }
}

/// The future of [`tcp_hbone`].
#[derive(Debug)]
#[must_use = "a relay moves nothing unless awaited"]
pub struct HboneRelay {
    tcp: TcpStream,
    hbone: HboneStream,
    up: TcpToHbone,
    down: HboneToTcp,
}

impl Future for HboneRelay {
    type Output = Relayed;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Relayed> {
        let this = &mut *self;
        let up = if this.up.done {
            Poll::Ready(Ok(()))
        } else {
            this.up.poll(cx, &this.tcp, &mut this.hbone)
        };
        let down = if this.down.done {
            Poll::Ready(Ok(()))
        } else {
            this.down.poll(cx, &mut this.tcp, &mut this.hbone.recv)
        };
        let result = match (up, down) {
            (Poll::Ready(Err(e)), _) | (_, Poll::Ready(Err(e))) => Err(e),
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => Ok(()),
            _ => return Poll::Pending,
        };
        if let Err(RelayError::Reset(_) | RelayError::H2(_)) = &result {
            // Carry the reset on to the TCP peer rather than a clean FIN: it must not take a
            // truncated stream for a complete one.
            let _ = this.tcp.set_zero_linger();
        }
        Poll::Ready(Relayed {
            forward: this.up.count,
            backward: this.down.count,
            result,
        })
    }
}

impl HboneRelay {
    /// Ends the relay now, on purpose (e.g. the connection is no longer authorized): the TCP
    /// socket closes with a reset and the HBONE stream is reset (CANCEL) as it drops, so neither
    /// peer takes the truncated stream for a complete one. Returns what was moved so far.
    pub fn cut(self, why: &'static str) -> Relayed {
        let _ = self.tcp.set_zero_linger();
        Relayed {
            forward: self.up.count,
            backward: self.down.count,
            result: Err(RelayError::Cut(why)),
        }
    }
}

/// TCP → HBONE: read when readable into fresh memory, hand it to h2 as flow control allows.
#[derive(Debug, Default)]
struct TcpToHbone {
    /// Spare read space of the current burst; no allocation when idle.
    buf: BytesMut,
    /// Read, not yet taken by h2 (waiting for flow-control capacity).
    pending: Bytes,
    /// The last read filled its buffer: bulk data, read [`READ_CHUNK`] at a time.
    bulk: bool,
    count: u64,
    done: bool,
}

impl TcpToHbone {
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        tcp: &TcpStream,
        hbone: &mut HboneStream,
    ) -> Poll<Result<(), RelayError>> {
        let send = &mut hbone.send;
        loop {
            if !self.pending.is_empty() {
                let n = ready!(poll_send_capacity(cx, send, self.pending.len()))?;
                let chunk = self.pending.split_to(n);
                send.send_data(chunk, false)?;
                self.count += n as u64;
                continue;
            }
            // Idle: notice a reset of the stream even while the socket has nothing to say.
            if let Poll::Ready(reset) = send.poll_reset(cx) {
                return Poll::Ready(Err(match reset {
                    Ok(reason) => RelayError::Reset(reason),
                    Err(e) => RelayError::H2(e),
                }));
            }
            ready!(tcp.poll_read_ready(cx)).map_err(|source| RelayError::Read {
                direction: Direction::Forward,
                source,
            })?;
            if self.buf.capacity() < MIN_SPARE {
                let size = if self.bulk {
                    READ_CHUNK
                } else {
                    SMALL_READ_CHUNK
                };
                self.buf = BytesMut::with_capacity(size);
            }
            let room = self.buf.capacity();
            match tcp.try_read_buf(&mut self.buf) {
                Ok(0) => {
                    self.buf = BytesMut::new();
                    hbone.write_closed = true;
                    send.send_data(Bytes::new(), true)?;
                    self.done = true;
                    return Poll::Ready(Ok(()));
                }
                Ok(n) => {
                    if n == room {
                        self.bulk = true;
                    } else if n < SMALL_READ_CHUNK / 2 {
                        self.bulk = false;
                    }
                    self.pending = self.buf.split().freeze();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The burst is over: give the spare space back while idle.
                    self.buf = BytesMut::new();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Poll::Ready(Err(RelayError::Read {
                        direction: Direction::Forward,
                        source,
                    }))
                }
            }
        }
    }
}

/// Waits until h2 lets the stream send some of `wanted` bytes; returns how many.
fn poll_send_capacity(
    cx: &mut Context<'_>,
    send: &mut SendStream<Bytes>,
    wanted: usize,
) -> Poll<Result<usize, RelayError>> {
    send.reserve_capacity(wanted);
    loop {
        let available = send.capacity();
        if available > 0 {
            return Poll::Ready(Ok(available.min(wanted)));
        }
        match ready!(send.poll_capacity(cx)) {
            Some(Ok(_)) => {}
            Some(Err(e)) => return Poll::Ready(Err(RelayError::H2(e))),
            // The stream can no longer send: say why.
            None => {
                return Poll::Ready(Err(match ready!(send.poll_reset(cx)) {
                    Ok(reason) => RelayError::Reset(reason),
                    Err(e) => RelayError::H2(e),
                }))
            }
        }
    }
}

/// HBONE → TCP: write what h2 yields, release its window for the bytes written.
#[derive(Debug, Default)]
struct HboneToTcp {
    /// Received, not yet written.
    pending: Bytes,
    count: u64,
    done: bool,
}

impl HboneToTcp {
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        tcp: &mut TcpStream,
        recv: &mut RecvStream,
    ) -> Poll<Result<(), RelayError>> {
        loop {
            while !self.pending.is_empty() {
                ready!(tcp.poll_write_ready(cx)).map_err(write_error)?;
                match tcp.try_write(&self.pending) {
                    Ok(n) => {
                        self.pending.advance(n);
                        self.count += n as u64;
                        // The window opens again only for what the destination has taken.
                        let _ = recv.flow_control().release_capacity(n);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        ) => {}
                    Err(e) => return Poll::Ready(Err(write_error(e))),
                }
            }
            // Drop the emptied slice's hold on h2's allocation before waiting.
            self.pending = Bytes::new();
            match ready!(recv.poll_data(cx)) {
                Some(Ok(data)) => self.pending = data,
                // END_STREAM, or a reset with NO_ERROR (the peer was done): half-close.
                None => break,
                Some(Err(e)) if e.reason() == Some(Reason::NO_ERROR) => break,
                Some(Err(e)) => {
                    return Poll::Ready(Err(match e.reason() {
                        Some(reason) if e.is_reset() => RelayError::Reset(reason),
                        _ => RelayError::H2(e),
                    }))
                }
            }
        }
        ready!(Pin::new(tcp).poll_shutdown(cx)).map_err(write_error)?;
        self.done = true;
        Poll::Ready(Ok(()))
    }
}

fn write_error(source: io::Error) -> RelayError {
    RelayError::Write {
        direction: Direction::Backward,
        source,
    }
}

/// The future of [`tcp_tcp`].
#[derive(Debug)]
#[must_use = "a relay moves nothing unless awaited"]
pub struct TcpRelay {
    a: TcpStream,
    b: TcpStream,
    forward: TcpToTcp,
    backward: TcpToTcp,
}

impl Future for TcpRelay {
    type Output = Relayed;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Relayed> {
        let this = &mut *self;
        let forward = this
            .forward
            .poll(cx, &this.a, &mut this.b, Direction::Forward);
        let backward = this
            .backward
            .poll(cx, &this.b, &mut this.a, Direction::Backward);
        let result = match (forward, backward) {
            (Poll::Ready(Err(e)), _) | (_, Poll::Ready(Err(e))) => Err(e),
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => Ok(()),
            _ => return Poll::Pending,
        };
        if result.is_err() {
            // One side failed (typically reset): reset the other too rather than let it take
            // the truncated stream for a complete one.
            let _ = this.a.set_zero_linger();
            let _ = this.b.set_zero_linger();
        }
        Poll::Ready(Relayed {
            forward: this.forward.count,
            backward: this.backward.count,
            result,
        })
    }
}

impl TcpRelay {
    /// Ends the relay now, on purpose (e.g. the connection is no longer authorized): both
    /// sockets close with a reset, so neither peer takes the truncated stream for a complete
    /// one. Returns what was moved so far.
    pub fn cut(self, why: &'static str) -> Relayed {
        let _ = self.a.set_zero_linger();
        let _ = self.b.set_zero_linger();
        Relayed {
            forward: self.forward.count,
            backward: self.backward.count,
            result: Err(RelayError::Cut(why)),
        }
    }
}

/// One direction of a TCP → TCP relay.
#[derive(Debug, Default)]
struct TcpToTcp {
    /// What the destination would not take yet (empty, unallocated, when it keeps up).
    pending: Vec<u8>,
    written: usize,
    count: u64,
    eof: bool,
    done: bool,
}

impl TcpToTcp {
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        from: &TcpStream,
        to: &mut TcpStream,
        direction: Direction,
    ) -> Poll<Result<(), RelayError>> {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        let read_error = |source| RelayError::Read { direction, source };
        let write_error = |source| RelayError::Write { direction, source };
        loop {
            while self.written < self.pending.len() {
                ready!(to.poll_write_ready(cx)).map_err(write_error)?;
                match to.try_write(&self.pending[self.written..]) {
                    Ok(n) => {
                        self.written += n;
                        self.count += n as u64;
                    }
                    Err(e) if would_block(&e) => {}
                    Err(e) => return Poll::Ready(Err(write_error(e))),
                }
            }
            if !self.pending.is_empty() {
                self.pending = Vec::new();
                self.written = 0;
            }
            if self.eof {
                ready!(Pin::new(&mut *to).poll_shutdown(cx)).map_err(write_error)?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            ready!(from.poll_read_ready(cx)).map_err(read_error)?;
            let step = SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                if scratch.len() < SCRATCH_LEN {
                    scratch.resize(SCRATCH_LEN, 0);
                }
                let n = match from.try_read(&mut scratch) {
                    Ok(0) => return Ok(Step::Eof),
                    Ok(n) => n,
                    Err(e) if would_block(&e) => return Ok(Step::Again),
                    Err(e) => return Err(read_error(e)),
                };
                let written = match to.try_write(&scratch[..n]) {
                    Ok(w) => w,
                    Err(e) if would_block(&e) => 0,
                    Err(e) => return Err(write_error(e)),
                };
                self.count += written as u64;
                if written < n {
                    self.pending = scratch[written..n].to_vec();
                }
                Ok(Step::Again)
            });
            match step {
                Ok(Step::Eof) => self.eof = true,
                Ok(Step::Again) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

enum Step {
    Again,
    Eof,
}

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}
