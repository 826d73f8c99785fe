//! NAT detection (RFC 7296 §2.23): SHA-1 of SPIi | SPIr | IP address | port.

use std::net::{IpAddr, SocketAddr};

use ring::digest;

/// The NAT_DETECTION_*_IP notification data for `addr`, with the SPIs as they appear in the
/// message's header (SPIr is zero in an IKE_SA_INIT request).
pub fn nat_detection_hash(spi_i: u64, spi_r: u64, addr: SocketAddr) -> Vec<u8> {
    let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(&spi_i.to_be_bytes());
    ctx.update(&spi_r.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(a) => ctx.update(&a.octets()),
        IpAddr::V6(a) => ctx.update(&a.octets()),
    }
    ctx.update(&addr.port().to_be_bytes());
    ctx.finish().as_ref().to_vec()
}

/// A source hash that cannot match the real one: the hash of port 0, which never sends.
/// Announcing it makes the peer believe we are behind a NAT, so it UDP-encapsulates ESP.
pub fn forced_source_hash(spi_i: u64, spi_r: u64, addr: SocketAddr) -> Vec<u8> {
    let mut fake = addr;
    fake.set_port(0);
    nat_detection_hash(spi_i, spi_r, fake)
}

/// What the NAT_DETECTION notifications told us.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NatState {
    /// The peer's source hash did not match the address we saw: the peer is behind a NAT
    /// (or says so to force encapsulation).
    pub remote_behind: bool,
    /// The peer's destination hash did not match our address: we are behind a NAT.
    pub local_behind: bool,
}

impl NatState {
    pub fn any(self) -> bool {
        self.remote_behind || self.local_behind
    }

    /// From the hashes the peer sent (`source` / `destination` lists: several source hashes
    /// are allowed, §2.23) with the SPIs of the message that carried them, as seen on `path`.
    pub fn detect(
        spi_i: u64,
        spi_r: u64,
        path: crate::core::Path,
        source: &[&[u8]],
        destination: &[&[u8]],
    ) -> NatState {
        let src = nat_detection_hash(spi_i, spi_r, path.remote);
        let dst = nat_detection_hash(spi_i, spi_r, path.local);
        NatState {
            remote_behind: !source.is_empty() && !source.contains(&src.as_slice()),
            local_behind: !destination.is_empty() && !destination.contains(&dst.as_slice()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_covers_every_input() {
        let a: SocketAddr = "192.0.2.1:500".parse().unwrap();
        let b: SocketAddr = "192.0.2.1:4500".parse().unwrap();
        let h = nat_detection_hash(1, 2, a);
        assert_eq!(h.len(), 20);
        assert_ne!(h, nat_detection_hash(1, 2, b));
        assert_ne!(h, nat_detection_hash(1, 3, a));
        assert_ne!(h, nat_detection_hash(0, 2, a));
        assert_ne!(h, forced_source_hash(1, 2, a));
        // SHA-1 over 8+8+4+2 bytes, computed independently.
        let mut input = Vec::new();
        input.extend_from_slice(&1u64.to_be_bytes());
        input.extend_from_slice(&2u64.to_be_bytes());
        input.extend_from_slice(&[192, 0, 2, 1, 0x01, 0xf4]);
        let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
        assert_eq!(h, d.as_ref());
    }
}
