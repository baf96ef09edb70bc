//! A manifest naming an API version the cluster does not serve (one Kubernetes removed,
//! a CRD version dropped, a kind the version lacks) fails its unit with one line naming
//! the apiVersion, kind, cluster, file and team.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams};
use pontoon::cluster::Cluster;
use pontoon::desired::{Applier, ClusterName};
use pontoon::sync::{SyncOptions, Syncer, UnitState};
use serde_json::json;

use crate::support::control_plane::{self, ControlPlane, eventually, unique_name};
use crate::support::fixtures::{configmap, obj, team_base, unit_desired};

/// A CRD of its own group serving `v1` only; its `v1beta1` is kept but no longer served.
async fn crd_without_v1beta1(cp: &ControlPlane, group: &str) {
    let crds: Api<CustomResourceDefinition> = Api::all(cp.client().await);
    let version = |name: &str, served: bool, storage: bool| {
        json!({"name": name, "served": served, "storage": storage,
            "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}})
    };
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("widgets.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [version("v1", true, true), version("v1beta1", false, false)]}
    });
    crds.patch(
        &format!("widgets.{group}"),
        &PatchParams::apply("bursts-test").force(),
        &Patch::Apply(crd),
    )
    .await
    .expect("CRD applied");
    eventually("the CRD established", Duration::from_secs(30), || async {
        let crd = crds.get(&format!("widgets.{group}")).await.ok()?;
        let established = crd
            .status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        established.then_some(())
    })
    .await;
}

/// An object whose apiVersion the cluster does not serve fails the unit with one line:
/// the apiVersion, kind and cluster, then the file, line and team it comes from; not the
/// client's debug dump of the apiserver's answer.
#[tokio::test]
async fn an_api_version_the_cluster_does_not_serve_fails_the_unit_in_one_clear_line() {
    let cp = control_plane::shared();
    let cluster =
        Cluster::from_config(ClusterName(cp.name.into()), cp.config().await, 8).expect("cluster");
    let syncer = Arc::new(Syncer::new(Arc::new(cluster), SyncOptions::default()));
    let team = unique_name("served");
    let group = format!("{team}.example.pontoon.dev");
    crd_without_v1beta1(cp, &group).await;

    let cases = [
        // Removed from Kubernetes in 1.16.
        json!({"apiVersion": "extensions/v1beta1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": team}, "spec": {}}),
        // A CRD version no longer served.
        json!({"apiVersion": format!("{group}/v1beta1"), "kind": "Widget",
            "metadata": {"name": "w", "namespace": team}}),
        // A kind the served version does not have.
        json!({"apiVersion": "v1", "kind": "Frobnicator",
            "metadata": {"name": "f", "namespace": team}}),
    ];
    for manifest in cases {
        let api_version = manifest["apiVersion"]
            .as_str()
            .expect("apiVersion")
            .to_owned();
        let kind = manifest["kind"].as_str().expect("kind").to_owned();
        let mut objects = team_base(&team, &[&team]);
        objects.push(configmap(&team, &team, "settings", json!({"k": "v"})));
        objects.push(obj(&team, Applier::Team, manifest));
        let u = unit_desired(&team, cp.name, &[&team], objects);
        let r = syncer.sync(&u, "r1").await;
        assert_eq!(r.state, UnitState::Failed, "{r:?}");
        let message = r.message.clone().unwrap_or_default();
        let want = format!(
            "apiVersion {api_version} kind {kind} is not served by cluster {} (from teams/{team}/app.yaml:1, team {team})",
            cp.name
        );
        assert!(
            message.starts_with("1 object failed; first: ") && message.ends_with(&want),
            "{message}\nwants to end with\n{want}"
        );
        assert!(!message.contains('\n'), "{message}");
        assert_eq!(r.errors.len(), 1, "{r:?}");
        assert_eq!(
            r.errors[0].message, want,
            "the object's own error is the same line"
        );
    }
}
