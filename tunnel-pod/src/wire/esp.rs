//! ESP header (RFC 4303 §2): SPI and sequence number; the rest of the packet is opaque until the
//! SA's transform has verified and decrypted it.

use super::{Error, Result, be32};

pub const HEADER_LEN: usize = 8;

/// A view of an ESP packet. `new_checked` guarantees the 8-byte header is present.
#[derive(Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Packet { buffer })
    }

    pub fn spi(&self) -> u32 {
        be32(self.buffer.as_ref(), 0)
    }

    pub fn sequence(&self) -> u32 {
        be32(self.buffer.as_ref(), 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields() {
        let p = Packet::new_checked(&[0, 0, 0x43, 0x21, 0, 0, 0, 1, 0xaa][..]).unwrap();
        assert_eq!((p.spi(), p.sequence()), (0x4321, 1));
        assert_eq!(
            Packet::new_checked(&[0u8; 7][..]).unwrap_err(),
            Error::Truncated
        );
    }
}
