//! The rollout gate wired into the daemon: the shared [`Rollout`] memory that reports
//! feed, the plans made from it acted on (units handed to the scheduler, gate statuses
//! posted, the waiting metric set), and, after a restart, what each held unit runs found
//! again: its inventory's revision, read from the source and rendered.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::board::Board;
use super::metrics::Metrics;
use super::rollout::{Plan, Rollout, Running};
use super::scheduler::Scheduler;
use crate::desired::{ClusterName, DesiredState, Owner, UnitDesired, UnitId};
use crate::sops::Keyring;
use crate::source::History;
use crate::status::Notifier;
use crate::sync::{Syncer, UnitResult};

/// How often a soak that is running is looked at again, so the descriptions of the
/// units waiting on it count down.
const SOAK_REFRESH: Duration = Duration::from_secs(60);

/// How long a held unit whose revision could not be rendered again waits to try again.
const RESTORE_RETRY: Duration = Duration::from_secs(30);

/// The daemon's rollout gate, shared by the reporting task and the scheduling loop.
pub struct Gatekeeper {
    rollout: Mutex<Rollout>,
    /// Woken by reports that may open a stage, and by a restored unit.
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    statuses: Option<Arc<Notifier>>,
    board: Arc<Board>,
    /// Where a restart reads the revision a held unit runs (None: a directory source).
    history: Option<History>,
    /// The age keys that older revision's SOPS files are decrypted with.
    keys: Arc<Keyring>,
    /// How that older revision's packages are expanded.
    packages: Arc<super::packages::Packages>,
    owner: Owner,
    syncers: BTreeMap<ClusterName, Arc<Syncer>>,
    /// Units whose running revision a restore is looking for or found.
    restoring: Mutex<BTreeSet<UnitId>>,
    /// Told when a stage stops a commit from reaching a unit.
    notifications: super::notifications::Shared,
}

impl Gatekeeper {
    pub fn new(
        (metrics, statuses, board): (Arc<Metrics>, Option<Arc<Notifier>>, Arc<Board>),
        (history, keys, packages): (
            Option<History>,
            Arc<Keyring>,
            Arc<super::packages::Packages>,
        ),
        owner: Owner,
        syncers: BTreeMap<ClusterName, Arc<Syncer>>,
    ) -> Gatekeeper {
        Gatekeeper {
            rollout: Mutex::new(Rollout::default()),
            wake: Arc::new(Notify::new()),
            metrics,
            statuses,
            board,
            history,
            keys,
            packages,
            owner,
            syncers,
            restoring: Mutex::new(BTreeSet::new()),
            notifications: None,
        }
    }

    /// Tells `notifications` when a rollout stage stops a commit.
    pub fn notifying(mut self, notifications: super::notifications::Shared) -> Gatekeeper {
        self.notifications = notifications;
        self
    }

    fn rollout(&self) -> std::sync::MutexGuard<'_, Rollout> {
        self.rollout.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A unit reported; wakes the scheduling loop when stages may open.
    pub fn reported(&self, result: &UnitResult) {
        let mut rollout = self.rollout();
        rollout.reported(result, std::time::Instant::now());
        if rollout.staged() {
            self.wake.notify_one();
        }
    }

    /// Resolves when a report or a restore may have changed the plan.
    pub async fn woken(&self) {
        self.wake.notified().await
    }

    /// Plans the rollout of `state` (the newest good render) now, posts the gate statuses
    /// it decided, sets the waiting metric and starts restoring what held units run;
    /// returns the plan and when to look again.
    pub fn plan(self: &Arc<Self>, state: &Arc<DesiredState>) -> (Plan, Option<Instant>) {
        let plan = self.rollout().plan(state, std::time::Instant::now());
        for (unit, sha, stopped, description) in &plan.statuses {
            tracing::info!(%unit, revision = %sha, %description, "rollout stage");
            if let Some(s) = &self.statuses {
                s.gated(sha, unit, *stopped, description);
            }
            if *stopped && let Some(n) = &self.notifications {
                n.rollout_stopped(unit, sha, description);
            }
            if plan.held.get(unit).is_some_and(Option::is_none) {
                self.board.held_back(unit, description);
            }
        }
        self.metrics.rollout(&plan.stages);
        self.restore(&plan, state);
        // A moment past the soak's end, so the gate sees it over.
        let recheck = plan
            .recheck
            .map(|left| Instant::now() + left.min(SOAK_REFRESH) + Duration::from_millis(20));
        (plan, recheck)
    }

    /// Plans `state` again (a report came, a soak ended): units whose stage opened take
    /// it, held ones keep what they run. Returns when to look again, and what the held
    /// units run when a restored one joined them (its kinds need drift watches).
    pub fn step(
        self: &Arc<Self>,
        scheduler: &Scheduler,
        state: &Arc<DesiredState>,
    ) -> (Option<Instant>, Option<Vec<Arc<UnitDesired>>>) {
        let (plan, recheck) = self.plan(state);
        let watch = plan.restored.then(|| plan.held_running());
        for (unit, running) in plan.go {
            tracing::info!(%unit, revision = %running.revision, "rollout stage open: the unit takes the commit");
            scheduler.sync_unit(&unit, running.desired, &running.revision);
        }
        for (unit, running) in plan.held {
            if let Some(r) = running {
                scheduler.keep(&unit, r.desired, &r.revision);
            }
        }
        (recheck, watch)
    }

    /// Held units nothing is known of (this process has not run them: it restarted):
    /// finds each one's revision in its inventory, renders that revision from the source
    /// and hands it to the rollout, which then keeps the unit running it. A unit with no
    /// inventory runs nothing yet; one whose revision cannot be read again is logged and
    /// waits for its stage.
    fn restore(self: &Arc<Self>, plan: &Plan, state: &Arc<DesiredState>) {
        let units: Vec<UnitId> = {
            let mut restoring = self.restoring.lock().unwrap_or_else(|e| e.into_inner());
            plan.held
                .iter()
                .filter(|(id, r)| r.is_none() && restoring.insert((*id).clone()))
                .map(|(id, _)| id.clone())
                .collect()
        };
        if units.is_empty() {
            return;
        }
        let (me, state) = (self.clone(), state.clone());
        tokio::spawn(async move {
            for unit in units {
                match me.running_of(&unit, &state).await {
                    Ok(Some(running)) => {
                        tracing::info!(%unit, revision = %running.revision, "held by a rollout stage: runs the revision its inventory records");
                        me.rollout().restored(unit, running);
                        me.wake.notify_one();
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(%unit, error = %e, retry_in = ?RESTORE_RETRY, "held by a rollout stage, and the revision it runs cannot be rendered again: it waits without resyncing");
                        let me = me.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(RESTORE_RETRY).await;
                            me.restoring
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .remove(&unit);
                            me.wake.notify_one();
                        });
                    }
                }
            }
        });
    }

    /// What `unit` runs according to its inventory, rendered again.
    pub(super) async fn running_of(
        &self,
        unit: &UnitId,
        state: &DesiredState,
    ) -> anyhow::Result<Option<Running>> {
        let Some(syncer) = self.syncers.get(&unit.cluster) else {
            return Ok(None);
        };
        let Some(revision) = syncer.inventory_revision(&unit.team).await? else {
            return Ok(None);
        };
        if revision.is_empty() {
            return Ok(None);
        }
        let desired = if revision == state.revision {
            state.units.get(unit).cloned()
        } else {
            let history = self
                .history
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("a directory source keeps no older revision"))?;
            let snapshot = history.snapshot(&revision).await?;
            let old = super::poll_and_render::render(
                snapshot,
                state.namespace_owners.clone(),
                &self.owner,
                &self.keys,
                &self.packages,
            )
            .await;
            old.units.get(unit).cloned()
        };
        Ok(desired.map(|d| Running {
            revision,
            desired: Arc::new(d),
        }))
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
pub async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
