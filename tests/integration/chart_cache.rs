//! Fetched charts through the daemon's own wiring (`daemon::packages`), with the real
//! `helm` and an HTTP chart repository (`helm repo index` output behind a file server
//! that counts what it is asked): a fetched chart that calls `lookup` is refused naming
//! the chart, template and line while the other team renders.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use pontoon::daemon::packages::Packages;
use pontoon::desired::DesiredState;
use pontoon::source::Snapshot;

use crate::charts::{FileServer, config, helm};

/// A chart `name` at `version` with the templates given, packaged by the real helm
/// into `out`.
fn package_with(home: &Path, out: &Path, name: &str, version: &str, templates: &[(&str, &str)]) {
    let src = home
        .join("src")
        .join(format!("{name}-{version}"))
        .join(name);
    std::fs::create_dir_all(src.join("templates")).expect("mkdir");
    std::fs::write(
        src.join("Chart.yaml"),
        format!("apiVersion: v2\nname: {name}\nversion: {version}\n"),
    )
    .expect("write");
    for (file, text) in templates {
        std::fs::write(src.join("templates").join(file), text).expect("write");
    }
    std::fs::create_dir_all(out).expect("mkdir");
    helm(
        home,
        &[
            "package",
            src.to_str().expect("path"),
            "--destination",
            out.to_str().expect("path"),
        ],
    );
}

const CONFIGMAP: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-settings\ndata:\n  chart: {{ .Chart.Version | quote }}\n";

const PLATFORM: &str = "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {name: p}\nspec:\n  clusters: [{name: c1}]\n  teamPackages: {charts: true}\n  policy:\n    allowedKinds: [{kind: ConfigMap}]\n";

/// The repo's files: one team per `(team, version)`, each with the chart `app` at that
/// version from the repository at `url` (none for an empty version).
fn repo(url: &str, teams: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::from([("platform.yaml".to_owned(), PLATFORM.as_bytes().to_vec())]);
    for (team, version) in teams {
        files.insert(
            format!("teams/{team}/team.yaml"),
            format!("apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {team}}}\nspec:\n  namespaces: [{team}]\n  clusters: {{names: [c1]}}\n").into_bytes(),
        );
        if !version.is_empty() {
            files.insert(
                format!("teams/{team}/app.yaml"),
                format!("apiVersion: pontoon.dev/v1alpha1\nkind: Chart\nmetadata: {{name: app}}\nspec:\n  repository: {url}/charts\n  chart: app\n  version: {version}\n").into_bytes(),
            );
        }
    }
    files
}

/// Renders `files` as revision `revision` with the daemon's wiring.
async fn render(
    packages: &Packages,
    revision: &str,
    files: BTreeMap<String, Vec<u8>>,
) -> DesiredState {
    let snapshot = Arc::new(Snapshot {
        revision: revision.into(),
        files,
        ..Snapshot::default()
    });
    let (owner, keys) = (Default::default(), Default::default());
    pontoon::daemon::poll_and_render::render(snapshot, Default::default(), &owner, &keys, packages)
        .await
}

fn diagnostics(state: &DesiredState) -> Vec<String> {
    state.diagnostics.iter().map(|d| d.to_string()).collect()
}

#[tokio::test]
async fn a_fetched_chart_that_calls_lookup_is_refused_naming_chart_template_and_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (home, served) = (tmp.path().join("helm"), tmp.path().join("www"));
    let charts = served.join("charts");
    package_with(&home, &charts, "app", "0.1.0", &[("cm.yaml", CONFIGMAP)]);
    package_with(
        &home,
        &charts,
        "app",
        "0.2.0",
        &[
            ("cm.yaml", CONFIGMAP),
            (
                "secret.yaml",
                "{{- $old := lookup \"v1\" \"Secret\" .Release.Namespace \"app\" }}\napiVersion: v1\nkind: Secret\nmetadata: {name: app}\n",
            ),
        ],
    );
    helm(&home, &["repo", "index", charts.to_str().expect("path")]);
    let server = FileServer::start(served).await;
    let packages = Packages::new(
        &crate::packages::packages_config(),
        &config(&tmp.path().join("cache"), vec![]),
        &BTreeMap::new(),
    );
    let state = render(
        &packages,
        "r1",
        repo(&server.url, &[("good", "0.1.0"), ("looks", "0.2.0")]),
    )
    .await;
    let text = diagnostics(&state);
    assert_eq!(
        text,
        [format!(
            "teams/looks/app.yaml:1:1: error[package-error]: team looks: chart app 0.2.0 from {}/charts on cluster c1: app/templates/secret.yaml:1: calls lookup, which reads the live cluster: under helm template it finds nothing, so pontoon refuses it rather than render as if the cluster were empty",
            server.url
        )]
    );
    assert!(state.units.keys().any(|u| u.team.0 == "good"), "{text:#?}");
    assert!(!state.units.keys().any(|u| u.team.0 == "looks"));
    assert_eq!(packages.runs(), 1, "helm ran for good's chart only");
}
