//! Command line of the operator binary (kept in the library so tests can parse exactly what the
//! Helm chart passes).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::leader::LeaseConfig;
use crate::pod_status::PollSettings;
use crate::settings::{AccountId, IdDomain, Settings, TunnelResources};

#[derive(Parser)]
#[command(version, about = "MagicTunnel Kubernetes operator")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Print the MagicTunnel CustomResourceDefinition as YAML.
    Crd,
    /// Run the controller against the cluster in KUBECONFIG or the in-cluster config.
    Run(Box<RunArgs>),
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// Account ID in every IKE ID (1–32 lowercase letters or digits).
    #[arg(long, env = "MAGICTUNNEL_ACCOUNT_ID")]
    pub account_id: String,
    /// Domain of the IKE IDs.
    #[arg(long, default_value = "ipsec.magictunnel.dev")]
    pub ike_id_domain: String,
    /// Image of the tunnel endpoint pods.
    #[arg(long)]
    pub tunnel_image: String,
    #[arg(long, default_value = "IfNotPresent")]
    pub tunnel_image_pull_policy: String,
    #[arg(long, default_value = "50m")]
    pub tunnel_cpu_request: String,
    #[arg(long, default_value = "32Mi")]
    pub tunnel_memory_request: String,
    #[arg(long, default_value = "128Mi")]
    pub tunnel_memory_limit: String,
    /// First host port handed to tunnel pods for /healthz, /readyz and /metrics.
    #[arg(long, default_value_t = 9180)]
    pub tunnel_http_port_base: u16,
    #[arg(long, default_value_t = 1000)]
    pub tunnel_http_port_count: u16,
    /// Address of the operator's /metrics and /healthz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    #[arg(long, value_enum, default_value = "json")]
    pub log_format: LogFormat,
    /// Elect a leader on a Lease, so several replicas can run and one reconciles.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Namespace of the leader Lease (the operator's own; the chart sets POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// This replica's holder identity on the Lease (the chart sets POD_NAME).
    #[arg(long, env = "POD_NAME")]
    pub leader_election_identity: Option<String>,
    #[arg(long, default_value = "magictunnel-operator")]
    pub lease_name: String,
    /// A Lease not renewed for this long may be taken by another replica.
    #[arg(long, default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// How often the leader renews the Lease.
    #[arg(long, default_value_t = 5)]
    pub lease_renew_seconds: u64,
    /// How often each tunnel pod's /status is read (Established and Healthy); 0 turns it off.
    #[arg(long, default_value_t = 10)]
    pub status_poll_interval_seconds: u64,
    /// Time allowed for one pod's /status answer.
    #[arg(long, default_value_t = 2)]
    pub status_poll_timeout_seconds: u64,
    /// Pods asked at the same time.
    #[arg(long, default_value_t = 32)]
    pub status_poll_concurrency: usize,
    /// Tunnels reconciled at the same time. Bounded so that a burst (1,000 tunnels applied at
    /// once, a relist) queues in the operator rather than as requests at the API server, where
    /// it would delay everything else, the leader's Lease renewals included.
    #[arg(long, default_value_t = 32)]
    pub max_concurrent_reconciles: u16,
}

impl RunArgs {
    /// The Lease to elect on; `None` with `--leader-election=false`.
    pub fn lease(&self) -> anyhow::Result<Option<LeaseConfig>> {
        if !self.leader_election {
            return Ok(None);
        }
        let (Some(namespace), Some(identity)) = (
            self.leader_election_namespace
                .clone()
                .filter(|s| !s.is_empty()),
            self.leader_election_identity
                .clone()
                .filter(|s| !s.is_empty()),
        ) else {
            anyhow::bail!(
                "leader election needs --leader-election-namespace and --leader-election-identity (POD_NAMESPACE, POD_NAME), or --leader-election=false"
            );
        };
        anyhow::ensure!(
            self.lease_renew_seconds > 0 && self.lease_renew_seconds < self.lease_duration_seconds,
            "--lease-renew-seconds must be shorter than --lease-duration-seconds"
        );
        let renew = Duration::from_secs(self.lease_renew_seconds);
        Ok(Some(LeaseConfig {
            namespace,
            name: self.lease_name.clone(),
            identity,
            duration: Duration::from_secs(self.lease_duration_seconds),
            renew,
            retry: renew.min(Duration::from_secs(2)),
        }))
    }

    /// How the pod-status poller runs; `None` when turned off.
    pub fn status_poll(&self) -> Option<PollSettings> {
        (self.status_poll_interval_seconds > 0).then(|| PollSettings {
            interval: Duration::from_secs(self.status_poll_interval_seconds),
            timeout: Duration::from_secs(self.status_poll_timeout_seconds.max(1)),
            concurrency: self.status_poll_concurrency.max(1),
        })
    }

    pub fn settings(&self) -> anyhow::Result<Settings> {
        let ports_end =
            u32::from(self.tunnel_http_port_base) + u32::from(self.tunnel_http_port_count);
        anyhow::ensure!(
            self.tunnel_http_port_count > 0 && ports_end <= 65_536,
            "--tunnel-http-port-base/--tunnel-http-port-count leave the port range"
        );
        Ok(Settings {
            account_id: AccountId::parse(&self.account_id).map_err(anyhow::Error::msg)?,
            ike_id_domain: IdDomain::parse(&self.ike_id_domain).map_err(anyhow::Error::msg)?,
            tunnel_image: self.tunnel_image.clone(),
            tunnel_image_pull_policy: self.tunnel_image_pull_policy.clone(),
            tunnel_resources: TunnelResources {
                cpu_request: self.tunnel_cpu_request.clone(),
                memory_request: self.tunnel_memory_request.clone(),
                memory_limit: self.tunnel_memory_limit.clone(),
            },
            http_port_base: self.tunnel_http_port_base,
            http_port_count: self.tunnel_http_port_count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(extra: &[&str]) -> RunArgs {
        let argv = [
            "magictunnel-operator",
            "run",
            "--account-id",
            "abc",
            "--tunnel-image",
            "t",
        ]
        .into_iter()
        .chain(extra.iter().copied());
        match Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(Command::Run(args)) => *args,
            Ok(Command::Crd) => panic!("not run"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn leader_election_defaults_and_requirements() {
        let args = run_args(&[
            "--leader-election-namespace",
            "ops",
            "--leader-election-identity",
            "op-0",
        ]);
        let lease = args.lease().expect("valid").expect("enabled by default");
        assert_eq!(
            (
                lease.name.as_str(),
                lease.namespace.as_str(),
                lease.identity.as_str()
            ),
            ("magictunnel-operator", "ops", "op-0")
        );
        assert_eq!(lease.duration, Duration::from_secs(15));
        assert_eq!(lease.renew, Duration::from_secs(5));
        assert_eq!(lease.retry, Duration::from_secs(2));
        assert!(
            run_args(&["--leader-election=false"])
                .lease()
                .expect("valid")
                .is_none()
        );
        let bad = run_args(&[
            "--leader-election-namespace",
            "ops",
            "--leader-election-identity",
            "op-0",
            "--lease-renew-seconds",
            "15",
        ]);
        assert!(bad.lease().is_err(), "renewing no faster than expiry");
    }

    #[test]
    fn status_poll_defaults_and_off() {
        let poll = run_args(&[]).status_poll().expect("on by default");
        assert_eq!(poll.interval, Duration::from_secs(10));
        assert_eq!(poll.timeout, Duration::from_secs(2));
        assert_eq!(poll.concurrency, 32);
        assert!(
            run_args(&["--status-poll-interval-seconds", "0"])
                .status_poll()
                .is_none()
        );
    }
}
