//! Diffie-Hellman: group 20 (ECP-384, RFC 5903, via ring), 14 and 5 (MODP-2048/1536, RFC 3526,
//! via crypto-bigint in constant time, peer values checked per RFC 6989).

use ring::rand::SecureRandom;

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
        let _ = id;
        todo!("crypto")
    }

    pub fn id(self) -> TransformId {
        todo!("crypto")
    }

    /// Bytes of a KE payload's data: 96 (x‖y), 256, 192.
    pub fn public_len(self) -> usize {
        todo!("crypto")
    }
}

/// Our half of one exchange; the private part is zeroized on drop and never printed.
pub struct KeyPair {
    group: Group,
    public: Vec<u8>,
    // private state: the crypto implementation adds its fields here.
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
        let _ = (group, rng);
        todo!("crypto")
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
        let _ = peer_public;
        todo!("crypto")
    }
}
