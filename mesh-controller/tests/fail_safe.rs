//! What nothing enforces yet: the dry-run annotation reaches the model (never enforced by the
//! agents), and a policy attached with targetRefs or a waypoint assignment is reported on
//! `/errors` (and in the `/clients` report `meshctl status` prints) with why traffic to it is
//! denied, and sent to the agents of the nodes hosting what it refuses. Loopback only, bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_common::api::config::ClientKind;
use mesh_common::api::ResourceSet;
use mesh_controller::admin::{Admin, StatusReport};
use mesh_controller::controller::{Change, Controller};
use mesh_controller::load::parse_yaml;
use mesh_controller::server::view::view;
use mesh_controller::server::Registry;
use mesh_controller::translate::TranslateOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

/// Two nodes: `echo` (service, endpoint `echo-1` on node-a) and `db` (assigned waypoint `wp`)
/// on node-b.
const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: apps, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: apps}
spec:
  clusterIP: 10.96.0.20
  ports: [{port: 80, targetPort: 8080}]
  selector: {app: echo}
---
apiVersion: v1
kind: Pod
metadata: {name: echo-1, namespace: apps, labels: {app: echo}}
spec: {nodeName: node-a, containers: [{name: echo, image: echo}]}
status: {phase: Running, podIP: 10.244.1.20}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: wp, namespace: apps}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: apps, labels: {istio.io/use-waypoint: wp}}
spec:
  clusterIP: 10.96.0.21
  ports: [{port: 5432}]
  selector: {app: db}
---
apiVersion: v1
kind: Pod
metadata: {name: db-1, namespace: apps, labels: {app: db}}
spec: {nodeName: node-b, containers: [{name: db, image: db}]}
status: {phase: Running, podIP: 10.244.2.21}
"#;

const POLICIES: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: echo-l7, namespace: apps}
spec:
  targetRefs: [{kind: Service, group: "", name: echo}]
  action: ALLOW
  rules: [{to: [{operation: {methods: [GET]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: shadow, namespace: apps, annotations: {istio.io/dry-run: "true"}}
spec:
  action: DENY
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: enforced, namespace: apps, annotations: {istio.io/dry-run: "false"}}
spec:
  action: DENY
  rules: [{from: [{source: {namespaces: [evil]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: typo, namespace: apps, annotations: {istio.io/dry-run: "yes"}}
spec:
  action: DENY
  rules: [{from: [{source: {namespaces: [evil]}}]}]
"#;

fn controller() -> Arc<Controller> {
    let controller = Controller::new(TranslateOptions::default());
    controller
        .apply(vec![
            Change::ReplaceUnit {
                unit: "base.yaml".to_owned(),
                parsed: parse_yaml("base.yaml", BASE),
            },
            Change::ReplaceUnit {
                unit: "policies.yaml".to_owned(),
                parsed: parse_yaml("policies.yaml", POLICIES),
            },
        ])
        .expect("apply");
    controller
}

#[test]
fn dry_run_annotation_is_translated_and_a_bad_value_enforces() {
    let current = controller().current();
    let dry_run = |name: &str| {
        current
            .snapshot
            .authorization_policies
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("policy {name} translated"))
            .dry_run
    };
    assert!(dry_run("shadow"));
    assert!(!dry_run("enforced"));
    assert!(
        !dry_run("typo"),
        "an unknown value must not switch a policy off"
    );
    assert!(!dry_run("echo-l7"));
    let typo: Vec<String> = current
        .errors
        .iter()
        .filter(|e| e.path == "metadata.annotations[istio.io/dry-run]")
        .map(ToString::to_string)
        .collect();
    assert_eq!(typo.len(), 1, "{typo:#?}");
    assert!(
        typo[0].contains("AuthorizationPolicy apps/typo") && typo[0].contains("enforced"),
        "{typo:#?}"
    );
}

async fn get(admin: SocketAddr, path: &str) -> String {
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(admin)
            .await
            .expect("admin connects");
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: admin\r\n\r\n").as_bytes())
            .await
            .expect("request sent");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("response read");
        let (_, body) = response.split_once("\r\n\r\n").expect("HTTP response");
        body.to_owned()
    };
    tokio::time::timeout(WAIT, fetch)
        .await
        .expect("admin answers in time")
}

#[tokio::test]
async fn errors_say_why_traffic_is_denied() {
    let controller = controller();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server =
        tokio::spawn(Admin::new(controller.clone(), Arc::new(Registry::default())).serve(listener));
    let errors: Vec<serde_json::Value> =
        serde_json::from_str(&get(addr, "/errors").await).expect("errors JSON");
    let find = |object: &str, path: &str| {
        errors
            .iter()
            .find(|e| {
                e["object"].as_object().is_some_and(|o| {
                    format!(
                        "{} {}/{}",
                        o["kind"].as_str().unwrap_or_default(),
                        o["namespace"].as_str().unwrap_or_default(),
                        o["name"].as_str().unwrap_or_default()
                    ) == object
                }) && e["path"] == path
            })
            .and_then(|e| e["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("no error on {object} {path}: {errors:#?}"))
    };
    assert_eq!(
        find("AuthorizationPolicy apps/echo-l7", "spec.targetRefs[0]"),
        "policy apps/echo-l7 targets Service apps/echo: no waypoint runs to enforce it; traffic to it is denied"
    );
    assert_eq!(
        find("Service apps/db", "metadata.labels[istio.io/use-waypoint]"),
        "Service apps/db uses waypoint apps/wp: no waypoint runs to carry its traffic; traffic to it is denied"
    );
    // What `meshctl status` prints comes with the /clients report.
    let status: StatusReport =
        serde_json::from_str(&get(addr, "/clients").await).expect("status JSON");
    assert_eq!(status.errors, errors.len());
    assert!(
        status
            .error_messages
            .iter()
            .any(|m| m.ends_with("policy apps/echo-l7 targets Service apps/echo: no waypoint runs to enforce it; traffic to it is denied")),
        "{:#?}",
        status.error_messages
    );
    server.abort();
}

#[test]
fn a_target_refs_policy_goes_to_the_nodes_hosting_what_it_refuses() {
    let current = controller().current();
    let policies_of = |node: &str| -> Vec<String> {
        let resources: ResourceSet = view(
            &current.snapshot,
            &current.resources,
            ClientKind::Agent,
            node,
        );
        let mut names: Vec<String> = resources
            .to_snapshot("v")
            .expect("decodes")
            .authorization_policies
            .into_iter()
            .map(|p| p.name)
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        policies_of("node-a"),
        vec!["echo-l7", "enforced", "shadow", "typo"]
    );
    // node-b hosts no endpoint of `echo`: it gets the namespace's policies only.
    assert_eq!(policies_of("node-b"), vec!["enforced", "shadow", "typo"]);
}
