//! How the certificate service authenticates agents, decided from the controller's flags:
//! bootstrap tokens from a file (the local cluster), Kubernetes `TokenReview`, or no service.
//!
//! Without `--ca-auth`: `--bootstrap-tokens` means tokens; otherwise `--kubernetes` means
//! `TokenReview`; otherwise the service is off. Combinations that would silently ignore a flag
//! are errors.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::token_review::{ServiceAccount, TokenReviewOptions};

/// [`CaAuthError::Ignored`] when the certificate service is off.
pub const OFF: &str = "the certificate service is off";
/// [`CaAuthError::Ignored`] with bootstrap tokens.
pub const TOKENS: &str = "agents authenticate with bootstrap tokens";

/// The `--ca-auth` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaAuthKind {
    /// Per-node bootstrap tokens (`--bootstrap-tokens`).
    Tokens,
    /// Service-account tokens reviewed by the Kubernetes API server.
    Kubernetes,
}

impl FromStr for CaAuthKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tokens" => Ok(CaAuthKind::Tokens),
            "kubernetes" => Ok(CaAuthKind::Kubernetes),
            other => Err(format!("{other:?}: expected tokens or kubernetes")),
        }
    }
}

/// The CA authentication flags as given (`None`: not given).
#[derive(Debug, Clone, Default)]
pub struct CaAuthFlags {
    /// `--ca-auth`.
    pub ca_auth: Option<CaAuthKind>,
    /// `--bootstrap-tokens`.
    pub bootstrap_tokens: Option<PathBuf>,
    /// `--kubernetes`.
    pub kubernetes: bool,
    /// `--ca-token-audience`.
    pub token_audience: Option<String>,
    /// `--agent-service-account`.
    pub agent_service_account: Option<ServiceAccount>,
    /// `--ca-token-cache-secs`.
    pub token_cache_secs: Option<u64>,
}

/// How agents authenticate, if the certificate service runs at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaAuth {
    /// No certificate service.
    Off,
    /// Bootstrap tokens read from this file.
    Tokens(PathBuf),
    /// Kubernetes `TokenReview`.
    Kubernetes(TokenReviewOptions),
}

/// A contradictory or incomplete set of CA flags.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaAuthError {
    /// `--ca-auth tokens` without the tokens.
    #[error("--ca-auth tokens needs --bootstrap-tokens <file>")]
    TokensWithoutFile,
    /// Both ways at once.
    #[error("--bootstrap-tokens cannot be combined with --ca-auth kubernetes: choose one")]
    TokensWithKubernetes,
    /// `TokenReview` without the Kubernetes source.
    #[error(
        "--ca-auth kubernetes needs --kubernetes (the API server reviews the agents' tokens \
         and lists the pods that place workloads on nodes)"
    )]
    KubernetesWithoutApi,
    /// `TokenReview` settings that would be ignored.
    #[error("{flag} only applies to --ca-auth kubernetes ({mode})")]
    Ignored {
        /// The flag.
        flag: &'static str,
        /// What the other flags chose instead.
        mode: &'static str,
    },
    /// An empty audience.
    #[error("--ca-token-audience must not be empty")]
    EmptyAudience,
}

impl CaAuthFlags {
    /// The authentication these flags ask for.
    pub fn resolve(&self) -> Result<CaAuth, CaAuthError> {
        let kind = self.ca_auth.or(if self.bootstrap_tokens.is_some() {
            Some(CaAuthKind::Tokens)
        } else if self.kubernetes {
            Some(CaAuthKind::Kubernetes)
        } else {
            None
        });
        match kind {
            None => {
                self.no_review_flags(OFF)?;
                Ok(CaAuth::Off)
            }
            Some(CaAuthKind::Tokens) => {
                let path = self
                    .bootstrap_tokens
                    .clone()
                    .ok_or(CaAuthError::TokensWithoutFile)?;
                self.no_review_flags(TOKENS)?;
                Ok(CaAuth::Tokens(path))
            }
            Some(CaAuthKind::Kubernetes) => {
                if self.bootstrap_tokens.is_some() {
                    return Err(CaAuthError::TokensWithKubernetes);
                }
                if !self.kubernetes {
                    return Err(CaAuthError::KubernetesWithoutApi);
                }
                let mut options = TokenReviewOptions::default();
                if let Some(audience) = &self.token_audience {
                    if audience.trim().is_empty() {
                        return Err(CaAuthError::EmptyAudience);
                    }
                    options.audience = audience.clone();
                }
                if let Some(sa) = &self.agent_service_account {
                    options.service_account = sa.clone();
                }
                if let Some(secs) = self.token_cache_secs {
                    options.cache_ttl = Duration::from_secs(secs);
                }
                Ok(CaAuth::Kubernetes(options))
            }
        }
    }

    fn no_review_flags(&self, mode: &'static str) -> Result<(), CaAuthError> {
        let given = [
            ("--ca-token-audience", self.token_audience.is_some()),
            (
                "--agent-service-account",
                self.agent_service_account.is_some(),
            ),
            ("--ca-token-cache-secs", self.token_cache_secs.is_some()),
        ];
        match given.into_iter().find(|(_, given)| *given) {
            Some((flag, _)) => Err(CaAuthError::Ignored { flag, mode }),
            None => Ok(()),
        }
    }
}
