//! The TunnelConfig contract lives in the `magictunnel-types` leaf crate (shared with the
//! operator); re-exported here so the endpoint's code says `crate::config::…`.

pub use magictunnel_types::config::*;
