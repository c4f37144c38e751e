//! The local cluster: real network namespaces, veths and cgroups standing in for Kubernetes
//! nodes and pods, used by the end-to-end tests, the demo and the benchmarks.
//!
//! Everything needs root. Nothing here touches an address outside the namespaces it creates:
//! nodes and pods live in 198.18.0.0/15 (the benchmarking range) and fd18::/15, reachable only
//! inside the cluster's own namespaces, which have no default route.

pub mod agent;
pub mod app;
pub mod cluster;
pub mod command;
pub mod config;
pub mod controller;
pub mod mesh;
pub mod pcap;
pub mod promql;
pub mod trace;
pub mod waypoint;

pub use agent::Agent;
pub use cluster::{Cluster, Node, Pod};
