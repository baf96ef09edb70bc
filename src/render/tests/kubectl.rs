//! Manifests mean to pontoon what they mean to kubectl (YAML 1.1 integers, JSON files,
//! `kind: List`, `labels: null`), owners are ordinary users, and an entry the source did
//! not read fails what it belongs to.

use serde_json::json;

use super::*;
use crate::model::{SkipReason, Skipped};

fn unit<'s>(s: &'s DesiredState, team: &str, cluster: &str) -> &'s UnitDesired {
    &s.units[&UnitId {
        team: TeamName(team.into()),
        cluster: ClusterName(cluster.into()),
    }]
}

fn object<'s>(s: &'s DesiredState, team: &str, kind: &str, name: &str) -> &'s serde_json::Value {
    &unit(s, team, "prod")
        .objects
        .iter()
        .find(|o| o.object["kind"] == kind && o.object["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {name} rendered"))
        .object
}

#[test]
fn plain_octal_and_hex_integers_are_read_as_kubectl_reads_them() {
    let (s, d) = diags(&[(
        "teams/a/x.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\nbinaryData: {}\nimmutable: false\ndata: {quoted: '0400'}\n---\napiVersion: pontoon.dev/v1alpha1\nkind: App\nmetadata: {name: web}\nspec: {image: x, replicas: 04}\noverrides:\n  prod: {replicas: 0x5}\n",
    )]);
    assert!(d.is_empty(), "{d:?}");
    assert_eq!(
        object(&s, "a", "ConfigMap", "c")["data"]["quoted"],
        json!("0400")
    );
    assert_eq!(
        object(&s, "a", "Deployment", "web")["spec"]["replicas"],
        json!(5)
    );
    let staging = unit(&s, "a", "staging")
        .objects
        .iter()
        .find(|o| o.object["kind"] == "Deployment")
        .expect("deployment");
    assert_eq!(staging.object["spec"]["replicas"], json!(4));
}

#[test]
fn json_files_in_a_team_folder_are_manifests_with_lines() {
    let (s, d) = diags(&[(
        "teams/a/c.json",
        "{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"ConfigMap\",\n  \"metadata\": {\"name\": \"from-json\"},\n  \"data\": {\"a\": \"b\"}\n}\n",
    )]);
    assert!(d.is_empty(), "{d:?}");
    let cm = object(&s, "a", "ConfigMap", "from-json");
    assert_eq!(cm["data"]["a"], json!("b"));
    assert_eq!(
        cm["metadata"]["annotations"][ANNOTATION_SOURCE],
        json!("teams/a/c.json:1")
    );

    let (_, d) = diags(&[(
        "teams/a/c.json",
        "{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"Secret\",\n  \"metadata\": {\"name\": \"s\"}\n}\n",
    )]);
    assert!(
        d.iter()
            .any(|l| l.starts_with("teams/a/c.json:3:3: error[kind-not-allowed]: team a:")),
        "{d:#?}"
    );
    let (_, d) = diags(&[(
        "teams/a/c.json",
        "{\n  \"kind\": \"ConfigMap\",\n  \"x\": 0400\n}\n",
    )]);
    assert!(
        d.iter()
            .any(|l| l.starts_with("teams/a/c.json:3:9: error[parse]: team a:")),
        "JSON is read as JSON: {d:#?}"
    );
}

#[test]
fn a_list_is_expanded_into_items_each_checked_and_located() {
    let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: one}\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: two, labels: {app: x}}\n";
    let (s, d) = diags(&[("teams/a/list.yaml", list)]);
    assert!(d.is_empty(), "{d:?}");
    let two = object(&s, "a", "ConfigMap", "two");
    assert_eq!(
        two["metadata"]["annotations"][ANNOTATION_SOURCE],
        json!("teams/a/list.yaml:7")
    );
    assert_eq!(two["metadata"]["labels"]["app"], json!("x"));
    assert_eq!(two["metadata"]["labels"][LABEL_TEAM], json!("a"));
    assert_eq!(
        object(&s, "a", "ConfigMap", "one")["metadata"]["namespace"],
        json!("a")
    );

    let bad = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: ok}\n- apiVersion: v1\n  kind: Secret\n  metadata: {name: s}\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: c, namespace: b}\n- {kind: ConfigMap}\n";
    let (_, d) = diags(&[("teams/a/list.yaml", bad)]);
    for want in [
        "teams/a/list.yaml:8:3: error[kind-not-allowed]: team a: items[1]: teams may not write Secret",
        "teams/a/list.yaml:12:23: error[namespace-not-owned]: team a: items[2]: ConfigMap in namespace b, which belongs to team b",
        "teams/a/list.yaml:13:3: error[schema]: team a: items[3]: every document needs apiVersion and kind",
    ] {
        assert!(
            d.iter().any(|l| l.starts_with(want)),
            "want {want:?} in {d:#?}"
        );
    }
}

#[test]
fn null_labels_and_annotations_are_stamped_like_missing_ones() {
    let (s, d) = diags(&[(
        "teams/a/x.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, labels: null, annotations: null}\n",
    )]);
    assert!(d.is_empty(), "{d:?}");
    let meta = &object(&s, "a", "ConfigMap", "c")["metadata"];
    assert_eq!(meta["labels"][LABEL_MANAGED_BY], json!(MANAGED_BY_VALUE));
    assert_eq!(meta["labels"][LABEL_TEAM], json!("a"));
    assert_eq!(
        meta["annotations"][ANNOTATION_SOURCE],
        json!("teams/a/x.yaml:1")
    );
}

#[test]
fn system_owners_are_refused_at_their_line() {
    for owner in [
        "system:anonymous",
        "system:authenticated",
        "system:serviceaccounts",
        "system:serviceaccount:kube-system:default",
    ] {
        let yaml = format!("{}  owners: [alice, \"{owner}\"]\n", team("c", "c"));
        let (s, d) = diags(&[("teams/c/team.yaml", &yaml)]);
        assert!(
            d.iter().any(|l| l.starts_with(&format!(
                "teams/c/team.yaml:7:19: error[owner-reserved]: team c: owner \"{owner}\""
            ))),
            "{d:#?}"
        );
        assert!(s.failed_teams.contains_key(&TeamName("c".into())));
    }
}

/// Renders the good repo plus `extra`, with `skipped` as the entries the source did not read.
fn with_skipped(
    extra: &[(&str, &str)],
    skipped: &[(&str, SkipReason)],
) -> (DesiredState, Vec<String>) {
    let skipped: Vec<Skipped> = skipped
        .iter()
        .map(|(p, r)| Skipped::new(*p, r.clone()))
        .collect();
    let s = render_revision(&repo(extra), &skipped, "rev", &NamespaceOwners::new(), None);
    let d = s.diagnostics.iter().map(|d| d.to_string()).collect();
    (s, d)
}

#[test]
fn a_skipped_file_in_a_team_folder_fails_that_team_alone() {
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n";
    let (s, d) = with_skipped(
        &[("teams/a/x.yaml", cm)],
        &[("teams/a/app.yaml", SkipReason::Symlink)],
    );
    assert!(
        d.iter().any(|l| l.starts_with("teams/a/app.yaml:1:1: error[skipped-file]: team a: teams/a/app.yaml is not read (symlink, not followed)")),
        "{d:#?}"
    );
    assert!(s.failed_teams.contains_key(&TeamName("a".into())));
    assert!(
        !s.units.keys().any(|u| u.team.0 == "a"),
        "team a renders nothing, so prunes nothing"
    );
    assert!(s.units.keys().any(|u| u.team.0 == "b"), "team b goes on");

    // A team folder that is a symlink or a submodule fails as a team of its own.
    let (s, d) = with_skipped(&[], &[("teams/c", SkipReason::Submodule)]);
    assert!(
        d.iter().any(|l| l.contains("error[skipped-file]: team c:")),
        "{d:#?}"
    );
    assert!(s.failed_teams.contains_key(&TeamName("c".into())));
}

#[test]
fn a_skipped_platform_kind_or_other_file_fails_what_it_belongs_to() {
    let (s, d) = with_skipped(&[], &[("teams", SkipReason::Symlink)]);
    assert!(s.platform_failed, "{d:#?}");
    assert!(s.units.is_empty());

    let app =
        "apiVersion: pontoon.dev/v1alpha1\nkind: App\nmetadata: {name: web}\nspec: {image: x}\n";
    let mut files = repo(&[("teams/a/x.yaml", app)]);
    files.remove("kinds/app.yaml");
    let skipped = [Skipped::new(
        "kinds/app.yaml",
        SkipReason::Unreadable("permission denied".into()),
    )];
    let s = render_revision(&files, &skipped, "rev", &NamespaceOwners::new(), None);
    let d: Vec<String> = s.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        d.iter()
            .any(|l| l.starts_with("kinds/app.yaml:1:1: error[skipped-file]:")),
        "{d:#?}"
    );
    assert!(
        d.iter()
            .any(|l| l.contains("error[broken-kind]: team a: kind App is broken")),
        "{d:#?}"
    );
    assert!(
        s.units.keys().any(|u| u.team.0 == "b"),
        "teams that do not use it go on"
    );

    let (s, d) = with_skipped(&[], &[("docs/guide.md", SkipReason::Symlink)]);
    assert_eq!(s.units.len(), 4, "{d:#?}");
    assert!(
        d.iter()
            .any(|l| l.starts_with("docs/guide.md:1:1: warning[skipped-file]:")),
        "{d:#?}"
    );
}
