//! One direction of an IPsec Child SA (RFC 4303), sans-IO: inner packets in, ESP packets out,
//! and back. The sequence number, the replay window and the lifetime counters live here; the
//! cryptography in `suite`.
//!
//! An SA's parameters (`SaParams`) serialise, so that another process (an anycast replica) can
//! install the same SA. Keys are base64 on the wire, zeroized on drop, and redacted in `Debug`.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::Ipv4Net;

use serde::{Deserialize, Serialize};

use super::replay::{Replay, ReplaySnapshot, ReplayWindow};
use super::suite::{HEADER_LEN, KeyError, OpenError, Transform};
use crate::config::Secret;
pub use crate::config::{SaLifetime, SaParams, StaticSa, TrafficSelectors};
use crate::wire::{esp, ipv4};

/// RFC 4303 §2.6 / IANA protocol numbers of what the ESP payload carries.
pub const NEXT_IPV4: u8 = 4;
pub const NEXT_IPV6: u8 = 41;
/// "No next header": a dummy packet (RFC 4303 §2.6), discarded on receipt.
pub const NEXT_NONE: u8 = 59;

/// Outbound sequence numbers above this ask for a rekey (2^32 − 2^24: at 1 Mpps, ≈ 16 s before
/// the number space ends).
pub const SEQ_REKEY_MARK: u32 = u32::MAX - (1 << 24);

/// Where an SA's age stands against its time lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Age {
    Fresh,
    /// 90 % of the lifetime used: replace the SA.
    Rekey,
    /// Lifetime over: the SA refuses to send or receive from now on.
    Expired,
}

fn age_status(age: std::time::Duration, limit: Option<u64>) -> Age {
    match limit {
        Some(l) if age.as_secs() >= l => Age::Expired,
        Some(l) if age.as_secs() >= l / 10 * 9 => Age::Rekey,
        _ => Age::Fresh,
    }
}

/// Whether an inner packet from `src` to `dst` belongs to the selectors, seen from our side. Only
/// IPv4 is selected on; IPv6 inner packets pass only when both lists are "any".
fn admits(ts: &TrafficSelectors, packet: &[u8], inbound: bool) -> bool {
    let any = |l: &[Ipv4Net]| l.iter().any(|n| n.prefix_len() == 0);
    match ipv4::Packet::new_checked(packet) {
        Ok(ip) => {
            let (ours, theirs) = if inbound {
                (ip.dst_addr(), ip.src_addr())
            } else {
                (ip.src_addr(), ip.dst_addr())
            };
            ts.local.iter().any(|n| n.contains(&ours))
                && ts.remote.iter().any(|n| n.contains(&theirs))
        }
        Err(_) => any(&ts.local) && any(&ts.remote),
    }
}

/// The transform an SA's parameters describe.
fn transform(p: &SaParams) -> Result<Transform, KeyError> {
    let integ = p.integrity_key.as_ref().map_or(&[][..], Secret::as_bytes);
    Transform::new(
        p.encryption,
        p.integrity,
        p.encryption_key.as_bytes(),
        integ,
    )
}

/// Why an inbound SA refused an ESP packet. The data path counts each as a drop reason
/// (`From<Refused> for DropReason`, the one place where ESP's errors meet the counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("shorter than the ESP header, IV, one block and ICV")]
    Truncated,
    #[error("the ICV does not verify")]
    BadIcv,
    #[error("padding is not 1, 2, 3, … (RFC 4303 §2.4)")]
    BadPadding,
    #[error("sequence number already received")]
    Replayed,
    #[error("sequence number left of the replay window")]
    TooOld,
    #[error("next header is not IPv4, IPv6 or no-next-header")]
    BadNextHeader,
    #[error("a dummy packet (next header 59)")]
    Dummy,
    #[error("the inner packet is not the IP version its next header says, or is cut short")]
    MalformedInner,
    #[error("the inner packet is outside the SA's traffic selectors")]
    SelectorMismatch,
    #[error("the SA reached its lifetime")]
    Exhausted,
}

/// Why an inner packet was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the 32-bit sequence number is used up: the SA must be replaced")]
    SequenceExhausted,
    #[error("the SA reached its hard lifetime")]
    Expired,
    #[error("no room around the packet for the ESP header and trailer")]
    NoRoom,
    #[error("the packet is outside the SA's traffic selectors")]
    NotSelected,
}

/// The outbound half: seals inner packets. Shared by every thread that sends (data path,
/// prober, reflected probes): the counters are atomics, so each packet gets its own number.
///
/// Two schemes (module docs of [`SenderSlot`]): the single sender (`new`, `restore`, or a slot
/// count of 1), where IV = `iv_base` + sequence number, and shared mode (`shared`,
/// `restore_shared` with a slot count above 1), where several processes (anycast replicas) send
/// on one SA, each in its own slot.
#[derive(Debug)]
pub struct Outbound {
    params: SaParams,
    transform: Transform,
    /// The last sequence number used (0: none yet; RFC 4303 §3.3.3 starts at 1). In shared mode
    /// the last number this slot used, or, before its first packet, the number published with
    /// the state it continues.
    seq: AtomicU32,
    /// IV = `iv_base` + sequence number. Random per SA instance, so that a process that starts
    /// the same (manually keyed) SA again, with the sequence back at 1, does not repeat a GCM
    /// nonce or a CBC IV: two runs collide only if their 2^32-wide ranges overlap in 2^64.
    /// In shared mode every replica has the published `iv_base` and adds its slot's counter.
    iv_base: u64,
    /// The epoch and lifetime of a shared SA, as published (also kept with one slot).
    shared: Option<SharedSeq>,
    /// The sender slot's state; `None` in the single-sender scheme.
    slot: Option<Slot>,
    bytes: AtomicU64,
    packets: AtomicU64,
    expired: AtomicBool,
}

/// Which of several senders on one outbound SA this process is: `index` in `0..count`.
///
/// With `count` > 1 (several anycast replicas seal on the same SA, same key), the slot keeps
/// their packets apart:
/// - IV input (the GCM explicit IV; CBC encrypts it into the IV) =
///   `iv_base` + ((`index` << 56) | c), with c = max(previous c + 1, nanoseconds of the wall
///   clock since [`IV_CLOCK_MARGIN`] before the SA's epoch), taken atomically. Two replicas
///   differ in the top byte; a replica that restarts continues from its clock, above what it
///   used before. c is at least 2^32, so shared IVs never meet a single sender's
///   (`iv_base` + 1 ..= `iv_base` + 2^32 − 1). A (key, nonce) pair never repeats as long as no
///   replica's clock runs more than the margin behind the epoch, nor steps back across a
///   restart by more than the restart took.
/// - Sequence number: the smallest value above the previous one with seq ≡ `index` + 1
///   (mod `count`) and seq ≥ floor(now), floor = (now − epoch) · 2^32 / lifetime (hard
///   lifetime). Slots never send the same number, and a replica that takes over from another
///   sends numbers above the old sender's (up to clock skew × rate), so a peer's anti-replay
///   window keeps accepting after a path switch.
///
/// `count` == 1 is exactly the single-sender scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SenderSlot {
    pub index: u8,
    pub count: u8,
}

impl SenderSlot {
    /// The one sender of a non-shared SA.
    pub const SINGLE: SenderSlot = SenderSlot { index: 0, count: 1 };

    fn check(self) -> Result<(), KeyError> {
        if self.count == 0 {
            Err(KeyError::BadSenderSlot("count is 0"))
        } else if self.index >= self.count {
            Err(KeyError::BadSenderSlot("index is not below count"))
        } else {
            Ok(())
        }
    }
}

/// The shared-mode parameters of an outbound SA, published with its state so that every
/// replica derives the same sequence floor.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SharedSeq {
    /// When the SA was installed (ms since the Unix epoch): the floor is 0 then.
    pub epoch_unix_ms: u64,
    /// The SA's hard lifetime: the floor reaches 2^32 then.
    pub lifetime_ms: u64,
}

/// How far before the SA's epoch the IV clock starts: a replica whose wall clock is behind the
/// epoch (skew between nodes) by less than this still draws its IV counter from the clock.
pub const IV_CLOCK_MARGIN: Duration = Duration::from_secs(3600);

/// Bit position of the slot index in the shared-mode IV input; c stays below 2^56 (≈ 833 days).
const SLOT_SHIFT: u32 = 56;

/// A shared-mode sender's constants and IV counter.
#[derive(Debug)]
struct Slot {
    /// Sequence numbers of this slot are ≡ `residue` (mod `count`).
    residue: u64,
    count: u64,
    /// `index` << 56.
    index_bits: u64,
    /// The SA's epoch in ns since the Unix epoch.
    epoch_ns: u64,
    /// Where the IV clock starts (ns since the Unix epoch): `epoch_ns` − margin.
    iv_clock_ns: u64,
    /// The hard lifetime in ns.
    lifetime_ns: u64,
    /// floor = ⌈elapsed ns · `rate` / 2^64⌉, `rate` = ⌈2^96 / lifetime ns⌉: a multiplication per
    /// packet instead of a division; it is the smallest integer ≥ the exact floor, or one above.
    rate: u128,
    /// The last IV counter c used.
    iv_counter: AtomicU64,
}

impl Slot {
    fn new(slot: SenderSlot, shared: SharedSeq) -> Result<Self, KeyError> {
        slot.check()?;
        let lifetime_ns = shared.lifetime_ms.saturating_mul(1_000_000);
        if lifetime_ns == 0 {
            return Err(KeyError::BadSenderSlot("lifetime is 0"));
        }
        let epoch_ns = shared.epoch_unix_ms.saturating_mul(1_000_000);
        let rate = (1u128 << 96).div_ceil(u128::from(lifetime_ns));
        Ok(Slot {
            residue: (u64::from(slot.index) + 1) % u64::from(slot.count),
            count: u64::from(slot.count),
            index_bits: u64::from(slot.index) << SLOT_SHIFT,
            epoch_ns,
            iv_clock_ns: epoch_ns.saturating_sub(IV_CLOCK_MARGIN.as_nanos() as u64),
            lifetime_ns,
            rate,
            iv_counter: AtomicU64::new(u64::from(u32::MAX)),
        })
    }

    /// The sequence floor at `now_ns` (ns since the Unix epoch): 0 before the epoch, 2^32 (no
    /// number left) once the lifetime is over.
    fn floor(&self, now_ns: u64) -> u64 {
        let elapsed = now_ns.saturating_sub(self.epoch_ns);
        if elapsed >= self.lifetime_ns {
            return 1 << 32;
        }
        // elapsed < lifetime, so the product stays below 2^97 and the result at most 2^32.
        ((u128::from(elapsed) * self.rate + u128::from(u64::MAX)) >> 64) as u64
    }

    /// The number after `prev` in this slot, at least `floor`; `None` beyond 2^32 − 1.
    fn next_seq(&self, prev: u32, floor: u64) -> Option<u32> {
        let lower = (u64::from(prev) + 1).max(floor);
        let mut up = self.residue + self.count - lower % self.count;
        if up >= self.count {
            up -= self.count;
        }
        u32::try_from(lower + up).ok()
    }

    /// The next IV input offset, `(index << 56) | c`.
    fn next_iv(&self, now_ns: u64) -> Option<u64> {
        let clock = now_ns.saturating_sub(self.iv_clock_ns);
        let next = |prev: u64| Some((prev + 1).max(clock)).filter(|&c| c < 1 << SLOT_SHIFT);
        let prev = self
            .iv_counter
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, next)
            .ok()?;
        Some(self.index_bits | next(prev)?)
    }
}

/// The wall clock in ns since the Unix epoch.
fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Serialisable state of an outbound SA, to hand to another process.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundState {
    pub params: SaParams,
    /// The last sequence number used; the new holder continues after it.
    pub seq: u32,
    /// Where this SA's IV counter started (see `Outbound::iv_base`).
    pub iv_base: u64,
    /// Set for an SA that several replicas send on (see [`SenderSlot`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<SharedSeq>,
}

impl Outbound {
    pub fn new(params: SaParams) -> Result<Self, KeyError> {
        Ok(Outbound {
            transform: transform(&params)?,
            params,
            seq: AtomicU32::new(0),
            iv_base: random_u64()?,
            shared: None,
            slot: None,
            bytes: AtomicU64::new(0),
            packets: AtomicU64::new(0),
            expired: AtomicBool::new(false),
        })
    }

    /// Continues a single-sender SA where `state` left it (its `shared` part is kept for
    /// `state`, not used).
    pub fn restore(state: OutboundState) -> Result<Self, KeyError> {
        let mut sa = Outbound::new(state.params)?;
        sa.seq.store(state.seq, Ordering::Relaxed);
        sa.iv_base = state.iv_base;
        sa.shared = state.shared;
        Ok(sa)
    }

    /// A new SA that `slot.count` replicas send on (see [`SenderSlot`]): `epoch_unix_ms` is
    /// when the SA was installed, `lifetime` its hard lifetime. With one slot this is `new`.
    pub fn shared(
        params: SaParams,
        slot: SenderSlot,
        epoch_unix_ms: u64,
        lifetime: Duration,
    ) -> Result<Self, KeyError> {
        let shared = SharedSeq {
            epoch_unix_ms,
            lifetime_ms: u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX),
        };
        Outbound::restore_shared(
            OutboundState {
                params,
                seq: 0,
                iv_base: random_u64()?,
                shared: Some(shared),
            },
            slot,
        )
    }

    /// Continues a published shared SA in this replica's slot: the first number sent is the
    /// slot's next one above `state.seq` (and the floor). A state without its `shared` part
    /// is refused for more than one slot (its IVs would not be partitioned).
    pub fn restore_shared(state: OutboundState, slot: SenderSlot) -> Result<Self, KeyError> {
        slot.check()?;
        if slot.count == 1 {
            return Outbound::restore(state);
        }
        let shared = state.shared.ok_or(KeyError::BadSenderSlot(
            "the state has no epoch (not shared)",
        ))?;
        let slot = Slot::new(slot, shared)?;
        let mut sa = Outbound::restore(state)?;
        sa.slot = Some(slot);
        Ok(sa)
    }

    /// The state another process needs to continue this SA. A single sender must stop sending
    /// on this one (two senders would reuse sequence numbers and GCM IVs); in shared mode every
    /// replica continues in its own slot (`restore_shared`).
    pub fn state(&self) -> OutboundState {
        OutboundState {
            params: self.params.clone(),
            seq: self.seq.load(Ordering::Relaxed),
            iv_base: self.iv_base,
            shared: self.shared,
        }
    }

    pub fn spi(&self) -> u32 {
        self.params.spi
    }

    pub fn params(&self) -> &SaParams {
        &self.params
    }

    /// Whether this SA's traffic selectors take the inner packet we are about to send.
    pub fn selects(&self, packet: &[u8]) -> bool {
        admits(&self.params.traffic_selectors, packet, false)
    }

    /// Bytes and packets sealed so far.
    pub fn usage(&self) -> (u64, u64) {
        (
            self.bytes.load(Ordering::Relaxed),
            self.packets.load(Ordering::Relaxed),
        )
    }

    /// Space needed before the inner packet (header + IV) and after it (padding, trailer, ICV).
    pub fn headroom(&self) -> usize {
        HEADER_LEN + self.transform.iv_len()
    }

    pub fn tailroom(&self) -> usize {
        self.transform.align() - 1 + 2 + self.transform.icv_len()
    }

    pub fn overhead(&self, inner_len: usize) -> usize {
        self.transform.overhead(inner_len)
    }

    /// True once the SA should be replaced: the sequence number passed its high-water mark, or
    /// 90 % of a hard lifetime is used.
    pub fn needs_rekey(&self) -> bool {
        let soft = |used: u64, limit: Option<u64>| limit.is_some_and(|l| used >= l / 10 * 9);
        self.seq.load(Ordering::Relaxed) >= SEQ_REKEY_MARK
            || soft(
                self.bytes.load(Ordering::Relaxed),
                self.params.lifetime.bytes,
            )
            || soft(
                self.packets.load(Ordering::Relaxed),
                self.params.lifetime.packets,
            )
    }

    /// True once the SA cannot send any more (expired, lifetime used up, sequence exhausted).
    pub fn is_exhausted(&self) -> bool {
        let limit = self.params.lifetime;
        let reached =
            |used: &AtomicU64, l: Option<u64>| l.is_some_and(|l| used.load(Ordering::Relaxed) >= l);
        let last = self.slot.as_ref().map_or(1, |s| s.count as u32);
        self.expired.load(Ordering::Relaxed)
            || self.seq.load(Ordering::Relaxed) > u32::MAX - last
            || reached(&self.bytes, limit.bytes)
            || reached(&self.packets, limit.packets)
    }

    /// Reports the SA's age; past its time lifetime it stops sending for good.
    pub fn check_age(&self, age: std::time::Duration) -> Age {
        let status = age_status(age, self.params.lifetime.seconds);
        if status == Age::Expired {
            self.expired.store(true, Ordering::Relaxed);
        }
        status
    }

    /// Seals the inner packet at `buf[inner]` into an ESP packet around it (header and IV before,
    /// padding, trailer and ICV after); returns the packet's range in `buf`.
    pub fn seal(
        &self,
        buf: &mut [u8],
        inner: Range<usize>,
        next_header: u8,
    ) -> Result<Range<usize>, SealError> {
        // Only shared mode reads the clock.
        let now = if self.slot.is_some() { wall_ns() } else { 0 };
        self.seal_at(buf, inner, next_header, now)
    }

    /// `seal` at wall time `now_ns` (ns since the Unix epoch; used in shared mode only).
    fn seal_at(
        &self,
        buf: &mut [u8],
        inner: Range<usize>,
        next_header: u8,
        now_ns: u64,
    ) -> Result<Range<usize>, SealError> {
        let len = inner.len();
        if self.expired.load(Ordering::Relaxed) {
            return Err(SealError::Expired);
        }
        if !buf
            .get(inner.clone())
            .is_some_and(|p| admits(&self.params.traffic_selectors, p, false))
        {
            return Err(SealError::NotSelected);
        }
        let over = |used: &AtomicU64, add: u64, limit: Option<u64>| {
            limit.is_some_and(|l| used.load(Ordering::Relaxed).saturating_add(add) > l)
        };
        if over(&self.bytes, len as u64, self.params.lifetime.bytes)
            || over(&self.packets, 1, self.params.lifetime.packets)
        {
            return Err(SealError::Expired);
        }
        // RFC 4303 §3.3.3: with ESN off the sequence number must not cycle; the sender stops.
        // A number is taken atomically, so concurrent senders never share one (nor a GCM IV).
        let (seq, iv) = match &self.slot {
            None => {
                let seq = self
                    .seq
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| s.checked_add(1))
                    .map_err(|_| SealError::SequenceExhausted)?
                    + 1;
                (seq, u64::from(seq))
            }
            Some(slot) => self.next_shared(slot, now_ns)?,
        };
        let start = inner
            .start
            .checked_sub(self.headroom())
            .ok_or(SealError::NoRoom)?;
        let body_len = (len + 2).next_multiple_of(self.transform.align());
        let pad = body_len - len - 2;
        let body_end = inner.start + body_len;
        let end = body_end + self.transform.icv_len();
        let packet = buf.get_mut(start..end).ok_or(SealError::NoRoom)?;
        packet[..4].copy_from_slice(&self.params.spi.to_be_bytes());
        packet[4..8].copy_from_slice(&seq.to_be_bytes());
        let trailer = &mut packet[self.headroom() + len..self.headroom() + body_len];
        // RFC 4303 §2.4: default padding is 1, 2, 3, …
        for (i, b) in trailer[..pad].iter_mut().enumerate() {
            *b = (i + 1) as u8;
        }
        trailer[pad] = pad as u8;
        trailer[pad + 1] = next_header;
        self.transform
            .seal(packet, self.iv_base.wrapping_add(iv))
            .map_err(|_| SealError::NoRoom)?;
        self.bytes.fetch_add(len as u64, Ordering::Relaxed);
        self.packets.fetch_add(1, Ordering::Relaxed);
        Ok(start..end)
    }

    /// A shared-mode slot's next (sequence number, IV offset) at wall time `now_ns`. Past the
    /// last number the SA stays exhausted (`is_exhausted`), as a single sender's does.
    fn next_shared(&self, slot: &Slot, now_ns: u64) -> Result<(u32, u64), SealError> {
        let floor = slot.floor(now_ns);
        let taken = self
            .seq
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |prev| {
                slot.next_seq(prev, floor)
            });
        let seq = match taken.ok().and_then(|prev| slot.next_seq(prev, floor)) {
            Some(seq) => seq,
            None => {
                self.seq.store(u32::MAX, Ordering::Relaxed);
                return Err(SealError::SequenceExhausted);
            }
        };
        let Some(iv) = slot.next_iv(now_ns) else {
            // The IV counter passed 2^56 ns (≈ 833 days): as exhausted as the sequence.
            self.seq.store(u32::MAX, Ordering::Relaxed);
            return Err(SealError::SequenceExhausted);
        };
        Ok((seq, iv))
    }
}

/// A decrypted inner packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The inner IP packet, TFC padding (RFC 4303 §2.7) cut off.
    pub inner: Range<usize>,
    pub next_header: u8,
}

/// The inbound half: verifies, replay-checks and opens ESP packets. Shared by every thread that
/// receives on the SA (the data path's receive thread, the IKE task's strays): the keys are
/// immutable after install, the counters atomic, and only the replay window is locked, never
/// across the ICV check and decryption (see [`open`](Self::open)).
#[derive(Debug)]
pub struct Inbound {
    params: SaParams,
    transform: Transform,
    window: Mutex<ReplayWindow>,
    bytes: AtomicU64,
    packets: AtomicU64,
    expired: AtomicBool,
}

/// Serialisable state of an inbound SA.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InboundState {
    pub params: SaParams,
    pub replay: ReplaySnapshot,
}

impl Inbound {
    /// `replay_window`: `Some(size)` (a multiple of 64) to enforce anti-replay, `None` to
    /// accept any sequence number (Magic WAN's default).
    pub fn new(params: SaParams, replay_window: Option<u32>) -> Result<Self, KeyError> {
        let window = match replay_window {
            Some(size) => ReplayWindow::new(size).ok_or(KeyError::BadReplayWindow(size))?,
            None => ReplayWindow::disabled(),
        };
        Ok(Inbound {
            transform: transform(&params)?,
            params,
            window: Mutex::new(window),
            bytes: AtomicU64::new(0),
            packets: AtomicU64::new(0),
            expired: AtomicBool::new(false),
        })
    }

    pub fn restore(state: InboundState) -> Result<Self, KeyError> {
        let size = state.replay.size;
        let window = ReplayWindow::restore(state.replay).ok_or(KeyError::BadReplayWindow(size))?;
        Ok(Inbound {
            transform: transform(&state.params)?,
            params: state.params,
            window: Mutex::new(window),
            bytes: AtomicU64::new(0),
            packets: AtomicU64::new(0),
            expired: AtomicBool::new(false),
        })
    }

    pub fn state(&self) -> InboundState {
        InboundState {
            params: self.params.clone(),
            replay: self.window().snapshot(),
        }
    }

    /// The replay window, locked. Its methods never panic (see `replay`), so a poisoned lock
    /// still holds a consistent window.
    fn window(&self) -> MutexGuard<'_, ReplayWindow> {
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn spi(&self) -> u32 {
        self.params.spi
    }

    pub fn params(&self) -> &SaParams {
        &self.params
    }

    /// Bytes and packets opened so far.
    pub fn usage(&self) -> (u64, u64) {
        (
            self.bytes.load(Ordering::Relaxed),
            self.packets.load(Ordering::Relaxed),
        )
    }

    /// Reports the SA's age; past its time lifetime it refuses every packet.
    pub fn check_age(&self, age: std::time::Duration) -> Age {
        let status = age_status(age, self.params.lifetime.seconds);
        if status == Age::Expired {
            self.expired.store(true, Ordering::Relaxed);
        }
        status
    }

    /// Opens the ESP packet `packet` (starting at the SPI) in place. Safe to call from several
    /// threads at once: each sequence number is accepted at most once.
    ///
    /// RFC 4303 §3.4.3: "If the preliminary check is successful, the receiver cannot yet modify
    /// its local counter, because the integrity of the Sequence Number has not been verified at
    /// this point." and "The receive window is updated only if the integrity verification
    /// succeeds." So the window is locked twice: for the preliminary check, and after the ICV
    /// verified for the accept, which checks again (another thread may have accepted the same
    /// number in between: then this copy is the replay). The ICV check and decryption, the
    /// packet's real cost, run unlocked.
    pub fn open(&self, packet: &mut [u8]) -> Result<Opened, Refused> {
        let limit = self.params.lifetime;
        // Concurrent opens may each pass this before either counts: a lifetime can be
        // overrun by at most one packet per receiving thread.
        let reached =
            |used: &AtomicU64, l: Option<u64>| l.is_some_and(|l| used.load(Ordering::Relaxed) >= l);
        if self.expired.load(Ordering::Relaxed)
            || reached(&self.bytes, limit.bytes)
            || reached(&self.packets, limit.packets)
        {
            return Err(Refused::Exhausted);
        }
        let seq = esp::Packet::new_checked(&*packet)
            .map_err(|_| Refused::Truncated)?
            .sequence();
        self.window().check(seq).map_err(replay_drop)?;
        let body = self.transform.open(packet).map_err(|e| match e {
            OpenError::Truncated => Refused::Truncated,
            OpenError::BadIcv => Refused::BadIcv,
        })?;
        self.window().accept(seq).map_err(replay_drop)?;
        let plain = packet.get(body.clone()).ok_or(Refused::Truncated)?;
        let (Some(&next_header), Some(&pad)) = (
            plain.last(),
            plain.len().checked_sub(2).and_then(|i| plain.get(i)),
        ) else {
            return Err(Refused::Truncated);
        };
        let content_len = plain
            .len()
            .checked_sub(2 + usize::from(pad))
            .ok_or(Refused::BadPadding)?;
        let padding = plain
            .get(content_len..content_len + usize::from(pad))
            .ok_or(Refused::BadPadding)?;
        // RFC 4303 §2.4: the receiver SHOULD inspect the padding (1, 2, 3, …).
        if padding
            .iter()
            .enumerate()
            .any(|(i, &b)| usize::from(b) != i + 1)
        {
            return Err(Refused::BadPadding);
        }
        let content = plain.get(..content_len).ok_or(Refused::Truncated)?;
        let inner_len = match next_header {
            NEXT_IPV4 => match ipv4::Packet::new_checked(content) {
                Ok(p) => usize::from(p.total_len()),
                Err(_) => return Err(Refused::MalformedInner),
            },
            NEXT_IPV6 => {
                let v6 = content.first().is_some_and(|b| b >> 4 == 6);
                let len = content
                    .get(4..6)
                    .map(|l| 40 + usize::from(u16::from_be_bytes([l[0], l[1]])));
                match len {
                    Some(l) if v6 && l <= content.len() => l,
                    _ => return Err(Refused::MalformedInner),
                }
            }
            NEXT_NONE => return Err(Refused::Dummy),
            _ => return Err(Refused::BadNextHeader),
        };
        let inner = body.start..body.start + inner_len;
        if !packet
            .get(inner.clone())
            .is_some_and(|p| admits(&self.params.traffic_selectors, p, true))
        {
            return Err(Refused::SelectorMismatch);
        }
        self.bytes.fetch_add(inner_len as u64, Ordering::Relaxed);
        self.packets.fetch_add(1, Ordering::Relaxed);
        Ok(Opened { inner, next_header })
    }
}

fn random_u64() -> Result<u64, KeyError> {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut b = [0u8; 8];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| KeyError::NoRandomness)?;
    Ok(u64::from_be_bytes(b))
}

fn replay_drop(r: Replay) -> Refused {
    match r {
        Replay::Duplicate | Replay::Zero => Refused::Replayed,
        Replay::TooOld => Refused::TooOld,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EspEncryption, Integrity};
    use crate::esp::suite::key_lengths;

    fn params(spi: u32, enc: EspEncryption, integ: Option<Integrity>) -> SaParams {
        let (e, i) = key_lengths(enc, integ);
        SaParams {
            spi,
            encryption: enc,
            integrity: integ,
            encryption_key: Secret::new((0..e as u8).collect()),
            integrity_key: integ.map(|_| Secret::new((100..100 + i as u8).collect())),
            lifetime: SaLifetime::default(),
            traffic_selectors: Default::default(),
        }
    }

    fn inner_v4(len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        ipv4::Repr {
            src: [10, 0, 0, 1].into(),
            dst: [10, 0, 0, 2].into(),
            protocol: ipv4::PROTO_ICMP,
            ttl: 64,
            payload_len: len - 20,
        }
        .emit(&mut p)
        .unwrap();
        p
    }

    /// Seals `inner` with `out` and returns the ESP packet bytes.
    fn seal(out: &Outbound, inner: &[u8]) -> Vec<u8> {
        let head = out.headroom();
        let mut buf = vec![0u8; head + inner.len() + out.tailroom()];
        buf[head..head + inner.len()].copy_from_slice(inner);
        let r = out
            .seal(&mut buf, head..head + inner.len(), NEXT_IPV4)
            .unwrap();
        assert_eq!(r.len(), inner.len() + out.overhead(inner.len()));
        buf[r].to_vec()
    }

    fn all_suites() -> Vec<(EspEncryption, Option<Integrity>)> {
        use EspEncryption::*;
        use Integrity::*;
        vec![
            (AesGcm16_128, None),
            (AesGcm16_256, None),
            (AesCbc128, Some(HmacSha2_256_128)),
            (AesCbc256, Some(HmacSha2_256_128)),
            (AesCbc128, Some(HmacSha1_96)),
            (AesCbc256, Some(HmacSha1_96)),
            (Null, Some(HmacSha2_256_128)),
            (Null, Some(HmacSha1_96)),
        ]
    }

    #[test]
    fn round_trip_every_suite_and_size() {
        for (enc, integ) in all_suites() {
            let out = Outbound::new(params(0x1000, enc, integ)).unwrap();
            let inb = Inbound::new(params(0x1000, enc, integ), Some(1024)).unwrap();
            for len in [20, 21, 64, 65, 512, 1399, 1400, 1401] {
                let inner = inner_v4(len);
                let mut p = seal(&out, &inner);
                let opened = inb.open(&mut p).unwrap();
                assert_eq!(
                    &p[opened.inner.clone()],
                    &inner[..],
                    "{enc:?}/{integ:?} {len}"
                );
                assert_eq!(opened.next_header, NEXT_IPV4);
            }
        }
    }

    #[test]
    fn sequence_numbers_start_at_one_and_replays_are_dropped() {
        let out = Outbound::new(params(7, EspEncryption::AesGcm16_256, None)).unwrap();
        let inb = Inbound::new(params(7, EspEncryption::AesGcm16_256, None), Some(1024)).unwrap();
        let packets: Vec<Vec<u8>> = (0..2000).map(|_| seal(&out, &inner_v4(60))).collect();
        assert_eq!(
            esp::Packet::new_checked(&packets[0][..])
                .unwrap()
                .sequence(),
            1
        );
        for p in &packets {
            inb.open(&mut p.clone()).unwrap();
        }
        // 100 % of replays refused; older than the window refused as too old.
        let replayed = packets
            .iter()
            .filter(|p| inb.open(&mut (*p).clone()) == Err(Refused::Replayed))
            .count();
        let too_old = packets
            .iter()
            .filter(|p| inb.open(&mut (*p).clone()) == Err(Refused::TooOld))
            .count();
        assert_eq!(replayed + too_old, 2000);
        assert!(too_old >= 2000 - 1024);
        // With protection off the same replays are accepted.
        let open_all = Inbound::new(params(7, EspEncryption::AesGcm16_256, None), None).unwrap();
        for p in packets.iter().chain(packets.iter()) {
            open_all.open(&mut p.clone()).unwrap();
        }
    }

    #[test]
    fn forged_packet_does_not_move_the_window() {
        let out = Outbound::new(params(7, EspEncryption::AesGcm16_128, None)).unwrap();
        let inb = Inbound::new(params(7, EspEncryption::AesGcm16_128, None), Some(64)).unwrap();
        let good = seal(&out, &inner_v4(40));
        let mut forged = good.clone();
        forged[4..8].copy_from_slice(&1_000_000u32.to_be_bytes());
        assert_eq!(inb.open(&mut forged), Err(Refused::BadIcv));
        // Had the forgery advanced the window, the genuine packet 1 would be too old now.
        inb.open(&mut good.clone()).unwrap();
    }

    #[test]
    fn sequence_never_wraps() {
        let out = Outbound::restore(OutboundState {
            params: params(1, EspEncryption::AesGcm16_128, None),
            seq: u32::MAX - 2,
            iv_base: 0,
            shared: None,
        })
        .unwrap();
        assert!(out.needs_rekey());
        seal(&out, &inner_v4(40));
        seal(&out, &inner_v4(40));
        let mut buf = vec![0u8; 200];
        assert_eq!(
            out.seal(&mut buf, 16..56, NEXT_IPV4),
            Err(SealError::SequenceExhausted)
        );
        assert_eq!(out.state().seq, u32::MAX);
    }

    #[test]
    fn hard_lifetime_stops_and_soft_asks_for_rekey() {
        let mut p = params(1, EspEncryption::AesGcm16_128, None);
        p.lifetime.packets = Some(10);
        let out = Outbound::new(p).unwrap();
        for _ in 0..9 {
            seal(&out, &inner_v4(40));
        }
        assert!(out.needs_rekey());
        seal(&out, &inner_v4(40));
        let mut buf = vec![0u8; 200];
        assert_eq!(
            out.seal(&mut buf, 16..56, NEXT_IPV4),
            Err(SealError::Expired)
        );
    }

    #[test]
    fn padding_next_header_and_tfc() {
        // Build packets by hand with NULL + HMAC so the plaintext trailer is under our control.
        let (enc, integ) = (EspEncryption::Null, Some(Integrity::HmacSha2_256_128));
        let t = transform(&params(9, enc, integ)).unwrap();
        let make_raw = |content: &[u8], padding: &[u8], pad_len: u8, nh: u8| {
            let mut p = vec![0, 0, 0, 9, 0, 0, 0, 1];
            p.extend_from_slice(content);
            p.extend_from_slice(padding);
            p.push(pad_len);
            p.push(nh);
            p.extend_from_slice(&[0; 16]);
            t.seal(&mut p, 1).unwrap();
            p
        };
        let make = |content: &[u8], padding: &[u8], nh: u8| {
            make_raw(content, padding, padding.len() as u8, nh)
        };
        let inner = inner_v4(30);
        let inb = || Inbound::new(params(9, enc, integ), None).unwrap();
        // TFC padding after the inner packet is cut off by the inner IPv4 length.
        let with_tfc = [inner.clone(), vec![0xee; 7]].concat();
        let mut p = make(&with_tfc, &[1], NEXT_IPV4);
        let o = inb().open(&mut p).unwrap();
        assert_eq!(&p[o.inner], &inner[..]);
        assert_eq!(
            inb().open(&mut make(&inner, &[1, 2, 4, 3], NEXT_IPV4)),
            Err(Refused::BadPadding)
        );
        assert_eq!(
            inb().open(&mut make(&inner[..29], &[1], NEXT_IPV4)),
            Err(Refused::MalformedInner)
        );
        assert_eq!(
            inb().open(&mut make(&inner, &[1, 2, 3, 4], 17)),
            Err(Refused::BadNextHeader)
        );
        assert_eq!(
            inb().open(&mut make(&inner, &[1, 2, 3, 4], NEXT_NONE)),
            Err(Refused::Dummy)
        );
        assert_eq!(
            inb().open(&mut make(&inner, &[1, 2, 3, 4], NEXT_IPV6)),
            Err(Refused::MalformedInner)
        );
        // A pad length longer than the plaintext, under a valid ICV.
        assert_eq!(
            inb().open(&mut make_raw(&[1, 2], &[], 200, NEXT_IPV4)),
            Err(Refused::BadPadding)
        );
    }

    #[test]
    fn a_restarted_sa_never_repeats_a_gcm_nonce() {
        // Same static key, both instances start at sequence 1: the explicit IVs must differ.
        let p = params(1, EspEncryption::AesGcm16_256, None);
        let (first, second) = (Outbound::new(p.clone()).unwrap(), Outbound::new(p).unwrap());
        let (a, b) = (seal(&first, &inner_v4(40)), seal(&second, &inner_v4(40)));
        assert_eq!(a[4..8], b[4..8], "both are sequence number 1");
        assert_ne!(a[8..16], b[8..16], "but their IVs differ");
        assert_ne!(
            &a[8..16],
            &1u64.to_be_bytes(),
            "the IV is not the bare counter"
        );
    }

    #[test]
    fn inbound_hard_lifetime_by_packets() {
        let mut p = params(1, EspEncryption::AesGcm16_128, None);
        p.lifetime.packets = Some(3);
        let peer = Outbound::new(params(1, EspEncryption::AesGcm16_128, None)).unwrap();
        let inb = Inbound::new(p, None).unwrap();
        for _ in 0..3 {
            inb.open(&mut seal(&peer, &inner_v4(40))).unwrap();
        }
        assert_eq!(
            inb.open(&mut seal(&peer, &inner_v4(40))),
            Err(Refused::Exhausted)
        );
    }

    #[test]
    fn time_lifetime_asks_for_rekey_then_stops_both_halves() {
        use std::time::Duration;
        let mut p = params(1, EspEncryption::AesGcm16_128, None);
        p.lifetime.seconds = Some(100);
        let out = Outbound::new(p.clone()).unwrap();
        let inb = Inbound::new(p, None).unwrap();
        assert_eq!(out.check_age(Duration::from_secs(10)), Age::Fresh);
        let sealed = seal(&out, &inner_v4(40));
        assert_eq!(out.check_age(Duration::from_secs(95)), Age::Rekey);
        assert_eq!(out.check_age(Duration::from_secs(100)), Age::Expired);
        let mut buf = vec![0u8; 200];
        assert_eq!(
            out.seal(&mut buf, 16..56, NEXT_IPV4),
            Err(SealError::Expired)
        );
        inb.open(&mut sealed.clone()).unwrap();
        assert_eq!(inb.check_age(Duration::from_secs(101)), Age::Expired);
        assert_eq!(inb.open(&mut sealed.clone()), Err(Refused::Exhausted));
    }

    #[test]
    fn traffic_selectors_are_enforced_both_ways() {
        let mut p = params(5, EspEncryption::AesGcm16_256, None);
        // From our side: 10.0.0.2 is local, 10.0.0.1 is the peer's network.
        p.traffic_selectors = TrafficSelectors {
            local: vec!["10.0.0.2/32".parse().unwrap()],
            remote: vec!["10.0.0.0/31".parse().unwrap()],
        };
        // The peer's outbound (its local is our remote) seals 10.0.0.1 → 10.0.0.2 fine.
        let mut peer = params(5, EspEncryption::AesGcm16_256, None);
        peer.traffic_selectors = TrafficSelectors {
            local: p.traffic_selectors.remote.clone(),
            remote: p.traffic_selectors.local.clone(),
        };
        let peer_out = Outbound::new(peer).unwrap();
        let inb = Inbound::new(p.clone(), None).unwrap();
        let good = seal(&peer_out, &inner_v4(40));
        inb.open(&mut good.clone()).unwrap();
        // A sender with "any" selectors slips in 10.0.0.1 → 10.0.0.3: refused after decryption.
        let any_out = Outbound::new(params(5, EspEncryption::AesGcm16_256, None)).unwrap();
        let mut stray = inner_v4(40);
        stray[19] = 3;
        let mut bad = seal(&any_out, &stray);
        assert_eq!(inb.open(&mut bad), Err(Refused::SelectorMismatch));
        // And our own outbound refuses to send what it may not carry.
        let out = Outbound::new(p).unwrap();
        let mut buf = vec![0u8; 200];
        buf[16..56].copy_from_slice(&inner_v4(40));
        assert_eq!(
            out.seal(&mut buf, 16..56, NEXT_IPV4),
            Err(SealError::NotSelected)
        );
    }

    #[test]
    fn state_serialises_without_showing_keys() {
        let out = Outbound::new(params(
            0xabcd,
            EspEncryption::AesCbc256,
            Some(Integrity::HmacSha2_256_128),
        ))
        .unwrap();
        seal(&out, &inner_v4(40));
        let state = out.state();
        let json = serde_json::to_string(&state).unwrap();
        let back: OutboundState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, state);
        assert_eq!(back.seq, 1);
        let debug = format!("{state:?} {out:?}");
        assert!(
            !debug.contains("AAECAwQF"),
            "no base64 key in Debug: {debug}"
        );
        // The replica continues after the last number used.
        let replica = Outbound::restore(back).unwrap();
        let p = seal(&replica, &inner_v4(40));
        assert_eq!(esp::Packet::new_checked(&p[..]).unwrap().sequence(), 2);
        let inb = Inbound::new(
            params(
                0xabcd,
                EspEncryption::AesCbc256,
                Some(Integrity::HmacSha2_256_128),
            ),
            Some(128),
        )
        .unwrap();
        inb.open(&mut p.clone()).unwrap();
        let moved = Inbound::restore(
            serde_json::from_str(&serde_json::to_string(&inb.state()).unwrap()).unwrap(),
        )
        .unwrap();
        assert_eq!(
            moved.open(&mut p.clone()),
            Err(Refused::Replayed),
            "window travels with the SA"
        );
    }

    #[test]
    fn hostile_packets_never_panic() {
        let out = Outbound::new(params(
            3,
            EspEncryption::AesCbc128,
            Some(Integrity::HmacSha1_96),
        ))
        .unwrap();
        let inb = Inbound::new(
            params(3, EspEncryption::AesCbc128, Some(Integrity::HmacSha1_96)),
            Some(64),
        )
        .unwrap();
        let good = seal(&out, &inner_v4(100));
        let mut state = 0x1234_5678u32;
        for i in 0..20_000 {
            let mut p = good.clone();
            if i % 5 == 0 {
                p.truncate(state as usize % p.len());
            }
            for _ in 0..2 {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                if !p.is_empty() {
                    let at = (state as usize >> 8) % p.len();
                    p[at] = (state >> 24) as u8;
                }
            }
            let _ = inb.open(&mut p);
        }
    }
    // ---- Sender slots (shared mode) ----

    use std::collections::HashSet;

    const LIFETIME: Duration = Duration::from_secs(3600);
    /// A fixed wall clock for the slot tests: 2026-12-01T00:00:00Z.
    const EPOCH_MS: u64 = 1_796_083_200_000;
    const MS: u64 = 1_000_000;

    fn slot(index: u8, count: u8) -> SenderSlot {
        SenderSlot { index, count }
    }

    /// Seals `inner` with `out` at wall time `now_ns`; returns the ESP packet.
    fn seal_at(out: &Outbound, inner: &[u8], now_ns: u64) -> Vec<u8> {
        let head = out.headroom();
        let mut buf = vec![0u8; head + inner.len() + out.tailroom()];
        buf[head..head + inner.len()].copy_from_slice(inner);
        let r = out
            .seal_at(&mut buf, head..head + inner.len(), NEXT_IPV4, now_ns)
            .unwrap();
        buf[r].to_vec()
    }

    fn seq_of(p: &[u8]) -> u32 {
        esp::Packet::new_checked(p).unwrap().sequence()
    }

    /// The IV as it goes on the wire (GCM: the explicit IV; CBC: the encrypted IV input).
    fn wire_iv(out: &Outbound, p: &[u8]) -> Vec<u8> {
        p[HEADER_LEN..out.headroom()].to_vec()
    }

    /// The floor by the contract's formula, in exact arithmetic.
    fn exact_floor(now_ns: u64, epoch_ms: u64, lifetime: Duration) -> u64 {
        let elapsed = u128::from(now_ns.saturating_sub(epoch_ms * MS));
        (elapsed << 32).div_ceil(lifetime.as_nanos()) as u64
    }

    /// Replicas of one SA: slot 0 negotiated it, the others restored the state it published.
    fn replicas(p: &SaParams, count: u8) -> (Vec<Outbound>, OutboundState) {
        let owner = Outbound::shared(p.clone(), slot(0, count), EPOCH_MS, LIFETIME).unwrap();
        let published = owner.state();
        let mut all = vec![owner];
        for i in 1..count {
            all.push(Outbound::restore_shared(published.clone(), slot(i, count)).unwrap());
        }
        (all, published)
    }

    /// `count` slots seal `rounds` packets each, interleaved, all slots of a round at the same
    /// wall time; then every slot restarts from the published state and seals `rounds` more.
    /// Checks: no wire IV twice, residues, per-slot increase, the floor, and one anti-replay
    /// Inbound opens everything (in sending order).
    fn slots_share_an_sa(enc: EspEncryption, integ: Option<Integrity>, count: u8, rounds: u64) {
        let p = params(0x5000, enc, integ);
        let (mut senders, published) = replicas(&p, count);
        let inb = Inbound::new(p.clone(), Some(1024)).unwrap();
        let mut ivs = HashSet::new();
        let mut now = EPOCH_MS * MS + 5 * MS;
        let run = |senders: &[Outbound], now: &mut u64, ivs: &mut HashSet<Vec<u8>>| {
            let mut last = vec![0u32; usize::from(count)];
            for _ in 0..rounds {
                // `count` µs per round: the floor moves ≈ 1.2 · count per round, so each slot
                // stays near it (as long as a replica sends below 2^32 / lifetime / count
                // packets per second).
                *now += 1_000 * u64::from(count);
                for (i, out) in senders.iter().enumerate() {
                    let pkt = seal_at(out, &inner_v4(60), *now);
                    assert!(
                        ivs.insert(wire_iv(out, &pkt)),
                        "{enc:?}: IV repeated (slot {i} of {count})"
                    );
                    let seq = seq_of(&pkt);
                    assert_eq!(
                        seq % u32::from(count),
                        (i as u32 + 1) % u32::from(count),
                        "residue"
                    );
                    assert!(seq > last[i], "slot {i}: {seq} after {}", last[i]);
                    assert!(
                        u64::from(seq) >= exact_floor(*now, EPOCH_MS, LIFETIME),
                        "floor"
                    );
                    last[i] = seq;
                    inb.open(&mut pkt.clone())
                        .unwrap_or_else(|e| panic!("slot {i} seq {seq}: {e}"));
                }
            }
        };
        run(&senders, &mut now, &mut ivs);
        // Every replica restarts and continues from the (old) published state; 2 ms later, so
        // the floor is above every number sent before.
        now += 2 * MS;
        senders = (0..count)
            .map(|i| Outbound::restore_shared(published.clone(), slot(i, count)).unwrap())
            .collect();
        run(&senders, &mut now, &mut ivs);
        assert_eq!(ivs.len() as u64, 2 * rounds * u64::from(count));
    }

    #[test]
    fn two_slots_never_repeat_a_nonce_gcm() {
        slots_share_an_sa(EspEncryption::AesGcm16_256, None, 2, 2000);
    }

    #[test]
    fn sixteen_slots_never_repeat_a_nonce_gcm_and_cbc() {
        slots_share_an_sa(EspEncryption::AesGcm16_128, None, 16, 300);
        slots_share_an_sa(
            EspEncryption::AesCbc256,
            Some(Integrity::HmacSha2_256_128),
            16,
            100,
        );
    }

    #[test]
    fn slot_index_is_in_the_top_byte_of_the_iv_input() {
        // Same SA, same instant: the explicit IVs differ exactly in the slot byte.
        let p = params(0x5001, EspEncryption::AesGcm16_256, None);
        let (senders, published) = replicas(&p, 3);
        let now = EPOCH_MS * MS + 7 * MS;
        let iv = |o: &Outbound| {
            let pkt = seal_at(o, &inner_v4(40), now);
            u64::from_be_bytes(pkt[8..16].try_into().unwrap())
        };
        let offsets: Vec<u64> = senders
            .iter()
            .map(|o| iv(o).wrapping_sub(published.iv_base))
            .collect();
        let c = now - (EPOCH_MS * MS - IV_CLOCK_MARGIN.as_nanos() as u64);
        assert_eq!(offsets, vec![c, (1 << 56) | c, (2 << 56) | c]);
    }

    #[test]
    fn a_restart_at_the_same_clock_reading_does_not_repeat_an_iv() {
        // The clock stands still (or the packets came faster than it ticks): c counts on.
        let p = params(0x5002, EspEncryption::AesGcm16_256, None);
        let (senders, published) = replicas(&p, 2);
        let now = EPOCH_MS * MS;
        let a = seal_at(&senders[1], &inner_v4(40), now);
        let b = seal_at(&senders[1], &inner_v4(40), now);
        assert_ne!(a[8..16], b[8..16]);
        // A restarted replica at a later clock reading is above both.
        let again = Outbound::restore_shared(published, slot(1, 2)).unwrap();
        let c = seal_at(&again, &inner_v4(40), now + 1_000);
        let ivs: HashSet<_> = [&a, &b, &c].iter().map(|p| p[8..16].to_vec()).collect();
        assert_eq!(ivs.len(), 3);
    }

    #[test]
    fn a_replica_taking_over_sends_above_the_old_senders_numbers() {
        // A sent for a while; the router switches to B, whose state is the one A published at
        // the start (seq 0). B's numbers start at the floor, above A's: a 64-packet replay
        // window accepts B's packets right after A's.
        let p = params(0x5003, EspEncryption::AesGcm16_256, None);
        let (senders, _) = replicas(&p, 2);
        let inb = Inbound::new(p, Some(64)).unwrap();
        let mut now = EPOCH_MS * MS + 60_000 * MS; // one minute into the SA's life
        for _ in 0..5000 {
            now += 10_000;
            inb.open(&mut seal_at(&senders[0], &inner_v4(40), now))
                .unwrap();
        }
        let a_last = senders[0].state().seq;
        now += MS; // the switch takes 1 ms
        let first_b = seal_at(&senders[1], &inner_v4(40), now);
        assert!(seq_of(&first_b) > a_last);
        inb.open(&mut first_b.clone()).unwrap();
        // Without the floor (B counting on from the published 0) it would be far too old.
        assert!(
            a_last > 64 * 2,
            "A's numbers moved with the floor: {a_last}"
        );
    }

    #[test]
    fn floor_follows_the_lifetime_exactly() {
        let p = params(0x5004, EspEncryption::AesGcm16_128, None);
        let lifetime = Duration::from_secs(100);
        let out = Outbound::shared(p, slot(1, 2), EPOCH_MS, lifetime).unwrap();
        let mut prev = 0;
        for step in [0u64, 1, 999, 25_000, 50_000, 77_777, 99_999] {
            let now = EPOCH_MS * MS + step * MS;
            let seq = seq_of(&seal_at(&out, &inner_v4(40), now));
            let floor = exact_floor(now, EPOCH_MS, lifetime);
            assert!(u64::from(seq) >= floor, "{step} ms: {seq} < {floor}");
            assert!(u64::from(seq) <= floor.max(u64::from(prev) + 1) + 2);
            assert_eq!(seq % 2, 0);
            prev = seq;
        }
        // Half way: 2^31.
        let mid = Outbound::shared(
            params(1, EspEncryption::AesGcm16_128, None),
            slot(0, 2),
            EPOCH_MS,
            lifetime,
        )
        .unwrap();
        let seq = seq_of(&seal_at(&mid, &inner_v4(40), EPOCH_MS * MS + 50_000 * MS));
        assert_eq!(seq, (1 << 31) + 1);
        // Before the epoch (clock skew) there is no floor.
        let early = Outbound::shared(
            params(1, EspEncryption::AesGcm16_128, None),
            slot(0, 2),
            EPOCH_MS,
            lifetime,
        )
        .unwrap();
        assert_eq!(
            seq_of(&seal_at(&early, &inner_v4(40), EPOCH_MS * MS - 5 * MS)),
            1
        );
    }

    #[test]
    fn shared_sequence_exhausts_like_a_single_senders() {
        let p = params(0x5005, EspEncryption::AesGcm16_256, None);
        let (owner, _) = replicas(&p, 2);
        let mut near_end = owner[0].state();
        near_end.seq = u32::MAX - 3;
        let out = Outbound::restore_shared(near_end, slot(1, 2)).unwrap();
        assert!(out.needs_rekey());
        assert!(!out.is_exhausted());
        let now = EPOCH_MS * MS;
        assert_eq!(seq_of(&seal_at(&out, &inner_v4(40), now)), u32::MAX - 1);
        let mut buf = vec![0u8; 200];
        assert_eq!(
            out.seal_at(&mut buf, 40..80, NEXT_IPV4, now),
            Err(SealError::SequenceExhausted)
        );
        assert!(out.is_exhausted());
        // The floor passes 2^32 − 1 when the hard lifetime is over.
        let late = Outbound::restore_shared(owner[0].state(), slot(1, 2)).unwrap();
        assert_eq!(
            late.seal_at(
                &mut buf,
                40..80,
                NEXT_IPV4,
                now + LIFETIME.as_nanos() as u64
            ),
            Err(SealError::SequenceExhausted)
        );
        assert!(late.is_exhausted() && late.needs_rekey());
    }

    #[test]
    fn the_iv_counter_ends_at_2_pow_56_like_the_sequence() {
        let lifetime = Duration::from_secs(1_000_000_000);
        let out = Outbound::shared(
            params(0x500a, EspEncryption::AesGcm16_256, None),
            slot(1, 2),
            EPOCH_MS,
            lifetime,
        )
        .unwrap();
        let start = EPOCH_MS * MS - IV_CLOCK_MARGIN.as_nanos() as u64;
        seal_at(&out, &inner_v4(40), start + (1 << 56) - 1);
        let mut buf = vec![0u8; 200];
        assert_eq!(
            out.seal_at(&mut buf, 40..80, NEXT_IPV4, start + (1 << 56)),
            Err(SealError::SequenceExhausted)
        );
        assert!(out.is_exhausted());
    }

    #[test]
    fn one_slot_is_todays_scheme() {
        let p = params(0x5006, EspEncryption::AesGcm16_256, None);
        let out = Outbound::shared(p.clone(), SenderSlot::SINGLE, EPOCH_MS, LIFETIME).unwrap();
        let base = out.state().iv_base;
        for want in 1..=3u32 {
            let pkt = seal(&out, &inner_v4(40));
            assert_eq!(seq_of(&pkt), want);
            let iv = u64::from_be_bytes(pkt[8..16].try_into().unwrap());
            assert_eq!(iv, base.wrapping_add(u64::from(want)));
        }
        let again = Outbound::restore_shared(out.state(), SenderSlot::SINGLE).unwrap();
        assert_eq!(seq_of(&seal(&again, &inner_v4(40))), 4);
    }

    #[test]
    fn bad_slots_are_refused() {
        let p = params(0x5007, EspEncryption::AesGcm16_256, None);
        let bad = |r: Result<Outbound, KeyError>| matches!(r, Err(KeyError::BadSenderSlot(_)));
        assert!(bad(Outbound::shared(
            p.clone(),
            slot(2, 2),
            EPOCH_MS,
            LIFETIME
        )));
        assert!(bad(Outbound::shared(
            p.clone(),
            slot(0, 0),
            EPOCH_MS,
            LIFETIME
        )));
        assert!(bad(Outbound::shared(
            p.clone(),
            slot(0, 2),
            EPOCH_MS,
            Duration::ZERO
        )));
        // A single sender's state cannot be split into slots: its IVs are not partitioned.
        let plain = Outbound::new(p).unwrap().state();
        assert!(bad(Outbound::restore_shared(plain, slot(1, 2))));
    }

    #[test]
    fn shared_state_round_trips_through_json() {
        let p = params(
            0x5008,
            EspEncryption::AesCbc128,
            Some(Integrity::HmacSha1_96),
        );
        let (senders, _) = replicas(&p, 4);
        seal_at(&senders[2], &inner_v4(40), EPOCH_MS * MS + MS);
        let state = senders[2].state();
        let json = serde_json::to_string(&state).unwrap();
        assert!(
            json.contains(&format!(
                r#""shared":{{"epochUnixMs":{EPOCH_MS},"lifetimeMs":3600000}}"#
            )),
            "{json}"
        );
        let back: OutboundState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, state);
        let next = Outbound::restore_shared(back, slot(2, 4)).unwrap();
        let seq = seq_of(&seal_at(&next, &inner_v4(40), EPOCH_MS * MS + MS));
        assert!(seq > state.seq && seq % 4 == 3);
        // A single sender's state has no `shared` key and old states (without it) still parse.
        let plain = serde_json::to_string(&Outbound::new(p).unwrap().state()).unwrap();
        assert!(!plain.contains("shared"));
        assert_eq!(
            serde_json::from_str::<OutboundState>(&plain)
                .unwrap()
                .shared,
            None
        );
        let s: SenderSlot = serde_json::from_str(r#"{"index":3,"count":4}"#).unwrap();
        assert_eq!(s, slot(3, 4));
        // The inbound half travels too.
        let inb = Inbound::new(params(9, EspEncryption::AesGcm16_128, None), Some(64)).unwrap();
        let moved: InboundState =
            serde_json::from_str(&serde_json::to_string(&inb.state()).unwrap()).unwrap();
        assert_eq!(moved, inb.state());
    }

    #[test]
    fn concurrent_senders_in_one_slot_never_share_a_number_or_iv() {
        let p = params(0x5009, EspEncryption::AesGcm16_256, None);
        let epoch = wall_ns() / MS;
        let owner = Outbound::shared(p, slot(0, 2), epoch, LIFETIME).unwrap();
        let out = &Outbound::restore_shared(owner.state(), slot(1, 2)).unwrap();
        let all: Vec<Vec<u8>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        (0..2000)
                            .map(|_| seal(out, &inner_v4(40)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let seqs: HashSet<u32> = all.iter().map(|p| seq_of(p)).collect();
        let ivs: HashSet<&[u8]> = all.iter().map(|p| &p[8..16]).collect();
        assert_eq!((seqs.len(), ivs.len()), (8000, 8000));
        assert!(seqs.iter().all(|s| s % 2 == 0));
    }

    // ---- Several threads on one SA (egress workers, the receive thread and the IKE task) ----

    /// A deterministic Fisher–Yates shuffle of each `chunk`-long run of `v`: packets reordered,
    /// but none moved further than `chunk` from its place.
    fn shuffle_locally<T>(v: &mut [T], chunk: usize, mut seed: u64) {
        for run in v.chunks_mut(chunk) {
            for i in (1..run.len()).rev() {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                run.swap(i, (seed >> 33) as usize % (i + 1));
            }
        }
    }

    /// Opens `stream` with `threads` threads taking packets in stream order from a shared index;
    /// returns each packet's (sequence number, verdict).
    fn open_concurrently(
        inb: &Inbound,
        stream: &[Vec<u8>],
        threads: usize,
    ) -> Vec<(u32, Result<(), Refused>)> {
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let mut verdicts = Vec::new();
                        while let Some(p) = stream.get(next.fetch_add(1, Ordering::Relaxed)) {
                            let r = inb.open(&mut p.clone()).map(|_| ());
                            verdicts.push((seq_of(p), r));
                        }
                        verdicts
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        })
    }

    /// Egress workers sealing on one SA at once: every sequence number 1..=n used exactly once,
    /// no wire IV twice, and an anti-replay receiver opens each packet once, in any order within
    /// its window.
    #[test]
    fn concurrent_sealers_share_no_number_or_iv_and_each_packet_opens_once() {
        const THREADS: usize = 4;
        const EACH: usize = 3000;
        for (enc, integ) in [
            (EspEncryption::AesGcm16_256, None),
            (EspEncryption::AesCbc256, Some(Integrity::HmacSha2_256_128)),
        ] {
            let out = &Outbound::new(params(0x6001, enc, integ)).unwrap();
            let mut all: Vec<Vec<u8>> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..THREADS)
                    .map(|_| {
                        s.spawn(|| {
                            (0..EACH)
                                .map(|_| seal(out, &inner_v4(60)))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect::<Vec<_>>();
                hs.into_iter()
                    .flat_map(|h| h.join().unwrap())
                    .collect::<Vec<Vec<u8>>>()
            });
            let n = THREADS * EACH;
            let seqs: HashSet<u32> = all.iter().map(|p| seq_of(p)).collect();
            assert_eq!(seqs, (1..=n as u32).collect(), "{enc:?}");
            let ivs: HashSet<Vec<u8>> = all.iter().map(|p| wire_iv(out, p)).collect();
            assert_eq!(ivs.len(), n, "{enc:?}: a wire IV repeated");
            assert_eq!(out.usage().1, n as u64);
            // Wire order: roughly by number (the senders share one socket), reordered locally.
            all.sort_by_key(|p| seq_of(p));
            shuffle_locally(&mut all, 500, 7);
            let inb = Inbound::new(params(0x6001, enc, integ), Some(1024)).unwrap();
            for p in &all {
                assert_eq!(inb.open(&mut p.clone()).map(|_| ()), Ok(()), "{enc:?}");
            }
            assert!(all.iter().all(|p| inb.open(&mut p.clone()).is_err()));
            assert_eq!(inb.usage().1, n as u64);
        }
    }

    /// Receivers opening one SA at once: the window is checked and updated under its lock, the
    /// decryption runs outside it, so two copies of a number may be decrypted at the same time;
    /// the accept's second check must still let exactly one through.
    #[test]
    fn concurrent_receivers_accept_each_number_exactly_once() {
        const DISTINCT: u32 = 6000;
        const WINDOW: u32 = 8192;
        for (enc, integ) in [
            (EspEncryption::AesGcm16_256, None),
            (EspEncryption::AesCbc128, Some(Integrity::HmacSha1_96)),
        ] {
            let p = params(0x6002, enc, integ);
            let out = Outbound::new(p.clone()).unwrap();
            let sealed: Vec<Vec<u8>> = (0..DISTINCT).map(|_| seal(&out, &inner_v4(48))).collect();
            // Each packet 1 to 4 times, the copies next to each other before the shuffle, so
            // that they are often in flight at once.
            let mut stream: Vec<Vec<u8>> = sealed
                .iter()
                .enumerate()
                .flat_map(|(i, pkt)| std::iter::repeat_n(pkt.clone(), 1 + i * 7 % 4))
                .collect();
            shuffle_locally(&mut stream, 64, 11);
            // A window wider than the whole stream: however the threads are scheduled, no
            // first copy can fall behind it, so every verdict below is determined.
            let inb = Inbound::new(p.clone(), Some(WINDOW)).unwrap();
            let verdicts = open_concurrently(&inb, &stream, 4);
            assert_eq!(verdicts.len(), stream.len());
            let mut accepted = vec![0u32; DISTINCT as usize + 1];
            for (seq, r) in &verdicts {
                match r {
                    Ok(()) => accepted[*seq as usize] += 1,
                    Err(e) => assert_eq!(*e, Refused::Replayed, "{enc:?} seq {seq}"),
                }
            }
            assert!(
                accepted[1..].iter().all(|&a| a == 1),
                "{enc:?}: accepted other than once: {:?}",
                accepted
                    .iter()
                    .enumerate()
                    .skip(1)
                    .filter(|(_, a)| **a != 1)
                    .take(5)
                    .collect::<Vec<_>>()
            );
            assert_eq!(inb.usage().1, u64::from(DISTINCT));
            // The right edge jumps a window ahead: every earlier number is now too old.
            let ahead = Outbound::restore(OutboundState {
                params: p.clone(),
                seq: DISTINCT + WINDOW,
                iv_base: 1 << 40,
                shared: None,
            })
            .unwrap();
            let mut jump = seal(&ahead, &inner_v4(48));
            assert!(inb.open(&mut jump).is_ok());
            let late = open_concurrently(&inb, &sealed, 4);
            assert!(
                late.iter().all(|(_, r)| *r == Err(Refused::TooOld)),
                "{enc:?}"
            );
        }
    }
}

#[cfg(test)]
mod config_tests {
    use crate::config::{ConfigError, TunnelConfig};

    fn yaml(sa: &str, extra: &str) -> String {
        format!(
            "apiVersion: magictunnel.dev/v1alpha1
kind: TunnelConfig
name: lab/static
type: IPsec
localEndpoint: 192.0.2.1
customerEndpoint: 198.51.100.2
interfaceAddress: 10.200.0.0/31
ipsec:
{extra}  staticSa:
{sa}"
        )
    }

    const GOOD: &str = "    outbound: {spi: 4096, encryption: AES-GCM-16-256, encryptionKey: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIj}
    inbound: {spi: 8192, encryption: AES-CBC-128, integrity: HMAC-SHA2-256-128, encryptionKey: AAECAwQFBgcICQoLDA0ODw==, integrityKey: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=}
";

    fn field(text: &str) -> String {
        match TunnelConfig::from_yaml(text) {
            Err(ConfigError::Invalid { field, .. }) => field.to_string(),
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn static_sas_need_no_psk_and_are_checked() {
        let c = TunnelConfig::from_yaml(&yaml(GOOD, "")).expect("valid static config");
        let sa = c.ipsec.and_then(|i| i.static_sa).expect("static SA");
        assert_eq!((sa.outbound.spi, sa.inbound.spi), (4096, 8192));
        assert!(!format!("{sa:?}").contains("AAECAwQF"), "keys redacted");
        assert_eq!(
            field(&yaml(&GOOD.replace("spi: 4096", "spi: 255"), "")),
            "ipsec.staticSa.outbound"
        );
        assert_eq!(
            field(&yaml(&GOOD.replace("AES-GCM-16-256", "AES-GCM-16-128"), "")),
            "ipsec.staticSa.outbound"
        );
        assert_eq!(
            field(&yaml(&GOOD.replace("AES-CBC-128", "NULL"), "")),
            "ipsec.staticSa.inbound"
        );
        assert_eq!(
            field(&yaml(&GOOD.replace("spi: 8192", "spi: 4096"), "")),
            "ipsec.staticSa"
        );
        let same_key = GOOD.replace(
            "encryption: AES-CBC-128, integrity: HMAC-SHA2-256-128, encryptionKey: AAECAwQFBgcICQoLDA0ODw==",
            "encryption: AES-GCM-16-256, encryptionKey: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIj",
        )
        .replace(", integrityKey: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "");
        assert_eq!(
            field(&yaml(&same_key, "")),
            "ipsec.staticSa",
            "one key both ways"
        );
        let no_customer = yaml(GOOD, "").replace("customerEndpoint: 198.51.100.2\n", "");
        assert_eq!(field(&no_customer), "customerEndpoint");
    }
}
