//! The access-log entry of one request through the waypoint: the request as it arrived (its
//! headers, which Istio's formats and `%REQ(...)%` read, taken only where a Telemetry turns
//! logging on somewhere), and its outcome (status, flags, route, endpoint, attempts, identities,
//! sizes and duration).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use http::{Request, Version};
use mesh_common::access_log::Entry;
use mesh_common::istio_metrics::IstioLabels;
use mesh_common::scope_telemetry::fill_identities;

use crate::istio_request::Finished;

/// What the log needs of a request when it arrives.
#[derive(Debug, Clone)]
pub struct Arrival {
    start: SystemTime,
    protocol: &'static str,
    headers: BTreeMap<String, String>,
    head_bytes: u64,
}

/// Envoy's `%PROTOCOL%` for an HTTP version.
fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

impl Arrival {
    /// Takes what the log reads of `request` (whose head was `head_bytes` long).
    pub fn capture<B>(request: &Request<B>, head_bytes: u64) -> Arrival {
        let mut headers = BTreeMap::new();
        for (name, value) in request.headers() {
            if let Ok(value) = value.to_str() {
                headers
                    .entry(name.as_str().to_owned())
                    .and_modify(|v: &mut String| {
                        v.push(',');
                        v.push_str(value);
                    })
                    .or_insert_with(|| value.to_owned());
            }
        }
        headers.insert(":method".to_owned(), request.method().as_str().to_owned());
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        headers.insert(":path".to_owned(), path);
        let authority = request
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| headers.get("host").cloned());
        if let Some(authority) = authority {
            headers.insert(":authority".to_owned(), authority);
        }
        Arrival {
            start: SystemTime::now(),
            protocol: protocol(request.version()),
            headers,
            head_bytes,
        }
    }
}

/// How a request ended, besides its sizes and duration.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Status sent downstream.
    pub status: u16,
    /// Envoy's response flags.
    pub flags: &'static str,
    /// The route rule used.
    pub route: Option<Arc<str>>,
    /// The endpoint used last.
    pub upstream: Option<SocketAddr>,
    /// Upstream attempts.
    pub attempts: u32,
    /// The source pod's address.
    pub downstream_remote: SocketAddr,
    /// The destination it dialed (the CONNECT authority).
    pub downstream_local: SocketAddr,
    /// The response head's size.
    pub response_head_bytes: u64,
}

/// The log entry of a finished request.
pub fn entry(
    arrival: Arrival,
    outcome: &Outcome,
    labels: &IstioLabels,
    finished: &Finished,
) -> Entry {
    let trace_id = arrival
        .headers
        .get("traceparent")
        .and_then(|t| t.split('-').nth(1).map(str::to_owned))
        .or_else(|| arrival.headers.get("x-b3-traceid").cloned());
    let mut entry = Entry {
        start_time: Some(arrival.start),
        protocol: Some(arrival.protocol.to_owned()),
        response_code: Some(outcome.status),
        response_flags: outcome.flags.to_owned(),
        response_code_details: Some(
            if outcome.flags == "-" {
                "via_upstream"
            } else {
                "local_reply"
            }
            .to_owned(),
        ),
        bytes_received: finished
            .done
            .request_bytes
            .saturating_sub(arrival.head_bytes),
        bytes_sent: finished
            .done
            .response_bytes
            .saturating_sub(outcome.response_head_bytes),
        duration_ms: finished.done.duration_ms as u64,
        upstream_host: outcome.upstream,
        downstream_local_address: Some(outcome.downstream_local),
        downstream_remote_address: Some(outcome.downstream_remote),
        route_name: outcome.route.as_deref().map(str::to_owned),
        attempts: outcome.attempts,
        trace_id,
        request_headers: arrival.headers,
        ..Entry::default()
    };
    fill_identities(&mut entry, labels, Some(outcome.downstream_local.port()));
    entry
}
