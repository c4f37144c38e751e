//! Configuration errors: every one names where the object came from (file or `kubernetes`),
//! which object (kind namespace/name) and the field path, so a user can fix it without guessing.

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
}

impl ConfigError {
    /// An error about a field of an object.
    pub fn field(origin: &str, object: &ObjectKey, path: &str, message: impl Into<String>) -> Self {
        ConfigError {
            origin: origin.to_owned(),
            object: Some(Box::new(object.clone())),
            path: path.to_owned(),
            message: message.into(),
        }
    }

    /// An error about a document that is not a recognizable object.
    pub fn document(origin: &str, path: &str, message: impl Into<String>) -> Self {
        ConfigError {
            origin: origin.to_owned(),
            object: None,
            path: path.to_owned(),
            message: message.into(),
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
        write!(f, ": {}", self.message)
    }
}
