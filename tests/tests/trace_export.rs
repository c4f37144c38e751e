//! The waypoint's span export against the tests' real trace receivers, on loopback (no root):
//! a request span goes through the tracer's queue and the export task to an OTLP/gRPC, an
//! OTLP/HTTP and a Zipkin receiver, each with its ids, parent and attributes; a collector that
//! refuses or never answers costs the request path nothing (finishing spans never waits) and
//! what is lost is counted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::{HeaderMap, Method, Version};
use mesh_common::identity::Identity;
use mesh_common::model::{TraceProtocol, TraceProvider};
use mesh_tests::trace::{self, HttpKind, ReceivedSpan, SpanStore};
use mesh_waypoint::config::Instance;
use mesh_waypoint::state::State;
use mesh_waypoint::table::{ServiceKey, Target};
use mesh_waypoint::trace::settings::DEFAULT_MAX_TAG_LENGTH;
use mesh_waypoint::trace::tracer::{DropLabels, ExportLabels};
use mesh_waypoint::trace::{
    Node, RequestFacts, ResponseFacts, TraceMetrics, TraceSettings, Tracer,
};
use tokio::net::TcpListener;

fn provider(protocol: TraceProtocol, addr: SocketAddr) -> Arc<TraceSettings> {
    Arc::new(TraceSettings {
        provider: Some(Arc::new(TraceProvider {
            name: format!("{protocol:?}"),
            protocol,
            host: addr.ip().to_string(),
            port: addr.port(),
            path: String::new(),
            max_tag_length: 0,
        })),
        percentage: 100.0,
        max_tag_length: DEFAULT_MAX_TAG_LENGTH,
        custom_tags: Vec::new(),
    })
}

fn target() -> Target {
    Target::Service {
        service: ServiceKey {
            namespace: "apps".into(),
            name: "reviews".into(),
        },
        hostname: "reviews.apps.svc.cluster.local".into(),
        vip: "198.19.0.20".parse().expect("ip"),
        port: 9080,
    }
}

/// A tracer and its export task on this runtime (the model is empty: collectors by address).
fn tracer() -> (Tracer, TraceMetrics) {
    let instance = Instance {
        namespace: "apps".into(),
        name: "waypoint".into(),
        identity: Identity::new("cluster.local", "apps", "waypoint"),
    };
    let state = State::new(instance);
    let metrics = TraceMetrics::default();
    let node = Node::waypoint("apps", "waypoint", "cluster.local", None, None);
    let (tracer, spans) = Tracer::new(node, metrics.clone());
    tokio::spawn(mesh_waypoint::trace::export::run(
        spans,
        state,
        tracer.node().clone(),
        metrics.clone(),
    ));
    (tracer, metrics)
}

/// One request's span to `settings`' collector, child of `traceparent`.
fn one_span(tracer: &Tracer, settings: &Arc<TraceSettings>, traceparent: &str, status: u16) {
    let mut headers = HeaderMap::new();
    headers.insert("traceparent", traceparent.parse().expect("value"));
    headers.insert("x-request-id", "req-1".parse().expect("value"));
    let facts = RequestFacts {
        method: &Method::GET,
        authority: "reviews:9080",
        path: "/r",
        version: Version::HTTP_11,
        headers: &headers,
        peer: "198.18.1.2".parse().expect("ip"),
    };
    let span = tracer
        .start(settings, &target(), &facts)
        .expect("a collector is set");
    tracer.finish(
        span,
        &ResponseFacts {
            status,
            flags: "-",
            grpc_status: None,
            request_size: 0,
            response_size: 10,
        },
    );
}

fn dropped(metrics: &TraceMetrics, reason: &'static str) -> u64 {
    metrics.dropped.get_or_create(&DropLabels { reason }).get()
}

async fn wait_spans(store: &Arc<SpanStore>, n: usize) -> anyhow::Result<Vec<ReceivedSpan>> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.wait_for(Duration::from_secs(10), |s| s.len() >= n))
        .await?
}

#[tokio::test]
async fn spans_reach_real_receivers_in_each_format() -> anyhow::Result<()> {
    let store = Arc::new(SpanStore::default());
    let grpc = TcpListener::bind("127.0.0.1:0").await?;
    let http = TcpListener::bind("127.0.0.1:0").await?;
    let zipkin = TcpListener::bind("127.0.0.1:0").await?;
    let addrs = [grpc.local_addr()?, http.local_addr()?, zipkin.local_addr()?];
    let receivers = [
        tokio::spawn(trace::serve_otlp_grpc(grpc, store.clone())),
        tokio::spawn(trace::serve_http(HttpKind::Otlp, http, store.clone())),
        tokio::spawn(trace::serve_http(HttpKind::Zipkin, zipkin, store.clone())),
    ];
    let (tracer, metrics) = tracer();
    let cases = [
        (TraceProtocol::OtlpGrpc, addrs[0], "otlp-grpc", "otlp_grpc"),
        (TraceProtocol::OtlpHttp, addrs[1], "otlp-http", "otlp_http"),
        (TraceProtocol::Zipkin, addrs[2], "zipkin", "zipkin"),
    ];
    for (i, (protocol, addr, via, label)) in cases.into_iter().enumerate() {
        let trace_id = format!("{:032x}", 0xabc0 + i);
        let parent = format!("{:016x}", 0x100 + i);
        one_span(
            &tracer,
            &provider(protocol, addr),
            &format!("00-{trace_id}-{parent}-01"),
            503,
        );
        let spans = wait_spans(&store, i + 1).await?;
        let span = spans
            .iter()
            .find(|s| s.trace_id == trace_id)
            .ok_or_else(|| anyhow::anyhow!("no span for {via}: {spans:?}"))?;
        assert_eq!(span.via, via);
        assert_eq!(span.parent_span_id, parent, "{via}");
        assert_eq!(span.span_id.len(), 16, "{via}");
        assert_eq!(span.name, "reviews.apps.svc.cluster.local:9080/*", "{via}");
        assert_eq!(span.kind, "SERVER", "{via}");
        assert_eq!(span.service, "waypoint.apps", "{via}");
        assert!(span.error, "a 503 is an error: {via}");
        assert_eq!(span.attributes["http.status_code"], "503", "{via}");
        assert_eq!(span.attributes["guid:x-request-id"], "req-1", "{via}");
        assert_eq!(span.attributes["response_size"], "10", "{via}");
        assert_eq!(span.attributes["peer.address"], "198.18.1.2", "{via}");
        // Counted once the export returns (just after the receiver stored it).
        let counted = || {
            metrics
                .exported
                .get_or_create(&ExportLabels { protocol: label })
                .get()
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while counted() == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(counted(), 1, "{via}");
    }
    for r in receivers {
        r.abort();
    }
    Ok(())
}

/// Finishes `n` spans to `settings`' collector; how long that took.
fn finish_many(tracer: &Tracer, settings: &Arc<TraceSettings>, n: u64) -> Duration {
    let started = Instant::now();
    for i in 0..n {
        one_span(
            tracer,
            settings,
            &format!("00-{:032x}-{:016x}-01", i + 1, i + 1),
            200,
        );
    }
    started.elapsed()
}

/// Waits (at most `within`) until `done` holds for the metrics.
async fn wait_metrics(
    metrics: &TraceMetrics,
    within: Duration,
    done: impl Fn(u64, u64) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let (full, failed) = (
            dropped(metrics, "queue_full"),
            dropped(metrics, "export_failed"),
        );
        if done(full, failed) {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("queue_full {full}, export_failed {failed} after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_dead_or_silent_collector_never_holds_a_request() -> anyhow::Result<()> {
    let (tracer, metrics) = tracer();
    let n = 10_000u64;
    let capacity = mesh_waypoint::trace::tracer::QUEUE_CAPACITY as u64;

    // Refused: a port nothing listens on. Every span is accounted for: the queue's overflow at
    // once, the rest as their exports fail.
    let free = TcpListener::bind("127.0.0.1:0").await?;
    let refused = free.local_addr()?;
    drop(free);
    let took = finish_many(&tracer, &provider(TraceProtocol::OtlpGrpc, refused), n);
    assert!(took < Duration::from_secs(2), "{n} spans took {took:?}");
    assert_eq!(
        dropped(&metrics, "queue_full"),
        n - capacity,
        "bounded queue"
    );
    wait_metrics(&metrics, Duration::from_secs(20), |full, failed| {
        full + failed == n
    })
    .await?;

    // Silent: accepts and never answers. Finishing spans still never waits; an export gives up
    // after its bound and counts its batch.
    let silent = TcpListener::bind("127.0.0.1:0").await?;
    let silent_addr = silent.local_addr()?;
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let before_full = dropped(&metrics, "queue_full");
    let before_failed = dropped(&metrics, "export_failed");
    let took = finish_many(&tracer, &provider(TraceProtocol::Zipkin, silent_addr), n);
    assert!(took < Duration::from_secs(2), "{n} spans took {took:?}");
    assert!(
        dropped(&metrics, "queue_full") - before_full >= n - capacity,
        "the overflow dropped at once"
    );
    let started = Instant::now();
    wait_metrics(&metrics, Duration::from_secs(10), |_, failed| {
        failed > before_failed
    })
    .await?;
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "the first batch failed only at the export bound: {:?}",
        started.elapsed()
    );
    held.abort();
    Ok(())
}
