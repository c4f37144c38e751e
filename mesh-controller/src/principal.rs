//! Who a control-plane credential names: a node (its agent) or a waypoint. A bootstrap token
//! (or a reviewed Kubernetes token) proves one principal; the certificate service and the
//! config stream decide from it what may be signed and which stream may open. Waypoint
//! principals are written `waypoint/<namespace>/<name>`; node names never contain a `/`, so the
//! two cannot be confused.

use std::fmt;
use std::str::FromStr;

/// The prefix of waypoint principals.
pub const WAYPOINT_PREFIX: &str = "waypoint/";

/// The principal a credential proves.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Principal {
    /// The agent of a node.
    Node(String),
    /// The instances of the waypoint declared by Gateway `<namespace>/<name>`.
    Waypoint {
        /// Namespace of the waypoint's Gateway.
        namespace: String,
        /// Name of the waypoint's Gateway.
        name: String,
    },
}

/// A principal that is neither a node name nor `waypoint/<namespace>/<name>`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PrincipalError {
    /// Empty.
    #[error("empty principal")]
    Empty,
    /// A `/` outside the waypoint form.
    #[error(
        "{0:?}: a '/' is only allowed in waypoint/<namespace>/<name> (node names contain none)"
    )]
    Slash(String),
    /// A waypoint principal whose namespace or name is not a Kubernetes name.
    #[error(
        "{0:?}: expected waypoint/<namespace>/<name> with lowercase DNS names (letters, digits, \
         '-', '.')"
    )]
    BadWaypoint(String),
}

/// A Kubernetes object name (RFC 1123 subdomain: lowercase alphanumerics, `-`, `.`).
fn dns_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

impl FromStr for Principal {
    type Err = PrincipalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(PrincipalError::Empty);
        }
        if let Some(rest) = s.strip_prefix(WAYPOINT_PREFIX) {
            return match rest.split_once('/') {
                Some((namespace, name))
                    if dns_name(namespace, 63)
                        && !namespace.contains('.')
                        && dns_name(name, 253) =>
                {
                    Ok(Principal::Waypoint {
                        namespace: namespace.to_owned(),
                        name: name.to_owned(),
                    })
                }
                _ => Err(PrincipalError::BadWaypoint(s.to_owned())),
            };
        }
        if s.contains('/') {
            return Err(PrincipalError::Slash(s.to_owned()));
        }
        Ok(Principal::Node(s.to_owned()))
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Node(node) => f.write_str(node),
            Principal::Waypoint { namespace, name } => {
                write!(f, "{WAYPOINT_PREFIX}{namespace}/{name}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_parse_as_nodes_or_waypoints() {
        let waypoint = |ns: &str, name: &str| {
            Ok(Principal::Waypoint {
                namespace: ns.to_owned(),
                name: name.to_owned(),
            })
        };
        #[rustfmt::skip]
        let cases: &[(&str, Result<Principal, PrincipalError>)] = &[
            ("node1", Ok(Principal::Node("node1".to_owned()))),
            ("Node_1.example", Ok(Principal::Node("Node_1.example".to_owned()))),
            ("waypoint/apps/wp", waypoint("apps", "wp")),
            ("waypoint/apps/wp.v1-a", waypoint("apps", "wp.v1-a")),
            ("waypoint", Ok(Principal::Node("waypoint".to_owned()))),
            ("", Err(PrincipalError::Empty)),
            ("node/1", Err(PrincipalError::Slash("node/1".to_owned()))),
            ("waypoint/apps", Err(PrincipalError::BadWaypoint("waypoint/apps".to_owned()))),
            ("waypoint/apps/", Err(PrincipalError::BadWaypoint("waypoint/apps/".to_owned()))),
            ("waypoint//wp", Err(PrincipalError::BadWaypoint("waypoint//wp".to_owned()))),
            ("waypoint/apps/wp/x", Err(PrincipalError::BadWaypoint("waypoint/apps/wp/x".to_owned()))),
            ("waypoint/Apps/wp", Err(PrincipalError::BadWaypoint("waypoint/Apps/wp".to_owned()))),
            ("waypoint/a.b/wp", Err(PrincipalError::BadWaypoint("waypoint/a.b/wp".to_owned()))),
            ("waypoint/apps/-wp", Err(PrincipalError::BadWaypoint("waypoint/apps/-wp".to_owned()))),
        ];
        for (text, expected) in cases {
            assert_eq!(&text.parse::<Principal>(), expected, "{text:?}");
            if let Ok(p) = expected {
                assert_eq!(p.to_string(), *text, "round trip");
            }
        }
    }
}
