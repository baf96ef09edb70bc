//! The binary as a user runs it: exit codes and messages, `sync --once` and `plan` against
//! the real control plane.

use std::process::Command;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

use crate::support::control_plane::{self, unique_name};
use crate::support::daemon::write;
use crate::support::daemon_config::DaemonConfig;

fn pontoon(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pontoon"))
        .args(args)
        .output()
        .expect("run pontoon")
}

#[test]
fn config_check_reports_every_problem_and_exits_non_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pontoon.yaml");
    std::fs::write(
        &file,
        "source:\n  url: https://example.com/p.git\n  pollInterval: soon\nclusters:\n  - name: a\n    kubeconfig: missing\n",
    )
    .expect("write");
    let out = pontoon(&["config", "check", file.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pontoon.yaml:3:17: "), "{err}");
    assert!(err.contains("invalid duration \"soon\""), "{err}");

    std::fs::write(&file, "source:\n  url: https://example.com/p.git\nclusters:\n  - name: a\n    kubeconfig: missing\n")
        .expect("write");
    let out = pontoon(&["config", "check", file.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pontoon.yaml:5:17: clusters[0].kubeconfig: kubeconfig file"),
        "{err}"
    );
}

#[test]
fn config_check_accepts_a_good_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("kc"), "apiVersion: v1\nkind: Config\n").expect("write");
    let file = dir.path().join("pontoon.yaml");
    std::fs::write(
        &file,
        "source:\n  url: https://example.com/p.git\nclusters:\n  - name: a\n    kubeconfig: kc\n",
    )
    .expect("write");
    let out = pontoon(&["config", "check", file.to_str().expect("utf-8 path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 cluster)"));
}

const APP_BLUE: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {colour: blue}\n";
const APP_GREEN_AND_EXTRA: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {colour: green}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra}\ndata: {a: b}\n";
/// The API server refuses this key: an object it would not take, in a plan or a sync.
const APP_REFUSED: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: refused}\ndata: {\"not a key!\": x}\n";

/// What one run of the binary printed, and how it exited.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A platform repo of one team on the shared control plane, as cluster `cli`, and the
/// config file for the commands. Its inventories live in a namespace of their own, so
/// `sync --once` sees no other test's team as one removed from its repo.
struct OneTeam {
    _tmp: tempfile::TempDir,
    repo: std::path::PathBuf,
    config: std::path::PathBuf,
    team: String,
}

impl OneTeam {
    fn new(prefix: &str) -> OneTeam {
        let cp = control_plane::shared();
        let team = unique_name(prefix);
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = tmp.path().join("platform");
        write(
            &repo,
            "platform.yaml",
            "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {name: cli}\nspec:\n  clusters: [{name: cli}]\n  policy:\n    allowedKinds: [{group: \"\", kind: ConfigMap}]\n",
        );
        write(
            &repo,
            &format!("teams/{team}/team.yaml"),
            &format!(
                "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {team}}}\nspec:\n  namespaces: [{team}]\n  clusters: {{names: [cli]}}\n"
            ),
        );
        let config = DaemonConfig::dir(&repo)
            .cluster("cli", &cp.kubeconfig)
            .inventory_namespace(&format!("{team}-pontoon"))
            .write(tmp.path());
        OneTeam {
            _tmp: tmp,
            repo,
            config,
            team,
        }
    }

    fn app(&self, text: &str) {
        write(&self.repo, &format!("teams/{}/app.yaml", self.team), text);
    }

    /// `pontoon <command> --config FILE [args]`.
    fn run(&self, command: &str, args: &[&str]) -> Run {
        let config = self.config.to_str().expect("utf-8 path");
        let mut all = vec![command, "--config", config];
        all.extend_from_slice(args);
        let out = pontoon(&all);
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    async fn colours(&self) -> Vec<(String, String)> {
        let cms: Api<ConfigMap> =
            Api::namespaced(control_plane::shared().client().await, &self.team);
        let mut out: Vec<(String, String)> = cms
            .list(&Default::default())
            .await
            .expect("list")
            .items
            .into_iter()
            .filter_map(|c| {
                let name = c.metadata.name?;
                let value = c.data?.into_values().next()?;
                Some((name, value))
            })
            .collect();
        out.retain(|(n, _)| n != "kube-root-ca.crt");
        out.sort();
        out
    }
}

#[tokio::test]
async fn sync_once_exits_0_only_when_every_unit_is_synced() {
    let t = OneTeam::new("cli-sync");
    t.app(APP_BLUE);
    let r = t.run("sync", &["--once"]);
    assert_eq!(r.code, Some(0), "{r}");
    let line = format!("cli/{}", t.team);
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with(&line) && l.contains("Synced")),
        "{r}"
    );
    assert_eq!(t.colours().await, [("settings".into(), "blue".into())]);

    // An object the API server refuses: the unit is Failed, the exit code 1.
    t.app(&format!("{APP_BLUE}---\n{APP_REFUSED}"));
    let r = t.run("sync", &["--once"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with(&line) && l.contains("Failed")),
        "{r}"
    );

    // A team that does not render: nothing of it is touched, the exit code 1.
    t.app("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: elsewhere}\ndata: {colour: pink}\n");
    let r = t.run("sync", &["--once"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stdout.contains("render failed"), "{r}");
    assert_eq!(t.colours().await, [("settings".into(), "blue".into())]);

    // Fixed: 0 again.
    t.app(APP_BLUE);
    let r = t.run("sync", &["--once"]);
    assert_eq!(r.code, Some(0), "{r}");
}

#[tokio::test]
async fn plan_exits_0_when_nothing_would_change_2_when_something_would_1_on_errors() {
    let t = OneTeam::new("cli-plan");
    t.app(APP_BLUE);
    let r = t.run("sync", &["--once"]);
    assert_eq!(r.code, Some(0), "{r}");
    let r = t.run("plan", &[]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(
        r.stdout.contains(&format!("cli/{}: +0 ~0 -0", t.team)),
        "{r}"
    );

    // A change and an addition: exit 2, each shown, nothing written.
    t.app(APP_GREEN_AND_EXTRA);
    let r = t.run("plan", &[]);
    assert_eq!(r.code, Some(2), "{r}");
    for want in [
        format!("cli/{}: +1 ~1 -0", t.team),
        format!("  ~ ConfigMap {}/settings", t.team),
        "      data.colour: \"blue\" → \"green\"".to_owned(),
        format!("  + ConfigMap {}/extra", t.team),
    ] {
        assert!(r.stdout.contains(&want), "missing {want:?} in {r}");
    }
    assert_eq!(t.colours().await, [("settings".into(), "blue".into())]);

    // An object the API server would refuse: exit 1, even beside other changes.
    t.app(&format!("{APP_GREEN_AND_EXTRA}---\n{APP_REFUSED}"));
    let r = t.run("plan", &[]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stdout
            .contains(&format!("  ! ConfigMap {}/refused", t.team)),
        "{r}"
    );
    assert_eq!(t.colours().await, [("settings".into(), "blue".into())]);
}
