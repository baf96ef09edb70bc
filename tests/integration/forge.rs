//! Commit statuses and pull-request plans end to end, against a real Gitea and a real
//! control plane: pontoon polls the platform repo from Gitea over HTTP with a token,
//! syncs it, and Gitea's API then shows `pontoon/<cluster>/<team>` and `pontoon/<cluster>`
//! on the commit; a pull request opened in Gitea reaches pontoon as Gitea's own signed
//! webhook and ends in a `pontoon/plan` status on its head. A second test stops Gitea while
//! pontoon syncs: syncing goes on, and the statuses owed appear once Gitea is back.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use reqwest::Method;
use serde_json::json;

use crate::support::control_plane::{self, eventually, unique_name};
use crate::support::daemon::{Daemon, write};
use crate::support::daemon_config::DaemonConfig;
use crate::support::git::git;
use crate::support::gitea::{self, Gitea};

fn platform(cluster: &str) -> String {
    format!(
        "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {{name: forge}}\nspec:\n  clusters: [{{name: {cluster}}}]\n  policy:\n    allowedKinds: [{{group: \"\", kind: ConfigMap}}]\n"
    )
}

fn team(name: &str, cluster: &str) -> String {
    format!(
        "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {name}}}\nspec:\n  namespaces: [{name}]\n  clusters: {{names: [{cluster}]}}\n"
    )
}

fn configmap(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{value: \"{value}\"}}\n"
    )
}

/// Context → (state, description) of a commit, newest status per context.
async fn statuses(gitea: &Gitea, repo: &str, sha: &str) -> BTreeMap<String, (String, String)> {
    let list = gitea.statuses(repo, sha).await;
    let mut out: BTreeMap<String, (String, String, i64)> = BTreeMap::new();
    for s in list.as_array().into_iter().flatten() {
        let context = s["context"].as_str().unwrap_or("").to_owned();
        let id = s["id"].as_i64().unwrap_or(0);
        let entry = (
            s["status"]
                .as_str()
                .or(s["state"].as_str())
                .unwrap_or("")
                .to_owned(),
            s["description"].as_str().unwrap_or("").to_owned(),
            id,
        );
        if out.get(&context).is_none_or(|e| e.2 < id) {
            out.insert(context, entry);
        }
    }
    out.into_iter().map(|(k, (s, d, _))| (k, (s, d))).collect()
}

/// Waits until `context` on `sha` has `state`, and returns its description.
async fn wait_status(gitea: &Gitea, repo: &str, sha: &str, context: &str, state: &str) -> String {
    eventually(
        &format!("{context} = {state} on {sha}"),
        Duration::from_secs(90),
        || async {
            let s = statuses(gitea, repo, sha).await;
            let (got, description) = s.get(context)?;
            (got == state).then(|| description.clone())
        },
    )
    .await
}

/// Commits everything in `work` and pushes `branch` to Gitea; the new commit.
fn commit_and_push(gitea: &Gitea, work: &Path, repo: &str, branch: &str, message: &str) -> String {
    git(work, &["add", "-A"]);
    git(work, &["commit", "-q", "-m", message]);
    gitea.push(work, repo, branch);
    git(work, &["rev-parse", "HEAD"])
}

/// Pull requests against main: Gitea's own webhook (signed with the secret) asks the
/// daemon listening on `port` for a plan, posted as `pontoon/plan`; nothing is applied.
async fn pull_requests_are_planned(
    gitea: &Gitea,
    repo: &str,
    work: &Path,
    port: u16,
    cms: &Api<ConfigMap>,
) {
    let hook = gitea
        .api(
            Method::POST,
            &format!("/repos/{}/{repo}/hooks", gitea.user()),
        )
        .json(&json!({
            "type": "gitea",
            "active": true,
            "events": ["pull_request"],
            "config": {"url": format!("http://127.0.0.1:{port}/webhooks/gitea"),
                       "content_type": "json", "secret": "s3cret"},
        }))
        .send()
        .await
        .expect("create hook");
    assert!(hook.status().is_success(), "{:?}", hook.text().await);
    // Fix data on main first, so the pull requests start from a good state.
    write(work, "teams/data/app.yaml", &configmap("pipeline", "v2"));
    let fixed = commit_and_push(gitea, work, repo, "main", "data fixed");
    wait_status(gitea, repo, &fixed, "pontoon/forge", "success").await;

    let open_pr = |branch: &'static str| {
        let repo = repo.to_owned();
        async move { gitea.open_pull_request(&repo, branch, "main", branch).await }
    };
    git(work, &["checkout", "-q", "-b", "more-config"]);
    write(work, "teams/shop/extra.yaml", &configmap("extra", "1"));
    let good_head = commit_and_push(gitea, work, repo, "more-config", "more config");
    open_pr("more-config").await;
    let d = wait_status(gitea, repo, &good_head, "pontoon/plan", "success").await;
    assert_eq!(d, "forge +1 ~0 -0");
    assert!(
        cms.get_opt("extra").await.expect("get").is_none(),
        "nothing is applied from a pull request"
    );

    git(work, &["checkout", "-q", "main"]);
    git(work, &["checkout", "-q", "-b", "broken"]);
    write(
        work,
        "teams/shop/bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad, namespace: data}\ndata: {x: y}\n",
    );
    let bad_head = commit_and_push(gitea, work, repo, "broken", "broken");
    open_pr("broken").await;
    let d = wait_status(gitea, repo, &bad_head, "pontoon/plan", "failure").await;
    assert!(d.starts_with("1 error: teams/shop/bad.yaml:"), "{d}");
    assert!(d.contains("error["), "{d}");
}

#[tokio::test]
async fn commits_and_pull_requests_get_statuses_on_gitea() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("pontoon=info")
        .with_test_writer()
        .try_init();
    let cp = control_plane::dedicated("forge");
    let gitea = gitea::shared();
    let repo = unique_name("platform");
    gitea.create_repo(&repo).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).expect("mkdir");
    git(&work, &["init", "-q"]);
    write(&work, "platform.yaml", &platform("forge"));
    write(&work, "teams/shop/team.yaml", &team("shop", "forge"));
    write(&work, "teams/shop/app.yaml", &configmap("settings", "blue"));
    write(&work, "teams/data/team.yaml", &team("data", "forge"));
    write(&work, "teams/data/app.yaml", &configmap("pipeline", "v1"));
    let first = commit_and_push(gitea, &work, &repo, "main", "first");

    let config = gitea
        .daemon_config(&repo, tmp.path())
        .cluster("forge", &cp.kubeconfig);
    let port = config.port();
    let config =
        config.status_target_url(&format!("http://127.0.0.1:{port}/#{{cluster}}/{{team}}"));
    let daemon = Daemon::start(&config.write(tmp.path()));

    // The first commit: every unit has its own status, and the cluster a summary.
    let d = wait_status(gitea, &repo, &first, "pontoon/forge/shop", "success").await;
    assert!(d.starts_with("applied "), "{d}");
    wait_status(gitea, &repo, &first, "pontoon/forge/data", "success").await;
    let d = wait_status(gitea, &repo, &first, "pontoon/forge", "success").await;
    assert_eq!(d, "2/2 teams synced");
    let all = gitea.statuses(&repo, &first).await;
    let target = all
        .as_array()
        .and_then(|l| l.iter().find(|s| s["context"] == "pontoon/forge/shop"))
        .and_then(|s| s["target_url"].as_str())
        .unwrap_or("")
        .to_owned();
    assert_eq!(target, format!("http://127.0.0.1:{port}/#forge/shop"));

    // A commit that changes one team: only that team gets its own status.
    write(
        &work,
        "teams/shop/app.yaml",
        &configmap("settings", "green"),
    );
    let second = commit_and_push(gitea, &work, &repo, "main", "green");
    wait_status(gitea, &repo, &second, "pontoon/forge/shop", "success").await;
    wait_status(gitea, &repo, &second, "pontoon/forge", "success").await;
    let s = statuses(gitea, &repo, &second).await;
    assert!(!s.contains_key("pontoon/forge/data"), "{s:?}");
    let cms: Api<ConfigMap> = Api::namespaced(cp.client().await, "shop");
    let live = cms.get("settings").await.expect("configmap");
    assert_eq!(
        live.data.and_then(|d| d.get("value").cloned()).as_deref(),
        Some("green")
    );

    // A commit that breaks one team: that team fails with the file and line; the other
    // team and the cluster summary say so too.
    write(
        &work,
        "teams/data/app.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: pipeline}\ndata: {value: v2}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: stolen, namespace: shop}\n",
    );
    let third = commit_and_push(gitea, &work, &repo, "main", "data breaks");
    let d = wait_status(gitea, &repo, &third, "pontoon/forge/data", "failure").await;
    assert!(d.contains("teams/data/app.yaml:"), "{d}");
    let d = wait_status(gitea, &repo, &third, "pontoon/forge", "failure").await;
    assert!(d.contains("not rendered: data"), "{d}");

    pull_requests_are_planned(gitea, &repo, &work, port, &cms).await;

    let metrics = daemon.metrics().await;
    assert!(
        metrics.contains("pontoon_webhook_requests_total{provider=\"gitea\",result=\"plan\"}"),
        "{metrics}"
    );
    daemon.finish().await;
}

#[tokio::test]
async fn a_forge_that_is_down_never_delays_syncing_and_gets_its_statuses_later() {
    let cp = control_plane::dedicated("forge-down");
    let gitea = gitea::dedicated("down");
    let repo = unique_name("platform");
    gitea.create_repo(&repo).await;
    // pontoon reads a mirror (a bare repo on disk); Gitea only receives statuses.
    let tmp = tempfile::tempdir().expect("tempdir");
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).expect("mkdir");
    git(&work, &["init", "-q"]);
    write(&work, "platform.yaml", &platform("down"));
    write(&work, "teams/shop/team.yaml", &team("shop", "down"));
    write(&work, "teams/shop/app.yaml", &configmap("settings", "blue"));
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "first"]);
    git(tmp.path(), &["clone", "-q", "--bare", "work", "mirror.git"]);
    let mirror = tmp.path().join("mirror.git");
    gitea.push(&work, &repo, "main");
    let first = git(&work, &["rev-parse", "HEAD"]);
    std::fs::write(tmp.path().join("token"), gitea.token()).expect("token");
    let config = DaemonConfig::git_file(&mirror, &tmp.path().join("cache"))
        .cluster("down", &cp.kubeconfig)
        .gitea_statuses(
            &format!("{}/api/v1", gitea.url()),
            &format!("{}/{repo}", gitea.user()),
            "token",
        );
    let daemon = Daemon::start(&config.write(tmp.path()));
    wait_status(gitea, &repo, &first, "pontoon/down", "success").await;

    // Gitea goes down; a new commit arrives and syncs all the same.
    write(
        &work,
        "teams/shop/app.yaml",
        &configmap("settings", "green"),
    );
    let second = commit_and_push(gitea, &work, &repo, "main", "green");
    gitea.stop();
    git(
        &work,
        &["push", "-q", mirror.to_str().expect("path"), "main"],
    );
    let cms: Api<ConfigMap> = Api::namespaced(cp.client().await, "shop");
    eventually(
        "green applied while the forge is down",
        Duration::from_secs(30),
        || async {
            let cm = cms.get("settings").await.ok()?;
            (cm.data?.get("value")? == "green").then_some(())
        },
    )
    .await;
    let metrics = eventually("a retried status", Duration::from_secs(30), || async {
        let m = daemon.metrics().await;
        let retried = m
            .lines()
            .find(|l| l.starts_with("pontoon_commit_status_requests_total{result=\"retried\"}"))?
            .rsplit(' ')
            .next()?
            .parse::<f64>()
            .ok()?;
        (retried > 0.0).then_some(m)
    })
    .await;
    assert!(
        !metrics.contains("pontoon_commit_status_queued 0\n"),
        "statuses wait in the queue:\n{metrics}"
    );

    // Back: what it missed is posted.
    gitea.start_again();
    wait_status(gitea, &repo, &second, "pontoon/down/shop", "success").await;
    wait_status(gitea, &repo, &second, "pontoon/down", "success").await;
    daemon.finish().await;
}
