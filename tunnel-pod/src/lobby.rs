//! Sharing UDP 500/4500 on one local endpoint between the IPsec tunnel-pods of a node.
//!
//! Every pod binds its UDP sockets with `SO_REUSEPORT` (one reuseport group per port). A pod
//! with a `customerEndpoint` connects one socket per port to its router, and the kernel hands
//! it every datagram of that 4-tuple. What arrives from elsewhere lands on an unconnected
//! socket of any pod (the "lobby", chosen by a 4-tuple hash): a stray. [`owner`] decides whose
//! it is, and a stray that is not ours is handed over through an abstract unix datagram
//! socket named after its owner (`\0magictunnel/ike/<localEndpoint>/<source ip | any>`), in a
//! [`Handover`] datagram. Abstract names are scoped by network namespace: every hostNetwork
//! pod of a node sees the same ones.
//!
//! The pure parts (the handover format, the rule) come first; [`Claim`] and [`Sender`] are the
//! socket parts. The tokio wiring is `ikev2::sockets`.
//!
//! No accessor of [`Handover`] panics once [`Handover::new_checked`] succeeded.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};

/// The handover header's magic and version.
pub const MAGIC: [u8; 4] = *b"MTH1";
/// Magic, local port, source IPv4, source port.
pub const HEADER_LEN: usize = 12;

mod field {
    use std::ops::Range;
    pub const MAGIC: Range<usize> = 0..4;
    pub const LOCAL_PORT: Range<usize> = 4..6;
    pub const SOURCE_IP: Range<usize> = 6..10;
    pub const SOURCE_PORT: Range<usize> = 10..12;
    pub const PAYLOAD: usize = 12;
}

/// Why a handover datagram was refused (counted `handover_malformed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandoverError {
    #[error("shorter than the {HEADER_LEN}-byte handover header")]
    Truncated,
    #[error("not a handover (magic is not MTH1)")]
    BadMagic,
    #[error("local port is neither 500 nor 4500")]
    BadPort,
}

/// A typed view of a handover datagram: `MTH1` | local port (u16 BE) | source IPv4 | source
/// port (u16 BE) | the UDP payload exactly as received (non-ESP marker included on 4500).
#[derive(Debug, Clone, Copy)]
pub struct Handover<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Handover<T> {
    /// Checks the length, the magic and the port; after this no accessor panics.
    pub fn new_checked(buffer: T) -> Result<Self, HandoverError> {
        let b = buffer.as_ref();
        let magic = b.get(field::MAGIC).ok_or(HandoverError::Truncated)?;
        if b.len() < HEADER_LEN {
            return Err(HandoverError::Truncated);
        }
        if magic != MAGIC {
            return Err(HandoverError::BadMagic);
        }
        let h = Handover { buffer };
        if !matches!(h.local_port(), 500 | 4500) {
            return Err(HandoverError::BadPort);
        }
        Ok(h)
    }

    fn u16_at(&self, r: std::ops::Range<usize>) -> u16 {
        match self.buffer.as_ref().get(r) {
            Some(&[a, b]) => u16::from_be_bytes([a, b]),
            _ => 0,
        }
    }

    pub fn local_port(&self) -> u16 {
        self.u16_at(field::LOCAL_PORT)
    }

    pub fn source(&self) -> SocketAddrV4 {
        let ip = match self.buffer.as_ref().get(field::SOURCE_IP) {
            Some(&[a, b, c, d]) => Ipv4Addr::new(a, b, c, d),
            _ => Ipv4Addr::UNSPECIFIED,
        };
        SocketAddrV4::new(ip, self.u16_at(field::SOURCE_PORT))
    }

    pub fn payload(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .get(field::PAYLOAD..)
            .unwrap_or_default()
    }
}

/// What a handover says, apart from the payload the caller places after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandoverRepr {
    pub local_port: u16,
    pub source: SocketAddrV4,
}

impl HandoverRepr {
    pub fn parse<T: AsRef<[u8]>>(h: &Handover<T>) -> Self {
        HandoverRepr {
            local_port: h.local_port(),
            source: h.source(),
        }
    }

    /// Writes the header into `buf[..HEADER_LEN]`; `None` when `buf` is shorter.
    pub fn emit(&self, buf: &mut [u8]) -> Option<()> {
        let header = buf.get_mut(..HEADER_LEN)?;
        let [p0, p1] = self.local_port.to_be_bytes();
        let [s0, s1] = self.source.port().to_be_bytes();
        let [a, b, c, d] = self.source.ip().octets();
        header.copy_from_slice(&[
            MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], p0, p1, a, b, c, d, s0, s1,
        ]);
        Some(())
    }

    /// The whole handover datagram: header, then `payload`.
    pub fn datagram(&self, payload: &[u8]) -> Vec<u8> {
        let mut d = vec![0u8; HEADER_LEN];
        let _ = self.emit(&mut d);
        d.extend_from_slice(payload);
        d
    }
}

/// The abstract socket names of one local endpoint: one per customer address, and `any` for
/// the endpoint's default tunnel (the one without a `customerEndpoint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name {
    Source(Ipv4Addr),
    Any,
}

impl Name {
    /// The name a pod binds: its customer endpoint, or `any`.
    pub fn of(customer: Option<Ipv4Addr>) -> Name {
        customer.map_or(Name::Any, Name::Source)
    }

    /// `magictunnel/ike/<local>/<source | any>` (the leading NUL is the abstract namespace's).
    pub fn path(&self, local: Ipv4Addr) -> String {
        match self {
            Name::Source(ip) => format!("magictunnel/ike/{local}/{ip}"),
            Name::Any => format!("magictunnel/ike/{local}/any"),
        }
    }
}

/// What to do with a stray datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Ours: handle it as if it had arrived on our connected socket.
    Mine,
    /// Offer it to the pod bound to this name; if nobody is, ask [`owner`] again with the name
    /// added to `tried`.
    HandOver(Name),
    /// Nobody's: count it (`no_tunnel`).
    Drop,
}

/// The ownership rule for a stray from `source`, in order: from my customer → mine; else the
/// pod bound to the source's name; else, if I am the endpoint's default tunnel (no customer) →
/// mine; else the pod bound to `any`; else nobody's. `bound`: whether this pod holds its own
/// name (a pod that does not — another holds it — owns nothing and only hands over). `tried`:
/// names already offered that nobody holds.
pub fn owner(
    source: Ipv4Addr,
    my_customer: Option<Ipv4Addr>,
    bound: bool,
    tried: &[Name],
) -> Decision {
    if bound && my_customer == Some(source) {
        return Decision::Mine;
    }
    let by_source = Name::Source(source);
    if !tried.contains(&by_source) {
        return Decision::HandOver(by_source);
    }
    if my_customer.is_none() && bound {
        return Decision::Mine;
    }
    if !tried.contains(&Name::Any) {
        return Decision::HandOver(Name::Any);
    }
    Decision::Drop
}

/// Whether this pod holds its name, for `/status` and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimState {
    pub name: String,
    pub bound: bool,
    pub error: Option<String>,
}

impl ClaimState {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "bound": self.bound,
            "error": self.error,
        })
    }
}

/// Binds the abstract unix datagram socket `name` (non-blocking, with `SO_PASSCRED`: each
/// datagram carries its sender's uid, see [`recv_handover`]). `AddrInUse` means another pod
/// holds it: two tunnels that cannot be told apart (same local endpoint and customer, or both
/// without a customer).
pub fn claim(local: Ipv4Addr, name: Name) -> io::Result<UnixDatagram> {
    let addr = UnixAddr::from_abstract_name(name.path(local).as_bytes())?;
    let s = UnixDatagram::bind_addr(&addr)?;
    s.set_nonblocking(true)?;
    nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::PassCred, &true)?;
    Ok(s)
}

/// Receives one datagram from a socket made by [`claim`] without waiting: its length and the
/// sender's uid (tunnel-pods run as uid 0; abstract names have no permissions, so any process
/// of the network namespace can send to one, and the uid is how a stranger is told apart).
pub fn recv_handover(
    fd: std::os::fd::BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, Option<u32>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixCredentials, recvmsg};
    use std::os::fd::AsRawFd;
    let mut iov = [io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!(UnixCredentials);
    let msg = recvmsg::<()>(
        fd.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let uid = msg.cmsgs().ok().and_then(|mut c| {
        c.find_map(|m| match m {
            ControlMessageOwned::ScmCredentials(cred) => Some(cred.uid()),
            _ => None,
        })
    });
    Ok((msg.bytes, uid))
}

/// What came of offering a handover.
#[derive(Debug, PartialEq, Eq)]
pub enum Offered {
    Sent,
    /// Nobody is bound to the name: ask the rule for the next one.
    NobodyThere,
    /// The receiver's queue is full, or another error.
    Failed(io::ErrorKind),
}

/// The sending half: an unbound unix datagram socket.
#[derive(Debug)]
pub struct Sender {
    socket: UnixDatagram,
    local: Ipv4Addr,
}

impl Sender {
    pub fn new(local: Ipv4Addr) -> io::Result<Sender> {
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(Sender { socket, local })
    }

    /// Sends `datagram` (header and payload) to the pod bound to `name`, never waiting.
    pub fn offer(&self, name: Name, datagram: &[u8]) -> Offered {
        let addr = match UnixAddr::from_abstract_name(name.path(self.local).as_bytes()) {
            Ok(a) => a,
            Err(e) => return Offered::Failed(e.kind()),
        };
        match self.socket.send_to_addr(datagram, &addr) {
            Ok(_) => Offered::Sent,
            // ECONNREFUSED: no socket has the name.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Offered::NobodyThere,
            Err(e) if e.raw_os_error() == Some(2) => Offered::NobodyThere,
            Err(e) => Offered::Failed(e.kind()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C1: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
    const C2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
    const LOCAL: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

    #[test]
    fn handover_deconstructs() {
        let bytes = [
            b'M', b'T', b'H', b'1', 0x11, 0x94, 198, 51, 100, 7, 0x4e, 0x21, 0, 0, 0, 0, 0xAA,
        ];
        let h = Handover::new_checked(&bytes[..]).unwrap();
        assert_eq!(h.local_port(), 4500);
        assert_eq!(h.source(), "198.51.100.7:20001".parse().unwrap());
        assert_eq!(h.payload(), &[0, 0, 0, 0, 0xAA]);
        assert_eq!(
            HandoverRepr::parse(&h),
            HandoverRepr {
                local_port: 4500,
                source: "198.51.100.7:20001".parse().unwrap()
            }
        );
    }

    #[test]
    fn handover_round_trips() {
        let repr = HandoverRepr {
            local_port: 500,
            source: "192.0.2.33:500".parse().unwrap(),
        };
        let d = repr.datagram(b"ike message");
        assert_eq!(&d[..4], b"MTH1");
        assert_eq!(d.len(), HEADER_LEN + 11);
        let h = Handover::new_checked(&d).unwrap();
        assert_eq!(HandoverRepr::parse(&h), repr);
        assert_eq!(h.payload(), b"ike message");
        // An empty payload is a valid (if useless) handover.
        assert!(Handover::new_checked(repr.datagram(&[])).is_ok());
        assert_eq!(repr.emit(&mut [0u8; 11]), None, "too short a buffer");
    }

    #[test]
    fn malformed_handovers_are_refused_without_panic() {
        let good = HandoverRepr {
            local_port: 4500,
            source: "192.0.2.1:4500".parse().unwrap(),
        }
        .datagram(b"x");
        for n in 0..HEADER_LEN {
            assert_eq!(
                Handover::new_checked(&good[..n]).err(),
                Some(HandoverError::Truncated),
                "{n} bytes"
            );
        }
        let mut bad = good.clone();
        bad[3] = b'2';
        assert_eq!(
            Handover::new_checked(&bad).err(),
            Some(HandoverError::BadMagic)
        );
        let mut bad = good.clone();
        bad[4..6].copy_from_slice(&53u16.to_be_bytes());
        assert_eq!(
            Handover::new_checked(&bad).err(),
            Some(HandoverError::BadPort)
        );
    }

    /// The rule, step by step as the shell runs it: offers in order until one is taken.
    fn walk(source: Ipv4Addr, mine: Option<Ipv4Addr>, bound: bool, held: &[Name]) -> Vec<Decision> {
        let mut tried = Vec::new();
        let mut steps = Vec::new();
        loop {
            let d = owner(source, mine, bound, &tried);
            steps.push(d);
            match d {
                Decision::HandOver(n) if !held.contains(&n) => tried.push(n),
                _ => return steps,
            }
            assert!(steps.len() < 5, "the rule does not terminate: {steps:?}");
        }
    }

    #[test]
    fn ownership_rule() {
        use Decision::*;
        let other = Ipv4Addr::new(192, 0, 2, 99);
        // From my customer: mine, whoever else exists.
        assert_eq!(walk(C1, Some(C1), true, &[]), [Mine]);
        // From another pod's customer: handed to it.
        assert_eq!(
            walk(C2, Some(C1), true, &[Name::Source(C2)]),
            [HandOver(Name::Source(C2))]
        );
        // Unknown source, a default tunnel exists: to `any`.
        assert_eq!(
            walk(other, Some(C1), true, &[Name::Any]),
            [HandOver(Name::Source(other)), HandOver(Name::Any)]
        );
        // Unknown source, no default tunnel: nobody's.
        assert_eq!(
            walk(other, Some(C1), true, &[]),
            [HandOver(Name::Source(other)), HandOver(Name::Any), Drop]
        );
        // I am the default tunnel: unknown sources are mine, named ones still go to their pod.
        assert_eq!(
            walk(other, None, true, &[]),
            [HandOver(Name::Source(other)), Mine]
        );
        assert_eq!(
            walk(C2, None, true, &[Name::Source(C2)]),
            [HandOver(Name::Source(C2))]
        );
        // A pod that lost its name to another owns nothing: its customer's strays go to the
        // holder, and a second default hands to the first.
        assert_eq!(
            walk(C1, Some(C1), false, &[Name::Source(C1)]),
            [HandOver(Name::Source(C1))]
        );
        assert_eq!(
            walk(other, None, false, &[Name::Any]),
            [HandOver(Name::Source(other)), HandOver(Name::Any)]
        );
        assert_eq!(
            walk(other, None, false, &[]),
            [HandOver(Name::Source(other)), HandOver(Name::Any), Drop]
        );
    }

    #[test]
    fn the_rule_never_offers_a_bound_pod_its_own_name() {
        let sources = [C1, C2, Ipv4Addr::new(192, 0, 2, 99)];
        for mine in [None, Some(C1), Some(C2)] {
            for &source in &sources {
                let own = Name::of(mine);
                for step in walk(source, mine, true, &[]) {
                    assert_ne!(step, Decision::HandOver(own), "{source} {mine:?}");
                }
            }
        }
    }

    #[test]
    fn names() {
        assert_eq!(
            Name::of(Some(C1)).path(LOCAL),
            "magictunnel/ike/203.0.113.10/198.51.100.1"
        );
        assert_eq!(
            Name::of(None).path(LOCAL),
            "magictunnel/ike/203.0.113.10/any"
        );
    }

    #[test]
    fn claims_are_exclusive_and_handovers_arrive() {
        // A name no other test or process uses: the pid in the local address.
        let pid = std::process::id();
        let local = Ipv4Addr::from(0x7f00_0000 | (pid & 0xffff));
        let name = Name::Source(C2);
        let first = claim(local, name).unwrap();
        let second = claim(local, name).unwrap_err();
        assert_eq!(second.kind(), io::ErrorKind::AddrInUse);
        let sender = Sender::new(local).unwrap();
        let d = HandoverRepr {
            local_port: 500,
            source: SocketAddrV4::new(C2, 500),
        }
        .datagram(b"hello");
        assert_eq!(sender.offer(name, &d), Offered::Sent);
        let mut buf = [0u8; 64];
        use std::os::fd::AsFd;
        let (n, uid) = recv_handover(first.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], &d[..]);
        use std::os::unix::fs::MetadataExt;
        let me = std::fs::metadata("/proc/self").unwrap().uid();
        assert_eq!(uid, Some(me), "the sender's uid");
        assert_eq!(sender.offer(Name::Any, &d), Offered::NobodyThere);
        drop(first);
        // Released with the socket: the next pod can take it.
        assert!(claim(local, name).is_ok());
    }
}
