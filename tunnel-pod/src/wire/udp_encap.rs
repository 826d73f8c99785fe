//! What arrives on UDP port 4500 (RFC 3948): ESP, IKE behind the non-ESP marker, or a NAT
//! keepalive.

/// RFC 3948 §2.2: IKE messages on the ESP port start with four zero bytes where ESP has its SPI
/// (an SPI of 0 is reserved, RFC 4303 §2.1).
pub const NON_ESP_MARKER: [u8; 4] = [0; 4];
pub const NON_ESP_MARKER_LEN: usize = NON_ESP_MARKER.len();
/// RFC 3948 §2.3: a NAT keepalive is a single 0xFF byte.
pub const KEEPALIVE: [u8; 1] = [0xff];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// An ESP packet (SPI ≠ 0).
    Esp(&'a [u8]),
    /// An IKE message, marker removed.
    Ike(&'a [u8]),
    Keepalive,
    /// Too short to be any of them (RFC 3948 §2.2: ESP needs at least its 8-byte header).
    Malformed,
}

pub fn classify(d: &[u8]) -> Datagram<'_> {
    match d {
        [0xff] => Datagram::Keepalive,
        [0, 0, 0, 0, ike @ ..] => Datagram::Ike(ike),
        _ if d.len() >= super::esp::HEADER_LEN => Datagram::Esp(d),
        _ => Datagram::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_rfc_3948() {
        assert_eq!(classify(&[0xff]), Datagram::Keepalive);
        assert_eq!(classify(&[0, 0, 0, 0, 1, 2]), Datagram::Ike(&[1, 2]));
        let esp = [0, 0, 0x10, 0, 0, 0, 0, 1];
        assert_eq!(classify(&esp), Datagram::Esp(&esp));
        assert_eq!(classify(&[0, 0, 1]), Datagram::Malformed);
        assert_eq!(classify(&[]), Datagram::Malformed);
        assert_eq!(classify(&[1, 2, 3, 4, 5, 6, 7]), Datagram::Malformed);
    }
}
