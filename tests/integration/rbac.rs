//! pontoon running with only `deploy/base`'s RBAC, as its ServiceAccount's own token: it
//! syncs teams, including one added to the repo without any edit of `deploy/`; it may
//! act as the teams' identities and as nothing else; it holds no `escalate`, `bind` only
//! by name, and every permission the team Roles it renders grant. On the control plane
//! with nodes, whose controller manager fills the aggregated `admin`, `edit` and `view`
//! ClusterRoles as in any cluster: the owners' binding to `admin` is one to a full role.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};
use kube::api::{Api, PostParams};
use pontoon::cluster::Cluster;
use pontoon::desired::{
    Applier, ClusterName, TEAM_GROUP, TEAM_IDENTITY_NAMESPACE, TEAM_ROLE, TeamName, UnitDesired,
    team_user,
};
use pontoon::sync::{SyncOptions, Syncer, UnitState};
use serde_json::{Value, json};

use crate::deploy::{apply_deploy_base, as_pontoon};
use crate::support::control_plane::{self, ControlPlane, repo_root, unique_name};
use crate::support::fixtures::configmap;

/// A team's ConfigMap.
const SETTINGS: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {currency: EUR}\n";
/// A team's Service.
const WEB: &str =
    "---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: 80}]\n";

/// A platform repo of `teams` (each owning the namespace of its own name, with an owner,
/// a quota and a ConfigMap and a Service of its own), rendered by the real renderer.
fn render_teams(cp: &ControlPlane, teams: &[&str]) -> Vec<UnitDesired> {
    render_teams_with(cp, teams, "", &format!("{SETTINGS}{WEB}"))
}

/// [`render_teams`] with `allowed` kinds added to the platform's policy and `app` as
/// each team's file.
fn render_teams_with(
    cp: &ControlPlane,
    teams: &[&str],
    allowed: &str,
    app: &str,
) -> Vec<UnitDesired> {
    let mut f = pontoon::render::Files::new();
    f.insert(
        "platform.yaml".into(),
        format!("apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {{name: p}}\nspec:\n  clusters: [{{name: {}}}]\n  policy:\n    allowedKinds: [{{group: \"\", kind: ConfigMap}}, {{group: \"\", kind: Service}}{allowed}]\n", cp.name).into_bytes(),
    );
    for team in teams {
        f.insert(
            format!("teams/{team}/team.yaml"),
            format!("apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {team}}}\nspec:\n  owners: [alice]\n  namespaces: [{team}]\n  clusters: {{names: [{}]}}\n  quota: {{pods: \"10\"}}\n", cp.name).into_bytes(),
        );
        f.insert(format!("teams/{team}/app.yaml"), app.as_bytes().to_vec());
    }
    let state = pontoon::render::render(&f, "r1");
    assert!(state.diagnostics.is_empty(), "{:?}", state.diagnostics);
    state.units.into_values().collect()
}

async fn pontoon_syncer(cp: &ControlPlane) -> Syncer {
    let cluster = Cluster::from_config(ClusterName(cp.name.into()), as_pontoon(cp).await, 8)
        .expect("cluster");
    Syncer::new(Arc::new(cluster), SyncOptions::default())
}

async fn settings(cp: &ControlPlane, ns: &str, name: &str) -> Option<ConfigMap> {
    let api: Api<ConfigMap> = Api::namespaced(cp.client().await, ns);
    api.get_opt(name).await.expect("get configmap")
}

#[tokio::test]
async fn pontoon_with_only_deploy_base_rbac_syncs_teams_and_a_new_team_needs_no_edit() {
    let cp = control_plane::with_nodes();
    let syncer = pontoon_syncer(cp).await;
    let roles: Api<ClusterRole> = Api::all(cp.client().await);
    let admin = roles.get("admin").await.expect("the admin ClusterRole");
    assert!(
        admin.rules.as_ref().is_some_and(|r| r.len() > 10),
        "the aggregation controller filled `admin`: {admin:?}"
    );
    let first = unique_name("rbac-first");
    for unit in render_teams(cp, &[&first]) {
        let r = syncer.sync(&unit, "r1").await;
        assert_eq!(r.state, UnitState::Synced, "{r:?}");
    }
    assert!(settings(cp, &first, "settings").await.is_some());

    // A team added to the repo: deploy/ is not touched, the team syncs all the same.
    let added = unique_name("rbac-added");
    let units = render_teams(cp, &[&first, &added]);
    let unit = units
        .iter()
        .find(|u| u.unit.team.0 == added)
        .expect("the added team's unit");
    let r = syncer.sync(unit, "r2").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert!(settings(cp, &added, "settings").await.is_some());

    // The first team's file drops its Service: pontoon widens the team Role to delete
    // it, the team deletes it, and the Role narrows to what the team still uses.
    let dropped = render_teams_with(cp, &[&first], "", SETTINGS).remove(0);
    let r = syncer.sync(&dropped, "r2").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert_eq!(
        r.pruned.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
        [format!("Service {first}/web")],
        "{r:?}"
    );
    let services: Api<Service> = Api::namespaced(cp.client().await, &first);
    assert!(services.get_opt("web").await.expect("get").is_none());
    let roles: Api<Role> = Api::namespaced(cp.client().await, &first);
    let role = roles.get(TEAM_ROLE).await.expect("team Role");
    let granted: Vec<String> = role
        .rules
        .unwrap_or_default()
        .into_iter()
        .flat_map(|r| r.resources.unwrap_or_default())
        .collect();
    assert_eq!(granted, ["configmaps"]);

    // pontoon's own account may write ConfigMaps anywhere (the team Role needs it to), yet
    // a team object outside the team's namespaces is refused: it is written as the team.
    let mut crafted = unit.clone();
    crafted
        .objects
        .push(configmap(&added, &first, "intruder", json!({})));
    crafted.objects.sort_by_key(|o| o.key());
    let r = syncer.sync(&crafted, "r3").await;
    assert_eq!(r.state, UnitState::Failed, "{r:?}");
    let err = r
        .errors
        .iter()
        .find(|e| e.object.contains("intruder"))
        .expect("intruder refused");
    assert!(
        err.message.contains("forbidden")
            && err.message.contains(&team_user(&TeamName(added.clone()))),
        "{err:?}"
    );
    assert!(settings(cp, &first, "intruder").await.is_none());
}

/// A client that is pontoon's ServiceAccount acting as `user` (and `groups`, if any).
async fn acting_as(cp: &ControlPlane, user: &str, groups: &[&str]) -> kube::Client {
    let mut config = as_pontoon(cp).await;
    config.auth_info.impersonate = Some(user.to_owned());
    if !groups.is_empty() {
        config.auth_info.impersonate_groups = Some(groups.iter().map(|g| g.to_string()).collect());
    }
    kube::Client::try_from(config).expect("client")
}

/// Who the API server says the client is: user name and groups, or the refusal's text.
async fn who(client: kube::Client) -> Result<(String, Vec<String>), String> {
    let api: Api<SelfSubjectReview> = Api::all(client);
    let review = api
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(|e| e.to_string())?;
    let info = review.status.and_then(|s| s.user_info).unwrap_or_default();
    Ok((
        info.username.unwrap_or_default(),
        info.groups.unwrap_or_default(),
    ))
}

#[tokio::test]
async fn pontoon_may_act_as_any_team_identity_and_nothing_else() {
    let cp = control_plane::with_nodes();
    // Any team name, none listed anywhere, no ServiceAccount object created for it.
    let team = unique_name("rbac-anyteam");
    let user = team_user(&TeamName(team.clone()));
    let (name, groups) = who(acting_as(cp, &user, &[]).await)
        .await
        .expect("a team identity is impersonated");
    assert_eq!(name, user);
    assert!(
        groups.iter().any(|g| g == TEAM_GROUP),
        "the API server puts every team in {TEAM_GROUP}: {groups:?}"
    );
    // No account exists for it, so no token can be issued that acts as the team.
    let token = cp.kubectl(&["create", "token", &team, "-n", TEAM_IDENTITY_NAMESPACE]);
    assert!(
        !token.status.success() && String::from_utf8_lossy(&token.stderr).contains("not found"),
        "{token:?}"
    );

    for (user, groups) in [
        ("system:admin", vec![]),
        ("alice", vec![]),
        ("pontoon:team:payments", vec![]),
        ("system:serviceaccount:kube-system:default", vec![]),
        ("system:serviceaccount:pontoon-system:pontoon", vec![]),
        (user.as_str(), vec!["system:masters"]),
    ] {
        let refused = who(acting_as(cp, user, &groups).await).await;
        match refused {
            Err(e) => assert!(e.contains("impersonate"), "{user} {groups:?}: {e}"),
            Ok(who) => panic!("pontoon acted as {user} {groups:?}: the server says {who:?}"),
        }
    }
}

/// Every rule of `deploy/base/rbac.yaml`'s roles, with the kind and name of its role.
fn deploy_rules() -> Vec<(String, String, Value)> {
    let text =
        std::fs::read_to_string(repo_root().join("deploy/base/rbac.yaml")).expect("rbac.yaml");
    let mut out = Vec::new();
    for doc in text.split("\n---\n") {
        let v: Value = serde_saphyr::from_str(doc).expect("rbac.yaml parses");
        let kind = v["kind"].as_str().unwrap_or_default().to_owned();
        let name = v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        for rule in v["rules"].as_array().into_iter().flatten() {
            out.push((kind.clone(), name.clone(), rule.clone()));
        }
    }
    out
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// Whether pontoon's ServiceAccount may `verb` the resource, as the API server decides.
async fn may(client: &kube::Client, verb: &str, group: &str, resource: &str, name: &str) -> bool {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                name: (!name.is_empty()).then(|| name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = api
        .create(&PostParams::default(), &review)
        .await
        .expect("access review");
    answer.status.is_some_and(|s| s.allowed)
}

#[tokio::test]
async fn deploy_base_grants_no_escalate_and_binds_only_by_name() {
    // As written: no `escalate`, no wildcard verb, `bind` only with resourceNames, and
    // `impersonate` only on service accounts, in a Role of the team identity namespace.
    let rules = deploy_rules();
    assert!(!rules.is_empty());
    for (kind, name, rule) in &rules {
        let verbs = strings(&rule["verbs"]);
        assert!(
            !verbs.contains(&"escalate") && !verbs.contains(&"*"),
            "{kind} {name}: {rule}"
        );
        assert!(
            !strings(&rule["resources"]).contains(&"*"),
            "{kind} {name}: {rule}"
        );
        if verbs.contains(&"bind") {
            assert!(
                !strings(&rule["resourceNames"]).is_empty(),
                "{kind} {name}: bind without resourceNames: {rule}"
            );
        }
        if verbs.contains(&"impersonate") {
            assert_eq!(
                (kind.as_str(), name.as_str()),
                ("Role", "pontoon-impersonate-teams")
            );
            assert_eq!(strings(&rule["resources"]), ["serviceaccounts"], "{rule}");
        }
    }

    // As the API server decides for pontoon's own account.
    let cp = control_plane::with_nodes();
    apply_deploy_base().await;
    let client = kube::Client::try_from(as_pontoon(cp).await).expect("client");
    let rbac = "rbac.authorization.k8s.io";
    for resource in ["roles", "clusterroles"] {
        assert!(
            !may(&client, "escalate", rbac, resource, "").await,
            "escalate {resource}"
        );
        assert!(
            !may(&client, "bind", rbac, resource, "").await,
            "bind any {resource}"
        );
    }
    assert!(!may(&client, "bind", rbac, "clusterroles", "cluster-admin").await);
    assert!(!may(&client, "bind", rbac, "clusterroles", "edit").await);
    assert!(may(&client, "bind", rbac, "clusterroles", "admin").await);
    assert!(may(&client, "bind", rbac, "roles", TEAM_ROLE).await);
    for resource in ["users", "groups"] {
        assert!(!may(&client, "impersonate", "", resource, "system:admin").await);
    }
    assert!(!may(&client, "get", "", "secrets", "").await);
}

#[tokio::test]
async fn pontoon_holds_every_permission_the_example_platforms_team_roles_grant() {
    let cp = control_plane::with_nodes();
    apply_deploy_base().await;
    let client = kube::Client::try_from(as_pontoon(cp).await).expect("client");
    let snapshot = pontoon::source::dir::read(&repo_root().join("config/example-platform"))
        .expect("read the example platform");
    let state = pontoon::render::render(&snapshot.files, "r1");
    let mut wanted = BTreeSet::new();
    for unit in state.units.values() {
        for o in &unit.objects {
            let is_team_role =
                o.object["kind"] == "Role" && o.object["metadata"]["name"] == TEAM_ROLE;
            if !is_team_role {
                continue;
            }
            for rule in o.object["rules"].as_array().into_iter().flatten() {
                for group in strings(&rule["apiGroups"]) {
                    for resource in strings(&rule["resources"]) {
                        for verb in strings(&rule["verbs"]) {
                            wanted.insert((verb.to_owned(), group.to_owned(), resource.to_owned()));
                        }
                    }
                }
            }
        }
    }
    assert!(wanted.len() > 20, "{wanted:?}");
    for (verb, group, resource) in &wanted {
        assert!(
            may(&client, verb, group, resource, "").await,
            "deploy/base does not give pontoon {verb} {resource}.{group}, which a team Role grants"
        );
    }
}

#[tokio::test]
async fn a_team_using_a_kind_pontoon_does_not_hold_fails_naming_the_permission() {
    let cp = control_plane::with_nodes();
    let team = unique_name("rbac-secret");
    let unit = render_teams_with(
        cp,
        &[&team],
        ", {group: \"\", kind: Secret}",
        &format!("{SETTINGS}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: token}}\nstringData: {{k: v}}\n"),
    )
    .remove(0);
    // Every sync lists the kinds its unit manages in its namespaces, so the first request
    // refused is that list, before anything is written.
    let r = pontoon_syncer(cp).await.sync(&unit, "r1").await;
    assert_eq!(r.state, UnitState::Failed, "{r:?}");
    assert_eq!(r.writes, 0, "{r:?}");
    let message = r.message.as_deref().unwrap_or_default();
    assert!(
        message.starts_with("the cluster refuses pontoon's own account: secrets is forbidden: User \"system:serviceaccount:pontoon-system:pontoon\" cannot list resource \"secrets\"")
            && message.ends_with("(pontoon's RBAC, deploy/base/rbac.yaml, does not grant it)"),
        "{message}"
    );
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(cp.client().await, &team);
    assert!(secrets.get_opt("token").await.expect("get").is_none());
}

#[tokio::test]
async fn a_team_bound_to_the_former_user_identity_moves_to_its_service_account() {
    let cp = control_plane::with_nodes();
    let team = unique_name("rbac-upgrade");
    let unit = render_teams(cp, &[&team]).remove(0);

    // What an earlier pontoon left: the team's base, its RoleBinding naming the user
    // `pontoon:team:<team>` (written with the cluster-admin rights deploy/ used to grant).
    let mut earlier = unit.clone();
    earlier.objects.retain(|o| o.applier == Applier::Platform);
    for o in &mut earlier.objects {
        if o.object["kind"] == "RoleBinding" && o.object["metadata"]["name"] == TEAM_ROLE {
            let mut object = (*o.object).clone();
            object["subjects"] = json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": format!("pontoon:team:{team}")}]);
            o.object = Arc::new(object);
        }
    }
    let admin =
        Cluster::from_config(ClusterName(cp.name.into()), cp.config().await, 8).expect("cluster");
    let r = Syncer::new(Arc::new(admin), SyncOptions::default())
        .sync(&earlier, "r1")
        .await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");

    // This version, with only deploy/base's RBAC: the binding names the team's service
    // account, and nothing else, and the team's objects apply as it.
    let r = pontoon_syncer(cp).await.sync(&unit, "r2").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    let bindings: Api<RoleBinding> = Api::namespaced(cp.client().await, &team);
    let binding = bindings.get(TEAM_ROLE).await.expect("team RoleBinding");
    let subjects: Vec<(String, String, Option<String>)> = binding
        .subjects
        .unwrap_or_default()
        .into_iter()
        .map(|s| (s.kind, s.name, s.namespace))
        .collect();
    assert_eq!(
        subjects,
        [(
            "ServiceAccount".to_owned(),
            team.clone(),
            Some(TEAM_IDENTITY_NAMESPACE.to_owned())
        )]
    );
    assert!(settings(cp, &team, "settings").await.is_some());
}
