//! What one pontoon instance of another owner than the default does with its owner: its
//! leader Lease, its field manager as the drift engine sees it, and releasing its held
//! units with `pontoon release --owner`.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::config::Kubeconfig;
use pontoon::daemon::leader::{self, LeaseSettings};
use pontoon::desired::*;
use pontoon::drift::{DriftEvent, DriftFailure, DriftSettings, DriftWatch, kinds_of};
use pontoon::sync::UnitState;
use tokio::sync::{mpsc, watch};

use super::instance;
use crate::support::control_plane::{self, unique_name};
use crate::support::fixtures::{configmap, team_base, unit_desired};

/// A candidate for the Lease `lease` in `default` as `owner` (3 s leases, tried every
/// 300 ms): whether it leads, and its task.
fn candidate(
    client: kube::Client,
    lease: &str,
    owner: &str,
    identity: &str,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let (tx, leading) = watch::channel(false);
    let (stop, stop_rx) = watch::channel(false);
    let settings = LeaseSettings {
        retry: Duration::from_millis(300),
        owner: Owner::new(owner).expect("owner"),
        ..LeaseSettings::new("default", lease, identity, Duration::from_secs(3))
    };
    let task = tokio::spawn(async move {
        leader::run(client, settings, tx, stop_rx).await;
        drop(stop);
    });
    (leading, task)
}

/// The Lease carries its owner, and a daemon of another owner configured with the same
/// Lease name never takes it, even once it expires; a replica of the same owner does.
#[tokio::test]
async fn a_lease_is_taken_over_only_by_a_daemon_of_its_owner() {
    let cp = control_plane::shared();
    let client = cp.client().await;
    let lease = unique_name("owned-lease");
    let (ox, oy) = (unique_name("lx"), unique_name("ly"));
    let (mut x, x_task) = candidate(client.clone(), &lease, &ox, "x-1");
    tokio::time::timeout(Duration::from_secs(10), x.wait_for(|l| *l))
        .await
        .expect("x leads in time")
        .expect("election runs");
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let labels = leases.get(&lease).await.expect("lease").metadata.labels;
    assert_eq!(
        labels.and_then(|mut l| l.remove(LABEL_OWNER)),
        Some(ox.clone())
    );

    // x dies without letting go: the Lease expires after 3 s.
    x_task.abort();
    let (y, y_task) = candidate(client.clone(), &lease, &oy, "y-1");
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(!*y.borrow(), "a daemon of another owner took the Lease");
    let (mut x2, x2_task) = candidate(client, &lease, &ox, "x-2");
    tokio::time::timeout(Duration::from_secs(10), x2.wait_for(|l| *l))
        .await
        .expect("a replica of x's owner takes over")
        .expect("election runs");
    assert!(!*y.borrow());
    y_task.abort();
    x2_task.abort();
}

async fn next(rx: &mut mpsc::Receiver<DriftEvent>, what: &str) -> DriftEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no drift event for {what} within 10s"))
        .expect("channel open")
}

/// A daemon of another owner than the default applies as `pontoon-<owner>`, and its drift
/// engine knows that manager for its own: its applies of a new revision are not drift,
/// while a person's edit is, named and corrected.
#[tokio::test]
async fn an_owners_own_applies_are_not_drift_and_a_persons_edit_is() {
    let cp = control_plane::shared();
    let owner = unique_name("do");
    let syncer = Arc::new(instance(cp, &owner, "pontoon-owners-test-drift").await);
    let team = unique_name("drifty");
    let unit = |mode: &str| {
        let mut objects = team_base(&team, &[&team]);
        objects.push(configmap(
            &team,
            &team,
            "settings",
            serde_json::json!({"mode": mode}),
        ));
        unit_desired(&team, cp.name, &[&team], objects)
    };
    let u = unit("safe");
    assert_eq!(syncer.sync(&u, "r1").await.state, UnitState::Synced);
    let mut state = DesiredState::default();
    state.units.insert(u.unit.clone(), u);
    let (tx, mut rx) = mpsc::channel(64);
    let (failures, _) = mpsc::channel::<DriftFailure>(64);
    let settings = DriftSettings {
        human_managers: Vec::new(),
        reporter_instance: "owners-tests".into(),
    };
    let watch = DriftWatch::new(syncer.clone(), tx, failures, &settings);
    watch
        .ensure(kinds_of(&state, &ClusterName(cp.name.into())))
        .await;
    tokio::time::timeout(Duration::from_secs(30), watch.listed())
        .await
        .expect("the drift watches list within 30s");

    // A new revision, applied as pontoon-<owner>: not drift.
    let u2 = unit("careful");
    assert_eq!(syncer.sync(&u2, "r2").await.state, UnitState::Synced);
    if let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(3), rx.recv()).await {
        panic!("the owner's own apply is not drift, got {e:?}");
    }

    // A person's edit is: named, then corrected by the next sync.
    let cms: Api<ConfigMap> = Api::namespaced(cp.client().await, &team);
    let edit = kube::api::PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    };
    cms.patch(
        "settings",
        &edit,
        &kube::api::Patch::Merge(serde_json::json!({"data": {"mode": "yolo"}})),
    )
    .await
    .expect("hand edit");
    let e = next(&mut rx, "the hand edit").await;
    assert_eq!(
        (e.key.name.as_str(), e.manager.as_str(), e.corrected),
        ("settings", "kubectl-edit", false),
        "{e:?}"
    );
    let _ = syncer.sync(&u2, "r2").await;
    let e = next(&mut rx, "the correction").await;
    assert!(e.corrected, "{e:?}");
    assert_eq!(
        value_of(&cms, "settings", "mode").await.as_deref(),
        Some("careful")
    );
    watch.stop();
}

async fn value_of(cms: &Api<ConfigMap>, name: &str, key: &str) -> Option<String> {
    cms.get(name).await.expect("get").data?.remove(key)
}

/// A unit of another owner than the default held by the mass-deletion hold says how to
/// release it (`--owner`, its inventory's name), and `pontoon release --owner` releases it.
#[tokio::test]
async fn an_owners_held_unit_is_released_with_pontoon_release_owner() {
    let cp = control_plane::shared();
    let owner = unique_name("ro");
    let s = instance(cp, &owner, "pontoon-owners-test-release").await;
    let team = unique_name("held");
    let unit = |names: &[&str]| {
        let mut objects = team_base(&team, &[&team]);
        for n in names {
            objects.push(configmap(&team, &team, n, serde_json::json!({"k": "1"})));
        }
        unit_desired(&team, cp.name, &[&team], objects)
    };
    let r = s.sync(&unit(&["api", "web"]), "r1").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    let r = s.sync(&unit(&[]), "r2").await;
    assert_eq!(r.state, UnitState::OutOfSync, "{r:?}");
    let message = r.message.unwrap_or_default();
    assert!(
        message.contains(&format!(
            "pontoon release --team {team} --cluster {} --revision r2 --owner {owner} (or kubectl -n pontoon-system annotate configmap pontoon-inventory-{team}.{owner} pontoon.dev/release=r2 --overwrite)",
            cp.name
        )),
        "{message}"
    );

    let context = Kubeconfig::read_from(&cp.kubeconfig)
        .expect("read kubeconfig")
        .current_context
        .expect("a current context");
    let release = |owner: &str| {
        Command::new(env!("CARGO_BIN_EXE_pontoon"))
            .env("KUBECONFIG", &cp.kubeconfig)
            .args(["release", "--team", &team, "--cluster", cp.name])
            .args(["--revision", "r2", "--context", &context, "--owner", owner])
            .output()
            .expect("run pontoon")
    };
    // Without the owner the default owner's inventory is meant: there is none.
    let out = release(DEFAULT_OWNER);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = release(&owner);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let r = s.sync(&unit(&[]), "r2").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert_eq!(r.pruned.len(), 2, "{r:?}");
}
