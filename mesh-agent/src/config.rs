//! Agent configuration: command-line flags with environment-variable fallbacks and their defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use mesh_common::identity::DEFAULT_TRUST_DOMAIN;

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
    /// too, the file is served until the controller's first update.
    #[arg(long, env = "MESH_CONTROLLER_ADDR")]
    pub controller_addr: Option<String>,
    /// A data-plane model file (YAML `Snapshot`: workloads and services) used instead of a
    /// control plane, for standalone use and tests.
    #[arg(long, env = "MESH_LOCAL_CONFIG")]
    pub local_config: Option<PathBuf>,
    /// Certificate service of the control plane (e.g. `http://198.18.0.254:15012`). Without it
    /// the agent has no workload certificates and relays plaintext only.
    #[arg(long, env = "MESH_CA_ADDR")]
    pub ca_addr: Option<String>,
    /// File holding this node's bootstrap token for the certificate service.
    #[arg(long, env = "MESH_CA_TOKEN_FILE")]
    pub ca_token_file: Option<PathBuf>,
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
