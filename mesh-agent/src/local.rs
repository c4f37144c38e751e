//! The captured pods of this node by address, so outbound traffic to a pod on the same node can
//! be delivered without a tunnel: both identities are known here and nothing crosses a wire.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock, Weak};

use crate::pod_context::PodContext;

/// Address -> captured pod of this node.
#[derive(Debug, Default)]
pub struct LocalPods {
    by_address: RwLock<HashMap<IpAddr, Weak<PodContext>>>,
}

impl LocalPods {
    /// Records a captured pod under each of its addresses.
    pub fn insert(&self, pod: &Arc<PodContext>) {
        let mut map = self.by_address.write().unwrap_or_else(|p| p.into_inner());
        for ip in &pod.info.addresses {
            map.insert(*ip, Arc::downgrade(pod));
        }
    }

    /// Forgets the pod with these addresses.
    pub fn remove(&self, addresses: &[IpAddr]) {
        let mut map = self.by_address.write().unwrap_or_else(|p| p.into_inner());
        for ip in addresses {
            map.remove(ip);
        }
    }

    /// The captured pod of this node with address `ip`, if any.
    pub fn get(&self, ip: IpAddr) -> Option<Arc<PodContext>> {
        let map = self.by_address.read().unwrap_or_else(|p| p.into_inner());
        map.get(&ip).and_then(Weak::upgrade)
    }
}
