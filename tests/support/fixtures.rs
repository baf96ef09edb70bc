//! Small builders for desired states, so tests say what they mean instead of pasting YAML.

use pontoon::desired::*;
use serde_json::{Value, json};

pub fn unit(team: &str, cluster: &str) -> UnitId {
    UnitId {
        team: TeamName(team.into()),
        cluster: ClusterName(cluster.into()),
    }
}

/// Adds pontoon's labels and source annotation to a manifest and wraps it as a desired
/// object, as the renderer does: the base comes from the team's team.yaml, the rest from
/// its files.
pub fn obj(team: &str, applier: Applier, mut manifest: Value) -> DesiredObject {
    let file = match applier {
        Applier::Platform => format!("teams/{team}/team.yaml"),
        Applier::Team => format!("teams/{team}/app.yaml"),
    };
    let source = SourceRef { file, line: 1 };
    let meta = manifest["metadata"].as_object_mut().expect("metadata");
    let labels = meta.entry("labels").or_insert_with(|| json!({}));
    labels[LABEL_MANAGED_BY] = json!(MANAGED_BY_VALUE);
    labels[LABEL_TEAM] = json!(team);
    let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
    annotations[ANNOTATION_SOURCE] = json!(source.to_string());
    DesiredObject {
        object: std::sync::Arc::new(manifest.into()),
        source,
        applier,
        drift: DriftMode::Correct,
        ignore_fields: Vec::new(),
        health: None,
    }
}

pub fn configmap(team: &str, ns: &str, name: &str, data: Value) -> DesiredObject {
    obj(
        team,
        Applier::Team,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}, "data": data}),
    )
}

pub fn deployment(team: &str, ns: &str, name: &str, image: &str, replicas: i64) -> DesiredObject {
    obj(
        team,
        Applier::Team,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "app", "image": image}]}
                }
            }
        }),
    )
}

/// The team base the renderer produces, reduced to what sync tests need: the namespace and
/// the RBAC that lets the team's impersonated identity manage objects in it.
pub fn team_base(team: &str, namespaces: &[&str]) -> Vec<DesiredObject> {
    let mut out = Vec::new();
    for ns in namespaces {
        out.push(obj(
            team,
            Applier::Platform,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        ));
        out.push(obj(
            team,
            Applier::Platform,
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "pontoon-team", "namespace": ns},
                "rules": [{"apiGroups": ["", "apps", "batch", "example.pontoon.dev"], "resources": ["*"], "verbs": ["*"]}]
            }),
        ));
        out.push(obj(
            team,
            Applier::Platform,
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "pontoon-team", "namespace": ns},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pontoon-team"},
                "subjects": [team_subject(&TeamName(team.into()))]
            }),
        ));
    }
    out
}

pub fn unit_desired(
    team: &str,
    cluster: &str,
    namespaces: &[&str],
    mut objects: Vec<DesiredObject>,
) -> UnitDesired {
    objects.sort_by_key(|o| o.key());
    UnitDesired {
        unit: unit(team, cluster),
        namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
        objects,
        prune: PrunePolicy::default(),
        adopt: Vec::new(),
        dependencies: Default::default(),
        components: Default::default(),
    }
}
