//! The waypoint rows (issue 11): HTTP/1.1 (wrk, req/s and p50/p99) and HTTP/2 (h2load, req/s)
//! at 1 and 64 connections over five paths side by side in one run (direct, the L4 mesh, the L4
//! mesh through the waypoint, through nginx and through HAProxy in the waypoint's position; see
//! `l7_mesh`), the order of the paths rotating from run to run; the waypoint's CPU per 1,000
//! requests, its RSS idle and under load, and its RSS while a 1 GiB upload streams through.
//! Each run's baseline mode is probed as for the L4 rows, and the targets (waypoint ≥ 1.0×
//! nginx and HAProxy, p50 added over the L4 mesh ≤ 100 µs, ≤ 0.05 vCPU per 1,000 req/s, idle
//! RSS ≤ 20 MiB, upload ≤ 16 MiB above idle) are judged per mode by `report`. In each run too,
//! the same route through the waypoint without and with a timeout, retries and outlier
//! detection (issue 12; nothing fails, so nothing is retried or ejected), HTTP/1.1 and HTTP/2
//! req/s at 64 connections side by side (their order alternating from run to run), the route
//! with them judged against the one without (≥ 0.95×: within 5 %).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::bail;
use serde_json::{json, Value};

use super::clients::{self, HttpLatency, H2};
use super::l7_mesh::{L7Mesh, WaypointRoute, SERVER_PORT};
use super::mode::{self, Mode, RunMode};
use super::proxies::{H1_PORT, H2_PORT};
use super::report::{self, in_mode, median, Case, Sample, Target, Via};
use super::tools::{cpu_seconds, rss_kib};
use super::{outcome, show, value, Outcome, Plan, Probes};

/// The bytes of the streamed upload.
const UPLOAD_BYTES: u64 = 1 << 30;

/// One of the compared paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// No mesh.
    Direct,
    /// The L4 mesh, no waypoint.
    L4,
    /// The L4 mesh through the waypoint.
    Waypoint,
    /// The L4 mesh through nginx in a meshed pod.
    Nginx,
    /// The L4 mesh through HAProxy in a meshed pod.
    Haproxy,
}

impl Path {
    /// Every path, in table order.
    pub const ALL: [Path; 5] = [
        Path::Direct,
        Path::L4,
        Path::Waypoint,
        Path::Nginx,
        Path::Haproxy,
    ];

    /// Its name in the tables.
    pub fn name(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::L4 => "L4 mesh",
            Path::Waypoint => "waypoint",
            Path::Nginx => "nginx",
            Path::Haproxy => "HAProxy",
        }
    }

    /// Its key in the JSON.
    fn key(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::L4 => "l4",
            Path::Waypoint => "waypoint",
            Path::Nginx => "nginx",
            Path::Haproxy => "haproxy",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The order of the paths in run `rep`: rotated by one each run, so a drift in the machine's
/// load does not always hit the same path first or last.
pub fn order(rep: usize) -> [Path; 5] {
    let n = Path::ALL.len();
    std::array::from_fn(|i| Path::ALL[(i + rep) % n])
}

/// The order of two compared routes in run `rep`: alternating, so neither always goes first.
pub fn route_order(pair: [WaypointRoute; 2], rep: usize) -> [WaypointRoute; 2] {
    let [a, b] = pair;
    if rep.is_multiple_of(2) {
        [a, b]
    } else {
        [b, a]
    }
}

/// The resilience rows: the route with a timeout, retries and outlier detection (measured)
/// against the same route without them (baseline), HTTP/1.1 and HTTP/2 req/s at 64
/// connections; within 5 % is the target.
fn resilience_cases() -> [Case; 2] {
    let within_5_percent = Target::RatioAtLeast(0.95);
    [
        Case::new(
            "waypoint_resilient_vs_plain_h1_rps_64",
            "route with timeout + retries + outlier detection ÷ without: HTTP/1.1 req/s, 64 connections",
            "req/s",
            within_5_percent,
        )
        .against("plain route"),
        Case::new(
            "waypoint_resilient_vs_plain_h2_rps_64",
            "route with timeout + retries + outlier detection ÷ without: HTTP/2 req/s, 64 connections",
            "req/s",
            within_5_percent,
        )
        .against("plain route"),
    ]
}

/// The observability rows: the route with Istio's metrics, a JSON access-log line per request
/// and 1% tracing (measured) against the same route with all of them off (baseline), HTTP/1.1
/// and HTTP/2 req/s at 64 connections; within 5 % is the target (issue 13).
fn observability_cases() -> [Case; 2] {
    let within_5_percent = Target::RatioAtLeast(0.95);
    [
        Case::new(
            "waypoint_observed_vs_bare_h1_rps_64",
            "route with metrics + access log + 1% tracing ÷ without: HTTP/1.1 req/s, 64 connections",
            "req/s",
            within_5_percent,
        )
        .against("bare route"),
        Case::new(
            "waypoint_observed_vs_bare_h2_rps_64",
            "route with metrics + access log + 1% tracing ÷ without: HTTP/2 req/s, 64 connections",
            "req/s",
            within_5_percent,
        )
        .against("bare route"),
    ]
}

/// Which side of a paired row a route's samples are: the baseline of its pair, or measured.
fn route_side(route: WaypointRoute) -> Via {
    match route {
        WaypointRoute::Plain | WaypointRoute::Bare => Via::Direct,
        WaypointRoute::Resilient | WaypointRoute::Observed => Via::Mesh,
    }
}

/// A figure measured on every path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    H1Rps1,
    H1P50At1,
    H1P99At1,
    H1Rps64,
    H1P50At64,
    H1P99At64,
    H2Rps1,
    H2Rps64,
}

impl Metric {
    /// Every metric, in table order.
    pub const ALL: [Metric; 8] = [
        Metric::H1Rps1,
        Metric::H1P50At1,
        Metric::H1P99At1,
        Metric::H1Rps64,
        Metric::H1P50At64,
        Metric::H1P99At64,
        Metric::H2Rps1,
        Metric::H2Rps64,
    ];

    /// (JSON key, label, unit).
    fn describe(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Metric::H1Rps1 => ("h1_rps_1", "HTTP/1.1 req/s, 1 connection", "req/s"),
            Metric::H1P50At1 => ("h1_p50_1", "HTTP/1.1 p50, 1 connection", "µs"),
            Metric::H1P99At1 => ("h1_p99_1", "HTTP/1.1 p99, 1 connection", "µs"),
            Metric::H1Rps64 => ("h1_rps_64", "HTTP/1.1 req/s, 64 connections", "req/s"),
            Metric::H1P50At64 => ("h1_p50_64", "HTTP/1.1 p50, 64 connections", "µs"),
            Metric::H1P99At64 => ("h1_p99_64", "HTTP/1.1 p99, 64 connections", "µs"),
            Metric::H2Rps1 => ("h2_rps_1", "HTTP/2 req/s, 1 connection", "req/s"),
            Metric::H2Rps64 => ("h2_rps_64", "HTTP/2 req/s, 64 connections", "req/s"),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The samples of every (metric, path), each a [`Case`] holding them as its measured side.
pub struct Grid {
    cells: Vec<Vec<Case>>,
}

impl Grid {
    fn new() -> Grid {
        Grid {
            cells: Metric::ALL
                .iter()
                .map(|m| {
                    let (key, label, unit) = m.describe();
                    Path::ALL
                        .iter()
                        .map(|_| Case::new(key, label, unit, Target::None))
                        .collect()
                })
                .collect(),
        }
    }

    fn cell(&self, m: Metric, p: Path) -> &Case {
        &self.cells[m.index()][p.index()]
    }

    fn record(&mut self, m: Metric, p: Path, run: usize, o: &Outcome<f64>) {
        self.cells[m.index()][p.index()].record(Via::Mesh, Some(run), o);
    }

    /// The median of one cell over the runs in `mode`; `Err` if any of its client runs failed.
    pub fn median(
        &self,
        m: Metric,
        p: Path,
        runs: &[RunMode],
        mode: Mode,
    ) -> Result<Option<f64>, ()> {
        let cell = self.cell(m, p);
        if !cell.failures.is_empty() {
            return Err(());
        }
        Ok(median(&in_mode(&cell.mesh, runs, mode)))
    }

    /// A target row: `measured`'s samples against `baseline`'s (as the case's direct side),
    /// failed if either is.
    fn pair(
        &self,
        key: &'static str,
        label: &'static str,
        m: Metric,
        (baseline, measured): (Path, Path),
        target: Target,
    ) -> Case {
        let (b, x) = (self.cell(m, baseline), self.cell(m, measured));
        let mut case = Case::new(key, label, x.unit, target).against(baseline.name());
        case.direct = b.mesh.clone();
        case.mesh = x.mesh.clone();
        case.failures = b.failures.iter().chain(&x.failures).cloned().collect();
        case
    }

    /// The figures table: one row per metric and observed mode, one column per path.
    pub fn table(&self, runs: &[RunMode]) -> String {
        let mut out = String::from("| case | unit | baseline mode (runs) |");
        for p in Path::ALL {
            out.push_str(&format!(" {} |", p.name()));
        }
        out.push_str("\n|---|---|---|---|---|---|---|---|\n");
        for m in Metric::ALL {
            let (_, label, unit) = m.describe();
            for mode in Mode::ALL {
                let count = runs.iter().filter(|r| **r == RunMode::In(mode)).count();
                if count == 0 {
                    continue;
                }
                out.push_str(&format!("| {label} | {unit} | {mode} ({count}) |"));
                for p in Path::ALL {
                    let cell = match self.median(m, p, runs, mode) {
                        Err(()) => "FAILED".to_owned(),
                        Ok(None) => "—".to_owned(),
                        Ok(Some(v)) if v >= 100.0 => format!("{v:.0}"),
                        Ok(Some(v)) => format!("{v:.1}"),
                    };
                    out.push_str(&format!(" {cell} |"));
                }
                out.push('\n');
            }
            if !runs.iter().any(|r| matches!(r, RunMode::In(_))) {
                out.push_str(&format!(
                    "| {label} | {unit} | no run in one mode | — | — | — | — | — |\n"
                ));
            }
        }
        out
    }

    /// The grid as JSON: per metric and path, the samples (with their runs), the failures and
    /// the median per mode.
    fn json(&self, runs: &[RunMode]) -> Value {
        let mut out = Vec::new();
        for m in Metric::ALL {
            for p in Path::ALL {
                let cell = self.cell(m, p);
                let per_mode: serde_json::Map<String, Value> = Mode::ALL
                    .iter()
                    .map(|&mode| {
                        let v = self.median(m, p, runs, mode).ok().flatten();
                        (mode.key().to_owned(), json!(v))
                    })
                    .collect();
                out.push(json!({
                    "metric": cell.key,
                    "label": cell.label,
                    "unit": cell.unit,
                    "path": p.key(),
                    "failures": cell.failures,
                    "median_per_mode": per_mode,
                    "samples": cell.mesh.iter().map(|s: &Sample| json!({"run": s.run.map(|r| r + 1), "value": s.value})).collect::<Vec<_>>(),
                }));
            }
        }
        Value::Array(out)
    }
}

/// The target rows built from the grid (the ratios, the added p50) and the waypoint's own
/// readings.
fn target_cases(grid: &Grid) -> Vec<Case> {
    use Metric::{H1P50At1, H1Rps1, H1Rps64, H2Rps1, H2Rps64};
    use Path::{Haproxy, Nginx, Waypoint, L4};
    let at_least_1 = Target::RatioAtLeast(1.0);
    vec![
        grid.pair(
            "waypoint_vs_nginx_h1_rps_1",
            "waypoint ÷ nginx: HTTP/1.1 req/s, 1 connection",
            H1Rps1,
            (Nginx, Waypoint),
            at_least_1,
        ),
        grid.pair(
            "waypoint_vs_nginx_h1_rps_64",
            "waypoint ÷ nginx: HTTP/1.1 req/s, 64 connections",
            H1Rps64,
            (Nginx, Waypoint),
            at_least_1,
        ),
        grid.pair(
            "waypoint_vs_nginx_h2_rps_1",
            "waypoint ÷ nginx: HTTP/2 req/s, 1 connection",
            H2Rps1,
            (Nginx, Waypoint),
            at_least_1,
        ),
        grid.pair(
            "waypoint_vs_nginx_h2_rps_64",
            "waypoint ÷ nginx: HTTP/2 req/s, 64 connections",
            H2Rps64,
            (Nginx, Waypoint),
            at_least_1,
        ),
        grid.pair(
            "waypoint_vs_haproxy_h1_rps_1",
            "waypoint ÷ HAProxy: HTTP/1.1 req/s, 1 connection",
            H1Rps1,
            (Haproxy, Waypoint),
            at_least_1,
        ),
        grid.pair(
            "waypoint_vs_haproxy_h1_rps_64",
            "waypoint ÷ HAProxy: HTTP/1.1 req/s, 64 connections",
            H1Rps64,
            (Haproxy, Waypoint),
            at_least_1,
        ),
        grid.pair(
            "waypoint_vs_haproxy_h2_rps_1",
            "waypoint ÷ HAProxy: HTTP/2 req/s, 1 connection",
            H2Rps1,
            (Haproxy, Waypoint),
            at_least_1,
        ),
        grid.pair(
            "waypoint_vs_haproxy_h2_rps_64",
            "waypoint ÷ HAProxy: HTTP/2 req/s, 64 connections",
            H2Rps64,
            (Haproxy, Waypoint),
            at_least_1,
        ),
        grid.pair(
            "waypoint_added_p50_h1_1",
            "waypoint over the L4 mesh: HTTP/1.1 p50, 1 connection",
            H1P50At1,
            (L4, Waypoint),
            Target::AddedAtMost(100.0),
        ),
    ]
}

/// What the waypoint rows measured.
pub struct L7Measured {
    /// Every path's samples.
    pub grid: Grid,
    /// The judged rows and the waypoint's own readings.
    pub cases: Vec<Case>,
    /// Each run's baseline mode.
    pub runs: Vec<RunMode>,
    /// The probes and modes (JSON).
    pub baseline: Value,
}

impl L7Measured {
    /// The tables, as printed and recorded.
    pub fn text(&self) -> String {
        format!(
            "{}\n{}\n{}",
            self.grid.table(&self.runs),
            report::table_headed(&self.cases, &self.runs, "baseline", "waypoint"),
            report::targets(&self.cases, &self.runs)
        )
    }

    /// The JSON document of the waypoint rows.
    pub fn json(&self, machine: &Value, mode: &str, seconds: f64) -> Value {
        let mut doc = report::json(
            &self.cases,
            &self.runs,
            self.baseline.clone(),
            machine,
            mode,
            seconds,
        );
        doc["paths"] = self.grid.json(&self.runs);
        doc
    }

    /// Failed cases (judged rows, and grid cells whose failures no judged row carries).
    pub fn failures(&self) -> Vec<String> {
        let mut out = report::failures(&self.cases);
        for row in &self.grid.cells {
            for (p, cell) in Path::ALL.iter().zip(row) {
                for f in &cell.failures {
                    let line = format!("{} ({}): {f}", cell.key, p.key());
                    out.push(line);
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// The peak of a process's RSS (KiB, sampled every 20 ms) while `work` runs, with its result.
fn peak_rss<T>(pid: u32, work: impl FnOnce() -> T) -> (T, Option<f64>) {
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut peak: Option<f64> = None;
            while !done.load(Ordering::Relaxed) {
                if let Ok(kib) = rss_kib(pid) {
                    peak = Some(peak.map_or(kib, |p: f64| p.max(kib)));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        });
        let result = work();
        done.store(true, Ordering::Relaxed);
        (result, sampler.join().ok().flatten())
    })
}

/// Starts the waypoint rows' cluster, measures, and tears it down.
pub fn run(plan: Plan) -> anyhow::Result<L7Measured> {
    crate::sh::step(
        "waypoint rows: local cluster with a waypoint, nginx and HAProxy in meshed pods",
    );
    let mesh = L7Mesh::start()?;
    let result = measure(&mesh, plan);
    if result.is_err() {
        eprintln!("{}", mesh.logs());
    }
    result
}

/// The client pod and URL of a path for HTTP/1.1 or HTTP/2.
fn target(mesh: &L7Mesh, path: Path, h2: bool) -> (&mesh_tests::Pod, String) {
    let proxy_port = if h2 { H2_PORT } else { H1_PORT };
    match path {
        Path::Direct => (
            &mesh.direct_client,
            format!("http://{}:{SERVER_PORT}/", mesh.direct_server.ip4),
        ),
        Path::L4 => (
            &mesh.client,
            format!("http://{}:{SERVER_PORT}/", mesh.server.ip4),
        ),
        Path::Waypoint => (&mesh.client, L7Mesh::waypoint_url("/")),
        Path::Nginx => (
            &mesh.client,
            format!("http://{}:{proxy_port}/", mesh.nginx.ip4),
        ),
        Path::Haproxy => (
            &mesh.client,
            format!("http://{}:{proxy_port}/", mesh.haproxy.ip4),
        ),
    }
}

fn measure(mesh: &L7Mesh, plan: Plan) -> anyhow::Result<L7Measured> {
    let pid = mesh.waypoint_pid()?;
    let secs = plan.seconds;
    std::thread::sleep(Duration::from_secs(2));
    let idle_kib = rss_kib(pid)?;
    let mut rss_idle = Case::new(
        "waypoint_rss_idle",
        "waypoint RSS, idle",
        "MiB",
        Target::AtMost(20.0),
    );
    rss_idle.record(Via::Mesh, None, &Ok(idle_kib / 1024.0));

    // Memory while a 1 GiB upload streams through the waypoint, above its idle RSS (before any
    // traffic: the first connections through it count too).
    crate::sh::step("waypoint rows: a 1 GiB upload through the waypoint");
    let before = idle_kib;
    let (took, peak) = peak_rss(pid, || {
        outcome(clients::upload(
            &mesh.client,
            &L7Mesh::waypoint_url("/upload"),
            UPLOAD_BYTES,
        ))
    });
    let mut upload_mem = Case::new(
        "waypoint_rss_upload_above_idle",
        "waypoint RSS peak above idle during a 1 GiB upload",
        "MiB",
        Target::AtMost(16.0),
    );
    let mut upload_rate = Case::new(
        "waypoint_upload_rate",
        "1 GiB upload through the waypoint",
        "MB/s",
        Target::None,
    );
    let above = took.as_ref().map_err(Clone::clone).and_then(|_| {
        peak.map(|p| (p - before).max(0.0) / 1024.0)
            .ok_or_else(|| "no RSS sample of the waypoint during the upload".to_owned())
    });
    upload_mem.record(Via::Mesh, None, &above);
    upload_rate.record(
        Via::Mesh,
        None,
        &value(&took, |t| UPLOAD_BYTES as f64 / 1e6 / t),
    );
    eprintln!(
        "  upload: {} ({} above the {:.1} MiB before it)",
        show(&value(&took, |t| UPLOAD_BYTES as f64 / 1e6 / t), "MB/s"),
        show(&above, "MiB"),
        before / 1024.0
    );

    // Every path answers (and the pools are warm) before anything is measured.
    crate::sh::step("waypoint rows: checking every path (1 s of wrk and of h2load each)");
    for path in Path::ALL {
        for h2 in [false, true] {
            let (client, url) = target(mesh, path, h2);
            let checked = if h2 {
                clients::h2load(client, &url, 1, 4).map(|_| ())
            } else {
                clients::wrk_latency(client, &url, 1, 4).map(|_| ())
            };
            if let Err(e) = checked {
                bail!(
                    "the {} path ({}) does not work: {e:#}",
                    path.name(),
                    if h2 { "HTTP/2" } else { "HTTP/1.1" }
                );
            }
        }
    }
    for route in WaypointRoute::ALL {
        let url = route.url("/");
        let checked = clients::wrk_latency(&mesh.client, &url, 1, 4)
            .map(|_| ())
            .and_then(|()| clients::h2load(&mesh.client, &url, 1, 4).map(|_| ()));
        if let Err(e) = checked {
            bail!(
                "the {} through the waypoint does not work: {e:#}",
                route.name()
            );
        }
    }

    let mut grid = Grid::new();
    let mut cpu_h1 = Case::new(
        "waypoint_vcpu_per_1k_rps_h1",
        "waypoint vCPU per 1,000 req/s (CPU s per 1,000 requests), HTTP/1.1, 64 connections",
        "vCPU",
        Target::AtMost(0.05),
    );
    let mut cpu_h2 = Case::new(
        "waypoint_vcpu_per_1k_rps_h2",
        "waypoint vCPU per 1,000 req/s (CPU s per 1,000 requests), HTTP/2, 64 connections",
        "vCPU",
        Target::AtMost(0.05),
    );
    let mut rss_load = Case::new(
        "waypoint_rss_under_load",
        "waypoint RSS under load (peak, 64 connections)",
        "MiB",
        Target::None,
    );
    let mut probes = Probes {
        pings: (plan.pings / 4).max(1_000),
        taken: Vec::new(),
    };
    let probe =
        |probes: &mut Probes, at: String| probes.take(&mesh.direct_client, &mesh.direct_server, at);
    let mut before = probe(&mut probes, "before run 1".to_owned());
    let [mut resilient_h1, mut resilient_h2] = resilience_cases();
    let [mut observed_h1, mut observed_h2] = observability_cases();
    let mut indicators: Vec<Vec<Option<f64>>> = Vec::new();
    for rep in 0..plan.reps {
        crate::sh::step(&format!("waypoint rows: run {} of {}", rep + 1, plan.reps));
        let mut around = vec![before];
        for (i, path) in order(rep).into_iter().enumerate() {
            if i == Path::ALL.len() / 2 {
                around.push(probe(&mut probes, format!("run {}, middle", rep + 1)));
            }
            let (client, url) = target(mesh, path, false);
            let h1 = outcome(clients::wrk_latency(client, &url, secs, 1));
            let cpu0 = cpu_seconds(pid)?;
            let (h64, peak1) = peak_rss(pid, || {
                outcome(clients::wrk_latency(client, &url, secs, 64))
            });
            let cpu1 = cpu_seconds(pid)? - cpu0;
            let (client, url) = target(mesh, path, true);
            let h2_1 = outcome(clients::h2load(client, &url, secs, 1));
            let cpu0 = cpu_seconds(pid)?;
            let (h2_64, peak2) = peak_rss(pid, || outcome(clients::h2load(client, &url, secs, 64)));
            let cpu2 = cpu_seconds(pid)? - cpu0;

            let rps = |h: &HttpLatency| h.http.rps;
            grid.record(Metric::H1Rps1, path, rep, &value(&h1, rps));
            grid.record(Metric::H1P50At1, path, rep, &value(&h1, |h| h.p50_us));
            grid.record(Metric::H1P99At1, path, rep, &value(&h1, |h| h.p99_us));
            grid.record(Metric::H1Rps64, path, rep, &value(&h64, rps));
            grid.record(Metric::H1P50At64, path, rep, &value(&h64, |h| h.p50_us));
            grid.record(Metric::H1P99At64, path, rep, &value(&h64, |h| h.p99_us));
            grid.record(Metric::H2Rps1, path, rep, &value(&h2_1, |h: &H2| h.rps));
            grid.record(Metric::H2Rps64, path, rep, &value(&h2_64, |h: &H2| h.rps));
            if path == Path::Waypoint {
                let per_1k = |requests: Outcome<f64>, cpu: f64| {
                    requests.and_then(|n| {
                        (n > 0.0)
                            .then(|| cpu / (n / 1e3))
                            .ok_or_else(|| "no request completed".to_owned())
                    })
                };
                let idle_cpu = cpu1.min(cpu2);
                if idle_cpu < 0.01 && h64.is_ok() && h2_64.is_ok() {
                    bail!("the waypoint used {idle_cpu:.3} CPU s during a 64-connection run through it: the traffic did not pass it");
                }
                cpu_h1.record(
                    Via::Mesh,
                    Some(rep),
                    &per_1k(value(&h64, |h| h.http.requests), cpu1),
                );
                cpu_h2.record(
                    Via::Mesh,
                    Some(rep),
                    &per_1k(value(&h2_64, |h| h.requests), cpu2),
                );
                for peak in [peak1, peak2].into_iter().flatten() {
                    rss_load.record(Via::Mesh, Some(rep), &Ok(peak / 1024.0));
                }
            }
            eprintln!(
                "  {:<8} h1: 1 conn {} (p50 {}, p99 {}), 64 conns {} (p50 {}, p99 {}); h2: 1 conn {}, 64 conns {}",
                path.name(),
                show(&value(&h1, rps), "req/s"),
                show(&value(&h1, |h| h.p50_us), "µs"),
                show(&value(&h1, |h| h.p99_us), "µs"),
                show(&value(&h64, rps), "req/s"),
                show(&value(&h64, |h| h.p50_us), "µs"),
                show(&value(&h64, |h| h.p99_us), "µs"),
                show(&value(&h2_1, |h: &H2| h.rps), "req/s"),
                show(&value(&h2_64, |h: &H2| h.rps), "req/s"),
            );
            for (what, e) in [
                ("wrk 1 connection", h1.as_ref().err()),
                ("wrk 64 connections", h64.as_ref().err()),
                ("h2load 1 connection", h2_1.as_ref().err()),
                ("h2load 64 connections", h2_64.as_ref().err()),
            ] {
                if let Some(why) = e {
                    eprintln!("  {} {what} FAILED: {why}", path.name());
                }
            }
        }
        let pairs = [WaypointRoute::RESILIENCE, WaypointRoute::OBSERVABILITY];
        for route in pairs.into_iter().flat_map(|pair| route_order(pair, rep)) {
            let url = route.url("/");
            let h1 = outcome(clients::wrk_latency(&mesh.client, &url, secs, 64));
            let h2 = outcome(clients::h2load(&mesh.client, &url, secs, 64));
            let side = route_side(route);
            let (case_h1, case_h2) = if WaypointRoute::RESILIENCE.contains(&route) {
                (&mut resilient_h1, &mut resilient_h2)
            } else {
                (&mut observed_h1, &mut observed_h2)
            };
            case_h1.record(side, Some(rep), &value(&h1, |h| h.http.rps));
            case_h2.record(side, Some(rep), &value(&h2, |h: &H2| h.rps));
            eprintln!(
                "  {:<15} h1: 64 conns {}; h2: 64 conns {}",
                route.name(),
                show(&value(&h1, |h| h.http.rps), "req/s"),
                show(&value(&h2, |h: &H2| h.rps), "req/s"),
            );
            for (what, e) in [
                ("wrk 64 connections", h1.as_ref().err()),
                ("h2load 64 connections", h2.as_ref().err()),
            ] {
                if let Some(why) = e {
                    eprintln!("  {} {what} FAILED: {why}", route.name());
                }
            }
        }
        before = probe(&mut probes, format!("after run {}", rep + 1));
        around.push(before);
        indicators.push(around);
    }
    let runs: Vec<RunMode> = indicators.iter().map(|i| mode::run_mode(i)).collect();
    let baseline = super::baseline_json(&probes, &indicators, &runs);
    let mut cases = target_cases(&grid);
    cases.extend([resilient_h1, resilient_h2, observed_h1, observed_h2]);
    cases.extend([cpu_h1, cpu_h2, rss_idle, rss_load, upload_mem, upload_rate]);
    Ok(L7Measured {
        grid,
        cases,
        runs,
        baseline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_comes_first_once_in_five_runs() {
        for rep in 0..5 {
            let o = order(rep);
            let mut sorted: Vec<usize> = o.iter().map(|p| p.index()).collect();
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2, 3, 4], "run {rep}: every path once");
        }
        let firsts: Vec<Path> = (0..5).map(|rep| order(rep)[0]).collect();
        assert_eq!(firsts, Path::ALL);
        assert_eq!(order(5), order(0));
    }

    #[test]
    fn the_routes_alternate_and_are_judged_within_5_percent() {
        use WaypointRoute::{Plain, Resilient};
        let orders: Vec<[WaypointRoute; 2]> = (0..4)
            .map(|rep| route_order(WaypointRoute::RESILIENCE, rep))
            .collect();
        assert_eq!(
            orders,
            [
                [Plain, Resilient],
                [Resilient, Plain],
                [Plain, Resilient],
                [Resilient, Plain]
            ]
        );
        let runs = [RunMode::In(Mode::Slow); 3];
        // (plain req/s per run, resilient req/s per run, verdict)
        let cases: &[(&[f64], &[f64], report::Verdict)] = &[
            (
                &[1000.0, 1010.0, 990.0],
                &[960.0, 950.0, 955.0],
                report::Verdict::Met,
            ),
            (
                &[1000.0, 1010.0, 990.0],
                &[940.0, 945.0, 949.0],
                report::Verdict::NotMet,
            ),
            (
                &[1000.0, 1000.0, 1000.0],
                &[1100.0, 1000.0, 1050.0],
                report::Verdict::Met,
            ),
        ];
        for (plain, resilient, want) in cases {
            let [mut h1, _] = resilience_cases();
            for (run, (p, r)) in plain.iter().zip(*resilient).enumerate() {
                h1.record(route_side(Plain), Some(run), &Ok(*p));
                h1.record(route_side(Resilient), Some(run), &Ok(*r));
            }
            assert_eq!(
                h1.verdict(&runs, Mode::Slow),
                *want,
                "{plain:?} {resilient:?}"
            );
        }
        let [mut h2, _] = resilience_cases();
        h2.record(route_side(Plain), Some(0), &Ok(1000.0));
        h2.record(
            route_side(Resilient),
            Some(0),
            &Err("h2load: 3 failed".into()),
        );
        assert_eq!(h2.verdict(&runs, Mode::Slow), report::Verdict::Failed);
        let targets = report::targets(&resilience_cases(), &runs);
        assert!(targets.contains("≥ 0.95× plain route"), "{targets}");
    }

    fn grid_with(values: &[(Metric, Path, &[f64])]) -> Grid {
        let mut g = Grid::new();
        for (m, p, vs) in values {
            for (run, v) in vs.iter().enumerate() {
                g.record(*m, *p, run, &Ok(*v));
            }
        }
        g
    }

    #[test]
    fn ratios_are_judged_against_the_named_proxy_per_mode() {
        let slow = RunMode::In(Mode::Slow);
        let fast = RunMode::In(Mode::Fast);
        let runs = [slow, slow, fast];
        let g = grid_with(&[
            (Metric::H1Rps1, Path::Nginx, &[1000.0, 1100.0, 3000.0]),
            (Metric::H1Rps1, Path::Waypoint, &[1200.0, 1300.0, 2000.0]),
            (Metric::H1P50At1, Path::L4, &[200.0, 210.0, 100.0]),
            (Metric::H1P50At1, Path::Waypoint, &[280.0, 290.0, 250.0]),
        ]);
        let cases = target_cases(&g);
        let by_key = |k: &str| cases.iter().find(|c| c.key == k).expect(k);
        // (row, slow verdict, fast verdict)
        let expected = [
            (
                "waypoint_vs_nginx_h1_rps_1",
                report::Verdict::Met,
                report::Verdict::NotMet,
            ),
            (
                "waypoint_added_p50_h1_1",
                report::Verdict::Met,
                report::Verdict::NotMet,
            ),
            (
                "waypoint_vs_haproxy_h1_rps_1",
                report::Verdict::NotObserved,
                report::Verdict::NotObserved,
            ),
        ];
        for (key, in_slow, in_fast) in expected {
            let c = by_key(key);
            assert_eq!(c.verdict(&runs, Mode::Slow), in_slow, "{key} slow");
            assert_eq!(c.verdict(&runs, Mode::Fast), in_fast, "{key} fast");
        }
        let targets = report::targets(&cases, &runs);
        assert!(targets.contains("≥ 1× nginx"), "{targets}");
        assert!(targets.contains("added over L4 mesh ≤ 100 µs"), "{targets}");
        assert!(targets.contains("met (1.19×)"), "{targets}");
    }

    #[test]
    fn a_failed_cell_fails_its_rows_and_shows_in_the_table() {
        let runs = [RunMode::In(Mode::Slow)];
        let mut g = grid_with(&[(Metric::H2Rps64, Path::Waypoint, &[5000.0])]);
        g.record(
            Metric::H2Rps64,
            Path::Nginx,
            0,
            &Err("h2load: 3 5xx responses".into()),
        );
        let cases = target_cases(&g);
        let c = cases
            .iter()
            .find(|c| c.key == "waypoint_vs_nginx_h2_rps_64")
            .expect("row");
        assert_eq!(c.verdict(&runs, Mode::Slow), report::Verdict::Failed);
        let table = g.table(&runs);
        let row = table
            .lines()
            .find(|l| l.starts_with("| HTTP/2 req/s, 64 connections"))
            .expect("row");
        assert_eq!(
            row,
            "| HTTP/2 req/s, 64 connections | req/s | slow (1) | — | — | 5000 | FAILED | — |"
        );
    }
}
