//! ESP state from another process on hostile JSON (issue #11): a `state.json` Child SA
//! (`ChildDoc`, as `ikev2::sync::install_children` installs it: `Inbound::new` and
//! `Outbound::restore_shared`), a bare `OutboundState`, or an `InboundState`
//! (`Inbound::restore`; not read from `state.json` today, kept covered for the process hand-over
//! it exists for). The first byte selects the form, the sender slot and anti-replay.
//!
//! Checked besides "no panic": packets sealed in a shared slot carry increasing sequence
//! numbers of that slot's residue (seq ≡ index + 1 mod count); a packet sealed on an SA opens
//! on an inbound SA of the same parameters when the selectors let it through both ways.
//! Seeds: `corpus-seeds/esp_state_restore/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tunnel_pod::esp::sa::{Inbound, InboundState, Outbound, OutboundState, SenderSlot};
use tunnel_pod::sync::doc::ChildDoc;

const SLOTS: [SenderSlot; 4] = [
    SenderSlot::SINGLE,
    SenderSlot { index: 0, count: 2 },
    SenderSlot { index: 1, count: 3 },
    SenderSlot {
        index: 15,
        count: 16,
    },
];

/// A 28-byte IPv4/UDP-less packet from 10.0.0.1 to 192.0.2.9.
fn inner() -> [u8; 28] {
    let mut p = [0u8; 28];
    p[0] = 0x45;
    p[3] = 28;
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&[192, 0, 2, 9]);
    p
}

/// Seals a few packets on `out`; checks the slot's sequence numbers. Returns the first packet.
fn seal(out: &Outbound, slot: SenderSlot) -> Option<Vec<u8>> {
    let mut first = None;
    let mut prev = None::<u32>;
    for _ in 0..3 {
        let mut buf = vec![0u8; 512];
        let start = out.headroom();
        buf[start..start + 28].copy_from_slice(&inner());
        let Ok(range) = out.seal(&mut buf, start..start + 28, 4) else {
            break;
        };
        let packet = buf[range].to_vec();
        let seq = u32::from_be_bytes(packet[4..8].try_into().expect("4 bytes"));
        assert!(seq != 0, "sequence number 0 sent");
        if let Some(p) = prev {
            assert!(seq > p, "sequence numbers not increasing: {p} then {seq}");
        }
        if slot.count > 1 {
            assert_eq!(
                u64::from(seq) % u64::from(slot.count),
                (u64::from(slot.index) + 1) % u64::from(slot.count),
                "a sequence number outside the slot"
            );
        }
        prev = Some(seq);
        first.get_or_insert(packet);
    }
    first
}

fn outbound(state: OutboundState, slot: SenderSlot) {
    let any = state.params.traffic_selectors == Default::default();
    let params = state.params.clone();
    let Ok(out) = Outbound::restore_shared(state, slot) else {
        return;
    };
    let _ = out.state();
    let _ = out.needs_rekey();
    let Some(mut packet) = seal(&out, slot) else {
        return;
    };
    // The peer's view: the same parameters inbound.
    if let Ok(inb) = Inbound::new(params, None) {
        let opened = inb.open(&mut packet);
        if any {
            let o = opened.expect("a sealed packet does not open with its own parameters");
            assert_eq!(&packet[o.inner], &inner()[..], "the inner packet changed");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, json)) = data.split_first() else {
        return;
    };
    let slot = SLOTS[usize::from(sel & 3)];
    let replay = (sel & 4 != 0).then_some(1024);
    match (sel >> 3) % 3 {
        0 => {
            let Ok(c) = serde_json::from_slice::<ChildDoc>(json) else {
                return;
            };
            let _ = format!("{c:?}");
            if let Ok(inb) = Inbound::new(c.inbound.clone(), replay) {
                let mut p = vec![0u8; 64];
                p[..4].copy_from_slice(&c.spi_in().to_be_bytes());
                p[7] = 1;
                let _ = inb.open(&mut p);
                let _ = inb.state();
            }
            outbound(c.outbound, slot);
        }
        1 => {
            if let Ok(s) = serde_json::from_slice::<OutboundState>(json) {
                outbound(s.clone(), slot);
                if let Ok(o) = Outbound::restore(s) {
                    let _ = seal(&o, SenderSlot::SINGLE);
                }
            }
        }
        _ => {
            let Ok(s) = serde_json::from_slice::<InboundState>(json) else {
                return;
            };
            let params = s.params.clone();
            let Ok(inb) = Inbound::restore(s) else {
                return;
            };
            let _ = inb.state();
            if let Ok(out) = Outbound::new(params)
                && let Some(mut packet) = seal(&out, SenderSlot::SINGLE)
            {
                let mut again = packet.clone();
                let _ = inb.open(&mut packet);
                let _ = inb.open(&mut again);
            }
            let _ = inb.state();
        }
    }
});
