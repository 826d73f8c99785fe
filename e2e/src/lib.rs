//! Helpers of the end-to-end suite: apply YAML like `kubectl apply --server-side`, wait for a
//! condition, render the chart, find the operator replicas and their Lease, join a customer
//! site to the host ([`host::Site`]), give a test a namespace of its own
//! ([`namespace::TestNamespace`]).
//!
//! # Which cluster, and when a test skips
//!
//! The suite runs against whatever cluster `KUBECONFIG` names: the local node
//! (`e2e/run-local.sh`, which `make test` runs) or kind (`e2e/kind.sh`). Every test that needs
//! a cluster starts with
//!
//! ```ignore
//! let client = magictunnel_e2e::cluster_or_skip!();
//! ```
//!
//! which evaluates to a [`kube::Client`], or returns from the test (which then passes) after
//! printing `skipped <test>: KUBECONFIG is not set` on stderr, bypassing the test harness's
//! output capture so that it shows without `--nocapture`. With `MT_E2E_REQUIRED=1`
//! (run-local.sh sets it) a missing `KUBECONFIG` fails the test instead. A `KUBECONFIG` that
//! is set but names no reachable cluster always fails: the cluster was asked for.
//! [`client_or_skip`] is the same as a function, for callers that want to decide themselves.

pub mod scale;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Discovery, Scope};
use kube::{Client, ResourceExt};
use serde::Deserialize;

pub mod anycast;
pub mod host;
pub mod namespace;
pub mod operators;
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

/// Env: set to `1` to make a missing cluster fail the suite instead of skipping it.
pub const REQUIRED_ENV: &str = "MT_E2E_REQUIRED";

/// The cluster `KUBECONFIG` names, answering `/version`; `None` (after saying so on stderr)
/// when `KUBECONFIG` is unset or empty and [`REQUIRED_ENV`] is not `1`. Panics when the cluster
/// is required but missing, or named but unreachable. See the crate documentation.
pub async fn client_or_skip(test: &str) -> Option<Client> {
    let named = std::env::var_os("KUBECONFIG").is_some_and(|k| !k.is_empty());
    let required = std::env::var(REQUIRED_ENV).is_ok_and(|v| v == "1");
    if !named {
        assert!(
            !required,
            "{test}: {REQUIRED_ENV}=1 but KUBECONFIG is not set: no cluster to test against"
        );
        skip_note(
            test,
            "KUBECONFIG is not set (e2e/run-local.sh brings a cluster up)",
        );
        return None;
    }
    let client = client()
        .await
        .unwrap_or_else(|e| panic!("{test}: KUBECONFIG is set but unusable: {e:#}"));
    if let Err(e) = client.apiserver_version().await {
        panic!("{test}: the cluster in KUBECONFIG does not answer: {e}");
    }
    Some(client)
}

/// Written to the process's stderr directly: libtest captures `eprintln!` of passing tests.
fn skip_note(test: &str, why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "skipped {test}: {why}");
}

/// The enclosing function's path, e.g. `operator::gre_tunnel` (for [`cluster_or_skip!`]).
#[macro_export]
macro_rules! function_path {
    () => {{
        fn here() {}
        let name = ::std::any::type_name_of_val(&here);
        name.strip_suffix("::here")
            .unwrap_or(name)
            .replace("::{{closure}}", "")
    }};
}

/// A [`kube::Client`] for the cluster in `KUBECONFIG`, or `return` from the calling test after
/// printing why it was skipped (see the crate documentation).
#[macro_export]
macro_rules! cluster_or_skip {
    () => {
        match $crate::client_or_skip(&$crate::function_path!()).await {
            Some(client) => client,
            None => return,
        }
    };
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

/// The pod is Running and the kubelet reports it Ready (its readiness probe passes).
pub fn pod_ready(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
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
