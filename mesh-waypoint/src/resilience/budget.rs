//! The retry budget of one destination, Envoy's `retry_budget`: retries in flight at most 20%
//! of the requests in flight, and never fewer than 3 allowed (so a quiet destination can still
//! retry); DestinationRule `connectionPool.http.maxRetries` caps the retries in flight too
//! (Envoy's `max_retries` circuit breaker). A refused retry leaves the try's failure as the
//! answer, with flag `URX`: a failing destination under load gets few retries, not a multiple
//! of its load. Counting is two atomics.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Share of the requests in flight that may be retrying, in percent.
pub const PERCENT: u32 = 20;
/// Retries in flight allowed whatever the number of requests.
pub const MIN_CONCURRENCY: u32 = 3;

/// Whether one more retry fits: fewer than 20% of `active` requests (at least 3) retrying, and
/// fewer than `max_retries`.
pub fn allows(active: u32, retrying: u32, max_retries: u32) -> bool {
    let budget = (u64::from(active) * u64::from(PERCENT) / 100).max(u64::from(MIN_CONCURRENCY));
    u64::from(retrying) < budget && retrying < max_retries
}

/// One destination's budget.
#[derive(Debug, Default)]
pub struct Budget {
    active: AtomicU32,
    retrying: AtomicU32,
}

/// A request in flight (counted until dropped).
#[derive(Debug)]
pub struct Active(Arc<Budget>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A retry the budget granted; in flight until dropped.
#[derive(Debug)]
pub struct RetryPermit(Arc<Budget>);

impl Drop for RetryPermit {
    fn drop(&mut self) {
        self.0.retrying.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Budget {
    /// Counts a request in flight.
    pub fn enter(self: &Arc<Self>) -> Active {
        self.active.fetch_add(1, Ordering::AcqRel);
        Active(self.clone())
    }

    /// A retry, if the budget and `max_retries` allow it.
    pub fn withdraw(self: &Arc<Self>, max_retries: u32) -> Option<RetryPermit> {
        let active = self.active.load(Ordering::Acquire);
        self.retrying
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
                allows(active, r, max_retries).then_some(r + 1)
            })
            .ok()
            .map(|_| RetryPermit(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision() {
        #[rustfmt::skip]
        let cases = [
            // (active, retrying, max_retries, allowed)
            (1, 0, u32::MAX, true),
            (1, 2, u32::MAX, true),
            (1, 3, u32::MAX, false),
            (20, 3, u32::MAX, true),
            (20, 4, u32::MAX, false),
            (100, 19, u32::MAX, true),
            (100, 20, u32::MAX, false),
            (100, 1, 1, false),
            (100, 0, 0, false),
        ];
        for (active, retrying, max, want) in cases {
            assert_eq!(
                allows(active, retrying, max),
                want,
                "{active} {retrying} {max}"
            );
        }
    }

    #[test]
    fn permits_are_counted_and_returned() {
        let budget = Arc::new(Budget::default());
        let requests: Vec<_> = (0..20).map(|_| budget.enter()).collect();
        let held: Vec<_> = (0..10).filter_map(|_| budget.withdraw(u32::MAX)).collect();
        assert_eq!(held.len(), 4, "20% of 20 requests");
        drop(requests);
        drop(held);
        let held: Vec<_> = (0..10).filter_map(|_| budget.withdraw(u32::MAX)).collect();
        assert_eq!(held.len(), 3, "the minimum");
        drop(held);
        assert_eq!(budget.withdraw(0).map(drop), None, "maxRetries 0");
    }
}
