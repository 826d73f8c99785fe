//! Harness for tests that run real `tunnel-pod` processes in network namespaces.
//!
//! A [`Lab`] is two namespaces, A and B, joined by a veth pair (203.0.113.1/24 in A,
//! 203.0.113.2/24 in B), a temporary directory for configs, logs and captures, and the processes
//! started in them. Names are unique per test (`mt` + pid + `g` + counter) so tests never collide
//! with each other or with anything else on the machine. Dropping the lab — also while a test
//! panics — stops every process it started (SIGTERM, then SIGKILL), deletes the namespaces and
//! the directory; on a panic it first prints the tail of each tunnel-pod's log.
//!
//! The tests need root. Everything is done by shelling out to the tools an operator would use
//! (`ip`, `curl`, `tcpdump`, `tshark`, `iperf3`): the HTTP endpoints listen on the loopback of a
//! namespace, which a socket of the test process cannot reach.
//!
//! Set `MT_KEEP_LAB=1` to keep the directory (configs, logs, pcaps) for a look afterwards.

#![allow(dead_code)] // each test file uses its own subset

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tunnel_pod::config::TunnelConfig;

pub mod esp;
pub mod ike;
pub mod proc;
pub mod strongswan;

pub use proc::{cmd, describe, output, run_ok, tail, terminate, wait_for};

pub const TUNNEL_POD: &str = env!("CARGO_BIN_EXE_tunnel-pod");
/// Debian's interpreter: the one that has scapy.
pub const PYTHON: &str = "/usr/bin/python3";
pub const HTTP_PORT: u16 = 9180;
pub const IPERF_PORT: u16 = 5201;
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Receive-side drop reasons: the ones a GRE frame from the network can cause.
pub const RECEIVE_DROP_REASONS: [&str; 9] = [
    "truncated",
    "bad_version",
    "reserved_bits",
    "unknown_protocol",
    "key_mismatch",
    "bad_checksum",
    "unexpected_source",
    "oversized",
    "malformed_inner",
];

static COUNTER: AtomicU32 = AtomicU32::new(0);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

impl Side {
    pub const BOTH: [Side; 2] = [Side::A, Side::B];

    fn index(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Side::A => "a",
            Side::B => "b",
        }
    }

    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// TCP MSS clamp of a config.
#[derive(Clone, Copy, Debug)]
pub enum Mss {
    Auto,
    Fixed(u16),
    Off,
}

/// The fields of a GRE TunnelConfig the tests vary; [`GreConfig::to_yaml`] writes the file.
#[derive(Clone, Debug)]
pub struct GreConfig {
    pub name: String,
    pub local: Ipv4Addr,
    /// `None`: no customerEndpoint (an IPsec peer is then learned from IKE).
    pub customer: Option<Ipv4Addr>,
    /// This side's tunnel address with its prefix, e.g. `10.99.0.0/31`.
    pub interface_address: String,
    /// `None`: the binary's default (1476, or 1472 with a key).
    pub mtu: Option<u16>,
    pub ttl: u8,
    pub mss: Mss,
    pub routes: Vec<String>,
    /// Probe rate (`Low`, `Mid`, `High`); `None` disables health checks.
    pub health_rate: Option<&'static str>,
    /// `Reply` or `Request`.
    pub health_type: &'static str,
    /// `Bidirectional` or `Unidirectional`.
    pub health_direction: &'static str,
    pub health_target: Option<Ipv4Addr>,
    pub key: Option<u32>,
    /// Some: an IPsec tunnel with this `ipsec:` block (indented YAML body) instead of GRE.
    pub ipsec: Option<String>,
    pub http_port: u16,
}

impl GreConfig {
    pub fn to_yaml(&self) -> String {
        let mut y = String::new();
        let _ = writeln!(y, "apiVersion: magictunnel.dev/v1alpha1");
        let _ = writeln!(y, "kind: TunnelConfig");
        let _ = writeln!(y, "name: {}", self.name);
        let _ = writeln!(
            y,
            "type: {}",
            if self.ipsec.is_some() { "IPsec" } else { "GRE" }
        );
        let _ = writeln!(y, "localEndpoint: {}", self.local);
        if let Some(customer) = self.customer {
            let _ = writeln!(y, "customerEndpoint: {customer}");
        }
        let _ = writeln!(y, "interfaceAddress: {}", self.interface_address);
        if let Some(mtu) = self.mtu {
            let _ = writeln!(y, "mtu: {mtu}");
        }
        let _ = writeln!(y, "ttl: {}", self.ttl);
        let _ = match self.mss {
            Mss::Auto => writeln!(y, "mssClamp: {{mode: Auto}}"),
            Mss::Fixed(v) => writeln!(y, "mssClamp: {{mode: Fixed, value: {v}}}"),
            Mss::Off => writeln!(y, "mssClamp: {{mode: Off}}"),
        };
        if !self.routes.is_empty() {
            let _ = writeln!(y, "routes:");
            for r in &self.routes {
                let _ = writeln!(y, "  - prefix: {r}");
            }
        }
        let _ = match self.health_rate {
            Some(rate) => writeln!(
                y,
                "healthCheck: {{enabled: true, type: {}, direction: {}, rate: {rate}{}}}",
                self.health_type,
                self.health_direction,
                self.health_target
                    .map(|t| format!(", target: {t}"))
                    .unwrap_or_default()
            ),
            None => writeln!(y, "healthCheck: {{enabled: false}}"),
        };
        if let Some(key) = self.key {
            let _ = writeln!(y, "gre: {{key: {key}}}");
        }
        if let Some(block) = &self.ipsec {
            let _ = writeln!(y, "ipsec:\n{block}");
        }
        let _ = writeln!(y, "http: {{listen: 127.0.0.1:{}}}", self.http_port);
        y
    }

    /// The tunnel MTU this config gives, defaults applied.
    pub fn effective_mtu(&self) -> u16 {
        match TunnelConfig::from_yaml(&self.to_yaml()) {
            Ok(c) => c.mtu(),
            Err(e) => panic!("the test wrote an invalid config: {e}\n{}", self.to_yaml()),
        }
    }
}

/// One end of the lab.
#[derive(Debug)]
pub struct Node {
    pub ns: String,
    pub veth: String,
    /// Outer (veth) address.
    pub outer: Ipv4Addr,
    /// Name given to the tunnel-pod's TUN device.
    pub tun: String,
    /// Tunnel (inner) address.
    pub tunnel_addr: Ipv4Addr,
}

pub struct Pod {
    child: Child,
    log: PathBuf,
    http_port: u16,
}

struct Background {
    label: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

#[derive(Clone, Copy, Debug)]
pub struct LabOptions {
    pub veth_mtu: u32,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions { veth_mtu: 1500 }
    }
}

/// A started background process (see [`Lab::spawn`]).
#[derive(Clone, Copy, Debug)]
pub struct Bg(usize);

/// A running packet capture (see [`Lab::capture`]).
pub struct Capture {
    bg: Bg,
    pub file: PathBuf,
}

/// How a tunnel-pod ended after [`Lab::stop`].
#[derive(Debug)]
pub struct Stopped {
    /// `None` when it did not exit within the grace period (it was then killed).
    pub status: Option<ExitStatus>,
    pub elapsed: Duration,
    pub log: String,
}

pub struct Lab {
    pub name: String,
    pub dir: PathBuf,
    nodes: [Node; 2],
    namespaces: Vec<String>,
    pods: [Option<Pod>; 2],
    background: Vec<Background>,
}

impl Lab {
    pub fn new(options: LabOptions) -> Lab {
        let name = format!(
            "mt{}g{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let node = |side: Side, outer: [u8; 4], tunnel: [u8; 4]| Node {
            ns: format!("{name}{}", side.label()),
            veth: format!("{name}v{}", side.label()),
            outer: Ipv4Addr::from(outer),
            tun: format!("{name}t{}", side.label()),
            tunnel_addr: Ipv4Addr::from(tunnel),
        };
        let nodes = [
            node(Side::A, [203, 0, 113, 1], [10, 99, 0, 0]),
            node(Side::B, [203, 0, 113, 2], [10, 99, 0, 1]),
        ];
        for n in &nodes {
            assert!(
                n.veth.len() <= 15 && n.tun.len() <= 15,
                "interface name too long: {n:?}"
            );
        }
        let dir = std::env::temp_dir().join(&name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        // From here on Drop cleans up whatever was created, also when a step below fails.
        let mut lab = Lab {
            name,
            dir,
            nodes,
            namespaces: Vec::new(),
            pods: [None, None],
            background: Vec::new(),
        };
        for side in Side::BOTH {
            let ns = lab.node(side).ns.clone();
            run_ok(&mut cmd("ip", &["netns", "add", &ns]));
            lab.namespaces.push(ns.clone());
            run_ok(&mut cmd("ip", &["-n", &ns, "link", "set", "lo", "up"]));
        }
        let mtu = options.veth_mtu.to_string();
        let (a, b) = (lab.node(Side::A), lab.node(Side::B));
        run_ok(&mut cmd(
            "ip",
            &[
                "link", "add", &a.veth, "netns", &a.ns, "mtu", &mtu, "type", "veth", "peer",
                "name", &b.veth, "netns", &b.ns, "mtu", &mtu,
            ],
        ));
        for side in Side::BOTH {
            let n = lab.node(side);
            let addr = format!("{}/24", n.outer);
            run_ok(&mut cmd(
                "ip",
                &["-n", &n.ns, "addr", "add", &addr, "dev", &n.veth],
            ));
            run_ok(&mut cmd("ip", &["-n", &n.ns, "link", "set", &n.veth, "up"]));
        }
        lab
    }

    /// One more namespace, `<lab>` + `suffix`, with lo up; deleted with the lab.
    pub fn add_namespace(&mut self, suffix: &str) -> String {
        let ns = format!("{}{suffix}", self.name);
        run_ok(&mut cmd("ip", &["netns", "add", &ns]));
        self.namespaces.push(ns.clone());
        run_ok(&mut cmd("ip", &["-n", &ns, "link", "set", "lo", "up"]));
        ns
    }

    pub fn node(&self, side: Side) -> &Node {
        &self.nodes[side.index()]
    }

    /// The default config of one side: no key, Auto MSS, health checks at rate High, a route
    /// (A: 10.20.0.0/24, B: 10.10.0.0/24).
    pub fn config(&self, side: Side) -> GreConfig {
        let (me, peer) = (self.node(side), self.node(side.other()));
        GreConfig {
            name: format!("test/{}-{}", self.name, side.label()),
            local: me.outer,
            customer: Some(peer.outer),
            interface_address: format!("{}/31", me.tunnel_addr),
            mtu: None,
            ttl: 64,
            mss: Mss::Auto,
            routes: vec![match side {
                Side::A => "10.20.0.0/24".to_string(),
                Side::B => "10.10.0.0/24".to_string(),
            }],
            health_rate: Some("High"),
            health_type: "Reply",
            health_direction: "Bidirectional",
            health_target: None,
            key: None,
            ipsec: None,
            http_port: HTTP_PORT,
        }
    }

    /// `ip netns exec NS program args…` for one side.
    pub fn in_ns(&self, side: Side, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.node(side).ns, program]);
        c.args(args);
        c
    }

    /// Runs a command in a namespace; it must succeed. Returns stdout.
    pub fn exec_ok(&self, side: Side, program: &str, args: &[&str]) -> String {
        run_ok(&mut self.in_ns(side, program, args))
    }

    /// `count` pings, 0.2 s apart, from `from` to the other side's tunnel address.
    pub fn ping_through(&self, from: Side, count: u32) -> Output {
        let peer = self.node(from.other()).tunnel_addr.to_string();
        let count = count.to_string();
        self.exec(
            from,
            "ping",
            &["-c", &count, "-i", "0.2", "-W", "2", "-n", &peer],
        )
    }

    pub fn exec(&self, side: Side, program: &str, args: &[&str]) -> Output {
        output(&mut self.in_ns(side, program, args))
    }

    /// Writes the config of `side` and starts `tunnel-pod run` in its namespace.
    pub fn start(&mut self, side: Side, config: &GreConfig, extra_args: &[&str]) {
        assert!(
            self.pods[side.index()].is_none(),
            "a tunnel-pod already runs on side {side:?}"
        );
        let yaml = config.to_yaml();
        if let Err(e) = TunnelConfig::from_yaml(&yaml) {
            panic!("the test wrote an invalid config: {e}\n{yaml}");
        }
        let path = self.dir.join(format!("{}.yaml", side.label()));
        fs::write(&path, &yaml).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        let log = self.dir.join(format!("tunnel-pod-{}.log", side.label()));
        let log_file = File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let log_file2 = log_file
            .try_clone()
            .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let path_arg = path.to_string_lossy().into_owned();
        let mut c = self.in_ns(
            side,
            TUNNEL_POD,
            &[
                "run",
                "--config",
                &path_arg,
                "--interface",
                &self.node(side).tun,
            ],
        );
        c.args(extra_args)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_file2);
        // `ip netns exec` execs the program in place: the child's pid is tunnel-pod's.
        let child = c
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", describe(&c)));
        self.pods[side.index()] = Some(Pod {
            child,
            log,
            http_port: config.http_port,
        });
    }

    /// Starts both sides with their default configs changed by `adjust`.
    pub fn start_both(&mut self, adjust: impl Fn(Side, &mut GreConfig), extra_args: &[&str]) {
        for side in Side::BOTH {
            let mut c = self.config(side);
            adjust(side, &mut c);
            self.start(side, &c, extra_args);
        }
    }

    fn pod(&self, side: Side) -> &Pod {
        self.pods[side.index()]
            .as_ref()
            .unwrap_or_else(|| panic!("no tunnel-pod was started on side {side:?}"))
    }

    pub fn log(&self, side: Side) -> String {
        match &self.pods[side.index()] {
            Some(p) => tail(&p.log, 6000),
            None => "<not started>".to_string(),
        }
    }

    /// Logs of every started tunnel-pod, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for side in Side::BOTH {
            if self.pods[side.index()].is_some() {
                let _ = write!(
                    s,
                    "\n--- tunnel-pod {} log ---\n{}",
                    side.label(),
                    self.log(side)
                );
            }
        }
        s
    }

    /// The process id of the side's tunnel-pod, if one was started.
    pub fn pid(&self, side: Side) -> Option<u32> {
        self.pods[side.index()].as_ref().map(|p| p.child.id())
    }

    /// `None` while running, the exit status once it has exited.
    pub fn exited(&mut self, side: Side) -> Option<ExitStatus> {
        let pod = self.pods[side.index()].as_mut()?;
        pod.child.try_wait().ok().flatten()
    }

    /// GET `path` on the side's HTTP endpoint: `(status, body)`, `None` when nothing answers.
    pub fn http(&self, side: Side, path: &str) -> Option<(u16, String)> {
        let url = format!("http://127.0.0.1:{}{path}", self.pod(side).http_port);
        let out = self.exec(
            side,
            "curl",
            &["-s", "--max-time", "2", "-w", "\n%{http_code}", &url],
        );
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n')?;
        Some((code.trim().parse().ok()?, body.to_string()))
    }

    pub fn status(&self, side: Side, path: &str) -> Option<u16> {
        self.http(side, path).map(|(code, _)| code)
    }

    pub fn metrics(&self, side: Side) -> Metrics {
        match self.http(side, "/metrics") {
            Some((200, body)) => Metrics::parse(&body),
            other => panic!("GET /metrics on side {side:?}: {other:?}{}", self.logs()),
        }
    }

    /// Waits until `/readyz` of every given side answers 200; panics after [`READY_TIMEOUT`]
    /// with the last answers and the logs, or as soon as a tunnel-pod exits.
    pub fn wait_ready(&mut self, sides: &[Side]) {
        let start = Instant::now();
        loop {
            for &side in sides {
                if let Some(status) = self.exited(side) {
                    panic!(
                        "tunnel-pod {} exited ({status}) before becoming ready{}",
                        side.label(),
                        self.logs()
                    );
                }
            }
            let answers: Vec<(Side, Option<u16>)> = sides
                .iter()
                .map(|&s| (s, self.status(s, "/readyz")))
                .collect();
            if answers.iter().all(|(_, a)| *a == Some(200)) {
                return;
            }
            if start.elapsed() > READY_TIMEOUT {
                let summary: Vec<String> = answers
                    .iter()
                    .map(|(s, a)| {
                        format!(
                            "{}: {}",
                            s.label(),
                            a.map_or("no answer".to_string(), |c| c.to_string())
                        )
                    })
                    .collect();
                panic!(
                    "tunnel-pods not ready within {READY_TIMEOUT:?} (/readyz {}){}",
                    summary.join(", "),
                    self.logs()
                );
            }
            sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM, then waits up to `grace` for the exit (SIGKILL after that).
    pub fn stop(&mut self, side: Side, grace: Duration) -> Stopped {
        let mut pod = self.pods[side.index()]
            .take()
            .unwrap_or_else(|| panic!("no tunnel-pod on side {side:?}"));
        let start = Instant::now();
        let status = terminate(&mut pod.child, grace);
        Stopped {
            status,
            elapsed: start.elapsed(),
            log: tail(&pod.log, 6000),
        }
    }

    /// Starts a background process in a namespace, output to files in the lab directory.
    pub fn spawn(&mut self, side: Side, label: &str, program: &str, args: &[&str]) -> Bg {
        let n = self.background.len();
        let stdout = self.dir.join(format!("{n}-{label}.out"));
        let stderr = self.dir.join(format!("{n}-{label}.err"));
        let mut c = self.in_ns(side, program, args);
        let open = |p: &PathBuf| File::create(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        c.stdin(Stdio::null())
            .stdout(open(&stdout))
            .stderr(open(&stderr));
        let child = c
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", describe(&c)));
        self.background.push(Background {
            label: label.to_string(),
            child,
            stdout,
            stderr,
        });
        Bg(n)
    }

    /// Waits up to `timeout` for a background process to exit by itself.
    pub fn wait_bg(&mut self, bg: Bg, timeout: Duration) -> Option<ExitStatus> {
        let child = &mut self.background[bg.0].child;
        wait_for(timeout, Duration::from_millis(20), || {
            child.try_wait().ok().flatten()
        })
    }

    /// Stops a background process (SIGTERM, then SIGKILL after 2 s).
    pub fn stop_bg(&mut self, bg: Bg) {
        terminate(&mut self.background[bg.0].child, Duration::from_secs(2));
    }

    pub fn bg_stdout(&self, bg: Bg) -> String {
        fs::read_to_string(&self.background[bg.0].stdout).unwrap_or_default()
    }

    pub fn bg_stderr(&self, bg: Bg) -> String {
        fs::read_to_string(&self.background[bg.0].stderr).unwrap_or_default()
    }

    /// Starts `tcpdump` on `iface` in a namespace, writing at most `count` packets matching
    /// the pcap `filter` to a file, and waits until it listens.
    pub fn capture(&mut self, side: Side, iface: &str, count: u32, filter: &str) -> Capture {
        let n = self.background.len();
        let file = self.dir.join(format!("{n}-{iface}.pcap"));
        let file_arg = file.to_string_lossy().into_owned();
        let count = count.to_string();
        // -Z root: tcpdump otherwise drops to user tcpdump, who cannot write the lab directory.
        let mut args = vec![
            "-Z", "root", "-U", "-n", "-i", iface, "-c", &count, "-w", &file_arg,
        ];
        args.extend(filter.split_whitespace());
        let bg = self.spawn(side, "tcpdump", "tcpdump", &args);
        let listening = wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
            self.bg_stderr(bg).contains("listening on").then_some(())
        });
        assert!(
            listening.is_some(),
            "tcpdump on {iface} did not start: {}",
            self.bg_stderr(bg)
        );
        Capture { bg, file }
    }

    /// Waits up to `timeout` for the capture to reach its packet count, stops it otherwise,
    /// and returns the pcap file.
    pub fn finish_capture(&mut self, capture: Capture, timeout: Duration) -> PathBuf {
        if self.wait_bg(capture.bg, timeout).is_none() {
            self.stop_bg(capture.bg);
        }
        capture.file
    }

    /// Starts `iperf3 -s -1` on `server` bound to its tunnel address and runs a client from
    /// the other side; returns the client's JSON report.
    pub fn iperf(&mut self, server: Side, seconds: u32, parallel: u32) -> serde_json::Value {
        let addr = self.node(server).tunnel_addr.to_string();
        let port = IPERF_PORT.to_string();
        let srv = self.spawn(
            server,
            "iperf3-server",
            "iperf3",
            &["-s", "-1", "-B", &addr, "-p", &port],
        );
        let filter = format!("sport = :{port}");
        let listening = wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
            let out = self.exec(server, "ss", &["-Hltn", &filter]);
            (!out.stdout.is_empty()).then_some(())
        });
        assert!(
            listening.is_some(),
            "iperf3 server did not listen: {}",
            self.bg_stderr(srv)
        );
        let out = self.exec(
            server.other(),
            "iperf3",
            &[
                "-c",
                &addr,
                "-p",
                &port,
                "-t",
                &seconds.to_string(),
                "-P",
                &parallel.to_string(),
                "-J",
                "--connect-timeout",
                "3000",
            ],
        );
        self.stop_bg(srv);
        let text = String::from_utf8_lossy(&out.stdout);
        let report: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "iperf3 client output is not JSON ({e}): {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert!(
            out.status.success() && report.get("error").is_none(),
            "iperf3 client failed: {}{}",
            report.get("error").map_or(String::new(), |e| e.to_string()),
            self.logs()
        );
        report
    }
}

/// (bytes, bits per second) the receiving end counted, from an `iperf3 -J` client report.
pub fn iperf_received(report: &serde_json::Value) -> (f64, f64) {
    let sum = &report["end"]["sum_received"];
    (
        sum["bytes"].as_f64().unwrap_or(0.0),
        sum["bits_per_second"].as_f64().unwrap_or(0.0),
    )
}

impl Drop for Lab {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if panicking {
            eprintln!("lab {} failed; directory {}", self.name, self.dir.display());
        }
        for side in Side::BOTH {
            if let Some(mut pod) = self.pods[side.index()].take() {
                let status = terminate(&mut pod.child, Duration::from_secs(3));
                if panicking {
                    eprintln!(
                        "--- tunnel-pod {} (exit: {status:?}) log ---\n{}",
                        side.label(),
                        tail(&pod.log, 6000)
                    );
                }
            }
        }
        for bg in &mut self.background {
            if terminate(&mut bg.child, Duration::from_secs(1)).is_none() && panicking {
                eprintln!("background `{}` had to be killed", bg.label);
            }
        }
        for ns in &self.namespaces {
            remove_netns(ns);
        }
        if std::env::var_os("MT_KEEP_LAB").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// One sample of the Prometheus text exposition.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed `/metrics` page.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub samples: Vec<Sample>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(parse_sample)
            .collect();
        Metrics { samples }
    }

    /// Sum of every sample of `name` whose labels include `labels`. Panics when there is none:
    /// every series of the contract is registered at start, so an absent one is a bug, and
    /// reading it as 0 would let `== 0` assertions pass on a page that lost the series.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.try_get(name, labels).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Metrics::get`] as a `Result`: `Err` names the missing series and what the page has.
    pub fn try_get(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64, String> {
        let mut found = self.matching(name, labels).peekable();
        if found.peek().is_none() {
            let present: BTreeSet<String> = self
                .samples
                .iter()
                .filter(|s| s.name == name)
                .map(|s| format!("{:?}", s.labels))
                .collect();
            return Err(format!(
                "/metrics has no series {name} with labels {labels:?} (label sets of {name} \
                 present: {present:?}; {} samples on the page)",
                self.samples.len()
            ));
        }
        Ok(found.map(|s| s.value).sum())
    }

    /// 0 for a series that is absent. Only for a series that legitimately may not exist yet
    /// (none does today: every counter is registered at start); say why where it is used.
    pub fn metric_or_zero(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    pub fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.matching(name, labels).next().is_some()
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// `magictunnel_tunnel_packets_total{direction}`.
    pub fn packets(&self, direction: &str) -> f64 {
        self.get(
            "magictunnel_tunnel_packets_total",
            &[("direction", direction)],
        )
    }

    pub fn bytes(&self, direction: &str) -> f64 {
        self.get(
            "magictunnel_tunnel_bytes_total",
            &[("direction", direction)],
        )
    }

    pub fn drops(&self, reason: &str) -> f64 {
        self.get("magictunnel_tunnel_drops_total", &[("reason", reason)])
    }

    /// Every `reason` label present on the drop counter.
    pub fn drop_reasons(&self) -> BTreeSet<String> {
        self.samples
            .iter()
            .filter(|s| s.name == "magictunnel_tunnel_drops_total")
            .filter_map(|s| s.labels.get("reason").cloned())
            .collect()
    }

    /// The `state` whose `magictunnel_health_state` sample is 1.
    pub fn health_state(&self) -> Option<String> {
        self.samples
            .iter()
            .find(|s| s.name == "magictunnel_health_state" && s.value == 1.0)
            .and_then(|s| s.labels.get("state").cloned())
    }

    pub fn probes(&self, result: &str) -> f64 {
        self.get("magictunnel_probes_total", &[("result", result)])
    }
}

/// `name{k="v",…} value [timestamp]`
fn parse_sample(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return None,
    };
    let mut labels = BTreeMap::new();
    let rest = if let Some(mut r) = rest.strip_prefix('{') {
        loop {
            r = r.trim_start_matches([',', ' ']);
            if let Some(after) = r.strip_prefix('}') {
                break after;
            }
            let (key, after) = r.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break i,
                    c => value.push(c),
                }
            };
            labels.insert(key.trim().to_string(), value);
            r = &after[end + 1..];
        }
    } else {
        rest
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `tshark -r FILE -Y FILTER -T fields -e …` with the first occurrence of each field (the outer
/// header when a packet carries another IP packet); one row per packet.
pub fn tshark_fields(file: &Path, display_filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let file_arg = file.to_string_lossy().into_owned();
    let mut args = vec![
        "-r",
        &file_arg,
        "-Y",
        display_filter,
        "-T",
        "fields",
        "-E",
        "occurrence=f",
        "-E",
        "separator=/t",
    ];
    for &f in fields {
        args.push("-e");
        args.push(f);
    }
    let text = run_ok(&mut cmd("tshark", &args));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// The packets of a classic pcap file as tcpdump writes it (little-endian, microseconds), read
/// without starting tshark: cheap enough to run after every crafted variant. Panics on a file
/// that is not one.
pub fn pcap_packets(file: &Path) -> Vec<Vec<u8>> {
    let data = fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    assert!(
        data.get(..4) == Some(&[0xd4, 0xc3, 0xb2, 0xa1][..]),
        "{} is not a little-endian pcap file",
        file.display()
    );
    let mut packets = Vec::new();
    let mut at = 24;
    // A record cut short by the capture being stopped is not a packet.
    while let Some(header) = data.get(at..at + 16) {
        let len = u32::from_le_bytes([header[8], header[9], header[10], header[11]]) as usize;
        let Some(p) = data.get(at + 16..at + 16 + len) else {
            break;
        };
        packets.push(p.to_vec());
        at += 16 + len;
    }
    packets
}

/// A number printed by tshark in decimal or `0x` hexadecimal.
pub fn tshark_number(field: &str) -> Option<u64> {
    let f = field.trim();
    match f.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => f.parse().ok(),
    }
}

/// One warm-up ping from `side` (source `src`) to `dst` that may take a few tries, then five
/// that must all be answered (`-w 5`: with `-W` alone ping waits only two round trips for the
/// last reply, and one slow reply of libipsec under load would count as lost). `logs` gives
/// the rig's logs for a failure message.
pub fn ping_five(lab: &Lab, side: Side, src: &str, dst: &str, logs: &dyn Fn() -> String) {
    let once = || {
        lab.exec(side, "ping", &["-c", "1", "-W", "1", "-n", "-I", src, dst])
            .status
            .success()
            .then_some(())
    };
    let warm = wait_for(Duration::from_secs(10), Duration::from_millis(200), once);
    assert!(warm.is_some(), "no ping {src} → {dst}{}", logs());
    let out = lab.exec(
        side,
        "ping",
        &["-c", "5", "-i", "0.2", "-w", "5", "-n", "-I", src, dst],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("5 received"),
        "ping {src} → {dst} lost packets:\n{text}{}",
        logs()
    );
}

/// Kills whatever still runs in namespace `ns` (a test's own: whatever runs there was started
/// by the test) and deletes it; a failure is reported, not fatal (this runs in `Drop`).
pub fn remove_netns(ns: &str) {
    let out = output(&mut cmd("ip", &["netns", "pids", ns]));
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        let _ = Command::new("kill")
            .args(["-KILL", pid])
            .stderr(Stdio::null())
            .status();
    }
    let out = output(&mut cmd("ip", &["netns", "del", ns]));
    if !out.status.success() {
        eprintln!(
            "cannot delete netns {ns}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
