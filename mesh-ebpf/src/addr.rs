//! Addresses as the kernel programs see them: four `u32` words in network byte order (IPv4 in
//! word 0), read from and written to program contexts one word at a time.

use mesh_common::kernel::{AF_INET, AF_INET6};

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

/// A context's local and remote addresses as words, from its IPv4 fields or (read word by word)
/// its IPv6 fields; `None` for another family.
#[inline(always)]
pub(crate) fn endpoints(
    family: u32,
    ip4: (u32, u32),
    ip6: (&[u32; 4], &[u32; 4]),
) -> Option<([u32; 4], [u32; 4])> {
    match family {
        AF_INET => Some(([ip4.0, 0, 0, 0], [ip4.1, 0, 0, 0])),
        AF_INET6 => Some((read_ip6(ip6.0), read_ip6(ip6.1))),
        _ => None,
    }
}

/// The IPv4 address inside `::ffff:a.b.c.d`, if `ip` is one.
pub(crate) fn v4_mapped(ip: [u32; 4]) -> Option<u32> {
    (ip[0] == 0 && ip[1] == 0 && u32::from_be(ip[2]) == 0xffff).then_some(ip[3])
}

/// `127.0.0.0/8` (the word in network order).
pub(crate) fn is_loopback_v4(ip: u32) -> bool {
    u32::from_be(ip) >> 24 == 127
}

/// `::1`, or a v4-mapped `::ffff:127.x.y.z`.
pub(crate) fn is_loopback_v6(ip: [u32; 4]) -> bool {
    (ip[0] == 0 && ip[1] == 0 && ip[2] == 0 && u32::from_be(ip[3]) == 1)
        || v4_mapped(ip).is_some_and(is_loopback_v4)
}

/// A loopback address of `family`.
pub(crate) fn is_loopback(family: u32, ip: &[u32; 4]) -> bool {
    if family == AF_INET {
        is_loopback_v4(ip[0])
    } else {
        is_loopback_v6(*ip)
    }
}
