//! The payload chain (RFC 7296 §3.2) and the bodies of the payloads that are simple enough to
//! need no file of their own. SA is in `sa.rs`, traffic selectors in `ts.rs`.

use super::emit::Emitter;
use super::{AuthMethod, Proposal};
use super::{
    Authentication, Delete, Encrypted, Error, Fragment, IdType, Identification, KeyExchange,
    MAX_PAYLOADS, Notify, NotifyType, Payload, PayloadType, ProtocolId, Reader, Result,
    TrafficSelector, TransformId, sa, ts,
};

/// Next Payload, Critical + reserved, Payload Length.
pub const GENERIC_HEADER_LEN: usize = 4;
/// The Critical bit in the second octet of the generic payload header (§3.2).
const CRITICAL: u8 = 0x80;
/// The largest payload body a generic header can describe (65535 − 4). Larger ones are written
/// with Payload Length 0 (see `Payload::encoded_len`).
pub const MAX_PAYLOAD_BODY: usize = 65_531;

/// Walks a chain starting with `first` over `chain`. `base` is the offset of `chain` in the
/// whole message (for `Encrypted::iv_offset`); `outer` is false inside a decrypted chain, where
/// SK and SKF are `MisplacedEncrypted`.
pub(crate) fn walk(
    first: PayloadType,
    chain: &[u8],
    base: usize,
    outer: bool,
) -> Result<(Vec<Payload>, Option<Encrypted>)> {
    let mut r = Reader::new(chain);
    let mut kind = first;
    let mut payloads = Vec::new();
    let mut seen = 0usize;
    while kind != PayloadType::NONE {
        if seen >= MAX_PAYLOADS {
            return Err(Error::TooMany);
        }
        seen = seen.saturating_add(1);
        let start = r.position();
        let next = PayloadType(r.u8()?);
        let critical = r.u8()? & CRITICAL != 0;
        let len = usize::from(r.u16()?);
        let body_len = len
            .checked_sub(GENERIC_HEADER_LEN)
            .ok_or(Error::BadLength)?;
        let body = r.take(body_len).map_err(|_| Error::BadLength)?;
        if kind == PayloadType::SK || kind == PayloadType::SKF {
            if !outer {
                return Err(Error::MisplacedEncrypted);
            }
            // §3.14: "the SK payload [...] MUST be the last payload in the message"; its Next
            // Payload names the first inner payload, so "last" means its length reaches the end.
            if !r.is_empty() {
                return Err(Error::BadLength);
            }
            let after_header = base
                .checked_add(start)
                .and_then(|o| o.checked_add(GENERIC_HEADER_LEN))
                .ok_or(Error::BadLength)?;
            let encrypted = if kind == PayloadType::SK {
                Encrypted {
                    first_inner: next,
                    iv_offset: after_header,
                    fragment: None,
                }
            } else {
                Encrypted {
                    first_inner: next,
                    iv_offset: after_header.checked_add(4).ok_or(Error::BadLength)?,
                    fragment: Some(parse_fragment(body)?),
                }
            };
            return Ok((payloads, Some(encrypted)));
        }
        payloads.push(parse_body(kind, critical, body)?);
        kind = next;
    }
    // Next Payload 0 ends the chain; anything after it is not a payload.
    r.finish()?;
    Ok((payloads, None))
}

/// RFC 7383 §2.5: Fragment Number and Total Fragments, both from 1, number ≤ total. The
/// Next Payload of a non-first fragment should be 0; it is reported, not checked, as the
/// reassembler takes the first fragment's.
fn parse_fragment(body: &[u8]) -> Result<Fragment> {
    let mut r = Reader::new(body);
    let number = r.u16().map_err(|_| Error::BadLength)?;
    let total = r.u16().map_err(|_| Error::BadLength)?;
    if number == 0 || total == 0 || number > total {
        return Err(Error::Malformed);
    }
    Ok(Fragment { number, total })
}

/// One payload body, parsed in a reader that must be consumed exactly.
fn parse_body(kind: PayloadType, critical: bool, body: &[u8]) -> Result<Payload> {
    let mut r = Reader::new(body);
    let p = match kind {
        PayloadType::SA => Payload::Sa(sa::parse(r.rest())?),
        PayloadType::KE => {
            let group = TransformId(r.u16()?);
            let _reserved = r.u16()?;
            Payload::Ke(KeyExchange {
                group,
                data: r.rest().to_vec(),
            })
        }
        PayloadType::IDI => Payload::IdI(parse_id(&mut r)?),
        PayloadType::IDR => Payload::IdR(parse_id(&mut r)?),
        PayloadType::AUTH => {
            let method = AuthMethod(r.u8()?);
            let _reserved = r.take(3)?;
            Payload::Auth(Authentication {
                method,
                data: r.rest().to_vec(),
            })
        }
        PayloadType::NONCE => Payload::Nonce(r.rest().to_vec()),
        PayloadType::NOTIFY => {
            let protocol = ProtocolId(r.u8()?);
            let spi_size = usize::from(r.u8()?);
            let kind = NotifyType(r.u16()?);
            let spi = r.take(spi_size).map_err(|_| Error::BadLength)?.to_vec();
            Payload::Notify(Notify {
                protocol,
                spi,
                kind,
                data: r.rest().to_vec(),
            })
        }
        PayloadType::DELETE => Payload::Delete(parse_delete(&mut r)?),
        PayloadType::VENDOR_ID => Payload::VendorId(r.rest().to_vec()),
        PayloadType::TSI => Payload::TsI(ts::parse(r.rest())?),
        PayloadType::TSR => Payload::TsR(ts::parse(r.rest())?),
        PayloadType::CP => Payload::Cp(r.rest().to_vec()),
        // Known to the RFC, not used with PSK: skipped whatever their critical bit says
        // (§2.5: the bit only matters for types the receiver does not understand).
        PayloadType::CERT | PayloadType::CERTREQ | PayloadType::EAP => Payload::Other {
            kind,
            critical,
            body: r.rest().to_vec(),
        },
        _ if critical => return Err(Error::UnsupportedCritical(kind.0)),
        _ => Payload::Other {
            kind,
            critical,
            body: r.rest().to_vec(),
        },
    };
    r.finish()?;
    Ok(p)
}

fn parse_id(r: &mut Reader<'_>) -> Result<Identification> {
    let id_type = IdType(r.u8()?);
    let _reserved = r.take(3)?;
    Ok(Identification {
        id_type,
        data: r.rest().to_vec(),
    })
}

/// §3.11: Protocol ID, SPI Size, Num of SPIs, then exactly `size × num` bytes of SPIs.
fn parse_delete(r: &mut Reader<'_>) -> Result<Delete> {
    let protocol = ProtocolId(r.u8()?);
    let spi_size = usize::from(r.u8()?);
    let count = usize::from(r.u16()?);
    if spi_size == 0 && count != 0 {
        // Empty SPIs cannot be told apart; for the IKE SA both are 0.
        return Err(Error::Malformed);
    }
    let total = spi_size.checked_mul(count).ok_or(Error::BadLength)?;
    let all = r.take(total).map_err(|_| Error::BadLength)?;
    r.finish()?;
    let spis = if spi_size == 0 {
        Vec::new()
    } else {
        all.chunks_exact(spi_size).map(<[u8]>::to_vec).collect()
    };
    Ok(Delete { protocol, spis })
}

/// Appends one payload (generic header and body). `ok` on return says whether it fitted; if
/// not, its Payload Length is 0.
pub(crate) fn emit_payload(p: &Payload, next: PayloadType, out: &mut Vec<u8>) -> bool {
    let start = out.len();
    let mut e = Emitter::new(out);
    e.u8(next.0);
    e.u8(match p {
        Payload::Other { critical: true, .. } => CRITICAL,
        _ => 0,
    });
    let len = e.begin_len16();
    emit_body(p, &mut e);
    e.end_len16(len, start);
    if !e.ok {
        // Fail closed: a Payload Length below 4 makes the whole message unparseable.
        super::emit::patch_u16(e.out, len, 0);
    }
    e.ok
}

fn emit_body(p: &Payload, e: &mut Emitter<'_>) {
    match p {
        Payload::Sa(proposals) => sa::emit(proposals, e),
        Payload::Ke(ke) => {
            e.u16(ke.group.0);
            e.u16(0);
            e.bytes(&ke.data);
        }
        Payload::IdI(id) | Payload::IdR(id) => {
            e.u8(id.id_type.0);
            e.bytes(&[0, 0, 0]);
            e.bytes(&id.data);
        }
        Payload::Auth(a) => {
            e.u8(a.method.0);
            e.bytes(&[0, 0, 0]);
            e.bytes(&a.data);
        }
        Payload::Notify(n) => {
            e.u8(n.protocol.0);
            e.size_u8(n.spi.len());
            e.u16(n.kind.0);
            e.bytes(&n.spi);
            e.bytes(&n.data);
        }
        Payload::Delete(d) => {
            let size = d.spis.first().map_or(0, Vec::len);
            if size == 0 && !d.spis.is_empty() || d.spis.iter().any(|s| s.len() != size) {
                e.ok = false;
            }
            e.u8(d.protocol.0);
            e.size_u8(size);
            e.size_u16(d.spis.len());
            for spi in &d.spis {
                e.bytes(spi);
            }
        }
        Payload::TsI(selectors) | Payload::TsR(selectors) => ts::emit(selectors, e),
        Payload::Nonce(b) | Payload::VendorId(b) | Payload::Cp(b) => e.bytes(b),
        Payload::Other { body, .. } => e.bytes(body),
    }
}

impl Payload {
    /// The payload's size on the wire, generic header included, or `None` if it cannot be
    /// represented (body over [`MAX_PAYLOAD_BODY`], over 255 proposals' transforms or
    /// selectors, an SPI over 255 bytes, Delete SPIs of unequal or zero size, a TV attribute
    /// whose value is not 2 bytes, a range mixing IPv4 and IPv6). Such a payload is written with
    /// Payload Length 0 so that the peer rejects the message instead of misreading it.
    pub fn encoded_len(&self) -> Option<usize> {
        let mut scratch = Vec::new();
        emit_payload(self, PayloadType::NONE, &mut scratch).then_some(scratch.len())
    }
}

/// Finders over a payload list (a [`super::Parsed`]'s `payloads` or a decrypted chain). Each
/// returns the first match; use the iterators where a payload may repeat (Notify, Delete, V).
pub trait PayloadsExt {
    fn payloads(&self) -> &[Payload];

    fn notifies(&self) -> impl Iterator<Item = &Notify> {
        self.payloads().iter().filter_map(|p| match p {
            Payload::Notify(n) => Some(n),
            _ => None,
        })
    }

    /// The first notification of this type.
    fn notify(&self, kind: NotifyType) -> Option<&Notify> {
        self.notifies().find(|n| n.kind == kind)
    }

    /// The first error notification (type below 16384), if any.
    fn error_notify(&self) -> Option<&Notify> {
        self.notifies().find(|n| n.kind.is_error())
    }

    fn deletes(&self) -> impl Iterator<Item = &Delete> {
        self.payloads().iter().filter_map(|p| match p {
            Payload::Delete(d) => Some(d),
            _ => None,
        })
    }

    fn sa(&self) -> Option<&[Proposal]> {
        self.payloads().iter().find_map(|p| match p {
            Payload::Sa(v) => Some(v.as_slice()),
            _ => None,
        })
    }

    fn ke(&self) -> Option<&KeyExchange> {
        self.payloads().iter().find_map(|p| match p {
            Payload::Ke(k) => Some(k),
            _ => None,
        })
    }

    fn nonce(&self) -> Option<&[u8]> {
        self.payloads().iter().find_map(|p| match p {
            Payload::Nonce(n) => Some(n.as_slice()),
            _ => None,
        })
    }

    fn id_i(&self) -> Option<&Identification> {
        self.payloads().iter().find_map(|p| match p {
            Payload::IdI(i) => Some(i),
            _ => None,
        })
    }

    fn id_r(&self) -> Option<&Identification> {
        self.payloads().iter().find_map(|p| match p {
            Payload::IdR(i) => Some(i),
            _ => None,
        })
    }

    fn auth(&self) -> Option<&Authentication> {
        self.payloads().iter().find_map(|p| match p {
            Payload::Auth(a) => Some(a),
            _ => None,
        })
    }

    fn ts_i(&self) -> Option<&[TrafficSelector]> {
        self.payloads().iter().find_map(|p| match p {
            Payload::TsI(t) => Some(t.as_slice()),
            _ => None,
        })
    }

    fn ts_r(&self) -> Option<&[TrafficSelector]> {
        self.payloads().iter().find_map(|p| match p {
            Payload::TsR(t) => Some(t.as_slice()),
            _ => None,
        })
    }

    /// How many payloads of this type there are (to reject duplicates of SA, KE, Ni, ...).
    fn count(&self, kind: PayloadType) -> usize {
        self.payloads().iter().filter(|p| p.kind() == kind).count()
    }
}

impl PayloadsExt for [Payload] {
    fn payloads(&self) -> &[Payload] {
        self
    }
}

impl PayloadsExt for Vec<Payload> {
    fn payloads(&self) -> &[Payload] {
        self
    }
}

impl PayloadsExt for super::Parsed {
    fn payloads(&self) -> &[Payload] {
        &self.payloads
    }
}
