//! Parsing: multi-document YAML (or a JSON value from the Kubernetes API) into [`Object`]s.
//! Schema errors (bad types, unknown fields, missing names) carry the field path; one bad
//! document never stops the others.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::error::ConfigError;
use crate::object::{Kind, Object, ObjectKey};

/// API groups the controller owns: an unknown kind in one of them is an error (likely a typo);
/// kinds of other groups (Deployments, ConfigMaps, ...) are ignored.
const OWNED_GROUPS: [&str; 5] = [
    "networking.istio.io",
    "security.istio.io",
    "telemetry.istio.io",
    "gateway.networking.k8s.io",
    "discovery.k8s.io",
];

/// What a file or value yielded.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Valid objects, each with its origin (file and document).
    pub objects: Vec<(String, Object)>,
    /// Problems, one per bad document.
    pub errors: Vec<ConfigError>,
    /// Objects of kinds the mesh does not use, e.g. `Deployment default/reviews-v1`.
    pub ignored: Vec<String>,
}

/// Parses every document of a YAML file; `origin` names the file in errors.
pub fn parse_yaml(origin: &str, text: &str) -> Parsed {
    let mut parsed = Parsed::default();
    for (index, document) in yaml_serde::Deserializer::from_str(text).enumerate() {
        let doc_origin = format!("{origin} (document {})", index + 1);
        let value = match Value::deserialize(document) {
            Ok(Value::Null) => continue,
            Ok(value) => value,
            Err(e) => {
                parsed.errors.push(ConfigError::document(
                    &doc_origin,
                    "",
                    format!("invalid YAML: {e}"),
                ));
                // The YAML stream is broken past this point; later documents are unreliable.
                break;
            }
        };
        parse_into(&doc_origin, value, &mut parsed);
    }
    parsed
}

/// Parses one object given as JSON (e.g. from the Kubernetes API); `Ok(None)` for kinds the
/// mesh ignores.
pub fn parse_value(origin: &str, value: Value) -> Result<Option<Object>, ConfigError> {
    let mut parsed = Parsed::default();
    parse_into(origin, value, &mut parsed);
    if let Some(error) = parsed.errors.pop() {
        return Err(error);
    }
    Ok(parsed.objects.pop().map(|(_, o)| o))
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

fn parse_into(origin: &str, mut value: Value, parsed: &mut Parsed) {
    if !value.is_object() {
        parsed.errors.push(ConfigError::document(
            origin,
            "",
            "a document must be a mapping",
        ));
        return;
    }
    let (Some(api_version), Some(kind_name)) =
        (str_at(&value, "/apiVersion"), str_at(&value, "/kind"))
    else {
        parsed.errors.push(ConfigError::document(
            origin,
            "",
            "missing apiVersion or kind",
        ));
        return;
    };
    let (api_version, kind_name) = (api_version.to_owned(), kind_name.to_owned());
    let name = str_at(&value, "/metadata/name")
        .unwrap_or_default()
        .to_owned();
    let Some(kind) = Kind::from_type(&api_version, &kind_name) else {
        let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        if OWNED_GROUPS.contains(&group) || (group.is_empty() && api_version != "v1") {
            parsed.errors.push(ConfigError::document(
                origin,
                "kind",
                format!("unknown kind {kind_name} in apiVersion {api_version}"),
            ));
        } else {
            parsed.ignored.push(format!("{kind_name} {name}"));
        }
        return;
    };
    // Of the ConfigMaps, only the mesh configuration matters (its namespace is checked in
    // translation, which knows the root namespace).
    if kind == Kind::ConfigMap && name != crate::resources::mesh_config::MESH_CONFIG_MAP {
        parsed.ignored.push(format!("{kind_name} {name}"));
        return;
    }
    let namespace = if kind.namespaced() {
        let ns = str_at(&value, "/metadata/namespace")
            .unwrap_or("default")
            .to_owned();
        // Objects without a namespace land in `default`, as with `kubectl apply`.
        if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("namespace".to_owned(), Value::String(ns.clone()));
        }
        ns
    } else {
        String::new()
    };
    let key = ObjectKey {
        kind,
        namespace,
        name,
    };
    if key.name.is_empty() {
        parsed.errors.push(ConfigError::field(
            origin,
            &key,
            "metadata.name",
            "missing or empty",
        ));
        return;
    }
    match typed(kind, value) {
        Ok(object) => parsed.objects.push((origin.to_owned(), object)),
        Err((path, message)) => parsed
            .errors
            .push(ConfigError::field(origin, &key, &path, message)),
    }
}

/// The envelope of an Istio or Gateway API object; unknown top-level fields are errors.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Envelope<S> {
    #[serde(rename = "apiVersion")]
    _api_version: String,
    #[serde(rename = "kind")]
    _kind: String,
    #[serde(default)]
    metadata: kube::api::ObjectMeta,
    #[serde(default)]
    spec: S,
    #[serde(default, rename = "status")]
    _status: Option<Value>,
}

type FieldError = (String, String);

fn strict<T: DeserializeOwned>(value: Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        (path, e.into_inner().to_string())
    })
}

fn custom<S, R>(value: Value, build: impl FnOnce(String, S) -> R) -> Result<R, FieldError>
where
    S: DeserializeOwned + Default,
    R: kube::Resource,
{
    let envelope: Envelope<S> = strict(value)?;
    let name = envelope.metadata.name.clone().unwrap_or_default();
    let mut resource = build(name, envelope.spec);
    *resource.meta_mut() = envelope.metadata;
    Ok(resource)
}

fn typed(kind: Kind, value: Value) -> Result<Object, FieldError> {
    use crate::resources::{
        gateway_api as gw, istio_networking as net, istio_security as sec, istio_telemetry as tel,
    };
    Ok(match kind {
        Kind::Namespace => Object::Namespace(strict(value)?),
        Kind::Pod => Object::Pod(strict(value)?),
        Kind::Node => Object::Node(strict(value)?),
        Kind::Service => Object::Service(strict(value)?),
        Kind::EndpointSlice => Object::EndpointSlice(strict(value)?),
        Kind::ServiceAccount => Object::ServiceAccount(strict(value)?),
        Kind::ConfigMap => Object::ConfigMap(strict(value)?),
        Kind::VirtualService => {
            Object::VirtualService(custom(value, |n, s| net::VirtualService::new(&n, s))?)
        }
        Kind::DestinationRule => {
            Object::DestinationRule(custom(value, |n, s| net::DestinationRule::new(&n, s))?)
        }
        Kind::ServiceEntry => {
            Object::ServiceEntry(custom(value, |n, s| net::ServiceEntry::new(&n, s))?)
        }
        Kind::IstioGateway => Object::IstioGateway(custom(value, |n, s| net::Gateway::new(&n, s))?),
        Kind::AuthorizationPolicy => {
            Object::AuthorizationPolicy(custom(value, |n, s| sec::AuthorizationPolicy::new(&n, s))?)
        }
        Kind::PeerAuthentication => {
            Object::PeerAuthentication(custom(value, |n, s| sec::PeerAuthentication::new(&n, s))?)
        }
        Kind::RequestAuthentication => Object::RequestAuthentication(custom(value, |n, s| {
            sec::RequestAuthentication::new(&n, s)
        })?),
        Kind::Gateway => Object::Gateway(custom(value, |n, s| gw::Gateway::new(&n, s))?),
        Kind::HttpRoute => Object::HttpRoute(custom(value, |n, s| gw::HTTPRoute::new(&n, s))?),
        Kind::TcpRoute => Object::TcpRoute(custom(value, |n, s| gw::TCPRoute::new(&n, s))?),
        Kind::TlsRoute => Object::TlsRoute(custom(value, |n, s| gw::TLSRoute::new(&n, s))?),
        Kind::Telemetry => Object::Telemetry(custom(value, |n, s| tel::Telemetry::new(&n, s))?),
    })
}
