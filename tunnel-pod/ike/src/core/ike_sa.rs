//! One IKE SA: its states as types, the protected-message path (window, decryption,
//! reassembly), INFORMATIONAL, our own requests with retransmission, and timers.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ring::rand::SecureRandom;

use super::frag::{Added, Reassembly};
use super::msg::{self, header, notify};
use super::nat::NatState;
use super::proposal::EspChoice;
use super::{
    ChildStatus, Config, DeleteReason, DropReason, Event, IkeSaStatus, Output, Path,
    TrafficSelector, id_string, later,
};
use crate::crypto::{Group, IkeKeys, IkeSuite, KeyPair, Secret, SkCipher};
use crate::wire::{
    Delete, Encrypted, Error as WireError, ExchangeType, Header, Identification, NotifyType,
    Payload, ProtocolId, parse_payloads,
};

/// At most this many Child SAs per IKE SA.
pub const MAX_CHILDREN: usize = 16;
/// At most this many of our requests waiting for the window.
pub(super) const MAX_QUEUE: usize = 8;
/// First retransmission after this; doubled each time.
const RETX_FIRST: Duration = Duration::from_millis(500);
/// Transmissions of one request before the peer is declared dead.
const RETX_TRIES: u32 = 5;
/// After a failed rekey, try again this much later, plus up to `REKEY_RETRY_JITTER`: two
/// peers refusing each other's simultaneous IKE rekeys (TEMPORARY_FAILURE) must not retry
/// in lockstep.
const REKEY_RETRY: Duration = Duration::from_secs(10);
const REKEY_RETRY_JITTER_MS: u64 = 30_000;

/// What one call needs from the endpoint.
pub struct Ctx<'a> {
    pub now: Instant,
    pub rng: &'a dyn SecureRandom,
    pub config: &'a Config,
    pub out: &'a mut Vec<Output>,
    /// Our IKE SPIs in use (to keep new ones unique).
    pub ike_spis: Vec<u64>,
    /// Our inbound ESP SPIs in use.
    pub esp_spis: Vec<u32>,
}

impl Ctx<'_> {
    pub fn event(&mut self, e: Event) {
        self.out.push(Output::Event(e));
    }

    pub fn dropped(&mut self, reason: DropReason) {
        self.event(Event::Dropped { reason });
    }

    pub fn send(&mut self, path: Path, datagrams: &[Vec<u8>]) {
        for bytes in datagrams {
            self.out.push(Output::Send {
                path,
                bytes: bytes.clone(),
            });
        }
    }

    pub fn new_esp_spi(&mut self) -> Option<u32> {
        let s = msg::new_esp_spi(self.rng, &self.esp_spis)?;
        self.esp_spis.push(s);
        Some(s)
    }

    pub fn new_ike_spi(&mut self) -> Option<u64> {
        let s = msg::new_ike_spi(self.rng, &self.ike_spis)?;
        self.ike_spis.push(s);
        Some(s)
    }

    /// When to try a failed rekey again.
    pub fn retry_time(&self) -> Instant {
        let jitter = msg::random_u64(self.rng)
            .unwrap_or(0)
            .checked_rem(REKEY_RETRY_JITTER_MS)
            .unwrap_or(0);
        later(later(self.now, REKEY_RETRY), Duration::from_millis(jitter))
    }

    /// A time 85–90 % into `lifetime`, at random: rekeys are spread so that both peers (and
    /// many tunnels) do not rekey at the same instant.
    pub fn rekey_time(&self, lifetime: Duration) -> Instant {
        let ms = u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX);
        let base = (ms / 100).saturating_mul(85);
        let span = (ms / 20).saturating_add(1);
        let jitter = msg::random_u64(self.rng)
            .unwrap_or(0)
            .checked_rem(span)
            .unwrap_or(0);
        later(self.now, Duration::from_millis(base.saturating_add(jitter)))
    }
}

/// What became of the SA after a call.
pub struct Outcome {
    /// The SA, if it lives on.
    pub sa: Option<IkeSa>,
    /// A new IKE SA created by a rekey.
    pub new_sa: Option<IkeSa>,
    /// The peer authenticated with INITIAL_CONTACT under this ID: other SAs with it go.
    pub initial_contact: Option<Identification>,
    /// Children that move to another IKE SA (a rekey collision resolved, §2.8.2).
    pub handoff: Option<Handoff>,
    /// Our SPI of an IKE SA that lost a rekey collision: the peer deletes it.
    pub supersede: Option<u64>,
}

impl Outcome {
    pub fn keep(sa: IkeSa) -> Outcome {
        Outcome {
            sa: Some(sa),
            new_sa: None,
            initial_contact: None,
            handoff: None,
            supersede: None,
        }
    }

    pub fn gone() -> Outcome {
        Outcome {
            sa: None,
            new_sa: None,
            initial_contact: None,
            handoff: None,
            supersede: None,
        }
    }
}

/// A request of ours in flight, retransmitted until answered.
pub struct Retx {
    pub datagrams: Vec<Vec<u8>>,
    pub next_at: Instant,
    pub tries: u32,
    pub exchange: ExchangeType,
}

impl Retx {
    pub fn new(now: Instant, exchange: ExchangeType, datagrams: Vec<Vec<u8>>) -> Retx {
        Retx {
            datagrams,
            next_at: later(now, RETX_FIRST),
            tries: 1,
            exchange,
        }
    }

    /// Resends when due. `false`: all tries used, the peer is dead.
    pub fn poll(&mut self, ctx: &mut Ctx<'_>, path: Path) -> bool {
        if ctx.now < self.next_at {
            return true;
        }
        if self.tries >= RETX_TRIES {
            return false;
        }
        let wait = RETX_FIRST.saturating_mul(2u32.saturating_pow(self.tries));
        self.tries = self.tries.saturating_add(1);
        self.next_at = later(ctx.now, wait);
        ctx.send(path, &self.datagrams);
        ctx.event(Event::Retransmit {
            exchange: self.exchange,
        });
        true
    }
}

/// The fields every state shares.
pub struct IkeSa {
    pub spi_i: u64,
    pub spi_r: u64,
    /// We are the original initiator (our SPI is `spi_i`, we set the INITIATOR flag).
    pub initiator: bool,
    pub path: Path,
    pub created: Instant,
    /// The peer sent IKEV2_FRAGMENTATION_SUPPORTED (and so did we).
    pub peer_frag: bool,
    pub nat: NatState,
    pub reassembly: Option<Reassembly>,
    pub state: State,
}

/// The states of an IKE SA; each owns only what is valid in it.
pub enum State {
    /// Initiator: IKE_SA_INIT sent.
    InitSent(Box<InitSent>),
    /// Responder: IKE_SA_INIT answered, waiting for IKE_AUTH.
    AwaitAuth(Box<AwaitAuth>),
    /// Initiator: IKE_AUTH sent.
    AuthSent(Box<AuthSent>),
    Established(Box<Established>),
    /// Only while a transition is in progress.
    Gone,
}

pub struct InitSent {
    pub keypair: KeyPair,
    pub ni: Vec<u8>,
    /// The request as last sent (RealMessage for our AUTH).
    pub request: Vec<u8>,
    pub cookie: Option<Vec<u8>>,
    pub retries: u8,
    pub psk: Option<Secret>,
    pub retx: Retx,
}

pub struct AwaitAuth {
    pub suite: IkeSuite,
    pub keys: IkeKeys,
    pub send: SkCipher,
    pub recv: SkCipher,
    pub ni: Vec<u8>,
    pub nr: Vec<u8>,
    pub init_request: Vec<u8>,
    pub init_response: Vec<u8>,
    pub psk: Option<Secret>,
    pub expires: Instant,
}

pub struct AuthSent {
    pub suite: IkeSuite,
    pub keys: IkeKeys,
    pub send: SkCipher,
    pub recv: SkCipher,
    pub ni: Vec<u8>,
    pub nr: Vec<u8>,
    pub init_response: Vec<u8>,
    pub psk: Option<Secret>,
    /// Our inbound SPI for the first Child SA.
    pub child_spi: u32,
    pub retx: Retx,
}

pub struct Established {
    pub suite: IkeSuite,
    pub sk_d: Secret,
    pub send: SkCipher,
    pub recv: SkCipher,
    pub peer_id: Identification,
    pub win: Windows,
    pub children: Vec<Child>,
    pub rekey_at: Instant,
    pub expire_at: Instant,
    pub last_heard: Instant,
    /// Replaced by a rekeyed IKE SA: no children, no DPD, waiting for (or sending) the Delete.
    pub superseded: bool,
    pub queue: VecDeque<Req>,
    pub dpd_interval: Duration,
    /// The groups the peer asked for in INVALID_KE_PAYLOAD answers to our Child SA (PFS) and
    /// IKE SA rekeys (§1.3): our later rekeys lead with them.
    pub pfs_hint: Option<Group>,
    pub ike_dh_hint: Option<Group>,
    /// Imported from another replica and not (yet) ours to drive (`core::snapshot`): it
    /// answers what it is handed but sends nothing of its own (no DPD, rekey, retransmission,
    /// queued request or expiry Delete); its expiry removes it silently.
    pub passive: bool,
}

/// Message IDs, window size 1 each way (RFC 7296 §2.3).
pub struct Windows {
    /// The ID the peer's next request must have.
    pub next_recv: u32,
    /// Our answer to the peer's last request (ID `next_recv - 1`), for retransmissions.
    pub last_response: Option<(u32, Vec<Vec<u8>>)>,
    /// The ID of our next request.
    pub next_send: u32,
    pub pending: Option<Pending>,
}

impl Windows {
    pub fn new(next_recv: u32, last_response: Option<(u32, Vec<Vec<u8>>)>, next_send: u32) -> Self {
        Windows {
            next_recv,
            last_response,
            next_send,
            pending: None,
        }
    }
}

pub struct Pending {
    pub message_id: u32,
    pub retx: Retx,
    pub kind: PendingKind,
}

pub enum PendingKind {
    Dpd,
    /// Our inbound SPIs; those still installed are retired when answered.
    DeleteChildren(Vec<u32>),
    DeleteIke,
    /// A rekey of `old_inbound`, or a new Child SA when None.
    RekeyChild {
        old_inbound: Option<u32>,
        new_inbound: u32,
        ni: Vec<u8>,
        keypair: Option<KeyPair>,
        /// The peer rekeyed the same SA meanwhile: the lower of that exchange's nonces.
        collision: Option<Vec<u8>>,
    },
    RekeyIke {
        new_spi: u64,
        ni: Vec<u8>,
        keypair: KeyPair,
        /// The peer rekeyed this IKE SA meanwhile (§2.8.2) and we answered.
        collision: Option<IkeCollision>,
    },
    /// A CREATE_CHILD_SA another replica sent and we imported (`core::snapshot`): its
    /// ephemeral DH private key (and nonce) stayed in that process, since ring cannot export
    /// an ECDH key. We retransmit its bytes and take its answer so that the message IDs move
    /// on, but cannot derive the SA the answer creates.
    Orphan(Orphan),
}

/// What an imported CREATE_CHILD_SA of ours was for; see [`PendingKind::Orphan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orphan {
    /// A rekey of `old_inbound` (or a new Child SA when None); `new_inbound` is the SPI we
    /// proposed, the peer's outbound SPI of the SA its answer creates.
    Child {
        old_inbound: Option<u32>,
        new_inbound: u32,
    },
    /// A rekey of this IKE SA to our new SPI `new_spi`.
    Ike { new_spi: u64 },
}

/// The IKE SA the peer created by rekeying while our own rekey was in flight.
pub struct IkeCollision {
    /// The lower nonce of the peer's exchange.
    pub min_nonce: Vec<u8>,
    /// Our SPI of that SA (its key in the endpoint's map), and its SPIs.
    pub our_spi: u64,
    pub spi_i: u64,
    pub spi_r: u64,
}

/// Children handed from one IKE SA to another (in the endpoint's map).
pub struct Handoff {
    pub to: u64,
    pub children: Vec<Child>,
}

/// Requests waiting for the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Req {
    Dpd,
    DeleteChildren(Vec<u32>),
    DeleteIke,
    RekeyChild(u32),
    NewChild,
    RekeyIke,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildState {
    Active,
    /// Our rekey of it is queued or in flight.
    Rekeying,
    /// A new SA replaces it; waiting for its Delete.
    Replaced,
    /// Our Delete of it is queued or in flight.
    Deleting,
}

pub struct Child {
    pub inbound: u32,
    pub outbound: u32,
    pub choice: EspChoice,
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
    pub created: Instant,
    pub rekey_at: Instant,
    pub expire_at: Instant,
    pub outbound_active: bool,
    pub replaces: Option<u32>,
    pub state: ChildState,
}

impl IkeSa {
    pub fn our_spi(&self) -> u64 {
        if self.initiator {
            self.spi_i
        } else {
            self.spi_r
        }
    }

    pub fn hdr(&self, exchange: ExchangeType, response: bool, message_id: u32) -> Header {
        header(
            self.spi_i,
            self.spi_r,
            exchange,
            self.initiator,
            response,
            message_id,
        )
    }

    pub fn mtu(&self, config: &Config) -> Option<usize> {
        self.peer_frag.then_some(config.fragment_mtu)
    }

    pub fn is_half_open(&self) -> bool {
        matches!(self.state, State::AwaitAuth(_))
    }

    pub fn peer_id(&self) -> Option<&Identification> {
        match &self.state {
            State::Established(e) => Some(&e.peer_id),
            _ => None,
        }
    }

    pub fn child_spis(&self) -> Vec<u32> {
        match &self.state {
            State::Established(e) => e.children.iter().map(|c| c.inbound).collect(),
            State::AuthSent(a) => vec![a.child_spi],
            _ => Vec::new(),
        }
    }

    pub fn status(&self, now: Instant) -> IkeSaStatus {
        let (state, suite, peer_id, children) = match &self.state {
            State::InitSent(_) => ("init_sent", String::new(), None, Vec::new()),
            State::AwaitAuth(a) => (
                "await_auth",
                super::proposal::ike_suite_name(&a.suite),
                None,
                Vec::new(),
            ),
            State::AuthSent(a) => (
                "auth_sent",
                super::proposal::ike_suite_name(&a.suite),
                None,
                Vec::new(),
            ),
            State::Established(e) => (
                if e.superseded {
                    "rekeyed"
                } else {
                    "established"
                },
                super::proposal::ike_suite_name(&e.suite),
                Some(id_string(&e.peer_id)),
                e.children
                    .iter()
                    .map(|c| ChildStatus {
                        inbound_spi: c.inbound,
                        outbound_spi: c.outbound,
                        suite: c.choice.name(),
                        local_ts: c.local_ts.clone(),
                        remote_ts: c.remote_ts.clone(),
                        age: now.saturating_duration_since(c.created),
                        outbound_active: c.outbound_active,
                    })
                    .collect(),
            ),
            State::Gone => ("gone", String::new(), None, Vec::new()),
        };
        IkeSaStatus {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            initiator: self.initiator,
            state,
            suite,
            path: self.path,
            peer_id,
            nat_detected: self.nat.any(),
            age: now.saturating_duration_since(self.created),
            children,
        }
    }

    /// The earliest instant at which `poll` has something to do.
    pub fn next_timer(&self) -> Option<Instant> {
        match &self.state {
            State::InitSent(s) => Some(s.retx.next_at),
            State::AuthSent(s) => Some(s.retx.next_at),
            State::AwaitAuth(s) => Some(s.expires),
            State::Established(e) if e.passive => {
                // Only the silent expiries of a passive SA.
                let children = e.children.iter().map(|c| c.expire_at);
                Some(children.fold(e.expire_at, Instant::min))
            }
            State::Established(e) => {
                let mut t = e.expire_at;
                if e.win.pending.is_none() && !e.queue.is_empty() {
                    // Requests wait for a free window (after an activation, see
                    // `Endpoint::set_passive`): due at once; `last_heard` is never later
                    // than the latest `now` we were given.
                    t = t.min(e.last_heard);
                }
                if let Some(p) = &e.win.pending {
                    t = t.min(p.retx.next_at);
                } else if !e.superseded {
                    t = t.min(e.last_heard.checked_add(e.dpd()).unwrap_or(t));
                }
                if !e.superseded {
                    t = t.min(e.rekey_at);
                }
                for c in &e.children {
                    t = t.min(c.expire_at);
                    if c.state == ChildState::Active {
                        t = t.min(c.rekey_at);
                    }
                }
                Some(t)
            }
            State::Gone => None,
        }
    }

    /// Retire every child (the IKE SA is going away).
    pub fn retire_all(&mut self, ctx: &mut Ctx<'_>) {
        if let State::Established(e) = &mut self.state {
            for c in e.children.drain(..) {
                ctx.out.push(Output::RetireChild {
                    inbound_spi: c.inbound,
                    outbound_spi: c.outbound,
                });
            }
        }
    }

    /// Ends the SA: children retired, an event. The caller drops the SA.
    pub fn end(mut self, ctx: &mut Ctx<'_>, reason: DeleteReason) -> Outcome {
        self.retire_all(ctx);
        let superseded = matches!(&self.state, State::Established(e) if e.superseded);
        if !superseded || reason != DeleteReason::PeerDeleted {
            ctx.event(Event::IkeDeleted {
                spi_i: self.spi_i,
                spi_r: self.spi_r,
                reason,
            });
        }
        Outcome::gone()
    }

    /// Sends one INFORMATIONAL Delete of this IKE SA, without waiting for the answer.
    pub fn send_delete_now(&mut self, ctx: &mut Ctx<'_>) {
        let State::Established(e) = &mut self.state else {
            return;
        };
        let id = e.win.next_send;
        e.win.next_send = id.saturating_add(1);
        let hdr = header(
            self.spi_i,
            self.spi_r,
            ExchangeType::INFORMATIONAL,
            self.initiator,
            false,
            id,
        );
        let payloads = [Payload::Delete(Delete {
            protocol: ProtocolId::IKE,
            spis: Vec::new(),
        })];
        if let Ok(d) = msg::seal(hdr, &payloads, &e.send, None, ctx.rng) {
            ctx.send(self.path, &d);
        }
    }

    // ---- protected messages -------------------------------------------------------------

    /// A message of this SA other than IKE_SA_INIT: window check, decryption (with
    /// reassembly), then the exchange.
    pub fn on_protected(
        mut self,
        ctx: &mut Ctx<'_>,
        path: Path,
        hdr: Header,
        enc: Option<Encrypted>,
        msg: &[u8],
    ) -> Outcome {
        let Some(enc) = enc else {
            ctx.dropped(DropReason::Malformed);
            return Outcome::keep(self);
        };
        // Window (before spending a decryption on it).
        let retransmit = match (&self.state, hdr.is_response()) {
            (State::AwaitAuth(_), false) => {
                if hdr.exchange != ExchangeType::IKE_AUTH || hdr.message_id != 1 {
                    ctx.dropped(DropReason::OutOfWindow);
                    return Outcome::keep(self);
                }
                false
            }
            (State::AuthSent(_), true) => {
                if hdr.exchange != ExchangeType::IKE_AUTH || hdr.message_id != 1 {
                    ctx.dropped(DropReason::UnexpectedResponse);
                    return Outcome::keep(self);
                }
                false
            }
            (State::Established(e), false) => {
                if hdr.message_id == e.win.next_recv {
                    false
                } else if e
                    .win
                    .last_response
                    .as_ref()
                    .is_some_and(|(id, _)| *id == hdr.message_id)
                {
                    true
                } else {
                    ctx.dropped(DropReason::OutOfWindow);
                    return Outcome::keep(self);
                }
            }
            (State::Established(e), true) => match &e.win.pending {
                Some(p) if p.message_id == hdr.message_id && p.retx.exchange == hdr.exchange => {
                    false
                }
                _ => {
                    ctx.dropped(DropReason::UnexpectedResponse);
                    return Outcome::keep(self);
                }
            },
            (_, true) => {
                ctx.dropped(DropReason::UnexpectedResponse);
                return Outcome::keep(self);
            }
            _ => {
                ctx.dropped(DropReason::UnexpectedExchange);
                return Outcome::keep(self);
            }
        };
        let cipher = match &self.state {
            State::AwaitAuth(s) => &s.recv,
            State::AuthSent(s) => &s.recv,
            State::Established(s) => &s.recv,
            _ => {
                ctx.dropped(DropReason::UnexpectedExchange);
                return Outcome::keep(self);
            }
        };
        let Ok(plain) = cipher.open(msg, enc.iv_offset) else {
            ctx.dropped(DropReason::BadIcv);
            return Outcome::keep(self);
        };
        if retransmit {
            // RFC 7383 §2.6.1: answer a fragmented retransmission once, on its first fragment.
            if enc.fragment.is_none_or(|f| f.number == 1)
                && let State::Established(e) = &self.state
                && let Some((_, resp)) = &e.win.last_response
            {
                ctx.send(path, resp);
            }
            return Outcome::keep(self);
        }
        let (first, plain) = match enc.fragment {
            None => (enc.first_inner, plain),
            Some(f) => match Reassembly::add(
                &mut self.reassembly,
                ctx.now,
                hdr.message_id,
                hdr.is_response(),
                f,
                enc.first_inner,
                plain,
            ) {
                Added::Pending => return Outcome::keep(self),
                Added::Rejected => {
                    ctx.dropped(DropReason::Fragment);
                    return Outcome::keep(self);
                }
                Added::Complete(first, all) => (first, all),
            },
        };
        let payloads = match parse_payloads(first, &plain) {
            Ok(p) => p,
            Err(e) => return self.bad_inner(ctx, path, hdr, e),
        };
        if let State::Established(e) = &mut self.state {
            e.last_heard = ctx.now;
        }
        match (&self.state, hdr.is_response()) {
            (State::AwaitAuth(_), false) => self.on_auth_request(ctx, path, hdr, payloads),
            (State::AuthSent(_), true) => self.on_auth_response(ctx, payloads),
            (State::Established(_), false) => self.on_request(ctx, path, hdr, payloads),
            (State::Established(_), true) => self.on_response(ctx, hdr, payloads),
            _ => {
                ctx.dropped(DropReason::UnexpectedExchange);
                Outcome::keep(self)
            }
        }
    }

    /// The decrypted payloads do not parse: UNSUPPORTED_CRITICAL_PAYLOAD (§2.5) or
    /// INVALID_SYNTAX (§2.21.2) in reply to a request; a response is dropped.
    fn bad_inner(mut self, ctx: &mut Ctx<'_>, path: Path, hdr: Header, e: WireError) -> Outcome {
        let (reason, n) = match e {
            WireError::UnsupportedCritical(t) => (
                DropReason::UnsupportedCritical,
                notify(NotifyType::UNSUPPORTED_CRITICAL_PAYLOAD, vec![t]),
            ),
            _ => (
                DropReason::Malformed,
                notify(NotifyType::INVALID_SYNTAX, Vec::new()),
            ),
        };
        ctx.dropped(reason);
        if hdr.is_response() {
            return Outcome::keep(self);
        }
        match &self.state {
            State::AwaitAuth(_) => {
                // The IKE_AUTH request is rejected: answer, and forget the half-open SA.
                self.respond(ctx, path, hdr, &[n]);
                Outcome::gone()
            }
            State::Established(_) => {
                self.respond(ctx, path, hdr, &[n]);
                Outcome::keep(self)
            }
            _ => Outcome::keep(self),
        }
    }

    /// Seals and sends a response to `hdr`'s request; in Established, caches it and moves the
    /// window.
    pub fn respond(&mut self, ctx: &mut Ctx<'_>, path: Path, req: Header, payloads: &[Payload]) {
        let hdr = self.hdr(req.exchange, true, req.message_id);
        let mtu = self.mtu(ctx.config);
        let cipher = match &self.state {
            State::AwaitAuth(s) => &s.send,
            State::AuthSent(s) => &s.send,
            State::Established(s) => &s.send,
            _ => return,
        };
        let Ok(datagrams) = msg::seal(hdr, payloads, cipher, mtu, ctx.rng) else {
            ctx.dropped(DropReason::Internal);
            return;
        };
        ctx.send(path, &datagrams);
        if let State::Established(e) = &mut self.state {
            e.win.next_recv = req.message_id.saturating_add(1);
            e.win.last_response = Some((req.message_id, datagrams));
        }
    }

    // ---- requests from the peer -----------------------------------------------------------

    fn on_request(
        mut self,
        ctx: &mut Ctx<'_>,
        path: Path,
        hdr: Header,
        p: Vec<Payload>,
    ) -> Outcome {
        // RFC 7296 §2.23: follow the peer's address when it is behind a NAT.
        if self.nat.remote_behind && path != self.path {
            self.path = path;
            ctx.out.push(Output::PeerMoved { path });
        }
        match hdr.exchange {
            ExchangeType::INFORMATIONAL => self.on_informational(ctx, path, hdr, p),
            ExchangeType::CREATE_CHILD_SA => self.on_create_child(ctx, path, hdr, p),
            _ => {
                ctx.dropped(DropReason::UnexpectedExchange);
                Outcome::keep(self)
            }
        }
    }

    fn on_informational(
        mut self,
        ctx: &mut Ctx<'_>,
        path: Path,
        hdr: Header,
        payloads: Vec<Payload>,
    ) -> Outcome {
        let mut delete_ike = false;
        let mut esp_spis: Vec<u32> = Vec::new();
        for p in &payloads {
            // §2.21.2: a peer that could not verify our AUTH says so in an INFORMATIONAL.
            if let Payload::Notify(n) = p
                && n.kind == NotifyType::AUTHENTICATION_FAILED
            {
                self.respond(ctx, path, hdr, &[]);
                ctx.event(Event::AuthFailed {
                    peer_id: "(rejected by peer)".to_string(),
                });
                return self.end(ctx, DeleteReason::AuthFailed);
            }
            if let Payload::Delete(d) = p {
                match d.protocol {
                    ProtocolId::IKE => delete_ike = true,
                    ProtocolId::ESP => esp_spis.extend(
                        d.spis
                            .iter()
                            .filter_map(|s| <[u8; 4]>::try_from(s.as_slice()).ok())
                            .map(u32::from_be_bytes),
                    ),
                    _ => {}
                }
            }
        }
        if delete_ike {
            self.respond(ctx, path, hdr, &[]);
            ctx.event(Event::ExchangeDone {
                exchange: hdr.exchange,
                ok: true,
            });
            // §2.8.2: the peer's rekey won a collision whose answer to us is still on its
            // way: the children belong to the SA the peer created.
            let handoff = match &mut self.state {
                State::Established(e) => match e.win.pending.take() {
                    Some(Pending {
                        kind:
                            PendingKind::RekeyIke {
                                collision: Some(c), ..
                            },
                        ..
                    }) => {
                        let children = std::mem::take(&mut e.children);
                        ctx.event(Event::IkeRekeyed {
                            old_spi_i: self.spi_i,
                            old_spi_r: self.spi_r,
                            new_spi_i: c.spi_i,
                            new_spi_r: c.spi_r,
                        });
                        e.superseded = true;
                        Some(Handoff {
                            to: c.our_spi,
                            children,
                        })
                    }
                    _ => None,
                },
                _ => None,
            };
            let mut o = self.end(ctx, DeleteReason::PeerDeleted);
            o.handoff = handoff;
            return o;
        }
        let mut ours: Vec<u32> = Vec::new();
        if let State::Established(e) = &mut self.state {
            for spi in esp_spis.iter().take(MAX_CHILDREN) {
                // §1.4.1: when our own Delete of the pair crossed this one, the answer must
                // not name it again.
                let crossing = e
                    .children
                    .iter()
                    .any(|c| c.outbound == *spi && c.state == ChildState::Deleting);
                if let Some(inbound) = e.retire_by_outbound(ctx, *spi)
                    && !crossing
                {
                    ours.push(inbound);
                }
            }
        }
        let answer: Vec<Payload> = if ours.is_empty() {
            Vec::new()
        } else {
            vec![Payload::Delete(Delete {
                protocol: ProtocolId::ESP,
                spis: ours.iter().map(|s| s.to_be_bytes().to_vec()).collect(),
            })]
        };
        self.respond(ctx, path, hdr, &answer);
        ctx.event(Event::ExchangeDone {
            exchange: hdr.exchange,
            ok: true,
        });
        Outcome::keep(self)
    }

    // ---- responses to our requests ----------------------------------------------------------

    fn on_response(mut self, ctx: &mut Ctx<'_>, hdr: Header, payloads: Vec<Payload>) -> Outcome {
        let State::Established(e) = &mut self.state else {
            return Outcome::keep(self);
        };
        let Some(pending) = e.win.pending.take() else {
            return Outcome::keep(self);
        };
        let error = payloads.iter().find_map(|p| match p {
            Payload::Notify(n) if n.kind.is_error() => Some(n.kind),
            _ => None,
        });
        if let Some(notify) = error {
            ctx.event(Event::PeerError {
                exchange: hdr.exchange,
                notify,
            });
        }
        let mut outcome_new = None;
        match pending.kind {
            PendingKind::Dpd => {}
            PendingKind::DeleteChildren(spis) => {
                for spi in spis {
                    e.retire_by_inbound(ctx, spi);
                }
            }
            PendingKind::DeleteIke => {
                ctx.event(Event::ExchangeDone {
                    exchange: hdr.exchange,
                    ok: true,
                });
                let reason = if e.superseded {
                    DeleteReason::Rekeyed
                } else {
                    DeleteReason::Closed
                };
                return self.end(ctx, reason);
            }
            PendingKind::RekeyChild {
                old_inbound,
                new_inbound,
                ni,
                keypair,
                collision,
            } => {
                let path = self.path;
                e.on_rekey_child_response(
                    ctx,
                    path,
                    error,
                    old_inbound,
                    new_inbound,
                    ni,
                    keypair,
                    collision,
                    payloads,
                );
            }
            PendingKind::RekeyIke {
                new_spi,
                ni,
                keypair,
                collision,
            } => {
                outcome_new =
                    Some(self.on_rekey_ike_response(
                        ctx, error, new_spi, ni, keypair, collision, payloads,
                    ));
            }
            PendingKind::Orphan(o) => e.on_orphan_response(ctx, error, o),
        }
        ctx.event(Event::ExchangeDone {
            exchange: hdr.exchange,
            ok: error.is_none(),
        });
        self.send_queued(ctx);
        let mut o = Outcome::keep(self);
        if let Some(r) = outcome_new {
            o.new_sa = r.new_sa;
            o.handoff = r.handoff;
            o.supersede = r.supersede;
        }
        o
    }

    // ---- our requests ------------------------------------------------------------------------

    /// Queues a request; sends it now if the window is free.
    pub fn request(&mut self, ctx: &mut Ctx<'_>, req: Req) {
        if let State::Established(e) = &mut self.state {
            if e.queue.contains(&req) || e.queue.len() >= MAX_QUEUE {
                return;
            }
            e.queue.push_back(req);
        }
        self.send_queued(ctx);
    }

    /// Sends the next queued request when nothing is in flight.
    pub fn send_queued(&mut self, ctx: &mut Ctx<'_>) {
        loop {
            let State::Established(e) = &mut self.state else {
                return;
            };
            if e.win.pending.is_some() || e.passive {
                return;
            }
            let Some(req) = e.queue.pop_front() else {
                return;
            };
            let built = self.build_request(ctx, req);
            let Some((exchange, payloads, kind)) = built else {
                continue;
            };
            let State::Established(e) = &mut self.state else {
                return;
            };
            let id = e.win.next_send;
            let hdr = header(self.spi_i, self.spi_r, exchange, self.initiator, false, id);
            let mtu = self.peer_frag.then_some(ctx.config.fragment_mtu);
            let Ok(datagrams) = msg::seal(hdr, &payloads, &e.send, mtu, ctx.rng) else {
                ctx.dropped(DropReason::Internal);
                continue;
            };
            e.win.next_send = id.saturating_add(1);
            ctx.send(self.path, &datagrams);
            e.win.pending = Some(Pending {
                message_id: id,
                retx: Retx::new(ctx.now, exchange, datagrams),
                kind,
            });
            return;
        }
    }

    fn build_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        req: Req,
    ) -> Option<(ExchangeType, Vec<Payload>, PendingKind)> {
        match req {
            Req::Dpd => Some((ExchangeType::INFORMATIONAL, Vec::new(), PendingKind::Dpd)),
            Req::DeleteIke => Some((
                ExchangeType::INFORMATIONAL,
                vec![Payload::Delete(Delete {
                    protocol: ProtocolId::IKE,
                    spis: Vec::new(),
                })],
                PendingKind::DeleteIke,
            )),
            Req::DeleteChildren(spis) => Some((
                ExchangeType::INFORMATIONAL,
                vec![Payload::Delete(Delete {
                    protocol: ProtocolId::ESP,
                    spis: spis.iter().map(|s| s.to_be_bytes().to_vec()).collect(),
                })],
                PendingKind::DeleteChildren(spis),
            )),
            Req::RekeyChild(old) => self.build_rekey_child(ctx, Some(old)),
            Req::NewChild => self.build_rekey_child(ctx, None),
            Req::RekeyIke => self.build_rekey_ike(ctx),
        }
    }

    // ---- timers ------------------------------------------------------------------------------

    pub fn poll(mut self, ctx: &mut Ctx<'_>) -> Outcome {
        let now = ctx.now;
        let path = self.path;
        match &mut self.state {
            State::InitSent(s) => {
                if !s.retx.poll(ctx, path) {
                    ctx.event(Event::PeerDead {
                        spi_i: self.spi_i,
                        spi_r: self.spi_r,
                    });
                    return Outcome::gone();
                }
                Outcome::keep(self)
            }
            State::AuthSent(s) => {
                if !s.retx.poll(ctx, path) {
                    ctx.event(Event::PeerDead {
                        spi_i: self.spi_i,
                        spi_r: self.spi_r,
                    });
                    return Outcome::gone();
                }
                Outcome::keep(self)
            }
            State::AwaitAuth(s) => {
                if now >= s.expires {
                    // Half-open timeout: forget it silently.
                    return Outcome::gone();
                }
                Outcome::keep(self)
            }
            State::Established(e) if e.passive => {
                // Another replica drives this SA: it goes silently (the shell removes ESP).
                if now >= e.expire_at {
                    return self.end(ctx, DeleteReason::Expired);
                }
                let expired: Vec<u32> = e
                    .children
                    .iter()
                    .filter(|c| now >= c.expire_at)
                    .map(|c| c.inbound)
                    .collect();
                for spi in expired {
                    e.retire_by_inbound(ctx, spi);
                }
                Outcome::keep(self)
            }
            State::Established(e) => {
                if now >= e.expire_at {
                    self.send_delete_now(ctx);
                    return self.end(ctx, DeleteReason::Expired);
                }
                if let Some(p) = &mut e.win.pending
                    && !p.retx.poll(ctx, path)
                {
                    if e.superseded {
                        return Outcome::gone();
                    }
                    ctx.event(Event::PeerDead {
                        spi_i: self.spi_i,
                        spi_r: self.spi_r,
                    });
                    return self.end(ctx, DeleteReason::PeerDead);
                }
                let mut reqs: Vec<Req> = Vec::new();
                let mut expired: Vec<u32> = Vec::new();
                for c in &mut e.children {
                    if now >= c.expire_at {
                        expired.push(c.inbound);
                    } else if c.state == ChildState::Active && now >= c.rekey_at {
                        c.state = ChildState::Rekeying;
                        reqs.push(Req::RekeyChild(c.inbound));
                    }
                }
                for spi in &expired {
                    e.retire_by_inbound(ctx, *spi);
                }
                if !expired.is_empty() {
                    reqs.push(Req::DeleteChildren(expired));
                }
                if !e.superseded && now >= e.rekey_at {
                    e.rekey_at = ctx.retry_time();
                    reqs.push(Req::RekeyIke);
                }
                if !e.superseded
                    && e.win.pending.is_none()
                    && e.queue.is_empty()
                    && reqs.is_empty()
                    && now >= later(e.last_heard, e.dpd())
                {
                    reqs.push(Req::Dpd);
                }
                for r in reqs {
                    self.request(ctx, r);
                }
                self.send_queued(ctx);
                Outcome::keep(self)
            }
            State::Gone => Outcome::gone(),
        }
    }
}

impl Established {
    /// A freshly established (or rekeyed) IKE SA: no children yet, lifetimes from now.
    pub fn new(
        ctx: &Ctx<'_>,
        suite: IkeSuite,
        sk_d: Secret,
        send: SkCipher,
        recv: SkCipher,
        peer_id: Identification,
        win: Windows,
    ) -> Established {
        let now = ctx.now;
        Established {
            suite,
            sk_d,
            send,
            recv,
            peer_id,
            win,
            children: Vec::new(),
            rekey_at: ctx.rekey_time(ctx.config.ike_lifetime),
            expire_at: super::later(now, ctx.config.ike_lifetime),
            last_heard: now,
            superseded: false,
            queue: VecDeque::new(),
            dpd_interval: ctx.config.dpd_interval,
            pfs_hint: None,
            ike_dh_hint: None,
            passive: false,
        }
    }

    pub fn dpd(&self) -> Duration {
        self.dpd_interval
    }

    /// Retires the child the peer sends to (its inbound = our outbound), first activating
    /// any SA that replaces it. Returns our inbound SPI of it.
    pub fn retire_by_outbound(&mut self, ctx: &mut Ctx<'_>, outbound: u32) -> Option<u32> {
        let inbound = self
            .children
            .iter()
            .find(|c| c.outbound == outbound)?
            .inbound;
        self.retire_by_inbound(ctx, inbound);
        Some(inbound)
    }

    pub fn retire_by_inbound(&mut self, ctx: &mut Ctx<'_>, inbound: u32) {
        let Some(pos) = self.children.iter().position(|c| c.inbound == inbound) else {
            return;
        };
        let old = self.children.remove(pos);
        // A rekey's new SA deleted before the SA it was to replace (the peer could not use it,
        // e.g. its rekey request came from another replica, `core::snapshot`): the old SA is
        // no longer replaced, unless another rekey of it survives (§2.8.1), and may be
        // rekeyed again.
        if let Some(replaced) = old.replaces
            && !self.children.iter().any(|c| c.replaces == Some(replaced))
            && let Some(c) = self
                .children
                .iter_mut()
                .find(|c| c.inbound == replaced && c.state == ChildState::Replaced)
        {
            c.state = ChildState::Active;
        }
        // The rekeyed SA takes over outbound traffic before the old one goes (RFC 7296 §2.8).
        for c in &mut self.children {
            if c.replaces == Some(old.inbound) && !c.outbound_active {
                c.outbound_active = true;
                ctx.out.push(Output::ActivateOutbound {
                    outbound_spi: c.outbound,
                });
            }
        }
        ctx.out.push(Output::RetireChild {
            inbound_spi: old.inbound,
            outbound_spi: old.outbound,
        });
        ctx.event(Event::ChildDeleted {
            inbound_spi: old.inbound,
            outbound_spi: old.outbound,
        });
    }
}
