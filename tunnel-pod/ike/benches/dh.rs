//! Cost of one Diffie-Hellman half per group: generate a key pair, then agree with a peer's
//! public value (what one side of IKE_SA_INIT or a PFS CREATE_CHILD_SA pays).
//! `cargo bench -p magictunnel-ike --bench dh -- --quick`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use ike::crypto::{Group, KeyPair};
use ring::rand::SystemRandom;

fn dh(c: &mut Criterion) {
    let rng = SystemRandom::new();
    let mut g = c.benchmark_group("dh");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    for (name, group) in [
        ("ecp384", Group::Ecp384),
        ("modp2048", Group::Modp2048),
        ("modp1536", Group::Modp1536),
    ] {
        let peer = KeyPair::generate(group, &rng).unwrap().public().to_vec();
        g.bench_function(format!("{name}/generate"), |b| {
            b.iter(|| KeyPair::generate(group, &rng).unwrap())
        });
        g.bench_function(format!("{name}/generate+agree"), |b| {
            b.iter(|| {
                KeyPair::generate(group, &rng)
                    .unwrap()
                    .agree(&peer)
                    .unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, dh);
criterion_main!(benches);
