//! IKEv2 with pre-shared keys (RFC 7296), sans-IO.
//!
//! - [`wire`]: the message codec (header, payloads, SK/SKF framing). Parsing never panics: every
//!   length is checked by a fallible [`wire::Reader`].
//! - [`crypto`]: PRF and prf+, Diffie-Hellman groups 20/14/5, the SK payload ciphers, the key
//!   schedule and PSK authentication.
//! - [`core`]: the state machine for one tunnel's IKE SAs, both roles. Bytes, `now` and an RNG
//!   in; datagrams to send, Child SAs to install or retire, and events out. No sockets, no clock.
//!
//! The crate knows nothing of the dataplane: Child SAs leave it as IANA transform IDs plus key
//! bytes, and `tunnel-pod` maps them onto its ESP engine.
// Tests may unwrap and index: a panic there is a failed test.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

pub mod core;
pub mod crypto;
pub mod wire;
