//! The ESP receive path on hostile bytes: port-4500 classification, then an inbound SA (with
//! anti-replay) opening whatever claims to be ESP. Under `cfg(fuzzing)` the ICV check passes,
//! so the fuzzer reaches padding, next-header and inner-packet parsing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tunnel_pod::config::{EspEncryption, Integrity, Secret};
use tunnel_pod::esp::sa::{Inbound, SaLifetime, SaParams};
use tunnel_pod::wire::udp_encap::{Datagram, classify};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let (encryption, integrity, enc_len, integ_len) = match selector % 4 {
        0 => (EspEncryption::AesGcm16_256, None, 36, 0),
        1 => (EspEncryption::AesCbc128, Some(Integrity::HmacSha2_256_128), 16, 32),
        2 => (EspEncryption::AesCbc256, Some(Integrity::HmacSha1_96), 32, 20),
        _ => (EspEncryption::Null, Some(Integrity::HmacSha2_256_128), 0, 32),
    };
    let params = SaParams {
        spi: 0x1000,
        encryption,
        integrity,
        encryption_key: Secret::new(vec![1; enc_len]),
        integrity_key: integrity.map(|_| Secret::new(vec![2; integ_len])),
        lifetime: SaLifetime::default(),
        traffic_selectors: Default::default(),
    };
    let Ok(sa) = Inbound::new(params, Some(1024)) else { return };
    if let Datagram::Esp(esp) = classify(rest) {
        let mut packet = esp.to_vec();
        let _ = sa.open(&mut packet);
        // The same packet again exercises the replay path.
        let mut again = esp.to_vec();
        let _ = sa.open(&mut again);
    }
});
