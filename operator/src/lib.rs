//! MagicTunnel operator: turns `MagicTunnel` objects into tunnel endpoint pods.
//!
//! The pipeline, one module per step: [`validate`] (pure) → [`build`] (pure: desired objects) →
//! [`reconcile`] (reads Secrets, applies, deletes, writes status). [`psk`], [`ike_id`] and
//! [`conditions`] are pure helpers of those steps; [`reason`] names every condition and Event
//! reason. [`pod_status`] polls the tunnel pods' `/status` apart from the reconciles.
pub mod build;
pub mod cli;
pub mod conditions;
pub mod crd;
pub mod fixtures;
pub mod ike_id;
pub mod index;
pub mod leader;
pub mod metrics;
pub mod pod_events;
pub mod pod_status;
pub mod psk;
pub mod reason;
pub mod reconcile;
pub mod rollout;
pub mod sa_state;
pub mod settings;
pub mod sync_objects;
pub mod triggers;
pub mod validate;
