//! Locality-aware balancing as Istio configures Envoy: priority levels by closeness to the
//! source (same region/zone/subzone, same zone, same region, a failover region, the rest) or by
//! `failoverPriority` labels; the share of traffic each level takes (Envoy's overprovisioning
//! factor 1.4: a level keeps all traffic while 1/1.4 ≈ 71 % of its endpoints are healthy, then
//! spills the rest down); and `distribute` weights over localities. Pure functions.

use std::collections::BTreeMap;

use mesh_common::model::{Locality, LocalityDistribute, LocalityFailover};

/// Envoy's overprovisioning factor, in percent.
pub const OVERPROVISIONING: u64 = 140;

/// Most priority levels used (labels beyond are ignored).
pub const MAX_LEVELS: usize = 8;

/// Whether a locality rule (`region`, `region/zone`, `region/zone/subzone`, `*` in any part, or
/// a shorter prefix) covers `l`.
pub fn matches(rule: &str, l: &Locality) -> bool {
    let parts = [l.region.as_str(), l.zone.as_str(), l.subzone.as_str()];
    for (i, want) in rule.split('/').enumerate() {
        if want == "*" {
            return true;
        }
        match parts.get(i) {
            Some(have) if *have == want => {}
            _ => return false,
        }
    }
    true
}

/// The priority level of an endpoint at `dst` for a source at `src` (Istio's failover levels):
/// 0 same region, zone and subzone; 1 same region and zone; 2 same region; 3 a failover region
/// of the source's; 4 the rest.
pub fn level(src: &Locality, dst: &Locality, failover: &[LocalityFailover]) -> usize {
    if src.region == dst.region {
        if src.zone == dst.zone {
            if src.subzone == dst.subzone {
                return 0;
            }
            return 1;
        }
        return 2;
    }
    if failover
        .iter()
        .any(|f| f.from == src.region && f.to == dst.region)
    {
        return 3;
    }
    4
}

/// The value of a `failoverPriority` label for a workload: the topology labels name the
/// locality parts.
fn label_value<'a>(
    name: &str,
    labels: &'a BTreeMap<String, String>,
    locality: &'a Locality,
) -> Option<&'a str> {
    match name {
        "topology.kubernetes.io/region" => Some(locality.region.as_str()),
        "topology.kubernetes.io/zone" => Some(locality.zone.as_str()),
        "topology.istio.io/subzone" => Some(locality.subzone.as_str()),
        _ => labels.get(name).map(String::as_str),
    }
    .filter(|v| !v.is_empty())
}

/// The priority level by `failoverPriority` labels (Istio): 0 when the endpoint matches the
/// source on every listed label, 1 on all but the last, …, `names.len()` on none of the first.
pub fn label_level(
    names: &[String],
    src: (&BTreeMap<String, String>, &Locality),
    dst: (&BTreeMap<String, String>, &Locality),
) -> usize {
    let names = &names[..names.len().min(MAX_LEVELS - 1)];
    let matched = names
        .iter()
        .take_while(|n| {
            let s = label_value(n, src.0, src.1);
            s.is_some() && s == label_value(n, dst.0, dst.1)
        })
        .count();
    names.len() - matched
}

/// The share (percent, summing to 100, or all 0 when no level has a healthy endpoint) each
/// level takes, from each level's (healthy, total) endpoints: a level takes up to its health
/// (healthy share × 1.4, at most 100 %) of what the levels before it left; when the levels'
/// health sums to less than 100 the shares are scaled to 100 (Envoy's normalization).
pub fn priority_loads(levels: &[(usize, usize)]) -> [u32; MAX_LEVELS] {
    let mut health = [0u64; MAX_LEVELS];
    for (i, (healthy, total)) in levels.iter().take(MAX_LEVELS).enumerate() {
        if *total > 0 {
            health[i] = (*healthy as u64 * OVERPROVISIONING / *total as u64).min(100);
        }
    }
    let sum: u64 = health.iter().sum();
    let mut loads = [0u32; MAX_LEVELS];
    if sum == 0 {
        return loads;
    }
    if sum < 100 {
        // Scale, giving the rounding remainder to the first level with health.
        let mut given = 0;
        for i in 0..MAX_LEVELS {
            loads[i] = u32::try_from(health[i] * 100 / sum).unwrap_or(0);
            given += loads[i];
        }
        if let Some(i) = health.iter().position(|h| *h > 0) {
            loads[i] += 100 - given;
        }
        return loads;
    }
    let mut left = 100u64;
    for i in 0..MAX_LEVELS {
        let take = health[i].min(left);
        loads[i] = u32::try_from(take).unwrap_or(0);
        left -= take;
    }
    loads
}

/// Picks a level by its load with `roll` in 0..100.
pub fn pick_level(loads: &[u32; MAX_LEVELS], roll: u32) -> Option<usize> {
    let mut acc = 0;
    for (i, l) in loads.iter().enumerate() {
        acc += l;
        if roll < acc {
            return Some(i);
        }
    }
    None
}

/// The `distribute` entry for a source, if any (the first whose `from` covers it).
pub fn distribute_for<'d>(
    rules: &'d [LocalityDistribute],
    src: &Locality,
) -> Option<&'d LocalityDistribute> {
    if src.is_empty() {
        return None;
    }
    rules.iter().find(|r| matches(&r.from, src))
}

/// Each of `localities`' weight under a `distribute` entry (Istio): a locality takes the first
/// `to` entry that covers it, whose weight is shared evenly by every locality it covers; a
/// locality no entry covers takes none.
pub fn locality_weights(rule: &LocalityDistribute, localities: &[&Locality]) -> Vec<u64> {
    let owner: Vec<Option<&String>> = localities
        .iter()
        .map(|l| rule.to.keys().find(|to| matches(to, l)))
        .collect();
    owner
        .iter()
        .map(|o| match o {
            None => 0,
            Some(to) => {
                let sharing = owner.iter().filter(|x| *x == o).count() as u64;
                // Scaled so shares of one entry stay exact enough.
                u64::from(rule.to[*to]) * 1_000_000 / sharing.max(1)
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;

    fn loc(s: &str) -> Locality {
        let mut p = s.split('/').map(str::to_owned);
        Locality {
            region: p.next().unwrap_or_default(),
            zone: p.next().unwrap_or_default(),
            subzone: p.next().unwrap_or_default(),
        }
    }

    #[test]
    fn rules_match_prefixes_and_wildcards() {
        #[rustfmt::skip]
        let cases = [
            ("us", "us/a/x", true), ("us/a", "us/a/x", true), ("us/a/x", "us/a/x", true),
            ("us/*", "us/b/y", true), ("*", "eu/a/x", true), ("us/a/*", "us/b/x", false),
            ("us/b", "us/a/x", false), ("eu", "us/a/x", false), ("us/a/x/extra", "us/a/x", false),
        ];
        for (rule, l, want) in cases {
            assert_eq!(matches(rule, &loc(l)), want, "{rule} on {l}");
        }
    }

    #[test]
    fn levels_by_closeness_and_failover() {
        let failover = [LocalityFailover {
            from: "us".into(),
            to: "eu".into(),
        }];
        #[rustfmt::skip]
        let cases = [
            ("us/a/x", "us/a/x", 0), ("us/a/x", "us/a/y", 1), ("us/a/x", "us/b/x", 2),
            ("us/a/x", "eu/a/x", 3), ("us/a/x", "ap/a/x", 4), ("eu/a/x", "us/a/x", 4),
            ("us/a", "us/a", 0),
        ];
        for (src, dst, want) in cases {
            assert_eq!(
                level(&loc(src), &loc(dst), &failover),
                want,
                "{src} → {dst}"
            );
        }
        assert_eq!(level(&loc("us/a"), &loc("eu/a"), &[]), 4);
    }

    #[test]
    fn label_levels() {
        let names: Vec<String> = [
            "topology.kubernetes.io/region",
            "topology.kubernetes.io/zone",
            "tier",
        ]
        .map(str::to_owned)
        .to_vec();
        let gold: BTreeMap<String, String> = [("tier".to_owned(), "gold".to_owned())].into();
        let none = BTreeMap::new();
        #[rustfmt::skip]
        let cases = [
            ("us/a", &gold, "us/a", &gold, 0), ("us/a", &gold, "us/a", &none, 1),
            ("us/a", &gold, "us/b", &gold, 2), ("us/a", &gold, "eu/a", &gold, 3),
            ("", &gold, "", &gold, 3),
        ];
        for (s, sl, d, dl, want) in cases {
            assert_eq!(
                label_level(&names, (sl, &loc(s)), (dl, &loc(d))),
                want,
                "{s} → {d}"
            );
        }
    }

    #[test]
    fn loads_spill_with_overprovisioning() {
        #[rustfmt::skip]
        let cases: [(&[(usize, usize)], [u32; 3]); 7] = [
            (&[(4, 4), (4, 4)], [100, 0, 0]),
            (&[(3, 4), (4, 4)], [100, 0, 0]),   // 75 % × 1.4 ≥ 100
            (&[(2, 4), (4, 4)], [70, 30, 0]),   // 50 % × 1.4 = 70
            (&[(0, 4), (4, 4)], [0, 100, 0]),
            (&[(0, 2), (0, 0), (1, 4)], [0, 0, 100]), // 35, scaled to 100
            (&[(1, 4), (1, 4), (0, 4)], [50, 50, 0]), // 35 + 35 = 70, scaled
            (&[(0, 4), (0, 4)], [0, 0, 0]),
        ];
        for (levels, want) in cases {
            let got = priority_loads(levels);
            assert_eq!(&got[..3], &want, "{levels:?}");
        }
        let loads = priority_loads(&[(2, 4), (4, 4)]);
        assert_eq!(pick_level(&loads, 0), Some(0));
        assert_eq!(pick_level(&loads, 69), Some(0));
        assert_eq!(pick_level(&loads, 70), Some(1));
        assert_eq!(pick_level(&[0; MAX_LEVELS], 10), None);
    }

    #[test]
    fn distribute_weights() {
        let rule = LocalityDistribute {
            from: "us/a/*".into(),
            to: [("us/a/*".to_owned(), 80), ("us/b/*".to_owned(), 20)].into(),
        };
        let rules = [rule.clone()];
        assert!(distribute_for(&rules, &loc("us/a/x")).is_some());
        assert!(distribute_for(&rules, &loc("us/b/x")).is_none());
        assert!(distribute_for(&rules, &Locality::default()).is_none());
        let (ax, ay, b, eu) = (loc("us/a/x"), loc("us/a/y"), loc("us/b/z"), loc("eu/a/x"));
        let w = locality_weights(&rule, &[&ax, &ay, &b, &eu]);
        assert_eq!(w, vec![40_000_000, 40_000_000, 20_000_000, 0]);
    }
}
