//! The ESP hot path allocates nothing per burst once warmed up: a TSO packet is segmented,
//! sealed and sent (UDP GSO, and `sendmmsg`) over a real loopback socket, received in a batch
//! (UDP GRO), split and opened, under a global allocator that counts this thread's
//! allocations. `cargo test -p magictunnel-tunnel-pod --test alloc_free`
// A counting allocator is the one way to see allocations: its impl needs unsafe.
#![allow(unsafe_code)]
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use socket2::{Domain, Protocol, Socket, Type};
use tunnel_pod::config::{EspEncryption, Secret};
use tunnel_pod::dataplane::{Burst, GRO_BATCH, GRO_SLOT, RX_OFFSET};
use tunnel_pod::encap::{Encap, Esp, Received};
use tunnel_pod::esp::sa::{Inbound, Outbound, SaLifetime, SaParams};
use tunnel_pod::metrics::Metrics;
use tunnel_pod::udp_offload::{self, Receiver};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Only the measuring thread counts: the test harness allocates on its own threads.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards to the system allocator unchanged; counting touches no allocation.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const MSS: usize = 1360;
const PAYLOAD: usize = 40 * MSS - 100;
const SEGMENTS: usize = PAYLOAD.div_ceil(MSS);

fn params() -> SaParams {
    SaParams {
        spi: 0x1001,
        encryption: EspEncryption::AesGcm16_256,
        integrity: None,
        encryption_key: Secret::new(vec![7; 36]),
        integrity_key: None,
        lifetime: SaLifetime::default(),
        traffic_selectors: Default::default(),
    }
}

/// An ESP tunnel whose outbound SA is its own inbound one: what it sends, it can open.
fn encap() -> Encap {
    let esp = Esp::new(1400, None);
    esp.activate_outbound(Arc::new(Outbound::new(params()).unwrap()));
    esp.install_inbound(Inbound::new(params(), Some(1024)).unwrap());
    Encap::Esp(Box::new(esp))
}

/// An IPv4/TCP packet as a TUN device with TSO hands it over: one header, PAYLOAD bytes.
fn tso_packet() -> Vec<u8> {
    let len = 40 + PAYLOAD;
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&[10, 0, 0, 2]);
    p[20..22].copy_from_slice(&1234u16.to_be_bytes());
    p[22..24].copy_from_slice(&5201u16.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = 0x10;
    p
}

fn udp_socket() -> (Socket, SocketAddrV4) {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    s.bind(&SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0).into())
        .unwrap();
    s.set_recv_buffer_size(8 << 20).unwrap();
    let addr = s.local_addr().unwrap().as_socket_ipv4().unwrap();
    (s, addr)
}

/// Everything one burst takes, allocated once.
struct Rig {
    encap: Encap,
    metrics: Metrics,
    tx: Socket,
    rx: Socket,
    to: SocketAddrV4,
    packet: Vec<u8>,
    burst: Burst,
    receiver: Receiver,
    slots: Vec<u8>,
    received: [udp_offload::Received; GRO_BATCH],
}

impl Rig {
    fn new(gso: bool) -> Rig {
        let (tx, _) = udp_socket();
        let (rx, to) = udp_socket();
        udp_offload::enable_gro(&rx).unwrap();
        Rig {
            encap: encap(),
            metrics: Metrics::default(),
            tx,
            rx,
            to,
            packet: tso_packet(),
            burst: Burst::new(gso),
            receiver: Receiver::new(GRO_BATCH),
            slots: vec![0; GRO_BATCH * GRO_SLOT],
            received: [udp_offload::Received::default(); GRO_BATCH],
        }
    }

    /// One TSO packet out, and every datagram it became back in and opened: how many opened.
    fn burst(&mut self) -> usize {
        assert!(
            self.burst
                .seal(&self.encap, &self.packet, MSS, &self.metrics)
        );
        let refused = self.burst.send(&self.tx, Ok(Some(self.to)), &self.metrics);
        assert!(refused.is_none(), "{refused:?}");
        let mut opened = 0;
        let mut datagrams = 0;
        while datagrams < SEGMENTS {
            let n = self
                .receiver
                .recv(
                    &self.rx,
                    &mut self.slots,
                    GRO_SLOT,
                    RX_OFFSET,
                    &mut self.received,
                )
                .unwrap();
            for (i, r) in self.received.iter().enumerate().take(n) {
                let message = &mut self.slots[i * GRO_SLOT..(i + 1) * GRO_SLOT];
                for piece in udp_offload::split(r.len, r.gso_size) {
                    datagrams += 1;
                    let at = RX_OFFSET + piece.start..RX_OFFSET + piece.end;
                    if let Ok(Received::Inner(_)) = self.encap.decap(&mut message[at]) {
                        opened += 1;
                    }
                }
            }
        }
        opened
    }
}

#[test]
fn a_burst_allocates_nothing_after_warm_up() {
    for gso in [true, false] {
        let mut rig = Rig::new(gso);
        for _ in 0..3 {
            assert_eq!(rig.burst(), SEGMENTS, "gso {gso}: warm-up");
        }
        ALLOCATIONS.store(0, Ordering::Relaxed);
        COUNTING.with(|c| c.set(true));
        let mut opened = 0;
        for _ in 0..20 {
            opened += rig.burst();
        }
        COUNTING.with(|c| c.set(false));
        assert_eq!(opened, 20 * SEGMENTS, "gso {gso}: every datagram opened");
        assert_eq!(
            ALLOCATIONS.load(Ordering::Relaxed),
            0,
            "gso {gso}: allocations in 20 bursts"
        );
        let sends = rig.metrics.udp_gso_sends.get();
        if gso {
            assert!(
                sends > 0 && rig.metrics.udp_gso_segments.get() >= 20 * SEGMENTS as u64,
                "GSO used"
            );
        } else {
            assert_eq!(sends, 0);
        }
    }
}
