//! Node authentication in Kubernetes: the agent presents a projected service-account token (with
//! the CA's audience) and the API server reviews it (`TokenReview`). The token is accepted only
//! if the API server authenticated it for the audience, it belongs to the agent's service account,
//! and it is bound to a pod on the node the agent claims
//! (`authentication.kubernetes.io/node-name`, set in bound tokens since Kubernetes 1.30).
//! Anything else, including an API error, refuses the request (fail closed).

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::{Api, PostParams};
use kube::Client;
use mesh_hbone::ca_service::{AuthError, NodeAuthenticator};

use super::review_cache::{cache_key, ReviewCache};
use crate::principal::Principal;

/// Default audience of the agents' tokens.
pub const DEFAULT_AUDIENCE: &str = "mesh-ca";
/// Default namespace of the agents' service account.
pub const DEFAULT_AGENT_NAMESPACE: &str = "mesh-system";
/// Default name of the agents' service account.
pub const DEFAULT_AGENT_NAME: &str = "mesh-agent";
/// The `user.extra` key naming the node of the pod a bound token belongs to.
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";

/// A service account, written `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ServiceAccount {
    /// The user name the API server gives its tokens: `system:serviceaccount:<ns>:<name>`.
    pub fn username(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }
}

impl Default for ServiceAccount {
    fn default() -> Self {
        ServiceAccount {
            namespace: DEFAULT_AGENT_NAMESPACE.to_owned(),
            name: DEFAULT_AGENT_NAME.to_owned(),
        }
    }
}

impl std::fmt::Display for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A malformed `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("service account {0:?}: expected namespace/name (lowercase letters, digits, '-', '.')")]
pub struct BadServiceAccount(pub String);

impl FromStr for ServiceAccount {
    type Err = BadServiceAccount;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = |part: &str| {
            !part.is_empty()
                && part.len() <= 253
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        };
        match s.split_once('/') {
            Some((namespace, name)) if valid(namespace) && valid(name) => Ok(ServiceAccount {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            }),
            _ => Err(BadServiceAccount(s.to_owned())),
        }
    }
}

/// Settings of the `TokenReview` authenticator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenReviewOptions {
    /// The audience the agents' tokens must be issued for.
    pub audience: String,
    /// The agents' service account.
    pub service_account: ServiceAccount,
    /// How long an accepted token is trusted without asking again (zero: always ask).
    pub cache_ttl: Duration,
    /// Bound on one `TokenReview` call.
    pub timeout: Duration,
}

impl Default for TokenReviewOptions {
    fn default() -> Self {
        TokenReviewOptions {
            audience: DEFAULT_AUDIENCE.to_owned(),
            service_account: ServiceAccount::default(),
            cache_ttl: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Authenticates agents by asking the API server to review their service-account tokens.
#[derive(Debug)]
pub struct TokenReviewAuthenticator {
    api: Api<TokenReview>,
    options: TokenReviewOptions,
    cache: ReviewCache,
}

impl TokenReviewAuthenticator {
    /// Reviews tokens through `client` (it needs `create` on `tokenreviews.authentication.k8s.io`).
    pub fn new(client: Client, options: TokenReviewOptions) -> Self {
        TokenReviewAuthenticator {
            api: Api::all(client),
            cache: ReviewCache::new(options.cache_ttl),
            options,
        }
    }

    async fn review(&self, token: &str) -> Result<TokenReviewStatus, AuthError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: Some(vec![self.options.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let created = tokio::time::timeout(
            self.options.timeout,
            self.api.create(&PostParams::default(), &review),
        )
        .await
        .map_err(|_| {
            AuthError::Unavailable(format!(
                "TokenReview timed out after {:?}",
                self.options.timeout
            ))
        })?
        .map_err(|e| AuthError::Unavailable(format!("TokenReview failed: {e}")))?;
        created
            .status
            .ok_or_else(|| AuthError::Unavailable("TokenReview answered without a status".into()))
    }
}

#[async_trait]
impl NodeAuthenticator for TokenReviewAuthenticator {
    async fn authenticate(&self, node: &str, token: &str) -> Result<(), AuthError> {
        node_principal(node)?;
        let key = cache_key(node, token);
        if self.cache.hit(&key) {
            return Ok(());
        }
        let status = self.review(token).await?;
        check(&status, node, &self.options)?;
        self.cache.insert(key);
        tracing::debug!(node, "agent token reviewed and accepted");
        Ok(())
    }
}

/// Refuses what is not a node name before any review: waypoint principals
/// (`waypoint/<namespace>/<name>`) cannot authenticate with Kubernetes tokens yet.
pub fn node_principal(node: &str) -> Result<(), AuthError> {
    match node.parse::<Principal>() {
        Ok(Principal::Node(_)) => Ok(()),
        Ok(Principal::Waypoint { .. }) => Err(AuthError::refused(format!(
            "{node:?}: waypoint credentials are not supported with --ca-auth kubernetes yet \
             (only agents' service-account tokens are reviewed); run waypoints with bootstrap \
             tokens (--bootstrap-tokens)"
        ))),
        Err(e) => Err(AuthError::refused(e.to_string())),
    }
}

/// Whether a review `status` proves that the token is the agent's, bound to a pod on `node`.
pub fn check(
    status: &TokenReviewStatus,
    node: &str,
    options: &TokenReviewOptions,
) -> Result<(), AuthError> {
    if status.authenticated != Some(true) {
        let why = status.error.as_deref().unwrap_or("no reason given");
        return Err(AuthError::refused(format!(
            "token not authenticated by the API server: {why}"
        )));
    }
    let audiences = status.audiences.as_deref().unwrap_or_default();
    if !audiences.contains(&options.audience) {
        return Err(AuthError::refused(format!(
            "token not valid for audience {:?} (reviewed audiences: {audiences:?})",
            options.audience
        )));
    }
    let user = status.user.as_ref();
    let username = user.and_then(|u| u.username.as_deref()).unwrap_or_default();
    let expected = options.service_account.username();
    if username != expected {
        return Err(AuthError::refused(format!(
            "token belongs to {username:?}, not the agent service account {expected:?}"
        )));
    }
    let bound_node = user
        .and_then(|u| u.extra.as_ref())
        .and_then(|extra| extra.get(NODE_NAME_EXTRA))
        .map(Vec::as_slice)
        .unwrap_or_default();
    match bound_node {
        [] => Err(AuthError::refused(format!(
            "token carries no {NODE_NAME_EXTRA}: the agent must present a pod-bound projected \
             service-account token, on Kubernetes 1.30 or later"
        ))),
        [bound] if bound == node => Ok(()),
        other => Err(AuthError::refused(format!(
            "token is bound to a pod on node {other:?}, not on {node:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_node_principals_are_reviewed() {
        assert_eq!(node_principal("node1"), Ok(()));
        for (principal, want) in [
            (
                "waypoint/apps/wp",
                "waypoint credentials are not supported with --ca-auth kubernetes yet",
            ),
            (
                "a/b",
                "a '/' is only allowed in waypoint/<namespace>/<name>",
            ),
            ("", "empty principal"),
        ] {
            match node_principal(principal) {
                Err(AuthError::Refused(message)) => {
                    assert!(message.contains(want), "{principal:?}: {message}")
                }
                other => panic!("{principal:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn service_accounts_parse_as_namespace_slash_name() {
        let sa: ServiceAccount = "mesh-system/mesh-agent".parse().expect("valid");
        assert_eq!(sa, ServiceAccount::default());
        assert_eq!(
            sa.username(),
            "system:serviceaccount:mesh-system:mesh-agent"
        );
        assert_eq!(sa.to_string(), "mesh-system/mesh-agent");
        for bad in [
            "",
            "mesh-agent",
            "/a",
            "a/",
            "a/b/c",
            "A/b",
            "a:b/c",
            "a/b c",
        ] {
            assert!(bad.parse::<ServiceAccount>().is_err(), "{bad:?}");
        }
    }
}
