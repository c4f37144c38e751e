//! The model the waypoint routes with: the last good snapshot from the controller, turned into a
//! [`RouteTable`] once per update. Each request reads the table current when it starts, so a
//! change applies to new requests and never cuts one in flight. The JWT key sets fetched from
//! `http://` URLs ([`crate::jwks_fetch`]) are kept here too; a changed one rebuilds the table of
//! the current model.

use std::sync::Arc;

use mesh_common::model::Snapshot;
use tokio::sync::watch;

use crate::config::Instance;
use crate::jwks_fetch::KeySets;
use crate::table::RouteTable;

/// The current route table, swapped on every model update.
#[derive(Debug)]
pub struct State {
    instance: Instance,
    table: watch::Sender<Arc<RouteTable>>,
    updates: watch::Sender<u64>,
    key_sets: KeySets,
    /// Held while a table is built and published, so a rebuild of the current model never
    /// publishes over a newer one applied meanwhile.
    applying: std::sync::Mutex<()>,
}

impl State {
    /// A state with an empty model.
    pub fn new(instance: Instance) -> Arc<State> {
        let table = RouteTable::new(
            Arc::new(Snapshot::default()),
            &instance.identity.trust_domain,
            (&instance.namespace, &instance.name),
        );
        Arc::new(State {
            instance,
            table: watch::channel(Arc::new(table)).0,
            updates: watch::channel(0).0,
            key_sets: KeySets::default(),
            applying: std::sync::Mutex::new(()),
        })
    }

    /// This waypoint instance.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// The table to decide a new request with.
    pub fn table(&self) -> Arc<RouteTable> {
        self.table.borrow().clone()
    }

    /// How many models have been applied (0 before the first).
    pub fn applied(&self) -> u64 {
        *self.updates.borrow()
    }

    /// The JWT key sets fetched from `http://` URLs.
    pub fn key_sets(&self) -> &KeySets {
        &self.key_sets
    }

    /// Changes with every model applied.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.updates.subscribe()
    }

    /// Rebuilds the table of the current model (after a key set was fetched).
    pub fn reapply(&self) {
        let _applying = self.applying.lock().unwrap_or_else(|e| e.into_inner());
        let snapshot = self.table().snapshot().clone();
        self.build(snapshot);
    }

    /// Builds and publishes the table of `snapshot`, logging what it could not use.
    pub fn apply(&self, snapshot: Arc<Snapshot>) {
        let _applying = self.applying.lock().unwrap_or_else(|e| e.into_inner());
        self.build(snapshot);
    }

    fn build(&self, snapshot: Arc<Snapshot>) {
        let version = snapshot.version.clone();
        let table = RouteTable::with_key_sets(
            snapshot,
            &self.instance.identity.trust_domain,
            (&self.instance.namespace, &self.instance.name),
            &|uri| self.key_sets.get(uri),
        );
        for warning in table.warnings() {
            tracing::warn!(version, %warning, "model entry not applied");
        }
        tracing::info!(version, routes = table.route_count(), "config applied");
        self.table.send_replace(Arc::new(table));
        self.updates.send_modify(|n| *n += 1);
    }

    /// Applies every snapshot `updates` publishes, until its sender is gone.
    pub async fn follow(self: Arc<Self>, mut updates: watch::Receiver<Arc<Snapshot>>) {
        loop {
            let snapshot = updates.borrow_and_update().clone();
            if !snapshot.version.is_empty() {
                self.apply(snapshot);
            }
            if updates.changed().await.is_err() {
                return;
            }
        }
    }
}
