//! Expansion with the real `helm` (4.3.1) and `kustomize` (5.8.2) that
//! `tests/support/go-build.sh packages` builds into the shared cache.

use std::path::PathBuf;
use std::process::Command;

use serde_json::json;

use super::*;
use crate::desired::{PackageOwner, TeamName};

fn bin(name: &str) -> PathBuf {
    let cache = std::env::var_os("PONTOON_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/pontoon")))
        .expect("no cache folder: set PONTOON_CACHE");
    let path = cache.join("bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run tests/support/go-build.sh packages",
        path.display()
    );
    path
}

fn expander() -> Expander {
    Expander::new(ExpandConfig {
        helm: bin("helm"),
        kustomize: bin("kustomize"),
        ..ExpandConfig::default()
    })
}

/// The files of folder `dir` as a revision holds them, under `prefix`.
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

/// A chart made by `helm create web`, as the folder `teams/a/web` of a revision.
fn created_chart() -> BTreeMap<String, Vec<u8>> {
    let dir = tempfile::tempdir().expect("tempdir");
    let status = Command::new(bin("helm"))
        .args(["create", "web"])
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .output()
        .expect("helm create");
    assert!(status.status.success(), "{status:?}");
    let mut files = BTreeMap::new();
    read_tree(&dir.path().join("web"), "teams/a/web", &mut files);
    files
}

fn chart_request(path: &str, values: serde_json::Value) -> PackageRequest {
    PackageRequest {
        source: PackageSource::ChartFolder { path: path.into() },
        release: "shop".into(),
        namespace: "a".into(),
        values,
        cluster: ClusterName("prod".into()),
        owner: PackageOwner::Team(TeamName("a".into())),
        origin: "teams/a/web.yaml:1".into(),
    }
}

fn kinds(e: &Expansion) -> Vec<String> {
    e.documents
        .iter()
        .map(|d| {
            let v: serde_json::Value = serde_saphyr::from_str(&d.text).expect("yaml");
            format!(
                "{}/{}",
                v["kind"].as_str().unwrap_or(""),
                v["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect()
}

fn caps() -> ClusterCapabilities {
    ClusterCapabilities {
        kube_version: "v1.37.2".into(),
        api_versions: vec!["v1".into(), "apps/v1".into()],
    }
}

#[test]
fn a_created_chart_renders_once_until_an_input_changes() {
    let files = created_chart();
    let x = expander();
    let request = chart_request("teams/a/web", json!({"replicaCount": 2}));
    let first = x
        .expand_one(&files, &request, &caps(), None)
        .expect("renders");
    assert_eq!(
        kinds(&first),
        [
            "ServiceAccount/shop-web",
            "Service/shop-web",
            "Deployment/shop-web"
        ],
        "test hooks are skipped"
    );
    assert!(first.documents[2].text.contains("replicas: 2"));
    assert_eq!(first.documents[2].origin, "web/templates/deployment.yaml");
    assert_eq!(x.runs(), 1);
    let again = x
        .expand_one(&files, &request, &caps(), None)
        .expect("cached");
    assert_eq!(again, first);
    assert_eq!(x.runs(), 1, "unchanged inputs are not rendered again");
    // Each input counts: values, a file of the chart, the cluster's version.
    x.expand_one(
        &files,
        &chart_request("teams/a/web", json!({"replicaCount": 3})),
        &caps(),
        None,
    )
    .expect("renders");
    assert_eq!(x.runs(), 2);
    let mut edited = files.clone();
    edited.insert(
        "teams/a/web/templates/extra.yaml".into(),
        b"# nothing\n".to_vec(),
    );
    x.expand_one(&edited, &request, &caps(), None)
        .expect("renders");
    assert_eq!(x.runs(), 3);
    let newer = ClusterCapabilities {
        kube_version: "v1.36.0".into(),
        ..caps()
    };
    x.expand_one(&files, &request, &newer, None)
        .expect("renders");
    assert_eq!(x.runs(), 4);
}

#[test]
fn chart_crds_and_a_subchart_render_and_a_missing_subchart_fails_clearly() {
    let mut files = BTreeMap::new();
    let put = |files: &mut BTreeMap<String, Vec<u8>>, p: &str, t: &str| {
        files.insert(format!("c/app/{p}"), t.as_bytes().to_vec());
    };
    put(
        &mut files,
        "Chart.yaml",
        "apiVersion: v2\nname: app\nversion: 1.0.0\ndependencies:\n- name: sub\n  version: 0.1.0\n",
    );
    put(
        &mut files,
        "crds/widget.yaml",
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.example.org\nspec:\n  group: example.org\n  names: {kind: Widget, plural: widgets}\n  scope: Namespaced\n  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object}}}]\n",
    );
    put(
        &mut files,
        "templates/widget.yaml",
        "apiVersion: example.org/v1\nkind: Widget\nmetadata:\n  name: {{ .Release.Name }}\n",
    );
    put(
        &mut files,
        "charts/sub/Chart.yaml",
        "apiVersion: v2\nname: sub\nversion: 0.1.0\n",
    );
    put(
        &mut files,
        "charts/sub/templates/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-sub\n",
    );
    let x = expander();
    let e = x
        .expand_one(&files, &chart_request("c/app", json!({})), &caps(), None)
        .expect("renders");
    assert_eq!(
        kinds(&e),
        [
            "CustomResourceDefinition/widgets.example.org",
            "ConfigMap/shop-sub",
            "Widget/shop"
        ],
        "the chart's CRDs come first"
    );
    files.retain(|p, _| !p.contains("/charts/"));
    let err = x
        .expand_one(&files, &chart_request("c/app", json!({})), &caps(), None)
        .expect_err("no subchart");
    assert!(
        err.message.contains("missing in charts/ directory: sub"),
        "{}",
        err.message
    );
}

#[test]
fn a_template_error_names_template_and_line_and_lookup_is_refused_before_running() {
    let mut files = created_chart();
    files.insert(
        "teams/a/web/templates/bad.yaml".into(),
        b"a: 1\nb: {{ .Values.x | nope }}\n".to_vec(),
    );
    let x = expander();
    let err = x
        .expand_one(
            &files,
            &chart_request("teams/a/web", json!({})),
            &caps(),
            None,
        )
        .expect_err("broken");
    assert_eq!(
        (err.file.as_deref(), err.line),
        (Some("web/templates/bad.yaml"), Some(2)),
        "{err:?}"
    );
    assert!(
        err.message.contains("function \"nope\" not defined"),
        "{}",
        err.message
    );
    files.insert(
        "teams/a/web/templates/bad.yaml".into(),
        b"a: 1\n{{ if (lookup \"v1\" \"Secret\" \"a\" \"x\") }}b: 2{{ end }}\n".to_vec(),
    );
    let runs = x.runs();
    let err = x
        .expand_one(
            &files,
            &chart_request("teams/a/web", json!({})),
            &caps(),
            None,
        )
        .expect_err("lookup");
    assert_eq!(
        (err.file.as_deref(), err.line),
        (Some("web/templates/bad.yaml"), Some(2))
    );
    assert!(err.message.contains("lookup"), "{}", err.message);
    assert_eq!(x.runs(), runs, "refused before helm runs");
}

fn overlay() -> BTreeMap<String, Vec<u8>> {
    [
        ("k/base/kustomization.yaml", "resources: [deploy.yaml]\n"),
        ("k/base/deploy.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: web:1}]}\n"),
        ("k/probe/kustomization.yaml", "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\nlabels:\n- pairs: {probe: \"on\"}\n"),
        ("k/prod/kustomization.yaml", "resources: [../base]\ncomponents: [../probe]\nnamespace: a\npatches:\n- path: replicas.yaml\n"),
        ("k/prod/replicas.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 4}\n"),
        ("k/unrelated.yaml", "not: read"),
    ]
    .into_iter()
    .map(|(p, t)| (p.to_owned(), t.as_bytes().to_vec()))
    .collect()
}

fn kustomize_request(path: &str) -> PackageRequest {
    PackageRequest {
        source: PackageSource::Kustomize { path: path.into() },
        release: String::new(),
        namespace: String::new(),
        values: serde_json::Value::Null,
        cluster: ClusterName("prod".into()),
        owner: PackageOwner::Team(TeamName("a".into())),
        origin: format!("{path}/kustomization.yaml:1"),
    }
}

#[test]
fn an_overlay_with_a_patch_and_a_component_builds_and_a_remote_base_is_refused() {
    let mut files = overlay();
    let x = expander();
    let e = x
        .expand_one(&files, &kustomize_request("k/prod"), &caps(), None)
        .expect("builds");
    assert_eq!(kinds(&e), ["Deployment/web"]);
    let text = &e.documents[0].text;
    assert!(
        text.contains("replicas: 4")
            && text.contains("probe: \"on\"")
            && text.contains("namespace: a"),
        "{text}"
    );
    assert_eq!(e.documents[0].origin, "document 1 (Deployment web)");
    // A file the kustomization does not read is no input of it.
    files.insert("k/unrelated.yaml".into(), b"changed".to_vec());
    x.expand_one(&files, &kustomize_request("k/prod"), &caps(), None)
        .expect("cached");
    assert_eq!(x.runs(), 1);
    files.insert(
        "k/prod/kustomization.yaml".into(),
        b"resources: [../base, 'https://example.org/remote/base']\n".to_vec(),
    );
    let err = x
        .expand_one(&files, &kustomize_request("k/prod"), &caps(), None)
        .expect_err("remote");
    assert!(err.message.contains("remote base"), "{}", err.message);
    assert_eq!(err.file.as_deref(), Some("k/prod/kustomization.yaml"));
    assert_eq!(x.runs(), 1, "refused before kustomize runs");
}

#[test]
fn a_remote_chart_without_its_archive_fails_clearly() {
    let request = PackageRequest {
        source: PackageSource::ChartOci {
            reference: "oci://127.0.0.1:1/charts/web".into(),
            version: "1.0.0".into(),
            digest: None,
        },
        ..chart_request("unused", json!({}))
    };
    let err = expander()
        .expand_one(&BTreeMap::new(), &request, &caps(), None)
        .expect_err("not fetched");
    assert!(
        err.message
            .contains("a remote chart is fetched by the daemon"),
        "{}",
        err.message
    );
}

/// A fetched archive (as `helm package` lays it out) whose template, or whose subchart's,
/// calls `lookup` is refused naming the template and line, before helm runs; a subchart
/// packed as `.tgz` in a chart folder's `charts/` likewise.
#[test]
fn lookup_is_refused_inside_fetched_archives_and_packed_subcharts() {
    use super::archive::tests::tgz;
    let lookup = b"a: 1\nb: 2\n{{ $s := lookup \"v1\" \"Secret\" \"a\" \"x\" }}\n".as_slice();
    let sub = tgz(&[
        (
            "db/Chart.yaml",
            b"apiVersion: v2\nname: db\nversion: 1.0.0\n",
        ),
        ("db/templates/s.yaml", lookup),
    ]);
    let chart = tgz(&[
        (
            "app/Chart.yaml",
            b"apiVersion: v2\nname: app\nversion: 0.1.0\n",
        ),
        ("app/templates/cm.yaml", b"kind: ConfigMap\n"),
        ("app/charts/db-1.0.0.tgz", &sub),
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("app.tgz");
    std::fs::write(&archive, &chart).expect("write");
    let fetched = FetchedChart {
        archive,
        digest: format!("sha256:{}", hex::encode(sha2::Sha256::digest(&chart))),
    };
    let request = PackageRequest {
        source: PackageSource::ChartRepository {
            url: "https://charts.internal/stable".into(),
            chart: "app".into(),
            version: "0.1.0".into(),
        },
        ..chart_request("unused", json!({}))
    };
    let x = expander();
    let err = x
        .expand_one(&BTreeMap::new(), &request, &caps(), Some(&fetched))
        .expect_err("lookup in a fetched subchart");
    assert_eq!(
        (err.file.as_deref(), err.line),
        (Some("app/charts/db/templates/s.yaml"), Some(3)),
        "{err:?}"
    );
    assert!(err.message.contains("calls lookup"), "{}", err.message);
    assert_eq!(x.runs(), 0, "refused before helm runs");

    // The same subchart packed in a chart folder of the repo.
    let mut files = BTreeMap::new();
    files.insert(
        "teams/a/web/Chart.yaml".to_owned(),
        b"apiVersion: v2\nname: web\nversion: 0.1.0\n".to_vec(),
    );
    files.insert("teams/a/web/charts/db-1.0.0.tgz".to_owned(), sub.clone());
    let err = x
        .expand_one(
            &files,
            &chart_request("teams/a/web", json!({})),
            &caps(),
            None,
        )
        .expect_err("lookup in a packed subchart");
    assert_eq!(
        (err.file.as_deref(), err.line),
        (Some("web/charts/db/templates/s.yaml"), Some(3)),
        "{err:?}"
    );
    // An archive that is not one is said so, naming it.
    files.insert("teams/a/web/charts/db-1.0.0.tgz".to_owned(), b"x".to_vec());
    let err = x
        .expand_one(
            &files,
            &chart_request("teams/a/web", json!({})),
            &caps(),
            None,
        )
        .expect_err("not an archive");
    assert_eq!(err.file.as_deref(), Some("web/charts/db-1.0.0.tgz"));
    assert!(
        err.message.starts_with("chart archive is not a gzip'd tar"),
        "{}",
        err.message
    );
    assert_eq!(x.runs(), 0);
}

/// A hook is refused naming its template and the line of its annotation.
#[test]
fn a_hook_is_refused_at_the_line_of_its_annotation() {
    let mut files = BTreeMap::new();
    files.insert(
        "teams/a/web/Chart.yaml".to_owned(),
        b"apiVersion: v2\nname: web\nversion: 0.1.0\n".to_vec(),
    );
    files.insert(
        "teams/a/web/templates/job.yaml".to_owned(),
        b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: migrate\n  annotations:\n    \"helm.sh/hook\": pre-upgrade\n".to_vec(),
    );
    let err = expander()
        .expand_one(
            &files,
            &chart_request("teams/a/web", json!({})),
            &caps(),
            None,
        )
        .expect_err("hook");
    assert_eq!(
        (err.file.as_deref(), err.line),
        (Some("web/templates/job.yaml"), Some(6)),
        "{err:?}"
    );
}
