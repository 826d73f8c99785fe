//! The IKE task: the thin I/O shell around the sans-IO core in the `ike` crate.
//!
//! It feeds the core what arrives on UDP 500 and on UDP 4500 (the data path's receive thread
//! separates IKE from ESP by the non-ESP marker and passes IKE on; strays from the shared
//! endpoint's lobbies and other pods' handovers come through `sockets`), drives its
//! timers, and carries out what the core asks: datagrams to send, Child SAs to install into the
//! ESP engine, activate and retire. It also turns the core's events into log lines, metrics and
//! `/status`, and asks for a Child SA rekey when the data path says an SA is running out.

pub mod dial;
pub mod policy;
pub mod sockets;
pub mod sync;

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use ike::core::{ChildSa, Endpoint, Event, IkeSaStatus, Output, PskSource};
use ike::crypto::Secret;
use ring::rand::SystemRandom;
use serde_json::json;
use tokio::sync::{Notify, mpsc};

use crate::config::{IpsecConfig, Psk, TunnelConfig};
use crate::dataplane::{IkeDatagram, Path};
use crate::esp::sa::{Inbound, Outbound};
use crate::http::Status;
use crate::io;
use crate::run::{IKE_NATT_PORT, IKE_PORT};
use crate::wire::udp_encap::{Datagram, NON_ESP_MARKER, classify};

/// The largest IKE message we read on port 500 (RFC 7296 §2: at least 1280 must be accepted;
/// unfragmented IKE_AUTH messages with many payloads can be larger).
const MAX_IKE_MESSAGE: usize = 65_535;
/// How often the shell looks at the data path's SAs (sequence numbers and byte lifetimes).
const SA_CHECK: Duration = Duration::from_secs(1);
/// Up to this many IKE SAs `/status` is rebuilt after every step; beyond, every
/// `PUBLISH_INTERVAL`.
const PUBLISH_EVERY_SA: usize = 32;
const PUBLISH_INTERVAL: Duration = Duration::from_millis(250);

/// Reads the PSK for every new IKE SA: from the mounted file when there is one (so that a
/// rotated Secret applies without a restart, once the kubelet has refreshed the file), else
/// the inline key. A file that cannot be read gives `None`: the IKE SA fails to authenticate
/// and the log says why (never the key).
struct PskReader {
    inline: Option<Psk>,
    file: Option<PathBuf>,
}

impl PskSource for PskReader {
    fn psk(&self) -> Option<Secret> {
        if let Some(path) = &self.file {
            // The operator's rule (`psk_from_bytes`): one rule on both sides of the Secret.
            return match crate::config::read_psk_file(path) {
                Ok(psk) => Some(Secret::new(psk.as_bytes().to_vec())),
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "cannot read the PSK");
                    None
                }
            };
        }
        self.inline
            .as_ref()
            .map(|p| Secret::new(p.as_bytes().to_vec()))
    }
}

/// Warnings that anyone can provoke (an IKE_SA_INIT with odd proposals costs a spoofed packet,
/// a failed AUTH one exchange) are logged at most `LOG_BURST` per `LOG_WINDOW`; the metrics
/// still count every one, and the number left out is logged when the window ends.
const LOG_BURST: u32 = 20;
const LOG_WINDOW: Duration = Duration::from_secs(10);

struct LogBudget {
    window_start: Instant,
    logged: u32,
    suppressed: u64,
}

impl LogBudget {
    fn new(now: Instant) -> Self {
        LogBudget {
            window_start: now,
            logged: 0,
            suppressed: 0,
        }
    }

    /// May one more warning be logged now? The second value is how many the window that just
    /// ended left out (to be reported once).
    fn allow(&mut self, now: Instant) -> (bool, u64) {
        let mut ended = 0;
        if now.saturating_duration_since(self.window_start) >= LOG_WINDOW {
            ended = std::mem::take(&mut self.suppressed);
            self.window_start = now;
            self.logged = 0;
        }
        if self.logged < LOG_BURST {
            self.logged = self.logged.saturating_add(1);
            (true, ended)
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            (false, ended)
        }
    }
}

pub struct Shell {
    endpoint: Endpoint,
    path: Arc<Path>,
    sockets: sockets::Sockets,
    local: Ipv4Addr,
    /// When set, IKE is accepted only from this address (the router, or the NAT in front of it).
    customer: Option<Ipv4Addr>,
    status: Arc<Status>,
    replay: Option<u32>,
    /// Installed but not yet active outbound SAs (a rekey waits for the old SA's Delete).
    pending: HashMap<u32, Arc<Outbound>>,
    /// Outbound SPI → inbound SPI of each installed Child SA, for rekey requests.
    children: HashMap<u32, u32>,
    /// Inbound SPIs a rekey was already asked for.
    rekey_asked: HashSet<u32>,
    rng: SystemRandom,
    log_budget: LogBudget,
    /// Initiator mode: when to dial the router (see [`dial`]).
    dial: Option<dial::Dialer>,
    /// Why the dial in flight failed, when an event of this step said so.
    dial_hint: Option<dial::Outcome>,
    /// IKE SAs from IKE_AUTH through their rekeys, to spot a dial collision (initiator mode).
    lineages: dial::Lineages,
    /// Duplicates to delete (a dial collision).
    duplicates: Vec<(u64, u64)>,
    /// The router's own IKE SA came up: an unanswered dial of ours is abandoned.
    abandon_dial: bool,
    /// When `/status`, the SA gauges and readiness were last rebuilt (see `publish`).
    published: Option<Instant>,
    /// Anycast replicas: this one's index and how many send on each SA (`--replica`,
    /// `replicas`); with more than one, outbound SAs use the replica's sender slot.
    replica: u8,
    replicas: u8,
    /// Sync mode (`ipsec.sync`): the SAs are shared through the tunnel's Secret.
    sync: Option<sync::SyncState>,
}

impl Shell {
    pub fn new(
        config: &TunnelConfig,
        ipsec: &IpsecConfig,
        path: Arc<Path>,
        sockets: sockets::Sockets,
        status: Arc<Status>,
    ) -> Result<Self> {
        let core = policy::core_config(config, ipsec)?;
        let psk = PskReader {
            inline: ipsec.psk.clone(),
            file: ipsec.psk_file.clone(),
        };
        Ok(Shell {
            endpoint: Endpoint::new(core, Box::new(psk)),
            path,
            sockets,
            local: config.local_endpoint,
            customer: config.customer_endpoint,
            status,
            replay: ipsec.replay(),
            pending: HashMap::new(),
            children: HashMap::new(),
            rekey_asked: HashSet::new(),
            rng: SystemRandom::new(),
            log_budget: LogBudget::new(Instant::now()),
            dial: config
                .customer_endpoint
                .filter(|_| ipsec.initiate)
                .map(|_| dial::Dialer::new(Instant::now())),
            dial_hint: None,
            lineages: dial::Lineages::default(),
            duplicates: Vec::new(),
            abandon_dial: false,
            published: None,
            replica: 0,
            replicas: config.replicas.max(1),
            sync: None,
        })
    }

    /// This replica's index among `replicas` (`tunnel-pod run --replica`).
    pub fn with_replica(mut self, index: u8) -> Self {
        self.replica = index;
        self
    }

    /// Sync mode: the SAs are shared with the other replicas through the SA Secret.
    pub fn with_sync(mut self, setup: sync::SyncSetup) -> Self {
        self.status.set_sync_pending(true);
        self.sync = Some(sync::SyncState::new(setup));
        self
    }

    /// The IKE_SA_INIT flood limits (`tunnel-pod run --ike-*`).
    pub fn with_limits(mut self, limits: ike::core::Limits) -> Self {
        self.endpoint = self.endpoint.with_limits(limits);
        self
    }

    fn esp(&self) -> Option<&crate::encap::Esp> {
        self.path.encap.as_esp()
    }

    /// One message from the network.
    fn receive(
        &mut self,
        local_port: u16,
        from: SocketAddrV4,
        bytes: &[u8],
        out: &mut Vec<Output>,
    ) {
        if self.customer.is_some_and(|c| c != *from.ip()) {
            self.path.metrics.ike.dropped("unexpected_source");
            return;
        }
        let path = ike::core::Path {
            local: SocketAddr::V4(SocketAddrV4::new(self.local, local_port)),
            remote: SocketAddr::V4(from),
        };
        if self.defer_for_claim(local_port, from, bytes) {
            return;
        }
        self.endpoint
            .handle(Instant::now(), path, bytes, &self.rng, out);
    }

    /// A datagram from the data socket's receive thread: IKE, or ESP of an unknown SPI; one not
    /// from the connected peer is a stray.
    fn on_data_socket(&mut self, d: IkeDatagram, out: &mut Vec<Output>) {
        if d.stray
            && !self
                .sockets
                .dispatch(IKE_NATT_PORT, d.from, &d.payload, &self.path.metrics)
        {
            return;
        }
        self.take(IKE_NATT_PORT, d.from, &d.payload, out);
    }

    /// What `sockets` received into `buf`.
    fn incoming(&mut self, incoming: sockets::Incoming, buf: &[u8], out: &mut Vec<Output>) {
        use sockets::Incoming;
        match incoming {
            Incoming::Direct { port, from, len } => {
                self.take(port, from, buf.get(..len).unwrap_or_default(), out);
            }
            Incoming::Stray { port, from, len } => {
                let payload = buf.get(..len).unwrap_or_default();
                if self
                    .sockets
                    .dispatch(port, from, payload, &self.path.metrics)
                {
                    self.take(port, from, payload, out);
                }
            }
            Incoming::Handover { uid, .. } if uid != Some(0) => {
                // Not a tunnel-pod: abstract names have no permissions, anyone may write.
                self.path.metrics.ike.dropped("handover_refused");
                tracing::debug!(uid = ?uid, "handover from a process not running as root dropped");
            }
            Incoming::Handover { len, .. } => {
                match crate::lobby::Handover::new_checked(buf.get(..len).unwrap_or_default()) {
                    Ok(h) => {
                        self.path.metrics.ike.handover("received");
                        self.take(h.local_port(), h.source(), h.payload(), out);
                    }
                    Err(e) => {
                        self.path.metrics.ike.dropped("handover_malformed");
                        tracing::debug!(error = %e, "handover dropped");
                    }
                }
            }
            Incoming::Claimed => {
                if let Some(c) = self.customer {
                    self.path.connect(SocketAddrV4::new(c, IKE_NATT_PORT));
                }
            }
        }
    }

    /// A datagram that is ours, as if it had arrived on our connected socket for `port`.
    fn take(&mut self, port: u16, from: SocketAddrV4, payload: &[u8], out: &mut Vec<Output>) {
        if port != IKE_NATT_PORT {
            self.receive(port, from, payload, out);
            return;
        }
        if payload.len() > crate::dataplane::MAX_DATAGRAM {
            // As the data socket would have (its receive slots are this long).
            self.path
                .metrics
                .dropped(crate::drops::DropReason::Oversized);
            return;
        }
        match classify(payload) {
            Datagram::Ike(message) => self.receive(port, from, message, out),
            Datagram::Esp(_) => self.path.receive_stray(payload),
            Datagram::Keepalive => self
                .path
                .metrics
                .dropped(crate::drops::DropReason::NatKeepalive),
            Datagram::Malformed => self
                .path
                .metrics
                .dropped(crate::drops::DropReason::Truncated),
        }
    }

    /// Carries out what the core asked.
    fn apply(&mut self, out: &mut Vec<Output>) {
        for o in out.drain(..) {
            match o {
                Output::Send { path, bytes } => self.send(path, &bytes),
                Output::InstallChild(sa) => self.install(*sa),
                Output::ActivateOutbound { outbound_spi } => {
                    if let (Some(sa), Some(esp)) =
                        (self.pending.remove(&outbound_spi), self.path.encap.as_esp())
                    {
                        esp.activate_outbound(sa);
                    }
                    self.share_activation(outbound_spi);
                }
                Output::RetireChild {
                    inbound_spi,
                    outbound_spi,
                } => {
                    self.forget_child(inbound_spi, outbound_spi);
                    self.share_retire(inbound_spi);
                }
                Output::PeerMoved { path } => {
                    // ESP travels on 4500 beside IKE: it follows the NAT's new mapping.
                    if let (SocketAddr::V4(peer), true, IKE_NATT_PORT) = (
                        path.remote,
                        self.path.encap.as_esp().is_some(),
                        path.local.port(),
                    ) {
                        tracing::info!(peer = %peer, "the peer moved (NAT mapping): ESP follows");
                        self.path.set_peer(peer);
                    }
                }
                Output::Event(e) => self.event(e),
            }
        }
        let mut more = Vec::new();
        self.follow_dial(&mut more);
        if !more.is_empty() {
            self.apply(&mut more);
            return;
        }
        self.publish();
    }

    /// Initiator mode: IKE_SA_INIT to the router when the dialer says so.
    fn dial_if_due(&mut self, out: &mut Vec<Output>) {
        let (Some(d), Some(customer)) = (self.dial.as_mut(), self.customer) else {
            return;
        };
        let now = Instant::now();
        if d.due().is_none_or(|t| t > now) {
            return;
        }
        // Anycast replicas: a follower's imported (passive) IKE SAs count as established in
        // the dialer's view, so only a replica with no shared SA dials.
        if d.poll(now, dial::View::of(&self.endpoint.status())) {
            tracing::info!(peer = %customer, attempt = d.failures() + 1, "dialing the router");
            let path = ike::core::Path {
                local: SocketAddr::V4(SocketAddrV4::new(self.local, IKE_PORT)),
                remote: SocketAddr::V4(SocketAddrV4::new(customer, IKE_PORT)),
            };
            self.endpoint.initiate(now, path, &self.rng, out);
        }
    }

    /// After the core ran: what became of the dial, and duplicates to delete.
    fn follow_dial(&mut self, out: &mut Vec<Output>) {
        let Some(d) = self.dial.as_mut() else {
            return;
        };
        let now = Instant::now();
        if std::mem::take(&mut self.abandon_dial) && self.endpoint.abandon_initiations() > 0 {
            tracing::info!("the router's own IKE SA came up: our unanswered dial is abandoned");
        }
        let sas = self.endpoint.status();
        self.lineages
            .retain(|spis| sas.iter().any(|s| (s.spi_i, s.spi_r) == spis));
        let mut jitter = [0u8; 8];
        let _ = ring::rand::SecureRandom::fill(&self.rng, &mut jitter);
        let hint = self.dial_hint.take();
        if let Some(outcome) = d.update(now, dial::View::of(&sas), hint, u64::from_le_bytes(jitter))
        {
            self.path.metrics.ike.dialed(outcome.as_str());
            let next = d
                .due()
                .map(|t| t.saturating_duration_since(now).as_secs_f32());
            let failures = d.failures();
            match outcome {
                dial::Outcome::Established => tracing::info!("dial: IKE SA established"),
                o if o.refused() && !self.may_warn() => {}
                o => tracing::warn!(
                    result = o.as_str(),
                    failures,
                    next_in_seconds = next.unwrap_or(0.0),
                    "dial failed: backing off"
                ),
            }
        }
        for spis in std::mem::take(&mut self.duplicates) {
            tracing::info!(
                spi_i = %format!("{:016x}", spis.0), spi_r = %format!("{:016x}", spis.1),
                "two IKE SAs with the router (both ends dialed): deleting this one"
            );
            self.endpoint.delete_ike_sa(now, spis, &self.rng, out);
        }
    }

    /// Sends now, or in sync mode holds the message until the state it results from is
    /// published (`sync::write_ahead`).
    fn send(&mut self, path: ike::core::Path, bytes: &[u8]) {
        match self.sync.as_mut() {
            Some(s) => s.held.push((path, bytes.to_vec())),
            None => self.send_now(path, bytes),
        }
    }

    fn send_now(&self, path: ike::core::Path, bytes: &[u8]) {
        let SocketAddr::V4(to) = path.remote else {
            return;
        };
        let sent = if path.local.port() == IKE_NATT_PORT {
            // RFC 3948 §2.2: IKE on the ESP port carries the non-ESP marker.
            let mut d = Vec::with_capacity(NON_ESP_MARKER.len() + bytes.len());
            d.extend_from_slice(&NON_ESP_MARKER);
            d.extend_from_slice(bytes);
            io::try_send(&self.path.socket.load(), &d, Some(to)).map(|_| ())
        } else {
            // A datagram socket with room in its buffer: never blocks in practice.
            self.sockets
                .lobby500
                .try_send_to(bytes, SocketAddr::V4(to))
                .map(|_| ())
        };
        if let Err(e) = sent {
            tracing::warn!(to = %to, error = %e, "sending an IKE message failed");
            self.path.metrics.ike.dropped("send_error");
        }
    }

    fn install(&mut self, sa: ChildSa) {
        if self.path.encap.as_esp().is_none() {
            return;
        }
        let built = (|| -> Result<(Inbound, Outbound)> {
            // Inbound the peer is the source: its selectors are the remote ones.
            let ts = policy::selectors(&sa.local_ts, &sa.remote_ts);
            let inbound = Inbound::new(
                policy::sa_params(&sa.inbound, ts.clone(), sa.bytes)?,
                self.replay,
            )?;
            let params = policy::sa_params(&sa.outbound, ts, sa.bytes)?;
            // Several replicas send on this SA: this one's slot of the IV and sequence spaces,
            // the epoch now (the followers get it with the state).
            let outbound = match self.slot() {
                Some(slot) => Outbound::shared(
                    params,
                    slot,
                    crate::sync::doc::unix_ms(std::time::SystemTime::now()),
                    sa.lifetime,
                )?,
                None => Outbound::new(params)?,
            };
            Ok((inbound, outbound))
        })();
        let (inbound, outbound) = match built {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot install the negotiated Child SA");
                return;
            }
        };
        self.share_child(&inbound, &outbound, sa.activate_outbound);
        if let (SocketAddr::V4(peer), Some(esp)) = (sa.path.remote, self.esp()) {
            // ESP follows IKE: behind a NAT that is the NAT's mapping of the router's port 4500.
            // Authenticated news: the data socket connects to it (on 4500, where ESP travels).
            if sa.path.local.port() == IKE_NATT_PORT {
                self.path.set_peer(peer);
            } else {
                esp.set_peer(peer);
            }
        }
        self.put_child(inbound, outbound, sa.activate_outbound);
    }

    /// Puts a Child SA into the ESP engine: inbound at once, outbound active or, until its
    /// [`Output::ActivateOutbound`], pending.
    fn put_child(&mut self, inbound: Inbound, outbound: Outbound, active: bool) {
        let path = self.path.clone();
        let Some(esp) = path.encap.as_esp() else {
            return;
        };
        let (spi_in, spi_out) = (inbound.spi(), outbound.spi());
        let outbound = Arc::new(outbound);
        esp.install_inbound(inbound);
        if active {
            esp.activate_outbound(outbound);
        } else {
            esp.add_outbound(outbound.clone());
            self.pending.insert(spi_out, outbound);
        }
        self.children.insert(spi_out, spi_in);
    }

    /// Takes a Child SA out of the ESP engine and out of the shell's bookkeeping.
    fn forget_child(&mut self, inbound_spi: u32, outbound_spi: u32) {
        if let Some(esp) = self.esp() {
            esp.retire(inbound_spi, outbound_spi);
        }
        self.pending.remove(&outbound_spi);
        self.children.remove(&outbound_spi);
        self.rekey_asked.remove(&inbound_spi);
    }

    /// Whether a warning the peer (or anyone) can provoke may be logged now.
    fn may_warn(&mut self) -> bool {
        let (allowed, left_out) = self.log_budget.allow(Instant::now());
        if left_out > 0 {
            tracing::warn!(
                left_out,
                "IKE warnings left out of the log (see the metrics)"
            );
        }
        allowed
    }

    fn event(&mut self, e: Event) {
        let noisy = matches!(
            e,
            Event::ChildFailed { .. }
                | Event::AuthFailed { .. }
                | Event::NoProposalChosen { .. }
                | Event::PeerError { .. }
        );
        let quiet = noisy && !self.may_warn();
        self.note_for_dial(&e);
        let m = &self.path.metrics.ike;
        match e {
            Event::IkeEstablished {
                spi_i,
                spi_r,
                initiator,
                peer_id,
                suite,
                path,
            } => tracing::info!(
                spi_i = %format!("{spi_i:016x}"), spi_r = %format!("{spi_r:016x}"), initiator,
                peer_id, suite, peer = %path.remote, local = %path.local, "IKE SA established"
            ),
            Event::IkeDeleted {
                spi_i,
                spi_r,
                reason,
            } => tracing::info!(
                spi_i = %format!("{spi_i:016x}"), spi_r = %format!("{spi_r:016x}"),
                reason = reason.as_str(), "IKE SA deleted"
            ),
            Event::IkeRekeyed {
                new_spi_i,
                new_spi_r,
                ..
            } => {
                m.rekeyed("ike");
                tracing::info!(
                    spi_i = %format!("{new_spi_i:016x}"), spi_r = %format!("{new_spi_r:016x}"),
                    "IKE SA rekeyed"
                );
            }
            Event::ChildEstablished {
                inbound_spi,
                outbound_spi,
                suite,
            } => tracing::info!(
                spi_in = %format!("{inbound_spi:08x}"), spi_out = %format!("{outbound_spi:08x}"),
                suite, "Child SA established"
            ),
            Event::ChildRekeyed {
                old_inbound_spi,
                new_inbound_spi,
            } => {
                m.rekeyed("child");
                tracing::info!(
                    old_spi_in = %format!("{old_inbound_spi:08x}"),
                    spi_in = %format!("{new_inbound_spi:08x}"), "Child SA rekeyed"
                );
            }
            Event::ChildDeleted {
                inbound_spi,
                outbound_spi,
            } => tracing::info!(
                spi_in = %format!("{inbound_spi:08x}"), spi_out = %format!("{outbound_spi:08x}"),
                "Child SA deleted"
            ),
            Event::ChildFailed { notify } => {
                m.failure(notify.name().unwrap_or("other"));
                if !quiet {
                    tracing::warn!(notify = %notify, "Child SA not created");
                }
            }
            Event::AuthFailed { peer_id } => {
                m.failure("AUTHENTICATION_FAILED");
                if !quiet {
                    tracing::warn!(
                        peer_id,
                        "IKE authentication failed: the peer's ID is not one of this tunnel's, or the PSK differs"
                    );
                }
            }
            Event::NoProposalChosen { offered, allowed } => {
                m.failure("NO_PROPOSAL_CHOSEN");
                if !quiet {
                    tracing::warn!(
                        "no acceptable proposal: peer offered {offered}; allowed: {allowed}"
                    );
                }
            }
            Event::PeerError { exchange, notify } => {
                m.failure(notify.name().unwrap_or("other"));
                if !quiet {
                    tracing::warn!(exchange = %exchange, notify = %notify, "the peer refused our request");
                }
            }
            Event::ExchangeDone { exchange, ok } => {
                m.exchange(exchange.name().unwrap_or("other"), ok);
            }
            Event::Dropped { reason } => {
                m.dropped(reason.as_str());
                tracing::debug!(reason = reason.as_str(), "IKE message dropped");
            }
            Event::PeerDead { spi_i, spi_r } => tracing::warn!(
                spi_i = %format!("{spi_i:016x}"), spi_r = %format!("{spi_r:016x}"),
                "the peer stopped answering (DPD): IKE SA and its Child SAs removed"
            ),
            Event::Retransmit { exchange } => {
                tracing::debug!(exchange = %exchange, "retransmitting our request");
            }
        }
    }

    /// What an event tells the dialer: why a dial failed, and the IKE SAs born from IKE_AUTH.
    fn note_for_dial(&mut self, e: &Event) {
        if self.dial.is_none() {
            return;
        }
        use ike::wire::NotifyType;
        let hint = match e {
            Event::AuthFailed { .. } => Some(dial::Outcome::AuthFailed),
            Event::NoProposalChosen { .. } => Some(dial::Outcome::NoProposal),
            Event::PeerError { notify, .. } if *notify == NotifyType::AUTHENTICATION_FAILED => {
                Some(dial::Outcome::AuthFailed)
            }
            Event::PeerError { notify, .. } if *notify == NotifyType::NO_PROPOSAL_CHOSEN => {
                Some(dial::Outcome::NoProposal)
            }
            Event::PeerError { .. } => Some(dial::Outcome::Error),
            Event::PeerDead { .. } => Some(dial::Outcome::Timeout),
            Event::IkeEstablished {
                spi_i,
                spi_r,
                initiator,
                ..
            } => {
                // Before our IKE_AUTH (and its INITIAL_CONTACT) went out: ours is abandoned.
                self.abandon_dial |= !initiator;
                self.duplicates
                    .extend(self.lineages.established((*spi_i, *spi_r)));
                None
            }
            Event::IkeRekeyed {
                old_spi_i,
                old_spi_r,
                new_spi_i,
                new_spi_r,
            } => {
                self.lineages
                    .rekeyed((*old_spi_i, *old_spi_r), (*new_spi_i, *new_spi_r));
                None
            }
            _ => None,
        };
        // The first reason of a step is the one that ended the dial.
        if self.dial_hint.is_none() {
            self.dial_hint = hint;
        }
    }

    /// Readiness, gauges and `/status` from the core's view of its SAs. Rebuilding them costs
    /// O(SAs) allocations (the JSON above all): with more than [`PUBLISH_EVERY_SA`] SAs they are
    /// rebuilt at most every [`PUBLISH_INTERVAL`] (the loop wakes at least every second, so they
    /// lag by at most about a second), else after every step. At 1,000 SAs rebuilding after every
    /// message made the IKE task spend most of its time here (BENCHMARKS.md, issue #10).
    fn publish(&mut self) {
        let flood = self.endpoint.stats();
        (self.path.metrics.ike).flood(flood.half_open, flood.cookies_sent);
        let now = Instant::now();
        let fresh = self
            .published
            .is_some_and(|t| now.saturating_duration_since(t) < PUBLISH_INTERVAL);
        if fresh && self.endpoint.sa_count() > PUBLISH_EVERY_SA {
            return;
        }
        self.published = Some(now);
        let sas = self.endpoint.status();
        let established = sas.iter().filter(|s| s.state == "established").count();
        let children: usize = sas.iter().map(|s| s.children.len()).sum();
        let up = self.esp().is_some_and(crate::encap::Esp::has_sas);
        self.status.set_child_sa_up(up && children > 0);
        self.path.metrics.ike.ike_sas.set(established as i64);
        self.path.metrics.ike.child_sas.set(children as i64);
        let mut json = status_json(&sas);
        if let Some(o) = json.as_object_mut() {
            let mut demux = self.sockets.state.to_json();
            // Where the data socket is connected (the kernel hands us that 4-tuple).
            demux["dataSocketPeer"] = self.path.connected.get().map(|p| p.to_string()).into();
            o.insert("demux".into(), demux);
        }
        self.path
            .metrics
            .ike
            .demux_bound
            .set(i64::from(self.sockets.state.bound));
        if let (Some(d), Some(m)) = (&self.dial, json.as_object_mut()) {
            m.insert("dial".into(), d.status(Instant::now()));
        }
        if let (Some(s), Some(m)) = (&self.sync, json.as_object_mut()) {
            m.insert("sync".into(), s.status_json());
        }
        self.status.set_sas(json);
    }

    /// Asks for a rekey of every Child SA whose outbound half nears its sequence or byte limit,
    /// once per SA; reports an SA that can send no more.
    fn check_sas(&mut self, out: &mut Vec<Output>) {
        let Some(esp) = self.path.encap.as_esp() else {
            return;
        };
        let mut exhausted = false;
        let mut due = Vec::new();
        for o in esp.outbound_sas() {
            exhausted |= o.is_exhausted();
            if o.needs_rekey()
                && let Some(&inbound) = self.children.get(&o.spi())
                && !self.rekey_asked.contains(&inbound)
            {
                due.push(inbound);
            }
        }
        self.status.set_sa_exhausted(exhausted);
        if self.sync.as_ref().is_some_and(|s| !s.engine.is_owner()) {
            // A follower's IKE SAs are passive: the owner rekeys (or the liveness claim).
            return;
        }
        for inbound in due {
            tracing::info!(spi_in = %format!("{inbound:08x}"), "Child SA near its limit: rekeying");
            self.rekey_asked.insert(inbound);
            self.endpoint
                .rekey_child(Instant::now(), inbound, &self.rng, out);
        }
    }
}

fn status_json(sas: &[IkeSaStatus]) -> serde_json::Value {
    let ike: Vec<_> = sas
        .iter()
        .map(|s| {
            let children: Vec<_> = s
                .children
                .iter()
                .map(|c| {
                    json!({
                        "spiIn": format!("{:08x}", c.inbound_spi),
                        "spiOut": format!("{:08x}", c.outbound_spi),
                        "suite": c.suite,
                        "localTs": c.local_ts.iter().map(policy::describe).collect::<Vec<_>>(),
                        "remoteTs": c.remote_ts.iter().map(policy::describe).collect::<Vec<_>>(),
                        "ageSeconds": c.age.as_secs(),
                        "outboundActive": c.outbound_active,
                    })
                })
                .collect();
            json!({
                "spiI": format!("{:016x}", s.spi_i),
                "spiR": format!("{:016x}", s.spi_r),
                "initiator": s.initiator,
                "state": s.state,
                "suite": s.suite,
                "local": s.path.local.to_string(),
                "peer": s.path.remote.to_string(),
                "peerId": s.peer_id,
                "natDetected": s.nat_detected,
                "ageSeconds": s.age.as_secs(),
                "childSas": children,
            })
        })
        .collect();
    json!({ "ikeSas": ike })
}

/// Runs until `shutdown` is notified; then deletes the IKE SA (RFC 7296 §1.4.1) and returns.
/// In sync mode it instead releases the tunnel's IKE ownership, if it holds it: the other
/// replicas carry the SAs on.
pub async fn run(mut shell: Shell, mut rx: mpsc::Receiver<IkeDatagram>, shutdown: Arc<Notify>) {
    let mut buf = vec![0u8; MAX_IKE_MESSAGE];
    let mut out = Vec::new();
    let mut next_check = tokio::time::Instant::now() + SA_CHECK;
    shell.sync_start().await;
    shell.publish();
    loop {
        let timer = shell
            .endpoint
            .next_timer()
            .map(tokio::time::Instant::from_std)
            .map_or(next_check, |t| t.min(next_check));
        let timer = shell
            .dial
            .as_ref()
            .and_then(dial::Dialer::due)
            .map(tokio::time::Instant::from_std)
            .map_or(timer, |t| t.min(timer));
        let sync_timer = shell.sync_deadline();
        let sync_on = shell.sync.is_some();
        tokio::select! {
            Some(d) = rx.recv() => shell.on_data_socket(d, &mut out),
            incoming = shell.sockets.recv(&mut buf) => shell.incoming(incoming, &buf, &mut out),
            Some(secret) = async {
                match shell.sync.as_mut() {
                    Some(s) => s.remote.recv().await,
                    None => std::future::pending().await,
                }
            }, if sync_on => shell.on_secret(secret),
            _ = async {
                match sync_timer {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            }, if sync_timer.is_some() => shell.sync_due().await,
            _ = tokio::time::sleep_until(timer) => {
                shell.endpoint.poll(Instant::now(), &shell.rng, &mut out);
                shell.dial_if_due(&mut out);
                if tokio::time::Instant::now() >= next_check {
                    next_check = tokio::time::Instant::now() + SA_CHECK;
                    shell.check_sas(&mut out);
                }
            }
            _ = shutdown.notified() => {
                if shell.sync.is_some() {
                    shell.sync_release().await;
                } else {
                    shell.endpoint.close(Instant::now(), &shell.rng, &mut out);
                    shell.apply(&mut out);
                }
                return;
            }
        }
        // Claim on receipt: ownership first, then the core sees the message.
        if let Some((port, from, bytes)) = shell.sync.as_mut().and_then(|s| s.claim_first.take()) {
            if shell.claim().await {
                shell.receive(port, from, &bytes, &mut out);
            } else {
                tracing::info!("IKE message dropped: the claim of ownership failed");
            }
        }
        shell.apply(&mut out);
        if shell.sync.is_some() {
            shell.write_ahead().await;
            shell.publish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provokable_warnings_are_rate_limited() {
        let t0 = Instant::now();
        let mut b = LogBudget::new(t0);
        for _ in 0..LOG_BURST {
            assert_eq!(b.allow(t0), (true, 0));
        }
        assert_eq!(b.allow(t0), (false, 0));
        assert_eq!(b.allow(t0 + Duration::from_secs(5)), (false, 0));
        // The next window logs again and reports what the last one left out, once.
        let t1 = t0 + LOG_WINDOW;
        assert_eq!(b.allow(t1), (true, 2));
        assert_eq!(b.allow(t1), (true, 0));
    }
}
