//! The chart as installed on the node (`e2e/cluster/install-chart.sh`, run by
//! `e2e/run-local.sh`): the CRD is Established, the operator Deployment has 2 ready replicas,
//! exactly one holds the leader Lease and the other says it waits; and when the leader dies in
//! the middle of a batch of work (its pod force-deleted, so it never releases the Lease), the
//! other replica takes over and every tunnel converges with no duplicate objects.
//!
//! The two tests share the operator Deployment, so they take [`OPERATORS`] in turn. Run with
//! `--ignored` against the cluster in KUBECONFIG (see the crate docs for the skip rule).
//! Site slot 10 (local 203.0.113.110, customers 198.51.100.110–129).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};
use magictunnel_e2e::host::Site;
use magictunnel_e2e::namespace::{TestNamespace, single_owner};
use magictunnel_e2e::operators::{self, LEADER_METRIC, metric_value};
use magictunnel_e2e::{OPERATOR_NAMESPACE, cluster_or_skip, eventually, pod_ready};
use serde_json::json;

static OPERATORS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The Lease is 15 s (chart default); a replica that waits retries every 2 s, so it takes a
/// Lease left unrenewed within 15 s + 2 s of the holder's last renewal. Bound: 15 s + 15 s.
const TAKEOVER_BOUND: Duration = Duration::from_secs(30);
/// After the takeover: the new leader lists everything and reconciles 20 tunnels.
const CONVERGE_BOUND: Duration = Duration::from_secs(60);
const TUNNELS: usize = 20;

/// The two operator replicas once the Deployment is settled: (leader, the other), both Running
/// and Ready, the leader the Lease's holder.
async fn settled_operators(client: &Client, within: Duration) -> (String, String) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let found = eventually("2 ready operator replicas, one of them the leader", within, || async {
        let d = deployments.get(operators::DEPLOYMENT).await.ok()?;
        let status = d.status.clone()?;
        if d.spec.replicas != Some(2) || status.ready_replicas != Some(2) {
            return None;
        }
        let pods = operators::pods(client).await.ok()?;
        if pods.len() != 2 || !pods.iter().all(pod_ready) {
            return None;
        }
        let holder = operators::lease_holder(client).await.ok()??;
        let other = pods.iter().find(|p| p.name_any() != holder)?.name_any();
        pods.iter()
            .any(|p| p.name_any() == holder)
            .then_some((holder, other))
    })
    .await;
    match found {
        Ok(v) => v,
        Err(e) => {
            let pods = operators::pods(client).await.unwrap_or_default();
            let state: Vec<_> = pods
                .iter()
                .map(|p| (p.name_any(), p.status.as_ref().and_then(|s| s.phase.clone())))
                .collect();
            panic!(
                "{e}: pods {state:?}, Lease holder {:?}",
                operators::lease_holder(client).await.ok().flatten()
            );
        }
    }
}

async fn leader_gauge(client: &Client, pod: &str) -> Option<f64> {
    let pod = operators::pods_api(client).get(pod).await.ok()?;
    metric_value(&operators::metrics(&pod).await.ok()?, LEADER_METRIC)
}

#[tokio::test]
#[ignore = "needs a cluster: e2e/run-local.sh"]
async fn chart_runs_two_operators_and_exactly_one_leads() {
    let client = cluster_or_skip!();
    let _turn = OPERATORS.lock().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds
        .get("magictunnels.magictunnel.dev")
        .await
        .expect("the CRD is installed");
    let established = crd
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Established" && c.status == "True");
    assert!(established, "CRD magictunnels.magictunnel.dev Established");

    let (leader, other) = settled_operators(&client, Duration::from_secs(60)).await;
    println!("leader {leader}, waiting {other}");
    // Each replica says which it is on its own metrics (pod IP:8080, reachable from the host).
    let gauges = eventually("both replicas' leader gauges", Duration::from_secs(20), || async {
        let l = leader_gauge(&client, &leader).await?;
        let o = leader_gauge(&client, &other).await?;
        (l == 1.0 && o == 0.0).then_some((l, o))
    })
    .await;
    assert!(
        gauges.is_ok(),
        "{LEADER_METRIC}: leader {:?}, other {:?}",
        leader_gauge(&client, &leader).await,
        leader_gauge(&client, &other).await
    );
    // Still the same single leader: nothing flapped while we looked.
    assert_eq!(
        operators::lease_holder(&client).await.expect("lease"),
        Some(leader)
    );
}

#[tokio::test]
#[ignore = "needs a cluster: e2e/run-local.sh"]
async fn leader_killed_mid_flight_the_other_replica_converges_without_duplicates() {
    let client = cluster_or_skip!();
    let _turn = OPERATORS.lock().await;
    let (leader, other) = settled_operators(&client, Duration::from_secs(90)).await;
    let site = Site::new(10, TUNNELS as u8).expect("site");
    let ns = TestNamespace::new(&client, "e2e-ops-leader")
        .await
        .expect("namespace");

    // The batch, all at once; then the leader crashes while it works on it.
    let creates = (0..TUNNELS).map(|i| {
        let tunnel = json!({
            "apiVersion": "magictunnel.dev/v1alpha1", "kind": "MagicTunnel",
            "metadata": {"name": format!("t{i}")},
            "spec": {
                "type": "GRE", "localEndpoint": site.local.to_string(),
                "customerEndpoint": site.customers[i].to_string(),
                "interfaceAddress": format!("10.231.10.{}/31", 2 * i),
                "healthCheck": {"enabled": false}
            }
        });
        let ns = &ns;
        async move { ns.create(tunnel).await }
    });
    for created in futures::future::join_all(creates).await {
        created.expect("tunnel created");
    }
    // `kubectl delete --force --grace-period 0`: the kubelet kills the container; the Lease is
    // never released.
    operators::pods_api(&client)
        .delete(
            &leader,
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::background()
            },
        )
        .await
        .expect("delete the leader pod");
    let killed = Instant::now();
    let configured_at_kill = configured(&ns).await.len();

    let holder = eventually("another replica to take the Lease", TAKEOVER_BOUND, || async {
        let h = operators::lease_holder(&client).await.ok()??;
        (h != leader).then_some(h)
    })
    .await
    .unwrap_or_else(|e| panic!("{e} (bound {TAKEOVER_BOUND:?})"));
    let takeover = killed.elapsed();
    println!(
        "leader {leader} killed with {configured_at_kill}/{TUNNELS} tunnels Configured; \
         {holder} took the Lease after {takeover:?} (bound {TAKEOVER_BOUND:?})"
    );
    let pods = operators::pods(&client).await.expect("operator pods");
    assert!(
        pods.iter().any(|p| p.name_any() == holder),
        "the new holder {holder} is a running operator pod: {:?}",
        pods.iter().map(ResourceExt::name_any).collect::<Vec<_>>()
    );
    if holder != other {
        println!("(the new holder is the Deployment's replacement pod, not {other})");
    }

    let converged = eventually("every tunnel Configured", CONVERGE_BOUND, || async {
        (configured(&ns).await.len() == TUNNELS).then_some(())
    })
    .await;
    if let Err(e) = converged {
        panic!(
            "{e} after the takeover: Configured {:?}",
            configured(&ns).await
        );
    }
    println!(
        "all {TUNNELS} tunnels Configured {:?} after the kill",
        killed.elapsed()
    );

    // Exactly the desired objects: one pod and one config Secret per tunnel, each pod owned by
    // its tunnel alone. Checked twice, a few seconds apart, with the same pods (no churn).
    let first = exact_objects(&ns).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let second = exact_objects(&ns).await;
    assert_eq!(first, second, "pods were replaced after convergence");
    let ready = ns
        .pods()
        .list(&ListParams::default())
        .await
        .expect("pods")
        .items
        .iter()
        .filter(|p| pod_ready(p))
        .count();
    println!("{ready}/{TUNNELS} tunnel pods Ready so far");
    // And the new leader says so on its metrics.
    let gauge = eventually("the new leader's gauge at 1", Duration::from_secs(20), || async {
        (leader_gauge(&client, &holder).await? == 1.0).then_some(())
    })
    .await;
    assert!(gauge.is_ok(), "{holder}: {LEADER_METRIC} is not 1");
}

/// Tunnels whose Configured is True (Applied) for their current generation.
async fn configured(ns: &TestNamespace) -> Vec<String> {
    let Ok(list) = ns.tunnels().list(&ListParams::default()).await else {
        return Vec::new();
    };
    list.items
        .into_iter()
        .filter(|t| {
            let Some(status) = t.status.as_ref() else {
                return false;
            };
            status.observed_generation == t.metadata.generation
                && status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Configured" && c.status == "True" && c.reason == "Applied")
        })
        .map(|t| t.name_any())
        .collect()
}

/// Asserts one pod `t<i>-0` and one Secret `t<i>-config` per tunnel and nothing else, each pod
/// owned by its tunnel alone; returns the pods' (name, UID).
async fn exact_objects(ns: &TestNamespace) -> BTreeSet<(String, String)> {
    let tunnels = ns.tunnels().list(&ListParams::default()).await.expect("tunnels");
    assert_eq!(tunnels.items.len(), TUNNELS);
    let mut pods = BTreeSet::new();
    for t in &tunnels.items {
        let name = t.name_any();
        let uid = t.uid().expect("uid");
        let own = ns.tunnel_pods(&name).await;
        let names: Vec<_> = own.iter().map(ResourceExt::name_any).collect();
        assert_eq!(names, [format!("{name}-0")], "pods of {name}");
        single_owner(&own[0], &uid).unwrap_or_else(|e| panic!("{e}"));
        pods.insert((names[0].clone(), own[0].uid().expect("uid")));
    }
    let all_pods = ns.pods().list(&ListParams::default()).await.expect("pods");
    assert_eq!(all_pods.items.len(), TUNNELS, "no other pods");
    let secrets: BTreeSet<String> = ns
        .secrets()
        .list(&ListParams::default())
        .await
        .expect("secrets")
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    let expected: BTreeSet<String> = (0..TUNNELS).map(|i| format!("t{i}-config")).collect();
    assert_eq!(secrets, expected, "one config Secret per tunnel, nothing else");
    pods
}
