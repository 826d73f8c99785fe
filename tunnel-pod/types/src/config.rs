//! The TunnelConfig contract: the YAML file the operator writes into the pod's config Secret and
//! that `tunnel-pod run --config FILE` reads (also written by hand for standalone use).
//!
//! The file is versioned (`apiVersion`/`kind`) and strict: unknown fields are refused, so a typo
//! never silently falls back to a default. [`TunnelConfig::validate`] applies the semantic rules
//! and names the offending field; the operator runs the same check on every file it builds, so a
//! pod never receives a config it would refuse.
//!
//! The small enums and structs here are shared with the `MagicTunnel` CRD (feature `schema`
//! derives their JSON Schema), so the API and the file cannot drift apart.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

pub use crate::algorithms::*;
pub use crate::psk::{MAX_PSK_BYTES, PskError, PskFileError, psk_from_bytes, read_psk_file};
pub use crate::secret::Secret;
pub use crate::static_sa::*;

pub const API_VERSION: &str = "magictunnel.dev/v1alpha1";
pub const KIND: &str = "TunnelConfig";

/// GRE adds a 20-byte outer IPv4 header and a 4-byte GRE header (RFC 2784) to 1500.
pub const GRE_DEFAULT_MTU: u16 = 1476;
/// A GRE key (RFC 2890) adds 4 more bytes; without this the outer packet would be fragmented.
pub const GRE_KEYED_DEFAULT_MTU: u16 = 1472;
/// IPsec default: leaves room for UDP-encapsulated ESP with every seed suite (see DESIGN.md).
pub const IPSEC_DEFAULT_MTU: u16 = 1400;
pub const DEFAULT_TTL: u8 = 64;
pub const MIN_MTU: u16 = 576;
pub const MAX_MTU: u16 = 1500;
/// A PSK shorter than this is refused (weak against offline guessing of the AUTH payload).
pub const MIN_PSK_LEN: usize = 16;
pub const MAX_ROUTES: usize = 256;
pub const DEFAULT_HTTP_PORT: u16 = 9180;
pub const DEFAULT_REPLAY_WINDOW: u32 = 1024;

/// Tunnel encapsulation.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum TunnelType {
    #[serde(rename = "GRE")]
    Gre,
    #[serde(rename = "IPsec")]
    Ipsec,
}

impl fmt::Display for TunnelType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TunnelType::Gre => "GRE",
            TunnelType::Ipsec => "IPsec",
        })
    }
}

/// How TCP MSS is clamped on SYN and SYN-ACK crossing the tunnel.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum MssClampMode {
    /// MTU − 40 (IPv4 + TCP headers).
    #[default]
    Auto,
    /// The value in `value`.
    Fixed,
    /// Leave MSS untouched.
    Off,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MssClamp {
    #[serde(default)]
    pub mode: MssClampMode,
    /// MSS in bytes when `mode` is `Fixed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 536, max = 1460)))]
    pub value: Option<u16>,
}

impl MssClamp {
    /// The MSS to clamp to for a tunnel of this MTU, or `None` when clamping is off.
    pub fn effective(&self, mtu: u16) -> Option<u16> {
        match self.mode {
            MssClampMode::Auto => Some(mtu.saturating_sub(40)),
            MssClampMode::Fixed => self.value,
            MssClampMode::Off => None,
        }
    }
}

/// Who sends the ICMP echo requests of a health check (Magic WAN's terms).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum HealthCheckType {
    /// We send an echo *reply* addressed to ourselves through the tunnel; the customer's router
    /// routes it back. Works with routers that do not answer pings on the tunnel interface.
    #[default]
    Reply,
    /// We send an echo *request* to the customer's tunnel address and expect its reply.
    Request,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum HealthCheckDirection {
    /// Probes leave through the tunnel and return through it.
    #[default]
    Bidirectional,
    /// Probes leave through the tunnel and may return another way.
    Unidirectional,
}

/// Probe rate: Magic WAN's low / mid / high.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum HealthCheckRate {
    Low,
    #[default]
    Mid,
    High,
}

impl HealthCheckRate {
    /// Probes per second.
    pub fn per_second(self) -> u32 {
        match self {
            HealthCheckRate::Low => 1,
            HealthCheckRate::Mid => 5,
            HealthCheckRate::High => 10,
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default, rename = "type")]
    pub check_type: HealthCheckType,
    #[serde(default)]
    pub direction: HealthCheckDirection,
    #[serde(default)]
    pub rate: HealthCheckRate,
    /// Address probed; defaults to the customer's side of the interface subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Ipv4Addr>,
}

fn yes() -> bool {
    true
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            enabled: true,
            check_type: HealthCheckType::default(),
            direction: HealthCheckDirection::default(),
            rate: HealthCheckRate::default(),
            target: None,
        }
    }
}

/// IKE identification formats accepted from the peer (RFC 7296 §3.5).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum IkeIdType {
    /// ID_RFC822_ADDR `ipsec@<tunnel-id>.<account-id>.<domain>`
    #[serde(rename = "RFC822Addr")]
    Rfc822Addr,
    /// ID_FQDN `<tunnel-id>.<account-id>.<domain>`
    #[serde(rename = "FQDN")]
    Fqdn,
    /// ID_KEY_ID `<account-id>_<tunnel-id>`
    #[serde(rename = "KeyID")]
    KeyId,
    /// ID_IPV4_ADDR: the customer endpoint (only when it identifies the tunnel uniquely)
    #[serde(rename = "IPv4Addr")]
    Ipv4Addr,
}

impl IkeIdType {
    pub const ALL: [IkeIdType; 4] = [
        IkeIdType::Rfc822Addr,
        IkeIdType::Fqdn,
        IkeIdType::KeyId,
        IkeIdType::Ipv4Addr,
    ];
}

/// One identity the responder accepts in the peer's IDi payload.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IkeId {
    #[serde(rename = "type")]
    pub id_type: IkeIdType,
    pub value: String,
}

/// Allow-list for the IKE SA; empty lists mean "every seed algorithm".
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IkeProposals {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 8)))]
    pub encryption: Vec<IkeEncryption>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 8)))]
    pub integrity: Vec<Integrity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 8)))]
    pub prf: Vec<Prf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 8)))]
    pub dh_groups: Vec<DhGroup>,
}

/// Allow-list for Child SAs; empty lists mean "every seed algorithm" (never NULL by default).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EspProposals {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 8)))]
    pub encryption: Vec<EspEncryption>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 8)))]
    pub integrity: Vec<Integrity>,
    /// PFS groups for Child SA rekeys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 8)))]
    pub pfs_groups: Vec<DhGroup>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Proposals {
    #[serde(default)]
    pub ike: IkeProposals,
    #[serde(default)]
    pub esp: EspProposals,
}

pub const DEFAULT_IKE_LIFETIME_SECONDS: u32 = 86_400;
pub const DEFAULT_CHILD_LIFETIME_SECONDS: u32 = 28_800;

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Lifetimes {
    /// IKE SA lifetime before rekey.
    #[serde(default = "default_ike_lifetime")]
    #[cfg_attr(feature = "schema", schemars(range(min = 300, max = 172800)))]
    pub ike_seconds: u32,
    /// Child SA lifetime before rekey.
    #[serde(default = "default_child_lifetime")]
    #[cfg_attr(feature = "schema", schemars(range(min = 300, max = 86400)))]
    pub child_seconds: u32,
    /// Child SA byte limit before rekey (unset: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1048576)))]
    pub child_bytes: Option<u64>,
}

fn default_ike_lifetime() -> u32 {
    DEFAULT_IKE_LIFETIME_SECONDS
}
fn default_child_lifetime() -> u32 {
    DEFAULT_CHILD_LIFETIME_SECONDS
}

impl Default for Lifetimes {
    fn default() -> Self {
        Lifetimes {
            ike_seconds: DEFAULT_IKE_LIFETIME_SECONDS,
            child_seconds: DEFAULT_CHILD_LIFETIME_SECONDS,
            child_bytes: None,
        }
    }
}

/// A pre-shared key: secret bytes (zeroized, redacted, base64 on the wire), kept a type of its own
/// so that a PSK is never passed where an SA key is meant.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Psk(Secret);

impl Psk {
    pub fn new(bytes: Vec<u8>) -> Self {
        Psk(Secret::new(bytes))
    }
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Psk(<redacted>)")
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpsecConfig {
    /// The PSK inline (base64). Exactly one of `psk` and `pskFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psk: Option<Psk>,
    /// A file holding the raw PSK bytes (one trailing newline removed, see [`psk_from_bytes`]),
    /// read with [`read_psk_file`] for every new IKE SA, so a rewritten file (a refreshed Secret
    /// volume) applies without a restart. Not opened by [`TunnelConfig::validate`]: in a pod the
    /// kubelet provides it, and a later read reports a missing or unusable file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psk_file: Option<PathBuf>,
    /// Identities accepted in the peer's IDi (not needed with `staticSa`).
    #[serde(default)]
    pub accepted_ids: Vec<IkeId>,
    /// Our own identity (IDr as responder). Default: the local endpoint as ID_IPV4_ADDR, what
    /// router configurations usually match as the tunnel's remote identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_id: Option<IkeId>,
    #[serde(default)]
    pub replay_protection: bool,
    #[serde(default = "default_replay_window")]
    pub replay_window: u32,
    #[serde(default)]
    pub allow_null_cipher: bool,
    #[serde(default)]
    pub proposals: Proposals,
    #[serde(default)]
    pub lifetimes: Lifetimes,
    /// Manually keyed SAs instead of IKE (RFC 4301 §4.5): for peers without IKE, tests and
    /// benchmarks. The PSK and accepted IDs are then not needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_sa: Option<StaticSa>,
    /// Initiator mode: the endpoint dials the router (IKE_SA_INIT to `customerEndpoint`, UDP
    /// 500), retries with back-off and dials again when the IKE SA is lost (DPD, a Delete from
    /// the peer). It still answers the router's own IKE_SA_INIT. Needs `customerEndpoint` and
    /// IKE (no `staticSa`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub initiate: bool,
    /// Anycast replicas: the SAs one replica negotiates are shared with the others through a
    /// Secret on the Kubernetes API (README "Anycast replicas"). Needs IKE (no `staticSa`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SaSync>,
}

/// Where the replicas of one tunnel keep their shared SA state: a Secret the operator creates
/// (`<tunnel>-sa`), which each replica may only get, watch and update.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SaSync {
    pub namespace: String,
    pub secret: String,
}

impl IpsecConfig {
    /// The anti-replay window to enforce, or `None` when anti-replay is off (the default).
    pub fn replay(&self) -> Option<u32> {
        self.replay_protection.then_some(self.replay_window)
    }
}

fn default_replay_window() -> u32 {
    DEFAULT_REPLAY_WINDOW
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GreOptions {
    /// RFC 2890 key sent on every frame and required on every received frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<u32>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Route {
    pub prefix: Ipv4Net,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_HTTP_PORT)),
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TunnelConfig {
    pub api_version: String,
    pub kind: String,
    /// Human name, used in logs and metrics (`namespace/name` when written by the operator).
    pub name: String,
    /// The MagicTunnel UID without dashes (32 hex digits), when written by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_id: Option<String>,
    #[serde(rename = "type")]
    pub tunnel_type: TunnelType,
    pub local_endpoint: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_endpoint: Option<Ipv4Addr>,
    /// Our address on the tunnel interface with its /31 or /30 prefix.
    pub interface_address: Ipv4Net,
    /// Default: 1476 for GRE (1472 with a key), 1400 for IPsec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    #[serde(default = "default_ttl")]
    pub ttl: u8,
    #[serde(default)]
    pub mss_clamp: MssClamp,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub health_check: HealthCheck,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gre: Option<GreOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipsec: Option<IpsecConfig>,
    #[serde(default)]
    pub http: HttpConfig,
    /// How many replicas may send on one SA at once (anycast, 1..=16). Each replica's outbound
    /// SAs use its own slice of the IV and sequence spaces (`tunnel-pod run --replica`).
    #[serde(default = "default_replicas", skip_serializing_if = "is_one_replica")]
    pub replicas: u8,
}

fn default_replicas() -> u8 {
    1
}
fn is_one_replica(n: &u8) -> bool {
    *n == 1
}

/// Most replicas of one tunnel (the CRD's `replicas` maximum).
pub const MAX_REPLICAS: u8 = 16;

fn default_ttl() -> u8 {
    DEFAULT_TTL
}

/// A config that cannot be used, naming the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Syntax(String),
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// True for addresses that can never be a tunnel endpoint.
pub fn is_unusable_endpoint(addr: Ipv4Addr) -> bool {
    addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast()
}

impl TunnelConfig {
    /// Parse and validate a config from YAML text.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let config: TunnelConfig =
            serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    pub fn to_yaml(&self) -> String {
        // Every field is a plain string, number, list or map: serialization cannot fail.
        serde_yaml::to_string(self).unwrap_or_default()
    }

    pub fn mtu(&self) -> u16 {
        self.mtu.unwrap_or(match self.tunnel_type {
            TunnelType::Gre if self.gre.as_ref().is_some_and(|g| g.key.is_some()) => {
                GRE_KEYED_DEFAULT_MTU
            }
            TunnelType::Gre => GRE_DEFAULT_MTU,
            TunnelType::Ipsec => IPSEC_DEFAULT_MTU,
        })
    }

    /// The other side's address on the interface subnet: the other half of a /31, or the other
    /// usable host of a /30.
    pub fn peer_interface_address(&self) -> Option<Ipv4Addr> {
        peer_address(self.interface_address)
    }

    /// The semantic rules the YAML syntax cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.api_version != API_VERSION {
            return Err(invalid(
                "apiVersion",
                format!("must be {API_VERSION}, got {:?}", self.api_version),
            ));
        }
        if self.kind != KIND {
            return Err(invalid(
                "kind",
                format!("must be {KIND}, got {:?}", self.kind),
            ));
        }
        if self.name.is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        if let Some(id) = &self.tunnel_id
            && (id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(invalid("tunnelId", "must be 32 hexadecimal digits"));
        }
        if is_unusable_endpoint(self.local_endpoint) {
            return Err(invalid(
                "localEndpoint",
                format!("{} cannot be a tunnel endpoint", self.local_endpoint),
            ));
        }
        match (self.tunnel_type, self.customer_endpoint) {
            (TunnelType::Gre, None) => {
                return Err(invalid("customerEndpoint", "is required for GRE tunnels"));
            }
            (_, Some(c)) if is_unusable_endpoint(c) => {
                return Err(invalid(
                    "customerEndpoint",
                    format!("{c} cannot be a tunnel endpoint"),
                ));
            }
            (_, Some(c)) if c == self.local_endpoint => {
                return Err(invalid(
                    "customerEndpoint",
                    "must differ from localEndpoint",
                ));
            }
            _ => {}
        }
        check_interface_address(self.interface_address)
            .map_err(|reason| invalid("interfaceAddress", reason))?;
        let mtu = self.mtu();
        if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
            return Err(invalid(
                "mtu",
                format!("must be between {MIN_MTU} and {MAX_MTU}, got {mtu}"),
            ));
        }
        if self.ttl == 0 {
            return Err(invalid("ttl", "must be between 1 and 255"));
        }
        if !(1..=MAX_REPLICAS).contains(&self.replicas) {
            return Err(invalid(
                "replicas",
                format!(
                    "must be between 1 and {MAX_REPLICAS}, got {}",
                    self.replicas
                ),
            ));
        }
        self.validate_mss_clamp(mtu)?;
        self.validate_routes()?;
        if let Some(target) = self.health_check.target
            && target == self.interface_address.addr()
        {
            return Err(invalid(
                "healthCheck.target",
                "must not be our own interface address",
            ));
        }
        match (self.tunnel_type, &self.gre, &self.ipsec) {
            (TunnelType::Gre, _, Some(_)) => {
                Err(invalid("ipsec", "is only allowed when type is IPsec"))
            }
            (TunnelType::Ipsec, Some(_), _) => {
                Err(invalid("gre", "is only allowed when type is GRE"))
            }
            (TunnelType::Ipsec, None, None) => {
                Err(invalid("ipsec", "is required when type is IPsec"))
            }
            (TunnelType::Ipsec, None, Some(ipsec)) => {
                if ipsec.initiate && ipsec.static_sa.is_some() {
                    return Err(invalid(
                        "ipsec.initiate",
                        "static SAs (ipsec.staticSa) have no IKE to initiate: remove one of them",
                    ));
                }
                if ipsec.initiate && self.customer_endpoint.is_none() {
                    return Err(invalid(
                        "customerEndpoint",
                        "ipsec.initiate: true needs the router's address to dial",
                    ));
                }
                if let Some(sync) = &ipsec.sync {
                    if ipsec.static_sa.is_some() {
                        return Err(invalid(
                            "ipsec.sync",
                            "static SAs (ipsec.staticSa) are in every replica's config already: remove ipsec.sync",
                        ));
                    }
                    if sync.namespace.is_empty() || sync.secret.is_empty() {
                        return Err(invalid(
                            "ipsec.sync",
                            "needs the namespace and name of the SA Secret",
                        ));
                    }
                }
                if ipsec.static_sa.is_some() && self.customer_endpoint.is_none() {
                    return Err(invalid(
                        "customerEndpoint",
                        "static SAs (ipsec.staticSa) need the peer's address",
                    ));
                }
                ipsec.validate()
            }
            (TunnelType::Gre, _, None) => Ok(()),
        }
    }

    fn validate_mss_clamp(&self, mtu: u16) -> Result<(), ConfigError> {
        match (self.mss_clamp.mode, self.mss_clamp.value) {
            (MssClampMode::Fixed, None) => {
                Err(invalid("mssClamp.value", "is required when mode is Fixed"))
            }
            (MssClampMode::Fixed, Some(v)) if v < 536 || v > mtu.saturating_sub(40) => {
                Err(invalid(
                    "mssClamp.value",
                    format!(
                        "must be between 536 and MTU − 40 = {}",
                        mtu.saturating_sub(40)
                    ),
                ))
            }
            (MssClampMode::Auto | MssClampMode::Off, Some(_)) => Err(invalid(
                "mssClamp.value",
                "is only allowed when mode is Fixed",
            )),
            _ => Ok(()),
        }
    }

    fn validate_routes(&self) -> Result<(), ConfigError> {
        if self.routes.len() > MAX_ROUTES {
            return Err(invalid(
                "routes",
                format!("at most {MAX_ROUTES} routes, got {}", self.routes.len()),
            ));
        }
        for route in &self.routes {
            if route.prefix.trunc() != route.prefix {
                return Err(invalid(
                    "routes",
                    format!(
                        "{} has host bits set; did you mean {}?",
                        route.prefix,
                        route.prefix.trunc()
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl IpsecConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        match (&self.psk, &self.psk_file) {
            (Some(_), Some(_)) => {
                return Err(invalid("ipsec.psk", "set either psk or pskFile, not both"));
            }
            (None, None) if self.static_sa.is_none() => {
                return Err(invalid("ipsec.psk", "one of psk or pskFile is required"));
            }
            (Some(psk), None) if psk.len() < MIN_PSK_LEN => {
                return Err(invalid(
                    "ipsec.psk",
                    format!("too short: at least {MIN_PSK_LEN} bytes are required"),
                ));
            }
            (Some(psk), None) if psk.len() > MAX_PSK_BYTES => {
                return Err(invalid(
                    "ipsec.psk",
                    format!("too long: at most {MAX_PSK_BYTES} bytes are allowed"),
                ));
            }
            // The file itself is not opened: `tunnel-pod check` runs where the kubelet has not
            // mounted it, and the key is read anew for each IKE SA anyway.
            (None, Some(path)) if path.as_os_str().is_empty() => {
                return Err(invalid("ipsec.pskFile", "must not be empty"));
            }
            _ => {}
        }
        if let Some(sa) = &self.static_sa {
            sa.validate(self.allow_null_cipher)
                .map_err(|(field, why)| invalid(field, why))?;
        }
        if self.accepted_ids.is_empty() && self.static_sa.is_none() {
            return Err(invalid(
                "ipsec.acceptedIds",
                "at least one identity is required",
            ));
        }
        // An ID the IKE core would fail to encode must fail here, at check time.
        for (field, id) in self
            .accepted_ids
            .iter()
            .map(|id| ("ipsec.acceptedIds", id))
            .chain(self.local_id.iter().map(|id| ("ipsec.localId", id)))
        {
            if id.value.is_empty() {
                return Err(invalid(
                    field,
                    format!("{:?} identity has an empty value", id.id_type),
                ));
            }
            if id.id_type == IkeIdType::Ipv4Addr && id.value.parse::<Ipv4Addr>().is_err() {
                return Err(invalid(
                    field,
                    format!("{:?} is not an IPv4 address", id.value),
                ));
            }
        }
        if !self.allow_null_cipher && self.proposals.esp.encryption.contains(&EspEncryption::Null) {
            return Err(invalid(
                "ipsec.proposals.esp.encryption",
                "NULL encryption requires allowNullCipher: true",
            ));
        }
        if self
            .proposals
            .ike
            .integrity
            .contains(&Integrity::HmacSha1_96)
        {
            return Err(invalid(
                "ipsec.proposals.ike.integrity",
                "HMAC-SHA1-96 is only allowed for Child SAs",
            ));
        }
        if !(64..=65_536).contains(&self.replay_window) || !self.replay_window.is_multiple_of(64) {
            return Err(invalid(
                "ipsec.replayWindow",
                "must be a multiple of 64 between 64 and 65536",
            ));
        }
        if self.lifetimes.child_seconds >= self.lifetimes.ike_seconds {
            return Err(invalid(
                "ipsec.lifetimes.childSeconds",
                "must be shorter than ikeSeconds",
            ));
        }
        Ok(())
    }
}

/// Accept only /31 (RFC 3021) or /30 interface subnets, and on a /30 only a usable host address.
pub fn check_interface_address(net: Ipv4Net) -> Result<(), String> {
    match net.prefix_len() {
        31 => Ok(()),
        30 if net.addr() == net.network() || net.addr() == net.broadcast() => Err(format!(
            "{net}: on a /30 the address must be one of the two usable hosts, not the network or broadcast address"
        )),
        30 => Ok(()),
        other => Err(format!(
            "{net}: the prefix must be /31 or /30, got /{other}"
        )),
    }
}

/// The other end of a point-to-point subnet.
pub fn peer_address(net: Ipv4Net) -> Option<Ipv4Addr> {
    let base = u32::from(net.network());
    let own = u32::from(net.addr());
    match net.prefix_len() {
        31 => Some(Ipv4Addr::from(own ^ 1)),
        // The usable hosts of a /30 are .1 and .2 relative to the network.
        30 => match own.checked_sub(base)? {
            1 => Some(Ipv4Addr::from(base + 2)),
            2 => Some(Ipv4Addr::from(base + 1)),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRE: &str = "\
apiVersion: magictunnel.dev/v1alpha1
kind: TunnelConfig
name: branch-1
type: GRE
localEndpoint: 192.0.2.1
customerEndpoint: 198.51.100.7
interfaceAddress: 10.200.0.0/31
routes:
  - prefix: 10.10.0.0/16
gre:
  key: 42
";

    fn ipsec_yaml(extra: &str) -> String {
        format!(
            "\
apiVersion: magictunnel.dev/v1alpha1
kind: TunnelConfig
name: branch-2
type: IPsec
localEndpoint: 192.0.2.1
interfaceAddress: 10.200.0.5/30
ipsec:
  psk: MDEyMzQ1Njc4OWFiY2RlZg==
  acceptedIds:
    - type: FQDN
      value: 0123.acct.ipsec.example
{extra}"
        )
    }

    fn err_field(text: &str) -> String {
        match TunnelConfig::from_yaml(text) {
            Err(ConfigError::Invalid { field, .. }) => field.to_string(),
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn gre_defaults() {
        let c = TunnelConfig::from_yaml(GRE).expect("valid");
        // With key 42: 20 (IPv4) + 8 (GRE with key) + 1472 = 1500.
        assert_eq!(c.mtu(), 1472);
        assert_eq!(c.ttl, 64);
        assert_eq!(c.mss_clamp.effective(c.mtu()), Some(1432));
        let unkeyed =
            TunnelConfig::from_yaml(&GRE.replace("gre:\n  key: 42\n", "")).expect("valid");
        assert_eq!(unkeyed.mtu(), 1476);
        assert_eq!(unkeyed.mss_clamp.effective(unkeyed.mtu()), Some(1436));
        assert_eq!(
            c.peer_interface_address(),
            Some(Ipv4Addr::new(10, 200, 0, 1))
        );
        assert!(c.health_check.enabled);
        assert_eq!(c.http.listen.port(), DEFAULT_HTTP_PORT);
        assert_eq!(c.gre, Some(GreOptions { key: Some(42) }));
    }

    #[test]
    fn round_trip_is_lossless() {
        let c = TunnelConfig::from_yaml(&ipsec_yaml("")).expect("valid");
        let again = TunnelConfig::from_yaml(&c.to_yaml()).expect("re-parses");
        assert_eq!(c, again);
        let psk = c.ipsec.as_ref().and_then(|i| i.psk.as_ref()).expect("psk");
        assert_eq!(psk.as_bytes(), b"0123456789abcdef");
    }

    #[test]
    fn psk_is_never_in_debug_output() {
        let c = TunnelConfig::from_yaml(&ipsec_yaml("")).expect("valid");
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("0123456789abcdef"));
        assert!(!dbg.contains("MDEyMzQ1Njc4OWFiY2RlZg"));
        assert!(dbg.contains("<redacted>"));
    }

    #[test]
    fn bad_base64_psk_does_not_echo_the_secret() {
        let text = ipsec_yaml("").replace("MDEyMzQ1Njc4OWFiY2RlZg==", "not*base64*SECRET");
        let err = TunnelConfig::from_yaml(&text)
            .expect_err("refused")
            .to_string();
        assert!(err.contains("secret is not valid base64"), "{err}");
        assert!(!err.contains("SECRET"), "{err}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = TunnelConfig::from_yaml(&format!("{GRE}mtuu: 1400\n")).expect_err("refused");
        assert!(err.to_string().contains("mtuu"), "{err}");
    }

    #[test]
    fn semantic_errors_name_the_field() {
        assert_eq!(err_field(&GRE.replace("TunnelConfig", "Tunnel")), "kind");
        assert_eq!(
            err_field(&GRE.replace("customerEndpoint: 198.51.100.7\n", "")),
            "customerEndpoint"
        );
        assert_eq!(
            err_field(&GRE.replace("198.51.100.7", "192.0.2.1")),
            "customerEndpoint"
        );
        assert_eq!(
            err_field(&GRE.replace("192.0.2.1", "0.0.0.0")),
            "localEndpoint"
        );
        assert_eq!(
            err_field(&GRE.replace("10.200.0.0/31", "10.200.0.0/29")),
            "interfaceAddress"
        );
        assert_eq!(
            err_field(&GRE.replace("10.200.0.0/31", "10.200.0.4/30")),
            "interfaceAddress"
        );
        assert_eq!(err_field(&format!("{GRE}mtu: 1600\n")), "mtu");
        assert_eq!(err_field(&format!("{GRE}mtu: 500\n")), "mtu");
        assert_eq!(err_field(&format!("{GRE}ttl: 0\n")), "ttl");
        assert_eq!(
            err_field(&GRE.replace("10.10.0.0/16", "10.10.0.1/16")),
            "routes"
        );
        assert_eq!(
            err_field(&format!("{GRE}mssClamp:\n  mode: Fixed\n")),
            "mssClamp.value"
        );
        assert_eq!(
            err_field(&format!("{GRE}mssClamp:\n  mode: Fixed\n  value: 1450\n")),
            "mssClamp.value"
        );
        assert_eq!(
            err_field(&format!("{GRE}ipsec:\n  acceptedIds: []\n")),
            "ipsec"
        );
    }

    #[test]
    fn ipsec_rules() {
        assert!(TunnelConfig::from_yaml(&ipsec_yaml("")).is_ok());
        assert_eq!(
            err_field(&ipsec_yaml("").replace("MDEyMzQ1Njc4OWFiY2RlZg==", "c2hvcnQ=")),
            "ipsec.psk"
        );
        assert_eq!(err_field(&ipsec_yaml("  pskFile: /etc/psk\n")), "ipsec.psk");
        // pskFile alone is valid without the file existing (the kubelet mounts it later).
        let file_only = ipsec_yaml("").replace(
            "psk: MDEyMzQ1Njc4OWFiY2RlZg==",
            "pskFile: /nonexistent/magictunnel-psk/psk",
        );
        let c = TunnelConfig::from_yaml(&file_only).expect("pskFile need not exist yet");
        let ipsec = c.ipsec.expect("ipsec");
        assert!(ipsec.psk.is_none());
        assert_eq!(
            ipsec.psk_file.as_deref(),
            Some(Path::new("/nonexistent/magictunnel-psk/psk"))
        );
        assert_eq!(
            err_field(&file_only.replace("/nonexistent/magictunnel-psk/psk", "\"\"")),
            "ipsec.pskFile"
        );
        let no_key = ipsec_yaml("").replace("  psk: MDEyMzQ1Njc4OWFiY2RlZg==\n", "");
        assert_eq!(err_field(&no_key), "ipsec.psk");
        assert_eq!(
            err_field(&ipsec_yaml(
                "  proposals:\n    esp:\n      encryption: [NULL]\n"
            )),
            "ipsec.proposals.esp.encryption"
        );
        assert!(
            TunnelConfig::from_yaml(&ipsec_yaml(
                "  allowNullCipher: true\n  proposals:\n    esp:\n      encryption: [NULL]\n"
            ))
            .is_ok()
        );
        assert_eq!(
            err_field(&ipsec_yaml("  replayWindow: 100\n")),
            "ipsec.replayWindow"
        );
        assert_eq!(
            err_field(&ipsec_yaml(
                "  lifetimes:\n    ikeSeconds: 3600\n    childSeconds: 7200\n"
            )),
            "ipsec.lifetimes.childSeconds"
        );
        // Initiator mode: the router's address to dial, and IKE (not static SAs).
        let initiator = ipsec_yaml("  initiate: true\n");
        assert_eq!(err_field(&initiator), "customerEndpoint");
        let with_customer = initiator.replace(
            "localEndpoint: 192.0.2.1\n",
            "localEndpoint: 192.0.2.1\ncustomerEndpoint: 198.51.100.7\n",
        );
        let c = TunnelConfig::from_yaml(&with_customer).expect("initiator with customerEndpoint");
        assert!(c.ipsec.as_ref().is_some_and(|i| i.initiate));
        assert!(c.to_yaml().contains("initiate: true"), "{}", c.to_yaml());
        let responder = TunnelConfig::from_yaml(&ipsec_yaml("")).expect("valid");
        assert!(!responder.ipsec.as_ref().is_some_and(|i| i.initiate));
        assert!(
            !responder.to_yaml().contains("initiate"),
            "false is the default"
        );
        let err = TunnelConfig::from_yaml(&initiator)
            .expect_err("refused")
            .to_string();
        assert!(err.contains("router's address"), "{err}");
        let static_sa = include_str!("../../../examples/tunnel-config-ipsec-static.yaml");
        assert!(TunnelConfig::from_yaml(static_sa).is_ok());
        let static_initiator = static_sa.replace("  staticSa:", "  initiate: true\n  staticSa:");
        assert_eq!(err_field(&static_initiator), "ipsec.initiate");
        let without_ipsec = ipsec_yaml("")
            .split("ipsec:")
            .next()
            .unwrap_or("")
            .to_string();
        assert_eq!(err_field(&without_ipsec), "ipsec");
    }

    #[test]
    fn peer_addresses() {
        let p = |s: &str| peer_address(s.parse().expect("net"));
        assert_eq!(p("10.0.0.0/31"), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(p("10.0.0.1/31"), Some(Ipv4Addr::new(10, 0, 0, 0)));
        assert_eq!(p("10.0.0.1/30"), Some(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(p("10.0.0.2/30"), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(p("10.0.0.3/30"), None);
        assert_eq!(p("10.0.0.0/24"), None);
    }
}
