//! What a pontoon that remembers nothing pays: the real `pontoon sync --once` binary run
//! twice, as two processes, on a platform repo of 10,000 objects in 100 teams against a
//! fresh real control plane; then `pontoon run` managing the same objects on another
//! fresh control plane. Prints figures; asserts nothing about time.
//!
//!     cargo bench --bench restart        # PONTOON_BENCH_ROUNDS=3 by default
//!
//! For each `sync --once` run: wall time, the process's own CPU and peak RSS (from
//! `wait4`, so nothing but that process is counted), the CPU kube-apiserver and etcd
//! spent meanwhile, and the requests the apiserver counted (`apiserver_request_total`),
//! by verb with dry runs apart, and by resource (the apiserver's own requests that
//! pontoon's cause are among them: `POST ipaddresses` allocating each new Service's
//! ClusterIP, and its Events). The first run creates everything; the
//! second finds the cluster exactly as the first left it, as every restart, leader
//! handover or pipeline run of an unchanged repo does. For the daemon: its peak RSS once
//! every unit is Synced and again after one resync; then the requests of the next two
//! resyncs of every unit, the first of which lists (it finds every unit unchanged) and the
//! second answered from the drift watches.
//!
//! The control plane runs no controller manager, so this program plays the Deployment
//! controller: it watches the managed Deployments and writes each one's status as rolled
//! out, as the real controller would (a status write moves the object's resourceVersion,
//! as it does on a real cluster). Those requests are counted apart from pontoon's.
//!
//! This is a program of its own rather than a part of the `sync` bench: it runs the
//! binary as a user does, as separate processes whose own CPU and memory it reads, while
//! `sync` drives the library in-process beside `kubectl`; and either can run without
//! the other's minutes.

#[path = "../common/mod.rs"]
#[allow(dead_code)]
mod common;
#[path = "../../tests/support/control_plane.rs"]
#[allow(dead_code)]
mod control_plane;
#[path = "../../tests/support/daemon_config.rs"]
#[allow(dead_code, unused_imports)]
mod daemon_config;
mod measure;
#[path = "../../tests/support/script.rs"]
#[allow(dead_code)]
mod script;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use control_plane::ControlPlane;
use daemon_config::DaemonConfig;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use measure::{Reaped, Requests, counts, median, median_counts, proc_mib, reap};

const TEAMS: usize = 100;
/// Objects per team, the team's base included (its Namespace, NetworkPolicy, owners'
/// RoleBinding, and the Role and RoleBinding of its identity: five).
const PER_TEAM: usize = 100;
const BASE: usize = 5;
/// The repo's one cluster.
const CLUSTER: &str = "bench";

fn write(root: &Path, path: &str, text: &str) {
    let p = root.join(path);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

/// A platform repo in the format users write: `platform.yaml` allowing the three kinds,
/// and per team its `team.yaml` and plain manifests in three files, in the sync bench's
/// mix (of every ten objects one Service, one Deployment, eight ConfigMaps).
fn platform_repo(root: &Path) {
    write(
        root,
        "platform.yaml",
        &format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {{name: bench}}\nspec:\n  clusters: [{{name: {CLUSTER}}}]\n  policy:\n    allowedKinds:\n      - {{group: \"\", kind: ConfigMap}}\n      - {{group: \"\", kind: Service}}\n      - {{group: apps, kind: Deployment}}\n"
        ),
    );
    for t in 0..TEAMS {
        let team = format!("team-{t:03}");
        write(
            root,
            &format!("teams/{team}/team.yaml"),
            &format!(
                "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {team}}}\nspec:\n  owners: [owner@example.com]\n  namespaces: [{team}]\n  clusters: {{names: [{CLUSTER}]}}\n"
            ),
        );
        let (mut services, mut deployments, mut configmaps) =
            (String::new(), String::new(), String::new());
        for i in 0..PER_TEAM - BASE {
            match i % 10 {
                0 => services.push_str(&format!(
                    "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}}}\nspec:\n  selector: {{app: app-{i}}}\n  ports: [{{port: 80, targetPort: 8080}}]\n"
                )),
                1 => deployments.push_str(&format!(
                    "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: app-{i}}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: app-{i}}}}}\n  template:\n    metadata: {{labels: {{app: app-{i}}}}}\n    spec:\n      containers: [{{name: app, image: \"app:1.0\"}}]\n"
                )),
                _ => configmaps.push_str(&format!(
                    "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{i}}}\ndata: {{key: value-{i}, team: {team}}}\n"
                )),
            }
        }
        write(root, &format!("teams/{team}/services.yaml"), &services);
        write(
            root,
            &format!("teams/{team}/deployments.yaml"),
            &deployments,
        );
        write(root, &format!("teams/{team}/configmaps.yaml"), &configmaps);
    }
}

/// Plays the Deployment controller this control plane lacks: once a managed Deployment's
/// spec is new, writes its status as rolled out, so pontoon's health checks see it done.
/// Runs until aborted.
async fn roll_out_deployments(client: kube::Client) {
    let all: Api<Deployment> = Api::all(client.clone());
    let config = watcher::Config::default().labels(&pontoon::desired::selector_managed());
    let mut events = std::pin::pin!(watcher(all, config).applied_objects());
    while let Some(event) = events.next().await {
        let Ok(d) = event else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let generation = d.metadata.generation.unwrap_or(1);
        if d.status.as_ref().and_then(|s| s.observed_generation) >= Some(generation) {
            continue;
        }
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let name = d.metadata.name.clone().unwrap_or_default();
        let replicas = d.spec.replicas.unwrap_or(1);
        let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let status = serde_json::json!({"status": {
            "observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
            "readyReplicas": replicas, "availableReplicas": replicas}});
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
            .await
        {
            eprintln!("rolling out {ns}/{name}: {e}");
        }
    }
}

/// One `pontoon sync --once` process and what it cost.
struct Run {
    wall: f64,
    reaped: Reaped,
    servers: BTreeMap<String, f64>,
    requests: Requests,
    /// Units the run printed a line for.
    units: usize,
    /// Their objects, created and updated, summed.
    objects: [usize; 3],
}

impl Run {
    fn servers_cpu(&self) -> f64 {
        self.servers.values().sum()
    }
}

/// Runs the `pontoon` binary cargo built for this benchmark with `args`, its output going
/// to `log`.
fn pontoon(args: &[&str], config: &Path, log: &Path) -> std::process::Child {
    let out = std::fs::File::create(log).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_pontoon"))
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .expect("start pontoon")
}

/// A unit's line of `sync --once` output, `team/cluster  Synced  applied N (+C ~U), ...`:
/// its objects, created and updated.
fn summary(line: &str) -> Option<[usize; 3]> {
    let rest = line.split("applied ").nth(1)?;
    let (n, rest) = rest.split_once(" (+")?;
    let (c, rest) = rest.split_once(" ~")?;
    let u = rest.split(')').next()?;
    Some([n.parse().ok()?, c.parse().ok()?, u.parse().ok()?])
}

fn sync_once(cp: &ControlPlane, config: &Path, log: &Path) -> Run {
    let needle = cp.dir.to_string_lossy().into_owned();
    let servers0 = common::servers_cpu(&needle);
    let requests0 = Requests::read(cp);
    let t = Instant::now();
    let child = pontoon(&["sync", "--once"], config, log);
    let reaped = reap(child);
    let wall = t.elapsed().as_secs_f64();
    let servers = common::cpu_spent(&servers0, &common::servers_cpu(&needle));
    let requests = Requests::read(cp).since(&requests0);
    let output = std::fs::read_to_string(log).unwrap_or_default();
    let summaries: Vec<[usize; 3]> = output.lines().filter_map(summary).collect();
    if reaped.code != Some(0) {
        let tail: Vec<&str> = output.lines().rev().take(20).collect();
        eprintln!(
            "pontoon sync --once exited {:?}; the end of its output ({}):",
            reaped.code,
            log.display()
        );
        for l in tail.iter().rev() {
            eprintln!("  {l}");
        }
    }
    Run {
        wall,
        reaped,
        servers,
        requests,
        units: summaries.len(),
        objects: summaries
            .iter()
            .fold([0; 3], |t, u| [t[0] + u[0], t[1] + u[1], t[2] + u[2]]),
    }
}

fn print_run(what: &str, r: &Run) {
    println!(
        "  {what}: {:.2} s wall, exit {:?}; pontoon {:.2} s CPU, peak RSS {:.1} MiB; {} units of {} objects, {} created, {} updated",
        r.wall,
        r.reaped.code,
        r.reaped.cpu,
        r.reaped.peak_rss_mib,
        r.units,
        r.objects[0],
        r.objects[1],
        r.objects[2]
    );
    println!(
        "    servers {:.2} s CPU ({})",
        r.servers_cpu(),
        common::cpu_line(&r.servers)
    );
    println!(
        "    requests {}: {}",
        r.requests.total(),
        counts(&r.requests.by_verb)
    );
    println!("    by resource: {}", counts(&r.requests.by_resource));
    if !r.requests.ours.is_empty() {
        println!(
            "    not counted above, this program's Deployment rollouts: {}",
            counts(&r.requests.ours)
        );
    }
}

/// The daemon's figures.
struct Daemon {
    first_sync: f64,
    /// Peak RSS once every unit is Synced, and RSS then.
    peak_after_first: f64,
    rss_after_first: f64,
    peak_after_resync: f64,
    rss_after_resync: f64,
    /// CPU and peak RSS over its whole life, from `wait4`.
    reaped: Reaped,
}

/// The state of each unit in `/api/status`, or None while the server is not up.
async fn unit_states(http: &reqwest::Client, base: &str) -> Option<Vec<String>> {
    let s: serde_json::Value = http
        .get(format!("{base}/api/status"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some(
        s["units"]
            .as_array()?
            .iter()
            .map(|u| u["state"].as_str().unwrap_or("").to_owned())
            .collect(),
    )
}

/// Each unit's `pontoon_sync_last_attempt_timestamp_seconds`.
async fn last_attempts(http: &reqwest::Client, base: &str) -> Vec<f64> {
    let Ok(r) = http.get(format!("{base}/metrics")).send().await else {
        return Vec::new();
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("pontoon_sync_last_attempt_timestamp_seconds{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}

/// Polls until every unit is Synced, or panics after `limit` naming what it saw.
async fn all_synced(http: &reqwest::Client, base: &str, since: Instant, limit: Duration) {
    loop {
        let states = unit_states(http, base).await.unwrap_or_default();
        let synced = states.iter().filter(|s| *s == "Synced").count();
        if synced == TEAMS {
            return;
        }
        assert!(
            since.elapsed() < limit,
            "{synced} of {TEAMS} units Synced after {limit:?}: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `pontoon run` on a control plane with nothing of pontoon's yet: its first sync, then
/// one resync of every unit.
fn daemon_round(rt: &tokio::runtime::Runtime, cp: &ControlPlane, work: &Path) -> Daemon {
    let daemon_config = DaemonConfig::dir(&work.join("repo"))
        .poll_interval("1h")
        .resync_interval("30s")
        .cluster(CLUSTER, &cp.kubeconfig)
        .log_level("warn");
    let dir = work.join("daemon");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let config = daemon_config.write(&dir);
    let child = pontoon(&["run"], &config, &dir.join("run.log"));
    let pid = child.id();
    let base = daemon_config.base_url();
    let (first_sync, peak_after_first, rss_after_first) = rt.block_on(async {
        let http = reqwest::Client::new();
        let t = Instant::now();
        all_synced(&http, &base, t, Duration::from_secs(900)).await;
        let first = t.elapsed().as_secs_f64();
        (first, proc_mib(pid, "VmHWM:"), proc_mib(pid, "VmRSS:"))
    });
    let synced_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    rt.block_on(async {
        let http = reqwest::Client::new();
        let t = Instant::now();
        loop {
            let attempts = last_attempts(&http, &base).await;
            if attempts.len() == TEAMS && attempts.iter().all(|&a| a > synced_at) {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(300),
                "no resync of every unit within 5 minutes"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        all_synced(&http, &base, t, Duration::from_secs(300)).await;
    });
    let (peak_after_resync, rss_after_resync) = (proc_mib(pid, "VmHWM:"), proc_mib(pid, "VmRSS:"));
    // The resync after that finds every unit unchanged and lists it (what every resync
    // cost before the drift watches answered them); the one after is answered by them.
    let listed = rt.block_on(resync_window(cp, &base));
    let answered = rt.block_on(resync_window(cp, &base));
    for (what, r) in [
        ("a resync of every unchanged unit that lists", &listed),
        ("the next, answered from the drift watches", &answered),
    ] {
        println!(
            "  pontoon run, {what}: {} requests ({:.2} per unit): {}",
            r.total(),
            r.total() as f64 / TEAMS as f64,
            counts(&r.by_resource)
        );
    }
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success(), "kill -TERM {pid}");
    Daemon {
        first_sync,
        peak_after_first,
        rss_after_first,
        peak_after_resync,
        rss_after_resync,
        reaped: reap(child),
    }
}

struct Round {
    first: Run,
    second: Run,
    daemon: Daemon,
}

/// The requests of the daemon's next resync of every unit, until each unit's last
/// attempt is later than the window's start.
async fn resync_window(cp: &ControlPlane, base: &str) -> Requests {
    let http = reqwest::Client::new();
    let every_unit_after = |since: f64| {
        let http = http.clone();
        async move {
            let t = Instant::now();
            loop {
                let attempts = last_attempts(&http, base).await;
                if attempts.len() == TEAMS && attempts.iter().all(|&a| a > since) {
                    return;
                }
                assert!(
                    t.elapsed() < Duration::from_secs(300),
                    "no resync of every unit within 5 minutes"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    };
    // Called as a resync of every unit ends, well before the next tick: the window
    // holds exactly the next one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (before, at) = (Requests::read(cp), now());
    every_unit_after(at).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    Requests::read(cp).since(&before)
}

/// Both `sync --once` runs on a fresh control plane, then the daemon on another.
fn round(rt: &tokio::runtime::Runtime, work: &Path, r: usize) -> Round {
    let cp = ControlPlane::start("restart");
    let rollouts = rt.spawn(roll_out_deployments(rt.block_on(cp.client())));
    let dir = work.join(format!("round-{r}"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let config = DaemonConfig::dir(&work.join("repo"))
        .poll_interval("1h")
        .cluster(CLUSTER, &cp.kubeconfig)
        .log_level("warn")
        .write(&dir);
    let first = sync_once(&cp, &config, &dir.join("first.log"));
    print_run("sync --once, first run (creates everything)", &first);
    let second = sync_once(&cp, &config, &dir.join("second.log"));
    print_run("sync --once, second run (nothing changed)", &second);
    rollouts.abort();
    cp.stop();

    let cp = ControlPlane::start("daemon");
    let rollouts = rt.spawn(roll_out_deployments(rt.block_on(cp.client())));
    let daemon = daemon_round(rt, &cp, work);
    rollouts.abort();
    cp.stop();
    println!(
        "  pontoon run: every unit Synced {:.1} s after start; peak RSS {:.1} MiB then ({:.1} MiB resident); after one resync of every unit {:.1} MiB peak ({:.1} MiB resident); {:.2} s CPU in all, exit {:?}",
        daemon.first_sync,
        daemon.peak_after_first,
        daemon.rss_after_first,
        daemon.peak_after_resync,
        daemon.rss_after_resync,
        daemon.reaped.cpu,
        daemon.reaped.code
    );
    Round {
        first,
        second,
        daemon,
    }
}

fn print_medians(what: &str, runs: &[&Run]) {
    let m = |f: &dyn Fn(&Run) -> f64| median(runs.iter().map(|r| f(r)).collect());
    println!(
        "  {what}: {:.2} s wall, pontoon {:.2} s CPU, peak RSS {:.1} MiB, servers {:.2} s CPU",
        m(&|r| r.wall),
        m(&|r| r.reaped.cpu),
        m(&|r| r.reaped.peak_rss_mib),
        m(&|r| r.servers_cpu())
    );
    let by_verb: Vec<_> = runs.iter().map(|r| &r.requests.by_verb).collect();
    println!("    requests: {}", counts(&median_counts(&by_verb)));
}

fn main() {
    let rounds: usize = std::env::var("PONTOON_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(3);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    let work: PathBuf = tmp.path().to_owned();
    platform_repo(&work.join("repo"));
    println!(
        "{} objects in {TEAMS} teams (a platform repo on disk); `pontoon sync --once` twice, then `pontoon run`; {rounds} rounds",
        TEAMS * PER_TEAM
    );
    let mut runs = Vec::new();
    for r in 1..=rounds {
        println!("round {r}:");
        runs.push(round(&rt, &work, r));
    }
    println!("medians of {rounds} rounds:");
    print_medians(
        "sync --once, first run",
        &runs.iter().map(|r| &r.first).collect::<Vec<_>>(),
    );
    print_medians(
        "sync --once, second run",
        &runs.iter().map(|r| &r.second).collect::<Vec<_>>(),
    );
    let m = |f: &dyn Fn(&Daemon) -> f64| median(runs.iter().map(|r| f(&r.daemon)).collect());
    println!(
        "  pontoon run: first sync {:.1} s, peak RSS {:.1} MiB after it, {:.1} MiB after a resync",
        m(&|d| d.first_sync),
        m(&|d| d.peak_after_first),
        m(&|d| d.peak_after_resync)
    );
}
