//! The long-running process: rendered desired states (polled from the Git or directory
//! source, `poll_and_render`), a resync timer and drift (`drift_handling`) hand work to one
//! scheduler of per-unit workers (`scheduler`); its reports go to the status board
//! (`board`), the metrics (`metrics`) and commit statuses. Pull requests get plans
//! (`pull_request_plans`). Only the leader (`leader`) schedules; every replica serves HTTP.
//!
//! Shutdown: stop taking work, let in-flight syncs finish within the configured
//! deadline, say what was abandoned, release the lease.

pub mod audit;
pub mod board;
mod drift_handling;
mod gatekeeper;
pub mod leader;
pub mod metrics;
pub mod notifications;
pub mod ownership;
pub mod packages;
pub mod poll_and_render;
pub mod pull_request_plans;
mod replicas;
pub mod rollout;
pub mod scheduler;
pub mod shards;
pub mod stages;
mod terms;
mod unit_writes;
pub mod units;
mod worker;

/// The former name of [`poll_and_render`], kept for callers outside the crate.
pub use poll_and_render as feed;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, watch};

use crate::cluster::Cluster;
use crate::config::Config;
use crate::desired::{ClusterName, DesiredState};
use crate::status::SyncReport;
use crate::sync::{SyncOptions, Syncer};
use board::Board;
use scheduler::SchedulerOptions;
use terms::{Leadership, TermContext};

/// What the daemon is fed with from outside: rendered states and extra HTTP routes.
pub struct Inputs {
    /// The newest render (None until the first one).
    pub desired: watch::Receiver<Option<Arc<DesiredState>>>,
    /// Mounted next to the daemon's own routes (webhooks).
    pub routes: axum::Router,
    /// Older revisions of the source, for units a rollout stage holds after a restart.
    pub history: Option<crate::source::History>,
    /// The age keys such an older revision is rendered with, as the newest one is.
    pub keys: Arc<crate::sops::Keyring>,
    /// How the packages of such an older revision are expanded.
    pub packages: Arc<packages::Packages>,
    /// The source polled on request (a Unit's reconcile with source), when there is one.
    pub poll_now: Option<poll_and_render::PollNow>,
}

/// Handles a caller (tests, `main`) keeps on a running daemon.
#[derive(Clone)]
pub struct Handles {
    pub board: Arc<Board>,
    pub registry: prometheus::Registry,
    pub syncers: BTreeMap<ClusterName, Arc<Syncer>>,
    /// Commit statuses, when configured (and the source has commits).
    pub statuses: Option<Arc<crate::status::Notifier>>,
    /// Notifications of state changes, when receivers are configured.
    pub notifications: notifications::Shared,
}

impl Handles {
    /// Fresh handles with a connection to every configured cluster.
    pub async fn connect(config: &Config) -> anyhow::Result<Handles> {
        let registry = prometheus::Registry::new();
        let statuses = match &config.commit_status {
            Some(cs)
                if matches!(
                    config.source.location,
                    crate::config::SourceLocation::Git { .. }
                ) =>
            {
                Some(Arc::new(
                    crate::status::Notifier::start(
                        cs,
                        &registry,
                        config.clusters.iter().map(|c| c.name.clone()),
                    )
                    .context("commit statuses")?,
                ))
            }
            Some(_) => {
                tracing::warn!(
                    "commitStatus is set but the source is a directory, which has no commits: no statuses are posted"
                );
                None
            }
            None => None,
        };
        let notifications = notifications::start(&config.notifications, &registry)?;
        Ok(Handles {
            board: Arc::new(Board::new()),
            registry,
            syncers: connect(config).await?,
            statuses,
            notifications,
        })
    }
}

/// Connects to every configured cluster. Nothing is requested from the servers yet, so
/// an unreachable cluster is reported by its units, not here.
pub async fn connect(config: &Config) -> anyhow::Result<BTreeMap<ClusterName, Arc<Syncer>>> {
    let mut out = BTreeMap::new();
    for c in &config.clusters {
        let cluster = Cluster::connect(c, config.sync.concurrency).await?;
        out.insert(
            ClusterName(c.name.clone()),
            Arc::new(Syncer::new(
                Arc::new(cluster),
                SyncOptions::from(&config.sync).with_human_managers(&config.drift.human_managers),
            )),
        );
    }
    Ok(out)
}

/// Runs until `shutdown` resolves, then drains.
pub async fn run(
    config: Config,
    inputs: Inputs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let handles = Handles::connect(&config).await?;
    run_with(config, inputs, handles, shutdown).await
}

/// [`run`] with the handles made by the caller, so tests can watch the board.
pub async fn run_with(
    config: Config,
    inputs: Inputs,
    handles: Handles,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Handles {
        board,
        registry,
        syncers,
        statuses,
        notifications,
    } = handles;
    let metrics = Arc::new(metrics::Metrics::register(&registry).context("registering metrics")?);
    let (stop_tx, stop_rx) = watch::channel(false);

    // HTTP first: probes and metrics answer while everything else starts.
    let router = crate::server::router(registry.clone(), board.clone(), inputs.routes);
    let mut http_stop = stop_rx.clone();
    let addr = config.listen.http;
    let http = tokio::spawn(async move {
        let until = async move {
            let _ = http_stop.wait_for(|s| *s).await;
        };
        crate::server::serve(addr, router, until).await
    });

    let leadership = Leadership::start(&config, &syncers, stop_rx.clone())?;
    if let Some(s) = &statuses {
        s.set_scope(leadership.ownership.clone());
    }
    let shard_holders = spawn_shard_view(leadership.holders.clone(), board.clone(), &registry)?;
    let gate = Arc::new(
        gatekeeper::Gatekeeper::new(
            (metrics.clone(), statuses.clone(), board.clone()),
            (
                inputs.history.clone(),
                inputs.keys.clone(),
                inputs.packages.clone(),
            ),
            config.sync.owner.clone(),
            syncers.clone(),
        )
        .notifying(notifications.clone()),
    );
    let (report_tx, reporting) = spawn_reporting(
        board.clone(),
        metrics.clone(),
        (statuses.clone(), notifications.clone()),
        gate.clone(),
        leadership.ownership.clone(),
    );

    let options = SchedulerOptions {
        health_timeout: config.sync.health_timeout,
        units_at_once: scheduler::units_at_once(config.sync.concurrency),
        ..SchedulerOptions::default()
    };
    let clusters: Vec<String> = config.clusters.iter().map(|c| c.name.clone()).collect();
    let terms = tokio::spawn(terms::leadership_terms(
        TermContext {
            syncers,
            options,
            reports: report_tx,
            board: board.clone(),
            metrics: metrics.clone(),
            clusters,
            resync: config.sync.resync_interval,
            shutdown_timeout: config.shutdown_timeout,
            drift: crate::drift::DriftSettings {
                human_managers: config.drift.human_managers.clone(),
                reporter_instance: leader::default_identity(),
            },
            statuses: statuses.clone(),
            notifications: notifications.clone(),
            gate,
            units: units::UnitSettings {
                namespace: config.sync.namespace.clone(),
                owner: config.sync.owner.clone(),
                poll_now: inputs.poll_now.clone(),
                metrics: metrics.clone(),
                ownership: leadership.ownership.clone(),
                notifications: notifications.clone(),
                statuses: statuses.clone(),
            },
            ownership: leadership.ownership.clone(),
        },
        inputs.desired,
        leadership.held.clone(),
        leadership.active,
        stop_rx.clone(),
    ));

    shutdown.await;
    let shutdown_started = tokio::time::Instant::now();
    tracing::info!(deadline = ?config.shutdown_timeout, "shutting down: finishing in-flight syncs");
    stop_tx.send_replace(true);
    match tokio::time::timeout(config.shutdown_timeout + Duration::from_secs(1), terms).await {
        Ok(Ok(abandoned)) if !abandoned.is_empty() => {
            let names: Vec<String> = abandoned.iter().map(ToString::to_string).collect();
            tracing::warn!(units = %names.join(", "), "shutdown deadline passed; these syncs were abandoned");
        }
        Ok(_) => {}
        Err(_) => tracing::warn!("shutdown deadline passed while stopping the scheduler"),
    }
    if let Some(e) = leadership.election {
        let _ = tokio::time::timeout(Duration::from_secs(5), e).await;
    }
    shard_holders.abort();
    let _ = tokio::time::timeout(Duration::from_secs(2), reporting).await;
    if let Some(s) = &statuses {
        // The statuses owed get what is left of the deadline, and a moment at least.
        let left = config
            .shutdown_timeout
            .saturating_sub(shutdown_started.elapsed())
            .max(Duration::from_secs(2));
        let unposted = s.finish(left).await;
        if unposted > 0 {
            tracing::warn!(
                unposted,
                "shutdown deadline passed with commit statuses still owed"
            );
        }
    }
    notifications::drain(&notifications, config.shutdown_timeout, shutdown_started).await;
    match http.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e).context("HTTP server"),
        Err(e) => Err(e).context("HTTP server task"),
    }
}

/// Who holds each shard, as the election reads the Leases, onto the board (the page and
/// `/api/status` show it) and into `pontoon_shard_held{shard}` (1 for the shards this
/// replica holds).
fn spawn_shard_view(
    mut holders: watch::Receiver<Vec<shards::ShardView>>,
    board: Arc<Board>,
    registry: &prometheus::Registry,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let held = prometheus::IntGaugeVec::new(
        prometheus::Opts::new(
            "pontoon_shard_held",
            "1 for each shard this replica holds, 0 for the others (sync.shards > 1)",
        ),
        &["shard"],
    )?;
    registry
        .register(Box::new(held.clone()))
        .context("registering metrics")?;
    Ok(tokio::spawn(async move {
        loop {
            let shown = holders.borrow_and_update().clone();
            for s in &shown {
                held.with_label_values(&[s.shard.to_string().as_str()])
                    .set(i64::from(s.this_replica));
            }
            board.set_shards(shown);
            if holders.changed().await.is_err() {
                return;
            }
        }
    }))
}

/// Reports → board, metrics, commit statuses and notifications, on a task of their own
/// (those of a shard this replica no longer holds are dropped).
/// The rollout gate hears every report too, and is woken when one may open a stage.
fn spawn_reporting(
    board: Arc<Board>,
    metrics: Arc<metrics::Metrics>,
    (statuses, notifications): (Option<Arc<crate::status::Notifier>>, notifications::Shared),
    gate: Arc<gatekeeper::Gatekeeper>,
    ownership: Arc<ownership::Ownership>,
) -> (mpsc::Sender<SyncReport>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<SyncReport>(4096);
    let task = tokio::spawn(async move {
        while let Some(r) = rx.recv().await {
            // A sync of a shard given up, reporting after the fence: its new holder shows
            // and posts the unit now.
            if ownership.count() > 1 && !ownership.holds(&r.result.unit.team) {
                tracing::debug!(unit = %r.result.unit, "report of a shard no longer held; dropped");
                continue;
            }
            if !r.removal {
                gate.reported(&r.result);
            }
            let shown = board.with_render_failure(&r.result, r.removal);
            board.record(&shown, r.removal);
            metrics.observe(&shown, r.removal);
            if let Some(s) = &statuses {
                s.reported(&r);
            }
            if let Some(n) = &notifications {
                n.reported(&shown, r.removal);
            }
            log_report(&r);
        }
    });
    (tx, task)
}

fn log_report(r: &SyncReport) {
    let quiet = r.result.state == crate::sync::UnitState::Synced && r.result.writes == 0;
    if quiet {
        tracing::debug!(unit = %r.result.unit, revision = %r.result.revision, "resync: nothing to do");
        return;
    }
    tracing::info!(
        unit = %r.result.unit,
        state = r.result.state.as_str(),
        revision = %r.result.revision,
        summary = %r.result.summary(),
        conflicts = r.result.conflicts.len(),
        message = r.result.message.as_deref().unwrap_or(""),
        "sync finished"
    );
}

/// The whole daemon from its config: source, webhooks, render, scheduler, HTTP.
pub async fn run_from_source(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let handles = Handles::connect(&config).await?;
    let source_metrics = poll_and_render::SourceMetrics::register(&handles.registry)
        .context("registering metrics")?;
    let wake = Arc::new(tokio::sync::Notify::new());
    let source = crate::source::Source::from_config(&config.source)
        .map_err(|e| anyhow::anyhow!("source: {e}"))?;
    let _dir_watch = match source.directory() {
        Some(dir) => {
            Some(crate::source::dir::watch(dir, wake.clone()).map_err(|e| anyhow::anyhow!("{e}"))?)
        }
        None => None,
    };
    let history = source.history();
    let keys = poll_and_render::load_keys(&config.decryption).await?;
    let packages = Arc::new(packages::Packages::new(
        &config.packages,
        &config.charts,
        &handles.syncers,
    ));
    packages
        .register_metrics(&handles.registry)
        .context("registering chart metrics")?;
    let (desired_tx, desired_rx) = watch::channel(None);
    // Pull-request plans, for a Git source: planned wherever the webhook lands (they
    // only read), posted when commit statuses are configured.
    let (plan_requests, plans_task) = match source.git_target() {
        Some(target) => {
            let (tx, rx) = mpsc::channel(64);
            let task = tokio::spawn(pull_request_plans::plan_pull_requests(
                target.clone(),
                handles.syncers.clone(),
                config.clusters.iter().map(|c| c.name.clone()).collect(),
                handles.statuses.clone(),
                desired_rx.clone(),
                rx,
                (keys.clone(), packages.clone()),
            ));
            (Some(tx), Some(task))
        }
        None => (None, None),
    };
    let routes = poll_and_render::webhook_routes(
        &config.source,
        wake.clone(),
        &source_metrics,
        plan_requests,
    )?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (polls_tx, polls_rx) = watch::channel(poll_and_render::Polls::default());
    let poll_now = poll_and_render::PollNow {
        wake: wake.clone(),
        polls: polls_rx,
    };
    // The first render has no earlier one: the clusters say who holds each namespace.
    let owners = poll_and_render::namespace_owners(&handles.syncers).await;
    let poller = tokio::spawn(poll_and_render::poll_loop(
        source,
        config.source.clone(),
        wake,
        source_metrics,
        desired_tx,
        stop_rx,
        poll_and_render::RenderStart {
            namespace_owners: owners,
            owner: config.sync.owner.clone(),
            keys: keys.clone(),
            packages: packages.clone(),
            polls: polls_tx,
        },
    ));
    let result = run_with(
        config,
        Inputs {
            desired: desired_rx,
            routes,
            history,
            keys,
            packages,
            poll_now: Some(poll_now),
        },
        handles,
        shutdown,
    )
    .await;
    stop_tx.send_replace(true);
    let _ = poller.await;
    if let Some(t) = plans_task {
        t.abort();
    }
    result
}

/// Resolves on SIGTERM or SIGINT.
pub async fn signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => tracing::info!("SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
    }
}

/// Watches the config file; a change that validates is sent on `tx`, an invalid one is
/// logged and the running config kept.
pub fn watch_config(
    path: &std::path::Path,
    tx: mpsc::Sender<Config>,
) -> anyhow::Result<impl Drop + use<>> {
    let file = path.to_path_buf();
    let name = file.file_name().map(|n| n.to_owned());
    // Only a change of the file's content counts; the folder may hold logs and caches.
    let mut last = std::fs::read(&file).ok();
    // Watch the folder: editors replace files rather than write them in place.
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let watch = crate::source::watch::watch(
        dir,
        notify::RecursiveMode::NonRecursive,
        Duration::from_millis(500),
        move |paths| {
            if !paths.iter().any(|p| p.file_name() == name.as_deref()) {
                return;
            }
            let now = std::fs::read(&file).ok();
            if now == last {
                return;
            }
            last = now;
            match Config::load(&file) {
                Ok(c) => {
                    let _ = tx.try_send(c);
                }
                Err(e) => tracing::error!(
                    file = %file.display(),
                    "the changed config is invalid; keeping the running one:\n{e}"
                ),
            }
        },
    )
    .context("watching the config file")?;
    Ok(Box::new(watch))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reading the config file (as `watch_config` itself does) is no change: only a new
    /// content is sent, once.
    #[tokio::test]
    async fn the_config_watch_sends_a_changed_file_and_ignores_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pontoon.yaml");
        std::fs::write(dir.path().join("kubeconfig"), "").expect("write");
        let text = "source:\n  path: .\nclusters:\n  - name: a\n    kubeconfig: kubeconfig\n";
        std::fs::write(&path, text).expect("write");
        Config::load(&path).expect("the config loads");
        let (tx, mut rx) = mpsc::channel(4);
        let _watch = watch_config(&path, tx).expect("watch");
        for _ in 0..5 {
            std::fs::read(&path).expect("read");
        }
        let quiet = tokio::time::timeout(Duration::from_millis(1500), rx.recv()).await;
        assert!(quiet.is_err(), "a read was taken for a change");
        std::fs::write(&path, format!("{text}\n# edited\n")).expect("write");
        let changed = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
        assert!(matches!(changed, Ok(Some(_))), "{changed:?}");
    }
}
