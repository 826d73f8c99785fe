//! A customer site joined to the node, so that a tunnel pod (host network) can really run: a
//! network namespace `mto<slot>` holding the customer endpoints, joined to the host by a veth
//! pair (`mto<slot>h` on the host, `mto<slot>c` in the namespace). The host side carries the
//! tunnel's local endpoint 203.0.113.<100 + slot>/32 and a /32 route to each customer
//! endpoint; the namespace routes the local endpoint back. Whatever a tunnel pod sends to its
//! customer endpoint stays on this veth.
//!
//! Slots: local endpoints 203.0.113.100–140 and customer endpoints 198.51.100.100–140 belong
//! to the ops tests; a site with `n` customers takes 198.51.100.<100 + slot> onwards, so the
//! callers choose slots whose customer ranges do not overlap. Dropping the site deletes the
//! namespace, which deletes the veth pair and with it the host address and routes. Needs root.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{Context as _, bail};

pub const FIRST: u8 = 100;
pub const LAST: u8 = 140;

pub struct Site {
    pub local: Ipv4Addr,
    pub customers: Vec<Ipv4Addr>,
    netns: String,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A new network namespace `ns` joined to the host by the veth pair `host` / `inner`: `local`/32
/// on the host end, each of `customers`/32 on the inner end, /32 routes both ways (sourced from
/// `local`, and from the first customer), everything up.
pub fn join_to_host(
    ns: &str,
    host: &str,
    inner: &str,
    local: Ipv4Addr,
    customers: &[Ipv4Addr],
) -> anyhow::Result<()> {
    let local = local.to_string();
    ip(&["netns", "add", ns])?;
    ip(&[
        "link", "add", host, "type", "veth", "peer", "name", inner, "netns", ns,
    ])?;
    ip(&["addr", "add", &format!("{local}/32"), "dev", host])?;
    ip(&["link", "set", host, "up"])?;
    ip(&["-n", ns, "link", "set", "lo", "up"])?;
    ip(&["-n", ns, "link", "set", inner, "up"])?;
    for c in customers {
        let c = c.to_string();
        ip(&["-n", ns, "addr", "add", &format!("{c}/32"), "dev", inner])?;
        ip(&[
            "route",
            "add",
            &format!("{c}/32"),
            "dev",
            host,
            "src",
            &local,
        ])?;
    }
    let mut back = vec!["-n", ns, "route", "add", &local, "dev", inner];
    let first = customers.first().map(ToString::to_string);
    if let Some(c) = first.as_deref() {
        back.extend(["src", c]);
    }
    ip(&back)?;
    Ok(())
}

impl Site {
    /// The site of `slot` (0..=40) with `customers` customer endpoints.
    pub fn new(slot: u8, customers: u8) -> anyhow::Result<Site> {
        let last = u16::from(FIRST) + u16::from(slot) + u16::from(customers.max(1)) - 1;
        anyhow::ensure!(
            last <= u16::from(LAST),
            "slot {slot} with {customers} customers leaves the ops range"
        );
        let netns = format!("mto{slot}");
        let host = format!("mto{slot}h");
        let inner = format!("mto{slot}c");
        // A site left by a test that was killed: its namespace holds the veth.
        let _ = ip(&["netns", "delete", &netns]);
        let _ = ip(&["link", "delete", &host]);
        let local = Ipv4Addr::new(203, 0, 113, FIRST + slot);
        let customers: Vec<Ipv4Addr> = (0..customers)
            .map(|i| Ipv4Addr::new(198, 51, 100, FIRST + slot + i))
            .collect();
        let site = Site {
            local,
            customers,
            netns,
        };
        site.set_up(&host, &inner)
            .with_context(|| format!("setting up site {}", site.netns))?;
        Ok(site)
    }

    fn set_up(&self, host: &str, inner: &str) -> anyhow::Result<()> {
        join_to_host(&self.netns, host, inner, self.local, &self.customers)
    }

    pub fn netns(&self) -> &str {
        &self.netns
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "delete", &self.netns]) {
            eprintln!("removing site {}: {e}", self.netns);
        }
    }
}
