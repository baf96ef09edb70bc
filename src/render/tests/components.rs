//! Components: one `platform` unit per cluster holding every component that selects it,
//! applied as pontoon, with cluster overrides; `platform` is no team's name; a Kind's
//! `requires` is put on its instances' objects, and must name a component that runs there.

use super::*;

const CNPG: &str = "\
apiVersion: pontoon.dev/v1alpha1
kind: Component
metadata: {name: cnpg}
spec:
  clusters: {matchLabels: {env: prod}}
  namespace: cnpg-system
  source: {manifests: {path: components/cnpg}}
  overrides:
    prod:
      patches:
        - target: {kind: Deployment, name: operator}
          patch: {spec: {replicas: 3}}
";

const CNPG_FILES: &str = "\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: clusters.postgresql.cnpg.io}
---
apiVersion: v1
kind: Namespace
metadata: {name: cnpg-system}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: operator}
spec: {replicas: 1}
";

const DB_KIND: &str = "\
apiVersion: pontoon.dev/v1alpha1
kind: Kind
metadata: {name: Db}
spec:
  requires: [cnpg]
  resources:
    - id: cluster
      template: {apiVersion: postgresql.cnpg.io/v1, kind: Cluster, metadata: {name: \"${name}\"}}
";

fn platform_unit<'s>(s: &'s DesiredState, cluster: &str) -> Option<&'s UnitDesired> {
    s.units.get(&UnitId {
        team: TeamName(PLATFORM_UNIT.into()),
        cluster: ClusterName(cluster.into()),
    })
}

#[test]
fn a_component_selected_by_labels_is_one_platform_unit_on_those_clusters_alone() {
    let (s, d) = diags(&[
        ("components/cnpg.yaml", CNPG),
        ("components/cnpg/all.yaml", CNPG_FILES),
    ]);
    assert!(d.is_empty(), "{d:#?}");
    assert!(platform_unit(&s, "staging").is_none());
    let unit = platform_unit(&s, "prod").expect("the platform unit on prod");
    let keys: Vec<String> = unit
        .objects
        .iter()
        .filter_map(|o| o.key())
        .map(|k| k.to_string())
        .collect();
    assert_eq!(
        keys,
        [
            "Namespace/cnpg-system",
            "CustomResourceDefinition.apiextensions.k8s.io/clusters.postgresql.cnpg.io",
            "Deployment.apps cnpg-system/operator",
        ]
    );
    assert!(unit.objects.iter().all(|o| o.applier == Applier::Platform));
    let deploy = unit.objects[2].object.to_value();
    // The component's namespace is filled in, the prod override patched in.
    assert_eq!(deploy["spec"]["replicas"], 3);
    assert_eq!(deploy["metadata"]["labels"][LABEL_TEAM], PLATFORM_UNIT);
    assert_eq!(unit.components.provides["cnpg"].len(), 3);
    // Teams are untouched by it.
    assert!(s.units.keys().any(|u| u.team.0 == "a"));
}

#[test]
fn a_broken_component_fails_the_platform_unit_where_it_runs_and_nothing_else() {
    let other = CNPG
        .replace("name: cnpg}", "name: other}")
        .replace("matchLabels: {env: prod}", "names: [staging]")
        .replace("components/cnpg}", "components/other}")
        .replace("    prod:\n      patches:\n        - target: {kind: Deployment, name: operator}\n          patch: {spec: {replicas: 3}}\n", "    {}\n");
    let other = other.replace("  overrides:\n    {}\n", "");
    let (s, d) = diags(&[
        ("components/cnpg.yaml", CNPG),
        (
            "components/cnpg/all.yaml",
            "apiVersion: v1\nkind: ConfigMap\n",
        ),
        ("components/other.yaml", &other),
        (
            "components/other/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: tools}\n",
        ),
    ]);
    assert!(
        d.iter().any(|l| l.starts_with("components/cnpg/all.yaml:1:1: error[schema]: team platform: ConfigMap has no metadata.name")),
        "{d:#?}"
    );
    assert!(platform_unit(&s, "prod").is_none());
    assert!(platform_unit(&s, "staging").is_some(), "{d:#?}");
    assert!(
        s.units
            .keys()
            .any(|u| u.team.0 == "a" && u.cluster.0 == "prod")
    );
    assert_eq!(
        s.failed_team_clusters[&TeamName(PLATFORM_UNIT.into())],
        [ClusterName("prod".into())]
    );
}

#[test]
fn every_component_mistake_names_its_file_and_line() {
    let cases: [(&str, &str, &str); 5] = [
        (
            "apiVersion: pontoon.dev/v1alpha1\nkind: Component\nmetadata: {name: x}\nspec:\n  clusters: {names: [prod]}\n  source: {manifests: {path: components/x}}\n",
            "components/y.yaml:3",
            "error[component-name]",
        ),
        (
            "apiVersion: pontoon.dev/v1alpha1\nkind: Component\nmetadata: {name: y}\nspec:\n  clusters: {names: [prod]}\n  source: {}\n",
            "components/y.yaml:6",
            "exactly one of manifests, kustomize, chart",
        ),
        (
            "apiVersion: pontoon.dev/v1alpha1\nkind: Component\nmetadata: {name: y}\nspec:\n  clusters: {names: [prod]}\n  source: {manifests: {path: teams/a}}\n",
            "components/y.yaml:6",
            "is in a team's folder",
        ),
        (
            "apiVersion: pontoon.dev/v1alpha1\nkind: Component\nmetadata: {name: y}\nspec:\n  clusters: {names: [mars]}\n  source: {manifests: {path: components/y}}\n",
            "components/y.yaml:5",
            "error[unknown-cluster]",
        ),
        (
            "apiVersion: pontoon.dev/v1alpha1\nkind: Component\nmetadata: {name: y}\nspec:\n  clusters: {names: [prod]}\n  source: {chart: {repository: https://charts.example/, name: y}}\n",
            "components/y.yaml:6",
            "needs name and version",
        ),
    ];
    for (file, at, says) in cases {
        let (s, d) = diags(&[
            ("components/y.yaml", file),
            (
                "components/y/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: tools}\n",
            ),
        ]);
        assert!(
            d.iter().any(|l| l.starts_with(at) && l.contains(says)),
            "{at} {says}: {d:#?}"
        );
        assert!(platform_unit(&s, "prod").is_none());
    }
    // A component writing into a team's namespace, and a patch that targets nothing.
    let (_, d) = diags(&[
        ("components/cnpg.yaml", CNPG),
        (
            "components/cnpg/all.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: a}\n",
        ),
    ]);
    assert!(
        d.iter()
            .any(|l| l.contains("error[namespace-not-owned]") && l.contains("belongs to team a")),
        "{d:#?}"
    );
    assert!(
        d.iter().any(
            |l| l.starts_with("components/cnpg.yaml:11") && l.contains("error[unknown-object]")
        ),
        "{d:#?}"
    );
}

#[test]
fn platform_is_no_teams_name() {
    let (s, d) = diags(&[("teams/platform/team.yaml", &team("platform", "plat"))]);
    assert!(
        d.iter()
            .any(|l| l.starts_with("teams/platform/team.yaml:3")
                && l.contains("error[team-reserved]")),
        "{d:#?}"
    );
    assert!(s.failed_teams.contains_key(&TeamName(PLATFORM_UNIT.into())));
}

#[test]
fn a_kinds_requires_waits_its_objects_for_a_component_that_runs_on_their_cluster() {
    let db = "apiVersion: pontoon.dev/v1alpha1\nkind: Db\nmetadata: {name: ledger}\n";
    let (s, d) = diags(&[
        ("components/cnpg.yaml", CNPG),
        ("components/cnpg/all.yaml", CNPG_FILES),
        ("kinds/db.yaml", DB_KIND),
        ("teams/a/db.yaml", db),
    ]);
    // cnpg runs on prod alone: on staging the instance would wait for ever.
    assert!(
        d.iter().any(|l| l.starts_with("teams/a/db.yaml:1")
            && l.contains("error[unknown-component]")
            && l.contains("requires component cnpg, which does not run on cluster staging")),
        "{d:#?}"
    );
    let all = CNPG.replace("matchLabels: {env: prod}", "names: [staging, prod]");
    let (s2, d) = diags(&[
        ("components/cnpg.yaml", &all),
        ("components/cnpg/all.yaml", CNPG_FILES),
        ("kinds/db.yaml", DB_KIND),
        ("teams/a/db.yaml", db),
    ]);
    assert!(d.is_empty(), "{d:#?}");
    let unit = &s2.units[&UnitId {
        team: TeamName("a".into()),
        cluster: ClusterName("prod".into()),
    }];
    let want: BTreeMap<ObjectKey, Vec<String>> = [(
        ObjectKey {
            group: "postgresql.cnpg.io".into(),
            kind: "Cluster".into(),
            namespace: "a".into(),
            name: "ledger".into(),
        },
        vec!["cnpg".to_owned()],
    )]
    .into();
    assert_eq!(unit.components.requires, want);
    drop(s);
}

const CHARTED: &str = "\
apiVersion: pontoon.dev/v1alpha1
kind: Component
metadata: {name: cnpg}
spec:
  clusters: {names: [staging, prod]}
  namespace: cnpg-system
  source: {chart: {repository: https://charts.example/, name: cloudnative-pg, version: 0.23.0}}
  values: {replicaCount: 1, image: {tag: \"1.25\"}}
  overrides:
    prod: {values: {replicaCount: 3}}
";

const OVERLAY: &str = "\
apiVersion: pontoon.dev/v1alpha1
kind: Component
metadata: {name: ingress}
spec:
  clusters: {names: [prod]}
  source: {kustomize: {path: components/ingress/overlay}}
";

fn render_with(files: &Files, expansions: &Expansions) -> (DesiredState, Vec<String>) {
    let s = render_expanded(
        files,
        &[],
        "rev",
        &NamespaceOwners::new(),
        Decryption::Keys(&NO_KEYS),
        None,
        expansions,
    );
    let d = s.diagnostics.iter().map(|d| d.to_string()).collect();
    (s, d)
}

#[test]
fn a_components_chart_and_overlay_are_requested_per_cluster_and_read_from_their_expansions() {
    let files = repo(&[
        ("components/cnpg.yaml", CHARTED),
        ("components/ingress.yaml", OVERLAY),
        (
            "components/ingress/overlay/kustomization.yaml",
            "resources: [../base]\n",
        ),
        (
            "components/ingress/base/kustomization.yaml",
            "resources: [cm.yaml]\n",
        ),
        (
            "components/ingress/base/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
        ),
    ]);
    let requests = crate::render::components::package_requests(&files);
    let described: Vec<String> = requests
        .iter()
        .map(|r| format!("{} {} {} {}", r.cluster, r.owner, r.source, r.values))
        .collect();
    assert_eq!(
        described,
        [
            "staging component cnpg chart cloudnative-pg 0.23.0 from https://charts.example/ {\"image\":{\"tag\":\"1.25\"},\"replicaCount\":1}",
            "prod component cnpg chart cloudnative-pg 0.23.0 from https://charts.example/ {\"image\":{\"tag\":\"1.25\"},\"replicaCount\":3}",
            "prod component ingress kustomization components/ingress/overlay null",
        ]
    );
    assert!(requests.iter().all(|r| r.origin.starts_with("components/")));
    // The revision's requests, which the daemon expands, hold the components'.
    assert_eq!(crate::render::package_requests(&files), requests);

    // Nothing expanded: each package is an error at its component, on its clusters.
    let (s, d) = render_with(&files, &Expansions::new());
    assert!(
        d.iter().any(|l| l.starts_with("components/cnpg.yaml:7")
            && l.contains("error[package-not-expanded]")),
        "{d:#?}"
    );
    assert!(platform_unit(&s, "prod").is_none());

    let mut expansions = Expansions::new();
    let deployment =
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: cnpg}\nspec: {replicas: 3}\n";
    let crd = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: clusters.postgresql.cnpg.io}\n";
    for r in &requests {
        let documents = match &r.source {
            PackageSource::Kustomize { .. } => vec![ExpandedDocument {
                origin: "ConfigMap x".into(),
                text: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: ingress}\n"
                    .into(),
            }],
            _ => vec![
                ExpandedDocument {
                    origin: "crds/clusters.yaml".into(),
                    text: crd.into(),
                },
                ExpandedDocument {
                    origin: "templates/deployment.yaml".into(),
                    text: deployment.into(),
                },
            ],
        };
        expansions.insert(r, Ok(Expansion { documents }));
    }
    let (s, d) = render_with(&files, &expansions);
    assert!(d.is_empty(), "{d:#?}");
    let unit = platform_unit(&s, "prod").expect("prod's platform unit");
    let keys: Vec<String> = unit
        .objects
        .iter()
        .filter_map(|o| o.key())
        .map(|k| k.to_string())
        .collect();
    assert_eq!(
        keys,
        [
            "ConfigMap ingress/x",
            "CustomResourceDefinition.apiextensions.k8s.io/clusters.postgresql.cnpg.io",
            "Deployment.apps cnpg-system/cnpg",
        ]
    );
    assert_eq!(unit.objects[2].source.to_string(), "components/cnpg.yaml:1");
    assert_eq!(unit.components.provides["cnpg"].len(), 2);
    assert_eq!(
        platform_unit(&s, "staging").expect("staging").objects.len(),
        2
    );

    // A template error names the chart, the template and its line, on that cluster alone.
    let prod_chart = requests
        .iter()
        .find(|r| r.cluster.0 == "prod" && r.source.is_chart())
        .expect("prod chart");
    expansions.insert(
        prod_chart,
        Err(PackageError {
            message: "template: cloudnative-pg/templates/deployment.yaml:12:3: nil pointer".into(),
            file: Some("templates/deployment.yaml".into()),
            line: Some(12),
        }),
    );
    let (s, d) = render_with(&files, &expansions);
    assert!(
        d.iter().any(|l| l.starts_with("components/cnpg.yaml:7")
            && l.contains("error[package-error]")
            && l.contains("component cnpg: chart cloudnative-pg 0.23.0 from https://charts.example/ on cluster prod: templates/deployment.yaml:12: ")),
        "{d:#?}"
    );
    assert!(platform_unit(&s, "prod").is_none());
    assert!(platform_unit(&s, "staging").is_some());
    assert!(
        s.units
            .keys()
            .any(|u| u.team.0 == "a" && u.cluster.0 == "prod")
    );
}

#[test]
fn a_components_kustomize_folder_with_a_remote_base_is_refused_at_its_file() {
    let files = repo(&[
        ("components/ingress.yaml", OVERLAY),
        (
            "components/ingress/overlay/kustomization.yaml",
            "resources: [https://example.com/base?ref=v1]\n",
        ),
    ]);
    assert!(crate::render::components::package_requests(&files).is_empty());
    let (_, d) = render_with(&files, &Expansions::new());
    assert!(
        d.iter().any(
            |l| l.starts_with("components/ingress/overlay/kustomization.yaml:1")
                && l.contains("error[package-reference]")
                && l.contains("component ingress")
        ),
        "{d:#?}"
    );
}
