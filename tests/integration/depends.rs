//! `dependsOn` against the real apiserver: an object that depends on another is created
//! only once that one is healthy (read from the apiserver's audit log of writes), the
//! unit says what it waits for meanwhile, a dependency that fails fails its dependents
//! without creating them, and a cycle fails `pontoon validate` at its file and line.
//!
//! The dependency is a Deployment whose status the test writes, playing the deployment
//! controller: the shared control plane runs no controllers, so nothing else moves it.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};
use pontoon::cluster::Cluster;
use pontoon::desired::{ClusterName, TeamName, UnitDesired};
use pontoon::sync::{SyncOptions, Syncer, UnitState};
use serde_json::json;

use crate::support::audit;
use crate::support::control_plane::{self, ControlPlane, unique_name};
use crate::support::daemon::{Daemon, write};
use crate::support::daemon_config::DaemonConfig;
use crate::support::inventory::inventory_entries;

/// A database: a Deployment that is healthy once its (test-written) status says so.
const DATABASE: &str = "\
apiVersion: pontoon.dev/v1alpha1
kind: Kind
metadata: {name: Database}
spec:
  parameters:
    version: {type: integer, default: 17}
  resources:
    - id: server
      template:
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: \"${name}\"}
        spec:
          replicas: 1
          selector: {matchLabels: {app: \"${name}\"}}
          template:
            metadata: {labels: {app: \"${name}\"}}
            spec: {containers: [{name: db, image: \"${'postgres:' + string(spec.version)}\"}]}
";

/// An app whose settings wait for its schema, a resource of the same kind.
const APP: &str = "\
apiVersion: pontoon.dev/v1alpha1
kind: Kind
metadata: {name: App}
spec:
  parameters:
    db: {type: string, default: ledger}
  resources:
    - id: schema
      template: {apiVersion: v1, kind: ConfigMap, metadata: {name: \"${name}-schema\"}, data: {v: \"1\"}}
    - id: settings
      dependsOn: [schema]
      template: {apiVersion: v1, kind: ConfigMap, metadata: {name: \"${name}\"}, data: {db: \"${spec.db}\"}}
";

/// The service that migrates the database waits for it.
const INSTANCES: &str = "\
apiVersion: pontoon.dev/v1alpha1
kind: Database
metadata: {name: ledger}
---
apiVersion: pontoon.dev/v1alpha1
kind: App
metadata: {name: web}
dependsOn: [Database/ledger]
";

/// Writes a platform repo of one team (`team`, in namespace `team`) on `cluster`.
fn platform_repo(root: &Path, cluster: &str, team: &str, instances: &str) {
    write(
        root,
        "platform.yaml",
        &format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {{name: p}}\nspec:\n  clusters: [{{name: {cluster}}}]\n"
        ),
    );
    write(root, "kinds/database.yaml", DATABASE);
    write(root, "kinds/app.yaml", APP);
    write(
        root,
        &format!("teams/{team}/team.yaml"),
        &format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {team}}}\nspec:\n  namespaces: [{team}]\n  clusters: {{names: [{cluster}]}}\n"
        ),
    );
    write(root, &format!("teams/{team}/app.yaml"), instances);
}

/// The team's one unit on `cp`, rendered by the real renderer.
fn rendered(cp: &ControlPlane, team: &str) -> UnitDesired {
    rendered_with(cp, team, INSTANCES, "r1")
}

/// The team's one unit on `cp` with `instances` in its folder, at `revision`.
fn rendered_with(cp: &ControlPlane, team: &str, instances: &str, revision: &str) -> UnitDesired {
    let tmp = tempfile::tempdir().expect("tempdir");
    platform_repo(tmp.path(), cp.name, team, instances);
    let snapshot = pontoon::source::dir::read(tmp.path()).expect("repo");
    let state = pontoon::render::render(&snapshot.files, revision);
    assert!(state.diagnostics.is_empty(), "{:?}", state.diagnostics);
    state.units.into_values().next().expect("one unit")
}

async fn syncer(cp: &ControlPlane) -> Syncer {
    let cluster =
        Cluster::from_config(ClusterName(cp.name.into()), cp.config().await, 16).expect("cluster");
    Syncer::new(Arc::new(cluster), SyncOptions::default())
}

async fn configmap_exists(cp: &ControlPlane, ns: &str, name: &str) -> bool {
    let api: Api<ConfigMap> = Api::namespaced(cp.client().await, ns);
    api.get_opt(name).await.expect("get").is_some()
}

/// Writes the Deployment's status as its controller would: rolled out, or past its
/// progress deadline.
async fn set_status(cp: &ControlPlane, ns: &str, name: &str, rolled_out: bool) {
    let api: Api<Deployment> = Api::namespaced(cp.client().await, ns);
    let generation = api
        .get(name)
        .await
        .expect("deployment")
        .metadata
        .generation
        .unwrap_or(1);
    let status = if rolled_out {
        json!({"status": {"observedGeneration": generation, "replicas": 1, "updatedReplicas": 1,
                          "readyReplicas": 1, "availableReplicas": 1}})
    } else {
        json!({"status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                          "conditions": [{"type": "Progressing", "status": "False",
                                          "reason": "ProgressDeadlineExceeded",
                                          "message": "ReplicaSet has timed out progressing."}]}})
    };
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status");
}

/// pontoon's first write of each of `names` (ConfigMaps in `ns`) since `after`.
fn first_writes(
    cp: &ControlPlane,
    ns: &str,
    names: &[&str],
    after: jiff::Timestamp,
) -> Vec<jiff::Timestamp> {
    let writes = audit::writes_by(cp.dir(), pontoon::cluster::USER_AGENT, after);
    names
        .iter()
        .map(|name| {
            writes
                .iter()
                .find(|e| {
                    e.object_ref.as_ref().is_some_and(|o| {
                        o.resource == "configmaps" && o.namespace == ns && o.name == *name
                    })
                })
                .unwrap_or_else(|| panic!("no write of ConfigMap {ns}/{name}"))
                .received()
        })
        .collect()
}

#[tokio::test]
async fn a_dependent_is_created_only_once_what_it_depends_on_is_healthy() {
    let cp = control_plane::shared();
    let team = unique_name("depends");
    let unit = rendered(cp, &team);
    let s = syncer(cp).await;
    let started = jiff::Timestamp::now();

    let r = s.sync(&unit, "r1").await;
    assert_eq!(r.state, UnitState::Progressing, "{r:?}");
    let message = r.message.clone().unwrap_or_default();
    assert!(
        message.starts_with("waiting for Database/ledger to be healthy (Deployment.apps"),
        "{message}"
    );
    let waiting: Vec<String> = r
        .waiting
        .iter()
        .map(|w| format!("{} on {}", w.object, w.on))
        .collect();
    assert_eq!(
        waiting,
        [
            format!("ConfigMap {team}/web on Database/ledger"),
            format!("ConfigMap {team}/web-schema on Database/ledger"),
        ]
    );
    assert!(!configmap_exists(cp, &team, "web-schema").await);
    assert!(!configmap_exists(cp, &team, "web").await);
    // The inventory records only what exists.
    let entries = inventory_entries(&cp.client().await, &team).await;
    assert!(
        entries.iter().any(|e| e["name"] == "ledger")
            && !entries
                .iter()
                .any(|e| e["kind"] == "ConfigMap" && e["namespace"] == team.as_str()),
        "{entries:?}"
    );

    // A resync while the dependency rolls out writes nothing and still waits.
    let again = s.sync(&unit, "r1").await;
    assert_eq!(
        (again.state, again.writes, again.waiting.len()),
        (UnitState::Progressing, 0, 2),
        "{again:?}"
    );

    // The health wait syncs again once the Deployment is rolled out: the schema, then
    // the settings that wait for it, are created after that, in that order.
    let healthy_at = std::cell::Cell::new(None);
    let (r, ()) = tokio::join!(
        s.settle(
            &unit,
            "r1",
            again,
            Instant::now(),
            Duration::from_secs(60),
            Duration::from_millis(200)
        ),
        async {
            tokio::time::sleep(Duration::from_millis(800)).await;
            assert!(
                !configmap_exists(cp, &team, "web-schema").await,
                "created before its dependency was healthy"
            );
            healthy_at.set(Some(jiff::Timestamp::now()));
            set_status(cp, &team, "ledger", true).await;
        }
    );
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert!(r.waiting.is_empty(), "{r:?}");
    assert_eq!(
        crate::sync::keys(&r.created),
        [
            format!("ConfigMap {team}/web"),
            format!("ConfigMap {team}/web-schema")
        ],
        "{r:?}"
    );
    let healthy_at = healthy_at.get().expect("status written");
    let created = first_writes(cp, &team, &["web-schema", "web"], started);
    assert!(
        healthy_at < created[0] && created[0] < created[1],
        "healthy at {healthy_at}, schema created at {}, settings at {}",
        created[0],
        created[1]
    );
    let entries = inventory_entries(&cp.client().await, &team).await;
    assert!(entries.iter().any(|e| e["name"] == "web"), "{entries:?}");

    // Everything healthy and applied: a resync writes nothing at all.
    let resync = s.sync(&unit, "r1").await;
    assert_eq!(
        (resync.state, resync.writes),
        (UnitState::Synced, 0),
        "{resync:?}"
    );
}

#[tokio::test]
async fn a_dependency_that_fails_fails_its_dependents_without_creating_them() {
    let cp = control_plane::shared();
    let team = unique_name("depends-fail");
    let unit = rendered(cp, &team);
    let s = syncer(cp).await;
    let r = s.sync(&unit, "r1").await;
    assert_eq!(r.state, UnitState::Progressing, "{r:?}");

    set_status(cp, &team, "ledger", false).await;
    let r = s
        .settle(
            &unit,
            "r1",
            r,
            Instant::now(),
            Duration::from_secs(60),
            Duration::from_millis(200),
        )
        .await;
    assert_eq!(r.state, UnitState::Failed, "{r:?}");

    // Its retry: the dependents fail, naming the dependency, and are not created.
    let r = s.sync(&unit, "r1").await;
    assert_eq!(r.state, UnitState::Failed, "{r:?}");
    let errors: Vec<(String, String)> = r
        .errors
        .iter()
        .map(|e| (e.object.clone(), e.message.clone()))
        .collect();
    for name in ["web-schema", "web"] {
        let object = format!("ConfigMap {team}/{name}");
        assert!(
            errors.iter().any(|(o, m)| *o == object
                && m.starts_with(&format!(
                    "not applied: Database/ledger failed: Deployment.apps {team}/ledger: "
                ))),
            "{errors:#?}"
        );
        assert!(!configmap_exists(cp, &team, name).await);
    }
    assert!(r.waiting.is_empty(), "{r:?}");
}

async fn configmap_data(cp: &ControlPlane, ns: &str, name: &str) -> Option<String> {
    let api: Api<ConfigMap> = Api::namespaced(cp.client().await, ns);
    let cm = api.get_opt(name).await.expect("get")?;
    cm.data?.get("db").cloned()
}

#[tokio::test]
async fn what_waits_is_neither_changed_nor_pruned_and_the_prune_comes_last() {
    let cp = control_plane::shared();
    let team = unique_name("depends-prune");
    let s = syncer(cp).await;
    let old = "---\napiVersion: pontoon.dev/v1alpha1\nkind: App\nmetadata: {name: old}\n";
    let first = rendered_with(cp, &team, &format!("{INSTANCES}{old}"), "r1");
    let r = s.sync(&first, "r1").await;
    set_status(cp, &team, "ledger", true).await;
    let r = s
        .settle(
            &first,
            "r1",
            r,
            Instant::now(),
            Duration::from_secs(60),
            Duration::from_millis(200),
        )
        .await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");

    // A revision that upgrades the database, changes the service that waits for it and
    // drops `old`: the database rolls out again, so the service keeps its old settings,
    // and nothing is pruned until the last wave is applied.
    let upgraded = INSTANCES
        .replace(
            "metadata: {name: ledger}\n",
            "metadata: {name: ledger}\nspec: {version: 18}\n",
        )
        .replace(
            "dependsOn: [Database/ledger]\n",
            "dependsOn: [Database/ledger]\nspec: {db: ledger-18}\n",
        );
    let second = rendered_with(cp, &team, &upgraded, "r2");
    let r = s.sync(&second, "r2").await;
    assert_eq!(r.state, UnitState::Progressing, "{r:?}");
    assert_eq!(r.waiting.len(), 2, "{r:?}");
    assert!(r.pruned.is_empty(), "{r:?}");
    assert_eq!(
        configmap_data(cp, &team, "web").await.as_deref(),
        Some("ledger")
    );
    for name in ["old", "old-schema", "web", "web-schema"] {
        assert!(configmap_exists(cp, &team, name).await, "{name}");
    }
    let entries = inventory_entries(&cp.client().await, &team).await;
    for name in ["old", "web", "web-schema"] {
        assert!(
            entries.iter().any(|e| e["name"] == name),
            "{name}: {entries:?}"
        );
    }
    // Drift still judges the waiting object by what was applied last.
    let applied = s.applied(&TeamName(team.clone())).expect("applied");
    let web = applied
        .iter()
        .find(|(k, _)| k.kind == "ConfigMap" && k.name == "web")
        .map(|(_, a)| a.desired.object.to_value());
    assert_eq!(web.map(|w| w["data"]["db"].clone()), Some(json!("ledger")));

    set_status(cp, &team, "ledger", true).await;
    let r = s
        .settle(
            &second,
            "r2",
            r,
            Instant::now(),
            Duration::from_secs(60),
            Duration::from_millis(200),
        )
        .await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert_eq!(
        configmap_data(cp, &team, "web").await.as_deref(),
        Some("ledger-18")
    );
    assert!(!configmap_exists(cp, &team, "old").await);
    assert_eq!(
        crate::sync::keys(&r.pruned),
        [
            format!("ConfigMap {team}/old"),
            format!("ConfigMap {team}/old-schema")
        ],
        "{r:?}"
    );
}

#[tokio::test]
async fn the_daemon_shows_what_a_unit_waits_for_and_applies_it_once_healthy() {
    let cp = control_plane::shared();
    let team = unique_name("depends-run");
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("platform");
    platform_repo(&repo, "run", &team, INSTANCES);
    let config = DaemonConfig::dir(&repo)
        .cluster("run", &cp.kubeconfig)
        .inventory_namespace(&format!("{team}-pontoon"));
    let daemon = Daemon::start(&config.write(tmp.path()));
    let shown = |state: &'static str| {
        let (daemon, team) = (&daemon, &team);
        move || async move {
            let s = daemon.status().await?;
            let u = s["units"]
                .as_array()?
                .iter()
                .find(|u| u["team"] == team.as_str())?
                .clone();
            (u["state"] == state).then(|| u["last_error"].as_str().unwrap_or("").to_owned())
        }
    };
    let message = control_plane::eventually(
        "the unit shown waiting",
        Duration::from_secs(60),
        shown("Progressing"),
    )
    .await;
    assert!(
        message.starts_with("waiting for Database/ledger to be healthy"),
        "{message}"
    );
    let page = reqwest::get(format!("{}/", daemon.base))
        .await
        .expect("page")
        .text()
        .await
        .expect("page text");
    assert!(page.contains("waiting for Database/ledger"), "{page}");
    assert!(!configmap_exists(cp, &team, "web").await);

    // The daemon's health wait syncs again once the database is rolled out.
    set_status(cp, &team, "ledger", true).await;
    control_plane::eventually("the unit Synced", Duration::from_secs(60), shown("Synced")).await;
    assert!(configmap_exists(cp, &team, "web").await);
    daemon.finish().await;
}

#[tokio::test]
async fn sync_once_applies_the_next_wave_when_the_dependency_turns_healthy() {
    let cp = control_plane::shared();
    let team = unique_name("depends-once");
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("platform");
    platform_repo(&repo, "once", &team, INSTANCES);
    let config = DaemonConfig::dir(&repo)
        .cluster("once", &cp.kubeconfig)
        .inventory_namespace(&format!("{team}-pontoon"))
        .write(tmp.path());
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_pontoon"))
        .args(["sync", "--once", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("pontoon sync --once");
    let deployments: Api<Deployment> = Api::namespaced(cp.client().await, &team);
    control_plane::eventually("the database applied", Duration::from_secs(60), || async {
        deployments.get_opt("ledger").await.ok().flatten()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!configmap_exists(cp, &team, "web").await);
    set_status(cp, &team, "ledger", true).await;
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with(&format!("once/{team}")) && l.contains("Synced")),
        "{stdout}"
    );
    assert!(configmap_exists(cp, &team, "web").await);
}

#[test]
fn a_cycle_fails_validate_at_its_file_and_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cyclic = format!(
        "{INSTANCES}---\napiVersion: pontoon.dev/v1alpha1\nkind: Database\nmetadata: {{name: replica}}\ndependsOn:\n  - App/web\n"
    )
    .replace("dependsOn: [Database/ledger]", "dependsOn: [Database/ledger, Database/replica]");
    platform_repo(tmp.path(), "c", "shop", &cyclic);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pontoon"))
        .args(["validate"])
        .arg(tmp.path())
        .output()
        .expect("pontoon validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("teams/shop/app.yaml:8:1: error[dependency-cycle]: team shop: instances depend on each other in a cycle: App/web -> Database/replica -> App/web"),
        "{text}"
    );
}
