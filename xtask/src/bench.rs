//! `cargo xtask bench`: L4 benchmarks of the mesh against direct traffic on the same topology.
//!
//! On a two-node local cluster, a meshed client/server pair and a direct (not captured) pair sit
//! on the same nodes; each case runs on both in the same run, alternating, several times. The
//! direct baseline is bimodal on this machine kind, so each run's mode is probed (`mode`) and
//! the targets of issue 6 are judged per mode, mesh against the same runs' baseline; a case
//! whose client reported errors is failed and shows no figure (`report`). Cases: single- and
//! 4-stream throughput (iperf3), 64-byte ping-pong latency p50/p99 (`mesh-testapp pingpong`),
//! HTTP/1.1 keep-alive requests/s on 1 and 16 connections (wrk against `mesh-testapp http`), new
//! connections/s from one client (`mesh-testapp crr`), agent CPU per GB and per 10k requests,
//! the same-node path, and agent memory (idle, per enrolled pod, per idle tunnelled connection).
//! Prints markdown tables and writes JSON. See benches/README.md.
//!
//! The measurement runs from the release build: `run` builds nothing itself (main.rs builds
//! first) and executes `target/release/xtask bench-run`, whose `binary()` lookups then find the
//! release `mesh-agent`, `mesh-controller` and `mesh-testapp` beside it.

mod clients;
mod l7;
mod l7_mesh;
mod mesh;
mod mode;
mod proxies;
mod report;
mod tools;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;

use mode::RunMode;
use report::{Case, Target, Via};
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

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Fewer and shorter runs.
    pub quick: bool,
    /// Only the waypoint rows (issue 11), not the L4 rows.
    pub waypoint_only: bool,
}

/// Runs the bench from the release build (which the caller has just built).
pub fn run(options: Options, json_path: Option<&Path>) -> anyhow::Result<()> {
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
    if options.quick {
        cmd.arg("--quick");
    }
    if options.waypoint_only {
        cmd.arg("--waypoint-only");
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

/// Runs the bench in this process (the release xtask): the L4 rows (unless waypoint-only), then
/// the waypoint rows on a cluster of their own.
pub fn run_here(options: Options, json_path: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let plan = Plan::new(options.quick);
    let mode = if options.quick { "quick" } else { "full" };
    let machine = machine();
    crate::sh::step(&format!(
        "bench ({mode}{}): {} runs per case, {} s each; machine {machine}",
        if options.waypoint_only {
            ", waypoint rows only"
        } else {
            ""
        },
        plan.reps,
        plan.seconds
    ));
    let (mut doc, mut failed) = if options.waypoint_only {
        (json!({"mode": mode, "machine": machine}), 0)
    } else {
        l4(plan, &machine, mode)?
    };
    let l7_started = Instant::now();
    let waypoint = l7::run(plan)?;
    crate::sh::step(&format!(
        "waypoint rows ({mode}, medians of the runs in each baseline mode; {} runs, {:.0} s)",
        plan.reps,
        l7_started.elapsed().as_secs_f64()
    ));
    println!("{}", baseline_text(&waypoint.baseline));
    println!("{}", waypoint.text());
    let failures = waypoint.failures();
    if !failures.is_empty() {
        crate::sh::step("waypoint rows: failed cases (a client reported errors: no figure of these is shown or judged)");
        for f in &failures {
            println!("- {f}");
        }
        failed += failures.len();
    }
    doc["waypoint"] = waypoint.json(&machine, mode, l7_started.elapsed().as_secs_f64());
    doc["duration_seconds"] = json!(started.elapsed().as_secs_f64().round());
    if let Some(dir) = json_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(json_path, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!("JSON written to {}", json_path.display());
    if failed > 0 {
        bail!("{failed} case(s) failed: their clients reported errors (listed above)");
    }
    Ok(())
}

/// The L4 rows: their cluster, measurements and tables; their JSON document and the number of
/// failed cases.
fn l4(
    plan: Plan,
    machine: &serde_json::Value,
    mode: &str,
) -> anyhow::Result<(serde_json::Value, usize)> {
    let started = Instant::now();
    crate::sh::step(
        "local cluster: 2 nodes, meshed and direct client/server pods, controller, agents",
    );
    let bench = mesh::BenchMesh::start(plan.idle_pods)?;
    let result = measure(&bench, plan);
    let measured = match result {
        Ok(measured) => measured,
        Err(e) => {
            eprintln!("{}", bench.logs());
            return Err(e);
        }
    };
    drop(bench);
    let seconds = started.elapsed().as_secs_f64();
    let Measured {
        cases,
        runs,
        baseline,
    } = measured;

    crate::sh::step(&format!(
        "direct baseline mode (direct 2-node 64 B ping-pong p50; fast below {} µs)",
        mode::FAST_BELOW_US
    ));
    println!("{}", baseline_text(&baseline));
    crate::sh::step(&format!(
        "results ({mode}, medians of the runs in each baseline mode; {} runs, {seconds:.0} s in all)",
        plan.reps
    ));
    println!("{}", report::table(&cases, &runs));
    crate::sh::step(
        "targets, judged in each baseline mode against the direct figures of the same runs",
    );
    println!("{}", report::targets(&cases, &runs));
    let failures = report::failures(&cases);
    if !failures.is_empty() {
        crate::sh::step(
            "failed cases (a client reported errors: no figure of these is shown or judged)",
        );
        for f in &failures {
            println!("- {f}");
        }
    }
    let doc = report::json(&cases, &runs, baseline, machine, mode, seconds);
    let failed = cases.iter().filter(|c| !c.failures.is_empty()).count();
    Ok((doc, failed))
}

/// The probes and the runs' modes, as printed.
fn baseline_text(baseline: &serde_json::Value) -> String {
    let mut out = String::new();
    for p in baseline["probes"].as_array().into_iter().flatten() {
        let at = p["at"].as_str().unwrap_or_default();
        match p["p50_us"].as_f64() {
            Some(v) => out.push_str(&format!("probe {at}: {v:.1} µs ({})\n", mode::classify(v))),
            None => out.push_str(&format!("probe {at}: failed\n")),
        }
    }
    for r in baseline["runs"].as_array().into_iter().flatten() {
        let indicators: Vec<String> = r["indicators_us"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| {
                v.as_f64()
                    .map_or("failed".to_owned(), |v| format!("{v:.1}"))
            })
            .collect();
        out.push_str(&format!(
            "run {}: {} (direct p50s around and in it: {} µs)\n",
            r["run"],
            r["mode"].as_str().unwrap_or_default(),
            indicators.join(", ")
        ));
    }
    out
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

/// What [`measure`] returns: the cases, each run's baseline mode, and the probes (JSON).
struct Measured {
    cases: Vec<Case>,
    runs: Vec<RunMode>,
    baseline: serde_json::Value,
}

/// A client run's figure, or why it failed.
type Outcome<T> = Result<T, String>;

fn outcome<T>(result: anyhow::Result<T>) -> Outcome<T> {
    result.map_err(|e| format!("{e:#}"))
}

fn value<T>(o: &Outcome<T>, f: impl Fn(&T) -> f64) -> Outcome<f64> {
    o.as_ref().map(f).map_err(Clone::clone)
}

fn show(o: &Outcome<f64>, unit: &str) -> String {
    match o {
        Ok(v) if *v >= 100.0 => format!("{v:.0} {unit}"),
        Ok(v) => format!("{v:.2} {unit}"),
        Err(_) => "FAILED".to_owned(),
    }
}

/// Direct ping-pong probes of the baseline's mode, in the order taken.
struct Probes {
    pings: u32,
    taken: Vec<(String, Option<f64>)>,
}

impl Probes {
    /// One probe: the direct 2-node ping-pong p50 from `client` to `server`'s echo port now
    /// (`None` if the client failed).
    fn take(
        &mut self,
        client: &mesh_tests::Pod,
        server: &mesh_tests::Pod,
        at: String,
    ) -> Option<f64> {
        let p50 = match tools::pingpong(client, server, self.pings, 64) {
            Ok(l) => {
                eprintln!(
                    "  baseline probe {at}: direct p50 {:.1} µs ({} mode)",
                    l.p50,
                    mode::classify(l.p50)
                );
                Some(l.p50)
            }
            Err(e) => {
                eprintln!("  baseline probe {at} failed: {e:#}");
                None
            }
        };
        self.taken.push((at, p50));
        p50
    }
}

fn measure(bench: &mesh::BenchMesh, plan: Plan) -> anyhow::Result<Measured> {
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
    for &p in &pids {
        rss_idle.record(Via::Mesh, None, &Ok(rss_kib(p)? / 1024.0));
    }

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
    let grown = (rss_kib(pids[0])? - before) / f64::from(plan.idle_pods.max(1));
    per_pod.record(Via::Mesh, None, &Ok(grown));

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
    per_conn.record(
        Via::Mesh,
        None,
        &Ok((during - before) / f64::from(plan.held.max(1))),
    );
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
    // The baseline's mode is probed before the first run, between the halves of each run and
    // after each run; a run's mode is that of every probe around and in it and of its own direct
    // ping-pong p50 (`mode::run_mode`).
    let mut probes = Probes {
        pings: (plan.pings / 4).max(1_000),
        taken: Vec::new(),
    };
    let mut before = probes.take(
        &bench.direct.client,
        &bench.direct.remote,
        "before run 1".to_owned(),
    );
    let mut indicators: Vec<Vec<Option<f64>>> = Vec::new();
    for rep in 0..plan.reps {
        crate::sh::step(&format!("run {} of {}", rep + 1, plan.reps));
        let run = Some(rep);
        let mut around = vec![before];
        // Alternate which side goes first, so a drift in machine load hits both alike.
        let order = if rep % 2 == 0 {
            [Via::Direct, Via::Mesh]
        } else {
            [Via::Mesh, Via::Direct]
        };
        for (half, via) in order.into_iter().enumerate() {
            if half == 1 {
                around.push(probes.take(
                    &bench.direct.client,
                    &bench.direct.remote,
                    format!("run {}, between halves", rep + 1),
                ));
            }
            let side = match via {
                Via::Direct => &bench.direct,
                Via::Mesh => &bench.mesh,
            };

            let cpu0 = sum(&pids, cpu_seconds)?;
            let t = outcome(tools::iperf(&side.client, &side.remote, secs, 1));
            let cpu = sum(&pids, cpu_seconds)? - cpu0;
            thr1.record(via, run, &value(&t, |t| t.gbits));
            if via == Via::Mesh {
                if t.is_ok() && cpu < 0.05 {
                    bail!("the agents used {cpu:.3} CPU s during a meshed iperf3 run: the traffic was not captured");
                }
                cpu_gb.record(via, run, &value(&t, |t| cpu / (t.bytes / 1e9)));
            }
            let t4 = outcome(tools::iperf(&side.client, &side.remote, secs, 4));
            thr4.record(via, run, &value(&t4, |t| t.gbits));

            let lat = outcome(tools::pingpong(&side.client, &side.remote, plan.pings, 64));
            p50.record(via, run, &value(&lat, |l| l.p50));
            p99.record(via, run, &value(&lat, |l| l.p99));
            if via == Via::Direct {
                around.push(lat.as_ref().ok().map(|l| l.p50));
            }

            let h1 = outcome(tools::wrk(&side.client, &side.remote, secs, 1));
            http1.record(via, run, &value(&h1, |h| h.rps));
            let cpu0 = sum(&pids, cpu_seconds)?;
            let h16 = outcome(tools::wrk(&side.client, &side.remote, secs, 16));
            let cpu = sum(&pids, cpu_seconds)? - cpu0;
            http16.record(via, run, &value(&h16, |h| h.rps));
            if via == Via::Mesh {
                let per_10k = h16.as_ref().map_err(Clone::clone).and_then(|h| {
                    (h.requests > 0.0)
                        .then(|| cpu / (h.requests / 1e4))
                        .ok_or_else(|| "wrk completed no request".to_owned())
                });
                cpu_req.record(via, run, &per_10k);
            }

            let c = outcome(tools::crr(&side.client, &side.remote, secs));
            crr.record(via, run, &c);

            // Same node. The direct side is measured once and is the baseline of the three mesh
            // variants: the agent's relay (fast path off), the kernel fast path (the default:
            // decided at connect, straight to the destination pod) and the kernel splice.
            let same_node = match via {
                Via::Direct => {
                    let m = SameNode::measure(&side.client, &side.local, secs, plan.pings);
                    for rows in [&mut relay, &mut kernel, &mut splice] {
                        rows.record(via, run, &m);
                    }
                    let loopback = format!("127.0.0.1:{}", tools::LOOPBACK_ECHO_PORT);
                    let lo = outcome(tools::pingpong_to(&side.client, &loopback, plan.pings, 64));
                    splice_vs_loopback.record(via, run, &value(&lo, |l| l.p50));
                    legs_p50.record(via, run, &value(&lat, |l| l.p50));
                    legs_http1.record(via, run, &value(&h1, |h| h.rps));
                    m.summary()
                }
                Via::Mesh => {
                    bench.fast_path("enabled=false")?;
                    let r = SameNode::measure(&side.client, &side.local, secs, plan.pings);
                    relay.record(via, run, &r);
                    bench.fast_path("enabled=true")?;
                    // The agent decides the first connection to each port; the kernel the rest.
                    tools::pingpong(&side.client, &side.local, 1, 64)
                        .context("the warm-up connection of the kernel fast path")?;
                    let (decided, _) = bench.fast_path_counts()?;
                    let k = SameNode::measure(&side.client, &side.local, secs, plan.pings);
                    let (now, _) = bench.fast_path_counts()?;
                    if now <= decided {
                        bail!("no same-node connection was decided in the kernel: the fast path did not engage");
                    }
                    kernel.record(via, run, &k);
                    bench.fast_path("splice=true")?;
                    let (_, fallbacks_before) = bench.fast_path_counts()?;
                    let sp = SameNode::measure(&side.client, &side.local, secs, plan.pings);
                    splice.record(via, run, &sp);
                    splice_vs_loopback.record(via, run, &value(&sp.latency, |l| l.p50));
                    let legs = outcome(tools::pingpong(&side.client, &side.remote, plan.pings, 64));
                    legs_p50.record(via, run, &value(&legs, |l| l.p50));
                    let legs_h1 = outcome(tools::wrk(&side.client, &side.remote, secs, 1));
                    legs_http1.record(via, run, &value(&legs_h1, |h| h.rps));
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
                "  {via:<6} 1-stream {}, 4-stream {}, p50 {} p99 {}, http {} / {}, {}; same node: {same_node}",
                show(&value(&t, |t| t.gbits), "Gbit/s"),
                show(&value(&t4, |t| t.gbits), "Gbit/s"),
                show(&value(&lat, |l| l.p50), "µs"),
                show(&value(&lat, |l| l.p99), "µs"),
                show(&value(&h1, |h| h.rps), "req/s"),
                show(&value(&h16, |h| h.rps), "req/s"),
                show(&c, "conn/s"),
            );
            for (what, o) in [
                ("iperf3 1 stream", t.as_ref().err()),
                ("iperf3 4 streams", t4.as_ref().err()),
                ("ping-pong", lat.as_ref().err()),
                ("wrk 1 connection", h1.as_ref().err()),
                ("wrk 16 connections", h16.as_ref().err()),
                ("new connections", c.as_ref().err()),
            ] {
                if let Some(why) = o {
                    eprintln!("  {via} {what} FAILED: {why}");
                }
            }
        }
        before = probes.take(
            &bench.direct.client,
            &bench.direct.remote,
            format!("after run {}", rep + 1),
        );
        around.push(before);
        indicators.push(around);
    }
    let runs: Vec<RunMode> = indicators.iter().map(|i| mode::run_mode(i)).collect();
    let baseline = baseline_json(&probes, &indicators, &runs);

    let cases = vec![
        thr1, thr4, p50, p99, http1, http16, crr, cpu_gb, cpu_req, legs_p50, legs_http1,
    ]
    .into_iter()
    .chain(relay.into_cases())
    .chain(kernel.into_cases())
    .chain(splice.into_cases())
    .chain([splice_vs_loopback, rss_idle, per_pod, per_conn])
    .collect();
    Ok(Measured {
        cases,
        runs,
        baseline,
    })
}

/// The probes and each run's indicators and mode, as JSON.
fn baseline_json(
    probes: &Probes,
    indicators: &[Vec<Option<f64>>],
    runs: &[RunMode],
) -> serde_json::Value {
    serde_json::json!({
        "indicator": "direct 2-node 64 B ping-pong p50 (µs)",
        "fast_below_us": mode::FAST_BELOW_US,
        "probes": probes.taken.iter().map(|(at, p50)| serde_json::json!({
            "at": at,
            "p50_us": p50,
            "mode": p50.map(|p| mode::classify(p).key()),
        })).collect::<Vec<_>>(),
        "runs": indicators.iter().zip(runs).enumerate().map(|(i, (ind, m))| serde_json::json!({
            "run": i + 1,
            "indicators_us": ind,
            "mode": m.to_string(),
        })).collect::<Vec<_>>(),
    })
}

/// One same-node measurement: throughput, ping-pong and connection rate from the client to the
/// server on its node, each a figure or why its client failed.
#[derive(Debug)]
struct SameNode {
    throughput: Outcome<tools::Throughput>,
    latency: Outcome<tools::Latency>,
    connections_per_second: Outcome<f64>,
}

impl SameNode {
    fn measure(
        client: &mesh_tests::Pod,
        server: &mesh_tests::Pod,
        secs: u64,
        pings: u32,
    ) -> SameNode {
        SameNode {
            throughput: outcome(tools::iperf(client, server, secs, 1)),
            latency: outcome(tools::pingpong(client, server, pings, 64)),
            connections_per_second: outcome(tools::crr(client, server, secs)),
        }
    }

    fn summary(&self) -> String {
        format!(
            "{} p50 {} {}",
            show(&value(&self.throughput, |t| t.gbits), "Gbit/s"),
            show(&value(&self.latency, |l| l.p50), "µs"),
            show(&self.connections_per_second, "conn/s"),
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

    fn record(&mut self, via: Via, run: Option<usize>, m: &SameNode) {
        self.throughput
            .record(via, run, &value(&m.throughput, |t| t.gbits));
        self.p50.record(via, run, &value(&m.latency, |l| l.p50));
        self.p99.record(via, run, &value(&m.latency, |l| l.p99));
        self.connections.record(via, run, &m.connections_per_second);
    }

    fn into_cases(self) -> [Case; 4] {
        [self.throughput, self.p50, self.p99, self.connections]
    }
}
