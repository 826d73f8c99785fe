//! The tunnel's encapsulation, whichever it is: GRE over raw IP, or ESP in UDP (RFC 3948). One
//! enum rather than a trait object, so the per-packet calls stay direct.

use std::ops::Range;
use std::sync::Mutex;

use crate::drops::DropReason;
use crate::esp::sa::{Inbound, NEXT_IPV4, NEXT_IPV6, Outbound, SealError};
use crate::gre::{Gre, Inner, after_headroom};
use crate::mss;
use crate::wire::esp;
use crate::wire::gre::{ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::wire::udp_encap::{Datagram, classify};

/// Room to leave after an inner packet: the largest ESP trailer (15 bytes of CBC padding, pad
/// length, next header) and ICV (16).
pub const TAILROOM: usize = 15 + 2 + 16;

/// An ESP tunnel with one manually keyed (or, later, IKE-made) pair of SAs.
#[derive(Debug)]
pub struct Esp {
    pub outbound: Outbound,
    /// Only the receive thread opens packets; the lock is uncontended.
    pub inbound: Mutex<Inbound>,
    pub mtu: u16,
    pub mss: Option<u16>,
}

#[derive(Debug)]
pub enum Encap {
    Gre(Gre),
    Esp(Box<Esp>),
}

impl Encap {
    /// Encapsulates the inner packet at `buf[HEADROOM..HEADROOM + len]`; `buf` must hold
    /// `TAILROOM` more bytes after it.
    pub fn encap(&self, buf: &mut [u8], len: usize) -> Result<Range<usize>, DropReason> {
        self.encap_at(buf, after_headroom(len)?)
    }

    /// Encapsulates the inner packet at `buf[inner]`, in place; returns what to send.
    pub fn encap_at(
        &self,
        buf: &mut [u8],
        inner: Range<usize>,
    ) -> Result<Range<usize>, DropReason> {
        match self {
            Encap::Gre(g) => g.encap_at(buf, inner),
            Encap::Esp(e) => e.encap_at(buf, inner),
        }
    }

    /// Checks and opens one received datagram (as the socket delivers it) in place.
    pub fn decap(&self, datagram: &mut [u8]) -> Result<Inner, DropReason> {
        match self {
            Encap::Gre(g) => g.decap(datagram),
            Encap::Esp(e) => e.decap(datagram),
        }
    }

    pub fn as_gre(&self) -> Option<&Gre> {
        match self {
            Encap::Gre(g) => Some(g),
            Encap::Esp(_) => None,
        }
    }
}

impl Esp {
    fn encap_at(&self, buf: &mut [u8], inner: Range<usize>) -> Result<Range<usize>, DropReason> {
        let packet = buf.get_mut(inner.clone()).ok_or(DropReason::Oversized)?;
        let next_header = match packet.first().map(|b| b >> 4) {
            Some(4) => NEXT_IPV4,
            Some(6) => NEXT_IPV6,
            _ => return Err(DropReason::NotIp),
        };
        if packet.len() > usize::from(self.mtu) {
            return Err(DropReason::Oversized);
        }
        if let Some(m) = self.mss {
            mss::clamp(packet, m);
        }
        self.outbound
            .seal(buf, inner, next_header)
            .map_err(|e| match e {
                SealError::SequenceExhausted | SealError::Expired => DropReason::SaExhausted,
                SealError::NoRoom => DropReason::Truncated,
                SealError::NotSelected => DropReason::SelectorMismatch,
            })
    }

    fn decap(&self, datagram: &mut [u8]) -> Result<Inner, DropReason> {
        let esp_len = match classify(datagram) {
            Datagram::Esp(p) => p.len(),
            Datagram::Keepalive => return Err(DropReason::NatKeepalive),
            Datagram::Ike(_) => return Err(DropReason::IkeUnsupported),
            Datagram::Malformed => return Err(DropReason::Truncated),
        };
        let spi = esp::Packet::new_checked(&*datagram)
            .map_err(|_| DropReason::Truncated)?
            .spi();
        let mut inbound = self
            .inbound
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if spi != inbound.spi() {
            return Err(DropReason::UnknownSpi);
        }
        let packet = datagram.get_mut(..esp_len).ok_or(DropReason::Truncated)?;
        let opened = inbound.open(packet)?;
        drop(inbound);
        if opened.inner.len() > usize::from(self.mtu) {
            return Err(DropReason::Oversized);
        }
        if let Some(m) = self.mss
            && let Some(p) = datagram.get_mut(opened.inner.clone())
        {
            mss::clamp(p, m);
        }
        let ethertype = if opened.next_header == NEXT_IPV4 {
            ETHERTYPE_IPV4
        } else {
            ETHERTYPE_IPV6
        };
        Ok(Inner {
            range: opened.inner,
            ethertype,
        })
    }
}
