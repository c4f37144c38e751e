//! The Kubernetes source: one kube-rs watcher per kind (as `DynamicObject`s, so every object
//! goes through the same strict parser as files and one bad object cannot break a whole list),
//! feeding changes to the controller in small batches. A watch restart (e.g. `410 Gone`)
//! relists the kind and replaces everything held for it, so deletions missed while the watch
//! was down are applied.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::watcher::{self, Event};
use kube::Client;
use tokio::sync::mpsc;

use crate::controller::{Change, Controller};
use crate::load::{parse_value, Parsed};
use crate::object::{Kind, ObjectKey, ALL_KINDS};
use crate::resources::{
    gateway_api as gw, istio_networking as net, istio_security as sec, istio_telemetry as tel,
};

/// Source name used as unit prefix and error origin.
const SOURCE: &str = "kubernetes";
/// How long changes are collected before one translation.
const BATCH_WINDOW: Duration = Duration::from_millis(50);

/// Settings of the Kubernetes source.
#[derive(Clone, Debug)]
pub struct KubeOptions {
    /// Kinds to watch.
    pub kinds: Vec<Kind>,
    /// Pause after a watch error before the watcher retries.
    pub retry_delay: Duration,
}

impl Default for KubeOptions {
    fn default() -> Self {
        KubeOptions {
            kinds: ALL_KINDS.to_vec(),
            retry_delay: Duration::from_secs(1),
        }
    }
}

/// The API resource (group, version, plural) of a kind.
pub fn api_resource(kind: Kind) -> ApiResource {
    match kind {
        Kind::Namespace => ApiResource::erase::<core::Namespace>(&()),
        Kind::Pod => ApiResource::erase::<core::Pod>(&()),
        Kind::Node => ApiResource::erase::<core::Node>(&()),
        Kind::Service => ApiResource::erase::<core::Service>(&()),
        Kind::EndpointSlice => ApiResource::erase::<discovery::EndpointSlice>(&()),
        Kind::ServiceAccount => ApiResource::erase::<core::ServiceAccount>(&()),
        Kind::ConfigMap => ApiResource::erase::<core::ConfigMap>(&()),
        Kind::VirtualService => ApiResource::erase::<net::VirtualService>(&()),
        Kind::DestinationRule => ApiResource::erase::<net::DestinationRule>(&()),
        Kind::ServiceEntry => ApiResource::erase::<net::ServiceEntry>(&()),
        Kind::IstioGateway => ApiResource::erase::<net::Gateway>(&()),
        Kind::AuthorizationPolicy => ApiResource::erase::<sec::AuthorizationPolicy>(&()),
        Kind::PeerAuthentication => ApiResource::erase::<sec::PeerAuthentication>(&()),
        Kind::RequestAuthentication => ApiResource::erase::<sec::RequestAuthentication>(&()),
        Kind::Gateway => ApiResource::erase::<gw::Gateway>(&()),
        Kind::HttpRoute => ApiResource::erase::<gw::HTTPRoute>(&()),
        Kind::TcpRoute => ApiResource::erase::<gw::TCPRoute>(&()),
        Kind::TlsRoute => ApiResource::erase::<gw::TLSRoute>(&()),
        Kind::Telemetry => ApiResource::erase::<tel::Telemetry>(&()),
    }
}

/// What to watch of a kind: everything, except ConfigMaps, of which only the mesh
/// configuration's name matters.
fn watch_config(kind: Kind) -> watcher::Config {
    match kind {
        Kind::ConfigMap => watcher::Config::default().fields(&format!(
            "metadata.name={}",
            crate::resources::mesh_config::MESH_CONFIG_MAP
        )),
        _ => watcher::Config::default(),
    }
}

fn unit(kind: Kind) -> String {
    format!("{SOURCE}/{kind}")
}

fn key_of(kind: Kind, object: &DynamicObject) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: if kind.namespaced() {
            object.metadata.namespace.clone().unwrap_or_default()
        } else {
            String::new()
        },
        name: object.metadata.name.clone().unwrap_or_default(),
    }
}

/// Turns one object into the change it means: an upsert, or a rejection with its error.
fn to_change(kind: Kind, ar: &ApiResource, object: DynamicObject) -> Option<Change> {
    let key = key_of(kind, &object);
    let origin = SOURCE.to_owned();
    let mut value = match serde_json::to_value(&object) {
        Ok(value) => value,
        Err(e) => {
            tracing::warn!(object = %key, error = %e, "re-encoding object");
            return None;
        }
    };
    // Watch events of typed lists may omit the type; the API resource knows it.
    if let Some(map) = value.as_object_mut() {
        map.entry("apiVersion")
            .or_insert_with(|| ar.api_version.clone().into());
        map.entry("kind").or_insert_with(|| ar.kind.clone().into());
    }
    match parse_value(&origin, value) {
        Ok(Some(object)) => Some(Change::Upsert {
            unit: unit(kind),
            origin,
            object: Box::new(object),
        }),
        Ok(None) => None,
        Err(error) => Some(Change::Reject {
            unit: unit(kind),
            key,
            error,
        }),
    }
}

/// Watches one kind until the stream ends (it does not, unless the client is gone).
async fn watch_kind(
    client: Client,
    kind: Kind,
    retry_delay: Duration,
    tx: mpsc::Sender<Vec<Change>>,
) {
    let ar = api_resource(kind);
    let api: Api<DynamicObject> = Api::all_with(client, &ar);
    let mut stream = watcher::watcher(api, watch_config(kind)).boxed();
    // Objects seen since the last Init, for the relist that follows a restart.
    let mut relist: Option<Vec<DynamicObject>> = None;
    while let Some(event) = stream.next().await {
        let changes = match event {
            Ok(Event::Init) => {
                relist = Some(Vec::new());
                continue;
            }
            Ok(Event::InitApply(object)) => {
                relist.get_or_insert_with(Vec::new).push(object);
                continue;
            }
            Ok(Event::InitDone) => {
                let mut parsed = Parsed::default();
                let mut rejected = Vec::new();
                for object in relist.take().unwrap_or_default() {
                    match to_change(kind, &ar, object) {
                        Some(Change::Upsert { origin, object, .. }) => {
                            parsed.objects.push((origin, *object))
                        }
                        Some(Change::Reject { error, .. }) => parsed.errors.push(error),
                        _ => {}
                    }
                }
                rejected.push(Change::ReplaceUnit {
                    unit: unit(kind),
                    parsed,
                });
                rejected
            }
            Ok(Event::Apply(object)) => to_change(kind, &ar, object).into_iter().collect(),
            Ok(Event::Delete(object)) => vec![Change::Delete {
                unit: unit(kind),
                key: key_of(kind, &object),
            }],
            Err(e) => {
                tracing::warn!(%kind, error = %e, "watch failed; retrying");
                tokio::time::sleep(retry_delay).await;
                continue;
            }
        };
        if tx.send(changes).await.is_err() {
            return;
        }
    }
}

/// Runs watchers for the configured kinds and applies their changes; returns when every
/// watcher has stopped.
pub async fn run(client: Client, controller: Arc<Controller>, options: KubeOptions) {
    let (tx, mut rx) = mpsc::channel::<Vec<Change>>(256);
    for kind in options.kinds.iter().copied() {
        tokio::spawn(watch_kind(
            client.clone(),
            kind,
            options.retry_delay,
            tx.clone(),
        ));
    }
    drop(tx);
    while let Some(first) = rx.recv().await {
        let mut batch = first;
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        while let Ok(Some(more)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            batch.extend(more);
        }
        if let Err(e) = controller.apply(batch) {
            tracing::error!(error = %e, "applying Kubernetes changes");
        }
    }
}
