//! The TUN interface with one or more queues (`IFF_MULTI_QUEUE`), opened by hand: the `tun`
//! crate (0.8) refuses more than one queue, and a queue is just another `/dev/net/tun` fd
//! attached to the same interface by `TUNSETIFF`.
//!
//! # Which queue a packet takes
//!
//! Towards us (the kernel transmits on the TUN), `tun_select_queue` picks the queue: without a
//! steering eBPF program, `tun_automq_select_queue` hashes the packet's flow symmetrically
//! (`__skb_get_hash_symmetric`: addresses and ports, both directions alike) and looks the hash
//! up in the device's flow table; a hit gives the queue recorded there, a miss the hash scaled
//! to the queue count. The table is filled from the other direction: `tun_get_user` (a write
//! on a queue's fd) records "this flow → the writing queue", and entries expire after 3 s
//! without a write (`TUN_FLOW_EXPIRE`). Either way one flow maps to one queue while it runs,
//! so one TCP flow is read by one egress worker, in order.
//!
//! The learning is why [`Tun::send`] does not write everything on queue 0: a TCP flow's ACKs
//! (or its data, the other way) written on queue 0 would steer the flow's egress to queue 0,
//! i.e. every flow with return traffic onto one worker. [`Tun::send`] writes each packet on the
//! queue its own flow hash names, so the flows spread over the queues (and workers) by that
//! hash, both directions of a flow meet on one queue, and the egress side follows.
//!
//! # Offload
//!
//! `IFF_VNET_HDR` (every packet preceded by a virtio-net header) is a device flag: the
//! `TUNSETIFF` that creates the device sets it, later attaches must agree on `IFF_MULTI_QUEUE`
//! and leave the flags alone, so every queue passes the same flags. `TUNSETOFFLOAD` sets the
//! device's features (`set_offload(tun, …)`), so it is issued once, on the first queue.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};

use anyhow::{Context, Result, bail};
use nix::libc;

use crate::offload::VNET_HDR_LEN;
use crate::wire::ipv4;

/// One queue of the TUN interface: an fd that reads what the kernel put on this queue and
/// writes packets into the kernel. Several threads may use one queue; each call is one packet.
#[derive(Debug)]
pub struct TunQueue(File);

impl TunQueue {
    /// Reads one packet (virtio header first), blocking until one is queued.
    pub fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        (&self.0).read(buf)
    }

    /// Writes one packet (virtio header first).
    pub fn send(&self, buf: &[u8]) -> std::io::Result<usize> {
        (&self.0).write(buf)
    }
}

impl AsRawFd for TunQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// All queues of the TUN interface. At least one; the first is the one a single-queue device
/// has.
#[derive(Debug)]
pub struct Tun {
    queues: Vec<TunQueue>,
}

/// `struct ifreq` as `TUNSETIFF` reads it: the name, then the flags at the start of the union.
#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _rest: [u8; 22],
}

// The kernel copies a whole `struct ifreq`: ours must be at least that large.
const _: () = assert!(size_of::<IfReq>() >= size_of::<libc::ifreq>());

// linux/if_tun.h: TUNSETIFF = _IOW('T', 202, int), though the argument is a `struct ifreq *`,
// which the kernel also writes back.
nix::ioctl_readwrite_bad!(
    tun_set_iff,
    nix::request_code_write!(b'T', 202, size_of::<libc::c_int>()),
    IfReq
);

/// The most queues `--queues` accepts (the kernel allows 256; a worker per core is the point).
pub const MAX_QUEUES: usize = 64;

impl Tun {
    /// Opens (creates) the TUN interface `name` with `queues` queues, without configuring it:
    /// netlink does that. Every packet carries a virtio-net header (`IFF_VNET_HDR`); `offload`
    /// also turns on TSO and checksum offload, so the kernel may hand over (and accept) 64 KiB
    /// TCP packets.
    pub fn open(name: &str, queues: usize, offload: bool) -> Result<Tun> {
        if !(1..=MAX_QUEUES).contains(&queues) {
            bail!("TUN queues: {queues} is not in 1..={MAX_QUEUES}");
        }
        let mut flags = libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
        if queues > 1 {
            flags |= libc::IFF_MULTI_QUEUE;
        }
        let queues = (0..queues)
            .map(|_| attach(name, flags as libc::c_short))
            .collect::<Result<Vec<_>>>()
            .with_context(|| {
                format!(
                    "creating TUN interface {name} (is /dev/net/tun present and NET_ADMIN granted?)"
                )
            })?;
        let tun = Tun { queues };
        if offload && let Err(e) = crate::tun_offload::enable(tun.first()) {
            // Still correct without: the kernel then sends MTU-sized packets only.
            tracing::warn!(error = %e, "TUN offload unavailable; one packet per read");
        }
        Ok(tun)
    }

    pub fn queues(&self) -> &[TunQueue] {
        &self.queues
    }

    fn first(&self) -> &TunQueue {
        // `open` makes at least one.
        &self.queues[0]
    }

    /// Writes one packet (virtio header first) into the kernel, on the queue of its flow (see
    /// the module docs for why the queue matters).
    pub fn send(&self, frame: &[u8]) -> std::io::Result<usize> {
        let queue = match self.queues.len() {
            1 => self.first(),
            n => self
                .queues
                .get(flow_queue(frame, n))
                .unwrap_or(self.first()),
        };
        queue.send(frame)
    }
}

/// Opens `/dev/net/tun` and attaches it to the interface `name` (creating it with the first
/// queue) with `flags`.
fn attach(name: &str, flags: libc::c_short) -> Result<TunQueue> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .context("opening /dev/net/tun")?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags,
        _rest: [0; 22],
    };
    // IFNAMSIZ includes the terminating NUL, which the zeroed array keeps.
    if name.len() >= libc::IFNAMSIZ || name.as_bytes().contains(&0) {
        bail!("interface name {name:?}: at most 15 bytes, no NUL");
    }
    for (d, &s) in req.name.iter_mut().zip(name.as_bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: `req` is a live, initialised `IfReq`, exclusively borrowed, at least as large as
    // the `struct ifreq` the kernel reads and writes back (the name it chose) through the
    // pointer during the call and no longer; the fd is the /dev/net/tun file opened above.
    unsafe { tun_set_iff(file.as_raw_fd(), &mut req) }
        .with_context(|| format!("TUNSETIFF {name}"))?;
    Ok(TunQueue(file))
}

/// The queue for `frame` (virtio header, then an IPv4 or IPv6 packet) among `queues`: a hash of
/// its addresses, protocol and (unless a fragment) TCP/UDP ports, scaled to the queue count.
/// Anything else (not IP, or an IPv4 header `wire::ipv4` refuses) goes on queue 0.
fn flow_queue(frame: &[u8], queues: usize) -> usize {
    let Some(packet) = frame.get(VNET_HDR_LEN..) else {
        return 0;
    };
    let hash = match packet.first() {
        Some(&b) if b >> 4 == 4 => {
            let Ok(ip) = ipv4::Packet::new_checked(packet) else {
                return 0;
            };
            let mut addresses = [0u8; 8];
            addresses[..4].copy_from_slice(&ip.src_addr().octets());
            addresses[4..].copy_from_slice(&ip.dst_addr().octets());
            // Only the first fragment carries the ports.
            flow_hash(
                Some(&addresses),
                Some(&ip.protocol()),
                packet,
                ip.header_len(),
                ip.is_fragment(),
            )
        }
        Some(&b) if b >> 4 == 6 => flow_hash(packet.get(8..40), packet.get(6), packet, 40, false),
        _ => return 0,
    };
    // Multiply and shift: `hash` scaled to 0..queues without a division.
    ((u64::from(hash) * queues as u64) >> 32) as usize
}

/// FNV-1a over the addresses, the protocol and, for TCP and UDP, the ports at `l4`, then
/// MurmurHash3's finaliser: FNV alone barely moves the top bits (which pick the queue) when only
/// the last byte differs, and consecutive ephemeral ports then all landed on one queue.
fn flow_hash(
    addresses: Option<&[u8]>,
    protocol: Option<&u8>,
    packet: &[u8],
    l4: usize,
    fragment: bool,
) -> u32 {
    const TCP: u8 = 6;
    const UDP: u8 = 17;
    let protocol = protocol.copied().unwrap_or(0);
    let ports = match protocol {
        TCP | UDP if !fragment => packet.get(l4..l4 + 4).unwrap_or_default(),
        _ => &[],
    };
    let bytes = addresses
        .unwrap_or_default()
        .iter()
        .chain(std::iter::once(&protocol))
        .chain(ports);
    let h = bytes.fold(0x811C_9DC5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let h = (h ^ (h >> 16)).wrapping_mul(0x85EB_CA6B);
    let h = (h ^ (h >> 13)).wrapping_mul(0xC2B2_AE35);
    h ^ (h >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A virtio header and an IPv4 TCP or UDP header with these addresses and ports.
    fn v4(protocol: u8, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; VNET_HDR_LEN + 40];
        let p = &mut f[VNET_HDR_LEN..];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&40u16.to_be_bytes());
        p[9] = protocol;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        f
    }

    #[test]
    fn one_flow_always_takes_one_queue_and_flows_spread() {
        let a = v4(6, [10, 0, 0, 1], [10, 0, 0, 2], 40000, 5201);
        let mut a_later = a.clone();
        // Payload, TTL, checksum and IP ID differ packet to packet: not part of the flow.
        a_later[VNET_HDR_LEN + 4] = 0x12;
        a_later[VNET_HDR_LEN + 8] = 7;
        a_later.extend_from_slice(&[0xAB; 100]);
        for n in [2, 3, 4] {
            assert_eq!(flow_queue(&a, n), flow_queue(&a_later, n));
        }
        // Many flows (source ports) land on every queue, none far from its share.
        for n in [2usize, 4] {
            let mut hits = vec![0usize; n];
            for port in 0..4000u16 {
                let f = v4(6, [10, 0, 0, 1], [10, 0, 0, 2], 30000 + port, 5201);
                hits[flow_queue(&f, n)] += 1;
            }
            let share = 4000 / n;
            assert!(
                hits.iter().all(|&h| h > share * 3 / 4 && h < share * 5 / 4),
                "{hits:?}"
            );
        }
    }

    /// `iperf3 -P 4` and browsers open flows on consecutive source ports: a handful of them
    /// must spread like random ones (all of 4 on one of 2 queues: 1 in 8), not share a queue.
    #[test]
    fn consecutive_ports_spread() {
        let groups = 1000u16;
        let together = (0..groups)
            .filter(|g| {
                let queues: std::collections::HashSet<usize> = (0..4)
                    .map(|i| {
                        let f = v4(6, [10, 99, 0, 1], [10, 99, 0, 0], 5201, 40000 + g * 4 + i);
                        flow_queue(&f, 2)
                    })
                    .collect();
                queues.len() == 1
            })
            .count();
        assert!(together < 200, "{together} of {groups} groups on one queue");
    }

    #[test]
    fn ports_count_only_for_tcp_and_udp_first_fragments() {
        let queue = |f: &[u8]| flow_queue(f, 1 << 16);
        let (s, d) = ([192, 0, 2, 1], [198, 51, 100, 7]);
        // UDP ports distinguish flows; an ICMP "port" field does not exist.
        assert_ne!(queue(&v4(17, s, d, 1, 2)), queue(&v4(17, s, d, 3, 2)));
        assert_eq!(queue(&v4(1, s, d, 1, 2)), queue(&v4(1, s, d, 3, 2)));
        // A later fragment has no ports: all fragments of a datagram hash by addresses alone.
        let mut frag = v4(17, s, d, 1, 2);
        frag[VNET_HDR_LEN + 6] = 0x20; // MF
        let mut frag2 = v4(17, s, d, 9, 9);
        frag2[VNET_HDR_LEN + 7] = 0x10; // offset
        assert_eq!(queue(&frag), queue(&frag2));
    }

    #[test]
    fn ipv6_flows_and_garbage() {
        let v6 = |sport: u16| {
            let mut f = vec![0u8; VNET_HDR_LEN + 60];
            let p = &mut f[VNET_HDR_LEN..];
            p[0] = 0x60;
            p[6] = 6;
            p[8..24].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            p[24..40]
                .copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            p[40..42].copy_from_slice(&sport.to_be_bytes());
            f
        };
        let spread: std::collections::HashSet<usize> =
            (0..64).map(|p| flow_queue(&v6(p), 4)).collect();
        assert_eq!(spread.len(), 4);
        assert_eq!(flow_queue(&v6(7), 4), flow_queue(&v6(7), 4));
        for garbage in [&[][..], &[0u8; 3][..], &[0u8; VNET_HDR_LEN + 1][..]] {
            assert_eq!(flow_queue(garbage, 4), 0);
        }
        // Truncated headers never panic.
        for frame in [v6(1), v4(6, [1; 4], [2; 4], 1, 2)] {
            for len in 0..frame.len() {
                let _ = flow_queue(&frame[..len], 4);
            }
        }
    }
}
