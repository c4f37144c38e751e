//! TCP and TLS routes (VirtualService `tcp`/`tls`, TCPRoute/TLSRoute): rules compiled once per
//! model, found by the destination service's host name as HTTP routes are, and the decision for
//! one opaque connection ([`RouteTable::decide_l4`]).
//!
//! A TLS connection (a ClientHello seen) is matched against the `tls` rules (SNI, port, source),
//! then the `tcp` rules; any other connection against the `tcp` rules only. First match wins; a
//! rule's weighted destinations are drawn as HTTP weights are (`route::spread_draw`: exact per
//! cycle of the weights' sum). No rule matched: the original destination, as without routes.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mesh_common::model::{L4Match, L4Rule, Route};

use crate::error::ProxyError;
use crate::hosts;
use crate::route::{spread_draw, Backend};
use crate::rules::Warning;
use crate::table::{RouteTable, SourceInfo, Target};

/// The TCP and TLS rules of one host, in model order.
#[derive(Debug, Default, Clone)]
pub(crate) struct L4Routes {
    pub tcp: Vec<Arc<Rule>>,
    pub tls: Vec<Arc<Rule>>,
}

/// A compiled L4 rule.
#[derive(Debug)]
pub(crate) struct Rule {
    /// `tcp route <ns>/<name> rule <i>[ (<name>)]`, for logs and metrics.
    pub label: Arc<str>,
    matches: Vec<L4Match>,
    dests: Vec<Dest>,
    /// Connections drawn so far (the weighted draw's position).
    drawn: AtomicU64,
}

#[derive(Debug)]
struct Dest {
    host: String,
    subset: Option<String>,
    port: Option<u16>,
    weight: u32,
}

/// Which rules of a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Tcp,
    Tls,
}

/// Compiles the `tcp` or `tls` rules of one route; what is set but not applied is a warning.
pub(crate) fn compile(
    route: &Route,
    kind: Kind,
    known: &HashSet<String>,
    warn: &mut dyn FnMut(Warning),
) -> Vec<Arc<Rule>> {
    let (rules, what) = match kind {
        Kind::Tcp => (&route.tcp, "tcp"),
        Kind::Tls => (&route.tls, "tls"),
    };
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| Arc::new(compile_rule(route, what, i, r, known, warn)))
        .collect()
}

fn compile_rule(
    route: &Route,
    what: &str,
    index: usize,
    r: &L4Rule,
    known: &HashSet<String>,
    warn: &mut dyn FnMut(Warning),
) -> Rule {
    let label: Arc<str> = match &r.name {
        Some(name) => format!(
            "{what} route {}/{} rule {index} ({name})",
            route.namespace, route.name
        ),
        None => format!(
            "{what} route {}/{} rule {index}",
            route.namespace, route.name
        ),
    }
    .into();
    for (j, m) in r.matches.iter().enumerate() {
        if what == "tcp" && !m.sni_hosts.is_empty() {
            warn(Warning {
                object: label.to_string(),
                message: format!(
                    "matches[{j}].sniHosts: SNI is matched in tls rules only; ignored here"
                ),
            });
        }
    }
    for (j, d) in r.destinations.iter().enumerate() {
        if !d.request_headers.is_empty() || !d.response_headers.is_empty() {
            warn(Warning {
                object: label.to_string(),
                message: format!(
                    "destinations[{j}].headers: a TCP connection has no headers; ignored"
                ),
            });
        }
    }
    let matches = r
        .matches
        .iter()
        .map(|m| L4Match {
            sni_hosts: m.sni_hosts.iter().map(|h| hosts::normalize(h)).collect(),
            ..m.clone()
        })
        .collect();
    Rule {
        label,
        matches,
        dests: r
            .destinations
            .iter()
            .map(|d| Dest {
                host: hosts::qualify(&d.host, &route.namespace, known),
                subset: d.subset.clone(),
                port: d.port,
                weight: d.weight,
            })
            .collect(),
        drawn: AtomicU64::new(0),
    }
}

/// Whether `sni` is one of `hosts` (`*.suffix`: any name below the suffix).
fn sni_matches(hosts: &[String], sni: Option<&str>) -> bool {
    if hosts.is_empty() {
        return true;
    }
    let Some(sni) = sni else {
        return false;
    };
    hosts.iter().any(|h| match h.strip_prefix('*') {
        Some("") => true,
        Some(suffix) => sni.len() > suffix.len() && sni.ends_with(suffix),
        None => h == sni,
    })
}

fn matches(m: &L4Match, kind: Kind, port: u16, source: &SourceInfo, sni: Option<&str>) -> bool {
    m.port.is_none_or(|p| p == port)
        && m.source_namespace
            .as_ref()
            .is_none_or(|ns| source.namespace.as_ref() == Some(ns))
        && labels_match(&m.source_labels, &source.labels)
        && (kind == Kind::Tcp || sni_matches(&m.sni_hosts, sni))
}

fn labels_match(want: &BTreeMap<String, String>, have: &BTreeMap<String, String>) -> bool {
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

impl Rule {
    fn matches(&self, kind: Kind, port: u16, source: &SourceInfo, sni: Option<&str>) -> bool {
        self.matches.is_empty()
            || self
                .matches
                .iter()
                .any(|m| matches(m, kind, port, source, sni))
    }

    fn draw(&self) -> Option<&Dest> {
        let total: u64 = self.dests.iter().map(|d| u64::from(d.weight)).sum();
        if total == 0 {
            return None;
        }
        let n = self.drawn.fetch_add(1, Ordering::Relaxed);
        let mut at = spread_draw(n, total);
        for d in &self.dests {
            let w = u64::from(d.weight);
            if at < w {
                return Some(d);
            }
            at -= w;
        }
        None
    }
}

/// Where an opaque connection goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L4Decision {
    /// The destination chosen (the original one when no rule matched).
    pub backend: Backend,
    /// The rule that matched (its label), if any.
    pub route: Option<Arc<str>>,
}

/// What was seen of a connection's first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen<'a> {
    /// Not TLS (or not looked at).
    Opaque,
    /// A TLS ClientHello, with its server name if any.
    Tls(Option<&'a str>),
}

impl RouteTable {
    /// Whether any TLS rule applies to `target` (then its ClientHello is worth waiting for).
    pub fn has_tls_routes(&self, target: &Target) -> bool {
        match target {
            Target::Service { hostname, .. } => self
                .l4_routes
                .get(hostname)
                .is_some_and(|r| !r.tls.is_empty()),
            Target::Workload { .. } => false,
        }
    }

    /// The destination of an opaque connection to `target` from `source` (see the module doc);
    /// a rule whose weights are all 0 is an error (the connection is closed, as HTTP's 503 NC).
    pub fn decide_l4(
        &self,
        target: &Target,
        source: &SourceInfo,
        seen: Seen<'_>,
    ) -> Result<L4Decision, ProxyError> {
        let original = || L4Decision {
            backend: self.default_backend(target),
            route: None,
        };
        let Target::Service { hostname, port, .. } = target else {
            return Ok(original());
        };
        let Some(routes) = self.l4_routes.get(hostname) else {
            return Ok(original());
        };
        let (tls, sni) = match seen {
            Seen::Tls(sni) => (&routes.tls[..], sni),
            Seen::Opaque => (&[][..], None),
        };
        let found = tls
            .iter()
            .find(|r| r.matches(Kind::Tls, *port, source, sni))
            .or_else(|| {
                routes
                    .tcp
                    .iter()
                    .find(|r| r.matches(Kind::Tcp, *port, source, sni))
            });
        let Some(rule) = found else {
            return Ok(original());
        };
        let dest = rule.draw().ok_or_else(|| {
            ProxyError::no_cluster(format!(
                "{}: no destination with a weight above 0",
                rule.label
            ))
        })?;
        Ok(L4Decision {
            backend: Backend {
                service: self
                    .service_by_host(&dest.host)
                    .map(crate::table::ServiceKey::of),
                host: dest.host.clone(),
                workload: None,
                subset: dest.subset.clone(),
                port: dest.port.unwrap_or(*port),
            },
            route: Some(rule.label.clone()),
        })
    }
}

#[cfg(test)]
mod tests;
