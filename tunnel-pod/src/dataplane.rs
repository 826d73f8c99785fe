//! The data path: blocking threads around the sans-IO encapsulation in `encap` (GRE or ESP in
//! UDP), one for ingress and one per TUN queue for egress (see `run`).
//!
//! Threads rather than async tasks: each direction is a tight read → transform → write loop on
//! one device pair, and blocking syscalls on a dedicated core cost less than readiness polling.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use socket2::Socket;
use tokio::sync::mpsc;

use crate::drops::DropReason;
use crate::encap::{Encap, PeerCell, Received, TAILROOM};
use crate::gre::HEADROOM;
use crate::health::{self, ProbeSpec};
use crate::io;
use crate::metrics::Metrics;
use crate::offload::{
    Coalescer, F_NEEDS_CSUM, GSO_NONE, GSO_TCPV4, GSO_TCPV6, VNET_HDR_LEN, VnetHdr,
    complete_checksum, segment,
};
use crate::packet_tx::{GreTx, PacketTx};
use crate::tun_queue::{Tun, TunQueue};
use crate::udp_offload;
use crate::wire::{gre::ETHERTYPE_IPV4, ipv4};

/// Bytes read from the TUN device at once: a virtio header and a packet of up to 64 KiB.
const TUN_BUF_LEN: usize = VNET_HDR_LEN + 65_536;
/// One wire packet's slot in a batch: GRE headroom plus any MTU-sized packet, rounded up.
const SLOT: usize = 2048;
/// A TSO packet of 64 KiB cut at the smallest MSS Linux sends with (88 bytes, `TCP_MIN_SND_MSS`,
/// should a peer advertise something that small) fits in this many segments.
const MAX_SEGMENTS: usize = 65_536 / 88 + 1;
/// Received datagrams handled per batch before the coalesced packet is flushed to the TUN.
const RX_BATCH: usize = 64;
/// Receive slot: larger than any datagram an MTU-sized inner packet makes; a datagram filling
/// it whole is taken as truncated and dropped as oversized.
const RX_SLOT: usize = 4096;
/// With UDP GRO: datagrams per batch, each slot large enough for what the kernel coalesces
/// (at most 64 KiB of UDP payload) after `RX_OFFSET`.
pub const GRO_BATCH: usize = 8;
pub const GRO_SLOT: usize = RX_OFFSET + 65_536;
/// Datagrams are received this far into their slot, so that even an ESP packet with no IV
/// leaves room for the virtio header before its inner packet.
pub const RX_OFFSET: usize = 16;
/// The longest datagram the data socket takes on port 4500; the IKE task holds datagrams for
/// 4500 that reach it by other ways (lobby, handover) to the same limit.
pub const MAX_DATAGRAM: usize = RX_SLOT - RX_OFFSET - 1;

/// Everything both directions share.
pub struct Path {
    pub encap: Encap,
    /// Opened with `IFF_VNET_HDR`: every packet is preceded by a virtio-net header. Writes
    /// (`tun.send`) go on the queue of the packet's flow.
    pub tun: Tun,
    /// GRE: raw, connected to the customer. ESP: UDP 4500 with `SO_REUSEPORT`, connected to
    /// the peer once known (`connected`), so the kernel hands this pod its peer's datagrams
    /// among the other tunnel-pods on the same endpoint (see `lobby`). Replaced whole when the
    /// peer changes (`Path::connect`).
    pub socket: ArcSwap<Socket>,
    /// The peer the UDP data socket is connected to (unset: not connected, it then receives
    /// strays for any pod of the endpoint).
    pub connected: PeerCell,
    pub metrics: Arc<Metrics>,
    pub local_endpoint: Ipv4Addr,
    /// The customer's side of the tunnel subnet, where the peer's reply-style probes are headed.
    pub peer_address: Option<Ipv4Addr>,
    pub probes: Option<ProbeSpec>,
    /// Coalesce received TCP segments into large packets for the TUN device (GRO).
    pub coalesce: bool,
    /// IKE messages that arrive on the ESP socket (port 4500) go here, to the IKE task.
    pub ike: Option<mpsc::Sender<IkeDatagram>>,
    /// ESP: send with UDP GSO and receive with UDP GRO (`--no-udp-offload` turns it off).
    pub udp_offload: bool,
    /// GRE with `--gre-tx packet`: the AF_PACKET ring TSO bursts go through when resolved.
    pub gre_tx: Option<Arc<GreTx>>,
}

/// One egress worker's buffers for a TSO packet from the TUN device: its segments, each
/// encapsulated in a slot of its own, their ranges, and the sender's message headers. All are
/// allocated once, so a burst allocates nothing.
pub struct Burst {
    segments: Vec<u8>,
    lens: Vec<usize>,
    frames: Vec<Range<usize>>,
    inner_bytes: usize,
    sender: udp_offload::Sender,
}

impl Burst {
    /// `gso`: send with UDP GSO (ESP) while the kernel takes it; else `sendmmsg`.
    pub fn new(gso: bool) -> Self {
        Burst {
            segments: vec![0; MAX_SEGMENTS * SLOT],
            lens: Vec::with_capacity(MAX_SEGMENTS),
            frames: Vec::with_capacity(MAX_SEGMENTS),
            inner_bytes: 0,
            sender: udp_offload::Sender::new(MAX_SEGMENTS, gso),
        }
    }

    /// Cuts the TSO `packet` into segments of `gso_size` payload bytes and encapsulates each
    /// in its slot, counting what was dropped in `metrics`; false when the packet cannot be cut.
    ///
    /// No padding beyond RFC 4303 §2.4's is needed for UDP GSO: the segments of one TSO packet
    /// all carry `gso_size` bytes but the last, which carries fewer, and an ESP packet's length
    /// is a non-decreasing function of its inner length alone (padding to the cipher's block or
    /// 4-byte alignment: 4 for GCM, 16 for CBC; fixed IV and ICV lengths; no TFC padding is
    /// added). So the datagrams are equal but the last, which is no longer, and a GSO call
    /// takes a shorter last segment. Where they differ otherwise (an SA with another suite for
    /// some packets), `udp_offload::gso_run` starts a new call.
    pub fn seal(
        &mut self,
        encap: &Encap,
        packet: &[u8],
        gso_size: usize,
        metrics: &Metrics,
    ) -> bool {
        let segmented = segment(
            packet,
            gso_size,
            &mut self.segments,
            SLOT,
            HEADROOM,
            &mut self.lens,
        );
        self.frames.clear();
        self.inner_bytes = 0;
        if segmented.is_err() {
            metrics.dropped(DropReason::BadOffload);
            return false;
        }
        for (i, (slot, &len)) in self
            .segments
            .chunks_exact_mut(SLOT)
            .zip(&self.lens)
            .enumerate()
        {
            match encap.encap(slot, len) {
                Ok(range) => {
                    self.frames
                        .push(i * SLOT + range.start..i * SLOT + range.end);
                    self.inner_bytes += len;
                }
                Err(d) => metrics.dropped(d),
            }
        }
        true
    }

    /// The datagrams `seal` made.
    pub fn frames(&self) -> impl ExactSizeIterator<Item = &[u8]> {
        self.frames
            .iter()
            .map(|r| self.segments.get(r.clone()).unwrap_or_default())
    }

    /// Sends what `seal` made to `to` on `socket`, counting what went and what was refused in
    /// `metrics`. Returns the error when this burst found that the kernel refuses UDP GSO (the
    /// datagrams were then sent one per message, as every later burst will be).
    pub fn send(
        &mut self,
        socket: &Socket,
        to: Result<Option<SocketAddrV4>, DropReason>,
        metrics: &Metrics,
    ) -> Option<std::io::Error> {
        let Ok(to) = to else {
            metrics.dropped_n(DropReason::NoSa, self.frames.len() as u64);
            return None;
        };
        let sent = self.sender.send(socket, &self.segments, &self.frames, to);
        metrics.dropped_n(DropReason::SendError, sent.refused as u64);
        metrics.udp_gso_segments.inc_by(sent.gso_segments as u64);
        metrics.udp_gso_sends.inc_by(sent.gso_calls as u64);
        self.count_sent(sent.refused, metrics);
        sent.gso_refused
    }

    /// Counts the burst as sent, but for `refused` datagrams (already counted as drops).
    pub fn count_sent(&self, refused: usize, metrics: &Metrics) {
        let count = self.frames.len();
        let delivered = count - refused.min(count);
        // Bytes are approximate when some were refused: the average size is used.
        let bytes = self.inner_bytes * delivered / count.max(1);
        metrics.egress.count_n(delivered, bytes);
    }
}

/// A datagram for the IKE task from the data path's socket: an IKE message, or ESP of an SPI
/// we do not know from a source other than the connected peer (while the socket is not
/// connected it gets other pods' strays too).
#[derive(Debug)]
pub struct IkeDatagram {
    pub from: std::net::SocketAddrV4,
    /// The UDP payload exactly as received (the non-ESP marker included).
    pub payload: Vec<u8>,
    /// Not from the peer the socket is connected to: subject to the ownership rule.
    pub stray: bool,
}

impl Path {
    /// TUN → GRE or ESP, until the TUN device fails. `queue` is the TUN queue this worker
    /// reads (each egress worker has its own, one of `self.tun.queues()`).
    pub fn run_egress(&self, queue: &TunQueue) -> std::io::Error {
        // Read at an offset so that the virtio header plus this leaves HEADROOM before the packet.
        const AT: usize = HEADROOM - VNET_HDR_LEN;
        let mut buf = vec![0u8; AT + TUN_BUF_LEN + TAILROOM];
        let gso = self.udp_offload && self.encap.as_esp().is_some();
        let mut burst = Burst::new(gso);
        loop {
            let n = match queue.recv(&mut buf[AT..]) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return e,
            };
            let Some(hdr) = VnetHdr::parse(&buf[AT..AT + n.min(VNET_HDR_LEN)]) else {
                self.metrics.dropped(DropReason::Truncated);
                continue;
            };
            let len = n - VNET_HDR_LEN;
            match hdr.gso_type {
                GSO_NONE => {
                    let packet = &mut buf[HEADROOM..AT + n];
                    if hdr.flags & F_NEEDS_CSUM != 0 && complete_checksum(packet, &hdr).is_err() {
                        self.metrics.dropped(DropReason::BadOffload);
                        continue;
                    }
                    self.encap_and_send(&mut buf, len);
                }
                GSO_TCPV4 | GSO_TCPV6 => {
                    let packet = &buf[HEADROOM..AT + n];
                    let gso_size = usize::from(hdr.gso_size);
                    if !burst.seal(&self.encap, packet, gso_size, &self.metrics) {
                        continue;
                    }
                    let ring = self.gre_tx.as_ref().and_then(|t| t.ring().map(|r| (t, r)));
                    if let Some((tx, ring)) = ring {
                        let refused = self.send_on_ring(tx, &ring, burst.frames());
                        burst.count_sent(refused, &self.metrics);
                        continue;
                    }
                    let refused =
                        burst.send(&self.socket.load(), self.destination(), &self.metrics);
                    if let Some(e) = refused {
                        self.metrics.udp_offload_send.set(0);
                        tracing::warn!(error = %e, "the kernel refuses UDP GSO; sending one datagram per message from now on");
                    }
                }
                _ => self.metrics.dropped(DropReason::BadOffload),
            }
        }
    }

    /// GRE: one burst through the AF_PACKET ring; returns how many datagrams did not go. A
    /// failed ring is given up (raw socket until `keep_resolved` opens a new one).
    fn send_on_ring<'a>(
        &self,
        tx: &GreTx,
        ring: &PacketTx,
        frames: impl ExactSizeIterator<Item = &'a [u8]>,
    ) -> usize {
        let count = frames.len();
        match ring.send_batch(frames) {
            Ok(done) => {
                self.metrics
                    .dropped_n(DropReason::TxRingFull, done.ring_full as u64);
                self.metrics
                    .dropped_n(DropReason::SendError, done.refused as u64);
                count - done.sent
            }
            Err(e) => {
                tx.failed(&e);
                self.metrics.dropped_n(DropReason::SendError, count as u64);
                count
            }
        }
    }

    fn encap_and_send(&self, frame: &mut [u8], len: usize) {
        match self.encap.encap(frame, len) {
            Ok(range) => self.send(frame.get(range).unwrap_or_default(), len),
            Err(d) => self.metrics.dropped(d),
        }
    }

    /// GRE or ESP → TUN, until the socket fails. Returns of our own probes go to `returns`.
    pub fn run_ingress(&self, returns: mpsc::Sender<(u16, Instant)>) -> std::io::Error {
        // A slot takes what the kernel coalesced (up to 64 KiB): ESP with UDP GRO, and GRE,
        // which the host's GRO coalesces on its own (see `offload::kernel_coalesced`). Else
        // (ESP without GRO) one datagram.
        let (batch, slot, max_piece) = match (self.encap.as_esp(), self.udp_offload) {
            (Some(_), true) => (GRO_BATCH, GRO_SLOT, MAX_DATAGRAM),
            (Some(_), false) => (RX_BATCH, RX_SLOT, MAX_DATAGRAM),
            (None, _) => (RX_BATCH, GRO_SLOT, GRO_SLOT - RX_OFFSET - 1),
        };
        let mut slots = vec![0u8; batch * slot];
        let mut received = [udp_offload::Received::default(); RX_BATCH];
        let received = &mut received[..batch];
        let mut receiver = udp_offload::Receiver::new(batch);
        let mut gro = Coalescer::default();
        let mut socket = self.socket.load_full();
        loop {
            // The socket is replaced when the peer changes (`connect`): the old one is shut
            // down, which ends a wait on it. Datagrams already queued on it are read before
            // this thread moves to the new one (a shut-down socket answers at once: its queue,
            // then an empty read), else a request that arrived just before the switch would be
            // lost and cost the peer a retransmission. (The end-of-file leaves its header's
            // msg_namelen at 0: `Receiver` resets it before every call, else the next datagram
            // in that slot would carry the previous one's source, a new peer's first IKE
            // message seen as from the old peer.)
            let stale = !Arc::ptr_eq(&socket, &self.socket.load());
            // Block for the first datagram, then take what is already queued: one syscall.
            let count = match receiver.recv(&*socket, &mut slots, slot, RX_OFFSET, received) {
                Ok(count) => count,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if io::is_transient(&e) => {
                    // An ICMP error from the peer's side (e.g. protocol unreachable while its
                    // endpoint restarts), reported on the connected socket.
                    self.metrics.socket_errors.inc();
                    continue;
                }
                Err(e) => return e,
            };
            let replaced = stale || !Arc::ptr_eq(&socket, &self.socket.load());
            let mut drained = count == 0;
            for (i, r) in received.iter().enumerate().take(count) {
                if replaced && r.len == 0 {
                    // The end-of-file of the shut-down socket, not a datagram.
                    drained = true;
                    continue;
                }
                if r.truncated {
                    self.metrics.dropped(DropReason::Oversized);
                    continue;
                }
                let message = &mut slots[i * slot..(i + 1) * slot];
                if let Some(size) = r.gso_size {
                    self.metrics
                        .udp_gro_segments
                        .inc_by(r.len.div_ceil(usize::from(size)) as u64);
                    self.metrics.udp_gro_datagrams.inc();
                }
                for piece in udp_offload::split(r.len, r.gso_size) {
                    // Each piece in place, with the RX_OFFSET bytes before it as its room in
                    // front (for a piece after the first: the end of the previous one, already
                    // handled; the coalescer copies what it keeps). A piece in the middle ends
                    // where the next begins; the last keeps the rest of the slot.
                    let end = if piece.end == r.len {
                        message.len()
                    } else {
                        RX_OFFSET + piece.end
                    };
                    let n = piece.len();
                    if n > max_piece {
                        self.metrics.dropped(DropReason::Oversized);
                        continue;
                    }
                    let Some(piece_slot) = message.get_mut(piece.start..end) else {
                        continue;
                    };
                    self.receive(piece_slot, n, r.from, &mut gro, &returns);
                }
            }
            self.flush(&mut gro);
            if stale && drained {
                socket = self.socket.load_full();
            }
        }
    }

    /// Decapsulates one datagram, `n` bytes at `slot[RX_OFFSET..]` (ESP: at most `MAX_DATAGRAM`),
    /// and passes its inner packet on: to the prober, back into the tunnel, into the
    /// coalescer, or straight to the TUN device.
    fn receive(
        &self,
        slot: &mut [u8],
        n: usize,
        src: Option<std::net::SocketAddrV4>,
        gro: &mut Coalescer,
        returns: &mpsc::Sender<(u16, Instant)>,
    ) {
        let Some(datagram) = slot.get_mut(RX_OFFSET..RX_OFFSET + n) else {
            self.metrics.dropped(DropReason::Oversized);
            return;
        };
        let inner = match self.encap.decap(datagram) {
            Ok(Received::Inner(mut i)) => {
                i.range = i.range.start + RX_OFFSET..i.range.end + RX_OFFSET;
                i
            }
            Ok(Received::Ike(_)) => {
                self.pass_to_ike(datagram, src);
                return;
            }
            Err(DropReason::UnknownSpi) if self.ike.is_some() && self.connected.get() != src => {
                // Not from our peer (unconnected, this socket also gets other pods' strays):
                // the IKE task decides.
                self.pass_to_ike(datagram, src);
                return;
            }
            Err(d) => {
                self.metrics.dropped(d);
                return;
            }
        };
        if inner.ethertype == ETHERTYPE_IPV4 && self.intercept(slot, inner.range.clone(), returns) {
            return;
        }
        if let Some(hdr) = inner.coalesced {
            // Already one TSO packet (the host's GRO): up as it is, after what came before it.
            // Counted as the `gso_size` segments it stands for (the sender's own are unknown).
            self.flush(gro);
            self.metrics.gre_gro_packets.inc();
            let len = inner.range.len();
            let payload = len.saturating_sub(usize::from(hdr.hdr_len));
            let segments = match usize::from(hdr.gso_size) {
                0 => 1,
                size => payload.div_ceil(size),
            };
            if self.write_alone(slot, inner.range, hdr) {
                self.metrics.ingress.count_n(segments, len);
            }
            return;
        }
        let packet = &slot[inner.range.clone()];
        if self.coalesce {
            if gro.push(packet) {
                self.metrics.ingress.count(packet.len());
                return;
            }
            self.flush(gro);
            if gro.push(packet) {
                self.metrics.ingress.count(packet.len());
                return;
            }
        }
        let len = inner.range.len();
        if self.write_alone(slot, inner.range, VnetHdr::default()) {
            self.metrics.ingress.count(len);
        }
    }

    /// Writes the packet at `slot[range]` to the TUN device on its own, with `hdr` written
    /// into the room the outer headers leave (outer IPv4 + GRE ≥ 24 bytes, ESP more); false
    /// when it did not go (a refused write is counted as a drop).
    fn write_alone(&self, slot: &mut [u8], range: Range<usize>, hdr: VnetHdr) -> bool {
        let Some(frame) = range
            .start
            .checked_sub(VNET_HDR_LEN)
            .and_then(|start| slot.get_mut(start..range.end))
        else {
            return false;
        };
        hdr.emit(frame);
        let written = self.tun.send(frame).is_ok();
        if !written {
            self.metrics.dropped(DropReason::TunWriteError);
        }
        written
    }

    fn pass_to_ike(&self, payload: &[u8], src: Option<std::net::SocketAddrV4>) {
        let (Some(ike), Some(from)) = (&self.ike, src) else {
            self.metrics.dropped(DropReason::NoSa);
            return;
        };
        let datagram = IkeDatagram {
            from,
            payload: payload.to_vec(),
            stray: self.connected.get() != Some(from),
        };
        if ike.try_send(datagram).is_err() {
            self.metrics.dropped(DropReason::IkeBacklog);
        }
    }

    fn flush(&self, gro: &mut Coalescer) {
        let segments = gro.segments();
        let Some(frame) = gro.finish() else { return };
        if self.tun.send(frame).is_err() {
            self.metrics.dropped(DropReason::TunWriteError);
        } else if segments > 1 {
            self.metrics.tun_gro_packets.inc();
            self.metrics.tun_gro_segments.inc_by(segments as u64);
        }
    }

    /// Handles the inner IPv4 packets that are for the tunnel endpoint itself rather than the
    /// host: returns of our probes, the peer's probes, GRE keepalives. True when consumed.
    fn intercept(
        &self,
        buf: &mut [u8],
        range: std::ops::Range<usize>,
        returns: &mpsc::Sender<(u16, Instant)>,
    ) -> bool {
        let Some(packet) = buf.get(range.clone()) else {
            return false;
        };
        // Only ICMP (probes) and GRE (keepalives) can be ours: one look at the protocol lets
        // every data packet through without further parsing.
        let protocol = match ipv4::Packet::new_checked(packet) {
            Ok(ip) => ip.protocol(),
            Err(_) => return false,
        };
        if protocol == ipv4::PROTO_GRE {
            return self.reflect_keepalive(packet);
        }
        if protocol != ipv4::PROTO_ICMP {
            return false;
        }
        if let Some(seq) = self.probes.as_ref().and_then(|p| p.match_return(packet)) {
            // A full channel means the prober is far behind; losing a return then is harmless.
            let _ = returns.try_send((seq, Instant::now()));
            return true;
        }
        if self
            .peer_address
            .is_some_and(|peer| health::is_peer_probe(packet, peer))
        {
            // Route it back as the customer's router would: the same packet, through the tunnel,
            // in the room the received outer headers leave (the same size as ours).
            let len = range.len();
            if let Ok(out) = self.encap.encap_at(buf, range) {
                self.send(buf.get(out).unwrap_or_default(), len);
                self.metrics.probes_reflected.inc();
            }
            return true;
        }
        false
    }

    /// RFC 2784 keepalive (Cisco style): the inner packet is a GRE datagram addressed back to
    /// the sender; the tunnel's job is to send it there. The host cannot, since its source is
    /// our own address (a martian on the TUN). True when `packet` was one.
    fn reflect_keepalive(&self, packet: &[u8]) -> bool {
        let Some(keepalive) = self
            .encap
            .as_gre()
            .and_then(|g| keepalive(packet, self.local_endpoint, g.customer))
        else {
            return false;
        };
        if io::send(&self.socket.load(), keepalive, None).is_ok() {
            self.metrics.keepalives_reflected.inc();
        }
        true
    }

    /// Where `encap`'s output goes: `None` (a plain send) for GRE and for ESP to the peer the
    /// socket is connected to, which spares the kernel a route lookup per packet.
    pub fn destination(&self) -> Result<Option<SocketAddrV4>, DropReason> {
        let to = self.encap.destination()?;
        Ok(to.filter(|&to| self.connected.get() != Some(to)))
    }

    /// The ESP peer moved or became known (authenticated news from IKE, or the configuration):
    /// ESP follows, and the data socket is (re-)connected to it, so that the kernel hands this
    /// pod that 4-tuple. A failed connect leaves the socket as it was: sends then carry the
    /// address.
    pub fn set_peer(&self, peer: SocketAddrV4) {
        if let Some(esp) = self.encap.as_esp() {
            esp.set_peer(peer);
        }
        self.connect(peer);
    }

    /// Connects the data socket to `peer` (the configured customer at start, before ESP has a
    /// peer), unless it already is. A connected socket is replaced by a new one bound and
    /// connected to `peer`, not re-connected: since Linux 6.13 connected UDP sockets are also
    /// looked up by a 4-tuple hash ("hash4") that a second `connect()` does not always update
    /// (the kernel's own note says so), and measured here on 6.18 the new peer's datagrams then
    /// went to the reuseport group's unconnected sockets. The old socket is shut down, which
    /// wakes the receive thread onto the new one. A failure leaves the old socket in place:
    /// sends then carry the address.
    pub fn connect(&self, peer: SocketAddrV4) {
        if self.connected.get() == Some(peer) {
            return;
        }
        match io::open_data_socket(self.local_endpoint, Some(peer), self.udp_offload) {
            Ok((new, gro)) => {
                self.metrics.udp_offload_receive.set(i64::from(gro));
                let old = self.socket.swap(Arc::new(new));
                self.connected.set(peer);
                let _ = old.shutdown(std::net::Shutdown::Read);
                tracing::info!(peer = %peer, "data socket connected");
            }
            Err(e) => {
                tracing::warn!(peer = %peer, error = %format!("{e:#}"), "cannot connect the data socket")
            }
        }
    }

    /// A datagram for port 4500 that reached us other than on the data socket (handed over by
    /// another pod, or on our unconnected IKE socket): opened and written to the TUN device on
    /// its own (no coalescing, no probe interception: such packets are rare).
    pub fn receive_stray(&self, payload: &[u8]) {
        let mut slot = vec![0u8; RX_OFFSET + payload.len()];
        let Some(datagram) = slot.get_mut(RX_OFFSET..) else {
            return;
        };
        datagram.copy_from_slice(payload);
        let inner = match self.encap.decap(datagram) {
            Ok(Received::Inner(i)) => i,
            Ok(Received::Ike(_)) => return,
            Err(d) => {
                self.metrics.dropped(d);
                return;
            }
        };
        let (start, end) = (inner.range.start + RX_OFFSET, inner.range.end + RX_OFFSET);
        let Some(hdr_at) = start.checked_sub(VNET_HDR_LEN) else {
            return;
        };
        let Some(frame) = slot.get_mut(hdr_at..end) else {
            return;
        };
        VnetHdr::default().emit(frame);
        match self.tun.send(frame) {
            Ok(_) => self.metrics.ingress.count(end - start),
            Err(_) => self.metrics.dropped(DropReason::TunWriteError),
        }
    }

    fn send(&self, frame: &[u8], inner_len: usize) {
        let sent = self.destination().and_then(|to| {
            io::send(&self.socket.load(), frame, to).map_err(|_| DropReason::SendError)
        });
        match sent {
            Ok(_) => self.metrics.egress.count(inner_len),
            Err(d) => self.metrics.dropped(d),
        }
    }

    /// Encapsulates and sends a packet the endpoint made itself (a probe) written at
    /// `buf[HEADROOM..HEADROOM + len]`.
    pub fn send_own(&self, buf: &mut [u8], len: usize) -> bool {
        match (self.encap.encap(buf, len), self.destination()) {
            (Ok(range), Ok(to)) => {
                io::send(&self.socket.load(), buf.get(range).unwrap_or_default(), to).is_ok()
            }
            _ => false,
        }
    }
}

/// A GRE keepalive (RFC 2784 as Cisco uses it): an inner IPv4 packet from our endpoint to the
/// customer's whose payload is itself a GRE header. Returns the whole inner packet, which is
/// exactly what to send back: the socket takes the IPv4 header as written (`IP_HDRINCL`), and
/// the checks here are what keeps a sender from making us emit anything else.
fn keepalive(packet: &[u8], local: Ipv4Addr, customer: Ipv4Addr) -> Option<&[u8]> {
    let ip = ipv4::Packet::new_checked(packet).ok()?;
    let ours =
        ip.protocol() == ipv4::PROTO_GRE && ip.src_addr() == local && ip.dst_addr() == customer;
    if !ours || ip.is_fragment() || crate::wire::gre::Packet::new_checked(ip.payload()).is_err() {
        return None;
    }
    packet.get(..usize::from(ip.total_len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_is_recognised_only_between_the_endpoints() {
        let local = Ipv4Addr::new(192, 0, 2, 1);
        let customer = Ipv4Addr::new(198, 51, 100, 2);
        // Cisco: inner IPv4 local → customer carrying a bare GRE header (protocol type 0).
        let mut p = vec![0u8; 24];
        let repr = |src, dst| ipv4::Repr {
            src,
            dst,
            protocol: ipv4::PROTO_GRE,
            ttl: 255,
            payload_len: 4,
        };
        repr(local, customer).emit(&mut p).unwrap();
        assert_eq!(
            keepalive(&p, local, customer),
            Some(&p[..]),
            "sent back whole, header included"
        );
        repr(customer, local).emit(&mut p).unwrap();
        assert_eq!(keepalive(&p, local, customer), None, "wrong direction");
        // A payload that is not GRE (here: version 1) cannot ride out as a "keepalive".
        repr(local, customer).emit(&mut p).unwrap();
        p[21] = 1;
        assert_eq!(keepalive(&p, local, customer), None);
    }
}
