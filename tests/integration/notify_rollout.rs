//! The `rollout-stopped` notification through the daemon's own wiring, across two real
//! control planes in two rollout stages (`staging`, then `prod`): a commit the API server
//! refuses on staging stops the rollout for prod, and the receiver (a local HTTP server)
//! gets exactly one signed `rollout-stopped` message for prod, naming the stage that
//! failed and the commit, however many times the gate looks again.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::notifications::{Receiver, assert_signed, config_with, events};
use crate::support::control_plane::{self, eventually, unique_name};
use crate::support::daemon::{Daemon, write};
use crate::support::daemon_config::DaemonConfig;
use crate::support::git::git;

/// Stages staging then prod, one team on both with a ConfigMap; with `broken`, one more
/// the API server refuses (a label value with a space).
fn platform_repo(root: &Path, team: &str, broken: bool) {
    write(
        root,
        "platform.yaml",
        "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {name: p}\nspec:\n  clusters: [{name: staging}, {name: prod}]\n  policy:\n    allowedKinds: [{group: \"\", kind: ConfigMap}]\n  rollout:\n    stages:\n    - {name: staging, clusters: {names: [staging]}}\n    - {name: prod, clusters: {names: [prod]}}\n",
    );
    write(
        root,
        &format!("teams/{team}/team.yaml"),
        &format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {team}}}\nspec:\n  namespaces: [{team}]\n  clusters: {{names: [staging, prod]}}\n"
        ),
    );
    let mut app = String::from(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {value: v1}\n",
    );
    if broken {
        app.push_str("---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: broken, labels: {tier: \"not valid!\"}}\ndata: {value: x}\n");
    }
    write(root, &format!("teams/{team}/app.yaml"), &app);
}

#[tokio::test]
async fn a_commit_failing_on_the_first_stage_is_told_once_as_rollout_stopped_for_the_next() {
    let (staging, prod) = (control_plane::shared(), control_plane::second());
    let receiver = Receiver::start().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let team = unique_name("stopped");
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).expect("mkdir");
    git(&work, &["init", "-q"]);
    platform_repo(&work, &team, false);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "first"]);
    let config = DaemonConfig::git_file(&work, &tmp.path().join("cache"))
        .cluster("staging", &staging.kubeconfig)
        .cluster("prod", &prod.kubeconfig)
        .inventory_namespace(&unique_name("pontoon-stopped"))
        .resync_interval("1s");
    let base = &receiver.base;
    let path = config_with(
        &config,
        tmp.path(),
        json!({
            "receivers": [{"name": "hook", "type": "webhook", "url": format!("{base}/hook"), "secret": {"file": "hmac"}}],
            "platform": ["hook"],
        }),
    );
    let daemon = Daemon::start(&path);
    eventually("both units Synced", Duration::from_secs(120), || async {
        let s = daemon.status().await?;
        let units = s["units"].as_array()?;
        let synced = units
            .iter()
            .filter(|u| u["team"] == team.as_str() && u["state"] == "Synced")
            .count();
        (synced == 2).then_some(())
    })
    .await;

    // The commit staging refuses: prod never gets it, and is told so once.
    platform_repo(&work, &team, true);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "broken"]);
    let broken = git(&work, &["rev-parse", "HEAD"]);
    eventually("rollout-stopped told", Duration::from_secs(120), || async {
        events(&receiver, "/hook")
            .iter()
            .any(|e| e == "rollout-stopped")
            .then_some(())
    })
    .await;
    // Resyncs every second keep failing staging and the gate keeps deciding; still once.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let stopped: Vec<_> = receiver
        .delivered("/hook")
        .into_iter()
        .filter(|r| r.json()["event"] == "rollout-stopped")
        .collect();
    assert_eq!(stopped.len(), 1, "{:?}", events(&receiver, "/hook"));
    let m = stopped[0].json();
    assert_signed(&stopped[0]);
    assert_eq!(m["team"], team.as_str(), "{m}");
    assert_eq!(m["cluster"], "prod", "{m}");
    assert_eq!(m["revision"], broken.as_str(), "{m}");
    let text = format!("{} {}", m["title"], m["detail"]);
    assert!(text.contains("staging failed"), "{m}");
    assert!(text.contains(&broken[..7]), "{m}");
    // staging's own failure is told as failed, not as a stopped rollout.
    let failed: Vec<_> = receiver
        .delivered("/hook")
        .into_iter()
        .filter(|r| r.json()["event"] == "failed")
        .map(|r| r.json()["cluster"].clone())
        .collect();
    assert_eq!(failed, [json!("staging")]);
    daemon.finish().await;
}
