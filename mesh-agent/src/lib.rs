//! mesh-agent: the per-node agent of the mesh.
//!
//! It loads the kernel programs, enrols pods announced through its local API, opens its listeners
//! inside each enrolled pod's network namespace and carries the captured connections.

pub mod admin;
pub mod authz;
pub mod cgroup;
pub mod config;
pub mod ebpf;
pub mod endpoints;
pub mod enrol;
pub mod fastpath;
pub mod istio_conn;
pub mod kernel_flows;
pub mod live;
pub mod local;
pub mod metrics;
pub mod nearby;
pub mod netns;
pub mod pod_context;
pub mod pod_info;
pub mod pod_listeners;
pub mod proxy;
pub mod readiness;
pub mod registry;
pub mod sock_destroy;
pub mod state;
pub mod tunnel;
