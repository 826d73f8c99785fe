//! The types MagicTunnel's operator and endpoint share: the TunnelConfig contract, the algorithm
//! names, key material, static SA parameters and the metrics text format. A leaf crate: no
//! dataplane, no sockets, so the operator builds without the endpoint's dependencies.

pub mod algorithms;
pub mod config;
pub mod metrics_text;
pub mod psk;
pub mod secret;
pub mod static_sa;
