//! The HTTP clients (`count`, `get`, `stream`, `upload`): one hyper connection each (HTTP/1.1,
//! or HTTP/2 with prior knowledge), every wait bounded.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::{Body, Incoming};
use hyper::client::conn::{http1, http2};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::{json, Value};
use tokio::time::timeout;

use super::args::ClientOptions;
use super::json::{body_value, emit, headers_json, server_of, version_name};
use super::net::dial;
use super::random_body::RandomBody;

/// The most of a response body a client keeps (`count`, `get`, `upload`).
const MAX_BODY: usize = 1 << 20;
/// The longest chunk line `stream` takes.
const MAX_LINE: usize = 64 * 1024;
/// The most chunks `stream` reads.
const MAX_CHUNKS: u64 = 10_000_000;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where a URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// For resolving: no brackets around an IPv6 address.
    pub host: String,
    pub port: u16,
    /// `host:port` as written (the Host header or `:authority`).
    pub authority: String,
    /// Path and query.
    pub path: String,
}

/// Parses an `http://host[:port]/path?query` URL.
pub fn parse_target(url: &str) -> anyhow::Result<Target> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("{url:?} is not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => bail!("{url:?}: scheme {other} is not served (only http)"),
        None => bail!("{url:?} has no scheme (write http://host:port/path)"),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| anyhow!("{url:?} has no host"))?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok(Target {
        host,
        port: authority.port_u16().unwrap_or(80),
        authority: authority.as_str().to_string(),
        path: uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
    })
}

/// The value of `key` in a URL's query, if it is a number.
pub fn query_number(path: &str, key: &str) -> Option<u64> {
    let (_, query) = path.split_once('?')?;
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

enum Sender<B> {
    H1(http1::SendRequest<B>),
    H2(http2::SendRequest<B>),
}

/// One client connection.
struct Conn<B> {
    sender: Sender<B>,
}

impl<B> Conn<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    async fn open(target: &Target, h2: bool, t: Duration) -> anyhow::Result<Self> {
        let stream = dial(&target.host, target.port, t).await?;
        let io = TokioIo::new(stream);
        let sender = if h2 {
            let (sender, conn) = timeout(
                t,
                http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .handshake(io),
            )
            .await
            .map_err(|_| {
                anyhow!(
                    "HTTP/2 handshake with {}: no answer within {t:?}",
                    target.authority
                )
            })?
            .context("HTTP/2 handshake")?;
            // Errors of the connection surface in the requests on it.
            tokio::spawn(async move { drop(conn.await) });
            Sender::H2(sender)
        } else {
            let (sender, conn) = http1::handshake(io).await.context("HTTP/1.1 handshake")?;
            tokio::spawn(async move { drop(conn.await) });
            Sender::H1(sender)
        };
        Ok(Conn { sender })
    }

    /// Whether the connection takes another request (within `t`): `false` once the server
    /// closed it, e.g. after a `Connection: close` answer.
    async fn ready(&mut self, t: Duration) -> bool {
        let ready = async {
            match &mut self.sender {
                Sender::H1(s) => s.ready().await.is_ok(),
                Sender::H2(s) => s.ready().await.is_ok(),
            }
        };
        timeout(t, ready).await.unwrap_or(false)
    }

    /// Sends a request and waits for the response head (no timeout here).
    async fn send(&mut self, req: Request<B>) -> anyhow::Result<Response<Incoming>> {
        match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await.context("connection closed")?;
                s.send_request(req).await.context("request failed")
            }
            Sender::H2(s) => {
                s.ready().await.context("connection closed")?;
                s.send_request(req).await.context("request failed")
            }
        }
    }
}

/// A request for `target`: origin-form with a Host header on HTTP/1.1, absolute (so
/// `:authority`) on HTTP/2; a `-H host:` replaces the authority.
fn build_request<B>(
    target: &Target,
    opts: &ClientOptions,
    method: Method,
    body: B,
) -> anyhow::Result<Request<B>> {
    let host = opts.headers.iter().find(|(n, _)| n == HOST).map(|(_, v)| v);
    let mut builder = Request::builder().method(method);
    if opts.h2 {
        let authority = match host {
            Some(h) => h.to_str().context("the host header is not text")?,
            None => &target.authority,
        };
        builder = builder
            .version(Version::HTTP_2)
            .uri(format!("http://{authority}{}", target.path));
    } else {
        builder = builder.uri(&target.path);
        if host.is_none() {
            builder = builder.header(HOST, &target.authority);
        }
    }
    for (name, value) in &opts.headers {
        if opts.h2 && name == HOST {
            continue;
        }
        builder = builder.header(name, value);
    }
    builder.body(body).context("building the request")
}

/// Reads a whole (small) response body: at most [`MAX_BODY`], each frame within `t`.
async fn read_body(
    body: Incoming,
    t: Duration,
) -> anyhow::Result<(Bytes, Option<hyper::HeaderMap>)> {
    let collected = timeout(t, Limited::new(body, MAX_BODY).collect())
        .await
        .map_err(|_| anyhow!("response body not complete within {t:?}"))?
        .map_err(|e| anyhow!("reading the response body: {e}"))?;
    let trailers = collected.trailers().cloned();
    Ok((collected.to_bytes(), trailers))
}

/// What `count` saw.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub servers: BTreeMap<String, u64>,
    pub statuses: BTreeMap<String, u64>,
    pub errors: u64,
    pub connections: u64,
    pub first_error: Option<String>,
}

impl Tally {
    pub fn answered(&mut self, status: u16, server: String) {
        *self.servers.entry(server).or_default() += 1;
        *self.statuses.entry(status.to_string()).or_default() += 1;
    }

    pub fn failed(&mut self, error: &anyhow::Error) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{error:#}"));
        }
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "servers": self.servers,
            "statuses": self.statuses,
            "errors": self.errors,
            "connections": self.connections,
        });
        if let (Some(first), Some(map)) = (&self.first_error, v.as_object_mut()) {
            map.insert("first_error".into(), Value::String(first.clone()));
        }
        v
    }
}

/// `n` GETs one after another on one connection (a new one after a failure, or when the server
/// closed it).
pub async fn count(url: &str, n: u64, opts: &ClientOptions) -> anyhow::Result<()> {
    let target = parse_target(url)?;
    let next = AtomicU64::new(0);
    let run = worker(&target, opts, &next, n).await;
    emit(&run.tally.to_json())
}

/// What one [`worker`] saw: the tally, when its first error happened, and the latency of each
/// response in microseconds (from sending the request to the end of its body).
#[derive(Debug, Default)]
pub struct Run {
    pub tally: Tally,
    pub first_error_at: Option<Instant>,
    pub latencies_us: Vec<u64>,
}

impl Run {
    /// Adds another worker's run: counts summed, the earlier first error kept.
    pub fn merge(&mut self, other: Run) {
        for (server, n) in other.tally.servers {
            *self.tally.servers.entry(server).or_default() += n;
        }
        for (status, n) in other.tally.statuses {
            *self.tally.statuses.entry(status).or_default() += n;
        }
        self.tally.errors += other.tally.errors;
        self.tally.connections += other.tally.connections;
        let earlier = match (self.first_error_at, other.first_error_at) {
            (None, Some(_)) => true,
            (Some(mine), Some(theirs)) => theirs < mine,
            _ => false,
        };
        if earlier {
            self.first_error_at = other.first_error_at;
            self.tally.first_error = other.tally.first_error;
        }
        self.latencies_us.extend(other.latencies_us);
    }

    fn failed(&mut self, error: &anyhow::Error) {
        if self.first_error_at.is_none() {
            self.first_error_at = Some(Instant::now());
        }
        self.tally.failed(error);
    }
}

/// GETs on one keep-alive connection (a new one after a failure, or when the server closed it),
/// taking request numbers from `next` until `n` are taken (so workers sharing `next` make `n`
/// requests in all).
pub async fn worker(target: &Target, opts: &ClientOptions, next: &AtomicU64, n: u64) -> Run {
    let t = opts.timeout;
    let mut run = Run::default();
    let mut conn: Option<Conn<Empty<Bytes>>> = None;
    while next.fetch_add(1, Ordering::Relaxed) < n {
        let reusable = match conn.take() {
            Some(mut c) => c.ready(t).await.then_some(c),
            None => None,
        };
        let mut c = match reusable {
            Some(c) => c,
            None => match Conn::open(target, opts.h2, t).await {
                Ok(c) => {
                    run.tally.connections += 1;
                    c
                }
                Err(e) => {
                    run.failed(&e);
                    continue;
                }
            },
        };
        let started = Instant::now();
        let exchange = async {
            let req = build_request(target, opts, Method::GET, Empty::new())?;
            let response = c.send(req).await?;
            let status = response.status().as_u16();
            let (body, _) = read_body(response.into_body(), t).await?;
            anyhow::Ok((status, server_of(&body)))
        };
        match timeout(t, exchange).await {
            Ok(Ok((status, server))) => {
                let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                run.latencies_us.push(us);
                run.tally.answered(status, server);
                conn = Some(c);
            }
            Ok(Err(e)) => run.failed(&e),
            Err(_) => run.failed(&anyhow!("no response within {t:?}")),
        }
    }
    run
}

/// One request; prints the status, headers, trailers and body.
pub async fn get(url: &str, opts: &ClientOptions) -> anyhow::Result<()> {
    emit(&fetch(url, opts).await?)
}

/// One request on a connection of its own: `{"status", "version", "headers", "trailers",
/// "body"}` as `get` prints it.
pub async fn fetch(url: &str, opts: &ClientOptions) -> anyhow::Result<Value> {
    let target = parse_target(url)?;
    let t = opts.timeout;
    let mut conn: Conn<Empty<Bytes>> = Conn::open(&target, opts.h2, t).await?;
    let req = build_request(&target, opts, opts.method.clone(), Empty::new())?;
    let response = timeout(t, conn.send(req))
        .await
        .map_err(|_| anyhow!("no response from {url} within {t:?}"))??;
    let status = response.status().as_u16();
    let version = version_name(response.version());
    let headers = headers_json(response.headers());
    let (body, trailers) = read_body(response.into_body(), t).await?;
    let trailers = trailers.map_or_else(|| json!({}), |t| headers_json(&t));
    Ok(json!({
        "status": status,
        "version": version,
        "headers": headers,
        "trailers": trailers,
        "body": body_value(&body),
    }))
}

/// Splits a byte stream into lines, holding at most `max` bytes of an unfinished one.
#[derive(Debug)]
pub struct Lines {
    pending: Vec<u8>,
    max: usize,
}

impl Lines {
    pub fn new(max: usize) -> Self {
        Lines {
            pending: Vec::new(),
            max,
        }
    }

    /// The lines `data` completes (without their `\n`).
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        let mut lines = Vec::new();
        let mut rest = data;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            let (line, after) = rest.split_at(pos);
            let mut full = std::mem::take(&mut self.pending);
            full.extend_from_slice(line);
            lines.push(full);
            rest = after.get(1..).unwrap_or_default();
        }
        if self.pending.len() + rest.len() > self.max {
            return Err(format!("a line longer than {} bytes", self.max));
        }
        self.pending.extend_from_slice(rest);
        Ok(lines)
    }

    /// Whether an unfinished line is left.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

/// The index of a `{"chunk": i}` line.
pub fn chunk_index(line: &[u8]) -> Option<u64> {
    serde_json::from_slice::<Value>(line)
        .ok()?
        .get("chunk")?
        .as_u64()
}

/// Prints `{"cut_after": n, "error": ..}` and fails.
fn cut(received: u64, error: impl std::fmt::Display) -> anyhow::Result<()> {
    let error = error.to_string();
    emit(&json!({"cut_after": received, "error": error}))?;
    bail!("stream cut after {received} chunks: {error}")
}

/// GETs a streaming response and prints each chunk line as it arrives.
pub async fn stream(url: &str, opts: &ClientOptions) -> anyhow::Result<()> {
    let target = parse_target(url)?;
    let t = opts.timeout;
    let expected = query_number(&target.path, "chunks");
    // Chunks come `interval_ms` apart: wait that long on top of the timeout.
    let wait = t + Duration::from_millis(query_number(&target.path, "interval_ms").unwrap_or(0));
    let mut conn: Conn<Empty<Bytes>> = Conn::open(&target, opts.h2, t).await?;
    let req = build_request(&target, opts, Method::GET, Empty::new())?;
    let started = Instant::now();
    let response = timeout(t, conn.send(req))
        .await
        .map_err(|_| anyhow!("no response from {url} within {t:?}"))??;
    if response.status() != hyper::StatusCode::OK {
        bail!("{url} answered {} (not 200)", response.status());
    }
    let mut body = response.into_body();
    let mut lines = Lines::new(MAX_LINE);
    let mut received = 0u64;
    while received < MAX_CHUNKS {
        let frame = match timeout(wait, body.frame()).await {
            Err(_) => return cut(received, format!("no chunk within {wait:?}")),
            Ok(None) => break,
            Ok(Some(Err(e))) => return cut(received, format!("{:#}", anyhow::Error::from(e))),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        let complete = match lines.push(&data) {
            Ok(complete) => complete,
            Err(e) => return cut(received, e),
        };
        for line in complete {
            match chunk_index(&line) {
                Some(i) if i == received => {
                    let at_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    emit(&json!({"chunk": i, "at_ms": at_ms}))?;
                    received += 1;
                }
                Some(i) => return cut(received, format!("chunk {i} where {received} was due")),
                None => {
                    let shown = String::from_utf8_lossy(&line);
                    return cut(received, format!("not a chunk line: {shown:?}"));
                }
            }
        }
    }
    if lines.has_pending() {
        return cut(received, "the body ended inside a line");
    }
    if let Some(n) = expected {
        if received != n {
            return cut(
                received,
                format!("the body ended after {received} of {n} chunks"),
            );
        }
    }
    emit(&json!({"done": received}))
}

/// POSTs `bytes` pseudo-random bytes as they are generated and prints the response body.
pub async fn upload(url: &str, bytes: u64, opts: &ClientOptions) -> anyhow::Result<()> {
    let target = parse_target(url)?;
    let t = opts.timeout;
    let sent = Arc::new(AtomicU64::new(0));
    let seed = u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15;
    let body = RandomBody::new(bytes, seed, sent.clone());
    let mut conn: Conn<RandomBody> = Conn::open(&target, opts.h2, t).await?;
    let mut req = build_request(&target, opts, Method::POST, body)?;
    req.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/octet-stream"),
    );
    let answer = conn.send(req);
    tokio::pin!(answer);
    // Each pass either ends or saw bytes leave: bounded by the size of the upload.
    let mut last = 0u64;
    let response = loop {
        tokio::select! {
            response = &mut answer => break response?,
            () = tokio::time::sleep(t) => {
                let now = sent.load(Ordering::Relaxed);
                if now == last {
                    bail!("upload stalled: {now} of {bytes} bytes sent and no answer for {t:?}");
                }
                last = now;
            }
        }
    };
    let status = response.status();
    let (body, _) = read_body(response.into_body(), t).await?;
    let text = String::from_utf8_lossy(&body);
    emit_line(text.trim_end())?;
    if !status.is_success() {
        bail!(
            "{url} answered {status} after {} bytes sent",
            sent.load(Ordering::Relaxed)
        );
    }
    Ok(())
}

/// Prints a line as it is (a body that is already JSON).
fn emit_line(line: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use hyper::header::{HeaderName, HeaderValue};

    use super::*;

    #[test]
    fn urls_name_their_target() {
        let t = |host: &str, port, authority: &str, path: &str| Target {
            host: host.into(),
            port,
            authority: authority.into(),
            path: path.into(),
        };
        let cases: &[(&str, Result<Target, &str>)] = &[
            (
                "http://10.0.0.1:9080/productpage",
                Ok(t("10.0.0.1", 9080, "10.0.0.1:9080", "/productpage")),
            ),
            ("http://reviews/", Ok(t("reviews", 80, "reviews", "/"))),
            ("http://reviews", Ok(t("reviews", 80, "reviews", "/"))),
            (
                "http://[fd00::1]:80/a?b=c",
                Ok(t("fd00::1", 80, "[fd00::1]:80", "/a?b=c")),
            ),
            (
                "https://a/",
                Err("\"https://a/\": scheme https is not served (only http)"),
            ),
            (
                "/just/a/path",
                Err("\"/just/a/path\" has no scheme (write http://host:port/path)"),
            ),
        ];
        for (url, want) in cases {
            let got = parse_target(url).map_err(|e| e.to_string());
            assert_eq!(got, want.clone().map_err(String::from), "{url}");
        }
    }

    #[test]
    fn query_numbers() {
        let cases = [
            ("/stream?chunks=5&interval_ms=20", "chunks", Some(5)),
            ("/stream?chunks=5&interval_ms=20", "interval_ms", Some(20)),
            ("/stream?chunks=x", "chunks", None),
            ("/stream", "chunks", None),
            ("/stream?xchunks=3", "chunks", None),
        ];
        for (path, key, want) in cases {
            assert_eq!(query_number(path, key), want, "{path} {key}");
        }
    }

    #[test]
    fn requests_carry_the_authority_by_version() {
        let target = parse_target("http://reviews:9080/r?x=1").unwrap();
        let host = (
            HeaderName::from_static("host"),
            HeaderValue::from_static("other:1"),
        );
        let user = (
            HeaderName::from_static("end-user"),
            HeaderValue::from_static("jason"),
        );
        let cases = [
            (false, vec![], "/r?x=1", Some("reviews:9080")),
            (
                false,
                vec![host.clone(), user.clone()],
                "/r?x=1",
                Some("other:1"),
            ),
            (true, vec![], "http://reviews:9080/r?x=1", None),
            (true, vec![host, user], "http://other:1/r?x=1", None),
        ];
        for (h2, headers, uri, host_header) in cases {
            let opts = ClientOptions {
                h2,
                headers: headers.clone(),
                ..ClientOptions::default()
            };
            let req = build_request(&target, &opts, Method::GET, ()).unwrap();
            assert_eq!(req.uri().to_string(), uri, "h2={h2} {headers:?}");
            assert_eq!(
                req.headers().get(HOST).map(|v| v.to_str().unwrap()),
                host_header,
                "h2={h2} {headers:?}"
            );
            if !headers.is_empty() {
                assert_eq!(req.headers().get("end-user").unwrap(), "jason");
            }
        }
    }

    #[test]
    fn lines_split_across_frames() {
        type Case<'a> = (&'a [&'a [u8]], &'a [&'a [u8]], bool);
        let cases: &[Case] = &[
            (&[b"{\"chunk\": 0}\n"], &[b"{\"chunk\": 0}"], false),
            (&[b"a\nb", b"c\n", b"d"], &[b"a", b"bc"], true),
            (&[b"\n\n"], &[b"", b""], false),
            (&[b"ab", b"cd", b"\nef\n"], &[b"abcd", b"ef"], false),
        ];
        for (frames, want, pending) in cases {
            let mut lines = Lines::new(16);
            let mut got = Vec::new();
            for frame in *frames {
                got.extend(lines.push(frame).unwrap());
            }
            let want: Vec<Vec<u8>> = want.iter().map(|l| l.to_vec()).collect();
            assert_eq!(got, want, "{frames:?}");
            assert_eq!(lines.has_pending(), *pending, "{frames:?}");
        }
        let mut lines = Lines::new(4);
        assert!(lines.push(b"abc").is_ok());
        assert!(
            lines.push(b"de").is_err(),
            "an unfinished line past the bound is refused"
        );
    }

    #[test]
    fn chunk_lines() {
        let cases: &[(&[u8], Option<u64>)] = &[
            (b"{\"chunk\": 3}", Some(3)),
            (b"{\"chunk\":0,\"x\":1}", Some(0)),
            (b"{\"chunk\": -1}", None),
            (b"{\"other\": 3}", None),
            (b"upstream connect error", None),
        ];
        for (line, want) in cases {
            assert_eq!(
                chunk_index(line),
                *want,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn tallies_count_answers_and_failures() {
        let mut tally = Tally {
            connections: 1,
            ..Tally::default()
        };
        tally.answered(200, "v1".into());
        tally.answered(200, "v2".into());
        tally.answered(503, "-".into());
        tally.answered(200, "v1".into());
        tally.failed(&anyhow!("first"));
        tally.failed(&anyhow!("second"));
        assert_eq!(
            tally.to_json(),
            json!({"servers": {"v1": 2, "v2": 1, "-": 1}, "statuses": {"200": 3, "503": 1},
                "errors": 2, "connections": 1, "first_error": "first"})
        );
        assert_eq!(
            Tally::default().to_json(),
            json!({"servers": {}, "statuses": {}, "errors": 0, "connections": 0})
        );
    }
}
