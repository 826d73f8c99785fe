//! Status conditions derived from what the operator decided and observed, and the transitions
//! between two sets of conditions (each one becomes an Event).
//!
//! | type        | True                                 | False                                   | Unknown |
//! |-------------|--------------------------------------|-----------------------------------------|---------|
//! | Configured  | `Applied`                            | why not deployable (`PskSecretNotFound`, `EndpointConflict`, …) | – |
//! | Ready       | `EndpointsReady`: every pod Ready    | `EndpointsNotReady`, `NotConfigured`    | – |
//! | Degraded    | `EndpointsNotReady`: some, not all   | `AsExpected`, `NotConfigured`           | – |
//! | Established | `ChildSaInstalled` (IPsec), `ProbesAnswered` (GRE), `TransportOpen` (GRE, no health checks) | `NoChildSa`, `ProbesUnanswered`, `TransportClosed`, `NoEndpoints` | `StatusUnknown` |
//! | Healthy     | `HealthChecksPassing`                | `HealthChecksDegraded`, `HealthChecksFailing` | `HealthUnknown` (no verdict yet, a pod not read, or no pod), `HealthChecksDisabled` |
//! | Synchronized (anycast IPsec only) | `InSync`: every ready replica installed the current SA state (while it was so, also for 3 s after a new generation's publication) | `Lagging` | `NoState`, `NoReadyReplicas`, `StateUnreadable` |
//!
//! A tunnel that is not deployable but keeps serving its last good config has Configured=False
//! and Ready, Degraded, Established and Healthy about the pods that keep running.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use magictunnel_types::config::TunnelType;

use crate::pod_status::{HealthState, PodReport};
use crate::reason::Reason;
use crate::validate::Invalid;

pub const CONFIGURED: &str = "Configured";
pub const READY: &str = "Ready";
pub const DEGRADED: &str = "Degraded";
pub const ESTABLISHED: &str = "Established";
pub const HEALTHY: &str = "Healthy";
pub const SYNCHRONIZED: &str = "Synchronized";

/// What the operator did with the tunnel's spec.
#[derive(Debug, Clone, Copy)]
pub enum Deployment<'a> {
    /// Config and pods applied.
    Applied,
    /// Not deployable; `serving` pods run on with the last good config.
    Held {
        invalid: &'a Invalid,
        serving: usize,
    },
}

/// What one reconcile found.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    pub deployment: Deployment<'a>,
    /// Pods there should be: the spec's replicas, or the pods kept serving.
    pub desired_replicas: i32,
    pub ready_replicas: i32,
    pub tunnel_type: TunnelType,
    /// One entry per running endpoint pod: its last `/status`, `None` if not read (yet).
    pub reports: &'a [Option<PodReport>],
    /// Anycast IPsec replicas sharing SAs: the `Synchronized` condition
    /// ([`crate::sa_state::synchronized`]); `None` for every other tunnel (no condition).
    pub synchronized: Option<&'a (Status, Reason, String)>,
}

/// A condition's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

fn condition(
    type_: &str,
    status: Status,
    reason: Reason,
    message: String,
    generation: Option<i64>,
    old: &[Condition],
    now: &Time,
) -> Condition {
    let status = status.as_str();
    // lastTransitionTime changes only when the status does.
    let last_transition_time = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.as_str().into(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// Established from the pods' reports: True when every pod says so.
pub fn established(
    tunnel_type: TunnelType,
    reports: &[Option<PodReport>],
) -> (Status, Reason, String) {
    let n = reports.len();
    if n == 0 {
        return (
            Status::False,
            Reason::NoEndpoints,
            "no endpoint pod runs".into(),
        );
    }
    let read: Vec<&PodReport> = reports.iter().flatten().collect();
    let up = read.iter().filter(|r| r.established).count();
    let health_checks = read.iter().any(|r| r.health_checks);
    let (yes, no, what) = match (tunnel_type, health_checks) {
        (TunnelType::Ipsec, _) => (
            Reason::ChildSaInstalled,
            Reason::NoChildSa,
            "an IPsec Child SA installed",
        ),
        (TunnelType::Gre, true) => (
            Reason::ProbesAnswered,
            Reason::ProbesUnanswered,
            "their health probes answered",
        ),
        (TunnelType::Gre, false) => (
            Reason::TransportOpen,
            Reason::TransportClosed,
            "the transport open (health checks are disabled: the peer's side is not known)",
        ),
    };
    let counted = format!("{up}/{n} endpoint pods have {what}");
    if up == n {
        (Status::True, yes, counted)
    } else if read.len() > up {
        (Status::False, no, counted)
    } else {
        (
            Status::Unknown,
            Reason::StatusUnknown,
            format!(
                "{counted}; the /status of {} pod(s) is not known",
                n - read.len()
            ),
        )
    }
}

/// Healthy from the health-check state each pod reports: the worst one decides.
pub fn healthy(reports: &[Option<PodReport>]) -> (Status, Reason, String) {
    let n = reports.len();
    if n == 0 {
        // Not NoEndpoints: Established says that, and two Events of one reason would merge.
        return (
            Status::Unknown,
            Reason::HealthUnknown,
            "no endpoint pod runs".into(),
        );
    }
    let read: Vec<&PodReport> = reports.iter().flatten().collect();
    if read.iter().any(|r| !r.health_checks) {
        return (
            Status::Unknown,
            Reason::HealthChecksDisabled,
            "health checks are disabled (spec.healthCheck.enabled is false)".into(),
        );
    }
    let count = |s: HealthState| read.iter().filter(|r| r.health == s).count();
    let (healthy, degraded, down) = (
        count(HealthState::Healthy),
        count(HealthState::Degraded),
        count(HealthState::Down),
    );
    let unknown = n - healthy - degraded - down;
    let message = format!(
        "health checks of {n} endpoint pod(s): {healthy} healthy, {degraded} degraded, {down} down, {unknown} unknown"
    );
    if down > 0 {
        (Status::False, Reason::HealthChecksFailing, message)
    } else if degraded > 0 {
        (Status::False, Reason::HealthChecksDegraded, message)
    } else if unknown > 0 {
        (Status::Unknown, Reason::HealthUnknown, message)
    } else {
        (Status::True, Reason::HealthChecksPassing, message)
    }
}

pub fn conditions(
    obs: Observation<'_>,
    generation: Option<i64>,
    old: &[Condition],
    now: &Time,
) -> Vec<Condition> {
    let mk = |t: &str, status: Status, reason: Reason, msg: String| {
        condition(t, status, reason, msg, generation, old, now)
    };
    let (configured, serving_note) = match obs.deployment {
        Deployment::Applied => (
            mk(
                CONFIGURED,
                Status::True,
                Reason::Applied,
                format!(
                    "config and {} endpoint pod(s) applied",
                    obs.desired_replicas
                ),
            ),
            "",
        ),
        Deployment::Held { invalid, serving } => (
            mk(
                CONFIGURED,
                Status::False,
                invalid.reason,
                if serving > 0 {
                    format!(
                        "{}; the last good configuration keeps serving on {serving} pod(s)",
                        invalid.message
                    )
                } else {
                    invalid.message.clone()
                },
            ),
            " (last good configuration)",
        ),
    };
    let (ready, degraded) = match obs.deployment {
        Deployment::Held { serving: 0, .. } => (
            mk(
                READY,
                Status::False,
                Reason::NotConfigured,
                "the tunnel is not deployed: see Configured".into(),
            ),
            mk(
                DEGRADED,
                Status::False,
                Reason::NotConfigured,
                "the tunnel is not deployed".into(),
            ),
        ),
        _ => {
            let ready_msg = format!(
                "{}/{} endpoint pods ready{serving_note}",
                obs.ready_replicas, obs.desired_replicas
            );
            let all = obs.desired_replicas > 0 && obs.ready_replicas >= obs.desired_replicas;
            let some = obs.ready_replicas > 0 && !all;
            (
                if all {
                    mk(
                        READY,
                        Status::True,
                        Reason::EndpointsReady,
                        ready_msg.clone(),
                    )
                } else {
                    mk(
                        READY,
                        Status::False,
                        Reason::EndpointsNotReady,
                        ready_msg.clone(),
                    )
                },
                if some {
                    mk(DEGRADED, Status::True, Reason::EndpointsNotReady, ready_msg)
                } else {
                    mk(DEGRADED, Status::False, Reason::AsExpected, ready_msg)
                },
            )
        }
    };
    let (s, r, m) = established(obs.tunnel_type, obs.reports);
    let established = mk(ESTABLISHED, s, r, m);
    let (s, r, m) = healthy(obs.reports);
    let healthy = mk(HEALTHY, s, r, m);
    let mut out = vec![configured, ready, degraded, established, healthy];
    if let Some((s, r, m)) = obs.synchronized {
        out.push(mk(SYNCHRONIZED, *s, *r, m.clone()));
    }
    out
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

    fn report(established: bool, health: HealthState) -> Option<PodReport> {
        Some(PodReport {
            ready: established,
            established,
            health,
            health_checks: true,
        })
    }

    fn applied(desired: i32, ready: i32, reports: &[Option<PodReport>]) -> Observation<'_> {
        Observation {
            deployment: Deployment::Applied,
            desired_replicas: desired,
            ready_replicas: ready,
            tunnel_type: TunnelType::Gre,
            reports,
            synchronized: None,
        }
    }

    #[test]
    fn synchronized_appears_only_for_sync_tunnels() {
        let reports = [None];
        let plain = conditions(applied(1, 1, &reports), Some(2), &[], &at(10));
        assert!(plain.iter().all(|c| c.type_ != SYNCHRONIZED));
        let lagging = (
            Status::False,
            Reason::Lagging,
            "1 of 2 ready replica(s) behind".to_string(),
        );
        let obs = Observation {
            synchronized: Some(&lagging),
            ..applied(2, 2, &reports)
        };
        let cs = conditions(obs, Some(2), &plain, &at(20));
        let c = get(&cs, SYNCHRONIZED);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "Lagging"));
        assert_eq!(c.observed_generation, Some(2));
        let t = transitions(&plain, &cs);
        assert_eq!(t.len(), 1);
        assert!(t[0].warning, "lagging is a problem");
        let in_sync = (Status::True, Reason::InSync, "in sync".to_string());
        let later = conditions(
            Observation {
                synchronized: Some(&in_sync),
                ..applied(2, 2, &reports)
            },
            Some(2),
            &cs,
            &at(30),
        );
        assert_eq!(get(&later, SYNCHRONIZED).last_transition_time, at(30));
        assert!(!transitions(&cs, &later)[0].warning);
    }

    #[test]
    fn healthy_tunnel() {
        let reports = [
            report(true, HealthState::Healthy),
            report(true, HealthState::Healthy),
        ];
        let cs = conditions(applied(2, 2, &reports), Some(3), &[], &at(10));
        assert_eq!(get(&cs, CONFIGURED).status, "True");
        assert_eq!(get(&cs, READY).status, "True");
        assert_eq!(get(&cs, READY).message, "2/2 endpoint pods ready");
        assert_eq!(get(&cs, DEGRADED).status, "False");
        let e = get(&cs, ESTABLISHED);
        assert_eq!(
            (e.status.as_str(), e.reason.as_str()),
            ("True", "ProbesAnswered")
        );
        let h = get(&cs, HEALTHY);
        assert_eq!(
            (h.status.as_str(), h.reason.as_str()),
            ("True", "HealthChecksPassing")
        );
        assert!(cs.iter().all(|c| c.observed_generation == Some(3)));
    }

    #[test]
    fn partially_ready_is_degraded() {
        let cs = conditions(applied(3, 1, &[None, None, None]), None, &[], &at(10));
        assert_eq!(get(&cs, READY).status, "False");
        assert_eq!(get(&cs, DEGRADED).status, "True");
    }

    #[test]
    fn established_per_tunnel_kind() {
        let ipsec = established(TunnelType::Ipsec, &[report(true, HealthState::Down)]);
        assert_eq!((ipsec.0, ipsec.1), (Status::True, Reason::ChildSaInstalled));
        let no_sa = established(TunnelType::Ipsec, &[report(false, HealthState::Healthy)]);
        assert_eq!((no_sa.0, no_sa.1), (Status::False, Reason::NoChildSa));
        let gre = established(
            TunnelType::Gre,
            &[
                report(true, HealthState::Healthy),
                report(false, HealthState::Down),
            ],
        );
        assert_eq!((gre.0, gre.1), (Status::False, Reason::ProbesUnanswered));
        assert_eq!(gre.2, "1/2 endpoint pods have their health probes answered");
        let off = PodReport {
            ready: true,
            established: true,
            health: HealthState::Unknown,
            health_checks: false,
        };
        let open = established(TunnelType::Gre, &[Some(off)]);
        assert_eq!((open.0, open.1), (Status::True, Reason::TransportOpen));
        let unread = established(TunnelType::Gre, &[report(true, HealthState::Healthy), None]);
        assert_eq!(
            (unread.0, unread.1),
            (Status::Unknown, Reason::StatusUnknown)
        );
        let none = established(TunnelType::Gre, &[]);
        assert_eq!((none.0, none.1), (Status::False, Reason::NoEndpoints));
    }

    #[test]
    fn health_is_the_worst_pod_and_disabled_says_so() {
        let h = |r: &[Option<PodReport>]| {
            let (s, reason, _) = healthy(r);
            (s, reason)
        };
        use HealthState::*;
        assert_eq!(
            h(&[report(true, Healthy)]),
            (Status::True, Reason::HealthChecksPassing)
        );
        assert_eq!(
            h(&[report(true, Healthy), report(true, Degraded)]),
            (Status::False, Reason::HealthChecksDegraded)
        );
        assert_eq!(
            h(&[report(true, Degraded), report(false, Down)]),
            (Status::False, Reason::HealthChecksFailing)
        );
        assert_eq!(
            h(&[report(false, Unknown)]),
            (Status::Unknown, Reason::HealthUnknown)
        );
        assert_eq!(
            h(&[report(true, Healthy), None]),
            (Status::Unknown, Reason::HealthUnknown)
        );
        let off = PodReport {
            ready: true,
            established: true,
            health: Unknown,
            health_checks: false,
        };
        assert_eq!(
            h(&[Some(off)]),
            (Status::Unknown, Reason::HealthChecksDisabled)
        );
        assert_eq!(h(&[]), (Status::Unknown, Reason::HealthUnknown));
    }

    #[test]
    fn invalid_tunnel_reports_the_reason() {
        let invalid = Invalid {
            reason: Reason::PskSecretNotFound,
            message: "Secret x not found".into(),
        };
        let obs = Observation {
            deployment: Deployment::Held {
                invalid: &invalid,
                serving: 0,
            },
            desired_replicas: 0,
            ready_replicas: 0,
            tunnel_type: TunnelType::Ipsec,
            reports: &[],
            synchronized: None,
        };
        let cs = conditions(obs, None, &[], &at(10));
        let c = get(&cs, CONFIGURED);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "PskSecretNotFound")
        );
        assert_eq!(c.message, "Secret x not found");
        assert_eq!(get(&cs, READY).reason, "NotConfigured");
    }

    #[test]
    fn a_held_tunnel_says_the_last_good_config_serves_and_stays_truthful() {
        let invalid = Invalid {
            reason: Reason::PskSecretNotFound,
            message: "Secret default/corp-psk does not exist".into(),
        };
        let reports = [report(true, HealthState::Healthy)];
        let obs = Observation {
            deployment: Deployment::Held {
                invalid: &invalid,
                serving: 1,
            },
            desired_replicas: 1,
            ready_replicas: 1,
            tunnel_type: TunnelType::Ipsec,
            reports: &reports,
            synchronized: None,
        };
        let cs = conditions(obs, Some(2), &[], &at(10));
        let c = get(&cs, CONFIGURED);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "PskSecretNotFound")
        );
        assert!(
            c.message
                .ends_with("the last good configuration keeps serving on 1 pod(s)"),
            "{}",
            c.message
        );
        let r = get(&cs, READY);
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("True", "EndpointsReady")
        );
        assert_eq!(
            r.message,
            "1/1 endpoint pods ready (last good configuration)"
        );
        assert_eq!(get(&cs, ESTABLISHED).status, "True");
        assert_eq!(get(&cs, HEALTHY).status, "True");
    }

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let obs = applied(1, 0, &[None]);
        let first = conditions(obs, None, &[], &at(10));
        let same = conditions(obs, None, &first, &at(20));
        assert_eq!(get(&same, READY).last_transition_time, at(10));
        assert!(transitions(&first, &same).is_empty(), "no change, no event");

        let reports = [None];
        let ready = Observation {
            ready_replicas: 1,
            ..applied(1, 0, &reports)
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
            reason: Reason::EndpointConflict,
            message: "m".into(),
        };
        let obs = Observation {
            deployment: Deployment::Held {
                invalid: &invalid,
                serving: 0,
            },
            desired_replicas: 0,
            ready_replicas: 0,
            tunnel_type: TunnelType::Gre,
            reports: &[],
            synchronized: None,
        };
        let t = transitions(&[], &conditions(obs, None, &[], &at(1)));
        assert_eq!(t.len(), 5);
        assert!(
            t.iter()
                .find(|t| t.type_ == CONFIGURED)
                .is_some_and(|t| t.warning)
        );
    }
}
