//! The Units of one term of leadership: every sync report written to its unit's `Unit`
//! status (when it changed), a Unit removed with its team, and a reconcile request read
//! from a Unit handed to the scheduler as a sync now.
//!
//! Fenced as every write is: the tasks that write live inside the term and are aborted
//! first when it ends, before the scheduler drains, so a replica that lost the lease
//! writes no status afterwards. Reports still reach the board and metrics through the
//! forwarder, which writes nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::board::Board;
use super::poll_and_render::PollNow;
use super::scheduler::Scheduler;
use crate::backoff::backoff;
use crate::desired::{ClusterName, Owner, TeamName, UnitId};
use crate::status::SyncReport;
use crate::sync::{Syncer, UnitState};
use crate::units::control::{Asked, UnitWriter, watch_asked};

/// Where the Units live (the daemon's namespace and owner), and how to have the source
/// polled before a sync someone asked for.
#[derive(Clone)]
pub struct UnitSettings {
    pub namespace: String,
    pub owner: Owner,
    pub poll_now: Option<PollNow>,
}

/// How long a reconcile with source waits for the poll before it syncs anyway.
const POLL_WAIT: Duration = Duration::from_secs(120);

/// Reports queued per cluster before the oldest are dropped (the next report of a unit
/// writes its status anyway).
const QUEUE: usize = 1024;

/// The Unit tasks of one term.
pub struct UnitsTerm {
    writers: Vec<JoinHandle<()>>,
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
    ) -> UnitsTerm {
        let mut queues = HashMap::new();
        let mut writers = Vec::new();
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
        UnitsTerm { writers }
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
) {
    let mut writer = UnitWriter::new(
        syncer.cluster().clone(),
        &settings.namespace,
        &settings.owner,
    );
    let mut failures = 0;
    loop {
        let ready = match crate::units::crd::ensure(syncer.client(), &settings.owner).await {
            Ok(()) => writer.load().await,
            Err(e) => Err(e),
        };
        match ready {
            Ok(()) => break,
            Err(e) => {
                failures += 1;
                let wait = backoff(Duration::from_secs(2), Duration::from_secs(300), failures);
                tracing::warn!(%cluster, error = %crate::describe(&e), retry_in = ?wait, "Units unavailable");
                tokio::time::sleep(wait).await;
                // What was reported meanwhile is written by the unit's next report.
                while reports.try_recv().is_ok() {}
            }
        }
    }
    let mut asked = Box::pin(watch_asked(
        syncer.cluster(),
        &settings.namespace,
        &settings.owner,
    ));
    let mut pending: HashMap<TeamName, Pending> = HashMap::new();
    let (polled_tx, mut polled) = mpsc::channel::<(TeamName, String)>(QUEUE);
    loop {
        tokio::select! {
            report = reports.recv() => {
                let Some(r) = report else { return };
                write_report(&mut writer, &board, &mut pending, &r).await;
            }
            Some(a) = asked.next() => {
                let Some((team, value, with_source)) = request(&mut pending, a) else { continue };
                match &settings.poll_now {
                    Some(poll_now) if with_source => {
                        let (poll_now, tx) = (poll_now.clone(), polled_tx.clone());
                        tokio::spawn(async move {
                            poll_now.poll(POLL_WAIT).await;
                            let _ = tx.send((team, value)).await;
                        });
                    }
                    _ => trigger(&cluster, &scheduler, &mut pending, team, &value),
                }
            }
            Some((team, value)) = polled.recv() => {
                trigger(&cluster, &scheduler, &mut pending, team, &value);
            }
        }
    }
}

/// Hands a request to the scheduler, unless a newer one replaced it meanwhile.
fn trigger(
    cluster: &ClusterName,
    scheduler: &Scheduler,
    pending: &mut HashMap<TeamName, Pending>,
    team: TeamName,
    value: &str,
) {
    let Some(p) = pending.get_mut(&team).filter(|p| p.value == value) else {
        return;
    };
    p.at = Some(Instant::now());
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

async fn write_report(
    writer: &mut UnitWriter,
    board: &Board,
    pending: &mut HashMap<TeamName, Pending>,
    r: &SyncReport,
) {
    let team = &r.result.unit.team;
    if r.removal {
        if r.result.state == UnitState::Synced
            && let Err(e) = writer.remove(team).await
        {
            tracing::warn!(unit = %r.result.unit, error = %crate::describe(&e), "removing the Unit");
        }
        return;
    }
    // A sync that started after the request answers it.
    let started = Instant::now().checked_sub(r.result.duration);
    let answered = pending
        .get(team)
        .filter(|p| started.zip(p.at).is_some_and(|(s, at)| s >= at))
        .map(|p| p.value.clone());
    let shown = board.with_render_failure(&r.result, false);
    let now = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
        .map(|t| t.to_string())
        .unwrap_or_default();
    match writer.record(&shown, answered.as_deref(), &now).await {
        Ok(_) => {
            if answered.is_some() {
                pending.remove(team);
            }
        }
        Err(e) => {
            tracing::warn!(unit = %r.result.unit, error = %crate::describe(&e), "writing the Unit status")
        }
    }
}
