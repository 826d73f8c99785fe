//! The GRE tunnel core, sans-IO: inner packets in, GRE datagrams out, and back.
//!
//! The raw socket (protocol 47) is opened with `IP_HDRINCL`: `encap` writes the outer IPv4
//! header itself, ID included (the kernel rewrites only the total length, to the same value,
//! and the header checksum), which spares the kernel's generic append path and its
//! copy-with-checksum on every send. On receive the kernel hands over the whole outer
//! datagram, IPv4 header included.

use std::net::Ipv4Addr;
use std::ops::Range;
use std::sync::atomic::{AtomicU16, Ordering};

use crate::drops::DropReason;
use crate::mss;
use crate::offload::{self, VnetHdr};
use crate::wire::gre::{self, ETHERTYPE_IPV4, ETHERTYPE_IPV6, GreError};
use crate::wire::{Error as WireError, ipv4};

/// Space to leave in front of an inner packet for the outer IPv4 header and the largest GRE
/// header we send (base + key).
pub const HEADROOM: usize = ipv4::HEADER_LEN + 8;

/// One direction's settings, fixed for the life of the tunnel, and the outer IPv4 IDs.
#[derive(Debug, Clone)]
pub struct Gre {
    pub local: Ipv4Addr,
    pub customer: Ipv4Addr,
    /// Outer TTL.
    pub ttl: u8,
    pub key: Option<u32>,
    pub mtu: u16,
    /// Clamp TCP MSS to this value, both directions.
    pub mss: Option<u16>,
    pub idents: Idents,
}

/// Outer IPv4 IDs: a counter from a random start, shared by every thread that sends, so that
/// the IDs of one source, destination and protocol do not repeat within 65,536 datagrams
/// (RFC 791; DF is clear, so these are not atomic datagrams in RFC 6864's sense). Ours rather
/// than the kernel's: for a raw socket's ID 0 it calls `__ip_select_ident` per datagram (a
/// hash and an atomic on a shared table), 4.6 % of the GRE path's samples in
/// `scripts/perf-dataplane.sh`; here it is one relaxed add, and the AF_PACKET ring sends the
/// same header. (End to end the CPU per GB did not move beyond the noise.) An ID that comes
/// round to 0 is filled in by the kernel on the raw socket and leaves as 0 through the ring;
/// either is as good.
#[derive(Debug)]
pub struct Idents(AtomicU16);

impl Idents {
    pub fn random() -> Self {
        use ring::rand::SecureRandom;
        let mut b = [0u8; 2];
        // Unpredictable is nicer, not needed: should the system RNG fail, start at 0.
        let _ = ring::rand::SystemRandom::new().fill(&mut b);
        Idents(AtomicU16::new(u16::from_be_bytes(b)))
    }

    pub fn next(&self) -> u16 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// A copy continues from the same point (tests build variants of one `Gre`).
impl Clone for Idents {
    fn clone(&self) -> Self {
        Idents(AtomicU16::new(self.0.load(Ordering::Relaxed)))
    }
}

/// A decapsulated inner packet: its byte range in the received datagram and its IP version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inner {
    pub range: Range<usize>,
    pub ethertype: u16,
    /// GRE: the host's GRO coalesced it from several TCP segments (it may exceed the MTU); the
    /// virtio header to write it to the TUN device with. See `offload::kernel_coalesced`.
    pub coalesced: Option<VnetHdr>,
}

/// Where an inner packet of `len` bytes sits in a buffer laid out with `HEADROOM` in front.
pub fn after_headroom(len: usize) -> Result<Range<usize>, DropReason> {
    Ok(HEADROOM..HEADROOM.checked_add(len).ok_or(DropReason::Oversized)?)
}

impl Gre {
    /// Encapsulates the inner packet at `buf[inner]`, writing the outer headers just before it
    /// and clamping MSS on the way; returns the range of `buf` to hand to the raw socket.
    pub fn encap_at(
        &self,
        buf: &mut [u8],
        inner: Range<usize>,
    ) -> Result<Range<usize>, DropReason> {
        let len = inner.len();
        let packet = buf.get_mut(inner.clone()).ok_or(DropReason::Oversized)?;
        let ethertype = match packet.first().map(|b| b >> 4) {
            Some(4) => ETHERTYPE_IPV4,
            Some(6) => ETHERTYPE_IPV6,
            _ => return Err(DropReason::NotIp),
        };
        if len > usize::from(self.mtu) {
            return Err(DropReason::Oversized);
        }
        if let Some(m) = self.mss {
            mss::clamp(packet, m);
        }
        let repr = gre::Repr {
            protocol: ethertype,
            key: self.key,
            sequence: None,
            checksum: false,
        };
        let gre_start = inner
            .start
            .checked_sub(repr.header_len())
            .ok_or(DropReason::Truncated)?;
        let start = gre_start
            .checked_sub(ipv4::HEADER_LEN)
            .ok_or(DropReason::Truncated)?;
        repr.emit(
            buf.get_mut(gre_start..inner.start)
                .ok_or(DropReason::Truncated)?,
        )
        .map_err(|_| DropReason::Truncated)?;
        let outer = ipv4::Repr {
            src: self.local,
            dst: self.customer,
            protocol: ipv4::PROTO_GRE,
            ttl: self.ttl,
            payload_len: inner.end - gre_start,
        };
        outer
            .emit_with_ident(
                buf.get_mut(start..gre_start).ok_or(DropReason::Truncated)?,
                self.idents.next(),
            )
            .map_err(|_| DropReason::Oversized)?;
        Ok(start..inner.end)
    }

    /// Checks a received datagram (outer IPv4 header included) and locates its inner packet,
    /// clamping MSS in place. RFC 2890 sequence numbers are accepted and not enforced: a
    /// site-to-site tunnel carries IP, which tolerates reordering better than added loss.
    pub fn decap(&self, datagram: &mut [u8]) -> Result<Inner, DropReason> {
        // The kernel has checked the outer header already; this only guards our own indexing.
        let outer = ipv4::Packet::new_checked(&*datagram).map_err(|_| DropReason::Truncated)?;
        if outer.src_addr() != self.customer {
            return Err(DropReason::UnexpectedSource);
        }
        if outer.protocol() != ipv4::PROTO_GRE {
            return Err(DropReason::UnknownProtocol);
        }
        let gre_start = outer.header_len();
        let gre_end = usize::from(outer.total_len());
        let g = gre::Packet::new_unchecked(datagram.get(gre_start..gre_end).unwrap_or(&[]));
        let reason = |e| match e {
            GreError::Truncated => DropReason::Truncated,
            GreError::BadVersion => DropReason::BadVersion,
            GreError::ReservedBits => DropReason::ReservedBits,
            GreError::BadChecksum => DropReason::BadChecksum,
        };
        // The host's GRO merges GRE packets with checksums too, each verified first, and leaves
        // the first one's checksum (`gre_gro_complete`): such a packet is taken if its inner
        // packet is one GRO made, and dropped as a bad checksum otherwise.
        let (repr, checksum_failed) = match gre::Repr::parse(&g) {
            Ok(r) => (r, false),
            Err(GreError::BadChecksum) => (gre::Repr::parse_unverified(&g).map_err(reason)?, true),
            Err(e) => return Err(reason(e)),
        };
        if repr.key != self.key {
            return Err(DropReason::KeyMismatch);
        }
        let start = gre_start + repr.header_len();
        let inner = datagram
            .get_mut(start..gre_end)
            .ok_or(DropReason::Truncated)?;
        let len = match repr.protocol {
            ETHERTYPE_IPV4 => inner_ipv4_len(inner)?,
            ETHERTYPE_IPV6 => inner_ipv6_len(inner)?,
            _ => return Err(DropReason::UnknownProtocol),
        };
        let packet = inner.get_mut(..len).ok_or(DropReason::Truncated)?;
        if let Some(m) = self.mss {
            mss::clamp(packet, m);
        }
        // After the clamp, which rewrites a SYN's checksum: GRO never merges a SYN, and a SYN
        // whose clamped checksum happens to look partial is then completed to that same value.
        let coalesced = offload::kernel_coalesced(packet, usize::from(self.mtu), self.mss);
        if checksum_failed && coalesced.is_none() {
            return Err(DropReason::BadChecksum);
        }
        if len > usize::from(self.mtu) && coalesced.is_none() {
            return Err(DropReason::Oversized);
        }
        Ok(Inner {
            range: start..start + len,
            ethertype: repr.protocol,
            coalesced,
        })
    }
}

/// Length of the inner IPv4 packet (link padding after it is cut off).
fn inner_ipv4_len(b: &[u8]) -> Result<usize, DropReason> {
    match ipv4::Packet::new_checked(b) {
        Ok(p) => Ok(usize::from(p.total_len())),
        Err(WireError::Truncated) if b.first().is_some_and(|v| v >> 4 == 4) => {
            Err(DropReason::Truncated)
        }
        Err(_) => Err(DropReason::MalformedInner),
    }
}

fn inner_ipv6_len(b: &[u8]) -> Result<usize, DropReason> {
    if b.first().map(|v| v >> 4) != Some(6) {
        return Err(DropReason::MalformedInner);
    }
    let (Some(&hi), Some(&lo)) = (b.get(4), b.get(5)) else {
        return Err(DropReason::Truncated);
    };
    let len = 40 + usize::from(u16::from_be_bytes([hi, lo]));
    if b.len() < len {
        return Err(DropReason::Truncated);
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const CUSTOMER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

    fn gre(key: Option<u32>) -> Gre {
        Gre {
            local: LOCAL,
            customer: CUSTOMER,
            ttl: 77,
            key,
            mtu: 1476,
            mss: Some(1436),
            idents: Idents::random(),
        }
    }

    fn inner_v4(payload: usize) -> Vec<u8> {
        let mut p = vec![0u8; 20 + payload];
        ipv4::Repr {
            src: [10, 0, 0, 1].into(),
            dst: [10, 0, 0, 2].into(),
            protocol: ipv4::PROTO_ICMP,
            ttl: 64,
            payload_len: payload,
        }
        .emit(&mut p)
        .unwrap();
        p
    }

    /// What the peer's kernel would deliver to our raw socket for this GRE payload.
    fn outer(src: Ipv4Addr, gre_bytes: &[u8]) -> Vec<u8> {
        let mut d = vec![0u8; 20 + gre_bytes.len()];
        ipv4::Repr {
            src,
            dst: LOCAL,
            protocol: ipv4::PROTO_GRE,
            ttl: 64,
            payload_len: gre_bytes.len(),
        }
        .emit(&mut d)
        .unwrap();
        d[20..].copy_from_slice(gre_bytes);
        d
    }

    /// The GRE part (outer IPv4 header stripped) of what `encap` sends.
    fn encap(g: &Gre, inner: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; HEADROOM + inner.len()];
        buf[HEADROOM..].copy_from_slice(inner);
        let r = g
            .encap_at(&mut buf, after_headroom(inner.len()).unwrap())
            .unwrap();
        let outer = ipv4::Packet::new_checked(&buf[r.clone()]).unwrap();
        assert_eq!((outer.src_addr(), outer.dst_addr()), (LOCAL, CUSTOMER));
        assert_eq!((outer.ttl(), outer.protocol()), (g.ttl, ipv4::PROTO_GRE));
        assert_eq!(usize::from(outer.total_len()), r.len());
        assert!(outer.verify_checksum());
        buf[r.start + 20..r.end].to_vec()
    }

    /// The outer IDs are ours (the kernel keeps a non-zero one): consecutive, each header's
    /// checksum valid, one counter for every sender of the tunnel.
    #[test]
    fn outer_ids_count_up() {
        let g = gre(None);
        let inner = inner_v4(8);
        let ident = |g: &Gre| {
            let mut buf = vec![0u8; HEADROOM + inner.len()];
            buf[HEADROOM..].copy_from_slice(&inner);
            let r = g
                .encap_at(&mut buf, after_headroom(inner.len()).unwrap())
                .unwrap();
            let outer = ipv4::Packet::new_checked(&buf[r]).unwrap();
            assert!(outer.verify_checksum());
            assert!(!outer.is_fragment());
            outer.ident()
        };
        let first = ident(&g);
        let ids: Vec<u16> = (0..70_000).map(|_| ident(&g)).collect();
        assert_eq!(ids[0], first.wrapping_add(1));
        assert!(ids.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
        let other = gre(None);
        let starts: std::collections::HashSet<u16> = (0..8)
            .map(|_| ident(&gre(None)))
            .chain([ident(&other)])
            .collect();
        assert!(starts.len() > 1, "every tunnel starts at the same ID");
    }

    #[test]
    fn round_trip_with_and_without_key() {
        for key in [None, Some(1001)] {
            let g = gre(key);
            let inner = inner_v4(8);
            let wire = encap(&g, &inner);
            assert_eq!(wire.len(), inner.len() + if key.is_some() { 8 } else { 4 });
            let mut d = outer(CUSTOMER, &wire);
            let got = g.decap(&mut d).unwrap();
            assert_eq!(got.ethertype, ETHERTYPE_IPV4);
            assert_eq!(&d[got.range], &inner[..]);
        }
    }

    #[test]
    fn link_padding_is_cut_off() {
        let g = gre(None);
        let mut wire = encap(&g, &inner_v4(8));
        wire.extend_from_slice(&[0; 6]);
        let mut d = outer(CUSTOMER, &wire);
        assert_eq!(g.decap(&mut d).unwrap().range.len(), 28);
    }

    #[test]
    fn drops_by_reason() {
        let g = gre(Some(7));
        let good = encap(&g, &inner_v4(8));
        let case = |src: Ipv4Addr, bytes: &[u8]| g.decap(&mut outer(src, bytes)).unwrap_err();
        assert_eq!(
            case(Ipv4Addr::new(203, 0, 113, 9), &good),
            DropReason::UnexpectedSource
        );
        assert_eq!(case(CUSTOMER, &good[..6]), DropReason::Truncated);
        assert_eq!(
            case(CUSTOMER, &encap(&gre(Some(8)), &inner_v4(8))),
            DropReason::KeyMismatch
        );
        assert_eq!(
            case(CUSTOMER, &encap(&gre(None), &inner_v4(8))),
            DropReason::KeyMismatch
        );
        let mut v1 = good.clone();
        v1[1] |= 1;
        assert_eq!(case(CUSTOMER, &v1), DropReason::BadVersion);
        let mut routing = good.clone();
        routing[0] |= 0x40;
        assert_eq!(case(CUSTOMER, &routing), DropReason::ReservedBits);
        let mut proto = good.clone();
        proto[2..4].copy_from_slice(&0x88beu16.to_be_bytes());
        assert_eq!(case(CUSTOMER, &proto), DropReason::UnknownProtocol);
        let mut v6_label = good.clone();
        v6_label[2..4].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        assert_eq!(case(CUSTOMER, &v6_label), DropReason::MalformedInner);
        let mut short_inner = good.clone();
        short_inner.truncate(good.len() - 1);
        assert_eq!(case(CUSTOMER, &short_inner), DropReason::Truncated);
        let big = gre(Some(7));
        let huge = Gre {
            mtu: 9000,
            ..big.clone()
        };
        assert_eq!(
            case(CUSTOMER, &encap(&huge, &inner_v4(1500))),
            DropReason::Oversized
        );
    }

    /// What a raw socket gets from the host's GRO: one GRE packet whose inner TCP is larger
    /// than the MTU, its checksum left partial (`offload::kernel_coalesced`). Taken whole, with
    /// the virtio header for the TUN; with a complete checksum it is still oversized.
    #[test]
    fn a_packet_the_hosts_gro_coalesced_is_taken_whole() {
        let g = gre(Some(7));
        let payload = 20_000;
        let mut tcp = vec![0u8; 40 + payload];
        let (src, dst) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        ipv4::Repr {
            src: src.into(),
            dst: dst.into(),
            protocol: ipv4::PROTO_TCP,
            ttl: 64,
            payload_len: 20 + payload,
        }
        .emit(&mut tcp)
        .unwrap();
        tcp[32] = 5 << 4;
        tcp[33] = 0x10; // ACK
        let partial = offload::partial_checksum(&tcp, true, 20 + payload);
        tcp[36..38].copy_from_slice(&partial.to_be_bytes());
        // Encapsulated as the peer's segments were, then merged: only the MTU differs.
        let wire = encap(
            &Gre {
                mtu: 60_000,
                ..g.clone()
            },
            &tcp,
        );
        let inner = g.decap(&mut outer(CUSTOMER, &wire)).expect("taken");
        assert_eq!(inner.range.len(), tcp.len());
        let h = inner.coalesced.expect("recognised as coalesced");
        assert_eq!((h.gso_type, h.gso_size), (offload::GSO_TCPV4, 1476 - 40));
        // With a GRE checksum (RFC 2784) that GRO left covering the first segment only.
        let mut with_sum = vec![0u8; 8 + tcp.len()];
        with_sum[8..].copy_from_slice(&tcp);
        gre::Repr {
            protocol: ETHERTYPE_IPV4,
            key: None,
            sequence: None,
            checksum: true,
        }
        .emit(&mut with_sum)
        .unwrap();
        with_sum[4] ^= 0xff;
        let plain = Gre {
            key: None,
            ..g.clone()
        };
        let inner = plain.decap(&mut outer(CUSTOMER, &with_sum)).expect("taken");
        assert!(inner.coalesced.is_some());
        tcp[37] ^= 1;
        let wire = encap(
            &Gre {
                mtu: 60_000,
                ..g.clone()
            },
            &tcp,
        );
        assert_eq!(
            g.decap(&mut outer(CUSTOMER, &wire)),
            Err(DropReason::Oversized)
        );
        // A bad GRE checksum on anything else is still a bad checksum.
        with_sum[8 + 37] ^= 1;
        assert_eq!(
            plain.decap(&mut outer(CUSTOMER, &with_sum)),
            Err(DropReason::BadChecksum)
        );
    }

    #[test]
    fn checksum_is_verified() {
        let g = gre(None);
        let inner = inner_v4(8);
        let mut wire = vec![0u8; 12 + inner.len()];
        wire[12..].copy_from_slice(&inner);
        gre::Repr {
            protocol: ETHERTYPE_IPV4,
            key: None,
            sequence: Some(5),
            checksum: true,
        }
        .emit(&mut wire)
        .unwrap();
        // Sequence numbers (RFC 2890) are accepted.
        assert!(g.decap(&mut outer(CUSTOMER, &wire)).is_ok());
        let mut bad = wire.clone();
        bad[4] ^= 0xff;
        assert_eq!(
            g.decap(&mut outer(CUSTOMER, &bad)).unwrap_err(),
            DropReason::BadChecksum
        );
    }

    #[test]
    fn tun_side_refuses_non_ip_and_oversize() {
        let g = gre(None);
        let mut buf = vec![0u8; HEADROOM + 40];
        assert_eq!(
            g.encap_at(&mut buf, after_headroom(40).unwrap()),
            Err(DropReason::NotIp)
        );
        let mut big = vec![0u8; HEADROOM + 1477];
        big[HEADROOM] = 0x45;
        assert_eq!(
            g.encap_at(&mut big, after_headroom(1477).unwrap()),
            Err(DropReason::Oversized)
        );
        assert_eq!(
            g.encap_at(&mut buf, after_headroom(100).unwrap()),
            Err(DropReason::Oversized)
        );
    }

    #[test]
    fn hostile_datagrams_never_panic() {
        let g = gre(Some(1));
        let good = outer(CUSTOMER, &encap(&g, &inner_v4(40)));
        let mut state = 0x9e37_79b9u32;
        for i in 0..50_000 {
            let mut d = good.clone();
            if i % 7 == 0 {
                d.truncate((state as usize) % d.len());
            }
            for _ in 0..3 {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                if !d.is_empty() {
                    let at = (state as usize >> 8) % d.len();
                    d[at] = (state >> 24) as u8;
                }
            }
            let _ = g.decap(&mut d);
        }
    }
}
