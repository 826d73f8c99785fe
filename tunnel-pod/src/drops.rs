//! Why a packet was dropped: one bounded label per reason for the drop counters.

/// Every reason the dataplane drops a packet. The set is closed so metric labels stay bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than a header or than the length a header announces.
    Truncated,
    /// GRE version other than 0.
    BadVersion,
    /// GRE bits 1, 4 or 5 set (RFC 2784 §2.3).
    ReservedBits,
    /// GRE protocol type other than IPv4 or IPv6.
    UnknownProtocol,
    /// GRE key absent, present, or different from the configured one.
    KeyMismatch,
    /// GRE checksum present and wrong.
    BadChecksum,
    /// Outer source is not the customer endpoint.
    UnexpectedSource,
    /// Inner packet larger than the tunnel MTU.
    Oversized,
    /// Inner packet is not the IP version its protocol type says.
    MalformedInner,
    /// Packet read from the TUN device is neither IPv4 nor IPv6.
    NotIp,
    /// Packet read from the TUN device with an offload request we cannot carry out (unknown
    /// GSO type, checksum offsets outside the packet, a TSO packet that is not TCP).
    BadOffload,
    /// The transport socket refused the packet.
    SendError,
    /// The TUN device refused the packet.
    TunWriteError,
    /// ESP: no inbound SA has this SPI.
    UnknownSpi,
    /// ESP: the ICV (GCM tag or HMAC) does not verify.
    BadIcv,
    /// ESP: padding bytes are not 1, 2, 3, … (RFC 4303 §2.4).
    BadPadding,
    /// ESP: sequence number already received (anti-replay on).
    Replayed,
    /// ESP: sequence number left of the replay window.
    TooOld,
    /// ESP: next header is not IPv4, IPv6 or "no next header".
    BadNextHeader,
    /// ESP: a dummy packet (next header 59, RFC 4303 §2.6), discarded by design.
    DummyPacket,
    /// ESP: the outbound SA cannot send (sequence numbers used up, or hard lifetime reached).
    SaExhausted,
    /// Port 4500: a NAT keepalive (RFC 3948 §2.3). Not data; counted here to be visible.
    NatKeepalive,
    /// ESP: no outbound SA (IKE has not established one yet), or the peer's address is unknown.
    NoSa,
    /// ESP: the inner packet is outside the SA's traffic selectors (RFC 4301 §5.2).
    SelectorMismatch,
    /// IKE: a message arrived faster than the IKE task takes them (its queue was full).
    IkeBacklog,
    /// IPv6 link-scope chatter from the host's own kernel on the TUN (router solicitation, MLD
    /// report, DAD probe; see `chatter`): a point-to-point L3 tunnel never carries it.
    LinkChatter,
    /// GRE over AF_PACKET: every TX ring frame was still held by the kernel.
    TxRingFull,
}

impl DropReason {
    pub const ALL: [DropReason; 27] = [
        DropReason::Truncated,
        DropReason::BadVersion,
        DropReason::ReservedBits,
        DropReason::UnknownProtocol,
        DropReason::KeyMismatch,
        DropReason::BadChecksum,
        DropReason::UnexpectedSource,
        DropReason::Oversized,
        DropReason::MalformedInner,
        DropReason::NotIp,
        DropReason::BadOffload,
        DropReason::SendError,
        DropReason::TunWriteError,
        DropReason::UnknownSpi,
        DropReason::BadIcv,
        DropReason::BadPadding,
        DropReason::Replayed,
        DropReason::TooOld,
        DropReason::BadNextHeader,
        DropReason::DummyPacket,
        DropReason::SaExhausted,
        DropReason::NatKeepalive,
        DropReason::NoSa,
        DropReason::SelectorMismatch,
        DropReason::IkeBacklog,
        DropReason::LinkChatter,
        DropReason::TxRingFull,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::BadVersion => "bad_version",
            DropReason::ReservedBits => "reserved_bits",
            DropReason::UnknownProtocol => "unknown_protocol",
            DropReason::KeyMismatch => "key_mismatch",
            DropReason::BadChecksum => "bad_checksum",
            DropReason::UnexpectedSource => "unexpected_source",
            DropReason::Oversized => "oversized",
            DropReason::MalformedInner => "malformed_inner",
            DropReason::NotIp => "not_ip",
            DropReason::BadOffload => "bad_offload",
            DropReason::SendError => "send_error",
            DropReason::TunWriteError => "tun_write_error",
            DropReason::UnknownSpi => "unknown_spi",
            DropReason::BadIcv => "bad_icv",
            DropReason::BadPadding => "bad_padding",
            DropReason::Replayed => "replayed",
            DropReason::TooOld => "too_old",
            DropReason::BadNextHeader => "bad_next_header",
            DropReason::DummyPacket => "dummy_packet",
            DropReason::SaExhausted => "sa_exhausted",
            DropReason::NatKeepalive => "nat_keepalive",
            DropReason::NoSa => "no_sa",
            DropReason::SelectorMismatch => "selector_mismatch",
            DropReason::IkeBacklog => "ike_backlog",
            DropReason::LinkChatter => "link_chatter",
            DropReason::TxRingFull => "tx_ring_full",
        }
    }

    /// Position in `ALL`, for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl From<crate::esp::sa::Refused> for DropReason {
    fn from(r: crate::esp::sa::Refused) -> Self {
        use crate::esp::sa::Refused;
        match r {
            Refused::Truncated => DropReason::Truncated,
            Refused::BadIcv => DropReason::BadIcv,
            Refused::BadPadding => DropReason::BadPadding,
            Refused::Replayed => DropReason::Replayed,
            Refused::TooOld => DropReason::TooOld,
            Refused::BadNextHeader => DropReason::BadNextHeader,
            Refused::Dummy => DropReason::DummyPacket,
            Refused::MalformedInner => DropReason::MalformedInner,
            Refused::SelectorMismatch => DropReason::SelectorMismatch,
            Refused::Exhausted => DropReason::SaExhausted,
        }
    }
}

impl From<crate::esp::sa::SealError> for DropReason {
    fn from(e: crate::esp::sa::SealError) -> Self {
        use crate::esp::sa::SealError;
        match e {
            SealError::SequenceExhausted | SealError::Expired => DropReason::SaExhausted,
            SealError::NoRoom => DropReason::Truncated,
            SealError::NotSelected => DropReason::SelectorMismatch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_index_order() {
        for (i, d) in DropReason::ALL.iter().enumerate() {
            assert_eq!(d.index(), i);
        }
    }
}
