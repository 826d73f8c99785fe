//! The IKE codec on hostile bytes: a whole message (`parse_message`), and a decrypted payload
//! chain (`parse_payloads`, first byte = type of the first payload). Whatever parses must
//! re-encode to bytes that parse to the same structs.
#![no_main]

use ike::wire::{PayloadType, encode_message, parse_message, parse_payloads, write_payloads};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = parse_message(data) {
        if p.encrypted.is_none() {
            let again = encode_message(p.header, &p.payloads);
            assert_eq!(parse_message(&again).as_ref(), Ok(&p));
        } else {
            // The plaintext prefix alone, as a chain ending in SK/SKF.
            let mut prefix = Vec::new();
            let kind = match p.encrypted.and_then(|e| e.fragment) {
                Some(_) => PayloadType::SKF,
                None => PayloadType::SK,
            };
            let first = write_payloads(&p.payloads, kind, &mut prefix);
            if first != PayloadType::NONE {
                assert_eq!(first, p.header.next_payload);
            }
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
