//! One whole IKEv2 handshake (IKE_SA_INIT + IKE_AUTH with its Child SA), initiator and
//! responder cores against each other in memory, beside the raw Diffie-Hellman work the same
//! handshake must do: each side generates a key pair and agrees with the other's public value,
//! i.e. 2 × (generate + agree). Whatever the handshake costs above that is the core's own work
//! (codec, prf+, AES, PSK AUTH, state).
//!
//! `cargo bench -p magictunnel-ike --bench handshake`
//!
//! After criterion's figures, an interleaved pass (one handshake, one raw DH, alternately, so
//! that both see the same machine load) prints the medians, the ratio handshake / raw DH and the
//! non-DH remainder.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use ike::core::{Config, Endpoint, Identification, Output, Path, Proposals, StaticPsk};
use ike::crypto::{EncrAlg, Group, IntegAlg, KeyPair, PrfAlg, Secret};
use ike::wire::{IdType, TransformId};
use ring::rand::SystemRandom;

const GROUPS: [(&str, Group); 3] = [
    ("ecp384", Group::Ecp384),
    ("modp2048", Group::Modp2048),
    ("modp1536", Group::Modp1536),
];

/// An IKE and ESP suite, fixed so that only the group varies between rows.
#[derive(Clone, Copy)]
enum Suite {
    /// IKE AES-GCM-16-256 / PRF-HMAC-SHA2-384, ESP AES-GCM-16-256.
    Gcm256,
    /// IKE AES-CBC-256 / HMAC-SHA2-256-128 / PRF-HMAC-SHA2-256, ESP AES-CBC-256 +
    /// HMAC-SHA2-256-128.
    Cbc256,
}

const SUITES: [(&str, Suite); 2] = [
    ("gcm256-sha384", Suite::Gcm256),
    ("cbc256-sha256", Suite::Cbc256),
];

fn proposals(group: Group, suite: Suite) -> Proposals {
    let mut p = Proposals::seed_default(false);
    p.ike_dh = vec![group];
    p.pfs = vec![];
    p.pfs_initiate = None;
    match suite {
        Suite::Gcm256 => {
            p.ike_encr = vec![EncrAlg::AesGcm16 { key_bits: 256 }];
            p.ike_integ = vec![];
            p.ike_prf = vec![PrfAlg::HmacSha384];
            p.esp_encr = vec![(TransformId::ENCR_AES_GCM_16, Some(256))];
            p.esp_integ = vec![];
        }
        Suite::Cbc256 => {
            p.ike_encr = vec![EncrAlg::AesCbc { key_bits: 256 }];
            p.ike_integ = vec![IntegAlg::HmacSha256_128];
            p.ike_prf = vec![PrfAlg::HmacSha256];
            p.esp_encr = vec![(TransformId::ENCR_AES_CBC, Some(256))];
            p.esp_integ = vec![TransformId::AUTH_HMAC_SHA2_256_128];
        }
    }
    p
}

fn fqdn(name: &str) -> Identification {
    Identification {
        id_type: IdType::ID_FQDN,
        data: name.as_bytes().to_vec(),
    }
}

/// Initiator and responder configurations for one group and suite.
fn configs(group: Group, suite: Suite) -> (Config, Config) {
    let (i_id, r_id) = (fqdn("branch.example"), fqdn("hub.example"));
    let mut ci = Config::new(i_id.clone(), vec![r_id.clone()]);
    let mut cr = Config::new(r_id, vec![i_id]);
    ci.proposals = proposals(group, suite);
    cr.proposals = proposals(group, suite);
    (ci, cr)
}

fn key() -> Box<StaticPsk> {
    Box::new(StaticPsk(Secret::new(
        b"a benchmark key of some length".to_vec(),
    )))
}

/// One handshake between fresh endpoints. Panics unless both sides installed the Child SA
/// with the ESP encryption both configs allow, so a failed negotiation cannot pass for a fast one.
fn handshake(ci: &Config, cr: &Config, rng: &SystemRandom) {
    let now = Instant::now();
    let path = Path {
        local: SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), 500)),
        remote: SocketAddr::from((Ipv4Addr::new(198, 51, 100, 1), 500)),
    };
    let esp = ci.proposals.esp_encr[0].0;
    let mut i = Endpoint::new(ci.clone(), key());
    let mut r = Endpoint::new(cr.clone(), key());
    // What each side emitted and has not been acted on yet.
    let (mut from_i, mut from_r) = (Vec::new(), Vec::new());
    i.initiate(now, path, rng, &mut from_i);
    let (mut i_installed, mut r_installed) = (false, false);
    // Two round trips, then the initiator's InstallChild: five rounds; eight is generous.
    for _ in 0..8 {
        if from_i.is_empty() && from_r.is_empty() {
            break;
        }
        let next_r = apply(from_i, &mut r, &mut i_installed, esp, now, rng);
        from_i = apply(from_r, &mut i, &mut r_installed, esp, now, rng);
        from_r = next_r;
    }
    assert!(
        from_i.is_empty() && from_r.is_empty(),
        "the exchange did not settle"
    );
    assert!(i_installed && r_installed, "no Child SA on both sides");
}

/// Acts on one side's outputs: its datagrams go to `peer` (whose outputs are returned), its
/// InstallChild sets `installed`.
fn apply(
    outputs: Vec<Output>,
    peer: &mut Endpoint,
    installed: &mut bool,
    esp: TransformId,
    now: Instant,
    rng: &SystemRandom,
) -> Vec<Output> {
    let mut peer_out = Vec::new();
    for o in outputs {
        match o {
            Output::Send { path, bytes } => {
                peer.handle(now, path.reversed(), &bytes, rng, &mut peer_out)
            }
            Output::InstallChild(c) => {
                assert!(c.activate_outbound && c.inbound.encr == esp && c.outbound.encr == esp);
                *installed = true;
            }
            _ => {}
        }
    }
    peer_out
}

/// The DH work of one handshake: both sides generate a key pair and agree with the other's
/// public value. The two secrets must match, as in the real exchange.
fn raw_dh(group: Group, rng: &SystemRandom) {
    let a = KeyPair::generate(group, rng).unwrap();
    let b = KeyPair::generate(group, rng).unwrap();
    let (pa, pb) = (a.public().to_vec(), b.public().to_vec());
    let sa = a.agree(&pb).unwrap();
    let sb = b.agree(&pa).unwrap();
    assert_eq!(sa, sb);
}

fn bench(c: &mut Criterion) {
    let rng = SystemRandom::new();
    let mut g = c.benchmark_group("ike");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    for (gname, group) in GROUPS {
        g.bench_function(format!("{gname}/raw-dh-2x(generate+agree)"), |b| {
            b.iter(|| raw_dh(group, &rng))
        });
        for (sname, suite) in SUITES {
            let (ci, cr) = configs(group, suite);
            g.bench_function(format!("{gname}/handshake/{sname}"), |b| {
                b.iter(|| handshake(&ci, &cr, &rng))
            });
        }
    }
    g.finish();
    summary(&rng);
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn micros(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e6
}

/// Handshake and raw DH in pairs (alternating which goes first) for about `budget` per row, so
/// that both see the same load. The remainder is the median of the per-pair differences, which
/// cancels slow drifts of the machine's load; the minima are the least disturbed runs.
fn summary(rng: &SystemRandom) {
    let budget = Duration::from_millis(1500);
    println!();
    println!("interleaved pairs (one handshake, one raw DH), ~{budget:?} per row; µs");
    println!(
        "| group | suite | handshake median (min) | raw DH 2 sides median (min) | ratio of medians \
         | remainder: median of differences (min − min) | handshakes/s | pairs |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (gname, group) in GROUPS {
        for (sname, suite) in SUITES {
            let (ci, cr) = configs(group, suite);
            handshake(&ci, &cr, rng);
            let (mut hs, mut dh, mut diff) = (Vec::new(), Vec::new(), Vec::new());
            let start = Instant::now();
            while start.elapsed() < budget || hs.len() < 11 {
                let (h, d) = if hs.len() % 2 == 0 {
                    let t = Instant::now();
                    handshake(&ci, &cr, rng);
                    let h = micros(t);
                    let t = Instant::now();
                    raw_dh(group, rng);
                    (h, micros(t))
                } else {
                    let t = Instant::now();
                    raw_dh(group, rng);
                    let d = micros(t);
                    let t = Instant::now();
                    handshake(&ci, &cr, rng);
                    (micros(t), d)
                };
                hs.push(h);
                dh.push(d);
                diff.push(h - d);
            }
            let n = hs.len();
            let (hmin, dmin) = (min(&hs), min(&dh));
            let (h, d, rest) = (median(&mut hs), median(&mut dh), median(&mut diff));
            println!(
                "| {gname} | {sname} | {h:.0} ({hmin:.0}) | {d:.0} ({dmin:.0}) | {:.3} \
                 | {rest:.0} ({:.0}) | {:.0} | {n} |",
                h / d,
                hmin - dmin,
                1e6 / h,
            );
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
