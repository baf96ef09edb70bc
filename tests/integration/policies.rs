//! Platform policies against real servers: a `deny` on one cluster stops the team there
//! alone while it keeps syncing on the other and other teams are untouched; an exception
//! lets the team through until it expires, and the render after that denies again; a
//! pull request breaking a rule gets `pontoon/plan` `failure` from a real Gitea naming
//! the rule and the line; `pontoon audit` finds a live object that breaks a new rule.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::control_plane::{self, eventually, unique_name};
use crate::support::daemon::{Daemon, write};
use crate::support::daemon_config::DaemonConfig;
use crate::support::git::git;
use crate::support::gitea;

/// A ConfigMap on a cluster labelled `env: prod` must name its cost-center.
const COST_CENTER: &str = "  policies:
    - id: cost-center
      match:
        kinds: [{kind: ConfigMap}]
        clusters: {matchLabels: {env: prod}}
      expression: \"has(object.metadata.labels) && 'cost-center' in object.metadata.labels\"
      message: \"${object.metadata.name} names no cost-center\"
";

fn platform(clusters: &str, rest: &str) -> String {
    format!(
        "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {{name: rules}}\nspec:\n  clusters: {clusters}\n  policy:\n    allowedKinds: [{{group: \"\", kind: ConfigMap}}]\n{rest}"
    )
}

fn team_yaml(team: &str, clusters: &str) -> String {
    format!(
        "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {team}}}\nspec:\n  namespaces: [{team}]\n  clusters: {{names: [{clusters}]}}\n"
    )
}

/// The team's ConfigMap; with `labels` (e.g. `{cost-center: c1}`) or none.
fn settings(colour: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  labels: {labels}\ndata: {{colour: {colour}}}\n"
    )
}

async fn colour(cms: &Api<ConfigMap>) -> Option<String> {
    cms.get_opt("settings")
        .await
        .ok()
        .flatten()
        .and_then(|c| c.data?.get("colour").cloned())
}

async fn unit(daemon: &Daemon, team: &str, cluster: &str) -> Option<Value> {
    let status = daemon.status().await?;
    status["units"]
        .as_array()?
        .iter()
        .find(|u| u["team"] == team && u["cluster"] == cluster)
        .cloned()
}

async fn wait_colour(cms: &Api<ConfigMap>, what: &str, want: &str) {
    eventually(what, Duration::from_secs(90), || async {
        (colour(cms).await.as_deref() == Some(want)).then_some(())
    })
    .await;
}

/// Waits until the unit is Failed with an error holding `needle`.
async fn wait_failed(daemon: &Daemon, team: &str, cluster: &str, needle: &str) -> Value {
    eventually(
        &format!("{team} on {cluster} failed with {needle}"),
        Duration::from_secs(90),
        || async {
            let u = unit(daemon, team, cluster).await?;
            let error = u["last_error"].as_str().unwrap_or_default();
            (u["state"] == "Failed" && error.contains(needle)).then_some(u)
        },
    )
    .await
}

fn metric(metrics: &str, policy: &str, state: &str) -> Option<String> {
    let prefix = format!("pontoon_policy_violations{{policy=\"{policy}\",state=\"{state}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
}

#[tokio::test]
async fn a_deny_on_one_cluster_stops_the_team_there_alone_until_an_exception_and_again_once_it_expires()
 {
    let (one, two) = (control_plane::shared(), control_plane::second());
    let (team, other) = (unique_name("denied"), unique_name("bystander"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("platform");
    let clusters = "[{name: staging, labels: {env: staging}}, {name: prod, labels: {env: prod}}]";
    write(&repo, "platform.yaml", &platform(clusters, COST_CENTER));
    for t in [&team, &other] {
        write(
            &repo,
            &format!("teams/{t}/team.yaml"),
            &team_yaml(t, "staging, prod"),
        );
        write(
            &repo,
            &format!("teams/{t}/app.yaml"),
            &settings("blue", "{cost-center: c1}"),
        );
    }
    let config = DaemonConfig::dir(&repo)
        .cluster("staging", &one.kubeconfig)
        .cluster("prod", &two.kubeconfig)
        .inventory_namespace(&format!("{team}-pontoon"));
    let daemon = Daemon::start(&config.write(tmp.path()));
    let staging: Api<ConfigMap> = Api::namespaced(one.client().await, &team);
    let prod: Api<ConfigMap> = Api::namespaced(two.client().await, &team);
    let other_prod: Api<ConfigMap> = Api::namespaced(two.client().await, &other);
    wait_colour(&staging, "blue on staging", "blue").await;
    wait_colour(&prod, "blue on prod", "blue").await;
    wait_colour(&other_prod, "the other team on prod", "blue").await;

    // The team drops its cost-center: staging takes the change, prod is left as it runs.
    let app = format!("teams/{team}/app.yaml");
    write(&repo, &app, &settings("green", "{app: web}"));
    wait_colour(&staging, "green on staging", "green").await;
    let failed = wait_failed(&daemon, &team, "prod", "policy/cost-center").await;
    let error = failed["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!(
            "{app}:5:3: error[policy/cost-center]: team {team}: policy cost-center on prod: ConfigMap {team}/settings: settings names no cost-center"
        )),
        "{error}"
    );
    assert_eq!(
        colour(&prod).await.as_deref(),
        Some("blue"),
        "nothing applied"
    );
    let staging_unit = unit(&daemon, &team, "staging").await.expect("staging unit");
    assert_eq!(staging_unit["state"], "Synced", "{staging_unit}");
    for c in ["staging", "prod"] {
        let u = unit(&daemon, &other, c).await.expect("other team");
        assert_eq!(u["state"], "Synced", "{u}");
    }
    let metrics = daemon.metrics().await;
    assert_eq!(
        metric(&metrics, "cost-center", "denied").as_deref(),
        Some("1"),
        "{metrics}"
    );

    // An exception until a day far ahead: prod takes the change, counted as debt.
    let exception = |expires: &str| {
        format!(
            "{COST_CENTER}  policyExceptions:\n    - {{policy: cost-center, team: {team}, reason: migrating labels, expires: \"{expires}\"}}\n"
        )
    };
    write(
        &repo,
        "platform.yaml",
        &platform(clusters, &exception("2999-12-31")),
    );
    wait_colour(&prod, "green on prod once exempted", "green").await;
    eventually("the exemption counted", Duration::from_secs(30), || async {
        let m = daemon.metrics().await;
        (metric(&m, "cost-center", "exempted").as_deref() == Some("1")).then_some(())
    })
    .await;

    // The exception expired yesterday: the next render denies on prod again.
    let yesterday = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .yesterday()
        .expect("a day before");
    write(
        &repo,
        "platform.yaml",
        &platform(clusters, &exception(&yesterday.to_string())),
    );
    write(&repo, &app, &settings("red", "{app: web}"));
    wait_colour(&staging, "red on staging", "red").await;
    wait_failed(&daemon, &team, "prod", "policy/cost-center").await;
    assert_eq!(colour(&prod).await.as_deref(), Some("green"));
    daemon.finish().await;
}

/// Commits everything in `work` and pushes `branch`; the new commit.
pub(crate) fn commit_and_push(
    gitea: &gitea::Gitea,
    work: &Path,
    repo: &str,
    branch: &str,
) -> String {
    git(work, &["add", "-A"]);
    git(work, &["commit", "-q", "-m", branch]);
    gitea.push(work, repo, branch);
    git(work, &["rev-parse", "HEAD"]).trim().to_owned()
}

/// Waits until `context` on `sha` is `state`; its description.
pub(crate) async fn wait_status(
    gitea: &gitea::Gitea,
    repo: &str,
    sha: &str,
    context: &str,
    state: &str,
) -> String {
    eventually(
        &format!("{context} = {state} on {sha}"),
        Duration::from_secs(120),
        || async {
            let list = gitea.statuses(repo, sha).await;
            // Newest first.
            let newest = list
                .as_array()?
                .iter()
                .filter(|s| s["context"] == context)
                .max_by_key(|s| s["id"].as_i64().unwrap_or(0))?
                .clone();
            let got = newest["status"].as_str().or(newest["state"].as_str())?;
            (got == state).then(|| newest["description"].as_str().unwrap_or("").to_owned())
        },
    )
    .await
}

/// Gitea's own pull-request webhook of `repo`, signed with the secret `s3cret`, to the
/// daemon listening on `port`.
pub(crate) async fn pull_request_webhook(gitea: &gitea::Gitea, repo: &str, port: u16) {
    let owner = gitea.user();
    let hook = gitea
        .api(Method::POST, &format!("/repos/{owner}/{repo}/hooks"))
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
}

#[tokio::test]
async fn a_pull_request_breaking_a_rule_fails_its_plan_on_gitea_naming_the_rule_and_line() {
    let cp = control_plane::shared();
    let gitea = gitea::shared();
    let team = unique_name("pr-rule");
    let repo = unique_name("rules");
    gitea.create_repo(&repo).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).expect("mkdir");
    git(&work, &["init", "-q"]);
    git(&work, &["checkout", "-q", "-b", "main"]);
    let clusters = "[{name: rules, labels: {env: prod}}]";
    write(&work, "platform.yaml", &platform(clusters, COST_CENTER));
    write(
        &work,
        &format!("teams/{team}/team.yaml"),
        &team_yaml(&team, "rules"),
    );
    let app = format!("teams/{team}/app.yaml");
    write(&work, &app, &settings("blue", "{cost-center: c1}"));
    let main = commit_and_push(gitea, &work, &repo, "main");

    let config = gitea
        .daemon_config(&repo, tmp.path())
        .cluster("rules", &cp.kubeconfig)
        .inventory_namespace(&format!("{team}-pontoon"));
    let port = config.port();
    let daemon = Daemon::start(&config.write(tmp.path()));
    wait_status(gitea, &repo, &main, "pontoon/rules", "success").await;
    pull_request_webhook(gitea, &repo, port).await;

    git(&work, &["checkout", "-q", "-b", "no-cost-center"]);
    write(&work, &app, &settings("green", "{app: web}"));
    let head = commit_and_push(gitea, &work, &repo, "no-cost-center");
    gitea
        .open_pull_request(&repo, "no-cost-center", "main", "drop the label")
        .await;
    let d = wait_status(gitea, &repo, &head, "pontoon/plan", "failure").await;
    // `team T: ` is left out where the whole would not fit the forge's limit: the file
    // already names the team.
    let (rule, policy) = (
        format!("1 error: {app}:5:3: error[policy/cost-center]: "),
        "policy cost-center on rules",
    );
    assert!(
        d.starts_with(&format!("{rule}team {team}: {policy}"))
            || d.starts_with(&format!("{rule}{policy}")),
        "{d}"
    );
    let cms: Api<ConfigMap> = Api::namespaced(cp.client().await, &team);
    assert_eq!(
        colour(&cms).await.as_deref(),
        Some("blue"),
        "nothing applied"
    );
    daemon.finish().await;
}

#[tokio::test]
async fn pontoon_audit_finds_a_live_object_that_breaks_a_new_rule() {
    let cp = control_plane::shared();
    let team = unique_name("audited");
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("platform");
    let clusters = "[{name: audit, labels: {env: prod}}]";
    write(&repo, "platform.yaml", &platform(clusters, ""));
    write(
        &repo,
        &format!("teams/{team}/team.yaml"),
        &team_yaml(&team, "audit"),
    );
    write(
        &repo,
        &format!("teams/{team}/app.yaml"),
        &settings("blue", "{app: web}"),
    );
    let config = DaemonConfig::dir(&repo)
        .cluster("audit", &cp.kubeconfig)
        .inventory_namespace(&format!("{team}-pontoon"))
        .write(tmp.path());
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pontoon"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .expect("run pontoon");
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), printed)
    };
    let (code, out) = run(&["sync", "--once"]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = run(&["audit"]);
    assert_eq!(code, Some(0), "{out}");

    // A new rule: the live ConfigMap breaks it, as it runs now.
    write(&repo, "platform.yaml", &platform(clusters, COST_CENTER));
    let (code, out) = run(&["audit"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "audit/{team}: ConfigMap {team}/settings: deny[policy/cost-center]: settings names no cost-center"
        )),
        "{out}"
    );

    // What runs is what is audited: the label set by hand on the live object passes.
    let cms: Api<ConfigMap> = Api::namespaced(cp.client().await, &team);
    cms.patch(
        "settings",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"metadata": {"labels": {"cost-center": "c9"}}})),
    )
    .await
    .expect("label by hand");
    let (code, out) = run(&["audit"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("policy/cost-center"), "{out}");
}
