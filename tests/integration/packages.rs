//! Packages end to end against a real kube-apiserver, with the real `helm` (4.3.1) and
//! `kustomize` (5.8.2) built by `tests/support/go-build.sh packages`: a chart made by
//! `helm create` and a Kustomize overlay with a patch and a component sync as a team's
//! objects; a team's overlay that leaves its namespaces is refused with the rule id and
//! the folder, and a team's broken chart fails naming chart, template and line, while
//! the other teams sync; the cluster's version comes from its discovery; and a render of
//! unchanged packages runs no tool again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use pontoon::config::PackagesConfig;
use pontoon::daemon::packages::Packages;
use pontoon::desired::{ClusterName, TeamName, UnitId};
use pontoon::source::Snapshot;
use pontoon::sync::UnitState;

use crate::support::control_plane::{self, repo_root, unique_name};

/// Where `helm` and `kustomize` are, built (or found in the cache) once per run.
fn bin(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = repo_root().join("tests/support/go-build.sh");
        let built = Command::new(&script)
            .arg("packages")
            .status()
            .expect("run go-build.sh packages");
        assert!(built.success(), "go-build.sh packages failed");
        let out = Command::new(&script)
            .arg("bin-dir")
            .output()
            .expect("bin-dir");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
    .join(name)
}

/// Remote charts reached with nothing configured (these tests name none).
pub(crate) fn no_charts() -> pontoon::config::ChartsConfig {
    pontoon::config::ChartsConfig {
        cache_dir: std::env::temp_dir().join("pontoon-test-charts"),
        timeout: pontoon::config::DEFAULT_CHART_TIMEOUT,
        hosts: Vec::new(),
        keep_unused: pontoon::config::DEFAULT_KEEP_UNUSED,
    }
}

/// Renders `files` (revision `r1`) as the daemon does, expanding its packages with the
/// real tools; the packages are returned to count their runs.
pub(crate) async fn render_files(
    syncers: &BTreeMap<ClusterName, Arc<pontoon::sync::Syncer>>,
    charts: &pontoon::config::ChartsConfig,
    files: BTreeMap<String, Vec<u8>>,
) -> (pontoon::desired::DesiredState, Packages) {
    let packages = Packages::new(&packages_config(), charts, syncers);
    let snapshot = Arc::new(Snapshot {
        revision: "r1".into(),
        files,
        ..Snapshot::default()
    });
    let (owner, keys) = (Default::default(), Default::default());
    let state = pontoon::daemon::poll_and_render::render(
        snapshot,
        Default::default(),
        &owner,
        &keys,
        &packages,
    )
    .await;
    (state, packages)
}

pub(crate) fn packages_config() -> PackagesConfig {
    PackagesConfig {
        helm: bin("helm"),
        kustomize: bin("kustomize"),
        ..PackagesConfig::default()
    }
}

/// The files of folder `dir`, under `prefix` in the repo.
fn read_tree(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Vec<u8>>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let repo_path = format!("{prefix}/{name}");
        if path.is_dir() {
            read_tree(&path, &repo_path, out);
        } else {
            out.insert(repo_path, std::fs::read(&path).expect("read"));
        }
    }
}

/// A chart made by the real `helm create web`, as the folder `prefix` of the repo.
pub(crate) fn helm_create(prefix: &str, files: &mut BTreeMap<String, Vec<u8>>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(bin("helm"))
        .args(["create", "web"])
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .output()
        .expect("helm create");
    assert!(out.status.success(), "{out:?}");
    read_tree(&dir.path().join("web"), prefix, files);
}

fn team_yaml(team: &str, cluster: &str) -> Vec<u8> {
    format!("apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {team}}}\nspec:\n  namespaces: [{team}]\n  clusters: {{names: [{cluster}]}}\n").into_bytes()
}

const CHART_DOC: &str = "apiVersion: pontoon.dev/v1alpha1\nkind: Chart\nmetadata: {name: shop}\nspec:\n  path: web\n  values: {replicaCount: 2}\n";

/// Teams `good` (a created chart and an overlay), `leaky` (an overlay into `good`'s
/// namespace) and `broken` (a chart with a template error).
fn repo(cluster: &str, good: &str, leaky: &str, broken: &str) -> BTreeMap<String, Vec<u8>> {
    let mut f = BTreeMap::new();
    f.insert(
        "platform.yaml".into(),
        format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {{name: p}}\nspec:\n  clusters: [{{name: {}}}]\n  teamPackages: {{kustomize: true, charts: true}}\n  policy:\n    allowedKinds:\n      - {{group: apps, kind: Deployment}}\n      - {{kind: Service}}\n      - {{kind: ServiceAccount}}\n      - {{kind: ConfigMap}}\n",
            cluster
        )
        .into_bytes(),
    );
    for team in [good, leaky, broken] {
        f.insert(format!("teams/{team}/team.yaml"), team_yaml(team, cluster));
    }
    // good: a created chart, and an overlay with a patch and a component.
    helm_create(&format!("teams/{good}/web"), &mut f);
    f.insert(format!("teams/{good}/web.yaml"), CHART_DOC.into());
    f.insert(
        format!("teams/{good}/web/templates/cluster.yaml"),
        b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cluster\ndata:\n  version: {{ .Capabilities.KubeVersion.Version | quote }}\n  widgets: {{ .Capabilities.APIVersions.Has \"health.pontoon.dev/v1\" | quote }}\n".to_vec(),
    );
    let put = |f: &mut BTreeMap<String, Vec<u8>>, path: &str, text: &str| {
        f.insert(path.to_owned(), text.as_bytes().to_vec());
    };
    put(
        &mut f,
        &format!("teams/{good}/settings/base/kustomization.yaml"),
        "resources: [cm.yaml]\n",
    );
    put(
        &mut f,
        &format!("teams/{good}/settings/base/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {colour: blue, size: small}\n",
    );
    put(
        &mut f,
        &format!("teams/{good}/settings/audited/kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\nlabels:\n- pairs: {audited: \"yes\"}\n",
    );
    put(
        &mut f,
        &format!("teams/{good}/settings/prod/kustomization.yaml"),
        "resources: [../base]\ncomponents: [../audited]\npatches:\n- path: colour.yaml\n",
    );
    put(
        &mut f,
        &format!("teams/{good}/settings/prod/colour.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {colour: green}\n",
    );
    // leaky: an overlay that puts its ConfigMap in good's namespace.
    put(
        &mut f,
        &format!("teams/{leaky}/app/kustomization.yaml"),
        &format!("namespace: {good}\nresources: [cm.yaml]\n"),
    );
    put(
        &mut f,
        &format!("teams/{leaky}/app/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: sneaky}\n",
    );
    // broken: a chart whose template calls a function that does not exist.
    put(&mut f, &format!("teams/{broken}/web.yaml"), CHART_DOC);
    put(
        &mut f,
        &format!("teams/{broken}/web/Chart.yaml"),
        "apiVersion: v2\nname: web\nversion: 0.1.0\n",
    );
    put(
        &mut f,
        &format!("teams/{broken}/web/templates/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: {{ .Values.a | nope }}\n",
    );
    f
}

#[tokio::test]
async fn team_packages_sync_under_the_teams_rules_and_one_teams_broken_package_stops_no_other() {
    let cp = control_plane::shared();
    let s = Arc::new(crate::sync::syncer(cp).await);
    let cluster = ClusterName(cp.name.into());
    let syncers = BTreeMap::from([(cluster.clone(), s.clone())]);
    let (good, leaky, broken) = (
        unique_name("pkg"),
        unique_name("leaky"),
        unique_name("broken"),
    );
    let packages = Packages::new(&packages_config(), &no_charts(), &syncers);
    let snapshot = Arc::new(Snapshot {
        revision: "r1".into(),
        files: repo(cp.name, &good, &leaky, &broken),
        skipped: Vec::new(),
        author: String::new(),
        message: String::new(),
    });
    let (owner, keys) = (Default::default(), Default::default());
    let render = || {
        pontoon::daemon::poll_and_render::render(
            snapshot.clone(),
            Default::default(),
            &owner,
            &keys,
            &packages,
        )
    };
    let state = render().await;
    let text: Vec<String> = state.diagnostics.iter().map(|d| d.to_string()).collect();

    // leaky's overlay is refused at its kustomization, with the rule id and the folder.
    let refused = format!(
        "teams/{leaky}/app/kustomization.yaml:1:1: error[namespace-not-owned]: team {leaky}: kustomization teams/{leaky}/app, document 1 (ConfigMap sneaky): ConfigMap in namespace {good}, which belongs to team {good}"
    );
    assert!(text.contains(&refused), "{text:#?}");
    // broken's chart names chart, template and line.
    assert!(
        text.iter().any(|d| d.starts_with(&format!("teams/{broken}/web.yaml:1:1: error[package-error]: team {broken}: chart teams/{broken}/web on cluster {}: web/templates/cm.yaml:6: helm template:", cp.name))
            && d.contains("function \"nope\" not defined")),
        "{text:#?}"
    );
    assert!(state.failed_teams.contains_key(&TeamName(leaky.clone())));
    assert!(state.failed_teams.contains_key(&TeamName(broken.clone())));
    assert_eq!(text.len(), 2, "good renders clean: {text:#?}");

    // good syncs: the created chart's objects and the overlay's patched ConfigMap.
    let unit = &state.units[&UnitId {
        team: TeamName(good.clone()),
        cluster: cluster.clone(),
    }];
    let r = s.sync(unit, &state.revision).await;
    assert!(r.errors.is_empty(), "{r:?}");
    assert_ne!(r.state, UnitState::Failed, "{r:?}");
    let deployments: Api<Deployment> = Api::namespaced(cp.client().await, &good);
    let web = deployments
        .get("shop-web")
        .await
        .expect("the chart's Deployment");
    assert_eq!(web.spec.replicas, Some(2), "the chart's values");
    let labels = web.metadata.labels.unwrap_or_default();
    assert_eq!(labels.get("pontoon.dev/team"), Some(&good));
    let annotations = web.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations.get("pontoon.dev/source").map(String::as_str),
        Some(format!("teams/{good}/web.yaml:1").as_str())
    );
    let configmaps: Api<ConfigMap> = Api::namespaced(cp.client().await, &good);
    let settings = configmaps
        .get("settings")
        .await
        .expect("the overlay's ConfigMap");
    let data = settings.data.unwrap_or_default();
    assert_eq!(
        (
            data.get("colour").map(String::as_str),
            data.get("size").map(String::as_str)
        ),
        (Some("green"), Some("small")),
        "patched by the overlay"
    );
    assert_eq!(
        settings
            .metadata
            .labels
            .unwrap_or_default()
            .get("audited")
            .map(String::as_str),
        Some("yes"),
        "labelled by the component"
    );
    // The chart saw the cluster as its discovery describes it.
    let version = cp
        .client()
        .await
        .apiserver_version()
        .await
        .expect("version");
    let seen = configmaps
        .get("cluster")
        .await
        .expect("the chart's ConfigMap")
        .data
        .unwrap_or_default();
    assert_eq!(seen.get("version"), Some(&version.git_version));
    let served = cp
        .client()
        .await
        .list_api_groups()
        .await
        .expect("groups")
        .groups
        .iter()
        .any(|g| g.name == "health.pontoon.dev");
    assert_eq!(
        seen.get("widgets").map(String::as_str),
        Some(if served { "true" } else { "false" })
    );
    assert!(
        configmaps.get_opt("sneaky").await.expect("get").is_none(),
        "leaky's object never reaches good's namespace"
    );

    // The same revision again: every package comes from the cache, no tool runs.
    let runs = packages.runs();
    assert!(runs >= 3, "{runs}");
    let again = render().await;
    assert_eq!(again.units.len(), state.units.len());
    assert_eq!(
        packages.runs(),
        runs,
        "unchanged packages are not rendered again"
    );
}

/// `pontoon validate` and `pontoon render` of a folder expand its packages with the
/// `helm` and `kustomize` they find on `PATH`, as the daemon does.
#[test]
fn render_and_validate_cover_packages() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (path, bytes) in repo("prod", "good", "leaky", "broken") {
        let file = dir.path().join(&path);
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(file, bytes).expect("write");
    }
    let tools = bin("helm").parent().expect("bin dir").to_owned();
    let pontoon = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_pontoon"))
            .args(args)
            .arg(dir.path())
            .env("PATH", &tools)
            .output()
            .expect("run pontoon")
    };
    let out = pontoon(&["validate"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("teams/leaky/app/kustomization.yaml:1:1: error[namespace-not-owned]: team leaky: kustomization teams/leaky/app, document 1 (ConfigMap sneaky)"),
        "{text}"
    );
    assert!(
        text.contains("teams/broken/web.yaml:1:1: error[package-error]: team broken: chart teams/broken/web on cluster prod: web/templates/cm.yaml:6"),
        "{text}"
    );
    assert!(!text.contains("package-not-expanded"), "{text}");
    let out = pontoon(&["render", "--team", "good"]);
    let yaml = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "kind: Deployment",
        "name: shop-web",
        "colour: green",
        "audited: \"yes\"",
    ] {
        assert!(yaml.contains(expected), "{expected} in {yaml}");
    }
}
