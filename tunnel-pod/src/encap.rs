//! The tunnel's encapsulation, whichever it is: GRE over raw IP, or ESP in UDP (RFC 3948). One
//! enum rather than a trait object, so the per-packet calls stay direct.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use crate::chatter;
use crate::drops::DropReason;
use crate::esp::sa::{Inbound, NEXT_IPV4, NEXT_IPV6, Outbound};
use crate::gre::{Gre, Inner, after_headroom};
use crate::mss;
use crate::wire::esp;
use crate::wire::gre::{ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::wire::udp_encap::{Datagram, NON_ESP_MARKER_LEN, classify};

/// Room to leave after an inner packet: the largest ESP trailer (15 bytes of CBC padding, pad
/// length, next header) and ICV (16).
pub const TAILROOM: usize = 15 + 2 + 16;

/// An ESP tunnel's SAs, changed while the data path runs: IKE installs, rekeys and retires Child
/// SAs; static SAs are installed once. Readers never block: each packet loads the current tables
/// (`ArcSwap`, a few nanoseconds), writers publish new tables (rare: once per rekey).
#[derive(Debug)]
pub struct Esp {
    /// The SAs we send with, in order of preference; a packet takes the first whose traffic
    /// selectors admit it (one entry unless the peer negotiated extra Child SAs). Shared by every
    /// thread that sends (egress, reflected probes, the prober): sequence numbers are atomic.
    outbound: ArcSwap<Vec<Arc<Outbound>>>,
    /// SPI → inbound SA. During a rekey the old and the new SA are both here, so no packet in
    /// flight is lost. Opened by the receive thread and, for strays, the IKE task, at once if
    /// need be: `Inbound::open` locks only its replay window, and only around the window's
    /// check and update, not the decryption.
    inbound: ArcSwap<Vec<Arc<Inbound>>>,
    /// Where ESP goes: the peer's address and port as IKE learned them (behind a NAT, not the
    /// configured customer endpoint); unset while unknown. `Path::set_peer` keeps the data
    /// socket connected to the same address.
    peer: PeerCell,
    pub mtu: u16,
    pub mss: Option<u16>,
}

/// An IPv4 socket address that threads read and replace without a lock (the ESP peer, the
/// data socket's connected peer).
#[derive(Debug, Default)]
pub struct PeerCell(AtomicU64);

impl PeerCell {
    pub fn get(&self) -> Option<SocketAddrV4> {
        unpack_peer(self.0.load(Ordering::Relaxed))
    }

    pub fn set(&self, peer: SocketAddrV4) {
        self.0.store(pack_peer(peer), Ordering::Relaxed);
    }
}

/// Packs an IPv4 socket address into a u64 (bit 48 marks "set") so it can be swapped atomically.
fn pack_peer(addr: SocketAddrV4) -> u64 {
    (1 << 48) | (u64::from(u32::from(*addr.ip())) << 16) | u64::from(addr.port())
}

fn unpack_peer(v: u64) -> Option<SocketAddrV4> {
    (v >> 48 == 1).then(|| {
        SocketAddrV4::new(
            Ipv4Addr::from(((v >> 16) & 0xFFFF_FFFF) as u32),
            (v & 0xFFFF) as u16,
        )
    })
}

/// What a received datagram turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A data packet, opened in place.
    Inner(Inner),
    /// An IKE message on port 4500 (after the non-ESP marker), for the IKE core.
    Ike(Range<usize>),
}

#[derive(Debug)]
pub enum Encap {
    Gre(Gre),
    Esp(Box<Esp>),
}

impl Encap {
    /// Encapsulates the inner packet at `buf[HEADROOM..HEADROOM + len]`; `buf` must hold
    /// `TAILROOM` more bytes after it.
    pub fn encap(&self, buf: &mut [u8], len: usize) -> Result<Range<usize>, DropReason> {
        self.encap_at(buf, after_headroom(len)?)
    }

    /// Encapsulates the inner packet at `buf[inner]`, in place; returns what to send.
    pub fn encap_at(
        &self,
        buf: &mut [u8],
        inner: Range<usize>,
    ) -> Result<Range<usize>, DropReason> {
        // The host kernel's own IPv6 link chatter on the TUN (see `chatter`) never enters the
        // tunnel. One byte compared for IPv4, a few for other IPv6.
        if buf
            .get(inner.clone())
            .and_then(chatter::link_chatter)
            .is_some()
        {
            return Err(DropReason::LinkChatter);
        }
        match self {
            Encap::Gre(g) => g.encap_at(buf, inner),
            Encap::Esp(e) => e.encap_at(buf, inner),
        }
    }

    /// Checks and opens one received datagram (as the socket delivers it) in place.
    pub fn decap(&self, datagram: &mut [u8]) -> Result<Received, DropReason> {
        match self {
            Encap::Gre(g) => g.decap(datagram).map(Received::Inner),
            Encap::Esp(e) => e.decap(datagram),
        }
    }

    /// Where to send what `encap` made: `None` for a connected socket (GRE), the peer's
    /// address for ESP; `Err` while the peer is not known yet.
    pub fn destination(&self) -> Result<Option<SocketAddrV4>, DropReason> {
        match self {
            Encap::Gre(_) => Ok(None),
            Encap::Esp(e) => e.peer().map(Some).ok_or(DropReason::NoSa),
        }
    }

    pub fn as_esp(&self) -> Option<&Esp> {
        match self {
            Encap::Esp(e) => Some(e),
            Encap::Gre(_) => None,
        }
    }

    pub fn as_gre(&self) -> Option<&Gre> {
        match self {
            Encap::Gre(g) => Some(g),
            Encap::Esp(_) => None,
        }
    }
}

impl Esp {
    /// No SAs yet: everything sent is dropped as `no_sa`, everything received as `unknown_spi`.
    pub fn new(mtu: u16, mss: Option<u16>) -> Self {
        Esp {
            outbound: ArcSwap::from_pointee(Vec::new()),
            inbound: ArcSwap::from_pointee(Vec::new()),
            peer: PeerCell::default(),
            mtu,
            mss,
        }
    }

    pub fn peer(&self) -> Option<SocketAddrV4> {
        self.peer.get()
    }

    /// Only the data path's `Path::set_peer` (and static SAs at start) call this, so that the
    /// data socket's connection follows.
    pub fn set_peer(&self, peer: SocketAddrV4) {
        self.peer.set(peer);
    }

    /// Adds an inbound SA (replacing one with the same SPI).
    pub fn install_inbound(&self, sa: Inbound) {
        let sa = Arc::new(sa);
        self.inbound.rcu(|t| {
            let mut t: Vec<_> = t.iter().filter(|s| s.spi() != sa.spi()).cloned().collect();
            t.push(sa.clone());
            t
        });
    }

    /// Puts an outbound SA first: from now on new packets use it.
    pub fn activate_outbound(&self, sa: Arc<Outbound>) {
        self.outbound.rcu(|t| {
            let mut v = vec![sa.clone()];
            v.extend(t.iter().filter(|o| o.spi() != sa.spi()).cloned());
            v
        });
    }

    /// Adds an outbound SA after the active ones (an extra Child SA with its own selectors, or
    /// a rekeyed SA not yet in use).
    pub fn add_outbound(&self, sa: Arc<Outbound>) {
        self.outbound.rcu(|t| {
            let mut v: Vec<_> = t.iter().filter(|o| o.spi() != sa.spi()).cloned().collect();
            v.push(sa.clone());
            v
        });
    }

    /// Removes the SAs with these SPIs (either may be absent).
    pub fn retire(&self, inbound_spi: u32, outbound_spi: u32) {
        self.inbound.rcu(|t| {
            t.iter()
                .filter(|s| s.spi() != inbound_spi)
                .cloned()
                .collect::<Vec<_>>()
        });
        self.outbound.rcu(|t| {
            t.iter()
                .filter(|o| o.spi() != outbound_spi)
                .cloned()
                .collect::<Vec<_>>()
        });
    }

    /// Every outbound SA, for the SA clock and status.
    pub fn outbound_sas(&self) -> Vec<Arc<Outbound>> {
        self.outbound.load().iter().cloned().collect()
    }

    /// Runs `f` on each inbound SA (the SA clock's age checks).
    pub fn for_each_inbound(&self, f: impl FnMut(&Inbound)) {
        self.inbound.load().iter().map(|sa| &**sa).for_each(f);
    }

    pub fn has_sas(&self) -> bool {
        !self.outbound.load().is_empty() && !self.inbound.load().is_empty()
    }

    fn encap_at(&self, buf: &mut [u8], inner: Range<usize>) -> Result<Range<usize>, DropReason> {
        let packet = buf.get_mut(inner.clone()).ok_or(DropReason::Oversized)?;
        let next_header = match packet.first().map(|b| b >> 4) {
            Some(4) => NEXT_IPV4,
            Some(6) => NEXT_IPV6,
            _ => return Err(DropReason::NotIp),
        };
        if packet.len() > usize::from(self.mtu) {
            return Err(DropReason::Oversized);
        }
        if let Some(m) = self.mss {
            mss::clamp(packet, m);
        }
        let table = self.outbound.load();
        let sa = match table.as_slice() {
            [] => return Err(DropReason::NoSa),
            [only] => only,
            many => many
                .iter()
                .find(|o| o.selects(packet))
                .ok_or(DropReason::SelectorMismatch)?,
        };
        Ok(sa.seal(buf, inner, next_header)?)
    }

    fn decap(&self, datagram: &mut [u8]) -> Result<Received, DropReason> {
        let esp_len = match classify(datagram) {
            Datagram::Esp(p) => p.len(),
            Datagram::Keepalive => return Err(DropReason::NatKeepalive),
            Datagram::Ike(_) => {
                return Ok(Received::Ike(NON_ESP_MARKER_LEN..datagram.len()));
            }
            Datagram::Malformed => return Err(DropReason::Truncated),
        };
        let spi = esp::Packet::new_checked(&*datagram)
            .map_err(|_| DropReason::Truncated)?
            .spi();
        let table = self.inbound.load();
        let sa = table
            .iter()
            .find(|s| s.spi() == spi)
            .ok_or(DropReason::UnknownSpi)?;
        let packet = datagram.get_mut(..esp_len).ok_or(DropReason::Truncated)?;
        let opened = sa.open(packet)?;
        drop(table);
        if opened.inner.len() > usize::from(self.mtu) {
            return Err(DropReason::Oversized);
        }
        if let Some(m) = self.mss
            && let Some(p) = datagram.get_mut(opened.inner.clone())
        {
            mss::clamp(p, m);
        }
        let ethertype = if opened.next_header == NEXT_IPV4 {
            ETHERTYPE_IPV4
        } else {
            ETHERTYPE_IPV6
        };
        Ok(Received::Inner(Inner {
            range: opened.inner,
            ethertype,
            // Encrypted, so never coalesced on the way.
            coalesced: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_address_packs_losslessly() {
        for a in ["203.0.113.2:4500", "0.0.0.0:0", "255.255.255.255:65535"] {
            let addr: SocketAddrV4 = a.parse().unwrap();
            assert_eq!(unpack_peer(pack_peer(addr)), Some(addr));
        }
        assert_eq!(unpack_peer(0), None);
    }

    /// IPv6 with `ICMPv6 type` to `dst` at hop limit `hop`, after `HEADROOM`.
    fn icmpv6(dst: [u8; 16], hop: u8, kind: u8) -> (Vec<u8>, Range<usize>) {
        let mut p = vec![0x60, 0, 0, 0, 0, 8, 58, hop];
        p.extend_from_slice(&[0; 16]);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&[kind, 0, 0, 0, 0, 0, 0, 0]);
        let mut buf = vec![0u8; crate::gre::HEADROOM];
        buf.extend_from_slice(&p);
        buf.resize(buf.len() + TAILROOM, 0);
        let range = after_headroom(p.len()).unwrap();
        (buf, range)
    }

    #[test]
    fn link_chatter_is_dropped_before_either_encapsulation() {
        let gre = Encap::Gre(Gre {
            local: Ipv4Addr::new(192, 0, 2, 1),
            customer: Ipv4Addr::new(198, 51, 100, 2),
            ttl: 64,
            key: None,
            mtu: 1476,
            mss: None,
            idents: crate::gre::Idents::random(),
        });
        // No SAs: anything that reached the ESP encapsulation would be `no_sa`.
        let esp = Encap::Esp(Box::new(Esp::new(1400, None)));
        let mut all_routers = [0u8; 16];
        all_routers[..2].copy_from_slice(&[0xff, 0x02]);
        all_routers[15] = 2;
        let mut all_nodes = all_routers;
        all_nodes[15] = 1;
        for e in [&gre, &esp] {
            let (mut buf, r) = icmpv6(all_routers, 255, 133);
            assert_eq!(e.encap_at(&mut buf, r), Err(DropReason::LinkChatter));
            // An echo request to ff02::1 is a user's, not the kernel's: it is carried.
            let (mut buf, r) = icmpv6(all_nodes, 64, 128);
            let carried = e.encap_at(&mut buf, r);
            match e {
                Encap::Gre(_) => assert!(carried.is_ok(), "{carried:?}"),
                Encap::Esp(_) => assert_eq!(carried, Err(DropReason::NoSa)),
            }
        }
    }
}
