//! First sync of 10,000 objects across 100 teams against a real kube-apiserver, compared
//! with `kubectl apply --server-side` of the same objects (the kubectl the test harness
//! builds), then the no-op resync: write requests, time and CPU. Prints figures; asserts
//! nothing about time.
//!
//!     cargo bench --bench sync        # PONTOON_BENCH_ROUNDS=3 by default
//!
//! Each tool gets a fresh control plane of its own in every round, so neither pays for
//! the other's data, and the rounds alternate the two tools so that both meet the same
//! machine load; the medians of the rounds come last. The servers' CPU for the same
//! requests varies a lot between runs on a shared machine, so one round proves little.

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

use control_plane::ControlPlane;
use fixtures::*;
use pontoon::cluster::Cluster;
use pontoon::desired::*;
use pontoon::sync::{SyncOptions, Syncer, UnitState};
use serde_json::json;

const TEAMS: usize = 100;
const PER_TEAM: usize = 100;
/// The cluster name pontoon's control plane and desired state share.
const CLUSTER: &str = "pontoon";

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

struct Pontoon {
    first: Duration,
    /// CPU the servers spent on pontoon's first sync.
    servers_cpu: f64,
    peak_rss: f64,
    noop: Duration,
    noop_cpu: f64,
    noop_writes: u64,
}

/// One round's figures: pontoon's, kubectl's time, their ratio, and the most any client
/// could have reached against these servers' CPU.
struct Round {
    pontoon: Pontoon,
    kubectl: Duration,
    ratio: f64,
    bound: f64,
}

/// pontoon's first sync and no-op resync on a control plane of its own.
fn pontoon_round(rt: &tokio::runtime::Runtime, desired: &Arc<DesiredState>) -> Pontoon {
    let one = ControlPlane::start(CLUSTER);
    let run = rt.block_on(async {
        let cluster = Cluster::from_config(ClusterName(CLUSTER.into()), one.config().await, 16)
            .expect("cluster");
        let syncer = Arc::new(Syncer::new(Arc::new(cluster), SyncOptions::default()));
        // On a runtime worker, as the daemon's syncs run: driven from `block_on` on this
        // thread, every response would wake it from another thread (a futex wake and a
        // context switch per request: about a third more of pontoon's CPU here).
        let sync_all = || {
            let (s, d) = (syncer.clone(), desired.clone());
            async move {
                tokio::spawn(async move { s.sync_cluster(&d).await })
                    .await
                    .expect("sync task")
            }
        };
        let servers0 = common::servers_cpu(&one.dir.to_string_lossy());
        let requests0 = one.requests_by_verb();
        let cpu0 = common::cpu_seconds();
        let t = Instant::now();
        let results = sync_all().await;
        let first = t.elapsed();
        let cpu = common::cpu_seconds() - cpu0;
        let servers =
            common::cpu_spent(&servers0, &common::servers_cpu(&one.dir.to_string_lossy()));
        let failed: Vec<_> = results
            .iter()
            .filter(|r| r.state == UnitState::Failed)
            .collect();
        assert!(
            failed.is_empty(),
            "first sync failed: {:?}",
            failed.first().map(|r| &r.message)
        );
        println!(
            "  pontoon first sync: {:.2} s wall, {cpu:.2} s CPU ({:.0} objects/s)",
            first.as_secs_f64(),
            desired.units.values().map(|u| u.objects.len()).sum::<usize>() as f64
                / first.as_secs_f64()
        );
        print_load(&servers, cpu, first, &requests0, &one);

        let writes0 = one.write_requests();
        let servers0 = common::servers_cpu(&one.dir.to_string_lossy());
        let requests0 = one.requests_by_verb();
        let cpu0 = common::cpu_seconds();
        let t = Instant::now();
        let results = sync_all().await;
        let noop = t.elapsed();
        let noop_cpu = common::cpu_seconds() - cpu0;
        let noop_servers =
            common::cpu_spent(&servers0, &common::servers_cpu(&one.dir.to_string_lossy()));
        let noop_writes = one.write_requests() - writes0;
        assert!(results.iter().all(|r| r.writes == 0), "no-op resync wrote");
        println!(
            "  pontoon no-op resync: {:.2} s wall, {noop_cpu:.2} s CPU, {noop_writes} write requests (apiserver_request_total)",
            noop.as_secs_f64()
        );
        print_load(&noop_servers, noop_cpu, noop, &requests0, &one);
        println!(
            "  resident: {:.1} MiB now, {:.1} MiB peak so far",
            common::rss_mib(),
            common::peak_rss_mib()
        );
        Pontoon {
            first,
            servers_cpu: servers.values().sum(),
            peak_rss: common::peak_rss_mib(),
            noop,
            noop_cpu,
            noop_writes,
        }
    });
    one.stop();
    run
}

/// `kubectl apply --server-side` of the same objects (namespaces first, as one file) on a
/// control plane of its own.
fn kubectl_round(desired: &DesiredState) -> Duration {
    let two = ControlPlane::start("kubectl");
    let file = two.dir.join("objects.yaml");
    std::fs::write(&file, as_yaml_stream(desired)).expect("write objects");
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
    let took = t.elapsed();
    let cpu = common::children_cpu_seconds() - children0;
    let servers = common::cpu_spent(&servers0, &common::servers_cpu(&two.dir.to_string_lossy()));
    assert!(
        out.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "  kubectl apply --server-side: {:.2} s wall, {cpu:.2} s CPU",
        took.as_secs_f64()
    );
    print_load(&servers, cpu, took, &requests0, &two);
    two.stop();
    took
}

/// What a tool's run cost the servers and the machine, and the requests it sent by verb.
fn print_load(
    servers: &BTreeMap<String, f64>,
    client_cpu: f64,
    took: Duration,
    requests0: &BTreeMap<String, u64>,
    cp: &ControlPlane,
) {
    println!("    servers: {}", common::cpu_line(servers));
    println!(
        "    {}",
        common::floor_line(
            servers.values().sum::<f64>() + client_cpu,
            took.as_secs_f64()
        )
    );
    println!(
        "    requests: {}",
        common::requests_delta(requests0, &cp.requests_by_verb())
    );
}

/// The objects as one multi-document file, namespaces first.
fn as_yaml_stream(desired: &DesiredState) -> String {
    let mut docs: Vec<&serde_json::Value> = desired
        .units
        .values()
        .flat_map(|u| u.objects.iter().map(|o| &**o.object))
        .collect();
    docs.sort_by_key(|o| o["kind"] != "Namespace");
    let mut text = String::new();
    for d in docs {
        text.push_str("---\n");
        text.push_str(&serde_json::to_string(d).expect("json"));
        text.push('\n');
    }
    text
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let rounds: usize = std::env::var("PONTOON_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(3);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let desired = Arc::new(state(CLUSTER));
    let total: usize = desired.units.values().map(|u| u.objects.len()).sum();
    println!("objects: {total} in {TEAMS} teams; {rounds} rounds");

    let mut runs = Vec::new();
    for r in 1..=rounds {
        println!("round {r}:");
        let p = pontoon_round(&rt, &desired);
        let k = kubectl_round(&desired);
        let ratio = k.as_secs_f64() / p.first.as_secs_f64();
        println!("  ratio kubectl / pontoon (first sync): {ratio:.2}x");
        // The servers share the cores with the client: even a client that cost nothing
        // could not finish before the servers' own CPU for these requests allows.
        let servers_floor = p.servers_cpu / cores;
        let bound = k.as_secs_f64() / servers_floor;
        println!(
            "  the servers alone needed {:.1} CPU-seconds for pontoon's requests: no client finishes before {servers_floor:.1} s here, at most {bound:.2}x kubectl's time",
            p.servers_cpu
        );
        runs.push(Round {
            pontoon: p,
            kubectl: k,
            ratio,
            bound,
        });
    }

    let m = |f: &dyn Fn(&Round) -> f64| median(runs.iter().map(f).collect());
    let ratios: Vec<String> = runs.iter().map(|r| format!("{:.2}x", r.ratio)).collect();
    println!("medians of {rounds} rounds:");
    println!(
        "  pontoon first sync {:.2} s, kubectl apply --server-side {:.2} s, ratio {:.2}x (rounds: {})",
        m(&|r| r.pontoon.first.as_secs_f64()),
        m(&|r| r.kubectl.as_secs_f64()),
        m(&|r| r.ratio),
        ratios.join(", ")
    );
    println!(
        "  bound for a client of zero cost (kubectl's time / the servers' floor): {:.2}x",
        m(&|r| r.bound)
    );
    println!(
        "  pontoon no-op resync {:.2} s wall, {:.2} s CPU, at most {} write requests",
        m(&|r| r.pontoon.noop.as_secs_f64()),
        m(&|r| r.pontoon.noop_cpu),
        runs.iter()
            .map(|r| r.pontoon.noop_writes)
            .max()
            .unwrap_or(0)
    );
    println!(
        "  pontoon peak RSS: {:.1} MiB in the first round, {:.1} MiB over all {rounds} (this process)",
        runs.first().map_or(f64::NAN, |r| r.pontoon.peak_rss),
        common::peak_rss_mib()
    );
}
