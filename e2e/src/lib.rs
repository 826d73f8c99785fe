//! Helpers of the end-to-end suite: apply YAML like `kubectl apply --server-side`, wait for a
//! condition, render the chart. The suite runs against whatever cluster KUBECONFIG names: the
//! local control plane (`e2e/run-local.sh`) or kind (`e2e/kind.sh`).

pub mod scale;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Discovery, Scope};
use kube::{Client, ResourceExt};
use serde::Deserialize;

pub mod peer;

pub const FIELD_MANAGER: &str = "magictunnel-e2e";
/// Namespace of the operator's ServiceAccount and RBAC.
pub const OPERATOR_NAMESPACE: &str = "magictunnel-system";
/// Helm release name: the chart names the ServiceAccount `<release>-magictunnel`.
pub const RELEASE: &str = "mt";
pub const ACCOUNT_ID: &str = "0123456789abcdef0123456789abcdef";

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub async fn client() -> anyhow::Result<Client> {
    Client::try_default()
        .await
        .context("connecting to the cluster in KUBECONFIG")
}

/// Server-side apply every document of a YAML stream.
pub async fn apply_yaml(
    client: &Client,
    yaml: &str,
    default_namespace: &str,
) -> anyhow::Result<()> {
    let discovery = Discovery::new(client.clone()).run().await?;
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde_yaml::Value::deserialize(doc)?;
        if value.is_null() {
            continue;
        }
        let obj: DynamicObject = serde_yaml::from_value(value)?;
        let types = obj
            .types
            .as_ref()
            .context("a document without apiVersion/kind")?;
        let gvk = GroupVersionKind::try_from(types)?;
        let Some((resource, caps)) = discovery.resolve_gvk(&gvk) else {
            bail!("the cluster does not serve {gvk:?}");
        };
        let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
            let ns = obj
                .namespace()
                .unwrap_or_else(|| default_namespace.to_string());
            Api::namespaced_with(client.clone(), &ns, &resource)
        } else {
            Api::all_with(client.clone(), &resource)
        };
        api.patch(
            &obj.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&obj),
        )
        .await
        .with_context(|| format!("applying {} {}", gvk.kind, obj.name_any()))?;
    }
    Ok(())
}

/// Poll `check` until it returns `Some`, or fail after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The `helm` binary: on PATH or where `make tools` builds it.
pub fn helm() -> anyhow::Result<PathBuf> {
    let cache =
        std::env::var("MAGICTUNNEL_CACHE").unwrap_or_else(|_| "/var/cache/magictunnel".into());
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push(Path::new(&cache).join("bin"));
    dirs.into_iter()
        .map(|d| d.join("helm"))
        .find(|p| p.is_file())
        .context("helm not found: run `make tools`")
}

/// The chart rendered with the e2e values.
pub fn render_chart() -> anyhow::Result<String> {
    let out = std::process::Command::new(helm()?)
        .args(["template", RELEASE])
        .arg(repo().join("charts/magictunnel"))
        .args([
            "--namespace",
            OPERATOR_NAMESPACE,
            "--kube-version",
            "1.34.0",
        ])
        .args(["--set-string", &format!("accountId={ACCOUNT_ID}")])
        .output()?;
    if !out.status.success() {
        bail!("helm template: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Only the documents of the given kinds.
pub fn only_kinds(yaml: &str, kinds: &[&str]) -> anyhow::Result<String> {
    let mut out = String::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde_yaml::Value::deserialize(doc)?;
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default();
        if kinds.contains(&kind) {
            out.push_str("---\n");
            out.push_str(&serde_yaml::to_string(&value)?);
        }
    }
    Ok(out)
}
