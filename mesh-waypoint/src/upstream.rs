//! Upstream HTTP connections: HTTP/1.1 or HTTP/2 to the chosen endpoint, over an HBONE stream
//! with the waypoint's identity (or plain TCP to an endpoint outside the mesh), pooled per
//! endpoint, within the destination's circuit-breaker limits ([`crate::pool_limits`]). HTTP/2
//! connections are shared by concurrent requests; HTTP/1.1 connections are kept (at most
//! [`MAX_IDLE_PER_ENDPOINT`] per endpoint) and reused once their previous response has been
//! read. At the connection limit a request waits for a connection (one of the pending
//! requests, bounded by `http1MaxPendingRequests` and the connect timeout), else it overflows.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_common::identity::Identity;
use mesh_common::ports::HBONE;
use mesh_hbone::hbone::{HboneError, HbonePool, HboneStream};
use tokio::net::TcpStream;
use tokio_util::either::Either;

use crate::pool_limits::{Destination, Limits, Slot};

/// Body of a request sent upstream.
pub type UpstreamBody = BoxBody<Bytes, hyper::Error>;

/// Idle HTTP/1.1 connections kept per endpoint.
pub const MAX_IDLE_PER_ENDPOINT: usize = 64;

/// Default time to open an upstream connection (HBONE stream and HTTP handshake).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = crate::pool_limits::DEFAULT_CONNECT_TIMEOUT;

/// The HTTP version spoken to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 (prior knowledge: h2c inside the tunnel).
    Http2,
}

/// An endpoint to send to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Endpoint address and target port.
    pub addr: SocketAddr,
    /// The endpoint workload's identity; `None` for an endpoint outside the mesh (plain TCP).
    pub identity: Option<Identity>,
}

/// Why a request could not be sent, or its response not received.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be opened (HBONE refused, peer unreachable, TLS or identity failure).
    #[error("connect to {addr}: {message}")]
    Connect {
        /// The endpoint.
        addr: SocketAddr,
        /// What failed.
        message: String,
    },
    /// Opening the connection took longer than the connect timeout.
    #[error("connect to {0}: timed out")]
    ConnectTimeout(SocketAddr),
    /// A circuit-breaker limit of the destination was reached (`connections`: no connection
    /// could be had within the connect timeout; `pending`: too many requests wait already).
    #[error("{addr}: overflow of {kind}")]
    Overflow {
        /// The endpoint.
        addr: SocketAddr,
        /// Which limit.
        kind: &'static str,
    },
    /// The connection failed or was reset before the response headers.
    #[error("{addr}: {source}")]
    Reset {
        /// The endpoint.
        addr: SocketAddr,
        /// hyper's error.
        source: hyper::Error,
    },
}

impl UpstreamError {
    /// Whether the upstream refused the request before processing any of it: an HTTP/2
    /// `REFUSED_STREAM`, or a request hyper had not yet written when its connection went.
    pub fn is_refused(&self) -> bool {
        let UpstreamError::Reset { source, .. } = self else {
            return false;
        };
        if source.is_canceled() {
            return true;
        }
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source);
        while let Some(e) = cause {
            if e.to_string().contains("refused stream") {
                return true;
            }
            cause = e.source();
        }
        false
    }
}

/// A byte stream to an endpoint.
pub type Io = Either<HboneStream, TcpStream>;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    endpoint: Endpoint,
    protocol: Protocol,
}

/// Pooled upstream connections of one waypoint instance.
#[derive(Debug)]
pub struct Upstreams {
    hbone: HbonePool,
    own: Identity,
    connect_timeout: Duration,
    idle_h1: Mutex<HashMap<Key, Vec<Pooled<http1::SendRequest<UpstreamBody>>>>>,
    h2: Mutex<HashMap<Key, Pooled<http2::SendRequest<UpstreamBody>>>>,
}

/// A pooled connection's sender, with how many requests it carried and since when it idles.
#[derive(Debug)]
struct Pooled<S> {
    sender: S,
    uses: u32,
    since: Instant,
}

/// What a request may use of its destination.
#[derive(Debug, Clone, Copy)]
pub struct Budget<'a> {
    /// The destination's limits.
    pub limits: &'a Limits,
    /// Its counters.
    pub destination: &'a Arc<Destination>,
}

impl Upstreams {
    /// Upstream connections over `hbone`, presenting `own` (the waypoint's identity).
    pub fn new(hbone: HbonePool, own: Identity) -> Arc<Upstreams> {
        Arc::new(Upstreams {
            hbone,
            own,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            idle_h1: Mutex::default(),
            h2: Mutex::default(),
        })
    }

    /// The HBONE pool (its counters feed the metrics).
    pub fn hbone(&self) -> &HbonePool {
        &self.hbone
    }

    /// Sends `request` to `endpoint` in `protocol` within the destination's limits and returns
    /// the response head with its streaming body. The request must already be in the form that
    /// protocol needs (see `proxy::upstream_form`).
    pub async fn send(
        &self,
        endpoint: &Endpoint,
        protocol: Protocol,
        request: Request<UpstreamBody>,
        budget: Budget<'_>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let key = Key {
            endpoint: endpoint.clone(),
            protocol,
        };
        let addr = endpoint.addr;
        let limits = budget.limits;
        match protocol {
            Protocol::Http2 => {
                let mut sender = self.h2_sender(&key, budget).await?;
                sender
                    .send_request(request)
                    .await
                    .map_err(|source| UpstreamError::Reset { addr, source })
            }
            Protocol::Http1 => {
                let mut pooled = self.h1_sender(&key, budget).await?;
                let response = pooled
                    .sender
                    .send_request(request)
                    .await
                    .map_err(|source| UpstreamError::Reset { addr, source })?;
                pooled.uses += 1;
                // Ready again once this response's body has been read; reused then, unless it
                // carried its share of requests (it closes after this response).
                let retire = limits
                    .max_requests_per_connection
                    .is_some_and(|max| pooled.uses >= max);
                if response.status() != http::StatusCode::SWITCHING_PROTOCOLS && !retire {
                    pooled.since = Instant::now();
                    self.put_h1(key, pooled);
                    // A request waiting for a connection can wait for this one now.
                    budget.destination.released.notify_waiters();
                }
                Ok(response)
            }
        }
    }

    /// An HTTP/1.1 connection for one request: an idle one, a new one under the connection
    /// limit, or, at the limit, one that becomes free while the request is among the pending.
    async fn h1_sender(
        &self,
        key: &Key,
        budget: Budget<'_>,
    ) -> Result<Pooled<http1::SendRequest<UpstreamBody>>, UpstreamError> {
        let addr = key.endpoint.addr;
        let limits = budget.limits;
        let waited = Instant::now();
        let mut pending: Option<Slot> = None;
        loop {
            let released = budget.destination.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some(pooled) = self.take_h1(key, limits, true) {
                return Ok(pooled);
            }
            if let Some(slot) = budget.destination.connection(limits.max_connections) {
                let sender = self.open_h1(key, slot, limits.connect_timeout).await?;
                return Ok(Pooled {
                    sender,
                    uses: 0,
                    since: Instant::now(),
                });
            }
            if pending.is_none() {
                pending = Some(budget.destination.pending(limits.max_pending).ok_or(
                    UpstreamError::Overflow {
                        addr,
                        kind: "pending",
                    },
                )?);
            }
            let left = limits.connect_timeout.checked_sub(waited.elapsed()).ok_or(
                UpstreamError::Overflow {
                    addr,
                    kind: "connections",
                },
            )?;
            // A busy connection of this endpoint that finishes, or any connection of the
            // destination that closes.
            if let Some(mut busy) = self.take_h1(key, limits, false) {
                if let Ok(Ok(())) = tokio::time::timeout(left, busy.sender.ready()).await {
                    return Ok(busy);
                }
            } else if tokio::time::timeout(left, released).await.is_err() {
                return Err(UpstreamError::Overflow {
                    addr,
                    kind: "connections",
                });
            }
        }
    }

    async fn h2_sender(
        &self,
        key: &Key,
        budget: Budget<'_>,
    ) -> Result<http2::SendRequest<UpstreamBody>, UpstreamError> {
        let addr = key.endpoint.addr;
        let limits = budget.limits;
        let waited = Instant::now();
        let mut pending: Option<Slot> = None;
        loop {
            let released = budget.destination.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some(sender) = self.take_h2(key, limits) {
                return Ok(sender);
            }
            if let Some(slot) = budget.destination.connection(limits.max_connections) {
                let sender = self.open_h2(key, slot, limits).await?;
                budget.destination.released.notify_waiters();
                return Ok(sender);
            }
            if pending.is_none() {
                pending = Some(budget.destination.pending(limits.max_pending).ok_or(
                    UpstreamError::Overflow {
                        addr,
                        kind: "pending",
                    },
                )?);
            }
            let left = limits.connect_timeout.checked_sub(waited.elapsed()).ok_or(
                UpstreamError::Overflow {
                    addr,
                    kind: "connections",
                },
            )?;
            if tokio::time::timeout(left, released).await.is_err() {
                return Err(UpstreamError::Overflow {
                    addr,
                    kind: "connections",
                });
            }
        }
    }

    fn take_h2(&self, key: &Key, limits: &Limits) -> Option<http2::SendRequest<UpstreamBody>> {
        let mut h2 = lock(&self.h2);
        let pooled = h2.get_mut(key)?;
        let idle_out = limits
            .idle_timeout
            .is_some_and(|t| pooled.since.elapsed() >= t);
        if pooled.sender.is_closed() || idle_out {
            h2.remove(key);
            return None;
        }
        pooled.uses += 1;
        pooled.since = Instant::now();
        let sender = pooled.sender.clone();
        if limits
            .max_requests_per_connection
            .is_some_and(|max| pooled.uses >= max)
        {
            h2.remove(key);
        }
        Some(sender)
    }

    /// A pooled HTTP/1.1 sender of `key`: a ready one, or (`ready` false) a busy one to wait
    /// for. Closed ones, and ready ones idle past the idle timeout, are dropped (closing them).
    fn take_h1(
        &self,
        key: &Key,
        limits: &Limits,
        ready: bool,
    ) -> Option<Pooled<http1::SendRequest<UpstreamBody>>> {
        let mut idle = lock(&self.idle_h1);
        let senders = idle.get_mut(key)?;
        senders.retain(|s| {
            let idled_out =
                s.sender.is_ready() && limits.idle_timeout.is_some_and(|t| s.since.elapsed() >= t);
            !(s.sender.is_closed() || idled_out)
        });
        let found = senders.iter().position(|s| s.sender.is_ready() == ready);
        let sender = found.map(|i| senders.swap_remove(i));
        if senders.is_empty() {
            idle.remove(key);
        }
        sender
    }

    fn put_h1(&self, key: Key, sender: Pooled<http1::SendRequest<UpstreamBody>>) {
        let mut idle = lock(&self.idle_h1);
        let senders = idle.entry(key).or_default();
        if senders.len() < MAX_IDLE_PER_ENDPOINT {
            senders.push(sender);
        }
    }

    async fn open_h1(
        &self,
        key: &Key,
        slot: Slot,
        connect_timeout: Duration,
    ) -> Result<http1::SendRequest<UpstreamBody>, UpstreamError> {
        let addr = key.endpoint.addr;
        let handshake = async {
            let io = self.open(&key.endpoint).await?;
            http1::Builder::new()
                .handshake(TokioIo::new(io))
                .await
                .map_err(|e| UpstreamError::Connect {
                    addr,
                    message: e.to_string(),
                })
        };
        let (sender, conn) = tokio::time::timeout(connect_timeout, handshake)
            .await
            .map_err(|_| UpstreamError::ConnectTimeout(addr))??;
        tokio::spawn(async move {
            // The connection counts against the destination until it ends.
            let _slot = slot;
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(upstream = %addr, error = %e, "upstream HTTP/1.1 connection ended");
            }
        });
        Ok(sender)
    }

    async fn open_h2(
        &self,
        key: &Key,
        slot: Slot,
        limits: &Limits,
    ) -> Result<http2::SendRequest<UpstreamBody>, UpstreamError> {
        let addr = key.endpoint.addr;
        let handshake = async {
            let io = self.open(&key.endpoint).await?;
            http2::Builder::new(TokioExecutor::new())
                .handshake(TokioIo::new(io))
                .await
                .map_err(|e| UpstreamError::Connect {
                    addr,
                    message: e.to_string(),
                })
        };
        let (sender, conn) = tokio::time::timeout(limits.connect_timeout, handshake)
            .await
            .map_err(|_| UpstreamError::ConnectTimeout(addr))??;
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = conn.await {
                tracing::debug!(upstream = %addr, error = %e, "upstream HTTP/2 connection ended");
            }
        });
        let uses = 1;
        if limits
            .max_requests_per_connection
            .is_none_or(|max| uses < max)
        {
            lock(&self.h2).insert(
                key.clone(),
                Pooled {
                    sender: sender.clone(),
                    uses,
                    since: Instant::now(),
                },
            );
        }
        Ok(sender)
    }

    /// A byte stream to the endpoint: an HBONE stream (`<ip>:15008`, CONNECT `<ip>:<port>`) to
    /// a meshed endpoint, plain TCP to one outside the mesh.
    pub async fn open(&self, endpoint: &Endpoint) -> Result<Io, UpstreamError> {
        let addr = endpoint.addr;
        let stream = match &endpoint.identity {
            Some(identity) => {
                let peer = SocketAddr::new(addr.ip(), HBONE);
                let stream = self
                    .hbone
                    .connect(&self.own, identity, peer, addr)
                    .await
                    .map_err(|e: HboneError| UpstreamError::Connect {
                        addr,
                        message: e.to_string(),
                    })?;
                Either::Left(stream)
            }
            None => {
                let tcp = TcpStream::connect(addr)
                    .await
                    .map_err(|e| UpstreamError::Connect {
                        addr,
                        message: e.to_string(),
                    })?;
                let _ = tcp.set_nodelay(true);
                Either::Right(tcp)
            }
        };
        Ok(stream)
    }

    /// Opens a byte stream to `endpoint` within the connect timeout (opaque TCP passthrough).
    pub async fn open_stream(&self, endpoint: &Endpoint) -> Result<Io, UpstreamError> {
        tokio::time::timeout(self.connect_timeout, self.open(endpoint))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout(endpoint.addr))?
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
