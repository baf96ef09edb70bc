//! Drift correction latency against a real kube-apiserver: 1,000 managed ConfigMaps in
//! 10 teams, 200 hand edits by another field manager at a steady rate (one every
//! 100 ms). For each edit: the time from the edit's response to the corrected object
//! being observed. Prints p50, p99 and the process's CPU time; asserts nothing on time.
//!
//!     cargo bench --bench drift

#[allow(dead_code)]
mod common;
#[path = "../tests/support/control_plane.rs"]
#[allow(dead_code)]
mod control_plane;
#[path = "../tests/support/fixtures.rs"]
#[allow(dead_code)]
mod fixtures;
#[path = "../tests/support/script.rs"]
#[allow(dead_code)]
mod script;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fixtures::*;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};
use pontoon::cluster::Cluster;
use pontoon::daemon::scheduler::{Scheduler, SchedulerOptions};
use pontoon::desired::*;
use pontoon::drift::{DriftSettings, DriftWatch, kinds_of};
use pontoon::sync::{SyncOptions, Syncer};
use serde_json::json;
use tokio::sync::mpsc;

const TEAMS: usize = 10;
const PER_TEAM: usize = 100;
const EDITS: usize = 200;

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let cp = control_plane::shared();
    rt.block_on(async {
        let cluster = Cluster::from_config(ClusterName(cp.name.into()), cp.config().await, 16)
            .expect("cluster");
        let syncer = Arc::new(Syncer::new(Arc::new(cluster), SyncOptions::default()));
        let mut state = DesiredState {
            revision: "bench".into(),
            ..DesiredState::default()
        };
        for t in 0..TEAMS {
            let team = format!("drift-{t}");
            let mut objects = team_base(&team, &[&team]);
            for i in 0..PER_TEAM {
                objects.push(configmap(
                    &team,
                    &team,
                    &format!("cm-{i}"),
                    json!({"value": "desired"}),
                ));
            }
            let u = unit_desired(&team, cp.name, &[&team], objects);
            state.units.insert(u.unit.clone(), u);
        }
        let (tx, mut reports) = mpsc::channel(1024);
        let scheduler = Arc::new(Scheduler::new(
            BTreeMap::from([(ClusterName(cp.name.into()), syncer.clone())]),
            SchedulerOptions::default(),
            tx,
        ));
        scheduler.apply(&state).await;
        for _ in 0..TEAMS {
            reports.recv().await.expect("first syncs");
        }
        tokio::spawn(async move { while reports.recv().await.is_some() {} });

        // The daemon's wiring: a drift event triggers its unit.
        let (dtx, mut drx) = mpsc::channel(4096);
        let (failures, _) = mpsc::channel(64);
        let settings = DriftSettings {
            human_managers: Vec::new(),
            reporter_instance: "drift-bench".into(),
        };
        let watch = DriftWatch::new(syncer.clone(), dtx, failures, &settings);
        watch
            .ensure(kinds_of(&state, &ClusterName(cp.name.into())))
            .await;
        let s2 = scheduler.clone();
        tokio::spawn(async move {
            while let Some(e) = drx.recv().await {
                if !e.corrected {
                    s2.trigger(&e.unit);
                }
            }
        });
        tokio::time::sleep(Duration::from_secs(2)).await;

        let client = cp.client().await;
        let cpu0 = common::cpu_seconds();
        let started = Instant::now();
        let mut waits = Vec::new();
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        for n in 0..EDITS {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let team = format!("drift-{}", seed % TEAMS as u64);
            let name = format!("cm-{}", (seed / 7) % PER_TEAM as u64);
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), &team);
            let pp = PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..Default::default()
            };
            api.patch(
                &name,
                &pp,
                &Patch::Merge(json!({"data": {"value": format!("edit-{n}")}})),
            )
            .await
            .expect("edit");
            let edited = Instant::now();
            waits.push(tokio::spawn(async move {
                loop {
                    let cm = api.get(&name).await.expect("get");
                    if cm.data.and_then(|d| d.get("value").cloned()).as_deref() == Some("desired") {
                        return edited.elapsed();
                    }
                    if edited.elapsed() > Duration::from_secs(30) {
                        return Duration::from_secs(30);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut lat: Vec<Duration> = Vec::new();
        for w in waits {
            lat.push(w.await.expect("wait task"));
        }
        let cpu = common::cpu_seconds() - cpu0;
        lat.sort();
        let pct = |p: f64| {
            lat[((lat.len() as f64 * p).ceil() as usize)
                .saturating_sub(1)
                .min(lat.len() - 1)]
        };
        println!(
            "objects: {} in {TEAMS} units; edits: {EDITS} at one per 100 ms",
            TEAMS * PER_TEAM
        );
        println!(
            "edit → corrected object observed: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            pct(0.50).as_secs_f64() * 1000.0,
            pct(0.99).as_secs_f64() * 1000.0,
            lat[lat.len() - 1].as_secs_f64() * 1000.0
        );
        println!(
            "process CPU over the {:.1} s run: {:.2} s (includes this benchmark's own polling)",
            started.elapsed().as_secs_f64(),
            cpu
        );
        watch.stop();
    });
}
