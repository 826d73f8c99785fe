//! ICMP echo request and reply (RFC 792), the health-check probes.

use super::{Error, Result, be16, checksum, put16};

pub const ECHO_REPLY: u8 = 0;
pub const ECHO_REQUEST: u8 = 8;
pub const HEADER_LEN: usize = 8;

/// A view of an ICMP echo message. `new_checked` guarantees the 8-byte header is present and the
/// type is echo request or reply.
#[derive(Debug)]
pub struct Echo<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Echo<T> {
    pub fn new_checked(buffer: T) -> Result<Self> {
        let e = Echo { buffer };
        let b = e.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if !matches!(e.msg_type(), ECHO_REPLY | ECHO_REQUEST) || e.code() != 0 {
            return Err(Error::Malformed);
        }
        Ok(e)
    }

    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref().first().copied().unwrap_or(0xff)
    }

    pub fn code(&self) -> u8 {
        self.buffer.as_ref().get(1).copied().unwrap_or(0xff)
    }

    pub fn identifier(&self) -> u16 {
        be16(self.buffer.as_ref(), 4)
    }

    pub fn sequence(&self) -> u16 {
        be16(self.buffer.as_ref(), 6)
    }

    pub fn data(&self) -> &[u8] {
        self.buffer.as_ref().get(HEADER_LEN..).unwrap_or(&[])
    }

    pub fn verify_checksum(&self) -> bool {
        checksum::verify(self.buffer.as_ref())
    }
}

/// An echo message to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoRepr<'a> {
    pub msg_type: u8,
    pub identifier: u16,
    pub sequence: u16,
    pub data: &'a [u8],
}

impl EchoRepr<'_> {
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.data.len()
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        let b = buf.get_mut(..self.buffer_len()).ok_or(Error::Truncated)?;
        b[0] = self.msg_type;
        b[1] = 0;
        put16(b, 2, 0);
        put16(b, 4, self.identifier);
        put16(b, 6, self.sequence);
        b[HEADER_LEN..].copy_from_slice(self.data);
        let c = checksum::checksum(b);
        put16(b, 2, c);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let repr = EchoRepr {
            msg_type: ECHO_REQUEST,
            identifier: 0x1234,
            sequence: 9,
            data: b"abc",
        };
        let mut buf = [0u8; 11];
        repr.emit(&mut buf).unwrap();
        let e = Echo::new_checked(&buf[..]).unwrap();
        assert!(e.verify_checksum());
        assert_eq!(
            (e.msg_type(), e.identifier(), e.sequence(), e.data()),
            (8, 0x1234, 9, &b"abc"[..])
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(
            Echo::new_checked(&[8u8, 0, 0][..]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            Echo::new_checked(&[3u8, 1, 0, 0, 0, 0, 0, 0][..]).unwrap_err(),
            Error::Malformed
        );
    }
}
