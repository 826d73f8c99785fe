//! Command line of the operator binary (kept in the library so tests can parse exactly what the
//! Helm chart passes).

use std::net::SocketAddr;

use clap::{Parser, Subcommand, ValueEnum};

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
}

impl RunArgs {
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
