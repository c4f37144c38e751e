//! Whether a failed try is tried again, and after how long: the rule's retry policy (Istio's
//! default when the rule has none: 2 retries on `connect-failure,refused-stream,unavailable,
//! cancelled,retriable-status-codes` with 503, as Istio programs Envoy and its waypoints), the
//! `retryOn` conditions as Envoy reads them, and Envoy's fully jittered exponential backoff.

use std::time::Duration;

use http::{HeaderMap, StatusCode};
use mesh_common::model::RetryPolicy;

/// Envoy's default base interval between tries.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);

/// `retryOn` conditions, one bit each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn(u32);

impl RetryOn {
    /// Any 5xx response, a reset, a connect failure or a per-try timeout.
    pub const SERVER_ERROR: RetryOn = RetryOn(1);
    /// 502, 503, 504 (and connect failures, resets).
    pub const GATEWAY_ERROR: RetryOn = RetryOn(1 << 1);
    /// A reset or a connection failure after connecting, before the response.
    pub const RESET: RetryOn = RetryOn(1 << 2);
    /// A connection that could not be opened (including its timeout).
    pub const CONNECT_FAILURE: RetryOn = RetryOn(1 << 3);
    /// A stream the upstream refused before processing it.
    pub const REFUSED_STREAM: RetryOn = RetryOn(1 << 4);
    /// 409.
    pub const RETRIABLE_4XX: RetryOn = RetryOn(1 << 5);
    /// The statuses listed in the policy.
    pub const RETRIABLE_STATUS_CODES: RetryOn = RetryOn(1 << 6);
    /// gRPC `CANCELLED` (1).
    pub const CANCELLED: RetryOn = RetryOn(1 << 7);
    /// gRPC `DEADLINE_EXCEEDED` (4).
    pub const DEADLINE_EXCEEDED: RetryOn = RetryOn(1 << 8);
    /// gRPC `INTERNAL` (13).
    pub const INTERNAL: RetryOn = RetryOn(1 << 9);
    /// gRPC `RESOURCE_EXHAUSTED` (8).
    pub const RESOURCE_EXHAUSTED: RetryOn = RetryOn(1 << 10);
    /// gRPC `UNAVAILABLE` (14).
    pub const UNAVAILABLE: RetryOn = RetryOn(1 << 11);

    const NAMES: [(&'static str, RetryOn); 12] = [
        ("5xx", RetryOn::SERVER_ERROR),
        ("gateway-error", RetryOn::GATEWAY_ERROR),
        ("reset", RetryOn::RESET),
        ("connect-failure", RetryOn::CONNECT_FAILURE),
        ("refused-stream", RetryOn::REFUSED_STREAM),
        ("retriable-4xx", RetryOn::RETRIABLE_4XX),
        ("retriable-status-codes", RetryOn::RETRIABLE_STATUS_CODES),
        ("cancelled", RetryOn::CANCELLED),
        ("deadline-exceeded", RetryOn::DEADLINE_EXCEEDED),
        ("internal", RetryOn::INTERNAL),
        ("resource-exhausted", RetryOn::RESOURCE_EXHAUSTED),
        ("unavailable", RetryOn::UNAVAILABLE),
    ];

    /// Whether every condition of `other` is in `self`.
    pub fn has(self, other: RetryOn) -> bool {
        self.0 & other.0 == other.0
    }

    fn with(self, other: RetryOn) -> RetryOn {
        RetryOn(self.0 | other.0)
    }
}

/// A compiled retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Retries after the first try (0: none).
    pub retries: u32,
    /// Timeout of each try (headers), if any.
    pub per_try_timeout: Option<Duration>,
    /// Conditions.
    pub on: RetryOn,
    /// Statuses retried under `retriable-status-codes` (a bare number in `retryOn` adds itself
    /// and turns the condition on, as Istio does).
    pub statuses: Vec<u16>,
    /// Whether retries avoid endpoints already tried.
    pub avoid_tried: bool,
    /// Whether retries may leave the first try's locality.
    pub remote_localities: bool,
    /// Backoff base (the maximum is 10 times it).
    pub backoff_base: Duration,
    /// `retryOn` entries not understood (logged by the table builder; never silently dropped).
    pub unknown: Vec<String>,
}

impl Policy {
    /// Istio's default: 2 retries on connect failure, refused stream, gRPC unavailable and
    /// cancelled, and 503, to other endpoints.
    pub fn istio_default() -> Policy {
        Policy {
            retries: 2,
            per_try_timeout: None,
            on: RetryOn::CONNECT_FAILURE
                .with(RetryOn::REFUSED_STREAM)
                .with(RetryOn::UNAVAILABLE)
                .with(RetryOn::CANCELLED)
                .with(RetryOn::RETRIABLE_STATUS_CODES),
            statuses: vec![503],
            avoid_tried: true,
            remote_localities: false,
            backoff_base: DEFAULT_BACKOFF_BASE,
            unknown: Vec::new(),
        }
    }

    /// Istio's default, built once and shared (the policy of every request no rule decides).
    pub fn shared_default() -> std::sync::Arc<Policy> {
        static DEFAULT: std::sync::LazyLock<std::sync::Arc<Policy>> =
            std::sync::LazyLock::new(|| std::sync::Arc::new(Policy::istio_default()));
        DEFAULT.clone()
    }

    /// The policy of a rule's `retries` (`None`: Istio's default). An empty `retryOn` takes
    /// Istio's default conditions, as Istio does.
    pub fn from_model(model: Option<&RetryPolicy>) -> Policy {
        let Some(m) = model else {
            return Policy::istio_default();
        };
        let mut policy = Policy::istio_default();
        policy.retries = m.attempts;
        policy.per_try_timeout = m
            .per_try_timeout_ms
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis);
        policy.avoid_tried = m.retry_ignore_previous_hosts.unwrap_or(true);
        policy.remote_localities = m.retry_remote_localities;
        if let Some(ms) = m.backoff_base_ms.filter(|ms| *ms > 0) {
            policy.backoff_base = Duration::from_millis(ms);
        }
        if !m.retry_on.is_empty() {
            policy.on = RetryOn::default();
            policy.statuses.clear();
            for entry in m.retry_on.iter().flat_map(|e| e.split(',')) {
                let entry = entry.trim();
                if entry.is_empty() {
                    continue;
                }
                if let Some((_, bit)) = RetryOn::NAMES.iter().find(|(n, _)| *n == entry) {
                    policy.on = policy.on.with(*bit);
                } else if let Some(code) =
                    entry.parse::<u16>().ok().filter(|c| (100..600).contains(c))
                {
                    policy.on = policy.on.with(RetryOn::RETRIABLE_STATUS_CODES);
                    policy.statuses.push(code);
                } else {
                    policy.unknown.push(entry.to_owned());
                }
            }
        }
        policy
    }
}

/// How one try ended, as far as retrying cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryResult {
    /// Response headers came back (`grpc` is the `grpc-status` of a trailers-only response).
    Response {
        /// HTTP status.
        status: u16,
        /// `grpc-status` in the response headers, if any.
        grpc: Option<u32>,
    },
    /// No connection could be opened.
    ConnectFailure,
    /// The upstream refused the stream before processing it (nothing was processed).
    RefusedStream,
    /// The connection was reset or closed before the response headers.
    Reset,
    /// The per-try timeout expired before the response headers.
    PerTryTimeout,
}

impl TryResult {
    /// The result of response headers.
    pub fn response(status: StatusCode, headers: &HeaderMap) -> TryResult {
        TryResult::Response {
            status: status.as_u16(),
            grpc: headers
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
        }
    }
}

/// Which condition made a try retriable (the `reason` of `mesh_waypoint_retries_total`).
pub fn retry_reason(on: RetryOn, statuses: &[u16], result: TryResult) -> Option<&'static str> {
    let gateway = on.has(RetryOn::GATEWAY_ERROR);
    let server = on.has(RetryOn::SERVER_ERROR);
    match result {
        TryResult::ConnectFailure if on.has(RetryOn::CONNECT_FAILURE) || server || gateway => {
            Some("connect-failure")
        }
        TryResult::RefusedStream if on.has(RetryOn::REFUSED_STREAM) || server => {
            Some("refused-stream")
        }
        TryResult::Reset if on.has(RetryOn::RESET) || server || gateway => Some("reset"),
        TryResult::PerTryTimeout if server || gateway => Some("per-try-timeout"),
        TryResult::Response { status, grpc } => {
            let grpc_reason = match grpc {
                Some(1) if on.has(RetryOn::CANCELLED) => Some("cancelled"),
                Some(4) if on.has(RetryOn::DEADLINE_EXCEEDED) => Some("deadline-exceeded"),
                Some(8) if on.has(RetryOn::RESOURCE_EXHAUSTED) => Some("resource-exhausted"),
                Some(13) if on.has(RetryOn::INTERNAL) => Some("internal"),
                Some(14) if on.has(RetryOn::UNAVAILABLE) => Some("unavailable"),
                _ => None,
            };
            if grpc_reason.is_some() {
                grpc_reason
            } else if server && (500..600).contains(&status) {
                Some("5xx")
            } else if gateway && matches!(status, 502..=504) {
                Some("gateway-error")
            } else if on.has(RetryOn::RETRIABLE_4XX) && status == 409 {
                Some("retriable-4xx")
            } else if on.has(RetryOn::RETRIABLE_STATUS_CODES) && statuses.contains(&status) {
                Some("retriable-status-codes")
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Envoy's backoff before retry `n` (1 for the first retry): a uniformly random time in
/// `[0, min(base * 2^(n-1) ... the cap)]`, "full jitter", capped at 10 times the base.
pub fn backoff(base: Duration, n: u32, random: u64) -> Duration {
    let base_ms = base.as_millis().max(1) as u64;
    let cap = base_ms.saturating_mul(10);
    let ceiling = base_ms
        .saturating_mul(1u64 << n.clamp(1, 32).saturating_sub(1).min(31))
        .min(cap);
    Duration::from_millis(random % (ceiling + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(attempts: u32, retry_on: &[&str]) -> Policy {
        Policy::from_model(Some(&RetryPolicy {
            attempts,
            per_try_timeout_ms: None,
            retry_on: retry_on.iter().map(|s| (*s).to_owned()).collect(),
            retry_remote_localities: false,
            retry_ignore_previous_hosts: None,
            backoff_base_ms: None,
        }))
    }

    #[test]
    fn policies_from_the_model() {
        let default = Policy::istio_default();
        assert_eq!(Policy::from_model(None), default);
        assert_eq!(default.retries, 2);
        let empty = policy(3, &[]);
        assert_eq!(
            (empty.retries, empty.on, &empty.statuses),
            (3, default.on, &vec![503])
        );
        let off = policy(0, &["5xx"]);
        assert_eq!(off.retries, 0);
        let listed = policy(3, &["5xx,connect-failure", "429", "bogus"]);
        assert!(listed.on.has(RetryOn::SERVER_ERROR));
        assert!(listed.on.has(RetryOn::CONNECT_FAILURE));
        assert!(listed.on.has(RetryOn::RETRIABLE_STATUS_CODES));
        assert!(!listed.on.has(RetryOn::UNAVAILABLE));
        assert_eq!(listed.statuses, vec![429]);
        assert_eq!(listed.unknown, vec!["bogus".to_owned()]);
    }

    #[test]
    fn conditions() {
        let r = |status: u16| TryResult::Response { status, grpc: None };
        let g = |grpc: u32| TryResult::Response {
            status: 200,
            grpc: Some(grpc),
        };
        #[rustfmt::skip]
        let cases: &[(&[&str], TryResult, Option<&str>)] = &[
            (&["5xx"], r(500), Some("5xx")),
            (&["5xx"], r(503), Some("5xx")),
            (&["5xx"], r(404), None),
            (&["5xx"], r(200), None),
            (&["5xx"], TryResult::Reset, Some("reset")),
            (&["5xx"], TryResult::ConnectFailure, Some("connect-failure")),
            (&["5xx"], TryResult::PerTryTimeout, Some("per-try-timeout")),
            (&["gateway-error"], r(500), None),
            (&["gateway-error"], r(502), Some("gateway-error")),
            (&["gateway-error"], r(504), Some("gateway-error")),
            (&["gateway-error"], TryResult::PerTryTimeout, Some("per-try-timeout")),
            (&["reset"], TryResult::Reset, Some("reset")),
            (&["reset"], TryResult::ConnectFailure, None),
            (&["reset"], r(503), None),
            (&["connect-failure"], TryResult::ConnectFailure, Some("connect-failure")),
            (&["connect-failure"], TryResult::Reset, None),
            (&["connect-failure"], TryResult::PerTryTimeout, None),
            (&["refused-stream"], TryResult::RefusedStream, Some("refused-stream")),
            (&["retriable-4xx"], r(409), Some("retriable-4xx")),
            (&["retriable-4xx"], r(400), None),
            (&["retriable-status-codes", "418"], r(418), Some("retriable-status-codes")),
            (&["418"], r(503), None),
            (&["cancelled"], g(1), Some("cancelled")),
            (&["deadline-exceeded"], g(4), Some("deadline-exceeded")),
            (&["resource-exhausted"], g(8), Some("resource-exhausted")),
            (&["internal"], g(13), Some("internal")),
            (&["unavailable"], g(14), Some("unavailable")),
            (&["unavailable"], g(0), None),
            (&["unavailable"], g(13), None),
            (&[], r(503), Some("retriable-status-codes")),
            (&[], r(500), None),
            (&[], g(14), Some("unavailable")),
            (&[], TryResult::Reset, None),
            (&[], TryResult::ConnectFailure, Some("connect-failure")),
        ];
        for (on, result, want) in cases {
            let p = policy(2, on);
            assert_eq!(
                retry_reason(p.on, &p.statuses, *result),
                *want,
                "{on:?} {result:?}"
            );
        }
    }

    #[test]
    fn backoff_is_fully_jittered_and_capped() {
        let base = Duration::from_millis(25);
        let ms = Duration::from_millis;
        #[rustfmt::skip]
        let cases = [
            (1, 0, ms(0)),
            (1, 25, ms(25)),
            (1, 26, ms(0)),
            (2, 50, ms(50)),
            (3, 99, ms(99)),
            (5, 250, ms(250)),
            (9, 250, ms(250)),
            (9, 251, ms(0)),
            (40, u64::MAX, ms(u64::MAX % 251)),
        ];
        for (n, random, want) in cases {
            assert_eq!(backoff(base, n, random), want, "retry {n} random {random}");
        }
    }
}
