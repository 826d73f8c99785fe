//! ESP in UDP with UDP GSO on send and UDP GRO on receive, between tunnel-pods with static SAs
//! in network namespaces: TCP with offload on both sides and on one side only (interop both
//! ways), and coalesced bursts the test sends itself: MSS clamping inside them, anti-replay
//! across them. The test seals its ESP datagrams with the crate's own `esp::sa` (the receive
//! side is what is under test; `netns_esp` checks the sealing against scapy).
//! Root only: `cargo test -p magictunnel-tunnel-pod --test netns_esp_gso -- --ignored --test-threads=1`.

mod common;

use std::time::Duration;

use common::esp::{SEED_A_TO_B, SUITES, ipsec_block, key_bytes};
use common::{Lab, LabOptions, Metrics, PYTHON, Side, iperf_received, tshark_fields};
use tunnel_pod::config::{EspEncryption, Secret};
use tunnel_pod::esp::sa::{NEXT_IPV4, Outbound, SaLifetime, SaParams};
use tunnel_pod::wire::checksum::{finish, sum};

const NO_UDP_OFFLOAD: &str = "--no-udp-offload";
/// AES-GCM-16-256: the suite of the benchmark.
const SUITE: (&str, Option<&str>, usize, usize) = SUITES[1];

fn counter(m: &Metrics, name: &str) -> f64 {
    m.get(&format!("magictunnel_{name}_total"), &[])
}

fn offload_gauge(m: &Metrics, direction: &str) -> f64 {
    m.get("magictunnel_udp_offload", &[("direction", direction)])
}

/// iperf3 A → B with UDP offload on both sides, then off on B (A's GSO bursts reach a socket
/// without GRO: the kernel segments them), then off on A (B's GRO socket gets plain datagrams).
#[test]
#[ignore = "needs root and network namespaces; run by make netns-test"]
fn tcp_with_udp_offload_on_either_or_both_sides() {
    for (a_on, b_on) in [(true, true), (true, false), (false, true)] {
        let label = format!("A offload {a_on}, B offload {b_on}");
        let mut lab = Lab::new(LabOptions::default());
        for (side, on) in [(Side::A, a_on), (Side::B, b_on)] {
            let mut c = lab.config(side);
            c.ipsec = Some(ipsec_block(side, SUITE, true));
            lab.start(side, &c, if on { &[] } else { &[NO_UDP_OFFLOAD] });
        }
        lab.wait_ready(&Side::BOTH);
        let report = lab.iperf(Side::B, 3, 1);
        let (bytes, bps) = iperf_received(&report);
        let (a, b) = (lab.metrics(Side::A), lab.metrics(Side::B));
        let (gso_segments, gso_sends) = (
            counter(&a, "udp_gso_segments"),
            counter(&a, "udp_gso_sends"),
        );
        let (gro_segments, gro_datagrams) = (
            counter(&b, "udp_gro_segments"),
            counter(&b, "udp_gro_datagrams"),
        );
        eprintln!(
            "{label}: {:.2} Gbit/s; A: {gso_segments} datagrams in {gso_sends} GSO sends; \
             B: {gro_segments} datagrams in {gro_datagrams} GRO receives",
            bps / 1e9
        );
        assert!(bytes > 10e6, "{label}: iperf3 moved only {bytes} bytes");
        assert_eq!(
            offload_gauge(&a, "send"),
            f64::from(u8::from(a_on)),
            "{label}"
        );
        assert_eq!(
            offload_gauge(&b, "receive"),
            f64::from(u8::from(b_on)),
            "{label}"
        );
        if a_on {
            assert!(
                gso_segments > 0.0 && gso_segments / gso_sends > 1.5,
                "{label}: A's GSO sends carry several datagrams each"
            );
        } else {
            assert_eq!(gso_segments, 0.0, "{label}");
        }
        if a_on && b_on {
            assert!(
                gro_segments > 0.0 && gro_segments / gro_datagrams > 1.5,
                "{label}: B receives coalesced datagrams"
            );
        }
        if !b_on {
            assert_eq!(gro_segments, 0.0, "{label}");
        }
        for reason in [
            "bad_icv",
            "replayed",
            "bad_padding",
            "truncated",
            "oversized",
        ] {
            assert_eq!(b.drops(reason), 0.0, "{label}: B dropped as {reason}");
        }
    }
}

/// Inner TCP packets of one burst, all 44 bytes long (so that their ESP datagrams are equal
/// and one GSO send carries them): ACKs with 4 NOP option bytes, and at `SYN_AT` a SYN with MSS
/// 1460. From A's tunnel address to B's, source ports 40000 + i.
const BURST: usize = 8;
const SYN_AT: usize = 3;
const DPORT: u16 = 5555;

fn inner_packet(i: usize) -> Vec<u8> {
    let mut p = vec![0u8; 44];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&44u16.to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&[10, 99, 0, 0]);
    p[16..20].copy_from_slice(&[10, 99, 0, 1]);
    let ip_sum = finish(sum(&p[..20], 0));
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    let tcp = &mut p[20..];
    tcp[0..2].copy_from_slice(&(40_000 + i as u16).to_be_bytes());
    tcp[2..4].copy_from_slice(&DPORT.to_be_bytes());
    tcp[4..8].copy_from_slice(&1000u32.to_be_bytes());
    tcp[12] = 6 << 4;
    tcp[14..16].copy_from_slice(&64_000u16.to_be_bytes());
    if i == SYN_AT {
        tcp[13] = 0x02;
        tcp[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]);
    } else {
        tcp[13] = 0x10;
        tcp[8..12].copy_from_slice(&1u32.to_be_bytes());
        tcp[20..24].copy_from_slice(&[1, 1, 1, 1]);
    }
    // Pseudo-header: addresses, protocol, TCP length.
    let mut pseudo = [0u8; 12];
    pseudo[..8].copy_from_slice(&[10, 99, 0, 0, 10, 99, 0, 1]);
    pseudo[9] = 6;
    pseudo[10..12].copy_from_slice(&24u16.to_be_bytes());
    let tcp_sum = finish(sum(&p[20..], sum(&pseudo, 0)));
    p[36..38].copy_from_slice(&tcp_sum.to_be_bytes());
    p
}

/// The burst sealed with A's outbound SA (B's inbound one), as one buffer of equal datagrams.
fn sealed_burst() -> (Vec<u8>, usize) {
    let sa = Outbound::new(SaParams {
        spi: 0x1001,
        encryption: EspEncryption::AesGcm16_256,
        integrity: None,
        encryption_key: Secret::new(key_bytes(SUITE.2, SEED_A_TO_B)),
        integrity_key: None,
        lifetime: SaLifetime::default(),
        traffic_selectors: Default::default(),
    })
    .expect("SA");
    let mut out = Vec::new();
    let mut size = 0;
    for i in 0..BURST {
        let inner = inner_packet(i);
        let mut buf = vec![0u8; 64 + inner.len() + 64];
        buf[64..64 + inner.len()].copy_from_slice(&inner);
        let range = sa
            .seal(&mut buf, 64..64 + inner.len(), NEXT_IPV4)
            .expect("seal");
        size = range.len();
        out.extend_from_slice(&buf[range]);
    }
    assert_eq!(out.len(), size * BURST, "equal datagrams");
    (out, size)
}

/// Sends `file` (equal datagrams of `size` bytes) from A's 4500 to B's 4500 in one `sendmsg`
/// with `UDP_SEGMENT`: the kernel keeps them one GSO packet up to B's socket, which (with GRO)
/// receives them coalesced.
fn send_burst(lab: &Lab, file: &std::path::Path, size: usize) {
    let (a, b) = (lab.node(Side::A).outer, lab.node(Side::B).outer);
    let script = format!(
        "import socket, struct\n\
         data = open({file:?}, 'rb').read()\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('{a}', 4500))\n\
         n = s.sendmsg([data], [(socket.SOL_UDP, 103, struct.pack('H', {size}))], 0, ('{b}', 4500))\n\
         assert n == len(data), n",
        file = file.to_string_lossy()
    );
    lab.exec_ok(Side::A, PYTHON, &["-c", &script]);
}

/// A coalesced burst with a SYN in its middle leaves B's TUN with the SYN's MSS clamped; the
/// same burst again is all replays: every datagram dropped as `replayed`, none on the TUN.
#[test]
#[ignore = "needs root and network namespaces; run by make netns-test"]
fn coalesced_burst_is_clamped_and_its_replay_dropped() {
    let mut lab = Lab::new(LabOptions::default());
    // No IPv6 on B's TUN: the kernel's router solicitations would make the counts inexact.
    for conf in ["all", "default"] {
        let key = format!("net.ipv6.conf.{conf}.disable_ipv6=1");
        lab.exec_ok(Side::B, "sysctl", &["-qw", &key]);
    }
    let mut config = lab.config(Side::B);
    config.ipsec = Some(ipsec_block(Side::B, SUITE, true));
    config.health_rate = None;
    lab.start(Side::B, &config, &[]);
    lab.wait_ready(&[Side::B]);
    let (burst, size) = sealed_burst();
    let file = lab.dir.join("burst.bin");
    std::fs::write(&file, &burst).expect("write the burst");
    let tun_b = lab.node(Side::B).tun.clone();
    let mtu: u16 = lab
        .exec_ok(Side::B, "cat", &[&format!("/sys/class/net/{tun_b}/mtu")])
        .trim()
        .parse()
        .expect("TUN MTU");
    let filter = format!("tcp dst port {DPORT}");

    let before = lab.metrics(Side::B);
    let capture = lab.capture(Side::B, &tun_b, BURST as u32, &filter);
    send_burst(&lab, &file, size);
    let pcap = lab.finish_capture(capture, Duration::from_secs(5));
    let after = lab.metrics(Side::B);
    let rows = tshark_fields(
        &pcap,
        "tcp",
        &["tcp.srcport", "tcp.flags.syn", "tcp.options.mss_val"],
    );
    let delta = |name: &str| counter(&after, name) - counter(&before, name);
    assert!(
        delta("udp_gro_segments") >= BURST as f64,
        "the burst reached B coalesced: {} GRO segments{}",
        delta("udp_gro_segments"),
        lab.logs()
    );
    let mut ports: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    ports.sort();
    let want: Vec<String> = (0..BURST).map(|i| (40_000 + i).to_string()).collect();
    assert_eq!(
        ports, want,
        "every packet of the burst on B's TUN: {rows:?}"
    );
    let syn: Vec<_> = rows
        .iter()
        .filter(|r| r[1] == "1" || r[1] == "True")
        .collect();
    assert_eq!(syn.len(), 1, "{rows:?}");
    let clamped = (mtu - 40).to_string();
    assert_eq!(
        syn[0][2], clamped,
        "the SYN's MSS clamped to the TUN MTU {mtu} − 40"
    );
    assert_eq!(
        after.packets("ingress") - before.packets("ingress"),
        BURST as f64
    );

    // The same datagrams again: replays.
    let capture = lab.capture(Side::B, &tun_b, 1, &filter);
    send_burst(&lab, &file, size);
    std::thread::sleep(Duration::from_millis(500));
    let pcap = lab.finish_capture(capture, Duration::from_secs(1));
    let again = lab.metrics(Side::B);
    let replays = tshark_fields(&pcap, "tcp", &["tcp.srcport"]);
    assert_eq!(
        again.drops("replayed") - after.drops("replayed"),
        BURST as f64,
        "every datagram of the repeated burst dropped as a replay"
    );
    assert!(replays.is_empty(), "replays reached B's TUN: {replays:?}");
    assert_eq!(again.packets("ingress"), after.packets("ingress"));
    assert!(
        counter(&again, "udp_gro_segments") - counter(&after, "udp_gro_segments") >= BURST as f64
    );
}
