//! A team's packages: listed as requests, their expansions read under the team's rules.

use super::*;
use crate::desired::{ExpandedDocument, Expansion, PackageError, PackageSource};

const ALLOW: &str = "  teamPackages: {kustomize: true, charts: true}\n";

fn allowing(extra: &[(&str, &str)]) -> Files {
    let mut files = repo(extra);
    let platform = format!("{PLATFORM}{ALLOW}");
    files.insert("platform.yaml".into(), platform.into_bytes());
    files
}

const CHART_DOC: &str = "\
apiVersion: pontoon.dev/v1alpha1
kind: Chart
metadata: {name: web}
spec:
  path: web
  values: {replicaCount: 1}
overrides:
  prod: {replicaCount: 3}
";

const OVERLAY: &[(&str, &str)] = &[
    ("teams/a/app/kustomization.yaml", "resources: [../base]\n"),
    ("teams/a/base/kustomization.yaml", "resources: [cm.yaml]\n"),
    (
        "teams/a/base/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-base}\n",
    ),
];

fn expansion(text: &str) -> Result<Expansion, PackageError> {
    Ok(Expansion {
        documents: vec![ExpandedDocument {
            origin: "templates/cm.yaml".into(),
            text: text.into(),
        }],
    })
}

fn expand_all(files: &Files, text: &str) -> Expansions {
    let mut expansions = Expansions::new();
    for request in package_requests(files) {
        expansions.insert(&request, expansion(text));
    }
    expansions
}

fn render_with(files: &Files, expansions: &Expansions) -> DesiredState {
    render_expanded(
        files,
        &[],
        "r",
        &NamespaceOwners::new(),
        Decryption::Keys(&NO_KEYS),
        None,
        expansions,
    )
}

#[test]
fn a_chart_is_requested_per_cluster_with_that_clusters_values() {
    let files = allowing(&[
        ("teams/a/web.yaml", CHART_DOC),
        (
            "teams/a/web/Chart.yaml",
            "apiVersion: v2\nname: web\nversion: 0.1.0\n",
        ),
        ("teams/a/web/templates/cm.yaml", "{{ .Values.x }}"),
    ]);
    let requests = package_requests(&files);
    let by_cluster: BTreeMap<&str, &PackageRequest> =
        requests.iter().map(|r| (r.cluster.0.as_str(), r)).collect();
    assert_eq!(by_cluster.len(), 2, "{requests:?}");
    assert_eq!(by_cluster["prod"].values, json!({"replicaCount": 3}));
    assert_eq!(by_cluster["staging"].values, json!({"replicaCount": 1}));
    assert_eq!(
        by_cluster["prod"].source,
        PackageSource::ChartFolder {
            path: "teams/a/web".into()
        }
    );
    assert_eq!(by_cluster["prod"].release, "web");
    assert_eq!(by_cluster["prod"].namespace, "a");
    assert_eq!(by_cluster["prod"].origin, "teams/a/web.yaml:1");

    let s = render_with(
        &files,
        &expand_all(
            &files,
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\n",
        ),
    );
    assert!(s.diagnostics.is_empty(), "{:?}", s.diagnostics);
    let unit = &s.units[&UnitId {
        team: TeamName("a".into()),
        cluster: ClusterName("prod".into()),
    }];
    let cm = unit
        .objects
        .iter()
        .find(|o| {
            o.key()
                .is_some_and(|k| k.kind == "ConfigMap" && k.name == "web")
        })
        .expect("the chart's ConfigMap");
    assert_eq!(cm.source.to_string(), "teams/a/web.yaml:1");
    assert_eq!(cm.applier, Applier::Team);
    assert_eq!(
        cm.object.to_value()["metadata"]["namespace"],
        json!("a"),
        "placed in the release namespace"
    );
}

#[test]
fn an_overlay_is_one_package_and_its_files_are_no_manifests() {
    let files = allowing(OVERLAY);
    let requests = package_requests(&files);
    assert_eq!(
        requests.len(),
        2,
        "one per cluster, the base is no package: {requests:?}"
    );
    assert!(requests.iter().all(|r| r.source
        == PackageSource::Kustomize {
            path: "teams/a/app".into()
        }));
    let s = render_with(
        &files,
        &expand_all(
            &files,
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: built}\n",
        ),
    );
    assert!(s.diagnostics.is_empty(), "{:?}", s.diagnostics);
    let unit = &s.units[&UnitId {
        team: TeamName("a".into()),
        cluster: ClusterName("staging".into()),
    }];
    let names: Vec<String> = unit
        .objects
        .iter()
        .filter_map(|o| o.key())
        .filter(|k| k.kind == "ConfigMap")
        .map(|k| k.name)
        .collect();
    assert_eq!(
        names,
        ["built"],
        "the base's cm.yaml is read by kustomize alone"
    );
}

#[test]
fn an_expansion_leaving_the_team_is_refused_at_the_package_and_other_teams_render() {
    let files = allowing(OVERLAY);
    let s = render_with(
        &files,
        &expand_all(
            &files,
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: b}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\n",
        ),
    );
    let text: Vec<String> = s.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        text.iter().any(|d| d.starts_with("teams/a/app/kustomization.yaml:1:1: error[namespace-not-owned]: team a: kustomization teams/a/app, templates/cm.yaml: ConfigMap in namespace b, which belongs to team b")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|d| d.contains("error[kind-not-allowed]")
                && d.contains("kustomization teams/a/app")),
        "{text:#?}"
    );
    assert!(s.failed_teams.contains_key(&TeamName("a".into())));
    assert!(s.units.keys().any(|u| u.team.0 == "b"), "team b renders");
}

#[test]
fn packages_the_platform_does_not_allow_are_refused_at_their_file() {
    let mut files = repo(OVERLAY);
    files.insert("teams/b/web.yaml".into(), CHART_DOC.into());
    assert!(package_requests(&files).is_empty());
    let s = render(&files, "r");
    let text: Vec<String> = s.diagnostics.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        text,
        [
            "teams/a/app/kustomization.yaml:1:1: error[package-not-allowed]: team a: teams may not hold a Kustomize folder: platform.yaml does not allow it (spec.teamPackages.kustomize)",
            "teams/b/web.yaml:1:1: error[package-not-allowed]: team b: teams may not hold a chart: platform.yaml does not allow it (spec.teamPackages.charts)",
        ]
    );
}

#[test]
fn a_failed_expansion_names_its_template_and_fails_only_its_team() {
    let files = allowing(&[("teams/b/web.yaml", CHART_DOC)]);
    let mut expansions = Expansions::new();
    for request in package_requests(&files) {
        expansions.insert(
            &request,
            Err(PackageError {
                message: "function \"nope\" not defined".into(),
                file: Some("web/templates/cm.yaml".into()),
                line: Some(7),
            }),
        );
    }
    let s = render_with(&files, &expansions);
    let text: Vec<String> = s.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        text.contains(&"teams/b/web.yaml:1:1: error[package-error]: team b: chart teams/b/web on cluster prod: web/templates/cm.yaml:7: function \"nope\" not defined".to_owned()),
        "{text:#?}"
    );
    assert!(s.units.keys().any(|u| u.team.0 == "a"), "team a renders");
    assert!(!s.units.keys().any(|u| u.team.0 == "b"));
}

#[test]
fn references_out_of_the_team_folder_are_refused() {
    let files = allowing(&[
        ("teams/a/app/kustomization.yaml", "resources: [../../b/x]\n"),
        (
            "teams/b/x/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
        ),
        (
            "teams/a/web.yaml",
            "apiVersion: pontoon.dev/v1alpha1\nkind: Chart\nmetadata: {name: w}\nspec: {path: ../b/chart}\n",
        ),
    ]);
    let s = render_with(&files, &Expansions::new());
    let text: Vec<String> = s.diagnostics.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        text,
        [
            "teams/a/app/kustomization.yaml:1:1: error[package-reference]: team a: ../../b/x leaves teams/a",
            "teams/a/web.yaml:4:8: error[package-reference]: team a: ../b/chart leaves the team's folder teams/a",
        ]
    );
}

#[test]
fn a_policy_verdict_on_an_expanded_object_points_at_the_package() {
    let mut files = allowing(OVERLAY);
    let platform = format!(
        "{PLATFORM}{ALLOW}  policies:\n    - id: labelled\n      action: warn\n      expression: has(object.metadata.labels.app)\n      message: \"${{object.metadata.name}} has no app label\"\n"
    );
    files.insert("platform.yaml".into(), platform.into_bytes());
    let s = render_with(
        &files,
        &expand_all(
            &files,
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: built\n  labels: {}\n",
        ),
    );
    let text: Vec<String> = s.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        text.iter().all(|d| d.starts_with("teams/a/app/kustomization.yaml:1:1: warning[policy/labelled]: team a: kustomization teams/a/app, templates/cm.yaml: ")),
        "{text:#?}"
    );
    assert_eq!(text.len(), 2, "one per cluster: {text:#?}");
}
