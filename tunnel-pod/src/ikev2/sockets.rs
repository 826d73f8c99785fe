//! The IKE task's sockets on a shared local endpoint (see `lobby` for the design): the
//! unconnected lobbies on 500 and 4500, the socket connected to the customer's port 500, and
//! the abstract unix socket other pods hand our strays to. [`Sockets::recv`] waits on all of
//! them and says where a datagram came from; [`Sockets::dispatch`] runs the ownership rule on
//! a stray and hands it over when it is another pod's.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::net::UnixDatagram as StdUnixDatagram;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::{UdpSocket, UnixDatagram};

use crate::io::open_udp_socket;
use crate::lobby::{self, ClaimState, Decision, Name, Offered};
use crate::metrics::Metrics;
use crate::run::{IKE_NATT_PORT, IKE_PORT};

/// How often a pod whose name another pod holds tries again (that pod may be on its way out).
const CLAIM_RETRY: Duration = Duration::from_secs(5);

/// Where a datagram in the receive buffer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// On the socket connected to our customer: ours.
    Direct {
        port: u16,
        from: SocketAddrV4,
        len: usize,
    },
    /// On an unconnected socket: a stray, for [`Sockets::dispatch`].
    Stray {
        port: u16,
        from: SocketAddrV4,
        len: usize,
    },
    /// A handover datagram (header and payload) sent to our name: ours once it parses, if its
    /// sender runs as uid 0 (`uid`) as tunnel-pods do.
    Handover { len: usize, uid: Option<u32> },
    /// We hold our name now (the pod that held it went): the data socket may connect.
    Claimed,
}

/// Binds our abstract name; on failure logs why (never fatal) and says so in the state.
pub fn claim(local: Ipv4Addr, customer: Option<Ipv4Addr>) -> (ClaimState, Option<StdUnixDatagram>) {
    let name = Name::of(customer);
    let path = name.path(local);
    match lobby::claim(local, name) {
        Ok(s) => (
            ClaimState {
                name: path,
                bound: true,
                error: None,
            },
            Some(s),
        ),
        Err(e) => {
            let error = if e.kind() == io::ErrorKind::AddrInUse {
                format!(
                    "another tunnel-pod on this node already serves {} on {local}: the two \
                     cannot be told apart (same localEndpoint and customerEndpoint, or both \
                     without customerEndpoint); this one hands every datagram over and serves none",
                    customer.map_or("the endpoint's default tunnel".to_string(), |c| format!(
                        "customer {c}"
                    ))
                )
            } else {
                format!("cannot bind the handover socket: {e}")
            };
            tracing::error!(name = %format!("@{path}"), error = %error, "IKE demultiplexing");
            (
                ClaimState {
                    name: path,
                    bound: false,
                    error: Some(error),
                },
                None,
            )
        }
    }
}

fn register(s: socket2::Socket) -> Result<UdpSocket> {
    s.set_nonblocking(true)
        .context("UDP socket: non-blocking")?;
    UdpSocket::from_std(s.into()).context("UDP socket: registering with the runtime")
}

pub struct Sockets {
    local: Ipv4Addr,
    customer: Option<Ipv4Addr>,
    /// Unconnected, port 500: strays, and where IKE on 500 is sent from.
    pub lobby500: UdpSocket,
    /// Unconnected, port 4500: strays (IKE on 4500 is sent from the data socket).
    lobby4500: UdpSocket,
    /// Connected to customer:500, once we hold our name.
    conn500: Option<UdpSocket>,
    /// Bound to our name; `None` while another pod holds it.
    inbox: Option<UnixDatagram>,
    sender: Option<lobby::Sender>,
    pub state: ClaimState,
    retry_at: tokio::time::Instant,
}

impl Sockets {
    /// Opens the lobbies and, when we hold our name and have a customer, the socket connected
    /// to its port 500. Must run inside the runtime.
    pub fn open(
        local: Ipv4Addr,
        customer: Option<Ipv4Addr>,
        state: ClaimState,
        inbox: Option<StdUnixDatagram>,
    ) -> Result<Sockets> {
        let lobby500 = register(open_udp_socket(local, IKE_PORT, None)?)?;
        let lobby4500 = register(open_udp_socket(local, IKE_NATT_PORT, None)?)?;
        let sender = match lobby::Sender::new(local) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "no handover socket: strays for other pods are dropped");
                None
            }
        };
        let mut s = Sockets {
            local,
            customer,
            lobby500,
            lobby4500,
            conn500: None,
            inbox: None,
            sender,
            state,
            retry_at: tokio::time::Instant::now() + CLAIM_RETRY,
        };
        if let Some(inbox) = inbox {
            s.take_name(inbox)?;
        }
        Ok(s)
    }

    fn take_name(&mut self, inbox: StdUnixDatagram) -> Result<()> {
        self.inbox = Some(UnixDatagram::from_std(inbox).context("handover socket: registering")?);
        if let Some(c) = self.customer {
            let peer = SocketAddrV4::new(c, IKE_PORT);
            self.conn500 = Some(register(open_udp_socket(
                self.local,
                IKE_PORT,
                Some(peer),
            )?)?);
        }
        Ok(())
    }

    pub fn bound(&self) -> bool {
        self.inbox.is_some()
    }

    /// Tries our name again; true once it is ours.
    fn retry_claim(&mut self) -> bool {
        self.retry_at = tokio::time::Instant::now() + CLAIM_RETRY;
        let Ok(inbox) = lobby::claim(self.local, Name::of(self.customer)) else {
            return false;
        };
        match self.take_name(inbox) {
            Ok(()) => {
                tracing::info!(name = %format!("@{}", self.state.name), "IKE demultiplexing: name bound");
                self.state.bound = true;
                self.state.error = None;
                true
            }
            Err(e) => {
                self.inbox = None;
                tracing::error!(error = %format!("{e:#}"), "IKE demultiplexing: cannot open the connected socket");
                false
            }
        }
    }

    /// Waits for the next datagram on any of the sockets, read into `buf`.
    pub async fn recv(&mut self, buf: &mut [u8]) -> Incoming {
        loop {
            let retry = self.retry_at;
            let unbound = self.inbox.is_none();
            // Readiness fails only when the runtime's driver does: wait a little rather than spin.
            let mut failed = false;
            tokio::select! {
                r = self.lobby500.readable() => match r {
                    Err(_) => failed = true,
                    Ok(()) => if let Ok((len, SocketAddr::V4(from))) =
                        self.lobby500.try_recv_from(buf)
                    {
                        return Incoming::Stray { port: IKE_PORT, from, len };
                    },
                },
                r = self.lobby4500.readable() => match r {
                    Err(_) => failed = true,
                    Ok(()) => if let Ok((len, SocketAddr::V4(from))) =
                        self.lobby4500.try_recv_from(buf)
                    {
                        return Incoming::Stray { port: IKE_NATT_PORT, from, len };
                    },
                },
                r = readable_udp(self.conn500.as_ref()) => match r {
                    Err(_) => failed = true,
                    Ok(()) => if let Some(s) = &self.conn500
                        && let Ok((len, SocketAddr::V4(from))) = s.try_recv_from(buf)
                    {
                        return Incoming::Direct { port: IKE_PORT, from, len };
                    },
                },
                r = readable_unix(self.inbox.as_ref()) => match r {
                    Err(_) => failed = true,
                    Ok(()) => if let Some(s) = &self.inbox
                        && let Ok((len, uid)) = s.try_io(tokio::io::Interest::READABLE, || {
                            use std::os::fd::AsFd;
                            lobby::recv_handover(s.as_fd(), buf)
                        })
                    {
                        return Incoming::Handover { len, uid };
                    },
                },
                _ = tokio::time::sleep_until(retry), if unbound => {
                    if self.retry_claim() {
                        return Incoming::Claimed;
                    }
                }
            }
            if failed {
                tracing::warn!("IKE socket readiness failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Runs the ownership rule on a stray that arrived on `port` from `from`: true when it is
    /// ours; otherwise it was handed over, or dropped (`no_tunnel`) when nobody owns it.
    pub fn dispatch(
        &self,
        port: u16,
        from: SocketAddrV4,
        payload: &[u8],
        metrics: &Metrics,
    ) -> bool {
        let mut tried = Vec::with_capacity(2);
        tracing::trace!(port, from = %from, len = payload.len(), "stray");
        loop {
            match lobby::owner(*from.ip(), self.customer, self.bound(), &tried) {
                Decision::Mine => {
                    metrics.ike.stray("mine");
                    return true;
                }
                Decision::Drop => {
                    metrics.ike.stray("dropped");
                    metrics.ike.dropped("no_tunnel");
                    return false;
                }
                Decision::HandOver(name) => {
                    let Some(sender) = &self.sender else {
                        metrics.ike.dropped("send_error");
                        return false;
                    };
                    let datagram = lobby::HandoverRepr {
                        local_port: port,
                        source: from,
                    }
                    .datagram(payload);
                    match sender.offer(name, &datagram) {
                        Offered::Sent => {
                            metrics.ike.stray("handed_over");
                            metrics.ike.handover("sent");
                            return false;
                        }
                        Offered::NobodyThere => tried.push(name),
                        Offered::Failed(kind) => {
                            tracing::debug!(error = ?kind, "handover failed");
                            metrics.ike.stray("dropped");
                            metrics.ike.dropped("send_error");
                            return false;
                        }
                    }
                }
            }
        }
    }
}

async fn readable_udp(s: Option<&UdpSocket>) -> io::Result<()> {
    match s {
        Some(s) => s.readable().await,
        None => std::future::pending().await,
    }
}

async fn readable_unix(s: Option<&UnixDatagram>) -> io::Result<()> {
    match s {
        Some(s) => s.readable().await,
        None => std::future::pending().await,
    }
}
