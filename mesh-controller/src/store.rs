//! The current set of objects from all sources, keyed by (kind, namespace, name). Each entry
//! remembers its source unit (a file, or `kubernetes`) so a source can replace just its own
//! objects when one file changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::ConfigError;
use crate::object::{Kind, Object, ObjectKey};

/// One stored object.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Source unit that owns the object (file path, or source name).
    pub unit: String,
    /// Where exactly it came from, for errors (e.g. `a.yaml (document 2)`).
    pub origin: String,
    /// The object.
    pub object: Arc<Object>,
}

/// All objects.
#[derive(Clone, Debug, Default)]
pub struct Store {
    objects: BTreeMap<ObjectKey, Entry>,
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Store::default()
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether there are no objects.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Inserts or replaces an object. An object with the same key owned by another unit is kept
    /// and the new one rejected with an error (two files defining the same object).
    pub fn upsert(&mut self, unit: &str, origin: &str, object: Object) -> Result<(), ConfigError> {
        let key = object.key();
        if let Some(existing) = self.objects.get(&key) {
            if existing.unit != unit {
                return Err(ConfigError::field(
                    origin,
                    &key,
                    "",
                    format!("duplicate object, already defined in {}", existing.origin),
                ));
            }
        }
        self.objects.insert(
            key,
            Entry {
                unit: unit.to_owned(),
                origin: origin.to_owned(),
                object: Arc::new(object),
            },
        );
        Ok(())
    }

    /// Removes an object if the unit owns it.
    pub fn remove(&mut self, unit: &str, key: &ObjectKey) -> bool {
        if self.objects.get(key).is_some_and(|e| e.unit == unit) {
            self.objects.remove(key);
            return true;
        }
        false
    }

    /// Replaces everything a unit owns with `objects` (each with its origin); returns the
    /// duplicate errors.
    pub fn replace_unit(&mut self, unit: &str, objects: Vec<(String, Object)>) -> Vec<ConfigError> {
        self.objects.retain(|_, e| e.unit != unit);
        objects
            .into_iter()
            .filter_map(|(origin, object)| self.upsert(unit, &origin, object).err())
            .collect()
    }

    /// The object with a key.
    pub fn get(&self, key: &ObjectKey) -> Option<&Entry> {
        self.objects.get(key)
    }

    /// All objects of a kind, in key order.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = (&ObjectKey, &Entry)> {
        self.objects
            .range(range_start(kind)..)
            .take_while(move |(k, _)| k.kind == kind)
    }

    /// All objects, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&ObjectKey, &Entry)> {
        self.objects.iter()
    }
}

fn range_start(kind: Kind) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: String::new(),
        name: String::new(),
    }
}
