//! Admission of accepted connections: at most N open on the listener and M from one peer
//! address; a connection over either cap is refused (closed at once).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The listener has its maximum of connections open.
    ListenerFull,
    /// This peer address has its maximum of connections open.
    PeerFull,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    /// Open connections per peer address; an address leaves the map with its last connection,
    /// so the map never holds more than `total` entries.
    per_peer: HashMap<IpAddr, usize>,
}

/// The open connections of one listener and its caps.
#[derive(Debug)]
pub struct Admission {
    max_total: usize,
    max_per_peer: usize,
    open: Mutex<Open>,
}

/// One admitted connection; dropping it gives its place back.
#[derive(Debug)]
pub struct Permit {
    admission: Arc<Admission>,
    peer: IpAddr,
}

impl Admission {
    /// Caps of `max_total` connections, `max_per_peer` from one address.
    pub fn new(max_total: usize, max_per_peer: usize) -> Admission {
        Admission {
            max_total,
            max_per_peer,
            open: Mutex::default(),
        }
    }

    /// Takes a place for a connection from `peer`, or says which cap refuses it.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Permit, Refusal> {
        let peer = canonical(peer);
        let mut open = self.lock();
        let from_peer = open.per_peer.get(&peer).copied().unwrap_or(0);
        decide(open.total, from_peer, self.max_total, self.max_per_peer)?;
        open.total += 1;
        *open.per_peer.entry(peer).or_insert(0) += 1;
        Ok(Permit {
            admission: self.clone(),
            peer,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }

    fn release(&self, peer: IpAddr) {
        let mut open = self.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_peer.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                open.per_peer.remove(&peer);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        // The counts stay consistent even if a holder panicked: every update is one statement.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.admission.release(self.peer);
    }
}

/// Whether one more connection fits, given how many are open in all and from its peer.
pub fn decide(
    total: usize,
    from_peer: usize,
    max_total: usize,
    max_per_peer: usize,
) -> Result<(), Refusal> {
    if total >= max_total {
        return Err(Refusal::ListenerFull);
    }
    if from_peer >= max_per_peer {
        return Err(Refusal::PeerFull);
    }
    Ok(())
}

/// An IPv4 client of a dual-stack listener arrives as `::ffff:a.b.c.d`: count it as `a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Logs refusals once per burst: the first one, then at most one line per interval with the
/// number refused since, so a flood of connections does not become a flood of log lines.
#[derive(Debug, Default)]
pub(super) struct RefusalLog {
    last: Option<Instant>,
    suppressed: u64,
}

const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl RefusalLog {
    pub(super) fn refused(&mut self, listener: &str, refusal: Refusal, peer: IpAddr) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < REFUSAL_LOG_INTERVAL)
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(
            listener,
            reason = ?refusal,
            %peer,
            refused_since_last_line = self.suppressed,
            "HTTP connection refused over the connection cap"
        );
        self.last = Some(now);
        self.suppressed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_decide_in_order_listener_then_peer() {
        let cases = [
            // total, from peer, max total, max per peer, expected
            (0, 0, 2, 1, Ok(())),
            (1, 0, 2, 1, Ok(())),
            (1, 1, 2, 1, Err(Refusal::PeerFull)),
            (2, 0, 2, 1, Err(Refusal::ListenerFull)),
            (2, 1, 2, 1, Err(Refusal::ListenerFull)),
            (0, 0, 0, 1, Err(Refusal::ListenerFull)),
        ];
        for (total, peer, max_total, max_peer, want) in cases {
            assert_eq!(
                decide(total, peer, max_total, max_peer),
                want,
                "total {total} peer {peer} caps {max_total}/{max_peer}"
            );
        }
    }

    #[test]
    fn permits_give_their_place_back_and_mapped_v4_is_one_peer() {
        let admission = Arc::new(Admission::new(3, 2));
        let v4: IpAddr = "198.18.1.10".parse().expect("literal");
        let mapped: IpAddr = "::ffff:198.18.1.10".parse().expect("literal");
        let other: IpAddr = "198.18.1.11".parse().expect("literal");
        let a = admission.admit(v4).expect("first");
        let b = admission.admit(mapped).expect("second, same peer");
        assert_eq!(admission.admit(v4).err(), Some(Refusal::PeerFull));
        let c = admission.admit(other).expect("other peer");
        assert_eq!(admission.admit(other).err(), Some(Refusal::ListenerFull));
        drop(a);
        assert_eq!(admission.open(), 2);
        let _d = admission.admit(v4).expect("place given back");
        drop((b, c));
        assert_eq!(admission.open(), 1);
        assert_eq!(admission.lock().per_peer.len(), 1);
    }
}
