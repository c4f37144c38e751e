//! mesh-agent binary: loads the kernel programs and serves enrolment, proxies and admin.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use mesh_agent::admin::{self, Admin};
use mesh_agent::config::{Config, ControlPlane};
use mesh_agent::ebpf::Programs;
use mesh_agent::endpoints::check_admin_addr;
use mesh_agent::enrol;
use mesh_agent::fastpath::FastPath;
use mesh_agent::metrics::{HttpListener, Metrics};
use mesh_agent::readiness::{ConfigSource, Readiness};
use mesh_agent::registry::Registry;
use mesh_agent::state::State;
use mesh_agent::tunnel::Tunnel;
use mesh_common::api::config::ClientKind;
use mesh_common::api::{ClientOptions, ConfigClient};
use mesh_hbone::ca::TrustBundle;
use mesh_hbone::ca_service::ControlPlaneTransport;
use tokio::signal::unix::{signal, SignalKind};
use tracing::info;

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
    check_admin_addr(config.admin_addr)?;
    let snapshot = match &config.local_config {
        Some(path) => State::load_file(path)?,
        None => Default::default(),
    };
    let state = Arc::new(State::new(snapshot.clone()));
    let control_plane = config.control_plane()?;
    // The roots the node was installed with: the control plane must chain to them, and the CA's
    // rotations are accepted only through them (the same bundle verifies HBONE peers).
    let bundle = match &control_plane {
        Some(cp) => Some(pinned_roots(&cp.root_file, &config.trust_domain)?),
        None => None,
    };
    let config_client = match (&control_plane, &bundle) {
        (Some(cp), Some(bundle)) => match &cp.controller_addr {
            Some(addr) => {
                let transport = ControlPlaneTransport::with_token_file(
                    addr,
                    bundle.clone(),
                    &config.node,
                    &cp.token_file,
                )
                .with_context(|| format!("--controller-addr {addr}"))?;
                let mut options = ClientOptions::new(
                    Arc::new(transport),
                    &format!("agent/{}", config.node),
                    &config.node,
                    ClientKind::Agent,
                );
                options.initial = config.local_config.is_some().then_some(snapshot);
                Some(ConfigClient::spawn(options))
            }
            None => None,
        },
        _ => None,
    };
    if let Some(client) = &config_client {
        let state = state.clone();
        let updates = client.subscribe();
        tokio::spawn(async move { state.follow(updates).await });
    }
    let metrics = Arc::new(Metrics::default());
    let http_limits = config.http.limits();
    // Readiness listens first so the kubelet is told "not ready" (not "refused") while the
    // programs load and the config arrives.
    let readiness = Arc::new(Readiness::new(config_source(&config), state.clone()));
    let readiness_listener = admin::bind(config.readiness_addr)
        .await
        .with_context(|| format!("binding the readiness endpoint {}", config.readiness_addr))?;
    let readiness_task = tokio::spawn(admin::serve_readiness(
        readiness_listener,
        http_limits,
        metrics.http.listener(HttpListener::Readiness),
        readiness.clone(),
    ));
    let programs = Arc::new(Programs::load()?);
    readiness.set_programs_loaded();
    let loopback_attached = config.kernel_fast_path && attach_to_own_cgroup(&programs, &metrics);
    let fastpath = Arc::new(FastPath::new(
        programs.clone(),
        config.kernel_fast_path,
        config.kernel_splice,
        loopback_attached,
    ));
    {
        let fastpath = fastpath.clone();
        state.on_change(move || fastpath.invalidate("model updated"));
    }
    let mut registry_metrics = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry_metrics);
    if let Some(client) = &config_client {
        Metrics::register_config_stream(&mut registry_metrics, client.status_watch());
    }
    let tunnel = match (&control_plane, &bundle) {
        (
            Some(ControlPlane {
                ca_addr: Some(addr),
                token_file,
                ..
            }),
            Some(bundle),
        ) => Some(Arc::new(Tunnel::new(
            addr,
            &config.node,
            token_file,
            bundle.clone(),
        )?)),
        _ => {
            tracing::warn!("no certificate service configured (--ca-addr): captured traffic is relayed in plaintext");
            None
        }
    };
    let registry = Arc::new(Registry::new(
        programs,
        state.clone(),
        config.trust_domain.clone(),
        metrics.clone(),
        tunnel.clone(),
        fastpath.clone(),
    ));
    readiness.set_registry(registry.clone(), tunnel.clone());

    let enrol_listener = enrol::bind(&config.enrol_socket).with_context(|| {
        format!(
            "binding the enrolment socket {}",
            config.enrol_socket.display()
        )
    })?;
    let admin_listener = admin::bind(config.admin_addr)
        .await
        .with_context(|| format!("binding the admin endpoint {}", config.admin_addr))?;
    info!(node = %config.node, enrol = %config.enrol_socket.display(), admin = %config.admin_addr, metrics = %config.metrics_addr, readiness = %config.readiness_addr, "agent ready");

    let enrol_task = tokio::spawn(enrol::serve(enrol_listener, registry.clone()));
    let metrics_listener = admin::bind(config.metrics_addr)
        .await
        .with_context(|| format!("binding the metrics endpoint {}", config.metrics_addr))?;
    let admin_metrics = metrics.http.listener(HttpListener::Admin);
    let metrics_metrics = metrics.http.listener(HttpListener::Metrics);
    let admin = Arc::new(Admin {
        registry: registry.clone(),
        state,
        config: config.clone(),
        registry_metrics,
        metrics,
        tunnel,
        fastpath,
        readiness,
    });
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        http_limits,
        admin_metrics,
        admin.clone(),
    ));
    let metrics_task = tokio::spawn(admin::serve_metrics(
        metrics_listener,
        http_limits,
        metrics_metrics,
        admin,
    ));

    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = int.recv() => info!("SIGINT: shutting down"),
    }
    enrol_task.abort();
    admin_task.abort();
    metrics_task.abort();
    readiness_task.abort();
    registry.remove_all().await;
    let _ = std::fs::remove_file(&config.enrol_socket);
    info!("all pods detached; agent stopped");
    Ok(())
}

/// Where readiness waits for the configuration from.
fn config_source(config: &Config) -> ConfigSource {
    match (&config.local_config, &config.controller_addr) {
        (Some(_), _) => ConfigSource::LocalFile,
        (None, Some(addr)) => ConfigSource::Controller(addr.clone()),
        (None, None) => ConfigSource::None,
    }
}

/// The pinned roots: every CERTIFICATE block of `path`.
fn pinned_roots(path: &std::path::Path, trust_domain: &str) -> anyhow::Result<TrustBundle> {
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("reading the pinned roots --ca-root-file {}", path.display()))?;
    let bundle = TrustBundle::from_pem(trust_domain, &pem)
        .with_context(|| format!("--ca-root-file {}", path.display()))?;
    info!(file = %path.display(), roots = bundle.len(), "control plane trusted through the pinned roots");
    Ok(bundle)
}

/// Attaches `sockops` to the agent's own cgroup for the loopback splice; false (with the reason
/// logged, a failed attach counted) when the agent is in the root cgroup or the attach fails:
/// loopback legs then stay TCP.
fn attach_to_own_cgroup(programs: &Programs, metrics: &Metrics) -> bool {
    match mesh_agent::cgroup::own_cgroup() {
        Ok(Some(cgroup)) => match programs.attach_agent_cgroup(&cgroup) {
            Ok(()) => {
                info!(cgroup = %cgroup.display(), "sockops attached to the agent's cgroup: loopback legs can be spliced");
                true
            }
            Err(e) => {
                metrics.attach_failed(e.attach_program());
                tracing::warn!(error = %e, "loopback legs stay on TCP");
                false
            }
        },
        Ok(None) => {
            tracing::warn!("the agent runs in the root cgroup: loopback legs stay on TCP (run it in its own cgroup, as a pod does)");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "loopback legs stay on TCP");
            false
        }
    }
}
