//! The writing side: an append-only emitter that never panics and records whether everything
//! it wrote fitted its field.
//!
//! Emitting is infallible by contract (the core builds the structs), but a struct can still hold
//! something the wire cannot express: a payload body over 65,531 bytes, more than 255
//! transforms or selectors, an SPI over 255 bytes, a TV attribute whose value is not 2 bytes.
//! Such a field is written as 0 and the [`Emitter`] remembers it; the payload writer then sets
//! the payload's own Payload Length to 0, which no receiver accepts (this codec answers
//! `BadLength`). A message that cannot be represented therefore fails closed at the peer; it is
//! never silently cut into a differently framed one. `Payload::encoded_len` tells the caller
//! beforehand.

/// Appends big-endian fields to a `Vec<u8>`; `ok` turns false when a value did not fit.
pub(crate) struct Emitter<'a> {
    pub(crate) out: &'a mut Vec<u8>,
    pub(crate) ok: bool,
}

impl<'a> Emitter<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>) -> Self {
        Emitter { out, ok: true }
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.out.push(v);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.out.extend_from_slice(b);
    }

    /// A one-byte count or size; 0 and `ok = false` when `n > 255`.
    pub(crate) fn size_u8(&mut self, n: usize) {
        let v = u8::try_from(n).unwrap_or_else(|_| {
            self.ok = false;
            0
        });
        self.u8(v);
    }

    /// A two-byte count; 0 and `ok = false` when `n > 65535`.
    pub(crate) fn size_u16(&mut self, n: usize) {
        let v = u16::try_from(n).unwrap_or_else(|_| {
            self.ok = false;
            0
        });
        self.u16(v);
    }

    /// Writes a two-byte placeholder and returns where it is, for [`Emitter::end_len16`].
    pub(crate) fn begin_len16(&mut self) -> usize {
        let at = self.out.len();
        self.u16(0);
        at
    }

    /// Fills the length field at `field` with the number of bytes written since `start`.
    /// Leaves 0 (and clears `ok`) when that does not fit in 16 bits.
    pub(crate) fn end_len16(&mut self, field: usize, start: usize) {
        let len = self.out.len().saturating_sub(start);
        match u16::try_from(len) {
            Ok(v) => patch_u16(self.out, field, v),
            Err(_) => self.ok = false,
        }
    }
}

/// Overwrites two bytes at `at` (no-op if out of range, which callers never ask for).
pub(crate) fn patch_u16(out: &mut [u8], at: usize, v: u16) {
    if let Some(s) = at.checked_add(2).and_then(|end| out.get_mut(at..end)) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}
