//! `cargo xtask bench`: L4 benchmarks of the mesh against direct traffic on the same topology.
//!
//! On a two-node local cluster, a meshed client/server pair and a direct (not captured) pair sit
//! on the same nodes; each case runs on both in the same run, alternating, several times, and
//! the medians are compared with the targets of issue 6. Cases: single- and 4-stream throughput
//! (iperf3), 64-byte ping-pong latency p50/p99 (`mesh-testapp pingpong`), HTTP/1.1 keep-alive
//! requests/s on 1 and 16 connections (wrk against `mesh-testapp http`), new connections/s from
//! one client (`mesh-testapp crr`), agent CPU per GB and per 10k requests, the same-node path,
//! and agent memory (idle, per enrolled pod, per idle tunnelled connection). Prints a markdown
//! table and writes JSON. See benches/README.md.
//!
//! The measurement runs from the release build: `run` builds nothing itself (main.rs builds
//! first) and executes `target/release/xtask bench-run`, whose `binary()` lookups then find the
//! release `mesh-agent`, `mesh-controller` and `mesh-testapp` beside it.

mod mesh;
mod report;
mod tools;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;

use report::{Case, Target};
use tools::{cpu_seconds, rss_kib, sum};

/// How long and how often each case runs.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Runs per case and side (median taken).
    reps: usize,
    /// Seconds per throughput, HTTP and new-connection run.
    seconds: u64,
    /// Exchanges per ping-pong run.
    pings: u32,
    /// Pods enrolled to measure memory per pod.
    idle_pods: u8,
    /// Idle tunnelled connections held to measure memory per connection.
    held: u32,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                reps: 3,
                seconds: 2,
                pings: 5_000,
                idle_pods: 20,
                held: 1_000,
            }
        } else {
            Plan {
                reps: 5,
                seconds: 5,
                pings: 20_000,
                idle_pods: 20,
                held: 1_000,
            }
        }
    }
}

/// The default JSON output.
pub fn default_json() -> PathBuf {
    crate::sh::root().join("benches/results/latest.json")
}

/// Runs the bench from the release build (which the caller has just built).
pub fn run(quick: bool, json_path: Option<&Path>) -> anyhow::Result<()> {
    let exe = crate::sh::root().join("target/release/xtask");
    if !exe.exists() {
        bail!(
            "{} is missing: build with `cargo build --workspace --bins --release`",
            exe.display()
        );
    }
    let json_path = json_path.map_or_else(default_json, Path::to_path_buf);
    let mut cmd = std::process::Command::new(&exe);
    cmd.arg("bench-run").arg("--json").arg(&json_path);
    if quick {
        cmd.arg("--quick");
    }
    eprintln!("+ {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("starting {}", exe.display()))?;
    if !status.success() {
        bail!("the bench failed ({status})");
    }
    Ok(())
}

/// Runs the bench in this process (the release xtask).
pub fn run_here(quick: bool, json_path: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let plan = Plan::new(quick);
    let mode = if quick { "quick" } else { "full" };
    let machine = machine();
    crate::sh::step(&format!(
        "bench ({mode}): {} runs per case, {} s each; machine {machine}",
        plan.reps, plan.seconds
    ));
    crate::sh::step(
        "local cluster: 2 nodes, meshed and direct client/server pods, controller, agents",
    );
    let bench = mesh::BenchMesh::start(plan.idle_pods)?;
    let result = measure(&bench, plan);
    let cases = match result {
        Ok(cases) => cases,
        Err(e) => {
            eprintln!("{}", bench.logs());
            return Err(e);
        }
    };
    drop(bench);
    let seconds = started.elapsed().as_secs_f64();

    let table = report::table(&cases);
    crate::sh::step(&format!(
        "results ({mode}, medians of {} runs, {seconds:.0} s in all)",
        plan.reps
    ));
    println!("{table}");
    let doc = report::json(&cases, &machine, mode, seconds);
    if let Some(dir) = json_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(json_path, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!("JSON written to {}", json_path.display());
    Ok(())
}

/// nproc, memory, kernel and load, as JSON.
fn machine() -> serde_json::Value {
    let out = |p: &str, a: &[&str]| {
        crate::sh::output(p, a)
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let mem_kib: f64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0.0);
    json!({
        "nproc": out("nproc", &[]),
        "memory_gib": (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "kernel": out("uname", &["-r"]),
        "loadavg_at_start": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    })
}

/// Which side of the comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Via {
    Direct,
    Mesh,
}

fn measure(bench: &mesh::BenchMesh, plan: Plan) -> anyhow::Result<Vec<Case>> {
    let pids = bench.agent_pids()?;
    let settle = || std::thread::sleep(Duration::from_secs(2));

    // Memory: idle agents (config applied, nothing enrolled, no traffic).
    settle();
    let mut rss_idle = Case::new(
        "agent_rss_idle",
        "agent RSS, idle (per agent)",
        "MiB",
        Target::None,
    );
    rss_idle.mesh = pids
        .iter()
        .map(|&p| rss_kib(p).map(|k| k / 1024.0))
        .collect::<anyhow::Result<_>>()?;

    crate::sh::step("enrolling the pods (meshed: captured; direct: not captured)");
    bench.enrol()?;
    for (side, label) in [(&bench.mesh, "mesh"), (&bench.direct, "direct")] {
        for server in [&side.remote, &side.local] {
            tools::wait_path(&side.client, server, Duration::from_secs(20))
                .with_context(|| format!("{label} path not ready"))?;
        }
    }

    // Memory per enrolled pod: node 1's agent before and after enrolling the idle pods.
    crate::sh::step(&format!("memory: enrolling {} idle pods", plan.idle_pods));
    settle();
    let before = rss_kib(pids[0])?;
    bench.enrol_idle()?;
    settle();
    settle();
    let mut per_pod = Case::new(
        "agent_rss_per_pod",
        "agent RSS per enrolled pod",
        "KiB",
        Target::None,
    );
    per_pod.mesh = vec![(rss_kib(pids[0])? - before) / f64::from(plan.idle_pods.max(1))];

    // Memory per idle tunnelled connection: both agents, around `held` connections held open.
    crate::sh::step(&format!(
        "memory: holding {} idle tunnelled connections",
        plan.held
    ));
    let before = sum(&pids, rss_kib)?;
    let hold = tools::Hold::open(&bench.mesh.client, &bench.mesh.remote, plan.held)?;
    settle();
    let during = sum(&pids, rss_kib)?;
    hold.release();
    let mut per_conn = Case::new(
        "agent_rss_per_idle_connection",
        "agent RSS per idle tunnelled connection (both agents)",
        "KiB",
        Target::AtMost(4.0),
    );
    per_conn.mesh = vec![(during - before) / f64::from(plan.held.max(1))];
    settle();

    let mut thr1 = Case::new(
        "throughput_1_stream",
        "2 nodes: throughput, 1 stream",
        "Gbit/s",
        Target::RatioAtLeast(0.3),
    );
    let mut thr4 = Case::new(
        "throughput_4_streams",
        "2 nodes: throughput, 4 streams",
        "Gbit/s",
        Target::None,
    );
    let mut p50 = Case::new(
        "latency_p50",
        "2 nodes: 64 B ping-pong round trip p50",
        "µs",
        Target::AddedAtMost(60.0),
    );
    let mut p99 = Case::new(
        "latency_p99",
        "2 nodes: 64 B ping-pong round trip p99",
        "µs",
        Target::None,
    );
    let mut http1 = Case::new(
        "http_rps_1_connection",
        "2 nodes: HTTP/1.1 keep-alive req/s, 1 connection",
        "req/s",
        Target::RatioAtLeast(0.6),
    );
    let mut http16 = Case::new(
        "http_rps_16_connections",
        "2 nodes: HTTP/1.1 keep-alive req/s, 16 connections",
        "req/s",
        Target::None,
    );
    let mut crr = Case::new(
        "new_connections_per_second",
        "2 nodes: new connections/s, 1 client",
        "conn/s",
        Target::RatioAtLeast(0.2),
    );
    let mut cpu_gb = Case::new(
        "agent_cpu_per_gb",
        "agent CPU per GB (1 stream, both agents)",
        "CPU s/GB",
        Target::None,
    );
    let mut cpu_req = Case::new(
        "agent_cpu_per_10k_requests",
        "agent CPU per 10k requests (16 connections, both agents)",
        "CPU s/10k",
        Target::None,
    );
    let mut relay = SameNodeRows::new(
        [
            "same_node_relay_throughput_1_stream",
            "same_node_relay_latency_p50",
            "same_node_relay_latency_p99",
            "same_node_relay_new_connections_per_second",
        ],
        [
            "same node, agent relay (fast path off): throughput, 1 stream",
            "same node, agent relay (fast path off): 64 B ping-pong p50",
            "same node, agent relay (fast path off): 64 B ping-pong p99",
            "same node, agent relay (fast path off): new connections/s",
        ],
    );
    let mut kernel = SameNodeRows::new(
        [
            "same_node_kernel_throughput_1_stream",
            "same_node_kernel_latency_p50",
            "same_node_kernel_latency_p99",
            "same_node_kernel_new_connections_per_second",
        ],
        [
            "same node, kernel fast path (default): throughput, 1 stream",
            "same node, kernel fast path (default): 64 B ping-pong p50",
            "same node, kernel fast path (default): 64 B ping-pong p99",
            "same node, kernel fast path (default): new connections/s",
        ],
    );
    let mut splice = SameNodeRows::new(
        [
            "same_node_splice_throughput_1_stream",
            "same_node_splice_latency_p50",
            "same_node_splice_latency_p99",
            "same_node_splice_new_connections_per_second",
        ],
        [
            "same node, kernel splice (opt-in): throughput, 1 stream",
            "same node, kernel splice (opt-in): 64 B ping-pong p50",
            "same node, kernel splice (opt-in): 64 B ping-pong p99",
            "same node, kernel splice (opt-in): new connections/s",
        ],
    );
    let mut splice_vs_loopback = Case::new(
        "same_node_splice_latency_p50_vs_loopback",
        "same node, kernel splice (opt-in): ping-pong p50 vs direct loopback TCP",
        "µs",
        Target::RatioAtMost(1.0),
    );
    let mut legs_p50 = Case::new(
        "latency_p50_loopback_legs_spliced",
        "2 nodes, loopback legs spliced (opt-in): 64 B ping-pong p50",
        "µs",
        Target::None,
    );
    let mut legs_http1 = Case::new(
        "http_rps_1_connection_loopback_legs_spliced",
        "2 nodes, loopback legs spliced (opt-in): HTTP/1.1 keep-alive req/s, 1 connection",
        "req/s",
        Target::None,
    );

    let secs = plan.seconds;
    for rep in 0..plan.reps {
        crate::sh::step(&format!("run {} of {}", rep + 1, plan.reps));
        // Alternate which side goes first, so a drift in machine load hits both alike.
        let order = if rep % 2 == 0 {
            [Via::Direct, Via::Mesh]
        } else {
            [Via::Mesh, Via::Direct]
        };
        for via in order {
            let side = match via {
                Via::Direct => &bench.direct,
                Via::Mesh => &bench.mesh,
            };
            let push = |case: &mut Case, value: f64| match via {
                Via::Direct => case.direct.push(value),
                Via::Mesh => case.mesh.push(value),
            };
            let tag = match via {
                Via::Direct => "direct",
                Via::Mesh => "mesh",
            };

            let cpu0 = sum(&pids, cpu_seconds)?;
            let t = tools::iperf(&side.client, &side.remote, secs, 1)?;
            let cpu = sum(&pids, cpu_seconds)? - cpu0;
            push(&mut thr1, t.gbits);
            if via == Via::Mesh {
                if cpu < 0.05 {
                    bail!("the agents used {cpu:.3} CPU s during a meshed iperf3 run: the traffic was not captured");
                }
                cpu_gb.mesh.push(cpu / (t.bytes / 1e9));
            }
            let t4 = tools::iperf(&side.client, &side.remote, secs, 4)?;
            push(&mut thr4, t4.gbits);

            let lat = tools::pingpong(&side.client, &side.remote, plan.pings, 64)?;
            push(&mut p50, lat.p50);
            push(&mut p99, lat.p99);

            let h1 = tools::wrk(&side.client, &side.remote, secs, 1)?;
            push(&mut http1, h1.rps);
            let cpu0 = sum(&pids, cpu_seconds)?;
            let h16 = tools::wrk(&side.client, &side.remote, secs, 16)?;
            let cpu = sum(&pids, cpu_seconds)? - cpu0;
            push(&mut http16, h16.rps);
            if via == Via::Mesh && h16.requests > 0.0 {
                cpu_req.mesh.push(cpu / (h16.requests / 1e4));
            }

            let c = tools::crr(&side.client, &side.remote, secs)?;
            push(&mut crr, c);

            // Same node. The direct side is measured once and is the baseline of the three mesh
            // variants: the agent's relay (fast path off), the kernel fast path (the default:
            // decided at connect, straight to the destination pod) and the kernel splice.
            let same_node = match via {
                Via::Direct => {
                    let m = SameNode::measure(&side.client, &side.local, secs, plan.pings)?;
                    for rows in [&mut relay, &mut kernel, &mut splice] {
                        rows.push_direct(&m);
                    }
                    let loopback = format!("127.0.0.1:{}", tools::LOOPBACK_ECHO_PORT);
                    let lo = tools::pingpong_to(&side.client, &loopback, plan.pings, 64)?;
                    splice_vs_loopback.direct.push(lo.p50);
                    legs_p50.direct.push(lat.p50);
                    legs_http1.direct.push(h1.rps);
                    m.summary()
                }
                Via::Mesh => {
                    bench.fast_path("enabled=false")?;
                    let r = SameNode::measure(&side.client, &side.local, secs, plan.pings)?;
                    relay.push_mesh(&r);
                    bench.fast_path("enabled=true")?;
                    // The agent decides the first connection to each port; the kernel the rest.
                    tools::pingpong(&side.client, &side.local, 1, 64)?;
                    let (decided, _) = bench.fast_path_counts()?;
                    let k = SameNode::measure(&side.client, &side.local, secs, plan.pings)?;
                    let (now, _) = bench.fast_path_counts()?;
                    if now <= decided {
                        bail!("no same-node connection was decided in the kernel: the fast path did not engage");
                    }
                    kernel.push_mesh(&k);
                    bench.fast_path("splice=true")?;
                    let (_, fallbacks_before) = bench.fast_path_counts()?;
                    let sp = SameNode::measure(&side.client, &side.local, secs, plan.pings)?;
                    splice.push_mesh(&sp);
                    splice_vs_loopback.mesh.push(sp.latency.p50);
                    let legs = tools::pingpong(&side.client, &side.remote, plan.pings, 64)?;
                    legs_p50.mesh.push(legs.p50);
                    legs_http1
                        .mesh
                        .push(tools::wrk(&side.client, &side.remote, secs, 1)?.rps);
                    let (_, fallbacks) = bench.fast_path_counts()?;
                    if fallbacks > fallbacks_before {
                        eprintln!(
                            "  note: {} spliced direction(s) stayed on TCP (first bytes before the peer joined)",
                            fallbacks - fallbacks_before
                        );
                    }
                    bench.fast_path("splice=false")?;
                    format!(
                        "relay {}, kernel {}, splice {}",
                        r.summary(),
                        k.summary(),
                        sp.summary()
                    )
                }
            };
            eprintln!(
                "  {tag:<6} 1-stream {:.2} Gbit/s, 4-stream {:.2} Gbit/s, p50 {:.1} µs p99 {:.1} µs, http {:.0}/{:.0} req/s, {:.0} conn/s; same node: {same_node}",
                t.gbits, t4.gbits, lat.p50, lat.p99, h1.rps, h16.rps, c
            );
        }
    }

    Ok(vec![
        thr1, thr4, p50, p99, http1, http16, crr, cpu_gb, cpu_req, legs_p50, legs_http1,
    ]
    .into_iter()
    .chain(relay.into_cases())
    .chain(kernel.into_cases())
    .chain(splice.into_cases())
    .chain([splice_vs_loopback, rss_idle, per_pod, per_conn])
    .collect())
}

/// One same-node measurement: throughput, ping-pong and connection rate from the client to the
/// server on its node.
#[derive(Debug)]
struct SameNode {
    throughput: tools::Throughput,
    latency: tools::Latency,
    connections_per_second: f64,
}

impl SameNode {
    fn measure(
        client: &mesh_tests::Pod,
        server: &mesh_tests::Pod,
        secs: u64,
        pings: u32,
    ) -> anyhow::Result<SameNode> {
        Ok(SameNode {
            throughput: tools::iperf(client, server, secs, 1)?,
            latency: tools::pingpong(client, server, pings, 64)?,
            connections_per_second: tools::crr(client, server, secs)?,
        })
    }

    fn summary(&self) -> String {
        format!(
            "{:.2} Gbit/s p50 {:.1} µs {:.0} conn/s",
            self.throughput.gbits, self.latency.p50, self.connections_per_second
        )
    }
}

/// The rows of one way of carrying same-node traffic.
struct SameNodeRows {
    throughput: Case,
    p50: Case,
    p99: Case,
    connections: Case,
}

impl SameNodeRows {
    fn new(keys: [&'static str; 4], labels: [&'static str; 4]) -> SameNodeRows {
        SameNodeRows {
            throughput: Case::new(keys[0], labels[0], "Gbit/s", Target::None),
            p50: Case::new(keys[1], labels[1], "µs", Target::None),
            p99: Case::new(keys[2], labels[2], "µs", Target::None),
            connections: Case::new(keys[3], labels[3], "conn/s", Target::None),
        }
    }

    fn push_direct(&mut self, m: &SameNode) {
        self.throughput.direct.push(m.throughput.gbits);
        self.p50.direct.push(m.latency.p50);
        self.p99.direct.push(m.latency.p99);
        self.connections.direct.push(m.connections_per_second);
    }

    fn push_mesh(&mut self, m: &SameNode) {
        self.throughput.mesh.push(m.throughput.gbits);
        self.p50.mesh.push(m.latency.p50);
        self.p99.mesh.push(m.latency.p99);
        self.connections.mesh.push(m.connections_per_second);
    }

    fn into_cases(self) -> [Case; 4] {
        [self.throughput, self.p50, self.p99, self.connections]
    }
}
