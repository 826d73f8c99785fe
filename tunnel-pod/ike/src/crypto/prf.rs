//! PRF and prf+ (RFC 7296 §2.13) over HMAC-SHA2 (RFC 4868).

use ring::hmac;
use zeroize::Zeroizing;

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
        match id {
            TransformId::PRF_HMAC_SHA2_256 => Some(PrfAlg::HmacSha256),
            TransformId::PRF_HMAC_SHA2_384 => Some(PrfAlg::HmacSha384),
            TransformId::PRF_HMAC_SHA2_512 => Some(PrfAlg::HmacSha512),
            _ => None,
        }
    }

    pub fn id(self) -> TransformId {
        match self {
            PrfAlg::HmacSha256 => TransformId::PRF_HMAC_SHA2_256,
            PrfAlg::HmacSha384 => TransformId::PRF_HMAC_SHA2_384,
            PrfAlg::HmacSha512 => TransformId::PRF_HMAC_SHA2_512,
        }
    }

    /// Output length in bytes (32/48/64); also the preferred key length (RFC 4868 §2.1.2).
    pub fn output_len(self) -> usize {
        match self {
            PrfAlg::HmacSha256 => 32,
            PrfAlg::HmacSha384 => 48,
            PrfAlg::HmacSha512 => 64,
        }
    }

    fn hmac_alg(self) -> hmac::Algorithm {
        match self {
            PrfAlg::HmacSha256 => hmac::HMAC_SHA256,
            PrfAlg::HmacSha384 => hmac::HMAC_SHA384,
            PrfAlg::HmacSha512 => hmac::HMAC_SHA512,
        }
    }

    /// prf(key, data[0] ‖ data[1] ‖ …).
    pub fn prf(self, key: &[u8], data: &[&[u8]]) -> Secret {
        // HMAC takes keys of any length (longer ones are hashed, RFC 2104 §2), which
        // SKEYSEED = prf(Ni | Nr, …) relies on.
        let key = hmac::Key::new(self.hmac_alg(), key);
        let mut ctx = hmac::Context::with_key(&key);
        for part in data {
            ctx.update(part);
        }
        Zeroizing::new(ctx.sign().as_ref().to_vec())
    }

    /// prf+(key, seed) (§2.13): T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n); the first
    /// `len` bytes. `seed` is the concatenation of the slices. `len` ≤ 255 × output_len.
    ///
    /// A longer `len` is a caller bug (every length here comes from a suite, none from the
    /// network): the output then stops after T255, and debug builds assert.
    pub fn prf_plus(self, key: &[u8], seed: &[&[u8]], len: usize) -> Secret {
        debug_assert!(len <= self.output_len().saturating_mul(255));
        let key = hmac::Key::new(self.hmac_alg(), key);
        let mut out = Zeroizing::new(Vec::with_capacity(len));
        let mut prev: Option<hmac::Tag> = None;
        // The counter is one octet: the construction ends at T255 (§2.13).
        for n in 1..=255u8 {
            if out.len() >= len {
                break;
            }
            let mut ctx = hmac::Context::with_key(&key);
            if let Some(t) = &prev {
                ctx.update(t.as_ref());
            }
            for part in seed {
                ctx.update(part);
            }
            ctx.update(&[n]);
            let t = ctx.sign();
            let want = len.saturating_sub(out.len()).min(t.as_ref().len());
            out.extend_from_slice(t.as_ref().get(..want).unwrap_or_default());
            prev = Some(t);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::test_vectors::{CAVP_PRF_PLUS, RFC4868_PRF, hex};

    #[test]
    fn ids_round_trip() {
        for p in [PrfAlg::HmacSha256, PrfAlg::HmacSha384, PrfAlg::HmacSha512] {
            assert_eq!(PrfAlg::from_id(p.id()), Some(p));
            assert_eq!(p.prf(b"k", &[b"d"]).len(), p.output_len());
        }
        assert_eq!(PrfAlg::from_id(TransformId::PRF_HMAC_SHA1), None);
        assert_eq!(PrfAlg::from_id(TransformId(0)), None);
    }

    #[test]
    fn rfc4868_prf_vectors() {
        assert_eq!(RFC4868_PRF.len(), 15);
        for &(alg, key, data, out) in RFC4868_PRF {
            let (key, data, out) = (hex(key), hex(data), hex(out));
            assert_eq!(&alg.prf(&key, &[&data])[..], &out[..], "{alg:?}");
            // The data slices are concatenated: any split gives the same result.
            let (a, b) = data.split_at(data.len() / 3);
            assert_eq!(&alg.prf(&key, &[a, &[], b])[..], &out[..], "{alg:?} split");
        }
    }

    /// NIST CAVP SP 800-135 IKEv2 DKM vectors (and strongSwan's RFC 4868-derived one).
    #[test]
    fn cavp_prf_plus_vectors() {
        assert_eq!(CAVP_PRF_PLUS.len(), 7);
        for &(alg, key, seed, out) in CAVP_PRF_PLUS {
            let (key, seed, out) = (hex(key), hex(seed), hex(out));
            assert_eq!(
                &alg.prf_plus(&key, &[&seed], out.len())[..],
                &out[..],
                "{alg:?}"
            );
            let (a, b) = seed.split_at(seed.len() / 2);
            assert_eq!(&alg.prf_plus(&key, &[a, b], out.len())[..], &out[..]);
            // prf+ is a stream: a shorter request is a prefix.
            assert_eq!(&alg.prf_plus(&key, &[&seed], 7)[..], &out[..7]);
        }
    }

    #[test]
    fn prf_plus_structure() {
        let p = PrfAlg::HmacSha256;
        let (k, s) = (b"key".as_slice(), b"seed".as_slice());
        let t1 = p.prf(k, &[s, &[1]]);
        let t2 = p.prf(k, &[&t1, s, &[2]]);
        let out = p.prf_plus(k, &[s], 40);
        assert_eq!(&out[..32], &t1[..]);
        assert_eq!(&out[32..], &t2[..8]);
        assert!(p.prf_plus(k, &[s], 0).is_empty());
        // The longest allowed output ends at T255.
        let max = p.prf_plus(k, &[s], 255 * 32);
        assert_eq!(max.len(), 255 * 32);
        let t255_prev = &max[253 * 32..254 * 32];
        assert_eq!(&max[254 * 32..], &p.prf(k, &[t255_prev, s, &[255]])[..]);
    }
}
