//! Destroying one TCP socket by its 4-tuple with the kernel's `SOCK_DESTROY` (netlink
//! `NETLINK_SOCK_DIAG`, as `ss -K` does): the kernel aborts it and resets the peer. Used for
//! connections the agent never relays (the kernel fast path carries them) when a policy change
//! denies them. Must run in the socket's network namespace (the netns worker thread).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{
    recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag, SockProtocol,
    SockType,
};
use nix::sys::time::TimeVal;

/// `SOCK_DESTROY` (linux/sock_diag.h).
const SOCK_DESTROY: u16 = 21;
/// `NLM_F_REQUEST | NLM_F_ACK`.
const FLAGS: u16 = 0x1 | 0x4;
/// `NLMSG_ERROR`: the kernel's answer (error 0 is the acknowledgement).
const NLMSG_ERROR: u16 = 2;
/// `INET_DIAG_NOCOOKIE`: match on the 4-tuple alone.
const NO_COOKIE: u32 = u32::MAX;
/// How long to wait for the kernel's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_millis(500);
/// Length of `nlmsghdr` + `inet_diag_req_v2`.
const REQUEST_LEN: usize = 16 + 56;

/// The netlink request destroying the TCP socket whose own view is `local` → `remote` (both of
/// one address family).
pub fn request(local: SocketAddr, remote: SocketAddr, seq: u32) -> Vec<u8> {
    let mut msg = Vec::with_capacity(REQUEST_LEN);
    // nlmsghdr
    msg.extend_from_slice(&(REQUEST_LEN as u32).to_ne_bytes());
    msg.extend_from_slice(&SOCK_DESTROY.to_ne_bytes());
    msg.extend_from_slice(&FLAGS.to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    // inet_diag_req_v2: family, protocol, ext, pad, states
    let family = match local.ip() {
        IpAddr::V4(_) => libc_af_inet(),
        IpAddr::V6(_) => libc_af_inet6(),
    };
    msg.extend_from_slice(&[family, 6 /* IPPROTO_TCP */, 0, 0]);
    msg.extend_from_slice(&u32::MAX.to_ne_bytes());
    // inet_diag_sockid: ports and addresses in network byte order
    msg.extend_from_slice(&local.port().to_be_bytes());
    msg.extend_from_slice(&remote.port().to_be_bytes());
    msg.extend_from_slice(&address_words(local.ip()));
    msg.extend_from_slice(&address_words(remote.ip()));
    msg.extend_from_slice(&0u32.to_ne_bytes()); // interface: any
    msg.extend_from_slice(&NO_COOKIE.to_ne_bytes());
    msg.extend_from_slice(&NO_COOKIE.to_ne_bytes());
    msg
}

fn libc_af_inet() -> u8 {
    AddressFamily::Inet as i32 as u8
}

fn libc_af_inet6() -> u8 {
    AddressFamily::Inet6 as i32 as u8
}

/// The 16 address bytes of `inet_diag_sockid` (an IPv4 address in the first 4).
fn address_words(ip: IpAddr) -> [u8; 16] {
    let mut words = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => words[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => words.copy_from_slice(&v6.octets()),
    }
    words
}

/// The kernel's answer to a request: `Ok` when the socket was destroyed or is already gone.
pub fn answer(reply: &[u8]) -> io::Result<()> {
    let field = |at: usize, len: usize| reply.get(at..at + len);
    let kind = field(4, 2)
        .and_then(|b| b.try_into().ok())
        .map(u16::from_ne_bytes);
    let error = field(16, 4)
        .and_then(|b| b.try_into().ok())
        .map(i32::from_ne_bytes);
    match (kind, error) {
        (Some(NLMSG_ERROR), Some(0)) => Ok(()),
        // ENOENT: closed meanwhile (e.g. its peer's reset arrived first).
        (Some(NLMSG_ERROR), Some(e)) if -e == nix::errno::Errno::ENOENT as i32 => Ok(()),
        (Some(NLMSG_ERROR), Some(e)) => Err(io::Error::from_raw_os_error(-e)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected SOCK_DESTROY answer of {} bytes", reply.len()),
        )),
    }
}

/// Destroys the TCP socket `local` → `remote` of the calling thread's network namespace.
pub fn destroy(local: SocketAddr, remote: SocketAddr) -> io::Result<()> {
    let fd: OwnedFd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )?;
    let timeout = TimeVal::new(0, ANSWER_TIMEOUT.as_micros() as _);
    setsockopt(&fd, sockopt::ReceiveTimeout, &timeout)?;
    send(
        fd.as_raw_fd(),
        &request(local, remote, 1),
        MsgFlags::empty(),
    )?;
    let mut reply = [0u8; 512];
    let n = recv(fd.as_raw_fd(), &mut reply, MsgFlags::empty())?;
    answer(&reply[..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout() {
        let msg = request(
            "198.18.1.10:40000".parse().expect("addr"),
            "198.18.1.20:8080".parse().expect("addr"),
            7,
        );
        assert_eq!(msg.len(), REQUEST_LEN);
        assert_eq!(&msg[0..4], &(72u32).to_ne_bytes());
        assert_eq!(&msg[4..6], &21u16.to_ne_bytes());
        assert_eq!(&msg[8..12], &7u32.to_ne_bytes());
        assert_eq!(msg[16], 2, "AF_INET");
        assert_eq!(msg[17], 6, "TCP");
        assert_eq!(&msg[24..26], &40000u16.to_be_bytes());
        assert_eq!(&msg[26..28], &8080u16.to_be_bytes());
        assert_eq!(&msg[28..32], &[198, 18, 1, 10]);
        assert_eq!(&msg[44..48], &[198, 18, 1, 20]);
        let v6 = request(
            "[fd18:1::10]:1".parse().expect("addr"),
            "[fd18:1::20]:2".parse().expect("addr"),
            1,
        );
        assert_eq!(v6[16], 10, "AF_INET6");
        assert_eq!(v6.len(), REQUEST_LEN);
    }

    #[test]
    fn answers() {
        let reply = |kind: u16, error: i32| {
            let mut r = vec![0u8; 36];
            r[4..6].copy_from_slice(&kind.to_ne_bytes());
            r[16..20].copy_from_slice(&error.to_ne_bytes());
            r
        };
        // (case, reply, ok)
        let cases: [(&str, Vec<u8>, bool); 5] = [
            ("acknowledged", reply(2, 0), true),
            ("already gone", reply(2, -2), true),
            ("not permitted", reply(2, -1), false),
            ("not an error message", reply(3, 0), false),
            ("truncated", vec![0u8; 8], false),
        ];
        for (case, r, ok) in cases {
            assert_eq!(answer(&r).is_ok(), ok, "{case}");
        }
    }
}
