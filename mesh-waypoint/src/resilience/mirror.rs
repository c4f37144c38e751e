//! Shadow copies (VirtualService `mirror`/`mirrors`): which requests are copied, the shadow
//! authority (Envoy's `-shadow` host suffix), and the bound on copies in flight. The copy is sent
//! by a detached task with its own timeout and its response is discarded, so a slow or failing
//! mirror never delays or fails the primary; past [`MAX_IN_FLIGHT`] copies are dropped and
//! counted.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Copies in flight at once, per waypoint instance.
pub const MAX_IN_FLIGHT: u32 = 256;
/// A copy's time to its response headers when the rule sets no timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The authority of a shadow copy: `-shadow` after the host, before any port
/// (`reviews:9080` → `reviews-shadow:9080`), as Envoy does.
pub fn shadow_authority(authority: &str) -> String {
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => authority.split_at(i),
        _ => (authority, ""),
    };
    format!("{host}-shadow{port}")
}

/// Copies in flight.
#[derive(Debug, Default)]
pub struct Mirrors {
    in_flight: AtomicU32,
}

/// One copy in flight, until dropped.
#[derive(Debug)]
pub struct MirrorSlot(Arc<Mirrors>);

impl Drop for MirrorSlot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Mirrors {
    /// A place for one more copy, if fewer than [`MAX_IN_FLIGHT`] are in flight.
    pub fn slot(self: &Arc<Self>) -> Option<MirrorSlot> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_IN_FLIGHT).then_some(n + 1)
            })
            .ok()
            .map(|_| MirrorSlot(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_authorities() {
        #[rustfmt::skip]
        let cases = [
            ("reviews:9080", "reviews-shadow:9080"),
            ("reviews.apps.svc.cluster.local", "reviews.apps.svc.cluster.local-shadow"),
            ("198.19.0.1:80", "198.19.0.1-shadow:80"),
            ("[fd00::1]:80", "[fd00::1]-shadow:80"),
            ("[fd00::1]", "[fd00::1]-shadow"),
            ("", "-shadow"),
        ];
        for (authority, want) in cases {
            assert_eq!(shadow_authority(authority), want, "{authority}");
        }
    }

    #[test]
    fn copies_in_flight_are_bounded() {
        let m = Arc::new(Mirrors::default());
        let held: Vec<_> = (0..MAX_IN_FLIGHT + 5).filter_map(|_| m.slot()).collect();
        assert_eq!(held.len(), MAX_IN_FLIGHT as usize);
        drop(held);
        assert!(m.slot().is_some());
    }
}
