//! The mesh control plane: configuration sources (a directory of YAML, Kubernetes), validation and
//! translation into the compact model of `mesh_common::model`, and the gRPC config stream that
//! pushes it to agents and waypoints.
#![forbid(unsafe_code)]

pub mod admin;
pub mod ca;
pub mod controller;
pub mod crd;
pub mod error;
pub mod load;
pub mod metrics;
pub mod object;
pub mod principal;
pub mod resources;
pub mod run;
pub mod server;
pub mod source;
pub mod store;
pub mod translate;
