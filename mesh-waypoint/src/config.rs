//! The waypoint's command-line flags (with environment-variable fallbacks) and their defaults.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;
use mesh_common::identity::{Identity, DEFAULT_TRUST_DOMAIN};

/// Default HBONE listen address (every address of the waypoint pod).
pub const DEFAULT_HBONE_ADDR: &str = "[::]:15008";
/// Default readiness and metrics address (`GET /healthz/ready`, `GET /metrics`).
pub const DEFAULT_STATUS_ADDR: &str = "[::]:15021";

/// mesh-waypoint: the L7 proxy of a namespace (or service account) of the ambient mesh. It
/// terminates HBONE from the agents, applies L7 authorization and routes, and sends each request
/// on over HBONE to the endpoint it chose, with its own identity.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
pub struct Config {
    /// The waypoint this process is an instance of: `<namespace>/<name>` of its Gateway
    /// (`gatewayClassName: istio-waypoint`). Its policies and the traffic it accepts follow.
    #[arg(long, env = "MESH_WAYPOINT")]
    pub waypoint: String,
    /// Service account of this instance's pod: its certificate is for
    /// `spiffe://<trust domain>/ns/<namespace>/sa/<service account>` (default: the waypoint's
    /// name, as Istio's waypoint deployments use).
    #[arg(long, env = "MESH_SERVICE_ACCOUNT")]
    pub service_account: Option<String>,
    /// Trust domain of the mesh.
    #[arg(long, env = "MESH_TRUST_DOMAIN", default_value = DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// The controller's config stream (`https://host:15010`; TLS only).
    #[arg(long, env = "MESH_CONTROLLER_ADDR")]
    pub controller_addr: String,
    /// The controller's certificate service (`https://host:15012`; TLS only).
    #[arg(long, env = "MESH_CA_ADDR")]
    pub ca_addr: String,
    /// File holding this waypoint's bootstrap token (re-read at every request): the controller
    /// knows it as the principal `waypoint/<namespace>/<name>`.
    #[arg(long, env = "MESH_CA_TOKEN_FILE")]
    pub ca_token_file: PathBuf,
    /// The mesh roots (PEM) the control plane and every peer must chain to.
    #[arg(long, env = "MESH_CA_ROOT_FILE")]
    pub ca_root_file: PathBuf,
    /// HBONE listen address.
    #[arg(long, env = "MESH_HBONE_ADDR", default_value = DEFAULT_HBONE_ADDR)]
    pub hbone_addr: SocketAddr,
    /// Readiness (`GET /healthz/ready`) and metrics (`GET /metrics`) address.
    #[arg(long, env = "MESH_STATUS_ADDR", default_value = DEFAULT_STATUS_ADDR)]
    pub status_addr: SocketAddr,
    /// Tokio worker threads; 0: a current-thread runtime.
    #[arg(long, env = "MESH_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,
    /// This instance's pod name (the downward API's, as Istio sets it), for spans' `node_id`.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// This instance's pod address, for spans' `node_id` and Zipkin's local endpoint.
    #[arg(long, env = "INSTANCE_IP")]
    pub instance_ip: Option<IpAddr>,
}

/// Why the flags cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--waypoint` is not `<namespace>/<name>`.
    #[error("--waypoint {0:?}: expected <namespace>/<name> of the waypoint's Gateway")]
    Waypoint(String),
}

/// The waypoint's own name, namespace and identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Namespace of the waypoint's Gateway.
    pub namespace: String,
    /// Name of the waypoint's Gateway.
    pub name: String,
    /// This instance's identity.
    pub identity: Identity,
}

impl Instance {
    /// The principal the controller knows this waypoint's token as.
    pub fn principal(&self) -> String {
        format!("waypoint/{}/{}", self.namespace, self.name)
    }
}

impl Config {
    /// The instance the flags describe.
    pub fn instance(&self) -> Result<Instance, ConfigError> {
        let (namespace, name) = self
            .waypoint
            .split_once('/')
            .filter(|(ns, n)| is_name(ns) && is_name(n))
            .ok_or_else(|| ConfigError::Waypoint(self.waypoint.clone()))?;
        let account = self.service_account.as_deref().unwrap_or(name);
        Ok(Instance {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: Identity::new(&self.trust_domain, namespace, account),
        })
    }
}

/// A Kubernetes object name (DNS label characters).
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(waypoint: &str, account: Option<&str>) -> Config {
        let mut args = vec![
            "mesh-waypoint",
            "--waypoint",
            waypoint,
            "--controller-addr",
            "https://198.18.0.254:15010",
            "--ca-addr",
            "https://198.18.0.254:15012",
            "--ca-token-file",
            "/t",
            "--ca-root-file",
            "/r",
        ];
        if let Some(a) = account {
            args.extend(["--service-account", a]);
        }
        Config::parse_from(args)
    }

    #[test]
    fn instance_from_flags() {
        // (waypoint flag, service account flag, expected identity or None for an error)
        let cases: &[(&str, Option<&str>, Option<&str>)] = &[
            (
                "apps/waypoint",
                None,
                Some("spiffe://cluster.local/ns/apps/sa/waypoint"),
            ),
            (
                "apps/wp",
                Some("wp-sa"),
                Some("spiffe://cluster.local/ns/apps/sa/wp-sa"),
            ),
            ("apps", None, None),
            ("/wp", None, None),
            ("apps/", None, None),
            ("Apps/wp", None, None),
            ("apps/wp/x", None, None),
        ];
        for (flag, account, want) in cases {
            let got = config(flag, *account).instance();
            match want {
                Some(id) => {
                    let instance = got.unwrap_or_else(|e| panic!("{flag}: {e}"));
                    assert_eq!(instance.identity.to_string(), *id, "{flag}");
                }
                None => assert!(got.is_err(), "{flag} accepted"),
            }
        }
        let instance = config("apps/waypoint", None).instance().expect("valid");
        assert_eq!(instance.principal(), "waypoint/apps/waypoint");
    }
}
