//! Sockets inside a pod's network namespace.
//!
//! A socket belongs to the network namespace it was created in, whatever thread uses it later.
//! Each pod gets one worker thread that has entered the pod's netns; it creates listeners and
//! outgoing sockets there on request, and the agent's async code then uses them as usual.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use async_trait::async_trait;
use nix::sched::{setns, CloneFlags};
use socket2::{Domain, Protocol, Socket, Type};

type Job = Box<dyn FnOnce() + Send>;

/// Limit on a TCP connect made from inside a pod (plaintext outbound, delivery to the pod's
/// application, HBONE dialed from the source pod): an unreachable destination fails in this
/// time instead of holding the client's connection for the kernel's SYN retries (~2 min).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors entering or using a network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The path cannot be opened.
    #[error("cannot open network namespace {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    /// The path is not a network namespace (or the agent lacks CAP_SYS_ADMIN).
    #[error("{path} is not a network namespace the agent can enter: {source}")]
    Enter { path: PathBuf, source: nix::Error },
    /// The worker thread is gone.
    #[error("the worker of network namespace {0} has stopped")]
    WorkerGone(PathBuf),
    /// A socket operation inside the namespace failed.
    #[error("in network namespace {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// A connect from inside the namespace did not complete in time.
    #[error("in network namespace {path}: TCP connect to {dst} timed out after {after:?}")]
    ConnectTimeout {
        path: PathBuf,
        dst: SocketAddr,
        after: Duration,
    },
}

impl NetnsError {
    /// As an I/O error of the same kind (a timeout stays `TimedOut`), keeping the message.
    pub fn into_io(self) -> io::Error {
        let kind = match &self {
            NetnsError::Io { source, .. } => source.kind(),
            NetnsError::ConnectTimeout { .. } => io::ErrorKind::TimedOut,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, self.to_string())
    }
}

/// A handle on a pod's network namespace with a worker thread inside it.
#[derive(Debug)]
pub struct Netns {
    path: PathBuf,
    file: File,
    jobs: mpsc::Sender<Job>,
    cookie: u64,
}

impl Netns {
    /// Opens the namespace at `path` (e.g. `/var/run/netns/<name>`) and starts its worker.
    pub fn open(path: &Path) -> Result<Netns, NetnsError> {
        let file = File::open(path).map_err(|source| NetnsError::Open {
            path: path.to_owned(),
            source,
        })?;
        let worker_file = file.try_clone().map_err(|source| NetnsError::Open {
            path: path.to_owned(),
            source,
        })?;
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("netns-worker".into())
            .spawn(move || {
                let entered = setns(worker_file.as_fd(), CloneFlags::CLONE_NEWNET);
                let ok = entered.is_ok();
                let _ = ready_tx.send(entered);
                if ok {
                    while let Ok(job) = rx.recv() {
                        job();
                    }
                }
            })
            .map_err(|source| NetnsError::Io {
                path: path.to_owned(),
                source,
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(source)) => {
                return Err(NetnsError::Enter {
                    path: path.to_owned(),
                    source,
                })
            }
            Err(_) => return Err(NetnsError::WorkerGone(path.to_owned())),
        }
        let mut netns = Netns {
            path: path.to_owned(),
            file,
            jobs,
            cookie: 0,
        };
        netns.cookie = netns.run_blocking(|| {
            let probe = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
            netns_cookie(&probe)
        })?;
        Ok(netns)
    }

    /// Path the namespace was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace's `SO_NETNS_COOKIE`, the id the kernel programs see.
    pub fn cookie(&self) -> u64 {
        self.cookie
    }

    /// The namespace file (for attaching `sk_lookup`).
    pub fn file(&self) -> &File {
        &self.file
    }

    fn run_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> Result<T, NetnsError> {
        let (tx, rx) = mpsc::channel();
        self.submit(f, move |r| {
            let _ = tx.send(r);
        })?;
        rx.recv()
            .map_err(|_| NetnsError::WorkerGone(self.path.clone()))?
            .map_err(|source| NetnsError::Io {
                path: self.path.clone(),
                source,
            })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> Result<T, NetnsError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(f, move |r| {
            let _ = tx.send(r);
        })?;
        rx.await
            .map_err(|_| NetnsError::WorkerGone(self.path.clone()))?
            .map_err(|source| NetnsError::Io {
                path: self.path.clone(),
                source,
            })
    }

    fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> io::Result<T> + Send + 'static,
        reply: impl FnOnce(io::Result<T>) + Send + 'static,
    ) -> Result<(), NetnsError> {
        self.jobs
            .send(Box::new(move || reply(f())))
            .map_err(|_| NetnsError::WorkerGone(self.path.clone()))
    }

    /// Destroys the namespace's TCP socket `local` → `remote` (the kernel resets its peer); a
    /// socket already gone is not an error.
    pub async fn destroy_tcp(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<(), NetnsError> {
        self.run(move || crate::sock_destroy::destroy(local, remote))
            .await
    }

    /// Binds a TCP listener at `addr` inside the namespace (IPv6 listeners are v6-only).
    pub async fn listen(&self, addr: SocketAddr) -> Result<tokio::net::TcpListener, NetnsError> {
        let std_listener = self
            .run(move || {
                let socket =
                    Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
                if addr.is_ipv6() {
                    socket.set_only_v6(true)?;
                }
                socket.set_reuse_address(true)?;
                socket.set_nonblocking(true)?;
                socket.bind(&addr.into())?;
                socket.listen(1024)?;
                Ok(TcpListener::from(socket))
            })
            .await?;
        tokio::net::TcpListener::from_std(std_listener).map_err(|source| NetnsError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// Connects to `dst` from inside the namespace (so the source address is the pod's), within
    /// [`CONNECT_TIMEOUT`].
    pub async fn connect(&self, dst: SocketAddr) -> Result<tokio::net::TcpStream, NetnsError> {
        self.connect_within(dst, CONNECT_TIMEOUT).await
    }

    /// Connects to `dst` from inside the namespace within `limit`.
    pub async fn connect_within(
        &self,
        dst: SocketAddr,
        limit: Duration,
    ) -> Result<tokio::net::TcpStream, NetnsError> {
        let socket = self
            .run(move || {
                let socket =
                    Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP))?;
                socket.set_nonblocking(true)?;
                socket.set_nodelay(true)?;
                Ok(std::net::TcpStream::from(socket))
            })
            .await?;
        let socket = tokio::net::TcpSocket::from_std_stream(socket);
        match tokio::time::timeout(limit, socket.connect(dst)).await {
            Ok(connected) => connected.map_err(|source| NetnsError::Io {
                path: self.path.clone(),
                source,
            }),
            Err(_) => Err(NetnsError::ConnectTimeout {
                path: self.path.clone(),
                dst,
                after: limit,
            }),
        }
    }
}

/// HBONE dialed from inside the pod: the destination sees the pod's address as the TCP source,
/// so its `ipBlocks` and access logs are true across nodes. The socket is made by the agent's
/// worker thread, whose cgroup is the agent's, not the pod's: the pod's `connect4`/`connect6`
/// never capture it. The pool bounds the wait with its own connect timeout.
#[async_trait]
impl mesh_hbone::hbone::Connector for Netns {
    async fn connect(&self, peer: SocketAddr) -> io::Result<tokio::net::TcpStream> {
        Netns::connect(self, peer)
            .await
            .map_err(NetnsError::into_io)
    }
}

const SO_NETNS_COOKIE: libc::c_int = 71;

/// `getsockopt(SO_NETNS_COOKIE)`: the cookie of the socket's network namespace.
pub fn netns_cookie(socket: &impl AsRawFd) -> io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: the fd is valid for the borrow's lifetime; `cookie` and `len` point to live locals
    // of the size passed.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            std::ptr::from_mut(&mut cookie).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_kind_as_io_errors() {
        let path = PathBuf::from("/var/run/netns/p");
        let dst: SocketAddr = "198.18.2.10:15008".parse().expect("addr");
        let cases = [
            (
                NetnsError::ConnectTimeout {
                    path: path.clone(),
                    dst,
                    after: Duration::from_secs(5),
                },
                io::ErrorKind::TimedOut,
                "timed out after 5s",
            ),
            (
                NetnsError::Io {
                    path: path.clone(),
                    source: io::ErrorKind::ConnectionRefused.into(),
                },
                io::ErrorKind::ConnectionRefused,
                "/var/run/netns/p",
            ),
            (
                NetnsError::WorkerGone(path),
                io::ErrorKind::Other,
                "has stopped",
            ),
        ];
        for (err, kind, text) in cases {
            let io = err.into_io();
            assert_eq!(io.kind(), kind, "{io}");
            assert!(io.to_string().contains(text), "{io}");
        }
    }

    /// A connect whose SYN is never answered ends at the limit with an error naming the wait.
    /// Needs root (entering a network namespace, here the test's own), as the test suite runs.
    #[tokio::test]
    async fn a_connect_that_is_never_answered_times_out() {
        let netns = Netns::open(Path::new("/proc/self/ns/net"))
            .expect("entering a network namespace needs root (run the tests as root)");
        // A loopback listener with a full accept queue (backlog 0, one connection waiting):
        // the kernel drops further SYNs, as a peer behind a cut link would.
        let listener =
            Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
        listener
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .expect("bind");
        listener.listen(0).expect("listen");
        let addr = listener
            .local_addr()
            .expect("addr")
            .as_socket()
            .expect("inet");
        let _queued = std::net::TcpStream::connect(addr).expect("first connect fills the queue");
        let limit = Duration::from_millis(300);
        let start = std::time::Instant::now();
        let result =
            tokio::time::timeout(Duration::from_secs(10), netns.connect_within(addr, limit))
                .await
                .expect("bounded");
        let took = start.elapsed();
        match result {
            Err(NetnsError::ConnectTimeout { dst, after, .. }) => {
                assert_eq!((dst, after), (addr, limit));
            }
            other => panic!("expected a connect timeout, got {other:?}"),
        }
        assert!(took >= limit && took < Duration::from_secs(5), "{took:?}");
    }
}
