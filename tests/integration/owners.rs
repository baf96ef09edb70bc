//! Two pontoon instances on one cluster, told apart by `sync.owner`: each lists, trusts,
//! prunes and writes only what carries its own owner, in the default `sync.namespace`.
//! A control plane of its own: an instance's removed-team detection sees every inventory
//! on its cluster, which is the point here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Api;
use kube::api::ListParams;
use pontoon::cluster::Cluster;
use pontoon::desired::*;
use pontoon::sync::{SyncOptions, Syncer, UnitResult, UnitState};

use crate::support::audit;
use crate::support::control_plane::{self, ControlPlane, unique_name};
use crate::support::daemon::write;
use crate::support::daemon_config::DaemonConfig;

mod per_owner;

/// The control plane of these tests, and the cluster's name in their platform repos.
const PLANE: &str = "owners";

/// One team of a platform repo: its namespaces and its ConfigMaps `(namespace, name,
/// value)`.
struct Team<'a> {
    name: &'a str,
    namespaces: Vec<&'a str>,
    configmaps: Vec<(&'a str, &'a str, &'a str)>,
}

/// The files of a platform repo on the cluster [`PLANE`]: ConfigMaps allowed, whole units
/// prunable (`maxShare: 1.0`, so a removed team is deleted, not held).
fn repo(teams: &[Team<'_>]) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    files.insert(
        "platform.yaml".to_owned(),
        format!("apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {{name: p}}\nspec:\n  clusters: [{{name: {PLANE}}}]\n  policy:\n    allowedKinds: [{{group: \"\", kind: ConfigMap}}]\n    prune: {{maxShare: 1.0}}\n"),
    );
    for t in teams {
        files.insert(
            format!("teams/{}/team.yaml", t.name),
            format!(
                "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {}}}\nspec:\n  namespaces: [{}]\n  clusters: {{names: [{PLANE}]}}\n",
                t.name,
                t.namespaces.join(", ")
            ),
        );
        let docs: Vec<String> = t
            .configmaps
            .iter()
            .map(|(ns, name, value)| {
                format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {ns}}}\ndata: {{v: \"{value}\"}}\n")
            })
            .collect();
        files.insert(format!("teams/{}/app.yaml", t.name), docs.join("---\n"));
    }
    files
}

/// An instance's syncer on `cp` as `owner`, sending `agent` as its user agent so the
/// audit log tells its writes apart.
async fn instance(cp: &ControlPlane, owner: &str, agent: &'static str) -> Syncer {
    let mut config = cp.config().await;
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(agent),
    ));
    let cluster = Cluster::from_config(ClusterName(cp.name.into()), config, 16).expect("cluster");
    let options = SyncOptions {
        owner: Owner::new(owner).expect("owner"),
        ..SyncOptions::default()
    };
    Syncer::new(Arc::new(cluster), options)
}

/// One revision of an instance's repo, as its daemon syncs it: every unit, and the teams
/// that left.
async fn sync(s: &Syncer, files: &BTreeMap<String, String>, rev: &str) -> Vec<UnitResult> {
    let files: pontoon::render::Files = files
        .iter()
        .map(|(p, t)| (p.clone(), t.clone().into_bytes()))
        .collect();
    let earlier = s.namespace_owners().await.expect("namespace owners");
    let state = pontoon::render::render_after(&files, rev, &earlier);
    assert!(state.failed_teams.is_empty(), "{:?}", state.diagnostics);
    s.sync_cluster(&state).await
}

fn result<'a>(results: &'a [UnitResult], team: &str) -> &'a UnitResult {
    results
        .iter()
        .find(|r| r.unit.team.0 == team)
        .unwrap_or_else(|| panic!("no result for team {team}: {results:?}"))
}

fn assert_synced(results: &[UnitResult]) {
    for r in results {
        assert_eq!(r.state, UnitState::Synced, "{r:?}");
    }
}

/// Every object of the kinds pontoon writes here that carries `owner`'s label:
/// `Kind namespace/name` to `uid@resourceVersion`.
async fn owned_by(client: &kube::Client, owner: &str) -> BTreeMap<String, String> {
    let selector = format!("{LABEL_OWNER}={owner}");
    let mut out = BTreeMap::new();
    versions::<Namespace>(client, &selector, &mut out).await;
    versions::<ConfigMap>(client, &selector, &mut out).await;
    versions::<ResourceQuota>(client, &selector, &mut out).await;
    versions::<Role>(client, &selector, &mut out).await;
    versions::<RoleBinding>(client, &selector, &mut out).await;
    versions::<NetworkPolicy>(client, &selector, &mut out).await;
    out
}

async fn versions<K>(client: &kube::Client, selector: &str, out: &mut BTreeMap<String, String>)
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    let list = api
        .list_metadata(&ListParams::default().labels(selector))
        .await
        .expect("list");
    for o in list.items {
        let m = o.metadata;
        out.insert(
            format!(
                "{} {}/{}",
                K::kind(&()),
                m.namespace.unwrap_or_default(),
                m.name.unwrap_or_default()
            ),
            format!(
                "{}@{}",
                m.uid.unwrap_or_default(),
                m.resource_version.unwrap_or_default()
            ),
        );
    }
}

/// The writes the apiserver received from `agent` since `after` that concern one of
/// `objects` (as [`owned_by`] names them) or anything in their team namespaces.
fn writes_to(
    cp: &ControlPlane,
    agent: &str,
    after: jiff::Timestamp,
    objects: &BTreeMap<String, String>,
) -> Vec<String> {
    let sync_namespace = SyncOptions::default().namespace;
    let mut names = BTreeSet::new();
    let mut team_namespaces = BTreeSet::new();
    for key in objects.keys() {
        let (kind, path) = key.split_once(' ').expect("kind and path");
        let (ns, name) = path.split_once('/').expect("namespace/name");
        names.insert((ns.to_owned(), name.to_owned()));
        if kind == "Namespace" && name != sync_namespace {
            team_namespaces.insert(name.to_owned());
        }
    }
    audit::writes_by(cp.dir(), agent, after)
        .into_iter()
        .filter(|e| {
            let Some(o) = &e.object_ref else { return false };
            team_namespaces.contains(&o.namespace)
                || (o.resource == "namespaces" && team_namespaces.contains(&o.name))
                || names.contains(&(o.namespace.clone(), o.name.clone()))
        })
        .map(|e| e.describe())
        .collect()
}

async fn value(client: &kube::Client, ns: &str, name: &str) -> Option<String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    api.get_opt(name)
        .await
        .expect("get configmap")
        .and_then(|c| c.data?.remove("v"))
}

/// The field managers of the ConfigMap `ns/name`.
async fn managers(client: &kube::Client, ns: &str, name: &str) -> Vec<String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let cm = api.get(name).await.expect("get configmap");
    cm.metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect()
}

/// Lets the audit log's clock move past the writes before a mark (its timestamps have
/// microseconds; the machine is loaded).
async fn mark() -> jiff::Timestamp {
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    jiff::Timestamp::now()
}

/// Two instances with different owners and platform repos on one cluster, each syncing
/// several revisions (changes, additions, removals, a team removed, a claim on the other's
/// namespace): not one object of either is written by the other, by resourceVersion and
/// by the apiserver's audit log. Both repos have a team of the same name.
#[tokio::test]
async fn two_owners_on_one_cluster_never_touch_each_others_objects() {
    const AGENT_X: &str = "pontoon-owners-test-x";
    const AGENT_Y: &str = "pontoon-owners-test-y";
    let cp = control_plane::dedicated(PLANE);
    let client = cp.client().await;
    let (ox, oy) = (unique_name("ox"), unique_name("oy"));
    let (x, y) = (
        instance(cp, &ox, AGENT_X).await,
        instance(cp, &oy, AGENT_Y).await,
    );
    let (shop, web, ops) = (unique_name("shop"), unique_name("web"), unique_name("ops"));
    let (xs, xw) = (format!("x-{shop}"), format!("x-{web}"));
    let (ys, yo) = (format!("y-{shop}"), format!("y-{ops}"));

    let x1 = repo(&[
        Team {
            name: &shop,
            namespaces: vec![&xs],
            configmaps: vec![(&xs, "a", "x1"), (&xs, "b", "x1")],
        },
        Team {
            name: &web,
            namespaces: vec![&xw],
            configmaps: vec![(&xw, "a", "x1")],
        },
    ]);
    let y_ops = Team {
        name: &ops,
        namespaces: vec![&yo],
        configmaps: vec![(&yo, "a", "y1")],
    };
    let y1 = repo(&[
        Team {
            name: &shop,
            namespaces: vec![&ys],
            configmaps: vec![(&ys, "a", "y1"), (&ys, "b", "y1")],
        },
        y_ops,
    ]);
    let r = sync(&x, &x1, "x1").await;
    assert_synced(&r);
    let r = sync(&y, &y1, "y1").await;
    assert_synced(&r);
    assert_eq!(r.len(), 2, "y sees no team of x's as removed: {r:?}");

    // y's revisions: a change, an addition, a removal, a claim on x's namespace, then the
    // claim dropped and a whole team removed, then one more addition.
    let xs_before = owned_by(&client, &ox).await;
    assert!(
        xs_before.contains_key(&format!("ConfigMap {xs}/a"))
            && xs_before.contains_key(&format!(
                "ConfigMap pontoon-system/pontoon-inventory-{shop}.{ox}"
            )),
        "{xs_before:?}"
    );
    let since = mark().await;
    let y2 = repo(&[
        Team {
            name: &shop,
            namespaces: vec![&ys, &xs],
            configmaps: vec![(&ys, "a", "y2"), (&ys, "c", "y2"), (&xs, "z", "y2")],
        },
        Team {
            name: &ops,
            namespaces: vec![&yo],
            configmaps: vec![(&yo, "a", "y1")],
        },
    ]);
    let r = sync(&y, &y2, "y2").await;
    let claim = result(&r, &shop);
    assert_eq!(claim.state, UnitState::Failed, "{claim:?}");
    let errors = format!("{:?}", claim.errors);
    assert!(
        errors.contains(&format!(
            "belongs to the pontoon instance with owner {ox} (team {shop}); this one (sync.owner {oy}) does not take over another instance's object"
        )) && errors.contains(&format!(
            "namespace {xs} belongs to the pontoon instance with owner {ox}; nothing is applied into it"
        )),
        "{errors}"
    );
    assert_eq!(value(&client, &ys, "a").await.as_deref(), Some("y2"));
    let y3 = repo(&[Team {
        name: &shop,
        namespaces: vec![&ys],
        configmaps: vec![(&ys, "a", "y2"), (&ys, "c", "y2")],
    }]);
    let r = sync(&y, &y3, "y3").await;
    assert_synced(&r);
    assert!(
        result(&r, &ops)
            .pruned
            .iter()
            .any(|k| k.kind == "ConfigMap"),
        "the team y removed is pruned: {r:?}"
    );
    let y4 = repo(&[Team {
        name: &shop,
        namespaces: vec![&ys],
        configmaps: vec![(&ys, "a", "y2"), (&ys, "c", "y2"), (&ys, "d", "y4")],
    }]);
    assert_synced(&sync(&y, &y4, "y4").await);
    assert_eq!(value(&client, &ys, "b").await, None, "y pruned its own b");
    assert_eq!(value(&client, &yo, "a").await, None, "y removed its team");
    assert_eq!(value(&client, &ys, "d").await.as_deref(), Some("y4"));
    assert_eq!(
        managers(&client, &ys, "a").await,
        [format!("pontoon-{oy}")],
        "y applies as its own field manager"
    );

    assert_eq!(
        owned_by(&client, &ox).await,
        xs_before,
        "y's syncs left every object of x's as it was"
    );
    let touched = writes_to(cp, AGENT_Y, since, &xs_before);
    assert!(touched.is_empty(), "y wrote to x's objects: {touched:#?}");
    assert!(
        !audit::writes_by(cp.dir(), AGENT_Y, since).is_empty(),
        "y's writes are in the audit log under its user agent"
    );

    // x's revisions: a change, an addition, a team removed (its team `shop` has the name
    // of y's).
    let ys_before = owned_by(&client, &oy).await;
    let since = mark().await;
    let x2 = repo(&[Team {
        name: &shop,
        namespaces: vec![&xs],
        configmaps: vec![(&xs, "a", "x2"), (&xs, "b", "x1"), (&xs, "e", "x2")],
    }]);
    let r = sync(&x, &x2, "x2").await;
    assert_synced(&r);
    assert!(
        result(&r, &web)
            .pruned
            .iter()
            .any(|k| k.kind == "ConfigMap"),
        "{r:?}"
    );
    let x3 = repo(&[Team {
        name: &shop,
        namespaces: vec![&xs],
        configmaps: vec![(&xs, "a", "x3"), (&xs, "e", "x2")],
    }]);
    let r = sync(&x, &x3, "x3").await;
    assert_synced(&r);
    assert_eq!(r.len(), 1, "x sees no team of y's as removed: {r:?}");
    assert_eq!(value(&client, &xs, "a").await.as_deref(), Some("x3"));
    assert_eq!(value(&client, &xw, "a").await, None, "x removed its team");
    assert_eq!(
        owned_by(&client, &oy).await,
        ys_before,
        "x's syncs left every object of y's as it was"
    );
    let touched = writes_to(cp, AGENT_X, since, &ys_before);
    assert!(touched.is_empty(), "x wrote to y's objects: {touched:#?}");
}

/// `pontoon sync --once --config <dir>/pontoon.yaml`, asserting it exits 0; its stdout.
fn sync_once(dir: &Path) -> String {
    let config = dir.join("pontoon.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_pontoon"))
        .args(["sync", "--once", "--config"])
        .arg(&config)
        .output()
        .expect("run pontoon");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Two daemons with different platform repos and the default `sync.namespace` on one
/// cluster, as `pontoon sync --once` runs them: the first keeps the default owner (a
/// cluster synced before owners existed), the second names its own. Neither takes the
/// other's inventories for teams removed from its repo (which, with `maxShare: 1.0`,
/// deleted them), in either order, over two revisions each.
#[tokio::test]
async fn two_daemons_in_the_default_namespace_do_not_prune_each_others_teams() {
    let cp = control_plane::dedicated(PLANE);
    let client = cp.client().await;
    let (ta, tb, owner_b) = (unique_name("ta"), unique_name("tb"), unique_name("ob"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let write_repo = |dir: &Path, team: &str, v: &str| {
        let files = repo(&[Team {
            name: team,
            namespaces: vec![team],
            configmaps: vec![(team, "app", v)],
        }]);
        for (path, text) in &files {
            write(&dir.join("platform"), path, text);
        }
    };
    write_repo(&a, &ta, "a1");
    write_repo(&b, &tb, "b1");
    DaemonConfig::dir(&a.join("platform"))
        .cluster(PLANE, &cp.kubeconfig)
        .write(&a);
    DaemonConfig::dir(&b.join("platform"))
        .cluster(PLANE, &cp.kubeconfig)
        .owner(&owner_b)
        .write(&b);

    let out = sync_once(&a);
    assert!(out.contains(&format!("{PLANE}/{ta}")), "{out}");
    let out = sync_once(&b);
    assert!(!out.contains(&ta), "b does not sync a's team: {out}");
    assert_eq!(value(&client, &ta, "app").await.as_deref(), Some("a1"));
    let out = sync_once(&a);
    assert!(!out.contains(&tb), "a does not sync b's team: {out}");
    assert_eq!(value(&client, &tb, "app").await.as_deref(), Some("b1"));

    write_repo(&a, &ta, "a2");
    write_repo(&b, &tb, "b2");
    sync_once(&b);
    sync_once(&a);
    assert_eq!(value(&client, &ta, "app").await.as_deref(), Some("a2"));
    assert_eq!(value(&client, &tb, "app").await.as_deref(), Some("b2"));

    // Each daemon's inventory under its own name, with its owner's label.
    let inventories: Api<ConfigMap> = Api::namespaced(client, &SyncOptions::default().namespace);
    let owner_of = |cm: Option<ConfigMap>| {
        cm.and_then(|c| c.metadata.labels?.remove(LABEL_OWNER))
            .unwrap_or_default()
    };
    let a_inventory = inventories
        .get_opt(&format!("pontoon-inventory-{ta}"))
        .await
        .expect("get");
    assert_eq!(owner_of(a_inventory), DEFAULT_OWNER);
    let b_inventory = inventories
        .get_opt(&format!("pontoon-inventory-{tb}.{owner_b}"))
        .await
        .expect("get");
    assert_eq!(owner_of(b_inventory), owner_b);
}

/// Takes the owner label off the ConfigMap `ns/name`, as versions before owners wrote it.
async fn strip_owner(client: &kube::Client, ns: &str, name: &str) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let patch = serde_json::json!({"metadata": {"labels": {LABEL_OWNER: null}}});
    api.patch(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(patch),
    )
    .await
    .expect("strip the owner label");
}

/// What pontoon wrote before owners existed (its labels, no owner label) is the default
/// owner's: a daemon of the default owner, restarted, trusts that inventory, prunes from
/// it and labels what it keeps; a daemon of another owner does not list it.
#[tokio::test]
async fn what_was_written_before_owners_is_the_default_owners() {
    let cp = control_plane::shared();
    let client = cp.client().await;
    let team = unique_name("old");
    let unit = |names: &[&str]| {
        let mut objects = crate::support::fixtures::team_base(&team, &[&team]);
        for n in names {
            objects.push(crate::support::fixtures::configmap(
                &team,
                &team,
                n,
                serde_json::json!({"v": "1"}),
            ));
        }
        crate::support::fixtures::unit_desired(&team, cp.name, &[&team], objects)
    };
    let s = instance(cp, DEFAULT_OWNER, "pontoon-owners-test-old").await;
    assert_eq!(
        s.sync(&unit(&["a", "b"]), "r1").await.state,
        UnitState::Synced
    );
    let sync_namespace = SyncOptions::default().namespace;
    strip_owner(
        &client,
        &sync_namespace,
        &format!("pontoon-inventory-{team}"),
    )
    .await;
    for name in ["a", "b"] {
        strip_owner(&client, &team, name).await;
    }

    let other = instance(cp, "another", "pontoon-owners-test-another").await;
    let theirs = other.teams_on_cluster().await.expect("inventories");
    assert!(!theirs.contains(&TeamName(team.clone())), "{theirs:?}");

    let restarted = instance(cp, DEFAULT_OWNER, "pontoon-owners-test-old").await;
    assert!(
        restarted
            .teams_on_cluster()
            .await
            .expect("inventories")
            .contains(&TeamName(team.clone()))
    );
    let r = restarted.sync(&unit(&["a"]), "r2").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert!(r.pruned.iter().any(|k| k.name == "b"), "{r:?}");
    let cms: Api<ConfigMap> = Api::namespaced(client, &team);
    let labels = cms.get("a").await.expect("a").metadata.labels;
    assert_eq!(
        labels.and_then(|mut l| l.remove(LABEL_OWNER)).as_deref(),
        Some(DEFAULT_OWNER),
        "what the default owner keeps carries its label again"
    );
}
