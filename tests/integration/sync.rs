//! The sync engine against a real kube-apiserver: create, update, no-op, prune and every
//! safety rule, impersonation, and health.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};
use pontoon::cluster::{Cluster, gvk_of};
use pontoon::desired::*;
use pontoon::sync::{SyncOptions, Syncer, UnitState};
use serde_json::json;

use crate::support::control_plane::{self, ControlPlane, eventually, unique_name};
use crate::support::fixtures::*;
use crate::support::slow_link::SlowLink;

async fn syncer(cp: &ControlPlane) -> Syncer {
    let cluster =
        Cluster::from_config(ClusterName(cp.name.into()), cp.config().await, 16).expect("cluster");
    Syncer::new(Arc::new(cluster), SyncOptions::default())
}

fn keys(v: &[ObjectKey]) -> Vec<String> {
    v.iter().map(|k| k.to_string()).collect()
}

async fn cm_data(cp: &ControlPlane, ns: &str, name: &str) -> Option<String> {
    let api: Api<ConfigMap> = Api::namespaced(cp.client().await, ns);
    api.get_opt(name)
        .await
        .expect("get configmap")
        .map(|c| serde_json::to_string(&c.data).expect("json"))
}

/// The one unit a platform repo of one team renders on `cp`, through the real renderer:
/// `allowed` kinds as plain manifests (and whole units prunable), the team in `namespace`,
/// its `app` file.
fn rendered_unit(
    cp: &ControlPlane,
    team: &str,
    namespace: &str,
    allowed: &str,
    app: &str,
    rev: &str,
) -> UnitDesired {
    let mut f = pontoon::render::Files::new();
    f.insert(
        "platform.yaml".into(),
        format!("apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {{name: p}}\nspec:\n  clusters: [{{name: {}}}]\n  policy:\n    allowedKinds: [{allowed}]\n    prune: {{maxShare: 1.0}}\n", cp.name).into_bytes(),
    );
    f.insert(
        format!("teams/{team}/team.yaml"),
        format!("apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {team}}}\nspec:\n  namespaces: [{namespace}]\n  clusters: {{names: [{}]}}\n", cp.name).into_bytes(),
    );
    f.insert(format!("teams/{team}/app.yaml"), app.as_bytes().to_vec());
    let state = pontoon::render::render(&f, rev);
    assert!(state.diagnostics.is_empty(), "{:?}", state.diagnostics);
    state.units.into_values().next().expect("one unit")
}

#[tokio::test]
async fn units_starting_together_ask_discovery_once_per_group_version() {
    let cp = control_plane::shared();
    let cluster =
        Cluster::from_config(ClusterName(cp.name.into()), cp.config().await, 16).expect("cluster");
    let kinds = [
        ("v1", "Namespace"),
        ("v1", "ConfigMap"),
        ("v1", "Service"),
        ("apps/v1", "Deployment"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ];
    // A hundred units, each resolving its kinds, all at once.
    let resolves = (0..100)
        .flat_map(|_| kinds.iter())
        .map(|(api_version, kind)| {
            let gvk = gvk_of(api_version, kind);
            let cluster = &cluster;
            async move { cluster.resolve(&gvk).await }
        });
    for r in futures::future::join_all(resolves).await {
        r.expect("resolved");
    }
    assert_eq!(cluster.discovery_requests(), 3, "v1, apps/v1, rbac/v1");
    for (api_version, kind, plural, namespaced) in [
        ("v1", "Namespace", "namespaces", false),
        ("apps/v1", "Deployment", "deployments", true),
    ] {
        let r = cluster
            .resolve(&gvk_of(api_version, kind))
            .await
            .expect("resolved");
        assert_eq!(
            (r.resource.plural.as_str(), r.namespaced),
            (plural, namespaced)
        );
    }
    // A kind the server does not serve is an error naming it, asked about again next time
    // (a CRD may bring it).
    let missing = cluster.resolve(&gvk_of("apps/v1", "Nonexistent")).await;
    let message = missing.expect_err("no such kind").to_string();
    assert!(message.contains("Nonexistent"), "{message}");
    assert_eq!(cluster.discovery_requests(), 4);
}

#[tokio::test]
async fn create_update_prune_and_rollback() {
    let cp = control_plane::shared();
    let s = syncer(cp).await;
    let team = unique_name("orders");
    let ns = team.clone();
    let mut v1 = team_base(&team, &[&ns]);
    v1.push(configmap(&team, &ns, "a", json!({"k": "1"})));
    v1.push(configmap(&team, &ns, "b", json!({"k": "1"})));
    v1.push(configmap(&team, &ns, "c", json!({"k": "1"})));
    let v1 = unit_desired(&team, cp.name, &[&ns], v1);

    let r = s.sync(&v1, "rev1").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert_eq!(r.created.len(), 6, "{r:?}");
    // The inventory is written once, before the applies: it already is the final one.
    assert_eq!(r.writes, 7, "six applies and one inventory write: {r:?}");
    assert_eq!(cm_data(cp, &ns, "a").await.as_deref(), Some(r#"{"k":"1"}"#));

    // v2: change a, drop c.
    let mut v2 = team_base(&team, &[&ns]);
    v2.push(configmap(&team, &ns, "a", json!({"k": "2"})));
    v2.push(configmap(&team, &ns, "b", json!({"k": "1"})));
    let v2 = unit_desired(&team, cp.name, &[&ns], v2);
    let r = s.sync(&v2, "rev2").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert_eq!(keys(&r.updated), [format!("ConfigMap {ns}/a")]);
    assert_eq!(keys(&r.pruned), [format!("ConfigMap {ns}/c")]);
    assert_eq!(r.unchanged, 4);
    assert_eq!(cm_data(cp, &ns, "a").await.as_deref(), Some(r#"{"k":"2"}"#));
    assert_eq!(cm_data(cp, &ns, "c").await, None);

    // Rollback to rev1: c comes back, a returns to 1.
    let r = s.sync(&v1, "rev1").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert_eq!(keys(&r.created), [format!("ConfigMap {ns}/c")]);
    assert_eq!(keys(&r.updated), [format!("ConfigMap {ns}/a")]);
    assert_eq!(cm_data(cp, &ns, "a").await.as_deref(), Some(r#"{"k":"1"}"#));
    assert!(cm_data(cp, &ns, "c").await.is_some());

    // The inventory records the revision and every object.
    let inv: Api<ConfigMap> = Api::namespaced(cp.client().await, "pontoon-system");
    let inv = inv
        .get(&format!("pontoon-inventory-{team}"))
        .await
        .expect("inventory");
    let data = inv.data.expect("data");
    assert_eq!(data["revision"], "rev1");
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&data["objects"])
            .expect("json")
            .len(),
        6
    );
}

#[tokio::test]
async fn an_apply_left_unanswered_stays_in_the_inventory_and_is_pruned_later() {
    let cp = control_plane::shared();
    let s = syncer(cp).await;
    let team = unique_name("unanswered");
    let ns = team.clone();
    let v1 = unit_desired(&team, cp.name, &[&ns], team_base(&team, &[&ns]));
    let r = s.sync(&v1, "rev1").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");

    // The link to the apiserver turns slow: requests arrive at once, answers come later
    // than the apply timeout. The server carries out an apply pontoon gave up on.
    let mut config = cp.config().await;
    let upstream = config
        .cluster_url
        .authority()
        .expect("authority")
        .as_str()
        .parse()
        .expect("socket address");
    let link = SlowLink::start(upstream).await;
    config.cluster_url = format!("https://{}", link.addr).parse().expect("url");
    let cluster = Cluster::from_config(ClusterName(cp.name.into()), config, 16).expect("cluster");
    cluster
        .resolve(&gvk_of("v1", "ConfigMap"))
        .await
        .expect("discovery");
    // Connections opened now, while the link is fast: a new one could not finish its
    // TLS handshake within the apply timeout, and no request would reach the server.
    let warm: Api<ConfigMap> = Api::namespaced(cluster.client().clone(), &ns);
    let params = kube::api::ListParams::default();
    let lists = (0..12).map(|_| warm.list(&params));
    for l in futures::future::join_all(lists).await {
        l.expect("list");
    }
    link.set_delay(Duration::from_millis(1000));
    let slow = Syncer::new(
        Arc::new(cluster),
        SyncOptions {
            apply_timeout: Duration::from_millis(300),
            ..SyncOptions::default()
        },
    );
    let mut v2 = team_base(&team, &[&ns]);
    v2.push(configmap(&team, &ns, "late", json!({"k": "1"})));
    let r = slow
        .sync(&unit_desired(&team, cp.name, &[&ns], v2), "rev2")
        .await;
    assert_eq!(r.state, UnitState::Failed, "{r:?}");
    assert!(
        r.errors
            .iter()
            .any(|e| e.object.ends_with("/late") && e.message.contains("timed out")),
        "{r:?}"
    );
    eventually(
        "the server created it anyway",
        Duration::from_secs(10),
        || async { cm_data(cp, &ns, "late").await },
    )
    .await;

    // The next commit no longer has it: pontoon prunes it like any object it applied.
    let r = s.sync(&v1, "rev3").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert!(
        keys(&r.pruned).iter().any(|k| k.ends_with("/late")),
        "the object is pruned, not orphaned: {r:?}"
    );
    assert_eq!(cm_data(cp, &ns, "late").await, None);
}

#[tokio::test]
async fn a_resync_with_nothing_changed_sends_no_write_request() {
    let cp = control_plane::quiet();
    let s = syncer(cp).await;
    let team = unique_name("quiet");
    let mut objects = team_base(&team, &[&team]);
    for i in 0..20 {
        objects.push(configmap(
            &team,
            &team,
            &format!("cm{i}"),
            json!({"i": i.to_string()}),
        ));
    }
    // A Service: the apiserver defaults and allocates fields we never wrote.
    objects.push(obj(
        &team,
        Applier::Team,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": team},
               "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
    ));
    let desired = unit_desired(&team, cp.name, &[&team], objects);
    let first = s.sync(&desired, "r1").await;
    assert_eq!(first.state, UnitState::Synced, "{first:?}");
    assert!(first.writes >= 24, "{}", first.writes);

    // Give the apiserver's own bookkeeping writes (none expected) a moment, then count.
    let before = cp.write_requests();
    for _ in 0..3 {
        let r = s.sync(&desired, "r1").await;
        assert_eq!(r.state, UnitState::Synced, "{r:?}");
        assert_eq!(r.writes, 0, "{r:?}");
        assert_eq!(r.unchanged, 24);
    }
    let after = cp.write_requests();
    assert_eq!(
        after - before,
        0,
        "kube-apiserver counted {} write requests during no-op resyncs",
        after - before
    );

    // A new Syncer (a restarted daemon) remembers nothing but still writes nothing:
    // it asks with dry runs, which the apiserver does not count as writes.
    let fresh = syncer(cp).await;
    let before = cp.write_requests();
    let r = fresh.sync(&desired, "r1").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert_eq!(
        (r.created.len(), r.updated.len(), r.unchanged),
        (0, 0, 24),
        "{r:?}"
    );
    assert_eq!(cp.write_requests() - before, 0);

    // A controller writes an object's status (its resourceVersion moves, nothing pontoon
    // applied changes): the resync checks with a dry run and writes nothing.
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(cp.client().await, &team);
    services
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [{"type": "Ready", "status": "True",
                "reason": "Tested", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})),
        )
        .await
        .expect("status write");
    let before = cp.write_requests();
    let r = fresh.sync(&desired, "r1").await;
    assert_eq!((r.writes, r.unchanged), (0, 24), "{r:?}");
    assert_eq!(cp.write_requests() - before, 0);
}

#[tokio::test]
async fn team_removed_from_the_repo_loses_its_objects_but_a_failed_team_keeps_them() {
    // sync_cluster owns every inventory on its cluster, so it gets a cluster of its own.
    let cp = control_plane::second();
    let s = syncer(cp).await;
    let (gone, broken) = (unique_name("gone"), unique_name("broken"));
    let mut state = DesiredState {
        revision: "r1".into(),
        default_prune: PrunePolicy {
            max_share: 1.0,
            ..PrunePolicy::default()
        },
        ..DesiredState::default()
    };
    for t in [&gone, &broken] {
        let mut objects = team_base(t, &[t]);
        objects.push(configmap(t, t, "app", json!({"x": "1"})));
        let mut u = unit_desired(t, cp.name, &[t], objects);
        u.prune.namespaces = true;
        state.units.insert(u.unit.clone(), u);
    }
    let results = s.sync_cluster(&state).await;
    assert!(
        results.iter().all(|r| r.state == UnitState::Synced),
        "{results:?}"
    );

    // Next commit: `gone` was deleted from the repo, `broken` fails to render.
    let mut next = DesiredState {
        revision: "r2".into(),
        default_prune: PrunePolicy {
            max_share: 1.0,
            namespaces: true,
            crds: false,
        },
        ..DesiredState::default()
    };
    next.failed_teams.insert(
        TeamName(broken.clone()),
        vec![Diagnostic {
            file: format!("teams/{broken}/app.yaml"),
            line: 3,
            column: 1,
            team: Some(TeamName(broken.clone())),
            cluster: None,
            severity: Severity::Error,
            rule: "parse".into(),
            message: "broken".into(),
        }],
    );
    let results = s.sync_cluster(&next).await;
    let removed = results
        .iter()
        .find(|r| r.unit.team.0 == gone)
        .expect("gone team handled");
    assert_eq!(removed.state, UnitState::Synced, "{removed:?}");
    assert!(
        removed.pruned.iter().any(|k| k.kind == "ConfigMap"),
        "{removed:?}"
    );
    assert_eq!(cm_data(cp, &gone, "app").await, None);
    assert!(
        results.iter().all(|r| r.unit.team.0 != broken),
        "a failed team must not be synced: {results:?}"
    );
    assert!(
        cm_data(cp, &broken, "app").await.is_some(),
        "render error must not prune"
    );
}

#[tokio::test]
async fn a_mass_deletion_is_held_and_nothing_is_applied() {
    let cp = control_plane::shared();
    let s = syncer(cp).await;
    let team = unique_name("mass");
    let mut objects = team_base(&team, &[&team]);
    for i in 0..6 {
        objects.push(configmap(&team, &team, &format!("cm{i}"), json!({})));
    }
    let r = s
        .sync(&unit_desired(&team, cp.name, &[&team], objects), "r1")
        .await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");

    // Keep only the base and one new object: 6 of 9 would go (67% > 50%).
    let mut objects = team_base(&team, &[&team]);
    objects.push(configmap(&team, &team, "new", json!({})));
    let r = s
        .sync(&unit_desired(&team, cp.name, &[&team], objects), "r2")
        .await;
    assert_eq!(r.state, UnitState::OutOfSync, "{r:?}");
    assert_eq!(r.held.len(), 6);
    let msg = r.message.as_deref().unwrap_or("");
    assert!(
        msg.contains("would delete 6 of 9 objects") && msg.contains("nothing was applied"),
        "{msg}"
    );
    assert!(cm_data(cp, &team, "cm0").await.is_some());
    assert_eq!(
        cm_data(cp, &team, "new").await,
        None,
        "a held sync applies nothing"
    );
}

#[tokio::test]
async fn prune_disabled_objects_and_namespaces_are_kept() {
    let cp = control_plane::shared();
    let s = syncer(cp).await;
    let team = unique_name("keep");
    let extra = format!("{team}-x");
    let mut objects = team_base(&team, &[&team, &extra]);
    let mut kept = configmap(&team, &team, "kept", json!({}));
    std::sync::Arc::make_mut(&mut kept.object)["metadata"]["annotations"] =
        json!({ANNOTATION_PRUNE: "disabled"});
    objects.push(kept);
    objects.push(configmap(&team, &team, "gone", json!({})));
    let mut d = unit_desired(&team, cp.name, &[&team, &extra], objects);
    d.prune.max_share = 1.0;
    assert_eq!(s.sync(&d, "r1").await.state, UnitState::Synced);

    let mut d2 = unit_desired(&team, cp.name, &[&team], team_base(&team, &[&team]));
    d2.prune.max_share = 1.0;
    let r = s.sync(&d2, "r2").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert!(
        keys(&r.kept).contains(&format!("ConfigMap {team}/kept")),
        "{r:?}"
    );
    assert!(
        keys(&r.kept).contains(&format!("Namespace/{extra}")),
        "namespaces are not pruned by default: {r:?}"
    );
    assert!(
        keys(&r.pruned).contains(&format!("ConfigMap {team}/gone")),
        "{r:?}"
    );
    assert!(cm_data(cp, &team, "kept").await.is_some());
    assert_eq!(cm_data(cp, &team, "gone").await, None);
}

#[tokio::test]
async fn a_crd_and_its_custom_resource_sync_in_one_pass() {
    let cp = control_plane::shared();
    let s = syncer(cp).await;
    let team = unique_name("crd");
    let plural = format!("widgets{}", team.replace('-', ""));
    let group = "example.pontoon.dev";
    let mut objects = team_base(&team, &[&team]);
    objects.push(obj(
        &team,
        Applier::Platform,
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.{group}")},
            "spec": {
                "group": group, "scope": "Namespaced",
                "names": {"plural": plural, "singular": plural, "kind": format!("W{}", team.replace('-', ""))},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
            }
        }),
    ));
    objects.push(obj(
        &team,
        Applier::Team,
        json!({"apiVersion": format!("{group}/v1"), "kind": format!("W{}", team.replace('-', "")),
               "metadata": {"name": "w1", "namespace": team}, "spec": {"size": 3}}),
    ));
    let r = s
        .sync(&unit_desired(&team, cp.name, &[&team], objects), "r1")
        .await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert_eq!(r.created.len(), 5, "{r:?}");
}

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
    let data = inventories
        .get(&name)
        .await
        .expect("inventory")
        .data
        .expect("data");
    assert!(!data["objects"].contains("\"b\""), "{data:?}");
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

/// The team's Role is rendered from the kinds the team uses now: when the team stops
/// using a kind, the Role loses it in the same commit that prunes the last object of that
/// kind. The prune (as the team) must still be allowed, and the Role must end narrow.
#[tokio::test]
async fn a_kind_the_team_stops_using_is_pruned_and_its_permission_then_dropped() {
    let cp = control_plane::shared();
    let s = syncer(cp).await;
    let team = unique_name("kinds");
    let unit = |rev: &str, with_cronjob: bool| {
        let mut app = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {k: v}\n"
            .to_owned();
        if with_cronjob {
            app.push_str("---\napiVersion: batch/v1\nkind: CronJob\nmetadata: {name: nightly}\nspec:\n  schedule: \"0 2 * * *\"\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: OnFailure\n          containers: [{name: job, image: registry.example/job:1}]\n");
        }
        let allowed = "{group: \"\", kind: ConfigMap}, {group: batch, kind: CronJob}";
        rendered_unit(cp, &team, &team, allowed, &app, rev)
    };
    let role_resources = || async {
        let roles: Api<k8s_openapi::api::rbac::v1::Role> =
            Api::namespaced(cp.client().await, &team);
        let role = roles.get(TEAM_ROLE).await.expect("team role");
        role.rules
            .unwrap_or_default()
            .into_iter()
            .flat_map(|r| r.resources.unwrap_or_default())
            .collect::<Vec<_>>()
    };

    let r = s.sync(&unit("r1", true), "r1").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert!(role_resources().await.contains(&"cronjobs".to_owned()));

    let r = s.sync(&unit("r2", false), "r2").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert_eq!(
        keys(&r.pruned),
        [format!("CronJob.batch {team}/nightly")],
        "{r:?}"
    );
    let cronjobs: Api<k8s_openapi::api::batch::v1::CronJob> =
        Api::namespaced(cp.client().await, &team);
    assert!(cronjobs.get_opt("nightly").await.expect("get").is_none());
    assert_eq!(role_resources().await, ["configmaps"]);

    let last = unit("r2", false);
    let r = s.sync(&last, "r2").await;
    assert_eq!((r.state, r.writes), (UnitState::Synced, 0), "{r:?}");

    // The team leaves the repo: its objects go as the team, then the Role that allowed it.
    let r = s.remove_team(&last.unit.team, &last.prune, "r3").await;
    assert!(r.errors.is_empty() && r.held.is_empty(), "{r:?}");
    assert!(cm_data(cp, &team, "settings").await.is_none());
}

#[tokio::test]
async fn a_team_moving_to_another_namespace_is_pruned_from_the_old_one() {
    let cp = control_plane::shared();
    let s = syncer(cp).await;
    let team = unique_name("mover");
    let (old, new) = (format!("{team}-old"), format!("{team}-new"));
    let unit = |namespace: &str, rev: &str| {
        let app = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {k: v}\n";
        rendered_unit(
            cp,
            &team,
            namespace,
            "{group: \"\", kind: ConfigMap}",
            app,
            rev,
        )
    };
    let r = s.sync(&unit(&old, "r1"), "r1").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert!(cm_data(cp, &old, "settings").await.is_some());

    // The team's objects leave the old namespace as the team, while its Role there still
    // allows it; then the Role goes; the namespace stays (the platform keeps namespaces).
    let r = s.sync(&unit(&new, "r2"), "r2").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert!(cm_data(cp, &new, "settings").await.is_some());
    assert_eq!(cm_data(cp, &old, "settings").await, None);
    let pruned = keys(&r.pruned);
    for kind in [
        "ConfigMap ",
        "Role.rbac.authorization.k8s.io ",
        "RoleBinding.rbac.authorization.k8s.io ",
    ] {
        assert!(
            pruned
                .iter()
                .any(|k| k.starts_with(kind) && k.contains(&format!("{old}/"))),
            "{kind}in {old} pruned: {r:?}"
        );
    }
    assert_eq!(keys(&r.kept), [format!("Namespace/{old}")], "{r:?}");
    assert!(r.summary().ends_with(", kept 1"), "{}", r.summary());
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(cp.client().await);
    assert!(namespaces.get_opt(&old).await.expect("get").is_some());
}

/// A team that names the daemon's own namespace (configured away from the default the
/// renderer refuses) gets nothing applied: its base would give it admin over pontoon's
/// inventories.
#[tokio::test]
async fn a_team_claiming_pontoons_own_namespace_gets_nothing_applied() {
    let cp = control_plane::shared();
    let home = unique_name("pontoon-home");
    let cluster =
        Cluster::from_config(ClusterName(cp.name.into()), cp.config().await, 16).expect("cluster");
    let s = Syncer::new(
        Arc::new(cluster),
        SyncOptions {
            namespace: home.clone(),
            ..SyncOptions::default()
        },
    );
    let team = unique_name("squatter");
    let mut objects = team_base(&team, &[&team, &home]);
    objects.push(configmap(&team, &team, "c", json!({"k": "v"})));
    let r = s
        .sync(
            &unit_desired(&team, cp.name, &[&team, &home], objects),
            "r1",
        )
        .await;
    assert_eq!(r.state, UnitState::Failed, "{r:?}");
    assert!(
        r.errors[0]
            .message
            .contains(&format!("claims namespace {home}")),
        "{r:?}"
    );
    assert_eq!(r.writes, 0, "{r:?}");
    assert!(cm_data(cp, &team, "c").await.is_none());
}

/// A field another manager took: with `forceConflicts: false` that object fails with the
/// conflict named and keeps the other manager's value; by default pontoon takes the field
/// back and still reports whom it took it from.
#[tokio::test]
async fn a_conflict_is_refused_or_taken_over_as_configured_and_always_reported() {
    let cp = control_plane::shared();
    let team = unique_name("conflict");
    let mut objects = team_base(&team, &[&team]);
    objects.push(configmap(&team, &team, "settings", json!({"mode": "ours"})));
    objects.push(configmap(&team, &team, "other", json!({"k": "v"})));
    let desired = unit_desired(&team, cp.name, &[&team], objects);
    let forcing = syncer(cp).await;
    assert_eq!(forcing.sync(&desired, "r1").await.state, UnitState::Synced);

    let configmaps: Api<ConfigMap> = Api::namespaced(cp.client().await, &team);
    configmaps
        .patch(
            "settings",
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "settings"}, "data": {"mode": "theirs"}})),
        )
        .await
        .expect("another manager takes the field");

    let cluster =
        Cluster::from_config(ClusterName(cp.name.into()), cp.config().await, 16).expect("cluster");
    let polite = Syncer::new(
        Arc::new(cluster),
        SyncOptions {
            force_conflicts: false,
            ..SyncOptions::default()
        },
    );
    let r = polite.sync(&desired, "r1").await;
    assert_eq!(r.state, UnitState::Failed, "{r:?}");
    assert_eq!(r.errors.len(), 1, "{r:?}");
    assert!(r.errors[0].object.contains("settings"), "{r:?}");
    assert!(
        r.errors[0]
            .message
            .contains("conflict with another field manager")
            && r.errors[0].message.contains("someone-else"),
        "{r:?}"
    );
    assert_eq!(
        cm_data(cp, &team, "settings").await.as_deref(),
        Some(r#"{"mode":"theirs"}"#)
    );

    let r = forcing.sync(&desired, "r1").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert_eq!(r.conflicts.len(), 1, "{r:?}");
    assert!(
        r.conflicts[0].object.contains("settings")
            && r.conflicts[0].message.contains("took ownership")
            && r.conflicts[0].message.contains("someone-else"),
        "{r:?}"
    );
    assert_eq!(
        cm_data(cp, &team, "settings").await.as_deref(),
        Some(r#"{"mode":"ours"}"#)
    );
}

/// pontoon applies with `fieldValidation=Ignore` (its JSON bodies cannot hold duplicate
/// keys, the only thing that setting adds for an apply); a field the schema does not
/// declare must still be refused by the apiserver, for that object alone.
#[tokio::test]
async fn a_field_the_schema_does_not_declare_fails_that_object_only() {
    let cp = control_plane::shared();
    let s = syncer(cp).await;
    let team = unique_name("typo");
    let mut objects = team_base(&team, &[&team]);
    let mut typo = deployment(&team, &team, "web", "registry.example/web:1", 1);
    std::sync::Arc::make_mut(&mut typo.object)["spec"]["replicaz"] = json!(3);
    objects.push(typo);
    objects.push(configmap(&team, &team, "fine", json!({"k": "v"})));
    let r = s
        .sync(&unit_desired(&team, cp.name, &[&team], objects), "r1")
        .await;
    assert_eq!(r.state, UnitState::Failed, "{r:?}");
    assert_eq!(r.errors.len(), 1, "{r:?}");
    assert!(r.errors[0].object.contains("Deployment"), "{r:?}");
    assert!(r.errors[0].message.contains("replicaz"), "{r:?}");
    assert_eq!(
        cm_data(cp, &team, "fine").await.as_deref(),
        Some(r#"{"k":"v"}"#)
    );
    let deployments: Api<Deployment> = Api::namespaced(cp.client().await, &team);
    assert!(deployments.get_opt("web").await.expect("get").is_none());
}

#[tokio::test]
async fn impersonation_lets_the_apiserver_refuse_a_team_outside_its_namespaces() {
    let cp = control_plane::shared();
    let s = syncer(cp).await;
    let (a, b) = (unique_name("team-a"), unique_name("team-b"));
    for t in [&a, &b] {
        let r = s
            .sync(&unit_desired(t, cp.name, &[t], team_base(t, &[t])), "r1")
            .await;
        assert_eq!(r.state, UnitState::Synced, "{r:?}");
    }
    // A crafted desired state: team a's object in team b's namespace, applied as team a.
    let mut objects = team_base(&a, &[&a]);
    objects.push(configmap(&a, &b, "intruder", json!({})));
    objects.push(configmap(&a, &a, "fine", json!({})));
    let r = s
        .sync(&unit_desired(&a, cp.name, &[&a], objects), "r2")
        .await;
    assert_eq!(r.state, UnitState::Failed, "{r:?}");
    let err = r
        .errors
        .iter()
        .find(|e| e.object.contains("intruder"))
        .expect("intruder refused");
    assert!(
        err.message.contains("forbidden") && err.message.contains(&format!("pontoon:team:{a}")),
        "{err:?}"
    );
    assert_eq!(cm_data(cp, &b, "intruder").await, None);
    assert!(
        cm_data(cp, &a, "fine").await.is_some(),
        "the team's own objects still apply"
    );
}

#[tokio::test]
async fn health_goes_progressing_then_synced_or_failed_on_timeout() {
    let cp = control_plane::shared();
    let s = syncer(cp).await;
    let team = unique_name("rollout");
    let mut objects = team_base(&team, &[&team]);
    objects.push(deployment(&team, &team, "web", "nginx:1.27", 2));
    objects.push(deployment(&team, &team, "stuck", "nginx:1.27", 1));
    let d = unit_desired(&team, cp.name, &[&team], objects);
    let r = s.sync(&d, "r1").await;
    assert_eq!(r.state, UnitState::Progressing, "{r:?}");
    assert_eq!(r.not_ready.len(), 2);
    // A resync with nothing changed writes nothing and reads health from its list.
    let again = s.sync(&d, "r1").await;
    assert_eq!(
        (again.state, again.writes, again.not_ready.len()),
        (UnitState::Progressing, 0, 2),
        "{again:?}"
    );

    // No controller manager runs: play the Deployment controller for `web` only.
    let deployments: Api<Deployment> = Api::namespaced(cp.client().await, &team);
    let status = json!({"status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                                   "readyReplicas": 2, "availableReplicas": 2}});
    deployments
        .patch_status("web", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status");
    let since = Instant::now();
    let r = s
        .wait_healthy(r, since, Duration::from_secs(2), Duration::from_millis(200))
        .await;
    assert_eq!(r.state, UnitState::Failed, "{r:?}");
    let msg = r.message.clone().unwrap_or_default();
    assert!(
        msg.contains("not healthy after 2s") && msg.contains("stuck"),
        "{msg}"
    );

    deployments
        .patch_status("stuck", &PatchParams::default(), &Patch::Merge(&json!({"status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}})))
        .await
        .expect("status");
    let r = s.sync(&d, "r1").await;
    let r = s
        .wait_healthy(
            r,
            Instant::now(),
            Duration::from_secs(10),
            Duration::from_millis(200),
        )
        .await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
}

/// Every object a unit of `team` in namespace `ns` can have written, with its
/// resourceVersion: the Namespace, the ConfigMaps, Roles and RoleBindings in it, and the
/// unit's inventory. Equal before and after means nothing was written.
async fn written_state(cp: &ControlPlane, team: &str, ns: &str) -> BTreeMap<String, String> {
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    use kube::Resource;
    async fn list<K>(api: Api<K>, out: &mut BTreeMap<String, String>)
    where
        K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        for o in api.list(&Default::default()).await.expect("list").items {
            let meta = o.meta();
            out.insert(
                format!("{} {}", K::kind(&()), meta.name.clone().unwrap_or_default()),
                meta.resource_version.clone().unwrap_or_default(),
            );
        }
    }
    let client = cp.client().await;
    let mut out = BTreeMap::new();
    list::<ConfigMap>(Api::namespaced(client.clone(), ns), &mut out).await;
    list::<Role>(Api::namespaced(client.clone(), ns), &mut out).await;
    list::<RoleBinding>(Api::namespaced(client.clone(), ns), &mut out).await;
    let namespace = Api::<Namespace>::all(client.clone())
        .get(ns)
        .await
        .expect("namespace");
    out.insert(
        format!("Namespace {ns}"),
        namespace.metadata.resource_version.unwrap_or_default(),
    );
    let inventory = Api::<ConfigMap>::namespaced(client, &SyncOptions::default().namespace)
        .get(&format!("pontoon-inventory-{team}"))
        .await
        .expect("inventory");
    out.insert(
        "inventory".into(),
        inventory.metadata.resource_version.unwrap_or_default(),
    );
    out
}

#[tokio::test]
async fn plan_reports_creates_updates_and_prunes_without_writing() {
    use pontoon::sync::plan::{Action, FieldChange};
    let cp = control_plane::shared();
    let s = syncer(cp).await;
    let team = unique_name("plan");
    let mut objects = team_base(&team, &[&team]);
    objects.push(configmap(&team, &team, "a", json!({"k": "1"})));
    objects.push(configmap(&team, &team, "b", json!({})));
    assert_eq!(
        s.sync(&unit_desired(&team, cp.name, &[&team], objects), "r1")
            .await
            .state,
        UnitState::Synced
    );
    let before = written_state(cp, &team, &team).await;

    let mut objects = team_base(&team, &[&team]);
    objects.push(configmap(&team, &team, "a", json!({"k": "2"})));
    objects.push(configmap(&team, &team, "c", json!({})));
    let plan = s
        .plan(&unit_desired(&team, cp.name, &[&team], objects))
        .await
        .expect("plan");
    assert_eq!(plan.summary(), "+1 ~1 -1", "{plan:?}");
    // Each object's action: the team base is unchanged, a changes in the one field.
    let actions: BTreeMap<String, Action> = plan
        .objects
        .iter()
        .map(|o| (o.object.clone(), o.action.clone()))
        .collect();
    let rbac = "rbac.authorization.k8s.io";
    let want = BTreeMap::from([
        (format!("Namespace/{team}"), Action::Unchanged),
        (
            format!("Role.{rbac} {team}/pontoon-team"),
            Action::Unchanged,
        ),
        (
            format!("RoleBinding.{rbac} {team}/pontoon-team"),
            Action::Unchanged,
        ),
        (
            format!("ConfigMap {team}/a"),
            Action::Update {
                changes: vec![FieldChange {
                    path: "data.k".into(),
                    old: Some(json!("1")),
                    new: Some(json!("2")),
                }],
            },
        ),
        (format!("ConfigMap {team}/b"), Action::Prune),
        (format!("ConfigMap {team}/c"), Action::Create),
    ]);
    assert_eq!(actions, want, "{plan:?}");

    // Nothing written: every object, the inventory included, at the resourceVersion it
    // had, and no object more or less.
    assert_eq!(
        written_state(cp, &team, &team).await,
        before,
        "plan must not write"
    );
    assert_eq!(
        cm_data(cp, &team, "a").await.as_deref(),
        Some(r#"{"k":"1"}"#),
        "plan must not write"
    );
    assert_eq!(cm_data(cp, &team, "c").await, None);
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
