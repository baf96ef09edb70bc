//! What a resync of an unchanged unit costs the apiserver: with the drift watches of its
//! kinds running since a full sync found nothing to do, its inventory's read and no list;
//! every `fullResyncEvery`-th resync lists anyway, and a change the watches could not
//! see (made while they were stopped) is found by the next resync, which lists.
//!
//! Requests are counted from the apiserver's `apiserver_request_total` on a control plane
//! of this module's own, one test at a time, so no other test's requests are counted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};
use pontoon::cluster::Cluster;
use pontoon::desired::*;
use pontoon::drift::{DriftEvent, DriftFailure, DriftSettings, DriftWatch, kinds_of};
use pontoon::sync::{SyncOptions, Syncer, UnitResult, UnitState};
use serde_json::json;
use tokio::sync::mpsc;

use crate::support::control_plane::{self, ControlPlane, RequestKey, unique_name};
use crate::support::fixtures::*;

/// The tests of this module count requests on one control plane: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn syncer(cp: &ControlPlane, full_resync_every: u32) -> Arc<Syncer> {
    let cluster =
        Cluster::from_config(ClusterName(cp.name.into()), cp.config().await, 8).expect("cluster");
    let options = SyncOptions {
        full_resync_every,
        ..SyncOptions::default()
    };
    Arc::new(Syncer::new(Arc::new(cluster), options))
}

/// A team's base, three ConfigMaps and a Secret: five kinds, four of them listed per
/// namespace (the Namespace is listed too, but so is it by the apiserver's own loops).
fn unit_of(cp: &ControlPlane, team: &str) -> UnitDesired {
    let mut objects = team_base(team, &[team]);
    for name in ["settings", "flags", "limits"] {
        objects.push(configmap(team, team, name, json!({"mode": "calm"})));
    }
    objects.push(obj(
        team,
        Applier::Team,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "token", "namespace": team},
               "data": {"token": "c2VjcmV0"}}),
    ));
    unit_desired(team, cp.name, &[team], objects)
}

/// Drift watches of the unit's kinds, once each has listed. Their drift reports are
/// kept, not acted on: only the test's own syncs run.
async fn watching(
    syncer: &Arc<Syncer>,
    cp: &ControlPlane,
    u: &UnitDesired,
) -> (
    Arc<DriftWatch>,
    mpsc::Receiver<DriftEvent>,
    mpsc::Receiver<DriftFailure>,
) {
    let (tx, rx) = mpsc::channel(256);
    let (failures_tx, failures) = mpsc::channel(256);
    let settings = DriftSettings {
        human_managers: Vec::new(),
        reporter_instance: "resync-cost-tests".into(),
    };
    let watch = DriftWatch::new(syncer.clone(), tx, failures_tx, &settings);
    let mut state = DesiredState::default();
    state.units.insert(u.unit.clone(), u.clone());
    watch
        .ensure(kinds_of(&state, &ClusterName(cp.name.into())))
        .await;
    tokio::time::timeout(Duration::from_secs(30), watch.listed())
        .await
        .expect("the drift watches list within 30s");
    (watch, rx, failures)
}

/// The resources of the unit's kinds that the apiserver's own loops never ask for
/// (it reads Namespaces itself, and updates others, such as its FlowSchemas' status).
const COUNTED: [&str; 4] = ["configmaps", "secrets", "roles", "rolebindings"];

/// The requests one sync sends for the [`COUNTED`] resources, by verb and resource, and
/// its result. The counters are read a second after the previous requests so that none
/// still being counted falls into this sync's window.
async fn requests_of(
    cp: &ControlPlane,
    s: &Syncer,
    u: &UnitDesired,
) -> (UnitResult, BTreeMap<String, u64>) {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = cp.requests_by_resource();
    let r = s.sync(u, "r1").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut by = BTreeMap::new();
    for (k, n) in RequestKey::delta(&before, cp.requests_by_resource()) {
        if COUNTED.contains(&k.resource.as_str()) {
            let verb = if k.dry_run {
                format!("{} (dry run)", k.verb)
            } else {
                k.verb
            };
            *by.entry(format!("{verb} {}", k.resource)).or_insert(0) += n;
        }
    }
    (r, by)
}

fn lists(by: &BTreeMap<String, u64>) -> u64 {
    by.iter()
        .filter(|(k, _)| k.starts_with("LIST "))
        .map(|(_, n)| n)
        .sum()
}

fn writes(by: &BTreeMap<String, u64>) -> u64 {
    const WRITES: [&str; 6] = [
        "POST",
        "PUT",
        "PATCH",
        "APPLY",
        "DELETE",
        "DELETECOLLECTION",
    ];
    by.iter()
        .filter(|(k, _)| WRITES.iter().any(|w| k.starts_with(&format!("{w} "))))
        .map(|(_, n)| n)
        .sum()
}

/// A resync that found the unit unchanged, with the requests it sent.
async fn resync(
    cp: &ControlPlane,
    s: &Syncer,
    u: &UnitDesired,
    what: &str,
) -> BTreeMap<String, u64> {
    let (r, by) = requests_of(cp, s, u).await;
    assert_eq!(r.state, UnitState::Synced, "{what}: {r:?}");
    assert_eq!(r.unchanged, u.objects.len(), "{what}: {r:?}");
    assert_eq!(writes(&by), 0, "{what} wrote: {by:?}");
    eprintln!("{what}: {by:?}");
    by
}

/// With the watches running, a resync of an unchanged unit reads its inventory and lists
/// nothing, once a full resync found it unchanged; with `fullResyncEvery: 3`, the third
/// resync after that full one lists again (and the count starts over).
#[tokio::test]
async fn a_resync_of_an_unchanged_unit_lists_nothing_while_the_watches_run_and_every_nth_lists() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let cp = control_plane::dedicated("resync-cost");
    let s = syncer(cp, 3).await;
    let team = unique_name("quiet");
    let u = unit_of(cp, &team);
    let r = s.sync(&u, "r1").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    let (_watch, _drift, _failures) = watching(&s, cp, &u).await;

    let full = resync(cp, &s, &u, "the first resync with the watches running").await;
    assert!(
        lists(&full) >= 4,
        "a full resync lists each kind in the namespace: {full:?}"
    );
    for n in 1..=2 {
        let answered = resync(cp, &s, &u, &format!("resync {n} after the full one")).await;
        assert_eq!(
            lists(&answered),
            0,
            "resync {n} after a full one with the watches running listed: {answered:?}"
        );
        assert_eq!(answered.get("GET configmaps"), Some(&1), "{answered:?}");
        assert_eq!(
            answered.values().sum::<u64>(),
            1,
            "only the inventory: {answered:?}"
        );
    }
    let third = resync(cp, &s, &u, "the third resync after the full one").await;
    assert!(
        lists(&third) >= 4,
        "every third resync lists (fullResyncEvery 3): {third:?}"
    );
    let again = resync(cp, &s, &u, "the resync after that").await;
    assert_eq!(lists(&again), 0, "the count starts over: {again:?}");
    // A reconcile someone asked for checks the cluster itself.
    s.list_on_next_sync(&u.unit.team);
    let asked = resync(cp, &s, &u, "a reconcile asked for").await;
    assert!(lists(&asked) >= 4, "a reconcile asked for lists: {asked:?}");
    eprintln!(
        "requests per unit: full resync {} ({} lists), answered from the watches {}",
        full.values().sum::<u64>(),
        lists(&full),
        again.values().sum::<u64>()
    );
}

/// `kubectl edit` of the ConfigMap `settings`: `data.mode` becomes `wild`.
async fn edit_by_hand(cms: &Api<ConfigMap>) {
    cms.patch(
        "settings",
        &PatchParams {
            field_manager: Some("kubectl-edit".into()),
            ..Default::default()
        },
        &Patch::Merge(json!({"data": {"mode": "wild"}})),
    )
    .await
    .expect("hand edit");
}

async fn mode(cms: &Api<ConfigMap>) -> String {
    let cm = cms.get("settings").await.expect("settings");
    cm.data
        .unwrap_or_default()
        .get("mode")
        .cloned()
        .unwrap_or_default()
}

/// A hand edit made while the drift watches are stopped is found by the next resync,
/// which lists instead of trusting what the stopped watch last saw; so is one made while
/// they run, and after the watches start again the first resync lists before the next
/// may answer from them.
#[tokio::test]
async fn a_hand_edit_the_watches_did_not_see_is_found_by_the_next_resync() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let cp = control_plane::dedicated("resync-cost");
    let s = syncer(cp, 100).await;
    let team = unique_name("edited");
    let u = unit_of(cp, &team);
    let cms: Api<ConfigMap> = Api::namespaced(cp.client().await, &team);
    let r = s.sync(&u, "r1").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    let (watch, _drift, _failures) = watching(&s, cp, &u).await;
    resync(cp, &s, &u, "the full resync").await;
    let answered = resync(cp, &s, &u, "a resync answered by the watches").await;
    assert_eq!(lists(&answered), 0, "{answered:?}");

    // Stopped: what the watch last saw no longer counts.
    watch.stop();
    edit_by_hand(&cms).await;
    let (r, by) = requests_of(cp, &s, &u).await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert!(
        lists(&by) >= 4,
        "a resync with the watches stopped lists: {by:?}"
    );
    assert_eq!(
        mode(&cms).await,
        "calm",
        "the edit made while the watches were stopped is corrected by the resync ({r:?}, {by:?})"
    );

    // Started again: the first resync lists, the next answers from them.
    let (_watch, _drift, _failures) = watching(&s, cp, &u).await;
    let first = resync(cp, &s, &u, "the first resync once the watches run again").await;
    assert!(lists(&first) >= 4, "{first:?}");
    let next = resync(cp, &s, &u, "the next resync").await;
    assert_eq!(lists(&next), 0, "{next:?}");

    // An edit the running watch sees: the resync lists and corrects it.
    edit_by_hand(&cms).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (r, by) = requests_of(cp, &s, &u).await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert!(lists(&by) >= 4, "a resync after an edit lists: {by:?}");
    assert_eq!(mode(&cms).await, "calm", "{r:?}");
}
