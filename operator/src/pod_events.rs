//! Which events of the tunnels' own pods are worth a reconcile: a pod that appeared or went,
//! or changed in what the reconcile reads of it (phase, readiness, node, host IP, being deleted).
//! Others, such as the scheduler marking a Pending pod unschedulable, or kubelet heartbeats of
//! container state, reconcile nothing: on one node that was one extra reconcile per Pending
//! tunnel (BENCHMARKS.md, "Operator at scale").

use std::collections::HashMap;

use futures::{Stream, StreamExt, future};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};

use crate::rollout;

/// What the reconcile reads of a pod (`reconcile::endpoint_status`, `rollout::plan`, the
/// status poller's targets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    phase: Option<String>,
    ready: bool,
    node: Option<String>,
    host_ip: Option<String>,
    terminating: bool,
}

impl Seen {
    pub fn of(pod: &Pod) -> Self {
        let status = pod.status.as_ref();
        Seen {
            phase: status.and_then(|s| s.phase.clone()),
            ready: rollout::is_ready(pod),
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            host_ip: status.and_then(|s| s.host_ip.clone()),
            terminating: pod.metadata.deletion_timestamp.is_some(),
        }
    }
}

/// Pods per UID as last passed on.
#[derive(Default)]
pub struct Filter {
    seen: HashMap<String, Seen>,
}

impl Filter {
    /// The pod to pass on to the controller, if this event matters. A deletion always does.
    pub fn pass(&mut self, event: Event<Pod>) -> Option<Pod> {
        match event {
            Event::Apply(pod) | Event::InitApply(pod) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                let now = Seen::of(&pod);
                match self.seen.insert(uid, now.clone()) {
                    Some(before) if before == now => None,
                    _ => Some(pod),
                }
            }
            Event::Delete(pod) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                self.seen.remove(&uid);
                Some(pod)
            }
            Event::Init | Event::InitDone => None,
        }
    }
}

/// The watcher's events reduced to the pods worth a reconcile of their owner.
pub fn relevant(
    events: impl Stream<Item = Result<Event<Pod>, watcher::Error>>,
) -> impl Stream<Item = Result<Pod, watcher::Error>> {
    let mut filter = Filter::default();
    events.filter_map(move |e| future::ready(e.map(|e| filter.pass(e)).transpose()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(phase: &str, conditions: &[(&str, &str)]) -> Pod {
        let mut p = Pod::default();
        p.metadata.uid = Some("u1".into());
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            conditions: Some(
                conditions
                    .iter()
                    .map(|(t, s)| PodCondition {
                        type_: (*t).into(),
                        status: (*s).into(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        });
        p
    }

    #[test]
    fn only_changes_the_reconcile_reads_pass() {
        let mut f = Filter::default();
        assert!(
            f.pass(Event::Apply(pod("Pending", &[]))).is_some(),
            "new pod"
        );
        // The scheduler marks it unschedulable: nothing the reconcile reads.
        let unschedulable = pod("Pending", &[("PodScheduled", "False")]);
        assert!(f.pass(Event::Apply(unschedulable.clone())).is_none());
        let running = pod("Running", &[("PodScheduled", "True")]);
        assert!(f.pass(Event::Apply(running)).is_some(), "phase");
        let ready = pod("Running", &[("Ready", "True")]);
        assert!(f.pass(Event::Apply(ready.clone())).is_some(), "readiness");
        assert!(f.pass(Event::Apply(ready.clone())).is_none(), "same again");
        let mut terminating = ready.clone();
        terminating.metadata.deletion_timestamp = Some(Time(Default::default()));
        assert!(
            f.pass(Event::Apply(terminating.clone())).is_some(),
            "deleting"
        );
        // The final deletion looks like the last update but must reach the controller, which
        // recreates the pod.
        assert!(f.pass(Event::Delete(terminating)).is_some(), "deleted");
        assert!(f.pass(Event::InitDone).is_none());
        // Forgotten once deleted: seen again, it passes.
        assert!(f.pass(Event::Apply(unschedulable)).is_some());
    }
}
