//! Outbound capture: `cgroup/connect{4,6}` rewrite a pod's TCP connects to non-loopback
//! destinations, whatever their port, into the agent's in-pod listener; `sockops` re-keys the
//! original destination.
//!
//! The programs are attached only to the cgroups of enrolled pods, so the agent's own sockets
//! (created by the agent's threads, in the agent's cgroup, even when they work inside a pod's
//! netns) are never captured. No port is exempt: a connect to an agent port (15001/15006/15008)
//! of any address is captured too, and the agent's outbound route refuses it, so an application
//! cannot reach an agent listener around the agent's checks.

use crate::addr::{is_loopback_v4, is_loopback_v6, read_ip6, v4_mapped, write_ip6};
use crate::splice::{self, Fast};
use aya_ebpf::{
    bindings::{
        bpf_sock_addr, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_TCP_CONNECT_CB,
    },
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::{cgroup_sock_addr, map, sock_ops},
    maps::LruHashMap,
    programs::{SockAddrContext, SockOpsContext},
    EbpfContext,
};
use aya_log_ebpf::debug;
use mesh_common::{
    kernel::{FastKey, OrigDstKey, SockAddr, AF_INET, AF_INET6},
    ports::OUTBOUND_CAPTURE,
};

/// Allow the connect (cgroup sock_addr programs return 1 to allow, 0 to refuse).
const ALLOW: i32 = 1;
/// Refuse the connect: the application gets `EPERM` at once.
const REFUSE: i32 = 0;
const SOCK_STREAM: u32 = 1;
const LOOPBACK_V4: u32 = 0x7f00_0001;

/// Socket cookie of a captured client socket -> original destination, until it is established.
#[map]
static ORIG_DST_BY_COOKIE: LruHashMap<u64, SockAddr> = LruHashMap::with_max_entries(65_536, 0);

/// (pod netns cookie, client port, family) -> original destination, read by the agent on accept.
#[map]
static ORIG_DST: LruHashMap<OrigDstKey, SockAddr> = LruHashMap::with_max_entries(65_536, 0);

#[cgroup_sock_addr(connect4)]
pub fn mesh_connect4(ctx: SockAddrContext) -> i32 {
    // SAFETY: the kernel hands a valid bpf_sock_addr to cgroup/connect4.
    let sa: &mut bpf_sock_addr = unsafe { &mut *ctx.sock_addr };
    if sa.type_ != SOCK_STREAM {
        return ALLOW; // UDP (DNS) and raw sockets are left alone
    }
    let dst_ip = u32::from_be(sa.user_ip4);
    let dst_port = u16::from_be(sa.user_port as u16);
    if is_loopback_v4(sa.user_ip4) {
        return ALLOW;
    }
    let orig = SockAddr {
        addr: [sa.user_ip4, 0, 0, 0],
        port: u32::from(dst_port),
        family: AF_INET,
    };
    let (cookie, fast) = decide_fast(&ctx, orig);
    match fast {
        Fast::Deny => return REFUSE,
        Fast::Splice(target) => {
            sa.user_ip4 = target.addr[0];
            sa.user_port = u32::from((target.port as u16).to_be());
            return ALLOW;
        }
        Fast::Capture => {}
    }
    if ORIG_DST_BY_COOKIE.insert(&cookie, &orig, 0).is_err() {
        // Cannot remember the destination: refused, since an uncaptured connect would bypass
        // the agent's route and policy (fail closed).
        return REFUSE;
    }
    sa.user_ip4 = LOOPBACK_V4.to_be();
    sa.user_port = u32::from(OUTBOUND_CAPTURE.to_be());
    debug!(&ctx, "captured connect4 to {:i}:{}", dst_ip, dst_port);
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn mesh_connect6(ctx: SockAddrContext) -> i32 {
    // SAFETY: the kernel hands a valid bpf_sock_addr to cgroup/connect6.
    let sa: &mut bpf_sock_addr = unsafe { &mut *ctx.sock_addr };
    if sa.type_ != SOCK_STREAM {
        return ALLOW;
    }
    let ip = read_ip6(&sa.user_ip6);
    let dst_port = u16::from_be(sa.user_port as u16);
    if is_loopback_v6(ip) {
        return ALLOW;
    }
    let orig = SockAddr {
        addr: ip,
        port: u32::from(dst_port),
        family: AF_INET6,
    };
    // v4-mapped destinations are left to the agent: the fast path keys flows by native family.
    let (cookie, fast) = if v4_mapped(ip).is_some() {
        // SAFETY: the helper only reads the context.
        (
            unsafe { bpf_get_socket_cookie(ctx.as_ptr()) },
            Fast::Capture,
        )
    } else {
        decide_fast(&ctx, orig)
    };
    match fast {
        Fast::Deny => return REFUSE,
        Fast::Splice(target) => {
            write_ip6(&mut sa.user_ip6, target.addr);
            sa.user_port = u32::from((target.port as u16).to_be());
            return ALLOW;
        }
        Fast::Capture => {}
    }
    if ORIG_DST_BY_COOKIE.insert(&cookie, &orig, 0).is_err() {
        return REFUSE; // as in connect4
    }
    // [::1]: also for v4-mapped destinations, so the accepted socket's family matches the key.
    sa.user_ip6 = [0, 0, 0, 1u32.to_be()];
    sa.user_port = u32::from(OUTBOUND_CAPTURE.to_be());
    debug!(&ctx, "captured connect6 to port {}", dst_port);
    ALLOW
}

/// The connecting socket's cookie and what the fast path says about `orig` for this pod.
fn decide_fast(ctx: &SockAddrContext, orig: SockAddr) -> (u64, Fast) {
    // SAFETY: the helpers only read the context.
    let (cookie, netns_cookie) = unsafe {
        (
            bpf_get_socket_cookie(ctx.as_ptr()),
            bpf_get_netns_cookie(ctx.as_ptr()),
        )
    };
    let key = FastKey {
        netns_cookie,
        dst: orig,
    };
    (cookie, splice::decide(cookie, &key))
}

#[sock_ops]
pub fn mesh_sockops(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_TCP_CONNECT_CB => {
            // SAFETY: the helper only reads the context.
            let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
            splice::on_connect(&ctx, cookie);
        }
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => {
            rekey_established(&ctx);
            splice::on_active_established(&ctx);
        }
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => splice::on_passive_established(&ctx),
        BPF_SOCK_OPS_STATE_CB => splice::on_state_change(&ctx),
        _ => {}
    }
    0
}

fn rekey_established(ctx: &SockOpsContext) {
    // SAFETY: the helpers only read the context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: the value is copied out at once; LRU eviction cannot free it under us here.
    let Some(orig) = (unsafe { ORIG_DST_BY_COOKIE.get(&cookie) }).copied() else {
        return; // not a captured connection
    };
    // SAFETY: as above.
    let netns_cookie = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    let key = OrigDstKey {
        netns_cookie,
        port: ctx.local_port(),
        family: ctx.family(),
    };
    let _ = ORIG_DST.insert(&key, &orig, 0);
    let _ = ORIG_DST_BY_COOKIE.remove(&cookie);
}
