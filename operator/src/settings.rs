//! Operator-wide settings (Helm values → command-line flags), checked once at start-up.

use std::fmt;

/// The account the tunnels belong to: part of every IKE ID. Lowercase letters and digits, 1–32.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountId(String);

impl AccountId {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = (1..=32).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Ok(AccountId(s.to_string()))
        } else {
            Err(format!(
                "account ID {s:?} must be 1 to 32 lowercase letters or digits"
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The DNS domain under which IKE IDs are formed, e.g. `ipsec.magictunnel.dev`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdDomain(String);

impl IdDomain {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim_end_matches('.').to_ascii_lowercase();
        let label_ok = |l: &str| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        // 32 (tunnel ID) + 1 + 32 (account) + 1 + domain must stay within 253.
        if s.len() <= 180 && s.split('.').all(label_ok) {
            Ok(IdDomain(s))
        } else {
            Err(format!(
                "IKE ID domain {s:?} must be a DNS name of at most 180 characters"
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Resource requests and limit of each tunnel pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelResources {
    pub cpu_request: String,
    pub memory_request: String,
    pub memory_limit: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub account_id: AccountId,
    pub ike_id_domain: IdDomain,
    pub tunnel_image: String,
    pub tunnel_image_pull_policy: String,
    pub tunnel_resources: TunnelResources,
    /// First port handed to tunnel pods for their HTTP endpoint (host network: one per tunnel).
    pub http_port_base: u16,
    pub http_port_count: u16,
}

impl Settings {
    /// Settings for tests and examples.
    pub fn example() -> Self {
        Settings {
            account_id: AccountId("0123456789abcdef0123456789abcdef".into()),
            ike_id_domain: IdDomain("ipsec.magictunnel.dev".into()),
            tunnel_image: "magictunnel/tunnel-pod:0.1.0".into(),
            tunnel_image_pull_policy: "IfNotPresent".into(),
            tunnel_resources: TunnelResources {
                cpu_request: "50m".into(),
                memory_request: "32Mi".into(),
                memory_limit: "128Mi".into(),
            },
            http_port_base: 9180,
            http_port_count: 1000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids() {
        assert!(AccountId::parse("0123456789abcdef0123456789abcdef").is_ok());
        assert!(AccountId::parse("").is_err());
        assert!(AccountId::parse("ABC").is_err());
        assert!(AccountId::parse("a_b").is_err());
        assert!(AccountId::parse(&"a".repeat(33)).is_err());
    }

    #[test]
    fn domains() {
        assert_eq!(
            IdDomain::parse("IPsec.Example.COM.").map(|d| d.0),
            Ok("ipsec.example.com".to_string())
        );
        assert!(IdDomain::parse("bad..domain").is_err());
        assert!(IdDomain::parse("-bad.example").is_err());
        assert!(IdDomain::parse("under_score.example").is_err());
    }
}
