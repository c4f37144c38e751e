//! Types shared by the mesh's kernel programs and userspace.
//!
//! Without features this crate is `no_std` and holds only `#[repr(C)]` map keys and values and the
//! port numbers, so the eBPF programs (`mesh-ebpf`) and the agent agree on every byte. The `user`
//! feature implements `aya::Pod` for them; the `std` feature adds the workload identity, the
//! config model and once-per-burst logging of refusals; the `api` feature adds the gRPC config stream and its client; `http-server` the
//! bounded HTTP/1 server of the agent's and the controller's own endpoints; `heap-count` a
//! counting allocator for memory tests.
#![cfg_attr(not(feature = "std"), no_std)]

pub mod kernel;
pub mod ports;

#[cfg(feature = "std")]
pub mod burst_log;
#[cfg(feature = "heap-count")]
pub mod heap;
#[cfg(feature = "std")]
pub mod identity;
#[cfg(feature = "std")]
pub mod model;

#[cfg(feature = "api")]
pub mod api;

#[cfg(feature = "http-server")]
pub mod http_server;

#[cfg(feature = "istio-metrics")]
pub mod istio_metrics;

#[cfg(feature = "access-log")]
pub mod access_log;
#[cfg(all(feature = "access-log", feature = "istio-metrics"))]
pub mod scope_telemetry;
