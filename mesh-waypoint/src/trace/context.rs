//! Trace context on the wire: W3C `traceparent` (`tracestate` is the caller's and is kept) and
//! B3, multi-header (`x-b3-traceid`, `x-b3-spanid`, `x-b3-parentspanid`, `x-b3-sampled`,
//! `x-b3-flags`) and single-header (`b3`). Parsing and injection are pure functions on
//! [`HeaderMap`]; a malformed header is ignored (a new trace starts), never an error.

use std::fmt::Write as _;

use http::{HeaderMap, HeaderName, HeaderValue};

/// `traceparent`.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate`.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// `x-b3-traceid`.
pub const X_B3_TRACEID: HeaderName = HeaderName::from_static("x-b3-traceid");
/// `x-b3-spanid`.
pub const X_B3_SPANID: HeaderName = HeaderName::from_static("x-b3-spanid");
/// `x-b3-parentspanid`.
pub const X_B3_PARENTSPANID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
/// `x-b3-sampled`.
pub const X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
/// `x-b3-flags`.
pub const X_B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");
/// `b3` (single header).
pub const B3: HeaderName = HeaderName::from_static("b3");

/// Where an incoming context was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `traceparent`.
    W3c,
    /// The single `b3` header.
    B3Single,
    /// The `x-b3-*` headers.
    B3Multi,
}

/// The caller's span, as a request names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parent {
    /// Trace id (never 0).
    pub trace_id: u128,
    /// The caller's span id (never 0): the parent of the waypoint's span.
    pub span_id: u64,
    /// Whether the trace id came as 64 bits (B3 `x-b3-traceid` of 16 hex digits), so B3 out
    /// keeps that width.
    pub short_trace_id: bool,
    /// Where it came from.
    pub source: Source,
}

/// What a request's headers say of tracing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extracted {
    /// The caller's span, when a well-formed context came.
    pub parent: Option<Parent>,
    /// The caller's sampling decision: `Some(true)` sampled, `Some(false)` not; `None`
    /// deferred (B3 without a sampled flag, or no context).
    pub sampled: Option<bool>,
    /// B3 debug (`x-b3-flags: 1`, `b3: ...-d`): sampled whatever the rate.
    pub debug: bool,
}

/// The context the waypoint sends upstream: its own span as the new parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// Trace id.
    pub trace_id: u128,
    /// The waypoint's span id.
    pub span_id: u64,
    /// The caller's span id (B3's `x-b3-parentspanid`), if any.
    pub parent_span_id: Option<u64>,
    /// The sampling decision.
    pub sampled: bool,
    /// B3 debug, passed on.
    pub debug: bool,
    /// Whether B3 writes the trace id as 64 bits.
    pub short_trace_id: bool,
    /// Whether the caller's `tracestate` belongs to this trace (it came with a valid
    /// `traceparent`): kept, else removed.
    pub keep_tracestate: bool,
}

fn header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

/// Hex digits only, exactly `len` of them; `lower` refuses upper case (W3C).
fn hex(s: &str, len: usize, lower: bool) -> Option<u128> {
    if s.len() != len
        || !s.bytes().all(|b| {
            b.is_ascii_digit()
                || (b'a'..=b'f').contains(&b)
                || (!lower && (b'A'..=b'F').contains(&b))
        })
    {
        return None;
    }
    u128::from_str_radix(s, 16).ok()
}

fn parse_span_id(s: &str, lower: bool) -> Option<u64> {
    hex(s, 16, lower)
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v != 0)
}

/// A B3 trace id: 16 or 32 hex digits, not 0; (id, whether 64-bit).
fn b3_trace_id(s: &str) -> Option<(u128, bool)> {
    let short = s.len() == 16;
    let id = if short {
        hex(s, 16, false)
    } else {
        hex(s, 32, false)
    }?;
    (id != 0).then_some((id, short))
}

/// Parses `traceparent` (`version-traceid-parentid-flags`): version 00 exactly, a later
/// version with at least those fields (its extra fields ignored), never `ff`.
pub fn parse_traceparent(value: &str) -> Option<(u128, u64, bool)> {
    let value = value.trim();
    let version = value.get(0..2)?;
    let version = hex(version, 2, true)?;
    if version == 0xff || value.get(2..3) != Some("-") {
        return None;
    }
    if (version == 0 && value.len() != 55) || value.len() < 55 {
        return None;
    }
    if value.len() > 55 && value.get(55..56) != Some("-") {
        return None;
    }
    let trace_id = hex(value.get(3..35)?, 32, true).filter(|t| *t != 0)?;
    if value.get(35..36) != Some("-") || value.get(52..53) != Some("-") {
        return None;
    }
    let parent = parse_span_id(value.get(36..52)?, true)?;
    let flags = hex(value.get(53..55)?, 2, true)?;
    Some((trace_id, parent, flags & 1 == 1))
}

/// A B3 sampling state: `1`/`true` yes, `0`/`false` no, `d` debug.
fn b3_sampling(s: &str) -> Option<(bool, bool)> {
    match s {
        "1" | "true" => Some((true, false)),
        "0" | "false" => Some((false, false)),
        "d" => Some((true, true)),
        _ => None,
    }
}

/// Parses the single `b3` header: `{trace}-{span}[-{sampling}[-{parent}]]`, or a sampling
/// state alone (`0`, `1`, `d`). `None` when malformed.
pub fn parse_b3_single(value: &str) -> Option<Extracted> {
    let value = value.trim();
    let parts: Vec<&str> = value.splitn(5, '-').collect();
    match parts.as_slice() {
        [only] => {
            let (sampled, debug) = b3_sampling(only)?;
            Some(Extracted {
                parent: None,
                sampled: Some(sampled),
                debug,
            })
        }
        [trace, span, rest @ ..] if rest.len() <= 2 => {
            let (trace_id, short) = b3_trace_id(trace)?;
            let span_id = parse_span_id(span, false)?;
            let (sampled, debug) = match rest.first() {
                Some(s) => {
                    let (sampled, debug) = b3_sampling(s)?;
                    (Some(sampled), debug)
                }
                None => (None, false),
            };
            if let Some(p) = rest.get(1) {
                parse_span_id(p, false)?;
            }
            Some(Extracted {
                parent: Some(Parent {
                    trace_id,
                    span_id,
                    short_trace_id: short,
                    source: Source::B3Single,
                }),
                sampled,
                debug,
            })
        }
        _ => None,
    }
}

/// Reads the `x-b3-*` headers: trace and span ids both or neither (a sampling decision may
/// come alone); `None` when they are malformed.
pub fn parse_b3_multi(headers: &HeaderMap) -> Option<Extracted> {
    let trace = header(headers, &X_B3_TRACEID);
    let span = header(headers, &X_B3_SPANID);
    let debug = header(headers, &X_B3_FLAGS) == Some("1");
    let sampled = match header(headers, &X_B3_SAMPLED) {
        Some(s) => Some(b3_sampling(s).filter(|(_, d)| !d)?.0),
        None => None,
    };
    let parent = match (trace, span) {
        (Some(trace), Some(span)) => {
            let (trace_id, short) = b3_trace_id(trace)?;
            Some(Parent {
                trace_id,
                span_id: parse_span_id(span, false)?,
                short_trace_id: short,
                source: Source::B3Multi,
            })
        }
        (None, None) => None,
        _ => return None,
    };
    if parent.is_none() && sampled.is_none() && !debug {
        return None;
    }
    Some(Extracted {
        parent,
        sampled: if debug { Some(true) } else { sampled },
        debug,
    })
}

/// What a request carries: a valid `traceparent` first, else `b3`, else `x-b3-*`; a format
/// that is malformed is skipped; nothing valid: a new trace, the decision deferred.
pub fn extract(headers: &HeaderMap) -> Extracted {
    if let Some((trace_id, span_id, sampled)) =
        header(headers, &TRACEPARENT).and_then(parse_traceparent)
    {
        return Extracted {
            parent: Some(Parent {
                trace_id,
                span_id,
                short_trace_id: false,
                source: Source::W3c,
            }),
            sampled: Some(sampled),
            debug: false,
        };
    }
    if let Some(e) = header(headers, &B3).and_then(parse_b3_single) {
        return e;
    }
    parse_b3_multi(headers).unwrap_or_default()
}

fn hex_value(s: &str) -> HeaderValue {
    // Hex digits and dashes only: always a valid header value.
    HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(""))
}

/// The trace id as B3 writes it (16 or 32 hex digits).
fn b3_trace(out: &Outgoing) -> String {
    if out.short_trace_id && out.trace_id >> 64 == 0 {
        format!("{:016x}", out.trace_id)
    } else {
        format!("{:032x}", out.trace_id)
    }
}

/// Writes the waypoint's context into the upstream request: `traceparent` and `x-b3-*`
/// always, `b3` when the request had one; `tracestate` kept only when it is this trace's.
pub fn inject(headers: &mut HeaderMap, out: &Outgoing) {
    let flag = if out.sampled { "01" } else { "00" };
    headers.insert(
        TRACEPARENT,
        hex_value(&format!(
            "00-{:032x}-{:016x}-{flag}",
            out.trace_id, out.span_id
        )),
    );
    if !out.keep_tracestate {
        headers.remove(TRACESTATE);
    }
    let trace = b3_trace(out);
    headers.insert(X_B3_TRACEID, hex_value(&trace));
    headers.insert(X_B3_SPANID, hex_value(&format!("{:016x}", out.span_id)));
    match out.parent_span_id {
        Some(p) => {
            headers.insert(X_B3_PARENTSPANID, hex_value(&format!("{p:016x}")));
        }
        None => {
            headers.remove(X_B3_PARENTSPANID);
        }
    }
    headers.insert(
        X_B3_SAMPLED,
        HeaderValue::from_static(if out.sampled { "1" } else { "0" }),
    );
    if out.debug {
        headers.insert(X_B3_FLAGS, HeaderValue::from_static("1"));
    } else {
        headers.remove(X_B3_FLAGS);
    }
    if headers.contains_key(B3) {
        let mut single = format!("{trace}-{:016x}-", out.span_id);
        single.push_str(match (out.debug, out.sampled) {
            (true, _) => "d",
            (false, true) => "1",
            (false, false) => "0",
        });
        if let Some(p) = out.parent_span_id {
            let _ = write!(single, "-{p:016x}");
        }
        headers.insert(B3, hex_value(&single));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const TID: u128 = 0x4bf92f3577b34da6a3ce929d0e0e4736;
    const S: &str = "00f067aa0ba902b7";
    const SID: u64 = 0x00f067aa0ba902b7;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    /// A header value and what it parses to.
    type Case<T> = (String, Option<T>);
    /// Request headers and what they give.
    type HeaderCase<'a, T> = (Vec<(&'a str, &'a str)>, T);
    /// Request headers, the context read (trace id, format) and the sampling decision.
    type Extraction<'a> = (
        Vec<(&'a str, &'a str)>,
        Option<(u128, Source)>,
        Option<bool>,
    );

    fn parent(trace_id: u128, span_id: u64, short: bool, source: Source) -> Option<Parent> {
        Some(Parent {
            trace_id,
            span_id,
            short_trace_id: short,
            source,
        })
    }

    #[test]
    fn traceparent_values() {
        let long = format!("01-{T}-{S}-01-what-comes-next");
        let cases: Vec<Case<(u128, u64, bool)>> = vec![
            (format!("00-{T}-{S}-01"), Some((TID, SID, true))),
            (format!("00-{T}-{S}-00"), Some((TID, SID, false))),
            (format!("00-{T}-{S}-03"), Some((TID, SID, true))),
            (format!(" 00-{T}-{S}-01 "), Some((TID, SID, true))),
            (long, Some((TID, SID, true))),
            (format!("01-{T}-{S}-01x"), None),
            (format!("00-{T}-{S}-01-x"), None),
            (format!("ff-{T}-{S}-01"), None),
            (format!("00-{}-{S}-01", "0".repeat(32)), None),
            (format!("00-{T}-{}-01", "0".repeat(16)), None),
            (format!("00-{}-{S}-01", T.to_uppercase()), None),
            (format!("00-{T}-{S}-0g"), None),
            (format!("00-{T}-{S}"), None),
            (format!("00_{T}_{S}_01"), None),
            (format!("0-{T}-{S}-01"), None),
            (format!("00-{T}{S}-01-"), None),
            ("".into(), None),
            ("00-é".into(), None),
            (
                "00-€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€".into(),
                None,
            ),
        ];
        for (value, want) in cases {
            assert_eq!(parse_traceparent(&value), want, "{value:?}");
        }
    }

    #[test]
    fn b3_single_values() {
        let short = "a3ce929d0e0e4736";
        let cases: Vec<Case<Extracted>> = vec![
            (
                format!("{T}-{S}-1"),
                Some(Extracted {
                    parent: parent(TID, SID, false, Source::B3Single),
                    sampled: Some(true),
                    debug: false,
                }),
            ),
            (
                format!("{short}-{S}"),
                Some(Extracted {
                    parent: parent(0xa3ce929d0e0e4736, SID, true, Source::B3Single),
                    sampled: None,
                    debug: false,
                }),
            ),
            (
                format!("{T}-{S}-d-{S}"),
                Some(Extracted {
                    parent: parent(TID, SID, false, Source::B3Single),
                    sampled: Some(true),
                    debug: true,
                }),
            ),
            (
                format!("{T}-{S}-0"),
                Some(Extracted {
                    parent: parent(TID, SID, false, Source::B3Single),
                    sampled: Some(false),
                    debug: false,
                }),
            ),
            (
                "0".into(),
                Some(Extracted {
                    parent: None,
                    sampled: Some(false),
                    debug: false,
                }),
            ),
            (
                "d".into(),
                Some(Extracted {
                    parent: None,
                    sampled: Some(true),
                    debug: true,
                }),
            ),
            (format!("{T}-{S}-2"), None),
            (format!("{T}-{S}-1-zz"), None),
            (format!("{T}-{S}-1-{S}-x"), None),
            (T.to_string(), None),
            (format!("{T}-"), None),
            (format!("{}-{S}-1", "0".repeat(32)), None),
            (format!("abc-{S}-1"), None),
            ("".into(), None),
            ("yes".into(), None),
        ];
        for (value, want) in cases {
            assert_eq!(parse_b3_single(&value), want, "{value:?}");
        }
    }

    #[test]
    fn b3_multi_headers() {
        let cases: Vec<HeaderCase<Option<Extracted>>> = vec![
            (
                vec![
                    ("x-b3-traceid", T),
                    ("x-b3-spanid", S),
                    ("x-b3-sampled", "1"),
                ],
                Some(Extracted {
                    parent: parent(TID, SID, false, Source::B3Multi),
                    sampled: Some(true),
                    debug: false,
                }),
            ),
            (
                vec![
                    ("x-b3-traceid", "A3CE929D0E0E4736"),
                    ("x-b3-spanid", S),
                    ("x-b3-parentspanid", "0000000000000001"),
                ],
                Some(Extracted {
                    parent: parent(0xa3ce929d0e0e4736, SID, true, Source::B3Multi),
                    sampled: None,
                    debug: false,
                }),
            ),
            (
                vec![("x-b3-traceid", T), ("x-b3-spanid", S), ("x-b3-flags", "1")],
                Some(Extracted {
                    parent: parent(TID, SID, false, Source::B3Multi),
                    sampled: Some(true),
                    debug: true,
                }),
            ),
            (
                vec![("x-b3-sampled", "0")],
                Some(Extracted {
                    parent: None,
                    sampled: Some(false),
                    debug: false,
                }),
            ),
            (
                vec![
                    ("x-b3-traceid", T),
                    ("x-b3-spanid", S),
                    ("x-b3-sampled", "false"),
                ],
                Some(Extracted {
                    parent: parent(TID, SID, false, Source::B3Multi),
                    sampled: Some(false),
                    debug: false,
                }),
            ),
            (vec![("x-b3-traceid", T)], None),
            (vec![("x-b3-spanid", S)], None),
            (vec![("x-b3-traceid", "123"), ("x-b3-spanid", S)], None),
            (
                vec![("x-b3-traceid", T), ("x-b3-spanid", "0000000000000000")],
                None,
            ),
            (
                vec![
                    ("x-b3-traceid", T),
                    ("x-b3-spanid", S),
                    ("x-b3-sampled", "maybe"),
                ],
                None,
            ),
            (vec![], None),
        ];
        for (pairs, want) in cases {
            assert_eq!(parse_b3_multi(&map(&pairs)), want, "{pairs:?}");
        }
    }

    #[test]
    fn extraction_prefers_a_valid_traceparent_then_b3() {
        let w3c = format!("00-{T}-{S}-00");
        let other = "11111111111111111111111111111111";
        let b3 = format!("{other}-{S}-1");
        let cases: Vec<Extraction> = vec![
            (
                vec![
                    ("traceparent", &w3c),
                    ("x-b3-traceid", other),
                    ("x-b3-spanid", S),
                ],
                Some((TID, Source::W3c)),
                Some(false),
            ),
            (
                vec![("traceparent", "garbage"), ("b3", &b3)],
                Some((0x11111111111111111111111111111111, Source::B3Single)),
                Some(true),
            ),
            (
                vec![
                    ("traceparent", "garbage"),
                    ("b3", "junk"),
                    ("x-b3-traceid", other),
                    ("x-b3-spanid", S),
                ],
                Some((0x11111111111111111111111111111111, Source::B3Multi)),
                None,
            ),
            (vec![("traceparent", "garbage")], None, None),
            (vec![("x-b3-traceid", T)], None, None),
            (vec![], None, None),
        ];
        for (pairs, want, sampled) in cases {
            let got = extract(&map(&pairs));
            assert_eq!(
                got.parent.map(|p| (p.trace_id, p.source)),
                want,
                "{pairs:?}"
            );
            assert_eq!(got.sampled, sampled, "{pairs:?}");
        }
    }

    fn get(h: &HeaderMap, name: &str) -> Option<String> {
        h.get(name).map(|v| v.to_str().expect("ascii").to_owned())
    }

    #[test]
    fn injection_writes_both_formats() {
        let out = Outgoing {
            trace_id: TID,
            span_id: 0x1111_2222_3333_4444,
            parent_span_id: Some(SID),
            sampled: true,
            debug: false,
            short_trace_id: false,
            keep_tracestate: true,
        };
        let mut h = map(&[
            ("tracestate", "vendor=1"),
            ("x-b3-flags", "1"),
            ("b3", "junk"),
            ("x-request-id", "abc"),
        ]);
        inject(&mut h, &out);
        assert_eq!(
            get(&h, "traceparent").as_deref(),
            Some(format!("00-{T}-1111222233334444-01").as_str())
        );
        assert_eq!(get(&h, "tracestate").as_deref(), Some("vendor=1"));
        assert_eq!(get(&h, "x-b3-traceid").as_deref(), Some(T));
        assert_eq!(get(&h, "x-b3-spanid").as_deref(), Some("1111222233334444"));
        assert_eq!(get(&h, "x-b3-parentspanid").as_deref(), Some(S));
        assert_eq!(get(&h, "x-b3-sampled").as_deref(), Some("1"));
        assert_eq!(get(&h, "x-b3-flags"), None);
        assert_eq!(
            get(&h, "b3").as_deref(),
            Some(format!("{T}-1111222233334444-1-{S}").as_str())
        );
        assert_eq!(get(&h, "x-request-id").as_deref(), Some("abc"));

        // A new, unsampled 64-bit B3 trace: no parent, the stale tracestate dropped, no `b3`
        // added.
        let out = Outgoing {
            trace_id: 0xa3ce929d0e0e4736,
            span_id: 5,
            parent_span_id: None,
            sampled: false,
            debug: false,
            short_trace_id: true,
            keep_tracestate: false,
        };
        let mut h = map(&[("tracestate", "vendor=1"), ("x-b3-parentspanid", S)]);
        inject(&mut h, &out);
        assert_eq!(
            get(&h, "traceparent").as_deref(),
            Some("00-0000000000000000a3ce929d0e0e4736-0000000000000005-00")
        );
        assert_eq!(get(&h, "tracestate"), None);
        assert_eq!(get(&h, "x-b3-traceid").as_deref(), Some("a3ce929d0e0e4736"));
        assert_eq!(get(&h, "x-b3-parentspanid"), None);
        assert_eq!(get(&h, "x-b3-sampled").as_deref(), Some("0"));
        assert_eq!(get(&h, "b3"), None);

        // What was injected reads back as the waypoint's span.
        let back = extract(&h);
        assert_eq!(
            back.parent.map(|p| (p.trace_id, p.span_id)),
            Some((0xa3ce929d0e0e4736, 5))
        );
        assert_eq!(back.sampled, Some(false));
    }
}
