//! Per-packet cost of the GRE data path, each beside a baseline in the same run: a plain copy
//! of the same bytes (the least any userspace dataplane does per packet).
//!
//! `cargo bench -p magictunnel-tunnel-pod --bench gre_path`

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tunnel_pod::encap::Encap;
use tunnel_pod::gre::{Gre, HEADROOM};
use tunnel_pod::offload::{Coalescer, segment};
use tunnel_pod::wire::ipv4;

const LOCAL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const CUSTOMER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

fn gre() -> Gre {
    Gre {
        local: LOCAL,
        customer: CUSTOMER,
        ttl: 64,
        key: Some(1001),
        mtu: 1500,
        mss: Some(1432),
        idents: tunnel_pod::gre::Idents::random(),
    }
}

/// A TCP/IPv4 ACK segment of `len` bytes with a valid checksum (so GRO accepts it).
fn tcp_packet(len: usize, seq: u32) -> Vec<u8> {
    let mut p = vec![0u8; len];
    ipv4::Repr {
        src: [10, 0, 0, 1].into(),
        dst: [10, 0, 0, 2].into(),
        protocol: ipv4::PROTO_TCP,
        ttl: 64,
        payload_len: len - 20,
    }
    .emit(&mut p)
    .expect("fits");
    p[20..22].copy_from_slice(&1000u16.to_be_bytes());
    p[22..24].copy_from_slice(&2000u16.to_be_bytes());
    p[24..28].copy_from_slice(&seq.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = 0x10;
    for (i, b) in p[40..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let pseudo = tunnel_pod::wire::checksum::pseudo_header_v4(
        [10, 0, 0, 1],
        [10, 0, 0, 2],
        6,
        (len - 20) as u16,
    );
    let c = tunnel_pod::wire::checksum::finish(tunnel_pod::wire::checksum::sum(&p[20..], pseudo));
    p[36..38].copy_from_slice(&c.to_be_bytes());
    p
}

fn per_packet(c: &mut Criterion) {
    // Through `Encap`, as the data path calls it.
    let g = Encap::Gre(gre());
    let mut group = c.benchmark_group("gre");
    for size in [64usize, 512, 1400] {
        group.throughput(Throughput::Bytes(size as u64));
        let inner = tcp_packet(size, 1);
        let mut buf = vec![0u8; HEADROOM + size];
        group.bench_with_input(
            BenchmarkId::new("baseline_copy", size),
            &inner,
            |b, inner| {
                b.iter(|| {
                    buf[HEADROOM..].copy_from_slice(black_box(inner));
                    black_box(&buf);
                })
            },
        );
        group.bench_with_input(BenchmarkId::new("encap", size), &inner, |b, inner| {
            b.iter(|| {
                buf[HEADROOM..].copy_from_slice(black_box(inner));
                black_box(g.encap(&mut buf, size).expect("encap"));
            })
        });
        let mut wire = vec![0u8; HEADROOM + size];
        wire[HEADROOM..].copy_from_slice(&inner);
        let sent = g.encap(&mut wire, size).expect("encap");
        // What the peer's raw socket receives: our datagram with its source as the customer.
        let mut datagram = wire[sent].to_vec();
        datagram[12..16].copy_from_slice(&CUSTOMER.octets());
        datagram[16..20].copy_from_slice(&LOCAL.octets());
        let mut rx = datagram.clone();
        group.bench_with_input(BenchmarkId::new("decap", size), &datagram, |b, d| {
            b.iter(|| {
                rx.copy_from_slice(black_box(d));
                black_box(g.decap(&mut rx).expect("decap"));
            })
        });
    }
    group.finish();
}

/// One 64 KiB TSO packet from the TUN device cut into 1432-byte segments, and 45 received
/// segments glued into one packet for the TUN device; baseline: copying the same 64 KiB.
fn offload(c: &mut Criterion) {
    let mut group = c.benchmark_group("offload");
    let big = tcp_packet(40 + 45 * 1432, 7);
    group.throughput(Throughput::Bytes(big.len() as u64));
    let mut copy = vec![0u8; big.len()];
    group.bench_function("baseline_copy_64k", |b| {
        b.iter(|| {
            copy.copy_from_slice(black_box(&big));
            black_box(&copy);
        })
    });
    let (slot, mut out, mut lens) = (2048, vec![0u8; 64 * 2048], Vec::new());
    group.bench_function("segment_64k", |b| {
        b.iter(|| {
            segment(black_box(&big), 1432, &mut out, slot, HEADROOM, &mut lens).expect("segments");
            black_box(&lens);
        })
    });
    segment(&big, 1432, &mut out, slot, HEADROOM, &mut lens).expect("segments");
    let segments: Vec<Vec<u8>> = lens
        .iter()
        .enumerate()
        .map(|(i, &len)| out[i * slot + HEADROOM..i * slot + HEADROOM + len].to_vec())
        .collect();
    let mut gro = Coalescer::default();
    group.bench_function("coalesce_64k", |b| {
        b.iter(|| {
            for s in &segments {
                assert!(gro.push(black_box(s)));
            }
            black_box(gro.finish());
        })
    });
    group.finish();
}

criterion_group!(benches, per_packet, offload);
criterion_main!(benches);
