//! The `load` client: `n` GETs over `c` concurrent workers, each on its own keep-alive
//! connection, summed into one line of statuses, servers, errors and latency percentiles.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::task::JoinSet;

use super::args::ClientOptions;
use super::client::{parse_target, worker, Run};
use super::json::emit;

/// The `p`-th percentile (0..=100, nearest rank) of sorted values: the smallest value with at
/// least `p`% of them at or below it; `None` for no values.
pub fn percentile(sorted: &[u64], p: u32) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let len = sorted.len() as u64;
    // ceil(p·len/100), at least the first.
    let rank = (u64::from(p.min(100)) * len).div_ceil(100).max(1);
    let index = usize::try_from(rank - 1).unwrap_or(usize::MAX);
    sorted.get(index).or(sorted.last()).copied()
}

/// Microseconds as milliseconds (JSON number, µs precision), or null.
fn ms(us: Option<u64>) -> Value {
    us.map_or(Value::Null, |us| json!(us as f64 / 1000.0))
}

/// The line `load` prints for what its workers saw.
pub fn report(mut run: Run) -> Value {
    run.latencies_us.sort_unstable();
    let lat = &run.latencies_us;
    let mut v = json!({
        "statuses": run.tally.statuses,
        "servers": run.tally.servers,
        "errors": run.tally.errors,
        "connections": run.tally.connections,
        "p50_ms": ms(percentile(lat, 50)),
        "p99_ms": ms(percentile(lat, 99)),
        "max_ms": ms(lat.last().copied()),
    });
    if let (Some(first), Some(map)) = (run.tally.first_error, v.as_object_mut()) {
        map.insert("first_error".into(), Value::String(first));
    }
    v
}

/// `n` GETs of `url` over `opts.concurrency` workers; prints the [`report`].
pub async fn load(url: &str, n: u64, opts: &ClientOptions) -> anyhow::Result<()> {
    let target = Arc::new(parse_target(url)?);
    let opts = Arc::new(opts.clone());
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..opts.concurrency.min(n) {
        let (target, opts, next) = (target.clone(), opts.clone(), next.clone());
        workers.spawn(async move { worker(&target, &opts, &next, n).await });
    }
    let mut run = Run::default();
    while let Some(joined) = workers.join_next().await {
        run.merge(joined?);
    }
    emit(&report(run))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::client::Tally;
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let hundred: Vec<u64> = (1..=100).collect();
        let cases: &[(&[u64], u32, Option<u64>)] = &[
            (&[], 50, None),
            (&[7], 0, Some(7)),
            (&[7], 50, Some(7)),
            (&[7], 100, Some(7)),
            (&[1, 2], 50, Some(1)),
            (&[1, 2], 51, Some(2)),
            (&[1, 2, 3, 4], 50, Some(2)),
            (&[1, 2, 3, 4], 99, Some(4)),
            (&hundred, 50, Some(50)),
            (&hundred, 99, Some(99)),
            (&hundred, 100, Some(100)),
            (&hundred, 0, Some(1)),
            (&hundred, 200, Some(100)),
        ];
        for (values, p, want) in cases {
            assert_eq!(percentile(values, *p), *want, "p{p} of {values:?}");
        }
    }

    #[test]
    fn runs_merge_and_report() {
        let t0 = Instant::now();
        let mut a = Run {
            latencies_us: vec![3000, 1000],
            first_error_at: Some(t0 + Duration::from_millis(5)),
            ..Run::default()
        };
        a.tally.answered(200, "v1".into());
        a.tally.answered(503, "v1".into());
        a.tally.errors = 1;
        a.tally.connections = 2;
        a.tally.first_error = Some("later".into());
        let mut b = Run {
            latencies_us: vec![2500],
            first_error_at: Some(t0),
            ..Run::default()
        };
        b.tally.answered(200, "v2".into());
        b.tally.errors = 1;
        b.tally.connections = 1;
        b.tally.first_error = Some("earlier".into());
        let mut run = Run::default();
        run.merge(a);
        run.merge(b);
        assert_eq!(
            report(run),
            json!({"statuses": {"200": 2, "503": 1}, "servers": {"v1": 2, "v2": 1},
                "errors": 2, "connections": 3, "p50_ms": 2.5, "p99_ms": 3.0, "max_ms": 3.0,
                "first_error": "earlier"})
        );
        let empty = Run {
            tally: Tally::default(),
            ..Run::default()
        };
        assert_eq!(
            report(empty),
            json!({"statuses": {}, "servers": {}, "errors": 0, "connections": 0,
                "p50_ms": null, "p99_ms": null, "max_ms": null})
        );
    }
}
