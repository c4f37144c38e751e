//! Endpoint choice for one request or connection: the policy for the backend (load balancer,
//! outlier detection, locality), the endpoints tried before (retries), and what each try
//! showed. This first version picks at random among endpoints of the dialed address family and
//! keeps no state; the algorithms arrive with the resilience layers.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderValue};
use mesh_common::model::Locality;

use crate::error::ProxyError;
use crate::route::Backend;
use crate::table::RouteTable;
use crate::upstream::Endpoint;

/// What a pick may look at.
#[derive(Debug, Clone, Copy)]
pub struct PickContext<'a> {
    /// The request's headers (`None` for opaque TCP).
    pub headers: Option<&'a HeaderMap>,
    /// The request's query string, if any.
    pub query: Option<&'a str>,
    /// The original source's address.
    pub source: IpAddr,
    /// The source workload's locality (empty when unknown).
    pub source_locality: &'a Locality,
    /// The address the source dialed: endpoints of its family are preferred.
    pub dialed: IpAddr,
    /// Endpoints already tried for this request (retries avoid them when the policy says so).
    pub tried: &'a [SocketAddr],
    /// Whether a retry may leave the locality of the first try.
    pub remote_localities: bool,
}

/// How one try at an endpoint went, for outlier detection and least-request accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryOutcome {
    /// A response below 500 (or a stream that ended well).
    Success,
    /// A response status of 500 or more from the endpoint.
    Status(u16),
    /// A failure on the waypoint's side of the try: connect failure, reset, timeout.
    LocalOrigin,
}

/// Every backend's balancing state.
#[derive(Debug, Default)]
pub struct Balancers {}

/// A chosen endpoint; dropping it ends the try (least-request accounting).
#[derive(Debug)]
pub struct Picked {
    /// Where to send.
    pub endpoint: Endpoint,
    /// A `Set-Cookie` value to add to the response (consistent hashing on a cookie the request
    /// did not carry).
    pub set_cookie: Option<HeaderValue>,
}

impl Picked {
    /// Records how the try went.
    pub fn report(&self, _outcome: TryOutcome) {}
}

impl Balancers {
    /// Chooses an endpoint of `backend` for one try. No endpoint: 503 `UH`.
    pub fn pick(
        &self,
        table: &RouteTable,
        backend: &Backend,
        cx: &PickContext<'_>,
    ) -> Result<Picked, ProxyError> {
        let candidates = table.endpoints(backend)?;
        let fresh: Vec<_> = candidates
            .iter()
            .filter(|c| !cx.tried.contains(&c.addr))
            .cloned()
            .collect();
        let pool = if fresh.is_empty() {
            &candidates
        } else {
            &fresh
        };
        let chosen = crate::endpoints::pick_like(pool, cx.dialed, &mut || fastrand::u64(..))
            .ok_or_else(|| ProxyError::no_healthy_upstream("no endpoint to pick"))?;
        Ok(Picked {
            endpoint: Endpoint {
                addr: chosen.addr,
                identity: chosen.identity.clone(),
            },
            set_cookie: None,
        })
    }
}
