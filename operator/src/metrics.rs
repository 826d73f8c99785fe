//! Prometheus metrics of the operator. Label values are bounded: fixed words, never messages.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::reason::Reason;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `applied`, `not_deployed` or `error`.
    pub result: &'static str,
}

/// A failed reconcile's stage (`apply_config`, `list_pods`, …; see `reconcile::Error::reason`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// A condition reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionReasonLabel {
    pub reason: Reason,
}

pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ResultLabel, Counter>,
    pub failures: Family<ReasonLabel, Counter>,
    pub not_deployed: Family<ConditionReasonLabel, Counter>,
    pub duration: Histogram,
    pub invalid_objects: Counter,
    /// 1 while this replica holds the leader Lease (or runs without leader election).
    pub leader: Gauge,
    /// Tunnel pods whose `/status` the poller reads.
    pub status_targets: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("magictunnel_operator");
        let reconciles = Family::<ResultLabel, Counter>::default();
        let failures = Family::<ReasonLabel, Counter>::default();
        let not_deployed = Family::<ConditionReasonLabel, Counter>::default();
        let leader = Gauge::default();
        let status_targets = Gauge::default();
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let invalid_objects = Counter::default();
        registry.register("reconciles", "Reconciles by result", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by reason (retried with backoff)",
            failures.clone(),
        );
        registry.register(
            "tunnels_not_deployed",
            "Reconciles that found a tunnel not deployable, by condition reason (its pods may keep serving the last good config)",
            not_deployed.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            duration.clone(),
        );
        registry.register(
            "invalid_objects",
            "MagicTunnel objects that could not be decoded",
            invalid_objects.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica is the leader and reconciles, 0 while it waits",
            leader.clone(),
        );
        registry.register(
            "status_targets",
            "Tunnel pods whose /status is polled",
            status_targets.clone(),
        );
        Metrics {
            registry,
            leader,
            status_targets,
            reconciles,
            failures,
            not_deployed,
            duration,
            invalid_objects,
        }
    }
}

impl Metrics {
    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        magictunnel_types::metrics_text::render(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_bounded_labels() {
        let m = Metrics::default();
        m.reconciles
            .get_or_create(&ResultLabel { result: "applied" })
            .inc();
        m.failures
            .get_or_create(&ReasonLabel {
                reason: "apply_config",
            })
            .inc();
        m.duration.observe(0.01);
        m.not_deployed
            .get_or_create(&ConditionReasonLabel {
                reason: Reason::PskSecretNotFound,
            })
            .inc();
        m.leader.set(1);
        let text = m.render();
        assert!(
            text.contains("magictunnel_operator_reconciles_total{result=\"applied\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "magictunnel_operator_reconcile_failures_total{reason=\"apply_config\"} 1"
            )
        );
        assert!(text.contains("magictunnel_operator_reconcile_duration_seconds_count 1"));
        assert!(
            text.contains(
                "magictunnel_operator_tunnels_not_deployed_total{reason=\"PskSecretNotFound\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("magictunnel_operator_leader 1"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
