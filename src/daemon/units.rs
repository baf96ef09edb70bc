//! The Units of one term of leadership: every sync report written to its unit's `Unit`
//! status (when it changed), a Unit removed with its team, and a reconcile request read
//! from a Unit handed to the scheduler as a sync now.
//!
//! The same watch tells what the Units of the units other shard replicas sync say
//! (`replicas`): the `platform` unit's components' health, and where each unit stands for
//! the per-cluster commit status summaries.
//!
//! Fenced as every write is: the tasks that write live inside the term and are aborted
//! first when it ends, before the scheduler drains, so a replica that lost the lease
//! writes no status afterwards. Reports still reach the board and metrics through the
//! forwarder, which writes nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::board::Board;
use super::poll_and_render::PollNow;
use super::scheduler::Scheduler;
use super::unit_writes::{UnitWrites, Write};
use crate::backoff::backoff;
use crate::desired::{ClusterName, Owner, TeamName, UnitId};
use crate::status::SyncReport;
use crate::sync::{Syncer, UnitState};
use crate::units::control::{Asked, UnitWriter, watch_asked};
use crate::units::suspend::Suspension;

/// Where the Units live (the daemon's namespace and owner), and how to have the source
/// polled before a sync someone asked for.
#[derive(Clone)]
pub struct UnitSettings {
    pub namespace: String,
    pub owner: Owner,
    pub poll_now: Option<PollNow>,
    /// Where a suspension shows (`pontoon_unit_suspended`).
    pub metrics: Arc<super::metrics::Metrics>,
    /// The teams this replica writes for: a late report of a shard given up, or the
    /// expiry of another replica's team's suspension, writes no Unit here.
    pub ownership: Arc<super::ownership::Ownership>,
    /// Who is told when a unit is suspended or resumed.
    pub notifications: super::notifications::Shared,
    /// Commit statuses, whose summaries count the units other replicas sync.
    pub statuses: Option<Arc<crate::status::Notifier>>,
}

/// How long a reconcile with source waits for the poll before it syncs anyway.
const POLL_WAIT: Duration = Duration::from_secs(120);

/// Reports queued per cluster before the oldest are dropped (the next report of a unit
/// writes its status anyway).
const QUEUE: usize = 1024;

/// The Unit tasks of one term.
pub struct UnitsTerm {
    writers: Vec<JoinHandle<()>>,
    /// Clusters whose Units (and the suspensions they hold) are read.
    loaded: watch::Receiver<usize>,
}

impl UnitsTerm {
    /// Starts the Units of every cluster. `reports` is what the term's scheduler sends;
    /// each report goes on to `onward` (board, metrics, commit statuses) as before.
    pub fn start(
        syncers: &BTreeMap<ClusterName, Arc<Syncer>>,
        settings: &UnitSettings,
        board: Arc<Board>,
        scheduler: Arc<Scheduler>,
        mut reports: mpsc::Receiver<SyncReport>,
        onward: mpsc::Sender<SyncReport>,
        resumed: mpsc::Sender<UnitId>,
    ) -> UnitsTerm {
        let mut queues = HashMap::new();
        let mut writers = Vec::new();
        let (loaded_tx, loaded) = watch::channel(0usize);
        let loaded_tx = Arc::new(loaded_tx);
        for (cluster, syncer) in syncers {
            let (tx, rx) = mpsc::channel(QUEUE);
            queues.insert(cluster.clone(), tx);
            writers.push(tokio::spawn(cluster_units(
                cluster.clone(),
                syncer.clone(),
                settings.clone(),
                board.clone(),
                scheduler.clone(),
                rx,
                (resumed.clone(), loaded_tx.clone()),
            )));
        }
        tokio::spawn(async move {
            while let Some(r) = reports.recv().await {
                if let Some(q) = queues.get(&r.result.unit.cluster)
                    && q.try_send(r.clone()).is_err()
                {
                    tracing::debug!(unit = %r.result.unit, "Unit status queue full or closed");
                }
                if onward.send(r).await.is_err() {
                    return;
                }
            }
        });
        UnitsTerm { writers, loaded }
    }

    /// Returns once every cluster's Units are read (so a suspended unit is known
    /// suspended before it is handed any work), or after `timeout` (a cluster whose
    /// Units cannot be read does not stop the others).
    pub async fn ready(&self, timeout: Duration) {
        let clusters = self.writers.len();
        let mut loaded = self.loaded.clone();
        if tokio::time::timeout(timeout, loaded.wait_for(|n| *n >= clusters))
            .await
            .is_err()
        {
            tracing::warn!("the Units of some cluster are not read yet; scheduling without them");
        }
    }

    /// Stops every task that writes Units, and returns once each is gone.
    pub async fn stop(self) {
        for w in &self.writers {
            w.abort();
        }
        for w in self.writers {
            let _ = w.await;
        }
    }
}

/// A reconcile request seen, not answered yet.
struct Pending {
    value: String,
    /// When it was handed to the scheduler; None while the source is polled first.
    at: Option<Instant>,
}

/// One cluster's Units for the term: the definition installed, the Units read once,
/// then reports written and requests handed on as they come.
async fn cluster_units(
    cluster: ClusterName,
    syncer: Arc<Syncer>,
    settings: UnitSettings,
    board: Arc<Board>,
    scheduler: Arc<Scheduler>,
    mut reports: mpsc::Receiver<SyncReport>,
    (resumed, loaded): (mpsc::Sender<UnitId>, Arc<watch::Sender<usize>>),
) {
    let writer = Arc::new(UnitWriter::new(
        syncer.cluster().clone(),
        &settings.namespace,
        &settings.owner,
    ));
    let mut failures = 0;
    let listed = loop {
        let ready = match crate::units::crd::ensure(syncer.client(), &settings.owner).await {
            Ok(()) => writer.load().await,
            Err(e) => Err(e),
        };
        match ready {
            Ok(listed) => break listed,
            Err(e) => {
                if failures == 0 {
                    // Scheduling waits for no cluster whose Units cannot be read.
                    loaded.send_modify(|n| *n += 1);
                }
                failures += 1;
                let wait = backoff(Duration::from_secs(2), Duration::from_secs(300), failures);
                tracing::warn!(%cluster, error = %crate::describe(&e), retry_in = ?wait, "Units unavailable");
                tokio::time::sleep(wait).await;
                // What was reported meanwhile is written by the unit's next report.
                while reports.try_recv().is_ok() {}
            }
        }
    };
    let mut units = Suspensions {
        cluster: cluster.clone(),
        scheduler: scheduler.clone(),
        resumed,
        suspended: HashMap::new(),
        metrics: settings.metrics.clone(),
        board: board.clone(),
        notifications: None,
        ownership: settings.ownership.clone(),
    };
    for a in &listed {
        units.apply(a.team.clone(), a.suspend.clone());
    }
    units.notifications = settings.notifications.clone();
    if failures == 0 {
        loaded.send_modify(|n| *n += 1);
    }
    let others = super::replicas::OtherReplicas {
        cluster: cluster.clone(),
        syncer: syncer.clone(),
        ownership: settings.ownership.clone(),
        statuses: settings.statuses.clone(),
    };
    let mut asked = Box::pin(watch_asked(
        syncer.cluster(),
        &settings.namespace,
        &settings.owner,
    ));
    let mut pending: HashMap<TeamName, Pending> = HashMap::new();
    let (polled_tx, mut polled) = mpsc::channel::<(TeamName, String)>(QUEUE);
    let mut writes = UnitWrites::new(writer.clone());
    loop {
        tokio::select! {
            report = reports.recv() => {
                let Some(r) = report else { return };
                let team = &r.result.unit.team;
                if !settings.ownership.holds(team) {
                    continue;
                }
                let suspended = units.suspended.get(team).cloned();
                let components = platform_components(&syncer, team);
                if let Some(write) = report_write(&board, &pending, &r, suspended, components) {
                    writes.push(team.clone(), write);
                }
            }
            Some(done) = writes.finished(), if writes.busy() => {
                if let Some(value) = done.answered
                    && pending.get(&done.team).is_some_and(|p| p.value == value)
                {
                    pending.remove(&done.team);
                }
            }
            _ = sleep_until(units.next_expiry()) => {
                for (team, generation) in units.expire() {
                    if !settings.ownership.holds(&team) {
                        continue;
                    }
                    writes.push(team, Write::Suspension { suspended: None, generation });
                }
            }
            Some(a) = asked.next() => {
                others.observe(&a);
                if !settings.ownership.holds(&a.team) {
                    // Written by the replica that holds the team: what it wrote is what
                    // this one compares with once it takes the team's shard over.
                    writer.observe(&a);
                }
                if units.apply(a.team.clone(), a.suspend.clone()) {
                    let suspended = units.suspended.get(&a.team).cloned();
                    let generation = a.generation;
                    writes.push(a.team.clone(), Write::Suspension { suspended, generation });
                }
                let Some((team, value, with_source)) = request(&mut pending, a) else { continue };
                match &settings.poll_now {
                    Some(poll_now) if with_source => {
                        let (poll_now, tx) = (poll_now.clone(), polled_tx.clone());
                        tokio::spawn(async move {
                            poll_now.poll(POLL_WAIT).await;
                            let _ = tx.send((team, value)).await;
                        });
                    }
                    _ => trigger(&cluster, (&scheduler, &syncer), &mut pending, team, &value),
                }
            }
            Some((team, value)) = polled.recv() => {
                trigger(&cluster, (&scheduler, &syncer), &mut pending, team, &value);
            }
        }
    }
}

/// Hands a request to the scheduler, unless a newer one replaced it meanwhile; the sync
/// it asks for lists the unit's objects rather than trust the drift watches.
fn trigger(
    cluster: &ClusterName,
    (scheduler, syncer): (&Scheduler, &Syncer),
    pending: &mut HashMap<TeamName, Pending>,
    team: TeamName,
    value: &str,
) {
    let Some(p) = pending.get_mut(&team).filter(|p| p.value == value) else {
        return;
    };
    p.at = Some(Instant::now());
    syncer.list_on_next_sync(&team);
    let unit = UnitId {
        team,
        cluster: cluster.clone(),
    };
    tracing::info!(%unit, requested = %value, "reconcile requested on the Unit");
    scheduler.trigger(&unit);
}

/// A Unit's reconcile request, when it is new (not answered, not seen already): taken
/// as pending (polling first when it asks for the source and the daemon has one).
fn request(
    pending: &mut HashMap<TeamName, Pending>,
    asked: Asked,
) -> Option<(TeamName, String, bool)> {
    let value = asked.reconcile?;
    if asked.handled.as_deref() == Some(value.as_str())
        || pending.get(&asked.team).is_some_and(|p| p.value == value)
    {
        return None;
    }
    pending.insert(
        asked.team.clone(),
        Pending {
            value: value.clone(),
            at: None,
        },
    );
    Some((asked.team, value, asked.with_source))
}

/// What the `platform` unit's syncs found of each component, for its Unit's status;
/// nothing for a team.
fn platform_components(
    syncer: &Syncer,
    team: &TeamName,
) -> BTreeMap<String, crate::units::status::ComponentHealth> {
    if team.0 != crate::desired::PLATFORM_UNIT {
        return BTreeMap::new();
    }
    syncer
        .components()
        .found()
        .map(|(at, found)| crate::units::status::component_health(&at, &found))
        .unwrap_or_default()
}

/// The write a report asks of its Unit: its status (with the reconcile request it
/// answers, if its sync started after the request was handed on), or the Unit's removal
/// once the team's removal is done.
fn report_write(
    board: &Board,
    pending: &HashMap<TeamName, Pending>,
    r: &SyncReport,
    suspended: Option<Suspension>,
    components: BTreeMap<String, crate::units::status::ComponentHealth>,
) -> Option<Write> {
    if r.removal {
        return (r.result.state == UnitState::Synced).then_some(Write::Remove);
    }
    // A sync that started after the request answers it.
    let started = Instant::now().checked_sub(r.result.duration);
    let answered = pending
        .get(&r.result.unit.team)
        .filter(|p| started.zip(p.at).is_some_and(|(s, at)| s >= at))
        .map(|p| p.value.clone());
    let shown = board.with_render_failure(&r.result, false).into_owned();
    let now = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
        .map(|t| t.to_string())
        .unwrap_or_default();
    Some(Write::Report {
        result: Box::new(shown),
        answered,
        suspended,
        components,
        now,
    })
}

/// The suspensions in force on one cluster, kept in step with the scheduler.
struct Suspensions {
    cluster: ClusterName,
    scheduler: Arc<Scheduler>,
    /// Units resumed, for the scheduling loop to hand the newest desired state.
    resumed: mpsc::Sender<UnitId>,
    suspended: HashMap<TeamName, Suspension>,
    metrics: Arc<super::metrics::Metrics>,
    board: Arc<Board>,
    /// Set once the Units a term starts with are read: a suspension found at start was
    /// told when it began, by whichever replica saw it begin.
    notifications: super::notifications::Shared,
    ownership: Arc<super::ownership::Ownership>,
}

impl Suspensions {
    /// Tells the receivers, for the teams this replica holds.
    fn tell(&self, unit: &UnitId, change: Result<&Suspension, Option<&Suspension>>) {
        let Some(n) = &self.notifications else { return };
        if !self.ownership.holds(&unit.team) {
            return;
        }
        match change {
            Ok(s) => n.suspended(unit, s),
            Err(ended) => n.resumed(unit, ended),
        }
    }

    /// On the page, `/api/status` and the metrics.
    fn show(&self, unit: &UnitId, s: Option<&Suspension>) {
        self.board.suspended(unit, s.map(Suspension::describe));
        let seconds = |t: Option<jiff::Timestamp>| t.map(|t| t.as_second() as f64);
        self.metrics.suspension(
            unit,
            s.map(|s| {
                let since = seconds(s.since.parse().ok())
                    .unwrap_or_else(|| jiff::Timestamp::now().as_second() as f64);
                (
                    s.by.as_str(),
                    s.reason.as_str(),
                    since,
                    seconds(s.until_time()),
                )
            }),
        );
    }

    fn unit(&self, team: TeamName) -> UnitId {
        UnitId {
            team,
            cluster: self.cluster.clone(),
        }
    }

    /// Puts in force what a Unit's spec asks (nothing once its `until` passed); true when
    /// that changed anything.
    fn apply(&mut self, team: TeamName, wanted: Option<Suspension>) -> bool {
        let wanted = wanted.filter(|s| !s.expired(jiff::Timestamp::now()));
        if self.suspended.get(&team) == wanted.as_ref() {
            return false;
        }
        let unit = self.unit(team.clone());
        match wanted {
            Some(s) => {
                tracing::info!(%unit, suspension = %s.describe(), "unit suspended");
                self.scheduler
                    .suspend(&unit, s.keep_correcting, &s.describe());
                self.show(&unit, Some(&s));
                self.tell(&unit, Ok(&s));
                self.suspended.insert(team, s);
            }
            None => {
                let ended = self.suspended.remove(&team);
                self.tell(&unit, Err(ended.as_ref()));
                self.resume(unit);
            }
        }
        true
    }

    fn resume(&self, unit: UnitId) {
        tracing::info!(%unit, "unit resumed");
        self.show(&unit, None);
        if self.scheduler.resume(&unit) && self.resumed.try_send(unit).is_err() {
            tracing::warn!(
                "resume queue full; the unit takes the newest revision at the next render"
            );
        }
    }

    /// When the next suspension in force ends by itself.
    fn next_expiry(&self) -> Option<jiff::Timestamp> {
        self.suspended
            .values()
            .filter_map(Suspension::until_time)
            .min()
    }

    /// Ends the suspensions whose `until` passed; the teams resumed.
    fn expire(&mut self) -> Vec<(TeamName, i64)> {
        let now = jiff::Timestamp::now();
        let ended: Vec<TeamName> = self
            .suspended
            .iter()
            .filter(|(_, s)| s.expired(now))
            .map(|(t, _)| t.clone())
            .collect();
        let mut out = Vec::new();
        for team in ended {
            let ended = self.suspended.remove(&team);
            self.tell(&self.unit(team.clone()), Err(ended.as_ref()));
            self.resume(self.unit(team.clone()));
            out.push((team, -1));
        }
        out
    }
}

/// Waits until `at` (forever when None).
async fn sleep_until(at: Option<jiff::Timestamp>) {
    match at {
        Some(at) => {
            let left = jiff::Timestamp::now().duration_until(at);
            let left = Duration::try_from(left).unwrap_or(Duration::ZERO);
            tokio::time::sleep(left).await;
        }
        None => std::future::pending().await,
    }
}

/// Hands a resumed unit the newest desired state, or what the rollout gate lets it run.
pub fn resume_unit(
    scheduler: &Scheduler,
    gate: &Arc<super::gatekeeper::Gatekeeper>,
    state: &Arc<crate::desired::DesiredState>,
    unit: &UnitId,
) {
    let (plan, _) = gate.plan(state);
    match plan.held_work().remove(unit) {
        Some(Some((desired, revision))) => scheduler.sync_unit(unit, desired, &revision),
        Some(None) => {}
        None => {
            if let Some(u) = state.units.get(unit) {
                scheduler.sync_unit(unit, Arc::new(u.clone()), &state.revision);
            }
        }
    }
}

/// A new revision a suspended unit does not take gets a pending commit status saying
/// who holds it back and why (`suspended by alice: INC-1234`).
pub fn held_back_by_suspension(
    scheduler: &Scheduler,
    statuses: Option<&crate::status::Notifier>,
    state: &crate::desired::DesiredState,
) {
    let Some(statuses) = statuses else { return };
    for (unit, why, running) in scheduler.suspended() {
        if state.units.contains_key(&unit) && running.as_deref() != Some(state.revision.as_str()) {
            statuses.gated(&state.revision, &unit, false, &why);
        }
    }
}

/// Suspended units that keep correcting drift with nothing to run (the daemon restarted
/// since they were suspended) start on the revision their inventory records, rendered
/// again from the source (fetched by commit when the cache lacks it), so a freeze still
/// corrects drift after a restart while newer commits wait. `restoring` keeps a unit
/// from being looked for twice; one whose revision cannot be rendered is tried again at
/// the next render.
pub fn restore_suspended(
    scheduler: &Arc<Scheduler>,
    gate: &Arc<super::gatekeeper::Gatekeeper>,
    state: &Arc<crate::desired::DesiredState>,
    (restoring, restored): (
        &Arc<std::sync::Mutex<std::collections::BTreeSet<UnitId>>>,
        &mpsc::Sender<()>,
    ),
) {
    let units: Vec<UnitId> = {
        let mut r = restoring.lock().unwrap_or_else(|e| e.into_inner());
        scheduler
            .idle_correcting()
            .into_iter()
            .filter(|u| r.insert(u.clone()))
            .collect()
    };
    if units.is_empty() {
        return;
    }
    let (scheduler, gate, state, restoring, restored) = (
        scheduler.clone(),
        gate.clone(),
        state.clone(),
        restoring.clone(),
        restored.clone(),
    );
    tokio::spawn(async move {
        for unit in units {
            match gate.running_of(&unit, &state).await {
                Ok(Some(running)) => {
                    if scheduler.run_suspended(&unit, running.desired, &running.revision) {
                        tracing::info!(%unit, revision = %running.revision, "suspended, correcting drift: runs the revision its inventory records");
                        let _ = restored.try_send(());
                    }
                }
                Ok(None) => {
                    tracing::info!(%unit, "suspended, correcting drift, with no revision applied yet: nothing to correct until it resumes");
                }
                Err(e) => {
                    tracing::warn!(%unit, error = %e, "suspended, correcting drift, and the revision it runs cannot be rendered again: tried again at the next render");
                    restoring
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&unit);
                }
            }
        }
    });
}

/// What rollout stages hold (`held`) and what suspended units that keep correcting run:
/// every revision whose kinds the drift watches cover besides the newest.
pub fn with_suspended(
    held: &[Arc<crate::desired::UnitDesired>],
    scheduler: &Scheduler,
) -> Vec<Arc<crate::desired::UnitDesired>> {
    let mut all = held.to_vec();
    all.extend(scheduler.suspended_running());
    all
}
