//! A team takes only what is free, against a real kube-apiserver: a Namespace made by
//! hand (with a Secret and a ConfigMap in it) that a team claims gets nothing applied into
//! it and keeps every object as it was, also after the team drops the claim; the same
//! Namespace named in `platform.yaml`'s `spec.adopt` is the team's; a team's ConfigMap
//! over one made by hand is refused, until the platform adopts that one too. `plan` says
//! what the sync does, with the same rule ids.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ResourceQuota, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};
use pontoon::cluster::Cluster;
use pontoon::desired::*;
use pontoon::sync::plan::Action;
use pontoon::sync::{SyncOptions, Syncer, UnitResult, UnitState};

use crate::support::control_plane::{
    self, ControlPlane, RequestKey, THE_APISERVERS_OWN, unique_name,
};

async fn syncer(cp: &ControlPlane) -> Syncer {
    let cluster =
        Cluster::from_config(ClusterName(cp.name.into()), cp.config().await, 16).expect("cluster");
    Syncer::new(Arc::new(cluster), SyncOptions::default())
}

/// The unit of one team, rendered by the real renderer from a platform repo: the team
/// claims `namespaces` (with owner alice and a quota), its app file is `app`, and
/// `adopt` is the platform's `spec.adopt` list in YAML flow style (none when empty).
fn unit(cp: &ControlPlane, team: &str, namespaces: &[&str], app: &str, adopt: &str) -> UnitDesired {
    let mut f = pontoon::render::Files::new();
    f.insert(
        "platform.yaml".into(),
        format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {{name: p}}\nspec:\n  clusters: [{{name: {}}}]\n  policy:\n    allowedKinds: [{{group: \"\", kind: ConfigMap}}]\n    prune: {{maxShare: 1.0}}\n{}",
            cp.name,
            if adopt.is_empty() {
                String::new()
            } else {
                format!("  adopt: [{adopt}]\n")
            }
        )
        .into_bytes(),
    );
    f.insert(
        format!("teams/{team}/team.yaml"),
        format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {team}}}\nspec:\n  namespaces: [{}]\n  owners: [alice]\n  quota: {{pods: \"10\"}}\n  clusters: {{names: [{}]}}\n",
            namespaces.join(", "),
            cp.name
        )
        .into_bytes(),
    );
    f.insert(format!("teams/{team}/app.yaml"), app.as_bytes().to_vec());
    let state = pontoon::render::render(&f, "rev");
    assert!(state.diagnostics.is_empty(), "{:?}", state.diagnostics);
    state.units.into_values().next().expect("one unit")
}

fn configmap_yaml(ns: &str, name: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {ns}}}\ndata: {{owner: team}}\n"
    )
}

fn meta(name: &str, ns: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: ns.map(Into::into),
        ..ObjectMeta::default()
    }
}

/// A ConfigMap made by hand (no labels), with `data.owner: stranger`.
async fn configmap_by_hand(client: &Client, ns: &str, name: &str) {
    let cm = ConfigMap {
        metadata: meta(name, Some(ns)),
        data: Some([("owner".to_owned(), "stranger".to_owned())].into()),
        ..ConfigMap::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &cm)
        .await
        .expect("create configmap by hand");
}

/// `kubectl create ns`, with a Secret and a ConfigMap `settings` in it.
async fn namespace_by_hand(client: &Client, ns: &str) {
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: meta(ns, None),
                ..Namespace::default()
            },
        )
        .await
        .expect("create namespace by hand");
    let secret = Secret {
        metadata: meta("creds", Some(ns)),
        string_data: Some([("password".to_owned(), "hunter2".to_owned())].into()),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret by hand");
    configmap_by_hand(client, ns, "settings").await;
}

/// The resourceVersions of the Namespace, its Secret `creds` and its ConfigMap `settings`.
async fn versions(client: &Client, ns: &str) -> [String; 3] {
    let rv = |m: ObjectMeta| m.resource_version.expect("resourceVersion");
    [
        rv(Api::<Namespace>::all(client.clone())
            .get(ns)
            .await
            .expect("namespace")
            .metadata),
        rv(Api::<Secret>::namespaced(client.clone(), ns)
            .get("creds")
            .await
            .expect("secret")
            .metadata),
        rv(Api::<ConfigMap>::namespaced(client.clone(), ns)
            .get("settings")
            .await
            .expect("configmap")
            .metadata),
    ]
}

async fn namespace_team(client: &Client, ns: &str) -> Option<String> {
    Api::<Namespace>::all(client.clone())
        .get(ns)
        .await
        .expect("namespace")
        .metadata
        .labels?
        .remove(LABEL_TEAM)
}

/// How many RoleBindings, Roles, NetworkPolicies and ResourceQuotas are in `ns`.
async fn base_objects_in(client: &Client, ns: &str) -> usize {
    let lp = ListParams::default();
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .list_metadata(&lp)
        .await
        .expect("rolebindings")
        .items
        .len()
        + Api::<Role>::namespaced(client.clone(), ns)
            .list_metadata(&lp)
            .await
            .expect("roles")
            .items
            .len()
        + Api::<NetworkPolicy>::namespaced(client.clone(), ns)
            .list_metadata(&lp)
            .await
            .expect("networkpolicies")
            .items
            .len()
        + Api::<ResourceQuota>::namespaced(client.clone(), ns)
            .list_metadata(&lp)
            .await
            .expect("quotas")
            .items
            .len()
}

fn error_with(r: &UnitResult, rule: &str) -> String {
    r.errors
        .iter()
        .map(|e| e.message.clone())
        .find(|m| m.contains(&format!("error[{rule}]")))
        .unwrap_or_else(|| panic!("no {rule} error: {r:?}"))
}

async fn plan_errors(s: &Syncer, u: &UnitDesired) -> Vec<(String, String)> {
    s.plan(u)
        .await
        .expect("plan")
        .objects
        .into_iter()
        .filter_map(|o| match o.action {
            Action::Error { message } => Some((o.object, message)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_team_claiming_a_namespace_made_by_hand_changes_nothing_in_it() {
    let cp = control_plane::shared();
    let client = cp.client().await;
    let s = syncer(cp).await;
    let (team, ns) = (unique_name("observability"), unique_name("monitoring"));
    namespace_by_hand(&client, &ns).await;
    let before = versions(&client, &ns).await;

    let app = configmap_yaml(&ns, "settings") + &configmap_yaml(&team, "dashboards");
    let claim = unit(cp, &team, &[&team, &ns], &app, "");
    let planned = plan_errors(&s, &claim).await;
    assert!(
        planned.iter().any(|(o, m)| *o == format!("Namespace/{ns}")
            && m.contains("error[namespace-exists]")
            && m.contains(&format!("team {team}"))),
        "{planned:?}"
    );
    assert!(
        planned
            .iter()
            .any(|(o, m)| *o == format!("ConfigMap {ns}/settings")
                && m.contains("error[namespace-exists]")),
        "{planned:?}"
    );

    let r = s.sync(&claim, "r1").await;
    assert_eq!(r.state, UnitState::Failed, "{r:?}");
    let error = error_with(&r, "namespace-exists");
    assert!(
        error.contains(&format!("teams/{team}/team.yaml:1:"))
            && error.contains(&format!("team {team}: namespace {ns} exists")),
        "{error}"
    );
    assert_eq!(r.errors.len(), 1, "{r:?}");
    assert_eq!(namespace_team(&client, &ns).await, None);
    assert_eq!(base_objects_in(&client, &ns).await, 0);
    assert_eq!(versions(&client, &ns).await, before);
    // Its other namespace syncs.
    assert!(r.created.iter().any(|k| k.name == "dashboards"), "{r:?}");

    let dropped = unit(
        cp,
        &team,
        &[&team],
        &configmap_yaml(&team, "dashboards"),
        "",
    );
    let r = s.sync(&dropped, "r2").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert!(r.pruned.is_empty(), "{r:?}");
    assert_eq!(base_objects_in(&client, &ns).await, 0);
    assert_eq!(versions(&client, &ns).await, before);
}

#[tokio::test]
async fn a_namespace_the_platform_adopts_is_the_teams() {
    let cp = control_plane::shared();
    let client = cp.client().await;
    let s = syncer(cp).await;
    let (team, ns) = (unique_name("observability"), unique_name("monitoring"));
    namespace_by_hand(&client, &ns).await;
    let before = versions(&client, &ns).await;

    let adopt = format!(
        "{{kind: Namespace, name: {ns}, team: {team}, reason: \"created by hand before pontoon\"}}"
    );
    let u = unit(
        cp,
        &team,
        &[&ns],
        &configmap_yaml(&ns, "dashboards"),
        &adopt,
    );
    let planned = plan_errors(&s, &u).await;
    assert!(
        !planned.iter().any(|(_, m)| m.contains("error[")),
        "{planned:?}"
    );
    let r = s.sync(&u, "r1").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert_eq!(namespace_team(&client, &ns).await, Some(team.clone()));
    // Quota, owners' RoleBinding, NetworkPolicy, the team's Role and its RoleBinding.
    assert_eq!(base_objects_in(&client, &ns).await, 5);
    assert!(r.created.iter().any(|k| k.name == "dashboards"), "{r:?}");
    // What was in it stays as it was.
    let after = versions(&client, &ns).await;
    assert_eq!(after[1..], before[1..]);
}

#[tokio::test]
async fn a_teams_configmap_over_one_made_by_hand_is_refused_until_adopted() {
    let cp = control_plane::shared();
    let client = cp.client().await;
    let s = syncer(cp).await;
    let team = unique_name("cm-owner");
    let r = s
        .sync(
            &unit(cp, &team, &[&team], &configmap_yaml(&team, "a"), ""),
            "r1",
        )
        .await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    configmap_by_hand(&client, &team, "settings").await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &team);
    let before = cms.get("settings").await.expect("settings");

    let app = configmap_yaml(&team, "a") + &configmap_yaml(&team, "settings");
    let u = unit(cp, &team, &[&team], &app, "");
    let planned = plan_errors(&s, &u).await;
    assert_eq!(planned.len(), 1, "{planned:?}");
    assert!(planned[0].1.contains("error[object-exists]"), "{planned:?}");
    let r = s.sync(&u, "r2").await;
    assert_eq!(r.state, UnitState::Failed, "{r:?}");
    let error = error_with(&r, "object-exists");
    assert!(
        error.contains(&format!("teams/{team}/app.yaml:"))
            && error.contains(&format!("team {team}: ConfigMap {team}/settings exists")),
        "{error}"
    );
    let now = cms.get("settings").await.expect("settings");
    assert_eq!(
        now.metadata.resource_version,
        before.metadata.resource_version
    );

    // Dropped again: not pruned, never touched.
    let r = s
        .sync(
            &unit(cp, &team, &[&team], &configmap_yaml(&team, "a"), ""),
            "r3",
        )
        .await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert!(r.pruned.is_empty(), "{r:?}");
    let now = cms.get("settings").await.expect("settings");
    assert_eq!(
        now.metadata.resource_version,
        before.metadata.resource_version
    );

    // The platform adopts it: the team's from now on.
    let adopt = format!(
        "{{kind: ConfigMap, namespace: {team}, name: settings, team: {team}, reason: \"moved into the repo\"}}"
    );
    let r = s.sync(&unit(cp, &team, &[&team], &app, &adopt), "r4").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    let now = cms.get("settings").await.expect("settings");
    let labels = now.metadata.labels.unwrap_or_default();
    assert_eq!(labels.get(LABEL_TEAM), Some(&team));
    assert_eq!(
        now.data
            .unwrap_or_default()
            .get("owner")
            .map(String::as_str),
        Some("team")
    );
}

/// Requests per verb that `sync` sends, from the apiserver's counters, without those
/// the apiserver sends itself.
async fn requests_of(
    cp: &ControlPlane,
    sync: impl std::future::Future<Output = UnitResult>,
) -> (UnitResult, std::collections::BTreeMap<String, u64>) {
    let before = cp.requests_by_resource();
    let r = sync.await;
    let mut by_verb = std::collections::BTreeMap::new();
    for (k, n) in RequestKey::delta(&before, cp.requests_by_resource()) {
        if !THE_APISERVERS_OWN.contains(&k.resource.as_str()) {
            *by_verb
                .entry(format!("{} {}", k.verb, k.resource))
                .or_insert(0) += n;
        }
    }
    (r, by_verb)
}

/// Seeing what exists without pontoon's labels costs no request per object: a sync of a
/// unit with 20 new ConfigMaps, in a namespace where 20 more were made by hand (one under
/// a name the team's files use), sends the same lists as one where none exist, and no get
/// of a ConfigMap. Requests are counted by verb and resource, so a request per ConfigMap is
/// told apart from a `GET` of something else that a slow, loaded sync may add.
#[tokio::test]
async fn what_exists_is_seen_without_a_request_per_object() {
    let cp = control_plane::dedicated("adopt-count");
    let client = cp.client().await;
    let s = syncer(cp).await;
    let (empty, crowded) = (unique_name("empty"), unique_name("crowded"));
    let app = |team: &str| {
        (0..20)
            .map(|i| configmap_yaml(team, &format!("cm-{i}")))
            .collect::<String>()
    };
    for team in [&empty, &crowded] {
        let r = s.sync(&unit(cp, team, &[team], "", ""), "r1").await;
        assert_eq!(r.state, UnitState::Synced, "{r:?}");
    }
    for i in 0..20 {
        configmap_by_hand(&client, &crowded, &format!("by-hand-{i}")).await;
    }
    configmap_by_hand(&client, &crowded, "cm-0").await;

    let (r, quiet) = requests_of(
        cp,
        s.sync(&unit(cp, &empty, &[&empty], &app(&empty), ""), "r2"),
    )
    .await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    let (r, crowded_requests) = requests_of(
        cp,
        s.sync(&unit(cp, &crowded, &[&crowded], &app(&crowded), ""), "r2"),
    )
    .await;
    assert_eq!(r.state, UnitState::Failed, "{r:?}");
    assert_eq!(r.errors.len(), 1, "{r:?}");
    eprintln!("requests of a sync: none by hand {quiet:?}; 21 by hand {crowded_requests:?}");
    let lists = |by: &std::collections::BTreeMap<String, u64>| {
        by.iter()
            .filter(|(k, _)| k.starts_with("LIST "))
            .map(|(k, n)| (k.clone(), *n))
            .collect::<Vec<_>>()
    };
    assert_eq!(lists(&quiet), lists(&crowded_requests));
    assert_eq!(
        crowded_requests.get("GET configmaps"),
        quiet.get("GET configmaps")
    );
}
