//! The results: cases with their samples, targets from issue 6, the markdown table and the JSON.

use serde_json::{json, Value};

/// What a case must reach (issue 6), judged on medians.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// No target; measured for the record.
    None,
    /// mesh / direct at least this.
    RatioAtLeast(f64),
    /// mesh − direct at most this (same unit as the case).
    AddedAtMost(f64),
    /// mesh at most this (same unit as the case).
    AtMost(f64),
    /// mesh / direct at most this.
    RatioAtMost(f64),
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
    pub direct: Vec<f64>,
    /// Mesh samples.
    pub mesh: Vec<f64>,
    /// The target.
    pub target: Target,
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
        }
    }

    fn ratio(&self) -> Option<f64> {
        let (d, m) = (median(&self.direct)?, median(&self.mesh)?);
        (d > 0.0).then_some(m / d)
    }

    /// Whether the target is met: `None` when there is no target or nothing to judge.
    pub fn met(&self) -> Option<bool> {
        match self.target {
            Target::None => None,
            Target::RatioAtLeast(r) => self.ratio().map(|x| x >= r),
            Target::RatioAtMost(r) => self.ratio().map(|x| x <= r),
            Target::AddedAtMost(a) => Some(median(&self.mesh)? - median(&self.direct)? <= a),
            Target::AtMost(a) => median(&self.mesh).map(|m| m <= a),
        }
    }

    fn target_text(&self) -> String {
        match self.target {
            Target::None => "—".into(),
            Target::RatioAtLeast(r) => format!("≥ {r}× direct"),
            Target::AddedAtMost(a) => format!("added ≤ {a} {}", self.unit),
            Target::AtMost(a) => format!("≤ {a} {}", self.unit),
            Target::RatioAtMost(r) => format!("≤ {r}× direct"),
        }
    }

    fn mesh_text(&self) -> String {
        median(&self.mesh).map_or("—".into(), fmt)
    }

    fn ratio_text(&self) -> String {
        let Some(r) = self.ratio() else {
            return "—".into();
        };
        match self.target {
            Target::AddedAtMost(_) => match (median(&self.mesh), median(&self.direct)) {
                (Some(m), Some(d)) => format!("{r:.2}× (+{} {})", fmt(m - d), self.unit),
                _ => format!("{r:.2}×"),
            },
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

/// The markdown table.
pub fn table(cases: &[Case]) -> String {
    let mut out = String::from(
        "| case | unit | direct | mesh | ratio | target | met? |\n|---|---|---|---|---|---|---|\n",
    );
    for case in cases {
        let met = match case.met() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {met} |\n",
            case.label,
            case.unit,
            median(&case.direct).map_or("—".into(), fmt),
            case.mesh_text(),
            case.ratio_text(),
            case.target_text(),
        ));
    }
    out
}

/// The JSON document: machine, mode, and every case with medians and samples.
pub fn json(cases: &[Case], machine: &Value, mode: &str, seconds: f64) -> Value {
    let cases: Vec<Value> = cases
        .iter()
        .map(|c| {
            json!({
                "key": c.key,
                "label": c.label,
                "unit": c.unit,
                "direct": median(&c.direct),
                "mesh": median(&c.mesh),
                "ratio": c.ratio(),
                "target": c.target_text(),
                "met": c.met(),
                "direct_samples": c.direct,
                "mesh_samples": c.mesh,
            })
        })
        .collect();
    json!({
        "mode": mode,
        "machine": machine,
        "duration_seconds": seconds.round(),
        "cases": cases,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn targets_are_judged_on_medians() {
        let mut c = Case::new("t", "t", "Gbit/s", Target::RatioAtLeast(0.3));
        c.direct = vec![10.0, 10.0, 10.0];
        c.mesh = vec![2.0, 4.0, 3.5];
        assert_eq!(c.met(), Some(true));
        let mut l = Case::new("l", "l", "µs", Target::AddedAtMost(60.0));
        l.direct = vec![30.0];
        l.mesh = vec![100.0];
        assert_eq!(l.met(), Some(false));
        assert!(table(&[c, l]).contains("+70.0 µs"));
    }
}
