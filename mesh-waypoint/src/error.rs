//! The one error type of the proxy: the status and body it answers, Envoy's response flag and
//! response code details for the access log, who is to blame, and whether a retry is safe.

use http::StatusCode;

/// Who caused a failure (pingora's classification; metrics and retries read it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Blame {
    /// The client: a bad request, or a request the policy refuses.
    Downstream,
    /// The waypoint's configuration or state: no route, unknown host, no endpoint.
    Waypoint,
    /// The upstream: connect failure, reset.
    Upstream,
}

/// Body Envoy answers when no endpoint can take the request.
pub const NO_HEALTHY_UPSTREAM: &str = "no healthy upstream";
/// Body Envoy answers for an L7 authorization deny.
pub const RBAC_DENIED: &str = "RBAC: access denied";
/// Body Envoy answers when a JWT does not verify.
pub const JWT_VERIFICATION_FAILS: &str = "Jwt verification fails";
/// Body Envoy answers when the upstream connection fails.
pub const UPSTREAM_CONNECT_FAILURE: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection failure";

/// Body Envoy answers when a route or per-try timeout expires.
pub const UPSTREAM_REQUEST_TIMEOUT: &str = "upstream request timeout";
/// Body Envoy answers when a circuit-breaker limit is reached.
pub const UPSTREAM_OVERFLOW: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: overflow";
/// Body Envoy answers when the upstream connection ends before the response headers.
pub const UPSTREAM_CONNECTION_TERMINATION: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection termination";
/// Body Envoy answers an injected abort with.
pub const FAULT_FILTER_ABORT: &str = "fault filter abort";

/// A request the waypoint answers itself, with why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{status} {flag} {details}: {message}")]
pub struct ProxyError {
    /// Status answered downstream.
    pub status: StatusCode,
    /// Envoy's response flag (`NR`, `NC`, `UH`, `UF`...; `-` when none, as for authz denies).
    pub flag: &'static str,
    /// Envoy's response code details (`route_not_found`, `rbac_access_denied`...).
    pub details: &'static str,
    /// What happened, for the log (never sent to the client).
    pub message: String,
    /// Who is to blame.
    pub blame: Blame,
    /// Whether the request may be tried again (on another endpoint): nothing reached the
    /// upstream application.
    pub retryable: bool,
    /// The `grpc-status` a gRPC client is answered with (HTTP 200, trailers-only); `None`:
    /// Envoy's mapping of the HTTP status ([`ProxyError::grpc_status`]).
    pub grpc: Option<u32>,
}

impl ProxyError {
    fn new(
        status: StatusCode,
        flag: &'static str,
        details: &'static str,
        blame: Blame,
        retryable: bool,
        message: impl Into<String>,
    ) -> ProxyError {
        ProxyError {
            status,
            flag,
            details,
            message: message.into(),
            blame,
            retryable,
            grpc: None,
        }
    }

    /// The route timeout (or the client's gRPC deadline) expired before the response headers
    /// (504 `UT`; gRPC clients get `DEADLINE_EXCEEDED`).
    pub fn timeout(message: impl Into<String>) -> ProxyError {
        let mut e = Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "UT",
            "upstream_response_timeout",
            Blame::Upstream,
            false,
            message,
        );
        e.grpc = Some(4);
        e
    }

    /// A circuit-breaker limit of the destination was reached (503 `UO`).
    pub fn overflow(message: impl Into<String>) -> ProxyError {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UO",
            "upstream_reset_before_response_started{overflow}",
            Blame::Waypoint,
            false,
            message,
        )
    }

    /// The upstream connection was reset or closed before the response headers (503 `UC`);
    /// safe to retry only if the request body can be sent again, which the caller knows.
    pub fn upstream_reset(message: impl Into<String>) -> ProxyError {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UC",
            "upstream_reset_before_response_started{connection_termination}",
            Blame::Upstream,
            true,
            message,
        )
    }

    /// An injected abort (flag `FI`): `status`, or HTTP 200 with `grpc` as `grpc-status`.
    pub fn fault_abort(status: StatusCode, grpc: Option<u32>) -> ProxyError {
        let mut e = Self::new(
            if grpc.is_some() {
                StatusCode::OK
            } else {
                status
            },
            "FI",
            "fault_filter_abort",
            Blame::Waypoint,
            false,
            "fault injected",
        );
        e.grpc = grpc;
        e
    }

    /// The `grpc-status` a gRPC client gets for this error: the explicit one, else Envoy's
    /// mapping of HTTP statuses to gRPC codes (`httpToGrpcStatus`).
    pub fn grpc_status(&self) -> u32 {
        self.grpc.unwrap_or(match self.status.as_u16() {
            400 => 13,
            401 => 16,
            403 => 7,
            404 => 12,
            429 | 502 | 503 | 504 => 14,
            _ => 2,
        })
    }

    /// No route rule matched the request (404 `NR`).
    pub fn no_route(message: impl Into<String>) -> ProxyError {
        Self::new(
            StatusCode::NOT_FOUND,
            "NR",
            "route_not_found",
            Blame::Waypoint,
            false,
            message,
        )
    }

    /// The chosen destination host is unknown, or has no such port (503 `NC`).
    pub fn no_cluster(message: impl Into<String>) -> ProxyError {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "NC",
            "cluster_not_found",
            Blame::Waypoint,
            false,
            message,
        )
    }

    /// The destination has no endpoint to send to, or names an unknown subset (503 `UH`).
    pub fn no_healthy_upstream(message: impl Into<String>) -> ProxyError {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UH",
            "no_healthy_upstream",
            Blame::Waypoint,
            false,
            message,
        )
    }

    /// Connecting to the upstream failed (503 `UF`); safe to retry, nothing was sent.
    pub fn upstream_connect_failure(message: impl Into<String>) -> ProxyError {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UF",
            "upstream_reset_before_response_started{connection_failure}",
            Blame::Upstream,
            true,
            message,
        )
    }

    /// An L7 AuthorizationPolicy denied the request (403, Envoy logs no flag for it).
    pub fn rbac_denied(message: impl Into<String>) -> ProxyError {
        Self::new(
            StatusCode::FORBIDDEN,
            "-",
            "rbac_access_denied",
            Blame::Downstream,
            false,
            message,
        )
    }

    /// A request's JWT does not verify (401, Envoy logs no flag for it).
    pub fn jwt_verification_failed(message: impl Into<String>) -> ProxyError {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "-",
            "jwt_authn_access_denied{Jwt_verification_fails}",
            Blame::Downstream,
            false,
            message,
        )
    }

    /// The request cannot be forwarded as it is (400, Envoy's `DPE`), e.g. an authority that is
    /// no valid URI authority.
    pub fn bad_request(message: impl Into<String>) -> ProxyError {
        Self::new(
            StatusCode::BAD_REQUEST,
            "DPE",
            "downstream_protocol_error",
            Blame::Downstream,
            false,
            message,
        )
    }

    /// The waypoint cannot carry out what the configuration asks (500, no flag), e.g. a
    /// rewrite that makes an invalid path.
    pub fn internal(details: &'static str, message: impl Into<String>) -> ProxyError {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "-",
            details,
            Blame::Waypoint,
            false,
            message,
        )
    }

    /// The status and body text answered downstream, as Envoy answers them.
    pub fn response_parts(&self) -> (StatusCode, &'static str) {
        let body = match self.flag {
            "UH" => NO_HEALTHY_UPSTREAM,
            "UF" => UPSTREAM_CONNECT_FAILURE,
            "UT" => UPSTREAM_REQUEST_TIMEOUT,
            "UO" => UPSTREAM_OVERFLOW,
            "UC" => UPSTREAM_CONNECTION_TERMINATION,
            "FI" => FAULT_FILTER_ABORT,
            _ if self.details == "rbac_access_denied" => RBAC_DENIED,
            _ if self.status == StatusCode::UNAUTHORIZED => JWT_VERIFICATION_FAILS,
            _ => "",
        };
        (self.status, body)
    }
}

/// The response flags of a request: its failure's flag (`-` for none), with `DI` when a delay
/// was injected and `URX` when retries ran out or the budget refused one, in Envoy's order.
pub fn flags(base: &'static str, delayed: bool, exhausted: bool) -> &'static str {
    macro_rules! combos {
        ($($f:literal),*) => {
            match (base, delayed, exhausted) {
                (_, false, false) => base,
                ("-", true, false) => "DI",
                ("-", false, true) => "URX",
                ("-", true, true) => "DI,URX",
                ("FI", true, _) => "DI,FI",
                $(
                    ($f, true, false) => concat!($f, ",DI"),
                    ($f, false, true) => concat!($f, ",URX"),
                    ($f, true, true) => concat!($f, ",DI,URX"),
                )*
                _ => base,
            }
        };
    }
    combos!("UH", "UT", "UF", "UC", "UO", "NR", "NC")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_flags_and_bodies_are_envoys() {
        // (case, error, status, flag, body, blame, retryable)
        #[rustfmt::skip]
        let cases = [
            ("no route", ProxyError::no_route("x"), 404, "NR", "", Blame::Waypoint, false),
            ("unknown host", ProxyError::no_cluster("x"), 503, "NC", "", Blame::Waypoint, false),
            ("no endpoint", ProxyError::no_healthy_upstream("x"), 503, "UH", NO_HEALTHY_UPSTREAM, Blame::Waypoint, false),
            ("connect failure", ProxyError::upstream_connect_failure("x"), 503, "UF", UPSTREAM_CONNECT_FAILURE, Blame::Upstream, true),
            ("authz deny", ProxyError::rbac_denied("x"), 403, "-", "RBAC: access denied", Blame::Downstream, false),
            ("bad JWT", ProxyError::jwt_verification_failed("x"), 401, "-", "Jwt verification fails", Blame::Downstream, false),
            ("timeout", ProxyError::timeout("x"), 504, "UT", UPSTREAM_REQUEST_TIMEOUT, Blame::Upstream, false),
            ("overflow", ProxyError::overflow("x"), 503, "UO", UPSTREAM_OVERFLOW, Blame::Waypoint, false),
            ("reset", ProxyError::upstream_reset("x"), 503, "UC", UPSTREAM_CONNECTION_TERMINATION, Blame::Upstream, true),
            ("abort", ProxyError::fault_abort(StatusCode::IM_A_TEAPOT, None), 418, "FI", FAULT_FILTER_ABORT, Blame::Waypoint, false),
            ("grpc abort", ProxyError::fault_abort(StatusCode::OK, Some(14)), 200, "FI", FAULT_FILTER_ABORT, Blame::Waypoint, false),
        ];
        for (case, err, status, flag, body, blame, retryable) in cases {
            assert_eq!(
                err.response_parts(),
                (StatusCode::from_u16(status).expect("test value"), body),
                "{case}"
            );
            assert_eq!(err.flag, flag, "{case}");
            assert_eq!(err.blame, blame, "{case}");
            assert_eq!(err.retryable, retryable, "{case}");
        }
    }

    #[test]
    fn grpc_statuses() {
        #[rustfmt::skip]
        let cases = [
            (ProxyError::timeout("x"), 4),
            (ProxyError::overflow("x"), 14),
            (ProxyError::no_route("x"), 12),
            (ProxyError::rbac_denied("x"), 7),
            (ProxyError::fault_abort(StatusCode::OK, Some(8)), 8),
            (ProxyError::internal("x", "y"), 2),
        ];
        for (err, want) in cases {
            assert_eq!(err.grpc_status(), want, "{err}");
        }
    }

    /// Response flags combined as Envoy lists them.
    #[test]
    fn flags_combine() {
        #[rustfmt::skip]
        let cases = [
            ("-", false, false, "-"),
            ("-", true, false, "DI"),
            ("-", false, true, "URX"),
            ("UF", false, true, "UF,URX"),
            ("UT", true, true, "UT,DI,URX"),
            ("FI", true, false, "DI,FI"),
            ("UO", false, false, "UO"),
        ];
        for (base, delayed, exhausted, want) in cases {
            assert_eq!(
                flags(base, delayed, exhausted),
                want,
                "{base} {delayed} {exhausted}"
            );
        }
    }

    #[test]
    fn display_names_the_flag_and_the_message() {
        let err = ProxyError::no_cluster("route apps/r: host nope.apps.svc.cluster.local");
        assert_eq!(
            err.to_string(),
            "503 Service Unavailable NC cluster_not_found: route apps/r: host nope.apps.svc.cluster.local"
        );
    }
}
