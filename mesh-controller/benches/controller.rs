//! Controller benchmarks for 1,000 and 10,000 workloads (10 pods per service, 10 namespaces,
//! 100 nodes, one AuthorizationPolicy per service):
//! - `translate`: store -> model;
//! - `publish_change`: one pod changes -> translate + encode + version + publish;
//! - `agent_view_incremental` / `agent_view_full`: one agent's view and the update it is sent;
//! - `change_to_client`: one pod changes -> a gRPC client on loopback has applied the update.
//!
//! Before the timings, the live heap of a loaded controller is printed (a counting allocator).
//! Figures are recorded in benches/README.md.

#[path = "../tests/support/pki.rs"]
#[allow(dead_code, reason = "the bench uses a part of the fixture")]
mod pki;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion};
use k8s_openapi::api::core::v1 as core;
use kube::api::ObjectMeta;
use mesh_common::api::config::ClientKind;
use mesh_common::api::{ClientOptions, ConfigClient};
use mesh_controller::controller::{Change, Controller};
use mesh_controller::load::Parsed;
use mesh_controller::object::Object;
use mesh_controller::resources::istio_security as sec;
use mesh_controller::run::{self, RunOptions};
use mesh_controller::server::view::view;
use mesh_controller::store::Store;
use mesh_controller::translate::{translate, TranslateOptions};
use pki::Pki;

/// Counts live heap bytes (`mesh_common::heap::live_bytes`).
#[global_allocator]
static ALLOCATOR: mesh_common::heap::Counting = mesh_common::heap::Counting;

const SIZES: [usize; 2] = [1_000, 10_000];

fn meta(name: &str, namespace: Option<&str>, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        ..ObjectMeta::default()
    }
}

fn pod(i: usize, generation: u8) -> Object {
    // The 10 pods of a service share its namespace.
    let ns = format!("ns-{}", (i / 10) % 10);
    let app = format!("svc-{}", i / 10);
    Object::Pod(core::Pod {
        metadata: meta(
            &format!("pod-{i}"),
            Some(&ns),
            &[("app", &app), ("gen", &generation.to_string())],
        ),
        spec: Some(core::PodSpec {
            node_name: Some(format!("node-{}", i % 100)),
            service_account_name: Some(app.clone()),
            ..core::PodSpec::default()
        }),
        status: Some(core::PodStatus {
            phase: Some("Running".to_owned()),
            pod_ip: Some(format!(
                "10.{}.{}.{}",
                (i >> 16) & 255,
                (i >> 8) & 255,
                i & 255
            )),
            ..core::PodStatus::default()
        }),
    })
}

/// The synthetic cluster as (origin, object) pairs.
fn cluster(workloads: usize) -> Vec<(String, Object)> {
    let mut objects = Vec::new();
    for n in 0..10 {
        objects.push(Object::Namespace(core::Namespace {
            metadata: meta(
                &format!("ns-{n}"),
                None,
                &[("istio.io/dataplane-mode", "ambient")],
            ),
            ..core::Namespace::default()
        }));
    }
    for i in 0..workloads {
        objects.push(pod(i, 0));
    }
    for s in 0..workloads / 10 {
        let ns = format!("ns-{}", s % 10);
        let app = format!("svc-{s}");
        objects.push(Object::Service(core::Service {
            metadata: meta(&app, Some(&ns), &[]),
            spec: Some(core::ServiceSpec {
                cluster_ip: Some(format!("10.96.{}.{}", (s >> 8) & 255, s & 255)),
                ports: Some(vec![core::ServicePort {
                    port: 8080,
                    ..core::ServicePort::default()
                }]),
                selector: Some(BTreeMap::from([("app".to_owned(), app.clone())])),
                ..core::ServiceSpec::default()
            }),
            ..core::Service::default()
        }));
        let mut policy = sec::AuthorizationPolicy::new(
            &app,
            sec::AuthorizationPolicySpec {
                selector: Some(mesh_controller::resources::WorkloadSelector {
                    match_labels: BTreeMap::from([("app".to_owned(), app.clone())]),
                }),
                ..sec::AuthorizationPolicySpec::default()
            },
        );
        policy.metadata.namespace = Some(ns);
        objects.push(Object::AuthorizationPolicy(policy));
    }
    objects
        .into_iter()
        .map(|o| ("bench".to_owned(), o))
        .collect()
}

fn loaded(workloads: usize) -> Arc<Controller> {
    let controller = Controller::new(TranslateOptions::default());
    let parsed = Parsed {
        objects: cluster(workloads),
        ..Parsed::default()
    };
    controller
        .apply(vec![Change::ReplaceUnit {
            unit: "bench".to_owned(),
            parsed,
        }])
        .expect("load");
    controller
}

fn change_pod(controller: &Controller, generation: u8) {
    controller
        .apply(vec![Change::Upsert {
            unit: "bench".to_owned(),
            origin: "bench".to_owned(),
            object: Box::new(pod(0, generation)),
        }])
        .expect("apply");
}

fn report_memory() {
    for n in SIZES {
        let before = mesh_common::heap::live_bytes();
        let start = Instant::now();
        let controller = loaded(n);
        let elapsed = start.elapsed();
        let after = mesh_common::heap::live_bytes();
        let published = controller.current();
        eprintln!(
            "memory/{n}: live heap {:.1} MiB for store + model + resources ({} resources, {:.1} MiB payload); initial load {:.0} ms",
            (after.saturating_sub(before)) as f64 / 1_048_576.0,
            published.resources.len(),
            published.resources.payload_bytes() as f64 / 1_048_576.0,
            elapsed.as_secs_f64() * 1e3,
        );
        drop(published);
        drop(controller);
    }
}

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("controller");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    for n in SIZES {
        let mut store = Store::new();
        for (origin, object) in cluster(n) {
            store.upsert("bench", &origin, object).expect("unique");
        }
        let options = TranslateOptions::default();
        group.bench_with_input(BenchmarkId::new("translate", n), &n, |b, _| {
            b.iter(|| translate(&store, &options))
        });

        let controller = loaded(n);
        let mut generation = 0u8;
        group.bench_with_input(BenchmarkId::new("publish_change", n), &n, |b, _| {
            b.iter(|| {
                generation = generation.wrapping_add(1);
                change_pod(&controller, generation);
            })
        });

        let before = controller.current();
        change_pod(&controller, generation.wrapping_add(1));
        let after = controller.current();
        let previous = view(
            &before.snapshot,
            &before.resources,
            ClientKind::Agent,
            "node-0",
        );
        group.bench_with_input(BenchmarkId::new("agent_view_incremental", n), &n, |b, _| {
            b.iter(|| {
                view(
                    &after.snapshot,
                    &after.resources,
                    ClientKind::Agent,
                    "node-0",
                )
                .diff(Some(&previous), &after.version)
            })
        });
        group.bench_with_input(BenchmarkId::new("agent_view_full", n), &n, |b, _| {
            b.iter(|| {
                view(
                    &after.snapshot,
                    &after.resources,
                    ClientKind::Agent,
                    "node-0",
                )
                .diff(None, &after.version)
            })
        });
        change_to_client(&mut group, n);
    }
    group.finish();
}

/// One pod changes; time until a real client on loopback has applied the new version.
fn change_to_client(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    n: usize,
) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // The config stream is TLS with node tokens, as in production.
    let pki = Pki::new(&["node-0"]);
    let running = runtime
        .block_on(run::start(RunOptions {
            security: pki.security(),
            config_dir: None,
            kubernetes: None,
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            poll_interval: Duration::from_secs(1),
            translate: TranslateOptions::default(),
        }))
        .expect("controller starts");
    let controller = running.controller.clone();
    controller
        .apply(vec![Change::ReplaceUnit {
            unit: "bench".to_owned(),
            parsed: Parsed {
                objects: cluster(n),
                ..Parsed::default()
            },
        }])
        .expect("load");
    let transport = pki.transport(running.grpc_addr, "node-0");
    let client = runtime.block_on(async {
        let client = ConfigClient::spawn(ClientOptions::new(
            transport,
            "bench",
            "node-0",
            ClientKind::Agent,
        ));
        let mut rx = client.subscribe();
        let version = controller.current().version.clone();
        let _ = tokio::time::timeout(
            Duration::from_secs(60),
            rx.wait_for(|s| s.version == version),
        )
        .await;
        client
    });
    let mut generation = 100u8;
    group.bench_with_input(BenchmarkId::new("change_to_client", n), &n, |b, _| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                let mut rx = client.subscribe();
                for _ in 0..iters {
                    generation = generation.wrapping_add(1);
                    let start = Instant::now();
                    change_pod(&controller, generation);
                    let version = controller.current().version.clone();
                    let _ = tokio::time::timeout(
                        Duration::from_secs(60),
                        rx.wait_for(|s| s.version == version),
                    )
                    .await;
                    total += start.elapsed();
                }
                total
            })
        })
    });
    drop(client);
    runtime.block_on(running.shutdown());
}

criterion_group!(controller_benches, benches);

fn main() {
    report_memory();
    controller_benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
