//! Plain manifests in a team's folder, applied as written within the team's boundary:
//! only the kinds the platform lets teams write by hand; every team object (manifest or
//! rendered from a kind) placed in a namespace the team owns, never cluster-scoped, never
//! in another team's namespace; and the labels and annotation every object carries.

use std::sync::Arc;

use serde_json::{Value, json};

use super::policy_check::Origin;
use super::team::TeamRender;
use crate::desired::{
    ANNOTATION_SOURCE, Applier, DesiredObject, Diagnostic, LABEL_MANAGED_BY, LABEL_TEAM,
    MANAGED_BY_VALUE, Manifest, SourceRef, TeamName,
};
use crate::model::{Document, GroupKind};

/// Kinds that are cluster-scoped in Kubernetes; a team may never produce them.
const CLUSTER_SCOPED: &[(&str, &str)] = &[
    ("", "Namespace"),
    ("", "Node"),
    ("", "PersistentVolume"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("storage.k8s.io", "StorageClass"),
    ("scheduling.k8s.io", "PriorityClass"),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
    ),
];

pub(super) fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

pub(super) fn is_cluster_scoped(group: &str, kind: &str) -> bool {
    CLUSTER_SCOPED
        .iter()
        .any(|(g, k)| *g == group && *k == kind)
}

impl TeamRender<'_> {
    /// Adds one plain manifest to every cluster of the team, if the platform lets teams
    /// write its kind by hand.
    pub(super) fn add_manifest(
        &mut self,
        path: &str,
        doc: &Document,
        api_version: &str,
        kind: &str,
    ) {
        let group_kind = GroupKind {
            group: group_of(api_version).to_owned(),
            kind: kind.to_owned(),
        };
        if !self.allowed_kinds.contains(&group_kind) {
            let allowed: Vec<String> = self
                .allowed_kinds
                .iter()
                .map(|g| {
                    if g.group.is_empty() {
                        g.kind.clone()
                    } else {
                        format!("{}.{}", g.kind, g.group)
                    }
                })
                .collect();
            self.errors.push(doc.diag_at(
                "kind",
                Some(self.team_name),
                "kind-not-allowed",
                format!(
                    "teams may not write {kind} ({api_version}) by hand; the platform allows: {}",
                    if allowed.is_empty() {
                        "nothing".to_owned()
                    } else {
                        allowed.join(", ")
                    }
                ),
            ));
            return;
        }
        let mut object = doc.value.clone();
        super::secrets::string_data_into_data(&mut object);
        let default_namespace = self.default_namespace.clone();
        if !self.place_in_team_namespace(&mut object, &default_namespace, doc) {
            return;
        }
        let source = SourceRef {
            file: path.to_string(),
            line: doc.line,
        };
        stamp(&mut object, self.team_name, &source);
        let health = self.revision.health.for_object(&object);
        for c in self.clusters.clone() {
            self.check_policies(&object, c, Origin::Manifest(doc));
        }
        // One manifest, shared by every cluster it goes to.
        let object = Arc::new(Manifest::from(object));
        for c in &self.clusters {
            self.objects_by_cluster
                .entry(c.name.clone())
                .or_default()
                .push(DesiredObject {
                    object: object.clone(),
                    source: source.clone(),
                    applier: Applier::Team,
                    drift: self.team_drift,
                    ignore_fields: Vec::new(),
                    health: health.clone(),
                });
        }
    }

    /// Puts a team object in a namespace the team owns: fills `default_namespace` when it
    /// names none, refuses other teams' namespaces and cluster-scoped kinds. Records the
    /// object's group and kind for the team's Role; `false` (with the reason recorded)
    /// when the object cannot be placed.
    pub(super) fn place_in_team_namespace(
        &mut self,
        object: &mut Value,
        default_namespace: &str,
        doc: &Document,
    ) -> bool {
        match self.try_place(object, default_namespace, doc) {
            Ok(group_kind) => {
                self.kinds_used.insert(group_kind);
                true
            }
            Err(problem) => {
                self.errors.push(*problem);
                false
            }
        }
    }

    /// Places the object; its group and kind, or why it cannot be placed.
    fn try_place(
        &self,
        object: &mut Value,
        default_namespace: &str,
        doc: &Document,
    ) -> Result<(String, String), Box<Diagnostic>> {
        let team_name = Some(self.team_name);
        let field = |name: &str| {
            object
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let (api_version, kind) = (field("apiVersion"), field("kind"));
        if is_cluster_scoped(group_of(&api_version), &kind) {
            return Err(Box::new(doc.diag_at(
                "kind",
                team_name,
                "cluster-scoped",
                format!("{kind} is cluster-scoped; teams produce only namespaced objects"),
            )));
        }
        let Some(obj) = object.as_object_mut() else {
            return Err(Box::new(doc.diag_at(
                "",
                team_name,
                "schema",
                "a document must be a mapping",
            )));
        };
        let meta = obj.entry("metadata").or_insert_with(|| json!({}));
        let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            return Err(Box::new(doc.diag_at(
                "metadata.name",
                team_name,
                "schema",
                format!("{kind} has no metadata.name"),
            )));
        }
        if let Some(why) = path_segment_problem(name) {
            return Err(Box::new(doc.diag_at(
                "metadata.name",
                team_name,
                "schema",
                format!("{kind} name {name:?} {why}"),
            )));
        }
        let ns = match meta.get("namespace").and_then(Value::as_str) {
            Some(ns) => ns.to_owned(),
            None => {
                if let Some(m) = meta.as_object_mut() {
                    m.insert("namespace".to_owned(), json!(default_namespace));
                }
                default_namespace.to_owned()
            }
        };
        match self.revision.namespace_owners.get(&ns) {
            Some(owner) if owner == self.team_name => Ok((group_of(&api_version).to_owned(), kind)),
            Some(owner) => Err(Box::new(doc.diag_at(
                "metadata.namespace",
                team_name,
                "namespace-not-owned",
                format!("{kind} in namespace {ns}, which belongs to team {owner}"),
            ))),
            None => Err(Box::new(doc.diag_at(
                "metadata.namespace",
                team_name,
                "namespace-not-owned",
                format!("{kind} in namespace {ns}, which is not one of the team's namespaces"),
            ))),
        }
    }
}

/// Why `name` cannot name any Kubernetes object (it becomes a segment of the request's
/// URL): the rule every kind shares, before each kind's own (which the API server checks).
fn path_segment_problem(name: &str) -> Option<&'static str> {
    if name == "." || name == ".." {
        Some("is not allowed")
    } else if name.contains('/') || name.contains('%') {
        Some("may not contain '/' or '%'")
    } else if name.len() > 253 {
        Some("is longer than 253 characters")
    } else {
        None
    }
}

/// The labels and annotation every rendered object carries: pontoon manages it, the team
/// owns it, and the file and line it came from. `labels: null` or `annotations: null`
/// mean none, as they do to Kubernetes, and are stamped like a missing field.
pub(super) fn stamp(object: &mut Value, team: &TeamName, source: &SourceRef) {
    let Some(obj) = object.as_object_mut() else {
        return;
    };
    let meta = obj.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    if let Some(labels) = map_at(meta, "labels") {
        labels.insert(LABEL_MANAGED_BY.to_owned(), json!(MANAGED_BY_VALUE));
        labels.insert(LABEL_TEAM.to_owned(), json!(team.0));
    }
    if let Some(a) = map_at(meta, "annotations") {
        a.insert(ANNOTATION_SOURCE.to_owned(), json!(source.to_string()));
    }
}

/// The mapping at `meta[field]`, made empty first when it is missing or null.
fn map_at<'v>(meta: &'v mut Value, field: &str) -> Option<&'v mut serde_json::Map<String, Value>> {
    let value = meta.as_object_mut()?.entry(field).or_insert(Value::Null);
    if value.is_null() {
        *value = json!({});
    }
    value.as_object_mut()
}
