//! GRE received through the host's GRO (issue #12). A NIC that does GRO hands a raw socket the
//! TCP inside GRE already coalesced (Linux's `gre_gro_receive`): one IPv4/GRE packet of up to
//! 64 KiB whose inner TCP checksum is left partial. tunnel-pod takes such a packet whole and
//! writes it to the TUN device as one TSO packet (`offload::kernel_coalesced`); before, every one
//! was dropped as oversized.
//!
//! A veth does GRO like a NIC once it has NAPI (`ethtool -K … gro on`) and its polls are
//! deferred (`gro_flush_timeout`, `napi_defer_hard_irqs`): without the deferral the sender's
//! transmit runs each poll for one packet and nothing is coalesced. B's end of the wire veth is
//! set so. B forwards the inner traffic to a third namespace C over a veth whose MTU is the
//! tunnel's and whose transmit checksumming is off, so B's kernel segments and checksums every
//! coalesced packet in software: the capture in C shows exactly what our virtio header asked
//! for, and tshark validates each TCP checksum. Once with IPv4 inside GRE, once with IPv6.
//!
//! Root only: `cargo test -p magictunnel-tunnel-pod --test netns_gre_gro -- --ignored
//! --test-threads=1`. Needs `ip`, `ethtool`, `tcpdump`, `tshark`, `iperf3`.

mod common;

use std::time::Duration;

use common::{IPERF_PORT, Lab, LabOptions, Side, cmd, output, run_ok, wait_for};

const KEY: u32 = 7;

/// NAPI GRO on `iface` in `ns`, with polls deferred as a NIC's interrupt moderation would. (A
/// veth takes the NAPI path only for frames from a peer without TSO, so the test turns A's off.)
fn host_gro(ns: &str, iface: &str) {
    run_ok(&mut cmd(
        "ip",
        &["netns", "exec", ns, "ethtool", "-K", iface, "gro", "on"],
    ));
    let sysfs = format!(
        "echo 50000 > /sys/class/net/{iface}/gro_flush_timeout && \
         echo 2 > /sys/class/net/{iface}/napi_defer_hard_irqs"
    );
    run_ok(&mut cmd("ip", &["netns", "exec", ns, "sh", "-c", &sysfs]));
}

fn in_ns(ns: &str, args: &[&str]) -> String {
    let mut all = vec!["netns", "exec", ns];
    all.extend_from_slice(args);
    run_ok(&mut cmd("ip", &all))
}

/// The inner addresses of one IP version: C behind B, B's side of the B–C link, the tunnel
/// addresses added for IPv6 (the config carries IPv4 only).
struct Family {
    v6: bool,
    c: &'static str,
    b_link: &'static str,
    prefix: &'static str,
}

const V4: Family = Family {
    v6: false,
    c: "10.20.0.1",
    b_link: "10.20.0.254",
    prefix: "24",
};

const V6: Family = Family {
    v6: true,
    c: "2001:db8:20::1",
    b_link: "2001:db8:20::254",
    prefix: "64",
};

#[test]
#[ignore = "needs root, network namespaces and ethtool"]
fn host_coalesced_gre_reaches_the_tun_whole_and_leaves_in_mtu_sized_valid_segments() {
    host_coalesced_gre(&V4);
}

#[test]
#[ignore = "needs root, network namespaces and ethtool"]
fn host_coalesced_ipv6_in_gre_reaches_the_tun_whole_and_leaves_in_mtu_sized_valid_segments() {
    host_coalesced_gre(&V6);
}

fn host_coalesced_gre(f: &Family) {
    let mut lab = Lab::new(LabOptions::default());
    // With a key: the socket's key filter and the inner offset see coalesced packets too.
    lab.start_both(
        |_, c| {
            c.health_rate = None;
            c.key = Some(KEY);
        },
        &[],
    );
    let mtu = {
        let mut c = lab.config(Side::B);
        c.key = Some(KEY);
        usize::from(c.effective_mtu())
    };
    lab.wait_ready(&Side::BOTH);
    let (a, wire_a, tun_a) = {
        let n = lab.node(Side::A);
        (n.ns.clone(), n.veth.clone(), n.tun.clone())
    };
    let (b, wire_b, tun_b) = {
        let n = lab.node(Side::B);
        (n.ns.clone(), n.veth.clone(), n.tun.clone())
    };
    // C behind B. IPv4: 10.20.0.0/24 is routed into the tunnel by A's config; IPv6: tunnel
    // addresses and a route are added here.
    let c = lab.add_namespace("c");
    let (to_c, in_c) = (format!("{}vbc", lab.name), format!("{}vc", lab.name));
    let mtu_arg = mtu.to_string();
    run_ok(&mut cmd(
        "ip",
        &[
            "link", "add", &to_c, "netns", &b, "mtu", &mtu_arg, "type", "veth", "peer", "name",
            &in_c, "netns", &c, "mtu", &mtu_arg,
        ],
    ));
    let ip = if f.v6 { "-6" } else { "-4" };
    let b_link = format!("{}/{}", f.b_link, f.prefix);
    let c_addr = format!("{}/{}", f.c, f.prefix);
    // IPv6 without duplicate address detection, which would hold the address back a second.
    let add = |ns: &str, addr: &str, dev: &str| {
        let mut args = vec!["ip", ip, "addr", "add", addr, "dev", dev];
        if f.v6 {
            args.push("nodad");
        }
        in_ns(ns, &args);
    };
    add(&b, &b_link, &to_c);
    in_ns(&b, &["ip", "link", "set", &to_c, "up"]);
    add(&c, &c_addr, &in_c);
    in_ns(&c, &["ip", "link", "set", &in_c, "up"]);
    in_ns(&c, &["ip", ip, "route", "add", "default", "via", f.b_link]);
    if f.v6 {
        in_ns(
            &a,
            &[
                "ip",
                "-6",
                "addr",
                "add",
                "2001:db8:99::1/64",
                "dev",
                &tun_a,
                "nodad",
            ],
        );
        in_ns(
            &b,
            &[
                "ip",
                "-6",
                "addr",
                "add",
                "2001:db8:99::2/64",
                "dev",
                &tun_b,
                "nodad",
            ],
        );
        in_ns(
            &a,
            &[
                "ip",
                "-6",
                "route",
                "add",
                "2001:db8:20::/64",
                "dev",
                &tun_a,
            ],
        );
        in_ns(&b, &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    } else {
        in_ns(&b, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    }
    // Software checksums on B's way out: the capture in C then holds what B's kernel computed
    // from our virtio header, not a partial checksum handed along.
    in_ns(&b, &["ethtool", "-K", &to_c, "tx", "off"]);
    host_gro(&b, &wire_b);
    // The veth hands frames to its peer's NAPI (and so GRO) only while the sending end has no
    // TSO (`veth_skb_is_eligible_for_gro`), as between two NICs.
    in_ns(&a, &["ethtool", "-K", &wire_a, "tso", "off"]);
    let reached = wait_for(Duration::from_secs(10), Duration::from_millis(200), || {
        output(&mut cmd(
            "ip",
            &["netns", "exec", &a, "ping", ip, "-c1", "-W1", f.c],
        ))
        .status
        .success()
        .then_some(())
    });
    assert!(
        reached.is_some(),
        "no ping from A to C through the tunnel{}",
        lab.logs()
    );

    let file = lab.dir.join("c.pcap");
    let file_arg = file.to_string_lossy().into_owned();
    let port = IPERF_PORT.to_string();
    // Only A → C: C's own segments are captured before its veth checksums them.
    let mut tcpdump = cmd(
        "ip",
        &[
            "netns", "exec", &c, "tcpdump", "-Z", "root", "-U", "-n", "-i", &in_c, "-c", "20000",
            "-w", &file_arg, "tcp", "port", &port, "and", "dst", "host", f.c,
        ],
    );
    let mut tcpdump = tcpdump
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tcpdump");
    std::thread::sleep(Duration::from_secs(1));
    let mut server = cmd(
        "ip",
        &[
            "netns", "exec", &c, "iperf3", "-s", "-1", "-B", f.c, "-p", &port,
        ],
    );
    let mut server = server
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("iperf3 server");
    std::thread::sleep(Duration::from_millis(500));
    let client = output(&mut cmd(
        "ip",
        &[
            "netns",
            "exec",
            &a,
            "iperf3",
            "-c",
            f.c,
            "-p",
            &port,
            "-t",
            "3",
            "-P",
            "2",
            "-J",
            "--connect-timeout",
            "3000",
        ],
    ));
    let _ = server.wait();
    std::thread::sleep(Duration::from_millis(500));
    let _ = tcpdump.kill();
    let _ = tcpdump.wait();
    let report: serde_json::Value =
        serde_json::from_slice(&client.stdout).unwrap_or(serde_json::Value::Null);
    let (bytes, bps) = common::iperf_received(&report);

    let m = lab.metrics(Side::B);
    let coalesced = m.metric_or_zero("magictunnel_gre_gro_packets_total", &[]);
    eprintln!(
        "{:.2} Gbit/s, {bytes} bytes; B: {coalesced} coalesced GRE packets, oversized drops {}",
        bps / 1e9,
        m.drops("oversized")
    );
    assert!(
        coalesced >= 50.0,
        "B's GRO coalesced nothing ({coalesced}): the test did not test it{}",
        lab.logs()
    );
    assert_eq!(m.drops("oversized"), 0.0, "coalesced packets dropped");
    assert_eq!(m.drops("tun_write_error"), 0.0, "the TUN refused a packet");
    assert!(
        bytes > 20e6,
        "only {bytes} bytes through: {}",
        report["end"]["sum_sent"]
    );

    // Every data segment C received: no longer than the tunnel MTU, TCP (and IPv4) checksums
    // valid (tshark's status 1 is good; IPv6 has no header checksum).
    let mut fields = vec!["tcp.checksum.status"];
    let (length, v6_header) = if f.v6 {
        ("ipv6.plen", 40)
    } else {
        fields.push("ip.checksum.status");
        ("ip.len", 0)
    };
    let mut args = vec![
        "-r",
        &file_arg,
        "-o",
        "tcp.check_checksum:TRUE",
        "-o",
        "ip.check_checksum:TRUE",
        "-Y",
        "tcp.len > 0",
        "-T",
        "fields",
        "-e",
        length,
    ];
    for field in &fields {
        args.extend(["-e", field]);
    }
    let checked = run_ok(&mut cmd("tshark", &args));
    let good = vec!["1"; fields.len()].join("/");
    let segments: Vec<(usize, String)> = checked
        .lines()
        .filter_map(|l| {
            let mut columns = l.split('\t');
            let len = columns.next()?.parse::<usize>().ok()? + v6_header;
            Some((len, columns.collect::<Vec<_>>().join("/")))
        })
        .collect();
    assert!(
        segments.len() >= 1000,
        "only {} data segments captured in C",
        segments.len()
    );
    let longest = segments.iter().map(|s| s.0).max().unwrap_or(0);
    assert!(
        longest <= mtu,
        "a segment of {longest} bytes left B (MTU {mtu})"
    );
    let bad: Vec<_> = segments.iter().filter(|s| s.1 != good).collect();
    assert!(
        bad.is_empty(),
        "{} of {} segments without good checksums (tshark status {good}): {:?}",
        bad.len(),
        segments.len(),
        &bad[..bad.len().min(5)]
    );
    eprintln!(
        "C: {} data segments, longest {longest} bytes, all checksums good",
        segments.len()
    );
}
