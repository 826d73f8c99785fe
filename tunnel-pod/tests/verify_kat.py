#!/usr/bin/env python3
"""Recompute every known-answer vector in tunnel-pod/src/esp/kat.rs.

The Rust file is parsed as written (constants of the form
``pub(crate) const NAME: Type = Type { field: value, ... };`` and slices
``pub(crate) const NAME: &[&Type] = &[&A, &B];``), and each vector's output
is recomputed from its inputs with an implementation independent of ours:

* AES-CBC and AES-GCM: the ``cryptography`` package;
* HMAC-SHA-256 / HMAC-SHA-1: the standard library's ``hmac``/``hashlib``.

The structural fields that no cipher covers are checked too: ESP trailer
layout (RFC 4303 section 2.4 default padding 1, 2, 3, ...), GCM nonce and AAD
construction (RFC 4106 sections 4 and 5), and the IPv4 header checksums and
lengths of the RFC 3602 sample packets.

Usage: python3 tunnel-pod/tests/verify_kat.py [path/to/kat.rs]
Exit status 0 when every vector verifies, 1 otherwise.
"""

import hashlib
import hmac
import re
import sys
from pathlib import Path

try:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
except ImportError:  # pragma: no cover - environment problem, not a KAT failure
    sys.exit("verify_kat.py needs the 'cryptography' package (pip install cryptography)")

DEFAULT = Path(__file__).resolve().parent.parent / "src" / "esp" / "kat.rs"

STRING = r'"(?:[^"\\]|\\.)*"'
CONST_RE = re.compile(
    r"^pub\(crate\) const (\w+): (\w+) = \2 \{\n(.*?)\n\};", re.S | re.M
)
SLICE_RE = re.compile(
    r"^pub\(crate\) const (\w+): &\[&(\w+)\] = &\[(.*?)\];", re.S | re.M
)
FIELD_RE = re.compile(
    r"^\s*(\w+):\s*(Some\(" + STRING + r"\)|" + STRING + r"|None|true|false)\s*,\s*$"
)


def rust_string(lit):
    """Decode a Rust string literal; only line continuations are expected."""
    assert lit[0] == '"' and lit[-1] == '"', lit
    body = re.sub(r"\\\n\s*", "", lit[1:-1])
    if "\\" in body:
        raise ValueError("unexpected escape in %r" % lit)
    return body


def value(raw):
    if raw == "None":
        return None
    if raw in ("true", "false"):
        return raw == "true"
    if raw.startswith("Some("):
        return rust_string(raw[5:-1])
    return rust_string(raw)


def parse(text):
    consts = {}
    for name, ty, body in CONST_RE.findall(text):
        # join continued string literals so that each field sits on one line
        joined = re.sub(r"\\\n\s*", "\\\n", body)
        joined = re.sub(r"\\\n", "", joined)
        fields = {}
        for line in joined.split("\n"):
            if not line.strip():
                continue
            m = FIELD_RE.match(line)
            if not m:
                raise ValueError("%s: cannot parse line %r" % (name, line))
            fields[m.group(1)] = value(m.group(2))
        consts[name] = (ty, fields)
    slices = {}
    for name, ty, body in SLICE_RE.findall(text):
        slices[name] = (ty, re.findall(r"&(\w+)", body))
    return consts, slices


def hx(s, what):
    if s is None:
        return None
    if not re.fullmatch(r"(?:[0-9a-f]{2})*", s):
        raise ValueError("%s is not lowercase hex without separators: %r" % (what, s))
    return bytes.fromhex(s)


def cbc_encrypt(key, iv, pt):
    e = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return e.update(pt) + e.finalize()


def cbc_decrypt(key, iv, ct):
    d = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    return d.update(ct) + d.finalize()


def ipv4_checksum_ok(h):
    if len(h) != 20:
        return False
    total = sum(int.from_bytes(h[i:i + 2], "big") for i in range(0, 20, 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


class Checker:
    def __init__(self):
        self.failures = []
        self.passed = 0

    def check(self, name, cond, what):
        if not cond:
            self.failures.append("%s: %s" % (name, what))
        return cond

    def vector(self, name, checks):
        """checks: list of (condition, description); the vector passes if all do."""
        ok = True
        for cond, what in checks:
            ok &= self.check(name, cond, what)
        if ok:
            self.passed += 1
        return ok


def verify_cbc(c, name, f):
    key, iv = hx(f["key"], "key"), hx(f["iv"], "iv")
    pt, ct = hx(f["plaintext"], "plaintext"), hx(f["ciphertext"], "ciphertext")
    checks = [
        (len(key) in (16, 32), "key length %d" % len(key)),
        (len(iv) == 16, "IV length %d" % len(iv)),
        (len(pt) % 16 == 0 and len(pt) == len(ct), "plaintext/ciphertext lengths"),
        (cbc_encrypt(key, iv, pt) == ct, "AES-CBC(key, iv, plaintext) != ciphertext"),
        (cbc_decrypt(key, iv, ct) == pt, "AES-CBC decrypt(ciphertext) != plaintext"),
    ]
    if f["plaintext_ascii"] is not None:
        checks.append((f["plaintext_ascii"].encode() == pt, "plaintext_ascii != plaintext"))
    return c.vector(name, checks), "AES-%d-CBC, %d blocks" % (len(key) * 8, len(pt) // 16)


def verify_cbc_esp(c, name, f):
    key, iv = hx(f["key"], "key"), hx(f["iv"], "iv")
    spi, seq = hx(f["spi"], "spi"), hx(f["seq"], "seq")
    payload, padding = hx(f["payload"], "payload"), hx(f["padding"], "padding")
    pad_len, nh = hx(f["pad_length"], "pad_length"), hx(f["next_header"], "next_header")
    pt, ct = hx(f["plaintext"], "plaintext"), hx(f["ciphertext"], "ciphertext")
    orig, outer = hx(f["original_ip_header"], "original_ip_header"), hx(f["outer_ip_header"], "outer_ip_header")
    checks = [
        (len(key) == 16, "key length %d" % len(key)),
        (len(iv) == 16 and len(spi) == 4 and len(seq) == 4, "IV/SPI/seq lengths"),
        (len(pad_len) == 1 and len(nh) == 1, "pad length / next header are 1 byte"),
        (pad_len[0] == len(padding), "pad_length != len(padding)"),
        (padding == bytes(range(1, len(padding) + 1)), "padding is not 1, 2, 3, ..."),
        (pt == payload + padding + pad_len + nh, "plaintext != payload || padding || pad_length || next_header"),
        (len(pt) % 16 == 0 and len(ct) == len(pt), "plaintext/ciphertext lengths"),
        (nh[0] == (4 if f["tunnel_mode"] else 1), "next header does not match the mode"),
        (cbc_encrypt(key, iv, pt) == ct, "AES-CBC(key, iv, plaintext) != ciphertext"),
        (cbc_decrypt(key, iv, ct) == pt, "AES-CBC decrypt(ciphertext) != plaintext"),
    ]
    if f["tunnel_mode"]:
        inner = payload[:20]
        checks += [
            (ipv4_checksum_ok(inner), "inner IPv4 header checksum"),
            (int.from_bytes(inner[2:4], "big") == len(payload), "inner IPv4 total length"),
        ]
    if orig is not None:
        checks += [
            (ipv4_checksum_ok(orig), "original IPv4 header checksum"),
            (int.from_bytes(orig[2:4], "big") == 20 + len(payload), "original IPv4 total length"),
            (orig[9] == nh[0], "original IPv4 protocol != next header"),
        ]
    if outer is not None:
        checks += [
            (ipv4_checksum_ok(outer), "post-encryption IPv4 header checksum"),
            (int.from_bytes(outer[2:4], "big") == 20 + 8 + 16 + len(ct), "post-encryption IPv4 total length"),
            (outer[9] == 50, "post-encryption IPv4 protocol is not ESP (50)"),
        ]
    if orig is not None and outer is not None:
        checks.append((orig[12:20] == outer[12:20], "addresses differ between original and post-encryption header"))
    hdrs = sum(x is not None for x in (orig, outer)) + (1 if f["tunnel_mode"] else 0)
    return c.vector(name, checks), "%s, %d-byte payload, %d IPv4 header(s) checked" % (
        "tunnel" if f["tunnel_mode"] else "transport", len(payload), hdrs)


def verify_gcm(c, name, f):
    key, salt, iv = hx(f["key"], "key"), hx(f["salt"], "salt"), hx(f["iv"], "iv")
    spi, seq, aad = hx(f["spi"], "spi"), hx(f["seq"], "seq"), hx(f["aad"], "aad")
    pt, ct_icv = hx(f["plaintext"], "plaintext"), hx(f["ciphertext_icv"], "ciphertext_icv")
    checks = [
        (len(key) in (16, 32), "key length %d" % len(key)),
        (len(salt) == 4, "salt length %d" % len(salt)),
        (len(iv) == 8, "IV length %d" % len(iv)),
        (len(spi) == 4, "SPI length %d" % len(spi)),
        (len(seq) == (8 if f["esn"] else 4), "seq length does not match esn flag"),
        (aad == spi + seq, "AAD != SPI || seq"),
        (len(ct_icv) == len(pt) + 16, "ciphertext_icv is not plaintext length + 16"),
    ]
    computed = AESGCM(key).encrypt(salt + iv, pt, aad)
    checks.append((computed == ct_icv, "AES-GCM(key, salt||iv, pt, aad) != ciphertext_icv (got %s)" % computed.hex()))
    try:
        back = AESGCM(key).decrypt(salt + iv, ct_icv, aad)
    except Exception:  # InvalidTag
        back = None
    checks.append((back == pt, "AES-GCM decrypt/verify failed"))
    return c.vector(name, checks), "AES-%d-GCM, %s, %d-byte plaintext" % (
        len(key) * 8, "ESN" if f["esn"] else "32-bit SN", len(pt))


def verify_hmac(c, name, f, digest, trunc_len):
    key, data = hx(f["key"], "key"), hx(f["data"], "data")
    mac, trunc = hx(f["mac"], "mac"), hx(f["mac_truncated"], "mac_truncated")
    computed = hmac.new(key, data, digest).digest()
    checks = [
        (computed == mac, "HMAC(key, data) != mac (got %s)" % computed.hex()),
        (len(trunc) == trunc_len, "truncated length %d != %d" % (len(trunc), trunc_len)),
        (trunc == computed[:trunc_len], "mac_truncated is not the leftmost %d bytes" % trunc_len),
    ]
    if f["data_ascii"] is not None:
        checks.append((f["data_ascii"].encode() == data, "data_ascii != data"))
    return c.vector(name, checks), "%d-byte key, %d-byte data, truncation %s" % (
        len(key), len(data), "from source" if f["truncated_in_source"] else "derived")


def main():
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    consts, slices = parse(path.read_text())

    c = Checker()
    expected_types = {"CbcVector", "CbcEspVector", "GcmEspVector", "HmacVector"}
    vectors = {n: v for n, v in consts.items() if v[0] in expected_types}
    unknown = {n: v[0] for n, v in consts.items() if v[0] not in expected_types}
    if unknown:
        c.failures.append("constants of unexpected type: %r" % unknown)

    # every vector is listed in exactly one slice, and every slice entry exists
    listed = {}
    for sname, (ty, members) in slices.items():
        for m in members:
            listed.setdefault(m, []).append(sname)
            if m not in vectors or vectors[m][0] != ty:
                c.failures.append("slice %s lists %s, not a %s constant" % (sname, m, ty))
    for n in vectors:
        if len(listed.get(n, [])) != 1:
            c.failures.append("%s is listed in %d slices" % (n, len(listed.get(n, []))))

    digest_for = {"HMAC_SHA256_128": (hashlib.sha256, 16), "HMAC_SHA1_96": (hashlib.sha1, 12)}
    total = 0
    for sname, (ty, members) in slices.items():
        print("%s (%d vectors)" % (sname, len(members)))
        for m in members:
            if m not in vectors:
                continue
            total += 1
            f = vectors[m][1]
            if ty == "CbcVector":
                ok, note = verify_cbc(c, m, f)
            elif ty == "CbcEspVector":
                ok, note = verify_cbc_esp(c, m, f)
            elif ty == "GcmEspVector":
                ok, note = verify_gcm(c, m, f)
            else:
                if sname not in digest_for:
                    c.failures.append("no digest known for slice %s" % sname)
                    continue
                ok, note = verify_hmac(c, m, f, *digest_for[sname])
            print("  %-4s %-34s %s" % ("ok" if ok else "FAIL", m, note))

    print()
    print("%d passed, %d failed" % (c.passed, total - c.passed))
    for msg in c.failures:
        print("FAILURE: " + msg)
    return 0 if not c.failures and c.passed == total and total > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
