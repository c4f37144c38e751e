//! The JSON the app speaks: one object per line on stdout, and the shapes shared by the server
//! and the clients (header maps, protocol versions, a response's server name).

use std::io::Write;

use anyhow::Context;
use hyper::header::HeaderMap;
use hyper::Version;
use serde_json::{Map, Value};

/// Prints one JSON object on its own line and flushes it (tests read lines as they come).
pub fn emit(value: &Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{value}")
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

/// Header names (lower case, as hyper holds them) to values, repeated ones joined by `,`;
/// a value that is not UTF-8 is shown lossily.
pub fn headers_json(headers: &HeaderMap) -> Value {
    let mut map = Map::new();
    for name in headers.keys() {
        let joined = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(",");
        map.insert(name.as_str().to_string(), Value::String(joined));
    }
    Value::Object(map)
}

/// `HTTP/1.1`, `HTTP/2.0`, ...
pub fn version_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "unknown",
    }
}

/// A body as JSON if it is JSON, else as a (lossy) string.
pub fn body_value(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// The `server` a response body names, or `-` for a body that is not such JSON (a proxy's own
/// answer, say).
pub fn server_of(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("server").and_then(Value::as_str).map(String::from))
        .unwrap_or_else(|| "-".to_string())
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use hyper::header::HeaderValue;
    use serde_json::json;

    use super::*;

    #[test]
    fn repeated_headers_join_with_commas() {
        type Case<'a> = (&'a [(&'a str, &'a [u8])], Value);
        let cases: &[Case] = &[
            (&[], json!({})),
            (&[("X-One", b"1")], json!({"x-one": "1"})),
            (
                &[("accept", b"a"), ("Accept", b"b"), ("host", b"h")],
                json!({"accept": "a,b", "host": "h"}),
            ),
            (&[("x-bin", b"caf\xe9")], json!({"x-bin": "caf\u{fffd}"})),
        ];
        for (headers, want) in cases {
            let mut map = HeaderMap::new();
            for (name, value) in *headers {
                let name = hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap();
                map.append(name, HeaderValue::from_bytes(value).unwrap());
            }
            assert_eq!(&headers_json(&map), want, "{headers:?}");
        }
    }

    #[test]
    fn server_names_or_dash() {
        let cases: &[(&[u8], &str)] = &[
            (br#"{"server": "v2", "x": 1}"#, "v2"),
            (br#"{"server": 3}"#, "-"),
            (br#"{"other": "v2"}"#, "-"),
            (b"no healthy upstream", "-"),
            (b"", "-"),
            (br#"["server"]"#, "-"),
        ];
        for (body, want) in cases {
            assert_eq!(
                server_of(body),
                *want,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn bodies_are_json_or_text() {
        assert_eq!(body_value(br#"{"a": 1}"#), json!({"a": 1}));
        assert_eq!(
            body_value(b"RBAC: access denied"),
            json!("RBAC: access denied")
        );
        assert_eq!(body_value(b""), json!(""));
    }

    #[test]
    fn versions_have_their_names() {
        assert_eq!(version_name(Version::HTTP_11), "HTTP/1.1");
        assert_eq!(version_name(Version::HTTP_2), "HTTP/2.0");
        assert_eq!(version_name(Version::HTTP_10), "HTTP/1.0");
    }
}
