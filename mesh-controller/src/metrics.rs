//! The controller's own health metrics, `mesh_controller_*` on the admin `/metrics`: config
//! pushes, their latency, acks and Nacks per client kind (recorded by the client
//! [`Registry`](crate::server::Registry) as the streams report them), connected and stale
//! clients and configuration problems (read from the registry and the published configuration
//! at each scrape), and the certificate authority's signings, failures and the expiry of the
//! latest certificate per identity ([`CaMetrics`], the certificate service's observer).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mesh_common::api::config::{ClientKind, ResourceKind};
use mesh_common::identity::Identity;
use mesh_hbone::ca_service::{SigningFailure, SigningObserver};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeLabelValue};
use prometheus_client::encoding::{EncodeMetric, LabelSetEncoder, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry as MetricsRegistry;

use crate::controller::Controller;
use crate::error::ConfigError;
use crate::server::Registry;

/// A client connected but behind the latest version for longer than this is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

/// At most this many identities have an expiry series; past it, the one signed longest ago is
/// dropped.
pub const MAX_EXPIRY_SERIES: usize = 10_000;

/// Upper bounds (seconds) of the push latency histogram: sub-millisecond to ten seconds.
const PUSH_LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A config stream client's kind (label `kind`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A node agent.
    Agent,
    /// A waypoint.
    Waypoint,
}

impl Kind {
    /// Both kinds.
    pub const ALL: [Kind; 2] = [Kind::Agent, Kind::Waypoint];

    /// The kind of an admitted stream (UNSPECIFIED is admitted as an agent).
    pub fn of(kind: ClientKind) -> Kind {
        match kind {
            ClientKind::Waypoint => Kind::Waypoint,
            ClientKind::Agent | ClientKind::Unspecified => Kind::Agent,
        }
    }

    /// The label value (also `ClientInfo::kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Agent => "agent",
            Kind::Waypoint => "waypoint",
        }
    }
}

impl EncodeLabelValue for Kind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// Whether a push replaced the client's view (`full`, the first on a stream) or carried the
/// difference (`incremental`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum PushType {
    /// The first update of a stream.
    Full,
    /// A later one.
    Incremental,
}

impl PushType {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            PushType::Full => "full",
            PushType::Incremental => "incremental",
        }
    }
}

/// Labels of the push counter (`kind`, `type`).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct PushLabels {
    /// Client kind.
    pub kind: Kind,
    /// Full or incremental.
    pub push_type: PushType,
}

impl EncodeLabelSet for PushLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        [
            ("kind", self.kind.as_str()),
            ("type", self.push_type.as_str()),
        ]
        .encode(encoder)
    }
}

/// Labels with the client kind only.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Client kind.
    pub kind: Kind,
}

/// Labels of the Nack counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NackLabels {
    /// Client kind.
    pub kind: Kind,
    /// The resource kind the client could not apply (`unknown` when it did not say).
    pub resource_kind: &'static str,
}

/// The `resource_kind` label of a Nack: a kind this controller knows by its name, anything else
/// (an older client, a number from a newer one) `unknown`, so the label set stays bounded
/// whatever a client sends.
pub fn nack_resource_kind(raw: i32) -> &'static str {
    match ResourceKind::try_from(raw) {
        Ok(ResourceKind::Unspecified) | Err(_) => "unknown",
        Ok(kind) => mesh_common::api::kind_name(kind),
    }
}

fn push_latency_histogram() -> Histogram {
    Histogram::new(PUSH_LATENCY_BUCKETS)
}

/// What the config streams record: pushes, their latency, acks and Nacks.
#[derive(Debug)]
pub struct PushMetrics {
    /// Updates written to a client's stream.
    pub pushes: Family<PushLabels, Counter>,
    /// Seconds from the configuration being published (or the stream opening, if later) to its
    /// update being written for the client.
    pub latency: Family<KindLabels, Histogram, fn() -> Histogram>,
    /// Acks received.
    pub acks: Family<KindLabels, Counter>,
    /// Nacks received.
    pub nacks: Family<NackLabels, Counter>,
}

impl Default for PushMetrics {
    fn default() -> Self {
        let metrics = PushMetrics {
            pushes: Family::default(),
            latency: Family::new_with_constructor(push_latency_histogram as fn() -> Histogram),
            acks: Family::default(),
            nacks: Family::default(),
        };
        // Every kind's series exists from the start: a dashboard's rate is 0, not absent.
        for kind in Kind::ALL {
            for push_type in [PushType::Full, PushType::Incremental] {
                drop(
                    metrics
                        .pushes
                        .get_or_create(&PushLabels { kind, push_type }),
                );
            }
            drop(metrics.latency.get_or_create(&KindLabels { kind }));
            drop(metrics.acks.get_or_create(&KindLabels { kind }));
            // Every resource kind this build knows (numbered from 1), and `unknown`.
            for raw in (0..).take_while(|&raw| ResourceKind::try_from(raw).is_ok()) {
                let resource_kind = nack_resource_kind(raw);
                drop(metrics.nacks.get_or_create(&NackLabels {
                    kind,
                    resource_kind,
                }));
            }
        }
        metrics
    }
}

impl PushMetrics {
    /// Counts a push to a `kind` client, `waited` after the configuration was there to send.
    pub fn pushed(&self, kind: Kind, full: bool, waited: Duration) {
        let push_type = if full {
            PushType::Full
        } else {
            PushType::Incremental
        };
        self.pushes
            .get_or_create(&PushLabels { kind, push_type })
            .inc();
        self.latency
            .get_or_create(&KindLabels { kind })
            .observe(waited.as_secs_f64());
    }

    /// Counts an ack from a `kind` client.
    pub fn acked(&self, kind: Kind) {
        self.acks.get_or_create(&KindLabels { kind }).inc();
    }

    /// Counts a Nack from a `kind` client of a resource of kind `resource_kind` (raw enum).
    pub fn nacked(&self, kind: Kind, resource_kind: i32) {
        let labels = NackLabels {
            kind,
            resource_kind: nack_resource_kind(resource_kind),
        };
        self.nacks.get_or_create(&labels).inc();
    }

    fn register(&self, sub: &mut MetricsRegistry) {
        sub.register(
            "config_pushes",
            "Config updates written to client streams, by client kind and full or incremental",
            self.pushes.clone(),
        );
        sub.register(
            "config_push_latency_seconds",
            "Time from a configuration being published (or the stream opening, if later) to its \
             update being written for a client",
            self.latency.clone(),
        );
        sub.register(
            "config_acks",
            "Config updates acknowledged by clients",
            self.acks.clone(),
        );
        sub.register(
            "config_nacks",
            "Config updates rejected by clients, by the kind of the resource they could not apply",
            self.nacks.clone(),
        );
    }
}

/// When a client started waiting for the latest version, and whether it has waited too long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    /// When its stream opened.
    pub connected: Instant,
    /// When it was sent the oldest update it has not acknowledged since (`None`: it acked every
    /// update sent, or none was sent yet).
    pub unacked_since: Option<Instant>,
}

/// Whether a client is stale: it has not acknowledged `latest` (published at `published`), and
/// has been waiting for longer than `after`: since the oldest update it has not acknowledged,
/// or, with every sent update acknowledged, since the latest version was there to send
/// (published, or the stream opened if later). A Nack does not end the wait.
pub fn is_stale(
    acked: &str,
    latest: &str,
    pending: Pending,
    published: Instant,
    now: Instant,
    after: Duration,
) -> bool {
    if acked == latest {
        return false;
    }
    let since = pending
        .unacked_since
        .unwrap_or_else(|| published.max(pending.connected));
    now.saturating_duration_since(since) > after
}

/// Connected and stale clients of one kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientCounts {
    /// Streams open.
    pub connected: u64,
    /// Of those, stale ([`is_stale`]).
    pub stale: u64,
}

/// Configuration errors and warnings per object kind (`document` for documents that are not
/// a recognizable object).
pub fn problem_counts(errors: &[ConfigError]) -> BTreeMap<(bool, String), u64> {
    let mut counts = BTreeMap::new();
    for e in errors {
        let kind = e
            .object
            .as_ref()
            .map_or_else(|| "document".to_owned(), |o| o.kind.to_string());
        *counts.entry((e.warning, kind)).or_insert(0) += 1;
    }
    counts
}

/// Labels with an object kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ObjectKindLabels {
    kind: String,
}

/// Reads the clients and the configuration's problems at each scrape.
#[derive(Debug)]
struct StateCollector {
    controller: Arc<Controller>,
    registry: Arc<Registry>,
    stale_after: Duration,
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let current = self.controller.current();
        let counts = self.registry.counts(
            &current.version,
            current.published_at,
            Instant::now(),
            self.stale_after,
        );
        type Pick = fn(&ClientCounts) -> u64;
        let stale_help = format!(
            "Connected clients that have not acknowledged the latest version for longer than {} s",
            self.stale_after.as_secs_f64()
        );
        let gauges: [(&str, &str, Pick); 2] = [
            (
                "clients_connected",
                "Config stream clients connected",
                |c| c.connected,
            ),
            ("clients_stale", &stale_help, |c| c.stale),
        ];
        for (name, help, pick) in gauges {
            let gauge = ConstGauge::new(0i64);
            let mut family = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            for kind in Kind::ALL {
                let value = counts.get(&kind).map_or(0, pick);
                let labels = KindLabels { kind };
                ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        let problems = problem_counts(&current.errors);
        for (warning, name, help) in [
            (
                false,
                "config_errors",
                "Current configuration errors, by object kind (the object, or the field, is not \
                 applied)",
            ),
            (
                true,
                "config_warnings",
                "Current configuration warnings, by object kind (translated without what the \
                 warning names)",
            ),
        ] {
            let gauge = ConstGauge::new(0i64);
            let mut family = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            for ((_, kind), n) in problems.iter().filter(|((w, _), _)| *w == warning) {
                let labels = ObjectKindLabels { kind: kind.clone() };
                ConstGauge::new(i64::try_from(*n).unwrap_or(i64::MAX))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The latest certificate signed for one identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expiry {
    /// When it was signed.
    pub signed_at: SystemTime,
    /// When it expires.
    pub not_after: SystemTime,
}

/// Whether an identity's series is dropped at `now`: it was not signed again within two
/// lifetimes of its latest certificate (its workloads are gone).
pub fn is_forgotten(expiry: &Expiry, now: SystemTime) -> bool {
    let lifetime = expiry
        .not_after
        .duration_since(expiry.signed_at)
        .unwrap_or_default();
    now.duration_since(expiry.signed_at)
        .is_ok_and(|age| age > lifetime.saturating_mul(2))
}

/// The expiry of the latest certificate per identity, bounded ([`is_forgotten`],
/// [`MAX_EXPIRY_SERIES`]).
#[derive(Debug)]
pub struct ExpiryTable {
    entries: Mutex<BTreeMap<String, Expiry>>,
    cap: usize,
}

impl Default for ExpiryTable {
    fn default() -> Self {
        ExpiryTable::with_cap(MAX_EXPIRY_SERIES)
    }
}

impl ExpiryTable {
    /// A table of at most `cap` identities.
    pub fn with_cap(cap: usize) -> Self {
        ExpiryTable {
            entries: Mutex::default(),
            cap,
        }
    }

    /// Records a certificate for `identity` signed at `now`; drops forgotten identities and,
    /// over the cap, the one signed longest ago.
    pub fn record(&self, identity: &str, not_after: SystemTime, now: SystemTime) {
        let mut entries = self.lock();
        entries.retain(|_, e| !is_forgotten(e, now));
        if !entries.contains_key(identity) && entries.len() >= self.cap {
            let oldest = entries
                .iter()
                .min_by_key(|(_, e)| e.signed_at)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                entries.remove(&oldest);
            }
        }
        if self.cap > 0 {
            let expiry = Expiry {
                signed_at: now,
                not_after,
            };
            entries.insert(identity.to_owned(), expiry);
        }
    }

    /// The identities with a series at `now`, with their latest certificate.
    pub fn current(&self, now: SystemTime) -> Vec<(String, Expiry)> {
        let mut entries = self.lock();
        entries.retain(|_, e| !is_forgotten(e, now));
        entries.iter().map(|(k, e)| (k.clone(), *e)).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Expiry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Labels of the expiry gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IdentityLabels {
    identity: String,
}

impl Collector for ExpiryTable {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "ca_certificate_expiry_timestamp_seconds",
            "Expiry (unix time) of the latest certificate signed for each SPIFFE identity",
            None,
            gauge.metric_type(),
        )?;
        for (identity, expiry) in self.current(SystemTime::now()) {
            let secs = expiry
                .not_after
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            ConstGauge::new(i64::try_from(secs).unwrap_or(i64::MAX))
                .encode(family.encode_family(&IdentityLabels { identity })?)?;
        }
        Ok(())
    }
}

/// Labels of the signing failures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// [`SigningFailure::as_str`].
    pub reason: &'static str,
}

/// The certificate authority's metrics: what the certificate service reports
/// ([`SigningObserver`]).
#[derive(Debug)]
pub struct CaMetrics {
    /// Workload certificates signed.
    pub signed: Counter,
    /// Requests refused or failed, by reason.
    pub failures: Family<FailureLabels, Counter>,
    /// The latest certificate per identity.
    pub expiry: Arc<ExpiryTable>,
}

impl Default for CaMetrics {
    fn default() -> Self {
        let metrics = CaMetrics {
            signed: Counter::default(),
            failures: Family::default(),
            expiry: Arc::default(),
        };
        for failure in SigningFailure::ALL {
            drop(metrics.failures.get_or_create(&FailureLabels {
                reason: failure.as_str(),
            }));
        }
        metrics
    }
}

impl SigningObserver for CaMetrics {
    fn signed(&self, identity: &Identity, not_after: SystemTime) {
        self.signed.inc();
        self.expiry
            .record(&identity.to_string(), not_after, SystemTime::now());
    }

    fn failed(&self, failure: SigningFailure) {
        self.failures
            .get_or_create(&FailureLabels {
                reason: failure.as_str(),
            })
            .inc();
    }
}

impl CaMetrics {
    fn register(&self, sub: &mut MetricsRegistry) {
        sub.register(
            "ca_certificates_signed",
            "Workload certificates signed by the certificate service",
            self.signed.clone(),
        );
        sub.register(
            "ca_signing_failures",
            "Certificate requests refused or failed, by reason",
            self.failures.clone(),
        );
        sub.register_collector(Box::new(self.expiry.clone()));
    }
}

/// What the health metrics read.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The published configuration.
    pub controller: Arc<Controller>,
    /// The connected clients (and their push metrics).
    pub registry: Arc<Registry>,
    /// The certificate authority's metrics.
    pub ca: Arc<CaMetrics>,
    /// The stale threshold.
    pub stale_after: Duration,
}

/// Registers every health metric under `sub` (the `mesh_controller` prefix).
pub fn register(sub: &mut MetricsRegistry, sources: &Sources) {
    sources.registry.metrics().register(sub);
    sources.ca.register(sub);
    sub.register_collector(Box::new(StateCollector {
        controller: sources.controller.clone(),
        registry: sources.registry.clone(),
        stale_after: sources.stale_after,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::{Kind as ObjectKind, ObjectKey};

    #[test]
    fn clients_are_stale_after_waiting_too_long_for_the_latest_version() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let after = s(30);
        let pending = |connected: u64, unacked: Option<u64>| Pending {
            connected: t0 + s(connected),
            unacked_since: unacked.map(|u| t0 + s(u)),
        };
        // (case, acked, pending, published at, now, stale)
        #[rustfmt::skip]
        let cases = [
            ("acked the latest", "v2", pending(0, None), 0, 100, false),
            ("acked the latest, an older push unacked", "v2", pending(0, Some(1)), 0, 100, false),
            ("sent, not acked, within the threshold", "v1", pending(0, Some(50)), 50, 80, false),
            ("sent, not acked, past the threshold", "v1", pending(0, Some(50)), 50, 81, true),
            ("never acked since its first push", "", pending(10, Some(10)), 0, 41, true),
            ("connected recently, nothing acked yet", "", pending(60, None), 0, 80, false),
            ("connected recently, first push unacked", "", pending(60, Some(60)), 0, 80, false),
            ("acks lag behind a churning config", "v1", pending(0, Some(5)), 99, 100, true),
            ("acked all sent, latest not sent yet", "v1", pending(0, None), 50, 70, false),
            ("acked all sent, latest stuck unsent", "v1", pending(0, None), 50, 90, true),
            ("a Nack does not end the wait", "v1", pending(0, Some(20)), 20, 60, true),
            ("clock reads before the wait began", "v1", pending(0, Some(90)), 90, 80, false),
        ];
        for (case, acked, pending, published, now, want) in cases {
            assert_eq!(
                is_stale(acked, "v2", pending, t0 + s(published), t0 + s(now), after),
                want,
                "{case}"
            );
        }
    }

    #[test]
    fn identities_are_forgotten_two_lifetimes_after_their_last_signing() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let h = |n: u64| Duration::from_secs(n * 3600);
        // (case, lifetime, now after signing, forgotten)
        let cases = [
            ("just signed", h(24), h(0), false),
            ("expired, within two lifetimes", h(24), h(30), false),
            ("exactly two lifetimes", h(24), h(48), false),
            ("past two lifetimes", h(24), h(49), true),
            ("a short lifetime", h(1), h(3), true),
            ("a zero lifetime", h(0), Duration::from_secs(1), true),
        ];
        for (case, lifetime, age, want) in cases {
            let expiry = Expiry {
                signed_at: t0,
                not_after: t0 + lifetime,
            };
            assert_eq!(is_forgotten(&expiry, t0 + age), want, "{case}");
        }
        let before = Expiry {
            signed_at: t0,
            not_after: t0 + h(1),
        };
        assert!(!is_forgotten(&before, t0 - h(5)), "a clock set back");
    }

    #[test]
    fn the_expiry_table_keeps_the_latest_certificate_and_stays_bounded() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let s = Duration::from_secs;
        let table = ExpiryTable::with_cap(2);
        table.record("a", t0 + s(100), t0);
        table.record("a", t0 + s(150), t0 + s(50));
        table.record("b", t0 + s(200), t0 + s(100));
        let names = |now| {
            table
                .current(now)
                .into_iter()
                .map(|(k, e)| (k, e.not_after))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(t0 + s(100)),
            [("a".to_owned(), t0 + s(150)), ("b".to_owned(), t0 + s(200))]
        );
        // Over the cap: `a`, signed longest ago, goes.
        table.record("c", t0 + s(300), t0 + s(110));
        assert_eq!(
            names(t0 + s(110)),
            [("b".to_owned(), t0 + s(200)), ("c".to_owned(), t0 + s(300))]
        );
        // `b` (lifetime 100 s) is forgotten past 200 s after its signing; `c` (190 s) not yet.
        assert_eq!(names(t0 + s(301)), [("c".to_owned(), t0 + s(300))]);
        assert!(names(t0 + s(491)).is_empty());
    }

    #[test]
    fn nack_resource_kinds_are_named_and_bounded() {
        // (raw kind, label)
        let cases = [
            (ResourceKind::Workload as i32, "Workload"),
            (ResourceKind::Route as i32, "Route"),
            (ResourceKind::Telemetry as i32, "Telemetry"),
            (ResourceKind::Unspecified as i32, "unknown"),
            (4242, "unknown"),
            (-1, "unknown"),
        ];
        for (raw, want) in cases {
            assert_eq!(nack_resource_kind(raw), want, "{raw}");
        }
        // Every kind's series exists from the start, at 0: 8 kinds and `unknown`, per client kind.
        let metrics = PushMetrics::default();
        let mut registry = MetricsRegistry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        let nacks = text
            .lines()
            .filter(|l| l.starts_with("config_nacks_total{"));
        assert_eq!(nacks.count(), 18, "{text}");
        assert!(
            text.contains(
                "config_nacks_total{kind=\"waypoint\",resource_kind=\"RequestAuthentication\"} 0"
            ),
            "{text}"
        );
    }

    #[test]
    fn problems_are_counted_by_severity_and_object_kind() {
        let key = |kind, name: &str| ObjectKey {
            kind,
            namespace: "apps".into(),
            name: name.into(),
        };
        let errors = vec![
            ConfigError::field("a.yaml", &key(ObjectKind::VirtualService, "a"), "spec", "x"),
            ConfigError::field("a.yaml", &key(ObjectKind::VirtualService, "b"), "spec", "y"),
            ConfigError::warning("a.yaml", &key(ObjectKind::VirtualService, "a"), "s", "z"),
            ConfigError::field("b.yaml", &key(ObjectKind::IstioGateway, "g"), "spec", "x"),
            ConfigError::document("c.yaml#1", "", "not an object"),
        ];
        let counts = problem_counts(&errors);
        let want: BTreeMap<(bool, String), u64> = [
            ((false, "VirtualService".to_owned()), 2),
            ((true, "VirtualService".to_owned()), 1),
            ((false, "Gateway.networking.istio.io".to_owned()), 1),
            ((false, "document".to_owned()), 1),
        ]
        .into_iter()
        .collect();
        assert_eq!(counts, want);
    }
}
