//! The first sync of many teams, against a real kube-apiserver: a team's first sync reads
//! its own new Namespace, not every Namespace on the cluster (so a thousand teams' first
//! syncs do not read a million).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::PostParams;
use pontoon::cluster::Cluster;
use pontoon::desired::*;
use pontoon::sync::{SyncOptions, Syncer, UnitState};
use serde_json::json;

use crate::support::control_plane::{self, ControlPlane, RequestKey, unique_name};
use crate::support::fixtures::*;

/// The control plane of these tests: the first one fills it with Namespaces, which no
/// other test should have to page through.
fn plane() -> &'static ControlPlane {
    control_plane::dedicated("first-sync")
}

async fn cluster(cp: &ControlPlane, concurrency: usize) -> Arc<Cluster> {
    let cluster = Cluster::from_config(ClusterName(cp.name.into()), cp.config().await, concurrency)
        .expect("cluster");
    Arc::new(cluster)
}

/// Creates `n` Namespaces made by hand (no pontoon labels), 16 at a time.
async fn crowd(cp: &ControlPlane, prefix: &str, n: usize) {
    let api: Api<Namespace> = Api::all(cp.client().await);
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let name = format!("{prefix}-{i}");
            async move {
                let ns: Namespace =
                    serde_json::from_value(json!({"metadata": {"name": name}})).expect("ns");
                api.create(&PostParams::default(), &ns)
                    .await
                    .expect("create a Namespace")
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
}

/// Requests the apiserver counted while `f` ran, by verb and resource (`LIST namespaces`).
async fn requests_while<T>(
    cp: &ControlPlane,
    f: impl std::future::Future<Output = T>,
) -> (T, BTreeMap<String, u64>) {
    let before = cp.requests_by_resource();
    let out = f.await;
    let mut by = BTreeMap::new();
    for (k, n) in RequestKey::delta(&before, cp.requests_by_resource()) {
        *by.entry(format!("{} {}", k.verb, k.resource)).or_insert(0) += n;
    }
    (out, by)
}

/// On a cluster with 600 Namespaces (more than one page of a list), a new team's first
/// sync lists Namespaces once, for its own label, and reads its new Namespace by name:
/// the other 600 are not read. Ownership is still judged: a Namespace the team claims
/// that another team holds is refused, naming that team.
#[tokio::test]
async fn a_first_sync_reads_the_teams_new_namespace_not_every_namespace() {
    let cp = plane();
    let s = Syncer::new(cluster(cp, 16).await, SyncOptions::default());
    crowd(cp, &unique_name("crowd"), 600).await;
    let (holder, newcomer) = (unique_name("holder"), unique_name("newcomer"));
    let r = s
        .sync(
            &unit_desired(&holder, cp.name, &[&holder], team_base(&holder, &[&holder])),
            "r1",
        )
        .await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");

    let mut objects = team_base(&newcomer, &[&newcomer]);
    objects.push(configmap(&newcomer, &newcomer, "app", json!({"a": "1"})));
    let (r, requests) = requests_while(
        cp,
        s.sync(
            &unit_desired(&newcomer, cp.name, &[&newcomer], objects),
            "r1",
        ),
    )
    .await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    eprintln!("requests of a first sync among 600 Namespaces: {requests:?}");
    assert_eq!(
        requests.get("LIST namespaces").copied().unwrap_or(0),
        1,
        "one list of the team's own Namespaces, none of every Namespace: {requests:?}"
    );
    assert_eq!(
        requests.get("GET namespaces").copied().unwrap_or(0),
        1,
        "its new Namespace read by name: {requests:?}"
    );

    // A second namespace another team holds: refused, found by the same read.
    let mut objects = team_base(&newcomer, &[&newcomer, &holder]);
    objects.push(configmap(&newcomer, &newcomer, "app", json!({"a": "1"})));
    let r = s
        .sync(
            &unit_desired(&newcomer, cp.name, &[&newcomer, &holder], objects),
            "r2",
        )
        .await;
    assert_eq!(r.state, UnitState::Failed, "{r:?}");
    assert!(
        r.errors
            .iter()
            .any(|e| e.object == format!("Namespace/{holder}")
                && e.message.contains(&format!("belongs to team {holder}"))),
        "{r:?}"
    );
}
