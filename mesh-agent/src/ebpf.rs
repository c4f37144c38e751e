//! Loads the kernel programs, attaches them to enrolled pods and reads their maps.
//!
//! The programs are loaded once per agent. Each enrolled pod gets the capture programs attached
//! to its cgroup and `sk_lookup` attached to its network namespace; all attachments are BPF links
//! owned by this process, so they go away when the pod is removed or the agent exits.

use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Mutex;

use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuHashMap, PerCpuValues, SockHash};
use aya::programs::{
    cgroup_sock_addr::CgroupSockAddrLinkId, sk_lookup::SkLookupLinkId, sock_ops::SockOpsLinkId,
    CgroupAttachMode, CgroupSockAddr, SkLookup, SkMsg, SockOps,
};
use aya::{Ebpf, EbpfLoader};
use mesh_common::kernel::{
    names, FastKey, FastStats, FastVerdict, FlowKey, FlowState, ListenerKey, OrigDstKey, SockAddr,
    SpliceKey, ROLE_CLIENT,
};
use serde::Serialize;

/// The object file built from `mesh-ebpf` by this crate's build script.
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("MESH_EBPF_OBJECT"));

/// Errors loading or attaching the kernel programs.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    /// Loading the object failed (no CAP_BPF/CAP_SYS_ADMIN, or a kernel feature is missing).
    #[error("cannot load the eBPF programs (the agent needs root or CAP_BPF+CAP_NET_ADMIN+CAP_SYS_ADMIN, and a kernel with BPF, cgroup v2 and sk_lookup): {0}")]
    Load(#[from] aya::EbpfError),
    /// A program or map the agent expects is not in the object.
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    /// A program could not be loaded into or attached in the kernel.
    #[error("eBPF program {program}: {source}")]
    Program {
        program: &'static str,
        source: aya::programs::ProgramError,
    },
    /// A map operation failed.
    #[error("eBPF map {map}: {source}")]
    Map {
        map: &'static str,
        source: aya::maps::MapError,
    },
    /// The number of possible CPUs (per-CPU map values) cannot be read.
    #[error("cannot count the possible CPUs for per-CPU maps: {0}")]
    Cpus(std::io::Error),
    /// The cgroup directory cannot be opened.
    #[error("cannot open cgroup {path}: {source}")]
    Cgroup {
        path: String,
        source: std::io::Error,
    },
}

impl EbpfError {
    /// The `program` label of a failed attachment: the program that did not attach,
    /// `mesh_sk_lookup` when the pod's listeners could not be registered for it, `cgroup` when
    /// the cgroup could not be opened (no cgroup program attached), else `other`.
    pub fn attach_program(&self) -> &'static str {
        match self {
            EbpfError::Program { program, .. } => program,
            EbpfError::Map { map, .. } if *map == names::INBOUND_LISTENERS => names::SK_LOOKUP,
            EbpfError::Cgroup { .. } => "cgroup",
            EbpfError::Missing(name) => name,
            EbpfError::Load(_) | EbpfError::Map { .. } | EbpfError::Cpus(_) => "other",
        }
    }
}

/// What is attached for one pod, so it can be detached again.
#[derive(Debug)]
pub struct PodAttachment {
    links: Vec<Link>,
    listener_keys: Vec<ListenerKey>,
}

/// One program attachment (a BPF link owned by the agent).
#[derive(Debug)]
enum Link {
    /// `connect4` or `connect6` (the program name says which).
    SockAddr(&'static str, CgroupSockAddrLinkId),
    SockOps(SockOpsLinkId),
    SkLookup(SkLookupLinkId),
}

/// One attached program, as the admin endpoint reports it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AttachedProgram {
    /// Program name in the object file.
    pub name: &'static str,
    /// Kernel attach point.
    pub attach_type: &'static str,
    /// The cgroup path or netns path it is attached to.
    pub target: String,
}

struct Loaded {
    ebpf: Ebpf,
    orig_dst: BpfHashMap<MapData, OrigDstKey, SockAddr>,
    listeners: SockHash<MapData, ListenerKey>,
    fast_verdicts: BpfHashMap<MapData, FastKey, FastVerdict>,
    fast_stats: PerCpuHashMap<MapData, FastKey, FastStats>,
    splice_flows: BpfHashMap<MapData, SpliceKey, FlowState>,
    /// Held so the `sk_msg` program attached to it stays attached for the agent's life.
    _splice_socks: SockHash<MapData, SpliceKey>,
    splice: Array<MapData, u32>,
    /// `sockops` on the agent's own cgroup (loopback legs), for the agent's life.
    agent_links: Vec<Link>,
    cpus: usize,
}

/// The loaded kernel programs and maps.
pub struct Programs {
    inner: Mutex<Loaded>,
}

impl std::fmt::Debug for Programs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Programs")
    }
}

impl Programs {
    /// Loads the embedded object and all programs into the kernel, and starts forwarding the
    /// programs' log lines into `tracing` (target `mesh_ebpf`).
    pub fn load() -> Result<Programs, EbpfError> {
        // The programs skip log statements above this level in the kernel: a filtered-out line
        // would otherwise still cost a ring-buffer record per captured connect.
        let log_level = kernel_log_level();
        let mut ebpf = EbpfLoader::new()
            .override_global(aya_log::LEVEL, &log_level, false)
            .load(OBJECT)?;
        start_log_forwarding(&mut ebpf);
        for name in [names::CONNECT4, names::CONNECT6] {
            let prog: &mut CgroupSockAddr = program(&mut ebpf, name)?;
            prog.load().map_err(|source| EbpfError::Program {
                program: name,
                source,
            })?;
        }
        let sockops: &mut SockOps = program(&mut ebpf, names::SOCKOPS)?;
        sockops.load().map_err(|source| EbpfError::Program {
            program: names::SOCKOPS,
            source,
        })?;
        let sk_lookup: &mut SkLookup = program(&mut ebpf, names::SK_LOOKUP)?;
        sk_lookup.load().map_err(|source| EbpfError::Program {
            program: names::SK_LOOKUP,
            source,
        })?;

        let orig_dst = BpfHashMap::try_from(take_map(&mut ebpf, names::ORIG_DST)?)
            .map_err(map_error(names::ORIG_DST))?;
        let listeners = SockHash::try_from(take_map(&mut ebpf, names::INBOUND_LISTENERS)?)
            .map_err(map_error(names::INBOUND_LISTENERS))?;
        let fast_verdicts = BpfHashMap::try_from(take_map(&mut ebpf, names::FAST_VERDICT)?)
            .map_err(map_error(names::FAST_VERDICT))?;
        let fast_stats = PerCpuHashMap::try_from(take_map(&mut ebpf, names::FAST_STATS)?)
            .map_err(map_error(names::FAST_STATS))?;
        let splice_flows = BpfHashMap::try_from(take_map(&mut ebpf, names::SPLICE_FLOWS)?)
            .map_err(map_error(names::SPLICE_FLOWS))?;
        let splice_socks: SockHash<MapData, SpliceKey> =
            SockHash::try_from(take_map(&mut ebpf, names::SPLICE_SOCKS)?)
                .map_err(map_error(names::SPLICE_SOCKS))?;
        let splice = Array::try_from(take_map(&mut ebpf, names::SPLICE)?)
            .map_err(map_error(names::SPLICE))?;
        let failed = |source| EbpfError::Program {
            program: names::SK_MSG,
            source,
        };
        let sk_msg: &mut SkMsg = program(&mut ebpf, names::SK_MSG)?;
        sk_msg.load().map_err(failed)?;
        // Attached to the map, not to a pod: it runs only for sockets in the sockhash, and goes
        // away with the map when the agent exits.
        sk_msg.attach(splice_socks.fd()).map_err(failed)?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| EbpfError::Cpus(e))?;
        Ok(Programs {
            inner: Mutex::new(Loaded {
                ebpf,
                orig_dst,
                listeners,
                fast_verdicts,
                fast_stats,
                splice_flows,
                _splice_socks: splice_socks,
                splice,
                agent_links: Vec::new(),
                cpus,
            }),
        })
    }

    /// Attaches `sockops` to the agent's own cgroup, so the agent's ends of loopback legs (its
    /// accepted capture sockets, its delivery sockets) can be spliced.
    pub fn attach_agent_cgroup(&self, cgroup: &Path) -> Result<(), EbpfError> {
        let file = File::open(cgroup).map_err(|source| EbpfError::Cgroup {
            path: cgroup.display().to_string(),
            source,
        })?;
        let mut guard = self.lock();
        let loaded = &mut *guard;
        let link = attach_sockops(&mut loaded.ebpf, &file)?;
        loaded.agent_links.push(link);
        Ok(())
    }

    /// Turns the splice of new connections on or off (connections already spliced stay so).
    pub fn set_splice(&self, enabled: bool) -> Result<(), EbpfError> {
        self.lock()
            .splice
            .set(0, u32::from(enabled), 0)
            .map_err(map_error(names::SPLICE))
    }

    /// Installs a verdict for the same-node fast path, with a zeroed counter entry if the key has
    /// none yet (existing counters are kept: the agent has already reported part of them).
    pub fn set_fast_verdict(&self, key: FastKey, verdict: FastVerdict) -> Result<(), EbpfError> {
        /// `BPF_NOEXIST`: create only.
        const NOEXIST: u64 = 1;
        let mut guard = self.lock();
        let loaded = &mut *guard;
        if loaded.fast_stats.get(&key, 0).is_err() {
            let zeros = PerCpuValues::try_from(vec![FastStats::default(); loaded.cpus])
                .map_err(EbpfError::Cpus)?;
            loaded
                .fast_stats
                .insert(key, zeros, NOEXIST)
                .map_err(map_error(names::FAST_STATS))?;
        }
        loaded
            .fast_verdicts
            .insert(key, verdict, 0)
            .map_err(map_error(names::FAST_VERDICT))
    }

    /// Removes every fast-path verdict (connections already spliced stay spliced, as relays
    /// already running stay running); returns how many there were.
    pub fn clear_fast_verdicts(&self) -> usize {
        let mut guard = self.lock();
        let keys: Vec<FastKey> = guard.fast_verdicts.keys().filter_map(Result::ok).collect();
        for key in &keys {
            if let Err(e) = guard.fast_verdicts.remove(key) {
                tracing::warn!(error = %e, "removing a fast-path verdict");
            }
        }
        keys.len()
    }

    /// The open connections the kernel decided (same-node pod to pod, after the agent's first
    /// decision): each client socket's view of its 4-tuple with the verdict it came from.
    pub fn kernel_flows(&self) -> Vec<(FlowKey, FastKey)> {
        let guard = self.lock();
        guard
            .splice_flows
            .iter()
            .filter_map(Result::ok)
            .filter(|(key, state)| {
                key.netns_cookie == 0
                    && state.role == ROLE_CLIENT
                    && state.fast_key != FastKey::default()
            })
            .map(|(key, state)| (key.flow, state.fast_key))
            .collect()
    }

    /// The fast-path counters, summed over CPUs.
    pub fn fast_stats(&self) -> Vec<(FastKey, FastStats)> {
        let guard = self.lock();
        guard
            .fast_stats
            .iter()
            .filter_map(Result::ok)
            .map(|(key, per_cpu)| {
                let sum = per_cpu.iter().fold(FastStats::default(), |a, b| FastStats {
                    spliced: a.spliced.wrapping_add(b.spliced),
                    denied: a.denied.wrapping_add(b.denied),
                    bytes_sent: a.bytes_sent.wrapping_add(b.bytes_sent),
                    bytes_received: a.bytes_received.wrapping_add(b.bytes_received),
                    closed: a.closed.wrapping_add(b.closed),
                    tcp_fallbacks: a.tcp_fallbacks.wrapping_add(b.tcp_fallbacks),
                });
                (key, sum)
            })
            .collect()
    }

    /// Forgets `key`: its verdict, if still there, and its counters (reported already).
    pub fn forget_fast_key(&self, key: &FastKey) {
        let mut guard = self.lock();
        let _ = guard.fast_verdicts.remove(key);
        let _ = guard.fast_stats.remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Loaded> {
        // A panic while holding the lock leaves the maps consistent (each call is one syscall).
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Attaches capture to the pod's cgroup and steering to its netns, and registers the pod's
    /// inbound listeners (one per address family) for `sk_lookup`.
    pub fn attach_pod(
        &self,
        cgroup: &Path,
        netns: &File,
        addresses: &[IpAddr],
        inbound_v4: &impl AsRawFd,
        inbound_v6: Option<&impl AsRawFd>,
    ) -> Result<PodAttachment, EbpfError> {
        let cgroup_file = File::open(cgroup).map_err(|source| EbpfError::Cgroup {
            path: cgroup.display().to_string(),
            source,
        })?;
        let mut guard = self.lock();
        let loaded = &mut *guard;
        let mut listener_keys = Vec::new();
        for ip in addresses {
            let key = ListenerKey::from(*ip);
            let result = match (ip, inbound_v6) {
                (IpAddr::V4(_), _) => loaded.listeners.insert(key, inbound_v4.as_raw_fd(), 0),
                (IpAddr::V6(_), Some(v6)) => loaded.listeners.insert(key, v6.as_raw_fd(), 0),
                (IpAddr::V6(_), None) => continue,
            };
            if let Err(source) = result {
                remove_keys(&mut loaded.listeners, &listener_keys);
                return Err(EbpfError::Map {
                    map: names::INBOUND_LISTENERS,
                    source,
                });
            }
            listener_keys.push(key);
        }
        let attached = attach_all(&mut loaded.ebpf, &cgroup_file, netns);
        match attached {
            Ok(links) => Ok(PodAttachment {
                links,
                listener_keys,
            }),
            Err(e) => {
                remove_keys(&mut loaded.listeners, &listener_keys);
                Err(e)
            }
        }
    }

    /// Detaches everything [`Programs::attach_pod`] attached. Errors are logged: a pod being
    /// removed must not stay half-attached because one detach failed.
    pub fn detach_pod(&self, attachment: PodAttachment) {
        let mut guard = self.lock();
        let loaded = &mut *guard;
        remove_keys(&mut loaded.listeners, &attachment.listener_keys);
        detach_all(&mut loaded.ebpf, attachment.links);
    }

    /// Takes the original destination of a captured connection accepted on a pod's outbound
    /// listener: `netns_cookie` of the pod and the client's (peer) address on loopback.
    pub fn take_original_dst(&self, netns_cookie: u64, peer: SocketAddr) -> Option<SocketAddr> {
        let family = match peer {
            SocketAddr::V4(_) => mesh_common::kernel::AF_INET,
            SocketAddr::V6(_) => mesh_common::kernel::AF_INET6,
        };
        let key = OrigDstKey {
            netns_cookie,
            port: u32::from(peer.port()),
            family,
        };
        let mut guard = self.lock();
        let value = guard.orig_dst.get(&key, 0).ok()?;
        let _ = guard.orig_dst.remove(&key);
        value.to_socket_addr()
    }

    /// The programs attached for a pod, for the admin endpoint.
    pub fn describe(cgroup: &Path, netns: &Path) -> Vec<AttachedProgram> {
        let cg = cgroup.display().to_string();
        vec![
            AttachedProgram {
                name: names::CONNECT4,
                attach_type: "cgroup/connect4",
                target: cg.clone(),
            },
            AttachedProgram {
                name: names::CONNECT6,
                attach_type: "cgroup/connect6",
                target: cg.clone(),
            },
            AttachedProgram {
                name: names::SOCKOPS,
                attach_type: "cgroup/sock_ops",
                target: cg,
            },
            AttachedProgram {
                name: names::SK_LOOKUP,
                attach_type: "sk_lookup",
                target: netns.display().to_string(),
            },
        ]
    }
}

/// Attaches the four programs; on failure detaches what was attached before returning.
fn attach_all(ebpf: &mut Ebpf, cgroup: &File, netns: &File) -> Result<Vec<Link>, EbpfError> {
    let mut links = Vec::with_capacity(4);
    match attach_each(ebpf, cgroup, netns, &mut links) {
        Ok(()) => Ok(links),
        Err(e) => {
            detach_all(ebpf, links);
            Err(e)
        }
    }
}

fn attach_each(
    ebpf: &mut Ebpf,
    cgroup: &File,
    netns: &File,
    links: &mut Vec<Link>,
) -> Result<(), EbpfError> {
    let failed = |program| move |source| EbpfError::Program { program, source };
    // With BPF links the kernel always allows several programs per cgroup and rejects any
    // attach flag, so the mode must be the default (no flags).
    let mode = CgroupAttachMode::Single;
    for name in [names::CONNECT4, names::CONNECT6] {
        let prog = program::<CgroupSockAddr>(ebpf, name)?;
        links.push(Link::SockAddr(
            name,
            prog.attach(cgroup, mode).map_err(failed(name))?,
        ));
    }
    links.push(attach_sockops(ebpf, cgroup)?);
    let prog = program::<SkLookup>(ebpf, names::SK_LOOKUP)?;
    links.push(Link::SkLookup(
        prog.attach(netns).map_err(failed(names::SK_LOOKUP))?,
    ));
    Ok(())
}

/// Attaches `sockops` to a cgroup (a pod's, or the agent's own).
fn attach_sockops(ebpf: &mut Ebpf, cgroup: &File) -> Result<Link, EbpfError> {
    let prog = program::<SockOps>(ebpf, names::SOCKOPS)?;
    prog.attach(cgroup, CgroupAttachMode::Single)
        .map(Link::SockOps)
        .map_err(|source| EbpfError::Program {
            program: names::SOCKOPS,
            source,
        })
}

/// Detaches every link; failures are logged so one bad link never leaves the rest attached.
fn detach_all(ebpf: &mut Ebpf, links: Vec<Link>) {
    for link in links {
        let (name, result) = match link {
            Link::SockAddr(name, id) => (
                name,
                program::<CgroupSockAddr>(ebpf, name).map(|p| p.detach(id)),
            ),
            Link::SockOps(id) => (
                names::SOCKOPS,
                program::<SockOps>(ebpf, names::SOCKOPS).map(|p| p.detach(id)),
            ),
            Link::SkLookup(id) => (
                names::SK_LOOKUP,
                program::<SkLookup>(ebpf, names::SK_LOOKUP).map(|p| p.detach(id)),
            ),
        };
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "detaching {name}"),
            Err(e) => tracing::warn!(error = %e, "detaching {name}"),
        }
    }
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, EbpfError> {
    ebpf.take_map(name).ok_or(EbpfError::Missing(name))
}

fn map_error(map: &'static str) -> impl Fn(aya::maps::MapError) -> EbpfError {
    move |source| EbpfError::Map { map, source }
}

fn remove_keys(listeners: &mut SockHash<MapData, ListenerKey>, keys: &[ListenerKey]) {
    for key in keys {
        if let Err(e) = listeners.remove(key) {
            tracing::warn!(error = %e, ?key, "removing inbound listener from sk_lookup map");
        }
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, EbpfError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program>,
{
    let prog = ebpf.program_mut(name).ok_or(EbpfError::Missing(name))?;
    prog.try_into().map_err(|_| EbpfError::Missing(name))
}

/// The most verbose aya-log level (`aya_log_common::Level` as u8; 0 = none) that the agent's
/// `tracing` filter lets through for the programs' target, `mesh_ebpf`.
fn kernel_log_level() -> u8 {
    use tracing::Level;
    if tracing::enabled!(target: "mesh_ebpf", Level::TRACE) {
        5
    } else if tracing::enabled!(target: "mesh_ebpf", Level::DEBUG) {
        4
    } else if tracing::enabled!(target: "mesh_ebpf", Level::INFO) {
        3
    } else if tracing::enabled!(target: "mesh_ebpf", Level::WARN) {
        2
    } else if tracing::enabled!(target: "mesh_ebpf", Level::ERROR) {
        1
    } else {
        0
    }
}

/// Forwards aya-log records from the kernel programs into `tracing` (through the `log` bridge
/// that `tracing-subscriber` installs). Without log statements in the object this is a no-op.
fn start_log_forwarding(ebpf: &mut Ebpf) {
    let logger = match aya_log::EbpfLogger::init(ebpf) {
        Ok(logger) => logger,
        Err(e) => {
            tracing::debug!(error = %e, "eBPF log forwarding not started");
            return;
        }
    };
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("eBPF log forwarding needs a tokio runtime; not started");
        return;
    };
    handle.spawn(async move {
        // SAFETY: the logger owns its ring-buffer fd and neither replaces nor closes it while the
        // AsyncFd holds it; the AsyncFd is dropped before the logger.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
        };
        let mut logger = match registered {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!(error = %e, "eBPF log forwarding failed");
                return;
            }
        };
        loop {
            let Ok(mut guard) = logger.readable_mut().await else {
                return;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_failures_name_the_program() {
        let io = || std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let program = |program| EbpfError::Program {
            program,
            source: aya::programs::ProgramError::NotLoaded,
        };
        let map = |map| EbpfError::Map {
            map,
            source: aya::maps::MapError::KeyNotFound,
        };
        // (error, label)
        let cases = [
            (program(names::CONNECT6), "mesh_connect6"),
            (program(names::SOCKOPS), "mesh_sockops"),
            (map(names::INBOUND_LISTENERS), "mesh_sk_lookup"),
            (map(names::ORIG_DST), "other"),
            (
                EbpfError::Cgroup {
                    path: "/sys/fs/cgroup/pod".into(),
                    source: io(),
                },
                "cgroup",
            ),
            (EbpfError::Missing(names::SK_LOOKUP), "mesh_sk_lookup"),
            (EbpfError::Cpus(io()), "other"),
        ];
        for (error, want) in cases {
            assert_eq!(error.attach_program(), want, "{error}");
        }
    }
}
