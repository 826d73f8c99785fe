//! The sans-IO IKEv2 state machine (written against `wire` and `crypto`).
