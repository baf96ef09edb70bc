//! The daemon's side of drift for one term of leadership: a drift watch per cluster, each
//! drift event handed to the metrics, the board and (drift mode `correct`) the scheduler,
//! which syncs the unit; each drift failure counted and shown on the units it concerns.
//! Drift detected and corrected is told to the notifications too.
//! A drift reported `again` (still open after the sync it asked for) only triggers one
//! more sync: every edit that leaves an object drifted gets a sync after it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::board::Board;
use super::metrics::Metrics;
use super::scheduler::Scheduler;
use crate::desired::{ClusterName, DesiredState, DriftMode, UnitDesired, UnitId};
use crate::drift::{DriftEvent, DriftFailure, DriftSettings, DriftWatch, FailureScope};
use crate::sync::Syncer;

/// Bounded: what overflows is logged by the watches, and the periodic resync catches up.
const QUEUE: usize = 4096;

/// The drift watches of every cluster and the tasks handling what they send.
pub(super) struct DriftHandling {
    watches: BTreeMap<ClusterName, Arc<DriftWatch>>,
    tasks: Vec<JoinHandle<()>>,
}

impl DriftHandling {
    pub(super) fn start(
        syncers: &BTreeMap<ClusterName, Arc<Syncer>>,
        settings: &DriftSettings,
        scheduler: Arc<Scheduler>,
        board: Arc<Board>,
        metrics: Arc<Metrics>,
        notifications: super::notifications::Shared,
        teams: Option<&BTreeSet<crate::desired::TeamName>>,
    ) -> DriftHandling {
        let (events_tx, mut events) = mpsc::channel::<DriftEvent>(QUEUE);
        let (failures_tx, mut failures) = mpsc::channel::<DriftFailure>(QUEUE);
        let watches = syncers
            .iter()
            .map(|(name, s)| {
                let watch =
                    DriftWatch::new(s.clone(), events_tx.clone(), failures_tx.clone(), settings);
                if let Some(teams) = teams {
                    watch.only_teams(teams);
                }
                (name.clone(), watch)
            })
            .collect();
        let on_events = {
            let (board, metrics) = (board.clone(), metrics.clone());
            let watched = teams.cloned();
            tokio::spawn(async move {
                while let Some(e) = events.recv().await {
                    // Only the teams watched: an event of a shard given up is its new
                    // holder's to show.
                    if watched.as_ref().is_some_and(|t| !t.contains(&e.unit.team)) {
                        continue;
                    }
                    handle_drift(&e, &scheduler, &board, &metrics);
                    if let Some(n) = &notifications {
                        n.drift(&e);
                    }
                }
            })
        };
        let on_failures = tokio::spawn(async move {
            while let Some(f) = failures.recv().await {
                metrics.drift_failed(&f);
                for unit in units_concerned(&f, &board) {
                    board.drift_failed(&unit, crate::describe(&f.error));
                }
            }
        });
        DriftHandling {
            watches,
            tasks: vec![on_events, on_failures],
        }
    }

    /// Watches the kinds `state` manages on each cluster, and those of the revisions the
    /// units in `held` run (a rollout stage holds them back: their drift is corrected at
    /// their own revision, which may use a kind the newest one dropped).
    pub(super) async fn ensure(&self, state: &DesiredState, held: &[Arc<UnitDesired>]) {
        for (name, w) in &self.watches {
            let mut kinds = crate::drift::kinds_of(state, name);
            kinds.extend(crate::drift::kinds_of_units(
                held.iter().map(|u| u.as_ref()),
                name,
            ));
            w.ensure(kinds).await;
        }
    }

    pub(super) fn stop(self) {
        for w in self.watches.values() {
            w.stop();
        }
        for t in self.tasks {
            t.abort();
        }
    }
}

fn handle_drift(e: &DriftEvent, scheduler: &Scheduler, board: &Board, metrics: &Metrics) {
    if e.again {
        // An open drift changed again after the sync it asked for: one more sync, nothing
        // new to count or show.
        tracing::debug!(unit = %e.unit, object = %e.key, manager = %e.manager, "drift still open; syncing again");
        if e.mode == DriftMode::Correct {
            scheduler.trigger(&e.unit);
        }
        return;
    }
    metrics.drift(e);
    let view = crate::server::DriftView {
        object: e.key.to_string(),
        manager: e.manager.clone(),
        at: e.at.clone(),
        corrected: e.corrected,
        mode: e.mode,
    };
    let report = e.mode == DriftMode::Report;
    board.drift(&e.unit, view, report && !e.corrected);
    if e.corrected {
        tracing::info!(unit = %e.unit, object = %e.key, after = ?e.detected.elapsed(), "drift corrected");
    } else {
        tracing::warn!(unit = %e.unit, object = %e.key, manager = %e.manager, by_person = e.by_person, at = %e.at, fields = %e.paths.join(", "), added = %e.added.join(", "),
            mode = if report { "report" } else { "correct" }, "drift detected");
        if !report {
            scheduler.trigger(&e.unit);
        }
    }
}

/// The units a failure concerns: the team's unit on the cluster, or every unit there
/// when a whole kind's watch failed.
fn units_concerned(f: &DriftFailure, board: &Board) -> BTreeSet<UnitId> {
    match &f.scope {
        FailureScope::Team(team) => BTreeSet::from([UnitId {
            team: team.clone(),
            cluster: f.cluster.clone(),
        }]),
        FailureScope::Kind(_) => board.units_on(&f.cluster).into_iter().collect(),
    }
}
