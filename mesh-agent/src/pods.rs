//! Enrolled pods: validation of what the pod registry announces, the capture decision, and the
//! per-pod listeners and kernel attachments.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mesh_common::identity::Identity;
use mesh_common::ports::{HBONE, INBOUND_PLAINTEXT, OUTBOUND_CAPTURE};
use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, NSFS_MAGIC};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;
use tracing::info;

use crate::ebpf::{AttachedProgram, PodAttachment, Programs};
use crate::fastpath::FastPath;
use crate::local::LocalPods;
use crate::metrics::Metrics;
use crate::netns::{Netns, NetnsError};
use crate::proxy;
use crate::state::State;
use crate::tunnel::Tunnel;
use mesh_common::model::Workload;
use mesh_hbone::hbone::{HboneServer, HboneServerConfig};

/// How long enrolment waits for a pod's first certificate before serving HBONE without one.
const FIRST_CERTIFICATE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The label that opts a namespace (or, overriding it, a pod) into the mesh.
pub const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";
/// The label value that opts in.
pub const DATAPLANE_MODE_AMBIENT: &str = "ambient";

/// A pod as the pod registry (or CNI plugin) announces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodInfo {
    /// Unique id, e.g. `<namespace>/<name>`.
    pub uid: String,
    /// Pod name.
    pub name: String,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Service account (identity).
    #[serde(default = "default_service_account")]
    pub service_account: String,
    /// Path of the pod's network namespace, e.g. `/var/run/netns/<name>`.
    pub netns: PathBuf,
    /// The pod's cgroup v2 directory.
    pub cgroup: PathBuf,
    /// Pod addresses.
    pub addresses: Vec<IpAddr>,
    /// Pod labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Labels of the pod's namespace.
    #[serde(default)]
    pub namespace_labels: BTreeMap<String, String>,
}

fn default_service_account() -> String {
    "default".to_owned()
}

impl PodInfo {
    /// Whether the pod is captured: its own `istio.io/dataplane-mode` label decides when present
    /// (`ambient` in, anything else such as `none` out), else its namespace's label.
    pub fn wants_capture(&self) -> bool {
        match self.labels.get(DATAPLANE_MODE_LABEL) {
            Some(mode) => mode == DATAPLANE_MODE_AMBIENT,
            None => {
                self.namespace_labels
                    .get(DATAPLANE_MODE_LABEL)
                    .map(String::as_str)
                    == Some(DATAPLANE_MODE_AMBIENT)
            }
        }
    }

    fn validate(&self) -> Result<(), EnrolError> {
        let invalid = |field: &'static str, reason: String| EnrolError::Invalid { field, reason };
        if self.uid.trim().is_empty() {
            return Err(invalid("uid", "must not be empty".into()));
        }
        if self.namespace.trim().is_empty() {
            return Err(invalid("namespace", "must not be empty".into()));
        }
        if self.addresses.is_empty() {
            return Err(invalid(
                "addresses",
                "a pod needs at least one address".into(),
            ));
        }
        if let Some(bad) = self
            .addresses
            .iter()
            .find(|a| a.is_loopback() || a.is_unspecified())
        {
            return Err(invalid("addresses", format!("{bad} is not a pod address")));
        }
        check_fs(&self.netns, NSFS_MAGIC, "netns", "a network namespace")?;
        check_fs(
            &self.cgroup,
            CGROUP2_SUPER_MAGIC,
            "cgroup",
            "a cgroup v2 directory",
        )?;
        Ok(())
    }
}

fn check_fs(
    path: &Path,
    magic: nix::sys::statfs::FsType,
    field: &'static str,
    what: &str,
) -> Result<(), EnrolError> {
    match statfs(path) {
        Ok(fs) if fs.filesystem_type() == magic => Ok(()),
        Ok(_) => Err(EnrolError::Invalid {
            field,
            reason: format!("{} is not {what}", path.display()),
        }),
        Err(e) => Err(EnrolError::Invalid {
            field,
            reason: format!("{}: {e}", path.display()),
        }),
    }
}

/// Errors of the enrolment operations.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    /// A field of the announced pod is invalid.
    #[error("invalid pod: field {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// No such pod.
    #[error("pod {0} is not known to this agent")]
    Unknown(String),
    /// Entering the pod's network namespace failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// Attaching the kernel programs failed.
    #[error(transparent)]
    Ebpf(#[from] crate::ebpf::EbpfError),
    /// The pod's HBONE server cannot be set up.
    #[error("HBONE server: {0}")]
    Tunnel(String),
}

/// What a proxy task needs to know about its pod.
#[derive(Debug)]
pub struct PodContext {
    /// The pod as announced.
    pub info: PodInfo,
    /// Its SPIFFE identity.
    pub identity: Identity,
    /// Its network namespace.
    pub netns: Arc<Netns>,
    /// The kernel programs and maps.
    pub programs: Arc<Programs>,
    /// The mesh model.
    pub state: Arc<State>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Certificates and HBONE pool (`None`: no certificate service configured, plaintext only).
    pub tunnel: Option<Arc<Tunnel>>,
    /// The node's other captured pods, for same-node delivery.
    pub local: Arc<LocalPods>,
    /// Same-node verdicts reused by the kernel.
    pub fastpath: Arc<FastPath>,
}

impl PodContext {
    /// The pod as a workload of the model (what policies select on): the control plane's view
    /// when it knows the pod, else what enrolment announced.
    pub fn workload(&self) -> Workload {
        if let Some(known) = self.state.workload(&self.info.uid) {
            return known;
        }
        Workload {
            uid: self.info.uid.clone(),
            name: self.info.name.clone(),
            namespace: self.info.namespace.clone(),
            service_account: self.info.service_account.clone(),
            node: String::new(),
            addresses: self.info.addresses.clone(),
            meshed: true,
            labels: self.info.labels.clone(),
            waypoint: None,
        }
    }
}

#[derive(Debug)]
struct Enrolled {
    info: PodInfo,
    attachment: Option<PodAttachment>,
    tasks: Vec<JoinHandle<()>>,
    /// Tells the pod's HBONE servers to stop accepting and drain.
    shutdown: Option<watch::Sender<bool>>,
    /// The HBONE servers, which end once drained.
    servers: Vec<JoinHandle<()>>,
    /// The pod's netns cookie, when captured (its fast-path verdicts are keyed by it).
    netns_cookie: Option<u64>,
}

/// A pod as the admin endpoint shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    /// Pod uid.
    pub uid: String,
    /// Whether the pod's traffic is captured.
    pub captured: bool,
    /// SPIFFE identity.
    pub identity: String,
    /// Pod addresses.
    pub addresses: Vec<IpAddr>,
    /// Network namespace path.
    pub netns: PathBuf,
    /// cgroup path.
    pub cgroup: PathBuf,
    /// Programs attached for the pod (empty when not captured).
    pub programs: Vec<AttachedProgram>,
}

/// All pods announced to this agent.
#[derive(Debug)]
pub struct Registry {
    programs: Arc<Programs>,
    state: Arc<State>,
    trust_domain: String,
    metrics: Arc<Metrics>,
    tunnel: Option<Arc<Tunnel>>,
    local: Arc<LocalPods>,
    fastpath: Arc<FastPath>,
    pods: Mutex<HashMap<String, Enrolled>>,
}

impl Registry {
    /// An empty registry.
    pub fn new(
        programs: Arc<Programs>,
        state: Arc<State>,
        trust_domain: String,
        metrics: Arc<Metrics>,
        tunnel: Option<Arc<Tunnel>>,
        fastpath: Arc<FastPath>,
    ) -> Registry {
        Registry {
            programs,
            state,
            trust_domain,
            metrics,
            tunnel,
            local: Arc::default(),
            fastpath,
            pods: Mutex::new(HashMap::new()),
        }
    }

    /// Adds (or replaces) a pod; returns whether it is captured.
    pub async fn add(&self, info: PodInfo) -> Result<bool, EnrolError> {
        info.validate()?;
        let mut pods = self.pods.lock().await;
        if let Some(existing) = pods.get(&info.uid) {
            if existing.info == info {
                return Ok(existing.attachment.is_some());
            }
        }
        if let Some(old) = pods.remove(&info.uid) {
            drop(self.teardown(old));
        }
        let captured = info.wants_capture();
        let enrolled = if captured {
            self.capture(info.clone()).await?
        } else {
            Enrolled {
                info: info.clone(),
                attachment: None,
                tasks: Vec::new(),
                shutdown: None,
                servers: Vec::new(),
                netns_cookie: None,
            }
        };
        info!(pod = %info.uid, captured, "pod added");
        pods.insert(info.uid.clone(), enrolled);
        self.update_gauge(&pods);
        Ok(captured)
    }

    async fn capture(&self, info: PodInfo) -> Result<Enrolled, EnrolError> {
        let netns = Arc::new(Netns::open(&info.netns)?);
        let outbound_v4 = netns
            .listen(SocketAddr::new(
                Ipv4Addr::LOCALHOST.into(),
                OUTBOUND_CAPTURE,
            ))
            .await?;
        let outbound_v6 = netns
            .listen(SocketAddr::new(
                Ipv6Addr::LOCALHOST.into(),
                OUTBOUND_CAPTURE,
            ))
            .await
            .ok();
        let inbound_v4 = netns
            .listen(SocketAddr::new(
                Ipv4Addr::UNSPECIFIED.into(),
                INBOUND_PLAINTEXT,
            ))
            .await?;
        let inbound_v6 = netns
            .listen(SocketAddr::new(
                Ipv6Addr::UNSPECIFIED.into(),
                INBOUND_PLAINTEXT,
            ))
            .await
            .ok();
        if info.addresses.iter().any(IpAddr::is_ipv6)
            && (outbound_v6.is_none() || inbound_v6.is_none())
        {
            tracing::warn!(pod = %info.uid, "pod has IPv6 addresses but IPv6 listeners failed; IPv6 is not captured");
        }
        let attachment = self.programs.attach_pod(
            &info.cgroup,
            netns.file(),
            &info.addresses,
            &inbound_v4,
            inbound_v6.as_ref(),
        )?;
        let ctx = Arc::new(PodContext {
            identity: Identity::new(&self.trust_domain, &info.namespace, &info.service_account),
            info: info.clone(),
            netns,
            programs: self.programs.clone(),
            state: self.state.clone(),
            metrics: self.metrics.clone(),
            tunnel: self.tunnel.clone(),
            local: self.local.clone(),
            fastpath: self.fastpath.clone(),
        });
        self.local.insert(&ctx);
        // A new same-node destination can change what earlier decisions would be now.
        self.fastpath.invalidate("pod added");
        let mut tasks = vec![
            tokio::spawn(proxy::outbound::serve(outbound_v4, ctx.clone())),
            tokio::spawn(proxy::inbound::serve(inbound_v4, ctx.clone())),
        ];
        if let Some(l) = outbound_v6 {
            tasks.push(tokio::spawn(proxy::outbound::serve(l, ctx.clone())));
        }
        if let Some(l) = inbound_v6 {
            tasks.push(tokio::spawn(proxy::inbound::serve(l, ctx.clone())));
        }
        let mut enrolled = Enrolled {
            info,
            attachment: Some(attachment),
            tasks,
            shutdown: None,
            servers: Vec::new(),
            netns_cookie: Some(ctx.netns.cookie()),
        };
        if let Err(e) = self.start_tunnel_servers(&ctx, &mut enrolled).await {
            self.teardown(enrolled);
            return Err(e);
        }
        Ok(enrolled)
    }

    /// Starts the pod's HBONE servers on 15008 (when the tunnel is configured) and fetches the
    /// pod's certificate in the background.
    async fn start_tunnel_servers(
        &self,
        ctx: &Arc<PodContext>,
        enrolled: &mut Enrolled,
    ) -> Result<(), EnrolError> {
        let Some(tunnel) = &self.tunnel else {
            return Ok(());
        };
        // Serve HBONE only with a certificate in hand, so the pod's first peers are not refused;
        // if the CA is slow or down, go on (the manager keeps retrying in the background).
        match tokio::time::timeout(FIRST_CERTIFICATE_WAIT, tunnel.certs.get(&ctx.identity)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(identity = %ctx.identity, error = %e, "no workload certificate yet (retrying)");
            }
            Err(_) => {
                tracing::warn!(identity = %ctx.identity, "no workload certificate after {FIRST_CERTIFICATE_WAIT:?} (retrying)");
            }
        }
        let tls = tunnel
            .server_tls(&ctx.identity)
            .map_err(|e| EnrolError::Tunnel(e.to_string()))?;
        let (shutdown, signal) = watch::channel(false);
        let mut addresses = vec![SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), HBONE)];
        if ctx.info.addresses.iter().any(IpAddr::is_ipv6) {
            addresses.push(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), HBONE));
        }
        for addr in addresses {
            let listener = ctx.netns.listen(addr).await?;
            let server = HboneServer::new(
                listener,
                tls.clone(),
                proxy::tunnel_inbound::InboundTunnel::new(ctx.clone()),
                HboneServerConfig::default(),
            );
            let mut signal = signal.clone();
            let uid = ctx.info.uid.clone();
            enrolled.servers.push(tokio::spawn(async move {
                let stop = async move {
                    let _ = signal.wait_for(|stop| *stop).await;
                };
                if let Err(e) = server.serve(stop).await {
                    tracing::warn!(pod = %uid, error = %e, "HBONE server ended");
                }
            }));
        }
        enrolled.shutdown = Some(shutdown);
        Ok(())
    }

    /// Removes a pod: detaches its programs and closes its listeners.
    pub async fn remove(&self, uid: &str) -> Result<(), EnrolError> {
        let mut pods = self.pods.lock().await;
        let removed = pods.remove(uid);
        self.update_gauge(&pods);
        drop(pods);
        let enrolled = removed.ok_or_else(|| EnrolError::Unknown(uid.to_owned()))?;
        drop(self.teardown(enrolled));
        info!(pod = %uid, "pod removed");
        Ok(())
    }

    fn update_gauge(&self, pods: &HashMap<String, Enrolled>) {
        let captured = pods.values().filter(|e| e.attachment.is_some()).count();
        self.metrics
            .enrolled_pods
            .set(i64::try_from(captured).unwrap_or(i64::MAX));
    }

    /// Detaches the pod's programs, closes its listeners and tells its HBONE servers to drain;
    /// returns the servers, which end once drained (bounded by their grace period).
    fn teardown(&self, enrolled: Enrolled) -> Vec<JoinHandle<()>> {
        if enrolled.attachment.is_some() {
            self.local.remove(&enrolled.info.addresses);
            self.fastpath.invalidate("pod removed");
        }
        if let Some(cookie) = enrolled.netns_cookie {
            self.fastpath.forget_source(cookie, &self.metrics);
        }
        for task in &enrolled.tasks {
            task.abort();
        }
        if let Some(shutdown) = &enrolled.shutdown {
            let _ = shutdown.send(true);
        }
        if let Some(attachment) = enrolled.attachment {
            self.programs.detach_pod(attachment);
        }
        enrolled.servers
    }

    /// Removes every pod (agent shutdown): stops accepting everywhere, then waits for in-flight
    /// HBONE streams to drain (each server cuts what is left after its grace period).
    pub async fn remove_all(&self) {
        let drained: Vec<Enrolled> = self.pods.lock().await.drain().map(|(_, e)| e).collect();
        let mut servers = Vec::new();
        for enrolled in drained {
            servers.extend(self.teardown(enrolled));
        }
        for server in servers {
            let _ = server.await;
        }
    }

    /// The pods, sorted by uid.
    pub async fn list(&self) -> Vec<PodStatus> {
        let pods = self.pods.lock().await;
        let mut list: Vec<PodStatus> = pods
            .values()
            .map(|e| PodStatus {
                uid: e.info.uid.clone(),
                captured: e.attachment.is_some(),
                identity: Identity::new(
                    &self.trust_domain,
                    &e.info.namespace,
                    &e.info.service_account,
                )
                .to_string(),
                addresses: e.info.addresses.clone(),
                netns: e.info.netns.clone(),
                cgroup: e.info.cgroup.clone(),
                programs: if e.attachment.is_some() {
                    Programs::describe(&e.info.cgroup, &e.info.netns)
                } else {
                    Vec::new()
                },
            })
            .collect();
        list.sort_by(|a, b| a.uid.cmp(&b.uid));
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns_label: Option<&str>, pod_label: Option<&str>) -> PodInfo {
        let mut info = PodInfo {
            uid: "default/a".into(),
            name: "a".into(),
            namespace: "default".into(),
            service_account: "default".into(),
            netns: "/nonexistent".into(),
            cgroup: "/nonexistent".into(),
            addresses: vec!["198.18.1.10".parse().expect("ip")],
            labels: BTreeMap::new(),
            namespace_labels: BTreeMap::new(),
        };
        if let Some(v) = ns_label {
            info.namespace_labels
                .insert(DATAPLANE_MODE_LABEL.into(), v.into());
        }
        if let Some(v) = pod_label {
            info.labels.insert(DATAPLANE_MODE_LABEL.into(), v.into());
        }
        info
    }

    #[test]
    fn capture_decision_pod_label_overrides_namespace() {
        let cases = [
            (None, None, false),
            (Some("ambient"), None, true),
            (Some("ambient"), Some("none"), false),
            (None, Some("ambient"), true),
            (Some("sidecar"), None, false),
        ];
        for (ns, p, want) in cases {
            assert_eq!(
                pod(ns, p).wants_capture(),
                want,
                "namespace {ns:?} pod {p:?}"
            );
        }
    }

    #[test]
    fn validation_names_the_field() {
        let mut p = pod(None, None);
        p.addresses = vec!["127.0.0.1".parse().expect("ip")];
        assert!(p
            .validate()
            .expect_err("loopback")
            .to_string()
            .contains("addresses"));
        let p = pod(None, None);
        let err = p.validate().expect_err("missing netns").to_string();
        assert!(
            err.contains("netns") && err.contains("/nonexistent"),
            "{err}"
        );
        let mut p = pod(None, None);
        p.netns = "/proc/self/ns/net".into();
        let err = p.validate().expect_err("missing cgroup").to_string();
        assert!(err.contains("field cgroup"), "{err}");
        let mut p = pod(None, None);
        p.netns = "/tmp".into();
        let err = p.validate().expect_err("not a netns").to_string();
        assert!(err.contains("is not a network namespace"), "{err}");
    }
}
