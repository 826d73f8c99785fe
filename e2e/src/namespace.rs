//! A namespace of one test, and the reads tests make of the MagicTunnels, pods, Secrets and
//! Events in it. Dropping it (also when the test panics) deletes the namespace and waits, up to
//! [`DRAIN`], until its pods are gone, so that a host resource the test created (a
//! [`crate::host::Site`] declared before the namespace, hence dropped after it) outlives them.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::{Client, ResourceExt};
use operator::crd::MagicTunnel;
use serde_json::{Value, json};

use crate::eventually;

/// How long a dropped namespace waits for its pods to go.
pub const DRAIN: Duration = Duration::from_secs(40);

pub struct TestNamespace {
    pub client: Client,
    pub name: String,
}

impl TestNamespace {
    /// `<prefix>-<nanoseconds in hex>`, e.g. `e2e-ops-gre-1a2b3c`.
    pub async fn new(client: &Client, prefix: &str) -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!("{prefix}-{nanos:x}");
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        Ok(TestNamespace {
            client: client.clone(),
            name,
        })
    }

    pub fn tunnels(&self) -> Api<MagicTunnel> {
        Api::namespaced(self.client.clone(), &self.name)
    }
    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.name)
    }
    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Create from raw JSON, so that objects our own types could not even hold reach the API.
    pub async fn create(&self, tunnel: Value) -> Result<DynamicObject, kube::Error> {
        let obj: DynamicObject = serde_json::from_value(tunnel).map_err(kube::Error::SerdeError)?;
        let resource = ApiResource::erase::<MagicTunnel>(&());
        Api::<DynamicObject>::namespaced_with(self.client.clone(), &self.name, &resource)
            .create(&PostParams::default(), &obj)
            .await
    }

    /// (status, reason, message) of a condition.
    pub async fn condition(&self, tunnel: &str, type_: &str) -> Option<(String, String, String)> {
        let mt = self.tunnels().get(tunnel).await.ok()?;
        let status = mt.status?;
        let c = status.conditions.iter().find(|c| c.type_ == type_)?;
        Some((c.status.clone(), c.reason.clone(), c.message.clone()))
    }

    /// Waits for `type_` to be `status` with `reason`; returns the message. Panics with the
    /// last condition seen after `timeout`.
    pub async fn wait_condition(
        &self,
        tunnel: &str,
        type_: &str,
        status: &str,
        reason: &str,
        timeout: Duration,
    ) -> String {
        let waited = eventually(
            &format!("{}/{tunnel} {type_}={status} ({reason})", self.name),
            timeout,
            || async {
                let (s, r, m) = self.condition(tunnel, type_).await?;
                (s == status && r == reason).then_some(m)
            },
        )
        .await;
        match waited {
            Ok(m) => m,
            Err(e) => panic!("{e}; last: {:?}", self.condition(tunnel, type_).await),
        }
    }

    pub async fn secret_value(&self, name: &str, key: &str) -> Option<Vec<u8>> {
        let s = self.secrets().get(name).await.ok()?;
        s.data?.get(key).map(|b| b.0.clone())
    }

    /// Reasons of the Events about `tunnel`.
    pub async fn event_reasons(&self, tunnel: &str) -> Vec<String> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.name);
        events
            .list(&ListParams::default())
            .await
            .map(|l| {
                l.items
                    .into_iter()
                    .filter(|e| {
                        e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(tunnel)
                    })
                    .filter_map(|e| e.reason)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The pods of one tunnel (by the operator's tunnel label), deleting ones included.
    pub async fn tunnel_pods(&self, tunnel: &str) -> Vec<Pod> {
        let labels = format!("{}={tunnel}", operator::build::TUNNEL_LABEL);
        self.pods()
            .list(&ListParams::default().labels(&labels))
            .await
            .map(|l| l.items)
            .unwrap_or_default()
    }
}

/// The pod is not being deleted and its (first) container is running now: phase Running
/// alone also holds for a container in CrashLoopBackOff.
pub fn pod_running(pod: &Pod) -> bool {
    let running = pod
        .status
        .as_ref()
        .and_then(|s| {
            s.container_statuses
                .as_ref()?
                .first()?
                .state
                .as_ref()?
                .running
                .as_ref()
        })
        .is_some();
    running && pod.metadata.deletion_timestamp.is_none()
}

/// How often the pod's (first) container has restarted: a tunnel pod that crashed has.
pub fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| {
            s.container_statuses
                .as_ref()?
                .first()
                .map(|c| c.restart_count)
        })
        .unwrap_or_default()
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let name = self.name.clone();
        // The test's runtime is blocked in this drop: a runtime of its own on a thread, and a
        // client of its own (a client's connection tasks run on the runtime that made it).
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok(client) = crate::client().await else {
                    return;
                };
                let _ = Api::<Namespace>::all(client.clone())
                    .delete(&name, &DeleteParams::background())
                    .await;
                let pods: Api<Pod> = Api::namespaced(client, &name);
                let drained = eventually("the namespace's pods to go", DRAIN, || async {
                    let list = pods.list(&ListParams::default()).await.ok()?;
                    list.items.is_empty().then_some(())
                })
                .await;
                if let Err(e) = drained {
                    eprintln!("namespace {name}: {e}");
                }
            });
        })
        .join();
    }
}

/// The pod has exactly one owner reference: the MagicTunnel with `tunnel_uid`, as controller.
pub fn single_owner(pod: &Pod, tunnel_uid: &str) -> Result<(), String> {
    let owners = pod.owner_references();
    match owners {
        [o] if o.kind == "MagicTunnel" && o.uid == tunnel_uid && o.controller == Some(true) => {
            Ok(())
        }
        _ => Err(format!("{}: owners {owners:?}", pod.name_any())),
    }
}
