//! `magictunnel-operator`: `crd` prints the CRD; `run` runs the controller.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::core::PartialObjectMeta;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, reflector};
use kube::runtime::utils::Predicate as _;
use kube::runtime::{Controller, WatchStreamExt, predicates, watcher};
use kube::{Api, Client, ResourceExt};
use operator::build::MANAGED_BY;
use operator::cli::{Cli, Command, LogFormat, RunArgs};
use operator::crd::{MagicTunnel, crd_yaml};
use operator::leader::{self, Elector};
use operator::metrics::Metrics;
use operator::pod_events;
use operator::pod_status::{self, TunnelKey};
use operator::reconcile::{Context, error_policy, reconcile};
use operator::triggers::{self, Tracker};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", crd_yaml());
            Ok(())
        }
        Command::Run(args) => run(*args).await,
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let settings = args.settings()?;
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let metrics = Arc::new(Metrics::default());
    let lease = args.lease()?;
    let poll = args.status_poll();
    // Followers serve /healthz and /metrics (leader 0) while they wait.
    let http = tokio::spawn(serve(args.listen, metrics.clone()));
    // The Lease has a client (and connections) of its own: renewals must not queue behind a
    // burst of reconcile requests, or a busy leader would give up its Lease.
    let lease_client = match lease {
        Some(_) => Some(
            Client::try_default()
                .await
                .context("connecting to the Kubernetes API")?,
        ),
        None => None,
    };
    let mut elector = lease
        .zip(lease_client)
        .map(|(config, client)| Elector::new(client, config));
    if let Some(e) = elector.as_mut() {
        tracing::info!(lease = %e.config().name, namespace = %e.config().namespace, identity = %e.config().identity, "waiting to become the leader");
        tokio::select! {
            () = e.acquire() => {}
            () = terminated() => {
                http.abort();
                return Ok(());
            }
        }
    }
    metrics.leader.set(1);

    let tunnels: Api<DeserializeGuard<MagicTunnel>> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    // Metadata only: the operator never caches key material.
    let secrets: Api<PartialObjectMeta<Secret>> = Api::all(client.clone());
    let owned =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}"));

    // One watch of the tunnels feeds three things in order: the cross-object index (which
    // answers who else must be reconciled), the controller's cache, and the controller's own
    // trigger. The index is updated first, so a reconcile never sees it behind the cache.
    let tracker = Arc::new(Tracker::new(&settings));
    let (neighbours, triggered) = futures::channel::mpsc::unbounded();
    let (store, writer) = reflector::store::<DeserializeGuard<MagicTunnel>>();
    let tunnel_events = watcher(tunnels, watcher::Config::default())
        .default_backoff()
        .map_ok({
            let tracker = tracker.clone();
            move |event| {
                for key in tracker.observe(&event) {
                    // Only fails once the controller has stopped.
                    let _ = neighbours.unbounded_send(triggers::reference(&key));
                }
                event
            }
        });
    // A tunnel is reconciled for its own events only when its spec (generation) or annotations
    // (rotate-psk) changed: its own status writes do not reconcile it again. The index has seen
    // every event by then, so a status change that matters to others (the HTTP port) still
    // reaches them; a status edited by hand is put right at the next resync.
    let own_changes = reflector(writer, tunnel_events)
        .applied_objects()
        .predicate_filter(
            predicates::generation.combine(predicates::annotations),
            Default::default(),
        );
    let controller = Controller::for_stream(own_changes, store.clone()).with_config(
        kube::runtime::controller::Config::default().concurrency(args.max_concurrent_reconciles),
    );
    let reporter = Reporter {
        controller: "magictunnel-operator".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    // The owned Secrets (config, generated PSK, SA state) are watched for their metadata; the
    // store tells a reconcile whether a tunnel has an SA-state Secret to prune. A tunnel pod's
    // publish to its SA-state Secret reconciles the tunnel, which reads the new summary.
    let (owned_secrets, owned_secrets_writer) = reflector::store::<PartialObjectMeta<Secret>>();
    let owned_secret_events = reflector(
        owned_secrets_writer,
        watcher(secrets.clone(), owned.clone()).default_backoff(),
    )
    .touched_objects();
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            settings,
            tracker.clone(),
            Recorder::new(client.clone(), reporter),
            metrics.clone(),
        )
        .with_owned_secrets(owned_secrets),
    );

    // A Secret named in ipsec.pskSecretRef may appear or change after the tunnel.
    let referenced_by = move |secret: PartialObjectMeta<Secret>| {
        tracker
            .referencing_secret(secret.namespace().as_deref(), &secret.name_any())
            .iter()
            .map(triggers::reference)
            .collect::<Vec<ObjectRef<DeserializeGuard<MagicTunnel>>>>()
    };

    // The pod-status poller asks for a reconcile of a tunnel whose pods said something new.
    let (changed_tx, mut changed_rx) = tokio::sync::mpsc::channel::<TunnelKey>(1024);
    let poller = poll.map(|settings| {
        let store = store.clone();
        let exists = move |k: &TunnelKey| {
            store
                .get(&ObjectRef::new(&k.name).within(&k.namespace))
                .is_some()
        };
        tokio::spawn(pod_status::run(
            ctx.pod_status.clone(),
            settings,
            exists,
            changed_tx,
        ))
    });
    let status_changes = futures::stream::poll_fn(move |cx| changed_rx.poll_recv(cx))
        .map(|k| ObjectRef::new(&k.name).within(&k.namespace));
    tracing::info!(listen = %args.listen, "operator starting");
    let run = controller
        .reconcile_on(futures::stream::select(status_changes, triggered))
        // Only the pod changes a reconcile reads (operator/src/pod_events.rs).
        .owns_stream(pod_events::relevant(
            watcher(pods, owned.clone()).default_backoff(),
        ))
        .owns_stream(owned_secret_events)
        // The SA-sharing objects of anycast IPsec tunnels: one removed or changed by hand is
        // put back at once.
        .owns(
            Api::<PartialObjectMeta<ServiceAccount>>::all(client.clone()),
            owned.clone(),
        )
        .owns(
            Api::<PartialObjectMeta<Role>>::all(client.clone()),
            owned.clone(),
        )
        .owns(
            Api::<PartialObjectMeta<RoleBinding>>::all(client.clone()),
            owned,
        )
        .watches(secrets, watcher::Config::default(), referenced_by)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile did not complete");
            }
        });
    leader::lead(elector.as_mut(), run).await;
    if let Some(p) = poller {
        p.abort();
    }
    http.abort();
    Ok(())
}

/// SIGTERM or SIGINT.
async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn serve(listen: SocketAddr, metrics: Arc<Metrics>) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(render_metrics))
        .with_state(metrics);
    match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "HTTP server stopped");
            }
        }
        Err(e) => tracing::error!(error = %e, %listen, "cannot listen"),
    }
}

async fn render_metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
}
