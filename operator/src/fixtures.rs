//! Tunnels for tests and benchmarks: deterministic names, UIDs and ages.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use magictunnel_types::config::TunnelType;

use crate::crd::{IpsecSpec, MagicTunnel, MagicTunnelSpec, RouteSpec};

/// A UID derived from the name, so that tests can predict tunnel IDs.
pub fn uid_for(name: &str) -> String {
    let mut h: u128 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u128::from(b)).wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    let hex = format!("{h:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn meta(name: &str, age_rank: i64) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some("default".to_string()),
        uid: Some(uid_for(name)),
        generation: Some(1),
        // Higher rank = created later.
        creation_timestamp: Timestamp::from_second(1_700_000_000 + age_rank)
            .ok()
            .map(Time),
        ..Default::default()
    }
}

/// A GRE tunnel whose customer endpoint (below rank 250) and route are unique per `age_rank`.
pub fn gre_tunnel(name: &str, age_rank: i64) -> MagicTunnel {
    let octet = age_rank.rem_euclid(250) + 1;
    MagicTunnel {
        metadata: meta(name, age_rank),
        spec: MagicTunnelSpec {
            tunnel_type: TunnelType::Gre,
            local_endpoint: "192.0.2.1".into(),
            customer_endpoint: Some(format!("198.51.100.{octet}")),
            interface_address: "10.200.0.0/31".into(),
            mtu: None,
            ttl: None,
            mss_clamp: None,
            // Unique per rank (below 61,440): tunnels of tests do not conflict by route.
            routes: vec![RouteSpec {
                prefix: format!(
                    "10.{}.{}.0/24",
                    10 + age_rank.div_euclid(256).rem_euclid(240),
                    age_rank.rem_euclid(256)
                ),
                metric: None,
            }],
            health_check: None,
            replicas: None,
            placement: None,
            gre: None,
            ipsec: None,
        },
        status: None,
    }
}

/// An IPsec tunnel with a generated PSK and the default accepted IKE ID types.
pub fn ipsec_tunnel(name: &str, age_rank: i64, customer: Option<&str>) -> MagicTunnel {
    let mut t = gre_tunnel(name, age_rank);
    t.spec.tunnel_type = TunnelType::Ipsec;
    t.spec.customer_endpoint = customer.map(str::to_string);
    t.spec.interface_address = "10.200.0.1/30".into();
    t.spec.ipsec = Some(IpsecSpec::default());
    t
}
