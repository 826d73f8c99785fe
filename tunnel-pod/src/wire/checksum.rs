//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).

/// One's-complement sum of `data` as 16-bit big-endian words, added to `acc`, not folded.
pub fn sum(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
        // Fold early so the accumulator cannot overflow on 64 KiB inputs.
        if acc > 0xFFFF_0000 {
            acc = (acc & 0xFFFF) + (acc >> 16);
        }
    }
    if let [last] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*last) << 8);
    }
    acc
}

/// Folds a sum to 16 bits and complements it: the value to store in a checksum field.
pub fn finish(mut acc: u32) -> u16 {
    while acc > 0xFFFF {
        acc = (acc & 0xFFFF) + (acc >> 16);
    }
    !(acc as u16)
}

/// The checksum of `data` alone.
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(data, 0))
}

/// True when `data`, checksum field included, sums to all ones.
pub fn verify(data: &[u8]) -> bool {
    checksum(data) == 0
}

/// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), for one 16-bit word changing from `old` to `new`.
pub fn update16(hc: u16, old: u16, new: u16) -> u16 {
    let acc = u32::from(!hc) + u32::from(!old) + u32::from(new);
    finish(acc)
}

/// Sum of the IPv4 pseudo-header for TCP/UDP (RFC 793 §3.1).
pub fn pseudo_header_v4(src: [u8; 4], dst: [u8; 4], proto: u8, len: u16) -> u32 {
    let mut acc = sum(&src, 0);
    acc = sum(&dst, acc);
    acc + u32::from(proto) + u32::from(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2 (before complement).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(finish(sum(&data, 0)), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(
            checksum(&[0x12, 0x34, 0x56]),
            checksum(&[0x12, 0x34, 0x56, 0x00])
        );
    }

    #[test]
    fn incremental_equals_full_recompute() {
        let mut data = [
            0x45u8, 0x00, 0x00, 0x54, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0, 0,
        ];
        let c = checksum(&data);
        data[10..12].copy_from_slice(&c.to_be_bytes());
        assert!(verify(&data));
        for new in [0u16, 1, 0x1234, 0xfffe, 0xffff, 0x05b4] {
            let mut d = data;
            let old = u16::from_be_bytes([d[2], d[3]]);
            d[2..4].copy_from_slice(&new.to_be_bytes());
            let hc = u16::from_be_bytes([d[10], d[11]]);
            d[10..12].copy_from_slice(&update16(hc, old, new).to_be_bytes());
            assert!(verify(&d), "update to {new:#x}");
        }
    }
}
