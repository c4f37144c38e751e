//! The Istio labels of a connection the agent carries, from the model: the source and
//! destination workloads and principals, the destination service, and whether the peers were
//! authenticated (`connection_security_policy`), with the `Telemetry` overrides of the pod the
//! agent serves, and the access-log entry the connection's end completes where a Telemetry
//! turns logging on for that pod.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use mesh_common::access_log::Entry;
use mesh_common::identity::Identity;
use mesh_common::istio_metrics::{
    IstioLabels, Peer, Reporter, RequestProtocol, Security, ServiceLabels, UNKNOWN,
};
use mesh_common::scope_telemetry::fill_identities;

use crate::metrics::{Conn, ConnLog, ConnectionLabels};
use crate::pod_context::PodContext;

/// The other end of a connection, as the agent knows it.
#[derive(Debug, Clone, Default)]
pub struct Remote {
    /// Its address.
    pub ip: Option<IpAddr>,
    /// Its authenticated (HBONE) or expected identity.
    pub identity: Option<Identity>,
}

/// The addresses of a connection, as the access log records them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ends {
    /// The client's address (`%DOWNSTREAM_REMOTE_ADDRESS%`).
    pub source: Option<SocketAddr>,
    /// The address the client dialed (`%DOWNSTREAM_LOCAL_ADDRESS%`).
    pub original: Option<SocketAddr>,
    /// The address the agent connected to (`%UPSTREAM_HOST%`).
    pub upstream: Option<SocketAddr>,
}

/// The series of an outbound connection (`reporter="source"`) from `pod` to `remote`, for the
/// service `service` (`namespace/name`, as [`crate::state::Resolved::service`]) when one was
/// dialed.
pub fn outbound(
    pod: &PodContext,
    labels: ConnectionLabels,
    remote: &Remote,
    service: Option<&str>,
    security: Security,
    ends: Ends,
) -> Conn {
    let source = own_peer(pod);
    let service = match service {
        Some(key) => pod.state.service_labels(key),
        None => remote
            .ip
            .map(|ip| Arc::new(ServiceLabels::address(&ip.to_string()))),
    }
    .unwrap_or_else(ServiceLabels::unknown);
    let istio = IstioLabels::new(
        Reporter::Source,
        (source, Arc::from(pod.identity.to_string())),
        remote_peer(pod, remote),
        service,
        RequestProtocol::Tcp,
        security,
    );
    conn(pod, labels, &istio, ends)
}

/// The series of an inbound connection (`reporter="destination"`) into `pod` on `port`.
pub fn inbound(
    pod: &PodContext,
    labels: ConnectionLabels,
    remote: &Remote,
    port: u16,
    security: Security,
    ends: Ends,
) -> Conn {
    let service = pod
        .state
        .service_of(&pod.info.uid, port)
        .unwrap_or_else(ServiceLabels::unknown);
    let istio = IstioLabels::new(
        Reporter::Destination,
        remote_peer(pod, remote),
        (own_peer(pod), Arc::from(pod.identity.to_string())),
        service,
        RequestProtocol::Tcp,
        security,
    );
    conn(pod, labels, &istio, ends)
}

fn conn(pod: &PodContext, labels: ConnectionLabels, istio: &IstioLabels, ends: Ends) -> Conn {
    let settings = pod.state.telemetry(&pod.info.uid, &pod.info.namespace);
    let log = settings.access_log.is_some().then(|| {
        let mut entry = Entry {
            start_time: Some(SystemTime::now()),
            response_code: Some(0),
            response_flags: "-".to_owned(),
            downstream_remote_address: ends.source,
            downstream_local_address: ends.original,
            upstream_host: ends.upstream,
            attempts: u32::from(ends.upstream.is_some()),
            ..Entry::default()
        };
        fill_identities(&mut entry, istio, ends.original.map(|a| a.port()));
        Box::new(ConnLog {
            entry,
            started: Instant::now(),
            mtls: istio.security == Security::MutualTls,
            settings: settings.clone(),
        })
    });
    Conn {
        labels,
        istio: pod.metrics.istio.tcp(istio, &settings.metrics),
        log,
    }
}

fn own_peer(pod: &PodContext) -> Arc<Peer> {
    pod.state
        .peer(&pod.info.uid)
        .unwrap_or_else(|| Arc::new(Peer::of(&pod.announced())))
}

/// The labels and principal of the other end: the model's workload at its address, the
/// principal it authenticated with (else the workload's identity, else `unknown`).
fn remote_peer(pod: &PodContext, remote: &Remote) -> (Arc<Peer>, Arc<str>) {
    let found = remote.ip.and_then(|ip| pod.state.peer_at(ip));
    let principal = match (&remote.identity, &found) {
        (Some(id), _) => id.to_string(),
        (None, Some((_, w))) if w.meshed => w.identity(&pod.identity.trust_domain).to_string(),
        _ => UNKNOWN.to_owned(),
    };
    let peer = found.map_or_else(Peer::unknown, |(p, _)| p);
    (peer, Arc::from(principal))
}

/// The remote end of an outbound connection to `target`.
pub fn remote(target: SocketAddr, identity: Option<&Identity>) -> Remote {
    Remote {
        ip: Some(target.ip()),
        identity: identity.cloned(),
    }
}
