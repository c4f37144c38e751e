//! The gRPC certificate service on 127.0.0.1: an agent gets certificates for the workloads on
//! its node, and nothing else.

#![cfg(feature = "ca-service")]

#[path = "support/fixture.rs"]
#[allow(dead_code, reason = "each test crate uses a part of the fixture")]
mod fixture;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use fixture::{id, init_logging, STEP};
use mesh_hbone::ca::{CaConfig, CertificateAuthority, TrustBundle};
use mesh_hbone::ca_service::{serve, Authorizer, CaClient, CaService, NodeTokens};
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
    init_logging();
    let ca = Arc::new(CertificateAuthority::generate(CaConfig::new("cluster.local")).expect("CA"));
    let tokens = NodeTokens::new();
    let enrolled = Enrolled(HashSet::from([
        ("node-1".to_owned(), id("web")),
        ("node-2".to_owned(), id("db")),
    ]));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = CaService::new(ca.clone(), tokens.clone(), enrolled);
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
