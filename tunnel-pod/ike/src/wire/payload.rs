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
        Payload::Other { kind, body, .. } => {
            // These types would end the chain or claim to be the encrypted payload.
            if matches!(
                *kind,
                PayloadType::NONE | PayloadType::SK | PayloadType::SKF
            ) {
                e.ok = false;
            }
            e.bytes(body);
        }
    }
}

impl Payload {
    /// The payload's size on the wire, generic header included, or `None` if it cannot be
    /// represented: a body over [`MAX_PAYLOAD_BODY`] bytes, more than 255 transforms in a
    /// proposal or selectors in a TS payload, an SPI over 255 bytes, Delete SPIs of unequal or
    /// zero size, a TV attribute (AF bit set) whose value is not 2 bytes, a range mixing IPv4
    /// and IPv6, an `Other` of type NONE, SK or SKF. Such a payload is written with Payload
    /// Length 0 so that the peer rejects the message instead of misreading it.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{parse_payloads, write_payloads};

    /// Parses `bytes` as a chain starting with `first`, checks it yields `expected`, and that
    /// writing `expected` gives `bytes` back.
    fn both_ways(first: PayloadType, bytes: &[u8], expected: &[Payload]) {
        assert_eq!(parse_payloads(first, bytes).unwrap(), expected);
        let mut out = Vec::new();
        assert_eq!(write_payloads(expected, PayloadType::NONE, &mut out), first);
        assert_eq!(out, bytes);
        for p in expected {
            assert!(p.encoded_len().is_some());
        }
    }

    #[test]
    fn ke() {
        // Group 20 (ECP-384), reserved, 96 bytes of x‖y.
        let mut b = vec![0x00, 0x00, 0x00, 0x68, 0x00, 0x14, 0x00, 0x00];
        b.extend((0..96u8).map(|i| i.wrapping_mul(7)));
        let ke = Payload::Ke(KeyExchange {
            group: TransformId::DH_ECP384,
            data: (0..96u8).map(|i| i.wrapping_mul(7)).collect(),
        });
        both_ways(PayloadType::KE, &b, &[ke]);
        // Body shorter than group + reserved.
        assert_eq!(
            parse_payloads(PayloadType::KE, &[0, 0, 0, 7, 0, 0x14, 0]),
            Err(Error::Truncated)
        );
    }

    #[test]
    fn identification_and_auth() {
        #[rustfmt::skip]
        let b: &[u8] = &[
            // IDi: next AUTH, length 4 + 4 + 11, ID_FQDN "example.com"
            0x27, 0x00, 0x00, 0x13, 0x02, 0x00, 0x00, 0x00,
            b'e', b'x', b'a', b'm', b'p', b'l', b'e', b'.', b'c', b'o', b'm',
            // AUTH: last, length 4 + 4 + 4, shared key, 4 bytes
            0x00, 0x00, 0x00, 0x0c, 0x02, 0x00, 0x00, 0x00, 0xde, 0xad, 0xbe, 0xef,
        ];
        let id = Identification {
            id_type: IdType::ID_FQDN,
            data: b"example.com".to_vec(),
        };
        assert_eq!(id.body(), b[4..19].to_vec());
        both_ways(
            PayloadType::IDI,
            b,
            &[
                Payload::IdI(id),
                Payload::Auth(Authentication {
                    method: AuthMethod::SHARED_KEY,
                    data: vec![0xde, 0xad, 0xbe, 0xef],
                }),
            ],
        );
        // IDr the same way, with an IPv4 address.
        let b: &[u8] = &[0, 0, 0, 12, 1, 0, 0, 0, 192, 0, 2, 1];
        both_ways(
            PayloadType::IDR,
            b,
            &[Payload::IdR(Identification {
                id_type: IdType::ID_IPV4_ADDR,
                data: vec![192, 0, 2, 1],
            })],
        );
        // Reserved bytes are ignored on receipt (§3.5).
        let b: &[u8] = &[0, 0, 0, 12, 1, 0xff, 0xff, 0xff, 192, 0, 2, 1];
        assert!(parse_payloads(PayloadType::IDR, b).is_ok());
        // Shorter than type + reserved.
        assert_eq!(
            parse_payloads(PayloadType::AUTH, &[0, 0, 0, 6, 2, 0]),
            Err(Error::Truncated)
        );
    }

    #[test]
    fn nonce_vendor_cp() {
        #[rustfmt::skip]
        let b: &[u8] = &[
            0x2b, 0x00, 0x00, 0x08, 1, 2, 3, 4,
            0x2f, 0x00, 0x00, 0x06, b'V', b'I',
            0x00, 0x00, 0x00, 0x0c, 0x01, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
        ];
        both_ways(
            PayloadType::NONCE,
            b,
            &[
                Payload::Nonce(vec![1, 2, 3, 4]),
                Payload::VendorId(b"VI".to_vec()),
                Payload::Cp(vec![1, 0, 0, 0, 0, 1, 0, 0]),
            ],
        );
        // An empty nonce is the core's business (16..256 bytes, §3.9), not the codec's.
        both_ways(PayloadType::NONCE, &[0, 0, 0, 4], &[Payload::Nonce(vec![])]);
    }

    #[test]
    fn notify() {
        #[rustfmt::skip]
        let b: &[u8] = &[
            // REKEY_SA about ESP SPI 0x12345678, no data
            0x29, 0x00, 0x00, 0x0c, 0x03, 0x04, 0x40, 0x09, 0x12, 0x34, 0x56, 0x78,
            // NAT_DETECTION_SOURCE_IP, no SPI, 4 bytes of data (a real one has 20)
            0x00, 0x00, 0x00, 0x0c, 0x00, 0x00, 0x40, 0x04, 0xaa, 0xbb, 0xcc, 0xdd,
        ];
        let p = vec![
            Payload::Notify(Notify {
                protocol: ProtocolId::ESP,
                spi: vec![0x12, 0x34, 0x56, 0x78],
                kind: NotifyType::REKEY_SA,
                data: vec![],
            }),
            Payload::Notify(Notify {
                protocol: ProtocolId::NONE,
                spi: vec![],
                kind: NotifyType::NAT_DETECTION_SOURCE_IP,
                data: vec![0xaa, 0xbb, 0xcc, 0xdd],
            }),
        ];
        both_ways(PayloadType::NOTIFY, b, &p);
        assert_eq!(p.notifies().count(), 2);
        assert_eq!(p.notify(NotifyType::REKEY_SA).unwrap().spi.len(), 4);
        assert!(p.notify(NotifyType::COOKIE).is_none());
        assert!(p.error_notify().is_none());
        // SPI size beyond the payload.
        let mut bad = b[..12].to_vec();
        bad[0] = 0;
        bad[5] = 9;
        assert_eq!(
            parse_payloads(PayloadType::NOTIFY, &bad),
            Err(Error::BadLength)
        );
        // Shorter than the fixed part.
        assert_eq!(
            parse_payloads(PayloadType::NOTIFY, &[0, 0, 0, 7, 0, 0, 0x40]),
            Err(Error::Truncated)
        );
    }

    #[test]
    fn delete() {
        #[rustfmt::skip]
        let b: &[u8] = &[
            // ESP, SPI size 4, two SPIs
            0x2a, 0x00, 0x00, 0x10, 0x03, 0x04, 0x00, 0x02, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xfe,
            // the IKE SA: size 0, none
            0x00, 0x00, 0x00, 0x08, 0x01, 0x00, 0x00, 0x00,
        ];
        let p = vec![
            Payload::Delete(Delete {
                protocol: ProtocolId::ESP,
                spis: vec![vec![0, 0, 0, 1], vec![0xff, 0xff, 0xff, 0xfe]],
            }),
            Payload::Delete(Delete {
                protocol: ProtocolId::IKE,
                spis: vec![],
            }),
        ];
        both_ways(PayloadType::DELETE, b, &p);
        assert_eq!(p.deletes().count(), 2);
        let first = &b[..16];
        let with = |at: usize, v: u8| {
            let mut x = first.to_vec();
            x[0] = 0;
            x[at] = v;
            parse_payloads(PayloadType::DELETE, &x)
        };
        assert_eq!(with(7, 3), Err(Error::BadLength)); // three SPIs announced, two there
        assert_eq!(with(7, 1), Err(Error::TrailingBytes)); // one announced
        assert_eq!(with(5, 3), Err(Error::TrailingBytes)); // 2 × 3 bytes, 8 there
        assert_eq!(with(5, 0), Err(Error::Malformed)); // size 0 with a count
        assert_eq!(with(5, 5), Err(Error::BadLength)); // 2 × 5 bytes, 8 there
    }

    #[test]
    fn sa_in_a_chain() {
        #[rustfmt::skip]
        let b: &[u8] = &[
            0x00, 0x00, 0x00, 0x14,
            0x00, 0x00, 0x00, 0x10, 0x01, 0x01, 0x00, 0x01,
            0x00, 0x00, 0x00, 0x08, 0x04, 0x00, 0x00, 0x14,
        ];
        let p = parse_payloads(PayloadType::SA, b).unwrap();
        assert_eq!(p.sa().unwrap()[0].transforms[0].id, TransformId::DH_ECP384);
        let mut out = Vec::new();
        write_payloads(&p, PayloadType::NONE, &mut out);
        assert_eq!(out, b);
    }

    #[test]
    fn generic_lengths() {
        // Nonce of 4 bytes; then a valid Vendor ID, for "beyond the first payload" cases.
        let b: &[u8] = &[0x2b, 0x00, 0x00, 0x08, 1, 2, 3, 4, 0, 0, 0, 5, b'v'];
        assert!(parse_payloads(PayloadType::NONCE, b).is_ok());
        for len in [0u16, 1, 3] {
            let mut x = b.to_vec();
            x[2..4].copy_from_slice(&len.to_be_bytes());
            assert_eq!(
                parse_payloads(PayloadType::NONCE, &x),
                Err(Error::BadLength),
                "{len}"
            );
        }
        // Too long (swallows the next header, then the chain's end) and beyond the buffer.
        for len in [9u16, 14, 0xffff] {
            let mut x = b.to_vec();
            x[2..4].copy_from_slice(&len.to_be_bytes());
            assert!(parse_payloads(PayloadType::NONCE, &x).is_err(), "{len}");
        }
        // Too short: the rest of the nonce reads as a generic header.
        let mut x = b.to_vec();
        x[3] = 6;
        assert!(parse_payloads(PayloadType::NONCE, &x).is_err());
        // Cut inside either header or body.
        for n in 0..b.len() {
            assert!(parse_payloads(PayloadType::NONCE, &b[..n]).is_err(), "{n}");
        }
        // Bytes after the last payload.
        let mut x = b.to_vec();
        x.push(0);
        assert_eq!(
            parse_payloads(PayloadType::NONCE, &x),
            Err(Error::TrailingBytes)
        );
        // An empty chain is empty; bytes with "no first payload" are trailing.
        assert_eq!(parse_payloads(PayloadType::NONE, &[]).unwrap(), vec![]);
        assert_eq!(
            parse_payloads(PayloadType::NONE, &[0]),
            Err(Error::TrailingBytes)
        );
    }

    #[test]
    fn unknown_critical_and_not() {
        // Type 0xc8 (unassigned), then a nonce.
        let b: &[u8] = &[0x28, 0x00, 0x00, 0x06, 0xab, 0xcd, 0, 0, 0, 5, 9];
        let p = parse_payloads(PayloadType(0xc8), b).unwrap();
        assert_eq!(
            p,
            vec![
                Payload::Other {
                    kind: PayloadType(0xc8),
                    critical: false,
                    body: vec![0xab, 0xcd]
                },
                Payload::Nonce(vec![9]),
            ]
        );
        let mut out = Vec::new();
        write_payloads(&p, PayloadType::NONE, &mut out);
        assert_eq!(out, b);
        // The same, critical. Reserved bits beside the critical bit do not matter.
        for flags in [0x80u8, 0xff] {
            let mut x = b.to_vec();
            x[1] = flags;
            assert_eq!(
                parse_payloads(PayloadType(0xc8), &x),
                Err(Error::UnsupportedCritical(0xc8))
            );
        }
        let mut x = b.to_vec();
        x[1] = 0x7f;
        assert!(parse_payloads(PayloadType(0xc8), &x).is_ok());
        // Known types the core does not handle: kept with their flag, even when critical.
        for kind in [PayloadType::CERT, PayloadType::CERTREQ, PayloadType::EAP] {
            let mut x = b.to_vec();
            x[1] = 0x80;
            let p = parse_payloads(kind, &x).unwrap();
            assert_eq!(
                p[0],
                Payload::Other {
                    kind,
                    critical: true,
                    body: vec![0xab, 0xcd]
                }
            );
            let mut out = Vec::new();
            write_payloads(&p, PayloadType::NONE, &mut out);
            assert_eq!(out, x);
        }
        // A known type marked critical is parsed as usual.
        let x: &[u8] = &[0x00, 0x80, 0x00, 0x05, 7];
        assert_eq!(
            parse_payloads(PayloadType::NONCE, x).unwrap(),
            vec![Payload::Nonce(vec![7])]
        );
    }

    #[test]
    fn encrypted_inside_a_decrypted_chain() {
        for kind in [PayloadType::SK, PayloadType::SKF] {
            let b: &[u8] = &[0x29, 0x00, 0x00, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0];
            assert_eq!(parse_payloads(kind, b), Err(Error::MisplacedEncrypted));
            // Second in the chain.
            let mut x = vec![kind.0, 0, 0, 5, 1];
            x.extend_from_slice(b);
            assert_eq!(
                parse_payloads(PayloadType::NONCE, &x),
                Err(Error::MisplacedEncrypted)
            );
        }
    }

    #[test]
    fn max_payloads() {
        let one = Payload::VendorId(vec![1]);
        for (n, ok) in [(MAX_PAYLOADS, true), (MAX_PAYLOADS + 1, false)] {
            let p = vec![one.clone(); n];
            let mut out = Vec::new();
            write_payloads(&p, PayloadType::NONE, &mut out);
            let got = parse_payloads(PayloadType::VENDOR_ID, &out);
            if ok {
                assert_eq!(got.unwrap(), p);
            } else {
                assert_eq!(got, Err(Error::TooMany));
            }
        }
    }

    #[test]
    fn too_big_fails_closed() {
        let big = Payload::Nonce(vec![0; MAX_PAYLOAD_BODY + 1]);
        let fits = Payload::Nonce(vec![0; MAX_PAYLOAD_BODY]);
        assert_eq!(big.encoded_len(), None);
        assert_eq!(fits.encoded_len(), Some(65_535));
        let mut out = Vec::new();
        write_payloads(std::slice::from_ref(&fits), PayloadType::NONE, &mut out);
        assert_eq!(
            parse_payloads(PayloadType::NONCE, &out).unwrap(),
            vec![fits]
        );
        let mut out = Vec::new();
        write_payloads(
            &[big, Payload::VendorId(vec![])],
            PayloadType::NONE,
            &mut out,
        );
        assert_eq!(&out[..4], &[0x2b, 0, 0, 0]);
        assert_eq!(
            parse_payloads(PayloadType::NONCE, &out),
            Err(Error::BadLength)
        );
        // An inner field that does not fit also zeroes the payload length.
        let d = Payload::Delete(Delete {
            protocol: ProtocolId::ESP,
            spis: vec![vec![0; 4], vec![0; 3]],
        });
        assert_eq!(d.encoded_len(), None);
        let mut out = Vec::new();
        write_payloads(&[d], PayloadType::NONE, &mut out);
        assert_eq!(&out[2..4], &[0, 0]);
        for kind in [PayloadType::NONE, PayloadType::SK, PayloadType::SKF] {
            let o = Payload::Other {
                kind,
                critical: false,
                body: vec![],
            };
            assert_eq!(o.encoded_len(), None);
        }
        let n = Payload::Notify(Notify {
            protocol: ProtocolId::ESP,
            spi: vec![0; 256],
            kind: NotifyType::REKEY_SA,
            data: vec![],
        });
        assert_eq!(n.encoded_len(), None);
    }

    #[test]
    fn finders() {
        let p = vec![
            Payload::Nonce(vec![1]),
            Payload::Ke(KeyExchange {
                group: TransformId::DH_MODP2048,
                data: vec![2],
            }),
            Payload::Notify(Notify {
                protocol: ProtocolId::NONE,
                spi: vec![],
                kind: NotifyType::NO_PROPOSAL_CHOSEN,
                data: vec![],
            }),
            Payload::Nonce(vec![3]),
        ];
        assert_eq!(p.nonce(), Some(&[1u8][..]));
        assert_eq!(p.count(PayloadType::NONCE), 2);
        assert_eq!(p.ke().unwrap().data, vec![2]);
        assert_eq!(
            p.error_notify().unwrap().kind,
            NotifyType::NO_PROPOSAL_CHOSEN
        );
        assert!(p.sa().is_none() && p.id_i().is_none() && p.ts_i().is_none());
    }
}
