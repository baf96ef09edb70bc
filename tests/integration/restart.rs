//! A restarted pontoon (a fresh `Syncer`: nothing remembered, as after a restart, a
//! leadership hand-over or in `pontoon sync --once`) against a real kube-apiserver. The
//! unit's inventory is its memory: an object exactly as pontoon left it costs no request;
//! one edited by hand meanwhile is corrected (a person's added field removed); one deleted
//! meanwhile is created again; one deleted and created again by someone else is left
//! untouched and reported; one in drift mode `report` is left as found and reported.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use pontoon::cluster::Cluster;
use pontoon::desired::*;
use pontoon::sync::inventory::Inventory;
use pontoon::sync::{SyncOptions, Syncer, UnitResult, UnitState};
use serde_json::json;

use crate::support::audit;
use crate::support::control_plane::{self, ControlPlane, unique_name};
use crate::support::control_plane::{RequestKey, THE_APISERVERS_OWN};
use crate::support::fixtures::*;

/// A new process's syncer: nothing remembered.
async fn restarted(cp: &ControlPlane) -> Syncer {
    let cluster =
        Cluster::from_config(ClusterName(cp.name.into()), cp.config().await, 16).expect("cluster");
    Syncer::new(Arc::new(cluster), SyncOptions::default())
}

/// A unit of one team: its base, ConfigMaps `settings` and `cm0`..`cm{n}`, a Service and a
/// Deployment `web` (a kind listed whole, for its health).
fn a_unit(cp: &ControlPlane, team: &str, n: usize) -> UnitDesired {
    let mut objects = team_base(team, &[team]);
    objects.push(configmap(team, team, "settings", json!({"mode": "safe"})));
    for i in 0..n {
        objects.push(configmap(
            team,
            team,
            &format!("cm{i}"),
            json!({"i": i.to_string()}),
        ));
    }
    objects.push(obj(
        team,
        Applier::Team,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": team},
               "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
    ));
    objects.push(deployment(team, team, "web", "shop:1.0", 1));
    unit_desired(team, cp.name, &[team], objects)
}

/// The first sync, by a process that is gone by the time the test goes on.
async fn synced_once(cp: &ControlPlane, desired: &UnitDesired) {
    let r = restarted(cp).await.sync(desired, "r1").await;
    assert!(r.errors.is_empty(), "{r:?}");
    assert!(!r.created.is_empty(), "{r:?}");
}

fn as_person() -> PatchParams {
    PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    }
}

fn names(keys: &[ObjectKey]) -> Vec<String> {
    keys.iter()
        .map(|k| format!("{}/{}", k.kind, k.name))
        .collect()
}

#[tokio::test]
async fn an_object_edited_by_hand_while_down_is_corrected_and_a_persons_field_removed() {
    let cp = control_plane::shared();
    let team = unique_name("restart-edit");
    let desired = a_unit(cp, &team, 0);
    synced_once(cp, &desired).await;

    // While pontoon is down, a person changes a value pontoon set and adds fields of
    // their own: to a ConfigMap (listed as metadata: read once) and to a Deployment
    // (listed whole).
    let client = cp.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &team);
    cms.patch(
        "settings",
        &as_person(),
        &Patch::Merge(json!({"data": {"mode": "yolo", "extra": "mine"}})),
    )
    .await
    .expect("hand edit of the ConfigMap");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &team);
    deployments
        .patch(
            "web",
            &as_person(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "app", "image": "shop:hacked", "env": [{"name": "DEBUG", "value": "1"}]}]}}}})),
        )
        .await
        .expect("hand edit of the Deployment");

    let r = restarted(cp).await.sync(&desired, "r1").await;
    assert!(r.errors.is_empty(), "{r:?}");
    assert_eq!(
        names(&r.updated),
        ["ConfigMap/settings", "Deployment/web"],
        "{r:?}"
    );
    let data = cms
        .get("settings")
        .await
        .expect("settings")
        .data
        .unwrap_or_default();
    assert_eq!(
        data,
        BTreeMap::from([("mode".to_owned(), "safe".to_owned())]),
        "the value is put back and the person's field removed"
    );
    let web = serde_json::to_value(deployments.get("web").await.expect("web")).expect("json");
    let container = &web["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], json!("shop:1.0"), "{container}");
    assert!(container.get("env").is_none(), "DEBUG removed: {container}");

    // What the correcting sync left is what the inventory records: the next restart
    // writes nothing.
    let r = restarted(cp).await.sync(&desired, "r1").await;
    assert!(r.errors.is_empty(), "{r:?}");
    assert_eq!((r.writes, r.updated.len()), (0, 0), "{r:?}");
}

#[tokio::test]
async fn an_object_deleted_while_down_is_created_again() {
    let cp = control_plane::shared();
    let team = unique_name("restart-gone");
    let desired = a_unit(cp, &team, 2);
    synced_once(cp, &desired).await;
    let cms: Api<ConfigMap> = Api::namespaced(cp.client().await, &team);
    cms.delete("cm1", &DeleteParams::default())
        .await
        .expect("delete cm1");

    let r = restarted(cp).await.sync(&desired, "r1").await;
    assert!(r.errors.is_empty(), "{r:?}");
    assert_eq!(names(&r.created), ["ConfigMap/cm1"], "{r:?}");
    assert!(r.updated.is_empty(), "{r:?}");
    assert!(cms.get_opt("cm1").await.expect("get cm1").is_some());

    // The inventory now records the new object's uid and version: the next restart
    // finds it as pontoon left it, not as someone else's.
    let live = cms.get("cm1").await.expect("cm1").metadata;
    let inventories: Api<ConfigMap> = Api::namespaced(cp.client().await, DEFAULT_NAMESPACE);
    let inventory = Inventory::load(
        &inventories,
        &pontoon::desired::Owner::default(),
        &TeamName(team.clone()),
    )
    .await
    .expect("inventory");
    let entry = inventory
        .entries
        .values()
        .find(|e| e.name == "cm1")
        .expect("cm1 in the inventory");
    assert_eq!(
        (&entry.uid, &entry.resource_version),
        (&live.uid, &live.resource_version)
    );
    let r = restarted(cp).await.sync(&desired, "r1").await;
    assert!(r.errors.is_empty(), "{r:?}");
    assert_eq!((r.writes, r.unchanged), (0, desired.objects.len()), "{r:?}");
}

#[tokio::test]
async fn an_object_someone_else_deleted_and_created_again_is_left_untouched_and_reported() {
    let cp = control_plane::shared();
    let team = unique_name("restart-uid");
    let desired = a_unit(cp, &team, 0);
    synced_once(cp, &desired).await;

    // Someone deletes `settings` and creates their own under the name, with pontoon's
    // labels (say, a copy of the old object put back by hand): a new uid.
    let cms: Api<ConfigMap> = Api::namespaced(cp.client().await, &team);
    cms.delete("settings", &DeleteParams::default())
        .await
        .expect("delete settings");
    let theirs: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "settings", "namespace": team,
            "labels": {LABEL_MANAGED_BY: MANAGED_BY_VALUE, LABEL_TEAM: team}},
        "data": {"mode": "theirs"}
    }))
    .expect("configmap");
    let theirs = cms
        .create(&PostParams::default(), &theirs)
        .await
        .expect("create their own");

    let r = restarted(cp).await.sync(&desired, "r1").await;
    assert_eq!(r.state, UnitState::Failed, "{r:?}");
    assert_eq!(r.errors.len(), 1, "{r:?}");
    let error = &r.errors[0];
    assert!(error.object.ends_with("/settings"), "{error:?}");
    for words in [
        "created again by someone else",
        "leaves it untouched",
        "delete it",
        "adopt it",
    ] {
        assert!(error.message.contains(words), "{words:?} in {error:?}");
    }
    let now = cms.get("settings").await.expect("settings");
    assert_eq!(now.metadata.uid, theirs.metadata.uid);
    assert_eq!(
        now.metadata.resource_version, theirs.metadata.resource_version,
        "not applied over"
    );
}

#[tokio::test]
async fn a_restart_over_an_unchanged_unit_makes_no_request_per_object() {
    let cp = control_plane::dedicated("restart-count");
    let team = unique_name("restart-quiet");
    let mut desired = a_unit(cp, &team, 20);
    desired
        .objects
        .retain(|o| o.key().is_some_and(|k| k.kind != "Service"));
    synced_once(cp, &desired).await;
    let objects = desired.objects.len();

    let fresh = restarted(cp).await;
    let since = jiff::Timestamp::now();
    let before = cp.requests_by_resource();
    let r: UnitResult = fresh.sync(&desired, "r1").await;
    let sent = RequestKey::delta(&before, cp.requests_by_resource());
    eprintln!("requests of a restarted sync of {objects} unchanged objects: {sent:?}");
    assert!(r.errors.is_empty(), "{r:?}");
    assert_eq!((r.writes, r.unchanged), (0, objects), "{r:?}");

    let writes = audit::writes_by(cp.dir(), pontoon::cluster::USER_AGENT, since);
    assert!(
        writes.is_empty(),
        "{:?}",
        writes
            .iter()
            .map(audit::Event::describe)
            .collect::<Vec<_>>()
    );
    let dry_runs: u64 = sent.iter().filter(|(k, _)| k.dry_run).map(|(_, n)| n).sum();
    assert_eq!(dry_runs, 0, "{sent:?}");
    // Reads of single objects: the inventory's ConfigMap, none of the unit's objects
    // (ConfigMaps, a Deployment, a Role and RoleBinding; its Namespace is left out with
    // the apiserver's own reads, and pontoon's namespace is read once per process).
    let gets: BTreeMap<&str, u64> = sent
        .iter()
        .filter(|(k, _)| k.verb == "GET" && k.scope == "resource" && !k.dry_run)
        .filter(|(k, _)| !THE_APISERVERS_OWN.contains(&k.resource.as_str()))
        .map(|(k, n)| (k.resource.as_str(), *n))
        .collect();
    assert_eq!(gets, BTreeMap::from([("configmaps", 1)]), "{sent:?}");
}

#[tokio::test]
async fn drift_in_report_mode_found_after_a_restart_is_left_and_reported() {
    let cp = control_plane::shared();
    let team = unique_name("restart-report");
    let mut desired = a_unit(cp, &team, 0);
    for o in desired.objects.iter_mut() {
        o.drift = DriftMode::Report;
    }
    synced_once(cp, &desired).await;
    let cms: Api<ConfigMap> = Api::namespaced(cp.client().await, &team);
    let edited = cms
        .patch(
            "settings",
            &as_person(),
            &Patch::Merge(json!({"data": {"mode": "yolo"}})),
        )
        .await
        .expect("hand edit");

    let r = restarted(cp).await.sync(&desired, "r1").await;
    assert!(r.errors.is_empty(), "{r:?}");
    assert_eq!(r.state, UnitState::OutOfSync, "{r:?}");
    assert_eq!(names(&r.drifted), ["ConfigMap/settings"], "{r:?}");
    assert!(r.updated.is_empty(), "{r:?}");
    let now = cms.get("settings").await.expect("settings");
    assert_eq!(
        now.metadata.resource_version, edited.metadata.resource_version,
        "left as the person made it"
    );
}
