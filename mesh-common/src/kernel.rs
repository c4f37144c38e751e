//! Keys and values of the maps shared between the kernel programs and the agent.
//!
//! Layouts are fixed with `#[repr(C)]`, explicit padding and compile-time size checks, so a drift
//! between the kernel side and userspace breaks the build instead of corrupting lookups.
//! Addresses are stored as four `u32` words in network byte order (IPv4 in word 0); ports in host
//! byte order.

/// `AF_INET`, as the kernel reports it in `family` fields.
pub const AF_INET: u32 = 2;
/// `AF_INET6`.
pub const AF_INET6: u32 = 10;

/// A socket address as the kernel programs see it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct SockAddr {
    /// Address words in network byte order; IPv4 uses word 0 only.
    pub addr: [u32; 4],
    /// Port, host byte order.
    pub port: u32,
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u32,
}
const _: () = assert!(core::mem::size_of::<SockAddr>() == 24);

/// Identifies a captured connection when the agent accepts it on its in-pod outbound listener:
/// the pod's network namespace (its netns cookie) and the client's local port on loopback.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct OrigDstKey {
    /// `SO_NETNS_COOKIE` of the pod's network namespace.
    pub netns_cookie: u64,
    /// The client socket's local port (host byte order).
    pub port: u32,
    /// [`AF_INET`] or [`AF_INET6`] of the captured socket.
    pub family: u32,
}
const _: () = assert!(core::mem::size_of::<OrigDstKey>() == 16);

/// Key of the inbound listener table used by `sk_lookup`: the pod address connections arrive for.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct ListenerKey {
    /// Pod address words in network byte order; IPv4 uses word 0 only, the others are zero.
    pub addr: [u32; 4],
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u32,
}
const _: () = assert!(core::mem::size_of::<ListenerKey>() == 20);

/// [`FastVerdict::action`]: connect the pod straight to the target and splice both sockets.
pub const VERDICT_SPLICE: u32 = 1;
/// [`FastVerdict::action`]: refuse the connect in the kernel (`EPERM`).
pub const VERDICT_DENY: u32 = 2;

/// A decision the agent already took, keyed by what `connect4`/`connect6` see: the connecting
/// pod (its netns cookie) and the destination it asked for.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct FastKey {
    /// netns cookie of the source pod.
    pub netns_cookie: u64,
    /// The destination the application connected to.
    pub dst: SockAddr,
}
const _: () = assert!(core::mem::size_of::<FastKey>() == 32);

/// What `connect4`/`connect6` do for a [`FastKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FastVerdict {
    /// [`VERDICT_SPLICE`] or [`VERDICT_DENY`]; anything else is captured as usual.
    pub action: u32,
    /// Padding (zero).
    pub _pad: u32,
    /// Where a spliced connection goes (the pod address the agent resolved).
    pub target: SockAddr,
}
const _: () = assert!(core::mem::size_of::<FastVerdict>() == 32);

/// Counters of the connections decided in the kernel for one [`FastKey`] (one copy per CPU,
/// summed by the agent for its metrics).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FastStats {
    /// Connections spliced.
    pub spliced: u64,
    /// Connections refused in `connect4`/`connect6`.
    pub denied: u64,
    /// Bytes from the client to the server (counted by `sk_msg` when spliced, from the client's
    /// TCP counters at close when not).
    pub bytes_sent: u64,
    /// Bytes from the server to the client.
    pub bytes_received: u64,
    /// Spliced connections closed (counted when the client end closes).
    pub closed: u64,
    /// Directions of spliced connections that sent their first bytes before the peer socket was
    /// in the sockhash, and so stayed on TCP (correct, only slower).
    pub tcp_fallbacks: u64,
}
const _: () = assert!(core::mem::size_of::<FastStats>() == 48);

/// One end of a TCP connection as seen from its own socket: addresses in network byte order,
/// ports in host byte order, IPv4-mapped IPv6 addresses folded to IPv4.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct FlowKey {
    /// Local address words.
    pub local: [u32; 4],
    /// Remote address words.
    pub remote: [u32; 4],
    /// Local port.
    pub local_port: u32,
    /// Remote port.
    pub remote_port: u32,
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u32,
    /// Padding (zero).
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 48);

impl FlowKey {
    /// The same connection as its peer socket sees it.
    pub const fn reversed(&self) -> FlowKey {
        FlowKey {
            local: self.remote,
            remote: self.local,
            local_port: self.remote_port,
            remote_port: self.local_port,
            family: self.family,
            _pad: 0,
        }
    }
}

/// A key of the splice maps: a socket's view of its connection, qualified by the network
/// namespace where addresses are not unique (loopback legs, and connections from a pod to its own
/// address); 0 for same-node pod-to-pod connections (pod addresses are unique in the cluster).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct SpliceKey {
    /// netns cookie, or 0.
    pub netns_cookie: u64,
    /// The socket's view of its connection.
    pub flow: FlowKey,
}
const _: () = assert!(core::mem::size_of::<SpliceKey>() == 56);

impl SpliceKey {
    /// The key of the peer socket (same namespace qualifier, reversed 4-tuple).
    pub const fn peer(&self) -> SpliceKey {
        SpliceKey {
            netns_cookie: self.netns_cookie,
            flow: self.flow.reversed(),
        }
    }
}

/// [`FlowState::mode`]: nothing sent yet.
pub const MODE_UNDECIDED: u32 = 0;
/// [`FlowState::mode`]: this socket's data goes straight into the peer socket.
pub const MODE_REDIRECT: u32 = 1;
/// [`FlowState::mode`]: this socket sent through TCP once (its peer was not registered yet), so
/// it stays on TCP: mixing the two would reorder bytes.
pub const MODE_TCP: u32 = 2;
/// [`FlowState::mode`]: a pod-to-pod connection decided in the kernel but not spliced (the splice
/// is off): plain TCP, counted from the client's TCP counters when it closes.
pub const MODE_NOT_SPLICED: u32 = 3;
/// [`FlowState::role`]: the connecting socket.
pub const ROLE_CLIENT: u32 = 0;
/// [`FlowState::role`]: the accepted socket.
pub const ROLE_SERVER: u32 = 1;

/// A spliced connection's socket: which verdict it came from (zero for the loopback legs of
/// connections the agent relays) and how its data travels.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowState {
    /// The verdict (and counters) this connection belongs to.
    pub fast_key: FastKey,
    /// [`ROLE_CLIENT`] or [`ROLE_SERVER`].
    pub role: u32,
    /// [`MODE_UNDECIDED`], [`MODE_REDIRECT`] or [`MODE_TCP`].
    pub mode: u32,
}
const _: () = assert!(core::mem::size_of::<FlowState>() == 40);

/// Names of the programs and maps in the object file, shared so the loader cannot misspell them.
pub mod names {
    /// `cgroup/connect4` outbound capture.
    pub const CONNECT4: &str = "mesh_connect4";
    /// `cgroup/connect6` outbound capture.
    pub const CONNECT6: &str = "mesh_connect6";
    /// `sockops`: records the original destination of captured connections by client port.
    pub const SOCKOPS: &str = "mesh_sockops";
    /// `sk_lookup`: steers inbound TCP for pod addresses to the agent's plaintext listener.
    pub const SK_LOOKUP: &str = "mesh_sk_lookup";
    /// Map: socket cookie of a captured client socket -> its original destination.
    pub const ORIG_DST_BY_COOKIE: &str = "ORIG_DST_BY_COOKIE";
    /// Map: [`super::OrigDstKey`] -> original destination ([`super::SockAddr`]).
    pub const ORIG_DST: &str = "ORIG_DST";
    /// Sockhash: [`super::ListenerKey`] -> the agent's inbound plaintext listener.
    pub const INBOUND_LISTENERS: &str = "INBOUND_LISTENERS";
    /// `sk_msg`: redirects a spliced socket's data into its peer socket.
    pub const SK_MSG: &str = "mesh_sk_msg";
    /// Map: [`super::FastKey`] -> [`super::FastVerdict`], written by the agent.
    pub const FAST_VERDICT: &str = "FAST_VERDICT";
    /// Array (one `u32`): whether allowed pod-to-pod connections and the loopback legs of relayed
    /// connections are spliced.
    pub const SPLICE: &str = "SPLICE";
    /// Per-CPU map: [`super::FastKey`] -> [`super::FastStats`], created by the agent, counted by
    /// the kernel.
    pub const FAST_STATS: &str = "FAST_STATS";
    /// Map: each end of a spliced or kernel-decided connection -> its verdict and mode.
    pub const SPLICE_FLOWS: &str = "SPLICE_FLOWS";
    /// Sockhash: [`super::SpliceKey`] -> spliced sockets, the `sk_msg` program's map.
    pub const SPLICE_SOCKS: &str = "SPLICE_SOCKS";
}

#[cfg(feature = "user")]
mod pod_impls {
    // SAFETY: plain `#[repr(C)]` integers with no implicit padding (sizes asserted above).
    unsafe impl aya::Pod for super::SockAddr {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OrigDstKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ListenerKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FastKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FastVerdict {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FastStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SpliceKey {}
    // SAFETY: repr(C), two Pod fields and two u32, no padding (size asserted above).
    unsafe impl aya::Pod for super::FlowState {}
}

#[cfg(feature = "std")]
mod convert {
    use super::{ListenerKey, SockAddr, AF_INET, AF_INET6};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

    fn words(ip: IpAddr) -> ([u32; 4], u32) {
        match ip {
            IpAddr::V4(v4) => ([u32::from_ne_bytes(v4.octets()), 0, 0, 0], AF_INET),
            IpAddr::V6(v6) => {
                let o = v6.octets();
                let mut w = [0u32; 4];
                for (i, word) in w.iter_mut().enumerate() {
                    *word =
                        u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]]);
                }
                (w, AF_INET6)
            }
        }
    }

    impl From<IpAddr> for ListenerKey {
        fn from(ip: IpAddr) -> Self {
            let (addr, family) = words(ip);
            ListenerKey { addr, family }
        }
    }

    impl From<SocketAddr> for SockAddr {
        fn from(sa: SocketAddr) -> Self {
            let (addr, family) = words(sa.ip());
            SockAddr {
                addr,
                port: u32::from(sa.port()),
                family,
            }
        }
    }

    impl SockAddr {
        /// The address as a `SocketAddr`; `None` for an unknown family or out-of-range port.
        /// IPv4-mapped IPv6 addresses (a v6 socket connecting to a v4 peer) come back as IPv4.
        pub fn to_socket_addr(&self) -> Option<SocketAddr> {
            let port = u16::try_from(self.port).ok()?;
            let ip = match self.family {
                AF_INET => IpAddr::V4(Ipv4Addr::from(self.addr[0].to_ne_bytes())),
                AF_INET6 => {
                    let mut o = [0u8; 16];
                    for (i, word) in self.addr.iter().enumerate() {
                        o[4 * i..4 * i + 4].copy_from_slice(&word.to_ne_bytes());
                    }
                    let v6 = Ipv6Addr::from(o);
                    match v6.to_ipv4_mapped() {
                        Some(v4) => IpAddr::V4(v4),
                        None => IpAddr::V6(v6),
                    }
                }
                _ => return None,
            };
            Some(SocketAddr::new(ip, port))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn round_trips_v4_and_v6() {
            for s in ["198.18.1.10:8080", "[fd18:1::10]:443"] {
                let sa: SocketAddr = s.parse().expect("literal");
                assert_eq!(SockAddr::from(sa).to_socket_addr(), Some(sa));
            }
        }

        #[test]
        fn v4_is_in_network_order_in_word_zero() {
            let sa: SocketAddr = "1.2.3.4:80".parse().expect("literal");
            assert_eq!(SockAddr::from(sa).addr[0].to_ne_bytes(), [1, 2, 3, 4]);
        }

        #[test]
        fn v4_mapped_comes_back_as_v4() {
            let mapped: SocketAddr = "[::ffff:198.19.0.10]:80".parse().expect("literal");
            let got = SockAddr::from(mapped).to_socket_addr().expect("valid");
            assert_eq!(
                got,
                "198.19.0.10:80".parse::<SocketAddr>().expect("literal")
            );
        }

        #[test]
        fn rejects_unknown_family() {
            let bad = SockAddr {
                family: 99,
                ..SockAddr::default()
            };
            assert_eq!(bad.to_socket_addr(), None);
        }
    }
}
