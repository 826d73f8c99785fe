//! Manually keyed SAs (RFC 4301 §4.5) as a TunnelConfig writes them, and the parameters of one
//! SA direction, which IKE-made SAs share. The data path (`tunnel-pod`'s `esp`) builds its SAs
//! from these.

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::algorithms::{EspEncryption, Integrity, check_keys};
use crate::secret::Secret;

/// Hard lifetimes: when one is reached the SA stops (RFC 4301 §4.4.2.1).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SaLifetime {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
    /// Age limit; the caller reports the age (`check_age`), the SA keeps no clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u64>,
}

/// The inner traffic an SA carries (RFC 4301 §4.4.1): tunnel mode, IPv4 prefixes. Inbound, the
/// decrypted packet's source must be in `remote` and its destination in `local` (RFC 4301 §5.2
/// step 4); outbound the other way round. The default is any.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficSelectors {
    #[serde(default = "any")]
    pub local: Vec<Ipv4Net>,
    #[serde(default = "any")]
    pub remote: Vec<Ipv4Net>,
}

fn any() -> Vec<Ipv4Net> {
    vec![Ipv4Net::default()]
}

impl Default for TrafficSelectors {
    fn default() -> Self {
        TrafficSelectors {
            local: any(),
            remote: any(),
        }
    }
}

/// Everything that defines one direction of an SA.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SaParams {
    pub spi: u32,
    pub encryption: EspEncryption,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity: Option<Integrity>,
    /// Encryption key (for AES-GCM: key ‖ 4-byte salt), base64.
    pub encryption_key: Secret,
    /// Integrity key, base64; absent for AES-GCM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity_key: Option<Secret>,
    #[serde(default)]
    pub lifetime: SaLifetime,
    #[serde(default)]
    pub traffic_selectors: TrafficSelectors,
}

/// A manually keyed pair of SAs (RFC 4301 §4.5), as written in a TunnelConfig.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StaticSa {
    /// What we send with (the peer's inbound SA).
    pub outbound: SaParams,
    /// What the peer sends with (its outbound SA).
    pub inbound: SaParams,
}

impl StaticSa {
    /// The rules serde cannot express, as (field, reason).
    pub fn validate(&self, allow_null: bool) -> Result<(), (&'static str, String)> {
        let (o, i) = (&self.outbound, &self.inbound);
        if o.spi == i.spi {
            return Err((
                "ipsec.staticSa",
                "outbound and inbound need different SPIs".into(),
            ));
        }
        // One key in both directions would let both senders use the same (key, nonce) pairs
        // and make our own packets acceptable to us when reflected.
        let same = |a: &Secret, b: &Secret| !a.is_empty() && a.as_bytes() == b.as_bytes();
        let same_integrity =
            matches!((&o.integrity_key, &i.integrity_key), (Some(a), Some(b)) if same(a, b));
        if same(&o.encryption_key, &i.encryption_key) || same_integrity {
            return Err((
                "ipsec.staticSa",
                "outbound and inbound must not share a key".into(),
            ));
        }
        for (field, p) in [
            ("ipsec.staticSa.outbound", &self.outbound),
            ("ipsec.staticSa.inbound", &self.inbound),
        ] {
            // RFC 4303 §2.1: SPI 0 is reserved, 1–255 are reserved by IANA.
            if p.spi < 256 {
                return Err((field, format!("spi {} is reserved; use 256 or more", p.spi)));
            }
            if p.encryption == EspEncryption::Null && !allow_null {
                return Err((
                    field,
                    "NULL encryption requires allowNullCipher: true".into(),
                ));
            }
            let integ = p.integrity_key.as_ref().map_or(0, Secret::len);
            check_keys(p.encryption, p.integrity, p.encryption_key.len(), integ)
                .map_err(|e| (field, e.to_string()))?;
        }
        Ok(())
    }
}
