//! Exponential backoff with jitter, for retrying failed certificate requests.

use std::time::Duration;

/// Settings of the retry backoff.
#[derive(Debug, Clone, Copy)]
pub struct BackoffConfig {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Growth factor per failure.
    pub multiplier: f64,
    /// Random spread: each delay is scaled by a factor in `[1 - jitter, 1 + jitter]`.
    pub jitter: f64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

/// The state of one retry sequence.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    failures: u32,
}

impl Backoff {
    /// A fresh sequence.
    pub fn new(config: BackoffConfig) -> Self {
        Backoff {
            config,
            failures: 0,
        }
    }

    /// The delay before the next attempt, after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self
            .config
            .multiplier
            .max(1.0)
            .powi(self.failures.min(64) as i32);
        self.failures = self.failures.saturating_add(1);
        let base = self.config.initial.as_secs_f64() * exp;
        let capped = base.min(self.config.max.as_secs_f64());
        let jitter = self.config.jitter.clamp(0.0, 1.0);
        let factor = 1.0 - jitter + 2.0 * jitter * fastrand::f64();
        Duration::from_secs_f64((capped * factor).max(0.0))
    }

    /// Forgets past failures (after a success).
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_jitter_and_caps() {
        let config = BackoffConfig {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(8),
            multiplier: 2.0,
            jitter: 0.2,
        };
        let mut b = Backoff::new(config);
        for base in [1.0, 2.0, 4.0, 8.0, 8.0, 8.0] {
            let d = b.next_delay().as_secs_f64();
            assert!(
                d >= base * 0.8 - 1e-9 && d <= base * 1.2 + 1e-9,
                "{d} vs base {base}"
            );
        }
        b.reset();
        let d = b.next_delay().as_secs_f64();
        assert!((0.8..=1.2).contains(&d), "reset starts over: {d}");
    }
}
