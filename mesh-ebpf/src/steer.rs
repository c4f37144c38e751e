//! Inbound steering: `sk_lookup`, attached to each enrolled pod's network namespace, hands new TCP
//! connections for the pod's address to the agent's plaintext listener (15006) in that pod.
//!
//! Not steered: the agent's own ports, loopback, spliced same-node connections (the agent already
//! authorized them: see `splice`), and connections whose source is the pod itself
//! (the agent delivers to the application from inside the pod, so its delivery connections have
//! remote address == local address and must reach the application).
//!
//! The agent's ports keep their ordinary lookup: HBONE must reach the pod's 15008 server, 15001
//! listens on loopback only (so `<pod>:15001` is reset by the kernel), and a direct connection to
//! `<pod>:15006` reaches the 15006 listener as itself, whose local address then names an agent
//! port: the agent refuses it (`mesh-agent/src/proxy/inbound.rs`) instead of delivering it to
//! itself. Steering them to 15006 would gain nothing and would break HBONE.

use crate::addr::{endpoints, is_loopback};
use crate::splice;
use aya_ebpf::{
    bindings::{bpf_sk_lookup, sk_action::SK_PASS},
    macros::{map, sk_lookup},
    maps::SockHash,
    programs::SkLookupContext,
};
use mesh_common::{kernel::ListenerKey, ports::AGENT_POD_PORTS};

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
    let Some((local, remote)) = endpoints(
        l.family,
        (l.local_ip4, l.remote_ip4),
        (&l.local_ip6, &l.remote_ip6),
    ) else {
        return SK_PASS;
    };
    if is_loopback(l.family, &local) || remote == local {
        return SK_PASS;
    }
    let arrival = splice::flow_key(
        l.family,
        local,
        remote,
        l.local_port,
        u32::from(l.remote_port),
    );
    if splice::is_spliced_arrival(&arrival) {
        return SK_PASS;
    }
    let key = ListenerKey {
        addr: local,
        family: l.family,
    };
    // No listener for this address (pod not enrolled, or being removed): ordinary lookup.
    let _ = INBOUND_LISTENERS.redirect_sk_lookup(&ctx, key, 0);
    SK_PASS
}
