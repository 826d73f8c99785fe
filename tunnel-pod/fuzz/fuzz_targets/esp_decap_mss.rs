//! The whole ESP receive path as the dataplane runs it: `Encap::Esp` (SAs installed as IKE or a
//! static config installs them) classifies a port-4500 datagram, finds the SA by SPI, checks
//! anti-replay, opens (ICV bypassed under `cfg(fuzzing)`; GCM and CBC still decrypt), checks
//! padding and next header, clamps the MSS of the inner packet; then the inner packet meets the
//! GRO coalescer, as on the way to the TUN.
//!
//! Two modes, by the selector byte: the fuzz bytes are the datagram itself (any SPI, marker or
//! keepalive), or they are an inner packet that the matching outbound SA seals first, so that
//! the fuzzer controls the plaintext behind every suite's decryption. In the second mode what
//! comes out must be what went in (both directions clamp the MSS to the same value).
#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use tunnel_pod::config::{EspEncryption, Integrity, Secret};
use tunnel_pod::encap::{Encap, Esp, Received, TAILROOM};
use tunnel_pod::esp::sa::{Inbound, Outbound, SaLifetime, SaParams};
use tunnel_pod::gre::HEADROOM;
use tunnel_pod::offload::Coalescer;

const SPI: u32 = 0x1000;
const MTU: u16 = 1438;
const MSS: u16 = 1398;

fn params(selector: u8) -> SaParams {
    let (encryption, integrity, enc_len, integ_len) = match selector % 8 {
        0 => (EspEncryption::AesGcm16_128, None, 20, 0),
        1 => (EspEncryption::AesGcm16_256, None, 36, 0),
        2 => (EspEncryption::AesCbc128, Some(Integrity::HmacSha2_256_128), 16, 32),
        3 => (EspEncryption::AesCbc128, Some(Integrity::HmacSha1_96), 16, 20),
        4 => (EspEncryption::AesCbc256, Some(Integrity::HmacSha2_256_128), 32, 32),
        5 => (EspEncryption::AesCbc256, Some(Integrity::HmacSha1_96), 32, 20),
        6 => (EspEncryption::Null, Some(Integrity::HmacSha2_256_128), 0, 32),
        _ => (EspEncryption::Null, Some(Integrity::HmacSha1_96), 0, 20),
    };
    SaParams {
        spi: SPI,
        encryption,
        integrity,
        encryption_key: Secret::new(vec![1; enc_len]),
        integrity_key: integrity.map(|_| Secret::new(vec![2; integ_len])),
        lifetime: SaLifetime::default(),
        traffic_selectors: Default::default(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let esp = Esp::new(MTU, Some(MSS));
    // Bit 6: anti-replay off, as `replayProtection: false` configures it.
    let window = (selector & 0x40 == 0).then_some(64);
    let Ok(inbound) = Inbound::new(params(selector), window) else { return };
    let Ok(outbound) = Outbound::new(params(selector)) else { return };
    esp.install_inbound(inbound);
    esp.activate_outbound(Arc::new(outbound));
    esp.set_peer(SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 2), 4500));
    let encap = Encap::Esp(Box::new(esp));
    let mut gro = Coalescer::default();

    if selector & 0x80 == 0 {
        // The datagram as received. Bit 3 writes our SPI over the first four bytes, so the
        // fuzzer need not find it before it can reach the SA.
        let mut datagram = rest.to_vec();
        if selector & 0x08 != 0
            && let Some(spi) = datagram.get_mut(..4)
        {
            spi.copy_from_slice(&SPI.to_be_bytes());
        }
        for _ in 0..2 {
            // Twice: the second time meets the replay window (or not, with it off).
            let mut copy = datagram.clone();
            if let Ok(Received::Inner(inner)) = encap.decap(&mut copy)
                && let Some(p) = copy.get(inner.range)
                && !gro.push(p)
            {
                let _ = gro.finish();
                let _ = gro.push(p);
            }
        }
    } else {
        // An inner packet sealed by the matching outbound SA, then received.
        let mut buf = vec![0u8; HEADROOM + rest.len() + TAILROOM];
        buf[HEADROOM..HEADROOM + rest.len()].copy_from_slice(rest);
        let Ok(wire) = encap.encap(&mut buf, rest.len()) else { return };
        // What encap sealed: the inner packet after its egress MSS clamp.
        let mut sent = rest.to_vec();
        let _ = tunnel_pod::mss::clamp(&mut sent, MSS);
        let mut datagram = buf[wire].to_vec();
        match encap.decap(&mut datagram) {
            Ok(Received::Inner(inner)) => {
                let got = &datagram[inner.range];
                // The receiver trims to the inner header's own length; where that is the whole
                // packet, every byte must have survived (the MSS clamp is idempotent).
                assert!(got.len() <= sent.len(), "the inner packet grew");
                if got.len() == sent.len() {
                    assert_eq!(got, &sent[..], "the inner packet changed on its way through ESP");
                }
                if !gro.push(got) {
                    let _ = gro.finish();
                }
            }
            Ok(Received::Ike(_)) => panic!("a sealed ESP packet was taken for IKE"),
            Err(_) => {}
        }
    }
    let _ = gro.finish();
});
