//! Status conditions derived from what the operator decided and observed, and the transitions
//! between two sets of conditions (each one becomes an Event).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::validate::Invalid;

pub const CONFIGURED: &str = "Configured";
pub const READY: &str = "Ready";
pub const DEGRADED: &str = "Degraded";

/// What one reconcile found.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// `Err` when the tunnel is not deployed.
    pub configured: Result<(), &'a Invalid>,
    pub desired_replicas: i32,
    pub ready_replicas: i32,
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    old: &[Condition],
    now: &Time,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    // lastTransitionTime changes only when the status does.
    let last_transition_time = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

pub fn conditions(
    obs: Observation<'_>,
    generation: Option<i64>,
    old: &[Condition],
    now: &Time,
) -> Vec<Condition> {
    let ready_msg = format!(
        "{}/{} endpoint pods ready",
        obs.ready_replicas, obs.desired_replicas
    );
    let mk = |t: &str, ok: bool, reason: &str, msg: String| {
        condition(t, ok, reason, msg, generation, old, now)
    };
    match obs.configured {
        Err(invalid) => vec![
            mk(CONFIGURED, false, invalid.reason, invalid.message.clone()),
            mk(
                READY,
                false,
                "NotConfigured",
                "the tunnel is not deployed: see Configured".into(),
            ),
            mk(
                DEGRADED,
                false,
                "NotConfigured",
                "the tunnel is not deployed".into(),
            ),
        ],
        Ok(()) => {
            let all = obs.desired_replicas > 0 && obs.ready_replicas >= obs.desired_replicas;
            let some = obs.ready_replicas > 0 && !all;
            vec![
                mk(
                    CONFIGURED,
                    true,
                    "Applied",
                    format!(
                        "config and {} endpoint pod(s) applied",
                        obs.desired_replicas
                    ),
                ),
                if all {
                    mk(READY, true, "EndpointsReady", ready_msg.clone())
                } else {
                    mk(READY, false, "EndpointsNotReady", ready_msg.clone())
                },
                if some {
                    mk(DEGRADED, true, "EndpointsNotReady", ready_msg)
                } else {
                    mk(DEGRADED, false, "AsExpected", ready_msg)
                },
            ]
        }
    }
}

/// A condition that changed status or reason since the last status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub type_: String,
    pub reason: String,
    pub message: String,
    /// Warning rather than Normal: a problem appeared.
    pub warning: bool,
}

pub fn transitions(old: &[Condition], new: &[Condition]) -> Vec<Transition> {
    new.iter()
        .filter(|n| {
            !old.iter()
                .any(|o| o.type_ == n.type_ && o.status == n.status && o.reason == n.reason)
        })
        .map(|n| {
            let bad = match n.type_.as_str() {
                DEGRADED => n.status == "True",
                _ => n.status == "False",
            };
            Transition {
                type_: n.type_.clone(),
                reason: n.reason.clone(),
                message: format!("{} is {}: {}", n.type_, n.status, n.message),
                warning: bad,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH))
    }

    fn get<'a>(cs: &'a [Condition], t: &str) -> &'a Condition {
        cs.iter().find(|c| c.type_ == t).expect("condition present")
    }

    #[test]
    fn healthy_tunnel() {
        let obs = Observation {
            configured: Ok(()),
            desired_replicas: 2,
            ready_replicas: 2,
        };
        let cs = conditions(obs, Some(3), &[], &at(10));
        assert_eq!(get(&cs, CONFIGURED).status, "True");
        assert_eq!(get(&cs, READY).status, "True");
        assert_eq!(get(&cs, READY).message, "2/2 endpoint pods ready");
        assert_eq!(get(&cs, DEGRADED).status, "False");
        assert!(cs.iter().all(|c| c.observed_generation == Some(3)));
    }

    #[test]
    fn partially_ready_is_degraded() {
        let obs = Observation {
            configured: Ok(()),
            desired_replicas: 3,
            ready_replicas: 1,
        };
        let cs = conditions(obs, None, &[], &at(10));
        assert_eq!(get(&cs, READY).status, "False");
        assert_eq!(get(&cs, DEGRADED).status, "True");
    }

    #[test]
    fn invalid_tunnel_reports_the_reason() {
        let invalid = Invalid {
            reason: "PskSecretNotFound",
            message: "Secret x not found".into(),
        };
        let obs = Observation {
            configured: Err(&invalid),
            desired_replicas: 1,
            ready_replicas: 0,
        };
        let cs = conditions(obs, None, &[], &at(10));
        let c = get(&cs, CONFIGURED);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "PskSecretNotFound")
        );
        assert_eq!(c.message, "Secret x not found");
    }

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let obs = Observation {
            configured: Ok(()),
            desired_replicas: 1,
            ready_replicas: 0,
        };
        let first = conditions(obs, None, &[], &at(10));
        let same = conditions(obs, None, &first, &at(20));
        assert_eq!(get(&same, READY).last_transition_time, at(10));
        assert!(transitions(&first, &same).is_empty(), "no change, no event");

        let ready = Observation {
            ready_replicas: 1,
            ..obs
        };
        let later = conditions(ready, None, &same, &at(30));
        assert_eq!(get(&later, READY).last_transition_time, at(30));
        assert_eq!(get(&later, CONFIGURED).last_transition_time, at(10));
        let t = transitions(&same, &later);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].type_, READY);
        assert!(!t[0].warning);
    }

    #[test]
    fn first_status_announces_every_condition_and_problems_are_warnings() {
        let invalid = Invalid {
            reason: "EndpointConflict",
            message: "m".into(),
        };
        let obs = Observation {
            configured: Err(&invalid),
            desired_replicas: 1,
            ready_replicas: 0,
        };
        let t = transitions(&[], &conditions(obs, None, &[], &at(1)));
        assert_eq!(t.len(), 3);
        assert!(
            t.iter()
                .find(|t| t.type_ == CONFIGURED)
                .is_some_and(|t| t.warning)
        );
    }
}
