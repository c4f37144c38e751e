//! The same-node fast path, user-space half: turns the agent's own decisions about same-node
//! connections into kernel verdicts (`mesh-ebpf/src/splice.rs`), withdraws them all whenever the
//! model or the set of pods changes, and folds the kernel's counters into the agent's metrics.
//!
//! The kernel never decides anything the agent has not decided first: the first connection from
//! a pod to a same-node destination goes through the agent (authorization with the source's
//! identity, the destination's policies); the verdict it reached is then reused for the next
//! connections with the same source pod and requested destination, until anything changes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use mesh_common::kernel::{
    FastKey, FastStats, FastVerdict, SockAddr, VERDICT_DENY, VERDICT_SPLICE,
};
use serde::Serialize;

use crate::ebpf::Programs;
use crate::metrics::{ConnectionLabels, Direction, Metrics, Transport};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// A same-node decision the agent took, to be reused by the kernel.
#[derive(Debug, Clone)]
pub struct Decided {
    /// netns cookie of the source pod.
    pub src_netns_cookie: u64,
    /// The source pod (`namespace/name`).
    pub src_workload: String,
    /// The destination pod (`namespace/name`).
    pub dst_workload: String,
    /// What the application connected to.
    pub requested: SocketAddr,
    /// The pod address it resolved to (the only possible one).
    pub target: SocketAddr,
    /// The destination service (`namespace/name`) or `unknown`.
    pub destination_service: String,
    /// Allowed (splice) or refused.
    pub allowed: bool,
    /// Istio's counters of the connections the kernel carries: the source's (outbound) and
    /// the destination's (inbound); `None`: only the agent's own series.
    pub istio: Option<Arc<[mesh_common::istio_metrics::TcpHandles; 2]>>,
}

/// One verdict as the admin endpoint lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FastPathEntry {
    /// Source pod.
    pub src_workload: String,
    /// Destination pod.
    pub dst_workload: String,
    /// Requested destination.
    pub requested: String,
    /// `splice` or `deny`.
    pub verdict: &'static str,
    /// Whether the kernel applies it now (false once withdrawn; counters are kept until the
    /// source pod goes).
    pub active: bool,
    /// Connections spliced so far.
    pub spliced: u64,
    /// Connections refused in the kernel so far.
    pub denied: u64,
    /// Spliced connections closed so far.
    pub closed: u64,
    /// Bytes client -> server so far.
    pub bytes_sent: u64,
    /// Bytes server -> client so far.
    pub bytes_received: u64,
    /// Directions that stayed on TCP (first bytes sent before the peer socket joined).
    pub tcp_fallbacks: u64,
}

#[derive(Debug)]
struct Entry {
    decided: Decided,
    active: bool,
    /// What has been added to the metrics already.
    reported: FastStats,
}

#[derive(Debug, Default)]
struct Inner {
    /// Bumped by every change that can alter a decision; a decision taken under an older epoch
    /// is not installed.
    epoch: u64,
    entries: HashMap<FastKey, Entry>,
}

/// The fast path's verdicts and counters, and its two switches: the kernel fast path itself
/// (same-node verdicts applied at connect) and the splice (socket to socket, opt-in: see
/// `mesh-ebpf/src/splice.rs` for why).
#[derive(Debug)]
pub struct FastPath {
    programs: Arc<Programs>,
    enabled: AtomicBool,
    splice: AtomicBool,
    /// Whether `sockops` is attached to the agent's own cgroup (loopback legs can be spliced).
    loopback_attached: bool,
    inner: Mutex<Inner>,
}

impl FastPath {
    /// A fast path over the loaded programs; `enabled` false keeps every connection in the agent;
    /// `splice` splices what the fast path allows, and the loopback legs of relayed connections
    /// when `loopback_attached` (see [`Programs::attach_agent_cgroup`]).
    pub fn new(
        programs: Arc<Programs>,
        enabled: bool,
        splice: bool,
        loopback_attached: bool,
    ) -> FastPath {
        let fastpath = FastPath {
            programs,
            enabled: AtomicBool::new(enabled),
            splice: AtomicBool::new(splice),
            loopback_attached,
            inner: Mutex::new(Inner::default()),
        };
        fastpath.apply_splice_switch();
        fastpath
    }

    fn apply_splice_switch(&self) {
        if let Err(e) = self.programs.set_splice(self.splicing()) {
            tracing::warn!(error = %e, "cannot switch the splice");
        }
    }

    /// Whether new allowed connections (and loopback legs) are spliced.
    pub fn splicing(&self) -> bool {
        self.enabled() && self.splice.load(Ordering::Relaxed)
    }

    /// Whether loopback legs of relayed connections are being spliced.
    pub fn loopback_splice(&self) -> bool {
        self.splicing() && self.loopback_attached
    }

    /// Turns the splice on or off (connections already spliced stay spliced).
    pub fn set_splice(&self, splice: bool) {
        self.splice.store(splice, Ordering::Relaxed);
        self.apply_splice_switch();
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether new verdicts are installed.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Turns the fast path on or off; off withdraws every verdict at once.
    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Relaxed);
        self.apply_splice_switch();
        if !enabled {
            self.invalidate("fast path disabled");
        }
    }

    /// The epoch to pass to [`FastPath::learn`]: read it before looking at the model.
    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Installs `decided` for the kernel, unless the fast path is off or anything changed since
    /// `epoch` was read (the decision may be stale).
    pub fn learn(&self, epoch: u64, decided: Decided) {
        if !self.enabled() || decided.requested.is_ipv4() != decided.target.is_ipv4() {
            return;
        }
        let key = FastKey {
            netns_cookie: decided.src_netns_cookie,
            dst: SockAddr::from(decided.requested),
        };
        let verdict = FastVerdict {
            action: if decided.allowed {
                VERDICT_SPLICE
            } else {
                VERDICT_DENY
            },
            _pad: 0,
            target: SockAddr::from(decided.target),
        };
        let mut inner = self.lock();
        if inner.epoch != epoch {
            return;
        }
        if let Err(e) = self.programs.set_fast_verdict(key, verdict) {
            tracing::warn!(error = %e, "cannot install a fast-path verdict; connections stay in the agent");
            return;
        }
        tracing::debug!(src = %decided.src_workload, dst = %decided.dst_workload, requested = %decided.requested, allowed = decided.allowed, "fast-path verdict installed");
        match inner.entries.get_mut(&key) {
            Some(entry) => {
                entry.decided = decided;
                entry.active = true;
            }
            None => {
                inner.entries.insert(
                    key,
                    Entry {
                        decided,
                        active: true,
                        reported: FastStats::default(),
                    },
                );
            }
        }
    }

    /// Withdraws every verdict: the model, the pods or the switch changed.
    pub fn invalidate(&self, why: &str) {
        let mut inner = self.lock();
        inner.epoch += 1;
        let removed = self.programs.clear_fast_verdicts();
        for entry in inner.entries.values_mut() {
            entry.active = false;
        }
        if removed > 0 {
            tracing::debug!(removed, why, "fast-path verdicts withdrawn");
        }
    }

    /// Adds what the kernel counted since the last call to the agent's metrics, and forgets the
    /// withdrawn verdicts whose connections have all closed (their counts are all reported).
    pub fn sync_metrics(&self, metrics: &Metrics) {
        let stats = self.programs.fast_stats();
        let mut inner = self.lock();
        for (key, now) in stats {
            let Some(entry) = inner.entries.get_mut(&key) else {
                continue;
            };
            report(metrics, entry, now);
            if !entry.active && now.closed >= now.spliced {
                self.programs.forget_fast_key(&key);
                inner.entries.remove(&key);
            }
        }
    }

    /// Reports the last counts of the connections from the pod with this netns cookie and
    /// forgets its entries (the pod is being removed).
    pub fn forget_source(&self, netns_cookie: u64, metrics: &Metrics) {
        self.sync_metrics(metrics);
        let mut inner = self.lock();
        inner.entries.retain(|key, _| {
            if key.netns_cookie != netns_cookie {
                return true;
            }
            self.programs.forget_fast_key(key);
            false
        });
    }

    /// The decision behind the verdict `key`, while it is known (active or withdrawn with
    /// connections still open).
    pub fn decided(&self, key: &FastKey) -> Option<Decided> {
        self.lock().entries.get(key).map(|e| e.decided.clone())
    }

    /// The verdicts and their counts, for the admin endpoint.
    pub fn list(&self) -> Vec<FastPathEntry> {
        let stats: HashMap<FastKey, FastStats> = self.programs.fast_stats().into_iter().collect();
        let inner = self.lock();
        let mut list: Vec<FastPathEntry> = inner
            .entries
            .iter()
            .map(|(key, entry)| {
                let counts = stats.get(key).copied().unwrap_or_default();
                FastPathEntry {
                    src_workload: entry.decided.src_workload.clone(),
                    dst_workload: entry.decided.dst_workload.clone(),
                    requested: entry.decided.requested.to_string(),
                    verdict: if entry.decided.allowed {
                        "splice"
                    } else {
                        "deny"
                    },
                    active: entry.active,
                    spliced: counts.spliced,
                    denied: counts.denied,
                    closed: counts.closed,
                    bytes_sent: counts.bytes_sent,
                    bytes_received: counts.bytes_received,
                    tcp_fallbacks: counts.tcp_fallbacks,
                }
            })
            .collect();
        list.sort_by(|a, b| (&a.src_workload, &a.requested).cmp(&(&b.src_workload, &b.requested)));
        list
    }
}

/// Adds the growth of the kernel's counters since the last report, under the same metric
/// families and labels the agent uses for connections it relays itself (transport `Kernel`).
fn report(metrics: &Metrics, entry: &mut Entry, now: FastStats) {
    let was = entry.reported;
    let delta = |now: u64, was: u64| now.saturating_sub(was);
    let spliced = delta(now.spliced, was.spliced);
    let denied = delta(now.denied, was.denied);
    let closed = delta(now.closed, was.closed);
    let sent = delta(now.bytes_sent, was.bytes_sent);
    let received = delta(now.bytes_received, was.bytes_received);
    entry.reported = now;
    let outbound = ConnectionLabels {
        direction: Direction::Outbound,
        transport: Transport::Kernel,
        workload: entry.decided.src_workload.clone(),
        destination_service: entry.decided.destination_service.clone(),
    };
    let inbound = ConnectionLabels {
        direction: Direction::Inbound,
        transport: Transport::Kernel,
        workload: entry.decided.dst_workload.clone(),
        destination_service: entry.decided.destination_service.clone(),
    };
    // Only the series that grew are touched, so no empty series appear.
    let add = |family: &Family<ConnectionLabels, Counter>, labels: &ConnectionLabels, n: u64| {
        if n > 0 {
            family.get_or_create(labels).inc_by(n);
        }
    };
    if let Some(istio) = &entry.decided.istio {
        for handles in istio.iter() {
            handles.count(spliced, closed, sent, received);
        }
        let [source, _] = &**istio;
        source.count(denied, denied, 0, 0);
    }
    for labels in [&outbound, &inbound] {
        add(&metrics.connections_opened, labels, spliced);
        add(&metrics.connections_closed, labels, closed);
        add(&metrics.sent_bytes, labels, sent);
        add(&metrics.received_bytes, labels, received);
    }
    // As the agent counts a refused same-node connection: opened and closed outbound, and
    // denied by policy at the destination.
    add(&metrics.connections_opened, &outbound, denied);
    add(&metrics.connections_closed, &outbound, denied);
    if denied > 0 {
        metrics.record_denied_n(&entry.decided.dst_workload, "policy", denied);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            decided: Decided {
                src_netns_cookie: 7,
                src_workload: "apps/client".into(),
                dst_workload: "prod/server".into(),
                requested: "198.18.1.3:8080".parse().expect("literal"),
                target: "198.18.1.3:8080".parse().expect("literal"),
                destination_service: "unknown".into(),
                allowed: true,
                istio: None,
            },
            active: true,
            reported: FastStats::default(),
        }
    }

    fn labels(direction: Direction, workload: &str) -> ConnectionLabels {
        ConnectionLabels {
            direction,
            transport: Transport::Kernel,
            workload: workload.into(),
            destination_service: "unknown".into(),
        }
    }

    #[test]
    fn reports_only_the_growth_since_the_last_report() {
        let metrics = Metrics::default();
        let mut entry = entry();
        let first = FastStats {
            spliced: 2,
            closed: 1,
            bytes_sent: 100,
            bytes_received: 300,
            ..FastStats::default()
        };
        report(&metrics, &mut entry, first);
        let second = FastStats {
            spliced: 3,
            closed: 3,
            bytes_sent: 150,
            bytes_received: 300,
            denied: 4,
            ..FastStats::default()
        };
        report(&metrics, &mut entry, second);
        let outbound = labels(Direction::Outbound, "apps/client");
        let inbound = labels(Direction::Inbound, "prod/server");
        // Opened: 3 allowed, plus the 4 refused on the outbound side.
        assert_eq!(metrics.connections_opened.get_or_create(&outbound).get(), 7);
        assert_eq!(metrics.connections_opened.get_or_create(&inbound).get(), 3);
        assert_eq!(metrics.connections_closed.get_or_create(&outbound).get(), 7);
        assert_eq!(metrics.sent_bytes.get_or_create(&inbound).get(), 150);
        assert_eq!(metrics.received_bytes.get_or_create(&outbound).get(), 300);
        let denied = crate::metrics::DenyLabels {
            workload: "prod/server".into(),
            reason: "policy".into(),
        };
        assert_eq!(metrics.denied.get_or_create(&denied).get(), 4);
        assert_eq!(entry.reported, second);
    }
}
