//! A branch router on this node for the traffic tests: a network namespace joined to the host by
//! a veth pair, with the customer endpoint inside and the tunnel's local endpoint on the host end.
//!
//! The tunnel pods run with hostNetwork, so the host is the "cluster side": a [`Branch`] puts the
//! local endpoint (a /32) on the host end of its veth and the customer endpoint (a /32) on the
//! namespace end, routes each to the other over the veth, and gives the namespace the branch's
//! inner addresses on its loopback. On the host it adds a blackhole route with a high metric for
//! each inner prefix: while a tunnel pod is gone (and its route with it) the host drops traffic to
//! the branch instead of sending it out of the default route.
//!
//! In the namespace runs either a standalone `tunnel-pod` ([`Branch::start_tunnel_pod`], GRE) or
//! strongSwan's charon ([`strongswan::Charon`], IPsec): the harness of tunnel-pod's own interop
//! tests, reused through `#[path]` with a [`Branch`] as its lab (with the process helpers of
//! `tunnel-pod/tests/common/proc.rs`).
//!
//! Dropping a [`Branch`] — also while a test panics — stops what it started, kills anything left
//! in the namespace, deletes the namespace (and the veth with it), the host routes and its
//! directory. Names are fixed per tag (`mtt<tag>…`), so a new branch first removes what a killed
//! earlier run of the same test left behind.

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

#[path = "../../tunnel-pod/tests/common/proc.rs"]
mod proc;
#[path = "../../tunnel-pod/tests/common/strongswan.rs"]
pub mod strongswan;

pub use proc::{cmd, describe, output, run_ok, spawn_logged, tail, terminate, wait_for};

/// Which end of the lab: the strongSwan harness addresses nodes by side; a branch has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

/// The namespace end of a branch, as the strongSwan harness sees a lab node.
#[derive(Debug)]
pub struct Node {
    pub ns: String,
    /// The veth end inside the namespace.
    pub veth: String,
    /// The customer endpoint.
    pub outer: Ipv4Addr,
}

/// What the strongSwan harness calls a lab.
use self::Branch as Lab;

/// Addresses and names of a branch.
#[derive(Clone, Debug)]
pub struct BranchSpec {
    /// Short and unique per test: names are `mtt<tag>` (namespace), `mtt<tag>h` / `mtt<tag>p`
    /// (veth ends) and `mtt<tag>t` (the standalone tunnel-pod's TUN).
    pub tag: String,
    /// The tunnel's localEndpoint, put on the host end.
    pub local: Ipv4Addr,
    /// The tunnel's customerEndpoint, inside the namespace.
    pub customer: Ipv4Addr,
    /// Host addresses (`a.b.c.d/32`) on the namespace's loopback: the branch's inner networks.
    pub inner: Vec<String>,
    /// Prefixes blackholed on the host with [`BLACKHOLE_METRIC`].
    pub blackholes: Vec<String>,
}

/// Lower priority than any route a tunnel pod installs (they use the spec's metric, default 0).
pub const BLACKHOLE_METRIC: &str = "4242";

/// A standalone tunnel-pod in a branch.
struct PeerPod {
    child: Child,
    log: PathBuf,
}

pub struct Branch {
    pub name: String,
    pub dir: PathBuf,
    pub spec: BranchSpec,
    node: Node,
    host_veth: String,
    pod: Option<PeerPod>,
}

impl Branch {
    pub fn new(spec: BranchSpec) -> Branch {
        let name = format!("mtt{}", spec.tag);
        let host_veth = format!("{name}h");
        let node = Node {
            ns: name.clone(),
            veth: format!("{name}p"),
            outer: spec.customer,
        };
        assert!(
            host_veth.len() <= 15,
            "interface name too long: {host_veth}"
        );
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let branch = Branch {
            name,
            dir,
            spec,
            node,
            host_veth,
            pod: None,
        };
        // Leftovers of a killed earlier run of the same test.
        branch.remove_host_side();
        let _ = output(&mut cmd("ip", &["netns", "del", &branch.node.ns]));
        let _ = fs::remove_dir_all(&branch.dir);
        fs::create_dir_all(&branch.dir)
            .unwrap_or_else(|e| panic!("create {}: {e}", branch.dir.display()));
        // The directory holds strongSwan's configuration with the PSK: owner only.
        fs::set_permissions(&branch.dir, fs::Permissions::from_mode(0o700))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", branch.dir.display()));
        branch.build();
        branch
    }

    fn build(&self) {
        let ip = |args: &[&str]| run_ok(&mut cmd("ip", args));
        let (ns, h, p) = (&self.node.ns, &self.host_veth, &self.node.veth);
        crate::host::join_to_host(ns, h, p, self.spec.local, &[self.spec.customer])
            .unwrap_or_else(|e| panic!("joining {ns} to the host: {e:#}"));
        for inner in &self.spec.inner {
            ip(&["-n", ns, "addr", "add", inner, "dev", "lo"]);
        }
        // A router: forwards what comes out of the tunnel back into it (health probes of the
        // Reply style carry the branch's own tunnel address as their source).
        for setting in [
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
            "net.ipv4.conf.all.accept_local=1",
            "net.ipv4.conf.default.accept_local=1",
        ] {
            run_ok(&mut self.in_ns("sysctl", &["-qw", setting]));
        }
        for prefix in &self.spec.blackholes {
            ip(&[
                "route",
                "add",
                "blackhole",
                prefix,
                "metric",
                BLACKHOLE_METRIC,
            ]);
        }
    }

    /// Host end: the veth (its addresses and routes go with it) and the blackholes.
    fn remove_host_side(&self) {
        let quiet = |args: &[&str]| {
            let _ = output(&mut cmd("ip", args));
        };
        quiet(&["link", "del", &self.host_veth]);
        for prefix in &self.spec.blackholes {
            quiet(&[
                "route",
                "del",
                "blackhole",
                prefix,
                "metric",
                BLACKHOLE_METRIC,
            ]);
        }
    }

    /// What the strongSwan harness asks of a lab.
    pub fn node(&self, _side: Side) -> &Node {
        &self.node
    }

    pub fn ns(&self) -> &str {
        &self.node.ns
    }

    /// `ip netns exec NS program args…`
    pub fn in_ns(&self, program: &str, args: &[&str]) -> Command {
        let mut c = cmd("ip", &["netns", "exec", &self.node.ns, program]);
        c.args(args);
        c
    }

    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        output(&mut self.in_ns(program, args))
    }

    /// One ping from `from` (an address in the namespace) to `to`, waiting at most `wait`.
    pub fn ping_once(&self, from: &str, to: &str, wait: Duration) -> bool {
        let w = format!("{:.1}", wait.as_secs_f64());
        self.exec("ping", &["-n", "-q", "-c", "1", "-W", &w, "-I", from, to])
            .status
            .success()
    }

    /// Starts `tunnel-pod run` in the namespace with this YAML config (file in the directory).
    pub fn start_tunnel_pod(&mut self, binary: &Path, config_yaml: &str) {
        assert!(
            self.pod.is_none(),
            "a tunnel-pod already runs in {}",
            self.name
        );
        let config = self.dir.join("tunnel.yaml");
        fs::write(&config, config_yaml).unwrap_or_else(|e| panic!("{}: {e}", config.display()));
        let log = self.dir.join("tunnel-pod.log");
        let tun = format!("{}t", self.name);
        let mut c = self.in_ns(
            &binary.to_string_lossy(),
            &[
                "run",
                "--config",
                &config.to_string_lossy(),
                "--interface",
                &tun,
            ],
        );
        let child = spawn_logged(&mut c, &log);
        self.pod = Some(PeerPod { child, log });
    }

    /// The standalone tunnel-pod's exit status once it has exited.
    pub fn tunnel_pod_exited(&mut self) -> Option<ExitStatus> {
        self.pod.as_mut()?.child.try_wait().ok().flatten()
    }

    /// The tail of the standalone tunnel-pod's log.
    pub fn tunnel_pod_log(&self) -> String {
        match &self.pod {
            Some(p) => tail(&p.log, 4000),
            None => "<no tunnel-pod>".into(),
        }
    }

    /// GET `http://127.0.0.1:<port><path>` inside the namespace: `(status, body)`.
    pub fn http(&self, port: u16, path: &str) -> Option<(u16, String)> {
        let url = format!("http://127.0.0.1:{port}{path}");
        let out = self.exec(
            "curl",
            &["-s", "--max-time", "2", "-w", "\n%{http_code}", &url],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n')?;
        Some((code.trim().parse().ok()?, body.to_string()))
    }
}

impl Drop for Branch {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if let Some(mut pod) = self.pod.take() {
            terminate(&mut pod.child, Duration::from_secs(3));
            if panicking {
                eprintln!(
                    "--- branch {} tunnel-pod log ---\n{}",
                    self.name,
                    tail(&pod.log, 4000)
                );
            }
        }
        // Anything still running in our namespace was started by this test (charon included).
        let pids = output(&mut cmd("ip", &["netns", "pids", &self.node.ns]));
        for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
            let _ = Command::new("kill")
                .args(["-KILL", pid])
                .stderr(Stdio::null())
                .status();
        }
        let out = output(&mut cmd("ip", &["netns", "del", &self.node.ns]));
        if !out.status.success() {
            eprintln!(
                "cannot delete netns {}: {}",
                self.node.ns,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.remove_host_side();
        if std::env::var_os("MT_KEEP_LAB").is_none() || !panicking {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The `tunnel-pod` binary for a standalone peer: `MT_TUNNEL_POD_BIN`, or `tunnel-pod` beside
/// this test's own target directory (`cargo build -p magictunnel-tunnel-pod`).
pub fn tunnel_pod_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("MT_TUNNEL_POD_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // target/<profile>/deps/<test> → target/<profile>/tunnel-pod
    let candidate = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("tunnel-pod"))
        .ok_or("no target directory")?;
    if candidate.is_file() {
        Ok(candidate)
    } else {
        Err(format!(
            "{} not found: run `cargo build -p magictunnel-tunnel-pod` first or set \
             MT_TUNNEL_POD_BIN",
            candidate.display()
        ))
    }
}
