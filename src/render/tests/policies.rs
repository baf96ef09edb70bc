//! Platform policies: each rule shape denies or warns on Kind instances, on their
//! per-cluster overrides and on plain manifests, with the diagnostic at the line that
//! wrote the offending value; exceptions, their expiry, and broken rules.

use super::*;

/// The test platform with Deployments allowed by hand and `rules` as its
/// `spec.policies` (and whatever else `rules` adds to `spec`).
fn platform_with(rules: &str) -> String {
    format!(
        "{PLATFORM}      - {{group: apps, kind: Deployment}}\n{rules}",
        PLATFORM = PLATFORM
    )
}

const REPLICAS_IN_PROD: &str = r#"  policies:
    - id: replicas-in-prod
      match:
        kinds: [{group: apps, kind: Deployment}]
        clusters: {matchLabels: {env: prod}}
      expression: object.spec.replicas >= 2
      message: "${object.metadata.name} runs ${object.spec.replicas} replica(s); prod needs 2"
"#;

const REGISTRY: &str = r#"  policies:
    - id: registry
      match:
        kinds: [{group: apps, kind: Deployment}]
      expression: "object.spec.template.spec.containers.all(c, c.image.startsWith('registry.acme.dev/'))"
      fieldPath: spec.template.spec.containers[*].image
      message: images come from registry.acme.dev
"#;

const COST_CENTER_WARN: &str = r#"  policies:
    - id: cost-center
      action: warn
      match:
        kinds: [{kind: ConfigMap}]
      expression: "has(object.metadata.labels) && 'cost-center' in object.metadata.labels"
      message: every ConfigMap names its cost-center
"#;

fn with_platform(platform: &str, extra: &[(&str, &str)]) -> Files {
    let mut f = repo(extra);
    f.insert("platform.yaml".into(), platform.as_bytes().to_vec());
    f
}

fn lines(s: &DesiredState) -> Vec<String> {
    s.diagnostics.iter().map(|d| d.to_string()).collect()
}

fn units_of(s: &DesiredState, team: &str) -> Vec<String> {
    s.units
        .keys()
        .filter(|id| id.team.0 == team)
        .map(|id| id.cluster.0.clone())
        .collect()
}

const WEB_OVERRIDE: &str = "\
apiVersion: pontoon.dev/v1alpha1
kind: App
metadata: {name: web}
spec:
  image: registry.acme.dev/web:1
  replicas: 3
overrides:
  prod:
    replicas: 1
";

#[test]
fn a_deny_on_an_override_points_at_it_and_stops_that_cluster_alone() {
    let s = render(
        &with_platform(
            &platform_with(REPLICAS_IN_PROD),
            &[("teams/a/web.yaml", WEB_OVERRIDE)],
        ),
        "r",
    );
    assert_eq!(
        lines(&s),
        [
            "teams/a/web.yaml:9:5: error[policy/replicas-in-prod]: team a: policy replicas-in-prod on prod: Deployment a/web: web runs 1 replica(s); prod needs 2"
        ]
    );
    assert_eq!(units_of(&s, "a"), ["staging"]);
    assert_eq!(units_of(&s, "b"), ["prod", "staging"]);
    assert!(s.failed_teams.contains_key(&TeamName("a".into())));
    assert_eq!(
        s.failed_team_clusters[&TeamName("a".into())],
        [ClusterName("prod".into())]
    );
    assert_eq!(s.policy_debt["replicas-in-prod"].denied, 1);
}

#[test]
fn a_deny_on_an_instances_spec_points_at_its_field() {
    let web = "apiVersion: pontoon.dev/v1alpha1\nkind: App\nmetadata: {name: web}\nspec:\n  image: registry.acme.dev/web:1\n  replicas: 1\n";
    let s = render(
        &with_platform(
            &platform_with(REPLICAS_IN_PROD),
            &[("teams/a/web.yaml", web)],
        ),
        "r",
    );
    assert_eq!(lines(&s).len(), 1, "{:?}", lines(&s));
    assert!(
        lines(&s)[0].starts_with("teams/a/web.yaml:6:3: error[policy/replicas-in-prod]"),
        "{:?}",
        lines(&s)
    );
    // A default the kind fills (replicas: 1) is the instance's doing: its spec.
    let web = "apiVersion: pontoon.dev/v1alpha1\nkind: App\nmetadata: {name: web}\nspec:\n  image: registry.acme.dev/web:1\n";
    let s = render(
        &with_platform(
            &platform_with(REPLICAS_IN_PROD),
            &[("teams/a/web.yaml", web)],
        ),
        "r",
    );
    assert!(
        lines(&s)[0].starts_with("teams/a/web.yaml:4:1: error[policy/replicas-in-prod]"),
        "{:?}",
        lines(&s)
    );
}

#[test]
fn a_deny_on_a_plain_manifest_points_at_the_offending_list_item() {
    let deploy = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  replicas: 2
  template:
    spec:
      containers:
        - name: app
          image: registry.acme.dev/api:1
        - name: sidecar
          image: images.elsewhere.example/envoy:1
";
    let s = render(
        &with_platform(&platform_with(REGISTRY), &[("teams/a/api.yaml", deploy)]),
        "r",
    );
    assert_eq!(
        lines(&s),
        [
            "teams/a/api.yaml:12:11: error[policy/registry]: team a: policy registry on prod: Deployment a/api: images come from registry.acme.dev",
            "teams/a/api.yaml:12:11: error[policy/registry]: team a: policy registry on staging: Deployment a/api: images come from registry.acme.dev",
        ]
    );
    assert!(units_of(&s, "a").is_empty());
    assert_eq!(units_of(&s, "b"), ["prod", "staging"]);
}

#[test]
fn a_deny_on_an_instance_points_at_the_field_its_template_reads() {
    let web = "apiVersion: pontoon.dev/v1alpha1\nkind: App\nmetadata: {name: web}\nspec:\n  replicas: 2\n  image: images.elsewhere.example/web:1\n";
    let s = render(
        &with_platform(&platform_with(REGISTRY), &[("teams/a/web.yaml", web)]),
        "r",
    );
    assert!(
        lines(&s)
            .iter()
            .all(|l| l.starts_with("teams/a/web.yaml:6:3: error[policy/registry]")),
        "{:?}",
        lines(&s)
    );
}

#[test]
fn a_warning_fails_nothing_and_points_at_the_manifests_field() {
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  labels: {app: web}\ndata: {a: b}\n";
    let s = render(
        &with_platform(&platform_with(COST_CENTER_WARN), &[("teams/a/cm.yaml", cm)]),
        "r",
    );
    assert_eq!(
        lines(&s),
        [
            "teams/a/cm.yaml:5:3: warning[policy/cost-center]: team a: policy cost-center on prod: ConfigMap a/settings: every ConfigMap names its cost-center",
            "teams/a/cm.yaml:5:3: warning[policy/cost-center]: team a: policy cost-center on staging: ConfigMap a/settings: every ConfigMap names its cost-center",
        ]
    );
    assert_eq!(units_of(&s, "a"), ["prod", "staging"]);
    assert!(s.failed_teams.is_empty());
    assert_eq!(s.policy_debt["cost-center"].warned, 2);
}

#[test]
fn an_exception_lets_its_team_through_until_it_expires() {
    let exception = |expires: &str| {
        format!(
            "{REPLICAS_IN_PROD}  policyExceptions:\n    - {{policy: replicas-in-prod, team: a, reason: load test, expires: \"{expires}\"}}\n"
        )
    };
    let files = with_platform(
        &platform_with(&exception("2026-06-30")),
        &[("teams/a/web.yaml", WEB_OVERRIDE)],
    );
    let day = |d: &str| Some(d.parse::<jiff::civil::Date>().expect("date"));
    let on = |d| render_revision(&files, &[], "r", &NamespaceOwners::new(), d);
    // The last day still holds.
    let s = on(day("2026-06-30"));
    assert!(lines(&s).is_empty(), "{:?}", lines(&s));
    assert_eq!(units_of(&s, "a"), ["prod", "staging"]);
    assert_eq!(s.policy_debt["replicas-in-prod"].exempted, 1);
    // The day after, the same files deny.
    let s = on(day("2026-07-01"));
    assert_eq!(
        lines(&s),
        [
            "platform.yaml:20:62: warning[policy-exception-expired]: the exception of team a from policy replicas-in-prod expired on 2026-06-30: the rule holds for it again",
            "teams/a/web.yaml:9:5: error[policy/replicas-in-prod]: team a: policy replicas-in-prod on prod: Deployment a/web: web runs 1 replica(s); prod needs 2",
        ]
    );
    assert_eq!(units_of(&s, "a"), ["staging"]);
    // Without a day (a render on its own), expiries are not checked.
    assert_eq!(units_of(&on(None), "a"), ["prod", "staging"]);
}

#[test]
fn an_instance_exception_exempts_that_instance_alone() {
    let rules = format!(
        "{REPLICAS_IN_PROD}  policyExceptions:\n    - {{policy: replicas-in-prod, team: a, instance: web, reason: canary}}\n"
    );
    let other = WEB_OVERRIDE.replace("name: web", "name: api");
    let s = render(
        &with_platform(
            &platform_with(&rules),
            &[
                ("teams/a/web.yaml", WEB_OVERRIDE),
                ("teams/a/api.yaml", &other),
            ],
        ),
        "r",
    );
    assert_eq!(lines(&s).len(), 1, "{:?}", lines(&s));
    assert!(lines(&s)[0].contains("Deployment a/api"), "{:?}", lines(&s));
}

#[test]
fn broken_rules_and_exceptions_stop_the_platform_with_their_line() {
    let rules = r#"  policies:
    - id: bad
      expression: object.spec.replicas >=
      message: m
  policyExceptions:
    - {policy: badd, team: a, reason: ''}
"#;
    let s = render(&with_platform(&platform_with(rules), &[]), "r");
    assert!(s.platform_failed);
    let l = lines(&s);
    assert!(
        l[0].starts_with("platform.yaml:14:7: error[schema]: policy bad: cannot parse"),
        "{l:?}"
    );
    assert_eq!(
        &l[1..],
        [
            "platform.yaml:17:8: error[unknown-policy]: exception for policy badd, which spec.policies does not define (did you mean bad?)",
            "platform.yaml:17:31: error[schema]: an exception needs a reason",
        ]
    );
}

#[test]
fn a_rule_id_twice_a_bad_id_and_a_bad_expiry_are_refused() {
    let rules = r#"  policies:
    - {id: same, expression: "true", message: m}
    - {id: same, expression: "true", message: m}
    - {id: Not_An_Id, expression: "true", message: m}
  policyExceptions:
    - {policy: same, team: a, reason: r, expires: next week}
"#;
    let s = render(&with_platform(&platform_with(rules), &[]), "r");
    assert!(s.platform_failed);
    assert_eq!(
        lines(&s),
        [
            "platform.yaml:14:8: error[schema]: policy same is defined twice",
            "platform.yaml:15:8: error[schema]: \"Not_An_Id\" is not a valid policy id (lower case, digits, -)",
            "platform.yaml:17:42: error[schema]: expires must be a date such as 2026-12-31, not \"next week\"",
        ]
    );
}

#[test]
fn a_rule_that_cannot_decide_is_broken_with_the_reason() {
    let rules = r#"  policies:
    - id: limits
      match: {kinds: [{group: apps, kind: Deployment}]}
      expression: object.spec.template.spec.containers.all(c, c.resources.limits.memory != '')
      message: containers set a memory limit
"#;
    let web = "apiVersion: pontoon.dev/v1alpha1\nkind: App\nmetadata: {name: web}\nspec: {image: 'registry.acme.dev/w:1', replicas: 2}\n";
    let s = render(
        &with_platform(&platform_with(rules), &[("teams/a/web.yaml", web)]),
        "r",
    );
    let l = lines(&s);
    assert_eq!(l.len(), 2, "{l:?}");
    assert!(
        l[0].contains("containers set a memory limit (the rule cannot decide: "),
        "{l:?}"
    );
}

#[test]
fn the_first_path_an_expression_reads_is_where_it_points() {
    use super::super::policies::first_object_path;
    for (expr, path) in [
        ("object.spec.replicas >= 2", Some("spec.replicas")),
        (
            "object.spec.template.spec.containers.all(c, has(c.resources))",
            Some("spec.template.spec.containers"),
        ),
        ("'x' in object.metadata.labels", Some("metadata.labels")),
        (
            "team == 'edge' || object.spec.type != 'LoadBalancer'",
            Some("spec.type"),
        ),
        ("myobject.a == 1", None),
    ] {
        assert_eq!(first_object_path(expr).as_deref(), path, "{expr}");
    }
}
