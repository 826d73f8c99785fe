#!/usr/bin/python3
"""Recomputes the inner IPv4/IPv6 and TCP checksums of tunnel traffic captured on the wire,
independently of tunnel-pod (scapy's checksum routines; scapy's SecurityAssociation, with the
`cryptography` package's ciphers, to open ESP).

    offload_check.py gre PCAP [--max N]
    offload_check.py esp PCAP --src 203.0.113.1 --dst 203.0.113.2 --spi 4097 \
        --enc AES-GCM-16-256 --key HEX [--integ HMAC-SHA2-256-128 --integ-key HEX] [--max N]

`gre`: every GRE frame (either direction) of the classic pcap; `esp`: the ESP-in-UDP packets
from --src to --dst with --spi, decrypted with that SA. At most --max inner TCP segments are
checked. Prints one JSON object:
{"frames": …, "inner_v4": …, "inner_v6": …, "tcp": …, "tcp_payload": …, "bad": n,
 "bad_examples": [...], "undecryptable": n, "errors": [...], "max_frame": …}
"""

import argparse
import json
import struct
import sys

# Our suite names to scapy's, as the ESP interop script maps them.
from esp_scapy import AUTH, CRYPT  # noqa: E402  (same directory)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["gre", "esp"])
    p.add_argument("pcap")
    p.add_argument("--max", type=int, default=5000)
    p.add_argument("--src")
    p.add_argument("--dst")
    p.add_argument("--spi", type=int)
    p.add_argument("--enc", choices=sorted(CRYPT))
    p.add_argument("--key", default="")
    p.add_argument("--integ", default=None, choices=[k for k in AUTH if k])
    p.add_argument("--integ-key", default="")
    args = p.parse_args()

    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import in6_chksum
    from scapy.layers.inet import in4_chksum
    from scapy.layers.inet6 import IPv6
    from scapy.utils import PcapReader, checksum

    sa = None
    if args.mode == "esp":
        from scapy.layers.ipsec import ESP, SecurityAssociation
        sa = SecurityAssociation(
            ESP, spi=args.spi,
            crypt_algo=CRYPT[args.enc], crypt_key=bytes.fromhex(args.key),
            auth_algo=AUTH[args.integ],
            auth_key=bytes.fromhex(args.integ_key) if args.integ else None,
            tunnel_header=IP(src=args.src, dst=args.dst),
            nat_t_header=UDP(sport=4500, dport=4500))

    out = {"frames": 0, "inner_v4": 0, "inner_v6": 0, "tcp": 0, "tcp_payload": 0,
           "bad": 0, "bad_examples": [], "undecryptable": 0, "errors": [], "max_frame": 0}

    def bad(what):
        out["bad"] += 1
        if len(out["bad_examples"]) < 10:
            out["bad_examples"].append(what)

    def check_inner(b):
        """b: the inner IP packet's bytes, as the tunnel carried them."""
        version = b[0] >> 4
        if version == 4:
            out["inner_v4"] += 1
            ihl = (b[0] & 0x0F) * 4
            total = struct.unpack("!H", b[2:4])[0]
            if checksum(b[:ihl]) != 0:
                bad(f"IPv4 header checksum {b[10:12].hex()} wrong (id {b[4:6].hex()})")
            if b[9] != 6:
                return
            seg = bytearray(b[ihl:total])
            ip = IP(bytes(b[:total]))
            ip_for_sum = ip
            nh = 6
        elif version == 6:
            out["inner_v6"] += 1
            plen = struct.unpack("!H", b[4:6])[0]
            if b[6] != 6:
                return
            seg = bytearray(b[40:40 + plen])
            ip_for_sum = IPv6(bytes(b[:40 + plen]))
            nh = 6
        else:
            bad(f"inner IP version {version}")
            return
        if len(seg) < 20:
            bad(f"TCP segment of {len(seg)} bytes")
            return
        out["tcp"] += 1
        data_offset = (seg[12] >> 4) * 4
        if len(seg) > data_offset:
            out["tcp_payload"] += 1
        carried = struct.unpack("!H", seg[16:18])[0]
        seg[16:18] = b"\0\0"
        if version == 4:
            want = in4_chksum(nh, ip_for_sum, bytes(seg))
        else:
            want = in6_chksum(nh, ip_for_sum, bytes(seg))
        # 0 and 0xffff are the same sum in ones' complement; TCP sends 0xffff for 0 only by
        # convention, so either carried value is right when the sum folds to 0.
        if carried != want and not (want in (0, 0xFFFF) and carried in (0, 0xFFFF)):
            seq = struct.unpack("!I", bytes(seg[4:8]))[0]
            bad(f"TCP checksum {carried:#06x}, recomputed {want:#06x} (IPv{version}, seq {seq}, "
                f"{len(seg)} bytes)")

    for frame in PcapReader(args.pcap):
        if out["tcp"] >= args.max:
            break
        raw = bytes(frame)
        out["max_frame"] = max(out["max_frame"], len(raw))
        if len(raw) < 34 or raw[12:14] != b"\x08\x00":
            continue
        outer = raw[14:]
        ihl = (outer[0] & 0x0F) * 4
        proto = outer[9]
        if args.mode == "gre":
            if proto != 47:
                continue
            out["frames"] += 1
            gre = outer[ihl:]
            flags, ptype = struct.unpack("!HH", gre[:4])
            hlen = 4 + 4 * bool(flags & 0x8000) + 4 * bool(flags & 0x2000) + \
                4 * bool(flags & 0x1000)
            if ptype not in (0x0800, 0x86DD):
                continue
            check_inner(gre[hlen:])
        else:
            if proto != 17:
                continue
            src = ".".join(str(x) for x in outer[12:16])
            dst = ".".join(str(x) for x in outer[16:20])
            udp = outer[ihl:]
            payload = udp[8:]
            # Keepalives (one 0xff byte) and IKE (non-ESP marker) are not ESP.
            if src != args.src or dst != args.dst or len(payload) < 16 or payload[:4] == b"\0\0\0\0":
                continue
            if struct.unpack("!I", payload[:4])[0] != args.spi:
                continue
            out["frames"] += 1
            total = struct.unpack("!H", outer[2:4])[0]
            try:
                inner = sa.decrypt(IP(bytes(outer[:total])))
            except Exception as e:  # ICV or padding: the tunnel and scapy disagree
                out["undecryptable"] += 1
                if len(out["errors"]) < 10:
                    out["errors"].append(f"{type(e).__name__}: {e}")
                continue
            check_inner(bytes(inner))
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
