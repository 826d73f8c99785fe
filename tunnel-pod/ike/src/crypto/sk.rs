//! The Encrypted payload's protection (RFC 7296 §3.14): AES-GCM-16 (RFC 5282) or AES-CBC-256
//! with HMAC-SHA2-256-128 (RFC 3602, RFC 4868). One `SkCipher` per direction.

use ring::rand::SecureRandom;

use super::Secret;
use crate::wire::TransformId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncrAlg {
    /// ENCR_AES_GCM_16 with a 128- or 256-bit key (plus 4 bytes of salt in the keying material).
    AesGcm16 { key_bits: u16 },
    /// ENCR_AES_CBC, 256-bit key only for the IKE SA (the seed).
    AesCbc { key_bits: u16 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntegAlg {
    HmacSha256_128,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SkError {
    #[error("key of the wrong length for the algorithm")]
    BadKey,
    #[error("the encrypted payload is shorter than IV and ICV or not block-aligned")]
    Truncated,
    #[error("integrity check failed")]
    BadIcv,
    #[error("the pad length exceeds the plaintext")]
    BadPadding,
    #[error("the random number generator failed")]
    Rng,
    #[error("combined-mode cipher with an integrity transform, or CBC without one")]
    BadCombination,
}

impl EncrAlg {
    /// From a transform ID and its Key Length attribute (bits). GCM: 128/256, CBC: 128/256.
    pub fn from_transform(id: TransformId, key_length: Option<u16>) -> Option<EncrAlg> {
        let _ = (id, key_length);
        todo!("crypto")
    }

    pub fn id(self) -> TransformId {
        todo!("crypto")
    }

    pub fn key_bits(self) -> u16 {
        todo!("crypto")
    }

    /// Bytes of keying material per direction: key (+ 4 salt bytes for GCM).
    pub fn keymat_len(self) -> usize {
        todo!("crypto")
    }

    pub fn is_aead(self) -> bool {
        matches!(self, EncrAlg::AesGcm16 { .. })
    }
}

impl IntegAlg {
    pub fn from_id(id: TransformId) -> Option<IntegAlg> {
        let _ = id;
        todo!("crypto")
    }
    pub fn id(self) -> TransformId {
        todo!("crypto")
    }
    /// Key bytes (32).
    pub fn key_len(self) -> usize {
        todo!("crypto")
    }
}

/// Protects or opens Encrypted payloads in one direction.
pub struct SkCipher {
    // the crypto implementation defines the fields
}

impl std::fmt::Debug for SkCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SkCipher(<keys redacted>)")
    }
}

impl SkCipher {
    /// `encr_key` is SK_e (with the salt last for GCM), `integ_key` SK_a (empty for GCM).
    pub fn new(
        encr: EncrAlg,
        integ: Option<IntegAlg>,
        encr_key: &[u8],
        integ_key: &[u8],
    ) -> Result<SkCipher, SkError> {
        let _ = (encr, integ, encr_key, integ_key);
        todo!("crypto")
    }

    /// Bytes `seal` will append for `plaintext_len` bytes of inner payloads: IV, ciphertext
    /// with padding and Pad Length, ICV. The caller writes this length into the IKE header and
    /// the SK/SKF header before sealing.
    pub fn sealed_len(&self, plaintext_len: usize) -> usize {
        let _ = plaintext_len;
        todo!("crypto")
    }

    /// Appends IV ‖ ciphertext ‖ ICV to `message`, which already holds the IKE header and the
    /// SK (or SKF) header with final lengths; the whole of `message` as given is the AAD (GCM)
    /// or the start of the ICV input (CBC+HMAC). IVs are fresh random (CBC) or a per-cipher
    /// counter (GCM, never repeated for one key).
    pub fn seal(
        &self,
        message: &mut Vec<u8>,
        plaintext: &[u8],
        rng: &dyn SecureRandom,
    ) -> Result<(), SkError> {
        let _ = (message, plaintext, rng);
        todo!("crypto")
    }

    /// Verifies and decrypts `message[iv_offset..]` with `message[..iv_offset]` as AAD (or
    /// under the ICV); returns the inner payload bytes with padding and Pad Length removed.
    pub fn open(&self, message: &[u8], iv_offset: usize) -> Result<Secret, SkError> {
        let _ = (message, iv_offset);
        todo!("crypto")
    }
}
