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
//! new SA. A Child SA the peer made that way is deleted and the rekey retried soon; an IKE
//! SA the peer made cannot be used or deleted (see `Established::on_orphan_response`).
//! What a rekey collision (§2.8) of that pending request had recorded is not exported either.
//!
//! How a shell uses it:
//! - the owner exports after every call whose outputs send a message, and publishes before
//!   sending (write-ahead); it never imports its own published state back (that would turn
//!   its own pending CREATE_CHILD_SA into an orphan);
//! - a follower imports each published generation (passive), and to take over imports the
//!   latest one, calls `set_passive(false, now)`, then hands the message to `handle`;
//! - every import makes new `SkCipher`s: each draws its own random AES-GCM IV base at its
//!   first seal, so two processes sealing with the same SK_e do not repeat IVs (with
//!   overwhelming probability), whatever they sent before.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

use super::ike_sa::{
    Child, ChildState, Established, IkeSa, MAX_QUEUE, Orphan, Pending, PendingKind, Req, Retx,
    State, Windows,
};
use super::nat::NatState;
use super::proposal::EspChoice;
use super::{Endpoint, Path, TrafficSelector};
use crate::crypto::{EncrAlg, Group, IkeSuite, IntegAlg, PrfAlg, Secret, SkCipher};
use crate::wire::{ExchangeType, Header, IdType, Identification, TransformId};

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

/// Secret bytes as base64 in JSON; zeroized on drop; `Debug` shows only the length;
/// compared in constant time.
#[derive(Clone)]
pub struct Key(pub(crate) Secret);

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.0.as_slice().ct_eq(other.0.as_slice()))
    }
}

impl Eq for Key {}

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

/// A traffic selector (an address range: the only kind a Child SA is made with).
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
    pub state: ChildStateSnapshot,
    pub outbound_active: bool,
    pub replaces: Option<u32>,
    pub created_ms: u64,
    pub rekey_at_ms: u64,
    pub expire_at_ms: u64,
}

/// Where a Child SA is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ChildStateSnapshot {
    Active,
    /// Our rekey of it is queued or in flight.
    Rekeying,
    /// A new SA replaces it; waiting for its Delete.
    Replaced,
    /// Our Delete of it is queued or in flight.
    Deleting,
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
    DeleteChildren {
        spis: Vec<u32>,
    },
    DeleteIke,
    /// A Child SA rekey (`old_inbound`) or a new Child SA; `new_inbound` is the SPI we
    /// proposed. Imported as an orphan (no DH key, no nonce).
    RekeyChild {
        old_inbound: Option<u32>,
        new_inbound: u32,
    },
    /// An IKE SA rekey to our new SPI `new_spi`. Imported as an orphan.
    RekeyIke {
        new_spi: u64,
    },
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

/// At most this many bytes in the peer's ID.
const MAX_ID_LEN: usize = 1024;
/// The longest DPD interval accepted (and the shortest, so that a hostile value cannot make
/// the core spin).
const MAX_DPD_MS: u64 = 30 * 24 * 3600 * 1000;
const MIN_DPD_MS: u64 = 100;

fn key(b: &[u8]) -> Key {
    Key(Zeroizing::new(b.to_vec()))
}

fn datagrams(d: &[Vec<u8>]) -> Vec<Bytes> {
    d.iter().map(|b| Bytes(b.clone())).collect()
}

fn ts_out(ts: &[TrafficSelector]) -> Vec<TsSnapshot> {
    // Only ranges are ever negotiated (`ts::narrow` makes nothing else).
    ts.iter()
        .filter_map(|t| match t {
            TrafficSelector::Range {
                ip_protocol,
                start_port,
                end_port,
                start,
                end,
            } => Some(TsSnapshot {
                ip_protocol: *ip_protocol,
                start_port: *start_port,
                end_port: *end_port,
                start: *start,
                end: *end,
            }),
            TrafficSelector::Unknown { .. } => None,
        })
        .collect()
}

fn req_out(r: &Req) -> QueuedSnapshot {
    match r {
        Req::Dpd => QueuedSnapshot::Dpd,
        Req::DeleteChildren(s) => QueuedSnapshot::DeleteChildren { spis: s.clone() },
        Req::DeleteIke => QueuedSnapshot::DeleteIke,
        Req::RekeyChild(s) => QueuedSnapshot::RekeyChild { inbound: *s },
        Req::NewChild => QueuedSnapshot::NewChild,
        Req::RekeyIke => QueuedSnapshot::RekeyIke,
    }
}

fn pending_kind_out(k: &PendingKind) -> PendingKindSnapshot {
    match k {
        PendingKind::Dpd => PendingKindSnapshot::Dpd,
        PendingKind::DeleteChildren(s) => PendingKindSnapshot::DeleteChildren { spis: s.clone() },
        PendingKind::DeleteIke => PendingKindSnapshot::DeleteIke,
        PendingKind::RekeyChild {
            old_inbound,
            new_inbound,
            ..
        }
        | PendingKind::Orphan(Orphan::Child {
            old_inbound,
            new_inbound,
        }) => PendingKindSnapshot::RekeyChild {
            old_inbound: *old_inbound,
            new_inbound: *new_inbound,
        },
        PendingKind::RekeyIke { new_spi, .. } | PendingKind::Orphan(Orphan::Ike { new_spi }) => {
            PendingKindSnapshot::RekeyIke { new_spi: *new_spi }
        }
    }
}

fn export_one(sa: &IkeSa, e: &Established, now: Instant, wall: SystemTime) -> IkeSaSnapshot {
    let ms = |t: Instant| to_unix_ms(t, now, wall);
    let (send_e, send_a) = e.send.key_material();
    let (recv_e, recv_a) = e.recv.key_material();
    // §2.14: SK_ei/SK_ai protect the initiator's messages.
    let ((ei, ai), (er, ar)) = if sa.initiator {
        ((send_e, send_a), (recv_e, recv_a))
    } else {
        ((recv_e, recv_a), (send_e, send_a))
    };
    IkeSaSnapshot {
        spi_i: sa.spi_i,
        spi_r: sa.spi_r,
        initiator: sa.initiator,
        local: sa.path.local,
        remote: sa.path.remote,
        nat_remote_behind: sa.nat.remote_behind,
        nat_local_behind: sa.nat.local_behind,
        peer_frag: sa.peer_frag,
        created_ms: ms(sa.created),
        suite: SuiteSnapshot {
            encr: e.suite.encr.id().0,
            key_bits: e.suite.encr.key_bits(),
            integ: e.suite.integ.map(|i| i.id().0),
            prf: e.suite.prf.id().0,
            dh: e.suite.dh.id().0,
        },
        sk_d: key(&e.sk_d),
        sk_ai: key(ai),
        sk_ar: key(ar),
        sk_ei: key(ei),
        sk_er: key(er),
        peer_id_type: e.peer_id.id_type.0,
        peer_id: Bytes(e.peer_id.data.clone()),
        next_recv: e.win.next_recv,
        last_response: e
            .win
            .last_response
            .as_ref()
            .map(|(id, d)| ResponseSnapshot {
                message_id: *id,
                datagrams: datagrams(d),
            }),
        next_send: e.win.next_send,
        pending: e.win.pending.as_ref().map(|p| PendingSnapshot {
            message_id: p.message_id,
            exchange: p.retx.exchange.0,
            kind: pending_kind_out(&p.kind),
            datagrams: datagrams(&p.retx.datagrams),
        }),
        queue: e.queue.iter().map(req_out).collect(),
        children: e
            .children
            .iter()
            .map(|c| ChildSnapshot {
                inbound: c.inbound,
                outbound: c.outbound,
                esp: EspSnapshot {
                    number: c.choice.number,
                    encr: c.choice.encr.0,
                    key_bits: c.choice.key_bits,
                    integ: c.choice.integ.map(|i| i.0),
                    dh: c.choice.dh.map(|g| g.id().0),
                    spi: c.choice.spi,
                },
                local_ts: ts_out(&c.local_ts),
                remote_ts: ts_out(&c.remote_ts),
                state: match c.state {
                    ChildState::Active => ChildStateSnapshot::Active,
                    ChildState::Rekeying => ChildStateSnapshot::Rekeying,
                    ChildState::Replaced => ChildStateSnapshot::Replaced,
                    ChildState::Deleting => ChildStateSnapshot::Deleting,
                },
                outbound_active: c.outbound_active,
                replaces: c.replaces,
                created_ms: ms(c.created),
                rekey_at_ms: ms(c.rekey_at),
                expire_at_ms: ms(c.expire_at),
            })
            .collect(),
        rekey_at_ms: ms(e.rekey_at),
        expire_at_ms: ms(e.expire_at),
        dpd_interval_ms: u64::try_from(e.dpd_interval.as_millis()).unwrap_or(u64::MAX),
        pfs_hint: e.pfs_hint.map(|g| g.id().0),
        ike_dh_hint: e.ike_dh_hint.map(|g| g.id().0),
        superseded: e.superseded,
    }
}

/// Checks one snapshot and builds the SA it describes (passive).
struct Check<'a> {
    snap: &'a IkeSaSnapshot,
}

impl Check<'_> {
    fn bad<T>(&self, what: &'static str) -> Result<T, SnapshotError> {
        Err(SnapshotError::Invalid {
            spi_i: self.snap.spi_i,
            spi_r: self.snap.spi_r,
            what,
        })
    }

    fn ensure(&self, ok: bool, what: &'static str) -> Result<(), SnapshotError> {
        if ok { Ok(()) } else { self.bad(what) }
    }

    fn group(&self, id: u16, what: &'static str) -> Result<Group, SnapshotError> {
        Group::from_id(TransformId(id)).map_or_else(|| self.bad(what), Ok)
    }

    fn suite(&self) -> Result<IkeSuite, SnapshotError> {
        let s = &self.snap.suite;
        let Some(encr) = EncrAlg::from_transform(TransformId(s.encr), Some(s.key_bits)) else {
            return self.bad("unsupported IKE encryption");
        };
        let integ = match (encr.is_aead(), s.integ) {
            (true, None) => None,
            (false, Some(i)) => match IntegAlg::from_id(TransformId(i)) {
                Some(i) => Some(i),
                None => return self.bad("unsupported IKE integrity"),
            },
            _ => return self.bad("IKE encryption and integrity do not fit"),
        };
        let Some(prf) = PrfAlg::from_id(TransformId(s.prf)) else {
            return self.bad("unsupported PRF");
        };
        let dh = self.group(s.dh, "unsupported DH group")?;
        Ok(IkeSuite {
            encr,
            integ,
            prf,
            dh,
        })
    }

    /// The datagrams of one message: 1 to [`MAX_DATAGRAMS`], each an IKE message of this SA
    /// with `message_id` (a response or not).
    fn message(
        &self,
        d: &[Bytes],
        message_id: u32,
        response: bool,
        exchange: Option<ExchangeType>,
    ) -> Result<Vec<Vec<u8>>, SnapshotError> {
        let s = self.snap;
        self.ensure(
            !d.is_empty() && d.len() <= MAX_DATAGRAMS,
            "a message needs 1 to 16 datagrams",
        )?;
        for b in d {
            self.ensure(b.0.len() <= MAX_DATAGRAM_LEN, "datagram too long")?;
            let Ok(h) = Header::parse(&b.0) else {
                return self.bad("a datagram is not an IKE message");
            };
            let ok = h.spi_i == s.spi_i
                && h.spi_r == s.spi_r
                && h.message_id == message_id
                && h.is_response() == response
                && h.is_initiator() == s.initiator
                && exchange.is_none_or(|x| x == h.exchange);
            self.ensure(ok, "a datagram belongs to another message")?;
        }
        Ok(d.iter().map(|b| b.0.clone()).collect())
    }

    fn spis(&self, spis: &[u32]) -> Result<Vec<u32>, SnapshotError> {
        self.ensure(
            !spis.is_empty() && spis.len() <= MAX_SNAPSHOT_CHILDREN && !spis.contains(&0),
            "bad list of Child SA SPIs",
        )?;
        Ok(spis.to_vec())
    }

    fn ts(&self, ts: &[TsSnapshot]) -> Result<Vec<TrafficSelector>, SnapshotError> {
        self.ensure(
            !ts.is_empty() && ts.len() <= MAX_TS,
            "bad number of selectors",
        )?;
        ts.iter()
            .map(|t| {
                let ok = t.start_port <= t.end_port
                    && t.start.is_ipv4() == t.end.is_ipv4()
                    && t.start <= t.end;
                self.ensure(ok, "bad traffic selector")?;
                Ok(TrafficSelector::Range {
                    ip_protocol: t.ip_protocol,
                    start_port: t.start_port,
                    end_port: t.end_port,
                    start: t.start,
                    end: t.end,
                })
            })
            .collect()
    }

    fn esp(&self, e: &EspSnapshot) -> Result<EspChoice, SnapshotError> {
        let encr = TransformId(e.encr);
        let integ = e.integ.map(TransformId);
        let integ_ok = matches!(
            integ,
            Some(TransformId::AUTH_HMAC_SHA2_256_128 | TransformId::AUTH_HMAC_SHA1_96)
        );
        let ok = match encr {
            TransformId::ENCR_AES_GCM_16 => {
                matches!(e.key_bits, Some(128 | 256)) && integ.is_none()
            }
            TransformId::ENCR_AES_CBC => matches!(e.key_bits, Some(128 | 256)) && integ_ok,
            TransformId::ENCR_NULL => e.key_bits.is_none() && integ_ok,
            _ => false,
        };
        self.ensure(ok && e.spi != 0, "unsupported ESP algorithms")?;
        let dh = match e.dh {
            Some(g) => Some(self.group(g, "unsupported PFS group")?),
            None => None,
        };
        Ok(EspChoice {
            number: e.number,
            encr,
            key_bits: e.key_bits,
            integ,
            dh,
            spi: e.spi,
        })
    }

    fn build(&self, now: Instant, wall: SystemTime) -> Result<IkeSa, SnapshotError> {
        let s = self.snap;
        let at = |ms: u64| from_unix_ms(ms, now, wall);
        self.ensure(s.spi_i != 0 && s.spi_r != 0, "zero SPI")?;
        let suite = self.suite()?;
        self.ensure(s.sk_d.0.len() == suite.prf.output_len(), "SK_d length")?;
        let encr_len = suite.encr.keymat_len();
        let integ_len = suite.integ.map_or(0, IntegAlg::key_len);
        self.ensure(
            s.sk_ei.0.len() == encr_len && s.sk_er.0.len() == encr_len,
            "SK_e length",
        )?;
        self.ensure(
            s.sk_ai.0.len() == integ_len && s.sk_ar.0.len() == integ_len,
            "SK_a length",
        )?;
        let i_to_r = SkCipher::new(suite.encr, suite.integ, &s.sk_ei.0, &s.sk_ai.0);
        let r_to_i = SkCipher::new(suite.encr, suite.integ, &s.sk_er.0, &s.sk_ar.0);
        let (Ok(i_to_r), Ok(r_to_i)) = (i_to_r, r_to_i) else {
            return Err(SnapshotError::Cipher);
        };
        let (send, recv) = if s.initiator {
            (i_to_r, r_to_i)
        } else {
            (r_to_i, i_to_r)
        };
        self.ensure(
            s.peer_id.0.len() <= MAX_ID_LEN && !s.peer_id.0.is_empty(),
            "peer ID length",
        )?;
        // Message IDs: the cached answer is to the request before `next_recv`, the pending
        // request is the one before `next_send`.
        self.ensure(
            s.next_recv < u32::MAX && s.next_send < u32::MAX,
            "message ID exhausted",
        )?;
        let last_response = match &s.last_response {
            Some(r) => {
                self.ensure(
                    r.message_id.checked_add(1) == Some(s.next_recv),
                    "cached response does not precede next_recv",
                )?;
                Some((
                    r.message_id,
                    self.message(&r.datagrams, r.message_id, true, None)?,
                ))
            }
            None => None,
        };
        let mut children = Vec::new();
        self.ensure(
            s.children.len() <= MAX_SNAPSHOT_CHILDREN,
            "too many Child SAs",
        )?;
        for c in &s.children {
            self.ensure(c.inbound != 0 && c.outbound != 0, "zero Child SA SPI")?;
            let choice = self.esp(&c.esp)?;
            self.ensure(choice.spi == c.outbound, "ESP SPI differs from outbound")?;
            children.push(Child {
                inbound: c.inbound,
                outbound: c.outbound,
                choice,
                local_ts: self.ts(&c.local_ts)?,
                remote_ts: self.ts(&c.remote_ts)?,
                created: at(c.created_ms),
                rekey_at: at(c.rekey_at_ms),
                expire_at: at(c.expire_at_ms),
                outbound_active: c.outbound_active,
                replaces: c.replaces,
                state: match c.state {
                    ChildStateSnapshot::Active => ChildState::Active,
                    ChildStateSnapshot::Rekeying => ChildState::Rekeying,
                    ChildStateSnapshot::Replaced => ChildState::Replaced,
                    ChildStateSnapshot::Deleting => ChildState::Deleting,
                },
            });
        }
        let pending = match &s.pending {
            Some(p) => {
                self.ensure(
                    p.message_id.checked_add(1) == Some(s.next_send),
                    "pending request does not precede next_send",
                )?;
                let exchange = ExchangeType(p.exchange);
                let (kind, want) = match &p.kind {
                    PendingKindSnapshot::Dpd => (PendingKind::Dpd, ExchangeType::INFORMATIONAL),
                    PendingKindSnapshot::DeleteChildren { spis } => (
                        PendingKind::DeleteChildren(self.spis(spis)?),
                        ExchangeType::INFORMATIONAL,
                    ),
                    PendingKindSnapshot::DeleteIke => {
                        (PendingKind::DeleteIke, ExchangeType::INFORMATIONAL)
                    }
                    PendingKindSnapshot::RekeyChild {
                        old_inbound,
                        new_inbound,
                    } => {
                        self.ensure(
                            *new_inbound != 0 && *old_inbound != Some(0),
                            "zero Child SA SPI",
                        )?;
                        (
                            PendingKind::Orphan(Orphan::Child {
                                old_inbound: *old_inbound,
                                new_inbound: *new_inbound,
                            }),
                            ExchangeType::CREATE_CHILD_SA,
                        )
                    }
                    PendingKindSnapshot::RekeyIke { new_spi } => {
                        self.ensure(*new_spi != 0, "zero SPI")?;
                        (
                            PendingKind::Orphan(Orphan::Ike { new_spi: *new_spi }),
                            ExchangeType::CREATE_CHILD_SA,
                        )
                    }
                };
                self.ensure(exchange == want, "pending exchange does not fit its kind")?;
                let d = self.message(&p.datagrams, p.message_id, false, Some(exchange))?;
                Some(Pending {
                    message_id: p.message_id,
                    // Restarted on activation (`set_passive(false)`).
                    retx: Retx::new(now, exchange, d),
                    kind,
                })
            }
            None => None,
        };
        self.ensure(s.queue.len() <= MAX_QUEUE, "too many queued requests")?;
        let mut queue = std::collections::VecDeque::new();
        for q in &s.queue {
            queue.push_back(match q {
                QueuedSnapshot::Dpd => Req::Dpd,
                QueuedSnapshot::DeleteChildren { spis } => Req::DeleteChildren(self.spis(spis)?),
                QueuedSnapshot::DeleteIke => Req::DeleteIke,
                QueuedSnapshot::RekeyChild { inbound } => Req::RekeyChild(*inbound),
                QueuedSnapshot::NewChild => Req::NewChild,
                QueuedSnapshot::RekeyIke => Req::RekeyIke,
            });
        }
        self.ensure(
            (MIN_DPD_MS..=MAX_DPD_MS).contains(&s.dpd_interval_ms),
            "DPD interval out of range",
        )?;
        let pfs_hint = match s.pfs_hint {
            Some(g) => Some(self.group(g, "unsupported PFS hint")?),
            None => None,
        };
        let ike_dh_hint = match s.ike_dh_hint {
            Some(g) => Some(self.group(g, "unsupported DH hint")?),
            None => None,
        };
        let mut win = Windows::new(s.next_recv, last_response, s.next_send);
        win.pending = pending;
        let e = Established {
            suite,
            sk_d: Zeroizing::new(s.sk_d.0.to_vec()),
            send,
            recv,
            peer_id: Identification {
                id_type: IdType(s.peer_id_type),
                data: s.peer_id.0.clone(),
            },
            win,
            children,
            rekey_at: at(s.rekey_at_ms),
            expire_at: at(s.expire_at_ms),
            last_heard: now,
            superseded: s.superseded,
            queue,
            dpd_interval: Duration::from_millis(s.dpd_interval_ms),
            pfs_hint,
            ike_dh_hint,
            passive: true,
        };
        Ok(IkeSa {
            spi_i: s.spi_i,
            spi_r: s.spi_r,
            initiator: s.initiator,
            path: Path {
                local: s.local,
                remote: s.remote,
            },
            created: at(s.created_ms),
            peer_frag: s.peer_frag,
            nat: NatState {
                remote_behind: s.nat_remote_behind,
                local_behind: s.nat_local_behind,
            },
            reassembly: None,
            state: State::Established(Box::new(e)),
        })
    }
}

impl Endpoint {
    /// Snapshots of the established IKE SAs (also those replaced by a rekey and waiting for
    /// their Delete); half-open ones are not exported. Times are converted to unix
    /// milliseconds with `now` being `wall`.
    pub fn export(&self, now: Instant, wall: SystemTime) -> Vec<IkeSaSnapshot> {
        self.sas
            .values()
            .filter_map(|sa| match &sa.state {
                State::Established(e) => Some(export_one(sa, e, now, wall)),
                _ => None,
            })
            .collect()
    }

    /// Makes the endpoint's established SAs exactly `snaps` (the others are dropped silently:
    /// no Delete, no Output); imported SAs are passive. Half-open SAs are kept. Everything is
    /// checked first: on an error nothing changes.
    pub fn import(
        &mut self,
        snaps: Vec<IkeSaSnapshot>,
        now: Instant,
        wall: SystemTime,
    ) -> Result<(), SnapshotError> {
        if snaps.len() > MAX_SNAPSHOTS {
            return Err(SnapshotError::TooMany(snaps.len()));
        }
        let kept: Vec<&IkeSa> = self
            .sas
            .values()
            .filter(|s| !matches!(s.state, State::Established(_)))
            .collect();
        let mut ike_spis: Vec<u64> = kept.iter().map(|s| s.our_spi()).collect();
        let mut esp_spis: Vec<u32> = kept.iter().flat_map(|s| s.child_spis()).collect();
        let mut built = Vec::with_capacity(snaps.len());
        for snap in &snaps {
            let sa = Check { snap }.build(now, wall)?;
            let ours = sa.our_spi();
            if ike_spis.contains(&ours) {
                return Err(SnapshotError::DuplicateSpi(ours));
            }
            ike_spis.push(ours);
            for spi in sa.child_spis() {
                if esp_spis.contains(&spi) {
                    return Err(SnapshotError::DuplicateChildSpi(spi));
                }
                esp_spis.push(spi);
            }
            built.push(sa);
        }
        self.sas
            .retain(|_, s| !matches!(s.state, State::Established(_)));
        for sa in built {
            self.sas.insert(sa.our_spi(), sa);
        }
        self.passive = true;
        self.last_now = Some(now);
        Ok(())
    }

    /// Passive established SAs send nothing of their own (no DPD, rekey, retransmission,
    /// queued request or expiry Delete; their expiry removes them silently) but answer what
    /// [`Endpoint::handle`] gives them. Applies to every established SA (SAs negotiated here
    /// later are active). Activating restarts each SA's DPD clock at `now`, and its pending
    /// request's retransmissions: the next [`Endpoint::poll`] sends it again, then the usual
    /// schedule follows.
    pub fn set_passive(&mut self, passive: bool, now: Instant) {
        self.passive = passive;
        self.last_now = Some(now);
        for sa in self.sas.values_mut() {
            let State::Established(e) = &mut sa.state else {
                continue;
            };
            let was = e.passive;
            e.passive = passive;
            if was && !passive {
                e.last_heard = now;
                if let Some(p) = &mut e.win.pending {
                    let d = std::mem::take(&mut p.retx.datagrams);
                    let mut retx = Retx::new(now, p.retx.exchange, d);
                    retx.next_at = now;
                    retx.tries = 0;
                    p.retx = retx;
                }
            }
        }
    }

    /// [`Endpoint::import`] or [`Endpoint::set_passive`]`(true)` made the endpoint passive and
    /// no `set_passive(false)` followed.
    pub fn is_passive(&self) -> bool {
        self.passive
    }
}
