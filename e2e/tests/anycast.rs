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

use std::path::PathBuf;
use std::time::{Duration, Instant};

use magictunnel_e2e::anycast::{
    ANYCAST, AnycastLab, CUSTOMER, CUSTOMER_NET, CUSTOMER_TUNNEL_ADDR, LabTunnel, NODE_TUNNEL_ADDR,
    NodeId, SERVICE_NET, create_ipsec_tunnel, gre_config, histogram_buckets, histogram_quantile,
};
use magictunnel_e2e::namespace::TestNamespace;
use magictunnel_e2e::peer::strongswan::{Charon, CharonOptions, IkeSa, SwanConn};
use magictunnel_e2e::peer::{tunnel_pod_binary, wait_for};
use serde_json::{Value, json};

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
fn anycast_gre_path_switch_mid_stream_loses_nothing() {
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
fn anycast_gre_health_probes_are_answered_by_whichever_node_receives_them() {
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

// ---------------------------------------------------------------------------------- IPsec

/// The swanctl connection (and child) name at the customer.
const CONN: &str = "anycast";
const REPLAY_FAILED: &str = "ESP sequence number verification failed";

/// A lab IPsec tunnel: the MagicTunnel in its own namespace, the lab with replica 0 in nodeA
/// (and replica 1 in nodeB), strongSwan at the customer with an established IKE SA (on A).
/// Fields drop in order: charon, then the lab (its processes, namespaces), then the namespace.
struct IpsecLab {
    charon: Charon,
    conn: SwanConn,
    lab: AnycastLab,
    tunnel: LabTunnel,
    kubeconfig: PathBuf,
    psk_file: PathBuf,
    binary: PathBuf,
    /// Held for its Drop (deletes the namespace).
    _ns: TestNamespace,
}

impl IpsecLab {
    /// `b_replicas`: the `replicas` of B's config (default: the operator's, 2); 1 makes B a
    /// slot-less sender (today's scheme), the anti-replay baseline.
    async fn start(test: &str, slot: u8, start_b: bool, b_replicas: Option<u8>) -> Option<Self> {
        Self::start_with(test, slot, start_b, b_replicas, "").await
    }

    /// [`IpsecLab::start`] with more `ipsec` fields (flow style, e.g. `, lifetimes: {…}`).
    async fn start_with(
        test: &str,
        slot: u8,
        start_b: bool,
        b_replicas: Option<u8>,
        ipsec_extra: &str,
    ) -> Option<Self> {
        let client = magictunnel_e2e::client_or_skip(test).await?;
        let binary = tunnel_pod_binary().unwrap_or_else(|e| panic!("{e}"));
        let ns = TestNamespace::new(&client, "e2e-anycast")
            .await
            .expect("test namespace");
        let tunnel = create_ipsec_tunnel(
            &client,
            &ns.name,
            "edge",
            2,
            &format!("  ipsec: {{acceptedIkeIdTypes: [FQDN]{ipsec_extra}}}\n"),
        )
        .await
        .unwrap_or_else(|e| panic!("the lab's MagicTunnel: {e:#}"));
        assert_eq!(
            tunnel.config.replicas,
            2,
            "the operator's config: {}",
            tunnel.config.to_yaml()
        );
        let sync = tunnel.config.ipsec.as_ref().and_then(|i| i.sync.clone());
        assert_eq!(
            sync.as_ref()
                .map(|s| (s.namespace.as_str(), s.secret.clone())),
            Some((ns.name.as_str(), tunnel.sa_secret())),
            "ipsec.sync in the operator's config"
        );
        let lab = AnycastLab::new(slot);
        let psk_file = lab.write("psk", &tunnel.psk);
        let kubeconfig = tunnel
            .kubeconfig(&client, &lab)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let charon = Charon::start_in(
            &lab.customer(),
            &lab.dir,
            "customer",
            CharonOptions {
                retransmit_tries: 2,
                retransmit_timeout: 1.0,
                ..CharonOptions::default()
            },
        );
        let mut conn = SwanConn::new(
            CONN,
            &CUSTOMER.to_string(),
            &ANYCAST.to_string(),
            &format!("@{}", tunnel.fqdn),
            &tunnel.psk,
        );
        conn.local_ts = vec![CUSTOMER_NET.to_string()];
        conn.remote_ts = vec![SERVICE_NET.to_string()];
        conn.dpd_delay = 2;
        let mut t = IpsecLab {
            charon,
            conn,
            lab,
            tunnel,
            kubeconfig,
            psk_file,
            binary,
            _ns: ns,
        };
        t.start_replica(NodeId::A, None);
        if start_b {
            t.start_replica(NodeId::B, b_replicas);
        }
        t.charon.load(std::slice::from_ref(&t.conn));
        let init = t.charon.initiate(CONN);
        assert!(
            init.ok && t.charon.established(CONN).is_some(),
            "strongSwan → 203.0.113.50 (node A): {}\n{}\n{}",
            init.output,
            t.lab.pod_log(NodeId::A),
            t.charon.log()
        );
        for n in NodeId::BOTH.into_iter().take(if start_b { 2 } else { 1 }) {
            t.lab.wait_ready(n, NODE_HTTP, Duration::from_secs(10));
        }
        Some(t)
    }

    /// Starts the replica of node `n` (replica index = A 0, B 1) and waits until it serves
    /// /status (ready it is only with a Child SA).
    fn start_replica(&mut self, n: NodeId, replicas: Option<u8>) -> Duration {
        let config = self.tunnel.node_config(&self.psk_file, NODE_HTTP, replicas);
        let identity = self.tunnel.pods[n.index()].clone();
        // One replica in the config: the single sender's slot 0 (the identity stays B's).
        let slot = if replicas == Some(1) { 0 } else { n.index() };
        self.lab.start_replica(
            n,
            &self.binary,
            &config,
            slot,
            &identity,
            &self.kubeconfig.clone(),
        );
        self.lab.wait_serving(n, NODE_HTTP, Duration::from_secs(30))
    }

    fn sa(&self) -> IkeSa {
        self.charon
            .established(CONN)
            .unwrap_or_else(|| panic!("no established IKE SA{}", self.charon.log()))
    }

    /// The `sync` object of node `n`'s /status.
    fn sync(&self, n: NodeId) -> Value {
        self.lab
            .status(n, NODE_HTTP)
            .map(|s| s["sync"].clone())
            .unwrap_or_default()
    }

    /// Node `n` lists the Child SA whose inbound SPI (strongSwan's outbound) is `spi`.
    fn installed(&self, n: NodeId, spi: &str) -> bool {
        installed_in(&self.sync(n), spi)
    }

    /// Waits until node `n` installed the Child SA `spi`; the time it took.
    fn wait_installed(&self, n: NodeId, spi: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        let done = wait_for(timeout, Duration::from_millis(10), || {
            self.installed(n, spi).then_some(())
        });
        assert!(
            done.is_some(),
            "{n:?} did not install Child SA {spi} within {timeout:?}: sync {}\n{}",
            self.sync(n),
            self.lab.pod_log(n)
        );
        start.elapsed()
    }

    fn replay_failures(&self) -> usize {
        self.charon.full_log().matches(REPLAY_FAILED).count()
    }

    /// The MagicTunnel's `status.endpoints[]` as (pod, ikeOwner, installedGeneration), and its
    /// Synchronized condition.
    async fn endpoints(&self) -> (Vec<(String, Option<bool>, Option<u64>)>, Option<String>) {
        let status = self
            ._ns
            .tunnels()
            .get(&self.tunnel.name)
            .await
            .ok()
            .and_then(|t| t.status);
        let Some(status) = status else {
            return (Vec::new(), None);
        };
        let eps = status
            .endpoints
            .iter()
            .map(|e| (e.pod.clone(), e.ike_owner, e.installed_generation))
            .collect();
        let sync = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Synchronized")
            .map(|c| format!("{} ({}: {})", c.status, c.reason, c.message));
        (eps, sync)
    }

    fn metric(&self, n: NodeId, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.lab.metric(&self.lab.node(n), NODE_HTTP, name, labels)
    }
}

fn installed_in(sync: &Value, spi: &str) -> bool {
    sync["installedChildSpis"].as_array().is_some_and(|a| {
        a.iter()
            .any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(spi)))
    })
}

/// (IKE SPIs, Child SA SPIs) as strongSwan shows them.
fn spis(sa: &IkeSa) -> ((String, String), (String, String)) {
    let child = sa.installed().expect("an installed Child SA");
    (
        (sa.initiator_spi.clone(), sa.responder_spi.clone()),
        (child.spi_in.clone(), child.spi_out.clone()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the node-mode cluster and root: e2e/run-local.sh"]
async fn anycast_ipsec_path_switch_keeps_the_sas_and_the_traffic() {
    let Some(mut t) = IpsecLab::start("ipsec_path_switch", 2, true, None).await else {
        return;
    };
    let sa = t.sa();
    let (ike, child) = spis(&sa);
    let took = t.wait_installed(NodeId::B, &child.1, Duration::from_secs(10));
    eprintln!(
        "IPsec: IKE SA {}/{} established on A; B listed Child SA {} {:.0} ms later",
        ike.0,
        ike.1,
        child.1,
        took.as_secs_f64() * 1e3
    );
    assert!(t.lab.ping_once(Duration::from_secs(2)), "ping through A");
    let (replay0, before) = (t.replay_failures(), ingress(&t.lab));
    let iperf = t.lab.iperf(8, None);
    let ping = t.lab.ping(800, Duration::from_millis(10));
    std::thread::sleep(Duration::from_secs(3));
    let mid = ingress(&t.lab);
    t.lab.switch_to(NodeId::B);
    let p = ping.finish();
    let i = iperf.finish();
    let after = ingress(&t.lab);
    let replays = t.replay_failures() - replay0;
    let sa1 = t.sa();
    eprintln!(
        "IPsec path switch A → B under ping -i 0.01 + iperf3: pings {}/{} (lost {}: {:.0} ms), \
         iperf3 {:.0} Mbit/s mean, {} retransmits, longest stall {:.1} s, {} of {} bytes; \
         decapsulated by A {} / B {} (B after the switch {}); strongSwan replay drops {replays}",
        p.received,
        p.sent,
        p.lost.len(),
        p.loss_time().as_secs_f64() * 1e3,
        i.mean_mbps(),
        i.retransmits,
        i.longest_stall(),
        i.bytes_received,
        i.bytes_sent,
        mid[0] - before[0],
        after[1] - before[1],
        after[1] - mid[1]
    );
    assert_eq!(spis(&sa1), (ike.clone(), child.clone()), "SPIs unchanged");
    assert_eq!(
        replays, 0,
        "B's sequence numbers start above A's (the floor): no replay drops at strongSwan"
    );
    assert_eq!(t.charon.list_sas().len(), 1, "no new IKE SA");
    assert!(
        after[1] - mid[1] > 1000.0,
        "B carried the traffic after the switch"
    );
    assert!(i.error.is_none() && i.bytes_received > 0, "iperf3: {i:?}");
    assert!(
        p.loss_time() < Duration::from_secs(1),
        "loss on the switch {:?} (goal < 1 s): {:?}",
        p.loss_time(),
        p.lost
    );
    // B answers IKE too: strongSwan's next request (a Child SA rekey) lands on B, which claims
    // the SA first.
    assert!(t.charon.rekey_child(CONN), "rekey via B");
    let rekeyed = wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        let sa = t.charon.established(CONN)?;
        let c = spis(&sa).1;
        (c != child).then_some(sa)
    });
    let rekeyed = rekeyed.unwrap_or_else(|| panic!("no rekey via B{}", t.charon.log()));
    assert_eq!(spis(&rekeyed).0, ike, "the same IKE SA");
    assert_eq!(t.sync(NodeId::B)["role"], "owner", "B claimed the SA");
    assert!(
        t.lab.ping_once(Duration::from_secs(2)),
        "ping on the new Child SA via B"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the node-mode cluster and root: e2e/run-local.sh"]
async fn anycast_ipsec_owner_killed_the_survivor_answers_dpd_and_rekey() {
    let Some(mut t) = IpsecLab::start("ipsec_owner_killed", 3, true, None).await else {
        return;
    };
    let (ike, child) = spis(&t.sa());
    t.wait_installed(NodeId::B, &child.1, Duration::from_secs(10));
    assert_eq!(t.sync(NodeId::A)["role"], "owner", "A negotiated: owner");
    let ping = t.lab.ping(500, Duration::from_millis(10));
    std::thread::sleep(Duration::from_millis(1500));
    // A dies (SIGKILL: no release, no Delete); the route moves to B.
    t.lab.stop_pod(NodeId::A, true);
    t.lab.switch_to(NodeId::B);
    let killed = Instant::now();
    let p = ping.finish();
    eprintln!(
        "IPsec owner A killed, route to B: pings {}/{} (lost {}: {:.0} ms)",
        p.received,
        p.sent,
        p.lost.len(),
        p.loss_time().as_secs_f64() * 1e3
    );
    assert!(
        p.loss_time() < Duration::from_secs(1),
        "loss on the kill: {:?}",
        p.lost
    );
    // No traffic now: strongSwan's DPD (2 s of silence) goes to B. Without an answer it gives
    // up after 1 + 1.8 + 3.2 s and deletes the IKE SA.
    let log = || t.charon.full_log();
    let dpd_sent = |l: &str| l.matches("sending DPD request").count();
    let (dpd0, informational0) = (
        dpd_sent(&log()),
        log().matches("parsed INFORMATIONAL response").count(),
    );
    std::thread::sleep(Duration::from_secs(12));
    let l = log();
    let (dpds, answers) = (
        dpd_sent(&l) - dpd0,
        l.matches("parsed INFORMATIONAL response").count() - informational0,
    );
    let sa = t.charon.established(CONN);
    eprintln!(
        "IPsec after the kill: {dpds} DPD requests from strongSwan in 12 s, {answers} answered; \
         B {} ({:.1} s after the kill)",
        t.sync(NodeId::B),
        killed.elapsed().as_secs_f64()
    );
    assert!(
        dpds >= 2 && answers >= dpds - 1,
        "DPD answered by B{}",
        t.charon.log()
    );
    let sa = sa.unwrap_or_else(|| panic!("strongSwan dropped the IKE SA{}", t.charon.log()));
    assert_eq!(
        spis(&sa),
        (ike.clone(), child.clone()),
        "same SAs after DPD"
    );
    assert_eq!(t.sync(NodeId::B)["role"], "owner", "B claimed ownership");
    // The operator reports the new owner from the Secret's summary.json.
    let b_pod = t.tunnel.pods[1].clone();
    let reported = magictunnel_e2e::eventually(
        "status.endpoints[] naming B the IKE owner",
        Duration::from_secs(30),
        || async {
            let (eps, _) = t.endpoints().await;
            eps.iter()
                .any(|(pod, owner, _)| *pod == b_pod && *owner == Some(true))
                .then_some(())
        },
    )
    .await;
    let last = t.endpoints().await;
    eprintln!(
        "IPsec after the kill: MagicTunnel status.endpoints (pod, ikeOwner, installedGeneration) \
         {:?}; Synchronized {:?}",
        last.0, last.1
    );
    assert!(reported.is_ok(), "status.endpoints[] names B the IKE owner");
    // A Child SA rekey answered by B: new Child SPIs, the same IKE SA.
    let rekey_start = Instant::now();
    assert!(t.charon.rekey_child(CONN), "swanctl --rekey --child");
    let rekeyed = wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
        let sa = t.charon.established(CONN)?;
        (spis(&sa).1 != child).then_some(sa)
    })
    .unwrap_or_else(|| panic!("the rekey did not complete{}", t.charon.log()));
    let (ike1, child1) = spis(&rekeyed);
    eprintln!(
        "IPsec Child SA rekey answered by B in {:.0} ms: {} → {} (IKE SA {}/{} unchanged: {})",
        rekey_start.elapsed().as_secs_f64() * 1e3,
        child.1,
        child1.1,
        ike1.0,
        ike1.1,
        ike1 == ike
    );
    assert_eq!(ike1, ike, "no new IKE SA");
    assert_eq!(t.charon.list_sas().len(), 1, "one IKE SA");
    assert!(
        t.lab.ping_once(Duration::from_secs(2)),
        "traffic on the new Child SA"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the node-mode cluster and root: e2e/run-local.sh"]
async fn anycast_ipsec_a_late_replica_installs_the_sas_before_it_is_ready() {
    let Some(mut t) = IpsecLab::start("ipsec_late_replica", 4, false, None).await else {
        return;
    };
    let (_, child) = spis(&t.sa());
    let config = t.tunnel.node_config(&t.psk_file, NODE_HTTP, None);
    let identity = t.tunnel.pods[1].clone();
    let (binary, kubeconfig) = (t.binary.clone(), t.kubeconfig.clone());
    let start = Instant::now();
    t.lab
        .start_replica(NodeId::B, &binary, &config, 1, &identity, &kubeconfig);
    // Every /status answer carries readiness and the sync state together.
    let mut not_ready = 0;
    let first_ready = wait_for(Duration::from_secs(30), Duration::from_millis(10), || {
        let st = t.lab.status(NodeId::B, NODE_HTTP)?;
        if st["ready"] == json!(true) {
            Some(st)
        } else {
            not_ready += 1;
            None
        }
    })
    .unwrap_or_else(|| panic!("B never ready:\n{}", t.lab.pod_log(NodeId::B)));
    eprintln!(
        "IPsec late replica B: ready {:.0} ms after its start ({not_ready} answers not ready \
         before); its first ready /status: sync {}",
        start.elapsed().as_secs_f64() * 1e3,
        first_ready["sync"]
    );
    assert!(
        installed_in(&first_ready["sync"], &child.1),
        "ready before installing the current Child SA {}: {}",
        child.1,
        first_ready["sync"]
    );
    t.lab.switch_to(NodeId::B);
    assert!(
        t.lab.ping_once(Duration::from_secs(2)),
        "B carries the traffic"
    );
}

/// Quantile `q` of `samples` (nearest rank).
fn quantile(samples: &[f64], q: f64) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the node-mode cluster and root: e2e/run-local.sh"]
async fn anycast_ipsec_rekeys_propagate_and_cost_few_api_writes() {
    let Some(t) = IpsecLab::start("ipsec_rekey_propagation", 5, true, None).await else {
        return;
    };
    let rounds: usize = std::env::var("MT_LAB_REKEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let (_, mut child) = spis(&t.sa());
    t.wait_installed(NodeId::B, &child.1, Duration::from_secs(10));
    let writes = |t: &IpsecLab| {
        NodeId::BOTH.map(|n| t.metric(n, "magictunnel_sa_sync_api_writes_total", &[]))
    };
    let publishes = |t: &IpsecLab| {
        NodeId::BOTH.map(|n| {
            t.metric(
                n,
                "magictunnel_sa_sync_publishes_total",
                &[("result", "ok")],
            )
        })
    };
    let latency = |t: &IpsecLab| {
        let text = t
            .lab
            .http(&t.lab.node(NodeId::B), NODE_HTTP, "/metrics")
            .map(|m| m.1)
            .unwrap_or_default();
        histogram_buckets(&text, "magictunnel_sa_sync_latency_seconds")
    };
    let (w0, p0, h0) = (writes(&t), publishes(&t), latency(&t));
    let mut seen = Vec::new();
    for round in 0..rounds {
        assert!(t.charon.rekey_child(CONN), "rekey {round}");
        let new = wait_for(Duration::from_secs(10), Duration::from_millis(5), || {
            let sa = t.charon.established(CONN)?;
            let c = spis(&sa).1;
            (c != child).then_some(c)
        })
        .unwrap_or_else(|| panic!("rekey {round} did not complete{}", t.charon.log()));
        // strongSwan has the new SA (A answered after publishing it): until B lists it.
        seen.push(
            t.wait_installed(NodeId::B, &new.1, Duration::from_secs(10))
                .as_secs_f64(),
        );
        child = new;
        std::thread::sleep(Duration::from_millis(200));
    }
    // Lazy publishes (within 1 s) of changes that release no message.
    std::thread::sleep(Duration::from_millis(1500));
    let (w1, p1, h1) = (writes(&t), publishes(&t), latency(&t));
    let per = |a: [f64; 2], b: [f64; 2], i: usize| (b[i] - a[i]) / rounds as f64;
    let installs = h1.last().map_or(0.0, |b| b.1) - h0.last().map_or(0.0, |b| b.1);
    let bucket = |q| histogram_quantile(&h0, &h1, q).map_or(f64::NAN, |s| s * 1e3);
    eprintln!(
        "IPsec {rounds} Child SA rekeys: strongSwan has the new SA → B's /status lists it \
         (polled every 10 ms): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; B's own histogram \
         (publishedAt → installed, {installs} installs): p50 ≤ {} ms, p99 ≤ {} ms; API writes \
         per rekey: A {:.2} (publishes {:.2}), B {:.2} (publishes {:.2})",
        quantile(&seen, 0.5) * 1e3,
        quantile(&seen, 0.99) * 1e3,
        quantile(&seen, 1.0) * 1e3,
        bucket(0.5),
        bucket(0.99),
        per(w0, w1, 0),
        per(p0, p1, 0),
        per(w0, w1, 1),
        per(p0, p1, 1),
    );
    assert!(quantile(&seen, 0.99) < 2.0, "propagation p99 under 2 s");
    assert!(per(p0, p1, 0) >= 1.0, "A published every rekey");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the node-mode cluster and root: e2e/run-local.sh"]
async fn anycast_ipsec_without_sender_slots_a_switch_trips_the_peers_replay_window() {
    // The baseline of the slot scheme: B's config says `replicas: 1`, so B seals as the single
    // sender of today (it continues from the sequence number published with the SA) while A
    // uses slot 0 of 2. After A carried traffic, B's numbers are far below A's: strongSwan's
    // replay window (32, libipsec's default) drops B's packets.
    let Some(mut t) = IpsecLab::start("ipsec_without_sender_slots", 6, true, Some(1)).await else {
        return;
    };
    let (_, child) = spis(&t.sa());
    t.wait_installed(NodeId::B, &child.1, Duration::from_secs(10));
    let replay0 = t.replay_failures();
    let ping = t.lab.ping(600, Duration::from_millis(10));
    std::thread::sleep(Duration::from_secs(3));
    t.lab.switch_to(NodeId::B);
    let p = ping.finish();
    let replays = t.replay_failures() - replay0;
    eprintln!(
        "IPsec path switch A → B with a slot-less B (baseline): pings {}/{} (lost {}: {:.0} ms), \
         strongSwan replay drops {replays}",
        p.received,
        p.sent,
        p.lost.len(),
        p.loss_time().as_secs_f64() * 1e3
    );
    assert!(
        replays > 0 && p.lost.len() > 50,
        "without slots strongSwan refuses B's numbers (drops {replays}, lost {})",
        p.lost.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the node-mode cluster and root: e2e/run-local.sh"]
async fn anycast_ipsec_a_sender_faster_than_the_floor_costs_replay_drops_after_a_switch() {
    // The limit of the sequence floor: with a 24 h Child SA the floor moves 2^32 / 86,400 ≈
    // 49,700 numbers/s; slot 0 of 2 uses 2 numbers per packet, so above ≈ 24,900 packets/s A's
    // numbers run ahead of the floor, and B (starting at the floor after the switch) is below
    // them until the floor catches up. iperf3 -R: the service sends, the nodes seal.
    let Some(mut t) = IpsecLab::start_with(
        "ipsec_fast_sender",
        7,
        true,
        None,
        ", lifetimes: {ikeSeconds: 172800, childSeconds: 86400}",
    )
    .await
    else {
        return;
    };
    let (ike, child) = spis(&t.sa());
    t.wait_installed(NodeId::B, &child.1, Duration::from_secs(10));
    let replay0 = t.replay_failures();
    let egress =
        |t: &IpsecLab| NodeId::BOTH.map(|n| t.metric(n, PACKETS, &[("direction", "egress")]));
    let e0 = egress(&t);
    let iperf = t.lab.iperf_with(10, None, true);
    let ping = t.lab.ping(1000, Duration::from_millis(10));
    std::thread::sleep(Duration::from_secs(4));
    let e1 = egress(&t);
    t.lab.switch_to(NodeId::B);
    let p = ping.finish();
    let i = iperf.finish();
    let replays = t.replay_failures() - replay0;
    let a_pps = (e1[0] - e0[0]) / 4.0;
    eprintln!(
        "IPsec, 24 h Child SA (floor 49,700/s), iperf3 -R through A at {a_pps:.0} packets/s \
         ({:.0} numbers/s in slot 0 of 2), then a switch to B: strongSwan replay drops \
         {replays}, pings {}/{} (lost {}: {:.0} ms), iperf3 {:.0} Mbit/s mean, longest stall \
         {:.1} s, intervals {:?}",
        a_pps * 2.0,
        p.received,
        p.sent,
        p.lost.len(),
        p.loss_time().as_secs_f64() * 1e3,
        i.mean_mbps(),
        i.longest_stall(),
        i.intervals
            .iter()
            .map(|b| (b / 1e6).round())
            .collect::<Vec<_>>()
    );
    assert_eq!(spis(&t.sa()), (ike, child), "SPIs unchanged");
    assert!(
        t.lab.ping_once(Duration::from_secs(2)),
        "traffic through B once the floor caught up"
    );
}
