//! Terms of leadership: which shards this replica holds (`leader` for one shard, `shards`
//! for several, or every shard without election), and the scheduler and drift watches of
//! one term — from the moment it holds a shard until it holds none. Within a term shards
//! come and go: a shard lost is fenced at once (its units' syncs cancelled, its teams
//! taken off the board and forgotten, the drift watches rebuilt without them) before the
//! election may release its Lease; a shard gained is scheduled from the newest render,
//! each unit starting from its inventory as after a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, watch};

use super::board::Board;
use super::drift_handling::DriftHandling;
use super::gatekeeper;
use super::metrics::Metrics;
use super::ownership::Ownership;
use super::scheduler::{Scheduler, SchedulerOptions};
use super::shards::ShardView;
use super::{leader, notifications, replicas, shards, units};
use crate::config::Config;
use crate::desired::{ClusterName, DesiredState, TeamName, UnitId};
use crate::status::SyncReport;
use crate::sync::Syncer;

/// Which shards this replica holds, and the election deciding it.
pub(super) struct Leadership {
    pub(super) held: watch::Receiver<BTreeSet<u32>>,
    /// To the election: the shards whose syncs still run.
    pub(super) active: watch::Sender<BTreeSet<u32>>,
    pub(super) holders: watch::Receiver<Vec<ShardView>>,
    pub(super) ownership: Arc<Ownership>,
    pub(super) election: Option<tokio::task::JoinHandle<()>>,
    /// Without election, the sender lives as long as the daemon: every shard is held.
    _always: Option<watch::Sender<BTreeSet<u32>>>,
    _holders: Option<watch::Sender<Vec<ShardView>>>,
}

impl Leadership {
    pub(super) fn start(
        config: &Config,
        syncers: &BTreeMap<ClusterName, Arc<Syncer>>,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Leadership> {
        let count = config.sync.shards.max(1);
        let (active, active_rx) = watch::channel(BTreeSet::new());
        let (holders_tx, holders) = watch::channel(Vec::new());
        let ownership = Arc::new(Ownership::none_of(count));
        let Some(le) = &config.leader_election else {
            let (always, held) = watch::channel(BTreeSet::from([0]));
            return Ok(Leadership {
                held,
                active,
                holders,
                ownership,
                election: None,
                _always: Some(always),
                _holders: Some(holders_tx),
            });
        };
        let syncer = syncers
            .get(&ClusterName(le.cluster.clone()))
            .context("leader election cluster is not configured")?;
        let identity = leader::default_identity();
        let settings = leader::LeaseSettings {
            owner: config.sync.owner.clone(),
            ..leader::LeaseSettings::new(
                &config.sync.namespace,
                &le.lease_name,
                &identity,
                le.lease_duration,
            )
        };
        let client = syncer.client().clone();
        let (held_tx, held) = watch::channel(BTreeSet::new());
        let election = if count == 1 {
            // One shard: the single leader Lease, as before shards existed.
            let (leading_tx, leading) = watch::channel(false);
            tokio::spawn(one_shard(leading, held_tx));
            drop(active_rx);
            tokio::spawn(leader::run(client, settings, leading_tx, stop))
        } else {
            let s = shards::ShardSettings {
                lease: settings,
                count,
                url: Some(page_url(config)),
                drain: config.shutdown_timeout,
            };
            tokio::spawn(shards::run(client, s, held_tx, active_rx, holders_tx, stop))
        };
        Ok(Leadership {
            held,
            active,
            holders,
            ownership,
            election: Some(election),
            _always: None,
            _holders: None,
        })
    }
}

/// The single Lease as shard 0: held while leading.
async fn one_shard(mut leading: watch::Receiver<bool>, held: watch::Sender<BTreeSet<u32>>) {
    loop {
        let now = if *leading.borrow_and_update() {
            BTreeSet::from([0])
        } else {
            BTreeSet::new()
        };
        held.send_replace(now);
        if leading.changed().await.is_err() {
            held.send_replace(BTreeSet::new());
            return;
        }
    }
}

/// This replica's page as the others link it: the listen address, or where it listens
/// on every address, `$POD_IP` (else the host name) and its port.
pub fn page_url(config: &Config) -> String {
    let addr = config.listen.http;
    if !addr.ip().is_unspecified() {
        return format!("http://{addr}");
    }
    let host = std::env::var("POD_IP").unwrap_or_else(|_| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".to_owned())
    });
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    format!("http://{host}:{}", addr.port())
}

/// What every term of leadership needs.
pub(super) struct TermContext {
    pub(super) syncers: BTreeMap<ClusterName, Arc<Syncer>>,
    pub(super) options: SchedulerOptions,
    pub(super) reports: mpsc::Sender<SyncReport>,
    pub(super) board: Arc<Board>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) clusters: Vec<String>,
    pub(super) resync: Duration,
    pub(super) shutdown_timeout: Duration,
    pub(super) drift: crate::drift::DriftSettings,
    pub(super) statuses: Option<Arc<crate::status::Notifier>>,
    pub(super) notifications: notifications::Shared,
    pub(super) gate: Arc<gatekeeper::Gatekeeper>,
    pub(super) units: units::UnitSettings,
    pub(super) ownership: Arc<Ownership>,
}

/// The drift watches of a term, rebuilt when the teams they select change.
struct Drift {
    handling: DriftHandling,
    teams: Option<BTreeSet<TeamName>>,
}

impl TermContext {
    fn start_drift(&self, scheduler: &Arc<Scheduler>, teams: Option<BTreeSet<TeamName>>) -> Drift {
        Drift {
            handling: DriftHandling::start(
                &self.syncers,
                &self.drift,
                scheduler.clone(),
                self.board.clone(),
                self.metrics.clone(),
                self.notifications.clone(),
                teams.as_ref(),
            ),
            teams,
        }
    }

    /// Fences the shards in `lost`: cancels their units' syncs, takes them off the board
    /// and the metrics, forgets what was applied for their teams. The caller rebuilds the
    /// drift watches before it says the shards are inactive.
    async fn fence(&self, scheduler: &Scheduler, lost: &BTreeSet<u32>) {
        let gone = |t: &TeamName| lost.contains(&self.ownership.shard(t));
        let cancelled = scheduler.stop_teams(gone).await;
        let mut teams: BTreeSet<TeamName> = cancelled.iter().map(|u| u.team.clone()).collect();
        for unit in self.board.forget_teams(gone) {
            self.metrics.forget(&unit);
            teams.insert(unit.team);
        }
        for syncer in self.syncers.values() {
            for team in &teams {
                syncer.forget_team(team);
            }
        }
        tracing::warn!(shards = ?lost, cancelled = cancelled.len(),
            "lost shards: their in-flight syncs cancelled, no further writes for their teams");
    }
}

/// One scheduler (and one set of drift watches) per term of leadership: created when
/// this replica starts holding a shard, drained when it holds none. Returns the units
/// abandoned at shutdown.
pub(super) async fn leadership_terms(
    ctx: TermContext,
    mut desired: watch::Receiver<Option<Arc<DesiredState>>>,
    mut held: watch::Receiver<BTreeSet<u32>>,
    active: watch::Sender<BTreeSet<u32>>,
    mut stop: watch::Receiver<bool>,
) -> Vec<UnitId> {
    loop {
        active.send_replace(BTreeSet::new());
        ctx.board.set_leading(!held.borrow().is_empty());
        tokio::select! {
            _ = until(&mut stop, true) => return Vec::new(),
            open = held.wait_for(|h| !h.is_empty()) => if open.is_err() { return Vec::new() },
        }
        let mut holding = held.borrow_and_update().clone();
        ctx.ownership.set(holding.clone());
        active.send_replace(holding.clone());
        ctx.board.set_leading(true);
        tracing::info!(shards = ?holding, "leading: scheduling units");
        let (term_reports, reports) = mpsc::channel(4096);
        let (resumed_tx, mut resumed) = mpsc::channel(1024);
        let scheduler = Arc::new(
            Scheduler::new(ctx.syncers.clone(), ctx.options.clone(), term_reports)
                .with_ownership(ctx.ownership.clone()),
        );
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
        let mut drift = ctx.start_drift(&scheduler, ctx.ownership.teams(&DesiredState::default()));
        let mut tick = tokio::time::interval(ctx.resync);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        desired.mark_changed();
        let mut full: Option<Arc<DesiredState>> = None;
        let mut latest: Option<Arc<DesiredState>> = None;
        let mut recheck: Option<tokio::time::Instant> = None;
        let restoring = Arc::default();
        // What rollout stages hold back, for the drift watches; and word of a suspended
        // unit started on its own revision, whose kinds they then watch too.
        let mut held_running = Vec::new();
        let (restored_tx, mut restored) = mpsc::channel::<()>(16);
        let ended_by_stop = loop {
            let step_rollout = tokio::select! {
                _ = until(&mut stop, true) => break true,
                changed = held.changed() => {
                    let now = if changed.is_ok() { held.borrow_and_update().clone() } else { BTreeSet::new() };
                    if now.is_empty() {
                        ctx.ownership.set(now);
                        break false;
                    }
                    let lost: BTreeSet<u32> = holding.difference(&now).copied().collect();
                    ctx.ownership.set(now.clone());
                    if !lost.is_empty() {
                        ctx.fence(&scheduler, &lost).await;
                        let teams = full.as_ref().and_then(|f| ctx.ownership.teams(f));
                        drift.handling.stop();
                        drift = ctx.start_drift(&scheduler, teams);
                    }
                    tracing::info!(shards = ?now, "shards held: scheduling their units");
                    holding = now;
                    active.send_replace(holding.clone());
                    // Plan the newest render again for the shards held now.
                    desired.mark_changed();
                    false
                }
                changed = desired.changed() => {
                    if changed.is_err() { break true }
                    let newest = desired.borrow_and_update().clone();
                    if let Some(newest) = newest {
                        let state = ctx.ownership.restrict(&newest);
                        let teams = ctx.ownership.teams(&newest);
                        full = Some(newest);
                        if teams != drift.teams {
                            drift.handling.stop();
                            drift = ctx.start_drift(&scheduler, teams);
                        }
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
                            // Every team's units: the summaries count them all.
                            s.rendered(full.as_ref().unwrap_or(&state));
                        }
                        if let Some(n) = &ctx.notifications {
                            n.rendered(&state);
                        }
                        if !state.platform_failed {
                            let (plan, at) = ctx.gate.plan(&state);
                            recheck = at;
                            let held = plan.held_work();
                            if let Some(full) = &full {
                                replicas::expect_platform_elsewhere(&ctx.syncers, &ctx.ownership, full, &state, &held);
                            }
                            scheduler.apply_staged(&state, &held).await;
                            units::held_back_by_suspension(&scheduler, ctx.statuses.as_deref(), &state);
                            units::restore_suspended(&scheduler, &ctx.gate, &state, (&restoring, &restored_tx));
                            held_running = plan.held_running();
                            drift.handling.ensure(&state, &units::with_suspended(&held_running, &scheduler)).await;
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
                Some(()) = restored.recv() => {
                    if let Some(state) = &latest {
                        drift.handling.ensure(state, &units::with_suspended(&held_running, &scheduler)).await;
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
                        held_running = held;
                        drift
                            .handling
                            .ensure(state, &units::with_suspended(&held_running, &scheduler))
                            .await;
                    }
                }
            }
        };
        // The Units' writes stop before anything else of the term.
        unit_objects.stop().await;
        drift.handling.stop();
        if ended_by_stop {
            let abandoned = scheduler.shutdown(ctx.shutdown_timeout).await;
            active.send_replace(BTreeSet::new());
            return abandoned;
        }
        // Fenced: another replica may lead already, so nothing of this term may write
        // again. In-flight syncs stop at their next request, as a crash would stop them;
        // the inventory recorded before every apply keeps that safe.
        if ctx.ownership.count() > 1 {
            ctx.fence(&scheduler, &holding).await;
        }
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
