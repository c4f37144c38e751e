//! gRPC over the control plane's TLS ([`crate::tls::control`]) for tonic: the client connector
//! (TCP, then TLS verified against the pinned roots and the host dialed), the config-stream
//! transport of agents ([`ControlPlaneTransport`]), and the servers' listener that hands tonic
//! only connections whose TLS handshake succeeded ([`tls_incoming`]): plaintext and failed
//! handshakes are refused, logged and counted before any gRPC is read.

mod client;
mod incoming;

use std::time::Duration;

use rustls_pki_types::ServerName;

pub(crate) use client::lazy_channel;
pub use client::{ControlPlaneConnector, ControlPlaneTransport};
pub use incoming::{tls_incoming, HandshakeStats, TlsConn, TlsIncoming};

use crate::tls::TlsError;

/// Longest a TLS handshake may take, on either side.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most handshakes a server runs at once; further connections wait in the kernel's backlog.
pub const MAX_CONCURRENT_HANDSHAKES: usize = 256;

/// Why a control-plane URL or channel was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// An `http://` URL: the control plane speaks TLS only.
    #[error(
        "{0}: plaintext http:// is refused: the control plane is served over TLS only (the \
         node's bearer token would cross the network in clear); use https://"
    )]
    Plaintext(String),
    /// Not a URL of the form `https://host:port`.
    #[error("{url}: {reason} (expected https://host:port)")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The TLS client configuration could not be built.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A parsed control-plane URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlaneUrl {
    /// The URL, normalised (`https://host:port`).
    pub uri: String,
    /// The host as dialed: a DNS name or an IP address (without brackets).
    pub host: String,
    /// The port.
    pub port: u16,
}

impl ControlPlaneUrl {
    /// The name the serving certificate must be valid for.
    pub fn server_name(&self) -> Result<ServerName<'static>, TransportError> {
        ServerName::try_from(self.host.clone()).map_err(|_| TransportError::BadUrl {
            url: self.uri.clone(),
            reason: "the host is neither a DNS name nor an IP address",
        })
    }
}

/// Parses `https://host:port` (no path other than `/`); refuses `http://` with a clear error.
pub fn parse_url(url: &str) -> Result<ControlPlaneUrl, TransportError> {
    let bad = |reason| TransportError::BadUrl {
        url: url.to_owned(),
        reason,
    };
    let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") => return Err(TransportError::Plaintext(url.to_owned())),
        Some(_) => return Err(bad("unsupported scheme")),
        None => return Err(bad("no scheme")),
    }
    let host = uri.host().filter(|h| !h.is_empty()).ok_or(bad("no host"))?;
    let port = uri.port_u16().ok_or(bad("no port"))?;
    if (uri.path() != "/" && !uri.path().is_empty()) || uri.query().is_some() {
        return Err(bad("a path or query is not expected"));
    }
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let parsed = ControlPlaneUrl {
        uri: match host.contains(':') {
            true => format!("https://[{host}]:{port}"),
            false => format!("https://{host}:{port}"),
        },
        host,
        port,
    };
    parsed.server_name()?;
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_https_host_and_port_only() {
        let ok = |url: &str, host: &str, port: u16, uri: &str| {
            assert_eq!(
                parse_url(url),
                Ok(ControlPlaneUrl {
                    uri: uri.to_owned(),
                    host: host.to_owned(),
                    port
                }),
                "{url}"
            );
        };
        ok(
            "https://198.18.0.254:15012",
            "198.18.0.254",
            15012,
            "https://198.18.0.254:15012",
        );
        ok(
            "https://mesh-controller.mesh-system.svc:15010/",
            "mesh-controller.mesh-system.svc",
            15010,
            "https://mesh-controller.mesh-system.svc:15010",
        );
        ok(
            "https://[fd18::1]:15012",
            "fd18::1",
            15012,
            "https://[fd18::1]:15012",
        );
        for (url, plaintext) in [
            ("http://198.18.0.254:15012", true),
            ("http://controller:15010", true),
            ("https://198.18.0.254", false),
            ("198.18.0.254:15012", false),
            ("grpc://198.18.0.254:15012", false),
            ("https://198.18.0.254:15012/x", false),
            ("https://:15012", false),
            ("", false),
        ] {
            let err = parse_url(url).expect_err(url);
            assert_eq!(
                matches!(err, TransportError::Plaintext(_)),
                plaintext,
                "{url}: {err}"
            );
        }
    }

    #[test]
    fn the_plaintext_refusal_says_why_and_what_to_use() {
        let err = parse_url("http://198.18.0.254:15012").expect_err("plaintext");
        let text = err.to_string();
        assert!(
            text.contains("refused") && text.contains("https://"),
            "{text}"
        );
    }
}
