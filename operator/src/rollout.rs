//! Which pods to create and delete so that the running pods match the desired ones.
//!
//! Pods are immutable where it matters (image, args, volumes), so a changed config is rolled by
//! deleting the stale pod and creating it anew. With several replicas (anycast) at most one ready
//! pod is taken down at a time, and only while every other replica is ready, so capacity never
//! drops by more than one endpoint.
//!
//! A tunnel that is not deployable keeps serving ([`hold`]): its pods run on with the last good
//! config unless the tunnel's own spec changed since that config was built. A Secret that goes
//! missing for a while never takes a running tunnel down; only a spec change (a rollout) or a
//! deletion replaces pods, and a conflict with an older tunnel (which `reconcile` resolves by
//! deleting every pod of the younger, without asking [`hold`]).

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

/// The last good config of a tunnel, as its config Secret records it (the Secret is written only
/// with a deployable config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastGood<'a> {
    /// `magictunnel.dev/generation`: the tunnel generation the config was built from. `None` on
    /// a Secret written before the operator recorded it: then the generation is not known to
    /// differ, and the pods are kept.
    pub generation: Option<i64>,
    /// `magictunnel.dev/config-hash` of the config.
    pub config_hash: Option<&'a str>,
}

/// What to do with the pods of a tunnel that is not deployable.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Hold {
    /// Pods left running with the last good config.
    pub keep: Vec<String>,
    /// Pods to delete: built from another spec than the tunnel's current one.
    pub delete: Vec<String>,
}

/// The rule for a tunnel that is not deployable at `generation`: a pod keeps running if it runs
/// the last good config (its config hash is the config Secret's) and that config was built from
/// the current generation of the spec. Every other pod is deleted: the spec changed since it was
/// built (a change that made the tunnel undeployable), or it was an outdated replica in the
/// middle of a rollout, or there is no last good config at all. Pods already terminating are
/// left to finish; nothing is created.
pub fn hold(generation: Option<i64>, last_good: Option<LastGood<'_>>, existing: &[Pod]) -> Hold {
    let mut out = Hold::default();
    let spec_unchanged =
        last_good.is_some_and(|g| g.generation.is_none() || g.generation == generation);
    for pod in existing.iter().filter(|p| !is_terminating(p)) {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let runs_last_good = last_good
            .and_then(|g| g.config_hash)
            .is_some_and(|h| hash(pod) == Some(h));
        if spec_unchanged && runs_last_good {
            out.keep.push(name);
        } else {
            out.delete.push(name);
        }
    }
    out
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

    fn last_good(generation: Option<i64>, hash: &str) -> Option<LastGood<'_>> {
        Some(LastGood {
            generation,
            config_hash: Some(hash),
        })
    }

    #[test]
    fn not_deployable_with_an_unchanged_spec_keeps_serving() {
        // The adopted Secret went missing: same generation, the pods run the last good config.
        let existing = [pod("t-0", "h", true), pod("t-1", "h", false)];
        let h = hold(Some(4), last_good(Some(4), "h"), &existing);
        assert_eq!(h.keep, ["t-0", "t-1"]);
        assert!(h.delete.is_empty());
    }

    #[test]
    fn not_deployable_after_a_spec_change_removes_the_pods() {
        let existing = [pod("t-0", "h", true)];
        let h = hold(Some(5), last_good(Some(4), "h"), &existing);
        assert_eq!(h.delete, ["t-0"]);
        assert!(h.keep.is_empty());
    }

    #[test]
    fn not_deployable_keeps_only_pods_of_the_last_good_config() {
        // Mid-rollout: t-1 still runs an older config than the last good one.
        let existing = [pod("t-0", "new", true), pod("t-1", "old", true)];
        let h = hold(Some(2), last_good(Some(2), "new"), &existing);
        assert_eq!(
            (h.keep, h.delete),
            (vec!["t-0".into()], vec!["t-1".to_string()])
        );
    }

    #[test]
    fn not_deployable_without_a_last_good_config_keeps_nothing() {
        let existing = [pod("t-0", "h", true)];
        assert_eq!(hold(Some(1), None, &existing).delete, ["t-0"]);
        let no_hash = Some(LastGood {
            generation: Some(1),
            config_hash: None,
        });
        assert_eq!(hold(Some(1), no_hash, &existing).delete, ["t-0"]);
    }

    #[test]
    fn not_deployable_with_an_unrecorded_generation_keeps_serving() {
        // A config Secret from before the generation was recorded: not known to be stale.
        let existing = [pod("t-0", "h", true)];
        assert_eq!(hold(Some(7), last_good(None, "h"), &existing).keep, ["t-0"]);
    }

    #[test]
    fn not_deployable_leaves_terminating_pods_alone() {
        let mut going = pod("t-0", "h", true);
        going.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        assert_eq!(
            hold(Some(2), last_good(Some(1), "h"), &[going]),
            Hold::default()
        );
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
