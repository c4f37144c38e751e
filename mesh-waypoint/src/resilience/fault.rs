//! Fault injection of one rule (VirtualService `fault`), decided before the request is routed
//! upstream: a fixed delay for a share of requests (flag `DI`, the request then proceeds), and
//! an abort with an HTTP status or a gRPC status (HTTP 200, trailers-only `grpc-status`) for a
//! share (flag `FI`, body `fault filter abort`). Shares are percentages with fractions (0.1).

use std::time::Duration;

use mesh_common::model::Fault;

/// Body Envoy answers an injected abort with.
pub const FAULT_ABORT: &str = "fault filter abort";

/// What to do to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Injection {
    /// Delay before proceeding.
    pub delay: Option<Duration>,
    /// Abort instead of forwarding.
    pub abort: Option<Abort>,
}

/// An injected answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    /// This HTTP status.
    Http(u16),
    /// HTTP 200 with this `grpc-status`.
    Grpc(u32),
}

/// Whether a request falls in `percentage` (0 to 100, fractions allowed), given a uniform
/// random number in `[0, 1)`.
pub fn hit(percentage: f64, uniform: f64) -> bool {
    uniform * 100.0 < percentage
}

/// The code of a gRPC status name (`UNAVAILABLE`, ...), or a number given as text.
pub fn grpc_code(name: &str) -> Option<u32> {
    const CODES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    CODES
        .iter()
        .position(|c| c.eq_ignore_ascii_case(name))
        .map(|i| i as u32)
        .or_else(|| name.parse().ok().filter(|c| *c <= 16))
}

/// What `fault` does to one request; `uniform` gives independent numbers in `[0, 1)` (one for
/// the delay, one for the abort, as Envoy draws them).
pub fn decide(fault: &Fault, uniform: &mut dyn FnMut() -> f64) -> Injection {
    let delay = fault
        .delay
        .as_ref()
        .filter(|d| hit(d.percentage, uniform()))
        .map(|d| Duration::from_millis(d.fixed_delay_ms));
    let abort = fault
        .abort
        .as_ref()
        .filter(|a| hit(a.percentage, uniform()))
        .and_then(|a| match &a.grpc_status {
            Some(name) => grpc_code(name).map(Abort::Grpc),
            None => (200..600)
                .contains(&a.http_status)
                .then_some(Abort::Http(a.http_status)),
        });
    Injection { delay, abort }
}

#[cfg(test)]
mod tests {
    use mesh_common::model::{FaultAbort, FaultDelay};

    use super::*;

    #[test]
    fn shares() {
        #[rustfmt::skip]
        let cases = [
            (0.0, 0.0, false),
            (100.0, 0.999_999, true),
            (30.0, 0.299, true),
            (30.0, 0.3, false),
            (0.1, 0.000_9, true),
            (0.1, 0.001_1, false),
        ];
        for (pct, u, want) in cases {
            assert_eq!(hit(pct, u), want, "{pct} {u}");
        }
    }

    #[test]
    fn grpc_names() {
        #[rustfmt::skip]
        let cases = [("UNAVAILABLE", Some(14)), ("unavailable", Some(14)), ("OK", Some(0)),
            ("DEADLINE_EXCEEDED", Some(4)), ("UNAUTHENTICATED", Some(16)), ("13", Some(13)),
            ("17", None), ("NOPE", None)];
        for (name, want) in cases {
            assert_eq!(grpc_code(name), want, "{name}");
        }
    }

    #[test]
    fn decisions() {
        let delay = Some(FaultDelay {
            fixed_delay_ms: 2000,
            percentage: 50.0,
        });
        let abort = |http_status, grpc: Option<&str>| {
            Some(FaultAbort {
                http_status,
                grpc_status: grpc.map(str::to_owned),
                percentage: 50.0,
            })
        };
        let two_s = Some(Duration::from_secs(2));
        #[rustfmt::skip]
        let cases = [
            // (fault, random draws, want)
            (Fault { delay: delay.clone(), abort: None }, [0.1, 0.9], Injection { delay: two_s, abort: None }),
            (Fault { delay: delay.clone(), abort: None }, [0.6, 0.1], Injection { delay: None, abort: None }),
            (Fault { delay: None, abort: abort(503, None) }, [0.1, 0.9], Injection { delay: None, abort: Some(Abort::Http(503)) }),
            (Fault { delay: None, abort: abort(503, None) }, [0.7, 0.1], Injection::default()),
            (Fault { delay: None, abort: abort(0, Some("UNAVAILABLE")) }, [0.1, 0.1], Injection { delay: None, abort: Some(Abort::Grpc(14)) }),
            (Fault { delay: delay.clone(), abort: abort(400, None) }, [0.1, 0.1], Injection { delay: two_s, abort: Some(Abort::Http(400)) }),
            (Fault { delay: delay.clone(), abort: abort(400, None) }, [0.9, 0.1], Injection { delay: None, abort: Some(Abort::Http(400)) }),
        ];
        for (i, (fault, draws, want)) in cases.into_iter().enumerate() {
            let mut it = draws.into_iter();
            let mut uniform = || it.next().unwrap_or(0.99);
            assert_eq!(decide(&fault, &mut uniform), want, "case {i}");
        }
    }
}
