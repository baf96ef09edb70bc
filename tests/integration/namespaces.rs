//! A namespace belongs to the team that held it. A new team whose team.yaml claims it
//! fails on its own, whatever the names' order; the holder goes on syncing, and still
//! does after the daemon restarts, when the clusters' Namespaces say who held what.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use serde_json::Value;

use crate::support::control_plane::{self, eventually, unique_name};
use crate::support::daemon::{Daemon, write};
use crate::support::daemon_config::DaemonConfig;

async fn colour(cms: &Api<ConfigMap>) -> Option<String> {
    cms.get("settings").await.ok()?.data?.get("colour").cloned()
}

async fn unit(daemon: &Daemon, team: &str) -> Option<Value> {
    daemon.status().await?["units"]
        .as_array()?
        .iter()
        .find(|u| u["team"] == team)
        .cloned()
}

fn team_yaml(team: &str, namespaces: &[&str]) -> String {
    format!(
        "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {team}}}\nspec:\n  namespaces: [{}]\n  clusters: {{names: [claims]}}\n",
        namespaces.join(", ")
    )
}

fn app(colour: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings}}\ndata: {{colour: {colour}}}\n"
    )
}

/// Waits until the claiming team's unit has failed because of the holder's namespace.
async fn refused(daemon: &Daemon, claimer: &str, holder: &str) {
    let u = eventually(
        "the claiming team failed",
        Duration::from_secs(30),
        || async {
            let u = unit(daemon, claimer).await?;
            (u["state"] == "Failed").then_some(u)
        },
    )
    .await;
    let error = u["last_error"].as_str().unwrap_or("");
    assert!(
        error.contains(&format!(
            "error[namespace-claimed]: team {claimer}: namespace {holder} belongs to team {holder}"
        )),
        "{u}"
    );
}

#[tokio::test]
async fn a_team_claiming_another_teams_namespace_fails_alone_also_after_a_restart() {
    let cp = control_plane::dedicated("claims");
    // The newcomer sorts first: the order of names must not decide.
    let (holder, claimer) = (unique_name("z-holder"), unique_name("a-claimer"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("platform");
    write(
        &repo,
        "platform.yaml",
        "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {name: c}\nspec:\n  clusters: [{name: claims}]\n  policy:\n    allowedKinds: [{group: \"\", kind: ConfigMap}]\n",
    );
    write(
        &repo,
        &format!("teams/{holder}/team.yaml"),
        &team_yaml(&holder, &[&holder]),
    );
    write(&repo, &format!("teams/{holder}/app.yaml"), &app("blue"));
    let config_path = DaemonConfig::dir(&repo)
        .cluster("claims", &cp.kubeconfig)
        .write(tmp.path());
    let cms: Api<ConfigMap> = Api::namespaced(cp.client().await, &holder);
    let daemon = Daemon::start(&config_path);
    eventually("blue", Duration::from_secs(60), || async {
        (colour(&cms).await.as_deref() == Some("blue")).then_some(())
    })
    .await;

    // One commit: a new team claims the holder's namespace, and the holder changes.
    write(
        &repo,
        &format!("teams/{claimer}/team.yaml"),
        &team_yaml(&claimer, &[&claimer, &holder]),
    );
    write(&repo, &format!("teams/{holder}/app.yaml"), &app("green"));
    eventually(
        "green: the holder still syncs",
        Duration::from_secs(30),
        || async { (colour(&cms).await.as_deref() == Some("green")).then_some(()) },
    )
    .await;
    refused(&daemon, &claimer, &holder).await;
    let h = unit(&daemon, &holder).await.expect("holder unit");
    assert_eq!(h["state"], "Synced", "{h}");

    // A restarted daemon has no earlier render; the cluster's Namespaces tell.
    daemon.finish().await;
    write(&repo, &format!("teams/{holder}/app.yaml"), &app("red"));
    let daemon = Daemon::start(&config_path);
    eventually("red after the restart", Duration::from_secs(60), || async {
        (colour(&cms).await.as_deref() == Some("red")).then_some(())
    })
    .await;
    refused(&daemon, &claimer, &holder).await;
    // Nothing of the claimer's reached the holder's namespace.
    assert_eq!(control_plane::configmap_names(&cms).await, ["settings"]);
    daemon.finish().await;
}
