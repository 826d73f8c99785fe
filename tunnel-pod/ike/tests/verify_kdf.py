#!/usr/bin/env python3
"""Independent IKEv2 key schedule (RFC 7296 §2.13-2.18) with Python's hmac/hashlib, for the
known answers in src/crypto/keys.rs (tests `python_*`). Prints name=hex lines; the Rust
tests hold the same numbers. Run: python3 tunnel-pod/ike/tests/verify_kdf.py
"""
import hashlib
import hmac

H = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}


def prf(alg, key, data):
    return hmac.new(key, data, H[alg]).digest()


def prf_plus(alg, key, seed, n):
    out, t, i = b"", b"", 1
    while len(out) < n:
        t = prf(alg, key, t + seed + bytes([i]))
        out += t
        i += 1
    return out[:n]


def split(stream, lens):
    out, pos = [], 0
    for n in lens:
        out.append(stream[pos : pos + n])
        pos += n
    assert pos == len(stream)
    return out


ni = bytes(range(0x10, 0x30))
nr = bytes(range(0x40, 0x60))
gir = bytes((i * 7 + 3) & 0xFF for i in range(48))
spi_i = (0x0102030405060708).to_bytes(8, "big")
spi_r = (0x1112131415161718).to_bytes(8, "big")
names = ["sk_d", "sk_ai", "sk_ar", "sk_ei", "sk_er", "sk_pi", "sk_pr"]

# Suite A: AES-GCM-16-256 (keymat 36), no integrity, PRF-HMAC-SHA-256.
# Suite B: AES-CBC-256 (32), HMAC-SHA-256-128 (key 32), PRF-HMAC-SHA-384.
keys = {}
for tag, alg, plen, alen, elen in (("a", "sha256", 32, 0, 36), ("b", "sha384", 48, 32, 32)):
    skeyseed = prf(alg, ni + nr, gir)
    print(f"{tag}_skeyseed={skeyseed.hex()}")
    lens = [plen, alen, alen, elen, elen, plen, plen]
    ks = dict(zip(names, split(prf_plus(alg, skeyseed, ni + nr + spi_i + spi_r, sum(lens)), lens)))
    keys[tag] = ks
    for n in names:
        print(f"{tag}_{n}={ks[n].hex()}")

# IKE SA rekey (§2.18) from suite A's SK_d with its PRF.
gir2 = bytes(range(0x80, 0x80 + 48))
ni2 = bytes(range(0xA0, 0xB0))
nr2 = bytes(range(0xC0, 0xD0))
print(f"rekey_skeyseed={prf('sha256', keys['a']['sk_d'], gir2 + ni2 + nr2).hex()}")

# Child SA KEYMAT (§2.17) from suite A's SK_d: GCM-256 (36 + 0) without PFS, CBC-128 with
# HMAC-SHA-256 (16 + 32) with PFS.
km = prf_plus("sha256", keys["a"]["sk_d"], ni2 + nr2, 2 * 36)
print(f"child_gcm={km.hex()}")
km = prf_plus("sha256", keys["a"]["sk_d"], gir2 + ni2 + nr2, 2 * (16 + 32))
print(f"child_cbc_pfs={km.hex()}")

# PSK AUTH (§2.15) with suite B's PRF and SK_pi.
psk = b"correct horse battery staple"
real_message = bytes(i & 0xFF for i in range(300))
id_body = bytes([2, 0, 0, 0]) + b"vpn.example.test"
pad = b"Key Pad for IKEv2"
assert len(pad) == 17
auth = prf("sha384", prf("sha384", psk, pad), real_message + nr + prf("sha384", keys["b"]["sk_pi"], id_body))
print(f"psk_auth={auth.hex()}")
