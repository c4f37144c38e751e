//! One HTTP request through the waypoint: JWT authentication (a bad token is 401; its header
//! changes are made before routing reads the request), L7 authorization of the original source
//! and its token, the route decision, then the request sent on to the chosen endpoint and its
//! response streamed back (bodies are never buffered whole). Every answer the waypoint makes
//! itself (denied, no route, no endpoint, upstream failure) carries Envoy's status, body and
//! response flag. `Upgrade` requests (WebSocket) become a byte tunnel after the upstream's `101`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, HOST, LOCATION};
use http::{HeaderMap, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use mesh_common::identity::Identity;
use mesh_common::model::{Locality, PortProtocol, RouteRule};

use crate::balance::{Balancers, PickContext, Picked, TryOutcome};
use crate::error::ProxyError;
use crate::istio_request::{self, Counted, Recorded, RequestContext};
use crate::metrics::{Metrics, MirrorLabels, OverflowLabels, RequestLabels, RetryLabels};
use crate::pool_limits::{Destinations, Limits};
use crate::request_log::{self, Arrival, Outcome};
use crate::resilience::fault::{self, Abort};
use crate::resilience::mirror::{self, Mirrors};
use crate::resilience::replay::Replay;
use crate::resilience::retry::{self, TryResult};
use crate::resilience::timeout;
use crate::route::{Backend, Decision, RequestView};
use crate::state::State;
use crate::table::{RouteTable, Target};
use crate::trace::{ActiveSpan, RequestFacts, ResponseFacts, Tracer};
use crate::upstream::{Budget, Protocol, UpstreamBody, UpstreamError, Upstreams};
use mesh_common::access_log::Sinks;
use mesh_common::istio_metrics::RequestProtocol;
use std::sync::atomic::AtomicU64;

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
    /// Each destination's circuit-breaker counters and retry budget.
    pub destinations: Destinations,
    /// Shadow copies in flight.
    pub mirrors: Arc<Mirrors>,
    /// Access-log files and their writers.
    pub access_logs: Sinks,
    /// Request spans and their export queue.
    pub tracer: Tracer,
}

impl Shared {
    /// What the request path shares, with empty counters.
    pub fn new(
        state: Arc<State>,
        upstreams: Arc<Upstreams>,
        metrics: Arc<Metrics>,
        tracer: Tracer,
    ) -> Shared {
        Shared {
            state,
            upstreams,
            balancers: Balancers::new(&metrics),
            metrics,
            destinations: Destinations::default(),
            mirrors: Arc::default(),
            access_logs: Sinks::default(),
            tracer,
        }
    }
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

/// What the access log records of one request, filled in as it goes (also when it fails).
#[derive(Debug, Default)]
struct Trail {
    target: Option<crate::table::Target>,
    upstream: Option<SocketAddr>,
    route: Option<Arc<str>>,
    attempts: u32,
    delayed: bool,
    exhausted: bool,
    /// The request's span, when its destination is traced.
    span: Option<ActiveSpan>,
}

/// Answers one downstream request.
pub async fn handle(
    shared: Arc<Shared>,
    downstream: Arc<Downstream>,
    mut request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let grpc = timeout::is_grpc(request.headers());
    let table = shared.state.table();
    let first_line = method.as_str().len()
        + request
            .uri()
            .path_and_query()
            .map_or(1, |p| p.as_str().len())
        + 11;
    let request_head = istio_request::head_bytes(request.headers(), first_line);
    let cx = RequestContext {
        started,
        protocol: if grpc {
            RequestProtocol::Grpc
        } else {
            RequestProtocol::Http
        },
        request_bytes: Arc::new(AtomicU64::new(request_head)),
    };
    // The log reads the request as it arrived, with the `x-request-id` sent upstream.
    let arrival = table.label_index().logs_anywhere(&table).then(|| {
        crate::headers::ensure_request_id(request.headers_mut(), &mut || fastrand::u64(..));
        Arrival::capture(&request, request_head)
    });
    let request = request.map(|body| Counted::new(body, cx.request_bytes.clone()));
    let mut trail = Trail::default();
    let (response, base_flag) = match forward(&shared, &table, &downstream, request, &mut trail)
        .await
    {
        Ok(response) => (response, "-"),
        Err(e) => {
            tracing::debug!(src = %downstream.peer, dst = %downstream.authority, error = %e, "request answered by the waypoint");
            (local_error(&e, grpc), e.flag)
        }
    };
    let flag = crate::error::flags(base_flag, trail.delayed, trail.exhausted);
    let status = response.status();
    record(&shared.metrics, status, flag);
    let (mut labels, settings) = istio_request::request_labels(
        &table,
        &downstream.peer,
        downstream.remote.ip(),
        trail.target.as_ref(),
        trail.upstream,
        cx.protocol,
    );
    labels.response_code = Some(status.as_u16());
    labels.response_flags = flag;
    if grpc {
        labels.grpc_status = istio_request::grpc_status(response.headers());
    }
    let head = istio_request::head_bytes(response.headers(), 17);
    let log = match (arrival, &settings.access_log) {
        (Some(arrival), Some(_)) => Some((
            arrival,
            Outcome {
                status: status.as_u16(),
                flags: flag,
                route: trail.route.clone(),
                upstream: trail.upstream,
                attempts: trail.attempts,
                downstream_remote: downstream.remote,
                downstream_local: downstream.authority,
                response_head_bytes: head,
            },
        )),
        _ => None,
    };
    let span = trail.span.take();
    let shared_done = shared.clone();
    let on_done: istio_request::OnDone = Box::new(move |finished| {
        if grpc {
            labels.grpc_status = finished.grpc_status.or(labels.grpc_status);
        }
        shared_done
            .metrics
            .istio
            .request(&labels, &settings.metrics, &finished.done);
        if let (Some((arrival, outcome)), Some(access_log)) = (log, &settings.access_log) {
            let mut entry = request_log::entry(arrival, &outcome, &labels, &finished);
            // The trace the waypoint's span is in (a new one when the request had none).
            if let Some(span) = &span {
                entry.trace_id = Some(span.trace_id_hex());
            }
            access_log.write(&shared_done.access_logs, &entry, true);
        }
        if let Some(span) = span {
            let response = ResponseFacts {
                status: status.as_u16(),
                flags: flag,
                grpc_status: labels.grpc_status,
                request_size: finished.done.request_bytes.saturating_sub(request_head),
                response_size: finished.done.response_bytes.saturating_sub(head),
            };
            shared_done.tracer.finish(span, &response);
        }
    });
    let response = response.map(|body| Recorded::new(body, &cx, head, on_done).boxed());
    tracing::info!(
        src.identity = %downstream.peer,
        src.address = %downstream.remote.ip(),
        dst = %downstream.authority,
        %method,
        path,
        status = status.as_u16(),
        flags = flag,
        route = trail.route.as_deref().unwrap_or("-"),
        upstream = %trail.upstream.map_or_else(|| "-".to_owned(), |u| u.to_string()),
        attempts = trail.attempts,
        duration_us = started.elapsed().as_micros() as u64,
        "request"
    );
    Ok(response)
}

async fn forward(
    shared: &Arc<Shared>,
    table: &Arc<RouteTable>,
    downstream: &Downstream,
    mut request: Request<Counted<Incoming>>,
    trail: &mut Trail,
) -> Result<Response<ProxyBody>, ProxyError> {
    let target = table.target(downstream.authority).ok_or_else(|| {
        ProxyError::no_cluster(format!("{} is no longer in the mesh", downstream.authority))
    })?;
    trail.target = Some(target.clone());
    trail.span = start_span(shared, table, downstream, &target, &mut request);
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
        Decision::Direct { status, body } => return Ok(local(status, body, None)),
        Decision::Redirect { status, location } => {
            return Ok(local(status, String::new(), Some(location)))
        }
        Decision::Forward(forward) => forward,
    };
    trail.route = forward.route.clone();
    if let Some(span) = &mut trail.span {
        span.set_backend(&forward.backend);
    }
    let rule = forward.rule.as_deref();
    if let Some(f) = rule.and_then(|r| r.fault.as_ref()) {
        let injection = fault::decide(f, &mut || fastrand::f64());
        if let Some(delay) = injection.delay {
            trail.delayed = true;
            tokio::time::sleep(delay).await;
        }
        match injection.abort {
            Some(Abort::Http(status)) => {
                let status = StatusCode::from_u16(status)
                    .map_err(|_| ProxyError::internal("fault_filter_abort", "abort status"))?;
                return Err(ProxyError::fault_abort(status, None));
            }
            Some(Abort::Grpc(code)) => {
                return Err(ProxyError::fault_abort(StatusCode::OK, Some(code)))
            }
            None => {}
        }
    }
    let deadline = timeout::request_timeout(rule.and_then(|r| r.timeout_ms), request.headers())
        .map(|d| tokio::time::Instant::now() + d);
    let policy = forward.retry.clone();
    let downstream_upgrade = is_upgrade(&request).then(|| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();
    crate::headers::forward_request(&mut parts.headers, downstream.remote.ip(), &mut || {
        fastrand::u64(..)
    });
    if let Some(span) = &trail.span {
        span.inject(&mut parts.headers);
    }
    forward.apply_request(&mut parts);
    let protocol = upstream_protocol(table.backend_protocol(&forward.backend), parts.version);
    let mirror_parts = rule.filter(|r| !r.mirrors.is_empty()).map(|_| {
        (
            parts.method.clone(),
            parts.uri.clone(),
            parts.headers.clone(),
        )
    });
    upstream_form(&mut parts, protocol, &authority)?;
    let replay = (!body.is_end_stream()).then(|| Replay::new(body));
    if let (Some(r), Some(copy)) = (rule, &mirror_parts) {
        if replay.is_none() {
            send_mirrors(
                shared,
                table,
                downstream,
                r,
                &forward.backend,
                copy,
                &authority,
                None,
            );
        }
    }
    let destination = shared.destinations.get(&forward.backend);
    let limits = Limits::from_pool(table.connection_pool(&forward.backend));
    let _active = destination.budget.enter();
    // Kept for retries: the request head (the body is kept by `replay`).
    let head = (policy.retries > 0).then(|| {
        (
            parts.method.clone(),
            parts.uri.clone(),
            parts.version,
            parts.headers.clone(),
        )
    });
    let mut first = Some(parts);
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut _retry = None;
    let budget = Budget {
        limits: &limits,
        destination: &destination,
    };
    let (picked, response, request_slot) = loop {
        trail.attempts += 1;
        let n = trail.attempts;
        let picked = if n == 1 {
            choose_endpoint(
                shared,
                table,
                &forward.backend,
                downstream,
                first.as_ref().map(|p| &p.headers),
                first.as_ref().and_then(|p| p.uri.query()),
            )?
        } else {
            let cx = PickContext {
                headers: head.as_ref().map(|h| &h.3),
                query: head.as_ref().and_then(|h| h.1.query()),
                source: downstream.remote.ip(),
                source_locality: source_locality(table, downstream),
                dialed: downstream.authority.ip(),
                tried: &tried,
                remote_localities: policy.remote_localities,
            };
            shared.balancers.pick(table, &forward.backend, &cx)?
        };
        let endpoint = picked.endpoint.clone();
        trail.upstream = Some(endpoint.addr);
        let Some(request_slot) = destination.request(limits.max_requests) else {
            overflowed(shared, &forward.backend, "requests");
            return Err(ProxyError::overflow(format!(
                "{}: requests",
                forward.backend.host
            )));
        };
        let parts = match first.take() {
            Some(parts) => parts,
            None => {
                let Some((method, uri, version, headers)) = &head else {
                    return Err(ProxyError::internal("retry", "no request head kept"));
                };
                let (mut parts, ()) = Request::new(()).into_parts();
                parts.method = method.clone();
                parts.uri = uri.clone();
                parts.version = *version;
                parts.headers = headers.clone();
                parts
            }
        };
        let body = match &replay {
            None => Empty::new()
                .map_err(|never: Infallible| match never {})
                .boxed(),
            Some(r) => match r.body() {
                Ok(b) => b.boxed(),
                Err(why) => return Err(ProxyError::internal("retry", why)),
            },
        };
        let left = deadline.map(|d| d.saturating_duration_since(tokio::time::Instant::now()));
        if left == Some(Duration::ZERO) {
            return Err(ProxyError::timeout("route timeout before a try"));
        }
        let limit = timeout::try_timeout(policy.per_try_timeout, left);
        let send = shared.upstreams.send(
            &endpoint,
            protocol,
            Request::from_parts(parts, body),
            budget,
        );
        let sent = match limit {
            Some(t) => tokio::time::timeout(t, send).await.ok(),
            None => Some(send.await),
        };
        let (result, failure) = match sent {
            Some(Ok(response)) => {
                picked.report(try_outcome(response.status()));
                let result = TryResult::response(response.status(), response.headers());
                (result, Ok(response))
            }
            Some(Err(e)) => {
                picked.report(TryOutcome::LocalOrigin);
                match e {
                    UpstreamError::Overflow { kind, .. } => {
                        overflowed(shared, &forward.backend, kind);
                        return Err(ProxyError::overflow(e.to_string()));
                    }
                    UpstreamError::Connect { .. } | UpstreamError::ConnectTimeout(_) => (
                        TryResult::ConnectFailure,
                        Err(ProxyError::upstream_connect_failure(e.to_string())),
                    ),
                    UpstreamError::Reset { .. } if e.is_refused() => (
                        TryResult::RefusedStream,
                        Err(ProxyError::upstream_reset(e.to_string())),
                    ),
                    UpstreamError::Reset { .. } => (
                        TryResult::Reset,
                        Err(ProxyError::upstream_reset(e.to_string())),
                    ),
                }
            }
            None => {
                picked.report(TryOutcome::LocalOrigin);
                let whole = left.is_some_and(|l| limit.is_some_and(|t| t >= l));
                if whole {
                    return Err(ProxyError::timeout("route timeout"));
                }
                (
                    TryResult::PerTryTimeout,
                    Err(ProxyError::timeout("per-try timeout")),
                )
            }
        };
        let reason = retry::retry_reason(policy.on, &policy.statuses, result);
        let give_up = |trail: &mut Trail,
                       exhausted: bool,
                       failure: Result<Response<Incoming>, ProxyError>| {
            trail.exhausted = exhausted;
            failure
        };
        let Some(reason) = reason else {
            break (picked, give_up(trail, false, failure)?, request_slot);
        };
        if n > policy.retries {
            break (
                picked,
                give_up(trail, policy.retries > 0, failure)?,
                request_slot,
            );
        }
        if let Some(r) = &replay {
            if let Err(why) = r.body().map(drop) {
                tracing::info!(
                    route = trail.route.as_deref().unwrap_or("-"),
                    reason,
                    why,
                    "request not retried"
                );
                break (picked, give_up(trail, false, failure)?, request_slot);
            }
        }
        // The budget counts a retry from its backoff to the end of its try, as Envoy does.
        _retry = None;
        let Some(permit) = destination.budget.withdraw(limits.max_retries) else {
            overflowed(shared, &forward.backend, "retries");
            break (picked, give_up(trail, true, failure)?, request_slot);
        };
        _retry = Some(permit);
        shared
            .metrics
            .retries
            .get_or_create(&RetryLabels { reason })
            .inc();
        drop(failure);
        if policy.avoid_tried {
            tried.push(endpoint.addr);
        }
        drop(picked);
        drop(request_slot);
        let pause = retry::backoff(policy.backoff_base, n, fastrand::u64(..));
        match deadline {
            Some(d) if tokio::time::Instant::now() + pause >= d => {
                tokio::time::sleep_until(d).await;
                return Err(ProxyError::timeout("route timeout in the retry backoff"));
            }
            _ => tokio::time::sleep(pause).await,
        }
    };
    let mut response = response;
    if let (Some(r), Some(copy), Some(replay)) = (rule, &mirror_parts, &replay) {
        match replay.complete() {
            Some(body) => {
                send_mirrors(
                    shared,
                    table,
                    downstream,
                    r,
                    &forward.backend,
                    copy,
                    &authority,
                    Some(body),
                );
            }
            None => {
                shared
                    .metrics
                    .mirrors
                    .get_or_create(&MirrorLabels {
                        outcome: "body_not_kept",
                    })
                    .inc();
            }
        }
    }
    if let Some(cookie) = &picked.set_cookie {
        response
            .headers_mut()
            .append(http::header::SET_COOKIE, cookie.clone());
    }
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(downstream_upgrade) = downstream_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(tunnel(
                downstream_upgrade,
                upstream_upgrade,
                picked.endpoint.addr,
            ));
        }
    } else {
        crate::headers::strip_hop_by_hop(response.headers_mut(), false);
    }
    forward.apply_response(response.headers_mut());
    Ok(response.map(|body| {
        Held {
            body,
            _held: (picked, request_slot),
        }
        .boxed()
    }))
}

/// The span of a request to `target` when its `Telemetry` names a collector; the request gets
/// its `x-request-id` here then (as Envoy sets it before routing), so the span records it.
fn start_span<B>(
    shared: &Shared,
    table: &RouteTable,
    downstream: &Downstream,
    target: &Target,
    request: &mut Request<B>,
) -> Option<ActiveSpan> {
    let settings = table.trace_settings().settings(table, target);
    settings.provider.as_ref()?;
    crate::headers::ensure_request_id(request.headers_mut(), &mut || fastrand::u64(..));
    let authority = request.uri().authority().map_or_else(
        || {
            request
                .headers()
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("")
        },
        |a| a.as_str(),
    );
    let facts = RequestFacts {
        method: request.method(),
        authority,
        path: request.uri().path_and_query().map_or("/", |p| p.as_str()),
        version: request.version(),
        headers: request.headers(),
        peer: downstream.remote.ip(),
    };
    shared.tracer.start(&settings, target, &facts)
}

/// A response body holding what its try uses (the endpoint pick, the destination's request
/// slot) until the body ends or is dropped.
struct Held<B, H> {
    body: B,
    _held: H,
}

impl<B: Body + Unpin, H: Unpin> Body for Held<B, H> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

fn overflowed(shared: &Shared, backend: &Backend, kind: &'static str) {
    shared
        .metrics
        .overflow
        .get_or_create(&OverflowLabels {
            host: backend.host.clone(),
            kind,
        })
        .inc();
}

/// Sends a shadow copy of the request to each of the rule's mirrors that its percentage picks,
/// each in a detached task with its own timeout; the responses are discarded.
#[allow(clippy::too_many_arguments)]
fn send_mirrors(
    shared: &Arc<Shared>,
    table: &Arc<RouteTable>,
    downstream: &Downstream,
    rule: &RouteRule,
    primary: &Backend,
    (method, uri, headers): &(http::Method, Uri, HeaderMap),
    authority: &str,
    body: Option<(Bytes, Option<HeaderMap>)>,
) {
    let namespace = primary
        .service
        .as_ref()
        .map_or("default", |s| s.namespace.as_str());
    for m in &rule.mirrors {
        if !fault::hit(m.percentage, fastrand::f64()) {
            continue;
        }
        let Some(slot) = shared.mirrors.slot() else {
            shared
                .metrics
                .mirrors
                .get_or_create(&MirrorLabels { outcome: "dropped" })
                .inc();
            continue;
        };
        let host = crate::hosts::qualify(&m.destination.host, namespace, &Default::default());
        let backend = Backend {
            service: table
                .service_by_host(&host)
                .map(|s| crate::table::ServiceKey {
                    namespace: s.namespace.clone(),
                    name: s.name.clone(),
                }),
            host,
            workload: None,
            subset: m.destination.subset.clone(),
            port: m.destination.port.unwrap_or(primary.port),
        };
        let picked = match choose_endpoint(
            shared,
            table,
            &backend,
            downstream,
            Some(headers),
            uri.query(),
        ) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(mirror = backend.host, error = %e, "mirror not sent");
                shared
                    .metrics
                    .mirrors
                    .get_or_create(&MirrorLabels { outcome: "failed" })
                    .inc();
                continue;
            }
        };
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.method = method.clone();
        parts.uri = uri.clone();
        parts.headers = headers.clone();
        let shadow = mirror::shadow_authority(
            parts
                .headers
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or(authority),
        );
        if let Ok(v) = HeaderValue::from_str(&shadow) {
            parts.headers.insert(HOST, v);
        }
        let protocol = upstream_protocol(table.backend_protocol(&backend), Version::HTTP_11);
        if upstream_form(&mut parts, protocol, &shadow).is_err() {
            continue;
        }
        let body: UpstreamBody = match &body {
            None => Empty::new()
                .map_err(|never: Infallible| match never {})
                .boxed(),
            Some((bytes, _)) => Full::new(bytes.clone())
                .map_err(|never: Infallible| match never {})
                .boxed(),
        };
        let wait = rule
            .timeout_ms
            .map_or(mirror::DEFAULT_TIMEOUT, Duration::from_millis);
        let shared = shared.clone();
        let limits = Limits::from_pool(table.connection_pool(&backend));
        let destination = shared.destinations.get(&backend);
        tokio::spawn(async move {
            let _slot = slot;
            let budget = Budget {
                limits: &limits,
                destination: &destination,
            };
            let send = shared.upstreams.send(
                &picked.endpoint,
                protocol,
                Request::from_parts(parts, body),
                budget,
            );
            let outcome = match tokio::time::timeout(wait, async {
                let response = send.await?;
                picked.report(try_outcome(response.status()));
                // Read (and discard) the body so the connection can be reused.
                let _ = tokio::time::timeout(wait, response.into_body().collect()).await;
                Ok::<(), UpstreamError>(())
            })
            .await
            {
                Ok(Ok(())) => "sent",
                Ok(Err(_)) | Err(_) => {
                    picked.report(TryOutcome::LocalOrigin);
                    "failed"
                }
            };
            shared
                .metrics
                .mirrors
                .get_or_create(&MirrorLabels { outcome })
                .inc();
        });
    }
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
    let cx = PickContext {
        headers,
        query,
        source: downstream.remote.ip(),
        source_locality: source_locality(table, downstream),
        dialed: downstream.authority.ip(),
        tried: &[],
        remote_localities: false,
    };
    shared.balancers.pick(table, backend, &cx)
}

/// The source workload's locality (as `SourceInfo::locality`, without building it: it only
/// steers balancing); unknown when the source is not in the model.
fn source_locality<'t>(table: &'t RouteTable, downstream: &Downstream) -> &'t Locality {
    static UNKNOWN: Locality = Locality {
        region: String::new(),
        zone: String::new(),
        subzone: String::new(),
    };
    table
        .workload_at(downstream.remote.ip())
        .map_or(&UNKNOWN, |w| &w.locality)
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

/// The answer to a request the waypoint could not send on: Envoy's status and body, or for a
/// gRPC client (and an injected gRPC abort) HTTP 200 with `grpc-status` and `grpc-message`
/// in the headers (trailers-only).
fn local_error(e: &ProxyError, grpc: bool) -> Response<ProxyBody> {
    let (status, body) = e.response_parts();
    if grpc || e.grpc.is_some() && e.flag == "FI" {
        let mut response = Response::new(full(String::new()));
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", HeaderValue::from(e.grpc_status()));
        if let Ok(message) = HeaderValue::from_str(body) {
            if !body.is_empty() {
                headers.insert("grpc-message", message);
            }
        }
        return response;
    }
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
