//! The client's side of the stream: the decoded resources it holds. An update decodes only
//! the resources it carries, and is applied whole or not at all. Fields and enum values this
//! build does not know (a newer controller) are tolerated; each held resource keeps its
//! warnings, so an acknowledgement can report what the client could not understand.

use std::collections::BTreeMap;

use super::config::ConfigUpdate;
use super::resources::{Decoded, ResourceError};
use crate::model::Snapshot;

/// At most this many warnings go into one acknowledgement (the last one says how many more).
pub const MAX_WARNINGS: usize = 50;
/// A warning is cut to this many bytes (on a character boundary).
pub const MAX_WARNING_LEN: usize = 300;

/// One held resource and what this build did not understand in it.
#[derive(Clone, Debug)]
struct Held {
    decoded: Decoded,
    warnings: Vec<String>,
}

/// Decoded resources keyed by (kind, key).
#[derive(Clone, Debug, Default)]
pub struct ModelSet {
    items: BTreeMap<(i32, String), Held>,
}

/// The result of applying an update.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    /// The snapshot after the update.
    pub snapshot: Snapshot,
    /// Warnings of the resources this update carried (what to log for this version).
    pub new_warnings: Vec<String>,
}

impl ModelSet {
    /// Applies an update and returns the resulting snapshot; on a bad resource nothing changes.
    pub fn apply(&mut self, update: &ConfigUpdate) -> Result<Applied, ResourceError> {
        let decoded = update
            .upserts
            .iter()
            .map(|r| {
                let (decoded, warnings) = Decoded::decode(r.kind, &r.key, &r.json)?;
                Ok(((r.kind, r.key.clone()), Held { decoded, warnings }))
            })
            .collect::<Result<Vec<_>, ResourceError>>()?;
        let new_warnings = decoded
            .iter()
            .flat_map(|(_, held)| held.warnings.iter().cloned())
            .collect();
        if update.full {
            self.items.clear();
        }
        for removal in &update.removals {
            self.items.remove(&(removal.kind, removal.key.clone()));
        }
        self.items.extend(decoded);
        Ok(Applied {
            snapshot: Decoded::snapshot(&update.version, self.items.values().map(|h| &h.decoded)),
            new_warnings,
        })
    }

    /// The warnings of every held resource, bounded for an acknowledgement: at most
    /// [`MAX_WARNINGS`] (the last saying how many were left out), each at most
    /// [`MAX_WARNING_LEN`] bytes.
    pub fn warnings(&self) -> Vec<String> {
        bounded(self.items.values().flat_map(|h| h.warnings.iter()))
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

/// At most [`MAX_WARNINGS`] warnings, each cut to [`MAX_WARNING_LEN`] bytes; past the limit the
/// last entry counts the rest.
pub fn bounded<'a>(warnings: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let all: Vec<&String> = warnings.into_iter().collect();
    if all.len() <= MAX_WARNINGS {
        return all.into_iter().map(|w| truncate(w)).collect();
    }
    let kept = MAX_WARNINGS - 1;
    let mut out: Vec<String> = all[..kept].iter().map(|w| truncate(w)).collect();
    out.push(format!("{} more warnings", all.len() - kept));
    out
}

fn truncate(text: &str) -> String {
    if text.len() <= MAX_WARNING_LEN {
        return text.to_owned();
    }
    let mut end = MAX_WARNING_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::config::{Resource, ResourceKey, ResourceKind};
    use crate::api::ResourceSet;
    use crate::model::Workload;

    fn workload(name: &str) -> Workload {
        Workload {
            locality: Default::default(),
            workload_name: String::new(),
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
        let snapshot = held
            .apply(&set_b.diff(Some(&set_a), "2"))
            .expect("delta")
            .snapshot;
        assert_eq!(snapshot, set_b.to_snapshot("2").expect("decode"));

        let mut bad = set_a.diff(Some(&set_b), "3");
        if let Some(first) = bad.upserts.first_mut() {
            first.json = prost::bytes::Bytes::from_static(b"{");
        }
        assert!(held.apply(&bad).is_err());
        assert_eq!(held.len(), 2, "a rejected update changes nothing");
    }

    fn with_json(kind: ResourceKind, key: &str, json: &str) -> Resource {
        Resource {
            kind: kind as i32,
            key: key.to_owned(),
            json: prost::bytes::Bytes::from(json.to_owned()),
        }
    }

    #[test]
    fn warnings_follow_the_resources_held() {
        let w = |name: &str, extra: &str| {
            with_json(
                ResourceKind::Workload,
                &format!("default/{name}"),
                &format!(
                    r#"{{"uid":"default/{name}","name":"{name}","namespace":"default","addresses":[]{extra}}}"#
                ),
            )
        };
        let mut held = ModelSet::default();
        // (what, update, warnings of that update, warnings held after it)
        let steps: Vec<(&str, ConfigUpdate, Vec<&str>, Vec<&str>)> = vec![
            (
                "full update, one resource with a newer field",
                ConfigUpdate {
                    version: "1".into(),
                    full: true,
                    upserts: vec![w("a", r#","zone":"z1""#), w("b", "")],
                    removals: vec![],
                },
                vec!["Workload default/a: unknown field zone"],
                vec!["Workload default/a: unknown field zone"],
            ),
            (
                "delta touching another resource: the held warning stays, nothing new to log",
                ConfigUpdate {
                    version: "2".into(),
                    full: false,
                    upserts: vec![w("b", r#","meshed":true"#)],
                    removals: vec![],
                },
                vec![],
                vec!["Workload default/a: unknown field zone"],
            ),
            (
                "the resource is replaced without the field",
                ConfigUpdate {
                    version: "3".into(),
                    full: false,
                    upserts: vec![w("a", ""), w("b", r#","x":1,"y":2"#)],
                    removals: vec![],
                },
                vec![
                    "Workload default/b: unknown field x",
                    "Workload default/b: unknown field y",
                ],
                vec![
                    "Workload default/b: unknown field x",
                    "Workload default/b: unknown field y",
                ],
            ),
            (
                "the resource is removed",
                ConfigUpdate {
                    version: "4".into(),
                    full: false,
                    upserts: vec![],
                    removals: vec![ResourceKey {
                        kind: ResourceKind::Workload as i32,
                        key: "default/b".into(),
                    }],
                },
                vec![],
                vec![],
            ),
        ];
        for (what, update, new, all) in steps {
            let applied = held.apply(&update).expect(what);
            assert_eq!(applied.snapshot.version, update.version, "{what}");
            assert_eq!(applied.new_warnings, new, "{what}: this update");
            assert_eq!(held.warnings(), all, "{what}: held");
        }
    }

    #[test]
    fn an_unknown_kind_is_rejected_whole() {
        let mut held = ModelSet::default();
        let update = ConfigUpdate {
            version: "1".into(),
            full: true,
            upserts: vec![
                with_json(
                    ResourceKind::Service,
                    "default/s",
                    r#"{"name":"s","namespace":"default"}"#,
                ),
                Resource {
                    kind: 42,
                    key: "x".into(),
                    json: prost::bytes::Bytes::from_static(b"{}"),
                },
            ],
            removals: vec![],
        };
        let err = held.apply(&update).expect_err("unknown kind");
        assert!(err.to_string().contains("unknown kind 42"), "{err}");
        assert!(held.is_empty());
    }

    #[test]
    fn acknowledged_warnings_are_bounded() {
        let long = "x".repeat(MAX_WARNING_LEN + 10);
        // (count, length of each, expected count, expected last entry)
        let cases = [
            (0, 5, 0, None),
            (3, 5, 3, Some("xxxxx".to_owned())),
            (MAX_WARNINGS, 5, MAX_WARNINGS, Some("xxxxx".to_owned())),
            (
                MAX_WARNINGS + 1,
                5,
                MAX_WARNINGS,
                Some("2 more warnings".to_owned()),
            ),
            (
                1,
                long.len(),
                1,
                Some(format!("{}…", &long[..MAX_WARNING_LEN])),
            ),
        ];
        for (count, len, expected, last) in cases {
            let warnings: Vec<String> = (0..count).map(|_| "x".repeat(len)).collect();
            let out = bounded(&warnings);
            assert_eq!(out.len(), expected, "{count} of {len}");
            assert_eq!(out.last().cloned(), last, "{count} of {len}");
        }
    }
}
