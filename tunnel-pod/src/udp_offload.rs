//! Batched datagram I/O on the data socket, with UDP segmentation offload (GSO, `UDP_SEGMENT`)
//! on send and receive coalescing (GRO, `UDP_GRO`) for ESP in UDP.
//!
//! With GSO one `sendmsg` carries up to 64 equal-sized datagrams (the last may be shorter) and
//! the kernel cuts them apart late, after routing and netfilter; with GRO the kernel glues a
//! flow's datagrams back together and one `recvmmsg` slot holds many, cut apart here by the
//! `gso_size` the kernel reports. Both cut the per-packet syscall and stack cost on the two
//! sides of the veth or NIC, which is where the data path's time went.
//!
//! The message headers, I/O vectors, addresses and control buffers are allocated once, when a
//! [`Sender`] or [`Receiver`] is made; each call only fills in pointers, so the hot path does
//! not allocate (`tests/alloc_free.rs` checks it).
#![allow(unsafe_code)]

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd};

use nix::libc;

/// Most datagrams in one GSO call. The kernel takes 64 (`UDP_MAX_SEGMENTS`, raised to 128 in
/// recent kernels); 64 is what every kernel with `UDP_SEGMENT` accepts.
pub const GSO_MAX_SEGMENTS: usize = 64;
/// Most bytes of payload in one GSO call: the whole must fit one IP packet's length field,
/// with the outer headers.
pub const GSO_MAX_BYTES: usize = 65_000;

/// A control buffer for one `UDP_SEGMENT` or `UDP_GRO` message (a cmsghdr and an int),
/// aligned as `cmsghdr` needs.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct CmsgBuf([u8; 32]);

const CMSG_BUF_LEN: usize = std::mem::size_of::<CmsgBuf>();

/// Turns on receive coalescing: the kernel may hand over many datagrams of one flow as one,
/// with their size in a `UDP_GRO` control message ([`Receiver`] splits them).
pub fn enable_gro(socket: &impl AsFd) -> io::Result<()> {
    nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::UdpGroSegment, &true)
        .map_err(io::Error::from)
}

/// How many of the datagrams with lengths `lens` (in order) go into the next GSO call: the
/// first sets the segment size, the following must have it, except a last, shorter one that
/// ends the call; at most [`GSO_MAX_SEGMENTS`] and [`GSO_MAX_BYTES`]. At least 1 if `lens`
/// is not empty.
pub fn gso_run(lens: impl IntoIterator<Item = usize>) -> usize {
    let mut lens = lens.into_iter();
    let Some(size) = lens.next() else { return 0 };
    let (mut count, mut bytes) = (1, size);
    for len in lens {
        if count == GSO_MAX_SEGMENTS || bytes + len > GSO_MAX_BYTES || len > size {
            break;
        }
        count += 1;
        bytes += len;
        if len < size {
            break;
        }
    }
    count
}

/// The datagrams a coalesced receive of `len` bytes holds, cut at `gso_size` (the last may be
/// shorter); without a size (not coalesced), the whole.
pub fn split(len: usize, gso_size: Option<u16>) -> impl Iterator<Item = Range<usize>> {
    let step = gso_size.map_or(len, usize::from).max(1);
    (0..len)
        .step_by(step)
        .map(move |start| start..(start + step).min(len))
}

/// What one [`Sender::send`] did.
#[derive(Debug, Default)]
pub struct Sent {
    /// Datagrams the socket refused (each skipped, the rest still went).
    pub refused: usize,
    /// GSO calls made, and the datagrams they carried.
    pub gso_calls: usize,
    pub gso_segments: usize,
    /// Set when this call found that the kernel refuses GSO: the sender has switched to
    /// `sendmmsg` for good (and re-sent the refused datagrams that way).
    pub gso_refused: Option<io::Error>,
}

/// Sends batches of datagrams: with GSO (one `sendmsg` per run of equal-sized datagrams) while
/// the kernel takes it, else with `sendmmsg`. One per sending thread.
pub struct Sender {
    gso: bool,
    iov: Box<[libc::iovec]>,
    msgs: Box<[libc::mmsghdr]>,
    addr: libc::sockaddr_in,
    cmsg: CmsgBuf,
}

impl Sender {
    /// A sender for batches of up to `capacity` datagrams (more are sent in several rounds);
    /// `gso` false: `sendmmsg` only (a raw socket, or offload turned off).
    pub fn new(capacity: usize, gso: bool) -> Self {
        let capacity = capacity.max(1);
        let iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        Sender {
            gso,
            iov: vec![iov; capacity].into_boxed_slice(),
            // SAFETY: mmsghdr and sockaddr_in are plain C structs for which all-zero bytes are
            // a valid value (null pointers, zero lengths).
            msgs: (0..capacity)
                .map(|_| unsafe { std::mem::zeroed::<libc::mmsghdr>() })
                .collect(),
            addr: unsafe { std::mem::zeroed() },
            cmsg: CmsgBuf([0; CMSG_BUF_LEN]),
        }
    }

    /// True while sends use GSO.
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// Sends `buf[r]` for each range of `frames`, to `to` (`None`: a connected socket), with as
    /// few calls as the kernel allows.
    pub fn send(
        &mut self,
        socket: &impl AsRawFd,
        buf: &[u8],
        frames: &[Range<usize>],
        to: Option<SocketAddrV4>,
    ) -> Sent {
        let fd = socket.as_raw_fd();
        if let Some(to) = to {
            self.addr = sockaddr(to);
        }
        let mut sent = Sent::default();
        for round in frames.chunks(self.iov.len()) {
            let mut iov_len = 0;
            for (iov, r) in self.iov.iter_mut().zip(round) {
                let Some(frame) = buf.get(r.clone()) else {
                    break;
                };
                *iov = libc::iovec {
                    iov_base: frame.as_ptr() as *mut libc::c_void,
                    iov_len: frame.len(),
                };
                iov_len += 1;
            }
            sent.refused += round.len() - iov_len;
            let mut next = 0;
            if self.gso {
                next = self.send_gso(fd, iov_len, to.is_some(), &mut sent);
            }
            sent.refused += self.send_mmsg(fd, next, iov_len, to.is_some());
        }
        sent
    }

    /// GSO calls for `self.iov[..count]`; returns how far it got (short of `count` only if the
    /// kernel refused GSO: the rest is for `sendmmsg`).
    fn send_gso(&mut self, fd: i32, count: usize, addressed: bool, sent: &mut Sent) -> usize {
        let mut next = 0;
        let mut retried = false;
        while next < count {
            let run = gso_run(self.iov[next..count].iter().map(|v| v.iov_len));
            let size = self.iov[next].iov_len;
            match self.sendmsg_gso(fd, next, run, size, addressed) {
                Ok(()) => {
                    sent.gso_calls += 1;
                    sent.gso_segments += run;
                    next += run;
                    retried = false;
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => {}
                    Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP) => {
                        self.gso = false;
                        sent.gso_refused = Some(e);
                        return next;
                    }
                    Some(libc::EMSGSIZE) => {
                        // A segment larger than the route's MTU: GSO never fragments, the plain
                        // send does (as it did before GSO).
                        sent.refused += self.send_mmsg(fd, next, next + run, addressed);
                        next += run;
                    }
                    _ if !retried && crate::io::is_transient(&e) => {
                        // An ICMP error from earlier traffic, consumed by this call; the
                        // datagrams were not tried. Once more.
                        retried = true;
                    }
                    _ => {
                        sent.refused += run;
                        next += run;
                        retried = false;
                    }
                },
            }
        }
        next
    }

    /// One `sendmsg` of `self.iov[at..at + count]` with `UDP_SEGMENT` = `size` (none for a
    /// single datagram, which needs no segmentation).
    fn sendmsg_gso(
        &mut self,
        fd: i32,
        at: usize,
        count: usize,
        size: usize,
        addressed: bool,
    ) -> io::Result<()> {
        // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        self.fill_name(&mut msg, addressed);
        msg.msg_iov = self.iov[at..].as_mut_ptr();
        msg.msg_iovlen = count;
        if count > 1 {
            let Ok(size) = u16::try_from(size) else {
                return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
            };
            msg.msg_control = self.cmsg.0.as_mut_ptr().cast();
            msg.msg_controllen = cmsg_space::<u16>();
            // SAFETY: msg_control points at our aligned buffer of CMSG_BUF_LEN bytes, at least
            // CMSG_SPACE(2), so CMSG_FIRSTHDR returns a header inside it with room for the data
            // written after it.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = libc::SOL_UDP;
                (*c).cmsg_type = libc::UDP_SEGMENT;
                (*c).cmsg_len = libc::CMSG_LEN(2) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), size);
            }
        }
        // SAFETY: every pointer in `msg` points into `self` (iovecs, address, control buffer)
        // or, through the iovecs, into the caller's `buf`, all borrowed for this call; the
        // lengths are those of the pointed-to memory.
        let n = unsafe { libc::sendmsg(fd, &msg, 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// `sendmmsg` of `self.iov[from..to]`, as many calls as it takes; returns how many the
    /// socket refused (each refused one is skipped, the rest still go).
    fn send_mmsg(&mut self, fd: i32, from: usize, to: usize, addressed: bool) -> usize {
        let name = if addressed {
            (&mut self.addr as *mut libc::sockaddr_in).cast()
        } else {
            std::ptr::null_mut()
        };
        let iov = self.iov.as_mut_ptr();
        for (i, m) in self.msgs.iter_mut().enumerate().take(to).skip(from) {
            // SAFETY: all-zero is a valid msghdr; `i` < iov.len() (msgs and iov have one length).
            m.msg_hdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_name = name;
            m.msg_hdr.msg_namelen = if addressed { sockaddr_len() } else { 0 };
            m.msg_hdr.msg_iov = unsafe { iov.add(i) };
            m.msg_hdr.msg_iovlen = 1;
        }
        let mut refused = 0;
        let mut next = from;
        let mut retried = false;
        while next < to {
            // SAFETY: msgs[next..to] were filled above with pointers into `self` and the
            // caller's buffer, valid for this call; the count is within the array.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.msgs[next..].as_mut_ptr(),
                    (to - next) as libc::c_uint,
                    0,
                )
            };
            if n > 0 {
                next += n as usize;
                retried = false;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                _ if n == 0 => {
                    refused += 1;
                    next += 1;
                }
                Some(libc::EINTR) => {}
                _ if !retried && crate::io::is_transient(&e) => retried = true,
                _ => {
                    // The first message of the call failed; skip it and carry on.
                    refused += 1;
                    next += 1;
                    retried = false;
                }
            }
        }
        refused
    }

    fn fill_name(&mut self, msg: &mut libc::msghdr, addressed: bool) {
        if addressed {
            msg.msg_name = (&mut self.addr as *mut libc::sockaddr_in).cast();
            msg.msg_namelen = sockaddr_len();
        }
    }
}

/// One received datagram (or, coalesced, a run of them) as [`Receiver::recv`] reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Received {
    pub len: usize,
    /// Longer than its slot: cut off, to be dropped.
    pub truncated: bool,
    pub from: Option<SocketAddrV4>,
    /// Coalesced by GRO: the size of each datagram but the last.
    pub gso_size: Option<u16>,
}

/// Receives batches of datagrams with `recvmmsg` into fixed slots, with their source and, with
/// GRO on the socket, their `gso_size`. One per receiving thread.
pub struct Receiver {
    msgs: Box<[libc::mmsghdr]>,
    iov: Box<[libc::iovec]>,
    names: Box<[libc::sockaddr_in]>,
    cmsgs: Box<[CmsgBuf]>,
}

impl Receiver {
    pub fn new(count: usize) -> Self {
        let count = count.max(1);
        let iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        Receiver {
            // SAFETY: all-zero is a valid mmsghdr and sockaddr_in.
            msgs: (0..count)
                .map(|_| unsafe { std::mem::zeroed::<libc::mmsghdr>() })
                .collect(),
            iov: vec![iov; count].into_boxed_slice(),
            names: (0..count).map(|_| unsafe { std::mem::zeroed() }).collect(),
            cmsgs: vec![CmsgBuf([0; CMSG_BUF_LEN]); count].into_boxed_slice(),
        }
    }

    /// Receives up to `out.len()` datagrams into consecutive `slot`-sized pieces of `slots`, each
    /// `offset` bytes into its slot, with one `recvmmsg` that blocks only until the first.
    pub fn recv(
        &mut self,
        socket: &impl AsRawFd,
        slots: &mut [u8],
        slot: usize,
        offset: usize,
        out: &mut [Received],
    ) -> io::Result<usize> {
        let mut count = 0;
        let room = slot.saturating_sub(offset);
        for (i, chunk) in slots.chunks_exact_mut(slot).take(out.len()).enumerate() {
            let Some(m) = self.msgs.get_mut(i) else { break };
            let Some(data) = chunk.get_mut(offset..) else {
                break;
            };
            self.iov[i] = libc::iovec {
                iov_base: data.as_mut_ptr().cast(),
                iov_len: data.len(),
            };
            // Every field, the lengths included, is set before each call: the kernel shortens
            // msg_namelen (to 0 for the end-of-file of a shut-down socket) and msg_controllen,
            // and a stale 0 would make it copy no source address into the next datagram's
            // header (the previous datagram's would then be taken for it).
            // SAFETY: all-zero is a valid msghdr.
            m.msg_hdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_in).cast();
            m.msg_hdr.msg_namelen = sockaddr_len();
            m.msg_hdr.msg_iov = &mut self.iov[i];
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_control = self.cmsgs[i].0.as_mut_ptr().cast();
            m.msg_hdr.msg_controllen = CMSG_BUF_LEN;
            m.msg_len = 0;
            count += 1;
        }
        // SAFETY: msgs[..count] point into `self` and into `slots`, which is borrowed mutably
        // for this call; each iovec's length is that of its slot's remainder.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for ((m, name), r) in self
            .msgs
            .iter()
            .zip(self.names.iter())
            .zip(out.iter_mut())
            .take(n)
        {
            let truncated = m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            *r = Received {
                len: if truncated { room } else { m.msg_len as usize },
                truncated,
                from: (m.msg_hdr.msg_namelen as usize >= std::mem::size_of::<libc::sockaddr_in>()
                    && i32::from(name.sin_family) == libc::AF_INET)
                    .then(|| {
                        SocketAddrV4::new(
                            Ipv4Addr::from(u32::from_be(name.sin_addr.s_addr)),
                            u16::from_be(name.sin_port),
                        )
                    }),
                gso_size: gro_size(&m.msg_hdr),
            };
        }
        Ok(n)
    }
}

/// The `UDP_GRO` control message's segment size, if the kernel coalesced the datagram.
fn gro_size(msg: &libc::msghdr) -> Option<u16> {
    // SAFETY: the kernel wrote msg_controllen bytes of well-formed control messages into the
    // buffer msg_control points at (ours, still borrowed through `msg`); the CMSG_* functions
    // stay within msg_controllen, and the data read is checked to be an int long.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_UDP
                && (*c).cmsg_type == libc::UDP_GRO
                && (*c).cmsg_len as usize >= libc::CMSG_LEN(4) as usize
            {
                let size = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                return u16::try_from(size).ok().filter(|&s| s > 0);
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    None
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: all-zero is a valid sockaddr_in (sin_zero must be zero).
    let mut s: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    s.sin_family = libc::AF_INET as libc::sa_family_t;
    s.sin_port = a.port().to_be();
    s.sin_addr.s_addr = u32::from(*a.ip()).to_be();
    s
}

fn sockaddr_len() -> libc::socklen_t {
    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
}

fn cmsg_space<T>() -> usize {
    // SAFETY: CMSG_SPACE is arithmetic on its argument.
    unsafe { libc::CMSG_SPACE(std::mem::size_of::<T>() as u32) as usize }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn runs_are_equal_sized_with_a_shorter_last() {
        assert_eq!(gso_run([]), 0);
        assert_eq!(gso_run([100]), 1);
        assert_eq!(gso_run([100, 100, 100]), 3);
        assert_eq!(
            gso_run([100, 100, 60, 100]),
            3,
            "a shorter one ends the run"
        );
        assert_eq!(gso_run([100, 120, 100]), 1, "a longer one starts a new run");
        assert_eq!(gso_run([100; 100]), GSO_MAX_SEGMENTS);
        assert_eq!(gso_run([1400; 64]), 46, "65,000 bytes at most");
    }

    #[test]
    fn split_cuts_at_the_segment_size() {
        let v: Vec<_> = split(250, Some(100)).collect();
        assert_eq!(v, vec![0..100, 100..200, 200..250]);
        assert_eq!(split(200, Some(100)).count(), 2);
        assert_eq!(split(80, None).collect::<Vec<_>>(), vec![0..80]);
        assert_eq!(split(0, None).count(), 0);
    }

    fn pair() -> (UdpSocket, UdpSocket, SocketAddrV4) {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let std::net::SocketAddr::V4(to) = rx.local_addr().unwrap() else {
            unreachable!()
        };
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        (tx, rx, to)
    }

    /// Datagrams of a burst, `sizes` long, each filled with its index.
    fn burst(sizes: &[usize]) -> (Vec<u8>, Vec<Range<usize>>) {
        let mut buf = Vec::new();
        let mut ranges = Vec::new();
        for (i, &s) in sizes.iter().enumerate() {
            let start = buf.len();
            buf.extend(std::iter::repeat_n(i as u8, s));
            ranges.push(start..buf.len());
        }
        (buf, ranges)
    }

    /// Over loopback, with and without GSO on the sender and GRO on the receiver: every
    /// datagram arrives whole and in order, and the receiver's split gives them back.
    #[test]
    fn every_datagram_arrives_whole_gso_or_not() {
        let sizes: Vec<usize> = [vec![1200; 70], vec![500], vec![1300; 3], vec![80]].concat();
        for (gso, gro) in [(true, true), (true, false), (false, true), (false, false)] {
            let (tx, rx, to) = pair();
            if gro {
                enable_gro(&rx).unwrap();
            }
            let (buf, frames) = burst(&sizes);
            let mut sender = Sender::new(128, gso);
            let sent = sender.send(&tx, &buf, &frames, Some(to));
            assert_eq!(sent.refused, 0);
            assert!(sent.gso_refused.is_none(), "{:?}", sent.gso_refused);
            if gso {
                // 70 × 1200 → 64 + 6 (the 500 ends the second), 3 × 1300 + 80.
                assert_eq!((sent.gso_calls, sent.gso_segments), (3, 75));
            }
            let mut receiver = Receiver::new(8);
            let slot = 65_536 + 16;
            let mut slots = vec![0u8; 8 * slot];
            let mut out = [Received::default(); 8];
            let mut got = Vec::new();
            let mut coalesced = 0;
            while got.len() < sizes.len() {
                let n = receiver.recv(&rx, &mut slots, slot, 16, &mut out).unwrap();
                for (i, r) in out.iter().take(n).enumerate() {
                    assert!(!r.truncated);
                    assert_eq!(r.from.unwrap().ip(), &Ipv4Addr::LOCALHOST);
                    if !gro {
                        assert_eq!(r.gso_size, None);
                    }
                    coalesced += usize::from(r.gso_size.is_some());
                    let data = &slots[i * slot + 16..][..r.len];
                    for piece in split(r.len, r.gso_size) {
                        got.push((data[piece.start], piece.len()));
                    }
                }
            }
            let want: Vec<_> = sizes
                .iter()
                .enumerate()
                .map(|(i, &s)| (i as u8, s))
                .collect();
            assert_eq!(got, want, "gso {gso} gro {gro}");
            // Over loopback a GSO send reaches a GRO socket as sent: one datagram per call.
            assert_eq!(coalesced > 0, gso && gro, "gso {gso} gro {gro}");
        }
    }

    /// A kernel that refuses GSO on the socket (here: `SO_NO_CHECK`, with which Linux answers
    /// `UDP_SEGMENT` with EINVAL): the first burst says so, is sent with `sendmmsg` whole, and
    /// the sender stays on `sendmmsg`.
    #[test]
    fn refused_gso_falls_back_without_loss() {
        let (tx, rx, to) = pair();
        let one: libc::c_int = 1;
        // SAFETY: SO_NO_CHECK takes an int; the pointer and length are those of `one`.
        let r = unsafe {
            libc::setsockopt(
                tx.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_NO_CHECK,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0);
        let (buf, frames) = burst(&[400, 400, 400, 100]);
        let mut sender = Sender::new(8, true);
        let sent = sender.send(&tx, &buf, &frames, Some(to));
        assert_eq!(
            sent.gso_refused.and_then(|e| e.raw_os_error()),
            Some(libc::EINVAL)
        );
        assert_eq!((sent.refused, sent.gso_segments), (0, 0));
        assert!(!sender.gso());
        let sent = sender.send(&tx, &buf, &frames, Some(to));
        assert!(sent.gso_refused.is_none() && sent.gso_calls == 0);
        let mut b = [0u8; 1000];
        for want in [400, 400, 400, 100, 400, 400, 400, 100] {
            assert_eq!(rx.recv(&mut b).unwrap(), want);
        }
    }

    /// A connected socket sends without an address.
    #[test]
    fn connected_socket_sends_without_address() {
        let (tx, rx, to) = pair();
        tx.connect(to).unwrap();
        let (buf, frames) = burst(&[300, 300, 200]);
        let sent = Sender::new(4, true).send(&tx, &buf, &frames, None);
        assert_eq!((sent.refused, sent.gso_segments), (0, 3));
        let mut b = [0u8; 1000];
        for want in [300, 300, 200] {
            assert_eq!(rx.recv(&mut b).unwrap(), want);
        }
    }
}
