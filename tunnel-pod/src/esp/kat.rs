//! Known-answer test vectors for the ESP engine (RFC 4303): AES-CBC (RFC 3602),
//! AES-GCM-16 (RFC 4106), HMAC-SHA-256-128 (RFC 4868) and HMAC-SHA1-96
//! (RFC 2404). Plain data only: every byte string is lowercase hex without
//! separators, as `&'static str`; decode it in the test that uses it.
//!
//! # Provenance
//!
//! Every value was transcribed from the document, section and test case named
//! in its doc comment, and every vector was recomputed from its inputs with an
//! independent implementation (Python `cryptography` for AES-CBC / AES-GCM,
//! `hashlib`/`hmac` for HMAC) by `tunnel-pod/tests/verify_kat.py`, which
//! parses this file as written. Run it after any edit:
//!
//! ```text
//! python3 tunnel-pod/tests/verify_kat.py
//! ```
//!
//! The primary texts were read through copies of them quoted in public
//! repositories (the RFC Editor and IETF pages themselves could not be
//! opened whole from this workspace); each value was compared across at least
//! two independent copies where more than one exists, and the cryptographic
//! recomputation above closes the loop: a byte transcribed wrongly in a key,
//! IV, nonce, AAD, plaintext, ciphertext, ICV or digest makes the check fail.
//! The IPv4 headers of the RFC 3602 packets, which no cipher covers, are
//! checked by their IPv4 header checksum and lengths instead. One field class
//! has no such check: the SPI and sequence number of the RFC 3602 packets
//! (cases 5-8 have no ICV, so nothing binds them); they rest on the
//! transcription alone, compared across the copies available.
//!
//! # NULL encryption (RFC 2410)
//!
//! RFC 2410 publishes no known-answer vectors: ENCR_NULL is the identity
//! transform. None are invented here.

#![allow(dead_code)]

/// A bare AES-CBC known answer: `ciphertext = AES-CBC-Encrypt(key, iv, plaintext)`,
/// no padding (the plaintext is a whole number of blocks).
#[derive(Clone, Copy, Debug)]
pub(crate) struct CbcVector {
    /// Document, section and case number.
    pub(crate) source: &'static str,
    /// The case's own title, verbatim.
    pub(crate) description: &'static str,
    pub(crate) key: &'static str,
    pub(crate) iv: &'static str,
    pub(crate) plaintext: &'static str,
    /// The plaintext as the source prints it, where it prints ASCII text.
    pub(crate) plaintext_ascii: Option<&'static str>,
    pub(crate) ciphertext: &'static str,
}

/// One of the RFC 3602 §4 sample ESP packets (cases 5-8): AES-128-CBC, no
/// integrity algorithm, so the packet ends with the ciphertext (no ICV).
///
/// `plaintext` is the "Pre-encryption Data with padding, pad length and next
/// header" block, i.e. `payload || padding || pad_length || next_header`, and
/// `ciphertext` is the "Encrypted Data" of the "Post-encryption packet with
/// SPI, Sequence number, IV" (the packet is `spi || seq || iv || ciphertext`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct CbcEspVector {
    /// Document, section and case number.
    pub(crate) source: &'static str,
    /// Short description of the case (see the doc comment of each constant
    /// for how closely it follows the RFC's own title).
    pub(crate) description: &'static str,
    /// `true` for tunnel mode (the payload is a whole inner IPv4 packet and
    /// the next header is 4, IP-in-IP), `false` for transport mode.
    pub(crate) tunnel_mode: bool,
    pub(crate) key: &'static str,
    /// 4 bytes, big-endian.
    pub(crate) spi: &'static str,
    /// 4 bytes, big-endian (32-bit sequence number, no ESN).
    pub(crate) seq: &'static str,
    /// 16 bytes, carried in clear after the sequence number.
    pub(crate) iv: &'static str,
    /// IPv4 header of the original (unprotected) packet, where transcribed.
    pub(crate) original_ip_header: Option<&'static str>,
    /// The data that ESP protects ("Data" of the original packet in transport
    /// mode, the whole original packet in tunnel mode).
    pub(crate) payload: &'static str,
    pub(crate) padding: &'static str,
    /// 1 byte.
    pub(crate) pad_length: &'static str,
    /// 1 byte (1 = ICMP, 4 = IPv4).
    pub(crate) next_header: &'static str,
    /// `payload || padding || pad_length || next_header`, the CBC input.
    pub(crate) plaintext: &'static str,
    /// IPv4 header of the post-encryption packet (protocol 50), where
    /// transcribed.
    pub(crate) outer_ip_header: Option<&'static str>,
    /// The CBC output; the ESP packet is `spi || seq || iv || ciphertext`.
    pub(crate) ciphertext: &'static str,
}

/// One AES-GCM-ESP packet of draft-mcgrew-gcm-test-01 §4 (RFC 4106 with a
/// 16-byte ICV). The GCM nonce is `salt || iv` (RFC 4106 §4) and the AAD is
/// `spi || seq` (RFC 4106 §5): 8 bytes with a 32-bit sequence number, 12
/// bytes with an extended (64-bit) sequence number.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GcmEspVector {
    /// Document, section, position of the packet in §4 and page of the draft.
    pub(crate) source: &'static str,
    /// 16 or 32 bytes (the draft's `key` without the salt).
    pub(crate) key: &'static str,
    /// 4 bytes: the last four bytes of the SA's keying material (RFC 4106 §8.1).
    pub(crate) salt: &'static str,
    /// 4 bytes.
    pub(crate) spi: &'static str,
    /// As the draft prints it: 4 bytes (32-bit sequence number) or 8 bytes
    /// (extended sequence number, high half first).
    pub(crate) seq: &'static str,
    /// `true` when `seq` is a 64-bit extended sequence number.
    pub(crate) esn: bool,
    /// 8 bytes, carried in clear in the packet.
    pub(crate) iv: &'static str,
    /// As printed by the draft; equals `spi || seq`.
    pub(crate) aad: &'static str,
    pub(crate) plaintext: &'static str,
    /// The draft's `ctext+tag`: ciphertext followed by the 16-byte ICV.
    pub(crate) ciphertext_icv: &'static str,
}

/// An HMAC known answer with its truncated form.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HmacVector {
    /// Document, section and test case.
    pub(crate) source: &'static str,
    pub(crate) key: &'static str,
    pub(crate) data: &'static str,
    /// The data as the source prints it, where it prints ASCII text.
    pub(crate) data_ascii: Option<&'static str>,
    /// The full HMAC output.
    pub(crate) mac: &'static str,
    /// The leftmost bytes used as the ICV: 16 for HMAC-SHA-256-128, 12 for
    /// HMAC-SHA1-96.
    pub(crate) mac_truncated: &'static str,
    /// `true` when the source prints the truncated value itself; `false`
    /// when it was taken here as the leftmost bytes of `mac`.
    pub(crate) truncated_in_source: bool,
}

// ---------------------------------------------------------------------------
// RFC 3602 "The AES-CBC Cipher Algorithm and Its Use with IPsec",
// Section 4 "Test Vectors", cases #1-#4 (AES-128-CBC, bare CBC).
// ---------------------------------------------------------------------------

/// RFC 3602 §4, Case #1: "Encrypting 16 bytes (1 block) using AES-CBC with 128-bit key".
///
/// The RFC prints the plaintext as the string `"Single block msg"`.
pub(crate) const RFC3602_CASE1: CbcVector = CbcVector {
    source: "RFC 3602 section 4, Case #1",
    description: "Encrypting 16 bytes (1 block) using AES-CBC with 128-bit key",
    key: "06a9214036b8a15b512e03d534120006",
    iv: "3dafba429d9eb430b422da802c9fac41",
    plaintext: "53696e676c6520626c6f636b206d7367",
    plaintext_ascii: Some("Single block msg"),
    ciphertext: "e353779c1079aeb82708942dbe77181a",
};

/// RFC 3602 §4, Case #2: "Encrypting 32 bytes (2 blocks) using AES-CBC with 128-bit key".
pub(crate) const RFC3602_CASE2: CbcVector = CbcVector {
    source: "RFC 3602 section 4, Case #2",
    description: "Encrypting 32 bytes (2 blocks) using AES-CBC with 128-bit key",
    key: "c286696d887c9aa0611bbb3e2025a45a",
    iv: "562e17996d093d28ddb3ba695a2e6f58",
    plaintext: "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
    plaintext_ascii: None,
    ciphertext: "d296cd94c2cccf8a3a863028b5e1dc0a7586602d253cfff91b8266bea6d61ab1",
};

/// RFC 3602 §4, Case #3: "Encrypting 48 bytes (3 blocks) using AES-CBC with 128-bit key".
///
/// The RFC prints the plaintext as the string `"This is a 48-byte message (exactly 3 AES blocks)"`.
pub(crate) const RFC3602_CASE3: CbcVector = CbcVector {
    source: "RFC 3602 section 4, Case #3",
    description: "Encrypting 48 bytes (3 blocks) using AES-CBC with 128-bit key",
    key: "6c3ea0477630ce21a2ce334aa746c2cd",
    iv: "c782dc4c098c66cbd9cd27d825682c81",
    plaintext: "5468697320697320612034382d627974\
        65206d65737361676520286578616374\
        6c7920332041455320626c6f636b7329",
    plaintext_ascii: Some("This is a 48-byte message (exactly 3 AES blocks)"),
    ciphertext: "d0a02b3836451753d493665d33f0e886\
        2dea54cdb293abc7506939276772f8d5\
        021c19216bad525c8579695d83ba2684",
};

/// RFC 3602 §4, Case #4: "Encrypting 64 bytes (4 blocks) using AES-CBC with 128-bit key".
pub(crate) const RFC3602_CASE4: CbcVector = CbcVector {
    source: "RFC 3602 section 4, Case #4",
    description: "Encrypting 64 bytes (4 blocks) using AES-CBC with 128-bit key",
    key: "56e47a38c5598974bc46903dba290349",
    iv: "8ce82eefbea0da3c44699ed7db51b7d9",
    plaintext: "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf\
        b0b1b2b3b4b5b6b7b8b9babbbcbdbebf\
        c0c1c2c3c4c5c6c7c8c9cacbcccdcecf\
        d0d1d2d3d4d5d6d7d8d9dadbdcdddedf",
    plaintext_ascii: None,
    ciphertext: "c30e32ffedc0774e6aff6af0869f71aa\
        0f3af07a9a31a9c684db207eb0ef8e4e\
        35907aa632c3ffdf868bb7b29d3d46ad\
        83ce9f9a102ee99d49a53e87f4c3da55",
};

/// RFC 3602 §4 cases #1-#4, in order.
pub(crate) const RFC3602_CBC: &[&CbcVector] = &[
    &RFC3602_CASE1,
    &RFC3602_CASE2,
    &RFC3602_CASE3,
    &RFC3602_CASE4,
];

// ---------------------------------------------------------------------------
// RFC 3602 Section 4, cases #5-#8: sample ESP packets, AES-128-CBC, no
// authentication. Layout of each case in the RFC: Key, SPI, Source address,
// Destination address, Sequence number, IV; "Original packet" (IP header,
// Data); "Augment data with" (Padding, Pad length, Next header);
// "Pre-encryption Data with padding, pad length and next header";
// "Post-encryption packet with SPI, Sequence number, IV" (IP header,
// SPI/Seq #, IV, Encrypted Data).
// ---------------------------------------------------------------------------

/// RFC 3602 §4, Case #5: "Sample transport-mode ESP packet (ping 192.168.123.100)".
///
/// Source address 192.168.123.3, destination address 192.168.123.100, SPI
/// 4321, sequence number 1. The payload is an ICMP echo request (64 bytes);
/// padding 01..0e, pad length 0x0e, next header 1 (ICMP). Title, original and
/// post-encryption IP headers transcribed from a verbatim copy of the case's
/// text; the IP headers are additionally checked by their IPv4 checksum.
pub(crate) const RFC3602_CASE5: CbcEspVector = CbcEspVector {
    source: "RFC 3602 section 4, Case #5",
    description: "Sample transport-mode ESP packet (ping 192.168.123.100)",
    tunnel_mode: false,
    key: "90d382b410eeba7ad938c46cec1a82bf",
    spi: "00004321",
    seq: "00000001",
    iv: "e96e8c08ab465763fd098d45dd3ff893",
    original_ip_header: Some("4500005408f200004001f9fec0a87b03c0a87b64"),
    payload: "08000ebda70a00008e9c083db95b0700\
        08090a0b0c0d0e0f1011121314151617\
        18191a1b1c1d1e1f2021222324252627\
        28292a2b2c2d2e2f3031323334353637",
    padding: "0102030405060708090a0b0c0d0e",
    pad_length: "0e",
    next_header: "01",
    plaintext: "08000ebda70a00008e9c083db95b0700\
        08090a0b0c0d0e0f1011121314151617\
        18191a1b1c1d1e1f2021222324252627\
        28292a2b2c2d2e2f3031323334353637\
        0102030405060708090a0b0c0d0e0e01",
    outer_ip_header: Some("4500007c08f200004032f9a5c0a87b03c0a87b64"),
    ciphertext: "f663c25d325c18c6a9453e194e120849\
        a4870b66cc6b9965330013b4898dc856\
        a4699e523a55db080b59ec3a8e4b7e52\
        775b07d1db34ed9c538ab50c551b874a\
        a269add047ad2d5913ac19b7cfbad4a6",
};

/// RFC 3602 §4, Case #6: transport-mode ESP packet, same key as case #5.
///
/// SPI 4321, sequence number 8. The payload is a 28-byte ICMP echo request
/// whose data is 0x77 bytes; padding 01 02, pad length 2, next header 1
/// (ICMP). Transcribed from a copy of the RFC's SPI/Seq #, IV, Encrypted Data
/// and payload; the RFC's title line and the IP headers of this case (the
/// original packet's and the post-encryption one) could not be read from any
/// copy available here, so `description` is a paraphrase and both IP header
/// fields are `None`. Padding, pad length and next header are confirmed by
/// decryption (the verification script decrypts the ciphertext).
pub(crate) const RFC3602_CASE6: CbcEspVector = CbcEspVector {
    source: "RFC 3602 section 4, Case #6",
    description: "Sample transport-mode ESP packet (ICMP echo, 28-byte payload)",
    tunnel_mode: false,
    key: "90d382b410eeba7ad938c46cec1a82bf",
    spi: "00004321",
    seq: "00000008",
    iv: "69d08df7d203329db093fc4924e5bd80",
    original_ip_header: None,
    payload: "0800b5e8a80a0500a69c083d0b660e00777777777777777777777777",
    padding: "0102",
    pad_length: "02",
    next_header: "01",
    plaintext: "0800b5e8a80a0500a69c083d0b660e0077777777777777777777777701020201",
    outer_ip_header: None,
    ciphertext: "f51995881ec4e0c4488987ce742e8109689bb379d2d750c0d915dca346a89f75",
};

/// RFC 3602 §4, Case #7: tunnel-mode ESP packet.
///
/// SPI 8765, sequence number 2. The payload is the whole original packet (an
/// 84-byte IPv4 ICMP echo request 192.168.123.3 -> 192.168.123.200); padding
/// 01..0a, pad length 0x0a, next header 4 (IP-in-IP). The post-encryption IP
/// header is transcribed; `description` is a paraphrase of the RFC's title
/// line, which no available copy quotes. `original_ip_header` is `None`
/// because in tunnel mode the original header is the first 20 bytes of
/// `payload`.
pub(crate) const RFC3602_CASE7: CbcEspVector = CbcEspVector {
    source: "RFC 3602 section 4, Case #7",
    description: "Sample tunnel-mode ESP packet (ICMP echo to 192.168.123.200)",
    tunnel_mode: true,
    key: "0123456789abcdef0123456789abcdef",
    spi: "00008765",
    seq: "00000002",
    iv: "f4e765244f6407adf13dc1380f673f37",
    original_ip_header: None,
    payload: "45000054090400004001f988c0a87b03\
        c0a87bc808009f76a90a0100b49c083d\
        02a2040008090a0b0c0d0e0f10111213\
        1415161718191a1b1c1d1e1f20212223\
        2425262728292a2b2c2d2e2f30313233\
        34353637",
    padding: "0102030405060708090a",
    pad_length: "0a",
    next_header: "04",
    plaintext: "45000054090400004001f988c0a87b03\
        c0a87bc808009f76a90a0100b49c083d\
        02a2040008090a0b0c0d0e0f10111213\
        1415161718191a1b1c1d1e1f20212223\
        2425262728292a2b2c2d2e2f30313233\
        343536370102030405060708090a0a04",
    outer_ip_header: Some("4500008c090500004032f91ec0a87b03c0a87bc8"),
    ciphertext: "773b5241a4c449225e4f3ce5ed611b0c\
        237ca96cf74a93013c1b0ea1a0cf70f8\
        e4ecaec78ac53aad7a0f022b859243c6\
        47752e94a859352b8a4d4d2decd136e5\
        c177f132ad3fbfb2201ac9904c74ee0a\
        109e0ca1e4dfe9d5a100b842f1c22f0d",
};

/// RFC 3602 §4, Case #8: tunnel-mode ESP packet, same key as case #7.
///
/// SPI 8765, sequence number 5. The payload is a 68-byte IPv4 ICMP echo
/// request (192.168.123.3 -> 192.168.123.200, data 0xff bytes); padding
/// 01..0a, pad length 0x0a, next header 4 (IP-in-IP). The RFC's title line
/// and its post-encryption IP header could not be read from any copy
/// available here: `description` is a paraphrase and `outer_ip_header` is
/// `None`. The original header is the first 20 bytes of `payload`.
pub(crate) const RFC3602_CASE8: CbcEspVector = CbcEspVector {
    source: "RFC 3602 section 4, Case #8",
    description: "Sample tunnel-mode ESP packet (ICMP echo to 192.168.123.200, 0xff data)",
    tunnel_mode: true,
    key: "0123456789abcdef0123456789abcdef",
    spi: "00008765",
    seq: "00000005",
    iv: "85d47224b5f3dd5d2101d4ea8dffab22",
    original_ip_header: None,
    payload: "45000044090c00004001f990c0a87b03\
        c0a87bc80800d63caa0a0200c69c083d\
        a3de0300ffffffffffffffffffffffff\
        ffffffffffffffffffffffffffffffff\
        ffffffff",
    padding: "0102030405060708090a",
    pad_length: "0a",
    next_header: "04",
    plaintext: "45000044090c00004001f990c0a87b03\
        c0a87bc80800d63caa0a0200c69c083d\
        a3de0300ffffffffffffffffffffffff\
        ffffffffffffffffffffffffffffffff\
        ffffffff0102030405060708090a0a04",
    outer_ip_header: None,
    ciphertext: "15b92683819596a8047232cc00f7048f\
        e45318e11f8a0f62ede3c3fc61203bb5\
        0f980a08c9843fd3a1b06d5c07ff9639\
        b7eb7dfb3512e5de435e7207ed971ef3\
        d2726d9b5ef6affc6d17a0decbb13892",
};

/// RFC 3602 §4 cases #5-#8, in order.
pub(crate) const RFC3602_ESP: &[&CbcEspVector] = &[
    &RFC3602_CASE5,
    &RFC3602_CASE6,
    &RFC3602_CASE7,
    &RFC3602_CASE8,
];

// ---------------------------------------------------------------------------
// NIST SP 800-38A, "Recommendation for Block Cipher Modes of Operation",
// Appendix F.2.5 "CBC-AES256.Encrypt".
// ---------------------------------------------------------------------------

/// NIST SP 800-38A Appendix F.2.5, CBC-AES256.Encrypt: Key, IV and Blocks
/// #1-#4 (Plaintext, Ciphertext), concatenated. The appendix also lists each
/// block's Input Block / Output Block; those are intermediate values and are
/// not reproduced (the Output Block equals the Ciphertext in CBC encryption).
pub(crate) const SP800_38A_F25_CBC_AES256_ENCRYPT: CbcVector = CbcVector {
    source: "NIST SP 800-38A Appendix F.2.5",
    description: "CBC-AES256.Encrypt",
    key: "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
    iv: "000102030405060708090a0b0c0d0e0f",
    plaintext: "6bc1bee22e409f96e93d7e117393172a\
        ae2d8a571e03ac9c9eb76fac45af8e51\
        30c81c46a35ce411e5fbc1191a0a52ef\
        f69f2445df4f9b17ad2b417be66c3710",
    plaintext_ascii: None,
    ciphertext: "f58c4c04d6e5f1ba779eabfb5f7bfbd6\
        9cfc4e967edb808d679f777bc6702c7d\
        39f23369a9d9bacfa530e26304231461\
        b2eb05e2c39be9fcda6c19078c6a9d1b",
};

/// AES-256-CBC vectors.
pub(crate) const AES256_CBC: &[&CbcVector] = &[&SP800_38A_F25_CBC_AES256_ENCRYPT];

// ---------------------------------------------------------------------------
// draft-mcgrew-gcm-test-01, D. McGrew, "Test Cases for the use of
// Galois/Counter Mode (GCM) and Galois Message Authentication Code (GMAC) in
// IPsec ESP", March 2009, Section 4 "Test Cases": every AES-GCM-ESP packet
// with a 128-bit or 256-bit key. The draft does not number its packets; they
// are numbered here by position in Section 4 (1-17), with the page of the
// draft's text on which each starts. Omitted: packet 7 (page 11, 192-bit
// key) and packet 15 (page 18, AES-GMAC-ESP, RFC 4543), which are outside
// this engine's suites.
// ---------------------------------------------------------------------------

/// draft-mcgrew-gcm-test-01 §4, packet 1 (page 6): AES-128-GCM, 64-bit extended sequence number (12-byte AAD).
pub(crate) const GCM_TEST_01_AES128: GcmEspVector = GcmEspVector {
    source: "draft-mcgrew-gcm-test-01 section 4, packet 1 (page 6)",
    key: "4c80cdefbb5d10da906ac73c3613a634",
    salt: "2e443b68",
    spi: "00004321",
    seq: "8765432100000000",
    esn: true,
    iv: "4956ed7e3b244cfe",
    aad: "000043218765432100000000",
    plaintext: "45000048699a000080114db7c0a80102\
        c0a801010a9bf15638d3010000010000\
        00000000045f736970045f7564700373\
        69700963796265726369747902646b00\
        0021000101020201",
    ciphertext_icv: "fecf537e729d5b07dc30df528dd22b76\
        8d1b98736696a6fd348509fa13ceac34\
        cfa2436f14a3f3cf65925bf1f4a13c5d\
        15b21e1884f5ff6247aeabb786b93bce\
        61bc17d768fd9732459018148f6cbe72\
        2fd04796562dfdb4",
};

/// draft-mcgrew-gcm-test-01 §4, packet 2 (page 7): AES-128-GCM, 32-bit sequence number (8-byte AAD).
pub(crate) const GCM_TEST_02_AES128: GcmEspVector = GcmEspVector {
    source: "draft-mcgrew-gcm-test-01 section 4, packet 2 (page 7)",
    key: "feffe9928665731c6d6a8f9467308308",
    salt: "cafebabe",
    spi: "0000a5f8",
    seq: "0000000a",
    esn: false,
    iv: "facedbaddecaf888",
    aad: "0000a5f80000000a",
    plaintext: "4500003e698f000080114dccc0a80102\
        c0a801010a980035002a2343b2d00100\
        00010000000000000373697009637962\
        65726369747902646b00000100010001",
    ciphertext_icv: "deb22cd9b07c72c16e3a65beeb8df304\
        a5a5897d33ae530f1ba76d5d114d2a5c\
        3de81827c10e9a4f51330d0eec416642\
        cfbb85a5b47e48a4ec3b9ba95d918bd1\
        83b70d3aa8bc6ee4c309e9d85a41ad4a",
};

/// draft-mcgrew-gcm-test-01 §4, packet 3 (page 8): AES-256-GCM, 32-bit sequence number (8-byte AAD).
pub(crate) const GCM_TEST_03_AES256: GcmEspVector = GcmEspVector {
    source: "draft-mcgrew-gcm-test-01 section 4, packet 3 (page 8)",
    key: "abbccddef00112233445566778899aababbccddef00112233445566778899aab",
    salt: "11223344",
    spi: "4a2cbfe3",
    seq: "00000002",
    esn: false,
    iv: "0102030405060708",
    aad: "4a2cbfe300000002",
    plaintext: "4500003069a6400080062690c0a80102\
        9389155e0a9e008b2dc57ee000000000\
        7002400020bf0000020405b401010402\
        01020201",
    ciphertext_icv: "ff425c9b724599df7a3bcd510194e00d\
        6a78107f1b0b1cbf06efae9d65a5d763\
        748a637985771d347f0545659f14e99d\
        ef842d8eb335f4eecfdbf831824b4c49\
        15956c96",
};

/// draft-mcgrew-gcm-test-01 §4, packet 4 (page 9): AES-128-GCM, 32-bit sequence number (8-byte AAD).
pub(crate) const GCM_TEST_04_AES128: GcmEspVector = GcmEspVector {
    source: "draft-mcgrew-gcm-test-01 section 4, packet 4 (page 9)",
    key: "00000000000000000000000000000000",
    salt: "00000000",
    spi: "00000000",
    seq: "00000001",
    esn: false,
    iv: "0000000000000000",
    aad: "0000000000000001",
    plaintext: "4500003c99c500008001cb7a40679318\
        010101010800075c0200440061626364\
        65666768696a6b6c6d6e6f7071727374\
        75767761626364656667686901020201",
    ciphertext_icv: "4688daf2f973a392732909c331d56d60\
        f694abaa414b5e7ff5fdcdfff5e9a284\
        456476492719ffb64de7d9dca1e1d894\
        bc3bd57873ed4d181d19d4d5c8c18af3\
        f821d496eeb096e98ad2b69e4799c71d",
};

/// draft-mcgrew-gcm-test-01 §4, packet 5 (page 10): AES-128-GCM, 64-bit extended sequence number (12-byte AAD).
pub(crate) const GCM_TEST_05_AES128: GcmEspVector = GcmEspVector {
    source: "draft-mcgrew-gcm-test-01 section 4, packet 5 (page 10)",
    key: "3de09874b388e6491988d0c3607eae1f",
    salt: "57690e43",
    spi: "42f67e3f",
    seq: "1010101010101010",
    esn: true,
    iv: "4e280000a2fca1a3",
    aad: "42f67e3f1010101010101010",
    plaintext: "4500003c99c300008001cb7c40679318\
        010101010800085c0200430061626364\
        65666768696a6b6c6d6e6f7071727374\
        75767761626364656667686901020201",
    ciphertext_icv: "fba2caa4853cf9f0f22cb10d86dd83b0\
        fec75691cf1a04b00d1138ec9c357917\
        65acbd8701ad79845bf9fe3fba487bc9\
        1755e6662b4c8d0d1f5e22739530320a\
        e0d731cc978ecafaeae88f00e80d6e48",
};

/// draft-mcgrew-gcm-test-01 §4, packet 6 (page 11): AES-128-GCM, 64-bit extended sequence number (12-byte AAD).
pub(crate) const GCM_TEST_06_AES128: GcmEspVector = GcmEspVector {
    source: "draft-mcgrew-gcm-test-01 section 4, packet 6 (page 11)",
    key: "3de09874b388e6491988d0c3607eae1f",
    salt: "57690e43",
    spi: "42f67e3f",
    seq: "1010101010101010",
    esn: true,
    iv: "4e280000a2fca1a3",
    aad: "42f67e3f1010101010101010",
    plaintext: "4500001c42a200008001441f406793b6e00000020a00f5ff01020201",
    ciphertext_icv: "fba2ca845e5df9f0f22c3e6e86dd831e\
        1fc65792cd1af9130e1379ed369f071f\
        35e034be95f112e4e7d05d35",
};

/// draft-mcgrew-gcm-test-01 §4, packet 8 (page 12): AES-128-GCM, 64-bit extended sequence number (12-byte AAD).
pub(crate) const GCM_TEST_08_AES128: GcmEspVector = GcmEspVector {
    source: "draft-mcgrew-gcm-test-01 section 4, packet 8 (page 12)",
    key: "abbccddef00112233445566778899aab",
    salt: "decaf888",
    spi: "00000100",
    seq: "0000000000000001",
    esn: true,
    iv: "cafedebaceface74",
    aad: "000001000000000000000001",
    plaintext: "4500004933ba00007f119106c3fb1d10\
        c2b1d326c02831ce0035dd7b800302d5\
        00004e20001e8c18d75b81dc91baa047\
        6b91b924b280389d92c963bac046ec95\
        9b6266c04722b14923010101",
    ciphertext_icv: "18a6fd42f72cbf4ab2a2ea901f73d814\
        e3e7f243d95412e1c349c1d2fbec168f\
        9190feebaf2cb01984e65863965d7472\
        b79da345e0e780191f0d2f0e0f496c22\
        6f2127b27db35724e7845d68651f57e6\
        5f354f75ff17015769623436",
};

/// draft-mcgrew-gcm-test-01 §4, packet 9 (page 13): AES-256-GCM, 64-bit extended sequence number (12-byte AAD).
pub(crate) const GCM_TEST_09_AES256: GcmEspVector = GcmEspVector {
    source: "draft-mcgrew-gcm-test-01 section 4, packet 9 (page 13)",
    key: "abbccddef00112233445566778899aababbccddef00112233445566778899aab",
    salt: "73616c74",
    spi: "17405e67",
    seq: "156f3126dd0db99b",
    esn: true,
    iv: "616e640169766563",
    aad: "17405e67156f3126dd0db99b",
    plaintext: "45080028732c00004006e9f90a010612\
        0a01038f06b88023dd6bafbecb712602\
        50101f646d540001",
    ciphertext_icv: "f2d69ecdbd5a0d5b8d5ef38bad4da58d\
        1f278fde98ef67549d524a3018d9a57f\
        f4d3a31ce673119e451626c2415771e3\
        b7eebca614c89b35",
};

/// draft-mcgrew-gcm-test-01 §4, packet 10 (page 14): AES-128-GCM, 64-bit extended sequence number (12-byte AAD).
pub(crate) const GCM_TEST_10_AES128: GcmEspVector = GcmEspVector {
    source: "draft-mcgrew-gcm-test-01 section 4, packet 10 (page 14)",
    key: "3de09874b388e6491988d0c3607eae1f",
    salt: "57690e43",
    spi: "42f67e3f",
    seq: "1010101010101010",
    esn: true,
    iv: "4e280000a2fca1a3",
    aad: "42f67e3f1010101010101010",
    plaintext: "45000049333e00007f119182c3fb1d10\
        c2b1d326c02831ce0035cb458003025b\
        000001e0001e8c18d65759d52284a035\
        2c71475c8880391c764d6e5ee0496b32\
        5ae270c03899493915010101",
    ciphertext_icv: "fba2cad12fc1f9f00d3cebf305410db8\
        3d7784b607323d220f24b0a97d541828\
        00cadb0f68d99ef0e0c0c89ae9bea888\
        4e52d65bc1afd0740f742444747b5b39\
        ab533163aad4550ee5160975cdb608c5\
        769189609763b8e18caa81e2",
};

/// draft-mcgrew-gcm-test-01 §4, packet 11 (page 15): AES-256-GCM, 64-bit extended sequence number (12-byte AAD).
pub(crate) const GCM_TEST_11_AES256: GcmEspVector = GcmEspVector {
    source: "draft-mcgrew-gcm-test-01 section 4, packet 11 (page 15)",
    key: "abbccddef00112233445566778899aababbccddef00112233445566778899aab",
    salt: "73616c74",
    spi: "17405e67",
    seq: "156f3126dd0db99b",
    esn: true,
    iv: "616e640169766563",
    aad: "17405e67156f3126dd0db99b",
    plaintext: "636973636f0172756c65730174686501\
        6e6574776501646566696e6501746865\
        746563686e6f6c6f6769657301746861\
        7477696c6c01646566696e65746f6d6f\
        72726f7701020201",
    ciphertext_icv: "d4b7ed86a1777f2ea13d6973d324c69e\
        7b43f826fb56831226508bebd2dceb18\
        d0a6df10e5487df074113e14c641024e\
        3e6773d91a62ee429b043a10e3efe6b0\
        12a49363412364f8c0cac587f249e56b\
        11e24f30e44ccc76",
};

/// draft-mcgrew-gcm-test-01 §4, packet 12 (page 16): AES-128-GCM, 32-bit sequence number (8-byte AAD).
pub(crate) const GCM_TEST_12_AES128: GcmEspVector = GcmEspVector {
    source: "draft-mcgrew-gcm-test-01 section 4, packet 12 (page 16)",
    key: "7d773d00c144c525ac619d18c84a3f47",
    salt: "d9664267",
    spi: "335467ae",
    seq: "ffffffff",
    esn: false,
    iv: "43457e9182443bc6",
    aad: "335467aeffffffff",
    plaintext: "01020201",
    ciphertext_icv: "437f866bcb3f699fe9b0822bac961c4504bef270",
};

/// draft-mcgrew-gcm-test-01 §4, packet 13 (page 16): AES-128-GCM, 64-bit extended sequence number (12-byte AAD).
pub(crate) const GCM_TEST_13_AES128: GcmEspVector = GcmEspVector {
    source: "draft-mcgrew-gcm-test-01 section 4, packet 13 (page 16)",
    key: "abbccddef00112233445566778899aab",
    salt: "decaf888",
    spi: "00000100",
    seq: "0000000000000001",
    esn: true,
    iv: "cafedebaceface74",
    aad: "000001000000000000000001",
    plaintext: "746f016265016f72016e6f7401746f0162650001",
    ciphertext_icv: "29c9fc69a197d038ccdd14e2ddfcaa05\
        43332164412503524303ed3c6c5f2838\
        43af8c3e",
};

/// draft-mcgrew-gcm-test-01 §4, packet 14 (page 17): AES-256-GCM, 64-bit extended sequence number (12-byte AAD).
pub(crate) const GCM_TEST_14_AES256: GcmEspVector = GcmEspVector {
    source: "draft-mcgrew-gcm-test-01 section 4, packet 14 (page 17)",
    key: "6c6567616c697a656d6172696a75616e61616e64646f69746265666f72656961",
    salt: "7475726e",
    spi: "796b6963",
    seq: "ffffffffffffffff",
    esn: true,
    iv: "333021696765746d",
    aad: "796b6963ffffffffffffffff",
    plaintext: "45000030da3a00008001df3bc0a80005\
        c0a800010800c6cd0200070061626364\
        65666768696a6b6c6d6e6f7071727374\
        01020201",
    ciphertext_icv: "f97ab2aa356d8edce17644ac8c78e25d\
        d24dedbb29ebf1b64a274b39b49c3a86\
        4cd3d78ca4ae68a32b42458fb57dbe82\
        1dcc63b9d0937ba2945f669368661a32\
        9fb4c053",
};

/// draft-mcgrew-gcm-test-01 §4, packet 16 (page 19): AES-128-GCM, 64-bit extended sequence number (12-byte AAD).
///
/// This packet is missing from two of the copies of the draft consulted
/// (both stop after packet 14); it was taken from two other copies, which
/// agree on key, salt, IV, AAD, ciphertext and ICV (only one of them gives
/// the plaintext, which the GCM recomputation confirms).
pub(crate) const GCM_TEST_16_AES128: GcmEspVector = GcmEspVector {
    source: "draft-mcgrew-gcm-test-01 section 4, packet 16 (page 19)",
    key: "3de09874b388e6491988d0c3607eae1f",
    salt: "57690e43",
    spi: "3f7ef642",
    seq: "1010101010101010",
    esn: true,
    iv: "4e280000a2fca1a3",
    aad: "3f7ef6421010101010101010",
    plaintext: "45000030da3a00008001df3bc0a80005\
        c0a800010800c6cd0200070061626364\
        65666768696a6b6c6d6e6f7071727374\
        01020201",
    ciphertext_icv: "fba2caa8c6c5f9f0f22ca54a061210ad\
        3f6e5791cf1aca210d117cec9c357917\
        65acbd8701ad79845bf9fe3fba487bc9\
        6321930684eecadb56912546e7a95c97\
        40d7cb05",
};

/// draft-mcgrew-gcm-test-01 §4, packet 17 (page 20): AES-128-GCM, 64-bit extended sequence number (12-byte AAD).
///
/// This packet is missing from two of the copies of the draft consulted
/// (both stop after packet 14); it was taken from two other copies, which
/// agree on key, salt, IV, AAD, ciphertext and ICV (only one of them gives
/// the plaintext, which the GCM recomputation confirms).
pub(crate) const GCM_TEST_17_AES128: GcmEspVector = GcmEspVector {
    source: "draft-mcgrew-gcm-test-01 section 4, packet 17 (page 20)",
    key: "4c80cdefbb5d10da906ac73c3613a634",
    salt: "22433c64",
    spi: "00004321",
    seq: "8765432100000007",
    esn: true,
    iv: "4855ec7d3a234bfd",
    aad: "000043218765432100000007",
    plaintext: "0800c6cd020007006162636465666768696a6b6c6d6e6f707172737401020201",
    ciphertext_icv: "74752e8aeb5d873cd7c0f4acc36c4bff\
        84b7d7b98f0ca8b6acda6894bc619069\
        ef9cbc28fe1b56a7c4e0d58c86cd2bc0",
};

/// The AES-128-GCM packets of draft-mcgrew-gcm-test-01 §4, in document order.
pub(crate) const GCM_ESP_AES128: &[&GcmEspVector] = &[
    &GCM_TEST_01_AES128,
    &GCM_TEST_02_AES128,
    &GCM_TEST_04_AES128,
    &GCM_TEST_05_AES128,
    &GCM_TEST_06_AES128,
    &GCM_TEST_08_AES128,
    &GCM_TEST_10_AES128,
    &GCM_TEST_12_AES128,
    &GCM_TEST_13_AES128,
    &GCM_TEST_16_AES128,
    &GCM_TEST_17_AES128,
];

/// The AES-256-GCM packets of draft-mcgrew-gcm-test-01 §4, in document order.
pub(crate) const GCM_ESP_AES256: &[&GcmEspVector] = &[
    &GCM_TEST_03_AES256,
    &GCM_TEST_09_AES256,
    &GCM_TEST_11_AES256,
    &GCM_TEST_14_AES256,
];

// ---------------------------------------------------------------------------
// RFC 4868 "Using HMAC-SHA-256, HMAC-SHA-384, and HMAC-SHA-512 with IPsec",
// Section 2.7.2.1 "SHA256 Authentication Test Vectors", Test Cases
// AUTH256-1 .. AUTH256-4. Each case prints the key (32 bytes), the data, the
// full PRF-HMAC-SHA-256 output and HMAC-SHA-256-128 (its leftmost 128 bits).
// ---------------------------------------------------------------------------

/// RFC 4868 §2.7.2.1, Test Case AUTH256-1. Data is the string `"Hi There"`.
pub(crate) const RFC4868_AUTH256_1: HmacVector = HmacVector {
    source: "RFC 4868 section 2.7.2.1, Test Case AUTH256-1",
    key: "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
    data: "4869205468657265",
    data_ascii: Some("Hi There"),
    mac: "198a607eb44bfbc69903a0f1cf2bbdc5ba0aa3f3d9ae3c1c7a3b1696a0b68cf7",
    mac_truncated: "198a607eb44bfbc69903a0f1cf2bbdc5",
    truncated_in_source: true,
};

/// RFC 4868 §2.7.2.1, Test Case AUTH256-2. Data is the string `"what do ya want for nothing?"`.
/// The key is the string `"JefeJefeJefeJefeJefeJefeJefeJefe"` (32 bytes).
pub(crate) const RFC4868_AUTH256_2: HmacVector = HmacVector {
    source: "RFC 4868 section 2.7.2.1, Test Case AUTH256-2",
    key: "4a6566654a6566654a6566654a6566654a6566654a6566654a6566654a656665",
    data: "7768617420646f2079612077616e7420666f72206e6f7468696e673f",
    data_ascii: Some("what do ya want for nothing?"),
    mac: "167f928588c5cc2eef8e3093caa0e87c9ff566a14794aa61648d81621a2a40c6",
    mac_truncated: "167f928588c5cc2eef8e3093caa0e87c",
    truncated_in_source: true,
};

/// RFC 4868 §2.7.2.1, Test Case AUTH256-3.
pub(crate) const RFC4868_AUTH256_3: HmacVector = HmacVector {
    source: "RFC 4868 section 2.7.2.1, Test Case AUTH256-3",
    key: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    data: "dddddddddddddddddddddddddddddddd\
        dddddddddddddddddddddddddddddddd\
        dddddddddddddddddddddddddddddddd\
        dddd",
    data_ascii: None,
    mac: "cdcb1220d1ecccea91e53aba3092f962e549fe6ce9ed7fdc43191fbde45c30b0",
    mac_truncated: "cdcb1220d1ecccea91e53aba3092f962",
    truncated_in_source: true,
};

/// RFC 4868 §2.7.2.1, Test Case AUTH256-4.
pub(crate) const RFC4868_AUTH256_4: HmacVector = HmacVector {
    source: "RFC 4868 section 2.7.2.1, Test Case AUTH256-4",
    key: "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20",
    data: "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd\
        cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd\
        cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd\
        cdcd",
    data_ascii: None,
    mac: "372efcf9b40b35c2115b1346903d2ef42fced46f0846e7257bb156d3d7b30d3f",
    mac_truncated: "372efcf9b40b35c2115b1346903d2ef4",
    truncated_in_source: true,
};

/// RFC 4868 AUTH256-1 .. AUTH256-4 (HMAC-SHA-256 / HMAC-SHA-256-128).
pub(crate) const HMAC_SHA256_128: &[&HmacVector] = &[
    &RFC4868_AUTH256_1,
    &RFC4868_AUTH256_2,
    &RFC4868_AUTH256_3,
    &RFC4868_AUTH256_4,
];

// ---------------------------------------------------------------------------
// RFC 2202 "Test Cases for HMAC-MD5 and HMAC-SHA-1", Section 3 "Test Cases
// for HMAC-SHA-1", test_case 1-7. RFC 2404 (HMAC-SHA-1-96 within ESP and AH)
// has no test vectors of its own; its ICV is the leftmost 96 bits of the
// HMAC-SHA-1 output. RFC 2202 prints that 96-bit value ("digest-96") only for
// test_case 5; for the other cases `mac_truncated` is the first 12 bytes of
// `mac` and `truncated_in_source` is false.
//
// Known erratum in RFC 2202's text: test_case 7 is followed by a stray copy of
// test_case 5's "data_len = 20", "digest = 0x4c1a0342..." and "digest-96"
// lines. The values below are test_case 7's own (data_len 73, digest
// 0xe8e99d0f...); the recomputation confirms them.
// ---------------------------------------------------------------------------

/// RFC 2202 §3, HMAC-SHA-1 test_case 1. Data is the string `"Hi There"`.
pub(crate) const RFC2202_HMAC_SHA1_1: HmacVector = HmacVector {
    source: "RFC 2202 section 3, HMAC-SHA-1 test_case 1",
    key: "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
    data: "4869205468657265",
    data_ascii: Some("Hi There"),
    mac: "b617318655057264e28bc0b6fb378c8ef146be00",
    mac_truncated: "b617318655057264e28bc0b6",
    truncated_in_source: false,
};

/// RFC 2202 §3, HMAC-SHA-1 test_case 2. Key is the string `"Jefe"`. Data is the string `"what do ya want for nothing?"`.
pub(crate) const RFC2202_HMAC_SHA1_2: HmacVector = HmacVector {
    source: "RFC 2202 section 3, HMAC-SHA-1 test_case 2",
    key: "4a656665",
    data: "7768617420646f2079612077616e7420666f72206e6f7468696e673f",
    data_ascii: Some("what do ya want for nothing?"),
    mac: "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79",
    mac_truncated: "effcdf6ae5eb2fa2d27416d5",
    truncated_in_source: false,
};

/// RFC 2202 §3, HMAC-SHA-1 test_case 3.
pub(crate) const RFC2202_HMAC_SHA1_3: HmacVector = HmacVector {
    source: "RFC 2202 section 3, HMAC-SHA-1 test_case 3",
    key: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    data: "dddddddddddddddddddddddddddddddd\
        dddddddddddddddddddddddddddddddd\
        dddddddddddddddddddddddddddddddd\
        dddd",
    data_ascii: None,
    mac: "125d7342b9ac11cd91a39af48aa17b4f63f175d3",
    mac_truncated: "125d7342b9ac11cd91a39af4",
    truncated_in_source: false,
};

/// RFC 2202 §3, HMAC-SHA-1 test_case 4.
pub(crate) const RFC2202_HMAC_SHA1_4: HmacVector = HmacVector {
    source: "RFC 2202 section 3, HMAC-SHA-1 test_case 4",
    key: "0102030405060708090a0b0c0d0e0f10111213141516171819",
    data: "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd\
        cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd\
        cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd\
        cdcd",
    data_ascii: None,
    mac: "4c9007f4026250c6bc8414f9bf50c86c2d7235da",
    mac_truncated: "4c9007f4026250c6bc8414f9",
    truncated_in_source: false,
};

/// RFC 2202 §3, HMAC-SHA-1 test_case 5. Data is the string `"Test With Truncation"`.
pub(crate) const RFC2202_HMAC_SHA1_5: HmacVector = HmacVector {
    source: "RFC 2202 section 3, HMAC-SHA-1 test_case 5",
    key: "0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c",
    data: "546573742057697468205472756e636174696f6e",
    data_ascii: Some("Test With Truncation"),
    mac: "4c1a03424b55e07fe7f27be1d58bb9324a9a5a04",
    mac_truncated: "4c1a03424b55e07fe7f27be1",
    truncated_in_source: true,
};

/// RFC 2202 §3, HMAC-SHA-1 test_case 6. Data is the string `"Test Using Larger Than Block-Size Key - Hash Key First"`.
pub(crate) const RFC2202_HMAC_SHA1_6: HmacVector = HmacVector {
    source: "RFC 2202 section 3, HMAC-SHA-1 test_case 6",
    key: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\
        aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\
        aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\
        aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\
        aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    data: "54657374205573696e67204c61726765\
        72205468616e20426c6f636b2d53697a\
        65204b6579202d2048617368204b6579\
        204669727374",
    data_ascii: Some("Test Using Larger Than Block-Size Key - Hash Key First"),
    mac: "aa4ae5e15272d00e95705637ce8a3b55ed402112",
    mac_truncated: "aa4ae5e15272d00e95705637",
    truncated_in_source: false,
};

/// RFC 2202 §3, HMAC-SHA-1 test_case 7. Data is the string `"Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data"`.
pub(crate) const RFC2202_HMAC_SHA1_7: HmacVector = HmacVector {
    source: "RFC 2202 section 3, HMAC-SHA-1 test_case 7",
    key: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\
        aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\
        aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\
        aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\
        aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    data: "54657374205573696e67204c61726765\
        72205468616e20426c6f636b2d53697a\
        65204b657920616e64204c6172676572\
        205468616e204f6e6520426c6f636b2d\
        53697a652044617461",
    data_ascii: Some("Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data"),
    mac: "e8e99d0f45237d786d6bbaa7965c7808bbff1a91",
    mac_truncated: "e8e99d0f45237d786d6bbaa7",
    truncated_in_source: false,
};

/// RFC 2202 HMAC-SHA-1 test_case 1-7 with their HMAC-SHA1-96 truncations.
pub(crate) const HMAC_SHA1_96: &[&HmacVector] = &[
    &RFC2202_HMAC_SHA1_1,
    &RFC2202_HMAC_SHA1_2,
    &RFC2202_HMAC_SHA1_3,
    &RFC2202_HMAC_SHA1_4,
    &RFC2202_HMAC_SHA1_5,
    &RFC2202_HMAC_SHA1_6,
    &RFC2202_HMAC_SHA1_7,
];
