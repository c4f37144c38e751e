//! The application protocol a service port declares, read as Istio reads it: the port's
//! `appProtocol` (including Kubernetes' standard `kubernetes.io/h2c` and `kubernetes.io/ws`),
//! else the prefix of its name before the first `-` (`http`, `http-web`, `grpc`, `grpc-web`,
//! `tcp-db`…), case-insensitively; for a ServiceEntry, its `protocol` field. Anything else is
//! left to the waypoint to detect. UDP ports carry nothing the mesh proxies.

use mesh_common::model::PortProtocol;

/// The protocol `app_protocol` (else `name`) declares; `None`: detect.
pub fn port_protocol(app_protocol: Option<&str>, name: Option<&str>) -> Option<PortProtocol> {
    let declared = app_protocol.filter(|p| !p.is_empty()).or(name)?;
    match declared {
        "kubernetes.io/h2c" => return Some(PortProtocol::Http2),
        "kubernetes.io/ws" => return Some(PortProtocol::Http),
        "kubernetes.io/wss" => return Some(PortProtocol::Tcp),
        _ => {}
    }
    let lower = declared.to_ascii_lowercase();
    // `grpc-web` has a `-` of its own: checked before the prefix is cut.
    if lower.starts_with("grpc-web") {
        return Some(PortProtocol::Http);
    }
    let prefix = lower.split('-').next().unwrap_or_default();
    match prefix {
        "http" => Some(PortProtocol::Http),
        "http2" => Some(PortProtocol::Http2),
        "grpc" => Some(PortProtocol::Grpc),
        "tcp" | "tls" | "https" | "mongo" | "redis" | "mysql" => Some(PortProtocol::Tcp),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_from_app_protocol_then_name() {
        use PortProtocol::{Grpc, Http, Http2, Tcp};
        // (appProtocol, name, expected)
        #[rustfmt::skip]
        let cases: &[(Option<&str>, Option<&str>, Option<PortProtocol>)] = &[
            (Some("http"), None, Some(Http)),
            (Some("HTTP"), None, Some(Http)),
            (Some("http2"), None, Some(Http2)),
            (Some("grpc"), None, Some(Grpc)),
            (Some("kubernetes.io/h2c"), None, Some(Http2)),
            (Some("kubernetes.io/ws"), None, Some(Http)),
            (Some("kubernetes.io/wss"), None, Some(Tcp)),
            (Some("tcp"), None, Some(Tcp)),
            (Some("tls"), None, Some(Tcp)),
            (Some("https"), None, Some(Tcp)),
            (Some("grpc-web"), None, Some(Http)),
            (Some("example.com/custom"), Some("http"), None),
            (Some("tcp"), Some("http-web"), Some(Tcp)),
            (Some(""), Some("http-web"), Some(Http)),
            (None, Some("http"), Some(Http)),
            (None, Some("http-web"), Some(Http)),
            (None, Some("HTTP-web"), Some(Http)),
            (None, Some("http2"), Some(Http2)),
            (None, Some("http2-api"), Some(Http2)),
            (None, Some("grpc"), Some(Grpc)),
            (None, Some("grpc-api"), Some(Grpc)),
            (None, Some("grpc-web"), Some(Http)),
            (None, Some("grpc-web-ui"), Some(Http)),
            (None, Some("tcp"), Some(Tcp)),
            (None, Some("tls-db"), Some(Tcp)),
            (None, Some("mongo"), Some(Tcp)),
            (None, Some("redis-cache"), Some(Tcp)),
            (None, Some("mysql"), Some(Tcp)),
            (None, Some("web"), None),
            (None, Some("httpx"), None),
            (None, Some("web-http"), None),
            (None, Some(""), None),
            (None, None, None),
        ];
        for (app, name, want) in cases {
            assert_eq!(port_protocol(*app, *name), *want, "{app:?} {name:?}");
        }
    }
}
