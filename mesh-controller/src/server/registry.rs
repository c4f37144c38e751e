//! The connected clients and what each has been sent and has acknowledged, for the admin
//! endpoint, `meshctl status` and the push metrics ([`PushMetrics`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::metrics::{is_stale, ClientCounts, Kind, Pending, PushMetrics};

/// What the admin endpoint shows for one client.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientInfo {
    /// Client id from its Hello.
    pub client_id: String,
    /// Node it runs on.
    pub node: String,
    /// `agent` or `waypoint`.
    pub kind: String,
    /// Peer address.
    pub peer: String,
    /// Unix time (seconds) the stream opened.
    pub connected_at: u64,
    /// Version the client had before connecting.
    pub previous_version: String,
    /// Last version sent.
    pub sent_version: String,
    /// Last version acknowledged.
    pub acked_version: String,
    /// Last rejection (version and error), if any.
    pub last_nack: Option<String>,
    /// Resources in the client's view.
    pub resources: usize,
    /// What the client reported, with its last acknowledgement, that it did not understand
    /// (fields and enum values of a newer model: version skew); bounded.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// One connected client.
#[derive(Debug)]
struct Entry {
    info: ClientInfo,
    kind: Kind,
    pending: Pending,
}

/// Connected clients by stream id.
#[derive(Debug, Default)]
pub struct Registry {
    next_id: AtomicU64,
    clients: Mutex<BTreeMap<u64, Entry>>,
    metrics: PushMetrics,
}

impl Registry {
    /// Adds a client of `kind` (its `info.kind` is set from it); returns its stream id.
    pub fn add(&self, mut info: ClientInfo, kind: Kind) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        info.connected_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        info.kind = kind.as_str().to_owned();
        let pending = Pending {
            connected: Instant::now(),
            unacked_since: None,
        };
        self.lock().insert(
            id,
            Entry {
                info,
                kind,
                pending,
            },
        );
        id
    }

    /// Records an update of `version` (the client's view: `resources` resources) written to a
    /// client's stream, `waited` after it was there to send.
    pub fn sent(&self, id: u64, version: &str, resources: usize, full: bool, waited: Duration) {
        let mut clients = self.lock();
        let Some(entry) = clients.get_mut(&id) else {
            return;
        };
        entry.info.sent_version = version.to_owned();
        entry.info.resources = resources;
        entry.pending.unacked_since.get_or_insert_with(Instant::now);
        self.metrics.pushed(entry.kind, full, waited);
    }

    /// Records a client's acknowledgement of `version`.
    pub fn acked(&self, id: u64, version: String, warnings: Vec<String>) {
        let mut clients = self.lock();
        let Some(entry) = clients.get_mut(&id) else {
            return;
        };
        if version == entry.info.sent_version {
            entry.pending.unacked_since = None;
        }
        entry.info.acked_version = version;
        entry.info.warnings = warnings;
        self.metrics.acked(entry.kind);
    }

    /// Records a client's rejection of `version` (`resource_kind`: the raw kind it names).
    pub fn nacked(&self, id: u64, version: &str, error: &str, resource_kind: i32) {
        let mut clients = self.lock();
        let Some(entry) = clients.get_mut(&id) else {
            return;
        };
        entry.info.last_nack = Some(format!("{version}: {error}"));
        self.metrics.nacked(entry.kind, resource_kind);
    }

    /// Removes a client.
    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// All clients, ordered by client id.
    pub fn list(&self) -> Vec<ClientInfo> {
        let mut clients: Vec<ClientInfo> = self.lock().values().map(|e| e.info.clone()).collect();
        clients.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        clients
    }

    /// Connected and stale clients per kind at `now`, against the `latest` version published
    /// at `published` ([`is_stale`] after `stale_after`).
    pub fn counts(
        &self,
        latest: &str,
        published: Instant,
        now: Instant,
        stale_after: Duration,
    ) -> BTreeMap<Kind, ClientCounts> {
        let mut counts: BTreeMap<Kind, ClientCounts> = BTreeMap::new();
        for entry in self.lock().values() {
            let c = counts.entry(entry.kind).or_default();
            c.connected += 1;
            let acked = &entry.info.acked_version;
            if is_stale(acked, latest, entry.pending, published, now, stale_after) {
                c.stale += 1;
            }
        }
        counts
    }

    /// The push metrics the streams record here.
    pub fn metrics(&self) -> &PushMetrics {
        &self.metrics
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
