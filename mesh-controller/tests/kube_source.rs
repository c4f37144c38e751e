//! The Kubernetes source against a fake API server (tower-test's mock service behind a real
//! kube `Client`), with recorded list and watch responses: initial lists, watch events, one
//! invalid object, and a watch restart (`410 Gone`) after which the relist replaces what was
//! held, so an object deleted while the watch was down disappears.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use mesh_controller::controller::Controller;
use mesh_controller::object::Kind;
use mesh_controller::source::kube::{run, KubeOptions};
use mesh_controller::translate::TranslateOptions;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

type Body = BoxBody<Bytes, Infallible>;
type Chunks = mpsc::Sender<Result<Frame<Bytes>, Infallible>>;

const WAIT: Duration = Duration::from_secs(15);

fn pod(name: &str, ip: &str, rv: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "demo", "resourceVersion": rv, "labels": {"app": name}},
        "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "i"}]},
        "status": {"phase": "Running", "podIP": ip}
    })
}

fn list(kind: &str, api_version: &str, rv: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": api_version, "kind": format!("{kind}List"), "metadata": {"resourceVersion": rv}, "items": items})
}

fn event(kind: &str, object: Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// What the fake API server answers, and the open watch streams the test pushes events into.
#[derive(Default)]
struct Script {
    /// Successive list responses per path (the last one repeats).
    lists: BTreeMap<String, Vec<Value>>,
    /// Watch streams by path (the newest last).
    watches: BTreeMap<String, Vec<Chunks>>,
    /// Requests seen, as `LIST path` / `WATCH path`.
    log: Vec<String>,
}

async fn fake_api_server(
    mut handle: tower_test::mock::Handle<Request<kube::client::Body>, Response<Body>>,
    script: Arc<Mutex<Script>>,
) {
    while let Some((request, respond)) = handle.next_request().await {
        let path = request.uri().path().to_owned();
        let watch = request
            .uri()
            .query()
            .unwrap_or_default()
            .contains("watch=true");
        let mut script = script.lock().expect("script lock");
        if watch {
            script.log.push(format!("WATCH {path}"));
            let (tx, rx) = mpsc::channel(16);
            script.watches.entry(path).or_default().push(tx);
            let body = StreamBody::new(ReceiverStream::new(rx)).boxed();
            respond.send_response(Response::new(body));
        } else {
            script.log.push(format!("LIST {path}"));
            let responses = script.lists.entry(path).or_default();
            let value = if responses.len() > 1 {
                responses.remove(0)
            } else {
                responses.first().cloned().unwrap_or(Value::Null)
            };
            let mut response = Response::new(Full::new(Bytes::from(value.to_string())).boxed());
            if value.is_null() {
                *response.status_mut() = StatusCode::NOT_FOUND;
            }
            respond.send_response(response);
        }
    }
}

async fn push(script: &Arc<Mutex<Script>>, path: &str, chunk: Bytes) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let sender = script
            .lock()
            .expect("script lock")
            .watches
            .get(path)
            .and_then(|w| w.last().cloned());
        if let Some(sender) = sender {
            sender
                .send(Ok(Frame::data(chunk)))
                .await
                .expect("watch stream open");
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no watch opened on {path}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_for(
    controller: &Controller,
    what: &str,
    check: impl Fn(&mesh_controller::controller::Published) -> bool,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check(&controller.current()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {:#?}",
            controller.current()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn workload_names(p: &mesh_controller::controller::Published) -> Vec<String> {
    p.snapshot
        .workloads
        .iter()
        .map(|w| w.name.clone())
        .collect()
}

#[tokio::test]
async fn watchers_list_watch_reject_bad_objects_and_relist_after_410() {
    const PODS: &str = "/api/v1/pods";
    const NAMESPACES: &str = "/api/v1/namespaces";
    const POLICIES: &str = "/apis/security.istio.io/v1/authorizationpolicies";
    let script = Arc::new(Mutex::new(Script::default()));
    {
        let mut s = script.lock().expect("script lock");
        s.lists.insert(
            NAMESPACES.to_owned(),
            vec![list(
                "Namespace",
                "v1",
                "1",
                vec![json!({
                    "metadata": {"name": "demo", "labels": {"istio.io/dataplane-mode": "ambient"}}
                })],
            )],
        );
        s.lists.insert(
            PODS.to_owned(),
            vec![
                list("Pod", "v1", "10", vec![pod("a", "10.244.1.1", "9")]),
                // The relist after the watch expired: `a` was deleted, `c` created meanwhile.
                list(
                    "Pod",
                    "v1",
                    "20",
                    vec![pod("b", "10.244.1.2", "11"), pod("c", "10.244.1.3", "19")],
                ),
            ],
        );
        s.lists.insert(POLICIES.to_owned(), vec![list("AuthorizationPolicy", "security.istio.io/v1", "5", vec![
            json!({"metadata": {"name": "good", "namespace": "demo"}, "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"ports": ["9090"]}}]}]}}),
            json!({"metadata": {"name": "bad", "namespace": "demo"}, "spec": {"rules": [{"to": [{"operation": {"ports": ["http"]}}]}]}}),
        ])]);
    }
    let (service, handle) = tower_test::mock::pair::<Request<kube::client::Body>, Response<Body>>();
    let server = tokio::spawn(fake_api_server(handle, script.clone()));
    let client = kube::Client::new(service, "default");
    let controller = Controller::new(TranslateOptions::default());
    let options = KubeOptions {
        kinds: vec![Kind::Namespace, Kind::Pod, Kind::AuthorizationPolicy],
        retry_delay: Duration::from_millis(10),
    };
    let source = tokio::spawn(run(client, controller.clone(), options));

    // Initial lists: pod a is meshed through its namespace; the bad policy is reported with its
    // field path and does not stop the good one.
    wait_for(&controller, "initial lists", |p| {
        workload_names(p) == ["a"] && !p.snapshot.authorization_policies.is_empty()
    })
    .await;
    let current = controller.current();
    assert!(current.snapshot.workloads[0].meshed);
    assert_eq!(current.snapshot.authorization_policies.len(), 1);
    assert_eq!(current.snapshot.authorization_policies[0].name, "good");
    assert_eq!(current.errors.len(), 1, "{:#?}", current.errors);
    let error = &current.errors[0];
    assert_eq!(error.origin, "kubernetes");
    assert_eq!(
        error.object.as_ref().map(ToString::to_string).as_deref(),
        Some("AuthorizationPolicy demo/bad")
    );
    assert_eq!(error.path, "spec.rules[0].to[0].operation.ports[0]");

    // Watch events: b added, a modified to a new address.
    push(&script, PODS, event("ADDED", pod("b", "10.244.1.2", "11"))).await;
    push(
        &script,
        PODS,
        event("MODIFIED", pod("a", "10.244.1.9", "12")),
    )
    .await;
    wait_for(&controller, "watch events", |p| {
        workload_names(p) == ["a", "b"]
            && p.snapshot.workloads[0].addresses
                == ["10.244.1.9".parse::<std::net::IpAddr>().expect("ip")]
    })
    .await;

    // A policy fixed in place replaces the error.
    push(
        &script,
        POLICIES,
        event(
            "MODIFIED",
            json!({
                "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                "metadata": {"name": "bad", "namespace": "demo", "resourceVersion": "6"},
                "spec": {"rules": [{"to": [{"operation": {"ports": ["8080"]}}]}]}
            }),
        ),
    )
    .await;
    wait_for(&controller, "the fixed policy", |p| {
        p.errors.is_empty() && p.snapshot.authorization_policies.len() == 2
    })
    .await;

    // The watch expires: the watcher relists, and the relist replaces what was held.
    push(
        &script,
        PODS,
        event(
            "ERROR",
            json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "too old resource version: 12 (15)", "reason": "Expired", "code": 410
            }),
        ),
    )
    .await;
    wait_for(&controller, "the relist", |p| {
        workload_names(p) == ["b", "c"]
    })
    .await;
    {
        let s = script.lock().expect("script lock");
        let pod_requests: Vec<&str> = s
            .log
            .iter()
            .filter(|l| l.ends_with(PODS))
            .map(String::as_str)
            .collect();
        assert_eq!(
            &pod_requests[..3],
            [
                "LIST /api/v1/pods",
                "WATCH /api/v1/pods",
                "LIST /api/v1/pods"
            ]
        );
    }

    // A delete on the new watch.
    push(
        &script,
        PODS,
        event("DELETED", pod("b", "10.244.1.2", "21")),
    )
    .await;
    wait_for(&controller, "the delete", |p| workload_names(p) == ["c"]).await;

    source.abort();
    server.abort();
}
