//! Static ESP SAs for the lab's two tunnel-pods: A sends with SPI 0x1001, B with 0x2002, keys
//! derived from a seed so that a test can seal or open what a pod sends.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::Side;

/// (encryption, integrity, encryption key bytes, integrity key bytes)
pub const SUITES: [(&str, Option<&str>, usize, usize); 8] = [
    ("AES-GCM-16-128", None, 20, 0),
    ("AES-GCM-16-256", None, 36, 0),
    ("AES-CBC-128", Some("HMAC-SHA2-256-128"), 16, 32),
    ("AES-CBC-256", Some("HMAC-SHA2-256-128"), 32, 32),
    ("AES-CBC-128", Some("HMAC-SHA1-96"), 16, 20),
    ("AES-CBC-256", Some("HMAC-SHA1-96"), 32, 20),
    ("NULL", Some("HMAC-SHA2-256-128"), 0, 32),
    ("NULL", Some("HMAC-SHA1-96"), 0, 20),
];

/// The key bytes of the SA with this seed (the integrity key uses `seed + 100`).
pub fn key_bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn sa(spi: u32, enc: &str, integ: Option<&str>, ek: usize, ik: usize, seed: u8) -> String {
    let key = |n: usize, s: u8| BASE64.encode(key_bytes(n, s));
    let mut y = format!(
        "{{spi: {spi}, encryption: {enc}, encryptionKey: \"{}\"",
        key(ek, seed)
    );
    if let Some(i) = integ {
        y.push_str(&format!(
            ", integrity: {i}, integrityKey: \"{}\"",
            key(ik, seed.wrapping_add(100))
        ));
    }
    y.push('}');
    y
}

/// Seeds of the two SAs' keys: A → B (SPI 0x1001) and B → A (SPI 0x2002).
pub const SEED_A_TO_B: u8 = 1;
pub const SEED_B_TO_A: u8 = 2;

/// The `ipsec:` block for one side: A sends with SPI 0x1001, B with 0x2002.
pub fn ipsec_block(side: Side, suite: (&str, Option<&str>, usize, usize), replay: bool) -> String {
    let (enc, integ, ek, ik) = suite;
    let a_to_b = sa(0x1001, enc, integ, ek, ik, SEED_A_TO_B);
    let b_to_a = sa(0x2002, enc, integ, ek, ik, SEED_B_TO_A);
    let (out, inb) = if side == Side::A {
        (a_to_b, b_to_a)
    } else {
        (b_to_a, a_to_b)
    };
    format!(
        "  allowNullCipher: true\n  replayProtection: {replay}\n  staticSa:\n    outbound: {out}\n    inbound: {inb}"
    )
}
