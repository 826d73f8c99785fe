//! End-to-end traffic on the real node: MagicTunnels applied through the API, their pods running
//! on the node (hostNetwork), and a branch router in a network namespace joined to the host by a
//! veth ([`magictunnel_e2e::peer::Branch`]) carrying pings and a TCP transfer through them.
//!
//! - GRE: the branch runs a standalone `tunnel-pod` (YAML config). Pod security, Ready and
//!   Established, traffic both ways, pod deleted → recreated → traffic back (timed), tunnel
//!   deleted → owned objects garbage-collected.
//! - IPsec: the branch runs strongSwan's charon (kernel-libipsec) with the PSK read from the
//!   generated Secret and the FQDN of `status.ikeIds`, over IKEv2. The same checks plus a PSK
//!   rotation through the annotation: new Secret, same pod, old PSK refused, new one accepted.
//!
//! Addresses (see SUITE-CONTEXT.md): local endpoints 203.0.113.1/.2 on the host ends of the
//! veths, customer endpoints 198.51.100.1/.2 in the namespaces, tunnel /31s 10.231.0.0/31 (GRE)
//! and 10.231.0.2/31 (IPsec) with the host TUN holding the even address, branch networks
//! 10.232.0.0/24 (GRE) and 10.233.0.0/24 (IPsec) whose .1 is on the namespace's loopback.
//!
//! Needs root, the cluster in KUBECONFIG and `cargo build -p magictunnel-tunnel-pod`:
//! `cargo test -p magictunnel-e2e --test traffic -- --ignored --test-threads 1 --nocapture`.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use magictunnel_e2e::peer::strongswan::{Charon, CharonOptions, SwanConn};
use magictunnel_e2e::peer::{Branch, BranchSpec, Side, output, tunnel_pod_binary, wait_for};
use magictunnel_e2e::{apply_yaml, eventually};
use operator::crd::{MagicTunnel, ROTATE_PSK_ANNOTATION};
use serde_json::json;
use tunnel_pod::config::TunnelConfig;

/// Pods started, conditions set.
const WAIT: Duration = Duration::from_secs(60);
/// Goal for pod deleted → first ping through the new pod is 10 s; this bound lets the test fail.
const RECREATE_BOUND: Duration = Duration::from_secs(30);
/// The kubelet refreshes a mounted Secret within its sync period (10 s here) plus its cache TTL.
const PSK_REFRESH_BOUND: Duration = Duration::from_secs(90);
const SINK_PORT: &str = "5299";
const TRANSFER_BYTES: u64 = 4 * 1024 * 1024;
const CONN: &str = "branch";

/// The cluster, or `None` (skipped, with the reason printed) when KUBECONFIG is unset; with
/// MT_E2E_REQUIRED=1 a missing cluster fails the test instead: the suite's one rule,
/// [`magictunnel_e2e::client_or_skip`].
async fn cluster(test: &str) -> Option<Client> {
    magictunnel_e2e::client_or_skip(test).await
}

/// A namespace `e2e-traffic-<test>-<suffix>`, deleted with everything in it when dropped.
struct TestNamespace {
    client: Client,
    name: String,
}

impl TestNamespace {
    async fn new(client: &Client, test: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!("e2e-traffic-{test}-{nanos:x}");
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        TestNamespace {
            client: client.clone(),
            name,
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    async fn tunnel(&self, name: &str) -> Option<MagicTunnel> {
        self.api::<MagicTunnel>().get_opt(name).await.ok().flatten()
    }

    /// `(status, reason)` of a condition of a tunnel.
    async fn condition(&self, tunnel: &str, type_: &str) -> Option<(String, String)> {
        let status = self.tunnel(tunnel).await?.status?;
        let c = status.conditions.iter().find(|c| c.type_ == type_)?;
        Some((c.status.clone(), c.reason.clone()))
    }

    /// Waits for `type_` = True; fails with every condition of the tunnel.
    async fn wait_true(&self, tunnel: &str, type_: &str, timeout: Duration) -> String {
        let got = eventually(&format!("{tunnel} {type_}=True"), timeout, || async {
            match self.condition(tunnel, type_).await {
                Some((s, reason)) if s == "True" => Some(reason),
                _ => None,
            }
        })
        .await;
        match got {
            Ok(reason) => reason,
            Err(e) => panic!("{e}; conditions: {}", self.conditions(tunnel).await),
        }
    }

    async fn conditions(&self, tunnel: &str) -> String {
        let Some(status) = self.tunnel(tunnel).await.and_then(|t| t.status) else {
            return "<no status>".into();
        };
        status
            .conditions
            .iter()
            .map(|c| format!("{}={} ({}: {})", c.type_, c.status, c.reason, c.message))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn pods_of(&self, tunnel: &str) -> Vec<Pod> {
        let lp = ListParams::default().labels(&format!("magictunnel.dev/tunnel={tunnel}"));
        self.api::<Pod>()
            .list(&lp)
            .await
            .map(|l| l.items)
            .unwrap_or_default()
    }

    /// The tunnel's single pod once it is Running (and Ready if `ready`).
    async fn wait_pod(&self, tunnel: &str, ready: bool, not_uid: Option<&str>) -> Pod {
        let what = format!(
            "a Running{} pod of {tunnel}",
            if ready { ", Ready" } else { "" }
        );
        let found = eventually(&what, WAIT, || async {
            self.pods_of(tunnel).await.into_iter().find(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && not_uid.is_none_or(|u| p.metadata.uid.as_deref() != Some(u))
                    && phase(p) == "Running"
                    && (!ready || pod_ready(p))
            })
        })
        .await;
        match found {
            Ok(p) => p,
            Err(e) => panic!("{e}; {}", self.diagnose(tunnel).await),
        }
    }

    /// The tunnel's conditions, and per pod its container state and the last lines it logged.
    async fn diagnose(&self, tunnel: &str) -> String {
        let mut s = format!("conditions: {}", self.conditions(tunnel).await);
        for p in self.pods_of(tunnel).await {
            let name = p.name_any();
            let cs = p.status.as_ref().and_then(|s| s.container_statuses.clone());
            let cs = cs.as_ref().and_then(|c| c.first());
            let state = cs.map(|c| {
                format!(
                    "restarts {}, state {:?}, last {:?}",
                    c.restart_count,
                    c.state,
                    c.last_state.as_ref().and_then(|l| l.terminated.as_ref())
                )
            });
            let params = kube::api::LogParams {
                tail_lines: Some(5),
                ..Default::default()
            };
            let log = self
                .api::<Pod>()
                .logs(&name, &params)
                .await
                .unwrap_or_default();
            s.push_str(&format!(
                "\npod {name} ({}): {}\n{log}",
                phase(&p),
                state.unwrap_or_default()
            ));
        }
        s
    }

    async fn secret(&self, name: &str) -> Option<Secret> {
        self.api::<Secret>().get_opt(name).await.ok().flatten()
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop cannot await: delete from a thread with a runtime of its own.
        let (client, name) = (self.client.clone(), self.name.clone());
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                Api::<Namespace>::all(client)
                    .delete(&name, &DeleteParams::background())
                    .await
                    .map(|_| ())
            })
        })
        .join();
        if !matches!(done, Ok(Ok(()))) {
            eprintln!("could not delete namespace {}: {done:?}", self.name);
        }
    }
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// (container ID, restart count) of the pod's only container.
fn container(p: &Pod) -> (String, i32) {
    let cs = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .unwrap_or_else(|| panic!("pod {} has no container status", p.name_any()));
    (
        cs.container_id.clone().unwrap_or_default(),
        cs.restart_count,
    )
}

/// Item 1: hostNetwork, NET_ADMIN + NET_RAW only (IPsec: also NET_BIND_SERVICE, for UDP 500 on
/// the host network) with ALL dropped, read-only root — in the spec — and Running and Ready with
/// its container ready and never restarted — in the status.
fn assert_pod_secure_and_running(p: &Pod, ipsec: bool) {
    let name = p.name_any();
    let spec = p.spec.as_ref().expect("pod spec");
    assert_eq!(spec.host_network, Some(true), "{name}: hostNetwork");
    assert_eq!(spec.containers.len(), 1, "{name}: one container");
    let sc = spec.containers[0]
        .security_context
        .as_ref()
        .unwrap_or_else(|| panic!("{name}: no securityContext"));
    let caps = sc.capabilities.as_ref().expect("capabilities");
    let add: BTreeSet<&str> = caps.add.iter().flatten().map(String::as_str).collect();
    assert_eq!(
        add,
        if ipsec {
            BTreeSet::from(["NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE"])
        } else {
            BTreeSet::from(["NET_ADMIN", "NET_RAW"])
        },
        "{name}: added capabilities"
    );
    assert_eq!(
        caps.drop.as_deref(),
        Some(&["ALL".to_string()][..]),
        "{name}: dropped"
    );
    assert_eq!(
        sc.read_only_root_filesystem,
        Some(true),
        "{name}: read-only root"
    );
    assert_ne!(sc.privileged, Some(true), "{name}: privileged");
    assert_eq!(phase(p), "Running", "{name}: phase");
    assert!(pod_ready(p), "{name}: Ready condition");
    let status = p.status.as_ref().expect("pod status");
    let cs = &status
        .container_statuses
        .as_ref()
        .expect("container statuses")[0];
    assert!(cs.ready, "{name}: container ready");
    assert!(
        cs.state.as_ref().and_then(|s| s.running.as_ref()).is_some(),
        "{name}: container running: {:?}",
        cs.state
    );
    assert_eq!(cs.restart_count, 0, "{name}: restarts");
    assert!(spec.node_name.is_some(), "{name}: scheduled on a node");
    // On the host network the pod's IP is the node's.
    assert_eq!(
        status.pod_ip, status.host_ip,
        "{name}: pod IP is the node's"
    );
}

/// `count` pings from the host to `to` (routed by the MagicTunnel's route into its TUN).
fn host_ping(to: &str, count: u32) -> bool {
    let count = count.to_string();
    output(&mut magictunnel_e2e::peer::cmd(
        "ping",
        &["-n", "-q", "-c", &count, "-i", "0.2", "-W", "2", to],
    ))
    .status
    .success()
}

/// The non-blackhole routes of `prefix` on the host (the ones a tunnel pod installed).
fn host_routes(prefix: &str) -> Vec<String> {
    let out = output(&mut magictunnel_e2e::peer::cmd(
        "ip",
        &["-o", "route", "show", "exact", prefix],
    ));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("blackhole"))
        .map(str::to_string)
        .collect()
}

/// The branch's end of [`tcp_transfer`]: accepts one connection on (argv 1, argv 2), reads to
/// EOF and answers `<bytes> <sum of the bytes mod 2^32>`.
const SINK: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
print("listening", flush=True)
s.settimeout(30)
c, _ = s.accept()
c.settimeout(30)
n = h = 0
while True:
    b = c.recv(1 << 16)
    if not b:
        break
    n += len(b)
    h = (h + sum(b)) & 0xFFFFFFFF
c.sendall(f"{n} {h}\n".encode())
c.close()
"#;

/// A TCP transfer of [`TRANSFER_BYTES`] over a connection the test opens from the host to
/// `server` (an inner address of the branch, reached through the tunnel) to a sink in the
/// namespace. Returns the bytes the sink received, after checking their sum.
fn tcp_transfer(branch: &Branch, server: &str) -> u64 {
    use std::io::{BufRead as _, Read as _, Write as _};
    let mut sink = branch.in_ns("/usr/bin/python3", &["-c", SINK, server, SINK_PORT]);
    let mut sink = sink
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("TCP sink");
    let mut line = String::new();
    let mut out = std::io::BufReader::new(sink.stdout.take().expect("stdout"));
    out.read_line(&mut line).expect("sink output");
    assert_eq!(line.trim(), "listening", "the sink did not start");
    // xorshift: not all zeros, not compressible.
    let mut x: u32 = 0x9e37_79b9;
    let data: Vec<u8> = (0..TRANSFER_BYTES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let sum = data.iter().fold(0u32, |a, &b| a.wrapping_add(u32::from(b)));
    let addr = std::net::SocketAddr::new(
        server.parse().expect("address"),
        SINK_PORT.parse().expect("port"),
    );
    let start = Instant::now();
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {addr} through the tunnel: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    stream.write_all(&data).expect("send through the tunnel");
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .expect("the sink's answer");
    let secs = start.elapsed().as_secs_f64();
    magictunnel_e2e::peer::terminate(&mut sink, Duration::from_secs(2));
    let (n, h) = answer
        .trim()
        .split_once(' ')
        .unwrap_or_else(|| panic!("sink answered {answer:?}"));
    let (n, h): (u64, u32) = (n.parse().expect("count"), h.parse().expect("sum"));
    eprintln!(
        "TCP host → {server}: {n} of {TRANSFER_BYTES} bytes received in {secs:.2} s ({:.0} Mbit/s)",
        n as f64 * 8.0 / secs.max(1e-9) / 1e6
    );
    assert_eq!(h, sum, "the bytes that arrived differ from the bytes sent");
    n
}

/// Deletes the tunnel and waits until its pods and owned Secrets are gone (garbage collector).
async fn delete_and_check_gc(ns: &TestNamespace, tunnel: &str, secrets: &[String]) {
    let start = Instant::now();
    ns.api::<MagicTunnel>()
        .delete(tunnel, &DeleteParams::default())
        .await
        .expect("delete tunnel");
    let leftovers = eventually(
        &format!("{tunnel}'s pods and Secrets {secrets:?} garbage-collected"),
        WAIT,
        || async {
            if !ns.pods_of(tunnel).await.is_empty() {
                return None;
            }
            for s in secrets {
                if ns.secret(s).await.is_some() {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    if let Err(e) = leftovers {
        let pods: Vec<String> = ns
            .pods_of(tunnel)
            .await
            .iter()
            .map(|p| p.name_any())
            .collect();
        panic!("{e}: pods left {pods:?}");
    }
    eprintln!(
        "{tunnel} deleted → pods and Secrets gone in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

/// Deletes the pod and waits for the first ping through the tunnel answered by its replacement:
/// `ping_once` answers only after the old dataplane stopped (a ping failed or the host route
/// went away) count. `kick` runs while the tunnel is down with the new pod (if any), e.g. to
/// make strongSwan initiate again. Returns the new pod and the time from the delete.
async fn recreate_and_time(
    ns: &TestNamespace,
    tunnel: &str,
    route: &str,
    ping_once: impl Fn() -> bool,
    mut kick: impl FnMut(Option<&Pod>),
) -> (Pod, Duration) {
    let old = ns.wait_pod(tunnel, true, None).await;
    let old_uid = old.metadata.uid.clone().expect("uid");
    let start = Instant::now();
    ns.api::<Pod>()
        .delete(&old.name_any(), &DeleteParams::default())
        .await
        .expect("delete pod");
    let mut was_down = false;
    loop {
        let elapsed = start.elapsed();
        assert!(
            elapsed < RECREATE_BOUND + Duration::from_secs(30),
            "no ping through {tunnel} within {elapsed:?} of deleting its pod; conditions: {}",
            ns.conditions(tunnel).await
        );
        if host_routes(route).is_empty() {
            was_down = true;
        }
        if ping_once() {
            if was_down {
                break;
            }
        } else {
            was_down = true;
            let new = ns
                .pods_of(tunnel)
                .await
                .into_iter()
                .find(|p| p.metadata.uid.as_deref() != Some(&old_uid) && phase(p) == "Running");
            kick(new.as_ref());
        }
    }
    let took = start.elapsed();
    let new = ns.wait_pod(tunnel, false, Some(&old_uid)).await;
    assert_ne!(
        new.metadata.uid.as_deref(),
        Some(old_uid.as_str()),
        "a new pod"
    );
    (new, took)
}

/// The pod's own `/status` on its node (hostNetwork, port `status.httpPort`), as JSON.
async fn pod_status(ns: &TestNamespace, tunnel: &str, pod: &Pod) -> serde_json::Value {
    let port = ns
        .tunnel(tunnel)
        .await
        .and_then(|t| t.status)
        .and_then(|s| s.http_port)
        .expect("status.httpPort");
    let host = pod
        .status
        .as_ref()
        .and_then(|s| s.host_ip.clone())
        .expect("hostIP");
    let url = format!("http://{host}:{port}/status");
    let out = output(&mut magictunnel_e2e::peer::cmd(
        "curl",
        &["-sf", "--max-time", "3", &url],
    ));
    assert!(out.status.success(), "GET {url} failed");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{url} is not JSON: {e}"))
}

/// The addresses of the n-th tunnel of this file: local endpoint 203.0.113.n on the host end of
/// the veth, customer endpoint 198.51.100.n in the namespace, the /31 10.231.0.2(n-1) (host TUN
/// even, branch odd) and the branch network 10.(231+n).0.0/24 with .1 on the namespace loopback.
struct Site {
    n: u8,
    /// The MagicTunnel's name (and the namespace's infix).
    name: &'static str,
}

impl Site {
    fn local(&self) -> Ipv4Addr {
        Ipv4Addr::new(203, 0, 113, self.n)
    }
    fn customer(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 51, 100, self.n)
    }
    /// The pod's interface address (host TUN), without prefix.
    fn pod_addr(&self) -> String {
        format!("10.231.0.{}", 2 * (self.n - 1))
    }
    fn branch_addr(&self) -> String {
        format!("10.231.0.{}", 2 * (self.n - 1) + 1)
    }
    /// The branch network: the MagicTunnel's route.
    fn network(&self) -> String {
        format!("10.{}.0.0/24", 231 + u16::from(self.n))
    }
    /// The branch's address in it.
    fn inner(&self) -> String {
        format!("10.{}.0.1", 231 + u16::from(self.n))
    }

    /// The test namespace, the branch, and the MagicTunnel applied with `spec_tail` (indented
    /// spec fields) after the addresses.
    async fn start(
        &self,
        client: &Client,
        type_: &str,
        spec_tail: &str,
    ) -> (TestNamespace, Branch) {
        let ns = TestNamespace::new(client, self.name).await;
        let branch = Branch::new(BranchSpec {
            tag: self.name[..1].to_string(),
            local: self.local(),
            customer: self.customer(),
            inner: vec![format!("{}/32", self.inner())],
            blackholes: vec![self.network()],
        });
        let yaml = format!(
            "apiVersion: magictunnel.dev/v1alpha1\nkind: MagicTunnel\nmetadata: {{name: {}}}\n\
             spec:\n  type: {type_}\n  localEndpoint: {}\n  customerEndpoint: {}\n\
             \x20 interfaceAddress: {}/31\n  routes: [{{prefix: {}}}]\n{spec_tail}",
            self.name,
            self.local(),
            self.customer(),
            self.pod_addr(),
            self.network()
        );
        apply_yaml(client, &yaml, &ns.name)
            .await
            .unwrap_or_else(|e| panic!("apply the {type_} MagicTunnel: {e:#}"));
        (ns, branch)
    }

    /// Pings both ways through the tunnel and a TCP transfer from the host to the branch.
    fn check_traffic(&self, branch: &Branch, what: &str) {
        let (inner, pod) = (self.inner(), self.pod_addr());
        assert!(host_ping(&inner, 5), "{what}: host → branch {inner}");
        assert!(
            branch.ping_once(&inner, &pod, Duration::from_secs(2)),
            "{what}: branch {inner} → the pod's interface address {pod}"
        );
        assert_eq!(
            tcp_transfer(branch, &inner),
            TRANSFER_BYTES,
            "{what}: every byte arrived"
        );
    }

    /// Item 4: deletes the pod, times the first ping from the branch answered through the new one.
    async fn recreate(
        &self,
        ns: &TestNamespace,
        branch: &Branch,
        kick: impl FnMut(Option<&Pod>),
    ) -> Duration {
        let (inner, pod) = (self.inner(), self.pod_addr());
        let (_, took) = recreate_and_time(
            ns,
            self.name,
            &self.network(),
            || branch.ping_once(&inner, &pod, Duration::from_millis(300)),
            kick,
        )
        .await;
        took
    }

    /// Item 5: the tunnel deleted, its pods and `secrets` collected, its host route gone.
    async fn delete(&self, ns: &TestNamespace, secrets: &[String]) {
        delete_and_check_gc(ns, self.name, secrets).await;
        let network = self.network();
        let gone = wait_for(Duration::from_secs(15), Duration::from_millis(200), || {
            host_routes(&network).is_empty().then_some(())
        });
        assert!(
            gone.is_some(),
            "host route left: {:?}",
            host_routes(&network)
        );
    }
}

/// The branch's standalone tunnel-pod: GRE from `local` (the customer endpoint) to `peer` (the
/// tunnel's local endpoint), `inner` its tunnel address; no health checks of its own.
fn gre_branch_config(local: Ipv4Addr, peer: Ipv4Addr, inner: &str) -> String {
    let yaml = format!(
        "apiVersion: magictunnel.dev/v1alpha1\nkind: TunnelConfig\nname: branch/gre\n\
         type: GRE\nlocalEndpoint: {local}\ncustomerEndpoint: {peer}\n\
         interfaceAddress: {inner}\nttl: 64\nmssClamp: {{mode: Auto}}\n\
         healthCheck: {{enabled: false}}\nhttp: {{listen: 127.0.0.1:9180}}\n"
    );
    if let Err(e) = TunnelConfig::from_yaml(&yaml) {
        panic!("the test wrote an invalid branch config: {e}\n{yaml}");
    }
    yaml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster with a node and root: e2e/run-local.sh"]
async fn gre_tunnel_carries_traffic_survives_pod_loss_and_is_collected() {
    let Some(client) = cluster("gre_tunnel_carries_traffic").await else {
        return;
    };
    let binary = tunnel_pod_binary().unwrap_or_else(|e| panic!("{e}"));
    let site = Site { n: 1, name: "gre" };
    let name = site.name;
    let (ns, mut branch) = site
        .start(
            &client,
            "GRE",
            "  healthCheck: {enabled: true, type: Reply, rate: High}\n",
        )
        .await;
    let started = Instant::now();
    branch.start_tunnel_pod(
        &binary,
        &gre_branch_config(
            site.customer(),
            site.local(),
            &format!("{}/31", site.branch_addr()),
        ),
    );

    let branch_up = wait_for(Duration::from_secs(20), Duration::from_millis(200), || {
        if branch.tunnel_pod_exited().is_some() {
            return Some(false);
        }
        (branch.http(9180, "/readyz").map(|(code, _)| code) == Some(200)).then_some(true)
    });
    assert_eq!(
        branch_up,
        Some(true),
        "the branch's tunnel-pod did not become ready:\n{}",
        branch.tunnel_pod_log()
    );

    // 1. The pod: secure spec, Running and Ready (its health probes come back through the
    // branch).
    let pod = ns.wait_pod(name, true, None).await;
    assert!(
        branch.tunnel_pod_exited().is_none(),
        "branch tunnel-pod exited:\n{}",
        branch.tunnel_pod_log()
    );
    assert_pod_secure_and_running(&pod, false);
    // 2. Ready from pod readiness, Established from the operator's poll of /status.
    let ready = ns.wait_true(name, "Ready", WAIT).await;
    let established = ns.wait_true(name, "Established", WAIT).await;
    eprintln!(
        "GRE: Ready ({ready}) and Established ({established}) {:.1} s after the apply",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(established, "ProbesAnswered");
    let st = pod_status(&ns, name, &pod).await;
    assert_eq!(
        (&st["ready"], &st["established"]),
        (&json!(true), &json!(true)),
        "/status: {st}"
    );
    assert!(
        !host_routes(&site.network()).is_empty(),
        "the pod installed the tunnel's route on the host"
    );
    site.check_traffic(&branch, "GRE");

    // 4. Pod deleted: the operator recreates it; time to the first answered ping.
    let took = site.recreate(&ns, &branch, |_| {}).await;
    eprintln!("GRE pod recreate → traffic: {:.1} s", took.as_secs_f64());
    assert!(
        took <= RECREATE_BOUND,
        "GRE pod recreate → traffic took {took:?}"
    );
    let new = ns.wait_pod(name, true, None).await;
    assert_pod_secure_and_running(&new, false);
    site.check_traffic(&branch, "GRE after the recreate");

    // 5. Tunnel deleted: pods and the config Secret collected, the host route gone.
    site.delete(&ns, &[format!("{name}-config")]).await;
}

/// Item 3 helper: loads `psk` into the branch's connection, drops the IKE SA and initiates a new
/// one. `Ok` once the CHILD_SA is up.
fn reconnect(charon: &mut Charon, conn: &mut SwanConn, psk: &str) -> Result<(), String> {
    conn.psk = psk.to_string();
    charon.load(std::slice::from_ref(conn));
    let _ = charon.swanctl(&["--terminate", "--ike", CONN, "--force", "--timeout", "2"]);
    let init = charon.initiate(CONN);
    if init.ok && charon.established(CONN).is_some() {
        Ok(())
    } else {
        // Only the last lines: the verdict (AUTHENTICATION_FAILED, timeout, …), no secrets.
        let lines: Vec<&str> = init.output.lines().rev().take(3).collect();
        Err(lines.join(" | "))
    }
}

fn psk_of(secret: &Secret) -> String {
    let data = secret.data.as_ref().expect("Secret data");
    String::from_utf8(data.get("psk").expect("key psk").0.clone()).expect("PSK is text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster with a node and root: e2e/run-local.sh"]
async fn ipsec_tunnel_with_strongswan_rotates_psk_without_restart() {
    let Some(client) = cluster("ipsec_tunnel_with_strongswan").await else {
        return;
    };
    let site = Site {
        n: 2,
        name: "ipsec",
    };
    let name = site.name;
    let (local, customer) = (site.local(), site.customer());
    let (ns, branch) = site
        .start(
            &client,
            "IPsec",
            "  healthCheck: {enabled: false}\n  ipsec: {acceptedIkeIdTypes: [FQDN, KeyID]}\n",
        )
        .await;
    let started = Instant::now();

    // 1. The generated Secret and the IKE IDs in status.
    let found = eventually("pskSecretName and ikeIds in status", WAIT, || async {
        let st = ns.tunnel(name).await?.status?;
        let ids = st.ike_ids?;
        Some((st.psk_secret_name?, ids.fqdn?))
    })
    .await;
    let (secret_name, fqdn) = match found {
        Ok(v) => v,
        Err(e) => panic!("{e}; conditions: {}", ns.conditions(name).await),
    };
    assert_eq!(secret_name, format!("{name}-psk"));
    let ids = ns
        .tunnel(name)
        .await
        .and_then(|t| t.status)
        .and_then(|s| s.ike_ids)
        .expect("ids");
    assert!(ids.key_id.is_some(), "KeyID listed: {ids:?}");
    assert!(
        ids.rfc822_addr.is_none() && ids.ipv4_addr.is_none(),
        "only the accepted types: {ids:?}"
    );
    let secret = ns.secret(&secret_name).await.expect("generated PSK Secret");
    let owner = secret.owner_references();
    assert!(
        owner
            .iter()
            .any(|o| o.kind == "MagicTunnel" && o.name == name),
        "Secret owned by the tunnel"
    );
    let psk = psk_of(&secret);
    assert!(psk.len() >= 32, "generated PSK length {}", psk.len());

    // 2. strongSwan in the branch: PSK from the Secret, IDi = the FQDN of status.ikeIds.
    let mut charon = Charon::start(
        &branch,
        Side::A,
        "branch",
        CharonOptions {
            retransmit_tries: 1,
            retransmit_timeout: 1.0,
            ..CharonOptions::default()
        },
    );
    let mut conn = SwanConn::new(
        CONN,
        &customer.to_string(),
        &local.to_string(),
        &format!("@{fqdn}"),
        &psk,
    );
    conn.local_ts = vec![site.network()];
    conn.remote_ts = vec![format!("{}/32", site.pod_addr())];
    ns.wait_pod(name, false, None).await;
    let up = wait_for(WAIT, Duration::from_secs(1), || {
        reconnect(&mut charon, &mut conn, &psk).ok()
    });
    if up.is_none() {
        panic!(
            "IKEv2 with the tunnel pod did not come up; {}{}",
            ns.diagnose(name).await,
            charon.log()
        );
    }
    let pod = ns.wait_pod(name, true, None).await;
    assert_pod_secure_and_running(&pod, true);
    let ready = ns.wait_true(name, "Ready", WAIT).await;
    let established = ns.wait_true(name, "Established", WAIT).await;
    assert_eq!(established, "ChildSaInstalled");
    let st = pod_status(&ns, name, &pod).await;
    assert_eq!(st["established"], json!(true), "/status: {st}");
    let sas = st["ikeSas"].as_array().cloned().unwrap_or_default();
    assert_eq!(sas.len(), 1, "one IKE SA in /status: {st}");
    eprintln!(
        "IPsec: Ready ({ready}) and Established ({established}) {:.1} s after the apply",
        started.elapsed().as_secs_f64()
    );
    site.check_traffic(&branch, "IPsec");
    let sa = charon.established(CONN).expect("IKE SA");
    let child = sa.installed().expect("child");
    assert!(
        child.bytes_in >= TRANSFER_BYTES,
        "the transfer went through the Child SA: {} bytes in",
        child.bytes_in
    );

    // 3. Rotation through the annotation: a new Secret value, the same pod, the new PSK.
    let (uid, (container_id, restarts)) = (pod.metadata.uid.clone(), container(&pod));
    let value = format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default()
    );
    ns.api::<MagicTunnel>()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {ROTATE_PSK_ANNOTATION: value}}})),
        )
        .await
        .expect("annotate");
    let rotated_at = Instant::now();
    let new_psk = eventually("the PSK Secret to change", WAIT, || async {
        let p = psk_of(&ns.secret(&secret_name).await?);
        (p != psk).then_some(p)
    })
    .await
    .expect("rotation");
    eprintln!(
        "PSK Secret rotated {:.1} s after the annotation",
        rotated_at.elapsed().as_secs_f64()
    );
    let mut last = String::new();
    let accepted = wait_for(
        PSK_REFRESH_BOUND,
        Duration::from_secs(3),
        || match reconnect(&mut charon, &mut conn, &new_psk) {
            Ok(()) => Some(()),
            Err(e) => {
                last = e;
                None
            }
        },
    );
    assert!(
        accepted.is_some(),
        "the new PSK was not accepted within {PSK_REFRESH_BOUND:?}: {last}{}",
        charon.log()
    );
    eprintln!(
        "new PSK accepted by the pod {:.1} s after the annotation",
        rotated_at.elapsed().as_secs_f64()
    );
    let after = ns.wait_pod(name, true, None).await;
    assert_eq!(after.metadata.uid, uid, "the pod was not replaced");
    assert_eq!(
        container(&after),
        (container_id, restarts),
        "the container was not restarted"
    );
    assert_eq!(restarts, 0);
    assert!(host_ping(&site.inner(), 3), "traffic after the rotation");
    // The old PSK no longer authenticates a new IKE SA; the new one still does.
    assert!(
        reconnect(&mut charon, &mut conn, &psk).is_err(),
        "the old PSK still authenticates"
    );
    assert!(
        reconnect(&mut charon, &mut conn, &new_psk).is_ok(),
        "the new PSK again{}",
        charon.log()
    );
    assert!(host_ping(&site.inner(), 3), "traffic with the new PSK");
    ns.wait_true(name, "Established", WAIT).await;

    // 4. Pod deleted: strongSwan keeps its (now dead) SA; as soon as the replacement runs the
    // branch drops it and initiates again (what DPD would do, without its detection delay).
    let took = site
        .recreate(&ns, &branch, |new| {
            if new.is_some() {
                let _ = reconnect(&mut charon, &mut conn, &new_psk);
            }
        })
        .await;
    eprintln!(
        "IPsec pod recreate → traffic: {:.1} s (strongSwan re-initiates when the new pod runs)",
        took.as_secs_f64()
    );
    assert!(
        took <= RECREATE_BOUND,
        "IPsec pod recreate → traffic took {took:?}"
    );

    // 5. Tunnel deleted: pods, the config and PSK Secrets collected, the host route gone.
    drop(charon);
    site.delete(&ns, &[format!("{name}-config"), secret_name])
        .await;
}
