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
