//! RFC 7383 reassembly: the decrypted contents of SKF fragments, collected by number. Bounded
//! in count, bytes and time, so a peer cannot make us hold much.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::crypto::Secret;
use crate::wire::{Fragment, PayloadType};

/// At most this many fragments per message.
pub const MAX_FRAGMENTS: u16 = 32;
/// At most this many decrypted bytes per message.
pub const MAX_BYTES: usize = 64 * 1024;
/// A message whose fragments do not all arrive within this is dropped.
pub const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Reassembly {
    message_id: u32,
    response: bool,
    total: u16,
    first_inner: Option<PayloadType>,
    parts: BTreeMap<u16, Secret>,
    bytes: usize,
    started: Instant,
}

/// What one more fragment did.
#[derive(Debug)]
pub enum Added {
    /// Waiting for more.
    Pending,
    /// All there: the first inner payload type and the concatenated plaintext.
    Complete(PayloadType, Secret),
    /// Out of bounds or inconsistent; dropped.
    Rejected,
}

impl Reassembly {
    /// Adds an authenticated (already decrypted) fragment to `slot`.
    pub fn add(
        slot: &mut Option<Reassembly>,
        now: Instant,
        message_id: u32,
        response: bool,
        frag: Fragment,
        first_inner: PayloadType,
        plain: Secret,
    ) -> Added {
        if frag.total == 0
            || frag.total > MAX_FRAGMENTS
            || frag.number == 0
            || frag.number > frag.total
        {
            return Added::Rejected;
        }
        let restart = match slot {
            None => true,
            Some(r) => {
                r.message_id != message_id
                    || r.response != response
                    // RFC 7383 §2.6.1: a different total means the sender re-fragmented
                    // (smaller PMTU): start again.
                    || r.total != frag.total
                    || now.saturating_duration_since(r.started) > TIMEOUT
            }
        };
        if restart {
            *slot = Some(Reassembly {
                message_id,
                response,
                total: frag.total,
                first_inner: None,
                parts: BTreeMap::new(),
                bytes: 0,
                started: now,
            });
        }
        let Some(r) = slot.as_mut() else {
            return Added::Rejected;
        };
        if r.parts.contains_key(&frag.number) {
            return Added::Pending;
        }
        let bytes = r.bytes.saturating_add(plain.len());
        if bytes > MAX_BYTES {
            *slot = None;
            return Added::Rejected;
        }
        r.bytes = bytes;
        if frag.number == 1 {
            r.first_inner = Some(first_inner);
        }
        r.parts.insert(frag.number, plain);
        if r.parts.len() < usize::from(r.total) {
            return Added::Pending;
        }
        let Some(done) = slot.take() else {
            return Added::Rejected;
        };
        let Some(first) = done.first_inner else {
            return Added::Rejected;
        };
        let mut all = Secret::new(Vec::with_capacity(done.bytes));
        for p in done.parts.values() {
            all.extend_from_slice(p);
        }
        Added::Complete(first, all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(b: &[u8]) -> Secret {
        Secret::new(b.to_vec())
    }

    #[test]
    fn reassembles_in_any_order_and_bounds() {
        let now = Instant::now();
        let mut slot = None;
        let f = |number, total| Fragment { number, total };
        assert!(matches!(
            Reassembly::add(
                &mut slot,
                now,
                3,
                false,
                f(2, 3),
                PayloadType::NONE,
                s(b"bb")
            ),
            Added::Pending
        ));
        assert!(matches!(
            Reassembly::add(
                &mut slot,
                now,
                3,
                false,
                f(3, 3),
                PayloadType::NONE,
                s(b"c")
            ),
            Added::Pending
        ));
        match Reassembly::add(&mut slot, now, 3, false, f(1, 3), PayloadType::IDI, s(b"a")) {
            Added::Complete(t, b) => {
                assert_eq!(t, PayloadType::IDI);
                assert_eq!(&b[..], b"abbc");
            }
            other => panic!("{other:?}"),
        }
        assert!(slot.is_none());
        assert!(matches!(
            Reassembly::add(
                &mut slot,
                now,
                3,
                false,
                f(4, 3),
                PayloadType::NONE,
                s(b"x")
            ),
            Added::Rejected
        ));
        assert!(matches!(
            Reassembly::add(
                &mut slot,
                now,
                3,
                false,
                f(1, 33),
                PayloadType::NONE,
                s(b"x")
            ),
            Added::Rejected
        ));
        // Too many bytes in total.
        let big = vec![0u8; MAX_BYTES / 2 + 1];
        assert!(matches!(
            Reassembly::add(&mut slot, now, 4, false, f(1, 3), PayloadType::IDI, s(&big)),
            Added::Pending
        ));
        assert!(matches!(
            Reassembly::add(
                &mut slot,
                now,
                4,
                false,
                f(2, 3),
                PayloadType::NONE,
                s(&big)
            ),
            Added::Rejected
        ));
        assert!(slot.is_none());
    }
}
