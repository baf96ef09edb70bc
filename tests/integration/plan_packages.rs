//! Plans of a platform made of Helm charts, against a real Gitea, a real kube-apiserver
//! and the real `helm` (4.3.1): a component from a chart folder of the platform repo, a
//! team's `kind: Chart` and a team's instance of a Kind backed by a chart, synced from
//! main by a real daemon. A pull request changing the values of all three, and adding an
//! object through the team's chart, gets `pontoon/plan` with the exact counts of what its
//! charts now make, and nothing is applied; `pontoon plan` of the same checkout shows
//! them per unit. A pull request breaking the team's chart, and one breaking the
//! component's, fail their plan naming the chart's document, the template and the line
//! within the forge's 140 characters.

use std::path::Path;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

use crate::policies::{commit_and_push, pull_request_webhook, wait_status};
use crate::support::control_plane::{self, unique_name};
use crate::support::daemon::{Daemon, write};
use crate::support::git::git;
use crate::support::gitea;

/// The cluster's name in the repo. Not `plan`: its summary would be `pontoon/plan` too.
const CLUSTER: &str = "pkgs";

/// A template of the component's chart, and of the team's: one ConfigMap of one value.
/// Line 6 is the value's, where a broken template fails.
fn settings_template(name: &str, key: &str, filter: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  {key}: {{{{ .Values.{key} | {filter} }}}}\n"
    )
}

/// The component `greeter`: its chart in `components/greeter/chart`, in namespace
/// `<id>-greeter`, greeting with `greeting`.
fn greeter(id: &str, greeting: &str) -> String {
    format!(
        "apiVersion: pontoon.dev/v1alpha1\nkind: Component\nmetadata: {{name: greeter}}\nspec:\n  clusters: {{names: [{CLUSTER}]}}\n  namespace: {id}-greeter\n  source: {{chart: {{path: components/greeter/chart}}}}\n  values: {{greeting: {greeting}}}\n"
    )
}

/// The team's chart release `web`: its colour, and whether it adds `web-extra`.
fn web(colour: &str, extra: bool) -> String {
    format!(
        "apiVersion: pontoon.dev/v1alpha1\nkind: Chart\nmetadata: {{name: web}}\nspec:\n  path: web\n  values: {{colour: {colour}, extra: {extra}}}\n"
    )
}

/// The team's instance `sessions` of the chart-backed Kind `Cache`.
fn cache(size: u32) -> String {
    format!(
        "apiVersion: pontoon.dev/v1alpha1\nkind: Cache\nmetadata: {{name: sessions}}\nspec: {{size: {size}}}\n"
    )
}

/// Main's platform repo in `work`: the component, the Kind and team `id`'s two charts.
fn platform_repo(work: &Path, id: &str) {
    write(
        work,
        "platform.yaml",
        &format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {{name: p}}\nspec:\n  clusters: [{{name: {CLUSTER}}}]\n  teamPackages: {{charts: true}}\n  policy:\n    allowedKinds: [{{group: \"\", kind: ConfigMap}}]\n"
        ),
    );
    write(work, "components/greeter.yaml", &greeter(id, "hello"));
    let chart = |name: &str| format!("apiVersion: v2\nname: {name}\nversion: 0.1.0\n");
    write(
        work,
        "components/greeter/chart/Chart.yaml",
        &chart("greeter"),
    );
    write(
        work,
        "components/greeter/chart/values.yaml",
        "greeting: hi\n",
    );
    write(
        work,
        "components/greeter/chart/templates/namespace.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {{ .Release.Namespace }}\n",
    );
    write(
        work,
        "components/greeter/chart/templates/settings.yaml",
        &settings_template("greeter", "greeting", "quote"),
    );
    write(
        work,
        "kinds/cache.yaml",
        "apiVersion: pontoon.dev/v1alpha1\nkind: Kind\nmetadata: {name: Cache}\nspec:\n  parameters:\n    size: {type: integer, default: 1}\n  chart:\n    source: {path: charts/cache}\n    values:\n      size: ${spec.size}\n",
    );
    write(work, "charts/cache/Chart.yaml", &chart("cache"));
    write(
        work,
        "charts/cache/templates/cache.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cache\ndata:\n  size: {{ .Values.size | quote }}\n",
    );
    let team = format!("teams/{id}");
    write(
        work,
        &format!("{team}/team.yaml"),
        &format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {id}}}\nspec:\n  namespaces: [{id}]\n  clusters: {{names: [{CLUSTER}]}}\n"
        ),
    );
    write(work, &format!("{team}/web.yaml"), &web("blue", false));
    write(work, &format!("{team}/web/Chart.yaml"), &chart("web"));
    write(
        work,
        &format!("{team}/web/values.yaml"),
        "colour: red\nextra: false\n",
    );
    write(
        work,
        &format!("{team}/web/templates/settings.yaml"),
        &settings_template("web-settings", "colour", "quote"),
    );
    write(
        work,
        &format!("{team}/web/templates/extra.yaml"),
        "{{- if .Values.extra }}\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-extra\ndata:\n  from: chart\n{{- end }}\n",
    );
    write(work, &format!("{team}/cache.yaml"), &cache(1));
}

/// The resourceVersion of ConfigMap `ns/name`, or None while there is none.
async fn version(cp: &control_plane::ControlPlane, ns: &str, name: &str) -> Option<String> {
    let api: Api<ConfigMap> = Api::namespaced(cp.client().await, ns);
    api.get_opt(name)
        .await
        .expect("get")?
        .metadata
        .resource_version
}

/// `pontoon plan --config CONFIG --dir DIR`: its exit code and what it printed.
fn plan_dir(config: &Path, dir: &Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pontoon"))
        .args(["plan", "--config"])
        .arg(config)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("run pontoon plan");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), printed)
}

#[tokio::test]
async fn pull_request_plans_count_what_components_team_charts_and_chart_kinds_make_and_name_a_broken_template()
 {
    let cp = control_plane::shared();
    let gitea = gitea::shared();
    let tools = crate::packages::packages_config();
    let id = unique_name("plan-pkg");
    let repo = unique_name("charts");
    gitea.create_repo(&repo).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).expect("mkdir");
    git(&work, &["init", "-q"]);
    git(&work, &["checkout", "-q", "-b", "main"]);
    platform_repo(&work, &id);
    let main = commit_and_push(gitea, &work, &repo, "main");

    let config = gitea
        .daemon_config(&repo, tmp.path())
        .cluster(CLUSTER, &cp.kubeconfig)
        .inventory_namespace(&format!("{id}-pontoon"))
        .packages(&tools.helm, &tools.kustomize);
    let port = config.port();
    let config = config.write(tmp.path());
    let daemon = Daemon::start(&config);
    wait_status(
        gitea,
        &repo,
        &main,
        &format!("pontoon/{CLUSTER}"),
        "success",
    )
    .await;
    let live = [
        (format!("{id}-greeter"), "greeter"),
        (id.clone(), "web-settings"),
        (id.clone(), "sessions-cache"),
    ];
    let mut synced = Vec::new();
    for (ns, name) in &live {
        synced.push(version(cp, ns, name).await.expect("synced from main"));
    }
    // Main planned again: every chart renders what runs.
    let (code, out) = plan_dir(&config, &work);
    assert_eq!(code, Some(0), "{out}");
    for unit in [format!("{CLUSTER}/platform"), format!("{CLUSTER}/{id}")] {
        assert!(
            out.contains(&format!("{unit}: +0 ~0 -0, nothing to do")),
            "{unit}: {out}"
        );
    }
    pull_request_webhook(gitea, &repo, port).await;

    // The component's values, the team chart's and the instance's each change one
    // object, and the team's chart adds one.
    git(&work, &["checkout", "-q", "-b", "new-values"]);
    write(&work, "components/greeter.yaml", &greeter(&id, "bonjour"));
    write(&work, &format!("teams/{id}/web.yaml"), &web("green", true));
    write(&work, &format!("teams/{id}/cache.yaml"), &cache(2));
    let head = commit_and_push(gitea, &work, &repo, "new-values");
    gitea
        .open_pull_request(&repo, "new-values", "main", "new values")
        .await;
    let d = wait_status(gitea, &repo, &head, "pontoon/plan", "success").await;
    assert_eq!(d, format!("{CLUSTER} +1 ~3 -0"));
    let (code, out) = plan_dir(&config, &work);
    assert_eq!(code, Some(2), "{out}");
    for line in [
        format!("{CLUSTER}/platform: +0 ~1 -0"),
        format!("  ~ ConfigMap {id}-greeter/greeter"),
        format!("{CLUSTER}/{id}: +1 ~2 -0"),
        format!("  + ConfigMap {id}/web-extra"),
        format!("  ~ ConfigMap {id}/web-settings"),
        format!("  ~ ConfigMap {id}/sessions-cache"),
    ] {
        assert!(out.lines().any(|l| l == line), "{line}: {out}");
    }

    // A template error in the team's chart, and one in the component's chart: each
    // named by its document, the cluster, and the template and line helm gave, which
    // the forge's 140 characters keep.
    let broken = [
        (
            "broken-web",
            format!("teams/{id}/web/templates/settings.yaml"),
            settings_template("web-settings", "colour", "nope"),
            format!("teams/{id}/web.yaml:1:1"),
            "web",
        ),
        (
            "broken-greeter",
            "components/greeter/chart/templates/settings.yaml".to_owned(),
            settings_template("greeter", "greeting", "nope"),
            "components/greeter.yaml:7:3".to_owned(),
            "greeter",
        ),
    ];
    for (branch, file, text, document, chart) in broken {
        git(&work, &["checkout", "-q", "main"]);
        git(&work, &["checkout", "-q", "-b", branch]);
        write(&work, &file, &text);
        let head = commit_and_push(gitea, &work, &repo, branch);
        gitea.open_pull_request(&repo, branch, "main", branch).await;
        let d = wait_status(gitea, &repo, &head, "pontoon/plan", "failure").await;
        assert!(
            d.starts_with(&format!(
                "1 error: {document}: error[package-error]: cluster {CLUSTER}: {chart}/templates/settings.yaml:6: helm template:"
            )),
            "{d}"
        );
    }

    // Nothing was applied from any of them.
    for ((ns, name), before) in live.iter().zip(&synced) {
        assert_eq!(
            version(cp, ns, name).await.as_ref(),
            Some(before),
            "{ns}/{name}"
        );
    }
    assert_eq!(version(cp, &id, "web-extra").await, None);
    daemon.finish().await;
}
