//! The IKE task's half of SA synchronisation (`crate::sync`): export and install of the
//! shared state, the write-ahead of the owner's messages, claims, the Secret's watch, acks.
//!
//! All of it runs in the IKE task: a write is awaited inline (at most [`WRITE_TIMEOUT`] per
//! request), so nothing the core does in between can slip out unpublished. A writer's ack of
//! what it wrote rides on the write itself; a follower's ack of what it installed is written by
//! a task of its own (it holds nothing up; only the latest generation if several queue up).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::Secret;
use tokio::sync::{mpsc, watch};

use super::Shell;
use crate::esp::sa::{Inbound, Outbound, SenderSlot};
use crate::sync::doc::{ChildDoc, Content, StateDoc, unix_ms};
use crate::sync::engine::{Conflict, Due, Engine, Remote, Step};
use crate::sync::kube::{self as sk, SecretStore, WriteError};
use crate::sync::share;

/// The longest a write (or a read before a claim) may hold the IKE task.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Conflicts retried before a write gives up.
const WRITE_TRIES: usize = 5;

/// What `tunnel-pod run` hands the shell in sync mode.
pub struct SyncSetup {
    pub store: SecretStore,
    pub identity: String,
}

pub(super) struct SyncState {
    pub(super) engine: Engine,
    store: SecretStore,
    /// The Secret as read or written last: the base (resourceVersion) of the next write.
    base: Option<Secret>,
    pub(super) remote: mpsc::Receiver<Secret>,
    watch_started: bool,
    remote_tx: Option<mpsc::Sender<Secret>>,
    acks: watch::Sender<u64>,
    acks_rx: Option<watch::Receiver<u64>>,
    /// Messages released by the last step, held until its state is published.
    pub(super) held: Vec<(ike::core::Path, Vec<u8>)>,
    /// An IKE message that needs a claim before the core may see it.
    pub(super) claim_first: Option<(u16, SocketAddrV4, Vec<u8>)>,
    /// The ESP side of the shared state: inbound SPI → the Child SA's parameters (keys).
    pub(super) children: BTreeMap<u32, ChildDoc>,
    /// Wall clock = `anchor.1 + (now - anchor.0)`: exports of an unchanged core are identical.
    anchor: (Instant, SystemTime),
    publishes: u64,
    conflicts: u64,
    last_error: Option<String>,
}

impl SyncState {
    pub(super) fn new(setup: SyncSetup) -> Self {
        let (remote_tx, remote) = mpsc::channel(16);
        let (acks, acks_rx) = watch::channel(0u64);
        SyncState {
            engine: Engine::new(setup.identity),
            store: setup.store,
            base: None,
            remote,
            watch_started: false,
            remote_tx: Some(remote_tx),
            acks,
            acks_rx: Some(acks_rx),
            held: Vec::new(),
            claim_first: None,
            children: BTreeMap::new(),
            anchor: (Instant::now(), SystemTime::now()),
            publishes: 0,
            conflicts: 0,
            last_error: None,
        }
    }

    pub(super) fn status_json(&self) -> serde_json::Value {
        let spis: Vec<_> = self.children.keys().map(|s| format!("{s:08x}")).collect();
        serde_json::json!({
            "role": self.engine.role().as_str(),
            "identity": self.engine.me(),
            "owner": self.engine.owner(),
            "generation": self.engine.generation(),
            "installedChildSpis": spis,
            "publishes": self.publishes,
            "conflicts": self.conflicts,
            "lastError": self.last_error,
        })
    }
}

/// Writes this replica's ack of each installed generation (the latest only, if several came
/// while a write was under way).
async fn ack_loop(
    store: SecretStore,
    me: String,
    mut rx: watch::Receiver<u64>,
    metrics: Arc<crate::metrics::Metrics>,
) {
    while rx.changed().await.is_ok() {
        let generation = *rx.borrow_and_update();
        if generation == 0 {
            continue;
        }
        match store.ack(&me, generation, unix_ms(SystemTime::now())).await {
            Ok(n) => metrics.sync.wrote("ack", u64::from(n)),
            Err(e) => tracing::warn!(error = %e, generation, "cannot ack the SA state"),
        }
    }
}

fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

impl Shell {
    /// This replica's sender slot (replicas > 1), or none (the single sender of today).
    pub(super) fn slot(&self) -> Option<SenderSlot> {
        (self.replicas > 1).then_some(SenderSlot {
            index: self.replica,
            count: self.replicas,
        })
    }

    /// First read of the Secret and the watch from its resourceVersion. A failed read is
    /// retried by the watch task (which reads the Secret again after errors).
    pub(super) async fn sync_start(&mut self) {
        let metrics = self.path.metrics.clone();
        let Some(s) = self.sync.as_mut() else { return };
        if s.watch_started {
            return;
        }
        s.watch_started = true;
        if let Some(rx) = s.acks_rx.take() {
            tokio::spawn(ack_loop(
                s.store.clone(),
                s.engine.me().to_string(),
                rx,
                metrics,
            ));
        }
        let first = tokio::time::timeout(WRITE_TIMEOUT, s.store.get()).await;
        let tx = s.remote_tx.take();
        let rv = match first {
            Ok(Ok(secret)) => {
                let rv = secret.metadata.resource_version.clone().unwrap_or_default();
                self.on_secret(secret);
                rv
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the SA Secret: retrying");
                String::new()
            }
            Err(_) => String::new(),
        };
        if let (Some(tx), Some(s)) = (tx, self.sync.as_ref()) {
            let store = s.store.clone();
            tokio::spawn(async move {
                let rv = if rv.is_empty() {
                    // Read until it works, then watch from there.
                    let mut backoff = Duration::from_millis(500);
                    loop {
                        match store.get().await {
                            Ok(secret) => {
                                let rv = secret.metadata.resource_version.clone();
                                if tx.send(secret).await.is_err() {
                                    return;
                                }
                                break rv.unwrap_or_default();
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot read the SA Secret");
                                tokio::time::sleep(backoff).await;
                                backoff = (backoff * 2).min(Duration::from_secs(30));
                            }
                        }
                    }
                } else {
                    rv
                };
                store.watch(rv, tx).await;
            });
        }
    }

    /// The shared state of this replica now.
    pub(super) fn exported(&self) -> Content {
        let Some(s) = self.sync.as_ref() else {
            return Content::default();
        };
        let now = Instant::now();
        let snaps = self.endpoint.export(now, share::wall(s.anchor, now));
        let esp_peer = self.esp().and_then(crate::encap::Esp::peer);
        share::content(
            &snaps,
            s.children.values().cloned().collect(),
            esp_peer,
            esp_peer.is_some() && self.path.connected.get() == esp_peer,
        )
    }

    /// A version of the Secret (first read, watch): install it if it is a new generation.
    pub(super) fn on_secret(&mut self, secret: Secret) {
        let now = now_ms();
        let Some(s) = self.sync.as_mut() else { return };
        let state = sk::state(&secret);
        s.base = Some(secret);
        match state {
            None => s.engine.on_empty(now),
            Some(Err(e)) => {
                self.path.metrics.sync.errors.inc();
                tracing::error!(error = %e, "the SA Secret's state.json cannot be used");
                s.last_error = Some(e.to_string());
                // Nothing installable: carry on as with an empty Secret.
                s.engine.on_empty(now);
            }
            Some(Ok(doc)) => {
                if s.engine.on_remote(&doc, now) == Remote::Install {
                    self.install_remote(&doc);
                }
            }
        }
        self.sync_gauges();
    }

    fn sync_gauges(&self) {
        let Some(s) = self.sync.as_ref() else { return };
        let m = &self.path.metrics.sync;
        m.owner.set(i64::from(s.engine.is_owner()));
        m.generation
            .set(i64::try_from(s.engine.generation()).unwrap_or(i64::MAX));
        self.status.set_sync_pending(!s.engine.ready());
    }

    /// Makes the local IKE and ESP state `doc`'s: IKE SAs imported (passive; SAs negotiated
    /// here and not published yet are kept), Child SAs installed/retired by SPI, the peer set.
    fn install_remote(&mut self, doc: &StateDoc) {
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut snaps = match share::snapshots(&doc.content) {
            Ok(s) => s,
            Err(e) => {
                self.sync_error(e);
                return;
            }
        };
        // IKE SAs of our own, never in any generation (IKE_AUTH completed here, not yet
        // published): the import must not drop them.
        let shared: HashSet<(u64, u64)> = doc.content.ike_spis.iter().copied().collect();
        let local: Vec<_> = {
            let Some(s) = self.sync.as_ref() else { return };
            let e = self.endpoint.export(now, share::wall(s.anchor, now));
            e.into_iter()
                .filter(|snap| !shared.contains(&snap.spis()) && !s.engine.knows(snap.spis()))
                .collect()
        };
        snaps.extend(local);
        if let Err(e) = self.endpoint.import(snaps, now, wall) {
            self.sync_error(format!("cannot import the shared IKE SAs: {e}"));
            return;
        }
        self.install_children(&doc.content);
        if let Some(peer) = doc.content.esp_peer {
            if doc.content.peer_on_data_socket {
                self.path.set_peer(peer);
            } else if let Some(esp) = self.esp() {
                esp.set_peer(peer);
            }
        }
        let now_ms = now_ms();
        let m = &self.path.metrics.sync;
        m.installs.inc();
        let Some(s) = self.sync.as_mut() else { return };
        s.engine.installed(doc, now_ms);
        let latency = s.engine.latency_ms(now_ms);
        m.latency.observe(latency as f64 / 1000.0);
        let _ = s.acks.send(doc.generation);
        tracing::info!(
            generation = doc.generation, owner = ?doc.owner, latency_ms = latency,
            ike_sas = doc.content.ike_spis.len(), child_sas = doc.content.children.len(),
            "shared SA state installed"
        );
    }

    fn sync_error(&mut self, why: String) {
        self.path.metrics.sync.errors.inc();
        tracing::error!(error = %why, "the shared SA state cannot be installed");
        if let Some(s) = self.sync.as_mut() {
            s.last_error = Some(why);
        }
    }

    /// ESP: the Child SAs of `content` installed, the others retired.
    fn install_children(&mut self, content: &Content) {
        if self.esp().is_none() {
            return;
        }
        let slot = self.slot().unwrap_or(SenderSlot::SINGLE);
        let replay = self.replay;
        let wanted: BTreeMap<u32, &ChildDoc> =
            content.children.iter().map(|c| (c.spi_in(), c)).collect();
        let Some(s) = self.sync.as_mut() else { return };
        let gone: Vec<_> = s
            .children
            .iter()
            .filter(|(spi, _)| !wanted.contains_key(spi))
            .map(|(spi, c)| (*spi, c.spi_out()))
            .collect();
        for (spi_in, spi_out) in gone {
            self.forget_child(spi_in, spi_out);
            if let Some(s) = self.sync.as_mut() {
                s.children.remove(&spi_in);
            }
        }
        for (spi_in, c) in wanted {
            let Some(s) = self.sync.as_mut() else { return };
            if let Some(have) = s.children.get_mut(&spi_in) {
                if c.outbound_active
                    && !have.outbound_active
                    && let (Some(o), Some(esp)) =
                        (self.pending.remove(&c.spi_out()), self.path.encap.as_esp())
                {
                    esp.activate_outbound(o);
                }
                have.outbound_active = c.outbound_active;
                continue;
            }
            let built = Inbound::new(c.inbound.clone(), replay)
                .and_then(|i| Outbound::restore_shared(c.outbound.clone(), slot).map(|o| (i, o)));
            let (inbound, outbound) = match built {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, spi_in = %format!("{spi_in:08x}"), "cannot install a shared Child SA");
                    continue;
                }
            };
            s.children.insert(spi_in, c.clone());
            self.put_child(inbound, outbound, c.outbound_active);
        }
    }

    /// Sync mode: a message for an IKE SA we have from the Secret, while we do not own it,
    /// waits for a claim (`true`: it was taken aside).
    pub(super) fn defer_for_claim(&mut self, port: u16, from: SocketAddrV4, bytes: &[u8]) -> bool {
        let Some(s) = self.sync.as_mut() else {
            return false;
        };
        match share::header_spis(bytes) {
            Some(spis) if s.engine.needs_claim(spis) => {
                s.claim_first = Some((port, from, bytes.to_vec()));
                true
            }
            _ => false,
        }
    }

    /// Claims ownership: read the latest state, write it back with owner = me (CAS), install
    /// it, activate the IKE SAs. `false` if another replica won or the API failed.
    pub(super) async fn claim(&mut self) -> bool {
        let Some(s) = self.sync.as_mut() else {
            return false;
        };
        let latest = match tokio::time::timeout(WRITE_TIMEOUT, s.store.get()).await {
            Ok(Ok(secret)) => secret,
            Ok(Err(e)) => {
                self.path.metrics.sync.claimed("error");
                s.last_error = Some(format!("claim: {e}"));
                return false;
            }
            Err(_) => {
                self.path.metrics.sync.claimed("error");
                s.last_error = Some("claim: the API did not answer".into());
                return false;
            }
        };
        let Some(Ok(doc)) = sk::state(&latest) else {
            self.path.metrics.sync.claimed("error");
            self.on_secret(latest);
            return false;
        };
        let claim = s.engine.claim(&doc, now_ms());
        let newer = doc.generation > s.engine.generation();
        s.base = Some(latest);
        if newer {
            // The old owner's latest (its pending request too) before we answer anything.
            self.install_remote(&doc);
        }
        match self.write(claim).await {
            Written::Yes => {
                self.endpoint.set_passive(false, Instant::now());
                self.path.metrics.sync.claimed("ok");
                tracing::info!(
                    generation = self.sync.as_ref().map_or(0, |s| s.engine.generation()),
                    "claimed IKE ownership"
                );
                true
            }
            Written::Lost => {
                self.path.metrics.sync.claimed("lost");
                false
            }
            Written::Failed => {
                self.path.metrics.sync.claimed("error");
                false
            }
        }
    }

    /// Writes `doc` with compare-and-swap, retrying while the tunnel stays ours.
    async fn write(&mut self, mut doc: StateDoc) -> Written {
        for _ in 0..WRITE_TRIES {
            let Some(s) = self.sync.as_mut() else {
                return Written::Failed;
            };
            let base = match s.base.clone() {
                Some(b) => b,
                None => match tokio::time::timeout(WRITE_TIMEOUT, s.store.get()).await {
                    Ok(Ok(b)) => b,
                    _ => return Written::Failed,
                },
            };
            let r =
                tokio::time::timeout(WRITE_TIMEOUT, s.store.publish(&base, &doc, s.engine.me()))
                    .await;
            let m = &self.path.metrics.sync;
            match r {
                Ok(Ok(written)) => {
                    m.published("ok");
                    m.wrote("state", 1);
                    s.publishes += 1;
                    s.base = Some(written);
                    s.engine.written(&doc, now_ms());
                    self.sync_gauges();
                    return Written::Yes;
                }
                Ok(Err(WriteError::Conflict)) => {
                    m.published("conflict");
                    m.wrote("state", 1);
                    s.conflicts += 1;
                    let latest = match tokio::time::timeout(WRITE_TIMEOUT, s.store.get()).await {
                        Ok(Ok(l)) => l,
                        _ => return Written::Failed,
                    };
                    let state = sk::state(&latest).and_then(Result::ok);
                    match s.engine.conflict(&doc, state.as_ref(), now_ms()) {
                        Conflict::Retry(d) => {
                            s.base = Some(latest);
                            doc = d;
                        }
                        Conflict::Lost => {
                            tracing::info!("another replica owns the tunnel now: following it");
                            self.on_secret(latest);
                            return Written::Lost;
                        }
                    }
                }
                Ok(Err(e)) => {
                    m.published("error");
                    s.last_error = Some(e.to_string());
                    tracing::warn!(error = %e, "cannot publish the SA state");
                    return Written::Failed;
                }
                Err(_) => {
                    m.published("error");
                    s.last_error = Some("publish: the API did not answer in time".into());
                    tracing::warn!("publishing the SA state timed out");
                    return Written::Failed;
                }
            }
        }
        Written::Failed
    }

    /// After a step of the core (its outputs applied, its messages held): publish first if
    /// the shared state changed, then release the messages; drop them if the write failed.
    pub(super) async fn write_ahead(&mut self) {
        let content = self.exported();
        let Some(s) = self.sync.as_mut() else { return };
        let sends = !s.held.is_empty();
        let step = s.engine.after_step(&content, sends, now_ms());
        let release = match step {
            Step::Send => true,
            Step::PublishFirst(doc) => {
                let was_owner = s.engine.is_owner();
                let ok = matches!(self.write(doc).await, Written::Yes);
                if ok && !was_owner {
                    // An IKE SA negotiated here: we own the tunnel now, all its SAs active.
                    self.endpoint.set_passive(false, Instant::now());
                    tracing::info!("published a new IKE SA: this replica owns the tunnel");
                }
                ok
            }
        };
        let Some(s) = self.sync.as_mut() else { return };
        let held = std::mem::take(&mut s.held);
        if release {
            for (path, bytes) in held {
                self.send_now(path, &bytes);
            }
        } else if !held.is_empty() {
            tracing::info!(
                messages = held.len(),
                "IKE messages dropped: their state is not published"
            );
        }
    }

    /// Timers of sync: a lazy publish, the liveness claim.
    pub(super) async fn sync_due(&mut self) {
        let content = self.exported();
        let Some(s) = self.sync.as_mut() else { return };
        match s.engine.due(&content, now_ms()) {
            Some(Due::Publish(doc)) => {
                if !matches!(self.write(doc).await, Written::Yes)
                    && let Some(s) = self.sync.as_mut()
                {
                    s.engine.postpone(now_ms());
                }
            }
            Some(Due::Claim) => {
                tracing::info!("the owner did not rekey in time: claiming the tunnel");
                if !self.claim().await
                    && let Some(s) = self.sync.as_mut()
                {
                    s.engine.postpone(now_ms());
                }
            }
            None => {}
        }
    }

    /// When `sync_due` has something to do.
    pub(super) fn sync_deadline(&self) -> Option<tokio::time::Instant> {
        let s = self.sync.as_ref()?;
        let due = s.engine.next_due_ms()?;
        let wait = due.saturating_sub(now_ms());
        Some(tokio::time::Instant::now() + Duration::from_millis(wait))
    }

    /// Shutdown in sync mode: no Delete; release ownership if ours.
    pub(super) async fn sync_release(&mut self) {
        let content = self.exported();
        let Some(s) = self.sync.as_mut() else { return };
        if let Some(doc) = s.engine.release(&content, now_ms()) {
            match self.write(doc).await {
                Written::Yes => tracing::info!("IKE ownership released"),
                _ => tracing::warn!("could not release IKE ownership"),
            }
        }
    }

    /// An installed Child SA (negotiated here) joins the shared state.
    pub(super) fn share_child(&mut self, inbound: &Inbound, outbound: &Outbound, active: bool) {
        let Some(s) = self.sync.as_mut() else { return };
        let mut state = outbound.state();
        state.seq = 0;
        s.children.insert(
            inbound.spi(),
            ChildDoc {
                inbound: inbound.params().clone(),
                outbound: state,
                outbound_active: active,
            },
        );
    }

    pub(super) fn share_activation(&mut self, outbound_spi: u32) {
        if let Some(s) = self.sync.as_mut() {
            for c in s.children.values_mut() {
                if c.spi_out() == outbound_spi {
                    c.outbound_active = true;
                }
            }
        }
    }

    pub(super) fn share_retire(&mut self, inbound_spi: u32) {
        if let Some(s) = self.sync.as_mut() {
            s.children.remove(&inbound_spi);
        }
    }
}

pub(super) enum Written {
    Yes,
    Lost,
    Failed,
}
