//! Interface address, MTU and routes through rtnetlink (no `ip` commands).

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context, Result, anyhow};
use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::link::{AfSpecInet6, AfSpecUnspec, In6AddrGenMode, LinkAttribute};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use crate::config::Route;

/// A netlink connection, alive while this value is.
pub struct Netlink {
    handle: Handle,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Netlink {
    pub fn connect() -> Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
        let task = tokio::spawn(conn);
        Ok(Netlink { handle, task })
    }

    /// The connection's handle, for queries this module does not wrap (`packet_tx::resolve`).
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    pub async fn link_index(&self, name: &str) -> Result<u32> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        let link = links
            .try_next()
            .await
            .with_context(|| format!("looking up interface {name}"))?
            .ok_or_else(|| anyhow!("interface {name} not found"))?;
        Ok(link.header.index)
    }

    /// Sets the MTU, turns IPv6 address autoconfiguration off, adds the interface address
    /// (which also installs the connected route to the peer's half of the subnet) and brings the
    /// link up.
    pub async fn configure_interface(&self, index: u32, mtu: u16, address: Ipv4Net) -> Result<()> {
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .mtu(u32::from(mtu))
                    .build(),
            )
            .execute()
            .await
            .context("setting the MTU")?;
        // After the MTU (an MTU below 1280 removes IPv6 from the device), before the link goes
        // up (the link-local address is made when it does).
        self.no_ipv6_link_local(index).await;
        self.handle
            .address()
            .add(index, IpAddr::V4(address.addr()), address.prefix_len())
            .execute()
            .await
            .with_context(|| format!("adding address {address}"))?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .context("bringing the interface up")?;
        Ok(())
    }

    /// `IFLA_INET6_ADDR_GEN_MODE` = none (`ip link set DEV addrgenmode none`): the kernel makes
    /// no link-local address when the link comes up, and so sends no router solicitation, no
    /// DAD probe and no MLD report for it into the tunnel (see `chatter`, which drops what still
    /// comes). A netlink attribute rather than the sysctl, since `/proc/sys` is read-only in a
    /// pod. Nothing on a point-to-point L3 TUN needs a link-local address: routes name the
    /// device, and the device resolves no neighbours (`NOARP`).
    ///
    /// Not fatal: without IPv6 on the device (IPv6 off in the kernel, or the MTU below 1280)
    /// the kernel refuses the attribute with `EAFNOSUPPORT`, and there is then nothing to
    /// silence; any other refusal leaves the dataplane's filter as the only line, said once.
    async fn no_ipv6_link_local(&self, index: u32) {
        let message = LinkUnspec::new_with_index(index)
            .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
            )]))
            .build();
        match self.handle.link().set(message).execute().await {
            Ok(()) => {}
            Err(rtnetlink::Error::NetlinkError(e))
                if e.raw_code() == -(nix::errno::Errno::EAFNOSUPPORT as i32) =>
            {
                tracing::debug!("no IPv6 on the interface: no link-local address to turn off");
            }
            Err(e) => tracing::warn!(
                error = %e,
                "cannot turn IPv6 address generation off on the interface; the dataplane drops \
                 the kernel's link chatter instead"
            ),
        }
    }

    fn route_message(index: u32, route: &Route) -> rtnetlink::packet_route::route::RouteMessage {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(route.prefix.network(), route.prefix.prefix_len())
            .output_interface(index);
        if let Some(m) = route.metric {
            b = b.priority(m);
        }
        b.build()
    }

    pub async fn add_route(&self, index: u32, route: &Route) -> Result<()> {
        self.handle
            .route()
            .add(Self::route_message(index, route))
            .execute()
            .await
            .with_context(|| format!("adding route {}", route.prefix))
    }

    pub async fn delete_route(&self, index: u32, route: &Route) -> Result<()> {
        self.handle
            .route()
            .del(Self::route_message(index, route))
            .execute()
            .await
            .with_context(|| format!("deleting route {}", route.prefix))
    }

    pub async fn delete_link(&self, index: u32) -> Result<()> {
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .context("deleting the interface")
    }
}
