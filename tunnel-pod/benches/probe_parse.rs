//! Health-probe parsing (`ProbeSpec::match_return`, `is_peer_probe`), ours beside the same
//! decision written with etherparse, to decide whether etherparse may replace it (it runs for
//! every ICMP packet the tunnel receives, so it must not be slower).
//!
//! `cargo bench -p magictunnel-tunnel-pod --bench probe_parse`

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use etherparse::{Icmpv4Slice, Icmpv4Type, IpNumber, Ipv4Slice, PacketBuilder};
use tunnel_pod::config::HealthCheckType;
use tunnel_pod::health::{self, ProbeSpec};

fn spec() -> ProbeSpec {
    ProbeSpec {
        style: HealthCheckType::Reply,
        local: Ipv4Addr::new(10, 99, 0, 0),
        target: Ipv4Addr::new(10, 99, 0, 1),
        identifier: 0xbeef,
        nonce: *b"12345678",
        ttl: 64,
    }
}

/// `match_return` with etherparse's slices: the same checks, in the same order.
fn etherparse_match_return(s: &ProbeSpec, packet: &[u8]) -> Option<u16> {
    let ip = Ipv4Slice::from_slice(packet).ok()?;
    if ip.payload_ip_number() != IpNumber::ICMP || ip.header().destination_addr() != s.local {
        return None;
    }
    let icmp = Icmpv4Slice::from_slice(ip.payload().payload).ok()?;
    let Icmpv4Type::EchoReply(echo) = icmp.icmp_type() else {
        return None;
    };
    let data = icmp.payload();
    let ours = echo.id == s.identifier
        && data.get(..4) == Some(&b"MTHC"[..])
        && data.get(4..12) == Some(&s.nonce[..])
        && icmp.checksum() == icmp.icmp_type().calc_checksum(data);
    ours.then_some(echo.seq)
}

/// `is_peer_probe` with etherparse's slices.
fn etherparse_is_peer_probe(packet: &[u8], peer: Ipv4Addr) -> bool {
    let Ok(ip) = Ipv4Slice::from_slice(packet) else {
        return false;
    };
    ip.payload_ip_number() == IpNumber::ICMP
        && ip.header().destination_addr() == peer
        && Icmpv4Slice::from_slice(ip.payload().payload).is_ok()
}

fn probes(c: &mut Criterion) {
    let s = spec();
    let mut ours = [0u8; 64];
    let n = s.emit(7, &mut ours).expect("fits");
    let ours = &ours[..n];
    // Someone's ping through the tunnel: 56 bytes of data, as ping(8) sends.
    let mut ping = Vec::new();
    PacketBuilder::ipv4([10, 99, 0, 1], [10, 99, 0, 0], 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut ping, &[0x5a; 56])
        .expect("fits");
    assert_eq!(s.match_return(ours), etherparse_match_return(&s, ours));
    assert_eq!(s.match_return(&ping), etherparse_match_return(&s, &ping));
    assert_eq!(
        health::is_peer_probe(ours, s.local),
        etherparse_is_peer_probe(ours, s.local)
    );
    let mut g = c.benchmark_group("probe_parse");
    g.measurement_time(Duration::from_secs(2));
    g.warm_up_time(Duration::from_millis(500));
    for (name, p) in [("our_probe", ours), ("foreign_ping", &ping[..])] {
        g.bench_function(format!("match_return/wire/{name}"), |b| {
            b.iter(|| s.match_return(black_box(p)))
        });
        g.bench_function(format!("match_return/etherparse/{name}"), |b| {
            b.iter(|| etherparse_match_return(&s, black_box(p)))
        });
        g.bench_function(format!("is_peer_probe/wire/{name}"), |b| {
            b.iter(|| health::is_peer_probe(black_box(p), s.local))
        });
        g.bench_function(format!("is_peer_probe/etherparse/{name}"), |b| {
            b.iter(|| etherparse_is_peer_probe(black_box(p), s.local))
        });
    }
    g.finish();
}

criterion_group!(benches, probes);
criterion_main!(benches);
