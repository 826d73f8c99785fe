//! Validation across objects: turns a raw `MagicTunnel` (plus the other tunnels the operator
//! knows) into a [`ValidatedTunnel`] with typed fields, or an [`Invalid`] reason for status.
//!
//! The API server has already applied the schema and CEL rules; what remains needs parsing into
//! typed values or other objects: GRE twins, IPsec tunnels whose peers cannot be told apart,
//! routes the kernel cannot hold twice, the port of each pod's HTTP endpoint. The other tunnels are seen through a [`TunnelIndex`], never scanned.
//! Nothing after this step reads the raw spec.

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
use crate::index::{self, Age, TunnelIndex};
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
    /// Accepted formats that exist for this tunnel (IPv4Addr only with a customer endpoint).
    pub accepted_id_types: Vec<IkeIdType>,
    pub replay_protection: bool,
    pub allow_null_cipher: bool,
    pub proposals: Proposals,
    pub lifetimes: Lifetimes,
    /// Our IDr; `None`: the local endpoint as ID_IPV4_ADDR.
    pub local_id: Option<IkeId>,
    /// `spec.ipsec.initiate`: dial the router.
    pub initiate: bool,
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

fn parse_ipv4(field: &str, s: &str) -> Result<Ipv4Addr, Invalid> {
    s.parse().map_err(|_| {
        invalid(
            Reason::InvalidSpec,
            format!("{field}: {s:?} is not an IPv4 address"),
        )
    })
}

/// Validate `mt` against its own rules and the other live tunnels of `others` (which may hold
/// `mt` itself, in this or another version).
pub fn validate(
    mt: &MagicTunnel,
    others: &TunnelIndex,
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

    match spec.tunnel_type {
        TunnelType::Gre => check_gre_conflicts(mt, local_endpoint, customer_endpoint, others)?,
        TunnelType::Ipsec => check_ipsec_peer(mt, local_endpoint, customer_endpoint, others)?,
    }
    check_route_conflicts(mt, &routes, others)?;
    let ipsec = match (&spec.tunnel_type, &spec.ipsec) {
        (TunnelType::Ipsec, ipsec) => Some(validate_ipsec(
            mt,
            ipsec.clone().unwrap_or_default(),
            customer_endpoint,
            &tunnel_id,
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
        http_port: others.http_port(mt),
    })
}

/// GRE is stateless: a frame is matched to a tunnel by (local, customer, key) alone. Two tunnels
/// with the same triple cannot be told apart; the older one keeps it.
fn check_gre_conflicts(
    mt: &MagicTunnel,
    local: Ipv4Addr,
    customer: Option<Ipv4Addr>,
    others: &TunnelIndex,
) -> Result<(), Invalid> {
    let key = mt.spec.gre.and_then(|g| g.key);
    match others.older_gre_twin(&Age::of(mt), &(local, customer, key)) {
        Some(o) => Err(invalid(
            Reason::EndpointConflict,
            format!(
                "GRE tunnel {o} already uses local endpoint {local}, customer endpoint {} and the same GRE key; \
                 frames of the two tunnels cannot be told apart (set a different gre.key on both routers)",
                customer.map(|c| c.to_string()).unwrap_or_default(),
            ),
        )),
        None => Ok(()),
    }
}

/// Many IPsec tunnels share a local endpoint's UDP 500 and 4500 on one node: each pod's sockets
/// are connected to its customer endpoint, so the kernel hands each peer's datagrams to its
/// own pod, and the one tunnel without a customer endpoint takes the peers nobody names. Two
/// tunnels with the same customer endpoint (the same 4-tuples), or two without one, cannot be
/// told apart; the older one keeps the peer. Checked across the whole cluster: the operator
/// cannot know which tunnels' pods will share a node.
fn check_ipsec_peer(
    mt: &MagicTunnel,
    local: Ipv4Addr,
    customer: Option<Ipv4Addr>,
    others: &TunnelIndex,
) -> Result<(), Invalid> {
    let Some(o) = others.older_ipsec_peer(&Age::of(mt), &(local, customer)) else {
        return Ok(());
    };
    Err(invalid(
        Reason::AmbiguousPeer,
        match customer {
            Some(c) => format!(
                "IPsec tunnel {o} already uses local endpoint {local} with customer endpoint {c}; \
                 the endpoint cannot tell the two tunnels' IKE and ESP traffic apart (same addresses and ports): \
                 give this tunnel a distinct customerEndpoint or localEndpoint"
            ),
            None => format!(
                "IPsec tunnel {o} is already the tunnel without customerEndpoint on local endpoint {local}; \
                 only one tunnel per local endpoint can take the peers it does not know in advance: \
                 set customerEndpoint (the router's address) or a distinct localEndpoint"
            ),
        },
    ))
}

/// Every tunnel pod installs its routes in the node's main table, and the kernel holds one
/// route per (prefix, metric): a second tunnel routing the same prefix with the same metric
/// cannot start on a node running the first. Checked across the whole cluster, GRE and IPsec
/// alike (the operator cannot know placement); the older tunnel keeps the route. The same prefix
/// with another metric is a backup route, which the kernel keeps beside the first.
fn check_route_conflicts(
    mt: &MagicTunnel,
    routes: &[Route],
    others: &TunnelIndex,
) -> Result<(), Invalid> {
    let mut keys: Vec<index::RouteKey> = routes
        .iter()
        .map(|r| index::route_key(r.prefix, r.metric))
        .collect();
    keys.sort();
    keys.dedup();
    match others.route_conflict(&Age::of(mt), &keys) {
        Some(((prefix, metric), o)) => Err(invalid(
            Reason::RouteConflict,
            format!(
                "tunnel {o} already routes {prefix} with metric {metric}; a node keeps one route per prefix and metric, \
                 so the two tunnels could not run on one node: give this route another metric (a backup route) or remove it"
            ),
        )),
        None => Ok(()),
    }
}

fn validate_ipsec(
    mt: &MagicTunnel,
    ipsec: crate::crd::IpsecSpec,
    customer: Option<Ipv4Addr>,
    tunnel_id: &str,
    settings: &Settings,
) -> Result<ValidatedIpsec, Invalid> {
    // ID_IPV4_ADDR names the customer endpoint. It identifies the tunnel: a second IPsec tunnel
    // on the same (local, customer) pair is not deployed (AmbiguousPeer).
    let identities = Identities::new(
        tunnel_id,
        &settings.account_id,
        &settings.ike_id_domain,
        customer,
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
        // A CEL rule refuses this first; kept for objects stored before the rule.
        return Err(invalid(
            Reason::InvalidSpec,
            "ipsec.acceptedIkeIdTypes: the IPv4Addr IKE ID type needs customerEndpoint",
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
        initiate: ipsec.initiate.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::MagicTunnelStatus;
    use crate::fixtures::{gre_tunnel, ipsec_tunnel};

    fn settings() -> Settings {
        Settings::example()
    }

    fn ix(all: &[&MagicTunnel]) -> TunnelIndex {
        TunnelIndex::of(all.iter().copied(), &settings())
    }

    #[test]
    fn gre_tunnel_validates_into_typed_values() {
        let t = gre_tunnel("branch-1", 1);
        let v = validate(&t, &ix(&[&t]), &settings()).expect("valid");
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
        assert!(validate(&old, &ix(&all), &settings()).is_ok());
        let err = validate(&new, &ix(&all), &settings()).expect_err("conflict");
        assert_eq!(err.reason, Reason::EndpointConflict);
        assert!(err.message.contains("default/old"), "{}", err.message);
        // A distinct GRE key tells them apart.
        new.spec.gre = Some(GreOptions { key: Some(7) });
        assert!(validate(&new, &ix(&[&old, &new]), &settings()).is_ok());
    }

    #[test]
    fn deleted_tunnels_do_not_conflict() {
        let mut old = gre_tunnel("old", 1);
        let mut new = gre_tunnel("new", 2);
        new.spec.customer_endpoint = old.spec.customer_endpoint.clone();
        old.metadata.deletion_timestamp = old.metadata.creation_timestamp.clone();
        assert!(validate(&new, &ix(&[&old, &new]), &settings()).is_ok());
    }

    #[test]
    fn ipv4_id_with_a_customer_endpoint_and_a_shared_pair_is_ambiguous() {
        let a = ipsec_tunnel("a", 1, Some("198.51.100.9"));
        let b = ipsec_tunnel("b", 2, Some("198.51.100.9"));
        // The older keeps its pair and ID_IPV4_ADDR, with or without the younger.
        for all in [&[&a][..], &[&a, &b][..]] {
            let v = validate(&a, &ix(all), &settings()).expect("valid");
            let ipsec = v.ipsec.expect("ipsec");
            assert!(ipsec.accepted_id_types.contains(&IkeIdType::Ipv4Addr));
            assert_eq!(
                ipsec.identities.ipv4_addr,
                Some(Ipv4Addr::new(198, 51, 100, 9))
            );
        }
        let err = validate(&b, &ix(&[&a, &b]), &settings()).expect_err("ambiguous");
        assert_eq!(err.reason, Reason::AmbiguousPeer);
        assert!(
            err.message.contains("IPsec tunnel default/a"),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("customer endpoint 198.51.100.9"),
            "{}",
            err.message
        );
        assert!(
            err.message
                .contains("distinct customerEndpoint or localEndpoint"),
            "{}",
            err.message
        );
        // Without a customer endpoint there is no IPv4 identity at all.
        let c = ipsec_tunnel("c", 3, None);
        let v = validate(&c, &ix(&[&a, &b, &c]), &settings()).expect("valid");
        assert_eq!(v.ipsec.expect("ipsec").identities.ipv4_addr, None);
    }

    #[test]
    fn ipsec_peers_are_ambiguous_only_on_the_same_local_and_customer_endpoint() {
        let ok = |t: &MagicTunnel, all: &[&MagicTunnel]| validate(t, &ix(all), &settings());
        let a = ipsec_tunnel("a", 1, Some("198.51.100.9"));
        let b = ipsec_tunnel("b", 2, Some("198.51.100.10"));
        let c = ipsec_tunnel("c", 3, None);
        let d = ipsec_tunnel("d", 4, None);
        let all = [&a, &b, &c, &d];
        // Distinct customers, and one default tunnel beside them: all deployable.
        for t in [&a, &b, &c] {
            assert!(ok(t, &all).is_ok(), "{}", t.name_any());
        }
        // A second tunnel without customerEndpoint on the same local endpoint is not.
        let err = ok(&d, &all).expect_err("two defaults");
        assert_eq!(err.reason, Reason::AmbiguousPeer);
        assert!(err.message.contains("default/c"), "{}", err.message);
        assert!(
            err.message.contains("set customerEndpoint"),
            "{}",
            err.message
        );
        // On another local endpoint it is.
        let mut d2 = d.clone();
        d2.spec.local_endpoint = "192.0.2.77".into();
        assert!(ok(&d2, &[&a, &b, &c, &d2]).is_ok());
        // A GRE tunnel on the same pair does not matter to IPsec (protocol 47, not UDP).
        let mut g = gre_tunnel("g", 0);
        g.spec.customer_endpoint = a.spec.customer_endpoint.clone();
        assert!(ok(&a, &[&g, &a]).is_ok());
        // A deleted older tunnel does not hold its peer.
        let mut c_gone = c.clone();
        c_gone.metadata.deletion_timestamp = c.metadata.creation_timestamp.clone();
        assert!(ok(&d, &[&c_gone, &d]).is_ok());
    }

    #[test]
    fn a_route_with_the_same_prefix_and_metric_as_an_older_tunnel_conflicts() {
        use crate::crd::RouteSpec;
        let route = |prefix: &str, metric: Option<u32>| RouteSpec {
            prefix: prefix.into(),
            metric,
        };
        let mut old = gre_tunnel("old", 1);
        old.spec.routes = vec![route("10.50.0.0/16", None), route("10.60.0.0/16", Some(5))];
        // An IPsec tunnel elsewhere: routes conflict across types and endpoints.
        let mut new = ipsec_tunnel("new", 2, Some("198.51.100.77"));
        new.spec.local_endpoint = "192.0.2.99".into();
        // No metric is metric 0.
        new.spec.routes = vec![route("10.70.0.0/16", None), route("10.50.0.0/16", Some(0))];
        let err = validate(&new, &ix(&[&old, &new]), &settings()).expect_err("conflict");
        assert_eq!(err.reason, Reason::RouteConflict);
        assert!(
            err.message
                .contains("tunnel default/old already routes 10.50.0.0/16 with metric 0"),
            "{}",
            err.message
        );
        assert!(validate(&old, &ix(&[&old, &new]), &settings()).is_ok());
        // Another metric is a backup route: fine.
        new.spec.routes = vec![
            route("10.50.0.0/16", Some(10)),
            route("10.60.0.0/16", Some(6)),
        ];
        assert!(validate(&new, &ix(&[&old, &new]), &settings()).is_ok());
        new.spec.routes = vec![route("10.60.0.0/16", Some(5))];
        let err = validate(&new, &ix(&[&old, &new]), &settings()).expect_err("conflict");
        assert!(
            err.message.contains("10.60.0.0/16 with metric 5"),
            "{}",
            err.message
        );
        // Without the older tunnel the route is free.
        assert!(validate(&new, &ix(&[&new]), &settings()).is_ok());
    }

    #[test]
    fn psk_source() {
        let mut t = ipsec_tunnel("t", 1, None);
        let v = validate(&t, &ix(&[&t]), &settings()).expect("valid");
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
        let v = validate(&t, &ix(&[&t]), &settings()).expect("valid");
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
        let err = validate(&t, &ix(&[&t]), &settings()).expect_err("invalid");
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
        assert_eq!(TunnelIndex::of([&a, &b], &s).http_port(&c), 9181);
        assert_eq!(TunnelIndex::of([&a, &c], &s).http_port(&b), 9182);
        // The same from an index that holds the tunnel itself.
        assert_eq!(TunnelIndex::of([&a, &b, &c], &s).http_port(&c), 9181);
        // A newer tunnel that recorded a port an older one holds moves away.
        let d = with_port(gre_tunnel("d", 4), 9180);
        assert_eq!(TunnelIndex::of([&a, &b], &s).http_port(&d), 9181);
        assert_eq!(TunnelIndex::of([&d, &b], &s).http_port(&a), 9180);
        // A port outside the range is not kept.
        let e = with_port(gre_tunnel("e", 5), 80);
        assert_eq!(TunnelIndex::of([], &s).http_port(&e), 9180);
        // Two new tunnels reconciled concurrently agree before either has a status: both
        // read the one index.
        let (x, y) = (gre_tunnel("x", 6), gre_tunnel("y", 7));
        let both = TunnelIndex::of([&y, &x], &s);
        assert_eq!(both.http_port(&x), 9180);
        assert_eq!(both.http_port(&y), 9181);
    }
}
