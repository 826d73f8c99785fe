//! TUN offload, pure part: the virtio-net header the kernel puts before each packet on a TUN
//! device opened with `IFF_VNET_HDR`, TCP segmentation of the large (TSO) packets it hands us,
//! and coalescing of received TCP segments into large (GRO) packets we hand back.
//!
//! With offload the host's TCP stack exchanges 64 KiB packets with the TUN device, one syscall
//! each instead of one per 1.4 KiB. The wire still carries MTU-sized GRE packets: we cut them
//! here (as the NIC would for TSO) and glue them together on receipt (as GRO would).

use crate::wire::checksum::{finish, sum};
use crate::wire::{be16, be32, ipv4, put16, put32};

pub const VNET_HDR_LEN: usize = 10;
pub const F_NEEDS_CSUM: u8 = 1;
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_ECN`: the packet's CWR belongs on its first segment only.
pub const GSO_ECN: u8 = 0x80;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_URG: u8 = 0x20;
const TCP_ECE: u8 = 0x40;
const TCP_CWR: u8 = 0x80;

/// `struct virtio_net_hdr` (virtio spec §5.1.6), little-endian as on every host we run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn parse(b: &[u8]) -> Option<Self> {
        let b = b.get(..VNET_HDR_LEN)?;
        let le = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: le(2),
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
        })
    }

    pub fn emit(&self, b: &mut [u8]) {
        if let Some(b) = b.get_mut(..VNET_HDR_LEN) {
            b[0] = self.flags;
            b[1] = self.gso_type;
            b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
            b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
            b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
            b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        }
    }
}

/// Why an offloaded packet from the kernel could not be turned into wire packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// Completes a partial checksum (`F_NEEDS_CSUM`): the kernel left the pseudo-header sum in the
/// checksum field and expects the sum from `csum_start` to the end to be folded in.
pub fn complete_checksum(packet: &mut [u8], h: &VnetHdr) -> Result<(), Malformed> {
    let start = usize::from(h.csum_start);
    let field = start + usize::from(h.csum_offset);
    if field + 2 > packet.len() {
        return Err(Malformed);
    }
    let c = finish(sum(packet.get(start..).ok_or(Malformed)?, 0));
    // A computed 0 goes out as 0xFFFF (the same in one's complement): for UDP, 0 would mean
    // "no checksum", which IPv6 forbids (RFC 768, RFC 8200 §8.1).
    put16(packet, field, if c == 0 { 0xffff } else { c });
    Ok(())
}

/// The IP and TCP header lengths of a TCP packet, from the packet itself (the kernel's
/// `hdr_len` is only a hint).
fn tcp_headers(p: &[u8]) -> Result<(usize, usize, bool), Malformed> {
    let (ip_len, v4) = match p.first().map(|b| b >> 4) {
        Some(4) => {
            let ip = ipv4::Packet::new_checked(p).map_err(|_| Malformed)?;
            if ip.protocol() != ipv4::PROTO_TCP {
                return Err(Malformed);
            }
            (ip.header_len(), true)
        }
        Some(6) if p.get(6) == Some(&ipv4::PROTO_TCP) => (40, false),
        _ => return Err(Malformed),
    };
    let tcp_len = usize::from(p.get(ip_len + 12).ok_or(Malformed)? >> 4) * 4;
    if tcp_len < 20 || ip_len + tcp_len > p.len() {
        return Err(Malformed);
    }
    Ok((ip_len, tcp_len, v4))
}

/// TCP checksum over the pseudo-header and `segment` (TCP header + payload), field zeroed first.
fn tcp_checksum(ip: &[u8], v4: bool, segment: &mut [u8]) {
    put16(segment, 16, 0);
    let len = segment.len();
    let pseudo = pseudo_sum(ip, v4, len);
    put16(segment, 16, finish(sum(segment, pseudo)));
}

/// Sum of the IPv4 or IPv6 pseudo-header for a TCP segment of `len` bytes.
fn pseudo_sum(ip: &[u8], v4: bool, len: usize) -> u32 {
    let (src, dst) = if v4 {
        (12..16, 16..20)
    } else {
        (8..24, 24..40)
    };
    let mut acc = sum(ip.get(src).unwrap_or(&[]), 0);
    acc = sum(ip.get(dst).unwrap_or(&[]), acc);
    acc + u32::from(ipv4::PROTO_TCP) + (len as u32 & 0xffff) + ((len as u32) >> 16)
}

/// The checksum field of a TCP segment of `len` bytes left partial (`F_NEEDS_CSUM`,
/// `CHECKSUM_PARTIAL`): the pseudo-header sum, folded and not complemented.
pub(crate) fn partial_checksum(ip: &[u8], v4: bool, len: usize) -> u16 {
    let mut folded = pseudo_sum(ip, v4, len);
    while folded > 0xffff {
        folded = (folded & 0xffff) + (folded >> 16);
    }
    folded as u16
}

/// A TCP packet that the receiving host's GRO built from several segments before a raw socket
/// handed it to us (GRE: Linux's `gre_gro_receive` coalesces the TCP inside GRE on any NIC doing
/// GRO, into packets of up to 64 KiB). `tcp4_gro_complete` / `tcp6_gro_complete` set the IP
/// lengths and leave the TCP checksum partial, the pseudo-header sum, for whoever segments it
/// later; that field is how such a packet is recognised, as a raw socket gives no `gso_size`.
/// Returns the virtio header that hands the TUN device the same packet with the same promise:
/// the kernel completes the checksum and, where it forwards the packet, cuts it into segments
/// of at most `mtu` bytes (the tunnel MTU the peer's segments fitted in), and of no more payload
/// than the MSS clamp `mss` lets a segment carry (a clamp below the MTU's is there because the
/// path behind the TUN is narrower). CWR on the merged packet is passed on as the ECN flag, as
/// `tcp_gro_complete` does, so that only the first segment carries it.
///
/// `p` is the inner packet, exactly its IP length. A single segment whose full checksum
/// happens to equal its pseudo-header sum (one in 65,536) is taken for one too: completing it
/// writes the same value back, so only a corrupted segment of that kind would go unnoticed.
pub fn kernel_coalesced(p: &[u8], mtu: usize, mss: Option<u16>) -> Option<VnetHdr> {
    // IPv6 with extension headers is not recognised (`tcp_headers`): larger than the MTU it
    // is then dropped as oversized.
    let (ip_len, tcp_len, v4) = tcp_headers(p).ok()?;
    if v4 && ipv4::Packet::new_unchecked(p).is_fragment() {
        return None;
    }
    if be16(p, ip_len + 16) != partial_checksum(p, v4, p.len() - ip_len) {
        return None;
    }
    let headers = ip_len + tcp_len;
    let payload = p.len() - headers;
    // A sender takes its TCP options out of the MSS (RFC 6691 §2).
    let by_mss = mss.map_or(usize::MAX, |m| usize::from(m).saturating_sub(tcp_len - 20));
    let size = mtu.checked_sub(headers)?.min(by_mss);
    if size == 0 {
        return None;
    }
    let gso = payload > size;
    let ecn = if gso && p.get(ip_len + 13).is_some_and(|f| f & TCP_CWR != 0) {
        GSO_ECN
    } else {
        0
    };
    Some(VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: ecn
            | match (gso, v4) {
                (false, _) => GSO_NONE,
                (true, true) => GSO_TCPV4,
                (true, false) => GSO_TCPV6,
            },
        hdr_len: headers as u16,
        gso_size: if gso { size as u16 } else { 0 },
        csum_start: ip_len as u16,
        csum_offset: 16,
    })
}

/// Cuts a TSO packet into segments of at most `gso_size` payload bytes. Each segment is written
/// at `out[i * slot + headroom ..]`; returns the segment lengths in `lens`.
pub fn segment(
    packet: &[u8],
    gso_size: usize,
    out: &mut [u8],
    slot: usize,
    headroom: usize,
    lens: &mut Vec<usize>,
) -> Result<(), Malformed> {
    lens.clear();
    let (ip_len, tcp_len, v4) = tcp_headers(packet)?;
    let hl = ip_len + tcp_len;
    let payload = packet.get(hl..).ok_or(Malformed)?;
    if gso_size == 0 || hl + gso_size + headroom > slot {
        return Err(Malformed);
    }
    let count = payload.len().div_ceil(gso_size);
    if count * slot > out.len() {
        return Err(Malformed);
    }
    let seq = be32(packet, ip_len + 4);
    let id = be16(packet, 4);
    let flags = packet.get(ip_len + 13).copied().unwrap_or(0);
    for (i, chunk) in payload.chunks(gso_size).enumerate() {
        let base = i * slot + headroom;
        let len = hl + chunk.len();
        let seg = out.get_mut(base..base + len).ok_or(Malformed)?;
        seg[..hl].copy_from_slice(&packet[..hl]);
        seg[hl..].copy_from_slice(chunk);
        if v4 {
            put16(seg, 2, len as u16);
            put16(seg, 4, id.wrapping_add(i as u16));
            let mut ip = ipv4::Packet::new_unchecked(&mut seg[..]);
            ip.fill_checksum();
        } else {
            put16(seg, 4, (len - 40) as u16);
        }
        let t = ip_len;
        put32(seg, t + 4, seq.wrapping_add((i * gso_size) as u32));
        let mut f = flags;
        if i + 1 < count {
            f &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            f &= !TCP_CWR;
        }
        seg[t + 13] = f;
        let (ip, tcp) = seg.split_at_mut(t);
        tcp_checksum(ip, v4, tcp);
        lens.push(len);
    }
    Ok(())
}

/// A TCP segment (IPv4 or IPv6) that can join a coalesced packet.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    v4: bool,
    ip_len: usize,
    tcp_len: usize,
    payload: usize,
    seq: u32,
    flags: u8,
}

/// The header fields that must match for two segments to be glued, as Linux's GRO checks them
/// (`inet_gro_receive`/`ipv6_gro_receive`, then `tcp_gro_receive`): IPv4 TOS, DF, TTL,
/// protocol and addresses, or IPv6 traffic class, flow label, next header, hop limit and
/// addresses; then ports, the ACK number, header length, window and TCP options (timestamps
/// included). Not the IPv4 ID, whose increments Linux also checks for packets without DF:
/// TCP does not look at it.
fn same_flow(a: &[u8], b: &[u8], c: &Candidate) -> bool {
    let ip_same = if c.v4 {
        a.get(1) == b.get(1) && a.get(6..10) == b.get(6..10) && a.get(12..20) == b.get(12..20)
    } else {
        a.get(..4) == b.get(..4) && a.get(6..40) == b.get(6..40)
    };
    let t = c.ip_len;
    // Ports, ack, data offset, window; then the options.
    ip_same
        && a.get(t..t + 4) == b.get(t..t + 4)
        && a.get(t + 8..t + 13) == b.get(t + 8..t + 13)
        && a.get(t + 14..t + 16) == b.get(t + 14..t + 16)
        && a.get(t + 20..t + c.tcp_len) == b.get(t + 20..t + c.tcp_len)
}

/// A TCP data segment with only ACK/PSH set and a valid checksum, in plain IPv4 (no options,
/// not fragmented) or IPv6 with TCP as the first next header: what GRO may merge. Anything
/// else passes through on its own.
fn candidate(p: &[u8]) -> Option<Candidate> {
    let (v4, total) = match p.first()? >> 4 {
        4 => {
            let ip = ipv4::Packet::new_checked(p).ok()?;
            // The merged packet gets a fresh IPv4 checksum: a damaged header must not be
            // laundered.
            if ip.header_len() != 20
                || ip.protocol() != ipv4::PROTO_TCP
                || ip.is_fragment()
                || !ip.verify_checksum()
            {
                return None;
            }
            (true, usize::from(ip.total_len()))
        }
        // No extension headers (a fragment header among them): next header TCP. IPv6 has no
        // header checksum; its payload length counts everything after the 40 bytes.
        6 if p.get(6) == Some(&ipv4::PROTO_TCP) => (false, 40 + usize::from(be16(p, 4))),
        _ => return None,
    };
    let (ip_len, tcp_len, _) = tcp_headers(p.get(..total)?).ok()?;
    let flags = *p.get(ip_len + 13)?;
    let payload = total - ip_len - tcp_len;
    let only_ack_psh = flags & (TCP_SYN | TCP_FIN | TCP_RST | TCP_URG | TCP_ECE | TCP_CWR) == 0;
    if payload == 0 || !only_ack_psh || flags & TCP_ACK == 0 {
        return None;
    }
    // Verify before merging: the merged packet goes up with a partial checksum the kernel
    // trusts, so a corrupted segment must not hide inside it.
    let pseudo = pseudo_sum(p, v4, total - ip_len);
    if finish(sum(p.get(ip_len..total)?, pseudo)) != 0 {
        return None;
    }
    Some(Candidate {
        v4,
        ip_len,
        tcp_len,
        payload,
        seq: be32(p, ip_len + 4),
        flags,
    })
}

/// Builds one coalesced packet in its own buffer, `VNET_HDR_LEN` bytes of header room first.
pub struct Coalescer {
    buf: Vec<u8>,
    /// Bytes used in `buf` after the virtio header.
    len: usize,
    first: Option<Candidate>,
    segments: usize,
    next_seq: u32,
    closed: bool,
}

/// Most bytes in one coalesced packet: the IPv4 total length field limits it (for IPv6 the
/// payload length field, 40 bytes later; one limit keeps both within the 64 KiB buffer).
const MAX_COALESCED: usize = 65_535;

impl Default for Coalescer {
    fn default() -> Self {
        Coalescer {
            buf: vec![0; VNET_HDR_LEN + MAX_COALESCED],
            len: 0,
            first: None,
            segments: 0,
            next_seq: 0,
            closed: false,
        }
    }
}

impl Coalescer {
    pub fn is_empty(&self) -> bool {
        self.segments == 0
    }

    /// Segments in the packet being built.
    pub fn segments(&self) -> usize {
        self.segments
    }

    /// Adds `p` when it continues the packet being built (or starts one); false when the
    /// caller must flush first or send `p` on its own.
    pub fn push(&mut self, p: &[u8]) -> bool {
        let Some(c) = candidate(p) else { return false };
        let Some(first) = self.first else {
            let total = c.ip_len + c.tcp_len + c.payload;
            let Some(dst) = self.buf.get_mut(VNET_HDR_LEN..VNET_HDR_LEN + total) else {
                return false;
            };
            dst.copy_from_slice(&p[..total]);
            self.len = total;
            self.first = Some(c);
            self.segments = 1;
            self.next_seq = c.seq.wrapping_add(c.payload as u32);
            self.closed = c.flags & TCP_PSH != 0;
            return true;
        };
        let head = &self.buf[VNET_HDR_LEN..VNET_HDR_LEN + first.ip_len + first.tcp_len];
        let fits = self.len + c.payload <= MAX_COALESCED;
        if self.closed
            || !fits
            || c.seq != self.next_seq
            || c.payload > first.payload
            || c.v4 != first.v4
            || c.tcp_len != first.tcp_len
            || !same_flow(head, p, &first)
        {
            return false;
        }
        let from = c.ip_len + c.tcp_len;
        let Some(src) = p.get(from..from + c.payload) else {
            return false;
        };
        let at = VNET_HDR_LEN + self.len;
        let Some(dst) = self.buf.get_mut(at..at + c.payload) else {
            return false;
        };
        dst.copy_from_slice(src);
        self.len += c.payload;
        self.segments += 1;
        self.next_seq = c.seq.wrapping_add(c.payload as u32);
        // A short segment or PSH ends the burst, as GRO does.
        if c.payload < first.payload || c.flags & TCP_PSH != 0 {
            self.closed = true;
            if let Some(f) = self.buf.get_mut(VNET_HDR_LEN + first.ip_len + 13) {
                *f |= c.flags & TCP_PSH;
            }
        }
        true
    }

    /// Finishes the packet: the bytes to write to the TUN device (virtio header included).
    pub fn finish(&mut self) -> Option<&[u8]> {
        let first = self.first.take()?;
        let segments = std::mem::take(&mut self.segments);
        let len = std::mem::take(&mut self.len);
        let pkt = self.buf.get_mut(VNET_HDR_LEN..VNET_HDR_LEN + len)?;
        let mut hdr = VnetHdr::default();
        if segments > 1 {
            if first.v4 {
                put16(pkt, 2, len as u16);
                ipv4::Packet::new_unchecked(&mut pkt[..]).fill_checksum();
            } else {
                put16(pkt, 4, (len - 40) as u16);
            }
            // Partial checksum: the pseudo-header sum, not complemented; the kernel finishes it.
            let partial = partial_checksum(pkt, first.v4, len - first.ip_len);
            put16(pkt, first.ip_len + 16, partial);
            hdr = VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: if first.v4 { GSO_TCPV4 } else { GSO_TCPV6 },
                hdr_len: (first.ip_len + first.tcp_len) as u16,
                gso_size: first.payload as u16,
                csum_start: first.ip_len as u16,
                csum_offset: 16,
            };
        }
        hdr.emit(&mut self.buf);
        self.buf.get(..VNET_HDR_LEN + len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::verify;

    /// A TCP/IPv4 segment 10.0.0.1:1000 → 10.0.0.2:2000 with a timestamp option.
    fn tcp(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let tcp_len = 32;
        let mut p = vec![0u8; 20 + tcp_len + payload.len()];
        ipv4::Repr {
            src: [10, 0, 0, 1].into(),
            dst: [10, 0, 0, 2].into(),
            protocol: ipv4::PROTO_TCP,
            ttl: 64,
            payload_len: tcp_len + payload.len(),
        }
        .emit(&mut p)
        .unwrap();
        put16(&mut p, 20, 1000);
        put16(&mut p, 22, 2000);
        put32(&mut p, 24, seq);
        put32(&mut p, 28, 77);
        p[32] = 8 << 4;
        p[33] = flags;
        put16(&mut p, 34, 500);
        p[40..52].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        p[52..].copy_from_slice(payload);
        let (ip, t) = p.split_at_mut(20);
        tcp_checksum(ip, true, t);
        p
    }

    /// The same segment over IPv6, 2001:db8::1 → 2001:db8::2, flow label 0x12345.
    fn tcp6(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let v4 = tcp(seq, flags, payload);
        let mut p = vec![0u8; 40];
        p[..4].copy_from_slice(&[0x60, 0x01, 0x23, 0x45]);
        put16(&mut p, 4, (v4.len() - 20) as u16);
        p[6] = ipv4::PROTO_TCP;
        p[7] = 64;
        p[8..24].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p[24..40].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        p.extend_from_slice(&v4[20..]);
        let (ip, t) = p.split_at_mut(40);
        tcp_checksum(ip, false, t);
        p
    }

    fn tcp6_valid(p: &[u8]) -> bool {
        let total = 40 + usize::from(be16(p, 4));
        finish(sum(&p[40..total], pseudo_sum(p, false, total - 40))) == 0
    }

    fn tcp_valid(p: &[u8]) -> bool {
        let total = usize::from(be16(p, 2));
        finish(sum(&p[20..total], pseudo_sum(p, true, total - 20))) == 0
    }

    #[test]
    fn vnet_header_round_trip() {
        let h = VnetHdr {
            flags: 1,
            gso_type: 1,
            hdr_len: 52,
            gso_size: 1400,
            csum_start: 20,
            csum_offset: 16,
        };
        let mut b = [0u8; 10];
        h.emit(&mut b);
        assert_eq!(b, [1, 1, 52, 0, 0x78, 0x05, 20, 0, 16, 0]);
        assert_eq!(VnetHdr::parse(&b), Some(h));
        assert_eq!(VnetHdr::parse(&b[..9]), None);
    }

    /// `big` cut by `segment` into segments of 1400 payload bytes, each copied out of its slot.
    fn segments_of(big: &[u8]) -> Vec<Vec<u8>> {
        let (slot, headroom) = (2048, 8);
        let mut out = vec![0u8; 16 * slot];
        let mut lens = Vec::new();
        segment(big, 1400, &mut out, slot, headroom, &mut lens).unwrap();
        lens.iter()
            .enumerate()
            .map(|(i, len)| out[i * slot + headroom..i * slot + headroom + len].to_vec())
            .collect()
    }

    #[test]
    fn segmentation_then_coalescing_restores_the_stream() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let big = tcp(1_000_000, TCP_ACK | TCP_PSH, &data);
        let segments = segments_of(&big);
        assert_eq!(segments.len(), 8);
        let mut c = Coalescer::default();
        for (i, s) in segments.iter().enumerate() {
            assert!(verify(&s[..20]), "IPv4 header checksum of segment {i}");
            assert!(tcp_valid(s), "TCP checksum of segment {i}");
            assert_eq!(be32(s, 24), 1_000_000 + 1400 * i as u32);
            assert_eq!(s[33] & TCP_PSH != 0, i == 7, "PSH only on the last segment");
            assert!(c.push(s), "segment {i} joins");
        }
        let merged = c.finish().unwrap().to_vec();
        let h = VnetHdr::parse(&merged).unwrap();
        assert_eq!(
            (
                h.gso_type,
                h.gso_size,
                h.hdr_len,
                h.csum_start,
                h.csum_offset
            ),
            (GSO_TCPV4, 1400, 52, 20, 16)
        );
        let p = &merged[VNET_HDR_LEN..];
        assert_eq!(&p[52..], &data[..]);
        assert_eq!(p[33] & TCP_PSH, TCP_PSH);
        assert!(verify(&p[..20]));
        // What the kernel does with the partial checksum: the sum over the segment completes it.
        let mut done = p.to_vec();
        complete_checksum(&mut done, &h).unwrap();
        assert!(tcp_valid(&done));
        assert!(c.is_empty());
    }

    /// IPv6 as for IPv4: the segments of a TSO packet glue back into one TCPv6 GSO packet
    /// (payload length set, checksum partial); a segment of another flow label or hop limit,
    /// an IPv4 one or a corrupted one does not join.
    #[test]
    fn ipv6_segments_coalesce_into_a_tcpv6_packet() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 13) as u8).collect();
        let big = tcp6(5_000, TCP_ACK | TCP_PSH, &data);
        let segments = segments_of(&big);
        assert_eq!(segments.len(), 8);
        let mut c = Coalescer::default();
        for (i, s) in segments.iter().enumerate() {
            assert!(tcp6_valid(s), "TCP checksum of segment {i}");
            assert!(c.push(s), "segment {i} joins");
        }
        let merged = c.finish().unwrap().to_vec();
        let h = VnetHdr::parse(&merged).unwrap();
        assert_eq!(
            (h.gso_type, h.gso_size, h.hdr_len, h.csum_start, h.flags),
            (GSO_TCPV6, 1400, 72, 40, F_NEEDS_CSUM)
        );
        let p = &merged[VNET_HDR_LEN..];
        assert_eq!(usize::from(be16(p, 4)), p.len() - 40, "payload length");
        assert_eq!(&p[..4], &big[..4], "traffic class and flow label kept");
        assert_eq!(&p[72..], &data[..]);
        let mut done = p.to_vec();
        complete_checksum(&mut done, &h).unwrap();
        assert!(tcp6_valid(&done));

        let a = tcp6(1, TCP_ACK, &[1; 100]);
        let next = |seq| tcp6(seq, TCP_ACK, &[2; 100]);
        let mut other_label = next(101);
        other_label[3] ^= 1;
        let mut other_hops = next(101);
        other_hops[7] = 63;
        let mut corrupt = next(101);
        corrupt[80] ^= 1;
        let as_v4 = tcp(101, TCP_ACK, &[2; 100]);
        for (what, p) in [
            ("flow label", other_label),
            ("hop limit", other_hops),
            ("checksum", corrupt),
            ("IPv4 after IPv6", as_v4),
        ] {
            let mut c = Coalescer::default();
            assert!(c.push(&a));
            assert!(!c.push(&p), "{what}");
            assert!(c.push(&next(101)), "{what}: the right segment still joins");
        }
        // An extension header (here: hop-by-hop) first: on its own.
        let mut hbh = next(1);
        hbh[6] = 0;
        assert!(!Coalescer::default().push(&hbh));
    }

    #[test]
    fn coalescing_refuses_what_gro_would() {
        let a = tcp(1, TCP_ACK, &[1; 100]);
        let mut c = Coalescer::default();
        assert!(c.push(&a));
        assert!(!c.push(&tcp(999, TCP_ACK, &[1; 100])), "gap in sequence");
        assert!(!c.push(&tcp(101, TCP_ACK | TCP_FIN, &[1; 100])), "FIN");
        assert!(
            !c.push(&tcp(101, TCP_ACK, &[1; 200])),
            "longer than the first"
        );
        let mut other_port = tcp(101, TCP_ACK, &[1; 100]);
        put16(&mut other_port, 22, 2001);
        let (ip, t) = other_port.split_at_mut(20);
        tcp_checksum(ip, true, t);
        assert!(!c.push(&other_port), "other flow");
        let mut corrupt = tcp(101, TCP_ACK, &[1; 100]);
        corrupt[60] ^= 1;
        assert!(!c.push(&corrupt), "bad checksum");
        let mut bad_ip = tcp(101, TCP_ACK, &[1; 100]);
        bad_ip[5] ^= 1; // IPv4 ID: outside the TCP checksum, inside the header checksum
        assert!(!c.push(&bad_ip), "bad IPv4 header checksum");
        assert!(
            c.push(&tcp(101, TCP_ACK, &[1; 50])),
            "short segment joins and closes"
        );
        assert!(!c.push(&tcp(151, TCP_ACK, &[1; 50])), "closed");
        // A single segment goes out unchanged with an empty virtio header.
        let mut single = Coalescer::default();
        assert!(single.push(&a));
        let out = single.finish().unwrap();
        assert_eq!(&out[..VNET_HDR_LEN], &[0; VNET_HDR_LEN]);
        assert_eq!(&out[VNET_HDR_LEN..], &a[..]);
    }

    #[test]
    fn partial_checksum_completion() {
        let mut p = tcp(5, TCP_ACK, &[9; 33]);
        let good = p.clone();
        // What the kernel hands over: the field holds the folded pseudo-header sum.
        let mut pseudo = pseudo_sum(&p, true, p.len() - 20);
        while pseudo > 0xffff {
            pseudo = (pseudo & 0xffff) + (pseudo >> 16);
        }
        put16(&mut p, 36, pseudo as u16);
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 20,
            csum_offset: 16,
            ..VnetHdr::default()
        };
        complete_checksum(&mut p, &h).unwrap();
        assert_eq!(p, good);
        let bad = VnetHdr {
            csum_start: 200,
            ..h
        };
        assert_eq!(complete_checksum(&mut p, &bad), Err(Malformed));
    }

    #[test]
    fn hostile_tso_packets_never_panic() {
        let base = tcp(1, TCP_ACK, &[3; 3000]);
        let mut out = vec![0u8; 8 * 2048];
        let mut lens = Vec::new();
        let mut state = 7u32;
        for _ in 0..20_000 {
            let mut p = base.clone();
            for _ in 0..3 {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let i = (state as usize >> 8) % 60;
                p[i] = (state >> 24) as u8;
            }
            let gso = (state >> 20) as usize % 2000;
            let _ = segment(&p, gso, &mut out, 2048, 8, &mut lens);
            let mut c = Coalescer::default();
            c.push(&p);
            c.push(&p);
            let _ = c.finish();
        }
    }

    /// What Linux's GRO leaves in a merged packet: IP lengths set, the TCP checksum partial.
    fn as_gro_output(p: &mut [u8], v4: bool) {
        let ip_len = if v4 { 20 } else { 40 };
        let partial = partial_checksum(p, v4, p.len() - ip_len);
        put16(p, ip_len + 16, partial);
    }

    #[test]
    fn a_kernel_coalesced_packet_goes_up_as_one_tso_packet() {
        let data: Vec<u8> = (0..20_000u32).map(|i| (i * 13) as u8).collect();
        let mut big = tcp(5, TCP_ACK | TCP_PSH, &data);
        assert_eq!(
            kernel_coalesced(&big, 1476, None),
            None,
            "a full checksum: not coalesced"
        );
        as_gro_output(&mut big, true);
        let h = kernel_coalesced(&big, 1476, None).expect("coalesced");
        assert_eq!(
            h,
            VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: GSO_TCPV4,
                hdr_len: 52,
                gso_size: 1476 - 52,
                csum_start: 20,
                csum_offset: 16,
            }
        );
        // What the kernel does with it: complete the checksum, which then verifies.
        complete_checksum(&mut big, &h).unwrap();
        assert!(tcp_valid(&big));
        // The kernel cuts it as it would our own TSO packets.
        let (mut out, mut lens) = (vec![0u8; 20 * 2048], Vec::new());
        segment(&big, usize::from(h.gso_size), &mut out, 2048, 0, &mut lens).unwrap();
        assert_eq!(lens.len(), 20_000usize.div_ceil(1476 - 52));
        assert!(lens.iter().all(|&l| l <= 1476));
    }

    #[test]
    fn a_small_coalesced_packet_needs_its_checksum_but_no_segmentation() {
        let mut p = tcp(5, TCP_ACK, &[7u8; 300]);
        as_gro_output(&mut p, true);
        let h = kernel_coalesced(&p, 1476, None).unwrap();
        assert_eq!(
            (h.flags, h.gso_type, h.gso_size),
            (F_NEEDS_CSUM, GSO_NONE, 0)
        );
    }

    #[test]
    fn a_coalesced_ipv6_packet_is_tcpv6() {
        let payload = 9000;
        let mut p = vec![0u8; 40 + 20 + payload];
        p[0] = 0x60;
        put16(&mut p, 4, (20 + payload) as u16);
        p[6] = ipv4::PROTO_TCP;
        p[7] = 64;
        p[8..24].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p[24..40].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        p[52] = 5 << 4;
        p[53] = TCP_ACK;
        as_gro_output(&mut p, false);
        let h = kernel_coalesced(&p, 1400, None).unwrap();
        assert_eq!(
            (h.gso_type, h.gso_size, h.csum_start),
            (GSO_TCPV6, 1400 - 60, 40)
        );
        // Any other checksum: a packet of its own.
        p[57] ^= 1;
        assert_eq!(kernel_coalesced(&p, 1400, None), None);
    }

    #[test]
    fn fragments_and_other_protocols_are_never_taken_for_coalesced() {
        let mut p = tcp(5, TCP_ACK, &[1u8; 3000]);
        as_gro_output(&mut p, true);
        let mut frag = p.clone();
        frag[6] |= 0x20; // MF
        assert_eq!(kernel_coalesced(&frag, 1476, None), None);
        let mut udp = p.clone();
        udp[9] = 17;
        assert_eq!(kernel_coalesced(&udp, 1476, None), None);
        assert_eq!(kernel_coalesced(&p[..30], 1476, None), None, "truncated");
        assert_eq!(
            kernel_coalesced(&p, 40, None),
            None,
            "no room for a segment"
        );
    }

    #[test]
    fn a_fixed_mss_clamp_and_cwr_shape_the_segments() {
        let mut p = tcp(5, TCP_ACK | TCP_CWR, &[3u8; 8000]);
        as_gro_output(&mut p, true);
        // A clamp of 1200 (12 bytes of timestamps taken out) beats the MTU's 1476 - 52.
        let h = kernel_coalesced(&p, 1476, Some(1200)).unwrap();
        assert_eq!(h.gso_size, 1200 - 12);
        assert_eq!(
            h.gso_type,
            GSO_TCPV4 | GSO_ECN,
            "CWR on the first segment only"
        );
        // Auto (MTU - 40) is the MTU's own limit.
        let h = kernel_coalesced(&p, 1476, Some(1436)).unwrap();
        assert_eq!(h.gso_size, 1476 - 52);
    }
}
