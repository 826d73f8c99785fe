//! The GRE receive path on hostile bytes: outer IPv4, GRE header, inner packet, MSS clamping.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use tunnel_pod::gre::Gre;

fuzz_target!(|data: &[u8]| {
    let gre = Gre {
        local: Ipv4Addr::new(192, 0, 2, 1),
        customer: Ipv4Addr::new(198, 51, 100, 2),
        ttl: 64,
        key: Some(1001),
        mtu: 1476,
        mss: Some(1436),
        idents: tunnel_pod::gre::Idents::random(),
    };
    let mut datagram = data.to_vec();
    let _ = gre.decap(&mut datagram);
});
