//! The operator's pure path for 1,000 tunnels: validate (against all 1,000, the cross-object
//! rules make it O(n) per tunnel) and build the desired objects. Throughput is per tunnel.
//!   cargo bench -p magictunnel-operator --bench pure_path

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kube::Resource;
use magictunnel_types::config::Psk;
use operator::build;
use operator::crd::MagicTunnel;
use operator::fixtures::{gre_tunnel, ipsec_tunnel};
use operator::index::TunnelIndex;
use operator::settings::Settings;
use operator::validate::validate;

const TUNNELS: usize = 1_000;

/// Half GRE, half IPsec, all on one local endpoint: the worst case for the conflict scans.
fn fleet() -> Vec<MagicTunnel> {
    (0..TUNNELS)
        .map(|i| {
            let rank = i64::try_from(i).unwrap_or(0);
            let name = format!("tunnel-{i}");
            let mut t = if i % 2 == 0 {
                gre_tunnel(&name, rank)
            } else {
                ipsec_tunnel(
                    &name,
                    rank,
                    Some(&format!("198.51.{}.{}", 100 + i / 250, i % 250 + 1)),
                )
            };
            t.spec.customer_endpoint = Some(format!("198.51.{}.{}", 100 + i / 250, i % 250 + 1));
            t
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let tunnels = fleet();
    let settings = Settings::example();
    let all = TunnelIndex::of(&tunnels, &settings);
    let psk = Psk::new(b"benchmark-psk-0123456789".to_vec());
    let owners: Vec<_> = tunnels
        .iter()
        .map(|t| t.controller_owner_ref(&()))
        .collect();

    let mut group = c.benchmark_group("pure_path_1000_tunnels");
    group.throughput(Throughput::Elements(TUNNELS as u64));
    group.sample_size(20);
    group.bench_function("validate", |b| {
        b.iter(|| {
            for t in &tunnels {
                black_box(validate(t, &all, &settings).ok());
            }
        })
    });
    let validated: Vec<_> = tunnels
        .iter()
        .map(|t| validate(t, &all, &settings).expect("fleet is valid"))
        .collect();
    group.bench_function("build", |b| {
        b.iter(|| {
            for (v, owner) in validated.iter().zip(&owners) {
                let owner = owner.as_ref().expect("owner");
                black_box(build::desired(v, owner, v.ipsec.as_ref().map(|_| &psk), &settings).ok());
            }
        })
    });
    group.bench_function("validate_and_build", |b| {
        b.iter(|| {
            for (t, owner) in tunnels.iter().zip(&owners) {
                let owner = owner.as_ref().expect("owner");
                if let Ok(v) = validate(t, &all, &settings) {
                    black_box(
                        build::desired(&v, owner, v.ipsec.as_ref().map(|_| &psk), &settings).ok(),
                    );
                }
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
