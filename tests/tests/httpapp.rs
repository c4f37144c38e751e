//! `mesh-httpapp` against its own servers on loopback, every mode (HTTP/1.1, HTTP/2, WebSocket,
//! gRPC unary, streaming and error, streaming responses, a cut stream, a 64 MiB upload in
//! bounded memory, trailers, counting, concurrent load, injected failures and delays, stats), so
//! the app is known good before the waypoint's tests use it. No root needed: servers bind
//! 127.0.0.1 on a free port the kernel picks, and the tests read it from the server's first line.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context};
use serde_json::{json, Value};

const APP: &str = env!("CARGO_BIN_EXE_mesh-httpapp");
/// The longest a server may take to listen, and a client to finish.
const START_BOUND: Duration = Duration::from_secs(10);
const RUN_BOUND: Duration = Duration::from_secs(60);

/// A server process, killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    /// Starts `mesh-httpapp <mode> 127.0.0.1:0 <name>` and waits for its `listening` line.
    fn start(mode: &str, name: &str) -> anyhow::Result<Server> {
        Server::start_with(mode, name, &[])
    }

    /// [`Server::start`] with options after the name.
    fn start_with(mode: &str, name: &str, options: &[&str]) -> anyhow::Result<Server> {
        let mut child = Command::new(APP)
            .args([mode, "127.0.0.1:0", name])
            .args(options)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting mesh-httpapp")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut server = Server { child, port: 0 };
        let line = first_line(stdout, START_BOUND)?;
        let v: Value = serde_json::from_str(&line).with_context(|| format!("{line:?}"))?;
        ensure!(v["name"] == name, "listening line {v}");
        server.port = v["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .with_context(|| format!("no port in {v}"))?;
        Ok(server)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A line of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
    fn memory_kib(&self, field: &str) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {field} in /proc/{}/status", self.child.id()))
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The first line a process prints, within `bound`; the rest of its output is drained.
fn first_line(stdout: ChildStdout, bound: Duration) -> anyhow::Result<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        for _ in lines {}
    });
    match rx.recv_timeout(bound) {
        Ok(Some(Ok(line))) => Ok(line),
        Ok(_) => bail!("the server exited before listening"),
        Err(_) => bail!("the server did not listen within {bound:?}"),
    }
}

/// What a client run printed.
#[derive(Debug)]
struct Run {
    status: ExitStatus,
    lines: Vec<Value>,
    stderr: String,
}

impl Run {
    /// The only line of a successful run.
    fn one(&self) -> anyhow::Result<&Value> {
        ensure!(
            self.status.success(),
            "exit {}: {}",
            self.status,
            self.stderr
        );
        match self.lines.as_slice() {
            [line] => Ok(line),
            other => bail!("expected one line, got {other:?}"),
        }
    }
}

/// Runs `mesh-httpapp <args>` to its end (killed after [`RUN_BOUND`]).
fn app(args: &[&str]) -> anyhow::Result<Run> {
    let mut child = Command::new(APP)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting mesh-httpapp")?;
    let mut stdout = child.stdout.take().context("no stdout")?;
    let mut stderr = child.stderr.take().context("no stderr")?;
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + RUN_BOUND;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("mesh-httpapp {args:?} still running after {RUN_BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = out.join().map_err(|_| anyhow!("stdout reader"))?;
    let stderr = err.join().map_err(|_| anyhow!("stderr reader"))?;
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l:?}")))
        .collect::<anyhow::Result<_>>()?;
    Ok(Run {
        status,
        lines,
        stderr,
    })
}

#[test]
fn http1_requests_are_described() -> anyhow::Result<()> {
    let server = Server::start("serve", "alpha")?;
    let run = app(&[
        "get",
        &server.url("/reviews/1?user=jason&x=1"),
        "-H",
        "end-user: jason",
        "-H",
        "x-multi: a",
        "-H",
        "x-multi: b",
        "-X",
        "DELETE",
    ])?;
    let v = run.one()?;
    assert_eq!(v["status"], 200);
    assert_eq!(v["version"], "HTTP/1.1");
    let body = &v["body"];
    assert_eq!(body["server"], "alpha");
    assert_eq!(body["version"], "HTTP/1.1");
    assert_eq!(body["method"], "DELETE");
    assert_eq!(body["path"], "/reviews/1?user=jason&x=1");
    assert_eq!(body["authority"], server.addr().as_str());
    assert_eq!(body["headers"]["end-user"], "jason");
    assert_eq!(body["headers"]["x-multi"], "a,b");
    assert_eq!(body["headers"]["host"], server.addr().as_str());
    assert_eq!(body["body_bytes"], 0);
    let peer = body["peer"].as_str().context("no peer")?;
    assert!(peer.starts_with("127.0.0.1:"), "peer {peer}");

    // A Host header replaces the authority.
    let run = app(&["get", &server.url("/"), "-H", "host: reviews.prod:9080"])?;
    assert_eq!(run.one()?["body"]["authority"], "reviews.prod:9080");
    Ok(())
}

#[test]
fn forwarding_copies_the_trace_headers() -> anyhow::Result<()> {
    let backend = Server::start("serve", "backend")?;
    let frontend = Server::start_with("serve", "frontend", &["--forward", &backend.url("/b")])?;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let run = app(&[
        "get",
        &frontend.url("/f"),
        "-H",
        &format!("traceparent: {traceparent}"),
        "-H",
        "x-b3-sampled: 1",
        "-H",
        "x-request-id: req-7",
        "-H",
        "end-user: jason",
    ])?;
    let v = run.one()?;
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["body"]["server"], "frontend");
    let forwarded = &v["body"]["forwarded"];
    assert_eq!(forwarded["status"], 200, "{v}");
    let seen = &forwarded["body"];
    assert_eq!(seen["server"], "backend");
    assert_eq!(seen["path"], "/b");
    assert_eq!(seen["headers"]["traceparent"], traceparent);
    assert_eq!(seen["headers"]["x-b3-sampled"], "1");
    assert_eq!(seen["headers"]["x-request-id"], "req-7");
    assert_eq!(
        seen["headers"]["end-user"],
        Value::Null,
        "only trace headers go on"
    );

    // The called service gone: 502 with the reason.
    drop(backend);
    let run = app(&["get", &frontend.url("/f")])?;
    let v = run.one()?;
    assert_eq!(v["status"], 502, "{v}");
    assert!(v["body"]["forward_error"].is_string(), "{v}");
    Ok(())
}

#[test]
fn http2_prior_knowledge_on_the_same_port() -> anyhow::Result<()> {
    let server = Server::start("serve", "alpha")?;
    let run = app(&["get", &server.url("/h2?a=b"), "--h2", "-H", "x-test: 2"])?;
    let v = run.one()?;
    assert_eq!(v["version"], "HTTP/2.0");
    assert_eq!(v["body"]["version"], "HTTP/2.0");
    assert_eq!(v["body"]["path"], "/h2?a=b");
    assert_eq!(v["body"]["authority"], server.addr().as_str());
    assert_eq!(v["body"]["headers"]["x-test"], "2");

    let run = app(&["get", &server.url("/"), "--h2", "-H", "host: ratings:9080"])?;
    assert_eq!(run.one()?["body"]["authority"], "ratings:9080");
    Ok(())
}

#[test]
fn statuses_and_trailers() -> anyhow::Result<()> {
    let server = Server::start("serve", "alpha")?;
    let v = app(&["get", &server.url("/status/418")])?.one()?.clone();
    assert_eq!(v["status"], 418);
    assert_eq!(v["body"]["server"], "alpha");
    assert_eq!(v["body"]["path"], "/status/418");

    let v = app(&["get", &server.url("/status/204")])?.one()?.clone();
    assert_eq!(
        (v["status"].clone(), v["body"].clone()),
        (json!(204), json!(""))
    );

    let v = app(&["get", &server.url("/status/abc")])?.one()?.clone();
    assert_eq!(v["status"], 400);

    // HTTP/1.1 sends trailers only to a client that said it takes them.
    for extra in [&["--h2"][..], &["-H", "te: trailers"]] {
        let url = server.url("/trailers");
        let mut args = vec!["get", url.as_str()];
        args.extend_from_slice(extra);
        let v = app(&args)?.one()?.clone();
        assert_eq!(v["status"], 200, "{extra:?}");
        assert_eq!(v["body"]["server"], "alpha", "{extra:?}");
        assert_eq!(v["trailers"], json!({"x-served-by": "alpha"}), "{extra:?}");
    }
    Ok(())
}

#[test]
fn count_keeps_one_connection_and_tallies() -> anyhow::Result<()> {
    let server = Server::start("serve", "alpha")?;
    let v = app(&["count", &server.url("/"), "50", "-H", "end-user: jason"])?
        .one()?
        .clone();
    assert_eq!(
        v,
        json!({"servers": {"alpha": 50}, "statuses": {"200": 50}, "errors": 0, "connections": 1})
    );
    let v = app(&["count", &server.url("/status/503"), "20", "--h2"])?
        .one()?
        .clone();
    assert_eq!(
        v,
        json!({"servers": {"alpha": 20}, "statuses": {"503": 20}, "errors": 0, "connections": 1})
    );
    Ok(())
}

/// The server's `/stats` body.
fn stats(server: &Server) -> anyhow::Result<Value> {
    Ok(app(&["get", &server.url("/stats")])?.one()?["body"].clone())
}

/// The server's `/stats` once `connections_now` is `want` (connections close as the server sees
/// them end), within [`START_BOUND`].
fn stats_when_open(server: &Server, want: u64) -> anyhow::Result<Value> {
    let deadline = Instant::now() + START_BOUND;
    loop {
        let v = stats(server)?;
        if v["connections_now"] == want {
            return Ok(v);
        }
        ensure!(
            Instant::now() < deadline,
            "connections_now never {want}: {v}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn load_spreads_requests_over_workers_and_the_fail_share_holds() -> anyhow::Result<()> {
    let server = Server::start_with("serve", "alpha", &["--fail-percent", "50"])?;
    let v = app(&["load", &server.url("/"), "200", "--concurrency", "8"])?
        .one()?
        .clone();
    assert_eq!(v["statuses"], json!({"200": 100, "503": 100}), "{v}");
    assert_eq!(v["servers"], json!({"alpha": 200}), "{v}");
    assert_eq!(
        (&v["errors"], &v["connections"]),
        (&json!(0), &json!(8)),
        "{v}"
    );
    for key in ["p50_ms", "p99_ms", "max_ms"] {
        assert!(v[key].as_f64().is_some_and(|ms| ms > 0.0), "{key} in {v}");
    }
    assert!(v["p50_ms"].as_f64() <= v["p99_ms"].as_f64(), "{v}");
    assert!(v["p99_ms"].as_f64() <= v["max_ms"].as_f64(), "{v}");
    assert!(v.get("first_error").is_none(), "{v}");

    // The count goes on across clients: 50% of the next 10 too, over HTTP/2 this time.
    let v = app(&[
        "load",
        &server.url("/x"),
        "10",
        "--concurrency",
        "2",
        "--h2",
    ])?
    .one()?
    .clone();
    assert_eq!(v["statuses"], json!({"200": 5, "503": 5}), "{v}");

    // /stats is neither counted nor failed; its own connection is the one open.
    let v = stats_when_open(&server, 1)?;
    assert_eq!(v["server"], "alpha");
    assert_eq!(v["requests"], 210, "{v}");
    let total = v["connections_total"].as_u64().context("total")?;
    assert!(total >= 11, "8 + 2 load connections and this one: {v}");
    let max = v["connections_max"].as_u64().context("max")?;
    assert!((2..=total).contains(&max), "{v}");

    let server = Server::start_with("serve", "all", &["--fail-percent", "100"])?;
    let v = app(&["count", &server.url("/"), "4"])?.one()?.clone();
    assert_eq!(v["statuses"], json!({"503": 4}), "{v}");
    assert_eq!(
        v["servers"],
        json!({"all": 4}),
        "the 503 carries the JSON body: {v}"
    );
    Ok(())
}

#[test]
fn delays_hold_answers_and_timeouts_cut_them() -> anyhow::Result<()> {
    let server = Server::start_with("serve", "slow", &["--delay-ms", "150"])?;
    let v = app(&["load", &server.url("/"), "4", "--concurrency", "4"])?
        .one()?
        .clone();
    assert_eq!(v["statuses"], json!({"200": 4}), "{v}");
    let p50 = v["p50_ms"].as_f64().context("p50")?;
    assert!(p50 >= 150.0, "every answer after 150 ms: {v}");

    // /delay/<ms> adds to the server's delay.
    let v = app(&["load", &server.url("/delay/200"), "1"])?
        .one()?
        .clone();
    let max = v["max_ms"].as_f64().context("max")?;
    assert!(max >= 350.0, "{v}");

    // A timeout shorter than the delay: an error, no latency.
    let v = app(&[
        "load",
        &server.url("/delay/2000"),
        "2",
        "--concurrency",
        "2",
        "--timeout-ms",
        "200",
    ])?
    .one()?
    .clone();
    assert_eq!(
        (&v["errors"], &v["statuses"]),
        (&json!(2), &json!({})),
        "{v}"
    );
    assert_eq!(v["max_ms"], Value::Null, "{v}");
    let first = v["first_error"].as_str().context("first_error")?;
    assert!(first.contains("no response within 200ms"), "{v}");

    let v = app(&["get", &server.url("/delay/60001")])?.one()?.clone();
    assert_eq!(v["status"], 400, "{v}");

    // /stats answers at once, counting the 4 + 1 + 2 + 1 requests before it.
    let started = Instant::now();
    let v = stats(&server)?;
    assert!(started.elapsed() < Duration::from_millis(150) * 5, "{v}");
    assert_eq!(v["requests"], 8, "{v}");
    Ok(())
}

/// An HTTP/1.1 server answering `hello` (not JSON) to `n` requests: all on one keep-alive
/// connection, or with `close` one per connection (`Connection: close`); its address.
fn plain_text_server(
    n: usize,
    close: bool,
) -> anyhow::Result<(String, std::thread::JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?.to_string();
    let handle = std::thread::spawn(move || {
        let (connections, per_connection) = if close { (n, 1) } else { (1, n) };
        for _ in 0..connections {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            answer_hello(stream, per_connection, close);
        }
    });
    Ok((addr, handle))
}

fn answer_hello(stream: std::net::TcpStream, n: usize, close: bool) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let answer: &[u8] = if close {
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 5\r\n\r\nhello"
    } else {
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
    };
    for _ in 0..n {
        // Read a head (a GET has no body).
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => {}
            }
        }
        if writer.write_all(answer).is_err() {
            return;
        }
    }
}

#[test]
fn count_puts_other_bodies_under_dash_and_failures_under_errors() -> anyhow::Result<()> {
    let (addr, server) = plain_text_server(7, false)?;
    let v = app(&["count", &format!("http://{addr}/"), "7"])?
        .one()?
        .clone();
    assert_eq!(
        v,
        json!({"servers": {"-": 7}, "statuses": {"200": 7}, "errors": 0, "connections": 1})
    );
    let _ = server.join();

    // Nothing listens there any more: every request fails, and count still reports.
    let v = app(&["count", &format!("http://{addr}/"), "3"])?
        .one()?
        .clone();
    assert_eq!(v["errors"], 3, "{v}");
    assert_eq!(v["connections"], 0, "{v}");
    assert_eq!(v["servers"], json!({}), "{v}");
    assert!(
        v["first_error"]
            .as_str()
            .is_some_and(|e| e.contains("refused")),
        "{v}"
    );

    // A server that closes after each answer: a new connection each time, no error.
    let (addr, server) = plain_text_server(4, true)?;
    let v = app(&["count", &format!("http://{addr}/"), "4"])?
        .one()?
        .clone();
    assert_eq!(
        v,
        json!({"servers": {"-": 4}, "statuses": {"200": 4}, "errors": 0, "connections": 4})
    );
    let _ = server.join();
    Ok(())
}

#[test]
fn websocket_messages_are_echoed() -> anyhow::Result<()> {
    let server = Server::start("serve", "alpha")?;
    let ws_url = format!("ws://{}/ws", server.addr());
    let v = app(&["ws", &ws_url, "25"])?.one()?.clone();
    assert_eq!(v, json!({"ok": 25, "server": "alpha"}));
    // An http:// URL names the same endpoint.
    let v = app(&["ws", &server.url("/ws"), "1"])?.one()?.clone();
    assert_eq!(v, json!({"ok": 1, "server": "alpha"}));
    // A path that does not upgrade fails the client.
    let run = app(&["ws", &format!("ws://{}/", server.addr()), "1"])?;
    assert!(!run.status.success(), "{run:?}");
    assert!(run.lines.is_empty(), "{run:?}");
    Ok(())
}

#[test]
fn grpc_unary_streaming_and_status() -> anyhow::Result<()> {
    let server = Server::start("grpc-serve", "beta")?;
    let addr = server.addr();
    let v = app(&["grpc", &addr, "say", "hello"])?.one()?.clone();
    assert_eq!(v, json!({"reply": "beta: hello"}));

    let started = Instant::now();
    let v = app(&["grpc", &addr, "count", "10"])?.one()?.clone();
    assert_eq!(v, json!({"messages": 10, "server": "beta"}));
    // 20 ms between messages: the stream took at least 9 gaps.
    assert!(
        started.elapsed() >= Duration::from_millis(180),
        "{:?}",
        started.elapsed()
    );

    let run = app(&["grpc", &addr, "say", "fail"])?;
    let v = run.one()?;
    assert_eq!(v["code"], "unavailable", "{v}");

    let run = app(&["grpc", &addr, "count", "20000"])?;
    assert_eq!(run.one()?["code"], "invalid_argument");

    // A transport error is not a status: exit 1, nothing on stdout.
    drop(server);
    let run = app(&["grpc", &addr, "say", "hello"])?;
    assert!(!run.status.success(), "{run:?}");
    assert!(run.lines.is_empty(), "{run:?}");
    Ok(())
}

/// The chunk lines of a `stream` run: 0.. in order, none before it was sent (`interval_ms`
/// apart), and spread over time as sent, not delivered together at the end.
fn check_chunks(lines: &[Value], n: u64, interval_ms: u64) -> anyhow::Result<()> {
    let chunks: Vec<&Value> = lines.iter().filter(|l| l.get("chunk").is_some()).collect();
    ensure!(chunks.len() as u64 == n && n >= 2, "{lines:?}");
    let mut at = Vec::new();
    for (i, line) in chunks.iter().enumerate() {
        ensure!(line["chunk"] == i, "{line}");
        let t = line["at_ms"].as_u64().context("no at_ms")?;
        ensure!(
            t + 5 >= i as u64 * interval_ms,
            "chunk {i} at {t} ms, before it was sent"
        );
        at.push(t);
    }
    let span = at.last().copied().unwrap_or(0) - at.first().copied().unwrap_or(0);
    ensure!(
        span >= (n - 1) * interval_ms / 2,
        "chunks arrived within {span} ms: {at:?}"
    );
    ensure!(lines.last() == Some(&json!({"done": n})), "{lines:?}");
    Ok(())
}

#[test]
fn streams_arrive_chunk_by_chunk() -> anyhow::Result<()> {
    let server = Server::start("serve", "alpha")?;
    let url = server.url("/stream?chunks=5&interval_ms=100");
    for extra in [None, Some("--h2")] {
        let mut args = vec!["stream", url.as_str()];
        args.extend(extra);
        let run = app(&args)?;
        assert!(run.status.success(), "{run:?}");
        check_chunks(&run.lines, 5, 100)?;
    }
    Ok(())
}

#[test]
fn a_cut_stream_is_reported() -> anyhow::Result<()> {
    let mut server = Server::start("serve", "alpha")?;
    let mut client = Command::new(APP)
        .args(["stream", &server.url("/stream?chunks=1000&interval_ms=20")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = client.stdout.take().context("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut lines = Vec::new();
    for _ in 0..3 {
        lines.push(rx.recv_timeout(START_BOUND).context("no chunk line")?);
    }
    server.kill();
    let deadline = Instant::now() + START_BOUND;
    let status = loop {
        if let Some(status) = client.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = client.kill();
            bail!("the client did not notice the cut within {START_BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // The rest of its output, up to EOF (the reader thread then drops its sender).
    while let Ok(line) = rx.recv_timeout(START_BOUND) {
        lines.push(line);
    }
    assert!(!status.success(), "{lines:?}");
    let last: Value = serde_json::from_str(lines.last().context("no lines")?)?;
    let cut_after = last["cut_after"]
        .as_u64()
        .with_context(|| format!("{last}"))?;
    assert!(cut_after >= 3, "{last}");
    assert_eq!(cut_after as usize, lines.len() - 1, "{lines:?}");
    assert!(
        last["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{last}"
    );
    Ok(())
}

#[test]
fn uploads_stream_in_bounded_memory() -> anyhow::Result<()> {
    const BYTES: u64 = 64 << 20;
    let server = Server::start("serve", "alpha")?;
    let before = server.memory_kib("VmRSS")?;
    for extra in [None, Some("--h2")] {
        let bytes = BYTES.to_string();
        let url = server.url("/upload");
        let mut args = vec!["upload", url.as_str(), bytes.as_str()];
        args.extend(extra);
        let v = app(&args)?.one()?.clone();
        assert_eq!(v, json!({"bytes": BYTES, "server": "alpha"}), "{extra:?}");
    }
    // The whole upload, had it been buffered, would be 64 MiB of it.
    let peak = server.memory_kib("VmHWM")?;
    assert!(
        peak < before + 16 * 1024,
        "server peak RSS {peak} KiB, {before} KiB before two 64 MiB uploads"
    );

    // A plain request counts its body too.
    let v = app(&["upload", &server.url("/anything"), "1000"])?
        .one()?
        .clone();
    assert_eq!(v["body_bytes"], 1000);
    assert_eq!(v["method"], "POST");
    assert_eq!(v["headers"]["transfer-encoding"], "chunked");
    Ok(())
}

#[test]
fn usage_errors_exit_1() -> anyhow::Result<()> {
    for args in [
        &["serve"][..],
        &["count", "http://127.0.0.1:1/", "x"],
        &["dance"],
    ] {
        let run = app(args)?;
        assert_eq!(run.status.code(), Some(1), "{args:?}");
        assert!(run.stderr.contains("usage:"), "{args:?}: {}", run.stderr);
        assert!(run.lines.is_empty(), "{args:?}");
    }
    Ok(())
}
