//! mesh-agent binary: loads the kernel programs and serves enrolment, proxies and admin.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use mesh_agent::admin::{self, Admin};
use mesh_agent::config::Config;
use mesh_agent::ebpf::Programs;
use mesh_agent::enrol;
use mesh_agent::fastpath::FastPath;
use mesh_agent::metrics::Metrics;
use mesh_agent::registry::Registry;
use mesh_agent::state::State;
use mesh_agent::tunnel::Tunnel;
use mesh_common::api::config::ClientKind;
use mesh_common::api::{ClientOptions, ConfigClient};
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
    let snapshot = match &config.local_config {
        Some(path) => State::load_file(path)?,
        None => Default::default(),
    };
    let state = Arc::new(State::new(snapshot.clone()));
    let config_client = config.controller_addr.as_ref().map(|addr| {
        let mut options = ClientOptions::new(
            addr,
            &format!("agent/{}", config.node),
            &config.node,
            ClientKind::Agent,
        );
        options.initial = config.local_config.is_some().then_some(snapshot);
        ConfigClient::spawn(options)
    });
    if let Some(client) = &config_client {
        let state = state.clone();
        let updates = client.subscribe();
        tokio::spawn(async move { state.follow(updates).await });
    }
    let programs = Arc::new(Programs::load()?);
    let loopback_attached = config.kernel_fast_path && attach_to_own_cgroup(&programs);
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
    let metrics = Arc::new(Metrics::default());
    let mut registry_metrics = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry_metrics);
    let tunnel = match (&config.ca_addr, &config.ca_token_file) {
        (Some(addr), Some(token)) => Some(Arc::new(Tunnel::new(
            addr,
            &config.node,
            token,
            &config.trust_domain,
        )?)),
        (None, None) => {
            tracing::warn!("no certificate service configured (--ca-addr): captured traffic is relayed in plaintext");
            None
        }
        _ => anyhow::bail!("--ca-addr and --ca-token-file go together"),
    };
    let registry = Arc::new(Registry::new(
        programs,
        state.clone(),
        config.trust_domain.clone(),
        metrics.clone(),
        tunnel.clone(),
        fastpath.clone(),
    ));

    let enrol_listener = enrol::bind(&config.enrol_socket).with_context(|| {
        format!(
            "binding the enrolment socket {}",
            config.enrol_socket.display()
        )
    })?;
    let admin_listener = admin::bind(config.admin_addr)
        .await
        .with_context(|| format!("binding the admin endpoint {}", config.admin_addr))?;
    info!(node = %config.node, enrol = %config.enrol_socket.display(), admin = %config.admin_addr, "agent ready");

    let enrol_task = tokio::spawn(enrol::serve(enrol_listener, registry.clone()));
    let metrics_listener = admin::bind(config.metrics_addr)
        .await
        .with_context(|| format!("binding the metrics endpoint {}", config.metrics_addr))?;
    let admin = Arc::new(Admin {
        registry: registry.clone(),
        state,
        config: config.clone(),
        registry_metrics,
        metrics,
        tunnel,
        fastpath,
    });
    let admin_task = tokio::spawn(admin::serve(admin_listener, admin.clone()));
    let metrics_task = tokio::spawn(admin::serve(metrics_listener, admin));

    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = int.recv() => info!("SIGINT: shutting down"),
    }
    enrol_task.abort();
    admin_task.abort();
    metrics_task.abort();
    registry.remove_all().await;
    let _ = std::fs::remove_file(&config.enrol_socket);
    info!("all pods detached; agent stopped");
    Ok(())
}

/// Attaches `sockops` to the agent's own cgroup for the loopback splice; false (with the reason
/// logged) when the agent is in the root cgroup or the attach fails: loopback legs then stay TCP.
fn attach_to_own_cgroup(programs: &Programs) -> bool {
    match mesh_agent::cgroup::own_cgroup() {
        Ok(Some(cgroup)) => match programs.attach_agent_cgroup(&cgroup) {
            Ok(()) => {
                info!(cgroup = %cgroup.display(), "sockops attached to the agent's cgroup: loopback legs can be spliced");
                true
            }
            Err(e) => {
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
