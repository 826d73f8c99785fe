//! The sockets the data path sends and receives on: raw GRE, UDP (ESP, IKE) and raw ICMP; the
//! TUN interface is in `tun_queue`.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4};

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, Socket, Type};

use crate::wire::ipv4::PROTO_GRE;

/// A raw IPv4 socket for protocol 47 bound to our endpoint and connected to the customer's, so
/// the kernel delivers only that peer's GRE packets to this process (many tunnels may share the
/// local anycast address on one node), and filtered by GRE key ([`crate::gre_filter`]), so that
/// twins with the same endpoints and different keys each receive only their own frames.
pub fn open_gre_socket(local: Ipv4Addr, customer: Ipv4Addr, key: Option<u32>) -> Result<Socket> {
    let s = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(i32::from(PROTO_GRE))),
    )
    .context("opening a raw GRE socket (needs NET_RAW)")?;
    // First, so that few frames are queued unfiltered: only frames of our GRE key (or, without
    // a key, keyless ones) reach us; twins that differ by key do not see each other's.
    crate::gre_filter::attach(&s, key).context("attaching the GRE key filter")?;
    s.bind(&SocketAddrV4::new(local, 0).into())
        .with_context(|| {
            format!("binding to local endpoint {local}: is it an address of this host?")
        })?;
    s.connect(&SocketAddrV4::new(customer, 0).into())
        .with_context(|| format!("connecting to customer endpoint {customer}"))?;
    // We write the outer IPv4 header ourselves (see `gre`), TTL included.
    s.set_header_included_v4(true)
        .context("setting IP_HDRINCL")?;
    // Bursts from a fast sender must not overflow the default socket buffers.
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    Ok(s)
}

/// Receives one datagram (outer IPv4 header included) from the raw socket.
pub fn recv(socket: &Socket, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut s = socket;
    s.read(buf)
}

/// False only for errors that mean the socket itself is unusable; the rest are ICMP errors the
/// kernel reports on a connected socket, and the next datagram may be fine.
pub fn is_transient(e: &std::io::Error) -> bool {
    // EBADF, EFAULT, EINVAL, ENOTSOCK, ENOMEM
    !matches!(e.raw_os_error(), Some(9 | 14 | 22 | 88 | 12) | None)
}

/// Sends one datagram. A connected socket reports an ICMP error that arrived for earlier traffic
/// (e.g. protocol unreachable while the peer restarts) on its next call, without sending: such an
/// error is retried once, so it does not cost this packet.
pub fn send(socket: &Socket, frame: &[u8], to: Option<SocketAddrV4>) -> std::io::Result<usize> {
    let once = || match to {
        Some(addr) => socket.send_to(frame, &addr.into()),
        None => socket.send(frame),
    };
    match once() {
        Err(e) if is_transient(&e) && e.kind() != std::io::ErrorKind::WouldBlock => once(),
        other => other,
    }
}

/// Like [`send`], but never waits for room in the socket's send buffer (`MSG_DONTWAIT`): for
/// the async tasks (IKE, NAT keepalives) that share the data path's blocking socket, since a
/// send that blocked there would stall every task on the runtime thread while the data path
/// fills the buffer. A full buffer is `WouldBlock`: the datagram is lost, as on a busy link.
pub fn try_send(socket: &Socket, frame: &[u8], to: Option<SocketAddrV4>) -> std::io::Result<usize> {
    let flags = nix::sys::socket::MsgFlags::MSG_DONTWAIT.bits();
    match to {
        Some(addr) => socket.send_to_with_flags(frame, &addr.into(), flags),
        None => socket.send_with_flags(frame, flags),
    }
}

/// A raw ICMP socket bound to our endpoint address: the returns of unidirectional probes, which
/// come back over the Internet rather than through the tunnel.
pub fn open_icmp_socket(local: Ipv4Addr) -> Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
        .context("opening a raw ICMP socket (needs NET_RAW)")?;
    s.bind(&SocketAddrV4::new(local, 0).into())
        .with_context(|| format!("binding the ICMP socket to {local}"))?;
    Ok(s)
}

/// Reads ICMP from `socket` forever, passing the returns of our probes to the prober; every other
/// ICMP message the host receives (the socket sees them all) is ignored.
pub fn receive_probe_returns(
    socket: &Socket,
    spec: &crate::health::ProbeSpec,
    returns: &tokio::sync::mpsc::Sender<(u16, std::time::Instant)>,
) {
    let mut buf = [0u8; 2048];
    loop {
        match recv(socket, &mut buf) {
            Ok(n) => {
                if let Some(seq) = buf.get(..n).and_then(|p| spec.match_return(p)) {
                    let _ = returns.try_send((seq, std::time::Instant::now()));
                }
            }
            Err(e) if is_transient(&e) || e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::error!(error = %e, "ICMP return socket failed; unidirectional probes will be lost");
                return;
            }
        }
    }
}

/// A UDP socket on our endpoint's `port` (4500: ESP in UDP and IKE behind the non-ESP marker,
/// RFC 3948, from the start as Magic WAN does; 500: IKE), with `SO_REUSEPORT`: every IPsec
/// tunnel-pod of the node binds the same address and port (see `lobby`). With `peer` it is
/// connected, and the kernel gives it every datagram from exactly that address and port;
/// without, it is one of the group's unconnected sockets, which share the rest by a hash.
pub fn open_udp_socket(local: Ipv4Addr, port: u16, peer: Option<SocketAddrV4>) -> Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .context("opening a UDP socket")?;
    nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::ReusePort, &true)
        .context("setting SO_REUSEPORT")?;
    s.bind(&SocketAddrV4::new(local, port).into())
        .with_context(|| {
            format!(
                "binding to {local}:{port}: is it an address of this host, and the port free \
                 (or held with SO_REUSEPORT by the same user)?"
            )
        })?;
    if let Some(peer) = peer {
        connect_udp(&s, peer)?;
    }
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    Ok(s)
}

/// The ESP data socket: [`open_udp_socket`] on port 4500, with receive coalescing (`UDP_GRO`)
/// when `gro` (only the data path's receive thread reads it, and it splits what the kernel
/// coalesced; the IKE task's sockets stay without). Returns whether GRO is on: a kernel that
/// refuses it leaves a working socket.
pub fn open_data_socket(
    local: Ipv4Addr,
    peer: Option<SocketAddrV4>,
    gro: bool,
) -> Result<(Socket, bool)> {
    let s = open_udp_socket(local, crate::run::IKE_NATT_PORT, peer)?;
    let gro = gro && crate::udp_offload::enable_gro(&s).is_ok();
    Ok((s, gro))
}

/// Connects a UDP socket to `peer`: from now on it receives only that peer's datagrams, and a
/// send without an address goes there. Only for a socket that is not connected yet: see
/// `Path::connect` for why a connected one is replaced rather than re-connected.
pub fn connect_udp(s: &Socket, peer: SocketAddrV4) -> Result<()> {
    s.connect(&peer.into())
        .with_context(|| format!("connecting the UDP socket to {peer}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket whose peer never reads fills up; `try_send` must then say so at once rather
    /// than wait (the async tasks calling it share one runtime thread).
    #[test]
    fn try_send_never_waits_for_buffer_room() {
        let (a, _b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let a = Socket::from(std::os::fd::OwnedFd::from(a));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let frame = [0u8; 1024];
            let result = (0..1_000_000).find_map(|_| try_send(&a, &frame, None).err());
            let _ = tx.send(result.map(|e| e.kind()));
        });
        let kind = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("try_send blocked on a full socket");
        assert_eq!(kind, Some(std::io::ErrorKind::WouldBlock));
    }
}
