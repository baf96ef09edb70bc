//! The `Unit` custom resource against a real kube-apiserver: the daemon installs its
//! definition and keeps one Unit per team in its namespace; a failing sync turns it
//! `Stalled` with the error's message, `kubectl wait --for=condition=Ready` (the real
//! kubectl) returns once a fix syncs, a no-op resync writes nothing (counted in the
//! apiserver's audit log), and `kubectl get units -A` shows the one-screen view.

use std::path::Path;
use std::time::Duration;

use kube::Api;
use kube::api::DynamicObject;
use serde_json::Value;

use crate::support::audit;
use crate::support::control_plane::{self, ControlPlane, eventually, unique_name};
use crate::support::daemon::{Daemon, write};
use crate::support::daemon_config::DaemonConfig;
use crate::support::exposition::sample;
use crate::support::git::git;

/// A platform of one cluster whose teams may write ConfigMaps.
pub fn platform(cluster: &str) -> String {
    format!(
        "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {{name: units}}\nspec:\n  clusters: [{{name: {cluster}}}]\n  policy:\n    allowedKinds: [{{group: \"\", kind: ConfigMap}}]\n"
    )
}

/// Team `team` with one namespace of its name, on `cluster`.
pub fn team(team: &str, cluster: &str) -> String {
    format!(
        "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {team}}}\nspec:\n  namespaces: [{team}]\n  clusters: {{names: [{cluster}]}}\n"
    )
}

/// A ConfigMap `settings` with one key.
pub fn settings(key: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings}}\ndata: {{\"{key}\": \"x\"}}\n"
    )
}

/// A platform repo folder with `team` holding `app`.
pub fn repo(dir: &Path, cp: &ControlPlane, name: &str, app: &str) {
    write(dir, "platform.yaml", &platform(cp.name));
    write(
        dir,
        &format!("teams/{name}/team.yaml"),
        &team(name, cp.name),
    );
    write(dir, &format!("teams/{name}/app.yaml"), app);
}

/// The Unit `name` in `namespace`, when there is one.
pub async fn unit(cp: &ControlPlane, namespace: &str, name: &str) -> Option<Value> {
    let api: Api<DynamicObject> = pontoon::units::control::api(cp.client().await, namespace);
    let o = api.get_opt(name).await.ok()??;
    serde_json::to_value(o).ok()
}

/// The condition `type_` of a Unit, as `(status, reason, message)`.
pub fn condition(unit: &Value, type_: &str) -> Option<(String, String, String)> {
    let c = unit["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?;
    let s = |f: &str| c[f].as_str().unwrap_or_default().to_owned();
    Some((s("status"), s("reason"), s("message")))
}

#[tokio::test]
async fn a_unit_shows_each_sync_and_a_no_op_resync_writes_nothing() {
    let cp = control_plane::shared();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (name, ns) = (unique_name("units"), unique_name("pontoon-units"));
    // A key the API server refuses: the sync fails.
    repo(tmp.path(), cp, &name, &settings("bad key!"));
    let config = DaemonConfig::dir(tmp.path())
        .cluster(cp.name, &cp.kubeconfig)
        .inventory_namespace(&ns)
        .resync_interval("1s");
    let daemon = Daemon::start(&config.write(tmp.path()));

    let stalled = eventually("the Unit Stalled", Duration::from_secs(90), || async {
        let u = unit(cp, &ns, &name).await?;
        let (status, reason, message) = condition(&u, "Stalled")?;
        (status == "True").then_some((reason, message, u))
    })
    .await;
    assert_eq!(stalled.0, "Failed");
    assert!(
        stalled.1.contains("settings") && stalled.1.contains("bad key!"),
        "the error's message: {}",
        stalled.1
    );
    let u = stalled.2;
    assert_eq!(
        condition(&u, "Ready").map(|c| c.0).as_deref(),
        Some("False")
    );
    assert!(
        u["status"]["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("bad key!")),
        "{u}"
    );
    assert_eq!(u["spec"]["team"], Value::String(name.clone()));
    assert_eq!(u["metadata"]["labels"]["pontoon.dev/owner"], "pontoon");

    // `kubectl wait` started while the unit fails returns once the fix syncs.
    let mut wait = std::process::Command::new(&cp.kubectl)
        .env("KUBECONFIG", &cp.kubeconfig)
        .args([
            "wait",
            "--for=condition=Ready",
            &format!("unit/{name}"),
            "-n",
            &ns,
            "--timeout=90s",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl wait");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        wait.try_wait().expect("kubectl wait").is_none(),
        "kubectl wait returned before the fix"
    );
    write(
        tmp.path(),
        &format!("teams/{name}/app.yaml"),
        &settings("good-key"),
    );
    let waited = tokio::task::spawn_blocking(move || wait.wait_with_output())
        .await
        .expect("join")
        .expect("kubectl wait output");
    assert!(
        waited.status.success(),
        "kubectl wait: {}{}",
        String::from_utf8_lossy(&waited.stdout),
        String::from_utf8_lossy(&waited.stderr)
    );
    let u = unit(cp, &ns, &name).await.expect("the Unit");
    assert_eq!(
        condition(&u, "Ready"),
        Some((
            "True".into(),
            "Synced".into(),
            format!(
                "synced at {}",
                u["status"]["shortRevision"].as_str().unwrap_or("?")
            )
        ))
    );
    assert_eq!(
        condition(&u, "Stalled").map(|c| c.0).as_deref(),
        Some("False")
    );
    // The team's ConfigMap and its base (Namespace, quota, RBAC, NetworkPolicy).
    assert!(
        u["status"]["objects"].as_u64().is_some_and(|n| n > 1),
        "{u}"
    );
    assert_eq!(u["status"]["lastError"], Value::Null, "{u}");

    // Resyncs every second that change nothing write nothing to the Unit.
    let since = jiff::Timestamp::now();
    let attempt = || async {
        sample(
            &daemon.metrics().await,
            "pontoon_sync_last_attempt_timestamp_seconds",
            &[("cluster", cp.name), ("team", &name)],
        )
    };
    let first = attempt().await.expect("the unit's last attempt");
    eventually("three resyncs", Duration::from_secs(30), || async {
        (attempt().await? >= first + 3.0).then_some(())
    })
    .await;
    let unit_writes: Vec<String> = audit::writes_by(cp.dir(), "pontoon", since)
        .iter()
        .filter(|e| {
            e.object_ref
                .as_ref()
                .is_some_and(|o| o.resource == "units" && o.namespace == ns)
        })
        .map(audit::Event::describe)
        .collect();
    assert_eq!(
        unit_writes,
        Vec::<String>::new(),
        "no-op resyncs wrote the Unit"
    );

    let shown = cp.kubectl(&["get", "units", "-A"]);
    let text = String::from_utf8_lossy(&shown.stdout);
    println!("{text}");
    let header = text.lines().next().unwrap_or_default();
    for column in [
        "NAMESPACE",
        "NAME",
        "READY",
        "STATUS",
        "REVISION",
        "OBJECTS",
        "DRIFT",
        "HELD",
        "AGE",
    ] {
        assert!(header.contains(column), "{column} in {text}");
    }
    let row = text
        .lines()
        .find(|l| l.contains(&name))
        .unwrap_or_else(|| panic!("{name} in {text}"));
    assert!(row.contains("True") && row.contains("Synced"), "{row}");

    daemon.finish().await;
}

/// A work tree and the bare repository the daemon polls, pushed to on every commit.
pub struct Repo {
    pub work: std::path::PathBuf,
    pub bare: std::path::PathBuf,
}

impl Repo {
    pub fn new(dir: &Path, cp: &ControlPlane, name: &str, app: &str) -> Repo {
        let work = dir.join("work");
        std::fs::create_dir(&work).expect("mkdir");
        git(&work, &["init", "-q"]);
        repo(&work, cp, name, app);
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "first"]);
        git(dir, &["clone", "-q", "--bare", "work", "platform.git"]);
        Repo {
            work,
            bare: dir.join("platform.git"),
        }
    }

    /// Commits `app` as the team's app.yaml and pushes it; the new commit.
    pub fn commit_app(&self, name: &str, app: &str) -> String {
        write(&self.work, &format!("teams/{name}/app.yaml"), app);
        git(&self.work, &["commit", "-q", "-am", "change"]);
        git(
            &self.work,
            &["push", "-q", self.bare.to_str().expect("path"), "main"],
        );
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

/// `pontoon reconcile ARGS` as the harness's admin (its kubeconfig); exit code, output,
/// and when it returned.
async fn reconcile(cp: &ControlPlane, args: &[&str]) -> (i32, String, jiff::Timestamp) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pontoon"));
    command
        .env("KUBECONFIG", &cp.kubeconfig)
        .arg("reconcile")
        .args(args)
        .args(["--context", "local", "--timeout", "60s"]);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("run pontoon reconcile");
    let at = jiff::Timestamp::now();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text, at)
}

/// The `key` the live settings ConfigMap holds, if any.
pub async fn keys(cp: &ControlPlane, namespace: &str) -> Vec<String> {
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(cp.client().await, namespace);
    cms.get_opt("settings")
        .await
        .ok()
        .flatten()
        .and_then(|c| c.data)
        .map(|d| d.into_keys().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn reconcile_syncs_now_and_wait_follows_the_unit_to_its_answer() {
    let cp = control_plane::shared();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (name, ns) = (unique_name("reconcile"), unique_name("pontoon-reconcile"));
    let repo = Repo::new(tmp.path(), cp, &name, &settings("first"));
    // Nothing but a request makes this daemon poll or resync within the test.
    let config = DaemonConfig::git_file(&repo.bare, &tmp.path().join("cache"))
        .poll_interval("1h")
        .cluster(cp.name, &cp.kubeconfig)
        .inventory_namespace(&ns)
        .resync_interval("1h");
    let config_file = config.write(tmp.path());
    let daemon = Daemon::start(&config_file);
    eventually("the Unit Ready", Duration::from_secs(90), || async {
        let u = unit(cp, &ns, &name).await?;
        (condition(&u, "Ready")?.0 == "True").then_some(())
    })
    .await;

    // A commit pushed with no webhook: a plain reconcile syncs what the daemon has.
    let second = repo.commit_app(&name, &settings("second"));
    let unit_args = ["--team", &name, "--cluster", cp.name, "--namespace", &ns];
    let (code, out, _) = reconcile(cp, &[&unit_args[..], &["--wait"]].concat()).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Synced at"), "{out}");
    assert_eq!(
        keys(cp, &name).await,
        ["first"],
        "the source was not polled"
    );

    // With the source: the new commit is polled and synced before the answer, which
    // comes within a second of the Unit's status saying so. Clusters from the config.
    let config_arg = config_file.to_str().expect("path").to_owned();
    let (code, out, returned) = reconcile(
        cp,
        &[
            "--team",
            &name,
            "--config",
            &config_arg,
            "--with-source",
            "--wait",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("Synced at {}", &second[..7])),
        "{out}"
    );
    assert_eq!(keys(cp, &name).await, ["second"]);
    let u = unit(cp, &ns, &name).await.expect("the Unit");
    assert_eq!(u["status"]["revision"], Value::String(second.clone()));
    let answered = audit::writes(cp.dir())
        .into_iter()
        .filter(|e| {
            e.user_agent.starts_with("pontoon")
                && e.object_ref
                    .as_ref()
                    .is_some_and(|o| o.resource == "units" && o.name == name)
        })
        .map(|e| e.at())
        .max()
        .expect("the Unit's status written");
    let lag = returned.duration_since(answered);
    assert!(
        lag < jiff::SignedDuration::from_secs(1),
        "reconcile --wait returned {lag:?} after the answer"
    );

    // A commit the API server refuses: the answer is Failed, with the error; exit 1.
    repo.commit_app(&name, &settings("bad key!"));
    let (code, out, _) =
        reconcile(cp, &[&unit_args[..], &["--with-source", "--wait"]].concat()).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("Failed") && out.contains("bad key!"), "{out}");

    // Without --wait: asked, exit 0 at once.
    let (code, out, _) = reconcile(cp, &unit_args).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("reconcile requested"), "{out}");

    daemon.finish().await;
}
