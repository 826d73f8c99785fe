//! The IKE SA key schedule (RFC 7296 §2.14), IKE SA rekey (§2.18), Child SA keying material
//! (§2.17) and PSK authentication (§2.15).

use zeroize::Zeroizing;

use super::{EncrAlg, IntegAlg, PrfAlg, Secret, SkCipher, SkError};
use crate::crypto::dh::Group;

/// §2.15: the key pad for PSK authentication, 17 ASCII octets without a NUL.
const KEY_PAD: &[u8] = b"Key Pad for IKEv2";

/// Cuts a prf+ stream into consecutive keys. The stream is always exactly as long as the
/// sum of the takes (its length is computed from the same numbers), so `take` never runs
/// short; if it did, the key would be short and `SkCipher::new` would refuse it.
struct Splitter<'a>(&'a [u8]);

impl Splitter<'_> {
    fn take(&mut self, n: usize) -> Secret {
        let (head, tail) = self.0.split_at_checked(n).unwrap_or((self.0, &[]));
        self.0 = tail;
        Zeroizing::new(head.to_vec())
    }
}

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
    // HMAC takes the whole Ni | Nr as its key, whatever its length (§2.14).
    let mut key = Zeroizing::new(Vec::with_capacity(ni.len().saturating_add(nr.len())));
    key.extend_from_slice(ni);
    key.extend_from_slice(nr);
    prf.prf(&key, &[shared])
}

/// SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr) (§2.18), with the old SA's PRF.
pub fn skeyseed_rekey(
    old_prf: PrfAlg,
    old_sk_d: &[u8],
    shared: &[u8],
    ni: &[u8],
    nr: &[u8],
) -> Secret {
    old_prf.prf(old_sk_d, &[shared, ni, nr])
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
        let prf_len = suite.prf.output_len();
        let integ_len = suite.integ.map_or(0, IntegAlg::key_len);
        let encr_len = suite.encr.keymat_len();
        let total = prf_len
            .saturating_mul(3)
            .saturating_add(integ_len.saturating_mul(2))
            .saturating_add(encr_len.saturating_mul(2));
        let (spi_i, spi_r) = (spi_i.to_be_bytes(), spi_r.to_be_bytes());
        let stream = suite
            .prf
            .prf_plus(skeyseed, &[ni, nr, &spi_i, &spi_r], total);
        let mut split = Splitter(&stream);
        IkeKeys {
            sk_d: split.take(prf_len),
            sk_ai: split.take(integ_len),
            sk_ar: split.take(integ_len),
            sk_ei: split.take(encr_len),
            sk_er: split.take(encr_len),
            sk_pi: split.take(prf_len),
            sk_pr: split.take(prf_len),
        }
    }

    /// The ciphers for messages we send and messages we receive, by role.
    pub fn ciphers(
        &self,
        suite: &IkeSuite,
        initiator: bool,
    ) -> Result<(SkCipher, SkCipher), SkError> {
        let i_to_r = || SkCipher::new(suite.encr, suite.integ, &self.sk_ei, &self.sk_ai);
        let r_to_i = || SkCipher::new(suite.encr, suite.integ, &self.sk_er, &self.sk_ar);
        // §2.14: SK_ei/SK_ai protect the initiator's messages, SK_er/SK_ar the responder's.
        if initiator {
            Ok((i_to_r()?, r_to_i()?))
        } else {
            Ok((r_to_i()?, i_to_r()?))
        }
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
    let per_dir = encr_len.saturating_add(integ_len);
    let keymat = match shared {
        Some(g) => prf.prf_plus(sk_d, &[g, ni, nr], per_dir.saturating_mul(2)),
        None => prf.prf_plus(sk_d, &[ni, nr], per_dir.saturating_mul(2)),
    };
    let mut split = Splitter(&keymat);
    ChildKeys {
        encr_i: split.take(encr_len),
        integ_i: split.take(integ_len),
        encr_r: split.take(encr_len),
        integ_r: split.take(integ_len),
    }
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
    // The pad string is the 17 octets "Key Pad for IKEv2", no terminating NUL (§2.15).
    let key = prf.prf(psk, &[KEY_PAD]);
    let maced_id = prf.prf(sk_p, &[id_body]);
    prf.prf(&key, &[real_message, nonce, &maced_id])
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;

    use super::*;
    use crate::crypto::test_vectors::{CAVP_SKEYSEED, hex};

    const SPI_I: u64 = 0x0102_0304_0506_0708;
    const SPI_R: u64 = 0x1112_1314_1516_1718;

    /// The inputs of tests/verify_kdf.py.
    fn inputs() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let ni = (0x10u8..0x30).collect();
        let nr = (0x40u8..0x60).collect();
        let gir = (0u8..48)
            .map(|i| i.wrapping_mul(7).wrapping_add(3))
            .collect();
        (ni, nr, gir)
    }

    fn suite_a() -> IkeSuite {
        IkeSuite {
            encr: EncrAlg::AesGcm16 { key_bits: 256 },
            integ: None,
            prf: PrfAlg::HmacSha256,
            dh: Group::Ecp384,
        }
    }

    fn suite_b() -> IkeSuite {
        IkeSuite {
            encr: EncrAlg::AesCbc { key_bits: 256 },
            integ: Some(IntegAlg::HmacSha256_128),
            prf: PrfAlg::HmacSha384,
            dh: Group::Modp2048,
        }
    }

    fn all(k: &IkeKeys) -> [&[u8]; 7] {
        [
            &k.sk_d, &k.sk_ai, &k.sk_ar, &k.sk_ei, &k.sk_er, &k.sk_pi, &k.sk_pr,
        ]
    }

    /// NIST CAVP SP 800-135 IKEv2: SKEYSEED = prf(Ni | Nr, g^ir). The vectors give Ni | Nr
    /// as one string; any split between Ni and Nr is the same key.
    #[test]
    fn cavp_skeyseed() {
        assert_eq!(CAVP_SKEYSEED.len(), 6);
        for &(prf, gir, nonces, out) in CAVP_SKEYSEED {
            let (gir, nonces, out) = (hex(gir), hex(nonces), hex(out));
            let (ni, nr) = nonces.split_at(nonces.len() / 2);
            assert_eq!(&skeyseed(prf, ni, nr, &gir)[..], &out[..], "{prf:?}");
            assert_eq!(&skeyseed(prf, &nonces, &[], &gir)[..], &out[..], "{prf:?}");
        }
    }

    /// Numbers printed by tests/verify_kdf.py (Python hmac/hashlib).
    #[test]
    fn python_key_schedule() {
        let (ni, nr, gir) = inputs();
        let a = [
            "c3e61990e2ea7a99062e0df2d02322baf8dd4563bc9b333172b6f6496aade215",
            "",
            "",
            "1be9ba21f4d891952beab7b2615b141785f79b74f778bd450f3cef5ed07c6f8d0750cb5b",
            "0c43c3cce2ff34afd11d8af18a17ba86fd9a5a974a105307b01f2a4943bb6363327742be",
            "c7daffac49ab7f44ecfd7acabc637ffaa7e426825f176f0f96dbb2f4d67460fd",
            "318443248060c0bc44def97761a756d0d08f007dbeb1ec392a9b9b7c6e5b61e2",
        ];
        let b = [
            "f00a2020271294438a751df6ecf7ec3991f939fddee80dea123bf4a881fd0a3558718f88f04735c42329aca3dae31417",
            "301257de913dfbc56171927c1dcaabb717c11413686dd7daf53071a8a46dd677",
            "891c61279ec2c15493ad546a0847fd6cbb2e69d95c31c3999f440eaba2aff64d",
            "84b82deb6916adb34e3bd850b935dcd697bf203b81c344e3f29c312f0767fad0",
            "b915724ce69fef9c5379c0057121d5843b4847d6f19d8d7df23df7b2c899c986",
            "0e3175412d77137cf0275c7daafb634b801b534f03cea04defa6ab32d28ae81ed984b9970dc7b6163766db6c3d528e4b",
            "0ac1c0c47850f3a03a76f0137f747f36459beb55842b40b96b60bdb390c21721e6ce115f067e1ce0438555de0b77b1e8",
        ];
        let seeds = [
            "641f33286c2f9818d1b2027c368121b64cbb837e4398e2f13a3d73adc6011287",
            "0533fca08ced3b2baf0bebc688d6a1cbf12b9bf48a123ee522a054dd47b58de662b71795eaf7b25ead74b10cb8e84083",
        ];
        for ((suite, want), seed) in [(suite_a(), a), (suite_b(), b)].into_iter().zip(seeds) {
            let s = skeyseed(suite.prf, &ni, &nr, &gir);
            assert_eq!(&s[..], &hex(seed)[..]);
            let keys = IkeKeys::derive(&suite, &s, &ni, &nr, SPI_I, SPI_R);
            for (got, want) in all(&keys).into_iter().zip(want) {
                assert_eq!(got, &hex(want)[..], "{suite:?}");
            }
        }
    }

    #[test]
    fn python_rekey_child_and_auth() {
        let (ni, nr, gir) = inputs();
        let a = IkeKeys::derive(
            &suite_a(),
            &skeyseed(PrfAlg::HmacSha256, &ni, &nr, &gir),
            &ni,
            &nr,
            SPI_I,
            SPI_R,
        );
        let gir2: Vec<u8> = (0x80u8..0x80 + 48).collect();
        let ni2: Vec<u8> = (0xA0u8..0xB0).collect();
        let nr2: Vec<u8> = (0xC0u8..0xD0).collect();
        assert_eq!(
            &skeyseed_rekey(PrfAlg::HmacSha256, &a.sk_d, &gir2, &ni2, &nr2)[..],
            &hex("0fecce6f5093d82eb97e2b0c3e4f8c680ad881a9e564046c92c67627e5ca4bda")[..]
        );

        let gcm = hex(concat!(
            "f83b6736895606bcf87647db349da9df21d4ba308541ad2780db2cbb51e4d6464f9dc72128a8dd2f443d1709",
            "1305814e5261c6b04dbe52ef41c24a4a79455446f3f090823e3d044d"
        ));
        let c = child_keymat(PrfAlg::HmacSha256, &a.sk_d, None, &ni2, &nr2, 36, 0);
        assert_eq!((&c.encr_i[..], &c.encr_r[..]), (&gcm[..36], &gcm[36..]));
        assert!(c.integ_i.is_empty() && c.integ_r.is_empty());

        let cbc = hex(concat!(
            "828dbb22a8f14de9a1fa6ca9172ab5fc0e164450bab2e4019fc6b408128e53d20898b01809a6d75cbcde18fa",
            "a1a942314e3c03bddeca7dafcf66397023e0fcbe66068f8ef80ba9a729b7afc826c3c6c551b85e6126852355",
            "49b8d138452f3869"
        ));
        let c = child_keymat(PrfAlg::HmacSha256, &a.sk_d, Some(&gir2), &ni2, &nr2, 16, 32);
        assert_eq!(&c.encr_i[..], &cbc[..16]);
        assert_eq!(&c.integ_i[..], &cbc[16..48]);
        assert_eq!(&c.encr_r[..], &cbc[48..64]);
        assert_eq!(&c.integ_r[..], &cbc[64..]);

        let b = IkeKeys::derive(
            &suite_b(),
            &skeyseed(PrfAlg::HmacSha384, &ni, &nr, &gir),
            &ni,
            &nr,
            SPI_I,
            SPI_R,
        );
        let real_message: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let id_body = [&[2u8, 0, 0, 0][..], b"vpn.example.test"].concat();
        let auth = psk_auth(
            PrfAlg::HmacSha384,
            b"correct horse battery staple",
            &real_message,
            &nr,
            &b.sk_pi,
            &id_body,
        );
        assert_eq!(
            &auth[..],
            &hex(
                "d34aced63357292ddca952fb8b30f5b7f1b6fb215cb18b60e09f7450ca696b4ac4a96697d520f46ade448fdc618cac4e"
            )[..]
        );
        // Each input matters.
        let other = psk_auth(
            PrfAlg::HmacSha384,
            b"correct horse battery stapl",
            &real_message,
            &nr,
            &b.sk_pi,
            &id_body,
        );
        assert_ne!(auth, other);
        let other = psk_auth(
            PrfAlg::HmacSha384,
            b"correct horse battery staple",
            &real_message,
            &nr,
            &b.sk_pr,
            &id_body,
        );
        assert_ne!(auth, other);
    }

    #[test]
    fn derive_lengths() {
        let (ni, nr, gir) = inputs();
        for (suite, lens) in [
            (suite_a(), [32, 0, 0, 36, 36, 32, 32]),
            (suite_b(), [48, 32, 32, 32, 32, 48, 48]),
        ] {
            let k = IkeKeys::derive(&suite, &gir, &ni, &nr, SPI_I, SPI_R);
            assert_eq!(all(&k).map(<[u8]>::len), lens);
            // Keys are consecutive pieces of one prf+ stream.
            let stream = suite.prf.prf_plus(
                &gir,
                &[&ni, &nr, &SPI_I.to_be_bytes(), &SPI_R.to_be_bytes()],
                lens.iter().sum(),
            );
            assert_eq!(all(&k).concat(), &stream[..]);
        }
        let c = child_keymat(PrfAlg::HmacSha512, &[1; 64], None, &ni, &nr, 20, 0);
        assert_eq!(
            [
                c.encr_i.len(),
                c.integ_i.len(),
                c.encr_r.len(),
                c.integ_r.len()
            ],
            [20, 0, 20, 0]
        );
        assert_ne!(c.encr_i, c.encr_r);
        assert_eq!(format!("{c:?}"), "ChildKeys(<redacted>)");
    }

    #[test]
    fn ciphers_pair_up_by_role() {
        let (ni, nr, gir) = inputs();
        let rng = SystemRandom::new();
        for suite in [suite_a(), suite_b()] {
            let k = IkeKeys::derive(
                &suite,
                &skeyseed(suite.prf, &ni, &nr, &gir),
                &ni,
                &nr,
                SPI_I,
                SPI_R,
            );
            let (i_send, i_recv) = k.ciphers(&suite, true).unwrap();
            let (r_send, r_recv) = k.ciphers(&suite, false).unwrap();
            let mut m = vec![0u8; 32];
            i_send.seal(&mut m, b"from the initiator", &rng).unwrap();
            assert_eq!(&r_recv.open(&m, 32).unwrap()[..], b"from the initiator");
            // The initiator's messages are under SK_ei/SK_ai, not merely a matching pair.
            let ei = SkCipher::new(suite.encr, suite.integ, &k.sk_ei, &k.sk_ai).unwrap();
            assert_eq!(&ei.open(&m, 32).unwrap()[..], b"from the initiator");
            assert_eq!(i_recv.open(&m, 32).err(), Some(SkError::BadIcv));
            let mut m = vec![1u8; 32];
            r_send.seal(&mut m, b"from the responder", &rng).unwrap();
            assert_eq!(&i_recv.open(&m, 32).unwrap()[..], b"from the responder");
            assert_eq!(r_recv.open(&m, 32).err(), Some(SkError::BadIcv));
        }
        // A suite whose integrity transform contradicts the cipher is refused.
        let bad = IkeSuite {
            integ: None,
            ..suite_b()
        };
        let k = IkeKeys::derive(&suite_b(), &gir, &ni, &nr, SPI_I, SPI_R);
        assert_eq!(k.ciphers(&bad, true).err(), Some(SkError::BadCombination));
        assert_eq!(format!("{k:?}"), "IkeKeys(<redacted>)");
    }
}
