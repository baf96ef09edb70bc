//! The sync engine against a real kube-apiserver: create, update, no-op, prune and every
//! safety rule, impersonation, health and plan, a module per concept. Here: the helpers
//! they share.

mod apply;
mod health;
mod ownership;
mod plan;
mod prune;
mod served;

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

pub(crate) async fn syncer(cp: &ControlPlane) -> Syncer {
    let cluster =
        Cluster::from_config(ClusterName(cp.name.into()), cp.config().await, 16).expect("cluster");
    Syncer::new(Arc::new(cluster), SyncOptions::default())
}

pub(crate) fn keys(v: &[ObjectKey]) -> Vec<String> {
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
