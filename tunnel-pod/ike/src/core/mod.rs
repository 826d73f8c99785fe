//! The sans-IO IKEv2 state machine (RFC 7296, PSK only) for one tunnel.
//!
//! One [`Endpoint`] owns the tunnel's IKE SAs (normally one, two during an IKE rekey) and their
//! Child SAs. It never touches sockets, clocks or files: bytes, `now` and an RNG go in, and
//! [`Output`]s come out — datagrams to send, Child SAs to install, activate or retire, and
//! [`Event`]s for logs and metrics.
//!
//! State lives in types, in the manner of rustls and boringtun: each IKE SA is an enum of states
//! (`ike_sa::State`) whose variants own only the data valid then (the DH key pair and nonce
//! before the keys exist, SK_* after), and every transition consumes the old state.
//!
//! **Promise:** nothing in this module panics on any input; hostile messages are dropped and
//! counted ([`Event::Dropped`]) or answered with the notification RFC 7296 asks for.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::crypto::{EncrAlg, Group, IntegAlg, PrfAlg, Secret};
use crate::wire::{ExchangeType, IdType, NotifyType, TransformId};

pub use crate::wire::{Identification, TrafficSelector};

mod child;
mod delete_one;
mod endpoint;
mod frag;
#[doc(hidden)]
pub mod fuzzing;
mod ike_sa;
mod init;
mod msg;
mod nat;
mod proposal;
pub mod snapshot;
mod ts;

#[cfg(test)]
mod tests;

pub use endpoint::{Endpoint, Limits, Stats};
pub use nat::nat_detection_hash;
pub use snapshot::{IkeSaSnapshot, SnapshotError};

/// The two UDP endpoints of an IKE message. `local` is our address and port (500 or 4500).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Path {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl Path {
    /// The same path seen from the other end.
    pub fn reversed(self) -> Path {
        Path {
            local: self.remote,
            remote: self.local,
        }
    }
}

/// Where the pre-shared key comes from. Read once per new IKE SA, so that a changed key (the
/// shell re-reads a mounted file) applies to the next SA without a restart. `None`: we cannot
/// authenticate (the peer gets AUTHENTICATION_FAILED, and an event says why).
pub trait PskSource {
    fn psk(&self) -> Option<Secret>;
}

/// A fixed key, for tests and simple setups.
pub struct StaticPsk(pub Secret);

impl PskSource for StaticPsk {
    fn psk(&self) -> Option<Secret> {
        Some(self.0.clone())
    }
}

/// The algorithms we allow, in IANA terms, in order of our preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposals {
    pub ike_encr: Vec<EncrAlg>,
    /// Used with non-AEAD `ike_encr` only.
    pub ike_integ: Vec<IntegAlg>,
    pub ike_prf: Vec<PrfAlg>,
    pub ike_dh: Vec<Group>,
    /// ESP encryption: transform ID and key length in bits (`None` for NULL).
    pub esp_encr: Vec<(TransformId, Option<u16>)>,
    /// ESP integrity for non-AEAD `esp_encr`: HMAC-SHA2-256-128, HMAC-SHA1-96.
    pub esp_integ: Vec<TransformId>,
    /// PFS groups accepted in CREATE_CHILD_SA (no PFS is always accepted too).
    pub pfs: Vec<Group>,
    /// The group we use for PFS when we initiate a Child SA rekey; `None`: no PFS.
    pub pfs_initiate: Option<Group>,
}

impl Proposals {
    /// The seed suites (DESIGN.md "Supported suites"). ESP NULL encryption only when
    /// `allow_null`.
    pub fn seed_default(allow_null: bool) -> Proposals {
        let mut esp_encr = vec![
            (TransformId::ENCR_AES_GCM_16, Some(128)),
            (TransformId::ENCR_AES_GCM_16, Some(256)),
            (TransformId::ENCR_AES_CBC, Some(128)),
            (TransformId::ENCR_AES_CBC, Some(256)),
        ];
        if allow_null {
            esp_encr.push((TransformId::ENCR_NULL, None));
        }
        Proposals {
            ike_encr: vec![
                EncrAlg::AesGcm16 { key_bits: 128 },
                EncrAlg::AesGcm16 { key_bits: 256 },
                EncrAlg::AesCbc { key_bits: 256 },
            ],
            ike_integ: vec![IntegAlg::HmacSha256_128],
            ike_prf: vec![PrfAlg::HmacSha256, PrfAlg::HmacSha384, PrfAlg::HmacSha512],
            ike_dh: vec![Group::Ecp384, Group::Modp2048, Group::Modp1536],
            esp_encr,
            esp_integ: vec![
                TransformId::AUTH_HMAC_SHA2_256_128,
                TransformId::AUTH_HMAC_SHA1_96,
            ],
            pfs: vec![Group::Modp2048, Group::Modp1536, Group::Ecp384],
            pfs_initiate: None,
        }
    }
}

/// One tunnel's IKE configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub proposals: Proposals,
    /// Our ID (IDr as responder, IDi as initiator).
    pub local_id: Identification,
    /// The peer's ID must equal one of these (type and bytes), else AUTHENTICATION_FAILED.
    pub accepted_ids: Vec<Identification>,
    /// Hard lifetime of an IKE SA; we rekey at about 85–90 % of it.
    pub ike_lifetime: Duration,
    /// Hard lifetime of a Child SA; we rekey at about 85–90 % of it.
    pub child_lifetime: Duration,
    /// Byte lifetime handed to the dataplane (which asks for a rekey via
    /// [`Endpoint::rekey_child`]).
    pub child_bytes: Option<u64>,
    /// Traffic we allow on our side and on the peer's side.
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
    /// Send a liveness check when nothing has been heard for this long.
    pub dpd_interval: Duration,
    /// Announce a NAT_DETECTION_SOURCE_IP that cannot match, so the peer UDP-encapsulates ESP
    /// (our dataplane only does ESP-in-UDP; strongSwan's `encap=yes` does the same).
    pub force_udp_encap: bool,
    /// RFC 7383: fragment our encrypted messages above this many bytes (IKE header included)
    /// when the peer announced IKEV2_FRAGMENTATION_SUPPORTED.
    pub fragment_mtu: usize,
    /// How long a responder keeps an SA that finished IKE_SA_INIT but not IKE_AUTH.
    pub half_open_timeout: Duration,
    /// As initiator, send INITIAL_CONTACT in IKE_AUTH (§2.4: we hold no other SA with this
    /// peer, which then forgets the older SAs of our ID). Off for load generators that open
    /// many SAs with one ID.
    pub initial_contact: bool,
}

impl Config {
    /// Defaults around a local ID: seed proposals without NULL, lifetimes of 24 h (IKE) and
    /// 8 h (Child), any IPv4 traffic on both sides, DPD after 30 s, UDP encapsulation forced,
    /// fragments of at most 1280 bytes.
    pub fn new(local_id: Identification, accepted_ids: Vec<Identification>) -> Config {
        Config {
            proposals: Proposals::seed_default(false),
            local_id,
            accepted_ids,
            ike_lifetime: Duration::from_secs(24 * 3600),
            child_lifetime: Duration::from_secs(8 * 3600),
            child_bytes: None,
            local_ts: vec![any_ipv4()],
            remote_ts: vec![any_ipv4()],
            dpd_interval: Duration::from_secs(30),
            force_udp_encap: true,
            fragment_mtu: 1280,
            half_open_timeout: Duration::from_secs(30),
            initial_contact: true,
        }
    }
}

/// 0.0.0.0–255.255.255.255, any protocol and port.
pub fn any_ipv4() -> TrafficSelector {
    TrafficSelector::Range {
        ip_protocol: 0,
        start_port: 0,
        end_port: 65535,
        start: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        end: IpAddr::V4(Ipv4Addr::BROADCAST),
    }
}

/// ID_IPV4_ADDR of an address.
pub fn ipv4_id(addr: Ipv4Addr) -> Identification {
    Identification {
        id_type: IdType::ID_IPV4_ADDR,
        data: addr.octets().to_vec(),
    }
}

/// What the core asks its shell to do.
#[derive(Debug)]
pub enum Output {
    /// Send one IKE message. The shell prepends the 4-byte non-ESP marker when
    /// `path.local.port() == 4500`.
    Send {
        path: Path,
        bytes: Vec<u8>,
    },
    /// Install this Child SA: inbound now; outbound now if `activate_outbound`, else on a
    /// later [`Output::ActivateOutbound`].
    InstallChild(Box<ChildSa>),
    /// Start sending on this (already installed) SA.
    ActivateOutbound {
        outbound_spi: u32,
    },
    /// Remove both directions of this Child SA.
    RetireChild {
        inbound_spi: u32,
        outbound_spi: u32,
    },
    /// The peer behind a NAT now sends from `path.remote` (a new mapping, RFC 7296 §2.23):
    /// IKE follows it, and ESP must too, or it goes to a mapping the NAT has dropped.
    PeerMoved {
        path: Path,
    },
    Event(Event),
}

/// One direction of a Child SA. `Debug` shows no key.
pub struct ChildDirection {
    pub spi: u32,
    /// ENCR_AES_GCM_16, ENCR_AES_CBC or ENCR_NULL.
    pub encr: TransformId,
    pub key_bits: Option<u16>,
    /// None for AES-GCM.
    pub integ: Option<TransformId>,
    /// With the 4-byte salt last for GCM.
    pub encr_key: Secret,
    /// Empty for AES-GCM.
    pub integ_key: Secret,
}

impl std::fmt::Debug for ChildDirection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildDirection")
            .field("spi", &format_args!("{:08x}", self.spi))
            .field("encr", &self.encr)
            .field("key_bits", &self.key_bits)
            .field("integ", &self.integ)
            .finish_non_exhaustive()
    }
}

/// A negotiated Child SA (ESP, tunnel mode, ESN off).
#[derive(Debug)]
pub struct ChildSa {
    pub inbound: ChildDirection,
    pub outbound: ChildDirection,
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
    /// Hard lifetime: the core rekeys before it and retires the SA at it.
    pub lifetime: Duration,
    pub bytes: Option<u64>,
    /// Where ESP goes (the IKE SA's path; ESP-in-UDP on its ports).
    pub path: Path,
    pub activate_outbound: bool,
    /// Inbound SPI of the SA this one rekeys.
    pub replaces: Option<u32>,
}

/// Why an IKE SA ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReason {
    /// The peer sent a Delete.
    PeerDeleted,
    /// [`Endpoint::close`].
    Closed,
    /// No answer to our retransmissions.
    PeerDead,
    /// Hard lifetime reached.
    Expired,
    /// Replaced by a rekeyed IKE SA.
    Rekeyed,
    /// The peer sent INITIAL_CONTACT on a new IKE SA.
    InitialContact,
    /// Authentication failed (either side).
    AuthFailed,
    /// The peer answered with an error that ends the SA.
    PeerError,
}

impl DeleteReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeleteReason::PeerDeleted => "peer_deleted",
            DeleteReason::Closed => "closed",
            DeleteReason::PeerDead => "peer_dead",
            DeleteReason::Expired => "expired",
            DeleteReason::Rekeyed => "rekeyed",
            DeleteReason::InitialContact => "initial_contact",
            DeleteReason::AuthFailed => "auth_failed",
            DeleteReason::PeerError => "peer_error",
        }
    }
}

/// Why a message was dropped: a bounded set, usable as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    Malformed,
    BadIcv,
    UnknownSpi,
    OutOfWindow,
    UnsupportedCritical,
    BadVersion,
    /// A response to a request we did not send.
    UnexpectedResponse,
    /// An exchange that is not valid in the SA's state.
    UnexpectedExchange,
    /// [`Limits::max_half_open`] half-open IKE SAs are held.
    HalfOpenCap,
    /// The source holds [`Limits::half_open_per_source`] half-open IKE SAs, all made with a
    /// cookie.
    HalfOpenPerSource,
    /// [`Limits::max_sas`] IKE SAs are held.
    SaCap,
    /// Under load, an IKE_SA_INIT without a cookie: answered with COOKIE (§2.6).
    CookieRequired,
    /// Under load, an IKE_SA_INIT with a wrong or stale cookie: answered with a new one.
    CookieInvalid,
    /// A retransmission of a request we are not answering again (e.g. different bytes).
    Duplicate,
    /// A fragment that does not fit the reassembly limits.
    Fragment,
    /// The peer's DH value or nonce is not acceptable.
    BadKeyExchange,
    /// An internal failure (RNG, cipher setup).
    Internal,
}

impl DropReason {
    /// Every reason, so that a shell can export each series from the start.
    pub const ALL: [DropReason; 17] = [
        DropReason::Malformed,
        DropReason::BadIcv,
        DropReason::UnknownSpi,
        DropReason::OutOfWindow,
        DropReason::UnsupportedCritical,
        DropReason::BadVersion,
        DropReason::UnexpectedResponse,
        DropReason::UnexpectedExchange,
        DropReason::HalfOpenCap,
        DropReason::HalfOpenPerSource,
        DropReason::SaCap,
        DropReason::CookieRequired,
        DropReason::CookieInvalid,
        DropReason::Duplicate,
        DropReason::Fragment,
        DropReason::BadKeyExchange,
        DropReason::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::BadIcv => "bad_icv",
            DropReason::UnknownSpi => "unknown_spi",
            DropReason::OutOfWindow => "out_of_window",
            DropReason::UnsupportedCritical => "unsupported_critical",
            DropReason::BadVersion => "bad_version",
            DropReason::UnexpectedResponse => "unexpected_response",
            DropReason::UnexpectedExchange => "unexpected_exchange",
            DropReason::HalfOpenCap => "half_open_cap",
            DropReason::HalfOpenPerSource => "half_open_per_source",
            DropReason::SaCap => "sa_cap",
            DropReason::CookieRequired => "cookie_required",
            DropReason::CookieInvalid => "cookie_invalid",
            DropReason::Duplicate => "duplicate",
            DropReason::Fragment => "fragment",
            DropReason::BadKeyExchange => "bad_key_exchange",
            DropReason::Internal => "internal",
        }
    }
}

/// For logs and metrics. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    IkeEstablished {
        spi_i: u64,
        spi_r: u64,
        initiator: bool,
        peer_id: String,
        suite: String,
        path: Path,
    },
    IkeDeleted {
        spi_i: u64,
        spi_r: u64,
        reason: DeleteReason,
    },
    IkeRekeyed {
        old_spi_i: u64,
        old_spi_r: u64,
        new_spi_i: u64,
        new_spi_r: u64,
    },
    ChildEstablished {
        inbound_spi: u32,
        outbound_spi: u32,
        suite: String,
    },
    ChildRekeyed {
        old_inbound_spi: u32,
        new_inbound_spi: u32,
    },
    ChildDeleted {
        inbound_spi: u32,
        outbound_spi: u32,
    },
    /// A Child SA was not created; `notify` is the error we sent or received.
    ChildFailed {
        notify: NotifyType,
    },
    AuthFailed {
        peer_id: String,
    },
    NoProposalChosen {
        offered: String,
        allowed: String,
    },
    /// The peer answered one of our requests with an error notification.
    PeerError {
        exchange: ExchangeType,
        notify: NotifyType,
    },
    ExchangeDone {
        exchange: ExchangeType,
        ok: bool,
    },
    Dropped {
        reason: DropReason,
    },
    PeerDead {
        spi_i: u64,
        spi_r: u64,
    },
    Retransmit {
        exchange: ExchangeType,
    },
}

/// A Child SA as [`Endpoint::status`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildStatus {
    pub inbound_spi: u32,
    pub outbound_spi: u32,
    pub suite: String,
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
    pub age: Duration,
    /// Outbound traffic uses this SA (false while a rekey waits for the old SA's Delete).
    pub outbound_active: bool,
}

/// An IKE SA as [`Endpoint::status`] shows it. No keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeSaStatus {
    pub spi_i: u64,
    pub spi_r: u64,
    /// We are the original initiator of this IKE SA.
    pub initiator: bool,
    /// "init_sent", "auth_sent", "await_auth", "established", "rekeyed".
    pub state: &'static str,
    /// Empty before IKE_SA_INIT completes.
    pub suite: String,
    pub path: Path,
    pub peer_id: Option<String>,
    /// A NAT was detected between us and the peer (either side).
    pub nat_detected: bool,
    pub age: Duration,
    pub children: Vec<ChildStatus>,
}

/// "AES-GCM-16-256" etc.
pub(crate) fn encr_name(id: TransformId, key_bits: Option<u16>) -> String {
    let base = match id {
        TransformId::ENCR_AES_GCM_16 => "AES-GCM-16",
        TransformId::ENCR_AES_CBC => "AES-CBC",
        TransformId::ENCR_NULL => return "NULL".to_string(),
        TransformId::ENCR_3DES => "ENCR_3DES",
        TransformId::ENCR_AES_CTR => "AES-CTR",
        TransformId::ENCR_AES_GCM_8 => "AES-GCM-8",
        TransformId::ENCR_AES_GCM_12 => "AES-GCM-12",
        TransformId::ENCR_CHACHA20_POLY1305 => "CHACHA20-POLY1305",
        other => return format!("ENCR({})", other.0),
    };
    match key_bits {
        Some(b) => format!("{base}-{b}"),
        None => base.to_string(),
    }
}

pub(crate) fn esp_integ_name(id: TransformId) -> String {
    match id {
        TransformId::AUTH_HMAC_SHA2_256_128 => "HMAC-SHA2-256-128".to_string(),
        TransformId::AUTH_HMAC_SHA1_96 => "HMAC-SHA1-96".to_string(),
        TransformId::AUTH_HMAC_SHA2_384_192 => "HMAC-SHA2-384-192".to_string(),
        TransformId::AUTH_HMAC_SHA2_512_256 => "HMAC-SHA2-512-256".to_string(),
        TransformId::AUTH_NONE => "NONE".to_string(),
        other => format!("INTEG({})", other.0),
    }
}

pub(crate) fn prf_name(id: TransformId) -> String {
    match id {
        TransformId::PRF_HMAC_SHA2_256 => "PRF-HMAC-SHA2-256".to_string(),
        TransformId::PRF_HMAC_SHA2_384 => "PRF-HMAC-SHA2-384".to_string(),
        TransformId::PRF_HMAC_SHA2_512 => "PRF-HMAC-SHA2-512".to_string(),
        TransformId::PRF_HMAC_SHA1 => "PRF-HMAC-SHA1".to_string(),
        other => format!("PRF({})", other.0),
    }
}

pub(crate) fn dh_name(id: TransformId) -> String {
    match id {
        TransformId::DH_ECP384 => "ECP-384".to_string(),
        TransformId::DH_MODP2048 => "MODP-2048".to_string(),
        TransformId::DH_MODP1536 => "MODP-1536".to_string(),
        TransformId::DH_MODP1024 => "MODP-1024".to_string(),
        TransformId::DH_ECP256 => "ECP-256".to_string(),
        TransformId::DH_CURVE25519 => "CURVE25519".to_string(),
        TransformId::DH_NONE => "NONE".to_string(),
        other => format!("DH({})", other.0),
    }
}

/// Human-readable ID for events: "ID_FQDN:host.example", "ID_IPV4_ADDR:192.0.2.1".
pub(crate) fn id_string(id: &Identification) -> String {
    let kind = id.id_type.name().unwrap_or("ID_UNKNOWN");
    let value = match id.id_type {
        IdType::ID_IPV4_ADDR => match <[u8; 4]>::try_from(id.data.as_slice()) {
            Ok(b) => Ipv4Addr::from(b).to_string(),
            Err(_) => hex(&id.data),
        },
        IdType::ID_FQDN | IdType::ID_RFC822_ADDR | IdType::ID_KEY_ID => {
            match std::str::from_utf8(&id.data) {
                Ok(s) if s.chars().all(|c| c.is_ascii_graphic()) => s.to_string(),
                _ => hex(&id.data),
            }
        }
        _ => hex(&id.data),
    };
    format!("{kind}:{value}")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Instants are compared and advanced without panicking.
pub(crate) fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or(now)
}
