//! `tunnel-pod run`: sets the endpoint up, runs it until SIGTERM, and takes it down again.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::config::{HealthCheckDirection, TunnelConfig, TunnelType};
use crate::dataplane::Path;
use crate::encap::{Encap, Esp, TAILROOM};
use crate::esp::sa::{Age, Inbound, Outbound, StaticSa};
use crate::gre::{Gre, HEADROOM};
use crate::health::{self, ProbeSpec, Prober};
use crate::http::{self, Status};
use crate::io;
use crate::metrics::Metrics;
use crate::netlink::Netlink;
use crate::tun_queue::Tun;
use crate::wire::udp_encap::KEEPALIVE;

/// IKE (RFC 7296 §2) and NAT traversal (RFC 3948: ESP in UDP, IKE behind the non-ESP marker).
pub const IKE_PORT: u16 = 500;
pub const IKE_NATT_PORT: u16 = 4500;
/// IKE messages the data path may queue for the IKE task before it drops them (`ike_backlog`).
const IKE_QUEUE: usize = 256;
/// TUN queues (egress workers) unless `--queues` says otherwise.
pub const DEFAULT_QUEUES: usize = 1;

/// Knobs that are not part of the tunnel's definition.
#[derive(Debug, Clone)]
pub struct Options {
    /// TUN interface name; derived from the tunnel when absent.
    pub interface: Option<String>,
    /// Loss window of the degraded state (Magic WAN: 5 minutes).
    pub loss_window: Duration,
    /// TUN segmentation/checksum offload and receive coalescing (on unless benchmarking).
    pub offload: bool,
    /// ESP: UDP segmentation (GSO) on send and coalescing (GRO) on receive on the data socket.
    pub udp_offload: bool,
    /// TUN queues, one egress thread each (`--queues`, at least 1).
    pub queues: usize,
    /// GRE: send TSO bursts through an AF_PACKET TX ring where the link resolves
    /// (`--gre-tx packet`), else (the default) always through the raw socket.
    pub gre_tx_packet: bool,
    /// How many IKE SAs, half-open ones in all and per source address the IKE responder
    /// holds, and from how many half-open SAs on it asks for cookies (RFC 7296 §2.6).
    pub ike_limits: ike::core::Limits,
    /// Anycast replicas: this replica's index (`--replica`, < `replicas`).
    pub replica: u8,
    /// Sync mode: this replica's name in the SA Secret (the pod name).
    pub identity: Option<String>,
    /// Sync mode: the kubeconfig to reach the API with (default: in-cluster / KUBECONFIG).
    pub kubeconfig: Option<std::path::PathBuf>,
}

/// The TUN name: `mt` + the tunnel ID's first 13 hex digits (unique per tunnel on a node), or
/// the sanitised tunnel name when there is no ID. At most 15 bytes (IFNAMSIZ − 1).
pub fn interface_name(config: &TunnelConfig) -> String {
    let source = config.tunnel_id.as_deref().unwrap_or(&config.name);
    let clean: String = source
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .map(|c| c.to_ascii_lowercase())
        .take(13)
        .collect();
    format!("mt{clean}")
}

pub async fn run(config: TunnelConfig, options: Options) -> Result<()> {
    if options.replica >= config.replicas.max(1) {
        anyhow::bail!(
            "--replica {} is not below the tunnel's replicas ({})",
            options.replica,
            config.replicas
        );
    }
    let sync_mode = config.ipsec.as_ref().is_some_and(|i| i.sync.is_some());
    let sync = match config.ipsec.as_ref().and_then(|i| i.sync.as_ref()) {
        Some(s) => {
            let identity =
                options.identity.clone().filter(|i| !i.is_empty()).context(
                    "ipsec.sync needs this replica's identity: --identity NAME or POD_NAME",
                )?;
            let store = crate::sync::kube::SecretStore::connect(
                options.kubeconfig.as_deref(),
                &s.namespace,
                &s.secret,
            )
            .await?;
            tracing::info!(
                secret = %format!("{}/{}", s.namespace, s.secret), identity = %identity,
                replica = options.replica, replicas = config.replicas,
                "anycast replica: SAs shared through the SA Secret"
            );
            Some(crate::ikev2::sync::SyncSetup { store, identity })
        }
        None => None,
    };
    let static_sa = config.ipsec.as_ref().and_then(|i| i.static_sa.clone());
    let ike = config.tunnel_type == TunnelType::Ipsec && static_sa.is_none();
    // IKE learns the peer's address; GRE and static SAs need it configured.
    let customer = match (config.customer_endpoint, ike) {
        (Some(c), _) => Some(c),
        (None, true) => None,
        (None, false) => bail!("customerEndpoint: this tunnel needs the peer's address"),
    };
    let name = options
        .interface
        .clone()
        .unwrap_or_else(|| interface_name(&config));
    let metrics = Arc::new(Metrics::default());
    let status = Status::new(config.health_check.enabled);
    let status = Arc::new(if ike { status.with_ike() } else { status });
    let listen = config.http.listen;
    let app = http::router(status.clone(), metrics.clone());
    let server = tokio::spawn(async move { http::serve(listen, app).await });

    // IPsec tunnel-pods of a node share UDP 500/4500 on the endpoint (see `lobby`): the name
    // first, since a pod that does not hold it must not connect (its connected sockets would
    // take the traffic of the pod that does).
    let claim = ike.then(|| crate::ikev2::sockets::claim(config.local_endpoint, customer));
    let bound = claim.as_ref().is_none_or(|(state, _)| state.bound);
    let data_peer = customer
        .filter(|_| bound)
        .map(|c| SocketAddrV4::new(c, IKE_NATT_PORT));
    let socket = match (config.tunnel_type, customer) {
        (TunnelType::Gre, Some(c)) => {
            io::open_gre_socket(config.local_endpoint, c, config.gre.and_then(|g| g.key))?
        }
        _ => {
            let (s, gro) =
                io::open_data_socket(config.local_endpoint, data_peer, options.udp_offload)?;
            metrics.udp_offload_send.set(i64::from(options.udp_offload));
            metrics.udp_offload_receive.set(i64::from(gro));
            s
        }
    };
    let ike_sockets = match claim {
        Some((state, inbox)) => Some(crate::ikev2::sockets::Sockets::open(
            config.local_endpoint,
            customer,
            state,
            inbox,
        )?),
        None => None,
    };
    let tun = Tun::open(&name, options.queues, options.offload)?;
    metrics.tun_queues.set(tun.queues().len() as i64);
    let netlink = Netlink::connect()?;
    let index = netlink.link_index(&name).await?;
    let mtu = config.mtu();
    netlink
        .configure_interface(index, mtu, config.interface_address)
        .await?;
    let mut installed = Vec::new();
    for route in &config.routes {
        if let Err(e) = netlink.add_route(index, route).await {
            teardown(&netlink, index, &installed).await;
            return Err(e);
        }
        installed.push(route.clone());
    }
    tracing::info!(
        interface = %name, local = %config.local_endpoint,
        customer = %customer.map_or("(learned from IKE)".into(), |c| c.to_string()), mtu,
        routes = installed.len(), kind = %config.tunnel_type, "tunnel up"
    );

    let peer = config.peer_interface_address();
    let probes = config
        .health_check
        .enabled
        .then(|| probe_spec(&config, peer))
        .transpose()?;
    let (ike_tx, ike_rx) = mpsc::channel(IKE_QUEUE);
    let path = Arc::new(Path {
        encap: encapsulation(&config, customer, mtu, static_sa.as_ref())?,
        tun,
        socket: arc_swap::ArcSwap::from_pointee(socket),
        connected: Default::default(),
        metrics: metrics.clone(),
        local_endpoint: config.local_endpoint,
        peer_address: peer,
        probes,
        coalesce: options.offload,
        ike: ike.then_some(ike_tx),
        udp_offload: options.udp_offload,
        gre_tx: (config.tunnel_type == TunnelType::Gre && options.gre_tx_packet)
            .then(Default::default),
    });
    if let (Some(peer), TunnelType::Ipsec) = (data_peer, config.tunnel_type) {
        path.connected.set(peer);
    }
    let (returns_tx, returns_rx) = mpsc::channel(1024);
    let (failed_tx, mut failed_rx) = mpsc::unbounded_channel();
    if let Some(spec) =
        probes.filter(|_| config.health_check.direction == HealthCheckDirection::Unidirectional)
    {
        // Returns come back over the Internet to our endpoint address, outside the tunnel.
        let icmp = io::open_icmp_socket(config.local_endpoint)?;
        let returns = returns_tx.clone();
        std::thread::Builder::new()
            .name("icmp-returns".into())
            .spawn(move || io::receive_probe_returns(&icmp, &spec, &returns))
            .context("starting the ICMP return thread")?;
    }
    // One egress thread per TUN queue: the kernel puts a flow's packets on one queue (see
    // `tun_queue`), so a TCP flow is sealed and sent by one thread, in order. One ingress
    // thread per data socket, though: a connected UDP socket (or the raw GRE socket) is one
    // receive queue, and several readers of it would take a flow's consecutive datagrams in
    // parallel and could write them to the TUN out of order; separate raw GRE sockets would
    // each get a copy of every packet. (Ingress spreads its writes over the queues by flow,
    // which is what steers egress.)
    for queue in 0..path.tun.queues().len() {
        spawn_direction("egress", queue, path.clone(), failed_tx.clone(), move |p| {
            p.run_egress(&p.tun.queues()[queue])
        })?;
    }
    spawn_direction("ingress", 0, path.clone(), failed_tx, move |p| {
        p.run_ingress(returns_tx)
    })?;
    status.set_transport_open(true);
    let gre_tx = match (&path.gre_tx, customer) {
        (Some(tx), Some(c)) => Some(tokio::spawn(crate::packet_tx::keep_resolved(
            tx.clone(),
            config.local_endpoint,
            c,
            metrics.gre_tx_packet.clone(),
        ))),
        _ => None,
    };
    let esp = matches!(path.encap, Encap::Esp(_));
    let keepalives = esp.then(|| tokio::spawn(nat_keepalives(path.clone())));
    let clock = static_sa
        .is_some()
        .then(|| tokio::spawn(sa_clock(path.clone(), status.clone())));
    let shutdown = Arc::new(tokio::sync::Notify::new());
    let ike_task = match (ike_sockets, config.ipsec.as_ref()) {
        (Some(sockets), Some(ipsec)) => Some(tokio::spawn(crate::ikev2::run(
            {
                let shell = crate::ikev2::Shell::new(
                    &config,
                    ipsec,
                    path.clone(),
                    sockets,
                    status.clone(),
                )?
                .with_limits(options.ike_limits)
                .with_replica(options.replica);
                match sync {
                    Some(setup) => shell.with_sync(setup),
                    None => shell,
                }
            },
            ike_rx,
            shutdown.clone(),
        ))),
        _ => None,
    };
    let prober = probes.map(|spec| {
        let p = Prober::new(
            config.health_check.rate.per_second(),
            options.loss_window,
            Instant::now(),
        );
        tokio::spawn(probe_loop(
            path.clone(),
            spec,
            p,
            returns_rx,
            status.clone(),
            metrics.clone(),
        ))
    });

    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let outcome = tokio::select! {
        _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); Ok(()) }
        _ = int.recv() => { tracing::info!("SIGINT: shutting down"); Ok(()) }
        Some((direction, e)) = failed_rx.recv() => Err(anyhow!("{direction} path failed: {e}")),
        r = server => Err(match r { Ok(Err(e)) => e, Ok(Ok(())) => anyhow!("HTTP server stopped"), Err(e) => e.into() }),
    };
    status.set_transport_open(false);
    if let Some(task) = ike_task {
        // Delete the IKE SA before the interface goes (RFC 7296 §1.4.1), within the grace period;
        // in sync mode, release the IKE ownership instead (a write or two to the API).
        shutdown.notify_one();
        let grace = Duration::from_secs(if sync_mode { 5 } else { 2 });
        let _ = tokio::time::timeout(grace, task).await;
    }
    for task in [prober, keepalives, clock, gre_tx].into_iter().flatten() {
        task.abort();
    }
    teardown(&netlink, index, &installed).await;
    outcome
}

/// Removes what `run` installed. The kernel would drop it with the TUN device at exit anyway;
/// doing it explicitly makes the order certain (routes first) and reports failures.
async fn teardown(netlink: &Netlink, index: u32, routes: &[crate::config::Route]) {
    for r in routes {
        if let Err(e) = netlink.delete_route(index, r).await {
            tracing::warn!(error = %format!("{e:#}"), "route removal failed");
        }
    }
    if let Err(e) = netlink.delete_link(index).await {
        tracing::warn!(error = %format!("{e:#}"), "interface removal failed");
    }
}

/// GRE from the config; ESP with its static SAs installed, or empty for IKE to fill.
fn encapsulation(
    config: &TunnelConfig,
    customer: Option<Ipv4Addr>,
    mtu: u16,
    static_sa: Option<&StaticSa>,
) -> Result<Encap> {
    let mss = config.mss_clamp.effective(mtu);
    Ok(match (config.tunnel_type, customer) {
        (TunnelType::Ipsec, _) => {
            let esp = Esp::new(mtu, mss);
            if let (Some(sa), Some(customer)) = (static_sa, customer) {
                let replay = config.ipsec.as_ref().and_then(|i| i.replay());
                esp.install_inbound(
                    Inbound::new(sa.inbound.clone(), replay).context("ipsec.staticSa.inbound")?,
                );
                esp.activate_outbound(Arc::new(
                    Outbound::new(sa.outbound.clone()).context("ipsec.staticSa.outbound")?,
                ));
                esp.set_peer(SocketAddrV4::new(customer, IKE_NATT_PORT));
            }
            Encap::Esp(Box::new(esp))
        }
        (TunnelType::Gre, customer) => Encap::Gre(Gre {
            local: config.local_endpoint,
            customer: customer.ok_or_else(|| anyhow!("customerEndpoint: GRE needs it"))?,
            ttl: config.ttl,
            key: config.gre.as_ref().and_then(|g| g.key),
            mtu,
            mss,
            idents: crate::gre::Idents::random(),
        }),
    })
}

/// Reports the static SAs' age every second: at 90 % of a time lifetime it warns (static keys
/// must be replaced by hand), at 100 % both halves stop.
async fn sa_clock(path: Arc<Path>, status: Arc<Status>) {
    let Encap::Esp(esp) = &path.encap else { return };
    let born = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = Age::Fresh;
    loop {
        tick.tick().await;
        let age = born.elapsed();
        let mut ages = Vec::new();
        let mut exhausted = false;
        let mut rekey = false;
        for o in esp.outbound_sas() {
            ages.push(o.check_age(age));
            exhausted |= o.is_exhausted();
            rekey |= o.needs_rekey();
        }
        esp.for_each_inbound(|i| ages.push(i.check_age(age)));
        status.set_sa_exhausted(exhausted);
        let worst = if ages.contains(&Age::Expired) || exhausted {
            Age::Expired
        } else if ages.contains(&Age::Rekey) || rekey {
            Age::Rekey
        } else {
            Age::Fresh
        };
        if worst != last {
            match worst {
                Age::Rekey => {
                    tracing::warn!("static SAs at 90 % of their lifetime: replace the keys")
                }
                Age::Expired => {
                    tracing::error!("static SAs expired: the tunnel stops carrying traffic")
                }
                Age::Fresh => {}
            }
            last = worst;
        }
    }
}

/// RFC 3948 §4: keep NAT bindings open with a one-byte 0xFF datagram; 20 s is the usual period.
async fn nat_keepalives(path: Arc<Path>) {
    // The first one a second after start (the peer is likely up by then), then every 20 s.
    let first = tokio::time::Instant::now() + Duration::from_secs(1);
    let mut tick = tokio::time::interval_at(first, Duration::from_secs(20));
    loop {
        tick.tick().await;
        let Ok(to) = path.encap.destination() else {
            continue;
        };
        if io::try_send(&path.socket.load(), &KEEPALIVE, to).is_ok() {
            path.metrics.nat_keepalives_sent.inc();
        }
    }
}

/// Starts a data path thread, `dp-<direction>-<index>`; its failure ends the process.
fn spawn_direction(
    direction: &'static str,
    index: usize,
    path: Arc<Path>,
    failed: mpsc::UnboundedSender<(&'static str, std::io::Error)>,
    body: impl FnOnce(&Path) -> std::io::Error + Send + 'static,
) -> Result<()> {
    std::thread::Builder::new()
        .name(format!("dp-{direction}-{index}"))
        .spawn(move || {
            let e = body(&path);
            let _ = failed.send((direction, e));
        })
        .with_context(|| format!("starting the {direction} data path thread"))?;
    Ok(())
}

fn probe_spec(config: &TunnelConfig, peer: Option<Ipv4Addr>) -> Result<ProbeSpec> {
    let target =
        config.health_check.target.or(peer).ok_or_else(|| {
            anyhow!("healthCheck.target: no peer address on the interface subnet")
        })?;
    let mut random = [0u8; 10];
    SystemRandom::new()
        .fill(&mut random)
        .map_err(|_| anyhow!("no system randomness"))?;
    let mut nonce = [0u8; 8];
    nonce.copy_from_slice(&random[2..]);
    // Bidirectional probes return through the tunnel to our tunnel address; unidirectional ones
    // to our endpoint address over the Internet (Magic WAN's two directions).
    let local = match config.health_check.direction {
        HealthCheckDirection::Bidirectional => config.interface_address.addr(),
        HealthCheckDirection::Unidirectional => config.local_endpoint,
    };
    Ok(ProbeSpec {
        style: config.health_check.check_type,
        local,
        target,
        identifier: u16::from_be_bytes([random[0], random[1]]),
        nonce,
        ttl: 64,
    })
}

async fn probe_loop(
    path: Arc<Path>,
    spec: ProbeSpec,
    mut prober: Prober,
    mut returns: mpsc::Receiver<(u16, Instant)>,
    status: Arc<Status>,
    metrics: Arc<Metrics>,
) {
    let mut buf = vec![0u8; HEADROOM + health::PROBE_LEN + TAILROOM];
    let mut last = health::State::Unknown;
    loop {
        let poll = prober.poll(Instant::now());
        metrics.probes_lost.inc_by(u64::from(poll.lost));
        if let Some(seq) = poll.send {
            let sent = spec
                .emit(seq, buf.get_mut(HEADROOM..).unwrap_or_default())
                .is_some_and(|len| path.send_own(&mut buf, len));
            if sent {
                metrics.probes_sent.inc();
            }
        }
        let state = prober.state();
        if state != last {
            tracing::info!(
                from = last.as_str(),
                to = state.as_str(),
                "tunnel health changed"
            );
            last = state;
            metrics.set_health(state);
            status.set_health(state);
        }
        tokio::select! {
            _ = tokio::time::sleep_until(poll.next.into()) => {}
            Some((seq, at)) = returns.recv() => {
                if let Some(rtt) = prober.on_return(seq, at) {
                    metrics.probes_ok.inc();
                    metrics.probe_rtt.observe(rtt.as_secs_f64());
                }
            }
        }
    }
}
