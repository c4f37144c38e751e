//! Bootstrap tokens for the local cluster: a file of `principal=token` lines, loaded into the
//! [`NodeTokens`] the certificate service and the config stream check. A principal is a node
//! name (its agent) or `waypoint/<namespace>/<name>` (the instances of that waypoint; see
//! [`crate::principal`]).

use std::collections::BTreeMap;
use std::path::Path;

use mesh_hbone::ca_service::NodeTokens;

use super::CaStartError;
use crate::principal::Principal;

/// Reads `principal=token` lines (blank lines and `#` comments skipped); a principal that is
/// neither a node name nor `waypoint/<namespace>/<name>` is an error.
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
        if let Err(e) = node.trim().parse::<Principal>() {
            return Err(err(format!("line {}: {e}", n + 1)));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<BTreeMap<String, String>, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("tokens");
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        read_tokens(&path).map_err(|e| match e {
            CaStartError::Tokens { message, .. } => message,
            other => other.to_string(),
        })
    }

    #[test]
    fn token_files_hold_nodes_and_waypoints() {
        let t = "0123456789abcdef";
        let ok =
            read(&format!("# nodes\nnode1={t}\n\nwaypoint/apps/wp = {t}x\n")).expect("valid file");
        assert_eq!(ok.get("node1").map(String::as_str), Some(t));
        assert_eq!(
            ok.get("waypoint/apps/wp").map(String::as_str),
            Some(format!("{t}x").as_str())
        );
        #[rustfmt::skip]
        let bad: &[(&str, &str)] = &[
            ("node1", "line 1: expected node=token"),
            ("node1=short", "line 1: empty node or token shorter than 16 characters"),
            ("a/b=0123456789abcdef", "line 1: \"a/b\": a '/' is only allowed in waypoint/<namespace>/<name>"),
            ("waypoint/apps=0123456789abcdef", "line 1: \"waypoint/apps\": expected waypoint/<namespace>/<name>"),
        ];
        for (text, want) in bad {
            let got = read(text).expect_err(text);
            assert!(got.starts_with(want), "{text:?}: {got}");
        }
    }
}
