//! Diffie-Hellman: group 20 (ECP-384, RFC 5903, via ring), 14 and 5 (MODP-2048/1536, RFC 3526,
//! via crypto-bigint in constant time, peer values checked per RFC 6989).

use ring::agreement;
use ring::rand::SecureRandom;
use zeroize::Zeroizing;

use super::Secret;
use crate::wire::TransformId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    Ecp384,
    Modp2048,
    Modp1536,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DhError {
    #[error("the peer's public value has the wrong length for the group")]
    BadLength,
    #[error(
        "the peer's public value is not acceptable (RFC 6989: not a valid point or 1 < y < p-1 fails)"
    )]
    BadPublicValue,
    #[error("the random number generator failed")]
    Rng,
}

impl Group {
    pub fn from_id(id: TransformId) -> Option<Group> {
        match id {
            TransformId::DH_ECP384 => Some(Group::Ecp384),
            TransformId::DH_MODP2048 => Some(Group::Modp2048),
            TransformId::DH_MODP1536 => Some(Group::Modp1536),
            _ => None,
        }
    }

    pub fn id(self) -> TransformId {
        match self {
            Group::Ecp384 => TransformId::DH_ECP384,
            Group::Modp2048 => TransformId::DH_MODP2048,
            Group::Modp1536 => TransformId::DH_MODP1536,
        }
    }

    /// Bytes of a KE payload's data: 96 (x‖y), 256, 192.
    pub fn public_len(self) -> usize {
        match self {
            Group::Ecp384 => 96,
            Group::Modp2048 => 256,
            Group::Modp1536 => 192,
        }
    }

    /// Bytes of the random private exponent for MODP groups: twice the group's estimated
    /// strength (RFC 3526 §8: 1536 → 90..120 bits, 2048 → 110..160 bits), rounded up to the
    /// sizes strongSwan uses (256 and 384 bits). None for ECP (ring draws the scalar itself).
    fn modp_exponent_len(self) -> Option<usize> {
        match self {
            Group::Ecp384 => None,
            Group::Modp2048 => Some(48),
            Group::Modp1536 => Some(32),
        }
    }
}

/// Our half of one exchange; the private part is zeroized on drop and never printed.
pub struct KeyPair {
    group: Group,
    public: Vec<u8>,
    private: Private,
}

enum Private {
    /// ring keeps the scalar and uses it once (`agree_ephemeral` consumes it).
    Ecp(agreement::EphemeralPrivateKey),
    /// The private exponent x (big-endian, `Group::modp_exponent_len` bytes).
    Modp(Secret),
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    pub fn generate(group: Group, rng: &dyn SecureRandom) -> Result<KeyPair, DhError> {
        match group.modp_exponent_len() {
            None => {
                let private = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P384, rng)
                    .map_err(|_| DhError::Rng)?;
                let public = private.compute_public_key().map_err(|_| DhError::Rng)?;
                // ring gives the SEC1 uncompressed form 04 ‖ x ‖ y; the KE payload carries
                // x ‖ y only (RFC 5903 §7).
                let xy = match public.as_ref().split_first() {
                    Some((0x04, xy)) if xy.len() == group.public_len() => xy.to_vec(),
                    _ => return Err(DhError::Rng),
                };
                Ok(KeyPair {
                    group,
                    public: xy,
                    private: Private::Ecp(private),
                })
            }
            Some(len) => {
                let mut x = Zeroizing::new(vec![0u8; len]);
                rng.fill(&mut x).map_err(|_| DhError::Rng)?;
                // x = 0 would make g^x = 1, which the peer refuses (RFC 6989); with a
                // working RNG it never happens, so treat it as an RNG failure.
                if x.iter().all(|&b| b == 0) {
                    return Err(DhError::Rng);
                }
                let public = match group {
                    Group::Modp2048 => modp::public_2048(&x),
                    _ => modp::public_1536(&x),
                };
                Ok(KeyPair {
                    group,
                    public,
                    private: Private::Modp(x),
                })
            }
        }
    }

    pub fn group(&self) -> Group {
        self.group
    }

    /// The KE payload data (x‖y for ECP-384, left-padded for MODP).
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// g^ir from the peer's KE data (left-padded to the modulus length for MODP; the x
    /// coordinate for ECP, RFC 5903 §7). Consumes the key pair: a private value is used once.
    pub fn agree(self, peer_public: &[u8]) -> Result<Secret, DhError> {
        if peer_public.len() != self.group.public_len() {
            return Err(DhError::BadLength);
        }
        match self.private {
            Private::Ecp(private) => {
                let mut sec1 = Vec::with_capacity(peer_public.len().saturating_add(1));
                sec1.push(0x04);
                sec1.extend_from_slice(peer_public);
                let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P384, sec1);
                // ring checks that the point is on the curve (RFC 6989 §2.3) and returns
                // the x coordinate of the shared point, 48 bytes (RFC 5903 §7).
                agreement::agree_ephemeral(private, &peer, |x| Zeroizing::new(x.to_vec()))
                    .map_err(|_| DhError::BadPublicValue)
            }
            Private::Modp(x) => match self.group {
                Group::Modp2048 => modp::agree_2048(&x, peer_public),
                _ => modp::agree_1536(&x, peer_public),
            },
        }
    }
}

/// MODP groups 14 and 5 (RFC 3526 §3 and §2), generator 2, in constant time with respect to
/// the private exponent (crypto-bigint's fixed-window Montgomery ladder over all exponent
/// bits).
mod modp {
    use crypto_bigint::modular::{FixedMontyForm, FixedMontyParams};
    use crypto_bigint::{Odd, U1536, U2048, Uint};
    use zeroize::Zeroizing;

    use super::{DhError, Secret};

    /// RFC 3526 §3, the 2048-bit MODP group: p = 2^2048 - 2^1984 - 1 + 2^64 * { [2^1918 pi] +
    /// 124476 }. Checked against that formula by tests/verify_modp.py.
    pub(super) const P2048_HEX: &str = concat!(
        "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
        "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
        "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
        "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
        "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
        "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
        "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718",
        "3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
    );

    /// RFC 3526 §2, the 1536-bit MODP group: p = 2^1536 - 2^1472 - 1 + 2^64 * { [2^1406 pi] +
    /// 741804 }. Checked against that formula by tests/verify_modp.py.
    pub(super) const P1536_HEX: &str = concat!(
        "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
        "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
        "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
        "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
        "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
        "9ED529077096966D670C354E4ABC9804F1746C08CA237327FFFFFFFFFFFFFFFF",
    );

    // Montgomery parameters at compile time: a wrong (even) constant fails the build.
    const P2048: FixedMontyParams<{ U2048::LIMBS }> =
        FixedMontyParams::new_vartime(Odd::<U2048>::from_be_hex(P2048_HEX));
    const P1536: FixedMontyParams<{ U1536::LIMBS }> =
        FixedMontyParams::new_vartime(Odd::<U1536>::from_be_hex(P1536_HEX));

    pub(super) fn public_2048(x: &[u8]) -> Vec<u8> {
        pow(&P2048, &Uint::from_u8(2), x).to_vec()
    }

    pub(super) fn public_1536(x: &[u8]) -> Vec<u8> {
        pow(&P1536, &Uint::from_u8(2), x).to_vec()
    }

    pub(super) fn agree_2048(x: &[u8], peer: &[u8]) -> Result<Secret, DhError> {
        agree(&P2048, x, peer)
    }

    pub(super) fn agree_1536(x: &[u8], peer: &[u8]) -> Result<Secret, DhError> {
        agree(&P1536, x, peer)
    }

    /// The peer's value y must satisfy 1 < y < p-1 (RFC 6989 §2.1): 0, 1 and p-1 (and
    /// anything ≥ p) would put the shared secret in a subgroup of order ≤ 2.
    fn agree<const L: usize>(
        params: &FixedMontyParams<L>,
        x: &[u8],
        peer: &[u8],
    ) -> Result<Secret, DhError> {
        // Exactly the modulus length: a shorter or longer value is a malformed KE payload.
        // (`from_be_slice` would panic on any other length.)
        if peer.len() != Uint::<L>::BYTES {
            return Err(DhError::BadLength);
        }
        let y = Uint::<L>::from_be_slice(peer);
        let p = params.modulus().get_copy();
        let p_minus_1 = p.wrapping_sub(&Uint::ONE);
        // The peer's public value is public: variable-time comparisons are fine.
        if y <= Uint::ONE || y >= p_minus_1 {
            return Err(DhError::BadPublicValue);
        }
        let z = pow(params, &y, x);
        Ok(z)
    }

    /// base^x mod p, big-endian, left-padded to the modulus length (RFC 7296 §2.14 for the
    /// shared secret, §3.4 for the KE data). `x` is at most 48 bytes (`modp_exponent_len`);
    /// every intermediate holding x or the result is zeroized on drop.
    fn pow<const L: usize>(params: &FixedMontyParams<L>, base: &Uint<L>, x: &[u8]) -> Secret {
        let mut exp_bytes = Zeroizing::new([0u8; 48]);
        let start = 48usize.saturating_sub(x.len());
        if let (Some(dst), Some(src)) = (
            exp_bytes.get_mut(start..),
            x.get(x.len().saturating_sub(48)..),
        ) {
            dst.copy_from_slice(src);
        }
        let exp = Zeroizing::new(crypto_bigint::U384::from_be_slice(&*exp_bytes));
        let b = FixedMontyForm::new(base, params);
        // The loop runs over `bits` exponent bits whatever their value: constant time in x
        // (only its length, a public constant per group, shows).
        let bits = u32::try_from(x.len().saturating_mul(8)).map_or(384, |b| b.min(384));
        let r_monty = Zeroizing::new(b.pow_bounded_exp(&*exp, bits));
        let r = Zeroizing::new(r_monty.retrieve());
        let bytes = Zeroizing::new(r.to_be_bytes());
        Zeroizing::new(bytes.as_ref().to_vec())
    }
}

#[cfg(test)]
mod tests {
    #![allow(deprecated)] // ring::test::rand: the documented way to feed ring a fixed scalar.
    use ring::rand::SystemRandom;
    use ring::test::rand::FixedSliceRandom;

    use super::*;
    use crate::crypto::test_vectors::{STRONGSWAN_MODP1536, STRONGSWAN_MODP2048, hex};

    const ALL: [Group; 3] = [Group::Ecp384, Group::Modp2048, Group::Modp1536];

    // RFC 5903 §8.2, 384-bit Random ECP Group.
    const RFC5903_I: &str = "099F3C7034D4A2C699884D73A375A67F7624EF7C6B3C0F160647B67414DCE655E35B538041E649EE3FAEF896783AB194";
    const RFC5903_GIX: &str = "667842D7D180AC2CDE6F74F37551F55755C7645C20EF73E31634FE72B4C55EE6DE3AC808ACB4BDB4C88732AEE95F41AA";
    const RFC5903_GIY: &str = "9482ED1FC0EEB9CAFC4984625CCFC23F65032149E0E144ADA024181535A0F38EEB9FCFF3C2C947DAE69B4C634573A81C";
    const RFC5903_R: &str = "41CB0779B4BDB85D47846725FBEC3C9430FAB46CC8DC5060855CC9BDA0AA2942E0308312916B8ED2960E4BD55A7448FC";
    const RFC5903_GRX: &str = "E558DBEF53EECDE3D3FCCFC1AEA08A89A987475D12FD950D83CFA41732BC509D0D1AC43A0336DEF96FDA41D0774A3571";
    const RFC5903_GRY: &str = "DCFBEC7AACF3196472169E838430367F66EEBE3C6E70C416DD5F0C68759DD1FFF83FA40142209DFF5EAAD96DB9E6386C";
    const RFC5903_GIRX: &str = "11187331C279962D93D604243FD592CB9D0A926F422E47187521287E7156C5C4D603135569B9E9D09CF5D4A270F59746";

    fn fixed(group: Group, private: &[u8]) -> KeyPair {
        KeyPair::generate(group, &FixedSliceRandom { bytes: private }).unwrap()
    }

    #[test]
    fn ids_and_lengths() {
        for g in ALL {
            assert_eq!(Group::from_id(g.id()), Some(g));
        }
        assert_eq!(Group::Ecp384.public_len(), 96);
        assert_eq!(Group::Modp2048.public_len(), 256);
        assert_eq!(Group::Modp1536.public_len(), 192);
        for id in [
            TransformId::DH_NONE,
            TransformId::DH_MODP1024,
            TransformId::DH_ECP256,
            TransformId::DH_CURVE25519,
        ] {
            assert_eq!(Group::from_id(id), None);
        }
    }

    #[test]
    fn rfc5903_ecp384_vector() {
        let gi = [hex(RFC5903_GIX), hex(RFC5903_GIY)].concat();
        let gr = [hex(RFC5903_GRX), hex(RFC5903_GRY)].concat();
        let i = fixed(Group::Ecp384, &hex(RFC5903_I));
        assert_eq!(i.public(), &gi[..]);
        assert_eq!(&i.agree(&gr).unwrap()[..], &hex(RFC5903_GIRX)[..]);
        let r = fixed(Group::Ecp384, &hex(RFC5903_R));
        assert_eq!(r.public(), &gr[..]);
        assert_eq!(&r.agree(&gi).unwrap()[..], &hex(RFC5903_GIRX)[..]);
    }

    #[test]
    fn strongswan_modp_vectors() {
        for (group, v) in [
            (Group::Modp1536, STRONGSWAN_MODP1536),
            (Group::Modp2048, STRONGSWAN_MODP2048),
        ] {
            let (xi, xr, gi, gr, s) = (hex(v.0), hex(v.1), hex(v.2), hex(v.3), hex(v.4));
            let i = fixed(group, &xi);
            assert_eq!(i.public(), &gi[..], "{group:?}");
            assert_eq!(&i.agree(&gr).unwrap()[..], &s[..], "{group:?}");
            let r = fixed(group, &xr);
            assert_eq!(r.public(), &gr[..], "{group:?}");
            assert_eq!(&r.agree(&gi).unwrap()[..], &s[..], "{group:?}");
        }
    }

    /// Numbers printed by tests/verify_modp.py (Python's pow()).
    #[test]
    fn python_modp_vectors() {
        let v2048 = (
            "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f30",
            "fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0efeeedecebeae9e8e7e6e5e4e3e2e1e0dfdedddcdbdad9d8d7d6d5d4d3d2d1d0",
            "9cfc875d28c50e49c8b19ce7ee7e4d56c75229955bdb2a8a83f1d24153ed7271b34bd3ed791b27eb60ee0f5be49ef7422f363cbb713f2e86b6febe29e55376e60ed446bd5e45f9618c1e4f2c179d6c9b16e7fc7169de7a10e68cd36bfe0d654e21b123d11dba85184877ed46654fcc7036f56b084def2b993328535e3f38444777c6ce90fd69afe5258f801183403c57989d277e32ad4c50530221d37ef921cb6a3d3f76d73b51f25eee77ed7a6b82a11d9e8d0d3e8139790b8973ba42caf496be818af4cd79c6ab1c7a722c0be115916d5c55dc4b46ea1200a801685c3d9346ba4b94e3b7fa755e7f120b75250017614d9a5d85d3a6f9bcb9d532f58560091e",
            "18b210253d36f5dc28a06a5609d900940ac05eecabe6e4a72c2920fc966c4f8e5903db6af7a146db55282f9a552562a0acca063729ec8968c9cf24efe594d7e239d4530fc042c2d9cb7031a888f685e6b9a1cd6dd781996280703236078a1fb0582649f2dbf2f8e52438d9d425ef44743f63c3ad3e30a057fed4f6601e51eeb735b0e415315966c6c062b54bbbe9151a18336bbce0e949e656df04ae1ff1c4909545ee71c62780da4f029126d3c019161b2012571d61c70922115bc8a75ed6df5772047d1c99734383e662f60abf66cef29bef19008fe518be04f9000ad0638506f39fa6e3c16865b7b7b2b5621b70135fb9aa206f5ae72539c005111c104ddc",
            "d104ee11661178642fcd6d353d376dcc141516c24d5c15ef32c9d7e51f6528ada7740eb35cbc19e6c69529bc43330cd193d17ae8542a1b1146f0e3c001f83b67414b8b82b50cdd601d97d537aff195ab47b7131f4b00a85fbe7affb2a4b2ead9968a469cbcebba4f27cb37716b09a4db3a8831cb9ca3cdc4c7422f489730ef1bb1f0346aaf8ce8963e7cf0225076fc63048fee3b8212faee0fa76aa802d529ee1caf183fec93ff6b6794e5b21b090da6c3c180fc0ea3dabb646a07967e3abdb9730bcb8357b755040b99b6761e80203bd4e35409059b378b671357b60080cecbd9006956891cb206cd384416d6f1de4142971a0a288bf895b51b3cc32a043c3a",
        );
        let v1536 = (
            "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20",
            "fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0efeeedecebeae9e8e7e6e5e4e3e2e1e0",
            "c49abe8aa5377f182061fda2a016cd368801d9c78c05f8ba930f5fbb38251295ae5e69fc5345907150e8b4ef8f0e91a8ce2cf60fbbd32b7b7e2d687cb31118ffe58aa3c4ac2902ab42cd23350d46a3fd2a1500d4d4f510494a1df3e3f7b204c41de7760549eafef2349638426ce9bf6293e64179212e8785d5e3880e42955c38b6a349a86a289b06ad626b43fad602c70fd1b1fe235fa29c65634482af8931499afff50befc3b150223f87be5e466d15139daac903cd81b4b84b1e899415a607",
            "bfeeb54cea02d2d2144a2145bd04167749f099f41b5a72026f9cfcc3226527b7d2dc57c163c436e7729463c2dd774110bdcecf023953fff0d0dfeb9f6bdd803f6c1cf310bdd2fa253aca955e971ac1bb671f1163f1dd051e61395ee9f138f5bfc81d0db5f613b5a8f817f0012872507b221744c9bf52efc83e3c34bcdbfff2efb62e8d7ce384a6672ed14fc177c79707875cc7b66e1dbee5b241372ed58dd404e3a3862db5ff6db18ca531801f57fa4844b67d05e873e498da63b2f6e17ab7f8",
            "74a920a484d138ef07bf57e7a40e1dd2efa24f2c342292c39122f4637eea98250e44eb59dfa4e6f47f0dee9ca2fe4d9af632cf085319893c3c70b0ee51de78faf9ebdc63a1c03f0d52700c455ebec826d817a0add92eca2690d51a6e2af7315368b87e10b1c46f9fe0d8f24247b1e896a0abacff113e4fe1d12bc374def4acbb1df7234edae84f0f5ef92c92b483b4f326c06bc663b8ddd1d6e6002b6dfa5940ff6a4355132b0dda95587ea0693a0a9a780ddbbbffacd7141f7963f3ae3cf805",
        );
        for (group, v) in [(Group::Modp2048, v2048), (Group::Modp1536, v1536)] {
            let (xi, xr, gi, gr, s) = (hex(v.0), hex(v.1), hex(v.2), hex(v.3), hex(v.4));
            let i = fixed(group, &xi);
            assert_eq!(i.public(), &gi[..], "{group:?}");
            assert_eq!(&i.agree(&gr).unwrap()[..], &s[..], "{group:?}");
            let r = fixed(group, &xr);
            assert_eq!(&r.agree(&gi).unwrap()[..], &s[..], "{group:?}");
        }
    }

    #[test]
    fn random_pairs_agree() {
        let rng = SystemRandom::new();
        for g in ALL {
            let a = KeyPair::generate(g, &rng).unwrap();
            let b = KeyPair::generate(g, &rng).unwrap();
            assert_eq!(a.group(), g);
            assert_eq!(a.public().len(), g.public_len());
            assert_ne!(a.public(), b.public());
            let (pa, pb) = (a.public().to_vec(), b.public().to_vec());
            let sa = a.agree(&pb).unwrap();
            let sb = b.agree(&pa).unwrap();
            assert_eq!(sa, sb);
            let want = if g == Group::Ecp384 {
                48
            } else {
                g.public_len()
            };
            assert_eq!(sa.len(), want);
        }
    }

    #[test]
    fn modp_leading_zeros_are_kept() {
        // x = 1 gives g^x = 2: the public value is 2 left-padded, not a one-byte value.
        for (g, len) in [(Group::Modp2048, 48), (Group::Modp1536, 32)] {
            let mut x = vec![0u8; len];
            *x.last_mut().unwrap() = 1;
            let k = fixed(g, &x);
            let mut want = vec![0u8; g.public_len()];
            *want.last_mut().unwrap() = 2;
            assert_eq!(k.public(), &want[..]);
        }
    }

    #[test]
    fn modp_rejects_rfc6989_values_and_lengths() {
        let rng = SystemRandom::new();
        for (g, p_hex) in [
            (Group::Modp2048, modp::P2048_HEX),
            (Group::Modp1536, modp::P1536_HEX),
        ] {
            let p = hex(p_hex);
            let n = g.public_len();
            let from_u8 = |v: u8| {
                let mut b = vec![0u8; n];
                b[n - 1] = v;
                b
            };
            let mut p_minus_1 = p.clone();
            p_minus_1[n - 1] -= 1; // p ends in 0xFF
            let bad = [
                from_u8(0),
                from_u8(1),
                p_minus_1.clone(),
                p.clone(),
                vec![0xFF; n],
            ];
            for y in bad {
                let k = KeyPair::generate(g, &rng).unwrap();
                assert_eq!(k.agree(&y), Err(DhError::BadPublicValue), "{g:?}");
            }
            // 2 and p-2 are the smallest and largest acceptable values.
            let mut p_minus_2 = p_minus_1.clone();
            p_minus_2[n - 1] -= 1;
            for y in [from_u8(2), p_minus_2] {
                assert!(
                    KeyPair::generate(g, &rng).unwrap().agree(&y).is_ok(),
                    "{g:?}"
                );
            }
            for len in [0, 1, n - 1, n + 1, 2 * n] {
                let k = KeyPair::generate(g, &rng).unwrap();
                assert_eq!(
                    k.agree(&vec![2u8; len]),
                    Err(DhError::BadLength),
                    "{g:?} {len}"
                );
            }
        }
    }

    #[test]
    fn ecp_rejects_bad_points_and_lengths() {
        let rng = SystemRandom::new();
        let gr = [hex(RFC5903_GRX), hex(RFC5903_GRY)].concat();
        let mut off_curve = gr.clone();
        off_curve[95] ^= 1;
        for y in [vec![0u8; 96], off_curve, vec![0xFF; 96]] {
            let k = KeyPair::generate(Group::Ecp384, &rng).unwrap();
            assert_eq!(k.agree(&y), Err(DhError::BadPublicValue));
        }
        for len in [0, 48, 95, 97] {
            let k = KeyPair::generate(Group::Ecp384, &rng).unwrap();
            assert_eq!(k.agree(&vec![4u8; len]), Err(DhError::BadLength));
        }
        // 0x04 ‖ x ‖ y (ring's own form) is 97 bytes: refused, the payload has no prefix.
        let k = KeyPair::generate(Group::Ecp384, &rng).unwrap();
        assert_eq!(
            k.agree(&[&[4u8][..], &gr].concat()),
            Err(DhError::BadLength)
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        let k = fixed(Group::Modp1536, &[0x42; 32]);
        let s = format!("{k:?}");
        assert!(s.contains("Modp1536"));
        assert!(!s.contains("42"), "{s}");
    }
}
