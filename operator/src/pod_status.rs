//! What each tunnel pod says about its tunnel, read from its `/status` by a small poller, apart
//! from the reconciles.
//!
//! A reconcile never waits on a pod: it registers the pods it found ([`Board::set_targets`]) and
//! reads the last observation of each ([`Board::reports`]). The poller asks every registered pod
//! once per interval, a bounded number at a time, each with a timeout, and asks for a reconcile
//! of a tunnel only when what one of its pods says changed. A hostNetwork pod listens on all
//! addresses of its node, so it is reached at `http://<status.hostIP>:<status.httpPort>/status`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Health-check state of a pod, as `tunnel-pod` names it.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    Unknown,
    Healthy,
    Degraded,
    Down,
}

/// The fields of a tunnel pod's `/status` the operator uses.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodReport {
    /// As the pod's `/readyz`.
    pub ready: bool,
    /// IPsec: a Child SA installed; GRE: probes answered, or with health checks off the
    /// transport open.
    pub established: bool,
    pub health: HealthState,
    /// Health checks enabled (else `health` stays `unknown`).
    #[serde(default)]
    pub health_checks: bool,
}

/// A tunnel, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TunnelKey {
    pub namespace: String,
    pub name: String,
}

/// One pod to ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The pod's UID: a pod recreated under the same name starts without an observation.
    pub uid: String,
    pub addr: SocketAddr,
}

#[derive(Default)]
struct Inner {
    targets: HashMap<TunnelKey, Vec<Target>>,
    /// By pod UID; `None`: asked, no usable answer.
    seen: HashMap<String, Option<PodReport>>,
}

/// The targets and the last observation of each.
#[derive(Default)]
pub struct Board {
    inner: Mutex<Inner>,
}

impl Board {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pods of `tunnel` to ask from now on (replacing the previous set); observations of
    /// pods no longer listed are dropped.
    pub fn set_targets(&self, tunnel: TunnelKey, targets: Vec<Target>) {
        let mut inner = self.lock();
        let old = if targets.is_empty() {
            inner.targets.remove(&tunnel)
        } else {
            inner.targets.insert(tunnel, targets.clone())
        };
        for gone in old.iter().flatten() {
            if !targets.iter().any(|t| t.uid == gone.uid) {
                inner.seen.remove(&gone.uid);
            }
        }
    }

    /// The last observation of each pod (by UID): `None` when it was not read yet or could
    /// not be read.
    pub fn reports(&self, uids: &[&str]) -> Vec<Option<PodReport>> {
        let inner = self.lock();
        uids.iter()
            .map(|u| inner.seen.get(*u).copied().flatten())
            .collect()
    }

    fn snapshot(&self) -> Vec<(TunnelKey, Target)> {
        self.lock()
            .targets
            .iter()
            .flat_map(|(k, ts)| ts.iter().map(move |t| (k.clone(), t.clone())))
            .collect()
    }

    /// Keep an observation; true when it differs from the previous one (or is the first).
    /// Ignored when the pod is no longer a target.
    fn record(&self, tunnel: &TunnelKey, uid: &str, report: Option<PodReport>) -> bool {
        let mut inner = self.lock();
        let targeted = inner
            .targets
            .get(tunnel)
            .is_some_and(|ts| ts.iter().any(|t| t.uid == uid));
        if !targeted {
            return false;
        }
        inner.seen.insert(uid.to_string(), report) != Some(report)
    }

    /// Drop tunnels for which `keep` is false (deleted ones).
    fn retain(&self, keep: &dyn Fn(&TunnelKey) -> bool) {
        let mut inner = self.lock();
        let gone: Vec<TunnelKey> = inner.targets.keys().filter(|k| !keep(k)).cloned().collect();
        for k in gone {
            for t in inner.targets.remove(&k).unwrap_or_default() {
                inner.seen.remove(&t.uid);
            }
        }
    }

    /// Number of pods asked each round.
    pub fn len(&self) -> usize {
        self.lock().targets.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How the poller runs.
#[derive(Clone, Copy, Debug)]
pub struct PollSettings {
    pub interval: Duration,
    pub timeout: Duration,
    pub concurrency: usize,
}

/// Largest `/status` body read (a pod with many SAs lists each).
const MAX_RESPONSE: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("answer larger than {MAX_RESPONSE} bytes")]
    TooLarge,
    #[error("not an HTTP 200 answer with a body")]
    BadResponse,
    #[error("chunked answers are not read")]
    Chunked,
    #[error("body: {0}")]
    Json(#[from] serde_json::Error),
}

/// `GET /status` of one pod: HTTP/1.1 with `Connection: close`, read to the end (the pod's
/// server sends a Content-Length body; chunked answers are refused rather than misread).
pub async fn fetch(addr: SocketAddr, timeout: Duration) -> Result<PodReport, FetchError> {
    tokio::time::timeout(timeout, async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request =
            format!("GET /status HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut buf = Vec::new();
        let mut limited = (&mut stream).take(MAX_RESPONSE as u64 + 1);
        limited.read_to_end(&mut buf).await?;
        if buf.len() > MAX_RESPONSE {
            return Err(FetchError::TooLarge);
        }
        parse_response(&buf)
    })
    .await
    .map_err(|_| FetchError::Timeout(timeout))?
}

fn parse_response(buf: &[u8]) -> Result<PodReport, FetchError> {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(FetchError::BadResponse)?;
    let (head, rest) = buf.split_at(split);
    let body = rest.get(4..).ok_or(FetchError::BadResponse)?;
    let head = std::str::from_utf8(head).map_err(|_| FetchError::BadResponse)?;
    let mut lines = head.split("\r\n");
    let status_ok = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .is_some_and(|code| code == "200");
    if !status_ok {
        return Err(FetchError::BadResponse);
    }
    let mut body = body;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
            return Err(FetchError::Chunked);
        }
        if name.eq_ignore_ascii_case("content-length") {
            let len: usize = value.parse().map_err(|_| FetchError::BadResponse)?;
            body = body.get(..len).ok_or(FetchError::BadResponse)?;
        }
    }
    Ok(serde_json::from_slice(body)?)
}

/// Ask every target once, `concurrency` at a time; returns the tunnels whose pods said
/// something new.
pub async fn poll_once(board: &Board, settings: PollSettings) -> Vec<TunnelKey> {
    let targets = board.snapshot();
    let results: Vec<(TunnelKey, String, Option<PodReport>)> =
        futures::stream::iter(targets.into_iter().map(|(tunnel, target)| async move {
            let report = match fetch(target.addr, settings.timeout).await {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::debug!(addr = %target.addr, error = %e, "cannot read a tunnel pod's /status");
                    None
                }
            };
            (tunnel, target.uid, report)
        }))
        .buffer_unordered(settings.concurrency.max(1))
        .collect()
        .await;
    let mut changed: Vec<TunnelKey> = results
        .into_iter()
        .filter(|(tunnel, uid, report)| board.record(tunnel, uid, *report))
        .map(|(tunnel, _, _)| tunnel)
        .collect();
    changed.sort();
    changed.dedup();
    changed
}

/// Poll forever; each tunnel whose observation changed is sent on `changed` (to be reconciled).
/// Tunnels for which `exists` is false are forgotten first.
pub async fn run(
    board: Arc<Board>,
    settings: PollSettings,
    exists: impl Fn(&TunnelKey) -> bool,
    changed: mpsc::Sender<TunnelKey>,
) {
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        board.retain(&exists);
        for tunnel in poll_once(&board, settings).await {
            if changed.send(tunnel).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> TunnelKey {
        TunnelKey {
            namespace: "default".into(),
            name: name.into(),
        }
    }

    #[test]
    fn parses_the_pods_answer() {
        let body = br#"{"ikeSas":[],"ready":true,"health":"degraded","healthChecks":true,"established":true}"#;
        let mut response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        response.extend_from_slice(body);
        assert_eq!(
            parse_response(&response).expect("parsed"),
            PodReport {
                ready: true,
                established: true,
                health: HealthState::Degraded,
                health_checks: true
            }
        );
        assert!(matches!(
            parse_response(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"),
            Err(FetchError::BadResponse)
        ));
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\n"),
            Err(FetchError::Chunked)
        ));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\n{\"ready\":true}").is_err());
    }

    #[test]
    fn board_keeps_observations_of_current_targets_only() {
        let board = Board::default();
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let t = |uid: &str| Target {
            uid: uid.into(),
            addr,
        };
        board.set_targets(key("a"), vec![t("u1"), t("u2")]);
        let up = Some(PodReport {
            ready: true,
            established: true,
            health: HealthState::Healthy,
            health_checks: true,
        });
        assert!(board.record(&key("a"), "u1", up), "first observation");
        assert!(!board.record(&key("a"), "u1", up), "same again");
        assert!(board.record(&key("a"), "u1", None), "now unreachable");
        assert!(!board.record(&key("b"), "u9", up), "not a target");
        assert_eq!(board.reports(&["u1", "u2", "u9"]), vec![None, None, None]);
        board.record(&key("a"), "u2", up);
        assert_eq!(board.reports(&["u2"]), vec![up]);
        // u2 replaced by u3 (pod recreated): its observation goes.
        board.set_targets(key("a"), vec![t("u1"), t("u3")]);
        assert_eq!(board.reports(&["u2"]), vec![None]);
        assert_eq!(board.len(), 2);
        board.retain(&|k| k != &key("a"));
        assert!(board.is_empty());
    }

    /// A pod's HTTP server on loopback: answers `/status` with whatever `state` holds.
    async fn fake_pod(state: Arc<Mutex<String>>) -> SocketAddr {
        use axum::routing::get;
        let app = axum::Router::new().route(
            "/status",
            get(move || {
                let state = state.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        state.lock().map(|s| s.clone()).unwrap_or_default(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    #[tokio::test]
    async fn poller_reports_changes_only_and_survives_a_silent_pod() {
        let state = Arc::new(Mutex::new(
            r#"{"ready":false,"health":"unknown","healthChecks":true,"established":false,"ikeSas":[]}"#
                .to_string(),
        ));
        let addr = fake_pod(state.clone()).await;
        // A listener that accepts and never answers: the timeout must end the ask.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let silent_addr = silent.local_addr().expect("addr");
        let board = Board::default();
        board.set_targets(
            key("up"),
            vec![Target {
                uid: "p1".into(),
                addr,
            }],
        );
        board.set_targets(
            key("mute"),
            vec![Target {
                uid: "p2".into(),
                addr: silent_addr,
            }],
        );
        let settings = PollSettings {
            interval: Duration::from_secs(10),
            timeout: Duration::from_millis(300),
            concurrency: 4,
        };
        let started = std::time::Instant::now();
        // First round: both are new observations (one an answer, one a failure).
        assert_eq!(
            poll_once(&board, settings).await,
            vec![key("mute"), key("up")]
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "bounded by the timeout"
        );
        assert_eq!(
            board.reports(&["p1", "p2"]),
            vec![
                Some(PodReport {
                    ready: false,
                    established: false,
                    health: HealthState::Unknown,
                    health_checks: true
                }),
                None
            ]
        );
        // Nothing changed: nothing to reconcile.
        assert!(poll_once(&board, settings).await.is_empty());
        // The tunnel comes up.
        *state.lock().expect("lock") =
            r#"{"ready":true,"health":"healthy","healthChecks":true,"established":true}"#.into();
        assert_eq!(poll_once(&board, settings).await, vec![key("up")]);
        assert_eq!(
            board.reports(&["p1"])[0].map(|r| (r.established, r.health)),
            Some((true, HealthState::Healthy))
        );
        drop(silent);
    }

    #[tokio::test]
    async fn run_sends_changed_tunnels_and_forgets_deleted_ones() {
        let state = Arc::new(Mutex::new(
            r#"{"ready":true,"health":"healthy","healthChecks":true,"established":true}"#
                .to_string(),
        ));
        let addr = fake_pod(state).await;
        let board = Arc::new(Board::default());
        board.set_targets(
            key("t"),
            vec![Target {
                uid: "p".into(),
                addr,
            }],
        );
        board.set_targets(
            key("deleted"),
            vec![Target {
                uid: "q".into(),
                addr,
            }],
        );
        let (tx, mut rx) = mpsc::channel(8);
        let settings = PollSettings {
            interval: Duration::from_millis(50),
            timeout: Duration::from_millis(500),
            concurrency: 2,
        };
        let task = tokio::spawn(run(board.clone(), settings, |k| k.name != "deleted", tx));
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a change is sent");
        assert_eq!(first, Some(key("t")));
        assert_eq!(board.len(), 1, "the deleted tunnel is forgotten");
        task.abort();
    }
}
