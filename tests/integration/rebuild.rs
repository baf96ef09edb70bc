//! `pontoon inventory rebuild` against a real kube-apiserver: an inventory that no longer
//! parses is written again from the objects labelled for the team in its namespaces, a
//! labelled object elsewhere is left out, and a restarted daemon then prunes from the
//! rebuilt inventory what the repo dropped, and only that.

use std::process::Command;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use pontoon::desired::*;
use pontoon::sync::{SyncOptions, UnitState};
use serde_json::json;

use crate::support::control_plane::{self, ControlPlane, unique_name};
use crate::support::fixtures::*;
use crate::sync::{keys, syncer};

fn unit_with(cp: &ControlPlane, team: &str, names: &[&str]) -> UnitDesired {
    let mut objects = team_base(team, &[team]);
    for n in names {
        objects.push(configmap(team, team, n, json!({"k": "1"})));
    }
    unit_desired(team, cp.name, &[team], objects)
}

fn rebuild(cp: &ControlPlane, team: &str) -> std::process::Output {
    let context = Kubeconfig::read_from(&cp.kubeconfig)
        .expect("read kubeconfig")
        .current_context
        .expect("a current context");
    Command::new(env!("CARGO_BIN_EXE_pontoon"))
        .env("KUBECONFIG", &cp.kubeconfig)
        .args(["inventory", "rebuild", "--team", team, "--cluster", cp.name])
        .args(["--context", &context])
        .output()
        .expect("run pontoon")
}

#[tokio::test]
async fn a_corrupt_inventory_is_rebuilt_from_the_teams_labelled_objects() {
    let cp = control_plane::shared();
    let client = cp.client().await;
    let team = unique_name("rebuilt");
    let r = syncer(cp)
        .await
        .sync(&unit_with(cp, &team, &["a", "b"]), "r1")
        .await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");

    // Someone labels an object in a namespace that is not the team's as the team's.
    let elsewhere = unique_name("elsewhere");
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(elsewhere.clone()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    let decoy = ConfigMap {
        metadata: ObjectMeta {
            name: Some("decoy".into()),
            labels: Some(
                [
                    (LABEL_MANAGED_BY.to_owned(), MANAGED_BY_VALUE.to_owned()),
                    (LABEL_TEAM.to_owned(), team.clone()),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    let decoys: Api<ConfigMap> = Api::namespaced(client.clone(), &elsewhere);
    decoys
        .create(&PostParams::default(), &decoy)
        .await
        .expect("decoy");

    // The inventory is edited to garbage: the unit fails until an operator acts.
    let inventories: Api<ConfigMap> =
        Api::namespaced(client.clone(), &SyncOptions::default().namespace);
    let inventory = format!("pontoon-inventory-{team}");
    let garbage = json!({"binaryData": {"objects.gz": "Z2FyYmFnZQ=="}});
    inventories
        .patch(&inventory, &PatchParams::default(), &Patch::Merge(&garbage))
        .await
        .expect("garble");
    let r = syncer(cp)
        .await
        .sync(&unit_with(cp, &team, &["a"]), "r2")
        .await;
    assert_eq!(r.state, UnitState::Failed, "{r:?}");

    let out = rebuild(cp, &team);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    for line in [
        format!("ConfigMap {team}/a (deleted as the team)"),
        format!("ConfigMap {team}/b (deleted as the team)"),
        format!("Namespace {team} (deleted as pontoon)"),
        format!(
            "left out, labelled for {team} outside its namespaces: ConfigMap {elsewhere}/decoy"
        ),
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "{line:?} not in:\n{stdout}"
        );
    }

    // A restarted daemon syncs the revision that dropped b: b is pruned, the decoy stays.
    let r = syncer(cp)
        .await
        .sync(&unit_with(cp, &team, &["a"]), "r2")
        .await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert_eq!(keys(&r.pruned), [format!("ConfigMap {team}/b")], "{r:?}");
    assert!(decoys.get_opt("decoy").await.expect("get").is_some());
}
