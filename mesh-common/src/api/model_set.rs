//! The client's side of the stream: the decoded resources it holds. An update decodes only
//! the resources it carries, and is applied whole or not at all.

use std::collections::BTreeMap;

use super::config::ConfigUpdate;
use super::resources::{Decoded, ResourceError};
use crate::model::Snapshot;

/// Decoded resources keyed by (kind, key).
#[derive(Clone, Debug, Default)]
pub struct ModelSet {
    items: BTreeMap<(i32, String), Decoded>,
}

impl ModelSet {
    /// Applies an update and returns the resulting snapshot; on a bad resource nothing changes.
    pub fn apply(&mut self, update: &ConfigUpdate) -> Result<Snapshot, ResourceError> {
        let decoded = update
            .upserts
            .iter()
            .map(|r| {
                Ok((
                    (r.kind, r.key.clone()),
                    Decoded::decode(r.kind, &r.key, &r.json)?,
                ))
            })
            .collect::<Result<Vec<_>, ResourceError>>()?;
        if update.full {
            self.items.clear();
        }
        for removal in &update.removals {
            self.items.remove(&(removal.kind, removal.key.clone()));
        }
        self.items.extend(decoded);
        Ok(Decoded::snapshot(&update.version, self.items.values()))
    }

    /// Number of resources held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ResourceSet;
    use crate::model::Workload;

    fn workload(name: &str) -> Workload {
        Workload {
            uid: format!("default/{name}"),
            name: name.to_owned(),
            namespace: "default".to_owned(),
            service_account: "default".to_owned(),
            node: "n1".to_owned(),
            addresses: vec![],
            meshed: true,
            labels: BTreeMap::new(),
            waypoint: None,
        }
    }

    #[test]
    fn incremental_apply_matches_full_decode_and_rejects_atomically() {
        let a = Snapshot {
            workloads: vec![workload("a"), workload("b")],
            ..Snapshot::default()
        };
        let mut b = a.clone();
        b.workloads[1].node = "n2".to_owned();
        b.workloads.push(workload("c"));
        b.workloads.remove(0);
        let set_a = ResourceSet::from_snapshot(&a).expect("encode");
        let set_b = ResourceSet::from_snapshot(&b).expect("encode");
        let mut held = ModelSet::default();
        held.apply(&set_a.diff(None, "1")).expect("full");
        let snapshot = held.apply(&set_b.diff(Some(&set_a), "2")).expect("delta");
        assert_eq!(snapshot, set_b.to_snapshot("2").expect("decode"));

        let mut bad = set_a.diff(Some(&set_b), "3");
        if let Some(first) = bad.upserts.first_mut() {
            first.json = prost::bytes::Bytes::from_static(b"{");
        }
        assert!(held.apply(&bad).is_err());
        assert_eq!(held.len(), 2, "a rejected update changes nothing");
    }
}
