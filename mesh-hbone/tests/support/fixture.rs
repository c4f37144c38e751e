//! A mesh in one process on 127.0.0.1: a CA, certificate managers, an echo upstream, HBONE
//! servers and pools.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_hbone::ca::{CaConfig, CertificateAuthority, TrustBundle};
use mesh_hbone::certs::{new_key_and_csr, CertManager, CertManagerConfig, WorkloadCert};
use mesh_hbone::hbone::{
    ConnectHandler, HboneClientConfig, HbonePool, HboneServer, HboneServerConfig, ServerStats,
    TcpForwarder,
};
use mesh_hbone::{tls, Identity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Every test step is bounded by this.
pub const STEP: Duration = Duration::from_secs(10);

pub fn id(sa: &str) -> Identity {
    Identity::new("cluster.local", "default", sa)
}

/// Logs to the test output when RUST_LOG is set.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A CA and a certificate manager signing through it.
pub struct Mesh {
    pub ca: Arc<CertificateAuthority>,
    pub bundle: TrustBundle,
    pub certs: CertManager,
}

impl Mesh {
    pub fn new() -> Mesh {
        Mesh::with_leaf_lifetime(Duration::from_secs(24 * 3600))
    }

    pub fn with_leaf_lifetime(lifetime: Duration) -> Mesh {
        init_logging();
        let mut config = CaConfig::new("cluster.local");
        config.leaf_lifetime = lifetime;
        let ca = Arc::new(CertificateAuthority::generate(config).expect("CA"));
        let certs = CertManager::new(ca.clone(), CertManagerConfig::default());
        Mesh {
            bundle: ca.trust_bundle(),
            ca,
            certs,
        }
    }

    pub fn pool(&self, config: HboneClientConfig) -> HbonePool {
        HbonePool::new(self.certs.clone(), self.bundle.clone(), config)
    }

    /// Starts an HBONE server for `identity` on 127.0.0.1 (ephemeral port).
    pub async fn server<H: ConnectHandler>(
        &self,
        identity: &Identity,
        handler: H,
        config: HboneServerConfig,
    ) -> RunningServer {
        let addr = "127.0.0.1:0".parse().expect("addr");
        self.server_on(addr, identity, handler, config).await
    }

    /// Starts an HBONE server for `identity` with the default configuration, forwarding each
    /// CONNECT to its target over TCP.
    pub async fn forwarding_server(&self, identity: &Identity) -> RunningServer {
        self.server(
            identity,
            TcpForwarder::default(),
            HboneServerConfig::default(),
        )
        .await
    }

    /// Starts an HBONE server for `identity` on `addr`.
    pub async fn server_on<H: ConnectHandler>(
        &self,
        addr: SocketAddr,
        identity: &Identity,
        handler: H,
        config: HboneServerConfig,
    ) -> RunningServer {
        self.certs.get(identity).await.expect("server certificate");
        let tls = tls::server_config(self.certs.resolver(identity), self.bundle.clone())
            .expect("server TLS config");
        let listener = TcpListener::bind(addr).await.expect("bind");
        let server = HboneServer::new(listener, tls, handler, config);
        let addr = server.local_addr().expect("addr");
        let stats = server.stats();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .serve(async move {
                    let _ = stopped.await;
                })
                .await
                .expect("serve")
        });
        RunningServer {
            addr,
            stats,
            stop: Some(stop),
            task,
        }
    }
}

/// Issues a certificate with an explicit validity (past ones for the expiry tests).
pub fn issue(
    ca: &CertificateAuthority,
    who: &Identity,
    from: SystemTime,
    to: SystemTime,
) -> WorkloadCert {
    let (key, csr) = new_key_and_csr(who).expect("csr");
    let issued = ca
        .sign_csr_with_validity(who, &csr, from, to)
        .expect("sign");
    WorkloadCert::new(who, issued.chain, key).expect("workload cert")
}

pub struct RunningServer {
    pub addr: SocketAddr,
    pub stats: Arc<ServerStats>,
    stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<()>,
}

impl RunningServer {
    /// Asks the server to shut down (drain, then exit).
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A TCP echo server on 127.0.0.1.
pub async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = listener.local_addr().expect("echo addr");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// Writes `data` on `stream` and reads the same number of bytes back (an echo round trip).
pub async fn round_trip<S>(stream: &mut S, data: &[u8]) -> Vec<u8>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut r, mut w) = tokio::io::split(stream);
    let write = async {
        w.write_all(data).await.expect("write");
    };
    let read = async {
        let mut back = vec![0u8; data.len()];
        r.read_exact(&mut back).await.expect("read back");
        back
    };
    let ((), back) = tokio::time::timeout(STEP, async { tokio::join!(write, read) })
        .await
        .expect("round trip in time");
    back
}
