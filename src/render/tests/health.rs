//! Health rules at render time: a Kind resource's `readyWhen`/`failedWhen` and
//! `platform.yaml`'s `spec.health`, checked with file and line, and carried on the desired
//! objects with the Kind's rule first.

use super::*;

const RULED_KIND: &str = "\
apiVersion: pontoon.dev/v1alpha1
kind: Kind
metadata: {name: Db}
spec:
  resources:
    - id: cluster
      readyWhen: self.status.phase == 'Cluster in healthy state'
      failedWhen: ${self.status.phase == 'Failed'}
      healthMessage: \"${self.status.phase}\"
      template:
        apiVersion: postgresql.cnpg.io/v1
        kind: Cluster
        metadata: {name: \"${name}\"}
    - id: config
      template:
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: \"${name}-config\"}
";

fn platform_with(health: &str) -> String {
    format!("{PLATFORM}  health:\n{health}")
}

fn objects_of(s: &DesiredState) -> Vec<&DesiredObject> {
    s.units
        .values()
        .filter(|u| u.unit.team.0 == "a" && u.unit.cluster.0 == "prod")
        .flat_map(|u| u.objects.iter())
        .collect()
}

#[test]
fn a_kind_rule_comes_before_the_platform_rule_for_its_kind() {
    let platform = platform_with(
        "    - {group: postgresql.cnpg.io, kind: Cluster, readyWhen: \"false\"}\n    - {kind: ConfigMap, failedWhen: \"self.data.broken == 'yes'\", message: \"broken\"}\n",
    );
    let mut files = repo(&[
        ("kinds/db.yaml", RULED_KIND),
        (
            "teams/a/db.yaml",
            "apiVersion: pontoon.dev/v1alpha1\nkind: Db\nmetadata: {name: ledger}\n",
        ),
        (
            "teams/a/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: plain}\n",
        ),
    ]);
    files.insert("platform.yaml".into(), platform.into_bytes());
    let s = render(&files, "rev");
    assert!(s.diagnostics.is_empty(), "{:?}", s.diagnostics);
    let objects = objects_of(&s);
    let rule_of = |name: &str| {
        objects
            .iter()
            .find(|o| o.object["metadata"]["name"] == name)
            .and_then(|o| o.health.clone())
    };
    let cluster = rule_of("ledger").expect("the kind's rule");
    assert_eq!(
        cluster.ready_when.as_deref(),
        Some("self.status.phase == 'Cluster in healthy state'")
    );
    assert_eq!(cluster.message.as_deref(), Some("${self.status.phase}"));
    assert_eq!(cluster.source.to_string(), "kinds/db.yaml:6");
    // The kind's resource without a rule, and a plain manifest, get the platform's.
    for name in ["ledger-config", "plain"] {
        let rule = rule_of(name).expect("the platform's rule");
        assert_eq!(rule.message.as_deref(), Some("broken"), "{name}");
        assert_eq!(rule.source.file, "platform.yaml");
    }
    // Objects of kinds nobody gave a rule carry none.
    assert!(
        objects
            .iter()
            .filter(|o| o.object["kind"] == "Namespace")
            .all(|o| o.health.is_none())
    );
}

#[test]
fn a_bad_kind_expression_is_an_error_at_its_line() {
    let kind = RULED_KIND
        .replace(
            "readyWhen: self.status.phase == 'Cluster in healthy state'",
            "readyWhen: self.status.phase ==",
        )
        .replace(
            "healthMessage: \"${self.status.phase}\"",
            "healthMessage: \"${self.(}\"",
        );
    let (_, d) = diags(&[("kinds/db.yaml", &kind)]);
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(
        d[0].starts_with("kinds/db.yaml:7:7: error[invalid-health]: kind Db, resource cluster: readyWhen: cannot parse `self.status.phase ==`"),
        "{d:?}"
    );
    assert!(
        d[1].starts_with("kinds/db.yaml:9:7: error[invalid-health]: kind Db, resource cluster: healthMessage: cannot parse `self.(`"),
        "{d:?}"
    );
    let lonely = RULED_KIND
        .replace(
            "      readyWhen: self.status.phase == 'Cluster in healthy state'\n",
            "",
        )
        .replace("      failedWhen: ${self.status.phase == 'Failed'}\n", "");
    let (_, d) = diags(&[("kinds/db.yaml", &lonely)]);
    assert_eq!(
        d,
        [
            "kinds/db.yaml:7:7: error[invalid-health]: kind Db, resource cluster: healthMessage without readyWhen or failedWhen"
        ]
    );
}

#[test]
fn a_bad_platform_rule_stops_the_render_at_its_line() {
    let cases = [
        (
            "    - {kind: Widget, readyWhen: \"self.status.(\"}\n",
            "platform.yaml:12:22: error[invalid-health]: health rule for Widget: readyWhen: cannot parse `self.status.(`",
        ),
        (
            "    - {group: example.com, kind: Widget, message: hi}\n",
            "platform.yaml:12:7: error[invalid-health]: health rule for Widget.example.com: a health rule needs readyWhen, failedWhen or both",
        ),
        (
            "    - {kind: Widget, readyWhen: \"true\"}\n    - {kind: Widget, failedWhen: \"false\"}\n",
            "platform.yaml:13:8: error[invalid-health]: health rule for Widget: Widget already has one, at line 12",
        ),
    ];
    for (rules, want) in cases {
        let mut files = repo(&[]);
        files.insert("platform.yaml".into(), platform_with(rules).into_bytes());
        let s = render(&files, "rev");
        assert!(s.platform_failed, "{rules}");
        let d: Vec<String> = s.diagnostics.iter().map(|d| d.to_string()).collect();
        assert!(d.iter().any(|l| l.starts_with(want)), "{rules}: {d:?}");
    }
}
