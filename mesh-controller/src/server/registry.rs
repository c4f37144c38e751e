//! The connected clients and what each has been sent and has acknowledged, for the admin
//! endpoint and `meshctl status`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

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

/// Connected clients by stream id.
#[derive(Debug, Default)]
pub struct Registry {
    next_id: AtomicU64,
    clients: Mutex<BTreeMap<u64, ClientInfo>>,
}

impl Registry {
    /// Adds a client; returns its stream id.
    pub fn add(&self, mut info: ClientInfo) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        info.connected_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        self.lock().insert(id, info);
        id
    }

    /// Updates a client.
    pub fn update(&self, id: u64, f: impl FnOnce(&mut ClientInfo)) {
        if let Some(info) = self.lock().get_mut(&id) {
            f(info);
        }
    }

    /// Removes a client.
    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// All clients, ordered by client id.
    pub fn list(&self) -> Vec<ClientInfo> {
        let mut clients: Vec<ClientInfo> = self.lock().values().cloned().collect();
        clients.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        clients
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, ClientInfo>> {
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
