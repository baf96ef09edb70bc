//! The scheduler: one worker per unit (team × cluster), each with a queue of length one
//! that coalesces triggers, so a burst of webhooks, resync ticks and drift reports becomes
//! one sync of the newest desired state. A slow or failing unit never delays another:
//! every worker runs on its own task, and the only things units share are their
//! cluster's request limits and its limit of units syncing at once
//! ([`SchedulerOptions::units_at_once`]). Failed units retry with capped, jittered
//! exponential backoff; a new trigger cuts a backoff short.
//!
//! Why a limit of units and not only of requests: a thousand units started together
//! each take their turn at every step of a sync (the reads, the Namespace, the rest) behind
//! the same queue of requests, so all of them finish together at the end, and the first
//! unit is Synced only when the last one is. Admitted a few dozen at a time, they finish
//! one after another from the first seconds on, for the same requests in all.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use super::ownership::Ownership;
use crate::desired::{ClusterName, DesiredState, PLATFORM_UNIT, PrunePolicy, UnitDesired, UnitId};
use crate::status::SyncReport;
use crate::sync::Syncer;

/// What a unit's worker should do next. Only the newest is kept.
#[derive(Debug, Clone)]
pub(super) enum Work {
    Sync {
        desired: Arc<UnitDesired>,
        revision: String,
        /// Bumped by every trigger, so an identical desired state still resyncs.
        generation: u64,
    },
    Remove {
        policy: PrunePolicy,
        revision: String,
        generation: u64,
    },
}

/// Timing of retries and health waits.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    pub health_timeout: Duration,
    pub health_poll: Duration,
    /// Units of one cluster that sync at once (a sync's requests, not its health wait,
    /// which holds nothing); the others wait their turn in the order they came. The
    /// `platform` unit never waits for one: teams wait for it.
    pub units_at_once: usize,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            backoff_base: Duration::from_secs(2),
            backoff_cap: Duration::from_secs(300),
            health_timeout: crate::config::DEFAULT_HEALTH_TIMEOUT,
            health_poll: Duration::from_secs(2),
            units_at_once: units_at_once(crate::config::DEFAULT_CONCURRENCY as usize),
        }
    }
}

/// Units of a cluster syncing at once for `sync.concurrency` applies in flight: enough
/// to keep the cluster's write and read limits busy (a unit's sync waits on its reads
/// between its phases of applies), few enough that units finish as they go.
pub fn units_at_once(concurrency: usize) -> usize {
    concurrency.max(1) * crate::cluster::READS_PER_WRITE
}

struct Worker {
    tx: watch::Sender<Work>,
    task: JoinHandle<()>,
}

/// Runs the units of every cluster.
pub struct Scheduler {
    syncers: BTreeMap<ClusterName, Arc<Syncer>>,
    options: SchedulerOptions,
    workers: Mutex<HashMap<UnitId, Worker>>,
    reports: mpsc::Sender<SyncReport>,
    generation: std::sync::atomic::AtomicU64,
    shutdown: watch::Sender<bool>,
    /// Units that must have been attempted once before the daemon is ready.
    expected: Mutex<BTreeSet<UnitId>>,
    attempted: Arc<Mutex<BTreeSet<UnitId>>>,
    /// Suspended units, with whether they keep correcting drift: no new work reaches them
    /// (they run the revision they run, or stay idle), and without correcting no resync
    /// or drift trigger either.
    suspended: Mutex<BTreeMap<UnitId, (bool, String)>>,
    /// The teams this replica writes for: no other unit gets a worker.
    ownership: Arc<Ownership>,
    /// Per cluster, the turns of its units to sync ([`SchedulerOptions::units_at_once`]).
    turns: BTreeMap<ClusterName, Arc<Semaphore>>,
}

impl Scheduler {
    /// `reports` receives every finished attempt; it is bounded, so a slow consumer slows
    /// reporting, never syncing (workers use `try_send` and count what they drop).
    pub fn new(
        syncers: BTreeMap<ClusterName, Arc<Syncer>>,
        options: SchedulerOptions,
        reports: mpsc::Sender<SyncReport>,
    ) -> Self {
        let turns = syncers
            .keys()
            .map(|c| {
                let n = options.units_at_once.max(1);
                (c.clone(), Arc::new(Semaphore::new(n)))
            })
            .collect();
        Scheduler {
            turns,
            syncers,
            options,
            workers: Mutex::new(HashMap::new()),
            reports,
            generation: std::sync::atomic::AtomicU64::new(0),
            shutdown: watch::Sender::new(false),
            expected: Mutex::new(BTreeSet::new()),
            attempted: Arc::new(Mutex::new(BTreeSet::new())),
            suspended: Mutex::new(BTreeMap::new()),
            ownership: Arc::new(Ownership::everything()),
        }
    }

    /// Only the teams of the shards `ownership` holds get work (default: every team).
    pub fn with_ownership(mut self, ownership: Arc<Ownership>) -> Self {
        self.ownership = ownership;
        self
    }

    fn next_generation(&self) -> u64 {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1
    }

    /// Hands a newly rendered state to the units: changed units sync, units of teams that
    /// left the repo (or a cluster) are removed, teams that failed to render are left
    /// exactly as they are. A broken platform.yaml changes nothing.
    pub async fn apply(&self, state: &DesiredState) {
        self.apply_staged(state, &BTreeMap::new()).await;
    }

    /// [`Scheduler::apply`], except for the units a rollout stage holds: each keeps the
    /// revision it runs (`Some`: started with it if it has no worker yet, else left to
    /// its worker, whose resyncs and drift corrections go on), or stays idle when nothing
    /// is known of what it runs (`None`).
    pub async fn apply_staged(
        &self,
        state: &DesiredState,
        held: &BTreeMap<UnitId, Option<(Arc<UnitDesired>, String)>>,
    ) {
        if state.platform_failed {
            return;
        }
        let mut expected: BTreeSet<UnitId> = BTreeSet::new();
        // A cluster's platform unit syncs this revision before its teams do.
        for id in state.units.keys() {
            if id.team.0 == PLATFORM_UNIT
                && !held.contains_key(id)
                && let Some(syncer) = self.syncers.get(&id.cluster)
            {
                syncer.components().expect_platform(&state.revision);
            }
        }
        for (id, unit) in &state.units {
            if !self.syncers.contains_key(&id.cluster) {
                tracing::warn!(unit = %id, "the platform names a cluster this daemon has no connection for");
                continue;
            }
            match held.get(id) {
                Some(Some((desired, revision))) => {
                    expected.insert(id.clone());
                    self.keep(id, desired.clone(), revision);
                    continue;
                }
                Some(None) => continue,
                None => {}
            }
            expected.insert(id.clone());
            let generation = self.next_generation();
            self.send(
                id,
                Work::Sync {
                    desired: Arc::new(unit.clone()),
                    revision: state.revision.clone(),
                    generation,
                },
            );
        }
        for (cluster, syncer) in &self.syncers {
            let removed = match syncer.removed_teams(state).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(%cluster, error = %crate::describe(&e), "cannot list inventories; removed teams wait for the next pass");
                    continue;
                }
            };
            for team in removed {
                // Another replica's team, not one that left the repo.
                if !self.ownership.holds(&team) {
                    continue;
                }
                let id = UnitId {
                    team,
                    cluster: cluster.clone(),
                };
                let generation = self.next_generation();
                self.send(
                    &id,
                    Work::Remove {
                        policy: state.default_prune.clone(),
                        revision: state.revision.clone(),
                        generation,
                    },
                );
            }
        }
        *self.expected.lock().unwrap_or_else(|e| e.into_inner()) = expected;
    }

    /// Hands one unit a desired state of its own (a rollout stage opening for it).
    pub fn sync_unit(&self, id: &UnitId, desired: Arc<UnitDesired>, revision: &str) {
        let generation = self.next_generation();
        self.send(
            id,
            Work::Sync {
                desired,
                revision: revision.to_owned(),
                generation,
            },
        );
    }

    /// Starts a unit on `revision` unless it has a worker already, which keeps its work.
    pub fn keep(&self, id: &UnitId, desired: Arc<UnitDesired>, revision: &str) {
        let running = self
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .is_some_and(|w| !w.task.is_finished());
        if !running {
            self.sync_unit(id, desired, revision);
        }
    }

    /// Syncs one unit again with its current desired state (drift, resync).
    pub fn trigger(&self, unit: &UnitId) {
        if self.frozen(unit) {
            return;
        }
        let generation = self.next_generation();
        let workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = workers.get(unit) {
            w.tx.send_modify(|work| set_generation(work, generation));
        }
    }

    /// Syncs every unit again (the periodic safety net).
    pub fn trigger_all(&self) {
        let generation = self.next_generation();
        let workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        for (id, w) in workers.iter() {
            if !self.frozen(id) {
                w.tx.send_modify(|work| set_generation(work, generation));
            }
        }
    }

    /// Suspends a unit: it takes no new revision (nor a removal); with
    /// `keep_correcting` its resyncs and drift corrections go on at the revision it runs,
    /// without they stop too. A sync under way finishes.
    pub fn suspend(&self, unit: &UnitId, keep_correcting: bool, why: &str) {
        if let Some(s) = self.syncers.get(&unit.cluster) {
            s.set_frozen(&unit.team, !keep_correcting);
        }
        self.suspended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(unit.clone(), (keep_correcting, why.to_owned()));
    }

    /// The suspended units with why (`suspended by alice: INC-1234`), and the revision
    /// each runs (None: idle).
    pub fn suspended(&self) -> Vec<(UnitId, String, Option<String>)> {
        let suspended = self
            .suspended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        suspended
            .into_iter()
            .map(|(id, (_, why))| {
                let revision = workers.get(&id).map(|w| match &*w.tx.borrow() {
                    Work::Sync { revision, .. } | Work::Remove { revision, .. } => revision.clone(),
                });
                (id, why, revision)
            })
            .collect()
    }

    /// Ends a unit's suspension; true when it was suspended. The caller hands it the
    /// newest desired state.
    pub fn resume(&self, unit: &UnitId) -> bool {
        if let Some(s) = self.syncers.get(&unit.cluster) {
            s.set_frozen(&unit.team, false);
        }
        self.suspended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(unit)
            .is_some()
    }

    /// Suspended units that keep correcting drift. Copied out: `trigger_all` reads this
    /// lock while it holds the workers', so no one may hold both the other way round.
    fn correcting(&self) -> Vec<UnitId> {
        let suspended = self.suspended.lock().unwrap_or_else(|e| e.into_inner());
        let keep = suspended.iter().filter(|(_, (keep, _))| *keep);
        keep.map(|(id, _)| id.clone()).collect()
    }

    /// Suspended units that keep correcting drift yet have no worker (the daemon
    /// restarted since they were suspended): they need the revision they run found.
    pub fn idle_correcting(&self) -> Vec<UnitId> {
        let correcting = self.correcting();
        let workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        let idle = |id: &UnitId| workers.get(id).is_none_or(|w| w.task.is_finished());
        correcting.into_iter().filter(|id| idle(id)).collect()
    }

    /// Starts a suspended unit that keeps correcting drift on the revision it runs
    /// (found again after a restart), unless it has a worker already or is no longer so
    /// suspended. Its resyncs and drift corrections then go on at that revision.
    pub fn run_suspended(&self, id: &UnitId, desired: Arc<UnitDesired>, revision: &str) -> bool {
        if !self.correcting().contains(id) || !self.ownership.holds(&id.team) {
            return false;
        }
        let (revision, generation) = (revision.to_owned(), self.next_generation());
        let work = Work::Sync {
            desired,
            revision,
            generation,
        };
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        if workers.get(id).is_some_and(|w| !w.task.is_finished()) {
            return false;
        }
        self.spawn(&mut workers, id, work);
        true
    }

    /// What the suspended units that keep correcting run: their drift is watched too,
    /// though the newest revision may no longer use its kinds.
    pub fn suspended_running(&self) -> Vec<Arc<UnitDesired>> {
        let correcting = self.correcting();
        let workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        let work = correcting.iter().filter_map(|id| workers.get(id));
        work.filter_map(|w| match &*w.tx.borrow() {
            Work::Sync { desired, .. } => Some(desired.clone()),
            Work::Remove { .. } => None,
        })
        .collect()
    }

    fn is_suspended(&self, unit: &UnitId) -> bool {
        self.suspended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(unit)
    }

    /// Suspended without correcting drift: no sync at all.
    fn frozen(&self, unit: &UnitId) -> bool {
        self.suspended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(unit)
            .is_some_and(|(keep, _)| !keep)
    }

    /// True once every expected unit has finished its first attempt.
    pub fn ready(&self) -> bool {
        let expected = self
            .expected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let attempted = self.attempted.lock().unwrap_or_else(|e| e.into_inner());
        !expected.is_empty() && expected.iter().all(|u| attempted.contains(u))
    }

    pub fn units(&self) -> Vec<UnitId> {
        let mut v: Vec<UnitId> = self
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    fn send(&self, id: &UnitId, work: Work) {
        if !self.ownership.holds(&id.team) {
            tracing::debug!(unit = %id, "not this replica's shard: no work handed to the unit");
            return;
        }
        if self.is_suspended(id) {
            tracing::debug!(unit = %id, "suspended: new work left for its resume");
            return;
        }
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = workers.get(id)
            && !w.task.is_finished()
        {
            w.tx.send_replace(work);
            return;
        }
        self.spawn(&mut workers, id, work);
    }

    /// Starts the worker of `id` with `work`.
    fn spawn(&self, workers: &mut HashMap<UnitId, Worker>, id: &UnitId, work: Work) {
        let (Some(syncer), Some(turns)) = (
            self.syncers.get(&id.cluster).cloned(),
            self.turns.get(&id.cluster).cloned(),
        ) else {
            return;
        };
        let (tx, rx) = watch::channel(work);
        let task = tokio::spawn(super::worker::run_worker(
            id.clone(),
            (syncer, turns),
            rx,
            self.shutdown.subscribe(),
            self.reports.clone(),
            self.options.clone(),
            self.attempted.clone(),
        ));
        workers.insert(id.clone(), Worker { tx, task });
    }

    /// Cancels the workers of the teams `lost` says (their shard went to another replica)
    /// and returns once each is gone, with the units cancelled. Fenced as a lost leadership
    /// is: a sync stops at its next await.
    pub async fn stop_teams(
        &self,
        lost: impl Fn(&crate::desired::TeamName) -> bool,
    ) -> Vec<UnitId> {
        let tasks: Vec<(UnitId, JoinHandle<()>)> = {
            let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
            let ids: Vec<UnitId> = workers
                .keys()
                .filter(|id| lost(&id.team))
                .cloned()
                .collect();
            ids.into_iter()
                .filter_map(|id| workers.remove(&id).map(|w| (id, w.task)))
                .collect()
        };
        let mut stopped = Vec::new();
        for (id, task) in tasks {
            task.abort();
            if tokio::time::timeout(CANCEL_WAIT, task).await.is_err() {
                tracing::warn!(unit = %id, "a cancelled sync did not stop within {CANCEL_WAIT:?}");
            }
            stopped.push(id);
        }
        self.expected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id| !lost(&id.team));
        stopped
    }

    /// Stops taking work and waits for in-flight syncs, at most `deadline`. Returns the
    /// units still running when the deadline passed: they are cancelled, and this returns
    /// only once each is gone (a task running on another thread when it is cancelled
    /// stops at its next await, and may send a request until then).
    pub async fn shutdown(&self, deadline: Duration) -> Vec<UnitId> {
        self.shutdown.send_replace(true);
        let tasks: Vec<(UnitId, JoinHandle<()>)> = self
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(id, w)| (id, w.task))
            .collect();
        let until = tokio::time::Instant::now() + deadline;
        let mut abandoned = Vec::new();
        for (id, mut task) in tasks {
            if tokio::time::timeout_at(until, &mut task).await.is_err() {
                task.abort();
                if tokio::time::timeout(CANCEL_WAIT, task).await.is_err() {
                    tracing::warn!(unit = %id, "a cancelled sync did not stop within {CANCEL_WAIT:?}");
                }
                abandoned.push(id);
            }
        }
        abandoned
    }
}

/// How long a cancelled sync may take to reach its next await and stop.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

fn set_generation(work: &mut Work, generation: u64) {
    match work {
        Work::Sync { generation: g, .. } | Work::Remove { generation: g, .. } => *g = generation,
    }
}
