//! The gRPC certificate service on 127.0.0.1: an agent gets certificates for the workloads on
//! its node, and nothing else; node authentication is whatever `NodeAuthenticator` the service
//! is given (bootstrap tokens here, and a custom one).

#![cfg(feature = "ca-service")]

#[path = "support/fixture.rs"]
#[allow(dead_code, reason = "each test crate uses a part of the fixture")]
mod fixture;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use fixture::{id, init_logging, STEP};
use mesh_hbone::ca::{CaConfig, CertificateAuthority, TrustBundle};
use mesh_hbone::ca_service::{
    serve, AuthError, Authorizer, CaClient, CaService, NodeAuthenticator, NodeTokens,
};
use mesh_hbone::certs::{
    new_key_and_csr, CertError, CertManager, CertManagerConfig, CertificateSigner,
};
use mesh_hbone::tls::verify_chain;
use mesh_hbone::Identity;
use rustls_pki_types::UnixTime;
use tokio::net::TcpListener;
use tokio::time::timeout;

/// (node, identity) pairs of enrolled workloads.
struct Enrolled(HashSet<(String, Identity)>);

#[async_trait]
impl Authorizer for Enrolled {
    async fn is_on_node(&self, node: &str, identity: &Identity) -> bool {
        self.0.contains(&(node.to_owned(), identity.clone()))
    }
}

struct Controller {
    ca: Arc<CertificateAuthority>,
    tokens: NodeTokens,
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn controller() -> Controller {
    let tokens = NodeTokens::new();
    controller_with(tokens.clone(), tokens).await
}

/// A controller whose service authenticates nodes with `authenticator`; `tokens` is only kept
/// for the tests to use.
async fn controller_with(authenticator: impl NodeAuthenticator, tokens: NodeTokens) -> Controller {
    init_logging();
    let ca = Arc::new(CertificateAuthority::generate(CaConfig::new("cluster.local")).expect("CA"));
    let enrolled = Enrolled(HashSet::from([
        ("node-1".to_owned(), id("web")),
        ("node-2".to_owned(), id("db")),
    ]));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = CaService::new(ca.clone(), authenticator, enrolled);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, service, async move {
        let _ = stopped.await;
    }));
    Controller {
        ca,
        tokens,
        addr,
        _stop: stop,
    }
}

fn client(c: &Controller, node: &str, token: &str) -> CaClient {
    CaClient::lazy(&format!("http://{}", c.addr), node, token).expect("client")
}

#[tokio::test]
async fn an_agent_gets_certificates_for_workloads_on_its_node() {
    let c = controller().await;
    let token = c.tokens.generate("node-1").expect("token");
    let agent_bundle = TrustBundle::new("cluster.local");
    let signer = client(&c, "node-1", &token).with_trust_bundle(agent_bundle.clone());
    let certs = CertManager::new(Arc::new(signer), CertManagerConfig::default());
    let cert = timeout(STEP, certs.get(&id("web")))
        .await
        .expect("bounded")
        .expect("certificate");
    assert_eq!(cert.identity(), &id("web"));
    // The agent learnt the roots with its certificate, and the certificate verifies with them.
    assert_eq!(agent_bundle.roots(), vec![c.ca.root_certificate()]);
    let usage = mesh_hbone::tls::KeyUsage::client_auth();
    let verified = verify_chain(&agent_bundle, &cert.chain()[0], &[], UnixTime::now(), usage);
    assert_eq!(verified, Ok(id("web")));
}

#[tokio::test]
async fn an_agent_is_refused_a_workload_of_another_node() {
    let c = controller().await;
    let token = c.tokens.generate("node-1").expect("token");
    let certs = CertManager::new(
        Arc::new(client(&c, "node-1", &token)),
        CertManagerConfig::default(),
    );
    match timeout(STEP, certs.get(&id("db"))).await.expect("bounded") {
        Err(CertError::Signing { reason, .. }) => {
            assert!(
                reason.contains("PermissionDenied") && reason.contains("not on node"),
                "{reason}"
            )
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_tokens_and_unknown_nodes_are_unauthenticated() {
    let c = controller().await;
    let token = c.tokens.generate("node-1").expect("token");
    let other = c.tokens.generate("node-2").expect("token");
    let (_key, csr) = new_key_and_csr(&id("web")).expect("csr");
    for (node, tok) in [
        ("node-1", "wrong"),
        ("node-1", other.as_str()),
        ("node-9", token.as_str()),
    ] {
        let err = timeout(STEP, client(&c, node, tok).sign(&id("web"), &csr))
            .await
            .expect("bounded")
            .expect_err("must be refused");
        assert!(err.0.contains("Unauthenticated"), "{node}: {err}");
    }
    // A revoked node is refused too.
    c.tokens.remove("node-1");
    let err = client(&c, "node-1", &token)
        .sign(&id("web"), &csr)
        .await
        .expect_err("revoked");
    assert!(err.0.contains("Unauthenticated"), "{err}");
}

#[tokio::test]
async fn a_garbage_csr_is_an_invalid_argument() {
    let c = controller().await;
    let token = c.tokens.generate("node-1").expect("token");
    let agent = client(&c, "node-1", &token);
    let err = agent
        .sign(&id("web"), b"not a csr")
        .await
        .expect_err("bad CSR");
    assert!(err.0.contains("InvalidArgument"), "{err}");
}

/// Accepts `node-1` with one token, refuses everything else, and cannot answer for `node-3`;
/// records every (node, token) it is asked about.
#[derive(Default)]
struct Recording(Mutex<Vec<(String, String)>>);

#[async_trait]
impl NodeAuthenticator for Recording {
    async fn authenticate(&self, node: &str, token: &str) -> Result<(), AuthError> {
        self.0
            .lock()
            .expect("lock")
            .push((node.to_owned(), token.to_owned()));
        match (node, token) {
            ("node-1", "a-projected-service-account-token") => Ok(()),
            ("node-3", _) => Err(AuthError::Unavailable("review backend down".into())),
            _ => Err(AuthError::refused("token bound to another node")),
        }
    }
}

#[tokio::test]
async fn a_custom_authenticator_is_consulted_with_node_and_token() {
    let recording = Arc::new(Recording::default());
    let c = controller_with(recording.clone(), NodeTokens::new()).await;
    let (_key, csr) = new_key_and_csr(&id("web")).expect("csr");

    // Accepted: the certificate is issued.
    let chain = timeout(
        STEP,
        client(&c, "node-1", "a-projected-service-account-token").sign(&id("web"), &csr),
    )
    .await
    .expect("bounded")
    .expect("accepted by the custom authenticator");
    assert!(!chain.is_empty());

    // Refused: Unauthenticated, with the authenticator's reason.
    let err = timeout(
        STEP,
        client(&c, "node-2", "some-other-token").sign(&id("db"), &csr),
    )
    .await
    .expect("bounded")
    .expect_err("refused");
    assert!(
        err.0.contains("Unauthenticated") && err.0.contains("token bound to another node"),
        "{err}"
    );

    // Cannot check: still refused (fail closed), as Unavailable.
    let err = timeout(
        STEP,
        client(&c, "node-3", "any-token").sign(&id("web"), &csr),
    )
    .await
    .expect("bounded")
    .expect_err("fails closed");
    assert!(err.0.contains("Unavailable"), "{err}");

    // The bootstrap tokens were not used: the custom authenticator saw every request, verbatim.
    let seen = recording.0.lock().expect("lock").clone();
    assert_eq!(
        seen,
        vec![
            (
                "node-1".to_owned(),
                "a-projected-service-account-token".to_owned()
            ),
            ("node-2".to_owned(), "some-other-token".to_owned()),
            ("node-3".to_owned(), "any-token".to_owned()),
        ]
    );
}

#[tokio::test]
async fn a_token_file_is_reread_at_every_request() {
    let c = controller().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("token");
    let first = c.tokens.generate("node-1").expect("token");
    std::fs::write(&file, format!("{first}\n")).expect("write token");
    let agent = CaClient::lazy_with_token_file(&format!("http://{}", c.addr), "node-1", &file)
        .expect("client");
    let (_key, csr) = new_key_and_csr(&id("web")).expect("csr");
    timeout(STEP, agent.sign(&id("web"), &csr))
        .await
        .expect("bounded")
        .expect("first token accepted");

    // The token rotates in place (as the kubelet does with projected tokens): the old one is no
    // longer valid, and the same client presents the new one.
    let second = c.tokens.generate("node-1").expect("token");
    std::fs::write(&file, &second).expect("rotate token");
    timeout(STEP, agent.sign(&id("web"), &csr))
        .await
        .expect("bounded")
        .expect("rotated token accepted");

    // An unreadable token file fails the request, not the client.
    std::fs::remove_file(&file).expect("remove token");
    let err = timeout(STEP, agent.sign(&id("web"), &csr))
        .await
        .expect("bounded")
        .expect_err("no token");
    assert!(err.0.contains("token file"), "{err}");

    // A client cannot be built on a missing or empty token file.
    assert!(CaClient::lazy_with_token_file("http://127.0.0.1:1", "node-1", &file).is_err());
    std::fs::write(&file, "\n").expect("write empty token");
    assert!(CaClient::lazy_with_token_file("http://127.0.0.1:1", "node-1", &file).is_err());
}
