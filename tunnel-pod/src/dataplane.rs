//! The GRE data path: one blocking thread per direction around the sans-IO core in `gre`.
//!
//! Threads rather than async tasks: each direction is a tight read → transform → write loop on
//! one device pair, and blocking syscalls on a dedicated core cost less than readiness polling.

use std::io::ErrorKind;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use socket2::Socket;
use tokio::sync::mpsc;

use crate::drops::DropReason;
use crate::gre::{Gre, HEADROOM};
use crate::health::{self, ProbeSpec};
use crate::io;
use crate::metrics::Metrics;
use crate::wire::{gre::ETHERTYPE_IPV4, ipv4};

/// Room for any IPv4 datagram.
const BUF_LEN: usize = 65_536;

/// Everything both directions share.
pub struct Path {
    pub gre: Gre,
    pub tun: tun::Device,
    pub socket: Socket,
    pub metrics: Arc<Metrics>,
    pub local_endpoint: Ipv4Addr,
    /// The customer's side of the tunnel subnet, where the peer's reply-style probes are headed.
    pub peer_address: Option<Ipv4Addr>,
    pub probes: Option<ProbeSpec>,
}

impl Path {
    /// TUN → GRE, until the TUN device fails.
    pub fn run_egress(&self) -> std::io::Error {
        let mut buf = vec![0u8; BUF_LEN];
        loop {
            let n = match self.tun.recv(buf.get_mut(HEADROOM..).unwrap_or_default()) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return e,
            };
            match self.gre.encap(&mut buf, n) {
                Ok(range) => self.send(buf.get(range).unwrap_or_default(), n),
                Err(d) => self.metrics.dropped(d),
            }
        }
    }

    /// GRE → TUN, until the socket fails. Returns of our own probes go to `returns`.
    pub fn run_ingress(&self, returns: mpsc::Sender<(u16, Instant)>) -> std::io::Error {
        let mut buf = vec![0u8; BUF_LEN];
        loop {
            let n = match io::recv(&self.socket, &mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if io::is_transient(&e) => {
                    // An ICMP error from the peer's side (e.g. protocol unreachable while its
                    // endpoint restarts), reported on the connected socket: not ours to die of.
                    self.metrics.socket_errors.inc();
                    continue;
                }
                Err(e) => return e,
            };
            let Some(datagram) = buf.get_mut(..n) else {
                continue;
            };
            let inner = match self.gre.decap(datagram) {
                Ok(i) => i,
                Err(d) => {
                    self.metrics.dropped(d);
                    continue;
                }
            };
            if inner.ethertype == ETHERTYPE_IPV4
                && self.intercept(&mut buf, inner.range.clone(), &returns)
            {
                continue;
            }
            let packet = buf.get(inner.range).unwrap_or_default();
            match self.tun.send(packet) {
                Ok(_) => self.metrics.ingress.count(packet.len()),
                Err(_) => self.metrics.dropped(DropReason::TunWriteError),
            }
        }
    }

    /// Handles the inner IPv4 packets that are for the tunnel endpoint itself rather than the
    /// host: returns of our probes, the peer's probes, GRE keepalives. True when consumed.
    fn intercept(
        &self,
        buf: &mut [u8],
        range: std::ops::Range<usize>,
        returns: &mpsc::Sender<(u16, Instant)>,
    ) -> bool {
        let Some(packet) = buf.get(range.clone()) else {
            return false;
        };
        if let Some(seq) = self.probes.as_ref().and_then(|p| p.match_return(packet)) {
            // A full channel means the prober is far behind; losing a return then is harmless.
            let _ = returns.try_send((seq, Instant::now()));
            return true;
        }
        if self
            .peer_address
            .is_some_and(|peer| health::is_peer_probe(packet, peer))
        {
            // Route it back as the customer's router would: the same packet, through the tunnel.
            // The received outer and GRE headers leave ≥ 24 bytes of headroom before `range`.
            let len = range.len();
            if let Some(frame) = range
                .start
                .checked_sub(HEADROOM)
                .and_then(|s| buf.get_mut(s..range.end))
                && let Ok(out) = self.gre.encap(frame, len)
            {
                self.send(frame.get(out).unwrap_or_default(), len);
                self.metrics.probes_reflected.inc();
            }
            return true;
        }
        if let Some(gre_payload) = keepalive(packet, self.local_endpoint, self.gre.customer) {
            // RFC 2784 keepalive (Cisco style): the inner packet is a GRE datagram addressed
            // back to the sender; the tunnel's job is to send it there. The host cannot, since
            // its source is our own address (a martian on the TUN).
            if self.socket.send(gre_payload).is_ok() {
                self.metrics.keepalives_reflected.inc();
            }
            return true;
        }
        false
    }

    fn send(&self, frame: &[u8], inner_len: usize) {
        match self.socket.send(frame) {
            Ok(_) => self.metrics.egress.count(inner_len),
            Err(_) => self.metrics.dropped(DropReason::SendError),
        }
    }

    /// Encapsulates and sends a packet the endpoint made itself (a probe) written at
    /// `buf[HEADROOM..HEADROOM + len]`.
    pub fn send_own(&self, buf: &mut [u8], len: usize) -> bool {
        match self.gre.encap(buf, len) {
            Ok(range) => self.socket.send(buf.get(range).unwrap_or_default()).is_ok(),
            Err(_) => false,
        }
    }
}

/// The GRE payload of a keepalive: an inner IPv4 GRE packet from our endpoint to the customer's.
fn keepalive(packet: &[u8], local: Ipv4Addr, customer: Ipv4Addr) -> Option<&[u8]> {
    let ip = ipv4::Packet::new_checked(packet).ok()?;
    if ip.protocol() != ipv4::PROTO_GRE || ip.src_addr() != local || ip.dst_addr() != customer {
        return None;
    }
    packet.get(ip.header_len()..usize::from(ip.total_len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_is_recognised_only_between_the_endpoints() {
        let local = Ipv4Addr::new(192, 0, 2, 1);
        let customer = Ipv4Addr::new(198, 51, 100, 2);
        let mut p = vec![0u8; 24];
        let repr = |src, dst| ipv4::Repr {
            src,
            dst,
            protocol: ipv4::PROTO_GRE,
            ttl: 255,
            payload_len: 4,
        };
        repr(local, customer).emit(&mut p).unwrap();
        assert_eq!(keepalive(&p, local, customer), Some(&p[20..]));
        repr(customer, local).emit(&mut p).unwrap();
        assert_eq!(keepalive(&p, local, customer), None);
    }
}
