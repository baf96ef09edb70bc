//! Real rollouts on the control plane with nodes (kube-controller-manager, kube-scheduler
//! and kwok's nodes; see `control-plane.sh --nodes`): a Deployment is Progressing while
//! the Pods of its ReplicaSet are scheduled and start, and Synced once they are Ready; a
//! StatefulSet, a DaemonSet and a Job get there too. A Deployment whose Pods never get
//! Ready ends Failed with the deployment controller's own message, shown by a real
//! `pontoon run` in `/api/status` and in the commit status on Gitea; the next good commit
//! rolls out and turns both green.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Api;
use kube::api::{ListParams, PostParams};
use pontoon::desired::{Applier, DesiredObject};
use pontoon::sync::UnitState;
use pontoon::sync::health::Health;
use serde_json::{Value, json};

use crate::support::control_plane::{self, ControlPlane, eventually, unique_name};
use crate::support::daemon::{spawn_run, write};
use crate::support::daemon_config::DaemonConfig;
use crate::support::fixtures::{obj, team_base, unit_desired};
use crate::support::git::git;
use crate::support::gitea::{self, Gitea};
use crate::sync::syncer;

/// A workload of the team's: `kind` (apps/v1 unless a Job) `name` with `spec`.
fn workload(team: &str, kind: &str, name: &str, spec: Value) -> DesiredObject {
    let api_version = if kind == "Job" { "batch/v1" } else { "apps/v1" };
    obj(
        team,
        Applier::Team,
        json!({"apiVersion": api_version, "kind": kind,
               "metadata": {"name": name, "namespace": team}, "spec": spec}),
    )
}

/// A pod template of one container running `image`, labelled `app: name`, with
/// `annotations` (kwok reads its per-pod step delays from them).
fn template(name: &str, image: &str, annotations: Value) -> Value {
    json!({"metadata": {"labels": {"app": name}, "annotations": annotations},
           "spec": {"containers": [{"name": "app", "image": image}]}})
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn on_a_kwok_node(p: &Pod) -> bool {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| n.starts_with("kwok-node-"))
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The `app=name` Pods of a namespace.
async fn pods(api: &Api<Pod>, name: &str) -> Vec<Pod> {
    api.list(&ListParams::default().labels(&format!("app={name}")))
        .await
        .expect("list pods")
        .items
}

#[tokio::test]
async fn a_deployment_is_progressing_while_its_pods_come_up_then_synced() {
    let cp = control_plane::with_nodes();
    let s = syncer(cp).await;
    let team = unique_name("rollout");
    let mut objects = team_base(&team, &[&team]);
    // Its pods start at once and take five seconds more to pass their readiness check.
    objects.push(workload(
        &team,
        "Deployment",
        "web",
        json!({"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
               "template": template("web", "registry.example.com/shop/web:1.0",
                                    json!({"pod-ready.stage.kwok.x-k8s.io/delay": "5s"}))}),
    ));
    let d = unit_desired(&team, cp.name, &[&team], objects);
    let r = s.sync(&d, "r1").await;
    assert_eq!(r.state, UnitState::Progressing, "{r:?}");

    // Pods of a ReplicaSet, scheduled onto kwok's nodes and running, not yet Ready: the
    // unit is Progressing and says what it waits for.
    let pod_api: Api<Pod> = Api::namespaced(cp.client().await, &team);
    let why = eventually(
        "running, unready pods while pontoon says Progressing",
        Duration::from_secs(90),
        || async {
            let p = pods(&pod_api, "web").await;
            let running = p
                .iter()
                .filter(|p| phase(p) == "Running" && on_a_kwok_node(p) && !ready(p))
                .count();
            if running < 2 {
                return None;
            }
            let health = s.check_health(&r).await;
            match health.iter().find(|(k, _)| k.name == "web") {
                Some((_, Health::Progressing(why))) => Some(why.clone()),
                _ => None,
            }
        },
    )
    .await;
    assert!(why.contains("updated replicas available"), "{why}");

    let r = s
        .wait_healthy(
            r,
            Instant::now(),
            Duration::from_secs(120),
            Duration::from_millis(200),
        )
        .await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");

    // What made it healthy is real: one ReplicaSet of the Deployment's, two Ready pods
    // of that ReplicaSet's on kwok's nodes.
    let sets: Api<ReplicaSet> = Api::namespaced(cp.client().await, &team);
    let sets = sets.list(&ListParams::default()).await.expect("list").items;
    assert_eq!(sets.len(), 1, "{sets:?}");
    let set = &sets[0];
    let owner = &set.metadata.owner_references.as_ref().expect("owned")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Deployment", "web")
    );
    let p = pods(&pod_api, "web").await;
    assert_eq!(p.len(), 2);
    for pod in &p {
        assert!(ready(pod) && on_a_kwok_node(pod), "{pod:?}");
        let owner = &pod.metadata.owner_references.as_ref().expect("owned")[0];
        assert_eq!(Some(&owner.name), set.metadata.name.as_ref());
    }
}

#[tokio::test]
async fn a_statefulset_a_daemonset_a_job_and_a_disruption_budget_roll_out_for_real() {
    let cp = control_plane::with_nodes();
    let s = syncer(cp).await;
    let team = unique_name("workloads");
    let mut objects = team_base(&team, &[&team]);
    let image = "registry.example.com/data/db:16";
    objects.push(workload(
        &team,
        "StatefulSet",
        "db",
        json!({"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
               "template": template("db", image, json!({}))}),
    ));
    objects.push(workload(
        &team,
        "DaemonSet",
        "agent",
        json!({"selector": {"matchLabels": {"app": "agent"}},
               "template": template("agent", image, json!({}))}),
    ));
    let mut job_pod = template("migrate", image, json!({}));
    job_pod["spec"]["restartPolicy"] = json!("Never");
    objects.push(workload(
        &team,
        "Job",
        "migrate",
        json!({"backoffLimit": 0, "template": job_pod}),
    ));
    // Healthy once the disruption controller has counted the pods it guards.
    objects.push(obj(
        &team,
        Applier::Platform,
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
               "metadata": {"name": "db", "namespace": team},
               "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}}}),
    ));
    let d = unit_desired(&team, cp.name, &[&team], objects);
    let r = s.sync(&d, "r1").await;
    assert_eq!(r.state, UnitState::Progressing, "{r:?}");
    assert_eq!(r.not_ready.len(), 4, "{r:?}");
    let r = s
        .wait_healthy(
            r,
            Instant::now(),
            Duration::from_secs(120),
            Duration::from_millis(200),
        )
        .await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");

    let client = cp.client().await;
    let db = Api::<StatefulSet>::namespaced(client.clone(), &team)
        .get("db")
        .await
        .expect("get");
    assert_eq!(db.status.and_then(|s| s.ready_replicas), Some(2));
    let agent = Api::<DaemonSet>::namespaced(client.clone(), &team)
        .get("agent")
        .await
        .expect("get");
    assert_eq!(
        agent.status.map(|s| s.number_ready),
        Some(3),
        "one per node"
    );
    let job = Api::<Job>::namespaced(client.clone(), &team)
        .get("migrate")
        .await
        .expect("get");
    assert_eq!(job.status.and_then(|s| s.succeeded), Some(1));
    let pod_api: Api<Pod> = Api::namespaced(client, &team);
    let done = pods(&pod_api, "migrate").await;
    assert!(
        done.len() == 1 && phase(&done[0]) == "Succeeded",
        "{done:?}"
    );
}

/// A `pontoon run` process, killed when dropped: a failing assertion leaves none behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The newest status of `context` on `sha`: (state, description).
async fn status_of(
    gitea: &Gitea,
    repo: &str,
    sha: &str,
    context: &str,
) -> Option<(String, String)> {
    let list = gitea.statuses(repo, sha).await;
    list.as_array()?
        .iter()
        .filter(|s| s["context"] == context)
        .max_by_key(|s| s["id"].as_i64().unwrap_or(0))
        .map(|s| {
            let state = s["status"].as_str().or(s["state"].as_str()).unwrap_or("");
            let description = s["description"].as_str().unwrap_or("");
            (state.to_owned(), description.to_owned())
        })
}

/// The team's unit in the daemon's `/api/status`, once it is at `revision` in `state`.
async fn unit_at(base: &str, team: &str, revision: &str, state: &str) -> Option<Value> {
    let s: Value = reqwest::get(format!("{base}/api/status"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let unit = s["units"]
        .as_array()?
        .iter()
        .find(|u| u["team"] == team)?
        .clone();
    (unit["revision"] == revision && unit["state"] == state).then_some(unit)
}

/// The team's app file: Deployment `web` of `image`, two minutes' progress deadline
/// unless `deadline` says otherwise.
fn app(image: &str, deadline: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: 2\n  progressDeadlineSeconds: {deadline}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers: [{{name: app, image: \"{image}\"}}]\n"
    )
}

fn commit_and_push(gitea: &Gitea, work: &Path, repo: &str, message: &str) -> String {
    git(work, &["add", "-A"]);
    git(work, &["commit", "-q", "-m", message]);
    gitea.push(work, repo, "main");
    git(work, &["rev-parse", "HEAD"])
}

/// A work tree under `dir` of a platform repo of `cluster`, where teams may write
/// Deployments, and of `team`, whose files are not written yet.
fn platform_repo(dir: &Path, cluster: &str, team: &str) -> std::path::PathBuf {
    let work = dir.join("work");
    std::fs::create_dir(&work).expect("mkdir");
    git(&work, &["init", "-q"]);
    write(
        &work,
        "platform.yaml",
        &format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {{name: r}}\nspec:\n  clusters: [{{name: {cluster}}}]\n  policy:\n    allowedKinds: [{{group: apps, kind: Deployment}}]\n"
        ),
    );
    write(
        &work,
        &format!("teams/{team}/team.yaml"),
        &format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {team}}}\nspec:\n  namespaces: [{team}]\n  clusters: {{names: [{cluster}]}}\n"
        ),
    );
    work
}

/// A daemon that polls `repo` on Gitea, syncs it to `cp` and posts commit statuses there;
/// its token is written to `dir`. Its inventories are in a namespace of their own on the
/// shared cluster, so other tests' teams are not its business.
async fn daemon_config(cp: &ControlPlane, gitea: &Gitea, repo: &str, dir: &Path) -> DaemonConfig {
    let system = unique_name("rollouts-system");
    Api::<Namespace>::all(cp.client().await)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": system}})).expect("ns"),
        )
        .await
        .expect("the daemon's namespace");
    std::fs::write(dir.join("token"), gitea.token()).expect("token");
    let owner = gitea.user();
    DaemonConfig::git(
        &format!("{}/{owner}/{repo}.git", gitea.url()),
        &dir.join("cache"),
    )
    .git_token(owner, "token")
    .cluster(cp.name, &cp.kubeconfig)
    .inventory_namespace(&system)
    .gitea_statuses(
        &format!("{}/api/v1", gitea.url()),
        &format!("{owner}/{repo}"),
        "token",
    )
}

#[tokio::test]
async fn a_rollout_that_never_gets_ready_fails_with_the_controllers_message() {
    let cp = control_plane::with_nodes();
    let gitea = gitea::shared();
    let repo = unique_name("rollouts");
    gitea.create_repo(&repo).await;
    let team = unique_name("stuck");
    let tmp = tempfile::tempdir().expect("tempdir");
    let work = platform_repo(tmp.path(), cp.name, &team);
    // Pods of this image run but never pass their readiness check (kwok's stages): the
    // deployment controller gives up after ten seconds.
    write(
        &work,
        &format!("teams/{team}/app.yaml"),
        &app("registry.example.com/shop/web:never-ready", 10),
    );
    let stuck = commit_and_push(gitea, &work, &repo, "never ready");

    let config = daemon_config(cp, gitea, &repo, tmp.path()).await;
    let base = config.base_url();
    let log = tmp.path().join("pontoon.log");
    let _daemon = Running(spawn_run(&config.write(tmp.path()), &log));
    let context = format!("pontoon/{}/{team}", cp.name);

    // Rolling out: pending while real pods start and stay unready.
    let pending = eventually(
        "a pending commit status of the rollout",
        Duration::from_secs(90),
        || async {
            let (state, description) = status_of(gitea, &repo, &stuck, &context).await?;
            (state == "pending" && description.starts_with("applied, rolling out"))
                .then_some(description)
        },
    )
    .await;
    assert!(pending.contains("Deployment"), "{pending}");

    // The deployment controller's verdict, in its own words.
    let unit = eventually(
        "the unit Failed in /api/status",
        Duration::from_secs(120),
        || unit_at(&base, &team, &stuck, "Failed"),
    )
    .await;
    let error = unit["last_error"].as_str().unwrap_or("").to_owned();
    assert!(
        error.contains("ReplicaSet \"web-") && error.contains("has timed out progressing."),
        "{unit:#}"
    );
    let (state, description) = eventually(
        "a failure commit status",
        Duration::from_secs(60),
        || async {
            let (state, description) = status_of(gitea, &repo, &stuck, &context).await?;
            (state == "failure").then_some((state, description))
        },
    )
    .await;
    assert_eq!(state, "failure");
    assert!(
        description.contains("has timed out progressing."),
        "{description}"
    );
    let deployment = Api::<Deployment>::namespaced(cp.client().await, &team)
        .get("web")
        .await
        .expect("get");
    let progressing = deployment
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_.as_deref() == Some("Progressing"))
        .expect("a Progressing condition");
    assert_eq!(
        progressing.reason.as_deref(),
        Some("ProgressDeadlineExceeded")
    );
    assert!(
        error.contains(progressing.message.as_deref().unwrap_or("?")),
        "{error}"
    );

    // The next commit's image gets Ready: the new ReplicaSet replaces the stuck one.
    write(
        &work,
        &format!("teams/{team}/app.yaml"),
        &app("registry.example.com/shop/web:1.1", 120),
    );
    let fixed = commit_and_push(gitea, &work, &repo, "ready");
    eventually(
        "the unit Synced in /api/status",
        Duration::from_secs(120),
        || unit_at(&base, &team, &fixed, "Synced"),
    )
    .await;
    eventually(
        "a success commit status",
        Duration::from_secs(60),
        || async {
            let (state, _) = status_of(gitea, &repo, &fixed, &context).await?;
            (state == "success").then_some(())
        },
    )
    .await;
    let pod_api: Api<Pod> = Api::namespaced(cp.client().await, &team);
    eventually(
        "two Ready pods of the new image, the stuck ones gone",
        Duration::from_secs(60),
        || async {
            let live = pods(&pod_api, "web").await;
            let new = |p: &Pod| {
                p.spec.as_ref().map(|s| s.containers[0].image.as_deref())
                    == Some(Some("registry.example.com/shop/web:1.1"))
            };
            (live.len() == 2 && live.iter().all(|p| ready(p) && new(p))).then_some(())
        },
    )
    .await;
}
