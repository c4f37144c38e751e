//! The user-facing resource kinds, with the same kinds and field names as Kubernetes, Istio and
//! the Gateway API so existing YAML loads unchanged. Core kinds are k8s-openapi's; the Istio and
//! Gateway API kinds are defined here (strict: unknown fields are errors) and derive their CRDs.

pub mod gateway_api;
pub mod istio_networking;
pub mod istio_security;
pub mod istio_telemetry;
pub mod mesh_config;
mod opaque;

pub use opaque::Opaque;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `selector: {matchLabels: ...}` as used by Istio security policies.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    /// Labels a workload must carry.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// A reference to a policy target (`targetRef` / `targetRefs`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    /// API group of the target.
    #[serde(default)]
    pub group: Option<String>,
    /// Kind of the target.
    pub kind: String,
    /// Name of the target.
    pub name: String,
    /// Namespace of the target (must be the policy's own when set).
    #[serde(default)]
    pub namespace: Option<String>,
}
