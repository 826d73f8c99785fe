//! The IKE responder on hostile bytes, in every state: a responder that has completed a real
//! handshake in memory receives the input as one message. The first byte selects how: as is
//! (unknown SPIs, IKE_SA_INIT), or aimed at the established SA (its SPIs and expected message
//! ID written over the header), so that with the ICV check bypassed under `cfg(fuzzing)` the
//! fuzzer reaches INFORMATIONAL and CREATE_CHILD_SA handling. A timer poll follows.
#![no_main]

use std::time::Duration;

use ike::core::fuzzing::{SystemRandom, established_responder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let rng = SystemRandom::new();
    let Some(mut setup) = established_responder(&rng) else {
        panic!("the in-memory handshake failed");
    };
    let mut msg = rest.to_vec();
    if mode & 1 == 1 {
        setup.aim(&mut msg);
    }
    let mut out = Vec::new();
    setup
        .responder
        .handle(setup.now, setup.path, &msg, &rng, &mut out);
    // The same bytes again exercise the retransmission cache.
    if mode & 2 == 2 {
        setup
            .responder
            .handle(setup.now, setup.path, &msg, &rng, &mut out);
    }
    setup
        .responder
        .poll(setup.now + Duration::from_secs(31), &rng, &mut out);
    let _ = setup.responder.status();
});
