//! Leader election on a `coordination.k8s.io/v1` Lease, so that several operator replicas can
//! run and exactly one reconciles.
//!
//! The decision is pure ([`decide`]): take a Lease that is free or expired, renew our own, never
//! take one that another holder renewed less than its `leaseDurationSeconds` ago. "Ago" is
//! measured on our own monotonic clock from the moment we first saw the Lease's current
//! resourceVersion ([`Observer`]), not from its `renewTime`, so clock skew between nodes cannot
//! make a live leader's Lease look expired. Writes are `create` or `replace` at the
//! resourceVersion read, so of two candidates at most one succeeds.
//!
//! A replica that loses the Lease (another holder took it, or renewals failed for the renew
//! deadline) stops: the binary exits and restarts as a follower, with nothing half-done in
//! memory. A replica shutting down cleanly releases the Lease so a follower takes over at once.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

/// Where and how to elect.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Our holderIdentity (the pod name).
    pub identity: String,
    pub duration: Duration,
    /// How often the leader renews.
    pub renew: Duration,
    /// How often a follower looks at the Lease.
    pub retry: Duration,
}

impl LeaseConfig {
    /// The leader gives up when it could not renew for this long: well before a follower may
    /// take the Lease (`duration` after it last saw it change).
    pub fn renew_deadline(&self) -> Duration {
        self.duration.saturating_sub(self.renew).max(self.renew)
    }
}

/// What to do with the Lease as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No Lease: create it, holding it.
    Create,
    /// Free (no holder) or expired: take it over.
    Acquire,
    /// Ours: renew it.
    Renew,
    /// Another holder's, still valid: wait.
    Follow { holder: String },
}

/// Decide from the Lease's spec, our identity and how long the Lease has been unchanged as we
/// observed it.
pub fn decide(
    lease: Option<&LeaseSpec>,
    me: &str,
    unchanged_for: Duration,
    default_duration: Duration,
) -> Decision {
    let Some(spec) = lease else {
        return Decision::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() {
        return Decision::Acquire;
    }
    if holder == me {
        return Decision::Renew;
    }
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(default_duration, Duration::from_secs);
    if unchanged_for >= duration {
        Decision::Acquire
    } else {
        Decision::Follow {
            holder: holder.to_string(),
        }
    }
}

/// Tracks since when the Lease has had its current resourceVersion, on the local clock.
#[derive(Debug, Default)]
pub struct Observer {
    seen: Option<(String, Instant)>,
}

impl Observer {
    /// How long `resource_version` has been the Lease's version, as of `now`.
    pub fn unchanged_for(&mut self, resource_version: &str, now: Instant) -> Duration {
        match &self.seen {
            Some((rv, since)) if rv == resource_version => now.saturating_duration_since(*since),
            _ => {
                self.seen = Some((resource_version.to_string(), now));
                Duration::ZERO
            }
        }
    }
}

/// The Lease body for a decision (pure). `current` is the Lease as read (for replace).
pub fn desired_lease(
    decision: &Decision,
    current: Option<&Lease>,
    config: &LeaseConfig,
    now: Timestamp,
) -> Option<Lease> {
    let seconds = i32::try_from(config.duration.as_secs()).unwrap_or(i32::MAX);
    let old = current.and_then(|l| l.spec.clone()).unwrap_or_default();
    let spec = match decision {
        Decision::Follow { .. } => return None,
        Decision::Create => LeaseSpec {
            holder_identity: Some(config.identity.clone()),
            lease_duration_seconds: Some(seconds),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(0),
            ..Default::default()
        },
        Decision::Acquire => LeaseSpec {
            holder_identity: Some(config.identity.clone()),
            lease_duration_seconds: Some(seconds),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(old.lease_transitions.unwrap_or(0).saturating_add(1)),
            ..old
        },
        Decision::Renew => LeaseSpec {
            lease_duration_seconds: Some(seconds),
            renew_time: Some(MicroTime(now)),
            ..old
        },
    };
    let metadata = match current {
        Some(l) => ObjectMeta {
            name: l.metadata.name.clone(),
            namespace: l.metadata.namespace.clone(),
            resource_version: l.metadata.resource_version.clone(),
            labels: l.metadata.labels.clone(),
            annotations: l.metadata.annotations.clone(),
            ..Default::default()
        },
        None => ObjectMeta {
            name: Some(config.name.clone()),
            namespace: Some(config.namespace.clone()),
            ..Default::default()
        },
    };
    Some(Lease {
        metadata,
        spec: Some(spec),
    })
}

/// One look at the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// We hold the Lease (created, acquired or renewed it just now).
    Leader,
    /// Someone else holds it.
    Follower { holder: String },
    /// Someone wrote the Lease between our read and our write: look again.
    Conflict,
}

/// Why the leader stopped.
#[derive(Debug, thiserror::Error)]
pub enum Lost {
    #[error("the Lease is now held by {0}")]
    TakenBy(String),
    #[error("the Lease could not be renewed for {0:?}: {1}")]
    RenewFailed(Duration, String),
}

pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    observer: Observer,
}

impl Elector {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Elector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observer: Observer::default(),
        }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// Read the Lease, decide, write. Each API call is bounded by the renew interval.
    pub async fn try_once(&mut self) -> Result<Attempt, String> {
        let limit = self.config.renew;
        let current = tokio::time::timeout(limit, self.api.get_opt(&self.config.name))
            .await
            .map_err(|_| format!("no answer within {limit:?}"))?
            .map_err(|e| e.to_string())?;
        let unchanged = current
            .as_ref()
            .and_then(|l| l.metadata.resource_version.as_deref())
            .map_or(Duration::ZERO, |rv| {
                self.observer.unchanged_for(rv, Instant::now())
            });
        let decision = decide(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.config.identity,
            unchanged,
            self.config.duration,
        );
        let Some(body) = desired_lease(&decision, current.as_ref(), &self.config, Timestamp::now())
        else {
            let Decision::Follow { holder } = decision else {
                return Err("no Lease to write".into());
            };
            return Ok(Attempt::Follower { holder });
        };
        let pp = PostParams::default();
        let write = async {
            if decision == Decision::Create {
                self.api.create(&pp, &body).await
            } else {
                self.api.replace(&self.config.name, &pp, &body).await
            }
        };
        match tokio::time::timeout(limit, write).await {
            Err(_) => Err(format!("no answer within {limit:?}")),
            Ok(Ok(_)) => Ok(Attempt::Leader),
            // 409: created or replaced by someone else first.
            Ok(Err(kube::Error::Api(s))) if s.code == 409 => Ok(Attempt::Conflict),
            Ok(Err(e)) => Err(e.to_string()),
        }
    }

    /// Wait until we hold the Lease.
    pub async fn acquire(&mut self) {
        let mut last_holder = None;
        loop {
            match self.try_once().await {
                Ok(Attempt::Leader) => {
                    tracing::info!(lease = %self.config.name, identity = %self.config.identity, "became the leader");
                    return;
                }
                Ok(Attempt::Follower { holder }) => {
                    if last_holder.as_ref() != Some(&holder) {
                        tracing::info!(%holder, "another replica is the leader; waiting");
                        last_holder = Some(holder);
                    }
                }
                Ok(Attempt::Conflict) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read or write the leader Lease"),
            }
            tokio::time::sleep(self.config.retry).await;
        }
    }

    /// Renew until the Lease is lost; returns why.
    pub async fn hold(&mut self) -> Lost {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.config.renew).await;
            loop {
                match self.try_once().await {
                    Ok(Attempt::Leader) => {
                        renewed = Instant::now();
                        break;
                    }
                    Ok(Attempt::Follower { holder }) => return Lost::TakenBy(holder),
                    Ok(Attempt::Conflict) => {}
                    Err(e) => {
                        let deadline = self.config.renew_deadline();
                        if renewed.elapsed() >= deadline {
                            return Lost::RenewFailed(deadline, e);
                        }
                        tracing::warn!(error = %e, "cannot renew the leader Lease; retrying");
                    }
                }
                tokio::time::sleep(self.config.retry.min(self.config.renew)).await;
            }
        }
    }

    /// On a clean shutdown: give the Lease up so a follower takes over without waiting for it
    /// to expire. Only our own Lease, at the version read.
    pub async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let ours = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(self.config.identity.as_str());
        if !ours {
            return;
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(Timestamp::now()));
        }
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!("released the leader Lease"),
            Err(e) => tracing::warn!(error = %e, "could not release the leader Lease"),
        }
    }
}

/// Run `work` (the controller) while we hold the Lease; without an elector, just run it. When
/// `work` ends (a clean shutdown) the Lease is released; when the Lease is lost the process
/// exits at once, so that nothing half-done stays in memory and the pod restarts as a follower.
pub async fn lead(elector: Option<&mut Elector>, work: impl std::future::Future<Output = ()>) {
    let Some(e) = elector else {
        return work.await;
    };
    tokio::select! {
        () = work => {}
        lost = e.hold() => {
            tracing::error!(reason = %lost, "lost the leader Lease; exiting");
            std::process::exit(1);
        }
    }
    e.release().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(15);

    fn held_by(holder: Option<&str>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: Some(15),
            ..Default::default()
        }
    }

    #[test]
    fn acquire_when_missing_free_or_expired() {
        assert_eq!(decide(None, "a", Duration::ZERO, D), Decision::Create);
        assert_eq!(
            decide(Some(&held_by(None)), "a", Duration::ZERO, D),
            Decision::Acquire
        );
        assert_eq!(
            decide(Some(&held_by(Some(""))), "a", Duration::ZERO, D),
            Decision::Acquire
        );
        assert_eq!(
            decide(Some(&held_by(Some("b"))), "a", Duration::from_secs(15), D),
            Decision::Acquire
        );
    }

    #[test]
    fn renew_our_own_and_never_steal_a_valid_lease() {
        assert_eq!(
            decide(Some(&held_by(Some("a"))), "a", Duration::from_secs(100), D),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&held_by(Some("b"))), "a", Duration::from_secs(14), D),
            Decision::Follow { holder: "b".into() }
        );
        // The holder's own duration counts, not ours.
        let long = LeaseSpec {
            lease_duration_seconds: Some(60),
            ..held_by(Some("b"))
        };
        assert_eq!(
            decide(Some(&long), "a", Duration::from_secs(30), D),
            Decision::Follow { holder: "b".into() }
        );
        // A Lease without a duration gets ours.
        let bare = LeaseSpec {
            lease_duration_seconds: None,
            ..held_by(Some("b"))
        };
        assert_eq!(
            decide(Some(&bare), "a", Duration::from_secs(16), D),
            Decision::Acquire
        );
    }

    #[test]
    fn expiry_is_measured_from_the_last_change_we_saw() {
        let mut o = Observer::default();
        let t0 = Instant::now();
        assert_eq!(o.unchanged_for("1", t0), Duration::ZERO);
        assert_eq!(o.unchanged_for("1", t0 + D), D);
        // Renewed (new version): the clock starts again.
        assert_eq!(o.unchanged_for("2", t0 + D), Duration::ZERO);
        assert_eq!(
            o.unchanged_for("2", t0 + D + Duration::from_secs(3)),
            Duration::from_secs(3)
        );
    }

    fn config() -> LeaseConfig {
        LeaseConfig {
            namespace: "ops".into(),
            name: "magictunnel-operator".into(),
            identity: "op-a".into(),
            duration: D,
            renew: Duration::from_secs(5),
            retry: Duration::from_secs(2),
        }
    }

    #[test]
    fn lease_bodies_keep_the_version_and_count_transitions() {
        let now = Timestamp::UNIX_EPOCH;
        let created = desired_lease(&Decision::Create, None, &config(), now).expect("lease");
        assert_eq!(
            created.metadata.name.as_deref(),
            Some("magictunnel-operator")
        );
        let spec = created.spec.clone().unwrap_or_default();
        assert_eq!(spec.holder_identity.as_deref(), Some("op-a"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.lease_transitions, Some(0));

        let mut theirs = created.clone();
        theirs.metadata.resource_version = Some("7".into());
        if let Some(s) = theirs.spec.as_mut() {
            s.holder_identity = Some("op-b".into());
            s.lease_transitions = Some(3);
        }
        let taken =
            desired_lease(&Decision::Acquire, Some(&theirs), &config(), now).expect("lease");
        assert_eq!(taken.metadata.resource_version.as_deref(), Some("7"));
        let spec = taken.spec.unwrap_or_default();
        assert_eq!(spec.holder_identity.as_deref(), Some("op-a"));
        assert_eq!(spec.lease_transitions, Some(4));
        assert!(
            desired_lease(
                &Decision::Follow { holder: "b".into() },
                Some(&theirs),
                &config(),
                now
            )
            .is_none()
        );
        assert_eq!(config().renew_deadline(), Duration::from_secs(10));
    }

    /// Against a mocked API server: a missing Lease is created with us as holder; a Lease held
    /// by someone else and renewed is left alone; a conflict on write is reported as such.
    #[tokio::test]
    async fn elector_creates_follows_and_sees_conflicts() {
        use http::{Request, Response};
        use kube::client::Body;
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let mut elector = Elector::new(client, config());
        const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases";
        let server = tokio::spawn(async move {
            let reply = |send: tower_test::mock::SendResponse<Response<Body>>,
                         code: u16,
                         body: serde_json::Value| {
                send.send_response(
                    Response::builder()
                        .status(code)
                        .body(Body::from(serde_json::to_vec(&body).unwrap_or_default()))
                        .expect("response"),
                );
            };
            let not_found = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404});
            // 1: GET → 404, POST → created.
            let (req, send) = handle.next_request().await.expect("get");
            assert_eq!(
                (req.method().as_str(), req.uri().path()),
                ("GET", &*format!("{PATH}/magictunnel-operator"))
            );
            reply(send, 404, not_found.clone());
            let (req, send) = handle.next_request().await.expect("post");
            assert_eq!((req.method().as_str(), req.uri().path()), ("POST", PATH));
            let body: serde_json::Value =
                serde_json::from_slice(&req.into_body().collect_bytes().await.expect("body"))
                    .expect("json");
            assert_eq!(body["spec"]["holderIdentity"], "op-a");
            reply(send, 201, body);
            // 2: GET → held by op-b: no write.
            let theirs = serde_json::json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "magictunnel-operator", "namespace": "ops", "resourceVersion": "9"},
                "spec": {"holderIdentity": "op-b", "leaseDurationSeconds": 15}
            });
            let (_, send) = handle.next_request().await.expect("get");
            reply(send, 200, theirs.clone());
            // 3: GET → free, PUT at version 9 → 409.
            let mut free = theirs.clone();
            free["spec"]["holderIdentity"] = serde_json::Value::Null;
            let (_, send) = handle.next_request().await.expect("get");
            reply(send, 200, free);
            let (req, send) = handle.next_request().await.expect("put");
            assert_eq!(req.method().as_str(), "PUT");
            let body: serde_json::Value =
                serde_json::from_slice(&req.into_body().collect_bytes().await.expect("body"))
                    .expect("json");
            assert_eq!(
                body["metadata"]["resourceVersion"], "9",
                "optimistic concurrency"
            );
            reply(
                send,
                409,
                serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409}),
            );
        });
        assert_eq!(elector.try_once().await, Ok(Attempt::Leader));
        assert_eq!(
            elector.try_once().await,
            Ok(Attempt::Follower {
                holder: "op-b".into()
            })
        );
        assert_eq!(elector.try_once().await, Ok(Attempt::Conflict));
        server.await.expect("server checks pass");
    }
}
