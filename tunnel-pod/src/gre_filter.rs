//! A classic BPF socket filter that demultiplexes GRE twins in the kernel.
//!
//! Each GRE tunnel-pod's raw socket is connected to its customer endpoint, so the kernel hands
//! it only that peer's protocol-47 frames. Tunnels that share local and customer endpoints and
//! differ only by their RFC 2890 key ("twins") would still each receive every frame of that
//! peer. The filter attached to a tunnel's socket lets through only the frames of its own key:
//!
//! - a tunnel with key `k`: frames whose K bit is set and whose key field is `k`;
//! - a tunnel without a key: frames whose K bit is clear.
//!
//! Frames with another key (or none, or one where none is expected) are dropped in the kernel
//! and never reach the process, so they are not counted as `key_mismatch` (the kernel does not
//! count them either). The filter decides on the key alone: a frame too short to hold the GRE
//! header or its key field is let through, so that the userspace checks still count it
//! (`truncated`), and so are version, reserved bits and checksum (checked in userspace after the
//! filter). Frames that were queued before the filter was attached (the socket is filtered right
//! after it is created, before bind and connect) may still reach `key_mismatch`.
//!
//! A raw IPv4 socket's filter sees the packet from its IPv4 header (reassembled), so the GRE
//! header starts at IHL × 4; the key follows the base header and the optional checksum word
//! (RFC 2890 §2).

/// One cBPF instruction (`struct sock_filter`): kept in our own type so that tests can
/// interpret the program; [`to_sock_filters`] converts it for the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

// Opcode parts, as in <linux/filter.h>.
pub const BPF_LD: u16 = 0x00;
pub const BPF_LDX: u16 = 0x01;
pub const BPF_ST: u16 = 0x02;
pub const BPF_ALU: u16 = 0x04;
pub const BPF_JMP: u16 = 0x05;
pub const BPF_RET: u16 = 0x06;
pub const BPF_MISC: u16 = 0x07;
pub const BPF_W: u16 = 0x00;
pub const BPF_B: u16 = 0x10;
pub const BPF_IMM: u16 = 0x00;
pub const BPF_IND: u16 = 0x40;
pub const BPF_MEM: u16 = 0x60;
pub const BPF_LEN: u16 = 0x80;
pub const BPF_MSH: u16 = 0xa0;
pub const BPF_ADD: u16 = 0x00;
pub const BPF_JA: u16 = 0x00;
pub const BPF_JEQ: u16 = 0x10;
pub const BPF_JGE: u16 = 0x30;
pub const BPF_JSET: u16 = 0x40;
pub const BPF_K: u16 = 0x00;
pub const BPF_X: u16 = 0x08;
pub const BPF_TAX: u16 = 0x00;
pub const BPF_TXA: u16 = 0x80;

/// Return values: keep the whole packet, or drop it.
pub const ACCEPT: u32 = u32::MAX;
pub const DROP: u32 = 0;

/// GRE flag bits in the first header byte (RFC 2784 / 2890).
const GRE_C: u32 = 0x80;
const GRE_K: u32 = 0x20;

const fn stmt(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
    Insn { code, jt, jf, k }
}

/// The filter program for a tunnel with this GRE key (`None`: a keyless tunnel).
pub fn program(key: Option<u32>) -> Vec<Insn> {
    // X = IHL × 4 (the GRE header's offset).
    let ihl = stmt(BPF_LDX | BPF_B | BPF_MSH, 0);
    let mut p = vec![
        ihl,                                      // 0
        stmt(BPF_MISC | BPF_TXA, 0),              // 1: A = X
        stmt(BPF_ALU | BPF_ADD | BPF_K, 4),       // 2: A = end of the base GRE header
        stmt(BPF_MISC | BPF_TAX, 0),              // 3
        stmt(BPF_LD | BPF_W | BPF_LEN, 0),        // 4: A = packet length
        jump(BPF_JMP | BPF_JGE | BPF_X, 0, 1, 0), // 5: long enough → 7
        stmt(BPF_RET | BPF_K, ACCEPT),            // 6: truncated: userspace counts it
        ihl,                                      // 7
        stmt(BPF_LD | BPF_B | BPF_IND, 0),        // 8: A = flags byte
    ];
    match key {
        None => p.extend([
            jump(BPF_JMP | BPF_JSET | BPF_K, GRE_K, 0, 1), // 9: K set → 10, else 11
            stmt(BPF_RET | BPF_K, DROP),                   // 10: a keyed twin's frame
            stmt(BPF_RET | BPF_K, ACCEPT),                 // 11
        ]),
        Some(k) => p.extend([
            jump(BPF_JMP | BPF_JSET | BPF_K, GRE_K, 1, 0), // 9: K set → 11, else 10
            stmt(BPF_RET | BPF_K, DROP),                   // 10: keyless frame
            jump(BPF_JMP | BPF_JSET | BPF_K, GRE_C, 0, 2), // 11: C set → 12, else 14
            stmt(BPF_LD | BPF_IMM, 8),                     // 12: key after the checksum word
            jump(BPF_JMP | BPF_JA, 1, 0, 0),               // 13: → 15
            stmt(BPF_LD | BPF_IMM, 4),                     // 14: key after the base header
            stmt(BPF_ALU | BPF_ADD | BPF_X, 0),            // 15: A = key offset in the packet
            stmt(BPF_ST, 0),                               // 16: M[0] = A
            stmt(BPF_ALU | BPF_ADD | BPF_K, 4),            // 17: A = end of the key
            stmt(BPF_MISC | BPF_TAX, 0),                   // 18
            stmt(BPF_LD | BPF_W | BPF_LEN, 0),             // 19
            jump(BPF_JMP | BPF_JGE | BPF_X, 0, 1, 0),      // 20: holds the key → 22
            stmt(BPF_RET | BPF_K, ACCEPT),                 // 21: truncated: userspace counts it
            stmt(BPF_LDX | BPF_W | BPF_MEM, 0),            // 22: X = M[0]
            stmt(BPF_LD | BPF_W | BPF_IND, 0),             // 23: A = key (network order)
            jump(BPF_JMP | BPF_JEQ | BPF_K, k, 0, 1),      // 24: ours → 25, else 26
            stmt(BPF_RET | BPF_K, ACCEPT),                 // 25
            stmt(BPF_RET | BPF_K, DROP),                   // 26: another tunnel's key
        ]),
    }
    p
}

/// The program in the kernel's form.
pub fn to_sock_filters(program: &[Insn]) -> Vec<socket2::SockFilter> {
    program
        .iter()
        .map(|i| socket2::SockFilter::new(i.code, i.jt, i.jf, i.k))
        .collect()
}

/// Attach the filter of `key` to a raw GRE socket.
pub fn attach(socket: &socket2::Socket, key: Option<u32>) -> std::io::Result<()> {
    socket.attach_filter(&to_sock_filters(&program(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BPF_ABS: u16 = 0x20;

    /// A classic BPF interpreter for the instructions above, with the kernel's rules: a load
    /// beyond the packet ends the program with 0 (drop); jumps only go forward; the program
    /// must end in every path with a return (checked by [`check`]).
    fn run(program: &[Insn], packet: &[u8]) -> u32 {
        let (mut a, mut x, mut mem) = (0u32, 0u32, [0u32; 16]);
        let load = |at: u32, size: usize| -> Option<u32> {
            let at = usize::try_from(at).ok()?;
            let bytes = packet.get(at..at.checked_add(size)?)?;
            Some(bytes.iter().fold(0u32, |v, b| (v << 8) | u32::from(*b)))
        };
        let mut pc = 0usize;
        loop {
            let i = program[pc];
            pc += 1;
            let class = i.code & 0x07;
            let src = if i.code & BPF_X != 0 { x } else { i.k };
            match class {
                BPF_LD | BPF_LDX => {
                    let size = match i.code & 0x18 {
                        BPF_W => 4,
                        BPF_B => 1,
                        _ => 2,
                    };
                    let v = match i.code & 0xe0 {
                        BPF_IMM => Some(i.k),
                        BPF_LEN => Some(u32::try_from(packet.len()).expect("len")),
                        BPF_MEM => Some(mem[i.k as usize]),
                        BPF_IND => load(x.wrapping_add(i.k), size),
                        BPF_ABS => load(i.k, size),
                        BPF_MSH => load(i.k, 1).map(|b| 4 * (b & 0xf)),
                        m => panic!("mode {m:#x}"),
                    };
                    let Some(v) = v else { return 0 };
                    if class == BPF_LD { a = v } else { x = v }
                }
                BPF_ST => mem[i.k as usize] = a,
                BPF_ALU => match i.code & 0xf0 {
                    BPF_ADD => a = a.wrapping_add(src),
                    op => panic!("alu {op:#x}"),
                },
                BPF_JMP => {
                    let taken = match i.code & 0xf0 {
                        BPF_JA => {
                            pc += i.k as usize;
                            continue;
                        }
                        BPF_JEQ => a == src,
                        BPF_JGE => a >= src,
                        BPF_JSET => a & src != 0,
                        op => panic!("jmp {op:#x}"),
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                BPF_RET => return if i.code & 0x18 == 0x10 { a } else { i.k },
                BPF_MISC => match i.code & 0xf8 {
                    BPF_TAX => x = a,
                    BPF_TXA => a = x,
                    op => panic!("misc {op:#x}"),
                },
                c => panic!("class {c:#x}"),
            }
        }
    }

    /// What the kernel's checker demands: at most 4096 instructions, every jump inside the
    /// program, the last one a return, scratch memory written before it is read (here: M[0],
    /// written on the only path that reads it, before it).
    fn check(program: &[Insn]) {
        assert!(!program.is_empty() && program.len() <= 4096);
        for (pc, i) in program.iter().enumerate() {
            if i.code & 0x07 == BPF_JMP {
                let targets = if i.code & 0xf0 == BPF_JA {
                    vec![i.k as usize]
                } else {
                    vec![usize::from(i.jt), usize::from(i.jf)]
                };
                for t in targets {
                    assert!(
                        pc + 1 + t < program.len(),
                        "jump out of the program at {pc}"
                    );
                }
            }
            if i.code == BPF_LDX | BPF_W | BPF_MEM {
                assert!(
                    program[..pc].iter().any(|w| w.code == BPF_ST && w.k == i.k),
                    "M[{}] read before written at {pc}",
                    i.k
                );
            }
        }
        assert_eq!(program.last().map(|i| i.code & 0x07), Some(BPF_RET));
    }

    /// An IPv4 packet (IHL `ihl` words, options zero) carrying GRE with optional checksum and
    /// key fields, and a few payload bytes.
    fn frame(ihl: u8, checksum: bool, key: Option<u32>, payload: usize) -> Vec<u8> {
        let mut p = vec![0u8; usize::from(ihl) * 4];
        p[0] = 0x40 | ihl;
        p[9] = 47;
        let flags = if checksum { 0x80 } else { 0 } | if key.is_some() { 0x20 } else { 0 };
        p.extend([flags, 0, 0x08, 0x00]);
        if checksum {
            p.extend([0xab, 0xcd, 0, 0]);
        }
        if let Some(k) = key {
            p.extend(k.to_be_bytes());
        }
        p.extend(std::iter::repeat_n(0x45, payload));
        p
    }

    #[test]
    fn programs_pass_the_kernel_checks() {
        for key in [None, Some(0), Some(1), Some(u32::MAX)] {
            check(&program(key));
        }
    }

    #[test]
    fn a_keyed_tunnel_accepts_only_its_own_key() {
        for ihl in [5, 6, 15] {
            for checksum in [false, true] {
                let f = |key| run(&program(Some(1)), &frame(ihl, checksum, key, 20));
                assert_eq!(f(Some(1)), ACCEPT, "ihl {ihl} checksum {checksum}");
                assert_eq!(f(Some(2)), DROP, "ihl {ihl} checksum {checksum}");
                assert_eq!(f(Some(0x0100_0000)), DROP, "byte order");
                assert_eq!(
                    f(None),
                    DROP,
                    "keyless frame, ihl {ihl} checksum {checksum}"
                );
            }
        }
        // Key 0 is a key like any other, not "no key".
        assert_eq!(run(&program(Some(0)), &frame(5, false, Some(0), 0)), ACCEPT);
        assert_eq!(run(&program(Some(0)), &frame(5, false, None, 0)), DROP);
        let max = Some(u32::MAX);
        assert_eq!(run(&program(max), &frame(5, true, max, 0)), ACCEPT);
    }

    #[test]
    fn a_keyless_tunnel_accepts_only_keyless_frames() {
        for ihl in [5, 7] {
            for checksum in [false, true] {
                let f = |key| run(&program(None), &frame(ihl, checksum, key, 20));
                assert_eq!(f(None), ACCEPT);
                assert_eq!(f(Some(1)), DROP);
                assert_eq!(f(Some(0)), DROP);
            }
        }
    }

    #[test]
    fn the_key_is_read_after_the_checksum_word_only_when_c_is_set() {
        // With C set, the word right after the base header is the checksum: a checksum that
        // happens to equal our key must not be taken for it.
        let mut f = frame(5, true, Some(9), 0);
        f[24..28].copy_from_slice(&7u32.to_be_bytes());
        assert_eq!(run(&program(Some(7)), &f), DROP);
        assert_eq!(run(&program(Some(9)), &f), ACCEPT);
    }

    #[test]
    fn truncated_frames_reach_userspace_to_be_counted() {
        let whole = frame(5, true, Some(3), 0);
        for len in 1..whole.len() {
            // Up to the key's last byte missing: let through (userspace says `truncated`).
            assert_eq!(run(&program(Some(3)), &whole[..len]), ACCEPT, "len {len}");
        }
        // Shorter than IHL says: let through for any tunnel.
        let short = frame(6, false, None, 0);
        assert_eq!(run(&program(None), &short[..22]), ACCEPT);
        assert_eq!(run(&program(Some(3)), &short[..22]), ACCEPT);
        // Exactly the key, nothing after: decided by the key.
        assert_eq!(run(&program(Some(3)), &whole), ACCEPT);
        assert_eq!(run(&program(Some(4)), &whole), DROP);
    }

    #[test]
    fn the_interpreter_can_fail() {
        // A program that loads beyond the packet drops it, as the kernel does.
        let p = [
            stmt(BPF_LD | BPF_W | BPF_ABS, 100),
            stmt(BPF_RET | BPF_K, ACCEPT),
        ];
        assert_eq!(run(&p, &[0; 10]), DROP);
        assert_eq!(run(&p, &[0; 104]), ACCEPT);
    }
}
