//! The ESP-in-UDP dataplane between two tunnel-pods with static SAs, in network namespaces the
//! tests create: every Child SA suite carries ping and TCP; tshark dissects what is on the wire.
//! Root only: `cargo test -p magictunnel-tunnel-pod --test netns_esp -- --ignored --test-threads=1`.

mod common;

use std::time::Duration;

use common::esp::{SEED_A_TO_B, SEED_B_TO_A, SUITES, hex, ipsec_block, key_bytes, sa};
use common::{Lab, LabOptions, PYTHON, Side, tshark_fields};

const ESP_SCAPY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/esp_scapy.py");

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
/// scapy. With anti-replay on every one is dropped as `replayed` and nothing reaches B's TUN;
/// with it off they are accepted and the 5 echo requests appear on B's TUN again (judged by a
/// capture there, not only by B's own counters).
#[test]
#[ignore = "needs root and network namespaces; run by make netns-test"]
fn captured_packets_replayed_on_the_wire() {
    for replay in [true, false] {
        let suite = SUITES[1];
        let mut lab = Lab::new(LabOptions::default());
        // No IPv6 on the TUN devices: the kernels' router solicitations would travel the
        // tunnel too and make B's ingress count inexact.
        for side in Side::BOTH {
            for conf in ["all", "default"] {
                let key = format!("net.ipv6.conf.{conf}.disable_ipv6=1");
                lab.exec_ok(side, "sysctl", &["-qw", &key]);
            }
        }
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
        let tun_b = lab.node(Side::B).tun.clone();
        let on_tun = lab.capture(Side::B, &tun_b, 5, "icmp[icmptype] == icmp-echo");
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
        // All 5 arrive within the wait when accepted; with protection on the wait runs out.
        let tun_pcap = lab.finish_capture(on_tun, Duration::from_secs(if replay { 1 } else { 5 }));
        let mut replayed_seqs: Vec<u32> = tshark_fields(&tun_pcap, "icmp.type == 8", &["icmp.seq"])
            .iter()
            .filter_map(|r| r[0].parse().ok())
            .collect();
        replayed_seqs.sort();
        let after = lab.metrics(Side::B);
        let delta = |reason: &str| {
            after.get("magictunnel_tunnel_drops_total", &[("reason", reason)])
                - before.get("magictunnel_tunnel_drops_total", &[("reason", reason)])
        };
        let accepted = after.packets("ingress") - before.packets("ingress");
        if replay {
            assert_eq!(delta("replayed"), 5.0, "all 5 replays dropped");
            assert_eq!(accepted, 0.0);
            assert_eq!(replayed_seqs, [0u32; 0], "replays reached B's TUN");
        } else {
            assert_eq!(delta("replayed"), 0.0);
            assert_eq!(accepted, 5.0, "all 5 replays accepted with protection off");
            assert_eq!(
                replayed_seqs,
                [1, 2, 3, 4, 5],
                "the replayed echo requests on B's TUN"
            );
        }
        assert_eq!(delta("bad_icv"), 0.0);
    }
}

/// Every suite against an independent ESP implementation: scapy in A's namespace, with the keys
/// of B's static SAs, sends ICMP echo requests in ESP-in-UDP to B's tunnel-pod (alone: A runs
/// no tunnel-pod). The requests must reach B's TUN (a capture on it: B decrypted them as scapy
/// encrypted them), and B's echo replies, which leave sealed with B's outbound SA, must
/// decrypt and verify in scapy (B encrypts as scapy decrypts).
#[test]
#[ignore = "needs root and network namespaces; run by make netns-test"]
fn every_suite_interoperates_with_scapy() {
    const COUNT: u32 = 3;
    for suite in SUITES {
        let (enc, integ, ek, ik) = suite;
        let label = format!("{enc} {}", integ.unwrap_or(""));
        let mut lab = Lab::new(LabOptions::default());
        let mut config = lab.config(Side::B);
        config.ipsec = Some(ipsec_block(Side::B, suite, true));
        // No probes: only scapy's requests and B's replies travel.
        config.health_rate = None;
        lab.start(Side::B, &config, &[]);
        lab.wait_ready(&[Side::B]);
        let (a, b) = (lab.node(Side::A), lab.node(Side::B));
        let (veth_a, tun_b) = (a.veth.clone(), b.tun.clone());
        let mac_b = lab.exec_ok(
            Side::B,
            "cat",
            &[&format!("/sys/class/net/{}/address", b.veth)],
        );
        let mut args: Vec<String> = vec![
            ESP_SCAPY.into(),
            "--iface".into(),
            veth_a.clone(),
            "--src".into(),
            a.outer.to_string(),
            "--dst".into(),
            b.outer.to_string(),
            "--dst-mac".into(),
            mac_b.trim().into(),
            "--inner-src".into(),
            a.tunnel_addr.to_string(),
            "--inner-dst".into(),
            b.tunnel_addr.to_string(),
            "--enc".into(),
            enc.into(),
            "--out-spi".into(),
            0x1001.to_string(),
            "--out-key".into(),
            hex(&key_bytes(ek, SEED_A_TO_B)),
            "--in-spi".into(),
            0x2002.to_string(),
            "--in-key".into(),
            hex(&key_bytes(ek, SEED_B_TO_A)),
            "--count".into(),
            COUNT.to_string(),
        ];
        if let Some(i) = integ {
            args.extend([
                "--integ".into(),
                i.into(),
                "--out-integ-key".into(),
                hex(&key_bytes(ik, SEED_A_TO_B.wrapping_add(100))),
                "--in-integ-key".into(),
                hex(&key_bytes(ik, SEED_B_TO_A.wrapping_add(100))),
            ]);
        }
        let capture = lab.capture(Side::B, &tun_b, COUNT, "icmp[icmptype] == icmp-echo");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = lab.exec_ok(Side::A, PYTHON, &args);
        let pcap = lab.finish_capture(capture, Duration::from_secs(3));
        let report: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{label}: esp_scapy.py printed no JSON ({e}): {out}"));
        // What reached B's TUN: scapy's requests, decrypted by B, byte for byte.
        let on_tun = tshark_fields(
            &pcap,
            "icmp.type == 8",
            &["ip.src", "ip.dst", "icmp.ident", "icmp.seq", "data.data"],
        );
        let mut seqs: Vec<String> = on_tun.iter().map(|r| r[3].clone()).collect();
        seqs.sort();
        let m = lab.metrics(Side::B);
        let drops: Vec<(String, f64)> = m
            .drop_reasons()
            .into_iter()
            .map(|r| (r.clone(), m.drops(&r)))
            .filter(|(_, n)| *n != 0.0)
            .collect();
        assert_eq!(
            seqs,
            (1..=COUNT).map(|i| i.to_string()).collect::<Vec<_>>(),
            "{label}: echo requests on B's TUN: {on_tun:?}\nB's drops: {drops:?}\nscapy: {out}{}",
            lab.logs()
        );
        for row in &on_tun {
            let seq: u32 = row[3].parse().unwrap_or(0);
            let data = [
                format!("magictunnel esp scapy {seq} ").into_bytes(),
                (0u8..32).collect(),
            ]
            .concat();
            assert_eq!(
                (row[0].as_str(), row[1].as_str(), row[2].as_str()),
                ("10.99.0.0", "10.99.0.1", "19796"),
                "{label}: {row:?}"
            );
            assert_eq!(row[4], hex(&data), "{label}: payload of request {seq}");
        }
        // What B sent back: every reply decrypted and verified by scapy.
        let errors = report["errors"].as_array().cloned().unwrap_or_default();
        assert!(
            errors.is_empty(),
            "{label}: scapy: {errors:?}{}",
            lab.logs()
        );
        let replies = report["replies"].as_array().cloned().unwrap_or_default();
        let good: Vec<u64> = replies
            .iter()
            .filter(|r| r["ok"] == true)
            .filter_map(|r| r["seq"].as_u64())
            .collect();
        assert_eq!(
            good,
            (1..=u64::from(COUNT)).collect::<Vec<_>>(),
            "{label}: echo replies scapy verified: {out}{}",
            lab.logs()
        );
        for reason in [
            "bad_icv",
            "bad_padding",
            "unknown_spi",
            "truncated",
            "replayed",
        ] {
            assert_eq!(m.drops(reason), 0.0, "{label}: B dropped as {reason}");
        }
        eprintln!("{label}: {COUNT} requests decrypted by B, {COUNT} replies verified by scapy");
    }
}
