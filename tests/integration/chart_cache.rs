//! Fetched charts through the daemon's own wiring (`daemon::packages`), with the real
//! `helm` and an HTTP chart repository (`helm repo index` output behind a file server
//! that counts what it is asked): a fetched chart that calls `lookup` is refused naming
//! the chart, template and line while the other team renders; the cache keeps the
//! archives of the published revision and the previous one, removes what neither uses,
//! and never fetches a kept pin again; and the fetches, their time and the cache's size
//! are counted in the metrics.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pontoon::daemon::packages::Packages;
use pontoon::desired::DesiredState;
use pontoon::source::Snapshot;

use crate::charts::{FileServer, cached_archives, config, helm, sha256_hex};

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

/// The values of the series of `name` (a histogram: its `_count`) whose labels include
/// `labels`, summed, as the registry exposes them.
fn metric(registry: &prometheus::Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    use prometheus::Encoder as _;
    let mut text = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&registry.gather(), &mut text)
        .expect("encode");
    String::from_utf8_lossy(&text)
        .lines()
        .filter(|l| {
            let series = l.split(['{', ' ']).next().unwrap_or_default();
            series == name || series == format!("{name}_count")
        })
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn an_unused_charts_archive_goes_and_a_kept_pin_is_never_fetched_again() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (home, served, cache) = (
        tmp.path().join("helm"),
        tmp.path().join("www"),
        tmp.path().join("cache"),
    );
    let charts = served.join("charts");
    for version in ["0.1.0", "0.2.0", "0.3.0"] {
        package_with(&home, &charts, "app", version, &[("cm.yaml", CONFIGMAP)]);
    }
    helm(&home, &["repo", "index", charts.to_str().expect("path")]);
    let archive = |v: &str| {
        format!(
            "sha256-{}.tgz",
            sha256_hex(&charts.join(format!("app-{v}.tgz")))
        )
    };
    let size = |v: &str| {
        std::fs::metadata(charts.join(format!("app-{v}.tgz")))
            .expect("archive")
            .len() as f64
    };
    let server = FileServer::start(served).await;
    // No grace: only what the published revisions and renders under way use stays.
    let mut charts_config = config(&cache, vec![]);
    charts_config.keep_unused = Duration::ZERO;
    let packages = Packages::new(
        &crate::packages::packages_config(),
        &charts_config,
        &BTreeMap::new(),
    );
    let registry = prometheus::Registry::new();
    packages.register_metrics(&registry).expect("register");
    let fetches = |result: &str| {
        metric(
            &registry,
            "pontoon_chart_fetches_total",
            &[("source", "repository"), ("result", result)],
        )
    };

    // r1: a pins 0.1.0, b 0.2.0. A pull request's plan renders b at 0.3.0 between the
    // daemon's renders: it is not published.
    let state = render(
        &packages,
        "r1",
        repo(&server.url, &[("a", "0.1.0"), ("b", "0.2.0")]),
    )
    .await;
    assert!(state.diagnostics.is_empty(), "{:#?}", diagnostics(&state));
    packages.published("r1").await;
    render(
        &packages,
        "pr",
        repo(&server.url, &[("a", "0.1.0"), ("b", "0.3.0")]),
    )
    .await;
    assert_eq!((fetches("fetched"), fetches("cached")), (3.0, 1.0));
    assert_eq!(
        metric(
            &registry,
            "pontoon_chart_fetch_duration_seconds",
            &[("source", "repository")]
        ),
        3.0,
        "each fetch that went to the network is timed"
    );
    // r2: b moves to 0.3.0. 0.2.0 is the previous revision's: kept.
    render(
        &packages,
        "r2",
        repo(&server.url, &[("a", "0.1.0"), ("b", "0.3.0")]),
    )
    .await;
    let swept = packages.published("r2").await;
    assert!(swept.removed.is_empty(), "{swept:?}");
    assert_eq!(cached_archives(&cache).len(), 3);
    // r3: b drops its chart. 0.2.0 is used by neither r3 nor r2: removed with its pin.
    render(
        &packages,
        "r3",
        repo(&server.url, &[("a", "0.1.0"), ("b", "")]),
    )
    .await;
    let swept = packages.published("r3").await;
    assert_eq!(swept.removed.len(), 1, "{swept:?}");
    let mut kept = vec![archive("0.1.0"), archive("0.3.0")];
    kept.sort();
    assert_eq!(cached_archives(&cache), kept);
    assert_eq!(
        metric(&registry, "pontoon_chart_cache_removed_total", &[]),
        1.0
    );
    assert_eq!(
        metric(&registry, "pontoon_chart_cache_bytes", &[]),
        size("0.1.0") + size("0.3.0")
    );

    // a's pin, kept throughout, was downloaded once; b going back to 0.2.0 fetches it again.
    let before = fetches("fetched");
    render(
        &packages,
        "r4",
        repo(&server.url, &[("a", "0.1.0"), ("b", "0.2.0")]),
    )
    .await;
    let asked = server.take();
    let downloads = |v: &str| {
        asked
            .iter()
            .filter(|r| r.starts_with(&format!("GET /charts/app-{v}.tgz 200")))
            .count()
    };
    assert_eq!(
        (downloads("0.1.0"), downloads("0.2.0"), downloads("0.3.0")),
        (1, 2, 1),
        "{asked:#?}"
    );
    assert_eq!(fetches("fetched"), before + 1.0);
    assert_eq!(fetches("failed"), 0.0);
}
