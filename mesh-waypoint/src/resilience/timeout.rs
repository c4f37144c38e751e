//! Deadlines of one request: the route's timeout (VirtualService `timeout`, HTTPRoute
//! `timeouts.request`) over the whole request including retries and backoff, a gRPC client's
//! `grpc-timeout` (the smaller wins), and the per-try timeout of the retry policy. As Envoy's
//! route timeout, a deadline covers the wait for the response *headers*: a response that has
//! started streaming is not cut.

use std::time::Duration;

use http::HeaderMap;

/// Parses a `grpc-timeout` header value: up to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`,
/// `n`). `None` for anything else (the header is then ignored, as gRPC servers do).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Whether a request is gRPC (its content type is `application/grpc` or `application/grpc+…`).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct == "application/grpc"
                || ct.starts_with("application/grpc+")
                || ct.starts_with("application/grpc;")
        })
}

/// The whole request's budget: the route's timeout and the client's `grpc-timeout`, the
/// smaller of the two; `None` when neither is set.
pub fn request_timeout(route_ms: Option<u64>, headers: &HeaderMap) -> Option<Duration> {
    let route = route_ms.filter(|ms| *ms > 0).map(Duration::from_millis);
    let grpc = headers
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout);
    match (route, grpc) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// How long one try may wait for its response headers: the per-try timeout, never past what is
/// left of the request's.
pub fn try_timeout(per_try: Option<Duration>, left: Option<Duration>) -> Option<Duration> {
    match (per_try, left) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        #[rustfmt::skip]
        let cases = [
            ("1S", Some(Duration::from_secs(1))),
            ("250m", Some(Duration::from_millis(250))),
            ("2H", Some(Duration::from_secs(7200))),
            ("3M", Some(Duration::from_secs(180))),
            ("10u", Some(Duration::from_micros(10))),
            ("99999999n", Some(Duration::from_nanos(99_999_999))),
            ("123456789S", None),
            ("S", None),
            ("", None),
            ("10s", None),
            ("-1S", None),
            ("1.5S", None),
        ];
        for (value, want) in cases {
            assert_eq!(parse_grpc_timeout(value), want, "{value:?}");
        }
    }

    #[test]
    fn the_smaller_deadline_wins() {
        let ms = Duration::from_millis;
        #[rustfmt::skip]
        let cases: [(Option<u64>, Option<&str>, Option<Duration>); 6] = [
            (None, None, None),
            (Some(200), None, Some(ms(200))),
            (None, Some("100m"), Some(ms(100))),
            (Some(200), Some("100m"), Some(ms(100))),
            (Some(200), Some("1S"), Some(ms(200))),
            (Some(0), Some("bad"), None),
        ];
        for (route, grpc, want) in cases {
            let mut headers = HeaderMap::new();
            if let Some(g) = grpc {
                headers.insert("grpc-timeout", g.parse().expect("test value"));
            }
            assert_eq!(request_timeout(route, &headers), want, "{route:?} {grpc:?}");
        }
    }

    #[test]
    fn a_try_never_outlives_the_request() {
        let ms = Duration::from_millis;
        #[rustfmt::skip]
        let cases = [
            (None, None, None),
            (Some(ms(50)), None, Some(ms(50))),
            (None, Some(ms(80)), Some(ms(80))),
            (Some(ms(50)), Some(ms(30)), Some(ms(30))),
            (Some(ms(50)), Some(ms(300)), Some(ms(50))),
        ];
        for (per_try, left, want) in cases {
            assert_eq!(try_timeout(per_try, left), want, "{per_try:?} {left:?}");
        }
    }

    #[test]
    fn grpc_content_types() {
        #[rustfmt::skip]
        let cases = [
            (Some("application/grpc"), true),
            (Some("application/grpc+proto"), true),
            (Some("application/grpc-web"), false),
            (Some("application/json"), false),
            (None, false),
        ];
        for (ct, want) in cases {
            let mut headers = HeaderMap::new();
            if let Some(ct) = ct {
                headers.insert(http::header::CONTENT_TYPE, ct.parse().expect("test value"));
            }
            assert_eq!(is_grpc(&headers), want, "{ct:?}");
        }
    }
}
