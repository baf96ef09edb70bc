//! `kill -9` of a real `pontoon run` process in the middle of a sync, then a restart: the
//! restarted process (nothing in memory) converges on the next revision and leaves no
//! object of the killed sync behind. Then SIGTERM: a clean exit with code 0.

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

use crate::support::control_plane::{self, eventually};
use crate::support::daemon::{spawn_run, write};
use crate::support::daemon_config::DaemonConfig;

fn configmaps(n: usize) -> String {
    (0..n)
        .map(|i| format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm{i:03}}}\ndata: {{i: \"{i}\"}}\n"))
        .collect::<Vec<_>>()
        .join("---\n")
}

fn run(config: &Path, log: &Path) -> Child {
    spawn_run(config, log)
}

async fn names(cms: &Api<ConfigMap>) -> Vec<String> {
    let mut names = control_plane::configmap_names(cms).await;
    names.retain(|n| n.starts_with("cm"));
    names
}

#[tokio::test]
async fn a_process_killed_mid_sync_converges_after_a_restart_with_no_orphans() {
    let cp = control_plane::dedicated("crash");
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("platform");
    write(
        &repo,
        "platform.yaml",
        "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {name: c}\nspec:\n  clusters: [{name: crash}]\n  policy:\n    allowedKinds: [{group: \"\", kind: ConfigMap}]\n    prune: {maxShare: 1.0}\n",
    );
    write(
        &repo,
        "teams/bulk/team.yaml",
        "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {name: bulk}\nspec:\n  namespaces: [bulk]\n  clusters: {names: [crash]}\n",
    );
    write(&repo, "teams/bulk/config.yaml", &configmaps(1500));
    let daemon_config = DaemonConfig::dir(&repo)
        .cluster("crash", &cp.kubeconfig)
        .concurrency(2);
    let config = daemon_config.write(tmp.path());
    let cms: Api<ConfigMap> = Api::namespaced(cp.client().await, "bulk");

    let mut first = run(&config, &tmp.path().join("first.log"));
    eventually("a partial apply", Duration::from_secs(60), || async {
        (!names(&cms).await.is_empty()).then_some(())
    })
    .await;
    first.kill().expect("kill -9");
    let status = first.wait().expect("wait");
    assert!(!status.success(), "killed, not exited: {status:?}");
    let partial = names(&cms).await.len();
    assert!(
        partial < 1500,
        "the sync finished before the kill ({partial} objects)"
    );

    // The next revision keeps 100 objects; the restarted process must account for every
    // object the killed one created (its inventory is written before its objects).
    write(&repo, "teams/bulk/config.yaml", &configmaps(100));
    let mut second = run(&config, &tmp.path().join("second.log"));
    let base = daemon_config.base_url();
    eventually(
        "Synced after the restart",
        Duration::from_secs(120),
        || async {
            let s: serde_json::Value = reqwest::get(format!("{base}/api/status"))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let u = s["units"]
                .as_array()?
                .iter()
                .find(|u| u["team"] == "bulk")?;
            (u["state"] == "Synced").then_some(())
        },
    )
    .await;
    let mut left = names(&cms).await;
    left.sort();
    let want: Vec<String> = (0..100).map(|i| format!("cm{i:03}")).collect();
    assert_eq!(left, want, "no orphan of the killed sync survives");

    // SIGTERM: finish, exit 0.
    let ok = Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(ok.success());
    let code = tokio::task::spawn_blocking(move || second.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(code.success(), "exit after SIGTERM: {code:?}");
}
