//! pontoon deletes only what it created, against a real kube-apiserver: an object
//! recreated under the same name by someone else (with or without pontoon's labels), an
//! object added to an inventory by hand, and an inventory edited to garbage are never
//! pruned; the unit says what it left, or fails naming the inventory.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use pontoon::desired::*;
use pontoon::sync::{SyncOptions, UnitState};
use serde_json::{Value, json};

use crate::support::control_plane::{self, ControlPlane, unique_name};
use crate::support::fixtures::*;
use crate::support::inventory::inventory_objects;
use crate::sync::{keys, syncer};

/// The team's unit: its base in the namespace named after it, and a ConfigMap per name.
fn unit_with(cp: &ControlPlane, team: &str, names: &[&str]) -> UnitDesired {
    let mut objects = team_base(team, &[team]);
    for n in names {
        objects.push(configmap(team, team, n, json!({"k": "1"})));
    }
    unit_desired(team, cp.name, &[team], objects)
}

fn configmaps(client: &kube::Client, ns: &str) -> Api<ConfigMap> {
    Api::namespaced(client.clone(), ns)
}

fn inventories(client: &kube::Client) -> Api<ConfigMap> {
    configmaps(client, &SyncOptions::default().namespace)
}

/// A ConfigMap made by someone other than pontoon, with the given labels.
async fn create_by_hand(cms: &Api<ConfigMap>, name: &str, labels: BTreeMap<String, String>) {
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        data: Some([("owner".to_owned(), "stranger".to_owned())].into()),
        ..ConfigMap::default()
    };
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("create by hand");
}

async fn owner_of(cms: &Api<ConfigMap>, name: &str) -> Option<String> {
    cms.get_opt(name)
        .await
        .expect("get configmap")
        .and_then(|c| c.data?.remove("owner"))
}

/// Sets the inventory's list of entries (compressed, as pontoon stores it) as someone
/// editing the ConfigMap by hand would.
async fn write_inventory_objects(client: &kube::Client, team: &str, objects: &str) {
    use base64::Engine as _;
    use std::io::Write as _;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(objects.as_bytes()).expect("gzip");
    let gz = base64::engine::general_purpose::STANDARD.encode(gz.finish().expect("gzip"));
    write_inventory(client, team, json!({"binaryData": {"objects.gz": gz}})).await;
}

/// Makes the inventory what a version before compression wrote: `data.objects` as JSON.
async fn write_old_inventory_objects(client: &kube::Client, team: &str, objects: &str) {
    let patch = json!({"data": {"objects": objects}, "binaryData": null});
    write_inventory(client, team, patch).await;
}

async fn write_inventory(client: &kube::Client, team: &str, patch: Value) {
    inventories(client)
        .patch(
            &format!("pontoon-inventory-{team}"),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect("edit inventory");
}

/// A stranger deletes the object pontoon applied and makes their own under its name: the
/// repo then drops it, and pontoon leaves the stranger's object (reported, dropped from the
/// inventory) instead of deleting it. `labels` are what the stranger puts on it.
async fn a_replaced_object_survives_its_prune(prefix: &str, copy_labels: bool) {
    let cp = control_plane::shared();
    let client = cp.client().await;
    let s = syncer(cp).await;
    let team = unique_name(prefix);
    let r = s.sync(&unit_with(cp, &team, &["app", "keep"]), "r1").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");

    let cms = configmaps(&client, &team);
    cms.delete("app", &Default::default())
        .await
        .expect("delete pontoon's object");
    let labels = if copy_labels {
        [
            (LABEL_MANAGED_BY.to_owned(), MANAGED_BY_VALUE.to_owned()),
            (LABEL_TEAM.to_owned(), team.clone()),
        ]
        .into()
    } else {
        BTreeMap::new()
    };
    create_by_hand(&cms, "app", labels).await;

    let r = s.sync(&unit_with(cp, &team, &["keep"]), "r2").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert_eq!(keys(&r.left), [format!("ConfigMap {team}/app")], "{r:?}");
    assert!(r.pruned.is_empty(), "{r:?}");
    assert!(
        r.summary()
            .ends_with("pruned 0, left 1 object pontoon did not create"),
        "{}",
        r.summary()
    );
    assert_eq!(owner_of(&cms, "app").await.as_deref(), Some("stranger"));
    let objects = inventory_objects(&client, &team).await.expect("inventory");
    assert!(!objects.contains("\"app\""), "{objects}");
}

#[tokio::test]
async fn an_object_recreated_by_a_stranger_without_pontoons_labels_is_not_pruned() {
    a_replaced_object_survives_its_prune("stranger", false).await;
}

#[tokio::test]
async fn an_object_recreated_with_pontoons_labels_but_a_new_uid_is_not_pruned() {
    a_replaced_object_survives_its_prune("copycat", true).await;
}

/// Whoever can edit ConfigMaps in pontoon's namespace adds objects of another namespace
/// (standing for kube-system) to a unit's inventory, with and without their uid: pontoon
/// deletes neither, and drops both entries.
#[tokio::test]
async fn an_object_added_to_an_inventory_by_hand_is_not_pruned() {
    let cp = control_plane::shared();
    let client = cp.client().await;
    let s = syncer(cp).await;
    let team = unique_name("forged");
    let victim = unique_name("system");
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(victim.clone()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            },
        )
        .await
        .expect("create namespace");
    let cms = configmaps(&client, &victim);
    for name in ["by-uid", "by-name"] {
        create_by_hand(&cms, name, BTreeMap::new()).await;
    }
    let unit = unit_with(cp, &team, &["app"]);
    let r = s.sync(&unit, "r1").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");

    let uid = cms
        .get("by-uid")
        .await
        .expect("get")
        .metadata
        .uid
        .expect("uid");
    let mut objects: Vec<Value> =
        serde_json::from_str(&inventory_objects(&client, &team).await.expect("inventory"))
            .expect("inventory parses");
    let forged = |name: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "namespace": victim, "name": name, "applier": "platform"});
    let mut with_uid = forged("by-uid");
    with_uid["uid"] = json!(uid);
    objects.extend([with_uid, forged("by-name")]);
    write_inventory_objects(
        &client,
        &team,
        &serde_json::to_string(&objects).expect("json"),
    )
    .await;

    let r = s.sync(&unit, "r1").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert_eq!(
        keys(&r.left),
        [
            format!("ConfigMap {victim}/by-name"),
            format!("ConfigMap {victim}/by-uid")
        ],
        "{r:?}"
    );
    for name in ["by-uid", "by-name"] {
        assert_eq!(
            owner_of(&cms, name).await.as_deref(),
            Some("stranger"),
            "{name}"
        );
    }
    let objects = inventory_objects(&client, &team).await.expect("inventory");
    assert!(!objects.contains(&victim), "{objects}");
}

/// An inventory edited to garbage fails the unit naming the ConfigMap and what is wrong;
/// the object the next revision drops is not pruned and the inventory is not overwritten.
/// Deleting the ConfigMap (the recovery README gives) lets the unit sync again.
#[tokio::test]
async fn an_inventory_that_does_not_parse_fails_the_unit_and_prunes_nothing() {
    let cp = control_plane::shared();
    let client = cp.client().await;
    let s = syncer(cp).await;
    let team = unique_name("garbled");
    let r = s.sync(&unit_with(cp, &team, &["a", "b"]), "r1").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    write_inventory_objects(&client, &team, "garbage").await;

    let r = s.sync(&unit_with(cp, &team, &["a"]), "r2").await;
    assert_eq!(r.state, UnitState::Failed, "{r:?}");
    let message = r.message.clone().unwrap_or_default();
    for part in [
        format!("team {team}: inventory ConfigMap pontoon-system/pontoon-inventory-{team}: "),
        "binaryData.objects.gz does not parse as a list of entries: expected value at line 1 column 1"
            .to_owned(),
        "nothing was applied or pruned".to_owned(),
    ] {
        assert!(message.contains(&part), "{part:?} not in {message:?}");
    }
    assert_eq!((r.writes, r.pruned.len()), (0, 0), "{r:?}");
    let cms = configmaps(&client, &team);
    assert!(cms.get_opt("b").await.expect("get").is_some(), "b pruned");
    assert_eq!(
        inventory_objects(&client, &team).await.as_deref(),
        Some("garbage")
    );

    // The operator deletes the inventory: the next sync writes it again and, as this
    // daemon remembers what it applied, prunes b.
    inventories(&client)
        .delete(&format!("pontoon-inventory-{team}"), &Default::default())
        .await
        .expect("delete inventory");
    let r = s.sync(&unit_with(cp, &team, &["a"]), "r2").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert_eq!(keys(&r.pruned), [format!("ConfigMap {team}/b")], "{r:?}");
    let objects = inventory_objects(&client, &team).await.expect("inventory");
    let entries: Vec<Value> = serde_json::from_str(&objects).expect("inventory parses");
    assert_eq!(entries.len(), 4, "{objects}");
    let a_uid = cms.get("a").await.expect("a").metadata.uid;
    let a_entry = entries
        .iter()
        .find(|e| e["name"] == "a")
        .expect("a's entry");
    assert_eq!(a_entry["uid"].as_str(), a_uid.as_deref(), "{objects}");
    assert!(entries.iter().all(|e| e["uid"].is_string()), "{objects}");
}

/// An inventory written before uids were recorded still reads: pontoon's own labelled
/// objects are pruned as before (with their live uid required), and the inventory
/// carries uids from then on.
#[tokio::test]
async fn an_inventory_without_uids_still_prunes_pontoons_own_objects() {
    let cp = control_plane::shared();
    let client = cp.client().await;
    let s = syncer(cp).await;
    let team = unique_name("olduids");
    let r = s.sync(&unit_with(cp, &team, &["a", "b"]), "r1").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    let mut entries: Vec<Value> =
        serde_json::from_str(&inventory_objects(&client, &team).await.expect("inventory"))
            .expect("inventory parses");
    for e in &mut entries {
        let e = e.as_object_mut().expect("entry");
        for field in ["uid", "resourceVersion", "digest"] {
            e.remove(field);
        }
    }
    let old = serde_json::to_string(&entries).expect("json");
    assert!(!old.contains("\"uid\""), "{old}");
    write_old_inventory_objects(&client, &team, &old).await;

    let r = s.sync(&unit_with(cp, &team, &["a"]), "r2").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert_eq!(keys(&r.pruned), [format!("ConfigMap {team}/b")], "{r:?}");
    assert!(r.left.is_empty(), "{r:?}");
    let cms = configmaps(&client, &team);
    assert!(cms.get_opt("b").await.expect("get").is_none());
    let objects = inventory_objects(&client, &team).await.expect("inventory");
    let entries: Vec<Value> = serde_json::from_str(&objects).expect("inventory parses");
    assert!(entries.iter().all(|e| e["uid"].is_string()), "{objects}");
    // Upgraded on that write: compressed, and the old plain list gone.
    let cm = inventories(&client)
        .get(&format!("pontoon-inventory-{team}"))
        .await
        .expect("inventory");
    assert!(!cm.data.unwrap_or_default().contains_key("objects"));
    assert!(
        cm.binary_data
            .unwrap_or_default()
            .contains_key("objects.gz")
    );
}

/// Fenced writes: an inventory write carries the resourceVersion it was read at, so one
/// changed since (by another replica that still believes it leads, or by a person) is
/// refused with a conflict instead of overwritten; a fresh read then writes.
#[tokio::test]
async fn an_inventory_changed_since_it_was_read_is_not_overwritten() {
    use pontoon::sync::inventory::Inventory;

    let cp = control_plane::shared();
    let client = cp.client().await;
    let syncer = syncer(cp).await;
    let team = unique_name("fence-inv");
    let r = syncer.sync(&unit_with(cp, &team, &["a"]), "rev1").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");

    let api = inventories(&client);
    let tn = TeamName(team.clone());
    let owner = pontoon::desired::Owner::default();
    let mut read = Inventory::load(&api, &owner, &tn).await.expect("inventory");
    let mut other = Inventory::load(&api, &owner, &tn).await.expect("inventory");
    other.revision = "written-by-the-other".into();
    other
        .store(&api, &owner, &tn)
        .await
        .expect("the first writer writes");

    read.revision = "stale".into();
    match read.store(&api, &owner, &tn).await {
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        other => panic!("a write at a stale resourceVersion must conflict, got {other:?}"),
    }
    let now = Inventory::load(&api, &owner, &tn).await.expect("inventory");
    assert_eq!(now.revision, "written-by-the-other");
    assert_eq!(
        now.entries, read.entries,
        "the refused write changed nothing"
    );

    let mut fresh = now.clone();
    fresh.revision = "fresh".into();
    fresh
        .store(&api, &owner, &tn)
        .await
        .expect("a fresh read writes");
    fresh.revision = "again".into();
    fresh
        .store(&api, &owner, &tn)
        .await
        .expect("the version a write returns is the next write's");
}
