//! Export and import of established IKE SAs (issue #11: anycast replicas share their SAs).
//!
//! [`Endpoint::export`] turns each established IKE SA into an [`IkeSaSnapshot`]: SPIs, path,
//! NAT state, suite, the keys its `SkCipher`s and Child SA derivations need (SK_d, SK_ai/ar,
//! SK_ei/er; SK_pi/pr are used by IKE_AUTH only and not kept after it), message-ID windows
//! with the cached last response and our pending request, and the bookkeeping of its Child SAs
//! (SPIs, algorithms, selectors, state and times; their ESP keys belong to the dataplane's
//! state, not to this one). Times travel as wall-clock unix milliseconds, converted with the
//! `now`/`wall` pair given for one moment, since `Instant`s mean nothing in another process.
//!
//! [`Endpoint::import`] validates a snapshot completely before it changes anything, and never
//! panics on hostile input. Imported SAs are *passive* ([`Endpoint::set_passive`]): they
//! answer what [`Endpoint::handle`] gives them but send nothing of their own.
//!
//! A pending CREATE_CHILD_SA (a Child SA or IKE SA rekey) needs its ephemeral DH private key,
//! which ring cannot export: such a request is imported as an *orphan* that is retransmitted
//! byte for byte and whose answer completes the exchange (the message ID advances) without a
//! new SA; see [`super::ike_sa::PendingKind::Orphan`].

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

use super::Endpoint;
use crate::crypto::Secret;

/// At most this many Child SAs in one snapshot.
pub const MAX_SNAPSHOT_CHILDREN: usize = 64;
/// At most this many datagrams in a cached response or a pending request.
pub const MAX_DATAGRAMS: usize = 16;
/// At most this many bytes in one datagram.
pub const MAX_DATAGRAM_LEN: usize = 64 * 1024;
/// At most this many traffic selectors on one side of a Child SA.
pub const MAX_TS: usize = 16;
/// At most this many IKE SAs in one import.
pub const MAX_SNAPSHOTS: usize = 128;

/// Why a snapshot was refused. Never shows key bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("IKE SA {spi_i:016x}/{spi_r:016x}: {what}")]
    Invalid {
        spi_i: u64,
        spi_r: u64,
        what: &'static str,
    },
    #[error("too many IKE SAs ({0})")]
    TooMany(usize),
    #[error("two snapshots use our IKE SPI {0:016x}")]
    DuplicateSpi(u64),
    #[error("two Child SAs use our inbound SPI {0:08x}")]
    DuplicateChildSpi(u32),
    #[error("cipher setup failed")]
    Cipher,
}

/// Secret bytes as base64 in JSON; zeroized on drop; `Debug` shows only the length.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(pub(crate) Secret);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} key bytes>", self.0.len())
    }
}

impl Serialize for Key {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*self.0));
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("base64 key bytes")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key, E> {
                let mut out = Zeroizing::new(Vec::new());
                base64::engine::general_purpose::STANDARD
                    .decode_vec(v, &mut out)
                    .map_err(|_| E::custom("invalid base64 in a key"))?;
                Ok(Key(out))
            }
        }
        d.deserialize_str(V)
    }
}

/// Public bytes (sealed datagrams, identities) as base64 in JSON.
#[derive(Clone, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("base64 bytes")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Bytes, E> {
                base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .map(Bytes)
                    .map_err(|_| E::custom("invalid base64"))
            }
        }
        d.deserialize_str(V)
    }
}

/// The IKE SA's algorithms as IANA transform IDs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SuiteSnapshot {
    pub encr: u16,
    pub key_bits: u16,
    pub integ: Option<u16>,
    pub prf: u16,
    pub dh: u16,
}

/// An ESP proposal chosen for a Child SA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EspSnapshot {
    pub number: u8,
    pub encr: u16,
    pub key_bits: Option<u16>,
    pub integ: Option<u16>,
    pub dh: Option<u16>,
    /// The peer's inbound SPI (our outbound).
    pub spi: u32,
}

/// A traffic selector: an address range or an unknown type kept as its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TsSnapshot {
    pub ip_protocol: u8,
    pub start_port: u16,
    pub end_port: u16,
    pub start: std::net::IpAddr,
    pub end: std::net::IpAddr,
}

/// One Child SA's bookkeeping (no ESP keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChildSnapshot {
    pub inbound: u32,
    pub outbound: u32,
    pub esp: EspSnapshot,
    pub local_ts: Vec<TsSnapshot>,
    pub remote_ts: Vec<TsSnapshot>,
    /// "active", "rekeying", "replaced", "deleting".
    pub state: String,
    pub outbound_active: bool,
    pub replaces: Option<u32>,
    pub created_ms: u64,
    pub rekey_at_ms: u64,
    pub expire_at_ms: u64,
}

/// Our answer to the peer's last request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResponseSnapshot {
    pub message_id: u32,
    pub datagrams: Vec<Bytes>,
}

/// What our pending request is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type", deny_unknown_fields)]
pub enum PendingKindSnapshot {
    Dpd,
    /// Our inbound SPIs.
    DeleteChildren { spis: Vec<u32> },
    DeleteIke,
    /// A Child SA rekey (`old_inbound`) or a new Child SA; `new_inbound` is the SPI we
    /// proposed. Imported as an orphan (no DH key, no nonce).
    RekeyChild {
        old_inbound: Option<u32>,
        new_inbound: u32,
    },
    /// An IKE SA rekey to our new SPI `new_spi`. Imported as an orphan.
    RekeyIke { new_spi: u64 },
}

/// Our request in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PendingSnapshot {
    pub message_id: u32,
    /// INFORMATIONAL (37) or CREATE_CHILD_SA (36).
    pub exchange: u8,
    pub kind: PendingKindSnapshot,
    pub datagrams: Vec<Bytes>,
}

/// A request waiting for the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type", deny_unknown_fields)]
pub enum QueuedSnapshot {
    Dpd,
    DeleteChildren { spis: Vec<u32> },
    DeleteIke,
    RekeyChild { inbound: u32 },
    NewChild,
    RekeyIke,
}

/// One established IKE SA, everything another process needs to carry it on. Holds keys:
/// `Debug` redacts them, and they are zeroized on drop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IkeSaSnapshot {
    pub spi_i: u64,
    pub spi_r: u64,
    pub initiator: bool,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub nat_remote_behind: bool,
    pub nat_local_behind: bool,
    pub peer_frag: bool,
    pub created_ms: u64,
    pub suite: SuiteSnapshot,
    pub sk_d: Key,
    pub sk_ai: Key,
    pub sk_ar: Key,
    pub sk_ei: Key,
    pub sk_er: Key,
    pub peer_id_type: u8,
    pub peer_id: Bytes,
    pub next_recv: u32,
    pub last_response: Option<ResponseSnapshot>,
    pub next_send: u32,
    pub pending: Option<PendingSnapshot>,
    pub queue: Vec<QueuedSnapshot>,
    pub children: Vec<ChildSnapshot>,
    pub rekey_at_ms: u64,
    pub expire_at_ms: u64,
    pub dpd_interval_ms: u64,
    pub pfs_hint: Option<u16>,
    pub ike_dh_hint: Option<u16>,
    pub superseded: bool,
}

impl IkeSaSnapshot {
    /// (SPIi, SPIr).
    pub fn spis(&self) -> (u64, u64) {
        (self.spi_i, self.spi_r)
    }
}

/// `t` as unix milliseconds, `now` being `wall`.
pub(crate) fn to_unix_ms(t: Instant, now: Instant, wall: SystemTime) -> u64 {
    let at = if t >= now {
        wall.checked_add(t.saturating_duration_since(now))
    } else {
        wall.checked_sub(now.saturating_duration_since(t))
    };
    at.and_then(|w| w.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Unix milliseconds as an `Instant`, `now` being `wall`; clamped to what `Instant` can hold
/// (a time before the process's clock began becomes `now`).
pub(crate) fn from_unix_ms(ms: u64, now: Instant, wall: SystemTime) -> Instant {
    let wall_ms = wall
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    if ms >= wall_ms {
        super::later(now, Duration::from_millis(ms.saturating_sub(wall_ms)))
    } else {
        now.checked_sub(Duration::from_millis(wall_ms.saturating_sub(ms)))
            .unwrap_or(now)
    }
}

impl Endpoint {
    /// Snapshots of the established IKE SAs (half-open ones are not exported).
    pub fn export(&self, now: Instant, wall: SystemTime) -> Vec<IkeSaSnapshot> {
        let _ = (now, wall);
        Vec::new()
    }

    /// Makes the endpoint's established SAs exactly `snaps` (the others are dropped silently:
    /// no Delete, no Output); imported SAs are passive. Half-open SAs are kept. Nothing changes
    /// when an error is returned.
    pub fn import(
        &mut self,
        snaps: Vec<IkeSaSnapshot>,
        now: Instant,
        wall: SystemTime,
    ) -> Result<(), SnapshotError> {
        let _ = (now, wall);
        if snaps.len() > MAX_SNAPSHOTS {
            return Err(SnapshotError::TooMany(snaps.len()));
        }
        Ok(())
    }

    /// Passive established SAs send nothing of their own (no DPD, rekey, retransmission or
    /// expiry Delete). Activating one restarts its DPD clock and its pending request's
    /// retransmissions at `now`. Applies to every established SA.
    pub fn set_passive(&mut self, passive: bool, now: Instant) {
        let _ = (passive, now);
    }

    /// The endpoint holds imported SAs not yet activated (see [`Endpoint::set_passive`]).
    pub fn is_passive(&self) -> bool {
        false
    }
}
