//! Drift correction latency through the daemon's own wiring: the daemon `pontoon run`
//! runs (`pontoon::daemon::run_from_source`, in this process) keeps 1,000 ConfigMaps of a
//! platform repo in 10 teams on a real kube-apiserver, and 200 hand edits by
//! `kubectl-edit` arrive at a steady rate (one every 100 ms). For each edit: the time from
//! the edit's response to the corrected object being observed. The full resync is set to
//! an hour, so every correction comes from the drift watches.
//!
//! Prints p50, p99 and max, and the process's CPU time (the daemon's and this benchmark's
//! polling). Asserts nothing on time, but an edit still not corrected 30 s after it was
//! made fails the run (exit code 1), naming the object.
//!
//!     cargo bench --bench drift

#[allow(dead_code)]
mod common;
#[path = "../tests/support/control_plane.rs"]
#[allow(dead_code)]
mod control_plane;
#[path = "../tests/support/daemon.rs"]
#[allow(dead_code, unused_imports)]
mod daemon;
#[path = "../tests/support/daemon_config.rs"]
#[allow(dead_code, unused_imports)]
mod daemon_config;
#[path = "../tests/support/exposition.rs"]
#[allow(dead_code, unused_imports)]
mod exposition;
#[path = "../tests/support/script.rs"]
#[allow(dead_code)]
mod script;

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use daemon::{Daemon, write};
use daemon_config::DaemonConfig;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

const TEAMS: usize = 10;
const PER_TEAM: usize = 100;
const EDITS: usize = 200;
/// An edit not corrected this long after it was made is a miss, not a slow correction.
const MISS: Duration = Duration::from_secs(30);
const CLUSTER: &str = "bench";

/// The platform repo: ConfigMaps allowed, `TEAMS` teams of `PER_TEAM` ConfigMaps each,
/// every one holding `value: desired`.
fn platform(repo: &Path) {
    write(
        repo,
        "platform.yaml",
        &format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {{name: bench}}\nspec:\n  clusters: [{{name: {CLUSTER}}}]\n  policy:\n    allowedKinds: [{{group: \"\", kind: ConfigMap}}]\n"
        ),
    );
    for t in 0..TEAMS {
        let team = format!("drift-{t}");
        write(
            repo,
            &format!("teams/{team}/team.yaml"),
            &format!(
                "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {team}}}\nspec:\n  namespaces: [{team}]\n  clusters: {{names: [{CLUSTER}]}}\n"
            ),
        );
        let objects: Vec<String> = (0..PER_TEAM)
            .map(|i| {
                format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{i}}}\ndata: {{value: desired}}\n"
                )
            })
            .collect();
        write(
            repo,
            &format!("teams/{team}/app.yaml"),
            &objects.join("---\n"),
        );
    }
}

/// Waits until the daemon shows every unit Synced.
async fn all_synced(daemon: &Daemon) {
    let started = Instant::now();
    loop {
        let synced = daemon
            .status()
            .await
            .and_then(|s| {
                Some(
                    s["units"]
                        .as_array()?
                        .iter()
                        .filter(|u| u["state"] == "Synced")
                        .count(),
                )
            })
            .unwrap_or(0);
        if synced == TEAMS {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "only {synced} of {TEAMS} units Synced after 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Edits `name` in `api` as a person would, returning when the edit's response arrived.
async fn hand_edit(api: &Api<ConfigMap>, name: &str, value: &str) -> Instant {
    let pp = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    };
    api.patch(name, &pp, &Patch::Merge(json!({"data": {"value": value}})))
        .await
        .expect("edit");
    Instant::now()
}

/// How long after `edited` the object was seen back at `value: desired`; None past [`MISS`].
async fn corrected(api: &Api<ConfigMap>, name: &str, edited: Instant) -> Option<Duration> {
    loop {
        let cm = api.get(name).await.expect("get");
        if cm.data.and_then(|d| d.get("value").cloned()).as_deref() == Some("desired") {
            return Some(edited.elapsed());
        }
        if edited.elapsed() > MISS {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn main() -> ExitCode {
    let cp = control_plane::shared();
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("platform");
    platform(&repo);
    let config = DaemonConfig::dir(&repo)
        .cluster(CLUSTER, &cp.kubeconfig)
        .resync_interval("1h")
        .log_level("warn");
    let config_path = config.write(tmp.path());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let misses = rt.block_on(async {
        let daemon = Daemon::start(&config_path);
        all_synced(&daemon).await;
        let client = cp.client().await;

        // The watches start after the first syncs: one edit corrected shows they run.
        let first: Api<ConfigMap> = Api::namespaced(client.clone(), "drift-0");
        let edited = hand_edit(&first, "cm-0", "warm-up").await;
        if corrected(&first, "cm-0", edited).await.is_none() {
            daemon.finish().await;
            return vec![format!(
                "drift-0/cm-0 (the warm-up edit) not corrected within {MISS:?}: the daemon's drift watches never corrected an edit"
            )];
        }

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
            let edited = hand_edit(&api, &name, &format!("edit-{n}")).await;
            waits.push(tokio::spawn(async move {
                corrected(&api, &name, edited)
                    .await
                    .ok_or(format!("{team}/{name} (edit {n}) not corrected within {MISS:?}"))
            }));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut lat: Vec<Duration> = Vec::new();
        let mut misses = Vec::new();
        for w in waits {
            match w.await.expect("wait task") {
                Ok(d) => lat.push(d),
                Err(miss) => misses.push(miss),
            }
        }
        let cpu = common::cpu_seconds() - cpu0;
        let wall = started.elapsed();
        let counted: f64 = exposition::series(&daemon.metrics().await)
            .filter(|s| s.name == "pontoon_drift_corrected_total")
            .map(|s| s.value)
            .sum();
        daemon.finish().await;
        if !misses.is_empty() {
            return misses;
        }
        lat.sort();
        let pct = |p: f64| {
            lat[((lat.len() as f64 * p).ceil() as usize)
                .saturating_sub(1)
                .min(lat.len() - 1)]
        };
        println!(
            "objects: {} in {TEAMS} units of the daemon; edits: {EDITS} at one per 100 ms",
            TEAMS * PER_TEAM
        );
        println!(
            "edit → corrected object observed: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            pct(0.50).as_secs_f64() * 1000.0,
            pct(0.99).as_secs_f64() * 1000.0,
            lat[lat.len() - 1].as_secs_f64() * 1000.0
        );
        println!("corrections the daemon counted: {counted} (the warm-up edit included)");
        println!(
            "process CPU over the {:.1} s run: {:.2} s (the daemon's, and this benchmark's own polling)",
            wall.as_secs_f64(),
            cpu
        );
        Vec::new()
    });
    if misses.is_empty() {
        return ExitCode::SUCCESS;
    }
    eprintln!("drift bench FAILED: edits the daemon never corrected:");
    for m in &misses {
        eprintln!("  {m}");
    }
    ExitCode::FAILURE
}
