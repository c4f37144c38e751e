//! mesh-waypoint: the L7 proxy of the ambient mesh. One process is one instance of a waypoint
//! (a Gateway of class `istio-waypoint`), running in its pod's network namespace: HBONE in on
//! 15008 from the agents, L7 authorization and routing, HBONE out to the chosen endpoint with the
//! waypoint's own identity. Configuration and certificate come from the controller, with the
//! waypoint's bootstrap credential.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use mesh_common::api::config::ClientKind;
use mesh_common::api::{ClientOptions, ConfigClient};
use mesh_hbone::ca::TrustBundle;
use mesh_hbone::ca_service::{CaClient, ControlPlaneTransport};
use mesh_hbone::certs::{CertManager, CertManagerConfig};
use mesh_hbone::hbone::{HboneClientConfig, HbonePool, HboneServer, HboneServerConfig};
use mesh_waypoint::config::Config;
use mesh_waypoint::inbound::WaypointHandler;
use mesh_waypoint::metrics::Metrics;
use mesh_waypoint::proxy::Shared;
use mesh_waypoint::state::State;
use mesh_waypoint::status::{self, Status};
use mesh_waypoint::trace::{Node, Tracer};
use mesh_waypoint::upstream::Upstreams;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

/// Pause between attempts at the first certificate.
const CERT_RETRY: Duration = Duration::from_secs(1);

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = Config::parse();
    let runtime = match config.worker_threads {
        0 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
    .context("starting the tokio runtime")?;
    runtime.block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    let instance = config.instance()?;
    let principal = instance.principal();
    let pem = std::fs::read_to_string(&config.ca_root_file).with_context(|| {
        format!(
            "reading the pinned roots --ca-root-file {}",
            config.ca_root_file.display()
        )
    })?;
    let bundle = TrustBundle::from_pem(&config.trust_domain, &pem)
        .with_context(|| format!("--ca-root-file {}", config.ca_root_file.display()))?;

    let signer = CaClient::lazy_with_token_file(
        &config.ca_addr,
        bundle.clone(),
        &principal,
        &config.ca_token_file,
    )
    .with_context(|| format!("--ca-addr {}", config.ca_addr))?;
    let certs = CertManager::new(Arc::new(signer), CertManagerConfig::default());

    let transport = ControlPlaneTransport::with_token_file(
        &config.controller_addr,
        bundle.clone(),
        &principal,
        &config.ca_token_file,
    )
    .with_context(|| format!("--controller-addr {}", config.controller_addr))?;
    let client_id = format!("{principal}/{}", std::process::id());
    let client = ConfigClient::spawn(ClientOptions::new(
        Arc::new(transport),
        &client_id,
        &principal,
        ClientKind::Waypoint,
    ));
    let state = State::new(instance.clone());
    tokio::spawn(state.clone().follow(client.subscribe()));

    {
        // The first certificate, retried until it comes; the manager renews it from then on.
        let certs = certs.clone();
        let identity = instance.identity.clone();
        tokio::spawn(async move {
            loop {
                match certs.get(&identity).await {
                    Ok(cert) => {
                        info!(%identity, not_after = ?cert.not_after(), "waypoint certificate issued");
                        return;
                    }
                    Err(e) => {
                        warn!(%identity, error = %e, "no waypoint certificate yet; retrying");
                        tokio::time::sleep(CERT_RETRY).await;
                    }
                }
            }
        });
    }

    let metrics = Arc::new(Metrics::default());
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let node = Node::waypoint(
        &instance.namespace,
        &instance.name,
        &config.trust_domain,
        config.pod_name.as_deref(),
        config.instance_ip,
    );
    let (tracer, spans) = Tracer::new(node, metrics.tracing.clone());
    tokio::spawn(mesh_waypoint::trace::export::run(
        spans,
        state.clone(),
        tracer.node().clone(),
        metrics.tracing.clone(),
    ));
    let pool = HbonePool::new(certs.clone(), bundle.clone(), HboneClientConfig::default());
    let shared = Arc::new(Shared::new(
        state.clone(),
        Upstreams::new(pool, instance.identity.clone()),
        metrics,
        tracer,
    ));
    tokio::spawn(mesh_waypoint::jwks_fetch::run(
        state.clone(),
        shared.upstreams.clone(),
    ));
    let tls = mesh_hbone::tls::server_config(certs.resolver(&instance.identity), bundle)
        .context("building the HBONE server TLS configuration")?;
    let listener = tokio::net::TcpListener::bind(config.hbone_addr)
        .await
        .with_context(|| format!("binding HBONE {}", config.hbone_addr))?;
    let server = HboneServer::new(
        listener,
        tls,
        WaypointHandler::new(shared),
        HboneServerConfig::default(),
    );
    let status_listener = tokio::net::TcpListener::bind(config.status_addr)
        .await
        .with_context(|| format!("binding the status port {}", config.status_addr))?;
    let status_task = tokio::spawn(status::serve(
        status_listener,
        Arc::new(Status {
            state,
            certs,
            registry,
        }),
    ));
    info!(waypoint = %config.waypoint, identity = %instance.identity, hbone = %config.hbone_addr, status = %config.status_addr, "waypoint started");

    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: draining"),
            _ = int.recv() => info!("SIGINT: draining"),
        }
    };
    server.serve(shutdown).await.context("HBONE server")?;
    status_task.abort();
    drop(client);
    info!("waypoint stopped");
    Ok(())
}
