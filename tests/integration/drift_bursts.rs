//! Drift correction through the daemon's own wiring (watch, judge, scheduler, sync) when
//! one object is edited many times in a row: a burst of hand edits, or two edits a few
//! milliseconds apart, must end with the object corrected, and a later single edit must be
//! corrected too. The full resync is an hour away, so only the drift watches can do it.
//!
//! A field someone removes while the team's sync runs, just after that sync applied the
//! object, is drift too: it is judged once the sync is over.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};
use pontoon::cluster::Cluster;
use pontoon::desired::{ClusterName, DesiredState, TeamName};
use pontoon::drift::{DriftEvent, DriftFailure, DriftSettings, DriftWatch, kinds_of};
use pontoon::sync::{SyncOptions, Syncer, UnitState};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::support::control_plane::{self, ControlPlane, eventually, unique_name};
use crate::support::daemon::{Daemon, write};
use crate::support::daemon_config::DaemonConfig;
use crate::support::fixtures::{configmap, team_base, unit_desired};

/// An object edited by hand is back at `value: desired` within this long.
const CORRECTED_WITHIN: Duration = Duration::from_secs(20);

/// A platform repo of one team in namespace `team`, owning one ConfigMap `settings`.
fn platform(repo: &Path, cluster: &str, team: &str) {
    write(
        repo,
        "platform.yaml",
        &format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {{name: bursts}}\nspec:\n  clusters: [{{name: {cluster}}}]\n  policy:\n    allowedKinds: [{{group: \"\", kind: ConfigMap}}]\n"
        ),
    );
    write(
        repo,
        &format!("teams/{team}/team.yaml"),
        &format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {team}}}\nspec:\n  namespaces: [{team}]\n  clusters: {{names: [{cluster}]}}\n"
        ),
    );
    write(
        repo,
        &format!("teams/{team}/app.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {value: desired}\n",
    );
}

/// `kubectl edit` of `settings`: `data.value` becomes `value`.
async fn hand_edit(cms: &Api<ConfigMap>, value: &str) {
    let pp = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    };
    cms.patch(
        "settings",
        &pp,
        &Patch::Merge(json!({"data": {"value": value}})),
    )
    .await
    .expect("hand edit");
}

async fn value(cms: &Api<ConfigMap>) -> Option<String> {
    cms.get("settings").await.ok()?.data?.remove("value")
}

/// Waits until `settings` holds `value: desired` again; fails naming `after`.
async fn corrected(cms: &Api<ConfigMap>, after: &str) {
    eventually(
        &format!("settings corrected after {after}"),
        CORRECTED_WITHIN,
        || async { (value(cms).await? == "desired").then_some(()) },
    )
    .await;
}

/// The team's unit as /api/status shows it.
async fn unit(daemon: &Daemon, team: &str) -> Option<Value> {
    let s = daemon.status().await?;
    s["units"]
        .as_array()?
        .iter()
        .find(|u| u["team"] == team)
        .cloned()
}

/// The daemon running the one-team repo on the shared control plane, once the unit is
/// Synced and its drift watch corrects an edit.
async fn started(cp: &ControlPlane, dir: &Path, team: &str, cms: &Api<ConfigMap>) -> Daemon {
    let repo = dir.join("platform");
    platform(&repo, cp.name, team);
    let config = DaemonConfig::dir(&repo)
        .cluster(cp.name, &cp.kubeconfig)
        .inventory_namespace(&unique_name("bursts-inv"))
        .resync_interval("1h");
    let daemon = Daemon::start(&config.write(dir));
    eventually("the unit Synced", Duration::from_secs(60), || async {
        (unit(&daemon, team).await?["state"] == "Synced").then_some(())
    })
    .await;
    // The watches start after the first sync: edit until one is corrected, so the burst
    // below is seen from its first edit.
    eventually(
        "a first edit corrected",
        Duration::from_secs(60),
        || async {
            hand_edit(cms, "warm-up").await;
            for _ in 0..50 {
                if value(cms).await.as_deref() == Some("desired") {
                    return Some(());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None
        },
    )
    .await;
    daemon
}

/// Every edit that leaves the object different from what pontoon applied is corrected:
/// a burst of 50 edits a second, and pairs of edits 10 ms apart, each end corrected, as
/// does a single edit after them; and the unit shows no drift left open.
#[tokio::test]
async fn bursts_of_edits_to_one_object_all_end_corrected() {
    let cp = control_plane::shared();
    let tmp = tempfile::tempdir().expect("tempdir");
    let team = unique_name("bursts");
    let cms: Api<ConfigMap> = Api::namespaced(cp.client().await, &team);
    let daemon = started(cp, tmp.path(), &team, &cms).await;

    for round in 0..3 {
        for n in 0..50 {
            hand_edit(&cms, &format!("burst-{round}-{n}")).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        corrected(&cms, &format!("burst {round} of 50 edits at 50/s")).await;
    }
    for pair in 0..5 {
        hand_edit(&cms, &format!("pair-{pair}-a")).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        hand_edit(&cms, &format!("pair-{pair}-b")).await;
        corrected(&cms, &format!("pair {pair} of edits 10 ms apart")).await;
    }
    // A later single edit of the same object is seen and corrected too.
    hand_edit(&cms, "single").await;
    corrected(&cms, "a single edit after the bursts").await;

    // No drift is left open on the unit, and it stays Synced.
    let u = eventually("the drift shown corrected", CORRECTED_WITHIN, || async {
        let u = unit(&daemon, &team).await?;
        let open = u["drifted"]
            .as_array()?
            .iter()
            .any(|d| d["corrected"] != true);
        (!open).then_some(u)
    })
    .await;
    assert_eq!(u["state"], "Synced", "{u}");
    assert_eq!(value(&cms).await.as_deref(), Some("desired"));
    daemon.finish().await;
}

/// A unit of `n` ConfigMaps in namespace `team`; `aaa` (applied first) has label
/// `tier: web`, and every one holds `data.k: value`.
fn many(team: &str, cluster: &str, n: usize, value: &str) -> pontoon::desired::UnitDesired {
    let mut objects = team_base(team, &[team]);
    let mut first = configmap(team, team, "aaa", json!({"k": value}));
    Arc::make_mut(&mut first.object)["metadata"]["labels"]["tier"] = json!("web");
    objects.push(first);
    for i in 0..n {
        objects.push(configmap(
            team,
            team,
            &format!("cm-{i:04}"),
            json!({"k": value}),
        ));
    }
    let mut u = unit_desired(team, cluster, &[team], objects);
    u.prune.max_share = 1.0;
    u
}

/// A label pontoon set, removed by a person while the unit's sync still runs but after
/// that sync applied the object: reported (and so corrected) once the sync is over.
/// Without that, the removal looked like pontoon's own write in flight and was dropped.
#[tokio::test]
async fn a_field_removed_while_the_sync_runs_is_drift_once_it_is_over() {
    let cp = control_plane::shared();
    let cluster =
        Cluster::from_config(ClusterName(cp.name.into()), cp.config().await, 4).expect("cluster");
    let syncer = Arc::new(Syncer::new(Arc::new(cluster), SyncOptions::default()));
    let team = unique_name("removed");
    let first = many(&team, cp.name, 400, "one");
    assert_eq!(syncer.sync(&first, "r1").await.state, UnitState::Synced);

    let mut state = DesiredState::default();
    state.units.insert(first.unit.clone(), first);
    let (events_tx, mut events) = mpsc::channel::<DriftEvent>(1024);
    let (failures, _keep) = mpsc::channel::<DriftFailure>(64);
    let settings = DriftSettings {
        human_managers: Vec::new(),
        reporter_instance: "bursts-test".into(),
    };
    let watch = DriftWatch::new(syncer.clone(), events_tx, failures, &settings);
    watch
        .ensure(kinds_of(&state, &ClusterName(cp.name.into())))
        .await;
    tokio::time::timeout(Duration::from_secs(30), watch.listed())
        .await
        .expect("the drift watch lists within 30s");

    // A new revision rewrites every ConfigMap; once `aaa` shows it, a person removes the
    // label while the other objects are still being applied.
    let cms: Api<ConfigMap> = Api::namespaced(cp.client().await, &team);
    let second = many(&team, cp.name, 400, "two");
    let sync = tokio::spawn({
        let syncer = syncer.clone();
        async move { syncer.sync(&second, "r2").await }
    });
    eventually(
        "aaa applied by the sync",
        Duration::from_secs(30),
        || async {
            let cm = cms.get("aaa").await.ok()?;
            (cm.data?.get("k")?.as_str() == "two").then_some(())
        },
    )
    .await;
    cms.patch(
        "aaa",
        &PatchParams {
            field_manager: Some("kubectl-label".into()),
            ..Default::default()
        },
        &Patch::Json::<()>(
            serde_json::from_value(json!([{"op": "remove", "path": "/metadata/labels/tier"}]))
                .expect("patch"),
        ),
    )
    .await
    .expect("label removed");
    assert!(
        syncer.is_syncing(&TeamName(team.clone())),
        "the sync ended before the removal: make the unit bigger"
    );
    assert_eq!(sync.await.expect("sync").state, UnitState::Synced);

    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = events.recv().await {
            if e.key.name == "aaa" && !e.corrected {
                return e;
            }
        }
        panic!("drift channel closed");
    })
    .await
    .expect("the removal is reported once the sync is over");
    assert_eq!(seen.paths, ["/metadata/labels/tier"], "{seen:?}");
    watch.stop();
}
