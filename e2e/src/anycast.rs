//! The anycast lab (issue #11): two "node" network namespaces holding the same anycast address,
//! a router namespace that steers the customer's traffic to one of them, the customer behind the
//! router, and a "service" namespace behind both nodes (the cluster side that traffic is for).
//!
//! ```text
//!                         ┌─ nodeA (203.0.113.50, 10.97.1.2) ─┐
//!  customer ── router ────┤                                   ├── service (10.236.0.1)
//!  198.51.100.50          └─ nodeB (203.0.113.50, 10.97.2.2) ─┘
//!  10.234.0.1 (inner)       each: mgmt veth to the host, /32 route to the apiserver 10.99.0.1
//! ```
//!
//! - The router routes 203.0.113.50/32 to the active node (`ip route replace … via …`,
//!   [`AnycastLab::switch_to`]); the service routes the customer's inner network
//!   (10.234.0.0/24) to the same node. Each node routes the customer (198.51.100.48/30) to the
//!   router directly and the service network (10.236.0.0/24) to the service.
//! - A tunnel endpoint runs in each node namespace ([`AnycastLab::start_pod`]): `tunnel-pod run`
//!   with local endpoint 203.0.113.50, customer endpoint 198.51.100.50, interface address
//!   10.235.0.0/31 and a route to 10.234.0.0/24; the customer runs strongSwan or a standalone
//!   `tunnel-pod` (GRE) with 10.235.0.1/31 and a route to 10.236.0.0/24. Traffic between the
//!   customer's inner address and the service crosses exactly one node, which a switch changes
//!   without touching either end's TCP state.
//! - Each node namespace has a management veth to the host (`mta<slot>am` / `mta<slot>bm` on the
//!   host, 10.98.<50 + slot>.0/29) and a /32 route to the node-mode apiserver address
//!   ([`APISERVER`], bound on `mt-node0` in the host), so that its tunnel-pod can use the API.
//!
//! Names are `mta<slot>…` (namespaces `mta<slot>r`, `…a`, `…b`, `…c`, `…s`); a new lab first
//! removes what a killed run of the same slot left. Dropping the lab — also while a test panics —
//! stops its processes, kills whatever else runs in its namespaces (charon, ping, iperf3) and
//! deletes the namespaces (and with them every veth, the host ends included).

use std::collections::BTreeSet;
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::peer::{cmd, output, run_ok, spawn_logged, tail, terminate, wait_for};

/// The address both nodes hold.
pub const ANYCAST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 50);
/// The customer's outer address (its tunnel endpoint).
pub const CUSTOMER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 50);
const ROUTER_CUSTOMER_SIDE: &str = "198.51.100.49";
/// The customer's inner network and its address in it (on the customer's loopback).
pub const CUSTOMER_NET: &str = "10.234.0.0/24";
pub const CUSTOMER_INNER: &str = "10.234.0.1";
/// The service behind the nodes.
pub const SERVICE_NET: &str = "10.236.0.0/24";
pub const SERVICE: &str = "10.236.0.1";
/// The tunnel's /31: the nodes' end (both the same) and the customer's.
pub const NODE_TUNNEL_ADDR: &str = "10.235.0.0/31";
pub const CUSTOMER_TUNNEL_ADDR: &str = "10.235.0.1/31";
/// Where node mode's apiserver listens (on `mt-node0` in the host namespace).
pub const APISERVER: &str = "10.99.0.1";

/// One of the two anycast nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeId {
    A,
    B,
}

impl NodeId {
    pub const BOTH: [NodeId; 2] = [NodeId::A, NodeId::B];

    pub fn index(self) -> usize {
        match self {
            NodeId::A => 0,
            NodeId::B => 1,
        }
    }

    pub fn other(self) -> NodeId {
        match self {
            NodeId::A => NodeId::B,
            NodeId::B => NodeId::A,
        }
    }

    fn letter(self) -> char {
        match self {
            NodeId::A => 'a',
            NodeId::B => 'b',
        }
    }

    /// The node's address on its link to the router (10.97.1.2 / 10.97.2.2).
    pub fn router_link(self) -> String {
        format!("10.97.{}.2", self.index() + 1)
    }

    /// The node's address on its link to the service (10.97.11.2 / 10.97.12.2).
    pub fn service_link(self) -> String {
        format!("10.97.{}.2", self.index() + 11)
    }
}

/// A process the lab started in one of its namespaces.
struct LabProc {
    child: Child,
    log: PathBuf,
}

pub struct AnycastLab {
    /// `mta<slot>`.
    pub name: String,
    /// Configs, logs, kubeconfigs, charon's files (owner only: PSKs and tokens live here).
    pub dir: PathBuf,
    slot: u8,
    pods: [Option<LabProc>; 2],
    customer_pod: Option<LabProc>,
    active: NodeId,
}

/// `ip args…`, which must succeed.
fn ip(args: &[&str]) {
    run_ok(&mut cmd("ip", args));
}

fn quiet_ip(args: &[&str]) {
    let _ = output(&mut cmd("ip", args));
}

impl AnycastLab {
    /// Builds the lab of `slot` (0..=9) with nodeA active.
    pub fn new(slot: u8) -> AnycastLab {
        assert!(slot <= 9, "lab slot {slot}: 0..=9");
        let name = format!("mta{slot}");
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let lab = AnycastLab {
            name,
            dir,
            slot,
            pods: [None, None],
            customer_pod: None,
            active: NodeId::A,
        };
        lab.remove_namespaces();
        let _ = fs::remove_dir_all(&lab.dir);
        fs::create_dir_all(&lab.dir).unwrap_or_else(|e| panic!("{}: {e}", lab.dir.display()));
        fs::set_permissions(&lab.dir, fs::Permissions::from_mode(0o700))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", lab.dir.display()));
        lab.build();
        lab
    }

    pub fn router(&self) -> String {
        format!("{}r", self.name)
    }
    pub fn customer(&self) -> String {
        format!("{}c", self.name)
    }
    pub fn service(&self) -> String {
        format!("{}s", self.name)
    }
    pub fn node(&self, n: NodeId) -> String {
        format!("{}{}", self.name, n.letter())
    }
    fn namespaces(&self) -> Vec<String> {
        vec![
            self.router(),
            self.node(NodeId::A),
            self.node(NodeId::B),
            self.customer(),
            self.service(),
        ]
    }
    /// The host end of a node's management veth.
    fn mgmt_host(&self, n: NodeId) -> String {
        format!("{}{}m", self.name, n.letter())
    }
    /// The management /30 of a node: (host end, node end).
    fn mgmt_addrs(&self, n: NodeId) -> (String, String) {
        let base = 4 * n.index();
        let net = 50 + u16::from(self.slot);
        (
            format!("10.98.{net}.{}", base + 1),
            format!("10.98.{net}.{}", base + 2),
        )
    }
    /// The TUN name of a lab tunnel endpoint (inside its namespace).
    pub fn tun(&self) -> String {
        format!("{}t", self.name)
    }

    fn remove_namespaces(&self) {
        for ns in self.namespaces() {
            kill_all_in(&ns);
            quiet_ip(&["netns", "del", &ns]);
        }
        for n in NodeId::BOTH {
            quiet_ip(&["link", "del", &self.mgmt_host(n)]);
        }
    }

    /// `veth a@ns_a <-> b@ns_b` with `addr_a` / `addr_b` (prefixes), both up.
    fn link(&self, ns_a: &str, a: &str, addr_a: &str, ns_b: &str, b: &str, addr_b: &str) {
        ip(&[
            "link", "add", a, "netns", ns_a, "type", "veth", "peer", "name", b, "netns", ns_b,
        ]);
        ip(&["-n", ns_a, "addr", "add", addr_a, "dev", a]);
        ip(&["-n", ns_b, "addr", "add", addr_b, "dev", b]);
        ip(&["-n", ns_a, "link", "set", a, "up"]);
        ip(&["-n", ns_b, "link", "set", b, "up"]);
    }

    fn build(&self) {
        let (r, c, s) = (self.router(), self.customer(), self.service());
        let m = &self.name;
        for ns in self.namespaces() {
            ip(&["netns", "add", &ns]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            for setting in [
                "net.ipv4.ip_forward=1",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
                "net.ipv4.conf.all.accept_local=1",
                "net.ipv4.conf.default.accept_local=1",
            ] {
                run_ok(&mut self.in_ns(&ns, "sysctl", &["-qw", setting]));
            }
        }
        // Customer behind the router.
        self.link(
            &r,
            &format!("{m}rc"),
            &format!("{ROUTER_CUSTOMER_SIDE}/30"),
            &c,
            &format!("{m}cr"),
            &format!("{CUSTOMER}/30"),
        );
        ip(&[
            "-n",
            &c,
            "route",
            "add",
            "default",
            "via",
            ROUTER_CUSTOMER_SIDE,
        ]);
        ip(&[
            "-n",
            &c,
            "addr",
            "add",
            &format!("{CUSTOMER_INNER}/32"),
            "dev",
            "lo",
        ]);
        ip(&[
            "-n",
            &s,
            "addr",
            "add",
            &format!("{SERVICE}/32"),
            "dev",
            "lo",
        ]);
        for n in NodeId::BOTH {
            let (ns, l, i) = (self.node(n), n.letter(), n.index() + 1);
            // Router link; the anycast address on the node's end.
            let node_end = format!("{m}{l}r");
            self.link(
                &r,
                &format!("{m}r{l}"),
                &format!("10.97.{i}.1/30"),
                &ns,
                &node_end,
                &format!("{}/30", n.router_link()),
            );
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{ANYCAST}/32"),
                "dev",
                &node_end,
            ]);
            // Return traffic to the customer goes to the router directly.
            ip(&[
                "-n",
                &ns,
                "route",
                "add",
                "default",
                "via",
                &format!("10.97.{i}.1"),
            ]);
            // Service link.
            self.link(
                &s,
                &format!("{m}s{l}"),
                &format!("10.97.{}.1/30", i + 10),
                &ns,
                &format!("{m}{l}s"),
                &format!("{}/30", n.service_link()),
            );
            ip(&[
                "-n",
                &ns,
                "route",
                "add",
                SERVICE_NET,
                "via",
                &format!("10.97.{}.1", i + 10),
            ]);
            // Management veth to the host, and the apiserver through it.
            let (host_addr, node_addr) = self.mgmt_addrs(n);
            let (host_if, node_if) = (self.mgmt_host(n), format!("{m}{l}h"));
            ip(&[
                "link", "add", &host_if, "type", "veth", "peer", "name", &node_if, "netns", &ns,
            ]);
            ip(&["addr", "add", &format!("{host_addr}/30"), "dev", &host_if]);
            ip(&["link", "set", &host_if, "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{node_addr}/30"),
                "dev",
                &node_if,
            ]);
            ip(&["-n", &ns, "link", "set", &node_if, "up"]);
            ip(&[
                "-n",
                &ns,
                "route",
                "add",
                &format!("{APISERVER}/32"),
                "via",
                &host_addr,
            ]);
        }
        self.route_to(NodeId::A);
    }

    fn route_to(&self, n: NodeId) {
        ip(&[
            "-n",
            &self.router(),
            "route",
            "replace",
            &format!("{ANYCAST}/32"),
            "via",
            &n.router_link(),
        ]);
        ip(&[
            "-n",
            &self.service(),
            "route",
            "replace",
            CUSTOMER_NET,
            "via",
            &n.service_link(),
        ]);
    }

    /// Steers the customer's traffic (router) and the service's return traffic to `n`.
    pub fn switch_to(&mut self, n: NodeId) -> Instant {
        self.route_to(n);
        self.active = n;
        Instant::now()
    }

    pub fn active(&self) -> NodeId {
        self.active
    }

    /// `ip netns exec NS program args…`
    pub fn in_ns(&self, ns: &str, program: &str, args: &[&str]) -> Command {
        let mut c = cmd("ip", &["netns", "exec", ns, program]);
        c.args(args);
        c
    }

    /// Runs a command in `ns` to completion.
    pub fn exec(&self, ns: &str, program: &str, args: &[&str]) -> std::process::Output {
        output(&mut self.in_ns(ns, program, args))
    }

    /// Starts `binary args…` in `ns` with its output in `<dir>/<label>.log`.
    fn spawn(&self, ns: &str, label: &str, binary: &Path, args: &[String]) -> LabProc {
        let log = self.dir.join(format!("{label}.log"));
        let mut c = cmd("ip", &["netns", "exec", ns]);
        c.arg(binary).args(args).env(
            "RUST_LOG",
            std::env::var("MT_LAB_LOG").unwrap_or_else(|_| "info".into()),
        );
        let child = spawn_logged(&mut c, &log);
        LabProc { child, log }
    }

    /// `tunnel-pod run --config <dir>/<label>.yaml --interface <tun> extra…` in node `n`.
    pub fn start_pod(&mut self, n: NodeId, binary: &Path, config_yaml: &str, extra: &[String]) {
        assert!(
            self.pods[n.index()].is_none(),
            "a tunnel-pod already runs in {n:?}"
        );
        let label = format!("node-{}", n.letter());
        let config = self.write(&format!("{label}.yaml"), config_yaml);
        let mut args = vec![
            "run".to_string(),
            "--config".into(),
            config.to_string_lossy().into_owned(),
            "--interface".into(),
            self.tun(),
        ];
        args.extend_from_slice(extra);
        let ns = self.node(n);
        self.pods[n.index()] = Some(self.spawn(&ns, &label, binary, &args));
    }

    /// Stops node `n`'s tunnel-pod: SIGKILL with `crash` (nothing said to anyone), else SIGTERM.
    pub fn stop_pod(&mut self, n: NodeId, crash: bool) {
        if let Some(mut p) = self.pods[n.index()].take() {
            if crash {
                let _ = p.child.kill();
                let _ = p.child.wait();
            } else {
                terminate(&mut p.child, Duration::from_secs(5));
            }
        }
    }

    /// Whether node `n`'s tunnel-pod has exited (and how).
    pub fn pod_exited(&mut self, n: NodeId) -> Option<std::process::ExitStatus> {
        self.pods[n.index()]
            .as_mut()?
            .child
            .try_wait()
            .ok()
            .flatten()
    }

    pub fn pod_log(&self, n: NodeId) -> String {
        match &self.pods[n.index()] {
            Some(p) => tail(&p.log, 6000),
            None => {
                let path = self.dir.join(format!("node-{}.log", n.letter()));
                if path.exists() {
                    tail(&path, 6000)
                } else {
                    "<no tunnel-pod>".into()
                }
            }
        }
    }

    /// The customer's standalone `tunnel-pod` (the GRE peer).
    pub fn start_customer_pod(&mut self, binary: &Path, config_yaml: &str) {
        assert!(self.customer_pod.is_none(), "the customer peer runs");
        let config = self.write("customer.yaml", config_yaml);
        let args = vec![
            "run".to_string(),
            "--config".into(),
            config.to_string_lossy().into_owned(),
            "--interface".into(),
            self.tun(),
            // Health "degraded" after 2 losses within 10 s rather than 5 minutes.
            "--loss-window".into(),
            "10".into(),
        ];
        let ns = self.customer();
        self.customer_pod = Some(self.spawn(&ns, "customer", binary, &args));
    }

    pub fn customer_log(&self) -> String {
        self.customer_pod
            .as_ref()
            .map_or_else(|| "<no customer peer>".into(), |p| tail(&p.log, 6000))
    }

    /// Writes `<dir>/<file>` (owner only) and returns its path.
    pub fn write(&self, file: &str, text: &str) -> PathBuf {
        let path = self.dir.join(file);
        fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
        path
    }

    /// GET `http://127.0.0.1:<port><path>` inside `ns`: `(status, body)`.
    pub fn http(&self, ns: &str, port: u16, path: &str) -> Option<(u16, String)> {
        let url = format!("http://127.0.0.1:{port}{path}");
        let out = self.exec(
            ns,
            "curl",
            &["-s", "--max-time", "2", "-w", "\n%{http_code}", &url],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n')?;
        Some((code.trim().parse().ok()?, body.to_string()))
    }

    /// `/status` of node `n`'s tunnel-pod as JSON.
    pub fn status(&self, n: NodeId, port: u16) -> Option<serde_json::Value> {
        let (code, body) = self.http(&self.node(n), port, "/status")?;
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// `/readyz` of node `n`'s tunnel-pod answers 200.
    pub fn ready(&self, n: NodeId, port: u16) -> bool {
        self.http(&self.node(n), port, "/readyz").map(|(c, _)| c) == Some(200)
    }

    /// The sum of the samples of `name` whose labels include every `k="v"` of `labels`.
    pub fn metric(&self, ns: &str, port: u16, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self
            .http(ns, port, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default();
        metric_sum(&text, name, labels)
    }

    /// Waits until node `n`'s tunnel-pod (HTTP on `port`) is ready; panics with its log.
    pub fn wait_ready(&mut self, n: NodeId, port: u16, timeout: Duration) -> Duration {
        let start = Instant::now();
        let ready = wait_for(timeout, Duration::from_millis(50), || {
            if self.pod_exited(n).is_some() {
                return Some(false);
            }
            self.ready(n, port).then_some(true)
        });
        assert_eq!(
            ready,
            Some(true),
            "node {n:?}'s tunnel-pod did not become ready within {timeout:?}: /readyz {:?}, \
             /status {:?}\n{}",
            self.http(&self.node(n), port, "/readyz"),
            self.status(n, port),
            self.pod_log(n)
        );
        start.elapsed()
    }

    /// Waits until node `n`'s tunnel-pod answers `/status` (an IPsec endpoint is ready only with
    /// a Child SA); panics with its log.
    pub fn wait_serving(&mut self, n: NodeId, port: u16, timeout: Duration) -> Duration {
        let start = Instant::now();
        let up = wait_for(timeout, Duration::from_millis(50), || {
            if self.pod_exited(n).is_some() {
                return Some(false);
            }
            self.status(n, port).map(|_| true)
        });
        assert_eq!(
            up,
            Some(true),
            "node {n:?}'s tunnel-pod does not answer /status after {timeout:?}:\n{}",
            self.pod_log(n)
        );
        start.elapsed()
    }

    /// Starts `ping -i <interval> -c <count>` from the customer's inner address to the service.
    pub fn ping(&self, count: u32, interval: Duration) -> Ping {
        let (c, i) = (count.to_string(), format!("{:.3}", interval.as_secs_f64()));
        let mut command = self.in_ns(
            &self.customer(),
            "ping",
            &[
                "-n",
                "-c",
                &c,
                "-i",
                &i,
                "-W",
                "1",
                "-I",
                CUSTOMER_INNER,
                SERVICE,
            ],
        );
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("ping: {e}"));
        Ping {
            child,
            count,
            interval,
        }
    }

    /// One ping customer → service within `wait`.
    pub fn ping_once(&self, wait: Duration) -> bool {
        let w = format!("{:.1}", wait.as_secs_f64().max(0.1));
        self.exec(
            &self.customer(),
            "ping",
            &[
                "-n",
                "-q",
                "-c",
                "1",
                "-W",
                &w,
                "-I",
                CUSTOMER_INNER,
                SERVICE,
            ],
        )
        .status
        .success()
    }

    /// An iperf3 TCP transfer customer → service for `secs` seconds (`-b` `rate` if given),
    /// reported every 0.5 s. The server runs in the service namespace for one test.
    pub fn iperf(&self, secs: u32, rate: Option<&str>) -> Iperf {
        self.iperf_with(secs, rate, false)
    }

    /// [`AnycastLab::iperf`], with `reverse` the service sending (`-R`): the nodes seal ESP.
    pub fn iperf_with(&self, secs: u32, rate: Option<&str>, reverse: bool) -> Iperf {
        let mut server = self.in_ns(
            &self.service(),
            "iperf3",
            &["-s", "-1", "-B", SERVICE, "-p", "5201"],
        );
        let server = server
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("iperf3 server: {e}"));
        std::thread::sleep(Duration::from_millis(300));
        let t = secs.to_string();
        let mut args = vec![
            "-c",
            SERVICE,
            "-B",
            CUSTOMER_INNER,
            "-p",
            "5201",
            "-t",
            &t,
            "-i",
            "0.5",
            "-J",
            "--connect-timeout",
            "3000",
        ];
        if let Some(r) = rate {
            args.extend(["-b", r]);
        }
        if reverse {
            args.push("-R");
        }
        let client = self
            .in_ns(&self.customer(), "iperf3", &args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("iperf3 client: {e}"));
        Iperf { server, client }
    }
}

/// Kills every process in `ns` (what a test started there: charon, ping, iperf3).
fn kill_all_in(ns: &str) {
    let pids = output(&mut cmd("ip", &["netns", "pids", ns]));
    for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
        let _ = Command::new("kill")
            .args(["-KILL", pid])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for AnycastLab {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        for n in NodeId::BOTH {
            if let Some(mut p) = self.pods[n.index()].take() {
                terminate(&mut p.child, Duration::from_secs(3));
                if panicking {
                    eprintln!("--- {} node {n:?} tunnel-pod log ---\n{}", self.name, {
                        tail(&p.log, 6000)
                    });
                }
            }
        }
        if let Some(mut p) = self.customer_pod.take() {
            terminate(&mut p.child, Duration::from_secs(3));
            if panicking {
                eprintln!(
                    "--- {} customer tunnel-pod log ---\n{}",
                    self.name,
                    tail(&p.log, 6000)
                );
            }
        }
        self.remove_namespaces();
        if std::env::var_os("MT_KEEP_LAB").is_none() || !panicking {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The sum of the samples of `name` (OpenMetrics text) whose labels include all of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, r)) => (m, r.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let ok = labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            ok.then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// A running `ping`.
pub struct Ping {
    child: Child,
    count: u32,
    interval: Duration,
}

/// What a [`Ping`] saw.
#[derive(Debug)]
pub struct PingResult {
    pub sent: u32,
    pub received: u32,
    /// Sequence numbers with no reply.
    pub lost: Vec<u32>,
    pub interval: Duration,
}

impl PingResult {
    /// The time without replies: lost probes × interval.
    pub fn loss_time(&self) -> Duration {
        self.interval * self.lost.len() as u32
    }
}

impl Ping {
    /// Waits for ping to finish and parses its replies.
    pub fn finish(mut self) -> PingResult {
        use std::io::Read as _;
        let mut text = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            let _ = out.read_to_string(&mut text);
        }
        let _ = self.child.wait();
        let seen: BTreeSet<u32> = text
            .lines()
            .filter(|l| l.contains("bytes from") && !l.contains("DUP"))
            .filter_map(|l| {
                let seq = l.split("icmp_seq=").nth(1)?;
                seq.split_whitespace().next()?.parse().ok()
            })
            .collect();
        let lost = (1..=self.count).filter(|s| !seen.contains(s)).collect();
        PingResult {
            sent: self.count,
            received: seen.len() as u32,
            lost,
            interval: self.interval,
        }
    }
}

/// A running iperf3 client and its one-shot server.
pub struct Iperf {
    server: Child,
    client: Child,
}

/// What iperf3 reported (`-J`).
#[derive(Debug)]
pub struct IperfResult {
    /// Bits per second of each 0.5 s interval.
    pub intervals: Vec<f64>,
    pub retransmits: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub error: Option<String>,
}

impl IperfResult {
    /// The longest run of intervals that carried nothing, in seconds.
    pub fn longest_stall(&self) -> f64 {
        let (mut best, mut run) = (0usize, 0usize);
        for &bps in &self.intervals {
            run = if bps < 1.0 { run + 1 } else { 0 };
            best = best.max(run);
        }
        best as f64 * 0.5
    }

    pub fn mean_mbps(&self) -> f64 {
        if self.intervals.is_empty() {
            return 0.0;
        }
        self.intervals.iter().sum::<f64>() / self.intervals.len() as f64 / 1e6
    }
}

impl Iperf {
    pub fn finish(mut self) -> IperfResult {
        use std::io::Read as _;
        let mut text = String::new();
        if let Some(mut out) = self.client.stdout.take() {
            let _ = out.read_to_string(&mut text);
        }
        let _ = self.client.wait();
        terminate(&mut self.server, Duration::from_secs(2));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let intervals = v["intervals"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|i| i["sum"]["bits_per_second"].as_f64())
                    .collect()
            })
            .unwrap_or_default();
        IperfResult {
            intervals,
            retransmits: v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
            bytes_sent: v["end"]["sum_sent"]["bytes"].as_u64().unwrap_or(0),
            bytes_received: v["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0),
            error: v["error"].as_str().map(str::to_string).or_else(|| {
                text.trim()
                    .is_empty()
                    .then(|| "iperf3 printed nothing".to_string())
            }),
        }
    }
}

/// A GRE TunnelConfig for a lab endpoint: `local` → `peer`, `address` on the TUN, `route`
/// through it, HTTP on 127.0.0.1:`http_port`, `health` the healthCheck flow mapping.
pub fn gre_config(
    name: &str,
    local: Ipv4Addr,
    peer: Ipv4Addr,
    address: &str,
    route: &str,
    http_port: u16,
    health: &str,
) -> String {
    let yaml = format!(
        "apiVersion: magictunnel.dev/v1alpha1\nkind: TunnelConfig\nname: {name}\n\
         type: GRE\nlocalEndpoint: {local}\ncustomerEndpoint: {peer}\n\
         interfaceAddress: {address}\nttl: 64\nmssClamp: {{mode: Auto}}\n\
         routes: [{{prefix: {route}}}]\nhealthCheck: {health}\n\
         http: {{listen: 127.0.0.1:{http_port}}}\n"
    );
    if let Err(e) = tunnel_pod::config::TunnelConfig::from_yaml(&yaml) {
        panic!("the test wrote an invalid config: {e}\n{yaml}");
    }
    yaml
}

/// An IPsec MagicTunnel of the lab in the cluster: `replicas: 2`, pinned to a node label no node
/// has (its pods stay Pending: the lab runs its replicas), and what the lab's processes need.
pub struct LabTunnel {
    pub name: String,
    pub namespace: String,
    /// The operator's pods by replica index: their names are the replicas' identities.
    pub pods: Vec<String>,
    /// The operator's config (`<tunnel>-config`, `tunnel.yaml`).
    pub config: tunnel_pod::config::TunnelConfig,
    pub psk: String,
    /// `status.ikeIds.fqdn`: the customer's IDi.
    pub fqdn: String,
}

/// The node label the lab's tunnels select; no node has it.
pub const NO_NODE_LABEL: &str = "magictunnel.dev/anycast-lab";

/// Applies the lab's IPsec MagicTunnel `name` in `namespace` (`spec_tail`: more spec fields,
/// indented by two) and waits for the operator's objects: PSK, IKE IDs, config, both pods.
pub async fn create_ipsec_tunnel(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    replicas: u8,
    spec_tail: &str,
) -> anyhow::Result<LabTunnel> {
    use anyhow::Context as _;
    use k8s_openapi::api::core::v1::{Pod, Secret};
    use kube::api::{Api, ListParams};
    use operator::crd::MagicTunnel;
    let yaml = format!(
        "apiVersion: magictunnel.dev/v1alpha1\nkind: MagicTunnel\nmetadata: {{name: {name}}}\n\
         spec:\n  type: IPsec\n  localEndpoint: {ANYCAST}\n  customerEndpoint: {CUSTOMER}\n\
         \x20 interfaceAddress: {NODE_TUNNEL_ADDR}\n  routes: [{{prefix: {CUSTOMER_NET}}}]\n\
         \x20 replicas: {replicas}\n  placement: {{nodeSelector: {{{NO_NODE_LABEL}: none}}}}\n\
         \x20 healthCheck: {{enabled: false}}\n{spec_tail}"
    );
    crate::apply_yaml(client, &yaml, namespace).await?;
    let tunnels: Api<MagicTunnel> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let wait = Duration::from_secs(60);
    let (psk_secret, fqdn) = crate::eventually("pskSecretName and ikeIds.fqdn", wait, || async {
        let st = tunnels.get(name).await.ok()?.status?;
        Some((st.psk_secret_name?, st.ike_ids?.fqdn?))
    })
    .await?;
    let psk = crate::eventually("the PSK Secret", wait, || async {
        let s = secrets.get(&psk_secret).await.ok()?;
        let b = s.data?.get("psk")?.0.clone();
        String::from_utf8(b).ok()
    })
    .await?;
    let config_name = format!("{name}-config");
    let config = crate::eventually("the config Secret", wait, || async {
        let s = secrets.get(&config_name).await.ok()?;
        let b = s.data?.get("tunnel.yaml")?.0.clone();
        String::from_utf8(b).ok()
    })
    .await?;
    let config = tunnel_pod::config::TunnelConfig::from_yaml(&config)
        .with_context(|| format!("the operator's {config_name}"))?;
    let labels = format!("{}={name}", operator::build::TUNNEL_LABEL);
    let replica = |p: &Pod| {
        p.metadata
            .labels
            .as_ref()?
            .get(operator::build::REPLICA_LABEL)?
            .parse::<usize>()
            .ok()
    };
    let want = usize::from(replicas);
    let pods = crate::eventually("the tunnel's pods", wait, || async {
        let list = pods
            .list(&ListParams::default().labels(&labels))
            .await
            .ok()?;
        let mut named: Vec<(usize, String)> = list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| Some((replica(p)?, p.metadata.name.clone()?)))
            .collect();
        named.sort();
        let indices: Vec<usize> = named.iter().map(|(i, _)| *i).collect();
        (indices == (0..want).collect::<Vec<_>>())
            .then(|| named.into_iter().map(|(_, n)| n).collect())
    })
    .await?;
    Ok(LabTunnel {
        name: name.to_string(),
        namespace: namespace.to_string(),
        pods,
        config,
        psk,
        fqdn,
    })
}

impl LabTunnel {
    /// The ServiceAccount the operator made for the tunnel's pods.
    pub fn service_account(&self) -> String {
        format!("{}-tunnel-pod", self.name)
    }

    /// The SA-state Secret.
    pub fn sa_secret(&self) -> String {
        format!("{}-sa", self.name)
    }

    /// A kubeconfig (written into the lab's directory) for the apiserver of the cluster in
    /// `KUBECONFIG` with a fresh token of the tunnel's ServiceAccount (TokenRequest, 1 h): what a
    /// pod of the tunnel would have mounted.
    pub async fn kubeconfig(
        &self,
        client: &kube::Client,
        lab: &AnycastLab,
    ) -> anyhow::Result<PathBuf> {
        use anyhow::Context as _;
        use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
        use k8s_openapi::api::core::v1::ServiceAccount;
        use kube::api::{Api, PostParams};
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &self.namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(3600),
                ..Default::default()
            }),
            ..Default::default()
        };
        let sa = self.service_account();
        let token = accounts
            .create_token_request(&sa, &PostParams::default(), &request)
            .await
            .with_context(|| format!("a token of ServiceAccount {sa}"))?
            .status
            .and_then(|s| s.token)
            .context("no token in the TokenRequest")?;
        let path = std::env::var_os("KUBECONFIG").context("KUBECONFIG")?;
        let admin = kube::config::Kubeconfig::read_from(&path)?;
        let cluster = admin
            .clusters
            .first()
            .and_then(|c| c.cluster.clone())
            .context("no cluster in KUBECONFIG")?;
        let server = cluster.server.context("no server in KUBECONFIG")?;
        let ca = match (
            &cluster.certificate_authority,
            &cluster.certificate_authority_data,
        ) {
            (Some(file), _) => format!("certificate-authority: {file}"),
            (None, Some(data)) => format!("certificate-authority-data: {data}"),
            (None, None) => anyhow::bail!("no CA in KUBECONFIG"),
        };
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: {server}\n\
             \x20   {ca}\nusers:\n- name: {sa}\n  user:\n    token: {token}\ncontexts:\n\
             - name: lab\n  context: {{cluster: lab, user: {sa}, namespace: {}}}\n\
             current-context: lab\n",
            self.namespace
        );
        Ok(lab.write(&format!("{}.kubeconfig", self.name), &text))
    }

    /// The operator's config for a lab replica: the PSK from `psk_file`, HTTP on
    /// 127.0.0.1:`http_port`, `replicas` overridden if given (the slot-less baseline).
    pub fn node_config(&self, psk_file: &Path, http_port: u16, replicas: Option<u8>) -> String {
        let mut c = self.config.clone();
        if let Some(ipsec) = c.ipsec.as_mut() {
            ipsec.psk_file = Some(psk_file.to_path_buf());
        }
        c.http.listen = std::net::SocketAddr::from(([127, 0, 0, 1], http_port));
        if let Some(r) = replicas {
            c.replicas = r;
        }
        if let Err(e) = c.validate() {
            panic!("the lab's replica config is invalid: {e}\n{}", c.to_yaml());
        }
        c.to_yaml()
    }
}

impl AnycastLab {
    /// Starts replica `replica` of `tunnel` in node `n`: `tunnel-pod run --replica <i>
    /// --identity <the operator's pod name> --kubeconfig <kubeconfig>` with `config_yaml`.
    pub fn start_replica(
        &mut self,
        n: NodeId,
        binary: &Path,
        config_yaml: &str,
        replica: usize,
        identity: &str,
        kubeconfig: &Path,
    ) {
        let extra = [
            "--replica".to_string(),
            replica.to_string(),
            "--identity".into(),
            identity.to_string(),
            "--kubeconfig".into(),
            kubeconfig.to_string_lossy().into_owned(),
        ];
        self.start_pod(n, binary, config_yaml, &extra);
    }
}

/// The cumulative buckets (`le`, count) of histogram `name` (OpenMetrics text).
pub fn histogram_buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let bucket = format!("{name}_bucket{{");
    let mut out: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&bucket)?;
            let (labels, value) = rest.rsplit_once(' ')?;
            let le = labels.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, value.parse().ok()?))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The upper bound of the bucket holding quantile `q` of the observations between two
/// readings of the same histogram's buckets (`None` without observations in between).
pub fn histogram_quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|&(le, n)| {
            let old = before.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1);
            (le, n - old)
        })
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    delta
        .iter()
        .find(|(_, n)| *n >= (q * total).ceil().max(1.0))
        .map(|(le, _)| *le)
}
