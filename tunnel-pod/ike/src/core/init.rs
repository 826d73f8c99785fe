//! IKE_SA_INIT and IKE_AUTH (RFC 7296 §1.2), both roles.

use subtle::ConstantTimeEq;

use super::child::{
    ChildPayloads, NONCE_LEN, NewChild, first_child_answer, invalid_ke_group, nonce_ok,
};
use super::ike_sa::{
    AuthSent, AwaitAuth, Ctx, Established, IkeSa, InitSent, Outcome, Req, Retx, State, Windows,
};
use super::msg::{self, header, notify};
use super::nat::{NatState, forced_source_hash, nat_detection_hash};
use super::proposal::{
    Pfs, describe_allowed_ike, describe_offered, esp_proposals, ike_answer, ike_proposals,
    ike_suite_name, select_esp, select_ike, single_per_type,
};
use super::{DeleteReason, DropReason, Event, Path, PskSource, id_string, later};
use crate::crypto::{IkeKeys, KeyPair, psk_auth, skeyseed};
use crate::wire::{
    AuthMethod, Authentication, ExchangeType, Header, KeyExchange, NotifyType, Parsed, Payload,
    encode_message,
};

/// The NAT_DETECTION_*_IP notifications of a message with header SPIs `spi_i`/`spi_r`
/// sent on `path` (from our side).
fn nat_notifies(ctx: &Ctx<'_>, spi_i: u64, spi_r: u64, path: Path) -> [Payload; 2] {
    let src = if ctx.config.force_udp_encap {
        forced_source_hash(spi_i, spi_r, path.local)
    } else {
        nat_detection_hash(spi_i, spi_r, path.local)
    };
    [
        notify(NotifyType::NAT_DETECTION_SOURCE_IP, src),
        notify(
            NotifyType::NAT_DETECTION_DESTINATION_IP,
            nat_detection_hash(spi_i, spi_r, path.remote),
        ),
    ]
}

struct InitPayloads<'a> {
    sa: Option<&'a [crate::wire::Proposal]>,
    ke: Option<&'a KeyExchange>,
    nonce: Option<&'a [u8]>,
    nat_src: Vec<&'a [u8]>,
    nat_dst: Vec<&'a [u8]>,
    frag: bool,
    cookie: Option<&'a [u8]>,
    invalid_ke: Option<&'a [u8]>,
    error: Option<NotifyType>,
}

impl<'a> InitPayloads<'a> {
    fn from(p: &'a [Payload]) -> Self {
        let mut s = InitPayloads {
            sa: None,
            ke: None,
            nonce: None,
            nat_src: Vec::new(),
            nat_dst: Vec::new(),
            frag: false,
            cookie: None,
            invalid_ke: None,
            error: None,
        };
        for x in p {
            match x {
                Payload::Sa(v) => s.sa = s.sa.or(Some(v.as_slice())),
                Payload::Ke(k) => s.ke = s.ke.or(Some(k)),
                Payload::Nonce(n) => s.nonce = s.nonce.or(Some(n.as_slice())),
                Payload::Notify(n) => match n.kind {
                    NotifyType::NAT_DETECTION_SOURCE_IP => s.nat_src.push(&n.data),
                    NotifyType::NAT_DETECTION_DESTINATION_IP => s.nat_dst.push(&n.data),
                    NotifyType::IKEV2_FRAGMENTATION_SUPPORTED => s.frag = true,
                    NotifyType::COOKIE => s.cookie = Some(&n.data),
                    NotifyType::INVALID_KE_PAYLOAD => {
                        s.invalid_ke = Some(&n.data);
                        s.error = s.error.or(Some(n.kind));
                    }
                    k if k.is_error() => s.error = s.error.or(Some(k)),
                    _ => {}
                },
                _ => {}
            }
        }
        s
    }
}

/// An unencrypted answer to an IKE_SA_INIT request that keeps no state (errors).
fn init_error(ctx: &mut Ctx<'_>, path: Path, req: &Header, kind: NotifyType, data: Vec<u8>) {
    let hdr = header(
        req.spi_i,
        0,
        ExchangeType::IKE_SA_INIT,
        false,
        true,
        req.message_id,
    );
    let bytes = encode_message(hdr, &[notify(kind, data)]);
    ctx.send(path, &[bytes]);
    // Answered with an error (INVALID_KE_PAYLOAD included: the peer must start again).
    ctx.event(Event::ExchangeDone {
        exchange: ExchangeType::IKE_SA_INIT,
        ok: false,
    });
}

/// What answering an IKE_SA_INIT request made.
pub struct Made {
    /// The half-open SA, if any.
    pub sa: Option<IkeSa>,
    /// A DH key pair was generated: the expensive part, which a retransmission must not
    /// repeat (§2.1: "A retransmission from the initiator MUST be bitwise identical to the
    /// original request"; the endpoint answers one with the response it kept).
    pub dh: bool,
}

/// Responder: a new IKE_SA_INIT request (§1.2). Answers it.
pub fn respond_init(
    ctx: &mut Ctx<'_>,
    path: Path,
    hdr: Header,
    parsed: &Parsed,
    msg: &[u8],
    psk: &dyn PskSource,
) -> Made {
    let mut dh = false;
    let sa = respond_init_sa(ctx, path, hdr, parsed, msg, psk, &mut dh);
    Made { sa, dh }
}

fn respond_init_sa(
    ctx: &mut Ctx<'_>,
    path: Path,
    hdr: Header,
    parsed: &Parsed,
    msg: &[u8],
    psk: &dyn PskSource,
    dh: &mut bool,
) -> Option<IkeSa> {
    let p = InitPayloads::from(&parsed.payloads);
    let (Some(sa), Some(ke), Some(ni)) = (p.sa, p.ke, p.nonce) else {
        ctx.dropped(DropReason::Malformed);
        return None;
    };
    if !nonce_ok(ni) {
        ctx.dropped(DropReason::Malformed);
        init_error(ctx, path, &hdr, NotifyType::INVALID_SYNTAX, Vec::new());
        return None;
    }
    let Some(choice) = select_ike(sa, &ctx.config.proposals, Some(ke.group), 0) else {
        ctx.event(Event::NoProposalChosen {
            offered: describe_offered(sa),
            allowed: describe_allowed_ike(&ctx.config.proposals),
        });
        init_error(ctx, path, &hdr, NotifyType::NO_PROPOSAL_CHOSEN, Vec::new());
        return None;
    };
    let group = choice.suite.dh;
    if group.id() != ke.group {
        // §1.2: name the group we want; keep no state.
        init_error(
            ctx,
            path,
            &hdr,
            NotifyType::INVALID_KE_PAYLOAD,
            group.id().0.to_be_bytes().to_vec(),
        );
        return None;
    }
    let built = (|| {
        let spi_r = ctx.new_ike_spi()?;
        let nr = msg::random_bytes(ctx.rng, NONCE_LEN)?;
        *dh = true;
        let kp = KeyPair::generate(group, ctx.rng).ok()?;
        Some((spi_r, nr, kp))
    })();
    let Some((spi_r, nr, kp)) = built else {
        ctx.dropped(DropReason::Internal);
        return None;
    };
    let public = kp.public().to_vec();
    let Ok(shared) = kp.agree(&ke.data) else {
        ctx.dropped(DropReason::BadKeyExchange);
        init_error(ctx, path, &hdr, NotifyType::INVALID_SYNTAX, Vec::new());
        return None;
    };
    let suite = choice.suite;
    let seed = skeyseed(suite.prf, ni, &nr, &shared);
    let keys = IkeKeys::derive(&suite, &seed, ni, &nr, hdr.spi_i, spi_r);
    let Ok((send, recv)) = keys.ciphers(&suite, false) else {
        ctx.dropped(DropReason::Internal);
        return None;
    };
    let mut payloads = vec![
        Payload::Sa(ike_answer(&choice, &[])),
        Payload::Ke(KeyExchange {
            group: group.id(),
            data: public,
        }),
        Payload::Nonce(nr.clone()),
    ];
    payloads.extend(nat_notifies(ctx, hdr.spi_i, spi_r, path));
    if p.frag {
        payloads.push(notify(
            NotifyType::IKEV2_FRAGMENTATION_SUPPORTED,
            Vec::new(),
        ));
    }
    let rh = header(hdr.spi_i, spi_r, ExchangeType::IKE_SA_INIT, false, true, 0);
    let response = encode_message(rh, &payloads);
    ctx.send(path, std::slice::from_ref(&response));
    ctx.event(Event::ExchangeDone {
        exchange: ExchangeType::IKE_SA_INIT,
        ok: true,
    });
    let nat = NatState::detect(hdr.spi_i, 0, path, &p.nat_src, &p.nat_dst);
    Some(IkeSa {
        spi_i: hdr.spi_i,
        spi_r,
        initiator: false,
        path,
        created: ctx.now,
        peer_frag: p.frag,
        nat,
        reassembly: None,
        state: State::AwaitAuth(Box::new(AwaitAuth {
            suite,
            keys,
            send,
            recv,
            ni: ni.to_vec(),
            nr,
            init_request: msg.to_vec(),
            init_response: response,
            psk: psk.psk(),
            expires: later(ctx.now, ctx.config.half_open_timeout),
        })),
    })
}

/// Initiator: the IKE_SA_INIT request for `group`, with a cookie if the responder asked.
fn init_request(
    ctx: &Ctx<'_>,
    spi_i: u64,
    path: Path,
    kp: &KeyPair,
    ni: &[u8],
    cookie: Option<&[u8]>,
) -> Vec<u8> {
    let mut payloads = Vec::new();
    if let Some(c) = cookie {
        // §2.6: the cookie comes first.
        payloads.push(notify(NotifyType::COOKIE, c.to_vec()));
    }
    payloads.push(Payload::Sa(ike_proposals(&ctx.config.proposals, &[])));
    payloads.push(Payload::Ke(KeyExchange {
        group: kp.group().id(),
        data: kp.public().to_vec(),
    }));
    payloads.push(Payload::Nonce(ni.to_vec()));
    payloads.extend(nat_notifies(ctx, spi_i, 0, path));
    payloads.push(notify(
        NotifyType::IKEV2_FRAGMENTATION_SUPPORTED,
        Vec::new(),
    ));
    encode_message(
        header(spi_i, 0, ExchangeType::IKE_SA_INIT, true, false, 0),
        &payloads,
    )
}

/// Initiator: a new IKE SA towards `path.remote`.
pub fn initiate(ctx: &mut Ctx<'_>, path: Path, psk: &dyn PskSource) -> Option<IkeSa> {
    let group = *ctx.config.proposals.ike_dh.first()?;
    let spi_i = ctx.new_ike_spi()?;
    let ni = msg::random_bytes(ctx.rng, NONCE_LEN)?;
    let keypair = KeyPair::generate(group, ctx.rng).ok()?;
    let request = init_request(ctx, spi_i, path, &keypair, &ni, None);
    ctx.send(path, std::slice::from_ref(&request));
    Some(IkeSa {
        spi_i,
        spi_r: 0,
        initiator: true,
        path,
        created: ctx.now,
        peer_frag: false,
        nat: NatState::default(),
        reassembly: None,
        state: State::InitSent(Box::new(InitSent {
            keypair,
            ni,
            request: request.clone(),
            cookie: None,
            retries: 0,
            psk: psk.psk(),
            retx: Retx::new(ctx.now, ExchangeType::IKE_SA_INIT, vec![request]),
        })),
    })
}

/// Retries of IKE_SA_INIT after COOKIE or INVALID_KE_PAYLOAD.
const MAX_INIT_RETRIES: u8 = 3;

impl IkeSa {
    /// Initiator: the answer to our IKE_SA_INIT.
    pub fn on_init_response(
        mut self,
        ctx: &mut Ctx<'_>,
        hdr: Header,
        parsed: &Parsed,
        msg: &[u8],
    ) -> Outcome {
        let State::InitSent(s) = std::mem::replace(&mut self.state, State::Gone) else {
            ctx.dropped(DropReason::UnexpectedResponse);
            return Outcome::gone();
        };
        let mut s = *s;
        let p = InitPayloads::from(&parsed.payloads);
        let path = self.path;
        // COOKIE (§2.6) or INVALID_KE_PAYLOAD (§1.2): the same SA, a new first message.
        let retry = if let Some(c) = p.cookie.filter(|c| !c.is_empty() && c.len() <= 64) {
            s.cookie = Some(c.to_vec());
            true
        } else if p.invalid_ke.is_some() {
            let g = invalid_ke_group(&parsed.payloads, &ctx.config.proposals.ike_dh)
                .filter(|g| *g != s.keypair.group());
            match g.and_then(|g| KeyPair::generate(g, ctx.rng).ok()) {
                Some(kp) => {
                    s.keypair = kp;
                    true
                }
                None => {
                    ctx.event(Event::PeerError {
                        exchange: ExchangeType::IKE_SA_INIT,
                        notify: NotifyType::INVALID_KE_PAYLOAD,
                    });
                    return Outcome::gone();
                }
            }
        } else {
            false
        };
        if retry {
            if s.retries >= MAX_INIT_RETRIES {
                ctx.dropped(DropReason::Duplicate);
                return Outcome::gone();
            }
            s.retries = s.retries.saturating_add(1);
            let request = init_request(
                ctx,
                self.spi_i,
                path,
                &s.keypair,
                &s.ni,
                s.cookie.as_deref(),
            );
            ctx.send(path, std::slice::from_ref(&request));
            s.retx = Retx::new(ctx.now, ExchangeType::IKE_SA_INIT, vec![request.clone()]);
            s.request = request;
            self.state = State::InitSent(Box::new(s));
            return Outcome::keep(self);
        }
        if let Some(notify) = p.error {
            ctx.event(Event::PeerError {
                exchange: ExchangeType::IKE_SA_INIT,
                notify,
            });
            return Outcome::gone();
        }
        let group = s.keypair.group();
        let choice =
            p.sa.filter(|sa| single_per_type(sa))
                .and_then(|sa| select_ike(sa, &ctx.config.proposals, Some(group.id()), 0))
                .filter(|c| c.suite.dh == group);
        let (Some(choice), Some(ke), Some(nr)) = (choice, p.ke, p.nonce) else {
            ctx.dropped(DropReason::Malformed);
            return Outcome::gone();
        };
        if ke.group != group.id() || !nonce_ok(nr) || hdr.spi_r == 0 {
            ctx.dropped(DropReason::Malformed);
            return Outcome::gone();
        }
        let Ok(shared) = s.keypair.agree(&ke.data) else {
            ctx.dropped(DropReason::BadKeyExchange);
            return Outcome::gone();
        };
        self.spi_r = hdr.spi_r;
        let suite = choice.suite;
        let seed = skeyseed(suite.prf, &s.ni, nr, &shared);
        let keys = IkeKeys::derive(&suite, &seed, &s.ni, nr, self.spi_i, self.spi_r);
        let Ok((send, recv)) = keys.ciphers(&suite, true) else {
            ctx.dropped(DropReason::Internal);
            return Outcome::gone();
        };
        self.nat = NatState::detect(self.spi_i, self.spi_r, path, &p.nat_src, &p.nat_dst);
        self.peer_frag = p.frag;
        // §2.23: with a NAT between us (or forced encapsulation), continue on port 4500.
        if (self.nat.any() || ctx.config.force_udp_encap) && self.path.remote.port() == 500 {
            self.path.local.set_port(4500);
            self.path.remote.set_port(4500);
        }
        let Some(psk) = s.psk.take() else {
            ctx.event(Event::AuthFailed {
                peer_id: "(no pre-shared key)".to_string(),
            });
            return Outcome::gone();
        };
        let Some(child_spi) = ctx.new_esp_spi() else {
            ctx.dropped(DropReason::Internal);
            return Outcome::gone();
        };
        let idi = ctx.config.local_id.clone();
        let auth = psk_auth(suite.prf, &psk, &s.request, nr, &keys.sk_pi, &idi.body());
        let mut payloads = vec![Payload::IdI(idi)];
        if ctx.config.initial_contact {
            payloads.push(notify(NotifyType::INITIAL_CONTACT, Vec::new()));
        }
        payloads.extend([
            Payload::Auth(Authentication {
                method: AuthMethod::SHARED_KEY,
                data: auth.to_vec(),
            }),
            Payload::Sa(esp_proposals(&ctx.config.proposals, child_spi, None)),
            Payload::TsI(ctx.config.local_ts.clone()),
            Payload::TsR(ctx.config.remote_ts.clone()),
        ]);
        let h = self.hdr(ExchangeType::IKE_AUTH, false, 1);
        let Ok(datagrams) = msg::seal(h, &payloads, &send, self.mtu(ctx.config), ctx.rng) else {
            ctx.dropped(DropReason::Internal);
            return Outcome::gone();
        };
        ctx.send(self.path, &datagrams);
        ctx.event(Event::ExchangeDone {
            exchange: ExchangeType::IKE_SA_INIT,
            ok: true,
        });
        self.state = State::AuthSent(Box::new(AuthSent {
            suite,
            keys,
            send,
            recv,
            ni: s.ni,
            nr: nr.to_vec(),
            init_response: msg.to_vec(),
            psk: Some(psk),
            child_spi,
            retx: Retx::new(ctx.now, ExchangeType::IKE_AUTH, datagrams),
        }));
        Outcome::keep(self)
    }

    /// Responder: IKE_AUTH (§1.2, §2.15).
    pub fn on_auth_request(
        mut self,
        ctx: &mut Ctx<'_>,
        path: Path,
        hdr: Header,
        payloads: Vec<Payload>,
    ) -> Outcome {
        let idi = payloads.iter().find_map(|p| match p {
            Payload::IdI(i) => Some(i),
            _ => None,
        });
        let auth = payloads.iter().find_map(|p| match p {
            Payload::Auth(a) => Some(a),
            _ => None,
        });
        let initial_contact = payloads
            .iter()
            .any(|p| matches!(p, Payload::Notify(n) if n.kind == NotifyType::INITIAL_CONTACT));
        let State::AwaitAuth(a) = &self.state else {
            return Outcome::keep(self);
        };
        let peer_name = idi.map(id_string).unwrap_or_else(|| "(no IDi)".to_string());
        let verified = match (idi, auth, &a.psk) {
            (Some(idi), Some(auth), Some(psk)) if auth.method == AuthMethod::SHARED_KEY => {
                let expected = psk_auth(
                    a.suite.prf,
                    psk,
                    &a.init_request,
                    &a.nr,
                    &a.keys.sk_pi,
                    &idi.body(),
                );
                let ok_auth: bool = expected.as_slice().ct_eq(&auth.data).into();
                let ok_id = ctx.config.accepted_ids.iter().any(|x| x == idi);
                ok_auth && ok_id
            }
            _ => false,
        };
        // Path changes from 500 to 4500 after IKE_SA_INIT (§2.23): follow it.
        self.path = path;
        if !verified {
            ctx.event(Event::AuthFailed { peer_id: peer_name });
            self.respond(
                ctx,
                path,
                hdr,
                &[notify(NotifyType::AUTHENTICATION_FAILED, Vec::new())],
            );
            ctx.event(Event::ExchangeDone {
                exchange: ExchangeType::IKE_AUTH,
                ok: false,
            });
            return Outcome::gone();
        }
        let State::AwaitAuth(a) = std::mem::replace(&mut self.state, State::Gone) else {
            return Outcome::gone();
        };
        let a = *a;
        let Some(idi) = idi.cloned() else {
            return Outcome::gone();
        };
        let Some(psk) = a.psk.as_ref() else {
            return Outcome::gone();
        };
        let idr = ctx.config.local_id.clone();
        let our_auth = psk_auth(
            a.suite.prf,
            psk,
            &a.init_response,
            &a.ni,
            &a.keys.sk_pr,
            &idr.body(),
        );
        let mut answer = vec![
            Payload::IdR(idr),
            Payload::Auth(Authentication {
                method: AuthMethod::SHARED_KEY,
                data: our_auth.to_vec(),
            }),
        ];
        let now = ctx.now;
        let mut est = Established::new(
            ctx,
            a.suite,
            a.keys.sk_d.clone(),
            a.send,
            a.recv,
            idi.clone(),
            Windows::new(1, None, 0),
        );
        ctx.event(Event::IkeEstablished {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            initiator: false,
            peer_id: id_string(&idi),
            suite: ike_suite_name(&a.suite),
            path,
        });
        let cp = ChildPayloads::from(&payloads);
        match first_child_answer(ctx, &cp) {
            Err(kind) => {
                // §2.21.2: the IKE SA stands; the Child SA is refused.
                ctx.event(Event::ChildFailed { notify: kind });
                answer.push(notify(kind, Vec::new()));
            }
            Ok((choice, tsi, tsr)) => match ctx.new_esp_spi() {
                None => answer.push(notify(NotifyType::TEMPORARY_FAILURE, Vec::new())),
                Some(inbound) => {
                    let (child, sa) = NewChild {
                        suite: &est.suite,
                        sk_d: &est.sk_d,
                        choice: &choice,
                        inbound,
                        shared: None,
                        ni: &a.ni,
                        nr: &a.nr,
                        we_initiated: false,
                        local_ts: tsr.clone(),
                        remote_ts: tsi.clone(),
                        path,
                        activate: true,
                        replaces: None,
                    }
                    .build(ctx, now);
                    est.install(ctx, child, sa);
                    ctx.event(Event::ChildEstablished {
                        inbound_spi: inbound,
                        outbound_spi: choice.spi,
                        suite: choice.name(),
                    });
                    answer.push(Payload::Sa(super::proposal::esp_answer(&choice, inbound)));
                    answer.push(Payload::TsI(tsi));
                    answer.push(Payload::TsR(tsr));
                }
            },
        }
        self.state = State::Established(Box::new(est));
        self.respond(ctx, path, hdr, &answer);
        ctx.event(Event::ExchangeDone {
            exchange: ExchangeType::IKE_AUTH,
            ok: true,
        });
        let mut o = Outcome::keep(self);
        if initial_contact {
            o.initial_contact = Some(idi);
        }
        o
    }

    /// Initiator: the answer to our IKE_AUTH.
    pub fn on_auth_response(mut self, ctx: &mut Ctx<'_>, payloads: Vec<Payload>) -> Outcome {
        let State::AuthSent(a) = std::mem::replace(&mut self.state, State::Gone) else {
            return Outcome::gone();
        };
        let a = *a;
        let idr = payloads.iter().find_map(|p| match p {
            Payload::IdR(i) => Some(i),
            _ => None,
        });
        let auth = payloads.iter().find_map(|p| match p {
            Payload::Auth(x) => Some(x),
            _ => None,
        });
        let errors: Vec<NotifyType> = payloads
            .iter()
            .filter_map(|p| match p {
                Payload::Notify(n) if n.kind.is_error() => Some(n.kind),
                _ => None,
            })
            .collect();
        let (Some(idr), Some(auth)) = (idr, auth) else {
            let notify = errors
                .first()
                .copied()
                .unwrap_or(NotifyType::INVALID_SYNTAX);
            if notify == NotifyType::AUTHENTICATION_FAILED {
                ctx.event(Event::AuthFailed {
                    peer_id: "(rejected by peer)".to_string(),
                });
            } else {
                ctx.event(Event::PeerError {
                    exchange: ExchangeType::IKE_AUTH,
                    notify,
                });
            }
            ctx.event(Event::ExchangeDone {
                exchange: ExchangeType::IKE_AUTH,
                ok: false,
            });
            ctx.event(Event::IkeDeleted {
                spi_i: self.spi_i,
                spi_r: self.spi_r,
                reason: DeleteReason::AuthFailed,
            });
            return Outcome::gone();
        };
        let verified = match &a.psk {
            Some(psk) if auth.method == AuthMethod::SHARED_KEY => {
                let expected = psk_auth(
                    a.suite.prf,
                    psk,
                    &a.init_response,
                    &a.ni,
                    &a.keys.sk_pr,
                    &idr.body(),
                );
                let ok: bool = expected.as_slice().ct_eq(&auth.data).into();
                ok && ctx.config.accepted_ids.iter().any(|x| x == idr)
            }
            _ => false,
        };
        if !verified {
            ctx.event(Event::AuthFailed {
                peer_id: id_string(idr),
            });
            // §2.21.2: tell the responder, once, in a separate INFORMATIONAL; no state kept.
            let h = self.hdr(ExchangeType::INFORMATIONAL, false, 2);
            let n = [notify(NotifyType::AUTHENTICATION_FAILED, Vec::new())];
            if let Ok(d) = msg::seal(h, &n, &a.send, None, ctx.rng) {
                ctx.send(self.path, &d);
            }
            ctx.event(Event::IkeDeleted {
                spi_i: self.spi_i,
                spi_r: self.spi_r,
                reason: DeleteReason::AuthFailed,
            });
            return Outcome::gone();
        }
        let now = ctx.now;
        let mut est = Established::new(
            ctx,
            a.suite,
            a.keys.sk_d.clone(),
            a.send,
            a.recv,
            idr.clone(),
            Windows::new(0, None, 2),
        );
        ctx.event(Event::IkeEstablished {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            initiator: true,
            peer_id: id_string(idr),
            suite: ike_suite_name(&a.suite),
            path: self.path,
        });
        let cp = ChildPayloads::from(&payloads);
        let choice = cp
            .sa
            .filter(|sa| single_per_type(sa))
            .and_then(|sa| select_esp(sa, &ctx.config.proposals, Pfs::Ignore));
        let tsi = super::ts::narrow(cp.tsi.unwrap_or_default(), &ctx.config.local_ts);
        let tsr = super::ts::narrow(cp.tsr.unwrap_or_default(), &ctx.config.remote_ts);
        match choice {
            Some(choice) if !tsi.is_empty() && !tsr.is_empty() => {
                let (child, sa) = NewChild {
                    suite: &est.suite,
                    sk_d: &est.sk_d,
                    choice: &choice,
                    inbound: a.child_spi,
                    shared: None,
                    ni: &a.ni,
                    nr: &a.nr,
                    we_initiated: true,
                    local_ts: tsi,
                    remote_ts: tsr,
                    path: self.path,
                    activate: true,
                    replaces: None,
                }
                .build(ctx, now);
                est.install(ctx, child, sa);
                ctx.event(Event::ChildEstablished {
                    inbound_spi: a.child_spi,
                    outbound_spi: choice.spi,
                    suite: choice.name(),
                });
            }
            _ => {
                ctx.event(Event::ChildFailed {
                    notify: errors
                        .first()
                        .copied()
                        .unwrap_or(NotifyType::NO_PROPOSAL_CHOSEN),
                });
                // The responder created a Child SA we cannot use: have it deleted.
                if cp.sa.is_some() {
                    est.queue.push_back(Req::DeleteChildren(vec![a.child_spi]));
                }
            }
        }
        ctx.event(Event::ExchangeDone {
            exchange: ExchangeType::IKE_AUTH,
            ok: true,
        });
        self.state = State::Established(Box::new(est));
        self.send_queued(ctx);
        Outcome::keep(self)
    }
}
