//! Protocol detection for a downstream stream: from the service port's declared protocol, or by
//! sniffing the first bytes (HTTP/2 prior-knowledge preface, HTTP/1.x request line).

use mesh_common::model::PortProtocol;

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Request methods an HTTP/1.x request line may start with (RFC 9110, WebDAV, CalDAV); anything
/// else is opaque.
const METHODS: &[&[u8]] = &[
    b"GET",
    b"HEAD",
    b"POST",
    b"PUT",
    b"DELETE",
    b"CONNECT",
    b"OPTIONS",
    b"TRACE",
    b"PATCH",
    b"PROPFIND",
    b"PROPPATCH",
    b"MKCOL",
    b"COPY",
    b"MOVE",
    b"LOCK",
    b"UNLOCK",
    b"SEARCH",
    b"REPORT",
    b"MKCALENDAR",
    b"MKACTIVITY",
    b"CHECKOUT",
    b"MERGE",
    b"PURGE",
    b"LINK",
    b"UNLINK",
];

/// What the first bytes of a stream are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sniff {
    /// An HTTP/1.x request line (a known method, then a space).
    Http1,
    /// The HTTP/2 prior-knowledge preface.
    Http2,
    /// Neither: passed through as opaque TCP.
    Opaque,
    /// Not decidable yet: read more (under the detection timeout; at its end, opaque).
    NeedMore,
}

/// How a downstream stream is handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Sniff the first bytes ([`sniff`]).
    Sniff,
    /// HTTP/1.1 (what sniffing found; no declared protocol asks for HTTP/1 only, see [`mode`]).
    Http1,
    /// HTTP/2 (gRPC too).
    Http2,
    /// Opaque TCP: relayed unparsed.
    Opaque,
}

/// The handling a service port's declared protocol asks for. `http` ports sniff too, to tell
/// HTTP/1.1 from HTTP/2 with prior knowledge (both are declared `http`, as Istio reads them).
pub fn mode(port_protocol: Option<PortProtocol>) -> Mode {
    match port_protocol {
        Some(PortProtocol::Http) => Mode::Sniff,
        Some(PortProtocol::Http2 | PortProtocol::Grpc) => Mode::Http2,
        Some(PortProtocol::Tcp) => Mode::Opaque,
        Some(PortProtocol::Unknown) | None => Mode::Sniff,
    }
}

/// Classifies the first bytes of a stream, as soon as they allow.
pub fn sniff(prefix: &[u8]) -> Sniff {
    if prefix.is_empty() {
        return Sniff::NeedMore;
    }
    if prefix.len() >= H2_PREFACE.len() {
        if prefix.starts_with(H2_PREFACE) {
            return Sniff::Http2;
        }
    } else if H2_PREFACE.starts_with(prefix) {
        return Sniff::NeedMore;
    }
    let mut could_be = false;
    for method in METHODS {
        let n = method.len();
        if prefix.len() > n {
            if prefix.starts_with(method) && prefix[n] == b' ' {
                return Sniff::Http1;
            }
        } else if method.starts_with(prefix) {
            could_be = true;
        }
    }
    if could_be {
        Sniff::NeedMore
    } else {
        Sniff::Opaque
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_each_prefix() {
        #[rustfmt::skip]
        let cases: &[(&str, &[u8], Sniff)] = &[
            ("empty", b"", Sniff::NeedMore),
            ("GET request line", b"GET / HTTP/1.1\r\n", Sniff::Http1),
            ("method and space are enough", b"POST ", Sniff::Http1),
            ("WebDAV method", b"PROPFIND /x HTTP/1.1\r\n", Sniff::Http1),
            ("method without the space yet", b"GET", Sniff::NeedMore),
            ("partial method", b"DEL", Sniff::NeedMore),
            ("P could be PUT, POST, PATCH or the preface", b"P", Sniff::NeedMore),
            ("lower-case method is not HTTP", b"get / HTTP/1.1\r\n", Sniff::Opaque),
            ("method glued to more letters", b"GETX / HTTP/1.1", Sniff::Opaque),
            ("method then tab", b"GET\t/", Sniff::Opaque),
            ("full HTTP/2 preface", H2_PREFACE, Sniff::Http2),
            ("preface then a frame", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04", Sniff::Http2),
            ("partial preface", b"PRI * HTTP/2", Sniff::NeedMore),
            ("preface gone wrong at the end", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\r", Sniff::Opaque),
            ("preface gone wrong early", b"PRI * HTTP/1.1", Sniff::Opaque),
            ("TLS client hello", b"\x16\x03\x01\x02\x00\x01", Sniff::Opaque),
            ("redis", b"*1\r\n$4\r\nPING\r\n", Sniff::Opaque),
            ("SSH banner", b"SSH-2.0-OpenSSH_9.6\r\n", Sniff::Opaque),
            ("one byte no method starts with", b"Z", Sniff::Opaque),
        ];
        for (case, prefix, want) in cases {
            assert_eq!(sniff(prefix), *want, "{case}");
        }
    }

    #[test]
    fn mode_follows_the_declared_protocol() {
        let cases = [
            (Some(PortProtocol::Http), Mode::Sniff),
            (Some(PortProtocol::Http2), Mode::Http2),
            (Some(PortProtocol::Grpc), Mode::Http2),
            (Some(PortProtocol::Tcp), Mode::Opaque),
            (Some(PortProtocol::Unknown), Mode::Sniff),
            (None, Mode::Sniff),
        ];
        for (protocol, want) in cases {
            assert_eq!(mode(protocol), want, "{protocol:?}");
        }
    }
}
