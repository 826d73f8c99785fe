//! SA synchronisation between the anycast replicas of one IPsec tunnel (issue #11): the owner
//! publishes its IKE and ESP state to the tunnel's `<tunnel>-sa` Secret before its messages
//! leave; the others install every new generation (their IKE SAs passive) and claim ownership
//! when an IKE message for a shared SA reaches them.
//!
//! - [`doc`]: the Secret's data (`state.json`, `summary.json`, `acks.json`), bounded parsing.
//! - [`engine`]: the decisions, sans IO (roles, write-ahead, lazy publish, claims, liveness).
//! - [`kube`]: get / watch / replace (CAS) of the one Secret.
//! - [`share`]: the IKE core's snapshots into the shared content and back.
//!
//! The shell that runs them is `crate::ikev2`.

pub mod doc;
pub mod engine;
pub mod kube;
pub mod share;
