//! `/healthz`, `/readyz` and `/metrics` for the kubelet and Prometheus, and `/status` for the
//! operator.
//!
//! `/status` is a JSON object: `ready` (bool, as `/readyz`), `health` (`unknown`, `healthy`,
//! `degraded`, `down`), `healthChecks` (bool: health checks enabled), `established` (bool, see
//! [`Status::established`]) and, for an IKE tunnel, `ikeSas` (the IKE and Child SAs, never keys).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::health::State;
use crate::metrics::Metrics;

/// What readiness is decided from, updated by the data path and the prober.
#[derive(Debug)]
pub struct Status {
    health_enabled: bool,
    transport_open: AtomicBool,
    /// The outbound SA can send no more (expired, used up): not ready whatever the probes say.
    sa_exhausted: AtomicBool,
    health: AtomicU8,
    /// IKE tunnels carry traffic only while a Child SA is established.
    needs_child_sa: bool,
    child_sa_up: AtomicBool,
    /// Anycast replicas (`sync`): not ready before the SA Secret's state is installed.
    sync_pending: AtomicBool,
    /// `/status`: the IKE and Child SAs as JSON (SPIs, suites, peer, ages; never keys).
    sas: Mutex<serde_json::Value>,
}

impl Status {
    pub fn new(health_enabled: bool) -> Self {
        Status {
            health_enabled,
            transport_open: AtomicBool::new(false),
            sa_exhausted: AtomicBool::new(false),
            health: AtomicU8::new(0),
            needs_child_sa: false,
            child_sa_up: AtomicBool::new(false),
            sync_pending: AtomicBool::new(false),
            sas: Mutex::new(serde_json::json!({})),
        }
    }

    /// For an IKE tunnel: not ready until a Child SA is established.
    pub fn with_ike(mut self) -> Self {
        self.needs_child_sa = true;
        self
    }

    /// Sync mode: `pending` until the first read of the SA Secret is installed.
    pub fn set_sync_pending(&self, pending: bool) {
        self.sync_pending.store(pending, Ordering::Relaxed);
    }

    pub fn set_child_sa_up(&self, up: bool) {
        self.child_sa_up.store(up, Ordering::Relaxed);
    }

    pub fn set_sas(&self, sas: serde_json::Value) {
        *self.sas.lock().unwrap_or_else(|p| p.into_inner()) = sas;
    }

    pub fn sas(&self) -> serde_json::Value {
        self.sas.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_transport_open(&self, open: bool) {
        self.transport_open.store(open, Ordering::Relaxed);
    }

    pub fn set_sa_exhausted(&self, exhausted: bool) {
        self.sa_exhausted.store(exhausted, Ordering::Relaxed);
    }

    pub fn set_health(&self, s: State) {
        let i = State::ALL.iter().position(|x| *x == s).unwrap_or(0);
        self.health.store(i as u8, Ordering::Relaxed);
    }

    pub fn health(&self) -> State {
        State::ALL
            .get(usize::from(self.health.load(Ordering::Relaxed)))
            .copied()
            .unwrap_or(State::Unknown)
    }

    /// Established = the tunnel is up with its peer: for IKE, a Child SA installed; for static
    /// SAs, the transport open and the SA not used up; for GRE, health probes answered (health
    /// healthy or degraded), or, with health checks off (nothing to learn the peer's state
    /// from), the transport open.
    pub fn established(&self) -> bool {
        if !self.transport_open.load(Ordering::Relaxed) {
            return false;
        }
        if self.needs_child_sa {
            return self.child_sa_up.load(Ordering::Relaxed);
        }
        if self.sa_exhausted.load(Ordering::Relaxed) {
            return false;
        }
        !self.health_enabled || self.health().is_up()
    }

    /// Whether health checks run (the `health` field means something).
    pub fn health_checks(&self) -> bool {
        self.health_enabled
    }

    /// Ready = the tunnel carries traffic: health checks passing (healthy or degraded), or, with
    /// health checks off, the transport open.
    pub fn readiness(&self) -> (bool, String) {
        if !self.transport_open.load(Ordering::Relaxed) {
            return (false, "transport not open".into());
        }
        if self.sa_exhausted.load(Ordering::Relaxed) {
            return (false, "IPsec SA exhausted: new keys are needed".into());
        }
        if self.sync_pending.load(Ordering::Relaxed) {
            return (
                false,
                "the shared SA state (Secret) is not installed yet".into(),
            );
        }
        if self.needs_child_sa && !self.child_sa_up.load(Ordering::Relaxed) {
            return (false, "no IPsec Child SA established".into());
        }
        if !self.health_enabled {
            return (true, "transport open (health checks disabled)".into());
        }
        let h = self.health();
        (h.is_up(), format!("health {}", h.as_str()))
    }
}

#[derive(Clone)]
struct Shared {
    status: Arc<Status>,
    metrics: Arc<Metrics>,
}

pub fn router(status: Arc<Status>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .route("/status", get(render_status))
        .with_state(Shared { status, metrics })
}

pub async fn serve(listen: SocketAddr, app: Router) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn readyz(AxumState(s): AxumState<Shared>) -> impl IntoResponse {
    let (ready, why) = s.status.readiness();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, format!("{why}\n"))
}

async fn render_status(AxumState(s): AxumState<Shared>) -> impl IntoResponse {
    // The IKE task's object (`ikeSas`) with readiness and health beside it.
    let mut body = match s.status.sas() {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    body.insert("ready".into(), s.status.readiness().0.into());
    body.insert("health".into(), s.status.health().as_str().into());
    body.insert("healthChecks".into(), s.status.health_checks().into());
    body.insert("established".into(), s.status.established().into());
    (
        [(CONTENT_TYPE, "application/json")],
        serde_json::Value::Object(body).to_string(),
    )
}

async fn render_metrics(AxumState(s): AxumState<Shared>) -> impl IntoResponse {
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn established_follows_the_tunnel_kind() {
        // GRE with health checks: established once probes are answered.
        let gre = Status::new(true);
        gre.set_health(State::Healthy);
        assert!(!gre.established(), "transport closed");
        gre.set_transport_open(true);
        for (state, up) in [
            (State::Unknown, false),
            (State::Healthy, true),
            (State::Degraded, true),
            (State::Down, false),
        ] {
            gre.set_health(state);
            assert_eq!(gre.established(), up, "{state:?}");
        }
        // GRE without health checks: the open transport is all there is to know.
        let off = Status::new(false);
        assert!(!off.established());
        off.set_transport_open(true);
        assert!(off.established());
        // IKE: a Child SA, whatever the probes say.
        let ike = Status::new(true).with_ike();
        ike.set_transport_open(true);
        ike.set_health(State::Healthy);
        assert!(!ike.established(), "no Child SA yet");
        ike.set_child_sa_up(true);
        ike.set_health(State::Down);
        assert!(ike.established());
        // Static SAs: until the SA is used up.
        let fixed = Status::new(false);
        fixed.set_transport_open(true);
        fixed.set_sa_exhausted(true);
        assert!(!fixed.established());
    }

    #[tokio::test]
    async fn status_json_carries_established() {
        let status = Arc::new(Status::new(false).with_ike());
        status.set_transport_open(true);
        status.set_sas(serde_json::json!({"ikeSas": []}));
        let app = router(status.clone(), Arc::new(Metrics::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let get = move || async move {
            tokio::task::spawn_blocking(move || {
                use std::io::{Read, Write};
                let mut c = std::net::TcpStream::connect(addr).expect("connect");
                c.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .expect("write");
                let mut out = String::new();
                c.read_to_string(&mut out).expect("read");
                let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
                serde_json::from_str::<serde_json::Value>(&body).expect("json body")
            })
            .await
            .expect("no panic")
        };
        let v = get().await;
        assert_eq!(v["established"], false);
        assert_eq!(v["healthChecks"], false);
        assert_eq!(v["health"], "unknown");
        assert_eq!(v["ikeSas"], serde_json::json!([]));
        status.set_child_sa_up(true);
        let v = get().await;
        assert_eq!(
            (v["established"].clone(), v["ready"].clone()),
            (true.into(), true.into())
        );
        server.abort();
    }

    #[test]
    fn readiness_follows_transport_and_health() {
        let s = Status::new(true);
        assert!(!s.readiness().0);
        s.set_transport_open(true);
        assert_eq!(s.readiness(), (false, "health unknown".to_string()));
        for (state, ready) in [
            (State::Healthy, true),
            (State::Degraded, true),
            (State::Down, false),
        ] {
            s.set_health(state);
            assert_eq!(s.health(), state);
            assert_eq!(s.readiness().0, ready, "{state:?}");
        }
        let off = Status::new(false);
        off.set_transport_open(true);
        assert!(off.readiness().0);
        let ike = Status::new(false).with_ike();
        ike.set_transport_open(true);
        assert_eq!(
            ike.readiness(),
            (false, "no IPsec Child SA established".to_string())
        );
        ike.set_child_sa_up(true);
        assert!(ike.readiness().0);
        off.set_sa_exhausted(true);
        assert!(
            !off.readiness().0,
            "an exhausted SA is not ready even without health checks"
        );
    }
}
