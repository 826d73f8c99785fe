//! End-to-end on a real node: the chart's operator (2 replicas, one leader) turns MagicTunnels
//! into tunnel pods that the kubelet runs on the host network. Tests write no status: a tunnel
//! is Ready because its pod really is (a GRE tunnel with health checks disabled is ready as
//! soon as its transport is open, so its local endpoint must be an address of the host: each
//! test that runs a pod joins a [`Site`] to the host first). Every test works in a namespace of
//! its own, `e2e-ops-<test>-<hex>`.
//!
//! These need a cluster, so they are `#[ignore]`d in a plain `cargo test`; `e2e/run-local.sh`
//! (or `e2e/kind.sh`) brings one up and runs them with `--ignored`. Without `KUBECONFIG` each
//! test says it is skipped and passes, unless `MT_E2E_REQUIRED=1` (see the crate docs).
//!
//! Site slots (see [`magictunnel_e2e::host`]): 0 gre, 1 psk, 2 adopt, 3 conflict, 4 cel,
//! 5–6 delete, 7–8 shared (two customers), 9 routes; `tests/cluster.rs` uses 10–29. Tunnel /31s: 10.241.<slot>.0/24 (the traffic
//! tests use 10.231.0.0/24).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use magictunnel_e2e::host::Site;
use magictunnel_e2e::namespace::{TestNamespace, pod_running, restarts, single_owner};
use magictunnel_e2e::{cluster_or_skip, eventually, operators, pod_ready};
use operator::crd::ROTATE_PSK_ANNOTATION;
use serde_json::{Value, json};
use tunnel_pod::config::TunnelConfig;

/// Conditions the operator sets from what it reads of the API.
const WAIT: Duration = Duration::from_secs(30);
/// A pod scheduled, started by the kubelet and passing its readiness probe (period 5 s), then
/// seen by the operator.
const POD_WAIT: Duration = Duration::from_secs(90);
/// Deleted tunnels: the garbage collector removes their pods (grace 10 s) and Secrets.
const GC_WAIT: Duration = Duration::from_secs(60);

async fn namespace(client: &Client, test: &str) -> TestNamespace {
    TestNamespace::new(client, &format!("e2e-ops-{test}"))
        .await
        .expect("create namespace")
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

fn slot(site: &Site) -> u8 {
    site.local.octets()[3] - magictunnel_e2e::host::FIRST
}

/// A GRE tunnel from the site's local endpoint to its customer `i`, health checks off, no
/// routes (a running pod installs its routes on the host), inner 10.241.<slot>.<2i>/31.
fn gre(name: &str, site: &Site, i: usize) -> Value {
    json!({
        "apiVersion": "magictunnel.dev/v1alpha1", "kind": "MagicTunnel",
        "metadata": {"name": name},
        "spec": {
            "type": "GRE", "localEndpoint": site.local.to_string(),
            "customerEndpoint": site.customers[i].to_string(),
            "interfaceAddress": format!("10.241.{}.{}/31", slot(site), 2 * i),
            "healthCheck": {"enabled": false}
        }
    })
}

/// An IPsec tunnel of the site to its first customer endpoint (a second IPsec tunnel on the
/// same pair would be `AmbiguousPeer`).
fn ipsec(name: &str, site: &Site, ipsec: Value) -> Value {
    json!({
        "apiVersion": "magictunnel.dev/v1alpha1", "kind": "MagicTunnel",
        "metadata": {"name": name},
        "spec": {
            "type": "IPsec", "localEndpoint": site.local.to_string(),
            "customerEndpoint": site.customers[0].to_string(),
            "interfaceAddress": format!("10.241.{}.100/31", slot(site)),
            "healthCheck": {"enabled": false}, "ipsec": ipsec
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

/// How far [`wait_pod`] waits.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Up {
    /// The kubelet started it: phase Running (also while its container crash-loops).
    Started,
    /// Running and passing its readiness probe.
    Ready,
}

/// Waits until the pod exists and is `up`.
async fn wait_pod(ns: &TestNamespace, name: &str, up: Up) -> Pod {
    let what = format!("{}/{name} {up:?}", ns.name);
    let found = eventually(&what, POD_WAIT, || async {
        let p = ns.pods().get_opt(name).await.ok()??;
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        let ok = match up {
            Up::Started => phase,
            Up::Ready => pod_running(&p) && pod_ready(&p),
        };
        ok.then_some(p)
    })
    .await;
    match found {
        Ok(p) => p,
        Err(e) => {
            let last = ns.pods().get_opt(name).await.ok().flatten();
            panic!("{e}; last status: {:?}", last.and_then(|p| p.status));
        }
    }
}

/// The pod's container runs and never restarted (an IPsec pod that cannot bind UDP 500 exits
/// at once and crash-loops, phase still Running).
async fn assert_serving(ns: &TestNamespace, name: &str) {
    let p = ns.pods().get(name).await.expect("pod");
    assert_eq!(restarts(&p), 0, "{name} crashed: {:?}", p.status);
    assert!(pod_running(&p), "{name}: {:?}", p.status);
}

#[tokio::test]
#[ignore = "needs a cluster: e2e/run-local.sh"]
async fn the_api_server_refuses_bad_tunnels_with_readable_messages() {
    let client = cluster_or_skip!();
    // The good tunnel is created, so its pod runs: give it an address on the host.
    let site = Site::new(4, 1).expect("site");
    let ns = namespace(&client, "cel").await;
    let good = gre("t", &site, 0);
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
                json!(site.local.to_string()),
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
            ipsec(
                "t",
                &site,
                json!({"proposals": {"esp": {"encryption": ["NULL"]}}}),
            ),
            "requires allowNullCipher",
        ),
        (
            ipsec("t", &site, json!({"acceptedIkeIdTypes": ["FQDN", "FQDN"]})),
            "Duplicate value",
        ),
        (
            ipsec("t", &site, json!({"pskSecretRef": {"name": "Not_A_Name"}})),
            "must be a Secret name",
        ),
        (
            ipsec(
                "t",
                &site,
                json!({"lifetimes": {"ikeSeconds": 3600, "childSeconds": 7200}}),
            ),
            "childSeconds must be shorter",
        ),
    ];
    assert!(cases.len() >= 15, "at least 15 kinds of invalid tunnels");
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
#[ignore = "needs a cluster: e2e/run-local.sh"]
async fn gre_tunnel_runs_a_ready_pod_from_its_config_secret() {
    let client = cluster_or_skip!();
    let site = Site::new(0, 1).expect("site");
    let ns = namespace(&client, "gre").await;
    ns.create(gre("branch", &site, 0)).await.expect("created");
    ns.wait_condition("branch", "Configured", "True", "Applied", WAIT)
        .await;

    let pod = ns.pods().get("branch-0").await.expect("pod");
    let spec = pod.spec.clone().expect("spec");
    assert_eq!(spec.host_network, Some(true));
    let security = spec.containers[0]
        .security_context
        .clone()
        .expect("security context");
    let caps = security.capabilities.clone().expect("caps");
    assert_eq!(
        caps.add,
        Some(vec!["NET_ADMIN".to_string(), "NET_RAW".to_string()])
    );
    assert_eq!(caps.drop, Some(vec!["ALL".to_string()]));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.privileged, Some(false));
    let mt = ns.tunnels().get("branch").await.expect("tunnel");
    single_owner(&pod, &mt.uid().expect("uid")).expect("owner");

    let yaml = ns
        .secret_value("branch-config", "tunnel.yaml")
        .await
        .expect("config secret");
    let config =
        TunnelConfig::from_yaml(std::str::from_utf8(&yaml).expect("utf8")).expect("valid config");
    assert_eq!(config.customer_endpoint, Some(site.customers[0]));
    assert_eq!(config.local_endpoint, site.local);
    assert!(!config.health_check.enabled);

    // The kubelet runs the pod and its readiness probe passes: the transport is open.
    let started = Instant::now();
    let running = wait_pod(&ns, "branch-0", Up::Ready).await;
    let msg = ns
        .wait_condition("branch", "Ready", "True", "EndpointsReady", POD_WAIT)
        .await;
    println!("branch Ready {:?} after Configured", started.elapsed());
    assert_eq!(msg, "1/1 endpoint pods ready");
    ns.wait_condition("branch", "Established", "True", "TransportOpen", POD_WAIT)
        .await;
    ns.wait_condition("branch", "Healthy", "Unknown", "HealthChecksDisabled", WAIT)
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
    // The pod's own /status on the node (host network, status.httpPort) agrees.
    let port = status.http_port.expect("httpPort");
    let out = tokio::process::Command::new("curl")
        .args(["-sf", "--max-time", "3"])
        .arg(format!("http://10.99.0.1:{port}/status"))
        .output()
        .await
        .expect("curl");
    let body: Value = serde_json::from_slice(&out.stdout).expect("/status is JSON");
    assert_eq!(body["ready"], json!(true), "{body}");
    assert_eq!(body["established"], json!(true), "{body}");
    let reasons = ns.event_reasons("branch").await;
    assert!(
        reasons.contains(&"Applied".to_string()) && reasons.contains(&"EndpointsReady".to_string()),
        "{reasons:?}"
    );

    // A spec change rolls the pod: same name, new config hash, a new pod that becomes Ready.
    let old_hash = running
        .annotations()
        .get("magictunnel.dev/config-hash")
        .cloned();
    let change = json!({"spec": {"mtu": 1400}});
    ns.tunnels()
        .patch("branch", &PatchParams::default(), &Patch::Merge(&change))
        .await
        .expect("patch");
    eventually("the pod to be rolled", POD_WAIT, || async {
        let p = ns.pods().get("branch-0").await.ok()?;
        (p.annotations().get("magictunnel.dev/config-hash") != old_hash.as_ref()
            && p.uid() != running.uid())
        .then_some(())
    })
    .await
    .expect("rolled");
    wait_pod(&ns, "branch-0", Up::Ready).await;
    ns.wait_condition("branch", "Ready", "True", "EndpointsReady", POD_WAIT)
        .await;
}

#[tokio::test]
#[ignore = "needs a cluster: e2e/run-local.sh"]
async fn generated_psk_is_made_once_and_rotated_on_request() {
    let client = cluster_or_skip!();
    let site = Site::new(1, 1).expect("site");
    let ns = namespace(&client, "psk").await;
    ns.create(ipsec("vpn", &site, json!({})))
        .await
        .expect("created");
    ns.wait_condition("vpn", "Configured", "True", "Applied", WAIT)
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
    assert!(
        ids.fqdn.as_deref().is_some_and(
            |f| f.ends_with(".0123456789abcdef0123456789abcdef.ipsec.magictunnel.dev")
        )
    );
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
    // The pod runs (no peer answers IKE here, so it is not Ready).
    let pod = wait_pod(&ns, "vpn-0", Up::Started).await;
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
    // IKE binds UDP 500: the one capability IPsec pods add to the GRE pair.
    let created = ns.pods().get("vpn-0").await.expect("pod");
    let caps = created.spec.as_ref().expect("spec").containers[0]
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref())
        .and_then(|c| c.add.clone());
    assert_eq!(
        caps,
        Some(vec![
            "NET_ADMIN".to_string(),
            "NET_RAW".to_string(),
            "NET_BIND_SERVICE".to_string()
        ])
    );
    assert_serving(&ns, "vpn-0").await;
}

fn psk_secret(name: &str, psk: &[u8]) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "psk".to_string(),
            ByteString(psk.to_vec()),
        )])),
        ..Default::default()
    }
}

#[tokio::test]
#[ignore = "needs a cluster: e2e/run-local.sh"]
async fn adopted_psk_missing_weak_good_then_deleted_while_serving() {
    let client = cluster_or_skip!();
    let site = Site::new(2, 1).expect("site");
    let ns = namespace(&client, "adopt").await;
    let spec = ipsec("corp", &site, json!({"pskSecretRef": {"name": "corp-psk"}}));
    ns.create(spec).await.expect("created");
    let msg = ns
        .wait_condition("corp", "Configured", "False", "PskSecretNotFound", WAIT)
        .await;
    assert!(msg.contains("corp-psk"), "{msg}");
    assert!(ns.pods().get_opt("corp-0").await.expect("get").is_none());

    ns.secrets()
        .create(&PostParams::default(), &psk_secret("corp-psk", b"weak"))
        .await
        .expect("secret");
    ns.wait_condition("corp", "Configured", "False", "PskTooWeak", WAIT)
        .await;
    assert!(ns.pods().get_opt("corp-0").await.expect("get").is_none());

    let strong = b"a-strong-shared-key-2026";
    ns.secrets()
        .replace(
            "corp-psk",
            &PostParams::default(),
            &psk_secret("corp-psk", strong),
        )
        .await
        .expect("replace");
    ns.wait_condition("corp", "Configured", "True", "Applied", WAIT)
        .await;
    let pod = wait_pod(&ns, "corp-0", Up::Started).await;
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
    assert_no_key(&yaml, strong);
    let s = ns.secrets().get("corp-psk").await.expect("secret");
    assert!(
        s.owner_references().is_empty(),
        "an adopted Secret is never owned"
    );

    // Deleted while the tunnel runs (a GitOps tool re-creating it, say): the pod keeps serving
    // the last good config, and the tunnel says why it is not Configured.
    ns.secrets()
        .delete("corp-psk", &DeleteParams::default())
        .await
        .expect("delete the adopted Secret");
    let msg = ns
        .wait_condition("corp", "Configured", "False", "PskSecretNotFound", WAIT)
        .await;
    assert!(msg.contains("corp-psk"), "{msg}");
    // More reconciles and pod polls (every 10 s) later the pod is still the same one.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let kept = ns
        .pods()
        .get("corp-0")
        .await
        .expect("the pod keeps serving");
    assert_eq!(kept.uid(), pod.uid(), "the same pod");
    assert!(kept.metadata.deletion_timestamp.is_none(), "not deleted");
    let reasons = ns.event_reasons("corp").await;
    assert!(
        reasons.contains(&"PskSecretNotFound".to_string()),
        "{reasons:?}"
    );

    ns.secrets()
        .create(&PostParams::default(), &psk_secret("corp-psk", strong))
        .await
        .expect("re-create");
    ns.wait_condition("corp", "Configured", "True", "Applied", WAIT)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = ns.pods().get("corp-0").await.expect("pod");
    assert_eq!(after.uid(), pod.uid(), "still the same pod");
    // It really served all along: its container never restarted.
    assert_serving(&ns, "corp-0").await;
}

#[tokio::test]
#[ignore = "needs a cluster: e2e/run-local.sh"]
async fn indistinguishable_tunnels_are_reported_not_deployed() {
    let client = cluster_or_skip!();
    let site = Site::new(3, 1).expect("site");
    let ns = namespace(&client, "conflict").await;
    ns.create(gre("first", &site, 0)).await.expect("first");
    ns.wait_condition("first", "Configured", "True", "Applied", WAIT)
        .await;
    // Same local and customer endpoints (and no GRE key): the two cannot be told apart.
    let second = with(
        gre("second", &site, 0),
        &["spec", "interfaceAddress"],
        json!("10.241.3.10/31"),
    );
    ns.create(second).await.expect("second");
    let msg = ns
        .wait_condition("second", "Configured", "False", "EndpointConflict", WAIT)
        .await;
    assert!(msg.contains("/first"), "{msg}");
    assert!(ns.pods().get_opt("second-0").await.expect("get").is_none());
    let reasons = ns.event_reasons("second").await;
    assert!(
        reasons.contains(&"EndpointConflict".to_string()),
        "{reasons:?}"
    );

    // When the first goes away the second takes over, without being touched itself.
    ns.tunnels()
        .delete("first", &DeleteParams::default())
        .await
        .expect("delete");
    ns.wait_condition("second", "Configured", "True", "Applied", WAIT)
        .await;
    wait_pod(&ns, "second-0", Up::Ready).await;
}

fn names<K: ResourceExt>(list: &[K]) -> String {
    list.iter()
        .map(ResourceExt::name_any)
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::test]
#[ignore = "needs a cluster: e2e/run-local.sh"]
async fn deleted_tunnels_leave_no_pods_or_secrets() {
    let client = cluster_or_skip!();
    let gre_site = Site::new(5, 1).expect("site");
    let ipsec_site = Site::new(6, 1).expect("site");
    let ns = namespace(&client, "delete").await;
    ns.create(gre("g", &gre_site, 0)).await.expect("gre");
    ns.create(ipsec("i", &ipsec_site, json!({})))
        .await
        .expect("ipsec");
    for t in ["g", "i"] {
        ns.wait_condition(t, "Configured", "True", "Applied", WAIT)
            .await;
    }
    wait_pod(&ns, "g-0", Up::Ready).await;
    wait_pod(&ns, "i-0", Up::Started).await;
    let secrets = ns
        .secrets()
        .list(&ListParams::default())
        .await
        .expect("secrets")
        .items;
    let listed = names(&secrets);
    for s in ["g-config", "i-config", "i-psk"] {
        assert!(
            secrets.iter().any(|x| x.name_any() == s),
            "{s} in [{listed}]"
        );
    }

    let deleted = Instant::now();
    for t in ["g", "i"] {
        ns.tunnels()
            .delete(t, &DeleteParams::default())
            .await
            .expect("delete");
    }
    // Nothing else lives in this namespace: every pod and Secret in it was the operator's.
    let left = eventually("pods and Secrets to be collected", GC_WAIT, || async {
        let pods = ns.pods().list(&ListParams::default()).await.ok()?;
        let secrets = ns.secrets().list(&ListParams::default()).await.ok()?;
        (pods.items.is_empty() && secrets.items.is_empty()).then_some(())
    })
    .await;
    if let Err(e) = left {
        let pods = ns.pods().list(&ListParams::default()).await.expect("pods");
        let secrets = ns.secrets().list(&ListParams::default()).await.expect("s");
        panic!(
            "{e}: pods [{}], Secrets [{}]",
            names(&pods.items),
            names(&secrets.items)
        );
    }
    println!(
        "2 tunnels' pods and 3 Secrets collected {:?} after the delete (bound {GC_WAIT:?})",
        deleted.elapsed()
    );
}

#[tokio::test]
#[ignore = "needs a cluster: e2e/run-local.sh"]
async fn the_leader_serves_reconcile_metrics() {
    let client = cluster_or_skip!();
    // Found through the Lease: the leader is the replica that reconciles.
    let body = eventually("the leader's metrics", WAIT, || async {
        let leader = operators::leader(&client).await.ok()??;
        let text = operators::metrics(&leader).await.ok()?;
        text.contains("magictunnel_operator_reconciles_total")
            .then_some(text)
    })
    .await
    .expect("metrics");
    assert!(
        body.contains("magictunnel_operator_reconcile_duration_seconds_bucket"),
        "{body}"
    );
    assert_eq!(
        operators::metric_value(&body, operators::LEADER_METRIC),
        Some(1.0),
        "{body}"
    );
}

/// The ports a pod's container declares, as (protocol, container port, host port).
fn declared_ports(pod: &Pod) -> Vec<(String, i32, Option<i32>)> {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .map(|p| {
            (
                p.protocol.clone().unwrap_or_default(),
                p.container_port,
                p.host_port,
            )
        })
        .collect()
}

/// Issue #10: many IPsec tunnels on one local endpoint. Distinct customers share the node (no
/// UDP 500/4500 host ports keep the second pod off it); the same customer again, or a second
/// tunnel without customerEndpoint, is `AmbiguousPeer` and gets no pod; when the older one goes,
/// the younger is deployed without being touched.
#[tokio::test]
#[ignore = "needs a cluster: e2e/run-local.sh"]
async fn ipsec_tunnels_share_a_local_endpoint_unless_their_peers_are_ambiguous() {
    let client = cluster_or_skip!();
    let site = Site::new(7, 2).expect("site");
    let ns = namespace(&client, "shared").await;
    let tunnel = |name: &str, customer: Option<usize>, host: u8| {
        let mut t = ipsec(name, &site, json!({}));
        t["spec"]["interfaceAddress"] = json!(format!("10.241.{}.{host}/31", slot(&site)));
        match customer {
            Some(i) => t["spec"]["customerEndpoint"] = json!(site.customers[i].to_string()),
            None => {
                if let Some(spec) = t["spec"].as_object_mut() {
                    spec.remove("customerEndpoint");
                }
            }
        }
        t
    };
    ns.create(tunnel("first", Some(0), 100))
        .await
        .expect("first");
    ns.create(tunnel("second", Some(1), 102))
        .await
        .expect("second");
    for name in ["first", "second"] {
        ns.wait_condition(name, "Configured", "True", "Applied", WAIT)
            .await;
    }
    // Both pods are scheduled onto the one node and started by the kubelet (a UDP 500 host
    // port on the local endpoint would keep the second Pending), and both keep running: they
    // share UDP 500/4500 on the endpoint (SO_REUSEPORT sockets, tunnel-pod's `lobby`); without
    // that, whichever binds second exits and restarts.
    let pods = [
        wait_pod(&ns, "first-0", Up::Started).await,
        wait_pod(&ns, "second-0", Up::Started).await,
    ];
    let nodes: Vec<Option<String>> = pods
        .iter()
        .map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
        .collect();
    assert!(nodes[0].is_some(), "{nodes:?}");
    assert_eq!(nodes[0], nodes[1], "both on the one node");
    for p in &pods {
        let ports = declared_ports(p);
        assert_eq!(ports.len(), 1, "only the HTTP port: {ports:?}");
        assert_eq!(ports[0].0, "TCP", "{ports:?}");
    }
    // Long enough for a failed bind to have shown as a restart (the kubelet restarts at once).
    tokio::time::sleep(std::time::Duration::from_secs(8)).await;
    for name in ["first-0", "second-0"] {
        assert_serving(&ns, name).await;
    }

    // The same customer endpoint again: the node could not tell the two apart.
    ns.create(tunnel("third", Some(0), 104))
        .await
        .expect("third");
    let msg = ns
        .wait_condition("third", "Configured", "False", "AmbiguousPeer", WAIT)
        .await;
    assert!(msg.contains("/first"), "{msg}");
    assert!(msg.contains("customerEndpoint or localEndpoint"), "{msg}");
    // Two without customerEndpoint: only the older takes the peers nobody names.
    ns.create(tunnel("default-a", None, 106))
        .await
        .expect("default-a");
    ns.wait_condition("default-a", "Configured", "True", "Applied", WAIT)
        .await;
    ns.create(tunnel("default-b", None, 108))
        .await
        .expect("default-b");
    let msg = ns
        .wait_condition("default-b", "Configured", "False", "AmbiguousPeer", WAIT)
        .await;
    assert!(msg.contains("/default-a"), "{msg}");
    assert!(msg.contains("without customerEndpoint"), "{msg}");
    for name in ["third-0", "default-b-0"] {
        assert!(
            ns.pods().get_opt(name).await.expect("get").is_none(),
            "{name}"
        );
    }
    let reasons = ns.event_reasons("third").await;
    assert!(
        reasons.contains(&"AmbiguousPeer".to_string()),
        "{reasons:?}"
    );

    // The older one goes: the younger is deployed, without being touched itself.
    ns.tunnels()
        .delete("first", &DeleteParams::default())
        .await
        .expect("delete");
    ns.wait_condition("third", "Configured", "True", "Applied", WAIT)
        .await;
    wait_pod(&ns, "third-0", Up::Started).await;
}

/// Issue #10: two tunnels routing the same prefix with the same metric cannot run on one node
/// (the kernel refuses the second route): the younger is `RouteConflict` and gets no pod. The
/// same prefix with another metric is a backup route: both pods run and both routes are on
/// the host. When the older goes, the younger is deployed.
#[tokio::test]
#[ignore = "needs a cluster: e2e/run-local.sh"]
async fn routes_with_the_same_prefix_and_metric_are_reported() {
    let client = cluster_or_skip!();
    let site = Site::new(9, 1).expect("site");
    let ns = namespace(&client, "routes").await;
    const PREFIX: &str = "10.242.9.0/24";
    // GRE twins told apart by key, so that only the routes can conflict.
    let tunnel = |name: &str, key: u32, metric: Option<u32>| {
        let mut t = gre(name, &site, 0);
        t["spec"]["interfaceAddress"] = json!(format!("10.241.{}.{}/31", slot(&site), 2 * key));
        t["spec"]["gre"] = json!({"key": key});
        t["spec"]["routes"] = match metric {
            Some(m) => json!([{"prefix": PREFIX, "metric": m}]),
            None => json!([{"prefix": PREFIX}]),
        };
        t
    };
    let host_routes = || {
        let out = std::process::Command::new("ip")
            .args(["-o", "route", "show", "exact", PREFIX])
            .output()
            .expect("ip route");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    ns.create(tunnel("older", 1, None)).await.expect("older");
    ns.wait_condition("older", "Configured", "True", "Applied", WAIT)
        .await;
    wait_pod(&ns, "older-0", Up::Ready).await;
    ns.create(tunnel("younger", 2, Some(0)))
        .await
        .expect("younger");
    let msg = ns
        .wait_condition("younger", "Configured", "False", "RouteConflict", WAIT)
        .await;
    assert!(
        msg.contains("/older already routes 10.242.9.0/24 with metric 0"),
        "{msg}"
    );
    assert!(ns.pods().get_opt("younger-0").await.expect("get").is_none());
    ns.create(tunnel("backup", 3, Some(50)))
        .await
        .expect("backup");
    ns.wait_condition("backup", "Configured", "True", "Applied", WAIT)
        .await;
    wait_pod(&ns, "backup-0", Up::Ready).await;
    assert_serving(&ns, "older-0").await;
    assert_serving(&ns, "backup-0").await;
    let routes = eventually("both routes on the host", WAIT, || async {
        let r = host_routes();
        (r.len() == 2).then_some(r)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", host_routes()));
    assert!(routes.iter().any(|r| r.contains("metric 50")), "{routes:?}");

    ns.tunnels()
        .delete("older", &DeleteParams::default())
        .await
        .expect("delete");
    ns.wait_condition("younger", "Configured", "True", "Applied", WAIT)
        .await;
    // Ready, though perhaps after a restart: the operator does not wait for the older pod to
    // have removed its route before it starts the younger one.
    wait_pod(&ns, "younger-0", Up::Ready).await;
}

/// An anycast IPsec tunnel whose pods are never scheduled (a node selector no node has), so
/// the test runs on a control-plane-only cluster too (`MT_NODE=0`); a test "pod" is whoever
/// writes the SA-state Secret, and readiness is written into the pods' status by the test.
fn unscheduled_ipsec(name: &str, octet: u8, replicas: i32) -> Value {
    json!({
        "apiVersion": "magictunnel.dev/v1alpha1", "kind": "MagicTunnel",
        "metadata": {"name": name},
        "spec": {
            "type": "IPsec", "localEndpoint": format!("192.0.2.{octet}"),
            "customerEndpoint": format!("198.51.100.{octet}"),
            "interfaceAddress": format!("10.242.{octet}.0/31"),
            "healthCheck": {"enabled": false}, "ipsec": {}, "replicas": replicas,
            "placement": {"nodeSelector": {"magictunnel.dev/e2e-no-such-node": "true"}}
        }
    })
}

/// Whether the tunnel pods' ServiceAccount in `ns` may `verb` the Secret `name` (`None`: the
/// collection), as the API server's authorizer answers a SubjectAccessReview.
async fn pod_account_may(
    client: &Client,
    ns: &str,
    tunnel: &str,
    verb: &str,
    resource: &str,
    name: Option<&str>,
) -> bool {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    };
    let account = operator::sync_objects::service_account_name(tunnel);
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!("system:serviceaccount:{ns}:{account}")),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(ns.into()),
                verb: Some(verb.into()),
                resource: Some(resource.into()),
                name: name.map(str::to_string),
                group: Some(if resource == "events" {
                    "events.k8s.io".into()
                } else {
                    String::new()
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: kube::Api<SubjectAccessReview> = kube::Api::all(client.clone());
    api.create(&PostParams::default(), &review)
        .await
        .expect("SubjectAccessReview")
        .status
        .is_some_and(|s| s.allowed)
}

/// Writes the pod's Ready condition into its status, as a kubelet would.
async fn set_ready(ns: &TestNamespace, pod: &str, ready: bool) {
    let status = if ready { "True" } else { "False" };
    let patch = json!({"status": {"conditions": [{"type": "Ready", "status": status}]}});
    ns.pods()
        .patch_status(pod, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .expect("pod status");
}

/// Writes `summary.json`, `acks.json` (and an opaque `state.json`) into the SA-state Secret
/// the way a tunnel pod does: a replace with the resourceVersion read.
async fn publish(ns: &TestNamespace, secret: &str, docs: &[(&str, &str)]) {
    let mut s = ns.secrets().get(secret).await.expect("SA-state Secret");
    let data = s.data.get_or_insert_with(BTreeMap::new);
    for (k, v) in docs {
        data.insert((*k).into(), ByteString(v.as_bytes().to_vec()));
    }
    ns.secrets()
        .replace(secret, &PostParams::default(), &s)
        .await
        .expect("replace with the resourceVersion read");
}

async fn endpoints(ns: &TestNamespace, tunnel: &str) -> Vec<operator::crd::EndpointStatus> {
    ns.tunnels()
        .get(tunnel)
        .await
        .ok()
        .and_then(|t| t.status)
        .map(|s| s.endpoints)
        .unwrap_or_default()
}

#[tokio::test]
#[ignore = "needs a cluster: e2e/run-local.sh"]
async fn sa_sync_objects_rbac_status_and_pruning() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    use operator::sync_objects::{SA_STATE_TYPE, role_name, sa_secret_name};
    let client = cluster_or_skip!();
    let ns = namespace(&client, "sasync").await;
    let accounts: kube::Api<ServiceAccount> = kube::Api::namespaced(client.clone(), &ns.name);
    let roles: kube::Api<Role> = kube::Api::namespaced(client.clone(), &ns.name);
    let bindings: kube::Api<RoleBinding> = kube::Api::namespaced(client.clone(), &ns.name);
    let created = ns
        .create(unscheduled_ipsec("t", 201, 2))
        .await
        .expect("anycast IPsec");
    // Neighbours that share nothing: GRE with 2 replicas, IPsec with one.
    let mut gre = unscheduled_ipsec("g", 202, 2);
    gre["spec"]["type"] = json!("GRE");
    gre["spec"].as_object_mut().expect("spec").remove("ipsec");
    ns.create(gre).await.expect("gre");
    ns.create(unscheduled_ipsec("one", 203, 1))
        .await
        .expect("single IPsec");
    for t in ["t", "g", "one"] {
        ns.wait_condition(t, "Configured", "True", "Applied", WAIT)
            .await;
    }
    let uid = created.metadata.uid.clone().expect("uid");

    // The objects, exactly.
    let role = roles.get(&role_name("t")).await.expect("Role t-sa-sync");
    let rules = role.rules.clone().unwrap_or_default();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0].api_groups.as_deref(), Some(&[String::new()][..]));
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["secrets".to_string()][..])
    );
    assert_eq!(
        rules[0].resource_names.as_deref(),
        Some(&["t-sa".to_string()][..])
    );
    assert_eq!(rules[0].verbs, ["get", "watch", "update"]);
    let binding = bindings.get(&role_name("t")).await.expect("RoleBinding");
    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(binding.role_ref.name, "t-sa-sync");
    let subjects = binding.subjects.clone().unwrap_or_default();
    assert_eq!(subjects.len(), 1);
    assert_eq!(
        (subjects[0].kind.as_str(), subjects[0].name.as_str()),
        ("ServiceAccount", "t-tunnel-pod")
    );
    assert_eq!(subjects[0].namespace.as_deref(), Some(ns.name.as_str()));
    let account = accounts.get("t-tunnel-pod").await.expect("ServiceAccount");
    let secret = ns.secrets().get(&sa_secret_name("t")).await.expect("t-sa");
    assert_eq!(secret.type_.as_deref(), Some(SA_STATE_TYPE));
    assert!(
        secret.data.as_ref().is_none_or(|d| d.is_empty()),
        "created empty"
    );
    for (what, owners) in [
        ("Role", role.owner_references()),
        ("RoleBinding", binding.owner_references()),
        ("ServiceAccount", account.owner_references()),
        ("Secret", secret.owner_references()),
    ] {
        assert!(
            matches!(owners, [o] if o.uid == uid && o.controller == Some(true)),
            "{what}: {owners:?}"
        );
    }
    // Nothing of the kind for the others.
    for other in ["g", "one"] {
        assert!(
            accounts
                .get_opt(&format!("{other}-tunnel-pod"))
                .await
                .expect("get")
                .is_none()
        );
        assert!(
            roles
                .get_opt(&role_name(other))
                .await
                .expect("get")
                .is_none()
        );
        assert!(
            ns.secrets()
                .get_opt(&sa_secret_name(other))
                .await
                .expect("get")
                .is_none()
        );
        assert!(ns.condition(other, "Synchronized").await.is_none());
    }

    // The pods: the account's token, their name, their slot; the others none.
    for i in 0..2 {
        let name = format!("t-{i}");
        let pod = eventually(&name, WAIT, || async {
            ns.pods().get_opt(&name).await.ok()?
        })
        .await
        .expect("pod");
        let spec = pod.spec.expect("spec");
        assert_eq!(spec.service_account_name.as_deref(), Some("t-tunnel-pod"));
        assert_eq!(spec.automount_service_account_token, Some(true));
        let c = &spec.containers[0];
        let args = c.args.clone().unwrap_or_default();
        assert_eq!(
            args[args.len() - 2..],
            ["--replica".to_string(), i.to_string()]
        );
        let env = c.env.clone().unwrap_or_default();
        assert!(env.iter().any(|e| {
            e.name == "POD_NAME"
                && e.value_from
                    .as_ref()
                    .and_then(|v| v.field_ref.as_ref())
                    .map(|f| f.field_path.as_str())
                    == Some("metadata.name")
        }));
    }
    for pod in ["g-0", "g-1", "one-0"] {
        let p = eventually(pod, WAIT, || async { ns.pods().get_opt(pod).await.ok()? })
            .await
            .expect("pod");
        let spec = p.spec.expect("spec");
        assert_eq!(spec.automount_service_account_token, Some(false), "{pod}");
        assert!(spec.containers[0].env.is_none(), "{pod}");
    }
    let config = ns
        .secret_value("t-config", "tunnel.yaml")
        .await
        .expect("config");
    let config =
        TunnelConfig::from_yaml(std::str::from_utf8(&config).expect("utf8")).expect("config");
    assert_eq!(config.replicas, 2);
    let sync = config.ipsec.and_then(|i| i.sync).expect("ipsec.sync");
    assert_eq!(
        (sync.namespace.as_str(), sync.secret.as_str()),
        (ns.name.as_str(), "t-sa")
    );

    // What the account may do: get, watch, update of its one Secret; nothing else.
    let may = |verb: &'static str, resource: &'static str, name: Option<&'static str>| {
        pod_account_may(&client, &ns.name, "t", verb, resource, name)
    };
    for verb in ["get", "watch", "update"] {
        assert!(
            may(verb, "secrets", Some("t-sa")).await,
            "{verb} t-sa refused"
        );
    }
    for (verb, resource, name) in [
        ("get", "secrets", Some("t-config")),
        ("get", "secrets", Some("t-psk")),
        ("update", "secrets", Some("g-config")),
        ("watch", "secrets", None),
        ("list", "secrets", None),
        ("list", "secrets", Some("t-sa")),
        ("create", "secrets", None),
        ("delete", "secrets", Some("t-sa")),
        ("patch", "secrets", Some("t-sa")),
        ("get", "pods", Some("t-0")),
        ("list", "pods", None),
        ("create", "events", None),
        ("get", "serviceaccounts", Some("t-tunnel-pod")),
    ] {
        assert!(
            !may(verb, resource, name).await,
            "{verb} {resource} {name:?} allowed"
        );
    }

    // Status from what the replicas publish.
    ns.wait_condition("t", "Synchronized", "Unknown", "NoState", WAIT)
        .await;
    for pod in ["t-0", "t-1"] {
        set_ready(&ns, pod, true).await;
    }
    let summary = r#"{"generation":7,"owner":"t-0","publishedAt":"2026-12-01T17:00:00.123Z",
        "ikeSas":[{"spiI":"0011223344556677","spiR":"8899aabbccddeeff"}],
        "childSas":[{"spiIn":"c1a2b3c4","spiOut":"d5e6f7a8"}]}"#;
    let state = "opaque state of the replicas (keys in real life)";
    let written = Instant::now();
    publish(
        &ns,
        "t-sa",
        &[
            ("state.json", state),
            ("summary.json", summary),
            (
                "acks.json",
                r#"{"t-0":{"generation":7,"at":"x"},"t-1":{"generation":6,"at":"y"}}"#,
            ),
        ],
    )
    .await;
    let lagging = ns
        .wait_condition("t", "Synchronized", "False", "Lagging", WAIT)
        .await;
    let lag_seen = written.elapsed();
    assert!(lagging.contains("t-1 at generation 6"), "{lagging}");
    assert!(!lagging.contains("t-0"), "{lagging}");
    let written = Instant::now();
    publish(
        &ns,
        "t-sa",
        &[(
            "acks.json",
            r#"{"t-0":{"generation":7,"at":"x"},"t-1":{"generation":7,"at":"z"}}"#,
        )],
    )
    .await;
    ns.wait_condition("t", "Synchronized", "True", "InSync", WAIT)
        .await;
    let sync_seen = written.elapsed();
    let eps = endpoints(&ns, "t").await;
    assert_eq!(eps.len(), 2, "{eps:?}");
    for e in &eps {
        assert!(e.ready);
        assert_eq!(e.ike_owner, Some(e.pod == "t-0"), "{e:?}");
        assert_eq!(e.installed_generation, Some(7), "{e:?}");
        assert_eq!(e.child_spis, ["c1a2b3c4/d5e6f7a8"], "{e:?}");
    }
    // No key-like document reaches status.
    let status =
        serde_json::to_string(&ns.tunnels().get("t").await.expect("t").status).expect("json");
    assert!(!status.contains("opaque state"), "{status}");
    // A new generation, published now, that t-1 does not install: in sync while it may still
    // be installing it (3 s after publishedAt), lagging after.
    let now = k8s_openapi::jiff::Timestamp::now();
    let fresh = format!(
        r#"{{"generation":8,"owner":"t-0","publishedAt":"{now}","childSas":[{{"spiIn":"c1a2b3c5","spiOut":"d5e6f7a9"}}]}}"#
    );
    publish(
        &ns,
        "t-sa",
        &[
            ("summary.json", &fresh),
            (
                "acks.json",
                r#"{"t-0":{"generation":8},"t-1":{"generation":7}}"#,
            ),
        ],
    )
    .await;
    let installing = eventually("the new generation in status", WAIT, || async {
        let (s, r, m) = ns.condition("t", "Synchronized").await?;
        (m.contains("generation 8")).then_some((s, r, m))
    })
    .await
    .expect("generation 8");
    let fresh_seen = now.duration_until(k8s_openapi::jiff::Timestamp::now());
    assert_eq!(
        (installing.0.as_str(), installing.1.as_str()),
        ("True", "InSync"),
        "{installing:?}"
    );
    assert!(
        installing.2.contains("installing: t-1 at generation 7"),
        "{installing:?}"
    );
    let lagging = ns
        .wait_condition(
            "t",
            "Synchronized",
            "False",
            "Lagging",
            Duration::from_secs(10),
        )
        .await;
    let lag_after = now.duration_until(k8s_openapi::jiff::Timestamp::now());
    assert!(lagging.contains("t-1 at generation 7"), "{lagging}");
    assert!(
        lag_after.as_secs_f64() >= 3.0,
        "lagging before the grace was over: {lag_after:?}"
    );
    publish(
        &ns,
        "t-sa",
        &[
            ("summary.json", summary),
            (
                "acks.json",
                r#"{"t-0":{"generation":7},"t-1":{"generation":7}}"#,
            ),
        ],
    )
    .await;
    ns.wait_condition("t", "Synchronized", "True", "InSync", WAIT)
        .await;
    // A replica that is not ready does not count; its lag shows in its endpoint.
    set_ready(&ns, "t-1", false).await;
    publish(
        &ns,
        "t-sa",
        &[(
            "acks.json",
            r#"{"t-0":{"generation":7},"t-1":{"generation":5}}"#,
        )],
    )
    .await;
    eventually("t-1 at generation 5", WAIT, || async {
        let eps = endpoints(&ns, "t").await;
        eps.iter()
            .any(|e| e.pod == "t-1" && e.installed_generation == Some(5) && e.child_spis.is_empty())
            .then_some(())
    })
    .await
    .expect("endpoint of t-1");
    assert_eq!(
        ns.condition("t", "Synchronized").await.map(|c| c.1),
        Some("InSync".into())
    );
    // Garbage is reported, not trusted.
    publish(
        &ns,
        "t-sa",
        &[("summary.json", "{\"generation\": \"seven\"")],
    )
    .await;
    let bad = ns
        .wait_condition("t", "Synchronized", "Unknown", "StateUnreadable", WAIT)
        .await;
    assert!(bad.contains("summary.json"), "{bad}");
    publish(&ns, "t-sa", &[("summary.json", summary)]).await;
    ns.wait_condition("t", "Synchronized", "True", "InSync", WAIT)
        .await;

    // Reconciles (a spec-neutral annotation, a resync) never touch what the pods wrote.
    let before = ns.secrets().get("t-sa").await.expect("t-sa");
    let annotate = json!({"metadata": {"annotations": {"e2e.magictunnel.dev/poke": "1"}}});
    ns.tunnels()
        .patch("t", &PatchParams::default(), &Patch::Merge(&annotate))
        .await
        .expect("annotate");
    ns.wait_condition("t", "Configured", "True", "Applied", WAIT)
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = ns.secrets().get("t-sa").await.expect("t-sa");
    assert_eq!(before.data, after.data, "the operator wrote the SA state");
    assert_eq!(
        after
            .data
            .as_ref()
            .and_then(|d| d.get("state.json"))
            .map(|b| b.0.clone()),
        Some(state.as_bytes().to_vec())
    );
    // Deleted by hand, the Role comes back (owned objects are watched).
    roles
        .delete(&role_name("t"), &DeleteParams::default())
        .await
        .expect("delete Role");
    eventually("the Role to be put back", WAIT, || async {
        roles.get_opt(&role_name("t")).await.ok()?.map(|_| ())
    })
    .await
    .expect("Role back");

    // Two replicas to one: sharing stops, everything of it goes, the pod loses its token.
    let one = json!({"spec": {"replicas": 1}});
    ns.tunnels()
        .patch("t", &PatchParams::default(), &Patch::Merge(&one))
        .await
        .expect("replicas 1");
    let pruned = Instant::now();
    eventually("the SA-sharing objects to be pruned", WAIT, || async {
        let gone = accounts.get_opt("t-tunnel-pod").await.ok()?.is_none()
            && roles.get_opt(&role_name("t")).await.ok()?.is_none()
            && bindings.get_opt(&role_name("t")).await.ok()?.is_none()
            && ns.secrets().get_opt("t-sa").await.ok()?.is_none();
        gone.then_some(())
    })
    .await
    .expect("pruned");
    let prune_seen = pruned.elapsed();
    eventually("Synchronized to go", WAIT, || async {
        ns.condition("t", "Synchronized")
            .await
            .is_none()
            .then_some(())
    })
    .await
    .expect("no Synchronized");
    eventually("t-0 without a token", WAIT, || async {
        let pods = ns.tunnel_pods("t").await;
        let [p] = pods.as_slice() else { return None };
        let spec = p.spec.as_ref()?;
        (p.name_any() == "t-0"
            && spec.automount_service_account_token == Some(false)
            && spec
                .service_account_name
                .as_deref()
                .is_none_or(|s| s == "default"))
        .then_some(())
    })
    .await
    .expect("t-0 replaced");
    let eps = endpoints(&ns, "t").await;
    assert!(
        eps.iter()
            .all(|e| e.ike_owner.is_none() && e.installed_generation.is_none()),
        "{eps:?}"
    );
    println!(
        "SA-state publish -> status: Lagging after {lag_seen:?}, InSync after {sync_seen:?}; \
         a fresh generation shown after {fresh_seen:?}, lagging after {lag_after:?} (grace 3 s); \
         replicas 2 -> 1 pruned in {prune_seen:?}"
    );
}
