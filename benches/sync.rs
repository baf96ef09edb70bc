//! First sync of 10,000 objects across 100 teams against a real kube-apiserver, compared
//! with `kubectl apply --server-side` of the same objects (the kubectl the test harness
//! builds), then the no-op resync: write requests, time and CPU. Prints figures; asserts
//! nothing about time.
//!
//!     cargo bench --bench sync
//!
//! Each tool gets a fresh control plane of its own so neither pays for the other's data.

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

use std::sync::Arc;
use std::time::Instant;

use fixtures::*;
use pontoon::cluster::Cluster;
use pontoon::desired::*;
use pontoon::sync::{SyncOptions, Syncer, UnitState};
use serde_json::json;

const TEAMS: usize = 100;
const PER_TEAM: usize = 100;

fn state(cluster: &str) -> DesiredState {
    let mut s = DesiredState {
        revision: "bench".into(),
        ..DesiredState::default()
    };
    for t in 0..TEAMS {
        let team = format!("team-{t:03}");
        let mut objects = team_base(&team, &[&team]);
        for i in 0..PER_TEAM - objects.len() {
            objects.push(match i % 10 {
                0 => obj(
                    &team,
                    Applier::Team,
                    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("svc-{i}"), "namespace": team},
                           "spec": {"selector": {"app": format!("app-{i}")}, "ports": [{"port": 80, "targetPort": 8080}]}}),
                ),
                1 => deployment(&team, &team, &format!("app-{i}"), "registry.example/app:1.0", 2),
                _ => configmap(&team, &team, &format!("cm-{i}"), json!({"key": format!("value-{i}"), "team": team})),
            });
        }
        let u = unit_desired(&team, cluster, &[&team], objects);
        s.units.insert(u.unit.clone(), u);
    }
    s
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let one = control_plane::shared();
    let desired = state(one.name);
    let total: usize = desired.units.values().map(|u| u.objects.len()).sum();
    println!("objects: {total} in {TEAMS} teams");

    let (first, noop) = rt.block_on(async {
        let cluster = Cluster::from_config(ClusterName(one.name.into()), one.config().await, 16)
            .expect("cluster");
        let syncer = Syncer::new(Arc::new(cluster), SyncOptions::default());
        let servers0 = common::servers_cpu(&one.dir.to_string_lossy());
        let requests0 = one.requests_by_verb();
        let cpu0 = common::cpu_seconds();
        let t = Instant::now();
        let results = syncer.sync_cluster(&desired).await;
        let first = (t.elapsed(), common::cpu_seconds() - cpu0);
        let servers =
            common::cpu_spent(&servers0, &common::servers_cpu(&one.dir.to_string_lossy()));
        println!(
            "servers during pontoon's first sync: {}",
            common::cpu_line(&servers)
        );
        println!(
            "pontoon's first sync: {}",
            common::floor_line(
                servers.values().sum::<f64>() + first.1,
                first.0.as_secs_f64()
            )
        );
        println!(
            "requests during pontoon's first sync: {}",
            common::requests_delta(&requests0, &one.requests_by_verb())
        );
        let failed: Vec<_> = results
            .iter()
            .filter(|r| r.state == UnitState::Failed)
            .collect();
        assert!(
            failed.is_empty(),
            "first sync failed: {:?}",
            failed.first().map(|r| &r.message)
        );

        let writes0 = one.write_requests();
        let cpu0 = common::cpu_seconds();
        let t = Instant::now();
        let results = syncer.sync_cluster(&desired).await;
        let noop = (
            t.elapsed(),
            common::cpu_seconds() - cpu0,
            one.write_requests() - writes0,
        );
        assert!(results.iter().all(|r| r.writes == 0), "no-op resync wrote");
        (first, noop)
    });
    println!(
        "pontoon first sync: {:.2} s wall, {:.2} s CPU ({:.0} objects/s)",
        first.0.as_secs_f64(),
        first.1,
        total as f64 / first.0.as_secs_f64()
    );
    println!(
        "pontoon no-op resync: {:.2} s wall, {:.2} s CPU, {} write requests (apiserver_request_total)",
        noop.0.as_secs_f64(),
        noop.1,
        noop.2
    );
    println!("pontoon peak RSS: {:.1} MiB", common::peak_rss_mib());

    // kubectl on a fresh control plane of its own, same objects, namespaces first.
    let two = control_plane::second();
    let mut docs: Vec<&serde_json::Value> = desired
        .units
        .values()
        .flat_map(|u| u.objects.iter().map(|o| &*o.object))
        .collect();
    docs.sort_by_key(|o| o["kind"] != "Namespace");
    let file = two.dir.join("objects.yaml");
    let mut text = String::new();
    for d in docs {
        text.push_str("---\n");
        text.push_str(&serde_json::to_string(d).expect("json"));
        text.push('\n');
    }
    std::fs::write(&file, text).expect("write objects");
    let servers0 = common::servers_cpu(&two.dir.to_string_lossy());
    let children0 = common::children_cpu_seconds();
    let requests0 = two.requests_by_verb();
    let t = Instant::now();
    let out = two.kubectl(&[
        "apply",
        "--server-side",
        "--field-manager=kubectl-bench",
        "-f",
        file.to_str().expect("path"),
    ]);
    let kubectl = t.elapsed();
    let servers = common::cpu_spent(&servers0, &common::servers_cpu(&two.dir.to_string_lossy()));
    println!(
        "servers during kubectl's apply: {}",
        common::cpu_line(&servers)
    );
    println!(
        "kubectl's apply: {}",
        common::floor_line(
            servers.values().sum::<f64>() + common::children_cpu_seconds() - children0,
            kubectl.as_secs_f64()
        )
    );
    println!(
        "requests during kubectl's apply: {}",
        common::requests_delta(&requests0, &two.requests_by_verb())
    );
    assert!(
        out.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "kubectl apply --server-side: {:.2} s wall, {:.2} s CPU",
        kubectl.as_secs_f64(),
        common::children_cpu_seconds() - children0
    );
    println!(
        "ratio kubectl / pontoon (first sync): {:.2}x",
        kubectl.as_secs_f64() / first.0.as_secs_f64()
    );
}
