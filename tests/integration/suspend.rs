//! Suspending a unit against a real kube-apiserver: `pontoon suspend` and a plain
//! `kubectl patch` of `spec.suspend` each stop new revisions (the live objects' resource
//! versions unchanged) and leave a hand edit alone, or correct it at the revision the unit
//! runs with keepCorrecting; the Unit says who suspended it and why; `until` passing
//! resumes it by itself, and `pontoon resume` removes the suspension.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use crate::support::control_plane::{self, ControlPlane, eventually, unique_name};
use crate::support::daemon::Daemon;
use crate::support::daemon_config::DaemonConfig;
use crate::support::git::git;
use crate::support::gitea::{self, Gitea};
use crate::units::{keys, repo, settings, unit};

/// A work tree pushed to a Gitea repository on every commit.
struct GiteaRepo {
    work: std::path::PathBuf,
    gitea: &'static Gitea,
    repo: String,
}

impl GiteaRepo {
    fn new(
        dir: &std::path::Path,
        cp: &ControlPlane,
        team: &str,
        gitea: &'static Gitea,
        repo_name: &str,
    ) -> GiteaRepo {
        let work = dir.join("work");
        std::fs::create_dir(&work).expect("mkdir");
        git(&work, &["init", "-q"]);
        repo(&work, cp, team, &settings("first"));
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "first"]);
        gitea.push(&work, repo_name, "main");
        GiteaRepo {
            work,
            gitea,
            repo: repo_name.to_owned(),
        }
    }

    fn head(&self) -> String {
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// Commits `app` as the team's app.yaml and pushes it; the new commit.
    fn commit_app(&self, team: &str, app: &str) -> String {
        crate::support::daemon::write(&self.work, &format!("teams/{team}/app.yaml"), app);
        git(&self.work, &["commit", "-q", "-am", "change"]);
        self.gitea.push(&self.work, &self.repo, "main");
        self.head()
    }
}

/// `pontoon ARGS --context local` as the harness's admin; exit code and output.
async fn pontoon(cp: &ControlPlane, args: Vec<String>) -> (i32, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pontoon"));
    command
        .env("KUBECONFIG", &cp.kubeconfig)
        .args(args)
        .args(["--context", "local"]);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("run pontoon");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The live settings ConfigMap's resourceVersion and `first` value.
async fn settings_now(cp: &ControlPlane, ns: &str) -> (String, Option<String>) {
    let cms: Api<ConfigMap> = Api::namespaced(cp.client().await, ns);
    let cm = cms.get("settings").await.expect("settings");
    (
        cm.metadata.resource_version.unwrap_or_default(),
        cm.data.and_then(|mut d| d.remove("first")),
    )
}

/// `status.suspended` of the Unit, once it has the field `by` equal to `by`.
async fn suspended_by(cp: &ControlPlane, ns: &str, name: &str, by: &str) -> Value {
    eventually(
        &format!("the Unit suspended by {by}"),
        Duration::from_secs(30),
        || async {
            let u = unit(cp, ns, name).await?;
            (u["status"]["suspended"]["by"] == by).then(|| u["status"]["suspended"].clone())
        },
    )
    .await
}

#[tokio::test]
async fn a_suspended_unit_takes_no_commit_and_leaves_drift_unless_told_and_resumes_at_expiry() {
    let cp = control_plane::shared();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (name, ns) = (unique_name("suspend"), unique_name("pontoon-suspend"));
    // The platform repo in a real Gitea, which gets the commit statuses too.
    let gitea = gitea::shared();
    let repo_name = unique_name("suspend");
    gitea.create_repo(&repo_name).await;
    let repo = GiteaRepo::new(tmp.path(), cp, &name, gitea, &repo_name);
    let first = repo.head();
    std::fs::write(tmp.path().join("token"), gitea.token()).expect("token");
    let owner = gitea.user();
    let config = DaemonConfig::git(
        &format!("{}/{owner}/{repo_name}.git", gitea.url()),
        &tmp.path().join("cache"),
    )
    .git_token(owner, "token")
    .gitea_statuses(
        &format!("{}/api/v1", gitea.url()),
        &format!("{owner}/{repo_name}"),
        "token",
    )
    .cluster(cp.name, &cp.kubeconfig)
    .inventory_namespace(&ns)
    .resync_interval("1s");
    let daemon = Daemon::start(&config.write(tmp.path()));
    eventually("the Unit Ready", Duration::from_secs(90), || async {
        let u = unit(cp, &ns, &name).await?;
        (crate::units::condition(&u, "Ready")?.0 == "True").then_some(())
    })
    .await;
    let target: Vec<String> = ["--team", &name, "--cluster", cp.name, "--namespace", &ns]
        .iter()
        .map(|s| s.to_string())
        .collect();

    // pontoon suspend, as the caller: the Unit names who.
    let mut args = vec!["suspend".to_owned()];
    args.extend(target.clone());
    args.extend(["--reason".into(), "INC-1234".into()]);
    let (code, out) = pontoon(cp, args).await;
    assert_eq!(code, 0, "{out}");
    let user = out
        .split("suspended by ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .unwrap_or_else(|| panic!("who in {out}"))
        .to_owned();
    let s = suspended_by(cp, &ns, &name, &user).await;
    assert_eq!(s["reason"], "INC-1234");
    let listed = cp.kubectl(&["get", "units", "-n", &ns]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("SUSPENDED") && listed.contains(&format!("{user}: INC-1234")),
        "{listed}"
    );

    // A commit made while suspended is not applied; a hand edit is left alone.
    let (version, _) = settings_now(cp, &name).await;
    let second = repo.commit_app(&name, &settings("second"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        settings_now(cp, &name).await.0,
        version,
        "the ConfigMap was written"
    );
    assert_eq!(keys(cp, &name).await, ["first"]);
    let cms: Api<ConfigMap> = Api::namespaced(cp.client().await, &name);
    cms.patch(
        "settings",
        &PatchParams::apply("kubectl-edit").force(),
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "settings"}, "data": {"first": "by hand", "added": "by hand"}})),
    )
    .await
    .expect("hand edit");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(settings_now(cp, &name).await.1.as_deref(), Some("by hand"));
    assert_eq!(
        keys(cp, &name).await,
        ["added", "first"],
        "a field added by hand was removed"
    );
    let u = unit(cp, &ns, &name).await.expect("the Unit");
    assert_eq!(u["status"]["revision"], Value::String(first.clone()));
    // The held-back commit's status on this unit says who holds it and why; so do
    // /api/status and the page.
    let context = format!("pontoon/{}/{name}", cp.name);
    let why = format!("suspended by {user}: INC-1234");
    eventually(
        "the held-back commit's status",
        Duration::from_secs(60),
        || async {
            let statuses = gitea.statuses(&repo_name, &second).await;
            statuses.as_array()?.iter().find(|s| {
                s["context"] == context.as_str()
                    && s["status"] == "pending"
                    && s["description"].as_str().is_some_and(|d| d.contains(&why))
            })?;
            Some(())
        },
    )
    .await;
    let status = daemon.status().await.expect("/api/status");
    let shown = status["units"]
        .as_array()
        .and_then(|us| us.iter().find(|u| u["team"] == name.as_str()))
        .map(|u| u["suspended"].clone());
    assert!(
        shown
            .as_ref()
            .and_then(|s| s.as_str())
            .is_some_and(|s| s.contains(&why)),
        "{status}"
    );
    let page = reqwest::get(format!("{}/", daemon.base))
        .await
        .expect("page")
        .text()
        .await
        .expect("page text");
    assert!(page.contains(&why), "the page shows the suspension");

    // kubectl patch suspends as the CLI does; with keepCorrecting the hand edit is
    // corrected at the revision the unit runs, and the new commit still waits.
    let patched = cp.kubectl(&[
        "patch",
        "unit",
        &name,
        "-n",
        &ns,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"suspend":{"reason":"INC-2","keepCorrecting":true}}}"#,
    ]);
    assert!(
        patched.status.success(),
        "{}",
        String::from_utf8_lossy(&patched.stderr)
    );
    let s = suspended_by(cp, &ns, &name, "kubectl-patch").await;
    assert_eq!(
        (s["reason"].as_str(), s["keepCorrecting"].as_bool()),
        (Some("INC-2"), Some(true))
    );
    eventually(
        "the hand edit corrected",
        Duration::from_secs(30),
        || async { (settings_now(cp, &name).await.1.as_deref() == Some("x")).then_some(()) },
    )
    .await;
    eventually(
        "the added field removed",
        Duration::from_secs(30),
        || async { (keys(cp, &name).await == ["first"]).then_some(()) },
    )
    .await;

    // An expiry a few seconds away: the unit resumes by itself and takes the new commit.
    let until = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(4))
        .expect("time")
        .round(jiff::Unit::Second)
        .expect("round");
    let patched = cp.kubectl(&[
        "patch", "unit", &name, "-n", &ns, "--type", "merge", "-p",
        &format!(r#"{{"spec":{{"suspend":{{"reason":"INC-3","until":"{until}","keepCorrecting":false}}}}}}"#),
    ]);
    assert!(
        patched.status.success(),
        "{}",
        String::from_utf8_lossy(&patched.stderr)
    );
    eventually("resumed at expiry", Duration::from_secs(60), || async {
        let u = unit(cp, &ns, &name).await?;
        (u["status"]["revision"] == second.as_str() && u["status"]["suspended"].is_null())
            .then_some(())
    })
    .await;
    assert_eq!(keys(cp, &name).await, ["second"]);

    // pontoon resume removes what is left of the suspension.
    let mut args = vec!["resume".to_owned()];
    args.extend(target);
    let (code, out) = pontoon(cp, args).await;
    assert_eq!(code, 0, "{out}");
    let u = unit(cp, &ns, &name).await.expect("the Unit");
    assert!(u["spec"]["suspend"].is_null(), "{u}");

    daemon.finish().await;
}
