//! One HTTP request through the waypoint: JWT authentication (a bad token is 401; its header
//! changes are made before routing reads the request), L7 authorization of the original source
//! and its token, the route decision, then the request sent on to the chosen endpoint and its
//! response streamed back (bodies are never buffered whole). Every answer the waypoint makes
//! itself (denied, no route, no endpoint, upstream failure) carries Envoy's status, body and
//! response flag. `Upgrade` requests (WebSocket) become a byte tunnel after the upstream's `101`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{HeaderValue, HOST, LOCATION};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use mesh_common::identity::Identity;
use mesh_common::model::PortProtocol;

use crate::balance::{Balancers, PickContext, Picked, TryOutcome};
use crate::error::ProxyError;
use crate::metrics::{Metrics, RequestLabels};
use crate::route::{Decision, RequestView};
use crate::state::State;
use crate::table::RouteTable;
use crate::upstream::{Protocol, UpstreamBody, Upstreams};

/// Body of a response sent downstream.
pub type ProxyBody = UpstreamBody;

/// What every request of the waypoint shares.
#[derive(Debug)]
pub struct Shared {
    /// The model.
    pub state: Arc<State>,
    /// Upstream connections.
    pub upstreams: Arc<Upstreams>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Endpoint choice and its per-backend state.
    pub balancers: Balancers,
}

/// The downstream connection a request came on (one HBONE CONNECT stream).
#[derive(Debug, Clone)]
pub struct Downstream {
    /// The original source's verified identity.
    pub peer: Identity,
    /// The source pod's address.
    pub remote: SocketAddr,
    /// The CONNECT authority: the destination the source asked for.
    pub authority: SocketAddr,
}

/// What the access log records of one request.
struct Outcome {
    response: Response<ProxyBody>,
    flag: &'static str,
    upstream: Option<SocketAddr>,
    route: Option<String>,
}

/// Answers one downstream request.
pub async fn handle(
    shared: Arc<Shared>,
    downstream: Arc<Downstream>,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let table = shared.state.table();
    let outcome = match forward(&shared, &table, &downstream, request).await {
        Ok(outcome) => outcome,
        Err(e) => {
            tracing::debug!(src = %downstream.peer, dst = %downstream.authority, error = %e, "request answered by the waypoint");
            Outcome {
                response: local_error(&e),
                flag: e.flag,
                upstream: None,
                route: None,
            }
        }
    };
    let status = outcome.response.status();
    record(&shared.metrics, status, outcome.flag);
    tracing::info!(
        src.identity = %downstream.peer,
        src.address = %downstream.remote.ip(),
        dst = %downstream.authority,
        %method,
        path,
        status = status.as_u16(),
        flags = outcome.flag,
        route = outcome.route.as_deref().unwrap_or("-"),
        upstream = %outcome.upstream.map_or_else(|| "-".to_owned(), |u| u.to_string()),
        duration_us = started.elapsed().as_micros() as u64,
        "request"
    );
    Ok(outcome.response)
}

async fn forward(
    shared: &Shared,
    table: &RouteTable,
    downstream: &Downstream,
    mut request: Request<Incoming>,
) -> Result<Outcome, ProxyError> {
    let target = table.target(downstream.authority).ok_or_else(|| {
        ProxyError::no_cluster(format!("{} is no longer in the mesh", downstream.authority))
    })?;
    let source = table.source_info(Some(downstream.peer.clone()), downstream.remote.ip());
    let authn = table.authenticate(&target, request.headers(), request.uri().query())?;
    authn.apply(request.headers_mut());
    let authority = request_authority(&request);
    let decision = {
        let view = RequestView {
            method: request.method(),
            path_and_query: request.uri().path_and_query().map_or("/", |p| p.as_str()),
            authority: &authority,
            headers: request.headers(),
            target: &target,
            source: &source,
            jwt: authn.jwt.as_ref(),
        };
        let authz = table.authorize(&view);
        if let Some(denied) = authz.error() {
            return Err(denied);
        }
        table.decide(&view)?
    };
    let forward = match decision {
        Decision::Direct { status, body } => {
            return Ok(Outcome {
                response: local(status, body, None),
                flag: "-",
                upstream: None,
                route: None,
            })
        }
        Decision::Redirect { status, location } => {
            return Ok(Outcome {
                response: local(status, String::new(), Some(location)),
                flag: "-",
                upstream: None,
                route: None,
            })
        }
        Decision::Forward(forward) => forward,
    };
    let picked = choose_endpoint(
        shared,
        table,
        &forward.backend,
        downstream,
        Some(request.headers()),
        request.uri().query(),
    )?;
    let endpoint = picked.endpoint.clone();
    let downstream_upgrade = is_upgrade(&request).then(|| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();
    crate::headers::forward_request(&mut parts.headers, downstream.remote.ip(), &mut || {
        fastrand::u64(..)
    });
    forward.apply_request(&mut parts);
    let protocol = upstream_protocol(table.backend_protocol(&forward.backend), parts.version);
    upstream_form(&mut parts, protocol, &authority)?;
    let request = Request::from_parts(parts, body.boxed());
    let mut response = match shared.upstreams.send(&endpoint, protocol, request).await {
        Ok(response) => response,
        Err(e) => {
            picked.report(TryOutcome::LocalOrigin);
            return Err(ProxyError::upstream_connect_failure(e.to_string()));
        }
    };
    picked.report(try_outcome(response.status()));
    if let Some(cookie) = &picked.set_cookie {
        response
            .headers_mut()
            .append(http::header::SET_COOKIE, cookie.clone());
    }
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(downstream_upgrade) = downstream_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(tunnel(downstream_upgrade, upstream_upgrade, endpoint.addr));
        }
    } else {
        crate::headers::strip_hop_by_hop(response.headers_mut(), false);
    }
    forward.apply_response(response.headers_mut());
    Ok(Outcome {
        response: response.map(|b| b.boxed()),
        flag: "-",
        upstream: Some(endpoint.addr),
        route: forward.route.as_deref().map(str::to_owned),
    })
}

/// The endpoint of `backend` a request or connection goes to (its first try).
pub(crate) fn choose_endpoint(
    shared: &Shared,
    table: &RouteTable,
    backend: &crate::route::Backend,
    downstream: &Downstream,
    headers: Option<&http::HeaderMap>,
    query: Option<&str>,
) -> Result<Picked, ProxyError> {
    // The source workload's locality (as `SourceInfo::locality`, without building it: it only
    // steers balancing).
    let unknown = mesh_common::model::Locality::default();
    let locality = table
        .workload_at(downstream.remote.ip())
        .map_or(&unknown, |w| &w.locality);
    let cx = PickContext {
        headers,
        query,
        source: downstream.remote.ip(),
        source_locality: locality,
        dialed: downstream.authority.ip(),
        tried: &[],
        remote_localities: false,
    };
    shared.balancers.pick(table, backend, &cx)
}

/// What a response status says of the endpoint that gave it.
pub(crate) fn try_outcome(status: StatusCode) -> TryOutcome {
    if status.is_server_error() {
        TryOutcome::Status(status.as_u16())
    } else {
        TryOutcome::Success
    }
}

/// The authority the client asked for: `:authority` (HTTP/2, absolute form) or `Host`.
fn request_authority<B>(request: &Request<B>) -> String {
    request
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            request
                .headers()
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

fn is_upgrade<B>(request: &Request<B>) -> bool {
    request.version() == Version::HTTP_11 && crate::headers::is_upgrade(request.headers())
}

/// The HTTP version to speak upstream: HTTP/2 for ports declared `http2`/`grpc`, HTTP/1.1 for
/// `http`, else the downstream's (Istio's `USE_DOWNSTREAM_PROTOCOL` for undeclared ports).
pub fn upstream_protocol(declared: Option<PortProtocol>, downstream: Version) -> Protocol {
    match declared {
        Some(PortProtocol::Http2 | PortProtocol::Grpc) => Protocol::Http2,
        Some(PortProtocol::Http) => Protocol::Http1,
        _ if downstream == Version::HTTP_2 => Protocol::Http2,
        _ => Protocol::Http1,
    }
}

/// Puts a request in the form `protocol` needs: HTTP/1.1 origin form with `Host`; HTTP/2 an
/// absolute URI whose authority is the one the client asked for (no `Host`).
pub fn upstream_form(
    parts: &mut http::request::Parts,
    protocol: Protocol,
    authority: &str,
) -> Result<(), ProxyError> {
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let authority = parts
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| authority.to_owned());
    match protocol {
        Protocol::Http1 => {
            parts.version = Version::HTTP_11;
            parts.uri = path
                .parse()
                .map_err(|_| ProxyError::bad_request(format!("path {path:?}")))?;
            if !authority.is_empty() && !parts.headers.contains_key(HOST) {
                let host = HeaderValue::from_str(&authority)
                    .map_err(|_| ProxyError::bad_request(format!("authority {authority:?}")))?;
                parts.headers.insert(HOST, host);
            }
        }
        Protocol::Http2 => {
            parts.version = Version::HTTP_2;
            let host = if authority.is_empty() {
                "localhost"
            } else {
                &authority
            };
            parts.uri = Uri::builder()
                .scheme("http")
                .authority(host)
                .path_and_query(path.as_str())
                .build()
                .map_err(|_| ProxyError::bad_request(format!("authority {host:?}")))?;
            parts.headers.remove(HOST);
        }
    }
    Ok(())
}

/// After both sides agreed to switch protocols, copies bytes both ways until either ends.
async fn tunnel(
    downstream: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    addr: SocketAddr,
) {
    let (down, up) = match tokio::join!(downstream, upstream) {
        (Ok(down), Ok(up)) => (down, up),
        (Err(e), _) | (_, Err(e)) => {
            tracing::debug!(upstream = %addr, error = %e, "upgrade failed");
            return;
        }
    };
    let mut down = hyper_util::rt::TokioIo::new(down);
    let mut up = hyper_util::rt::TokioIo::new(up);
    if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
        tracing::debug!(upstream = %addr, error = %e, "upgraded connection ended");
    }
}

/// A response the waypoint makes itself.
fn local(status: StatusCode, body: String, location: Option<String>) -> Response<ProxyBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    if let Some(location) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}

/// The answer to a request the waypoint could not send on.
fn local_error(e: &ProxyError) -> Response<ProxyBody> {
    let (status, body) = e.response_parts();
    let mut response = Response::new(full(body.to_owned()));
    *response.status_mut() = status;
    if !body.is_empty() {
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
    }
    response
}

fn full(body: String) -> ProxyBody {
    Full::new(Bytes::from(body))
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn record(metrics: &Metrics, status: StatusCode, flag: &'static str) {
    metrics
        .requests
        .get_or_create(&RequestLabels {
            response_code: status.as_u16(),
            response_flags: flag,
        })
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_protocol_follows_the_port_then_the_downstream() {
        #[rustfmt::skip]
        let cases = [
            (Some(PortProtocol::Grpc), Version::HTTP_11, Protocol::Http2),
            (Some(PortProtocol::Http2), Version::HTTP_11, Protocol::Http2),
            (Some(PortProtocol::Http), Version::HTTP_2, Protocol::Http1),
            (None, Version::HTTP_2, Protocol::Http2),
            (None, Version::HTTP_11, Protocol::Http1),
            (Some(PortProtocol::Unknown), Version::HTTP_2, Protocol::Http2),
        ];
        for (declared, downstream, want) in cases {
            assert_eq!(
                upstream_protocol(declared, downstream),
                want,
                "{declared:?} {downstream:?}"
            );
        }
    }

    #[test]
    fn upstream_forms() {
        // (protocol, request uri, host header, client authority, want uri, want host)
        type Case<'a> = (
            Protocol,
            &'a str,
            Option<&'a str>,
            &'a str,
            &'a str,
            Option<&'a str>,
        );
        #[rustfmt::skip]
        let cases: &[Case] = &[
            (Protocol::Http1, "/a?b=1", Some("reviews:9080"), "198.19.0.1:9080", "/a?b=1", Some("reviews:9080")),
            (Protocol::Http1, "http://reviews:9080/a", None, "reviews:9080", "/a", Some("reviews:9080")),
            (Protocol::Http2, "/a", Some("reviews:9080"), "198.19.0.1:9080", "http://reviews:9080/a", None),
            (Protocol::Http2, "http://reviews/x", None, "reviews", "http://reviews/x", None),
        ];
        for (protocol, uri, host, authority, want_uri, want_host) in cases {
            let mut builder = Request::builder().uri(*uri);
            if let Some(h) = host {
                builder = builder.header(HOST, *h);
            }
            let (mut parts, ()) = builder.body(()).expect("request").into_parts();
            upstream_form(&mut parts, *protocol, authority).expect("form");
            assert_eq!(parts.uri.to_string(), *want_uri, "{uri}");
            assert_eq!(
                parts.headers.get(HOST).and_then(|h| h.to_str().ok()),
                *want_host,
                "{uri}"
            );
        }
    }
}
