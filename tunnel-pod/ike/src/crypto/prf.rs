//! PRF and prf+ (RFC 7296 §2.13) over HMAC-SHA2 (RFC 4868).

use super::Secret;
use crate::wire::TransformId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrfAlg {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl PrfAlg {
    /// PRF_HMAC_SHA2_256/384/512 (5/6/7); others are not supported.
    pub fn from_id(id: TransformId) -> Option<PrfAlg> {
        let _ = id;
        todo!("crypto")
    }

    pub fn id(self) -> TransformId {
        todo!("crypto")
    }

    /// Output length in bytes (32/48/64); also the preferred key length (RFC 4868 §2.1.2).
    pub fn output_len(self) -> usize {
        todo!("crypto")
    }

    /// prf(key, data[0] ‖ data[1] ‖ …).
    pub fn prf(self, key: &[u8], data: &[&[u8]]) -> Secret {
        let _ = (key, data);
        todo!("crypto")
    }

    /// prf+(key, seed) (§2.13): T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n); the first
    /// `len` bytes. `seed` is the concatenation of the slices. `len` ≤ 255 × output_len.
    pub fn prf_plus(self, key: &[u8], seed: &[&[u8]], len: usize) -> Secret {
        let _ = (key, seed, len);
        todo!("crypto")
    }
}
