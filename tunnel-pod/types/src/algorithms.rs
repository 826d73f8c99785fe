//! The algorithms of the seed's suites, by the names the CRD and the config file use, and the
//! rules their keys follow. IANA numbers are the `ike` crate's business; `tunnel-pod` maps.

use serde::{Deserialize, Serialize};

/// IKE SA encryption algorithms of the seed (RFC 7296, RFC 5282).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum IkeEncryption {
    #[serde(rename = "AES-GCM-16-128")]
    AesGcm16_128,
    #[serde(rename = "AES-GCM-16-256")]
    AesGcm16_256,
    #[serde(rename = "AES-CBC-256")]
    AesCbc256,
}

/// Child SA (ESP) encryption algorithms of the seed (RFC 4106, RFC 3602, RFC 2410).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum EspEncryption {
    #[serde(rename = "AES-GCM-16-128")]
    AesGcm16_128,
    #[serde(rename = "AES-GCM-16-256")]
    AesGcm16_256,
    #[serde(rename = "AES-CBC-128")]
    AesCbc128,
    #[serde(rename = "AES-CBC-256")]
    AesCbc256,
    /// RFC 2410; only with `allowNullCipher`.
    #[serde(rename = "NULL")]
    Null,
}

/// Integrity algorithms (RFC 4868, RFC 2404). HMAC-SHA1-96 is for Child SAs only.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Integrity {
    #[serde(rename = "HMAC-SHA2-256-128")]
    HmacSha2_256_128,
    #[serde(rename = "HMAC-SHA1-96")]
    HmacSha1_96,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Prf {
    #[serde(rename = "HMAC-SHA2-256")]
    HmacSha2_256,
    #[serde(rename = "HMAC-SHA2-384")]
    HmacSha2_384,
    #[serde(rename = "HMAC-SHA2-512")]
    HmacSha2_512,
}

/// Diffie-Hellman groups (RFC 5903, RFC 3526), by IANA number in comments.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum DhGroup {
    /// Group 20
    #[serde(rename = "ECP-384")]
    Ecp384,
    /// Group 14
    #[serde(rename = "MODP-2048")]
    Modp2048,
    /// Group 5
    #[serde(rename = "MODP-1536")]
    Modp1536,
}

/// Why keys cannot make a transform.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("{what} key must be {expected} bytes, got {got}")]
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{0} needs an integrity algorithm")]
    NeedsIntegrity(&'static str),
    #[error("AES-GCM provides integrity itself; no integrity algorithm may be combined with it")]
    GcmWithIntegrity,
    #[error("replay window {0} is not a multiple of 64 between 64 and 65536")]
    BadReplayWindow(u32),
    #[error("no system randomness for the IV base")]
    NoRandomness,
    /// An ESP sender slot that cannot be used (index not below count, count 0, no epoch).
    #[error("ESP sender slot: {0}")]
    BadSenderSlot(&'static str),
}

/// Key lengths: (encryption key bytes including any salt, integrity key bytes).
pub fn key_lengths(enc: EspEncryption, integ: Option<Integrity>) -> (usize, usize) {
    let e = match enc {
        // RFC 4106 §8.1: the key plus a 4-byte salt from the keying material.
        EspEncryption::AesGcm16_128 => 16 + 4,
        EspEncryption::AesGcm16_256 => 32 + 4,
        EspEncryption::AesCbc128 => 16,
        EspEncryption::AesCbc256 => 32,
        EspEncryption::Null => 0,
    };
    let i = match integ {
        Some(Integrity::HmacSha2_256_128) => 32,
        Some(Integrity::HmacSha1_96) => 20,
        None => 0,
    };
    (e, i)
}

/// The rules a manually keyed or IKE-made ESP SA's keys must follow: lengths for the suite,
/// AES-GCM without and AES-CBC / NULL with an integrity algorithm.
pub fn check_keys(
    enc: EspEncryption,
    integ: Option<Integrity>,
    enc_len: usize,
    integ_len: usize,
) -> Result<(), KeyError> {
    let (e_len, i_len) = key_lengths(enc, integ);
    if enc_len != e_len {
        return Err(KeyError::Length {
            what: "encryption",
            expected: e_len,
            got: enc_len,
        });
    }
    if integ_len != i_len {
        return Err(KeyError::Length {
            what: "integrity",
            expected: i_len,
            got: integ_len,
        });
    }
    let gcm = matches!(
        enc,
        EspEncryption::AesGcm16_128 | EspEncryption::AesGcm16_256
    );
    if gcm && integ.is_some() {
        return Err(KeyError::GcmWithIntegrity);
    }
    if !gcm && integ.is_none() {
        return Err(KeyError::NeedsIntegrity(match enc {
            EspEncryption::Null => "NULL encryption",
            _ => "AES-CBC",
        }));
    }
    Ok(())
}
