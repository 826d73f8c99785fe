//! The chart as installed on the node (`e2e/cluster/install-chart.sh`, run by
//! `e2e/run-local.sh`): the CRD is Established, the operator Deployment has 2 ready replicas,
//! exactly one holds the leader Lease and the other says it waits; and when the leader dies in
//! the middle of a batch of work without releasing the Lease (cut off the API server by a host
//! firewall rule on its pod IP, then its pod force-deleted), the other replica takes over once
//! the Lease expires and every tunnel converges with no duplicate objects.
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
    let found = eventually(
        "2 ready operator replicas, one of them the leader",
        within,
        || async {
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
        },
    )
    .await;
    match found {
        Ok(v) => v,
        Err(e) => {
            let pods = operators::pods(client).await.unwrap_or_default();
            let state: Vec<_> = pods
                .iter()
                .map(|p| {
                    (
                        p.name_any(),
                        p.status.as_ref().and_then(|s| s.phase.clone()),
                    )
                })
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
    let gauges = eventually(
        "both replicas' leader gauges",
        Duration::from_secs(20),
        || async {
            let l = leader_gauge(&client, &leader).await?;
            let o = leader_gauge(&client, &other).await?;
            (l == 1.0 && o == 0.0).then_some((l, o))
        },
    )
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
                "interfaceAddress": format!("10.241.10.{}/31", 2 * i),
                "healthCheck": {"enabled": false}
            }
        });
        let ns = &ns;
        async move { ns.create(tunnel).await }
    });
    for created in futures::future::join_all(creates).await {
        created.expect("tunnel created");
    }
    // A crash, not a clean exit: even a force delete (`--grace-period 0`) reaches the process as
    // SIGTERM from the kubelet, and the operator then releases the Lease (a takeover in ~2 s).
    // Cut the leader off the API server first, so that it dies with the Lease in its name.
    let leader_pod = operators::pods_api(&client)
        .get(&leader)
        .await
        .expect("leader pod");
    let partition = Partition::new(&operators::pod_ip(&leader_pod).expect("leader pod IP"))
        .expect("cut the leader off");
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
    // The pods the old leader made: the new one must keep them.
    let before: BTreeSet<(String, Option<String>)> = all_pods(&ns)
        .await
        .iter()
        .map(|p| (p.name_any(), p.uid()))
        .collect();

    let holder = eventually(
        "another replica to take the Lease",
        TAKEOVER_BOUND,
        || async {
            let h = operators::lease_holder(&client).await.ok()??;
            (h != leader).then_some(h)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e} (bound {TAKEOVER_BOUND:?})"));
    let takeover = killed.elapsed();
    drop(partition);
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

    // Converged: every tunnel Configured, with exactly its objects. Meanwhile every pod UID
    // seen is noted: a pod the old leader made that the new one replaced shows up twice.
    let seen = std::sync::Mutex::new(before.clone());
    let converged = eventually("every tunnel converged", CONVERGE_BOUND, || async {
        if let Ok(list) = ns.pods().list(&ListParams::default()).await {
            let mut seen = seen.lock().expect("seen");
            seen.extend(list.items.iter().map(|p| (p.name_any(), p.uid())));
        }
        let done = configured(&ns).await.len() == TUNNELS;
        done.then_some(()).and(exact_objects(&ns).await.ok())
    })
    .await;
    if let Err(e) = converged {
        panic!(
            "{e} after the takeover: Configured {:?}; {:?}",
            configured(&ns).await,
            exact_objects(&ns).await
        );
    }
    println!(
        "all {TUNNELS} tunnels converged {:?} after the kill (bound: takeover + {CONVERGE_BOUND:?})",
        killed.elapsed()
    );
    let seen = seen.into_inner().expect("seen");
    let replaced: Vec<&String> = seen
        .iter()
        .zip(seen.iter().skip(1))
        .filter(|(a, b)| a.0 == b.0)
        .map(|(a, _)| &a.0)
        .collect();
    println!(
        "{} pods existed at the kill; replaced across the takeover: {replaced:?}",
        before.len()
    );
    assert!(
        replaced.is_empty(),
        "the new leader replaced pods: {replaced:?}"
    );
    // And they stay so: a few seconds later the same pods (no churn, no late duplicates).
    let first = exact_objects(&ns).await.expect("converged");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let second = exact_objects(&ns).await.unwrap_or_else(|e| panic!("{e}"));
    if first != second {
        panic!(
            "pods were replaced after convergence: {:?} became {:?}\n{}",
            first.difference(&second).collect::<Vec<_>>(),
            second.difference(&first).collect::<Vec<_>>(),
            why_replaced(&client, &first, &second).await
        );
    }
    let ready = all_pods(&ns).await.iter().filter(|p| pod_ready(p)).count();
    println!("{ready}/{TUNNELS} tunnel pods Ready so far");
    // And the new leader says so on its metrics.
    let gauge = eventually(
        "the new leader's gauge at 1",
        Duration::from_secs(20),
        || async { (leader_gauge(&client, &holder).await? == 1.0).then_some(()) },
    )
    .await;
    assert!(gauge.is_ok(), "{holder}: {LEADER_METRIC} is not 1");
}

async fn all_pods(ns: &TestNamespace) -> Vec<k8s_openapi::api::core::v1::Pod> {
    ns.pods()
        .list(&ListParams::default())
        .await
        .expect("pods")
        .items
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

/// One pod `t<i>-0` and one Secret `t<i>-config` per tunnel and nothing else, each pod
/// owned by its tunnel alone (or what is wrong); the pods' (name, UID).
async fn exact_objects(ns: &TestNamespace) -> Result<BTreeSet<(String, String)>, String> {
    let err = |e: kube::Error| e.to_string();
    let tunnels = ns
        .tunnels()
        .list(&ListParams::default())
        .await
        .map_err(err)?;
    if tunnels.items.len() != TUNNELS {
        return Err(format!("{} tunnels", tunnels.items.len()));
    }
    let mut pods = BTreeSet::new();
    for t in &tunnels.items {
        let name = t.name_any();
        let uid = t.uid().unwrap_or_default();
        let own = ns.tunnel_pods(&name).await;
        let names: Vec<_> = own.iter().map(ResourceExt::name_any).collect();
        if names != [format!("{name}-0")] {
            return Err(format!("pods of {name}: {names:?}"));
        }
        single_owner(&own[0], &uid)?;
        pods.insert((names[0].clone(), own[0].uid().unwrap_or_default()));
    }
    let all_pods = ns.pods().list(&ListParams::default()).await.map_err(err)?;
    if all_pods.items.len() != TUNNELS {
        return Err(format!("{} pods in the namespace", all_pods.items.len()));
    }
    let secrets: BTreeSet<String> = ns
        .secrets()
        .list(&ListParams::default())
        .await
        .map_err(err)?
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    let expected: BTreeSet<String> = (0..TUNNELS).map(|i| format!("t{i}-config")).collect();
    if secrets != expected {
        return Err(format!(
            "Secrets {secrets:?}: one config Secret per tunnel expected"
        ));
    }
    Ok(pods)
}

/// What the operators logged about the pods that changed between `before` and `after` (a
/// replacement after convergence was seen once in CI, cause unknown: this says who deleted them).
async fn why_replaced(
    client: &Client,
    before: &BTreeSet<(String, String)>,
    after: &BTreeSet<(String, String)>,
) -> String {
    let names: BTreeSet<&str> = before
        .symmetric_difference(after)
        .map(|(n, _)| n.as_str())
        .collect();
    // The tunnel of pod `t13-0` is `t13`; operator log lines name the tunnel as `ns/t13`.
    let tunnels: Vec<String> = names
        .iter()
        .filter_map(|n| n.rsplit_once('-').map(|(t, _)| format!("/{t}\"")))
        .collect();
    let mut out = String::new();
    for pod in operators::pods(client).await.unwrap_or_default() {
        let name = pod.name_any();
        let logs = operators::pods_api(client)
            .logs(&name, &Default::default())
            .await
            .unwrap_or_else(|e| format!("(no log: {e})"));
        out.push_str(&format!("--- operator {name}, lines about {names:?}\n"));
        for line in logs.lines().filter(|l| {
            tunnels.iter().any(|t| l.contains(t.as_str()))
                || names.iter().any(|n| l.contains(&format!("\"{n}\"")))
        }) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The host drops everything from one pod IP (INPUT: the API server is on this host; FORWARD:
/// anything else) until dropped. The rules carry the comment `mto-leader-crash`.
struct Partition {
    rules: Vec<Vec<String>>,
}

impl Partition {
    fn new(ip: &str) -> anyhow::Result<Self> {
        let mut p = Partition { rules: Vec::new() };
        for chain in ["INPUT", "FORWARD"] {
            let rule: Vec<String> = [
                chain,
                "-s",
                &format!("{ip}/32"),
                "-m",
                "comment",
                "--comment",
                "mto-leader-crash",
                "-j",
                "DROP",
            ]
            .map(String::from)
            .to_vec();
            iptables("-I", &rule)?;
            p.rules.push(rule);
        }
        Ok(p)
    }
}

fn iptables(op: &str, rule: &[String]) -> anyhow::Result<()> {
    let out = std::process::Command::new("iptables")
        .arg("-w")
        .arg(op)
        .args(rule)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "iptables {op} {}: {}",
        rule.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

impl Drop for Partition {
    fn drop(&mut self) {
        for rule in &self.rules {
            if let Err(e) = iptables("-D", rule) {
                eprintln!("{e}");
            }
        }
    }
}
