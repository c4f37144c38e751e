//! A snapshot as a set of keyed resources, the unit of the incremental stream: the controller
//! diffs two sets to build an update, the client applies updates to its set and decodes it back.

use std::collections::BTreeMap;

use prost::bytes::Bytes;

use super::config::{ConfigUpdate, Resource, ResourceKey, ResourceKind};
use crate::model::compat::{self, UnknownValues};
use crate::model::{
    AuthorizationPolicy, DestinationPolicy, PeerAuthentication, RequestAuthentication, Route,
    Service, Snapshot, Telemetry, Workload,
};

/// Why an update could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// A resource's JSON does not decode as its kind.
    #[error("resource {kind:?} {key}: {source}")]
    Decode {
        /// Resource kind.
        kind: ResourceKind,
        /// Resource key.
        key: String,
        /// JSON error.
        source: serde_json::Error,
    },
    /// The kind is unknown to this client (newer controller).
    #[error("resource {key}: unknown kind {kind}")]
    UnknownKind {
        /// Raw kind number.
        kind: i32,
        /// Resource key.
        key: String,
    },
    /// A model value did not encode (cannot happen for the model types; reported, not panicked).
    #[error("encoding {key}: {source}")]
    Encode {
        /// Resource key.
        key: String,
        /// JSON error.
        source: serde_json::Error,
    },
}

impl ResourceError {
    /// The kind of the resource that failed (`Unspecified` for a kind this build does not know).
    pub fn resource_kind(&self) -> ResourceKind {
        match self {
            ResourceError::Decode { kind, .. } => *kind,
            ResourceError::UnknownKind { .. } | ResourceError::Encode { .. } => {
                ResourceKind::Unspecified
            }
        }
    }
}

/// Resources keyed by (kind, key), each the JSON of one model value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ResourceSet {
    items: BTreeMap<(i32, String), Bytes>,
}

fn encode<T: serde::Serialize>(
    items: &mut BTreeMap<(i32, String), Bytes>,
    kind: ResourceKind,
    key: String,
    value: &T,
) -> Result<(), ResourceError> {
    let json = serde_json::to_vec(value).map_err(|source| ResourceError::Encode {
        key: key.clone(),
        source,
    })?;
    items.insert((kind as i32, key), Bytes::from(json));
    Ok(())
}

/// Decodes one resource, tolerating what a newer controller may add: returns the value and a
/// warning (`<Kind> <key>: <path> …`) per unknown field or enum value.
fn decode<T: serde::de::DeserializeOwned + UnknownValues>(
    kind: ResourceKind,
    key: &str,
    json: &[u8],
) -> Result<(T, Vec<String>), ResourceError> {
    let error = |source| ResourceError::Decode {
        kind,
        key: key.to_owned(),
        source,
    };
    let mut de = serde_json::Deserializer::from_slice(json);
    let (value, fields): (T, _) = compat::deserialize_reporting(&mut de).map_err(error)?;
    de.end().map_err(error)?;
    let name = kind_name(kind);
    let mut warnings: Vec<String> = fields
        .iter()
        .map(|path| format!("{name} {key}: unknown field {path}"))
        .collect();
    warnings.extend(
        value
            .unknown_values()
            .iter()
            .map(|v| format!("{name} {key}: {v}")),
    );
    Ok((value, warnings))
}

/// The kind's name without the proto prefix, e.g. `AuthorizationPolicy`.
pub fn kind_name(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::Unspecified => "Unspecified",
        ResourceKind::Workload => "Workload",
        ResourceKind::Service => "Service",
        ResourceKind::AuthorizationPolicy => "AuthorizationPolicy",
        ResourceKind::PeerAuthentication => "PeerAuthentication",
        ResourceKind::Route => "Route",
        ResourceKind::DestinationPolicy => "DestinationPolicy",
        ResourceKind::RequestAuthentication => "RequestAuthentication",
        ResourceKind::Telemetry => "Telemetry",
    }
}

impl ResourceSet {
    /// Splits a snapshot into resources (the version is not part of the set).
    pub fn from_snapshot(snapshot: &Snapshot) -> Result<Self, ResourceError> {
        let mut items = BTreeMap::new();
        for w in &snapshot.workloads {
            encode(&mut items, ResourceKind::Workload, w.uid.clone(), w)?;
        }
        for s in &snapshot.services {
            let key = format!("{}/{}", s.namespace, s.name);
            encode(&mut items, ResourceKind::Service, key, s)?;
        }
        for p in &snapshot.authorization_policies {
            let key = format!("{}/{}", p.namespace, p.name);
            encode(&mut items, ResourceKind::AuthorizationPolicy, key, p)?;
        }
        for p in &snapshot.peer_authentications {
            let key = format!("{}/{}", p.namespace, p.name);
            encode(&mut items, ResourceKind::PeerAuthentication, key, p)?;
        }
        for r in &snapshot.routes {
            let key = format!("{:?}/{}/{}", r.kind, r.namespace, r.name);
            encode(&mut items, ResourceKind::Route, key, r)?;
        }
        for d in &snapshot.destination_policies {
            let key = format!("{}/{}", d.namespace, d.name);
            encode(&mut items, ResourceKind::DestinationPolicy, key, d)?;
        }
        for r in &snapshot.request_authentications {
            let key = format!("{}/{}", r.namespace, r.name);
            encode(&mut items, ResourceKind::RequestAuthentication, key, r)?;
        }
        for t in &snapshot.telemetries {
            let key = format!("{}/{}", t.namespace, t.name);
            encode(&mut items, ResourceKind::Telemetry, key, t)?;
        }
        Ok(ResourceSet { items })
    }

    /// Number of resources.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The resources for which `keep(kind, key)` holds (payloads are shared, not copied).
    pub fn filter(&self, keep: impl Fn(ResourceKind, &str) -> bool) -> ResourceSet {
        let items = self
            .items
            .iter()
            .filter(|((kind, key), _)| {
                ResourceKind::try_from(*kind).is_ok_and(|kind| keep(kind, key))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        ResourceSet { items }
    }

    /// Total payload bytes (for memory accounting).
    pub fn payload_bytes(&self) -> usize {
        self.items
            .iter()
            .map(|((_, key), json)| key.len() + json.len())
            .sum()
    }

    /// An update that turns `previous` into `self` (or a full one when `previous` is `None`).
    pub fn diff(&self, previous: Option<&ResourceSet>, version: &str) -> ConfigUpdate {
        let resource = |((kind, key), json): (&(i32, String), &Bytes)| Resource {
            kind: *kind,
            key: key.clone(),
            json: json.clone(),
        };
        let Some(previous) = previous else {
            return ConfigUpdate {
                version: version.to_owned(),
                full: true,
                upserts: self.items.iter().map(resource).collect(),
                removals: Vec::new(),
            };
        };
        let upserts = self
            .items
            .iter()
            .filter(|(k, v)| previous.items.get(*k) != Some(*v))
            .map(resource)
            .collect();
        let removals = previous
            .items
            .keys()
            .filter(|k| !self.items.contains_key(*k))
            .map(|(kind, key)| ResourceKey {
                kind: *kind,
                key: key.clone(),
            })
            .collect();
        ConfigUpdate {
            version: version.to_owned(),
            full: false,
            upserts,
            removals,
        }
    }

    /// The set after an update (full updates replace everything).
    pub fn apply(&self, update: &ConfigUpdate) -> ResourceSet {
        let mut items = if update.full {
            BTreeMap::new()
        } else {
            self.items.clone()
        };
        for key in &update.removals {
            items.remove(&(key.kind, key.key.clone()));
        }
        for r in &update.upserts {
            items.insert((r.kind, r.key.clone()), r.json.clone());
        }
        ResourceSet { items }
    }

    /// Decodes the set back into a snapshot with the given version; any bad resource fails the
    /// whole decode, so a client never applies half an update. Unknown fields are tolerated
    /// (and not reported here: see [`ModelSet`](super::ModelSet)).
    pub fn to_snapshot(&self, version: &str) -> Result<Snapshot, ResourceError> {
        let decoded = self
            .items
            .iter()
            .map(|((kind, key), json)| Decoded::decode(*kind, key, json).map(|(d, _)| d))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Decoded::snapshot(version, decoded.iter()))
    }
}

/// One decoded resource.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Decoded {
    Workload(Workload),
    Service(Service),
    AuthorizationPolicy(AuthorizationPolicy),
    PeerAuthentication(PeerAuthentication),
    Route(Route),
    DestinationPolicy(Box<DestinationPolicy>),
    RequestAuthentication(RequestAuthentication),
    Telemetry(Box<Telemetry>),
}

impl Decoded {
    /// Decodes one resource by its kind, with its warnings (unknown fields and values). A kind
    /// this build does not know fails: it could carry policy (see `model::compat`).
    pub(crate) fn decode(
        raw_kind: i32,
        key: &str,
        json: &[u8],
    ) -> Result<(Self, Vec<String>), ResourceError> {
        fn wrap<T>(decoded: (T, Vec<String>), variant: fn(T) -> Decoded) -> (Decoded, Vec<String>) {
            (variant(decoded.0), decoded.1)
        }
        let unknown = || ResourceError::UnknownKind {
            kind: raw_kind,
            key: key.to_owned(),
        };
        let kind = ResourceKind::try_from(raw_kind).map_err(|_| unknown())?;
        Ok(match kind {
            ResourceKind::Workload => wrap(decode(kind, key, json)?, Decoded::Workload),
            ResourceKind::Service => wrap(decode(kind, key, json)?, Decoded::Service),
            ResourceKind::AuthorizationPolicy => {
                wrap(decode(kind, key, json)?, Decoded::AuthorizationPolicy)
            }
            ResourceKind::PeerAuthentication => {
                wrap(decode(kind, key, json)?, Decoded::PeerAuthentication)
            }
            ResourceKind::Route => wrap(decode(kind, key, json)?, Decoded::Route),
            ResourceKind::DestinationPolicy => wrap(decode(kind, key, json)?, |d| {
                Decoded::DestinationPolicy(Box::new(d))
            }),
            ResourceKind::RequestAuthentication => {
                wrap(decode(kind, key, json)?, Decoded::RequestAuthentication)
            }
            ResourceKind::Telemetry => wrap(decode(kind, key, json)?, |t| {
                Decoded::Telemetry(Box::new(t))
            }),
            ResourceKind::Unspecified => return Err(unknown()),
        })
    }

    /// Assembles a snapshot from decoded resources (in their order).
    pub(crate) fn snapshot<'a>(
        version: &str,
        items: impl Iterator<Item = &'a Decoded>,
    ) -> Snapshot {
        let mut snapshot = Snapshot {
            version: version.to_owned(),
            ..Snapshot::default()
        };
        for item in items {
            match item {
                Decoded::Workload(w) => snapshot.workloads.push(w.clone()),
                Decoded::Service(s) => snapshot.services.push(s.clone()),
                Decoded::AuthorizationPolicy(p) => snapshot.authorization_policies.push(p.clone()),
                Decoded::PeerAuthentication(p) => snapshot.peer_authentications.push(p.clone()),
                Decoded::Route(r) => snapshot.routes.push(r.clone()),
                Decoded::DestinationPolicy(d) => snapshot.destination_policies.push((**d).clone()),
                Decoded::RequestAuthentication(r) => {
                    snapshot.request_authentications.push(r.clone())
                }
                Decoded::Telemetry(t) => snapshot.telemetries.push((**t).clone()),
            }
        }
        snapshot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(name: &str, node: &str) -> Workload {
        Workload {
            locality: Default::default(),
            workload_name: String::new(),
            uid: format!("default/{name}"),
            name: name.to_owned(),
            namespace: "default".to_owned(),
            service_account: "default".to_owned(),
            node: node.to_owned(),
            addresses: vec![[10, 0, 0, 1].into()],
            meshed: true,
            labels: BTreeMap::new(),
            waypoint: None,
        }
    }

    #[test]
    fn diff_then_apply_round_trips() {
        let mut a = Snapshot::default();
        a.workloads.push(workload("a", "n1"));
        a.workloads.push(workload("b", "n1"));
        let mut b = a.clone();
        b.workloads.remove(0);
        b.workloads[0].node = "n2".to_owned();
        b.services.push(Service {
            traffic_distribution: None,
            name: "svc".to_owned(),
            namespace: "default".to_owned(),
            vips: vec![],
            ports: vec![],
            endpoints: vec![],
            hostname: String::new(),
            waypoint: None,
        });
        let set_a = ResourceSet::from_snapshot(&a).expect("encode a");
        let set_b = ResourceSet::from_snapshot(&b).expect("encode b");
        let update = set_b.diff(Some(&set_a), "2");
        assert!(!update.full);
        assert_eq!(update.upserts.len(), 2, "changed workload + new service");
        assert_eq!(update.removals.len(), 1, "removed workload");
        let applied = set_a.apply(&update);
        assert_eq!(applied, set_b);
        let decoded = applied.to_snapshot("2").expect("decode");
        assert_eq!(decoded.version, "2");
        assert_eq!(decoded.workloads, b.workloads);
        assert_eq!(decoded.services, b.services);
    }

    #[test]
    fn request_authentications_round_trip_as_their_own_kind() {
        let snapshot = Snapshot {
            request_authentications: vec![RequestAuthentication {
                name: "jwt".to_owned(),
                namespace: "default".to_owned(),
                target_refs: vec![],
                jwt_rules: vec![crate::model::JwtRule {
                    issuer: "https://issuer".to_owned(),
                    jwks: Some(r#"{"keys":[]}"#.to_owned()),
                    forward_original_token: true,
                    ..Default::default()
                }],
            }],
            ..Snapshot::default()
        };
        let set = ResourceSet::from_snapshot(&snapshot).expect("encode");
        let kinds: Vec<ResourceKind> = set
            .items
            .keys()
            .filter_map(|(k, _)| ResourceKind::try_from(*k).ok())
            .collect();
        assert_eq!(kinds, [ResourceKind::RequestAuthentication]);
        let decoded = set.to_snapshot("1").expect("decode");
        assert_eq!(
            decoded.request_authentications,
            snapshot.request_authentications
        );
    }

    #[test]
    fn bad_json_fails_whole_decode() {
        let update = ConfigUpdate {
            version: "1".to_owned(),
            full: true,
            upserts: vec![Resource {
                kind: ResourceKind::Workload as i32,
                key: "x".to_owned(),
                json: Bytes::from_static(b"{not json"),
            }],
            removals: vec![],
        };
        let set = ResourceSet::default().apply(&update);
        assert!(set.to_snapshot("1").is_err());
    }

    #[test]
    fn resources_of_an_older_or_newer_controller_decode() {
        // (what, kind, JSON, warnings)
        let cases: &[(&str, ResourceKind, &str, &[&str])] = &[
            (
                "older controller: only the fields of the first release, the rest defaults",
                ResourceKind::Workload,
                r#"{"uid":"default/a","name":"a","namespace":"default","addresses":["10.0.0.1"]}"#,
                &[],
            ),
            (
                "newer controller: one field more",
                ResourceKind::Workload,
                r#"{"uid":"default/a","name":"a","namespace":"default","addresses":["10.0.0.1"],"zone":"z1"}"#,
                &["Workload default/a: unknown field zone"],
            ),
            (
                "newer controller: an action this build does not know",
                ResourceKind::AuthorizationPolicy,
                r#"{"name":"p","namespace":"default","action":"CUSTOM","provider":{"name":"ext"}}"#,
                &[
                    "AuthorizationPolicy default/a: unknown field provider",
                    "AuthorizationPolicy default/a: action: unknown value (the policy denies every connection to the workloads it applies to)",
                ],
            ),
        ];
        for (what, kind, json, warnings) in cases {
            let (decoded, got) =
                Decoded::decode(*kind as i32, "default/a", json.as_bytes()).expect(what);
            assert_eq!(&got, warnings, "{what}");
            if let Decoded::Workload(w) = decoded {
                assert_eq!(
                    w.service_account, "default",
                    "{what}: default service account"
                );
                assert!(
                    !w.meshed && w.labels.is_empty() && w.waypoint.is_none(),
                    "{what}"
                );
            }
        }
        let trailing = Decoded::decode(
            ResourceKind::Service as i32,
            "k",
            br#"{"name":"a","namespace":"b"} x"#,
        );
        assert!(trailing.is_err(), "trailing bytes are still an error");
    }
}
