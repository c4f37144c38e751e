//! A tiny TCP application for the end-to-end tests, run inside the local cluster's pods.
//!
//! - `mesh-testapp serve <port> <name>`: dual-stack echo server; answers each line with
//!   `<name> peer=<peer> local=<local> says: <line>`.
//! - `mesh-testapp connect <addr> <message>`: sends one line, prints the answer, exits 0; exits 1
//!   with the error on failure.
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
