//! ESP seal/open per suite at 64, 512 and 1400 bytes, each beside the raw primitive on the same
//! buffer size in the same run: `ring` AES-GCM for the GCM suites, `aes`+`cbc` and `ring` HMAC
//! for the CBC suites, `ring` HMAC alone for NULL.
//!
//! `cargo bench -p magictunnel-tunnel-pod --bench esp_path`

use std::hint::black_box;

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockEncryptMut, KeyIvInit};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hmac;
use tunnel_pod::config::{EspEncryption, Integrity, Secret};
use tunnel_pod::esp::sa::{Inbound, NEXT_IPV4, Outbound, SaLifetime, SaParams, SenderSlot};
use tunnel_pod::esp::suite::key_lengths;

fn params(enc: EspEncryption, integ: Option<Integrity>) -> SaParams {
    let (e, i) = key_lengths(enc, integ);
    SaParams {
        spi: 0x1000,
        encryption: enc,
        integrity: integ,
        encryption_key: Secret::new(vec![7; e]),
        integrity_key: integ.map(|_| Secret::new(vec![9; i])),
        lifetime: SaLifetime::default(),
        traffic_selectors: Default::default(),
    }
}

fn inner(len: usize) -> Vec<u8> {
    let mut p = vec![0x55u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p
}

/// A primitive applied to a buffer in place.
type Primitive = Box<dyn FnMut(&mut [u8])>;

/// The raw primitive for this suite on `buf` (encrypt + authenticate, no ESP framing).
fn raw(enc: EspEncryption, integ: Option<Integrity>) -> Primitive {
    match enc {
        EspEncryption::AesGcm16_128 | EspEncryption::AesGcm16_256 => {
            let alg = if enc == EspEncryption::AesGcm16_128 {
                &AES_128_GCM
            } else {
                &AES_256_GCM
            };
            let key = LessSafeKey::new(UnboundKey::new(alg, &vec![7; alg.key_len()]).expect("key"));
            let mut n = 0u64;
            Box::new(move |buf: &mut [u8]| {
                n += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&n.to_be_bytes());
                let tag = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from([0u8; 8]),
                        buf,
                    )
                    .expect("seal");
                let _ = black_box(tag);
            })
        }
        _ => {
            let alg = match integ {
                Some(Integrity::HmacSha1_96) => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
                _ => hmac::HMAC_SHA256,
            };
            let mac = hmac::Key::new(alg, &[9; 32]);
            Box::new(move |buf: &mut [u8]| {
                let len = buf.len() / 16 * 16;
                match enc {
                    EspEncryption::AesCbc128 => {
                        cbc::Encryptor::<aes::Aes128>::new(&[7u8; 16].into(), &[1u8; 16].into())
                            .encrypt_padded_mut::<NoPadding>(&mut buf[..len], len)
                            .expect("cbc");
                    }
                    EspEncryption::AesCbc256 => {
                        cbc::Encryptor::<aes::Aes256>::new(&[7u8; 32].into(), &[1u8; 16].into())
                            .encrypt_padded_mut::<NoPadding>(&mut buf[..len], len)
                            .expect("cbc");
                    }
                    _ => {}
                }
                black_box(hmac::sign(&mac, buf));
            })
        }
    }
}

fn esp(c: &mut Criterion) {
    use EspEncryption::*;
    use Integrity::*;
    let suites = [
        ("aes-gcm-128", AesGcm16_128, None),
        ("aes-gcm-256", AesGcm16_256, None),
        ("aes-cbc-128-sha256", AesCbc128, Some(HmacSha2_256_128)),
        ("aes-cbc-256-sha256", AesCbc256, Some(HmacSha2_256_128)),
        ("aes-cbc-256-sha1", AesCbc256, Some(HmacSha1_96)),
        ("null-sha256", Null, Some(HmacSha2_256_128)),
    ];
    for (name, enc, integ) in suites {
        let mut group = c.benchmark_group(format!("esp/{name}"));
        for size in [64usize, 512, 1400] {
            group.throughput(Throughput::Bytes(size as u64));
            let mut buf = vec![0u8; size];
            let mut primitive = raw(enc, integ);
            group.bench_function(BenchmarkId::new("raw", size), |b| {
                b.iter(|| primitive(black_box(&mut buf)))
            });
            let out = Outbound::new(params(enc, integ)).expect("sa");
            let (head, tail) = (out.headroom(), out.tailroom());
            let out = out;
            let packet = inner(size);
            let mut frame = vec![0u8; head + size + tail];
            group.bench_function(BenchmarkId::new("seal", size), |b| {
                b.iter(|| {
                    frame[head..head + size].copy_from_slice(&packet);
                    black_box(
                        out.seal(&mut frame, head..head + size, NEXT_IPV4)
                            .expect("seal"),
                    );
                })
            });
            let fresh = Outbound::new(params(enc, integ)).expect("sa");
            let mut f = vec![0u8; head + size + tail];
            f[head..head + size].copy_from_slice(&packet);
            let r = fresh
                .seal(&mut f, head..head + size, NEXT_IPV4)
                .expect("seal");
            let sealed = f[r].to_vec();
            let inbound = Inbound::new(params(enc, integ), None).expect("sa");
            let mut rx = sealed.clone();
            group.bench_function(BenchmarkId::new("open", size), |b| {
                b.iter(|| {
                    rx.copy_from_slice(&sealed);
                    black_box(inbound.open(&mut rx).expect("open"));
                })
            });
        }
        group.finish();
    }
}

/// Sender slots (issue #11): sealing 1400 B with AES-256-GCM as the one sender of an SA and as
/// slot 1 of 2 of a shared SA (one wall-clock read, two CAS loops and a modulo more per packet).
fn slots(c: &mut Criterion) {
    let size = 1400;
    let mut group = c.benchmark_group("esp/slots/aes-gcm-256");
    group.throughput(Throughput::Bytes(size as u64));
    let epoch_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let lifetime = std::time::Duration::from_secs(3600);
    let single = Outbound::new(params(EspEncryption::AesGcm16_256, None)).expect("sa");
    let owner = Outbound::shared(
        params(EspEncryption::AesGcm16_256, None),
        SenderSlot { index: 0, count: 2 },
        epoch_ms,
        lifetime,
    )
    .expect("sa");
    let shared =
        Outbound::restore_shared(owner.state(), SenderSlot { index: 1, count: 2 }).expect("sa");
    let packet = inner(size);
    for (name, out) in [("single", &single), ("shared", &shared)] {
        let (head, tail) = (out.headroom(), out.tailroom());
        let mut frame = vec![0u8; head + size + tail];
        group.bench_function(BenchmarkId::new(name, size), |b| {
            b.iter(|| {
                frame[head..head + size].copy_from_slice(&packet);
                black_box(
                    out.seal(&mut frame, head..head + size, NEXT_IPV4)
                        .expect("seal"),
                );
            })
        });
    }
    group.finish();
}

criterion_group!(benches, esp, slots);
criterion_main!(benches);
