//! The retry budget of one destination host, Linkerd's model: retries may add at most 20% to
//! the requests of the last 10 s, plus a reserve of 10 retries per second so a quiet host can
//! still retry; DestinationRule `connectionPool.http.maxRetries` caps the retries outstanding at
//! once (Envoy's `max_retries` circuit breaker). A refused retry leaves the try's failure as the
//! answer, with flag `URX`. Counting is lock-free: ten one-second buckets of atomics.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// Share of recent requests retries may add.
pub const RATIO: f64 = 0.2;
/// Retries per second allowed whatever the request rate.
pub const MIN_PER_SECOND: u32 = 10;
/// Seconds of history.
pub const WINDOW_SECONDS: u64 = 10;

/// Whether one more retry fits: `retries` so far in the window below `RATIO` of `requests` plus
/// the per-second reserve over the window, and fewer than `max_outstanding` retries in flight.
pub fn allows(requests: u64, retries: u64, outstanding: u32, max_outstanding: u32) -> bool {
    let allowed = (requests as f64 * RATIO) as u64 + u64::from(MIN_PER_SECOND) * WINDOW_SECONDS;
    retries < allowed && outstanding < max_outstanding
}

#[derive(Debug, Default)]
struct Bucket {
    second: AtomicU64,
    requests: AtomicU32,
    retries: AtomicU32,
}

/// One host's budget.
#[derive(Debug, Default)]
pub struct Budget {
    buckets: [Bucket; WINDOW_SECONDS as usize],
    outstanding: AtomicU32,
}

/// A retry the budget granted; outstanding until dropped.
#[derive(Debug)]
pub struct RetryPermit {
    budget: Arc<Budget>,
}

impl Drop for RetryPermit {
    fn drop(&mut self) {
        self.budget.outstanding.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Budget {
    fn bucket(&self, now_s: u64) -> &Bucket {
        let b = &self.buckets[(now_s % WINDOW_SECONDS) as usize];
        let seen = b.second.load(Ordering::Acquire);
        if seen != now_s
            && b.second
                .compare_exchange(seen, now_s, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            b.requests.store(0, Ordering::Release);
            b.retries.store(0, Ordering::Release);
        }
        b
    }

    /// Counts a request (its first try) at second `now_s`.
    pub fn deposit(&self, now_s: u64) {
        self.bucket(now_s).requests.fetch_add(1, Ordering::AcqRel);
    }

    fn totals(&self, now_s: u64) -> (u64, u64) {
        let low = now_s.saturating_sub(WINDOW_SECONDS - 1);
        self.buckets
            .iter()
            .filter(|b| (low..=now_s).contains(&b.second.load(Ordering::Acquire)))
            .fold((0, 0), |(q, r), b| {
                (
                    q + u64::from(b.requests.load(Ordering::Acquire)),
                    r + u64::from(b.retries.load(Ordering::Acquire)),
                )
            })
    }

    /// A retry at second `now_s`, if the budget and the cap allow it.
    pub fn withdraw(self: &Arc<Self>, now_s: u64, max_outstanding: u32) -> Option<RetryPermit> {
        let (requests, retries) = self.totals(now_s);
        let outstanding = self.outstanding.fetch_add(1, Ordering::AcqRel);
        let permit = RetryPermit {
            budget: self.clone(),
        };
        if !allows(requests, retries, outstanding, max_outstanding) {
            return None;
        }
        self.bucket(now_s).retries.fetch_add(1, Ordering::AcqRel);
        Some(permit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision() {
        #[rustfmt::skip]
        let cases = [
            // (requests, retries, outstanding, max outstanding, allowed)
            (0, 0, 0, u32::MAX, true),
            (0, 99, 0, u32::MAX, true),
            (0, 100, 0, u32::MAX, false),
            (1000, 299, 0, u32::MAX, true),
            (1000, 300, 0, u32::MAX, false),
            (1000, 0, 2, 3, true),
            (1000, 0, 3, 3, false),
            (1000, 0, 0, 0, false),
        ];
        for (requests, retries, outstanding, max, want) in cases {
            assert_eq!(
                allows(requests, retries, outstanding, max),
                want,
                "{requests} {retries} {outstanding} {max}"
            );
        }
    }

    #[test]
    fn the_window_forgets_and_permits_are_returned() {
        let budget = Arc::new(Budget::default());
        let granted = (0..150)
            .filter_map(|_| budget.withdraw(100, u32::MAX))
            .count();
        assert_eq!(granted, 100, "the reserve of a quiet host");
        for _ in 0..100 {
            budget.deposit(100);
        }
        assert!(
            budget.withdraw(105, u32::MAX).is_some(),
            "20 more from 100 requests"
        );
        assert!(budget.withdraw(115, u32::MAX).is_some(), "a new window");
        let held: Vec<_> = (0..2).filter_map(|_| budget.withdraw(200, 2)).collect();
        assert_eq!(held.len(), 2);
        assert!(
            budget.withdraw(200, 2).is_none(),
            "cap of outstanding retries"
        );
        drop(held);
        assert!(budget.withdraw(200, 2).is_some(), "permits returned");
    }
}
