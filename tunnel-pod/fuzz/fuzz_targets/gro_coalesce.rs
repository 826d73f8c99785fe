//! TUN offload on hostile input: the GRO `Coalescer` fed a sequence of TCP segments over IPv4
//! and IPv6 built from the fuzz bytes (valid checksums unless the fuzzer asks otherwise, so that
//! segments get past the candidate check and merge), flushed as the dataplane does; and
//! `segment` (TSO) and the `Coalescer` on packets taken from the fuzz bytes as they are.
//!
//! Checked, besides not panicking: a coalesced packet carries exactly the payloads that were
//! accepted, in order; cutting it again with its own `gso_size` gives back those payloads with
//! their sequence numbers and valid checksums; TSO segments of any packet are at most
//! `gso_size` long, carry the packet's payload in order, and have valid checksums; a packet
//! `kernel_coalesced` takes for the host's GRO output gets a header within the packet, segments
//! that fit the MTU, and a checksum that verifies once completed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tunnel_pod::offload::{
    Coalescer, GSO_NONE, GSO_TCPV4, GSO_TCPV6, VNET_HDR_LEN, VnetHdr, complete_checksum,
    kernel_coalesced, segment,
};

const SLOT: usize = 2048;
const HEADROOM: usize = 28;
const MAX_SEGMENTS: usize = 64;

/// Takes what the fuzz input has left; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
}

/// RFC 1071 one's complement sum.
fn sum(data: &[u8], mut acc: u32) -> u32 {
    for c in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The IP header's length (IPv4 IHL, or IPv6's fixed 40 bytes: no extension headers here).
fn ip_len(p: &[u8]) -> usize {
    if p[0] >> 4 == 6 {
        40
    } else {
        usize::from(p[0] & 0x0f) * 4
    }
}

/// The IP length field says `p.len()`, and the IPv4 header checksum (if any) and the TCP
/// checksum (pseudo-header included) verify.
fn checksums_ok(p: &[u8]) -> bool {
    // By the version, not the header length: an IPv4 header with options can be 40 bytes too.
    let (ihl, v6) = (ip_len(p), p[0] >> 4 == 6);
    let length = u16::from_be_bytes(if v6 { [p[4], p[5]] } else { [p[2], p[3]] });
    let total = usize::from(length) + if v6 { 40 } else { 0 };
    if total != p.len() || (!v6 && fold(sum(&p[..ihl], 0)) != 0) {
        return false;
    }
    let addresses = if v6 { &p[8..40] } else { &p[12..20] };
    let pseudo = sum(addresses, 0) + 6 + (total - ihl) as u32;
    fold(sum(&p[ihl..], pseudo)) == 0
}

/// A TCP segment of flow `f`, over IPv4 or (`f.v6`) IPv6, its checksums valid unless `corrupt`.
fn tcp_segment(f: &Flow, seq: u32, flags: u8, payload: &[u8], corrupt: bool) -> Vec<u8> {
    let tcp_len = if f.timestamps { 32 } else { 20 };
    let t = if f.v6 { 40 } else { 20 };
    let total = t + tcp_len + payload.len();
    let mut p = vec![0u8; total];
    if f.v6 {
        // Traffic class from `tos`, flow label from `id` (both must match to merge).
        p[0] = 0x60 | f.tos >> 4;
        p[1] = f.tos << 4;
        p[2..4].copy_from_slice(&f.id.to_be_bytes());
        p[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
        p[6] = 6;
        p[7] = f.ttl;
        p[8..24].copy_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p[24..40].copy_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, f.dst]);
    } else {
        p[0] = 0x45;
        p[1] = f.tos;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&f.id.to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = f.ttl;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, f.dst]);
    }
    p[t..t + 2].copy_from_slice(&f.sport.to_be_bytes());
    p[t + 2..t + 4].copy_from_slice(&4000u16.to_be_bytes());
    p[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
    p[t + 8..t + 12].copy_from_slice(&f.ack.to_be_bytes());
    p[t + 12] = ((tcp_len / 4) as u8) << 4;
    p[t + 13] = flags;
    p[t + 14..t + 16].copy_from_slice(&f.window.to_be_bytes());
    if f.timestamps {
        // NOP NOP TS(10): kind 8, length 10, TSval, TSecr.
        p[t + 20..t + 24].copy_from_slice(&[1, 1, 8, 10]);
        p[t + 24..t + 28].copy_from_slice(&f.tsval.to_be_bytes());
    }
    p[t + tcp_len..].copy_from_slice(payload);
    let addresses = if f.v6 {
        &p[8..40]
    } else {
        let ip = fold(sum(&p[..20], 0));
        p[10..12].copy_from_slice(&ip.to_be_bytes());
        &p[12..20]
    };
    let pseudo = sum(addresses, 0) + 6 + (total - t) as u32;
    let tcp = fold(sum(&p[t..], pseudo));
    p[t + 16..t + 18].copy_from_slice(&tcp.to_be_bytes());
    if corrupt {
        p[total - 1] ^= 0x5a;
    }
    p
}

#[derive(Clone, Copy)]
struct Flow {
    tos: u8,
    ttl: u8,
    id: u16,
    dst: u8,
    sport: u16,
    ack: u32,
    window: u16,
    timestamps: bool,
    tsval: u32,
    v6: bool,
}

/// Payload bytes and sequence number of each segment the coalescer took into its packet.
type Batch = Vec<(Vec<u8>, u32)>;

/// Checks one finished packet against what was pushed into it.
fn check_finished(out: &[u8], batch: &Batch, tso: &mut [u8], lens: &mut Vec<usize>) {
    let hdr = VnetHdr::parse(&out[..VNET_HDR_LEN]).expect("virtio header");
    let p = &out[VNET_HDR_LEN..];
    let (ihl, v6) = (ip_len(p), p[0] >> 4 == 6);
    let tcp_len = usize::from(p[ihl + 12] >> 4) * 4;
    let hl = ihl + tcp_len;
    let payload = &p[hl..];
    let expected: Vec<u8> = batch.iter().flat_map(|(b, _)| b.iter().copied()).collect();
    assert_eq!(
        payload,
        &expected[..],
        "coalesced payload differs from the segments pushed"
    );
    let length = if v6 {
        40 + usize::from(u16::from_be_bytes([p[4], p[5]]))
    } else {
        usize::from(u16::from_be_bytes([p[2], p[3]]))
    };
    assert_eq!(length, p.len(), "IP length field");
    if batch.len() == 1 {
        assert!(
            checksums_ok(p),
            "a lone segment passes through with its checksums"
        );
        return;
    }
    assert_eq!(hdr.gso_type, if v6 { GSO_TCPV6 } else { GSO_TCPV4 });
    assert_eq!(usize::from(hdr.csum_start), ihl);
    let gso = usize::from(hdr.gso_size);
    assert_eq!(
        gso,
        batch[0].0.len(),
        "gso_size is the first segment's payload"
    );
    segment(p, gso, tso, SLOT, HEADROOM, lens).expect("a coalesced packet must segment");
    assert_eq!(
        lens.len(),
        batch.len(),
        "segments out differ from segments in"
    );
    for (i, (&len, (payload, seq))) in lens.iter().zip(batch).enumerate() {
        let s = &tso[i * SLOT + HEADROOM..i * SLOT + HEADROOM + len];
        assert_eq!(&s[hl..], &payload[..], "segment {i} payload");
        assert_eq!(seq_of(s), *seq, "segment {i} seq");
        assert!(checksums_ok(s), "segment {i} checksums");
    }
}

fn seq_of(p: &[u8]) -> u32 {
    let t = ip_len(p);
    u32::from_be_bytes([p[t + 4], p[t + 5], p[t + 6], p[t + 7]])
}

fn coalesce(input: &mut Input, tso: &mut [u8], lens: &mut Vec<usize>) {
    let options = input.u8();
    let mut flow = Flow {
        tos: 0,
        ttl: 64,
        id: input.u16(),
        dst: 2,
        sport: 3000,
        ack: input.u32(),
        window: 512,
        timestamps: options & 1 == 1,
        tsval: 7,
        v6: options & 2 == 2,
    };
    let mut seq = input.u32();
    let mut gro = Coalescer::default();
    let mut batch: Batch = Vec::new();
    let count = usize::from(input.u8()) % 48;
    for _ in 0..count {
        let control = input.u8();
        // Low bits: change one flow field (a different flow must not merge).
        match control & 0x0f {
            1 => flow.tos = input.u8(),
            2 => flow.ttl = input.u8(),
            3 => flow.dst = input.u8(),
            4 => flow.sport = input.u16(),
            5 => flow.ack = input.u32(),
            6 => flow.window = input.u16(),
            7 => flow.tsval = input.u32(),
            8 => flow.timestamps = !flow.timestamps,
            9 => flow.v6 = !flow.v6,
            // IPv6: a new flow label.
            10 => flow.id = input.u16(),
            _ => {}
        }
        // The IPv4 ID changes per datagram; in IPv6 the same field is the flow label.
        if !flow.v6 {
            flow.id = flow.id.wrapping_add(1);
        }
        let flags = match control >> 4 & 0x3 {
            0 => 0x10,       // ACK
            1 => 0x18,       // ACK PSH
            2 => input.u8(), // anything
            _ => 0x10,
        };
        if control & 0x40 != 0 {
            seq = input.u32(); // out of order
        }
        let len = usize::from(input.u16()) % 1500;
        let fill = input.u8();
        let payload: Vec<u8> = (0..len).map(|i| fill.wrapping_add(i as u8)).collect();
        let p = tcp_segment(&flow, seq, flags, &payload, control & 0x80 != 0);
        seq = seq.wrapping_add(len as u32);
        // As the dataplane: push; when refused, flush and push again; else on its own.
        if gro.push(&p) {
            batch.push((payload, seq_of(&p)));
            continue;
        }
        if let Some(out) = gro.finish() {
            let out = out.to_vec();
            check_finished(&out, &batch, tso, lens);
        }
        batch.clear();
        if gro.push(&p) {
            batch.push((payload, seq_of(&p)));
        }
    }
    if let Some(out) = gro.finish() {
        let out = out.to_vec();
        check_finished(&out, &batch, tso, lens);
    } else {
        assert!(batch.is_empty(), "segments pushed but nothing to finish");
    }
}

fn tso_packet(packet: &[u8], gso: usize, tso: &mut [u8], lens: &mut Vec<usize>) {
    if segment(packet, gso, tso, SLOT, HEADROOM, lens).is_err() {
        return;
    }
    let v4 = packet[0] >> 4 == 4;
    let ip_len = if v4 {
        usize::from(packet[0] & 0x0f) * 4
    } else {
        40
    };
    let hl = ip_len + usize::from(packet[ip_len + 12] >> 4) * 4;
    let mut carried = Vec::new();
    for (i, &len) in lens.iter().enumerate() {
        assert!(
            len >= hl && len - hl <= gso,
            "segment {i} of {len} bytes, gso_size {gso}"
        );
        let s = &tso[i * SLOT + HEADROOM..i * SLOT + HEADROOM + len];
        carried.extend_from_slice(&s[hl..]);
        if v4 {
            assert!(checksums_ok(s), "TSO segment {i} checksums");
        }
    }
    assert_eq!(
        &carried[..],
        &packet[hl..],
        "TSO segments do not carry the payload in order"
    );
}

/// `packet` as if a raw socket had received it inside GRE, with tunnel MTU `mtu`.
fn host_coalesced(packet: &[u8], mtu: usize) {
    let Some(h) = kernel_coalesced(packet, mtu, None) else {
        return;
    };
    let (start, hl) = (usize::from(h.csum_start), usize::from(h.hdr_len));
    assert!(
        start + 18 <= hl && hl <= packet.len(),
        "header {h:?} outside {} bytes",
        packet.len()
    );
    if h.gso_type == GSO_NONE {
        assert_eq!(h.gso_size, 0);
        assert!(
            packet.len() <= mtu,
            "{} bytes not cut for MTU {mtu}",
            packet.len()
        );
    } else {
        assert!(
            h.gso_size > 0 && hl + usize::from(h.gso_size) <= mtu,
            "{h:?} for MTU {mtu}"
        );
    }
    let mut p = packet.to_vec();
    complete_checksum(&mut p, &h).expect("the header's checksum field is inside the packet");
    if p[0] >> 4 == 4 && usize::from(u16::from_be_bytes([p[2], p[3]])) == p.len() {
        let ihl = usize::from(p[0] & 0x0f) * 4;
        let pseudo = sum(&p[12..20], 0) + 6 + (p.len() - ihl) as u32;
        assert_eq!(
            fold(sum(&p[ihl..], pseudo)),
            0,
            "completed TCP checksum does not verify"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let mut tso = vec![0u8; MAX_SEGMENTS * SLOT];
    let mut lens = Vec::new();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        coalesce(&mut Input(rest), &mut tso, &mut lens);
    } else {
        let mut input = Input(rest);
        let gso = usize::from(input.u16());
        tso_packet(input.0, gso, &mut tso, &mut lens);
        host_coalesced(input.0, gso);
        // Raw bytes into the coalescer: whatever it takes goes out whole.
        let mut gro = Coalescer::default();
        if gro.push(input.0) {
            let out = gro.finish().expect("a pushed segment").to_vec();
            assert!(out.len() > VNET_HDR_LEN && input.0.starts_with(&out[VNET_HDR_LEN..]));
        }
    }
});
