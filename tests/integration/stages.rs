//! Rollout stages across two real control planes (`staging`, `prod`), with the commit
//! statuses read back from a real Gitea: prod waits (`pending`, why) while staging rolls a
//! commit out and soaks, keeping the objects of the revision it runs; a commit whose
//! Deployment never becomes healthy on staging is stopped for prod (`failure`, "stopped:
//! staging failed"); the next good commit flows through both, prod after staging's soak.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::Api;

use crate::support::control_plane::{self, eventually, unique_name};
use crate::support::daemon::{Daemon, write};
use crate::support::daemon_config::DaemonConfig;
use crate::support::git::git;
use crate::support::gitea::{self, Gitea};

const SOAK_SECONDS: i64 = 4;

fn platform() -> String {
    format!(
        "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {{name: stages}}\nspec:\n  clusters: [{{name: staging}}, {{name: prod, labels: {{tier: prod}}}}]\n  policy:\n    allowedKinds: [{{group: \"\", kind: ConfigMap}}, {{group: \"\", kind: Service}}, {{group: apps, kind: Deployment}}]\n  rollout:\n    stages:\n    - {{name: staging, clusters: {{names: [staging]}}, soak: {SOAK_SECONDS}s}}\n    - {{name: prod, clusters: {{matchLabels: {{tier: prod}}}}}}\n"
    )
}

fn team(name: &str, namespace: &str) -> String {
    format!(
        "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {name}}}\nspec:\n  namespaces: [{namespace}]\n  clusters: {{names: [staging, prod]}}\n"
    )
}

fn settings(value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings}}\ndata: {{value: \"{value}\"}}\n"
    )
}

/// A Service only the first commit has: a kind the later commits drop.
const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{name: http, port: 80}]\n";

/// A Deployment whose Pods no node can take: it never becomes available.
const NEVER_READY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      nodeSelector: {pontoon.dev/no-such-node: \"true\"}\n      containers: [{name: web, image: registry.invalid/web:1}]\n";

/// Every status of `context` on `sha`, oldest first: (state, description).
async fn history(gitea: &Gitea, repo: &str, sha: &str, context: &str) -> Vec<(String, String)> {
    let list = gitea.statuses(repo, sha).await;
    let mut out: Vec<(i64, String, String)> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["context"] == context)
        .map(|s| {
            let state = s["status"].as_str().or(s["state"].as_str()).unwrap_or("");
            let description = s["description"].as_str().unwrap_or("");
            (
                s["id"].as_i64().unwrap_or(0),
                state.to_owned(),
                description.to_owned(),
            )
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, s, d)| (s, d)).collect()
}

/// Waits until the newest status of `context` on `sha` has `state`; its description.
async fn wait_status(gitea: &Gitea, repo: &str, sha: &str, context: &str, state: &str) -> String {
    eventually(
        &format!("{context} = {state} on {sha}"),
        Duration::from_secs(120),
        || async {
            let h = history(gitea, repo, sha, context).await;
            let (got, description) = h.last()?;
            (got == state).then(|| description.clone())
        },
    )
    .await
}

fn commit_and_push(gitea: &Gitea, work: &Path, repo: &str, message: &str) -> String {
    git(work, &["add", "-A"]);
    git(work, &["commit", "-q", "-m", message]);
    gitea.push(work, repo, "main");
    git(work, &["rev-parse", "HEAD"])
}

async fn value(cms: &Api<ConfigMap>) -> Option<String> {
    let cm = cms.get_opt("settings").await.expect("get settings")?;
    cm.data.and_then(|d| d.get("value").cloned())
}

/// When pontoon last applied the ConfigMap, from its managedFields (whole seconds).
async fn applied_at(cms: &Api<ConfigMap>) -> i64 {
    let cm = cms.get("settings").await.expect("get settings");
    cm.metadata
        .managed_fields
        .unwrap_or_default()
        .iter()
        .filter(|f| f.manager.as_deref() == Some("pontoon"))
        .filter_map(|f| f.time.as_ref().map(|t| t.0.as_second()))
        .max()
        .expect("pontoon's apply is recorded")
}

fn waiting_metric(metrics: &str, team: &str) -> Option<String> {
    let series =
        format!("pontoon_rollout_waiting{{cluster=\"prod\",stage=\"prod\",team=\"{team}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series).map(str::to_owned))
}

#[tokio::test]
async fn a_commit_reaches_prod_after_staging_is_healthy_and_soaked_and_a_failure_stops_it() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("pontoon=info")
        .with_test_writer()
        .try_init();
    let (staging, prod) = (control_plane::shared(), control_plane::second());
    let gitea = gitea::shared();
    let repo = unique_name("stages");
    gitea.create_repo(&repo).await;
    let (name, ns) = (unique_name("shop"), unique_name("shop"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).expect("mkdir");
    git(&work, &["init", "-q"]);
    write(&work, "platform.yaml", &platform());
    write(&work, &format!("teams/{name}/team.yaml"), &team(&name, &ns));
    write(&work, &format!("teams/{name}/app.yaml"), &settings("v1"));
    write(&work, &format!("teams/{name}/service.yaml"), SERVICE);
    let first = commit_and_push(gitea, &work, &repo, "first");

    std::fs::write(tmp.path().join("token"), gitea.token()).expect("token");
    let owner = gitea.user();
    let config = DaemonConfig::git(
        &format!("{}/{owner}/{repo}.git", gitea.url()),
        &tmp.path().join("cache"),
    )
    .git_token(owner, "token")
    .cluster("staging", &staging.kubeconfig)
    .cluster("prod", &prod.kubeconfig)
    .inventory_namespace(&unique_name("pontoon"))
    .health_timeout("20s")
    .gitea_statuses(
        &format!("{}/api/v1", gitea.url()),
        &format!("{owner}/{repo}"),
        "token",
    );
    let daemon = Daemon::start(&config.write(tmp.path()));
    let staging_cms: Api<ConfigMap> = Api::namespaced(staging.client().await, &ns);
    let prod_cms: Api<ConfigMap> = Api::namespaced(prod.client().await, &ns);
    let (staging_ctx, prod_ctx) = (
        format!("pontoon/staging/{name}"),
        format!("pontoon/prod/{name}"),
    );

    // The first commit: prod after staging.
    wait_status(gitea, &repo, &first, &staging_ctx, "success").await;
    wait_status(gitea, &repo, &first, &prod_ctx, "success").await;
    assert_eq!(value(&prod_cms).await.as_deref(), Some("v1"));

    // A commit whose Deployment never becomes healthy on staging: prod waits, keeping
    // v1, then is stopped for that commit when staging fails.
    write(&work, &format!("teams/{name}/app.yaml"), &settings("v2"));
    write(&work, &format!("teams/{name}/web.yaml"), NEVER_READY);
    std::fs::remove_file(work.join(format!("teams/{name}/service.yaml"))).expect("rm");
    let broken = commit_and_push(gitea, &work, &repo, "web that never starts");
    let d = wait_status(gitea, &repo, &broken, &prod_ctx, "pending").await;
    assert_eq!(
        d,
        format!("waiting for staging to sync and soak {SOAK_SECONDS}s")
    );
    eventually("staging applied v2", Duration::from_secs(60), || async {
        (value(&staging_cms).await.as_deref() == Some("v2")).then_some(())
    })
    .await;
    assert_eq!(value(&prod_cms).await.as_deref(), Some("v1"));
    let metrics = daemon.metrics().await;
    assert_eq!(
        waiting_metric(&metrics, &name).as_deref(),
        Some("1"),
        "{metrics}"
    );
    wait_status(gitea, &repo, &broken, &staging_ctx, "failure").await;
    let d = wait_status(gitea, &repo, &broken, &prod_ctx, "failure").await;
    assert_eq!(d, "stopped: staging failed");
    let d = wait_status(gitea, &repo, &broken, "pontoon/prod", "failure").await;
    assert!(d.contains(&format!("failed: {name}")), "{d}");
    // prod keeps the previous revision's objects, resynced, never the stopped ones.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(value(&prod_cms).await.as_deref(), Some("v1"));
    let prod_deployments: Api<Deployment> = Api::namespaced(prod.client().await, &ns);
    assert!(
        prod_deployments
            .get_opt("web")
            .await
            .expect("get")
            .is_none(),
        "the stopped commit's Deployment reached prod"
    );
    let metrics = daemon.metrics().await;
    assert_eq!(
        waiting_metric(&metrics, &name).as_deref(),
        Some("0"),
        "{metrics}"
    );
    // Drift on prod is corrected at the revision prod runs, at once, even for a kind the
    // newest commit no longer uses anywhere (the resync interval is ten minutes).
    let services: Api<Service> = Api::namespaced(prod.client().await, &ns);
    services
        .patch(
            "web",
            &kube::api::PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..Default::default()
            },
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"selector": {"app": "other"}}})),
        )
        .await
        .expect("edit the Service by hand");
    eventually(
        "the Service's selector corrected on prod",
        Duration::from_secs(30),
        || async {
            let svc = services.get("web").await.ok()?;
            let app = svc.spec?.selector?.get("app")?.clone();
            (app == "web").then_some(())
        },
    )
    .await;

    // The next good commit flows through both: prod pending with the soak counting down,
    // then applied no sooner than the soak after staging.
    std::fs::remove_file(work.join(format!("teams/{name}/web.yaml"))).expect("rm");
    write(&work, &format!("teams/{name}/app.yaml"), &settings("v3"));
    let fixed = commit_and_push(gitea, &work, &repo, "web removed");
    wait_status(gitea, &repo, &fixed, &staging_ctx, "success").await;
    wait_status(gitea, &repo, &fixed, &prod_ctx, "success").await;
    assert_eq!(value(&prod_cms).await.as_deref(), Some("v3"));
    let waits: Vec<String> = history(gitea, &repo, &fixed, &prod_ctx)
        .await
        .into_iter()
        .filter(|(s, _)| s == "pending")
        .map(|(_, d)| d)
        .collect();
    assert!(
        waits.iter().any(|d| d.starts_with("waiting for staging: ")
            && d.ends_with(&format!("s of {SOAK_SECONDS}s soak left"))),
        "{waits:?}"
    );
    let soaked = applied_at(&prod_cms).await - applied_at(&staging_cms).await;
    assert!(
        soaked >= SOAK_SECONDS - 1,
        "prod applied {soaked}s after staging, the soak is {SOAK_SECONDS}s"
    );
    for summary in ["pontoon/staging", "pontoon/prod"] {
        wait_status(gitea, &repo, &fixed, summary, "success").await;
    }
    daemon.finish().await;
}

/// After a restart, a unit a stage holds back runs the revision its inventory records,
/// rendered again from the source, and corrects drift there: a hand edit made on prod
/// while the daemon was down is undone at the old revision while prod waits for staging.
#[tokio::test]
async fn after_a_restart_a_held_unit_keeps_and_corrects_the_revision_its_inventory_records() {
    let (staging, prod) = (control_plane::shared(), control_plane::second());
    let gitea = gitea::shared();
    let repo = unique_name("stages-restart");
    gitea.create_repo(&repo).await;
    let (name, ns) = (unique_name("shop"), unique_name("shop"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).expect("mkdir");
    git(&work, &["init", "-q"]);
    write(&work, "platform.yaml", &platform());
    write(&work, &format!("teams/{name}/team.yaml"), &team(&name, &ns));
    write(&work, &format!("teams/{name}/app.yaml"), &settings("v1"));
    let first = commit_and_push(gitea, &work, &repo, "first");

    std::fs::write(tmp.path().join("token"), gitea.token()).expect("token");
    let owner = gitea.user();
    let config = |cache: &str| {
        DaemonConfig::git(
            &format!("{}/{owner}/{repo}.git", gitea.url()),
            &tmp.path().join(cache),
        )
        .git_token(owner, "token")
        .cluster("staging", &staging.kubeconfig)
        .cluster("prod", &prod.kubeconfig)
        .inventory_namespace(&format!("{ns}-inv"))
        .health_timeout("10m")
        .gitea_statuses(
            &format!("{}/api/v1", gitea.url()),
            &format!("{owner}/{repo}"),
            "token",
        )
    };
    let prod_ctx = format!("pontoon/prod/{name}");
    let daemon = Daemon::start(&config("cache").write(tmp.path()));
    wait_status(gitea, &repo, &first, &prod_ctx, "success").await;
    daemon.finish().await;

    // While the daemon is down: a commit staging never finishes, and a hand edit on prod.
    write(&work, &format!("teams/{name}/app.yaml"), &settings("v2"));
    write(&work, &format!("teams/{name}/web.yaml"), NEVER_READY);
    let second = commit_and_push(gitea, &work, &repo, "web that never starts");
    let prod_cms: Api<ConfigMap> = Api::namespaced(prod.client().await, &ns);
    prod_cms
        .patch(
            "settings",
            &kube::api::PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..Default::default()
            },
            &kube::api::Patch::Merge(serde_json::json!({"data": {"value": "by hand"}})),
        )
        .await
        .expect("edit by hand");

    // A new process with a new cache, which fetched only the newest commit.
    let config = config("cache-after-restart");
    let restarted = Daemon::start(&config.write(tmp.path()));
    let d = wait_status(gitea, &repo, &second, &prod_ctx, "pending").await;
    assert_eq!(
        d,
        format!("waiting for staging to sync and soak {SOAK_SECONDS}s")
    );
    eventually(
        "prod corrected back to the first commit's value",
        Duration::from_secs(90),
        || async { (value(&prod_cms).await.as_deref() == Some("v1")).then_some(()) },
    )
    .await;
    let staging_cms: Api<ConfigMap> = Api::namespaced(staging.client().await, &ns);
    assert_eq!(value(&staging_cms).await.as_deref(), Some("v2"));
    let d = history(gitea, &repo, &second, &prod_ctx).await;
    assert_eq!(
        d.last().map(|(s, _)| s.as_str()),
        Some("pending"),
        "prod waits for staging: {d:?}"
    );
    restarted.finish().await;
}
