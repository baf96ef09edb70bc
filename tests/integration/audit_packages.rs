//! `pontoon audit` of a repo whose team brings packages, against a real kube-apiserver
//! with the real `helm` and `kustomize`: the objects a team's chart and Kustomize folder
//! made are audited like plain manifests (the repo is expanded as the daemon expands
//! it), and a team's package that does not expand is named as a problem of the audit
//! while the other teams are audited.

use crate::support::control_plane::{self, unique_name};
use crate::support::daemon::write;
use crate::support::daemon_config::DaemonConfig;

/// A new rule with no kinds: only what the team's packages make tells which kinds to
/// list. A warning, so that the team still renders (a team a `deny` rule stops renders
/// no units to take kinds from: such a rule must name its kinds).
const COST_CENTER: &str = "  policies:
    - id: cost-center
      action: warn
      match: {teams: [TEAM]}
      expression: \"has(object.metadata.labels) && 'cost-center' in object.metadata.labels\"
      message: \"${object.metadata.name} names no cost-center\"
";

fn platform(cluster: &str, rest: &str) -> String {
    format!(
        "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {{name: audit}}\nspec:\n  clusters: [{{name: {cluster}}}]\n  teamPackages: {{kustomize: true, charts: true}}\n  policy:\n    allowedKinds:\n      - {{kind: ServiceAccount}}\n      - {{kind: ConfigMap}}\n{rest}"
    )
}

fn team_yaml(team: &str, cluster: &str) -> String {
    format!(
        "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {team}}}\nspec:\n  namespaces: [{team}]\n  clusters: {{names: [{cluster}]}}\n"
    )
}

/// A chart in `teams/<team>/web` (a ServiceAccount) and a Kustomize folder in
/// `teams/<team>/settings` (a ConfigMap).
fn team_with_packages(repo: &std::path::Path, team: &str, cluster: &str) {
    let at = |p: &str| format!("teams/{team}/{p}");
    write(repo, &at("team.yaml"), &team_yaml(team, cluster));
    write(
        repo,
        &at("web.yaml"),
        "apiVersion: pontoon.dev/v1alpha1\nkind: Chart\nmetadata: {name: shop}\nspec:\n  path: web\n  values: {automount: false}\n",
    );
    write(
        repo,
        &at("web/Chart.yaml"),
        "apiVersion: v2\nname: web\nversion: 0.1.0\n",
    );
    write(
        repo,
        &at("web/templates/account.yaml"),
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {{ .Release.Name }}-web\nautomountServiceAccountToken: {{ .Values.automount }}\n",
    );
    write(
        repo,
        &at("settings/kustomization.yaml"),
        "resources: [cm.yaml]\n",
    );
    write(
        repo,
        &at("settings/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {colour: blue}\n",
    );
}

#[tokio::test]
async fn audit_reads_what_a_teams_chart_and_kustomize_folder_made() {
    let cp = control_plane::shared();
    let (team, broken) = (unique_name("audpkg"), unique_name("audbroken"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("platform");
    write(&repo, "platform.yaml", &platform("audit", ""));
    team_with_packages(&repo, &team, "audit");
    let config = DaemonConfig::dir(&repo)
        .cluster("audit", &cp.kubeconfig)
        .inventory_namespace(&format!("{team}-pontoon"))
        .write(tmp.path());
    // `helm` and `kustomize` as the daemon's default config finds them: on `PATH`.
    let tools = crate::packages::packages_config()
        .helm
        .parent()
        .expect("bin dir")
        .to_owned();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pontoon"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .env("PATH", &tools)
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
    assert!(
        out.contains("2 live objects checked, 0 break a rule"),
        "{out}"
    );

    // A new rule, and a team whose chart no longer renders: the live objects of the
    // chart and the overlay break the rule; the broken chart is named, not skipped.
    write(
        &repo,
        "platform.yaml",
        &platform("audit", &COST_CENTER.replace("TEAM", &team)),
    );
    write(
        &repo,
        &format!("teams/{broken}/team.yaml"),
        &team_yaml(&broken, "audit"),
    );
    write(
        &repo,
        &format!("teams/{broken}/web.yaml"),
        "apiVersion: pontoon.dev/v1alpha1\nkind: Chart\nmetadata: {name: shop}\nspec:\n  path: web\n",
    );
    write(
        &repo,
        &format!("teams/{broken}/web/Chart.yaml"),
        "apiVersion: v2\nname: web\nversion: 0.1.0\n",
    );
    write(
        &repo,
        &format!("teams/{broken}/web/templates/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: {{ .Values.a | nope }}\n",
    );
    let (code, out) = run(&["audit"]);
    assert_eq!(code, Some(1), "{out}");
    for object in [
        format!("ServiceAccount {team}/shop-web"),
        format!("ConfigMap {team}/settings"),
    ] {
        assert!(
            out.contains(&format!(
                "audit/{team}: {object}: warn[policy/cost-center]: "
            )),
            "{object} in {out}"
        );
    }
    assert!(
        out.contains(&format!(
            "could not audit what a package makes: teams/{broken}/web.yaml:1:1: error[package-error]: team {broken}: chart teams/{broken}/web on cluster audit: web/templates/cm.yaml:6: helm template:"
        )),
        "{out}"
    );
    assert!(!out.contains("package-not-expanded"), "{out}");
    assert!(
        out.contains("2 live objects checked, 2 break a rule"),
        "{out}"
    );
}
