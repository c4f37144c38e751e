//! Starting a whole controller: sources, config stream and admin endpoint, on given addresses.
//! Used by the binary and by the integration tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mesh_hbone::ca_service::{HandshakeStats, NodeAuthenticator};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::Admin;
use crate::controller::Controller;
use crate::metrics::CaMetrics;
use crate::server::{ConfigServer, Registry};
use crate::source::dir::{DirError, DirSource};
use crate::source::kube::KubeOptions;
use crate::translate::TranslateOptions;

/// Default port of the config stream (Istio's xDS port; TLS and node authentication here).
pub const DEFAULT_GRPC_PORT: u16 = mesh_common::api::CONTROLLER_PORT;
/// Default port of the admin endpoint (Istio's monitoring port).
pub const DEFAULT_ADMIN_PORT: u16 = 15014;

/// How the config stream is protected: TLS with the controller's serving certificate, and the
/// node authenticator of the certificate service. There is no plaintext option.
#[derive(Clone)]
pub struct ControlPlaneSecurity {
    /// The server configuration ([`mesh_hbone::tls::control::server_config`]).
    pub tls: Arc<rustls::ServerConfig>,
    /// Who may open a stream, and for which node.
    pub authenticator: Arc<dyn NodeAuthenticator>,
    /// Refused handshakes are counted here.
    pub handshakes: Arc<HandshakeStats>,
}

impl std::fmt::Debug for ControlPlaneSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlaneSecurity")
            .field("handshakes", &self.handshakes)
            .finish_non_exhaustive()
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// TLS and node authentication of the config stream.
    pub security: ControlPlaneSecurity,
    /// Directory of YAML to watch.
    pub config_dir: Option<PathBuf>,
    /// Watch the Kubernetes API (in-cluster or kubeconfig credentials).
    pub kubernetes: Option<KubeOptions>,
    /// Config stream address.
    pub grpc_addr: SocketAddr,
    /// Admin address.
    pub admin_addr: SocketAddr,
    /// Directory poll interval.
    pub poll_interval: Duration,
    /// Translation settings.
    pub translate: TranslateOptions,
}

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// I/O error.
        source: std::io::Error,
    },
    /// The configuration directory could not be read.
    #[error(transparent)]
    Dir(#[from] DirError),
    /// No Kubernetes client could be built.
    #[error("Kubernetes client: {0}")]
    Kube(#[from] kube::Error),
}

/// A running controller.
#[derive(Debug)]
pub struct Running {
    /// Bound config stream address.
    pub grpc_addr: SocketAddr,
    /// Bound admin address.
    pub admin_addr: SocketAddr,
    /// The core.
    pub controller: Arc<Controller>,
    /// Connected clients.
    pub registry: Arc<Registry>,
    /// The certificate authority's metrics, reported on the admin endpoint: the observer to
    /// give the certificate service (`CaService::with_observer`).
    pub ca_metrics: Arc<CaMetrics>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// Binds, loads the directory once (so the first clients get a complete config) and starts
/// every task on the current runtime.
pub async fn start(options: RunOptions) -> Result<Running, StartError> {
    let controller = Controller::new(options.translate.clone());
    let registry = Arc::new(Registry::default());
    let (shutdown, shutdown_rx) = watch::channel(false);
    let grpc = bind(options.grpc_addr).await?;
    let admin = bind(options.admin_addr).await?;
    let grpc_addr = grpc.local_addr().map_err(|source| StartError::Bind {
        addr: options.grpc_addr,
        source,
    })?;
    let admin_addr = admin.local_addr().map_err(|source| StartError::Bind {
        addr: options.admin_addr,
        source,
    })?;
    let mut tasks = Vec::new();
    if let Some(dir) = &options.config_dir {
        let mut source = DirSource::new(dir, controller.clone());
        source.scan()?;
        tasks.push(tokio::spawn(source.run(options.poll_interval)));
    }
    if let Some(kube_options) = options.kubernetes.clone() {
        let client = kube::Client::try_default().await?;
        tasks.push(tokio::spawn(crate::source::kube::run(
            client,
            controller.clone(),
            kube_options,
        )));
    }
    let server = ConfigServer::new(
        controller.clone(),
        registry.clone(),
        shutdown_rx,
        options.security.authenticator.clone(),
    );
    let tls = options.security.tls.clone();
    let handshakes = options.security.handshakes.clone();
    tasks.push(tokio::spawn(async move {
        if let Err(e) = server.serve(grpc, tls, handshakes).await {
            tracing::error!(error = %e, "config stream server");
        }
    }));
    let ca_metrics = Arc::new(CaMetrics::default());
    tasks.push(tokio::spawn(
        Admin::new(controller.clone(), registry.clone())
            .with_ca_metrics(ca_metrics.clone())
            .serve(admin),
    ));
    tracing::info!(%grpc_addr, %admin_addr, "controller started");
    Ok(Running {
        grpc_addr,
        admin_addr,
        controller,
        registry,
        ca_metrics,
        shutdown,
        tasks,
    })
}

impl Running {
    /// Ends every stream (clients see `unavailable` and keep their config) and stops all tasks.
    pub async fn shutdown(self) {
        self.shutdown.send_replace(true);
        // Give streams a moment to send their goodbye before the tasks are cut.
        tokio::time::sleep(Duration::from_millis(50)).await;
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
