//! `plan`: what a sync would do to each object, computed with dry runs and writing
//! nothing.

use super::*;

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
