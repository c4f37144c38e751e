//! Agent configuration: command-line flags with environment-variable fallbacks and their defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use mesh_common::identity::DEFAULT_TRUST_DOMAIN;
use mesh_hbone::ca_service::transport::parse_url;
use mesh_hbone::ca_service::TransportError;

/// Default path of the enrolment API's Unix socket.
pub const DEFAULT_ENROL_SOCKET: &str = "/var/run/mesh/agent.sock";
/// Default admin listen address (loopback of the agent's network namespace).
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:15000";
/// Default Prometheus metrics listen address.
pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:15020";
/// Default readiness listen address (the kubelet probes it).
pub const DEFAULT_READINESS_ADDR: &str = "0.0.0.0:15021";

/// Default number of runtime worker threads (see [`Config::worker_threads`]): 0, tokio's
/// current-thread runtime. On the 2-vCPU bench machine it used 35 % less agent CPU per request
/// than 2 workers, half the memory per idle connection (one glibc malloc arena instead of one
/// per thread) and kept throughput (benches/README.md).
pub const DEFAULT_WORKER_THREADS: usize = 0;

/// mesh-agent: per-node agent of the eBPF ambient mesh.
#[derive(Parser, Debug, Clone, serde::Serialize)]
#[command(version, about)]
pub struct Config {
    /// Name of the node this agent serves.
    #[arg(long, env = "MESH_NODE", default_value = "node")]
    pub node: String,
    /// Unix socket of the enrolment API (pods added/removed by the CNI plugin or pod registry).
    #[arg(long, env = "MESH_ENROL_SOCKET", default_value = DEFAULT_ENROL_SOCKET)]
    pub enrol_socket: PathBuf,
    /// Admin HTTP endpoint (pods, programs, config dump, fast-path switches, readiness,
    /// metrics). Loopback only: any other address is refused at start.
    #[arg(long, env = "MESH_ADMIN_ADDR", default_value = DEFAULT_ADMIN_ADDR)]
    pub admin_addr: SocketAddr,
    /// Prometheus metrics endpoint: `GET /metrics` only.
    #[arg(long, env = "MESH_METRICS_ADDR", default_value = DEFAULT_METRICS_ADDR)]
    pub metrics_addr: SocketAddr,
    /// Readiness endpoint: `GET /healthz/ready` only (see `readiness.rs` for the conditions).
    #[arg(long, env = "MESH_READINESS_ADDR", default_value = DEFAULT_READINESS_ADDR)]
    pub readiness_addr: SocketAddr,
    /// Limits of the HTTP listeners.
    #[command(flatten)]
    #[serde(flatten)]
    pub http: crate::endpoints::HttpFlags,
    /// The controller's config stream (e.g. `http://198.18.0.254:15010`). With `--local-config`
    /// The controller's config stream (e.g. `https://198.18.0.254:15010`; TLS only, `http://` is
    /// refused). Needs --ca-root-file and --ca-token-file. With `--local-config` too, the file is
    /// served until the controller's first update.
    #[arg(long, env = "MESH_CONTROLLER_ADDR")]
    pub controller_addr: Option<String>,
    /// A data-plane model file (YAML `Snapshot`: workloads and services) used instead of a
    /// control plane, for standalone use and tests.
    #[arg(long, env = "MESH_LOCAL_CONFIG")]
    pub local_config: Option<PathBuf>,
    /// Certificate service of the control plane (e.g. `https://198.18.0.254:15012`; TLS only).
    /// Without it the agent has no workload certificates and relays plaintext only.
    #[arg(long, env = "MESH_CA_ADDR")]
    pub ca_addr: Option<String>,
    /// File holding this node's token (bootstrap token or projected service-account token),
    /// sent to the certificate service and the config stream; re-read at every request.
    #[arg(long, env = "MESH_CA_TOKEN_FILE")]
    pub ca_token_file: Option<PathBuf>,
    /// PEM file of the mesh root(s) this node was installed with: the control plane must
    /// present a certificate chaining to one of them. In Kubernetes, a ConfigMap mounted as a
    /// file (like Istio's `istio-ca-root-cert`). New roots are then accepted from the CA only
    /// as a rotation overlap (ARCHITECTURE.md, control plane).
    #[arg(long, env = "MESH_CA_ROOT_FILE")]
    pub ca_root_file: Option<PathBuf>,
    /// SPIFFE trust domain.
    #[arg(long, env = "MESH_TRUST_DOMAIN", default_value = DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// Same-node fast path: reuse the agent's decisions about same-node connections in the
    /// kernel (allowed ones go straight to the destination pod, denied ones are refused at
    /// connect). Can also be switched at run time on the admin endpoint
    /// (`POST /fastpath?enabled=false`).
    #[arg(long, env = "MESH_KERNEL_FAST_PATH", default_value_t = true, action = clap::ArgAction::Set)]
    pub kernel_fast_path: bool,
    /// Splice in the kernel, socket to socket, the connections the fast path allows and the
    /// loopback legs of the connections the agent relays (sockhash + `sk_msg`). Off by default:
    /// applications doing blocking reads can get a spurious `EAGAIN` from the kernel's receive
    /// path of spliced sockets (see ARCHITECTURE.md). Switchable at run time
    /// (`POST /fastpath?splice=true`).
    #[arg(long, env = "MESH_KERNEL_SPLICE", default_value_t = false, action = clap::ArgAction::Set)]
    pub kernel_splice: bool,
    /// Tokio worker threads for the proxies: 0 runs every task on the main thread (tokio's
    /// current-thread runtime: no cross-thread wake-ups, one core at most); N ≥ 1 a multi-thread
    /// runtime with N workers, for nodes where one core is not enough (with glibc, also set
    /// `MALLOC_ARENA_MAX=1` or per-thread arenas double the memory per idle connection).
    #[arg(long, env = "MESH_WORKER_THREADS", default_value_t = DEFAULT_WORKER_THREADS)]
    pub worker_threads: usize,
}

/// What the agent needs to talk to the control plane, checked: URLs are `https://`, and the
/// token and the pinned roots are given whenever a control-plane address is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlane {
    /// The config stream, if any.
    pub controller_addr: Option<String>,
    /// The certificate service, if any.
    pub ca_addr: Option<String>,
    /// The node's token.
    pub token_file: PathBuf,
    /// The pinned roots.
    pub root_file: PathBuf,
}

/// A contradictory or unsafe set of control-plane flags.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlPlaneError {
    /// A URL is plaintext or malformed.
    #[error("{flag}: {source}")]
    Url {
        /// The flag.
        flag: &'static str,
        /// Why.
        source: TransportError,
    },
    /// A control-plane address without the token.
    #[error("--controller-addr and --ca-addr need --ca-token-file (the node's credential)")]
    NoToken,
    /// A control-plane address without the pinned roots.
    #[error(
        "--controller-addr and --ca-addr need --ca-root-file (the mesh root this node trusts; \
         the controller writes it to <ca-dir>/root-cert.pem)"
    )]
    NoRoot,
    /// Credentials without any address to use them with.
    #[error("--ca-token-file and --ca-root-file need --controller-addr or --ca-addr")]
    Unused,
}

impl Config {
    /// The control-plane settings, or `None` when the agent runs without a control plane.
    pub fn control_plane(&self) -> Result<Option<ControlPlane>, ControlPlaneError> {
        let check = |flag: &'static str, url: &Option<String>| match url {
            Some(url) => parse_url(url)
                .map(|_| ())
                .map_err(|source| ControlPlaneError::Url { flag, source }),
            None => Ok(()),
        };
        check("--controller-addr", &self.controller_addr)?;
        check("--ca-addr", &self.ca_addr)?;
        if self.controller_addr.is_none() && self.ca_addr.is_none() {
            if self.ca_token_file.is_some() || self.ca_root_file.is_some() {
                return Err(ControlPlaneError::Unused);
            }
            return Ok(None);
        }
        let token_file = self
            .ca_token_file
            .clone()
            .ok_or(ControlPlaneError::NoToken)?;
        let root_file = self.ca_root_file.clone().ok_or(ControlPlaneError::NoRoot)?;
        Ok(Some(ControlPlane {
            controller_addr: self.controller_addr.clone(),
            ca_addr: self.ca_addr.clone(),
            token_file,
            root_file,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Config {
        let mut argv = vec!["mesh-agent"];
        argv.extend_from_slice(args);
        Config::try_parse_from(argv).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    type Expected = Result<Option<ControlPlane>, ControlPlaneError>;

    #[test]
    fn control_plane_flags_must_be_tls_and_complete() {
        const CTL: &str = "https://198.18.0.254:15010";
        const CA: &str = "https://198.18.0.254:15012";
        let full = |controller: Option<&str>, ca: Option<&str>| {
            Ok(Some(ControlPlane {
                controller_addr: controller.map(str::to_owned),
                ca_addr: ca.map(str::to_owned),
                token_file: "t".into(),
                root_file: "r".into(),
            }))
        };
        let creds = ["--ca-token-file", "t", "--ca-root-file", "r"];
        let with = |extra: &[&'static str]| {
            let mut v: Vec<&str> = extra.to_vec();
            v.extend_from_slice(&creds);
            v
        };
        let cases: Vec<(Vec<&str>, Expected)> = vec![
            (vec![], Ok(None)),
            (vec!["--local-config", "m.yaml"], Ok(None)),
            (
                with(&["--controller-addr", CTL, "--ca-addr", CA]),
                full(Some(CTL), Some(CA)),
            ),
            (with(&["--controller-addr", CTL]), full(Some(CTL), None)),
            (with(&["--ca-addr", CA]), full(None, Some(CA))),
            (
                vec!["--controller-addr", CTL, "--ca-root-file", "r"],
                Err(ControlPlaneError::NoToken),
            ),
            (
                vec!["--ca-addr", CA, "--ca-token-file", "t"],
                Err(ControlPlaneError::NoRoot),
            ),
            (creds.to_vec(), Err(ControlPlaneError::Unused)),
        ];
        for (args, expected) in cases {
            assert_eq!(config(&args).control_plane(), expected, "{args:?}");
        }
    }

    #[test]
    fn plaintext_control_plane_urls_are_refused() {
        for flag in ["--controller-addr", "--ca-addr"] {
            let c = config(&[
                flag,
                "http://198.18.0.254:15010",
                "--ca-token-file",
                "t",
                "--ca-root-file",
                "r",
            ]);
            let err = c.control_plane().expect_err("plaintext");
            assert!(
                matches!(&err, ControlPlaneError::Url { flag: f, source: TransportError::Plaintext(_) } if *f == flag),
                "{flag}: {err}"
            );
        }
    }
}
