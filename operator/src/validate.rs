//! Validation across objects: turns a raw `MagicTunnel` (plus the other tunnels the operator
//! knows) into a [`ValidatedTunnel`] with typed fields, or an [`Invalid`] reason for status.
//!
//! The API server has already applied the schema and CEL rules; what remains needs parsing into
//! typed values or other objects: endpoint conflicts, ID_IPV4_ADDR uniqueness, the port of each
//! pod's HTTP endpoint. Nothing after this step reads the raw spec.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Toleration;
use kube::ResourceExt;
use magictunnel_types::config::{
    self, GreOptions, HealthCheck, IkeId, IkeIdType, Lifetimes, MssClamp, Proposals, Route,
    TunnelType,
};

use crate::crd::{MAX_NAME_LEN, MagicTunnel, ROTATE_PSK_ANNOTATION};
use crate::ike_id::{self, Identities};
use crate::psk::{self, PSK_KEY};
use crate::reason::Reason;
use crate::settings::Settings;

/// Where the PSK of an IPsec tunnel comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PskSource {
    /// A key of a user's Secret, read but never written.
    Adopted { secret: String, key: String },
    /// The owned Secret `<name>-psk`, generated once and on each new rotate-psk value.
    Generated {
        secret: String,
        rotation: Option<String>,
    },
}

impl PskSource {
    pub fn secret_name(&self) -> &str {
        match self {
            PskSource::Adopted { secret, .. } | PskSource::Generated { secret, .. } => secret,
        }
    }
    /// The key of the Secret that holds the PSK.
    pub fn key(&self) -> &str {
        match self {
            PskSource::Adopted { key, .. } => key,
            PskSource::Generated { .. } => PSK_KEY,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedIpsec {
    pub psk: PskSource,
    pub identities: Identities,
    /// Accepted formats that exist for this tunnel (IPv4Addr removed when not unique).
    pub accepted_id_types: Vec<IkeIdType>,
    pub replay_protection: bool,
    pub allow_null_cipher: bool,
    pub proposals: Proposals,
    pub lifetimes: Lifetimes,
    /// Our IDr; `None`: the local endpoint as ID_IPV4_ADDR.
    pub local_id: Option<IkeId>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedTunnel {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub tunnel_id: String,
    pub tunnel_type: TunnelType,
    pub local_endpoint: Ipv4Addr,
    pub customer_endpoint: Option<Ipv4Addr>,
    pub interface_address: Ipv4Net,
    pub mtu: Option<u16>,
    pub ttl: u8,
    pub mss_clamp: MssClamp,
    pub routes: Vec<Route>,
    pub health_check: HealthCheck,
    pub replicas: i32,
    pub node_selector: std::collections::BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub gre: Option<GreOptions>,
    pub ipsec: Option<ValidatedIpsec>,
    pub http_port: u16,
}

/// Why a tunnel is not deployed; becomes `Configured=False` with this reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub reason: Reason,
    pub message: String,
}

fn invalid(reason: Reason, message: impl Into<String>) -> Invalid {
    Invalid {
        reason,
        message: message.into(),
    }
}

/// Older tunnels win conflicts: creation time, then namespace/name, so the order is total and
/// stable and a new object can never take over from one already carrying traffic.
pub fn age_order(a: &MagicTunnel, b: &MagicTunnel) -> Ordering {
    let ts = |t: &MagicTunnel| t.metadata.creation_timestamp.as_ref().map(|c| c.0);
    ts(a)
        .cmp(&ts(b))
        .then_with(|| a.namespace().cmp(&b.namespace()))
        .then_with(|| a.name_any().cmp(&b.name_any()))
}

fn same_object(a: &MagicTunnel, b: &MagicTunnel) -> bool {
    a.namespace() == b.namespace() && a.name_any() == b.name_any()
}

fn parse_ipv4(field: &str, s: &str) -> Result<Ipv4Addr, Invalid> {
    s.parse().map_err(|_| {
        invalid(
            Reason::InvalidSpec,
            format!("{field}: {s:?} is not an IPv4 address"),
        )
    })
}

fn endpoints(t: &MagicTunnel) -> Option<(Ipv4Addr, Option<Ipv4Addr>)> {
    let local = t.spec.local_endpoint.parse().ok()?;
    let customer = match &t.spec.customer_endpoint {
        Some(c) => Some(c.parse().ok()?),
        None => None,
    };
    Some((local, customer))
}

/// Validate `mt` against its own rules and the other tunnels in `all` (which may include `mt`).
pub fn validate(
    mt: &MagicTunnel,
    all: &[&MagicTunnel],
    settings: &Settings,
) -> Result<ValidatedTunnel, Invalid> {
    let name = mt.name_any();
    let namespace = mt.namespace().unwrap_or_default();
    if name.len() > MAX_NAME_LEN {
        return Err(invalid(
            Reason::InvalidSpec,
            format!("metadata.name must be at most {MAX_NAME_LEN} characters"),
        ));
    }
    let uid = mt.uid().unwrap_or_default();
    let tunnel_id = ike_id::tunnel_id(&uid).ok_or_else(|| {
        invalid(
            Reason::InvalidSpec,
            format!("metadata.uid {uid:?} is not a UUID"),
        )
    })?;
    let spec = &mt.spec;
    let local_endpoint = parse_ipv4("localEndpoint", &spec.local_endpoint)?;
    let customer_endpoint = spec
        .customer_endpoint
        .as_deref()
        .map(|c| parse_ipv4("customerEndpoint", c))
        .transpose()?;
    let interface_address: Ipv4Net = spec.interface_address.parse().map_err(|_| {
        invalid(
            Reason::InvalidSpec,
            format!(
                "interfaceAddress: {:?} is not an IPv4 address with a prefix",
                spec.interface_address
            ),
        )
    })?;
    config::check_interface_address(interface_address)
        .map_err(|m| invalid(Reason::InvalidSpec, format!("interfaceAddress: {m}")))?;
    let routes = spec
        .routes
        .iter()
        .map(|r| {
            let prefix: Ipv4Net = r.prefix.parse().map_err(|_| {
                invalid(
                    Reason::InvalidSpec,
                    format!("routes: {:?} is not an IPv4 prefix", r.prefix),
                )
            })?;
            Ok(Route {
                prefix,
                metric: r.metric,
            })
        })
        .collect::<Result<Vec<_>, Invalid>>()?;

    let others: Vec<&MagicTunnel> = all
        .iter()
        .copied()
        .filter(|o| !same_object(o, mt) && o.metadata.deletion_timestamp.is_none())
        .collect();

    if spec.tunnel_type == TunnelType::Gre {
        check_gre_conflicts(mt, local_endpoint, customer_endpoint, &others)?;
    }
    let ipsec = match (&spec.tunnel_type, &spec.ipsec) {
        (TunnelType::Ipsec, ipsec) => Some(validate_ipsec(
            mt,
            ipsec.clone().unwrap_or_default(),
            (local_endpoint, customer_endpoint),
            &tunnel_id,
            &others,
            settings,
        )?),
        (TunnelType::Gre, _) => None,
    };

    Ok(ValidatedTunnel {
        name,
        namespace,
        uid,
        tunnel_id,
        tunnel_type: spec.tunnel_type,
        local_endpoint,
        customer_endpoint,
        interface_address,
        mtu: spec.mtu,
        ttl: spec.ttl.unwrap_or(config::DEFAULT_TTL),
        mss_clamp: spec.mss_clamp.unwrap_or_default(),
        routes,
        health_check: spec.health_check.unwrap_or_default(),
        replicas: spec.replicas.unwrap_or(1),
        node_selector: spec
            .placement
            .as_ref()
            .map(|p| p.node_selector.clone())
            .unwrap_or_default(),
        tolerations: spec
            .placement
            .as_ref()
            .map(|p| p.tolerations.clone())
            .unwrap_or_default(),
        gre: spec.gre,
        ipsec,
        http_port: allocate_http_port(mt, &others, settings),
    })
}

/// GRE is stateless: a frame is matched to a tunnel by (local, customer, key) alone. Two tunnels
/// with the same triple cannot be told apart; the older one keeps it.
fn check_gre_conflicts(
    mt: &MagicTunnel,
    local: Ipv4Addr,
    customer: Option<Ipv4Addr>,
    others: &[&MagicTunnel],
) -> Result<(), Invalid> {
    let key = mt.spec.gre.and_then(|g| g.key);
    let older_twin = others.iter().find(|o| {
        o.spec.tunnel_type == TunnelType::Gre
            && endpoints(o) == Some((local, customer))
            && o.spec.gre.and_then(|g| g.key) == key
            && age_order(o, mt) == Ordering::Less
    });
    match older_twin {
        Some(o) => Err(invalid(
            Reason::EndpointConflict,
            format!(
                "GRE tunnel {}/{} already uses local endpoint {local}, customer endpoint {} and the same GRE key; \
                 frames of the two tunnels cannot be told apart (set a different gre.key on both routers)",
                o.namespace().unwrap_or_default(),
                o.name_any(),
                customer.map(|c| c.to_string()).unwrap_or_default(),
            ),
        )),
        None => Ok(()),
    }
}

fn validate_ipsec(
    mt: &MagicTunnel,
    ipsec: crate::crd::IpsecSpec,
    (local, customer): (Ipv4Addr, Option<Ipv4Addr>),
    tunnel_id: &str,
    others: &[&MagicTunnel],
    settings: &Settings,
) -> Result<ValidatedIpsec, Invalid> {
    // ID_IPV4_ADDR names the customer endpoint, so it identifies a tunnel only while no other
    // IPsec tunnel shares the (local, customer) pair.
    let shared_with: Vec<&&MagicTunnel> = others
        .iter()
        .filter(|o| {
            o.spec.tunnel_type == TunnelType::Ipsec
                && customer.is_some()
                && endpoints(o) == Some((local, customer))
        })
        .collect();
    let unique_customer = if shared_with.is_empty() {
        customer
    } else {
        None
    };
    let identities = Identities::new(
        tunnel_id,
        &settings.account_id,
        &settings.ike_id_domain,
        unique_customer,
    );
    let requested = ipsec
        .accepted_ike_id_types
        .clone()
        .unwrap_or_else(|| IkeIdType::ALL.to_vec());
    // Keep the requested order, drop repeats and formats this tunnel does not have.
    let mut seen = BTreeSet::new();
    let accepted_id_types: Vec<IkeIdType> = requested
        .iter()
        .copied()
        .filter(|t| seen.insert(*t) && identities.get(*t).is_some())
        .collect();
    if accepted_id_types.is_empty() {
        let names: Vec<String> = shared_with
            .iter()
            .map(|o| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any()))
            .collect();
        return Err(invalid(
            Reason::IkeIdAmbiguous,
            format!(
                "the only accepted IKE ID type is IPv4Addr, but tunnels {} share local endpoint {local} and customer endpoint {}; \
                 the peer cannot be told apart: accept RFC822Addr, FQDN or KeyID too",
                names.join(", "),
                customer.map(|c| c.to_string()).unwrap_or_default(),
            ),
        ));
    }
    let psk = match &ipsec.psk_secret_ref {
        Some(r) => PskSource::Adopted {
            secret: r.name.clone(),
            key: r.key.clone().unwrap_or_else(|| PSK_KEY.to_string()),
        },
        None => PskSource::Generated {
            secret: psk::generated_secret_name(&mt.name_any()),
            rotation: mt.annotations().get(ROTATE_PSK_ANNOTATION).cloned(),
        },
    };
    Ok(ValidatedIpsec {
        psk,
        identities,
        accepted_id_types,
        replay_protection: ipsec.replay_protection.unwrap_or(false),
        allow_null_cipher: ipsec.allow_null_cipher.unwrap_or(false),
        proposals: ipsec.proposals.unwrap_or_default(),
        lifetimes: ipsec.lifetimes.unwrap_or_default(),
        local_id: ipsec.local_id.map(|l| IkeId {
            id_type: l.id_type,
            value: l.value,
        }),
    })
}

/// Every tunnel pod runs on the host network, so two tunnels on one node need different HTTP
/// ports. The assignment is global and deterministic, so that concurrent reconciles of different
/// tunnels agree even before either has recorded its port: oldest first, a tunnel keeps the port
/// recorded in its status unless an older tunnel holds it; then, oldest first, each tunnel
/// without a port takes the lowest free one. Pods also declare the port as a hostPort, so the
/// scheduler never co-locates two pods that hold the same one.
pub fn allocate_http_port(mt: &MagicTunnel, others: &[&MagicTunnel], settings: &Settings) -> u16 {
    let port_of = |t: &MagicTunnel| t.status.as_ref().and_then(|s| s.http_port);
    let in_range = |p: u16| {
        p >= settings.http_port_base
            && u32::from(p)
                < u32::from(settings.http_port_base) + u32::from(settings.http_port_count)
    };
    let mut all: Vec<&MagicTunnel> = others.to_vec();
    all.push(mt);
    all.sort_by(|a, b| age_order(a, b));
    let mut taken = BTreeSet::new();
    let mut waiting = Vec::new();
    for t in &all {
        match port_of(t).filter(|p| in_range(*p) && !taken.contains(p)) {
            Some(p) => {
                taken.insert(p);
                if same_object(t, mt) {
                    return p;
                }
            }
            None => waiting.push(*t),
        }
    }
    let mut free = (0..settings.http_port_count)
        .filter_map(|i| settings.http_port_base.checked_add(i))
        .filter(|p| !taken.contains(p));
    for t in waiting {
        let port = free.next();
        if same_object(t, mt) {
            // Range exhausted: share the base port; the hostPort keeps such pods apart.
            return port.unwrap_or(settings.http_port_base);
        }
    }
    settings.http_port_base
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::MagicTunnelStatus;
    use crate::fixtures::{gre_tunnel, ipsec_tunnel};

    fn settings() -> Settings {
        Settings::example()
    }

    #[test]
    fn gre_tunnel_validates_into_typed_values() {
        let t = gre_tunnel("branch-1", 1);
        let v = validate(&t, &[&t], &settings()).expect("valid");
        assert_eq!(v.local_endpoint, Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(v.customer_endpoint, Some(Ipv4Addr::new(198, 51, 100, 2)));
        assert_eq!(v.tunnel_id.len(), 32);
        assert_eq!(v.ttl, 64);
        assert_eq!(v.replicas, 1);
        assert_eq!(v.http_port, 9180);
        assert!(v.ipsec.is_none());
    }

    #[test]
    fn gre_twins_conflict_and_the_older_wins() {
        let old = gre_tunnel("old", 1);
        let mut new = gre_tunnel("new", 2);
        new.spec.customer_endpoint = old.spec.customer_endpoint.clone();
        let all = [&old, &new];
        assert!(validate(&old, &all, &settings()).is_ok());
        let err = validate(&new, &all, &settings()).expect_err("conflict");
        assert_eq!(err.reason, Reason::EndpointConflict);
        assert!(err.message.contains("default/old"), "{}", err.message);
        // A distinct GRE key tells them apart.
        new.spec.gre = Some(GreOptions { key: Some(7) });
        assert!(validate(&new, &[&old, &new], &settings()).is_ok());
    }

    #[test]
    fn deleted_tunnels_do_not_conflict() {
        let mut old = gre_tunnel("old", 1);
        let mut new = gre_tunnel("new", 2);
        new.spec.customer_endpoint = old.spec.customer_endpoint.clone();
        old.metadata.deletion_timestamp = old.metadata.creation_timestamp.clone();
        assert!(validate(&new, &[&old, &new], &settings()).is_ok());
    }

    #[test]
    fn ipv4_id_only_while_the_endpoint_pair_is_unique() {
        let a = ipsec_tunnel("a", 1, Some("198.51.100.9"));
        let v = validate(&a, &[&a], &settings()).expect("valid");
        let ipsec = v.ipsec.expect("ipsec");
        assert!(ipsec.accepted_id_types.contains(&IkeIdType::Ipv4Addr));
        assert_eq!(
            ipsec.identities.ipv4_addr,
            Some(Ipv4Addr::new(198, 51, 100, 9))
        );

        let b = ipsec_tunnel("b", 2, Some("198.51.100.9"));
        for t in [&a, &b] {
            let v = validate(t, &[&a, &b], &settings()).expect("still valid");
            let ipsec = v.ipsec.expect("ipsec");
            assert!(!ipsec.accepted_id_types.contains(&IkeIdType::Ipv4Addr));
            assert_eq!(ipsec.identities.ipv4_addr, None);
            assert_eq!(ipsec.accepted_id_types.len(), 3);
        }
        // Without a customer endpoint there is no IPv4 identity at all.
        let c = ipsec_tunnel("c", 3, None);
        let v = validate(&c, &[&a, &b, &c], &settings()).expect("valid");
        assert_eq!(v.ipsec.expect("ipsec").identities.ipv4_addr, None);
    }

    #[test]
    fn ipv4_only_tunnels_that_share_a_pair_are_reported() {
        let mut a = ipsec_tunnel("a", 1, Some("198.51.100.9"));
        let b = ipsec_tunnel("b", 2, Some("198.51.100.9"));
        if let Some(i) = a.spec.ipsec.as_mut() {
            i.accepted_ike_id_types = Some(vec![IkeIdType::Ipv4Addr]);
        }
        let err = validate(&a, &[&a, &b], &settings()).expect_err("ambiguous");
        assert_eq!(err.reason, Reason::IkeIdAmbiguous);
        assert!(err.message.contains("default/b"), "{}", err.message);
        assert!(validate(&a, &[&a], &settings()).is_ok());
    }

    #[test]
    fn psk_source() {
        let mut t = ipsec_tunnel("t", 1, None);
        let v = validate(&t, &[&t], &settings()).expect("valid");
        assert_eq!(
            v.ipsec.expect("ipsec").psk,
            PskSource::Generated {
                secret: "t-psk".into(),
                rotation: None
            }
        );
        t.spec.ipsec = Some(crate::crd::IpsecSpec {
            psk_secret_ref: Some(crate::crd::SecretKeyRef {
                name: "mine".into(),
                key: None,
            }),
            ..Default::default()
        });
        let v = validate(&t, &[&t], &settings()).expect("valid");
        assert_eq!(
            v.ipsec.expect("ipsec").psk,
            PskSource::Adopted {
                secret: "mine".into(),
                key: "psk".into()
            }
        );
    }

    #[test]
    fn slash_30_network_address_is_reported() {
        let mut t = gre_tunnel("t", 1);
        t.spec.interface_address = "10.0.0.0/30".into();
        let err = validate(&t, &[&t], &settings()).expect_err("invalid");
        assert_eq!(err.reason, Reason::InvalidSpec);
        assert!(err.message.contains("usable hosts"), "{}", err.message);
    }

    fn with_port(mut t: MagicTunnel, port: u16) -> MagicTunnel {
        t.status = Some(MagicTunnelStatus {
            http_port: Some(port),
            ..Default::default()
        });
        t
    }

    #[test]
    fn http_ports_are_stable_and_distinct() {
        let s = settings();
        let a = with_port(gre_tunnel("a", 1), 9180);
        let b = with_port(gre_tunnel("b", 2), 9182);
        let c = gre_tunnel("c", 3);
        assert_eq!(allocate_http_port(&c, &[&a, &b], &s), 9181);
        assert_eq!(allocate_http_port(&b, &[&a, &c], &s), 9182);
        // A newer tunnel that recorded a port an older one holds moves away.
        let d = with_port(gre_tunnel("d", 4), 9180);
        assert_eq!(allocate_http_port(&d, &[&a, &b], &s), 9181);
        assert_eq!(allocate_http_port(&a, &[&d, &b], &s), 9180);
        // A port outside the range is not kept.
        let e = with_port(gre_tunnel("e", 5), 80);
        assert_eq!(allocate_http_port(&e, &[], &s), 9180);
        // Two new tunnels reconciled concurrently agree before either has a status.
        let (x, y) = (gre_tunnel("x", 6), gre_tunnel("y", 7));
        assert_eq!(allocate_http_port(&x, &[&y], &s), 9180);
        assert_eq!(allocate_http_port(&y, &[&x], &s), 9181);
    }
}
