//! Correctness under offload (issue #12): what two tunnel-pods put on the wire while the kernel
//! hands them TSO bursts (`IFF_VNET_HDR`, GSO_TCPV4/GSO_TCPV6) and they segment, checksum,
//! encapsulate and coalesce them. GRE and ESP-in-UDP (static SAs), in network namespaces.
//!
//! - the TUN leaks none of the kernel's own IPv6 chatter into the tunnel (router
//!   solicitations, MLD, DAD), at start and after someone adds an IPv6 address;
//! - every inner IPv4/IPv6 header and TCP checksum of a bulk transfer is valid on the wire:
//!   tshark validates GRE-carried segments, and `offload_check.py` recomputes them with scapy
//!   (for ESP after decrypting with scapy's own SecurityAssociation and the static SA keys);
//! - IPv6 inner traffic (ping, TCP) through both encapsulations, and the kernel really hands
//!   over IPv6 TSO bursts;
//! - mixed sizes: TCP with `-l` 100…1400 and a small MSS, UDP at a fixed rate with loss;
//! - no reordering visible to TCP on the receiving TUN.
//!
//! Captures of the encapsulated traffic are taken on the *receiving* side's veth (B), with GSO
//! off on the sender's veth (`gso_max_segs 1`, so the kernel segments any UDP-GSO or packet-GSO
//! burst in software before the veth and the capture sees each datagram as the peer gets it;
//! iproute2 alone, no ethtool needed). With GSO on, tcpdump would see one super-datagram of
//! several ESP packets, which no dissector can split (pcap keeps no gso_size). The mixed-size and
//! reordering tests capture only the receiving TUN and leave the veths alone, so there a UDP-GSO
//! burst reaches B's socket whole and B's GRO split is what runs.
//!
//! Root only: `cargo test -p magictunnel-tunnel-pod --test netns_offload -- --ignored
//! --test-threads=1`. Needs `ip`, `tcpdump`, `tshark`, `iperf3`, `curl`, Debian's python3 with
//! scapy.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use common::{IPERF_PORT, Lab, LabOptions, PYTHON, Side, run_ok, tshark_fields, wait_for};

const CHECK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/offload_check.py");

/// Inner IPv6 addresses added to the TUNs by the tests (the config carries IPv4 only).
const V6_A: &str = "2001:db8:99::1";
const V6_B: &str = "2001:db8:99::2";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Gre,
    /// ESP with a static SA of this suite: (encryption, integrity, key bytes, integrity key bytes).
    Esp(Suite),
}

type Suite = (&'static str, Option<&'static str>, usize, usize);

const GCM256: Suite = ("AES-GCM-16-256", None, 36, 0);
const CBC256: Suite = ("AES-CBC-256", Some("HMAC-SHA2-256-128"), 32, 32);

impl Kind {
    fn label(self) -> String {
        match self {
            Kind::Gre => "GRE".to_string(),
            Kind::Esp((enc, integ, _, _)) => format!("ESP {enc}{}", integ.map_or("", |_| "+HMAC")),
        }
    }
}

/// The key bytes of the SA with this seed (the integrity key uses `seed + 100`).
fn key_bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(37).wrapping_add(seed))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const SPI_A_TO_B: u32 = 0x1001;
const SPI_B_TO_A: u32 = 0x2002;
const SEED_A_TO_B: u8 = 11;
const SEED_B_TO_A: u8 = 12;

fn sa_yaml(spi: u32, suite: Suite, seed: u8) -> String {
    let (enc, integ, ek, ik) = suite;
    let mut y = format!(
        "{{spi: {spi}, encryption: {enc}, encryptionKey: \"{}\"",
        BASE64.encode(key_bytes(ek, seed))
    );
    if let Some(i) = integ {
        y.push_str(&format!(
            ", integrity: {i}, integrityKey: \"{}\"",
            BASE64.encode(key_bytes(ik, seed.wrapping_add(100)))
        ));
    }
    y.push('}');
    y
}

fn ipsec_block(side: Side, suite: Suite) -> String {
    let a_to_b = sa_yaml(SPI_A_TO_B, suite, SEED_A_TO_B);
    let b_to_a = sa_yaml(SPI_B_TO_A, suite, SEED_B_TO_A);
    let (out, inb) = match side {
        Side::A => (a_to_b, b_to_a),
        Side::B => (b_to_a, a_to_b),
    };
    format!("  replayProtection: true\n  staticSa:\n    outbound: {out}\n    inbound: {inb}")
}

/// Two tunnel-pods of this kind, ready, health checks off (their probes would only add
/// packets to the captures). `wire_capture`: GSO off on both veths, for a capture of the
/// encapsulated traffic (see the module docs); without it UDP-GSO bursts cross the veth whole
/// and reach B's socket as one coalesced datagram (UDP_GRO), the path a real NIC with USO and
/// GRO gives.
fn pair(kind: Kind, wire_capture: bool) -> Lab {
    let mut lab = Lab::new(LabOptions::default());
    lab.start_both(
        |side, c| {
            c.health_rate = None;
            if let Kind::Esp(suite) = kind {
                c.ipsec = Some(ipsec_block(side, suite));
            }
        },
        &[],
    );
    lab.wait_ready(&Side::BOTH);
    for side in Side::BOTH.into_iter().filter(|_| wire_capture) {
        let veth = lab.node(side).veth.clone();
        lab.exec_ok(side, "ip", &["link", "set", &veth, "gso_max_segs", "1"]);
    }
    lab
}

/// UDP offload counters of H1's ESP path as `/metrics` shows them (absent before it).
fn udp_offload_summary(lab: &Lab, side: Side) -> String {
    let m = lab.metrics(side);
    [
        "magictunnel_udp_gso_segments_total",
        "magictunnel_udp_gro_segments_total",
    ]
    .iter()
    .map(|name| match m.try_get(name, &[]) {
        Ok(v) => format!("{name} {v}"),
        Err(_) => format!("{name} absent"),
    })
    .collect::<Vec<_>>()
    .join(", ")
}

/// Adds the inner IPv6 addresses to both TUNs and waits until A reaches B over them.
fn add_ipv6(lab: &Lab) {
    for (side, addr) in [(Side::A, V6_A), (Side::B, V6_B)] {
        let tun = lab.node(side).tun.clone();
        let cidr = format!("{addr}/64");
        lab.exec_ok(
            side,
            "ip",
            &["-6", "addr", "add", &cidr, "dev", &tun, "nodad"],
        );
    }
    let reached = wait_for(Duration::from_secs(10), Duration::from_millis(200), || {
        lab.exec(Side::A, "ping", &["-6", "-c", "1", "-W", "1", "-n", V6_B])
            .status
            .success()
            .then_some(())
    });
    assert!(reached.is_some(), "no ping6 A → B{}", lab.logs());
}

/// `iperf3 -s -1` on `server` bound to `bind`, a client from the other side with `args`; the
/// client's JSON report. Panics when the client fails.
fn iperf(lab: &mut Lab, server: Side, bind: &str, args: &[&str]) -> serde_json::Value {
    let port = IPERF_PORT.to_string();
    let srv = lab.spawn(
        server,
        "iperf3-server",
        "iperf3",
        &["-s", "-1", "-B", bind, "-p", &port],
    );
    let filter = format!("sport = :{port}");
    let listening = wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
        let out = lab.exec(server, "ss", &["-Hln", &filter]);
        (!out.stdout.is_empty()).then_some(())
    });
    assert!(
        listening.is_some(),
        "iperf3 server did not listen: {}",
        lab.bg_stderr(srv)
    );
    let mut client = vec!["-c", bind, "-p", &port, "-J", "--connect-timeout", "3000"];
    client.extend_from_slice(args);
    let out = lab.exec(server.other(), "iperf3", &client);
    // The server exits after one test (-1); give it a moment to write its end, then stop it.
    let _ = lab.wait_bg(srv, Duration::from_secs(2));
    lab.stop_bg(srv);
    let text = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "iperf3 {args:?}: output is not JSON ({e}): {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success() && report.get("error").is_none(),
        "iperf3 {args:?} failed: {}{}",
        report.get("error").map_or(String::new(), |e| e.to_string()),
        lab.logs()
    );
    report
}

fn f64_at(v: &serde_json::Value, path: &[&str]) -> f64 {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_f64()
        .unwrap_or(f64::NAN)
}

/// Number of packets in a pcap matching a tshark display filter (with the given -o options).
fn tshark_count(file: &Path, options: &[&str], display_filter: &str) -> usize {
    let file_arg = file.to_string_lossy().into_owned();
    let mut args: Vec<&str> = vec!["-r", &file_arg, "-n"];
    for o in options {
        args.push("-o");
        args.push(o);
    }
    args.extend(["-Y", display_filter, "-T", "fields", "-e", "frame.number"]);
    run_ok(&mut common::cmd("tshark", &args))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

const CHECKSUMS: [&str; 2] = ["ip.check_checksum:TRUE", "tcp.check_checksum:TRUE"];

/// Runs `offload_check.py` on a capture of this kind's traffic; returns its JSON.
fn scapy_check(kind: Kind, pcap: &Path, max: usize) -> serde_json::Value {
    let pcap_arg = pcap.to_string_lossy().into_owned();
    let max = max.to_string();
    let mut args: Vec<String> = vec![CHECK.into(), String::new(), pcap_arg, "--max".into(), max];
    match kind {
        Kind::Gre => args[1] = "gre".into(),
        Kind::Esp((enc, integ, ek, ik)) => {
            args[1] = "esp".into();
            args.extend([
                "--src".into(),
                "203.0.113.1".into(),
                "--dst".into(),
                "203.0.113.2".into(),
                "--spi".into(),
                SPI_A_TO_B.to_string(),
                "--enc".into(),
                enc.into(),
                "--key".into(),
                hex(&key_bytes(ek, SEED_A_TO_B)),
            ]);
            if let Some(i) = integ {
                args.extend([
                    "--integ".into(),
                    i.into(),
                    "--integ-key".into(),
                    hex(&key_bytes(ik, SEED_A_TO_B.wrapping_add(100))),
                ]);
            }
        }
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let text = run_ok(&mut common::cmd(PYTHON, &refs));
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("offload_check.py printed no JSON ({e}): {text}"))
}

/// Starts a capture of the encapsulated traffic on B's veth (A → B and back).
fn capture_wire(lab: &mut Lab, kind: Kind, count: u32) -> common::Capture {
    let veth = lab.node(Side::B).veth.clone();
    let filter = match kind {
        Kind::Gre => "ip proto 47",
        Kind::Esp(_) => "udp port 4500",
    };
    lab.capture(Side::B, &veth, count, filter)
}

/// The largest inner TCP packet the kernel handed A's tunnel-pod (a capture on A's TUN sees
/// the TSO burst before it is segmented), during a short transfer to `dst`.
fn largest_burst_on_a_tun(lab: &mut Lab, kind: Kind, dst: &str, v6: bool) -> usize {
    let tun = lab.node(Side::A).tun.clone();
    let capture = lab.capture(Side::A, &tun, 300, if v6 { "ip6 and tcp" } else { "tcp" });
    let mut args = vec!["-t", "1"];
    if v6 {
        args.push("-6");
    }
    iperf(lab, Side::B, dst, &args);
    let pcap = lab.finish_capture(capture, Duration::from_secs(5));
    let rows = tshark_fields(&pcap, "tcp", &["frame.len"]);
    let largest = rows
        .iter()
        .filter_map(|r| r.first()?.parse::<usize>().ok())
        .max()
        .unwrap_or(0);
    eprintln!(
        "{}: largest inner packet from A's kernel on its TUN: {largest} bytes",
        kind.label()
    );
    largest
}

// ---------------------------------------------------------------------------------------------
// 1. No IPv6 chatter from the TUN.

/// ICMPv6 frames inside the tunnel in a capture of the encapsulated traffic (GRE).
fn icmpv6_in_gre(pcap: &Path) -> usize {
    tshark_count(pcap, &[], "gre && icmpv6")
}

fn link_chatter_drops(lab: &Lab, side: Side) -> f64 {
    lab.metrics(side).drops("link_chatter")
}

#[test]
#[ignore = "needs root and network namespaces; run by make netns-test"]
fn no_ipv6_chatter_from_the_tun_at_start_or_when_a_link_local_address_appears() {
    let mut lab = Lab::new(LabOptions::default());
    // The capture starts before the tunnel-pods: it sees everything from their first frame.
    let veth = lab.node(Side::B).veth.clone();
    let capture = lab.capture(Side::B, &veth, 100_000, "ip proto 47");
    let start = Instant::now();
    lab.start_both(|_, _| {}, &[]);
    lab.wait_ready(&Side::BOTH);
    // Router solicitations leave 0–1 s after the link-local address is ready (DAD is skipped on
    // a NOARP device), MLD reports at once and again within 1 s: 5 s cover both.
    sleep(Duration::from_secs(5).saturating_sub(start.elapsed()));
    let pcap = lab.finish_capture(capture, Duration::from_millis(100));
    let gre_frames = tshark_count(&pcap, &[], "gre");
    let chatter = icmpv6_in_gre(&pcap);
    eprintln!("first 5 s: {gre_frames} GRE frames, {chatter} with ICMPv6 inside");
    assert!(gre_frames > 0, "no GRE at all (health probes run at High)");
    assert_eq!(
        chatter,
        0,
        "the kernel's IPv6 chatter went through the tunnel:\n{}",
        run_ok(&mut common::cmd(
            "tshark",
            &["-r", &pcap.to_string_lossy(), "-Y", "icmpv6"]
        ))
    );
    for side in Side::BOTH {
        let tun = lab.node(side).tun.clone();
        // The source is off: no link-local address, so the kernel had nothing to send, and the
        // dataplane's filter had nothing to drop.
        let mode = lab.exec_ok(
            side,
            "cat",
            &[&format!("/proc/sys/net/ipv6/conf/{tun}/addr_gen_mode")],
        );
        assert_eq!(mode.trim(), "1", "addr_gen_mode of {tun} (1 = none)");
        let addrs = lab.exec_ok(side, "ip", &["-6", "addr", "show", "dev", &tun]);
        assert!(
            !addrs.contains("inet6"),
            "{tun} has IPv6 addresses nobody configured:\n{addrs}"
        );
        assert_eq!(link_chatter_drops(&lab, side), 0.0, "side {side:?}");
    }

    // The second line: a kernel that makes a link-local address after all (as one that ignored
    // the attribute would). The link flaps with address generation back on (EUI-64), the
    // kernel solicits routers from its new fe80:: address, and the dataplane drops all of it.
    let capture = lab.capture(Side::B, &veth, 100_000, "ip proto 47");
    let tun_a = lab.node(Side::A).tun.clone();
    let on_tun = lab.capture(Side::A, &tun_a, 1000, "icmp6");
    for args in [
        &["link", "set", &tun_a, "down"][..],
        &["link", "set", &tun_a, "addrgenmode", "eui64"],
        &["link", "set", &tun_a, "up"],
    ] {
        lab.exec_ok(Side::A, "ip", args);
    }
    let dropped = wait_for(Duration::from_secs(6), Duration::from_millis(200), || {
        (link_chatter_drops(&lab, Side::A) >= 1.0).then_some(())
    });
    sleep(Duration::from_secs(1));
    let emitted = lab.finish_capture(on_tun, Duration::from_millis(100));
    let pcap = lab.finish_capture(capture, Duration::from_millis(100));
    let drops = link_chatter_drops(&lab, Side::A);
    let emitted_rows = tshark_fields(&emitted, "icmpv6", &["icmpv6.type", "ipv6.src", "ipv6.dst"]);
    let chatter = icmpv6_in_gre(&pcap);
    eprintln!(
        "after a link flap with addrgenmode eui64: the kernel sent {emitted_rows:?} to the TUN; \
         {drops} link_chatter drops, {chatter} ICMPv6 in GRE"
    );
    assert!(
        dropped.is_some(),
        "nothing was dropped as link_chatter after the kernel made a link-local address{}",
        lab.logs()
    );
    assert!(
        drops >= emitted_rows.len() as f64,
        "the kernel sent {} ICMPv6 messages to the TUN, {drops} dropped",
        emitted_rows.len()
    );
    assert_eq!(chatter, 0, "the kernel's chatter went through the tunnel");
    // Global IPv6 still goes through (the filter is for link-scope chatter only), with the
    // link-local address there too.
    add_ipv6(&lab);
}

// ---------------------------------------------------------------------------------------------
// 2a. Checksums under TSO.

/// Bulk TCP A → B for 2 s with B's veth captured; tshark validates (GRE) and scapy recomputes
/// every inner checksum. Returns (tshark-good segments, scapy-checked segments).
fn checksums_on_the_wire(kind: Kind, v6: bool) {
    let label = format!("{} IPv{}", kind.label(), if v6 { 6 } else { 4 });
    let mut lab = pair(kind, true);
    let dst = if v6 {
        add_ipv6(&lab);
        V6_B.to_string()
    } else {
        lab.node(Side::B).tunnel_addr.to_string()
    };
    let largest = largest_burst_on_a_tun(&mut lab, kind, &dst, v6);
    // Any packet above the veth's 1500 bytes (and so above every tunnel MTU) is a TSO burst.
    assert!(
        largest > 1500,
        "{label}: the kernel handed no TSO burst to the TUN (largest packet {largest} bytes)"
    );
    let capture = capture_wire(&mut lab, kind, 20_000);
    let mut args = vec!["-t", "2"];
    if v6 {
        args.push("-6");
    }
    let report = iperf(&mut lab, Side::B, &dst, &args);
    let pcap = lab.finish_capture(capture, Duration::from_secs(5));
    eprintln!(
        "{label}: {:.2} Gbit/s, {} retransmits",
        f64_at(&report, &["end", "sum_received", "bits_per_second"]) / 1e9,
        f64_at(&report, &["end", "sum_sent", "retransmits"])
    );
    // B's tunnel-pod glued the received segments into large packets for its TUN (IPv4 and
    // IPv6 alike), as the kernel's GRO would have.
    let m = lab.metrics(Side::B);
    let glued = m.metric_or_zero("magictunnel_tun_gro_packets_total", &[]);
    let segments = m.metric_or_zero("magictunnel_tun_gro_segments_total", &[]);
    eprintln!("{label}: B coalesced {segments} segments into {glued} packets for its TUN");
    assert!(
        glued >= 10.0 && segments >= 4.0 * glued,
        "{label}: B coalesced {segments} segments into {glued} packets"
    );
    if kind == Kind::Gre {
        let good = tshark_count(
            &pcap,
            &CHECKSUMS,
            "gre && tcp.checksum.status == 1 && tcp.len > 0",
        );
        let bad = tshark_count(
            &pcap,
            &CHECKSUMS,
            "gre && (tcp.checksum.status == 0 || ip.checksum.status == 0)",
        );
        eprintln!("{label}: tshark: {good} data segments with a good TCP checksum, {bad} bad");
        assert_eq!(bad, 0, "{label}: tshark found bad checksums");
        assert!(good >= 1000, "{label}: only {good} segments validated");
    }
    if matches!(kind, Kind::Esp(_)) {
        eprintln!("{label}: A: {}", udp_offload_summary(&lab, Side::A));
    }
    let check = scapy_check(kind, &pcap, 4000);
    eprintln!("{label}: scapy: {check}");
    assert_eq!(check["bad"], 0, "{label}: scapy recomputed other checksums");
    assert_eq!(
        check["undecryptable"], 0,
        "{label}: scapy could not open ESP"
    );
    let payload = check["tcp_payload"].as_u64().unwrap_or(0);
    assert!(
        payload >= 1000,
        "{label}: scapy checked only {payload} data segments"
    );
    let family = if v6 { "inner_v6" } else { "inner_v4" };
    assert!(
        check[family].as_u64().unwrap_or(0) >= 1000,
        "{label}: {family} {}",
        check[family]
    );
    // Every captured frame is one datagram as the peer receives it, not a GSO burst.
    let max_frame = check["max_frame"].as_u64().unwrap_or(u64::MAX);
    assert!(
        max_frame <= 1514,
        "{label}: a {max_frame}-byte frame on the veth"
    );
}

#[test]
#[ignore = "needs root and network namespaces; run by make netns-test"]
fn gre_ipv4_checksums_valid_under_tso() {
    checksums_on_the_wire(Kind::Gre, false);
}

#[test]
#[ignore = "needs root and network namespaces; run by make netns-test"]
fn esp_ipv4_checksums_valid_under_tso() {
    checksums_on_the_wire(Kind::Esp(GCM256), false);
    checksums_on_the_wire(Kind::Esp(CBC256), false);
}

// ---------------------------------------------------------------------------------------------
// 2b. IPv6 inner traffic (the segments are GSO_TCPV6).

#[test]
#[ignore = "needs root and network namespaces; run by make netns-test"]
fn gre_ipv6_inner_traffic_with_valid_checksums() {
    checksums_on_the_wire(Kind::Gre, true);
}

#[test]
#[ignore = "needs root and network namespaces; run by make netns-test"]
fn esp_ipv6_inner_traffic_with_valid_checksums() {
    checksums_on_the_wire(Kind::Esp(GCM256), true);
}

// ---------------------------------------------------------------------------------------------
// 2c. Mixed packet sizes; 2d. no reordering visible to TCP.

/// The tunnel's share of UDP loss allowed at a fixed rate, in percent: what iperf3 lost less
/// what iperf3's own receiving socket refused (the receiving application starved). The rates
/// are at most a quarter of the packet rate the same lab carried just before (see
/// `mixed_sizes`), so a correct tunnel loses datagrams only in scheduling stalls on this shared
/// 2-core VM, when tunnel-pod is not run for longer than a queue lasts (the TUN's 500 packets,
/// a socket's default 212 KB: tens of ms at these rates). Other helpers' builds and benchmarks
/// run beside these tests (load averages of 6–11 were seen), hence 5 %; idle, it is 0.
const UDP_LOSS_MAX_PERCENT: f64 = 5.0;

/// Loss where no queue overflowed (no kernel counter explains it), in percent: what a fault in
/// the tunnel looks like (a burst mis-split, a datagram dropped in processing). iperf3's count
/// is by sequence gaps, so nothing in flight at the end counts as lost; 0.2 % leaves room for
/// a counter read a moment before the last overflow was counted.
const UDP_UNEXPLAINED_MAX_PERCENT: f64 = 0.2;

/// Out-of-order segments allowed on the receiving TUN per transfer. The tunnel preserves order
/// by construction (one TUN queue per flow, one ingress thread per socket), so the expected
/// count is 0; tshark's heuristic however calls a fast retransmission that fills a hole within
/// its "out-of-order threshold" out-of-order, and a lossy moment can make a few. More than this
/// means the tunnel reorders.
const OUT_OF_ORDER_MAX: usize = 3;

/// `Udp: RcvbufErrors` of a namespace (/proc/net/snmp is per namespace): datagrams a full
/// socket receive buffer refused, iperf3's and (ESP) tunnel-pod's.
fn udp_rcvbuf_errors(lab: &Lab, side: Side) -> f64 {
    let snmp = lab.exec_ok(side, "cat", &["/proc/net/snmp"]);
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        panic!("no Udp lines in /proc/net/snmp:\n{snmp}");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no RcvbufErrors in /proc/net/snmp:\n{snmp}"))
}

/// A capture of the first 200 bytes of each TCP packet on `iface` (what tshark's sequence
/// analysis needs; the TUN's coalesced 64 KB writes would otherwise make hundreds of MB).
fn capture_headers(lab: &mut Lab, side: Side, iface: &str, count: u32) -> (common::Bg, PathBuf) {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let file = lab.dir.join(format!("{iface}-{n}-headers.pcap"));
    let file_arg = file.to_string_lossy().into_owned();
    let count = count.to_string();
    let args = [
        "-Z", "root", "-U", "-n", "-s", "200", "-i", iface, "-c", &count, "-w", &file_arg, "tcp",
    ];
    let bg = lab.spawn(side, "tcpdump-headers", "tcpdump", &args);
    let listening = wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
        lab.bg_stderr(bg).contains("listening on").then_some(())
    });
    assert!(
        listening.is_some(),
        "tcpdump on {iface} did not start: {}",
        lab.bg_stderr(bg)
    );
    (bg, file)
}

fn finish_headers(lab: &mut Lab, (bg, file): (common::Bg, PathBuf)) -> PathBuf {
    if lab.wait_bg(bg, Duration::from_secs(2)).is_none() {
        lab.stop_bg(bg);
    }
    file
}

/// Where datagrams can be refused for want of room on the way A → B, in the two namespaces.
#[derive(Debug, Default)]
struct QueueDrops {
    /// B's UDP `RcvbufErrors` less tunnel-pod's own socket: iperf3's receiving socket was full.
    at_iperf: f64,
    /// B's tunnel-pod data socket (UDP 4500 for ESP, raw protocol 47 for GRE) was full.
    tunnel_socket: f64,
    /// rx_dropped + tx_dropped of both TUNs and both veths (a TUN queue tunnel-pod did not
    /// read in time, a backlog the receiving kernel did not drain).
    interfaces: f64,
}

impl QueueDrops {
    fn read(lab: &Lab, kind: Kind) -> QueueDrops {
        let tunnel_socket = match kind {
            Kind::Gre => socket_drops(lab, Side::B, "/proc/net/raw", 47),
            Kind::Esp(_) => socket_drops(lab, Side::B, "/proc/net/udp", 4500),
        };
        let udp_tunnel = match kind {
            Kind::Gre => 0.0,
            Kind::Esp(_) => tunnel_socket,
        };
        let mut interfaces = 0.0;
        for side in Side::BOTH {
            let n = lab.node(side);
            for dev in [&n.tun, &n.veth] {
                for stat in ["rx_dropped", "tx_dropped"] {
                    let path = format!("/sys/class/net/{dev}/statistics/{stat}");
                    let v = lab.exec_ok(side, "cat", &[&path]);
                    interfaces += v.trim().parse::<f64>().unwrap_or(0.0);
                }
            }
        }
        QueueDrops {
            at_iperf: udp_rcvbuf_errors(lab, Side::B) - udp_tunnel,
            tunnel_socket,
            interfaces,
        }
    }

    fn minus(&self, before: &QueueDrops) -> QueueDrops {
        QueueDrops {
            at_iperf: self.at_iperf - before.at_iperf,
            tunnel_socket: self.tunnel_socket - before.tunnel_socket,
            interfaces: self.interfaces - before.interfaces,
        }
    }
}

/// The `drops` of the sockets in `table` (/proc/net/udp or /proc/net/raw of a namespace) bound
/// to local `port` (for raw sockets the protocol number). in a namespace (/proc/net/udp): for
/// tunnel-pod's port 4500 socket, its share of `RcvbufErrors`.
fn socket_drops(lab: &Lab, side: Side, table: &str, port: u16) -> f64 {
    let table = lab.exec_ok(side, "cat", &[table]);
    let suffix = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|a| a.ends_with(&suffix))
        })
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

fn mixed_sizes(kind: Kind) {
    let label = kind.label();
    let mut lab = pair(kind, false);
    let dst = lab.node(Side::B).tunnel_addr.to_string();
    let tun_b = lab.node(Side::B).tun.clone();
    let mut summary = Vec::new();
    let mut bulk_bps = f64::NAN;
    for (len, mss) in [
        ("100", None),
        ("500", None),
        ("1000", None),
        ("1400", None),
        ("1400", Some("536")),
        ("100", Some("536")),
    ] {
        // The receiving TUN, to count what TCP would see out of order.
        let capture = capture_headers(&mut lab, Side::B, &tun_b, 50_000);
        let mut args = vec!["-t", "1", "-l", len];
        if let Some(m) = mss {
            args.extend(["-M", m]);
        }
        let report = iperf(&mut lab, Side::B, &dst, &args);
        let pcap = finish_headers(&mut lab, capture);
        let received = f64_at(&report, &["end", "sum_received", "bytes"]);
        let sent = f64_at(&report, &["end", "sum_sent", "bytes"]);
        let retransmits = f64_at(&report, &["end", "sum_sent", "retransmits"]);
        let segments = tshark_count(&pcap, &[], "tcp.len > 0");
        let out_of_order = tshark_count(&pcap, &[], "tcp.analysis.out_of_order");
        let line = format!(
            "{label} TCP -l {len} -M {}: {:.2} Gbit/s, {received} of {sent} bytes, {retransmits} \
             retransmits; receiving TUN: {segments} data segments, {out_of_order} out of order",
            mss.unwrap_or("-"),
            f64_at(&report, &["end", "sum_received", "bits_per_second"]) / 1e9
        );
        eprintln!("{line}");
        assert!(received > 1e5, "{line}: moved too little");
        assert!(segments > 0, "{line}: nothing captured on B's TUN");
        assert!(
            out_of_order <= OUT_OF_ORDER_MAX,
            "{line}: reordering visible to TCP"
        );
        // Retransmits come from loss (a full socket buffer under a 1 s burst), not from
        // reordering (checked above): bounded to 1 % of the segments.
        let mss_bytes: f64 = mss.map_or(1436.0, |m| m.parse().unwrap_or(536.0));
        let approx_segments = sent / mss_bytes.min(len.parse().unwrap_or(1400.0));
        assert!(
            retransmits <= (approx_segments * 0.01).max(50.0),
            "{line}: too many retransmits"
        );
        if len == "1400" && mss.is_none() {
            bulk_bps = f64_at(&report, &["end", "sum_received", "bits_per_second"]);
        }
        summary.push(line);
    }
    // Fixed rates below what this lab carried a moment ago (the bulk `-l 1400` run), so that
    // loss points at the tunnel and not at a VM whose two cores other work is using: the
    // nominal 200 Mbit/s (1200 B) and 20 Mbit/s (100 B), lowered to a quarter of the packet
    // rate of that run when the machine is slower than that right now.
    let capacity_pps = bulk_bps / (8.0 * 1448.0);
    for (len, nominal) in [(1200u32, 200e6_f64), (100, 20e6)] {
        let rate = nominal.min(0.25 * capacity_pps * f64::from(len) * 8.0);
        let (rate_arg, len_arg) = ((rate as u64).to_string(), len.to_string());
        let before = QueueDrops::read(&lab, kind);
        let report = iperf(
            &mut lab,
            Side::B,
            &dst,
            &["-u", "-b", &rate_arg, "-l", &len_arg, "-t", "2"],
        );
        let queues = QueueDrops::read(&lab, kind).minus(&before);
        let sum = &report["end"]["sum"];
        let (lost, packets) = (f64_at(sum, &["lost_packets"]), f64_at(sum, &["packets"]));
        let percent = f64_at(sum, &["lost_percent"]);
        let out_of_order: f64 = report["end"]["streams"]
            .as_array()
            .map(|s| s.iter().map(|s| f64_at(s, &["udp", "out_of_order"])).sum())
            .unwrap_or(f64::NAN);
        let share = |n: f64| 100.0 * n.max(0.0) / packets.max(1.0);
        let at_tunnel = queues.tunnel_socket + queues.interfaces;
        let unexplained = lost - queues.at_iperf - at_tunnel;
        let line = format!(
            "{label} UDP -l {len} -b {:.1}M: {lost} of {packets} datagrams lost ({percent:.3} %): \
             {} at iperf3's full receive buffer, {} at tunnel-pod's socket, {} in TUN/veth \
             queues, {unexplained} otherwise; {out_of_order} out of order",
            rate / 1e6,
            queues.at_iperf,
            queues.tunnel_socket,
            queues.interfaces,
        );
        eprintln!("{line}");
        assert!(packets > 1000.0, "{line}: too few datagrams");
        assert!(
            share(unexplained) <= UDP_UNEXPLAINED_MAX_PERCENT,
            "{line}: datagrams lost where no queue overflowed"
        );
        assert!(
            share(at_tunnel + unexplained) <= UDP_LOSS_MAX_PERCENT,
            "{line}: the tunnel's share of the loss is above the bound"
        );
        assert!(out_of_order <= OUT_OF_ORDER_MAX as f64, "{line}: reordered");
        summary.push(line);
    }
    let b = lab.metrics(Side::B);
    for reason in [
        "bad_offload",
        "truncated",
        "malformed_inner",
        "bad_icv",
        "replayed",
    ] {
        if let Ok(v) = b.try_get("magictunnel_tunnel_drops_total", &[("reason", reason)]) {
            assert_eq!(v, 0.0, "{label}: B dropped packets as {reason}");
        }
    }
    if matches!(kind, Kind::Esp(_)) {
        eprintln!("{label}: B: {}", udp_offload_summary(&lab, Side::B));
    }
    eprintln!("{label} summary:\n  {}", summary.join("\n  "));
}

#[test]
#[ignore = "needs root and network namespaces; run by make netns-test"]
fn gre_mixed_sizes_complete_in_order() {
    mixed_sizes(Kind::Gre);
}

#[test]
#[ignore = "needs root and network namespaces; run by make netns-test"]
fn esp_mixed_sizes_complete_in_order() {
    mixed_sizes(Kind::Esp(GCM256));
}

/// A longer bulk run through each encapsulation with the receiving TUN captured: tshark's
/// out-of-order count and iperf3's retransmits, IPv4 and IPv6.
#[test]
#[ignore = "needs root and network namespaces; run by make netns-test"]
fn no_reordering_visible_to_tcp() {
    for kind in [Kind::Gre, Kind::Esp(GCM256)] {
        let mut lab = pair(kind, false);
        add_ipv6(&lab);
        let tun_b = lab.node(Side::B).tun.clone();
        for v6 in [false, true] {
            let dst = if v6 {
                V6_B.to_string()
            } else {
                lab.node(Side::B).tunnel_addr.to_string()
            };
            let capture = capture_headers(&mut lab, Side::B, &tun_b, 100_000);
            let mut args = vec!["-t", "2"];
            if v6 {
                args.push("-6");
            }
            let report = iperf(&mut lab, Side::B, &dst, &args);
            let pcap = finish_headers(&mut lab, capture);
            let segments = tshark_count(&pcap, &[], "tcp.len > 0");
            let out_of_order = tshark_count(&pcap, &[], "tcp.analysis.out_of_order");
            let retransmits = f64_at(&report, &["end", "sum_sent", "retransmits"]);
            let line = format!(
                "{} IPv{}: {:.2} Gbit/s, {retransmits} retransmits; receiving TUN: {segments} \
                 data segments, {out_of_order} out of order",
                kind.label(),
                if v6 { 6 } else { 4 },
                f64_at(&report, &["end", "sum_received", "bits_per_second"]) / 1e9
            );
            eprintln!("{line}");
            // B's tunnel-pod coalesces IPv4 segments before it writes them to the TUN: fewer,
            // larger packets, a few hundred for the 2 s under load.
            assert!(segments > 100, "{line}: capture too small");
            assert!(out_of_order <= OUT_OF_ORDER_MAX, "{line}");
        }
    }
}
