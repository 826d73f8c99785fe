//! `ike-load`: drives the sans-IO IKEv2 core (`ike::core::Endpoint`) as an initiator against a
//! responder, from many source addresses, for benchmarks and flood tests. The addresses must
//! exist on an interface of the network namespace it runs in.
//!
//! - Handshake mode (default): opens `--count` IKE SAs (IKE_SA_INIT + IKE_AUTH with one Child
//!   SA), one at a time per source address, started at `--rate` per second, and reports JSON:
//!   established, failed by reason, elapsed time, handshakes/s, handshake latency p50/p99.
//!   Each source has a UDP socket on its address port 500 and one on 4500 (NAT traversal
//!   moves IKE there, RFC 7296 §2.23), so responders see ordinary peers. INITIAL_CONTACT is not
//!   sent (all SAs share one ID; §2.4 would make the responder drop the others).
//! - `--flood`: only IKE_SA_INIT requests (distinct SPIi, valid proposals and KE) at `--rate`,
//!   `--burst` in a row from each source; COOKIE answers are answered when
//!   `--answer-cookies` is given (the core resends the request with the cookie), never a full
//!   answer: no IKE_AUTH follows. Reports what came back.
//!
//! Each source has its own endpoint (the core keeps its SAs by SPI) on a tokio task.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use ike::core::{Config, Endpoint, Event, Identification, Limits, Output, Path, Proposals};
use ike::crypto::{EncrAlg, Group, PrfAlg, Secret};
use ike::wire::{IdType, TransformId};
use ring::rand::SystemRandom;
use serde_json::json;

/// RFC 3948 §2.2: IKE on port 4500 starts with four zero bytes.
const NON_ESP_MARKER: [u8; 4] = [0; 4];

#[derive(Parser, Debug, Clone)]
#[command(about = "IKEv2 load generator on the MagicTunnel IKE core")]
struct Args {
    /// The responder's address (UDP 500).
    #[arg(long)]
    target: Ipv4Addr,
    /// First source address; the others follow it (`--sources` in all).
    #[arg(long)]
    source_base: Ipv4Addr,
    #[arg(long, default_value_t = 1)]
    sources: u32,
    /// Handshakes (or, with --flood, IKE_SA_INIT requests) in all.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Starts per second; 0: as fast as the sources go.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// The pre-shared key, in a file (never on the command line).
    #[arg(long)]
    psk_file: Option<PathBuf>,
    /// Our ID: `@fqdn`, or an IPv4 address.
    #[arg(long, default_value = "@load.ipsec.example")]
    id: String,
    /// The responder's ID (same syntax); default: the target address.
    #[arg(long)]
    peer_id: Option<String>,
    /// DH group: ecp384, modp2048 or modp1536 (IKE AES-GCM-16-256, PRF-HMAC-SHA2-384, ESP
    /// AES-GCM-16-256).
    #[arg(long, default_value = "ecp384")]
    group: String,
    /// Traffic selectors we propose (ours, the responder's).
    #[arg(long, default_value = "0.0.0.0/0")]
    local_ts: String,
    #[arg(long, default_value = "0.0.0.0/0")]
    remote_ts: String,
    /// Give up on one handshake after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Keep the SAs this many seconds after the last handshake (answering the responder),
    /// then delete them.
    #[arg(long, default_value_t = 0.0)]
    hold: f64,
    /// Local UDP port of the IKE socket of each source (500; 0 for any).
    #[arg(long, default_value_t = 500)]
    port: u16,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Only IKE_SA_INIT requests (see the module docs).
    #[arg(long)]
    flood: bool,
    /// --flood: answer COOKIE requests (RFC 7296 §2.6).
    #[arg(long)]
    answer_cookies: bool,
    /// --flood: requests in a row from one source before the next.
    #[arg(long, default_value_t = 1)]
    burst: u32,
    /// --flood: seconds to wait for answers after the last request.
    #[arg(long, default_value_t = 2.0)]
    linger: f64,
}

fn identification(s: &str) -> Result<Identification> {
    if let Some(fqdn) = s.strip_prefix('@') {
        return Ok(Identification {
            id_type: IdType::ID_FQDN,
            data: fqdn.as_bytes().to_vec(),
        });
    }
    let a: Ipv4Addr = s
        .parse()
        .map_err(|_| anyhow!("ID {s:?}: want @fqdn or an IPv4 address"))?;
    Ok(ike::core::ipv4_id(a))
}

fn selector(s: &str) -> Result<ike::core::TrafficSelector> {
    let net: ipnet::Ipv4Net = s.parse().with_context(|| format!("selector {s:?}"))?;
    Ok(ike::core::TrafficSelector::Range {
        ip_protocol: 0,
        start_port: 0,
        end_port: 65535,
        start: net.network().into(),
        end: net.broadcast().into(),
    })
}

fn core_config(a: &Args) -> Result<Config> {
    let group = match a.group.as_str() {
        "ecp384" => Group::Ecp384,
        "modp2048" => Group::Modp2048,
        "modp1536" => Group::Modp1536,
        g => bail!("--group {g}: want ecp384, modp2048 or modp1536"),
    };
    let peer = match &a.peer_id {
        Some(p) => identification(p)?,
        None => ike::core::ipv4_id(a.target),
    };
    let mut c = Config::new(identification(&a.id)?, vec![peer]);
    c.proposals = Proposals {
        ike_encr: vec![EncrAlg::AesGcm16 { key_bits: 256 }],
        ike_integ: vec![],
        ike_prf: vec![PrfAlg::HmacSha384],
        ike_dh: vec![group],
        esp_encr: vec![(TransformId::ENCR_AES_GCM_16, Some(256))],
        esp_integ: vec![],
        pfs: vec![],
        pfs_initiate: None,
    };
    c.local_ts = vec![selector(&a.local_ts)?];
    c.remote_ts = vec![selector(&a.remote_ts)?];
    c.initial_contact = false;
    // The load never asks for liveness itself (it answers the responder's checks).
    c.dpd_interval = Duration::from_secs(24 * 3600);
    Ok(c)
}

/// Everything the tasks report, merged.
#[derive(Default)]
struct Tally {
    established: u64,
    failed: BTreeMap<String, u64>,
    latencies: Vec<Duration>,
    first_start: Option<Instant>,
    last_done: Option<Instant>,
    /// Flood: answers by kind.
    answers: BTreeMap<&'static str, u64>,
    sent: u64,
}

impl Tally {
    fn merge(&mut self, o: Tally) {
        self.established += o.established;
        for (k, v) in o.failed {
            *self.failed.entry(k).or_default() += v;
        }
        self.latencies.extend(o.latencies);
        self.first_start = [self.first_start, o.first_start]
            .into_iter()
            .flatten()
            .min();
        self.last_done = [self.last_done, o.last_done].into_iter().flatten().max();
        for (k, v) in o.answers {
            *self.answers.entry(k).or_default() += v;
        }
        self.sent += o.sent;
    }
}

struct Source {
    addr: Ipv4Addr,
    socks: Socks,
    endpoint: Endpoint,
    rng: SystemRandom,
}

/// A source's sockets (apart from its endpoint, which is not `Sync`).
struct Socks {
    addr: Ipv4Addr,
    s500: tokio::net::UdpSocket,
    s4500: Option<tokio::net::UdpSocket>,
}

fn bind(addr: Ipv4Addr, port: u16) -> Result<tokio::net::UdpSocket> {
    let s = std::net::UdpSocket::bind(SocketAddrV4::new(addr, port)).with_context(|| {
        format!("binding {addr}:{port} (is the address on an interface? ulimit -n?)")
    })?;
    s.set_nonblocking(true)?;
    Ok(tokio::net::UdpSocket::from_std(s)?)
}

impl Source {
    fn path(&self, target: Ipv4Addr) -> Path {
        Path {
            local: SocketAddr::from((self.addr, 500)),
            remote: SocketAddr::from((target, 500)),
        }
    }

    fn send(&self, out: &mut Vec<Output>) -> Vec<Output> {
        self.socks.send(out)
    }

    /// Waits for one datagram (handled) or until `wake` (timers run).
    async fn step(
        &mut self,
        wake: Instant,
        buf: &mut [u8],
        buf2: &mut [u8],
        out: &mut Vec<Output>,
    ) {
        tokio::select! {
            r = self.socks.recv(buf, buf2) => {
                if let Some((port, from, msg)) = r {
                    self.handle(port, from, &msg, out);
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                self.endpoint.poll(Instant::now(), &self.rng, out);
            }
        }
    }

    fn handle(&mut self, port: u16, from: SocketAddr, msg: &[u8], out: &mut Vec<Output>) {
        let path = Path {
            local: SocketAddr::from((self.addr, port)),
            remote: from,
        };
        self.endpoint
            .handle(Instant::now(), path, msg, &self.rng, out);
    }
}

impl Socks {
    /// Sends what the core asked to; returns the other outputs.
    fn send(&self, out: &mut Vec<Output>) -> Vec<Output> {
        let mut rest = Vec::new();
        for o in out.drain(..) {
            match o {
                Output::Send { path, bytes } => {
                    let r = if path.local.port() == 4500 {
                        let mut d = NON_ESP_MARKER.to_vec();
                        d.extend_from_slice(&bytes);
                        self.s4500.as_ref().map(|s| s.try_send_to(&d, path.remote))
                    } else {
                        Some(self.s500.try_send_to(&bytes, path.remote))
                    };
                    if let Some(Err(e)) = r {
                        eprintln!("{}: send to {}: {e}", self.addr, path.remote);
                    }
                }
                other => rest.push(other),
            }
        }
        rest
    }

    /// The next datagram from either socket, as the core's input.
    async fn recv(&self, buf: &mut [u8], buf2: &mut [u8]) -> Option<(u16, SocketAddr, Vec<u8>)> {
        let on4500 = async {
            match &self.s4500 {
                Some(s) => s.recv_from(buf2).await.ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = self.s500.recv_from(buf) => {
                let (n, from) = r.ok()?;
                Some((500, from, buf.get(..n)?.to_vec()))
            }
            r = on4500 => {
                let (n, from) = r?;
                // IKE behind the non-ESP marker; anything else (ESP, keepalives) is not ours.
                let d = buf2.get(..n)?.strip_prefix(&NON_ESP_MARKER)?;
                Some((4500, from, d.to_vec()))
            }
        }
    }
}

/// When every source is done with its handshakes (the hold counts from then).
struct Finish {
    remaining: std::sync::atomic::AtomicUsize,
    at: Mutex<Option<Instant>>,
}

impl Finish {
    fn done(&self) {
        use std::sync::atomic::Ordering;
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1
            && let Ok(mut at) = self.at.lock()
        {
            *at = Some(Instant::now());
        }
    }

    fn at(&self) -> Option<Instant> {
        self.at.lock().ok().and_then(|a| *a)
    }
}

/// One source's handshakes, one after the other, each started no earlier than its slot.
async fn handshakes(
    mut src: Source,
    a: Arc<Args>,
    starts: Vec<Instant>,
    finish: Arc<Finish>,
) -> Tally {
    let mut t = Tally::default();
    let (mut buf, mut buf2) = (vec![0u8; 65_535], vec![0u8; 65_535]);
    let mut out = Vec::new();
    let timeout = Duration::from_secs_f64(a.timeout);
    for start in starts {
        tokio::time::sleep_until(start.into()).await;
        let begun = Instant::now();
        t.first_start = Some(t.first_start.map_or(begun, |f| f.min(begun)));
        src.endpoint
            .initiate(begun, src.path(a.target), &src.rng, &mut out);
        let spi_i = out.iter().find_map(|o| match o {
            Output::Send { bytes, .. } => bytes.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()),
            _ => None,
        });
        let Some(spi_i) = spi_i.map(u64::from_be_bytes) else {
            *t.failed.entry("not_started".into()).or_default() += 1;
            out.clear();
            continue;
        };
        let (mut ike_up, mut child_up) = (false, false);
        let mut failure: Option<String> = None;
        let deadline = begun + timeout;
        loop {
            for o in src.send(&mut out) {
                match o {
                    Output::InstallChild(_) => child_up = true,
                    Output::Event(Event::IkeEstablished { spi_i: s, .. }) if s == spi_i => {
                        ike_up = true
                    }
                    Output::Event(Event::AuthFailed { .. }) => {
                        failure.get_or_insert("auth_failed".into());
                    }
                    Output::Event(Event::PeerError { notify, .. }) => {
                        failure.get_or_insert(format!(
                            "peer_error:{}",
                            notify.name().unwrap_or("other")
                        ));
                    }
                    Output::Event(Event::ChildFailed { notify }) => {
                        failure.get_or_insert(format!(
                            "child_failed:{}",
                            notify.name().unwrap_or("other")
                        ));
                    }
                    Output::Event(Event::NoProposalChosen { .. }) => {
                        failure.get_or_insert("no_proposal_chosen".into());
                    }
                    Output::Event(Event::IkeDeleted {
                        spi_i: s, reason, ..
                    }) if s == spi_i => {
                        failure.get_or_insert(reason.as_str().into());
                    }
                    _ => {}
                }
            }
            if ike_up && child_up {
                let done = Instant::now();
                t.established += 1;
                t.latencies.push(done - begun);
                t.last_done = Some(t.last_done.map_or(done, |l| l.max(done)));
                break;
            }
            // IkeEstablished and InstallChild come out of the same step: an SA up without its
            // Child SA has none.
            let alive = src.endpoint.status().iter().any(|s| s.spi_i == spi_i);
            let ended = match failure.take() {
                Some(reason) => Some(reason),
                None if ike_up => Some("no_child".to_string()),
                None if !alive => Some("gone".to_string()),
                None => None,
            };
            if let Some(reason) = ended {
                *t.failed.entry(reason).or_default() += 1;
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                *t.failed.entry("timeout".into()).or_default() += 1;
                break;
            }
            let wake = src
                .endpoint
                .next_timer()
                .map_or(deadline, |x| x.min(deadline));
            src.step(wake, &mut buf, &mut buf2, &mut out).await;
        }
    }
    // Keep the SAs (answer DPD etc.) until `hold` after the last source is done, then delete
    // them: meanwhile the responder holds every SA.
    finish.done();
    let hold = Duration::from_secs_f64(a.hold);
    loop {
        let now = Instant::now();
        if finish.at().is_some_and(|at| now >= at + hold) {
            break;
        }
        let check = now + Duration::from_millis(100);
        let wake = src.endpoint.next_timer().map_or(check, |x| x.min(check));
        src.step(wake, &mut buf, &mut buf2, &mut out).await;
        src.send(&mut out);
    }
    src.endpoint.close(Instant::now(), &src.rng, &mut out);
    src.send(&mut out);
    t
}

/// One source's share of a flood: its requests at their times (or as soon as it can when it
/// falls behind), then answers for `linger` seconds after the schedule's end or its own last
/// request, whichever is later.
async fn flood(mut src: Source, a: Arc<Args>, sends: Vec<Instant>, end: Instant) -> Tally {
    let mut t = Tally::default();
    let (mut buf, mut buf2) = (vec![0u8; 65_535], vec![0u8; 65_535]);
    let mut out = Vec::new();
    let mut next = sends.into_iter().peekable();
    let linger = Duration::from_secs_f64(a.linger);
    let mut end = end;
    loop {
        let wake = next.peek().copied().unwrap_or(end);
        if next.peek().is_none() && Instant::now() >= end {
            break;
        }
        tokio::select! {
            r = src.socks.recv(&mut buf, &mut buf2) => {
                let Some((port, from, msg)) = r else { continue };
                let Ok(parsed) = ike::wire::parse_message(&msg) else {
                    *t.answers.entry("malformed").or_default() += 1;
                    continue;
                };
                let cookie = parsed.payloads.iter().any(|p| matches!(
                    p, ike::wire::Payload::Notify(n) if n.kind == ike::wire::NotifyType::COOKIE));
                let full = parsed.payloads.iter().any(|p| matches!(p, ike::wire::Payload::Ke(_)));
                let kind = if cookie { "cookie" } else if full { "sa" } else { "other" };
                *t.answers.entry(kind).or_default() += 1;
                if cookie && a.answer_cookies {
                    // The core sends the same request again with the cookie first (§2.6).
                    src.handle(port, from, &msg, &mut out);
                    let resent = src.send(&mut out);
                    drop(resent);
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                if next.next().is_some() {
                    src.endpoint.initiate(Instant::now(), src.path(a.target), &src.rng, &mut out);
                    t.sent += 1;
                    let n = Instant::now();
                    t.first_start = Some(t.first_start.map_or(n, |f| f.min(n)));
                    t.last_done = Some(n);
                    end = end.max(n + linger);
                    src.send(&mut out);
                }
            }
        }
    }
    t
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted
        .get(i.min(sorted.len() - 1))
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

fn main() -> Result<()> {
    let a = Arc::new(Args::parse());
    if a.sources == 0 || a.count == 0 {
        bail!("--sources and --count must be at least 1");
    }
    let psk = match &a.psk_file {
        Some(p) => Secret::new(
            tunnel_pod::config::read_psk_file(p)
                .map_err(|e| anyhow!("{e}"))?
                .as_bytes()
                .to_vec(),
        ),
        None => bail!("--psk-file is required"),
    };
    let config = core_config(&a)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.threads.max(1))
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        let mut sources = Vec::new();
        for i in 0..a.sources {
            let addr = Ipv4Addr::from(u32::from(a.source_base).wrapping_add(i));
            let s500 = bind(addr, a.port)?;
            let s4500 = if a.flood || a.port == 0 {
                None
            } else {
                Some(bind(addr, 4500)?)
            };
            let endpoint =
                Endpoint::new(config.clone(), Box::new(ike::core::StaticPsk(psk.clone())))
                    .with_limits(Limits {
                        max_sas: usize::MAX,
                        ..Limits::default()
                    });
            sources.push(Source {
                addr,
                socks: Socks { addr, s500, s4500 },
                endpoint,
                rng: SystemRandom::new(),
            });
        }
        // Slot n starts at t0 + n / rate; in handshake mode slot n belongs to source
        // n mod sources, in flood mode to source (n / burst) mod sources.
        let t0 = Instant::now() + Duration::from_millis(100);
        let slot = |n: u32| {
            if a.rate > 0.0 {
                t0 + Duration::from_secs_f64(f64::from(n) / a.rate)
            } else {
                t0
            }
        };
        let mut plan: Vec<Vec<Instant>> = vec![Vec::new(); sources.len()];
        for n in 0..a.count {
            let owner = if a.flood { n / a.burst.max(1) } else { n } % a.sources;
            if let Some(p) = plan.get_mut(owner as usize) {
                p.push(slot(n));
            }
        }
        let end = slot(a.count) + Duration::from_secs_f64(a.linger);
        let tally = Arc::new(Mutex::new(Tally::default()));
        let finish = Arc::new(Finish {
            remaining: std::sync::atomic::AtomicUsize::new(sources.len()),
            at: Mutex::new(None),
        });
        let mut tasks = Vec::new();
        for (src, starts) in sources.into_iter().zip(plan) {
            let (a, tally, finish) = (a.clone(), tally.clone(), finish.clone());
            tasks.push(tokio::spawn(async move {
                let t = if a.flood {
                    flood(src, a, starts, end).await
                } else {
                    handshakes(src, a, starts, finish).await
                };
                if let Ok(mut all) = tally.lock() {
                    all.merge(t);
                }
            }));
        }
        for t in tasks {
            t.await?;
        }
        let t = std::mem::take(&mut *tally.lock().map_err(|_| anyhow!("poisoned"))?);
        anyhow::Ok(t)
    })?;
    let mut lat = report.latencies.clone();
    lat.sort();
    let elapsed = match (report.first_start, report.last_done) {
        (Some(f), Some(l)) => l.saturating_duration_since(f).as_secs_f64(),
        _ => 0.0,
    };
    let out = if a.flood {
        json!({
            "mode": "flood",
            "target": a.target.to_string(),
            "sources": a.sources,
            "sent": report.sent,
            "seconds": (elapsed * 1000.0).round() / 1000.0,
            "answers": report.answers,
            "answer_cookies": a.answer_cookies,
        })
    } else {
        json!({
            "mode": "handshake",
            "target": a.target.to_string(),
            "group": a.group,
            "sources": a.sources,
            "requested": a.count,
            "established": report.established,
            "failed": report.failed,
            "elapsed_s": (elapsed * 1000.0).round() / 1000.0,
            "handshakes_per_s": if elapsed > 0.0 { (report.established as f64 / elapsed * 10.0).round() / 10.0 } else { 0.0 },
            "latency_ms": {
                "p50": (percentile(&lat, 0.50) * 100.0).round() / 100.0,
                "p99": (percentile(&lat, 0.99) * 100.0).round() / 100.0,
                "max": (percentile(&lat, 1.0) * 100.0).round() / 100.0,
            },
        })
    };
    println!("{out}");
    Ok(())
}
