//! Building messages: headers, SK protection and RFC 7383 fragmentation, random values.

use ring::rand::SecureRandom;

use crate::crypto::{SkCipher, SkError};
use crate::wire::{
    ExchangeType, Fragment, Header, Notify, NotifyType, Payload, PayloadType, ProtocolId, flags,
    write_encrypted_header, write_payloads,
};

use super::frag::MAX_FRAGMENTS;

/// IKEv2, version 2.0.
pub const VERSION: u8 = 0x20;

/// A header with `next_payload` and `length` left for the encoder.
pub fn header(
    spi_i: u64,
    spi_r: u64,
    exchange: ExchangeType,
    original_initiator: bool,
    response: bool,
    message_id: u32,
) -> Header {
    let mut f = 0;
    if original_initiator {
        f |= flags::INITIATOR;
    }
    if response {
        f |= flags::RESPONSE;
    }
    Header {
        spi_i,
        spi_r,
        next_payload: PayloadType::NONE,
        version: VERSION,
        exchange,
        flags: f,
        message_id,
        length: 0,
    }
}

pub fn notify(kind: NotifyType, data: Vec<u8>) -> Payload {
    Payload::Notify(Notify {
        protocol: ProtocolId::NONE,
        spi: Vec::new(),
        kind,
        data,
    })
}

const SK_HEADER: usize = 4;
const SKF_HEADER: usize = 8;

/// Protects `payloads` in an SK payload, or — when `mtu` is given and the message would be
/// larger — in SKF fragments of at most `mtu` bytes each (RFC 7383 §2.5), each a separately
/// protected message with the same header fields.
pub fn seal(
    mut hdr: Header,
    payloads: &[Payload],
    cipher: &SkCipher,
    mtu: Option<usize>,
    rng: &dyn SecureRandom,
) -> Result<Vec<Vec<u8>>, SkError> {
    let mut plain = Vec::new();
    let first = write_payloads(payloads, PayloadType::NONE, &mut plain);
    let sealed = cipher.sealed_len(plain.len());
    let total = Header::LEN.saturating_add(SK_HEADER).saturating_add(sealed);
    let chunk = match mtu {
        Some(m) if total > m && !plain.is_empty() => fragment_size(cipher, m)
            .filter(|c| plain.len().div_ceil(*c) <= usize::from(MAX_FRAGMENTS)),
        _ => None,
    };
    let Some(chunk) = chunk else {
        hdr.next_payload = PayloadType::SK;
        hdr.length = u32::try_from(total).map_err(|_| SkError::Truncated)?;
        let mut buf = Vec::with_capacity(total);
        hdr.write(&mut buf);
        write_encrypted_header(first, sealed, None, &mut buf);
        cipher.seal(&mut buf, &plain, rng)?;
        return Ok(vec![buf]);
    };
    let parts: Vec<&[u8]> = plain.chunks(chunk).collect();
    let count = u16::try_from(parts.len()).map_err(|_| SkError::Truncated)?;
    let mut out = Vec::with_capacity(parts.len());
    for (part, number) in parts.into_iter().zip(1u16..) {
        let sealed = cipher.sealed_len(part.len());
        let len = Header::LEN
            .saturating_add(SKF_HEADER)
            .saturating_add(sealed);
        hdr.next_payload = PayloadType::SKF;
        hdr.length = u32::try_from(len).map_err(|_| SkError::Truncated)?;
        let mut buf = Vec::with_capacity(len);
        hdr.write(&mut buf);
        // Only the first fragment names the first inner payload (RFC 7383 §2.5).
        let inner = if number == 1 {
            first
        } else {
            PayloadType::NONE
        };
        write_encrypted_header(
            inner,
            sealed,
            Some(Fragment {
                number,
                total: count,
            }),
            &mut buf,
        );
        cipher.seal(&mut buf, part, rng)?;
        out.push(buf);
    }
    Ok(out)
}

/// The largest plaintext chunk whose SKF message fits in `mtu`, or None when even a small
/// one would not (then the message goes unfragmented). Also None when it would take more
/// fragments than a receiver accepts for a reasonable message.
fn fragment_size(cipher: &SkCipher, mtu: usize) -> Option<usize> {
    let overhead = Header::LEN.saturating_add(SKF_HEADER);
    let fixed = cipher.sealed_len(0);
    let mut c = mtu.checked_sub(overhead)?.checked_sub(fixed)?;
    // sealed_len grows by at most one cipher block beyond the plaintext: a few steps down.
    for _ in 0..64 {
        if c == 0 {
            return None;
        }
        if overhead.saturating_add(cipher.sealed_len(c)) <= mtu {
            return Some(c);
        }
        c = c.saturating_sub(1);
    }
    None
}

pub fn random_bytes(rng: &dyn SecureRandom, n: usize) -> Option<Vec<u8>> {
    let mut v = vec![0u8; n];
    rng.fill(&mut v).ok()?;
    Some(v)
}

pub fn random_u64(rng: &dyn SecureRandom) -> Option<u64> {
    let mut b = [0u8; 8];
    rng.fill(&mut b).ok()?;
    Some(u64::from_be_bytes(b))
}

pub fn random_u32(rng: &dyn SecureRandom) -> Option<u32> {
    let mut b = [0u8; 4];
    rng.fill(&mut b).ok()?;
    Some(u32::from_be_bytes(b))
}

/// A nonzero IKE SPI not in `taken`.
pub fn new_ike_spi(rng: &dyn SecureRandom, taken: &[u64]) -> Option<u64> {
    for _ in 0..8 {
        let s = random_u64(rng)?;
        if s != 0 && !taken.contains(&s) {
            return Some(s);
        }
    }
    None
}

/// An ESP SPI ≥ 256 (1–255 are reserved by IANA, RFC 4303 §2.1) not in `taken`.
pub fn new_esp_spi(rng: &dyn SecureRandom, taken: &[u32]) -> Option<u32> {
    for _ in 0..8 {
        let s = random_u32(rng)?;
        if s >= 256 && !taken.contains(&s) {
            return Some(s);
        }
    }
    None
}
