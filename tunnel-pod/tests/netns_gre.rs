//! The GRE dataplane of `tunnel-pod`, end to end between two network namespaces.
//!
//! Needs root, `ip`, `curl`, `tcpdump`, `tshark`, `iperf3`, `ss` and Debian's `/usr/bin/python3`
//! with scapy. Every test is ignored by default; run them with
//!
//! ```text
//! cargo test -p magictunnel-tunnel-pod --test netns_gre -- --ignored --test-threads=1
//! ```
//!
//! The lab (see `common`): namespaces A (203.0.113.1, tunnel 10.99.0.0/31) and B (203.0.113.2,
//! tunnel 10.99.0.1/31) joined by a veth pair, one tunnel-pod in each.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::{
    Lab, LabOptions, Metrics, Mss, PYTHON, RECEIVE_DROP_REASONS, Side, tshark_fields,
    tshark_number, wait_for,
};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/gre_frames.py");
const KEY: u32 = 1001;

fn started_pair(adjust: impl Fn(Side, &mut common::GreConfig), extra_args: &[&str]) -> Lab {
    let mut lab = Lab::new(LabOptions::default());
    lab.start_both(adjust, extra_args);
    lab.wait_ready(&Side::BOTH);
    lab
}

/// The harness itself (no root needed): a series that is absent is an error, not 0.
#[test]
fn an_absent_metric_series_is_an_error_not_zero() {
    let page = "# TYPE magictunnel_tunnel_drops counter\n\
                magictunnel_tunnel_drops_total{reason=\"bad_icv\"} 0\n\
                magictunnel_tunnel_packets_total{direction=\"ingress\"} 7\n";
    let m = Metrics::parse(page);
    assert_eq!(m.drops("bad_icv"), 0.0);
    assert_eq!(m.packets("ingress"), 7.0);
    let err = m
        .try_get("magictunnel_tunnel_drops_total", &[("reason", "replayed")])
        .expect_err("an absent series is an error");
    assert!(err.contains("replayed") && err.contains("bad_icv"), "{err}");
    assert!(
        m.try_get(
            "magictunnel_tunnel_packets_total",
            &[("direction", "egress")]
        )
        .is_err()
    );
    let absent = std::panic::catch_unwind(|| m.drops("replayed"));
    assert!(absent.is_err(), "an absent series read as {absent:?}");
    assert_eq!(
        m.metric_or_zero("magictunnel_tunnel_drops_total", &[("reason", "replayed")]),
        0.0
    );
}

#[test]
#[ignore = "needs root and network namespaces; run by make netns-test"]
fn ping_and_tcp_through_the_tunnel() {
    let mut lab = started_pair(|_, _| {}, &[]);
    let (a0, b0) = (lab.metrics(Side::A), lab.metrics(Side::B));

    let ping = lab.ping_through(Side::A, 5);
    assert!(
        ping.status.success(),
        "ping through the tunnel failed:\n{}{}",
        String::from_utf8_lossy(&ping.stdout),
        lab.logs()
    );

    let report = lab.iperf(Side::B, 2, 1);
    let sent = report["end"]["sum_sent"]["bytes"].as_f64().unwrap_or(0.0);
    let received = report["end"]["sum_received"]["bytes"]
        .as_f64()
        .unwrap_or(0.0);
    let bps = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    eprintln!(
        "iperf3 A→B through GRE: {:.2} Gbit/s, {sent} bytes sent",
        bps / 1e9
    );
    assert!(received > 1e6, "iperf3 moved only {received} bytes");

    let (a1, b1) = (lab.metrics(Side::A), lab.metrics(Side::B));
    let d = |after: &Metrics, before: &Metrics, f: fn(&Metrics, &str) -> f64, dir: &str| {
        f(after, dir) - f(before, dir)
    };
    let a_egress_bytes = d(&a1, &a0, Metrics::bytes, "egress");
    let b_ingress_bytes = d(&b1, &b0, Metrics::bytes, "ingress");
    let a_egress_packets = d(&a1, &a0, Metrics::packets, "egress");
    let a_ingress_packets = d(&a1, &a0, Metrics::packets, "ingress");
    let b_egress_packets = d(&b1, &b0, Metrics::packets, "egress");
    let b_ingress_packets = d(&b1, &b0, Metrics::packets, "ingress");
    eprintln!(
        "A egress {a_egress_packets} pkts / {a_egress_bytes} B, A ingress {a_ingress_packets}; \
         B ingress {b_ingress_packets} pkts / {b_ingress_bytes} B, B egress {b_egress_packets}"
    );
    // The TCP payload alone is `sent` bytes; every counted byte count includes at least that.
    assert!(
        a_egress_bytes >= sent,
        "A egress bytes rose by {a_egress_bytes}, iperf3 sent {sent}"
    );
    assert!(
        b_ingress_bytes >= received,
        "B ingress bytes rose by {b_ingress_bytes}, iperf3 received {received}"
    );
    assert!(a_egress_packets >= 5.0 && b_ingress_packets >= 5.0);
    assert!(a_ingress_packets >= 5.0 && b_egress_packets >= 5.0);

    // The metric families of the contract are all there.
    for (name, labels) in [
        ("magictunnel_tunnel_packets_total", ("direction", "egress")),
        ("magictunnel_tunnel_packets_total", ("direction", "ingress")),
        ("magictunnel_tunnel_bytes_total", ("direction", "egress")),
        ("magictunnel_tunnel_bytes_total", ("direction", "ingress")),
        ("magictunnel_health_state", ("state", "unknown")),
        ("magictunnel_health_state", ("state", "healthy")),
        ("magictunnel_health_state", ("state", "degraded")),
        ("magictunnel_health_state", ("state", "down")),
        ("magictunnel_probes_total", ("result", "sent")),
        ("magictunnel_probes_total", ("result", "ok")),
        ("magictunnel_probes_total", ("result", "lost")),
    ] {
        assert!(
            a1.has(name, &[labels]),
            "/metrics has no {name}{{{}=\"{}\"}}",
            labels.0,
            labels.1
        );
    }
    assert!(a1.has("magictunnel_probe_rtt_seconds_count", &[]));
    assert!(a1.has("magictunnel_probes_reflected_total", &[]));
    // Probes share the link with iperf3: a few may be lost, so degraded is fine here.
    let state = a1.health_state();
    assert!(
        matches!(state.as_deref(), Some("healthy" | "degraded")),
        "health of A after the transfer: {state:?}"
    );
}

#[test]
#[ignore = "needs root and network namespaces; run by make netns-test"]
fn routes_and_device_exist_while_running_and_go_on_sigterm() {
    let mut lab = started_pair(|_, _| {}, &[]);
    let tun = lab.node(Side::A).tun.clone();

    let route = lab.exec_ok(Side::A, "ip", &["-o", "route", "show", "10.20.0.0/24"]);
    assert!(
        route.contains(&format!("dev {tun}")),
        "route 10.20.0.0/24 not on {tun}: {route:?}"
    );
    let route_b = lab.exec_ok(Side::B, "ip", &["-o", "route", "show", "10.10.0.0/24"]);
    assert!(
        route_b.contains(&format!("dev {}", lab.node(Side::B).tun)),
        "B: {route_b:?}"
    );
    let link = lab.exec_ok(Side::A, "ip", &["-o", "link", "show", "dev", &tun]);
    // 1476: the default MTU of GRE without a key.
    assert!(link.contains("mtu 1476"), "TUN MTU is not 1476: {link}");
    let addr = lab.exec_ok(Side::A, "ip", &["-o", "-4", "addr", "show", "dev", &tun]);
    assert!(
        addr.contains("10.99.0.0/31"),
        "TUN has no 10.99.0.0/31: {addr}"
    );

    let stopped = lab.stop(Side::A, Duration::from_secs(5));
    eprintln!("A stopped in {:?}: {:?}", stopped.elapsed, stopped.status);
    match stopped.status {
        Some(s) if s.success() => {}
        other => panic!(
            "tunnel-pod did not exit 0 within 5 s of SIGTERM: {other:?}\n{}",
            stopped.log
        ),
    }
    let route = lab.exec_ok(Side::A, "ip", &["-o", "route", "show", "10.20.0.0/24"]);
    assert!(
        route.trim().is_empty(),
        "route left behind after exit: {route}"
    );
    let link = lab.exec(Side::A, "ip", &["link", "show", "dev", &tun]);
    assert!(
        !link.status.success(),
        "TUN {tun} left behind after exit: {}",
        String::from_utf8_lossy(&link.stdout)
    );

    let stopped = lab.stop(Side::B, Duration::from_secs(5));
    assert!(
        stopped.status.is_some_and(|s| s.success()),
        "B: {:?}\n{}",
        stopped.status,
        stopped.log
    );
}

#[test]
#[ignore = "needs root and network namespaces; run by make netns-test"]
fn tshark_dissects_gre_with_configured_ttl_and_key() {
    let mut lab = started_pair(
        |side, c| {
            c.key = Some(KEY);
            if side == Side::A {
                c.ttl = 77;
            }
        },
        &[],
    );
    let veth = lab.node(Side::A).veth.clone();
    let capture = lab.capture(Side::A, &veth, 30, "ip proto 47");
    let ping = lab.ping_through(Side::A, 10);
    assert!(
        ping.status.success(),
        "ping through the tunnel failed:\n{}",
        lab.logs()
    );
    let pcap = lab.finish_capture(capture, Duration::from_secs(10));

    let rows = tshark_fields(
        &pcap,
        "ip.proto == 47",
        &[
            "ip.src",
            "ip.ttl",
            "gre.flags.checksum",
            "gre.flags.routing",
            "gre.flags.key",
            "gre.flags.sequence_number",
            "gre.flags.version",
            "gre.proto",
            "gre.key",
            "icmp.type",
        ],
    );
    assert!(rows.len() >= 20, "only {} GRE frames captured", rows.len());
    let (mut from_a, mut from_b, mut echo_requests_from_a, mut echo_replies_from_b) = (0, 0, 0, 0);
    for row in &rows {
        let f = |i: usize| row.get(i).map_or("", String::as_str);
        let expected_ttl = match f(0) {
            "203.0.113.1" => {
                from_a += 1;
                echo_requests_from_a += usize::from(f(9) == "8");
                77
            }
            "203.0.113.2" => {
                from_b += 1;
                echo_replies_from_b += usize::from(f(9) == "0");
                64
            }
            other => panic!("GRE frame from unexpected source {other}: {row:?}"),
        };
        assert_eq!(
            tshark_number(f(1)),
            Some(expected_ttl),
            "outer TTL: {row:?}"
        );
        assert_eq!(
            [f(2), f(3), f(4), f(5), f(6)],
            ["0", "0", "1", "0", "0"],
            "GRE flags C R K S Ver: {row:?}"
        );
        assert_eq!(tshark_number(f(7)), Some(0x0800), "GRE protocol: {row:?}");
        assert_eq!(
            tshark_number(f(8)),
            Some(u64::from(KEY)),
            "GRE key: {row:?}"
        );
    }
    eprintln!(
        "{} frames: {from_a} from A (ttl 77), {from_b} from B (ttl 64); \
         {echo_requests_from_a} echo requests A→B, {echo_replies_from_b} echo replies B→A",
        rows.len()
    );
    assert!(from_a > 0 && from_b > 0);
    assert!(
        echo_requests_from_a > 0,
        "no ICMP echo request from A inside GRE"
    );
    assert!(
        echo_replies_from_b > 0,
        "no ICMP echo reply from B inside GRE"
    );
}

#[test]
#[ignore = "needs root and network namespaces; run by make netns-test"]
fn mss_clamped_on_syn_and_syn_ack_in_both_directions() {
    // Only A clamps: B's SYN-ACK leaves B unclamped (the kernel's 1436) and must reach A's
    // kernel clamped by A on ingress; A's SYN leaves A's kernel with 1436 and must reach B
    // clamped by A on egress.
    let mut lab = started_pair(
        |side, c| {
            c.mss = match side {
                Side::A => Mss::Fixed(1300),
                Side::B => Mss::Off,
            }
        },
        &[],
    );
    let (tun_a, tun_b) = (lab.node(Side::A).tun.clone(), lab.node(Side::B).tun.clone());
    let syn_filter = "tcp[tcpflags] & tcp-syn != 0";
    let cap_a = lab.capture(Side::A, &tun_a, 2, syn_filter);
    let cap_b = lab.capture(Side::B, &tun_b, 2, syn_filter);
    lab.iperf(Side::B, 1, 1);
    let pcap_a = lab.finish_capture(cap_a, Duration::from_secs(5));
    let pcap_b = lab.finish_capture(cap_b, Duration::from_secs(5));

    let mss = |pcap: &std::path::Path| -> BTreeMap<&'static str, Option<u64>> {
        let rows = tshark_fields(
            pcap,
            "tcp.flags.syn == 1",
            &["tcp.flags.ack", "tcp.options.mss_val"],
        );
        let mut m = BTreeMap::new();
        for row in rows {
            let kind = if row.first().map(String::as_str) == Some("1") {
                "syn-ack"
            } else {
                "syn"
            };
            m.entry(kind)
                .or_insert_with(|| row.get(1).and_then(|v| tshark_number(v)));
        }
        m
    };
    let (seen_a, seen_b) = (mss(&pcap_a), mss(&pcap_b));
    eprintln!("MSS on A's TUN: {seen_a:?}; on B's TUN: {seen_b:?}");
    // What the kernels put in (proves the clamp is visible: they would send 1436).
    assert_eq!(seen_a.get("syn"), Some(&Some(1436)), "A's kernel SYN");
    assert_eq!(
        seen_b.get("syn-ack"),
        Some(&Some(1436)),
        "B's kernel SYN-ACK"
    );
    // What the other kernel receives after A's tunnel-pod.
    assert_eq!(
        seen_b.get("syn"),
        Some(&Some(1300)),
        "SYN A→B not clamped on A's egress"
    );
    assert_eq!(
        seen_a.get("syn-ack"),
        Some(&Some(1300)),
        "SYN-ACK B→A not clamped on A's ingress"
    );
}

/// One row of gre_frames.py's JSON: a variant and what the receiver must do with it.
#[derive(Debug, Clone)]
struct Variant {
    name: String,
    description: String,
    frames: f64,
    expect: String,
    reasons: Vec<String>,
}

fn parse_variants(json: &str) -> Vec<Variant> {
    let v: serde_json::Value = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("gre_frames.py printed no JSON ({e}): {json}"));
    let results = v["results"].as_array().cloned().unwrap_or_default();
    results
        .iter()
        .map(|r| Variant {
            name: r["variant"].as_str().unwrap_or_default().to_string(),
            description: r["description"].as_str().unwrap_or_default().to_string(),
            frames: r["frames"].as_f64().unwrap_or(0.0),
            expect: r["expect"].as_str().unwrap_or_default().to_string(),
            reasons: r["reasons"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}

/// Runs gre_frames.py in B, aimed at A, for the receiver config `key` and `mtu`.
struct FrameScript {
    args: Vec<String>,
}

impl FrameScript {
    fn new(lab: &Lab, key: Option<u32>, mtu: u16) -> FrameScript {
        let (a, b) = (lab.node(Side::A), lab.node(Side::B));
        let mac = lab.exec_ok(
            Side::A,
            "cat",
            &[&format!("/sys/class/net/{}/address", a.veth)],
        );
        let mut args = vec![
            SCRIPT.to_string(),
            "--iface".into(),
            b.veth.clone(),
            "--src".into(),
            b.outer.to_string(),
            "--dst".into(),
            a.outer.to_string(),
            "--dst-mac".into(),
            mac.trim().to_string(),
            "--spoof-src".into(),
            "203.0.113.3".into(),
            "--inner-src".into(),
            b.tunnel_addr.to_string(),
            "--inner-dst".into(),
            a.tunnel_addr.to_string(),
            "--mtu".into(),
            mtu.to_string(),
        ];
        if let Some(k) = key {
            args.extend(["--key".to_string(), k.to_string()]);
        }
        FrameScript { args }
    }

    fn list(&self) -> Vec<Variant> {
        let mut c = common::cmd(PYTHON, &[]);
        c.args(&self.args).args(["--list", "all"]);
        parse_variants(&common::run_ok(&mut c))
    }

    fn send(&self, lab: &Lab, variants: &[&str], extra: &[&str]) -> Vec<Variant> {
        let mut args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        args.extend(extra);
        args.extend(variants);
        parse_variants(&lab.exec_ok(Side::B, PYTHON, &args))
    }
}

/// Counter changes on the receiver caused by one variant.
#[derive(Debug, Default)]
struct Delta {
    ingress: f64,
    drops: BTreeMap<String, f64>,
}

impl Delta {
    fn between(before: &Metrics, after: &Metrics) -> Delta {
        let reasons: BTreeSet<String> = before
            .drop_reasons()
            .into_iter()
            .chain(after.drop_reasons())
            .chain(RECEIVE_DROP_REASONS.iter().map(|r| r.to_string()))
            .collect();
        let drops = reasons
            .into_iter()
            .map(|r| {
                let d = after.drops(&r) - before.drops(&r);
                (r, d)
            })
            .filter(|(_, d)| *d != 0.0)
            .collect();
        Delta {
            ingress: after.packets("ingress") - before.packets("ingress"),
            drops,
        }
    }

    fn dropped_as(&self, reasons: &[String]) -> f64 {
        reasons
            .iter()
            .map(|r| self.drops.get(r).copied().unwrap_or(0.0))
            .sum()
    }

    /// Receive-side drops under reasons other than `allowed`. Send-side drops are left out:
    /// the receiver's kernel answers some crafted packets (ICMP port unreachable) through the
    /// tunnel, B's kernel, which has no GRE listener, answers those with ICMP protocol
    /// unreachable, and the connected raw socket reports that as an error on its next send.
    fn other_drops(&self, allowed: &[String]) -> BTreeMap<&str, f64> {
        self.drops
            .iter()
            .filter(|(r, _)| !allowed.contains(r))
            .map(|(r, d)| (r.as_str(), *d))
            .collect()
    }

    /// Has everything the variant announces been counted yet?
    fn complete(&self, v: &Variant) -> bool {
        match v.expect.as_str() {
            "accept" => self.ingress >= v.frames,
            "drop" => self.dropped_as(&v.reasons) >= v.frames,
            _ => false, // nothing to wait for: the caller waits a fixed time
        }
    }

    fn verdict(&self, v: &Variant) -> Result<(), String> {
        let none: [String; 0] = [];
        let problem = match v.expect.as_str() {
            "accept" if self.ingress != v.frames => {
                Some(format!("{} of {} decapsulated", self.ingress, v.frames))
            }
            "accept" if !self.other_drops(&none).is_empty() => Some("drops counted".into()),
            "drop" if self.ingress != 0.0 => Some(format!("{} decapsulated", self.ingress)),
            "drop" if self.dropped_as(&v.reasons) != v.frames => Some(format!(
                "{} of {} dropped as {:?}",
                self.dropped_as(&v.reasons),
                v.frames,
                v.reasons
            )),
            "drop" if !self.other_drops(&v.reasons).is_empty() => {
                Some("drops under other reasons".into())
            }
            "ignore" if self.ingress != 0.0 => Some(format!("{} decapsulated", self.ingress)),
            "ignore" if !self.other_drops(&v.reasons).is_empty() => {
                Some("drops under other reasons".into())
            }
            "filtered" if self.ingress != 0.0 => Some(format!("{} decapsulated", self.ingress)),
            "filtered" if !self.other_drops(&none).is_empty() => {
                Some("counted in userspace: the kernel filter let them through".into())
            }
            "accept" | "drop" | "ignore" | "filtered" | "any" => None,
            other => Some(format!("unknown expectation {other:?}")),
        };
        match problem {
            None => Ok(()),
            Some(p) => Err(p),
        }
    }
}

/// The crafted inner packets that reached the receiver's TUN device: UDP to the discard port
/// (every inner packet gre_frames.py builds; the kernel's ICMP answers are not UDP).
const INNER_ON_TUN: &str = "udp dst port 9";

/// Sends one variant and returns the counter changes once they have settled, and how many of
/// its inner packets a capture on A's TUN saw.
fn send_and_measure(lab: &mut Lab, script: &FrameScript, name: &str) -> (Variant, Delta, usize) {
    let tun = lab.node(Side::A).tun.clone();
    // At most 64 of them: more than any variant sends, so that an extra copy shows too.
    let capture = lab.capture(Side::A, &tun, 64, INNER_ON_TUN);
    let before = lab.metrics(Side::A);
    let sent = script.send(lab, &[name], &[]);
    let variant = sent
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("gre_frames.py sent nothing for {name}"));
    let settle = if matches!(variant.expect.as_str(), "accept" | "drop") {
        Duration::from_secs(3)
    } else {
        Duration::from_millis(500)
    };
    let start = Instant::now();
    let _ = wait_for(settle, Duration::from_millis(100), || {
        Delta::between(&before, &lab.metrics(Side::A))
            .complete(&variant)
            .then_some(())
    });
    // A little longer, so that extra counts (a frame counted twice) show up too.
    sleep(Duration::from_millis(150).min(settle.saturating_sub(start.elapsed())));
    let delta = Delta::between(&before, &lab.metrics(Side::A));
    // The TUN write follows the count: give the last packet a moment to show in the capture.
    if variant.expect == "accept" {
        let _ = wait_for(Duration::from_secs(2), Duration::from_millis(50), || {
            let seen = std::fs::metadata(&capture.file).map_or(0, |m| m.len());
            // pcap file header 24 bytes, each record 16 + the packet (≥ 28 bytes).
            (seen >= 24 + variant.frames as u64 * 44).then_some(())
        });
        sleep(Duration::from_millis(100));
    }
    let pcap = lab.finish_capture(capture, Duration::ZERO);
    let on_tun = common::pcap_packets(&pcap).len();
    (variant, delta, on_tun)
}

/// What a capture on the TUN must show for a variant: every frame of an accepted one, nothing
/// of a dropped or ignored one.
fn tun_verdict(v: &Variant, on_tun: usize) -> Result<(), String> {
    match v.expect.as_str() {
        "accept" if on_tun as f64 != v.frames => {
            Err(format!("{on_tun} of {} inner packets on the TUN", v.frames))
        }
        "drop" | "ignore" | "filtered" if on_tun != 0 => {
            Err(format!("{on_tun} inner packets on the TUN"))
        }
        _ => Ok(()),
    }
}

/// Only A runs (health checks off: ready as soon as its transport is open); B's namespace is the
/// customer router, played by gre_frames.py. The veth MTU is 9000 so that a frame carrying an
/// inner packet larger than the tunnel MTU is delivered unfragmented.
fn crafted_frames(key: Option<u32>) {
    let mut lab = Lab::new(LabOptions { veth_mtu: 9000 });
    let mut config = lab.config(Side::A);
    config.key = key;
    config.health_rate = None;
    lab.start(Side::A, &config, &[]);
    lab.wait_ready(&[Side::A]);
    let script = FrameScript::new(&lab, key, config.effective_mtu());

    let variants = script.list();
    assert!(variants.len() >= 20, "gre_frames.py lists {variants:?}");
    let mut table = String::new();
    let mut failures = Vec::new();
    for planned in &variants {
        let (variant, delta, on_tun) = send_and_measure(&mut lab, &script, &planned.name);
        let verdict = delta
            .verdict(&variant)
            .and_then(|()| tun_verdict(&variant, on_tun));
        let _ = writeln!(
            table,
            "{:<24} {:>2} × expect {:<6} {:<34} → ingress {:>3}, on TUN {:>2}, drops {:?} {}",
            variant.name,
            variant.frames,
            variant.expect,
            format!("{:?}", variant.reasons),
            delta.ingress,
            on_tun,
            delta.drops,
            match &verdict {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("FAIL: {e}"),
            }
        );
        if let Err(e) = verdict {
            failures.push(format!("{} ({}): {e}", variant.name, variant.description));
        }
    }
    eprintln!("receiver key {key:?}:\n{table}");
    assert!(
        lab.exited(Side::A).is_none(),
        "tunnel-pod exited{}",
        lab.logs()
    );
    assert!(
        failures.is_empty(),
        "{} variant(s) handled wrongly:\n  {}\n\n{table}{}",
        failures.len(),
        failures.join("\n  "),
        lab.logs()
    );
}

#[test]
#[ignore = "needs root and network namespaces; run by make netns-test"]
fn crafted_frames_receiver_with_key() {
    crafted_frames(Some(KEY));
}

#[test]
#[ignore = "needs root and network namespaces; run by make netns-test"]
fn crafted_frames_receiver_without_key() {
    crafted_frames(None);
}

#[test]
#[ignore = "needs root and network namespaces; run by make netns-test"]
fn random_garbage_does_not_hurt_the_receiver() {
    let mut lab = Lab::new(LabOptions { veth_mtu: 9000 });
    let mut config = lab.config(Side::A);
    config.key = Some(KEY);
    config.health_rate = None;
    lab.start(Side::A, &config, &[]);
    lab.wait_ready(&[Side::A]);
    let script = FrameScript::new(&lab, Some(KEY), config.effective_mtu());

    let before = lab.metrics(Side::A);
    let start = Instant::now();
    let sent = script.send(&lab, &["garbage"], &["--garbage-count", "10000"]);
    let frames = sent.first().map_or(0.0, |v| v.frames);
    eprintln!("sent {frames} garbage frames in {:?}", start.elapsed());
    // Let the receiver work through its socket buffer: counters unchanged for 300 ms.
    let mut last = lab.metrics(Side::A);
    let quiet = wait_for(Duration::from_secs(15), Duration::from_millis(300), || {
        let now = lab.metrics(Side::A);
        let d = Delta::between(&last, &now);
        last = now;
        (d.ingress == 0.0 && d.drops.is_empty()).then_some(())
    });
    assert!(
        quiet.is_some(),
        "counters still moving 15 s after the garbage"
    );

    assert!(
        lab.exited(Side::A).is_none(),
        "tunnel-pod died on garbage: {:?}{}",
        lab.exited(Side::A),
        lab.logs()
    );
    assert_eq!(
        lab.status(Side::A, "/healthz"),
        Some(200),
        "/healthz after garbage{}",
        lab.logs()
    );
    let delta = Delta::between(&before, &lab.metrics(Side::A));
    let accounted = delta.ingress + delta.drops.values().sum::<f64>();
    eprintln!(
        "garbage: {} decapsulated, drops {:?} ({accounted} of {frames} counted; a shortfall is \
         frames lost in the socket buffer)",
        delta.ingress, delta.drops
    );
    assert!(
        accounted > 0.0 && accounted <= frames,
        "{accounted} counted for {frames} frames"
    );

    // The dataplane still works.
    let (variant, delta, on_tun) = send_and_measure(&mut lab, &script, "key");
    assert_eq!(
        delta
            .verdict(&variant)
            .and_then(|()| tun_verdict(&variant, on_tun)),
        Ok(()),
        "valid frames after the garbage: {delta:?}, {on_tun} on the TUN{}",
        lab.logs()
    );
}

#[test]
#[ignore = "needs root and network namespaces; run by make netns-test"]
fn health_goes_down_when_the_path_breaks_and_recovers() {
    let lab = started_pair(|_, c| c.health_rate = Some("High"), &["--loss-window", "3"]);
    let mut path: Vec<(Duration, String)> = Vec::new();
    let t0 = Instant::now();
    let observe = |lab: &Lab, path: &mut Vec<(Duration, String)>| -> String {
        let state = lab
            .metrics(Side::A)
            .health_state()
            .unwrap_or_else(|| "none".into());
        if path.last().map(|(_, s)| s) != Some(&state) {
            path.push((t0.elapsed(), state.clone()));
        }
        state
    };
    let show = |path: &[(Duration, String)]| -> String {
        path.iter()
            .map(|(t, s)| format!("{s}@{:.1}s", t.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" → ")
    };
    let poll = Duration::from_millis(200);

    let healthy = wait_for(Duration::from_secs(20), poll, || {
        (observe(&lab, &mut path) == "healthy").then_some(())
    });
    assert!(
        healthy.is_some(),
        "A never became healthy: {}{}",
        show(&path),
        lab.logs()
    );

    let veth_b = lab.node(Side::B).veth.clone();
    lab.exec_ok(Side::B, "ip", &["link", "set", &veth_b, "down"]);
    let broken = Instant::now();
    let down = wait_for(Duration::from_secs(6), poll, || {
        (observe(&lab, &mut path) == "down").then_some(())
    });
    assert!(
        down.is_some(),
        "A not down within 6 s of the path breaking: {}{}",
        show(&path),
        lab.logs()
    );
    let down_after = broken.elapsed();
    assert_eq!(
        lab.status(Side::A, "/readyz"),
        Some(503),
        "/readyz while down"
    );

    lab.exec_ok(Side::B, "ip", &["link", "set", &veth_b, "up"]);
    let repaired = Instant::now();
    let recovered = wait_for(Duration::from_secs(12), poll, || {
        (observe(&lab, &mut path) == "healthy").then_some(())
    });
    let path_text = show(&path);
    eprintln!(
        "health of A: {path_text} (down {down_after:?} after the break, healthy {:?} after \
         the repair)",
        repaired.elapsed()
    );
    assert!(
        recovered.is_some(),
        "A not healthy again within 12 s of the repair: {path_text}{}",
        lab.logs()
    );
    assert_eq!(
        lab.status(Side::A, "/readyz"),
        Some(200),
        "/readyz after recovery"
    );

    let (a, b) = (lab.metrics(Side::A), lab.metrics(Side::B));
    eprintln!(
        "A probes sent {} ok {} lost {}; rtt samples {}; B reflected {}",
        a.probes("sent"),
        a.probes("ok"),
        a.probes("lost"),
        a.get("magictunnel_probe_rtt_seconds_count", &[]),
        b.get("magictunnel_probes_reflected_total", &[])
    );
    assert!(a.probes("lost") >= 3.0, "lost probes were not counted");
    assert!(a.probes("ok") > 0.0);
    assert!(a.get("magictunnel_probe_rtt_seconds_count", &[]) > 0.0);
    assert!(
        b.get("magictunnel_probes_reflected_total", &[]) > 0.0,
        "B reflected none of A's probes"
    );
}

/// Unidirectional probes leave through the tunnel and return over the "Internet": the peer
/// decapsulates them and its kernel forwards them to our endpoint address, where the raw ICMP
/// socket sees them. With forwarding off at the peer they never return; with it on, they do.
/// Both styles.
#[test]
#[ignore = "needs root and network namespaces; run by make netns-test"]
fn unidirectional_probes_return_outside_the_tunnel() {
    for style in ["Reply", "Request"] {
        let mut lab = Lab::new(LabOptions::default());
        // A forwarding router that is not the target's owner: the target is an address on B's
        // loopback for request style (B answers), and a foreign source for reply style.
        let target = std::net::Ipv4Addr::new(198, 51, 100, 99);
        if style == "Request" {
            lab.exec_ok(
                Side::B,
                "ip",
                &["addr", "add", "198.51.100.99/32", "dev", "lo"],
            );
        }
        lab.exec_ok(Side::B, "sysctl", &["-qw", "net.ipv4.ip_forward=0"]);
        lab.start_both(
            |side, c| {
                if side == Side::A {
                    c.health_type = style;
                    c.health_direction = "Unidirectional";
                    c.health_target = Some(target);
                } else {
                    c.health_rate = None;
                }
            },
            &["--loss-window", "3"],
        );
        lab.wait_ready(&[Side::B]);
        let state = |lab: &Lab| lab.metrics(Side::A).health_state().unwrap_or_default();
        if style == "Reply" {
            // Reply style needs the peer to route the packet on: nothing returns without it.
            let down = wait_for(Duration::from_secs(8), Duration::from_millis(200), || {
                (state(&lab) == "down").then_some(())
            });
            assert!(
                down.is_some(),
                "{style}: A should be down while B does not forward, is {}{}",
                state(&lab),
                lab.logs()
            );
            lab.exec_ok(Side::B, "sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        }
        let healthy = wait_for(Duration::from_secs(15), Duration::from_millis(200), || {
            (state(&lab) == "healthy").then_some(())
        });
        assert!(
            healthy.is_some(),
            "{style}: A never healthy, is {}{}",
            state(&lab),
            lab.logs()
        );
        // The returns did not come through the tunnel: B's tunnel-pod carried none back.
        let b = lab.metrics(Side::B);
        assert_eq!(
            b.get("magictunnel_probes_reflected_total", &[]),
            0.0,
            "{style}"
        );
        let returned = wait_for(Duration::from_secs(5), Duration::from_millis(100), || {
            let ok = lab
                .metrics(Side::A)
                .get("magictunnel_probes_total", &[("result", "ok")]);
            (ok >= 10.0).then_some(())
        });
        assert!(returned.is_some(), "{style}: fewer than 10 probes returned");
    }
}

/// A second tunnel-pod on one side, beside the lab's own (which has `key`): same local and
/// customer endpoints, `twin_key`, inner /31 10.99.1.x, HTTP port 9181, its own TUN, no route.
/// Started as a background process of the lab, so the lab stops it.
struct Twin {
    side: Side,
    http_port: u16,
    tunnel_addr: std::net::Ipv4Addr,
}

impl Twin {
    fn start(lab: &mut Lab, side: Side, twin_key: u32) -> Twin {
        let mut config = lab.config(side);
        let host = match side {
            Side::A => 0,
            Side::B => 1,
        };
        let tunnel_addr = std::net::Ipv4Addr::new(10, 99, 1, host);
        config.name = format!("{}-twin", config.name);
        config.key = Some(twin_key);
        config.health_rate = None;
        config.routes = vec![];
        config.interface_address = format!("{tunnel_addr}/31");
        config.http_port = common::HTTP_PORT + 1;
        let path = lab.dir.join(format!("{}-twin.yaml", side.label()));
        std::fs::write(&path, config.to_yaml()).expect("write the twin's config");
        let tun = format!("{}t{}2", lab.name, side.label());
        assert!(tun.len() <= 15, "{tun}");
        let path = path.to_string_lossy().into_owned();
        lab.spawn(
            side,
            &format!("twin-{}", side.label()),
            common::TUNNEL_POD,
            &["run", "--config", &path, "--interface", &tun],
        );
        let twin = Twin {
            side,
            http_port: config.http_port,
            tunnel_addr,
        };
        let ready = wait_for(common::READY_TIMEOUT, Duration::from_millis(200), || {
            (twin.http(lab, "/readyz").0 == 200).then_some(())
        });
        assert!(
            ready.is_some(),
            "the twin on {side:?} is not ready{}",
            lab.logs()
        );
        twin
    }

    fn http(&self, lab: &Lab, path: &str) -> (u16, String) {
        let url = format!("http://127.0.0.1:{}{path}", self.http_port);
        let out = lab.exec(
            self.side,
            "curl",
            &["-s", "--max-time", "2", "-w", "\n%{http_code}", &url],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    fn metrics(&self, lab: &Lab) -> Metrics {
        match self.http(lab, "/metrics") {
            (200, body) => Metrics::parse(&body),
            other => panic!("twin /metrics: {other:?}{}", lab.logs()),
        }
    }
}

/// Receive-side drops of a metrics page, by reason, the non-zero ones.
fn receive_drops(m: &Metrics) -> BTreeMap<&'static str, f64> {
    RECEIVE_DROP_REASONS
        .iter()
        .map(|r| (*r, m.drops(r)))
        .filter(|(_, d)| *d != 0.0)
        .collect()
}

/// GRE twins: two tunnels with the same local and customer endpoints that differ only by key
/// (1 and 2), on both sides. Each tunnel-pod's kernel filter lets only its own key's frames
/// through: pings flow on both tunnels, crafted frames of key 1, key 2 and no key reach exactly
/// the pod they belong to (none for no key), and no pod counts a `key_mismatch` (without the
/// filter each would count every frame of its twin).
#[test]
#[ignore = "needs root and network namespaces; run by make netns-test"]
fn gre_twins_that_differ_by_key_each_receive_only_their_own_frames() {
    let mut lab = Lab::new(LabOptions::default());
    // No IPv6 on the TUNs: their router solicitations would be counted as ingress too.
    for side in Side::BOTH {
        lab.exec_ok(
            side,
            "sysctl",
            &[
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
        );
    }
    for side in Side::BOTH {
        let mut config = lab.config(side);
        config.key = Some(1);
        config.health_rate = None;
        lab.start(side, &config, &[]);
    }
    lab.wait_ready(&Side::BOTH);
    let twins = [
        Twin::start(&mut lab, Side::A, 2),
        Twin::start(&mut lab, Side::B, 2),
    ];
    let (a, b) = (lab.node(Side::A), lab.node(Side::B));
    let (a_tunnel, b_tunnel, b_twin) = (a.tunnel_addr, b.tunnel_addr, twins[1].tunnel_addr);

    // Traffic on both tunnels, both ways (ping's replies come back on the same tunnel).
    for (peer, label) in [(b_tunnel, "key 1"), (b_twin, "key 2")] {
        let out = lab.exec(
            Side::A,
            "ping",
            &["-c", "5", "-i", "0.2", "-W", "2", "-n", &peer.to_string()],
        );
        assert!(
            out.status.success(),
            "ping over the {label} tunnel failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            lab.logs()
        );
    }
    let pods = |lab: &Lab| {
        [
            ("A key 1", lab.metrics(Side::A)),
            ("A key 2", twins[0].metrics(lab)),
            ("B key 1", lab.metrics(Side::B)),
            ("B key 2", twins[1].metrics(lab)),
        ]
    };
    for (label, m) in pods(&lab) {
        eprintln!(
            "{label}: ingress {}, egress {}, drops {:?}",
            m.packets("ingress"),
            m.packets("egress"),
            receive_drops(&m)
        );
        assert!(m.packets("ingress") >= 5.0, "{label} received no traffic");
        assert_eq!(m.drops("key_mismatch"), 0.0, "{label}{}", lab.logs());
        assert!(
            receive_drops(&m).is_empty(),
            "{label}: {:?}",
            receive_drops(&m)
        );
    }

    // Crafted frames from B's address to A's: key 1, key 2, no key, a key nobody has.
    let mac = lab.exec_ok(
        Side::A,
        "cat",
        &[&format!("/sys/class/net/{}/address", a.veth)],
    );
    let (b_veth, b_outer, a_outer) = (b.veth.clone(), b.outer.to_string(), a.outer.to_string());
    let send = |lab: &Lab, key: Option<u32>, variant: &str, inner_dst: std::net::Ipv4Addr| {
        let inner_dst = inner_dst.to_string();
        let mut args = vec![
            SCRIPT,
            "--iface",
            &b_veth,
            "--src",
            &b_outer,
            "--dst",
            &a_outer,
            "--dst-mac",
            mac.trim(),
            "--inner-dst",
            &inner_dst,
            "--count",
            "5",
        ];
        let key = key.map(|k| k.to_string());
        if let Some(k) = &key {
            args.extend(["--key", k]);
        }
        args.push(variant);
        lab.exec_ok(Side::B, PYTHON, &args);
    };
    let twin_a = twins[0].tunnel_addr;
    // (key, variant, inner destination, ingress expected on A key 1 and A key 2)
    let cases: [(Option<u32>, &str, _, [f64; 2]); 4] = [
        (Some(1), "key", a_tunnel, [5.0, 0.0]),
        (Some(2), "key", twin_a, [0.0, 5.0]),
        (None, "plain", a_tunnel, [0.0, 0.0]),
        (Some(3), "key", a_tunnel, [0.0, 0.0]),
    ];
    for (key, variant, inner_dst, expected) in cases {
        let before = [lab.metrics(Side::A), twins[0].metrics(&lab)];
        send(&lab, key, variant, inner_dst);
        let settled = wait_for(Duration::from_secs(3), Duration::from_millis(100), || {
            let now = [lab.metrics(Side::A), twins[0].metrics(&lab)];
            (0..2)
                .all(|i| now[i].packets("ingress") - before[i].packets("ingress") >= expected[i])
                .then_some(())
        });
        // A little longer, so that frames delivered to the wrong pod show too.
        sleep(Duration::from_millis(300));
        let after = [lab.metrics(Side::A), twins[0].metrics(&lab)];
        for i in 0..2 {
            let got = after[i].packets("ingress") - before[i].packets("ingress");
            let drops = receive_drops(&after[i]);
            eprintln!(
                "variant {variant}, key {key:?} → A key {}: ingress +{got}, drops {drops:?}",
                i + 1
            );
            assert!(
                settled.is_some() || got == expected[i],
                "key {key:?}: pod {i}: {got}"
            );
            assert_eq!(
                got,
                expected[i],
                "frames with key {key:?} on A key {}",
                i + 1
            );
            assert!(drops.is_empty(), "A key {}: {drops:?}", i + 1);
        }
    }
    for side in Side::BOTH {
        assert!(
            lab.exited(side).is_none(),
            "a tunnel-pod exited{}",
            lab.logs()
        );
    }
}
