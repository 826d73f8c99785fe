//! The IKE codec on hostile bytes: a whole message (`parse_message`), and a decrypted payload
//! chain (`parse_payloads`, first byte = type of the first payload). Whatever parses must
//! re-encode to bytes that parse to the same structs.
#![no_main]

use ike::wire::{
    Header, Parsed, PayloadType, encode_message, parse_message, parse_payloads, write_payloads,
};
use libfuzzer_sys::fuzz_target;

/// The message rebuilt from what was parsed: header, plaintext payloads re-encoded, then the
/// SK/SKF payload copied from the original (the codec does not look inside it).
fn rebuild(data: &[u8], p: &Parsed) -> Vec<u8> {
    let Some(e) = p.encrypted else {
        return encode_message(p.header, &p.payloads);
    };
    let (kind, sk_header) = match e.fragment {
        None => (PayloadType::SK, 4),
        Some(_) => (PayloadType::SKF, 8),
    };
    let mut chain = Vec::new();
    let first = write_payloads(&p.payloads, kind, &mut chain);
    chain.extend_from_slice(&data[e.iv_offset - sk_header..]);
    let header = Header {
        next_payload: if p.payloads.is_empty() { kind } else { first },
        length: u32::try_from(Header::LEN + chain.len()).unwrap(),
        ..p.header
    };
    let mut out = Vec::new();
    header.write(&mut out);
    out.extend_from_slice(&chain);
    out
}

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = parse_message(data) {
        let again = rebuild(data, &p);
        let q = parse_message(&again).expect("a re-encoded message parses");
        assert_eq!(q.header, p.header);
        assert_eq!(q.payloads, p.payloads);
        match (p.encrypted, q.encrypted) {
            (None, None) => {}
            (Some(e), Some(f)) => {
                assert_eq!((e.first_inner, e.fragment), (f.first_inner, f.fragment));
                assert_eq!(data[e.iv_offset..], again[f.iv_offset..]);
            }
            _ => panic!("SK/SKF appeared or vanished"),
        }
    }
    if let Some((&first, chain)) = data.split_first() {
        let first = PayloadType(first);
        if let Ok(payloads) = parse_payloads(first, chain) {
            let mut again = Vec::new();
            let written = write_payloads(&payloads, PayloadType::NONE, &mut again);
            assert_eq!(parse_payloads(written, &again).as_ref(), Ok(&payloads));
            if !payloads.is_empty() {
                assert_eq!(written, first);
            }
        }
    }
});
