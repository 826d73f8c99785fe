//! IPv4 header (RFC 791): the fields the dataplane reads and writes.

use std::net::Ipv4Addr;

use super::{Error, Result, be16, checksum, put16};

pub const HEADER_LEN: usize = 20;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_GRE: u8 = 47;

mod field {
    pub const VER_IHL: usize = 0;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

/// A view of an IPv4 packet. `new_checked` guarantees: version 4, IHL ≥ 5, the header fits,
/// and `total_len` fits in the buffer (trailing bytes beyond it are ignored by `payload`).
#[derive(Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Packet { buffer };
        p.check_len()?;
        Ok(p)
    }

    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 4 {
            return Err(Error::Malformed);
        }
        let hl = self.header_len();
        if hl < HEADER_LEN {
            return Err(Error::Malformed);
        }
        let total = usize::from(self.total_len());
        if total < hl {
            return Err(Error::Malformed);
        }
        if total > b.len() {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref().first().map_or(0, |b| b >> 4)
    }

    pub fn header_len(&self) -> usize {
        self.buffer
            .as_ref()
            .first()
            .map_or(0, |b| usize::from(b & 0x0f) * 4)
    }

    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::TOTAL_LEN)
    }

    /// More-fragments flag or a non-zero offset: this is a fragment.
    pub fn is_fragment(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLAGS_FRAG) & 0x3fff != 0
    }

    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }

    pub fn ttl(&self) -> u8 {
        self.byte(field::TTL)
    }

    pub fn protocol(&self) -> u8 {
        self.byte(field::PROTOCOL)
    }

    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr(field::SRC))
    }

    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr(field::DST))
    }

    pub fn verify_checksum(&self) -> bool {
        self.buffer
            .as_ref()
            .get(..self.header_len())
            .is_some_and(checksum::verify)
    }

    /// The bytes after the header, up to `total_len`.
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        b.get(self.header_len()..usize::from(self.total_len()))
            .unwrap_or(&[])
    }

    fn byte(&self, at: usize) -> u8 {
        self.buffer.as_ref().get(at).copied().unwrap_or(0)
    }

    fn addr(&self, at: usize) -> [u8; 4] {
        let mut a = [0; 4];
        if let Some(s) = self.buffer.as_ref().get(at..at + 4) {
            a.copy_from_slice(s);
        }
        a
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, total) = (self.header_len(), usize::from(self.total_len()));
        self.buffer.as_mut().get_mut(hl..total).unwrap_or(&mut [])
    }

    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.set_addr(field::SRC, a);
    }

    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.set_addr(field::DST, a);
    }

    fn set_addr(&mut self, at: usize, a: Ipv4Addr) {
        if let Some(s) = self.buffer.as_mut().get_mut(at..at + 4) {
            s.copy_from_slice(&a.octets());
        }
    }

    pub fn fill_checksum(&mut self) {
        let hl = self.header_len();
        put16(self.buffer.as_mut(), field::CHECKSUM, 0);
        let c = self.buffer.as_ref().get(..hl).map_or(0, checksum::checksum);
        put16(self.buffer.as_mut(), field::CHECKSUM, c);
    }
}

/// The fields needed to write a plain (option-less) IPv4 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    pub payload_len: usize,
}

impl Repr {
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes a 20-byte header with ID 0, DF clear and a valid checksum into `buf[..20]`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        self.emit_with_ident(buf, 0)
    }

    /// `emit`, with `ident` as the identification field.
    pub fn emit_with_ident(&self, buf: &mut [u8], ident: u16) -> Result<()> {
        let total = u16::try_from(self.buffer_len()).map_err(|_| Error::Malformed)?;
        let h = buf.get_mut(..HEADER_LEN).ok_or(Error::Truncated)?;
        h.fill(0);
        h[field::VER_IHL] = 0x45;
        h[field::TOTAL_LEN..field::TOTAL_LEN + 2].copy_from_slice(&total.to_be_bytes());
        h[field::IDENT..field::IDENT + 2].copy_from_slice(&ident.to_be_bytes());
        h[field::TTL] = self.ttl;
        h[field::PROTOCOL] = self.protocol;
        h[field::SRC..field::SRC + 4].copy_from_slice(&self.src.octets());
        h[field::DST..field::DST + 4].copy_from_slice(&self.dst.octets());
        let c = checksum::checksum(h);
        h[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A 20-byte header + 4 payload bytes: 192.0.2.1 → 198.51.100.2, TTL 64, proto ICMP.
    const PKT: [u8; 24] = [
        0x45, 0x00, 0x00, 0x18, 0x00, 0x00, 0x00, 0x00, 0x40, 0x01, 0x00, 0x00, 192, 0, 2, 1, 198,
        51, 100, 2, 0xde, 0xad, 0xbe, 0xef,
    ];

    #[test]
    fn emit_then_parse() {
        let repr = Repr {
            src: Ipv4Addr::new(192, 0, 2, 1),
            dst: Ipv4Addr::new(198, 51, 100, 2),
            protocol: PROTO_ICMP,
            ttl: 64,
            payload_len: 4,
        };
        let mut buf = PKT;
        buf[..20].fill(0);
        repr.emit(&mut buf).unwrap();
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.src_addr(), repr.src);
        assert_eq!(p.dst_addr(), repr.dst);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), PROTO_ICMP);
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        let mut expected = PKT;
        expected[10..12].copy_from_slice(&p.checksum().to_be_bytes());
        assert_eq!(buf, expected);
    }

    #[test]
    fn impossible_lengths_are_errors() {
        assert_eq!(
            Packet::new_checked(&PKT[..19]).unwrap_err(),
            Error::Truncated
        );
        let mut v6 = PKT;
        v6[0] = 0x65;
        assert_eq!(Packet::new_checked(&v6[..]).unwrap_err(), Error::Malformed);
        let mut short_ihl = PKT;
        short_ihl[0] = 0x44;
        assert_eq!(
            Packet::new_checked(&short_ihl[..]).unwrap_err(),
            Error::Malformed
        );
        let mut long = PKT;
        long[3] = 25;
        assert_eq!(
            Packet::new_checked(&long[..]).unwrap_err(),
            Error::Truncated
        );
        let mut below_header = PKT;
        below_header[3] = 19;
        assert_eq!(
            Packet::new_checked(&below_header[..]).unwrap_err(),
            Error::Malformed
        );
        let mut ihl_past_total = PKT;
        ihl_past_total[0] = 0x47;
        assert_eq!(
            Packet::new_checked(&ihl_past_total[..]).unwrap_err(),
            Error::Malformed
        );
    }

    #[test]
    fn trailing_bytes_are_not_payload() {
        let mut buf = PKT.to_vec();
        buf.extend_from_slice(&[1, 2, 3]);
        assert_eq!(Packet::new_checked(&buf[..]).unwrap().payload().len(), 4);
    }
}
