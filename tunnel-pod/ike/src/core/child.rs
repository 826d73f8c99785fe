//! Child SAs: keying material (RFC 7296 §2.17), and CREATE_CHILD_SA in both roles — new Child
//! SAs, Child SA rekeys (§1.3.3, collisions §2.8.1) and IKE SA rekeys (§1.3.2, §2.18).

use std::time::Instant;

use super::ike_sa::{
    Child, ChildState, Ctx, Established, Handoff, IkeCollision, IkeSa, MAX_CHILDREN, Outcome,
    PendingKind, Req, State, Windows,
};
use super::msg::{self, notify};
use super::proposal::{
    EspChoice, Pfs, describe_allowed_esp, describe_allowed_ike, describe_offered, esp_answer,
    esp_rekey_proposals, ike_answer, ike_proposals, select_esp, select_ike, single_per_type,
};
use super::ts::narrow;
use super::{ChildDirection, ChildSa, Event, Output, Path, TrafficSelector, later};
use crate::crypto::{Group, IkeKeys, IkeSuite, KeyPair, child_keymat, skeyseed_rekey};
use crate::wire::{
    ExchangeType, Header, KeyExchange, Notify, NotifyType, Payload, Proposal, ProtocolId,
    TransformId,
};

/// Nonce lengths we accept (RFC 7296 §3.9: at least 16 bytes, at most 256).
pub fn nonce_ok(n: &[u8]) -> bool {
    (16..=256).contains(&n.len())
}

pub const NONCE_LEN: usize = 32;

/// Everything needed to derive and describe a new Child SA.
pub struct NewChild<'a> {
    pub suite: &'a IkeSuite,
    pub sk_d: &'a [u8],
    pub choice: &'a EspChoice,
    pub inbound: u32,
    pub shared: Option<&'a [u8]>,
    pub ni: &'a [u8],
    pub nr: &'a [u8],
    /// We sent the request of the exchange that creates it (initiator→responder keys are
    /// then our outbound keys).
    pub we_initiated: bool,
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
    pub path: Path,
    pub activate: bool,
    pub replaces: Option<u32>,
}

impl NewChild<'_> {
    /// Derives the keys: KEYMAT = prf+(SK_d, [g^ir |] Ni | Nr), initiator→responder first.
    pub fn build(self, ctx: &Ctx<'_>, now: Instant) -> (Child, Box<ChildSa>) {
        let (encr_len, integ_len) = self.choice.key_lens();
        let k = child_keymat(
            self.suite.prf,
            self.sk_d,
            self.shared,
            self.ni,
            self.nr,
            encr_len,
            integ_len,
        );
        let c = self.choice;
        let dir = |spi: u32, encr_key, integ_key| ChildDirection {
            spi,
            encr: c.encr,
            key_bits: c.key_bits,
            integ: c.integ,
            encr_key,
            integ_key,
        };
        let (inbound, outbound) = if self.we_initiated {
            (
                dir(self.inbound, k.encr_r, k.integ_r),
                dir(c.spi, k.encr_i, k.integ_i),
            )
        } else {
            (
                dir(self.inbound, k.encr_i, k.integ_i),
                dir(c.spi, k.encr_r, k.integ_r),
            )
        };
        let lifetime = ctx.config.child_lifetime;
        let child = Child {
            inbound: self.inbound,
            outbound: c.spi,
            choice: *c,
            local_ts: self.local_ts.clone(),
            remote_ts: self.remote_ts.clone(),
            created: now,
            rekey_at: ctx.rekey_time(lifetime),
            expire_at: later(now, lifetime),
            outbound_active: self.activate,
            replaces: self.replaces,
            state: ChildState::Active,
        };
        let sa = ChildSa {
            inbound,
            outbound,
            local_ts: self.local_ts,
            remote_ts: self.remote_ts,
            lifetime,
            bytes: ctx.config.child_bytes,
            path: self.path,
            activate_outbound: self.activate,
            replaces: self.replaces,
        };
        (child, Box::new(sa))
    }
}

/// The pieces of a CREATE_CHILD_SA (or IKE_AUTH) message we look at.
#[derive(Default)]
pub struct ChildPayloads<'a> {
    pub sa: Option<&'a [Proposal]>,
    pub nonce: Option<&'a [u8]>,
    pub ke: Option<&'a KeyExchange>,
    pub tsi: Option<&'a [TrafficSelector]>,
    pub tsr: Option<&'a [TrafficSelector]>,
    pub rekey: Option<&'a Notify>,
    pub transport: bool,
}

impl<'a> ChildPayloads<'a> {
    pub fn from(p: &'a [Payload]) -> ChildPayloads<'a> {
        let mut c = ChildPayloads::default();
        for x in p {
            match x {
                Payload::Sa(s) => c.sa = c.sa.or(Some(s.as_slice())),
                Payload::Nonce(n) => c.nonce = c.nonce.or(Some(n.as_slice())),
                Payload::Ke(k) => c.ke = c.ke.or(Some(k)),
                Payload::TsI(t) => c.tsi = c.tsi.or(Some(t.as_slice())),
                Payload::TsR(t) => c.tsr = c.tsr.or(Some(t.as_slice())),
                Payload::Notify(n) if n.kind == NotifyType::REKEY_SA => {
                    c.rekey = c.rekey.or(Some(n))
                }
                Payload::Notify(n) if n.kind == NotifyType::USE_TRANSPORT_MODE => {
                    c.transport = true
                }
                _ => {}
            }
        }
        c
    }
}

fn ke_payload(kp: &KeyPair) -> Payload {
    Payload::Ke(KeyExchange {
        group: kp.group().id(),
        data: kp.public().to_vec(),
    })
}

fn spi32(b: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(b).ok().map(u32::from_be_bytes)
}

fn spi64(b: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(b).ok().map(u64::from_be_bytes)
}

/// The group an INVALID_KE_PAYLOAD notification names, when it is one of `allowed`.
pub fn invalid_ke_group(payloads: &[Payload], allowed: &[Group]) -> Option<Group> {
    payloads
        .iter()
        .find_map(|p| match p {
            Payload::Notify(n) if n.kind == NotifyType::INVALID_KE_PAYLOAD => {
                <[u8; 2]>::try_from(n.data.as_slice()).ok()
            }
            _ => None,
        })
        .map(|b| TransformId(u16::from_be_bytes(b)))
        .and_then(Group::from_id)
        .filter(|g| allowed.contains(g))
}

fn min_nonce<'a>(a: &'a [u8], b: &'a [u8]) -> &'a [u8] {
    if a <= b { a } else { b }
}

impl Established {
    pub fn install(&mut self, ctx: &mut Ctx<'_>, child: Child, sa: Box<ChildSa>) {
        self.children.push(child);
        ctx.out.push(Output::InstallChild(sa));
    }

    /// The peer answered our CREATE_CHILD_SA with an SA we cannot use: it installed that SA
    /// (its outbound SPI is our `inbound`), so ask it to delete it.
    fn reject_answered_child(&mut self, inbound: u32) {
        self.queue.push_back(Req::DeleteChildren(vec![inbound]));
    }

    fn restore_after_failed_rekey(&mut self, ctx: &Ctx<'_>, old: u32) {
        if let Some(c) = self.children.iter_mut().find(|c| c.inbound == old)
            && c.state == ChildState::Rekeying
        {
            c.state = ChildState::Active;
            c.rekey_at = ctx.retry_time();
        }
    }

    /// The peer created a Child SA we cannot use: reported, the old SA (if a rekey) kept for
    /// a later retry, the peer's new one deleted.
    fn unusable_answer(
        &mut self,
        ctx: &mut Ctx<'_>,
        notify: NotifyType,
        old_inbound: Option<u32>,
        new_inbound: u32,
    ) {
        ctx.event(Event::ChildFailed { notify });
        if let Some(old) = old_inbound {
            self.restore_after_failed_rekey(ctx, old);
        }
        self.reject_answered_child(new_inbound);
    }

    /// The answer to a CREATE_CHILD_SA another replica sent (imported, see
    /// [`PendingKind::Orphan`]). The exchange is done (its message ID is used), but without
    /// the DH private key and nonce the SA it created cannot be derived here:
    /// - a Child SA the peer created is deleted (our Delete names `new_inbound`, the SPI we
    ///   proposed, which the peer sends to, RFC 7296 §3.11), and the rekey of `old_inbound`
    ///   is tried again soon (the old SA back to active, `rekey_at` at the retry time);
    /// - an IKE SA the peer created cannot even be deleted (its Delete would be protected by
    ///   its keys); this SA stays, and its rekey is tried again soon. But the peer moved its
    ///   Child SAs to its new IKE SA (§2.18) and refuses more on this one: it finds the new
    ///   one dead (DPD) and deletes this one (its Delete, or its expiry), so both ends drop
    ///   the tunnel within about a minute and the initiator sets it up again. A known limit
    ///   of switching owners while an IKE SA rekey is in flight.
    pub fn on_orphan_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        error: Option<NotifyType>,
        orphan: super::ike_sa::Orphan,
    ) {
        match orphan {
            super::ike_sa::Orphan::Child {
                old_inbound,
                new_inbound,
            } => {
                if let Some(old) = old_inbound {
                    self.restore_after_failed_rekey(ctx, old);
                }
                match error {
                    Some(notify) => ctx.event(Event::ChildFailed { notify }),
                    None => self.reject_answered_child(new_inbound),
                }
            }
            super::ike_sa::Orphan::Ike { .. } => {
                if !self.superseded {
                    self.rekey_at = ctx.retry_time();
                }
            }
        }
    }

    /// The answer to our rekey of `old_inbound` (§1.3.3).
    #[allow(clippy::too_many_arguments)]
    pub fn on_rekey_child_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        path: Path,
        error: Option<NotifyType>,
        old_inbound: Option<u32>,
        new_inbound: u32,
        ni: Vec<u8>,
        keypair: Option<KeyPair>,
        collision: Option<Vec<u8>>,
        payloads: Vec<Payload>,
    ) {
        let now = ctx.now;
        // §1.3: INVALID_KE_PAYLOAD names the PFS group the peer wants: retry with it at once,
        // unless it just refused that very group or we already led with its last hint (then
        // the usual retry timer paces us, and a peer cannot keep us in a loop).
        let used = keypair.as_ref().map(KeyPair::group);
        if error == Some(NotifyType::INVALID_KE_PAYLOAD)
            && let Some(g) = invalid_ke_group(&payloads, &ctx.config.proposals.pfs)
            && Some(g) != used
        {
            let immediate = self.pfs_hint.is_none() || self.pfs_hint != used;
            self.pfs_hint = Some(g);
            if immediate {
                self.queue.push_back(match old_inbound {
                    Some(old) => Req::RekeyChild(old),
                    None => Req::NewChild,
                });
                return;
            }
        }
        if let Some(notify) = error {
            ctx.event(Event::ChildFailed { notify });
            match old_inbound {
                // §2.25: the peer no longer has it: drop ours silently, create a fresh one.
                Some(old) if notify == NotifyType::CHILD_SA_NOT_FOUND => {
                    self.retire_by_inbound(ctx, old);
                    self.queue.push_back(Req::NewChild);
                }
                Some(old) => self.restore_after_failed_rekey(ctx, old),
                None => {}
            }
            return;
        }
        let p = ChildPayloads::from(&payloads);
        let ke_group = p.ke.map(|k| k.group);
        let choice =
            p.sa.filter(|sa| single_per_type(sa))
                .and_then(|sa| select_esp(sa, &ctx.config.proposals, Pfs::Negotiate { ke_group }))
                .filter(|c| c.dh == keypair.as_ref().map(KeyPair::group));
        let (Some(choice), Some(nr)) = (choice, p.nonce.filter(|n| nonce_ok(n))) else {
            self.unusable_answer(
                ctx,
                NotifyType::NO_PROPOSAL_CHOSEN,
                old_inbound,
                new_inbound,
            );
            return;
        };
        let shared = match (keypair, p.ke) {
            (Some(kp), Some(ke)) => match kp.agree(&ke.data) {
                Ok(s) => Some(s),
                Err(_) => {
                    let n = NotifyType::INVALID_SYNTAX;
                    self.unusable_answer(ctx, n, old_inbound, new_inbound);
                    return;
                }
            },
            _ => None,
        };
        let tsi = narrow(p.tsi.unwrap_or_default(), &ctx.config.local_ts);
        let tsr = narrow(p.tsr.unwrap_or_default(), &ctx.config.remote_ts);
        if tsi.is_empty() || tsr.is_empty() {
            self.unusable_answer(ctx, NotifyType::TS_UNACCEPTABLE, old_inbound, new_inbound);
            return;
        }
        // §2.8.1: of two simultaneous rekeys, the one whose exchange has the lowest nonce is
        // redundant; its initiator deletes what it created.
        let ours_min = min_nonce(&ni, nr);
        if let Some(peer_min) = &collision
            && ours_min < peer_min.as_slice()
        {
            if let Some(c) = self
                .children
                .iter_mut()
                .find(|c| Some(c.inbound) == old_inbound)
            {
                c.state = ChildState::Replaced;
            }
            self.queue.push_back(Req::DeleteChildren(vec![new_inbound]));
            return;
        }
        let old_inbound = old_inbound.filter(|o| self.children.iter().any(|c| c.inbound == *o));
        let (child, sa) = NewChild {
            suite: &self.suite,
            sk_d: &self.sk_d,
            choice: &choice,
            inbound: new_inbound,
            shared: shared.as_ref().map(|s| s.as_slice()),
            ni: &ni,
            nr,
            we_initiated: true,
            local_ts: tsi,
            remote_ts: tsr,
            path,
            activate: true,
            replaces: old_inbound,
        }
        .build(ctx, now);
        self.install(ctx, child, sa);
        if let Some(old_inbound) = old_inbound {
            if let Some(c) = self.children.iter_mut().find(|c| c.inbound == old_inbound) {
                c.state = ChildState::Deleting;
            }
            self.queue.push_back(Req::DeleteChildren(vec![old_inbound]));
            ctx.event(Event::ChildRekeyed {
                old_inbound_spi: old_inbound,
                new_inbound_spi: new_inbound,
            });
        } else {
            ctx.event(Event::ChildEstablished {
                inbound_spi: new_inbound,
                outbound_spi: choice.spi,
                suite: choice.name(),
            });
        }
    }
}

impl IkeSa {
    /// CREATE_CHILD_SA for a rekey of `old` (our inbound SPI), or for a new Child SA with our
    /// configured selectors when `old` is None.
    pub fn build_rekey_child(
        &mut self,
        ctx: &mut Ctx<'_>,
        old: Option<u32>,
    ) -> Option<(ExchangeType, Vec<Payload>, PendingKind)> {
        let State::Established(e) = &mut self.state else {
            return None;
        };
        if e.superseded {
            return None;
        }
        let (local_ts, remote_ts) = match old {
            Some(old) => {
                let c = e.children.iter().find(|c| c.inbound == old)?;
                if !matches!(c.state, ChildState::Active | ChildState::Rekeying) {
                    return None;
                }
                (c.local_ts.clone(), c.remote_ts.clone())
            }
            None => {
                if e.children.len() >= MAX_CHILDREN {
                    return None;
                }
                (ctx.config.local_ts.clone(), ctx.config.remote_ts.clone())
            }
        };
        let group = e.pfs_hint.or(ctx.config.proposals.pfs_initiate);
        let built = (|| {
            let new_inbound = ctx.new_esp_spi()?;
            let ni = msg::random_bytes(ctx.rng, NONCE_LEN)?;
            let keypair = match group {
                Some(g) => Some(KeyPair::generate(g, ctx.rng).ok()?),
                None => None,
            };
            Some((new_inbound, ni, keypair))
        })();
        let child = old.and_then(|o| e.children.iter_mut().find(|c| c.inbound == o));
        let Some((new_inbound, ni, keypair)) = built else {
            if let Some(c) = child {
                c.state = ChildState::Active;
            }
            return None;
        };
        let mut payloads = Vec::new();
        if let Some(c) = child {
            c.state = ChildState::Rekeying;
            // §1.3.3: the SPI we receive the old SA on.
            payloads.push(Payload::Notify(Notify {
                protocol: ProtocolId::ESP,
                spi: c.inbound.to_be_bytes().to_vec(),
                kind: NotifyType::REKEY_SA,
                data: Vec::new(),
            }));
        }
        payloads.push(Payload::Sa(esp_rekey_proposals(
            &ctx.config.proposals,
            new_inbound,
            group,
        )));
        payloads.push(Payload::Nonce(ni.clone()));
        if let Some(kp) = &keypair {
            payloads.push(ke_payload(kp));
        }
        payloads.push(Payload::TsI(local_ts));
        payloads.push(Payload::TsR(remote_ts));
        Some((
            ExchangeType::CREATE_CHILD_SA,
            payloads,
            PendingKind::RekeyChild {
                old_inbound: old,
                new_inbound,
                ni,
                keypair,
                collision: None,
            },
        ))
    }

    pub fn build_rekey_ike(
        &mut self,
        ctx: &mut Ctx<'_>,
    ) -> Option<(ExchangeType, Vec<Payload>, PendingKind)> {
        let State::Established(e) = &self.state else {
            return None;
        };
        if e.superseded {
            return None;
        }
        let group = e.ike_dh_hint.unwrap_or(e.suite.dh);
        let new_spi = ctx.new_ike_spi()?;
        let ni = msg::random_bytes(ctx.rng, NONCE_LEN)?;
        let keypair = KeyPair::generate(group, ctx.rng).ok()?;
        let payloads = vec![
            Payload::Sa(ike_proposals(&ctx.config.proposals, &new_spi.to_be_bytes())),
            Payload::Nonce(ni.clone()),
            ke_payload(&keypair),
        ];
        Some((
            ExchangeType::CREATE_CHILD_SA,
            payloads,
            PendingKind::RekeyIke {
                new_spi,
                ni,
                keypair,
                collision: None,
            },
        ))
    }

    /// A CREATE_CHILD_SA request from the peer.
    pub fn on_create_child(
        mut self,
        ctx: &mut Ctx<'_>,
        path: Path,
        hdr: Header,
        payloads: Vec<Payload>,
    ) -> Outcome {
        let p = ChildPayloads::from(&payloads);
        let (Some(sa), Some(ni)) = (p.sa, p.nonce) else {
            self.respond(
                ctx,
                path,
                hdr,
                &[notify(NotifyType::INVALID_SYNTAX, Vec::new())],
            );
            return Outcome::keep(self);
        };
        if !nonce_ok(ni) {
            self.respond(
                ctx,
                path,
                hdr,
                &[notify(NotifyType::INVALID_SYNTAX, Vec::new())],
            );
            return Outcome::keep(self);
        }
        if sa.iter().any(|x| x.protocol == ProtocolId::IKE) {
            return self.on_rekey_ike_request(ctx, path, hdr, sa, ni, p.ke);
        }
        let answer = self.child_request(ctx, path, &p, sa, ni);
        let ok = answer
            .iter()
            .all(|x| !matches!(x, Payload::Notify(n) if n.kind.is_error()));
        if let Some(Payload::Notify(n)) = answer.first()
            && n.kind.is_error()
        {
            ctx.event(Event::ChildFailed { notify: n.kind });
        }
        self.respond(ctx, path, hdr, &answer);
        ctx.event(Event::ExchangeDone {
            exchange: hdr.exchange,
            ok,
        });
        Outcome::keep(self)
    }

    /// The answer's payloads for a new or rekeyed Child SA (or an error notification).
    fn child_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        path: Path,
        p: &ChildPayloads<'_>,
        sa: &[Proposal],
        ni: &[u8],
    ) -> Vec<Payload> {
        let now = ctx.now;
        let err = |k: NotifyType| vec![notify(k, Vec::new())];
        let State::Established(e) = &mut self.state else {
            return err(NotifyType::TEMPORARY_FAILURE);
        };
        if e.superseded {
            return err(NotifyType::TEMPORARY_FAILURE);
        }
        if p.transport {
            return err(NotifyType::NO_PROPOSAL_CHOSEN);
        }
        let old = match p.rekey {
            None => None,
            Some(n) => {
                let found = spi32(&n.spi)
                    .filter(|_| n.protocol == ProtocolId::ESP)
                    .and_then(|spi| e.children.iter().find(|c| c.outbound == spi));
                match found {
                    None => {
                        return vec![Payload::Notify(Notify {
                            protocol: n.protocol,
                            spi: n.spi.clone(),
                            kind: NotifyType::CHILD_SA_NOT_FOUND,
                            data: Vec::new(),
                        })];
                    }
                    Some(c) if matches!(c.state, ChildState::Replaced | ChildState::Deleting) => {
                        return err(NotifyType::TEMPORARY_FAILURE);
                    }
                    Some(c) => Some(c.inbound),
                }
            }
        };
        // A rekey adds an SA only until the old one's Delete: refusing it at the cap would
        // leave the old SA to expire. Replaced SAs cannot be rekeyed again (above), so rekeys
        // at most double the count.
        let cap = if old.is_some() {
            MAX_CHILDREN.saturating_mul(2)
        } else {
            MAX_CHILDREN
        };
        if e.children.len() >= cap {
            return err(NotifyType::NO_ADDITIONAL_SAS);
        }
        let ke_group = p.ke.map(|k| k.group);
        let Some(choice) = select_esp(sa, &ctx.config.proposals, Pfs::Negotiate { ke_group })
        else {
            ctx.event(Event::NoProposalChosen {
                offered: describe_offered(sa),
                allowed: describe_allowed_esp(&ctx.config.proposals),
            });
            return err(NotifyType::NO_PROPOSAL_CHOSEN);
        };
        if let Some(g) = choice.dh
            && ke_group != Some(g.id())
        {
            return vec![notify(
                NotifyType::INVALID_KE_PAYLOAD,
                g.id().0.to_be_bytes().to_vec(),
            )];
        }
        let tsi = narrow(p.tsi.unwrap_or_default(), &ctx.config.remote_ts);
        let tsr = narrow(p.tsr.unwrap_or_default(), &ctx.config.local_ts);
        if tsi.is_empty() || tsr.is_empty() {
            return err(NotifyType::TS_UNACCEPTABLE);
        }
        let Some(nr) = msg::random_bytes(ctx.rng, NONCE_LEN) else {
            return err(NotifyType::TEMPORARY_FAILURE);
        };
        let (ker, shared) = match (choice.dh, p.ke) {
            (Some(g), Some(ke)) => {
                let Ok(kp) = KeyPair::generate(g, ctx.rng) else {
                    return err(NotifyType::TEMPORARY_FAILURE);
                };
                let ker = ke_payload(&kp);
                match kp.agree(&ke.data) {
                    Ok(s) => (Some(ker), Some(s)),
                    Err(_) => return err(NotifyType::INVALID_SYNTAX),
                }
            }
            _ => (None, None),
        };
        let Some(inbound) = ctx.new_esp_spi() else {
            return err(NotifyType::TEMPORARY_FAILURE);
        };
        let (child, child_sa) = NewChild {
            suite: &e.suite,
            sk_d: &e.sk_d,
            choice: &choice,
            inbound,
            shared: shared.as_ref().map(|s| s.as_slice()),
            ni,
            nr: &nr,
            we_initiated: false,
            local_ts: tsr.clone(),
            remote_ts: tsi.clone(),
            path,
            // A rekeyed SA carries outbound traffic once the peer deletes the old one.
            activate: old.is_none(),
            replaces: old,
        }
        .build(ctx, now);
        e.install(ctx, child, child_sa);
        match old {
            Some(old) => {
                if let Some(c) = e.children.iter_mut().find(|c| c.inbound == old) {
                    c.state = ChildState::Replaced;
                }
                // §2.8.1: remember a collision with our own rekey of the same SA.
                if let Some(pending) = &mut e.win.pending
                    && let PendingKind::RekeyChild {
                        old_inbound,
                        collision,
                        ..
                    } = &mut pending.kind
                    && *old_inbound == Some(old)
                {
                    *collision = Some(min_nonce(ni, &nr).to_vec());
                }
                e.queue.retain(|r| *r != Req::RekeyChild(old));
                ctx.event(Event::ChildRekeyed {
                    old_inbound_spi: old,
                    new_inbound_spi: inbound,
                });
            }
            None => ctx.event(Event::ChildEstablished {
                inbound_spi: inbound,
                outbound_spi: choice.spi,
                suite: choice.name(),
            }),
        }
        let mut out = vec![
            Payload::Sa(esp_answer(&choice, inbound)),
            Payload::Nonce(nr),
        ];
        out.extend(ker);
        out.push(Payload::TsI(tsi));
        out.push(Payload::TsR(tsr));
        out
    }

    /// The peer rekeys this IKE SA (§1.3.2): a new SA takes the children; the peer deletes
    /// this one.
    fn on_rekey_ike_request(
        mut self,
        ctx: &mut Ctx<'_>,
        path: Path,
        hdr: Header,
        sa: &[Proposal],
        ni: &[u8],
        ke: Option<&KeyExchange>,
    ) -> Outcome {
        let now = ctx.now;
        let fail = |s: &mut IkeSa, ctx: &mut Ctx<'_>, n: Payload| {
            s.respond(ctx, path, hdr, &[n]);
            ctx.event(Event::ExchangeDone {
                exchange: hdr.exchange,
                ok: false,
            });
        };
        // §2.8.2: while our own rekey is in flight, answer as usual but keep the children
        // until both exchanges are done. A second collision, or a rekey of an SA already
        // replaced, is refused (§2.25).
        let (refuse, collide) = match &self.state {
            State::Established(e) => match e.win.pending.as_ref().map(|p| &p.kind) {
                _ if e.superseded => (true, false),
                Some(PendingKind::RekeyIke { collision, .. }) => (collision.is_some(), true),
                _ => (false, false),
            },
            _ => (true, false),
        };
        if refuse {
            fail(
                &mut self,
                ctx,
                notify(NotifyType::TEMPORARY_FAILURE, Vec::new()),
            );
            return Outcome::keep(self);
        }
        let Some(ke) = ke else {
            fail(
                &mut self,
                ctx,
                notify(NotifyType::INVALID_SYNTAX, Vec::new()),
            );
            return Outcome::keep(self);
        };
        let Some(choice) = select_ike(sa, &ctx.config.proposals, Some(ke.group), 8) else {
            ctx.event(Event::NoProposalChosen {
                offered: describe_offered(sa),
                allowed: describe_allowed_ike(&ctx.config.proposals),
            });
            fail(
                &mut self,
                ctx,
                notify(NotifyType::NO_PROPOSAL_CHOSEN, Vec::new()),
            );
            return Outcome::keep(self);
        };
        if choice.suite.dh.id() != ke.group {
            let data = choice.suite.dh.id().0.to_be_bytes().to_vec();
            fail(&mut self, ctx, notify(NotifyType::INVALID_KE_PAYLOAD, data));
            return Outcome::keep(self);
        }
        let built = (|| {
            let peer_spi = spi64(&choice.spi).filter(|s| *s != 0)?;
            let our_spi = ctx.new_ike_spi()?;
            let nr = msg::random_bytes(ctx.rng, NONCE_LEN)?;
            let kp = KeyPair::generate(choice.suite.dh, ctx.rng).ok()?;
            let ker = ke_payload(&kp);
            let shared = kp.agree(&ke.data).ok()?;
            Some((peer_spi, our_spi, nr, ker, shared))
        })();
        let Some((peer_spi, our_spi, nr, ker, shared)) = built else {
            fail(
                &mut self,
                ctx,
                notify(NotifyType::INVALID_SYNTAX, Vec::new()),
            );
            return Outcome::keep(self);
        };
        let State::Established(e) = &mut self.state else {
            return Outcome::keep(self);
        };
        let seed = skeyseed_rekey(e.suite.prf, &e.sk_d, &shared, ni, &nr);
        let keys = IkeKeys::derive(&choice.suite, &seed, ni, &nr, peer_spi, our_spi);
        let Ok((send, recv)) = keys.ciphers(&choice.suite, false) else {
            fail(
                &mut self,
                ctx,
                notify(NotifyType::TEMPORARY_FAILURE, Vec::new()),
            );
            return Outcome::keep(self);
        };
        let min = min_nonce(ni, &nr).to_vec();
        let answer = vec![
            Payload::Sa(ike_answer(&choice, &our_spi.to_be_bytes())),
            Payload::Nonce(nr),
            ker,
        ];
        let new = successor(ctx, e, choice.suite, keys, send, recv, now, !collide);
        if collide
            && let Some(pending) = &mut e.win.pending
            && let PendingKind::RekeyIke { collision, .. } = &mut pending.kind
        {
            *collision = Some(IkeCollision {
                min_nonce: min,
                our_spi,
                spi_i: peer_spi,
                spi_r: our_spi,
            });
        }
        let new_sa = IkeSa {
            spi_i: peer_spi,
            spi_r: our_spi,
            initiator: false,
            path: self.path,
            created: now,
            peer_frag: self.peer_frag,
            nat: self.nat,
            reassembly: None,
            state: State::Established(Box::new(new)),
        };
        self.respond(ctx, path, hdr, &answer);
        if !collide {
            ctx.event(Event::IkeRekeyed {
                old_spi_i: self.spi_i,
                old_spi_r: self.spi_r,
                new_spi_i: peer_spi,
                new_spi_r: our_spi,
            });
        }
        ctx.event(Event::ExchangeDone {
            exchange: hdr.exchange,
            ok: true,
        });
        let mut o = Outcome::keep(self);
        o.new_sa = Some(new_sa);
        o
    }

    /// The answer to our IKE SA rekey (§1.3.2), with a collision resolved (§2.8.2): of the
    /// two new SAs, the one whose exchange has the lowest nonce is redundant and is deleted by
    /// its initiator; the children go to the other.
    #[allow(clippy::too_many_arguments)]
    pub fn on_rekey_ike_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        error: Option<NotifyType>,
        new_spi: u64,
        ni: Vec<u8>,
        keypair: KeyPair,
        collision: Option<IkeCollision>,
        payloads: Vec<Payload>,
    ) -> IkeRekeyResult {
        let now = ctx.now;
        let (old_i, old_r, path, frag, nat) =
            (self.spi_i, self.spi_r, self.path, self.peer_frag, self.nat);
        let State::Established(e) = &mut self.state else {
            return IkeRekeyResult::default();
        };
        // The children go to the SA the peer created; the peer deletes this one.
        let to_peers = |e: &mut Established, ctx: &mut Ctx<'_>, c: &IkeCollision| {
            let children = take_children(e);
            supersede(e, now);
            ctx.event(Event::IkeRekeyed {
                old_spi_i: old_i,
                old_spi_r: old_r,
                new_spi_i: c.spi_i,
                new_spi_r: c.spi_r,
            });
            Handoff {
                to: c.our_spi,
                children,
            }
        };
        // §1.3: INVALID_KE_PAYLOAD names the group the peer wants: retry with it at once
        // (the same rule as for Child SAs, so a peer cannot keep us in a loop).
        if error == Some(NotifyType::INVALID_KE_PAYLOAD)
            && collision.is_none()
            && let Some(g) = invalid_ke_group(&payloads, &ctx.config.proposals.ike_dh)
            && g != keypair.group()
        {
            let used = Some(keypair.group());
            let immediate = e.ike_dh_hint.is_none() || e.ike_dh_hint != used;
            e.ike_dh_hint = Some(g);
            if immediate {
                e.queue.push_back(Req::RekeyIke);
                return IkeRekeyResult::default();
            }
        }
        let built = (|| {
            if error.is_some() {
                // e.rekey_at was already pushed back when the rekey was queued.
                return None;
            }
            let p = ChildPayloads::from(&payloads);
            let choice =
                p.sa.filter(|sa| single_per_type(sa))
                    .and_then(|sa| select_ike(sa, &ctx.config.proposals, p.ke.map(|k| k.group), 8))
                    .filter(|c| c.suite.dh == keypair.group())?;
            let ke = p.ke.filter(|k| k.group == keypair.group().id())?;
            let nr = p.nonce.filter(|n| nonce_ok(n))?;
            let peer_spi = spi64(&choice.spi).filter(|s| *s != 0)?;
            let shared = keypair.agree(&ke.data).ok()?;
            let seed = skeyseed_rekey(e.suite.prf, &e.sk_d, &shared, &ni, nr);
            let keys = IkeKeys::derive(&choice.suite, &seed, &ni, nr, new_spi, peer_spi);
            let (send, recv) = keys.ciphers(&choice.suite, true).ok()?;
            Some((
                choice.suite,
                keys,
                send,
                recv,
                peer_spi,
                min_nonce(&ni, nr).to_vec(),
            ))
        })();
        let Some((suite, keys, send, recv, peer_spi, ours_min)) = built else {
            return IkeRekeyResult {
                handoff: collision.as_ref().map(|c| to_peers(e, ctx, c)),
                ..IkeRekeyResult::default()
            };
        };
        let ours_lost = collision.as_ref().is_some_and(|c| ours_min < c.min_nonce);
        let new = successor(ctx, e, suite, keys, send, recv, now, !ours_lost);
        let mut new_sa = IkeSa {
            spi_i: new_spi,
            spi_r: peer_spi,
            initiator: true,
            path,
            created: now,
            peer_frag: frag,
            nat,
            reassembly: None,
            state: State::Established(Box::new(new)),
        };
        if let (true, Some(c)) = (ours_lost, &collision) {
            // Ours is redundant: delete it; the children go to the peer's.
            let handoff = to_peers(e, ctx, c);
            if let State::Established(n) = &mut new_sa.state {
                supersede(n, now);
            }
            new_sa.request(ctx, Req::DeleteIke);
            return IkeRekeyResult {
                new_sa: Some(new_sa),
                handoff: Some(handoff),
                supersede: None,
            };
        }
        e.queue.clear();
        e.queue.push_back(Req::DeleteIke);
        ctx.event(Event::IkeRekeyed {
            old_spi_i: old_i,
            old_spi_r: old_r,
            new_spi_i: new_spi,
            new_spi_r: peer_spi,
        });
        IkeRekeyResult {
            new_sa: Some(new_sa),
            handoff: None,
            // The peer's SA is the redundant one: it deletes it.
            supersede: collision.map(|c| c.our_spi),
        }
    }
}

/// What our IKE rekey's answer led to.
#[derive(Default)]
pub struct IkeRekeyResult {
    pub new_sa: Option<IkeSa>,
    pub handoff: Option<Handoff>,
    pub supersede: Option<u64>,
}

fn take_children(old: &mut Established) -> Vec<Child> {
    let mut children = std::mem::take(&mut old.children);
    for c in &mut children {
        if c.state == ChildState::Rekeying {
            c.state = ChildState::Active;
        }
    }
    children
}

/// Marks an IKE SA as replaced: no children, no DPD or rekey, only its Delete; gone after a
/// minute if the peer never deletes it.
pub fn supersede(old: &mut Established, now: Instant) {
    old.superseded = true;
    old.queue.retain(|r| matches!(r, Req::DeleteIke));
    old.expire_at = old
        .expire_at
        .min(later(now, std::time::Duration::from_secs(60)));
}

/// The Established state of the SA that replaces `old` (which keeps no children, §2.18):
/// message IDs restart at 0.
/// With `take` false (a collision not yet resolved) the old SA is left as it is.
#[allow(clippy::too_many_arguments)]
fn successor(
    ctx: &Ctx<'_>,
    old: &mut Established,
    suite: IkeSuite,
    keys: IkeKeys,
    send: crate::crypto::SkCipher,
    recv: crate::crypto::SkCipher,
    now: Instant,
    take: bool,
) -> Established {
    let children = if take {
        let c = take_children(old);
        supersede(old, now);
        c
    } else {
        Vec::new()
    };
    let mut new = Established::new(
        ctx,
        suite,
        keys.sk_d.clone(),
        send,
        recv,
        old.peer_id.clone(),
        Windows::new(0, None, 0),
    );
    new.children = children;
    new.pfs_hint = old.pfs_hint;
    new.ike_dh_hint = old.ike_dh_hint;
    // A rekey answered while passive (the shell had not activated it) stays passive.
    new.passive = old.passive;
    new
}

/// Used by IKE_AUTH (both roles) for the first Child SA.
pub fn first_child_answer(
    ctx: &mut Ctx<'_>,
    p: &ChildPayloads<'_>,
) -> Result<(EspChoice, Vec<TrafficSelector>, Vec<TrafficSelector>), NotifyType> {
    if p.transport {
        return Err(NotifyType::NO_PROPOSAL_CHOSEN);
    }
    let Some(sa) = p.sa else {
        return Err(NotifyType::NO_PROPOSAL_CHOSEN);
    };
    let Some(choice) = select_esp(sa, &ctx.config.proposals, Pfs::Ignore) else {
        ctx.event(Event::NoProposalChosen {
            offered: describe_offered(sa),
            allowed: describe_allowed_esp(&ctx.config.proposals),
        });
        return Err(NotifyType::NO_PROPOSAL_CHOSEN);
    };
    let tsi = narrow(p.tsi.unwrap_or_default(), &ctx.config.remote_ts);
    let tsr = narrow(p.tsr.unwrap_or_default(), &ctx.config.local_ts);
    if tsi.is_empty() || tsr.is_empty() {
        return Err(NotifyType::TS_UNACCEPTABLE);
    }
    Ok((choice, tsi, tsr))
}
