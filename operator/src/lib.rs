//! MagicTunnel operator: turns `MagicTunnel` objects into tunnel endpoint pods.
//!
//! The pipeline, one module per step: [`validate`] (pure) → [`build`] (pure: desired objects) →
//! [`reconcile`] (reads Secrets, applies, deletes, writes status). [`psk`], [`ike_id`] and
//! [`conditions`] are pure helpers of those steps.
pub mod build;
pub mod cli;
pub mod conditions;
pub mod crd;
pub mod fixtures;
pub mod ike_id;
pub mod index;
pub mod metrics;
pub mod psk;
pub mod reconcile;
pub mod rollout;
pub mod settings;
pub mod triggers;
pub mod validate;
