//! The certificate authority of the control plane: the CA of `mesh-hbone`, served over gRPC to
//! node agents, which get certificates only for identities of workloads the controller knows on
//! their node. Agents authenticate with a per-node bootstrap token ([`bootstrap`], the local
//! cluster) or with a service-account token reviewed by the Kubernetes API server
//! ([`token_review`]); [`auth_mode`] picks one from the flags.

pub mod auth_mode;
pub mod bootstrap;
mod review_cache;
pub mod serving;
pub mod token_review;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mesh_common::identity::Identity;
use mesh_hbone::ca::{CaConfig, CertificateAuthority};
use mesh_hbone::ca_service::{Authorizer, CaService, NodeAuthenticator};

pub use auth_mode::{CaAuth, CaAuthError, CaAuthFlags, CaAuthKind};
pub use bootstrap::{node_tokens, read_tokens};
pub use serving::{serving_names, ServingNameError};
pub use token_review::{ServiceAccount, TokenReviewAuthenticator, TokenReviewOptions};

use crate::controller::Controller;
use crate::principal::Principal;
use crate::translate::Waypoints;
use mesh_common::model::Snapshot;

/// Default port of the certificate service (Istio's istiod CA port).
pub const DEFAULT_CA_PORT: u16 = 15012;

/// Why the CA could not start.
#[derive(Debug, thiserror::Error)]
pub enum CaStartError {
    /// The root could not be loaded or generated.
    #[error("certificate authority in {dir}: {source}")]
    Ca {
        dir: PathBuf,
        source: mesh_hbone::ca::CaError,
    },
    /// The bootstrap token file cannot be read or is malformed.
    #[error("bootstrap tokens {path}: {message}")]
    Tokens { path: PathBuf, message: String },
    /// No Kubernetes client for `TokenReview` could be built.
    #[error("Kubernetes client for TokenReview: {0}")]
    Kube(#[from] kube::Error),
}

/// The authenticator `auth` asks for (`None`: no certificate service), with a description for
/// the log.
pub async fn authenticator(
    auth: &CaAuth,
) -> Result<Option<(Box<dyn NodeAuthenticator>, String)>, CaStartError> {
    Ok(match auth {
        CaAuth::Off => None,
        CaAuth::Tokens(path) => {
            let tokens = read_tokens(path)?;
            let waypoints = tokens
                .keys()
                .filter(|p| p.starts_with(crate::principal::WAYPOINT_PREFIX))
                .count();
            let what = format!(
                "bootstrap tokens for {} nodes and {waypoints} waypoints",
                tokens.len() - waypoints
            );
            Some((Box::new(node_tokens(&tokens)), what))
        }
        CaAuth::Kubernetes(options) => {
            let client = kube::Client::try_default().await?;
            let what = format!(
                "TokenReview of {} tokens for audience {:?}",
                options.service_account, options.audience
            );
            Some((
                Box::new(TokenReviewAuthenticator::new(client, options.clone())),
                what,
            ))
        }
    })
}

/// Whether `principal` (a node name or `waypoint/<namespace>/<name>`, see [`Principal`]) may
/// hold a certificate for `identity`:
/// - a node: the identity of a workload the controller places on it, other than a waypoint
///   instance (a node's credential never yields the identity that agents admit as a waypoint;
///   a meshed workload sharing the waypoint's service account shares its identity all the
///   same, as in Istio, so waypoints should have their own service account);
/// - a waypoint: the identity of one of its instances (pods of its namespace labelled
///   `gateway.networking.k8s.io/gateway-name: <name>`, of a Gateway of class
///   `istio-waypoint`).
pub fn may_sign(
    principal: &str,
    identity: &Identity,
    snapshot: &Snapshot,
    waypoints: &Waypoints,
    trust_domain: &str,
) -> bool {
    match principal.parse::<Principal>() {
        Err(_) => false,
        Ok(Principal::Node(node)) => snapshot.workloads.iter().any(|w| {
            w.node == node
                && waypoints.instance_of(w).is_none()
                && &w.identity(trust_domain) == identity
        }),
        Ok(Principal::Waypoint { namespace, name }) => {
            waypoints.get(&namespace, &name).is_some_and(|wp| {
                wp.instances.iter().any(|i| {
                    &Identity::new(trust_domain, &namespace, &i.service_account) == identity
                })
            })
        }
    }
}

/// Lets a node have certificates only for the workloads the controller places on it, and a
/// waypoint only for its instances ([`may_sign`]).
#[derive(Debug, Clone)]
pub struct WorkloadsOnNode {
    controller: Arc<Controller>,
    trust_domain: String,
}

#[async_trait]
impl Authorizer for WorkloadsOnNode {
    async fn is_on_node(&self, node: &str, identity: &Identity) -> bool {
        let current = self.controller.current();
        may_sign(
            node,
            identity,
            &current.snapshot,
            &current.waypoints,
            &self.trust_domain,
        )
    }
}

/// Loads (or creates) the CA in `dir` (its `root-cert.pem` is what agents pin), issuing
/// workload certificates of `lifetime`.
pub fn load(
    dir: &Path,
    trust_domain: &str,
    lifetime: Duration,
) -> Result<Arc<CertificateAuthority>, CaStartError> {
    let mut config = CaConfig::new(trust_domain);
    config.leaf_lifetime = lifetime;
    let ca =
        CertificateAuthority::load_or_generate(dir, config).map_err(|source| CaStartError::Ca {
            dir: dir.to_owned(),
            source,
        })?;
    Ok(Arc::new(ca))
}

/// The gRPC service in front of `ca`, authenticating agents with `authenticator` (e.g.
/// [`node_tokens`] or a [`TokenReviewAuthenticator`]) and placing workloads with `controller`.
pub fn service(
    ca: Arc<CertificateAuthority>,
    authenticator: impl NodeAuthenticator,
    controller: Arc<Controller>,
) -> CaService<WorkloadsOnNode> {
    let authorizer = WorkloadsOnNode {
        trust_domain: ca.trust_domain().to_owned(),
        controller,
    };
    CaService::new(ca, authenticator, authorizer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::{Instance, Waypoint, WaypointFor};

    const TD: &str = "cluster.local";

    fn snapshot() -> Snapshot {
        yaml_serde::from_str(
            "
workloads:
- {uid: apps/echo-1, name: echo-1, namespace: apps, serviceAccount: echo, node: node-a, addresses: [10.0.0.1], meshed: true}
- {uid: apps/wp-1, name: wp-1, namespace: apps, serviceAccount: wp, node: node-a, addresses: [10.0.0.2],
   labels: {gateway.networking.k8s.io/gateway-name: wp}}
- {uid: apps/wp-2, name: wp-2, namespace: apps, serviceAccount: wp-alt, node: node-b, addresses: [10.0.0.3],
   labels: {gateway.networking.k8s.io/gateway-name: wp}}
- {uid: apps/gw-1, name: gw-1, namespace: apps, serviceAccount: ingress, node: node-a, addresses: [10.0.0.4],
   labels: {gateway.networking.k8s.io/gateway-name: ingress}}
- {uid: other/x, name: x, namespace: other, serviceAccount: wp, node: node-b, addresses: [10.0.1.1], meshed: true}
",
        )
        .expect("test model")
    }

    fn waypoints() -> Waypoints {
        let mut out = Waypoints::default();
        let instance = |uid: &str, sa: &str| Instance {
            uid: uid.to_owned(),
            service_account: sa.to_owned(),
        };
        out.insert(Waypoint {
            namespace: "apps".to_owned(),
            name: "wp".to_owned(),
            traffic: WaypointFor::Service,
            instances: vec![instance("apps/wp-1", "wp"), instance("apps/wp-2", "wp-alt")],
        });
        out.insert(Waypoint {
            namespace: "apps".to_owned(),
            name: "idle".to_owned(),
            traffic: WaypointFor::All,
            instances: vec![],
        });
        out
    }

    #[test]
    fn principals_get_only_their_own_identities() {
        let (snapshot, waypoints) = (snapshot(), waypoints());
        // (principal, identity, signed)
        #[rustfmt::skip]
        let cases: &[(&str, &str, bool)] = &[
            ("node-a", "spiffe://cluster.local/ns/apps/sa/echo", true),
            ("node-b", "spiffe://cluster.local/ns/apps/sa/echo", false),
            ("node-a", "spiffe://cluster.local/ns/apps/sa/ingress", true),
            ("node-a", "spiffe://cluster.local/ns/apps/sa/wp", false),
            ("node-b", "spiffe://cluster.local/ns/apps/sa/wp-alt", false),
            ("node-b", "spiffe://cluster.local/ns/other/sa/wp", true),
            ("node-a", "spiffe://other.td/ns/apps/sa/echo", false),
            ("waypoint/apps/wp", "spiffe://cluster.local/ns/apps/sa/wp", true),
            ("waypoint/apps/wp", "spiffe://cluster.local/ns/apps/sa/wp-alt", true),
            ("waypoint/apps/wp", "spiffe://cluster.local/ns/apps/sa/echo", false),
            ("waypoint/apps/wp", "spiffe://cluster.local/ns/other/sa/wp", false),
            ("waypoint/apps/wp", "spiffe://other.td/ns/apps/sa/wp", false),
            ("waypoint/apps/idle", "spiffe://cluster.local/ns/apps/sa/wp", false),
            ("waypoint/apps/missing", "spiffe://cluster.local/ns/apps/sa/wp", false),
            ("waypoint/apps/ingress", "spiffe://cluster.local/ns/apps/sa/ingress", false),
            ("waypoint/other/wp", "spiffe://cluster.local/ns/other/sa/wp", false),
            ("a/b", "spiffe://cluster.local/ns/apps/sa/echo", false),
            ("", "spiffe://cluster.local/ns/apps/sa/echo", false),
        ];
        for (principal, identity, want) in cases {
            let id: Identity = identity.parse().expect("identity");
            assert_eq!(
                may_sign(principal, &id, &snapshot, &waypoints, TD),
                *want,
                "{principal} {identity}"
            );
        }
    }
}
