//! The node's bearer credential, sent to the certificate service and the config stream: a fixed
//! bootstrap token, or a token file re-read at every request (a projected Kubernetes
//! service-account token, which the kubelet rotates in place).

use std::path::{Path, PathBuf};

use tonic::metadata::{Ascii, MetadataMap, MetadataValue};

use super::{CaClientError, NODE_METADATA};

/// Where the bearer token comes from, and the node it speaks for.
#[derive(Clone)]
pub struct Credential {
    node: MetadataValue<Ascii>,
    token: Token,
}

#[derive(Clone)]
enum Token {
    /// Always this `authorization` value.
    Fixed(MetadataValue<Ascii>),
    /// Read from this file at every request.
    File(PathBuf),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        let token = match &self.token {
            Token::Fixed(_) => "fixed".to_owned(),
            Token::File(path) => path.display().to_string(),
        };
        f.debug_struct("Credential")
            .field("node", &self.node)
            .field("token", &token)
            .finish()
    }
}

impl Credential {
    /// `node` with its bootstrap `token`.
    pub fn fixed(node: &str, token: &str) -> Result<Self, CaClientError> {
        Ok(Credential {
            node: node_value(node)?,
            token: Token::Fixed(bearer(token).map_err(|_| CaClientError::BadMetadata)?),
        })
    }

    /// `node` with the token held in `token_file`, re-read at every request. The file must hold
    /// a token now.
    pub fn file(node: &str, token_file: &Path) -> Result<Self, CaClientError> {
        let token = std::fs::read_to_string(token_file).map_err(|e| CaClientError::TokenFile {
            path: token_file.to_owned(),
            message: e.to_string(),
        })?;
        bearer(token.trim()).map_err(|message| CaClientError::TokenFile {
            path: token_file.to_owned(),
            message,
        })?;
        Ok(Credential {
            node: node_value(node)?,
            token: Token::File(token_file.to_owned()),
        })
    }

    /// Adds the node name and the `authorization` header to `metadata`.
    pub async fn authorize(&self, metadata: &mut MetadataMap) -> Result<(), CaClientError> {
        let authorization = match &self.token {
            Token::Fixed(value) => value.clone(),
            Token::File(path) => {
                let token = tokio::fs::read_to_string(path).await.map_err(|e| {
                    CaClientError::TokenFile {
                        path: path.clone(),
                        message: e.to_string(),
                    }
                })?;
                bearer(token.trim()).map_err(|message| CaClientError::TokenFile {
                    path: path.clone(),
                    message,
                })?
            }
        };
        metadata.insert(NODE_METADATA, self.node.clone());
        metadata.insert("authorization", authorization);
        Ok(())
    }
}

fn node_value(node: &str) -> Result<MetadataValue<Ascii>, CaClientError> {
    if node.is_empty() {
        return Err(CaClientError::BadMetadata);
    }
    node.parse().map_err(|_| CaClientError::BadMetadata)
}

/// The `authorization` value for `token`.
fn bearer(token: &str) -> Result<MetadataValue<Ascii>, String> {
    if token.is_empty() {
        return Err("empty token".to_owned());
    }
    format!("Bearer {token}")
        .parse()
        .map_err(|_| "token is not valid gRPC metadata".to_owned())
}
