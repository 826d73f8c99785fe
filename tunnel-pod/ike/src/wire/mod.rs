//! The IKEv2 message codec (RFC 7296 §3, RFC 7383 for SKF), in the manner of rustls' `codec`:
//! a [`Reader`] that only offers fallible reads, length-prefixed bodies parsed in sub-readers
//! that must be consumed exactly, and wire enums as newtype integers so unknown values survive a
//! round trip.
//!
//! **Promise:** no function in this module panics on any input; malformed input is an [`Error`].
//!
//! Writing is infallible. A struct the wire cannot express (a payload body over
//! [`MAX_PAYLOAD_BODY`] bytes, a count over 255, see [`Payload::encoded_len`]) is written with
//! Payload Length 0, which every receiver refuses: the message fails closed, it is never
//! silently re-framed. Nothing this crate builds comes near those limits; `encoded_len` lets a
//! caller check. Whatever [`parse_message`]/[`parse_payloads`] accept re-encodes to bytes that
//! parse to the same structs (tested on mutated messages and by the `ike_codec` fuzz target).

pub mod consts;
mod emit;
pub mod message;
mod payload;
pub mod reader;
mod sa;
mod ts;

pub use consts::*;
pub use message::*;
pub use payload::{GENERIC_HEADER_LEN, MAX_PAYLOAD_BODY, PayloadsExt};
pub use reader::Reader;

/// Why bytes are not a valid IKEv2 message. Each variant maps to what a responder does about it
/// (`Error::notify`): most are silently dropped (RFC 7296 §2.21.1: an unauthenticated message
/// with a syntax error gets no answer), a few earn a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("shorter than a header or than the length it announces")]
    Truncated,
    #[error("a length field disagrees with the bytes around it")]
    BadLength,
    #[error("bytes left over after a length-delimited structure")]
    TrailingBytes,
    #[error("major version is not 2")]
    BadVersion { major: u8 },
    #[error("a field has a value the RFC does not allow")]
    Malformed,
    #[error("an unknown payload type {0} is marked critical")]
    UnsupportedCritical(u8),
    #[error("an SK or SKF payload that is not the last payload")]
    MisplacedEncrypted,
    #[error("more payloads or structures than this implementation accepts")]
    TooMany,
}

pub type Result<T> = core::result::Result<T, Error>;
