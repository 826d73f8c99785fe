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
//! for, and tshark validates each TCP checksum.
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

#[test]
#[ignore = "needs root, network namespaces and ethtool"]
fn host_coalesced_gre_reaches_the_tun_whole_and_leaves_in_mtu_sized_valid_segments() {
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
    let b = lab.node(Side::B).ns.clone();
    let wire_b = lab.node(Side::B).veth.clone();
    // C behind B: 10.20.0.0/24 is routed into the tunnel by A's config.
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
    in_ns(&b, &["ip", "addr", "add", "10.20.0.254/24", "dev", &to_c]);
    in_ns(&b, &["ip", "link", "set", &to_c, "up"]);
    in_ns(&b, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    // Software checksums on B's way out: the capture in C then holds what B's kernel computed
    // from our virtio header, not a partial checksum handed along.
    in_ns(&b, &["ethtool", "-K", &to_c, "tx", "off"]);
    in_ns(&c, &["ip", "addr", "add", "10.20.0.1/24", "dev", &in_c]);
    in_ns(&c, &["ip", "link", "set", &in_c, "up"]);
    in_ns(&c, &["ip", "route", "add", "default", "via", "10.20.0.254"]);
    host_gro(&b, &wire_b);
    // The veth hands frames to its peer's NAPI (and so GRO) only while the sending end has no
    // TSO (`veth_skb_is_eligible_for_gro`), as between two NICs.
    let (a, wire_a) = (lab.node(Side::A).ns.clone(), lab.node(Side::A).veth.clone());
    in_ns(&a, &["ethtool", "-K", &wire_a, "tso", "off"]);
    assert!(
        wait_for(Duration::from_secs(10), Duration::from_millis(200), || {
            output(&mut cmd(
                "ip",
                &[
                    "netns",
                    "exec",
                    &lab.node(Side::A).ns,
                    "ping",
                    "-c1",
                    "-W1",
                    "10.20.0.1",
                ],
            ))
            .status
            .success()
            .then_some(())
        })
        .is_some(),
        "no ping from A to C through the tunnel{}",
        lab.logs()
    );

    let file = lab.dir.join("c.pcap");
    let file_arg = file.to_string_lossy().into_owned();
    let port = IPERF_PORT.to_string();
    let mut tcpdump = cmd(
        "ip",
        &[
            "netns",
            "exec",
            &c,
            "tcpdump",
            "-Z",
            "root",
            "-U",
            "-n",
            "-i",
            &in_c,
            "-c",
            "20000",
            "-w",
            &file_arg,
            "tcp",
            "port",
            &port,
            "and",
            "dst",
            "10.20.0.1",
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
            "netns",
            "exec",
            &c,
            "iperf3",
            "-s",
            "-1",
            "-B",
            "10.20.0.1",
            "-p",
            &port,
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
            &lab.node(Side::A).ns,
            "iperf3",
            "-c",
            "10.20.0.1",
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

    // Every data segment C received (C's own are captured before its veth checksums them, so
    // only A → C is kept): no longer than the tunnel MTU, TCP and IPv4 checksums valid
    // (tshark's status 1 is good).
    let checked = run_ok(&mut cmd(
        "tshark",
        &[
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
            "ip.len",
            "-e",
            "tcp.checksum.status",
            "-e",
            "ip.checksum.status",
        ],
    ));
    let segments: Vec<(usize, String)> = checked
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let len = f.next()?.parse().ok()?;
            Some((len, format!("{}/{}", f.next()?, f.next()?)))
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
    let bad: Vec<_> = segments.iter().filter(|s| s.1 != "1/1").collect();
    assert!(
        bad.is_empty(),
        "{} of {} segments without good TCP/IPv4 checksums (tshark status 1/1): {:?}",
        bad.len(),
        segments.len(),
        &bad[..bad.len().min(5)]
    );
    eprintln!(
        "C: {} data segments, longest {longest} bytes, all checksums good",
        segments.len()
    );
}
