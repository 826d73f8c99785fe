//! The kernel's own IPv6 link-scope chatter, recognised so the tunnel never carries it.
//!
//! A Linux interface with IPv6 enabled talks on its link without being asked: router
//! solicitations (RFC 4861 §6.3.7), Multicast Listener reports and dones for the groups it joins
//! (RFC 2710, RFC 3810 §6), and Duplicate Address Detection probes (RFC 4862 §5.4.2). On the
//! TUN of a point-to-point L3 tunnel none of that has a use: there is no router to solicit (we
//! route; we do not autoconfigure), no switch to snoop MLD, and the device is `NOARP`, so the
//! kernel resolves no neighbour on it and needs no address uniqueness check. An independent GRE
//! peer saw two such frames per start. The source of them is switched off where the interface
//! is configured (`netlink::Netlink::configure_interface` sets `IFLA_INET6_ADDR_GEN_MODE` to
//! none: no link-local address, hence no RS, no DAD, no MLD from it); this module is the second
//! line, in the dataplane, for what still gets out: an operator or a CNI adding an IPv6 address
//! by hand makes the kernel join the address's solicited-node group and report it with MLD from
//! `::`, and a kernel that ignores the netlink attribute would still solicit routers.
//!
//! What is recognised, and only that (every field below is what the kernel sends; a packet that
//! differs in any of them is not the kernel's own and passes):
//! - ICMPv6 router solicitation (133), hop limit 255;
//! - MLDv1 report (131) and done (132), MLDv2 report (143), hop limit 1, the ICMPv6 header
//!   directly after the IPv6 header or after one Hop-by-Hop options header (the Router Alert
//!   that MLD carries, RFC 2711);
//! - neighbour solicitation (135) from the unspecified address `::`, hop limit 255 — a DAD probe
//!   (RFC 4862 §5.4.2); address resolution and unreachability detection use a real source;
//!
//! each sent to a link-scope multicast group (`ffX2::/16`: scope 2, whatever the flags; the
//! kernel uses `ff02::2`, `ff02::16`, the group itself for MLDv1, `ff02::1:ffXX:XXXX`).
//!
//! What passes on purpose:
//! - everything global: a routed IPv6 tunnel needs no link-local address and no link-scope
//!   protocol, only routes, so unicast neighbour discovery between global addresses and any
//!   packet to a global or site-scope destination go through untouched;
//! - neighbour solicitations with a source address and neighbour advertisements, to any group:
//!   a peer router doing neighbour unreachability detection over the tunnel gets its answers;
//! - ICMPv6 echo to `ff02::1` (or any link-scope group): the kernel never sends it on its own,
//!   only a user does (`ping ff02::1%tun0`); on a point-to-point link it reaches exactly the
//!   peer, which is a useful check and no chatter. This filter is not a firewall;
//! - router advertisements and MLD queries: the kernel sends neither unless something runs a
//!   router daemon or a querier, which is then configuration, not chatter;
//! - IPv4: the kernel reports no IGMP for 224.0.0.1 and joins nothing else by itself.

/// Which of the kernel's messages a packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chatter {
    /// ICMPv6 router solicitation (type 133).
    RouterSolicitation,
    /// MLDv1 report or done, MLDv2 report (types 131, 132, 143).
    ListenerReport,
    /// Neighbour solicitation from `::` (type 135): Duplicate Address Detection.
    DadProbe,
}

const IPV6_HEADER_LEN: usize = 40;
const NEXT_HOP_BY_HOP: u8 = 0;
const NEXT_ICMPV6: u8 = 58;
const ROUTER_SOLICITATION: u8 = 133;
const NEIGHBOUR_SOLICITATION: u8 = 135;
const MLD_REPORT: u8 = 131;
const MLD_DONE: u8 = 132;
const MLD2_REPORT: u8 = 143;

/// The kernel's own link-scope chatter, or `None` for everything else (every IPv4 packet after
/// one look at the first byte). Never panics, whatever the bytes.
pub fn link_chatter(packet: &[u8]) -> Option<Chatter> {
    if packet.first().map(|b| b >> 4) != Some(6) {
        return None;
    }
    let header = packet.get(..IPV6_HEADER_LEN)?;
    let (mut next, hop_limit) = (header[6], header[7]);
    let (source, destination) = (&header[8..24], &header[24..40]);
    // Multicast (ff) of link-local scope (low nibble 2), with any flags.
    if destination[0] != 0xff || destination[1] & 0x0f != 0x02 {
        return None;
    }
    let mut at = IPV6_HEADER_LEN;
    if next == NEXT_HOP_BY_HOP {
        let options = packet.get(at..at + 2)?;
        next = options[0];
        at += (usize::from(options[1]) + 1) * 8;
    }
    if next != NEXT_ICMPV6 {
        return None;
    }
    match (*packet.get(at)?, hop_limit) {
        (ROUTER_SOLICITATION, 255) => Some(Chatter::RouterSolicitation),
        (MLD_REPORT | MLD_DONE | MLD2_REPORT, 1) => Some(Chatter::ListenerReport),
        (NEIGHBOUR_SOLICITATION, 255) if source.iter().all(|&b| b == 0) => Some(Chatter::DadProbe),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    const UNSPECIFIED: &str = "::";
    const LINK_LOCAL: &str = "fe80::1";
    const GLOBAL_A: &str = "2001:db8:99::";
    const GLOBAL_B: &str = "2001:db8:99::1";

    /// An IPv6 packet: header, then `ext` (extension headers, already encoded), then `payload`,
    /// whose first byte (for ICMPv6, the type) follows them. `next` is the first next header.
    fn v6(src: &str, dst: &str, hop_limit: u8, next: u8, ext: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&((ext.len() + payload.len()) as u16).to_be_bytes());
        p.push(next);
        p.push(hop_limit);
        p.extend_from_slice(&src.parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&dst.parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(ext);
        p.extend_from_slice(payload);
        p
    }

    /// ICMPv6 message bytes (checksum left 0: the classifier does not read it).
    fn icmp(kind: u8, body_len: usize) -> Vec<u8> {
        let mut m = vec![kind, 0, 0, 0];
        m.resize(4 + body_len, 0);
        m
    }

    /// A Hop-by-Hop header with the Router Alert option (MLD), 8 bytes, next header ICMPv6.
    fn router_alert() -> Vec<u8> {
        vec![NEXT_ICMPV6, 0, 0x05, 0x02, 0x00, 0x00, 0x01, 0x00]
    }

    /// An MLD packet as Linux sends it: Hop-by-Hop with Router Alert, hop limit 1.
    fn mld(kind: u8, src: &str, dst: &str) -> Vec<u8> {
        v6(
            src,
            dst,
            1,
            NEXT_HOP_BY_HOP,
            &router_alert(),
            &icmp(kind, 24),
        )
    }

    #[test]
    fn the_kernels_own_messages_are_chatter() {
        let cases = [
            (
                "RS from a link-local address",
                v6(LINK_LOCAL, "ff02::2", 255, NEXT_ICMPV6, &[], &icmp(133, 4)),
                Chatter::RouterSolicitation,
            ),
            (
                "RS from ::",
                v6(UNSPECIFIED, "ff02::2", 255, NEXT_ICMPV6, &[], &icmp(133, 4)),
                Chatter::RouterSolicitation,
            ),
            (
                "MLDv2 report from ::",
                mld(143, UNSPECIFIED, "ff02::16"),
                Chatter::ListenerReport,
            ),
            (
                "MLDv2 report from a link-local address",
                mld(143, LINK_LOCAL, "ff02::16"),
                Chatter::ListenerReport,
            ),
            (
                "MLDv1 report to the solicited-node group",
                mld(131, LINK_LOCAL, "ff02::1:ff00:1"),
                Chatter::ListenerReport,
            ),
            (
                "MLDv1 done",
                mld(132, LINK_LOCAL, "ff02::2"),
                Chatter::ListenerReport,
            ),
            (
                "MLDv1 report for a transient link-scope group (ff12::)",
                mld(131, LINK_LOCAL, "ff12::1234"),
                Chatter::ListenerReport,
            ),
            (
                "MLD without the Hop-by-Hop header",
                v6(UNSPECIFIED, "ff02::16", 1, NEXT_ICMPV6, &[], &icmp(143, 24)),
                Chatter::ListenerReport,
            ),
            (
                "DAD probe for a global address",
                v6(
                    UNSPECIFIED,
                    "ff02::1:ff00:1",
                    255,
                    NEXT_ICMPV6,
                    &[],
                    &icmp(135, 20),
                ),
                Chatter::DadProbe,
            ),
        ];
        for (what, packet, expected) in cases {
            assert_eq!(link_chatter(&packet), Some(expected), "{what}");
        }
    }

    #[test]
    fn a_longer_hop_by_hop_header_is_skipped() {
        // Hdr Ext Len 1: 16 bytes (Router Alert, then PadN over the rest).
        let mut ext = router_alert();
        ext[1] = 1;
        ext.extend_from_slice(&[0x01, 0x06, 0, 0, 0, 0, 0, 0]);
        let p = v6(
            UNSPECIFIED,
            "ff02::16",
            1,
            NEXT_HOP_BY_HOP,
            &ext,
            &icmp(143, 24),
        );
        assert_eq!(link_chatter(&p), Some(Chatter::ListenerReport));
    }

    #[test]
    fn look_alikes_pass() {
        let cases = [
            (
                "echo request to ff02::1 (a user's ping, answered by the peer)",
                v6(GLOBAL_A, "ff02::1", 1, NEXT_ICMPV6, &[], &icmp(128, 8)),
            ),
            (
                "echo request to ff02::1, hop limit 64",
                v6(LINK_LOCAL, "ff02::1", 64, NEXT_ICMPV6, &[], &icmp(128, 8)),
            ),
            (
                "address resolution: NS from a global address to the solicited-node group",
                v6(
                    GLOBAL_A,
                    "ff02::1:ff00:1",
                    255,
                    NEXT_ICMPV6,
                    &[],
                    &icmp(135, 20),
                ),
            ),
            (
                "unreachability detection: unicast NS between global addresses",
                v6(GLOBAL_A, GLOBAL_B, 255, NEXT_ICMPV6, &[], &icmp(135, 20)),
            ),
            (
                "NA to all nodes",
                v6(GLOBAL_A, "ff02::1", 255, NEXT_ICMPV6, &[], &icmp(136, 20)),
            ),
            (
                "NA unicast",
                v6(GLOBAL_B, GLOBAL_A, 255, NEXT_ICMPV6, &[], &icmp(136, 20)),
            ),
            (
                "RS with a hop limit that is not 255 (not the kernel's; RFC 4861 receivers drop it)",
                v6(LINK_LOCAL, "ff02::2", 64, NEXT_ICMPV6, &[], &icmp(133, 4)),
            ),
            (
                "RS to a unicast address",
                v6(GLOBAL_A, GLOBAL_B, 255, NEXT_ICMPV6, &[], &icmp(133, 4)),
            ),
            (
                "RA",
                v6(LINK_LOCAL, "ff02::1", 255, NEXT_ICMPV6, &[], &icmp(134, 12)),
            ),
            ("MLD query", mld(130, LINK_LOCAL, "ff02::1")),
            (
                "MLD report with hop limit 64",
                v6(
                    UNSPECIFIED,
                    "ff02::16",
                    64,
                    NEXT_HOP_BY_HOP,
                    &router_alert(),
                    &icmp(143, 24),
                ),
            ),
            (
                "MLDv1 report for a site-scope group (to the group, ff05::)",
                mld(131, LINK_LOCAL, "ff05::1:3"),
            ),
            (
                "MLDv2 report to a global destination",
                mld(143, LINK_LOCAL, GLOBAL_B),
            ),
            (
                "UDP to ff02::fb (mDNS: an application's, not the kernel's)",
                v6(
                    LINK_LOCAL,
                    "ff02::fb",
                    255,
                    17,
                    &[],
                    &[0x14, 0xe9, 0x14, 0xe9],
                ),
            ),
            (
                "ICMPv6 type 133 behind a fragment header",
                v6(
                    LINK_LOCAL,
                    "ff02::2",
                    255,
                    44,
                    &[NEXT_ICMPV6, 0, 0, 0, 0, 0, 0, 1],
                    &icmp(133, 4),
                ),
            ),
            ("global TCP", v6(GLOBAL_A, GLOBAL_B, 64, 6, &[], &[0; 20])),
        ];
        for (what, packet) in cases {
            assert_eq!(link_chatter(&packet), None, "{what}");
        }
    }

    #[test]
    fn ipv4_passes() {
        // IGMPv2 report to 224.0.0.22 with TTL 1: the IPv4 analogue, out of scope.
        let mut p = vec![
            0x46, 0, 0, 32, 0, 0, 0, 0, 1, 2, 0, 0, 10, 99, 0, 0, 224, 0, 0, 22,
        ];
        p.extend_from_slice(&[0x94, 0x04, 0, 0, 0x22, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(link_chatter(&p), None);
        assert_eq!(link_chatter(&[]), None);
        assert_eq!(link_chatter(&[0x45]), None);
    }

    #[test]
    fn every_truncation_of_chatter_passes_without_panicking() {
        let full = mld(143, UNSPECIFIED, "ff02::16");
        // The type byte is at 48: any shorter prefix cannot be classified and must pass.
        for n in 0..=48 {
            assert_eq!(link_chatter(&full[..n]), None, "first {n} bytes");
        }
        assert_eq!(
            link_chatter(&full[..49]),
            Some(Chatter::ListenerReport),
            "up to the type byte"
        );
        // A Hop-by-Hop header claiming more than the packet holds.
        let mut p = full.clone();
        p[41] = 200;
        assert_eq!(link_chatter(&p), None);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: xorshift bytes, IPv6 version nibble forced, dst forced
        // link-scope multicast half of the time so the deeper branches run.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let len = (next() % 96) as usize;
            let mut p: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if let Some(b) = p.first_mut() {
                *b = 0x60 | (*b & 0x0f);
            }
            if len >= 40 && next() % 2 == 0 {
                p[24] = 0xff;
                p[25] = 0x02;
                p[6] = if next() % 2 == 0 { 0 } else { 58 };
            }
            let _ = link_chatter(&p);
        }
    }
}
