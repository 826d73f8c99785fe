//! Which pods to create and delete so that the running pods match the desired ones.
//!
//! Pods are immutable where it matters (image, args, volumes), so a changed config is rolled by
//! deleting the stale pod and creating it anew. With several replicas (anycast) at most one ready
//! pod is taken down at a time, and only while every other replica is ready, so capacity never
//! drops by more than one endpoint.

use k8s_openapi::api::core::v1::Pod;

use crate::build::CONFIG_HASH_ANNOTATION;

#[derive(Debug, Default, PartialEq)]
pub struct PodPlan {
    pub create: Vec<Pod>,
    /// Names of pods to delete.
    pub delete: Vec<String>,
}

pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn has_ended(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Failed" | "Succeeded")
    )
}

fn hash(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(CONFIG_HASH_ANNOTATION)
        .map(String::as_str)
}

pub fn plan(desired: &[Pod], existing: &[Pod]) -> PodPlan {
    let mut plan = PodPlan::default();
    let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
    let find = |n: &str| {
        existing
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(n))
    };

    // Pods that are not wanted any more (fewer replicas), or that ended (evicted, failed).
    for pod in existing.iter().filter(|p| !is_terminating(p)) {
        let wanted = desired.iter().any(|d| d.metadata.name == pod.metadata.name);
        if !wanted || has_ended(pod) {
            plan.delete.push(name(pod));
        }
    }

    let mut stale_ready = Vec::new();
    for want in desired {
        let n = name(want);
        match find(&n) {
            None => plan.create.push(want.clone()),
            // Still going away: create the replacement on a later pass.
            Some(p) if is_terminating(p) || plan.delete.contains(&n) => {}
            Some(p) if hash(p) != hash(want) => {
                if is_ready(p) {
                    stale_ready.push(n);
                } else {
                    plan.delete.push(n);
                }
            }
            Some(_) => {}
        }
    }

    // Take down one ready stale pod, and only while every other replica is ready (a lone
    // replica is replaced at once: there is nothing else to keep serving).
    if let Some(first) = stale_ready.first() {
        let others_ready = desired.iter().all(|want| {
            let n = name(want);
            n == *first || find(&n).is_some_and(|p| is_ready(p) && !is_terminating(p))
        });
        if desired.len() == 1 || others_ready {
            plan.delete.push(first.clone());
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn pod(name: &str, hash: &str, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations: Some(BTreeMap::from([(
                    CONFIG_HASH_ANNOTATION.to_string(),
                    hash.to_string(),
                )])),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn names(pods: &[Pod]) -> Vec<String> {
        pods.iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect()
    }

    #[test]
    fn creates_missing_and_deletes_extra() {
        let desired = [pod("t-0", "h", false), pod("t-1", "h", false)];
        let existing = [pod("t-0", "h", true), pod("t-2", "h", true)];
        let p = plan(&desired, &existing);
        assert_eq!(names(&p.create), ["t-1"]);
        assert_eq!(p.delete, ["t-2"]);
    }

    #[test]
    fn up_to_date_pods_are_left_alone() {
        let desired = [pod("t-0", "h", false)];
        assert_eq!(plan(&desired, &[pod("t-0", "h", true)]), PodPlan::default());
    }

    #[test]
    fn single_replica_is_replaced_at_once() {
        let p = plan(&[pod("t-0", "new", false)], &[pod("t-0", "old", true)]);
        assert_eq!(p.delete, ["t-0"]);
        assert!(p.create.is_empty(), "recreated once the old pod is gone");
    }

    #[test]
    fn replicas_roll_one_at_a_time() {
        let desired = [
            pod("t-0", "new", false),
            pod("t-1", "new", false),
            pod("t-2", "new", false),
        ];
        let all_old = [
            pod("t-0", "old", true),
            pod("t-1", "old", true),
            pod("t-2", "old", true),
        ];
        assert_eq!(plan(&desired, &all_old).delete, ["t-0"]);

        // t-0 was replaced and is not ready yet: the others wait.
        let replacing = [
            pod("t-0", "new", false),
            pod("t-1", "old", true),
            pod("t-2", "old", true),
        ];
        assert!(plan(&desired, &replacing).delete.is_empty());

        let mid = [
            pod("t-0", "new", true),
            pod("t-1", "old", true),
            pod("t-2", "old", true),
        ];
        assert_eq!(plan(&desired, &mid).delete, ["t-1"]);

        let last = [
            pod("t-0", "new", true),
            pod("t-1", "new", true),
            pod("t-2", "old", true),
        ];
        assert_eq!(plan(&desired, &last).delete, ["t-2"]);

        let not_ready_yet = [
            pod("t-0", "new", false),
            pod("t-1", "new", true),
            pod("t-2", "old", true),
        ];
        assert!(plan(&desired, &not_ready_yet).delete.is_empty());
    }

    #[test]
    fn stale_pods_that_are_not_ready_go_at_once() {
        let desired = [pod("t-0", "new", false), pod("t-1", "new", false)];
        let existing = [pod("t-0", "old", false), pod("t-1", "old", false)];
        assert_eq!(plan(&desired, &existing).delete, ["t-0", "t-1"]);
    }

    #[test]
    fn ended_pods_are_deleted_and_terminating_ones_awaited() {
        let mut failed = pod("t-0", "h", false);
        if let Some(s) = failed.status.as_mut() {
            s.phase = Some("Failed".into());
        }
        let p = plan(&[pod("t-0", "h", false)], &[failed]);
        assert_eq!(p.delete, ["t-0"]);
        assert!(p.create.is_empty());

        let mut going = pod("t-0", "old", true);
        going.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        assert_eq!(
            plan(&[pod("t-0", "new", false)], &[going]),
            PodPlan::default()
        );
    }
}
