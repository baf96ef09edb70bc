//! Table-driven tests: one small repo per rule, each checking file, line, team and
//! message; plus the example platform and determinism.

use std::collections::BTreeSet;

use serde_json::json;

use super::*;

mod autoscaling;
mod components;
mod dependencies;
mod health;
mod kind_charts;
mod kubectl;
mod packages;
mod policies;
mod secrets;

const PLATFORM: &str = "\
apiVersion: pontoon.dev/v1alpha1
kind: Platform
metadata: {name: p}
spec:
  clusters:
    - {name: staging, labels: {env: staging}}
    - {name: prod, labels: {env: prod}}
  policy:
    allowedKinds:
      - {group: \"\", kind: ConfigMap}
";

const KIND: &str = "\
apiVersion: pontoon.dev/v1alpha1
kind: Kind
metadata: {name: App}
spec:
  parameters:
    image: {type: string, required: true}
    replicas: {type: integer, default: 1, maximum: 5}
  resources:
    - id: deploy
      template:
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: \"${name}\"}
        spec:
          replicas: ${spec.replicas}
          template: {spec: {containers: [{name: app, image: \"${spec.image}\"}]}}
";

fn team(name: &str, ns: &str) -> String {
    format!(
        "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {name}}}\nspec:\n  namespaces: [{ns}]\n  clusters: {{names: [staging, prod]}}\n"
    )
}

fn repo(extra: &[(&str, &str)]) -> Files {
    let mut f: Files = BTreeMap::new();
    f.insert("platform.yaml".into(), PLATFORM.into());
    f.insert("kinds/app.yaml".into(), KIND.into());
    f.insert("teams/a/team.yaml".into(), team("a", "a").into());
    f.insert("teams/b/team.yaml".into(), team("b", "b").into());
    for (p, c) in extra {
        f.insert((*p).into(), c.as_bytes().to_vec());
    }
    f
}

/// Renders and returns the diagnostics as `file:line:col: error[rule]: message` lines.
/// Renders the repo with `extra` as a commit on top of the good repo (teams a and b), as
/// the daemon does.
fn diags(extra: &[(&str, &str)]) -> (DesiredState, Vec<String>) {
    let base = render(&repo(&[]), "base");
    let s = render_after(&repo(extra), "rev", &base.namespace_owners);
    let d = s.diagnostics.iter().map(|d| d.to_string()).collect();
    (s, d)
}

#[test]
fn a_good_repo_renders_every_unit() {
    let (s, d) = diags(&[(
        "teams/a/app.yaml",
        "apiVersion: pontoon.dev/v1alpha1\nkind: App\nmetadata: {name: web}\nspec: {image: 'x:1'}\n",
    )]);
    assert!(d.is_empty(), "{d:?}");
    assert_eq!(s.units.len(), 4);
    let u = &s.units[&UnitId {
        team: TeamName("a".into()),
        cluster: ClusterName("prod".into()),
    }];
    let deploy = u
        .objects
        .iter()
        .find(|o| o.object["kind"] == "Deployment")
        .expect("deployment");
    assert_eq!(
        deploy.object["spec"]["replicas"],
        json!(1),
        "a lone ${{}} keeps its integer type"
    );
    assert_eq!(deploy.object["metadata"]["namespace"], json!("a"));
    assert_eq!(deploy.object["metadata"]["labels"][LABEL_TEAM], json!("a"));
    assert_eq!(
        deploy.object["metadata"]["annotations"][ANNOTATION_SOURCE],
        json!("teams/a/app.yaml:1")
    );
    assert_eq!(deploy.applier, Applier::Team);
    let role = u
        .objects
        .iter()
        .find(|o| o.object["kind"] == "Role")
        .expect("team role");
    assert_eq!(role.object["rules"][0]["resources"], json!(["deployments"]));
    assert_eq!(role.applier, Applier::Platform);
}

/// A team that stops targeting a cluster keeps rendering: an override for a cluster the
/// platform defines but the team does not target is a warning, not an error.
#[test]
fn an_override_for_a_cluster_the_team_left_is_a_warning() {
    let (s, d) = diags(&[
        (
            "teams/c/team.yaml",
            &team("c", "c").replace("[staging, prod]", "[staging]"),
        ),
        (
            "teams/c/x.yaml",
            "apiVersion: pontoon.dev/v1alpha1\nkind: App\nmetadata: {name: web}\nspec: {image: x}\noverrides:\n  prod: {replicas: 2}\n",
        ),
    ]);
    assert_eq!(
        d,
        [
            "teams/c/x.yaml:6:3: warning[unused-override]: team c: override for cluster prod, which the team does not target; it is ignored"
        ]
    );
    assert!(!s.failed_teams.contains_key(&TeamName("c".into())));
    assert!(
        s.units
            .keys()
            .any(|u| u.team.0 == "c" && u.cluster.0 == "staging")
    );
}

/// A problem in one cluster's values names that cluster, so that cluster's unit can show
/// it; a problem with the file itself holds on every cluster.
#[test]
fn a_diagnostic_names_its_cluster_when_only_one_cluster_has_it() {
    let s = render(
        &repo(&[(
            "teams/a/x.yaml",
            "apiVersion: pontoon.dev/v1alpha1\nkind: App\nmetadata: {name: web}\nspec: {image: x}\noverrides:\n  prod: {replicas: 9}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: b}\n",
        )]),
        "rev",
    );
    let of = |rule: &str| -> Vec<Option<&str>> {
        s.failed_teams[&TeamName("a".into())]
            .iter()
            .filter(|d| d.rule == rule)
            .map(|d| d.cluster.as_deref())
            .collect()
    };
    assert_eq!(of("invalid-spec"), [Some("prod")]);
    assert!(!of("namespace-not-owned").is_empty());
    assert!(of("namespace-not-owned").iter().all(Option::is_none));
}

#[test]
fn one_bad_repo_per_rule() {
    let inst = |body: &str| {
        format!("apiVersion: pontoon.dev/v1alpha1\nkind: App\nmetadata: {{name: web}}\n{body}")
    };
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (vec![("teams/a/x.yaml", "a: [unclosed\n".into())], "teams/a/x.yaml:1:4: error[parse]: team a:"),
        (vec![("teams/a/x.yaml", inst("spec: {image: 'x', colour: red}\n"))], "teams/a/x.yaml:4:20: error[invalid-spec]: team a: App web on prod: spec.colour is not a parameter"),
        (vec![("teams/a/x.yaml", inst("spec: {imag: x}\n"))], "teams/a/x.yaml:4:8: error[invalid-spec]: team a: App web on prod: spec.imag is not a parameter of this kind (did you mean image?) (known: image, replicas)"),
        (vec![("teams/a/x.yaml", "apiVersion: pontoon.dev/v1alpha1\nkind: Ap\nmetadata: {name: n}\n".into())], "teams/a/x.yaml:2:1: error[unknown-kind]: team a: kind Ap is not defined under kinds/ (did you mean App?)"),
        (vec![("teams/a/x.yaml", inst("spec: {image: 3}\n"))], "teams/a/x.yaml:4:8: error[invalid-spec]: team a: App web on prod: spec.image must be a string, not an integer"),
        (vec![("teams/a/x.yaml", inst("spec: {image: x, replicas: 9}\n"))], "teams/a/x.yaml:4:18: error[invalid-spec]: team a: App web on prod: spec.replicas is 9, more than the maximum 5"),
        (vec![("teams/a/x.yaml", inst("spec: {image: x}\noverrides:\n  prod: {replicas: 9}\n"))], "teams/a/x.yaml:6:10: error[invalid-spec]: team a: App web on prod: spec.replicas is 9, more than the maximum 5"),
        (vec![("teams/a/x.yaml", inst("spec: {replicas: 2}\n"))], "teams/a/x.yaml:4:1: error[invalid-spec]: team a: App web on prod: spec.image is required"),
        (vec![("teams/a/x.yaml", inst("spec: {}\nsurprise: 1\n"))], "teams/a/x.yaml:5:1: error[unknown-field]: team a: unknown field `surprise`"),
        (vec![("teams/a/x.yaml", "apiVersion: pontoon.dev/v1alpha1\nkind: Nope\nmetadata: {name: n}\n".into())], "teams/a/x.yaml:2:1: error[unknown-kind]: team a: kind Nope is not defined under kinds/ (known: App)"),
        (vec![("teams/a/x.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: b}\n".into())], "teams/a/x.yaml:3:21: error[namespace-not-owned]: team a: ConfigMap in namespace b, which belongs to team b"),
        (vec![("teams/a/x.yaml", "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n".into())], "teams/a/x.yaml:2:1: error[kind-not-allowed]: team a: teams may not write Secret (v1) by hand; the platform allows: ConfigMap"),
        (vec![("teams/a/x.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n".into())], "teams/a/x.yaml:5:1: error[duplicate-object]: team a: ConfigMap a/c on prod is also produced by teams/a/x.yaml:1"),
        (vec![("teams/a/x.yaml", inst("spec: {image: x}\noverrides:\n  prdo: {replicas: 2}\n"))], "teams/a/x.yaml:6:3: error[unknown-cluster]: team a: override for cluster prdo, which platform.yaml does not define (did you mean prod?)"),
        (vec![("teams/a/x.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ../../etc}\n".into())], "teams/a/x.yaml:3:12: error[schema]: team a: ConfigMap name \"../../etc\" may not contain '/' or '%'"),
        (vec![("teams/c/team.yaml", team("c", "kube-system"))], "teams/c/team.yaml:5:16: error[namespace-reserved]: team c: namespace kube-system belongs to Kubernetes itself; a team cannot own it"),
        (vec![("teams/c/team.yaml", team("c", "pontoon-system"))], "error[namespace-reserved]: team c: namespace pontoon-system belongs to pontoon"),
        (vec![("teams/c/team.yaml", team("c", "default"))], "error[namespace-reserved]"),
        (vec![("teams/c/team.yaml", team("c", "pontoon-teams"))], "teams/c/team.yaml:5:16: error[namespace-reserved]: team c: namespace pontoon-teams belongs to pontoon (the teams' identities); a team cannot own it"),
        (vec![("teams/c/team.yaml", team("c", "a"))], "teams/c/team.yaml:5:16: error[namespace-claimed]: team c: namespace a belongs to team a"),
        (vec![("teams/c/team.yaml", team("c", "c, c"))], "teams/c/team.yaml:5:19: error[schema]: team c: namespace c is listed twice (first at spec.namespaces[0])"),
        (vec![("teams/c/team.yaml", team("c", "c").replace("[staging, prod]", "[moon]"))], "teams/c/team.yaml:6:22: error[unknown-cluster]: team c: cluster moon is not defined in platform.yaml"),
        (vec![("teams/c/app.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n".into())], "teams/c/team.yaml:1:1: error[missing-team-file]: team c: team folder teams/c/ has no team.yaml"),
        (vec![("teams/a/x.yaml", "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: x}\n".into())], "error[kind-not-allowed]"),
        (vec![("kinds/bad.yaml", "apiVersion: pontoon.dev/v1alpha1\nkind: Kind\nmetadata: {name: Bad}\nspec:\n  parameters:\n    n: {type: integer, default: x}\n  resources: []\n".into())], "kinds/bad.yaml:6:24: error[invalid-kind]: kind Bad: default of n must be an integer, not a string"),
        (vec![("teams/a/x.yaml", "a: 1\na: 2\n".into())], "teams/a/x.yaml:2:1: error[parse]: team a: duplicate mapping key: a"),
        (vec![("teams/a/x.yaml", "\u{0}\u{0}".into())], NUL_BYTES_DIAGNOSTIC),
    ];
    for (extra, want) in cases {
        assert!(!want.is_empty(), "a case names the diagnostic it expects");
        let extra: Vec<(&str, &str)> = extra.iter().map(|(p, c)| (*p, c.as_str())).collect();
        let (s, d) = diags(&extra);
        assert!(
            d.iter().any(|l| l.contains(want)),
            "want {want:?} in {d:#?}"
        );
        // The other team is never affected by this team's mistake.
        assert!(
            s.units.keys().any(|u| u.team.0 == "b"),
            "team b must still render: {d:?}"
        );
    }
}

/// What a file of NUL bytes gives: a parse error at its first character, naming the
/// character escaped rather than as a raw NUL.
const NUL_BYTES_DIAGNOSTIC: &str =
    "teams/a/x.yaml:1:1: error[parse]: team a: unexpected character: `\\u{0}'";

#[test]
fn a_file_of_nul_bytes_fails_its_team_with_one_parse_error() {
    let (s, d) = diags(&[("teams/a/x.yaml", "\u{0}\u{0}")]);
    assert_eq!(d, [NUL_BYTES_DIAGNOSTIC]);
    assert_eq!(
        s.failed_teams[&TeamName("a".into())]
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [NUL_BYTES_DIAGNOSTIC]
    );
    assert!(!s.units.keys().any(|u| u.team.0 == "a"));
    assert!(s.units.keys().any(|u| u.team.0 == "b"));
}

#[test]
fn parser_advice_for_programmers_is_not_shown_to_users() {
    let (_, d) = diags(&[("teams/a/x.yaml", "a: 1\na: 2\n")]);
    let line = d
        .iter()
        .find(|l| l.contains("duplicate mapping key"))
        .expect("duplicate key reported");
    assert!(line.ends_with("duplicate mapping key: a"), "{line}");
}

#[test]
fn non_utf8_and_huge_files_are_refused_clearly() {
    let mut f = repo(&[]);
    f.insert(
        "teams/a/bin.yaml".into(),
        vec![b'a', b':', b' ', 0xff, 0xfe, b'\n'],
    );
    let s = render(&f, "r");
    assert!(
        s.diagnostics
            .iter()
            .any(|d| d.rule == "not-utf8" && d.file == "teams/a/bin.yaml"),
        "{:?}",
        s.diagnostics
    );
    let mut f = repo(&[]);
    f.insert("teams/a/big.yaml".into(), vec![b'#'; 50 * 1024 * 1024]);
    let s = render(&f, "r");
    assert!(
        s.diagnostics.iter().any(|d| d.rule == "file-too-large"),
        "{:?}",
        s.diagnostics
    );
}

#[test]
fn alias_bombs_are_refused() {
    let bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n";
    let (s, d) = diags(&[("teams/a/bomb.yaml", bomb)]);
    assert!(
        d.iter()
            .any(|l| l.starts_with("teams/a/bomb.yaml:") && l.contains("error[parse]")),
        "{d:?}"
    );
    assert!(s.failed_teams.contains_key(&TeamName("a".into())));
}

#[test]
fn a_broken_platform_stops_everything_and_a_broken_team_only_itself() {
    let mut f = repo(&[]);
    f.insert("platform.yaml".into(), b"apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {name: p}\nspec: {clusters: [], extra: 1}\n".to_vec());
    let s = render(&f, "r");
    assert!(s.platform_failed);
    assert!(s.units.is_empty());
    assert!(
        s.diagnostics[0].to_string().starts_with("platform.yaml:4:"),
        "{}",
        s.diagnostics[0]
    );
}

#[test]
fn rendering_is_deterministic_byte_for_byte() {
    let files = example();
    let out = |s: DesiredState| {
        serde_json::to_string(&(s.units.values().collect::<Vec<_>>(), s.diagnostics)).expect("json")
    };
    let a = out(render(&files, "r"));
    assert!(a.len() > 10_000);
    for _ in 0..3 {
        assert_eq!(a, out(render(&files, "r")));
    }
}

fn example() -> Files {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example-platform");
    crate::source::dir::read(&root)
        .expect("example platform")
        .files
}

#[test]
fn the_example_platform_validates_clean() {
    let s = render(&example(), "r");
    assert!(s.diagnostics.is_empty(), "{:#?}", s.diagnostics);
    let teams: BTreeSet<&str> = s.units.keys().map(|u| u.team.0.as_str()).collect();
    // The platform unit holds the example's components on each cluster.
    assert_eq!(
        teams,
        BTreeSet::from(["data", "payments", PLATFORM_UNIT, "search"])
    );
    // search targets prod only (by label); overrides apply per cluster.
    assert!(
        !s.units
            .keys()
            .any(|u| u.team.0 == "search" && u.cluster.0 == "staging")
    );
    let hpa = |cluster: &str| {
        s.units[&UnitId {
            team: TeamName("payments".into()),
            cluster: ClusterName(cluster.into()),
        }]
            .objects
            .iter()
            .find(|o| o.object["kind"] == "HorizontalPodAutoscaler")
            .map(|o| o.object["spec"]["maxReplicas"].clone())
    };
    assert_eq!(hpa("staging"), Some(json!(6)));
    assert_eq!(hpa("prod"), Some(json!(20)));
}

#[test]
fn github_annotations_escape_their_fields() {
    let d = Diagnostic {
        file: "teams/a/x,y.yaml".into(),
        line: 3,
        column: 1,
        team: Some(TeamName("a".into())),
        cluster: None,
        severity: Severity::Error,
        rule: "parse".into(),
        message: "bad\nthing".into(),
    };
    assert_eq!(
        format_github(&[d]),
        "::error file=teams/a/x%2Cy.yaml,line=3,col=1,title=parse::team a: bad%0Athing\n"
    );
}

/// The JSON Schemas under `schemas/` are generated from the model; this fails when they
/// are stale. `PONTOON_UPDATE_SCHEMAS=1 cargo test schemas` rewrites them.
#[test]
fn checked_in_json_schemas_match_the_model() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let update = std::env::var_os("PONTOON_UPDATE_SCHEMAS").is_some();
    for (name, schema) in crate::model::schemas() {
        let text = serde_json::to_string_pretty(&schema).expect("json") + "\n";
        let path = dir.join(name);
        if update {
            std::fs::create_dir_all(&dir).expect("mkdir schemas");
            std::fs::write(&path, &text).expect("write schema");
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            on_disk,
            text,
            "{} is stale: run PONTOON_UPDATE_SCHEMAS=1 cargo test schemas",
            path.display()
        );
    }
}

/// The whole rendered example, reviewed as a snapshot: a change to the renderer or the
/// example shows up object by object in review (`cargo insta review`).
#[test]
fn the_example_platform_renders_as_reviewed() {
    let s = render(&example(), "r");
    let objects: BTreeMap<String, Vec<&serde_json::Value>> = s
        .units
        .iter()
        .map(|(id, u)| {
            (
                id.to_string(),
                u.objects.iter().map(|o| &**o.object).collect(),
            )
        })
        .collect();
    insta::assert_yaml_snapshot!("example-platform", objects);
}

mod isolation {
    use super::*;
    use proptest::prelude::*;

    fn team_of(path: &str) -> Option<&str> {
        path.strip_prefix("teams/")?.split('/').next()
    }

    fn units_of<'a>(s: &'a DesiredState, team: &str) -> Vec<&'a UnitDesired> {
        s.units.values().filter(|u| u.unit.team.0 == team).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Whatever one team does to its files — garbage bytes anywhere, a file cut short,
        /// a file deleted — every other team renders byte-identically, and rendering is
        /// deterministic.
        #[test]
        fn one_teams_broken_files_never_change_another_teams_render(
            file_pick in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            garbage in prop::collection::vec(any::<u8>(), 0..40),
            mode in 0u8..3,
        ) {
            let files = example();
            let baseline = render(&files, "r");
            let team_files: Vec<&String> = files.keys().filter(|p| team_of(p).is_some()).collect();
            let path = file_pick.get(&team_files).to_string();
            let team = team_of(&path).expect("team file").to_owned();
            let mut broken = files.clone();
            match mode {
                0 => {
                    let content = broken.get_mut(&path).expect("file");
                    let i = at.index(content.len() + 1);
                    content.splice(i..i, garbage.iter().copied());
                }
                1 => {
                    let content = broken.get_mut(&path).expect("file");
                    let i = at.index(content.len() + 1);
                    content.truncate(i);
                }
                _ => {
                    broken.remove(&path);
                }
            }
            let a = render(&broken, "r");
            let b = render(&broken, "r");
            prop_assert_eq!(&a, &b, "rendering is deterministic");
            for other in ["data", "payments", "search"].into_iter().filter(|t| *t != team) {
                prop_assert_eq!(
                    units_of(&a, other),
                    units_of(&baseline, other),
                    "team {} changed when {} was broken", other, path
                );
                prop_assert!(!a.failed_teams.contains_key(&TeamName(other.into())));
            }
            // Every error names the broken team's own file.
            for d in a.diagnostics.iter().filter(|d| d.severity == Severity::Error) {
                prop_assert_eq!(d.team.as_ref().map(|t| t.0.as_str()), Some(team.as_str()), "{}", d);
            }
        }
    }
}

/// A new team copying an existing team's namespace into its team.yaml fails, whatever the
/// names' order, and the team that held the namespace goes on rendering.
#[test]
fn a_namespace_stays_with_the_team_that_held_it() {
    let base = render(&repo(&[]), "base");
    assert_eq!(base.namespace_owners["b"].0, "b");
    // "az" sorts before "b": order must not decide.
    let claim = team("az", "b");
    let files = repo(&[("teams/az/team.yaml", claim.as_str())]);
    let s = render_after(&files, "rev", &base.namespace_owners);
    let d: Vec<String> = s.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(s.units.keys().any(|u| u.team.0 == "b"), "{d:?}");
    assert!(
        d.iter().any(|l| l.contains(
            "teams/az/team.yaml:5:16: error[namespace-claimed]: team az: namespace b belongs to team b"
        )),
        "{d:?}"
    );
    assert!(s.failed_teams.contains_key(&TeamName("az".into())));
    assert_eq!(s.namespace_owners["b"].0, "b");
    // Its failure is shown where its team.yaml says it runs.
    let prod_only = claim.replace("[staging, prod]", "[prod]");
    let s = render_after(
        &repo(&[("teams/az/team.yaml", prod_only.as_str())]),
        "rev",
        &base.namespace_owners,
    );
    assert_eq!(
        s.failed_team_clusters[&TeamName("az".into())],
        [ClusterName("prod".into())]
    );

    // With nothing known of earlier revisions, the repo alone cannot say: both fail.
    let s = render(&files, "rev");
    let d: Vec<String> = s.diagnostics.iter().map(|d| d.to_string()).collect();
    for t in ["az", "b"] {
        assert!(s.failed_teams.contains_key(&TeamName(t.into())), "{d:?}");
    }
    assert!(
        d.iter()
            .any(|l| l.contains("namespace b is claimed by teams az and b")),
        "{d:?}"
    );
    assert!(!s.namespace_owners.contains_key("b"));
}

#[test]
fn a_namespace_handed_over_in_one_commit_goes_to_its_new_team() {
    let base = render(&repo(&[]), "base");
    let files = repo(&[
        ("teams/b/team.yaml", &team("b", "b2")),
        ("teams/az/team.yaml", &team("az", "b")),
    ]);
    let s = render_after(&files, "rev", &base.namespace_owners);
    assert!(s.failed_teams.is_empty(), "{:?}", s.diagnostics);
    assert_eq!(s.namespace_owners["b"].0, "az");
    assert_eq!(s.namespace_owners["b2"].0, "b");
}

/// While the holder's team.yaml does not parse, nobody can tell whether it still claims
/// its namespace: it keeps it.
#[test]
fn a_broken_team_yaml_keeps_its_namespaces() {
    let base = render(&repo(&[]), "base");
    let files = repo(&[
        ("teams/b/team.yaml", "spec: [unclosed\n"),
        ("teams/az/team.yaml", &team("az", "b")),
    ]);
    let s = render_after(&files, "rev", &base.namespace_owners);
    let d: Vec<String> = s.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        d.iter()
            .any(|l| l.contains("team az: namespace b belongs to team b")),
        "{d:?}"
    );
    assert_eq!(s.namespace_owners["b"].0, "b");
    // A broken platform.yaml renders nothing and forgets nothing.
    let files = repo(&[("platform.yaml", "nope: [\n")]);
    let s = render_after(&files, "rev", &base.namespace_owners);
    assert!(s.platform_failed);
    assert_eq!(s.namespace_owners, base.namespace_owners);
}

/// `spec.adopt` reaches the units of the team it names, placed at its line; an entry
/// without a reason stops the platform, at the entry's field.
#[test]
fn adoptions_go_to_their_team_and_need_a_reason() {
    let adopting = format!(
        "{PLATFORM}  adopt:\n    - {{kind: Namespace, name: monitoring, team: a, reason: made by hand}}\n"
    );
    let mut f = repo(&[]);
    f.insert("platform.yaml".into(), adopting.into_bytes());
    let s = render(&f, "r");
    assert!(s.diagnostics.is_empty(), "{:?}", s.diagnostics);
    for (id, u) in &s.units {
        if id.team.0 == "a" {
            assert_eq!(u.adopt.len(), 1);
            assert_eq!(u.adopt[0].key.name, "monitoring");
            assert_eq!(u.adopt[0].source.to_string(), "platform.yaml:12");
        } else {
            assert!(u.adopt.is_empty());
        }
    }

    let unexplained = format!(
        "{PLATFORM}  adopt:\n    - {{kind: Namespace, name: monitoring, team: a, reason: \"\"}}\n"
    );
    f.insert("platform.yaml".into(), unexplained.into_bytes());
    let s = render(&f, "r");
    assert!(s.platform_failed);
    assert_eq!(
        s.diagnostics[0].to_string(),
        "platform.yaml:12:52: error[schema]: an adoption needs a reason"
    );
}

#[test]
fn a_render_holds_its_manifests_as_text_alone() {
    // A render is held as long as the daemon runs: whatever the render read to check its
    // objects (keys, autoscalers' targets), no manifest keeps a tree (see Manifest).
    let s = render(&example(), "r");
    let objects: Vec<&DesiredObject> = s.units.values().flat_map(|u| &u.objects).collect();
    assert!(objects.len() > 20, "{}", objects.len());
    let with_tree: Vec<_> = objects.iter().filter(|o| o.object.holds_tree()).collect();
    assert!(
        with_tree.is_empty(),
        "{:?}",
        with_tree.first().and_then(|o| o.key())
    );
}
