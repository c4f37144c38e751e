//! Refusals logged once per burst, not once per connection: a hostile client opening thousands
//! of connections must not turn the agent's log into the bottleneck. The first refusal of a kind
//! is logged at once; later ones within the window are only counted, and the next one logged
//! after the window says how many were not.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a burst's later refusals stay unlogged.
pub const BURST_WINDOW: Duration = Duration::from_secs(10);

/// Kinds kept at most; past it, kinds whose window has passed are forgotten (a kind may be a
/// policy name, which the configuration, not the code, decides).
pub const MAX_KINDS: usize = 4096;

/// Per-kind logging windows, bounded by [`MAX_KINDS`].
#[derive(Debug)]
pub struct BurstLog {
    window: Duration,
    kinds: Mutex<HashMap<String, Window>>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    logged_at: Instant,
    suppressed: u64,
}

impl Default for BurstLog {
    fn default() -> Self {
        BurstLog::new(BURST_WINDOW)
    }
}

impl BurstLog {
    /// A log with the given window.
    pub fn new(window: Duration) -> BurstLog {
        BurstLog {
            window,
            kinds: Mutex::new(HashMap::new()),
        }
    }

    /// Whether an event of `kind` at `now` is to be logged: `Some(n)` with the number of events
    /// of that kind not logged since the last logged one, `None` to stay quiet.
    pub fn admit(&self, kind: &str, now: Instant) -> Option<u64> {
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        if kinds.len() >= MAX_KINDS && !kinds.contains_key(kind) {
            let window = self.window;
            kinds.retain(|_, w| now.saturating_duration_since(w.logged_at) < window);
            if kinds.len() >= MAX_KINDS {
                return None; // every kind is in a burst: count, do not log
            }
        }
        match kinds.get_mut(kind) {
            Some(w) if now.saturating_duration_since(w.logged_at) < self.window => {
                w.suppressed += 1;
                None
            }
            Some(w) => {
                let suppressed = w.suppressed;
                *w = Window {
                    logged_at: now,
                    suppressed: 0,
                };
                Some(suppressed)
            }
            None => {
                kinds.insert(
                    kind.to_owned(),
                    Window {
                        logged_at: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_of_a_burst_is_logged_and_the_rest_counted() {
        let log = BurstLog::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // (kind, seconds after start, expected)
        let cases = [
            ("agent_port", 0, Some(0)),
            ("agent_port", 1, None),
            ("agent_port", 9, None),
            ("waypoint_unavailable", 9, Some(0)),
            ("agent_port", 10, Some(2)),
            ("agent_port", 11, None),
            ("agent_port", 30, Some(1)),
            ("agent_port", 41, Some(0)),
        ];
        for (kind, s, want) in cases {
            assert_eq!(log.admit(kind, at(s)), want, "{kind} at {s} s");
        }
    }
}
