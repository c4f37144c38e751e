//! Circuit breaking of one destination (host, subset, port: Envoy's cluster), from its
//! DestinationRule `connectionPool` (the subset's port policy, the subset's, the host's port
//! policy, then the host's, the first that sets one): connections opened to all its endpoints
//! (`tcp.maxConnections`), requests waiting for a connection (`http1MaxPendingRequests`),
//! requests in flight (`http2MaxRequests`), retries in flight (`maxRetries`), requests per
//! connection, idle and connect timeouts. Past a limit the request is answered at once with 503
//! `UO`; nothing queues without bound. Counters are atomics, one set per destination.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use mesh_common::model::ConnectionPool;

use crate::resilience::budget::Budget;
use crate::route::Backend;
use crate::table::RouteTable;

/// Connect timeout when the policy sets none (Istio's default, 10 s).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One destination's limits (`u32::MAX`: unlimited, Istio's default for all of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open to all endpoints.
    pub max_connections: u32,
    /// Requests waiting for a connection.
    pub max_pending: u32,
    /// Requests in flight.
    pub max_requests: u32,
    /// Retries in flight.
    pub max_retries: u32,
    /// Requests one connection carries before it is retired (`None`: no limit).
    pub max_requests_per_connection: Option<u32>,
    /// An idle connection is closed after this long (checked when the pool is next used).
    pub idle_timeout: Option<Duration>,
    /// Time to open a connection.
    pub connect_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::from_pool(None)
    }
}

impl Limits {
    /// The limits a `connectionPool` sets (`0` counts as unset, as Istio reads it).
    pub fn from_pool(pool: Option<&ConnectionPool>) -> Limits {
        let max = |v: Option<u32>| v.filter(|n| *n > 0).unwrap_or(u32::MAX);
        Limits {
            max_connections: max(pool.and_then(|p| p.max_connections)),
            max_pending: max(pool.and_then(|p| p.http1_max_pending_requests)),
            max_requests: max(pool.and_then(|p| p.http2_max_requests)),
            max_retries: max(pool.and_then(|p| p.max_retries)),
            max_requests_per_connection: pool
                .and_then(|p| p.max_requests_per_connection)
                .filter(|n| *n > 0),
            idle_timeout: pool
                .and_then(|p| p.idle_timeout_ms)
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis),
            connect_timeout: pool
                .and_then(|p| p.connect_timeout_ms)
                .filter(|ms| *ms > 0)
                .map_or(DEFAULT_CONNECT_TIMEOUT, Duration::from_millis),
        }
    }
}

impl RouteTable {
    /// The connection pool policy of a backend, if its DestinationRule sets one.
    pub fn connection_pool(&self, backend: &Backend) -> Option<&ConnectionPool> {
        let i = self.destination_policies.get(&backend.host)?;
        let policy = self.snapshot().destination_policies.get(*i)?;
        crate::balance::policy::Levels::new(Some(policy), backend.subset.as_deref(), backend.port)
            .per_port(
                |t| t.connection_pool.as_ref(),
                |p| p.connection_pool.as_ref(),
            )
    }
}

/// Whether one more of something counted fits under `max`; counts it if so.
fn try_take(counter: &AtomicU32, max: u32) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

/// What one destination has in use.
#[derive(Debug, Default)]
pub struct Destination {
    /// Its retry budget.
    pub budget: Arc<Budget>,
    connections: AtomicU32,
    pending: AtomicU32,
    requests: AtomicU32,
    /// Woken when a connection closes (a waiting request may open one) or goes back to the
    /// pool (a waiting request may take it once it is ready).
    pub released: tokio::sync::Notify,
}

/// Something counted against a destination, released when dropped.
#[derive(Debug)]
pub struct Slot {
    destination: Arc<Destination>,
    kind: Kind,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Connection,
    Pending,
    Request,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let d = &self.destination;
        match self.kind {
            Kind::Connection => {
                d.connections.fetch_sub(1, Ordering::AcqRel);
                d.released.notify_waiters();
            }
            Kind::Pending => {
                d.pending.fetch_sub(1, Ordering::AcqRel);
            }
            Kind::Request => {
                d.requests.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

impl Destination {
    fn slot(self: &Arc<Self>, kind: Kind, max: u32) -> Option<Slot> {
        let counter = match kind {
            Kind::Connection => &self.connections,
            Kind::Pending => &self.pending,
            Kind::Request => &self.requests,
        };
        try_take(counter, max).then(|| Slot {
            destination: self.clone(),
            kind,
        })
    }

    /// A new connection, if fewer than `max` are open.
    pub fn connection(self: &Arc<Self>, max: u32) -> Option<Slot> {
        self.slot(Kind::Connection, max)
    }

    /// A place among the requests waiting for a connection.
    pub fn pending(self: &Arc<Self>, max: u32) -> Option<Slot> {
        self.slot(Kind::Pending, max)
    }

    /// A request in flight.
    pub fn request(self: &Arc<Self>, max: u32) -> Option<Slot> {
        self.slot(Kind::Request, max)
    }

    /// Connections open now.
    pub fn connections(&self) -> u32 {
        self.connections.load(Ordering::Acquire)
    }
}

/// One destination of a host: its subset, port and counters.
type Entry = (Option<String>, u16, Arc<Destination>);

/// Every destination's counters, made on first use (one entry per host, subset and port the
/// model routes to; entries of hosts gone from the model stay, a few atomics each).
#[derive(Debug, Default)]
pub struct Destinations {
    by_host: RwLock<HashMap<String, Vec<Entry>>>,
}

impl Destinations {
    /// The counters of `backend`'s destination.
    pub fn get(&self, backend: &Backend) -> Arc<Destination> {
        let find = |list: &Vec<Entry>| {
            list.iter()
                .find(|(s, p, _)| *s == backend.subset && *p == backend.port)
                .map(|(_, _, d)| d.clone())
        };
        {
            let map = self.by_host.read().unwrap_or_else(|e| e.into_inner());
            if let Some(d) = map.get(&backend.host).and_then(find) {
                return d;
            }
        }
        let mut map = self.by_host.write().unwrap_or_else(|e| e.into_inner());
        let list = map.entry(backend.host.clone()).or_default();
        if let Some(d) = find(list) {
            return d;
        }
        let d = Arc::new(Destination::default());
        list.push((backend.subset.clone(), backend.port, d.clone()));
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_from_the_pool() {
        let pool = ConnectionPool {
            max_connections: Some(1),
            http1_max_pending_requests: Some(0),
            http2_max_requests: Some(5),
            max_retries: Some(3),
            max_requests_per_connection: Some(0),
            connect_timeout_ms: Some(250),
            idle_timeout_ms: Some(1000),
            ..ConnectionPool::default()
        };
        let l = Limits::from_pool(Some(&pool));
        assert_eq!(
            l,
            Limits {
                max_connections: 1,
                max_pending: u32::MAX,
                max_requests: 5,
                max_retries: 3,
                max_requests_per_connection: None,
                idle_timeout: Some(Duration::from_secs(1)),
                connect_timeout: Duration::from_millis(250),
            }
        );
        assert_eq!(Limits::default().connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(Limits::default().max_connections, u32::MAX);
    }

    #[test]
    fn slots_are_bounded_and_returned() {
        let d = Arc::new(Destination::default());
        #[rustfmt::skip]
        let cases: [(u32, usize); 4] = [(0, 0), (1, 1), (3, 3), (u32::MAX, 10)];
        for (max, want) in cases {
            let held: Vec<Slot> = (0..10).filter_map(|_| d.connection(max)).collect();
            assert_eq!(held.len(), want, "max {max}");
            assert_eq!(d.connections() as usize, want);
            drop(held);
            assert_eq!(d.connections(), 0);
        }
        let p = d.pending(1);
        assert!(p.is_some() && d.pending(1).is_none());
        let r = d.request(1);
        assert!(r.is_some() && d.request(1).is_none());
    }
}
