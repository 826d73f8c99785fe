//! Reconcile against a mocked API server (tower-test): every request the operator makes is
//! checked in order, answered, and nothing else may be sent. These complement the e2e suite
//! against a real kube-apiserver; they pin down the exact API traffic of each scenario.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, Resource};
use magictunnel_types::config::TunnelConfig;
use operator::build::CONFIG_KEY;
use operator::crd::{
    IpsecSpec, MagicTunnel, MagicTunnelStatus, ROTATE_PSK_ANNOTATION, SecretKeyRef,
};
use operator::fixtures::{gre_tunnel, ipsec_tunnel};
use operator::index::TunnelIndex;
use operator::metrics::Metrics;
use operator::reconcile::{Context, reconcile_tunnel};
use operator::settings::Settings;
use operator::triggers::Tracker;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle, SendResponse};

type ApiHandle = Handle<Request<Body>, Response<Body>>;

fn fixed_now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The mocked API server side of one reconcile.
struct ApiServer {
    handle: ApiHandle,
    /// The reconciled object, to answer status writes with a whole object.
    tunnel: Value,
}

/// One request the operator made.
struct Call {
    method: String,
    path: String,
    query: String,
    body: Value,
    respond: SendResponse<Response<Body>>,
    tunnel: Value,
}

impl Call {
    fn reply(self, status: u16, body: Value) {
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let response = Response::builder()
            .status(status)
            .body(Body::from(bytes))
            .expect("response");
        self.respond.send_response(response);
    }
    /// Echo the request body back, as the API server does on create, replace and apply.
    fn echo(self) {
        let body = if self.path.ends_with("/status") {
            let mut whole = self.tunnel.clone();
            whole["status"] = self.body["status"].clone();
            whole
        } else {
            self.body.clone()
        };
        self.reply(200, body);
    }
    fn not_found(self) {
        self.reply(
            404,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
        );
    }
}

impl ApiServer {
    /// The write-ahead of a newly assigned HTTP port: a merge patch of `status.httpPort` alone,
    /// before the config Secret and the pods that carry the port.
    async fn port_recorded(&mut self, tunnel: &str, port: u16) {
        let call = self
            .next("PATCH", &format!("{TUNNELS}/{tunnel}/status"))
            .await;
        assert_eq!(
            call.body,
            json!({"status": {"httpPort": port}}),
            "only the port"
        );
        call.echo();
    }

    async fn next(&mut self, method: &str, path: &str) -> Call {
        let (request, respond) =
            tokio::time::timeout(Duration::from_secs(5), self.handle.next_request())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {method} {path}"))
                .unwrap_or_else(|| panic!("the operator stopped before {method} {path}"));
        let method_seen = request.method().to_string();
        let path_seen = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or_default().to_string();
        let bytes = request.into_body().collect_bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("json body")
        };
        assert_eq!(
            (method_seen.as_str(), path_seen.as_str()),
            (method, path),
            "unexpected request"
        );
        Call {
            method: method_seen,
            path: path_seen,
            query,
            body,
            respond,
            tunnel: self.tunnel.clone(),
        }
    }

    /// Answer `count` Event writes; return their reasons.
    async fn events(&mut self, count: usize) -> Vec<(String, String)> {
        let mut seen = Vec::new();
        for _ in 0..count {
            let call = self
                .next("POST", "/apis/events.k8s.io/v1/namespaces/default/events")
                .await;
            seen.push((
                call.body["type"].as_str().unwrap_or_default().to_string(),
                call.body["reason"].as_str().unwrap_or_default().to_string(),
            ));
            call.echo();
        }
        seen
    }

    /// After the reconcile returned and its client is gone, nothing else may arrive.
    async fn assert_done(mut self) {
        let extra = tokio::time::timeout(Duration::from_secs(1), self.handle.next_request()).await;
        if let Ok(Some((req, _))) = extra {
            panic!("unexpected extra request {} {}", req.method(), req.uri());
        }
    }
}

/// Run one reconcile of `mt` (with `others` in the cache) against the mocked server.
fn start(
    mt: MagicTunnel,
    others: Vec<MagicTunnel>,
) -> (
    ApiServer,
    tokio::task::JoinHandle<Result<(), String>>,
    Arc<Metrics>,
) {
    start_at(mt, others, fixed_now)
}

fn later() -> Timestamp {
    Timestamp::from_second(1_800_086_400).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn start_at(
    mt: MagicTunnel,
    others: Vec<MagicTunnel>,
    now: fn() -> Timestamp,
) -> (
    ApiServer,
    tokio::task::JoinHandle<Result<(), String>>,
    Arc<Metrics>,
) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let tunnel = serde_json::to_value(&mt).expect("json");
    let client = Client::new(service, "default");
    let metrics = Arc::new(Metrics::default());
    let mut all = others;
    all.push(mt.clone());
    let reporter = Reporter {
        controller: "magictunnel-operator".into(),
        instance: None,
    };
    let mut ctx = Context::new(
        client.clone(),
        Settings::example(),
        Arc::new(Tracker::with(TunnelIndex::of(&all, &Settings::example()))),
        Recorder::new(client, reporter),
        metrics.clone(),
    );
    ctx.now = now;
    let task = tokio::spawn(async move {
        reconcile_tunnel(&mt, &ctx)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
        // ctx (and with it the client) is dropped here, closing the mock.
    });
    (ApiServer { handle, tunnel }, task, metrics)
}

async fn finish(server: ApiServer, task: tokio::task::JoinHandle<Result<(), String>>) {
    let result = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("reconcile ends")
        .expect("no panic");
    assert_eq!(result, Ok(()));
    server.assert_done().await;
}

/// The end of a reconcile that found the tunnel not deployable for `reason`: a Warning Event of
/// that reason, the reconcile done, the metric counted once.
async fn finish_not_deployed(
    mut api: ApiServer,
    task: tokio::task::JoinHandle<Result<(), String>>,
    metrics: &Metrics,
    reason: &str,
) {
    let events = api.events(5).await;
    assert!(
        events.contains(&("Warning".into(), reason.into())),
        "{events:?}"
    );
    finish(api, task).await;
    let line = format!("tunnels_not_deployed_total{{reason=\"{reason}\"}} 1");
    assert!(metrics.render().contains(&line), "{line}");
}

fn config_of(apply_body: &Value) -> TunnelConfig {
    let encoded = apply_body["data"][CONFIG_KEY]
        .as_str()
        .expect("tunnel.yaml in data");
    let bytes: ByteString = serde_json::from_value(json!(encoded)).expect("base64");
    TunnelConfig::from_yaml(std::str::from_utf8(&bytes.0).expect("utf8"))
        .expect("config the pod accepts")
}

/// Fails if the key, raw or base64 (standard or URL-safe), is anywhere in a request body or in
/// the TunnelConfig it carries.
fn assert_no_key(body: &Value, key: &[u8]) {
    use base64::Engine as _;
    let mut haystacks = vec![body.to_string().into_bytes()];
    if let Some(encoded) = body["data"][CONFIG_KEY].as_str() {
        let bytes: ByteString = serde_json::from_value(json!(encoded)).expect("base64");
        haystacks.push(bytes.0);
    }
    let needles = [
        key.to_vec(),
        base64::engine::general_purpose::STANDARD
            .encode(key)
            .into_bytes(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(key)
            .into_bytes(),
    ];
    for hay in &haystacks {
        for needle in &needles {
            assert!(
                !hay.windows(needle.len()).any(|w| w == needle.as_slice()),
                "the PSK appears in a request body"
            );
        }
    }
}

/// The TunnelConfig names the mounted file and holds no key.
fn assert_psk_file(config: &TunnelConfig) {
    let ipsec = config.ipsec.as_ref().expect("ipsec");
    assert!(ipsec.psk.is_none(), "no inline PSK");
    assert_eq!(
        ipsec.psk_file.as_deref(),
        Some(std::path::Path::new("/etc/magictunnel-psk/psk"))
    );
}

/// The pod's PSK volume: (secretName, key, path, defaultMode) and the mount (path, subPath).
fn psk_volume(pod_body: &Value) -> (Value, Value, Value, Value, Value, Value) {
    let volume = pod_body["spec"]["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "psk"))
        .expect("psk volume")
        .clone();
    let mount = pod_body["spec"]["containers"][0]["volumeMounts"]
        .as_array()
        .and_then(|v| v.iter().find(|m| m["name"] == "psk"))
        .expect("psk mount")
        .clone();
    let secret = &volume["secret"];
    assert_eq!(secret["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(mount["readOnly"], true);
    (
        secret["secretName"].clone(),
        secret["items"][0]["key"].clone(),
        secret["items"][0]["path"].clone(),
        secret["defaultMode"].clone(),
        mount["mountPath"].clone(),
        mount.get("subPath").cloned().unwrap_or(Value::Null),
    )
}

fn psk_of(secret_body: &Value) -> Vec<u8> {
    let b: ByteString = serde_json::from_value(secret_body["data"]["psk"].clone()).expect("psk");
    b.0
}

fn pod_list(pods: &[Value]) -> Value {
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": pods})
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

const TUNNELS: &str = "/apis/magictunnel.dev/v1alpha1/namespaces/default/magictunnels";
const SECRETS: &str = "/api/v1/namespaces/default/secrets";
const PODS: &str = "/api/v1/namespaces/default/pods";

#[tokio::test]
async fn create_gre_tunnel_applies_config_pod_and_status() {
    let mt = gre_tunnel("branch", 1);
    let (mut api, task, metrics) = start(mt.clone(), vec![]);

    api.port_recorded("branch", 9180).await;
    let apply = api.next("PATCH", &format!("{SECRETS}/branch-config")).await;
    assert!(
        apply.query.contains("fieldManager=magictunnel-operator"),
        "{}",
        apply.query
    );
    assert!(apply.query.contains("force=true"));
    let config = config_of(&apply.body);
    assert_eq!(
        config.customer_endpoint.map(|a| a.to_string()).as_deref(),
        Some("198.51.100.2")
    );
    assert_eq!(
        apply.body["metadata"]["ownerReferences"][0]["kind"],
        "MagicTunnel"
    );
    assert_eq!(
        apply.body["metadata"]["ownerReferences"][0]["uid"],
        json!(mt.metadata.uid)
    );
    apply.echo();

    let list = api.next("GET", PODS).await;
    assert!(
        list.query
            .contains("labelSelector=magictunnel.dev%2Ftunnel%3Dbranch"),
        "{}",
        list.query
    );
    list.reply(200, pod_list(&[]));

    let create = api.next("POST", PODS).await;
    assert_eq!(create.body["metadata"]["name"], "branch-0");
    assert_eq!(create.body["spec"]["hostNetwork"], true);
    assert_eq!(
        create.body["spec"]["volumes"][0]["secret"]["secretName"],
        "branch-config"
    );
    create.echo();

    let status = api.next("PATCH", &format!("{TUNNELS}/branch/status")).await;
    assert_eq!(status.method, "PATCH");
    assert!(status.path.ends_with("/status"));
    assert_eq!(condition(&status.body, "Configured")["status"], "True");
    assert_eq!(condition(&status.body, "Ready")["status"], "False");
    assert_eq!(
        condition(&status.body, "Ready")["message"],
        "0/1 endpoint pods ready"
    );
    assert_eq!(
        status.body["status"]["tunnelId"].as_str().map(str::len),
        Some(32)
    );
    assert_eq!(status.body["status"]["endpoints"][0]["pod"], "branch-0");
    assert_eq!(status.body["status"]["httpPort"], 9180);
    assert!(
        status.body["status"].get("ikeIds").is_none(),
        "GRE has no IKE IDs"
    );
    status.echo();

    let events = api.events(5).await;
    assert!(
        events.contains(&("Normal".into(), "Applied".into())),
        "{events:?}"
    );
    assert!(
        events.contains(&("Warning".into(), "EndpointsNotReady".into())),
        "{events:?}"
    );
    finish(api, task).await;
    assert!(
        metrics
            .render()
            .contains("magictunnel_operator_reconciles_total{result=\"applied\"} 1")
    );
}

/// Runs the first reconcile of an IPsec tunnel with a generated PSK; returns what was written.
async fn first_ipsec_reconcile(mt: &MagicTunnel) -> (Value, Value, Value, Value) {
    let (mut api, task, _) = start(mt.clone(), vec![]);
    api.next("GET", &format!("{SECRETS}/vpn-psk"))
        .await
        .not_found();

    let created = api.next("POST", SECRETS).await;
    assert_eq!(created.body["metadata"]["name"], "vpn-psk");
    assert_eq!(
        created.body["metadata"]["ownerReferences"][0]["controller"],
        true
    );
    assert_eq!(
        psk_of(&created.body).len(),
        43,
        "32 random bytes, base64url"
    );
    let psk_secret = created.body.clone();
    created.echo();
    assert_eq!(
        api.events(1).await,
        [("Normal".to_string(), "PskGenerated".to_string())]
    );

    api.port_recorded("vpn", 9180).await;
    let apply = api.next("PATCH", &format!("{SECRETS}/vpn-config")).await;
    let config = config_of(&apply.body);
    assert_psk_file(&config);
    assert_no_key(&apply.body, &psk_of(&psk_secret));
    let ipsec = config.ipsec.as_ref().expect("ipsec");
    assert_eq!(
        ipsec.accepted_ids.len(),
        4,
        "all four formats: the endpoint pair is unique"
    );
    let config_body = apply.body.clone();
    apply.echo();

    api.next("GET", PODS).await.reply(200, pod_list(&[]));
    let pod = api.next("POST", PODS).await;
    let pod_body = pod.body.clone();
    assert_eq!(
        psk_volume(&pod_body),
        (
            json!("vpn-psk"),
            json!("psk"),
            json!("psk"),
            json!(0o400),
            json!("/etc/magictunnel-psk"),
            Value::Null
        )
    );
    assert_no_key(&pod_body, &psk_of(&psk_secret));
    pod.echo();

    let status = api.next("PATCH", &format!("{TUNNELS}/vpn/status")).await;
    let s = &status.body["status"];
    assert_eq!(s["pskSecretName"], "vpn-psk");
    assert_eq!(s["pskGeneratedAt"], fixed_now().to_string());
    assert!(s["ikeIds"]["fqdn"].as_str().is_some_and(|f| f.ends_with(".0123456789abcdef0123456789abcdef.ipsec.magictunnel.dev")));
    assert_eq!(s["ikeIds"]["ipv4Addr"], "198.51.100.9");
    assert!(
        !status
            .body
            .to_string()
            .contains(&String::from_utf8_lossy(&psk_of(&psk_secret)).to_string()),
        "no key in status"
    );
    let status_body = status.body.clone();
    status.echo();
    api.events(5).await;
    finish(api, task).await;
    (psk_secret, config_body, pod_body, status_body)
}

fn with_status(mut mt: MagicTunnel, status_body: &Value) -> MagicTunnel {
    mt.status = Some(
        serde_json::from_value::<MagicTunnelStatus>(status_body["status"].clone()).expect("status"),
    );
    mt
}

fn stored(mut secret: Value) -> Value {
    secret["metadata"]["resourceVersion"] = json!("41");
    secret
}

#[tokio::test]
async fn generated_psk_is_created_once_and_reconciles_are_idempotent() {
    let mt = ipsec_tunnel("vpn", 1, Some("198.51.100.9"));
    let (psk_secret, config_body, pod_body, status_body) = first_ipsec_reconcile(&mt).await;

    // Second pass, with the world as the first one left it: reads, one idempotent apply, no
    // Secret or pod writes, no status write and no Event.
    let again = with_status(mt, &status_body);
    let (mut api, task, _) = start(again, vec![]);
    api.next("GET", &format!("{SECRETS}/vpn-psk"))
        .await
        .reply(200, stored(psk_secret));
    let apply = api.next("PATCH", &format!("{SECRETS}/vpn-config")).await;
    assert_eq!(apply.body, config_body, "same config as the first pass");
    apply.echo();
    api.next("GET", PODS)
        .await
        .reply(200, pod_list(&[pod_body]));
    finish(api, task).await;
}

#[tokio::test]
async fn rotation_annotation_regenerates_the_psk_once_without_rolling_pods() {
    let mt = ipsec_tunnel("vpn", 1, Some("198.51.100.9"));
    let (psk_secret, config_body, pod_body, status_body) = first_ipsec_reconcile(&mt).await;
    let mut rotated = with_status(mt, &status_body);
    rotated.metadata.annotations =
        Some([(ROTATE_PSK_ANNOTATION.to_string(), "2026-11-27".to_string())].into());

    let (mut api, task, _) = start_at(rotated.clone(), vec![], later);
    api.next("GET", &format!("{SECRETS}/vpn-psk"))
        .await
        .reply(200, stored(psk_secret.clone()));
    let replace = api.next("PUT", &format!("{SECRETS}/vpn-psk")).await;
    assert_eq!(
        replace.body["metadata"]["resourceVersion"], "41",
        "optimistic concurrency"
    );
    assert_eq!(
        replace.body["metadata"]["annotations"]["magictunnel.dev/psk-rotation"],
        "2026-11-27"
    );
    let new_psk = psk_of(&replace.body);
    assert_ne!(new_psk, psk_of(&psk_secret));
    let new_secret = replace.body.clone();
    replace.echo();
    assert_eq!(
        api.events(1).await,
        [("Normal".to_string(), "PskRotated".to_string())]
    );
    // The config Secret does not change at all: the pod gets the new key from its PSK volume.
    let apply = api.next("PATCH", &format!("{SECRETS}/vpn-config")).await;
    assert_eq!(
        apply.body, config_body,
        "a rotation leaves the config alone"
    );
    assert_no_key(&apply.body, &new_psk);
    apply.echo();
    // Same config hash: the running pod is kept (no DELETE, no POST).
    api.next("GET", PODS)
        .await
        .reply(200, pod_list(std::slice::from_ref(&pod_body)));
    let status = api.next("PATCH", &format!("{TUNNELS}/vpn/status")).await;
    assert_eq!(status.body["status"]["pskSecretName"], "vpn-psk");
    assert_eq!(status.body["status"]["pskGeneratedAt"], later().to_string());
    let rotated_status = status.body.clone();
    status.echo();
    finish(api, task).await;

    // The same annotation value again: nothing is regenerated, nothing is written.
    let (mut api, task, _) = start_at(with_status(rotated, &rotated_status), vec![], later);
    api.next("GET", &format!("{SECRETS}/vpn-psk"))
        .await
        .reply(200, stored(new_secret));
    api.next("PATCH", &format!("{SECRETS}/vpn-config"))
        .await
        .echo();
    api.next("GET", PODS)
        .await
        .reply(200, pod_list(&[pod_body]));
    finish(api, task).await;
}

fn adopting(name: &str, secret: &str) -> MagicTunnel {
    let mut mt = ipsec_tunnel(name, 1, None);
    mt.spec.ipsec = Some(IpsecSpec {
        psk_secret_ref: Some(SecretKeyRef {
            name: secret.into(),
            key: Some("key".into()),
        }),
        ..Default::default()
    });
    mt
}

fn user_secret(value: &[u8]) -> Value {
    serde_json::to_value(Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("corp-psk".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        data: Some([("key".to_string(), ByteString(value.to_vec()))].into()),
        ..Default::default()
    })
    .expect("json")
}

#[tokio::test]
async fn adopted_psk_is_used_and_never_written() {
    let mt = adopting("corp", "corp-psk");
    let (mut api, task, _) = start(mt, vec![]);
    api.next("GET", &format!("{SECRETS}/corp-psk"))
        .await
        .reply(200, user_secret(b"a-strong-shared-key-2026"));
    api.port_recorded("corp", 9180).await;
    let apply = api.next("PATCH", &format!("{SECRETS}/corp-config")).await;
    assert_psk_file(&config_of(&apply.body));
    assert_no_key(&apply.body, b"a-strong-shared-key-2026");
    apply.echo();
    api.next("GET", PODS).await.reply(200, pod_list(&[]));
    let pod = api.next("POST", PODS).await;
    // The user's Secret, under the key the tunnel names, as the file `psk`.
    assert_eq!(
        psk_volume(&pod.body),
        (
            json!("corp-psk"),
            json!("key"),
            json!("psk"),
            json!(0o400),
            json!("/etc/magictunnel-psk"),
            Value::Null
        )
    );
    assert_no_key(&pod.body, b"a-strong-shared-key-2026");
    pod.echo();
    let status = api.next("PATCH", &format!("{TUNNELS}/corp/status")).await;
    assert_eq!(status.body["status"]["pskSecretName"], "corp-psk");
    assert!(status.body["status"].get("pskGeneratedAt").is_none());
    status.echo();
    api.events(5).await;
    finish(api, task).await;
}

#[tokio::test]
async fn weak_adopted_psk_is_reported_not_deployed() {
    let (mut api, task, metrics) = start(adopting("corp", "corp-psk"), vec![]);
    api.next("GET", &format!("{SECRETS}/corp-psk"))
        .await
        .reply(200, user_secret(b"password"));
    api.next("GET", PODS).await.reply(200, pod_list(&[]));
    // Not deployable: what does the config Secret say about the last good config? (none)
    api.next("GET", &format!("{SECRETS}/corp-config"))
        .await
        .not_found();
    let status = api.next("PATCH", &format!("{TUNNELS}/corp/status")).await;
    let c = condition(&status.body, "Configured");
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("False"), Some("PskTooWeak"))
    );
    assert!(!status.body.to_string().contains("password"));
    status.echo();
    finish_not_deployed(api, task, &metrics, "PskTooWeak").await;
}

#[tokio::test]
async fn missing_secret_is_reported_then_picked_up_when_it_appears() {
    let mt = adopting("corp", "corp-psk");
    let (mut api, task, _) = start(mt.clone(), vec![]);
    api.next("GET", &format!("{SECRETS}/corp-psk"))
        .await
        .not_found();
    api.next("GET", PODS).await.reply(200, pod_list(&[]));
    api.next("GET", &format!("{SECRETS}/corp-config"))
        .await
        .not_found();
    let status = api.next("PATCH", &format!("{TUNNELS}/corp/status")).await;
    let c = condition(&status.body, "Configured");
    assert_eq!(c["reason"], "PskSecretNotFound");
    assert!(
        c["message"]
            .as_str()
            .is_some_and(|m| m.contains("default/corp-psk"))
    );
    let status_body = status.body.clone();
    status.echo();
    assert!(
        api.events(5)
            .await
            .contains(&("Warning".into(), "PskSecretNotFound".into()))
    );
    finish(api, task).await;

    // The Secret appears (the controller's Secret watch triggers this reconcile).
    let (mut api, task, _) = start(with_status(mt, &status_body), vec![]);
    api.next("GET", &format!("{SECRETS}/corp-psk"))
        .await
        .reply(200, user_secret(b"a-strong-shared-key-2026"));
    api.port_recorded("corp", 9180).await;
    api.next("PATCH", &format!("{SECRETS}/corp-config"))
        .await
        .echo();
    api.next("GET", PODS).await.reply(200, pod_list(&[]));
    api.next("POST", PODS).await.echo();
    let status = api.next("PATCH", &format!("{TUNNELS}/corp/status")).await;
    assert_eq!(condition(&status.body, "Configured")["status"], "True");
    status.echo();
    // Configured, Ready, Degraded and Established change; Healthy stays Unknown (no verdict).
    let events = api.events(4).await;
    assert!(
        events.contains(&("Normal".into(), "Applied".into())),
        "{events:?}"
    );
    finish(api, task).await;
}

fn running_pod(owner: &MagicTunnel, name: &str) -> Value {
    let mut pod = Pod {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            owner_references: owner.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        status: Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    pod.metadata.labels = Some([("magictunnel.dev/tunnel".to_string(), "new".to_string())].into());
    serde_json::to_value(pod).expect("json")
}

/// One reconcile of `young`, which conflicts with an older tunnel of `others` and has a running
/// pod `<name>-0`: the pod is deleted (without asking for the last good config: a conflict
/// takes the younger down whatever it ran), Configured=False with `reason` and a message that
/// holds every one of `says`, a Warning Event, no config applied, no pod created.
async fn conflict_removes_the_younger(
    young: MagicTunnel,
    others: Vec<MagicTunnel>,
    reason: &str,
    says: &[&str],
) {
    let name = young.metadata.name.clone().unwrap_or_default();
    let pod = format!("{name}-0");
    let (mut api, task, metrics) = start(young.clone(), others);
    api.next("GET", PODS)
        .await
        .reply(200, pod_list(&[running_pod(&young, &pod)]));
    let delete = api.next("DELETE", &format!("{PODS}/{pod}")).await;
    delete.reply(200, running_pod(&young, &pod));
    let status = api.next("PATCH", &format!("{TUNNELS}/{name}/status")).await;
    let c = condition(&status.body, "Configured");
    assert_eq!(c["status"], "False");
    assert_eq!(c["reason"], reason);
    let message = c["message"].as_str().unwrap_or_default();
    for s in says {
        assert!(message.contains(s), "{s:?} not in {message:?}");
    }
    assert_eq!(
        status.body["status"]["endpoints"],
        Value::Null,
        "no endpoints left"
    );
    status.echo();
    finish_not_deployed(api, task, &metrics, reason).await;
}

#[tokio::test]
async fn conflicting_tunnel_is_reported_and_its_pods_removed() {
    let old = gre_tunnel("old", 1);
    let mut new = gre_tunnel("new", 2);
    new.spec.customer_endpoint = old.spec.customer_endpoint.clone();
    conflict_removes_the_younger(new, vec![old], "EndpointConflict", &["default/old"]).await;
}

#[tokio::test]
async fn ambiguous_ipsec_peer_is_reported_and_its_pods_removed() {
    let old = ipsec_tunnel("old", 1, Some("198.51.100.9"));
    let new = ipsec_tunnel("new", 2, Some("198.51.100.9"));
    conflict_removes_the_younger(
        new,
        vec![old],
        "AmbiguousPeer",
        &[
            "IPsec tunnel default/old",
            "customer endpoint 198.51.100.9",
            "distinct customerEndpoint or localEndpoint",
        ],
    )
    .await;
    // Two without customerEndpoint on one local endpoint.
    let old = ipsec_tunnel("old", 1, None);
    let new = ipsec_tunnel("new", 2, None);
    conflict_removes_the_younger(
        new,
        vec![old],
        "AmbiguousPeer",
        &[
            "default/old",
            "without customerEndpoint",
            "set customerEndpoint",
        ],
    )
    .await;
}

#[tokio::test]
async fn route_conflict_is_reported_and_its_pods_removed() {
    let old = gre_tunnel("old", 1);
    let mut new = gre_tunnel("new", 2);
    new.spec.routes = old.spec.routes.clone();
    let prefix = old.spec.routes[0].prefix.clone();
    conflict_removes_the_younger(
        new,
        vec![old],
        "RouteConflict",
        &[
            &format!("tunnel default/old already routes {prefix} with metric 0"),
            "another metric",
        ],
    )
    .await;
}

#[tokio::test]
async fn the_younger_ipsec_peer_is_deployed_once_the_older_is_gone() {
    let old = ipsec_tunnel("old", 1, Some("198.51.100.9"));
    let young = ipsec_tunnel("vpn", 2, Some("198.51.100.9"));
    // Beside the older: no PSK, no config, no pod; only the status says why.
    let (mut api, task, metrics) = start(young.clone(), vec![old]);
    api.next("GET", PODS).await.reply(200, pod_list(&[]));
    let status = api.next("PATCH", &format!("{TUNNELS}/vpn/status")).await;
    assert_eq!(
        condition(&status.body, "Configured")["reason"],
        "AmbiguousPeer"
    );
    assert!(
        status.body["status"].get("ikeIds").is_none(),
        "{}",
        status.body
    );
    status.echo();
    finish_not_deployed(api, task, &metrics, "AmbiguousPeer").await;
    // The older one deleted (the index no longer holds it): the whole first deployment, with
    // ID_IPV4_ADDR among the accepted identities.
    let (_, _, pod, status) = first_ipsec_reconcile(&young).await;
    assert_eq!(pod["metadata"]["name"], "vpn-0");
    assert_eq!(condition(&status, "Configured")["status"], "True");
}

#[tokio::test]
async fn deleted_tunnel_makes_no_requests() {
    let mut mt = gre_tunnel("gone", 1);
    mt.metadata.deletion_timestamp = Some(Time(fixed_now()));
    let (api, task, _) = start(mt, vec![]);
    finish(api, task).await;
}

#[tokio::test]
async fn psk_secret_name_taken_by_someone_else_is_not_overwritten() {
    let mt = ipsec_tunnel("vpn", 1, None);
    let (mut api, task, _) = start(mt, vec![]);
    let mut foreign = user_secret(b"someone-elses-key-0123");
    foreign["metadata"]["name"] = json!("vpn-psk");
    api.next("GET", &format!("{SECRETS}/vpn-psk"))
        .await
        .reply(200, foreign);
    api.next("GET", PODS).await.reply(200, pod_list(&[]));
    api.next("GET", &format!("{SECRETS}/vpn-config"))
        .await
        .not_found();
    let status = api.next("PATCH", &format!("{TUNNELS}/vpn/status")).await;
    assert_eq!(
        condition(&status.body, "Configured")["reason"],
        "PskSecretNameTaken"
    );
    status.echo();
    api.events(5).await;
    finish(api, task).await;
}

#[tokio::test]
async fn api_errors_fail_the_reconcile_for_retry() {
    let mt = gre_tunnel("branch", 1);
    let (mut api, task, _) = start(mt, vec![]);
    api.port_recorded("branch", 9180).await;
    api.next("PATCH", &format!("{SECRETS}/branch-config")).await.reply(
        500,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500, "message": "etcd is down"}),
    );
    let result = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("ends")
        .expect("no panic");
    assert!(
        result
            .as_ref()
            .is_err_and(|e| e.contains("applying the config Secret")),
        "{result:?}"
    );
    api.assert_done().await;
}

/// The config Secret's metadata as the API server answers a metadata-only GET.
fn config_meta(name: &str, generation: i64, hash: &str) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": {
            "name": name,
            "namespace": "default",
            "resourceVersion": "12",
            "annotations": {
                "magictunnel.dev/config-hash": hash,
                "magictunnel.dev/generation": generation.to_string(),
            }
        }
    })
}

fn with_hash(mut pod: Value, hash: &str) -> Value {
    pod["metadata"]["annotations"] = json!({"magictunnel.dev/config-hash": hash});
    pod["metadata"]["uid"] = json!("pod-uid-0");
    pod["status"]["hostIP"] = json!("127.0.0.1");
    pod
}

/// A tunnel of `generation` whose adopted Secret is missing, with a running pod `corp-0` of the
/// config that generation 3 recorded: the exchanges up to the keep-or-delete decision.
async fn missing_secret_and_a_pod_of_generation_3(
    generation: i64,
) -> (
    ApiServer,
    tokio::task::JoinHandle<Result<(), String>>,
    Arc<Metrics>,
    MagicTunnel,
) {
    let mut mt = adopting("corp", "corp-psk");
    mt.metadata.generation = Some(generation);
    let (mut api, task, metrics) = start(mt.clone(), vec![]);
    api.next("GET", &format!("{SECRETS}/corp-psk"))
        .await
        .not_found();
    api.next("GET", PODS).await.reply(
        200,
        pod_list(&[with_hash(running_pod(&mt, "corp-0"), "abc")]),
    );
    api.next("GET", &format!("{SECRETS}/corp-config"))
        .await
        .reply(200, config_meta("corp-config", 3, "abc"));
    (api, task, metrics, mt)
}

/// An adopted Secret deleted and not yet re-created (a GitOps tool replacing it): the pod that
/// runs the last good config of this generation keeps running, nothing is applied, and status
/// says so.
#[tokio::test]
async fn transiently_missing_secret_keeps_the_running_pod() {
    let (mut api, task, metrics, _) = missing_secret_and_a_pod_of_generation_3(3).await;
    // No DELETE, no config apply: straight to status.
    let status = api.next("PATCH", &format!("{TUNNELS}/corp/status")).await;
    let c = condition(&status.body, "Configured");
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("False"), Some("PskSecretNotFound"))
    );
    assert!(
        c["message"]
            .as_str()
            .is_some_and(|m| m.contains("the last good configuration keeps serving on 1 pod(s)")),
        "{c}"
    );
    let ready = condition(&status.body, "Ready");
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("True"), Some("EndpointsReady"))
    );
    assert_eq!(status.body["status"]["endpoints"][0]["pod"], "corp-0");
    assert_eq!(status.body["status"]["pskSecretName"], "corp-psk");
    // Not read yet by the poller: Established is not known, not False.
    assert_eq!(condition(&status.body, "Established")["status"], "Unknown");
    status.echo();
    finish_not_deployed(api, task, &metrics, "PskSecretNotFound").await;
}

/// The spec changed (generation 4) into something not deployable: the pod built from
/// generation 3 goes.
#[tokio::test]
async fn spec_change_to_an_undeployable_spec_removes_the_pod() {
    let (mut api, task, _, mt) = missing_secret_and_a_pod_of_generation_3(4).await;
    api.next("DELETE", &format!("{PODS}/corp-0"))
        .await
        .reply(200, running_pod(&mt, "corp-0"));
    let status = api.next("PATCH", &format!("{TUNNELS}/corp/status")).await;
    assert_eq!(condition(&status.body, "Ready")["reason"], "NotConfigured");
    assert_eq!(
        condition(&status.body, "Configured")["message"],
        "Secret default/corp-psk named in ipsec.pskSecretRef does not exist; the tunnel is configured as soon as it appears"
    );
    status.echo();
    api.events(5).await;
    finish(api, task).await;
}

/// A deployable tunnel records the generation its config was built from on the config Secret.
#[tokio::test]
async fn the_config_secret_records_the_generation() {
    let mut mt = gre_tunnel("branch", 1);
    mt.metadata.generation = Some(9);
    let (mut api, task, _) = start(mt, vec![]);
    api.port_recorded("branch", 9180).await;
    let apply = api.next("PATCH", &format!("{SECRETS}/branch-config")).await;
    assert_eq!(
        apply.body["metadata"]["annotations"]["magictunnel.dev/generation"],
        "9"
    );
    apply.echo();
    api.next("GET", PODS).await.reply(200, pod_list(&[]));
    api.next("POST", PODS).await.echo();
    api.next("PATCH", &format!("{TUNNELS}/branch/status"))
        .await
        .echo();
    api.events(5).await;
    finish(api, task).await;
}

// Anycast IPsec (issue #11): replicas that share SAs through `<tunnel>-sa`.

const ACCOUNTS: &str = "/api/v1/namespaces/default/serviceaccounts";
const ROLES: &str = "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles";
const BINDINGS: &str = "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings";

fn anycast(replicas: Option<i32>) -> MagicTunnel {
    let mut mt = ipsec_tunnel("vpn", 1, Some("198.51.100.9"));
    mt.spec.replicas = replicas;
    mt
}

/// One reconcile like [`start`], with the owned-Secret cache holding `owned` (metadata).
fn start_with_owned(
    mt: MagicTunnel,
    owned: Vec<Secret>,
) -> (
    ApiServer,
    tokio::task::JoinHandle<Result<(), String>>,
    Arc<Metrics>,
) {
    use kube::core::PartialObjectMeta;
    use kube::runtime::{reflector, watcher};
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let tunnel = serde_json::to_value(&mt).expect("json");
    let client = Client::new(service, "default");
    let metrics = Arc::new(Metrics::default());
    let (store, mut writer) = reflector::store::<PartialObjectMeta<Secret>>();
    for s in owned {
        let meta: PartialObjectMeta<Secret> =
            serde_json::from_value(serde_json::to_value(&s).expect("json")).expect("meta");
        writer.apply_watcher_event(&watcher::Event::Apply(meta));
    }
    let reporter = Reporter {
        controller: "magictunnel-operator".into(),
        instance: None,
    };
    let mut ctx = Context::new(
        client.clone(),
        Settings::example(),
        Arc::new(Tracker::with(TunnelIndex::of([&mt], &Settings::example()))),
        Recorder::new(client, reporter),
        metrics.clone(),
    )
    .with_owned_secrets(store);
    ctx.now = fixed_now;
    let task = tokio::spawn(async move {
        reconcile_tunnel(&mt, &ctx)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    (ApiServer { handle, tunnel }, task, metrics)
}

/// The SA-state Secret as the API server holds it after the pods wrote `data`.
fn sa_secret(mt: &MagicTunnel, data: &[(&str, &str)]) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {
            "name": "vpn-sa", "namespace": "default", "resourceVersion": "77",
            "ownerReferences": [mt.controller_owner_ref(&()).expect("owner")]
        },
        "type": "magictunnel.dev/sa-state",
        "data": data.iter().map(|(k, v)| {
            (k.to_string(), serde_json::to_value(ByteString(v.as_bytes().to_vec())).expect("b64"))
        }).collect::<serde_json::Map<String, Value>>()
    })
}

#[tokio::test]
async fn anycast_ipsec_creates_the_sa_objects_before_its_pods() {
    let mt = anycast(Some(2));
    let (mut api, task, _) = start(mt.clone(), vec![]);
    api.next("GET", &format!("{SECRETS}/vpn-psk"))
        .await
        .not_found();
    api.next("POST", SECRETS).await.echo();
    api.events(1).await;
    // The SA-state Secret: looked for, then created empty.
    api.next("GET", &format!("{SECRETS}/vpn-sa"))
        .await
        .not_found();
    let created = api.next("POST", SECRETS).await;
    assert_eq!(created.body["metadata"]["name"], "vpn-sa");
    assert_eq!(created.body["type"], "magictunnel.dev/sa-state");
    assert!(created.body.get("data").is_none(), "{}", created.body);
    assert_eq!(
        created.body["metadata"]["ownerReferences"][0]["uid"],
        json!(mt.metadata.uid)
    );
    created.echo();
    api.port_recorded("vpn", 9180).await;
    let apply = api.next("PATCH", &format!("{SECRETS}/vpn-config")).await;
    let config = config_of(&apply.body);
    assert_eq!(config.replicas, 2);
    let sync = config.ipsec.and_then(|i| i.sync).expect("sync");
    assert_eq!(
        (sync.namespace.as_str(), sync.secret.as_str()),
        ("default", "vpn-sa")
    );
    apply.echo();
    // Account, Role, binding: server-side applied, before any pod names the account.
    let account = api
        .next("PATCH", &format!("{ACCOUNTS}/vpn-tunnel-pod"))
        .await;
    assert!(account.query.contains("force=true"), "{}", account.query);
    account.echo();
    let role = api.next("PATCH", &format!("{ROLES}/vpn-sa-sync")).await;
    assert_eq!(
        role.body["rules"],
        json!([{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["vpn-sa"],
                "verbs": ["get", "watch", "update"]}])
    );
    role.echo();
    let binding = api.next("PATCH", &format!("{BINDINGS}/vpn-sa-sync")).await;
    assert_eq!(binding.body["roleRef"]["name"], "vpn-sa-sync");
    assert_eq!(
        binding.body["subjects"],
        json!([{"kind": "ServiceAccount", "name": "vpn-tunnel-pod", "namespace": "default"}])
    );
    binding.echo();
    api.next("GET", PODS).await.reply(200, pod_list(&[]));
    for i in 0..2 {
        let pod = api.next("POST", PODS).await;
        assert_eq!(pod.body["metadata"]["name"], format!("vpn-{i}"));
        assert_eq!(pod.body["spec"]["serviceAccountName"], "vpn-tunnel-pod");
        assert_eq!(pod.body["spec"]["automountServiceAccountToken"], true);
        pod.echo();
    }
    let status = api.next("PATCH", &format!("{TUNNELS}/vpn/status")).await;
    let c = condition(&status.body, "Synchronized");
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("Unknown"), Some("NoState"))
    );
    assert_eq!(status.body["status"]["endpoints"][0]["ikeOwner"], false);
    status.echo();
    let events = api.events(6).await;
    assert!(
        events.contains(&("Normal".into(), "NoState".into())),
        "{events:?}"
    );
    finish(api, task).await;
}

#[tokio::test]
async fn published_sa_state_drives_status_and_is_never_written() {
    let mt = anycast(Some(2));
    let (psk, pods) = {
        // The PSK Secret as the first pass made it.
        let (mut api, task, _) = start(mt.clone(), vec![]);
        api.next("GET", &format!("{SECRETS}/vpn-psk"))
            .await
            .not_found();
        let created = api.next("POST", SECRETS).await;
        let psk = created.body.clone();
        created.echo();
        api.events(1).await;
        api.next("GET", &format!("{SECRETS}/vpn-sa"))
            .await
            .not_found();
        api.next("POST", SECRETS).await.echo();
        api.port_recorded("vpn", 9180).await;
        for path in [
            format!("{SECRETS}/vpn-config"),
            format!("{ACCOUNTS}/vpn-tunnel-pod"),
            format!("{ROLES}/vpn-sa-sync"),
            format!("{BINDINGS}/vpn-sa-sync"),
        ] {
            api.next("PATCH", &path).await.echo();
        }
        api.next("GET", PODS).await.reply(200, pod_list(&[]));
        let mut pods = Vec::new();
        for _ in 0..2 {
            let pod = api.next("POST", PODS).await;
            pods.push(pod.body.clone());
            pod.echo();
        }
        api.next("PATCH", &format!("{TUNNELS}/vpn/status"))
            .await
            .echo();
        api.events(6).await;
        finish(api, task).await;
        (psk, pods)
    };
    // Both pods run and are ready; the replicas published generation 7, vpn-1 lags.
    let ready = |mut p: Value| {
        p["status"] = json!({"conditions": [{"type": "Ready", "status": "True"}]});
        p
    };
    let summary =
        r#"{"generation":7,"owner":"vpn-1","childSas":[{"spiIn":"c1a2b3c4","spiOut":"d5e6f7a8"}]}"#;
    let acks = r#"{"vpn-0":{"generation":6},"vpn-1":{"generation":7}}"#;
    let (mut api, task, _) = start(mt.clone(), vec![]);
    api.next("GET", &format!("{SECRETS}/vpn-psk"))
        .await
        .reply(200, stored(psk));
    api.next("GET", &format!("{SECRETS}/vpn-sa")).await.reply(
        200,
        sa_secret(
            &mt,
            &[
                ("state.json", "{\"keys\":\"secret\"}"),
                ("summary.json", summary),
                ("acks.json", acks),
            ],
        ),
    );
    // No write to vpn-sa: the next requests are the port's record and the applies.
    api.port_recorded("vpn", 9180).await;
    for path in [
        format!("{SECRETS}/vpn-config"),
        format!("{ACCOUNTS}/vpn-tunnel-pod"),
        format!("{ROLES}/vpn-sa-sync"),
        format!("{BINDINGS}/vpn-sa-sync"),
    ] {
        api.next("PATCH", &path).await.echo();
    }
    let list = api.next("GET", PODS).await;
    list.reply(
        200,
        pod_list(&pods.into_iter().map(ready).collect::<Vec<_>>()),
    );
    let status = api.next("PATCH", &format!("{TUNNELS}/vpn/status")).await;
    let s = &status.body["status"];
    let c = condition(&status.body, "Synchronized");
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("False"), Some("Lagging"))
    );
    assert!(
        c["message"]
            .as_str()
            .is_some_and(|m| m.contains("vpn-0 at generation 6")),
        "{c}"
    );
    let eps = s["endpoints"].as_array().expect("endpoints");
    let vpn1 = eps.iter().find(|e| e["pod"] == "vpn-1").expect("vpn-1");
    assert_eq!(vpn1["ikeOwner"], true);
    assert_eq!(vpn1["installedGeneration"], 7);
    assert_eq!(vpn1["childSpis"], json!(["c1a2b3c4/d5e6f7a8"]));
    assert!(
        !status.body.to_string().contains("keys"),
        "state.json stays out of status"
    );
    status.echo();
    api.events(6).await;
    finish(api, task).await;
}

#[tokio::test]
async fn a_foreign_secret_named_like_the_sa_secret_holds_the_tunnel() {
    let mut mt = anycast(Some(2));
    mt.spec.ipsec = adopting("vpn", "corp-psk").spec.ipsec;
    let (mut api, task, metrics) = start(mt.clone(), vec![]);
    api.next("GET", &format!("{SECRETS}/corp-psk"))
        .await
        .reply(200, user_secret(b"a-strong-shared-key-2026"));
    let mut foreign = sa_secret(&mt, &[("password", "hunter2")]);
    foreign["type"] = json!("Opaque");
    foreign["metadata"]["ownerReferences"] = json!([]);
    api.next("GET", &format!("{SECRETS}/vpn-sa"))
        .await
        .reply(200, foreign);
    // Neither the Role nor the pods: the tunnel is held.
    api.next("GET", PODS).await.reply(200, pod_list(&[]));
    api.next("GET", &format!("{SECRETS}/vpn-config"))
        .await
        .not_found();
    let status = api.next("PATCH", &format!("{TUNNELS}/vpn/status")).await;
    let c = condition(&status.body, "Configured");
    assert_eq!(c["reason"], "SaSecretNameTaken");
    assert!(
        status.body["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().all(|c| c["type"] != "Synchronized"))
    );
    status.echo();
    finish_not_deployed(api, task, &metrics, "SaSecretNameTaken").await;
}

#[tokio::test]
async fn one_replica_again_prunes_the_sa_objects() {
    let mt = anycast(Some(1));
    let mut mt_adopting = mt.clone();
    mt_adopting.spec.ipsec = adopting("vpn", "corp-psk").spec.ipsec;
    let owned: Secret = serde_json::from_value(sa_secret(&mt, &[])).expect("secret");
    let (mut api, task, _) = start_with_owned(mt_adopting, vec![owned]);
    api.next("GET", &format!("{SECRETS}/corp-psk"))
        .await
        .reply(200, user_secret(b"a-strong-shared-key-2026"));
    api.port_recorded("vpn", 9180).await;
    let apply = api.next("PATCH", &format!("{SECRETS}/vpn-config")).await;
    let config = config_of(&apply.body);
    assert_eq!(config.replicas, 1);
    assert!(config.ipsec.and_then(|i| i.sync).is_none());
    apply.echo();
    api.next("GET", PODS).await.reply(200, pod_list(&[]));
    let pod = api.next("POST", PODS).await;
    assert_eq!(pod.body["spec"]["automountServiceAccountToken"], false);
    assert!(pod.body["spec"].get("serviceAccountName").is_none());
    pod.echo();
    // The access first, the Secret last; what is gone already is no error.
    let gone = json!({"kind": "Status", "apiVersion": "v1", "status": "Success"});
    api.next("DELETE", &format!("{BINDINGS}/vpn-sa-sync"))
        .await
        .reply(200, gone.clone());
    api.next("DELETE", &format!("{ROLES}/vpn-sa-sync"))
        .await
        .not_found();
    api.next("DELETE", &format!("{ACCOUNTS}/vpn-tunnel-pod"))
        .await
        .reply(200, gone.clone());
    api.next("DELETE", &format!("{SECRETS}/vpn-sa"))
        .await
        .reply(200, gone);
    let status = api.next("PATCH", &format!("{TUNNELS}/vpn/status")).await;
    assert!(
        status.body["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().all(|c| c["type"] != "Synchronized"))
    );
    assert!(
        status.body["status"]["endpoints"][0]
            .get("ikeOwner")
            .is_none()
    );
    status.echo();
    api.events(5).await;
    finish(api, task).await;
}
