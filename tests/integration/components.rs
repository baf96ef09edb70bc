//! Platform components against the real apiserver: a cluster's `platform` unit is applied
//! before its teams (the apiserver's audit log of writes), a CRD it brings serves a team's
//! object in the same pass, a cluster's override patches what it applies, a component
//! selected by labels lands on those clusters alone, and a team's instance of a Kind that
//! `requires` a component waits for that component's health, then syncs; a failing
//! component keeps it waiting with the component's reason, while what requires nothing,
//! and other teams, go on.
//!
//! The component's operator is a Deployment whose status the test writes, playing the
//! deployment controller: the shared control plane runs no controllers.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};
use pontoon::cluster::Cluster;
use pontoon::desired::{ClusterName, DesiredState, PLATFORM_UNIT, UnitId};
use pontoon::sync::{SyncOptions, Syncer, UnitResult, UnitState};
use serde_json::json;

use crate::support::audit;
use crate::support::control_plane::{self, ControlPlane, unique_name};
use crate::support::daemon::write;

/// A platform repo on `cluster` (labelled `env: prod`, beside a cluster `elsewhere` with
/// `env: staging`): component `operator` (a CRD of group `<id>.example.com`, a Namespace
/// `<id>-ops`, a Deployment and a ConfigMap there, the ConfigMap patched on `cluster`),
/// selected by labels; Kind `Database` requires it, Kind `Cache` does not; team `<id>`
/// has one of each and a Widget of the component's CRD; team `<id>-b` a ConfigMap.
fn platform_repo(root: &Path, cluster: &str, id: &str) {
    write(
        root,
        "platform.yaml",
        &format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {{name: p}}\nspec:\n  clusters:\n    - {{name: {cluster}, labels: {{env: prod}}}}\n    - {{name: elsewhere, labels: {{env: staging}}}}\n  policy:\n    allowedKinds:\n      - {{group: \"\", kind: ConfigMap}}\n      - {{group: {id}.example.com, kind: Widget}}\n"
        ),
    );
    write(
        root,
        "components/operator.yaml",
        &format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Component\nmetadata: {{name: operator}}\nspec:\n  clusters: {{matchLabels: {{env: prod}}}}\n  namespace: {id}-ops\n  source: {{manifests: {{path: components/operator}}}}\n  overrides:\n    {cluster}:\n      patches:\n        - target: {{kind: ConfigMap, name: operator-settings}}\n          patch: {{data: {{mode: {cluster}}}}}\n"
        ),
    );
    write(
        root,
        "components/operator/crd.yaml",
        &format!(
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {{name: widgets.{id}.example.com}}\nspec:\n  group: {id}.example.com\n  scope: Namespaced\n  names: {{plural: widgets, singular: widget, kind: Widget}}\n  versions:\n    - name: v1\n      served: true\n      storage: true\n      schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}\n"
        ),
    );
    write(
        root,
        "components/operator/operator.yaml",
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {id}-ops}}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: operator}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: operator}}}}\n  template:\n    metadata: {{labels: {{app: operator}}}}\n    spec: {{containers: [{{name: operator, image: operator:1}}]}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: operator-settings}}\ndata: {{mode: default}}\n"
        ),
    );
    write(
        root,
        "kinds/database.yaml",
        "apiVersion: pontoon.dev/v1alpha1\nkind: Kind\nmetadata: {name: Database}\nspec:\n  requires: [operator]\n  resources:\n    - id: db\n      template: {apiVersion: v1, kind: ConfigMap, metadata: {name: \"${name}-db\"}, data: {v: \"1\"}}\n",
    );
    write(
        root,
        "kinds/cache.yaml",
        "apiVersion: pontoon.dev/v1alpha1\nkind: Kind\nmetadata: {name: Cache}\nspec:\n  resources:\n    - id: cache\n      template: {apiVersion: v1, kind: ConfigMap, metadata: {name: \"${name}-cache\"}, data: {v: \"1\"}}\n",
    );
    for team in [id.to_owned(), format!("{id}-b")] {
        write(
            root,
            &format!("teams/{team}/team.yaml"),
            &format!(
                "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {team}}}\nspec:\n  namespaces: [{team}]\n  clusters: {{names: [{cluster}]}}\n"
            ),
        );
    }
    write(
        root,
        &format!("teams/{id}/app.yaml"),
        &format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Database\nmetadata: {{name: ledger}}\n---\napiVersion: pontoon.dev/v1alpha1\nkind: Cache\nmetadata: {{name: sessions}}\n---\napiVersion: {id}.example.com/v1\nkind: Widget\nmetadata: {{name: w1}}\nspec: {{size: 1}}\n"
        ),
    );
    write(
        root,
        &format!("teams/{id}-b/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: plain}\ndata: {v: \"1\"}\n",
    );
}

fn rendered(cp: &ControlPlane, id: &str) -> DesiredState {
    let tmp = tempfile::tempdir().expect("tempdir");
    platform_repo(tmp.path(), cp.name, id);
    let snapshot = pontoon::source::dir::read(tmp.path()).expect("repo");
    let state = pontoon::render::render(&snapshot.files, "r1");
    assert!(state.diagnostics.is_empty(), "{:?}", state.diagnostics);
    state
}

/// A syncer keeping its inventories in a namespace of the test's own, so that the
/// `platform` unit of one test is no other test's.
async fn syncer(cp: &ControlPlane, id: &str) -> Syncer {
    let cluster =
        Cluster::from_config(ClusterName(cp.name.into()), cp.config().await, 16).expect("cluster");
    let options = SyncOptions {
        namespace: format!("{id}-pontoon"),
        ..SyncOptions::default()
    };
    Syncer::new(Arc::new(cluster), options)
}

fn unit(cp: &ControlPlane, team: &str) -> UnitId {
    UnitId {
        team: pontoon::desired::TeamName(team.into()),
        cluster: ClusterName(cp.name.into()),
    }
}

fn result<'r>(results: &'r [UnitResult], id: &UnitId) -> &'r UnitResult {
    results
        .iter()
        .find(|r| r.unit == *id)
        .unwrap_or_else(|| panic!("no result for {id}: {results:?}"))
}

async fn configmap(cp: &ControlPlane, ns: &str, name: &str) -> Option<ConfigMap> {
    let api: Api<ConfigMap> = Api::namespaced(cp.client().await, ns);
    api.get_opt(name).await.expect("get")
}

/// Writes the operator Deployment's status as its controller would: rolled out, or past
/// its progress deadline.
async fn set_operator_status(cp: &ControlPlane, ns: &str, rolled_out: bool) {
    let api: Api<Deployment> = Api::namespaced(cp.client().await, ns);
    let status = if rolled_out {
        json!({"status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                          "readyReplicas": 1, "availableReplicas": 1}})
    } else {
        json!({"status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                          "conditions": [{"type": "Progressing", "status": "False",
                                          "reason": "ProgressDeadlineExceeded",
                                          "message": "ReplicaSet has timed out progressing."}]}})
    };
    api.patch_status("operator", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status");
}

/// Every write of the platform unit's objects (received since `started`) finished before
/// the first write of either team's was received.
fn assert_platform_wrote_first(cp: &ControlPlane, id: &str, started: jiff::Timestamp) {
    let writes = audit::writes_by(cp.dir(), pontoon::cluster::USER_AGENT, started);
    let is_platform = |e: &audit::Event| {
        e.object_ref.as_ref().is_some_and(|o| {
            o.namespace == format!("{id}-ops")
                || o.name == format!("{id}-ops")
                || o.name == format!("widgets.{id}.example.com")
        })
    };
    let is_team =
        |e: &audit::Event| e.touches_namespace(id) || e.touches_namespace(&format!("{id}-b"));
    let last_platform = writes
        .iter()
        .filter(|e| is_platform(e))
        .map(audit::Event::at)
        .max();
    let first_team = writes
        .iter()
        .filter(|e| is_team(e))
        .map(audit::Event::received)
        .min();
    let (last_platform, first_team) = (
        last_platform.expect("platform writes"),
        first_team.expect("team writes"),
    );
    assert!(
        last_platform < first_team,
        "platform's last write finished {last_platform}, a team's first was received {first_team}"
    );
}

/// Settles the platform unit (waits for its health) after the first pass.
async fn settle_platform(s: &Syncer, state: &DesiredState, first: &UnitResult) -> UnitResult {
    let desired = &state.units[&first.unit];
    s.settle(
        desired,
        "r1",
        first.clone(),
        Instant::now(),
        Duration::from_secs(60),
        Duration::from_millis(200),
    )
    .await
}

#[tokio::test]
async fn components_apply_before_teams_and_a_required_component_is_waited_for() {
    let cp = control_plane::shared();
    let id = unique_name("comp");
    let state = rendered(cp, &id);
    // Selected by labels: on the prod cluster only.
    let platform_units: Vec<String> = state
        .units
        .keys()
        .filter(|u| u.team.0 == PLATFORM_UNIT)
        .map(|u| u.cluster.0.clone())
        .collect();
    assert_eq!(platform_units, [cp.name.to_owned()]);
    let s = syncer(cp, &id).await;
    let started = jiff::Timestamp::now();

    let results = s.sync_cluster(&state).await;
    let platform = result(&results, &unit(cp, PLATFORM_UNIT));
    assert_eq!(platform.state, UnitState::Progressing, "{platform:?}");
    let team = result(&results, &unit(cp, &id));
    assert_eq!(team.state, UnitState::Progressing, "{team:?}");
    let message = team.message.clone().unwrap_or_default();
    assert!(
        message.starts_with(&format!(
            "waiting for component operator to be healthy (Deployment.apps {id}-ops/operator: "
        )),
        "{message}"
    );
    assert!(configmap(cp, &id, "ledger-db").await.is_none());
    // What requires nothing went on: the Cache, and the Widget of the component's CRD.
    assert!(configmap(cp, &id, "sessions-cache").await.is_some());
    assert!(team.created.iter().any(|k| k.kind == "Widget"), "{team:?}");
    let other = result(&results, &unit(cp, &format!("{id}-b")));
    assert_eq!(other.state, UnitState::Synced, "{other:?}");
    // The cluster's override patched the component's ConfigMap.
    let settings = configmap(cp, &format!("{id}-ops"), "operator-settings")
        .await
        .expect("operator-settings");
    assert_eq!(
        settings
            .data
            .unwrap_or_default()
            .get("mode")
            .map(String::as_str),
        Some(cp.name)
    );

    // Every write of the platform unit came before the first of any team.
    assert_platform_wrote_first(cp, &id, started);

    // The operator rolls out: the platform unit is healthy, and the team's next sync
    // (which the board announces) applies the Database, created after that.
    let healthy_at = jiff::Timestamp::now();
    set_operator_status(cp, &format!("{id}-ops"), true).await;
    let platform = settle_platform(&s, &state, platform).await;
    assert_eq!(platform.state, UnitState::Synced, "{platform:?}");
    tokio::time::timeout(Duration::from_secs(10), s.components().moved_since(team))
        .await
        .expect("the board says the component moved");
    let team = s.sync(&state.units[&unit(cp, &id)], "r1").await;
    assert_eq!(team.state, UnitState::Synced, "{team:?}");
    assert!(configmap(cp, &id, "ledger-db").await.is_some());
    let created = audit::writes_by(cp.dir(), pontoon::cluster::USER_AGENT, started)
        .into_iter()
        .find(|e| {
            e.object_ref
                .as_ref()
                .is_some_and(|o| o.namespace == id && o.name == "ledger-db")
        })
        .expect("ledger-db written");
    assert!(created.received() > healthy_at, "{}", created.describe());
}

#[tokio::test]
async fn a_failing_component_keeps_dependents_waiting_with_its_reason_and_others_go_on() {
    let cp = control_plane::shared();
    let id = unique_name("comp-fail");
    let state = rendered(cp, &id);
    let s = syncer(cp, &id).await;
    let results = s.sync_cluster(&state).await;
    let platform = result(&results, &unit(cp, PLATFORM_UNIT));
    set_operator_status(cp, &format!("{id}-ops"), false).await;
    let platform = settle_platform(&s, &state, platform).await;
    assert_eq!(platform.state, UnitState::Failed, "{platform:?}");

    let team = s.sync(&state.units[&unit(cp, &id)], "r1").await;
    assert_eq!(team.state, UnitState::Progressing, "{team:?}");
    let message = team.message.clone().unwrap_or_default();
    assert!(
        message.starts_with(&format!(
            "waiting for component operator to be healthy (Deployment.apps {id}-ops/operator failed: "
        )) && message.contains("timed out progressing")
            && message.contains(&format!("before applying ConfigMap {id}/ledger-db")),
        "{message}"
    );
    assert!(configmap(cp, &id, "ledger-db").await.is_none());
    assert!(configmap(cp, &id, "sessions-cache").await.is_some());
    let other = s
        .sync(&state.units[&unit(cp, &format!("{id}-b"))], "r1")
        .await;
    assert_eq!(other.state, UnitState::Synced, "{other:?}");
    assert!(configmap(cp, &format!("{id}-b"), "plain").await.is_some());
}

/// `pontoon <args> --config FILE`: its exit code and what it printed.
fn pontoon(args: &[&str], config: &Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pontoon"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run pontoon");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), printed)
}

/// A component that brings a CRD, and a Kind whose objects are of that CRD.
fn gadget_repo(root: &Path, id: &str, short_name: &str) {
    write(
        root,
        "platform.yaml",
        "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {name: p}\nspec:\n  clusters: [{name: c}]\n",
    );
    write(
        root,
        "components/gadgets.yaml",
        "apiVersion: pontoon.dev/v1alpha1\nkind: Component\nmetadata: {name: gadgets}\nspec:\n  clusters: {names: [c]}\n  source: {manifests: {path: components/gadgets}}\n",
    );
    write(
        root,
        "components/gadgets/crd.yaml",
        &format!(
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {{name: gadgets.{id}.example.com}}\nspec:\n  group: {id}.example.com\n  scope: Namespaced\n  names: {{plural: gadgets, singular: gadget, kind: Gadget, shortNames: [{short_name}]}}\n  versions:\n    - name: v1\n      served: true\n      storage: true\n      schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}\n"
        ),
    );
    write(
        root,
        "kinds/gadget.yaml",
        &format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Kind\nmetadata: {{name: Gadget}}\nspec:\n  requires: [gadgets]\n  resources:\n    - id: gadget\n      template: {{apiVersion: {id}.example.com/v1, kind: Gadget, metadata: {{name: \"${{name}}\"}}, spec: {{size: 1}}}}\n"
        ),
    );
    write(
        root,
        &format!("teams/{id}/team.yaml"),
        &format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {id}}}\nspec:\n  namespaces: [{id}]\n  clusters: {{names: [c]}}\n"
        ),
    );
    write(
        root,
        &format!("teams/{id}/gadget.yaml"),
        "apiVersion: pontoon.dev/v1alpha1\nkind: Gadget\nmetadata: {name: g1}\n",
    );
}

#[tokio::test]
async fn sync_once_applies_the_platform_unit_first_and_plan_shows_it() {
    let cp = control_plane::shared();
    let id = unique_name("comp-cli");
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("platform");
    gadget_repo(&repo, &id, "gd");
    let config = crate::support::daemon_config::DaemonConfig::dir(&repo)
        .cluster("c", &cp.kubeconfig)
        .inventory_namespace(&format!("{id}-pontoon"))
        .write(tmp.path());
    // The team's Gadget needs the component's CRD: one pass applies both, in order.
    let (code, out) = pontoon(&["sync", "--once"], &config);
    assert_eq!(code, Some(0), "{out}");
    for unit in ["c/platform".to_owned(), format!("c/{id}")] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&unit) && l.contains(" Synced ")),
            "{unit}: {out}"
        );
    }

    let (code, out) = pontoon(&["plan"], &config);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("c/platform: +0 ~0 -0, nothing to do"), "{out}");
    gadget_repo(&repo, &id, "gdt");
    let (code, out) = pontoon(&["plan"], &config);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("c/platform: +0 ~1 -0"), "{out}");
}

#[tokio::test]
async fn the_daemon_shows_a_unit_waiting_for_its_component_and_syncs_it_once_healthy() {
    let cp = control_plane::shared();
    let id = unique_name("comp-run");
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("platform");
    platform_repo(&repo, "run", &id);
    let config = crate::support::daemon_config::DaemonConfig::dir(&repo)
        .cluster("run", &cp.kubeconfig)
        .inventory_namespace(&format!("{id}-pontoon"));
    let started = jiff::Timestamp::now();
    let daemon = crate::support::daemon::Daemon::start(&config.write(tmp.path()));
    let shown = |team: String, state: &'static str| {
        let daemon = &daemon;
        move || {
            let team = team.clone();
            async move {
                let s = daemon.status().await?;
                let u = s["units"]
                    .as_array()?
                    .iter()
                    .find(|u| u["team"] == team.as_str())?
                    .clone();
                (u["state"] == state).then(|| u["last_error"].as_str().unwrap_or("").to_owned())
            }
        }
    };
    let message = control_plane::eventually(
        "the team shown waiting for its component",
        Duration::from_secs(60),
        shown(id.clone(), "Progressing"),
    )
    .await;
    assert!(
        message.starts_with("waiting for component operator to be healthy"),
        "{message}"
    );
    control_plane::eventually(
        "the platform unit shown rolling out",
        Duration::from_secs(60),
        shown(PLATFORM_UNIT.to_owned(), "Progressing"),
    )
    .await;
    control_plane::eventually(
        "the other team synced",
        Duration::from_secs(60),
        shown(format!("{id}-b"), "Synced"),
    )
    .await;
    let page = reqwest::get(format!("{}/", daemon.base))
        .await
        .expect("page")
        .text()
        .await
        .expect("page text");
    assert!(page.contains("waiting for component operator"), "{page}");
    assert!(configmap(cp, &id, "ledger-db").await.is_none());

    // The operator rolls out: the platform unit turns healthy, and the waiting team is
    // synced again at once (no resync interval passes in this test).
    set_operator_status(cp, &format!("{id}-ops"), true).await;
    control_plane::eventually(
        "the team Synced",
        Duration::from_secs(60),
        shown(id.clone(), "Synced"),
    )
    .await;
    assert!(configmap(cp, &id, "ledger-db").await.is_some());
    // The daemon, too, applied the platform unit before any team.
    assert_platform_wrote_first(cp, &id, started);
    daemon.finish().await;
}

#[tokio::test]
async fn a_custom_resource_of_a_components_crd_waits_for_it_rather_than_failing() {
    let cp = control_plane::shared();
    let id = unique_name("comp-crd");
    let tmp = tempfile::tempdir().expect("tempdir");
    gadget_repo(tmp.path(), &id, "gd");
    let snapshot = pontoon::source::dir::read(tmp.path()).expect("repo");
    let state = pontoon::render::render(&snapshot.files, "r1");
    assert!(state.diagnostics.is_empty(), "{:?}", state.diagnostics);
    let cluster =
        Cluster::from_config(ClusterName("c".into()), cp.config().await, 16).expect("cluster");
    let s = Syncer::new(
        Arc::new(cluster),
        SyncOptions {
            namespace: format!("{id}-pontoon"),
            ..SyncOptions::default()
        },
    );
    let unit_on = |team: &str| UnitId {
        team: pontoon::desired::TeamName(team.into()),
        cluster: ClusterName("c".into()),
    };
    // The team first, its Gadget's kind not served yet: it waits for the component.
    let team = s.sync(&state.units[&unit_on(&id)], "r1").await;
    assert_eq!(team.state, UnitState::Progressing, "{team:?}");
    assert_eq!(
        team.message.as_deref(),
        Some(
            format!(
                "waiting for component gadgets to be healthy (the platform unit has not synced it yet) before applying Gadget.{id}.example.com {id}/g1"
            )
            .as_str()
        )
    );
    let platform = s.sync(&state.units[&unit_on(PLATFORM_UNIT)], "r1").await;
    assert_eq!(platform.state, UnitState::Synced, "{platform:?}");
    let team = s.sync(&state.units[&unit_on(&id)], "r1").await;
    assert_eq!(team.state, UnitState::Synced, "{team:?}");
}

/// A platform repo on `cluster` whose component `ingress` is a Kustomize overlay (a base
/// ConfigMap, a patch of it, and a Kustomize component adding another), in namespace
/// `<id>-ingress`: the base's own, and the component's `spec.namespace` for what the
/// Kustomize component adds above the base.
fn kustomize_repo(cluster: &str, id: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut f = std::collections::BTreeMap::new();
    let mut put = |path: &str, text: String| {
        f.insert(path.to_owned(), text.into_bytes());
    };
    put(
        "platform.yaml",
        format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {{name: p}}\nspec:\n  clusters: [{{name: {cluster}}}]\n"
        ),
    );
    put(
        "components/ingress.yaml",
        "apiVersion: pontoon.dev/v1alpha1\nkind: Component\nmetadata: {name: ingress}\nspec:\n  clusters: {names: [CLUSTER]}\n  namespace: NS\n  source: {kustomize: {path: components/ingress/overlay}}\n"
            .replace("CLUSTER", cluster)
            .replace("NS", &format!("{id}-ingress")),
    );
    put(
        "components/ingress/base/kustomization.yaml",
        format!("namespace: {id}-ingress\nresources: [namespace.yaml, settings.yaml]\n"),
    );
    put(
        "components/ingress/base/namespace.yaml",
        format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {id}-ingress}}\n"),
    );
    put(
        "components/ingress/base/settings.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: base}\n"
            .to_owned(),
    );
    put(
        "components/ingress/overlay/kustomization.yaml",
        "resources: [../base]\ncomponents: [../extra]\npatches:\n  - path: mode.yaml\n".to_owned(),
    );
    put(
        "components/ingress/overlay/mode.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: overlay}\n"
            .to_owned(),
    );
    put(
        "components/ingress/extra/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\nresources: [extra.yaml]\n"
            .to_owned(),
    );
    put(
        "components/ingress/extra/extra.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra}\ndata: {from: component}\n"
            .to_owned(),
    );
    f
}

#[tokio::test]
async fn a_kustomize_component_is_built_by_the_real_kustomize_and_synced_as_the_platform_unit() {
    let cp = control_plane::shared();
    let id = unique_name("comp-kust");
    let s = Arc::new(syncer(cp, &id).await);
    let cluster = ClusterName(cp.name.into());
    let syncers = std::collections::BTreeMap::from([(cluster.clone(), s.clone())]);
    let (state, packages) = crate::packages::render_files(
        &syncers,
        &crate::packages::no_charts(),
        kustomize_repo(cp.name, &id),
    )
    .await;
    assert!(state.diagnostics.is_empty(), "{:?}", state.diagnostics);
    let r = s.sync(&state.units[&unit(cp, PLATFORM_UNIT)], "r1").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    let ns = format!("{id}-ingress");
    let settings = configmap(cp, &ns, "settings").await.expect("settings");
    assert_eq!(
        settings
            .data
            .unwrap_or_default()
            .get("mode")
            .map(String::as_str),
        Some("overlay")
    );
    let extra = configmap(cp, &ns, "extra").await.expect("extra");
    let labels = extra.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get("pontoon.dev/team").map(String::as_str),
        Some(PLATFORM_UNIT)
    );
    assert_eq!(packages.runs(), 1, "one kustomize run");
}

/// A component from a chart folder of the repo: its `crds/`, a Namespace, and a ConfigMap
/// of its values, with a per-cluster override of one value.
fn chart_repo(cluster: &str, id: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut f = std::collections::BTreeMap::new();
    let mut put = |path: &str, text: String| {
        f.insert(path.to_owned(), text.into_bytes());
    };
    put(
        "platform.yaml",
        format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {{name: p}}\nspec:\n  clusters: [{{name: {cluster}}}]\n"
        ),
    );
    put(
        "components/widgets.yaml",
        format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Component\nmetadata: {{name: widgets}}\nspec:\n  clusters: {{names: [{cluster}]}}\n  namespace: {id}-widgets\n  source: {{chart: {{path: components/widgets/chart}}}}\n  values: {{greeting: hello, size: 3}}\n  overrides:\n    {cluster}:\n      values: {{greeting: bonjour}}\n"
        ),
    );
    put(
        "components/widgets/chart/Chart.yaml",
        "apiVersion: v2\nname: widgets\nversion: 0.1.0\n".to_owned(),
    );
    put(
        "components/widgets/chart/crds/widgets.yaml",
        format!(
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {{name: widgets.{id}.example}}\nspec:\n  group: {id}.example\n  names: {{kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}}\n  scope: Namespaced\n  versions:\n    - name: v1\n      served: true\n      storage: true\n      schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}\n"
        ),
    );
    put(
        "components/widgets/chart/templates/namespace.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {{ .Release.Namespace }}\n".to_owned(),
    );
    put(
        "components/widgets/chart/templates/settings.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  greeting: {{ .Values.greeting | quote }}\n  size: {{ .Values.size | quote }}\n".to_owned(),
    );
    f
}

#[tokio::test]
async fn a_chart_component_is_rendered_by_the_real_helm_with_its_cluster_values_and_crds() {
    let cp = control_plane::shared();
    let id = unique_name("comp-helm");
    let s = Arc::new(syncer(cp, &id).await);
    let cluster = ClusterName(cp.name.into());
    let syncers = std::collections::BTreeMap::from([(cluster.clone(), s.clone())]);
    let (state, packages) = crate::packages::render_files(
        &syncers,
        &crate::packages::no_charts(),
        chart_repo(cp.name, &id),
    )
    .await;
    assert!(state.diagnostics.is_empty(), "{:?}", state.diagnostics);
    let r = s.sync(&state.units[&unit(cp, PLATFORM_UNIT)], "r1").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    // The chart's crds/ applied (cluster-scoped, as the platform may).
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(cp.client().await);
    let crd = crds
        .get_opt(&format!("widgets.{id}.example"))
        .await
        .expect("get")
        .expect("the chart's CRD");
    assert_eq!(
        crd.metadata
            .labels
            .unwrap_or_default()
            .get("pontoon.dev/team")
            .map(String::as_str),
        Some(PLATFORM_UNIT)
    );
    // Its values, with this cluster's override over the component's own.
    let settings = configmap(cp, &format!("{id}-widgets"), "settings")
        .await
        .expect("the chart's ConfigMap");
    let data = settings.data.unwrap_or_default();
    assert_eq!(data.get("greeting").map(String::as_str), Some("bonjour"));
    assert_eq!(data.get("size").map(String::as_str), Some("3"));
    assert_eq!(packages.runs(), 1, "one helm run");
}
