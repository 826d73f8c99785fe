//! Pure mapping between the TunnelConfig (names the CRD uses) and the IKE core (IANA terms), and
//! from negotiated Child SAs to the ESP engine's SA parameters.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use ike::core::{ChildDirection, Config, Identification, Proposals, TrafficSelector, ipv4_id};
use ike::crypto::{EncrAlg, Group, IntegAlg, PrfAlg};
use ike::wire::{IdType, TransformId};
use ipnet::{Ipv4Net, Ipv4Subnets};

use crate::config::{
    DhGroup, EspEncryption, IkeEncryption, IkeId, IkeIdType, Integrity, IpsecConfig, Prf,
    SaLifetime, SaParams, Secret, TrafficSelectors, TunnelConfig,
};

/// The IKE core's configuration for this tunnel.
pub fn core_config(config: &TunnelConfig, ipsec: &IpsecConfig) -> Result<Config> {
    let accepted = ipsec
        .accepted_ids
        .iter()
        .map(identification)
        .collect::<Result<Vec<_>>>()
        .context("ipsec.acceptedIds")?;
    let local_id = match &ipsec.local_id {
        Some(id) => identification(id).context("ipsec.localId")?,
        None => ipv4_id(config.local_endpoint),
    };
    let mut c = Config::new(local_id, accepted);
    c.proposals = proposals(ipsec);
    c.ike_lifetime = Duration::from_secs(u64::from(ipsec.lifetimes.ike_seconds));
    c.child_lifetime = Duration::from_secs(u64::from(ipsec.lifetimes.child_seconds));
    c.child_bytes = ipsec.lifetimes.child_bytes;
    Ok(c)
}

/// The allow-lists; an empty list in the config means every seed algorithm of that kind.
pub fn proposals(ipsec: &IpsecConfig) -> Proposals {
    let seed = Proposals::seed_default(ipsec.allow_null_cipher);
    let p = &ipsec.proposals;
    let esp_encr: Vec<_> = p
        .esp
        .encryption
        .iter()
        .filter(|e| ipsec.allow_null_cipher || **e != EspEncryption::Null)
        .map(|e| esp_encryption(*e))
        .collect();
    let ike_integ: Vec<_> = p
        .ike
        .integrity
        .iter()
        .filter_map(|i| ike_integrity(*i))
        .collect();
    Proposals {
        ike_encr: or_seed(
            p.ike
                .encryption
                .iter()
                .map(|e| ike_encryption(*e))
                .collect(),
            seed.ike_encr,
        ),
        ike_integ: or_seed(ike_integ, seed.ike_integ),
        ike_prf: or_seed(p.ike.prf.iter().map(|x| prf(*x)).collect(), seed.ike_prf),
        ike_dh: or_seed(
            p.ike.dh_groups.iter().map(|g| group(*g)).collect(),
            seed.ike_dh,
        ),
        esp_encr: or_seed(esp_encr, seed.esp_encr),
        esp_integ: or_seed(
            p.esp.integrity.iter().map(|i| esp_integrity(*i)).collect(),
            seed.esp_integ,
        ),
        pfs: or_seed(
            p.esp.pfs_groups.iter().map(|g| group(*g)).collect(),
            seed.pfs,
        ),
        pfs_initiate: p.esp.pfs_groups.first().map(|g| group(*g)),
    }
}

fn or_seed<T>(list: Vec<T>, seed: Vec<T>) -> Vec<T> {
    if list.is_empty() { seed } else { list }
}

fn ike_encryption(e: IkeEncryption) -> EncrAlg {
    match e {
        IkeEncryption::AesGcm16_128 => EncrAlg::AesGcm16 { key_bits: 128 },
        IkeEncryption::AesGcm16_256 => EncrAlg::AesGcm16 { key_bits: 256 },
        IkeEncryption::AesCbc256 => EncrAlg::AesCbc { key_bits: 256 },
    }
}

/// HMAC-SHA1-96 is for Child SAs only (the seed).
fn ike_integrity(i: Integrity) -> Option<IntegAlg> {
    match i {
        Integrity::HmacSha2_256_128 => Some(IntegAlg::HmacSha256_128),
        Integrity::HmacSha1_96 => None,
    }
}

fn prf(p: Prf) -> PrfAlg {
    match p {
        Prf::HmacSha2_256 => PrfAlg::HmacSha256,
        Prf::HmacSha2_384 => PrfAlg::HmacSha384,
        Prf::HmacSha2_512 => PrfAlg::HmacSha512,
    }
}

fn group(g: DhGroup) -> Group {
    match g {
        DhGroup::Ecp384 => Group::Ecp384,
        DhGroup::Modp2048 => Group::Modp2048,
        DhGroup::Modp1536 => Group::Modp1536,
    }
}

fn esp_encryption(e: EspEncryption) -> (TransformId, Option<u16>) {
    match e {
        EspEncryption::AesGcm16_128 => (TransformId::ENCR_AES_GCM_16, Some(128)),
        EspEncryption::AesGcm16_256 => (TransformId::ENCR_AES_GCM_16, Some(256)),
        EspEncryption::AesCbc128 => (TransformId::ENCR_AES_CBC, Some(128)),
        EspEncryption::AesCbc256 => (TransformId::ENCR_AES_CBC, Some(256)),
        EspEncryption::Null => (TransformId::ENCR_NULL, None),
    }
}

fn esp_integrity(i: Integrity) -> TransformId {
    match i {
        Integrity::HmacSha2_256_128 => TransformId::AUTH_HMAC_SHA2_256_128,
        Integrity::HmacSha1_96 => TransformId::AUTH_HMAC_SHA1_96,
    }
}

/// An IKE ID as the peer sends it in IDi (RFC 7296 §3.5): the text for the name types, four
/// bytes for an IPv4 address.
pub fn identification(id: &IkeId) -> Result<Identification> {
    let (id_type, data) = match id.id_type {
        IkeIdType::Rfc822Addr => (IdType::ID_RFC822_ADDR, id.value.as_bytes().to_vec()),
        IkeIdType::Fqdn => (IdType::ID_FQDN, id.value.as_bytes().to_vec()),
        IkeIdType::KeyId => (IdType::ID_KEY_ID, id.value.as_bytes().to_vec()),
        IkeIdType::Ipv4Addr => {
            let a: Ipv4Addr = id
                .value
                .parse()
                .map_err(|_| anyhow!("{:?} is not an IPv4 address", id.value))?;
            (IdType::ID_IPV4_ADDR, a.octets().to_vec())
        }
    };
    Ok(Identification { id_type, data })
}

/// The ESP engine's parameters for one direction of a negotiated Child SA. Time lifetimes are
/// the IKE core's (it rekeys and retires); the byte limit is enforced by the data path.
pub fn sa_params(
    dir: &ChildDirection,
    selectors: TrafficSelectors,
    bytes: Option<u64>,
) -> Result<SaParams> {
    let encryption = match (dir.encr, dir.key_bits) {
        (TransformId::ENCR_AES_GCM_16, Some(128)) => EspEncryption::AesGcm16_128,
        (TransformId::ENCR_AES_GCM_16, Some(256)) => EspEncryption::AesGcm16_256,
        (TransformId::ENCR_AES_CBC, Some(128)) => EspEncryption::AesCbc128,
        (TransformId::ENCR_AES_CBC, Some(256)) => EspEncryption::AesCbc256,
        (TransformId::ENCR_NULL, _) => EspEncryption::Null,
        (other, bits) => bail!("negotiated ESP encryption {other:?}/{bits:?} has no engine"),
    };
    let integrity = match dir.integ {
        None => None,
        Some(TransformId::AUTH_HMAC_SHA2_256_128) => Some(Integrity::HmacSha2_256_128),
        Some(TransformId::AUTH_HMAC_SHA1_96) => Some(Integrity::HmacSha1_96),
        Some(other) => bail!("negotiated ESP integrity {other:?} has no engine"),
    };
    Ok(SaParams {
        spi: dir.spi,
        encryption,
        integrity,
        encryption_key: Secret::new(dir.encr_key.to_vec()),
        integrity_key: integrity.map(|_| Secret::new(dir.integ_key.to_vec())),
        lifetime: SaLifetime {
            bytes,
            packets: None,
            seconds: None,
        },
        traffic_selectors: selectors,
    })
}

/// Our side's and the peer's selectors as IPv4 prefixes (a range becomes the prefixes that
/// cover it exactly; ports and protocols are not selected on: route-based tunnels carry all).
pub fn selectors(local: &[TrafficSelector], remote: &[TrafficSelector]) -> TrafficSelectors {
    TrafficSelectors {
        local: prefixes(local),
        remote: prefixes(remote),
    }
}

fn prefixes(ts: &[TrafficSelector]) -> Vec<Ipv4Net> {
    ts.iter()
        .filter_map(|t| match t {
            TrafficSelector::Range {
                start: IpAddr::V4(s),
                end: IpAddr::V4(e),
                ..
            } => Some(Ipv4Subnets::new(*s, *e, 0)),
            _ => None,
        })
        .flatten()
        .collect()
}

/// "10.0.0.0/8" for a range that is one prefix, "a-b" otherwise: for logs and `/status`.
pub fn describe(ts: &TrafficSelector) -> String {
    match ts {
        TrafficSelector::Range { start, end, .. } => match (start, end) {
            (IpAddr::V4(s), IpAddr::V4(e)) => {
                let nets: Vec<_> = Ipv4Subnets::new(*s, *e, 0).collect();
                match nets.as_slice() {
                    [one] => one.to_string(),
                    _ => format!("{s}-{e}"),
                }
            }
            _ => format!("{start}-{end}"),
        },
        TrafficSelector::Unknown { ts_type, .. } => format!("{ts_type:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TunnelConfig;

    fn ipsec_config(extra: &str) -> TunnelConfig {
        TunnelConfig::from_yaml(&format!(
            "apiVersion: magictunnel.dev/v1alpha1\nkind: TunnelConfig\nname: t\ntype: IPsec\n\
             localEndpoint: 203.0.113.2\ninterfaceAddress: 169.254.0.1/31\n\
             ipsec:\n  psk: MDEyMzQ1Njc4OWFiY2RlZg==\n  acceptedIds:\n  - type: FQDN\n    value: r.example\n  - type: IPv4Addr\n    value: 198.51.100.7\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn ids_are_encoded_as_the_peer_sends_them() {
        let t = ipsec_config("");
        let c = core_config(&t, t.ipsec.as_ref().unwrap()).unwrap();
        assert_eq!(c.local_id, ipv4_id(Ipv4Addr::new(203, 0, 113, 2)));
        assert_eq!(c.accepted_ids[0].id_type, IdType::ID_FQDN);
        assert_eq!(c.accepted_ids[0].data, b"r.example");
        assert_eq!(c.accepted_ids[1].id_type, IdType::ID_IPV4_ADDR);
        assert_eq!(c.accepted_ids[1].data, vec![198, 51, 100, 7]);
    }

    #[test]
    fn empty_lists_mean_the_seed_and_null_needs_the_opt_in() {
        let t = ipsec_config("");
        let p = proposals(t.ipsec.as_ref().unwrap());
        assert_eq!(p, Proposals::seed_default(false));
        assert!(!p.esp_encr.contains(&(TransformId::ENCR_NULL, None)));
        let t = ipsec_config("  allowNullCipher: true\n");
        let p = proposals(t.ipsec.as_ref().unwrap());
        assert!(p.esp_encr.contains(&(TransformId::ENCR_NULL, None)));
        let t = ipsec_config(
            "  proposals:\n    ike:\n      encryption: [AES-CBC-256]\n      dhGroups: [MODP-2048]\n    esp:\n      encryption: [AES-GCM-16-256]\n      pfsGroups: [MODP-1536]\n",
        );
        let p = proposals(t.ipsec.as_ref().unwrap());
        assert_eq!(p.ike_encr, vec![EncrAlg::AesCbc { key_bits: 256 }]);
        assert_eq!(p.ike_dh, vec![Group::Modp2048]);
        assert_eq!(p.esp_encr, vec![(TransformId::ENCR_AES_GCM_16, Some(256))]);
        assert_eq!(p.pfs, vec![Group::Modp1536]);
        assert_eq!(p.pfs_initiate, Some(Group::Modp1536));
        assert_eq!(p.ike_prf, Proposals::seed_default(false).ike_prf);
    }

    #[test]
    fn ranges_become_exact_prefixes() {
        let r = |s: [u8; 4], e: [u8; 4]| TrafficSelector::Range {
            ip_protocol: 0,
            start_port: 0,
            end_port: 65535,
            start: IpAddr::V4(s.into()),
            end: IpAddr::V4(e.into()),
        };
        let ts = selectors(
            &[r([0, 0, 0, 0], [255, 255, 255, 255])],
            &[r([10, 0, 0, 0], [10, 0, 0, 5])],
        );
        assert_eq!(ts.local, vec!["0.0.0.0/0".parse::<Ipv4Net>().unwrap()]);
        let want: Vec<Ipv4Net> = ["10.0.0.0/30", "10.0.0.4/31"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(ts.remote, want);
        assert_eq!(
            describe(&r([10, 1, 0, 0], [10, 1, 255, 255])),
            "10.1.0.0/16"
        );
        assert_eq!(
            describe(&r([10, 0, 0, 0], [10, 0, 0, 5])),
            "10.0.0.0-10.0.0.5"
        );
    }

    #[test]
    fn every_engine_suite_maps_back() {
        for e in [
            EspEncryption::AesGcm16_128,
            EspEncryption::AesGcm16_256,
            EspEncryption::AesCbc128,
            EspEncryption::AesCbc256,
            EspEncryption::Null,
        ] {
            let (encr, key_bits) = esp_encryption(e);
            let integ = (!matches!(e, EspEncryption::AesGcm16_128 | EspEncryption::AesGcm16_256))
                .then_some(TransformId::AUTH_HMAC_SHA1_96);
            let d = ChildDirection {
                spi: 0x1234,
                encr,
                key_bits,
                integ,
                encr_key: zeroize::Zeroizing::new(vec![0; 4]),
                integ_key: zeroize::Zeroizing::new(vec![1; 20]),
            };
            let p = sa_params(&d, TrafficSelectors::default(), Some(1 << 20)).unwrap();
            assert_eq!(p.encryption, e);
            assert_eq!(p.integrity.is_some(), integ.is_some());
            assert_eq!(p.lifetime.bytes, Some(1 << 20));
        }
    }
}
