//! GRE egress through an `AF_PACKET` socket with a TX ring (`TPACKET_V2`) and
//! `PACKET_QDISC_BYPASS`: the datagrams of a TSO burst are copied into ring frames behind an
//! Ethernet header, and one `send()` hands them all to the outer interface's driver.
//!
//! Why: profiled on the raw socket (`IP_HDRINCL` + `sendmmsg`), half of the sender's kernel
//! time per packet outside the receiving softirq went to the per-message syscall work, the
//! route lookup (`ip_route_output_flow`, a raw socket caches no route), netfilter, the
//! neighbour output and the qdisc. The ring skips all of them; the price is that we build the
//! link-layer header ourselves, so we need the egress interface, its MAC and the next hop's
//! MAC (`resolve`, refreshed by the caller). The frames are sent as `gre` wrote them, outer
//! IPv4 ID and header checksum included.
//!
//! Not `PACKET_VNET_HDR` with one 64 KiB GSO frame: the kernel can only GSO-segment a GRE
//! packet it built itself (`SKB_GSO_GRE` is set by the GRE tunnel driver and refused from a
//! virtio header, whose GSO types are TCPv4/TCPv6/UDP only), so each segment still needs its
//! own outer headers, which is what we write.
//!
//! Ring frames are not reused while the kernel holds them: the `tpacket` skb is marked
//! zero-copy (`skb_zcopy_set_nouarg`), so a device that keeps it (veth into another namespace)
//! copies the data first, and a frame's status turns back to available only when the kernel is
//! done with it. A frame still in use when its turn comes again is a full ring.
//!
//! What the bypass also skips, by design: netfilter OUTPUT/POSTROUTING, the qdisc, and the
//! sender's packet taps (`dev_direct_xmit` does not call them), so `tcpdump` on this host's
//! interface does not show these frames; capture at the next hop, or run `--gre-tx raw`.
//!
//! Unsafe: the ring is memory shared with the kernel (mmap), reached through raw pointers and
//! an atomic status word per frame, and the socket options have no safe wrapper in nix.
#![allow(unsafe_code)]

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use nix::libc;

/// Ethernet header: destination MAC, source MAC, EtherType.
pub const ETH_HEADER_LEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
/// One ring frame: the `tpacket2_hdr` (32 bytes, `TPACKET_ALIGN`ed) and then the frame data.
const FRAME_SIZE: usize = 2048;
const DATA_OFFSET: usize = 32;
/// The longest outer datagram a ring frame holds.
pub const MAX_DATAGRAM: usize = FRAME_SIZE - DATA_OFFSET - ETH_HEADER_LEN;
const BLOCK_SIZE: usize = 1 << 16;
/// 2 MiB of ring, 1024 frames: more than the largest burst (a 64 KiB TSO packet at the
/// smallest MSS makes 745 segments), so one burst never waits for its own frames.
const BLOCKS: usize = 32;
const FRAMES: usize = BLOCKS * BLOCK_SIZE / FRAME_SIZE;

// tpacket2_hdr.tp_status values (linux/if_packet.h).
const TP_STATUS_AVAILABLE: u32 = 0;
const TP_STATUS_SEND_REQUEST: u32 = 1;
const TP_STATUS_WRONG_FORMAT: u32 = 4;
/// `enum tpacket_versions` (linux/if_packet.h); not in the libc crate.
const TPACKET_V2: libc::c_int = 1;

/// Where outer datagrams to the customer leave this host: the interface and both MACs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub ifindex: u32,
    pub source: [u8; 6],
    pub next_hop: [u8; 6],
}

impl Link {
    /// The Ethernet header of an IPv4 frame over this link.
    pub fn ethernet_header(&self) -> [u8; ETH_HEADER_LEN] {
        let mut h = [0u8; ETH_HEADER_LEN];
        h[..6].copy_from_slice(&self.next_hop);
        h[6..12].copy_from_slice(&self.source);
        h[12..].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        h
    }
}

/// An `AF_PACKET` socket bound to one interface with its mapped TX ring.
pub struct PacketTx {
    link: Link,
    header: [u8; ETH_HEADER_LEN],
    ring: Mutex<Ring>,
}

struct Ring {
    fd: OwnedFd,
    map: *mut u8,
    /// The next frame to fill; the kernel walks the ring in the same order.
    head: usize,
}

// SAFETY: the mapping is owned by the ring and only touched under its mutex (frame data) or
// through atomics (the status word the kernel shares).
unsafe impl Send for Ring {}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: `map` is the mapping made in `open`, of exactly this length.
        unsafe { libc::munmap(self.map.cast(), BLOCKS * BLOCK_SIZE) };
    }
}

/// What one `send_batch` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub sent: usize,
    /// No free ring frame (the kernel still holds them all).
    pub ring_full: usize,
    /// Longer than a ring frame, or the kernel refused the frame.
    pub refused: usize,
}

impl PacketTx {
    /// Opens the socket and its ring on `link` (needs `NET_RAW`). Binds with protocol 0: the
    /// socket receives nothing, so it costs the receive path nothing.
    pub fn open(link: Link) -> std::io::Result<PacketTx> {
        // SAFETY: plain syscalls; every pointer passed points to a live value of the size given.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let fd = OwnedFd::from_raw_fd(fd);
            set(&fd, libc::PACKET_VERSION, TPACKET_V2)?;
            // Straight to the driver: no qdisc (and none of its queueing on a busy link).
            set(&fd, libc::PACKET_QDISC_BYPASS, 1)?;
            // A frame the kernel finds malformed is skipped (marked available), not a stop.
            set(&fd, libc::PACKET_LOSS, 1)?;
            let req = libc::tpacket_req {
                tp_block_size: BLOCK_SIZE as u32,
                tp_block_nr: BLOCKS as u32,
                tp_frame_size: FRAME_SIZE as u32,
                tp_frame_nr: FRAMES as u32,
            };
            setsockopt_raw(&fd, libc::PACKET_TX_RING, &req)?;
            let map = libc::mmap(
                std::ptr::null_mut(),
                BLOCKS * BLOCK_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            );
            if map == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error());
            }
            let ring = Ring {
                fd,
                map: map.cast(),
                head: 0,
            };
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = link.ifindex as i32;
            let rc = libc::bind(
                ring.fd.as_raw_fd(),
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(PacketTx {
                link,
                header: link.ethernet_header(),
                ring: Mutex::new(ring),
            })
        }
    }

    pub fn link(&self) -> Link {
        self.link
    }

    /// Sends outer IPv4 datagrams (as `gre` builds them for the raw socket) with one `send()`.
    /// An error means the socket is unusable (interface gone or down): the caller falls back
    /// to the raw socket and has the link resolved again; the datagrams are then lost.
    pub fn send_batch<D: AsRef<[u8]>>(
        &self,
        datagrams: impl IntoIterator<Item = D>,
    ) -> std::io::Result<Sent> {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let mut done = Sent::default();
        let mut queued = 0;
        for datagram in datagrams {
            let datagram = datagram.as_ref();
            if datagram.len() > MAX_DATAGRAM {
                done.refused += 1;
                continue;
            }
            let mut frame = ring.frame(ring.head);
            if !frame.available() && queued > 0 {
                // The ring wrapped onto frames the kernel has not sent yet: flush and look again.
                ring.flush()?;
                queued = 0;
                frame = ring.frame(ring.head);
            }
            if !frame.available() {
                done.ring_full += 1;
                continue;
            }
            frame.fill(&self.header, datagram);
            ring.head = (ring.head + 1) % FRAMES;
            queued += 1;
            done.sent += 1;
        }
        if queued > 0 {
            ring.flush()?;
        }
        Ok(done)
    }
}

impl Ring {
    fn frame(&self, index: usize) -> Frame {
        // SAFETY: index < FRAMES, so the frame lies inside the mapping.
        Frame(unsafe { self.map.add(index % FRAMES * FRAME_SIZE) })
    }

    /// Has the kernel send every frame marked for sending; does not wait for the driver.
    fn flush(&self) -> std::io::Result<()> {
        loop {
            // SAFETY: a send of no data: the kernel takes the frames from the ring.
            let rc =
                unsafe { libc::send(self.fd.as_raw_fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT) };
            if rc >= 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                // The driver's queue is full: the frames stay marked and go with the next flush.
                Some(libc::EAGAIN | libc::ENOBUFS) => return Ok(()),
                _ => return Err(e),
            }
        }
    }
}

/// One ring frame: its `tpacket2_hdr` and data.
struct Frame(*mut u8);

impl Frame {
    fn status(&self) -> &AtomicU32 {
        // SAFETY: tp_status is the frame's first, 4-byte aligned word, shared with the kernel.
        unsafe { &*self.0.cast::<AtomicU32>() }
    }

    fn available(&self) -> bool {
        match self.status().load(Ordering::Acquire) {
            TP_STATUS_AVAILABLE => true,
            // Skipped by the kernel (PACKET_LOSS): free again.
            TP_STATUS_WRONG_FORMAT => true,
            _ => false,
        }
    }

    /// Copies the frame in and hands it to the kernel (status `SEND_REQUEST`, released last).
    fn fill(&mut self, header: &[u8; ETH_HEADER_LEN], datagram: &[u8]) {
        let len = ETH_HEADER_LEN + datagram.len();
        // SAFETY: DATA_OFFSET + len ≤ FRAME_SIZE (checked by the caller against MAX_DATAGRAM);
        // the kernel does not touch an available frame.
        let data = unsafe { std::slice::from_raw_parts_mut(self.0.add(DATA_OFFSET), len) };
        data[..ETH_HEADER_LEN].copy_from_slice(header);
        data[ETH_HEADER_LEN..].copy_from_slice(datagram);
        // SAFETY: tp_len is the second word of tpacket2_hdr.
        unsafe { self.0.add(4).cast::<u32>().write_volatile(len as u32) };
        self.status()
            .store(TP_STATUS_SEND_REQUEST, Ordering::Release);
    }
}

fn set(fd: &OwnedFd, option: libc::c_int, value: libc::c_int) -> std::io::Result<()> {
    setsockopt_raw(fd, option, &value)
}

fn setsockopt_raw<T>(fd: &OwnedFd, option: libc::c_int, value: &T) -> std::io::Result<()> {
    // SAFETY: `value` points to a live T of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            option,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// How often a burst goes through the raw socket even while the ring is in use: the kernel's
/// neighbour entry for the next hop is then used, so it is confirmed (ARP) and stays valid for
/// `resolve`, which sends nothing itself.
const RAW_EVERY: Duration = Duration::from_secs(1);
/// How often the link is resolved again: a new next-hop MAC (router failover) is picked up
/// within this time.
const REFRESH: Duration = Duration::from_secs(1);

/// The egress path's choice between the ring and the raw socket, shared with the task that
/// keeps the link resolved (`keep_resolved`).
pub struct GreTx {
    ring: ArcSwapOption<PacketTx>,
    started: Instant,
    /// Milliseconds since `started` of the last burst sent through the raw socket.
    last_raw: AtomicU64,
}

impl Default for GreTx {
    fn default() -> Self {
        GreTx {
            ring: ArcSwapOption::empty(),
            started: Instant::now(),
            last_raw: AtomicU64::new(0),
        }
    }
}

impl GreTx {
    /// The ring to send the next burst on, or `None` for the raw socket: unresolved, or the
    /// raw socket's periodic turn (`RAW_EVERY`).
    pub fn ring(&self) -> Option<Arc<PacketTx>> {
        let ring = self.ring.load_full()?;
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.last_raw.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= RAW_EVERY.as_millis() as u64
            && self
                .last_raw
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return None;
        }
        Some(ring)
    }

    pub fn in_use(&self) -> Option<Link> {
        self.ring.load().as_ref().map(|r| r.link())
    }

    /// The ring failed to send: back to the raw socket until the link is resolved again.
    pub fn failed(&self, e: &std::io::Error) {
        if self.ring.swap(None).is_some() {
            tracing::warn!(error = %e, "GRE: AF_PACKET send failed; raw socket until re-resolved");
        }
    }

    fn set(&self, ring: Option<PacketTx>) {
        self.ring.store(ring.map(Arc::new));
    }
}

/// Keeps `tx` on the ring while the link to the customer resolves, on the raw socket while it
/// does not, forever (the caller aborts the task). One log line per change; `in_use` set to
/// 1 on the ring and 0 on the raw socket.
pub async fn keep_resolved(
    tx: Arc<GreTx>,
    local: Ipv4Addr,
    customer: Ipv4Addr,
    in_use: prometheus_client::metrics::gauge::Gauge,
) {
    // Closed with this task (the caller aborts it at shutdown).
    let netlink = match crate::netlink::Netlink::connect() {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "GRE: no rtnetlink for AF_PACKET; raw socket");
            return;
        }
    };
    let mut last: Option<Result<Link, Unresolved>> = None;
    loop {
        let now = resolve(netlink.handle(), local, customer).await;
        let changed = last.as_ref() != Some(&now);
        match &now {
            Ok(link) if tx.in_use() != Some(*link) => match PacketTx::open(*link) {
                Ok(ring) => {
                    tx.set(Some(ring));
                    tracing::info!(ifindex = link.ifindex, "GRE: sending through AF_PACKET");
                }
                Err(e) => {
                    tx.set(None);
                    if changed {
                        tracing::warn!(error = %e, "GRE: cannot open AF_PACKET; raw socket");
                    }
                }
            },
            Ok(_) => {}
            Err(why) => {
                tx.set(None);
                if changed {
                    tracing::warn!(reason = %why, "GRE: link not resolved; raw socket");
                }
            }
        }
        in_use.set(i64::from(tx.in_use().is_some()));
        last = Some(now);
        tokio::time::sleep(REFRESH).await;
    }
}

/// Why the link towards the customer could not be resolved (the raw socket is used meanwhile).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unresolved {
    /// No route, or the route lookup failed.
    NoRoute(String),
    /// The egress interface is not Ethernet (loopback, a tunnel, …).
    NotEthernet(u32),
    /// The next hop has no valid neighbour entry (yet: the raw socket's sends resolve it).
    NoNeighbour(Ipv4Addr),
}

impl std::fmt::Display for Unresolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unresolved::NoRoute(e) => write!(f, "no route to the customer: {e}"),
            Unresolved::NotEthernet(i) => write!(f, "egress interface {i} is not Ethernet"),
            Unresolved::NoNeighbour(a) => write!(f, "no neighbour entry for next hop {a}"),
        }
    }
}

/// Looks up how datagrams from `local` to `customer` leave: the route (interface, gateway),
/// the interface's MAC and the next hop's neighbour entry.
pub async fn resolve(
    handle: &rtnetlink::Handle,
    local: Ipv4Addr,
    customer: Ipv4Addr,
) -> Result<Link, Unresolved> {
    use futures::TryStreamExt;
    use rtnetlink::packet_route::link::{LinkAttribute, LinkLayerType};
    use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute};
    use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};

    let query = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(customer, 32)
        .source_prefix(local, 32)
        .build();
    let route = handle
        .route()
        .get(query)
        .execute()
        .try_next()
        .await
        .map_err(|e| Unresolved::NoRoute(e.to_string()))?
        .ok_or_else(|| Unresolved::NoRoute("empty answer".into()))?;
    let mut oif = None;
    let mut gateway = None;
    for attr in &route.attributes {
        match attr {
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(*g),
            _ => {}
        }
    }
    let ifindex = oif.ok_or_else(|| Unresolved::NoRoute("no output interface".into()))?;
    let next_hop = next_hop(customer, gateway);

    let link = handle
        .link()
        .get()
        .match_index(ifindex)
        .execute()
        .try_next()
        .await
        .map_err(|e| Unresolved::NoRoute(e.to_string()))?
        .ok_or(Unresolved::NotEthernet(ifindex))?;
    if link.header.link_layer_type != LinkLayerType::Ether {
        return Err(Unresolved::NotEthernet(ifindex));
    }
    let source = link
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(m) => mac(m),
            _ => None,
        })
        .ok_or(Unresolved::NotEthernet(ifindex))?;

    let mut neighbours = handle
        .neighbours()
        .get()
        .set_address_family(rtnetlink::packet_route::AddressFamily::Inet)
        .execute();
    while let Some(n) = neighbours
        .try_next()
        .await
        .map_err(|e| Unresolved::NoRoute(e.to_string()))?
    {
        if n.header.ifindex != ifindex || !usable(n.header.state) {
            continue;
        }
        let is_next_hop = n.attributes.iter().any(
            |a| matches!(a, NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) if *d == next_hop),
        );
        let lladdr = n.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::LinkLayerAddress(m) => mac(m),
            _ => None,
        });
        if let (true, Some(next_hop)) = (is_next_hop, lladdr) {
            return Ok(Link {
                ifindex,
                source,
                next_hop,
            });
        }
    }
    Err(Unresolved::NoNeighbour(next_hop))
}

/// The neighbour to send to: the route's gateway, or the customer itself when on-link.
fn next_hop(customer: Ipv4Addr, gateway: Option<Ipv4Addr>) -> Ipv4Addr {
    gateway.unwrap_or(customer)
}

/// Neighbour states whose link-layer address may be used (`NUD_VALID`); a stale entry is still
/// right in nearly every case, and the raw socket's periodic sends get it confirmed.
fn usable(state: rtnetlink::packet_route::neighbour::NeighbourState) -> bool {
    use rtnetlink::packet_route::neighbour::NeighbourState as S;
    matches!(
        state,
        S::Reachable | S::Stale | S::Delay | S::Probe | S::Permanent | S::Noarp
    )
}

fn mac(bytes: &[u8]) -> Option<[u8; 6]> {
    let m: [u8; 6] = bytes.try_into().ok()?;
    (m != [0; 6]).then_some(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv4;

    const LINK: Link = Link {
        ifindex: 7,
        source: [0x02, 0, 0, 0, 0, 0x01],
        next_hop: [0x02, 0, 0, 0, 0, 0x02],
    };

    #[test]
    fn ethernet_header_is_destination_source_ipv4() {
        assert_eq!(
            LINK.ethernet_header(),
            [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]
        );
    }

    fn datagram() -> Vec<u8> {
        let mut d = vec![0u8; 20 + 8];
        ipv4::Repr {
            src: Ipv4Addr::new(192, 0, 2, 1),
            dst: Ipv4Addr::new(198, 51, 100, 2),
            protocol: ipv4::PROTO_GRE,
            ttl: 64,
            payload_len: 8,
        }
        .emit(&mut d)
        .unwrap();
        d
    }

    #[test]
    fn next_hop_is_the_gateway_else_the_customer() {
        let c = Ipv4Addr::new(198, 51, 100, 2);
        let g = Ipv4Addr::new(192, 0, 2, 254);
        assert_eq!(next_hop(c, Some(g)), g);
        assert_eq!(next_hop(c, None), c);
    }

    #[test]
    fn only_valid_neighbour_states_and_real_macs_are_used() {
        use rtnetlink::packet_route::neighbour::NeighbourState as S;
        assert!(usable(S::Reachable) && usable(S::Stale) && usable(S::Permanent));
        assert!(!usable(S::Incomplete) && !usable(S::Failed) && !usable(S::None));
        assert_eq!(mac(&[0; 6]), None);
        assert_eq!(mac(&[1, 2, 3]), None);
        assert_eq!(mac(&[1, 2, 3, 4, 5, 6]), Some([1, 2, 3, 4, 5, 6]));
    }

    /// The ring against a real interface (loopback is Ethernet-framed, ARPHRD_LOOPBACK): needs
    /// NET_RAW, so it is skipped when the socket cannot be opened. Fills more frames than the
    /// ring holds, so the wrap-around and the status hand-back are exercised.
    #[test]
    fn ring_sends_more_than_it_holds() {
        let tx = match PacketTx::open(Link { ifindex: 1, ..LINK }) {
            Ok(tx) => tx,
            Err(e) => {
                eprintln!("skipped: cannot open AF_PACKET ({e})");
                return;
            }
        };
        let d = datagram();
        let batch: Vec<&[u8]> = vec![&d[..]; 700];
        let mut sent = 0;
        for _ in 0..4 {
            let r = tx.send_batch(&batch).unwrap();
            assert_eq!(r.refused, 0);
            sent += r.sent;
            if r.ring_full > 0 {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        assert!(sent > FRAMES, "only {sent} sent through a ring of {FRAMES}");
        let big = vec![0u8; MAX_DATAGRAM + 1];
        assert_eq!(tx.send_batch([&big[..]]).unwrap().refused, 1);
    }
}
