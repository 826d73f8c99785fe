//! One direction of an IPsec Child SA (RFC 4303), sans-IO: inner packets in, ESP packets out,
//! and back. The sequence number, the replay window and the lifetime counters live here; the
//! cryptography in `suite`.
//!
//! An SA's parameters (`SaParams`) serialise, so that another process (an anycast replica) can
//! install the same SA. Keys are base64 on the wire, zeroized on drop, and redacted in `Debug`.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

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
#[derive(Debug)]
pub struct Outbound {
    params: SaParams,
    transform: Transform,
    /// The last sequence number used (0: none yet; RFC 4303 §3.3.3 starts at 1).
    seq: AtomicU32,
    /// IV = `iv_base` + sequence number. Random per SA instance, so that a process that starts
    /// the same (manually keyed) SA again, with the sequence back at 1, does not repeat a GCM
    /// nonce or a CBC IV: two runs collide only if their 2^32-wide ranges overlap in 2^64.
    iv_base: u64,
    bytes: AtomicU64,
    packets: AtomicU64,
    expired: AtomicBool,
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
}

impl Outbound {
    pub fn new(params: SaParams) -> Result<Self, KeyError> {
        Ok(Outbound {
            transform: transform(&params)?,
            params,
            seq: AtomicU32::new(0),
            iv_base: random_u64()?,
            bytes: AtomicU64::new(0),
            packets: AtomicU64::new(0),
            expired: AtomicBool::new(false),
        })
    }

    pub fn restore(state: OutboundState) -> Result<Self, KeyError> {
        let mut sa = Outbound::new(state.params)?;
        sa.seq.store(state.seq, Ordering::Relaxed);
        sa.iv_base = state.iv_base;
        Ok(sa)
    }

    /// The state another process needs to continue this SA. The caller must stop sending on
    /// this one: two senders would reuse sequence numbers (and GCM IVs).
    pub fn state(&self) -> OutboundState {
        OutboundState {
            params: self.params.clone(),
            seq: self.seq.load(Ordering::Relaxed),
            iv_base: self.iv_base,
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
        self.expired.load(Ordering::Relaxed)
            || self.seq.load(Ordering::Relaxed) == u32::MAX
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
        let seq = self
            .seq
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| s.checked_add(1))
            .map_err(|_| SealError::SequenceExhausted)?
            + 1;
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
            .seal(packet, self.iv_base.wrapping_add(u64::from(seq)))
            .map_err(|_| SealError::NoRoom)?;
        self.bytes.fetch_add(len as u64, Ordering::Relaxed);
        self.packets.fetch_add(1, Ordering::Relaxed);
        Ok(start..end)
    }
}

/// A decrypted inner packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The inner IP packet, TFC padding (RFC 4303 §2.7) cut off.
    pub inner: Range<usize>,
    pub next_header: u8,
}

/// The inbound half: verifies, replay-checks and opens ESP packets.
#[derive(Debug)]
pub struct Inbound {
    params: SaParams,
    transform: Transform,
    window: ReplayWindow,
    bytes: u64,
    packets: u64,
    expired: bool,
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
            window,
            bytes: 0,
            packets: 0,
            expired: false,
        })
    }

    pub fn restore(state: InboundState) -> Result<Self, KeyError> {
        let size = state.replay.size;
        let window = ReplayWindow::restore(state.replay).ok_or(KeyError::BadReplayWindow(size))?;
        Ok(Inbound {
            transform: transform(&state.params)?,
            params: state.params,
            window,
            bytes: 0,
            packets: 0,
            expired: false,
        })
    }

    pub fn state(&self) -> InboundState {
        InboundState {
            params: self.params.clone(),
            replay: self.window.snapshot(),
        }
    }

    pub fn spi(&self) -> u32 {
        self.params.spi
    }

    pub fn params(&self) -> &SaParams {
        &self.params
    }

    /// Bytes and packets opened so far.
    pub fn usage(&self) -> (u64, u64) {
        (self.bytes, self.packets)
    }

    /// Opens the ESP packet `packet` (starting at the SPI) in place.
    /// Reports the SA's age; past its time lifetime it refuses every packet.
    pub fn check_age(&mut self, age: std::time::Duration) -> Age {
        let status = age_status(age, self.params.lifetime.seconds);
        self.expired |= status == Age::Expired;
        status
    }

    pub fn open(&mut self, packet: &mut [u8]) -> Result<Opened, Refused> {
        let limit = self.params.lifetime;
        let reached = |used: u64, l: Option<u64>| l.is_some_and(|l| used >= l);
        if self.expired || reached(self.bytes, limit.bytes) || reached(self.packets, limit.packets)
        {
            return Err(Refused::Exhausted);
        }
        let seq = esp::Packet::new_checked(&*packet)
            .map_err(|_| Refused::Truncated)?
            .sequence();
        // RFC 4303 §3.4.3: the cheap replay check comes before the ICV check, the window
        // update after it.
        self.window.check(seq).map_err(replay_drop)?;
        let body = self.transform.open(packet).map_err(|e| match e {
            OpenError::Truncated => Refused::Truncated,
            OpenError::BadIcv => Refused::BadIcv,
        })?;
        self.window.accept(seq).map_err(replay_drop)?;
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
        self.bytes += inner_len as u64;
        self.packets += 1;
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
            let mut inb = Inbound::new(params(0x1000, enc, integ), Some(1024)).unwrap();
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
        let mut inb =
            Inbound::new(params(7, EspEncryption::AesGcm16_256, None), Some(1024)).unwrap();
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
        let mut open_all =
            Inbound::new(params(7, EspEncryption::AesGcm16_256, None), None).unwrap();
        for p in packets.iter().chain(packets.iter()) {
            open_all.open(&mut p.clone()).unwrap();
        }
    }

    #[test]
    fn forged_packet_does_not_move_the_window() {
        let out = Outbound::new(params(7, EspEncryption::AesGcm16_128, None)).unwrap();
        let mut inb = Inbound::new(params(7, EspEncryption::AesGcm16_128, None), Some(64)).unwrap();
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
        let mut inb = Inbound::new(p, None).unwrap();
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
        let mut inb = Inbound::new(p, None).unwrap();
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
        let mut inb = Inbound::new(p.clone(), None).unwrap();
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
        let mut inb = Inbound::new(
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
        let mut moved = moved;
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
        let mut inb = Inbound::new(
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
