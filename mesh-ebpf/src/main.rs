//! The mesh's kernel programs (one object file, loaded by `mesh-agent`).
//!
//! - `cgroup/connect4`, `cgroup/connect6`: capture a pod's outbound TCP connects to the agent's
//!   in-pod listener and remember the original destination by socket cookie.
//! - `sockops`: when a captured connection is established, re-key its original destination by
//!   (pod netns cookie, client port) so the agent can find it from the accepted socket.
//! - `sk_lookup`: steer inbound TCP for a pod's address to the agent's plaintext listener.
//! - `sk_msg` (+ `connect4`/`connect6`/`sockops`): the same-node fast path: verdicts the agent
//!   already took are applied at connect time, and authorized pod-to-pod connections are spliced
//!   socket to socket.
#![no_std]
#![no_main]

mod addr;
mod capture;
mod splice;
mod steer;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable: the verifier rejects programs that could panic.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
