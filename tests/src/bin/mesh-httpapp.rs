//! An L7 test application for the waypoint's end-to-end tests (HTTP/1.1, HTTP/2, WebSocket,
//! gRPC), run inside the local cluster's pods. Output on stdout is machine-readable: one JSON
//! object per line. Errors go to stderr and the exit code is 1; a usage error too.
//!
//! Servers (`<port>` is a port, served dual-stack on `[::]` with v6only off, or an `ip:port` to
//! bind only there; port 0 picks a free one). Once listening a server prints
//! `{"listening": "<ip:port>", "port": <port>, "name": "<name>"}`, then runs until killed.
//! `<name>` is 1 to 64 characters of `A-Za-z0-9._-`.
//! - `mesh-httpapp serve <port> <name> [--fail-percent N] [--delay-ms M] [--forward URL]`: HTTP/1.1 (keep-alive,
//!   chunked) and HTTP/2 cleartext with prior knowledge on the same port. Every request is
//!   answered 200 with the JSON body
//!   `{"server": name, "version": "HTTP/1.1"|"HTTP/2.0", "method", "path" (with the query),
//!   "authority" (`:authority`, else Host), "headers": {lower-case name: value, repeated values
//!   joined by ","}, "peer": "ip:port", "body_bytes": n}`; the request body is consumed as it
//!   streams and counted, never buffered. Except:
//!   - `/status/<code>` (200..=599): the same JSON with that status (no body for 204 and 304);
//!   - `/stream?chunks=N&interval_ms=M` (defaults 10 and 100, at most 1,000,000 and 60,000):
//!     N lines `{"chunk": i}` (i from 0), one every M ms;
//!   - `/upload`: counts the body as it arrives (memory bounded) and answers
//!     `{"server": name, "bytes": n}`;
//!   - `/ws`: a WebSocket upgrade (HTTP/1.1 only); every message is echoed prefixed `<name>: `
//!     (text and binary alike);
//!   - `/trailers`: the JSON body, then the trailer `x-served-by: <name>` (HTTP/2; on HTTP/1.1
//!     only for a request that sent `TE: trailers`);
//!   - `/delay/<ms>` (at most 60,000): the JSON, answered after that many milliseconds;
//!   - `GET /stats`: `{"server": name, "requests": n (requests seen, `/stats` ones excluded),
//!     "connections_now": c, "connections_max": m (the most open at once since the start),
//!     "connections_total": t}`; never delayed nor failed;
//!   - a bad `/status` code, `/delay` or `/stream` query: 400 `{"server": name, "error": ...}`.
//!
//!   With `--forward <url>`, an echoed request (any path but the special ones) first makes a
//!   GET to `<url>` carrying the trace headers of the request it serves (`x-request-id`,
//!   `traceparent`, `tracestate`, `x-b3-traceid`, `x-b3-spanid`, `x-b3-parentspanid`,
//!   `x-b3-sampled`, `x-b3-flags`, `b3`), as Istio asks applications to, and answers the echo
//!   with that call's result (as `get` prints it) under `"forwarded"`; a failed call answers
//!   502 with `"forward_error"`.
//!
//!   Faults on purpose (every request but `/stats`): `--delay-ms M` (at most 60,000) answers
//!   each after M ms (added to a `/delay/<ms>`; a streamed body then streams as usual);
//!   `--fail-percent N` (0..=100) answers that share 503 with the JSON body instead of what the
//!   path asks, spread evenly and deterministically in arrival order: request i (from 0) fails
//!   when floor((i+1)·N/100) > floor(i·N/100), so 50 fails every second one, and any 100
//!   consecutive requests hold exactly N failures.
//! - `mesh-httpapp grpc-serve <port> <name>`: the gRPC service `echo.Echo`
//!   (`tests/proto/echo.proto`): unary `Say(Msg) -> Msg` answers `<name>: <text>`, and the text
//!   `fail` answers status `unavailable`; server-streaming `Count(CountReq{n}) -> stream Msg`
//!   sends n messages `<name>: <i>` (i from 0), 20 ms apart (n at most 10,000).
//!
//! Clients (`<url>` is `http://host:port/path?query`; every wait, connect included, has a
//! timeout, 5 s unless `--timeout-ms <ms>` says otherwise; `-H 'name: value'` adds a request
//! header, a `host` one replacing the authority; `--h2` speaks HTTP/2 with prior knowledge):
//! - `mesh-httpapp count <url> <n> [-H ..]... [--h2]`: n GETs one after another on one keep-alive
//!   connection (a new one only after a failed request or when the server closed it); prints
//!   `{"servers": {name: count}, "statuses": {"code": count}, "errors": k, "connections": c}`
//!   (plus `"first_error": "..."` when k > 0), where a response whose body is not JSON with a
//!   string `server` counts under server `"-"`, and a request with no response counts in `errors`
//!   only. Exits 0 whatever the responses were.
//! - `mesh-httpapp load <url> <n> [--concurrency C] [-H ..]... [--h2]`: n GETs over C (default 1,
//!   at most 1,000) concurrent workers, each on its own keep-alive connection (a new one after a
//!   failed request or when the server closed it); prints one line `{"statuses": {"code": count},
//!   "servers": {name: count}, "errors": k, "connections": c, "p50_ms": .., "p99_ms": ..,
//!   "max_ms": ..}` (plus `"first_error"` when k > 0), counted as `count` does; the latencies
//!   (milliseconds, µs precision, nearest-rank percentiles; null with no response) are those of
//!   the responses only, from sending a request to the end of its body. Exits 0 whatever the
//!   responses were.
//! - `mesh-httpapp get <url> [-H ..]... [--h2] [-X <method>]`: one request; prints
//!   `{"status": code, "version": .., "headers": {..}, "trailers": {..}, "body": <the body as
//!   JSON if it is JSON, else as a string>}` (body read up to 1 MiB); exits 0 for any response.
//! - `mesh-httpapp ws <url> <n>`: WebSocket client (`ws://` or `http://`), sends n text messages
//!   `message <i>`, checks each echo is `<name>: message <i>` from one server; prints
//!   `{"ok": n, "server": name}`.
//! - `mesh-httpapp grpc <addr> say <text>` / `mesh-httpapp grpc <addr> count <n>` (`<addr>` is
//!   `host:port`): print `{"reply": "<name>: <text>"}` / `{"messages": n, "server": name}`; a gRPC
//!   error status (from the server, or inferred from a proxy's HTTP status) prints
//!   `{"code": "<code>", "message": ".."}` with exit 0, `<code>` in lower snake case (`ok`,
//!   `cancelled`, `unknown`, `invalid_argument`, `deadline_exceeded`, `not_found`,
//!   `already_exists`, `permission_denied`, `resource_exhausted`, `failed_precondition`,
//!   `aborted`, `out_of_range`, `unimplemented`, `internal`, `unavailable`, `data_loss`,
//!   `unauthenticated`); a transport error (connect, reset, timeout) exits 1.
//! - `mesh-httpapp stream <url> [-H ..]... [--h2]`: GET a streaming response (`/stream`) and print
//!   `{"chunk": i, "at_ms": t}` for each chunk line as it arrives (t since the request was sent),
//!   then `{"done": n}` and exit 0 at a clean end; cut before the end (a reset, a silence longer
//!   than the timeout plus the URL's `interval_ms`, fewer chunks than the URL's `chunks`, a chunk
//!   out of order) prints `{"cut_after": <chunks received>, "error": ".."}` and exits 1. A status
//!   other than 200 exits 1.
//! - `mesh-httpapp upload <url> <bytes> [-H ..]... [--h2]`: POSTs that many pseudo-random bytes as
//!   a chunked body generated as it is sent (never buffered whole), prints the response body
//!   (one line); exits 1 unless the status is 2xx. The timeout applies to stalls (no byte sent
//!   and no answer for that long), not to the whole upload.
//!
//! Server-side waits (request heads, body frames, WebSocket messages) time out after 30 s of
//! silence; a server holds at most 10,000 connections at once.

use std::process::ExitCode;

mod httpapp {
    pub mod args;
    pub mod client;
    pub mod grpc;
    pub mod json;
    pub mod load;
    pub mod net;
    pub mod random_body;
    pub mod server;
    pub mod ws;
}

use httpapp::args::{self, Command};
use httpapp::{client, grpc, load, net, server, ws};

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let command = match args::parse(&argv) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("mesh-httpapp: {e}\n{}", args::USAGE);
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("mesh-httpapp: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-httpapp: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { listen, name, opts } => {
            let listener = net::listen(&listen, &name)?;
            server::serve(listener, name, opts).await
        }
        Command::GrpcServe { listen, name } => {
            let listener = net::listen(&listen, &name)?;
            grpc::serve(listener, name).await
        }
        Command::Count { url, n, opts } => client::count(&url, n, &opts).await,
        Command::Load { url, n, opts } => load::load(&url, n, &opts).await,
        Command::Get { url, opts } => client::get(&url, &opts).await,
        Command::Stream { url, opts } => client::stream(&url, &opts).await,
        Command::Upload { url, bytes, opts } => client::upload(&url, bytes, &opts).await,
        Command::Ws { url, n, opts } => ws::client(&url, n, &opts).await,
        Command::GrpcSay { addr, text, opts } => grpc::say(&addr, &text, &opts).await,
        Command::GrpcCount { addr, n, opts } => grpc::count(&addr, n, &opts).await,
    }
}
