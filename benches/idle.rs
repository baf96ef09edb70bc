//! Steady state: the daemon with 100 teams on 2 clusters (200 units, real apiservers),
//! left idle once everything is Synced. Prints the CPU it used, its resident memory, and
//! the write requests the apiservers saw while nothing changed. The idle window includes
//! one full resync (sync.resyncInterval = 5m) and every 1-minute poll of the repo.
//!
//!     cargo bench --bench idle                     # 10 minutes idle
//!     PONTOON_IDLE_SECS=60 PONTOON_IDLE_RESYNC=20s cargo bench --bench idle

#[allow(dead_code)]
mod common;
#[path = "../tests/support/control_plane.rs"]
#[allow(dead_code)]
mod control_plane;
#[path = "../tests/support/daemon_config.rs"]
#[allow(dead_code, unused_imports)]
mod daemon_config;
#[path = "../tests/support/script.rs"]
#[allow(dead_code)]
mod script;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use daemon_config::DaemonConfig;

const TEAMS: usize = 100;

fn write(root: &Path, path: &str, text: &str) {
    let p = root.join(path);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .args([
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.com",
        ])
        .args(args)
        .current_dir(dir)
        .status()
        .expect("git");
    assert!(ok.success(), "git {args:?}");
}

/// The example platform's kinds, with 100 teams of a web service, a worker and a topic
/// each, on both clusters.
fn platform(root: &Path) {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example-platform");
    for entry in ["platform.yaml", "kinds"] {
        let status = Command::new("cp")
            .arg("-r")
            .arg(example.join(entry))
            .arg(root)
            .status()
            .expect("cp");
        assert!(status.success());
    }
    for t in 0..TEAMS {
        let team = format!("idle-{t:03}");
        write(
            root,
            &format!("teams/{team}/team.yaml"),
            &format!(
                "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {team}}}\nspec:\n  owners: [owner@example.com]\n  namespaces: [{team}]\n  clusters: {{names: [staging, prod]}}\n"
            ),
        );
        write(
            root,
            &format!("teams/{team}/apps.yaml"),
            &format!(
                "apiVersion: pontoon.dev/v1alpha1\nkind: WebService\nmetadata: {{name: web}}\nspec:\n  image: registry.example.com/{team}/web:1.0\n  replicas: 2\n---\napiVersion: pontoon.dev/v1alpha1\nkind: Worker\nmetadata: {{name: worker}}\nspec:\n  image: registry.example.com/{team}/worker:1.0\n"
            ),
        );
    }
}

/// Marks every managed Deployment as rolled out.
async fn roll_out(client: kube::Client) {
    use k8s_openapi::api::apps::v1::Deployment;
    let all: kube::Api<Deployment> = kube::Api::all(client.clone());
    let list = all
        .list(&kube::api::ListParams::default().labels("app.kubernetes.io/managed-by=pontoon"))
        .await
        .expect("list deployments");
    for d in list.items {
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let name = d.metadata.name.clone().unwrap_or_default();
        let generation = d.metadata.generation.unwrap_or(1);
        let replicas = d.spec.replicas.unwrap_or(1);
        let api: kube::Api<Deployment> = kube::Api::namespaced(client.clone(), &ns);
        api.patch_status(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"status": {
                "observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
                "readyReplicas": replicas, "availableReplicas": replicas}})),
        )
        .await
        .expect("status");
    }
}

/// How many units /api/status shows in one of `states` (0 while the server is not up).
async fn units_in(http: &reqwest::Client, base: &str, states: &[&str]) -> usize {
    let status = async {
        let s: serde_json::Value = http
            .get(format!("{base}/api/status"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let units = s["units"].as_array()?;
        Some(
            units
                .iter()
                .filter(|u| states.iter().any(|state| u["state"] == *state))
                .count(),
        )
    };
    status.await.unwrap_or(0)
}

fn main() {
    let idle = Duration::from_secs(
        std::env::var("PONTOON_IDLE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(600),
    );
    let staging = control_plane::shared();
    let prod = control_plane::second();
    let tmp = tempfile::tempdir().expect("tempdir");
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).expect("mkdir");
    platform(&work);
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "platform"]);
    git(
        tmp.path(),
        &["clone", "-q", "--bare", "work", "platform.git"],
    );
    let daemon_config =
        DaemonConfig::git_file(&tmp.path().join("platform.git"), &tmp.path().join("cache"))
            .poll_interval("1m")
            .cluster("staging", &staging.kubeconfig)
            .cluster("prod", &prod.kubeconfig)
            .resync_interval(
                &std::env::var("PONTOON_IDLE_RESYNC").unwrap_or_else(|_| "5m".to_owned()),
            )
            .log_level("warn");
    let config_path = daemon_config.write(tmp.path());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let _ = tracing_subscriber::fmt().with_env_filter("warn").try_init();
        let config = pontoon::config::Config::load(&config_path).expect("config");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let daemon = tokio::spawn(pontoon::daemon::run_from_source(config, async move {
            let _ = stopped.await;
        }));
        let http = reqwest::Client::new();
        let base = daemon_config.base_url();
        let started = Instant::now();
        loop {
            let synced = units_in(&http, &base, &["Synced", "Progressing"]).await;
            if synced == TEAMS * 2 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "only {synced} of {} units synced after 10 minutes",
                TEAMS * 2
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        println!(
            "{} units synced in {:.1?} (first sync); RSS {:.0} MiB",
            TEAMS * 2,
            started.elapsed(),
            common::rss_mib()
        );
        // No controller manager runs here: finish the rollouts the way the Deployment
        // controller would report them, then wait for every unit to be Synced.
        for cp in [staging, prod] {
            roll_out(cp.client().await).await;
        }
        loop {
            let synced = units_in(&http, &base, &["Synced"]).await;
            if synced == TEAMS * 2 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(900),
                "only {synced} units Synced"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        println!("all Synced after {:.1?}", started.elapsed());
        let writes0 = staging.write_requests() + prod.write_requests();
        let cpu0 = common::cpu_seconds();
        let t = Instant::now();
        let mut rss_max: f64 = 0.0;
        while t.elapsed() < idle {
            tokio::time::sleep(Duration::from_secs(5)).await;
            rss_max = rss_max.max(common::rss_mib());
        }
        let cpu = common::cpu_seconds() - cpu0;
        let writes = staging.write_requests() + prod.write_requests() - writes0;
        println!(
            "idle {:.0?}: {cpu:.2} s CPU ({:.2}% of one core), RSS now {:.0} MiB, max {:.0} MiB during idle, peak {:.0} MiB; {writes} write requests to the apiservers",
            idle,
            100.0 * cpu / idle.as_secs_f64(),
            common::rss_mib(),
            rss_max,
            common::peak_rss_mib()
        );
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(40), daemon).await;
    });
}
