//! The `MagicTunnel` custom resource (`magictunnel.dev/v1alpha1`).
//!
//! The schema validates on its own: the API server refuses a bad object with the messages written
//! here (OpenAPI ranges and enums, CEL `x-kubernetes-validations`), before the operator sees it.
//! Rules that need other objects (endpoint conflicts, Secrets) live in `validate`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use magictunnel_types::config::{
    GreOptions, HealthCheck, IkeIdType, Lifetimes, MssClamp, Proposals, TunnelType,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "magictunnel.dev";
/// Longest name: the tunnel's pods (`<name>-<n>`), Secrets (`<name>-psk`, `<name>-config`) and
/// label values (63 characters) are derived from it.
pub const MAX_NAME_LEN: usize = 50;
pub const MAX_REPLICAS: i32 = 16;
/// Annotation whose every new value makes the operator generate a new PSK.
pub const ROTATE_PSK_ANNOTATION: &str = "magictunnel.dev/rotate-psk";

/// A GRE or IPsec site-to-site tunnel terminated in the cluster.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "magictunnel.dev",
    version = "v1alpha1",
    kind = "MagicTunnel",
    plural = "magictunnels",
    shortname = "mt",
    category = "magictunnel",
    namespaced,
    status = "MagicTunnelStatus",
    derive = "PartialEq",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Local", type_ = "string", json_path = ".spec.localEndpoint"),
    printcolumn(name = "Customer", type_ = "string", json_path = ".spec.customerEndpoint"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Established",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Established\")].status"
    ),
    printcolumn(
        name = "Healthy",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Healthy\")].status"
    ),
    printcolumn(
        name = "Synchronized",
        type_ = "string",
        description = "Anycast IPsec: every ready replica carries the current shared SAs",
        priority = "1",
        json_path = ".status.conditions[?(@.type==\"Synchronized\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 50")
        .message("metadata.name must be at most 50 characters: it names the tunnel's pods and Secrets")
)]
#[x_kube(
    validation = Rule::new("self.type != 'GRE' || has(self.customerEndpoint)")
        .message("customerEndpoint is required for GRE tunnels")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("!has(self.ipsec) || self.type == 'IPsec'")
        .message("the ipsec block is only allowed when type is IPsec"),
    validation = Rule::new("!has(self.gre) || self.type == 'GRE'")
        .message("the gre block is only allowed when type is GRE"),
    validation = Rule::new("!has(self.customerEndpoint) || self.customerEndpoint != self.localEndpoint")
        .message("customerEndpoint must differ from localEndpoint"),
    validation = Rule::new("!has(self.ipsec) || !has(self.ipsec.initiate) || !self.ipsec.initiate || has(self.customerEndpoint)")
        .message("ipsec.initiate: true needs customerEndpoint: the endpoint dials the router at that address")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("!has(self.ipsec) || !has(self.ipsec.acceptedIkeIdTypes) || !self.ipsec.acceptedIkeIdTypes.exists(t, t == 'IPv4Addr') || has(self.customerEndpoint)")
        .message("the IPv4Addr IKE ID type needs customerEndpoint: it is the customer endpoint address"),
    validation = Rule::new("!has(self.mssClamp) || (has(self.mssClamp.mode) && self.mssClamp.mode == 'Fixed') == has(self.mssClamp.value)")
        .message("mssClamp.value is required when mode is Fixed and not allowed otherwise"),
    validation = Rule::new("!has(self.mssClamp) || !has(self.mssClamp.value) || !has(self.mtu) || self.mssClamp.value <= self.mtu - 40")
        .message("mssClamp.value must be at most mtu - 40"),
)]
#[serde(rename_all = "camelCase")]
pub struct MagicTunnelSpec {
    /// Encapsulation: GRE or IPsec. Immutable.
    #[serde(rename = "type")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("type is immutable: delete the tunnel and create it again"))]
    pub tunnel_type: TunnelType,

    /// Our (anycast) tunnel endpoint address: the source of outer packets.
    #[x_kube(validation = Rule::new("isIP(self) && ip(self).family() == 4")
        .message("localEndpoint must be an IPv4 address such as 192.0.2.1"))]
    #[schemars(length(max = 15))]
    pub local_endpoint: String,

    /// The customer's router public address. Required for GRE; optional for IPsec (then any
    /// peer that authenticates is accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isIP(self) && ip(self).family() == 4")
        .message("customerEndpoint must be an IPv4 address such as 198.51.100.7"))]
    #[schemars(length(max = 15))]
    pub customer_endpoint: Option<String>,

    /// Our address on the tunnel interface with its prefix: a /31 or a /30, e.g. 10.200.0.0/31.
    #[x_kube(validation = Rule::new("isCIDR(self) && cidr(self).ip().family() == 4 && (cidr(self).prefixLength() == 31 || cidr(self).prefixLength() == 30)")
        .message("interfaceAddress must be an IPv4 address with a /31 or /30 prefix, e.g. 10.200.0.0/31"))]
    #[schemars(length(max = 18))]
    pub interface_address: String,

    /// Tunnel interface MTU. Default 1476 for GRE (1472 with a key), 1400 for IPsec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 576, max = 1500))]
    pub mtu: Option<u16>,

    /// TTL of the outer packets. Default 64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 255))]
    pub ttl: Option<u8>,

    /// TCP MSS clamping of SYN and SYN-ACK in both directions. Default: Auto (MTU − 40).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mss_clamp: Option<MssClamp>,

    /// Prefixes routed into the tunnel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub routes: Vec<RouteSpec>,

    /// ICMP health checks through the tunnel. Default: enabled, Reply, Bidirectional, Mid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,

    /// Number of endpoint pods, each on its own node (anycast). Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16))]
    pub replicas: Option<i32>,

    /// Where the endpoint pods may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,

    /// GRE options (type GRE only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gre: Option<GreOptions>,

    /// IPsec options (type IPsec only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipsec: Option<IpsecSpec>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec {
    /// IPv4 prefix in CIDR notation, e.g. 10.10.0.0/16.
    #[x_kube(validation = Rule::new("isCIDR(self) && cidr(self).ip().family() == 4 && cidr(self) == cidr(self).masked()")
        .message("route prefix must be an IPv4 network with no host bits set, e.g. 10.10.0.0/16"))]
    #[schemars(length(max = 18))]
    pub prefix: String,
    /// Route metric (lower is preferred).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tolerations: Vec<Toleration>,
}

/// A key of a Secret in the tunnel's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$') && self.size() <= 253")
        .message("pskSecretRef.name must be a Secret name (lowercase letters, digits, '-' and '.')"))]
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret. Default `psk`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub key: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(
    validation = Rule::new("!has(self.proposals) || !has(self.proposals.esp) || !has(self.proposals.esp.encryption) || !self.proposals.esp.encryption.exists(e, e == 'NULL') || (has(self.allowNullCipher) && self.allowNullCipher)")
        .message("NULL encryption in proposals.esp.encryption requires allowNullCipher: true"),
    validation = Rule::new("!has(self.proposals) || !has(self.proposals.ike) || !has(self.proposals.ike.integrity) || !self.proposals.ike.integrity.exists(i, i == 'HMAC-SHA1-96')")
        .message("HMAC-SHA1-96 is only allowed for Child SAs (proposals.esp.integrity)"),
    validation = Rule::new("!has(self.lifetimes) || !has(self.lifetimes.childSeconds) || !has(self.lifetimes.ikeSeconds) || self.lifetimes.childSeconds < self.lifetimes.ikeSeconds")
        .message("lifetimes.childSeconds must be shorter than lifetimes.ikeSeconds"),
)]
#[serde(rename_all = "camelCase")]
pub struct IpsecSpec {
    /// The PSK: a key of an existing Secret (adopted, never modified). Without it the operator
    /// generates a random PSK into an owned Secret `<name>-psk`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psk_secret_ref: Option<SecretKeyRef>,

    /// IKE identity formats accepted from the peer. Default: all four. IPv4Addr is accepted only
    /// while the (localEndpoint, customerEndpoint) pair is unique among IPsec tunnels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub accepted_ike_id_types: Option<Vec<IkeIdType>>,

    /// Drop replayed ESP packets (RFC 4303 §3.4.3). Default false, as Magic WAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_protection: Option<bool>,

    /// Allow ESP NULL encryption (integrity only). Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_null_cipher: Option<bool>,

    /// Allow-lists of algorithms; unset lists mean every supported one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposals: Option<Proposals>,

    /// SA lifetimes. Default: IKE 24 h, Child 8 h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetimes: Option<Lifetimes>,

    /// The identity the endpoint presents (IDr, or IDi when it initiates). Default:
    /// `localEndpoint` as IPv4Addr, which is what router configurations usually match as the
    /// tunnel's remote identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_id: Option<LocalIkeId>,

    /// Initiator mode: the endpoint dials the router (IKE_SA_INIT to customerEndpoint, UDP
    /// 500), retries with back-off (1 s doubling to 30 s without an answer, 10 s doubling to
    /// 5 min after AUTHENTICATION_FAILED or NO_PROPOSAL_CHOSEN) and dials again when the IKE SA
    /// is lost (DPD, a Delete from the router). It still answers the router's own initiation.
    /// Requires customerEndpoint. Default false: respond only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiate: Option<bool>,
}

/// Our own IKE identity.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("self.type != 'IPv4Addr' || (isIP(self.value) && ip(self.value).family() == 4)")
        .message("localId.value must be an IPv4 address when localId.type is IPv4Addr"),
)]
#[serde(rename_all = "camelCase")]
pub struct LocalIkeId {
    #[serde(rename = "type")]
    pub id_type: IkeIdType,
    /// e.g. `vpn.example.com` (FQDN), `ipsec@vpn.example.com` (RFC822Addr), `key-1` (KeyID).
    #[schemars(length(min = 1, max = 253))]
    pub value: String,
}

/// What the operator observed and decided.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MagicTunnelStatus {
    /// The object's UID without dashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_id: Option<String>,
    /// IKE identities accepted from the peer (IPsec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ike_ids: Option<IkeIds>,
    /// Secret holding the PSK (IPsec). The key itself is never shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psk_secret_name: Option<String>,
    /// When the operator generated the PSK (absent for an adopted one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psk_generated_at: Option<String>,
    /// Port of each endpoint pod's `/healthz`, `/readyz`, `/metrics` and `/status` on its node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointStatus>,
    /// Configured, Ready, Degraded, Established and Healthy, and Synchronized for IPsec tunnels
    /// whose replicas share SAs (see the operator's `conditions` module for every reason).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IkeIds {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rfc822_addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fqdn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_addr: Option<String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EndpointStatus {
    pub pod: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    pub ready: bool,
    /// Anycast IPsec (replicas sharing SAs): whether this replica talks IKE for the tunnel
    /// (the `owner` of the shared state in the `<tunnel>-sa` Secret). Absent for other tunnels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ike_owner: Option<bool>,
    /// Anycast IPsec: the generation of the shared SA state this replica last installed (its
    /// entry in the Secret's `acks.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed_generation: Option<u64>,
    /// Anycast IPsec: the Child SAs this replica carries, as `<inbound SPI>/<outbound SPI>` in
    /// hex (SPIs only, never keys): those of the current generation once the replica installed
    /// it, none while it lags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub child_spis: Vec<String>,
}

/// The CRD as YAML, exactly as committed in `crds/magictunnel.yaml`.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let body = serde_yaml::to_string(&MagicTunnel::crd()).unwrap_or_default();
    format!("# Generated by `cargo run -p magictunnel-operator -- crd`. Do not edit.\n{body}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;
    use serde_json::json;

    fn tunnel(spec: serde_json::Value) -> MagicTunnel {
        let obj = json!({
            "apiVersion": "magictunnel.dev/v1alpha1",
            "kind": "MagicTunnel",
            "metadata": {"name": "branch-1", "namespace": "default"},
            "spec": spec,
        });
        serde_json::from_value(obj).expect("valid object shape")
    }

    fn gre() -> serde_json::Value {
        json!({
            "type": "GRE",
            "localEndpoint": "192.0.2.1",
            "customerEndpoint": "198.51.100.7",
            "interfaceAddress": "10.200.0.0/31",
            "routes": [{"prefix": "10.10.0.0/16"}],
        })
    }

    fn ipsec() -> serde_json::Value {
        json!({
            "type": "IPsec",
            "localEndpoint": "192.0.2.1",
            "interfaceAddress": "10.200.0.1/30",
            "ipsec": {"acceptedIkeIdTypes": ["FQDN", "KeyID"]},
        })
    }

    /// Every CEL rule failure message for this object (empty when it is accepted).
    fn cel_errors(mt: &MagicTunnel) -> String {
        match kube::core::cel::validate_cel(mt) {
            Ok(()) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    fn with(
        mut base: serde_json::Value,
        path: &[&str],
        value: serde_json::Value,
    ) -> serde_json::Value {
        let mut cur = &mut base;
        for key in &path[..path.len() - 1] {
            cur = &mut cur[*key];
        }
        cur[path[path.len() - 1]] = value;
        base
    }

    #[test]
    fn crd_names_and_columns() {
        let crd = MagicTunnel::crd();
        assert_eq!(crd.spec.group, GROUP);
        assert_eq!(crd.spec.names.kind, "MagicTunnel");
        assert_eq!(crd.spec.names.short_names, Some(vec!["mt".to_string()]));
        assert_eq!(crd.spec.scope, "Namespaced");
        let v = &crd.spec.versions[0];
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let cols: Vec<_> = v
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            cols,
            [
                "Type",
                "Local",
                "Customer",
                "Ready",
                "Established",
                "Healthy",
                "Synchronized",
                "Age"
            ]
        );
    }

    #[test]
    fn good_objects_pass_every_rule() {
        assert_eq!(cel_errors(&tunnel(gre())), "");
        assert_eq!(cel_errors(&tunnel(ipsec())), "");
    }

    #[test]
    fn cel_rules_refuse_bad_objects_with_readable_messages() {
        let cases = [
            (
                with(gre(), &["customerEndpoint"], json!(null)),
                "customerEndpoint is required for GRE",
            ),
            (
                with(gre(), &["localEndpoint"], json!("192.0.2")),
                "localEndpoint must be an IPv4 address",
            ),
            (
                with(gre(), &["localEndpoint"], json!("2001:db8::1")),
                "localEndpoint must be an IPv4 address",
            ),
            (
                with(gre(), &["customerEndpoint"], json!("192.0.2.1")),
                "must differ from localEndpoint",
            ),
            (
                with(gre(), &["interfaceAddress"], json!("10.200.0.0/24")),
                "/31 or /30",
            ),
            (
                with(gre(), &["interfaceAddress"], json!("10.200.0.0")),
                "/31 or /30",
            ),
            (
                with(gre(), &["routes"], json!([{"prefix": "10.10.0.1/16"}])),
                "no host bits",
            ),
            (
                with(gre(), &["ipsec"], json!({})),
                "only allowed when type is IPsec",
            ),
            (
                with(ipsec(), &["gre"], json!({"key": 1})),
                "only allowed when type is GRE",
            ),
            (
                with(gre(), &["mssClamp"], json!({"mode": "Fixed"})),
                "mssClamp.value is required",
            ),
            (
                with(gre(), &["mssClamp"], json!({"mode": "Auto", "value": 1300})),
                "mssClamp.value is required",
            ),
            (
                with(
                    with(
                        gre(),
                        &["mssClamp"],
                        json!({"mode": "Fixed", "value": 1400}),
                    ),
                    &["mtu"],
                    json!(1400),
                ),
                "at most mtu - 40",
            ),
            (
                with(
                    ipsec(),
                    &["ipsec", "acceptedIkeIdTypes"],
                    json!(["IPv4Addr"]),
                ),
                "needs customerEndpoint",
            ),
            (
                with(
                    ipsec(),
                    &["ipsec", "proposals"],
                    json!({"esp": {"encryption": ["NULL"]}}),
                ),
                "requires allowNullCipher",
            ),
            (
                with(ipsec(), &["ipsec", "initiate"], json!(true)),
                "ipsec.initiate: true needs customerEndpoint",
            ),
            (
                with(
                    ipsec(),
                    &["ipsec", "proposals"],
                    json!({"ike": {"integrity": ["HMAC-SHA1-96"]}}),
                ),
                "only allowed for Child SAs",
            ),
            (
                with(
                    ipsec(),
                    &["ipsec", "lifetimes"],
                    json!({"ikeSeconds": 3600, "childSeconds": 3600}),
                ),
                "childSeconds must be shorter",
            ),
        ];
        for (spec, expected) in cases {
            let errors = cel_errors(&tunnel(spec.clone()));
            assert!(
                errors.contains(expected),
                "{spec}: expected {expected:?}, got {errors:?}"
            );
        }
        let bad_local_id = with(
            ipsec(),
            &["ipsec", "localId"],
            json!({"type": "IPv4Addr", "value": "vpn.example.com"}),
        );
        assert!(
            cel_errors(&tunnel(bad_local_id)).contains("localId.value must be an IPv4 address"),
            "an FQDN as an IPv4Addr local ID must be refused"
        );
        let fqdn_local_id = with(
            ipsec(),
            &["ipsec", "localId"],
            json!({"type": "FQDN", "value": "vpn.example.com"}),
        );
        assert_eq!(cel_errors(&tunnel(fqdn_local_id)), "");
        let null_ok = with(
            with(
                ipsec(),
                &["ipsec", "proposals"],
                json!({"esp": {"encryption": ["NULL"]}}),
            ),
            &["ipsec", "allowNullCipher"],
            json!(true),
        );
        assert_eq!(cel_errors(&tunnel(null_ok)), "");
        let initiator = with(
            with(ipsec(), &["ipsec", "initiate"], json!(true)),
            &["customerEndpoint"],
            json!("198.51.100.7"),
        );
        assert_eq!(cel_errors(&tunnel(initiator)), "");
        let responder = with(ipsec(), &["ipsec", "initiate"], json!(false));
        assert_eq!(cel_errors(&tunnel(responder)), "");
    }

    #[test]
    fn long_names_are_refused() {
        let mut mt = tunnel(gre());
        mt.metadata.name = Some("a".repeat(MAX_NAME_LEN + 1));
        assert!(cel_errors(&mt).contains("at most 50 characters"));
        mt.metadata.name = Some("a".repeat(MAX_NAME_LEN));
        assert_eq!(cel_errors(&mt), "");
    }

    #[test]
    fn type_is_immutable() {
        let old = tunnel(gre());
        let mut new = old.clone();
        new.spec.tunnel_type = TunnelType::Ipsec;
        new.spec.gre = None;
        let err = kube::core::cel::validate_cel_update(&new, &old)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("type is immutable"), "{err}");
        assert!(kube::core::cel::validate_cel_update(&old, &old).is_ok());
    }

    #[test]
    fn schema_ranges_and_enums_are_present() {
        let crd = serde_json::to_value(MagicTunnel::crd()).expect("json");
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let num = |field: &str, bound: &str| spec["properties"][field][bound].as_f64();
        assert_eq!(num("mtu", "minimum"), Some(576.0));
        assert_eq!(num("mtu", "maximum"), Some(1500.0));
        assert_eq!(num("ttl", "minimum"), Some(1.0));
        assert_eq!(num("replicas", "maximum"), Some(16.0));
        assert_eq!(spec["properties"]["type"]["enum"], json!(["GRE", "IPsec"]));
        let required = spec["required"].as_array().expect("required");
        for field in ["type", "localEndpoint", "interfaceAddress"] {
            assert!(required.contains(&json!(field)), "{field} must be required");
        }
    }
}
