//! The Helm chart: `helm lint` is clean, the rendered manifests are valid Kubernetes objects (each
//! decodes into its k8s-openapi type and encodes back to the same JSON, so a misspelled or
//! misplaced field fails), RBAC grants exactly what the operator uses, and the operator binary
//! accepts the arguments the Deployment passes. Needs `helm` (installed by `make tools`).

use std::path::PathBuf;
use std::process::Command;

use clap::Parser as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use magictunnel_e2e::{helm, repo};
use operator::cli::{Cli, Command as CliCommand};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

const ACCOUNT: &str = "0123456789abcdef0123456789abcdef";
/// The helm built from source reports Kubernetes 1.20 unless told; the chart needs ≥ 1.33.
const KUBE_VERSION: &str = "1.34.0";

fn chart() -> PathBuf {
    repo().join("charts/magictunnel")
}

fn helm_run(args: &[&str]) -> (bool, String) {
    let out = Command::new(helm().expect("helm"))
        .args(args)
        .output()
        .expect("helm runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn render(extra: &[&str]) -> Vec<Value> {
    let chart = chart();
    let account = format!("accountId={ACCOUNT}");
    let mut args = vec![
        "template",
        "mt",
        chart.to_str().unwrap_or_default(),
        "--namespace",
        "magictunnel-system",
        "--kube-version",
        KUBE_VERSION,
        "--set-string",
        &account,
    ];
    args.extend_from_slice(extra);
    let (ok, text) = helm_run(&args);
    assert!(ok, "helm template failed: {text}");
    serde_yaml::Deserializer::from_str(&text)
        .filter_map(|doc| Value::deserialize(doc).ok())
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize;

/// Decode into the typed object and encode again: unknown fields are dropped by the decoder, so
/// any difference is a field Kubernetes would not recognise (or a value of the wrong type).
fn strictly<T: DeserializeOwned + Serialize>(doc: &Value) -> T {
    let typed: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{} does not decode: {e}\n{doc}", doc["kind"]));
    let back = serde_json::to_value(&typed).expect("encodes");
    assert_eq!(
        &back, doc,
        "{} has fields Kubernetes does not know",
        doc["kind"]
    );
    typed
}

#[test]
fn lint_is_clean_and_refuses_a_missing_or_bad_account() {
    let chart = chart();
    let chart = chart.to_str().unwrap_or_default();
    let account = format!("accountId={ACCOUNT}");
    let (ok, text) = helm_run(&[
        "lint",
        chart,
        "--strict",
        "--kube-version",
        KUBE_VERSION,
        "--set-string",
        &account,
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("0 chart(s) failed"), "{text}");
    let (ok, text) = helm_run(&["lint", chart, "--kube-version", KUBE_VERSION]);
    assert!(!ok && text.contains("accountId is required"), "{text}");
    let (ok, text) = helm_run(&[
        "template",
        "t",
        chart,
        "--kube-version",
        KUBE_VERSION,
        "--set-string",
        "accountId=BAD!",
    ]);
    assert!(!ok && text.contains("accountId"), "{text}");
}

#[test]
fn rendered_manifests_are_valid_kubernetes_objects() {
    let docs = render(&[]);
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    for doc in &docs {
        match doc["kind"].as_str() {
            Some("ServiceAccount") => drop(strictly::<ServiceAccount>(doc)),
            Some("ClusterRole") => drop(strictly::<ClusterRole>(doc)),
            Some("ClusterRoleBinding") => drop(strictly::<ClusterRoleBinding>(doc)),
            Some("Role") => drop(strictly::<Role>(doc)),
            Some("RoleBinding") => {
                let b: RoleBinding = strictly(doc);
                assert_eq!(b.metadata.namespace.as_deref(), Some("magictunnel-system"));
                let subject = b.subjects.unwrap_or_default();
                assert_eq!(subject.len(), 1);
                assert_eq!(subject[0].kind, "ServiceAccount");
                assert_eq!(subject[0].namespace.as_deref(), Some("magictunnel-system"));
            }
            Some("Deployment") => {
                let d: Deployment = strictly(doc);
                let spec = d.spec;
                assert_eq!(spec.replicas, Some(2), "two replicas, one leader");
                let pod = spec.template.spec.expect("pod spec");
                let c = &pod.containers[0];
                let sc = c.security_context.as_ref().expect("security context");
                assert_eq!(sc.allow_privilege_escalation, Some(false));
                assert_eq!(sc.read_only_root_filesystem, Some(true));
                assert_eq!(
                    sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
                    Some(vec!["ALL".into()])
                );
                assert!(
                    sc.capabilities
                        .as_ref()
                        .and_then(|c| c.add.as_ref())
                        .is_none(),
                    "operator needs no capability"
                );
            }
            other => panic!("unexpected kind {other:?}"),
        }
    }
}

/// `group/resource:verb`, with `[name]` when the rule is limited to names.
fn grants(rules: &[PolicyRule]) -> Vec<String> {
    let mut out: Vec<String> = rules
        .iter()
        .flat_map(|r| {
            let groups = r.api_groups.clone().unwrap_or_default();
            let resources = r.resources.clone().unwrap_or_default();
            let names = r
                .resource_names
                .as_ref()
                .map(|n| format!("[{}]", n.join(",")))
                .unwrap_or_default();
            let verbs = r.verbs.clone();
            groups.into_iter().flat_map(move |g| {
                let verbs = verbs.clone();
                let names = names.clone();
                resources.clone().into_iter().flat_map(move |res| {
                    let g = g.clone();
                    let names = names.clone();
                    verbs
                        .clone()
                        .into_iter()
                        .map(move |v| format!("{g}/{res}{names}:{v}"))
                })
            })
        })
        .collect();
    out.sort();
    out
}

#[test]
fn rbac_grants_exactly_what_the_operator_uses() {
    let docs = render(&[]);
    let role: ClusterRole = strictly(
        docs.iter()
            .find(|d| d["kind"] == "ClusterRole")
            .expect("role"),
    );
    let granted = grants(&role.rules.clone().unwrap_or_default());
    let mut expected: Vec<String> = [
        "magictunnel.dev/magictunnels:get",
        "magictunnel.dev/magictunnels:list",
        "magictunnel.dev/magictunnels:watch",
        "magictunnel.dev/magictunnels/status:get",
        "magictunnel.dev/magictunnels/status:patch",
        "/pods:get",
        "/pods:list",
        "/pods:watch",
        "/pods:create",
        "/pods:delete",
        "/secrets:get",
        "/secrets:list",
        "/secrets:watch",
        "/secrets:create",
        "/secrets:update",
        "/secrets:patch",
        "/secrets:delete",
        "/serviceaccounts:list",
        "/serviceaccounts:watch",
        "/serviceaccounts:create",
        "/serviceaccounts:patch",
        "/serviceaccounts:delete",
        "rbac.authorization.k8s.io/roles:list",
        "rbac.authorization.k8s.io/roles:watch",
        "rbac.authorization.k8s.io/roles:create",
        "rbac.authorization.k8s.io/roles:patch",
        "rbac.authorization.k8s.io/roles:delete",
        "rbac.authorization.k8s.io/rolebindings:list",
        "rbac.authorization.k8s.io/rolebindings:watch",
        "rbac.authorization.k8s.io/rolebindings:create",
        "rbac.authorization.k8s.io/rolebindings:patch",
        "rbac.authorization.k8s.io/rolebindings:delete",
        "events.k8s.io/events:create",
        "events.k8s.io/events:patch",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    expected.sort();
    assert_eq!(granted, expected);
    assert!(
        !serde_json::to_string(&role.metadata)
            .unwrap_or_default()
            .contains('*')
    );

    // Leader election: a Role in the release namespace for exactly one Lease.
    let lease_role: Role = strictly(docs.iter().find(|d| d["kind"] == "Role").expect("Role"));
    assert_eq!(
        lease_role.metadata.namespace.as_deref(),
        Some("magictunnel-system")
    );
    assert_eq!(
        grants(&lease_role.rules.unwrap_or_default()),
        [
            "coordination.k8s.io/leases:create",
            "coordination.k8s.io/leases[magictunnel-operator]:get",
            "coordination.k8s.io/leases[magictunnel-operator]:update",
        ]
    );
    // Without leader election (one replica) there is no Lease and no Role.
    let single = render(&[
        "--set",
        "leaderElection.enabled=false",
        "--set",
        "replicas=1",
    ]);
    assert!(
        !single
            .iter()
            .any(|d| d["kind"] == "Role" || d["kind"] == "RoleBinding")
    );
    let (ok, text) = helm_run(&[
        "template",
        "t",
        chart().to_str().unwrap_or_default(),
        "--kube-version",
        KUBE_VERSION,
        "--set-string",
        &format!("accountId={ACCOUNT}"),
        "--set",
        "leaderElection.enabled=false",
    ]);
    assert!(
        !ok && text.contains("replicas > 1 needs leaderElection.enabled"),
        "{text}"
    );
}

#[test]
fn the_operator_accepts_the_deployment_arguments() {
    let docs = render(&["--set", "logFormat=text"]);
    let d: Deployment = strictly(
        docs.iter()
            .find(|d| d["kind"] == "Deployment")
            .expect("deployment"),
    );
    let container = d
        .spec
        .template
        .spec
        .map(|p| p.containers[0].clone())
        .expect("container");
    let args = container.args.clone().unwrap_or_default();
    // The Lease holder identity and namespace come from the downward API.
    let env = container.env.clone().unwrap_or_default();
    let field = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.clone())
    };
    assert_eq!(field("POD_NAME").as_deref(), Some("metadata.name"));
    assert_eq!(
        field("POD_NAMESPACE").as_deref(),
        Some("metadata.namespace")
    );
    assert_eq!(args.first().map(String::as_str), Some("run"));
    // The binary's own parser takes them and the settings they make are valid.
    let argv = std::iter::once("magictunnel-operator".to_string()).chain(args);
    let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}"));
    let CliCommand::Run(run) = cli.command else {
        panic!("not the run command")
    };
    let settings = run.settings().unwrap_or_else(|e| panic!("{e}"));
    assert!(run.leader_election);
    assert_eq!(run.lease_name, "magictunnel-operator");
    assert!(run.status_poll().is_some());
    assert_eq!(settings.account_id.as_str(), ACCOUNT);
    assert_eq!(settings.tunnel_image, "magictunnel/tunnel-pod:0.1.0");
}
