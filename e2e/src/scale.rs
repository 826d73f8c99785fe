//! The operator at scale (issue #9): create N GRE tunnels at once, then measure how long the
//! operator takes until all are `Configured=True`, how many reconciles it needed and its peak
//! RSS. Used by `mt-scale` (e2e/scale.sh, the figures in BENCHMARKS.md) and by
//! `e2e/tests/scale.rs` (the bounds CI asserts).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use operator::crd::MagicTunnel;
use serde_json::json;

/// Where the tunnels' local endpoints come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoints {
    /// Every tunnel on one local endpoint (the Magic WAN case: an account's tunnels share two
    /// anycast addresses), each with its own customer endpoint.
    Shared,
    /// Every tunnel on a local endpoint of its own: no neighbours at all.
    Own,
}

#[derive(Clone, Debug)]
pub struct Params {
    pub tunnels: usize,
    pub endpoints: Endpoints,
    pub namespace: String,
    /// Concurrent create requests.
    pub concurrency: usize,
    /// Give up waiting for `Configured=True` after this long (measured from the end of the apply).
    pub timeout: Duration,
    /// After all are configured, keep watching this long: reconciles that go on are a storm.
    pub settle: Duration,
    /// The operator's `/metrics` URL.
    pub metrics_url: String,
    /// The operator's process, for `/proc/<pid>/status`.
    pub operator_pid: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub tunnels: usize,
    pub apply_seconds: f64,
    /// From the end of the apply until all were `Configured=True`; `None`: not within the timeout.
    pub configured_seconds: Option<f64>,
    /// How many were `Configured=True` at the end.
    pub configured: usize,
    /// Reconciles during the run (including the settle time), from the operator's counter.
    pub reconciles: u64,
    /// Peak RSS of the operator (VmHWM), bytes; it includes whatever ran before the run.
    pub peak_rss_bytes: u64,
    pub rss_bytes: u64,
}

impl Report {
    pub fn line(&self) -> String {
        format!(
            "tunnels={} apply={:.1}s configured={}/{} all_configured_after={} reconciles={} ({:.2} per tunnel) peak_rss={:.1}MiB rss_end={:.1}MiB",
            self.tunnels,
            self.apply_seconds,
            self.configured,
            self.tunnels,
            self.configured_seconds
                .map(|s| format!("{s:.1}s"))
                .unwrap_or_else(|| "timeout".into()),
            self.reconciles,
            self.reconciles as f64 / self.tunnels.max(1) as f64,
            self.peak_rss_bytes as f64 / 1048576.0,
            self.rss_bytes as f64 / 1048576.0,
        )
    }
}

/// The `i`th tunnel: customer endpoints 10.x.y.z distinct per tunnel; local endpoint shared or not.
pub fn tunnel(i: usize, endpoints: Endpoints) -> serde_json::Value {
    let n = u32::try_from(i).unwrap_or(u32::MAX);
    let customer = std::net::Ipv4Addr::from(0x0a00_0000 | (n + 1));
    let local = match endpoints {
        Endpoints::Shared => std::net::Ipv4Addr::new(192, 0, 2, 1),
        Endpoints::Own => std::net::Ipv4Addr::from(0xac10_0000 | (n + 1)),
    };
    json!({
        "apiVersion": "magictunnel.dev/v1alpha1", "kind": "MagicTunnel",
        "metadata": {"name": format!("scale-{i:05}")},
        "spec": {
            "type": "GRE", "localEndpoint": local.to_string(), "customerEndpoint": customer.to_string(),
            "interfaceAddress": "10.200.0.0/31",
            // A prefix of its own: tunnels routing the same prefix and metric conflict.
            "routes": [{"prefix": format!("10.{}.{}.0/24", 20 + n / 256, n % 256)}],
            // This measures the control-plane path: on a real node the pods stay Pending
            // rather than hundreds of tunnel pods starting on it.
            "placement": {"nodeSelector": {"magictunnel.dev/e2e": "no-such-node"}}
        }
    })
}

/// VmHWM and VmRSS of a process, bytes.
pub fn memory_of(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("{name} missing in /proc/{pid}/status"))?;
        let kib: u64 = line
            .trim_start_matches(name)
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()?;
        Ok(kib * 1024)
    };
    Ok((field("VmHWM:")?, field("VmRSS:")?))
}

/// The sum of a counter over all its label sets, from an OpenMetrics text.
pub fn counter_total(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// Reconciles so far: `magictunnel_operator_reconciles_total`, all results.
pub async fn reconciles(metrics_url: &str) -> anyhow::Result<u64> {
    let text = http_get(metrics_url).await?;
    Ok(counter_total(
        &text,
        "magictunnel_operator_reconciles_total",
    ))
}

/// A plain HTTP/1.0 GET of a loopback URL (the operator's metrics), without another HTTP client.
async fn http_get(url: &str) -> anyhow::Result<String> {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let rest = url
            .strip_prefix("http://")
            .context("only http:// metrics URLs")?;
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut stream =
            std::net::TcpStream::connect(host).with_context(|| format!("connecting to {host}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())?;
        let mut body = String::new();
        stream.read_to_string(&mut body)?;
        let (head, body) = body.split_once("\r\n\r\n").context("no HTTP header")?;
        anyhow::ensure!(head.contains(" 200 "), "GET {url}: {head}");
        Ok(body.to_string())
    })
    .await?
}

fn is_configured(t: &MagicTunnel) -> bool {
    t.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Configured" && c.status == "True")
    })
}

/// Create the namespace and the tunnels, wait, measure. The namespace is deleted at the end.
pub async fn run(client: &Client, p: &Params) -> anyhow::Result<Report> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": p.namespace}}))?;
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {}", p.namespace))?;
    let api: Api<MagicTunnel> = Api::namespaced(client.clone(), &p.namespace);
    let before = reconciles(&p.metrics_url).await?;

    let started = Instant::now();
    futures::stream::iter(0..p.tunnels)
        .map(|i| {
            let api = api.clone();
            async move {
                let mt: MagicTunnel = serde_json::from_value(tunnel(i, p.endpoints))?;
                api.create(&PostParams::default(), &mt)
                    .await
                    .with_context(|| format!("creating tunnel {i}"))?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(p.concurrency.max(1))
        .try_collect::<()>()
        .await?;
    let applied = Instant::now();
    let apply_seconds = applied.duration_since(started).as_secs_f64();

    let mut configured_seconds = None;
    let mut reported = 0;
    let configured = loop {
        let list = api.list(&ListParams::default()).await?;
        let configured = list.items.iter().filter(|t| is_configured(t)).count();
        let elapsed = applied.elapsed();
        if elapsed.as_secs() >= reported + 10 {
            reported = elapsed.as_secs();
            eprintln!(
                "scale: {configured}/{} configured after {:.0}s, reconciles {}",
                p.tunnels,
                elapsed.as_secs_f64(),
                reconciles(&p.metrics_url)
                    .await
                    .unwrap_or(0)
                    .saturating_sub(before)
            );
        }
        if configured == p.tunnels {
            configured_seconds = Some(elapsed.as_secs_f64());
            break configured;
        }
        if elapsed >= p.timeout {
            break configured;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    tokio::time::sleep(p.settle).await;
    let reconciles = reconciles(&p.metrics_url).await?.saturating_sub(before);
    let (peak_rss_bytes, rss_bytes) = memory_of(p.operator_pid)?;
    cleanup(client, &p.namespace).await;
    Ok(Report {
        tunnels: p.tunnels,
        apply_seconds,
        configured_seconds,
        configured,
        reconciles,
        peak_rss_bytes,
        rss_bytes,
    })
}

/// Delete the namespace (the namespace controller removes the tunnels and what they own).
pub async fn cleanup(client: &Client, namespace: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces
        .delete(namespace, &DeleteParams::background())
        .await;
}

/// Counts of tunnel names by `Configured` reason, for a failure message.
pub async fn reasons(client: &Client, namespace: &str) -> BTreeMap<String, usize> {
    let api: Api<MagicTunnel> = Api::namespaced(client.clone(), namespace);
    let mut out = BTreeMap::new();
    if let Ok(list) = api.list(&ListParams::default()).await {
        for t in list.items {
            let reason = t
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Configured"))
                .map(|c| format!("{}:{}", c.status, c.reason))
                .unwrap_or_else(|| "no status".to_string());
            *out.entry(reason).or_insert(0) += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed_over_labels() {
        let text = "# TYPE magictunnel_operator_reconciles counter\n\
            magictunnel_operator_reconciles_total{result=\"applied\"} 7\n\
            magictunnel_operator_reconciles_total{result=\"error\"} 2\n\
            magictunnel_operator_reconciles_totally 100\n# EOF\n";
        assert_eq!(
            counter_total(text, "magictunnel_operator_reconciles_total"),
            9
        );
    }

    #[test]
    fn tunnels_have_distinct_customer_endpoints() {
        let a = tunnel(0, Endpoints::Shared);
        let b = tunnel(999, Endpoints::Shared);
        assert_eq!(a["spec"]["localEndpoint"], b["spec"]["localEndpoint"]);
        assert_ne!(a["spec"]["customerEndpoint"], b["spec"]["customerEndpoint"]);
        assert_eq!(b["spec"]["customerEndpoint"], "10.0.3.232");
        let c = tunnel(999, Endpoints::Own);
        assert_ne!(a["spec"]["localEndpoint"], c["spec"]["localEndpoint"]);
    }
}
