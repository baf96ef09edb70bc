//! Pruning: a removed team's objects, the mass-deletion hold, what the prune rules keep,
//! and the order that drops a team's permission only after the objects it covered.

use super::*;

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
        msg.contains("would delete 6 of the team's 6 objects")
            && msg.contains("nothing was applied"),
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
