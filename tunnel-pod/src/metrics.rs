//! Prometheus metrics of one tunnel endpoint. The per-packet counters are resolved once at start,
//! so the data path pays one relaxed atomic add per counter and never takes a lock.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::drops::DropReason;
use crate::health::State;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExchangeLabel {
    exchange: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotifyLabel {
    notify: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabel {
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DialLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// SA synchronisation between anycast replicas (`sync`): exported by every IPsec endpoint,
/// at 0 without sync.
#[derive(Debug)]
pub struct SyncMetrics {
    publishes: Family<ResultLabel, Counter>,
    pub installs: Counter,
    claims: Family<ResultLabel, Counter>,
    /// publishedAt of a generation → installed here.
    pub latency: Histogram,
    pub owner: Gauge,
    pub generation: Gauge,
    /// Writes to the API (publishes, claims, releases and acks): the lab's writes per rekey.
    writes: Family<KindLabel, Counter>,
    pub errors: Counter,
}

impl Default for SyncMetrics {
    fn default() -> Self {
        SyncMetrics {
            publishes: Family::default(),
            installs: Counter::default(),
            claims: Family::default(),
            latency: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            owner: Gauge::default(),
            generation: Gauge::default(),
            writes: Family::default(),
            errors: Counter::default(),
        }
    }
}

impl SyncMetrics {
    fn register(&self, registry: &mut Registry) {
        for result in ["ok", "conflict", "error"] {
            let _ = self.publishes.get_or_create(&ResultLabel { result });
        }
        for result in ["ok", "lost", "error"] {
            let _ = self.claims.get_or_create(&ResultLabel { result });
        }
        for kind in ["state", "ack"] {
            let _ = self.writes.get_or_create(&KindLabel { kind });
        }
        registry.register(
            "sa_sync_publishes",
            "Writes of the shared SA state (compare-and-swap), by result",
            self.publishes.clone(),
        );
        registry.register(
            "sa_sync_installs",
            "Generations of the shared SA state installed from the Secret",
            self.installs.clone(),
        );
        registry.register(
            "sa_sync_claims",
            "Claims of IKE ownership, by result",
            self.claims.clone(),
        );
        registry.register(
            "sa_sync_latency_seconds",
            "SA propagation: from a generation's publishedAt to its install here",
            self.latency.clone(),
        );
        registry.register(
            "ike_owner",
            "1 while this replica owns the tunnel's IKE SAs",
            self.owner.clone(),
        );
        registry.register(
            "sa_sync_generation",
            "The generation of the shared SA state installed or published here",
            self.generation.clone(),
        );
        registry.register(
            "sa_sync_api_writes",
            "Writes to the Kubernetes API: state (publish, claim, release) and ack",
            self.writes.clone(),
        );
        registry.register(
            "sa_sync_errors",
            "Shared SA states that could not be read or installed (malformed, foreign)",
            self.errors.clone(),
        );
    }

    pub fn published(&self, result: &'static str) {
        self.publishes.get_or_create(&ResultLabel { result }).inc();
    }
    pub fn claimed(&self, result: &'static str) {
        self.claims.get_or_create(&ResultLabel { result }).inc();
    }
    pub fn wrote(&self, kind: &'static str, n: u64) {
        self.writes.get_or_create(&KindLabel { kind }).inc_by(n);
    }
}

/// The IKE task's series. Labels come from closed sets (exchange and notify names of the IANA
/// registry as the `ike` crate knows them, "other" beyond), so their number stays bounded.
#[derive(Debug, Default)]
pub struct IkeMetrics {
    pub ike_sas: Gauge,
    pub child_sas: Gauge,
    rekeys: Family<KindLabel, Counter>,
    exchanges: Family<ExchangeLabel, Counter>,
    failures: Family<NotifyLabel, Counter>,
    drops: Family<ReasonLabel, Counter>,
    /// Strays handed to (sent) and taken from (received) other pods of the endpoint (`lobby`).
    handovers: Family<DirectionLabel, Counter>,
    /// Strays (datagrams on an unconnected socket) by what the ownership rule decided.
    strays: Family<DecisionLabel, Counter>,
    /// 1 while this pod holds its handover name, 0 while another pod does (ambiguous tunnels).
    pub demux_bound: Gauge,
    /// Initiator mode: dials of the router by how they ended.
    dials: Family<DialLabel, Counter>,
    half_open: Gauge,
    cookies_sent: Counter,
}

impl IkeMetrics {
    /// Drop reasons the shell adds to the core's.
    pub const SHELL_DROPS: [&'static str; 2] = ["unexpected_source", "send_error"];

    fn register(&self, registry: &mut Registry) {
        // Every drop reason, rekey kind, exchange and error notify is exported from the start
        // (at 0), as the data path does: a series born on its first event reads as "missing".
        for r in ike::core::DropReason::ALL {
            let _ = self
                .drops
                .get_or_create(&ReasonLabel { reason: r.as_str() });
        }
        for reason in Self::SHELL_DROPS {
            let _ = self.drops.get_or_create(&ReasonLabel { reason });
        }
        self.register_demux(registry);
        for kind in ["ike", "child"] {
            let _ = self.rekeys.get_or_create(&KindLabel { kind });
        }
        for exchange in ike::wire::ExchangeType::ALL.iter().filter_map(|x| x.name()) {
            for result in ["ok", "failed"] {
                let _ = self
                    .exchanges
                    .get_or_create(&ExchangeLabel { exchange, result });
            }
        }
        let errors = ike::wire::NotifyType::ALL
            .iter()
            .filter(|n| n.is_error())
            .filter_map(|n| n.name());
        for notify in errors.chain(["other"]) {
            let _ = self.failures.get_or_create(&NotifyLabel { notify });
        }
        for d in crate::ikev2::dial::Outcome::ALL {
            let _ = self.dials.get_or_create(&DialLabel { result: d.as_str() });
        }
        registry.register(
            "ike_dials",
            "Initiator mode: IKE SAs dialed, by result",
            self.dials.clone(),
        );
        registry.register("ike_sas", "IKE SAs established", self.ike_sas.clone());
        registry.register(
            "child_sas",
            "IPsec Child SAs installed in the data path",
            self.child_sas.clone(),
        );
        registry.register(
            "ike_rekeys",
            "Rekeys completed, by kind (ike, child)",
            self.rekeys.clone(),
        );
        registry.register(
            "ike_exchanges",
            "IKE exchanges completed, by exchange type and result",
            self.exchanges.clone(),
        );
        registry.register(
            "ike_failures",
            "IKE failures by the error notification sent or received",
            self.failures.clone(),
        );
        registry.register(
            "ike_drops",
            "IKE messages dropped, by reason",
            self.drops.clone(),
        );
        registry.register(
            "ike_half_open",
            "Half-open IKE SAs (IKE_SA_INIT answered, IKE_AUTH not yet) held",
            self.half_open.clone(),
        );
        registry.register(
            "ike_cookies_sent",
            "IKE_SA_INIT requests answered with a COOKIE (RFC 7296 §2.6)",
            self.cookies_sent.clone(),
        );
    }

    /// The core's flood figures: half-open SAs now, and COOKIEs sent since the start (the
    /// counter follows the core's total).
    pub fn flood(&self, half_open: usize, cookies_sent_total: u64) {
        self.half_open
            .set(i64::try_from(half_open).unwrap_or(i64::MAX));
        let behind = cookies_sent_total.saturating_sub(self.cookies_sent.get());
        if behind > 0 {
            self.cookies_sent.inc_by(behind);
        }
    }

    /// Drop reasons of the endpoint demultiplexing (`lobby`).
    pub const DEMUX_DROPS: [&'static str; 3] =
        ["no_tunnel", "handover_malformed", "handover_refused"];

    fn register_demux(&self, registry: &mut Registry) {
        for reason in Self::DEMUX_DROPS {
            let _ = self.drops.get_or_create(&ReasonLabel { reason });
        }
        for direction in ["sent", "received"] {
            let _ = self.handovers.get_or_create(&DirectionLabel { direction });
        }
        for decision in Self::STRAY_DECISIONS {
            let _ = self.strays.get_or_create(&DecisionLabel { decision });
        }
        registry.register(
            "ike_strays",
            "Datagrams on an unconnected UDP socket of the shared endpoint, by what the \
             ownership rule decided (mine, handed_over, dropped)",
            self.strays.clone(),
        );
        registry.register(
            "ike_handovers",
            "Datagrams for another tunnel-pod of the endpoint handed over (sent) or taken (received)",
            self.handovers.clone(),
        );
        registry.register(
            "ike_demux_bound",
            "1 while this pod holds its handover name; 0: another pod serves the same peer",
            self.demux_bound.clone(),
        );
    }

    pub const STRAY_DECISIONS: [&'static str; 3] = ["mine", "handed_over", "dropped"];

    pub fn stray(&self, decision: &'static str) {
        self.strays.get_or_create(&DecisionLabel { decision }).inc();
    }

    pub fn handover(&self, direction: &'static str) {
        self.handovers
            .get_or_create(&DirectionLabel { direction })
            .inc();
    }

    pub fn rekeyed(&self, kind: &'static str) {
        self.rekeys.get_or_create(&KindLabel { kind }).inc();
    }

    pub fn exchange(&self, exchange: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.exchanges
            .get_or_create(&ExchangeLabel { exchange, result })
            .inc();
    }

    pub fn failure(&self, notify: &'static str) {
        self.failures.get_or_create(&NotifyLabel { notify }).inc();
    }

    pub fn dropped(&self, reason: &'static str) {
        self.drops.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn dialed(&self, result: &'static str) {
        self.dials.get_or_create(&DialLabel { result }).inc();
    }
}

/// Packets and bytes one way through the tunnel.
#[derive(Clone, Debug, Default)]
pub struct Flow {
    pub packets: Counter,
    pub bytes: Counter,
}

impl Flow {
    #[inline]
    pub fn count(&self, bytes: usize) {
        self.count_n(1, bytes);
    }

    /// `packets` packets of `bytes` bytes in all (a burst, or a coalesced packet's segments).
    #[inline]
    pub fn count_n(&self, packets: usize, bytes: usize) {
        self.packets.inc_by(packets as u64);
        self.bytes.inc_by(bytes as u64);
    }
}

pub struct Metrics {
    registry: Registry,
    /// TUN → tunnel (encapsulated and sent).
    pub egress: Flow,
    /// Tunnel → TUN (received and decapsulated).
    pub ingress: Flow,
    drops: Vec<Counter>,
    health: Family<StateLabel, Gauge>,
    pub probes_sent: Counter,
    pub probes_ok: Counter,
    pub probes_lost: Counter,
    pub probe_rtt: Histogram,
    pub probes_reflected: Counter,
    pub keepalives_reflected: Counter,
    pub socket_errors: Counter,
    pub nat_keepalives_sent: Counter,
    /// ESP: 1 while UDP GSO (send) / GRO (receive) is on, 0 when off or refused by the kernel.
    pub udp_offload_send: Gauge,
    pub udp_offload_receive: Gauge,
    /// Datagrams sent in GSO calls, and the calls; coalesced datagrams received, and what they
    /// held: segments per syscall is the one over the other.
    pub udp_gso_segments: Counter,
    pub udp_gso_sends: Counter,
    pub udp_gro_segments: Counter,
    pub udp_gro_datagrams: Counter,
    /// GRE packets received already coalesced by the host's GRO.
    pub gre_gro_packets: Counter,
    /// Packets our coalescer wrote to the TUN glued from several received TCP segments, and
    /// the segments they held.
    pub tun_gro_packets: Counter,
    pub tun_gro_segments: Counter,
    /// TUN queues, one egress worker each (`--queues`).
    pub tun_queues: Gauge,
    /// GRE: 1 while egress bursts go through the AF_PACKET ring, 0 on the raw socket.
    pub gre_tx_packet: Gauge,
    pub ike: IkeMetrics,
    pub sync: SyncMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("magictunnel");
        let packets = Family::<DirectionLabel, Counter>::default();
        let bytes = Family::<DirectionLabel, Counter>::default();
        let flow = |direction| Flow {
            packets: packets.get_or_create(&DirectionLabel { direction }).clone(),
            bytes: bytes.get_or_create(&DirectionLabel { direction }).clone(),
        };
        let (egress, ingress) = (flow("egress"), flow("ingress"));
        registry.register(
            "tunnel_packets",
            "Inner packets carried: egress = TUN to tunnel, ingress = tunnel to TUN",
            packets,
        );
        registry.register("tunnel_bytes", "Inner bytes carried, by direction", bytes);
        let drop_family = Family::<ReasonLabel, Counter>::default();
        let drops = DropReason::ALL
            .iter()
            .map(|d| {
                drop_family
                    .get_or_create(&ReasonLabel { reason: d.as_str() })
                    .clone()
            })
            .collect();
        registry.register("tunnel_drops", "Packets dropped, by reason", drop_family);
        let health = Family::<StateLabel, Gauge>::default();
        registry.register(
            "health_state",
            "Tunnel health: 1 for the current state",
            health.clone(),
        );
        let probes = Family::<ResultLabel, Counter>::default();
        let probe = |result| probes.get_or_create(&ResultLabel { result }).clone();
        let (probes_sent, probes_ok, probes_lost) = (probe("sent"), probe("ok"), probe("lost"));
        registry.register(
            "probes",
            "Health probes: sent, ok (returned), lost (timed out)",
            probes,
        );
        let probe_rtt = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "probe_rtt_seconds",
            "Round-trip time of returned health probes",
            probe_rtt.clone(),
        );
        let probes_reflected = Counter::default();
        registry.register(
            "probes_reflected",
            "The peer's reply-style probes sent back through the tunnel",
            probes_reflected.clone(),
        );
        let keepalives_reflected = Counter::default();
        registry.register(
            "gre_keepalives_reflected",
            "GRE keepalives (RFC 2784 packets addressed back to their sender) returned",
            keepalives_reflected.clone(),
        );
        let socket_errors = Counter::default();
        registry.register(
            "socket_errors",
            "Errors reported on the transport socket (ICMP from the path: unreachable, too big)",
            socket_errors.clone(),
        );
        let nat_keepalives_sent = Counter::default();
        registry.register(
            "nat_keepalives_sent",
            "NAT keepalives (RFC 3948 §2.3) sent on the ESP port",
            nat_keepalives_sent.clone(),
        );
        let udp_offload = Family::<DirectionLabel, Gauge>::default();
        let udp_offload_send = udp_offload
            .get_or_create(&DirectionLabel { direction: "send" })
            .clone();
        let udp_offload_receive = udp_offload
            .get_or_create(&DirectionLabel {
                direction: "receive",
            })
            .clone();
        registry.register(
            "udp_offload",
            "ESP in UDP: 1 while UDP GSO (send) or GRO (receive) is on, 0 off or refused",
            udp_offload,
        );
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let udp_gso_segments = counter(
            &mut registry,
            "udp_gso_segments",
            "ESP datagrams sent in UDP GSO calls",
        );
        let udp_gso_sends = counter(&mut registry, "udp_gso_sends", "UDP GSO send calls");
        let udp_gro_segments = counter(
            &mut registry,
            "udp_gro_segments",
            "ESP datagrams received coalesced by UDP GRO",
        );
        let udp_gro_datagrams = counter(
            &mut registry,
            "udp_gro_datagrams",
            "Coalesced UDP GRO datagrams received (each holding several ESP datagrams)",
        );
        let gre_gro_packets = counter(
            &mut registry,
            "gre_gro_packets",
            "GRE packets received already coalesced by the host's GRO, each written to the TUN interface as one TSO packet",
        );
        let tun_gro_packets = counter(
            &mut registry,
            "tun_gro_packets",
            "TCP packets written to the TUN interface coalesced from several received segments (IPv4 or IPv6)",
        );
        let tun_gro_segments = counter(
            &mut registry,
            "tun_gro_segments",
            "Received TCP segments written to the TUN interface inside coalesced packets",
        );
        let tun_queues = Gauge::default();
        registry.register(
            "tun_queues",
            "Queues of the TUN interface, each read by its own egress thread",
            tun_queues.clone(),
        );
        let gre_tx_packet = Gauge::default();
        registry.register(
            "gre_tx_packet",
            "GRE egress: 1 through the AF_PACKET TX ring, 0 through the raw socket (unresolved link, or --gre-tx raw)",
            gre_tx_packet.clone(),
        );
        let ike = IkeMetrics::default();
        ike.register(&mut registry);
        let sync = SyncMetrics::default();
        sync.register(&mut registry);
        let m = Metrics {
            sync,
            registry,
            ike,
            egress,
            ingress,
            drops,
            health,
            probes_sent,
            probes_ok,
            probes_lost,
            probe_rtt,
            probes_reflected,
            keepalives_reflected,
            socket_errors,
            nat_keepalives_sent,
            udp_offload_send,
            udp_offload_receive,
            udp_gso_segments,
            udp_gso_sends,
            udp_gro_segments,
            udp_gro_datagrams,
            gre_gro_packets,
            tun_gro_packets,
            tun_gro_segments,
            tun_queues,
            gre_tx_packet,
        };
        m.set_health(State::Unknown);
        m
    }
}

impl Metrics {
    #[inline]
    pub fn dropped(&self, reason: DropReason) {
        if let Some(c) = self.drops.get(reason.index()) {
            c.inc();
        }
    }

    pub fn dropped_n(&self, reason: DropReason, n: u64) {
        if let Some(c) = self.drops.get(reason.index()) {
            c.inc_by(n);
        }
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops.get(reason.index()).map_or(0, Counter::get)
    }

    pub fn set_health(&self, state: State) {
        for s in State::ALL {
            self.health
                .get_or_create(&StateLabel { state: s.as_str() })
                .set(i64::from(s == state));
        }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        render(&self.registry)
    }
}

pub use magictunnel_types::metrics_text::render;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_drop_reason_and_state_is_exported() {
        let m = Metrics::default();
        m.dropped(DropReason::KeyMismatch);
        m.egress.count(100);
        m.set_health(State::Down);
        let text = m.render();
        for d in DropReason::ALL {
            assert!(
                text.contains(&format!(
                    "magictunnel_tunnel_drops_total{{reason=\"{}\"}}",
                    d.as_str()
                )),
                "{d:?}"
            );
        }
        assert!(text.contains("magictunnel_tunnel_drops_total{reason=\"key_mismatch\"} 1"));
        assert!(text.contains("magictunnel_tunnel_bytes_total{direction=\"egress\"} 100"));
        assert!(text.contains("magictunnel_health_state{state=\"down\"} 1"));
        assert!(text.contains("magictunnel_health_state{state=\"healthy\"} 0"));
        assert_eq!(m.drops(DropReason::KeyMismatch), 1);
    }

    #[test]
    fn every_ike_drop_reason_is_exported_from_the_start() {
        let m = Metrics::default();
        let text = m.render();
        let reasons = ike::core::DropReason::ALL.map(ike::core::DropReason::as_str);
        for r in reasons.iter().chain(IkeMetrics::SHELL_DROPS.iter()) {
            assert!(
                text.contains(&format!("magictunnel_ike_drops_total{{reason=\"{r}\"}} 0")),
                "{r}: {text}"
            );
        }
        assert!(text.contains("magictunnel_ike_rekeys_total{kind=\"child\"} 0"));
        for notify in [
            "NO_PROPOSAL_CHOSEN",
            "AUTHENTICATION_FAILED",
            "TS_UNACCEPTABLE",
            "other",
        ] {
            assert!(
                text.contains(&format!(
                    "magictunnel_ike_failures_total{{notify=\"{notify}\"}} 0"
                )),
                "{notify}"
            );
        }
        assert!(text.contains(
            "magictunnel_ike_exchanges_total{exchange=\"IKE_AUTH\",result=\"failed\"} 0"
        ));
        for r in IkeMetrics::DEMUX_DROPS {
            assert!(text.contains(&format!("magictunnel_ike_drops_total{{reason=\"{r}\"}} 0")));
        }
        for d in IkeMetrics::STRAY_DECISIONS {
            assert!(text.contains(&format!(
                "magictunnel_ike_strays_total{{decision=\"{d}\"}} 0"
            )));
        }
        assert!(text.contains("magictunnel_ike_demux_bound 0"));
        for d in ["sent", "received"] {
            assert!(text.contains(&format!(
                "magictunnel_ike_handovers_total{{direction=\"{d}\"}} 0"
            )));
        }
        for r in [
            "established",
            "timeout",
            "auth_failed",
            "no_proposal",
            "error",
        ] {
            assert!(
                text.contains(&format!("magictunnel_ike_dials_total{{result=\"{r}\"}} 0")),
                "dials result {r} missing"
            );
        }
        for r in [
            "half_open_cap",
            "half_open_per_source",
            "sa_cap",
            "cookie_required",
            "cookie_invalid",
        ] {
            assert!(reasons.contains(&r), "{r}");
        }
        assert!(text.contains("magictunnel_ike_half_open 0"), "{text}");
        assert!(
            text.contains("magictunnel_ike_cookies_sent_total 0"),
            "{text}"
        );
        m.ike.dropped("cookie_required");
        m.ike.flood(7, 3);
        m.ike.flood(5, 4);
        let text = m.render();
        assert!(text.contains("magictunnel_ike_drops_total{reason=\"cookie_required\"} 1"));
        assert!(text.contains("magictunnel_ike_half_open 5"), "{text}");
        assert!(
            text.contains("magictunnel_ike_cookies_sent_total 4"),
            "{text}"
        );
    }
}
