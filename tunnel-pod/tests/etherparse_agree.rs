//! etherparse as an independent parser: every packet our `wire/` views build or mutate (GRE
//! encapsulation, TSO segmentation, the receive coalescer, MSS clamping, health probes) is parsed
//! by etherparse too, and both must agree on lengths, checksums, sequence numbers, flags and
//! options. Inputs are built with etherparse's `PacketBuilder` where they can be, so that neither
//! side of a comparison comes only from our own code. etherparse has no GRE parser: the GRE
//! header is checked field by field against RFC 2784/2890 and etherparse parses the IPv4 outer
//! header and the inner packet after it.

// Tests may unwrap: a panic there is a failed test, which is the point (as in the lib's tests).
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;

use etherparse::checksum::Sum16BitWords;
use etherparse::{
    Icmpv4Slice, Icmpv4Type, IpNumber, Ipv4HeaderSlice, Ipv6HeaderSlice, PacketBuilder,
    SlicedPacket, TcpOptionElement, TcpSlice,
};
use tunnel_pod::config::HealthCheckType;
use tunnel_pod::gre::{Gre, HEADROOM, after_headroom};
use tunnel_pod::health::ProbeSpec;
use tunnel_pod::mss::{self, Outcome};
use tunnel_pod::offload::{self, Coalescer, GSO_TCPV4, VNET_HDR_LEN, VnetHdr};
use tunnel_pod::wire::gre::{self as wgre, ETHERTYPE_IPV4, ETHERTYPE_IPV6};

const SRC4: [u8; 4] = [10, 0, 0, 1];
const DST4: [u8; 4] = [10, 0, 0, 2];
const SRC6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const DST6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// Deterministic, non-repeating payload bytes.
fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn timestamps() -> [TcpOptionElement; 3] {
    [
        TcpOptionElement::Noop,
        TcpOptionElement::Noop,
        TcpOptionElement::Timestamp(0x0102_0304, 0x0506_0708),
    ]
}

/// An IPv4 TCP data segment built by etherparse (valid checksums), ACK set.
fn tcp4(seq: u32, psh: bool, data: &[u8]) -> Vec<u8> {
    tcp_segment(false, seq, psh, data)
}

/// `tcp4`, or the same over IPv6 (fd00::1 → fd00::2, hop limit 64).
fn tcp_segment(v6: bool, seq: u32, psh: bool, data: &[u8]) -> Vec<u8> {
    let ip = if v6 {
        PacketBuilder::ipv6(SRC6, DST6, 64)
    } else {
        PacketBuilder::ipv4(SRC4, DST4, 64)
    };
    let b = ip
        .tcp(40000, 5201, seq, 502)
        .ack(77)
        .options(&timestamps())
        .unwrap();
    let b = if psh { b.psh() } else { b };
    let mut v = Vec::new();
    b.write(&mut v, data).unwrap();
    v
}

/// The inner packet after our `GRE` header, as etherparse sees the IPv4 + GRE datagram.
fn check_gre_datagram(dgram: &[u8], g: &Gre, inner: &[u8]) {
    let outer = Ipv4HeaderSlice::from_slice(dgram).expect("etherparse: outer IPv4");
    assert_eq!(outer.version(), 4);
    assert_eq!(outer.ihl(), 5);
    assert_eq!(
        usize::from(outer.total_len()),
        dgram.len(),
        "outer total length"
    );
    assert_eq!(outer.ttl(), g.ttl);
    assert!(!outer.dont_fragment(), "DF is clear (wire/ipv4 Repr::emit)");
    assert!(!outer.more_fragments());
    assert_eq!(outer.protocol(), IpNumber::GRE);
    assert_eq!(outer.source_addr(), g.local);
    assert_eq!(outer.destination_addr(), g.customer);
    assert_eq!(
        outer.header_checksum(),
        outer.to_header().calc_header_checksum(),
        "outer IPv4 header checksum"
    );
    // GRE (RFC 2784 / 2890): C=0, K as configured, S=0, version 0, reserved 0.
    let gre = &dgram[20..];
    let flags = u16::from_be_bytes([gre[0], gre[1]]);
    assert_eq!(flags & 0x8000, 0, "no GRE checksum");
    assert_eq!(flags & 0x2000 != 0, g.key.is_some(), "K bit");
    assert_eq!(flags & 0x1000, 0, "no GRE sequence number");
    assert_eq!(flags & 0x4fff, 0, "reserved bits and version are 0");
    let ethertype = u16::from_be_bytes([gre[2], gre[3]]);
    let expected = if inner[0] >> 4 == 4 {
        ETHERTYPE_IPV4
    } else {
        ETHERTYPE_IPV6
    };
    assert_eq!(ethertype, expected);
    let mut at = 4;
    if let Some(k) = g.key {
        assert_eq!(u32::from_be_bytes(gre[4..8].try_into().unwrap()), k, "key");
        at += 4;
    }
    let carried = &gre[at..];
    assert_eq!(carried, inner, "the inner packet follows the GRE header");
    let parsed = SlicedPacket::from_ip(carried).expect("etherparse: inner packet");
    assert!(parsed.net.is_some());
}

#[test]
fn gre_encapsulation_agrees() {
    let inner_v4 = tcp4(1000, true, &payload(600));
    let mut inner_v6 = Vec::new();
    PacketBuilder::ipv6(SRC6, DST6, 33)
        .tcp(1, 2, 3, 4)
        .write(&mut inner_v6, &payload(300))
        .unwrap();
    for key in [None, Some(0xdead_beef)] {
        for ttl in [1, 64, 255] {
            let g = Gre {
                local: Ipv4Addr::new(203, 0, 113, 1),
                customer: Ipv4Addr::new(203, 0, 113, 2),
                ttl,
                key,
                mtu: 1476,
                mss: Some(1436),
                idents: tunnel_pod::gre::Idents::random(),
            };
            for inner in [&inner_v4, &inner_v6] {
                let mut buf = vec![0u8; HEADROOM + inner.len()];
                let range = after_headroom(inner.len()).unwrap();
                buf[range.clone()].copy_from_slice(inner);
                let out = g.encap_at(&mut buf, range).unwrap();
                check_gre_datagram(&buf[out.clone()], &g, inner);
                // And the peer's decap finds the same inner packet.
                let peer = Gre {
                    local: g.customer,
                    customer: g.local,
                    ..g.clone()
                };
                let mut dgram = buf[out].to_vec();
                let got = peer.decap(&mut dgram).unwrap();
                assert_eq!(&dgram[got.range], &inner[..]);
            }
        }
    }
}

/// wire::gre::Repr with every optional field: key, sequence number and checksum.
#[test]
fn gre_header_with_key_sequence_and_checksum_agrees() {
    let inner = tcp4(5, false, &payload(100));
    for (key, sequence, checksum) in [
        (Some(7), Some(9), true),
        (None, Some(0xffff_ffff), false),
        (Some(1), None, true),
    ] {
        let repr = wgre::Repr {
            protocol: ETHERTYPE_IPV4,
            key,
            sequence,
            checksum,
        };
        let hl = repr.header_len();
        let mut buf = vec![0u8; hl + inner.len()];
        buf[hl..].copy_from_slice(&inner);
        repr.emit(&mut buf).unwrap();
        let flags = u16::from_be_bytes([buf[0], buf[1]]);
        assert_eq!(flags & 0x8000 != 0, checksum);
        assert_eq!(flags & 0x2000 != 0, key.is_some());
        assert_eq!(flags & 0x1000 != 0, sequence.is_some());
        let mut at = 4;
        if checksum {
            // RFC 2784: the checksum covers the GRE header and the payload.
            assert_eq!(
                Sum16BitWords::new().add_slice(&buf).ones_complement(),
                0,
                "GRE checksum verifies"
            );
            at += 4;
        }
        if let Some(k) = key {
            assert_eq!(u32::from_be_bytes(buf[at..at + 4].try_into().unwrap()), k);
            at += 4;
        }
        if let Some(s) = sequence {
            assert_eq!(u32::from_be_bytes(buf[at..at + 4].try_into().unwrap()), s);
            at += 4;
        }
        assert_eq!(at, hl);
        SlicedPacket::from_ip(&buf[hl..]).expect("etherparse: inner packet");
        // Our parser reads back what we wrote.
        let p = wgre::Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(wgre::Repr::parse(&p).unwrap(), repr);
    }
}

/// Segments `packet` (a TSO packet of `gso` bytes per segment) and returns the segments.
fn segments(packet: &[u8], gso: usize) -> Vec<Vec<u8>> {
    let slot = 2048;
    let headroom = 28;
    let mut out = vec![0u8; slot * 64];
    let mut lens = Vec::new();
    offload::segment(packet, gso, &mut out, slot, headroom, &mut lens).unwrap();
    lens.iter()
        .enumerate()
        .map(|(i, &len)| out[i * slot + headroom..i * slot + headroom + len].to_vec())
        .collect()
}

/// The TCP flags (FIN, PSH, CWR) segment i of n must carry when the TSO packet had all three:
/// FIN and PSH only on the last, CWR only on the first (as the kernel's tcp_gso_segment does).
fn check_flags(tcp: &TcpSlice<'_>, i: usize, n: usize) {
    assert!(tcp.ack());
    assert_eq!(tcp.fin(), i + 1 == n, "FIN on the last segment only");
    assert_eq!(tcp.psh(), i + 1 == n, "PSH on the last segment only");
    assert_eq!(tcp.cwr(), i == 0, "CWR on the first segment only");
    assert!(!tcp.syn() && !tcp.rst());
}

#[test]
fn tso_segments_ipv4_agree() {
    let data = payload(5000);
    let gso = 1400;
    let mut tso = Vec::new();
    PacketBuilder::ipv4(SRC4, DST4, 64)
        .tcp(40000, 5201, 0xffff_f000, 502)
        .ack(77)
        .psh()
        .fin()
        .cwr()
        .options(&timestamps())
        .unwrap()
        .write(&mut tso, &data)
        .unwrap();
    let first_id = u16::from_be_bytes([tso[4], tso[5]]);
    let segs = segments(&tso, gso);
    assert_eq!(segs.len(), data.len().div_ceil(gso));
    let mut carried = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        let ip = Ipv4HeaderSlice::from_slice(s).expect("etherparse: IPv4");
        assert_eq!(usize::from(ip.total_len()), s.len(), "IPv4 total length");
        assert_eq!(
            ip.header_checksum(),
            ip.to_header().calc_header_checksum(),
            "IPv4 header checksum of segment {i}"
        );
        assert_eq!(ip.identification(), first_id.wrapping_add(i as u16));
        assert_eq!(ip.protocol(), IpNumber::TCP);
        let tcp = TcpSlice::from_slice(&s[20..]).expect("etherparse: TCP");
        assert_eq!(
            tcp.checksum(),
            tcp.calc_checksum_ipv4(SRC4, DST4).unwrap(),
            "TCP checksum of segment {i}"
        );
        assert_eq!(
            tcp.sequence_number(),
            0xffff_f000u32.wrapping_add((i * gso) as u32),
            "sequence number (wrapping)"
        );
        assert_eq!(tcp.acknowledgment_number(), 77);
        assert_eq!(tcp.options(), &[1, 1, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8][..]);
        check_flags(&tcp, i, segs.len());
        assert!(tcp.payload().len() <= gso);
        carried.extend_from_slice(tcp.payload());
    }
    assert_eq!(carried, data, "the segments carry the payload in order");
}

#[test]
fn tso_segments_ipv6_agree() {
    let data = payload(4200);
    let gso = 1380;
    let mut tso = Vec::new();
    PacketBuilder::ipv6(SRC6, DST6, 60)
        .tcp(40000, 5201, 12345, 502)
        .ack(1)
        .psh()
        .fin()
        .cwr()
        .options(&timestamps())
        .unwrap()
        .write(&mut tso, &data)
        .unwrap();
    let segs = segments(&tso, gso);
    assert_eq!(segs.len(), 4);
    let mut carried = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        let ip = Ipv6HeaderSlice::from_slice(s).expect("etherparse: IPv6");
        assert_eq!(
            usize::from(ip.payload_length()) + 40,
            s.len(),
            "IPv6 payload length"
        );
        assert_eq!(ip.next_header(), IpNumber::TCP);
        assert_eq!(ip.hop_limit(), 60);
        let tcp = TcpSlice::from_slice(&s[40..]).expect("etherparse: TCP");
        assert_eq!(
            tcp.checksum(),
            tcp.calc_checksum_ipv6(SRC6, DST6).unwrap(),
            "TCP checksum of segment {i}"
        );
        assert_eq!(tcp.sequence_number(), 12345 + (i * gso) as u32);
        check_flags(&tcp, i, segs.len());
        carried.extend_from_slice(tcp.payload());
    }
    assert_eq!(carried, data);
}

/// What the kernel does with a virtio partial checksum: fold the sum from csum_start to the end
/// into the field (which holds the pseudo-header sum) and write its complement there.
fn complete_partial(packet: &mut [u8], h: &VnetHdr) {
    let start = usize::from(h.csum_start);
    let field = start + usize::from(h.csum_offset);
    // etherparse sums native-endian words: `.to_be()` turns the result into the field's value.
    let c = Sum16BitWords::new()
        .add_slice(&packet[start..])
        .ones_complement()
        .to_be();
    packet[field..field + 2].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn coalescer_output_agrees() {
    let mss = 1348;
    let data = payload(mss * 5 + 100);
    let mut c = Coalescer::default();
    for v6 in [false, true] {
        let family = if v6 { "IPv6" } else { "IPv4" };
        let ip_len = if v6 { 40 } else { 20 };
        let chunks: Vec<&[u8]> = data.chunks(mss).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            let seg = tcp_segment(v6, 1_000_000 + (i * mss) as u32, last, chunk);
            assert!(c.push(&seg), "{family}: segment {i} joins");
        }
        let out = c.finish().unwrap().to_vec();
        let h = VnetHdr::parse(&out).unwrap();
        let mut pkt = out[VNET_HDR_LEN..].to_vec();
        let gso = if v6 { offload::GSO_TCPV6 } else { GSO_TCPV4 };
        assert_eq!(h.gso_type, gso, "{family}");
        assert_eq!(usize::from(h.gso_size), mss);
        assert_eq!(usize::from(h.hdr_len), ip_len + 32);
        assert_eq!((usize::from(h.csum_start), h.csum_offset), (ip_len, 16));
        assert_eq!(pkt.len(), ip_len + 32 + data.len());
        complete_partial(&mut pkt, &h);
        let tcp = TcpSlice::from_slice(&pkt[ip_len..]).expect("etherparse: TCP");
        let expected = if v6 {
            let ip = Ipv6HeaderSlice::from_slice(&pkt).expect("etherparse: IPv6");
            assert_eq!(usize::from(ip.payload_length()), pkt.len() - 40);
            assert_eq!(ip.next_header(), IpNumber::TCP);
            tcp.calc_checksum_ipv6(SRC6, DST6).unwrap()
        } else {
            let ip = Ipv4HeaderSlice::from_slice(&pkt).expect("etherparse: IPv4");
            assert_eq!(usize::from(ip.total_len()), pkt.len());
            assert_eq!(ip.header_checksum(), ip.to_header().calc_header_checksum());
            tcp.calc_checksum_ipv4(SRC4, DST4).unwrap()
        };
        assert_eq!(
            tcp.checksum(),
            expected,
            "{family}: the partial checksum completes to the right one"
        );
        assert_eq!(tcp.sequence_number(), 1_000_000);
        assert!(tcp.ack() && tcp.psh(), "the last segment's PSH is kept");
        assert_eq!(tcp.options(), &[1, 1, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8][..]);
        assert_eq!(tcp.payload(), &data[..]);
    }

    // One segment alone goes up unchanged, with no GSO.
    let single = tcp4(9, true, &payload(200));
    assert!(c.push(&single));
    let out = c.finish().unwrap().to_vec();
    assert_eq!(VnetHdr::parse(&out).unwrap().gso_type, offload::GSO_NONE);
    assert_eq!(&out[VNET_HDR_LEN..], &single[..]);
}

fn syn(v6: bool, options: &[TcpOptionElement]) -> Vec<u8> {
    let mut v = Vec::new();
    if v6 {
        PacketBuilder::ipv6(SRC6, DST6, 64)
            .tcp(40000, 443, 1, 64240)
            .syn()
            .options(options)
            .unwrap()
            .write(&mut v, &[])
            .unwrap();
    } else {
        PacketBuilder::ipv4(SRC4, DST4, 64)
            .tcp(40000, 443, 1, 64240)
            .syn()
            .options(options)
            .unwrap()
            .write(&mut v, &[])
            .unwrap();
    }
    v
}

fn mss_option(tcp: &TcpSlice<'_>) -> Option<u16> {
    tcp.options_iterator().find_map(|o| match o {
        Ok(TcpOptionElement::MaximumSegmentSize(m)) => Some(m),
        _ => None,
    })
}

#[test]
fn mss_clamp_agrees() {
    use TcpOptionElement::*;
    let layouts: [&[TcpOptionElement]; 3] = [
        // Linux's SYN: MSS first (word aligned).
        &[
            MaximumSegmentSize(1460),
            SelectiveAcknowledgementPermitted,
            Timestamp(1, 0),
            Noop,
            WindowScale(7),
        ],
        // One NOP first: the MSS value straddles two 16-bit words.
        &[Noop, MaximumSegmentSize(1460), Noop, WindowScale(7)],
        &[Noop, Noop, Timestamp(5, 6), MaximumSegmentSize(9000)],
    ];
    for v6 in [false, true] {
        for options in layouts {
            let mut p = syn(v6, options);
            let before = mss_option(&TcpSlice::from_slice(&p[if v6 { 40 } else { 20 }..]).unwrap());
            let outcome = mss::clamp(&mut p, 1360);
            let expected = if v6 { 1340 } else { 1360 };
            assert_eq!(
                outcome,
                Outcome::Clamped {
                    from: before.unwrap()
                }
            );
            let tcp = TcpSlice::from_slice(&p[if v6 { 40 } else { 20 }..]).unwrap();
            assert_eq!(mss_option(&tcp), Some(expected), "clamped MSS (v6 {v6})");
            let want = if v6 {
                tcp.calc_checksum_ipv6(SRC6, DST6).unwrap()
            } else {
                tcp.calc_checksum_ipv4(SRC4, DST4).unwrap()
            };
            assert_eq!(
                tcp.checksum(),
                want,
                "TCP checksum after clamping ({options:?})"
            );
            // The other options are untouched.
            let others = |t: &TcpSlice<'_>| {
                t.options_iterator()
                    .filter(|o| !matches!(o, Ok(MaximumSegmentSize(_))))
                    .map(|o| format!("{o:?}"))
                    .collect::<Vec<_>>()
            };
            assert_eq!(others(&tcp).len(), options.len() - 1);
        }
    }
    // A SYN already below the limit and a non-SYN segment stay byte for byte the same.
    let small = syn(false, &[MaximumSegmentSize(1200)]);
    let mut p = small.clone();
    assert_eq!(mss::clamp(&mut p, 1360), Outcome::Unchanged);
    assert_eq!(p, small);
    let data = tcp4(1, false, &payload(10));
    let mut p = data.clone();
    assert_eq!(mss::clamp(&mut p, 1360), Outcome::Unchanged);
    assert_eq!(p, data);
}

fn spec(style: HealthCheckType) -> ProbeSpec {
    ProbeSpec {
        style,
        local: Ipv4Addr::new(10, 99, 0, 0),
        target: Ipv4Addr::new(10, 99, 0, 1),
        identifier: 0xbeef,
        nonce: *b"12345678",
        ttl: 64,
    }
}

#[test]
fn health_probes_agree() {
    for style in [HealthCheckType::Reply, HealthCheckType::Request] {
        let s = spec(style);
        for seq in [0u16, 1, 0x8000, u16::MAX] {
            let mut buf = [0u8; 64];
            let n = s.emit(seq, &mut buf).unwrap();
            let p = &buf[..n];
            let ip = Ipv4HeaderSlice::from_slice(p).expect("etherparse: IPv4");
            assert_eq!(usize::from(ip.total_len()), n);
            assert_eq!(ip.header_checksum(), ip.to_header().calc_header_checksum());
            assert_eq!(ip.protocol(), IpNumber::ICMP);
            assert_eq!(ip.ttl(), 64);
            let (src, dst) = match style {
                HealthCheckType::Reply => (s.target, s.local),
                HealthCheckType::Request => (s.local, s.target),
            };
            assert_eq!((ip.source_addr(), ip.destination_addr()), (src, dst));
            let icmp = Icmpv4Slice::from_slice(&p[20..]).expect("etherparse: ICMP");
            let echo = match (style, icmp.icmp_type()) {
                (HealthCheckType::Reply, Icmpv4Type::EchoReply(e)) => e,
                (HealthCheckType::Request, Icmpv4Type::EchoRequest(e)) => e,
                (_, t) => panic!("unexpected ICMP type {t:?}"),
            };
            assert_eq!((echo.id, echo.seq), (0xbeef, seq));
            assert_eq!(
                icmp.checksum(),
                icmp.icmp_type().calc_checksum(icmp.payload()),
                "ICMP checksum"
            );
            assert_eq!(&icmp.payload()[..4], b"MTHC");
            assert_eq!(&icmp.payload()[4..], b"12345678");
        }
    }
}

/// The other direction: echo packets built by etherparse are recognised (or not) by the
/// probe matchers.
#[test]
fn probe_matchers_agree_with_etherparse_built_echoes() {
    let s = spec(HealthCheckType::Request);
    let echo = |reply: bool, id: u16, seq: u16, data: &[u8], dst: [u8; 4]| {
        let b = PacketBuilder::ipv4([10, 99, 0, 1], dst, 64);
        let b = if reply {
            b.icmpv4_echo_reply(id, seq)
        } else {
            b.icmpv4_echo_request(id, seq)
        };
        let mut v = Vec::new();
        b.write(&mut v, data).unwrap();
        v
    };
    let ours = [&b"MTHC"[..], b"12345678"].concat();
    let local = s.local.octets();
    assert_eq!(
        s.match_return(&echo(true, 0xbeef, 42, &ours, local)),
        Some(42)
    );
    assert_eq!(s.match_return(&echo(false, 0xbeef, 42, &ours, local)), None);
    assert_eq!(s.match_return(&echo(true, 0xbeee, 42, &ours, local)), None);
    assert_eq!(
        s.match_return(&echo(true, 0xbeef, 42, b"MTHC87654321", local)),
        None
    );
    assert_eq!(
        s.match_return(&echo(true, 0xbeef, 42, &ours, [10, 99, 0, 7])),
        None
    );
    let mut bad = echo(true, 0xbeef, 42, &ours, local);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(s.match_return(&bad), None, "a bad ICMP checksum is refused");

    let peer = Ipv4Addr::new(10, 99, 0, 5);
    assert!(tunnel_pod::health::is_peer_probe(
        &echo(true, 1, 2, b"x", peer.octets()),
        peer
    ));
    assert!(tunnel_pod::health::is_peer_probe(
        &echo(false, 1, 2, b"", peer.octets()),
        peer
    ));
    assert!(!tunnel_pod::health::is_peer_probe(
        &echo(true, 1, 2, b"x", local),
        peer
    ));
    let mut udp = Vec::new();
    PacketBuilder::ipv4([10, 99, 0, 1], peer.octets(), 64)
        .udp(1, 2)
        .write(&mut udp, b"abcdefgh")
        .unwrap();
    assert!(!tunnel_pod::health::is_peer_probe(&udp, peer));
}
