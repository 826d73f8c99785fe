//! The operator at scale (issue #9), at a size CI can afford: 300 GRE tunnels on one local
//! endpoint, created at once. Asserts the bounds of the issue: all `Configured=True` within a
//! minute, at most 3 reconciles per tunnel, peak RSS at most 128 MiB.
//!
//! Needs a cluster and a running operator, and must run alone (it counts the operator's
//! reconciles): `e2e/run-local.sh` runs it after the other tests, with
//! `MT_E2E_OPERATOR_METRICS` (the operator's /metrics URL) and `MT_E2E_OPERATOR_PID`.
//! `MT_E2E_SCALE_TUNNELS` changes the size.

use std::time::Duration;

use magictunnel_e2e::scale::{self, Endpoints, Params};

const MIB: u64 = 1024 * 1024;

#[tokio::test]
#[ignore = "needs a cluster and the operator: e2e/run-local.sh"]
async fn three_hundred_tunnels_on_one_endpoint() {
    let env = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let tunnels: usize = std::env::var("MT_E2E_SCALE_TUNNELS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let params = Params {
        tunnels,
        endpoints: Endpoints::Shared,
        namespace: format!("e2e-scale-{nanos:x}"),
        concurrency: 32,
        timeout: Duration::from_secs(60),
        settle: Duration::from_secs(5),
        metrics_url: env("MT_E2E_OPERATOR_METRICS"),
        operator_pid: env("MT_E2E_OPERATOR_PID").parse().expect("a PID"),
    };
    let client = magictunnel_e2e::client()
        .await
        .expect("cluster in KUBECONFIG");
    let report = scale::run(&client, &params).await.expect("scale run");
    eprintln!("{}", report.line());
    assert_eq!(
        report.configured,
        tunnels,
        "not all Configured within {:?}: {}",
        params.timeout,
        report.line()
    );
    assert!(
        report.reconciles <= 3 * tunnels as u64,
        "more than 3 reconciles per tunnel: {}",
        report.line()
    );
    assert!(
        report.peak_rss_bytes <= 128 * MIB,
        "peak RSS above 128 MiB: {}",
        report.line()
    );
}
