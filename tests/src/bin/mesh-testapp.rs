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
//! - `mesh-testapp get <addr> <path>`: HTTP/1.0 GET, prints the body; exits 1 unless status 200.
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
        Some("get") if args.len() == 4 => get(&args[2], &args[3]),
        Some("udp") if args.len() == 4 => udp(&args[2], &args[3]),
        Some("burst") if args.len() == 4 => burst(&args[2], &args[3]),
        Some("loop") if args.len() == 4 => repeat(&args[2], &args[3]),
        _ => Err("usage: mesh-testapp serve <port> <name> | connect <addr> <message> | get <addr> <path>".into()),
    };
    if let Err(e) = result {
        eprintln!("mesh-testapp: {e}");
        std::process::exit(1);
    }
}

fn serve(port: &str, name: &str) -> Result<(), String> {
    let port: u16 = port.parse().map_err(|e| format!("bad port {port}: {e}"))?;
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

fn burst(addr: &str, n: &str) -> Result<(), String> {
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr}: {e}"))?;
    let n: usize = n.parse().map_err(|e| format!("bad count {n}: {e}"))?;
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
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr}: {e}"))?;
    let seconds: u64 = seconds
        .parse()
        .map_err(|e| format!("bad duration {seconds}: {e}"))?;
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

fn connect(addr: &str, message: &str) -> Result<(), String> {
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr}: {e}"))?;
    let stream =
        TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    writeln!(writer, "{message}").map_err(|e| format!("send: {e}"))?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .map_err(|e| format!("receive: {e}"))?;
    if reply.is_empty() {
        return Err(format!("{addr} closed the connection without answering"));
    }
    print!("{reply}");
    Ok(())
}

fn get(addr: &str, path: &str) -> Result<(), String> {
    use std::io::Read;
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr}: {e}"))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("receive: {e}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or("no HTTP header end")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(format!(
            "GET {path}: {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    print!("{body}");
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
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr}: {e}"))?;
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
