//! `tunnel-pod`: one MagicTunnel endpoint.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tunnel_pod::config::TunnelConfig;
use tunnel_pod::run::{Options, run};

#[derive(Parser)]
#[command(
    version,
    about = "MagicTunnel endpoint: userspace GRE / IPsec dataplane"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a TunnelConfig file and explain what is wrong with it.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Run the endpoint described by a TunnelConfig file.
    Run {
        #[arg(long)]
        config: PathBuf,
        /// TUN interface name (at most 15 bytes); derived from the tunnel ID or name by default.
        #[arg(long)]
        interface: Option<String>,
        /// Loss window of the health "degraded" state, in seconds (Magic WAN: 300). Shorter
        /// windows let a tunnel report healthy sooner after an outage; tests use a few seconds.
        #[arg(long, default_value_t = 300)]
        loss_window: u64,
        /// Turn off TUN offload (TSO/checksum) and receive coalescing: one packet per syscall,
        /// for comparison in benchmarks.
        #[arg(long)]
        no_offload: bool,
        /// Turn off UDP segmentation (GSO) on send and coalescing (GRO) on receive of ESP in
        /// UDP: one datagram per message, for comparison in benchmarks.
        #[arg(long)]
        no_udp_offload: bool,
        /// TUN queues (`IFF_MULTI_QUEUE`), each read by its own egress thread; the kernel
        /// keeps one flow on one queue.
        #[arg(long, default_value_t = tunnel_pod::run::DEFAULT_QUEUES,
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new()
                  .range(1..=tunnel_pod::tun_queue::MAX_QUEUES as u64))]
        queues: usize,
        /// GRE egress: `raw` (the default) sends through the raw socket, the host's normal
        /// output path; `packet` sends TSO bursts through an AF_PACKET TX ring (qdisc,
        /// netfilter and egress taps bypassed) once the next hop's MAC is known.
        #[arg(long, value_parser = ["packet", "raw"], default_value = "raw")]
        gre_tx: String,
        /// At most this many IKE SAs in any state.
        #[arg(long, default_value_t = ike::core::Limits::default().max_sas)]
        ike_max_sas: usize,
        /// At most this many half-open IKE SAs (IKE_SA_INIT answered, no IKE_AUTH yet).
        #[arg(long, default_value_t = ike::core::Limits::default().max_half_open)]
        ike_max_half_open: usize,
        /// At most this many half-open IKE SAs per source address (at least 1); beyond, a
        /// source must return a cookie, which frees one of its cookie-less SAs.
        #[arg(long, default_value_t = ike::core::Limits::default().half_open_per_source,
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        ike_half_open_per_source: usize,
        /// From this many half-open IKE SAs on, new initiators must return a COOKIE first.
        #[arg(long, default_value_t = ike::core::Limits::default().cookie_threshold)]
        ike_cookie_threshold: usize,
        /// Anycast replicas: this replica's index (0 .. replicas-1); it selects the replica's
        /// slot of the IV and sequence spaces of the SAs all replicas send on.
        #[arg(long, default_value_t = 0)]
        replica: u8,
        /// Anycast replicas with `ipsec.sync`: this replica's name in the SA Secret (the pod
        /// name; the downward API sets POD_NAME).
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        /// The kubeconfig for the SA Secret (default: the in-cluster config, or KUBECONFIG).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match TunnelConfig::load(&config) {
            Ok(c) => {
                println!(
                    "{}: valid {} tunnel {} → {}",
                    config.display(),
                    c.tunnel_type,
                    c.local_endpoint,
                    c.customer_endpoint
                        .map_or_else(|| "any".to_string(), |a| a.to_string())
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", config.display());
                ExitCode::from(2)
            }
        },
        Command::Run {
            config: path,
            interface,
            loss_window,
            no_offload,
            no_udp_offload,
            queues,
            gre_tx,
            ike_max_sas,
            ike_max_half_open,
            ike_half_open_per_source,
            ike_cookie_threshold,
            replica,
            identity,
            kubeconfig,
        } => {
            let config = match TunnelConfig::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{}: {e}", path.display());
                    return ExitCode::from(2);
                }
            };
            tracing_subscriber::fmt()
                .with_env_filter(
                    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
                )
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .init();
            let options = Options {
                interface,
                loss_window: Duration::from_secs(loss_window.max(1)),
                offload: !no_offload,
                udp_offload: !no_udp_offload,
                queues,
                gre_tx_packet: gre_tx == "packet",
                ike_limits: ike::core::Limits {
                    max_sas: ike_max_sas,
                    max_half_open: ike_max_half_open,
                    half_open_per_source: ike_half_open_per_source,
                    cookie_threshold: ike_cookie_threshold,
                },
                replica,
                identity,
                kubeconfig,
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(config, options)) {
                Ok(()) => {
                    // The data path threads are blocked in reads on devices that are gone.
                    std::process::exit(0)
                }
                Err(e) => {
                    tracing::error!("{e:#}");
                    std::process::exit(1)
                }
            }
        }
    }
}
