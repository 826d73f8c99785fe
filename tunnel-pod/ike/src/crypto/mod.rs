//! IKEv2 cryptography on maintained crates: `ring` (HMAC-SHA2, AES-GCM, ECDH P-384),
//! RustCrypto `aes` + `cbc` (AES-CBC), `crypto-bigint` (constant-time MODP), `subtle`.
//! Every secret is held in `Zeroizing` and no `Debug` shows one.
//!
//! CONTRACT (skeleton; crypto implements these signatures, the core uses them).

pub mod dh;
pub mod keys;
pub mod prf;
pub mod sk;
#[cfg(test)]
mod test_vectors;

pub use dh::{DhError, Group, KeyPair};
pub use keys::{ChildKeys, IkeKeys, IkeSuite, child_keymat, psk_auth, skeyseed, skeyseed_rekey};
pub use prf::PrfAlg;
pub use sk::{EncrAlg, IntegAlg, SkCipher, SkError};

/// Secret bytes: zeroized on drop.
pub type Secret = zeroize::Zeroizing<Vec<u8>>;

#[cfg(test)]
mod tests {
    /// The core may keep these in state shared across threads.
    #[test]
    fn send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<super::SkCipher>();
        check::<super::KeyPair>();
        check::<super::IkeKeys>();
        check::<super::ChildKeys>();
    }
}
