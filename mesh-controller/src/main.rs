//! The control plane binary.
#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use mesh_controller::ca::{CaAuthFlags, CaAuthKind, ServiceAccount};
use mesh_controller::run::{
    self, ControlPlaneSecurity, RunOptions, DEFAULT_ADMIN_PORT, DEFAULT_GRPC_PORT,
};
use mesh_controller::source::kube::KubeOptions;
use mesh_controller::translate::TranslateOptions;
use mesh_hbone::ca_service::{HandshakeStats, NodeAuthenticator};
use mesh_hbone::tls::control::{self, ServingCert};

/// mesh-controller: turns Istio-style configuration into the data-plane model and streams it
/// to agents and waypoints.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Directory of YAML files to load and watch.
    #[arg(long, env = "MESH_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// Also watch the Kubernetes API (in-cluster or kubeconfig credentials).
    #[arg(long, env = "MESH_KUBERNETES")]
    kubernetes: bool,
    /// Config stream (gRPC over TLS) address. With TLS and node authentication, binding
    /// 0.0.0.0 is fine in Kubernetes; the local cluster binds the controller's own address.
    #[arg(long, env = "MESH_GRPC_ADDR", default_value_t = SocketAddr::from((Ipv4Addr::UNSPECIFIED, DEFAULT_GRPC_PORT)))]
    grpc_addr: SocketAddr,
    /// Admin (HTTP) address.
    #[arg(long, env = "MESH_ADMIN_ADDR", default_value_t = SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_ADMIN_PORT)))]
    admin_addr: SocketAddr,
    /// Directory poll interval in milliseconds.
    #[arg(long, env = "MESH_POLL_INTERVAL_MS", default_value_t = 1000)]
    poll_interval_ms: u64,
    /// Kubernetes cluster domain.
    #[arg(long, env = "MESH_CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// Certificate service (gRPC over TLS) address.
    #[arg(long, env = "MESH_CA_ADDR", default_value_t = SocketAddr::from((Ipv4Addr::UNSPECIFIED, mesh_controller::ca::DEFAULT_CA_PORT)))]
    ca_addr: SocketAddr,
    /// Directory of the CA root (`root-cert.pem`, `root-key.pem`); generated on first start.
    /// `root-cert.pem` is what agents pin (`--ca-root-file`; in Kubernetes a ConfigMap such as
    /// Istio's `istio-ca-root-cert`).
    #[arg(long, env = "MESH_CA_DIR", default_value = "/var/lib/mesh/ca")]
    ca_dir: PathBuf,
    /// How agents authenticate to the certificate service and the config stream: `tokens`
    /// (per-node bootstrap tokens, --bootstrap-tokens) or `kubernetes` (their service-account
    /// tokens, reviewed by the API server). Default: `tokens` with --bootstrap-tokens, else
    /// `kubernetes` with --kubernetes; one of them is required.
    #[arg(long, env = "MESH_CA_AUTH", value_name = "tokens|kubernetes")]
    ca_auth: Option<CaAuthKind>,
    /// File of `node=token` and `waypoint/<namespace>/<name>=token` lines: the agents and
    /// waypoints allowed to request certificates and open config streams (--ca-auth tokens).
    #[arg(long, env = "MESH_BOOTSTRAP_TOKENS")]
    bootstrap_tokens: Option<PathBuf>,
    /// Audience the agents' projected service-account tokens must carry (--ca-auth kubernetes;
    /// default `mesh-ca`).
    #[arg(long, env = "MESH_CA_TOKEN_AUDIENCE")]
    ca_token_audience: Option<String>,
    /// The agents' service account, `namespace/name` (--ca-auth kubernetes; default
    /// `mesh-system/mesh-agent`).
    #[arg(long, env = "MESH_AGENT_SERVICE_ACCOUNT", value_name = "NS/NAME")]
    agent_service_account: Option<ServiceAccount>,
    /// Seconds an accepted agent token is trusted before it is reviewed again (--ca-auth
    /// kubernetes; default 60, 0 reviews every request).
    #[arg(long, env = "MESH_CA_TOKEN_CACHE_SECS")]
    ca_token_cache_secs: Option<u64>,
    /// Lifetime of issued workload certificates, in seconds.
    #[arg(long, env = "MESH_CERT_LIFETIME_SECS", default_value_t = 24 * 3600)]
    cert_lifetime_secs: u64,
    /// Names (DNS names or IP addresses, comma-separated or repeated) of the control plane's
    /// serving certificate: what agents dial. Default: the host name and the specific listen
    /// addresses of --grpc-addr and --ca-addr.
    #[arg(long, env = "MESH_SERVING_SAN", value_delimiter = ',')]
    serving_san: Vec<String>,
    /// Lifetime of the serving certificate, in seconds; it is renewed at half-life.
    #[arg(long, env = "MESH_SERVING_CERT_LIFETIME_SECS", default_value_t = 24 * 3600)]
    serving_cert_lifetime_secs: u64,
    /// Namespace whose policies apply mesh-wide.
    #[arg(long, env = "MESH_ROOT_NAMESPACE", default_value = "istio-system")]
    root_namespace: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write the Istio CRDs generated from the controller's types.
    Crds {
        /// Output directory (default: print to stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Load a directory once, print every configuration error and exit non-zero if any.
    Validate {
        /// Directory of YAML files.
        dir: PathBuf,
    },
}

fn translate_options(args: &Args) -> TranslateOptions {
    TranslateOptions {
        cluster_domain: args.cluster_domain.clone(),
        root_namespace: args.root_namespace.clone(),
    }
}

fn ca_auth_flags(args: &Args) -> CaAuthFlags {
    CaAuthFlags {
        ca_auth: args.ca_auth,
        bootstrap_tokens: args.bootstrap_tokens.clone(),
        kubernetes: args.kubernetes,
        token_audience: args.ca_token_audience.clone(),
        agent_service_account: args.agent_service_account.clone(),
        token_cache_secs: args.ca_token_cache_secs,
    }
}

fn crds(out: Option<PathBuf>) -> anyhow::Result<()> {
    for (name, yaml) in mesh_controller::crd::istio_crds()? {
        match &out {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                let path = dir.join(&name);
                std::fs::write(&path, yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            None => print!("---\n{yaml}"),
        }
    }
    Ok(())
}

fn validate(args: &Args, dir: &std::path::Path) -> anyhow::Result<()> {
    let controller = mesh_controller::controller::Controller::new(translate_options(args));
    mesh_controller::source::dir::DirSource::new(dir, controller.clone()).scan()?;
    let current = controller.current();
    for e in current.errors.iter() {
        println!("{e}");
    }
    println!(
        "{} workloads, {} services, {} errors",
        current.snapshot.workloads.len(),
        current.snapshot.services.len(),
        current.errors.len()
    );
    anyhow::ensure!(current.errors.is_empty(), "configuration has errors");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match &args.command {
        Some(Command::Crds { out }) => return crds(out.clone()),
        Some(Command::Validate { dir }) => return validate(&args, dir),
        None => {}
    }
    anyhow::ensure!(
        args.config_dir.is_some() || args.kubernetes,
        "nothing to watch: give --config-dir and/or --kubernetes"
    );
    let ca_auth = ca_auth_flags(&args).resolve()?;
    let Some((authenticator, what)) = mesh_controller::ca::authenticator(&ca_auth).await? else {
        anyhow::bail!(
            "the control plane authenticates every node (certificates and config stream): give \
             --bootstrap-tokens <file> (local) or --kubernetes (TokenReview)"
        );
    };
    let authenticator: Arc<dyn NodeAuthenticator> = Arc::from(authenticator);
    let ca = mesh_controller::ca::load(
        &args.ca_dir,
        &args.cluster_domain,
        Duration::from_secs(args.cert_lifetime_secs),
    )?;
    let names = mesh_controller::ca::serving_names(
        &args.serving_san,
        mesh_controller::ca::serving::hostname().as_deref(),
        &[args.grpc_addr, args.ca_addr],
    )?;
    let serving = ServingCert::issue(
        ca.clone(),
        names,
        Duration::from_secs(args.serving_cert_lifetime_secs),
    )
    .context("issuing the control plane's serving certificate")?;
    tracing::info!(names = ?serving.names(), root = %args.ca_dir.join("root-cert.pem").display(), "control plane serves TLS");
    let renewal = tokio::spawn(serving.clone().keep_renewed(Duration::from_secs(30)));
    let tls = control::server_config(serving)?;
    let handshakes = Arc::new(HandshakeStats::default());
    let running = run::start(RunOptions {
        security: ControlPlaneSecurity {
            tls: tls.clone(),
            authenticator: authenticator.clone(),
            handshakes: handshakes.clone(),
        },
        config_dir: args.config_dir.clone(),
        kubernetes: args.kubernetes.then(KubeOptions::default),
        grpc_addr: args.grpc_addr,
        admin_addr: args.admin_addr,
        poll_interval: Duration::from_millis(args.poll_interval_ms),
        translate: translate_options(&args),
    })
    .await?;
    let service = mesh_controller::ca::service(ca, authenticator, running.controller.clone())
        .with_observer(running.ca_metrics.clone());
    let (ca_stop, ca_stopped) = tokio::sync::oneshot::channel::<()>();
    let listener = tokio::net::TcpListener::bind(args.ca_addr)
        .await
        .with_context(|| format!("binding the certificate service {}", args.ca_addr))?;
    tracing::info!(addr = %args.ca_addr, auth = %what, "certificate service started");
    let ca_task = tokio::spawn(mesh_hbone::ca_service::serve(
        listener,
        tls,
        handshakes,
        service,
        async {
            let _ = ca_stopped.await;
        },
    ));
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    let _ = ca_stop.send(());
    let _ = ca_task.await;
    renewal.abort();
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}
