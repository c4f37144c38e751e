//! Host names: qualifying Kubernetes short names, and an index by host where an exact name beats
//! the longest `*.` wildcard, which beats `*`.

use std::collections::{HashMap, HashSet};

/// The Kubernetes cluster DNS domain services are named under.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// A host as compared: lower case, without a trailing dot.
pub fn normalize(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// The service host name `<name>.<namespace>.svc.cluster.local`.
pub fn service_fqdn(namespace: &str, name: &str) -> String {
    format!("{name}.{namespace}.svc.{CLUSTER_DOMAIN}")
}

/// Qualifies a host written in an object of `namespace` as Kubernetes DNS would resolve it from
/// there: `reviews` is `reviews.<namespace>.svc.cluster.local`; `reviews.apps` and
/// `reviews.apps.svc` are completed when such a service is `known`; anything else (wildcards,
/// other names) is taken as written.
pub fn qualify(host: &str, namespace: &str, known: &HashSet<String>) -> String {
    let host = normalize(host);
    if host.starts_with('*') || host.parse::<std::net::IpAddr>().is_ok() {
        return host;
    }
    if !host.contains('.') {
        return service_fqdn(namespace, &host);
    }
    if known.contains(&host) {
        return host;
    }
    for suffix in [
        format!(".svc.{CLUSTER_DOMAIN}"),
        format!(".{CLUSTER_DOMAIN}"),
    ] {
        let candidate = format!("{host}{suffix}");
        if known.contains(&candidate) {
            return candidate;
        }
    }
    host
}

/// Values by host name: exact names, then `*.suffix` wildcards (longest suffix first), then `*`.
#[derive(Clone, Debug)]
pub struct HostIndex<T> {
    exact: HashMap<String, T>,
    /// (suffix with its leading dot, or empty for `*`; value), longest suffix first.
    wildcards: Vec<(String, T)>,
}

impl<T> Default for HostIndex<T> {
    fn default() -> Self {
        HostIndex {
            exact: HashMap::new(),
            wildcards: Vec::new(),
        }
    }
}

impl<T> HostIndex<T> {
    /// The value for `host` (normalized), creating it with `make` if absent.
    pub fn entry(&mut self, host: &str, make: impl FnOnce() -> T) -> &mut T {
        let host = normalize(host);
        let suffix = if host == "*" {
            Some(String::new())
        } else {
            host.strip_prefix('*').map(str::to_owned)
        };
        match suffix {
            None => self.exact.entry(host).or_insert_with(make),
            Some(suffix) => {
                let i = match self.wildcards.iter().position(|(s, _)| *s == suffix) {
                    Some(i) => i,
                    None => {
                        // keep longest-first; a stable position among equal lengths
                        let at = self
                            .wildcards
                            .iter()
                            .position(|(s, _)| s.len() < suffix.len())
                            .unwrap_or(self.wildcards.len());
                        self.wildcards.insert(at, (suffix, make()));
                        at
                    }
                };
                &mut self.wildcards[i].1
            }
        }
    }

    /// The most specific value for a (normalized) host.
    pub fn get(&self, host: &str) -> Option<&T> {
        if let Some(v) = self.exact.get(host) {
            return Some(v);
        }
        self.wildcards
            .iter()
            .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
            .map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_qualified() {
        let known: HashSet<String> = ["reviews.apps.svc.cluster.local", "db.example.com"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        #[rustfmt::skip]
        let cases = [
            ("reviews", "apps", "reviews.apps.svc.cluster.local"),
            ("reviews", "other", "reviews.other.svc.cluster.local"),
            ("Reviews.", "apps", "reviews.apps.svc.cluster.local"),
            ("reviews.apps", "other", "reviews.apps.svc.cluster.local"),
            ("reviews.apps.svc", "other", "reviews.apps.svc.cluster.local"),
            ("reviews.apps.svc.cluster.local", "other", "reviews.apps.svc.cluster.local"),
            ("unknown.apps", "apps", "unknown.apps"),
            ("db.example.com", "apps", "db.example.com"),
            ("*.example.com", "apps", "*.example.com"),
            ("*", "apps", "*"),
            ("10.0.0.1", "apps", "10.0.0.1"),
        ];
        for (host, ns, want) in cases {
            assert_eq!(qualify(host, ns, &known), want, "{host} in {ns}");
        }
    }

    #[test]
    fn most_specific_host_wins() {
        let mut index = HostIndex::default();
        for (host, v) in [
            ("*", "any"),
            ("*.com", "com"),
            ("*.example.com", "example"),
            ("api.example.com", "api"),
            ("*.b.example.com", "b"),
        ] {
            *index.entry(host, || "") = v;
        }
        #[rustfmt::skip]
        let cases = [
            ("api.example.com", Some("api")),
            ("web.example.com", Some("example")),
            ("x.b.example.com", Some("b")),
            ("b.example.com", Some("example")),
            ("a.x.example.com", Some("example")),
            ("example.com", Some("com")),
            ("other.org", Some("any")),
        ];
        for (host, want) in cases {
            assert_eq!(index.get(host).copied(), want, "{host}");
        }
        let mut only_wildcard = HostIndex::default();
        *only_wildcard.entry("*.example.com", || 0) = 1;
        assert_eq!(only_wildcard.get("example.com"), None);
        assert_eq!(only_wildcard.get(".example.com"), None);
        assert_eq!(only_wildcard.get("a.example.com"), Some(&1));
    }
}
