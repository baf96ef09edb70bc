//! A unit of 20,000 objects against a real kube-apiserver (a control plane of its own, so
//! no other test lists them): its inventory no longer fits one ConfigMap and is stored in
//! pages; the unit syncs, prunes after a restart from what the pages say, and leaves no
//! page behind that its inventory does not list.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::ListParams;
use pontoon::desired::*;
use pontoon::sync::inventory::Inventory;
use pontoon::sync::{SyncOptions, UnitState};
use serde_json::{Value, json};

use crate::support::control_plane::{configmap_names, dedicated};
use crate::support::fixtures::*;
use crate::sync::syncer;

const OBJECTS: usize = 20_000;

fn unit(cluster: &str, team: &str, count: usize) -> UnitDesired {
    let mut objects = team_base(team, &[team]);
    for i in 0..count {
        objects.push(configmap(
            team,
            team,
            &format!("cm-{i:05}"),
            json!({"k": "1"}),
        ));
    }
    unit_desired(team, cluster, &[team], objects)
}

/// The pages the inventory lists, and the page ConfigMaps that exist for the team.
async fn pages(inventories: &Api<ConfigMap>, team: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let head = inventories
        .get_opt(&format!("pontoon-inventory-{team}"))
        .await
        .expect("inventory");
    let listed: Vec<Value> = head
        .and_then(|h| h.data)
        .and_then(|d| d.get("pages").cloned())
        .map(|p| serde_json::from_str(&p).expect("pages parse"))
        .unwrap_or_default();
    let listed = listed
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    let selector = format!("pontoon.dev/inventory-page=true,pontoon.dev/team={team}");
    let existing = inventories
        .list_metadata(&ListParams::default().labels(&selector))
        .await
        .expect("list pages")
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    (listed, existing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_of_twenty_thousand_objects_syncs_prunes_and_survives_a_restart() {
    let cp = dedicated("big");
    let team = "big";
    let client = cp.client().await;
    let inventories: Api<ConfigMap> =
        Api::namespaced(client.clone(), &SyncOptions::default().namespace);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), team);

    let first = syncer(cp)
        .await
        .sync(&unit(cp.name, team, OBJECTS), "r1")
        .await;
    assert_eq!(first.state, UnitState::Synced, "{:?}", first.errors);
    assert_eq!(configmap_names(&cms).await.len(), OBJECTS);
    let (listed, existing) = pages(&inventories, team).await;
    assert!(listed.len() >= 2, "20,000 entries need pages: {listed:?}");
    assert_eq!(listed, existing, "every page listed exists, and no other");
    let stored = Inventory::load(&inventories, &Owner::default(), &TeamName(team.into()))
        .await
        .expect("inventory reads");
    let ours: Vec<_> = stored
        .entries
        .values()
        .filter(|e| e.kind == "ConfigMap")
        .collect();
    assert_eq!(ours.len(), OBJECTS);
    assert!(
        ours.iter()
            .all(|e| e.uid.is_some() && e.resource_version.is_some() && e.digest.is_some()),
        "every entry knows its uid, version and digest"
    );

    // A restarted daemon (nothing in memory) drops a thousand objects: it finds them in
    // the pages and prunes them, and only them.
    let restarted = syncer(cp).await;
    let kept = OBJECTS - 1000;
    let second = restarted.sync(&unit(cp.name, team, kept), "r2").await;
    assert_eq!(second.state, UnitState::Synced, "{:?}", second.errors);
    assert_eq!(second.pruned.len(), 1000, "{:?}", second.message);
    let names: BTreeSet<String> = configmap_names(&cms).await.into_iter().collect();
    let expected: BTreeSet<String> = (0..kept).map(|i| format!("cm-{i:05}")).collect();
    assert_eq!(names, expected);
    let (listed, existing) = pages(&inventories, team).await;
    assert_eq!(listed, existing, "pages of the earlier write are removed");
    let stored = Inventory::load(&inventories, &Owner::default(), &TeamName(team.into()))
        .await
        .expect("inventory reads");
    assert_eq!(
        stored
            .entries
            .values()
            .filter(|e| e.kind == "ConfigMap")
            .count(),
        kept
    );
    assert_eq!(stored.revision, "r2");

    // Deleting the inventory (as a team's removal does) deletes its pages too.
    Inventory::delete(&inventories, &Owner::default(), &TeamName(team.into()))
        .await
        .expect("delete inventory");
    let (listed, existing) = pages(&inventories, team).await;
    assert!(listed.is_empty() && existing.is_empty(), "{existing:?}");
}
