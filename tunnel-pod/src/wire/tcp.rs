//! TCP header (RFC 9293 §3.1): flags, checksum and options, which is all MSS clamping needs.

use super::{Error, Result, be16};

pub const FLAG_SYN: u8 = 0x02;
pub const FLAG_ACK: u8 = 0x10;
pub const OPT_END: u8 = 0;
pub const OPT_NOP: u8 = 1;
pub const OPT_MSS: u8 = 2;
const CHECKSUM: usize = 16;

/// A view of a TCP segment. `new_checked` guarantees that the data offset is ≥ 5 words and the
/// header it announces is present.
#[derive(Debug)]
pub struct Segment<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Segment<T> {
    pub fn new_checked(buffer: T) -> Result<Self> {
        let s = Segment { buffer };
        let b = s.buffer.as_ref();
        if b.len() < 20 {
            return Err(Error::Truncated);
        }
        if s.header_len() < 20 {
            return Err(Error::Malformed);
        }
        if s.header_len() > b.len() {
            return Err(Error::Truncated);
        }
        Ok(s)
    }

    pub fn header_len(&self) -> usize {
        self.buffer
            .as_ref()
            .get(12)
            .map_or(0, |b| usize::from(b >> 4) * 4)
    }

    pub fn flags(&self) -> u8 {
        self.buffer.as_ref().get(13).copied().unwrap_or(0)
    }

    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), CHECKSUM)
    }

    /// Offset (from the start of the segment) of the MSS option's 16-bit value, if present.
    /// Malformed option lists end the search rather than fail: the segment is forwarded as is.
    pub fn mss_value_offset(&self) -> Option<usize> {
        let b = self.buffer.as_ref();
        let end = self.header_len();
        let mut at = 20;
        while at < end {
            match b.get(at).copied()? {
                OPT_END => return None,
                OPT_NOP => at += 1,
                kind => {
                    let len = usize::from(*b.get(at + 1)?);
                    if len < 2 || at + len > end {
                        return None;
                    }
                    if kind == OPT_MSS {
                        return (len == 4).then_some(at + 2);
                    }
                    at += len;
                }
            }
        }
        None
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Segment<T> {
    pub fn as_mut_bytes(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    pub fn set_checksum(&mut self, c: u16) {
        super::put16(self.buffer.as_mut(), CHECKSUM, c);
    }
}
