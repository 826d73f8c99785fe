//! The SA payload body (RFC 7296 §3.3): proposals, their transforms, transform attributes.

use super::emit::Emitter;
use super::{
    ATTR_KEY_LENGTH, Error, Proposal, ProtocolId, Reader, Result, Transform, TransformId,
    TransformType,
};

/// Last Substruc of a proposal that is followed by another (§3.3.1); 0 means last.
const MORE_PROPOSALS: u8 = 2;
/// Last Substruc of a transform that is followed by another (§3.3.2); 0 means last.
const MORE_TRANSFORMS: u8 = 3;
/// Attribute Format bit: set = TV (two-byte value), clear = TLV (§3.3.5).
const AF: u16 = 0x8000;
/// Key Length as it appears on the wire (always TV).
const KEY_LENGTH_TV: u16 = AF | ATTR_KEY_LENGTH;
/// Last Substruc, reserved, length, number, protocol, SPI size, #transforms.
const PROPOSAL_HEADER: usize = 8;
/// Last Substruc, reserved, length, type, reserved, ID.
const TRANSFORM_HEADER: usize = 8;

/// Parses an SA payload body: one or more proposals. An SA without proposals is `Malformed`.
pub(crate) fn parse(body: &[u8]) -> Result<Vec<Proposal>> {
    let mut r = Reader::new(body);
    let mut proposals = Vec::new();
    loop {
        let more = r.u8()?;
        let _reserved = r.u8()?;
        let len = usize::from(r.u16()?);
        if len < PROPOSAL_HEADER {
            return Err(Error::BadLength);
        }
        let mut p = r.sub(len.saturating_sub(4)).map_err(|_| Error::BadLength)?;
        proposals.push(parse_proposal(&mut p)?);
        p.finish()?;
        // The Last Substruc byte must agree with what follows (§3.3.1).
        match (more, r.is_empty()) {
            (0, true) => return Ok(proposals),
            (MORE_PROPOSALS, false) => {}
            _ => return Err(Error::Malformed),
        }
    }
}

fn parse_proposal(p: &mut Reader<'_>) -> Result<Proposal> {
    let number = p.u8()?;
    let protocol = ProtocolId(p.u8()?);
    let spi_size = usize::from(p.u8()?);
    let declared = usize::from(p.u8()?);
    let spi = p.take(spi_size).map_err(|_| Error::BadLength)?.to_vec();
    let mut transforms = Vec::new();
    while !p.is_empty() {
        if transforms.len() >= declared {
            // More transforms than "# of Transforms" says.
            return Err(Error::Malformed);
        }
        let more = p.u8()?;
        let _reserved = p.u8()?;
        let len = usize::from(p.u16()?);
        if len < TRANSFORM_HEADER {
            return Err(Error::BadLength);
        }
        let mut t = p.sub(len.saturating_sub(4)).map_err(|_| Error::BadLength)?;
        transforms.push(parse_transform(&mut t)?);
        t.finish()?;
        match (more, p.is_empty()) {
            (0, true) | (MORE_TRANSFORMS, false) => {}
            _ => return Err(Error::Malformed),
        }
    }
    if transforms.len() != declared {
        return Err(Error::Malformed);
    }
    Ok(Proposal {
        number,
        protocol,
        spi,
        transforms,
    })
}

fn parse_transform(t: &mut Reader<'_>) -> Result<Transform> {
    let kind = TransformType(t.u8()?);
    let _reserved = t.u8()?;
    let id = TransformId(t.u16()?);
    let mut key_length = None;
    let mut other_attributes = Vec::new();
    while !t.is_empty() {
        let ty = t.u16()?;
        let value = if ty & AF != 0 {
            t.take(2)?
        } else {
            let len = usize::from(t.u16()?);
            t.take(len)?
        };
        if ty == KEY_LENGTH_TV {
            if key_length.is_some() {
                // Two Key Lengths in one transform: no meaning we could pick.
                return Err(Error::Malformed);
            }
            let mut v = Reader::new(value);
            key_length = Some(v.u16()?);
        } else {
            other_attributes.push((ty, value.to_vec()));
        }
    }
    Ok(Transform {
        kind,
        id,
        key_length,
        other_attributes,
    })
}

/// Appends an SA payload body. Key Length goes first, then the other attributes in order.
pub(crate) fn emit(proposals: &[Proposal], e: &mut Emitter<'_>) {
    let mut it = proposals.iter().peekable();
    while let Some(p) = it.next() {
        let start = e.out.len();
        e.u8(if it.peek().is_some() {
            MORE_PROPOSALS
        } else {
            0
        });
        e.u8(0);
        let len = e.begin_len16();
        e.u8(p.number);
        e.u8(p.protocol.0);
        e.size_u8(p.spi.len());
        e.size_u8(p.transforms.len());
        e.bytes(&p.spi);
        let mut ts = p.transforms.iter().peekable();
        while let Some(t) = ts.next() {
            emit_transform(t, ts.peek().is_some(), e);
        }
        e.end_len16(len, start);
    }
}

fn emit_transform(t: &Transform, more: bool, e: &mut Emitter<'_>) {
    let start = e.out.len();
    e.u8(if more { MORE_TRANSFORMS } else { 0 });
    e.u8(0);
    let len = e.begin_len16();
    e.u8(t.kind.0);
    e.u8(0);
    e.u16(t.id.0);
    if let Some(bits) = t.key_length {
        e.u16(KEY_LENGTH_TV);
        e.u16(bits);
    }
    for (ty, value) in &t.other_attributes {
        e.u16(*ty);
        if ty & AF != 0 {
            // TV: the value is the two bytes after the type, nothing else fits.
            if value.len() != 2 {
                e.ok = false;
            }
        } else {
            e.size_u16(value.len());
        }
        e.bytes(value);
    }
    e.end_len16(len, start);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two proposals, hand-assembled from RFC 7296 §3.3: an IKE proposal (AES-GCM-16/256,
    /// PRF-HMAC-SHA2-256, ECP-384) and an ESP one with a 4-byte SPI (AES-CBC/128,
    /// HMAC-SHA2-256-128, MODP-2048, no ESN).
    #[rustfmt::skip]
    const SA: &[u8] = &[
        // proposal 1: more, reserved, length 36; number 1, IKE, SPI size 0, 3 transforms
        0x02, 0x00, 0x00, 0x24, 0x01, 0x01, 0x00, 0x03,
        0x03, 0x00, 0x00, 0x0c, 0x01, 0x00, 0x00, 0x14, 0x80, 0x0e, 0x01, 0x00,
        0x03, 0x00, 0x00, 0x08, 0x02, 0x00, 0x00, 0x05,
        0x00, 0x00, 0x00, 0x08, 0x04, 0x00, 0x00, 0x14,
        // proposal 2: last, length 48; number 2, ESP, SPI size 4, 4 transforms, SPI
        0x00, 0x00, 0x00, 0x30, 0x02, 0x03, 0x04, 0x04, 0xc0, 0xff, 0xee, 0x01,
        0x03, 0x00, 0x00, 0x0c, 0x01, 0x00, 0x00, 0x0c, 0x80, 0x0e, 0x00, 0x80,
        0x03, 0x00, 0x00, 0x08, 0x03, 0x00, 0x00, 0x0c,
        0x03, 0x00, 0x00, 0x08, 0x04, 0x00, 0x00, 0x0e,
        0x00, 0x00, 0x00, 0x08, 0x05, 0x00, 0x00, 0x00,
    ];

    fn t(kind: TransformType, id: TransformId, key_length: Option<u16>) -> Transform {
        Transform {
            kind,
            id,
            key_length,
            other_attributes: vec![],
        }
    }

    fn expected() -> Vec<Proposal> {
        vec![
            Proposal {
                number: 1,
                protocol: ProtocolId::IKE,
                spi: vec![],
                transforms: vec![
                    t(TransformType::ENCR, TransformId::ENCR_AES_GCM_16, Some(256)),
                    t(TransformType::PRF, TransformId::PRF_HMAC_SHA2_256, None),
                    t(TransformType::DH, TransformId::DH_ECP384, None),
                ],
            },
            Proposal {
                number: 2,
                protocol: ProtocolId::ESP,
                spi: vec![0xc0, 0xff, 0xee, 0x01],
                transforms: vec![
                    t(TransformType::ENCR, TransformId::ENCR_AES_CBC, Some(128)),
                    t(
                        TransformType::INTEG,
                        TransformId::AUTH_HMAC_SHA2_256_128,
                        None,
                    ),
                    t(TransformType::DH, TransformId::DH_MODP2048, None),
                    t(TransformType::ESN, TransformId::ESN_NO, None),
                ],
            },
        ]
    }

    fn emit_vec(p: &[Proposal]) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let mut e = Emitter::new(&mut out);
        emit(p, &mut e);
        let ok = e.ok;
        (out, ok)
    }

    fn with_u16(bytes: &[u8], at: usize, v: u16) -> Vec<u8> {
        let mut b = bytes.to_vec();
        b[at..at + 2].copy_from_slice(&v.to_be_bytes());
        b
    }

    #[test]
    fn deconstruct() {
        assert_eq!(parse(SA).unwrap(), expected());
    }

    #[test]
    fn construct() {
        assert_eq!(emit_vec(&expected()), (SA.to_vec(), true));
    }

    #[test]
    fn unknown_transforms_and_attributes_round_trip() {
        #[rustfmt::skip]
        let bytes: &[u8] = &[
            0x00, 0x00, 0x00, 0x1f, 0x01, 0x09, 0x00, 0x01,
            // type 0xf0, ID 0x1234, Key Length 192, TV 0x8001 = 7, TLV 5 = "abc"
            0x00, 0x00, 0x00, 0x17, 0xf0, 0x00, 0x12, 0x34,
            0x80, 0x0e, 0x00, 0xc0, 0x80, 0x01, 0x00, 0x07, 0x00, 0x05, 0x00, 0x03, b'a', b'b', b'c',
        ];
        let p = parse(bytes).unwrap();
        assert_eq!(
            p,
            vec![Proposal {
                number: 1,
                protocol: ProtocolId(9),
                spi: vec![],
                transforms: vec![Transform {
                    kind: TransformType(0xf0),
                    id: TransformId(0x1234),
                    key_length: Some(192),
                    other_attributes: vec![(0x8001, vec![0, 7]), (5, b"abc".to_vec())],
                }],
            }]
        );
        assert_eq!(emit_vec(&p), (bytes.to_vec(), true));
    }

    #[test]
    fn key_length_in_tlv_form_is_just_another_attribute() {
        #[rustfmt::skip]
        let bytes: &[u8] = &[
            0x00, 0x00, 0x00, 0x16, 0x01, 0x01, 0x00, 0x01,
            0x00, 0x00, 0x00, 0x0e, 0x01, 0x00, 0x00, 0x0c, 0x00, 0x0e, 0x00, 0x02, 0x01, 0x00,
        ];
        let p = parse(bytes).unwrap();
        assert_eq!(p[0].transforms[0].key_length, None);
        assert_eq!(p[0].transforms[0].other_attributes, vec![(14, vec![1, 0])]);
        assert_eq!(emit_vec(&p), (bytes.to_vec(), true));
    }

    #[test]
    fn proposal_lengths() {
        // Proposal 1's length at 2, proposal 2's at 38.
        for at in [2, 38] {
            for len in [0, 4, 7] {
                assert_eq!(
                    parse(&with_u16(SA, at, len)),
                    Err(Error::BadLength),
                    "{at} {len}"
                );
            }
        }
        // Too long: beyond the SA body.
        assert_eq!(parse(&with_u16(SA, 38, 49)), Err(Error::BadLength));
        assert_eq!(parse(&with_u16(SA, 38, 0xffff)), Err(Error::BadLength));
        // Too long for proposal 1: it swallows proposal 2's header as a transform.
        assert!(parse(&with_u16(SA, 2, 40)).is_err());
        // Too short: the last transform of proposal 1 sticks out of it.
        assert_eq!(parse(&with_u16(SA, 2, 32)), Err(Error::BadLength));
        // One byte short of the SA body.
        assert!(parse(&SA[..SA.len() - 1]).is_err());
    }

    #[test]
    fn transform_lengths() {
        // First transform of proposal 1 (length at 10); last of proposal 2 (at 78).
        for at in [10, 78] {
            for len in [0, 4, 7] {
                assert_eq!(
                    parse(&with_u16(SA, at, len)),
                    Err(Error::BadLength),
                    "{at} {len}"
                );
            }
            assert_eq!(parse(&with_u16(SA, at, 0xffff)), Err(Error::BadLength));
        }
        // 8 instead of 12: the Key Length attribute becomes a transform of its own and
        // fails to parse as one.
        assert!(parse(&with_u16(SA, 10, 8)).is_err());
        // 16 instead of 12: swallows half of the next transform.
        assert!(parse(&with_u16(SA, 10, 16)).is_err());
    }

    #[test]
    fn attribute_length_beyond_transform() {
        #[rustfmt::skip]
        let bytes: &[u8] = &[
            0x00, 0x00, 0x00, 0x17, 0x01, 0x01, 0x00, 0x01,
            0x00, 0x00, 0x00, 0x0f, 0x01, 0x00, 0x00, 0x0c, 0x00, 0x05, 0x00, 0x04, 0x61, 0x62, 0x63,
        ];
        assert_eq!(parse(bytes), Err(Error::Truncated));
        // A TV attribute cut in half.
        #[rustfmt::skip]
        let bytes: &[u8] = &[
            0x00, 0x00, 0x00, 0x13, 0x01, 0x01, 0x00, 0x01,
            0x00, 0x00, 0x00, 0x0b, 0x01, 0x00, 0x00, 0x0c, 0x80, 0x0e, 0x01,
        ];
        assert_eq!(parse(bytes), Err(Error::Truncated));
    }

    #[test]
    fn transform_count_must_match() {
        // Proposal 1 says 3: claim 2 and 4.
        let mut b = SA.to_vec();
        b[7] = 2;
        assert_eq!(parse(&b), Err(Error::Malformed));
        b[7] = 4;
        assert_eq!(parse(&b), Err(Error::Malformed));
        b[7] = 0;
        assert_eq!(parse(&b), Err(Error::Malformed));
    }

    #[test]
    fn last_substruc_must_agree() {
        // Proposal 1 says "last" but proposal 2 follows.
        let mut b = SA.to_vec();
        b[0] = 0;
        assert_eq!(parse(&b), Err(Error::Malformed));
        // Proposal 2 says "more" but nothing follows.
        let mut b = SA.to_vec();
        b[36] = 2;
        assert_eq!(parse(&b), Err(Error::Malformed));
        // A value that is neither.
        let mut b = SA.to_vec();
        b[0] = 3;
        assert_eq!(parse(&b), Err(Error::Malformed));
        // The first transform says "last" with two more in the proposal.
        let mut b = SA.to_vec();
        b[8] = 0;
        assert_eq!(parse(&b), Err(Error::Malformed));
        // The last transform of proposal 1 says "more".
        let mut b = SA.to_vec();
        b[28] = 3;
        assert_eq!(parse(&b), Err(Error::Malformed));
    }

    #[test]
    fn spi_size_beyond_proposal() {
        let mut b = SA.to_vec();
        b[42] = 200;
        assert_eq!(parse(&b), Err(Error::BadLength));
    }

    #[test]
    fn empty_sa_and_double_key_length() {
        assert_eq!(parse(&[]), Err(Error::Truncated));
        #[rustfmt::skip]
        let bytes: &[u8] = &[
            0x00, 0x00, 0x00, 0x18, 0x01, 0x01, 0x00, 0x01,
            0x00, 0x00, 0x00, 0x10, 0x01, 0x00, 0x00, 0x0c, 0x80, 0x0e, 0x00, 0x80, 0x80, 0x0e, 0x01, 0x00,
        ];
        assert_eq!(parse(bytes), Err(Error::Malformed));
    }

    #[test]
    fn what_cannot_be_written_is_flagged() {
        let mut p = expected();
        p[0].transforms[0]
            .other_attributes
            .push((0x8001, vec![1, 2, 3]));
        assert!(!emit_vec(&p).1);
        let mut p = expected();
        p[1].spi = vec![0; 256];
        assert!(!emit_vec(&p).1);
        let mut p = expected();
        p[0].transforms = vec![t(TransformType::PRF, TransformId(5), None); 256];
        assert!(!emit_vec(&p).1);
        let mut p = expected();
        p[0].transforms[0]
            .other_attributes
            .push((1, vec![0; 65_536]));
        assert!(!emit_vec(&p).1);
    }
}
