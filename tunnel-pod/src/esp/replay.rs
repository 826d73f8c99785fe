//! Inbound anti-replay window for ESP (RFC 4303 §3.4.3), 32-bit sequence numbers only (ESN is
//! always off in this product).
//!
//! Sans-IO: sequence numbers in, a verdict out. The caller runs the two stages RFC 4303 §3.4.3
//! describes:
//!
//! ```text
//! window.check(seq)?;        // before the ICV: cheap rejection of replays, no state change
//! verify_icv_and_decrypt()?; // on failure, drop; the window is untouched
//! window.accept(seq)?;       // after the ICV: re-checks, then records `seq`
//! ```
//!
//! > "If the preliminary check is successful, the receiver cannot yet modify its local counter,
//! > because the integrity of the Sequence Number has not been verified at this point."
//! > "The receive window is updated only if the integrity verification succeeds."
//! > (RFC 4303 §3.4.3)
//!
//! # The window
//!
//! > "The "right" edge of the window represents the highest, validated Sequence Number value
//! > received on this SA. Packets that contain sequence numbers lower than the "left" edge of the
//! > window are rejected. Packets falling within the window are checked against a list of received
//! > packets within the window." (RFC 4303 §3.4.3)
//!
//! With `size` packets and right edge `highest`, the window is
//! `highest - size + 1 ..= highest`: a number is *too old* when `seq <= highest - size`, which is
//! written `highest - seq >= size` here so that nothing underflows while `highest < size` (then the
//! left edge is 1 and nothing is too old). Numbers above `highest` are to the right of the window
//! and pass the check; accepting one slides the window.
//!
//! # The bitmap (RFC 6479)
//!
//! RFC 6479 ("IPsec Anti-Replay Algorithm without Bit Shifting") keeps the bits in a ring of
//! fixed-size blocks instead of one long shift register (paraphrased): the bit for `seq` lives in
//! block `(seq / 64) mod blocks`, at bit `seq mod 64`; sliding the window only moves the index of
//! the current block forward and zeroes the blocks it moves over, so a slide costs
//! O(blocks skipped), capped at the ring length. The ring has one block more than the window
//! needs (`size / 64 + 1` blocks), so that the block the right edge moves into never overlaps a
//! block still holding part of the window: all `size` positions of the window stay in live blocks,
//! and the oldest block may additionally hold stale bits below the left edge, which the explicit
//! "too old" test makes unreachable.
//!
//! The zeroing matters: a jump forward by `k` blocks reuses `min(k, blocks)` ring slots, and a slot
//! not cleared would report numbers of the new window as duplicates of numbers from before the jump.
//!
//! # Sequence number 0
//!
//! With anti-replay enabled, 0 is always refused ([`Replay::Zero`]): "the first packet sent using a
//! given SA will contain a sequence number of 1", and "the sender MUST NOT send a packet on an SA if
//! doing so would cause the sequence number to cycle" (RFC 4303 §3.3.3), so an honest sender with
//! anti-replay on never sends 0.
//!
//! With anti-replay disabled ([`ReplayWindow::disabled`]) 0 is accepted like every other number:
//! "If the receiver does not enable anti-replay for an SA, no inbound checks are performed on the
//! Sequence Number" (§3.4.3), and in that case "the sender still increments the counter and when it
//! reaches the maximum value, the counter rolls over back to zero" (§3.3.3), so 0 is a number an
//! honest sender sends after 2^32 - 1 packets.
//!
//! # Hostile input
//!
//! No function in this module panics, for any argument, including any [`ReplaySnapshot`]: there
//! is no slice indexing (only `get`/`get_mut`, whose `None` fails closed), no unchecked arithmetic
//! (every `-`/`+` on a sequence number is a `wrapping_*`/`checked_*` with the reason it cannot wrap
//! next to it), and shifts are by amounts masked below 64. A snapshot from another process is
//! validated by [`ReplayWindow::restore`], which returns `None` for anything that a window built by
//! this module could not have produced in a way that would change a verdict.

#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

/// Smallest window accepted by [`ReplayWindow::new`]. RFC 4303 §3.4.3: "A minimum window size of
/// 32 packets MUST be supported ...; a window size of 64 is preferred and SHOULD be employed as the
/// default." One 64-bit block is the granularity here, so 64 is both the minimum and the default.
pub const MIN_SIZE: u32 = 64;
/// Largest window accepted by [`ReplayWindow::new`] (1025 blocks, about 8 KiB).
pub const MAX_SIZE: u32 = 65536;

/// Bits per ring block.
const BLOCK_BITS: u32 = 64;
/// `seq >> BLOCK_SHIFT` is the block number of `seq`.
const BLOCK_SHIFT: u32 = 6;
/// `seq & BIT_MASK` is the bit of `seq` inside its block; always `< 64`, so shifting a `u64` by it
/// never overflows.
const BIT_MASK: u32 = BLOCK_BITS - 1;

/// Why a sequence number is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Inside the window and already accepted.
    Duplicate,
    /// Left of the window: `seq <= highest - size`.
    TooOld,
    /// Sequence number 0 on an SA with anti-replay enabled (never sent by an honest sender; see
    /// the module documentation).
    Zero,
}

/// The receive window of one inbound SA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Right edge: the highest sequence number accepted so far, 0 before the first. In a disabled
    /// window, the largest number accepted (which means little once the sender's counter wrapped).
    highest: u32,
    /// `None`: anti-replay disabled.
    ring: Option<Ring>,
}

/// The RFC 6479 bitmap. Invariant (established by [`Ring::new`], kept by every method, checked by
/// [`ReplayWindow::restore`]): `size` is a multiple of 64 in `MIN_SIZE..=MAX_SIZE` and
/// `blocks.len() == size / 64 + 1`, so the ring is never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ring {
    size: u32,
    blocks: Box<[u64]>,
}

/// A window's state, for handing an SA to another process. Produced by
/// [`ReplayWindow::snapshot`], consumed (and validated) by [`ReplayWindow::restore`].
///
/// For an enabled window, `bitmap` is the ring as is: `size / 64 + 1` blocks, block `i` holding the
/// sequence numbers `n` with `(n / 64) mod bitmap.len() == i`, at bit `n mod 64`. For a disabled
/// window, `size` is 0 and `bitmap` is empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaySnapshot {
    pub size: u32,
    pub highest: u32,
    pub bitmap: Vec<u64>,
    pub enabled: bool,
}

impl ReplayWindow {
    /// A window of `size` packets with anti-replay enabled. `size` must be a multiple of 64 in
    /// `64..=65536` ([`MIN_SIZE`]..=[`MAX_SIZE`]); anything else returns `None` (no rounding, so a
    /// configured size is never silently changed).
    pub fn new(size: u32) -> Option<Self> {
        Some(ReplayWindow {
            highest: 0,
            ring: Some(Ring::new(size)?),
        })
    }

    /// A window with anti-replay disabled: accepts every sequence number, replays, old numbers
    /// and 0 included (see the module documentation for 0). RFC 4303 §3.4.3: anti-replay "MUST NOT
    /// be enabled unless the ESP integrity service also is enabled for the SA", and a receiver may
    /// disable it per SA (§3.3.3: manually keyed SAs "SHOULD NOT" have it).
    pub fn disabled() -> Self {
        ReplayWindow {
            highest: 0,
            ring: None,
        }
    }

    /// The preliminary check, BEFORE the ICV is verified: would `seq` be accepted now? Changes
    /// nothing (RFC 4303 §3.4.3: "the receiver cannot yet modify its local counter").
    pub fn check(&self, seq: u32) -> Result<(), Replay> {
        match &self.ring {
            None => Ok(()),
            Some(ring) => ring.check(self.highest, seq),
        }
    }

    /// AFTER the ICV verified: record `seq`. Runs the check again, because another packet with the
    /// same number may have been accepted between this packet's [`check`](Self::check) and now; on
    /// `Err` nothing changes. A number right of the window slides it so that `seq` becomes the
    /// right edge.
    pub fn accept(&mut self, seq: u32) -> Result<(), Replay> {
        match &mut self.ring {
            None => {
                self.highest = self.highest.max(seq);
                Ok(())
            }
            Some(ring) => {
                ring.check(self.highest, seq)?;
                ring.record(self.highest, seq)?;
                self.highest = self.highest.max(seq);
                Ok(())
            }
        }
    }

    /// The right edge: highest sequence number accepted so far (0 = none yet).
    pub fn highest(&self) -> u32 {
        self.highest
    }

    /// Window size in packets; 0 for a [`disabled`](Self::disabled) window.
    pub fn size(&self) -> u32 {
        self.ring.as_ref().map_or(0, |ring| ring.size)
    }

    /// Whether anti-replay is enabled.
    pub fn is_enabled(&self) -> bool {
        self.ring.is_some()
    }

    /// The state, for [`restore`](Self::restore) in another process.
    pub fn snapshot(&self) -> ReplaySnapshot {
        match &self.ring {
            None => ReplaySnapshot {
                size: 0,
                highest: self.highest,
                bitmap: Vec::new(),
                enabled: false,
            },
            Some(ring) => ReplaySnapshot {
                size: ring.size,
                highest: self.highest,
                bitmap: ring.blocks.to_vec(),
                enabled: true,
            },
        }
    }

    /// Rebuild a window from a [`snapshot`](Self::snapshot). The snapshot comes from another
    /// process and is not trusted: `None` unless
    ///
    /// - disabled: `size == 0` and `bitmap` empty (`highest` is free);
    /// - enabled: `size` is valid for [`new`](Self::new), `bitmap.len() == size / 64 + 1`, and the
    ///   bits agree with `highest`: all zero when `highest == 0`; otherwise the bit of `highest` is
    ///   set (it was accepted), no bit above `highest` in its block is set (such a bit would later
    ///   refuse a fresh number as a duplicate: numbers right of the edge in the current block are
    ///   recorded without clearing), and the bit of sequence number 0 is clear.
    ///
    /// Stale bits in the other blocks are not refused: the oldest block legitimately holds bits
    /// below the left edge (unreachable behind the "too old" test), and blocks the edge has not yet
    /// reached are zeroed when it moves into them, so neither can change a verdict.
    pub fn restore(snapshot: ReplaySnapshot) -> Option<Self> {
        let ReplaySnapshot {
            size,
            highest,
            bitmap,
            enabled,
        } = snapshot;
        if !enabled {
            return (size == 0 && bitmap.is_empty()).then_some(ReplayWindow {
                highest,
                ring: None,
            });
        }
        let mut ring = Ring::new(size)?;
        if bitmap.len() != ring.blocks.len() {
            return None;
        }
        ring.blocks = bitmap.into_boxed_slice();
        ring.consistent_with(highest).then_some(ReplayWindow {
            highest,
            ring: Some(ring),
        })
    }
}

impl Ring {
    fn new(size: u32) -> Option<Ring> {
        if !(MIN_SIZE..=MAX_SIZE).contains(&size) || !size.is_multiple_of(BLOCK_BITS) {
            return None;
        }
        // size <= 65536, so at most 1025 blocks; the `+ 1` is RFC 6479's spare block.
        let blocks = usize::try_from(size >> BLOCK_SHIFT).ok()?.checked_add(1)?;
        Some(Ring {
            size,
            blocks: vec![0; blocks].into_boxed_slice(),
        })
    }

    /// Ring slot of block number `block` (= `seq >> 6`). `None` only if the ring were empty, which
    /// the invariant excludes; callers fail closed on it.
    fn slot(&self, block: u32) -> Option<usize> {
        usize::try_from(block).ok()?.checked_rem(self.blocks.len())
    }

    /// The bit of `seq` inside its block (`seq & 63 < 64`, so the shift is in range).
    fn bit(seq: u32) -> u64 {
        1u64 << (seq & BIT_MASK)
    }

    fn check(&self, highest: u32, seq: u32) -> Result<(), Replay> {
        if seq == 0 {
            return Err(Replay::Zero);
        }
        if seq > highest {
            // Right of the window: new. (RFC 4303 §3.4.3: "or if the packet is to the right of
            // the window ... the receiver proceeds to integrity verification".)
            return Ok(());
        }
        // seq <= highest here, so the subtraction cannot wrap. Too old: seq <= highest - size.
        if highest.wrapping_sub(seq) >= self.size {
            return Err(Replay::TooOld);
        }
        let seen = self
            .slot(seq >> BLOCK_SHIFT)
            .and_then(|slot| self.blocks.get(slot))
            .map(|block| block & Self::bit(seq) != 0);
        match seen {
            Some(false) => Ok(()),
            // `None` cannot happen (see `slot`); refusing is the safe answer.
            Some(true) | None => Err(Replay::Duplicate),
        }
    }

    /// Slide the right edge to `seq` if it is beyond `highest` and set the bit of `seq`. The
    /// caller has run `check`. Fails (changing nothing) only on the impossible empty ring.
    fn record(&mut self, highest: u32, seq: u32) -> Result<(), Replay> {
        // Resolve the slot before changing anything, so that a failure leaves the ring intact.
        let slot = self.slot(seq >> BLOCK_SHIFT).ok_or(Replay::Duplicate)?;
        if seq > highest {
            self.slide(highest >> BLOCK_SHIFT, seq >> BLOCK_SHIFT);
        }
        let block = self.blocks.get_mut(slot).ok_or(Replay::Duplicate)?;
        *block |= Self::bit(seq);
        Ok(())
    }

    /// Move the current block from `from` to `to` (`to >= from`), zeroing every block moved into:
    /// `from + 1 ..= to`, or the whole ring if that is at least as long as the ring. Those slots
    /// held blocks `from + 1 - len ..= to - len`, all left of the new window, whose bits must not
    /// leak into it.
    fn slide(&mut self, from: u32, to: u32) {
        // to >= from because seq > highest; blocks are < 2^26, so `to - from` cannot wrap.
        let skipped = usize::try_from(to.wrapping_sub(from)).unwrap_or(usize::MAX);
        if skipped >= self.blocks.len() {
            self.blocks.fill(0);
            return;
        }
        // skipped < len <= 1025 and from < 2^26, so `from + step` stays far below u32::MAX.
        for step in 1..=skipped {
            let Some(block) = u32::try_from(step)
                .ok()
                .and_then(|step| from.checked_add(step))
            else {
                continue;
            };
            if let Some(word) = self.slot(block).and_then(|slot| self.blocks.get_mut(slot)) {
                *word = 0;
            }
        }
    }

    /// See [`ReplayWindow::restore`].
    fn consistent_with(&self, highest: u32) -> bool {
        if highest == 0 {
            return self.blocks.iter().all(|&block| block == 0);
        }
        let Some(&current) = self
            .slot(highest >> BLOCK_SHIFT)
            .and_then(|slot| self.blocks.get(slot))
        else {
            return false;
        };
        let own = Self::bit(highest);
        // Bits strictly above `highest` in its block: everything not at or below `own`.
        // `own - 1` cannot wrap because `own` has exactly one bit set.
        let above = !(own | own.wrapping_sub(1));
        // Sequence number 0 is bit 0 of block 0, which is the current block while highest < 64.
        let zero_seen = highest < BLOCK_BITS && current & 1 != 0;
        current & own != 0 && current & above == 0 && !zero_seen
    }
}

#[cfg(test)]
// Tests may index, unwrap and do plain arithmetic: a panic there is a failed test.
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const SIZES: [u32; 4] = [64, 128, 1024, 4096];

    /// Knuth's MMIX LCG; the high bits are the usable ones.
    struct Lcg(u64);
    impl Lcg {
        fn next_u32(&mut self) -> u32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 32) as u32
        }
        fn below(&mut self, n: u32) -> u32 {
            self.next_u32() % n
        }
    }

    /// The obviously correct reference: every accepted number remembered.
    struct Model {
        size: u32,
        highest: u32,
        seen: HashSet<u32>,
    }
    impl Model {
        fn new(size: u32) -> Self {
            Model {
                size,
                highest: 0,
                seen: HashSet::new(),
            }
        }
        fn check(&self, seq: u32) -> Result<(), Replay> {
            if seq == 0 {
                Err(Replay::Zero)
            } else if seq > self.highest {
                Ok(())
            } else if u64::from(seq) + u64::from(self.size) <= u64::from(self.highest) {
                Err(Replay::TooOld)
            } else if self.seen.contains(&seq) {
                Err(Replay::Duplicate)
            } else {
                Ok(())
            }
        }
        fn accept(&mut self, seq: u32) -> Result<(), Replay> {
            self.check(seq)?;
            self.seen.insert(seq);
            self.highest = self.highest.max(seq);
            Ok(())
        }
    }

    /// Every verdict of `w` over `lo..=hi` agrees with the model.
    fn agree(w: &ReplayWindow, m: &Model, lo: u32, hi: u32) {
        for seq in lo..=hi {
            assert_eq!(
                w.check(seq),
                m.check(seq),
                "seq {seq}, highest {}",
                m.highest
            );
        }
    }

    #[test]
    fn sizes_validated() {
        for size in [64, 128, 192, 1024, 4096, 65536] {
            let w = ReplayWindow::new(size).unwrap();
            assert_eq!(w.size(), size);
            assert_eq!(w.highest(), 0);
            assert!(w.is_enabled());
            assert_eq!(w.snapshot().bitmap.len(), (size / 64 + 1) as usize);
        }
        for size in [0, 1, 32, 63, 65, 100, 65536 + 64, 131072, u32::MAX] {
            assert!(ReplayWindow::new(size).is_none(), "size {size}");
        }
    }

    #[test]
    fn in_order_all_accepted_and_every_replay_dropped() {
        for size in SIZES {
            let mut w = ReplayWindow::new(size).unwrap();
            for seq in 1..=10_000u32 {
                assert_eq!(w.check(seq), Ok(()));
                assert_eq!(w.accept(seq), Ok(()), "seq {seq}");
                assert_eq!(w.highest(), seq);
                // Immediate replay.
                assert_eq!(w.check(seq), Err(Replay::Duplicate));
                assert_eq!(w.accept(seq), Err(Replay::Duplicate));
            }
            // Replaying the whole stream afterwards: nothing gets through; the last `size`
            // numbers are duplicates, everything before them too old.
            let mut dropped = 0;
            for seq in 1..=10_000u32 {
                let expect = if seq > 10_000 - size {
                    Replay::Duplicate
                } else {
                    Replay::TooOld
                };
                assert_eq!(w.accept(seq), Err(expect), "seq {seq}");
                dropped += 1;
            }
            assert_eq!(dropped, 10_000);
            assert_eq!(w.highest(), 10_000);
        }
    }

    #[test]
    fn zero_refused_when_enabled() {
        let mut w = ReplayWindow::new(64).unwrap();
        assert_eq!(w.check(0), Err(Replay::Zero));
        assert_eq!(w.accept(0), Err(Replay::Zero));
        w.accept(1).unwrap();
        assert_eq!(w.accept(0), Err(Replay::Zero));
        w.accept(1000).unwrap();
        assert_eq!(w.accept(0), Err(Replay::Zero));
        assert_eq!(w.highest(), 1000);
    }

    #[test]
    fn out_of_order_within_window_once() {
        let mut w = ReplayWindow::new(64).unwrap();
        w.accept(100).unwrap();
        for seq in [90, 37, 99, 80, 64, 63, 65] {
            assert_eq!(w.accept(seq), Ok(()), "seq {seq}");
            assert_eq!(w.accept(seq), Err(Replay::Duplicate), "seq {seq}");
            assert_eq!(w.highest(), 100);
        }
        // Never-seen numbers in the window are still accepted.
        assert_eq!(w.check(91), Ok(()));
        assert_eq!(w.check(36), Err(Replay::TooOld));
        // Numbers below `size` are all in the window while highest < size.
        let mut w = ReplayWindow::new(128).unwrap();
        w.accept(100).unwrap();
        for seq in (1..100).rev() {
            assert_eq!(w.accept(seq), Ok(()), "seq {seq}");
        }
        for seq in 1..=100 {
            assert_eq!(w.check(seq), Err(Replay::Duplicate), "seq {seq}");
        }
    }

    #[test]
    fn left_edge_exact() {
        for size in SIZES {
            // Right edges at, just before and just after block boundaries, and the edge case
            // highest == size (left edge 1).
            for highest in [
                size,
                size + 1,
                3 * size,
                3 * size - 1,
                3 * size + 1,
                3 * size + 63,
                3 * size + 64,
                1_000_000,
                u32::MAX,
            ] {
                let mut w = ReplayWindow::new(size).unwrap();
                w.accept(highest).unwrap();
                let left = highest - size + 1;
                assert_eq!(w.check(left), Ok(()), "size {size} highest {highest}");
                assert_eq!(w.accept(left), Ok(()));
                assert_eq!(w.accept(left), Err(Replay::Duplicate));
                if left > 1 {
                    assert_eq!(w.check(left - 1), Err(Replay::TooOld));
                    assert_eq!(w.accept(left - 1), Err(Replay::TooOld));
                }
                if left > 2 {
                    assert_eq!(w.check(left - 2), Err(Replay::TooOld));
                }
                assert_eq!(
                    w.check(1),
                    if left > 1 {
                        Err(Replay::TooOld)
                    } else {
                        Err(Replay::Duplicate)
                    }
                );
                // Everything strictly inside is still open.
                for seq in left + 1..highest {
                    assert_eq!(w.check(seq), Ok(()), "seq {seq}");
                }
            }
        }
    }

    /// Fill the window completely, jump, and check that no bit from before the jump shows in the
    /// new window: every number in it that was not accepted must pass.
    #[test]
    fn jumps_slide_and_clear_skipped_blocks() {
        for size in SIZES {
            let jumps = [
                1,
                63,
                64,
                65,
                size - 1,
                size,
                size + 1,
                size + 63,
                size + 64,
                size + 65,
                2 * size,
                10 * size,
                10 * size + 17,
            ];
            for start in [3 * size + 17, 5 * size, 5 * size - 1] {
                for jump in jumps {
                    let mut w = ReplayWindow::new(size).unwrap();
                    let mut m = Model::new(size);
                    for seq in 1..=start {
                        w.accept(seq).unwrap();
                        m.accept(seq).unwrap();
                    }
                    let top = start + jump;
                    assert_eq!(w.accept(top), Ok(()));
                    m.accept(top).unwrap();
                    assert_eq!(w.highest(), top);
                    agree(&w, &m, top.saturating_sub(2 * size + 130), top + 130);
                    // Fill the new window; each number goes through exactly once.
                    for seq in top - size + 1..top {
                        assert_eq!(w.accept(seq), m.accept(seq), "seq {seq}");
                    }
                    agree(&w, &m, top - size - 70, top + 70);
                }
            }
            // To the very end of the sequence space, from an empty and from a full window.
            for start in [0, 1000, 3 * size + 5] {
                let mut w = ReplayWindow::new(size).unwrap();
                let mut m = Model::new(size);
                for seq in 1..=start {
                    w.accept(seq).unwrap();
                    m.accept(seq).unwrap();
                }
                assert_eq!(w.accept(u32::MAX), Ok(()));
                m.accept(u32::MAX).unwrap();
                agree(&w, &m, u32::MAX - size - 70, u32::MAX);
                agree(&w, &m, 0, start + 70);
                for seq in u32::MAX - size + 1..u32::MAX {
                    assert_eq!(w.accept(seq), Ok(()));
                }
                for seq in u32::MAX - size + 1..=u32::MAX {
                    assert_eq!(w.accept(seq), Err(Replay::Duplicate));
                }
                assert_eq!(w.accept(u32::MAX - size), Err(Replay::TooOld));
            }
        }
    }

    #[test]
    fn check_never_mutates_and_accept_agrees() {
        let mut rng = Lcg(7);
        for size in SIZES {
            let mut w = ReplayWindow::new(size).unwrap();
            for _ in 0..3000 {
                let seq = w.highest().saturating_sub(size + 10) + rng.below(2 * size + 40);
                let before = w.clone();
                let verdict = w.check(seq);
                assert_eq!(w, before, "check({seq}) changed the window");
                let accepted = w.accept(seq);
                assert_eq!(accepted, verdict, "seq {seq}");
                if verdict.is_err() {
                    assert_eq!(w, before, "failed accept({seq}) changed the window");
                } else {
                    assert_eq!(w.accept(seq), Err(Replay::Duplicate));
                }
            }
            // Two packets with the same number both pass `check` before either is verified;
            // only the first `accept` may succeed (the re-check the API documents).
            for seq in [w.highest() + 1, w.highest() - size / 2] {
                if w.check(seq).is_err() {
                    continue;
                }
                assert_eq!(w.check(seq), Ok(())); // packet A
                assert_eq!(w.check(seq), Ok(())); // packet B, the replay
                assert_eq!(w.accept(seq), Ok(())); // A verified
                assert_eq!(w.accept(seq), Err(Replay::Duplicate)); // B verified, refused
            }
        }
    }

    #[test]
    fn randomized_against_reference_model() {
        let mut totals = [0usize; 4]; // Ok, Duplicate, TooOld, Zero
        for (i, size) in SIZES.into_iter().enumerate() {
            let mut rng = Lcg(0x5eed_0000 + i as u64);
            let mut w = ReplayWindow::new(size).unwrap();
            let mut m = Model::new(size);
            for op in 0..50_000u32 {
                let h = m.highest;
                let left = h.saturating_sub(size);
                let seq = match rng.below(100) {
                    // mostly in order, with small gaps
                    0..=34 => h.saturating_add(1 + rng.below(4)),
                    // anywhere near the window, duplicates likely
                    35..=64 => left.saturating_sub(64) + rng.below(size + 128),
                    // right around the left edge
                    65..=74 => (left + 3).saturating_sub(rng.below(6)),
                    // the right edge itself and its neighbours
                    75..=79 => h.saturating_sub(rng.below(3)),
                    // forward jumps up to a few windows
                    80..=91 => h.saturating_add(rng.below(3 * size)),
                    // forward jumps of whole blocks, +-1
                    92..=96 => h
                        .saturating_add(64 * (1 + rng.below(size / 64 + 2)))
                        .saturating_sub(1)
                        .saturating_add(rng.below(3)),
                    // rare big jumps (capped so the run does not reach u32::MAX early)
                    97..=98 => h.saturating_add(rng.below(1 << 16)),
                    _ => 0,
                };
                let expect = m.check(seq);
                if rng.below(2) == 0 {
                    let before = w.clone();
                    assert_eq!(
                        w.check(seq),
                        expect,
                        "op {op} seq {seq} highest {h} size {size}"
                    );
                    assert_eq!(w, before);
                } else {
                    let got = w.accept(seq);
                    assert_eq!(
                        got,
                        m.accept(seq),
                        "op {op} seq {seq} highest {h} size {size}"
                    );
                }
                assert_eq!(w.highest(), m.highest);
                totals[match expect {
                    Ok(()) => 0,
                    Err(Replay::Duplicate) => 1,
                    Err(Replay::TooOld) => 2,
                    Err(Replay::Zero) => 3,
                }] += 1;
                // Now and then, hand the window to "another process" and carry on with the copy.
                if op % 5_000 == 4_999 {
                    let restored = ReplayWindow::restore(w.snapshot()).unwrap();
                    assert_eq!(restored, w);
                    w = restored;
                    let hi = m.highest;
                    agree(&w, &m, hi.saturating_sub(size + 70), hi.saturating_add(70));
                }
            }
            // The run must not have degenerated into the top of the sequence space.
            assert!(
                m.highest < u32::MAX / 2,
                "size {size}: highest {}",
                m.highest
            );
        }
        // Every verdict was exercised many times.
        for (count, name) in totals.iter().zip(["Ok", "Duplicate", "TooOld", "Zero"]) {
            assert!(*count > 1_000, "{name}: only {count}");
        }
    }

    #[test]
    fn disabled_accepts_everything() {
        let mut w = ReplayWindow::disabled();
        assert!(!w.is_enabled());
        assert_eq!(w.size(), 0);
        for seq in [5, 5, 1, 0, 0, 1000, 3, u32::MAX, 0, 1, 1] {
            assert_eq!(w.check(seq), Ok(()));
            assert_eq!(w.accept(seq), Ok(()));
        }
        assert_eq!(w.highest(), u32::MAX);
        let snap = w.snapshot();
        assert_eq!(
            snap,
            ReplaySnapshot {
                size: 0,
                highest: u32::MAX,
                bitmap: vec![],
                enabled: false
            }
        );
        assert_eq!(ReplayWindow::restore(snap).unwrap(), w);
    }

    #[test]
    fn snapshot_round_trip_preserves_behaviour() {
        let mut rng = Lcg(42);
        for size in SIZES {
            let mut w = ReplayWindow::new(size).unwrap();
            // Fresh window.
            assert_eq!(ReplayWindow::restore(w.snapshot()).unwrap(), w);
            for _ in 0..2000 {
                let seq = w.highest().saturating_sub(size) + rng.below(size + size / 2) + 1;
                let _ = w.accept(seq);
            }
            let snap = w.snapshot();
            assert_eq!(snap.size, size);
            assert_eq!(snap.highest, w.highest());
            assert!(snap.enabled);
            let mut copy = ReplayWindow::restore(snap.clone()).unwrap();
            assert_eq!(copy, w);
            let hi = w.highest();
            for seq in hi.saturating_sub(size + 70)..=hi + 70 {
                assert_eq!(copy.check(seq), w.check(seq));
            }
            // The two go on identically.
            for _ in 0..2000 {
                let seq = w.highest().saturating_sub(size) + rng.below(3 * size);
                assert_eq!(copy.accept(seq), w.accept(seq));
            }
            assert_eq!(copy, w);
        }
    }

    #[test]
    fn snapshot_serde_round_trip() {
        let mut w = ReplayWindow::new(128).unwrap();
        for seq in [3, 1, 200, 150, 77] {
            let _ = w.accept(seq);
        }
        let json = serde_json::to_string(&w.snapshot()).unwrap();
        let back: ReplaySnapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(ReplayWindow::restore(back).unwrap(), w);
        // A field this version does not know is refused, not ignored.
        let extra = json.replacen('{', "{\"esn\":true,", 1);
        assert!(serde_json::from_str::<ReplaySnapshot>(&extra).is_err());
    }

    #[test]
    fn malformed_snapshots_refused() {
        let mut w = ReplayWindow::new(128).unwrap();
        w.accept(1000).unwrap();
        w.accept(999).unwrap();
        let good = w.snapshot();
        assert!(ReplayWindow::restore(good.clone()).is_some());
        let bad = |f: &dyn Fn(&mut ReplaySnapshot)| {
            let mut s = good.clone();
            f(&mut s);
            assert!(ReplayWindow::restore(s.clone()).is_none(), "accepted {s:?}");
        };
        // Structure.
        bad(&|s| {
            s.bitmap.pop();
        });
        bad(&|s| s.bitmap.push(0));
        bad(&|s| s.bitmap.clear());
        bad(&|s| s.size = 0);
        bad(&|s| s.size = 100);
        bad(&|s| s.size = 63);
        bad(&|s| s.size = 192); // valid size, but bitmap is for 128
        bad(&|s| s.size = 65536 + 64);
        bad(&|s| s.size = u32::MAX);
        bad(&|s| {
            s.size = 0;
            s.bitmap.clear();
        });
        bad(&|s| s.enabled = false); // disabled with a size and a bitmap
        bad(&|s| {
            s.enabled = false;
            s.bitmap.clear();
        });
        bad(&|s| {
            s.enabled = false;
            s.size = 0;
        });
        // Bits that disagree with `highest` (1000 = block 15, bit 40; ring of 3 blocks -> slot 0).
        bad(&|s| s.bitmap[0] |= 1 << 41); // 1001 marked as seen
        bad(&|s| s.bitmap[0] |= 1 << 63); // 1023 marked as seen
        bad(&|s| s.bitmap[0] &= !(1 << 40)); // highest itself not seen
        bad(&|s| s.highest = 0); // nothing accepted, yet bits set
        bad(&|s| s.highest = 1001);
        // Seq 0 recorded.
        let mut small = ReplayWindow::new(64).unwrap();
        small.accept(5).unwrap();
        let mut s = small.snapshot();
        assert!(ReplayWindow::restore(s.clone()).is_some());
        s.bitmap[0] |= 1;
        assert!(ReplayWindow::restore(s).is_none());
        // Fresh window with any bit set.
        let mut s = ReplayWindow::new(64).unwrap().snapshot();
        s.bitmap[1] = 1 << 7;
        assert!(ReplayWindow::restore(s).is_none());
        // A disabled snapshot is accepted with any `highest`, only in its canonical shape.
        for highest in [0, 17, u32::MAX] {
            let s = ReplaySnapshot {
                size: 0,
                highest,
                bitmap: vec![],
                enabled: false,
            };
            assert_eq!(ReplayWindow::restore(s).unwrap().highest(), highest);
        }
    }

    /// A bit left set above the right edge would refuse a fresh packet later: this is why
    /// `restore` refuses it.
    #[test]
    fn junk_above_edge_would_matter() {
        let mut w = ReplayWindow::new(128).unwrap();
        w.accept(1000).unwrap();
        let mut s = w.snapshot();
        s.bitmap[0] |= 1 << 45; // 1005
        // Build the window the way an unchecked restore would.
        let forged = ReplayWindow {
            highest: s.highest,
            ring: Some(Ring {
                size: s.size,
                blocks: s.bitmap.clone().into_boxed_slice(),
            }),
        };
        let mut forged = forged;
        forged.accept(1010).unwrap();
        assert_eq!(forged.check(1005), Err(Replay::Duplicate)); // a fresh packet refused
        assert!(ReplayWindow::restore(s).is_none());
    }

    /// Stale bits in the oldest block are normal RFC 6479 state and must round-trip.
    #[test]
    fn stale_bits_in_spare_block_accepted() {
        let mut w = ReplayWindow::new(64).unwrap();
        for seq in 1..=127 {
            w.accept(seq).unwrap();
        }
        // highest = 127 (block 1, bit 63): block 0 holds 1..=63, all left of the window 64..=127.
        let s = w.snapshot();
        assert_ne!(s.bitmap[0], 0);
        let r = ReplayWindow::restore(s).unwrap();
        assert_eq!(r.check(63), Err(Replay::TooOld));
        assert_eq!(r, w);
    }
}
