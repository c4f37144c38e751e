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
            let what = format!("bootstrap tokens for {} nodes", tokens.len());
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

/// Lets a node have certificates only for the workloads the controller places on it.
#[derive(Debug, Clone)]
pub struct WorkloadsOnNode {
    controller: Arc<Controller>,
    trust_domain: String,
}

#[async_trait]
impl Authorizer for WorkloadsOnNode {
    async fn is_on_node(&self, node: &str, identity: &Identity) -> bool {
        let current = self.controller.current();
        current
            .snapshot
            .workloads
            .iter()
            .any(|w| w.node == node && &w.identity(&self.trust_domain) == identity)
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
