//! The HTTP server of `serve`: HTTP/1.1 and HTTP/2 (prior knowledge) on one port, answering
//! every request with what it saw, plus the special paths (status, stream, upload, WebSocket,
//! trailers, delay, stats) and the faults it is told to inject (a share of 503s, a delay).
//! Bodies stream both ways; nothing is buffered whole.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, HOST, TRAILER};
use hyper::http::request::Parts;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;

use super::args::{ClientOptions, ServeOptions, MAX_DELAY_MS};
use super::client;
use super::json::{headers_json, version_name};
use super::net::{canonical, MAX_CONNECTIONS, SERVER_IDLE, TIMEOUT};
use super::ws;

pub type Body = BoxBody<Bytes, Infallible>;

/// The most chunks and the longest interval a `/stream` request may ask for.
const MAX_CHUNKS: u64 = 1_000_000;
const MAX_INTERVAL_MS: u64 = 60_000;
const DEFAULT_CHUNKS: u64 = 10;
const DEFAULT_INTERVAL_MS: u64 = 100;

/// What a request asks for, by its path and query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The request echoed as JSON with this status.
    Echo(u16),
    /// `chunks` lines, `interval_ms` apart.
    Stream {
        chunks: u64,
        interval_ms: u64,
    },
    Upload,
    WebSocket,
    Trailers,
    /// The echo, answered after this many milliseconds.
    Delay(u64),
    /// The server's counters.
    Stats,
    /// 400 with this reason.
    Invalid(String),
}

/// Decides what a request gets from its path and query alone.
pub fn route(path: &str, query: Option<&str>) -> Route {
    if let Some(code) = path.strip_prefix("/status/") {
        return match code.parse::<u16>() {
            Ok(code) if (200..=599).contains(&code) => Route::Echo(code),
            _ => Route::Invalid(format!("status {code:?} is not a code in 200..=599")),
        };
    }
    if let Some(ms) = path.strip_prefix("/delay/") {
        return match ms.parse::<u64>() {
            Ok(ms) if ms <= MAX_DELAY_MS => Route::Delay(ms),
            _ => Route::Invalid(format!(
                "delay {ms:?} is not a number of milliseconds up to {MAX_DELAY_MS}"
            )),
        };
    }
    match path {
        "/stream" => stream_params(query.unwrap_or("")),
        "/upload" => Route::Upload,
        "/ws" => Route::WebSocket,
        "/trailers" => Route::Trailers,
        "/stats" => Route::Stats,
        _ => Route::Echo(200),
    }
}

fn stream_params(query: &str) -> Route {
    let mut chunks = DEFAULT_CHUNKS;
    let mut interval_ms = DEFAULT_INTERVAL_MS;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (slot, max) = match key {
            "chunks" => (&mut chunks, MAX_CHUNKS),
            "interval_ms" => (&mut interval_ms, MAX_INTERVAL_MS),
            _ => continue,
        };
        match value.parse::<u64>() {
            Ok(v) if v <= max => *slot = v,
            _ => return Route::Invalid(format!("{key}={value:?} is not a number up to {max}")),
        }
    }
    Route::Stream {
        chunks,
        interval_ms,
    }
}

/// Whether a response with this status may carry a body.
fn has_body(status: u16) -> bool {
    status != 204 && status != 304
}

/// Whether request `i` (from 0, in arrival order) of a server failing `percent` of them fails:
/// when `floor((i+1)·p/100)` passes `floor(i·p/100)`, so that every 100 consecutive requests hold
/// exactly `p` failures, spread evenly (50: every second one, from the second).
pub fn fails(i: u64, percent: u8) -> bool {
    let p = u128::from(percent.min(100));
    let i = u128::from(i);
    (i + 1) * p / 100 > i * p / 100
}

/// What a server counts: requests (`/stats` excluded) and connections.
#[derive(Debug, Default)]
pub struct Stats {
    requests: AtomicU64,
    connections_now: AtomicU64,
    connections_max: AtomicU64,
    connections_total: AtomicU64,
}

impl Stats {
    /// Counts a request; its index (from 0) in arrival order.
    pub fn request(&self) -> u64 {
        self.requests.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts an accepted connection, open until the guard is dropped.
    pub fn opened(self: &Arc<Self>) -> OpenConnection {
        self.connections_total.fetch_add(1, Ordering::Relaxed);
        let now = self.connections_now.fetch_add(1, Ordering::Relaxed) + 1;
        self.connections_max.fetch_max(now, Ordering::Relaxed);
        OpenConnection(self.clone())
    }

    /// The `GET /stats` body.
    pub fn to_json(&self, name: &str) -> Value {
        json!({
            "server": name,
            "requests": self.requests.load(Ordering::Relaxed),
            "connections_now": self.connections_now.load(Ordering::Relaxed),
            "connections_max": self.connections_max.load(Ordering::Relaxed),
            "connections_total": self.connections_total.load(Ordering::Relaxed),
        })
    }
}

/// One open connection in [`Stats`]; closes it when dropped.
pub struct OpenConnection(Arc<Stats>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections_now.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What every request of a server shares.
struct Server {
    name: Arc<str>,
    opts: ServeOptions,
    stats: Arc<Stats>,
}

/// Accepts connections until the process is killed.
pub async fn serve(listener: TcpListener, name: String, opts: ServeOptions) -> anyhow::Result<()> {
    let server = Arc::new(Server {
        name: name.into(),
        opts,
        stats: Arc::default(),
    });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = slots.clone().acquire_owned().await?;
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, say: wait a little rather than spin.
                eprintln!("mesh-httpapp: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let peer = canonical(peer);
        let server = server.clone();
        let open = server.stats.opened();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, server.clone(), peer));
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(SERVER_IDLE);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(TIMEOUT)
                .max_concurrent_streams(1000);
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await
            {
                eprintln!("mesh-httpapp: connection from {peer}: {e}");
            }
            drop(open);
            drop(permit);
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    server: Arc<Server>,
    peer: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    let mut route = route(req.uri().path(), req.uri().query());
    if route != Route::Stats {
        let i = server.stats.request();
        let delay_ms = server.opts.delay_ms
            + match route {
                Route::Delay(ms) => ms,
                _ => 0,
            };
        if delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        if fails(i, server.opts.fail_percent) {
            route = Route::Echo(503);
        }
    }
    Ok(answer(req, route, &server, peer).await)
}

/// The answer to a request on its route, once any delay is over.
async fn answer(
    mut req: Request<Incoming>,
    route: Route,
    server: &Server,
    peer: SocketAddr,
) -> Response<Body> {
    let name = server.name.clone();
    match route {
        Route::Echo(status) => match (&server.opts.forward, status) {
            (Some(url), 200) => forwarded(req, url, &name, peer).await,
            _ => echo(req, status, &name, peer).await,
        },
        Route::Delay(_) => echo(req, 200, &name, peer).await,
        Route::Stats => json_response(200, server.stats.to_json(&name)),
        Route::Stream {
            chunks,
            interval_ms,
        } => stream(chunks, interval_ms),
        Route::Upload => match count_body(req.into_body()).await {
            Ok(n) => json_response(200, json!({"server": &*name, "bytes": n})),
            Err(e) => bad_request(&name, e),
        },
        Route::WebSocket => ws::accept(&mut req, name),
        Route::Trailers => {
            let (parts, body) = req.into_parts();
            match count_body(body).await {
                Ok(n) => trailers(request_json(&parts, &name, peer, n), &name),
                Err(e) => bad_request(&name, e),
            }
        }
        Route::Invalid(reason) => bad_request(&name, reason),
    }
}

/// The request described as JSON, with this status.
async fn echo(req: Request<Incoming>, status: u16, name: &str, peer: SocketAddr) -> Response<Body> {
    let (parts, body) = req.into_parts();
    match count_body(body).await {
        Ok(n) => json_response(status, request_json(&parts, name, peer, n)),
        Err(e) => bad_request(name, e),
    }
}

/// The headers an application copies from the request it serves to the requests it makes,
/// so a trace goes on through it (as Istio asks applications to).
pub const TRACE_HEADERS: [&str; 9] = [
    "x-request-id",
    "traceparent",
    "tracestate",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
];

/// The trace headers of a request, to send on.
pub fn trace_headers(headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    TRACE_HEADERS
        .iter()
        .filter_map(|name| {
            headers
                .get(*name)
                .map(|v| (HeaderName::from_static(name), v.clone()))
        })
        .collect()
}

/// The echo of a request after a call to `url` with its trace headers: the call's result
/// under `"forwarded"` (200), or `"forward_error"` (502).
async fn forwarded(
    req: Request<Incoming>,
    url: &str,
    name: &str,
    peer: SocketAddr,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let n = match count_body(body).await {
        Ok(n) => n,
        Err(e) => return bad_request(name, e),
    };
    let opts = ClientOptions {
        headers: trace_headers(&parts.headers),
        ..ClientOptions::default()
    };
    let mut value = request_json(&parts, name, peer, n);
    match client::fetch(url, &opts).await {
        Ok(result) => {
            value["forwarded"] = result;
            json_response(200, value)
        }
        Err(e) => {
            value["forward_error"] = json!(format!("{e:#}"));
            json_response(502, value)
        }
    }
}

/// Reads a body to its end frame by frame, counting the bytes; each frame within
/// [`SERVER_IDLE`].
async fn count_body(mut body: Incoming) -> Result<u64, String> {
    let mut n = 0u64;
    loop {
        match tokio::time::timeout(SERVER_IDLE, body.frame()).await {
            Err(_) => {
                return Err(format!(
                    "request body silent for {SERVER_IDLE:?} after {n} bytes"
                ))
            }
            Ok(None) => return Ok(n),
            Ok(Some(Err(e))) => return Err(format!("request body after {n} bytes: {e}")),
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    n += data.len() as u64;
                }
            }
        }
    }
}

/// What the server saw of a request.
pub fn request_json(parts: &Parts, name: &str, peer: SocketAddr, body_bytes: u64) -> Value {
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            parts
                .headers
                .get(HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        })
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string());
    json!({
        "server": name,
        "version": version_name(parts.version),
        "method": parts.method.as_str(),
        "path": path,
        "authority": authority,
        "headers": headers_json(&parts.headers),
        "peer": peer.to_string(),
        "body_bytes": body_bytes,
    })
}

fn json_response(status: u16, value: Value) -> Response<Body> {
    let body = if has_body(status) {
        Full::new(Bytes::from(format!("{value}\n"))).boxed()
    } else {
        Full::new(Bytes::new()).boxed()
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub fn bad_request(name: &str, reason: impl std::fmt::Display) -> Response<Body> {
    json_response(400, json!({"server": name, "error": reason.to_string()}))
}

/// `chunks` lines `{"chunk": i}`, `interval_ms` apart, produced as the client takes them.
fn stream(chunks: u64, interval_ms: u64) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(2);
    tokio::spawn(async move {
        for i in 0..chunks {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(interval_ms)).await;
            }
            let line = Frame::data(Bytes::from(format!("{}\n", json!({"chunk": i}))));
            // The client went away, or stopped reading for too long: stop producing.
            match tokio::time::timeout(SERVER_IDLE, tx.send(Ok(line))).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return,
            }
        }
    });
    let mut response = Response::new(StreamBody::new(ReceiverStream::new(rx)).boxed());
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

/// The JSON body, then the trailer `x-served-by: <name>`.
fn trailers(value: Value, name: &str) -> Response<Body> {
    let mut trailers = HeaderMap::new();
    trailers.insert(
        "x-served-by",
        HeaderValue::from_str(name).unwrap_or(HeaderValue::from_static("-")),
    );
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
        Ok(Frame::data(Bytes::from(format!("{value}\n")))),
        Ok(Frame::trailers(trailers)),
    ];
    let mut response = Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // HTTP/1.1 sends only the trailers the head announces.
    headers.insert(TRAILER, HeaderValue::from_static("x-served-by"));
    response
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use hyper::{Method, Version};

    use super::*;

    #[test]
    fn paths_pick_their_route() {
        let cases: &[(&str, Option<&str>, Route)] = &[
            ("/", None, Route::Echo(200)),
            ("/productpage", Some("u=1"), Route::Echo(200)),
            ("/status/503", None, Route::Echo(503)),
            ("/status/200", None, Route::Echo(200)),
            ("/status/599", None, Route::Echo(599)),
            (
                "/status/101",
                None,
                Route::Invalid("status \"101\" is not a code in 200..=599".into()),
            ),
            (
                "/status/abc",
                None,
                Route::Invalid("status \"abc\" is not a code in 200..=599".into()),
            ),
            (
                "/status/",
                None,
                Route::Invalid("status \"\" is not a code in 200..=599".into()),
            ),
            (
                "/stream",
                None,
                Route::Stream {
                    chunks: 10,
                    interval_ms: 100,
                },
            ),
            (
                "/stream",
                Some("chunks=3&interval_ms=5&other=x"),
                Route::Stream {
                    chunks: 3,
                    interval_ms: 5,
                },
            ),
            (
                "/stream",
                Some("interval_ms=0"),
                Route::Stream {
                    chunks: 10,
                    interval_ms: 0,
                },
            ),
            (
                "/stream",
                Some("chunks=x"),
                Route::Invalid("chunks=\"x\" is not a number up to 1000000".into()),
            ),
            (
                "/stream",
                Some("interval_ms=60001"),
                Route::Invalid("interval_ms=\"60001\" is not a number up to 60000".into()),
            ),
            ("/upload", None, Route::Upload),
            ("/ws", None, Route::WebSocket),
            ("/trailers", None, Route::Trailers),
            ("/streaming", None, Route::Echo(200)),
            ("/stats", None, Route::Stats),
            ("/stats/x", None, Route::Echo(200)),
            ("/delay/0", None, Route::Delay(0)),
            ("/delay/1000", Some("x=1"), Route::Delay(1000)),
            ("/delay/60000", None, Route::Delay(60000)),
            (
                "/delay/60001",
                None,
                Route::Invalid(
                    "delay \"60001\" is not a number of milliseconds up to 60000".into(),
                ),
            ),
            (
                "/delay/soon",
                None,
                Route::Invalid("delay \"soon\" is not a number of milliseconds up to 60000".into()),
            ),
            ("/delay", None, Route::Echo(200)),
        ];
        for (path, query, want) in cases {
            assert_eq!(&route(path, *query), want, "{path}?{query:?}");
        }
    }

    #[test]
    fn failures_are_spread_evenly() {
        // The first twenty requests of a server failing this share: `x` fails.
        let cases: &[(u8, &str)] = &[
            (0, "...................."),
            (5, "...................x"),
            (10, ".........x.........x"),
            (25, "...x...x...x...x...x"),
            (50, ".x.x.x.x.x.x.x.x.x.x"),
            (75, ".xxx.xxx.xxx.xxx.xxx"),
            (100, "xxxxxxxxxxxxxxxxxxxx"),
        ];
        for (percent, want) in cases {
            let got: String = (0..20)
                .map(|i| if fails(i, *percent) { 'x' } else { '.' })
                .collect();
            assert_eq!(&got, want, "{percent}%");
        }
        // Every 100 consecutive requests, wherever they start, hold exactly that many.
        for percent in 0..=100u8 {
            for start in [0u64, 1, 37, 99, 1_000_003, u64::MAX - 100] {
                let failed = (start..start + 100).filter(|&i| fails(i, percent)).count();
                assert_eq!(failed, usize::from(percent), "{percent}% from {start}");
            }
        }
    }

    #[test]
    fn stats_count_connections_and_requests() {
        let stats = Arc::new(Stats::default());
        assert_eq!(stats.request(), 0);
        assert_eq!(stats.request(), 1);
        let a = stats.opened();
        let b = stats.opened();
        drop(a);
        let c = stats.opened();
        drop(b);
        assert_eq!(
            stats.to_json("v1"),
            json!({"server": "v1", "requests": 2, "connections_now": 1, "connections_max": 2,
                "connections_total": 3})
        );
        drop(c);
        assert_eq!(stats.to_json("v1")["connections_now"], 0);
    }

    #[test]
    fn trace_headers_are_copied_and_nothing_else() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "v=1"),
            ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-sampled", "1"),
            ("x-request-id", "r-1"),
            ("b3", "0"),
            ("end-user", "jason"),
            ("host", "reviews"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let got: Vec<String> = trace_headers(&h)
            .iter()
            .map(|(n, v)| format!("{n}={}", v.to_str().unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                "x-request-id=r-1",
                "traceparent=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "tracestate=v=1",
                "x-b3-traceid=4bf92f3577b34da6a3ce929d0e0e4736",
                "x-b3-spanid=00f067aa0ba902b7",
                "x-b3-sampled=1",
                "b3=0",
            ]
        );
        assert!(trace_headers(&HeaderMap::new()).is_empty());
    }

    #[test]
    fn no_body_for_204_and_304() {
        for (status, want) in [(200, true), (204, false), (304, false), (503, true)] {
            assert_eq!(has_body(status), want, "{status}");
        }
    }

    #[test]
    fn requests_are_described() {
        let peer: SocketAddr = "10.0.0.7:4242".parse().unwrap();
        let h1 = Request::builder()
            .method(Method::POST)
            .uri("/a/b?x=1&y=2")
            .header("Host", "reviews:9080")
            .header("end-user", "jason")
            .body(())
            .unwrap();
        let h2 = Request::builder()
            .version(Version::HTTP_2)
            .uri("http://reviews.default:9080/")
            .header("host", "ignored")
            .body(())
            .unwrap();
        let cases = [
            (
                h1,
                json!({"server": "v1", "version": "HTTP/1.1", "method": "POST",
                    "path": "/a/b?x=1&y=2", "authority": "reviews:9080",
                    "headers": {"host": "reviews:9080", "end-user": "jason"},
                    "peer": "10.0.0.7:4242", "body_bytes": 12}),
            ),
            (
                h2,
                json!({"server": "v1", "version": "HTTP/2.0", "method": "GET", "path": "/",
                    "authority": "reviews.default:9080", "headers": {"host": "ignored"},
                    "peer": "10.0.0.7:4242", "body_bytes": 12}),
            ),
        ];
        for (req, want) in cases {
            let (parts, ()) = req.into_parts();
            assert_eq!(request_json(&parts, "v1", peer, 12), want);
        }
    }
}
