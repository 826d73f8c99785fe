//! Tunnel ID and the IKE identities a peer may present for a tunnel (Magic WAN's four formats).

use std::net::Ipv4Addr;

use magictunnel_types::config::{IkeId, IkeIdType};

use crate::crd::IkeIds;
use crate::settings::{AccountId, IdDomain};

/// The tunnel ID: the object's UID without dashes, lowercase (32 hex digits).
pub fn tunnel_id(uid: &str) -> Option<String> {
    let id: String = uid
        .chars()
        .filter(|c| *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// Every identity of a tunnel, whether or not the tunnel accepts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identities {
    pub rfc822_addr: String,
    pub fqdn: String,
    pub key_id: String,
    /// Only when the customer endpoint is set and identifies the tunnel uniquely.
    pub ipv4_addr: Option<Ipv4Addr>,
}

impl Identities {
    pub fn new(
        tunnel_id: &str,
        account: &AccountId,
        domain: &IdDomain,
        unique_customer_endpoint: Option<Ipv4Addr>,
    ) -> Self {
        let fqdn = format!("{tunnel_id}.{account}.{}", domain.as_str());
        Identities {
            rfc822_addr: format!("ipsec@{fqdn}"),
            key_id: format!("{account}_{tunnel_id}"),
            fqdn,
            ipv4_addr: unique_customer_endpoint,
        }
    }

    /// The identity of a given format, if the tunnel has one.
    pub fn get(&self, t: IkeIdType) -> Option<String> {
        match t {
            IkeIdType::Rfc822Addr => Some(self.rfc822_addr.clone()),
            IkeIdType::Fqdn => Some(self.fqdn.clone()),
            IkeIdType::KeyId => Some(self.key_id.clone()),
            IkeIdType::Ipv4Addr => self.ipv4_addr.map(|a| a.to_string()),
        }
    }

    /// The identities of the accepted formats that exist, in the order given.
    pub fn accepted(&self, types: &[IkeIdType]) -> Vec<IkeId> {
        types
            .iter()
            .filter_map(|&t| self.get(t).map(|value| IkeId { id_type: t, value }))
            .collect()
    }

    /// What status publishes: the accepted identities.
    pub fn status(&self, types: &[IkeIdType]) -> IkeIds {
        let pick = |t: IkeIdType| {
            if types.contains(&t) {
                self.get(t)
            } else {
                None
            }
        };
        IkeIds {
            rfc822_addr: pick(IkeIdType::Rfc822Addr),
            fqdn: pick(IkeIdType::Fqdn),
            key_id: pick(IkeIdType::KeyId),
            ipv4_addr: pick(IkeIdType::Ipv4Addr),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "5F0C2D7E-8a4b-4c1d-9e2f-0123456789ab";

    fn ids(ipv4: Option<Ipv4Addr>) -> Identities {
        let account = AccountId::parse("acc0123").expect("account");
        let domain = IdDomain::parse("ipsec.example.com").expect("domain");
        Identities::new(&tunnel_id(UID).expect("uid"), &account, &domain, ipv4)
    }

    #[test]
    fn tunnel_id_strips_dashes_and_lowercases() {
        assert_eq!(
            tunnel_id(UID).as_deref(),
            Some("5f0c2d7e8a4b4c1d9e2f0123456789ab")
        );
        assert_eq!(tunnel_id("not-a-uid"), None);
        assert_eq!(tunnel_id(""), None);
    }

    #[test]
    fn the_four_formats() {
        let i = ids(Some(Ipv4Addr::new(198, 51, 100, 7)));
        assert_eq!(
            i.rfc822_addr,
            "ipsec@5f0c2d7e8a4b4c1d9e2f0123456789ab.acc0123.ipsec.example.com"
        );
        assert_eq!(
            i.fqdn,
            "5f0c2d7e8a4b4c1d9e2f0123456789ab.acc0123.ipsec.example.com"
        );
        assert_eq!(i.key_id, "acc0123_5f0c2d7e8a4b4c1d9e2f0123456789ab");
        assert_eq!(i.get(IkeIdType::Ipv4Addr).as_deref(), Some("198.51.100.7"));
    }

    #[test]
    fn accepted_skips_missing_and_unlisted_formats() {
        let i = ids(None);
        let accepted = i.accepted(&IkeIdType::ALL);
        let types: Vec<_> = accepted.iter().map(|a| a.id_type).collect();
        assert_eq!(
            types,
            [IkeIdType::Rfc822Addr, IkeIdType::Fqdn, IkeIdType::KeyId]
        );
        let status = i.status(&[IkeIdType::Fqdn]);
        assert_eq!(status.fqdn, Some(i.fqdn.clone()));
        assert_eq!(status.key_id, None);
        assert_eq!(status.ipv4_addr, None);
    }
}
