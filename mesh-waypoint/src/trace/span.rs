//! The waypoint's span of one request: a child of the caller's context (or the root of a new
//! trace), its id sent upstream, and on the response's end a record with the attributes
//! Istio's Envoy sets (`http.*`, `upstream_cluster`, `response_flags`, sizes, `guid:x-request-id`,
//! `peer.address`, the proxy's `istio.*` and `node_id`, `component: proxy`) plus the custom
//! tags, every value cut at the longest tag length. Pure: ids and draws come from the caller.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, Method, Version};
use mesh_common::model::TraceProvider;

use super::context::{self, Extracted, Outgoing, Source};
use super::sampling;
use super::settings::{TagValue, TraceSettings};
use crate::route::Backend;
use crate::table::Target;

/// One span attribute.
pub type Attribute = (Cow<'static, str>, String);

/// What the proxy is, for every span's `istio.*` and `node_id` tags and the collector's
/// service name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The resource's `service.name`: `<waypoint>.<namespace>`, as Istio names a proxy.
    pub service_name: String,
    /// `istio.canonical_service`: the waypoint's name.
    pub canonical_service: String,
    /// `istio.namespace`.
    pub namespace: String,
    /// `istio.mesh_id` (the trust domain unless configured).
    pub mesh_id: String,
    /// `node_id`: Envoy's `waypoint~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local`.
    pub node_id: String,
    /// The pod's address (Zipkin's local endpoint), when known.
    pub ip: Option<IpAddr>,
}

impl Node {
    /// The node of waypoint `namespace/name`, instance `pod` at `ip`.
    pub fn waypoint(
        namespace: &str,
        name: &str,
        mesh_id: &str,
        pod: Option<&str>,
        ip: Option<IpAddr>,
    ) -> Node {
        let address = ip.map(|ip| ip.to_string()).unwrap_or_default();
        Node {
            service_name: format!("{name}.{namespace}"),
            canonical_service: name.to_owned(),
            namespace: namespace.to_owned(),
            mesh_id: mesh_id.to_owned(),
            node_id: format!(
                "waypoint~{address}~{}.{namespace}~{namespace}.svc.cluster.local",
                pod.unwrap_or(name)
            ),
            ip,
        }
    }
}

/// What the span needs of the request as it arrived.
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts<'a> {
    /// Method.
    pub method: &'a Method,
    /// The authority the client asked for.
    pub authority: &'a str,
    /// Path and query.
    pub path: &'a str,
    /// HTTP version.
    pub version: Version,
    /// Headers (`x-request-id` already set).
    pub headers: &'a HeaderMap,
    /// The source pod's address.
    pub peer: IpAddr,
}

/// What the span needs of the response at its end.
#[derive(Clone, Copy, Debug)]
pub struct ResponseFacts<'a> {
    /// Status sent downstream.
    pub status: u16,
    /// Envoy's response flags (`-` for none).
    pub flags: &'a str,
    /// `grpc-status`, for gRPC.
    pub grpc_status: Option<u32>,
    /// Request body bytes.
    pub request_size: u64,
    /// Response body bytes.
    pub response_size: u64,
}

/// A request's span, from its start to the response's end.
#[derive(Debug)]
pub struct ActiveSpan {
    trace_id: u128,
    span_id: u64,
    incoming: Extracted,
    sampled: bool,
    settings: Arc<TraceSettings>,
    start: SystemTime,
    name: String,
    peer: IpAddr,
    /// Request attributes, gathered only when sampled.
    request: Vec<Attribute>,
    cluster: Option<String>,
}

/// A finished, sampled span, ready to export.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanRecord {
    /// Trace id.
    pub trace_id: u128,
    /// Span id.
    pub span_id: u64,
    /// The caller's span id (`None`: a root span).
    pub parent_span_id: Option<u64>,
    /// Operation name: `<host>:<port>/*`, as Envoy names a waypoint's spans.
    pub name: String,
    /// Start.
    pub start: SystemTime,
    /// End.
    pub end: SystemTime,
    /// Attributes, values cut at the longest tag length.
    pub attributes: Vec<Attribute>,
    /// Error status (a 5xx).
    pub error: bool,
    /// The source pod's address (Zipkin's remote endpoint).
    pub peer: IpAddr,
    /// Where it goes.
    pub provider: Arc<TraceProvider>,
}

/// Cuts `value` to at most `max` bytes, at a character boundary.
pub fn cut(value: &str, max: usize) -> String {
    if value.len() <= max {
        return value.to_owned();
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_owned()
}

/// The span name of a request to `target`.
pub fn span_name(target: &Target) -> String {
    match target {
        Target::Service { hostname, port, .. } => format!("{hostname}:{port}/*"),
        Target::Workload { address, port, .. } => {
            format!("{}/*", std::net::SocketAddr::new(*address, *port))
        }
    }
}

/// The Istio cluster name of a backend (`outbound|<port>|<subset>|<host>`).
pub fn cluster_name(backend: &Backend) -> String {
    format!(
        "outbound|{}|{}|{}",
        backend.port,
        backend.subset.as_deref().unwrap_or(""),
        backend.host
    )
}

fn protocol_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The attributes known when the request arrives: the proxy's, the request's, custom tags.
pub fn request_attributes(
    node: &Node,
    settings: &TraceSettings,
    request: &RequestFacts<'_>,
) -> Vec<Attribute> {
    let max = settings.max_tag_length;
    let mut out: Vec<Attribute> = vec![
        ("component".into(), "proxy".into()),
        ("node_id".into(), cut(&node.node_id, max)),
        (
            "istio.canonical_service".into(),
            cut(&node.canonical_service, max),
        ),
        ("istio.namespace".into(), cut(&node.namespace, max)),
        ("istio.mesh_id".into(), cut(&node.mesh_id, max)),
        ("http.method".into(), cut(request.method.as_str(), max)),
        (
            "http.url".into(),
            cut(
                &format!("http://{}{}", request.authority, request.path),
                max,
            ),
        ),
        (
            "http.protocol".into(),
            protocol_name(request.version).into(),
        ),
        (
            "user_agent".into(),
            cut(
                header_str(request.headers, "user-agent").unwrap_or("-"),
                max,
            ),
        ),
        (
            "guid:x-request-id".into(),
            cut(
                header_str(request.headers, "x-request-id").unwrap_or(""),
                max,
            ),
        ),
        (
            "peer.address".into(),
            request.peer.to_canonical().to_string(),
        ),
        ("downstream_cluster".into(), "-".into()),
    ];
    for (name, value) in &settings.custom_tags {
        let value = match value {
            TagValue::Fixed(v) => Some(v.as_str()),
            TagValue::Header(header, default) => request
                .headers
                .get(header)
                .and_then(|v| v.to_str().ok())
                .or(default.as_deref()),
        };
        if let Some(value) = value {
            out.push((Cow::Owned(name.clone()), cut(value, max)));
        }
    }
    out
}

/// The attributes known at the response's end; whether the span is an error.
pub fn response_attributes(
    response: &ResponseFacts<'_>,
    cluster: Option<&str>,
    max: usize,
) -> (Vec<Attribute>, bool) {
    let error = response.status >= 500;
    let mut out: Vec<Attribute> = vec![
        ("http.status_code".into(), response.status.to_string()),
        ("response_flags".into(), cut(response.flags, max)),
        ("request_size".into(), response.request_size.to_string()),
        ("response_size".into(), response.response_size.to_string()),
        ("upstream_cluster".into(), cut(cluster.unwrap_or("-"), max)),
        (
            "upstream_cluster.name".into(),
            cut(cluster.unwrap_or("-"), max),
        ),
    ];
    if let Some(code) = response.grpc_status {
        out.push(("grpc.status_code".into(), code.to_string()));
    }
    if error {
        out.push(("error".into(), "true".into()));
    }
    (out, error)
}

impl ActiveSpan {
    /// The trace id, as W3C writes it (32 lowercase hex digits).
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// Starts the span of a request to `target`, unless `settings` has no collector. `ids`
    /// gives non-zero random ids, `draw` a uniform number in `[0, 1)`.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        settings: &Arc<TraceSettings>,
        node: &Node,
        target: &Target,
        request: &RequestFacts<'_>,
        now: SystemTime,
        ids: &mut dyn FnMut() -> u64,
        draw: f64,
    ) -> Option<ActiveSpan> {
        settings.provider.as_ref()?;
        let incoming = context::extract(request.headers);
        let sampled = sampling::sampled(&incoming, settings.percentage, draw);
        let trace_id = match incoming.parent {
            Some(p) => p.trace_id,
            None => (u128::from(ids()) << 64) | u128::from(ids()),
        };
        let span_id = ids();
        Some(ActiveSpan {
            trace_id: if trace_id == 0 { 1 } else { trace_id },
            span_id: if span_id == 0 { 1 } else { span_id },
            incoming,
            sampled,
            settings: settings.clone(),
            start: now,
            name: span_name(target),
            peer: request.peer,
            request: if sampled {
                request_attributes(node, settings, request)
            } else {
                Vec::new()
            },
            cluster: None,
        })
    }

    /// Whether the span is sampled (exported).
    pub fn sampled(&self) -> bool {
        self.sampled
    }

    /// Trace id.
    pub fn trace_id(&self) -> u128 {
        self.trace_id
    }

    /// The context to send upstream.
    pub fn outgoing(&self) -> Outgoing {
        let parent = self.incoming.parent;
        Outgoing {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent_span_id: parent.map(|p| p.span_id),
            sampled: self.sampled,
            debug: self.incoming.debug,
            short_trace_id: parent.is_some_and(|p| p.short_trace_id),
            keep_tracestate: parent.is_some_and(|p| p.source == Source::W3c),
        }
    }

    /// Writes the span's context into the upstream request's headers.
    pub fn inject(&self, headers: &mut HeaderMap) {
        context::inject(headers, &self.outgoing());
    }

    /// Records the backend the request was routed to.
    pub fn set_backend(&mut self, backend: &Backend) {
        if self.sampled {
            self.cluster = Some(cluster_name(backend));
        }
    }

    /// Ends the span; the record to export when sampled.
    pub fn finish(self, response: &ResponseFacts<'_>, now: SystemTime) -> Option<SpanRecord> {
        if !self.sampled {
            return None;
        }
        let provider = self.settings.provider.clone()?;
        let (tail, error) = response_attributes(
            response,
            self.cluster.as_deref(),
            self.settings.max_tag_length,
        );
        let mut attributes = self.request;
        attributes.extend(tail);
        Some(SpanRecord {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent_span_id: self.incoming.parent.map(|p| p.span_id),
            name: self.name,
            start: self.start,
            end: now.max(self.start),
            attributes,
            error,
            peer: self.peer,
            provider,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{HeaderName, HeaderValue};
    use mesh_common::model::TraceProtocol;

    use super::*;
    use crate::table::ServiceKey;

    fn settings(percentage: f64, max_tag_length: usize) -> Arc<TraceSettings> {
        Arc::new(TraceSettings {
            provider: Some(Arc::new(TraceProvider {
                name: "otel".into(),
                protocol: TraceProtocol::OtlpGrpc,
                host: "10.0.0.9".into(),
                port: 4317,
                path: String::new(),
                max_tag_length: 0,
            })),
            percentage,
            max_tag_length,
            custom_tags: vec![
                ("team".into(), TagValue::Fixed("books".into())),
                (
                    "user".into(),
                    TagValue::Header(HeaderName::from_static("end-user"), Some("anon".into())),
                ),
                (
                    "tenant".into(),
                    TagValue::Header(HeaderName::from_static("x-tenant"), None),
                ),
            ],
        })
    }

    fn target() -> Target {
        Target::Service {
            service: ServiceKey {
                namespace: "apps".into(),
                name: "reviews".into(),
            },
            hostname: "reviews.apps.svc.cluster.local".into(),
            vip: "198.19.0.20".parse().expect("ip"),
            port: 9080,
        }
    }

    fn node() -> Node {
        Node::waypoint(
            "apps",
            "waypoint",
            "cluster.local",
            Some("waypoint-0"),
            Some("198.18.1.3".parse().expect("ip")),
        )
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    fn counter() -> impl FnMut() -> u64 {
        let mut n = 0x100;
        move || {
            n += 1;
            n
        }
    }

    fn attr<'a>(record: &'a SpanRecord, name: &str) -> Option<&'a str> {
        record
            .attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn cut_keeps_whole_characters() {
        let cases = [
            ("abc", 5, "abc"),
            ("abcdef", 3, "abc"),
            ("ééé", 3, "é"),
            ("ééé", 4, "éé"),
            ("", 0, ""),
            ("x", 0, ""),
        ];
        for (value, max, want) in cases {
            assert_eq!(cut(value, max), want, "{value} {max}");
        }
    }

    #[test]
    fn a_child_of_the_callers_span_with_istios_attributes() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let h = headers(&[
            ("traceparent", parent),
            ("tracestate", "v=1"),
            ("x-request-id", "req-1"),
            ("user-agent", "curl/8"),
            ("end-user", "jason"),
        ]);
        let request = RequestFacts {
            method: &Method::GET,
            authority: "reviews:9080",
            path: "/reviews/1?x=y",
            version: Version::HTTP_11,
            headers: &h,
            peer: "198.18.1.2".parse().expect("ip"),
        };
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        // 0% sampling: the caller's sampled flag forces the span.
        let mut span = ActiveSpan::start(
            &settings(0.0, 256),
            &node(),
            &target(),
            &request,
            start,
            &mut counter(),
            0.5,
        )
        .expect("a span");
        assert!(span.sampled());
        let out = span.outgoing();
        assert_eq!(out.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(out.parent_span_id, Some(0x00f067aa0ba902b7));
        assert!(out.keep_tracestate);
        let mut upstream = h.clone();
        span.inject(&mut upstream);
        assert_eq!(
            upstream.get("traceparent").and_then(|v| v.to_str().ok()),
            Some(
                format!(
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-{:016x}-01",
                    out.span_id
                )
                .as_str()
            )
        );
        span.set_backend(&Backend {
            host: "reviews.apps.svc.cluster.local".into(),
            service: None,
            workload: None,
            subset: Some("v1".into()),
            port: 9080,
        });
        let record = span
            .finish(
                &ResponseFacts {
                    status: 503,
                    flags: "UF",
                    grpc_status: None,
                    request_size: 0,
                    response_size: 19,
                },
                start + Duration::from_millis(5),
            )
            .expect("sampled");
        assert_eq!(record.name, "reviews.apps.svc.cluster.local:9080/*");
        assert_eq!(record.parent_span_id, Some(0x00f067aa0ba902b7));
        assert_eq!(record.end, start + Duration::from_millis(5));
        assert!(record.error);
        #[rustfmt::skip]
        let want = [
            ("component", Some("proxy")),
            ("node_id", Some("waypoint~198.18.1.3~waypoint-0.apps~apps.svc.cluster.local")),
            ("istio.canonical_service", Some("waypoint")),
            ("istio.namespace", Some("apps")),
            ("istio.mesh_id", Some("cluster.local")),
            ("http.method", Some("GET")),
            ("http.url", Some("http://reviews:9080/reviews/1?x=y")),
            ("http.protocol", Some("HTTP/1.1")),
            ("user_agent", Some("curl/8")),
            ("guid:x-request-id", Some("req-1")),
            ("peer.address", Some("198.18.1.2")),
            ("http.status_code", Some("503")),
            ("response_flags", Some("UF")),
            ("request_size", Some("0")),
            ("response_size", Some("19")),
            ("upstream_cluster", Some("outbound|9080|v1|reviews.apps.svc.cluster.local")),
            ("error", Some("true")),
            ("team", Some("books")),
            ("user", Some("jason")),
            ("tenant", None),
        ];
        for (name, value) in want {
            assert_eq!(attr(&record, name), value, "{name}");
        }
    }

    #[test]
    fn sampling_and_new_traces() {
        let plain = headers(&[]);
        let unsampled = headers(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )]);
        let b3 = headers(&[
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-sampled", "1"),
            ("tracestate", "stale=1"),
        ]);
        // (headers, percentage, draw, sampled, parent)
        let cases = [
            (&plain, 10.0, 0.05, true, None),
            (&plain, 10.0, 0.5, false, None),
            (&unsampled, 100.0, 0.0, false, Some(0x00f067aa0ba902b7)),
            (&b3, 0.0, 0.9, true, Some(0x00f067aa0ba902b7)),
        ];
        for (h, percentage, draw, want, parent) in cases {
            let request = RequestFacts {
                method: &Method::POST,
                authority: "reviews",
                path: "/",
                version: Version::HTTP_2,
                headers: h,
                peer: "198.18.1.2".parse().expect("ip"),
            };
            let span = ActiveSpan::start(
                &settings(percentage, 256),
                &node(),
                &target(),
                &request,
                SystemTime::UNIX_EPOCH,
                &mut counter(),
                draw,
            )
            .expect("a span");
            assert_eq!(span.sampled(), want, "{h:?}");
            let out = span.outgoing();
            assert_eq!(out.parent_span_id, parent, "{h:?}");
            if parent.is_none() {
                assert_eq!(out.trace_id, (0x101u128 << 64) | 0x102, "a new trace id");
            }
            let mut upstream = h.clone();
            span.inject(&mut upstream);
            if h.contains_key("x-b3-traceid") {
                assert_eq!(
                    upstream.get("x-b3-traceid").and_then(|v| v.to_str().ok()),
                    Some("a3ce929d0e0e4736"),
                    "B3's width kept"
                );
                assert!(!upstream.contains_key("tracestate"), "not this trace's");
            }
            let record = span.finish(
                &ResponseFacts {
                    status: 200,
                    flags: "-",
                    grpc_status: Some(0),
                    request_size: 3,
                    response_size: 4,
                },
                SystemTime::UNIX_EPOCH,
            );
            assert_eq!(record.is_some(), want, "{h:?}");
            if let Some(record) = record {
                assert!(!record.error);
                assert_eq!(attr(&record, "http.protocol"), Some("HTTP/2"));
                assert_eq!(attr(&record, "grpc.status_code"), Some("0"));
                assert_eq!(attr(&record, "user_agent"), Some("-"));
                assert_eq!(attr(&record, "user"), Some("anon"));
                assert_eq!(attr(&record, "error"), None);
            }
        }
    }

    #[test]
    fn no_collector_no_span_and_values_cut() {
        let h = headers(&[("user-agent", &"a".repeat(300))]);
        let request = RequestFacts {
            method: &Method::GET,
            authority: "reviews",
            path: "/",
            version: Version::HTTP_11,
            headers: &h,
            peer: "198.18.1.2".parse().expect("ip"),
        };
        let off = Arc::new(TraceSettings::off());
        let none = ActiveSpan::start(
            &off,
            &node(),
            &target(),
            &request,
            SystemTime::UNIX_EPOCH,
            &mut counter(),
            0.0,
        );
        assert!(none.is_none());
        let attributes = request_attributes(&node(), &settings(0.0, 10), &request);
        let ua = attributes
            .iter()
            .find(|(k, _)| k == "user_agent")
            .map(|(_, v)| v.clone());
        assert_eq!(ua.as_deref(), Some("aaaaaaaaaa"));
        assert!(attributes.iter().all(|(_, v)| v.len() <= 10));
    }
}
