//! Handing an established IKE SA from one core to another (`core::snapshot`): the new core
//! carries on with the peer as if nothing happened.

use std::time::{SystemTime, UNIX_EPOCH};

use super::*;
use crate::core::snapshot::{Bytes, IkeSaSnapshot, SnapshotError};

/// The wall clock at the pair's start (unix ms).
const WALL0_MS: u64 = 1_800_000_000_000;

/// The wall-clock time of `p.now`, the pair having started at `t0`.
fn wall(p: &Pair, t0: Instant) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(WALL0_MS) + (p.now - t0)
}

fn json_round_trip(snaps: &[IkeSaSnapshot]) -> Vec<IkeSaSnapshot> {
    let text = serde_json::to_string(snaps).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn r_config() -> Config {
    config(R_ADDR, I_ADDR)
}

/// Exports the responder, sends the snapshot through JSON, imports it into a fresh core with
/// the same configuration and key, and makes that core the responder (with the shell's
/// installed Child SAs, which the dataplane carries over itself). Returns the old side.
fn hand_over(p: &mut Pair, t0: Instant, cr: Config, activate: bool) -> Side {
    let snaps = p.r.ep.export(p.now, wall(p, t0));
    assert_eq!(snaps.len(), 1);
    let snaps = json_round_trip(&snaps);
    let mut new = Side::new(cr, "sesame");
    new.ep.import(snaps, p.now, wall(p, t0)).unwrap();
    assert!(new.ep.is_passive());
    if activate {
        new.ep.set_passive(false, p.now);
        assert!(!new.ep.is_passive());
    }
    new.children = std::mem::take(&mut p.r.children);
    new.active = std::mem::take(&mut p.r.active);
    new.installs = 0;
    std::mem::replace(&mut p.r, new)
}

fn headers(log: &[(Path, Vec<u8>)]) -> Vec<Header> {
    log.iter().map(|(_, b)| Header::parse(b).unwrap()).collect()
}

fn dropped(events: &[Event]) -> Vec<DropReason> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Dropped { reason } => Some(*reason),
            _ => None,
        })
        .collect()
}

fn informational_done(e: &Event) -> bool {
    matches!(
        e,
        Event::ExchangeDone {
            exchange: ExchangeType::INFORMATIONAL,
            ok: true
        }
    )
}

#[test]
fn new_owner_answers_dpd_with_the_right_message_ids() {
    let mut p = Pair::default();
    let t0 = p.now;
    p.handshake();
    // One DPD each way through the old owner first, so that no ID is at its start.
    p.advance_running(Duration::from_secs(31), Duration::from_secs(31));
    let spis = {
        let s = p.i.established();
        (s[0].spi_i, s[0].spi_r)
    };
    let snap = p.r.ep.export(p.now, wall(&p, t0)).remove(0);
    assert_eq!(snap.spis(), spis);
    assert_eq!(snap.next_recv, 3, "IKE_AUTH (1) and one DPD (2) answered");
    let our_next = snap.next_send;
    assert!(our_next >= 1);
    hand_over(&mut p, t0, r_config(), true);
    let (i_events, i_sent) = (p.i.events.len(), p.i.sent_log.len());
    let done_before = p.i.count_events(informational_done);
    p.advance(Duration::from_secs(31));
    let dpd = headers(&p.i.sent_log[i_sent..])
        .into_iter()
        .find(|h| !h.is_response())
        .expect("the initiator's DPD");
    assert_eq!(dpd.message_id, 3);
    p.run();
    let r_out = headers(&p.r.sent_log);
    assert!(
        r_out
            .iter()
            .any(|h| h.is_response() && h.message_id == 3 && (h.spi_i, h.spi_r) == spis),
        "the new owner answered DPD 3: {r_out:?}"
    );
    // The new owner's own DPD continues the old owner's IDs, and the peer takes it.
    let first_req = r_out.iter().find(|h| !h.is_response()).expect("its DPD");
    assert_eq!(first_req.message_id, our_next);
    assert!(p.i.count_events(informational_done) > done_before);
    assert!(p.r.has_event(informational_done));
    assert_eq!(dropped(&p.i.events[i_events..]), vec![]);
    assert_eq!(dropped(&p.r.events), vec![]);
    // Still the same single IKE SA on both sides.
    assert_eq!(p.i.established().len(), 1);
    assert_eq!(p.r.established().len(), 1);
    assert_eq!(
        (p.r.established()[0].spi_i, p.r.established()[0].spi_r),
        spis
    );
}

#[test]
fn new_owner_rekeys_children_both_ways() {
    let mut p = Pair::default();
    let t0 = p.now;
    p.handshake();
    hand_over(&mut p, t0, r_config(), true);
    // Peer-initiated: the new owner derives the new keys from the imported SK_d.
    let (old, new) = rekey_child(&mut p, true);
    assert_ne!(old, new);
    assert_children_mirror(&p);
    assert_eq!(p.r.installs, 1, "the new owner installed the rekeyed SA");
    // Initiated by the new owner.
    let before = *p.r.children.keys().next().unwrap();
    rekey_child(&mut p, false);
    assert_children_mirror(&p);
    assert!(!p.r.children.contains_key(&before));
    assert_eq!(p.r.installs, 2);
    assert_eq!(dropped(&p.r.events), vec![]);
    assert_eq!(p.i.count_events(|e| matches!(e, Event::Dropped { .. })), 0);
}

#[test]
fn new_owner_rekeys_the_ike_sa_both_ways() {
    let mut p = Pair::default();
    let t0 = p.now;
    p.handshake();
    let old = p.r.established()[0].clone();
    hand_over(&mut p, t0, r_config(), true);
    let mut out = Vec::new();
    p.i.ep.rekey_ike(p.now, &p.rng, &mut out);
    p.i.absorb(out);
    p.run();
    let (si, sr) = (p.i.ep.status(), p.r.ep.status());
    assert_eq!(sr.len(), 1, "{sr:?}");
    assert_eq!(si.len(), 1);
    assert_ne!((sr[0].spi_i, sr[0].spi_r), (old.spi_i, old.spi_r));
    assert_eq!((si[0].spi_i, si[0].spi_r), (sr[0].spi_i, sr[0].spi_r));
    assert_eq!(sr[0].children.len(), 1);
    // The new IKE SA's keys came from the imported SK_d: a child rekey on it works.
    rekey_child(&mut p, false);
    assert_children_mirror(&p);
    // The new owner rekeys the IKE SA in turn.
    let mut out = Vec::new();
    p.r.ep.rekey_ike(p.now, &p.rng, &mut out);
    p.r.absorb(out);
    p.run();
    assert_eq!(p.r.ep.status().len(), 1);
    assert!(p.r.ep.status()[0].initiator);
    rekey_child(&mut p, true);
    assert_children_mirror(&p);
    assert_eq!(dropped(&p.r.events), vec![]);
}

#[test]
fn retransmitted_request_is_answered_from_the_imported_cache() {
    let mut p = Pair::default();
    let t0 = p.now;
    p.handshake();
    p.advance_running(Duration::from_secs(31), Duration::from_secs(31));
    let (path, request) =
        p.i.sent_log
            .iter()
            .find(|(_, b)| {
                let h = Header::parse(b).unwrap();
                !h.is_response() && h.message_id == 2
            })
            .cloned()
            .expect("the initiator's DPD");
    let answer =
        p.r.sent_log
            .iter()
            .find(|(_, b)| {
                let h = Header::parse(b).unwrap();
                h.is_response() && h.message_id == 2
            })
            .map(|(_, b)| b.clone())
            .expect("the old owner's answer");
    hand_over(&mut p, t0, r_config(), false);
    // Even a passive core answers a retransmission it is handed (the shell claims first).
    p.deliver(true, path, &request);
    assert_eq!(p.r.sent_log.len(), 1);
    assert_eq!(
        p.r.sent_log[0].1, answer,
        "byte for byte the old owner's answer"
    );
    assert_eq!(dropped(&p.r.events), vec![]);
    // A different request with the old ID is not answered from the cache.
    let mut forged = request.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    p.deliver(true, path, &forged);
    assert_eq!(p.r.sent_log.len(), 1);
    assert_eq!(dropped(&p.r.events), vec![DropReason::BadIcv]);
}

/// The old owner's DPD is in flight when the new owner takes over: the new owner sends it
/// again (same bytes) when activated and takes its answer.
#[test]
fn pending_dpd_of_the_old_owner_completes_at_the_new_one() {
    let mut cr = r_config();
    cr.dpd_interval = Duration::from_secs(10);
    let mut p = Pair::new(config(I_ADDR, R_ADDR), cr.clone());
    let t0 = p.now;
    p.handshake();
    p.advance(Duration::from_secs(11));
    let in_flight = std::mem::take(&mut p.r.wire);
    assert_eq!(in_flight.len(), 1);
    let h = Header::parse(&in_flight[0].1).unwrap();
    assert!(!h.is_response() && h.message_id == 0);
    let snap = p.r.ep.export(p.now, wall(&p, t0)).remove(0);
    let pending = snap.pending.as_ref().expect("the DPD is pending");
    assert_eq!(pending.message_id, 0);
    assert_eq!(pending.datagrams, vec![Bytes(in_flight[0].1.clone())]);
    hand_over(&mut p, t0, cr, true);
    // Activation restarts the retransmissions: the next poll sends it again.
    p.advance(Duration::from_millis(1));
    assert_eq!(p.r.wire.len(), 1);
    assert_eq!(p.r.wire[0].1, in_flight[0].1, "the same bytes");
    assert!(p.r.has_event(|e| matches!(e, Event::Retransmit { .. })));
    // The original arrives too (the peer answers it, then the retransmission from cache).
    p.r.wire.insert(0, in_flight[0].clone());
    p.run();
    assert_eq!(p.r.count_events(informational_done), 1);
    assert_eq!(dropped(&p.r.events), vec![DropReason::UnexpectedResponse]);
    // The window moved on: the next request has ID 1 and the peer takes it.
    let i_events = p.i.events.len();
    rekey_child(&mut p, false);
    assert_children_mirror(&p);
    let ids: Vec<u32> = headers(&p.r.sent_log)
        .into_iter()
        .filter(|h| !h.is_response() && h.exchange == ExchangeType::CREATE_CHILD_SA)
        .map(|h| h.message_id)
        .collect();
    assert_eq!(ids, vec![1]);
    assert_eq!(dropped(&p.i.events[i_events..]), vec![]);
}

/// The old owner's Child SA rekey is in flight: its DH key stayed with the old owner. The new
/// owner retransmits it, takes the answer (the IDs move on), deletes the SA the peer made
/// (it cannot derive its keys) and rekeys again soon.
#[test]
fn pending_child_rekey_of_the_old_owner_is_deleted_and_redone() {
    for pfs in [None, Some(Group::Ecp384)] {
        let mut cr = r_config();
        cr.proposals.pfs_initiate = pfs;
        let mut p = Pair::new(config(I_ADDR, R_ADDR), cr.clone());
        let t0 = p.now;
        p.handshake();
        let old_r = *p.r.children.keys().next().unwrap();
        let old_i = *p.i.children.keys().next().unwrap();
        let mut out = Vec::new();
        p.r.ep.rekey_child(p.now, old_r, &p.rng, &mut out);
        p.r.absorb(out);
        let in_flight = std::mem::take(&mut p.r.wire);
        assert_eq!(in_flight.len(), 1);
        hand_over(&mut p, t0, cr, true);
        p.advance(Duration::from_millis(1));
        assert_eq!(p.r.wire.len(), 1);
        assert_eq!(p.r.wire[0].1, in_flight[0].1, "the same bytes");
        p.run();
        // The peer had made the SA and deleted it again at our request; nothing installed
        // here; the old pair stands on both sides.
        assert!(p.i.installs >= 2, "the peer made the rekeyed SA");
        assert_eq!(p.r.installs, 0);
        assert_eq!(
            p.i.children.keys().copied().collect::<Vec<_>>(),
            vec![old_i]
        );
        assert_eq!(
            p.r.children.keys().copied().collect::<Vec<_>>(),
            vec![old_r]
        );
        assert_children_mirror(&p);
        let ids: Vec<(ExchangeType, u32)> = headers(&p.r.sent_log)
            .into_iter()
            .filter(|h| !h.is_response())
            .map(|h| (h.exchange, h.message_id))
            .collect();
        assert_eq!(
            ids,
            vec![
                (ExchangeType::CREATE_CHILD_SA, 0),
                (ExchangeType::INFORMATIONAL, 1)
            ]
        );
        assert_eq!(dropped(&p.i.events), vec![]);
        assert_eq!(dropped(&p.r.events), vec![]);
        // Soon (the retry time, 10 to 40 s) the new owner rekeys the old SA itself.
        p.advance_running(Duration::from_secs(45), Duration::from_secs(1));
        assert_eq!(p.r.children.len(), 1);
        assert!(!p.r.children.contains_key(&old_r), "rekeyed");
        assert_eq!(p.r.installs, 1);
        assert_children_mirror(&p);
        assert!(p.r.has_event(|e| matches!(
            e,
            Event::ChildRekeyed { old_inbound_spi, .. } if *old_inbound_spi == old_r
        )));
    }
}

/// The old owner's IKE SA rekey is in flight. Its answer completes the exchange at the new
/// owner (message IDs move on) but makes no IKE SA there: its keys need the DH key that
/// stayed with the old owner. The rekey is retried later (see `Established::
/// on_orphan_response` for what a peer that moved its Child SAs does then).
#[test]
fn pending_ike_rekey_of_the_old_owner_completes_the_exchange() {
    let mut p = Pair::default();
    let t0 = p.now;
    p.handshake();
    let mut out = Vec::new();
    p.r.ep.rekey_ike(p.now, &p.rng, &mut out);
    p.r.absorb(out);
    let in_flight = std::mem::take(&mut p.r.wire);
    assert_eq!(in_flight.len(), 1);
    let before = p.r.ep.export(p.now, wall(&p, t0)).remove(0);
    hand_over(&mut p, t0, r_config(), true);
    p.advance(Duration::from_millis(1));
    assert_eq!(p.r.wire, in_flight, "the same bytes again");
    p.run();
    assert_eq!(dropped(&p.r.events), vec![]);
    let after = p.r.ep.export(p.now, wall(&p, t0));
    assert_eq!(after.len(), 1, "no IKE SA derived from the orphaned rekey");
    assert_eq!(after[0].spis(), before.spis());
    assert_eq!(after[0].next_send, before.next_send);
    assert!(after[0].pending.is_none(), "the exchange is done");
    assert!(
        after[0].rekey_at_ms <= to_ms(&p, t0) + 41_000,
        "the rekey is tried again soon"
    );
    assert_eq!(
        p.r.children.len(),
        1,
        "the Child SA is still installed here"
    );
}

fn to_ms(p: &Pair, t0: Instant) -> u64 {
    u64::try_from(wall(p, t0).duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

/// A passive core sends nothing of its own across DPD, Child SA and IKE SA rekey times,
/// where the active old owner does; activated, it sends at once.
#[test]
fn passive_core_sends_nothing_on_poll() {
    let mut cr = r_config();
    cr.child_lifetime = Duration::from_secs(300);
    cr.ike_lifetime = Duration::from_secs(300);
    let mut p = Pair::new(config(I_ADDR, R_ADDR), cr.clone());
    let t0 = p.now;
    p.handshake();
    let mut old = hand_over(&mut p, t0, cr, false);
    let mut old_sent = 0;
    for _ in 0..290 {
        p.advance(Duration::from_secs(1));
        p.i.wire.clear();
        let mut out = Vec::new();
        old.ep.poll(p.now, &p.rng, &mut out);
        old_sent += out
            .iter()
            .filter(|o| matches!(o, Output::Send { .. }))
            .count();
    }
    assert!(old_sent > 0, "the active old owner would have sent");
    assert_eq!(p.r.sent_log, vec![], "the passive core sent nothing");
    assert_eq!(p.r.established().len(), 1, "no DPD declared the peer dead");
    assert_eq!(p.r.children.len(), 1);
    p.r.ep.set_passive(false, p.now);
    p.advance(Duration::from_millis(1));
    assert!(!p.r.sent_log.is_empty(), "activated, it rekeys at once");
}

/// Expiry of a passive SA: its Child SAs are retired (the shell removes ESP), then the IKE SA
/// goes, without a Delete.
#[test]
fn passive_expiry_retires_children_silently() {
    let mut cr = r_config();
    cr.child_lifetime = Duration::from_secs(100);
    cr.ike_lifetime = Duration::from_secs(200);
    let mut p = Pair::new(config(I_ADDR, R_ADDR), cr.clone());
    let t0 = p.now;
    p.handshake();
    hand_over(&mut p, t0, cr, false);
    let child = *p.r.children.keys().next().unwrap();
    for _ in 0..99 {
        p.advance(Duration::from_secs(1));
        p.i.wire.clear();
    }
    assert_eq!(p.r.children.len(), 1);
    p.advance(Duration::from_secs(2));
    assert!(p.r.children.is_empty(), "retired at its hard lifetime");
    assert!(p.r.has_event(
        |e| matches!(e, Event::ChildDeleted { inbound_spi, .. } if *inbound_spi == child)
    ));
    assert_eq!(p.r.established().len(), 1);
    for _ in 0..100 {
        p.advance(Duration::from_secs(1));
        p.i.wire.clear();
    }
    assert!(p.r.ep.status().is_empty());
    assert!(p.r.has_event(|e| matches!(
        e,
        Event::IkeDeleted {
            reason: DeleteReason::Expired,
            ..
        }
    )));
    assert_eq!(p.r.sent_log, vec![], "no Delete, nothing at all");
    assert_eq!(p.r.ep.next_timer(), None);
}

/// Export, import elsewhere (another `Instant` base for the same wall clock), export again:
/// the same snapshot. Import replaces established SAs silently and keeps half-open ones.
#[test]
fn export_import_export_is_the_identity() {
    let mut p = Pair::default();
    let t0 = p.now;
    p.handshake();
    rekey_child(&mut p, true);
    p.advance_running(Duration::from_secs(31), Duration::from_secs(31));
    let a = p.r.ep.export(p.now, wall(&p, t0));
    let mut other = Side::new(r_config(), "sesame");
    // A half-open SA of its own, which import keeps.
    let mut out = Vec::new();
    other.ep.initiate(
        p.now,
        Path {
            local: SocketAddr::from((R_ADDR, 500)),
            remote: SocketAddr::from((Ipv4Addr::new(203, 0, 113, 9), 500)),
        },
        &p.rng,
        &mut out,
    );
    let later = p.now + Duration::from_secs(7);
    let later_wall = wall(&p, t0) + Duration::from_secs(7);
    other
        .ep
        .import(json_round_trip(&a), later, later_wall)
        .unwrap();
    assert_eq!(other.ep.sa_count(), 2);
    let b = other.ep.export(later, later_wall);
    assert_eq!(a, b);
    // Importing nothing drops the established SA, silently, and keeps the half-open one.
    other.ep.import(Vec::new(), later, later_wall).unwrap();
    assert_eq!(other.ep.sa_count(), 1);
    assert!(other.ep.export(later, later_wall).is_empty());
}

fn valid_snapshot() -> (Pair, Instant, IkeSaSnapshot) {
    let mut p = Pair::default();
    let t0 = p.now;
    p.handshake();
    // A pending request and a cached answer in it.
    p.advance(Duration::from_secs(31));
    p.run();
    let mut out = Vec::new();
    let spi = *p.r.children.keys().next().unwrap();
    p.r.ep.delete_child(p.now, spi, &p.rng, &mut out);
    let snap = p.r.ep.export(p.now, wall(&p, t0)).remove(0);
    assert!(snap.pending.is_some() && snap.last_response.is_some());
    (p, t0, snap)
}

/// Every kind of bad snapshot is refused with an error, never a panic, and leaves the
/// endpoint as it was.
#[test]
fn hostile_snapshots_are_refused() {
    let (p, t0, good) = valid_snapshot();
    let (now, w) = (p.now, wall(&p, t0));
    let mut ep = Endpoint::new(r_config(), psk("sesame"));
    ep.import(vec![good.clone()], now, w).unwrap();
    let check = |ep: &mut Endpoint, snaps: Vec<IkeSaSnapshot>| {
        let r = ep.import(snaps, now, w);
        assert!(r.is_err(), "accepted");
        // Unchanged.
        assert_eq!(ep.export(now, w), vec![good.clone()]);
        r.unwrap_err()
    };
    let bad = |f: &dyn Fn(&mut IkeSaSnapshot)| {
        let mut s = good.clone();
        f(&mut s);
        vec![s]
    };
    check(&mut ep, bad(&|s| s.spi_i = 0));
    check(&mut ep, bad(&|s| s.sk_ei.0.push(1)));
    check(&mut ep, bad(&|s| s.sk_d.0.clear()));
    check(&mut ep, bad(&|s| s.sk_ar.0.push(1)));
    check(&mut ep, bad(&|s| s.suite.encr = 3));
    check(&mut ep, bad(&|s| s.suite.integ = Some(2)));
    check(&mut ep, bad(&|s| s.suite.dh = 1));
    check(&mut ep, bad(&|s| s.next_send += 1));
    check(&mut ep, bad(&|s| s.next_recv += 1));
    check(&mut ep, bad(&|s| s.next_recv = u32::MAX));
    check(&mut ep, bad(&|s| s.dpd_interval_ms = 0));
    check(&mut ep, bad(&|s| s.peer_id.0.clear()));
    check(&mut ep, bad(&|s| s.children[0].inbound = 0));
    check(&mut ep, bad(&|s| s.children[0].esp.spi ^= 1));
    check(&mut ep, bad(&|s| s.children[0].esp.key_bits = Some(192)));
    check(&mut ep, bad(&|s| s.children[0].local_ts.clear()));
    check(
        &mut ep,
        bad(&|s| {
            let c = s.children[0].clone();
            s.children = vec![c; 65];
        }),
    );
    let last = |s: &mut IkeSaSnapshot| s.last_response.as_mut().unwrap().datagrams.clone();
    check(
        &mut ep,
        bad(&|s| {
            let d = last(s)[0].clone();
            s.last_response.as_mut().unwrap().datagrams = vec![d; 17];
        }),
    );
    check(
        &mut ep,
        bad(&|s| {
            let r = s.last_response.as_mut().unwrap();
            r.datagrams[0].0.resize(64 * 1024 + 1, 0);
        }),
    );
    check(
        &mut ep,
        bad(&|s| s.last_response.as_mut().unwrap().datagrams.clear()),
    );
    // A datagram of another message (the pending request's bytes as the cached answer).
    check(
        &mut ep,
        bad(&|s| {
            let d = s.pending.as_ref().unwrap().datagrams.clone();
            s.last_response.as_mut().unwrap().datagrams = d;
        }),
    );
    check(&mut ep, bad(&|s| s.pending.as_mut().unwrap().exchange = 36));
    check(
        &mut ep,
        bad(&|s| s.pending.as_mut().unwrap().datagrams[0].0.truncate(10)),
    );
    check(
        &mut ep,
        bad(&|s| {
            s.queue = vec![crate::core::snapshot::QueuedSnapshot::Dpd; 9];
        }),
    );
    let e = check(&mut ep, vec![good.clone(), good.clone()]);
    assert!(matches!(e, SnapshotError::DuplicateSpi(_)));
    let mut other = good.clone();
    other.spi_r ^= 1;
    other.spi_i ^= 1;
    // Its messages would name the old SPIs (refused as such); without them it is valid.
    other.last_response = None;
    other.pending = None;
    let e = check(&mut ep, vec![good.clone(), other]);
    assert!(matches!(e, SnapshotError::DuplicateChildSpi(_)), "{e:?}");
    let e = check(&mut ep, vec![good.clone(); 129]);
    assert_eq!(e, SnapshotError::TooMany(129));
}

/// Garbage and mutated JSON: an error from serde or from import, never a panic.
#[test]
fn garbage_and_mutated_json_never_panic() {
    let (p, t0, good) = valid_snapshot();
    let (now, w) = (p.now, wall(&p, t0));
    for g in [
        "",
        "{",
        "null",
        "[1,2]",
        "[{}]",
        "[[]]",
        "{\"spiI\":1}",
        "[\"\\u0000\"]",
    ] {
        assert!(
            serde_json::from_str::<Vec<IkeSaSnapshot>>(g).is_err(),
            "{g}"
        );
    }
    // An unknown field is refused (a foreign or newer format).
    let mut v = serde_json::to_value(&good).unwrap();
    v["extra"] = serde_json::Value::Bool(true);
    assert!(serde_json::from_value::<IkeSaSnapshot>(v).is_err());
    let mut v = serde_json::to_value(&good).unwrap();
    v["skD"] = serde_json::Value::String("not base64!".into());
    assert!(serde_json::from_value::<IkeSaSnapshot>(v).is_err());
    // Every leaf replaced by hostile values.
    let base = serde_json::to_value(vec![good.clone()]).unwrap();
    let mut leaves = Vec::new();
    fn walk(v: &serde_json::Value, path: String, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    walk(x, format!("{path}/{k}"), out);
                }
            }
            serde_json::Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(x, format!("{path}/{i}"), out);
                }
            }
            _ => out.push(path),
        }
    }
    walk(&base, String::new(), &mut leaves);
    assert!(leaves.len() > 40, "{}", leaves.len());
    let hostile = [
        serde_json::json!(0),
        serde_json::json!(1),
        serde_json::json!(u64::MAX),
        serde_json::json!(u32::MAX),
        serde_json::json!(-1),
        serde_json::json!(""),
        serde_json::json!("AAAA"),
        serde_json::json!(null),
        serde_json::json!([]),
        serde_json::json!(true),
    ];
    let (mut parsed, mut refused) = (0, 0);
    for leaf in &leaves {
        for h in &hostile {
            let mut v = base.clone();
            *v.pointer_mut(leaf).unwrap() = h.clone();
            let Ok(snaps) = serde_json::from_value::<Vec<IkeSaSnapshot>>(v) else {
                continue;
            };
            parsed += 1;
            let mut ep = Endpoint::new(r_config(), psk("sesame"));
            if ep.import(snaps, now, w).is_err() {
                refused += 1;
            }
        }
    }
    assert!(
        parsed > 50 && refused > 20,
        "{parsed} parsed, {refused} refused"
    );
    // Byte mutations of the text.
    let text = serde_json::to_vec(&vec![good]).unwrap();
    let mut m = Mutator(0x5eed_1234_abcd_0001);
    for _ in 0..3000 {
        let bytes = m.mutate(&text);
        if let Ok(snaps) = serde_json::from_slice::<Vec<IkeSaSnapshot>>(&bytes) {
            let mut ep = Endpoint::new(r_config(), psk("sesame"));
            let _ = ep.import(snaps, now, w);
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// No key in `Debug` (of a snapshot or an error); the keys are in the JSON (which is why
/// it goes to the Secret only).
#[test]
fn debug_of_a_snapshot_shows_no_key() {
    use base64::Engine as _;
    let (_, _, snap) = valid_snapshot();
    let debug = format!("{snap:?} {:#?}", snap);
    let json = serde_json::to_string(&snap).unwrap();
    for k in [
        &snap.sk_d,
        &snap.sk_ei,
        &snap.sk_er,
        &snap.sk_ai,
        &snap.sk_ar,
    ] {
        if k.0.is_empty() {
            continue;
        }
        let b64 = base64::engine::general_purpose::STANDARD.encode(&*k.0);
        assert!(json.contains(&b64), "the key is in the JSON");
        assert!(!debug.contains(&hex(&k.0)), "hex of a key in Debug");
        assert!(!debug.contains(&b64), "base64 of a key in Debug");
        assert!(!debug.contains(&format!("{:?}", &k.0[..8])));
    }
    assert!(debug.contains("key bytes"));
    let mut bad = snap.clone();
    bad.sk_ei.0.push(0);
    let mut ep = Endpoint::new(r_config(), psk("sesame"));
    let e = ep.import(vec![bad], Instant::now(), SystemTime::now());
    let text = format!("{e:?} {}", e.as_ref().unwrap_err());
    assert!(!text.contains(&hex(&snap.sk_ei.0)));
}

/// An owner that hands over (`set_passive(true)`) stops its retransmissions and DPD; taking
/// over again resumes them.
#[test]
fn set_passive_freezes_and_resumes_an_active_core() {
    let mut p = Pair::default();
    p.handshake();
    p.advance(Duration::from_secs(31));
    // Both DPDs are in flight; the responder's is not delivered.
    p.r.wire.clear();
    p.i.wire.clear();
    p.r.ep.set_passive(true, p.now);
    assert!(p.r.ep.is_passive());
    let requests = |s: &Side| {
        headers(&s.sent_log)
            .iter()
            .filter(|h| !h.is_response())
            .count()
    };
    let sent = requests(&p.r);
    // The peer's retransmissions and DPDs are still answered.
    p.advance_running(Duration::from_secs(60), Duration::from_secs(1));
    assert_eq!(requests(&p.r), sent, "no retransmission, no DPD of its own");
    assert!(
        headers(&p.r.sent_log)
            .iter()
            .any(|h| h.is_response() && h.message_id == 3)
    );
    assert_eq!(p.r.established().len(), 1, "not declared dead");
    let pending = |p: &Pair| p.r.ep.export(p.now, SystemTime::now())[0].pending.is_some();
    assert!(pending(&p), "its DPD waits");
    p.r.ep.set_passive(false, p.now);
    p.advance(Duration::from_millis(1));
    assert_eq!(requests(&p.r), sent + 1, "the pending DPD, again");
    p.run();
    assert!(!pending(&p), "answered");
}

/// The old owner's Delete of a Child SA, then of the IKE SA, in flight at the switch: the new
/// owner sends them again and retires what their answers confirm.
#[test]
fn pending_deletes_of_the_old_owner_complete_at_the_new_one() {
    let mut p = Pair::default();
    let t0 = p.now;
    p.handshake();
    rekey_child(&mut p, true);
    let mut out = Vec::new();
    p.i.ep.create_child(p.now, &p.rng, &mut out);
    p.i.absorb(out);
    p.run();
    assert_eq!(p.r.children.len(), 2);
    let gone = *p.r.children.keys().next().unwrap();
    let mut out = Vec::new();
    p.r.ep.delete_child(p.now, gone, &p.rng, &mut out);
    p.r.absorb(out);
    let in_flight = std::mem::take(&mut p.r.wire);
    hand_over(&mut p, t0, r_config(), true);
    p.advance(Duration::from_millis(1));
    assert_eq!(p.r.wire, in_flight);
    p.run();
    assert_eq!(p.r.children.len(), 1);
    assert!(!p.r.children.contains_key(&gone), "retired on the answer");
    assert_eq!(p.i.children.len(), 1);
    assert_children_mirror(&p);
    // Now the IKE SA.
    let mut out = Vec::new();
    p.r.ep.delete_ike(p.now, &p.rng, &mut out);
    p.r.absorb(out);
    let in_flight = std::mem::take(&mut p.r.wire);
    hand_over(&mut p, t0, r_config(), true);
    p.advance(Duration::from_millis(1));
    assert_eq!(p.r.wire, in_flight);
    p.run();
    assert!(p.r.ep.status().is_empty() && p.r.children.is_empty());
    assert!(p.i.ep.status().is_empty() && p.i.children.is_empty());
    assert!(p.r.has_event(|e| matches!(
        e,
        Event::IkeDeleted {
            reason: DeleteReason::Closed,
            ..
        }
    )));
    assert_eq!(dropped(&p.r.events), vec![]);
}

/// The known limit of an orphaned IKE SA rekey (`Established::on_orphan_response`): the peer
/// moved its Child SAs to an IKE SA whose keys we cannot derive, finds that SA dead (DPD)
/// and deletes the old one. Both ends then hold nothing, cleanly: no Child SA is left
/// installed on either side, and the peer (if it initiates) sets the tunnel up again.
#[test]
fn orphaned_ike_rekey_ends_cleanly_on_both_sides() {
    let mut p = Pair::default();
    let t0 = p.now;
    p.handshake();
    let mut out = Vec::new();
    p.r.ep.rekey_ike(p.now, &p.rng, &mut out);
    p.r.absorb(out);
    p.r.wire.clear();
    hand_over(&mut p, t0, r_config(), true);
    p.advance(Duration::from_millis(1));
    p.run();
    assert_eq!(
        p.i.ep.status().len(),
        2,
        "the peer's new SA and its old one"
    );
    p.advance_running(Duration::from_secs(62), Duration::from_secs(1));
    assert!(p.i.ep.status().is_empty() && p.i.children.is_empty());
    assert!(p.r.ep.status().is_empty() && p.r.children.is_empty());
    assert!(p.r.has_event(|e| matches!(
        e,
        Event::IkeDeleted {
            reason: DeleteReason::PeerDeleted,
            ..
        }
    )));
}
