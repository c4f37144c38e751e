//! The certificate authority of the control plane: the CA of `mesh-hbone`, served over gRPC to
//! node agents, which authenticate with a per-node bootstrap token and get certificates only for
//! identities of workloads the controller knows on their node.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mesh_common::identity::Identity;
use mesh_hbone::ca::{CaConfig, CertificateAuthority};
use mesh_hbone::ca_service::{Authorizer, CaService, NodeTokens};

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
}

/// Reads `node=token` lines (blank lines and `#` comments skipped).
pub fn read_tokens(path: &Path) -> Result<BTreeMap<String, String>, CaStartError> {
    let err = |message: String| CaStartError::Tokens {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let mut tokens = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (node, token) = line
            .split_once('=')
            .ok_or_else(|| err(format!("line {}: expected node=token", n + 1)))?;
        let (node, token) = (node.trim(), token.trim());
        if node.is_empty() || token.len() < 16 {
            return Err(err(format!(
                "line {}: empty node or token shorter than 16 characters",
                n + 1
            )));
        }
        tokens.insert(node.to_owned(), token.to_owned());
    }
    Ok(tokens)
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

/// Loads (or creates) the CA in `dir` and builds the gRPC service.
pub fn service(
    dir: &Path,
    trust_domain: &str,
    lifetime: Duration,
    tokens: &BTreeMap<String, String>,
    controller: Arc<Controller>,
) -> Result<(Arc<CertificateAuthority>, CaService<WorkloadsOnNode>), CaStartError> {
    let mut config = CaConfig::new(trust_domain);
    config.leaf_lifetime = lifetime;
    let ca =
        CertificateAuthority::load_or_generate(dir, config).map_err(|source| CaStartError::Ca {
            dir: dir.to_owned(),
            source,
        })?;
    let ca = Arc::new(ca);
    let node_tokens = NodeTokens::new();
    for (node, token) in tokens {
        node_tokens.insert(node, token);
    }
    let authorizer = WorkloadsOnNode {
        controller,
        trust_domain: trust_domain.to_owned(),
    };
    Ok((ca.clone(), CaService::new(ca, node_tokens, authorizer)))
}
