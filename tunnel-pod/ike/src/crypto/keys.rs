//! The IKE SA key schedule (RFC 7296 §2.14), IKE SA rekey (§2.18), Child SA keying material
//! (§2.17) and PSK authentication (§2.15).

use super::{EncrAlg, IntegAlg, PrfAlg, Secret, SkCipher, SkError};
use crate::crypto::dh::Group;

/// The algorithms of one IKE SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IkeSuite {
    pub encr: EncrAlg,
    /// None with AES-GCM.
    pub integ: Option<IntegAlg>,
    pub prf: PrfAlg,
    pub dh: Group,
}

/// SK_d, SK_ai/ar, SK_ei/er, SK_pi/pr. Zeroized on drop, never printed.
pub struct IkeKeys {
    pub sk_d: Secret,
    pub sk_ai: Secret,
    pub sk_ar: Secret,
    pub sk_ei: Secret,
    pub sk_er: Secret,
    pub sk_pi: Secret,
    pub sk_pr: Secret,
}

impl std::fmt::Debug for IkeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IkeKeys(<redacted>)")
    }
}

/// SKEYSEED = prf(Ni | Nr, g^ir) (§2.14). With HMAC the key is the whole Ni | Nr.
pub fn skeyseed(prf: PrfAlg, ni: &[u8], nr: &[u8], shared: &[u8]) -> Secret {
    let _ = (prf, ni, nr, shared);
    todo!("crypto")
}

/// SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr) (§2.18), with the old SA's PRF.
pub fn skeyseed_rekey(
    old_prf: PrfAlg,
    old_sk_d: &[u8],
    shared: &[u8],
    ni: &[u8],
    nr: &[u8],
) -> Secret {
    let _ = (old_prf, old_sk_d, shared, ni, nr);
    todo!("crypto")
}

impl IkeKeys {
    /// {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr)
    /// with the suite's lengths (SK_d, SK_p: PRF output length; SK_a: integrity key length or 0;
    /// SK_e: `encr.keymat_len()`).
    pub fn derive(
        suite: &IkeSuite,
        skeyseed: &[u8],
        ni: &[u8],
        nr: &[u8],
        spi_i: u64,
        spi_r: u64,
    ) -> IkeKeys {
        let _ = (suite, skeyseed, ni, nr, spi_i, spi_r);
        todo!("crypto")
    }

    /// The ciphers for messages we send and messages we receive, by role.
    pub fn ciphers(
        &self,
        suite: &IkeSuite,
        initiator: bool,
    ) -> Result<(SkCipher, SkCipher), SkError> {
        let _ = (suite, initiator);
        todo!("crypto")
    }
}

/// One Child SA's keys: initiator→responder first, then responder→initiator; in each,
/// encryption key (with salt for GCM) then integrity key (§2.17).
pub struct ChildKeys {
    pub encr_i: Secret,
    pub integ_i: Secret,
    pub encr_r: Secret,
    pub integ_r: Secret,
}

impl std::fmt::Debug for ChildKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChildKeys(<redacted>)")
    }
}

/// KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr), split as `ChildKeys` with `encr_len` and
/// `integ_len` bytes per direction (integ_len 0 for GCM).
pub fn child_keymat(
    prf: PrfAlg,
    sk_d: &[u8],
    shared: Option<&[u8]>,
    ni: &[u8],
    nr: &[u8],
    encr_len: usize,
    integ_len: usize,
) -> ChildKeys {
    let _ = (prf, sk_d, shared, ni, nr, encr_len, integ_len);
    todo!("crypto")
}

/// AUTH = prf( prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets> ) with
/// SignedOctets = RealMessage | Nonce(peer) | prf(SK_p, IDx') (§2.15). `real_message` is our
/// (or the peer's) first message exactly as sent; `nonce` the other side's nonce data;
/// `sk_p` the sender's SK_p; `id_body` its ID payload body (`Identification::body`).
pub fn psk_auth(
    prf: PrfAlg,
    psk: &[u8],
    real_message: &[u8],
    nonce: &[u8],
    sk_p: &[u8],
    id_body: &[u8],
) -> Secret {
    let _ = (prf, psk, real_message, nonce, sk_p, id_body);
    todo!("crypto")
}
