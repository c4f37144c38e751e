//! The sampling decision for a request's span: the caller's decision when it made one (B3
//! debug, a sampled flag `1`, or `0`), else `randomSamplingPercentage` (Istio's default 1%).

use super::context::Extracted;

/// Whether the span is sampled, `draw` a uniform number in `[0, 1)`.
pub fn sampled(incoming: &Extracted, percentage: f64, draw: f64) -> bool {
    if incoming.debug {
        return true;
    }
    match incoming.sampled {
        Some(decided) => decided,
        None => draw * 100.0 < percentage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_callers_decision_wins_else_the_rate() {
        let deferred = Extracted::default();
        let yes = Extracted {
            sampled: Some(true),
            ..Extracted::default()
        };
        let no = Extracted {
            sampled: Some(false),
            ..Extracted::default()
        };
        let debug = Extracted {
            sampled: Some(false),
            debug: true,
            ..Extracted::default()
        };
        // (incoming, percentage, draw, sampled)
        let cases = [
            (yes, 0.0, 0.99, true),
            (no, 100.0, 0.0, false),
            (debug, 0.0, 0.99, true),
            (deferred, 1.0, 0.0099, true),
            (deferred, 1.0, 0.01, false),
            (deferred, 0.0, 0.0, false),
            (deferred, 100.0, 0.999_999, true),
            (deferred, 10.0, 0.05, true),
            (deferred, 10.0, 0.5, false),
        ];
        for (incoming, percentage, draw, want) in cases {
            assert_eq!(
                sampled(&incoming, percentage, draw),
                want,
                "{incoming:?} {percentage} {draw}"
            );
        }
    }
}
