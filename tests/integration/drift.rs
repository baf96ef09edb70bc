//! Drift against the real control plane: the watch sees hand edits to fields pontoon
//! applied and names who made them; controllers' fields and pontoon's own writes are not
//! drift; `correct` re-applies, `report` leaves the object and marks the unit.
//!
//! Every check that nothing is drift ends with a control: a hand edit of another team's
//! object that the same watch must report, so a watch that delivers nothing fails.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use pontoon::cluster::Cluster;
use pontoon::desired::*;
use pontoon::drift::{DriftEvent, DriftFailure, DriftSettings, DriftWatch, kinds_of};
use pontoon::sync::{SyncOptions, Syncer, UnitState};
use serde_json::json;
use tokio::sync::mpsc;

use crate::support::control_plane::{self, ControlPlane, unique_name};
use crate::support::fixtures::*;

async fn syncer(cp: &ControlPlane) -> Arc<Syncer> {
    let cluster =
        Cluster::from_config(ClusterName(cp.name.into()), cp.config().await, 8).expect("cluster");
    Arc::new(Syncer::new(Arc::new(cluster), SyncOptions::default()))
}

/// Drift watches on every kind `state` holds on the control plane, once each has listed
/// what is there: from then on a change is seen. Drift failures are logged, not checked.
async fn watching(
    syncer: &Arc<Syncer>,
    cp: &ControlPlane,
    state: &DesiredState,
) -> (Arc<DriftWatch>, mpsc::Receiver<DriftEvent>) {
    let (watch, rx, _) = watching_with_failures(syncer, cp, state).await;
    (watch, rx)
}

/// [`watching`], with the drift failures the watches report.
async fn watching_with_failures(
    syncer: &Arc<Syncer>,
    cp: &ControlPlane,
    state: &DesiredState,
) -> (
    Arc<DriftWatch>,
    mpsc::Receiver<DriftEvent>,
    mpsc::Receiver<DriftFailure>,
) {
    let (tx, rx) = mpsc::channel(64);
    let (failures_tx, failures) = mpsc::channel::<DriftFailure>(64);
    let settings = DriftSettings {
        human_managers: Vec::new(),
        reporter_instance: "drift-tests".into(),
    };
    let watch = DriftWatch::new(syncer.clone(), tx, failures_tx, &settings);
    watch
        .ensure(kinds_of(state, &ClusterName(cp.name.into())))
        .await;
    tokio::time::timeout(Duration::from_secs(30), watch.listed())
        .await
        .expect("the drift watches list within 30s");
    (watch, rx, failures)
}

/// A team of its own whose ConfigMaps `control-<n>` are edited by hand after each quiet
/// period, one per check: the watch must report each edit.
struct Control {
    team: String,
    configmaps: Api<k8s_openapi::api::core::v1::ConfigMap>,
    used: usize,
}

impl Control {
    const EDITS: usize = 3;

    /// Adds the control team to `state` and syncs it; call before [`watching`].
    async fn start(syncer: &Syncer, cp: &ControlPlane, state: &mut DesiredState) -> Control {
        let team = unique_name("control");
        let mut objects = team_base(&team, &[&team]);
        for n in 1..=Control::EDITS {
            objects.push(configmap(
                &team,
                &team,
                &format!("control-{n}"),
                json!({"k": "v"}),
            ));
        }
        let u = unit_desired(&team, cp.name, &[&team], objects);
        assert_eq!(syncer.sync(&u, "r1").await.state, UnitState::Synced);
        state.units.insert(u.unit.clone(), u);
        Control {
            configmaps: Api::namespaced(cp.client().await, &team),
            team,
            used: 0,
        }
    }
}

/// `kubectl edit` of the ConfigMap `settings`: `data.mode` becomes `yolo`.
async fn edit_settings_by_hand(
    cp: &ControlPlane,
    namespace: &str,
) -> Api<k8s_openapi::api::core::v1::ConfigMap> {
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(cp.client().await, namespace);
    cms.patch(
        "settings",
        &PatchParams {
            field_manager: Some("kubectl-edit".into()),
            ..Default::default()
        },
        &Patch::Merge(json!({"data": {"mode": "yolo"}})),
    )
    .await
    .expect("hand edit");
    cms
}

/// A strategic-merge patch of Deployment `web` by field manager `manager`, as `kubectl
/// edit` or a controller would send it.
async fn strategic_as(
    deployments: &Api<Deployment>,
    manager: &str,
    patch: serde_json::Value,
    what: &str,
) {
    deployments
        .patch(
            "web",
            &PatchParams {
                field_manager: Some(manager.into()),
                ..Default::default()
            },
            &Patch::Strategic(patch),
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
}

async fn next(rx: &mut mpsc::Receiver<DriftEvent>, what: &str) -> DriftEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no drift event for {what} within 10s"))
        .expect("channel open")
}

/// Nothing arrives for 2 s after `what`; then the control's next hand edit must arrive,
/// so a quiet watch is one that still sees drift.
async fn quiet(rx: &mut mpsc::Receiver<DriftEvent>, what: &str, control: &mut Control) {
    if let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
        panic!("{what} must not be drift, got {e:?}");
    }
    control.used += 1;
    let name = format!("control-{}", control.used);
    control
        .configmaps
        .patch(
            &name,
            &PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"data": {"k": "edited"}})),
        )
        .await
        .expect("control edit");
    let e = next(rx, &format!("the control edit after {what}")).await;
    assert_eq!(
        (e.key.namespace.as_str(), e.key.name.as_str(), e.corrected),
        (control.team.as_str(), name.as_str(), false),
        "after {what}: {e:?}"
    );
}

#[tokio::test]
async fn hand_edits_are_detected_named_and_corrected_and_controller_fields_are_not() {
    // Real controllers: the deployment controller writes the status and its revision
    // annotation as the Deployment rolls out and scales.
    let cp = control_plane::with_nodes();
    let syncer = syncer(cp).await;
    let team = unique_name("drift");
    let mut objects = team_base(&team, &[&team]);
    // Like the WebService kind: no replicas, so an HPA can own them.
    let mut web = deployment(&team, &team, "web", "shop:1.0", 1);
    std::sync::Arc::make_mut(&mut web.object)["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("replicas");
    // Like the Worker kind without args: an empty list the apiserver drops on write.
    std::sync::Arc::make_mut(&mut web.object)["spec"]["template"]["spec"]["containers"][0]["args"] =
        json!([]);
    objects.push(web);
    let mut state = DesiredState {
        revision: "r1".into(),
        ..DesiredState::default()
    };
    let u = unit_desired(&team, cp.name, &[&team], objects);
    state.units.insert(u.unit.clone(), u.clone());
    assert_eq!(syncer.sync(&u, "r1").await.state, UnitState::Progressing);
    let mut control = Control::start(&syncer, cp, &mut state).await;

    let (watch, mut rx) = watching(&syncer, cp, &state).await;
    let deployments: Api<Deployment> = Api::namespaced(cp.client().await, &team);

    // pontoon's own apply is not drift.
    let _ = syncer.sync(&u, "r1").await;
    quiet(&mut rx, "pontoon's own apply", &mut control).await;

    // A controller's field (the HPA's replicas) and the status the deployment controller
    // writes as it scales up: not drift, and neither is the empty args list the
    // apiserver did not keep.
    deployments
        .patch("web", &PatchParams::apply("horizontal-pod-autoscaler").force(), &Patch::Apply(json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 5}})))
        .await
        .expect("hpa scales");
    quiet(
        &mut rx,
        "the HPA's replicas and the rollout's status updates",
        &mut control,
    )
    .await;
    control_plane::eventually(
        "the deployment controller scaling up",
        Duration::from_secs(30),
        || async {
            let status = deployments.get("web").await.ok()?.status?;
            (status.replicas? == 5).then_some(())
        },
    )
    .await;

    // A person changes the image: detected, with who did it.
    strategic_as(
        &deployments,
        "kubectl-set",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "evil:6.6.6"}]}}}}),
        "hand edit",
    )
    .await;
    let e = next(&mut rx, "the image change").await;
    assert!(!e.corrected);
    assert_eq!(e.manager, "kubectl-set");
    assert!(e.by_person, "kubectl-set stands for a person");
    assert_eq!(e.paths, ["/spec/template/spec/containers/0/image"]);
    assert!(!e.at.is_empty());

    // Correct mode: the unit's sync puts it back, and the watch sees it corrected.
    let r = syncer.sync(&u, "r1").await;
    assert!(
        r.conflicts
            .iter()
            .any(|c| c.message.contains("took ownership")),
        "{r:?}"
    );
    let e = next(&mut rx, "the correction").await;
    assert!(e.corrected, "{e:?}");
    let live = deployments.get("web").await.expect("get");
    assert_eq!(live.spec.replicas, Some(5), "the HPA keeps its replicas");
    let image = live
        .spec
        .template
        .spec
        .map(|p| p.containers[0].image.clone().unwrap_or_default());
    assert_eq!(image.as_deref(), Some("shop:1.0"));

    // Deleted: detected and recreated by the next sync.
    deployments
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    let e = next(&mut rx, "the deletion").await;
    assert_eq!(e.paths, ["(deleted)"]);
    let r = syncer.sync(&u, "r1").await;
    assert!(r.created.iter().any(|k| k.name == "web"), "{r:?}");
    watch.stop();
}

#[tokio::test]
async fn report_mode_leaves_the_object_and_marks_the_unit_out_of_sync() {
    let cp = control_plane::with_nodes();
    let syncer = syncer(cp).await;
    let team = unique_name("report");
    let mut objects = team_base(&team, &[&team]);
    let mut cm = configmap(&team, &team, "settings", json!({"mode": "safe"}));
    cm.drift = DriftMode::Report;
    objects.push(cm);
    let mut web = deployment(&team, &team, "web", "shop:1.0", 1);
    web.drift = DriftMode::Report;
    objects.push(web);
    let u = unit_desired(&team, cp.name, &[&team], objects);
    assert_eq!(syncer.sync(&u, "r1").await.state, UnitState::Progressing);

    // The deployment controller writing the status as the rollout goes on moves the
    // object's version; that is not drift.
    control_plane::eventually("the rollout", Duration::from_secs(90), || async {
        let r = syncer.sync(&u, "r1").await;
        assert!(r.drifted.is_empty(), "{r:?}");
        (r.state == UnitState::Synced).then_some(())
    })
    .await;
    for _ in 0..2 {
        let r = syncer.sync(&u, "r1").await;
        assert_eq!(r.state, UnitState::Synced, "{r:?}");
        assert!(r.drifted.is_empty(), "{r:?}");
        assert_eq!(r.writes, 0, "{r:?}");
    }

    let cms = edit_settings_by_hand(cp, &team).await;
    let r = syncer.sync(&u, "r1").await;
    assert_eq!(r.state, UnitState::OutOfSync, "{r:?}");
    assert_eq!(r.drifted.len(), 1);
    assert!(
        r.message
            .as_deref()
            .unwrap_or("")
            .contains("drift mode report"),
        "{r:?}"
    );
    let live = cms.get("settings").await.expect("get");
    assert_eq!(
        live.data.and_then(|d| d.get("mode").cloned()).as_deref(),
        Some("yolo"),
        "report mode leaves it"
    );
}

/// Report mode: a hand edit stays open until it is gone, and it is gone when the repo
/// adopts it. The sync that applies the adopted value is pontoon's own write in flight
/// when the watch sees it; the drift must still close once that sync is done.
#[tokio::test]
async fn drift_left_in_report_mode_closes_when_the_repo_adopts_the_change() {
    let cp = control_plane::shared();
    let syncer = syncer(cp).await;
    let team = unique_name("adopt");
    let unit = |mode: &str| {
        let mut objects = team_base(&team, &[&team]);
        let mut cm = configmap(&team, &team, "settings", json!({"mode": mode}));
        cm.drift = DriftMode::Report;
        objects.push(cm);
        unit_desired(&team, cp.name, &[&team], objects)
    };
    let mut state = DesiredState::default();
    let u = unit("safe");
    state.units.insert(u.unit.clone(), u.clone());
    let mut control = Control::start(&syncer, cp, &mut state).await;
    let (watch, mut rx) = watching(&syncer, cp, &state).await;
    assert_eq!(syncer.sync(&u, "r1").await.state, UnitState::Synced);
    quiet(&mut rx, "pontoon's own apply", &mut control).await;

    edit_settings_by_hand(cp, &team).await;
    let e = next(&mut rx, "the hand edit").await;
    assert!(!e.corrected, "{e:?}");

    let r = syncer.sync(&unit("yolo"), "r2").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    let e = next(&mut rx, "the adopted change").await;
    assert!(e.corrected, "{e:?}");
    assert_eq!(e.key.name, "settings");
    watch.stop();
}

/// pontoon's own prunes are not drift: neither a commit dropping an object nor a team
/// leaving the repo reports the deletions it makes.
#[tokio::test]
async fn pontoons_own_prunes_are_not_drift() {
    let cp = control_plane::shared();
    let syncer = syncer(cp).await;
    let team = unique_name("pruned");
    let unit = |names: &[&str]| {
        let mut objects = team_base(&team, &[&team]);
        for n in names {
            objects.push(configmap(&team, &team, n, json!({"k": "v"})));
        }
        let mut u = unit_desired(&team, cp.name, &[&team], objects);
        u.prune.max_share = 1.0;
        u
    };
    let all = unit(&["a", "b", "c", "d"]);
    let mut state = DesiredState::default();
    state.units.insert(all.unit.clone(), all.clone());
    let mut control = Control::start(&syncer, cp, &mut state).await;
    let (watch, mut rx) = watching(&syncer, cp, &state).await;
    assert_eq!(syncer.sync(&all, "r1").await.state, UnitState::Synced);
    quiet(&mut rx, "pontoon's own apply", &mut control).await;

    let r = syncer.sync(&unit(&["a"]), "r2").await;
    assert_eq!(r.pruned.len(), 3, "{r:?}");
    quiet(&mut rx, "a commit's prune", &mut control).await;

    let last = unit(&["a"]);
    let r = syncer.remove_team(&last.unit.team, &last.prune, "r3").await;
    assert!(r.errors.is_empty() && !r.pruned.is_empty(), "{r:?}");
    quiet(&mut rx, "the team's removal", &mut control).await;
    watch.stop();
}

/// Events the API server holds about one object (events.k8s.io), as (reason, note).
async fn events_about(client: kube::Client, namespace: &str, name: &str) -> Vec<(String, String)> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client, namespace);
    api.list(&Default::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

#[tokio::test]
async fn fields_a_person_adds_are_named_removed_and_recorded_in_an_event() {
    let cp = control_plane::shared();
    let syncer = syncer(cp).await;
    let team = unique_name("added");
    let mut objects = team_base(&team, &[&team]);
    let mut web = deployment(&team, &team, "web", "shop:1.0", 1);
    std::sync::Arc::make_mut(&mut web.object)["metadata"]["labels"]["tier"] = json!("web");
    objects.push(web);
    let mut state = DesiredState {
        revision: "r1".into(),
        ..DesiredState::default()
    };
    let u = unit_desired(&team, cp.name, &[&team], objects);
    state.units.insert(u.unit.clone(), u.clone());
    syncer.sync(&u, "r1").await;
    let mut control = Control::start(&syncer, cp, &mut state).await;
    let (watch, mut rx) = watching(&syncer, cp, &state).await;
    let client = cp.client().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &team);

    // `kubectl edit` adds an env var and a label: server-side apply alone would keep both
    // (they belong to another field manager), so pontoon names and removes them.
    strategic_as(
        &deployments,
        "kubectl-edit",
        json!({
                "metadata": {"labels": {"debug": "on"}},
                "spec": {"template": {"spec": {"containers": [
                    {"name": "app", "env": [{"name": "DEBUG", "value": "1"}]}]}}}}),
        "hand edit",
    )
    .await;
    let e = next(&mut rx, "the added fields").await;
    assert!(!e.corrected);
    assert_eq!(e.manager, "kubectl-edit");
    assert!(e.by_person);
    assert_eq!(
        e.added,
        [
            "/spec/template/spec/containers/0/env",
            "/metadata/labels/debug"
        ]
    );
    let e = next(&mut rx, "the removal").await;
    assert!(e.corrected, "{e:?}");
    let live = deployments.get("web").await.expect("get");
    assert!(
        !live.labels().contains_key("debug"),
        "label removed: {:?}",
        live.labels()
    );
    let env = live.spec.template.spec.map(|p| p.containers[0].env.clone());
    assert_eq!(env, Some(None), "env var removed");

    // The corrected object carries an Event that names who drifted it.
    let events = crate::support::control_plane::eventually(
        "a DriftCorrected event",
        Duration::from_secs(10),
        || {
            let client = client.clone();
            let team = team.clone();
            async move {
                let ev = events_about(client, &team, "web").await;
                ev.iter().any(|(r, _)| r == "DriftCorrected").then_some(ev)
            }
        },
    )
    .await;
    let (_, note) = events
        .iter()
        .find(|(r, _)| r == "DriftCorrected")
        .expect("event");
    assert!(note.contains("kubectl-edit"), "{note}");
    assert!(note.contains("/metadata/labels/debug (added)"), "{note}");

    // The same kind of addition by a controller (an injector's env var) is not drift.
    strategic_as(
        &deployments,
        "otel-injector",
        json!({"spec": {"template": {"spec": {"containers": [
                {"name": "app", "env": [{"name": "OTEL_SERVICE_NAME", "value": "web"}]}]}}}}),
        "controller edit",
    )
    .await;
    quiet(&mut rx, "an env var added by a controller", &mut control).await;

    // A person removes a label pontoon set: drift, restored by the unit's sync.
    deployments
        .patch(
            "web",
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
    let e = next(&mut rx, "the removed label").await;
    assert_eq!(e.paths, ["/metadata/labels/tier"]);
    syncer.sync(&u, "r1").await;
    let e = next(&mut rx, "the label restored").await;
    assert!(e.corrected, "{e:?}");
    let live = deployments.get("web").await.expect("get");
    assert_eq!(live.labels().get("tier").map(String::as_str), Some("web"));
    let env = live.spec.template.spec.map(|p| p.containers[0].env.clone());
    assert!(
        format!("{env:?}").contains("OTEL_SERVICE_NAME"),
        "the controller's env var stays: {env:?}"
    );
    watch.stop();
}

/// A controller (not a person) appends an env var to a container pontoon applied, and a
/// container of its own: entries of keyed lists are matched by their keys as server-side
/// apply matches them, so neither is drift; pontoon's own entry changed still is.
#[tokio::test]
async fn a_controllers_entry_in_a_list_pontoon_set_is_not_drift() {
    let cp = control_plane::shared();
    let syncer = syncer(cp).await;
    let team = unique_name("listed");
    let mut objects = team_base(&team, &[&team]);
    let mut web = deployment(&team, &team, "web", "shop:1.0", 1);
    std::sync::Arc::make_mut(&mut web.object)["spec"]["template"]["spec"]["containers"][0]["env"] =
        json!([{"name": "A", "value": "1"}]);
    objects.push(web);
    let mut state = DesiredState {
        revision: "r1".into(),
        ..DesiredState::default()
    };
    let u = unit_desired(&team, cp.name, &[&team], objects);
    state.units.insert(u.unit.clone(), u.clone());
    let _ = syncer.sync(&u, "r1").await;
    let mut control = Control::start(&syncer, cp, &mut state).await;
    let (watch, mut rx) = watching(&syncer, cp, &state).await;
    let deployments: Api<Deployment> = Api::namespaced(cp.client().await, &team);

    let injector = PatchParams {
        field_manager: Some("sidecar-injector".into()),
        ..Default::default()
    };
    deployments
        .patch(
            "web",
            &injector,
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "env": [{"name": "B", "value": "2"}]},
            {"name": "proxy", "image": "envoy:1"}]}}}})),
        )
        .await
        .expect("the controller adds its entries");
    let live = deployments.get("web").await.expect("web");
    let containers = live
        .spec
        .template
        .spec
        .map(|s| s.containers)
        .unwrap_or_default();
    assert_eq!(containers.len(), 2, "the controller's container is there");
    let app = containers.iter().find(|c| c.name == "app").expect("app");
    assert_eq!(
        app.env.as_ref().map(Vec::len),
        Some(2),
        "the controller's env var is there"
    );
    quiet(
        &mut rx,
        "a controller's entries in lists pontoon set",
        &mut control,
    )
    .await;

    // pontoon's own entry, changed by a person in the same list, is drift.
    strategic_as(
        &deployments,
        "kubectl-edit",
        json!({"spec": {"template": {"spec": {"containers": [
                {"name": "app", "env": [{"name": "A", "value": "changed"}]}]}}}}),
        "a person edits A",
    )
    .await;
    let e = next(&mut rx, "the person's change to A").await;
    assert_eq!(e.key.name, "web", "{e:?}");
    assert!(
        e.paths
            .iter()
            .any(|p| p.contains("/env/") && p.ends_with("/value")),
        "{e:?}"
    );
    watch.stop();
}

/// `kubectl scale` writes through the scale subresource (as field manager `kubectl`): the
/// drift names it, not `unknown`, and counts it as a person's change.
#[tokio::test]
async fn a_change_through_the_scale_subresource_is_named_by_who_made_it() {
    let cp = control_plane::shared();
    let syncer = syncer(cp).await;
    let team = unique_name("scaled");
    let mut objects = team_base(&team, &[&team]);
    objects.push(deployment(&team, &team, "web", "shop:1.0", 1));
    let mut state = DesiredState {
        revision: "r1".into(),
        ..DesiredState::default()
    };
    let u = unit_desired(&team, cp.name, &[&team], objects);
    state.units.insert(u.unit.clone(), u.clone());
    let _ = syncer.sync(&u, "r1").await;
    let (watch, mut rx) = watching(&syncer, cp, &state).await;

    let out = cp.kubectl(&["-n", &team, "scale", "deployment/web", "--replicas=3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e = next(&mut rx, "kubectl scale").await;
    assert_eq!(e.key.name, "web", "{e:?}");
    assert_eq!(e.paths, ["/spec/replicas"], "{e:?}");
    assert_eq!(
        (e.manager.as_str(), e.by_person),
        ("kubectl", true),
        "{e:?}"
    );
    watch.stop();
}

/// A watch that sees no event for longer than the client's read timeout is closed by the
/// server and resumed, never cut by the client as a failed read: no drift failure, and a
/// hand edit made after the quiet spell is still seen.
#[tokio::test]
async fn a_quiet_watch_outlives_the_clients_read_timeout() {
    let cp = control_plane::shared();
    let mut config = cp.config().await;
    config.read_timeout = Some(Duration::from_secs(4));
    let cluster = Cluster::from_config(ClusterName(cp.name.into()), config, 8).expect("cluster");
    let syncer = Arc::new(Syncer::new(Arc::new(cluster), SyncOptions::default()));
    let team = unique_name("quiet");
    let mut objects = team_base(&team, &[&team]);
    objects.push(configmap(&team, &team, "settings", json!({"k": "v"})));
    let u = unit_desired(&team, cp.name, &[&team], objects);
    assert_eq!(syncer.sync(&u, "r1").await.state, UnitState::Synced);
    let mut state = DesiredState::default();
    state.units.insert(u.unit.clone(), u);

    let (watch, mut rx, mut failures) = watching_with_failures(&syncer, cp, &state).await;

    // Three read timeouts with nothing to report.
    tokio::time::sleep(Duration::from_secs(12)).await;
    if let Ok(f) = failures.try_recv() {
        panic!("a quiet watch failed: {:?}: {}", f.scope, f.error);
    }
    let configmaps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(cp.client().await, &team);
    configmaps
        .patch(
            "settings",
            &PatchParams::apply("kubectl-edit").force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                                 "metadata": {"name": "settings"}, "data": {"k": "by hand"}})),
        )
        .await
        .expect("edit by hand");
    let event = next(&mut rx, "the edit after the quiet spell").await;
    assert!(format!("{event:?}").contains("settings"), "{event:?}");
    watch.stop();
}
