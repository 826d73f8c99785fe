//! Initiator mode (`ipsec.initiate: true`) against strongSwan: tunnel-pod in namespace B
//! (203.0.113.2) dials charon (kernel-libipsec) in namespace A (203.0.113.1), which plays the
//! customer's router as a responder only. The same suite matrix as the responder rows of
//! `netns_ike.rs`, the other way round: charon is configured with exactly the row's proposals,
//! tunnel-pod offers every seed suite (so ECP-384 goes first in its KE payload, and a MODP row
//! also passes through INVALID_KE_PAYLOAD), and presents the row's ID type as IDi.
//!
//! Each row: charon shows the IKE SA ESTABLISHED and the child INSTALLED with the row's
//! algorithms, the child SPIs mirror tunnel-pod's `/status`, pings pass both ways, then charon
//! rekeys the child (with the row's PFS group when it has one) and the IKE SA, and the checks
//! and pings pass again. Lifecycle rows: charon not running when tunnel-pod starts, charon
//! restarted (a Delete) and crashed (only DPD can tell), a wrong PSK (slow back-off, counted);
//! and two tunnel-pods peering over IKE, one dialing.
//!
//! Addresses as in `netns_ike.rs`: the router's inner address 10.10.0.1 (and 10.10.1.1) on A's
//! loopback with local_ts 10.10.0.0/24 (10.10.1.0/24), tunnel-pod's TUN 10.99.0.1/31.
//!
//! Root only: `cargo test -p magictunnel-tunnel-pod --test netns_ike_initiator -- --ignored
//! --test-threads=1`.

mod common;

use std::time::{Duration, Instant};

use common::ike::{
    ACCOUNT, CONN, DOMAIN, PSK, RESPONDER_INNER, TUNNEL_ID, fqdn_id, ipsec_block, pod_sas,
    psk_file, spi, wait_ike_sockets, write_psk,
};
use common::strongswan::{Charon, CharonOptions, IkeSa, SwanConn, expected_algs};
use common::{GreConfig, Lab, LabOptions, Side, wait_for};

const ROUTER_INNER: [&str; 2] = ["10.10.0.1", "10.10.1.1"];
const ROUTER_TS: [&str; 2] = ["10.10.0.0/24", "10.10.1.0/24"];
/// The router's IKE ID (IDr): its address, one of the IDs `ipsec_block` accepts.
const ROUTER_ID: &str = "203.0.113.1";
const DIALS: &str = "magictunnel_ike_dials_total";

/// The ID tunnel-pod presents (IDi): its `ipsec.localId`.
#[derive(Clone, Copy, Debug)]
enum PodId {
    Rfc822,
    Fqdn,
    KeyId,
    /// No localId: the default, localEndpoint as ID_IPV4_ADDR.
    Ipv4,
}

impl PodId {
    /// `ipsec.localId` in YAML, or nothing for the default.
    fn yaml(self) -> Option<String> {
        let (t, v) = match self {
            PodId::Rfc822 => (
                "RFC822Addr",
                format!("ipsec@{TUNNEL_ID}.{ACCOUNT}.{DOMAIN}"),
            ),
            PodId::Fqdn => ("FQDN", format!("{TUNNEL_ID}.{ACCOUNT}.{DOMAIN}")),
            PodId::KeyId => ("KeyID", format!("{ACCOUNT}_{TUNNEL_ID}")),
            PodId::Ipv4 => return None,
        };
        Some(format!("  localId: {{type: {t}, value: \"{v}\"}}"))
    }

    /// What charon expects as the remote ID, in swanctl syntax.
    fn swan(self) -> String {
        match self {
            PodId::Rfc822 => format!("ipsec@{TUNNEL_ID}.{ACCOUNT}.{DOMAIN}"),
            PodId::Fqdn => fqdn_id(),
            PodId::KeyId => format!("keyid:{ACCOUNT}_{TUNNEL_ID}"),
            PodId::Ipv4 => "203.0.113.2".to_string(),
        }
    }
}

/// One configuration of the router; every row of the table below is one.
#[derive(Clone, Copy, Debug)]
struct Row {
    ike: &'static str,
    /// A DH group here means PFS, checked on the child rekey.
    esp: &'static str,
    id: PodId,
    two_ts: bool,
    allow_null: bool,
}

const BASE: Row = Row {
    ike: "aes256gcm16-prfsha384-ecp384",
    esp: "aes256gcm16",
    id: PodId::Fqdn,
    two_ts: false,
    allow_null: false,
};

fn networks(row: &Row) -> usize {
    if row.two_ts { 2 } else { 1 }
}

/// charon as the router: a responder for tunnel-pod's ID with the row's proposals.
fn router_conn(row: &Row) -> SwanConn {
    let mut c = SwanConn::new(CONN, "203.0.113.1", "203.0.113.2", ROUTER_ID, PSK);
    c.remote_id = row.id.swan();
    c.ike_proposals = row.ike.to_string();
    c.esp_proposals = row.esp.to_string();
    c.local_ts = ROUTER_TS[..networks(row)]
        .iter()
        .map(|s| s.to_string())
        .collect();
    c.remote_ts = vec![format!("{RESPONDER_INNER}/32")];
    c
}

/// tunnel-pod in initiator mode: customerEndpoint = the router, the shared `ipsec:` block with
/// `initiate: true` and the row's local ID, no health checks (the router is not a tunnel-pod).
fn pod_config(lab: &Lab, row: &Row) -> GreConfig {
    let mut c = lab.config(Side::B);
    c.health_rate = None;
    c.routes = ROUTER_TS[..networks(row)]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut block = ipsec_block(&psk_file(lab), row.allow_null);
    block.push_str("\n  initiate: true");
    if let Some(id) = row.id.yaml() {
        block.push('\n');
        block.push_str(&id);
    }
    if row.allow_null {
        block.push_str(
            "\n  proposals: {esp: {encryption: [NULL, AES-GCM-16-128, AES-GCM-16-256, \
             AES-CBC-128, AES-CBC-256]}}",
        );
    }
    c.ipsec = Some(block);
    c
}

/// The router (charon in A) and tunnel-pod (B). Fields drop in order: charon first, the lab
/// (namespaces, tunnel-pod) last.
struct Rig {
    router: Option<Charon>,
    lab: Lab,
    row: Row,
}

impl Rig {
    /// Namespaces, the router's inner addresses and, given its connection, charon; then
    /// tunnel-pod, which starts dialing at once.
    fn new(row: Row, router: Option<SwanConn>) -> Rig {
        let lab = Lab::new(LabOptions::default());
        for inner in &ROUTER_INNER[..networks(&row)] {
            lab.exec_ok(
                Side::A,
                "ip",
                &["addr", "add", &format!("{inner}/32"), "dev", "lo"],
            );
        }
        let mut rig = Rig {
            router: None,
            lab,
            row,
        };
        if let Some(conn) = router {
            rig.start_router(conn);
        }
        write_psk(&rig.lab, PSK);
        let config = pod_config(&rig.lab, &row);
        rig.lab.start(Side::B, &config, &[]);
        wait_ike_sockets(&mut rig.lab);
        rig
    }

    fn start_router(&mut self, conn: SwanConn) {
        let mut charon = Charon::start(&self.lab, Side::A, "router", CharonOptions::default());
        charon.load(&[conn]);
        self.router = Some(charon);
    }

    fn router(&self) -> &Charon {
        self.router.as_ref().unwrap_or_else(|| panic!("no router"))
    }

    fn logs(&self) -> String {
        let router = self.router.as_ref().map(Charon::log).unwrap_or_default();
        format!("{router}{}", self.lab.logs())
    }

    /// Waits for the router's IKE SA: ESTABLISHED, child INSTALLED.
    fn wait_up(&self, timeout: Duration) -> IkeSa {
        self.router()
            .wait_established(CONN, timeout)
            .unwrap_or_else(|| {
                panic!(
                    "{:?}: the router has no ESTABLISHED IKE SA with an INSTALLED child after \
                     {timeout:?}; /status: {:?}{}",
                    self.row,
                    self.lab.http(Side::B, "/status"),
                    self.logs()
                )
            })
    }

    /// tunnel-pod's `/status` as JSON.
    fn status(&self) -> serde_json::Value {
        match self.lab.http(Side::B, "/status") {
            Some((200, body)) => serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("/status is not JSON ({e}): {body}")),
            other => panic!("GET /status: {other:?}{}", self.logs()),
        }
    }

    fn dials(&self, result: &str) -> f64 {
        self.lab.metrics(Side::B).get(DIALS, &[("result", result)])
    }

    /// tunnel-pod holds exactly one established IKE SA whose child mirrors the router's.
    fn assert_mirrored(&self, sa: &IkeSa) {
        let child = sa.installed().unwrap_or_else(|| panic!("no child: {sa:?}"));
        let want = (
            spi(&child.spi_out).unwrap_or_else(|| panic!("bad spi-out {child:?}")),
            spi(&child.spi_in).unwrap_or_else(|| panic!("bad spi-in {child:?}")),
        );
        let found = wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
            let sas = pod_sas(&self.lab);
            (sas.len() == 1 && sas[0].established && sas[0].children.contains(&want)).then_some(())
        });
        assert!(
            found.is_some(),
            "tunnel-pod does not hold exactly one ESTABLISHED IKE SA with child in/out \
             {:08x}/{:08x}: {:?}{}",
            want.0,
            want.1,
            pod_sas(&self.lab),
            self.logs()
        );
    }

    /// See [`common::ping_five`].
    fn ping(&self, side: Side, src: &str, dst: &str) {
        common::ping_five(&self.lab, side, src, dst, &|| self.logs());
    }

    fn pings(&self) {
        for inner in &ROUTER_INNER[..networks(&self.row)] {
            self.ping(Side::A, inner, RESPONDER_INNER);
            self.ping(Side::B, RESPONDER_INNER, inner);
        }
    }
}

/// One row: dialed and established with the row's algorithms, SPIs mirrored, pings; a child
/// rekey (PFS when the row has a group) and an IKE rekey, both by the router, checks again.
fn dial(row: Row) {
    let started = Instant::now();
    let rig = Rig::new(row, Some(router_conn(&row)));
    let sa = rig.wait_up(Duration::from_secs(20));
    eprintln!("{row:?}: established {:?} after start", started.elapsed());
    let want_ike = expected_algs(row.ike);
    assert_eq!(sa.algs, want_ike, "IKE SA algorithms{}", rig.logs());
    let child = sa
        .installed()
        .cloned()
        .unwrap_or_else(|| panic!("no child"));
    let mut want_esp = expected_algs(row.esp);
    let pfs = want_esp.dh.take();
    assert_eq!(child.algs, want_esp, "child SA algorithms{}", rig.logs());
    assert_eq!(
        (child.mode.as_str(), child.protocol.as_str(), child.encap),
        ("TUNNEL", "ESP", true),
        "{child:?}"
    );
    // NAT-T forced by tunnel-pod: IKE moved to 4500 after IKE_SA_INIT.
    assert_eq!((sa.local_port, sa.remote_port), (4500, 4500), "{sa:?}");
    rig.assert_mirrored(&sa);
    let status = rig.status();
    assert_eq!(
        status["ikeSas"][0]["initiator"], true,
        "tunnel-pod is the initiator: {status}"
    );
    assert_eq!(status["dial"]["state"], "established", "{status}");
    assert_eq!(rig.dials("established"), 1.0);
    rig.pings();
    if let Some(group) = pfs {
        assert!(rig.router().rekey_child(CONN), "rekey failed{}", rig.logs());
        let rekeyed = wait_for(Duration::from_secs(15), Duration::from_millis(200), || {
            let sa = rig.router().established(CONN)?;
            let c = sa.installed()?;
            (c.spi_in != child.spi_in).then(|| (sa.clone(), c.clone()))
        });
        let (sa, new) = rekeyed.unwrap_or_else(|| panic!("no rekeyed child{}", rig.logs()));
        want_esp.dh = Some(group);
        assert_eq!(new.algs, want_esp, "rekeyed child (PFS){}", rig.logs());
        rig.assert_mirrored(&sa);
        rig.pings();
    }
    assert!(
        rig.router().rekey_ike(CONN),
        "IKE rekey failed{}",
        rig.logs()
    );
    let rekeyed = wait_for(Duration::from_secs(15), Duration::from_millis(200), || {
        rig.router()
            .established(CONN)
            .filter(|new| new.initiator_spi != sa.initiator_spi)
    });
    let new = rekeyed.unwrap_or_else(|| panic!("no rekeyed IKE SA{}", rig.logs()));
    assert_eq!(new.algs, want_ike, "rekeyed IKE SA{}", rig.logs());
    rig.assert_mirrored(&new);
    rig.pings();
    // A rekey is no loss: nothing was dialed again.
    assert_eq!(rig.dials("established"), 1.0, "{}", rig.logs());
    eprintln!("{row:?}: passed in {:?}", started.elapsed());
}

macro_rules! rows {
    ($($name:ident: $row:expr;)*) => {$(
        #[test]
        #[ignore = "needs root, network namespaces and strongSwan"]
        fn $name() {
            dial($row);
        }
    )*};
}

rows! {
    // IKE encryption
    ike_aes128gcm16: Row { ike: "aes128gcm16-prfsha256-ecp384", ..BASE };
    ike_aes256gcm16: Row { ike: "aes256gcm16-prfsha384-ecp384", ..BASE };
    ike_aes256_sha256: Row { ike: "aes256-sha256-prfsha256-modp2048", ..BASE };
    // PRF
    prf_sha256: Row { ike: "aes256gcm16-prfsha256-ecp384", ..BASE };
    prf_sha384: Row { ike: "aes256gcm16-prfsha384-modp2048", ..BASE };
    prf_sha512: Row { ike: "aes256gcm16-prfsha512-ecp384", ..BASE };
    // DH (MODP: the router answers our ECP-384 KE with INVALID_KE_PAYLOAD first)
    dh_ecp384: Row { ike: "aes128gcm16-prfsha384-ecp384", ..BASE };
    dh_modp2048: Row { ike: "aes128gcm16-prfsha384-modp2048", ..BASE };
    dh_modp1536: Row { ike: "aes128gcm16-prfsha384-modp1536", ..BASE };
    // ESP
    esp_aes128gcm16: Row { esp: "aes128gcm16", ..BASE };
    esp_aes256gcm16: Row { esp: "aes256gcm16", ..BASE };
    esp_aes128_sha256: Row { esp: "aes128-sha256", ..BASE };
    esp_aes256_sha256: Row { esp: "aes256-sha256", ..BASE };
    esp_aes128_sha1: Row { esp: "aes128-sha1", ..BASE };
    esp_aes256_sha1: Row { esp: "aes256-sha1", ..BASE };
    esp_null_sha256_allowed: Row { esp: "null-sha256", allow_null: true, ..BASE };
    // PFS on the router's child rekey
    pfs_modp2048: Row { esp: "aes256gcm16-modp2048", ..BASE };
    pfs_modp1536: Row { esp: "aes128-sha256-modp1536", ..BASE };
    pfs_ecp384: Row { esp: "aes128gcm16-ecp384", ..BASE };
    // IDs tunnel-pod presents
    id_rfc822: Row { id: PodId::Rfc822, ..BASE };
    id_fqdn: Row { id: PodId::Fqdn, ..BASE };
    id_keyid: Row { id: PodId::KeyId, ..BASE };
    id_ipv4: Row { id: PodId::Ipv4, ..BASE };
    // The router narrows our any-to-any proposal to two selectors.
    two_traffic_selectors: Row { two_ts: true, ..BASE };
    cbc_pfs_keyid_two_ts: Row {
        ike: "aes256-sha256-prfsha256-modp2048",
        esp: "aes128-sha1-modp2048",
        id: PodId::KeyId,
        two_ts: true,
        ..BASE
    };
}

/// The router is not running when tunnel-pod starts: the first dial times out (the core
/// retransmits IKE_SA_INIT for 15.5 s), `/status` shows the back-off, and once charon runs the
/// next dial (or a retransmission) gets through.
#[test]
#[ignore = "needs root, network namespaces and strongSwan"]
fn router_starts_later() {
    let mut rig = Rig::new(BASE, None);
    let t0 = Instant::now();
    let timed_out = wait_for(Duration::from_secs(25), Duration::from_millis(200), || {
        (rig.dials("timeout") >= 1.0).then_some(())
    });
    assert!(timed_out.is_some(), "no dial timed out{}", rig.lab.logs());
    eprintln!("first dial timed out after {:?}", t0.elapsed());
    let dial = rig.status()["dial"].clone();
    assert!(
        matches!(dial["state"].as_str(), Some("backoff" | "dialing")),
        "{dial}"
    );
    assert!(dial["attempts"].as_u64() >= Some(1), "{dial}");
    assert_eq!(dial["lastResult"], "timeout", "{dial}");
    assert_eq!(rig.dials("established"), 0.0);
    let started = Instant::now();
    rig.start_router(router_conn(&BASE));
    let sa = rig.wait_up(Duration::from_secs(25));
    eprintln!("router started: established {:?} later", started.elapsed());
    rig.assert_mirrored(&sa);
    rig.pings();
    assert_eq!(rig.dials("established"), 1.0);
    assert_eq!(rig.status()["dial"]["attempts"], 0, "reset on success");
}

/// The router restarts: with SIGTERM it deletes the IKE SA (tunnel-pod dials again at once);
/// killed, it tells nothing, and tunnel-pod's DPD (30 s of silence, then 15.5 s of
/// retransmissions) finds out and dials again.
fn router_restart(crash: bool) {
    let mut rig = Rig::new(BASE, Some(router_conn(&BASE)));
    let first = rig.wait_up(Duration::from_secs(20));
    rig.pings();
    let started = Instant::now();
    if let Some(router) = rig.router.as_mut() {
        router.restart(crash);
    }
    let limit = if crash { 80 } else { 20 };
    let again = wait_for(
        Duration::from_secs(limit),
        Duration::from_millis(500),
        || {
            rig.router()
                .established(CONN)
                .filter(|sa| sa.initiator_spi != first.initiator_spi)
        },
    );
    let sa = again.unwrap_or_else(|| {
        panic!(
            "crash {crash}: no new IKE SA within {limit} s; /status {:?}{}",
            rig.lab.http(Side::B, "/status"),
            rig.logs()
        )
    });
    eprintln!(
        "router restart (crash: {crash}): new IKE SA after {:?}",
        started.elapsed()
    );
    rig.assert_mirrored(&sa);
    rig.pings();
    assert_eq!(rig.dials("established"), 2.0, "{}", rig.logs());
}

#[test]
#[ignore = "needs root, network namespaces and strongSwan"]
fn router_restart_redials_after_its_delete() {
    router_restart(false);
}

#[test]
#[ignore = "needs root, network namespaces and strongSwan"]
fn router_crash_redials_after_dpd() {
    router_restart(true);
}

/// The router has another PSK: every dial ends in AUTHENTICATION_FAILED, counted, with the slow
/// back-off (10 s, 20 s, … less up to a quarter): two or three dials in 25 s, not a loop.
#[test]
#[ignore = "needs root, network namespaces and strongSwan"]
fn wrong_psk_backs_off() {
    let mut conn = router_conn(&BASE);
    conn.psk = "not-the-tunnels-psk-0123456789abcdef".to_string();
    let rig = Rig::new(BASE, Some(conn));
    let t0 = Instant::now();
    let first = wait_for(Duration::from_secs(30), Duration::from_millis(200), || {
        (rig.dials("auth_failed") >= 1.0).then_some(())
    });
    assert!(first.is_some(), "no auth_failed dial{}", rig.logs());
    std::thread::sleep(Duration::from_secs(25).saturating_sub(t0.elapsed()));
    let failed = rig.dials("auth_failed");
    let status = rig.status();
    eprintln!(
        "wrong PSK: {failed} dials failed in {:?}; dial status {}",
        t0.elapsed(),
        status["dial"]
    );
    assert!(
        (2.0..=3.0).contains(&failed),
        "{failed} failed dials in 25 s{}",
        rig.logs()
    );
    assert_eq!(rig.dials("established"), 0.0);
    assert_eq!(status["dial"]["lastResult"], "auth_failed", "{status}");
    assert!(
        rig.router().list_sas().is_empty(),
        "the router holds an SA{}",
        rig.logs()
    );
    let inits = rig.router().full_log().matches("received packet").count();
    eprintln!("wrong PSK: the router received {inits} IKE messages");
    assert!(
        inits <= 12,
        "{inits} IKE messages: a tight loop?{}",
        rig.logs()
    );
}

/// Two tunnel-pods over IKE: B dials (`initiate: true`), A answers. Health checks run through
/// the tunnel; A restarting (its shutdown deletes the IKE SA) makes B dial again.
#[test]
#[ignore = "needs root, network namespaces and the IKEv2 endpoint"]
fn two_tunnel_pods_peer_over_ike() {
    let mut lab = Lab::new(LabOptions::default());
    write_psk(&lab, PSK);
    let block = |accept: &str, initiate: bool| {
        format!(
            "  pskFile: {}\n  acceptedIds: [{{type: IPv4Addr, value: \"{accept}\"}}]\n  \
             initiate: {initiate}",
            psk_file(&lab).display()
        )
    };
    let mut a = lab.config(Side::A);
    a.ipsec = Some(block("203.0.113.2", false));
    let mut b = lab.config(Side::B);
    b.ipsec = Some(block("203.0.113.1", true));
    let t0 = Instant::now();
    lab.start(Side::A, &a, &[]);
    lab.start(Side::B, &b, &[]);
    lab.wait_ready(&[Side::A, Side::B]);
    eprintln!("tunnel-pod pair ready after {:?}", t0.elapsed());
    let status = |side: Side| -> serde_json::Value {
        match lab.http(side, "/status") {
            Some((200, body)) => serde_json::from_str(&body).unwrap_or_default(),
            other => panic!("/status {side:?}: {other:?}"),
        }
    };
    let (sa, sb) = (status(Side::A), status(Side::B));
    let (ia, ib) = (&sa["ikeSas"][0], &sb["ikeSas"][0]);
    assert_eq!(
        (&ia["spiI"], &ia["spiR"]),
        (&ib["spiI"], &ib["spiR"]),
        "{sa}\n{sb}"
    );
    assert_eq!(
        (&ia["initiator"], &ib["initiator"]),
        (&false.into(), &true.into())
    );
    assert_eq!(
        (&ia["childSas"][0]["spiIn"], &ia["childSas"][0]["spiOut"]),
        (&ib["childSas"][0]["spiOut"], &ib["childSas"][0]["spiIn"])
    );
    assert_eq!(sb["dial"]["state"], "established", "{sb}");
    assert!(
        sa.get("dial").is_none(),
        "the responder does not dial: {sa}"
    );
    for side in Side::BOTH {
        let out = lab.ping_through(side, 5);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("5 received"),
            "ping from {side:?}{}",
            lab.logs()
        );
    }
    let old = ib["spiI"].clone();
    lab.stop(Side::A, Duration::from_secs(5));
    lab.start(Side::A, &a, &[]);
    let t1 = Instant::now();
    let again = wait_for(Duration::from_secs(30), Duration::from_millis(200), || {
        let s = lab.http(Side::A, "/status")?.1;
        let v: serde_json::Value = serde_json::from_str(&s).ok()?;
        let ready = lab.status(Side::A, "/readyz") == Some(200)
            && lab.status(Side::B, "/readyz") == Some(200);
        (ready && v["ikeSas"][0]["spiI"] != old).then_some(())
    });
    assert!(
        again.is_some(),
        "no new IKE SA after A restarted{}",
        lab.logs()
    );
    eprintln!(
        "A restarted: B dialed again, ready after {:?}",
        t1.elapsed()
    );
    let m = lab.metrics(Side::B);
    assert_eq!(m.get(DIALS, &[("result", "established")]), 2.0);
    assert_eq!(pod_sas_of(&lab, Side::B), 1, "{}", lab.logs());
}

/// How many IKE SAs a side's `/status` lists.
fn pod_sas_of(lab: &Lab, side: Side) -> usize {
    lab.http(side, "/status")
        .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
        .and_then(|v| v["ikeSas"].as_array().map(Vec::len))
        .unwrap_or(0)
}

/// The router dials too, at the same moment (charon starts with `start_action = start` while
/// tunnel-pod retransmits its IKE_SA_INIT): whatever came up, one IKE SA remains on both ends,
/// the same one, and carries the pings.
#[test]
#[ignore = "needs root, network namespaces and strongSwan"]
fn both_dial_one_ike_sa_remains() {
    let mut rig = Rig::new(BASE, None);
    std::thread::sleep(Duration::from_millis(1200));
    let mut conn = router_conn(&BASE);
    conn.start_action = "start";
    rig.start_router(conn);
    let settled = wait_for(Duration::from_secs(30), Duration::from_millis(500), || {
        let swan = rig.router().list_sas();
        let pod = pod_sas(&rig.lab);
        (swan.len() == 1 && pod.len() == 1 && swan[0].installed().is_some()).then_some(())
    });
    let log = rig.router().full_log();
    eprintln!(
        "both dialed: the router initiated {} and answered {} IKE_SA_INIT; settled: {}",
        log.matches("generating IKE_SA_INIT request").count(),
        log.matches("parsed IKE_SA_INIT request").count(),
        settled.is_some()
    );
    assert!(
        settled.is_some(),
        "not one IKE SA on each end: router {:?}, tunnel-pod {:?}{}",
        rig.router().list_sas(),
        pod_sas(&rig.lab),
        rig.logs()
    );
    let sa = rig.wait_up(Duration::from_secs(5));
    rig.assert_mirrored(&sa);
    rig.pings();
}
