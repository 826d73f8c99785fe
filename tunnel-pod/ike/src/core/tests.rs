//! Two endpoints against each other in memory, on a manual clock.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use ring::rand::SystemRandom;

use super::ike_sa::State;
use super::*;
use crate::crypto::{EncrAlg, Group, IntegAlg, PrfAlg, Secret};
use crate::wire::{
    ExchangeType, Header, NotifyType, Payload, PayloadType, Proposal, TransformType, parse_message,
    parse_payloads,
};

const I_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const R_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

fn config(local: Ipv4Addr, peer: Ipv4Addr) -> Config {
    Config::new(ipv4_id(local), vec![ipv4_id(peer)])
}

fn psk(s: &str) -> Box<dyn PskSource + Send> {
    Box::new(StaticPsk(Secret::new(s.as_bytes().to_vec())))
}

/// One side: its endpoint and what its shell would hold.
struct Side {
    ep: Endpoint,
    /// Installed Child SAs by inbound SPI.
    children: BTreeMap<u32, Box<ChildSa>>,
    /// Outbound SPIs in use.
    active: Vec<u32>,
    events: Vec<Event>,
    /// Datagrams sent and not yet delivered, with the path as the sender saw it.
    wire: Vec<(Path, Vec<u8>)>,
    /// Every datagram ever sent.
    sent_log: Vec<(Path, Vec<u8>)>,
    installs: usize,
    /// Paths announced by `Output::PeerMoved`.
    moved: Vec<Path>,
}

impl Side {
    fn new(config: Config, key: &str) -> Side {
        Side {
            ep: Endpoint::new(config, psk(key)),
            children: BTreeMap::new(),
            active: Vec::new(),
            events: Vec::new(),
            wire: Vec::new(),
            sent_log: Vec::new(),
            installs: 0,
            moved: Vec::new(),
        }
    }

    fn absorb(&mut self, out: Vec<Output>) {
        for o in out {
            match o {
                Output::Send { path, bytes } => {
                    self.sent_log.push((path, bytes.clone()));
                    self.wire.push((path, bytes));
                }
                Output::InstallChild(c) => {
                    self.installs += 1;
                    if c.activate_outbound {
                        self.active.push(c.outbound.spi);
                    }
                    assert!(
                        self.children.insert(c.inbound.spi, c).is_none(),
                        "inbound SPI installed twice"
                    );
                }
                Output::ActivateOutbound { outbound_spi } => {
                    assert!(
                        self.children
                            .values()
                            .any(|c| c.outbound.spi == outbound_spi),
                        "activating an SA that is not installed"
                    );
                    self.active.push(outbound_spi);
                }
                Output::RetireChild {
                    inbound_spi,
                    outbound_spi,
                } => {
                    let c = self
                        .children
                        .remove(&inbound_spi)
                        .expect("retiring unknown SA");
                    assert_eq!(c.outbound.spi, outbound_spi);
                    self.active.retain(|s| *s != outbound_spi);
                }
                Output::PeerMoved { path } => self.moved.push(path),
                Output::Event(e) => self.events.push(e),
            }
        }
    }

    fn has_event(&self, f: impl Fn(&Event) -> bool) -> bool {
        self.events.iter().any(f)
    }

    fn count_events(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.events.iter().filter(|e| f(e)).count()
    }

    fn established(&self) -> Vec<IkeSaStatus> {
        self.ep
            .status()
            .into_iter()
            .filter(|s| s.state == "established")
            .collect()
    }
}

struct Pair {
    i: Side,
    r: Side,
    now: Instant,
    rng: SystemRandom,
    path: Path,
}

impl Pair {
    fn new(ci: Config, cr: Config) -> Pair {
        Pair::with_keys(ci, "sesame", cr, "sesame")
    }

    fn with_keys(ci: Config, ki: &str, cr: Config, kr: &str) -> Pair {
        Pair {
            i: Side::new(ci, ki),
            r: Side::new(cr, kr),
            now: Instant::now(),
            rng: SystemRandom::new(),
            path: Path {
                local: SocketAddr::from((I_ADDR, 500)),
                remote: SocketAddr::from((R_ADDR, 500)),
            },
        }
    }

    fn default() -> Pair {
        Pair::new(config(I_ADDR, R_ADDR), config(R_ADDR, I_ADDR))
    }

    fn initiate(&mut self) {
        let mut out = Vec::new();
        self.i.ep.initiate(self.now, self.path, &self.rng, &mut out);
        self.i.absorb(out);
    }

    /// Delivers one datagram from `from_i ? i : r` to the other side.
    fn deliver(&mut self, from_i: bool, path: Path, bytes: &[u8]) {
        let mut out = Vec::new();
        let (to, p) = if from_i {
            (&mut self.r, path.reversed())
        } else {
            (&mut self.i, path.reversed())
        };
        to.ep.handle(self.now, p, bytes, &self.rng, &mut out);
        to.absorb(out);
    }

    /// Delivers everything in flight, both ways, until quiet.
    fn run(&mut self) {
        for _ in 0..200 {
            if self.i.wire.is_empty() && self.r.wire.is_empty() {
                return;
            }
            let from_i = std::mem::take(&mut self.i.wire);
            for (p, b) in from_i {
                self.deliver(true, p, &b);
            }
            let from_r = std::mem::take(&mut self.r.wire);
            for (p, b) in from_r {
                self.deliver(false, p, &b);
            }
        }
        panic!("the exchange does not settle");
    }

    fn handshake(&mut self) {
        self.initiate();
        self.run();
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        let mut out = Vec::new();
        self.i.ep.poll(self.now, &self.rng, &mut out);
        self.i.absorb(out);
        let mut out = Vec::new();
        self.r.ep.poll(self.now, &self.rng, &mut out);
        self.r.absorb(out);
        // After a poll nothing is due any more: a shell sleeping until next_timer never spins.
        for side in [&self.i, &self.r] {
            if let Some(t) = side.ep.next_timer() {
                assert!(t > self.now, "a timer is still due after poll");
            }
        }
    }

    /// Moves time forward in steps, delivering everything after each step.
    fn advance_running(&mut self, total: Duration, step: Duration) {
        let mut t = Duration::ZERO;
        while t < total {
            self.advance(step);
            self.run();
            t += step;
        }
    }
}

fn assert_mirrored(a: &ChildDirection, b: &ChildDirection) {
    assert_eq!(a.spi, b.spi);
    assert_eq!(a.encr, b.encr);
    assert_eq!(a.key_bits, b.key_bits);
    assert_eq!(a.integ, b.integ);
    assert_eq!(&a.encr_key[..], &b.encr_key[..]);
    assert_eq!(&a.integ_key[..], &b.integ_key[..]);
}

/// Both sides have the same Child SAs, seen from each end, with keys of the right size.
fn assert_children_mirror(p: &Pair) {
    assert_eq!(
        p.i.children.len(),
        p.r.children.len(),
        "child count differs"
    );
    for ci in p.i.children.values() {
        let cr =
            p.r.children
                .values()
                .find(|c| c.inbound.spi == ci.outbound.spi)
                .expect("initiator's outbound SA is not the responder's inbound one");
        assert_mirrored(&ci.outbound, &cr.inbound);
        assert_mirrored(&ci.inbound, &cr.outbound);
        assert_ne!(ci.inbound.spi, ci.outbound.spi);
        if !ci.inbound.encr_key.is_empty() {
            assert_ne!(&ci.inbound.encr_key[..], &ci.outbound.encr_key[..]);
        }
        assert_ne!(
            [&ci.inbound.encr_key[..], &ci.inbound.integ_key[..]].concat(),
            [&ci.outbound.encr_key[..], &ci.outbound.integ_key[..]].concat()
        );
        let want = match (ci.inbound.encr, ci.inbound.key_bits) {
            (crate::wire::TransformId::ENCR_AES_GCM_16, Some(b)) => usize::from(b / 8) + 4,
            (crate::wire::TransformId::ENCR_AES_CBC, Some(b)) => usize::from(b / 8),
            _ => 0,
        };
        assert_eq!(ci.inbound.encr_key.len(), want);
        let want_i = match ci.inbound.integ {
            Some(crate::wire::TransformId::AUTH_HMAC_SHA2_256_128) => 32,
            Some(crate::wire::TransformId::AUTH_HMAC_SHA1_96) => 20,
            _ => 0,
        };
        assert_eq!(ci.inbound.integ_key.len(), want_i);
    }
}

fn only_ike(encr: EncrAlg, prf: PrfAlg, dh: Group) -> Proposals {
    let mut p = Proposals::seed_default(false);
    p.ike_encr = vec![encr];
    p.ike_integ = vec![IntegAlg::HmacSha256_128];
    p.ike_prf = vec![prf];
    p.ike_dh = vec![dh];
    p
}

#[test]
fn handshake_default_suites() {
    let mut p = Pair::default();
    p.handshake();
    let si = p.i.established();
    let sr = p.r.established();
    assert_eq!(si.len(), 1);
    assert_eq!(sr.len(), 1);
    assert_eq!((si[0].spi_i, si[0].spi_r), (sr[0].spi_i, sr[0].spi_r));
    assert!(si[0].initiator && !sr[0].initiator);
    assert_eq!(si[0].suite, "AES-GCM-16-128/PRF-HMAC-SHA2-256/ECP-384");
    assert_eq!(si[0].peer_id.as_deref(), Some("ID_IPV4_ADDR:198.51.100.1"));
    assert_eq!(sr[0].peer_id.as_deref(), Some("ID_IPV4_ADDR:192.0.2.1"));
    // Forced encapsulation: both sides believe in a NAT, and IKE_AUTH moved to 4500.
    assert!(si[0].nat_detected && sr[0].nat_detected);
    assert_eq!(si[0].path.remote.port(), 4500);
    assert_eq!(sr[0].path.local.port(), 4500);
    assert_eq!(p.i.children.len(), 1);
    assert_children_mirror(&p);
    let c = p.i.children.values().next().unwrap();
    assert_eq!(c.inbound.encr, crate::wire::TransformId::ENCR_AES_GCM_16);
    assert_eq!(c.inbound.key_bits, Some(128));
    assert!(c.activate_outbound);
    assert_eq!(c.local_ts, vec![any_ipv4()]);
    assert!(p.i.has_event(|e| matches!(
        e,
        Event::IkeEstablished {
            initiator: true,
            ..
        }
    )));
    assert!(p.r.has_event(|e| matches!(
        e,
        Event::IkeEstablished {
            initiator: false,
            ..
        }
    )));
    assert!(p.r.has_event(|e| matches!(e, Event::ChildEstablished { .. })));
    assert_eq!(sr[0].children.len(), 1);
    assert_eq!(sr[0].children[0].suite, "AES-GCM-16-128");
    // Both exchanges count as done on both sides (the responder's metrics read these).
    for side in [&p.i, &p.r] {
        for exchange in [ExchangeType::IKE_SA_INIT, ExchangeType::IKE_AUTH] {
            assert_eq!(
                side.count_events(|e| *e == Event::ExchangeDone { exchange, ok: true }),
                1,
                "{exchange:?}"
            );
        }
    }
}

#[test]
fn handshake_without_forced_encap_stays_on_500() {
    let mut ci = config(I_ADDR, R_ADDR);
    let mut cr = config(R_ADDR, I_ADDR);
    ci.force_udp_encap = false;
    cr.force_udp_encap = false;
    let mut p = Pair::new(ci, cr);
    p.handshake();
    let si = p.i.established();
    assert_eq!(si.len(), 1);
    assert!(!si[0].nat_detected);
    assert_eq!(si[0].path.remote.port(), 500);
    assert_children_mirror(&p);
}

#[test]
fn every_ike_suite() {
    let encrs = [
        EncrAlg::AesGcm16 { key_bits: 128 },
        EncrAlg::AesGcm16 { key_bits: 256 },
        EncrAlg::AesCbc { key_bits: 256 },
    ];
    let prfs = [PrfAlg::HmacSha256, PrfAlg::HmacSha384, PrfAlg::HmacSha512];
    let groups = [Group::Ecp384, Group::Modp2048, Group::Modp1536];
    let mut n = 0usize;
    for (ei, encr) in encrs.iter().enumerate() {
        for (pi, prf) in prfs.iter().enumerate() {
            // Every encryption with every PRF; the groups rotate so each meets each.
            let dh = groups[(ei + pi) % 3];
            // The initiator offers the whole seed list; only the responder is narrowed, so
            // selection (not just matching) is exercised.
            let ci = config(I_ADDR, R_ADDR);
            let mut cr = config(R_ADDR, I_ADDR);
            cr.proposals = only_ike(*encr, *prf, dh);
            let mut p = Pair::new(ci, cr);
            p.handshake();
            let s = p.i.established();
            assert_eq!(s.len(), 1, "{encr:?} {prf:?} {dh:?}");
            let want = proposal::ike_suite_name(&crate::crypto::IkeSuite {
                encr: *encr,
                integ: (!encr.is_aead()).then_some(IntegAlg::HmacSha256_128),
                prf: *prf,
                dh,
            });
            assert_eq!(s[0].suite, want);
            assert_eq!(p.r.established()[0].suite, want);
            assert_children_mirror(&p);
            assert_eq!(p.i.children.len(), 1);
            n += 1;
        }
    }
    assert_eq!(n, 9);
}

fn esp_only(
    encr: (crate::wire::TransformId, Option<u16>),
    integ: Option<crate::wire::TransformId>,
) -> Proposals {
    let mut p = Proposals::seed_default(true);
    p.esp_encr = vec![encr];
    p.esp_integ = integ.into_iter().collect();
    p
}

#[test]
fn every_esp_suite() {
    use crate::wire::TransformId as T;
    let suites = [
        ((T::ENCR_AES_GCM_16, Some(128)), None, "AES-GCM-16-128"),
        ((T::ENCR_AES_GCM_16, Some(256)), None, "AES-GCM-16-256"),
        (
            (T::ENCR_AES_CBC, Some(128)),
            Some(T::AUTH_HMAC_SHA2_256_128),
            "AES-CBC-128/HMAC-SHA2-256-128",
        ),
        (
            (T::ENCR_AES_CBC, Some(256)),
            Some(T::AUTH_HMAC_SHA2_256_128),
            "AES-CBC-256/HMAC-SHA2-256-128",
        ),
        (
            (T::ENCR_AES_CBC, Some(128)),
            Some(T::AUTH_HMAC_SHA1_96),
            "AES-CBC-128/HMAC-SHA1-96",
        ),
        (
            (T::ENCR_AES_CBC, Some(256)),
            Some(T::AUTH_HMAC_SHA1_96),
            "AES-CBC-256/HMAC-SHA1-96",
        ),
        (
            (T::ENCR_NULL, None),
            Some(T::AUTH_HMAC_SHA2_256_128),
            "NULL/HMAC-SHA2-256-128",
        ),
        (
            (T::ENCR_NULL, None),
            Some(T::AUTH_HMAC_SHA1_96),
            "NULL/HMAC-SHA1-96",
        ),
    ];
    for (encr, integ, name) in suites {
        let mut ci = config(I_ADDR, R_ADDR);
        ci.proposals = Proposals::seed_default(true);
        let mut cr = config(R_ADDR, I_ADDR);
        cr.proposals = esp_only(encr, integ);
        let mut p = Pair::new(ci, cr);
        p.handshake();
        assert_eq!(p.i.children.len(), 1, "{name}");
        assert_children_mirror(&p);
        let c = p.r.children.values().next().unwrap();
        assert_eq!(c.inbound.encr, encr.0);
        assert_eq!(c.inbound.key_bits, encr.1);
        assert_eq!(c.inbound.integ, integ);
        assert_eq!(p.r.established()[0].children[0].suite, name);
    }
}

#[test]
fn null_needs_allow_null() {
    use crate::wire::TransformId as T;
    // The initiator offers only NULL; the responder has the seed list without NULL.
    let mut ci = config(I_ADDR, R_ADDR);
    ci.proposals = esp_only((T::ENCR_NULL, None), Some(T::AUTH_HMAC_SHA2_256_128));
    let cr = config(R_ADDR, I_ADDR);
    assert!(
        !cr.proposals
            .esp_encr
            .iter()
            .any(|(t, _)| *t == T::ENCR_NULL)
    );
    let mut p = Pair::new(ci, cr);
    p.handshake();
    assert_eq!(p.i.established().len(), 1, "the IKE SA stands");
    assert_eq!(p.r.established().len(), 1);
    assert!(p.i.children.is_empty() && p.r.children.is_empty());
    assert!(p.r.has_event(
        |e| matches!(e, Event::NoProposalChosen { offered, .. } if offered.contains("NULL"))
    ));
    assert!(p.i.has_event(|e| matches!(
        e,
        Event::ChildFailed {
            notify: NotifyType::NO_PROPOSAL_CHOSEN
        }
    )));
    // With allow_null on the responder, the same offer is taken.
    let mut ci = config(I_ADDR, R_ADDR);
    ci.proposals = esp_only((T::ENCR_NULL, None), Some(T::AUTH_HMAC_SHA2_256_128));
    let mut cr = config(R_ADDR, I_ADDR);
    cr.proposals = Proposals::seed_default(true);
    let mut p = Pair::new(ci, cr);
    p.handshake();
    assert_eq!(p.i.children.len(), 1);
    assert_children_mirror(&p);
}

#[test]
fn wrong_psk_fails_authentication() {
    let mut p = Pair::with_keys(
        config(I_ADDR, R_ADDR),
        "sesame",
        config(R_ADDR, I_ADDR),
        "open sesame",
    );
    p.handshake();
    assert!(p.i.children.is_empty() && p.r.children.is_empty());
    assert_eq!(p.i.installs + p.r.installs, 0);
    assert!(p.r.has_event(
        |e| matches!(e, Event::AuthFailed { peer_id } if peer_id == "ID_IPV4_ADDR:192.0.2.1")
    ));
    assert!(p.i.has_event(|e| matches!(e, Event::AuthFailed { .. })));
    assert!(p.i.ep.status().is_empty());
    assert!(p.r.ep.status().is_empty());
}

#[test]
fn unaccepted_id_fails_authentication() {
    let cr = Config::new(
        ipv4_id(R_ADDR),
        vec![ipv4_id(Ipv4Addr::new(203, 0, 113, 9))],
    );
    let mut p = Pair::new(config(I_ADDR, R_ADDR), cr);
    p.handshake();
    assert_eq!(p.i.installs + p.r.installs, 0);
    assert!(p.r.has_event(|e| matches!(e, Event::AuthFailed { .. })));
    assert!(p.i.has_event(|e| matches!(e, Event::AuthFailed { .. })));
    assert!(p.r.ep.status().is_empty());
    // And the initiator checks the responder's ID too.
    let ci = Config::new(
        ipv4_id(I_ADDR),
        vec![ipv4_id(Ipv4Addr::new(203, 0, 113, 9))],
    );
    let mut p = Pair::new(ci, config(R_ADDR, I_ADDR));
    p.handshake();
    assert!(p.i.children.is_empty());
    assert!(p.i.has_event(
        |e| matches!(e, Event::AuthFailed { peer_id } if peer_id == "ID_IPV4_ADDR:198.51.100.1")
    ));
    // ... and tells the responder, which drops the SA it had established.
    assert!(p.r.has_event(|e| matches!(e, Event::AuthFailed { .. })));
    assert!(p.r.ep.status().is_empty());
    assert!(p.r.children.is_empty());
}

#[test]
fn no_psk_fails_authentication() {
    struct NoKey;
    impl PskSource for NoKey {
        fn psk(&self) -> Option<Secret> {
            None
        }
    }
    let mut p = Pair::default();
    p.r.ep = Endpoint::new(config(R_ADDR, I_ADDR), Box::new(NoKey));
    p.handshake();
    assert_eq!(p.i.installs + p.r.installs, 0);
    assert!(p.r.has_event(|e| matches!(e, Event::AuthFailed { .. })));
}

#[test]
fn invalid_ke_round_trip() {
    // The initiator guesses MODP-2048 first; the responder only takes ECP-384.
    let mut ci = config(I_ADDR, R_ADDR);
    ci.proposals.ike_dh = vec![Group::Modp2048, Group::Ecp384];
    let mut cr = config(R_ADDR, I_ADDR);
    cr.proposals.ike_dh = vec![Group::Ecp384];
    let mut p = Pair::new(ci, cr);
    p.initiate();
    let (path, first) = p.i.wire.remove(0);
    p.deliver(true, path, &first);
    // The responder answered INVALID_KE_PAYLOAD naming group 20, and kept nothing.
    assert!(p.r.ep.status().is_empty());
    let (_, answer) = &p.r.wire[0];
    let parsed = parse_message(answer).unwrap();
    assert_eq!(parsed.header.spi_r, 0);
    assert!(parsed.payloads.iter().any(|x| matches!(
        x,
        Payload::Notify(n) if n.kind == NotifyType::INVALID_KE_PAYLOAD && n.data == [0, 20]
    )));
    p.run();
    let s = p.i.established();
    assert_eq!(s.len(), 1);
    assert!(s[0].suite.ends_with("ECP-384"));
    assert_children_mirror(&p);
    // The retried first message differs (new KE) and is the one AUTH covered: auth passed.
    let inits: Vec<&Vec<u8>> =
        p.i.sent_log
            .iter()
            .filter(|(_, b)| Header::parse(b).unwrap().exchange == ExchangeType::IKE_SA_INIT)
            .map(|(_, b)| b)
            .collect();
    assert_eq!(inits.len(), 2);
    assert_ne!(inits[0], inits[1]);
}

#[test]
fn no_proposal_chosen_in_ike_sa_init() {
    let mut ci = config(I_ADDR, R_ADDR);
    ci.proposals.ike_encr = vec![EncrAlg::AesCbc { key_bits: 256 }];
    let mut cr = config(R_ADDR, I_ADDR);
    cr.proposals.ike_encr = vec![EncrAlg::AesGcm16 { key_bits: 256 }];
    let mut p = Pair::new(ci, cr);
    p.handshake();
    assert!(p.i.ep.status().is_empty() && p.r.ep.status().is_empty());
    assert!(
        p.r.has_event(|e| matches!(e, Event::NoProposalChosen { offered, allowed }
        if offered.contains("AES-CBC-256") && allowed.contains("AES-GCM-16-256")))
    );
    assert!(p.i.has_event(|e| matches!(
        e,
        Event::PeerError {
            notify: NotifyType::NO_PROPOSAL_CHOSEN,
            ..
        }
    )));
    assert!(p.r.has_event(|e| *e
        == Event::ExchangeDone {
            exchange: ExchangeType::IKE_SA_INIT,
            ok: false
        }));
}

/// Rewrites the initiator's IKE_AUTH request before the responder sees it: the test plays a
/// peer that sends something our own initiator never would.
fn handshake_with_auth_rewrite(p: &mut Pair, f: impl FnOnce(&mut Vec<Payload>)) {
    p.initiate();
    let (path, init) = p.i.wire.remove(0);
    p.deliver(true, path, &init);
    let (path, resp) = p.r.wire.remove(0);
    p.deliver(false, path, &resp);
    let (path, auth) = p.i.wire.remove(0);
    assert!(p.i.wire.is_empty());
    let sa = p.i.ep.sas.values().next().unwrap();
    let State::AuthSent(a) = &sa.state else {
        panic!("not in AuthSent")
    };
    let parsed = parse_message(&auth).unwrap();
    let enc = parsed.encrypted.unwrap();
    // Decrypt with the responder's receive cipher: the initiator's send keys.
    let (_, recv) = a.keys.ciphers(&a.suite, false).unwrap();
    let plain = recv.open(&auth, enc.iv_offset).unwrap();
    let mut payloads = parse_payloads(enc.first_inner, &plain).unwrap();
    f(&mut payloads);
    let rebuilt = msg::seal(parsed.header, &payloads, &a.send, None, &p.rng).unwrap();
    for d in rebuilt {
        p.deliver(true, path, &d);
    }
    p.run();
}

fn esp_sa_mut(payloads: &mut [Payload]) -> &mut Vec<Proposal> {
    payloads
        .iter_mut()
        .find_map(|x| match x {
            Payload::Sa(s) => Some(s),
            _ => None,
        })
        .unwrap()
}

#[test]
fn esn_only_is_refused_for_the_child() {
    let mut p = Pair::default();
    handshake_with_auth_rewrite(&mut p, |payloads| {
        for prop in esp_sa_mut(payloads) {
            for t in &mut prop.transforms {
                if t.kind == TransformType::ESN {
                    t.id = crate::wire::TransformId::ESN_YES;
                }
            }
        }
    });
    assert_eq!(p.i.established().len(), 1);
    assert_eq!(p.r.established().len(), 1);
    assert_eq!(p.i.installs + p.r.installs, 0);
    assert!(p.i.has_event(|e| matches!(
        e,
        Event::ChildFailed {
            notify: NotifyType::NO_PROPOSAL_CHOSEN
        }
    )));
    assert!(p.r.has_event(
        |e| matches!(e, Event::NoProposalChosen { offered, .. } if offered.contains("ESN"))
    ));
}

#[test]
fn transport_mode_is_refused() {
    let mut p = Pair::default();
    handshake_with_auth_rewrite(&mut p, |payloads| {
        payloads.push(msg::notify(NotifyType::USE_TRANSPORT_MODE, Vec::new()));
    });
    assert_eq!(p.r.established().len(), 1);
    assert_eq!(p.i.installs + p.r.installs, 0);
    assert!(p.i.has_event(|e| matches!(
        e,
        Event::ChildFailed {
            notify: NotifyType::NO_PROPOSAL_CHOSEN
        }
    )));
}

#[test]
fn disjoint_traffic_selectors_are_refused() {
    let mut p = Pair::default();
    handshake_with_auth_rewrite(&mut p, |payloads| {
        for x in payloads.iter_mut() {
            if let Payload::TsR(ts) = x {
                *ts = vec![TrafficSelector::Range {
                    ip_protocol: 0,
                    start_port: 0,
                    end_port: 65535,
                    start: "::".parse().unwrap(),
                    end: "::ffff".parse().unwrap(),
                }];
            }
        }
    });
    assert_eq!(p.r.established().len(), 1);
    assert_eq!(p.r.installs, 0);
    assert!(p.i.has_event(|e| matches!(
        e,
        Event::ChildFailed {
            notify: NotifyType::TS_UNACCEPTABLE
        }
    )));
}

#[test]
fn unknown_critical_payload_inside_sk() {
    let mut p = Pair::default();
    handshake_with_auth_rewrite(&mut p, |payloads| {
        payloads.push(Payload::Other {
            kind: PayloadType(200),
            critical: true,
            body: vec![1, 2, 3],
        });
    });
    assert!(p.r.has_event(|e| matches!(
        e,
        Event::Dropped {
            reason: DropReason::UnsupportedCritical
        }
    )));
    assert!(p.i.has_event(|e| matches!(
        e,
        Event::PeerError {
            notify: NotifyType::UNSUPPORTED_CRITICAL_PAYLOAD,
            ..
        }
    )));
    assert!(p.r.established().is_empty());
    assert_eq!(p.r.installs, 0);
}

#[test]
fn retransmitted_ike_sa_init_and_ike_auth_answered_from_cache() {
    let mut p = Pair::default();
    p.initiate();
    let (path, init) = p.i.wire.remove(0);
    p.deliver(true, path, &init);
    p.deliver(true, path, &init);
    assert_eq!(p.r.wire.len(), 2);
    assert_eq!(
        p.r.wire[0].1, p.r.wire[1].1,
        "identical IKE_SA_INIT answers"
    );
    assert_eq!(p.r.ep.status().len(), 1);
    // A different message with the same SPIi from the same place is not answered.
    let mut other = init.clone();
    let last = other.len() - 1;
    other[last] ^= 1;
    p.deliver(true, path, &other);
    assert_eq!(p.r.wire.len(), 2);
    let (rpath, resp) = p.r.wire.remove(0);
    p.r.wire.clear();
    p.deliver(false, rpath, &resp);
    // The duplicate answer reaches the initiator too: dropped, the SA goes on.
    p.deliver(false, rpath, &resp);
    assert_eq!(p.i.wire.len(), 1);
    let (path, auth) = p.i.wire.remove(0);
    p.deliver(true, path, &auth);
    p.deliver(true, path, &auth);
    assert_eq!(p.r.wire.len(), 2);
    assert_eq!(p.r.wire[0].1, p.r.wire[1].1, "identical IKE_AUTH answers");
    assert_eq!(p.r.installs, 1, "no second Child SA");
    p.run();
    assert_eq!(p.i.installs, 1);
    assert_children_mirror(&p);
    // Retransmission by the initiator's own timer: lose the answer.
    let mut p = Pair::default();
    p.initiate();
    p.i.wire.clear();
    p.advance(Duration::from_millis(600));
    assert_eq!(p.i.wire.len(), 1);
    assert!(p.i.has_event(|e| matches!(e, Event::Retransmit { .. })));
    p.run();
    assert_eq!(p.i.established().len(), 1);
}

#[test]
fn hostile_basics() {
    let mut p = Pair::default();
    p.handshake();
    let path = p.path;
    // Unknown SPI.
    let (_, some) = p.i.sent_log.last().unwrap().clone();
    let mut unknown = some.clone();
    unknown[0] ^= 0xff;
    p.deliver(true, path, &unknown);
    assert!(p.r.has_event(|e| matches!(
        e,
        Event::Dropped {
            reason: DropReason::UnknownSpi
        }
    )));
    // Bad ICV: the IKE_AUTH request with a flipped last byte. No answer.
    let auth =
        p.i.sent_log
            .iter()
            .find(|(_, b)| Header::parse(b).unwrap().exchange == ExchangeType::IKE_AUTH)
            .unwrap()
            .1
            .clone();
    let mut bad = auth.clone();
    let n = bad.len() - 1;
    bad[n] ^= 1;
    p.r.wire.clear();
    p.deliver(true, path, &bad);
    // Under cfg(fuzzing) the crypto skips the ICV comparison on purpose.
    if cfg!(not(fuzzing)) {
        assert!(p.r.wire.is_empty());
        assert!(p.r.has_event(|e| matches!(
            e,
            Event::Dropped {
                reason: DropReason::BadIcv
            }
        )));
    }
    p.r.wire.clear();
    // Bad major version: INVALID_MAJOR_VERSION, unencrypted, version 2 in our header.
    let mut v3 = auth.clone();
    v3[17] = 0x30;
    p.deliver(true, path, &v3);
    let (_, reply) = p.r.wire.pop().unwrap();
    let parsed = parse_message(&reply).unwrap();
    assert_eq!(parsed.header.version, 0x20);
    assert!(parsed.header.is_response());
    assert!(parsed.payloads.iter().any(|x| matches!(
        x,
        Payload::Notify(n) if n.kind == NotifyType::INVALID_MAJOR_VERSION
    )));
    // A response to nothing we sent.
    let resp_from_r =
        p.r.sent_log
            .iter()
            .find(|(_, b)| Header::parse(b).unwrap().exchange == ExchangeType::IKE_AUTH)
            .unwrap()
            .1
            .clone();
    p.deliver(false, path.reversed(), &resp_from_r);
    assert!(p.i.has_event(|e| matches!(
        e,
        Event::Dropped {
            reason: DropReason::UnexpectedResponse
        }
    )));
    // Everything still up.
    assert_eq!(p.i.established().len(), 1);
    assert_eq!(p.r.established().len(), 1);
}

#[test]
fn dpd_and_dead_peer() {
    let mut p = Pair::default();
    p.handshake();
    let sent = p.i.sent_log.len();
    p.advance(Duration::from_secs(29));
    assert_eq!(p.i.sent_log.len(), sent, "no liveness check yet");
    p.advance(Duration::from_secs(2));
    assert!(p.i.sent_log.len() > sent);
    let (_, dpd) = p.i.wire.last().unwrap().clone();
    let h = Header::parse(&dpd).unwrap();
    assert_eq!(h.exchange, ExchangeType::INFORMATIONAL);
    assert_eq!(h.message_id, 2);
    p.run();
    assert!(p.i.has_event(|e| matches!(
        e,
        Event::ExchangeDone {
            exchange: ExchangeType::INFORMATIONAL,
            ok: true
        }
    )));
    // The responder's own DPD uses its own message IDs (from 0).
    assert!(p.r.sent_log.iter().any(|(_, b)| {
        let h = Header::parse(b).unwrap();
        h.exchange == ExchangeType::INFORMATIONAL && !h.is_response() && h.message_id == 0
    }));
    // Now the responder vanishes: retransmissions, then the peer is declared dead.
    for _ in 0..120 {
        p.advance(Duration::from_millis(500));
        p.i.wire.clear();
    }
    assert!(p.i.count_events(|e| matches!(e, Event::Retransmit { .. })) >= 4);
    assert!(p.i.has_event(|e| matches!(e, Event::PeerDead { .. })));
    assert!(p.i.has_event(|e| matches!(
        e,
        Event::IkeDeleted {
            reason: DeleteReason::PeerDead,
            ..
        }
    )));
    assert!(p.i.children.is_empty(), "children retired");
    assert!(p.i.ep.status().is_empty());
}

#[test]
fn delete_child_and_delete_ike() {
    let mut p = Pair::default();
    p.handshake();
    let spi = *p.i.children.keys().next().unwrap();
    let mut out = Vec::new();
    p.i.ep.delete_child(p.now, spi, &p.rng, &mut out);
    p.i.absorb(out);
    p.run();
    assert!(p.i.children.is_empty());
    assert!(p.r.children.is_empty());
    assert!(p.r.has_event(|e| matches!(e, Event::ChildDeleted { .. })));
    assert_eq!(p.i.established().len(), 1);
    // The responder answered with its own SPI of the pair.
    let answer = p.r.sent_log.last().unwrap().1.clone();
    assert_eq!(
        Header::parse(&answer).unwrap().exchange,
        ExchangeType::INFORMATIONAL
    );
    // Delete of the IKE SA.
    let mut p = Pair::default();
    p.handshake();
    let mut out = Vec::new();
    p.i.ep.delete_ike(p.now, &p.rng, &mut out);
    p.i.absorb(out);
    p.run();
    assert!(p.i.ep.status().is_empty() && p.r.ep.status().is_empty());
    assert!(p.i.children.is_empty() && p.r.children.is_empty());
    assert!(p.r.has_event(|e| matches!(
        e,
        Event::IkeDeleted {
            reason: DeleteReason::PeerDeleted,
            ..
        }
    )));
    // close(): one Delete sent, no wait; the peer deletes too.
    let mut p = Pair::default();
    p.handshake();
    let mut out = Vec::new();
    p.r.ep.close(p.now, &p.rng, &mut out);
    p.r.absorb(out);
    assert_eq!(p.r.wire.len(), 1);
    assert!(p.r.ep.status().is_empty() && p.r.children.is_empty());
    p.run();
    assert!(p.i.ep.status().is_empty() && p.i.children.is_empty());
}

fn rekey_child(p: &mut Pair, by_initiator: bool) -> (u32, u32) {
    let side = if by_initiator { &mut p.i } else { &mut p.r };
    let old = *side.children.keys().next().unwrap();
    let mut out = Vec::new();
    side.ep.rekey_child(p.now, old, &p.rng, &mut out);
    side.absorb(out);
    p.run();
    let side = if by_initiator { &p.i } else { &p.r };
    assert_eq!(side.children.len(), 1, "old SA retired");
    let new = *side.children.keys().next().unwrap();
    assert_ne!(old, new);
    (old, new)
}

#[test]
fn child_rekey_without_and_with_pfs() {
    for pfs in [None, Some(Group::Modp2048), Some(Group::Ecp384)] {
        let mut ci = config(I_ADDR, R_ADDR);
        ci.proposals.pfs_initiate = pfs;
        let mut p = Pair::new(ci, config(R_ADDR, I_ADDR));
        p.handshake();
        let before: Vec<u32> = p.r.children.keys().copied().collect();
        let (old, new) = rekey_child(&mut p, true);
        assert_children_mirror(&p);
        assert_eq!(p.r.children.len(), 1);
        assert!(!p.r.children.contains_key(&before[0]));
        assert!(p.i.has_event(|e| matches!(e, Event::ChildRekeyed { old_inbound_spi, new_inbound_spi } if *old_inbound_spi == old && *new_inbound_spi == new)));
        // The responder installed the new SA inactive, then activated it on the Delete.
        let r_new = p.r.children.values().next().unwrap();
        assert!(!r_new.activate_outbound);
        assert_eq!(r_new.replaces, Some(before[0]));
        assert_eq!(p.r.active, vec![r_new.outbound.spi]);
        assert_eq!(p.i.active.len(), 1);
        // With PFS, the new keys depend on a fresh DH: the exchange carried KE payloads.
        let ke_sent = p
            .i
            .sent_log
            .iter()
            .filter(|(_, b)| Header::parse(b).unwrap().exchange == ExchangeType::CREATE_CHILD_SA)
            .count();
        assert_eq!(ke_sent, 1);
        let st = p.r.established();
        assert!(st[0].children[0].suite.contains("GCM"));
        // The rekeyed SA can be rekeyed again, by the responder this time.
        rekey_child(&mut p, false);
        assert_children_mirror(&p);
    }
}

#[test]
fn ike_rekey_keeps_children_and_restarts_message_ids() {
    let mut p = Pair::default();
    p.handshake();
    let children_i: Vec<u32> = p.i.children.keys().copied().collect();
    let old = p.i.established()[0].clone();
    // Move the message IDs along first.
    p.advance_running(Duration::from_secs(31), Duration::from_secs(31));
    let mut out = Vec::new();
    p.i.ep.rekey_ike(p.now, &p.rng, &mut out);
    p.i.absorb(out);
    p.run();
    let si = p.i.ep.status();
    let sr = p.r.ep.status();
    assert_eq!(si.len(), 1, "the old IKE SA is gone: {si:?}");
    assert_eq!(sr.len(), 1);
    assert_ne!((si[0].spi_i, si[0].spi_r), (old.spi_i, old.spi_r));
    assert_eq!((si[0].spi_i, si[0].spi_r), (sr[0].spi_i, sr[0].spi_r));
    assert_eq!(si[0].children.len(), 1);
    assert_eq!(p.i.children.keys().copied().collect::<Vec<_>>(), children_i);
    assert!(p.i.has_event(|e| matches!(e, Event::IkeRekeyed { .. })));
    assert!(p.r.has_event(|e| matches!(e, Event::IkeRekeyed { .. })));
    // Message IDs on the new SA start at 0.
    let (new_i, new_r) = (si[0].spi_i, si[0].spi_r);
    let sent = p.i.sent_log.len();
    p.advance(Duration::from_secs(31));
    let first_new = p.i.sent_log[sent..]
        .iter()
        .map(|(_, b)| Header::parse(b).unwrap())
        .find(|h| h.spi_i == new_i && h.spi_r == new_r && !h.is_response())
        .expect("a request on the new SA");
    assert_eq!(first_new.message_id, 0);
    p.run();
    assert_eq!(p.i.established().len(), 1);
    // A child rekey on the new SA works (its SK_d is the new one, on both sides).
    rekey_child(&mut p, true);
    assert_children_mirror(&p);
    // And the responder can rekey the IKE SA in turn.
    let mut out = Vec::new();
    p.r.ep.rekey_ike(p.now, &p.rng, &mut out);
    p.r.absorb(out);
    p.run();
    assert_eq!(p.r.ep.status().len(), 1);
    assert_eq!(p.i.ep.status().len(), 1);
    // The responder initiated this rekey: it is the new SA's original initiator.
    assert!(p.r.ep.status()[0].initiator);
    assert!(!p.i.ep.status()[0].initiator);
    rekey_child(&mut p, false);
    assert_children_mirror(&p);
}

#[test]
fn child_rekey_collision() {
    let mut p = Pair::default();
    p.handshake();
    let old_i = *p.i.children.keys().next().unwrap();
    let old_r = *p.r.children.keys().next().unwrap();
    let mut out = Vec::new();
    p.i.ep.rekey_child(p.now, old_i, &p.rng, &mut out);
    p.i.absorb(out);
    let mut out = Vec::new();
    p.r.ep.rekey_child(p.now, old_r, &p.rng, &mut out);
    p.r.absorb(out);
    // Both requests cross before either answer.
    assert_eq!(p.i.wire.len(), 1);
    assert_eq!(p.r.wire.len(), 1);
    p.run();
    assert_eq!(p.i.children.len(), 1, "{:?}", p.i.children.keys());
    assert_eq!(p.r.children.len(), 1, "{:?}", p.r.children.keys());
    assert!(!p.i.children.contains_key(&old_i));
    assert!(!p.r.children.contains_key(&old_r));
    assert_children_mirror(&p);
    // Each side sends on exactly the surviving SA.
    let ci = p.i.children.values().next().unwrap();
    let cr = p.r.children.values().next().unwrap();
    assert_eq!(p.i.active, vec![ci.outbound.spi]);
    assert_eq!(p.r.active, vec![cr.outbound.spi]);
}

#[test]
fn lifetimes_drive_rekeys() {
    let mut ci = config(I_ADDR, R_ADDR);
    ci.child_lifetime = Duration::from_secs(100);
    ci.ike_lifetime = Duration::from_secs(1000);
    let mut cr = config(R_ADDR, I_ADDR);
    cr.child_lifetime = Duration::from_secs(1000);
    cr.ike_lifetime = Duration::from_secs(10_000);
    let mut p = Pair::new(ci, cr);
    p.handshake();
    let first = *p.i.children.keys().next().unwrap();
    assert_eq!(p.i.children[&first].lifetime, Duration::from_secs(100));
    p.advance_running(Duration::from_secs(80), Duration::from_secs(10));
    assert!(p.i.children.contains_key(&first), "not before 85 %");
    p.advance_running(Duration::from_secs(12), Duration::from_secs(1));
    assert!(!p.i.children.contains_key(&first), "rekeyed by 92 %");
    assert_eq!(p.i.children.len(), 1);
    assert_children_mirror(&p);
    let spi_before = p.i.established()[0].spi_i;
    // The IKE SA is rekeyed before 1000 s, the children keep being rekeyed meanwhile.
    p.advance_running(Duration::from_secs(920), Duration::from_secs(10));
    let s = p.i.established();
    assert_eq!(s.len(), 1);
    assert_ne!(s[0].spi_i, spi_before);
    assert_eq!(p.i.children.len(), 1);
    assert_children_mirror(&p);
    assert!(p.i.count_events(|e| matches!(e, Event::ChildRekeyed { .. })) >= 9);
}

#[test]
fn hard_lifetime_without_rekey_expires() {
    let mut ci = config(I_ADDR, R_ADDR);
    ci.ike_lifetime = Duration::from_secs(100);
    let mut p = Pair::new(ci, config(R_ADDR, I_ADDR));
    p.handshake();
    // The peer stops answering: rekeys fail, the hard lifetime ends the SA.
    for _ in 0..110 {
        p.advance(Duration::from_secs(1));
        p.i.wire.clear();
    }
    assert!(p.i.ep.status().is_empty());
    assert!(p.i.children.is_empty());
}

#[test]
fn fragmentation_with_a_small_mtu() {
    for mtu in [200usize, 300, 576] {
        let mut ci = config(I_ADDR, R_ADDR);
        ci.fragment_mtu = mtu;
        let mut cr = config(R_ADDR, I_ADDR);
        cr.fragment_mtu = mtu;
        // Many selectors make the messages large.
        let many: Vec<TrafficSelector> = (0..20u8)
            .map(|k| TrafficSelector::Range {
                ip_protocol: 0,
                start_port: 0,
                end_port: 65535,
                start: std::net::IpAddr::V4(Ipv4Addr::new(10, k, 0, 0)),
                end: std::net::IpAddr::V4(Ipv4Addr::new(10, k, 255, 255)),
            })
            .collect();
        ci.local_ts = many.clone();
        cr.remote_ts = many.clone();
        let mut p = Pair::new(ci, cr);
        p.handshake();
        let auth_frags: Vec<&Vec<u8>> =
            p.i.sent_log
                .iter()
                .filter(|(_, b)| Header::parse(b).unwrap().exchange == ExchangeType::IKE_AUTH)
                .map(|(_, b)| b)
                .collect();
        assert!(auth_frags.len() > 1, "IKE_AUTH fragmented at {mtu}");
        for f in &auth_frags {
            assert!(f.len() <= mtu, "fragment of {} > {mtu}", f.len());
            assert_eq!(Header::parse(f).unwrap().next_payload, PayloadType::SKF);
        }
        let r_auth: Vec<usize> =
            p.r.sent_log
                .iter()
                .filter(|(_, b)| Header::parse(b).unwrap().exchange == ExchangeType::IKE_AUTH)
                .map(|(_, b)| b.len())
                .collect();
        assert!(r_auth.iter().all(|l| *l <= mtu), "{r_auth:?} at {mtu}");
        if mtu <= 300 {
            assert!(r_auth.len() > 1, "the answer is fragmented too at {mtu}");
        }
        assert_eq!(p.i.children.len(), 1);
        assert_children_mirror(&p);
        assert_eq!(p.r.children.values().next().unwrap().remote_ts.len(), 16);
        // Later exchanges too: a rekey with the same big selectors.
        rekey_child(&mut p, true);
        assert_children_mirror(&p);
    }
}

#[test]
fn fragments_out_of_order_and_duplicated() {
    let mut ci = config(I_ADDR, R_ADDR);
    ci.fragment_mtu = 200;
    let mut p = Pair::new(ci, config(R_ADDR, I_ADDR));
    p.initiate();
    let (path, init) = p.i.wire.remove(0);
    p.deliver(true, path, &init);
    let (rpath, resp) = p.r.wire.remove(0);
    p.deliver(false, rpath, &resp);
    let mut frags = std::mem::take(&mut p.i.wire);
    assert!(frags.len() > 1);
    frags.reverse();
    let dup = frags[0].clone();
    frags.insert(1, dup);
    for (path, b) in frags {
        p.deliver(true, path, &b);
    }
    p.run();
    assert_eq!(p.r.installs, 1);
    assert_children_mirror(&p);
}

#[test]
fn no_fragmentation_without_peer_support() {
    // The responder's answer lacks IKEV2_FRAGMENTATION_SUPPORTED when the initiator's
    // request lacks it; we test the other way round: strip it from the responder's reply.
    let mut ci = config(I_ADDR, R_ADDR);
    ci.fragment_mtu = 200;
    let mut p = Pair::new(ci, config(R_ADDR, I_ADDR));
    p.initiate();
    let (path, init) = p.i.wire.remove(0);
    p.deliver(true, path, &init);
    let (rpath, resp) = p.r.wire.remove(0);
    let parsed = parse_message(&resp).unwrap();
    let payloads: Vec<Payload> = parsed
        .payloads
        .into_iter()
        .filter(|x| !matches!(x, Payload::Notify(n) if n.kind == NotifyType::IKEV2_FRAGMENTATION_SUPPORTED))
        .collect();
    let stripped = crate::wire::encode_message(parsed.header, &payloads);
    // The responder's AUTH covers its original message, so authentication fails: what this
    // checks is only that the initiator did not fragment.
    p.deliver(false, rpath, &stripped);
    assert_eq!(p.i.wire.len(), 1);
    assert_eq!(
        Header::parse(&p.i.wire[0].1).unwrap().next_payload,
        PayloadType::SK
    );
}

#[test]
fn initial_contact_replaces_old_sa() {
    let mut p = Pair::default();
    p.handshake();
    let first = p.r.established()[0].clone();
    let old_children: Vec<u32> = p.r.children.keys().copied().collect();
    // The initiator restarts (a new endpoint, same config) and connects again.
    p.i = Side::new(config(I_ADDR, R_ADDR), "sesame");
    p.handshake();
    let now = p.r.established();
    assert_eq!(now.len(), 1);
    assert_ne!(now[0].spi_r, first.spi_r);
    assert!(!p.r.children.contains_key(&old_children[0]));
    assert!(p.r.has_event(|e| matches!(
        e,
        Event::IkeDeleted {
            reason: DeleteReason::InitialContact,
            ..
        }
    )));
}

#[test]
fn half_open_times_out() {
    let mut p = Pair::default();
    p.initiate();
    let (path, init) = p.i.wire.remove(0);
    p.deliver(true, path, &init);
    assert_eq!(p.r.ep.status().len(), 1);
    assert_eq!(p.r.ep.status()[0].state, "await_auth");
    p.advance(Duration::from_secs(29));
    assert_eq!(p.r.ep.status().len(), 1);
    p.advance(Duration::from_secs(2));
    assert!(p.r.ep.status().is_empty());
}

#[test]
fn cookies_under_load() {
    let mut p = Pair::default();
    // All from one address here: the per-source cap is tested apart.
    p.r.ep = Endpoint::new(config(R_ADDR, I_ADDR), psk("sesame")).with_limits(Limits {
        half_open_per_source: usize::MAX,
        ..Limits::default()
    });
    // Half-open SAs from initiators that never come back.
    for _ in 0..endpoint::COOKIE_THRESHOLD {
        p.initiate();
    }
    let msgs = std::mem::take(&mut p.i.wire);
    for (path, b) in msgs {
        p.deliver(true, path, &b);
    }
    assert_eq!(p.r.ep.status().len(), endpoint::COOKIE_THRESHOLD);
    p.r.wire.clear();
    // The next one is asked for a cookie, keeps no state, then gets in with it.
    let mut fresh = Side::new(config(I_ADDR, R_ADDR), "sesame");
    let mut out = Vec::new();
    fresh.ep.initiate(p.now, p.path, &p.rng, &mut out);
    fresh.absorb(out);
    p.i = fresh;
    let (path, first) = p.i.wire.remove(0);
    p.deliver(true, path, &first);
    assert_eq!(p.r.ep.status().len(), endpoint::COOKIE_THRESHOLD);
    assert!(p.r.has_event(|e| matches!(
        e,
        Event::Dropped {
            reason: DropReason::CookieRequired
        }
    )));
    let (_, ask) = &p.r.wire[0];
    let parsed = parse_message(ask).unwrap();
    assert!(
        matches!(&parsed.payloads[..], [Payload::Notify(n)] if n.kind == NotifyType::COOKIE && n.data.len() == 17)
    );
    // A made-up cookie is refused the same way.
    let mut forged = parse_message(&first).unwrap();
    forged
        .payloads
        .insert(0, msg::notify(NotifyType::COOKIE, vec![0; 16]));
    let forged = crate::wire::encode_message(forged.header, &forged.payloads);
    p.deliver(true, path, &forged);
    assert_eq!(p.r.ep.status().len(), endpoint::COOKIE_THRESHOLD);
    assert_eq!(
        p.r.count_events(|e| matches!(
            e,
            Event::Dropped {
                reason: DropReason::CookieRequired
            }
        )),
        1
    );
    assert_eq!(
        p.r.count_events(|e| matches!(
            e,
            Event::Dropped {
                reason: DropReason::CookieInvalid
            }
        )),
        1
    );
    assert_eq!(p.r.ep.stats().cookies_sent, 2);
    p.r.wire.truncate(1);
    p.run();
    assert_eq!(p.i.established().len(), 1);
    assert_children_mirror(&p);
}

#[test]
fn half_open_cap() {
    let mut p = Pair::default();
    let limits = p.r.ep.limits();
    for _ in 0..(endpoint::MAX_HALF_OPEN + 5) {
        p.initiate();
    }
    // Initiators that answer cookies but never reach IKE_AUTH, each from its own address (one
    // address holds at most `half_open_per_source`): only COOKIE answers get back.
    let mut sources = std::collections::HashMap::new();
    for _ in 0..3 {
        let msgs = std::mem::take(&mut p.i.wire);
        for (path, b) in msgs {
            let spi = parse_message(&b).unwrap().header.spi_i;
            let n = sources.len() as u32;
            let src = *sources
                .entry(spi)
                .or_insert(Ipv4Addr::from(0x0a00_0000 + n));
            let mut out = Vec::new();
            let from = Path {
                local: path.remote,
                remote: SocketAddr::from((src, 500)),
            };
            p.r.ep.handle(p.now, from, &b, &p.rng, &mut out);
            for o in out {
                match o {
                    Output::Send { bytes, .. } => {
                        let parsed = parse_message(&bytes).unwrap();
                        if matches!(&parsed.payloads[..], [Payload::Notify(n)] if n.kind == NotifyType::COOKIE)
                        {
                            p.deliver(false, path.reversed(), &bytes);
                        }
                    }
                    Output::Event(e) => p.r.events.push(e),
                    _ => {}
                }
            }
        }
    }
    assert_eq!(p.r.ep.status().len(), limits.max_half_open);
    assert_eq!(p.r.ep.stats().half_open, limits.max_half_open);
    assert!(p.r.ep.status().iter().all(|s| s.state == "await_auth"));
    assert!(p.r.has_event(|e| matches!(
        e,
        Event::Dropped {
            reason: DropReason::HalfOpenCap
        }
    )));
}

#[test]
fn bad_nonce_length_is_refused() {
    let mut p = Pair::default();
    p.initiate();
    let (path, init) = p.i.wire.remove(0);
    let parsed = parse_message(&init).unwrap();
    let payloads: Vec<Payload> = parsed
        .payloads
        .into_iter()
        .map(|x| match x {
            Payload::Nonce(_) => Payload::Nonce(vec![7; 15]),
            other => other,
        })
        .collect();
    let short = crate::wire::encode_message(parsed.header, &payloads);
    p.deliver(true, path, &short);
    assert!(p.r.ep.status().is_empty());
}

/// A small deterministic generator for mutations (xorshift64*).
struct Mutator(u64);

impl Mutator {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % (n.max(1) as u64)) as usize
    }

    fn mutate(&mut self, base: &[u8]) -> Vec<u8> {
        let mut m = base.to_vec();
        for _ in 0..=self.below(4) {
            match self.below(6) {
                0 if !m.is_empty() => {
                    let i = self.below(m.len());
                    m[i] ^= 1 << self.below(8);
                }
                1 if !m.is_empty() => {
                    let i = self.below(m.len());
                    m[i] = self.next() as u8;
                }
                2 => {
                    let n = self.below(m.len() + 1);
                    m.truncate(n);
                }
                3 => {
                    let i = self.below(m.len() + 1);
                    m.insert(i, self.next() as u8);
                }
                // Length fields and header bytes are where parsers break.
                4 if m.len() >= 28 => {
                    let i = 24 + self.below(4);
                    m[i] = self.next() as u8;
                }
                _ if m.len() > 32 => {
                    let i = 28 + self.below(m.len() - 28);
                    m[i] = [0, 1, 0xff, 0x80][self.below(4)];
                }
                _ => {}
            }
        }
        m
    }
}

#[test]
fn mutated_messages_never_panic() {
    // Real messages of every exchange, recorded from a run.
    let mut p = Pair::default();
    p.handshake();
    p.advance_running(Duration::from_secs(31), Duration::from_secs(31));
    rekey_child(&mut p, true);
    let mut out = Vec::new();
    p.i.ep.rekey_ike(p.now, &p.rng, &mut out);
    p.i.absorb(out);
    p.run();
    let corpus: Vec<Vec<u8>> =
        p.i.sent_log
            .iter()
            .chain(p.r.sent_log.iter())
            .map(|(_, b)| b.clone())
            .collect();
    assert!(corpus.len() >= 8);
    let mut m = Mutator(0x9e37_79b9_7f4a_7c15);
    let rng = SystemRandom::new();
    let path = p.path.reversed();
    let now = p.now;
    let total = 100_000usize;
    let mut answered = 0usize;
    // Three responders: fresh, half-open (after a real IKE_SA_INIT), established.
    // One source: let it hold as many half-open SAs as the cookie threshold allows.
    let one_source = Limits {
        half_open_per_source: usize::MAX,
        ..Limits::default()
    };
    let mut fresh = Endpoint::new(config(R_ADDR, I_ADDR), psk("sesame")).with_limits(one_source);
    let mut half = Endpoint::new(config(R_ADDR, I_ADDR), psk("sesame"));
    let mut out = Vec::new();
    half.handle(now, path, &corpus[0], &rng, &mut out);
    assert_eq!(half.status().len(), 1);
    for k in 0..total {
        let base = &corpus[m.below(corpus.len())];
        let msg = m.mutate(base);
        let mut out = Vec::new();
        match k % 3 {
            0 => fresh.handle(now, path, &msg, &rng, &mut out),
            1 => half.handle(now, path, &msg, &rng, &mut out),
            _ => p.r.ep.handle(now, path, &msg, &rng, &mut out),
        }
        if out.iter().any(|o| matches!(o, Output::Send { .. })) {
            answered += 1;
        }
        // Keep the fresh one below the cookie threshold, so mutated inits reach the DH.
        if fresh.status().len() + 1 >= endpoint::COOKIE_THRESHOLD {
            fresh = Endpoint::new(config(R_ADDR, I_ADDR), psk("sesame"));
        }
    }
    // Something got through to the answering paths (not only early drops).
    assert!(answered > 0);
    // The established responder still works.
    p.r.wire.clear();
    p.advance(Duration::from_secs(31));
    p.run();
    assert_eq!(p.r.established().len(), 1);
}

/// Sends `payloads` as a request of the initiator's established IKE SA, as a peer would that
/// does more than our initiator does, and returns the responder's decrypted answer (None if
/// it did not answer).
fn inject(p: &mut Pair, exchange: ExchangeType, payloads: &[Payload]) -> Option<Vec<Payload>> {
    let (path, datagrams) = {
        let sa =
            p.i.ep
                .sas
                .values_mut()
                .find(|s| matches!(&s.state, State::Established(e) if !e.superseded))
                .unwrap();
        let (spi_i, spi_r, initiator, path) = (sa.spi_i, sa.spi_r, sa.initiator, sa.path);
        let State::Established(e) = &mut sa.state else {
            unreachable!()
        };
        let id = e.win.next_send;
        e.win.next_send += 1;
        let hdr = msg::header(spi_i, spi_r, exchange, initiator, false, id);
        (
            path,
            msg::seal(hdr, payloads, &e.send, None, &p.rng).unwrap(),
        )
    };
    p.r.wire.clear();
    for d in &datagrams {
        p.deliver(true, path, d);
    }
    let answers = std::mem::take(&mut p.r.wire);
    let (_, answer) = answers.first()?;
    let sa =
        p.i.ep
            .sas
            .values()
            .find(|s| matches!(&s.state, State::Established(e) if !e.superseded))
            .unwrap();
    let State::Established(e) = &sa.state else {
        unreachable!()
    };
    let parsed = parse_message(answer).unwrap();
    assert!(parsed.header.is_response());
    let enc = parsed.encrypted.unwrap();
    let plain = e.recv.open(answer, enc.iv_offset).unwrap();
    Some(parse_payloads(enc.first_inner, &plain).unwrap())
}

fn new_child_request(
    p: &Pair,
    pfs: Option<Group>,
) -> (Vec<Payload>, Option<crate::crypto::KeyPair>) {
    let props = proposal::esp_proposals(&p.i.ep.config().proposals, 0x1234_5678, pfs);
    let mut v = vec![Payload::Sa(props), Payload::Nonce(vec![9; 32])];
    let kp = pfs.map(|g| crate::crypto::KeyPair::generate(g, &p.rng).unwrap());
    if let Some(kp) = &kp {
        v.push(Payload::Ke(crate::wire::KeyExchange {
            group: kp.group().id(),
            data: kp.public().to_vec(),
        }));
    }
    v.push(Payload::TsI(vec![any_ipv4()]));
    v.push(Payload::TsR(vec![any_ipv4()]));
    (v, kp)
}

fn notify_in(payloads: &[Payload]) -> Option<NotifyType> {
    payloads.iter().find_map(|x| match x {
        Payload::Notify(n) => Some(n.kind),
        _ => None,
    })
}

#[test]
fn extra_child_sas_and_their_cap() {
    let mut p = Pair::default();
    p.handshake();
    let (req, _) = new_child_request(&p, None);
    let answer = inject(&mut p, ExchangeType::CREATE_CHILD_SA, &req).unwrap();
    assert_eq!(notify_in(&answer), None, "{answer:?}");
    assert!(answer.iter().any(|x| matches!(x, Payload::Sa(_))));
    assert_eq!(p.r.children.len(), 2);
    let extra =
        p.r.children
            .values()
            .find(|c| c.outbound.spi == 0x1234_5678)
            .unwrap();
    assert!(extra.activate_outbound);
    assert_eq!(extra.replaces, None);
    // PFS requested with a group the responder allows: answered with a KE of that group.
    let (req, _) = new_child_request(&p, Some(Group::Modp1536));
    let answer = inject(&mut p, ExchangeType::CREATE_CHILD_SA, &req).unwrap();
    assert!(
        answer
            .iter()
            .any(|x| matches!(x, Payload::Ke(k) if k.group == Group::Modp1536.id()))
    );
    // Up to the cap, then NO_ADDITIONAL_SAS.
    while p.r.children.len() < ike_sa::MAX_CHILDREN {
        let (req, _) = new_child_request(&p, None);
        let answer = inject(&mut p, ExchangeType::CREATE_CHILD_SA, &req).unwrap();
        assert_eq!(notify_in(&answer), None);
    }
    let (req, _) = new_child_request(&p, None);
    let answer = inject(&mut p, ExchangeType::CREATE_CHILD_SA, &req).unwrap();
    assert_eq!(notify_in(&answer), Some(NotifyType::NO_ADDITIONAL_SAS));
    assert_eq!(p.r.children.len(), ike_sa::MAX_CHILDREN);
}

#[test]
fn create_child_sa_errors() {
    let mut p = Pair::default();
    p.handshake();
    // PFS with a group we do not allow and no other choice: NO_PROPOSAL_CHOSEN.
    let mut ci_props = p.i.ep.config().proposals.clone();
    ci_props.esp_encr = vec![(crate::wire::TransformId::ENCR_AES_GCM_16, Some(256))];
    let mut props = proposal::esp_proposals(&ci_props, 0x4444_4444, Some(Group::Modp2048));
    for t in &mut props[0].transforms {
        if t.kind == TransformType::DH {
            t.id = crate::wire::TransformId::DH_MODP1024;
        }
    }
    let req = vec![
        Payload::Sa(props),
        Payload::Nonce(vec![1; 32]),
        Payload::TsI(vec![any_ipv4()]),
        Payload::TsR(vec![any_ipv4()]),
    ];
    let answer = inject(&mut p, ExchangeType::CREATE_CHILD_SA, &req).unwrap();
    assert_eq!(notify_in(&answer), Some(NotifyType::NO_PROPOSAL_CHOSEN));
    // PFS group allowed but the KE is of another group: INVALID_KE_PAYLOAD naming ours.
    let (mut req, _) = new_child_request(&p, Some(Group::Modp2048));
    for x in &mut req {
        if let Payload::Ke(k) = x {
            k.group = Group::Modp1536.id();
        }
    }
    let answer = inject(&mut p, ExchangeType::CREATE_CHILD_SA, &req).unwrap();
    assert!(answer.iter().any(|x| matches!(
        x,
        Payload::Notify(n) if n.kind == NotifyType::INVALID_KE_PAYLOAD && n.data == [0, 14]
    )));
    // Rekey of an SA that does not exist: CHILD_SA_NOT_FOUND.
    let (mut req, _) = new_child_request(&p, None);
    req.insert(
        0,
        Payload::Notify(crate::wire::Notify {
            protocol: crate::wire::ProtocolId::ESP,
            spi: vec![0, 0, 0, 77],
            kind: NotifyType::REKEY_SA,
            data: Vec::new(),
        }),
    );
    let answer = inject(&mut p, ExchangeType::CREATE_CHILD_SA, &req).unwrap();
    assert_eq!(notify_in(&answer), Some(NotifyType::CHILD_SA_NOT_FOUND));
    // Transport mode: refused.
    let (mut req, _) = new_child_request(&p, None);
    req.push(msg::notify(NotifyType::USE_TRANSPORT_MODE, Vec::new()));
    let answer = inject(&mut p, ExchangeType::CREATE_CHILD_SA, &req).unwrap();
    assert_eq!(notify_in(&answer), Some(NotifyType::NO_PROPOSAL_CHOSEN));
    // Short nonce.
    let (mut req, _) = new_child_request(&p, None);
    for x in &mut req {
        if let Payload::Nonce(n) = x {
            n.truncate(8);
        }
    }
    let answer = inject(&mut p, ExchangeType::CREATE_CHILD_SA, &req).unwrap();
    assert_eq!(notify_in(&answer), Some(NotifyType::INVALID_SYNTAX));
    // Nothing was installed by any of these; the SA still answers.
    assert_eq!(p.r.children.len(), 1);
    let answer = inject(&mut p, ExchangeType::INFORMATIONAL, &[]).unwrap();
    assert!(answer.is_empty());
    // An unknown critical payload in an established SA's request.
    let answer = inject(
        &mut p,
        ExchangeType::INFORMATIONAL,
        &[Payload::Other {
            kind: PayloadType(201),
            critical: true,
            body: vec![],
        }],
    )
    .unwrap();
    assert!(answer.iter().any(|x| matches!(
        x,
        Payload::Notify(n) if n.kind == NotifyType::UNSUPPORTED_CRITICAL_PAYLOAD && n.data == [201]
    )));
}

#[test]
fn out_of_window_requests_are_dropped() {
    let mut p = Pair::default();
    p.handshake();
    // Skip a message ID.
    {
        let sa = p.i.ep.sas.values_mut().next().unwrap();
        let State::Established(e) = &mut sa.state else {
            panic!()
        };
        e.win.next_send += 1;
    }
    assert!(inject(&mut p, ExchangeType::INFORMATIONAL, &[]).is_none());
    assert!(p.r.has_event(|e| matches!(
        e,
        Event::Dropped {
            reason: DropReason::OutOfWindow
        }
    )));
}

#[test]
fn mutated_plaintext_inside_valid_sk_never_panics() {
    // Past the ICV: the payload chain of authenticated requests, mutated.
    let mut p = Pair::default();
    p.handshake();
    let (req, _) = new_child_request(&p, Some(Group::Ecp384));
    let mut bases: Vec<Vec<u8>> = Vec::new();
    for payloads in [
        req,
        vec![Payload::Delete(crate::wire::Delete {
            protocol: crate::wire::ProtocolId::ESP,
            spis: vec![vec![1, 2, 3, 4]],
        })],
        vec![msg::notify(NotifyType::REKEY_SA, vec![])],
    ] {
        let mut b = Vec::new();
        crate::wire::write_payloads(&payloads, PayloadType::NONE, &mut b);
        bases.push(b);
    }
    let mut m = Mutator(42);
    let mut answered = 0;
    let mut resets = 0;
    for k in 0..10_000 {
        let plain = m.mutate(&bases[k % bases.len()]);
        let first = [PayloadType::SA, PayloadType::DELETE, PayloadType::NOTIFY][k % 3];
        // Seal the raw chain: the header says `first`, the body is whatever it is.
        let (path, d) = {
            let sa = p.i.ep.sas.values_mut().next().unwrap();
            let (spi_i, spi_r, path) = (sa.spi_i, sa.spi_r, sa.path);
            let State::Established(e) = &mut sa.state else {
                panic!()
            };
            let id =
                p.r.ep
                    .sas
                    .values()
                    .find_map(|s| match &s.state {
                        State::Established(e) => Some(e.win.next_recv),
                        _ => None,
                    })
                    .unwrap();
            let mut hdr = msg::header(spi_i, spi_r, ExchangeType::CREATE_CHILD_SA, true, false, id);
            if k % 2 == 0 {
                hdr.exchange = ExchangeType::INFORMATIONAL;
            }
            let sealed = e.send.sealed_len(plain.len());
            hdr.next_payload = PayloadType::SK;
            hdr.length = (28 + 4 + sealed) as u32;
            let mut buf = Vec::new();
            hdr.write(&mut buf);
            crate::wire::write_encrypted_header(first, sealed, None, &mut buf);
            e.send.seal(&mut buf, &plain, &p.rng).unwrap();
            (path, buf)
        };
        p.r.wire.clear();
        p.deliver(true, path, &d);
        if !p.r.wire.is_empty() {
            answered += 1;
        }
        if p.r.established().is_empty() {
            // A mutation that deleted (or rekeyed) the IKE SA: start over.
            resets += 1;
            p = Pair::default();
            p.handshake();
        }
    }
    // Authenticated requests are always answered (an error notify at worst); only one that
    // ended the SA might not be.
    assert!(
        answered + resets >= 10_000,
        "{answered} answered, {resets} resets"
    );
}

#[test]
fn cookie_retry() {
    let mut p = Pair::default();
    p.initiate();
    let (path, init1) = p.i.wire.remove(0);
    let h1 = Header::parse(&init1).unwrap();
    // The test plays a responder under load that asks for a cookie (§2.6).
    let ask = crate::wire::encode_message(
        msg::header(h1.spi_i, 0, ExchangeType::IKE_SA_INIT, false, true, 0),
        &[msg::notify(NotifyType::COOKIE, vec![0xc0; 16])],
    );
    p.deliver(false, path.reversed(), &ask);
    assert_eq!(p.i.wire.len(), 1);
    let init2 = p.i.wire[0].1.clone();
    let p1 = parse_message(&init1).unwrap();
    let p2 = parse_message(&init2).unwrap();
    assert!(matches!(
        &p2.payloads[0],
        Payload::Notify(n) if n.kind == NotifyType::COOKIE && n.data == [0xc0; 16]
    ));
    let nonce = |p: &crate::wire::Parsed| {
        p.payloads
            .iter()
            .find_map(|x| match x {
                Payload::Nonce(n) => Some(n.clone()),
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(nonce(&p1), nonce(&p2), "same Ni with the cookie");
    assert_eq!(p2.header.spi_i, h1.spi_i);
    // The real responder takes the retried message; AUTH covers it, so the handshake only
    // succeeds if the initiator signed the message it actually sent last.
    p.run();
    assert_eq!(p.i.established().len(), 1);
    assert_children_mirror(&p);
}

#[test]
fn ike_rekey_collision() {
    for round in 0..6 {
        let mut p = Pair::default();
        p.handshake();
        let before = p.i.established()[0].clone();
        let children_i: Vec<u32> = p.i.children.keys().copied().collect();
        let children_r: Vec<u32> = p.r.children.keys().copied().collect();
        let mut out = Vec::new();
        p.i.ep.rekey_ike(p.now, &p.rng, &mut out);
        p.i.absorb(out);
        let mut out = Vec::new();
        p.r.ep.rekey_ike(p.now, &p.rng, &mut out);
        p.r.absorb(out);
        // Both requests cross (§2.8.2); then everything settles.
        assert_eq!((p.i.wire.len(), p.r.wire.len()), (1, 1));
        p.run();
        let si = p.i.ep.status();
        let sr = p.r.ep.status();
        assert_eq!(si.len(), 1, "round {round}: {si:?}");
        assert_eq!(sr.len(), 1, "round {round}: {sr:?}");
        assert_eq!(si[0].state, "established");
        assert_eq!((si[0].spi_i, si[0].spi_r), (sr[0].spi_i, sr[0].spi_r));
        assert_ne!((si[0].spi_i, si[0].spi_r), (before.spi_i, before.spi_r));
        assert_eq!(
            si[0].children.len(),
            1,
            "the children moved to the survivor"
        );
        assert_eq!(sr[0].children.len(), 1);
        assert_eq!(p.i.children.keys().copied().collect::<Vec<_>>(), children_i);
        assert_eq!(p.r.children.keys().copied().collect::<Vec<_>>(), children_r);
        assert!(!p.i.has_event(|e| matches!(e, Event::PeerError { .. })));
        // The survivor works: DPD and a child rekey over it.
        rekey_child(&mut p, round % 2 == 0);
        assert_children_mirror(&p);
    }
}

#[test]
fn ike_rekey_refused_when_ours_already_completed() {
    let mut p = Pair::default();
    p.handshake();
    let children_r: Vec<u32> = p.r.children.keys().copied().collect();
    let mut out = Vec::new();
    p.i.ep.rekey_ike(p.now, &p.rng, &mut out);
    p.i.absorb(out);
    let mut out = Vec::new();
    p.r.ep.rekey_ike(p.now, &p.rng, &mut out);
    p.r.absorb(out);
    // The initiator's exchange completes before the responder's request arrives: that one
    // hits an SA already replaced and gets TEMPORARY_FAILURE (§2.25).
    let (ip, ireq) = p.i.wire.remove(0);
    let (rp, rreq) = p.r.wire.remove(0);
    p.deliver(true, ip, &ireq);
    // The responder answered ours after sending its own: it records the collision.
    let (rp2, rresp) = p.r.wire.remove(0);
    p.deliver(false, rp2, &rresp);
    p.deliver(false, rp, &rreq);
    p.run();
    assert_eq!(p.i.ep.status().len(), 1);
    assert_eq!(p.r.ep.status().len(), 1);
    let si = p.i.ep.status();
    let sr = p.r.ep.status();
    assert_eq!((si[0].spi_i, si[0].spi_r), (sr[0].spi_i, sr[0].spi_r));
    assert_eq!(si[0].children.len(), 1);
    assert_eq!(sr[0].children.len(), 1);
    // The Delete of the old SA reaches the responder before the TEMPORARY_FAILURE answer:
    // its children went to the initiator's new SA, never retired.
    assert!(p.r.has_event(|e| matches!(e, Event::IkeRekeyed { .. })));
    assert_eq!(p.r.children.keys().copied().collect::<Vec<_>>(), children_r);
    assert_eq!(p.r.installs, 1);
    assert_children_mirror(&p);
}

#[test]
fn initiator_deletes_a_child_it_cannot_use() {
    let mut p = Pair::default();
    p.initiate();
    let (path, init) = p.i.wire.remove(0);
    p.deliver(true, path, &init);
    let (rpath, resp) = p.r.wire.remove(0);
    p.deliver(false, rpath, &resp);
    // Between sending IKE_AUTH and reading the answer, the initiator stops allowing the
    // suite the responder will pick (AES-GCM-16-128, the first offered).
    let mut c = p.i.ep.config().clone();
    c.proposals
        .esp_encr
        .retain(|(t, k)| !(*t == crate::wire::TransformId::ENCR_AES_GCM_16 && *k == Some(128)));
    p.i.ep.set_config(c);
    p.run();
    assert_eq!(p.i.established().len(), 1);
    assert!(p.i.children.is_empty());
    assert_eq!(p.r.installs, 1);
    assert!(
        p.r.children.is_empty(),
        "the responder was asked to delete it"
    );
    assert!(p.r.has_event(|e| matches!(e, Event::ChildDeleted { .. })));
}

#[test]
fn create_child_and_child_sa_not_found() {
    let mut p = Pair::default();
    p.handshake();
    let mut out = Vec::new();
    p.i.ep.create_child(p.now, &p.rng, &mut out);
    p.i.absorb(out);
    p.run();
    assert_eq!(p.i.children.len(), 2);
    assert_eq!(p.r.children.len(), 2);
    assert_children_mirror(&p);
    assert_eq!(p.i.active.len(), 2);
    // The responder loses one Child SA without telling (e.g. a restart of its dataplane
    // state): the initiator's rekey gets CHILD_SA_NOT_FOUND, drops its half and creates a
    // fresh Child SA (§2.25).
    let victim_i = *p.i.children.keys().next().unwrap();
    let victim_r = p.i.children[&victim_i].outbound.spi;
    {
        let sa = p.r.ep.sas.values_mut().next().unwrap();
        let State::Established(e) = &mut sa.state else {
            panic!()
        };
        e.children.retain(|c| c.inbound != victim_r);
    }
    p.r.children.remove(&victim_r);
    let mut out = Vec::new();
    p.i.ep.rekey_child(p.now, victim_i, &p.rng, &mut out);
    p.i.absorb(out);
    p.run();
    assert!(p.i.has_event(|e| matches!(
        e,
        Event::ChildFailed {
            notify: NotifyType::CHILD_SA_NOT_FOUND
        }
    )));
    assert!(!p.i.children.contains_key(&victim_i));
    assert_eq!(p.i.children.len(), 2);
    assert_children_mirror(&p);
}

/// How many CREATE_CHILD_SA requests this side has sent.
fn create_child_requests(s: &Side) -> usize {
    s.sent_log
        .iter()
        .filter(|(_, b)| {
            let h = Header::parse(b).unwrap();
            h.exchange == ExchangeType::CREATE_CHILD_SA && !h.is_response()
        })
        .count()
}

#[test]
fn child_rekey_follows_invalid_ke_to_the_peers_pfs_group() {
    // §1.3: we lead with MODP-2048 and also offer our other PFS groups; a peer that only
    // takes MODP-1536 answers INVALID_KE_PAYLOAD naming it, and we retry with it at once.
    let mut ci = config(I_ADDR, R_ADDR);
    ci.proposals.pfs_initiate = Some(Group::Modp2048);
    let mut cr = config(R_ADDR, I_ADDR);
    cr.proposals.pfs = vec![Group::Modp1536];
    let mut p = Pair::new(ci, cr);
    p.handshake();
    rekey_child(&mut p, true);
    assert_children_mirror(&p);
    assert_eq!(create_child_requests(&p.i), 2, "one refused, one retried");
    assert!(p.r.has_event(|e| matches!(e, Event::ChildRekeyed { .. })));
    // The next rekey leads with the group the peer asked for: one exchange.
    rekey_child(&mut p, true);
    assert_children_mirror(&p);
    assert_eq!(create_child_requests(&p.i), 3);
}

#[test]
fn ike_rekey_follows_invalid_ke_to_the_peers_group() {
    let mut ci = config(I_ADDR, R_ADDR);
    ci.proposals.ike_dh = vec![Group::Ecp384, Group::Modp2048];
    let mut p = Pair::new(ci, config(R_ADDR, I_ADDR));
    p.handshake();
    let old = p.i.established()[0].clone();
    assert!(old.suite.contains("ECP"), "{}", old.suite);
    // The responder now only takes MODP-2048 for new IKE SAs.
    let mut cr = p.r.ep.config().clone();
    cr.proposals.ike_dh = vec![Group::Modp2048];
    p.r.ep.set_config(cr);
    let mut out = Vec::new();
    p.i.ep.rekey_ike(p.now, &p.rng, &mut out);
    p.i.absorb(out);
    p.run();
    let si = p.i.established();
    let sr = p.r.established();
    assert_eq!(si.len(), 1, "{si:?}");
    assert_eq!(sr.len(), 1, "{sr:?}");
    assert_ne!((si[0].spi_i, si[0].spi_r), (old.spi_i, old.spi_r));
    assert_eq!((si[0].spi_i, si[0].spi_r), (sr[0].spi_i, sr[0].spi_r));
    assert!(si[0].suite.contains("MODP"), "{}", si[0].suite);
    assert_eq!(si[0].children.len(), 1);
    assert_eq!(create_child_requests(&p.i), 2, "one refused, one retried");
}

#[test]
fn child_rekey_is_answered_at_the_child_cap() {
    let mut p = Pair::default();
    p.handshake();
    while p.r.children.len() < ike_sa::MAX_CHILDREN {
        let (req, _) = new_child_request(&p, None);
        let answer = inject(&mut p, ExchangeType::CREATE_CHILD_SA, &req).unwrap();
        assert_eq!(notify_in(&answer), None);
    }
    // A new Child SA is refused, but a rekey of the first one goes through.
    let (req, _) = new_child_request(&p, None);
    let answer = inject(&mut p, ExchangeType::CREATE_CHILD_SA, &req).unwrap();
    assert_eq!(notify_in(&answer), Some(NotifyType::NO_ADDITIONAL_SAS));
    let (old, new) = rekey_child(&mut p, true);
    assert!(!p.r.children.values().any(|c| c.outbound.spi == old));
    assert!(p.r.children.values().any(|c| c.outbound.spi == new));
    assert_eq!(p.r.children.len(), ike_sa::MAX_CHILDREN);
}

#[test]
fn peer_behind_nat_moving_is_followed_and_announced() {
    let mut p = Pair::default();
    p.handshake();
    assert!(p.r.moved.is_empty());
    // The initiator's DPD arrives from a new NAT mapping (another source port).
    p.now += Duration::from_secs(31);
    let mut out = Vec::new();
    p.i.ep.poll(p.now, &p.rng, &mut out);
    p.i.absorb(out);
    let sent = std::mem::take(&mut p.i.wire);
    assert_eq!(sent.len(), 1);
    let (path, bytes) = &sent[0];
    let mut moved = *path;
    moved.local.set_port(31_000);
    p.deliver(true, moved, bytes);
    assert_eq!(p.r.moved, vec![moved.reversed()]);
    // The answer goes back to where the request came from, and so does the next request.
    assert_eq!(p.r.wire.len(), 1);
    assert_eq!(p.r.wire[0].0, moved.reversed());
    assert_eq!(p.r.established()[0].path, moved.reversed());
}

#[test]
fn answer_to_a_request_that_ended_the_sa_is_resent() {
    let mut p = Pair::default();
    p.handshake();
    let mut out = Vec::new();
    p.i.ep.delete_ike(p.now, &p.rng, &mut out);
    p.i.absorb(out);
    let req = std::mem::take(&mut p.i.wire);
    assert_eq!(req.len(), 1);
    p.deliver(true, req[0].0, &req[0].1);
    assert!(p.r.ep.status().is_empty());
    // The answer is lost; the initiator retransmits the same request (§2.3).
    let first = std::mem::take(&mut p.r.wire);
    assert_eq!(first.len(), 1);
    p.now += Duration::from_millis(600);
    let mut out = Vec::new();
    p.i.ep.poll(p.now, &p.rng, &mut out);
    p.i.absorb(out);
    let retx = std::mem::take(&mut p.i.wire);
    assert_eq!(retx.len(), 1);
    assert_eq!(retx[0].1, req[0].1);
    p.deliver(true, retx[0].0, &retx[0].1);
    assert_eq!(
        p.r.wire.len(),
        1,
        "the retransmitted Delete is answered again"
    );
    assert_eq!(p.r.wire[0].1, first[0].1);
    p.run();
    assert!(p.i.ep.status().is_empty());
    // A different message for the gone SA gets nothing; nor does the same one much later.
    let mut other = retx[0].1.clone();
    let last = other.len() - 1;
    other[last] ^= 1;
    p.deliver(true, retx[0].0, &other);
    assert!(p.r.wire.is_empty());
    p.now += Duration::from_secs(31);
    p.deliver(true, retx[0].0, &retx[0].1);
    assert!(p.r.wire.is_empty());
}

/// The payloads of a message the responder sent, opened with the initiator's keys.
fn open_at_i(p: &Pair, bytes: &[u8]) -> Vec<Payload> {
    let sa =
        p.i.ep
            .sas
            .values()
            .find(|s| matches!(&s.state, State::Established(_)))
            .unwrap();
    let State::Established(e) = &sa.state else {
        unreachable!()
    };
    let enc = parse_message(bytes).unwrap().encrypted.unwrap();
    let plain = e.recv.open(bytes, enc.iv_offset).unwrap();
    parse_payloads(enc.first_inner, &plain).unwrap()
}

#[test]
fn crossing_child_deletes_are_answered_without_delete_payloads() {
    let mut p = Pair::default();
    p.handshake();
    let spi_i = *p.i.children.keys().next().unwrap();
    let spi_r = *p.r.children.keys().next().unwrap();
    let mut out = Vec::new();
    p.i.ep.delete_child(p.now, spi_i, &p.rng, &mut out);
    p.i.absorb(out);
    let mut out = Vec::new();
    p.r.ep.delete_child(p.now, spi_r, &p.rng, &mut out);
    p.r.absorb(out);
    let from_i = std::mem::take(&mut p.i.wire);
    let from_r = std::mem::take(&mut p.r.wire);
    assert_eq!((from_i.len(), from_r.len()), (1, 1));
    p.deliver(true, from_i[0].0, &from_i[0].1);
    let answer = std::mem::take(&mut p.r.wire);
    assert_eq!(answer.len(), 1);
    let payloads = open_at_i(&p, &answer[0].1);
    assert!(
        !payloads.iter().any(|x| matches!(x, Payload::Delete(_))),
        "{payloads:?}"
    );
    p.deliver(false, answer[0].0, &answer[0].1);
    p.deliver(false, from_r[0].0, &from_r[0].1);
    p.run();
    assert!(p.i.children.is_empty() && p.r.children.is_empty());
    assert_eq!(p.i.established().len(), 1);
    assert_eq!(p.r.established().len(), 1);
    // An ordinary Delete is still answered with the pair's other SPI.
    let mut p = Pair::default();
    p.handshake();
    let spi_i = *p.i.children.keys().next().unwrap();
    let mut out = Vec::new();
    p.i.ep.delete_child(p.now, spi_i, &p.rng, &mut out);
    p.i.absorb(out);
    let req = std::mem::take(&mut p.i.wire);
    p.deliver(true, req[0].0, &req[0].1);
    let answer = std::mem::take(&mut p.r.wire);
    let payloads = open_at_i(&p, &answer[0].1);
    assert!(payloads.iter().any(|x| matches!(x, Payload::Delete(_))));
}

/// Both ends dial at once and their IKE_AUTH requests cross (initiator mode on both, or a
/// router that initiates too): INITIAL_CONTACT comes too early to drop anything, both IKE SAs
/// exist on both ends; each shell deletes the one whose highest SPI is lower
/// (`delete_ike_sa`), and one IKE SA with one Child SA remains, the same on both ends.
#[test]
fn simultaneous_initiation_leaves_one_ike_sa() {
    let mut p = Pair::default();
    let mut out = Vec::new();
    p.i.ep.initiate(p.now, p.path, &p.rng, &mut out);
    p.i.absorb(out);
    let mut out = Vec::new();
    p.r.ep.initiate(p.now, p.path.reversed(), &p.rng, &mut out);
    p.r.absorb(out);
    p.run();
    let spis = |s: &Side| -> Vec<(u64, u64)> {
        s.established().iter().map(|x| (x.spi_i, x.spi_r)).collect()
    };
    let mut all: Vec<(u64, u64)> = spis(&p.i).into_iter().chain(spis(&p.r)).collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 2, "i: {:x?}, r: {:x?}", spis(&p.i), spis(&p.r));
    assert_eq!((spis(&p.i).len(), spis(&p.r).len()), (2, 2));
    let loser = *all.iter().min_by_key(|(a, b)| (*a).max(*b)).unwrap();
    for side in [&mut p.i, &mut p.r] {
        let mut out = Vec::new();
        assert!(side.ep.delete_ike_sa(p.now, loser, &p.rng, &mut out));
        side.absorb(out);
    }
    p.run();
    p.advance_running(Duration::from_secs(20), Duration::from_secs(1));
    let (si, sr) = (spis(&p.i), spis(&p.r));
    assert_eq!(
        si.len(),
        1,
        "initiator side: {si:x?}, responder side {sr:x?}"
    );
    assert_eq!(si, sr, "both ends keep the same IKE SA");
    assert_eq!(p.i.children.len(), 1);
    assert_children_mirror(&p);
    // DPD keeps working on the one left.
    p.advance_running(Duration::from_secs(120), Duration::from_secs(5));
    assert_eq!(spis(&p.i), si);
    assert!(!p.i.has_event(|e| matches!(e, Event::PeerDead { .. })));
}

/// The peer's IKE SA came up while our IKE_SA_INIT is unanswered: abandoning ours sends nothing
/// and leaves the peer's SA alone.
#[test]
fn an_unanswered_initiation_can_be_abandoned() {
    let mut p = Pair::default();
    p.handshake();
    let mut out = Vec::new();
    p.r.ep.initiate(p.now, p.path.reversed(), &p.rng, &mut out);
    assert_eq!(p.r.ep.abandon_initiations(), 1);
    assert_eq!(p.r.ep.abandon_initiations(), 0);
    assert_eq!(p.r.ep.status().len(), 1, "the established SA stays");
    assert_eq!(p.r.established().len(), 1);
}

#[test]
fn delete_ike_sa_names_one_sa() {
    let mut p = Pair::default();
    p.handshake();
    let sa = p.i.established()[0].clone();
    let mut out = Vec::new();
    assert!(
        !p.i.ep
            .delete_ike_sa(p.now, (sa.spi_i, sa.spi_r ^ 1), &p.rng, &mut out)
    );
    assert!(out.is_empty());
    assert!(
        p.i.ep
            .delete_ike_sa(p.now, (sa.spi_i, sa.spi_r), &p.rng, &mut out)
    );
    p.i.absorb(out);
    p.run();
    assert!(p.i.established().is_empty() && p.r.established().is_empty());
    assert!(p.i.children.is_empty() && p.r.children.is_empty());
}

/// An IKE_SA_INIT request as a real initiator makes it (with its DH value), reused with other
/// SPIi values by the flood tests below: the responder does its full work for each.
fn init_template() -> Vec<u8> {
    let mut p = Pair::default();
    p.initiate();
    p.i.wire.remove(0).1
}

fn with_spi(template: &[u8], spi_i: u64) -> Vec<u8> {
    let mut m = template.to_vec();
    m[..8].copy_from_slice(&spi_i.to_be_bytes());
    m
}

/// The same request with `cookie` as its first payload (§2.6).
fn with_cookie(request: &[u8], cookie: &[u8]) -> Vec<u8> {
    let mut parsed = parse_message(request).unwrap();
    parsed
        .payloads
        .insert(0, msg::notify(NotifyType::COOKIE, cookie.to_vec()));
    crate::wire::encode_message(parsed.header, &parsed.payloads)
}

/// What the responder did with one IKE_SA_INIT request.
#[derive(Debug, Default)]
struct Answer {
    /// The COOKIE it asked for.
    cookie: Option<Vec<u8>>,
    /// A full answer (SA, KE, Nonce).
    full: Option<Vec<u8>>,
    drops: Vec<DropReason>,
}

fn offer(ep: &mut Endpoint, now: Instant, from: SocketAddr, m: &[u8]) -> Answer {
    let rng = SystemRandom::new();
    let path = Path {
        local: SocketAddr::from((R_ADDR, 500)),
        remote: from,
    };
    let mut out = Vec::new();
    ep.handle(now, path, m, &rng, &mut out);
    let mut a = Answer::default();
    for o in out {
        match o {
            Output::Send { bytes, .. } => {
                let parsed = parse_message(&bytes).unwrap();
                match &parsed.payloads[..] {
                    [Payload::Notify(n)] if n.kind == NotifyType::COOKIE => {
                        a.cookie = Some(n.data.clone())
                    }
                    [Payload::Sa(_), Payload::Ke(_), Payload::Nonce(_), ..] => a.full = Some(bytes),
                    other => panic!("unexpected answer {other:?}"),
                }
            }
            Output::Event(Event::Dropped { reason }) => a.drops.push(reason),
            _ => {}
        }
    }
    a
}

#[test]
fn retransmitted_ike_sa_init_costs_no_dh() {
    // §2.1: a retransmitted request gets the same response again; ours is cached with the SA,
    // so the DH key pair (and the shared secret) is made once. Counted by the core and seen
    // in the bytes (a new key pair would change the KE payload).
    let mut r = Endpoint::new(config(R_ADDR, I_ADDR), psk("sesame"));
    let now = Instant::now();
    let from = SocketAddr::from((I_ADDR, 500));
    let init = init_template();
    let first = offer(&mut r, now, from, &init).full.expect("a full answer");
    assert_eq!(r.stats().init_dh, 1);
    for k in 1..=5 {
        let again = offer(&mut r, now + Duration::from_millis(500 * k), from, &init);
        assert_eq!(again.full.as_deref(), Some(first.as_slice()), "same bytes");
        assert!(again.drops.is_empty());
    }
    assert_eq!(r.stats().init_dh, 1, "no DH work for retransmissions");
    assert_eq!(r.status().len(), 1);
    // The same SPIi from another port or address is not a retransmission (and the same SPIi
    // with other bytes is not answered at all): each new request costs one DH, no more.
    let other = offer(&mut r, now, SocketAddr::from((I_ADDR, 4500)), &init);
    assert!(other.drops.is_empty() && other.full.is_some());
    assert_eq!(r.stats().init_dh, 2);
    let mut changed = init.clone();
    *changed.last_mut().unwrap() ^= 1;
    let dup = offer(&mut r, now, from, &changed);
    assert_eq!(dup.drops, [DropReason::Duplicate]);
    assert_eq!(r.stats().init_dh, 2);
}

#[test]
fn flood_from_many_sources_stays_within_the_limits() {
    let limits = Limits {
        max_sas: 48,
        max_half_open: 32,
        half_open_per_source: 2,
        cookie_threshold: 8,
    };
    let mut r = Endpoint::new(config(R_ADDR, I_ADDR), psk("sesame")).with_limits(limits);
    let template = init_template();
    let now = Instant::now();
    let mut spi = 0x1000u64;
    let mut drops: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut admitted = 0u64;
    let per_source = |r: &Endpoint| {
        let mut m: BTreeMap<std::net::IpAddr, usize> = BTreeMap::new();
        for s in r.status() {
            *m.entry(s.path.remote.ip()).or_default() += 1;
        }
        m.into_values().max().unwrap_or(0)
    };
    // 300 sources that answer cookies, six requests each (distinct SPIi), one source after
    // the other: the per-source cap, then the total cap, must hold at every step.
    for source in 0..300u32 {
        let from = SocketAddr::from((Ipv4Addr::from(0x0a00_0000 + source), 500));
        for _ in 0..6 {
            spi += 1;
            let req = with_spi(&template, spi);
            let mut a = offer(&mut r, now, from, &req);
            if let Some(c) = a.cookie.take() {
                let again = offer(&mut r, now, from, &with_cookie(&req, &c));
                a.drops.extend(again.drops);
                a.full = again.full;
                assert!(again.cookie.is_none(), "a valid cookie is not asked again");
            }
            admitted += u64::from(a.full.is_some());
            for d in a.drops {
                *drops.entry(d.as_str()).or_default() += 1;
            }
            let st = r.stats();
            assert!(st.half_open <= limits.max_half_open, "{st:?}");
            assert!(r.status().len() <= limits.max_sas);
            assert!(per_source(&r) <= limits.half_open_per_source);
            // State kept on the side is bounded by the SAs held.
            let (verified, closed) = r.side_state();
            assert!(verified <= st.half_open);
            assert!(closed <= endpoint::MAX_CLOSED_FOR_TESTS);
        }
    }
    let st = r.stats();
    eprintln!("{st:?}; admitted {admitted}; drops {drops:?}");
    assert_eq!(st.half_open, limits.max_half_open, "the cap is reached");
    // One DH per admitted request, none for the rest.
    assert_eq!(st.init_dh, admitted);
    for reason in ["cookie_required", "half_open_per_source", "half_open_cap"] {
        assert!(
            drops.get(reason).is_some_and(|n| *n > 0),
            "{reason}: {drops:?}"
        );
    }
    assert!(st.cookies_sent >= drops["cookie_required"] as u64);
    // Every half-open SA holds what it must (two messages, keys): its size does not depend on
    // the flood, so the total is bounded by the cap.
    for s in r.status() {
        assert_eq!(s.state, "await_auth");
    }
    // The cap is full: a legitimate initiator is refused until half-open SAs expire (30 s),
    // then gets in.
    let mut p = Pair::default();
    p.r.ep = r;
    p.now = now;
    p.initiate();
    let (path, first) = p.i.wire.remove(0);
    p.deliver(true, path, &first);
    assert!(p.r.has_event(|e| matches!(
        e,
        Event::Dropped {
            reason: DropReason::HalfOpenCap
        }
    )));
    p.i.wire.clear();
    p.r.wire.clear();
    p.advance(Duration::from_secs(31));
    assert_eq!(p.r.ep.stats().half_open, 0, "expired");
    p.i.ep = Endpoint::new(config(I_ADDR, R_ADDR), psk("sesame"));
    p.handshake();
    assert_eq!(p.i.established().len(), 1);
}

#[test]
fn a_spoofing_flood_cannot_keep_a_real_peer_out() {
    // Spoofed requests (nobody answers their COOKIEs) from 200 addresses, the real initiator's
    // among them: they hold at most `cookie_threshold` SAs in all and `half_open_per_source`
    // in the real peer's name, which it takes back by returning a cookie (rule 4 of `Limits`).
    let mut p = Pair::default();
    let limits = p.r.ep.limits();
    let template = init_template();
    let mut spi = 0x5000u64;
    for round in 0..5 {
        for source in 0..200u32 {
            spi += 1;
            let from = if source == 0 {
                SocketAddr::from((I_ADDR, 500 + round))
            } else {
                SocketAddr::from((Ipv4Addr::from(0x0a00_0000 + source), 500))
            };
            offer(&mut p.r.ep, p.now, from, &with_spi(&template, spi));
        }
    }
    let st = p.r.ep.stats();
    assert!(st.half_open <= limits.cookie_threshold, "{st:?}");
    let spoofed_as_peer =
        p.r.ep
            .status()
            .iter()
            .filter(|s| s.path.remote.ip() == std::net::IpAddr::V4(I_ADDR))
            .count();
    assert!(spoofed_as_peer >= 1 && spoofed_as_peer <= limits.half_open_per_source);
    assert!(st.cookies_sent >= 900, "{st:?}");
    let dh_before = st.init_dh;
    p.handshake();
    assert_eq!(p.i.established().len(), 1, "the real peer got in");
    assert!(p.i.sent_log.iter().any(|(_, b)| {
        parse_message(b)
            .unwrap()
            .payloads
            .first()
            .is_some_and(|x| matches!(x, Payload::Notify(n) if n.kind == NotifyType::COOKIE))
    }));
    assert_eq!(p.r.ep.stats().init_dh, dh_before + 1);
}

#[test]
fn sa_cap_and_initial_contact_off() {
    // Initiators that share one ID and send no INITIAL_CONTACT (a load generator) keep their
    // SAs side by side, up to `max_sas`.
    let limits = Limits {
        max_sas: 3,
        ..Limits::default()
    };
    let mut p = Pair::default();
    p.r.ep = Endpoint::new(config(R_ADDR, I_ADDR), psk("sesame")).with_limits(limits);
    let mut ci = config(I_ADDR, R_ADDR);
    ci.initial_contact = false;
    for _ in 0..3 {
        p.i = Side::new(ci.clone(), "sesame");
        p.handshake();
        assert_eq!(p.i.established().len(), 1);
    }
    assert_eq!(p.r.established().len(), 3, "no SA replaced");
    p.i = Side::new(ci.clone(), "sesame");
    p.initiate();
    p.run();
    assert!(p.i.established().is_empty());
    assert!(p.r.has_event(|e| matches!(
        e,
        Event::Dropped {
            reason: DropReason::SaCap
        }
    )));
    // With INITIAL_CONTACT (the default) the next one replaces all three (§2.4).
    p.r.ep = Endpoint::new(config(R_ADDR, I_ADDR), psk("sesame"));
    for _ in 0..3 {
        p.i = Side::new(ci.clone(), "sesame");
        p.handshake();
    }
    p.i = Side::new(config(I_ADDR, R_ADDR), "sesame");
    p.handshake();
    assert_eq!(p.r.established().len(), 1);
}

mod snapshot;
