//! The results: cases with their samples, targets from issue 6, judged per mode of the direct
//! baseline (see `mode`); failed cases (a client reported errors) excluded; the markdown tables
//! and the JSON.

use serde_json::{json, Value};

use super::mode::{Mode, RunMode};

/// What a case must reach (issue 6), judged on medians.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// No target; measured for the record.
    None,
    /// mesh / direct at least this.
    RatioAtLeast(f64),
    /// mesh − direct at most this (same unit as the case).
    AddedAtMost(f64),
    /// mesh at most this (same unit as the case); no baseline, so no mode.
    AtMost(f64),
    /// mesh / direct at most this.
    RatioAtMost(f64),
}

impl Target {
    /// Whether the mesh figure `mesh` meets the target against the baseline `direct`; `None`
    /// without a target, or when the target needs a baseline and there is none.
    pub fn met(self, direct: Option<f64>, mesh: f64) -> Option<bool> {
        let ratio = || direct.filter(|d| *d > 0.0).map(|d| mesh / d);
        match self {
            Target::None => None,
            Target::RatioAtLeast(r) => ratio().map(|x| x >= r),
            Target::RatioAtMost(r) => ratio().map(|x| x <= r),
            Target::AddedAtMost(a) => direct.map(|d| mesh - d <= a),
            Target::AtMost(a) => Some(mesh <= a),
        }
    }
}

/// Which side of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Not captured: the baseline.
    Direct,
    /// Through the mesh.
    Mesh,
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, so `{via:<6}` aligns the bench's per-run lines.
        f.pad(match self {
            Via::Direct => "direct",
            Via::Mesh => "mesh",
        })
    }
}

/// One measurement and the run it belongs to (`None`: measured once, outside the runs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Index of the run.
    pub run: Option<usize>,
    /// The figure.
    pub value: f64,
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Case {
    /// Stable key for the JSON.
    pub key: &'static str,
    /// What the row says.
    pub label: &'static str,
    /// Unit of the values.
    pub unit: &'static str,
    /// Direct samples (empty: no direct counterpart).
    pub direct: Vec<Sample>,
    /// Mesh samples.
    pub mesh: Vec<Sample>,
    /// The target.
    pub target: Target,
    /// Why the case failed (a client reported errors), one entry per failed client run; a case
    /// with any is failed: no figure of it is shown or judged.
    pub failures: Vec<String>,
    /// What the baseline samples are, as the target names it ("direct" unless
    /// [`Case::against`] says otherwise: the waypoint rows compare it with nginx, HAProxy and
    /// the L4 mesh).
    pub baseline: &'static str,
}

/// The verdict on a target in one mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No target.
    NoTarget,
    /// Met by the medians of that mode's runs.
    Met,
    /// Not met by them.
    NotMet,
    /// No run of the case was in that mode.
    NotObserved,
    /// A client reported errors: nothing is claimed.
    Failed,
}

impl Verdict {
    fn text(self) -> &'static str {
        match self {
            Verdict::NoTarget => "—",
            Verdict::Met => "met",
            Verdict::NotMet => "**not met**",
            Verdict::NotObserved => "not observed",
            Verdict::Failed => "**failed**",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Verdict::NoTarget => "no_target",
            Verdict::Met => "met",
            Verdict::NotMet => "not_met",
            Verdict::NotObserved => "not_observed",
            Verdict::Failed => "failed",
        }
    }
}

/// Medians of the samples of one mode's runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    /// Direct median (None: no baseline).
    pub direct: Option<f64>,
    /// Mesh median.
    pub mesh: f64,
    /// Runs they come from (0: measured once, outside the runs).
    pub runs: usize,
}

/// The values of the samples taken in runs of `mode` (per `runs`, indexed by run).
pub fn in_mode(samples: &[Sample], runs: &[RunMode], mode: Mode) -> Vec<f64> {
    samples
        .iter()
        .filter(|s| s.run.and_then(|r| runs.get(r)) == Some(&RunMode::In(mode)))
        .map(|s| s.value)
        .collect()
}

impl Case {
    /// A case with no samples yet.
    pub fn new(key: &'static str, label: &'static str, unit: &'static str, target: Target) -> Case {
        Case {
            key,
            label,
            unit,
            direct: Vec::new(),
            mesh: Vec::new(),
            target,
            failures: Vec::new(),
            baseline: "direct",
        }
    }

    /// The same case with its baseline (the `direct` samples) named `baseline` in the target.
    pub fn against(self, baseline: &'static str) -> Case {
        Case { baseline, ..self }
    }

    /// Records one client run of `via` in `run`: its figure, or why it failed.
    pub fn record(&mut self, via: Via, run: Option<usize>, outcome: &Result<f64, String>) {
        match outcome {
            Ok(value) => {
                let sample = Sample { run, value: *value };
                match via {
                    Via::Direct => self.direct.push(sample),
                    Via::Mesh => self.mesh.push(sample),
                }
            }
            Err(why) => {
                let at = run.map_or(String::new(), |r| format!("run {}, ", r + 1));
                self.failures.push(format!("{at}{via}: {why}"));
            }
        }
    }

    /// Whether the case's figures do not depend on the baseline's mode (no direct side: memory,
    /// CPU, measured once or on the mesh only).
    pub fn mode_free(&self) -> bool {
        self.direct.is_empty()
            && !matches!(
                self.target,
                Target::RatioAtLeast(_) | Target::RatioAtMost(_) | Target::AddedAtMost(_)
            )
    }

    /// The figures of one mode: medians of the samples of runs in that mode (all samples for a
    /// mode-free case); `None` when no run of the case was in that mode.
    pub fn figures(&self, runs: &[RunMode], mode: Mode) -> Option<Figures> {
        if self.mode_free() {
            let values: Vec<f64> = self.mesh.iter().map(|s| s.value).collect();
            return Some(Figures {
                direct: None,
                mesh: median(&values)?,
                runs: self.mesh.iter().filter(|s| s.run.is_some()).count(),
            });
        }
        let mesh = in_mode(&self.mesh, runs, mode);
        let direct = in_mode(&self.direct, runs, mode);
        if direct.is_empty() && !self.direct.is_empty() {
            return None;
        }
        Some(Figures {
            direct: median(&direct),
            mesh: median(&mesh)?,
            runs: mesh.len(),
        })
    }

    /// The verdict on the target in one mode.
    pub fn verdict(&self, runs: &[RunMode], mode: Mode) -> Verdict {
        if !self.failures.is_empty() {
            return Verdict::Failed;
        }
        if matches!(self.target, Target::None) {
            return Verdict::NoTarget;
        }
        match self.figures(runs, mode) {
            None => Verdict::NotObserved,
            Some(f) => match self.target.met(f.direct, f.mesh) {
                Some(true) => Verdict::Met,
                Some(false) => Verdict::NotMet,
                None => Verdict::NotObserved,
            },
        }
    }

    fn target_text(&self) -> String {
        match self.target {
            Target::None => "—".into(),
            Target::RatioAtLeast(r) => format!("≥ {r}× {}", self.baseline),
            Target::AddedAtMost(a) if self.baseline == "direct" => {
                format!("added ≤ {a} {}", self.unit)
            }
            Target::AddedAtMost(a) => format!("added over {} ≤ {a} {}", self.baseline, self.unit),
            Target::AtMost(a) => format!("≤ {a} {}", self.unit),
            Target::RatioAtMost(r) => format!("≤ {r}× {}", self.baseline),
        }
    }

    fn comparison_text(&self, f: &Figures) -> String {
        let Some(d) = f.direct.filter(|d| *d > 0.0) else {
            return "—".into();
        };
        let r = f.mesh / d;
        match self.target {
            Target::AddedAtMost(_) => format!("{r:.2}× (+{} {})", fmt(f.mesh - d), self.unit),
            _ => format!("{r:.2}×"),
        }
    }
}

/// The median of the samples (mean of the middle two for an even count).
pub fn median(samples: &[f64]) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    Some(if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    })
}

/// Three significant digits or so, without scientific notation.
fn fmt(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// The figures table: one row per case and observed mode (one row for mode-free cases, one
/// `FAILED` row for failed ones).
pub fn table(cases: &[Case], runs: &[RunMode]) -> String {
    table_headed(cases, runs, "direct", "mesh")
}

/// [`table`] with other names for the baseline and measured columns.
pub fn table_headed(cases: &[Case], runs: &[RunMode], baseline: &str, measured: &str) -> String {
    let mut out = format!(
        "| case | unit | baseline mode (runs) | {baseline} | {measured} | ratio | target | met? |\n|---|---|---|---|---|---|---|---|\n",
    );
    for case in cases {
        if !case.failures.is_empty() {
            out.push_str(&format!(
                "| {} | {} | — | FAILED | FAILED | — | {} | **failed** |\n",
                case.label,
                case.unit,
                case.target_text()
            ));
            continue;
        }
        let modes: &[Mode] = if case.mode_free() {
            &[Mode::Fast]
        } else {
            &Mode::ALL
        };
        let mut shown = false;
        for &mode in modes {
            let Some(f) = case.figures(runs, mode) else {
                continue;
            };
            shown = true;
            let mode_text = if case.mode_free() {
                "any".to_owned()
            } else {
                format!("{mode} ({})", f.runs)
            };
            let verdict = case.verdict(runs, mode).text();
            out.push_str(&format!(
                "| {} | {} | {mode_text} | {} | {} | {} | {} | {verdict} |\n",
                case.label,
                case.unit,
                f.direct.map_or("—".into(), fmt),
                fmt(f.mesh),
                case.comparison_text(&f),
                case.target_text(),
            ));
        }
        if !shown {
            out.push_str(&format!(
                "| {} | {} | no run in one mode | — | — | — | {} | not observed |\n",
                case.label,
                case.unit,
                case.target_text()
            ));
        }
    }
    out
}

/// The targets table: each target's verdict in each mode.
pub fn targets(cases: &[Case], runs: &[RunMode]) -> String {
    let mut out = String::from("| target | fast mode | slow mode |\n|---|---|---|\n");
    for case in cases.iter().filter(|c| !matches!(c.target, Target::None)) {
        let cell = |mode: Mode| {
            let verdict = case.verdict(runs, mode);
            match (verdict, case.figures(runs, mode)) {
                (Verdict::Met | Verdict::NotMet, Some(f)) if f.direct.is_some() => {
                    format!("{} ({})", verdict.text(), case.comparison_text(&f))
                }
                (Verdict::Met | Verdict::NotMet, Some(f)) => {
                    format!(
                        "{} ({} {}, any mode)",
                        verdict.text(),
                        fmt(f.mesh),
                        case.unit
                    )
                }
                _ => verdict.text().to_owned(),
            }
        };
        out.push_str(&format!(
            "| {}: {} | {} | {} |\n",
            case.label,
            case.target_text(),
            cell(Mode::Fast),
            cell(Mode::Slow)
        ));
    }
    out
}

/// Why each failed case failed, one line per failed client run.
pub fn failures(cases: &[Case]) -> Vec<String> {
    cases
        .iter()
        .flat_map(|c| c.failures.iter().map(move |f| format!("{}: {f}", c.key)))
        .collect()
}

/// The JSON document: machine, mode, the baseline's modes, and every case with its per-mode
/// figures and verdicts, its samples (with their runs) and its failures.
pub fn json(
    cases: &[Case],
    runs: &[RunMode],
    baseline: Value,
    machine: &Value,
    mode: &str,
    seconds: f64,
) -> Value {
    let samples = |s: &[Sample]| -> Vec<Value> {
        s.iter()
            .map(|s| json!({"run": s.run.map(|r| r + 1), "value": s.value}))
            .collect()
    };
    let cases: Vec<Value> = cases
        .iter()
        .map(|c| {
            let per_mode: serde_json::Map<String, Value> = Mode::ALL
                .iter()
                .map(|&m| {
                    let f = if c.failures.is_empty() {
                        c.figures(runs, m)
                    } else {
                        None
                    };
                    (
                        m.key().to_owned(),
                        json!({
                            "direct": f.and_then(|f| f.direct),
                            "mesh": f.map(|f| f.mesh),
                            "runs": f.map(|f| f.runs),
                            "verdict": c.verdict(runs, m).key(),
                        }),
                    )
                })
                .collect();
            json!({
                "key": c.key,
                "label": c.label,
                "unit": c.unit,
                "target": c.target_text(),
                "baseline": c.baseline,
                "mode_free": c.mode_free(),
                "failed": !c.failures.is_empty(),
                "failures": c.failures,
                "per_mode": per_mode,
                "direct_samples": samples(&c.direct),
                "mesh_samples": samples(&c.mesh),
            })
        })
        .collect();
    json!({
        "mode": mode,
        "machine": machine,
        "duration_seconds": seconds.round(),
        "baseline": baseline,
        "cases": cases,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(values: &[(usize, f64)]) -> Vec<Sample> {
        values
            .iter()
            .map(|&(run, value)| Sample {
                run: Some(run),
                value,
            })
            .collect()
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn targets_are_met_on_medians() {
        // (target, direct, mesh, met?)
        let cases = [
            (Target::RatioAtLeast(0.3), Some(10.0), 3.0, Some(true)),
            (Target::RatioAtLeast(0.3), Some(10.0), 2.9, Some(false)),
            (Target::RatioAtLeast(0.3), None, 2.9, None),
            (Target::AddedAtMost(60.0), Some(21.0), 100.0, Some(false)),
            (Target::AddedAtMost(60.0), Some(68.9), 103.0, Some(true)),
            (Target::AtMost(4.0), None, 3.1, Some(true)),
            (Target::RatioAtMost(1.0), Some(55.0), 49.9, Some(true)),
            (Target::None, Some(1.0), 1.0, None),
        ];
        for (target, direct, mesh, met) in cases {
            assert_eq!(
                target.met(direct, mesh),
                met,
                "{target:?} {direct:?} {mesh}"
            );
        }
    }

    /// The bimodal case of issue 10: direct ≈ 21 µs in fast runs, ≈ 65 µs in slow ones, the mesh
    /// ≈ 100 µs in both. The added p50 is met only in the slow mode.
    fn p50_case() -> Case {
        let mut c = Case::new("latency_p50", "p50", "µs", Target::AddedAtMost(60.0));
        c.direct = samples(&[(0, 21.0), (1, 65.0), (2, 22.0), (3, 40.0), (4, 66.0)]);
        c.mesh = samples(&[(0, 100.0), (1, 104.0), (2, 101.0), (3, 103.0), (4, 105.0)]);
        c
    }

    #[test]
    fn each_mode_is_judged_against_its_own_baseline() {
        use Mode::{Fast, Slow};
        let fast = RunMode::In(Fast);
        let slow = RunMode::In(Slow);
        // (what, run modes, fast verdict, slow verdict)
        let cases = [
            (
                "both modes",
                vec![fast, slow, fast, RunMode::Mixed, slow],
                Verdict::NotMet,
                Verdict::Met,
            ),
            (
                "slow mode only",
                vec![RunMode::Mixed, slow, RunMode::Mixed, RunMode::Unknown, slow],
                Verdict::NotObserved,
                Verdict::Met,
            ),
            (
                "fast mode only",
                vec![fast, RunMode::Mixed, fast, RunMode::Mixed, RunMode::Mixed],
                Verdict::NotMet,
                Verdict::NotObserved,
            ),
            // Judged on all runs together, as before, the slow runs would hide the fast ones.
            (
                "every run taken as slow",
                vec![slow; 5],
                Verdict::NotObserved,
                Verdict::NotMet,
            ),
            (
                "every run mixed or unknown",
                vec![
                    RunMode::Mixed,
                    RunMode::Unknown,
                    RunMode::Mixed,
                    RunMode::Mixed,
                    RunMode::Mixed,
                ],
                Verdict::NotObserved,
                Verdict::NotObserved,
            ),
        ];
        let c = p50_case();
        for (what, runs, in_fast, in_slow) in cases {
            assert_eq!(c.verdict(&runs, Fast), in_fast, "{what}: fast");
            assert_eq!(c.verdict(&runs, Slow), in_slow, "{what}: slow");
        }
        // The mixed run 4 (direct 40 µs) counts for neither mode.
        let runs = [fast, slow, fast, RunMode::Mixed, slow];
        let f = c.figures(&runs, Fast).expect("fast runs");
        assert_eq!((f.direct, f.mesh, f.runs), (Some(21.5), 100.5, 2));
        let s = c.figures(&runs, Slow).expect("slow runs");
        assert_eq!((s.direct, s.mesh, s.runs), (Some(65.5), 104.5, 2));
        let targets = targets(&[c], &runs);
        assert!(
            targets.contains("**not met** (4.67× (+79.0 µs))"),
            "{targets}"
        );
        assert!(targets.contains("| met (1.60× (+39.0 µs)) |"), "{targets}");
    }

    #[test]
    fn a_case_whose_client_reported_errors_is_failed_and_shows_no_figure() {
        let runs = [RunMode::In(Mode::Slow); 5];
        let mut c = p50_case();
        c.record(Via::Mesh, Some(2), &Err("wrk: 3 non-2xx responses".into()));
        assert_eq!(c.mesh.len(), 5, "the failed run adds no sample");
        for mode in Mode::ALL {
            assert_eq!(c.verdict(&runs, mode), Verdict::Failed);
        }
        let table = table(std::slice::from_ref(&c), &runs);
        assert!(
            table.contains("| FAILED | FAILED |") && !table.contains("104"),
            "{table}"
        );
        assert_eq!(
            failures(&[c]),
            ["latency_p50: run 3, mesh: wrk: 3 non-2xx responses"]
        );
        // A case without failures records its sample.
        let mut ok = Case::new("k", "k", "req/s", Target::None);
        ok.record(Via::Direct, Some(0), &Ok(5.0));
        assert_eq!(
            ok.direct,
            [Sample {
                run: Some(0),
                value: 5.0
            }]
        );
    }

    #[test]
    fn a_mode_free_case_is_judged_once() {
        let mut c = Case::new("rss", "rss", "KiB", Target::AtMost(4.0));
        c.record(Via::Mesh, None, &Ok(3.1));
        let runs = [RunMode::In(Mode::Slow)];
        assert!(c.mode_free());
        assert_eq!(c.verdict(&runs, Mode::Fast), Verdict::Met);
        assert_eq!(c.verdict(&runs, Mode::Slow), Verdict::Met);
        let table = table(std::slice::from_ref(&c), &runs);
        assert_eq!(table.matches("| any |").count(), 1, "{table}");
    }
}
