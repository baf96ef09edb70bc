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
pub mod packages;
pub mod poll_and_render;
pub mod pull_request_plans;
pub mod rollout;
pub mod scheduler;
pub mod stages;
pub mod units;

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
use drift_handling::DriftHandling;
use scheduler::{Scheduler, SchedulerOptions};

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
    );

    let options = SchedulerOptions {
        health_timeout: config.sync.health_timeout,
        ..SchedulerOptions::default()
    };
    let clusters: Vec<String> = config.clusters.iter().map(|c| c.name.clone()).collect();
    let terms = tokio::spawn(leadership_terms(
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
            },
        },
        inputs.desired,
        leadership.leading.clone(),
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

/// Whether this replica leads, and the election task deciding it.
struct Leadership {
    leading: watch::Receiver<bool>,
    election: Option<tokio::task::JoinHandle<()>>,
    /// Without election, the sender lives as long as the daemon: this replica leads.
    _always_leading: Option<watch::Sender<bool>>,
}

impl Leadership {
    fn start(
        config: &Config,
        syncers: &BTreeMap<ClusterName, Arc<Syncer>>,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Leadership> {
        let (leading_tx, leading) = watch::channel(config.leader_election.is_none());
        let Some(le) = &config.leader_election else {
            return Ok(Leadership {
                leading,
                election: None,
                _always_leading: Some(leading_tx),
            });
        };
        let syncer = syncers
            .get(&ClusterName(le.cluster.clone()))
            .context("leader election cluster is not configured")?;
        let settings = leader::LeaseSettings {
            owner: config.sync.owner.clone(),
            ..leader::LeaseSettings::new(
                &config.sync.namespace,
                &le.lease_name,
                &leader::default_identity(),
                le.lease_duration,
            )
        };
        let election = tokio::spawn(leader::run(
            syncer.client().clone(),
            settings,
            leading_tx,
            stop,
        ));
        Ok(Leadership {
            leading,
            election: Some(election),
            _always_leading: None,
        })
    }
}

/// Reports → board, metrics, commit statuses and notifications, on a task of their own.
/// The rollout gate hears every report too, and is woken when one may open a stage.
fn spawn_reporting(
    board: Arc<Board>,
    metrics: Arc<metrics::Metrics>,
    (statuses, notifications): (Option<Arc<crate::status::Notifier>>, notifications::Shared),
    gate: Arc<gatekeeper::Gatekeeper>,
) -> (mpsc::Sender<SyncReport>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<SyncReport>(4096);
    let task = tokio::spawn(async move {
        while let Some(r) = rx.recv().await {
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
    let mut debouncer = notify_debouncer_mini::new_debouncer(
        Duration::from_millis(500),
        move |res: notify_debouncer_mini::DebounceEventResult| {
            let Ok(events) = res else { return };
            if !events.iter().any(|e| e.path.file_name() == name.as_deref()) {
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
    // Watch the folder: editors replace files rather than write them in place.
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    debouncer
        .watcher()
        .watch(
            dir,
            notify_debouncer_mini::notify::RecursiveMode::NonRecursive,
        )
        .context("watching the config file")?;
    Ok(debouncer)
}

/// What every term of leadership needs.
struct TermContext {
    syncers: BTreeMap<ClusterName, Arc<Syncer>>,
    options: SchedulerOptions,
    reports: mpsc::Sender<SyncReport>,
    board: Arc<Board>,
    metrics: Arc<metrics::Metrics>,
    clusters: Vec<String>,
    resync: Duration,
    shutdown_timeout: Duration,
    drift: crate::drift::DriftSettings,
    statuses: Option<Arc<crate::status::Notifier>>,
    notifications: notifications::Shared,
    gate: Arc<gatekeeper::Gatekeeper>,
    units: units::UnitSettings,
}

/// One scheduler (and one set of drift watches) per term of leadership: created when
/// this replica starts leading, drained when it stops. Returns the units abandoned at
/// shutdown.
async fn leadership_terms(
    ctx: TermContext,
    mut desired: watch::Receiver<Option<Arc<DesiredState>>>,
    mut leading: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) -> Vec<crate::desired::UnitId> {
    loop {
        ctx.board.set_leading(*leading.borrow());
        tokio::select! {
            _ = until(&mut stop, true) => return Vec::new(),
            open = until(&mut leading, true) => if !open { return Vec::new() },
        }
        ctx.board.set_leading(true);
        tracing::info!("leading: scheduling units");
        let (term_reports, reports) = mpsc::channel(4096);
        let (resumed_tx, mut resumed) = mpsc::channel(1024);
        let scheduler = Arc::new(Scheduler::new(
            ctx.syncers.clone(),
            ctx.options.clone(),
            term_reports,
        ));
        let unit_objects = units::UnitsTerm::start(
            &ctx.syncers,
            &ctx.units,
            ctx.board.clone(),
            scheduler.clone(),
            reports,
            ctx.reports.clone(),
            resumed_tx,
        );
        // A suspended unit must be known so before it is handed any work.
        unit_objects.ready(Duration::from_secs(10)).await;
        let drift = DriftHandling::start(
            &ctx.syncers,
            &ctx.drift,
            scheduler.clone(),
            ctx.board.clone(),
            ctx.metrics.clone(),
            ctx.notifications.clone(),
        );
        let mut tick = tokio::time::interval(ctx.resync);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        desired.mark_changed();
        let mut latest: Option<Arc<DesiredState>> = None;
        let mut recheck: Option<tokio::time::Instant> = None;
        let ended_by_stop = loop {
            let step_rollout = tokio::select! {
                _ = until(&mut stop, true) => break true,
                open = until(&mut leading, false) => break !open,
                changed = desired.changed() => {
                    if changed.is_err() { break true }
                    let state = desired.borrow_and_update().clone();
                    if let Some(state) = state {
                        let shown = ctx.board.rendered(&state, &ctx.clusters);
                        for unit in &shown.failed {
                            ctx.metrics.render_failed(unit);
                            if let Some(n) = &ctx.notifications {
                                n.render_failed(unit, &state);
                            }
                        }
                        for unit in &shown.dropped {
                            ctx.metrics.forget(unit);
                        }
                        ctx.metrics.policy_debt(&state);
                        if let Some(s) = &ctx.statuses {
                            s.rendered(&state);
                        }
                        if let Some(n) = &ctx.notifications {
                            n.rendered(&state);
                        }
                        if !state.platform_failed {
                            let (plan, at) = ctx.gate.plan(&state);
                            recheck = at;
                            scheduler.apply_staged(&state, &plan.held_work()).await;
                            units::held_back_by_suspension(&scheduler, ctx.statuses.as_deref(), &state);
                            drift.ensure(&state, &plan.held_running()).await;
                            latest = Some(state);
                        }
                    }
                    false
                }
                Some(unit) = resumed.recv() => {
                    if let Some(state) = &latest {
                        units::resume_unit(&scheduler, &ctx.gate, state, &unit);
                    }
                    false
                }
                _ = ctx.gate.woken() => true,
                _ = gatekeeper::sleep_until(recheck) => true,
                _ = tick.tick() => { scheduler.trigger_all(); false }
            };
            if step_rollout {
                recheck = None;
                if let Some(state) = &latest {
                    let (at, watch) = ctx.gate.step(&scheduler, state);
                    recheck = at;
                    if let Some(held) = watch {
                        drift.ensure(state, &held).await;
                    }
                }
            }
        };
        // The Units' writes stop before anything else of the term.
        unit_objects.stop().await;
        drift.stop();
        if ended_by_stop {
            return scheduler.shutdown(ctx.shutdown_timeout).await;
        }
        // Fenced: another replica may lead already, so nothing of this term may write
        // again. In-flight syncs stop at their next request, as a crash would stop them;
        // the inventory recorded before every apply keeps that safe.
        let cancelled = scheduler.shutdown(Duration::ZERO).await;
        tracing::warn!(
            cancelled = cancelled.len(),
            "lost leadership: in-flight syncs cancelled, no further writes"
        );
    }
}

/// Waits until a watched flag has `value`; false when the sender is gone.
async fn until(rx: &mut watch::Receiver<bool>, value: bool) -> bool {
    rx.wait_for(|v| *v == value).await.is_ok()
}
