//! Zipkin's own format for the `zipkin` provider: spans as the JSON v2 array
//! (`POST /api/v2/spans`), and the one-shot HTTP/1.1 POST that sends a batch, bounded by a
//! timeout (connect included).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Serialize;

use super::span::{Node, SpanRecord};

/// Zipkin's default path.
pub const DEFAULT_PATH: &str = "/api/v2/spans";

/// A host in Zipkin's model.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Service name (local endpoint only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// IPv4 address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<String>,
    /// IPv6 address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
}

impl Endpoint {
    fn at(service_name: Option<String>, ip: Option<IpAddr>) -> Endpoint {
        let ip = ip.map(|ip| ip.to_canonical());
        Endpoint {
            service_name,
            ipv4: ip.filter(IpAddr::is_ipv4).map(|ip| ip.to_string()),
            ipv6: ip.filter(IpAddr::is_ipv6).map(|ip| ip.to_string()),
        }
    }
}

/// One span of the v2 JSON format.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ZipkinSpan {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub id: String,
    /// The parent's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// Operation name.
    pub name: String,
    /// `SERVER`: the waypoint receives the request.
    pub kind: &'static str,
    /// Start, microseconds since the epoch.
    pub timestamp: u64,
    /// Microseconds (at least 1).
    pub duration: u64,
    /// The waypoint.
    pub local_endpoint: Endpoint,
    /// The source pod.
    pub remote_endpoint: Endpoint,
    /// Attributes.
    pub tags: BTreeMap<String, String>,
}

fn micros(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A span in Zipkin's model.
pub fn zipkin_span(record: &SpanRecord, node: &Node) -> ZipkinSpan {
    let timestamp = micros(record.start);
    ZipkinSpan {
        trace_id: format!("{:032x}", record.trace_id),
        id: format!("{:016x}", record.span_id),
        parent_id: record.parent_span_id.map(|p| format!("{p:016x}")),
        name: record.name.clone(),
        kind: "SERVER",
        timestamp,
        duration: micros(record.end).saturating_sub(timestamp).max(1),
        local_endpoint: Endpoint::at(Some(node.service_name.clone()), node.ip),
        remote_endpoint: Endpoint::at(None, Some(record.peer)),
        tags: record
            .attributes
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    }
}

/// The JSON body of a batch.
pub fn body(records: &[SpanRecord], node: &Node) -> Result<Vec<u8>, serde_json::Error> {
    let spans: Vec<ZipkinSpan> = records.iter().map(|r| zipkin_span(r, node)).collect();
    serde_json::to_vec(&spans)
}

/// Why a batch was not taken.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connect or HTTP failure.
    #[error("{0}")]
    Transport(String),
    /// The collector answered with an error.
    #[error("the collector answered {0}")]
    Status(StatusCode),
}

/// POSTs `body` to `http://<addr><path>` (`Host: <host>:<port>`), on a connection of its own;
/// everything within `timeout`.
pub async fn post(
    addr: SocketAddr,
    host: &str,
    path: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<(), PostError> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| PostError::Transport(format!("connecting to {addr}: {e}")))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| PostError::Transport(e.to_string()))?;
        let request = Request::post(path)
            .header(http::header::HOST, format!("{host}:{}", addr.port()))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| PostError::Transport(e.to_string()))?;
        let send = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| PostError::Transport(e.to_string()))?;
            let status = response.status();
            // Read the (small) answer so the exchange ends cleanly; its content is not used.
            let _ = response.into_body().collect().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(PostError::Status(status))
            }
        };
        // The connection is driven here, beside the exchange, so both end together.
        tokio::pin!(send);
        tokio::pin!(connection);
        let mut connection_done = false;
        loop {
            tokio::select! {
                result = &mut send => return result,
                _ = &mut connection, if !connection_done => connection_done = true,
            }
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| PostError::Timeout(timeout))?
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use mesh_common::model::{TraceProtocol, TraceProvider};
    use serde_json::json;

    use super::*;

    #[test]
    fn spans_in_zipkins_v2_json() {
        let node = Node::waypoint(
            "apps",
            "waypoint",
            "cluster.local",
            None,
            Some("198.18.1.3".parse().expect("ip")),
        );
        let start = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_123);
        let record = SpanRecord {
            trace_id: 0xabc,
            span_id: 0x12,
            parent_span_id: Some(0x34),
            name: "reviews.apps.svc.cluster.local:9080/*".into(),
            start,
            end: start + Duration::from_micros(1500),
            attributes: vec![("http.status_code".into(), "200".into())],
            error: false,
            peer: "fd18:1::2".parse().expect("ip"),
            provider: Arc::new(TraceProvider {
                name: "zipkin".into(),
                protocol: TraceProtocol::Zipkin,
                host: "zipkin".into(),
                port: 9411,
                path: String::new(),
                max_tag_length: 0,
            }),
        };
        let root = SpanRecord {
            parent_span_id: None,
            end: start,
            ..record.clone()
        };
        let got: serde_json::Value =
            serde_json::from_slice(&body(&[record, root], &node).expect("json")).expect("parse");
        assert_eq!(
            got,
            json!([
                {
                    "traceId": "00000000000000000000000000000abc",
                    "id": "0000000000000012",
                    "parentId": "0000000000000034",
                    "name": "reviews.apps.svc.cluster.local:9080/*",
                    "kind": "SERVER",
                    "timestamp": 1_700_000_000_000_123u64,
                    "duration": 1500,
                    "localEndpoint": {"serviceName": "waypoint.apps", "ipv4": "198.18.1.3"},
                    "remoteEndpoint": {"ipv6": "fd18:1::2"},
                    "tags": {"http.status_code": "200"}
                },
                {
                    "traceId": "00000000000000000000000000000abc",
                    "id": "0000000000000012",
                    "name": "reviews.apps.svc.cluster.local:9080/*",
                    "kind": "SERVER",
                    "timestamp": 1_700_000_000_000_123u64,
                    "duration": 1,
                    "localEndpoint": {"serviceName": "waypoint.apps", "ipv4": "198.18.1.3"},
                    "remoteEndpoint": {"ipv6": "fd18:1::2"},
                    "tags": {"http.status_code": "200"}
                }
            ])
        );
    }
}
