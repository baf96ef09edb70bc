//! The scheduler against the real control plane: a broken unit never holds a healthy one
//! back, retries with a backoff that doubles up to its cap, and triggers coalesce.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    let (base, cap) = (Duration::from_millis(300), Duration::from_secs(2));
    let options = SchedulerOptions {
        backoff_base: base,
        backoff_cap: cap,
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
    // The failed unit is retried by itself, each wait twice the last (±20% jitter) until
    // the cap: 300 ms, 600 ms, 1.2 s, then 2 s where 2.4 s, 4.8 s and 9.6 s would follow
    // uncapped. A wait is the time between two reports less the later attempt's own
    // duration; delays only lengthen it, so the lower bounds hold on a busy machine.
    let mut received = Instant::now();
    let mut waits = Vec::new();
    for _ in 0..6 {
        let retry = next_for(&mut rx, &bad).await;
        let now = Instant::now();
        assert!(!retry.first_attempt, "the failed unit is retried by itself");
        assert_eq!(retry.result.state, UnitState::Failed);
        waits.push((now - received).saturating_sub(retry.result.duration));
        received = now;
    }
    for (n, wait) in waits.iter().enumerate() {
        let nominal = base.saturating_mul(1 << n).min(cap);
        assert!(
            *wait
                >= nominal
                    .mul_f64(0.8)
                    .saturating_sub(Duration::from_millis(20)),
            "wait {} was {wait:?}, less than 80% of {nominal:?}: {waits:?}",
            n + 1
        );
    }
    for wait in &waits[3..] {
        assert!(
            *wait < cap + Duration::from_secs(1),
            "a wait past the cap ({cap:?}): {waits:?}"
        );
    }
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
