//! One unit's worker: its loop of syncs of the newest work, the report of each attempt,
//! the retries of a failed unit with backoff, the wait for health of a Progressing one,
//! and its turn among the cluster's units to sync
//! ([`super::scheduler::SchedulerOptions::units_at_once`]).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{Semaphore, mpsc, watch};

use super::scheduler::{SchedulerOptions, Work};
use crate::backoff::backoff;
use crate::desired::{PLATFORM_UNIT, UnitId};
use crate::status::SyncReport;
use crate::sync::{Syncer, UnitResult, UnitState};

/// Waits for a turn of the cluster's units to sync (see
/// [`SchedulerOptions::units_at_once`]); the `platform` unit takes none. A team's sync
/// (`platform_first`) first waits for the platform unit's turn at this revision, holding
/// no turn meanwhile, so teams waiting for it never keep it from syncing.
async fn turn(
    id: &UnitId,
    syncer: &Syncer,
    turns: &Arc<Semaphore>,
    platform_first: bool,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    if id.team.0 == PLATFORM_UNIT {
        return None;
    }
    if platform_first {
        syncer.components().platform_first().await;
    }
    // The semaphore is never closed.
    turns.clone().acquire_owned().await.ok()
}

pub(super) async fn run_worker(
    id: UnitId,
    (syncer, turns): (Arc<Syncer>, Arc<Semaphore>),
    mut rx: watch::Receiver<Work>,
    mut shutdown: watch::Receiver<bool>,
    reports: mpsc::Sender<SyncReport>,
    options: SchedulerOptions,
    attempted: Arc<Mutex<BTreeSet<UnitId>>>,
) {
    let mut failures: u32 = 0;
    let mut progressing_since: Option<(String, Instant)> = None;
    let mut first = true;
    // The value present at spawn counts as new work.
    rx.mark_changed();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
        if *shutdown.borrow() {
            return;
        }
        let work = rx.borrow_and_update().clone();
        let result = match &work {
            Work::Sync {
                desired, revision, ..
            } => {
                let mut result = {
                    let _turn = turn(&id, &syncer, &turns, true).await;
                    syncer.sync(desired, revision).await
                };
                if result.state == UnitState::Progressing {
                    let since = match &progressing_since {
                        Some((rev, at)) if rev == revision => *at,
                        _ => {
                            let now = Instant::now();
                            progressing_since = Some((revision.clone(), now));
                            now
                        }
                    };
                    // Report Progressing now, then wait for health (syncing again
                    // when objects waiting for others can be applied) unless new work
                    // comes.
                    send_report(&reports, &attempted, &result, &mut first, false);
                    tokio::select! {
                        r = syncer.settle(desired, revision, result.clone(), since, options.health_timeout, options.health_poll) => result = r,
                        _ = rx.changed() => { rx.mark_changed(); continue; }
                        _ = shutdown.changed() => return,
                    }
                }
                if result.state != UnitState::Progressing {
                    progressing_since = None;
                }
                result
            }
            Work::Remove {
                policy, revision, ..
            } => {
                let _turn = turn(&id, &syncer, &turns, false).await;
                syncer.remove_team(&id.team, policy, revision).await
            }
        };
        send_report(
            &reports,
            &attempted,
            &result,
            &mut first,
            matches!(work, Work::Remove { .. }),
        );
        if result.state == UnitState::Failed {
            failures += 1;
            let wait = backoff(options.backoff_base, options.backoff_cap, failures);
            tracing::warn!(unit = %id, failures, retry_in = ?wait, message = result.message.as_deref().unwrap_or(""), "sync failed");
            tokio::select! {
                _ = tokio::time::sleep(wait) => rx.mark_changed(),
                changed = rx.changed() => { if changed.is_err() { return } rx.mark_changed(); }
                _ = shutdown.changed() => return,
            }
        } else {
            failures = 0;
            if matches!(work, Work::Remove { .. }) && result.state == UnitState::Synced {
                // The team is gone from this cluster; the worker has nothing left to do.
                return;
            }
            if result.waits_for_components() {
                // Objects wait for a platform component: sync again once the platform
                // unit finds it healthy (or failing for another reason), or on new work.
                tokio::select! {
                    _ = syncer.components().moved_since(&result) => rx.mark_changed(),
                    changed = rx.changed() => { if changed.is_err() { return } rx.mark_changed(); }
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

fn send_report(
    reports: &mpsc::Sender<SyncReport>,
    attempted: &Mutex<BTreeSet<UnitId>>,
    result: &UnitResult,
    first: &mut bool,
    removal: bool,
) {
    attempted
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(result.unit.clone());
    let report = SyncReport {
        result: result.clone(),
        first_attempt: std::mem::take(first),
        removal,
    };
    if reports.try_send(report).is_err() {
        tracing::warn!(unit = %result.unit, "status queue full; a report was dropped");
    }
}
