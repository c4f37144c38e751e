//! Configuration errors: every one names where the object came from (file or `kubernetes`),
//! which object (kind namespace/name) and the field path, so a user can fix it without guessing.
//! A warning is a problem that changes nothing the user relies on for security: a field that
//! is accepted but not applied yet (CORS, a gateway binding to an ingress gateway not built
//! yet), a label that does not apply to the object it is on. The object is still translated.

use std::fmt;

use crate::object::ObjectKey;

/// One problem with one object (or one document that could not be identified as an object).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, thiserror::Error)]
pub struct ConfigError {
    /// File path (with document number) or source name.
    pub origin: String,
    /// The object, when it could be identified (boxed to keep results small).
    pub object: Option<Box<ObjectKey>>,
    /// Field path, e.g. `spec.http[0].route[1].weight` (empty for the whole object).
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// Whether this is a warning: the object is translated without what the message names.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub warning: bool,
}

impl ConfigError {
    /// An error about a field of an object.
    pub fn field(origin: &str, object: &ObjectKey, path: &str, message: impl Into<String>) -> Self {
        ConfigError {
            origin: origin.to_owned(),
            object: Some(Box::new(object.clone())),
            path: path.to_owned(),
            message: message.into(),
            warning: false,
        }
    }

    /// A warning about a field of an object (translated without what the message names).
    pub fn warning(
        origin: &str,
        object: &ObjectKey,
        path: &str,
        message: impl Into<String>,
    ) -> Self {
        ConfigError {
            warning: true,
            ..ConfigError::field(origin, object, path, message)
        }
    }

    /// An error about a document that is not a recognizable object.
    pub fn document(origin: &str, path: &str, message: impl Into<String>) -> Self {
        ConfigError {
            origin: origin.to_owned(),
            object: None,
            path: path.to_owned(),
            message: message.into(),
            warning: false,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(object) = &self.object {
            write!(f, ": {object}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        if self.warning {
            write!(f, ": warning")?;
        }
        write!(f, ": {}", self.message)
    }
}
