//! The mesh's host names: Kubernetes services (`<name>.<ns>.svc.<domain>`) and ServiceEntry
//! hosts (possibly `*.` wildcards), and Istio's short-name resolution against them.

use std::collections::BTreeSet;

/// Known hosts.
#[derive(Debug, Default)]
pub struct HostIndex {
    domain: String,
    exact: BTreeSet<String>,
    wildcards: Vec<String>,
}

impl HostIndex {
    /// An empty index for a cluster domain (e.g. `cluster.local`).
    pub fn new(domain: &str) -> Self {
        HostIndex {
            domain: domain.to_owned(),
            ..HostIndex::default()
        }
    }

    /// The FQDN of a Kubernetes service.
    pub fn service_fqdn(&self, namespace: &str, name: &str) -> String {
        format!("{name}.{namespace}.svc.{}", self.domain)
    }

    /// Adds a host (`*.example.com` adds a wildcard).
    pub fn add(&mut self, host: &str) {
        match host.strip_prefix('*') {
            Some(suffix) => self.wildcards.push(suffix.to_owned()),
            None => {
                self.exact.insert(host.to_owned());
            }
        }
    }

    /// The FQDN a host written in `namespace` means: short names get the namespace and domain;
    /// `name.ns` and `name.ns.svc` are completed when that completes to a known service.
    pub fn qualify(&self, host: &str, namespace: &str) -> String {
        if host.starts_with('*') {
            return host.to_owned();
        }
        if !host.contains('.') {
            return self.service_fqdn(namespace, host);
        }
        if self.exact.contains(host) {
            return host.to_owned();
        }
        for suffix in [format!(".svc.{}", self.domain), format!(".{}", self.domain)] {
            let candidate = format!("{host}{suffix}");
            if self.exact.contains(&candidate) {
                return candidate;
            }
        }
        host.to_owned()
    }

    /// Whether a qualified host is known (exactly or through a wildcard entry).
    pub fn contains(&self, fqdn: &str) -> bool {
        self.exact.contains(fqdn) || self.wildcards.iter().any(|suffix| fqdn.ends_with(suffix))
    }
}
