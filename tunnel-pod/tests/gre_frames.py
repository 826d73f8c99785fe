#!/usr/bin/python3
"""Craft GRE frames (RFC 2784 / RFC 2890) and send them to a tunnel-pod.

The tunnel-pod under test receives the frames on `--dst` and must either decapsulate each one
(write its inner packet to the TUN device) or drop it and count the drop under a reason. This
script is the single source of truth for what each variant is expected to do: every variant
returns its frames together with its expectation, and the script prints them as JSON, so the
Rust test (tests/netns_gre.rs) only compares metric deltas against what it is told here.

Run it inside the *sending* network namespace with an explicit interface (there is no default
route in a test namespace), with Debian's interpreter, which has scapy:

    ip netns exec B /usr/bin/python3 gre_frames.py --iface vethB --src 203.0.113.2 \
        --dst 203.0.113.1 --dst-mac 02:..:.. --key 1001 all

`--list` prints the table without sending anything.

Output (one JSON object on stdout):
    {"sent": true, "key": 1001, "mtu": 1476, "results": [
        {"variant": "plain", "description": "...", "frames": 3, "src": "203.0.113.2",
         "expect": "accept" | "drop" | "ignore" | "filtered" | "any", "reasons": ["truncated"]}, ...]}

expect:
    accept  every frame is decapsulated: ingress packets rise by `frames`, no drop counter moves
    drop    every frame is dropped under one of `reasons` (first = the reason the contract names)
    ignore  nothing is decapsulated; the frames may be counted under `reasons` or not at all
            (a connected raw socket never sees them)
    filtered  nothing is decapsulated and nothing is counted: the socket's GRE key filter
            drops the frames in the kernel (a key not ours, or a key where we have none, or
            none where we have one)
    any     no expectation on counters (random garbage): the process must only survive
"""

import argparse
import json
import random
import struct
import sys

# GRE flag bits, bit 0 being the most significant bit of the first 16-bit word (RFC 2784 §2).
FLAG_CHECKSUM = 0x8000  # bit 0, C
FLAG_ROUTING = 0x4000  # bit 1, R (RFC 1701): a receiver of RFC 2784 must discard
FLAG_KEY = 0x2000  # bit 2, K (RFC 2890)
FLAG_SEQUENCE = 0x1000  # bit 3, S (RFC 2890)
RESERVED_4_5 = 0x0C00  # bits 4-5: must be zero, discard otherwise
RESERVED_6_12 = 0x03F8  # bits 6-12: must be sent as zero and ignored on receipt
VERSION_MASK = 0x0007  # bits 13-15

PROTO_IPV4 = 0x0800
PROTO_IPV6 = 0x86DD
PROTO_UNKNOWN = 0x88BE  # ERSPAN: a valid EtherType a plain GRE endpoint does not carry

ACCEPT, DROP, IGNORE, ANY, FILTERED = "accept", "drop", "ignore", "any", "filtered"


def inet_checksum(data):
    """RFC 1071 one's complement checksum."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def gre(payload, proto=PROTO_IPV4, key=None, seq=None, checksum=False,
        corrupt_checksum=False, extra_flags=0, version=0):
    """A GRE header with the optional fields its flags announce, followed by `payload`."""
    flags = extra_flags | (version & VERSION_MASK)
    options = b""
    if checksum:
        flags |= FLAG_CHECKSUM
        options += struct.pack("!HH", 0, 0)  # checksum (filled below) and Reserved1
    if key is not None:
        flags |= FLAG_KEY
        options += struct.pack("!I", key)
    if seq is not None:
        flags |= FLAG_SEQUENCE
        options += struct.pack("!I", seq)
    header = struct.pack("!HH", flags, proto) + options
    if checksum:
        value = inet_checksum(header + payload)
        if corrupt_checksum:
            value ^= 0xFFFF
        header = header[:4] + struct.pack("!H", value) + header[6:]
    return header + payload


class Batch:
    """The GRE payloads of one variant (outer IPv4 is added at send time) and what the
    receiver must do with them."""

    def __init__(self, frames, expect, reasons=(), src=None):
        self.frames = frames
        self.expect = expect
        self.reasons = list(reasons)
        self.src = src


VARIANTS = {}


def variant(description):
    def register(fn):
        VARIANTS[fn.__name__] = (description, fn)
        return fn
    return register


class Ctx:
    """What the receiver is configured with, and the addresses to use."""

    def __init__(self, args):
        self.key = args.key
        self.mtu = args.mtu
        self.count = args.count
        self.inner_src = args.inner_src
        self.inner_dst = args.inner_dst
        self.inner6_src = args.inner6_src
        self.inner6_dst = args.inner6_dst
        self.spoof_src = args.spoof_src
        self.rng = random.Random(args.seed)

    def some_key(self):
        """A key for frames that must carry one: the configured key, or 1001 when the receiver
        has none (the frame is then unexpected)."""
        return self.key if self.key is not None else 1001

    def key_accept(self):
        """Expectation for a frame carrying `some_key()`."""
        return (ACCEPT, []) if self.key is not None else (FILTERED, [])


# Inner packets. UDP to the discard port of the receiver's own tunnel address: the receiver's
# kernel answers with ICMP port unreachable, nothing is reflected by the tunnel-pod.

def inner4(ctx, i, total_len=None, claimed_len=None):
    from scapy.layers.inet import IP, UDP
    from scapy.packet import Raw
    body = b"magictunnel gre test %d" % i
    if total_len is not None:
        body = body.ljust(total_len - 28, b".")
    pkt = IP(src=ctx.inner_src, dst=ctx.inner_dst, id=i, len=claimed_len) / \
        UDP(sport=40000 + i, dport=9) / Raw(body)
    return bytes(pkt)


def inner6(ctx, i):
    from scapy.layers.inet import UDP
    from scapy.layers.inet6 import IPv6
    from scapy.packet import Raw
    pkt = IPv6(src=ctx.inner6_src, dst=ctx.inner6_dst) / UDP(sport=40000 + i, dport=9) / \
        Raw(b"magictunnel gre test %d" % i)
    return bytes(pkt)


# Accepted variants.

@variant("no key, no checksum, no sequence")
def plain(ctx):
    frames = [gre(inner4(ctx, i)) for i in range(ctx.count)]
    if ctx.key is None:
        return Batch(frames, ACCEPT)
    return Batch(frames, FILTERED)  # the receiver expects a key


@variant("K bit with the receiver's key (1001 when it has none: then filtered)")
def key(ctx):
    expect, reasons = ctx.key_accept()
    return Batch([gre(inner4(ctx, i), key=ctx.some_key()) for i in range(ctx.count)],
                 expect, reasons)


@variant("key and sequence number (S bit), sequence 1, 2, 3, ...")
def key_seq(ctx):
    frames = [gre(inner4(ctx, i), key=ctx.key, seq=i + 1) for i in range(ctx.count)]
    return Batch(frames, ACCEPT)


@variant("C bit with a correct checksum (and the key when configured)")
def checksum(ctx):
    frames = [gre(inner4(ctx, i), key=ctx.key, checksum=True) for i in range(ctx.count)]
    return Batch(frames, ACCEPT)


@variant("checksum, key and sequence number together")
def checksum_key_seq(ctx):
    frames = [gre(inner4(ctx, i), key=ctx.key, seq=1000 + i, checksum=True)
              for i in range(ctx.count)]
    return Batch(frames, ACCEPT)


@variant("reserved bits 6-12 set: ignored on receipt (RFC 2784 §2.3)")
def reserved_6_12(ctx):
    frames = [gre(inner4(ctx, i), key=ctx.key, extra_flags=RESERVED_6_12)
              for i in range(ctx.count)]
    return Batch(frames, ACCEPT)


@variant("inner IPv6 (protocol type 0x86DD)")
def ipv6(ctx):
    frames = [gre(inner6(ctx, i), proto=PROTO_IPV6, key=ctx.key) for i in range(ctx.count)]
    return Batch(frames, ACCEPT)


# Dropped variants.

@variant("flags announce checksum, key and sequence (16 bytes) but the frame has 6")
def truncated_header(ctx):
    frames = [gre(inner4(ctx, i), key=ctx.some_key(), seq=i, checksum=True)[:6]
              for i in range(ctx.count)]
    if ctx.key is None:
        return Batch(frames, FILTERED)  # the K bit: a keyed frame, not for a keyless receiver
    return Batch(frames, DROP, ["truncated"])


@variant("2 bytes: shorter than the 4-byte base header")
def truncated_base(ctx):
    return Batch([struct.pack("!H", FLAG_KEY if ctx.key is not None else 0)] * ctx.count,
                 DROP, ["truncated"])


@variant("valid header, no inner packet at all")
def empty_payload(ctx):
    return Batch([gre(b"", key=ctx.key) for _ in range(ctx.count)],
                 DROP, ["truncated", "malformed_inner"])


@variant("C bit with a wrong checksum")
def bad_checksum(ctx):
    frames = [gre(inner4(ctx, i), key=ctx.key, checksum=True, corrupt_checksum=True)
              for i in range(ctx.count)]
    return Batch(frames, DROP, ["bad_checksum"])


@variant("version 1 (PPTP enhanced GRE)")
def version1(ctx):
    frames = [gre(inner4(ctx, i), key=ctx.key, version=1) for i in range(ctx.count)]
    return Batch(frames, DROP, ["bad_version"])


@variant("routing-present bit (bit 1) set")
def routing_bit(ctx):
    frames = [gre(inner4(ctx, i), key=ctx.key, extra_flags=FLAG_ROUTING)
              for i in range(ctx.count)]
    return Batch(frames, DROP, ["reserved_bits"])


@variant("reserved bits 4-5 set (strict source route / recursion control of RFC 1701)")
def reserved_4_5(ctx):
    frames = [gre(inner4(ctx, i), key=ctx.key, extra_flags=RESERVED_4_5)
              for i in range(ctx.count)]
    return Batch(frames, DROP, ["reserved_bits"])


@variant("a key other than the receiver's")
def wrong_key(ctx):
    other = (ctx.some_key() + 1) & 0xFFFFFFFF
    frames = [gre(inner4(ctx, i), key=other) for i in range(ctx.count)]
    return Batch(frames, FILTERED)


@variant("protocol type 0x88BE (ERSPAN)")
def unknown_protocol(ctx):
    frames = [gre(inner4(ctx, i), proto=PROTO_UNKNOWN, key=ctx.key) for i in range(ctx.count)]
    return Batch(frames, DROP, ["unknown_protocol"])


@variant("inner IPv4 total length claims 200 bytes more than the frame holds")
def inner_length_overrun(ctx):
    frames = []
    for i in range(ctx.count):
        real = len(inner4(ctx, i))
        frames.append(gre(inner4(ctx, i, claimed_len=real + 200), key=ctx.key))
    return Batch(frames, DROP, ["truncated", "malformed_inner"])


@variant("inner IPv4 cut after 12 bytes of its 20-byte header")
def inner_short_header(ctx):
    frames = [gre(inner4(ctx, i)[:12], key=ctx.key) for i in range(ctx.count)]
    return Batch(frames, DROP, ["truncated", "malformed_inner"])


@variant("inner IPv4 with header length 3 words (less than the minimum 5)")
def inner_bad_ihl(ctx):
    frames = []
    for i in range(ctx.count):
        pkt = bytearray(inner4(ctx, i))
        pkt[0] = 0x43
        frames.append(gre(bytes(pkt), key=ctx.key))
    return Batch(frames, DROP, ["malformed_inner", "truncated"])


@variant("inner IPv4 packet of MTU + 24 bytes")
def oversized(ctx):
    frames = [gre(inner4(ctx, i, total_len=ctx.mtu + 24), key=ctx.key)
              for i in range(ctx.count)]
    return Batch(frames, DROP, ["oversized"])


@variant("protocol type 0x0800 carrying an IPv6 packet")
def ipv4_type_carrying_ipv6(ctx):
    frames = [gre(inner6(ctx, i), proto=PROTO_IPV4, key=ctx.key) for i in range(ctx.count)]
    return Batch(frames, DROP, ["malformed_inner"])


@variant("protocol type 0x86DD carrying an IPv4 packet")
def ipv6_type_carrying_ipv4(ctx):
    frames = [gre(inner4(ctx, i), proto=PROTO_IPV6, key=ctx.key) for i in range(ctx.count)]
    return Batch(frames, DROP, ["malformed_inner"])


@variant("a valid frame from an address other than the customer endpoint")
def unexpected_source(ctx):
    frames = [gre(inner4(ctx, i), key=ctx.key) for i in range(ctx.count)]
    return Batch(frames, IGNORE, ["unexpected_source"], src=ctx.spoof_src)


# Not part of `all`.

@variant("random garbage: --garbage-count frames, random flags, types and payloads")
def garbage(ctx):
    rng = ctx.rng
    frames = []
    for i in range(ctx.garbage_count):
        kind = i % 3
        if kind == 0:
            # Anything at all, including nothing.
            frame = rng.randbytes(rng.choice([0, 1, 2, 3, 4, 7, 8, 12, 16, rng.randrange(1600)]))
        else:
            # A header that gets past the first checks, with random optional fields and a
            # random or randomly damaged inner packet, so the parser's deeper paths run.
            body = rng.randbytes(rng.randrange(1500))
            if kind == 2:
                body = bytearray(inner4(ctx, i) if rng.random() < 0.5 else inner6(ctx, i))
                for _ in range(rng.randrange(1, 4)):
                    body[rng.randrange(len(body))] = rng.randrange(256)
                body = bytes(body[:rng.randrange(len(body) + 1)])
            frame = gre(body,
                        proto=rng.choice([PROTO_IPV4, PROTO_IPV6, PROTO_UNKNOWN]),
                        key=ctx.key if rng.random() < 0.8 else rng.getrandbits(32),
                        seq=rng.getrandbits(32) if rng.random() < 0.5 else None,
                        checksum=rng.random() < 0.3,
                        corrupt_checksum=rng.random() < 0.3,
                        extra_flags=rng.getrandbits(16) & 0x4FF8 if rng.random() < 0.1 else 0)
        frames.append(frame)
    return Batch(frames, ANY)


EXCLUDED_FROM_ALL = {"garbage"}


def send(args, batch):
    from scapy.all import conf
    from scapy.layers.inet import IP
    from scapy.layers.l2 import Ether, getmacbyip
    from scapy.packet import Raw

    dst_mac = args.dst_mac or getmacbyip(args.dst)
    if dst_mac is None:
        sys.exit(f"cannot resolve the MAC address of {args.dst}; pass --dst-mac")
    src = batch.src or args.src
    template = Ether(dst=dst_mac) / IP(src=src, dst=args.dst, proto=47, ttl=64)
    sock = conf.L2socket(iface=args.iface)
    try:
        for frame in batch.frames:
            sock.send(template / Raw(frame))
    finally:
        sock.close()


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="*", default=["all"],
                        help=f"variant names or 'all' (everything but "
                             f"{', '.join(sorted(EXCLUDED_FROM_ALL))}): "
                             f"{', '.join(VARIANTS)}")
    parser.add_argument("--iface", help="interface to send on (required unless --list)")
    parser.add_argument("--src", default="203.0.113.2", help="outer source: the customer endpoint")
    parser.add_argument("--dst", default="203.0.113.1", help="outer destination: the tunnel-pod")
    parser.add_argument("--dst-mac", help="MAC of the receiver's interface (default: ARP)")
    parser.add_argument("--spoof-src", default="203.0.113.3",
                        help="outer source of the unexpected_source variant")
    parser.add_argument("--key", type=int, default=None,
                        help="the GRE key the receiver is configured with (default: none)")
    parser.add_argument("--mtu", type=int, default=1476, help="the receiver's tunnel MTU")
    parser.add_argument("--inner-src", default="10.99.0.1")
    parser.add_argument("--inner-dst", default="10.99.0.0")
    parser.add_argument("--inner6-src", default="fd00:99::1")
    parser.add_argument("--inner6-dst", default="fd00:99::")
    parser.add_argument("--count", type=int, default=3, help="frames per variant")
    parser.add_argument("--garbage-count", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=2784)
    parser.add_argument("--list", action="store_true",
                        help="print the variants and their expectations; send nothing")
    args = parser.parse_args()

    names = []
    for name in args.variants:
        if name == "all":
            names += [n for n in VARIANTS if n not in EXCLUDED_FROM_ALL]
        elif name in VARIANTS:
            names.append(name)
        else:
            parser.error(f"unknown variant {name!r}; known: all, {', '.join(VARIANTS)}")
    if not args.list and not args.iface:
        parser.error("--iface is required to send")

    ctx = Ctx(args)
    ctx.garbage_count = args.garbage_count
    results = []
    for name in names:
        description, build = VARIANTS[name]
        if args.list:
            batch = build_for_listing(ctx, build)
        else:
            batch = build(ctx)
            send(args, batch)
        results.append({
            "variant": name,
            "description": description,
            "frames": len(batch.frames),
            "src": batch.src or args.src,
            "expect": batch.expect,
            "reasons": batch.reasons,
        })
    json.dump({"sent": not args.list, "key": args.key, "mtu": args.mtu, "results": results},
              sys.stdout, indent=1)
    print()


def build_for_listing(ctx, build):
    saved = ctx.garbage_count
    ctx.garbage_count = 1 if build is garbage else saved
    try:
        batch = build(ctx)
    finally:
        ctx.garbage_count = saved
    if build is garbage:
        batch.frames = [None] * saved
    return batch


if __name__ == "__main__":
    main()
