//! `dependsOn`: resolved to the keys each object waits for, and every mistake (an unknown
//! id or instance, a cycle) an error at the `dependsOn` entry, naming file, line and team.

use super::*;

/// A kind whose Deployment waits for its migration Job.
const MIGRATED: &str = "\
apiVersion: pontoon.dev/v1alpha1
kind: Kind
metadata: {name: Migrated}
spec:
  resources:
    - id: migrate
      template: {apiVersion: batch/v1, kind: Job, metadata: {name: \"${name}-migrate\"}}
    - id: deploy
      dependsOn: [migrate]
      template: {apiVersion: apps/v1, kind: Deployment, metadata: {name: \"${name}\"}}
";

fn instance(kind: &str, name: &str, rest: &str) -> String {
    format!(
        "apiVersion: pontoon.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: {name}}}\nspec: {{image: x}}\n{rest}"
    )
}

/// An instance of `Migrated` in team a, which fails when the kind is broken.
fn uses_migrated() -> String {
    "apiVersion: pontoon.dev/v1alpha1\nkind: Migrated\nmetadata: {name: web}\n".to_owned()
}

fn key(group: &str, kind: &str, name: &str) -> ObjectKey {
    ObjectKey {
        group: group.into(),
        kind: kind.into(),
        namespace: "a".into(),
        name: name.into(),
    }
}

#[test]
fn objects_wait_for_their_resources_and_their_instances_dependencies() {
    let web = format!(
        "{}---\n{}",
        instance("App", "db", ""),
        instance("Migrated", "web", "dependsOn: [App/db]\n").replace("spec: {image: x}\n", "")
    );
    let (s, d) = diags(&[
        ("kinds/migrated.yaml", MIGRATED),
        ("teams/a/web.yaml", &web),
    ]);
    assert!(d.is_empty(), "{d:#?}");
    let unit = s
        .units
        .values()
        .find(|u| u.unit.team.0 == "a" && u.unit.cluster.0 == "prod")
        .expect("unit");
    let waits = |k: &ObjectKey| -> Vec<(String, Vec<ObjectKey>)> {
        unit.dependencies
            .get(k)
            .into_iter()
            .flatten()
            .map(|d| (d.name.clone(), d.objects.clone()))
            .collect()
    };
    let db = key("apps", "Deployment", "db");
    assert_eq!(
        waits(&key("apps", "Deployment", "web")),
        [
            (
                "Job/web-migrate".into(),
                vec![key("batch", "Job", "web-migrate")]
            ),
            ("App/db".into(), vec![db.clone()]),
        ]
    );
    assert_eq!(
        waits(&key("batch", "Job", "web-migrate")),
        [("App/db".into(), vec![db.clone()])]
    );
    assert!(waits(&db).is_empty());
    // Nothing else waits: the team's base goes first as always.
    assert_eq!(unit.dependencies.len(), 2);
}

#[test]
fn every_dependency_mistake_is_an_error_at_its_entry() {
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (
            vec![
                (
                    "kinds/migrated.yaml",
                    MIGRATED.replace("dependsOn: [migrate]", "dependsOn: [migrat]"),
                ),
                ("teams/a/web.yaml", uses_migrated()),
            ],
            "kinds/migrated.yaml:9:19: error[unknown-dependency]: kind Migrated: resource deploy depends on migrat, which is no resource id of the kind (did you mean migrate?) (ids: migrate, deploy)",
        ),
        (
            vec![
                (
                    "kinds/migrated.yaml",
                    MIGRATED.replace(
                        "    - id: migrate\n",
                        "    - id: migrate\n      dependsOn: [deploy]\n",
                    ),
                ),
                ("teams/a/web.yaml", uses_migrated()),
            ],
            "kinds/migrated.yaml:10:7: error[dependency-cycle]: kind Migrated: resources depend on each other in a cycle: deploy -> migrate -> deploy; nothing could be applied first",
        ),
        (
            vec![(
                "teams/a/web.yaml",
                instance("App", "web", "dependsOn: [App/dbb]\n"),
            )],
            "teams/a/web.yaml:5:13: error[unknown-dependency]: team a: App/web depends on App/dbb, which is no instance of the team (write Kind/name, like Database/ledger)",
        ),
        (
            vec![
                (
                    "teams/a/web.yaml",
                    instance("App", "web", "dependsOn: [App/db]\n"),
                ),
                (
                    "teams/a/db.yaml",
                    instance("App", "db", "dependsOn:\n  - App/web\n"),
                ),
            ],
            "teams/a/db.yaml:5:1: error[dependency-cycle]: team a: instances depend on each other in a cycle: App/db -> App/web -> App/db; nothing could be applied first",
        ),
        (
            vec![
                (
                    "teams/a/web.yaml",
                    instance("App", "web", "dependsOn: [App/db]\n"),
                ),
                (
                    "teams/a/db.yaml",
                    instance("App", "db", "clusters: {names: [prod]}\n"),
                ),
            ],
            "teams/a/web.yaml:5:13: error[unknown-dependency]: team a: App/web depends on App/db, which does not go to cluster staging: it would wait there forever",
        ),
    ];
    for (extra, want) in cases {
        let extra: Vec<(&str, &str)> = extra.iter().map(|(p, c)| (*p, c.as_str())).collect();
        let (s, d) = diags(&extra);
        assert!(d.iter().any(|l| l == want), "want {want:?} in {d:#?}");
        assert!(
            !s.units.keys().any(|u| u.team.0 == "a"),
            "team a fails: {d:#?}"
        );
        assert!(s.units.keys().any(|u| u.team.0 == "b"), "team b renders");
    }
}

#[test]
fn the_examples_checkout_waits_for_its_database() {
    let s = render(&example(), "r");
    assert!(s.diagnostics.is_empty(), "{:?}", s.diagnostics);
    for unit in s.units.values().filter(|u| u.unit.team.0 == "payments") {
        let checkout = ObjectKey {
            group: "apps".into(),
            kind: "Deployment".into(),
            namespace: "payments".into(),
            name: "checkout".into(),
        };
        let deps = unit.dependencies.get(&checkout).expect("checkout waits");
        assert_eq!(deps[0].name, "Database/ledger");
        assert_eq!(deps[0].objects[0].kind, "Cluster");
    }
}
