//! Packet formats as typed views over bytes, in the manner of smoltcp's `wire`.
//!
//! Every view has a `new_checked` constructor that verifies the buffer against the header's own
//! length fields. **Promise:** after `new_checked` succeeds, no accessor of that view panics, so
//! hostile input can only ever produce an `Error`.

pub mod checksum;
pub mod esp;
pub mod gre;
pub mod icmp;
pub mod ipv4;
pub mod tcp;
pub mod udp_encap;

/// Why a buffer is not a valid packet of the expected format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("buffer shorter than the header or the length it announces")]
    Truncated,
    #[error("a header field has a value this format does not allow")]
    Malformed,
}

pub type Result<T> = core::result::Result<T, Error>;

/// Reads a big-endian u16 at `at`; callers have checked the length.
#[inline]
pub fn be16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(s) => u16::from_be_bytes([s[0], s[1]]),
        None => 0,
    }
}

#[inline]
pub fn be32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(s) => u32::from_be_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

#[inline]
pub fn put16(b: &mut [u8], at: usize, v: u16) {
    if let Some(s) = b.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

#[inline]
pub fn put32(b: &mut [u8], at: usize, v: u32) {
    if let Some(s) = b.get_mut(at..at + 4) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}
