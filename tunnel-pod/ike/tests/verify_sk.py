#!/usr/bin/env python3
"""Independent SK payload protection (RFC 7296 §3.14, RFC 5282) with the `cryptography`
package and hmac, for the known answers in src/crypto/sk.rs (tests `python_*`).
Run: python3 tunnel-pod/ike/tests/verify_sk.py   (pip install cryptography)
"""
import hashlib
import hmac

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# A made-up IKE header (28 octets) + SK generic header (4 octets); only their bytes matter.
header = bytes(range(0x20, 0x20 + 28)) + bytes([0x29, 0x00, 0x00, 0x00])
inner = b"inner payloads: IDi, AUTH, SA, TSi, TSr"  # 39 octets

# CBC: AES-256, HMAC-SHA-256-128; IV from the RNG.
ekey = bytes(range(0x00, 0x20))
akey = bytes(range(0x60, 0x80))
iv = bytes(range(0xF0, 0x100))
pad_len = (-(len(inner) + 1)) % 16
plain = inner + bytes(pad_len) + bytes([pad_len])
enc = Cipher(algorithms.AES(ekey), modes.CBC(iv)).encryptor()
ct = enc.update(plain) + enc.finalize()
msg = header + iv + ct
msg += hmac.new(akey, msg, hashlib.sha256).digest()[:16]
print(f"cbc_sealed={msg[len(header):].hex()}")

# GCM: AES-128 key + 4-octet salt; IV = the first (RNG-drawn) base + 0, Pad Length 0.
key = bytes(range(0x30, 0x40))
salt = bytes([0xCA, 0xFE, 0xBA, 0xBE])
iv = bytes([0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08])
ct_tag = AESGCM(key).encrypt(salt + iv, inner + b"\x00", header)
print(f"gcm_sealed={(iv + ct_tag).hex()}")
