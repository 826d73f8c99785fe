//! The thin, impure layer: read Secrets, write the PSK Secret, server-side apply the config
//! Secret, create and delete pods, write status and Events. Every decision is made by the pure
//! modules; this one only carries them out, in this order:
//!
//! 1. PSK: read the Secret, then do what [`psk::plan`] says (use, create, rotate, or report).
//! 2. Config Secret: server-side apply (it must exist before a pod mounts it), only with a
//!    deployable config: the Secret always holds the last good config. For an anycast IPsec
//!    tunnel ([`sync_objects`]) first the SA-state Secret `<name>-sa` is read, or created empty
//!    (a Secret of that name that is not the tunnel's holds it: `SaSecretNameTaken`), and after
//!    the config the ServiceAccount, Role and RoleBinding are server-side applied (a pod naming
//!    a missing ServiceAccount is refused).
//! 3. Pods: list the tunnel's pods, then create and delete what [`rollout::plan`] says; for a
//!    tunnel that is not deployable, read the config Secret's record of the last good config
//!    and delete only what [`rollout::hold`] says (the rest keeps serving), except for a
//!    conflict with an older tunnel ([`Reason::is_conflict`]): then every pod goes.
//! 4. SA sharing that ended: for a deployable tunnel that no longer shares SAs but still has an
//!    SA-state Secret (the owned-Secret cache says so, no request), the RoleBinding, Role,
//!    ServiceAccount and last the Secret are deleted. A held tunnel keeps them.
//! 5. Status: conditions from the above and from the pods' last `/status`
//!    ([`pod_status::Board`], read by a poller, never here), and for anycast IPsec from the
//!    SA-state Secret's `summary.json` and `acks.json` ([`sa_state`]), written only when it
//!    changed, with one Event per condition transition.
//!
//! No finalizer: everything the operator creates carries an owner reference, so the garbage
//! collector removes it with the tunnel; adopted Secrets are never owned and stay.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use magictunnel_types::config::Psk;
use ring::rand::SecureRandom;

use crate::build::{self, Desired, FIELD_MANAGER};
use crate::conditions::{self, Deployment, Observation};
use crate::crd::{EndpointStatus, MagicTunnel, MagicTunnelStatus};
use crate::metrics::{ConditionReasonLabel, Metrics, ReasonLabel, ResultLabel};
use crate::pod_status::{self, Board, PodReport, Target, TunnelKey};
use crate::psk::{self, PskPlan};
#[cfg(doc)]
use crate::reason::Reason;
use crate::rollout;
use crate::settings::Settings;
use crate::sync_objects::{self, SyncObjects};
use crate::validate::{self, Invalid, PskSource, ValidatedTunnel};
use crate::{reason, sa_state};

/// Failures that are retried with backoff (API errors). Specs that cannot be deployed are not
/// errors: they end as `Configured=False` and wait for a change.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the object has no {0}")]
    Malformed(&'static str),
    #[error("reading Secret {name}: {source}")]
    ReadSecret { name: String, source: kube::Error },
    #[error("writing the PSK Secret {name}: {source}")]
    WritePsk { name: String, source: kube::Error },
    #[error("the system random generator failed")]
    Random,
    #[error("applying the config Secret: {0}")]
    ApplyConfig(kube::Error),
    #[error("listing pods: {0}")]
    ListPods(kube::Error),
    #[error("creating pod {name}: {source}")]
    CreatePod { name: String, source: kube::Error },
    #[error("deleting pod {name}: {source}")]
    DeletePod { name: String, source: kube::Error },
    #[error("writing status: {0}")]
    PatchStatus(kube::Error),
    #[error("creating the SA-state Secret {name}: {source}")]
    CreateSaSecret { name: String, source: kube::Error },
    #[error("applying {kind} {name}: {source}")]
    ApplySync {
        kind: &'static str,
        name: String,
        source: kube::Error,
    },
    #[error("deleting {kind} {name}: {source}")]
    DeleteSync {
        kind: &'static str,
        name: String,
        source: kube::Error,
    },
}

impl Error {
    /// Bounded metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Malformed(_) => "malformed",
            Error::ReadSecret { .. } => "read_secret",
            Error::WritePsk { .. } => "write_psk",
            Error::Random => "random",
            Error::ApplyConfig(_) => "apply_config",
            Error::ListPods(_) => "list_pods",
            Error::CreatePod { .. } => "create_pod",
            Error::DeletePod { .. } => "delete_pod",
            Error::PatchStatus(_) => "patch_status",
            Error::CreateSaSecret { .. } => "create_sa_secret",
            Error::ApplySync { .. } => "apply_sync",
            Error::DeleteSync { .. } => "delete_sync",
        }
    }
}

/// The index of the tunnels the operator knows, for cross-object rules (kept by the watch).
pub type TunnelSource = Arc<crate::triggers::Tracker>;

pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub tunnels: TunnelSource,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub rng: Box<dyn SecureRandom + Send + Sync>,
    pub now: fn() -> Timestamp,
    /// The pods' last `/status`, kept by the poller ([`pod_status::run`]).
    pub pod_status: Arc<Board>,
    /// The metadata of the operator's own Secrets (kept by the owned-Secret watch): tells
    /// whether a tunnel still has an SA-state Secret to prune, without a request. Empty unless
    /// [`Context::with_owned_secrets`] is given the watch's store.
    pub owned_secrets: Store<PartialObjectMeta<Secret>>,
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        tunnels: TunnelSource,
        recorder: Recorder,
        metrics: Arc<Metrics>,
    ) -> Self {
        Context {
            client,
            settings,
            tunnels,
            recorder,
            metrics,
            rng: Box::new(ring::rand::SystemRandom::new()),
            now: Timestamp::now,
            pod_status: Arc::new(Board::default()),
            owned_secrets: reflector::store().0,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Use the store of the owned-Secret watch to find SA-state Secrets to prune.
    pub fn with_owned_secrets(mut self, store: Store<PartialObjectMeta<Secret>>) -> Self {
        self.owned_secrets = store;
        self
    }

    /// Whether the owned-Secret cache holds the SA-state Secret of the tunnel `owner`.
    fn has_sa_secret(&self, namespace: &str, tunnel: &str, owner_uid: &str) -> bool {
        let name = sync_objects::sa_secret_name(tunnel);
        self.owned_secrets
            .get(&ObjectRef::new(&name).within(namespace))
            .is_some_and(|s| {
                s.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.uid == owner_uid)
            })
    }
}

/// How often a settled tunnel is looked at again even without a watch event.
pub const RESYNC: Duration = Duration::from_secs(300);

/// Entry point for the controller. Objects that fail to decode are counted and left alone: one
/// bad object must not stall the others.
pub async fn reconcile(
    obj: Arc<DeserializeGuard<MagicTunnel>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    match &obj.0 {
        Ok(mt) => reconcile_tunnel(mt, &ctx).await,
        Err(invalid) => {
            ctx.metrics.invalid_objects.inc();
            tracing::warn!(error = %invalid, "cannot decode a MagicTunnel; skipping it");
            Ok(Action::await_change())
        }
    }
}

/// Backoff: 5 s doubling to 5 min per object, reset by a success.
pub fn error_policy(
    obj: Arc<DeserializeGuard<MagicTunnel>>,
    err: &Error,
    ctx: Arc<Context>,
) -> Action {
    ctx.metrics
        .failures
        .get_or_create(&ReasonLabel {
            reason: err.reason(),
        })
        .inc();
    let key = object_key(obj.as_ref());
    let attempts = {
        let mut failures = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = Duration::from_secs(5u64.saturating_mul(1 << attempts.min(6).saturating_sub(1)))
        .min(RESYNC);
    tracing::warn!(error = %err, attempts, ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

/// Reconcile one decoded tunnel.
pub async fn reconcile_tunnel(mt: &MagicTunnel, ctx: &Context) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(mt, ctx).await;
    ctx.metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    let label = match &result {
        Ok((Outcome::Applied, _)) => "applied",
        Ok((Outcome::NotDeployed, _)) => "not_deployed",
        Err(_) => "error",
    };
    ctx.metrics
        .reconciles
        .get_or_create(&ResultLabel { result: label })
        .inc();
    if result.is_ok() {
        let mut failures = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(&object_key(mt));
    }
    result.map(|(_, recheck)| Action::requeue(recheck.map_or(RESYNC, |d| d.min(RESYNC))))
}

fn object_key(obj: &impl ResourceExt) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

enum Outcome {
    Applied,
    NotDeployed,
}

/// What status says about the PSK.
#[derive(Default)]
struct PskStatus {
    secret_name: Option<String>,
    generated_at: Option<String>,
}

/// What a reconcile did, and how soon to look again if sooner than [`RESYNC`].
async fn reconcile_inner(
    mt: &MagicTunnel,
    ctx: &Context,
) -> Result<(Outcome, Option<Duration>), Error> {
    let namespace = mt.namespace().ok_or(Error::Malformed("namespace"))?;
    let key = TunnelKey {
        namespace: namespace.clone(),
        name: mt.name_any(),
    };
    if mt.metadata.deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove pods and Secrets.
        ctx.pod_status.set_targets(key, vec![]);
        return Ok((Outcome::NotDeployed, None));
    }
    let owner = mt
        .controller_owner_ref(&())
        .ok_or(Error::Malformed("uid"))?;
    let validated = validate::validate(mt, &ctx.tunnels.read(), &ctx.settings);
    let mut psk_status = PskStatus::default();
    let desired: Result<(ValidatedTunnel, Desired), Invalid> = match validated {
        Err(invalid) => Err(invalid),
        Ok(v) => {
            let psk = match &v.ipsec {
                Some(ipsec) => resolve_psk(mt, &v, &ipsec.psk, &owner, ctx, &mut psk_status)
                    .await?
                    .map(Some),
                None => Ok(None),
            };
            psk.and_then(|psk| {
                build::desired(&v, &owner, psk.as_ref(), &ctx.settings)
                    .map(|d| (v, d.with_generation(mt.metadata.generation)))
            })
        }
    };

    // Anycast IPsec: the SA-state Secret is created empty or found to be this tunnel's (its
    // data, as of now, feeds status); a Secret of that name that is not ours holds the tunnel.
    // `sa_data` is `Some` exactly for a tunnel whose replicas share SAs.
    let mut sa_data: Option<Option<SecretData>> = None;
    let desired = match desired {
        Ok((v, d)) => match &d.sync {
            Some(sync) => {
                match ensure_sa_secret(ctx, &namespace, &sync.secret, &owner.uid).await? {
                    Ok(data) => {
                        sa_data = Some(data);
                        Ok((v, d))
                    }
                    Err(invalid) => Err(invalid),
                }
            }
            None => Ok((v, d)),
        },
        Err(invalid) => Err(invalid),
    };

    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    if let Ok((v, d)) = &desired {
        // Write-ahead: the HTTP port is part of the pods' config, and a port this operator
        // assigned but never recorded would be assigned afresh (in age order, perhaps another)
        // by a leader that takes over: it would then replace pods that were fine.
        if mt.status.as_ref().and_then(|s| s.http_port) != Some(v.http_port) {
            record_http_port(ctx, mt, &namespace, v.http_port).await?;
        }
        apply_config(ctx, &namespace, &d.config_secret).await?;
        // Before the pods: a pod naming a ServiceAccount that does not exist is refused.
        if let Some(sync) = &d.sync {
            apply_sync(ctx, &namespace, sync).await?;
        }
    }
    let existing: Vec<Pod> = pods
        .list(&ListParams::default().labels(&build::pod_selector(&mt.name_any())))
        .await
        .map_err(Error::ListPods)?
        .items
        .into_iter()
        .filter(|p| p.owner_references().iter().any(|o| o.uid == owner.uid))
        .collect();
    let (plan, serving) = match &desired {
        Ok((_, d)) => (rollout::plan(&d.pods, &existing), None),
        // An older tunnel holds what this one needs: no pod of this one may run beside it.
        Err(invalid) if invalid.reason.is_conflict() => (
            rollout::PodPlan {
                create: vec![],
                delete: rollout::hold(mt.metadata.generation, None, &existing).delete,
            },
            Some(0),
        ),
        // Not deployable: the pods that run the last good config of this spec keep serving.
        Err(_) => {
            let name = build::config_secret_name(&mt.name_any());
            let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
            let config =
                secrets
                    .get_metadata_opt(&name)
                    .await
                    .map_err(|source| Error::ReadSecret {
                        name: name.clone(),
                        source,
                    })?;
            let last_good = config
                .as_ref()
                .map(|c| build::last_good(c.metadata.annotations.as_ref()));
            let hold = rollout::hold(mt.metadata.generation, last_good, &existing);
            (
                rollout::PodPlan {
                    create: vec![],
                    delete: hold.delete,
                },
                Some(hold.keep.len()),
            )
        }
    };
    for name in &plan.delete {
        match pods.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => {
                return Err(Error::DeletePod {
                    name: name.clone(),
                    source,
                });
            }
        }
    }
    for pod in &plan.create {
        let name = pod.name_any();
        match pods.create(&PostParams::default(), pod).await {
            Ok(_) => {}
            // Created by a previous pass whose answer we missed; the next pass sees it.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(source) => return Err(Error::CreatePod { name, source }),
        }
    }

    // Sharing no longer applies (replicas 1, GRE): the sync objects go. A tunnel that is held
    // keeps them, as its pods keep running.
    let tunnel = mt.name_any();
    let has_sa_secret = ctx.has_sa_secret(&namespace, &tunnel, &owner.uid);
    if let Ok((_, d)) = &desired
        && d.sync.is_none()
        && has_sa_secret
    {
        prune_sync(ctx, &namespace, &tunnel).await?;
    }
    if desired.is_err() && serving.is_some_and(|n| n > 0) && has_sa_secret {
        // Held, with pods kept serving that may share SAs: status still shows their state.
        let name = sync_objects::sa_secret_name(&tunnel);
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
        let secret = secrets
            .get_opt(&name)
            .await
            .map_err(|source| Error::ReadSecret { name, source })?;
        sa_data = secret.map(|s| s.data.map(sa_state::keep_documents));
    }

    let old_status = mt.status.clone().unwrap_or_default();
    let validated = desired.as_ref().ok().map(|(v, _)| v);
    let http_port = validated.map(|v| v.http_port).or(old_status.http_port);
    // The poller asks the pods that keep running; reconciles only read what it saw.
    let running = running_pods(&existing, &plan);
    ctx.pod_status
        .set_targets(key, status_targets(&running, http_port));
    ctx.metrics
        .status_targets
        .set(i64::try_from(ctx.pod_status.len()).unwrap_or(i64::MAX));
    let reports = endpoint_reports(&ctx.pod_status, &running, &plan);
    let mut endpoints = endpoint_status(&running, &plan);
    let ready = endpoints.iter().filter(|e| e.ready).count();
    // What the replicas published; `state.json` is never read.
    let previous_sync = old_status
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::SYNCHRONIZED)
        .map(|c| c.reason.as_str());
    let verdict = sa_data.map(|data| {
        let state = sa_state::read(data.as_ref());
        sa_state::annotate(&mut endpoints, &state);
        sa_state::synchronized(
            &sync_objects::sa_secret_name(&tunnel),
            &state,
            &endpoints,
            previous_sync,
            (ctx.now)(),
        )
    });
    let recheck = verdict.as_ref().and_then(|v| v.recheck_in);
    let synchronized = verdict.map(|v| v.condition);
    let deployment = match (&desired, serving) {
        (Err(invalid), serving) => Deployment::Held {
            invalid,
            serving: serving.unwrap_or(0),
        },
        (Ok(_), _) => Deployment::Applied,
    };
    let desired_replicas = match (&desired, serving) {
        (Ok((v, _)), _) => v.replicas,
        (Err(_), serving) => i32::try_from(serving.unwrap_or(0)).unwrap_or(i32::MAX),
    };
    if let Err(invalid) = &desired {
        ctx.metrics
            .not_deployed
            .get_or_create(&ConditionReasonLabel {
                reason: invalid.reason,
            })
            .inc();
    }
    let observation = Observation {
        deployment,
        desired_replicas,
        ready_replicas: i32::try_from(ready).unwrap_or(i32::MAX),
        tunnel_type: validated.map_or(mt.spec.tunnel_type, |v| v.tunnel_type),
        reports: &reports,
        synchronized: synchronized.as_ref(),
    };
    let now = Time((ctx.now)());
    let new_conditions = conditions::conditions(
        observation,
        mt.metadata.generation,
        &old_status.conditions,
        &now,
    );
    // A tunnel kept serving still shows what its running pods were built with.
    let kept = serving.is_some_and(|n| n > 0);
    let status = MagicTunnelStatus {
        tunnel_id: crate::ike_id::tunnel_id(&owner.uid),
        ike_ids: validated
            .and_then(|v| v.ipsec.as_ref())
            .map(|i| i.identities.status(&i.accepted_id_types))
            .or_else(|| kept.then(|| old_status.ike_ids.clone()).flatten()),
        psk_secret_name: psk_status
            .secret_name
            .or_else(|| kept.then(|| old_status.psk_secret_name.clone()).flatten()),
        psk_generated_at: psk_status
            .generated_at
            .or_else(|| kept.then(|| old_status.psk_generated_at.clone()).flatten()),
        http_port,
        endpoints,
        conditions: new_conditions,
        observed_generation: mt.metadata.generation,
    };
    if status != old_status {
        write_status(ctx, mt, &namespace, &status).await?;
        for t in conditions::transitions(&old_status.conditions, &status.conditions) {
            let type_ = if t.warning {
                EventType::Warning
            } else {
                EventType::Normal
            };
            publish(ctx, mt, type_, &t.reason, "Reconcile", t.message).await;
        }
    }
    tracing::info!(
        tunnel = %format!("{namespace}/{}", mt.name_any()),
        configured = desired.is_ok(),
        kept = serving.unwrap_or(0),
        ready = observation.ready_replicas,
        desired = desired_replicas,
        created = plan.create.len(),
        deleted = plan.delete.len(),
        "reconciled"
    );
    let outcome = if desired.is_ok() {
        Outcome::Applied
    } else {
        Outcome::NotDeployed
    };
    Ok((outcome, recheck))
}

/// Read or produce the PSK as [`psk::plan`] decides. `Ok(Err(_))` is a spec problem for
/// status, `Err(_)` an API failure.
async fn resolve_psk(
    mt: &MagicTunnel,
    v: &ValidatedTunnel,
    source: &PskSource,
    owner: &OwnerReference,
    ctx: &Context,
    status: &mut PskStatus,
) -> Result<Result<Psk, Invalid>, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &v.namespace);
    let name = source.secret_name().to_string();
    let existing = secrets
        .get_opt(&name)
        .await
        .map_err(|source| Error::ReadSecret {
            name: name.clone(),
            source,
        })?;
    status.secret_name = Some(name.clone());
    let created = match psk::plan(source, &v.namespace, existing.as_ref(), &owner.uid) {
        PskPlan::Use { psk, generated_at } => {
            status.generated_at = generated_at;
            return Ok(Ok(psk));
        }
        PskPlan::Problem(invalid) => return Ok(Err(invalid)),
        PskPlan::Create => None,
        PskPlan::Rotate { resource_version } => Some(resource_version),
    };
    let psk = psk::generate(ctx.rng.as_ref()).map_err(|_| Error::Random)?;
    let now = (ctx.now)().to_string();
    let rotation = match source {
        PskSource::Generated { rotation, .. } => rotation.as_deref(),
        PskSource::Adopted { .. } => None,
    };
    let mut secret = build::generated_psk_secret(v, owner, &psk, &now, rotation);
    let written = match &created {
        None => secrets.create(&PostParams::default(), &secret).await,
        Some(resource_version) => {
            // Optimistic concurrency: replace exactly the version we decided on.
            secret.metadata.resource_version = resource_version.clone();
            secrets
                .replace(&name, &PostParams::default(), &secret)
                .await
        }
    };
    written.map_err(|source| Error::WritePsk {
        name: name.clone(),
        source,
    })?;
    status.generated_at = Some(now);
    let (reason, note) = psk::written_event(created.is_none(), &name);
    publish(
        ctx,
        mt,
        EventType::Normal,
        reason.as_str(),
        "ManagePsk",
        note,
    )
    .await;
    Ok(Ok(psk))
}

/// A Secret's data.
type SecretData = std::collections::BTreeMap<String, ByteString>;

/// The tunnel's SA-state Secret: created empty when absent (never written afterwards), else
/// checked to be this tunnel's. `Ok(Ok(data))`: ours, with its data as of now; `Ok(Err(_))`:
/// the name is taken by a Secret that is not ours.
async fn ensure_sa_secret(
    ctx: &Context,
    namespace: &str,
    desired: &Secret,
    owner_uid: &str,
) -> Result<Result<Option<SecretData>, Invalid>, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let name = desired.name_any();
    let read = |name: String| async {
        secrets
            .get_opt(&name)
            .await
            .map_err(|source| Error::ReadSecret { name, source })
    };
    let existing = match read(name.clone()).await? {
        Some(s) => s,
        None => match secrets.create(&PostParams::default(), desired).await {
            Ok(_) => return Ok(Ok(None)),
            // Created meanwhile (a previous pass whose answer we missed, or someone else):
            // check whose it is.
            Err(kube::Error::Api(s)) if s.code == 409 => match read(name.clone()).await? {
                Some(s) => s,
                None => return Ok(Ok(None)),
            },
            Err(source) => return Err(Error::CreateSaSecret { name, source }),
        },
    };
    if sync_objects::is_ours(&existing.metadata, existing.type_.as_deref(), owner_uid) {
        Ok(Ok(existing.data.map(sa_state::keep_documents)))
    } else {
        if let Some(data) = existing.data {
            sa_state::wipe(data);
        }
        Ok(Err(Invalid {
            reason: reason::Reason::SaSecretNameTaken,
            message: format!(
                "Secret {name} exists and is not this tunnel's SA state (type {}, controlled by this MagicTunnel); \
                 the replicas share their SAs through a Secret of that name: rename or remove the other one",
                sync_objects::SA_STATE_TYPE
            ),
        }))
    }
}

/// Server-side apply of one owned object.
async fn apply_owned<K>(
    ctx: &Context,
    namespace: &str,
    obj: &K,
    kind: &'static str,
) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map(|_| ())
    .map_err(|source| Error::ApplySync { kind, name, source })
}

/// The ServiceAccount, then the Role, then its binding (the Secret exists already).
async fn apply_sync(ctx: &Context, namespace: &str, sync: &SyncObjects) -> Result<(), Error> {
    apply_owned(ctx, namespace, &sync.service_account, "ServiceAccount").await?;
    apply_owned(ctx, namespace, &sync.role, "Role").await?;
    apply_owned(ctx, namespace, &sync.role_binding, "RoleBinding").await
}

async fn delete_owned<K>(
    ctx: &Context,
    namespace: &str,
    name: String,
    kind: &'static str,
) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(Error::DeleteSync { kind, name, source }),
    }
}

/// Remove the sync objects of `tunnel`: the access first, the Secret (the marker that they
/// exist, see [`Context::has_sa_secret`]) last, so an interrupted prune is resumed.
async fn prune_sync(ctx: &Context, namespace: &str, tunnel: &str) -> Result<(), Error> {
    let role = sync_objects::role_name(tunnel);
    delete_owned::<RoleBinding>(ctx, namespace, role.clone(), "RoleBinding").await?;
    delete_owned::<Role>(ctx, namespace, role, "Role").await?;
    delete_owned::<ServiceAccount>(
        ctx,
        namespace,
        sync_objects::service_account_name(tunnel),
        "ServiceAccount",
    )
    .await?;
    delete_owned::<Secret>(
        ctx,
        namespace,
        sync_objects::sa_secret_name(tunnel),
        "Secret",
    )
    .await?;
    tracing::info!(tunnel = %format!("{namespace}/{tunnel}"), "removed the SA-sharing objects");
    Ok(())
}

async fn apply_config(ctx: &Context, namespace: &str, secret: &Secret) -> Result<(), Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    // k8s-openapi writes apiVersion and kind, which server-side apply needs.
    secrets
        .patch(
            &secret.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(secret),
        )
        .await
        .map_err(Error::ApplyConfig)?;
    Ok(())
}

async fn write_status(
    ctx: &Context,
    mt: &MagicTunnel,
    namespace: &str,
    status: &MagicTunnelStatus,
) -> Result<(), Error> {
    let api: Api<MagicTunnel> = Api::namespaced(ctx.client.clone(), namespace);
    let body = serde_json::json!({
        "apiVersion": MagicTunnel::api_version(&()),
        "kind": MagicTunnel::kind(&()),
        "status": status,
    });
    api.patch_status(
        &mt.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(Error::PatchStatus)?;
    Ok(())
}

/// Records the assigned HTTP port in status alone (a merge patch: the rest of the status is
/// left as it is until this pass writes it whole).
async fn record_http_port(
    ctx: &Context,
    mt: &MagicTunnel,
    namespace: &str,
    port: u16,
) -> Result<(), Error> {
    let api: Api<MagicTunnel> = Api::namespaced(ctx.client.clone(), namespace);
    let body = serde_json::json!({ "status": { "httpPort": port } });
    api.patch_status(
        &mt.name_any(),
        &PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        },
        &Patch::Merge(&body),
    )
    .await
    .map_err(Error::PatchStatus)?;
    Ok(())
}

async fn publish(
    ctx: &Context,
    mt: &MagicTunnel,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    // An Event that cannot be written must not fail the reconcile.
    if let Err(e) = ctx.recorder.publish(&event, &mt.object_ref(&())).await {
        tracing::warn!(error = %e, reason, "could not publish an Event");
    }
}

/// Existing pods that stay once the plan is carried out.
fn running_pods<'a>(existing: &'a [Pod], plan: &rollout::PodPlan) -> Vec<&'a Pod> {
    existing
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| !plan.delete.contains(&p.name_any()))
        .collect()
}

/// The pods whose `/status` can be read: on a node (hostIP known), at the tunnel's HTTP port.
fn status_targets(running: &[&Pod], http_port: Option<u16>) -> Vec<Target> {
    let Some(port) = http_port else {
        return vec![];
    };
    running
        .iter()
        .filter_map(|p| {
            let uid = p.metadata.uid.clone()?;
            let ip: IpAddr = p.status.as_ref()?.host_ip.as_deref()?.parse().ok()?;
            Some(Target {
                uid,
                addr: SocketAddr::new(ip, port),
            })
        })
        .collect()
}

/// One report per endpoint of [`endpoint_status`] (pods to be created have none yet).
fn endpoint_reports(
    board: &pod_status::Board,
    running: &[&Pod],
    plan: &rollout::PodPlan,
) -> Vec<Option<PodReport>> {
    let uids: Vec<&str> = running
        .iter()
        .map(|p| p.metadata.uid.as_deref().unwrap_or_default())
        .collect();
    let mut reports = board.reports(&uids);
    reports.extend(plan.create.iter().map(|_| None));
    reports
}

/// The endpoints that will exist once the plan is carried out.
fn endpoint_status(running: &[&Pod], plan: &rollout::PodPlan) -> Vec<EndpointStatus> {
    let mut out: Vec<EndpointStatus> = running
        .iter()
        .map(|p| EndpointStatus {
            pod: p.name_any(),
            node: p.spec.as_ref().and_then(|s| s.node_name.clone()),
            host_ip: p.status.as_ref().and_then(|s| s.host_ip.clone()),
            ready: rollout::is_ready(p),
            ..Default::default()
        })
        .chain(plan.create.iter().map(|p| EndpointStatus {
            pod: p.name_any(),
            ..Default::default()
        }))
        .collect();
    out.sort_by(|a, b| a.pod.cmp(&b.pod));
    out
}
