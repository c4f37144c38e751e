//! Inbound steering: `sk_lookup`, attached to each enrolled pod's network namespace, hands new TCP
//! connections for the pod's address to the agent's plaintext listener (15006) in that pod.
//!
//! Not steered: the agent's own ports, loopback, spliced same-node connections (the agent already
//! authorized them: see `splice`), and connections whose source is the pod itself
//! (the agent delivers to the application from inside the pod, so its delivery connections have
//! remote address == local address and must reach the application).

use crate::splice;
use aya_ebpf::{
    bindings::{bpf_sk_lookup, sk_action::SK_PASS},
    macros::{map, sk_lookup},
    maps::SockHash,
    programs::SkLookupContext,
};
use mesh_common::{
    kernel::{ListenerKey, AF_INET, AF_INET6},
    ports::AGENT_POD_PORTS,
};

const IPPROTO_TCP: u32 = 6;

/// Pod address -> the agent's inbound plaintext listener in that pod.
#[map]
static INBOUND_LISTENERS: SockHash<ListenerKey> = SockHash::with_max_entries(4_096, 0);

#[sk_lookup]
pub fn mesh_sk_lookup(ctx: SkLookupContext) -> u32 {
    // SAFETY: the kernel hands a valid bpf_sk_lookup to sk_lookup programs.
    let l: &bpf_sk_lookup = unsafe { &*ctx.lookup };
    if l.protocol != IPPROTO_TCP
        || AGENT_POD_PORTS
            .iter()
            .any(|p| u32::from(*p) == l.local_port)
    {
        return SK_PASS;
    }
    let key = match l.family {
        AF_INET => {
            if u32::from_be(l.local_ip4) >> 24 == 127 || l.remote_ip4 == l.local_ip4 {
                return SK_PASS;
            }
            let arrival = splice::flow_key(
                AF_INET,
                [l.local_ip4, 0, 0, 0],
                [l.remote_ip4, 0, 0, 0],
                l.local_port,
                u32::from(l.remote_port),
            );
            if arrival.is_some_and(|key| splice::is_spliced_arrival(&key)) {
                return SK_PASS;
            }
            ListenerKey {
                addr: [l.local_ip4, 0, 0, 0],
                family: AF_INET,
            }
        }
        AF_INET6 => {
            let local = read_ip6(&l.local_ip6);
            let remote = read_ip6(&l.remote_ip6);
            if local == [0, 0, 0, 1u32.to_be()] || remote == local {
                return SK_PASS;
            }
            let arrival = splice::flow_key(
                AF_INET6,
                local,
                remote,
                l.local_port,
                u32::from(l.remote_port),
            );
            if arrival.is_some_and(|key| splice::is_spliced_arrival(&key)) {
                return SK_PASS;
            }
            ListenerKey {
                addr: local,
                family: AF_INET6,
            }
        }
        _ => return SK_PASS,
    };
    // No listener for this address (pod not enrolled, or being removed): ordinary lookup.
    let _ = INBOUND_LISTENERS.redirect_sk_lookup(&ctx, key, 0);
    SK_PASS
}

/// Reads an address word by word: the verifier only allows context loads at constant offsets
/// from the context pointer, which a whole-array copy or compare does not produce.
#[inline(always)]
pub(crate) fn read_ip6(field: &[u32; 4]) -> [u32; 4] {
    // SAFETY: `field` points into the live context; each read is an aligned u32 load.
    unsafe {
        [
            core::ptr::read_volatile(&field[0]),
            core::ptr::read_volatile(&field[1]),
            core::ptr::read_volatile(&field[2]),
            core::ptr::read_volatile(&field[3]),
        ]
    }
}

/// Writes an address word by word, for the same reason as [`read_ip6`].
#[inline(always)]
pub(crate) fn write_ip6(field: &mut [u32; 4], ip: [u32; 4]) {
    // SAFETY: `field` points into the live context; each write is an aligned u32 store.
    unsafe {
        core::ptr::write_volatile(&mut field[0], ip[0]);
        core::ptr::write_volatile(&mut field[1], ip[1]);
        core::ptr::write_volatile(&mut field[2], ip[2]);
        core::ptr::write_volatile(&mut field[3], ip[3]);
    }
}
