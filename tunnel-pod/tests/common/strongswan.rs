//! strongSwan's charon as a real IKEv2 peer inside a [`Lab`] namespace.
//!
//! Each [`Charon`] runs in its own mount namespace with a private `/run` (charon writes
//! `/run/charon.pid`, so two of them cannot share one), with its own directory holding
//! `strongswan.conf`, `swanctl.conf`, the vici socket and a file log. The dataplane is
//! kernel-libipsec: ESP in userspace through the TUN device `ipsec0`, always UDP-encapsulated
//! (libipsec fakes a NAT so that ESP goes to 4500; this kernel has no ESP). With
//! `install_routes = yes` charon routes each remote traffic selector via `ipsec0` (table 220)
//! with a local address inside the local selector as source, so no virtual IPs are needed.
//!
//! [`SwanConn`] renders one `connections` + `secrets` entry of swanctl.conf; [`Charon::list_sas`]
//! parses `swanctl --list-sas --raw` (the vici message as text) into [`IkeSa`]s.
//! [`NatBox`] puts a masquerading namespace between side A and side B.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use super::{Lab, Side, cmd, describe, output, run_ok, tail, terminate, wait_for};

pub const CHARON: &str = "/usr/lib/ipsec/charon";
/// `aesni` before `aes` and `gcm`, or ESP falls back to portable C AES-GCM (see ENVIRONMENT.md).
/// kernel-libipsec is off by default and must be named.
pub const PLUGINS: &str = "random nonce aesni aes sha1 sha2 hmac gcm pem pkcs1 x509 pubkey gmp \
                           kdf openssl kernel-libipsec kernel-netlink socket-default vici updown";

/// The mode a child SA asks for (the responder supports tunnel mode only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Tunnel,
    Transport,
}

/// One swanctl connection with a single child of the same name, and its PSK.
#[derive(Clone, Debug)]
pub struct SwanConn {
    pub name: String,
    /// `local_addrs`; `%any` is allowed.
    pub local_addr: String,
    pub remote_addr: String,
    /// The port the first IKE message goes to: 500, or 4500.
    pub remote_port: u16,
    /// The port it comes from. strongSwan 5.9 prepends the non-ESP marker only when sending
    /// from its NAT-T port: to 4500 from 500 it sends a bare IKE header, which an RFC 3948
    /// receiver must take for ESP. So with `remote_port = 4500` set this to 4500 too.
    pub local_port: u16,
    /// swanctl ID syntax: `ipsec@x.y` (RFC822), `@x.y` (FQDN), `keyid:x` (KEY_ID), `192.0.2.1`.
    pub local_id: String,
    /// `%any` accepts whatever the peer sends as IDr.
    pub remote_id: String,
    pub psk: String,
    /// e.g. `aes256gcm16-prfsha384-ecp384`
    pub ike_proposals: String,
    /// e.g. `aes256gcm16` or `aes128-sha1-modp2048` (a DH group: PFS on rekeys)
    pub esp_proposals: String,
    pub local_ts: Vec<String>,
    pub remote_ts: Vec<String>,
    /// Seconds; 0 disables (for both the IKE SA and the child).
    pub rekey_time: u32,
    /// Seconds; 0 disables DPD.
    pub dpd_delay: u32,
    /// `yes`, `no`, `accept` or `force`.
    pub fragmentation: &'static str,
    /// Force UDP encapsulation of ESP (libipsec does it anyway).
    pub encap: bool,
    pub mode: Mode,
    pub version: u8,
    /// Child `start_action`: `none`, `trap` or `start`.
    pub start_action: &'static str,
    /// Child `dpd_action` / `close_action`: `clear`, `trap`, `restart` (or `start`).
    pub dpd_action: &'static str,
}

impl SwanConn {
    /// A tunnel-mode IKEv2 connection with the harness defaults: port 500, no rekeying, no DPD,
    /// fragmentation on, responder ID `%any`.
    pub fn new(name: &str, local_addr: &str, remote_addr: &str, local_id: &str, psk: &str) -> Self {
        SwanConn {
            name: name.to_string(),
            local_addr: local_addr.to_string(),
            remote_addr: remote_addr.to_string(),
            remote_port: 500,
            local_port: 500,
            local_id: local_id.to_string(),
            remote_id: "%any".to_string(),
            psk: psk.to_string(),
            ike_proposals: "aes256gcm16-prfsha384-ecp384".to_string(),
            esp_proposals: "aes256gcm16".to_string(),
            local_ts: vec!["dynamic".to_string()],
            remote_ts: vec!["dynamic".to_string()],
            rekey_time: 0,
            dpd_delay: 0,
            fragmentation: "yes",
            encap: false,
            mode: Mode::Tunnel,
            version: 2,
            start_action: "none",
            dpd_action: "clear",
        }
    }

    /// The `connections { … }` body entry.
    fn render_conn(&self, y: &mut String) {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        let _ = writeln!(y, "    {} {{", self.name);
        let _ = writeln!(y, "        version = {}", self.version);
        let _ = writeln!(y, "        local_addrs = {}", self.local_addr);
        let _ = writeln!(y, "        remote_addrs = {}", self.remote_addr);
        let _ = writeln!(y, "        remote_port = {}", self.remote_port);
        let _ = writeln!(y, "        local_port = {}", self.local_port);
        let _ = writeln!(y, "        encap = {}", yes_no(self.encap));
        let _ = writeln!(y, "        proposals = {}", self.ike_proposals);
        let _ = writeln!(y, "        fragmentation = {}", self.fragmentation);
        let _ = writeln!(y, "        rekey_time = {}s", self.rekey_time);
        let _ = writeln!(y, "        dpd_delay = {}s", self.dpd_delay);
        let _ = writeln!(y, "        mobike = no");
        let _ = writeln!(y, "        keyingtries = 1");
        let _ = writeln!(y, "        local {{");
        let _ = writeln!(y, "            auth = psk");
        let _ = writeln!(y, "            id = {}", self.local_id);
        let _ = writeln!(y, "        }}");
        let _ = writeln!(y, "        remote {{");
        let _ = writeln!(y, "            auth = psk");
        let _ = writeln!(y, "            id = {}", self.remote_id);
        let _ = writeln!(y, "        }}");
        let _ = writeln!(y, "        children {{");
        let _ = writeln!(y, "            {} {{", self.name);
        let _ = writeln!(
            y,
            "                mode = {}",
            match self.mode {
                Mode::Tunnel => "tunnel",
                Mode::Transport => "transport",
            }
        );
        let _ = writeln!(y, "                local_ts = {}", self.local_ts.join(","));
        let _ = writeln!(
            y,
            "                remote_ts = {}",
            self.remote_ts.join(",")
        );
        let _ = writeln!(y, "                esp_proposals = {}", self.esp_proposals);
        let _ = writeln!(y, "                rekey_time = {}s", self.rekey_time);
        let _ = writeln!(y, "                start_action = {}", self.start_action);
        let _ = writeln!(y, "                dpd_action = {}", self.dpd_action);
        let _ = writeln!(y, "                close_action = {}", self.dpd_action);
        let _ = writeln!(y, "            }}");
        let _ = writeln!(y, "        }}");
        let _ = writeln!(y, "    }}");
    }

    /// The `secrets { … }` body entry: `ike-<name>` so a reload replaces it.
    fn render_secret(&self, y: &mut String) {
        let _ = writeln!(y, "    ike-{} {{", self.name);
        let _ = writeln!(y, "        id-local = {}", self.local_id);
        if self.remote_id != "%any" {
            let _ = writeln!(y, "        id-remote = {}", self.remote_id);
        }
        // Quoted: swanctl takes the bytes between the quotes as the key.
        let _ = writeln!(y, "        secret = \"{}\"", self.psk);
        let _ = writeln!(y, "    }}");
    }
}

/// swanctl.conf for a set of connections.
pub fn render_swanctl(conns: &[SwanConn]) -> String {
    let mut y = String::from("connections {\n");
    for c in conns {
        c.render_conn(&mut y);
    }
    y.push_str("}\nsecrets {\n");
    for c in conns {
        c.render_secret(&mut y);
    }
    y.push_str("}\n");
    y
}

/// Daemon-wide settings (strongswan.conf).
#[derive(Clone, Debug)]
pub struct CharonOptions {
    /// `charon.fragment_size`: IKE messages larger than this are fragmented (RFC 7383).
    pub fragment_size: Option<u32>,
    /// Short, so that a peer that never answers fails a test in seconds, not minutes:
    /// timeouts are `timeout * 1.8^n` for n = 0..tries.
    pub retransmit_tries: u32,
    pub retransmit_timeout: f32,
}

impl Default for CharonOptions {
    fn default() -> Self {
        CharonOptions {
            fragment_size: None,
            retransmit_tries: 3,
            retransmit_timeout: 2.0,
        }
    }
}

fn strongswan_conf(dir: &Path, o: &CharonOptions) -> String {
    let d = dir.display();
    let mut y = String::new();
    let _ = writeln!(y, "charon {{");
    let _ = writeln!(y, "    load = {PLUGINS}");
    let _ = writeln!(y, "    install_routes = yes");
    let _ = writeln!(y, "    install_virtual_ip = no");
    let _ = writeln!(y, "    port = 500");
    let _ = writeln!(y, "    port_nat_t = 4500");
    let _ = writeln!(y, "    retransmit_tries = {}", o.retransmit_tries);
    let _ = writeln!(y, "    retransmit_timeout = {}", o.retransmit_timeout);
    // A child refused in IKE_AUTH must not leave a childless IKE SA behind: the refusal tests
    // check the responder holds no SA afterwards.
    let _ = writeln!(y, "    close_ike_on_child_failure = yes");
    if let Some(size) = o.fragment_size {
        let _ = writeln!(y, "    fragment_size = {size}");
    }
    let _ = writeln!(y, "    filelog {{");
    let _ = writeln!(y, "        charon {{");
    let _ = writeln!(y, "            path = {d}/charon.log");
    let _ = writeln!(y, "            time_format = %T");
    let _ = writeln!(y, "            flush_line = yes");
    let _ = writeln!(y, "            default = 1");
    let _ = writeln!(y, "            ike = 2");
    let _ = writeln!(y, "            cfg = 2");
    let _ = writeln!(y, "            knl = 2");
    let _ = writeln!(y, "            enc = 1");
    let _ = writeln!(y, "        }}");
    let _ = writeln!(y, "    }}");
    let _ = writeln!(y, "    plugins {{");
    let _ = writeln!(y, "        vici {{");
    let _ = writeln!(y, "            socket = unix://{d}/charon.vici");
    let _ = writeln!(y, "        }}");
    let _ = writeln!(y, "    }}");
    let _ = writeln!(y, "}}");
    y
}

/// A running charon in one namespace of a lab. Dropping it stops charon.
pub struct Charon {
    pub label: String,
    pub ns: String,
    pub dir: PathBuf,
    options: CharonOptions,
    child: Option<Child>,
    conns: Vec<SwanConn>,
}

/// What `swanctl --initiate` said.
#[derive(Debug)]
pub struct Initiated {
    pub ok: bool,
    pub output: String,
}

impl Charon {
    /// Starts charon in `side`'s namespace with its files in `<lab dir>/charon-<label>/`, and
    /// waits for its vici socket.
    pub fn start(lab: &Lab, side: Side, label: &str, options: CharonOptions) -> Charon {
        Charon::start_in(&lab.node(side).ns, &lab.dir, label, options)
    }

    /// [`Charon::start`] in any namespace, with its files in `<parent>/charon-<label>/`.
    pub fn start_in(ns: &str, parent: &Path, label: &str, options: CharonOptions) -> Charon {
        let dir = parent.join(format!("charon-{label}"));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut charon = Charon {
            label: label.to_string(),
            ns: ns.to_string(),
            dir,
            options,
            child: None,
            conns: Vec::new(),
        };
        charon.launch();
        charon
    }

    fn vici(&self) -> PathBuf {
        self.dir.join("charon.vici")
    }

    pub fn uri(&self) -> String {
        format!("unix://{}", self.vici().display())
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("charon.log")
    }

    fn launch(&mut self) {
        let conf = self.dir.join("strongswan.conf");
        fs::write(&conf, strongswan_conf(&self.dir, &self.options))
            .unwrap_or_else(|e| panic!("{}: {e}", conf.display()));
        let _ = fs::remove_file(self.vici());
        let out_path = self.dir.join("charon.out");
        let out = File::create(&out_path).unwrap_or_else(|e| panic!("{}: {e}", out_path.display()));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("{}: {e}", out_path.display()));
        let mut c = cmd(
            "ip",
            &[
                "netns",
                "exec",
                &self.ns,
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                "mount -t tmpfs tmpfs /run && mkdir -p /run/strongswan && exec \"$0\"",
                CHARON,
            ],
        );
        c.env("STRONGSWAN_CONF", &conf)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // ip netns exec, unshare and sh all exec: the child's pid ends up being charon's.
        let child = c
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", describe(&c)));
        self.child = Some(child);
        let vici = self.vici();
        let up = wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
            vici.exists().then_some(())
        });
        assert!(
            up.is_some(),
            "charon {} did not open {} within 10 s:\n{}\n{}",
            self.label,
            vici.display(),
            tail(&out_path, 3000),
            self.log()
        );
    }

    /// Stops charon (SIGTERM, SIGKILL after 3 s).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(3));
        }
    }

    /// Stops charon (SIGTERM: it deletes its SAs on the way out, or SIGKILL with `crash`: the
    /// peer hears nothing), starts it again and loads the connections loaded last.
    pub fn restart(&mut self, crash: bool) {
        if let Some(child) = self.child.as_mut().filter(|_| crash) {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.stop();
        self.launch();
        let conns = std::mem::take(&mut self.conns);
        self.load(&conns);
    }

    /// `swanctl` with this charon's vici socket.
    pub fn swanctl(&self, args: &[&str]) -> std::process::Output {
        let uri = self.uri();
        let mut c = cmd("swanctl", args);
        c.args(["--uri", &uri]);
        output(&mut c)
    }

    /// Writes swanctl.conf with these connections (replacing what was loaded) and loads it.
    pub fn load(&mut self, conns: &[SwanConn]) {
        let file = self.dir.join("swanctl.conf");
        fs::write(&file, render_swanctl(conns))
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let file_arg = file.to_string_lossy().into_owned();
        let uri = self.uri();
        run_ok(&mut cmd(
            "swanctl",
            &[
                "--load-all",
                "--noprompt",
                "--clear",
                "--file",
                &file_arg,
                "--uri",
                &uri,
            ],
        ));
        self.conns = conns.to_vec();
    }

    /// The connections loaded last.
    pub fn conns(&self) -> &[SwanConn] {
        &self.conns
    }

    /// `swanctl --initiate --child NAME`: blocks until the CHILD_SA is up or failed.
    pub fn initiate(&self, child: &str) -> Initiated {
        let out = self.swanctl(&["--initiate", "--child", child, "--timeout", "30"]);
        Initiated {
            ok: out.status.success(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    pub fn terminate_ike(&self, name: &str) {
        let _ = self.swanctl(&["--terminate", "--ike", name, "--timeout", "10"]);
    }

    pub fn rekey_child(&self, name: &str) -> bool {
        self.swanctl(&["--rekey", "--child", name]).status.success()
    }

    pub fn rekey_ike(&self, name: &str) -> bool {
        self.swanctl(&["--rekey", "--ike", name]).status.success()
    }

    pub fn list_sas(&self) -> Vec<IkeSa> {
        let out = self.swanctl(&["--list-sas", "--raw"]);
        parse_list_sas(&String::from_utf8_lossy(&out.stdout))
    }

    /// The first IKE SA named `name` that is ESTABLISHED with a child INSTALLED.
    pub fn established(&self, name: &str) -> Option<IkeSa> {
        self.list_sas()
            .into_iter()
            .find(|sa| sa.name == name && sa.state == "ESTABLISHED" && sa.installed().is_some())
    }

    pub fn wait_established(&self, name: &str, timeout: Duration) -> Option<IkeSa> {
        wait_for(timeout, Duration::from_millis(100), || {
            self.established(name)
        })
    }

    /// The tail of charon's log.
    pub fn log(&self) -> String {
        format!(
            "\n--- charon {} log ---\n{}",
            self.label,
            tail(&self.log_path(), 8000)
        )
    }

    /// The whole log (for searching notify names).
    pub fn full_log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Charon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log());
        }
        self.stop();
    }
}

/// One parsed element of a vici message.
#[derive(Clone, Debug, PartialEq)]
pub enum Vici {
    Value(String),
    List(Vec<String>),
    Section(Vec<(String, Vici)>),
}

#[derive(Debug, PartialEq)]
enum Tok {
    Word(String),
    Open,
    Close,
    ListOpen,
    ListClose,
}

fn tokenize(text: &str) -> Vec<Tok> {
    let mut toks = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, toks: &mut Vec<Tok>| {
        if !word.is_empty() {
            toks.push(Tok::Word(std::mem::take(word)));
        }
    };
    for c in text.chars() {
        let t = match c {
            '{' => Some(Tok::Open),
            '}' => Some(Tok::Close),
            '[' => Some(Tok::ListOpen),
            ']' => Some(Tok::ListClose),
            c if c.is_whitespace() => {
                flush(&mut word, &mut toks);
                None
            }
            c => {
                word.push(c);
                None
            }
        };
        if let Some(t) = t {
            flush(&mut word, &mut toks);
            toks.push(t);
        }
    }
    flush(&mut word, &mut toks);
    toks
}

/// `name {…}`, `key=value` and `key=[a b]` items up to the matching `}` (or the end).
fn parse_items(toks: &[Tok], i: &mut usize) -> Vec<(String, Vici)> {
    let mut items = Vec::new();
    while let Some(t) = toks.get(*i) {
        *i += 1;
        match t {
            Tok::Close => break,
            Tok::Word(w) => match w.split_once('=') {
                Some((k, "")) if toks.get(*i) == Some(&Tok::ListOpen) => {
                    *i += 1;
                    let mut list = Vec::new();
                    while let Some(Tok::Word(v)) = toks.get(*i) {
                        list.push(v.clone());
                        *i += 1;
                    }
                    // The closing `]`.
                    *i += 1;
                    items.push((k.to_string(), Vici::List(list)));
                }
                Some((k, v)) => items.push((k.to_string(), Vici::Value(v.to_string()))),
                None if toks.get(*i) == Some(&Tok::Open) => {
                    *i += 1;
                    let body = parse_items(toks, i);
                    items.push((w.clone(), Vici::Section(body)));
                }
                // A bare word (swanctl's `list-sa` before `event {`).
                None => {}
            },
            Tok::Open | Tok::ListOpen | Tok::ListClose => {}
        }
    }
    items
}

/// Parses vici raw text (`swanctl --raw`) into its top-level items.
pub fn parse_vici(text: &str) -> Vec<(String, Vici)> {
    let toks = tokenize(text);
    let mut i = 0;
    let mut all = Vec::new();
    while i < toks.len() {
        all.extend(parse_items(&toks, &mut i));
    }
    all
}

fn value<'a>(items: &'a [(String, Vici)], key: &str) -> Option<&'a str> {
    items.iter().find_map(|(k, v)| match v {
        Vici::Value(s) if k == key => Some(s.as_str()),
        _ => None,
    })
}

fn list(items: &[(String, Vici)], key: &str) -> Vec<String> {
    items
        .iter()
        .find_map(|(k, v)| match v {
            Vici::List(l) if k == key => Some(l.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn section<'a>(items: &'a [(String, Vici)], key: &str) -> &'a [(String, Vici)] {
    items
        .iter()
        .find_map(|(k, v)| match v {
            Vici::Section(s) if k == key => Some(s.as_slice()),
            _ => None,
        })
        .unwrap_or(&[])
}

fn text(items: &[(String, Vici)], key: &str) -> String {
    value(items, key).unwrap_or_default().to_string()
}

fn number<T: std::str::FromStr>(items: &[(String, Vici)], key: &str) -> Option<T> {
    value(items, key)?.parse().ok()
}

/// Negotiated algorithms as strongSwan names them (`AES_GCM_16`, `HMAC_SHA2_256_128`,
/// `PRF_HMAC_SHA2_384`, `ECP_384`); `None` where a field is absent (GCM has no integrity).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Algs {
    pub encr: String,
    pub keysize: Option<u32>,
    pub integ: Option<String>,
    pub prf: Option<String>,
    pub dh: Option<String>,
}

fn algs(items: &[(String, Vici)]) -> Algs {
    Algs {
        encr: text(items, "encr-alg"),
        keysize: number(items, "encr-keysize"),
        integ: value(items, "integ-alg").map(str::to_string),
        prf: value(items, "prf-alg").map(str::to_string),
        dh: value(items, "dh-group").map(str::to_string),
    }
}

/// What swanctl's algorithm keywords negotiate to, in [`Algs`] terms: the expectation of a test
/// that proposed exactly `proposal` (one proposal, e.g. `aes256-sha256-prfsha256-modp2048`).
/// `None` for the PRF when the proposal names none. Panics on a keyword it does not know.
pub fn expected_algs(proposal: &str) -> Algs {
    let mut a = Algs::default();
    for word in proposal.split('-') {
        let (encr, keysize) = match word {
            "aes128gcm16" => ("AES_GCM_16", Some(128)),
            "aes256gcm16" => ("AES_GCM_16", Some(256)),
            "aes128" => ("AES_CBC", Some(128)),
            "aes256" => ("AES_CBC", Some(256)),
            "3des" => ("3DES_CBC", None),
            "null" => ("NULL", None),
            _ => ("", None),
        };
        if !encr.is_empty() {
            a.encr = encr.to_string();
            a.keysize = keysize;
            continue;
        }
        let set = |slot: &mut Option<String>, v: &str| *slot = Some(v.to_string());
        match word {
            "sha1" => set(&mut a.integ, "HMAC_SHA1_96"),
            "sha256" => set(&mut a.integ, "HMAC_SHA2_256_128"),
            "prfsha256" => set(&mut a.prf, "PRF_HMAC_SHA2_256"),
            "prfsha384" => set(&mut a.prf, "PRF_HMAC_SHA2_384"),
            "prfsha512" => set(&mut a.prf, "PRF_HMAC_SHA2_512"),
            "ecp384" => set(&mut a.dh, "ECP_384"),
            "modp2048" => set(&mut a.dh, "MODP_2048"),
            "modp1536" => set(&mut a.dh, "MODP_1536"),
            "esn" | "noesn" => {}
            other => panic!("expected_algs: unknown keyword {other:?} in {proposal:?}"),
        }
    }
    a
}

#[derive(Clone, Debug)]
pub struct ChildSa {
    pub name: String,
    pub state: String,
    /// `TUNNEL` or `TRANSPORT`.
    pub mode: String,
    pub protocol: String,
    pub encap: bool,
    /// Hex as swanctl prints it (`c1a2b3c4`).
    pub spi_in: String,
    pub spi_out: String,
    pub algs: Algs,
    pub local_ts: Vec<String>,
    pub remote_ts: Vec<String>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub packets_in: u64,
    pub packets_out: u64,
}

#[derive(Clone, Debug)]
pub struct IkeSa {
    pub name: String,
    pub state: String,
    pub local_host: String,
    pub local_port: u16,
    pub remote_host: String,
    pub remote_port: u16,
    pub local_id: String,
    pub remote_id: String,
    pub initiator_spi: String,
    pub responder_spi: String,
    pub algs: Algs,
    pub nat_local: bool,
    pub nat_remote: bool,
    pub children: Vec<ChildSa>,
}

impl IkeSa {
    /// The first INSTALLED child.
    pub fn installed(&self) -> Option<&ChildSa> {
        self.children.iter().find(|c| c.state == "INSTALLED")
    }
}

/// Parses `swanctl --list-sas --raw`: one `list-sa event {NAME {…}}` line per IKE SA.
pub fn parse_list_sas(raw: &str) -> Vec<IkeSa> {
    let yes = |items: &[(String, Vici)], k: &str| value(items, k) == Some("yes");
    parse_vici(raw)
        .into_iter()
        .filter(|(k, _)| k == "event")
        .filter_map(|(_, v)| match v {
            Vici::Section(s) => Some(s),
            _ => None,
        })
        .flatten()
        .filter_map(|(name, v)| match v {
            Vici::Section(f) => Some((name, f)),
            _ => None,
        })
        .map(|(name, f)| IkeSa {
            name,
            state: text(&f, "state"),
            local_host: text(&f, "local-host"),
            local_port: number(&f, "local-port").unwrap_or(0),
            remote_host: text(&f, "remote-host"),
            remote_port: number(&f, "remote-port").unwrap_or(0),
            local_id: text(&f, "local-id"),
            remote_id: text(&f, "remote-id"),
            initiator_spi: text(&f, "initiator-spi"),
            responder_spi: text(&f, "responder-spi"),
            algs: algs(&f),
            nat_local: yes(&f, "nat-local"),
            nat_remote: yes(&f, "nat-remote"),
            children: section(&f, "child-sas")
                .iter()
                .filter_map(|(_, v)| match v {
                    Vici::Section(c) => Some(ChildSa {
                        name: text(c, "name"),
                        state: text(c, "state"),
                        mode: text(c, "mode"),
                        protocol: text(c, "protocol"),
                        encap: yes(c, "encap"),
                        spi_in: text(c, "spi-in"),
                        spi_out: text(c, "spi-out"),
                        algs: algs(c),
                        local_ts: list(c, "local-ts"),
                        remote_ts: list(c, "remote-ts"),
                        bytes_in: number(c, "bytes-in").unwrap_or(0),
                        bytes_out: number(c, "bytes-out").unwrap_or(0),
                        packets_in: number(c, "packets-in").unwrap_or(0),
                        packets_out: number(c, "packets-out").unwrap_or(0),
                    }),
                    _ => None,
                })
                .collect(),
        })
        .collect()
}

/// A masquerading router namespace between side A and side B:
/// `A (192.0.2.2/24) — NAT (192.0.2.1/24 | 203.0.113.1/24) — B (203.0.113.2/24)`.
/// A's end of the lab veth moves into the NAT namespace, so B still sees its peer as
/// 203.0.113.1 — with UDP source ports rewritten into 20000-29999, as a real NAT would.
/// Dropping it deletes the namespace (and with it both veths).
pub struct NatBox {
    pub ns: String,
    /// A's new outer address (behind the NAT).
    pub inside: Ipv4Addr,
}

impl NatBox {
    pub fn insert(lab: &Lab) -> NatBox {
        let a = lab.node(Side::A);
        let ns = format!("{}n", lab.name);
        let (veth_a, veth_n) = (format!("{}na", lab.name), format!("{}nn", lab.name));
        run_ok(&mut cmd("ip", &["netns", "add", &ns]));
        let nat = NatBox {
            ns: ns.clone(),
            inside: Ipv4Addr::new(192, 0, 2, 2),
        };
        let ip = |args: &[&str]| run_ok(&mut cmd("ip", args));
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        // Moving an interface drops its addresses.
        ip(&["-n", &a.ns, "link", "set", &a.veth, "netns", &ns]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/24", a.outer),
            "dev",
            &a.veth,
        ]);
        ip(&["-n", &ns, "link", "set", &a.veth, "up"]);
        ip(&[
            "link", "add", &veth_a, "netns", &a.ns, "type", "veth", "peer", "name", &veth_n,
            "netns", &ns,
        ]);
        ip(&["-n", &a.ns, "addr", "add", "192.0.2.2/24", "dev", &veth_a]);
        ip(&["-n", &ns, "addr", "add", "192.0.2.1/24", "dev", &veth_n]);
        ip(&["-n", &a.ns, "link", "set", &veth_a, "up"]);
        ip(&["-n", &ns, "link", "set", &veth_n, "up"]);
        ip(&["-n", &a.ns, "route", "add", "default", "via", "192.0.2.1"]);
        let in_nat = |args: &[&str]| {
            let mut c = cmd("ip", &["netns", "exec", &ns]);
            c.args(args);
            run_ok(&mut c)
        };
        in_nat(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        in_nat(&[
            "iptables",
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            &a.veth,
            "-p",
            "udp",
            "-j",
            "MASQUERADE",
            "--to-ports",
            "20000-29999",
        ]);
        in_nat(&[
            "iptables",
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            &a.veth,
            "-j",
            "MASQUERADE",
        ]);
        nat
    }
}

impl Drop for NatBox {
    fn drop(&mut self) {
        let _ = output(&mut cmd("ip", &["netns", "del", &self.ns]));
    }
}
