//! Helpers shared by the translators: a field conversion's result (a path-relative message on
//! failure) and the warnings gathered while one object is translated.

use super::{values, Context};
use crate::object::ObjectKey;

/// Result of one field conversion: (field path, message) on failure.
pub(crate) type Field<T> = Result<T, (String, String)>;

/// Puts `path` on a value parser's error.
pub(crate) fn at<T>(path: &str, r: Result<T, String>) -> Field<T> {
    r.map_err(|e| (path.to_owned(), e))
}

/// An optional duration in milliseconds.
pub(crate) fn opt_duration(path: &str, d: Option<&String>) -> Field<Option<u64>> {
    d.map(|d| at(path, values::duration_ms(d))).transpose()
}

/// An optional non-negative integer.
pub(crate) fn opt_u32(path: &str, v: Option<i32>) -> Field<Option<u32>> {
    v.map(|v| {
        at(
            path,
            u32::try_from(v).map_err(|_| format!("invalid value {v} (must be >= 0)")),
        )
    })
    .transpose()
}

/// Warnings about one object, by field path; another object's (a delegate VirtualService's)
/// carry its key.
#[derive(Debug, Default)]
pub(crate) struct Notes {
    items: Vec<(Option<ObjectKey>, String, String)>,
}

impl Notes {
    /// A warning about a field of the object being translated.
    pub fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.items.push((None, path.to_owned(), message.into()));
    }

    /// A warning about a field of another object.
    pub fn warn_on(&mut self, key: &ObjectKey, path: &str, message: impl Into<String>) {
        self.items
            .push((Some(key.clone()), path.to_owned(), message.into()));
    }

    /// A field accepted but not applied yet: "not supported yet; <effect>".
    pub fn unsupported(&mut self, path: &str, effect: &str) {
        self.warn(path, format!("not supported yet; {effect}"));
    }

    /// Takes over `other`'s warnings, those about its own object as about `key`.
    pub fn absorb(&mut self, other: Notes, key: &ObjectKey) {
        for (k, path, message) in other.items {
            self.items
                .push((Some(k.unwrap_or_else(|| key.clone())), path, message));
        }
    }

    /// Records the warnings on `key` (or the object each names).
    pub fn report(self, cx: &mut Context<'_>, key: &ObjectKey) {
        for (other, path, message) in self.items {
            cx.report_once(other.as_ref().unwrap_or(key), &path, message, true);
        }
    }
}
