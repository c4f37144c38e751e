//! The algorithms proper, over the candidates left after health, locality and retry filtering:
//! round robin, least request (power of two random choices), random, each weighted by slow
//! start when an endpoint is warming up. Pure: the counter, the active counts and the random
//! numbers are parameters.

/// Envoy's slow-start floor: a new endpoint starts at 10 % of its weight.
pub const MIN_WEIGHT_PERCENT: u64 = 10;

/// Slow-start weight (per mille) of an endpoint `age_ms` old in a `window_ms` window: linear
/// from 10 % to 100 % (Envoy's `aggression` 1); `None` window or age beyond it: full weight.
pub fn warmup_weight(age_ms: u64, window_ms: Option<u64>) -> u64 {
    match window_ms {
        Some(w) if w > 0 && age_ms < w => (age_ms * 1000 / w).max(MIN_WEIGHT_PERCENT * 10),
        _ => 1000,
    }
}

/// What the algorithms see of a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cand {
    /// Index in the backend's endpoint list.
    pub index: u32,
    /// Active requests.
    pub active: u64,
    /// Weight, per mille (slow start).
    pub weight: u64,
}

/// The algorithms that pick among candidates (hashing and pass-through are apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Round robin (weighted random while an endpoint warms up).
    RoundRobin,
    /// Power of two random choices on active requests (active/weight while one warms up).
    LeastRequest,
    /// Uniform random.
    Random,
}

/// Picks one of `n` candidates (`cand(k)` is the k-th): `counter` is the round-robin position,
/// `rand` yields uniform random numbers; `weighted` says a candidate warms up (weights differ).
pub fn choose_by(
    alg: Algorithm,
    n: usize,
    cand: &dyn Fn(usize) -> Cand,
    weighted: bool,
    counter: usize,
    rand: &mut dyn FnMut() -> u64,
) -> Option<u32> {
    if n == 0 {
        return None;
    }
    let slot = |r: u64| usize::try_from(r % n as u64).unwrap_or(0);
    let chosen = match alg {
        Algorithm::Random => cand(slot(rand())),
        Algorithm::RoundRobin if weighted => weighted_random(n, cand, |c| c.weight, rand()),
        Algorithm::RoundRobin => cand(counter % n),
        Algorithm::LeastRequest if weighted => {
            // Envoy with unequal weights: weight / (active + 1).
            weighted_random(n, cand, |c| c.weight * 1000 / (c.active + 1), rand())
        }
        Algorithm::LeastRequest => {
            let i = slot(rand());
            let a = cand(i);
            if n == 1 {
                a
            } else {
                // A second, distinct choice.
                let step = 1 + usize::try_from(rand() % (n as u64 - 1)).unwrap_or(0);
                let b = cand((i + step) % n);
                if b.active < a.active {
                    b
                } else {
                    a
                }
            }
        }
    };
    Some(chosen.index)
}

/// [`choose_by`] over a slice.
pub fn choose(
    alg: Algorithm,
    cands: &[Cand],
    counter: usize,
    rand: &mut dyn FnMut() -> u64,
) -> Option<u32> {
    let weighted = cands.iter().any(|c| c.weight != cands[0].weight);
    choose_by(alg, cands.len(), &|k| cands[k], weighted, counter, rand)
}

fn weighted_random(
    n: usize,
    cand: &dyn Fn(usize) -> Cand,
    weight: impl Fn(&Cand) -> u64,
    r: u64,
) -> Cand {
    let total: u64 = (0..n).map(|k| weight(&cand(k))).sum();
    if total == 0 {
        return cand(usize::try_from(r % n as u64).unwrap_or(0));
    }
    let mut roll = r % total;
    for k in 0..n {
        let c = cand(k);
        let w = weight(&c);
        if roll < w {
            return c;
        }
        roll -= w;
    }
    cand(n - 1)
}

#[cfg(test)]
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;

    fn rng(seed: u64) -> impl FnMut() -> u64 {
        let mut r = fastrand::Rng::with_seed(seed);
        move || r.u64(..)
    }

    fn shares(alg: Algorithm, cands: &[Cand], picks: usize) -> Vec<f64> {
        let mut rand = rng(7);
        let mut counts = vec![0usize; cands.len()];
        for i in 0..picks {
            let k = choose(alg, cands, i, &mut rand).unwrap_or(0) as usize;
            counts[k] += 1;
        }
        counts.iter().map(|c| *c as f64 / picks as f64).collect()
    }

    fn cands(actives: &[u64], weights: &[u64]) -> Vec<Cand> {
        actives
            .iter()
            .zip(weights)
            .enumerate()
            .map(|(i, (a, w))| Cand {
                index: i as u32,
                active: *a,
                weight: *w,
            })
            .collect()
    }

    #[test]
    fn distribution_shares() {
        #[rustfmt::skip]
        let cases: Vec<(&str, Algorithm, Vec<Cand>, Vec<f64>, f64)> = vec![
            ("round robin is exact", Algorithm::RoundRobin, cands(&[0, 0, 0, 0], &[1000; 4]), vec![0.25; 4], 0.0),
            ("random is even", Algorithm::Random, cands(&[0, 0, 0, 0], &[1000; 4]), vec![0.25; 4], 0.01),
            // P2C over 3 with one busy: the busy one wins only when both picks are it — never
            // (distinct picks), so it gets nothing; the idle ones split.
            ("least request avoids the busy", Algorithm::LeastRequest, cands(&[5, 0, 0], &[1000; 3]), vec![0.0, 0.5, 0.5], 0.01),
            // Two busy, one idle: the idle one wins whenever picked (2 of 3 pairs).
            ("least request prefers the idle", Algorithm::LeastRequest, cands(&[3, 3, 0], &[1000; 3]), vec![1.0 / 6.0, 1.0 / 6.0, 2.0 / 3.0], 0.01),
            ("round robin weighted while warming", Algorithm::RoundRobin, cands(&[0, 0], &[1000, 250]), vec![0.8, 0.2], 0.01),
            ("least request weighted while warming", Algorithm::LeastRequest, cands(&[0, 0], &[1000, 250]), vec![0.8, 0.2], 0.01),
        ];
        for (name, alg, c, want, tol) in cases {
            let got = shares(alg, &c, 40_000);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= tol + 1e-9, "{name}: {got:?} vs {want:?}");
            }
        }
        assert_eq!(choose(Algorithm::Random, &[], 0, &mut rng(1)), None);
    }

    #[test]
    fn warmup_ramps_linearly_from_ten_percent() {
        #[rustfmt::skip]
        let cases = [
            (0, Some(10_000), 100), (500, Some(10_000), 100), (2_500, Some(10_000), 250),
            (5_000, Some(10_000), 500), (9_999, Some(10_000), 999), (10_000, Some(10_000), 1000),
            (0, None, 1000), (0, Some(0), 1000),
        ];
        for (age, window, want) in cases {
            assert_eq!(warmup_weight(age, window), want, "{age} of {window:?}");
        }
    }
}
