//! `mt-e2e setup`: install what the operator needs before it starts: the CRD (waiting until it
//! is served), the operator namespace, and the chart's ServiceAccount and RBAC.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams};
use magictunnel_e2e::{
    FIELD_MANAGER, OPERATOR_NAMESPACE, apply_yaml, client, eventually, only_kinds, render_chart,
    repo,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let command = std::env::args().nth(1).unwrap_or_default();
    anyhow::ensure!(command == "setup", "usage: mt-e2e setup");
    let client = client().await?;

    let crd = std::fs::read_to_string(repo().join("crds/magictunnel.yaml"))?;
    apply_yaml(&client, &crd, "default").await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    eventually(
        "the MagicTunnel CRD to be established",
        Duration::from_secs(30),
        || async {
            let crd = crds.get("magictunnels.magictunnel.dev").await.ok()?;
            let established = crd
                .status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            established.then_some(())
        },
    )
    .await?;

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}});
    namespaces
        .patch(
            OPERATOR_NAMESPACE,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&ns),
        )
        .await?;
    let rbac = only_kinds(
        &render_chart()?,
        &[
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
        ],
    )?;
    apply_yaml(&client, &rbac, OPERATOR_NAMESPACE).await?;
    println!("CRD, namespace {OPERATOR_NAMESPACE} and RBAC applied");
    Ok(())
}
