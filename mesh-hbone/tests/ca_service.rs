//! The gRPC certificate service on 127.0.0.1, over the control plane's TLS: an agent gets
//! certificates for the workloads on its node, and nothing else; node authentication is whatever
//! `NodeAuthenticator` the service is given (bootstrap tokens here, and a custom one).

#![cfg(feature = "ca-service")]

#[path = "support/fixture.rs"]
#[allow(dead_code, reason = "each test crate uses a part of the fixture")]
mod fixture;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use fixture::{id, init_logging, STEP};
use mesh_hbone::ca::{CaConfig, CertificateAuthority, ServingName, TrustBundle};
use mesh_hbone::ca_service::{
    serve, AuthError, Authorizer, CaClient, CaService, HandshakeStats, NodeAuthenticator,
    NodeTokens, SigningFailure, SigningObserver,
};
use mesh_hbone::certs::{
    new_key_and_csr, CertError, CertManager, CertManagerConfig, CertificateSigner,
};
use mesh_hbone::tls::control::{server_config, ServingCert};
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
    stats: Arc<HandshakeStats>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn controller() -> Controller {
    let tokens = NodeTokens::new();
    controller_with(tokens.clone(), tokens).await
}

/// A controller whose service authenticates nodes with `authenticator`; `tokens` is only kept
/// for the tests to use.
async fn controller_with(authenticator: impl NodeAuthenticator, tokens: NodeTokens) -> Controller {
    controller_named(authenticator, tokens, None).await
}

/// [`controller_with`], the serving certificate naming `name` instead of the address served.
async fn controller_named(
    authenticator: impl NodeAuthenticator,
    tokens: NodeTokens,
    name: Option<ServingName>,
) -> Controller {
    controller_full(authenticator, tokens, name, None).await
}

/// [`controller_named`], the service reporting its outcomes to `observer`.
async fn controller_full(
    authenticator: impl NodeAuthenticator,
    tokens: NodeTokens,
    name: Option<ServingName>,
    observer: Option<Arc<dyn SigningObserver>>,
) -> Controller {
    init_logging();
    let ca = Arc::new(CertificateAuthority::generate(CaConfig::new("cluster.local")).expect("CA"));
    let enrolled = Enrolled(HashSet::from([
        ("node-1".to_owned(), id("web")),
        ("node-2".to_owned(), id("db")),
    ]));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut service = CaService::new(ca.clone(), authenticator, enrolled);
    if let Some(observer) = observer {
        service = service.with_observer(observer);
    }
    let serving = ServingCert::issue(
        ca.clone(),
        vec![name.unwrap_or(ServingName::Ip(addr.ip()))],
        std::time::Duration::from_secs(3600),
    )
    .expect("serving certificate");
    let tls = server_config(serving).expect("server config");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stats = Arc::new(HandshakeStats::default());
    tokio::spawn(serve(listener, tls, stats.clone(), service, async move {
        let _ = stopped.await;
    }));
    Controller {
        ca,
        tokens,
        addr,
        stats,
        _stop: stop,
    }
}

/// What an agent is installed with: a copy of the CA's roots (not the CA's live bundle).
fn pinned(c: &Controller) -> TrustBundle {
    TrustBundle::from_pem("cluster.local", &c.ca.trust_bundle().to_pem()).expect("roots")
}

fn client(c: &Controller, node: &str, token: &str) -> CaClient {
    CaClient::lazy(&format!("https://{}", c.addr), pinned(c), node, token).expect("client")
}

#[tokio::test]
async fn an_agent_gets_certificates_for_workloads_on_its_node() {
    let c = controller().await;
    let token = c.tokens.generate("node-1").expect("token");
    let signer = client(&c, "node-1", &token);
    let agent_bundle = signer.trust_bundle().clone();
    let certs = CertManager::new(Arc::new(signer), CertManagerConfig::default());
    let cert = timeout(STEP, certs.get(&id("web")))
        .await
        .expect("bounded")
        .expect("certificate");
    assert_eq!(cert.identity(), &id("web"));
    // The agent's pinned roots still match the CA's, and the certificate verifies with them.
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
                reason.contains("PermissionDenied") && reason.contains("not an identity of node-1"),
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

/// The outcomes a service reported, in order.
#[derive(Default)]
struct Outcomes(Mutex<Vec<String>>);

impl SigningObserver for Outcomes {
    fn signed(&self, identity: &Identity, not_after: std::time::SystemTime) {
        let future = not_after > std::time::SystemTime::now();
        let line = format!("signed {identity}, expiring in the future: {future}");
        self.0.lock().expect("lock").push(line);
    }

    fn failed(&self, failure: SigningFailure) {
        let line = format!("failed {}", failure.as_str());
        self.0.lock().expect("lock").push(line);
    }
}

#[tokio::test]
async fn every_outcome_is_reported_to_the_observer() {
    let outcomes = Arc::new(Outcomes::default());
    let tokens = NodeTokens::new();
    let c = controller_full(tokens.clone(), tokens, None, Some(outcomes.clone())).await;
    let token = c.tokens.generate("node-1").expect("token");
    let (_key, csr) = new_key_and_csr(&id("web")).expect("csr");
    let agent = client(&c, "node-1", &token);
    timeout(STEP, agent.sign(&id("web"), &csr))
        .await
        .expect("bounded")
        .expect("signed");
    for (identity, csr, token) in [
        (id("db"), csr.as_slice(), token.as_str()),
        (id("web"), b"not a csr".as_slice(), token.as_str()),
        (id("web"), csr.as_slice(), "wrong"),
    ] {
        timeout(STEP, client(&c, "node-1", token).sign(&identity, csr))
            .await
            .expect("bounded")
            .expect_err("refused");
    }
    assert_eq!(
        *outcomes.0.lock().expect("lock"),
        [
            format!("signed {}, expiring in the future: true", id("web")),
            "failed not_authorized".to_owned(),
            "failed bad_csr".to_owned(),
            "failed unauthenticated".to_owned(),
        ]
    );
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
    let agent =
        CaClient::lazy_with_token_file(&format!("https://{}", c.addr), pinned(&c), "node-1", &file)
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
    let url = "https://127.0.0.1:1";
    assert!(CaClient::lazy_with_token_file(url, pinned(&c), "node-1", &file).is_err());
    std::fs::write(&file, "\n").expect("write empty token");
    assert!(CaClient::lazy_with_token_file(url, pinned(&c), "node-1", &file).is_err());
}

// --- The channel: TLS only, verified against the pinned roots, roots updated only by overlap.

/// Waits (bounded) until `condition` holds.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + STEP;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_plaintext_client_is_refused_before_grpc() {
    use mesh_hbone::ca_service::proto::certificate_service_client::CertificateServiceClient;
    use mesh_hbone::ca_service::proto::CreateCertificateRequest;
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let recording = Arc::new(Recording::default());
    let c = controller_with(recording.clone(), NodeTokens::new()).await;

    // A plaintext gRPC client (what agents were before) gets no answer from the service.
    let plaintext = async {
        let mut client = CertificateServiceClient::connect(format!("http://{}", c.addr)).await?;
        let mut request = tonic::Request::new(CreateCertificateRequest {
            identity: id("web").to_string(),
            csr_der: vec![],
        });
        request.metadata_mut().insert(
            "authorization",
            "Bearer a-projected-service-account-token".parse()?,
        );
        request
            .metadata_mut()
            .insert("x-mesh-node", "node-1".parse()?);
        client.create_certificate(request).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    let result = timeout(STEP, plaintext).await.expect("bounded");
    assert!(result.is_err(), "a plaintext client was answered");

    // Raw HTTP/2 (the client preface and an empty SETTINGS frame): the answer is a TLS alert or
    // nothing, never an HTTP/2 frame.
    let mut tcp = tokio::net::TcpStream::connect(c.addr)
        .await
        .expect("connect");
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("send preface");
    let mut answer = Vec::new();
    let _ = timeout(STEP, tcp.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection");
    assert!(
        answer.is_empty() || answer[0] == 0x15,
        "expected a TLS alert record or nothing, got {answer:02x?}"
    );

    // Both were refused at the handshake: counted, and no token reached the authenticator.
    eventually("two plaintext refusals counted", || {
        c.stats.not_tls.load(Ordering::Relaxed) >= 2
    })
    .await;
    assert_eq!(c.stats.accepted.load(Ordering::Relaxed), 0);
    assert!(recording.0.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn a_request_without_credentials_is_unauthenticated_over_tls() {
    use mesh_hbone::ca_service::proto::certificate_service_client::CertificateServiceClient;
    use mesh_hbone::ca_service::proto::CreateCertificateRequest;
    use mesh_hbone::ca_service::transport::ControlPlaneConnector;

    let c = controller().await;
    let url = format!("https://{}", c.addr);
    let connector = ControlPlaneConnector::new(&url, pinned(&c)).expect("connector");
    let channel = tonic::transport::Endpoint::from_shared(url)
        .expect("endpoint")
        .connect_with_connector_lazy(connector);
    let mut client = CertificateServiceClient::new(channel);
    let status = timeout(
        STEP,
        client.create_certificate(CreateCertificateRequest {
            identity: id("web").to_string(),
            csr_der: vec![],
        }),
    )
    .await
    .expect("bounded")
    .expect_err("no credentials");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
}

#[tokio::test]
async fn a_client_pinning_another_root_refuses_the_server_and_sends_no_token() {
    let recording = Arc::new(Recording::default());
    let c = controller_with(recording.clone(), NodeTokens::new()).await;
    let (_key, csr) = new_key_and_csr(&id("web")).expect("csr");
    let other = CertificateAuthority::generate(CaConfig::new("cluster.local")).expect("CA");
    let wrong_roots =
        TrustBundle::from_pem("cluster.local", &other.trust_bundle().to_pem()).expect("roots");
    let agent = CaClient::lazy(
        &format!("https://{}", c.addr),
        wrong_roots.clone(),
        "node-1",
        "a-projected-service-account-token",
    )
    .expect("client");
    let err = timeout(STEP, agent.sign(&id("web"), &csr))
        .await
        .expect("bounded")
        .expect_err("the server is not trusted");
    assert!(err.0.contains("Unavailable"), "{err}");
    // The token never reached the server, and the pinned roots are unchanged.
    assert!(recording.0.lock().expect("lock").is_empty());
    assert_eq!(wrong_roots.roots(), vec![other.root_certificate()]);
}

#[tokio::test]
async fn a_serving_certificate_for_another_name_is_refused() {
    let recording = Arc::new(Recording::default());
    let name = ServingName::Dns("controller.mesh.invalid".to_owned());
    let c = controller_named(recording.clone(), NodeTokens::new(), Some(name)).await;
    let (_key, csr) = new_key_and_csr(&id("web")).expect("csr");
    // The certificate chains to the pinned root, but names another host than the one dialed.
    let err = timeout(
        STEP,
        client(&c, "node-1", "a-projected-service-account-token").sign(&id("web"), &csr),
    )
    .await
    .expect("bounded")
    .expect_err("wrong name");
    assert!(err.0.contains("Unavailable"), "{err}");
    assert!(recording.0.lock().expect("lock").is_empty());
}

/// A certificate service that signs with `ca` but answers with `roots` as the trust bundle:
/// what a compromised or confused controller (or anything on the path, were the channel not
/// verified) could send.
struct InjectingService {
    ca: Arc<CertificateAuthority>,
    roots: Mutex<Vec<Vec<u8>>>,
}

#[async_trait]
impl mesh_hbone::ca_service::proto::certificate_service_server::CertificateService
    for InjectingService
{
    async fn create_certificate(
        &self,
        request: tonic::Request<mesh_hbone::ca_service::proto::CreateCertificateRequest>,
    ) -> Result<
        tonic::Response<mesh_hbone::ca_service::proto::CreateCertificateResponse>,
        tonic::Status,
    > {
        let body = request.into_inner();
        let identity: Identity = body
            .identity
            .parse()
            .map_err(|_| tonic::Status::invalid_argument("identity"))?;
        let issued = self
            .ca
            .sign_csr_der(&identity, &body.csr_der)
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        Ok(tonic::Response::new(
            mesh_hbone::ca_service::proto::CreateCertificateResponse {
                cert_chain_der: issued.chain.iter().map(|c| c.to_vec()).collect(),
                trust_bundle_der: self.roots.lock().expect("lock").clone(),
            },
        ))
    }
}

#[tokio::test]
async fn roots_from_the_ca_are_accepted_only_as_a_rotation_overlap() {
    use mesh_hbone::ca_service::proto::certificate_service_server::CertificateServiceServer;
    use mesh_hbone::ca_service::transport::tls_incoming;

    init_logging();
    let ca = Arc::new(CertificateAuthority::generate(CaConfig::new("cluster.local")).expect("CA"));
    let attacker = CertificateAuthority::generate(CaConfig::new("cluster.local")).expect("CA");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let serving = ServingCert::issue(
        ca.clone(),
        vec![ServingName::Ip(addr.ip())],
        std::time::Duration::from_secs(3600),
    )
    .expect("serving");
    let service = Arc::new(InjectingService {
        ca: ca.clone(),
        roots: Mutex::new(vec![attacker.root_certificate().to_vec()]),
    });
    let incoming = tls_incoming(
        listener,
        server_config(serving).expect("tls"),
        "test",
        Arc::new(HandshakeStats::default()),
    );
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(CertificateServiceServer::from_arc(service.clone()))
            .serve_with_incoming(incoming),
    );
    let pinned = TrustBundle::from_pem("cluster.local", &ca.trust_bundle().to_pem()).expect("pin");
    let agent =
        CaClient::lazy(&format!("https://{addr}"), pinned.clone(), "node-1", "t").expect("client");
    let (_key, csr) = new_key_and_csr(&id("web")).expect("csr");

    // A root with no overlap with the pinned one: refused, and so is the certificate with it.
    let err = timeout(STEP, agent.sign(&id("web"), &csr))
        .await
        .expect("bounded")
        .expect_err("injected root");
    assert!(err.0.contains("none of them trusted"), "{err}");
    assert_eq!(pinned.roots(), vec![ca.root_certificate()]);

    // The pinned root next to the injected one is an overlap: the set becomes the CA's.
    *service.roots.lock().expect("lock") = vec![
        ca.root_certificate().to_vec(),
        attacker.root_certificate().to_vec(),
    ];
    timeout(STEP, agent.sign(&id("web"), &csr))
        .await
        .expect("bounded")
        .expect("overlapping rotation accepted");
    assert_eq!(
        pinned.roots(),
        vec![ca.root_certificate(), attacker.root_certificate()]
    );

    // Then the CA drops the old root (end of the overlap): the client follows.
    *service.roots.lock().expect("lock") = vec![attacker.root_certificate().to_vec()];
    timeout(STEP, agent.sign(&id("web"), &csr))
        .await
        .expect("bounded")
        .expect("retirement accepted");
    assert_eq!(pinned.roots(), vec![attacker.root_certificate()]);
}

#[tokio::test]
async fn a_real_root_rotation_is_followed_through_the_trusted_channel() {
    let c = controller().await;
    let token = c.tokens.generate("node-1").expect("token");
    let agent = client(&c, "node-1", &token);
    let (_key, csr) = new_key_and_csr(&id("web")).expect("csr");
    let old_root = c.ca.root_certificate();
    timeout(STEP, agent.sign(&id("web"), &csr))
        .await
        .expect("bounded")
        .expect("before rotation");
    c.ca.rotate_root().expect("rotate");
    // The serving certificate still chains to the old root (it is renewed at half-life), and
    // the answer carries old and new: an overlap, accepted.
    let chain = timeout(STEP, agent.sign(&id("web"), &csr))
        .await
        .expect("bounded")
        .expect("after rotation");
    assert_eq!(
        agent.trust_bundle().roots(),
        vec![old_root, c.ca.root_certificate()]
    );
    let usage = mesh_hbone::tls::KeyUsage::client_auth();
    let verified = verify_chain(agent.trust_bundle(), &chain[0], &[], UnixTime::now(), usage);
    assert_eq!(
        verified,
        Ok(id("web")),
        "the new leaf verifies with the followed bundle"
    );
}
