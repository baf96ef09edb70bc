//! The first sync of many teams, against a real kube-apiserver: a team's first sync reads
//! its own new Namespace, not every Namespace on the cluster (so a thousand teams' first
//! syncs do not read a million); the units of a cluster take turns to sync, a bounded
//! number at once; and a Unit's status is written while every apply permit of the cluster
//! is taken, so the Unit resources do not trail a first sync's queue of applies.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{DynamicObject, PostParams};
use pontoon::cluster::Cluster;
use pontoon::daemon::scheduler::{Scheduler, SchedulerOptions};
use pontoon::desired::*;
use pontoon::status::SyncReport;
use pontoon::sync::{SyncOptions, Syncer, UnitResult, UnitState};
use pontoon::units::control::UnitWriter;
use serde_json::json;
use tokio::sync::mpsc;

use crate::support::control_plane::{self, ControlPlane, RequestKey, unique_name};
use crate::support::fixtures::*;

/// The control plane of these tests: the first one fills it with Namespaces, which no
/// other test should have to page through.
fn plane() -> &'static ControlPlane {
    control_plane::dedicated("first-sync")
}

async fn cluster(cp: &ControlPlane, concurrency: usize) -> Arc<Cluster> {
    let cluster = Cluster::from_config(ClusterName(cp.name.into()), cp.config().await, concurrency)
        .expect("cluster");
    Arc::new(cluster)
}

/// Creates `n` Namespaces made by hand (no pontoon labels), 16 at a time.
async fn crowd(cp: &ControlPlane, prefix: &str, n: usize) {
    let api: Api<Namespace> = Api::all(cp.client().await);
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let name = format!("{prefix}-{i}");
            async move {
                let ns: Namespace =
                    serde_json::from_value(json!({"metadata": {"name": name}})).expect("ns");
                api.create(&PostParams::default(), &ns)
                    .await
                    .expect("create a Namespace")
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
}

/// Requests the apiserver counted while `f` ran, by verb and resource (`LIST namespaces`).
async fn requests_while<T>(
    cp: &ControlPlane,
    f: impl std::future::Future<Output = T>,
) -> (T, BTreeMap<String, u64>) {
    let before = cp.requests_by_resource();
    let out = f.await;
    let mut by = BTreeMap::new();
    for (k, n) in RequestKey::delta(&before, cp.requests_by_resource()) {
        *by.entry(format!("{} {}", k.verb, k.resource)).or_insert(0) += n;
    }
    (out, by)
}

/// On a cluster with 600 Namespaces (more than one page of a list), a new team's first
/// sync lists Namespaces once, for its own label, and reads its new Namespace by name:
/// the other 600 are not read. Ownership is still judged: a Namespace the team claims
/// that another team holds is refused, naming that team.
#[tokio::test]
async fn a_first_sync_reads_the_teams_new_namespace_not_every_namespace() {
    let cp = plane();
    let s = Syncer::new(cluster(cp, 16).await, SyncOptions::default());
    crowd(cp, &unique_name("crowd"), 600).await;
    let (holder, newcomer) = (unique_name("holder"), unique_name("newcomer"));
    let r = s
        .sync(
            &unit_desired(&holder, cp.name, &[&holder], team_base(&holder, &[&holder])),
            "r1",
        )
        .await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");

    let mut objects = team_base(&newcomer, &[&newcomer]);
    objects.push(configmap(&newcomer, &newcomer, "app", json!({"a": "1"})));
    let (r, requests) = requests_while(
        cp,
        s.sync(
            &unit_desired(&newcomer, cp.name, &[&newcomer], objects),
            "r1",
        ),
    )
    .await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    eprintln!("requests of a first sync among 600 Namespaces: {requests:?}");
    assert_eq!(
        requests.get("LIST namespaces").copied().unwrap_or(0),
        1,
        "one list of the team's own Namespaces, none of every Namespace: {requests:?}"
    );
    assert_eq!(
        requests.get("GET namespaces").copied().unwrap_or(0),
        1,
        "its new Namespace read by name: {requests:?}"
    );

    // A second namespace another team holds: refused, found by the same read.
    let mut objects = team_base(&newcomer, &[&newcomer, &holder]);
    objects.push(configmap(&newcomer, &newcomer, "app", json!({"a": "1"})));
    let r = s
        .sync(
            &unit_desired(&newcomer, cp.name, &[&newcomer, &holder], objects),
            "r2",
        )
        .await;
    assert_eq!(r.state, UnitState::Failed, "{r:?}");
    assert!(
        r.errors
            .iter()
            .any(|e| e.object == format!("Namespace/{holder}")
                && e.message.contains(&format!("belongs to team {holder}"))),
        "{r:?}"
    );
}

/// Sixty units handed to the scheduler at once, on a cluster with two applies in flight
/// and four units syncing at a time: no more than four are ever syncing (sampled while
/// they run), and all sixty are Synced in the end. Sharing only the request limits,
/// every one of them started at once.
#[tokio::test]
async fn units_of_a_cluster_take_turns_to_sync() {
    let cp = plane();
    // Inventories of their own: the scheduler removes the teams whose inventories the
    // state does not name, and the other tests' teams are not this state's.
    let options = SyncOptions {
        namespace: unique_name("turns-system"),
        ..SyncOptions::default()
    };
    let syncer = Arc::new(Syncer::new(cluster(cp, 2).await, options));
    let (tx, mut rx) = mpsc::channel::<SyncReport>(256);
    let options = SchedulerOptions {
        units_at_once: 4,
        ..SchedulerOptions::default()
    };
    let scheduler = Scheduler::new(
        BTreeMap::from([(ClusterName(cp.name.into()), syncer.clone())]),
        options,
        tx,
    );
    let prefix = unique_name("turns");
    let teams: Vec<TeamName> = (0..60).map(|i| TeamName(format!("{prefix}-{i}"))).collect();
    let mut state = DesiredState {
        revision: "r1".into(),
        ..DesiredState::default()
    };
    for team in &teams {
        let t = team.0.as_str();
        let mut objects = team_base(t, &[t]);
        for c in 0..3 {
            objects.push(configmap(t, t, &format!("c{c}"), json!({"c": "1"})));
        }
        let u = unit_desired(t, cp.name, &[t], objects);
        state.units.insert(u.unit.clone(), u);
    }
    scheduler.apply(&state).await;

    let mut most = 0;
    let mut synced = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while synced < teams.len() {
        let syncing = teams.iter().filter(|t| syncer.is_syncing(t)).count();
        most = most.max(syncing);
        tokio::select! {
            r = rx.recv() => {
                let r = r.expect("reports open");
                assert_eq!(r.result.state, UnitState::Synced, "{:?}", r.result);
                synced += 1;
            }
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            _ = tokio::time::sleep_until(deadline) => panic!("{synced} of 60 units Synced in 5 minutes"),
        }
    }
    eprintln!("units of 60 syncing at once, at most: {most}");
    assert!(most <= 4, "{most} units synced at once");
    assert!(most >= 1, "no sync was seen running");
    assert!(scheduler.shutdown(Duration::from_secs(10)).await.is_empty());
}

/// A Unit's status is written while every apply permit of its cluster is held (by a first
/// sync's queue of applies, say): Units have a limit of their own.
#[tokio::test]
async fn a_units_status_is_written_while_every_apply_permit_is_taken() {
    let cp = plane();
    let cluster = cluster(cp, 1).await;
    let owner = Owner::default();
    pontoon::units::crd::ensure(cluster.client(), &owner)
        .await
        .expect("the Unit definition");
    let namespace = unique_name("units");
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": namespace}})).expect("ns");
    Api::<Namespace>::all(cp.client().await)
        .create(&PostParams::default(), &ns)
        .await
        .expect("the Units' namespace");
    let writer = UnitWriter::new(cluster.clone(), &namespace, &owner);
    writer.load().await.expect("read the Units");

    let team = unique_name("waiting");
    let mut result = UnitResult::new(unit(&team, cp.name), "0123456789abcdef");
    result.state = UnitState::Synced;
    let _every_apply = cluster.write_permit().await;
    let written = tokio::time::timeout(
        Duration::from_secs(60),
        writer.record(
            &result,
            None,
            None,
            &BTreeMap::new(),
            "2026-01-01T00:00:00Z",
        ),
    )
    .await
    .expect("the Unit written though no apply permit is free")
    .expect("the Unit written");
    assert!(written);
    let units: Api<DynamicObject> = pontoon::units::control::api(cp.client().await, &namespace);
    let name = pontoon::units::unit_name(&owner, &TeamName(team.clone()));
    let unit = units.get(&name).await.expect("the Unit");
    let ready = unit.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    assert!(ready, "{:?}", unit.data["status"]);
}
