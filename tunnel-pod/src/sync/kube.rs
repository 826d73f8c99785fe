//! The thin Kubernetes client of SA synchronisation: one Secret, three verbs — `get`, `watch`
//! (fieldSelector `metadata.name=<secret>`, from the resourceVersion of the last read) and
//! `update` (a PUT carrying the resourceVersion read last: compare-and-swap). No `list`: the
//! Role grants get/watch/update on this one Secret (`resourceNames`) and nothing else.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};

use super::doc::{
    ACKS_KEY, Ack, DocError, STATE_KEY, SUMMARY_KEY, StateDoc, parse_acks, rfc3339_ms,
};

/// Why a write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The resourceVersion moved (409): read again and decide.
    #[error("the Secret changed since it was read (conflict)")]
    Conflict,
    #[error(transparent)]
    Doc(#[from] DocError),
    #[error("Kubernetes API: {0}")]
    Api(#[from] kube::Error),
}

/// The Secret of one tunnel.
#[derive(Clone)]
pub struct SecretStore {
    api: Api<Secret>,
    name: String,
}

impl SecretStore {
    /// `kubeconfig`: a file, else the in-cluster config or `KUBECONFIG` (kube's inference).
    pub async fn connect(kubeconfig: Option<&Path>, namespace: &str, name: &str) -> Result<Self> {
        let config = match kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path)
                    .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .context("the kubeconfig")?
            }
            None => kube::Config::infer()
                .await
                .context("no Kubernetes config (in-cluster, KUBECONFIG or --kubeconfig)")?,
        };
        let client = kube::Client::try_from(config).context("the Kubernetes client")?;
        Ok(Self::new(client, namespace, name))
    }

    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        SecretStore {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub async fn get(&self) -> Result<Secret, kube::Error> {
        self.api.get(&self.name).await
    }

    /// PUT `secret` with its resourceVersion: `Conflict` if the Secret changed since.
    pub async fn replace(&self, secret: &Secret) -> Result<Secret, WriteError> {
        match self
            .api
            .replace(&self.name, &PostParams::default(), secret)
            .await
        {
            Ok(s) => Ok(s),
            Err(kube::Error::Api(s)) if s.code == 409 => Err(WriteError::Conflict),
            Err(e) => Err(WriteError::Api(e)),
        }
    }

    /// Writes `doc` (state.json + summary.json) on top of `base` (the Secret as read last),
    /// with the writer's ack of it in the same write (acks.json: the writer has what it wrote).
    pub async fn publish(
        &self,
        base: &Secret,
        doc: &StateDoc,
        writer: &str,
    ) -> Result<Secret, WriteError> {
        let secret = with_state(base, doc, writer)?;
        self.replace(&secret).await
    }

    /// Records in acks.json that `me` installed `generation`; retries on conflict (re-reading).
    /// Returns the number of writes tried.
    pub async fn ack(&self, me: &str, generation: u64, now_ms: u64) -> Result<u32, WriteError> {
        let mut tries = 0;
        loop {
            let base = self.get().await?;
            let mut acks = parse_acks(data(&base, ACKS_KEY)).unwrap_or_default();
            if acks.get(me).is_some_and(|a| a.generation >= generation) {
                return Ok(tries);
            }
            acks.insert(
                me.to_string(),
                Ack {
                    generation,
                    at: rfc3339_ms(now_ms),
                },
            );
            let mut s = base.clone();
            let bytes = serde_json::to_vec(&acks)
                .map_err(|e| DocError::Malformed(ACKS_KEY, super::doc::where_(&e)))?;
            set(&mut s, ACKS_KEY, bytes);
            tries += 1;
            match self.replace(&s).await {
                Ok(_) => return Ok(tries),
                Err(WriteError::Conflict) if tries < 10 => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Watches the Secret from `resource_version` until `tx` is closed: every new version of
    /// it is sent. The watch is re-opened when the server ends it; after an error (or a 410
    /// Gone) the Secret is read again (its version sent) and the watch restarts from there,
    /// with a backoff from 0.5 s up to 30 s while errors repeat.
    pub async fn watch(self, mut resource_version: String, tx: tokio::sync::mpsc::Sender<Secret>) {
        let field = format!("metadata.name={}", self.name);
        let mut backoff = Duration::from_millis(500);
        loop {
            if tx.is_closed() {
                return;
            }
            let wp = WatchParams::default().fields(&field).timeout(290);
            let mut failed = false;
            match self.api.watch(&wp, &resource_version).await {
                Ok(stream) => {
                    let mut stream = stream.boxed();
                    loop {
                        match stream.try_next().await {
                            Ok(Some(WatchEvent::Added(s) | WatchEvent::Modified(s))) => {
                                backoff = Duration::from_millis(500);
                                if let Some(rv) = s.metadata.resource_version.clone() {
                                    resource_version = rv;
                                }
                                if tx.send(s).await.is_err() {
                                    return;
                                }
                            }
                            Ok(Some(WatchEvent::Bookmark(b))) => {
                                resource_version = b.metadata.resource_version;
                            }
                            Ok(Some(WatchEvent::Deleted(_))) => {
                                tracing::warn!(secret = %self.name, "the SA Secret was deleted");
                            }
                            Ok(Some(WatchEvent::Error(e))) => {
                                tracing::info!(code = e.code, reason = %e.reason, "SA Secret watch ended");
                                failed = true;
                                break;
                            }
                            Ok(None) => break,
                            Err(e) => {
                                tracing::warn!(error = %e, "SA Secret watch failed");
                                failed = true;
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the SA Secret");
                    failed = true;
                }
            }
            if failed {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                match self.get().await {
                    Ok(s) => {
                        if let Some(rv) = s.metadata.resource_version.clone() {
                            resource_version = rv;
                        }
                        if tx.send(s).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read the SA Secret"),
                }
            }
        }
    }
}

/// One data key of a Secret.
pub fn data<'a>(s: &'a Secret, key: &str) -> Option<&'a [u8]> {
    s.data.as_ref()?.get(key).map(|b| b.0.as_slice())
}

fn set(s: &mut Secret, key: &str, bytes: Vec<u8>) {
    s.data
        .get_or_insert_with(BTreeMap::new)
        .insert(key.to_string(), ByteString(bytes));
}

/// The state a Secret holds: `None` while it has none (created empty by the operator).
pub fn state(s: &Secret) -> Option<Result<StateDoc, DocError>> {
    data(s, STATE_KEY)
        .filter(|b| !b.is_empty())
        .map(StateDoc::parse)
}

/// `base` with `doc` as state.json, its summary.json and `writer`'s ack of it in acks.json
/// (same resourceVersion: a CAS write; a malformed acks.json starts afresh).
pub fn with_state(base: &Secret, doc: &StateDoc, writer: &str) -> Result<Secret, DocError> {
    let mut s = base.clone();
    set(&mut s, STATE_KEY, doc.to_bytes()?);
    let mut acks = parse_acks(data(base, ACKS_KEY)).unwrap_or_default();
    acks.insert(
        writer.to_string(),
        Ack {
            generation: doc.generation,
            at: rfc3339_ms(doc.published_at_ms),
        },
    );
    let acks = serde_json::to_vec(&acks)
        .map_err(|e| DocError::Malformed(ACKS_KEY, super::doc::where_(&e)))?;
    set(&mut s, ACKS_KEY, acks);
    let summary = serde_json::to_vec(&doc.summary())
        .map_err(|e| DocError::Malformed(SUMMARY_KEY, super::doc::where_(&e)))?;
    set(&mut s, SUMMARY_KEY, summary);
    // Only data is ours: managed fields need not travel back.
    s.metadata.managed_fields = None;
    Ok(s)
}
