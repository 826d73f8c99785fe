//! The shared SA state of issue #11 on hostile bytes: what a replica reads from the
//! `<tunnel>-sa` Secret and installs, as `ikev2::sync` does.
//!
//! The first byte selects the input's form:
//! - even: raw bytes, given to the `summary.json` and `acks.json` parsers and to
//!   `StateDoc::parse` (`state.json`);
//! - odd: structure-aware: a valid `state.json` (an IKE SA exported by a responder that has
//!   completed a real handshake in memory, with ESP state for its Child SA) whose JSON nodes
//!   are mutated by up to 16 operations (a number, bool, null, string, empty array or object,
//!   a removal, ...), then serialised and parsed like the raw form. What follows the
//!   operations is an IKE message for the imported SA: its header overwritten to aim at
//!   the SA, or its bytes as the payloads of a message protected with the SA's keys (the
//!   peer's next request, or the answer to our pending request).
//!
//! A state that parses goes through the sync engine (install, claim, timers, conflict,
//! release), then as in `install_remote`: each IKE SA snapshot from JSON, `Endpoint::import`
//! into a fresh responder (like the one of `ike_responder`), each Child SA's ESP state into
//! `Inbound::new` and `Outbound::restore_shared` (one of several sender slots) and a packet
//! sealed. An imported endpoint handles the message (aimed at the SA; the ICV check is
//! bypassed under `cfg(fuzzing)`), polls, and may become owner (`set_passive(false)`).
//! Checked besides "no panic": what an endpoint exports after an import (and after handling)
//! can be imported again, through JSON, by another replica; summary times parse back.
//!
//! `MT_FUZZ_WRITE_SEED=<dir>` writes the valid base state as a raw-form seed into `<dir>`.
#![no_main]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use ike::core::fuzzing::{SystemRandom, established_responder};
use ike::core::{Config, Endpoint, IkeSaSnapshot, Path, StaticPsk, ipv4_id};
use ike::crypto::{EncrAlg, IntegAlg, SkCipher};
use ike::wire::{ExchangeType, Header, PayloadType, TransformId, write_encrypted_header};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tunnel_pod::esp::sa::{Inbound, Outbound, SenderSlot};
use tunnel_pod::sync::doc::{
    ChildDoc, Content, StateDoc, Summary, parse_acks, parse_rfc3339_ms, unix_ms,
};
use tunnel_pod::sync::engine::Engine;

const R_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const I_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// A fresh endpoint configured as `established_responder`'s responder (without its SA: an
/// import replaces established SAs anyway, and the handshake per input would dominate).
fn endpoint() -> Endpoint {
    let config = Config::new(ipv4_id(R_ADDR), vec![ipv4_id(I_ADDR)]);
    let psk = StaticPsk(ike::crypto::Secret::new(b"fuzzing".to_vec()));
    Endpoint::new(config, Box::new(psk))
}

/// The valid `state.json` the structure-aware form starts from.
fn base() -> &'static Value {
    static BASE: OnceLock<Value> = OnceLock::new();
    BASE.get_or_init(|| {
        let rng = SystemRandom::new();
        let mut setup = established_responder(&rng).expect("the in-memory handshake failed");
        let wall = SystemTime::now();
        // A DPD after the interval gives the SA a pending request to share as well.
        let mut out = Vec::new();
        setup.responder.set_passive(false, setup.now);
        let later = setup.now + Duration::from_secs(3600);
        setup.responder.poll(later, &rng, &mut out);
        let snaps = setup.responder.export(later, wall);
        assert!(!snaps.is_empty(), "the responder exported no IKE SA");
        let now_ms = unix_ms(wall);
        let params = |spi: u32, key: u8| {
            serde_json::json!({
                "spi": spi,
                "encryption": "AES-GCM-16-128",
                "encryptionKey": base64_of(&[key; 20]),
                "lifetime": {"bytes": 1u64 << 40, "packets": 1u64 << 32, "seconds": 3600},
                "trafficSelectors": {"local": ["10.0.0.0/8"], "remote": ["0.0.0.0/0"]},
            })
        };
        let mut children = Vec::new();
        for s in &snaps {
            for c in &s.children {
                let child: ChildDoc = serde_json::from_value(serde_json::json!({
                    "inbound": params(c.inbound, 1),
                    "outbound": {
                        "params": params(c.outbound, 2), "seq": 5, "ivBase": 7,
                        "shared": {"epochUnixMs": now_ms, "lifetimeMs": 3_600_000},
                    },
                    "outboundActive": c.outbound_active,
                }))
                .expect("a valid ChildDoc");
                children.push(child);
            }
        }
        let content = Content {
            ike_spis: snaps.iter().map(IkeSaSnapshot::spis).collect(),
            ike_sas: snaps
                .iter()
                .map(|s| serde_json::to_value(s).expect("a snapshot as JSON"))
                .collect(),
            next_rekey_ms: snaps.iter().map(|s| s.rekey_at_ms).min(),
            children,
            esp_peer: Some(SocketAddrV4::new(I_ADDR, 4500)),
            peer_on_data_socket: true,
        };
        let doc = StateDoc::new(3, Some("pod-a".into()), now_ms, content);
        let bytes = doc.to_bytes().expect("the base state serialises");
        assert!(StateDoc::parse(&bytes).is_ok(), "the base state parses");
        if let Some(dir) = std::env::var_os("MT_FUZZ_WRITE_SEED") {
            let mut seed = vec![0u8];
            seed.extend_from_slice(&bytes);
            std::fs::write(std::path::Path::new(&dir).join("state-json"), seed)
                .expect("cannot write the seed");
        }
        serde_json::from_slice(&bytes).expect("the base state as a JSON value")
    })
}

fn base64_of(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &x)| n | u32::from(x) << (16 - 8 * i));
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// JSON Pointers of every node below the root, depth first (a deterministic order).
fn pointers(v: &Value, at: &mut String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let len = at.len();
                at.push('/');
                at.push_str(&k.replace('~', "~0").replace('/', "~1"));
                out.push(at.clone());
                pointers(child, at, out);
                at.truncate(len);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                let len = at.len();
                at.push('/');
                at.push_str(&i.to_string());
                out.push(at.clone());
                pointers(child, at, out);
                at.truncate(len);
            }
        }
        _ => {}
    }
}

const NUMBERS: [u64; 16] = [
    0,
    1,
    2,
    255,
    256,
    65_535,
    65_536,
    u32::MAX as u64 - 1,
    u32::MAX as u64,
    1 << 32,
    1 << 53,
    i64::MAX as u64,
    u64::MAX - 1,
    u64::MAX,
    3_600_000,
    30 * 24 * 3_600_000,
];
const WORDS: [&str; 12] = [
    "",
    "x",
    "=",
    "AES-GCM-16-256",
    "AES-CBC-128",
    "NULL",
    "HMAC-SHA1-96",
    "dpd",
    "rekeyIke",
    "0.0.0.0/0",
    "203.0.113.7:4500",
    "[::1]:500",
];
const LENGTHS: [usize; 12] = [0, 1, 4, 12, 16, 20, 32, 36, 48, 64, 1000, 70_000];

/// Applies one mutation to the node at `ptr`.
fn mutate(doc: &mut Value, ptr: &str, kind: u8, arg: u64) {
    if kind % 16 == 11 {
        // Remove the node from its parent.
        let (parent, last) = ptr.rsplit_once('/').unwrap_or(("", ptr));
        match doc.pointer_mut(parent) {
            Some(Value::Object(m)) => {
                m.remove(&last.replace("~1", "/").replace("~0", "~"));
            }
            Some(Value::Array(a)) => {
                if let Ok(i) = last.parse::<usize>()
                    && i < a.len()
                {
                    a.remove(i);
                }
            }
            _ => {}
        }
        return;
    }
    let Some(node) = doc.pointer_mut(ptr) else {
        return;
    };
    let small = (arg & 0xff) as usize;
    let new = match kind % 16 {
        0 => NUMBERS[small % NUMBERS.len()].into(),
        1 => arg.into(),
        2 => (-1 - (arg % 4) as i64).into(),
        3 => serde_json::json!(if arg & 1 == 0 { 1.5 } else { 1e300 }),
        4 => (!node.as_bool().unwrap_or(false)).into(),
        5 => Value::Null,
        6 => {
            let len = LENGTHS[small % LENGTHS.len()];
            base64_of(&vec![(arg >> 8) as u8; len]).into()
        }
        7 => WORDS[small % WORDS.len()].into(),
        8 => Value::Array(Vec::new()),
        9 => Value::Object(Default::default()),
        10 => match &mut *node {
            // Repeat an element (duplicate SAs, SPIs, selectors...).
            Value::Array(a) if !a.is_empty() && a.len() < 200 => {
                let e = a[small % a.len()].clone();
                let mut a = std::mem::take(a);
                for _ in 0..=(arg >> 8) % 4 {
                    a.push(e.clone());
                }
                Value::Array(a)
            }
            other => other.take(),
        },
        12 => small.into(),
        13 => match node.as_u64() {
            Some(n) => n.wrapping_add(1).into(),
            None => node.take(),
        },
        14 => match node.as_u64() {
            Some(n) => n.wrapping_sub(1).into(),
            None => node.take(),
        },
        _ => match node.as_u64() {
            // Flip one bit of a number (SPIs, message IDs, times).
            Some(n) => (n ^ (1 << (arg % 64))).into(),
            None => node.take(),
        },
    };
    *node = new;
}

/// The bytes of a snapshot key (they are base64 in JSON; the field is private to `ike`).
fn key_bytes(k: &impl serde::Serialize) -> Vec<u8> {
    let Ok(Value::String(s)) = serde_json::to_value(k) else {
        return Vec::new();
    };
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_default()
}

/// `plain` (a payload chain, first payload `first`) in an SK payload protected with the
/// peer's keys of `snap`: a message the imported SA decrypts (and authenticates).
fn sealed(
    snap: &IkeSaSnapshot,
    h: Header,
    first: u8,
    plain: &[u8],
    rng: &SystemRandom,
) -> Option<Vec<u8>> {
    let encr = EncrAlg::from_transform(TransformId(snap.suite.encr), Some(snap.suite.key_bits))?;
    let integ = match snap.suite.integ {
        Some(i) => Some(IntegAlg::from_id(TransformId(i))?),
        None => None,
    };
    // The peer protects its messages with its own role's keys (RFC 7296 §2.14).
    let (e, a) = if snap.initiator {
        (key_bytes(&snap.sk_er), key_bytes(&snap.sk_ar))
    } else {
        (key_bytes(&snap.sk_ei), key_bytes(&snap.sk_ai))
    };
    let cipher = SkCipher::new(encr, integ, &e, &a).ok()?;
    let sealed_len = cipher.sealed_len(plain.len());
    let mut hdr = h;
    hdr.next_payload = PayloadType::SK;
    hdr.length = u32::try_from(Header::LEN + 4 + sealed_len).ok()?;
    let mut buf = Vec::new();
    hdr.write(&mut buf);
    write_encrypted_header(PayloadType(first), sealed_len, None, &mut buf);
    cipher.seal(&mut buf, plain, rng).ok()?;
    Some(buf)
}

/// An IKE message aimed at `snap`'s SA (its SPIs, the message ID and flags `aim` selects):
/// the fuzzer's bytes with the header overwritten, or (`aim` 2, 3) its bytes as the payloads
/// of a properly protected message.
fn aimed(snap: &IkeSaSnapshot, msg: &[u8], aim: u8, rng: &SystemRandom) -> Vec<u8> {
    let (id, response) = match aim % 4 {
        // The peer's next request, or the one whose answer is cached (a retransmission).
        0 | 3 => (snap.next_recv, false),
        1 => (snap.next_recv.wrapping_sub(1), false),
        // The answer to our pending request.
        _ => (snap.next_send.wrapping_sub(1), true),
    };
    // The peer's role; the response flag.
    let flags = if snap.initiator { 0 } else { 0x08 } | if response { 0x20 } else { 0 };
    if aim % 4 >= 2 {
        let (&b, plain) = msg.split_first().unwrap_or((&0, &[]));
        let exchange = match (response, &snap.pending) {
            (true, Some(p)) => p.exchange,
            _ if b & 0x80 != 0 => 36,
            _ => 37,
        };
        let h = Header {
            spi_i: snap.spi_i,
            spi_r: snap.spi_r,
            next_payload: PayloadType::SK,
            version: 0x20,
            exchange: ExchangeType(exchange),
            flags,
            message_id: id,
            length: 0,
        };
        if let Some(m) = sealed(snap, h, b & 0x7f, plain, rng) {
            return m;
        }
    }
    let mut m = msg.to_vec();
    if m.len() < 28 {
        m.resize(28, 0);
    }
    m[..8].copy_from_slice(&snap.spi_i.to_be_bytes());
    m[8..16].copy_from_slice(&snap.spi_r.to_be_bytes());
    m[17] = 0x20;
    m[19] = flags;
    m[20..24].copy_from_slice(&id.to_be_bytes());
    let len = u32::try_from(m.len()).unwrap_or(u32::MAX);
    m[24..28].copy_from_slice(&len.to_be_bytes());
    m
}

/// What an endpoint exports can be imported by another replica, through JSON.
fn reimport(from: &Endpoint, now: Instant, wall: SystemTime) {
    let exported = from.export(now, wall);
    let json: Vec<Value> = exported
        .iter()
        .map(|s| serde_json::to_value(s).expect("an exported snapshot serialises"))
        .collect();
    let back: Vec<IkeSaSnapshot> = json
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("an exported snapshot parses back"))
        .collect();
    assert_eq!(back, exported, "an exported snapshot changed through JSON");
    let mut other = endpoint();
    if let Err(e) = other.import(back, now, wall) {
        panic!("an exported state cannot be imported again: {e}");
    }
}

/// The sync engine on a parsed state: follower install, claim, timers, conflict, release.
fn engine(doc: &StateDoc, now_ms: u64) {
    let mut e = Engine::new("pod-b".into());
    let _ = e.on_remote(doc, now_ms);
    e.installed(doc, now_ms);
    for spis in &doc.content.ike_spis {
        let _ = e.needs_claim(*spis);
    }
    let _ = e.due(&doc.content, now_ms.saturating_add(60_000));
    let mut local = doc.content.clone();
    local.ike_spis.push((1, 2));
    let _ = e.after_step(&local, true, now_ms);
    let claim = e.claim(doc, now_ms);
    let _ = e.conflict(&claim, Some(doc), now_ms);
    e.written(&claim, now_ms);
    let _ = e.after_step(&local, false, now_ms);
    let _ = e.due(&local, now_ms.saturating_add(1_000));
    let _ = e.next_due_ms();
    let _ = e.on_remote(doc, now_ms);
    let _ = e.release(&local, now_ms);
}

/// ESP as `install_children` builds it, then a packet sealed on the outbound SA.
fn esp(c: &ChildDoc, slot: SenderSlot, replay: Option<u32>) {
    let _ = c.spi_in();
    let _ = format!("{c:?}");
    let _ = Inbound::new(c.inbound.clone(), replay);
    let Ok(out) = Outbound::restore_shared(c.outbound.clone(), slot) else {
        return;
    };
    let _ = out.state();
    let _ = out.needs_rekey();
    let _ = out.is_exhausted();
    let mut buf = vec![0u8; 256];
    let start = out.headroom();
    let mut packet = [0u8; 28];
    packet[0] = 0x45;
    packet[3] = 28;
    packet[8] = 64;
    packet[9] = 17;
    packet[12..16].copy_from_slice(&[10, 0, 0, 1]);
    packet[16..20].copy_from_slice(&[192, 0, 2, 9]);
    buf[start..start + 28].copy_from_slice(&packet);
    let _ = out.seal(&mut buf, start..start + 28, 4);
    let _ = out.seal(&mut buf, start..start + 28, 4);
}

fn install(bytes: &[u8], flags: u8, msg: &[u8]) {
    let Ok(doc) = StateDoc::parse(bytes) else {
        return;
    };
    let _ = format!("{doc:?}");
    let summary = doc.summary();
    let at = &summary.published_at;
    assert!(
        at.is_empty() || parse_rfc3339_ms(at) == Some(doc.published_at_ms),
        "publishedAt does not parse back"
    );
    let _ = serde_json::to_vec(&summary);
    let _ = doc.to_bytes();
    let wall = SystemTime::now();
    let now = Instant::now();
    engine(&doc, unix_ms(wall));

    let slot = [
        SenderSlot::SINGLE,
        SenderSlot { index: 0, count: 2 },
        SenderSlot { index: 1, count: 2 },
        SenderSlot {
            index: 15,
            count: 16,
        },
    ][usize::from(flags & 3)];
    let replay = (flags & 4 != 0).then_some(1024);
    for c in &doc.content.children {
        esp(c, slot, replay);
    }

    let mut snaps = Vec::with_capacity(doc.content.ike_sas.len());
    for v in &doc.content.ike_sas {
        match serde_json::from_value::<IkeSaSnapshot>(v.clone()) {
            Ok(s) => snaps.push(s),
            Err(_) => return,
        }
    }
    let target = snaps.first().cloned();
    let mut ep = endpoint();
    if ep.import(snaps, now, wall).is_err() {
        return;
    }
    assert!(ep.is_passive());
    reimport(&ep, now, wall);
    let rng = SystemRandom::new();
    let mut out = Vec::new();
    // A follower answers passively; the owner (after a claim) is active.
    ep.poll(now, &rng, &mut out);
    if flags & 8 != 0 {
        ep.set_passive(false, now);
    }
    if let Some(snap) = &target {
        let m = aimed(snap, msg, flags >> 4, &rng);
        let path = Path {
            local: snap.local,
            remote: snap.remote,
        };
        ep.handle(now, path, &m, &rng, &mut out);
        if flags & 0x40 != 0 {
            ep.handle(now, path, &m, &rng, &mut out);
        }
        // A message from elsewhere (NAT mapping change).
        if flags & 0x80 != 0 {
            let moved = Path {
                local: snap.local,
                remote: SocketAddr::from((Ipv4Addr::new(203, 0, 113, 9), 4501)),
            };
            ep.handle(now, moved, &m, &rng, &mut out);
        }
    }
    let step = [0, 1, 31, 3600, 30 * 24 * 3600][usize::from(flags >> 5) % 5];
    if let Some(later) = now.checked_add(Duration::from_secs(step)) {
        ep.poll(later, &rng, &mut out);
        let _ = ep.status();
        reimport(&ep, later, wall + Duration::from_secs(step));
    }
    // A second install over the established SAs (the next generation).
    let again: Vec<IkeSaSnapshot> = ep.export(now, wall);
    let _ = ep.import(again, now, wall);
    let _ = ep.next_timer();
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let _ = serde_json::from_slice::<Summary>(rest);
        if let Ok(acks) = parse_acks(Some(rest)) {
            for ack in acks.values() {
                let _ = parse_rfc3339_ms(&ack.at);
            }
        }
        install(rest, mode >> 1, &[]);
        return;
    }
    let Some((&flags, rest)) = rest.split_first() else {
        return;
    };
    let Some((&n, mut rest)) = rest.split_first() else {
        return;
    };
    let mut doc = base().clone();
    let mut ptrs = Vec::new();
    pointers(&doc, &mut String::new(), &mut ptrs);
    for _ in 0..n % 17 {
        let Some((op, tail)) = rest.split_first_chunk::<11>() else {
            break;
        };
        rest = tail;
        let idx = usize::from(u16::from_le_bytes([op[0], op[1]]));
        let arg = u64::from_le_bytes(op[3..11].try_into().expect("8 bytes"));
        mutate(&mut doc, &ptrs[idx % ptrs.len()], op[2], arg);
    }
    let Ok(bytes) = serde_json::to_vec(&doc) else {
        return;
    };
    install(&bytes, flags, rest);
});
