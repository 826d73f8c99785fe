//! Anycast replicas (issue #11) in the lab of [`magictunnel_e2e::anycast`]: two node namespaces
//! holding the same anycast address 203.0.113.50, a router steering the customer's traffic to
//! one of them, the customer (198.51.100.50, inner 10.234.0.1) behind it and a service
//! (10.236.0.1) behind both nodes.
//!
//! - GRE (no shared state needed): the same config in both nodes, a standalone GRE tunnel-pod
//!   at the customer. A path switch mid-stream loses nothing; the customer's health probes are
//!   answered by whichever node receives them.
//! - IPsec (the SAs shared through the Kubernetes API): a MagicTunnel with `replicas: 2` and a
//!   nodeSelector no node has, so its pods stay Pending; the lab runs `tunnel-pod run` for each
//!   replica in the node namespaces with the operator's config (from `<tunnel>-config`) and a
//!   token of the tunnel's ServiceAccount. strongSwan at the customer.
//!
//! Every test prints its figures (`--nocapture`). Needs root and `cargo build -p
//! magictunnel-tunnel-pod`; the IPsec tests need the node-mode cluster in KUBECONFIG:
//! `cargo test -p magictunnel-e2e --test anycast -- --ignored --test-threads 1 --nocapture`
//! (or `e2e/run-local.sh anycast`).

use std::time::Duration;

use magictunnel_e2e::anycast::{
    ANYCAST, AnycastLab, CUSTOMER, CUSTOMER_NET, CUSTOMER_TUNNEL_ADDR, NODE_TUNNEL_ADDR, NodeId,
    SERVICE_NET, gre_config,
};
use magictunnel_e2e::peer::{tunnel_pod_binary, wait_for};

/// The nodes' tunnel-pods' HTTP port (each in its own namespace).
const NODE_HTTP: u16 = 9181;
const CUSTOMER_HTTP: u16 = 9180;
const PACKETS: &str = "magictunnel_tunnel_packets_total";

/// The GRE lab: both nodes with the same config (no health checks of their own: a node that
/// does not receive the customer's traffic would see its probes' returns go to the other one),
/// the customer's peer with reply-style probes at the high rate.
fn gre_lab(slot: u8) -> AnycastLab {
    let binary = tunnel_pod_binary().unwrap_or_else(|e| panic!("{e}"));
    let mut lab = AnycastLab::new(slot);
    let node = gre_config(
        "lab/anycast-gre",
        ANYCAST,
        CUSTOMER,
        NODE_TUNNEL_ADDR,
        CUSTOMER_NET,
        NODE_HTTP,
        "{enabled: false}",
    );
    for n in NodeId::BOTH {
        lab.start_pod(n, &binary, &node, &[]);
    }
    let customer = gre_config(
        "customer/gre",
        CUSTOMER,
        ANYCAST,
        CUSTOMER_TUNNEL_ADDR,
        SERVICE_NET,
        CUSTOMER_HTTP,
        "{enabled: true, type: Reply, rate: High}",
    );
    lab.start_customer_pod(&binary, &customer);
    for n in NodeId::BOTH {
        lab.wait_ready(n, NODE_HTTP, Duration::from_secs(20));
    }
    let up = wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
        lab.ping_once(Duration::from_millis(300)).then_some(())
    });
    assert!(
        up.is_some(),
        "no ping customer → service through node A:\n{}\n{}",
        lab.customer_log(),
        lab.pod_log(NodeId::A)
    );
    lab
}

/// Packets each node decapsulated so far (tunnel → TUN).
fn ingress(lab: &AnycastLab) -> [f64; 2] {
    NodeId::BOTH.map(|n| {
        lab.metric(
            &lab.node(n),
            NODE_HTTP,
            PACKETS,
            &[("direction", "ingress")],
        )
    })
}

#[test]
#[ignore = "needs root: e2e/run-local.sh"]
fn gre_path_switch_mid_stream_loses_nothing() {
    let mut lab = gre_lab(0);

    // 1. Pings every 10 ms while the router moves the anycast address A → B → A.
    let before = ingress(&lab);
    let ping = lab.ping(600, Duration::from_millis(10));
    std::thread::sleep(Duration::from_secs(2));
    lab.switch_to(NodeId::B);
    std::thread::sleep(Duration::from_secs(2));
    let at_b = ingress(&lab);
    lab.switch_to(NodeId::A);
    let r = ping.finish();
    let after = ingress(&lab);
    let (via_a, via_b) = (after[0] - before[0], at_b[1] - before[1]);
    eprintln!(
        "GRE, ping -i 0.01 across two switches (A → B → A): {}/{} answered, lost {:?}; \
         decapsulated by A {via_a}, by B {via_b}",
        r.received, r.sent, r.lost
    );
    assert!(
        via_b >= 60.0 && via_a >= 120.0,
        "both nodes carried their share (A {via_a}, B {via_b}): the switch did not happen"
    );
    assert_eq!(
        r.lost,
        Vec::<u32>::new(),
        "no ping lost across the switches"
    );

    // 2. A TCP stream (iperf3, 8 s) with pings beside it; switches at 2.5 s and 5.5 s.
    let iperf = lab.iperf(8, None);
    let ping = lab.ping(800, Duration::from_millis(10));
    std::thread::sleep(Duration::from_millis(2500));
    lab.switch_to(NodeId::B);
    let mid = ingress(&lab);
    std::thread::sleep(Duration::from_millis(3000));
    lab.switch_to(NodeId::A);
    let late = ingress(&lab);
    let p = ping.finish();
    let t = iperf.finish();
    eprintln!(
        "GRE, iperf3 TCP 8 s across two switches: {:.0} Mbit/s mean, {} retransmits, {} of {} \
         bytes received, longest stall {:.1} s; pings beside it {}/{} (lost {:?}); B decapsulated \
         {} packets while active",
        t.mean_mbps(),
        t.retransmits,
        t.bytes_received,
        t.bytes_sent,
        t.longest_stall(),
        p.received,
        p.sent,
        p.lost,
        late[1] - mid[1],
    );
    assert!(t.error.is_none(), "iperf3: {:?}", t.error);
    assert!(
        t.bytes_received > 0 && t.intervals.len() >= 15,
        "iperf3 ran: {t:?}"
    );
    assert_eq!(
        t.longest_stall(),
        0.0,
        "every 0.5 s interval carried data: {:?}",
        t.intervals
    );
    assert!(
        late[1] - mid[1] > 1000.0,
        "the stream went through B while it was active"
    );
}

#[test]
#[ignore = "needs root: e2e/run-local.sh"]
fn gre_health_probes_are_answered_by_whichever_node_receives_them() {
    let mut lab = gre_lab(1);
    let customer = lab.customer();
    let healthy = wait_for(Duration::from_secs(20), Duration::from_millis(200), || {
        let st = lab.http(&customer, CUSTOMER_HTTP, "/status")?;
        st.1.contains("\"health\":\"healthy\"").then_some(())
    });
    assert!(
        healthy.is_some(),
        "the customer's probes never came back:\n{}",
        lab.customer_log()
    );
    let reflected = |lab: &AnycastLab| {
        NodeId::BOTH.map(|n| {
            lab.metric(
                &lab.node(n),
                NODE_HTTP,
                "magictunnel_probes_reflected_total",
                &[],
            )
        })
    };
    let lost = |lab: &AnycastLab| {
        lab.metric(
            &lab.customer(),
            CUSTOMER_HTTP,
            "magictunnel_probes_total",
            &[("result", "lost")],
        )
    };
    let sent = |lab: &AnycastLab| {
        lab.metric(
            &lab.customer(),
            CUSTOMER_HTTP,
            "magictunnel_probes_total",
            &[("result", "sent")],
        )
    };
    let mut rows = Vec::new();
    for active in [NodeId::A, NodeId::B, NodeId::A] {
        lab.switch_to(active);
        // Probes in flight at the switch go to the old node; wait for one probe timeout.
        std::thread::sleep(Duration::from_millis(1200));
        let (r0, l0, s0) = (reflected(&lab), lost(&lab), sent(&lab));
        std::thread::sleep(Duration::from_secs(3));
        let (r1, l1, s1) = (reflected(&lab), lost(&lab), sent(&lab));
        let by = [r1[0] - r0[0], r1[1] - r0[1]];
        eprintln!(
            "GRE health, {active:?} active for 3 s: the customer sent {} probes, lost {}; \
             reflected by A {}, by B {}",
            s1 - s0,
            l1 - l0,
            by[0],
            by[1]
        );
        rows.push((active, s1 - s0, l1 - l0, by));
    }
    for (active, sent, lost, by) in rows {
        let (on, off) = (by[active.index()], by[active.other().index()]);
        assert!(sent >= 10.0, "the customer probes ({sent} in 3 s)");
        assert_eq!(lost, 0.0, "{active:?} active: no probe lost");
        assert!(
            on >= sent - 2.0 && off == 0.0,
            "{active:?} active: it reflected {on} of {sent} probes, the other node {off}"
        );
    }
}
