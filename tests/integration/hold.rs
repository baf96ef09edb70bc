//! The mass-deletion hold against a real kube-apiserver: it counts the team's own objects,
//! so a team deleting all its workloads in one commit is held, however much base pontoon
//! renders for it.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use pontoon::cluster::Cluster;
use pontoon::desired::*;
use pontoon::sync::{SyncOptions, Syncer, UnitResult, UnitState};
use serde_json::json;

use crate::support::control_plane::{self, ControlPlane, unique_name};
use crate::support::fixtures::*;

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

fn assert_held(r: &UnitResult) {
    assert_eq!(r.state, UnitState::OutOfSync, "{r:?}");
    let message = r.message.as_deref().unwrap_or_default();
    assert!(
        message.starts_with("held: ") && message.contains("nothing was applied"),
        "{message}"
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
    assert_held(&r);
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
