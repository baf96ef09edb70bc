//! The scheduler against the real control plane: a broken unit never holds a healthy one
//! back, retries with backoff, and triggers coalesce.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use pontoon::cluster::Cluster;
use pontoon::daemon::scheduler::{Scheduler, SchedulerOptions};
use pontoon::desired::*;
use pontoon::status::SyncReport;
use pontoon::sync::{SyncOptions, Syncer, UnitState};
use serde_json::json;
use tokio::sync::mpsc;

use crate::support::control_plane::{self, unique_name};
use crate::support::fixtures::*;

async fn next_for(rx: &mut mpsc::Receiver<SyncReport>, team: &str) -> SyncReport {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let r = rx.recv().await.expect("reports channel open");
            if r.result.unit.team.0 == team {
                return r;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no report for {team} within 30s"))
}

#[tokio::test]
async fn a_failing_unit_retries_with_backoff_and_never_blocks_a_healthy_one() {
    let cp = control_plane::shared();
    let cluster =
        Cluster::from_config(ClusterName(cp.name.into()), cp.config().await, 8).expect("cluster");
    let syncer = Arc::new(Syncer::new(Arc::new(cluster), SyncOptions::default()));
    let (tx, mut rx) = mpsc::channel(64);
    let options = SchedulerOptions {
        backoff_base: Duration::from_millis(300),
        backoff_cap: Duration::from_secs(2),
        ..SchedulerOptions::default()
    };
    let scheduler = Scheduler::new(
        BTreeMap::from([(ClusterName(cp.name.into()), syncer)]),
        options,
        tx,
    );

    let (good, bad) = (unique_name("good"), unique_name("bad"));
    let mut state = DesiredState {
        revision: "r1".into(),
        ..DesiredState::default()
    };
    let mut objects = team_base(&good, &[&good]);
    objects.push(configmap(&good, &good, "app", json!({})));
    let u = unit_desired(&good, cp.name, &[&good], objects);
    state.units.insert(u.unit.clone(), u);
    // A kind no cluster serves: this unit fails every time.
    let mut objects = team_base(&bad, &[&bad]);
    objects.push(obj(&bad, Applier::Team, json!({"apiVersion": "nowhere.example/v1", "kind": "Ghost", "metadata": {"name": "g", "namespace": bad}})));
    let u = unit_desired(&bad, cp.name, &[&bad], objects);
    state.units.insert(u.unit.clone(), u);

    scheduler.apply(&state).await;
    let g = next_for(&mut rx, &good).await;
    assert_eq!(g.result.state, UnitState::Synced, "{:?}", g.result);
    assert!(g.first_attempt);

    let b1 = next_for(&mut rx, &bad).await;
    assert_eq!(b1.result.state, UnitState::Failed);
    assert!(
        b1.result.message.as_deref().unwrap_or("").contains("Ghost"),
        "{:?}",
        b1.result.message
    );
    let b2 = next_for(&mut rx, &bad).await;
    assert!(!b2.first_attempt, "the failed unit is retried by itself");
    assert!(scheduler.ready(), "every unit has been attempted");

    // A burst of triggers for the good unit coalesces into few syncs.
    for _ in 0..50 {
        scheduler.trigger(&unit(&good, cp.name));
    }
    let again = next_for(&mut rx, &good).await;
    assert_eq!(again.result.state, UnitState::Synced);
    assert_eq!(
        again.result.writes, 0,
        "a resync of an unchanged unit writes nothing"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut extra = 0;
    while let Ok(r) = rx.try_recv() {
        if r.result.unit.team.0 == good {
            extra += 1;
        }
    }
    assert!(extra <= 1, "50 triggers became {} syncs", extra + 1);

    let abandoned = scheduler.shutdown(Duration::from_secs(5)).await;
    assert!(abandoned.is_empty(), "{abandoned:?}");
}
