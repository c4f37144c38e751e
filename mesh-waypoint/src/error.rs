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
        }
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
            _ if self.details == "rbac_access_denied" => RBAC_DENIED,
            _ if self.status == StatusCode::UNAUTHORIZED => JWT_VERIFICATION_FAILS,
            _ => "",
        };
        (self.status, body)
    }
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
    fn display_names_the_flag_and_the_message() {
        let err = ProxyError::no_cluster("route apps/r: host nope.apps.svc.cluster.local");
        assert_eq!(
            err.to_string(),
            "503 Service Unavailable NC cluster_not_found: route apps/r: host nope.apps.svc.cluster.local"
        );
    }
}
