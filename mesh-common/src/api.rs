//! The gRPC config stream between the controller and agents/waypoints: the code generated from
//! `proto/*.proto`, the mapping between [`Snapshot`](crate::model::Snapshot) and the stream's
//! resources, and a client that keeps the last good config while the controller is away.

mod client;
mod model_set;
mod resources;

/// Default port of the controller's config stream (Istio's xDS port; gRPC over TLS here, with
/// the node's bearer token).
pub const CONTROLLER_PORT: u16 = 15010;

pub use client::{ClientOptions, ClientStatus, ConfigClient, Transport};
pub use model_set::{bounded, Applied, ModelSet, MAX_WARNINGS, MAX_WARNING_LEN};
pub use resources::{kind_name, ResourceError, ResourceSet};

/// Generated protobuf messages and tonic services, one module per proto package
/// (`mesh.config.v1` is [`config`]).
#[expect(missing_docs, clippy::all, reason = "generated code")]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/_includes.rs"));
}

/// The config stream's messages, client and server (`mesh.config.v1`).
pub use proto::mesh::config::v1 as config;
