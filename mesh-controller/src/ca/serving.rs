//! The names of the controller's serving certificate (what agents dial): `--serving-san` if
//! given, else the host name and every specific listen address of the config stream and the
//! certificate service.

use std::net::SocketAddr;

use mesh_hbone::ca::ServingName;

/// Why no serving name could be decided.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServingNameError {
    /// A `--serving-san` value is neither a DNS name nor an IP address.
    #[error("--serving-san {0:?}: neither a DNS name nor an IP address")]
    Invalid(String),
    /// Nothing to put in the certificate.
    #[error(
        "no name for the serving certificate: the listen addresses are unspecified and the host \
         name is unknown; give --serving-san (the DNS names or IPs agents dial)"
    )]
    None,
}

/// The serving certificate's names: `flags` if any, else `hostname` plus the specific (not
/// 0.0.0.0 / ::) addresses of `listen`, without duplicates, in that order.
pub fn serving_names(
    flags: &[String],
    hostname: Option<&str>,
    listen: &[SocketAddr],
) -> Result<Vec<ServingName>, ServingNameError> {
    let mut names: Vec<ServingName> = Vec::new();
    let mut push = |name: ServingName| {
        if !names.contains(&name) {
            names.push(name);
        }
    };
    if !flags.is_empty() {
        for flag in flags {
            push(
                flag.trim()
                    .parse()
                    .map_err(|_| ServingNameError::Invalid(flag.clone()))?,
            );
        }
        return Ok(names);
    }
    if let Some(name) = hostname.and_then(|h| h.trim().parse::<ServingName>().ok()) {
        push(name);
    }
    for addr in listen {
        if !addr.ip().is_unspecified() {
            push(ServingName::Ip(addr.ip()));
        }
    }
    if names.is_empty() {
        return Err(ServingNameError::None);
    }
    Ok(names)
}

/// This machine's host name, if it has a usable one.
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns(name: &str) -> ServingName {
        ServingName::Dns(name.to_owned())
    }

    fn ip(addr: &str) -> ServingName {
        ServingName::Ip(addr.parse().expect("test IP"))
    }

    /// Flags, host name, listen addresses, and the names expected.
    type Case<'a> = (
        Vec<String>,
        Option<&'a str>,
        Vec<SocketAddr>,
        Result<Vec<ServingName>, ServingNameError>,
    );

    #[test]
    fn names_come_from_flags_or_from_the_host_and_listen_addresses() {
        let any: SocketAddr = "0.0.0.0:15010".parse().expect("addr");
        let cp: SocketAddr = "198.18.0.254:15010".parse().expect("addr");
        let cp_ca: SocketAddr = "198.18.0.254:15012".parse().expect("addr");
        let v6: SocketAddr = "[fd18::fe]:15012".parse().expect("addr");
        let flags = |f: &[&str]| f.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cases: Vec<Case> = vec![
            (
                flags(&[]),
                Some("ctl"),
                vec![cp, cp_ca],
                Ok(vec![dns("ctl"), ip("198.18.0.254")]),
            ),
            (
                flags(&[]),
                Some("ctl"),
                vec![any, v6],
                Ok(vec![dns("ctl"), ip("fd18::fe")]),
            ),
            (
                flags(&[]),
                None,
                vec![any, any],
                Err(ServingNameError::None),
            ),
            (
                flags(&[]),
                Some("not a name"),
                vec![cp],
                Ok(vec![ip("198.18.0.254")]),
            ),
            (
                flags(&["mesh-controller.mesh-system.svc", "198.18.0.254"]),
                Some("ctl"),
                vec![any],
                Ok(vec![
                    dns("mesh-controller.mesh-system.svc"),
                    ip("198.18.0.254"),
                ]),
            ),
            (
                flags(&["a..b"]),
                Some("ctl"),
                vec![cp],
                Err(ServingNameError::Invalid("a..b".into())),
            ),
        ];
        for (flags, host, listen, expected) in cases {
            assert_eq!(
                serving_names(&flags, host, &listen),
                expected,
                "{flags:?} {host:?} {listen:?}"
            );
        }
    }
}
