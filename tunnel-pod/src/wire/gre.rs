//! GRE header (RFC 2784) with the key and sequence number extensions (RFC 2890).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |C| |K|S| Reserved0       | Ver |         Protocol Type         |
//! |      Checksum (optional)      |       Reserved1 (Optional)    |
//! |                         Key (optional)                        |
//! |                 Sequence Number (optional)                    |
//! ```

use super::{Error, Result, be16, be32, checksum, put16, put32};

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86DD;

const FLAG_C: u16 = 0x8000;
const FLAG_K: u16 = 0x2000;
const FLAG_S: u16 = 0x1000;
/// RFC 2784 §2.3: "A receiver MUST discard a packet where any of bits 1-5 are non-zero, unless
/// that receiver implements RFC 1701." RFC 2890 gives bits 2 and 3 meaning (K, S), which leaves
/// bit 1 (RFC 1701 routing present) and bits 4–5 (strict source route, recursion).
const MUST_BE_ZERO: u16 = 0x4000 | 0x0800 | 0x0400;
/// Bits 6–12 "MUST be sent as zero and MUST be ignored on receipt" (RFC 2784 §2.3).
const VERSION_MASK: u16 = 0x0007;

/// Why a GRE header is refused, one variant per drop reason the dataplane counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GreError {
    #[error("shorter than the header its flags announce")]
    Truncated,
    #[error("version is not 0")]
    BadVersion,
    #[error("routing, strict-source-route or recursion bits set (RFC 2784 §2.3)")]
    ReservedBits,
    #[error("checksum does not verify")]
    BadChecksum,
}

impl From<GreError> for Error {
    fn from(e: GreError) -> Self {
        match e {
            GreError::Truncated => Error::Truncated,
            _ => Error::Malformed,
        }
    }
}

/// A view of a GRE packet. `new_checked` guarantees: flags and version acceptable and the whole
/// header the flags announce is present; accessors then never panic.
#[derive(Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    pub fn new_checked(buffer: T) -> core::result::Result<Self, GreError> {
        let p = Packet { buffer };
        p.check()?;
        Ok(p)
    }

    pub fn check(&self) -> core::result::Result<(), GreError> {
        let b = self.buffer.as_ref();
        if b.len() < 4 {
            return Err(GreError::Truncated);
        }
        let flags = self.flags();
        if flags & VERSION_MASK != 0 {
            return Err(GreError::BadVersion);
        }
        if flags & MUST_BE_ZERO != 0 {
            return Err(GreError::ReservedBits);
        }
        if b.len() < self.header_len() {
            return Err(GreError::Truncated);
        }
        Ok(())
    }

    fn flags(&self) -> u16 {
        be16(self.buffer.as_ref(), 0)
    }

    pub fn has_checksum(&self) -> bool {
        self.flags() & FLAG_C != 0
    }

    pub fn has_key(&self) -> bool {
        self.flags() & FLAG_K != 0
    }

    pub fn has_sequence(&self) -> bool {
        self.flags() & FLAG_S != 0
    }

    pub fn protocol(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    pub fn header_len(&self) -> usize {
        4 + 4
            * (usize::from(self.has_checksum())
                + usize::from(self.has_key())
                + usize::from(self.has_sequence()))
    }

    fn key_offset(&self) -> usize {
        4 + 4 * usize::from(self.has_checksum())
    }

    pub fn key(&self) -> Option<u32> {
        self.has_key()
            .then(|| be32(self.buffer.as_ref(), self.key_offset()))
    }

    pub fn sequence(&self) -> Option<u32> {
        let at = self.key_offset() + 4 * usize::from(self.has_key());
        self.has_sequence().then(|| be32(self.buffer.as_ref(), at))
    }

    /// RFC 2784 §2.5: the checksum covers the GRE header and the payload; a packet without the
    /// C bit has nothing to verify.
    pub fn verify_checksum(&self) -> bool {
        !self.has_checksum() || checksum::verify(self.buffer.as_ref())
    }

    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(self.header_len()..).unwrap_or(&[])
    }
}

/// The header as the dataplane sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub protocol: u16,
    pub key: Option<u32>,
    pub sequence: Option<u32>,
    pub checksum: bool,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> core::result::Result<Repr, GreError> {
        let repr = Self::parse_unverified(p)?;
        if !p.verify_checksum() {
            return Err(GreError::BadChecksum);
        }
        Ok(repr)
    }

    /// As `parse`, but the RFC 2784 checksum (when present) is not checked: for a packet the
    /// host's GRO merged, whose checksum still covers only its first segment.
    pub fn parse_unverified<T: AsRef<[u8]>>(p: &Packet<T>) -> core::result::Result<Repr, GreError> {
        p.check()?;
        Ok(Repr {
            protocol: p.protocol(),
            key: p.key(),
            sequence: p.sequence(),
            checksum: p.has_checksum(),
        })
    }

    pub fn header_len(&self) -> usize {
        4 + 4
            * (usize::from(self.checksum)
                + usize::from(self.key.is_some())
                + usize::from(self.sequence.is_some()))
    }

    /// Writes the header into `buf[..header_len()]`; the payload follows it in `buf`. With the
    /// checksum flag, the checksum covers all of `buf`, so write the payload first.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        if buf.len() < self.header_len() {
            return Err(Error::Truncated);
        }
        let mut flags = 0;
        if self.checksum {
            flags |= FLAG_C;
        }
        if self.key.is_some() {
            flags |= FLAG_K;
        }
        if self.sequence.is_some() {
            flags |= FLAG_S;
        }
        put16(buf, 0, flags);
        put16(buf, 2, self.protocol);
        let mut at = 4;
        if self.checksum {
            put32(buf, at, 0);
            at += 4;
        }
        if let Some(k) = self.key {
            put32(buf, at, k);
            at += 4;
        }
        if let Some(s) = self.sequence {
            put32(buf, at, s);
        }
        if self.checksum {
            let c = checksum::checksum(buf);
            put16(buf, 4, c);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // C, K and S set; checksum over header+payload; key 1001; sequence 7; payload 2 bytes.
    const FULL: [u8; 18] = [
        0xb0, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xe9, 0x00, 0x00, 0x00,
        0x07, 0xab, 0xcd,
    ];

    fn full_with_checksum() -> [u8; 18] {
        let mut b = FULL;
        let c = checksum::checksum(&b);
        b[4..6].copy_from_slice(&c.to_be_bytes());
        b
    }

    #[test]
    fn deconstruct() {
        let b = full_with_checksum();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.has_checksum() && p.has_key() && p.has_sequence());
        assert_eq!(p.header_len(), 16);
        assert_eq!(p.protocol(), ETHERTYPE_IPV4);
        assert_eq!(p.key(), Some(1001));
        assert_eq!(p.sequence(), Some(7));
        assert_eq!(p.payload(), &[0xab, 0xcd]);
        assert!(p.verify_checksum());
    }

    #[test]
    fn construct_matches_bytes() {
        let mut b = FULL;
        b[..16].fill(0);
        let repr = Repr {
            protocol: ETHERTYPE_IPV4,
            key: Some(1001),
            sequence: Some(7),
            checksum: true,
        };
        repr.emit(&mut b).unwrap();
        assert_eq!(b, full_with_checksum());
        assert_eq!(Repr::parse(&Packet::new_unchecked(&b[..])), Ok(repr));
    }

    #[test]
    fn minimal_header() {
        let b = [0x00, 0x00, 0x86, 0xdd, 0x60];
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.header_len(), p.key(), p.sequence()), (4, None, None));
        assert_eq!(p.protocol(), ETHERTYPE_IPV6);
        assert_eq!(p.payload(), &[0x60]);
    }

    #[test]
    fn refusals() {
        assert_eq!(
            Packet::new_checked(&[0u8; 3][..]).unwrap_err(),
            GreError::Truncated
        );
        // K set but only 6 bytes.
        assert_eq!(
            Packet::new_checked(&[0x20, 0, 8, 0, 0, 0][..]).unwrap_err(),
            GreError::Truncated
        );
        assert_eq!(
            Packet::new_checked(&[0x00, 0x01, 8, 0][..]).unwrap_err(),
            GreError::BadVersion
        );
        for bit in [0x40u8, 0x08, 0x04] {
            assert_eq!(
                Packet::new_checked(&[bit, 0x00, 8, 0][..]).unwrap_err(),
                GreError::ReservedBits,
                "bit {bit:#x}"
            );
        }
        let mut bad = full_with_checksum();
        bad[17] ^= 1;
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&bad[..])),
            Err(GreError::BadChecksum)
        );
    }

    #[test]
    fn bits_6_to_12_are_ignored() {
        let b = [0x03, 0xf8, 0x08, 0x00];
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.header_len(), 4);
    }
}
