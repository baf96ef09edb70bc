//! The harness itself: a real apiserver that speaks server-side apply, and two clusters
//! that are truly separate.

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::support::control_plane::{self, unique_name};

#[tokio::test]
async fn server_side_apply_records_pontoon_as_field_manager() {
    let cp = control_plane::shared();
    let client = cp.client().await;
    let ns = unique_name("ssa");
    let params = PatchParams::apply("pontoon");

    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .patch(
            &ns,
            &params,
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"app.kubernetes.io/managed-by": "pontoon"}}
            })),
        )
        .await
        .expect("apply namespace");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    cms.patch(
        "settings",
        &params,
        &Patch::Apply(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "settings", "namespace": ns},
            "data": {"colour": "blue"}
        })),
    )
    .await
    .expect("apply configmap");

    let cm = cms.get("settings").await.expect("read back");
    assert_eq!(
        cm.data
            .as_ref()
            .and_then(|d| d.get("colour"))
            .map(String::as_str),
        Some("blue")
    );
    let managers: Vec<_> = cm
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            (
                m.manager.unwrap_or_default(),
                m.operation.unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        managers.contains(&("pontoon".to_owned(), "Apply".to_owned())),
        "managedFields should name pontoon: {managers:?}"
    );
    let ns_obj = namespaces.get(&ns).await.expect("namespace read back");
    assert!(
        ns_obj
            .metadata
            .managed_fields
            .unwrap_or_default()
            .iter()
            .any(|m| m.manager.as_deref() == Some("pontoon")),
        "namespace managedFields should name pontoon"
    );
}

#[tokio::test]
async fn two_clusters_are_separate() {
    let (one, two) = (control_plane::shared(), control_plane::second());
    assert_ne!(one.api_server, two.api_server);
    let ns = unique_name("only-on-one");
    let on_one: Api<Namespace> = Api::all(one.client().await);
    let on_two: Api<Namespace> = Api::all(two.client().await);
    on_one
        .patch(
            &ns,
            &PatchParams::apply("pontoon"),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            ),
        )
        .await
        .expect("apply on cluster one");
    assert!(on_one.get_opt(&ns).await.expect("get on one").is_some());
    assert!(
        on_two.get_opt(&ns).await.expect("get on two").is_none(),
        "namespace leaked to cluster two"
    );
    // Each has its own etcd: the second cluster's uid for kube-system differs.
    let uid = |n: Namespace| n.metadata.uid.unwrap_or_default();
    assert_ne!(
        uid(on_one.get("kube-system").await.expect("one")),
        uid(on_two.get("kube-system").await.expect("two"))
    );
}
