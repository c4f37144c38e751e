//! A tiny TCP application for the end-to-end tests, run inside the local cluster's pods.
//!
//! - `mesh-testapp serve <port> <name>`: dual-stack echo server; answers each line with
//!   `<name> peer=<peer> local=<local> says: <line>`; on UDP the same port answers each datagram.
//! - `mesh-testapp udp <addr> <message>`: sends one datagram from a connected UDP socket, prints
//!   the answer.
//! - `mesh-testapp connect <addr> <message>`: sends one line, prints the answer, exits 0; exits 1
//!   with the error on failure.
//! - `mesh-testapp burst <addr> <n>`: holds `n` connections open at once, one exchange on each;
//!   prints `ok <n>`, exits 1 if any failed.
//! - `mesh-testapp loop <addr> <seconds>`: one connection after another for that long; prints
//!   `ok <count> failed <count>`, exits 1 if any failed.
//! - `mesh-testapp hostile <addr> <n>`: `n` connections one after another, each sending one line
//!   and reading what comes back until EOF (1 s per step); prints how they ended:
//!   `app=<answered by the echo app> closed=<EOF or reset, nothing read> other=<other bytes,
//!   e.g. a TLS alert> open=<still open after 1 s> refused=<connect failed>`; always exits 0.
//! - `mesh-testapp silent <port> <seconds>`: dual-stack server that accepts connections and never
//!   answers (a peer that hangs a handshake), for `seconds`, then exits.
//! - `mesh-testapp chat <addr> <seconds>`: one connection to a `serve` server, one line every
//!   20 ms for that long, printing `reply <n>` for each answer (flushed), then `done <n>`; when the
//!   connection fails prints `closed after <n> at_us=<unix µs>: <error>` and exits 1.
//! - `mesh-testapp get <addr> <path>`: HTTP/1.0 GET, prints the body; exits 1 unless status 200.
//! - `mesh-testapp post <addr> <path>`: the same with POST (no body).
//! - `mesh-testapp status <method> <addr> <path>`: one HTTP/1.0 request (no body); prints the
//!   status code on the first line, then the body; exits 0 for any HTTP response, 1 if there was
//!   none (refused, closed, timed out).
//! - `mesh-testapp idle <addr> <n> <seconds>`: opens `n` connections and sends nothing on them
//!   (idle clients, slow-loris style), prints `ready <n>`, holds them until stdin closes or the
//!   time is up.
//! - `mesh-testapp stream <addr> <bytes>`: sends `bytes` of a pseudo-random pattern to an echo
//!   server on one connection while reading the echo back, checks every byte, prints
//!   `ok bytes=<n>`; exits 1 on any difference or error.
//!
//! For the benchmarks (`cargo xtask bench`):
//! - `mesh-testapp echo <port>`: dual-stack raw echo server (whatever arrives goes back), no delay.
//! - `mesh-testapp http <port>`: dual-stack HTTP/1.1 server answering every request with a small
//!   `200 OK`, keep-alive.
//! - `mesh-testapp pingpong <addr> <count> <size>`: one connection, `count` exchanges of `size`
//!   bytes (echo server); prints `count=N p50_us=.. p90_us=.. p99_us=.. mean_us=..` (round trips).
//! - `mesh-testapp crr <addr> <seconds>`: connect, 1-byte exchange, close, one after another for
//!   that long (echo server); prints `ok=N failed=N per_second=..`.
//! - `mesh-testapp hold <addr> <n> <seconds>`: opens `n` connections (one 1-byte exchange each),
//!   prints `ready <n>`, holds them idle for that long, then closes them and exits.
//! - `mesh-testapp tally <addr> <n> [<sni>]`: `n` connections one after another to a `serve`
//!   server, each sending one line (after a TLS ClientHello naming `<sni>`, when given: what a
//!   waypoint routes TLS by) and counting the answering server by name; prints
//!   `{"servers": {name: n}, "failed": k}`, exits 0.
//!
//! Every step has a 5 s timeout.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("serve") if args.len() == 4 => serve(&args[2], &args[3]),
        Some("connect") if args.len() == 4 => connect(&args[2], &args[3]),
        Some("get") if args.len() == 4 => http_request("GET", &args[2], &args[3]),
        Some("post") if args.len() == 4 => http_request("POST", &args[2], &args[3]),
        Some("status") if args.len() == 5 => http_status(&args[2], &args[3], &args[4]),
        Some("idle") if args.len() == 5 => idle(&args[2], &args[3], &args[4]),
        Some("stream") if args.len() == 4 => bench::stream(&args[2], &args[3]),
        Some("udp") if args.len() == 4 => udp(&args[2], &args[3]),
        Some("burst") if args.len() == 4 => burst(&args[2], &args[3]),
        Some("loop") if args.len() == 4 => repeat(&args[2], &args[3]),
        Some("hostile") if args.len() == 4 => hostile(&args[2], &args[3]),
        Some("chat") if args.len() == 4 => chat(&args[2], &args[3]),
        Some("silent") if args.len() == 4 => silent(&args[2], &args[3]),
        Some("echo") if args.len() == 3 => bench::echo_server(&args[2]),
        Some("http") if args.len() == 3 => bench::http_server(&args[2]),
        Some("pingpong") if args.len() == 5 => bench::pingpong(&args[2], &args[3], &args[4]),
        Some("crr") if args.len() == 4 => bench::crr(&args[2], &args[3]),
        Some("tally") if args.len() == 4 || args.len() == 5 => {
            tally(&args[2], &args[3], args.get(4).map(String::as_str))
        }
        Some("hold") if args.len() == 5 => bench::hold(&args[2], &args[3], &args[4]),
        _ => Err("usage: mesh-testapp serve <port> <name> | connect <addr> <message> | get <addr> <path>".into()),
    };
    if let Err(e) = result {
        eprintln!("mesh-testapp: {e}");
        std::process::exit(1);
    }
}

fn serve(port: &str, name: &str) -> Result<(), String> {
    let port: u16 = parse("port", port)?;
    let listener = TcpListener::bind(("::", port)).map_err(|e| format!("bind [::]:{port}: {e}"))?;
    let udp =
        std::net::UdpSocket::bind(("::", port)).map_err(|e| format!("bind udp {port}: {e}"))?;
    let udp_name = name.to_owned();
    std::thread::spawn(move || udp_echo(&udp, &udp_name));
    println!("listening on {port}");
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let name = name.to_owned();
        std::thread::spawn(move || answer(stream, &name));
    }
    Ok(())
}

/// Accepts and holds connections without reading or writing, until `seconds` have passed.
fn silent(port: &str, seconds: &str) -> Result<(), String> {
    let port: u16 = parse("port", port)?;
    let seconds: u64 = parse("seconds", seconds)?;
    let listener = TcpListener::bind(("::", port)).map_err(|e| format!("bind [::]:{port}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("nonblocking: {e}"))?;
    println!("listening on {port}");
    let end = std::time::Instant::now() + Duration::from_secs(seconds);
    let mut held = Vec::new();
    while std::time::Instant::now() < end {
        match listener.accept() {
            // Bounded: a test opens a handful.
            Ok((stream, _)) if held.len() < 1024 => held.push(stream),
            Ok(_) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    Ok(())
}

fn answer(stream: TcpStream, name: &str) {
    let _ = stream.set_read_timeout(Some(TIMEOUT));
    let peer = stream
        .peer_addr()
        .map(|a| unmap(a).to_string())
        .unwrap_or_default();
    let local = stream
        .local_addr()
        .map(|a| unmap(a).to_string())
        .unwrap_or_default();
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
        let reply = format!("{name} peer={peer} local={local} says: {}", line.trim_end());
        if writeln!(writer, "{reply}").is_err() {
            return;
        }
        line.clear();
    }
}

/// Parses a command-line value, naming it in the error.
fn parse<T: std::str::FromStr>(what: &str, value: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e| format!("bad {what} {value}: {e}"))
}

fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

fn exchange(addr: SocketAddr, message: &str) -> Result<(TcpStream, String), String> {
    let stream =
        TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    writeln!(writer, "{message}").map_err(|e| format!("send: {e}"))?;
    let mut reply = String::new();
    BufReader::new(stream.try_clone().map_err(|e| e.to_string())?)
        .read_line(&mut reply)
        .map_err(|e| format!("receive: {e}"))?;
    if reply.is_empty() {
        return Err(format!("{addr} closed the connection without answering"));
    }
    Ok((stream, reply))
}

/// A TLS 1.3 ClientHello record naming `sni` (the start of what a TLS client sends), ASCII
/// without a newline for a short name, so the line echo server reads it as part of a line.
fn client_hello(sni: &str) -> Vec<u8> {
    let name = sni.as_bytes();
    let mut exts = vec![0, 0];
    exts.extend_from_slice(&(name.len() as u16 + 5).to_be_bytes());
    exts.extend_from_slice(&(name.len() as u16 + 3).to_be_bytes());
    exts.push(0);
    exts.extend_from_slice(&(name.len() as u16).to_be_bytes());
    exts.extend_from_slice(name);
    exts.extend_from_slice(&[0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]);
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[b'r'; 32]);
    body.push(0);
    body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01, 0x01, 0x00]);
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut record = vec![22, 3, 1];
    record.extend_from_slice(&(body.len() as u16 + 4).to_be_bytes());
    record.push(1);
    record.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    record.extend_from_slice(&body);
    record
}

fn tally(addr: &str, n: &str, sni: Option<&str>) -> Result<(), String> {
    let addr: SocketAddr = parse("address", addr)?;
    let n: usize = parse("count", n)?;
    let hello = sni.map(client_hello).unwrap_or_default();
    if !hello.is_ascii() || hello.contains(&b'\n') {
        return Err(format!(
            "the ClientHello for {sni:?} is not one line of ASCII; use another name"
        ));
    }
    let prefix = String::from_utf8(hello).map_err(|e| e.to_string())?;
    let mut servers = std::collections::BTreeMap::<String, u64>::new();
    let mut failed = 0u64;
    for _ in 0..n {
        match exchange(addr, &format!("{prefix}tally")) {
            Ok((_, reply)) => {
                let name = reply
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                *servers.entry(name).or_default() += 1;
            }
            Err(_) => failed += 1,
        }
    }
    let servers: Vec<String> = servers.iter().map(|(k, v)| format!("{k:?}: {v}")).collect();
    println!(
        "{{\"servers\": {{{}}}, \"failed\": {failed}}}",
        servers.join(", ")
    );
    Ok(())
}

fn burst(addr: &str, n: &str) -> Result<(), String> {
    let addr: SocketAddr = parse("address", addr)?;
    let n: usize = parse("count", n)?;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let result = exchange(addr, &format!("burst {i}"));
                // Every connection stays open until all have exchanged.
                barrier.wait();
                result.map(|_| ())
            })
        })
        .collect();
    let mut failed = 0;
    for handle in handles {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("{e}");
                failed += 1;
            }
            Err(_) => failed += 1,
        }
    }
    if failed > 0 {
        return Err(format!("{failed} of {n} connections failed"));
    }
    println!("ok {n}");
    Ok(())
}

fn repeat(addr: &str, seconds: &str) -> Result<(), String> {
    let addr: SocketAddr = parse("address", addr)?;
    let seconds: u64 = parse("duration", seconds)?;
    let end = std::time::Instant::now() + Duration::from_secs(seconds);
    let (mut ok, mut failed) = (0u64, 0u64);
    while std::time::Instant::now() < end {
        match exchange(addr, "loop") {
            Ok(_) => ok += 1,
            Err(e) => {
                eprintln!("{e}");
                failed += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("ok {ok} failed {failed}");
    if failed > 0 {
        return Err(format!("{failed} connections failed"));
    }
    Ok(())
}

fn hostile(addr: &str, n: &str) -> Result<(), String> {
    use std::io::Read;
    let addr: SocketAddr = parse("address", addr)?;
    let n: u64 = parse("count", n)?;
    let step = Duration::from_secs(1);
    let (mut app, mut closed, mut other, mut open, mut refused) = (0u64, 0u64, 0u64, 0u64, 0u64);
    for _ in 0..n {
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, step) else {
            refused += 1;
            continue;
        };
        let _ = stream.set_read_timeout(Some(step));
        let _ = stream.set_write_timeout(Some(step));
        let _ = writeln!(stream, "hostile");
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        let still_open = loop {
            match stream.read(&mut buf) {
                Ok(0) => break false,
                Ok(k) if got.len() < 4096 => got.extend_from_slice(&buf[..k]),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break true
                }
                Err(_) => break false, // reset
            }
        };
        if String::from_utf8_lossy(&got).contains(" says: ") {
            app += 1;
        } else if still_open {
            open += 1;
        } else if got.is_empty() {
            closed += 1;
        } else {
            other += 1;
        }
    }
    println!("app={app} closed={closed} other={other} open={open} refused={refused}");
    Ok(())
}

fn chat(addr: &str, seconds: &str) -> Result<(), String> {
    let addr: SocketAddr = parse("address", addr)?;
    let seconds: u64 = parse("seconds", seconds)?;
    let stream =
        TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let end = std::time::Instant::now() + Duration::from_secs(seconds);
    let mut n = 0u64;
    let mut out = std::io::stdout();
    let mut line = String::new();
    while std::time::Instant::now() < end {
        line.clear();
        let result = writeln!(writer, "ping {n}")
            .and_then(|()| reader.read_line(&mut line))
            .and_then(|read| match read {
                0 => Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed by the peer",
                )),
                _ => Ok(()),
            });
        if let Err(e) = result {
            let at_us = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros())
                .unwrap_or_default();
            let _ = writeln!(out, "closed after {n} at_us={at_us}: {e}");
            let _ = out.flush();
            std::process::exit(1);
        }
        n += 1;
        let _ = writeln!(out, "reply {n}");
        let _ = out.flush();
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("done {n}");
    Ok(())
}

fn connect(addr: &str, message: &str) -> Result<(), String> {
    let (_, reply) = exchange(parse("address", addr)?, message)?;
    print!("{reply}");
    Ok(())
}

/// One HTTP/1.0 request without a body: the status line and the body.
fn http_exchange(method: &str, addr: &str, path: &str) -> Result<(String, String), String> {
    use std::io::Read;
    let addr: SocketAddr = parse("address", addr)?;
    let mut stream =
        TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("receive: {e}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or("no HTTP header end")?;
    Ok((
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    ))
}

fn http_request(method: &str, addr: &str, path: &str) -> Result<(), String> {
    let (status, body) = http_exchange(method, addr, path)?;
    if !status.starts_with("HTTP/1.1 200") && !status.starts_with("HTTP/1.0 200") {
        return Err(format!("{method} {path}: {status}: {}", body.trim_end()));
    }
    print!("{body}");
    Ok(())
}

fn http_status(method: &str, addr: &str, path: &str) -> Result<(), String> {
    let (status, body) = http_exchange(method, addr, path)?;
    let code = status
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| format!("bad status line {status:?}"))?;
    println!("{code}");
    print!("{body}");
    Ok(())
}

fn idle(addr: &str, n: &str, seconds: &str) -> Result<(), String> {
    use std::io::Read;
    let addr: SocketAddr = parse("address", addr)?;
    let n: usize = parse("count", n)?;
    let seconds: u64 = parse("duration", seconds)?;
    if n > 20_000 || seconds > 600 {
        return Err("at most 20000 connections for at most 600 s".into());
    }
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        streams.push(
            TcpStream::connect_timeout(&addr, TIMEOUT)
                .map_err(|e| format!("connect {addr}: {e}"))?,
        );
    }
    println!("ready {}", streams.len());
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(Duration::from_secs(seconds));
    drop(streams);
    Ok(())
}

fn udp_echo(socket: &std::net::UdpSocket, name: &str) {
    let mut buf = [0u8; 2048];
    while let Ok((n, peer)) = socket.recv_from(&mut buf) {
        let text = String::from_utf8_lossy(&buf[..n]);
        let reply = format!("{name} udp peer={} says: {}", unmap(peer), text.trim_end());
        let _ = socket.send_to(reply.as_bytes(), peer);
    }
}

fn udp(addr: &str, message: &str) -> Result<(), String> {
    let addr: SocketAddr = parse("address", addr)?;
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .map_err(|e| format!("{e}"))?;
    let socket = std::net::UdpSocket::bind(bind).map_err(|e| format!("bind: {e}"))?;
    socket
        .connect(addr)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    socket
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    socket
        .send(message.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; 2048];
    let n = socket.recv(&mut buf).map_err(|e| format!("receive: {e}"))?;
    println!("{}", String::from_utf8_lossy(&buf[..n]));
    Ok(())
}

/// The benchmark subcommands (see the module documentation).
mod bench {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    use super::{parse, TIMEOUT};

    fn listen(port: &str) -> Result<TcpListener, String> {
        let port: u16 = parse("port", port)?;
        TcpListener::bind(("::", port)).map_err(|e| format!("bind [::]:{port}: {e}"))
    }

    fn dial(addr: SocketAddr) -> Result<TcpStream, String> {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT)
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream
            .set_read_timeout(Some(TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
            .and_then(|()| stream.set_nodelay(true))
            .map_err(|e| e.to_string())?;
        Ok(stream)
    }

    /// Echoes until EOF or an error; with `idle` set, returns `true` instead when nothing
    /// arrives for that long (the connection is still open).
    fn echo(stream: &mut TcpStream, idle: Option<Duration>) -> bool {
        let _ = stream.set_read_timeout(idle);
        let mut buf = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => {
                    if stream.write_all(&buf[..n]).is_err() {
                        return false;
                    }
                }
                Err(e)
                    if idle.is_some()
                        && matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                {
                    return true
                }
                Err(_) => return false,
            }
        }
    }

    /// Raw echo server. A few threads accept and serve short connections themselves (a thread
    /// per connection would make thread creation the limit of a connection-rate test); a
    /// connection idle for 20 ms moves to a thread of its own.
    pub fn echo_server(port: &str) -> Result<(), String> {
        let listener = std::sync::Arc::new(listen(port)?);
        println!("listening on {port}");
        let acceptors: Vec<_> = (0..4)
            .map(|_| {
                let listener = listener.clone();
                std::thread::spawn(move || loop {
                    let Ok((mut stream, _)) = listener.accept() else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    if echo(&mut stream, Some(Duration::from_millis(20))) {
                        std::thread::spawn(move || echo(&mut stream, None));
                    }
                })
            })
            .collect();
        for acceptor in acceptors {
            let _ = acceptor.join();
        }
        Ok(())
    }

    /// HTTP/1.1 server: every request (headers only, no body expected) gets a small 200.
    pub fn http_server(port: &str) -> Result<(), String> {
        const RESPONSE: &[u8] =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n";
        let listener = listen(port)?;
        println!("listening on {port}");
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let _ = stream.set_nodelay(true);
                let mut buf = vec![0u8; 16 * 1024];
                let mut filled = 0;
                loop {
                    // Answer every complete request head in the buffer (pipelining included).
                    let mut start = 0;
                    let mut responses = 0;
                    while let Some(end) =
                        buf[start..filled].windows(4).position(|w| w == b"\r\n\r\n")
                    {
                        start += end + 4;
                        responses += 1;
                    }
                    if responses > 0 {
                        let out = RESPONSE.repeat(responses);
                        if stream.write_all(&out).is_err() {
                            return;
                        }
                        buf.copy_within(start..filled, 0);
                        filled -= start;
                    }
                    if filled == buf.len() {
                        return; // a request head larger than the buffer: give up
                    }
                    match stream.read(&mut buf[filled..]) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => filled += n,
                    }
                }
            });
        }
        Ok(())
    }

    fn percentile(sorted: &[Duration], p: f64) -> f64 {
        if sorted.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
        sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1e6
    }

    /// Request/response latency on one connection against the echo server.
    /// The byte at `offset` of the `stream` pattern (xorshift of the offset: no short period, so
    /// a reordered or repeated chunk shows).
    fn pattern(offset: u64) -> u8 {
        let mut x = offset / 8 + 0x9e37_79b9_7f4a_7c15;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> ((offset % 8) * 8)) as u8
    }

    pub fn stream(addr: &str, bytes: &str) -> Result<(), String> {
        let addr: SocketAddr = parse("address", addr)?;
        let total: u64 = parse("bytes", bytes)?;
        let stream = dial(addr)?;
        let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
        let sender = std::thread::spawn(move || -> Result<(), String> {
            let mut chunk = vec![0u8; 64 * 1024];
            let mut sent = 0u64;
            while sent < total {
                let n = chunk.len().min((total - sent) as usize);
                for (i, byte) in chunk[..n].iter_mut().enumerate() {
                    *byte = pattern(sent + i as u64);
                }
                writer
                    .write_all(&chunk[..n])
                    .map_err(|e| format!("send: {e}"))?;
                sent += n as u64;
            }
            writer
                .shutdown(std::net::Shutdown::Write)
                .map_err(|e| format!("shutdown: {e}"))
        });
        let mut reader = stream;
        let mut buf = vec![0u8; 64 * 1024];
        let mut received = 0u64;
        let mut progress = Instant::now();
        loop {
            let n = match reader.read(&mut buf) {
                Ok(n) => n,
                // A blocking read of a spliced socket can get a spurious EAGAIN from the kernel
                // (see ARCHITECTURE.md, "the splice is opt-in"): wait again, within the timeout.
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        && progress.elapsed() < TIMEOUT =>
                {
                    continue
                }
                Err(e) => return Err(format!("receive: {e}")),
            };
            progress = Instant::now();
            if n == 0 {
                break;
            }
            if let Some(i) = (0..n).find(|&i| buf[i] != pattern(received + i as u64)) {
                return Err(format!("echo differs at byte {}", received + i as u64));
            }
            received += n as u64;
        }
        sender.join().map_err(|_| "sender panicked")??;
        if received != total {
            return Err(format!("sent {total} bytes, {received} came back"));
        }
        println!("ok bytes={received}");
        Ok(())
    }

    pub fn pingpong(addr: &str, count: &str, size: &str) -> Result<(), String> {
        let addr: SocketAddr = parse("address", addr)?;
        let count: usize = parse("count", count)?;
        let size: usize = parse("size", size)?;
        if count == 0 || count > 10_000_000 || size == 0 || size > 1 << 20 {
            return Err("count must be 1..=10000000 and size 1..=1048576".into());
        }
        let mut stream = dial(addr)?;
        let message = vec![0x5au8; size];
        let mut reply = vec![0u8; size];
        // A few unmeasured exchanges first (connection set-up through a proxy, slow start).
        let warmup = (count / 10).clamp(1, 1000);
        let mut samples = Vec::with_capacity(count);
        let deadline = Instant::now() + Duration::from_secs(120);
        for i in 0..warmup + count {
            let start = Instant::now();
            stream
                .write_all(&message)
                .map_err(|e| format!("send: {e}"))?;
            stream
                .read_exact(&mut reply)
                .map_err(|e| format!("receive: {e}"))?;
            if i >= warmup {
                samples.push(start.elapsed());
            }
            if Instant::now() > deadline {
                return Err("pingpong took longer than 120 s".into());
            }
        }
        let mean = samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len() as f64;
        samples.sort_unstable();
        println!(
            "count={} p50_us={:.1} p90_us={:.1} p99_us={:.1} mean_us={:.1}",
            samples.len(),
            percentile(&samples, 50.0),
            percentile(&samples, 90.0),
            percentile(&samples, 99.0),
            mean * 1e6
        );
        Ok(())
    }

    /// New connections per second from one client, each with a 1-byte exchange.
    pub fn crr(addr: &str, seconds: &str) -> Result<(), String> {
        let addr: SocketAddr = parse("address", addr)?;
        let seconds: f64 = parse("duration", seconds)?;
        if !(0.1..=600.0).contains(&seconds) {
            return Err("duration must be 0.1..=600 s".into());
        }
        let start = Instant::now();
        let end = start + Duration::from_secs_f64(seconds);
        let (mut ok, mut failed) = (0u64, 0u64);
        let mut last_error = String::new();
        while Instant::now() < end {
            let result = dial(addr).and_then(|mut stream| {
                stream.write_all(b"x").map_err(|e| format!("send: {e}"))?;
                let mut byte = [0u8; 1];
                stream
                    .read_exact(&mut byte)
                    .map_err(|e| format!("receive: {e}"))
            });
            match result {
                Ok(()) => ok += 1,
                Err(e) => {
                    failed += 1;
                    last_error = e;
                    if failed > 100 {
                        break;
                    }
                }
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        println!(
            "ok={ok} failed={failed} per_second={:.1}",
            ok as f64 / elapsed
        );
        if failed > 0 {
            eprintln!("last error: {last_error}");
        }
        if failed > ok / 100 {
            return Err(format!("{failed} of {} connections failed", ok + failed));
        }
        Ok(())
    }

    /// Holds `n` idle connections open (each proven end to end by a 1-byte exchange).
    pub fn hold(addr: &str, n: &str, seconds: &str) -> Result<(), String> {
        let addr: SocketAddr = parse("address", addr)?;
        let n: usize = parse("count", n)?;
        let seconds: u64 = parse("duration", seconds)?;
        if n > 20_000 || seconds > 600 {
            return Err("at most 20000 connections for at most 600 s".into());
        }
        let mut streams = Vec::with_capacity(n);
        for _ in 0..n {
            let mut stream = dial(addr)?;
            stream.write_all(b"x").map_err(|e| format!("send: {e}"))?;
            let mut byte = [0u8; 1];
            stream
                .read_exact(&mut byte)
                .map_err(|e| format!("receive: {e}"))?;
            streams.push(stream);
        }
        println!("ready {}", streams.len());
        std::io::stdout().flush().map_err(|e| e.to_string())?;
        // Hold until the time is up or stdin closes (the bench closes it when it has measured).
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            let _ = tx.send(());
        });
        let _ = rx.recv_timeout(Duration::from_secs(seconds));
        drop(streams);
        Ok(())
    }
}
