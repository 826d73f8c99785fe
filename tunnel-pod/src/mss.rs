//! TCP MSS clamping on SYN and SYN-ACK segments, so that the encapsulated packet fits the path.
//!
//! The checksum is updated incrementally (RFC 1624), which needs neither the pseudo-header nor a
//! pass over the payload, and works the same for IPv4 and IPv6.

use crate::wire::checksum::update16;
use crate::wire::{ipv4, tcp};

/// What clamping did to a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not a SYN with an MSS option above the limit (or not TCP at all).
    Unchanged,
    /// The MSS option was lowered from this value.
    Clamped { from: u16 },
}

/// Lowers the MSS option of a TCP SYN or SYN-ACK in the IP packet `packet` to at most `max`.
/// `max` is the MSS for IPv4 (MTU − 40); an IPv6 header is 20 bytes longer, so IPv6 segments
/// are clamped to `max − 20`.
pub fn clamp(packet: &mut [u8], max: u16) -> Outcome {
    let max = if packet.first().is_some_and(|b| b >> 4 == 6) {
        max.saturating_sub(20)
    } else {
        max
    };
    let Some(tcp_range) = tcp_segment(packet) else {
        return Outcome::Unchanged;
    };
    let Some(seg) = packet.get_mut(tcp_range) else {
        return Outcome::Unchanged;
    };
    let Ok(mut seg) = tcp::Segment::new_checked(seg) else {
        return Outcome::Unchanged;
    };
    if seg.flags() & tcp::FLAG_SYN == 0 {
        return Outcome::Unchanged;
    }
    let Some(at) = seg.mss_value_offset() else {
        return Outcome::Unchanged;
    };
    let bytes = seg.as_mut_bytes();
    let Some(value) = bytes.get(at..at + 2) else {
        return Outcome::Unchanged;
    };
    let from = u16::from_be_bytes([value[0], value[1]]);
    if from <= max {
        return Outcome::Unchanged;
    }
    let mut hc = seg.checksum();
    // The checksum sums 16-bit words aligned to the segment start. Options are byte aligned, so
    // an MSS value after a single NOP straddles two words: update each word it touches.
    let first_word = at & !1;
    let last_word = (at + 1) & !1;
    let old_words = [
        word(seg.as_mut_bytes(), first_word),
        word(seg.as_mut_bytes(), last_word),
    ];
    if let Some(v) = seg.as_mut_bytes().get_mut(at..at + 2) {
        v.copy_from_slice(&max.to_be_bytes());
    }
    for (i, w) in [first_word, last_word].into_iter().enumerate() {
        if i == 1 && last_word == first_word {
            break;
        }
        hc = update16(hc, old_words[i], word(seg.as_mut_bytes(), w));
    }
    seg.set_checksum(hc);
    Outcome::Clamped { from }
}

fn word(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([
        b.get(at).copied().unwrap_or(0),
        b.get(at + 1).copied().unwrap_or(0),
    ])
}

/// The byte range of the TCP segment inside an IPv4 or IPv6 packet, when there is one to clamp:
/// first fragments only, and IPv6 without extension headers (a SYN rarely carries any).
fn tcp_segment(packet: &[u8]) -> Option<core::ops::Range<usize>> {
    match packet.first()? >> 4 {
        4 => {
            let p = ipv4::Packet::new_checked(packet).ok()?;
            let frag_offset = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]) & 0x1fff;
            (p.protocol() == ipv4::PROTO_TCP && frag_offset == 0)
                .then(|| p.header_len()..usize::from(p.total_len()))
        }
        6 => {
            let payload_len = usize::from(u16::from_be_bytes([*packet.get(4)?, *packet.get(5)?]));
            let end = 40 + payload_len;
            (*packet.get(6)? == ipv4::PROTO_TCP && end <= packet.len()).then_some(40..end)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::{finish, pseudo_header_v4, sum};

    /// An IPv4 TCP SYN with the given options and a correct checksum.
    fn syn(options: &[u8], flags: u8) -> Vec<u8> {
        let tcp_len = 20 + options.len();
        let mut p = vec![0u8; 20 + tcp_len];
        ipv4::Repr {
            src: [10, 0, 0, 1].into(),
            dst: [10, 0, 0, 2].into(),
            protocol: ipv4::PROTO_TCP,
            ttl: 64,
            payload_len: tcp_len,
        }
        .emit(&mut p)
        .unwrap();
        let t = &mut p[20..];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&80u16.to_be_bytes());
        t[12] = ((tcp_len / 4) as u8) << 4;
        t[13] = flags;
        t[20..].copy_from_slice(options);
        let c = tcp_checksum(&p);
        p[36..38].copy_from_slice(&c.to_be_bytes());
        p
    }

    fn tcp_checksum(p: &[u8]) -> u16 {
        let mut zeroed = p[20..].to_vec();
        zeroed[16..18].fill(0);
        let ph = pseudo_header_v4([10, 0, 0, 1], [10, 0, 0, 2], 6, zeroed.len() as u16);
        finish(sum(&zeroed, ph))
    }

    fn mss_of(p: &[u8]) -> u16 {
        let s = tcp::Segment::new_checked(&p[20..]).unwrap();
        let at = s.mss_value_offset().unwrap();
        u16::from_be_bytes([p[20 + at], p[21 + at]])
    }

    #[test]
    fn clamps_syn_and_keeps_checksum_valid() {
        for options in [
            &[2, 4, 0x05, 0xb4][..],             // MSS 1460, aligned
            &[1, 2, 4, 0x05, 0xb4, 1, 1, 1][..], // after one NOP: straddles words
            &[1, 1, 4, 2, 2, 4, 0x05, 0xb4][..], // SACK-permitted first
        ] {
            for flags in [tcp::FLAG_SYN, tcp::FLAG_SYN | tcp::FLAG_ACK] {
                let mut p = syn(options, flags);
                assert_eq!(
                    clamp(&mut p, 1436),
                    Outcome::Clamped { from: 1460 },
                    "{options:?}"
                );
                assert_eq!(mss_of(&p), 1436);
                let stored = u16::from_be_bytes([p[36], p[37]]);
                assert_eq!(stored, tcp_checksum(&p), "{options:?}");
            }
        }
    }

    #[test]
    fn leaves_other_packets_alone() {
        let mut small = syn(&[2, 4, 0x05, 0x00], tcp::FLAG_SYN);
        let before = small.clone();
        assert_eq!(clamp(&mut small, 1436), Outcome::Unchanged);
        assert_eq!(small, before);
        let mut ack = syn(&[2, 4, 0x05, 0xb4], tcp::FLAG_ACK);
        assert_eq!(clamp(&mut ack, 1436), Outcome::Unchanged);
        let mut no_mss = syn(&[1, 1, 1, 1], tcp::FLAG_SYN);
        assert_eq!(clamp(&mut no_mss, 1436), Outcome::Unchanged);
        // Option length running past the header: left alone, no panic.
        let mut broken = syn(&[2, 40, 0x05, 0xb4], tcp::FLAG_SYN);
        assert_eq!(clamp(&mut broken, 1436), Outcome::Unchanged);
    }

    #[test]
    fn ipv6_is_clamped_20_bytes_lower() {
        // IPv6 header (40) + TCP SYN with MSS 1440; Auto for MTU 1476 says 1436 for IPv4.
        let mut p = vec![0u8; 40 + 24];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&24u16.to_be_bytes());
        p[6] = 6;
        p[40 + 12] = 6 << 4;
        p[40 + 13] = tcp::FLAG_SYN;
        p[40 + 20..40 + 24].copy_from_slice(&[2, 4, 0x05, 0xa0]);
        assert_eq!(clamp(&mut p, 1436), Outcome::Clamped { from: 1440 });
        assert_eq!(u16::from_be_bytes([p[62], p[63]]), 1416);
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let base = syn(&[2, 4, 0x05, 0xb4], tcp::FLAG_SYN);
        for cut in 0..base.len() {
            let mut p = base[..cut].to_vec();
            let _ = clamp(&mut p, 1000);
        }
        let mut state = 0x1234_5678u32;
        for _ in 0..20_000 {
            let mut p = base.clone();
            for _ in 0..4 {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let i = (state as usize >> 8) % p.len();
                p[i] = (state >> 24) as u8;
            }
            let _ = clamp(&mut p, 1000);
        }
    }
}
