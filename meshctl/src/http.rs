//! A minimal HTTP/1.0 GET for the controller's admin endpoint (loopback or in-cluster, plain
//! text, small JSON bodies), with timeouts so a dead controller never hangs the CLI.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address is not `host:port`.
    #[error("invalid admin address {0:?} (expected host:port)")]
    Address(String),
    /// Network failure.
    #[error("admin endpoint {addr}: {source}")]
    Io {
        /// Address.
        addr: String,
        /// I/O error.
        source: std::io::Error,
    },
    /// Not a 200 response.
    #[error("admin endpoint {addr}: unexpected response {status:?}")]
    Status {
        /// Address.
        addr: String,
        /// Status line.
        status: String,
    },
}

/// GETs `path` from `addr` (`host:port`, optionally prefixed with `http://`) and returns the
/// body.
pub fn get(addr: &str, path: &str, timeout: Duration) -> Result<String, HttpError> {
    let addr = addr
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let io = |source| HttpError::Io {
        addr: addr.clone(),
        source,
    };
    let socket = addr
        .to_socket_addrs()
        .map_err(|_| HttpError::Address(addr.clone()))?
        .next()
        .ok_or_else(|| HttpError::Address(addr.clone()))?;
    let mut stream = TcpStream::connect_timeout(&socket, timeout).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(io)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(HttpError::Status {
            addr,
            status: status.to_owned(),
        });
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Serves one canned response on loopback and returns the address.
    fn serve_once(response: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr").to_string();
        std::thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept() {
                // Read the whole request head first: answering and closing with request bytes
                // still unread would reset the connection under the client.
                let mut request = Vec::new();
                let mut chunk = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = stream.write_all(response.as_bytes());
            }
        });
        addr
    }

    #[test]
    fn returns_the_body_of_a_200() {
        let addr = serve_once(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"version\":\"v1\"}",
        );
        let body = get(
            &format!("http://{addr}/"),
            "/clients",
            Duration::from_secs(5),
        )
        .expect("200");
        assert_eq!(body, "{\"version\":\"v1\"}");
    }

    #[test]
    fn reports_other_statuses_and_dead_endpoints() {
        let addr = serve_once("HTTP/1.1 404 Not Found\r\n\r\nnope");
        let err = get(&addr, "/x", Duration::from_secs(5)).expect_err("404 is an error");
        assert!(err.to_string().contains("404"), "{err}");
        let free = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .to_string();
        assert!(matches!(
            get(&free, "/clients", Duration::from_secs(1)),
            Err(HttpError::Io { .. })
        ));
        assert!(matches!(
            get("no-port", "/", Duration::from_secs(1)),
            Err(HttpError::Address(_))
        ));
    }
}
