//! End-to-end: a real kube-apiserver (and garbage collector) and the operator running as its
//! ServiceAccount with the chart's RBAC. Every test works in a namespace of its own.
//!
//! These need a cluster and a running operator, so they are `#[ignore]`d in a plain
//! `cargo test`; `e2e/run-local.sh` (or `e2e/kind.sh`) sets both up and runs them with
//! `--ignored`.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::{Client, ResourceExt};
use magictunnel_e2e::{client, eventually};
use operator::crd::{MagicTunnel, ROTATE_PSK_ANNOTATION};
use serde_json::{Value, json};
use tunnel_pod::config::TunnelConfig;

const WAIT: Duration = Duration::from_secs(30);

/// A namespace for one test, deleted (with everything in it) when the test ends.
struct TestNamespace {
    client: Client,
    name: String,
}

impl TestNamespace {
    async fn new(test: &str) -> Self {
        let client = client().await.expect("cluster in KUBECONFIG");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!("e2e-{test}-{nanos:x}");
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name}})).expect("ns");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        TestNamespace { client, name }
    }
    fn tunnels(&self) -> Api<MagicTunnel> {
        Api::namespaced(self.client.clone(), &self.name)
    }
    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.name)
    }
    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Create from raw JSON, so that objects our own types could not even hold reach the API.
    async fn create(&self, tunnel: Value) -> Result<DynamicObject, kube::Error> {
        let obj: DynamicObject = serde_json::from_value(tunnel).expect("object shape");
        let resource = ApiResource::erase::<MagicTunnel>(&());
        Api::<DynamicObject>::namespaced_with(self.client.clone(), &self.name, &resource)
            .create(&PostParams::default(), &obj)
            .await
    }

    async fn condition(&self, tunnel: &str, type_: &str) -> Option<(String, String, String)> {
        let mt = self.tunnels().get(tunnel).await.ok()?;
        let status = mt.status?;
        let c = status.conditions.iter().find(|c| c.type_ == type_)?;
        Some((c.status.clone(), c.reason.clone(), c.message.clone()))
    }

    async fn wait_condition(
        &self,
        tunnel: &str,
        type_: &str,
        status: &str,
        reason: &str,
    ) -> String {
        eventually(
            &format!("{tunnel} {type_}={status} ({reason})"),
            WAIT,
            || async {
                let (s, r, m) = self.condition(tunnel, type_).await?;
                (s == status && r == reason).then_some(m)
            },
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}; last: {:?}",
                futures::executor::block_on(self.condition(tunnel, type_))
            )
        })
    }

    async fn secret_value(&self, name: &str, key: &str) -> Option<Vec<u8>> {
        let s = self.secrets().get(name).await.ok()?;
        s.data?.get(key).map(|b| b.0.clone())
    }

    async fn event_reasons(&self, tunnel: &str) -> Vec<String> {
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

    /// Act as the kubelet: report the pod Ready.
    async fn mark_ready(&self, pod: &str) {
        let status = json!({"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
        ]}});
        self.pods()
            .patch_status(pod, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("pod status");
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Best effort: the namespace controller removes what is inside. A client of its own on
        // a runtime of its own: the test's runtime is blocked in this drop.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    if let Ok(client) = client().await {
                        let api: Api<Namespace> = Api::all(client);
                        let _ = api.delete(&name, &DeleteParams::default()).await;
                    }
                });
            }
        })
        .join();
    }
}

/// The pod's PSK volume as (Secret, key, file name, mount path), checked to be a read-only
/// directory mount (a subPath mount would never see a rotation).
fn psk_volume(pod: &Pod) -> Option<(String, String, String, String)> {
    let spec = pod.spec.as_ref()?;
    let volume = spec.volumes.iter().flatten().find(|v| v.name == "psk")?;
    let secret = volume.secret.as_ref()?;
    let mount = spec
        .containers
        .first()?
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "psk")?;
    assert_eq!(mount.read_only, Some(true));
    assert_eq!(mount.sub_path, None);
    assert_eq!(secret.default_mode, Some(0o400));
    let [item] = secret.items.as_deref()? else {
        panic!("one item expected: {:?}", secret.items);
    };
    Some((
        secret.secret_name.clone()?,
        item.key.clone(),
        item.path.clone(),
        mount.mount_path.clone(),
    ))
}

/// Fails if `key`, raw or base64, is in `bytes`.
fn assert_no_key(bytes: &[u8], key: &[u8]) {
    // ByteString serializes as standard base64.
    let encoded = serde_json::to_value(ByteString(key.to_vec())).expect("base64");
    let encoded = encoded.as_str().expect("string").as_bytes().to_vec();
    for needle in [key, encoded.as_slice()] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "the PSK appears where it must not"
        );
    }
}

fn gre(name: &str, customer: &str) -> Value {
    json!({
        "apiVersion": "magictunnel.dev/v1alpha1", "kind": "MagicTunnel",
        "metadata": {"name": name},
        "spec": {
            "type": "GRE", "localEndpoint": "192.0.2.10", "customerEndpoint": customer,
            "interfaceAddress": "10.200.0.0/31", "routes": [{"prefix": "10.20.0.0/16"}]
        }
    })
}

/// Tests run side by side in one account: each IPsec tunnel gets its own customer endpoint so
/// that ID_IPV4_ADDR stays unique (the operator withdraws it from tunnels sharing a pair).
fn ipsec(name: &str, ipsec: Value) -> Value {
    static NEXT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(20);
    let host = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    json!({
        "apiVersion": "magictunnel.dev/v1alpha1", "kind": "MagicTunnel",
        "metadata": {"name": name},
        "spec": {
            "type": "IPsec", "localEndpoint": "192.0.2.20", "customerEndpoint": format!("198.51.100.{host}"),
            "interfaceAddress": "10.200.0.2/31", "ipsec": ipsec
        }
    })
}

fn with(mut base: Value, path: &[&str], value: Value) -> Value {
    let mut cur = &mut base;
    for key in &path[..path.len() - 1] {
        cur = &mut cur[*key];
    }
    cur[path[path.len() - 1]] = value;
    base
}

#[tokio::test]
#[ignore = "needs a cluster and a running operator: e2e/run-local.sh"]
async fn the_api_server_refuses_bad_tunnels_with_readable_messages() {
    let ns = TestNamespace::new("cel").await;
    let good = gre("t", "198.51.100.7");
    let long_name = "n".repeat(51);
    let cases = [
        (
            with(good.clone(), &["spec", "customerEndpoint"], Value::Null),
            "customerEndpoint is required for GRE tunnels",
        ),
        (
            with(good.clone(), &["spec", "localEndpoint"], json!("192.0.2")),
            "localEndpoint must be an IPv4 address",
        ),
        (
            with(
                good.clone(),
                &["spec", "interfaceAddress"],
                json!("10.0.0.0/24"),
            ),
            "/31 or /30",
        ),
        (
            with(good.clone(), &["spec", "mtu"], json!(9000)),
            "should be less than or equal to 1500",
        ),
        (
            with(good.clone(), &["spec", "ttl"], json!(0)),
            "should be greater than or equal to 1",
        ),
        (
            with(good.clone(), &["spec", "type"], json!("VXLAN")),
            "supported values: \"GRE\", \"IPsec\"",
        ),
        (
            with(
                good.clone(),
                &["spec", "routes"],
                json!([{"prefix": "10.1.2.3/16"}]),
            ),
            "no host bits set",
        ),
        (
            with(good.clone(), &["spec", "ipsec"], json!({})),
            "only allowed when type is IPsec",
        ),
        (
            with(
                good.clone(),
                &["spec", "customerEndpoint"],
                json!("192.0.2.10"),
            ),
            "must differ from localEndpoint",
        ),
        (
            with(
                good.clone(),
                &["spec", "mssClamp"],
                json!({"mode": "Fixed"}),
            ),
            "mssClamp.value is required",
        ),
        (
            with(good.clone(), &["metadata", "name"], json!(long_name)),
            "at most 50 characters",
        ),
        (
            ipsec("t", json!({"proposals": {"esp": {"encryption": ["NULL"]}}})),
            "requires allowNullCipher",
        ),
        (
            ipsec("t", json!({"acceptedIkeIdTypes": ["FQDN", "FQDN"]})),
            "Duplicate value",
        ),
        (
            ipsec("t", json!({"pskSecretRef": {"name": "Not_A_Name"}})),
            "must be a Secret name",
        ),
        (
            ipsec(
                "t",
                json!({"lifetimes": {"ikeSeconds": 3600, "childSeconds": 7200}}),
            ),
            "childSeconds must be shorter",
        ),
    ];
    for (tunnel, expected) in cases {
        match ns.create(tunnel.clone()).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{}", status.message);
                assert!(
                    status.message.contains(expected),
                    "expected {expected:?} in {:?}",
                    status.message
                );
            }
            other => panic!("{tunnel} was not refused: {other:?}"),
        }
    }
    // type is immutable.
    ns.create(good).await.expect("a good tunnel is accepted");
    let change = json!({"spec": {"type": "IPsec"}});
    let err = ns
        .tunnels()
        .patch("t", &PatchParams::default(), &Patch::Merge(&change))
        .await
        .expect_err("type change refused");
    assert!(err.to_string().contains("type is immutable"), "{err}");
}

#[tokio::test]
#[ignore = "needs a cluster and a running operator: e2e/run-local.sh"]
async fn gre_tunnel_becomes_a_config_secret_a_pod_and_status() {
    let ns = TestNamespace::new("gre").await;
    ns.create(gre("branch", "198.51.100.7"))
        .await
        .expect("created");
    ns.wait_condition("branch", "Configured", "True", "Applied")
        .await;

    let pod = ns.pods().get("branch-0").await.expect("pod");
    let spec = pod.spec.clone().expect("spec");
    assert_eq!(spec.host_network, Some(true));
    let caps = spec.containers[0]
        .security_context
        .clone()
        .and_then(|s| s.capabilities)
        .expect("caps");
    assert_eq!(
        caps.add,
        Some(vec!["NET_ADMIN".to_string(), "NET_RAW".to_string()])
    );
    assert_eq!(pod.owner_references()[0].kind, "MagicTunnel");

    let yaml = ns
        .secret_value("branch-config", "tunnel.yaml")
        .await
        .expect("config secret");
    let config =
        TunnelConfig::from_yaml(std::str::from_utf8(&yaml).expect("utf8")).expect("valid config");
    assert_eq!(
        config.customer_endpoint.map(|c| c.to_string()).as_deref(),
        Some("198.51.100.7")
    );

    let msg = ns
        .wait_condition("branch", "Ready", "False", "EndpointsNotReady")
        .await;
    assert_eq!(msg, "0/1 endpoint pods ready");
    ns.mark_ready("branch-0").await;
    ns.wait_condition("branch", "Ready", "True", "EndpointsReady")
        .await;
    let mt = ns.tunnels().get("branch").await.expect("tunnel");
    let status = mt.status.expect("status");
    assert_eq!(status.tunnel_id.as_deref().map(str::len), Some(32));
    assert_eq!(status.observed_generation, mt.metadata.generation);
    assert!(
        status
            .endpoints
            .iter()
            .any(|e| e.pod == "branch-0" && e.ready)
    );
    let reasons = ns.event_reasons("branch").await;
    assert!(
        reasons.contains(&"Applied".to_string()) && reasons.contains(&"EndpointsReady".to_string()),
        "{reasons:?}"
    );

    // A spec change rolls the pod: same name, new config hash.
    let old_hash = pod
        .annotations()
        .get("magictunnel.dev/config-hash")
        .cloned();
    let change = json!({"spec": {"mtu": 1400}});
    ns.tunnels()
        .patch("branch", &PatchParams::default(), &Patch::Merge(&change))
        .await
        .expect("patch");
    eventually("the pod to be rolled", WAIT, || async {
        let p = ns.pods().get("branch-0").await.ok()?;
        (p.annotations().get("magictunnel.dev/config-hash") != old_hash.as_ref()).then_some(())
    })
    .await
    .expect("rolled");

    // Deleting the tunnel garbage-collects its pods and Secrets.
    ns.tunnels()
        .delete("branch", &DeleteParams::default())
        .await
        .expect("delete");
    eventually(
        "pods and Secrets to be collected",
        Duration::from_secs(90),
        || async {
            let pods = ns.pods().list(&ListParams::default()).await.ok()?;
            let config = ns.secrets().get_opt("branch-config").await.ok()?;
            (pods.items.is_empty() && config.is_none()).then_some(())
        },
    )
    .await
    .expect("garbage collected");
}

#[tokio::test]
#[ignore = "needs a cluster and a running operator: e2e/run-local.sh"]
async fn generated_psk_is_made_once_and_rotated_on_request() {
    let ns = TestNamespace::new("psk").await;
    ns.create(ipsec("vpn", json!({}))).await.expect("created");
    ns.wait_condition("vpn", "Configured", "True", "Applied")
        .await;
    let first = ns
        .secret_value("vpn-psk", "psk")
        .await
        .expect("generated PSK");
    assert_eq!(first.len(), 43);
    let secret = ns.secrets().get("vpn-psk").await.expect("secret");
    let version = secret.resource_version();
    assert!(secret.owner_references()[0].controller == Some(true));

    // Unrelated edits reconcile again; the PSK stays.
    let label = json!({"metadata": {"labels": {"touched": "yes"}}});
    ns.tunnels()
        .patch("vpn", &PatchParams::default(), &Patch::Merge(&label))
        .await
        .expect("label");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        ns.secrets()
            .get("vpn-psk")
            .await
            .expect("secret")
            .resource_version(),
        version
    );

    let mt = ns.tunnels().get("vpn").await.expect("tunnel");
    let status = mt.status.clone().expect("status");
    assert_eq!(status.psk_secret_name.as_deref(), Some("vpn-psk"));
    assert!(status.psk_generated_at.is_some());
    let ids = status.ike_ids.expect("IKE IDs");
    assert!(ids.fqdn.as_deref().is_some_and(|f| f.ends_with(".0123456789abcdef0123456789abcdef.ipsec.magictunnel.dev")));
    assert_eq!(
        ids.ipv4_addr, mt.spec.customer_endpoint,
        "the endpoint pair is unique"
    );
    let whole = serde_json::to_string(&mt).expect("json");
    assert!(
        !whole.contains(std::str::from_utf8(&first).expect("ascii")),
        "the PSK leaked into the object"
    );

    // The config the pod reads names the mounted PSK file and holds no key; the pod mounts the
    // generated Secret itself.
    let yaml = ns
        .secret_value("vpn-config", "tunnel.yaml")
        .await
        .expect("config");
    let config = TunnelConfig::from_yaml(std::str::from_utf8(&yaml).expect("utf8")).expect("valid");
    let ipsec = config.ipsec.expect("ipsec");
    assert!(ipsec.psk.is_none());
    assert_eq!(
        ipsec.psk_file.as_deref(),
        Some(std::path::Path::new("/etc/magictunnel-psk/psk"))
    );
    assert_no_key(&yaml, &first);
    let config_version = ns
        .secrets()
        .get("vpn-config")
        .await
        .expect("config")
        .resource_version();
    let pod = ns.pods().get("vpn-0").await.expect("pod");
    assert_eq!(
        psk_volume(&pod),
        Some((
            "vpn-psk".into(),
            "psk".into(),
            "psk".into(),
            "/etc/magictunnel-psk".into()
        ))
    );
    assert_no_key(&serde_json::to_vec(&pod).expect("json"), &first);

    let rotate = json!({"metadata": {"annotations": {ROTATE_PSK_ANNOTATION: "1"}}});
    ns.tunnels()
        .patch("vpn", &PatchParams::default(), &Patch::Merge(&rotate))
        .await
        .expect("annotate");
    let second = eventually("a rotated PSK", WAIT, || async {
        let v = ns.secret_value("vpn-psk", "psk").await?;
        (v != first).then_some(v)
    })
    .await
    .expect("rotated");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        ns.secret_value("vpn-psk", "psk").await,
        Some(second.clone()),
        "rotated exactly once"
    );
    // Neither the config Secret nor the pod changes: the kubelet refreshes the mounted file.
    assert_eq!(
        ns.secrets()
            .get("vpn-config")
            .await
            .expect("config")
            .resource_version(),
        config_version,
        "a rotation leaves the config Secret alone"
    );
    let after = ns.pods().get("vpn-0").await.expect("pod");
    assert_eq!(after.uid(), pod.uid(), "a rotation restarts no pod");
    let yaml = ns
        .secret_value("vpn-config", "tunnel.yaml")
        .await
        .expect("config");
    assert_no_key(&yaml, &second);
    assert!(
        ns.event_reasons("vpn")
            .await
            .contains(&"PskRotated".to_string())
    );
}

#[tokio::test]
#[ignore = "needs a cluster and a running operator: e2e/run-local.sh"]
async fn adopted_psk_secret_missing_weak_then_good() {
    let ns = TestNamespace::new("adopt").await;
    ns.create(ipsec("corp", json!({"pskSecretRef": {"name": "corp-psk"}})))
        .await
        .expect("created");
    let msg = ns
        .wait_condition("corp", "Configured", "False", "PskSecretNotFound")
        .await;
    assert!(msg.contains("corp-psk"), "{msg}");
    assert!(ns.pods().get_opt("corp-0").await.expect("get").is_none());

    let mut secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("corp-psk".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "psk".to_string(),
            ByteString(b"weak".to_vec()),
        )])),
        ..Default::default()
    };
    ns.secrets()
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    ns.wait_condition("corp", "Configured", "False", "PskTooWeak")
        .await;

    secret.data = Some(BTreeMap::from([(
        "psk".to_string(),
        ByteString(b"a-strong-shared-key-2026".to_vec()),
    )]));
    ns.secrets()
        .replace("corp-psk", &PostParams::default(), &secret)
        .await
        .expect("replace");
    ns.wait_condition("corp", "Configured", "True", "Applied")
        .await;
    let pod = ns
        .pods()
        .get_opt("corp-0")
        .await
        .expect("get")
        .expect("pod");
    assert_eq!(
        psk_volume(&pod),
        Some((
            "corp-psk".into(),
            "psk".into(),
            "psk".into(),
            "/etc/magictunnel-psk".into()
        ))
    );
    let yaml = ns
        .secret_value("corp-config", "tunnel.yaml")
        .await
        .expect("config");
    assert_no_key(&yaml, b"a-strong-shared-key-2026");
    let s = ns.secrets().get("corp-psk").await.expect("secret");
    assert!(
        s.owner_references().is_empty(),
        "an adopted Secret is never owned"
    );
}

#[tokio::test]
#[ignore = "needs a cluster and a running operator: e2e/run-local.sh"]
async fn indistinguishable_tunnels_are_reported_not_deployed() {
    let ns = TestNamespace::new("conflict").await;
    ns.create(gre("first", "198.51.100.99"))
        .await
        .expect("first");
    ns.wait_condition("first", "Configured", "True", "Applied")
        .await;
    ns.create(gre("second", "198.51.100.99"))
        .await
        .expect("second");
    let msg = ns
        .wait_condition("second", "Configured", "False", "EndpointConflict")
        .await;
    assert!(msg.contains("/first"), "{msg}");
    assert!(ns.pods().get_opt("second-0").await.expect("get").is_none());

    // When the first goes away the second takes over, without being touched itself.
    ns.tunnels()
        .delete("first", &DeleteParams::default())
        .await
        .expect("delete");
    ns.wait_condition("second", "Configured", "True", "Applied")
        .await;
}

#[tokio::test]
#[ignore = "needs a cluster and a running operator: e2e/run-local.sh"]
async fn operator_serves_metrics() {
    let Ok(url) = std::env::var("MT_E2E_OPERATOR_METRICS") else {
        panic!("MT_E2E_OPERATOR_METRICS is not set (e2e/run-local.sh sets it)");
    };
    let body = eventually("operator metrics", WAIT, || async {
        let out = tokio::process::Command::new("curl")
            .args(["-sf", &url])
            .output()
            .await
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        text.contains("magictunnel_operator_reconciles_total")
            .then_some(text)
    })
    .await
    .expect("metrics");
    assert!(
        body.contains("magictunnel_operator_reconcile_duration_seconds_bucket"),
        "{body}"
    );
}
