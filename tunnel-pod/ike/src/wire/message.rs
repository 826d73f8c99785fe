//! IKE messages: the fixed header (RFC 7296 §3.1), the payload chain (§3.2) and every payload
//! this implementation reads or writes. `Repr`-style: parse into owned structs, emit from them.
//!
//! CONTRACT: the core codes against these types and signatures. The payload chain and the
//! simple bodies are in `payload.rs`, SA in `sa.rs`, traffic selectors in `ts.rs`.

use std::net::IpAddr;

use super::{
    AuthMethod, Error, ExchangeType, IdType, NotifyType, PayloadType, ProtocolId, Reader, Result,
    TransformId, TransformType, TsType, payload,
};

/// RFC 7296 §3.1, 28 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub spi_i: u64,
    pub spi_r: u64,
    pub next_payload: PayloadType,
    /// Major version in the high nibble, minor in the low: 0x20 for IKEv2.
    pub version: u8,
    pub exchange: ExchangeType,
    /// `flags::INITIATOR | flags::RESPONSE | flags::VERSION`
    pub flags: u8,
    pub message_id: u32,
    /// Total message length, header included.
    pub length: u32,
}

impl Header {
    pub const LEN: usize = 28;

    /// Parses the first 28 bytes. Checks only what every message must satisfy: length ≥ 28 and
    /// major version 2 (`BadVersion` otherwise, so the caller can answer INVALID_MAJOR_VERSION).
    ///
    /// Checks the major version before the Length field, so that a message of another version
    /// with another layout is still answered. After `BadVersion`, [`Header::parse_any`] gives the
    /// SPIs and Message ID the INVALID_MAJOR_VERSION answer needs (§2.5, §3.1).
    pub fn parse(buf: &[u8]) -> Result<Header> {
        let h = Header::parse_any(buf)?;
        let major = h.version >> 4;
        if major != 2 {
            return Err(Error::BadVersion { major });
        }
        if usize::try_from(h.length).unwrap_or(usize::MAX) < Header::LEN {
            return Err(Error::BadLength);
        }
        Ok(h)
    }

    /// The 28 header fields as they are, without checking version or length (`Truncated` if
    /// `buf` is shorter than 28 bytes). For answering a message `parse` refused.
    pub fn parse_any(buf: &[u8]) -> Result<Header> {
        let mut r = Reader::new(buf);
        Ok(Header {
            spi_i: r.u64()?,
            spi_r: r.u64()?,
            next_payload: PayloadType(r.u8()?),
            version: r.u8()?,
            exchange: ExchangeType(r.u8()?),
            flags: r.u8()?,
            message_id: r.u32()?,
            length: r.u32()?,
        })
    }

    /// Appends the 28 header bytes, fields as they are.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.reserve(Header::LEN);
        out.extend_from_slice(&self.spi_i.to_be_bytes());
        out.extend_from_slice(&self.spi_r.to_be_bytes());
        out.extend_from_slice(&[
            self.next_payload.0,
            self.version,
            self.exchange.0,
            self.flags,
        ]);
        out.extend_from_slice(&self.message_id.to_be_bytes());
        out.extend_from_slice(&self.length.to_be_bytes());
    }

    pub fn is_response(&self) -> bool {
        self.flags & super::flags::RESPONSE != 0
    }

    pub fn is_initiator(&self) -> bool {
        self.flags & super::flags::INITIATOR != 0
    }
}

/// RFC 7296 §3.3.2; `key_length` is the Key Length attribute (§3.3.5) in bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transform {
    pub kind: TransformType,
    pub id: TransformId,
    pub key_length: Option<u16>,
    /// Attributes other than Key Length, raw (type with the AF bit as on the wire, value), so
    /// that a proposal we do not understand still round-trips. A proposal carrying any is
    /// unacceptable (§3.3.6: unknown attributes make the transform unusable).
    pub other_attributes: Vec<(u16, Vec<u8>)>,
}

/// RFC 7296 §3.3.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// Starts at 1 and increases by one per proposal in an SA payload.
    pub number: u8,
    pub protocol: ProtocolId,
    /// Empty for the IKE SA in IKE_SA_INIT, 8 bytes for an IKE rekey, 4 for ESP.
    pub spi: Vec<u8>,
    pub transforms: Vec<Transform>,
}

/// RFC 7296 §3.4. `data` is x‖y for ECP groups, the left-padded value for MODP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyExchange {
    pub group: TransformId,
    pub data: Vec<u8>,
}

/// RFC 7296 §3.5 (IDi and IDr).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identification {
    pub id_type: IdType,
    pub data: Vec<u8>,
}

impl Identification {
    /// The bytes `prf(SK_p, IDx')` is computed over (§2.15): ID type, three reserved zero
    /// bytes, then the data — the payload body without the generic payload header.
    pub fn body(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(4usize.saturating_add(self.data.len()));
        v.extend_from_slice(&[self.id_type.0, 0, 0, 0]);
        v.extend_from_slice(&self.data);
        v
    }
}

/// RFC 7296 §3.8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authentication {
    pub method: AuthMethod,
    pub data: Vec<u8>,
}

/// RFC 7296 §3.10.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    pub protocol: ProtocolId,
    /// Empty, or the SPI the notification is about (4 bytes for ESP, as in REKEY_SA).
    pub spi: Vec<u8>,
    pub kind: NotifyType,
    pub data: Vec<u8>,
}

/// RFC 7296 §3.11. For the IKE SA: protocol IKE and no SPIs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    pub protocol: ProtocolId,
    /// Each SPI `spi_size` bytes long (4 for ESP); all the same size on the wire.
    pub spis: Vec<Vec<u8>>,
}

/// RFC 7296 §3.13.1. Both addresses of one selector have the same family; `ts_type` says
/// which. Selectors of an unknown type are kept raw so the caller can ignore them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrafficSelector {
    Range {
        /// 0 = any protocol.
        ip_protocol: u8,
        start_port: u16,
        end_port: u16,
        start: IpAddr,
        end: IpAddr,
    },
    Unknown {
        ts_type: TsType,
        body: Vec<u8>,
    },
}

/// Every payload outside SK/SKF. Vendor ID and CP are parsed and ignored by the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Sa(Vec<Proposal>),
    Ke(KeyExchange),
    IdI(Identification),
    IdR(Identification),
    Auth(Authentication),
    Nonce(Vec<u8>),
    Notify(Notify),
    Delete(Delete),
    VendorId(Vec<u8>),
    TsI(Vec<TrafficSelector>),
    TsR(Vec<TrafficSelector>),
    /// Configuration payload (§3.15), raw.
    Cp(Vec<u8>),
    /// Any other type that is not critical (CERT, CERTREQ, EAP, unknown): skipped, raw.
    Other {
        kind: PayloadType,
        critical: bool,
        body: Vec<u8>,
    },
}

impl Payload {
    pub fn kind(&self) -> PayloadType {
        match self {
            Payload::Sa(_) => PayloadType::SA,
            Payload::Ke(_) => PayloadType::KE,
            Payload::IdI(_) => PayloadType::IDI,
            Payload::IdR(_) => PayloadType::IDR,
            Payload::Auth(_) => PayloadType::AUTH,
            Payload::Nonce(_) => PayloadType::NONCE,
            Payload::Notify(_) => PayloadType::NOTIFY,
            Payload::Delete(_) => PayloadType::DELETE,
            Payload::VendorId(_) => PayloadType::VENDOR_ID,
            Payload::TsI(_) => PayloadType::TSI,
            Payload::TsR(_) => PayloadType::TSR,
            Payload::Cp(_) => PayloadType::CP,
            Payload::Other { kind, .. } => *kind,
        }
    }
}

/// RFC 7383 §2.5: which fragment an SKF payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// From 1.
    pub number: u16,
    pub total: u16,
}

/// Where the protected part of a message is. The associated data (GCM) or the integrity
/// checksum's input (CBC+HMAC) is `message[..iv_offset]` and, for the ICV, everything up to the
/// ICV; the cipher works on `message[iv_offset..]` = IV ‖ ciphertext ‖ ICV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encrypted {
    /// The SK/SKF generic header's Next Payload: the type of the first inner payload (for a
    /// fragment other than the first it is 0, RFC 7383 §2.5).
    pub first_inner: PayloadType,
    pub iv_offset: usize,
    pub fragment: Option<Fragment>,
}

/// A message as read off the wire: the payloads before any SK/SKF, and where that is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub header: Header,
    pub payloads: Vec<Payload>,
    pub encrypted: Option<Encrypted>,
}

/// At most this many payloads in one chain: far more than any exchange needs; bounds the work
/// a hostile message can cause.
pub const MAX_PAYLOADS: usize = 64;

/// Parses a whole message (without UDP header or non-ESP marker). Checks that the header's
/// length equals `msg.len()`, walks the payload chain, parses each known payload in a sub-reader
/// that must be consumed exactly, keeps unknown non-critical payloads as `Other`, fails with
/// `UnsupportedCritical` on an unknown critical one, and stops at SK/SKF, which must be last.
///
/// A message shorter than its Length is `Truncated`, a longer one `TrailingBytes`. When the SK
/// or SKF payload is present its length must reach the end of the message exactly
/// (`BadLength` otherwise). SK/SKF contents are not looked at beyond the SKF fragment fields:
/// the IV, ciphertext and ICV sizes depend on the negotiated cipher.
pub fn parse_message(msg: &[u8]) -> Result<Parsed> {
    let header = Header::parse(msg)?;
    let declared = usize::try_from(header.length).unwrap_or(usize::MAX);
    if msg.len() < declared {
        return Err(Error::Truncated);
    }
    if msg.len() > declared {
        return Err(Error::TrailingBytes);
    }
    let chain = msg.get(Header::LEN..).unwrap_or_default();
    let (payloads, encrypted) = payload::walk(header.next_payload, chain, Header::LEN, true)?;
    Ok(Parsed {
        header,
        payloads,
        encrypted,
    })
}

/// Parses a decrypted payload chain (the plaintext of an SK payload, or reassembled SKF
/// fragments) starting with type `first`. SK/SKF inside is `MisplacedEncrypted`.
/// The chain must end (Next Payload 0) exactly at the end of `body` (`TrailingBytes`): the
/// caller strips padding and ICV first.
pub fn parse_payloads(first: PayloadType, body: &[u8]) -> Result<Vec<Payload>> {
    payload::walk(first, body, 0, false).map(|(payloads, _)| payloads)
}

/// Appends the payloads with their generic headers and next-payload chain (the last one's
/// Next Payload is `last_next`, normally NONE; SK for a plaintext prefix). Returns the type of the
/// first payload (NONE if `payloads` is empty), for the header's or SK's Next Payload.
///
/// A payload that cannot be represented (see [`Payload::encoded_len`]; never the case for the
/// payloads this crate builds) is written with Payload Length 0, so the message fails closed at
/// the receiver rather than being misframed.
pub fn write_payloads(
    payloads: &[Payload],
    last_next: PayloadType,
    out: &mut Vec<u8>,
) -> PayloadType {
    let mut it = payloads.iter().peekable();
    while let Some(p) = it.next() {
        let next = it.peek().map_or(last_next, |n| n.kind());
        payload::emit_payload(p, next, out);
    }
    payloads.first().map_or(PayloadType::NONE, Payload::kind)
}

/// An unencrypted message (IKE_SA_INIT): header with `next_payload` and `length` filled in.
/// The other header fields are written as given. (A message over 4 GiB, which cannot arise,
/// would get Length 0 and be refused by the peer.)
pub fn encode_message(header: Header, payloads: &[Payload]) -> Vec<u8> {
    let mut body = Vec::new();
    let first = write_payloads(payloads, PayloadType::NONE, &mut body);
    let header = Header {
        next_payload: first,
        length: u32::try_from(body.len().saturating_add(Header::LEN)).unwrap_or(0),
        ..header
    };
    let mut out = Vec::with_capacity(body.len().saturating_add(Header::LEN));
    header.write(&mut out);
    out.extend_from_slice(&body);
    out
}

/// The 4 (SK) or 8 (SKF) bytes that precede the IV: generic payload header of type SK or SKF
/// with Next Payload `first_inner` and payload length `4 + sealed_len` (SK) or
/// `8 + sealed_len` (SKF), followed for SKF by Fragment Number and Total Fragments.
///
/// `sealed_len` (IV ‖ ciphertext ‖ ICV) is at most [`MAX_SK_SEALED`] for SK and
/// [`MAX_SKF_SEALED`] for SKF; beyond that the Payload Length is written as 0 and the peer
/// drops the message (fragment or use smaller messages instead).
pub fn write_encrypted_header(
    first_inner: PayloadType,
    sealed_len: usize,
    fragment: Option<Fragment>,
    out: &mut Vec<u8>,
) {
    // The SK/SKF type itself goes in the previous payload's Next Payload (or the header's):
    // the caller passes it as `last_next` to `write_payloads`.
    let header_len = match fragment {
        None => payload::GENERIC_HEADER_LEN,
        Some(_) => payload::GENERIC_HEADER_LEN.saturating_add(4),
    };
    let len = sealed_len
        .checked_add(header_len)
        .and_then(|l| u16::try_from(l).ok())
        .unwrap_or(0);
    out.extend_from_slice(&[first_inner.0, 0]);
    out.extend_from_slice(&len.to_be_bytes());
    if let Some(f) = fragment {
        out.extend_from_slice(&f.number.to_be_bytes());
        out.extend_from_slice(&f.total.to_be_bytes());
    }
}

/// The largest IV ‖ ciphertext ‖ ICV an SK payload can carry (65535 − 4).
pub const MAX_SK_SEALED: usize = 65_531;
/// The largest IV ‖ ciphertext ‖ ICV an SKF payload can carry (65535 − 8).
pub const MAX_SKF_SEALED: usize = 65_527;

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::wire::{PayloadsExt, flags};

    /// An IKE_SA_INIT request captured from a real initiator, as published in the test suite
    /// of rusticata/ipsec-parser (tests/ikev2.rs, `IKEV2_MSG`), without the 4-byte non-ESP
    /// marker it was captured with: four IKE proposals (AES-GCM-16/128 or AES-CTR/128 with
    /// HMAC-SHA2-256-128; PRF-HMAC-SHA2-256; DH 28 or 19), KE for group 28, a 32-byte nonce.
    #[rustfmt::skip]
    const CAPTURED_INIT: &[u8] = &[
        0xbc, 0xa1, 0x93, 0x7a, 0x7c, 0x2f, 0xf5, 0xb9, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x21, 0x20, 0x22, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x2c,
        0x22, 0x00, 0x00, 0xa4, 0x02, 0x00, 0x00, 0x24, 0x01, 0x01, 0x00, 0x03, 0x03, 0x00, 0x00, 0x0c,
        0x01, 0x00, 0x00, 0x14, 0x80, 0x0e, 0x00, 0x80, 0x03, 0x00, 0x00, 0x08, 0x02, 0x00, 0x00, 0x05,
        0x00, 0x00, 0x00, 0x08, 0x04, 0x00, 0x00, 0x1c, 0x02, 0x00, 0x00, 0x24, 0x02, 0x01, 0x00, 0x03,
        0x03, 0x00, 0x00, 0x0c, 0x01, 0x00, 0x00, 0x14, 0x80, 0x0e, 0x00, 0x80, 0x03, 0x00, 0x00, 0x08,
        0x02, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x08, 0x04, 0x00, 0x00, 0x13, 0x02, 0x00, 0x00, 0x2c,
        0x03, 0x01, 0x00, 0x04, 0x03, 0x00, 0x00, 0x0c, 0x01, 0x00, 0x00, 0x0d, 0x80, 0x0e, 0x00, 0x80,
        0x03, 0x00, 0x00, 0x08, 0x03, 0x00, 0x00, 0x0c, 0x03, 0x00, 0x00, 0x08, 0x02, 0x00, 0x00, 0x05,
        0x00, 0x00, 0x00, 0x08, 0x04, 0x00, 0x00, 0x1c, 0x00, 0x00, 0x00, 0x2c, 0x04, 0x01, 0x00, 0x04,
        0x03, 0x00, 0x00, 0x0c, 0x01, 0x00, 0x00, 0x0d, 0x80, 0x0e, 0x00, 0x80, 0x03, 0x00, 0x00, 0x08,
        0x03, 0x00, 0x00, 0x0c, 0x03, 0x00, 0x00, 0x08, 0x02, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x08,
        0x04, 0x00, 0x00, 0x13, 0x28, 0x00, 0x00, 0x48, 0x00, 0x1c, 0x00, 0x00, 0x4d, 0x23, 0xb8, 0xf2,
        0x2c, 0x03, 0xae, 0x3a, 0xb4, 0x0a, 0xf9, 0xfa, 0x76, 0xc2, 0x3c, 0x7b, 0xa6, 0xc5, 0x69, 0x81,
        0xe1, 0x3c, 0x32, 0xfb, 0xc3, 0x69, 0x54, 0xc8, 0x7a, 0x96, 0xcb, 0xfa, 0x34, 0x63, 0x7c, 0x6f,
        0x31, 0xb6, 0x50, 0xce, 0x5d, 0x87, 0x17, 0x00, 0x5c, 0xe7, 0x93, 0xc2, 0xee, 0xaf, 0xf1, 0xc5,
        0x66, 0x28, 0x08, 0x11, 0xd9, 0x42, 0xd1, 0xb8, 0xe8, 0x02, 0x68, 0xbb, 0x00, 0x00, 0x00, 0x24,
        0x99, 0xe2, 0xa3, 0x73, 0xcc, 0x44, 0xad, 0x10, 0xfb, 0x78, 0xdd, 0xa2, 0x52, 0x06, 0xa4, 0xa9,
        0xb7, 0x55, 0x8e, 0x0d, 0x82, 0x69, 0x79, 0x9c, 0x68, 0x00, 0x36, 0x2c, 0x46, 0xa0, 0xbf, 0x7b,
    ];

    #[rustfmt::skip]
    const HEADER: [u8; 28] = [
        1, 2, 3, 4, 5, 6, 7, 8,           // SPIi
        0, 0, 0, 0, 0, 0, 0, 0x11,        // SPIr
        0x2e, 0x20, 0x23, 0x08,           // next SK, v2.0, IKE_AUTH, initiator
        0x00, 0x00, 0x00, 0x01,           // message ID 1
        0x00, 0x00, 0x00, 0x1c,           // length 28
    ];

    fn header() -> Header {
        Header {
            spi_i: 0x0102_0304_0506_0708,
            spi_r: 0x11,
            next_payload: PayloadType::SK,
            version: 0x20,
            exchange: ExchangeType::IKE_AUTH,
            flags: flags::INITIATOR,
            message_id: 1,
            length: 28,
        }
    }

    fn with_length(mut msg: Vec<u8>) -> Vec<u8> {
        let len = u32::try_from(msg.len()).unwrap();
        msg[24..28].copy_from_slice(&len.to_be_bytes());
        msg
    }

    fn transform(kind: TransformType, id: u16, key_length: Option<u16>) -> Transform {
        Transform {
            kind,
            id: TransformId(id),
            key_length,
            other_attributes: vec![],
        }
    }

    #[test]
    fn header_both_ways() {
        let h = Header::parse(&HEADER).unwrap();
        assert_eq!(h, header());
        assert!(h.is_initiator() && !h.is_response());
        let mut out = Vec::new();
        h.write(&mut out);
        assert_eq!(out, HEADER);
        // A minor version other than 0 is fine (§2.5).
        let mut b = HEADER;
        b[17] = 0x21;
        assert_eq!(Header::parse(&b).unwrap().version, 0x21);
    }

    #[test]
    fn header_errors() {
        for n in 0..28 {
            assert_eq!(Header::parse(&HEADER[..n]), Err(Error::Truncated));
        }
        for (v, major) in [(0x10, 1), (0x30, 3), (0x00, 0), (0xf2, 15)] {
            let mut b = HEADER;
            b[17] = v;
            // Version is checked before the length, so a v1 message is answered.
            b[27] = 0;
            assert_eq!(Header::parse(&b), Err(Error::BadVersion { major }));
            let any = Header::parse_any(&b).unwrap();
            assert_eq!((any.spi_i, any.message_id, any.version), (h_spi(), 1, v));
        }
        for len in [0u8, 27] {
            let mut b = HEADER;
            b[27] = len;
            assert_eq!(Header::parse(&b), Err(Error::BadLength));
        }
    }

    fn h_spi() -> u64 {
        0x0102_0304_0506_0708
    }

    #[test]
    fn message_length_must_match() {
        let mut b = HEADER.to_vec();
        b[16] = 0;
        assert_eq!(parse_message(&b).unwrap().payloads, vec![]);
        b[27] = 29;
        assert_eq!(parse_message(&b), Err(Error::Truncated));
        b[27] = 28;
        b.push(0);
        assert_eq!(parse_message(&b), Err(Error::TrailingBytes));
        b[27] = 29;
        assert_eq!(parse_message(&b), Err(Error::TrailingBytes)); // chain ended at 28
    }

    #[test]
    fn captured_ike_sa_init_request() {
        let p = parse_message(CAPTURED_INIT).unwrap();
        assert_eq!(
            p.header,
            Header {
                spi_i: 0xbca1_937a_7c2f_f5b9,
                spi_r: 0,
                next_payload: PayloadType::SA,
                version: 0x20,
                exchange: ExchangeType::IKE_SA_INIT,
                flags: flags::INITIATOR,
                message_id: 0,
                length: 300,
            }
        );
        assert_eq!(p.encrypted, None);
        assert_eq!(
            p.payloads.iter().map(Payload::kind).collect::<Vec<_>>(),
            [PayloadType::SA, PayloadType::KE, PayloadType::NONCE]
        );
        let prf = transform(TransformType::PRF, 5, None);
        let integ = transform(TransformType::INTEG, 12, None);
        let gcm = transform(TransformType::ENCR, 20, Some(128));
        let ctr = transform(TransformType::ENCR, 13, Some(128));
        let dh = |g| transform(TransformType::DH, g, None);
        let proposal = |number, transforms| Proposal {
            number,
            protocol: ProtocolId::IKE,
            spi: vec![],
            transforms,
        };
        assert_eq!(
            p.sa().unwrap(),
            [
                proposal(1, vec![gcm.clone(), prf.clone(), dh(28)]),
                proposal(2, vec![gcm, prf.clone(), dh(19)]),
                proposal(3, vec![ctr.clone(), integ.clone(), prf.clone(), dh(28)]),
                proposal(4, vec![ctr, integ, prf, dh(19)]),
            ]
        );
        let ke = p.ke().unwrap();
        assert_eq!(ke.group, TransformId(28));
        assert_eq!(ke.data.len(), 64);
        assert_eq!(ke.data[..4], [0x4d, 0x23, 0xb8, 0xf2]);
        assert_eq!(p.nonce().unwrap().len(), 32);
        // What we write from it is what the initiator wrote.
        assert_eq!(encode_message(p.header, &p.payloads), CAPTURED_INIT);
    }

    /// An IKE_SA_INIT request from strongSwan 5.9.8 (Debian 12 `charon`, proposals
    /// `aes256gcm16-prfsha256-ecp384,aes256-sha256-modp2048`, 192.0.2.1:500 → 192.0.2.2:500),
    /// captured with tcpdump in a network namespace on 2026-12-01 and cross-checked with
    /// tshark's dissector: SA KE No N(NATD_S_IP) N(NATD_D_IP) N(FRAG_SUP) N(HASH_ALG)
    /// N(REDIR_SUP). Recipe: `unshare -m -n`, a tmpfs on /run (own pid file), a veth with
    /// 192.0.2.1 and a static neighbour for 192.0.2.2, `STRONGSWAN_CONF=... charon` with its
    /// vici socket moved, `swanctl --initiate`, `tcpdump -i v0 udp`; no responder needed.
    const STRONGSWAN_INIT: &[&str] = &[
        "e6c0364689abb0ac000000000000000021202208000000000000015422000054",
        "02000024010100030300000c01000014800e0100030000080200000500000008",
        "040000140000002c020100040300000c0100000c800e0100030000080300000c",
        "0300000802000005000000080400000e280000680014000081c87dbf73864480",
        "69ae40eacae5ab881b2ff2ebf109798c25fc2dd223acd74591ad0c63dd671dc7",
        "5e5ecba92964a5e37e81be29e184f37f5c3c7e6b36ba25048c1fc62bf2a94fef",
        "a1d261889f21b36b76f7af3163aa4aaa222b2b1dc0d102522900002411d62fdd",
        "286686c2c1326da59780efb09c27fdddc7269991e834b15d25e3645d2900001c",
        "00004004aff6e9419c12798b0d17db4a5e24ede79301db762900001c00004005",
        "95d825a6407907075db3adb24b5782fa7a963666290000080000402e29000010",
        "0000402f00020003000400050000000800004016",
    ];

    fn unhex(rows: &[&str]) -> Vec<u8> {
        let s: String = rows.concat();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn strongswan_ike_sa_init_request() {
        let msg = unhex(STRONGSWAN_INIT);
        assert_eq!(msg.len(), 340);
        let p = parse_message(&msg).unwrap();
        assert_eq!(p.header.spi_i, 0xe6c0_3646_89ab_b0ac);
        assert_eq!(p.header.spi_r, 0);
        assert_eq!(p.header.exchange, ExchangeType::IKE_SA_INIT);
        assert_eq!(p.header.flags, flags::INITIATOR);
        assert_eq!(p.header.length, 340);
        assert_eq!(p.encrypted, None);
        let proposal = |number, transforms| Proposal {
            number,
            protocol: ProtocolId::IKE,
            spi: vec![],
            transforms,
        };
        assert_eq!(
            p.sa().unwrap(),
            [
                proposal(
                    1,
                    vec![
                        transform(TransformType::ENCR, 20, Some(256)),
                        transform(TransformType::PRF, 5, None),
                        transform(TransformType::DH, 20, None),
                    ]
                ),
                proposal(
                    2,
                    vec![
                        transform(TransformType::ENCR, 12, Some(256)),
                        transform(TransformType::INTEG, 12, None),
                        transform(TransformType::PRF, 5, None),
                        transform(TransformType::DH, 14, None),
                    ]
                ),
            ]
        );
        let ke = p.ke().unwrap();
        assert_eq!((ke.group, ke.data.len()), (TransformId::DH_ECP384, 96));
        assert_eq!(p.nonce().unwrap()[..4], [0x11, 0xd6, 0x2f, 0xdd]);
        assert_eq!(p.nonce().unwrap().len(), 32);
        let kinds: Vec<_> = p.notifies().map(|n| n.kind).collect();
        assert_eq!(
            kinds,
            [
                NotifyType::NAT_DETECTION_SOURCE_IP,
                NotifyType::NAT_DETECTION_DESTINATION_IP,
                NotifyType::IKEV2_FRAGMENTATION_SUPPORTED,
                NotifyType::SIGNATURE_HASH_ALGORITHMS,
                NotifyType::REDIRECT_SUPPORTED,
            ]
        );
        // RFC 7296 §2.23: NAT_DETECTION_SOURCE_IP = SHA-1(SPIi ‖ SPIr ‖ source IP ‖ port).
        let mut natd = Vec::new();
        natd.extend_from_slice(&msg[..16]);
        natd.extend_from_slice(&[192, 0, 2, 1, 0x01, 0xf4]);
        let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &natd);
        let src = p.notify(NotifyType::NAT_DETECTION_SOURCE_IP).unwrap();
        assert_eq!(src.data, sha1.as_ref());
        // RFC 7427 §4: SHA2-256, SHA2-384, SHA2-512, "Identity".
        let hash = p.notify(NotifyType::SIGNATURE_HASH_ALGORITHMS).unwrap();
        assert_eq!(hash.data, [0, 2, 0, 3, 0, 4, 0, 5]);
        assert_eq!(encode_message(p.header, &p.payloads), msg);
    }

    // A whole strongSwan 5.9.8 exchange between two `charon`s in two network namespaces
    // (192.0.2.1 initiator.example ↔ 192.0.2.2 responder.example, PSK
    // "codec-test-psk-0123456789", proposals aes256gcm16-prfsha256-ecp384), captured with
    // tcpdump on 2026-12-01; SK_ei and SK_pi from charon's own key log (`ike = 4`).
    /// IKE_SA_INIT request (initiator 192.0.2.1, 296 bytes).
    const SWAN_INIT_REQ: &[&str] = &[
        "0d28948dfebd4914000000000000000021202208000000000000012822000028",
        "00000024010100030300000c01000014800e0100030000080200000500000008",
        "04000014280000680014000030c0574e47abb3e24f6f0b7f91f53d89285a45f4",
        "06fecdfb7e7e56908971bec28f96b8a08f20efed3869a4a57aa4dd39536dcecb",
        "badf2b9ee1a59a3ecd1e126e39c5b45c58f43006c4b1116aa70bbcea86ea2811",
        "f970a5195849492ec672bad629000024a6c1af25e8eeb86655e2a993b35c6e07",
        "1fa76d28ffc72b5e4e2f29003f027d7e2900001c0000400401363c947a174aed",
        "8a4780fed14fc0094de708232900001c000040055edaccd0214d59577313fc27",
        "b004b9e6198572a1290000080000402e290000100000402f0002000300040005",
        "0000000800004016",
    ];
    /// IKE_SA_INIT response (responder 192.0.2.2, 304 bytes).
    const SWAN_INIT_RESP: &[&str] = &[
        "0d28948dfebd4914e4accaf3569c85ad21202220000000000000013022000028",
        "00000024010100030300000c01000014800e0100030000080200000500000008",
        "0400001428000068001400000612041a7d9f82d22188bd9d28f7ae30944a429b",
        "938012e4c5f2e3f1ace7aaaa4034703240895b830b0653ddaf31bedd4f504a03",
        "e8f64daf4abf8e237783a4465de1c8d509de35234c6d534b6c3f718deec827e7",
        "5421952c8ae7a0d08730ca5329000024ab6bbef9483bac616551a8448d889f97",
        "932ab257977fb166716b29eca6e0c0692900001c000040047016d6a87e4280b9",
        "f757195aa153c438800942d32900001c00004005f6c53b1a4c02fe5f6cd80c48",
        "adb10eeba02e3583290000080000402e290000100000402f0002000300040005",
        "29000008000040220000000800004014",
    ];
    /// IKE_AUTH request on port 4500, non-ESP marker removed (279 bytes).
    const SWAN_AUTH_REQ: &[&str] = &[
        "0d28948dfebd4914e4accaf3569c85ad2e2023080000000100000117230000fb",
        "46e47389361e8e580db5f2696183fdeb94302a557aefae01c4eb76b8ca222f01",
        "659287126a4b853c5f83d37ce3fd9d417e26e07744ef43159d547d10e0621e0e",
        "c0221a00e1f607c2e93660fc01b3b46be49e2b515347844b402e092343e7d611",
        "cdc2cd0c69a17da1ae68b6e2d3f4748c1bdf0e802b74b3da1b4b35c251915f04",
        "e8ff4a0d5ab2c606c6d6ca753b04cad3447902944c4743e68dff85a3f57b891e",
        "c94ca55e6436f708ea1a0a447ac91555bf48ff45e35556c72b6f98301712738c",
        "0c4e8e59fc66c404b6dbb62acf59d727c18e248ab77419679519e5858f52d0b6",
        "0a1cf8245c4cd0316627a1deae51c5848e8c2a0d193dcd",
    ];
    const SWAN_SK_EI: &str =
        "b924ffc01cfb0377beef88d39c9ac244bf9d90a61368703b8b3cba0287db56b6732aa3d5";
    const SWAN_SK_PI: &str = "03e1a0ccceae79bc2a22e8477a56fe638d8d4ee4af3ca556afef57176da905b1";
    const SWAN_PSK: &[u8] = b"codec-test-psk-0123456789";

    #[test]
    fn strongswan_ike_sa_init_response() {
        let msg = unhex(SWAN_INIT_RESP);
        let p = parse_message(&msg).unwrap();
        assert_eq!(p.header.flags, flags::RESPONSE);
        assert!(p.header.is_response() && !p.header.is_initiator());
        assert_ne!(p.header.spi_r, 0);
        assert_eq!(
            p.sa().unwrap(),
            [Proposal {
                number: 1,
                protocol: ProtocolId::IKE,
                spi: vec![],
                transforms: vec![
                    transform(TransformType::ENCR, 20, Some(256)),
                    transform(TransformType::PRF, 5, None),
                    transform(TransformType::DH, 20, None),
                ],
            }]
        );
        assert_eq!(p.ke().unwrap().data.len(), 96);
        let kinds: Vec<_> = p.notifies().map(|n| n.kind.0).collect();
        assert_eq!(kinds, [16388, 16389, 16430, 16431, 16418, 16404]);
        assert_eq!(encode_message(p.header, &p.payloads), msg);
    }

    /// The IKE_AUTH request: SK framing and `iv_offset` on a real message, its AES-GCM
    /// decryption with the associated data `message[..iv_offset]` (RFC 5282 §5.1), the inner
    /// chain, and the PSK AUTH value recomputed over `Identification::body` (RFC 7296 §2.15).
    #[test]
    fn strongswan_ike_auth_request() {
        use ring::{aead, hmac};

        let init = unhex(SWAN_INIT_REQ);
        let resp = parse_message(&unhex(SWAN_INIT_RESP)).unwrap();
        let msg = unhex(SWAN_AUTH_REQ);
        let p = parse_message(&msg).unwrap();
        assert_eq!(p.header.exchange, ExchangeType::IKE_AUTH);
        assert_eq!(
            (p.header.message_id, p.header.spi_r),
            (1, resp.header.spi_r)
        );
        assert_eq!(p.payloads, vec![]);
        let e = p.encrypted.unwrap();
        assert_eq!(
            e,
            Encrypted {
                first_inner: PayloadType::IDI,
                iv_offset: 32,
                fragment: None
            }
        );

        let mut hdr = Vec::new();
        write_encrypted_header(PayloadType::IDI, msg.len() - 32, None, &mut hdr);
        assert_eq!(hdr, msg[28..32]);

        // AES-256-GCM-16: 32-byte key ‖ 4-byte salt; nonce = salt ‖ 8-byte IV.
        let sk_ei = unhex(&[SWAN_SK_EI]);
        let key = aead::LessSafeKey::new(
            aead::UnboundKey::new(&aead::AES_256_GCM, &sk_ei[..32]).unwrap(),
        );
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(&sk_ei[32..]);
        nonce[4..].copy_from_slice(&msg[e.iv_offset..e.iv_offset + 8]);
        let mut sealed = msg[e.iv_offset + 8..].to_vec();
        let plain = key
            .open_in_place(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(&msg[..e.iv_offset]),
                &mut sealed,
            )
            .unwrap();
        let pad = usize::from(*plain.last().unwrap());
        let chain = &plain[..plain.len() - 1 - pad];
        let inner = parse_payloads(e.first_inner, chain).unwrap();
        assert_eq!(
            inner.iter().map(|p| p.kind().0).collect::<Vec<_>>(),
            [35, 41, 36, 39, 33, 44, 45, 41, 41, 41, 41, 41]
        );
        let id_i = inner.id_i().unwrap();
        assert_eq!(
            (id_i.id_type, id_i.data.as_slice()),
            (IdType::ID_FQDN, &b"initiator.example"[..])
        );
        assert_eq!(inner.id_r().unwrap().data, b"responder.example");
        assert!(inner.notify(NotifyType::INITIAL_CONTACT).is_some());
        assert!(inner.notify(NotifyType::MOBIKE_SUPPORTED).is_some());
        let sa = inner.sa().unwrap();
        assert_eq!((sa[0].protocol, sa[0].spi.len()), (ProtocolId::ESP, 4));
        assert_eq!(
            sa[0].transforms[0],
            transform(TransformType::ENCR, 20, Some(256))
        );
        assert_eq!(
            sa[0].transforms.last().unwrap(),
            &transform(TransformType::ESN, 0, None)
        );
        let range = |a: &str, b: &str| TrafficSelector::Range {
            ip_protocol: 0,
            start_port: 0,
            end_port: 65535,
            start: a.parse().unwrap(),
            end: b.parse().unwrap(),
        };
        assert_eq!(inner.ts_i().unwrap(), [range("10.1.0.0", "10.1.255.255")]);
        assert_eq!(inner.ts_r().unwrap(), [range("10.2.0.0", "10.2.255.255")]);
        // The inner chain re-encodes byte for byte.
        let mut again = Vec::new();
        assert_eq!(
            write_payloads(&inner, PayloadType::NONE, &mut again),
            PayloadType::IDI
        );
        assert_eq!(again, chain);

        // AUTH = prf(prf(PSK, "Key Pad for IKEv2"), RealMessage1 ‖ Nr ‖ prf(SK_pi, IDi')).
        let prf = |k: &[u8], d: &[u8]| {
            hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, k), d)
                .as_ref()
                .to_vec()
        };
        let mut octets = init.clone();
        octets.extend_from_slice(resp.nonce().unwrap());
        octets.extend_from_slice(&prf(&unhex(&[SWAN_SK_PI]), &id_i.body()));
        let auth = prf(&prf(SWAN_PSK, b"Key Pad for IKEv2"), &octets);
        let got = inner.auth().unwrap();
        assert_eq!(got.method, AuthMethod::SHARED_KEY);
        assert_eq!(got.data, auth);
        // And the request that started it parses and re-encodes too.
        let p1 = parse_message(&init).unwrap();
        assert_eq!(encode_message(p1.header, &p1.payloads), init);
    }

    /// The same IKE_AUTH request with `fragmentation = force` and `fragment_size = 200`: three
    /// SKF fragments (RFC 7383), non-ESP markers removed, and that session's SK_ei.
    const SWAN_FRAGMENTS: [&[&str]; 3] = [
        &[
            "df2d15f597900996cf90cb8d1092be503520230800000001000000a82300008c",
            "00010003bd60357c0826bd05d6439a4e7917c8f1c221d262f106a2a079b5af21",
            "106ff4a702e59eaa6bb500b82b82d330bee00efeef15e5deb646b0456b7de5eb",
            "59f53c1b52722cc8d160f88ca5086c703d434dd2baaeaeb85fc42415cabaed80",
            "1a87459a20945cecccf699d26cccaf40d73a1d5b33422ca1af37ed34a6246e46",
            "b4c60a38ee58c621",
        ],
        &[
            "df2d15f597900996cf90cb8d1092be503520230800000001000000a80000008c",
            "00020003bd60357c0826bd069447e537dd77e11df4b0993d0ffb3eb6c848ddb6",
            "e3f13e38f94e0635a97b51b0b380127fa40f48fb5c82502548e2ea5d7e32b033",
            "00af9961e8f29eb23669d8c497d36302f45858d86dbf74b0015b664b621798f9",
            "9c04b2eda0b4047dd87d69259f2fd380a1d0f5749df17ec9d5e5568cfb82d744",
            "8d9a41adfbee3ac8",
        ],
        &[
            "df2d15f597900996cf90cb8d1092be5035202308000000010000004500000029",
            "00030003bd60357c0826bd078854511b20a7b9aa5578412b22e8b6ae5a2a70ae",
            "99e3f7074d",
        ],
    ];
    const SWAN_FRAG_SK_EI: &str =
        "55a5f1f95735225e3f349d7a3109d1fe00e0085d7d04635ec20c24ce093f3244239b26b9";
    /// Real SKF fragments: numbers, `iv_offset` after the two fragment fields, Next Payload
    /// IDi in the first and 0 in the others, each one opened with AAD `message[..iv_offset]`
    /// (RFC 7383 §2.5.3), and the reassembled plaintext parsed as one chain.
    #[test]
    fn strongswan_skf_fragments() {
        use ring::aead;

        let sk_ei = unhex(&[SWAN_FRAG_SK_EI]);
        let key = aead::LessSafeKey::new(
            aead::UnboundKey::new(&aead::AES_256_GCM, &sk_ei[..32]).unwrap(),
        );
        let mut reassembled = Vec::new();
        for (i, rows) in SWAN_FRAGMENTS.iter().enumerate() {
            let msg = unhex(rows);
            let p = parse_message(&msg).unwrap();
            assert_eq!(p.header.next_payload, PayloadType::SKF);
            assert_eq!(p.payloads, vec![]);
            let e = p.encrypted.unwrap();
            let number = u16::try_from(i + 1).unwrap();
            assert_eq!(e.fragment, Some(Fragment { number, total: 3 }));
            assert_eq!(e.iv_offset, 36);
            let first = if i == 0 {
                PayloadType::IDI
            } else {
                PayloadType::NONE
            };
            assert_eq!(e.first_inner, first);
            let mut nonce = [0u8; 12];
            nonce[..4].copy_from_slice(&sk_ei[32..]);
            nonce[4..].copy_from_slice(&msg[e.iv_offset..e.iv_offset + 8]);
            let mut sealed = msg[e.iv_offset + 8..].to_vec();
            let plain = key
                .open_in_place(
                    aead::Nonce::assume_unique_for_key(nonce),
                    aead::Aad::from(&msg[..e.iv_offset]),
                    &mut sealed,
                )
                .unwrap();
            let pad = usize::from(*plain.last().unwrap());
            reassembled.extend_from_slice(&plain[..plain.len() - 1 - pad]);
            // Re-encoding the SKF header gives the bytes on the wire.
            let mut hdr = Vec::new();
            write_encrypted_header(first, msg.len() - e.iv_offset, e.fragment, &mut hdr);
            assert_eq!(hdr, msg[28..36]);
        }
        let inner = parse_payloads(PayloadType::IDI, &reassembled).unwrap();
        assert_eq!(inner.len(), 12);
        assert_eq!(inner.id_i().unwrap().data, b"initiator.example");
        assert_eq!(inner.auth().unwrap().data.len(), 32);
    }

    #[test]
    fn encode_fills_next_payload_and_length() {
        let payloads = vec![
            Payload::Nonce(vec![1; 16]),
            Payload::Notify(Notify {
                protocol: ProtocolId::NONE,
                spi: vec![],
                kind: NotifyType::IKEV2_FRAGMENTATION_SUPPORTED,
                data: vec![],
            }),
        ];
        let msg = encode_message(
            Header {
                next_payload: PayloadType::CERT,
                length: 5,
                exchange: ExchangeType::IKE_SA_INIT,
                ..header()
            },
            &payloads,
        );
        assert_eq!(msg.len(), 28 + 20 + 8);
        assert_eq!(msg[16], PayloadType::NONCE.0);
        assert_eq!(msg[24..28], [0, 0, 0, 56]);
        // The nonce's Next Payload is Notify's type, Notify's is 0.
        assert_eq!(msg[28], PayloadType::NOTIFY.0);
        assert_eq!(msg[48], 0);
        let p = parse_message(&msg).unwrap();
        assert_eq!(p.payloads, payloads);
        assert_eq!(p.header.length, 56);
        let empty = encode_message(header(), &[]);
        assert_eq!(empty[16], 0);
        assert_eq!(parse_message(&empty).unwrap().payloads, vec![]);
    }

    /// Header, `prefix` in plaintext, then an SK (or SKF) payload around `sealed`.
    fn protected(prefix: &[Payload], fragment: Option<Fragment>, sealed: &[u8]) -> Vec<u8> {
        let mut msg = Vec::new();
        header().write(&mut msg);
        let kind = if fragment.is_some() {
            PayloadType::SKF
        } else {
            PayloadType::SK
        };
        let first = write_payloads(prefix, kind, &mut msg);
        msg[16] = if prefix.is_empty() { kind.0 } else { first.0 };
        write_encrypted_header(PayloadType::IDI, sealed.len(), fragment, &mut msg);
        msg.extend_from_slice(sealed);
        with_length(msg)
    }

    #[test]
    fn sk_header_bytes() {
        let mut out = Vec::new();
        write_encrypted_header(PayloadType::IDI, 100, None, &mut out);
        assert_eq!(out, [35, 0, 0, 104]);
        let mut out = Vec::new();
        let f = Fragment {
            number: 2,
            total: 3,
        };
        write_encrypted_header(PayloadType::NONE, 100, Some(f), &mut out);
        assert_eq!(out, [0, 0, 0, 108, 0, 2, 0, 3]);
        // Limits: the largest that fits, and one more (length 0: the peer refuses it).
        let mut out = Vec::new();
        write_encrypted_header(PayloadType::IDI, MAX_SK_SEALED, None, &mut out);
        assert_eq!(out[2..4], [0xff, 0xff]);
        let mut out = Vec::new();
        write_encrypted_header(PayloadType::IDI, MAX_SK_SEALED + 1, None, &mut out);
        assert_eq!(out[2..4], [0, 0]);
        let mut out = Vec::new();
        write_encrypted_header(PayloadType::IDI, MAX_SKF_SEALED, Some(f), &mut out);
        assert_eq!(out[2..4], [0xff, 0xff]);
        let mut out = Vec::new();
        write_encrypted_header(PayloadType::IDI, MAX_SKF_SEALED + 1, Some(f), &mut out);
        assert_eq!(out[2..4], [0, 0]);
    }

    #[test]
    fn sk_alone_and_after_a_prefix() {
        let sealed = [0x5a; 48];
        let msg = protected(&[], None, &sealed);
        let p = parse_message(&msg).unwrap();
        assert_eq!(p.payloads, vec![]);
        assert_eq!(
            p.encrypted,
            Some(Encrypted {
                first_inner: PayloadType::IDI,
                iv_offset: 32,
                fragment: None
            })
        );
        assert_eq!(&msg[32..], &sealed);

        let prefix = vec![Payload::VendorId(vec![9; 6]), Payload::Nonce(vec![7; 2])];
        let msg = protected(&prefix, None, &sealed);
        let p = parse_message(&msg).unwrap();
        assert_eq!(p.payloads, prefix);
        let e = p.encrypted.unwrap();
        assert_eq!(e.iv_offset, 28 + 10 + 6 + 4);
        assert_eq!(&msg[e.iv_offset..], &sealed);
        assert_eq!(msg[28 + 10], PayloadType::SK.0); // the Nonce's Next Payload
    }

    #[test]
    fn skf_fields_and_offset() {
        let sealed = [0xa5; 40];
        let f = Fragment {
            number: 2,
            total: 2,
        };
        let msg = protected(&[], Some(f), &sealed);
        let p = parse_message(&msg).unwrap();
        assert_eq!(
            p.encrypted,
            Some(Encrypted {
                first_inner: PayloadType::IDI,
                iv_offset: 36,
                fragment: Some(f)
            })
        );
        assert_eq!(&msg[36..], &sealed);
        for (number, total) in [(0u16, 1u16), (1, 0), (3, 2), (0, 0), (0xffff, 1)] {
            let mut b = msg.clone();
            b[32..34].copy_from_slice(&number.to_be_bytes());
            b[34..36].copy_from_slice(&total.to_be_bytes());
            assert_eq!(parse_message(&b), Err(Error::Malformed), "{number}/{total}");
        }
        // An SKF too short for its two fields.
        for len in [4u16, 5, 7] {
            let mut b = msg[..28 + usize::from(len)].to_vec();
            b[30..32].copy_from_slice(&len.to_be_bytes());
            assert_eq!(
                parse_message(&with_length(b)),
                Err(Error::BadLength),
                "{len}"
            );
        }
        // Exactly the two fields and nothing sealed: the codec lets the cipher refuse it.
        let mut b = msg[..36].to_vec();
        b[30..32].copy_from_slice(&8u16.to_be_bytes());
        assert!(parse_message(&with_length(b)).is_ok());
    }

    #[test]
    fn sk_must_reach_the_end() {
        let prefix = vec![Payload::Nonce(vec![7; 2])];
        let msg = protected(&prefix, None, &[1; 20]);
        let at = 28 + 6 + 2; // SK's length field
        // SK one byte short of the end: whatever follows would be after SK.
        let mut b = msg.clone();
        b[at + 1] -= 1;
        assert_eq!(parse_message(&b), Err(Error::BadLength));
        // SK one byte past the end.
        let mut b = msg.clone();
        b[at + 1] += 1;
        assert_eq!(parse_message(&b), Err(Error::BadLength));
        // A payload after SK, length adjusted: still refused.
        let mut b = msg.clone();
        b.extend_from_slice(&[0, 0, 0, 4]);
        assert_eq!(parse_message(&with_length(b)), Err(Error::BadLength));
        for len in [0u16, 3] {
            let mut b = msg.clone();
            b[at..at + 2].copy_from_slice(&len.to_be_bytes());
            assert_eq!(parse_message(&b), Err(Error::BadLength));
        }
        // SK with an empty body parses; the cipher refuses it.
        let mut b = msg[..at + 2].to_vec();
        b[at..at + 2].copy_from_slice(&4u16.to_be_bytes());
        assert!(parse_message(&with_length(b)).is_ok());
    }

    #[test]
    fn unknown_critical_in_a_message() {
        let mut msg = Vec::new();
        header().write(&mut msg);
        msg[16] = 0xc8;
        msg.extend_from_slice(&[0x28, 0x80, 0x00, 0x05, 1, 0, 0, 0, 5, 2]);
        let msg = with_length(msg);
        assert_eq!(parse_message(&msg), Err(Error::UnsupportedCritical(0xc8)));
        let mut b = msg.clone();
        b[29] = 0;
        assert_eq!(
            parse_message(&b).unwrap().payloads,
            vec![
                Payload::Other {
                    kind: PayloadType(0xc8),
                    critical: false,
                    body: vec![1]
                },
                Payload::Nonce(vec![2])
            ]
        );
    }

    /// xorshift64*: deterministic, good enough to pick bytes and positions.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn mutate(rng: &mut Rng, b: &mut Vec<u8>) {
        const INTERESTING: [u16; 10] = [0, 1, 3, 4, 5, 7, 8, 0x7fff, 0x8000, 0xffff];
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(b.len());
            match rng.below(8) {
                0 if !b.is_empty() => b[at] = rng.next() as u8,
                1 if !b.is_empty() => b[at] ^= 1 << rng.below(8),
                2 => b.truncate(rng.below(b.len() + 1)),
                3 if at + 2 <= b.len() => {
                    let v = INTERESTING[rng.below(INTERESTING.len())];
                    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
                }
                4 if at + 2 <= b.len() => {
                    let v = u16::from_be_bytes([b[at], b[at + 1]]);
                    let v = if rng.below(2) == 0 {
                        v.wrapping_add(1)
                    } else {
                        v.wrapping_sub(1)
                    };
                    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
                }
                5 => b.insert(at.min(b.len()), rng.next() as u8),
                6 if !b.is_empty() => {
                    b.remove(at);
                }
                _ => {
                    let end = (at + rng.below(16)).min(b.len());
                    let copy = b[at.min(end)..end].to_vec();
                    b.extend_from_slice(&copy);
                }
            }
        }
    }

    /// Re-encodes what parsed and checks it parses to the same thing.
    fn round_trip_message(msg: &[u8], p: &Parsed) {
        let again = match p.encrypted {
            None => encode_message(p.header, &p.payloads),
            Some(e) => {
                let (kind, sk_header) = match e.fragment {
                    None => (PayloadType::SK, 4),
                    Some(_) => (PayloadType::SKF, 8),
                };
                let mut out = Vec::new();
                p.header.write(&mut out);
                let first = write_payloads(&p.payloads, kind, &mut out);
                out[16] = if p.payloads.is_empty() {
                    kind.0
                } else {
                    first.0
                };
                out.extend_from_slice(&msg[e.iv_offset - sk_header..]);
                with_length(out)
            }
        };
        let q = parse_message(&again).unwrap();
        assert_eq!(q.header, p.header);
        assert_eq!(q.payloads, p.payloads);
        let (e, f) = (p.encrypted, q.encrypted);
        assert_eq!(
            e.map(|e| (e.first_inner, e.fragment)),
            f.map(|f| (f.first_inner, f.fragment))
        );
        if let (Some(e), Some(f)) = (e, f) {
            assert_eq!(msg[e.iv_offset..], again[f.iv_offset..]);
        }
    }

    fn seeds() -> Vec<Vec<u8>> {
        let sa = vec![
            Proposal {
                number: 1,
                protocol: ProtocolId::IKE,
                spi: vec![],
                transforms: vec![
                    transform(TransformType::ENCR, 12, Some(256)),
                    transform(TransformType::INTEG, 12, None),
                    Transform {
                        other_attributes: vec![(0x8123, vec![0, 1]), (0x22, vec![1, 2, 3])],
                        ..transform(TransformType::PRF, 7, None)
                    },
                    transform(TransformType::DH, 14, None),
                ],
            },
            Proposal {
                number: 2,
                protocol: ProtocolId::ESP,
                spi: vec![1, 2, 3, 4],
                transforms: vec![transform(TransformType::ESN, 0, None)],
            },
        ];
        let init = vec![
            Payload::Sa(sa.clone()),
            Payload::Ke(KeyExchange {
                group: TransformId::DH_MODP2048,
                data: vec![3; 40],
            }),
            Payload::Nonce(vec![4; 32]),
            Payload::Notify(Notify {
                protocol: ProtocolId::NONE,
                spi: vec![],
                kind: NotifyType::NAT_DETECTION_SOURCE_IP,
                data: vec![5; 20],
            }),
            Payload::VendorId(b"strongSwan".to_vec()),
            Payload::Other {
                kind: PayloadType::CERTREQ,
                critical: false,
                body: vec![4, 1, 2],
            },
        ];
        let inner = vec![
            Payload::IdI(Identification {
                id_type: IdType::ID_KEY_ID,
                data: b"acct_tunnel".to_vec(),
            }),
            Payload::Auth(Authentication {
                method: AuthMethod::SHARED_KEY,
                data: vec![6; 32],
            }),
            Payload::Sa(sa),
            Payload::TsI(vec![
                TrafficSelector::Range {
                    ip_protocol: 0,
                    start_port: 0,
                    end_port: 65535,
                    start: "10.0.0.0".parse().unwrap(),
                    end: "10.255.255.255".parse().unwrap(),
                },
                TrafficSelector::Unknown {
                    ts_type: TsType(10),
                    body: vec![0, 1, 2],
                },
            ]),
            Payload::TsR(vec![TrafficSelector::Range {
                ip_protocol: 17,
                start_port: 500,
                end_port: 4500,
                start: "2001:db8::".parse().unwrap(),
                end: "2001:db8::ffff".parse().unwrap(),
            }]),
            Payload::Delete(Delete {
                protocol: ProtocolId::ESP,
                spis: vec![vec![9; 4], vec![8; 4]],
            }),
            Payload::Cp(vec![1, 0, 0, 0]),
        ];
        let mut chain = Vec::new();
        let first = write_payloads(&inner, PayloadType::NONE, &mut chain);
        chain.insert(0, first.0);
        vec![
            CAPTURED_INIT.to_vec(),
            unhex(STRONGSWAN_INIT),
            unhex(SWAN_INIT_RESP),
            unhex(SWAN_AUTH_REQ),
            unhex(SWAN_FRAGMENTS[1]),
            encode_message(header(), &init),
            protected(&init[3..5], None, &[0x33; 64]),
            protected(
                &[],
                Some(Fragment {
                    number: 1,
                    total: 3,
                }),
                &[0x44; 30],
            ),
            chain,
        ]
    }

    fn variant(e: Error) -> String {
        let s = format!("{e:?}");
        s.split([' ', '(']).next().unwrap_or_default().to_string()
    }

    /// 100,000 mutated, truncated and extended messages: never a panic, and whatever parses
    /// re-encodes to something that parses the same.
    #[test]
    fn mutations_never_panic() {
        let seeds = seeds();
        let (chain_seed, messages) = seeds.split_last().unwrap();
        for s in messages {
            round_trip_message(s, &parse_message(s).unwrap());
        }
        let (first, chain) = chain_seed.split_first().unwrap();
        assert_eq!(parse_payloads(PayloadType(*first), chain).unwrap().len(), 7);

        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut ok, mut errors) = (0usize, BTreeSet::new());
        for _ in 0..100_000 {
            let mut b = seeds[rng.below(seeds.len())].clone();
            mutate(&mut rng, &mut b);
            // Half the time, make the header's Length agree so the chain gets walked.
            if b.len() >= 28 && rng.below(2) == 0 {
                b = with_length(b);
            }
            match parse_message(&b) {
                Ok(p) => {
                    ok += 1;
                    round_trip_message(&b, &p);
                }
                Err(e) => {
                    errors.insert(variant(e));
                }
            }
            if let Some((first, chain)) = b.split_first() {
                match parse_payloads(PayloadType(*first), chain) {
                    Ok(p) => {
                        ok += 1;
                        let mut again = Vec::new();
                        write_payloads(&p, PayloadType::NONE, &mut again);
                        assert_eq!(parse_payloads(PayloadType(*first), &again).unwrap(), p);
                    }
                    Err(e) => {
                        errors.insert(variant(e));
                    }
                }
            }
        }
        // The mutations reach both outcomes and most kinds of error.
        assert!(ok > 1_000, "{ok}");
        assert_eq!(
            errors.into_iter().collect::<Vec<_>>(),
            [
                "BadLength",
                "BadVersion",
                "Malformed",
                "MisplacedEncrypted",
                "TrailingBytes",
                "Truncated",
                "UnsupportedCritical"
            ]
        );
    }
}
