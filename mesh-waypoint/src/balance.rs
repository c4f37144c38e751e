//! Endpoint choice for one request or connection: the policy for the backend (load balancer,
//! outlier detection, locality, slow start), the endpoints tried before (retries), and what
//! each try showed. The decisions are pure functions in the submodules; this layer keeps each
//! backend's state — built per model, the endpoints that stay keeping their counters and
//! ejections — behind an `ArcSwap`, so a pick takes no lock (atomics only; a per-endpoint mutex
//! is held briefly when a try's outcome is counted).
//!
//! Behaviour worth knowing:
//! - `PickContext::tried` is always avoided while another endpoint is left: a caller that does
//!   not want that (`retryIgnorePreviousHosts: false`) passes `tried = []`, except its first
//!   element still pins the locality of retries (pass `[first]` then).
//! - Endpoints of the dialed address family are used when there is one.
//! - Every endpoint ejected: 503 `UH`, as Envoy with Istio's default `minHealthPercent` 0 (no
//!   panic threshold); with `minHealthPercent` set, below that share of healthy endpoints every
//!   endpoint takes traffic (Envoy's panic mode, over the whole backend).
//! - An ejected endpoint returns at the first interval tick after its ejection time; the ejected
//!   gauge falls when the next pick or report sees it back.
//! - Pass-through goes to the dialed address when it is an endpoint of the backend (ejection
//!   ignored: it is the destination named), else 503 `UH`.
//! - Consistent hashing without the key in the request picks at random (Envoy); round robin and
//!   least request turn weighted random while an endpoint warms up.

pub mod choose;
pub mod hash;
pub mod locality;
pub mod outlier;
pub mod policy;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use arc_swap::ArcSwap;
use http::{HeaderMap, HeaderValue};
use mesh_common::model::{ConsistentHash, LoadBalancer, Locality, Snapshot};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use self::choose::{Algorithm, Cand};
use self::hash::HashTable;
use self::outlier::{Health, OutlierConfig};
use self::policy::Effective;
use crate::endpoints::Upstream;
use crate::error::ProxyError;
use crate::metrics::{HostLabels, Metrics};
use crate::route::Backend;
use crate::table::RouteTable;
use crate::upstream::Endpoint;

/// What a pick may look at.
#[derive(Debug, Clone, Copy)]
pub struct PickContext<'a> {
    /// The request's headers (`None` for opaque TCP).
    pub headers: Option<&'a HeaderMap>,
    /// The request's query string, if any.
    pub query: Option<&'a str>,
    /// The original source's address.
    pub source: IpAddr,
    /// The source workload's locality (empty when unknown).
    pub source_locality: &'a Locality,
    /// The address the source dialed: endpoints of its family are preferred.
    pub dialed: IpAddr,
    /// Endpoints already tried for this request, first try first (retries avoid them while
    /// another is left; pass none when the policy says not to avoid them).
    pub tried: &'a [SocketAddr],
    /// Whether a retry may leave the locality of the first try.
    pub remote_localities: bool,
}

/// How one try at an endpoint went, for outlier detection and least-request accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryOutcome {
    /// A response below 500 (or a stream that ended well).
    Success,
    /// A response status of 500 or more from the endpoint.
    Status(u16),
    /// A failure on the waypoint's side of the try: connect failure, reset, timeout.
    LocalOrigin,
}

/// Milliseconds on a monotonic clock (never 0), injectable for tests.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now, in milliseconds since some start.
    fn now_ms(&self) -> u64;
}

/// The process's monotonic clock.
#[derive(Debug)]
pub struct SystemClock(Instant);

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock(Instant::now())
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }
}

/// A clock moved by hand (tests).
#[derive(Debug)]
pub struct ManualClock(AtomicU64);

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock(AtomicU64::new(1))
    }
}

impl ManualClock {
    /// Moves the clock on.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// What outlier detection reports to.
#[derive(Debug, Clone, Default)]
struct OutlierMetrics {
    ejections: prometheus_client::metrics::family::Family<HostLabels, Counter>,
    ejected: prometheus_client::metrics::family::Family<HostLabels, Gauge>,
}

/// State of one endpoint that outlives model updates while the endpoint stays.
#[derive(Debug, Default)]
struct Counters {
    active: AtomicU64,
    /// When the ejection ends (ms), 0 when not ejected.
    ejected_until: AtomicU64,
    health: Mutex<Health>,
    /// When the endpoint appeared (ms; 0: present from the start, never warming up).
    added_ms: u64,
}

/// One endpoint of a backend under one model.
#[derive(Debug)]
struct Member {
    upstream: Upstream,
    locality: Locality,
    labels: BTreeMap<String, String>,
    counters: Arc<Counters>,
}

/// A backend's state under one model.
#[derive(Debug)]
struct BackendState {
    key: Backend,
    policy: Effective,
    outlier: Option<OutlierConfig>,
    members: Vec<Member>,
    /// Indices of the IPv4 and IPv6 members.
    families: [Vec<u32>; 2],
    /// Consistent-hash tables over each family's members.
    tables: [Option<Arc<HashTable>>; 2],
    rr: AtomicUsize,
    /// Interval ticks are at `epoch + k × interval`.
    epoch: u64,
    /// The latest end of an ejection of a member (0: none ejected).
    latest_until: AtomicU64,
    /// Until when a member warms up.
    warm_until: u64,
    clock: Arc<dyn Clock>,
    ejections: Counter,
    ejected: Gauge,
}

/// The backends of one model.
#[derive(Debug, Default)]
struct Generation {
    snapshot: Weak<Snapshot>,
    by_host: HashMap<String, Vec<Arc<BackendState>>>,
}

impl Generation {
    fn find(&self, b: &Backend) -> Option<&Arc<BackendState>> {
        self.by_host.get(&b.host)?.iter().find(|s| {
            s.key.subset == b.subset && s.key.port == b.port && s.key.workload == b.workload
        })
    }
}

/// Every backend's balancing state.
#[derive(Debug)]
pub struct Balancers {
    current: ArcSwap<Generation>,
    /// The generation before: requests still on the previous model (in flight across an
    /// update) use its state and do not rebuild back to it.
    previous: ArcSwap<Generation>,
    rebuild: Mutex<()>,
    clock: Arc<dyn Clock>,
    metrics: OutlierMetrics,
}

impl Default for Balancers {
    fn default() -> Self {
        Balancers::with_clock(Arc::new(SystemClock::default()), None)
    }
}

/// A chosen endpoint; dropping it ends the try (least-request accounting).
#[derive(Debug)]
pub struct Picked {
    /// Where to send.
    pub endpoint: Endpoint,
    /// A `Set-Cookie` value to add to the response (consistent hashing on a cookie the request
    /// did not carry).
    pub set_cookie: Option<HeaderValue>,
    track: Option<Track>,
}

#[derive(Debug)]
struct Track {
    backend: Arc<BackendState>,
    index: u32,
}

impl Drop for Track {
    fn drop(&mut self) {
        if let Some(m) = self.backend.members.get(self.index as usize) {
            m.counters.active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Picked {
    /// Records how the try went.
    pub fn report(&self, outcome: TryOutcome) {
        if let Some(t) = &self.track {
            t.backend.report(t.index, outcome);
        }
    }
}

impl Balancers {
    /// Balancers reporting ejections to `metrics`, with the system clock.
    pub fn new(metrics: &Metrics) -> Balancers {
        Balancers::with_clock(Arc::new(SystemClock::default()), Some(metrics))
    }

    /// Balancers on `clock` (tests move it by hand).
    pub fn with_clock(clock: Arc<dyn Clock>, metrics: Option<&Metrics>) -> Balancers {
        Balancers {
            current: ArcSwap::from_pointee(Generation::default()),
            previous: ArcSwap::from_pointee(Generation::default()),
            rebuild: Mutex::new(()),
            clock,
            metrics: metrics.map_or_else(OutlierMetrics::default, |m| OutlierMetrics {
                ejections: m.outlier_ejections.clone(),
                ejected: m.outlier_ejected.clone(),
            }),
        }
    }

    /// Chooses an endpoint of `backend` for one try. No endpoint, or every one ejected: 503
    /// `UH`.
    pub fn pick(
        &self,
        table: &RouteTable,
        backend: &Backend,
        cx: &PickContext<'_>,
    ) -> Result<Picked, ProxyError> {
        let state = self.backend(table, backend)?;
        let now = self.clock.now_ms();
        let source_labels = state
            .policy
            .locality
            .as_ref()
            .filter(|l| !l.failover_priority.is_empty())
            .and_then(|_| table.workload_at(cx.source))
            .map(|w| &w.labels);
        let (index, set_cookie) = state.pick(cx, source_labels, now, &mut || fastrand::u64(..))?;
        let member = &state.members[index as usize];
        member.counters.active.fetch_add(1, Ordering::Relaxed);
        Ok(Picked {
            endpoint: Endpoint {
                addr: member.upstream.addr,
                identity: member.upstream.identity.clone(),
            },
            set_cookie,
            track: Some(Track {
                backend: state.clone(),
                index,
            }),
        })
    }

    /// The state of `backend` under `table`'s model, rebuilt when the model changed.
    fn backend(
        &self,
        table: &RouteTable,
        backend: &Backend,
    ) -> Result<Arc<BackendState>, ProxyError> {
        let same = |g: &Generation| std::ptr::eq(g.snapshot.as_ptr(), Arc::as_ptr(&table.snapshot));
        {
            let g = self.current.load();
            if same(&g) {
                if let Some(b) = g.find(backend) {
                    return Ok(b.clone());
                }
            }
        }
        let now = self.clock.now_ms();
        {
            let p = self.previous.load();
            if same(&p) {
                return match p.find(backend) {
                    Some(b) => Ok(b.clone()),
                    None => Ok(Arc::new(self.build(table, backend, None, now)?)),
                };
            }
        }
        let _writer = self.rebuild.lock().unwrap_or_else(|e| e.into_inner());
        let g = self.current.load_full();
        let mut next = Generation {
            snapshot: Arc::downgrade(&table.snapshot),
            by_host: HashMap::new(),
        };
        if same(&g) {
            if let Some(b) = g.find(backend) {
                return Ok(b.clone());
            }
            // Built before the map is copied: a backend without endpoints costs no copy.
            let b = Arc::new(self.build(table, backend, None, now)?);
            next.by_host = g.by_host.clone();
            next.by_host
                .entry(backend.host.clone())
                .or_default()
                .push(b.clone());
            self.current.store(Arc::new(next));
            return Ok(b);
        } else {
            // A new model: keep what is still in it, drop the rest.
            for old in g.by_host.values().flatten() {
                match self.build(table, &old.key, Some(old), now) {
                    Ok(b) => next
                        .by_host
                        .entry(old.key.host.clone())
                        .or_default()
                        .push(Arc::new(b)),
                    Err(_) => old.forget_ejections(&old.members, now),
                }
            }
            self.previous.store(g.clone());
            if let Some(b) = next.find(backend) {
                let b = b.clone();
                self.current.store(Arc::new(next));
                return Ok(b);
            }
        }
        let b = Arc::new(self.build(table, backend, None, now)?);
        next.by_host
            .entry(backend.host.clone())
            .or_default()
            .push(b.clone());
        self.current.store(Arc::new(next));
        Ok(b)
    }

    fn build(
        &self,
        table: &RouteTable,
        key: &Backend,
        old: Option<&BackendState>,
        now: u64,
    ) -> Result<BackendState, ProxyError> {
        let upstreams = table.endpoints(key)?;
        let policy = if key.workload.is_some() {
            Effective::default()
        } else {
            let dp = table
                .destination_policies
                .get(&key.host)
                .and_then(|i| table.snapshot.destination_policies.get(*i));
            let dist = table
                .service_by_host(&key.host)
                .and_then(|s| s.traffic_distribution.as_ref());
            policy::effective(dp, key.subset.as_deref(), key.port, dist)
        };
        let outlier = policy
            .outlier_detection
            .as_ref()
            .map(OutlierConfig::from_model);
        let mut families: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
        let mut members = Vec::with_capacity(upstreams.len());
        for (i, u) in upstreams.into_iter().enumerate() {
            let kept = old.and_then(|o| o.members.iter().find(|m| m.upstream.addr == u.addr));
            let counters = kept.map_or_else(
                || {
                    Arc::new(Counters {
                        added_ms: if old.is_some() { now } else { 0 },
                        ..Default::default()
                    })
                },
                |m| m.counters.clone(),
            );
            let w = table.workload(&u.workload_uid);
            families[usize::from(!u.addr.ip().to_canonical().is_ipv4())]
                .push(u32::try_from(i).unwrap_or(u32::MAX));
            members.push(Member {
                locality: w.map(|w| w.locality.clone()).unwrap_or_default(),
                labels: w.map(|w| w.labels.clone()).unwrap_or_default(),
                upstream: u,
                counters,
            });
        }
        if let Some(o) = old {
            let gone = o
                .members
                .iter()
                .filter(|m| !members.iter().any(|n| n.upstream.addr == m.upstream.addr));
            o.forget_ejections(gone, now);
        }
        let tables = match &policy.load_balancer {
            Some(LoadBalancer::ConsistentHash(ch)) => {
                let reuse = old.filter(|o| {
                    o.policy.load_balancer == policy.load_balancer
                        && o.members.len() == members.len()
                        && o.members
                            .iter()
                            .zip(&members)
                            .all(|(a, b)| a.upstream.addr == b.upstream.addr)
                });
                match reuse {
                    Some(o) => o.tables.clone(),
                    None => [0, 1].map(|f| hash_table(ch, &members, &families[f])),
                }
            }
            _ => [None, None],
        };
        let warm_until = policy.warmup_ms.map_or(0, |w| {
            members
                .iter()
                .filter(|m| m.counters.added_ms > 0)
                .map(|m| m.counters.added_ms + w)
                .max()
                .unwrap_or(0)
        });
        let latest = members
            .iter()
            .map(|m| m.counters.ejected_until.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        let labels = HostLabels {
            host: key.host.clone(),
        };
        Ok(BackendState {
            key: key.clone(),
            outlier,
            policy,
            members,
            families,
            tables,
            rr: AtomicUsize::new(old.map_or(0, |o| o.rr.load(Ordering::Relaxed))),
            epoch: old.map_or(now, |o| o.epoch),
            latest_until: AtomicU64::new(latest),
            warm_until,
            clock: self.clock.clone(),
            ejections: self.metrics.ejections.get_or_create(&labels).clone(),
            ejected: self.metrics.ejected.get_or_create(&labels).clone(),
        })
    }
}

fn hash_table(ch: &ConsistentHash, members: &[Member], family: &[u32]) -> Option<Arc<HashTable>> {
    if family.is_empty() {
        return None;
    }
    let keys: Vec<(String, u32)> = family
        .iter()
        .map(|i| (members[*i as usize].upstream.addr.to_string(), *i))
        .collect();
    Some(Arc::new(match ch.maglev_table_size {
        Some(size) => HashTable::maglev(
            &keys,
            if size == 0 {
                hash::DEFAULT_MAGLEV_SIZE
            } else {
                size
            },
        ),
        None => HashTable::ring(
            &keys,
            ch.minimum_ring_size
                .filter(|s| *s > 0)
                .unwrap_or(hash::DEFAULT_RING_SIZE),
        ),
    }))
}

/// The hash of a request under `ch`, with the cookie to issue when it is generated; `None`:
/// the request lacks the key.
fn request_hash(ch: &ConsistentHash, cx: &PickContext<'_>) -> Option<(u64, Option<HeaderValue>)> {
    if let Some(name) = &ch.header {
        let v = cx.headers?.get(name.as_str())?;
        return Some((hash::hash64(v.as_bytes()), None));
    }
    if let Some(c) = &ch.cookie {
        if let Some(v) = cx.headers.and_then(|h| cookie(h, &c.name)) {
            return Some((hash::hash64(v.as_bytes()), None));
        }
        let ttl = c.ttl_ms?;
        // As Envoy: a value from the connection's addresses, hashed like a received cookie.
        let value = format!(
            "{:016x}",
            hash::hash64(format!("{}{}", cx.source, cx.dialed).as_bytes())
        );
        let mut set = format!("{}={value}", c.name);
        if let Some(path) = &c.path {
            set.push_str("; Path=");
            set.push_str(path);
        }
        if ttl > 0 {
            set.push_str(&format!("; Max-Age={}", ttl / 1000));
        }
        set.push_str("; HttpOnly");
        let header = HeaderValue::from_str(&set).ok();
        return Some((hash::hash64(value.as_bytes()), header));
    }
    if let Some(name) = &ch.query_parameter {
        let v = cx
            .query?
            .split('&')
            .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
            .find(|(k, _)| k == name)?
            .1;
        return Some((hash::hash64(v.as_bytes()), None));
    }
    Some((
        hash::hash64(cx.source.to_canonical().to_string().as_bytes()),
        None,
    ))
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl BackendState {
    fn member_ejected(&self, m: &Member, now: u64) -> bool {
        let until = m.counters.ejected_until.load(Ordering::Relaxed);
        if until == 0 {
            return false;
        }
        if now < until {
            return true;
        }
        if m.counters
            .ejected_until
            .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.ejected.dec();
            tracing::info!(host = %self.key.host, endpoint = %m.upstream.addr, "outlier detection: endpoint returns");
        }
        false
    }

    /// Whether any member may be ejected now (else every one is back, and the gauge is told).
    fn any_ejected(&self, now: u64) -> bool {
        let latest = self.latest_until.load(Ordering::Relaxed);
        if latest == 0 {
            return false;
        }
        if now < latest {
            return true;
        }
        if self
            .latest_until
            .compare_exchange(latest, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            for m in &self.members {
                self.member_ejected(m, now);
            }
        }
        false
    }

    /// Ends the ejections of `members` (gone from the model) for the gauge.
    fn forget_ejections<'m>(&self, members: impl IntoIterator<Item = &'m Member>, now: u64) {
        for m in members {
            let until = m.counters.ejected_until.swap(0, Ordering::Relaxed);
            if until > now {
                self.ejected.dec();
            }
        }
    }

    fn cand(&self, i: u32, now: u64) -> Cand {
        let c = &self.members[i as usize].counters;
        let weight = if now < self.warm_until && c.added_ms > 0 {
            choose::warmup_weight(now.saturating_sub(c.added_ms), self.policy.warmup_ms)
        } else {
            1000
        };
        Cand {
            index: i,
            active: c.active.load(Ordering::Relaxed),
            weight,
        }
    }

    /// The member for one try, and a cookie to issue.
    fn pick(
        &self,
        cx: &PickContext<'_>,
        source_labels: Option<&BTreeMap<String, String>>,
        now: u64,
        rand: &mut dyn FnMut() -> u64,
    ) -> Result<(u32, Option<HeaderValue>), ProxyError> {
        let v6 = !cx.dialed.to_canonical().is_ipv4();
        let f = if self.families[usize::from(v6)].is_empty() {
            usize::from(!v6)
        } else {
            usize::from(v6)
        };
        let family = &self.families[f];
        let alg = match &self.policy.load_balancer {
            Some(LoadBalancer::Passthrough) => {
                let dialed = cx.dialed.to_canonical();
                return family
                    .iter()
                    .chain(&self.families[1 - f])
                    .find(|i| self.members[**i as usize].upstream.addr.ip().to_canonical() == dialed)
                    .map(|i| (*i, None))
                    .ok_or_else(|| {
                        ProxyError::no_healthy_upstream(format!(
                            "load balancer PASSTHROUGH: the dialed address {dialed} is not an endpoint of {}",
                            self.key.host
                        ))
                    });
            }
            Some(LoadBalancer::LeastRequest) => Some(Algorithm::LeastRequest),
            Some(LoadBalancer::Random) => Some(Algorithm::Random),
            Some(LoadBalancer::ConsistentHash(_)) => None,
            _ => Some(Algorithm::RoundRobin),
        };
        let hashed = match &self.policy.load_balancer {
            Some(LoadBalancer::ConsistentHash(ch)) => request_hash(ch, cx),
            _ => None,
        };
        let (hash, cookie) = match hashed {
            Some((h, c)) => (Some(h), c),
            None => (None, None),
        };
        let alg = alg.unwrap_or(Algorithm::Random);
        let counter = self.rr.fetch_add(1, Ordering::Relaxed);
        let table = self.tables[f].as_deref();
        let locality = self
            .policy
            .locality
            .as_ref()
            .filter(|l| !cx.source_locality.is_empty() || !l.failover_priority.is_empty());
        let ejections = self.outlier.is_some() && self.any_ejected(now);
        let warming = now < self.warm_until;
        if locality.is_none() && !ejections && cx.tried.is_empty() {
            // The fast path: every member of the family, nothing to allocate.
            let chosen = match (hash, table) {
                (Some(h), Some(t)) => t.lookup(h, &|_| true),
                _ => choose::choose_by(
                    alg,
                    family.len(),
                    &|k| self.cand(family[k], now),
                    warming,
                    counter,
                    rand,
                ),
            };
            return chosen.map(|i| (i, cookie)).ok_or_else(|| {
                ProxyError::no_healthy_upstream(format!("{} has no endpoint", self.key.host))
            });
        }
        // Healthy members (all in panic mode).
        let mut healthy: Vec<u32> = family
            .iter()
            .copied()
            .filter(|i| !ejections || !self.member_ejected(&self.members[*i as usize], now))
            .collect();
        if let Some(o) = &self.outlier {
            if outlier::panic_mode(healthy.len(), family.len(), o.min_health_percent) {
                healthy.clone_from(family);
            }
        }
        if healthy.is_empty() {
            return Err(ProxyError::no_healthy_upstream(format!(
                "every endpoint of {} is ejected by outlier detection",
                self.key.host
            )));
        }
        if let Some(l) = locality {
            healthy = self.by_locality(l, &healthy, family, cx, source_labels, rand);
        }
        let fresh: Vec<u32> = healthy
            .iter()
            .copied()
            .filter(|i| !cx.tried.contains(&self.members[*i as usize].upstream.addr))
            .collect();
        let cands = if fresh.is_empty() { &healthy } else { &fresh };
        let chosen = match (hash, table) {
            (Some(h), Some(t)) => t.lookup(h, &|i| cands.contains(&i)),
            _ => choose::choose_by(
                alg,
                cands.len(),
                &|k| self.cand(cands[k], now),
                warming,
                counter,
                rand,
            ),
        };
        chosen.map(|i| (i, cookie)).ok_or_else(|| {
            ProxyError::no_healthy_upstream(format!("{} has no endpoint", self.key.host))
        })
    }

    /// Narrows `healthy` to the locality group the request goes to: a `distribute` group by
    /// weight, else a priority level by load (retries pinned to the first try's level unless
    /// they may go remote, then avoiding the levels tried).
    fn by_locality(
        &self,
        l: &mesh_common::model::LocalityLb,
        healthy: &[u32],
        family: &[u32],
        cx: &PickContext<'_>,
        source_labels: Option<&BTreeMap<String, String>>,
        rand: &mut dyn FnMut() -> u64,
    ) -> Vec<u32> {
        let src = cx.source_locality;
        if let Some(rule) = locality::distribute_for(&l.distribute, src) {
            let mut groups: Vec<&Locality> = Vec::new();
            for i in family {
                let loc = &self.members[*i as usize].locality;
                if !groups.contains(&loc) {
                    groups.push(loc);
                }
            }
            let weights = locality::locality_weights(rule, &groups);
            let effective: Vec<u64> = groups
                .iter()
                .zip(&weights)
                .map(|(g, w)| {
                    let total = family
                        .iter()
                        .filter(|i| self.members[**i as usize].locality == **g)
                        .count() as u64;
                    let up = healthy
                        .iter()
                        .filter(|i| self.members[**i as usize].locality == **g)
                        .count() as u64;
                    let avail = (up * locality::OVERPROVISIONING / total.max(1)).min(100);
                    w * avail / 100
                })
                .collect();
            let sum: u64 = effective.iter().sum();
            if sum == 0 {
                return healthy.to_vec();
            }
            let mut roll = rand() % sum;
            let mut chosen = groups[0];
            for (g, w) in groups.iter().zip(&effective) {
                if roll < *w {
                    chosen = g;
                    break;
                }
                roll -= w;
            }
            return healthy
                .iter()
                .copied()
                .filter(|i| self.members[*i as usize].locality == *chosen)
                .collect();
        }
        let empty = BTreeMap::new();
        let src_labels = source_labels.unwrap_or(&empty);
        let level_of = |i: u32| -> usize {
            let m = &self.members[i as usize];
            let lv = if l.failover_priority.is_empty() {
                locality::level(src, &m.locality, &l.failover)
            } else {
                locality::label_level(
                    &l.failover_priority,
                    (src_labels, src),
                    (&m.labels, &m.locality),
                )
            };
            lv.min(locality::MAX_LEVELS - 1)
        };
        let mut counts = [(0usize, 0usize); locality::MAX_LEVELS];
        for i in family {
            counts[level_of(*i)].1 += 1;
        }
        for i in healthy {
            counts[level_of(*i)].0 += 1;
        }
        let tried_level = |a: &SocketAddr| {
            family
                .iter()
                .find(|i| self.members[**i as usize].upstream.addr == *a)
                .map(|i| level_of(*i))
        };
        let level = match cx.tried.first().and_then(tried_level) {
            Some(first) if !cx.remote_localities && counts[first].0 > 0 => Some(first),
            Some(_) if cx.remote_localities => {
                let mut rest = counts;
                for a in cx.tried {
                    if let Some(lv) = tried_level(a) {
                        rest[lv].0 = 0;
                    }
                }
                let loads = locality::priority_loads(&rest);
                let loads = if loads.iter().all(|x| *x == 0) {
                    locality::priority_loads(&counts)
                } else {
                    loads
                };
                locality::pick_level(&loads, u32::try_from(rand() % 100).unwrap_or(0))
            }
            _ => locality::pick_level(
                &locality::priority_loads(&counts),
                u32::try_from(rand() % 100).unwrap_or(0),
            ),
        };
        match level {
            Some(lv) => healthy
                .iter()
                .copied()
                .filter(|i| level_of(*i) == lv)
                .collect(),
            None => healthy.to_vec(),
        }
    }

    /// Counts a try's outcome; ejects on a threshold.
    fn report(&self, index: u32, outcome: TryOutcome) {
        let (Some(cfg), Some(m)) = (&self.outlier, self.members.get(index as usize)) else {
            return;
        };
        let now = self.clock.now_ms();
        let mut health = m.counters.health.lock().unwrap_or_else(|e| e.into_inner());
        let Some(trip) = health.record(cfg, outcome) else {
            return;
        };
        if self.member_ejected(m, now) {
            return;
        }
        let ejected = self
            .members
            .iter()
            .filter(|o| self.member_ejected(o, now))
            .count();
        if !outlier::may_eject(ejected, self.members.len(), cfg.max_ejection_percent) {
            health.c5xx = 0;
            health.gateway = 0;
            health.local = 0;
            tracing::info!(host = %self.key.host, endpoint = %m.upstream.addr, ?trip, "outlier detection: not ejected (maximum ejection share reached)");
            return;
        }
        let until = health.eject(cfg, self.epoch, now);
        m.counters.ejected_until.store(until, Ordering::Relaxed);
        self.latest_until.fetch_max(until, Ordering::Relaxed);
        self.ejections.inc();
        self.ejected.inc();
        tracing::info!(host = %self.key.host, endpoint = %m.upstream.addr, ?trip, times = health.times, for_ms = until - now, "outlier detection: endpoint ejected");
    }
}

#[cfg(test)]
mod tests;
