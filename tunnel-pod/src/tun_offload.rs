//! Turns on TUN offloads (`TUNSETOFFLOAD`) on a device `tun_queue` opened.
#![allow(unsafe_code)]

use std::os::fd::AsRawFd;

// linux/if_tun.h
const TUN_F_CSUM: i32 = 0x01;
const TUN_F_TSO4: i32 = 0x02;
const TUN_F_TSO6: i32 = 0x04;

nix::ioctl_write_int_bad!(tun_set_offload, nix::request_code_write!(b'T', 208, 4));

/// Lets the kernel hand us TCP packets up to 64 KiB with partial checksums (TSO4/TSO6 + CSUM) and
/// accept the same from us. The device must have been opened with `IFF_VNET_HDR`.
pub fn enable(tun: &impl AsRawFd) -> std::io::Result<()> {
    // SAFETY: `TUNSETOFFLOAD` takes its argument by value (an unsigned int of flags), so no memory
    // is shared with the kernel; the fd is a TUN device borrowed for the duration of the call.
    unsafe { tun_set_offload(tun.as_raw_fd(), TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) }
        .map(|_| ())
        .map_err(std::io::Error::from)
}
