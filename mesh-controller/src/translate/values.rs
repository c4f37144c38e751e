//! Parsers for the string-typed values of the Istio and Gateway APIs: durations, ports, CIDRs
//! and percentages. Each returns a message suitable for a [`ConfigError`](crate::error::ConfigError).

use std::net::IpAddr;

use mesh_common::model::IpBlock;

/// Parses a Go/protobuf duration (`1.5s`, `100ms`, `1h30m`) into milliseconds.
pub fn duration_ms(text: &str) -> Result<u64, String> {
    let err = || format!("invalid duration {text:?} (expected e.g. 500ms, 10s, 1m)");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(err());
    }
    let mut total_ns: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        if num_len == 0 {
            return Err(err());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| err())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(err()),
        };
        rest = &rest[unit_len..];
        total_ns += value * scale;
    }
    let ms = (total_ns / 1e6).round();
    if !ms.is_finite() || ms > 1e15 {
        return Err(err());
    }
    // Non-negative and bounded above, so the cast is exact enough.
    Ok(ms as u64)
}

/// A port number 1-65535.
pub fn port(value: i64) -> Result<u16, String> {
    u16::try_from(value)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("invalid port {value} (must be 1-65535)"))
}

/// A port given as a string (AuthorizationPolicy, portLevelMtls).
pub fn port_str(text: &str) -> Result<u16, String> {
    text.trim()
        .parse::<i64>()
        .map_err(|_| format!("invalid port {text:?} (must be 1-65535)"))
        .and_then(port)
}

/// A share in percent, 0-100.
pub fn percentage(value: f64) -> Result<f64, String> {
    if (0.0..=100.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("invalid percentage {value} (must be 0-100)"))
    }
}

/// An address or CIDR.
pub fn ip_block(text: &str) -> Result<IpBlock, String> {
    let err = || format!("invalid IP address or CIDR {text:?}");
    let (addr, len) = match text.split_once('/') {
        Some((addr, len)) => (addr, Some(len)),
        None => (text, None),
    };
    let address: IpAddr = addr.trim().parse().map_err(|_| err())?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    let prefix_len = match len {
        Some(len) => len.trim().parse::<u8>().map_err(|_| err())?,
        None => max,
    };
    if prefix_len > max {
        return Err(err());
    }
    Ok(IpBlock {
        address,
        prefix_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration_ms("10s"), Ok(10_000));
        assert_eq!(duration_ms("1.5s"), Ok(1_500));
        assert_eq!(duration_ms("100ms"), Ok(100));
        assert_eq!(duration_ms("1h30m"), Ok(5_400_000));
        for bad in ["", "10", "s", "1x", "-1s", "1..2s"] {
            assert!(duration_ms(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn cidrs() {
        assert_eq!(ip_block("10.0.0.0/8").map(|b| b.prefix_len), Ok(8));
        assert_eq!(ip_block("10.1.2.3").map(|b| b.prefix_len), Ok(32));
        assert!(ip_block("10.0.0.0/33").is_err());
        assert!(ip_block("nope").is_err());
    }
}
