//! Same-node fast path. Once the agent has authorized (or refused) a pod's connection to another
//! pod of this node, it writes the verdict into `FAST_VERDICT`; the next connects with the same
//! source pod and destination are decided here instead of in the agent:
//!
//! - refused: `connect4`/`connect6` fail at once (`EPERM`);
//! - allowed: the connect goes straight to the destination pod (not to the agent); its bytes are
//!   counted from the client socket's TCP counters when it closes.
//!
//! With the splice switched on (`SPLICE`, opt-in) allowed connections also join `SPLICE_SOCKS` as
//! they are established, and `sk_msg` moves each `sendmsg` into the peer socket's receive queue:
//! the bytes never cross TCP or veths. The loopback legs of the connections the agent relays
//! itself are spliced the same way: the application's captured socket with the agent's accepted
//! socket on 15001, and the agent's delivery socket (connecting from inside the pod to the pod's
//! own address) with the application's accepted socket. The agent still reads and writes every
//! byte of those, so policy, identity and metrics are untouched; only the loopback TCP hop
//! disappears. This needs `sockops` on the agent's own cgroup too (its sockets are created there).
//!
//! Why the splice is opt-in: a socket in a sockhash is read through the kernel's `tcp_bpf`
//! receive path, which answers a *spurious* wake-up of a blocking reader (for example the
//! state change when its own FIN is acknowledged, after a half-close) with `EAGAIN` instead of
//! waiting again. Non-blocking applications (epoll, async runtimes) never notice; a blocking
//! reader can, so the splice is not applied to applications unless the operator says so.
//!
//! Ordering: a socket whose first `sendmsg` finds no peer in the sockhash (the other end not yet
//! established) sends through TCP and stays on TCP for its whole life, so bytes of one direction
//! never take two paths. The counters in `FAST_STATS` keep the agent's metrics whole.

use aya_ebpf::{
    bindings::{sk_action::SK_PASS, BPF_F_INGRESS},
    helpers::bpf_get_netns_cookie,
    macros::{map, sk_msg},
    maps::{Array, HashMap, LruHashMap, PerCpuHashMap, SockHash},
    programs::{SkMsgContext, SockOpsContext},
    EbpfContext,
};
use mesh_common::kernel::{
    FastKey, FastStats, FastVerdict, FlowKey, FlowState, SockAddr, SpliceKey, AF_INET, AF_INET6,
    MODE_NOT_SPLICED, MODE_REDIRECT, MODE_TCP, MODE_UNDECIDED, ROLE_CLIENT, ROLE_SERVER,
    VERDICT_DENY, VERDICT_SPLICE,
};
use mesh_common::ports::OUTBOUND_CAPTURE;

use crate::addr::{endpoints, is_loopback, v4_mapped};

/// `BPF_ANY` for map updates.
const BPF_ANY: u64 = 0;

/// Verdicts the agent took, by (source pod, requested destination).
#[map]
static FAST_VERDICT: HashMap<FastKey, FastVerdict> = HashMap::with_max_entries(16_384, 0);

/// Counters per verdict and CPU (no atomics needed); entries are created by the agent, only
/// added to here, and summed over CPUs by the agent.
#[map]
static FAST_STATS: PerCpuHashMap<FastKey, FastStats> = PerCpuHashMap::with_max_entries(16_384, 0);

/// Socket cookie of a connect decided "splice" -> its verdict key, until the SYN is sent.
#[map]
static SPLICE_PENDING: LruHashMap<u64, FastKey> = LruHashMap::with_max_entries(16_384, 0);

/// Both ends of every spliced connection (each under its own view of the 4-tuple).
#[map]
static SPLICE_FLOWS: LruHashMap<SpliceKey, FlowState> = LruHashMap::with_max_entries(131_072, 0);

/// The spliced sockets; `mesh_sk_msg` is attached to this map.
#[map]
static SPLICE_SOCKS: SockHash<SpliceKey> = SockHash::with_max_entries(131_072, 0);

/// Index 0: non-zero to splice (allowed pod-to-pod connections, and the loopback legs of relayed
/// connections); set by the agent.
#[map]
static SPLICE: Array<u32> = Array::with_max_entries(1, 0);

fn splice_on() -> bool {
    matches!(SPLICE.get(0), Some(on) if *on != 0)
}

/// What a connect does, decided from an earlier verdict of the agent.
pub enum Fast {
    /// No verdict: capture as usual.
    Capture,
    /// Refuse the connect.
    Deny,
    /// Connect straight to this destination pod.
    Splice(SockAddr),
}

/// The verdict for `key`; a splice is remembered under the connecting socket's `cookie`.
pub fn decide(cookie: u64, key: &FastKey) -> Fast {
    // SAFETY: the value is copied out at once.
    let Some(verdict) = (unsafe { FAST_VERDICT.get(key) }).copied() else {
        return Fast::Capture;
    };
    match verdict.action {
        VERDICT_DENY => {
            count(key, Counter::Denied, 1);
            Fast::Deny
        }
        VERDICT_SPLICE => {
            if SPLICE_PENDING.insert(&cookie, key, 0).is_err() {
                return Fast::Capture; // cannot follow it: let the agent handle it
            }
            count(key, Counter::Spliced, 1);
            Fast::Splice(verdict.target)
        }
        _ => Fast::Capture,
    }
}

enum Counter {
    Spliced,
    Denied,
    Sent,
    Received,
    Closed,
    TcpFallback,
}

fn count(key: &FastKey, counter: Counter, n: u64) {
    let Some(stats) = FAST_STATS.get_ptr_mut(key) else {
        return;
    };
    // SAFETY: `stats` points at this CPU's copy of a live map value; programs do not migrate
    // between CPUs while they run.
    let stats = unsafe { &mut *stats };
    let field = match counter {
        Counter::Spliced => &mut stats.spliced,
        Counter::Denied => &mut stats.denied,
        Counter::Sent => &mut stats.bytes_sent,
        Counter::Received => &mut stats.bytes_received,
        Counter::Closed => &mut stats.closed,
        Counter::TcpFallback => &mut stats.tcp_fallbacks,
    };
    *field = field.wrapping_add(n);
}

/// `BPF_SOCK_OPS_TCP_CONNECT_CB`: a spliced connect's 4-tuple is now known; remember it so
/// `sk_lookup` lets the SYN reach the application and the server end can find its client.
pub fn on_connect(ctx: &SockOpsContext, cookie: u64) {
    // SAFETY: copied out at once.
    let Some(fast_key) = (unsafe { SPLICE_PENDING.get(&cookie) }).copied() else {
        return;
    };
    let _ = SPLICE_PENDING.remove(&cookie);
    let Some(own) = flow_key_of_ops(ctx) else {
        return;
    };
    let state = FlowState {
        fast_key,
        role: ROLE_CLIENT,
        mode: MODE_UNDECIDED,
    };
    let _ = SPLICE_FLOWS.insert(&pod_to_pod(own), &state, 0);
}

/// Key of a same-node pod-to-pod connection's end.
fn pod_to_pod(flow: FlowKey) -> SpliceKey {
    SpliceKey {
        netns_cookie: 0,
        flow,
    }
}

/// `BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB`: the client end of a spliced connection joins the map.
pub fn on_active_established(ctx: &SockOpsContext) {
    let Some(own) = flow_key_of_ops(ctx) else {
        return;
    };
    let mut key = pod_to_pod(own);
    let Some(state) = SPLICE_FLOWS.get_ptr_mut(&key) else {
        join_loopback_leg(ctx, own, ROLE_CLIENT);
        return;
    };
    if splice_on() {
        join(ctx, &mut key);
    } else {
        // Not spliced: its bytes are counted from its TCP counters when it closes.
        // SAFETY: `state` points at a live map value.
        unsafe { (*state).mode = MODE_NOT_SPLICED };
        follow_state(ctx);
    }
}

/// `BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB`: the server end of a spliced connection joins the map.
pub fn on_passive_established(ctx: &SockOpsContext) {
    let Some(own) = flow_key_of_ops(ctx) else {
        return;
    };
    let mut key = pod_to_pod(own);
    // SAFETY: copied out at once.
    let client = (unsafe { SPLICE_FLOWS.get(&key.peer()) }).copied();
    match client {
        Some(client) if client.role == ROLE_CLIENT && client.mode == MODE_NOT_SPLICED => {}
        Some(client) if client.role == ROLE_CLIENT => {
            let state = FlowState {
                fast_key: client.fast_key,
                role: ROLE_SERVER,
                mode: MODE_UNDECIDED,
            };
            if SPLICE_FLOWS.insert(&key, &state, 0).is_ok() {
                join(ctx, &mut key);
            }
        }
        _ => join_loopback_leg(ctx, own, ROLE_SERVER),
    }
}

/// Registers one end of a loopback leg of a relayed connection, if `own` is one and loopback
/// splicing is on.
fn join_loopback_leg(ctx: &SockOpsContext, own: FlowKey, role: u32) {
    if !is_loopback_leg(&own) || !splice_on() {
        return;
    }
    // SAFETY: the helper only reads the context.
    let netns_cookie = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    let mut key = SpliceKey {
        netns_cookie,
        flow: own,
    };
    let state = FlowState {
        fast_key: FastKey::default(),
        role,
        mode: MODE_UNDECIDED,
    };
    if SPLICE_FLOWS.insert(&key, &state, 0).is_ok() {
        join(ctx, &mut key);
    }
}

/// A loopback leg: the application's socket to the agent's capture port on loopback (either
/// end), or a connection from a pod's address to itself (the agent's delivery into the pod).
fn is_loopback_leg(flow: &FlowKey) -> bool {
    let capture = u32::from(OUTBOUND_CAPTURE);
    (is_loopback(flow.family, &flow.remote) && flow.remote_port == capture)
        || (is_loopback(flow.family, &flow.local) && flow.local_port == capture)
        || (flow.local == flow.remote && !is_loopback(flow.family, &flow.local))
}

fn join(ctx: &SockOpsContext, own: &mut SpliceKey) {
    // SAFETY: the kernel hands sock_ops programs a valid context.
    let ops = unsafe { &mut *ctx.ops };
    if SPLICE_SOCKS.update(own, ops, BPF_ANY).is_ok() {
        follow_state(ctx);
    }
}

/// Asks for state changes, so the flow's entry goes (and is counted) when the socket closes.
fn follow_state(ctx: &SockOpsContext) {
    let flags = ctx.cb_flags() | aya_ebpf::bindings::BPF_SOCK_OPS_STATE_CB_FLAG;
    let _ = ctx.set_cb_flags(flags as i32);
}

/// `BPF_SOCK_OPS_STATE_CB`: forget a spliced socket once it is closed (the sockhash drops closed
/// sockets by itself).
pub fn on_state_change(ctx: &SockOpsContext) {
    const TCP_CLOSE: u32 = 7;
    if ctx.arg(1) != TCP_CLOSE {
        return;
    }
    let Some(own) = flow_key_of_ops(ctx) else {
        return;
    };
    let key = pod_to_pod(own);
    // SAFETY: copied out at once.
    if let Some(state) = (unsafe { SPLICE_FLOWS.get(&key) }).copied() {
        if state.role == ROLE_CLIENT {
            count(&state.fast_key, Counter::Closed, 1);
        }
        if state.mode == MODE_NOT_SPLICED {
            // SAFETY: state callbacks run with a full socket, whose byte counters are readable.
            let (acked, received) = unsafe { ((*ctx.ops).bytes_acked, (*ctx.ops).bytes_received) };
            count(&state.fast_key, Counter::Sent, acked);
            count(&state.fast_key, Counter::Received, received);
        }
        let _ = SPLICE_FLOWS.remove(&key);
        return;
    }
    if is_loopback_leg(&own) {
        // SAFETY: the helper only reads the context.
        let netns_cookie = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
        let _ = SPLICE_FLOWS.remove(&SpliceKey {
            netns_cookie,
            flow: own,
        });
    }
}

/// `sk_lookup`: is this incoming connection (seen from the server: local = the pod) the far end
/// of a spliced connect? Then it must reach the application, not the agent's listener.
pub fn is_spliced_arrival(server_view: &FlowKey) -> bool {
    // SAFETY: only tested for presence.
    unsafe { SPLICE_FLOWS.get(&pod_to_pod(server_view.reversed())) }.is_some()
}

#[sk_msg]
pub fn mesh_sk_msg(ctx: SkMsgContext) -> u32 {
    // SAFETY: the kernel hands sk_msg programs a valid context.
    let msg = unsafe { &*ctx.msg };
    let Some((local, remote)) = endpoints(
        msg.family,
        (msg.local_ip4, msg.remote_ip4),
        (&msg.local_ip6, &msg.remote_ip6),
    ) else {
        return SK_PASS;
    };
    let own = flow_key(msg.family, local, remote, msg.local_port, msg.remote_port);
    let size = u64::from(msg.size);
    let netns_cookie = if is_loopback_leg(&own) {
        // SAFETY: the helper only reads the context.
        unsafe { bpf_get_netns_cookie(ctx.as_ptr()) }
    } else {
        0
    };
    let key = SpliceKey {
        netns_cookie,
        flow: own,
    };
    let Some(state) = SPLICE_FLOWS.get_ptr_mut(&key) else {
        return SK_PASS;
    };
    // SAFETY: `state` points at a live map value; only this socket's sends touch its mode.
    let (mode, role, fast_key) = unsafe { ((*state).mode, (*state).role, (*state).fast_key) };
    let counter = if role == ROLE_CLIENT {
        Counter::Sent
    } else {
        Counter::Received
    };
    // Only pod-to-pod splices have counters: the agent counts the bytes of the legs it relays.
    let counted = netns_cookie == 0;
    if counted {
        count(&fast_key, counter, size);
    }
    if mode == MODE_TCP {
        return SK_PASS;
    }
    let mut peer = key.peer();
    let verdict = SPLICE_SOCKS.redirect_msg(&ctx, &mut peer, u64::from(BPF_F_INGRESS));
    if verdict == i64::from(SK_PASS) {
        if mode == MODE_UNDECIDED {
            // SAFETY: as above.
            unsafe { (*state).mode = MODE_REDIRECT };
        }
        return SK_PASS;
    }
    if mode == MODE_UNDECIDED {
        // The peer is not in the map yet: this direction stays on TCP from now on.
        // SAFETY: as above.
        unsafe { (*state).mode = MODE_TCP };
        if counted {
            count(&fast_key, Counter::TcpFallback, 1);
        }
    }
    SK_PASS
}

fn flow_key_of_ops(ctx: &SockOpsContext) -> Option<FlowKey> {
    // SAFETY: the kernel hands sock_ops programs a valid context.
    let ops = unsafe { &*ctx.ops };
    let (local, remote) = endpoints(
        ops.family,
        (ops.local_ip4, ops.remote_ip4),
        (&ops.local_ip6, &ops.remote_ip6),
    )?;
    Some(flow_key(
        ops.family,
        local,
        remote,
        ops.local_port,
        ops.remote_port,
    ))
}

/// Builds a socket's view of its connection. `local_port` is in host order; `remote_port` is
/// the kernel's `__u32` holding the port in network order (in the upper half on little-endian
/// for sock_ops and sk_msg; the lower half is accepted too, so one decoder fits every context).
pub fn flow_key(
    family: u32,
    local: [u32; 4],
    remote: [u32; 4],
    local_port: u32,
    remote_port: u32,
) -> FlowKey {
    let remote_port = if remote_port >> 16 != 0 {
        remote_port >> 16
    } else {
        remote_port
    };
    let remote_port = u32::from(u16::from_be(remote_port as u16));
    let (family, local, remote) = if family == AF_INET6 {
        match (v4_mapped(local), v4_mapped(remote)) {
            (Some(l), Some(r)) => (AF_INET, [l, 0, 0, 0], [r, 0, 0, 0]),
            _ => (AF_INET6, local, remote),
        }
    } else {
        (family, local, remote)
    };
    FlowKey {
        local,
        remote,
        local_port,
        remote_port,
        family,
        _pad: 0,
    }
}
