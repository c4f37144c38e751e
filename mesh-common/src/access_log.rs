//! Access logs: one entry per request (waypoint) or connection (agent), formatted as Envoy does
//! (Istio's default text line, Istio's default JSON fields, or a user's format with Envoy's
//! `%OPERATOR%`s), filtered by a `Telemetry` filter expression, and written by a writer thread
//! behind a bounded queue (a full queue drops the entry and counts it; a request never waits
//! for a log write).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::model::{AccessLogFormat, EffectiveTelemetry};

/// Istio's default text format (Envoy's operators; `%REQ(X)%` a request header).
pub const ISTIO_TEXT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%";

/// Istio's default JSON fields (`accessLogEncoding: JSON`), with the mesh's additions: both
/// identities, the attempt count and the trace id.
pub const ISTIO_JSON_FIELDS: [(&str, &str); 30] = [
    ("start_time", "%START_TIME%"),
    ("route_name", "%ROUTE_NAME%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
    (
        "connection_termination_details",
        "%CONNECTION_TERMINATION_DETAILS%",
    ),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("duration", "%DURATION%"),
    (
        "upstream_service_time",
        "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    ),
    ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("authority", "%REQ(:AUTHORITY)%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER_RAW%"),
    ("upstream_local_address", "%UPSTREAM_LOCAL_ADDRESS%"),
    ("downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
    (
        "upstream_transport_failure_reason",
        "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    ),
    ("source_principal", "%DOWNSTREAM_PEER_URI_SAN%"),
    ("destination_principal", "%UPSTREAM_PEER_URI_SAN%"),
    ("source_workload", "%SOURCE_WORKLOAD%"),
    ("destination_workload", "%DESTINATION_WORKLOAD%"),
    (
        "upstream_request_attempt_count",
        "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
    ),
    ("trace_id", "%TRACE_ID%"),
];

/// What one entry records. Absent values are written `-` (text) or `null` (JSON), as Envoy.
#[derive(Clone, Debug, Default)]
pub struct Entry {
    /// When the request or connection started.
    pub start_time: Option<SystemTime>,
    /// `HTTP/1.1`, `HTTP/2`, or `tcp`... (`%PROTOCOL%`; `-` for TCP as Envoy).
    pub protocol: Option<String>,
    /// Request method, path and authority, and the request headers the formats read.
    pub request_headers: BTreeMap<String, String>,
    /// Response headers the formats read.
    pub response_headers: BTreeMap<String, String>,
    /// Status sent downstream (0 for TCP).
    pub response_code: Option<u16>,
    /// Envoy's response flags (`-` when none).
    pub response_flags: String,
    /// Envoy's response code details (`via_upstream`, ...).
    pub response_code_details: Option<String>,
    /// Why the connection ended, when the mesh ended it.
    pub connection_termination_details: Option<String>,
    /// Why the upstream connection failed.
    pub upstream_transport_failure_reason: Option<String>,
    /// Bytes from downstream (request body, or client to server).
    pub bytes_received: u64,
    /// Bytes to downstream.
    pub bytes_sent: u64,
    /// Milliseconds from start to the last byte.
    pub duration_ms: u64,
    /// The endpoint used.
    pub upstream_host: Option<SocketAddr>,
    /// The upstream cluster (`outbound|9080|v1|reviews.apps.svc.cluster.local`, or the
    /// service host).
    pub upstream_cluster: Option<String>,
    /// The local address of the upstream connection.
    pub upstream_local_address: Option<SocketAddr>,
    /// The address the source dialed (the original destination).
    pub downstream_local_address: Option<SocketAddr>,
    /// The source's address.
    pub downstream_remote_address: Option<SocketAddr>,
    /// The TLS server name, when one was read.
    pub requested_server_name: Option<String>,
    /// The route rule used.
    pub route_name: Option<String>,
    /// The source's SPIFFE identity.
    pub source_principal: Option<String>,
    /// The destination's SPIFFE identity.
    pub destination_principal: Option<String>,
    /// The source workload (`namespace/name`).
    pub source_workload: Option<String>,
    /// The destination workload.
    pub destination_workload: Option<String>,
    /// Upstream attempts (1 without retries, 0 when none was made).
    pub attempts: u32,
    /// The W3C/B3 trace id, when the request is traced.
    pub trace_id: Option<String>,
}

/// A formatted value: text, a number, or absent.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Text(String),
    Number(u64),
    Absent,
}

impl Value {
    fn opt(v: Option<impl ToString>) -> Value {
        v.map_or(Value::Absent, |v| Value::Text(v.to_string()))
    }

    fn text(&self) -> String {
        match self {
            Value::Text(t) => t.clone(),
            Value::Number(n) => n.to_string(),
            Value::Absent => "-".to_owned(),
        }
    }

    fn json(&self) -> serde_json::Value {
        match self {
            Value::Text(t) => serde_json::Value::String(t.clone()),
            Value::Number(n) => serde_json::Value::from(*n),
            Value::Absent => serde_json::Value::Null,
        }
    }
}

/// RFC 3339 with milliseconds, UTC, as Envoy's `%START_TIME%`.
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let millis = since.subsec_millis();
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl Entry {
    /// The value of one Envoy operator (without the `%`s); `None`: an operator this mesh does
    /// not know.
    fn operator(&self, op: &str) -> Option<Value> {
        if let Some(inner) = op.strip_prefix("REQ(").and_then(|r| r.strip_suffix(')')) {
            return Some(header(&self.request_headers, inner));
        }
        if let Some(inner) = op.strip_prefix("RESP(").and_then(|r| r.strip_suffix(')')) {
            return Some(header(&self.response_headers, inner));
        }
        Some(match op {
            "START_TIME" => Value::opt(self.start_time.map(rfc3339)),
            "PROTOCOL" => Value::opt(self.protocol.as_ref()),
            "RESPONSE_CODE" => Value::Number(u64::from(self.response_code.unwrap_or(0))),
            "RESPONSE_FLAGS" => Value::Text(self.response_flags.clone()),
            "RESPONSE_CODE_DETAILS" => Value::opt(self.response_code_details.as_ref()),
            "CONNECTION_TERMINATION_DETAILS" => {
                Value::opt(self.connection_termination_details.as_ref())
            }
            "UPSTREAM_TRANSPORT_FAILURE_REASON" => {
                Value::opt(self.upstream_transport_failure_reason.as_ref())
            }
            "BYTES_RECEIVED" => Value::Number(self.bytes_received),
            "BYTES_SENT" => Value::Number(self.bytes_sent),
            "DURATION" => Value::Number(self.duration_ms),
            "UPSTREAM_HOST" => Value::opt(self.upstream_host),
            "UPSTREAM_CLUSTER" | "UPSTREAM_CLUSTER_RAW" => {
                Value::opt(self.upstream_cluster.as_ref())
            }
            "UPSTREAM_LOCAL_ADDRESS" => Value::opt(self.upstream_local_address),
            "DOWNSTREAM_LOCAL_ADDRESS" => Value::opt(self.downstream_local_address),
            "DOWNSTREAM_REMOTE_ADDRESS" => Value::opt(self.downstream_remote_address),
            "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => {
                Value::opt(self.downstream_remote_address.map(|a| a.ip()))
            }
            "REQUESTED_SERVER_NAME" => Value::opt(self.requested_server_name.as_ref()),
            "ROUTE_NAME" => Value::opt(self.route_name.as_ref()),
            "DOWNSTREAM_PEER_URI_SAN" => Value::opt(self.source_principal.as_ref()),
            "UPSTREAM_PEER_URI_SAN" => Value::opt(self.destination_principal.as_ref()),
            "SOURCE_WORKLOAD" => Value::opt(self.source_workload.as_ref()),
            "DESTINATION_WORKLOAD" => Value::opt(self.destination_workload.as_ref()),
            "UPSTREAM_REQUEST_ATTEMPT_COUNT" => Value::Number(u64::from(self.attempts)),
            "TRACE_ID" => Value::opt(self.trace_id.as_ref()),
            _ => return None,
        })
    }
}

/// `%REQ(A?B)%`: header `A`, else `B` (`:PATH`, `:METHOD`, `:AUTHORITY` are pseudo-headers).
fn header(headers: &BTreeMap<String, String>, spec: &str) -> Value {
    for name in spec.split('?') {
        let name = name.trim().to_ascii_lowercase();
        if let Some(v) = headers.get(&name) {
            return Value::Text(v.clone());
        }
    }
    Value::Absent
}

/// One piece of a format: literal text or an operator.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Literal(String),
    Operator(String),
}

/// A parsed format string.
#[derive(Debug, Clone, PartialEq)]
struct Template(Vec<Piece>);

impl Template {
    /// Parses `%OPERATOR%`s; unknown operators are returned in `unknown` and written `-`.
    fn parse(format: &str, unknown: &mut Vec<String>) -> Template {
        let probe = Entry::default();
        let mut pieces = Vec::new();
        let mut rest = format;
        while let Some(start) = rest.find('%') {
            let after = &rest[start + 1..];
            let Some(end) = after.find('%') else { break };
            let op = &after[..end];
            if !rest[..start].is_empty() {
                pieces.push(Piece::Literal(rest[..start].to_owned()));
            }
            if op.is_empty() {
                pieces.push(Piece::Literal("%".to_owned()));
            } else {
                if probe.operator(op).is_none() && !unknown.iter().any(|u| u == op) {
                    unknown.push(op.to_owned());
                }
                pieces.push(Piece::Operator(op.to_owned()));
            }
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Literal(rest.to_owned()));
        }
        Template(pieces)
    }

    fn value(&self, entry: &Entry) -> Value {
        match self.0.as_slice() {
            [Piece::Operator(op)] => entry.operator(op).unwrap_or(Value::Absent),
            pieces => Value::Text(
                pieces
                    .iter()
                    .map(|p| match p {
                        Piece::Literal(l) => l.clone(),
                        Piece::Operator(op) => entry.operator(op).unwrap_or(Value::Absent).text(),
                    })
                    .collect(),
            ),
        }
    }
}

/// A compiled line format.
#[derive(Debug, Clone, PartialEq)]
pub struct Formatter(Format);

#[derive(Debug, Clone, PartialEq)]
enum Format {
    /// A text line.
    Text(Template),
    /// A JSON object.
    Json(Vec<(String, Template)>),
}

impl Formatter {
    /// Compiles a format; the second value lists the operators this mesh does not know
    /// (written `-` / `null`; the caller reports them).
    pub fn new(format: &AccessLogFormat) -> (Formatter, Vec<String>) {
        let mut unknown = Vec::new();
        let formatter = match format {
            AccessLogFormat::DefaultText | AccessLogFormat::Text { template: None } => {
                Format::Text(Template::parse(ISTIO_TEXT_FORMAT, &mut unknown))
            }
            AccessLogFormat::Text {
                template: Some(template),
            } => Format::Text(Template::parse(
                template.trim_end_matches('\n'),
                &mut unknown,
            )),
            AccessLogFormat::Json { labels } if labels.is_empty() => Format::Json(
                ISTIO_JSON_FIELDS
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), Template::parse(v, &mut unknown)))
                    .collect(),
            ),
            AccessLogFormat::Json { labels } => Format::Json(
                labels
                    .iter()
                    .map(|(k, v)| (k.clone(), Template::parse(v, &mut unknown)))
                    .collect(),
            ),
        };
        (Formatter(formatter), unknown)
    }

    /// The line of an entry (without the newline).
    pub fn format(&self, entry: &Entry) -> String {
        match &self.0 {
            Format::Text(t) => t.value(entry).text(),
            Format::Json(fields) => {
                let map: serde_json::Map<String, serde_json::Value> = fields
                    .iter()
                    .map(|(k, t)| (k.clone(), t.value(entry).json()))
                    .collect();
                serde_json::Value::Object(map).to_string()
            }
        }
    }
}

/// A parsed `filter.expression` (Istio's CEL subset: comparisons of `response.code`,
/// `response.flags`, `request.method`, `connection.mtls` joined with `&&` and `||`).
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// Alternatives, each a conjunction of comparisons.
    any: Vec<Vec<Comparison>>,
}

#[derive(Debug, Clone, PartialEq)]
struct Comparison {
    attribute: Attribute,
    op: CmpOp,
    value: Literal,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Attribute {
    ResponseCode,
    ResponseFlags,
    RequestMethod,
    ConnectionMtls,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Int(i64),
    Str(String),
    Bool(bool),
}

/// A filter expression this mesh cannot evaluate.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("access log filter `{expression}`: {reason}")]
pub struct FilterError {
    /// The expression.
    pub expression: String,
    /// What is not understood.
    pub reason: String,
}

impl Filter {
    /// Parses an expression.
    pub fn parse(expression: &str) -> Result<Filter, FilterError> {
        let fail = |reason: String| FilterError {
            expression: expression.to_owned(),
            reason,
        };
        let mut any = Vec::new();
        for alternative in expression.split("||") {
            let mut all = Vec::new();
            for term in alternative.split("&&") {
                all.push(
                    parse_comparison(term.trim().trim_matches(|c| c == '(' || c == ')'))
                        .map_err(fail)?,
                );
            }
            any.push(all);
        }
        Ok(Filter { any })
    }

    /// Whether an entry (with `mtls`: the peers were authenticated) passes.
    pub fn matches(&self, entry: &Entry, mtls: bool) -> bool {
        self.any
            .iter()
            .any(|all| all.iter().all(|c| c.holds(entry, mtls)))
    }
}

fn parse_comparison(term: &str) -> Result<Comparison, String> {
    const OPS: [(&str, CmpOp); 6] = [
        ("==", CmpOp::Eq),
        ("!=", CmpOp::Ne),
        ("<=", CmpOp::Le),
        (">=", CmpOp::Ge),
        ("<", CmpOp::Lt),
        (">", CmpOp::Gt),
    ];
    // A bare boolean attribute: `connection.mtls`, `!connection.mtls`.
    match term {
        "connection.mtls" | "!connection.mtls" => {
            return Ok(Comparison {
                attribute: Attribute::ConnectionMtls,
                op: CmpOp::Eq,
                value: Literal::Bool(!term.starts_with('!')),
            })
        }
        _ => {}
    }
    let (at, (sym, op)) = OPS
        .iter()
        .find_map(|(sym, op)| term.find(sym).map(|at| (at, (*sym, *op))))
        .ok_or_else(|| format!("`{term}` is not a comparison"))?;
    let (lhs, rhs) = (term[..at].trim(), term[at + sym.len()..].trim());
    let attribute = match lhs {
        "response.code" => Attribute::ResponseCode,
        "response.flags" => Attribute::ResponseFlags,
        "request.method" => Attribute::RequestMethod,
        "connection.mtls" => Attribute::ConnectionMtls,
        other => return Err(format!("attribute `{other}` is not supported")),
    };
    let value = if let Some(s) = rhs
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .or_else(|| rhs.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')))
    {
        Literal::Str(s.to_owned())
    } else if let Ok(n) = rhs.parse::<i64>() {
        Literal::Int(n)
    } else if let Ok(b) = rhs.parse::<bool>() {
        Literal::Bool(b)
    } else {
        return Err(format!("`{rhs}` is not a literal"));
    };
    let typed = matches!(
        (attribute, &value),
        (Attribute::ResponseCode, Literal::Int(_))
            | (
                Attribute::ResponseFlags | Attribute::RequestMethod,
                Literal::Str(_)
            )
            | (Attribute::ConnectionMtls, Literal::Bool(_))
    );
    if !typed {
        return Err(format!("`{lhs}` cannot be compared with `{rhs}`"));
    }
    Ok(Comparison {
        attribute,
        op,
        value,
    })
}

impl Comparison {
    fn holds(&self, entry: &Entry, mtls: bool) -> bool {
        use std::cmp::Ordering as O;
        let ordering = match (&self.attribute, &self.value) {
            (Attribute::ResponseCode, Literal::Int(n)) => {
                i64::from(entry.response_code.unwrap_or(0)).cmp(n)
            }
            (Attribute::ResponseFlags, Literal::Str(s)) => entry.response_flags.as_str().cmp(s),
            (Attribute::RequestMethod, Literal::Str(s)) => entry
                .request_headers
                .get(":method")
                .map_or("", String::as_str)
                .cmp(s),
            (Attribute::ConnectionMtls, Literal::Bool(b)) => mtls.cmp(b),
            _ => return false,
        };
        match self.op {
            CmpOp::Eq => ordering == O::Equal,
            CmpOp::Ne => ordering != O::Equal,
            CmpOp::Lt => ordering == O::Less,
            CmpOp::Le => ordering != O::Greater,
            CmpOp::Gt => ordering == O::Greater,
            CmpOp::Ge => ordering != O::Less,
        }
    }
}

/// The access-log settings of one scope, compiled: the file, the line format and the filter.
#[derive(Debug, Clone)]
pub struct AccessLog {
    /// The file lines go to.
    pub path: String,
    formatter: Formatter,
    filter: Option<Filter>,
}

impl AccessLog {
    /// Compiles a scope's effective settings: `None` when logging is off there. The second
    /// value lists what is not applied (unknown operators, written `-`; a filter that does not
    /// parse, so every entry is written rather than some lost) for the caller to report.
    pub fn from_settings(telemetry: &EffectiveTelemetry) -> (Option<AccessLog>, Vec<String>) {
        let mut problems = Vec::new();
        if !telemetry.access_log_enabled() {
            return (None, problems);
        }
        let Some(provider) = telemetry.access_logging.provider.as_ref() else {
            return (None, problems);
        };
        let (formatter, unknown) = Formatter::new(&provider.format);
        problems.extend(
            unknown
                .into_iter()
                .map(|op| format!("unknown format operator {op}")),
        );
        let filter = match telemetry
            .access_logging
            .filter
            .as_deref()
            .map(Filter::parse)
        {
            None => None,
            Some(Ok(filter)) => Some(filter),
            Some(Err(e)) => {
                problems.push(format!("{e}; every entry is written"));
                None
            }
        };
        let log = AccessLog {
            path: provider.path.clone(),
            formatter,
            filter,
        };
        (Some(log), problems)
    }

    /// Writes `entry` (with `mtls`: the peers were authenticated) when the filter passes it.
    pub fn write(&self, sinks: &Sinks, entry: &Entry, mtls: bool) {
        if self.filter.as_ref().is_none_or(|f| f.matches(entry, mtls)) {
            sinks.write(&self.path, self.formatter.format(entry));
        }
    }
}

/// Where lines go: one writer thread per file, behind a bounded queue.
#[derive(Debug, Default)]
pub struct Sinks {
    open: Mutex<BTreeMap<PathBuf, SyncSender<String>>>,
    /// Lines dropped because a queue was full or its file could not be written.
    pub dropped: Arc<AtomicU64>,
    /// Lines written.
    pub written: Arc<AtomicU64>,
}

/// Lines a sink queues before it drops.
pub const QUEUE: usize = 8192;

impl Sinks {
    /// Queues `line` for `path` (opened, or created, on first use).
    pub fn write(&self, path: &str, line: String) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let path = PathBuf::from(path);
        let sender = match open.get(&path) {
            Some(s) => s.clone(),
            None => {
                let (tx, rx) = sync_channel::<String>(QUEUE);
                let dropped = self.dropped.clone();
                let written = self.written.clone();
                let file_path = path.clone();
                let spawned = std::thread::Builder::new()
                    .name("access-log".into())
                    .spawn(move || write_lines(&file_path, &rx, &dropped, &written));
                if let Err(e) = spawned {
                    tracing::warn!(path = %path.display(), error = %e, "access log writer not started");
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                open.insert(path.clone(), tx.clone());
                tx
            }
        };
        drop(open);
        match sender.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn write_lines(
    path: &std::path::Path,
    rx: &std::sync::mpsc::Receiver<String>,
    dropped: &AtomicU64,
    written: &AtomicU64,
) {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path);
    let mut out = match file {
        Ok(f) => std::io::BufWriter::new(f),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "access log file cannot be opened; entries are dropped");
            for _ in rx.iter() {
                dropped.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
    };
    while let Ok(line) = rx.recv() {
        let mut batch = vec![line];
        batch.extend(rx.try_iter().take(QUEUE));
        for mut line in batch {
            // One write per line: lines of several processes appending to one file stay whole.
            line.push('\n');
            if out.write_all(line.as_bytes()).is_err() {
                dropped.fetch_add(1, Ordering::Relaxed);
            } else {
                written.fetch_add(1, Ordering::Relaxed);
            }
        }
        if out.flush().is_err() {
            tracing::warn!(path = %path.display(), "access log flush failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(code: u16) -> Entry {
        Entry {
            start_time: Some(
                SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_764_633_600_123),
            ),
            protocol: Some("HTTP/1.1".into()),
            request_headers: BTreeMap::from([
                (":method".to_owned(), "GET".to_owned()),
                (":path".to_owned(), "/reviews/1".to_owned()),
                (":authority".to_owned(), "reviews:9080".to_owned()),
                ("x-request-id".to_owned(), "abc".to_owned()),
            ]),
            response_code: Some(code),
            response_flags: "-".into(),
            bytes_received: 0,
            bytes_sent: 120,
            duration_ms: 4,
            upstream_host: Some("198.18.1.10:9080".parse().expect("addr")),
            attempts: 1,
            ..Entry::default()
        }
    }

    #[test]
    fn start_time_is_rfc3339_utc_with_millis() {
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_764_633_600_123)),
            "2025-12-02T00:00:00.123Z"
        );
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn the_default_text_line_is_istios() {
        let (f, unknown) = Formatter::new(&AccessLogFormat::DefaultText);
        assert!(unknown.is_empty(), "{unknown:?}");
        assert_eq!(
            f.format(&entry(200)),
            "[2025-12-02T00:00:00.123Z] \"GET /reviews/1 HTTP/1.1\" 200 - - - \"-\" 0 120 4 - \"-\" \"-\" \"abc\" \"reviews:9080\" \"198.18.1.10:9080\" - - - - - -"
        );
    }

    #[test]
    fn json_has_every_default_field_typed() {
        let (f, _) = Formatter::new(&AccessLogFormat::Json {
            labels: BTreeMap::new(),
        });
        let v: serde_json::Value = serde_json::from_str(&f.format(&entry(503))).expect("json");
        assert_eq!(v["response_code"], 503);
        assert_eq!(v["path"], "/reviews/1");
        assert_eq!(v["upstream_request_attempt_count"], 1);
        assert!(v["trace_id"].is_null());
        assert_eq!(
            v.as_object().map(|o| o.len()),
            Some(ISTIO_JSON_FIELDS.len())
        );
    }

    #[test]
    fn custom_formats_name_unknown_operators() {
        let (f, unknown) = Formatter::new(&AccessLogFormat::Text {
            template: Some("%RESPONSE_CODE% %NOPE% %REQ(:PATH)%\n".into()),
        });
        assert_eq!(unknown, vec!["NOPE".to_owned()]);
        assert_eq!(f.format(&entry(201)), "201 - /reviews/1");
    }

    #[test]
    fn filters_evaluate_istios_cel_subset() {
        // (expression, code, mtls, passes)
        let cases = [
            ("response.code >= 400", 503, true, true),
            ("response.code >= 400", 200, true, false),
            (
                "response.code == 200 || response.code == 418",
                418,
                true,
                true,
            ),
            (
                "response.code != 200 && connection.mtls == true",
                500,
                false,
                false,
            ),
            ("request.method == 'GET'", 200, false, true),
            ("connection.mtls", 200, true, true),
            ("connection.mtls", 200, false, false),
            ("!connection.mtls && response.code == 200", 200, false, true),
        ];
        for (expression, code, mtls, want) in cases {
            let f = Filter::parse(expression).expect(expression);
            assert_eq!(f.matches(&entry(code), mtls), want, "{expression} {code}");
        }
        for bad in ["response.size > 1", "response.code >= '4'", "true"] {
            assert!(Filter::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_sink_writes_lines_in_order() {
        let dir = std::env::temp_dir().join(format!("mesh-access-log-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let sinks = Sinks::default();
        for i in 0..100 {
            sinks.write(dir.to_str().expect("utf-8"), format!("line {i}"));
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while sinks.written.load(Ordering::Relaxed) < 100 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let text = std::fs::read_to_string(&dir).expect("written");
        let _ = std::fs::remove_file(&dir);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 100);
        assert_eq!(lines[99], "line 99");
    }
}
