//! GRE egress through the AF_PACKET TX ring (`--gre-tx packet`) against the raw socket
//! (`--gre-tx raw`, the default): the same frames on the wire, and the fallback to the raw socket
//! while the next hop's MAC is unknown. Needs root, `ip`, `tcpdump`, `iperf3`; run with
//!
//! ```text
//! cargo test -p magictunnel-tunnel-pod --test netns_gre_tx -- --ignored --test-threads=1
//! ```

mod common;

use std::collections::BTreeSet;
use std::thread::sleep;
use std::time::Duration;

use common::{Lab, LabOptions, Side, pcap_packets, wait_for};

const KEY: u32 = 4242;
const GAUGE: &str = "magictunnel_gre_tx_packet";

fn started_pair(extra_args: &[&str], probes: bool) -> Lab {
    let mut lab = Lab::new(LabOptions::default());
    lab.start_both(
        |side, c| {
            c.key = Some(KEY);
            if !probes {
                c.health_rate = None;
            }
            if side == Side::A {
                c.ttl = 77;
            }
        },
        extra_args,
    );
    lab.wait_ready(&Side::BOTH);
    lab
}

fn on_ring(lab: &Lab, side: Side) -> bool {
    lab.metrics(side).get(GAUGE, &[]) == 1.0
}

/// The outer IPv4 header of every captured GRE frame from A, as the kernel wrote it for the raw
/// socket: valid checksum, DF clear, TTL 77, protocol 47, and IDs that do not repeat.
fn check_outer_headers(frames: &[Vec<u8>], mode: &str) -> usize {
    let mut ids = BTreeSet::new();
    let mut from_a = 0;
    for f in frames {
        let Some(ip) = f.get(14..34) else { continue };
        if f[12..14] != [0x08, 0x00] || ip[9] != 47 || ip[12..16] != [203, 0, 113, 1] {
            continue;
        }
        from_a += 1;
        let sum = ip
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum::<u32>();
        let folded = (sum & 0xffff) + (sum >> 16);
        assert_eq!(
            folded & 0xffff,
            0xffff,
            "{mode}: bad IPv4 checksum {ip:02x?}"
        );
        assert_eq!(ip[0], 0x45, "{mode}: version/IHL");
        assert_eq!(ip[6] & 0x40, 0, "{mode}: DF set");
        assert_eq!(ip[8], 77, "{mode}: TTL");
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        assert_eq!(total + 14, f.len(), "{mode}: total length");
        // GRE with key, protocol IPv4 (or IPv6: the TUN's own link-local chatter).
        assert_eq!(&f[34..36], &[0x20, 0x00], "{mode}: GRE flags");
        assert!(
            matches!(f[36..38], [0x08, 0x00] | [0x86, 0xdd]),
            "{mode}: GRE protocol {:02x?}",
            &f[36..38]
        );
        assert_eq!(&f[38..42], &KEY.to_be_bytes(), "{mode}: GRE key");
        ids.insert(u16::from_be_bytes([ip[4], ip[5]]));
    }
    assert!(from_a >= 1000, "{mode}: only {from_a} GRE frames from A");
    assert!(
        ids.len() * 10 >= from_a * 9,
        "{mode}: {} distinct IDs in {from_a} frames",
        ids.len()
    );
    from_a
}

/// Bulk TCP (TSO bursts: the ring's traffic) on both egress paths: the frames on the wire are
/// the same in every header field the raw socket's kernel path writes.
#[test]
#[ignore = "needs root and network namespaces"]
fn ring_and_raw_socket_put_the_same_frames_on_the_wire() {
    for mode in ["packet", "raw"] {
        let mut lab = started_pair(&["--gre-tx", mode], true);
        if mode == "packet" {
            assert!(
                wait_for(Duration::from_secs(10), Duration::ZERO, || {
                    // Until the next hop is in the neighbour table the raw socket carries
                    // everything; its sends get it resolved.
                    let _ = lab.ping_through(Side::A, 1);
                    on_ring(&lab, Side::A).then_some(())
                })
                .is_some(),
                "A never moved to the AF_PACKET ring:\n{}",
                lab.logs()
            );
        }
        // On B's end: frames sent with PACKET_QDISC_BYPASS skip the sender's packet taps,
        // so tcpdump on A's end would see only the raw socket's.
        let veth = lab.node(Side::B).veth.clone();
        let capture = lab.capture(Side::B, &veth, 3000, "ip proto 47 and src 203.0.113.1");
        let report = lab.iperf(Side::B, 2, 1);
        let received = report["end"]["sum_received"]["bytes"]
            .as_f64()
            .unwrap_or(0.0);
        assert!(received > 1e6, "{mode}: iperf3 moved only {received} bytes");
        let pcap = lab.finish_capture(capture, Duration::from_secs(10));
        let frames = check_outer_headers(&pcap_packets(&pcap), mode);
        let m = lab.metrics(Side::A);
        let expected = if mode == "packet" { 1.0 } else { 0.0 };
        assert_eq!(m.get(GAUGE, &[]), expected, "{mode}: {GAUGE}");
        assert_eq!(m.drops("send_error"), 0.0, "{mode}: send errors");
        eprintln!(
            "{mode}: {frames} frames checked, {:.2} Gbit/s, tx_ring_full {}",
            report["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .unwrap_or(0.0)
                / 1e9,
            m.drops("tx_ring_full")
        );
    }
}

/// Without a neighbour entry for the next hop the ring cannot address its frames: the raw
/// socket carries the traffic (gauge 0, one log line), its sends get the entry back, and the
/// ring takes over again.
#[test]
#[ignore = "needs root and network namespaces"]
fn falls_back_to_the_raw_socket_while_the_next_hop_is_unresolved() {
    // No probes: their sends through the raw socket would resolve the next hop again at once.
    let mut lab = started_pair(&["--gre-tx", "packet"], false);
    assert!(
        wait_for(Duration::from_secs(10), Duration::ZERO, || {
            let _ = lab.ping_through(Side::A, 1);
            on_ring(&lab, Side::A).then_some(())
        })
        .is_some(),
        "A never moved to the AF_PACKET ring:\n{}",
        lab.logs()
    );
    let veth = lab.node(Side::A).veth.clone();
    lab.exec_ok(Side::A, "ip", &["neigh", "flush", "dev", &veth]);
    // The link is resolved again every second.
    sleep(Duration::from_millis(2500));
    assert!(
        !on_ring(&lab, Side::A),
        "A stayed on the ring without a neighbour entry"
    );
    assert!(
        lab.log(Side::A).contains("link not resolved; raw socket"),
        "no fallback log line:\n{}",
        lab.log(Side::A)
    );
    let ping = lab.ping_through(Side::A, 5);
    assert!(
        ping.status.success(),
        "ping through the raw socket failed:\n{}",
        lab.logs()
    );
    assert!(
        wait_for(Duration::from_secs(10), Duration::from_millis(200), || {
            on_ring(&lab, Side::A).then_some(())
        })
        .is_some(),
        "A did not return to the ring once the neighbour was known again:\n{}",
        lab.logs()
    );
    let report = lab.iperf(Side::B, 1, 1);
    let received = report["end"]["sum_received"]["bytes"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(received > 1e6, "iperf3 moved only {received} bytes");
}
