//! The endpoint: one tunnel's IKE SAs indexed by our SPI, the dispatch of received messages,
//! timers, and the shell's commands.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ring::rand::SecureRandom;

use super::ike_sa::{ChildState, Ctx, IkeSa, Outcome, Req, State};
use super::init;
use super::msg::{VERSION, header, notify};
use super::{Config, DeleteReason, DropReason, IkeSaStatus, Output, Path, PskSource};
use crate::crypto::Secret;
use crate::wire::{
    Error as WireError, ExchangeType, Header, NotifyType, Reader, encode_message, parse_message,
};
use crate::wire::{Parsed, Payload};

/// At most this many half-open (responder, IKE_AUTH not yet seen) IKE SAs, by default.
pub const MAX_HALF_OPEN: usize = 64;
/// At most this many IKE SAs in all, by default.
pub const MAX_SAS: usize = 128;
/// At most this many half-open IKE SAs per source address, by default (see [`Limits`]).
pub const HALF_OPEN_PER_SOURCE: usize = 4;
/// The answers to the requests that ended an SA, kept this long and at most this many.
const CLOSED_ANSWER_KEPT: std::time::Duration = std::time::Duration::from_secs(30);
const MAX_CLOSED: usize = 16;
#[cfg(test)]
pub(super) const MAX_CLOSED_FOR_TESTS: usize = MAX_CLOSED;

/// The answer to a request that ended its SA.
struct Closed {
    /// SHA-256 of the request as received: only an exact retransmission is answered.
    request: [u8; 32],
    response: Vec<Vec<u8>>,
    until: Instant,
}

fn request_digest(msg: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, msg);
    <[u8; 32]>::try_from(d.as_ref()).unwrap_or([0; 32])
}

/// From this many half-open SAs on, a new initiator must first return a cookie (§2.6), so
/// that spoofed IKE_SA_INIT requests cost us neither state nor a DH computation (default).
pub const COOKIE_THRESHOLD: usize = 16;

/// How much state IKE_SA_INIT requests may make us hold. The rules, in the order a new request
/// (not a retransmission) meets them:
///
/// 1. `max_sas` IKE SAs in all (any state): dropped, [`DropReason::SaCap`].
/// 2. `max_half_open` half-open SAs: dropped, [`DropReason::HalfOpenCap`].
/// 3. From `cookie_threshold` half-open SAs on, or when the request's source address already
///    holds `half_open_per_source` of them, the request must carry a valid COOKIE (RFC 7296
///    §2.6: "When a responder detects a large number of half-open IKE SAs, it SHOULD reply to
///    IKE_SA_INIT requests with a response containing the COOKIE notification"; the retried
///    request carries it "as the first payload"); without one it is answered with a COOKIE
///    and keeps no state
///    ([`DropReason::CookieRequired`], or [`DropReason::CookieInvalid`] for a wrong or stale
///    one).
/// 4. A source at `half_open_per_source` that returned a valid cookie has proved it receives
///    at its address. Half-open SAs it made without a cookie may be spoofed in its name (a
///    flood with its address as the source): the oldest of those is given up for the new one.
///    When all of them carry cookies, the request is dropped, [`DropReason::HalfOpenPerSource`].
///
/// So a spoofing flood holds at most `cookie_threshold` SAs (every SA made without a cookie was
/// made below the threshold) and cannot keep a real peer out, not even by using its address; a
/// flood that answers cookies holds at most `half_open_per_source` SAs per address it really
/// has, and `max_half_open` in all. A retransmission (same SPIi, same source address and port,
/// same bytes) is answered before any of this from the response kept with its SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_sas: usize,
    pub max_half_open: usize,
    /// At least 1 in effect.
    pub half_open_per_source: usize,
    pub cookie_threshold: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sas: MAX_SAS,
            max_half_open: MAX_HALF_OPEN,
            half_open_per_source: HALF_OPEN_PER_SOURCE,
            cookie_threshold: COOKIE_THRESHOLD,
        }
    }
}

/// Counters of the work and state IKE_SA_INIT requests cost us (for metrics and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Half-open SAs held now.
    pub half_open: usize,
    /// COOKIE answers sent (§2.6) since the start.
    pub cookies_sent: u64,
    /// Diffie-Hellman key pairs generated for IKE_SA_INIT, either role, since the start.
    pub init_dh: u64,
}
/// How long one COOKIE secret is used (§2.6: "the responder should change the value of
/// <secret> frequently"); the one before it is still accepted, so a cookie made just before a
/// change works.
pub const COOKIE_SECRET_LIFETIME: Duration = Duration::from_secs(120);

/// One tunnel's IKE: its SAs, configuration and key source. See the module docs of
/// [`crate::core`].
pub struct Endpoint {
    config: Config,
    psk: Box<dyn PskSource + Send>,
    pub(super) sas: BTreeMap<u64, IkeSa>,
    /// The latest `now` we were given (for ages in `status`).
    pub(super) last_now: Option<Instant>,
    closed: std::collections::VecDeque<Closed>,
    flood: Flood,
    /// Set by [`Endpoint::import`] and [`Endpoint::set_passive`] (`core::snapshot`).
    pub(super) passive: bool,
}

/// What guards us against IKE_SA_INIT floods.
struct Flood {
    limits: Limits,
    /// Keys of our COOKIE values, made on first use and changed every
    /// [`COOKIE_SECRET_LIFETIME`].
    cookies: Option<CookieKeys>,
    /// Our SPIs of the half-open SAs whose request carried a valid cookie.
    verified: std::collections::BTreeSet<u64>,
    cookies_sent: u64,
    init_dh: u64,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("sas", &self.sas.len())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    pub fn new(config: Config, psk: Box<dyn PskSource + Send>) -> Self {
        Endpoint {
            config,
            psk,
            sas: BTreeMap::new(),
            last_now: None,
            closed: std::collections::VecDeque::new(),
            flood: Flood {
                limits: Limits::default(),
                cookies: None,
                verified: std::collections::BTreeSet::new(),
                cookies_sent: 0,
                init_dh: 0,
            },
            passive: false,
        }
    }

    /// The same endpoint with other [`Limits`].
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.flood.limits = limits;
        self
    }

    pub fn limits(&self) -> Limits {
        self.flood.limits
    }

    /// What we hold beside the SAs: cookie marks of half-open SAs, answers of closed SAs.
    #[cfg(test)]
    pub(super) fn side_state(&self) -> (usize, usize) {
        (self.flood.verified.len(), self.closed.len())
    }

    /// IKE SAs held, in any state.
    pub fn sa_count(&self) -> usize {
        self.sas.len()
    }

    pub fn stats(&self) -> Stats {
        Stats {
            half_open: self.sas.values().filter(|s| s.is_half_open()).count(),
            cookies_sent: self.flood.cookies_sent,
            init_dh: self.flood.init_dh,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Replaces the configuration; existing SAs keep what they negotiated.
    pub fn set_config(&mut self, config: Config) {
        self.config = config;
    }

    fn ctx<'a>(
        config: &'a Config,
        sas: &BTreeMap<u64, IkeSa>,
        now: Instant,
        rng: &'a dyn SecureRandom,
        out: &'a mut Vec<Output>,
    ) -> Ctx<'a> {
        Ctx {
            now,
            rng,
            config,
            out,
            ike_spis: sas.keys().copied().collect(),
            esp_spis: sas.values().flat_map(IkeSa::child_spis).collect(),
        }
    }

    /// One received IKE message (no UDP header, no non-ESP marker), from `path`.
    pub fn handle(
        &mut self,
        now: Instant,
        path: Path,
        msg: &[u8],
        rng: &dyn SecureRandom,
        out: &mut Vec<Output>,
    ) {
        self.last_now = Some(now);
        let mut ctx = Self::ctx(&self.config, &self.sas, now, rng, out);
        let hdr = match Header::parse(msg) {
            Ok(h) => h,
            Err(WireError::BadVersion { .. }) => {
                bad_version(&mut ctx, path, msg);
                return;
            }
            Err(_) => {
                ctx.dropped(DropReason::Malformed);
                return;
            }
        };
        let parsed = match parse_message(msg) {
            Ok(p) => p,
            Err(WireError::UnsupportedCritical(t)) => {
                ctx.dropped(DropReason::UnsupportedCritical);
                // §2.5, only for an unencrypted request that creates nothing.
                if hdr.exchange == ExchangeType::IKE_SA_INIT && !hdr.is_response() {
                    let h = header(hdr.spi_i, 0, hdr.exchange, false, true, hdr.message_id);
                    let bytes = encode_message(
                        h,
                        &[notify(NotifyType::UNSUPPORTED_CRITICAL_PAYLOAD, vec![t])],
                    );
                    ctx.send(path, &[bytes]);
                }
                return;
            }
            Err(_) => {
                ctx.dropped(DropReason::Malformed);
                return;
            }
        };
        if hdr.exchange == ExchangeType::IKE_SA_INIT {
            if hdr.is_response() {
                // Our request: we are the initiator, our SPI is SPIi.
                let ok = !hdr.is_initiator()
                    && hdr.message_id == 0
                    && self
                        .sas
                        .get(&hdr.spi_i)
                        .is_some_and(|s| matches!(s.state, State::InitSent(_)) && s.initiator);
                if !ok {
                    ctx.dropped(DropReason::UnexpectedResponse);
                    return;
                }
                let Some(sa) = self.sas.remove(&hdr.spi_i) else {
                    return;
                };
                let o = sa.on_init_response(&mut ctx, hdr, &parsed, msg);
                apply(&mut self.sas, &mut ctx, o);
                return;
            }
            if hdr.spi_r != 0 || !hdr.is_initiator() || hdr.message_id != 0 {
                ctx.dropped(DropReason::Malformed);
                return;
            }
            // A retransmission: the same SPIi from the same place.
            let existing = self
                .sas
                .values()
                .find(|s| !s.initiator && s.spi_i == hdr.spi_i && s.path.remote == path.remote);
            if let Some(sa) = existing {
                match &sa.state {
                    State::AwaitAuth(a) if a.init_request.as_slice() == msg => {
                        ctx.send(sa.path, std::slice::from_ref(&a.init_response));
                    }
                    _ => ctx.dropped(DropReason::Duplicate),
                }
                return;
            }
            let admitted = self
                .flood
                .admit(&mut self.sas, now, &mut ctx, path, &hdr, &parsed);
            let Some(verified) = admitted else {
                return;
            };
            let made = init::respond_init(&mut ctx, path, hdr, &parsed, msg, &*self.psk);
            self.flood.init_dh = self.flood.init_dh.saturating_add(u64::from(made.dh));
            if let Some(sa) = made.sa {
                if verified {
                    self.flood.verified.insert(sa.our_spi());
                }
                self.sas.insert(sa.our_spi(), sa);
            }
            return;
        }
        // Every other exchange belongs to an SA: the INITIATOR flag says whose SPI is ours.
        let ours = if hdr.is_initiator() {
            hdr.spi_r
        } else {
            hdr.spi_i
        };
        let matches = self.sas.get(&ours).is_some_and(|s| {
            s.spi_i == hdr.spi_i && s.spi_r == hdr.spi_r && s.initiator != hdr.is_initiator()
        });
        if !matches {
            // §2.3: a retransmitted request is answered even when the exchange it belongs
            // to ended the SA (a Delete, a failed IKE_AUTH): the answer may have been lost.
            self.closed.retain(|c| c.until > now);
            let answer = (!hdr.is_response() && !self.closed.is_empty())
                .then(|| request_digest(msg))
                .and_then(|d| self.closed.iter().find(|c| c.request == d));
            match answer {
                Some(c) => ctx.send(path, &c.response),
                None => ctx.dropped(DropReason::UnknownSpi),
            }
            return;
        }
        let Some(sa) = self.sas.remove(&ours) else {
            return;
        };
        let before = ctx.out.len();
        let o = sa.on_protected(&mut ctx, path, hdr, parsed.encrypted, msg);
        apply(&mut self.sas, &mut ctx, o);
        if !hdr.is_response() && !self.sas.contains_key(&ours) {
            let sent = ctx.out.get(before..).unwrap_or_default();
            remember_last_answer(&mut self.closed, now, &hdr, msg, sent);
        }
    }

    /// Timers: retransmissions, DPD, rekeys, expiry, half-open timeout.
    pub fn poll(&mut self, now: Instant, rng: &dyn SecureRandom, out: &mut Vec<Output>) {
        self.last_now = Some(now);
        let spis: Vec<u64> = self.sas.keys().copied().collect();
        for spi in spis {
            let due = self
                .sas
                .get(&spi)
                .and_then(IkeSa::next_timer)
                .is_some_and(|t| t <= now);
            if !due {
                continue;
            }
            let mut ctx = Self::ctx(&self.config, &self.sas, now, rng, out);
            let Some(sa) = self.sas.remove(&spi) else {
                continue;
            };
            let o = sa.poll(&mut ctx);
            apply(&mut self.sas, &mut ctx, o);
        }
    }

    /// When `poll` next has work.
    pub fn next_timer(&self) -> Option<Instant> {
        self.sas.values().filter_map(IkeSa::next_timer).min()
    }

    /// Initiator role: IKE_SA_INIT to `path.remote`.
    pub fn initiate(
        &mut self,
        now: Instant,
        path: Path,
        rng: &dyn SecureRandom,
        out: &mut Vec<Output>,
    ) {
        self.last_now = Some(now);
        let mut ctx = Self::ctx(&self.config, &self.sas, now, rng, out);
        if self.sas.len() >= self.flood.limits.max_sas {
            ctx.dropped(DropReason::SaCap);
            return;
        }
        match init::initiate(&mut ctx, path, &*self.psk) {
            Some(sa) => {
                self.flood.init_dh = self.flood.init_dh.saturating_add(1);
                self.sas.insert(sa.our_spi(), sa);
            }
            None => ctx.dropped(DropReason::Internal),
        }
    }

    /// The dataplane asks for a rekey of the Child SA with this inbound SPI.
    pub fn rekey_child(
        &mut self,
        now: Instant,
        inbound_spi: u32,
        rng: &dyn SecureRandom,
        out: &mut Vec<Output>,
    ) {
        self.last_now = Some(now);
        let mut ctx = Self::ctx(&self.config, &self.sas, now, rng, out);
        for sa in self.sas.values_mut() {
            let State::Established(e) = &mut sa.state else {
                continue;
            };
            let Some(c) = e.children.iter_mut().find(|c| c.inbound == inbound_spi) else {
                continue;
            };
            if c.state != ChildState::Active {
                return;
            }
            c.state = ChildState::Rekeying;
            sa.request(&mut ctx, Req::RekeyChild(inbound_spi));
            return;
        }
    }

    /// One more Child SA with the configured selectors, on the first established IKE SA.
    pub fn create_child(&mut self, now: Instant, rng: &dyn SecureRandom, out: &mut Vec<Output>) {
        self.last_now = Some(now);
        let mut ctx = Self::ctx(&self.config, &self.sas, now, rng, out);
        if let Some(sa) = self
            .sas
            .values_mut()
            .find(|s| matches!(&s.state, State::Established(e) if !e.superseded))
        {
            sa.request(&mut ctx, Req::NewChild);
        }
    }

    /// Rekeys every established IKE SA (operators, tests).
    pub fn rekey_ike(&mut self, now: Instant, rng: &dyn SecureRandom, out: &mut Vec<Output>) {
        self.last_now = Some(now);
        let mut ctx = Self::ctx(&self.config, &self.sas, now, rng, out);
        for sa in self.sas.values_mut() {
            if matches!(&sa.state, State::Established(e) if !e.superseded) {
                sa.request(&mut ctx, Req::RekeyIke);
            }
        }
    }

    /// Deletes one Child SA (sends the Delete; retired when answered).
    pub fn delete_child(
        &mut self,
        now: Instant,
        inbound_spi: u32,
        rng: &dyn SecureRandom,
        out: &mut Vec<Output>,
    ) {
        self.last_now = Some(now);
        let mut ctx = Self::ctx(&self.config, &self.sas, now, rng, out);
        for sa in self.sas.values_mut() {
            let State::Established(e) = &mut sa.state else {
                continue;
            };
            if let Some(c) = e.children.iter_mut().find(|c| c.inbound == inbound_spi) {
                c.state = ChildState::Deleting;
                sa.request(&mut ctx, Req::DeleteChildren(vec![inbound_spi]));
                return;
            }
        }
    }

    /// Deletes every IKE SA with a Delete that waits for its answer (and retransmits).
    pub fn delete_ike(&mut self, now: Instant, rng: &dyn SecureRandom, out: &mut Vec<Output>) {
        self.last_now = Some(now);
        let mut ctx = Self::ctx(&self.config, &self.sas, now, rng, out);
        for sa in self.sas.values_mut() {
            if matches!(sa.state, State::Established(_)) {
                sa.request(&mut ctx, Req::DeleteIke);
            }
        }
    }

    /// Shutdown: an INFORMATIONAL Delete of each IKE SA (implicitly its children), sent once
    /// without waiting; everything retired.
    pub fn close(&mut self, now: Instant, rng: &dyn SecureRandom, out: &mut Vec<Output>) {
        self.last_now = Some(now);
        let mut ctx = Self::ctx(&self.config, &self.sas, now, rng, out);
        let sas = std::mem::take(&mut self.sas);
        for (_, mut sa) in sas {
            if matches!(sa.state, State::Established(_)) {
                sa.send_delete_now(&mut ctx);
                let _ = sa.end(&mut ctx, DeleteReason::Closed);
            }
        }
    }

    /// SPIs, state, suites, path, NAT, ages and children of every IKE SA; never keys.
    pub fn status(&self) -> Vec<IkeSaStatus> {
        let now = self.last_now;
        self.sas
            .values()
            .map(|s| s.status(now.unwrap_or(s.created)))
            .collect()
    }
}

impl Flood {
    /// The [`Limits`] for a new IKE_SA_INIT request: `None` when it was refused (dropped, or
    /// answered with a COOKIE), else whether it carried a valid cookie.
    fn admit(
        &mut self,
        sas: &mut BTreeMap<u64, IkeSa>,
        now: Instant,
        ctx: &mut Ctx<'_>,
        path: Path,
        hdr: &Header,
        parsed: &Parsed,
    ) -> Option<bool> {
        let l = self.limits;
        if sas.len() >= l.max_sas {
            ctx.dropped(DropReason::SaCap);
            return None;
        }
        let half_open = sas.values().filter(|s| s.is_half_open()).count();
        if half_open >= l.max_half_open {
            ctx.dropped(DropReason::HalfOpenCap);
            return None;
        }
        self.verified
            .retain(|spi| sas.get(spi).is_some_and(IkeSa::is_half_open));
        let source = path.remote.ip();
        // (our SPI, created, carried a cookie) of each half-open SA from this address.
        let from_source: Vec<(u64, Instant, bool)> = sas
            .iter()
            .filter(|(_, s)| s.is_half_open() && s.path.remote.ip() == source)
            .map(|(spi, s)| (*spi, s.created, self.verified.contains(spi)))
            .collect();
        let at_source_cap = from_source.len() >= l.half_open_per_source.max(1);
        let offered = matches!(
            parsed.payloads.first(),
            Some(Payload::Notify(n)) if n.kind == NotifyType::COOKIE
        );
        let must = half_open >= l.cookie_threshold || at_source_cap;
        if must || (offered && self.cookies.is_some()) {
            self.cookies = match self.cookies.take() {
                Some(k) => k.renewed(now, ctx.rng),
                None => CookieKeys::new(now, ctx.rng),
            };
        }
        let valid = offered
            && self
                .cookies
                .as_ref()
                .is_some_and(|k| k.accepts(hdr, parsed, path));
        if must && !valid {
            let Some(keys) = &self.cookies else {
                ctx.dropped(DropReason::Internal);
                return None;
            };
            ctx.dropped(if offered {
                DropReason::CookieInvalid
            } else {
                DropReason::CookieRequired
            });
            let c = keys.make(hdr, parsed, path)?;
            let h = header(hdr.spi_i, 0, hdr.exchange, false, true, 0);
            let bytes = encode_message(h, &[notify(NotifyType::COOKIE, c)]);
            ctx.send(path, &[bytes]);
            self.cookies_sent = self.cookies_sent.saturating_add(1);
            return None;
        }
        if at_source_cap {
            // Rule 4 of `Limits`: one made without a cookie may be spoofed; this one is not.
            let spoofable = from_source
                .iter()
                .filter(|(_, _, v)| !v)
                .min_by_key(|(_, created, _)| *created);
            match spoofable {
                Some((spi, _, _)) => {
                    sas.remove(spi);
                }
                None => {
                    ctx.dropped(DropReason::HalfOpenPerSource);
                    return None;
                }
            }
        }
        Some(valid)
    }
}

/// Keeps the answer to the request that ended an SA, for its retransmissions.
fn remember_last_answer(
    closed: &mut std::collections::VecDeque<Closed>,
    now: Instant,
    req: &Header,
    msg: &[u8],
    sent: &[Output],
) {
    let response: Vec<Vec<u8>> = sent
        .iter()
        .filter_map(|o| match o {
            Output::Send { bytes, .. } => Some(bytes),
            _ => None,
        })
        .filter(|b| {
            Header::parse(b).is_ok_and(|h| {
                h.is_response()
                    && h.spi_i == req.spi_i
                    && h.spi_r == req.spi_r
                    && h.message_id == req.message_id
            })
        })
        .cloned()
        .collect();
    if response.is_empty() {
        return;
    }
    if closed.len() >= MAX_CLOSED {
        closed.pop_front();
    }
    closed.push_back(Closed {
        request: request_digest(msg),
        response,
        until: super::later(now, CLOSED_ANSWER_KEPT),
    });
}

/// Puts the SA (and a rekeyed successor) back, and applies INITIAL_CONTACT.
fn apply(sas: &mut BTreeMap<u64, IkeSa>, ctx: &mut Ctx<'_>, o: Outcome) {
    if let Some(id) = &o.initial_contact {
        // §2.4: the peer has no other SA with us any more: forget those with the same ID.
        let keep = o.sa.as_ref().map(IkeSa::our_spi);
        let stale: Vec<u64> = sas
            .iter()
            .filter(|(spi, s)| Some(**spi) != keep && s.peer_id() == Some(id))
            .map(|(spi, _)| *spi)
            .collect();
        for spi in stale {
            if let Some(sa) = sas.remove(&spi) {
                let _ = sa.end(ctx, DeleteReason::InitialContact);
            }
        }
    }
    if let Some(sa) = o.sa {
        sas.insert(sa.our_spi(), sa);
    }
    if let Some(sa) = o.new_sa {
        sas.insert(sa.our_spi(), sa);
    }
    if let Some(h) = o.handoff {
        match sas.get_mut(&h.to) {
            Some(IkeSa {
                state: State::Established(e),
                ..
            }) => e.children.extend(h.children),
            // The SA they were meant for is gone: so are they.
            _ => {
                for c in h.children {
                    ctx.out.push(Output::RetireChild {
                        inbound_spi: c.inbound,
                        outbound_spi: c.outbound,
                    });
                }
            }
        }
    }
    if let Some(spi) = o.supersede
        && let Some(IkeSa {
            state: State::Established(e),
            ..
        }) = sas.get_mut(&spi)
    {
        super::child::supersede(e, ctx.now);
    }
}

/// §1.5: an unencrypted INVALID_MAJOR_VERSION in reply to a request, with the SPIs and
/// message ID copied and our version.
fn bad_version(ctx: &mut Ctx<'_>, path: Path, msg: &[u8]) {
    ctx.dropped(DropReason::BadVersion);
    let mut r = Reader::new(msg);
    let fields = (|| {
        let spi_i = r.u64().ok()?;
        let spi_r = r.u64().ok()?;
        let _next = r.u8().ok()?;
        let _version = r.u8().ok()?;
        let exchange = r.u8().ok()?;
        let flags = r.u8().ok()?;
        let message_id = r.u32().ok()?;
        Some((spi_i, spi_r, exchange, flags, message_id))
    })();
    let Some((spi_i, spi_r, exchange, flags, message_id)) = fields else {
        return;
    };
    if flags & crate::wire::flags::RESPONSE != 0 {
        return;
    }
    let mut h = header(
        spi_i,
        spi_r,
        ExchangeType(exchange),
        flags & crate::wire::flags::INITIATOR == 0,
        true,
        message_id,
    );
    h.version = VERSION;
    let bytes = encode_message(h, &[notify(NotifyType::INVALID_MAJOR_VERSION, Vec::new())]);
    ctx.send(path, &[bytes]);
}

/// The COOKIE secrets (§2.6): a cookie is `version ‖ HMAC-SHA-256(secret, Ni | IPi | port |
/// SPIi)[..16]`, stateless, and proves the initiator receives at its address. The version byte
/// names the secret, so the current and the previous one can both be checked.
struct CookieKeys {
    version: u8,
    current: Secret,
    previous: Option<Secret>,
    since: Instant,
}

impl CookieKeys {
    fn new(now: Instant, rng: &dyn SecureRandom) -> Option<CookieKeys> {
        Some(CookieKeys {
            version: 0,
            current: super::msg::random_bytes(rng, 32).map(Secret::new)?,
            previous: None,
            since: now,
        })
    }

    /// The same keys, or new ones with the current secret kept as the previous one once
    /// [`COOKIE_SECRET_LIFETIME`] has passed.
    fn renewed(self, now: Instant, rng: &dyn SecureRandom) -> Option<CookieKeys> {
        if now.saturating_duration_since(self.since) < COOKIE_SECRET_LIFETIME {
            return Some(self);
        }
        Some(CookieKeys {
            version: self.version.wrapping_add(1),
            current: super::msg::random_bytes(rng, 32).map(Secret::new)?,
            previous: Some(self.current),
            since: now,
        })
    }

    fn make(&self, hdr: &Header, parsed: &Parsed, path: Path) -> Option<Vec<u8>> {
        cookie(self.version, &self.current, hdr, parsed, path)
    }

    /// §2.6: the COOKIE notification is the first payload of the retried request, made with the
    /// current or the previous secret.
    fn accepts(&self, hdr: &Header, parsed: &Parsed, path: Path) -> bool {
        use subtle::ConstantTimeEq;
        let Some(Payload::Notify(n)) = parsed.payloads.first() else {
            return false;
        };
        if n.kind != NotifyType::COOKIE {
            return false;
        }
        let Some(&version) = n.data.first() else {
            return false;
        };
        let secret = if version == self.version {
            Some(&self.current)
        } else if version == self.version.wrapping_sub(1) {
            self.previous.as_ref()
        } else {
            None
        };
        secret
            .and_then(|s| cookie(version, s, hdr, parsed, path))
            .is_some_and(|want| bool::from(n.data.as_slice().ct_eq(&want)))
    }
}

fn cookie(
    version: u8,
    secret: &[u8],
    hdr: &Header,
    parsed: &Parsed,
    path: Path,
) -> Option<Vec<u8>> {
    let ni = parsed.payloads.iter().find_map(|p| match p {
        Payload::Nonce(n) => Some(n),
        _ => None,
    })?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(ni);
    match path.remote.ip() {
        std::net::IpAddr::V4(a) => ctx.update(&a.octets()),
        std::net::IpAddr::V6(a) => ctx.update(&a.octets()),
    }
    ctx.update(&path.remote.port().to_be_bytes());
    ctx.update(&hdr.spi_i.to_be_bytes());
    let mac = ctx.sign();
    let mut value = vec![version];
    value.extend_from_slice(mac.as_ref().get(..16)?);
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ExchangeType;

    fn request(cookie: Option<Vec<u8>>, spi_i: u64) -> (Header, Parsed) {
        let hdr = header(spi_i, 0, ExchangeType::IKE_SA_INIT, true, false, 0);
        let mut payloads = vec![Payload::Nonce(vec![7; 32])];
        if let Some(c) = cookie {
            payloads.insert(0, notify(NotifyType::COOKIE, c));
        }
        let parsed = Parsed {
            header: hdr,
            payloads,
            encrypted: None,
        };
        (hdr, parsed)
    }

    fn path(port: u16) -> Path {
        Path {
            local: "203.0.113.2:500".parse().unwrap(),
            remote: std::net::SocketAddr::from(([198, 51, 100, 7], port)),
        }
    }

    #[test]
    fn cookies_survive_one_secret_change_not_two() {
        let rng = ring::rand::SystemRandom::new();
        let t0 = Instant::now();
        let keys = CookieKeys::new(t0, &rng).unwrap();
        let (hdr, bare) = request(None, 0x1111);
        let cookie = keys.make(&hdr, &bare, path(500)).unwrap();
        assert_eq!(cookie.len(), 17, "version byte + 16 bytes of HMAC");
        let (hdr, back) = request(Some(cookie.clone()), 0x1111);
        assert!(keys.accepts(&hdr, &back, path(500)));
        // Bound to the address, port and SPIi.
        assert!(!keys.accepts(&hdr, &back, path(501)));
        let (other, moved) = request(Some(cookie.clone()), 0x2222);
        assert!(!keys.accepts(&other, &moved, path(500)));
        // Before the lifetime ends nothing changes.
        let keys = keys.renewed(t0 + COOKIE_SECRET_LIFETIME / 2, &rng).unwrap();
        assert_eq!(keys.version, 0);
        // One change: the old cookie still works, new ones carry the new version.
        let keys = keys.renewed(t0 + COOKIE_SECRET_LIFETIME, &rng).unwrap();
        assert_eq!(keys.version, 1);
        assert!(
            keys.accepts(&hdr, &back, path(500)),
            "made just before a change"
        );
        let fresh = keys.make(&hdr, &bare, path(500)).unwrap();
        assert_ne!(fresh, cookie);
        // Two changes: the first secret is gone.
        let keys = keys.renewed(t0 + COOKIE_SECRET_LIFETIME * 2, &rng).unwrap();
        assert!(!keys.accepts(&hdr, &back, path(500)));
        // A cookie naming a version we never had is refused too.
        let mut forged = fresh.clone();
        forged[0] = 0x7f;
        let (hdr, f) = request(Some(forged), 0x1111);
        assert!(!keys.accepts(&hdr, &f, path(500)));
    }
}
