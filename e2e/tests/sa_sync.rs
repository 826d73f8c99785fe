//! The SA Secret client of anycast replicas (`tunnel_pod::sync::kube`) against a real API
//! server, under exactly the Role the operator grants a tunnel pod: get, watch and update of
//! the one Secret `<tunnel>-sa` (resourceNames), with a ServiceAccount token (TokenRequest,
//! as `kubectl create token`). Proves: get; watch with the name field selector from the get's
//! resourceVersion; replace as compare-and-swap (a stale resourceVersion conflicts, exactly
//! one of two racing writers wins); acks under conflict; and that the token can do nothing
//! else (another Secret, list). Then two sync engines over the real Secret: the owner
//! publishes, the follower sees it through the watch, claims, and the old owner's next
//! write is refused.
//!
//! Run with `--ignored` against the cluster in KUBECONFIG (control-plane-only is enough).

use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use magictunnel_e2e::cluster_or_skip;
use magictunnel_e2e::namespace::TestNamespace;
use serde_json::json;
use tunnel_pod::sync::doc::{ACKS_KEY, Content, SUMMARY_KEY, StateDoc, parse_acks, unix_ms};
use tunnel_pod::sync::engine::{Conflict, Engine, Remote, Role, Step};
use tunnel_pod::sync::kube::{self as sk, SecretStore, WriteError};

const TUNNEL: &str = "t1";

async fn create<K>(api: &Api<K>, v: serde_json::Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(v).expect("object");
    api.create(&PostParams::default(), &obj)
        .await
        .expect("create")
}

/// A client that authenticates with a token of the tunnel pod's ServiceAccount (a
/// TokenRequest, what `kubectl create token` asks for).
async fn token_client(admin: &Client, ns: &str, sa: &str) -> Client {
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(admin.clone(), ns);
    let request = json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 600}
    });
    let answer: k8s_openapi::api::authentication::v1::TokenRequest = sas
        .create_subresource("token", sa, &PostParams::default(), &request)
        .await
        .expect("a token for the tunnel pod's ServiceAccount");
    let token = answer.status.and_then(|s| s.token).expect("the token");
    let mut config = kube::Config::infer().await.expect("config");
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    Client::try_from(config).expect("client")
}

fn content(tag: u32) -> Content {
    Content {
        ike_sas: vec![json!({"tag": tag})],
        ike_spis: vec![(0x1111, 0x2222)],
        next_rekey_ms: Some(unix_ms(SystemTime::now()) + 3_600_000),
        ..Content::default()
    }
}

async fn next_state(rx: &mut tokio::sync::mpsc::Receiver<Secret>, generation: u64) -> StateDoc {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("generation {generation} never came through the watch"))
            .expect("watch open");
        if let Some(Ok(doc)) = sk::state(&s)
            && doc.generation >= generation
        {
            return doc;
        }
    }
}

#[tokio::test]
#[ignore = "needs a cluster (KUBECONFIG)"]
async fn secret_client_under_the_tunnel_pod_role() {
    let admin = cluster_or_skip!();
    let ns = TestNamespace::new(&admin, "e2e-sa-sync").await.expect("ns");
    let n = ns.name.clone();
    let secret_name = format!("{TUNNEL}-sa");
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &n);
    create(
        &secrets,
        json!({"metadata": {"name": secret_name}, "type": "magictunnel.dev/sa-state"}),
    )
    .await;
    create(
        &secrets,
        json!({"metadata": {"name": "other"}, "stringData": {"k": "v"}}),
    )
    .await;
    let sa = format!("{TUNNEL}-tunnel-pod");
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(admin.clone(), &n);
    create(&sas, json!({"metadata": {"name": sa}})).await;
    let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(admin.clone(), &n);
    create(
        &roles,
        json!({"metadata": {"name": format!("{TUNNEL}-sa-sync")}, "rules": [{
            "apiGroups": [""], "resources": ["secrets"], "resourceNames": [secret_name],
            "verbs": ["get", "watch", "update"]}]}),
    )
    .await;
    let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> = Api::namespaced(admin.clone(), &n);
    create(
        &bindings,
        json!({"metadata": {"name": format!("{TUNNEL}-sa-sync")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                        "name": format!("{TUNNEL}-sa-sync")},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": n}]}),
    )
    .await;
    let pod = token_client(&admin, &n, &sa).await;
    let store = SecretStore::new(pod.clone(), &n, &secret_name);

    // Nothing else: another Secret, list.
    let pod_secrets: Api<Secret> = Api::namespaced(pod.clone(), &n);
    let denied = |r: Result<_, kube::Error>| matches!(r, Err(kube::Error::Api(s)) if s.code == 403);
    assert!(denied(pod_secrets.get("other").await.map(|_| ())));
    assert!(denied(
        pod_secrets.list(&ListParams::default()).await.map(|_| ())
    ));

    // get: empty, as the operator creates it.
    let first = store.get().await.expect("get");
    assert!(sk::state(&first).is_none());
    let rv = first.metadata.resource_version.clone().expect("rv");

    // watch from the get's resourceVersion (fieldSelector metadata.name).
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let watcher = tokio::spawn(store.clone().watch(rv, tx));

    // replace = compare-and-swap.
    let now = unix_ms(SystemTime::now());
    let d1 = StateDoc::new(1, Some("a".into()), now, content(1));
    let w1 = store.publish(&first, &d1, "a").await.expect("publish 1");
    assert_eq!(next_state(&mut rx, 1).await, d1);
    let summary: serde_json::Value =
        serde_json::from_slice(sk::data(&w1, SUMMARY_KEY).expect("summary")).expect("json");
    assert_eq!(summary["generation"], 1);
    assert_eq!(summary["owner"], "a");
    assert_eq!(summary["ikeSas"][0]["spiI"], "0000000000001111");
    // The writer's ack rides on its write.
    let acks = parse_acks(sk::data(&w1, ACKS_KEY)).expect("acks");
    assert_eq!(acks.get("a").map(|a| a.generation), Some(1));
    let stale = StateDoc::new(2, Some("b".into()), now, content(2));
    assert!(matches!(
        store.publish(&first, &stale, "b").await,
        Err(WriteError::Conflict)
    ));

    // Two writers racing on the same base: exactly one wins.
    let (ra, rb) = (
        StateDoc::new(2, Some("a".into()), now, content(3)),
        StateDoc::new(2, Some("b".into()), now, content(4)),
    );
    let (r1, r2) = tokio::join!(store.publish(&w1, &ra, "a"), store.publish(&w1, &rb, "b"));
    let wins = [r1.is_ok(), r2.is_ok()].iter().filter(|w| **w).count();
    assert_eq!(wins, 1, "{r1:?} {r2:?}");
    assert!(matches!(r1, Err(WriteError::Conflict)) || matches!(r2, Err(WriteError::Conflict)));

    // Acks of two replicas while the state changes: both recorded.
    let (a1, a2) = tokio::join!(store.ack("a", 2, now), store.ack("b", 2, now));
    a1.expect("ack a");
    a2.expect("ack b");
    let s = store.get().await.expect("get");
    let acks = parse_acks(sk::data(&s, ACKS_KEY)).expect("acks");
    assert_eq!(acks.get("a").map(|a| a.generation), Some(2));
    assert_eq!(acks.get("b").map(|a| a.generation), Some(2));
    assert_eq!(sk::state(&s).expect("state").expect("valid").generation, 2);

    // Two engines over the real Secret: a owns it, b follows, claims, a's next write fails.
    let mut a = Engine::new("a".into());
    let mut b = Engine::new("b".into());
    let latest = sk::state(&s).expect("state").expect("valid");
    for e in [&mut a, &mut b] {
        assert_eq!(e.on_remote(&latest, now), Remote::Install);
        e.installed(&latest, now);
    }
    // A follower's change of a shared SA (expiry, say) is no reason to write.
    assert_eq!(a.after_step(&content(5), true, now), Step::Send);
    // a claims (claim on receipt), then publishes a change before its message leaves.
    let claim = a.claim(&latest, now);
    let base = store.publish(&s, &claim, "a").await.expect("a claims");
    a.written(&claim, now);
    assert_eq!(a.role(), Role::Owner);
    let Step::PublishFirst(doc) = a.after_step(&content(5), true, now) else {
        panic!("the owner publishes a change first")
    };
    let w = store.publish(&base, &doc, "a").await.expect("a publishes");
    a.written(&doc, now);
    let seen = next_state(&mut rx, doc.generation).await;
    assert_eq!(b.on_remote(&seen, now), Remote::Install);
    b.installed(&seen, now);
    assert_eq!(b.content().ike_sas, content(5).ike_sas);
    // b claims on receipt on top of the latest state.
    let claim = b.claim(&seen, now);
    store.publish(&w, &claim, "b").await.expect("b claims");
    b.written(&claim, now);
    // a, not having seen it, writes on its stale base: refused, a follows b.
    let Step::PublishFirst(stale) = a.after_step(&content(6), true, now) else {
        panic!("a still thinks it owns the tunnel")
    };
    assert!(matches!(
        store.publish(&w, &stale, "a").await,
        Err(WriteError::Conflict)
    ));
    let latest = sk::state(&store.get().await.expect("get"))
        .expect("state")
        .expect("valid");
    assert_eq!(a.conflict(&stale, Some(&latest), now), Conflict::Lost);
    assert_eq!(latest.owner.as_deref(), Some("b"));
    assert_eq!(b.role(), Role::Owner);
    watcher.abort();
}
