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
        if (h.length as usize) < Header::LEN {
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
    let declared = header.length as usize;
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
