//! Outlier detection as Envoy does it for Istio's `outlierDetection`: per-endpoint consecutive
//! failure counters fed by each try's outcome, ejection at once when a counter reaches its
//! threshold (within the maximum ejection share), for the base ejection time times the number of
//! times ejected, ending at the next interval tick after that. Pure: time is a parameter.

use mesh_common::model::OutlierDetection;

use super::TryOutcome;

/// Outlier detection with defaults applied (Istio's and Envoy's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierConfig {
    /// Consecutive 5xx (and, unsplit, local-origin failures) before ejection; 0: off.
    pub consecutive_5xx: u32,
    /// Consecutive 502/503/504 (and, unsplit, local-origin failures) before ejection; 0: off.
    pub consecutive_gateway: u32,
    /// Consecutive local-origin failures before ejection when split; 0: off.
    pub consecutive_local: u32,
    /// Count local-origin failures apart.
    pub split: bool,
    /// Interval between ejection sweeps (ms): ejected endpoints return on a tick.
    pub interval_ms: u64,
    /// Base ejection time (ms).
    pub base_ejection_ms: u64,
    /// Longest ejection (ms): Envoy's `max_ejection_time`, 300 s, or the base when longer.
    pub max_ejection_ms: u64,
    /// Largest share of endpoints ejected at once (at least one may always be).
    pub max_ejection_percent: u32,
    /// Below this share of healthy endpoints, ejection is ignored (Envoy's panic threshold,
    /// which Istio sets from `minHealthPercent`; 0: never).
    pub min_health_percent: u32,
}

impl OutlierConfig {
    /// Defaults: 5 consecutive 5xx, gateway errors off, 5 local-origin failures (when split),
    /// interval 10 s, base ejection 30 s, max ejection 10 %, min health 0 %.
    pub fn from_model(o: &OutlierDetection) -> OutlierConfig {
        let base = o.base_ejection_time_ms.unwrap_or(30_000).max(1);
        OutlierConfig {
            consecutive_5xx: o.consecutive_5xx_errors.unwrap_or(5),
            consecutive_gateway: o.consecutive_gateway_errors.unwrap_or(0),
            consecutive_local: o.consecutive_local_origin_failures.unwrap_or(5),
            split: o.split_external_local_origin_errors,
            interval_ms: o.interval_ms.unwrap_or(10_000).max(1),
            base_ejection_ms: base,
            max_ejection_ms: base.max(300_000),
            max_ejection_percent: o.max_ejection_percent.unwrap_or(10).min(100),
            min_health_percent: o.min_health_percent.unwrap_or(0).min(100),
        }
    }
}

/// Counters of one endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Consecutive 5xx.
    pub c5xx: u32,
    /// Consecutive gateway errors.
    pub gateway: u32,
    /// Consecutive local-origin failures (split only).
    pub local: u32,
    /// The ejection multiplier: times ejected, less one per interval spent healthy since.
    pub times: u32,
    /// When the last ejection ended (ms), for the multiplier's decay.
    pub returned_ms: u64,
}

/// Why an endpoint crossed a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trip {
    /// Consecutive 5xx.
    Consecutive5xx,
    /// Consecutive gateway errors.
    Gateway,
    /// Consecutive local-origin failures.
    LocalOrigin,
}

impl Health {
    /// Counts one outcome; `Some` when a threshold is reached now (Envoy ejects on reaching it,
    /// not beyond). Unsplit, a local-origin failure counts as a 503, as Envoy maps it.
    pub fn record(&mut self, cfg: &OutlierConfig, outcome: TryOutcome) -> Option<Trip> {
        let status = match outcome {
            TryOutcome::Success => {
                self.c5xx = 0;
                self.gateway = 0;
                self.local = 0;
                return None;
            }
            TryOutcome::LocalOrigin if cfg.split => {
                self.local += 1;
                return (cfg.consecutive_local > 0 && self.local == cfg.consecutive_local)
                    .then_some(Trip::LocalOrigin);
            }
            TryOutcome::LocalOrigin => 503,
            TryOutcome::Status(s) => s,
        };
        self.local = 0;
        if status < 500 {
            self.c5xx = 0;
            self.gateway = 0;
            return None;
        }
        if matches!(status, 502..=504) {
            self.gateway += 1;
        } else {
            self.gateway = 0;
        }
        self.c5xx += 1;
        if cfg.consecutive_gateway > 0 && self.gateway == cfg.consecutive_gateway {
            return Some(Trip::Gateway);
        }
        (cfg.consecutive_5xx > 0 && self.c5xx == cfg.consecutive_5xx)
            .then_some(Trip::Consecutive5xx)
    }

    /// Ejects at `now`: resets the counters, raises the multiplier (after its decay) and returns
    /// when the ejection ends: the first interval tick (ticks at `epoch + k × interval`) at or
    /// after `now + base × multiplier` (capped at the maximum ejection time).
    pub fn eject(&mut self, cfg: &OutlierConfig, epoch: u64, now: u64) -> u64 {
        let healthy_ticks = now.saturating_sub(self.returned_ms) / cfg.interval_ms;
        let decayed = u64::from(self.times).saturating_sub(healthy_ticks);
        self.times = u32::try_from(decayed + 1).unwrap_or(u32::MAX);
        self.c5xx = 0;
        self.gateway = 0;
        self.local = 0;
        let duration =
            (cfg.base_ejection_ms.saturating_mul(u64::from(self.times))).min(cfg.max_ejection_ms);
        let until = now + duration;
        let since = until.saturating_sub(epoch);
        let end = epoch + since.div_ceil(cfg.interval_ms) * cfg.interval_ms;
        self.returned_ms = end;
        end.max(now + 1)
    }
}

/// Whether one more endpoint may be ejected with `ejected` of `total` out already: while the
/// ejected share is below the maximum, and always the first (as Envoy).
pub fn may_eject(ejected: usize, total: usize, max_percent: u32) -> bool {
    ejected == 0 || (ejected as u64 * 100) < total as u64 * u64::from(max_percent)
}

/// Whether ejections are ignored: fewer than `min_percent` of `total` endpoints are healthy
/// (Envoy's panic mode: every endpoint takes traffic).
pub fn panic_mode(healthy: usize, total: usize, min_percent: u32) -> bool {
    total > 0 && (healthy as u64 * 100) < total as u64 * u64::from(min_percent)
}

#[cfg(test)]
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;
    use TryOutcome::{LocalOrigin, Status, Success};

    fn cfg(o: OutlierDetection) -> OutlierConfig {
        OutlierConfig::from_model(&o)
    }

    #[test]
    fn thresholds() {
        let default = cfg(OutlierDetection::default());
        let gateway = cfg(OutlierDetection {
            consecutive_gateway_errors: Some(2),
            consecutive_5xx_errors: Some(0),
            ..Default::default()
        });
        let split = cfg(OutlierDetection {
            consecutive_local_origin_failures: Some(2),
            split_external_local_origin_errors: true,
            ..Default::default()
        });
        #[rustfmt::skip]
        let cases: Vec<(&str, &OutlierConfig, Vec<TryOutcome>, Option<(usize, Trip)>)> = vec![
            ("five 5xx trip on the fifth", &default, vec![Status(500); 6], Some((4, Trip::Consecutive5xx))),
            ("four 5xx do not", &default, vec![Status(500); 4], None),
            ("a success resets", &default, vec![Status(500), Status(500), Status(500), Status(500), Success, Status(500)], None),
            ("a 404 resets", &default, vec![Status(503), Status(503), Status(503), Status(503), Status(404), Status(503)], None),
            ("unsplit local origin counts as 5xx", &default, vec![LocalOrigin; 5], Some((4, Trip::Consecutive5xx))),
            ("gateway errors trip", &gateway, vec![Status(502), Status(504)], Some((1, Trip::Gateway))),
            ("a 500 breaks gateway errors", &gateway, vec![Status(502), Status(500), Status(503)], None),
            ("5xx off", &gateway, vec![Status(500); 10], None),
            ("split local origin apart", &split, vec![LocalOrigin, LocalOrigin], Some((1, Trip::LocalOrigin))),
            ("split: a 5xx ends the local run", &split, vec![LocalOrigin, Status(500), LocalOrigin], None),
            ("split: local failures do not count as 5xx", &split, vec![Status(500), Status(500), Status(500), Status(500), LocalOrigin, Status(500)], Some((5, Trip::Consecutive5xx))),
        ];
        for (name, cfg, outcomes, want) in cases {
            let mut h = Health::default();
            let got = outcomes
                .iter()
                .enumerate()
                .find_map(|(i, o)| h.record(cfg, *o).map(|t| (i, t)));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn ejection_time_grows_decays_and_ends_on_a_tick() {
        let c = cfg(OutlierDetection {
            interval_ms: Some(1_000),
            base_ejection_time_ms: Some(3_000),
            ..Default::default()
        });
        let mut h = Health::default();
        // Epoch 0, ejected at 10.5 s: 3 s → 13.5 s, the next tick is 14 s.
        assert_eq!(h.eject(&c, 0, 10_500), 14_000);
        // Ejected again at once after returning: twice the base → 14 + 6 = 20 s.
        assert_eq!(h.eject(&c, 0, 14_000), 20_000);
        // Ejected again 1 tick later: the multiplier decayed by one (2 → 1), +1 → 2: 6 s.
        assert_eq!(h.eject(&c, 0, 21_000), 27_000);
        // After a long healthy stretch, back to the base.
        assert_eq!(h.eject(&c, 0, 100_000), 103_000);
        // Capped at 300 s.
        let mut h = Health {
            times: 200,
            returned_ms: 0,
            ..Default::default()
        };
        assert_eq!(h.eject(&c, 0, 0), 300_000);
    }

    #[test]
    fn defaults() {
        let c = cfg(OutlierDetection::default());
        assert_eq!(
            (
                c.consecutive_5xx,
                c.consecutive_gateway,
                c.interval_ms,
                c.base_ejection_ms
            ),
            (5, 0, 10_000, 30_000)
        );
        assert_eq!((c.max_ejection_percent, c.min_health_percent), (10, 0));
    }

    #[test]
    fn ejection_share_and_panic() {
        #[rustfmt::skip]
        let cases = [
            // (ejected, total, max %, may eject)
            (0, 3, 10, true), (1, 3, 10, false), (0, 1, 10, true), (0, 3, 0, true),
            (1, 20, 10, true), (2, 20, 10, false), (2, 4, 50, false), (1, 4, 50, true),
            (9, 10, 100, true),
        ];
        for (ejected, total, max, want) in cases {
            assert_eq!(
                may_eject(ejected, total, max),
                want,
                "{ejected}/{total} at {max}%"
            );
        }
        #[rustfmt::skip]
        let panics = [(0, 3, 0, false), (0, 3, 50, true), (2, 4, 50, false), (1, 4, 50, true), (0, 0, 50, false)];
        for (healthy, total, min, want) in panics {
            assert_eq!(
                panic_mode(healthy, total, min),
                want,
                "{healthy}/{total} at {min}%"
            );
        }
    }
}
