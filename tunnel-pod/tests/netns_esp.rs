//! The ESP-in-UDP dataplane between two tunnel-pods with static SAs, in network namespaces the
//! tests create: every Child SA suite carries ping and TCP; tshark dissects what is on the wire.
//! Root only: `cargo test -p magictunnel-tunnel-pod --test netns_esp -- --ignored --test-threads=1`.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use std::time::Duration;

use common::{Lab, LabOptions, Side, tshark_fields};

/// (encryption, integrity, encryption key bytes, integrity key bytes)
const SUITES: [(&str, Option<&str>, usize, usize); 8] = [
    ("AES-GCM-16-128", None, 20, 0),
    ("AES-GCM-16-256", None, 36, 0),
    ("AES-CBC-128", Some("HMAC-SHA2-256-128"), 16, 32),
    ("AES-CBC-256", Some("HMAC-SHA2-256-128"), 32, 32),
    ("AES-CBC-128", Some("HMAC-SHA1-96"), 16, 20),
    ("AES-CBC-256", Some("HMAC-SHA1-96"), 32, 20),
    ("NULL", Some("HMAC-SHA2-256-128"), 0, 32),
    ("NULL", Some("HMAC-SHA1-96"), 0, 20),
];

fn sa(spi: u32, enc: &str, integ: Option<&str>, ek: usize, ik: usize, seed: u8) -> String {
    let key = |n: usize, s: u8| {
        BASE64.encode(
            (0..n)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(s))
                .collect::<Vec<_>>(),
        )
    };
    let mut y = format!(
        "{{spi: {spi}, encryption: {enc}, encryptionKey: \"{}\"",
        key(ek, seed)
    );
    if let Some(i) = integ {
        y.push_str(&format!(
            ", integrity: {i}, integrityKey: \"{}\"",
            key(ik, seed.wrapping_add(100))
        ));
    }
    y.push('}');
    y
}

/// The `ipsec:` block for one side: A sends with SPI 0x1001, B with 0x2002.
fn ipsec_block(side: Side, suite: (&str, Option<&str>, usize, usize), replay: bool) -> String {
    let (enc, integ, ek, ik) = suite;
    let a_to_b = sa(0x1001, enc, integ, ek, ik, 1);
    let b_to_a = sa(0x2002, enc, integ, ek, ik, 2);
    let (out, inb) = if side == Side::A {
        (a_to_b, b_to_a)
    } else {
        (b_to_a, a_to_b)
    };
    format!(
        "  allowNullCipher: true\n  replayProtection: {replay}\n  staticSa:\n    outbound: {out}\n    inbound: {inb}"
    )
}

#[test]
#[ignore = "needs root and network namespaces; run by make netns-test"]
fn every_suite_carries_ping_and_tcp() {
    for (i, suite) in SUITES.iter().enumerate() {
        let label = format!("{} {}", suite.0, suite.1.unwrap_or(""));
        let mut lab = Lab::new(LabOptions::default());
        lab.start_both(
            |side, c| c.ipsec = Some(ipsec_block(side, *suite, i % 2 == 0)),
            &[],
        );
        lab.wait_ready(&Side::BOTH);
        let ping = lab.ping_through(Side::A, 3);
        assert!(
            ping.status.success(),
            "{label}: ping failed:\n{}",
            lab.logs()
        );
        let report = lab.iperf(Side::B, 1, 1);
        let received = report["end"]["sum_received"]["bytes"]
            .as_f64()
            .unwrap_or(0.0);
        let bps = report["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0);
        eprintln!("{label}: iperf3 {:.2} Gbit/s", bps / 1e9);
        assert!(
            received > 1e6,
            "{label}: iperf3 moved only {received} bytes"
        );
        let b = lab.metrics(Side::B);
        // RFC 3948 §4: A's first NAT keepalive (1 s after start, then every 20 s) reached B.
        assert!(
            lab.metrics(Side::A)
                .get("magictunnel_nat_keepalives_sent_total", &[])
                >= 1.0,
            "{label}: A sent no NAT keepalive"
        );
        assert!(
            b.get(
                "magictunnel_tunnel_drops_total",
                &[("reason", "nat_keepalive")]
            ) >= 1.0,
            "{label}: no NAT keepalive seen"
        );
        for reason in [
            "bad_icv",
            "replayed",
            "too_old",
            "bad_padding",
            "unknown_spi",
            "truncated",
        ] {
            assert_eq!(
                b.get("magictunnel_tunnel_drops_total", &[("reason", reason)]),
                0.0,
                "{label}: {reason}"
            );
        }
    }
}

#[test]
#[ignore = "needs root and network namespaces; run by make netns-test"]
fn wire_is_esp_in_udp_4500_and_mismatched_keys_are_refused() {
    let suite = SUITES[1];
    let mut lab = Lab::new(LabOptions::default());
    // B's inbound key for A's SPI differs from A's outbound key: every packet from A fails its ICV.
    lab.start_both(
        |side, c| {
            let mut block = ipsec_block(side, suite, true);
            if side == Side::B {
                let wrong = sa(0x1001, suite.0, suite.1, suite.2, suite.3, 99);
                let inbound_at = block.find("    inbound:").expect("inbound line");
                block.truncate(inbound_at);
                block.push_str(&format!("    inbound: {wrong}"));
            }
            c.ipsec = Some(block);
        },
        &[],
    );
    let veth = lab.node(Side::A).veth.clone();
    let capture = lab.capture(Side::A, &veth, 10, "udp port 4500");
    let _ = lab.ping_through(Side::A, 5);
    let pcap = lab.finish_capture(capture, Duration::from_secs(10));
    let fields = tshark_fields(
        &pcap,
        "udp.port == 4500",
        &[
            "ip.src",
            "udp.srcport",
            "udp.dstport",
            "esp.spi",
            "esp.sequence",
        ],
    );
    assert!(!fields.is_empty(), "nothing captured");
    for row in &fields {
        assert_eq!(
            (row[1].as_str(), row[2].as_str()),
            ("4500", "4500"),
            "{row:?}"
        );
        assert!(row[3] == "0x00001001" || row[3] == "0x00002002", "{row:?}");
        assert!(
            row[4].parse::<u32>().unwrap_or(0) >= 1,
            "sequence from 1: {row:?}"
        );
    }
    let b = lab.metrics(Side::B);
    assert!(
        b.get("magictunnel_tunnel_drops_total", &[("reason", "bad_icv")]) >= 3.0,
        "B must refuse A's packets"
    );
    assert_eq!(b.packets("ingress"), 0.0, "nothing forged reaches B's TUN");
}

/// Real replays: ESP packets from A captured on B's link and sent again from A's namespace with
/// scapy. With anti-replay on every one is dropped as `replayed`; with it off they are accepted.
#[test]
#[ignore = "needs root and network namespaces; run by make netns-test"]
fn captured_packets_replayed_on_the_wire() {
    for replay in [true, false] {
        let suite = SUITES[1];
        let mut lab = Lab::new(LabOptions::default());
        lab.start_both(
            |side, c| {
                c.ipsec = Some(ipsec_block(side, suite, replay));
                // No probes: only the pings below travel, so the counts are exact.
                c.health_rate = None;
            },
            &[],
        );
        lab.wait_ready(&Side::BOTH);
        let veth_b = lab.node(Side::B).veth.clone();
        let a_outer = lab.node(Side::A).outer.to_string();
        // ESP only: `greater 64` leaves out A's one-byte NAT keepalive, sent 1 s after start.
        let filter = format!("udp port 4500 and src host {a_outer} and greater 64");
        let capture = lab.capture(Side::B, &veth_b, 5, &filter);
        let ping = lab.ping_through(Side::A, 5);
        assert!(
            ping.status.success(),
            "ping through the tunnel failed:\n{}",
            lab.logs()
        );
        let pcap = lab.finish_capture(capture, Duration::from_secs(10));
        let before = lab.metrics(Side::B);
        let veth_a = lab.node(Side::A).veth.clone();
        // The capture holds the UDP checksum veth left to offload (partial): recompute it, or
        // B's kernel drops the copies before the tunnel-pod sees them.
        let script = format!(
            "from scapy.all import rdpcap, sendp, UDP, Ether\n\
             pkts = rdpcap({:?})\n\
             for p in pkts:\n    p[UDP].chksum = None\n\
             sendp([Ether(bytes(p)) for p in pkts], iface={veth_a:?}, verbose=False)",
            pcap.to_string_lossy()
        );
        lab.exec_ok(Side::A, common::PYTHON, &["-c", &script]);
        std::thread::sleep(Duration::from_millis(500));
        let after = lab.metrics(Side::B);
        let delta = |reason: &str| {
            after.get("magictunnel_tunnel_drops_total", &[("reason", reason)])
                - before.get("magictunnel_tunnel_drops_total", &[("reason", reason)])
        };
        let accepted = after.packets("ingress") - before.packets("ingress");
        if replay {
            assert_eq!(delta("replayed"), 5.0, "all 5 replays dropped");
            assert_eq!(accepted, 0.0);
        } else {
            assert_eq!(delta("replayed"), 0.0);
            assert_eq!(accepted, 5.0, "all 5 replays accepted with protection off");
        }
        assert_eq!(delta("bad_icv"), 0.0);
    }
}
