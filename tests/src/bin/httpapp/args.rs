//! The command line: which mode, its arguments and the client options, checked before anything
//! runs (a pure function of the arguments).

use std::net::SocketAddr;
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};
use hyper::Method;

use super::net::TIMEOUT;

pub const USAGE: &str =
    "usage: mesh-httpapp serve <port> <name> [--fail-percent <0..=100>] [--delay-ms <ms>]
      [--forward <url>]
  | grpc-serve <port> <name>
  | count <url> <n> [-H 'name: value']... [--h2] [--timeout-ms <ms>]
  | load <url> <n> [--concurrency <c>] [-H 'name: value']... [--h2] [--timeout-ms <ms>]
  | get <url> [-H 'name: value']... [--h2] [-X <method>] [--timeout-ms <ms>]
  | ws <url> <n> [--timeout-ms <ms>]
  | grpc <host:port> say <text> | grpc <host:port> count <n> [--timeout-ms <ms>]
  | stream <url> [-H 'name: value']... [--h2] [--timeout-ms <ms>]
  | upload <url> <bytes> [-H 'name: value']... [--h2] [--timeout-ms <ms>]
(<port> is a port, served on [::] dual-stack, or ip:port)";

/// The most requests `count` makes and messages `ws` sends.
const MAX_COUNT: u64 = 1_000_000;
/// The longest `--timeout-ms`: 10 minutes.
const MAX_TIMEOUT_MS: u64 = 600_000;
/// The most `-H` headers.
const MAX_HEADERS: usize = 64;
/// The most concurrent workers of `load`.
const MAX_CONCURRENCY: u64 = 1000;
/// The longest `serve --delay-ms` (and `/delay/<ms>`): a minute.
pub const MAX_DELAY_MS: u64 = 60_000;

/// How `serve` misbehaves on purpose, and whom it calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServeOptions {
    /// The share of requests (in percent, 0..=100) answered 503, spread evenly.
    pub fail_percent: u8,
    /// Every request is answered after this long.
    pub delay_ms: u64,
    /// `--forward <url>`: every echoed request first calls this URL (a GET) with the trace
    /// headers of the request it serves, and answers with that call's result too.
    pub forward: Option<String>,
}

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// `[::]:<port>` with IPv4 mapped in (v6only off).
    DualStack(u16),
    /// Exactly this address.
    Addr(SocketAddr),
}

/// The options shared by the clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// HTTP/2 with prior knowledge instead of HTTP/1.1.
    pub h2: bool,
    /// Every wait: connect, a response head, a body chunk, a message.
    pub timeout: Duration,
    /// `-H` headers, in order.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `-X` (only `get`); GET otherwise.
    pub method: Method,
    /// `--concurrency` (only `load`): that many workers, each on its own connection.
    pub concurrency: u64,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            h2: false,
            timeout: TIMEOUT,
            headers: Vec::new(),
            method: Method::GET,
            concurrency: 1,
        }
    }
}

/// One run of the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Serve {
        listen: Listen,
        name: String,
        opts: ServeOptions,
    },
    GrpcServe {
        listen: Listen,
        name: String,
    },
    Count {
        url: String,
        n: u64,
        opts: ClientOptions,
    },
    Load {
        url: String,
        n: u64,
        opts: ClientOptions,
    },
    Get {
        url: String,
        opts: ClientOptions,
    },
    Stream {
        url: String,
        opts: ClientOptions,
    },
    Upload {
        url: String,
        bytes: u64,
        opts: ClientOptions,
    },
    Ws {
        url: String,
        n: u64,
        opts: ClientOptions,
    },
    GrpcSay {
        addr: String,
        text: String,
        opts: ClientOptions,
    },
    GrpcCount {
        addr: String,
        n: u32,
        opts: ClientOptions,
    },
}

/// Which options a mode takes.
#[derive(Clone, Copy)]
struct Allowed {
    http: bool,
    method: bool,
    concurrency: bool,
}

const ONLY_TIMEOUT: Allowed = Allowed {
    http: false,
    method: false,
    concurrency: false,
};
const HTTP: Allowed = Allowed {
    http: true,
    method: false,
    concurrency: false,
};
const HTTP_METHOD: Allowed = Allowed {
    http: true,
    method: true,
    concurrency: false,
};
const HTTP_CONCURRENT: Allowed = Allowed {
    http: true,
    method: false,
    concurrency: true,
};

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let (mode, rest) = args.split_first().ok_or("no mode given")?;
    match mode.as_str() {
        "serve" => {
            let (pos, opts) = serve_options(rest)?;
            let [port, name] = pos.as_slice() else {
                return Err("serve takes <port> <name>".into());
            };
            Ok(Command::Serve {
                listen: parse_listen(port)?,
                name: parse_name(name)?,
                opts,
            })
        }
        "grpc-serve" => {
            let [port, name] = rest else {
                return Err("grpc-serve takes <port> <name>".into());
            };
            Ok(Command::GrpcServe {
                listen: parse_listen(port)?,
                name: parse_name(name)?,
            })
        }
        "count" => {
            let (pos, opts) = options(rest, HTTP)?;
            let [url, n] = pos.as_slice() else {
                return Err("count takes <url> <n>".into());
            };
            let n = parse_count("n", n, MAX_COUNT)?;
            Ok(Command::Count {
                url: url.clone(),
                n,
                opts,
            })
        }
        "load" => {
            let (pos, opts) = options(rest, HTTP_CONCURRENT)?;
            let [url, n] = pos.as_slice() else {
                return Err("load takes <url> <n>".into());
            };
            let n = parse_count("n", n, MAX_COUNT)?;
            Ok(Command::Load {
                url: url.clone(),
                n,
                opts,
            })
        }
        "get" => {
            let (pos, opts) = options(rest, HTTP_METHOD)?;
            let [url] = pos.as_slice() else {
                return Err("get takes <url>".into());
            };
            Ok(Command::Get {
                url: url.clone(),
                opts,
            })
        }
        "stream" => {
            let (pos, opts) = options(rest, HTTP)?;
            let [url] = pos.as_slice() else {
                return Err("stream takes <url>".into());
            };
            Ok(Command::Stream {
                url: url.clone(),
                opts,
            })
        }
        "upload" => {
            let (pos, opts) = options(rest, HTTP)?;
            let [url, bytes] = pos.as_slice() else {
                return Err("upload takes <url> <bytes>".into());
            };
            let bytes = parse_count("bytes", bytes, u64::MAX)?;
            Ok(Command::Upload {
                url: url.clone(),
                bytes,
                opts,
            })
        }
        "ws" => {
            let (pos, opts) = options(rest, ONLY_TIMEOUT)?;
            let [url, n] = pos.as_slice() else {
                return Err("ws takes <url> <n>".into());
            };
            let n = parse_count("n", n, MAX_COUNT)?;
            Ok(Command::Ws {
                url: url.clone(),
                n,
                opts,
            })
        }
        "grpc" => {
            let (pos, opts) = options(rest, ONLY_TIMEOUT)?;
            match pos.as_slice() {
                [addr, call, text] if call == "say" => Ok(Command::GrpcSay {
                    addr: addr.clone(),
                    text: text.clone(),
                    opts,
                }),
                [addr, call, n] if call == "count" => {
                    let n = parse_count("n", n, u64::from(u32::MAX))?;
                    let n = u32::try_from(n).map_err(|_| format!("n {n} is too large"))?;
                    Ok(Command::GrpcCount {
                        addr: addr.clone(),
                        n,
                        opts,
                    })
                }
                _ => Err("grpc takes <host:port> say <text> | <host:port> count <n>".into()),
            }
        }
        other => Err(format!("unknown mode {other:?}")),
    }
}

/// Splits `serve`'s positional arguments from its options.
fn serve_options(args: &[String]) -> Result<(Vec<String>, ServeOptions), String> {
    let mut opts = ServeOptions::default();
    let mut positional = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--fail-percent" => {
                let v = iter.next().ok_or("--fail-percent needs a value")?;
                let p = parse_count("--fail-percent", v, 100)?;
                opts.fail_percent = u8::try_from(p).map_err(|_| format!("--fail-percent {p}"))?;
            }
            "--delay-ms" => {
                let v = iter.next().ok_or("--delay-ms needs a value")?;
                opts.delay_ms = parse_count("--delay-ms", v, MAX_DELAY_MS)?;
            }
            "--forward" => {
                let v = iter.next().ok_or("--forward needs a URL")?;
                if !v.starts_with("http://") {
                    return Err(format!("--forward {v:?} is not an http:// URL"));
                }
                opts.forward = Some(v.clone());
            }
            flag if flag.starts_with('-') && flag.len() > 1 => {
                return Err(format!("unknown option {flag:?} for this mode"));
            }
            _ => positional.push(arg.clone()),
        }
    }
    Ok((positional, opts))
}

/// Splits the positional arguments from the options a mode allows.
fn options(args: &[String], allowed: Allowed) -> Result<(Vec<String>, ClientOptions), String> {
    let mut opts = ClientOptions::default();
    let mut positional = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--timeout-ms" => {
                let v = iter.next().ok_or("--timeout-ms needs a value")?;
                let ms = parse_count("--timeout-ms", v, MAX_TIMEOUT_MS)?;
                if ms == 0 {
                    return Err("--timeout-ms must be at least 1".into());
                }
                opts.timeout = Duration::from_millis(ms);
            }
            "--h2" if allowed.http => opts.h2 = true,
            "-H" if allowed.http => {
                let v = iter.next().ok_or("-H needs 'name: value'")?;
                if opts.headers.len() >= MAX_HEADERS {
                    return Err(format!("at most {MAX_HEADERS} -H headers"));
                }
                opts.headers.push(parse_header(v)?);
            }
            "--concurrency" if allowed.concurrency => {
                let v = iter.next().ok_or("--concurrency needs a value")?;
                let c = parse_count("--concurrency", v, MAX_CONCURRENCY)?;
                if c == 0 {
                    return Err("--concurrency must be at least 1".into());
                }
                opts.concurrency = c;
            }
            "-X" if allowed.method => {
                let v = iter.next().ok_or("-X needs a method")?;
                opts.method =
                    Method::from_bytes(v.as_bytes()).map_err(|_| format!("bad method {v:?}"))?;
            }
            flag if flag.starts_with('-') && flag.len() > 1 => {
                return Err(format!("unknown option {flag:?} for this mode"));
            }
            _ => positional.push(arg.clone()),
        }
    }
    Ok((positional, opts))
}

/// `name: value` (the value trimmed) into a valid header.
fn parse_header(s: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("header {s:?} is not 'name: value'"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("bad header name in {s:?}"))?;
    let value =
        HeaderValue::from_str(value.trim()).map_err(|_| format!("bad header value in {s:?}"))?;
    Ok((name, value))
}

/// A port (dual-stack) or an `ip:port`.
fn parse_listen(s: &str) -> Result<Listen, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(Listen::DualStack(port));
    }
    s.parse::<SocketAddr>()
        .map(Listen::Addr)
        .map_err(|_| format!("{s:?} is neither a port nor ip:port"))
}

/// A server name: it goes into JSON, echoes and a header value, so a plain token.
fn parse_name(s: &str) -> Result<String, String> {
    let ok = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "name {s:?} must be 1 to 64 characters of A-Za-z0-9._-"
        ))
    }
}

fn parse_count(what: &str, s: &str, max: u64) -> Result<u64, String> {
    let n: u64 = s
        .parse()
        .map_err(|_| format!("{what} {s:?} is not a number"))?;
    if n > max {
        return Err(format!("{what} {n} is more than {max}"));
    }
    Ok(n)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn modes_parse_or_are_refused() {
        let v4: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let cases: &[(&str, Result<Command, &str>)] = &[
            (
                "serve 8080 alpha",
                Ok(Command::Serve {
                    listen: Listen::DualStack(8080),
                    name: "alpha".into(),
                    opts: ServeOptions::default(),
                }),
            ),
            (
                "serve --fail-percent 50 8080 alpha --delay-ms 1000",
                Ok(Command::Serve {
                    listen: Listen::DualStack(8080),
                    name: "alpha".into(),
                    opts: ServeOptions {
                        fail_percent: 50,
                        delay_ms: 1000,
                        forward: None,
                    },
                }),
            ),
            (
                "serve 8080 alpha --fail-percent 100 --delay-ms 0",
                Ok(Command::Serve {
                    listen: Listen::DualStack(8080),
                    name: "alpha".into(),
                    opts: ServeOptions {
                        fail_percent: 100,
                        delay_ms: 0,
                        forward: None,
                    },
                }),
            ),
            (
                "serve 8080 alpha --forward http://ratings:9080/r",
                Ok(Command::Serve {
                    listen: Listen::DualStack(8080),
                    name: "alpha".into(),
                    opts: ServeOptions {
                        forward: Some("http://ratings:9080/r".into()),
                        ..ServeOptions::default()
                    },
                }),
            ),
            (
                "serve 8080 alpha --forward ratings:9080",
                Err("--forward \"ratings:9080\" is not an http:// URL"),
            ),
            ("serve 8080 alpha --forward", Err("--forward needs a URL")),
            (
                "serve 8080 alpha --fail-percent 101",
                Err("--fail-percent 101 is more than 100"),
            ),
            (
                "serve 8080 alpha --fail-percent -1",
                Err("--fail-percent \"-1\" is not a number"),
            ),
            (
                "serve 8080 alpha --fail-percent",
                Err("--fail-percent needs a value"),
            ),
            (
                "serve 8080 alpha --delay-ms 60001",
                Err("--delay-ms 60001 is more than 60000"),
            ),
            (
                "serve 8080 alpha --delay-ms soon",
                Err("--delay-ms \"soon\" is not a number"),
            ),
            (
                "serve 8080 alpha --h2",
                Err("unknown option \"--h2\" for this mode"),
            ),
            (
                "grpc-serve 1 a --fail-percent 5",
                Err("grpc-serve takes <port> <name>"),
            ),
            (
                "load http://a/ 100 --concurrency 8 --h2 -H x-a:1 --timeout-ms 300",
                Ok(Command::Load {
                    url: "http://a/".into(),
                    n: 100,
                    opts: ClientOptions {
                        h2: true,
                        timeout: Duration::from_millis(300),
                        headers: vec![(
                            HeaderName::from_static("x-a"),
                            HeaderValue::from_static("1"),
                        )],
                        concurrency: 8,
                        ..ClientOptions::default()
                    },
                }),
            ),
            (
                "load http://a/ 5",
                Ok(Command::Load {
                    url: "http://a/".into(),
                    n: 5,
                    opts: ClientOptions::default(),
                }),
            ),
            (
                "load http://a/ 5 --concurrency 0",
                Err("--concurrency must be at least 1"),
            ),
            (
                "load http://a/ 5 --concurrency 1001",
                Err("--concurrency 1001 is more than 1000"),
            ),
            (
                "load http://a/ 5 --concurrency",
                Err("--concurrency needs a value"),
            ),
            ("load http://a/", Err("load takes <url> <n>")),
            (
                "load http://a/ 5 -X POST",
                Err("unknown option \"-X\" for this mode"),
            ),
            (
                "count http://a/ 5 --concurrency 2",
                Err("unknown option \"--concurrency\" for this mode"),
            ),
            (
                "grpc-serve 127.0.0.1:0 b-2",
                Ok(Command::GrpcServe {
                    listen: Listen::Addr(v4),
                    name: "b-2".into(),
                }),
            ),
            ("serve 8080", Err("serve takes <port> <name>")),
            ("serve x alpha", Err("\"x\" is neither a port nor ip:port")),
            (
                "serve 80 a:b",
                Err("name \"a:b\" must be 1 to 64 characters of A-Za-z0-9._-"),
            ),
            (
                "count http://a/ 3",
                Ok(Command::Count {
                    url: "http://a/".into(),
                    n: 3,
                    opts: ClientOptions::default(),
                }),
            ),
            (
                "count http://a/ 3 --h2 --timeout-ms 250",
                Ok(Command::Count {
                    url: "http://a/".into(),
                    n: 3,
                    opts: ClientOptions {
                        h2: true,
                        timeout: Duration::from_millis(250),
                        ..ClientOptions::default()
                    },
                }),
            ),
            ("count http://a/ many", Err("n \"many\" is not a number")),
            (
                "count http://a/ 2000000",
                Err("n 2000000 is more than 1000000"),
            ),
            ("count http://a/", Err("count takes <url> <n>")),
            (
                "count http://a/ 1 -X POST",
                Err("unknown option \"-X\" for this mode"),
            ),
            (
                "count http://a/ 1 --timeout-ms 0",
                Err("--timeout-ms must be at least 1"),
            ),
            ("count http://a/ 1 -H", Err("-H needs 'name: value'")),
            (
                "count http://a/ 1 -H novalue",
                Err("header \"novalue\" is not 'name: value'"),
            ),
            (
                "get http://a/ -X DELETE",
                Ok(Command::Get {
                    url: "http://a/".into(),
                    opts: ClientOptions {
                        method: Method::DELETE,
                        ..ClientOptions::default()
                    },
                }),
            ),
            (
                "ws ws://a/ws 2 --h2",
                Err("unknown option \"--h2\" for this mode"),
            ),
            (
                "ws ws://a/ws 2",
                Ok(Command::Ws {
                    url: "ws://a/ws".into(),
                    n: 2,
                    opts: ClientOptions::default(),
                }),
            ),
            (
                "grpc a:1 say hi",
                Ok(Command::GrpcSay {
                    addr: "a:1".into(),
                    text: "hi".into(),
                    opts: ClientOptions::default(),
                }),
            ),
            (
                "grpc a:1 count 4",
                Ok(Command::GrpcCount {
                    addr: "a:1".into(),
                    n: 4,
                    opts: ClientOptions::default(),
                }),
            ),
            (
                "grpc a:1 shout hi",
                Err("grpc takes <host:port> say <text> | <host:port> count <n>"),
            ),
            (
                "grpc a:1 count 5000000000",
                Err("n 5000000000 is more than 4294967295"),
            ),
            (
                "upload http://a/upload 1024",
                Ok(Command::Upload {
                    url: "http://a/upload".into(),
                    bytes: 1024,
                    opts: ClientOptions::default(),
                }),
            ),
            ("stream", Err("stream takes <url>")),
            ("dance", Err("unknown mode \"dance\"")),
            ("", Err("no mode given")),
        ];
        for (line, want) in cases {
            let got = parse(&argv(line));
            assert_eq!(got, want.clone().map_err(String::from), "{line}");
        }
    }

    #[test]
    fn headers_keep_order_and_trim() {
        let args: Vec<String> = ["http://a/", "1", "-H", "End-User: jason ", "-H", "x-b:2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let Ok(Command::Count { opts, .. }) = parse(&[&["count".to_string()][..], &args].concat())
        else {
            panic!("count did not parse");
        };
        let got: Vec<(String, String)> = opts
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        assert_eq!(
            got,
            [
                ("end-user".to_string(), "jason".to_string()),
                ("x-b".into(), "2".into())
            ]
        );
    }
}
