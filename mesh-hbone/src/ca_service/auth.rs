//! Who may call the certificate service: the [`NodeAuthenticator`] the service asks for every
//! request, and [`NodeTokens`], the per-node bootstrap tokens of the local cluster. Other
//! authenticators (the controller's Kubernetes `TokenReview`) live with their callers.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use tonic::metadata::MetadataMap;
use tonic::Status;

use super::NODE_METADATA;
use crate::ca::CaError;

/// Why a node was not authenticated. The message is logged by the service and returned to the
/// caller, so it must never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The credential does not prove the claimed node (unknown node, bad or expired token,
    /// wrong account, bound to another node, ...). Answered `Unauthenticated`.
    #[error("{0}")]
    Refused(String),
    /// The credential could not be checked (e.g. the Kubernetes API is unreachable). The request
    /// is refused all the same (fail closed), but answered `Unavailable` so the caller retries.
    #[error("cannot authenticate now: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// A refusal with `reason`.
    pub fn refused(reason: impl Into<String>) -> Self {
        AuthError::Refused(reason.into())
    }
}

/// Proves that the caller of the certificate service is the agent of the node it claims to be.
#[async_trait]
pub trait NodeAuthenticator: Send + Sync + 'static {
    /// `Ok` if `token` (the bearer credential) proves the caller is `node`'s agent.
    async fn authenticate(&self, node: &str, token: &str) -> Result<(), AuthError>;
}

#[async_trait]
impl<T: NodeAuthenticator + ?Sized> NodeAuthenticator for Arc<T> {
    async fn authenticate(&self, node: &str, token: &str) -> Result<(), AuthError> {
        (**self).authenticate(node, token).await
    }
}

#[async_trait]
impl<T: NodeAuthenticator + ?Sized> NodeAuthenticator for Box<T> {
    async fn authenticate(&self, node: &str, token: &str) -> Result<(), AuthError> {
        (**self).authenticate(node, token).await
    }
}

/// The node a request's metadata proves to come from (`x-mesh-node` and the bearer token,
/// checked by `authenticator`), or the gRPC status refusing it. Every refusal is logged with
/// `what` (the service) and never with the token.
pub async fn authenticate_metadata(
    authenticator: &dyn NodeAuthenticator,
    meta: &MetadataMap,
    what: &str,
) -> Result<String, Status> {
    let Some(node) = meta
        .get(NODE_METADATA)
        .and_then(|v| v.to_str().ok())
        .filter(|n| !n.is_empty())
    else {
        tracing::warn!(service = what, "request without {NODE_METADATA}");
        return Err(Status::unauthenticated(format!("missing {NODE_METADATA}")));
    };
    let Some(token) = meta
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| !t.is_empty())
    else {
        tracing::warn!(service = what, node, "request without a bearer token");
        return Err(Status::unauthenticated("missing bearer token"));
    };
    match authenticator.authenticate(node, token).await {
        Ok(()) => Ok(node.to_owned()),
        Err(e @ AuthError::Refused(_)) => {
            tracing::warn!(service = what, node, reason = %e, "request from an unauthenticated node");
            Err(Status::unauthenticated(e.to_string()))
        }
        Err(e @ AuthError::Unavailable(_)) => {
            tracing::warn!(service = what, node, reason = %e, "request refused: cannot authenticate the node");
            Err(Status::unavailable(e.to_string()))
        }
    }
}

/// The per-node bootstrap tokens. Cheap to clone (a shared, updatable handle).
#[derive(Clone, Default)]
pub struct NodeTokens {
    tokens: Arc<RwLock<HashMap<String, String>>>,
}

impl std::fmt::Debug for NodeTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secrets.
        let nodes: Vec<String> = self.read().keys().cloned().collect();
        f.debug_struct("NodeTokens").field("nodes", &nodes).finish()
    }
}

impl NodeTokens {
    /// No node can authenticate yet.
    pub fn new() -> Self {
        NodeTokens::default()
    }

    /// Sets `node`'s token.
    pub fn insert(&self, node: &str, token: &str) {
        self.write().insert(node.to_owned(), token.to_owned());
    }

    /// Generates, stores and returns a fresh random token for `node` (256 bits, hex).
    pub fn generate(&self, node: &str) -> Result<String, CaError> {
        let mut bytes = [0u8; 32];
        rustls::crypto::aws_lc_rs::default_provider()
            .secure_random
            .fill(&mut bytes)
            .map_err(|_| CaError::Random)?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.insert(node, &token);
        Ok(token)
    }

    /// Revokes `node`'s token.
    pub fn remove(&self, node: &str) {
        self.write().remove(node);
    }

    /// Whether `token` is `node`'s token (compared in constant time).
    pub fn check(&self, node: &str, token: &str) -> bool {
        match self.read().get(node) {
            Some(expected) => constant_time_eq(expected.as_bytes(), token.as_bytes()),
            None => false,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, String>> {
        self.tokens
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, String>> {
        self.tokens
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl NodeAuthenticator for NodeTokens {
    async fn authenticate(&self, node: &str, token: &str) -> Result<(), AuthError> {
        if self.check(node, token) {
            Ok(())
        } else {
            Err(AuthError::refused("bad node token"))
        }
    }
}

/// Compares without an early exit on the first differing byte (the length is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn node_tokens_authenticate_only_the_right_node_and_token() {
        let tokens = NodeTokens::new();
        tokens.insert("node-1", "0123456789abcdef");
        assert_eq!(
            tokens.authenticate("node-1", "0123456789abcdef").await,
            Ok(())
        );
        for (node, token) in [
            ("node-1", "0123456789abcdeX"),
            ("node-1", "0123456789abcde"),
            ("node-1", ""),
            ("node-2", "0123456789abcdef"),
        ] {
            assert_eq!(
                tokens.authenticate(node, token).await,
                Err(AuthError::refused("bad node token")),
                "{node} {token}"
            );
        }
    }

    #[test]
    fn constant_time_eq_compares_whole_slices() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
