#!/usr/bin/python3
"""Craft hostile IKEv2 datagrams (RFC 7296) and send them to a tunnel-pod's IKE responder.

Used by tests/netns_ike_hostile.rs. Plain sockets, no scapy: every datagram is built here
byte by byte, so the script is the single source of truth for what each variant sends and what
the responder must do about it. The Rust test only compares metric deltas and replies with what
this script prints.

Run it inside the sending network namespace (A):

    ip netns exec A /usr/bin/python3 ike_frames.py --dst 203.0.113.2 variant truncated_header@500
    ip netns exec A /usr/bin/python3 ike_frames.py --list
    ip netns exec A /usr/bin/python3 ike_frames.py --dst 203.0.113.2 flood --count 2000
    ip netns exec A /usr/bin/python3 ike_frames.py --dst 203.0.113.2 random --count 10000

`variant NAME@PORT` prints one JSON object:
    {"variant": "...", "port": 500, "description": "...", "sent": 1,
     "expect": {"ike_drops": {"malformed": 1}, "tunnel_drops": {}, "ike_failures": {}},
     "reply": "none" | "any" | {"notify": 5, "spi_i": "hex", "spi_r": "hex" | null,
                                "message_id": 0, "exchange": 34, "data": "hex" | null},
     "replies": [{"marker": true, "spi_i": "hex", "spi_r": "hex", "version": 32, "exchange": 34,
                  "flags": 32, "message_id": 0, "length_ok": true,
                  "payloads": [41], "notifies": [[5, "hex"]]}],
     "error": null | "what went wrong before the hostile part"}

expect: the exact increase of each named series (magictunnel_ike_drops_total{reason},
magictunnel_tunnel_drops_total{reason}, magictunnel_ike_failures_total{notify}); no other IKE
drop reason may move. reply: "none" means the responder must stay silent (a datagram it cannot
attribute to anything gets no answer, RFC 7296 §2.21), "any" leaves it open (an unknown SPI MAY
be answered with INVALID_IKE_SPI, §2.21.4), an object names the one answer it must send.
"""

import argparse
import json
import os
import random
import select
import socket
import struct
import sys
import time

# RFC 7296 §3.1 header fields and IANA "IKEv2 Parameters".
IKE_SA_INIT, IKE_AUTH, CREATE_CHILD_SA, INFORMATIONAL = 34, 35, 36, 37
FLAG_I, FLAG_V, FLAG_R = 0x08, 0x10, 0x20
PT_NONE, PT_SA, PT_KE, PT_IDI, PT_NONCE, PT_NOTIFY, PT_SK = 0, 33, 34, 35, 40, 41, 46
PT_UNKNOWN = 200  # unassigned (§3.2: a critical one must be refused)
ENCR, PRF, INTEG, DH = 1, 2, 3, 4
ENCR_3DES, ENCR_AES_GCM_16 = 3, 20
PRF_HMAC_SHA2_256, PRF_HMAC_SHA2_384 = 5, 6
AUTH_HMAC_SHA2_256_128 = 12
MODP_2048 = 14
KEY_LENGTH_ATTR = 0x800E  # TV format (AF bit) | Key Length (14)
N_UNSUPPORTED_CRITICAL_PAYLOAD = 1
N_INVALID_MAJOR_VERSION = 5
N_NO_PROPOSAL_CHOSEN = 14
N_COOKIE = 16390
MODP_2048_LEN = 256
NON_ESP_MARKER = b"\0\0\0\0"


def header(spi_i, spi_r, next_payload, exchange, flags, message_id, length, version=0x20):
    return struct.pack("!QQBBBBII", spi_i, spi_r, next_payload, version, exchange, flags,
                       message_id, length)


def message(spi_i, spi_r, exchange, flags, message_id, payloads, version=0x20, length=None):
    """payloads: [(type, body, critical)] chained in order (§3.2 generic header)."""
    body = b""
    for i, (_, data, critical) in enumerate(payloads):
        nxt = payloads[i + 1][0] if i + 1 < len(payloads) else PT_NONE
        body += struct.pack("!BBH", nxt, 0x80 if critical else 0, 4 + len(data)) + data
    first = payloads[0][0] if payloads else PT_NONE
    total = 28 + len(body)
    return header(spi_i, spi_r, first, exchange, flags, message_id,
                  total if length is None else length, version) + body


def transform(kind, tid, last, key_len=None):
    attrs = struct.pack("!HH", KEY_LENGTH_ATTR, key_len) if key_len else b""
    return struct.pack("!BBHBBH", 0 if last else 3, 0, 8 + len(attrs), kind, 0, tid) + attrs


def sa_payload(transforms):
    """One IKE proposal (protocol 1, no SPI) of (type, id, key_len) transforms (§3.3)."""
    ts = b"".join(transform(k, t, i == len(transforms) - 1, kl)
                  for i, (k, t, kl) in enumerate(transforms))
    return struct.pack("!BBHBBBB", 0, 0, 8 + len(ts), 1, 1, 0, len(transforms)) + ts


GOOD_PROPOSAL = [(ENCR, ENCR_AES_GCM_16, 256), (PRF, PRF_HMAC_SHA2_384, None),
                 (DH, MODP_2048, None)]
# 3DES is not offered by tunnel-pod (Refusal `pod_refuses_3des_ike` in netns_ike.rs).
TRIPLE_DES_PROPOSAL = [(ENCR, ENCR_3DES, None), (PRF, PRF_HMAC_SHA2_256, None),
                       (INTEG, AUTH_HMAC_SHA2_256_128, None), (DH, MODP_2048, None)]


def modp_public(rng):
    """A random MODP-2048 value of the right length with 1 < y < p - 1 (the top byte is below
    the prime's 0xff, RFC 3526 §3)."""
    return bytes([rng.randrange(1, 0x80)]) + rng.randbytes(255)


def init_request(spi_i, rng, proposal=GOOD_PROPOSAL, extra=(), spi_r=0, flags=FLAG_I):
    ke = struct.pack("!HH", MODP_2048, 0) + modp_public(rng)
    nonce = rng.randbytes(32)
    payloads = [(PT_SA, sa_payload(proposal), False), (PT_KE, ke, False),
                (PT_NONCE, nonce, False)] + list(extra)
    return message(spi_i, spi_r, IKE_SA_INIT, flags, 0, payloads)


def sk_message(spi_i, spi_r, exchange, flags, message_id, rng, inner_first=PT_IDI, size=80):
    """A message with an SK payload (§3.14) of random bytes: well-formed outside, never
    decryptable."""
    sealed = rng.randbytes(size)
    body = struct.pack("!BBH", inner_first, 0, 4 + len(sealed)) + sealed
    return header(spi_i, spi_r, PT_SK, exchange, flags, message_id, 28 + len(body)) + body


def parse_reply(data, port):
    """The fields of one received datagram (marker stripped on 4500)."""
    r = {"marker": False, "raw_len": len(data)}
    if port == 4500:
        r["marker"] = data[:4] == NON_ESP_MARKER
        data = data[4:] if r["marker"] else data
    if len(data) < 28:
        r["short"] = True
        return r
    spi_i, spi_r, nxt, ver, exch, flags, mid, length = struct.unpack("!QQBBBBII", data[:28])
    r.update(spi_i=f"{spi_i:016x}", spi_r=f"{spi_r:016x}", version=ver, exchange=exch,
             flags=flags, message_id=mid, length_ok=length == len(data), payloads=[],
             notifies=[])
    off = 28
    while nxt != PT_NONE and off + 4 <= len(data):
        this = nxt
        nxt, _, plen = struct.unpack("!BBH", data[off:off + 4])
        if plen < 4 or off + plen > len(data):
            r["bad_chain"] = True
            break
        body = data[off + 4:off + plen]
        r["payloads"].append(this)
        if this == PT_NOTIFY and len(body) >= 4:
            _, spi_size, ntype = struct.unpack("!BBH", body[:4])
            r["notifies"].append([ntype, body[4 + spi_size:].hex()])
        off += plen
    return r


class Peer:
    """A UDP socket in A towards the responder, from an ephemeral port (charon, if any, owns
    500 and 4500)."""

    def __init__(self, src, dst, port):
        self.dst, self.port = dst, port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.sock.bind((src, 0))

    def send(self, ike, raw=False):
        """An IKE message; on 4500 with the non-ESP marker unless `raw`."""
        data = ike if raw or self.port == 500 else NON_ESP_MARKER + ike
        self.sock.sendto(data, (self.dst, self.port))

    def recv_all(self, wait):
        """Every datagram arriving within `wait` seconds, parsed."""
        out, deadline = [], time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            ready, _, _ = select.select([self.sock], [], [], left)
            if ready:
                data, _ = self.sock.recvfrom(65535)
                out.append(parse_reply(data, self.port))

    def handshake(self, rng):
        """A real IKE_SA_INIT exchange: (spi_i, spi_r) of the half-open SA it leaves."""
        spi_i = rng.getrandbits(64) | 1
        self.send(init_request(spi_i, rng))
        for r in self.recv_all(2.0):
            if r.get("spi_i") == f"{spi_i:016x}" and PT_SA in r.get("payloads", []):
                return spi_i, int(r["spi_r"], 16)
        raise RuntimeError("no IKE_SA_INIT response to a valid request")


def expect(ike=None, tunnel=None, failures=None):
    return {"ike_drops": ike or {}, "tunnel_drops": tunnel or {}, "ike_failures": failures or {}}


def want(notify, spi_i, spi_r, message_id, exchange, data=None):
    return {"notify": notify, "spi_i": f"{spi_i:016x}",
            "spi_r": None if spi_r is None else f"{spi_r:016x}",
            "message_id": message_id, "exchange": exchange, "data": data}


# ---- the variants: (name, ports, description, run(peer, rng) -> (sent, expect, reply)) ----

def v_truncated_header(p, rng):
    p.send(header(rng.getrandbits(64), 0, PT_SA, IKE_SA_INIT, FLAG_I, 0, 28)[:20])
    return 1, expect({"malformed": 1}), "none"


def v_length_longer(p, rng):
    m = init_request(rng.getrandbits(64), rng)
    p.send(m[:24] + struct.pack("!I", len(m) + 100) + m[28:])
    return 1, expect({"malformed": 1}), "none"


def v_length_shorter(p, rng):
    m = init_request(rng.getrandbits(64), rng)
    p.send(m[:24] + struct.pack("!I", len(m) - 40) + m[28:])
    return 1, expect({"malformed": 1}), "none"


def v_length_below_header(p, rng):
    m = init_request(rng.getrandbits(64), rng)
    p.send(m[:24] + struct.pack("!I", 20) + m[28:])
    return 1, expect({"malformed": 1}), "none"


def major(version):
    def run(p, rng):
        spi_i, mid = rng.getrandbits(64) | 1, rng.getrandbits(16)
        # A request (no Response bit) of another major version: §1.5 asks for an unencrypted
        # INVALID_MAJOR_VERSION with the SPIs and Message ID copied and our version (2).
        p.send(message(spi_i, 0, IKE_SA_INIT, FLAG_I, mid,
                       [(PT_SA, sa_payload(GOOD_PROPOSAL), False)], version=version))
        return 1, expect({"bad_version": 1}), want(N_INVALID_MAJOR_VERSION, spi_i, 0, mid,
                                                   IKE_SA_INIT)
    return run


def v_major3_response(p, rng):
    # §1.5: a *response* of another version is not answered.
    p.send(message(rng.getrandbits(64) | 1, rng.getrandbits(64) | 1, IKE_SA_INIT, FLAG_R, 0,
                   [(PT_NONCE, b"x" * 16, False)], version=0x30))
    return 1, expect({"bad_version": 1}), "none"


def v_unknown_critical(p, rng):
    spi_i = rng.getrandbits(64) | 1
    p.send(init_request(spi_i, rng, extra=[(PT_UNKNOWN, b"\x01\x02\x03\x04", True)]))
    # §2.5 / §3.10.1: the notification data is the one-octet type of the refused payload.
    return 1, expect({"unsupported_critical": 1}), want(
        N_UNSUPPORTED_CRITICAL_PAYLOAD, spi_i, 0, 0, IKE_SA_INIT, f"{PT_UNKNOWN:02x}")


def v_unknown_noncritical(p, rng):
    # §2.5: an unknown payload without the critical bit is skipped: a normal answer follows.
    # The half-open SA it leaves is not an IKE SA (magictunnel_ike_sas stays).
    spi_i = rng.getrandbits(64) | 1
    p.send(init_request(spi_i, rng, extra=[(PT_UNKNOWN, b"\x01\x02\x03\x04", False)]))
    return 1, expect(), {"notify": None, "spi_i": f"{spi_i:016x}", "spi_r": None,
                         "message_id": 0, "exchange": IKE_SA_INIT, "data": None,
                         "payload": PT_SA}


def v_no_proposal(p, rng):
    spi_i = rng.getrandbits(64) | 1
    p.send(init_request(spi_i, rng, proposal=TRIPLE_DES_PROPOSAL))
    return 1, expect(failures={"NO_PROPOSAL_CHOSEN": 1}), want(
        N_NO_PROPOSAL_CHOSEN, spi_i, None, 0, IKE_SA_INIT)


def v_init_nonzero_spir(p, rng):
    # §3.1: SPIr is zero in the first message of an IKE_SA_INIT.
    p.send(init_request(rng.getrandbits(64) | 1, rng, spi_r=rng.getrandbits(64) | 1))
    return 1, expect({"malformed": 1}), "none"


def v_unknown_spi(p, rng):
    p.send(sk_message(rng.getrandbits(64) | 1, rng.getrandbits(64) | 1, INFORMATIONAL, FLAG_I,
                      0, rng))
    return 1, expect({"unknown_spi": 1}), "any"


def v_unknown_spi_response(p, rng):
    # A response (R set, I clear: it claims we initiated) to a request we never sent.
    p.send(sk_message(rng.getrandbits(64) | 1, rng.getrandbits(64) | 1, INFORMATIONAL, FLAG_R,
                      3, rng))
    return 1, expect({"unknown_spi": 1}), "none"


def v_unrequested_init_response(p, rng):
    p.send(init_request(rng.getrandbits(64) | 1, rng, spi_r=rng.getrandbits(64) | 1,
                        flags=FLAG_R))
    return 1, expect({"unexpected_response": 1}), "none"


def v_out_of_window(p, rng):
    # On a real half-open SA: IKE_AUTH must be Message ID 1 (§2.3); 7 is outside the window.
    spi_i, spi_r = p.handshake(rng)
    p.send(sk_message(spi_i, spi_r, IKE_AUTH, FLAG_I, 7, rng))
    return 2, expect({"out_of_window": 1}), "none"


def v_unrequested_response_on_sa(p, rng):
    # On a real half-open SA we initiated nothing: a response must be dropped (§2.3).
    spi_i, spi_r = p.handshake(rng)
    p.send(sk_message(spi_i, spi_r, IKE_AUTH, FLAG_R | FLAG_I, 1, rng))
    return 2, expect({"unexpected_response": 1}), "none"


def v_oversized(p, rng):
    # 9000 bytes (IP-fragmented on the 1500-byte veth) behind a header that announces them.
    body = rng.randbytes(9000 - 28)
    p.send(header(rng.getrandbits(64) | 1, 0, PT_SA, IKE_SA_INIT, FLAG_I, 0, 9000) + body)
    if p.port == 500:
        return 1, expect({"malformed": 1}), "none"
    # The data path reads 4500 into 4096-byte slots (RFC 7296 §2 asks for 3000 bytes at least):
    # a longer datagram is cut by the kernel and dropped there as oversized.
    return 1, expect(tunnel={"oversized": 1}), "none"


def v_empty(p, rng):
    p.sock.sendto(b"", (p.dst, p.port))
    if p.port == 500:
        return 1, expect({"malformed": 1}), "none"
    return 1, expect(tunnel={"truncated": 1}), "none"


def short(n):
    def run(p, rng):
        p.sock.sendto(bytes([1] * n), (p.dst, p.port))
        return 1, expect(tunnel={"truncated": 1}), "none"
    return run


def v_nat_keepalive(p, rng):
    # RFC 3948 §2.3: one 0xFF byte.
    p.sock.sendto(b"\xff", (p.dst, p.port))
    return 1, expect(tunnel={"nat_keepalive": 1}), "none"


def v_marker_only(p, rng):
    # The non-ESP marker and nothing after it: an empty IKE message.
    p.sock.sendto(NON_ESP_MARKER, (p.dst, p.port))
    return 1, expect({"malformed": 1}), "none"


def v_esp_unknown_spi(p, rng):
    esp = struct.pack("!II", 0x1234_5678, 1) + rng.randbytes(64)
    p.sock.sendto(esp, (p.dst, p.port))
    return 1, expect(tunnel={"unknown_spi": 1}), "none"


def v_unexpected_source(p, rng):
    # From an address of A that is not the customerEndpoint (the test adds 203.0.113.3).
    spi_i = rng.getrandbits(64) | 1
    p.send(init_request(spi_i, rng))
    # It arrives on a lobby socket (no connected socket matches it); no pod of the endpoint
    # claims that source and none is the default tunnel, so the ownership rule drops it (lobby).
    return 1, expect({"no_tunnel": 1}), "none"


BOTH, ONLY_500, ONLY_4500 = (500, 4500), (500,), (4500,)
VARIANTS = [
    ("truncated_header", BOTH, "20 bytes: less than the 28-byte header", v_truncated_header),
    ("length_longer", BOTH, "header Length 100 bytes more than the datagram", v_length_longer),
    ("length_shorter", BOTH, "header Length 40 bytes less than the datagram", v_length_shorter),
    ("length_below_header", BOTH, "header Length 20 (< 28)", v_length_below_header),
    ("major_v1", BOTH, "major version 1 request: INVALID_MAJOR_VERSION (§1.5)", major(0x10)),
    ("major_v3", BOTH, "major version 3 request: INVALID_MAJOR_VERSION (§1.5)", major(0x30)),
    ("major_v3_response", BOTH, "major version 3 response: dropped silently", v_major3_response),
    ("unknown_critical", BOTH, "IKE_SA_INIT with an unknown critical payload (§2.5)",
     v_unknown_critical),
    ("unknown_noncritical", BOTH, "IKE_SA_INIT with an unknown non-critical payload: skipped",
     v_unknown_noncritical),
    ("no_proposal", BOTH, "IKE_SA_INIT offering only 3DES: NO_PROPOSAL_CHOSEN", v_no_proposal),
    ("init_nonzero_spir", BOTH, "IKE_SA_INIT request with a non-zero SPIr", v_init_nonzero_spir),
    ("unknown_spi", BOTH, "INFORMATIONAL request with random SPIs", v_unknown_spi),
    ("unknown_spi_response", BOTH, "INFORMATIONAL response nobody asked for",
     v_unknown_spi_response),
    ("unrequested_init_response", BOTH, "IKE_SA_INIT response nobody asked for",
     v_unrequested_init_response),
    ("out_of_window", BOTH, "IKE_AUTH with Message ID 7 on a half-open SA", v_out_of_window),
    ("unrequested_response_on_sa", BOTH, "a response on a half-open SA",
     v_unrequested_response_on_sa),
    ("oversized", BOTH, "9000 bytes of garbage behind a valid-looking header", v_oversized),
    ("empty", BOTH, "a zero-length datagram", v_empty),
    ("one_byte", ONLY_4500, "1 byte (0x01)", short(1)),
    ("two_bytes", ONLY_4500, "2 bytes", short(2)),
    ("three_bytes", ONLY_4500, "3 bytes", short(3)),
    ("nat_keepalive", ONLY_4500, "a NAT keepalive (0xFF)", v_nat_keepalive),
    ("marker_only", ONLY_4500, "the non-ESP marker alone", v_marker_only),
    ("esp_unknown_spi", ONLY_4500, "an ESP packet with an unknown SPI", v_esp_unknown_spi),
    ("unexpected_source", BOTH, "a valid IKE_SA_INIT from a foreign source address",
     v_unexpected_source),
]


def names():
    return [f"{n}@{port}" for n, ports, _, _ in VARIANTS for port in ports]


def run_variant(args, spec):
    name, _, port = spec.partition("@")
    port = int(port)
    found = [v for v in VARIANTS if v[0] == name and port in v[1]]
    if not found:
        raise SystemExit(f"no variant {spec}; --list shows them")
    _, _, description, fn = found[0]
    rng = random.Random(f"{args.seed}/{spec}")
    peer = Peer(args.src, args.dst, port)
    result = {"variant": name, "port": port, "description": description, "error": None}
    try:
        sent, exp, reply = fn(peer, rng)
    except RuntimeError as e:
        result.update(sent=0, expect=expect(), reply="any", replies=[], error=str(e))
        return result
    result.update(sent=sent, expect=exp, reply=reply, replies=peer.recv_all(args.wait))
    return result


def flood(args):
    """`count` IKE_SA_INIT requests, distinct SPIi, valid proposal and KE length, paced over
    at most `seconds`; then collects the answers for 2 s and counts them."""
    rng = random.Random(f"{args.seed}/flood")
    peer = Peer(args.src, args.dst, 500)
    start = time.monotonic()
    gap = args.seconds * 0.8 / args.count
    answers = []
    for i in range(args.count):
        if time.monotonic() - start > args.seconds:
            break
        peer.send(init_request(rng.getrandbits(64) | 1, rng))
        answers.extend(peer.recv_all(0))
        pause = start + (i + 1) * gap - time.monotonic()
        if pause > 0:
            answers.extend(peer.recv_all(pause))
    sent, elapsed = i + 1, time.monotonic() - start
    answers.extend(peer.recv_all(2.0))
    count = {"sa": 0, "cookie": 0, "other": 0}
    for a in answers:
        types = [n[0] for n in a.get("notifies", [])]
        if N_COOKIE in types:
            count["cookie"] += 1
        elif PT_SA in a.get("payloads", []):
            count["sa"] += 1
        else:
            count["other"] += 1
    return {"sent": sent, "seconds": round(elapsed, 3), "answers": len(answers), **count}


def random_datagrams(args):
    """`count` seeded random datagrams of mixed lengths to 500 and 4500 (on 4500 a third with
    the non-ESP marker, a third with IKE-looking headers), at most `seconds`."""
    rng = random.Random(f"{args.seed}/random")
    peers = {500: Peer(args.src, args.dst, 500), 4500: Peer(args.src, args.dst, 4500)}
    start, sent, per_port = time.monotonic(), 0, {500: 0, 4500: 0}
    gap = args.seconds * 0.8 / args.count
    for i in range(args.count):
        if time.monotonic() - start > args.seconds:
            break
        port = rng.choice((500, 4500))
        n = rng.choice((0, 1, 3, 4, 8, 27, 28, 29, 64, 200, 500, 1400, rng.randrange(0, 3000)))
        data = rng.randbytes(n)
        kind = rng.randrange(3)
        if kind == 1 and n >= 28:
            # An IKE-looking header: version 2, a real exchange, a consistent Length.
            data = header(rng.getrandbits(64), rng.choice((0, rng.getrandbits(64))),
                          rng.choice((PT_SA, PT_SK, PT_NOTIFY, PT_UNKNOWN, 0)),
                          rng.choice((IKE_SA_INIT, IKE_AUTH, CREATE_CHILD_SA, INFORMATIONAL)),
                          rng.choice((FLAG_I, FLAG_R, 0, FLAG_I | FLAG_R)), rng.getrandbits(3),
                          n) + data[28:]
        if port == 4500 and kind == 2:
            data = NON_ESP_MARKER + data
        peers[port].sock.sendto(data, (args.dst, port))
        sent += 1
        per_port[port] += 1
        pause = start + (i + 1) * gap - time.monotonic()
        if pause > 0 and i % 50 == 0:
            time.sleep(pause)
        for p in peers.values():
            p.recv_all(0)
    return {"sent": sent, "to_500": per_port[500], "to_4500": per_port[4500],
            "seconds": round(time.monotonic() - start, 3)}


def on_sa(args):
    """One message with an undecryptable SK payload on given SPIs (an established SA's, say),
    to 500; the answers within --wait."""
    rng = random.Random(f"{args.seed}/sk/{args.spi_i}/{args.message_id}/{args.flags}")
    peer = Peer(args.src, args.dst, args.port)
    peer.send(sk_message(int(args.spi_i, 16), int(args.spi_r, 16), args.exchange, args.flags,
                         args.message_id, rng))
    return {"sent": 1, "replies": peer.recv_all(args.wait)}


def esp(args):
    """One ESP packet (RFC 4303 §2) to 4500: SPI, sequence number, random bytes."""
    rng = random.Random(f"{args.seed}/esp/{args.spi}/{args.seq}")
    peer = Peer(args.src, args.dst, 4500)
    peer.sock.sendto(struct.pack("!II", int(args.spi, 16), args.seq) + rng.randbytes(96),
                     (args.dst, 4500))
    return {"sent": 1, "replies": peer.recv_all(args.wait)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", default="203.0.113.1")
    ap.add_argument("--dst", default="203.0.113.2")
    ap.add_argument("--seed", default="magictunnel")
    ap.add_argument("--wait", type=float, default=1.0, help="seconds to wait for answers")
    ap.add_argument("--list", action="store_true")
    sub = ap.add_subparsers(dest="cmd")
    v = sub.add_parser("variant")
    v.add_argument("name")
    f = sub.add_parser("flood")
    f.add_argument("--count", type=int, default=2000)
    f.add_argument("--seconds", type=float, default=10.0)
    r = sub.add_parser("random")
    r.add_argument("--count", type=int, default=10000)
    r.add_argument("--seconds", type=float, default=30.0)
    k = sub.add_parser("sk")
    k.add_argument("--spi-i", required=True)
    k.add_argument("--spi-r", required=True)
    k.add_argument("--message-id", type=int, required=True)
    k.add_argument("--exchange", type=int, default=INFORMATIONAL)
    k.add_argument("--flags", type=int, default=FLAG_I)
    k.add_argument("--port", type=int, default=500)
    e = sub.add_parser("esp")
    e.add_argument("--spi", required=True)
    e.add_argument("--seq", type=int, default=1)
    args = ap.parse_args()
    if args.list:
        print(json.dumps(names()))
    elif args.cmd == "variant":
        print(json.dumps(run_variant(args, args.name)))
    elif args.cmd == "flood":
        print(json.dumps(flood(args)))
    elif args.cmd == "sk":
        print(json.dumps(on_sa(args)))
    elif args.cmd == "esp":
        print(json.dumps(esp(args)))
    elif args.cmd == "random":
        print(json.dumps(random_datagrams(args)))
    else:
        ap.print_help()
        sys.exit(2)


if __name__ == "__main__":
    main()
