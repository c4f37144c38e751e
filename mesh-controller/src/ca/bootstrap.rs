//! Bootstrap tokens for the local cluster: a file of `node=token` lines, loaded into the
//! [`NodeTokens`] the certificate service checks.

use std::collections::BTreeMap;
use std::path::Path;

use mesh_hbone::ca_service::NodeTokens;

use super::CaStartError;

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

/// The [`NodeTokens`] holding `tokens`.
pub fn node_tokens(tokens: &BTreeMap<String, String>) -> NodeTokens {
    let node_tokens = NodeTokens::new();
    for (node, token) in tokens {
        node_tokens.insert(node, token);
    }
    node_tokens
}
