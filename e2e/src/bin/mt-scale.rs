//! `mt-scale N [--own-endpoints]`: the operator at scale (issue #9). Needs the cluster in
//! KUBECONFIG and a running operator: `e2e/scale.sh` sets both up.

use std::time::Duration;

use clap::Parser;
use magictunnel_e2e::scale::{self, Endpoints, Params};

#[derive(Parser)]
struct Args {
    /// How many GRE tunnels to create.
    tunnels: usize,
    /// Every tunnel on a local endpoint of its own (default: all on one).
    #[arg(long)]
    own_endpoints: bool,
    #[arg(long, default_value = "scale")]
    namespace: String,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds to wait for all to be Configured after the apply.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Seconds to keep counting reconciles once all are Configured.
    #[arg(long, default_value_t = 10)]
    settle: u64,
    #[arg(long, env = "MT_E2E_OPERATOR_METRICS")]
    metrics: String,
    #[arg(long, env = "MT_E2E_OPERATOR_PID")]
    pid: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let client = magictunnel_e2e::client().await?;
    let params = Params {
        tunnels: a.tunnels,
        endpoints: if a.own_endpoints {
            Endpoints::Own
        } else {
            Endpoints::Shared
        },
        namespace: a.namespace,
        concurrency: a.concurrency,
        timeout: Duration::from_secs(a.timeout),
        settle: Duration::from_secs(a.settle),
        metrics_url: a.metrics,
        operator_pid: a.pid,
    };
    let report = scale::run(&client, &params).await?;
    println!("{}", report.line());
    Ok(())
}
