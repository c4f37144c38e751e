//! Which mode the direct baseline is in. On this machine kind the direct 2-node 64 B ping-pong
//! p50 is bimodal (≈ 21 µs or ≈ 60-75 µs, switching minutes apart, same pods), and the
//! latency-bound ratios move with it; so each run is classified from direct ping-pong probes
//! taken around it, and targets are judged per mode, mesh against the direct baseline of the
//! same runs.

use std::fmt;

/// A direct ping-pong p50 below this is the fast mode, at or above it the slow mode. Between the
/// two clusters seen on this machine kind (≈ 21 µs and ≈ 60-75 µs), far from both.
pub const FAST_BELOW_US: f64 = 40.0;

/// A mode of the direct baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Direct ping-pong p50 below [`FAST_BELOW_US`].
    Fast,
    /// Direct ping-pong p50 at or above [`FAST_BELOW_US`].
    Slow,
}

impl Mode {
    /// Both modes, in table order.
    pub const ALL: [Mode; 2] = [Mode::Fast, Mode::Slow];

    /// The key in the JSON.
    pub fn key(self) -> &'static str {
        match self {
            Mode::Fast => "fast",
            Mode::Slow => "slow",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// The mode of one direct ping-pong p50.
pub fn classify(p50_us: f64) -> Mode {
    if p50_us < FAST_BELOW_US {
        Mode::Fast
    } else {
        Mode::Slow
    }
}

/// The mode of one run (direct and mesh halves), from every direct ping-pong p50 taken around
/// and within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// Every indicator in one mode: the run's figures count for that mode.
    In(Mode),
    /// The indicators disagree (the mode switched during the run): its figures count for
    /// neither mode.
    Mixed,
    /// No indicator could be measured.
    Unknown,
}

impl fmt::Display for RunMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunMode::In(mode) => mode.fmt(f),
            RunMode::Mixed => f.write_str("mixed"),
            RunMode::Unknown => f.write_str("unknown"),
        }
    }
}

/// Classifies a run from its indicators (`None`: a probe that failed, ignored).
pub fn run_mode(indicators: &[Option<f64>]) -> RunMode {
    let mut modes = indicators.iter().flatten().map(|&p50| classify(p50));
    let Some(first) = modes.next() else {
        return RunMode::Unknown;
    };
    if modes.all(|m| m == first) {
        RunMode::In(first)
    } else {
        RunMode::Mixed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_samples_are_classified_by_the_threshold() {
        for (p50, mode) in [
            (15.8, Mode::Fast),
            (21.0, Mode::Fast),
            (39.9, Mode::Fast),
            (40.0, Mode::Slow),
            (60.3, Mode::Slow),
            (75.0, Mode::Slow),
        ] {
            assert_eq!(classify(p50), mode, "{p50} µs");
        }
    }

    #[test]
    fn a_run_has_a_mode_only_if_all_its_indicators_agree() {
        let cases: [(&[Option<f64>], RunMode); 6] = [
            (
                &[Some(21.0), Some(22.5), Some(20.1)],
                RunMode::In(Mode::Fast),
            ),
            (
                &[Some(63.0), Some(70.2), Some(68.9)],
                RunMode::In(Mode::Slow),
            ),
            (&[Some(21.0), Some(64.0), Some(21.5)], RunMode::Mixed),
            (&[Some(21.0), None, Some(21.5)], RunMode::In(Mode::Fast)),
            (&[None, None], RunMode::Unknown),
            (&[], RunMode::Unknown),
        ];
        for (indicators, expected) in cases {
            assert_eq!(run_mode(indicators), expected, "{indicators:?}");
        }
    }
}
