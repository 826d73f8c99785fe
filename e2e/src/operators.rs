//! The operator replicas the chart runs: their pods, the leader Lease, and each replica's
//! metrics, read from its pod IP (pod IPs on the node's bridge are reachable from the host).

use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::{OPERATOR_NAMESPACE, RELEASE};

/// The Deployment the chart names `<release>-magictunnel`.
pub const DEPLOYMENT: &str = "mt-magictunnel";
/// The Lease the replicas elect a leader on.
pub const LEASE: &str = "magictunnel-operator";
/// The operator's metrics port (chart value `metrics.port`).
pub const METRICS_PORT: u16 = 8080;
/// The gauge that is 1 on the leader and 0 on a replica that waits.
pub const LEADER_METRIC: &str = "magictunnel_operator_leader";

fn selector() -> String {
    format!("app.kubernetes.io/instance={RELEASE},app.kubernetes.io/name=magictunnel")
}

pub fn pods_api(client: &Client) -> Api<Pod> {
    Api::namespaced(client.clone(), OPERATOR_NAMESPACE)
}

/// The operator pods that exist and are not being deleted.
pub async fn pods(client: &Client) -> anyhow::Result<Vec<Pod>> {
    let list = pods_api(client)
        .list(&ListParams::default().labels(&selector()))
        .await
        .context("listing the operator pods")?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect())
}

pub fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status.as_ref()?.pod_ip.clone()
}

/// The Lease's `holderIdentity` (the operator uses its pod name), if any.
pub async fn lease_holder(client: &Client) -> anyhow::Result<Option<String>> {
    let lease = Api::<Lease>::namespaced(client.clone(), OPERATOR_NAMESPACE)
        .get(LEASE)
        .await
        .context("reading the leader Lease")?;
    Ok(lease
        .spec
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty()))
}

/// The leader pod: the Lease holder, if it is one of the operator pods that exist.
pub async fn leader(client: &Client) -> anyhow::Result<Option<Pod>> {
    let Some(holder) = lease_holder(client).await? else {
        return Ok(None);
    };
    Ok(pods(client)
        .await?
        .into_iter()
        .find(|p| p.name_any() == holder))
}

/// `GET http://<pod IP>:8080/metrics` (curl, 3 s timeout).
pub async fn metrics(pod: &Pod) -> anyhow::Result<String> {
    let ip = pod_ip(pod).with_context(|| format!("{} has no pod IP", pod.name_any()))?;
    let url = format!("http://{ip}:{METRICS_PORT}/metrics");
    let out = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::process::Command::new("curl")
            .args(["-sf", "--max-time", "3", &url])
            .output(),
    )
    .await
    .with_context(|| format!("{url}: no answer"))?
    .context("running curl")?;
    anyhow::ensure!(out.status.success(), "{url}: curl {}", out.status);
    Ok(String::from_utf8(out.stdout)?)
}

/// The value of an unlabelled sample `name` in a Prometheus/OpenMetrics text.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_value_reads_unlabelled_samples_only() {
        let text = "# HELP magictunnel_operator_leader x\n\
                    magictunnel_operator_leader_total 7\n\
                    magictunnel_operator_leader 1\n\
                    other{a=\"b\"} 3\n";
        assert_eq!(metric_value(text, LEADER_METRIC), Some(1.0));
        assert_eq!(metric_value(text, "other"), None);
        assert_eq!(metric_value(text, "missing"), None);
    }
}
