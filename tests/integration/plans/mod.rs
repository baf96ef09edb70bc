//! Plans say what the sync would do, against the real apiserver: a revision that adds a
//! namespace plans what it would create there without an error; a unit the mass-deletion
//! hold would stop is shown held, with the sync's own message, and with what it would
//! delete once released; what the sync refuses (`namespace-exists`, `object-exists`,
//! another team's object) the plan refuses too; and a plan of an unchanged repository
//! asks the server for no dry run at all (counted in the apiserver's audit log). The
//! command and pull-request plans, end to end, in `commands`.

mod commands;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use pontoon::desired::*;
use pontoon::sync::plan::{Action, UnitPlan};
use pontoon::sync::{SyncOptions, UnitResult, UnitState};
use serde_json::json;

use crate::support::audit;
use crate::support::control_plane::{self, ControlPlane, eventually, unique_name};
use crate::support::fixtures::*;
use crate::sync::syncer;

fn actions(plan: &UnitPlan) -> BTreeMap<String, Action> {
    plan.objects
        .iter()
        .map(|o| (o.object.clone(), o.action.clone()))
        .collect()
}

/// The objects a plan says would be created, changed or pruned, by name.
fn planned(plan: &UnitPlan, want: fn(&Action) -> bool) -> BTreeSet<String> {
    plan.objects
        .iter()
        .filter(|o| want(&o.action))
        .map(|o| o.object.clone())
        .collect()
}

fn created(a: &Action) -> bool {
    matches!(a, Action::Create | Action::CreateUnchecked { .. })
}

fn names(keys: &[ObjectKey]) -> BTreeSet<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

async fn namespace_exists(cp: &ControlPlane, ns: &str) -> bool {
    Api::<Namespace>::all(cp.client().await)
        .get_opt(ns)
        .await
        .expect("get namespace")
        .is_some()
}

/// A ConfigMap made with the admin client, carrying `labels`.
async fn configmap_made(cp: &ControlPlane, ns: &str, name: &str, labels: &[(&str, &str)]) {
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(ns.to_owned()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        data: Some([("owner".to_owned(), "someone else".to_owned())].into()),
        ..ConfigMap::default()
    };
    Api::<ConfigMap>::namespaced(cp.client().await, ns)
        .create(&PostParams::default(), &cm)
        .await
        .expect("create configmap");
}

/// Applied without an error (a Deployment stays Progressing: the control plane runs no
/// controllers).
fn assert_synced(r: &UnitResult) {
    assert!(
        matches!(r.state, UnitState::Synced | UnitState::Progressing) && r.errors.is_empty(),
        "{r:?}"
    );
}

#[tokio::test]
async fn a_revision_adding_a_namespace_plans_what_it_would_create_there() {
    let cp = control_plane::shared();
    let s = syncer(cp).await;
    let team = unique_name("plan-newns");
    let added = format!("{team}-more");
    let mut objects = team_base(&team, &[&team]);
    objects.push(configmap(&team, &team, "a", json!({"k": "1"})));
    assert_synced(
        &s.sync(&unit_desired(&team, cp.name, &[&team], objects), "r1")
            .await,
    );

    // The next revision adds a namespace, the team's Role there, and objects in it.
    let mut objects = team_base(&team, &[&team, &added]);
    objects.push(configmap(&team, &team, "a", json!({"k": "1"})));
    objects.push(configmap(&team, &added, "b", json!({"k": "2"})));
    objects.push(deployment(&team, &added, "web", "nginx:1.27", 1));
    let u = unit_desired(&team, cp.name, &[&team, &added], objects.clone());
    let first = s.plan(&u).await.expect("plan");
    let got = actions(&first);
    assert_eq!(first.summary(), "+5 ~0 -0", "{first:#?}");
    // The Namespace itself is dry-run; what goes into it cannot be yet.
    assert_eq!(got[&format!("Namespace/{added}")], Action::Create);
    let rbac = "rbac.authorization.k8s.io";
    for object in [
        format!("Role.{rbac} {added}/pontoon-team"),
        format!("RoleBinding.{rbac} {added}/pontoon-team"),
        format!("ConfigMap {added}/b"),
        format!("Deployment.apps {added}/web"),
    ] {
        match &got[&object] {
            Action::CreateUnchecked { unchecked } => assert!(
                unchecked.contains(&format!("namespace {added} comes with this same sync")),
                "{object}: {unchecked}"
            ),
            other => panic!("{object}: {other:?}"),
        }
    }
    for object in [format!("Namespace/{team}"), format!("ConfigMap {team}/a")] {
        assert_eq!(got[&object], Action::Unchanged, "{object}");
    }
    assert!(!namespace_exists(cp, &added).await, "a plan writes nothing");

    // What can be checked without the namespace still is: a kind the cluster does not
    // serve, and a cluster-scoped kind given a namespace, are refused in it too.
    let mut wrong = objects.clone();
    wrong.push(obj(
        &team,
        Applier::Team,
        json!({"apiVersion": "example.pontoon.dev/v1", "kind": "Nonesuch", "metadata": {"name": "g", "namespace": added}}),
    ));
    wrong.push(obj(
        &team,
        Applier::Platform,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": format!("{team}-reader"), "namespace": added}, "rules": []}),
    ));
    let plan = s
        .plan(&unit_desired(&team, cp.name, &[&team, &added], wrong))
        .await
        .expect("plan");
    let refused: BTreeMap<String, String> = plan
        .objects
        .iter()
        .filter_map(|o| match &o.action {
            Action::Error { message } => Some((o.object.clone(), message.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(refused.len(), 2, "{plan:#?}");
    assert!(
        refused[&format!("Nonesuch.example.pontoon.dev {added}/g")].contains("not served"),
        "{refused:?}"
    );
    assert!(
        refused[&format!("ClusterRole.{rbac} {added}/{team}-reader")]
            .contains("cluster-scoped but the object has metadata.namespace"),
        "{refused:?}"
    );

    // The sync creates what the plan said it would.
    let r = s.sync(&u, "r2").await;
    assert_synced(&r);
    assert_eq!(names(&r.created), planned(&first, created));
}

/// The team's unit: its base and a ConfigMap per name, applied as the team.
fn unit_with(cp: &ControlPlane, team: &str, names: &[&str]) -> UnitDesired {
    let mut objects = team_base(team, &[team]);
    for n in names {
        objects.push(configmap(team, team, n, json!({"k": "1"})));
    }
    unit_desired(team, cp.name, &[team], objects)
}

/// `kubectl annotate` of the unit's inventory, as a platform owner releases it.
fn release(cp: &ControlPlane, team: &str, revision: &str) {
    let out = cp.kubectl(&[
        "-n",
        &SyncOptions::default().namespace,
        "annotate",
        "configmap",
        &format!("pontoon-inventory-{team}"),
        &format!("pontoon.dev/release={revision}"),
        "--overwrite",
    ]);
    assert!(out.status.success(), "kubectl annotate: {out:?}");
}

#[tokio::test]
async fn a_plan_shows_the_hold_as_the_sync_decides_it_and_what_it_would_delete() {
    let cp = control_plane::shared();
    let s = syncer(cp).await;
    let team = unique_name("plan-held");
    assert_synced(
        &s.sync(&unit_with(cp, &team, &["a", "b", "c", "d"]), "r1")
            .await,
    );

    // Three of the team's four objects go: over the default share of one half.
    let u = unit_with(cp, &team, &["a"]);
    let plan = s.plan_at(&u, "r2").await.expect("plan");
    let held = plan
        .held
        .clone()
        .unwrap_or_else(|| panic!("not held: {plan:#?}"));
    let gone: BTreeSet<String> = ["b", "c", "d"]
        .iter()
        .map(|n| format!("ConfigMap {team}/{n}"))
        .collect();
    assert_eq!(planned(&plan, |a| *a == Action::Prune), gone, "{plan:#?}");
    assert_eq!(plan.summary(), "+0 ~0 -3 held");
    // Exactly what the sync says when it holds the unit.
    let r = s.sync(&u, "r2").await;
    assert_eq!(r.state, UnitState::OutOfSync, "{r:?}");
    assert_eq!(r.message.as_deref(), Some(held.as_str()));
    assert_eq!(names(&r.held), gone);

    // Released for r2: the plan of r2 goes ahead, that of another revision is held still.
    release(cp, &team, "r2");
    let plan = s.plan_at(&u, "r2").await.expect("plan");
    assert_eq!(plan.held, None, "{plan:#?}");
    assert!(
        plan.released_by
            .as_deref()
            .is_some_and(|by| by.starts_with("kubectl-annotate")),
        "{plan:#?}"
    );
    assert_eq!(planned(&plan, |a| *a == Action::Prune), gone);
    let other = s.plan_at(&u, "r3").await.expect("plan");
    assert!(
        other.held.is_some() && other.released_by.is_none(),
        "{other:#?}"
    );
    // A plan does not use the release up: the sync of r2 deletes what the plan said.
    let r = s.sync(&u, "r2").await;
    assert_synced(&r);
    assert_eq!(names(&r.pruned), gone);
}

#[tokio::test]
async fn a_plan_refuses_what_the_sync_refuses() {
    let cp = control_plane::shared();
    let s = syncer(cp).await;
    let (team, other) = (unique_name("plan-own"), unique_name("plan-other"));
    let by_hand = unique_name("plan-hand");
    assert_synced(&s.sync(&unit_with(cp, &team, &["a"]), "r1").await);
    assert_synced(&s.sync(&unit_with(cp, &other, &["x"]), "r1").await);
    // Made by hand: a namespace, a ConfigMap in the team's namespace; and a ConfigMap in
    // the team's namespace that the other team's labels claim.
    Api::<Namespace>::all(cp.client().await)
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(by_hand.clone()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            },
        )
        .await
        .expect("create namespace");
    configmap_made(cp, &team, "settings", &[]).await;
    configmap_made(
        cp,
        &team,
        "theirs",
        &[(LABEL_MANAGED_BY, MANAGED_BY_VALUE), (LABEL_TEAM, &other)],
    )
    .await;

    let mut objects = team_base(&team, &[&team, &by_hand]);
    for (ns, name) in [(&team, "a"), (&team, "settings"), (&team, "theirs")] {
        objects.push(configmap(&team, ns, name, json!({"k": "1"})));
    }
    objects.push(configmap(&team, &by_hand, "inside", json!({"k": "1"})));
    let mut u = unit_desired(&team, cp.name, &[&team, &by_hand], objects);
    let plan = s.plan_at(&u, "r2").await.expect("plan");
    let refused = |plan: &UnitPlan| -> BTreeMap<String, String> {
        plan.objects
            .iter()
            .filter_map(|o| match &o.action {
                Action::Error { message } => Some((o.object.clone(), message.clone())),
                _ => None,
            })
            .collect()
    };
    let planned_refusals = refused(&plan);
    let rule = |object: &str| planned_refusals.get(object).cloned().unwrap_or_default();
    let rbac = "rbac.authorization.k8s.io";
    for object in [
        format!("Namespace/{by_hand}"),
        format!("Role.{rbac} {by_hand}/pontoon-team"),
        format!("RoleBinding.{rbac} {by_hand}/pontoon-team"),
        format!("ConfigMap {by_hand}/inside"),
    ] {
        assert!(
            rule(&object).contains("error[namespace-exists]"),
            "{object}: {planned_refusals:#?}"
        );
    }
    assert!(
        rule(&format!("ConfigMap {team}/settings")).contains("error[object-exists]"),
        "{planned_refusals:#?}"
    );
    assert!(
        rule(&format!("ConfigMap {team}/theirs")).starts_with(&format!(
            "belongs to team {other}; pontoon does not take over another team's object"
        )),
        "{planned_refusals:#?}"
    );
    assert_eq!(planned_refusals.len(), 6, "{planned_refusals:#?}");
    assert_eq!(plan.summary(), "+0 ~0 -0 !6");

    // The sync refuses the same, in the same words.
    let r = s.sync(&u, "r2").await;
    assert_eq!(r.state, UnitState::Failed, "{r:?}");
    for e in &r.errors {
        assert!(
            rule(&e.object).starts_with(&e.message),
            "the sync's {e:?} is not in the plan: {planned_refusals:#?}"
        );
    }
    let sync_refused: BTreeSet<&String> = r.errors.iter().map(|e| &e.object).collect();
    assert_eq!(sync_refused.len(), 3, "{r:?}");

    // Adopted by platform.yaml, the namespace and the ConfigMap are the team's to take.
    // The team's Role there comes with the same sync, so the team's ConfigMap in it is
    // dry-run as pontoon once the team's own dry run is Forbidden.
    let adopt = |kind: &str, namespace: &str, name: &str| Adoption {
        key: ObjectKey {
            group: String::new(),
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        },
        reason: "made before pontoon".to_owned(),
        source: SourceRef {
            file: "platform.yaml".to_owned(),
            line: 1,
        },
    };
    u.adopt = vec![
        adopt("Namespace", "", &by_hand),
        adopt("ConfigMap", &team, "settings"),
    ];
    let plan = s.plan_at(&u, "r2").await.expect("plan");
    let left: Vec<String> = refused(&plan).into_keys().collect();
    assert_eq!(left, [format!("ConfigMap {team}/theirs")], "{plan:#?}");
    assert!(
        matches!(
            actions(&plan)[&format!("ConfigMap {team}/settings")],
            Action::Update { .. }
        ),
        "{plan:#?}"
    );
}

#[tokio::test]
async fn an_unchanged_repository_plans_with_no_dry_run() {
    let cp = control_plane::shared();
    let s = syncer(cp).await;
    let team = unique_name("plan-still");
    let mut objects = team_base(&team, &[&team]);
    for n in ["a", "b", "c"] {
        objects.push(configmap(&team, &team, n, json!({"k": n})));
    }
    objects.push(deployment(&team, &team, "web", "nginx:1.27", 2));
    let u = unit_desired(&team, cp.name, &[&team], objects.clone());
    assert_synced(&s.sync(&u, "r1").await);

    let unchanged_at = Timestamp::now();
    let plan = s.plan_at(&u, "r1").await.expect("plan");
    assert_eq!(plan.summary(), "+0 ~0 -0, nothing to do", "{plan:#?}");
    assert!(
        plan.objects.iter().all(|o| o.action == Action::Unchanged),
        "{plan:#?}"
    );

    // One object changes: the plan dry-runs that one and no other.
    let changed_at = Timestamp::now();
    objects.retain(|o| o.key().is_some_and(|k| k.name != "b"));
    objects.push(configmap(&team, &team, "b", json!({"k": "changed"})));
    let plan = s
        .plan_at(&unit_desired(&team, cp.name, &[&team], objects), "r2")
        .await
        .expect("plan");
    assert_eq!(plan.summary(), "+0 ~1 -0", "{plan:#?}");
    // The audit log is written once each request is answered: wait for the one dry run,
    // by then the first plan's would be there too.
    let changed = eventually(
        "the changed object's dry run in the audit log",
        Duration::from_secs(30),
        || async {
            Some(audit::dry_runs_in(cp.dir(), &team, changed_at)).filter(|d| !d.is_empty())
        },
    )
    .await;
    let names: Vec<String> = changed
        .iter()
        .filter_map(|e| e.object_ref.as_ref().map(|o| o.name.clone()))
        .collect();
    assert_eq!(names, ["b"], "{changed:#?}");
    let unchanged: Vec<String> = audit::dry_runs_in(cp.dir(), &team, unchanged_at)
        .iter()
        .filter(|e| e.received() < changed_at)
        .map(audit::Event::describe)
        .collect();
    assert!(
        unchanged.is_empty(),
        "a plan of an unchanged repository sent dry runs: {unchanged:#?}"
    );
}

#[tokio::test]
async fn a_team_claiming_the_inventory_namespace_plans_to_the_syncs_one_error() {
    let cp = control_plane::shared();
    let team = unique_name("plan-claims");
    let cluster =
        pontoon::cluster::Cluster::from_config(ClusterName(cp.name.into()), cp.config().await, 16)
            .expect("cluster");
    let options = SyncOptions {
        namespace: team.clone(),
        ..SyncOptions::default()
    };
    let s = pontoon::sync::Syncer::new(std::sync::Arc::new(cluster), options);
    let mut objects = team_base(&team, &[&team]);
    objects.push(configmap(&team, &team, "a", json!({})));
    let u = unit_desired(&team, cp.name, &[&team], objects);
    let plan = s.plan(&u).await.expect("plan");
    let r = s.sync(&u, "r1").await;
    assert_eq!(r.errors.len(), 1, "{r:?}");
    assert_eq!(plan.objects.len(), 1, "{plan:#?}");
    assert_eq!(plan.objects[0].object, r.errors[0].object);
    assert_eq!(
        plan.objects[0].action,
        Action::Error {
            message: r.errors[0].message.clone()
        }
    );
}

#[tokio::test]
async fn a_plan_says_what_the_prune_would_keep_as_the_sync_keeps_it() {
    let cp = control_plane::shared();
    let s = syncer(cp).await;
    let team = unique_name("plan-keep");
    let second = format!("{team}-two");
    let mut kept = configmap(&team, &team, "kept", json!({"k": "1"}));
    let mut manifest = (*kept.object).clone();
    manifest["metadata"]["annotations"] = json!({ANNOTATION_PRUNE: "disabled"});
    kept.object = manifest.into();
    let mut objects = team_base(&team, &[&team, &second]);
    objects.push(configmap(&team, &team, "a", json!({"k": "1"})));
    objects.push(configmap(&team, &second, "b", json!({"k": "1"})));
    objects.push(kept);
    let mut u = unit_desired(&team, cp.name, &[&team, &second], objects);
    u.prune.max_share = 1.0;
    assert_synced(&s.sync(&u, "r1").await);

    // The second namespace and the marked ConfigMap leave the repo.
    let mut objects = team_base(&team, &[&team]);
    objects.push(configmap(&team, &team, "a", json!({"k": "1"})));
    let mut u = unit_desired(&team, cp.name, &[&team], objects);
    u.prune.max_share = 1.0;
    let plan = s.plan(&u).await.expect("plan");
    let got = actions(&plan);
    let reason = |object: &str| match &got[object] {
        Action::Keep { reason } => reason.clone(),
        other => panic!("{object}: {other:?}"),
    };
    assert!(
        reason(&format!("Namespace/{second}")).contains("does not let pontoon delete Namespaces"),
        "{plan:#?}"
    );
    assert!(
        reason(&format!("ConfigMap {team}/kept")).contains("pontoon.dev/prune: disabled"),
        "{plan:#?}"
    );
    let r = s.sync(&u, "r2").await;
    assert_synced(&r);
    assert_eq!(
        names(&r.kept),
        planned(&plan, |a| matches!(a, Action::Keep { .. }))
    );
    assert_eq!(names(&r.pruned), planned(&plan, |a| *a == Action::Prune));
    assert_eq!(
        r.pruned.len(),
        3,
        "the Role, RoleBinding and ConfigMap: {r:?}"
    );
}

/// An object the repo drops that someone deleted and made again under its name (no
/// pontoon labels, another uid): the sync leaves it, and the plan says so instead of
/// showing a delete.
#[tokio::test]
async fn a_plan_shows_what_the_prune_would_leave_as_not_pontoons() {
    let cp = control_plane::shared();
    let s = syncer(cp).await;
    let team = unique_name("plan-left");
    assert_synced(
        &s.sync(&unit_with(cp, &team, &["a", "b", "c", "d", "e"]), "r1")
            .await,
    );
    Api::<ConfigMap>::namespaced(cp.client().await, &team)
        .delete("b", &Default::default())
        .await
        .expect("delete b");
    configmap_made(cp, &team, "b", &[]).await;

    let next = unit_with(cp, &team, &["a", "d", "e"]);
    let plan = s.plan(&next).await.expect("plan");
    let got = actions(&plan);
    match &got[&format!("ConfigMap {team}/b")] {
        Action::Keep { reason } => assert!(
            reason.starts_with("pontoon did not create what is there now: ")
                && reason.contains("does not carry pontoon's labels"),
            "{reason}"
        ),
        other => panic!("b: {other:?}"),
    }
    assert_eq!(got[&format!("ConfigMap {team}/c")], Action::Prune);
    let r = s.sync(&next, "r2").await;
    assert_synced(&r);
    assert_eq!(
        names(&r.left),
        BTreeSet::from([format!("ConfigMap {team}/b")])
    );
    assert_eq!(names(&r.pruned), planned(&plan, |a| *a == Action::Prune));
}
