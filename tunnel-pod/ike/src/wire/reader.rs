//! A fallible byte reader: no indexing, every read returns `Option`/`Result`.

use super::{Error, Result};

/// Reads big-endian integers and slices from a borrowed buffer. Every read is checked.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, at: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.at
    }

    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.at)
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The next `n` bytes, or `Truncated`.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).ok_or(Error::Truncated)?;
        let s = self.buf.get(self.at..end).ok_or(Error::Truncated)?;
        self.at = end;
        Ok(s)
    }

    /// Everything that is left.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = self.buf.get(self.at..).unwrap_or_default();
        self.at = self.buf.len();
        s
    }

    /// A reader over the next `n` bytes; the caller must consume it whole (`finish`).
    pub fn sub(&mut self, n: usize) -> Result<Reader<'a>> {
        self.take(n).map(Reader::new)
    }

    pub fn u8(&mut self) -> Result<u8> {
        self.take(1).map(|s| s.first().copied().unwrap_or_default())
    }

    pub fn u16(&mut self) -> Result<u16> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes(
            s.try_into().map_err(|_| Error::Truncated)?,
        ))
    }

    pub fn u32(&mut self) -> Result<u32> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes(
            s.try_into().map_err(|_| Error::Truncated)?,
        ))
    }

    pub fn u64(&mut self) -> Result<u64> {
        let s = self.take(8)?;
        Ok(u64::from_be_bytes(
            s.try_into().map_err(|_| Error::Truncated)?,
        ))
    }

    /// Fails with `TrailingBytes` unless everything was consumed.
    pub fn finish(&self) -> Result<()> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(Error::TrailingBytes)
        }
    }
}
