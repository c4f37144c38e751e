//! The controller core: holds the objects from every source, re-translates on each batch of
//! changes and publishes the result (model, its resources, version, errors) to the config
//! streams. The version is a hash of the model, so the same configuration has the same version
//! across restarts.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use mesh_common::api::{ResourceError, ResourceSet};
use mesh_common::model::Snapshot;
use tokio::sync::watch;

use crate::error::ConfigError;
use crate::load::Parsed;
use crate::object::{Object, ObjectKey};
use crate::store::Store;
use crate::translate::{translate, TranslateOptions, Waypoints};

/// One published configuration.
#[derive(Debug)]
pub struct Published {
    /// Version (hash of the model).
    pub version: String,
    /// The full model.
    pub snapshot: Arc<Snapshot>,
    /// The model as stream resources.
    pub resources: Arc<ResourceSet>,
    /// Every current problem, from parsing and translation.
    pub errors: Arc<Vec<ConfigError>>,
    /// Objects of kinds the mesh ignores.
    pub ignored: Arc<Vec<String>>,
    /// The declared waypoints and their instances.
    pub waypoints: Arc<Waypoints>,
    /// When it was published (push latency is measured from here).
    pub published_at: Instant,
}

impl Default for Published {
    fn default() -> Self {
        Published {
            version: String::new(),
            snapshot: Arc::default(),
            resources: Arc::default(),
            errors: Arc::default(),
            ignored: Arc::default(),
            waypoints: Arc::default(),
            published_at: Instant::now(),
        }
    }
}

/// A change from a source.
#[derive(Debug)]
pub enum Change {
    /// Replace everything a unit (file) holds with what it now parses to.
    ReplaceUnit {
        /// Unit (file path, or source/kind).
        unit: String,
        /// Its objects and errors.
        parsed: Parsed,
    },
    /// A unit is gone.
    RemoveUnit {
        /// Unit.
        unit: String,
    },
    /// One object added or changed.
    Upsert {
        /// Unit that owns it.
        unit: String,
        /// Origin for errors.
        origin: String,
        /// The object.
        object: Box<Object>,
    },
    /// One object is invalid: it is removed (its previous version too) and the error recorded.
    Reject {
        /// Unit that owns it.
        unit: String,
        /// Its key.
        key: ObjectKey,
        /// The problem.
        error: ConfigError,
    },
    /// One object deleted.
    Delete {
        /// Unit that owns it.
        unit: String,
        /// Its key.
        key: ObjectKey,
    },
}

/// Why a configuration could not be published.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The model did not encode.
    #[error("encoding the model: {0}")]
    Encode(#[from] ResourceError),
}

#[derive(Debug, Default)]
struct State {
    store: Store,
    /// Parse errors by unit.
    unit_errors: BTreeMap<String, Vec<ConfigError>>,
    /// Ignored objects by unit.
    unit_ignored: BTreeMap<String, Vec<String>>,
}

/// The controller core.
#[derive(Debug)]
pub struct Controller {
    options: TranslateOptions,
    state: Mutex<State>,
    tx: watch::Sender<Arc<Published>>,
}

impl Controller {
    /// A controller with no objects.
    pub fn new(options: TranslateOptions) -> Arc<Self> {
        let (tx, _) = watch::channel(Arc::new(Published::default()));
        let controller = Arc::new(Controller {
            options,
            state: Mutex::new(State::default()),
            tx,
        });
        // Publish the empty model so clients can sync against an empty directory.
        if let Err(e) = controller.apply(Vec::new()) {
            tracing::error!(error = %e, "publishing the empty model");
        }
        controller
    }

    /// Applies a batch of changes, re-translates and publishes if the model or errors changed.
    pub fn apply(&self, changes: Vec<Change>) -> Result<(), ControllerError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for change in changes {
            match change {
                Change::ReplaceUnit { unit, parsed } => {
                    let prefix = format!("{unit}#");
                    state
                        .unit_errors
                        .retain(|slot, _| !slot.starts_with(&prefix));
                    let mut errors = parsed.errors;
                    errors.extend(state.store.replace_unit(&unit, parsed.objects));
                    state.unit_errors.insert(unit.clone(), errors);
                    state.unit_ignored.insert(unit, parsed.ignored);
                }
                Change::RemoveUnit { unit } => {
                    state.store.replace_unit(&unit, Vec::new());
                    state.unit_errors.remove(&unit);
                    state.unit_ignored.remove(&unit);
                }
                Change::Upsert {
                    unit,
                    origin,
                    object,
                } => {
                    let slot = format!("{unit}#{}", object.key());
                    match state.store.upsert(&unit, &origin, *object) {
                        Ok(()) => state.unit_errors.remove(&slot),
                        Err(e) => state.unit_errors.insert(slot, vec![e]),
                    };
                }
                Change::Reject { unit, key, error } => {
                    state.store.remove(&unit, &key);
                    state
                        .unit_errors
                        .insert(format!("{unit}#{key}"), vec![error]);
                }
                Change::Delete { unit, key } => {
                    state.store.remove(&unit, &key);
                    state.unit_errors.remove(&format!("{unit}#{key}"));
                }
            }
        }
        let translation = translate(&state.store, &self.options);
        let mut errors: Vec<ConfigError> = state.unit_errors.values().flatten().cloned().collect();
        errors.extend(translation.errors);
        let ignored: Vec<String> = state.unit_ignored.values().flatten().cloned().collect();
        drop(state);
        let waypoints = translation.waypoints;
        let mut snapshot = translation.snapshot;
        let resources = ResourceSet::from_snapshot(&snapshot)?;
        let version = version_of(&resources);
        snapshot.version = version.clone();
        let current = self.tx.borrow().clone();
        if current.version == version
            && *current.errors == errors
            && *current.ignored == ignored
            && *current.waypoints == waypoints
        {
            return Ok(());
        }
        for e in &errors {
            tracing::warn!(error = %e, "configuration error");
        }
        tracing::info!(%version, workloads = snapshot.workloads.len(), services = snapshot.services.len(), errors = errors.len(), "publishing configuration");
        self.tx.send_replace(Arc::new(Published {
            version,
            snapshot: Arc::new(snapshot),
            resources: Arc::new(resources),
            errors: Arc::new(errors),
            ignored: Arc::new(ignored),
            waypoints: Arc::new(waypoints),
            published_at: Instant::now(),
        }));
        Ok(())
    }

    /// The current configuration.
    pub fn current(&self) -> Arc<Published> {
        self.tx.borrow().clone()
    }

    /// A receiver that sees every published configuration.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Published>> {
        self.tx.subscribe()
    }

    /// Number of stored objects.
    pub fn object_count(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .store
            .len()
    }
}

/// A stable hash of the resources: same model, same version.
fn version_of(resources: &ResourceSet) -> String {
    let mut hasher = DefaultHasher::new();
    resources.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}
