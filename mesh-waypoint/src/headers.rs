//! Forwarding headers as Envoy sets them (`x-forwarded-for`, `x-forwarded-proto`,
//! `x-request-id`) and the hop-by-hop headers a proxy must not forward. Pure functions on
//! [`HeaderMap`].

use std::net::IpAddr;

use http::header::{CONNECTION, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue};

/// `x-forwarded-for`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `x-forwarded-proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `x-request-id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Everything the waypoint does to a request's headers before routing, in Envoy's order:
/// hop-by-hop headers stripped (an upgrade's kept), the source appended to `x-forwarded-for`,
/// `x-forwarded-proto` and `x-request-id` set when absent.
pub fn forward_request(headers: &mut HeaderMap, source: IpAddr, rand: &mut dyn FnMut() -> u64) {
    let upgrade = is_upgrade(headers);
    strip_hop_by_hop(headers, upgrade);
    append_forwarded_for(headers, source);
    set_forwarded_proto(headers);
    ensure_request_id(headers, rand);
}

/// Appends the source address to `x-forwarded-for` as Envoy does: the existing values joined
/// by `,` (no space), then the address.
pub fn append_forwarded_for(headers: &mut HeaderMap, source: IpAddr) {
    let addr = source.to_canonical().to_string();
    let mut value = Vec::new();
    for existing in headers.get_all(&X_FORWARDED_FOR) {
        let existing = existing.as_bytes().trim_ascii();
        if !existing.is_empty() {
            value.extend_from_slice(existing);
            value.push(b',');
        }
    }
    value.extend_from_slice(addr.as_bytes());
    // Existing values are valid header bytes, the address is ASCII: this cannot fail, and if
    // it did the address alone is still right.
    let value = HeaderValue::from_bytes(&value).unwrap_or_else(|_| address_value(&addr));
    headers.insert(X_FORWARDED_FOR, value);
}

fn address_value(addr: &str) -> HeaderValue {
    HeaderValue::from_str(addr).unwrap_or(HeaderValue::from_static(""))
}

/// Sets `x-forwarded-proto: http` unless the request has one (the waypoint's downstream is
/// plaintext HTTP inside HBONE; a client-set value is kept, as an internal Envoy keeps it).
pub fn set_forwarded_proto(headers: &mut HeaderMap) {
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
}

/// Sets a fresh `x-request-id` unless the request has one.
pub fn ensure_request_id(headers: &mut HeaderMap, rand: &mut dyn FnMut() -> u64) {
    if !headers.contains_key(&X_REQUEST_ID) {
        let id = request_id(rand);
        if let Ok(value) = HeaderValue::from_str(&id) {
            headers.insert(X_REQUEST_ID, value);
        }
    }
}

/// A random (version 4) UUID, as Envoy generates for `x-request-id`, from two draws of `rand`.
pub fn request_id(rand: &mut dyn FnMut() -> u64) -> String {
    let hi = rand();
    let lo = rand();
    // version 4 in the high nibble of byte 6, variant 10 in the top bits of byte 8
    let hi = (hi & !0xf000) | 0x4000;
    let lo = (lo & !(0xc000 << 48)) | (0x8000 << 48);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

/// Whether a token list header (`connection`, `te`) names `token`, case-insensitively.
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// Whether the request (or a `101` response) asks to switch protocols: `connection: upgrade`
/// with an `upgrade` header. `upgrade: h2c` is not one: the waypoint speaks HTTP/2 with prior
/// knowledge only, and Envoy drops it too.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    let Some(upgrade) = headers.get(UPGRADE) else {
        return false;
    };
    has_token(headers, &CONNECTION, "upgrade")
        && !upgrade.as_bytes().trim_ascii().eq_ignore_ascii_case(b"h2c")
}

/// Removes the hop-by-hop headers: `connection`, `keep-alive`, `proxy-connection`,
/// `transfer-encoding`, `te` (kept as `te: trailers` when it names trailers, which gRPC needs)
/// and `upgrade`; with `upgrade`, `upgrade` is kept and `connection` becomes `upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let trailers = has_token(headers, &TE, "trailers");
    headers.remove(CONNECTION);
    headers.remove(KEEP_ALIVE);
    headers.remove(PROXY_CONNECTION);
    headers.remove(TRANSFER_ENCODING);
    headers.remove(TE);
    if trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
    if upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(UPGRADE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("test value"),
                HeaderValue::from_str(v).expect("test value"),
            );
        }
        h
    }

    fn all(h: &HeaderMap, name: &str) -> Vec<String> {
        h.get_all(name)
            .iter()
            .map(|v| v.to_str().expect("test value").to_owned())
            .collect()
    }

    type Headers<'a> = &'a [(&'a str, &'a str)];
    type Want<'a> = &'a [(&'a str, &'a [&'a str])];

    #[test]
    fn forwarded_for_appends_the_source() {
        #[rustfmt::skip]
        let cases: &[(&str, Headers, &str, &str)] = &[
            ("absent", &[], "10.0.0.1", "10.0.0.1"),
            ("one hop", &[("x-forwarded-for", "203.0.113.7")], "10.0.0.1", "203.0.113.7,10.0.0.1"),
            ("list", &[("x-forwarded-for", "1.1.1.1, 2.2.2.2")], "10.0.0.1", "1.1.1.1, 2.2.2.2,10.0.0.1"),
            ("two lines coalesce", &[("x-forwarded-for", "1.1.1.1"), ("x-forwarded-for", "2.2.2.2")], "10.0.0.1", "1.1.1.1,2.2.2.2,10.0.0.1"),
            ("empty value", &[("x-forwarded-for", "")], "10.0.0.1", "10.0.0.1"),
            ("IPv6", &[], "fd00::1", "fd00::1"),
            ("IPv4-mapped IPv6 is written as IPv4", &[], "::ffff:10.0.0.9", "10.0.0.9"),
        ];
        for (case, before, source, want) in cases {
            let mut h = map(before);
            append_forwarded_for(&mut h, source.parse().expect("test value"));
            assert_eq!(all(&h, "x-forwarded-for"), vec![want.to_string()], "{case}");
        }
    }

    #[test]
    fn forwarded_proto_and_request_id_are_set_only_when_absent() {
        let mut next = 0u64;
        let mut rand = || {
            next += 1;
            next
        };
        let mut h = map(&[]);
        set_forwarded_proto(&mut h);
        ensure_request_id(&mut h, &mut rand);
        assert_eq!(all(&h, "x-forwarded-proto"), ["http"]);
        assert_eq!(
            all(&h, "x-request-id"),
            ["00000000-0000-4001-8000-000000000002"]
        );

        let mut h = map(&[("x-forwarded-proto", "https"), ("x-request-id", "abc")]);
        set_forwarded_proto(&mut h);
        ensure_request_id(&mut h, &mut rand);
        assert_eq!(all(&h, "x-forwarded-proto"), ["https"]);
        assert_eq!(all(&h, "x-request-id"), ["abc"]);
    }

    #[test]
    fn request_ids_are_version_4_uuids() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut rand = || rng.u64(..);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let id = request_id(&mut rand);
            let groups: Vec<&str> = id.split('-').collect();
            let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
            assert_eq!(lens, [8, 4, 4, 4, 12], "{id}");
            assert!(
                id.bytes()
                    .all(|b| b == b'-' || b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{id}"
            );
            assert!(groups[2].starts_with('4'), "version: {id}");
            assert!(
                matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'),
                "variant: {id}"
            );
            assert!(seen.insert(id));
        }
        let mut ones = || u64::MAX;
        assert_eq!(
            request_id(&mut ones),
            "ffffffff-ffff-4fff-bfff-ffffffffffff"
        );
    }

    #[test]
    fn hop_by_hop_headers_are_stripped() {
        // (case, headers, kept after stripping (name, values))
        #[rustfmt::skip]
        let cases: &[(&str, Headers, Want)] = &[
            ("plain request keeps end-to-end headers",
             &[("connection", "keep-alive"), ("keep-alive", "timeout=5"), ("proxy-connection", "keep-alive"),
               ("transfer-encoding", "chunked"), ("accept", "*/*")],
             &[("accept", &["*/*"]), ("connection", &[]), ("keep-alive", &[]), ("proxy-connection", &[]), ("transfer-encoding", &[])]),
            ("te: trailers is kept (gRPC)", &[("te", "trailers")], &[("te", &["trailers"])]),
            ("te with trailers among others becomes te: trailers", &[("te", "gzip, Trailers")], &[("te", &["trailers"])]),
            ("other te is removed", &[("te", "gzip")], &[("te", &[])]),
            ("upgrade without connection: upgrade is dropped", &[("upgrade", "websocket")], &[("upgrade", &[])]),
            ("websocket upgrade is kept",
             &[("connection", "keep-alive, Upgrade"), ("upgrade", "websocket"), ("sec-websocket-key", "k")],
             &[("connection", &["upgrade"]), ("upgrade", &["websocket"]), ("sec-websocket-key", &["k"])]),
            ("h2c upgrade is not an upgrade",
             &[("connection", "Upgrade, HTTP2-Settings"), ("upgrade", "h2c")],
             &[("connection", &[]), ("upgrade", &[])]),
        ];
        for (case, before, want) in cases {
            let mut h = map(before);
            let upgrade = is_upgrade(&h);
            strip_hop_by_hop(&mut h, upgrade);
            for (name, values) in *want {
                assert_eq!(all(&h, name), *values, "{case}: {name}");
            }
        }
    }

    #[test]
    fn forward_request_does_it_all() {
        let mut rand = || 0u64;
        let mut h = map(&[("connection", "close"), ("x-forwarded-for", "1.2.3.4")]);
        forward_request(&mut h, "10.1.0.5".parse().expect("test value"), &mut rand);
        assert_eq!(all(&h, "connection"), Vec::<String>::new());
        assert_eq!(all(&h, "x-forwarded-for"), ["1.2.3.4,10.1.0.5"]);
        assert_eq!(all(&h, "x-forwarded-proto"), ["http"]);
        assert_eq!(
            all(&h, "x-request-id"),
            ["00000000-0000-4000-8000-000000000000"]
        );
    }
}
