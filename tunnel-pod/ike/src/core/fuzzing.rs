//! Setup shared by fuzz targets: a responder that has completed a real handshake in memory.
//! Not part of the product API.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use ring::rand::SecureRandom;
/// For fuzz targets, which do not depend on ring themselves.
pub use ring::rand::SystemRandom;

use super::ike_sa::State;
use super::{Config, Endpoint, Output, Path, StaticPsk, ipv4_id};
use crate::crypto::{Group, Secret};

/// A responder with one established IKE SA and its Child SA.
pub struct EstablishedResponder {
    pub responder: Endpoint,
    /// As the responder sees it (local = its own address).
    pub path: Path,
    pub now: Instant,
    pub spi_i: u64,
    pub spi_r: u64,
    /// The message ID the responder expects for the peer's next request.
    pub next_request_id: u32,
}

impl EstablishedResponder {
    /// Overwrites the SPIs and the message ID of a message (if it is long enough) so that a
    /// fuzzer's bytes reach this SA and its window.
    pub fn aim(&self, msg: &mut [u8]) {
        if let Some(h) = msg.get_mut(..8) {
            h.copy_from_slice(&self.spi_i.to_be_bytes());
        }
        if let Some(h) = msg.get_mut(8..16) {
            h.copy_from_slice(&self.spi_r.to_be_bytes());
        }
        if let Some(h) = msg.get_mut(20..24) {
            h.copy_from_slice(&self.next_request_id.to_be_bytes());
        }
    }
}

/// Runs IKE_SA_INIT and IKE_AUTH between two endpoints (ECP-384, AES-GCM) and returns the
/// responder. None only if the handshake fails, which is a bug.
pub fn established_responder(rng: &dyn SecureRandom) -> Option<EstablishedResponder> {
    let i_addr = Ipv4Addr::new(192, 0, 2, 1);
    let r_addr = Ipv4Addr::new(198, 51, 100, 1);
    let mut ci = Config::new(ipv4_id(i_addr), vec![ipv4_id(r_addr)]);
    ci.proposals.ike_dh = vec![Group::Ecp384];
    let cr = Config::new(ipv4_id(r_addr), vec![ipv4_id(i_addr)]);
    let key = || Box::new(StaticPsk(Secret::new(b"fuzzing".to_vec())));
    let mut initiator = Endpoint::new(ci, key());
    let mut responder = Endpoint::new(cr, key());
    let now = Instant::now();
    let path = Path {
        local: SocketAddr::from((i_addr, 500)),
        remote: SocketAddr::from((r_addr, 500)),
    };
    let mut to_r = Vec::new();
    initiator.initiate(now, path, rng, &mut to_r);
    let mut r_path = path.reversed();
    for _ in 0..8 {
        let mut to_i = Vec::new();
        for o in to_r.drain(..) {
            if let Output::Send { path, bytes } = o {
                r_path = path.reversed();
                responder.handle(now, r_path, &bytes, rng, &mut to_i);
            }
        }
        for o in to_i.drain(..) {
            if let Output::Send { path, bytes } = o {
                initiator.handle(now, path.reversed(), &bytes, rng, &mut to_r);
            }
        }
        if to_r.iter().all(|o| !matches!(o, Output::Send { .. })) {
            break;
        }
    }
    let (spi_i, spi_r, next_request_id) = responder.sas.values().find_map(|s| match &s.state {
        State::Established(e) => Some((s.spi_i, s.spi_r, e.win.next_recv)),
        _ => None,
    })?;
    Some(EstablishedResponder {
        responder,
        path: r_path,
        now,
        spi_i,
        spi_r,
        next_request_id,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn setup_works() {
        let rng = ring::rand::SystemRandom::new();
        let e = super::established_responder(&rng).unwrap();
        assert_eq!(e.next_request_id, 2);
        assert_eq!(e.path.local.port(), 4500);
        let mut m = vec![0u8; 28];
        e.aim(&mut m);
        assert_eq!(&m[..8], &e.spi_i.to_be_bytes());
    }
}
