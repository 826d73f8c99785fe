//! Every reason the operator gives: condition reasons, Event reasons and the `reason` label of
//! its metrics are one closed set, so a dashboard, `kubectl describe` and an alert speak the same
//! words, and a label value can never be a free-form message.

use std::fmt;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    // Configured=True, and the Event when it becomes so.
    /// The config and the pods are applied.
    Applied,
    // Configured=False: why the tunnel is not deployable.
    /// The spec itself cannot be turned into a config.
    InvalidSpec,
    /// An older tunnel holds the same endpoints.
    EndpointConflict,
    /// An older IPsec tunnel has the same local endpoint and the same customer endpoint (or
    /// neither has one): their IKE and ESP datagrams cannot be told apart.
    AmbiguousPeer,
    /// An older tunnel routes the same prefix with the same metric: a node cannot hold both.
    RouteConflict,
    /// The Secret named in `ipsec.pskSecretRef` does not exist.
    PskSecretNotFound,
    /// The adopted Secret has no such key.
    PskKeyMissing,
    PskTooWeak,
    PskTooLong,
    /// `<name>-psk` exists and is not this tunnel's.
    PskSecretNameTaken,
    /// `<name>-sa` exists and is not this tunnel's SA-state Secret: its replicas cannot share
    /// their SAs through it, and its pods are not given access to it.
    SaSecretNameTaken,
    // Ready and Degraded.
    EndpointsReady,
    EndpointsNotReady,
    AsExpected,
    /// Not deployable and nothing kept serving.
    NotConfigured,
    // Established, from each pod's `/status`.
    /// IPsec: every endpoint has a Child SA installed.
    ChildSaInstalled,
    /// IPsec: some endpoint has no Child SA.
    NoChildSa,
    /// GRE with health checks: every endpoint's probes are answered.
    ProbesAnswered,
    /// GRE with health checks: some endpoint's probes are not answered.
    ProbesUnanswered,
    /// GRE without health checks: the transport is open (nothing more can be known).
    TransportOpen,
    /// GRE without health checks: some endpoint's transport is not open.
    TransportClosed,
    /// Some endpoint's `/status` has not been read yet or could not be read.
    StatusUnknown,
    /// No endpoint pod runs.
    NoEndpoints,
    // Healthy, from the health-check state each pod reports.
    HealthChecksPassing,
    HealthChecksDegraded,
    HealthChecksFailing,
    /// Health checks run but have no verdict yet (or some pod could not be asked).
    HealthUnknown,
    HealthChecksDisabled,
    // Synchronized (anycast IPsec replicas sharing SAs), from the SA-state Secret.
    /// Every ready replica installed the current generation of the shared state.
    InSync,
    /// Some ready replica has not installed the current generation (within
    /// `sa_state::PROPAGATION_GRACE` of its publication, if all were in sync before).
    Lagging,
    /// No replica has published SA state yet.
    NoState,
    /// State is published but no endpoint pod is ready.
    NoReadyReplicas,
    /// `summary.json` or `acks.json` cannot be read (malformed, too large).
    StateUnreadable,
    // Events only.
    PskGenerated,
    PskRotated,
}

impl Reason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Applied => "Applied",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::EndpointConflict => "EndpointConflict",
            Reason::AmbiguousPeer => "AmbiguousPeer",
            Reason::RouteConflict => "RouteConflict",
            Reason::PskSecretNotFound => "PskSecretNotFound",
            Reason::PskKeyMissing => "PskKeyMissing",
            Reason::PskTooWeak => "PskTooWeak",
            Reason::PskTooLong => "PskTooLong",
            Reason::PskSecretNameTaken => "PskSecretNameTaken",
            Reason::SaSecretNameTaken => "SaSecretNameTaken",
            Reason::EndpointsReady => "EndpointsReady",
            Reason::EndpointsNotReady => "EndpointsNotReady",
            Reason::AsExpected => "AsExpected",
            Reason::NotConfigured => "NotConfigured",
            Reason::ChildSaInstalled => "ChildSaInstalled",
            Reason::NoChildSa => "NoChildSa",
            Reason::ProbesAnswered => "ProbesAnswered",
            Reason::ProbesUnanswered => "ProbesUnanswered",
            Reason::TransportOpen => "TransportOpen",
            Reason::TransportClosed => "TransportClosed",
            Reason::StatusUnknown => "StatusUnknown",
            Reason::NoEndpoints => "NoEndpoints",
            Reason::HealthChecksPassing => "HealthChecksPassing",
            Reason::HealthChecksDegraded => "HealthChecksDegraded",
            Reason::HealthChecksFailing => "HealthChecksFailing",
            Reason::HealthUnknown => "HealthUnknown",
            Reason::HealthChecksDisabled => "HealthChecksDisabled",
            Reason::InSync => "InSync",
            Reason::Lagging => "Lagging",
            Reason::NoState => "NoState",
            Reason::NoReadyReplicas => "NoReadyReplicas",
            Reason::StateUnreadable => "StateUnreadable",
            Reason::PskGenerated => "PskGenerated",
            Reason::PskRotated => "PskRotated",
        }
    }

    /// Every reason, for tests and documentation.
    pub const ALL: [Reason; 35] = [
        Reason::Applied,
        Reason::InvalidSpec,
        Reason::EndpointConflict,
        Reason::AmbiguousPeer,
        Reason::RouteConflict,
        Reason::PskSecretNotFound,
        Reason::PskKeyMissing,
        Reason::PskTooWeak,
        Reason::PskTooLong,
        Reason::PskSecretNameTaken,
        Reason::SaSecretNameTaken,
        Reason::EndpointsReady,
        Reason::EndpointsNotReady,
        Reason::AsExpected,
        Reason::NotConfigured,
        Reason::ChildSaInstalled,
        Reason::NoChildSa,
        Reason::ProbesAnswered,
        Reason::ProbesUnanswered,
        Reason::TransportOpen,
        Reason::TransportClosed,
        Reason::StatusUnknown,
        Reason::NoEndpoints,
        Reason::HealthChecksPassing,
        Reason::HealthChecksDegraded,
        Reason::HealthChecksFailing,
        Reason::HealthUnknown,
        Reason::HealthChecksDisabled,
        Reason::InSync,
        Reason::Lagging,
        Reason::NoState,
        Reason::NoReadyReplicas,
        Reason::StateUnreadable,
        Reason::PskGenerated,
        Reason::PskRotated,
    ];
}

impl Reason {
    /// An older tunnel holds what this one needs. The younger yields completely: its pods go
    /// too, even those running a config that was good before the conflict appeared (an edit of
    /// the older tunnel), because the older one's pods would not work beside them on a node.
    pub const fn is_conflict(self) -> bool {
        matches!(
            self,
            Reason::EndpointConflict | Reason::AmbiguousPeer | Reason::RouteConflict
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EncodeLabelValue for Reason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
        fmt::Write::write_str(encoder, self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_distinct_camel_case_words() {
        let mut seen = std::collections::BTreeSet::new();
        for r in Reason::ALL {
            let s = r.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(
                s.chars().next().is_some_and(|c| c.is_ascii_uppercase()),
                "{s}"
            );
            assert!(s.chars().all(|c| c.is_ascii_alphanumeric()), "{s}");
            assert_eq!(r.to_string(), s);
        }
    }
}
