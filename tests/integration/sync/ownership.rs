//! Who owns what: another team's objects are never taken over, the inventory survives
//! being deleted by hand or a sync killed midway, and what a removed team left behind goes
//! to the team the repo gives it to.

use super::*;

#[tokio::test]
async fn another_teams_object_is_never_taken_over() {
    let cp = control_plane::shared();
    let s = syncer(cp).await;
    let (owner, thief) = (unique_name("owner"), unique_name("thief"));
    let mut objects = team_base(&owner, &[&owner]);
    objects.push(configmap(&owner, &owner, "shared", json!({"who": "owner"})));
    assert_eq!(
        s.sync(&unit_desired(&owner, cp.name, &[&owner], objects), "r1")
            .await
            .state,
        UnitState::Synced
    );

    // The thief's desired state names the owner's object (render checks bypassed), as
    // pontoon's own identity so that only the ownership check can stop it.
    // A namespaced object and a cluster-scoped one (found by different lists).
    let mut stolen = configmap(&thief, &owner, "shared", json!({"who": "thief"}));
    stolen.applier = Applier::Platform;
    let namespace = obj(
        &thief,
        Applier::Platform,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": owner}}),
    );
    let r = s
        .sync(
            &unit_desired(&thief, cp.name, &[], vec![stolen, namespace]),
            "r1",
        )
        .await;
    assert_eq!(r.state, UnitState::Failed, "{r:?}");
    assert_eq!(r.errors.len(), 2, "{r:?}");
    for e in &r.errors {
        assert!(
            e.message.contains(&format!("belongs to team {owner}")),
            "{r:?}"
        );
    }
    assert_eq!(
        cm_data(cp, &owner, "shared").await.as_deref(),
        Some(r#"{"who":"owner"}"#)
    );
}

/// Someone deletes a unit's inventory by hand: the next sync writes it again from what
/// pontoon applied last, also when the repo did not change, and a prune in the same
/// sync still happens.
#[tokio::test]
async fn an_inventory_deleted_by_hand_is_written_again_and_nothing_is_left_behind() {
    let cp = control_plane::shared();
    let s = syncer(cp).await;
    let team = unique_name("lostinv");
    let with = |names: &[&str]| {
        let mut objects = team_base(&team, &[&team]);
        for n in names {
            objects.push(configmap(&team, &team, n, json!({"k": "1"})));
        }
        unit_desired(&team, cp.name, &[&team], objects)
    };
    let r = s.sync(&with(&["a", "b"]), "r1").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    let inventories: Api<ConfigMap> = Api::namespaced(cp.client().await, "pontoon-system");
    let name = format!("pontoon-inventory-{team}");
    let gone = || async {
        inventories
            .delete(&name, &Default::default())
            .await
            .expect("delete inventory");
    };

    // The repo did not change: not a no-op, the inventory comes back.
    gone().await;
    let r = s.sync(&with(&["a", "b"]), "r1").await;
    assert_eq!((r.state, r.writes), (UnitState::Synced, 1), "{r:?}");
    assert!(inventories.get_opt(&name).await.expect("get").is_some());

    // Gone again, and the next commit drops b: b is pruned all the same.
    gone().await;
    let r = s.sync(&with(&["a"]), "r2").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert_eq!(keys(&r.pruned), [format!("ConfigMap {team}/b")]);
    assert_eq!(cm_data(cp, &team, "b").await, None);
    let objects = crate::support::inventory::inventory_objects(&cp.client().await, &team)
        .await
        .expect("inventory");
    assert!(!objects.contains("\"b\""), "{objects}");
}

/// A team renamed in the repo: the old name's removal prunes its objects but keeps its
/// Namespace (the platform does not let pontoon delete Namespaces), labelled with the old
/// name. Once that removal is done, nobody holds the Namespace, and the new name takes it
/// instead of failing on it for good.
#[tokio::test]
async fn what_a_removed_team_left_behind_goes_to_the_team_the_repo_gives_it() {
    let cp = control_plane::shared();
    let s = syncer(cp).await;
    let (old, heir) = (unique_name("old"), unique_name("heir"));
    let mut objects = team_base(&old, &[&old]);
    objects.push(configmap(&old, &old, "app", json!({"x": "1"})));
    let r = s
        .sync(&unit_desired(&old, cp.name, &[&old], objects), "r1")
        .await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");

    // The heir takes the namespace while the old team is still there: refused.
    let mut objects = team_base(&heir, &[&old]);
    objects.push(configmap(&heir, &old, "app", json!({"x": "2"})));
    let heirs = unit_desired(&heir, cp.name, &[&old], objects);
    let r = s.sync(&heirs, "r2").await;
    assert_eq!(r.state, UnitState::Failed, "{r:?}");
    assert!(
        r.errors
            .iter()
            .any(|e| e.message.contains(&format!("belongs to team {old}"))),
        "{r:?}"
    );

    let policy = PrunePolicy {
        max_share: 1.0,
        ..PrunePolicy::default()
    };
    let r = s.remove_team(&TeamName(old.clone()), &policy, "r2").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert!(r.kept.iter().any(|k| k.kind == "Namespace"), "{r:?}");

    let r = s.sync(&heirs, "r2").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(cp.client().await);
    let ns = namespaces.get(&old).await.expect("namespace kept");
    assert_eq!(
        ns.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("pontoon.dev/team"))
            .map(String::as_str),
        Some(heir.as_str())
    );
    assert_eq!(
        cm_data(cp, &old, "app").await.as_deref(),
        Some(r#"{"x":"2"}"#)
    );
}

#[tokio::test]
async fn a_sync_killed_midway_leaves_no_orphans_after_a_restart() {
    let cp = control_plane::shared();
    let team = unique_name("crash");
    let all = |n: usize| {
        let mut objects = team_base(&team, &[&team]);
        for i in 0..n {
            objects.push(configmap(
                &team,
                &team,
                &format!("cm{i:03}"),
                json!({"i": i.to_string()}),
            ));
        }
        let mut d = unit_desired(&team, cp.name, &[&team], objects);
        d.prune.max_share = 1.0;
        d
    };
    let v1 = all(600);
    let first = Arc::new(syncer(cp).await);
    let task = {
        let (s, d) = (first.clone(), v1.clone());
        tokio::spawn(async move { s.sync(&d, "r1").await })
    };
    // Stop it (as kill -9 would) once part of the unit exists.
    let cms: Api<ConfigMap> = Api::namespaced(cp.client().await, &team);
    crate::support::control_plane::eventually(
        "a partial apply",
        Duration::from_secs(30),
        || async {
            let n = cms
                .list(&Default::default())
                .await
                .map(|l| l.items.len())
                .unwrap_or(0);
            (n >= 1).then_some(())
        },
    )
    .await;
    task.abort();
    let partial = cms
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .len();
    assert!(
        partial < 200,
        "the sync finished before it was stopped ({partial} objects)"
    );

    // A restarted pontoon (nothing in memory) syncs the next revision, which dropped
    // most of the objects: everything the killed sync created is accounted for.
    let restarted = syncer(cp).await;
    let v2 = all(100);
    let r = restarted.sync(&v2, "r2").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    let mut names = control_plane::configmap_names(&cms).await;
    names.retain(|n| n.starts_with("cm"));
    assert_eq!(
        names.len(),
        100,
        "no orphan from the killed sync survives: {names:?}"
    );
    assert!(names.iter().all(|n| n.as_str() < "cm100"), "{names:?}");
}

/// The team Role names resources as discovery does: a kind whose English plural guess is
/// wrong (`Endpoints`, guessed `endpointses`) is still the team's to apply, through its
/// own impersonated identity.
#[tokio::test]
async fn the_team_role_names_resources_as_the_cluster_serves_them() {
    let cp = control_plane::shared();
    let s = syncer(cp).await;
    let team = unique_name("plural");
    let app = "apiVersion: v1\nkind: Endpoints\nmetadata: {name: external-db}\nsubsets:\n  - addresses: [{ip: 10.1.2.3}]\n    ports: [{port: 5432}]\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {k: v}\n";
    let allowed = "{group: \"\", kind: Endpoints}, {group: \"\", kind: ConfigMap}";
    let u = rendered_unit(cp, &team, &team, allowed, app, "r1");
    let rendered: Vec<String> = u
        .objects
        .iter()
        .filter(|o| o.key().is_some_and(|k| k.kind == "Role"))
        .flat_map(|o| {
            o.object["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|r| r["resources"].as_array().cloned().unwrap_or_default())
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        rendered.contains(&"endpointses".to_owned()),
        "the render, with no cluster, guesses: {rendered:?}"
    );
    let r = s.sync(&u, "r1").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(cp.client().await, &team);
    let role = roles.get(TEAM_ROLE).await.expect("team role");
    let resources: Vec<String> = role
        .rules
        .unwrap_or_default()
        .into_iter()
        .flat_map(|r| r.resources.unwrap_or_default())
        .collect();
    assert!(
        resources.contains(&"endpoints".to_owned())
            && !resources.contains(&"endpointses".to_owned()),
        "{resources:?}"
    );
    // A second sync changes nothing: the named Role is what the last one applied.
    let again = s.sync(&u, "r1").await;
    assert_eq!(
        (again.state, again.writes),
        (UnitState::Synced, 0),
        "{again:?}"
    );
}
