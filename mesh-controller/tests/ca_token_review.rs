//! The Kubernetes `TokenReview` authenticator of the certificate service against a fake API
//! server (tower-test's mock service behind a real kube `Client`): it accepts only an
//! authenticated token of the agent service account, for the CA's audience, bound to a pod on the
//! node the agent claims; every other answer, and any API failure, refuses. Accepted tokens are
//! remembered for a while, refusals are not.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use mesh_controller::ca::token_review::NODE_NAME_EXTRA;
use mesh_controller::ca::{TokenReviewAuthenticator, TokenReviewOptions};
use mesh_hbone::ca_service::{AuthError, NodeAuthenticator};
use serde_json::{json, Value};

type Body = BoxBody<Bytes, Infallible>;

const TOKENREVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
const AGENT: &str = "system:serviceaccount:mesh-system:mesh-agent";

/// What the fake API server answers to a `TokenReview` request body.
type Answer = Box<dyn Fn(&Value) -> (StatusCode, Value) + Send>;

/// The request bodies the fake API server received.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Value>>>);

impl Seen {
    fn bodies(&self) -> Vec<Value> {
        self.0.lock().expect("lock").clone()
    }
    fn count(&self) -> usize {
        self.0.lock().expect("lock").len()
    }
}

/// A `TokenReview` response with `status`.
fn reviewed(status: Value) -> (StatusCode, Value) {
    let body = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "metadata": {"creationTimestamp": null},
        "spec": {},
        "status": status,
    });
    (StatusCode::CREATED, body)
}

/// The status of an authenticated token of `username`, for `audience`, with `extra`.
fn authenticated(username: &str, audience: &str, extra: Value) -> Value {
    json!({
        "authenticated": true,
        "audiences": [audience],
        "user": {
            "username": username,
            "uid": "6a1f0a3e-0000-4000-8000-000000000001",
            "groups": ["system:serviceaccounts", "system:serviceaccounts:mesh-system", "system:authenticated"],
            "extra": extra,
        },
    })
}

/// The extra of a token bound to pod `mesh-agent-x` on `node`.
fn bound_to(node: &str) -> Value {
    json!({
        "authentication.kubernetes.io/credential-id": ["JTI=4b9c7a52-1111-4222-8333-444455556666"],
        NODE_NAME_EXTRA: [node],
        "authentication.kubernetes.io/node-uid": ["0d9f3e52-aaaa-4bbb-8ccc-dddddddddddd"],
        "authentication.kubernetes.io/pod-name": ["mesh-agent-x"],
        "authentication.kubernetes.io/pod-uid": ["1c8e2d41-eeee-4fff-8000-111111111111"],
    })
}

/// An authenticator with `options` in front of a fake API server answering with `answer`; the
/// fake checks every request is a `TokenReview` creation and records its body.
fn authenticator(options: TokenReviewOptions, answer: Answer) -> (TokenReviewAuthenticator, Seen) {
    let (service, mut handle) =
        tower_test::mock::pair::<Request<kube::client::Body>, Response<Body>>();
    let seen = Seen::default();
    let recorded = seen.clone();
    tokio::spawn(async move {
        while let Some((request, respond)) = handle.next_request().await {
            assert_eq!(request.method(), Method::POST);
            assert_eq!(request.uri().path(), TOKENREVIEWS);
            let bytes = request
                .into_body()
                .collect()
                .await
                .expect("request body")
                .to_bytes();
            let body: Value = serde_json::from_slice(&bytes).expect("JSON request");
            let (status, answer) = answer(&body);
            recorded.0.lock().expect("lock").push(body);
            let mut response = Response::new(Full::new(Bytes::from(answer.to_string())).boxed());
            *response.status_mut() = status;
            respond.send_response(response);
        }
    });
    let client = kube::Client::new(service, "default");
    (TokenReviewAuthenticator::new(client, options), seen)
}

/// Answers every review with the same `status`.
fn always(status: Value) -> Answer {
    Box::new(move |_| reviewed(status.clone()))
}

fn agent_on(node: &str) -> Answer {
    always(authenticated(AGENT, "mesh-ca", bound_to(node)))
}

fn refused_reason(result: Result<(), AuthError>) -> String {
    match result {
        Err(AuthError::Refused(reason)) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn accepts_the_agent_token_bound_to_the_claimed_node() {
    let (auth, seen) = authenticator(TokenReviewOptions::default(), agent_on("node-1"));
    assert_eq!(auth.authenticate("node-1", "the-token").await, Ok(()));
    // The review asked about that token, for the CA's audience.
    let bodies = seen.bodies();
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0]["kind"], "TokenReview");
    assert_eq!(bodies[0]["spec"]["token"], "the-token");
    assert_eq!(bodies[0]["spec"]["audiences"], json!(["mesh-ca"]));
}

#[tokio::test]
async fn refuses_a_token_the_api_server_does_not_authenticate() {
    let (auth, _) = authenticator(
        TokenReviewOptions::default(),
        always(
            json!({"authenticated": false, "error": "[invalid bearer token, service account token has expired]"}),
        ),
    );
    let reason = refused_reason(auth.authenticate("node-1", "expired").await);
    assert!(
        reason.contains("not authenticated") && reason.contains("has expired"),
        "{reason}"
    );

    // No status.authenticated at all is no better.
    let (auth, _) = authenticator(TokenReviewOptions::default(), always(json!({})));
    let reason = refused_reason(auth.authenticate("node-1", "t").await);
    assert!(reason.contains("not authenticated"), "{reason}");
}

#[tokio::test]
async fn refuses_another_service_account() {
    for username in [
        "system:serviceaccount:default:default",
        "system:serviceaccount:mesh-system:mesh-controller",
        "system:serviceaccount:other:mesh-agent",
        "kubernetes-admin",
    ] {
        let (auth, _) = authenticator(
            TokenReviewOptions::default(),
            always(authenticated(username, "mesh-ca", bound_to("node-1"))),
        );
        let reason = refused_reason(auth.authenticate("node-1", "t").await);
        assert!(
            reason.contains(username) && reason.contains(AGENT),
            "{username}: {reason}"
        );
    }
}

#[tokio::test]
async fn refuses_a_token_bound_to_a_pod_on_another_node() {
    let (auth, _) = authenticator(TokenReviewOptions::default(), agent_on("node-2"));
    let reason = refused_reason(auth.authenticate("node-1", "t").await);
    assert!(
        reason.contains("node-2") && reason.contains("node-1"),
        "{reason}"
    );
}

#[tokio::test]
async fn refuses_a_token_without_a_node_name() {
    // A legacy (secret-based) token, or a bound token from a Kubernetes older than 1.30.
    for extra in [
        Value::Null,
        json!({}),
        json!({"authentication.kubernetes.io/pod-name": ["mesh-agent-x"]}),
        json!({NODE_NAME_EXTRA: []}),
    ] {
        let (auth, _) = authenticator(
            TokenReviewOptions::default(),
            always(authenticated(AGENT, "mesh-ca", extra.clone())),
        );
        let reason = refused_reason(auth.authenticate("node-1", "t").await);
        assert!(
            reason.contains(NODE_NAME_EXTRA) && reason.contains("1.30"),
            "{extra}: {reason}"
        );
    }
}

#[tokio::test]
async fn refuses_a_review_without_the_audience() {
    // An API server that is not audience-aware answers without (our) audience.
    let (auth, _) = authenticator(
        TokenReviewOptions::default(),
        always(authenticated(
            AGENT,
            "https://kubernetes.default.svc",
            bound_to("node-1"),
        )),
    );
    let reason = refused_reason(auth.authenticate("node-1", "t").await);
    assert!(reason.contains("audience"), "{reason}");
}

#[tokio::test]
async fn api_errors_fail_closed() {
    let forbidden = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "tokenreviews.authentication.k8s.io is forbidden: User \"system:serviceaccount:mesh-system:mesh-controller\" cannot create resource \"tokenreviews\"",
        "reason": "Forbidden", "code": 403,
    });
    let internal = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500,
    });
    for (code, body, expect) in [
        (StatusCode::FORBIDDEN, forbidden, "forbidden"),
        (StatusCode::INTERNAL_SERVER_ERROR, internal, "timed out"),
        (
            StatusCode::CREATED,
            json!("not a TokenReview"),
            "TokenReview failed",
        ),
    ] {
        let (auth, seen) = authenticator(
            TokenReviewOptions::default(),
            Box::new(move |_| (code, body.clone())),
        );
        match auth.authenticate("node-1", "t").await {
            Err(AuthError::Unavailable(reason)) => {
                assert!(reason.contains(expect), "{code}: {reason}")
            }
            other => panic!("{code}: expected a fail-closed refusal, got {other:?}"),
        }
        // Failures are not remembered: the next request asks again.
        let _ = auth.authenticate("node-1", "t").await;
        assert_eq!(seen.count(), 2, "{code}");
    }
}

#[tokio::test]
async fn a_silent_api_server_times_out_closed() {
    let (service, mut handle) =
        tower_test::mock::pair::<Request<kube::client::Body>, Response<Body>>();
    tokio::spawn(async move {
        // Take requests and never answer.
        let mut held = Vec::new();
        while let Some(pending) = handle.next_request().await {
            held.push(pending);
        }
    });
    let options = TokenReviewOptions {
        timeout: Duration::from_millis(200),
        ..TokenReviewOptions::default()
    };
    let auth = TokenReviewAuthenticator::new(kube::Client::new(service, "default"), options);
    match auth.authenticate("node-1", "t").await {
        Err(AuthError::Unavailable(reason)) => assert!(reason.contains("timed out"), "{reason}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[tokio::test]
async fn an_accepted_token_is_reviewed_once_within_the_cache_lifetime() {
    let (auth, seen) = authenticator(TokenReviewOptions::default(), agent_on("node-1"));
    for _ in 0..3 {
        assert_eq!(auth.authenticate("node-1", "the-token").await, Ok(()));
    }
    assert_eq!(
        seen.count(),
        1,
        "later requests are answered from the cache"
    );

    // The cached acceptance holds only for that node and that token.
    let reason = refused_reason(auth.authenticate("node-2", "the-token").await);
    assert!(reason.contains("node-1"), "{reason}");
    assert_eq!(auth.authenticate("node-1", "a-rotated-token").await, Ok(()));
    assert_eq!(seen.count(), 3);

    // Refusals are not cached.
    let _ = auth.authenticate("node-2", "the-token").await;
    assert_eq!(seen.count(), 4);

    // With no cache, every request is reviewed.
    let options = TokenReviewOptions {
        cache_ttl: Duration::ZERO,
        ..TokenReviewOptions::default()
    };
    let (auth, seen) = authenticator(options, agent_on("node-1"));
    for _ in 0..3 {
        assert_eq!(auth.authenticate("node-1", "the-token").await, Ok(()));
    }
    assert_eq!(seen.count(), 3);
}

#[tokio::test]
async fn the_audience_and_service_account_are_configurable() {
    let options = TokenReviewOptions {
        audience: "istio-ca".to_owned(),
        service_account: "kube-system/node-agent".parse().expect("service account"),
        ..TokenReviewOptions::default()
    };
    let (auth, seen) = authenticator(
        options,
        Box::new(|body: &Value| {
            // Authenticate for whatever audience was asked, as a real API server would.
            let audience = body["spec"]["audiences"][0].as_str().unwrap_or_default();
            reviewed(authenticated(
                "system:serviceaccount:kube-system:node-agent",
                audience,
                bound_to("node-1"),
            ))
        }),
    );
    assert_eq!(auth.authenticate("node-1", "t").await, Ok(()));
    assert_eq!(seen.bodies()[0]["spec"]["audiences"], json!(["istio-ca"]));

    // The default agent account is now someone else.
    let (auth, _) = authenticator(
        TokenReviewOptions {
            audience: "istio-ca".to_owned(),
            service_account: "kube-system/node-agent".parse().expect("service account"),
            ..TokenReviewOptions::default()
        },
        always(authenticated(AGENT, "istio-ca", bound_to("node-1"))),
    );
    let reason = refused_reason(auth.authenticate("node-1", "t").await);
    assert!(reason.contains("kube-system:node-agent"), "{reason}");
}

const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: demo
  labels:
    istio.io/dataplane-mode: ambient
---
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: demo
spec:
  serviceAccountName: web
  nodeName: node-1
  containers:
  - name: web
    image: web
status:
  phase: Running
  podIP: 10.244.1.10
---
apiVersion: v1
kind: Pod
metadata:
  name: db-1
  namespace: demo
spec:
  serviceAccountName: db
  nodeName: node-2
  containers:
  - name: db
    image: db
status:
  phase: Running
  podIP: 10.244.2.10
"#;

#[tokio::test]
async fn the_certificate_service_issues_only_to_the_reviewed_node() {
    use mesh_hbone::ca::{ServingName, TrustBundle};
    use mesh_hbone::ca_service::{serve, CaClient, HandshakeStats};
    use mesh_hbone::certs::{new_key_and_csr, CertificateSigner};
    use mesh_hbone::tls::control::{server_config, ServingCert};
    use mesh_hbone::Identity;

    // The controller knows web-1 on node-1 and db-1 on node-2.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("cluster.yaml"), CLUSTER).expect("write cluster");
    let controller = mesh_controller::controller::Controller::new(
        mesh_controller::translate::TranslateOptions {
            cluster_domain: "cluster.local".to_owned(),
            root_namespace: "istio-system".to_owned(),
        },
    );
    mesh_controller::source::dir::DirSource::new(dir.path(), controller.clone())
        .scan()
        .expect("scan");
    assert_eq!(controller.current().snapshot.workloads.len(), 2);

    // The API server vouches for node-1's agent token only.
    let (auth, _) = authenticator(
        TokenReviewOptions::default(),
        Box::new(|body: &Value| match body["spec"]["token"].as_str() {
            Some("node-1-token") => reviewed(authenticated(AGENT, "mesh-ca", bound_to("node-1"))),
            _ => reviewed(json!({"authenticated": false, "error": "invalid bearer token"})),
        }),
    );
    let ca_dir = tempfile::tempdir().expect("tempdir");
    let ca = mesh_controller::ca::load(ca_dir.path(), "cluster.local", Duration::from_secs(3600))
        .expect("CA");
    let service = mesh_controller::ca::service(ca.clone(), auth, controller);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let endpoint = format!("https://{addr}");
    let serving = ServingCert::issue(
        ca.clone(),
        vec![ServingName::Ip(addr.ip())],
        Duration::from_secs(3600),
    )
    .expect("serving certificate");
    let tls = server_config(serving).expect("tls");
    // The agent pins the root the controller wrote to its CA directory.
    let root_pem = std::fs::read_to_string(ca_dir.path().join("root-cert.pem")).expect("root");
    let pinned = TrustBundle::from_pem("cluster.local", &root_pem).expect("pinned");
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stats = std::sync::Arc::new(HandshakeStats::default());
    tokio::spawn(serve(listener, tls, stats, service, async move {
        let _ = stopped.await;
    }));
    let web = Identity::new("cluster.local", "demo", "web");
    let db = Identity::new("cluster.local", "demo", "db");
    let (_key, csr) = new_key_and_csr(&web).expect("csr");
    let sign = |node: &str, token: &str, identity: &Identity| {
        let client = CaClient::lazy(&endpoint, pinned.clone(), node, token).expect("client");
        let identity = identity.clone();
        let csr = csr.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(10), client.sign(&identity, &csr))
                .await
                .expect("bounded")
        }
    };

    // node-1's agent gets a certificate for its own workload...
    let chain = sign("node-1", "node-1-token", &web).await.expect("issued");
    assert!(!chain.is_empty());
    // ...but not for a workload on node-2,
    let err = sign("node-1", "node-1-token", &db)
        .await
        .expect_err("not on node-1");
    assert!(err.0.contains("PermissionDenied"), "{err}");
    // and its token does not make it node-2's agent.
    let err = sign("node-2", "node-1-token", &db)
        .await
        .expect_err("claims another node");
    assert!(
        err.0.contains("Unauthenticated") && err.0.contains("node-1"),
        "{err}"
    );
    // A token the API server does not authenticate is refused.
    let err = sign("node-1", "stolen-or-expired", &web)
        .await
        .expect_err("unauthenticated");
    assert!(err.0.contains("Unauthenticated"), "{err}");
}
