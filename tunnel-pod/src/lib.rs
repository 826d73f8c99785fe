//! MagicTunnel endpoint: the TunnelConfig contract and the userspace dataplane.
// Tests may unwrap: a panic there is a failed test, which is the point.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod config;
pub mod dataplane;
pub mod drops;
pub mod encap;
pub mod esp;
pub mod gre;
pub mod gre_filter;
pub mod health;
pub mod http;
pub mod ikev2;
pub mod io;
pub mod lobby;
pub mod metrics;
pub mod mss;
pub mod netlink;
pub mod offload;
pub mod packet_tx;
pub mod run;
pub mod sync;
pub mod tun_offload;
pub mod tun_queue;
pub mod udp_offload;
pub mod wire;
