//! The mass-deletion hold against a real kube-apiserver: it counts the team's own objects
//! (a team deleting all its workloads in one commit is held, however much base pontoon
//! renders for it), and a platform owner releases one held unit for one revision with an
//! annotation on its inventory (`kubectl annotate` or `pontoon release`), used once.

use std::process::Command;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::config::Kubeconfig;
use pontoon::cluster::Cluster;
use pontoon::desired::*;
use pontoon::sync::{SyncOptions, Syncer, UnitResult, UnitState};
use serde_json::json;

use crate::support::control_plane::{self, ControlPlane, unique_name};
use crate::support::fixtures::*;

const RELEASE: &str = "pontoon.dev/release";

async fn syncer(cp: &ControlPlane) -> Syncer {
    let cluster =
        Cluster::from_config(ClusterName(cp.name.into()), cp.config().await, 16).expect("cluster");
    Syncer::new(Arc::new(cluster), SyncOptions::default())
}

/// The team's unit: the base in its namespace (Namespace, Role, RoleBinding, applied as
/// the platform) and a ConfigMap, applied as the team, per name.
fn unit_with(cp: &ControlPlane, team: &str, names: &[&str]) -> UnitDesired {
    let mut objects = team_base(team, &[team]);
    for n in names {
        objects.push(configmap(team, team, n, json!({"k": "1"})));
    }
    unit_desired(team, cp.name, &[team], objects)
}

async fn exists(cp: &ControlPlane, ns: &str, name: &str) -> bool {
    let api: Api<ConfigMap> = Api::namespaced(cp.client().await, ns);
    api.get_opt(name).await.expect("get configmap").is_some()
}

/// The inventory ConfigMap of `team`, if there is one.
async fn inventory(cp: &ControlPlane, team: &str) -> Option<ConfigMap> {
    let api: Api<ConfigMap> = Api::namespaced(cp.client().await, &SyncOptions::default().namespace);
    api.get_opt(&format!("pontoon-inventory-{team}"))
        .await
        .expect("get inventory")
}

async fn release_annotation(cp: &ControlPlane, team: &str) -> Option<String> {
    inventory(cp, team)
        .await
        .and_then(|cm| cm.metadata.annotations?.remove(RELEASE))
}

/// What a platform owner types to release `team` for `revision` with kubectl.
fn annotate(cp: &ControlPlane, team: &str, revision: &str) {
    let out = cp.kubectl(&[
        "-n",
        &SyncOptions::default().namespace,
        "annotate",
        "configmap",
        &format!("pontoon-inventory-{team}"),
        &format!("{RELEASE}={revision}"),
        "--overwrite",
    ]);
    assert!(out.status.success(), "kubectl annotate: {out:?}");
}

/// `pontoon release` as a platform owner runs it, with their own kubeconfig.
fn pontoon_release(cp: &ControlPlane, team: &str, revision: &str) -> std::process::Output {
    let context = Kubeconfig::read_from(&cp.kubeconfig)
        .expect("read kubeconfig")
        .current_context
        .expect("a current context");
    Command::new(env!("CARGO_BIN_EXE_pontoon"))
        .env("KUBECONFIG", &cp.kubeconfig)
        .args(["release", "--team", team, "--cluster", cp.name])
        .args(["--revision", revision, "--context", &context])
        .output()
        .expect("run pontoon")
}

fn assert_held(r: &UnitResult, team: &str, revision: &str) {
    assert_eq!(r.state, UnitState::OutOfSync, "{r:?}");
    let message = r.message.as_deref().unwrap_or_default();
    let command = format!(
        "pontoon release --team {team} --cluster {} --revision {revision}",
        r.unit.cluster
    );
    assert!(
        message.starts_with("held: ") && message.contains(&command),
        "the held unit says how to release it: {message}"
    );
}

/// The team drops both its workloads in one commit. With its three objects of base in the
/// count that was 2 of 5 (40%) and went through; of the team's own it is 2 of 2.
#[tokio::test]
async fn a_team_deleting_all_its_workloads_in_one_commit_is_held() {
    let cp = control_plane::shared();
    let s = syncer(cp).await;
    let team = unique_name("allgone");
    let r = s.sync(&unit_with(cp, &team, &["api", "web"]), "r1").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");

    let r = s.sync(&unit_with(cp, &team, &[]), "r2").await;
    assert_held(&r, &team, "r2");
    let message = r.message.as_deref().unwrap_or_default();
    assert!(
        message.contains(
            "would delete 2 of the team's 2 objects (100% > the platform's limit of 50%)"
        ),
        "{message}"
    );
    assert!(exists(cp, &team, "api").await && exists(cp, &team, "web").await);

    // Dropping one of two is within the share and goes through.
    let r = s.sync(&unit_with(cp, &team, &["api"]), "r3").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert!(exists(cp, &team, "api").await && !exists(cp, &team, "web").await);
}

/// A release for the held revision lets exactly that sync through, is removed once used,
/// names who released it in the summary, and a later revision that deletes as much is held
/// again.
#[tokio::test]
async fn a_release_for_the_held_revision_lets_it_through_once() {
    let cp = control_plane::shared();
    let s = syncer(cp).await;
    let team = unique_name("released");
    let r = s.sync(&unit_with(cp, &team, &["api", "web"]), "r1").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert_held(&s.sync(&unit_with(cp, &team, &[]), "r2").await, &team, "r2");

    annotate(cp, &team, "r2");
    let r = s.sync(&unit_with(cp, &team, &[]), "r2").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert_eq!(r.pruned.len(), 2, "{r:?}");
    assert!(
        r.summary()
            .contains(", hold released by kubectl-annotate at "),
        "{}",
        r.summary()
    );
    assert!(!exists(cp, &team, "api").await && !exists(cp, &team, "web").await);
    assert_eq!(
        release_annotation(cp, &team).await,
        None,
        "a release is removed once used"
    );

    // Later revisions: back to three workloads, then all three dropped again.
    let r = s.sync(&unit_with(cp, &team, &["a", "b", "c"]), "r3").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert_held(&s.sync(&unit_with(cp, &team, &[]), "r4").await, &team, "r4");
    assert!(exists(cp, &team, "a").await);
}

/// A release names one revision: any other one is held as before, and the release stays.
#[tokio::test]
async fn a_release_for_another_revision_does_not_release() {
    let cp = control_plane::shared();
    let s = syncer(cp).await;
    let team = unique_name("otherrev");
    let r = s.sync(&unit_with(cp, &team, &["api", "web"]), "r1").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");

    annotate(cp, &team, "r9");
    let r = s.sync(&unit_with(cp, &team, &[]), "r2").await;
    assert_held(&r, &team, "r2");
    assert!(exists(cp, &team, "api").await);
    assert_eq!(release_annotation(cp, &team).await.as_deref(), Some("r9"));
    // A prefix of the held revision is another revision too.
    annotate(cp, &team, "r");
    assert_held(&s.sync(&unit_with(cp, &team, &[]), "r2").await, &team, "r2");
    assert!(exists(cp, &team, "web").await);
}

/// A team gone from the repo (its inventory left on the cluster) is held like any unit,
/// and `pontoon release` for the revision lets its removal finish: its objects and its
/// inventory are gone.
#[tokio::test]
async fn a_removed_team_is_held_and_released_with_pontoon_release() {
    let cp = control_plane::shared();
    let s = syncer(cp).await;
    let team = unique_name("leaving");
    let r = s.sync(&unit_with(cp, &team, &["api", "web"]), "r1").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");

    let policy = PrunePolicy::default();
    let r = s.remove_team(&TeamName(team.clone()), &policy, "r2").await;
    assert_held(&r, &team, "r2");
    assert!(exists(cp, &team, "api").await && inventory(cp, &team).await.is_some());

    let out = pontoon_release(cp, &team, "r2");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("released for revision r2 only"), "{said}");

    let r = s.remove_team(&TeamName(team.clone()), &policy, "r2").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert!(
        r.summary()
            .contains(", hold released by pontoon-release at "),
        "{}",
        r.summary()
    );
    assert!(!exists(cp, &team, "api").await && !exists(cp, &team, "web").await);
    assert!(inventory(cp, &team).await.is_none(), "the removal is done");

    // Nothing to release once the team is gone: the command says so and fails.
    let out = pontoon_release(cp, &team, "r2");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "team {team} has no inventory ConfigMap pontoon-system/pontoon-inventory-{team}"
        )),
        "{err}"
    );
}
