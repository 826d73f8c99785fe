#!/usr/bin/python3
"""ESP in UDP (RFC 3948) from an implementation independent of tunnel-pod's: scapy's
SecurityAssociation (its ciphers from the `cryptography` package).

Run in namespace A, aimed at a tunnel-pod in namespace B whose static SAs use the same keys:
encrypts `--count` ICMP echo requests (inner 10.99.0.0 -> 10.99.0.1) with A's outbound SA
(B's inbound), sends them from UDP 4500, and decrypts and checks every ESP packet B sends back
with B's outbound SA: each must be the echo reply to one of ours (same id, sequence, data).
This checks both directions of B's crypto for one suite.

    ip netns exec A /usr/bin/python3 esp_scapy.py --iface vethA --src 203.0.113.1 \
        --dst 203.0.113.2 --dst-mac 02:.. --enc AES-CBC-128 --integ HMAC-SHA1-96 \
        --out-spi 4097 --out-key HEX --out-integ-key HEX \
        --in-spi 8194 --in-key HEX --in-integ-key HEX

Prints one JSON object: {"sent": n, "replies": [{"seq": 1, "ok": true}, ...], "errors": [...],
"other": [summaries of other inner packets B sent, decrypted]}.
"""

import argparse
import json
import sys
import time

# Our names (magictunnel-types) to scapy's.
CRYPT = {
    "AES-GCM-16-128": "AES-GCM",
    "AES-GCM-16-256": "AES-GCM",
    "AES-CBC-128": "AES-CBC",
    "AES-CBC-256": "AES-CBC",
    "NULL": "NULL",
}
AUTH = {None: None, "HMAC-SHA1-96": "HMAC-SHA1-96", "HMAC-SHA2-256-128": "SHA2-256-128"}
ICMP_ID = 0x4D54


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iface", required=True)
    p.add_argument("--src", required=True, help="our outer address (A)")
    p.add_argument("--dst", required=True, help="the tunnel-pod's outer address (B)")
    p.add_argument("--dst-mac", required=True)
    p.add_argument("--inner-src", default="10.99.0.0")
    p.add_argument("--inner-dst", default="10.99.0.1")
    p.add_argument("--enc", required=True, choices=sorted(CRYPT))
    p.add_argument("--integ", default=None, choices=[k for k in AUTH if k])
    p.add_argument("--out-spi", type=int, required=True)
    p.add_argument("--out-key", required=True)
    p.add_argument("--out-integ-key", default="")
    p.add_argument("--in-spi", type=int, required=True)
    p.add_argument("--in-key", required=True)
    p.add_argument("--in-integ-key", default="")
    p.add_argument("--count", type=int, default=3)
    p.add_argument("--timeout", type=float, default=4.0)
    args = p.parse_args()

    from scapy.all import AsyncSniffer, conf
    from scapy.layers.inet import ICMP, IP, UDP
    from scapy.layers.ipsec import ESP, SecurityAssociation
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    def sa(spi, key, integ_key, outer_src, outer_dst):
        return SecurityAssociation(
            ESP, spi=spi,
            crypt_algo=CRYPT[args.enc], crypt_key=bytes.fromhex(key),
            auth_algo=AUTH[args.integ],
            auth_key=bytes.fromhex(integ_key) if args.integ else None,
            tunnel_header=IP(src=outer_src, dst=outer_dst),
            nat_t_header=UDP(sport=4500, dport=4500))

    out_sa = sa(args.out_spi, args.out_key, args.out_integ_key, args.src, args.dst)
    in_sa = sa(args.in_spi, args.in_key, args.in_integ_key, args.dst, args.src)

    def from_b(pkt):
        return (pkt.haslayer(UDP) and pkt.haslayer(IP) and pkt[IP].src == args.dst
                and pkt[UDP].sport == 4500 and len(pkt[UDP].payload) > 8)

    sniffer = AsyncSniffer(iface=args.iface, lfilter=from_b, store=True)
    sniffer.start()
    time.sleep(0.5)
    data = {}
    sock = conf.L2socket(iface=args.iface)
    try:
        for i in range(1, args.count + 1):
            data[i] = b"magictunnel esp scapy %d " % i + bytes(range(32))
            inner = IP(src=args.inner_src, dst=args.inner_dst) / \
                ICMP(type=8, id=ICMP_ID, seq=i) / Raw(data[i])
            sealed = out_sa.encrypt(inner, seq_num=i)
            # scapy freezes the UDP length before it appends the ESP payload (8: an empty
            # datagram): let it compute the lengths and checksums again over the whole packet.
            for layer, fields in ((IP, ("len", "chksum")), (UDP, ("len", "chksum"))):
                for f in fields:
                    setattr(sealed[layer], f, None)
            sock.send(Ether(dst=args.dst_mac) / IP(bytes(sealed)))
            time.sleep(0.05)
    finally:
        sock.close()
    deadline = time.time() + args.timeout
    replies, errors, other = {}, [], []
    while time.time() < deadline:
        time.sleep(0.2)
        if len(sniffer.results or []) >= args.count:
            break
    sniffer.stop()
    for pkt in sniffer.results or []:
        ip = pkt[IP]
        if ip[ESP].spi != args.in_spi:
            errors.append(f"ESP with SPI {ip[ESP].spi:#x}, expected {args.in_spi:#x}")
            continue
        try:
            inner = in_sa.decrypt(IP(bytes(ip)))
        except Exception as e:  # integrity failure or garbage: B's crypto disagrees with ours
            errors.append(f"cannot decrypt ESP seq {ip[ESP].seq}: {type(e).__name__}: {e}")
            continue
        if not isinstance(inner, IP) or not inner.haslayer(ICMP):
            # B's kernel talks on its TUN too (IPv6 router solicitations): decrypted, so B's
            # encryption agrees with ours, but not one of our replies.
            other.append(inner.summary())
            continue
        icmp = inner[ICMP]
        ok = (icmp.type == 0 and icmp.id == ICMP_ID and icmp.seq in data
              and bytes(icmp.payload) == data[icmp.seq]
              and inner[IP].src == args.inner_dst and inner[IP].dst == args.inner_src)
        if not ok:
            errors.append(f"unexpected inner packet: {inner.summary()}")
        replies[icmp.seq] = ok
    json.dump({"sent": args.count,
               "replies": [{"seq": s, "ok": ok} for s, ok in sorted(replies.items())],
               "errors": errors, "other": other}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
