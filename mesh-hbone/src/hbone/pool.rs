//! The HBONE connection pool: one mTLS + HTTP/2 connection per (origin, source identity,
//! destination identity, peer address) carries many CONNECT streams; another is opened only when
//! every existing one is at its stream limit; a connection left without streams for the idle
//! timeout is closed, and one that ends or loses its peer (unanswered PING) leaves the pool at
//! once, so the next stream dials afresh.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use mesh_common::identity::Identity;
use tokio::time::Instant;

use super::client::{is_refused, ConnState, HboneClientConfig, HboneConnection};
use super::connector::Origin;
use super::stream::{HboneStream, OnDrop};
use super::HboneError;
use crate::ca::TrustBundle;
use crate::certs::CertManager;
use crate::tls;

/// What a pooled connection is shared by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// Where the TCP connection is dialed from ([`Origin::key`]): never shared across origins.
    pub origin: Option<u64>,
    /// The identity we present.
    pub source: Identity,
    /// The identity the peer must prove.
    pub destination: Identity,
    /// The peer's HBONE address.
    pub peer: SocketAddr,
}

/// Pool counters (for metrics and tests).
#[derive(Debug, Default)]
pub struct PoolStats {
    connections_opened: AtomicU64,
    connections_closed: AtomicU64,
    connections_lost: AtomicU64,
    connect_failures: AtomicU64,
    streams_opened: AtomicU64,
    stream_failures: AtomicU64,
}

impl PoolStats {
    /// Connections established.
    pub fn connections_opened(&self) -> u64 {
        self.connections_opened.load(Ordering::Relaxed)
    }
    /// Connections closed (idle, or ended by the peer) and removed from the pool.
    pub fn connections_closed(&self) -> u64 {
        self.connections_closed.load(Ordering::Relaxed)
    }
    /// Connections closed because the peer stopped answering PINGs (also counted as closed).
    pub fn connections_lost(&self) -> u64 {
        self.connections_lost.load(Ordering::Relaxed)
    }
    /// Connection attempts that failed (TCP, TLS, identity, HTTP/2).
    pub fn connect_failures(&self) -> u64 {
        self.connect_failures.load(Ordering::Relaxed)
    }
    /// CONNECT streams established.
    pub fn streams_opened(&self) -> u64 {
        self.streams_opened.load(Ordering::Relaxed)
    }
    /// CONNECT streams refused or failed.
    pub fn stream_failures(&self) -> u64 {
        self.stream_failures.load(Ordering::Relaxed)
    }
}

/// A connection in the pool with its stream accounting.
#[derive(Debug)]
struct Pooled {
    conn: HboneConnection,
    /// Streams open (or being opened) on it.
    active: usize,
    /// When `active` last dropped to zero.
    idle_since: Instant,
    id: u64,
}

/// The connections of one key.
#[derive(Debug, Default)]
struct Slot {
    conns: Mutex<Vec<Pooled>>,
    /// Serializes dials so a burst of requests opens one connection, not one each.
    dialing: tokio::sync::Mutex<()>,
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Pooled>> {
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a stream slot on a live connection below its limit.
    fn reserve(&self, max: usize) -> Option<(u64, HboneConnection)> {
        let mut conns = self.lock();
        conns.retain(|p| !p.conn.is_closed());
        let pooled = conns
            .iter_mut()
            .find(|p| p.active < max.min(p.conn.max_concurrent_streams()))?;
        pooled.active += 1;
        Some((pooled.id, pooled.conn.clone()))
    }

    fn release(&self, id: u64) {
        let mut conns = self.lock();
        if let Some(p) = conns.iter_mut().find(|p| p.id == id) {
            p.active = p.active.saturating_sub(1);
            if p.active == 0 {
                p.idle_since = Instant::now();
            }
        }
    }
}

struct PoolInner {
    certs: CertManager,
    bundle: TrustBundle,
    config: HboneClientConfig,
    slots: Mutex<HashMap<PoolKey, Arc<Slot>>>,
    stats: Arc<PoolStats>,
    next_id: AtomicU64,
}

/// HBONE connections shared by streams. Cheap to clone (a shared handle).
#[derive(Clone)]
pub struct HbonePool {
    inner: Arc<PoolInner>,
}

impl std::fmt::Debug for HbonePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HbonePool")
            .field("stats", &self.inner.stats)
            .finish_non_exhaustive()
    }
}

impl HbonePool {
    /// A pool presenting certificates from `certs` and verifying peers against `bundle`.
    pub fn new(certs: CertManager, bundle: TrustBundle, config: HboneClientConfig) -> Self {
        HbonePool {
            inner: Arc::new(PoolInner {
                certs,
                bundle,
                config,
                slots: Mutex::new(HashMap::new()),
                stats: Arc::default(),
                next_id: AtomicU64::new(0),
            }),
        }
    }

    /// The pool's counters (a live handle).
    pub fn stats(&self) -> Arc<PoolStats> {
        self.inner.stats.clone()
    }

    /// Connections currently pooled (all keys).
    pub fn connections(&self) -> usize {
        let slots: Vec<Arc<Slot>> = self.slots().values().cloned().collect();
        slots
            .iter()
            .map(|s| s.lock().iter().filter(|p| !p.conn.is_closed()).count())
            .sum()
    }

    /// Opens a CONNECT stream to `target` through the HBONE endpoint `peer`, presenting
    /// `source`'s certificate and requiring the peer to prove `destination`, dialing from this
    /// process's network namespace.
    pub async fn connect(
        &self,
        source: &Identity,
        destination: &Identity,
        peer: SocketAddr,
        target: SocketAddr,
    ) -> Result<HboneStream, HboneError> {
        self.connect_from(&Origin::direct(), source, destination, peer, target)
            .await
    }

    /// Like [`connect`](Self::connect), on a connection dialed by `origin` (shared only with
    /// streams of the same origin).
    pub async fn connect_from(
        &self,
        origin: &Origin,
        source: &Identity,
        destination: &Identity,
        peer: SocketAddr,
        target: SocketAddr,
    ) -> Result<HboneStream, HboneError> {
        let key = PoolKey {
            origin: origin.key(),
            source: source.clone(),
            destination: destination.clone(),
            peer,
        };
        let slot = self.slot(&key);
        let mut retried = false;
        loop {
            let (id, conn) = self.checkout(origin, &key, &slot).await?;
            let weak = Arc::downgrade(&slot);
            let release = OnDrop::new(move || {
                if let Some(slot) = Weak::upgrade(&weak) {
                    slot.release(id);
                }
            });
            // The release guard is dropped with a failed request: the slot is free again.
            match conn.open(&target.to_string(), Some(release)).await {
                Ok(stream) => {
                    self.inner
                        .stats
                        .streams_opened
                        .fetch_add(1, Ordering::Relaxed);
                    return Ok(stream);
                }
                // The peer is going away (e.g. its agent restarts) and did not process the
                // request: once, try again on a fresh connection.
                Err(HboneError::H2(e)) if !retried && is_refused(&e) => {
                    tracing::debug!(peer = %key.peer, error = %e, "stream refused, retrying on a new connection");
                    retried = true;
                }
                // The connection was found dead before the CONNECT was answered (no byte of the
                // stream was sent): once, on a fresh connection, which fails fast if the peer
                // is unreachable.
                Err(HboneError::PeerLost(_)) if !retried => {
                    tracing::debug!(peer = %key.peer, "connection lost under a CONNECT, retrying on a new connection");
                    retried = true;
                }
                Err(e) => {
                    self.inner
                        .stats
                        .stream_failures
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
    }

    /// A stream slot on an existing connection, or on a new one.
    async fn checkout(
        &self,
        origin: &Origin,
        key: &PoolKey,
        slot: &Arc<Slot>,
    ) -> Result<(u64, HboneConnection), HboneError> {
        let max = self.inner.config.max_streams_per_connection.max(1);
        if let Some(found) = slot.reserve(max) {
            return Ok(found);
        }
        let _dialing = slot.dialing.lock().await;
        // Whoever held the lock may have opened a connection with room for us.
        if let Some(found) = slot.reserve(max) {
            return Ok(found);
        }
        let conn = match self.dial(origin, key).await {
            Ok(conn) => conn,
            Err(e) => {
                self.inner
                    .stats
                    .connect_failures
                    .fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        self.inner
            .stats
            .connections_opened
            .fetch_add(1, Ordering::Relaxed);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        slot.lock().push(Pooled {
            conn: conn.clone(),
            active: 1,
            idle_since: Instant::now(),
            id,
        });
        tokio::spawn(reap(
            Arc::downgrade(&self.inner),
            key.clone(),
            Arc::downgrade(slot),
            id,
            conn.watch_state(),
        ));
        Ok((id, conn))
    }

    async fn dial(&self, origin: &Origin, key: &PoolKey) -> Result<HboneConnection, HboneError> {
        self.inner.certs.get(&key.source).await?;
        let tls = tls::client_config(
            self.inner.certs.resolver(&key.source),
            self.inner.bundle.clone(),
            key.destination.clone(),
        )?;
        tracing::debug!(source = %key.source, destination = %key.destination, peer = %key.peer, origin = ?key.origin, "dialing HBONE");
        HboneConnection::dial_with(origin.connector(), key.peer, tls, &self.inner.config).await
    }

    fn slot(&self, key: &PoolKey) -> Arc<Slot> {
        self.slots().entry(key.clone()).or_default().clone()
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<PoolKey, Arc<Slot>>> {
        self.inner
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Removes connection `id` once it has had no stream for `idle_timeout`, or as soon as it stops
/// taking streams (closed, lost, peer going away), and the key's entry once it has no connection
/// left. Dropping the pool's handle closes an idle connection (its streams are gone by then).
async fn reap(
    pool: Weak<PoolInner>,
    key: PoolKey,
    slot: Weak<Slot>,
    id: u64,
    mut state: tokio::sync::watch::Receiver<ConnState>,
) {
    let Some(idle_timeout) = pool.upgrade().map(|p| p.config.idle_timeout) else {
        return;
    };
    let mut check_at = Instant::now() + idle_timeout;
    loop {
        // A state change (or the connection gone) leads to its removal below: no busy loop.
        tokio::select! {
            () = tokio::time::sleep_until(check_at) => {}
            _ = state.wait_for(|s| *s != ConnState::Open) => {}
        }
        let (Some(pool), Some(slot)) = (pool.upgrade(), slot.upgrade()) else {
            return;
        };
        let removed = {
            let mut conns = slot.lock();
            match conns.iter().position(|p| p.id == id) {
                // Already pruned as closed by `reserve`.
                None => true,
                Some(pos) => {
                    let pooled = &conns[pos];
                    let idle_until = pooled.idle_since + idle_timeout;
                    if pooled.conn.is_closed()
                        || (pooled.active == 0 && Instant::now() >= idle_until)
                    {
                        conns.remove(pos);
                        tracing::debug!(id, peer = %key.peer, "closing idle HBONE connection");
                        true
                    } else {
                        check_at = if pooled.active == 0 {
                            idle_until
                        } else {
                            Instant::now() + idle_timeout
                        };
                        false
                    }
                }
            }
        };
        if !removed {
            continue;
        }
        pool.stats
            .connections_closed
            .fetch_add(1, Ordering::Relaxed);
        if *state.borrow() == ConnState::Lost {
            pool.stats.connections_lost.fetch_add(1, Ordering::Relaxed);
            tracing::info!(id, peer = %key.peer, source = %key.source, "lost HBONE connection removed from the pool");
        }
        // Lock order: the map, then a slot (as everywhere else). A slot being dialed stays.
        let mut slots = pool
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let unused = slots.get(&key).is_some_and(|s| {
            Arc::ptr_eq(s, &slot) && s.lock().is_empty() && s.dialing.try_lock().is_ok()
        });
        if unused {
            slots.remove(&key);
        }
        return;
    }
}
