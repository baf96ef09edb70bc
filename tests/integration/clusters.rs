//! One team on two clusters: each (team, cluster) unit has its own inventory on its own
//! cluster, so a team that stops targeting one cluster loses its objects there (once the
//! mass-deletion rule lets it) and keeps them on the other.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use serde_json::Value;

use crate::support::control_plane::{self, eventually, unique_name};
use crate::support::daemon::{Daemon, write};
use crate::support::daemon_config::DaemonConfig;

const POLICY: &str = "  policy:\n    allowedKinds: [{group: \"\", kind: ConfigMap}]\n";

fn platform(prune: &str) -> String {
    format!(
        "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {{name: two}}\nspec:\n  clusters: [{{name: east}}, {{name: west}}]\n{POLICY}{prune}"
    )
}

fn team_yaml(team: &str, clusters: &str) -> String {
    format!(
        "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {team}}}\nspec:\n  namespaces: [{team}]\n  clusters: {{names: [{clusters}]}}\n"
    )
}

fn settings(colour: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings}}\ndata: {{colour: {colour}}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: flags}}\ndata: {{beta: \"on\"}}\n"
    )
}

async fn colour(cms: &Api<ConfigMap>) -> Option<String> {
    cms.get_opt("settings")
        .await
        .ok()
        .flatten()
        .and_then(|c| c.data?.get("colour").cloned())
}

async fn unit(daemon: &Daemon, team: &str, cluster: &str) -> Option<Value> {
    let status = daemon.status().await?;
    status["units"]
        .as_array()?
        .iter()
        .find(|u| u["team"] == team && u["cluster"] == cluster)
        .cloned()
}

#[tokio::test]
async fn a_team_leaving_one_cluster_is_held_then_pruned_there_and_kept_on_the_other() {
    // The daemon owns every inventory on its clusters: two of their own.
    let (east, west) = (
        control_plane::dedicated("east"),
        control_plane::dedicated("west"),
    );
    let team = unique_name("roam");
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("platform");
    write(&repo, "platform.yaml", &platform(""));
    write(
        &repo,
        &format!("teams/{team}/team.yaml"),
        &team_yaml(&team, "east, west"),
    );
    write(&repo, &format!("teams/{team}/app.yaml"), &settings("blue"));
    let config = DaemonConfig::dir(&repo)
        .cluster("east", &east.kubeconfig)
        .cluster("west", &west.kubeconfig);
    let daemon = Daemon::start(&config.write(tmp.path()));
    let east_cms: Api<ConfigMap> = Api::namespaced(east.client().await, &team);
    let west_cms: Api<ConfigMap> = Api::namespaced(west.client().await, &team);
    for (cms, name) in [(&east_cms, "east"), (&west_cms, "west")] {
        eventually(
            &format!("blue on {name}"),
            Duration::from_secs(60),
            || async { (colour(cms).await.as_deref() == Some("blue")).then_some(()) },
        )
        .await;
    }
    let inventory = format!("pontoon-inventory-{team}");
    let west_system: Api<ConfigMap> = Api::namespaced(west.client().await, "pontoon-system");
    assert!(
        west_system
            .get_opt(&inventory)
            .await
            .expect("inventory")
            .is_some(),
        "each cluster keeps its unit's inventory"
    );

    // The team leaves west in the same commit that turns east green: everything the team
    // has on west would go, over the default limit of half a unit.
    write(
        &repo,
        &format!("teams/{team}/team.yaml"),
        &team_yaml(&team, "east"),
    );
    write(&repo, &format!("teams/{team}/app.yaml"), &settings("green"));
    eventually("green on east", Duration::from_secs(60), || async {
        (colour(&east_cms).await.as_deref() == Some("green")).then_some(())
    })
    .await;
    let held = eventually("the west unit held", Duration::from_secs(60), || async {
        let u = unit(&daemon, &team, "west").await?;
        (u["state"] == "OutOfSync").then_some(u)
    })
    .await;
    let message = held["last_error"].as_str().unwrap_or_default().to_owned()
        + held["summary"].as_str().unwrap_or_default();
    assert!(message.contains("held"), "the hold is reported: {held}");
    assert_eq!(
        colour(&west_cms).await.as_deref(),
        Some("blue"),
        "a held unit keeps what it runs"
    );
    assert!(west_cms.get_opt("flags").await.expect("get").is_some());
    let east_unit = unit(&daemon, &team, "east").await.expect("east unit");
    assert_eq!(east_unit["state"], "Synced", "{east_unit}");
    assert!(
        daemon
            .metrics()
            .await
            .lines()
            .any(|l| l.starts_with(&format!(
                "pontoon_prune_held{{cluster=\"west\",team=\"{team}\"}}"
            )) && !l.ends_with(" 0")),
        "the held deletions are a metric"
    );

    // The platform lets whole units go: west loses the team's objects, east keeps them.
    write(
        &repo,
        "platform.yaml",
        &platform("    prune: {maxShare: 1.0}\n"),
    );
    eventually(
        "settings gone from west",
        Duration::from_secs(60),
        || async {
            let gone = west_cms.get_opt("settings").await.ok()?.is_none();
            let flags_gone = west_cms.get_opt("flags").await.ok()?.is_none();
            (gone && flags_gone).then_some(())
        },
    )
    .await;
    eventually(
        "west's inventory for the team removed",
        Duration::from_secs(30),
        || async {
            west_system
                .get_opt(&inventory)
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
    let namespaces: Api<Namespace> = Api::all(west.client().await);
    assert!(
        namespaces.get_opt(&team).await.expect("get ns").is_some(),
        "namespaces are pruned only where the platform allows it"
    );
    assert_eq!(colour(&east_cms).await.as_deref(), Some("green"));
    assert!(east_cms.get_opt("flags").await.expect("get").is_some());
    let east_unit = unit(&daemon, &team, "east").await.expect("east unit");
    assert_eq!(east_unit["state"], "Synced", "{east_unit}");

    daemon.finish().await;
}
