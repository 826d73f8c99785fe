//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).

/// One's-complement sum of `data` as 16-bit big-endian words, added to `acc`; partly folded
/// (the result fits in 17 bits plus `acc`), to be finished by `finish`.
///
/// Eight bytes at a time, read little-endian: the sum is independent of byte order (RFC 1071
/// §2 (B)), so the words are summed as the CPU loads them, folded to 16 bits and swapped once,
/// instead of swapping every word (which cost three times the additions: 9 GB/s against 30 here
/// for 1432 bytes). A u64 is two 32-bit halves, and summing 32-bit pieces then folding gives the
/// same one's-complement sum as 16-bit words (§2 (C)); a u64 accumulator cannot overflow below
/// 2^32 bytes. The tail (fewer than 8 bytes, at an even offset) is read big-endian.
pub fn sum(data: &[u8], acc: u32) -> u32 {
    let mut le: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let w = u64::from_le_bytes(w);
        le += (w >> 32) + (w & 0xffff_ffff);
    }
    while le > 0xffff {
        le = (le & 0xffff) + (le >> 16);
    }
    let mut wide = u64::from(acc) + u64::from((le as u16).swap_bytes());
    let mut rest = chunks.remainder().chunks_exact(2);
    for c in &mut rest {
        wide += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = rest.remainder() {
        wide += u64::from(*last) << 8;
    }
    while wide > 0xffff_ffff {
        wide = (wide & 0xffff_ffff) + (wide >> 32);
    }
    let mut folded = wide as u32;
    if folded > 0xffff_0000 {
        folded = (folded & 0xffff) + (folded >> 16);
    }
    folded
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
    fn wide_sum_equals_word_by_word() {
        fn reference(data: &[u8]) -> u16 {
            let mut acc: u32 = 0;
            for c in data.chunks(2) {
                acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
                acc = (acc & 0xffff) + (acc >> 16);
            }
            !(acc as u16)
        }
        let mut state = 1u32;
        for len in (0..300).chain([1399, 1400, 1401, 65_535]) {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (state >> 24) as u8
                })
                .collect();
            assert_eq!(checksum(&data), reference(&data), "len {len}");
            // Chained as the pseudo-header sums are: the same as one buffer.
            let (a, b) = data.split_at((len / 2) & !1);
            assert_eq!(
                finish(sum(b, sum(a, 0))),
                reference(&data),
                "chained, len {len}"
            );
            assert_eq!(
                checksum(&vec![0xff; len]),
                reference(&vec![0xff; len]),
                "ones, len {len}"
            );
        }
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
