//! An instance of a platform kind, in a team's folder: its per-cluster overrides merged
//! over its spec, the spec validated against the kind's parameters (defaults filled), and
//! the kind's resource templates rendered with CEL ([`super::expr`]) once per cluster the
//! instance goes to, and the kind's chart read from its expansion ([`super::kind_charts`]).
//! What comes out is placed and stamped like any team object.

use std::sync::Arc;

use serde_json::{Value, json};

use super::dependencies::instance_name;
use super::manifests::stamp;
use super::policy_check::Origin;
use super::team::TeamRender;
use super::teams::select_clusters;
use super::{expr, schema};
use crate::desired::{Applier, DesiredObject, DriftMode, ObjectKey, Severity, SourceRef, TeamName};
use crate::model::{self, ClusterDef, Document, Instance, diag};

/// One instance document being rendered: where it is, the kind it names and that
/// kind's definition, and what holds for its objects on every cluster.
pub(super) struct InstanceDoc<'d> {
    pub path: &'d str,
    pub doc: &'d Document,
    pub kind: &'d str,
    pub definition: &'d model::Kind,
    pub instance: Instance,
    /// The namespace its objects go to unless a template names one.
    pub namespace: String,
    pub drift: DriftMode,
    pub ignore_fields: Vec<String>,
}

impl TeamRender<'_> {
    /// Renders one instance document (of platform kind `kind`) on every cluster it goes to.
    pub(super) fn add_instance(&mut self, path: &str, doc: &Document, kind: &str) {
        let kinds = self.revision.kinds;
        let definition = match kinds.definition_for(kind, path, doc, self.team_name) {
            Ok(k) => k,
            Err(d) => {
                self.errors.push(*d);
                return;
            }
        };
        let instance = match model::typed::<Instance>(doc, Some(self.team_name)) {
            Ok(i) => i,
            Err(d) => {
                self.errors.push(*d);
                return;
            }
        };
        let instance_clusters = match &instance.clusters {
            Some(selector) => select_clusters(self.revision.platform, selector),
            None => self.clusters.clone(),
        };
        self.check_override_clusters(&instance, doc);
        let name = instance_name(kind, &instance.metadata.name);
        self.dependencies.instance(&name, doc, &instance.depends_on);
        let instance_doc = InstanceDoc {
            path,
            doc,
            kind,
            definition,
            namespace: instance
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| self.default_namespace.clone()),
            drift: instance
                .drift
                .as_ref()
                .and_then(|d| d.mode)
                .unwrap_or(self.team_drift),
            ignore_fields: instance
                .drift
                .as_ref()
                .map(|d| d.ignore_fields.clone())
                .unwrap_or_default(),
            instance,
        };
        for cluster in instance_clusters {
            if self.clusters.iter().any(|tc| tc.name == cluster.name) {
                self.dependencies.goes_to(&name, &cluster.name);
                self.add_instance_on(&instance_doc, cluster);
            }
        }
    }

    /// An override for a cluster the team does not target: a warning when the platform
    /// defines the cluster (the team left it, or has not joined yet), else an error.
    fn check_override_clusters(&mut self, instance: &Instance, doc: &Document) {
        let platform_clusters = &self.revision.platform.spec.clusters;
        for cname in instance.overrides.keys() {
            if self.clusters.iter().any(|c| &c.name == cname) {
                continue;
            }
            let field = format!("overrides.{cname}");
            if platform_clusters.iter().any(|c| &c.name == cname) {
                // The override waits harmlessly, and leaving a cluster takes one line,
                // not a sweep.
                let mut w = doc.diag_at(
                    &field,
                    Some(self.team_name),
                    "unused-override",
                    format!(
                        "override for cluster {cname}, which the team does not target; it is ignored"
                    ),
                );
                w.severity = Severity::Warning;
                self.warnings.push(w);
            } else {
                self.errors.push(doc.diag_at(
                    &field,
                    Some(self.team_name),
                    "unknown-cluster",
                    format!(
                        "override for cluster {cname}, which platform.yaml does not define{}",
                        model::did_you_mean(
                            cname,
                            platform_clusters.iter().map(|c| c.name.as_str())
                        )
                    ),
                ));
            }
        }
    }

    /// Renders the kind's resources for one instance on one cluster.
    fn add_instance_on(&mut self, instance_doc: &InstanceDoc, cluster: &ClusterDef) {
        let Some(spec) = self.spec_on(instance_doc, cluster) else {
            return;
        };
        let InstanceDoc {
            path,
            doc,
            kind,
            definition,
            instance,
            ..
        } = instance_doc;
        let team_name = self.team_name;
        let expression_error = |message: String| {
            diag(path, doc.line, 1, Some(team_name), "expression", message)
                .on_cluster(&cluster.name)
        };
        if let Err(why) = super::components::check_requires(
            self.revision.components,
            &definition.spec.requires,
            &cluster.name,
        ) {
            self.errors.push(
                diag(
                    path,
                    doc.line,
                    1,
                    Some(team_name),
                    "unknown-component",
                    format!(
                        "{kind} {} on {}: kind {kind} {why}",
                        instance.metadata.name, cluster.name
                    ),
                )
                .on_cluster(&cluster.name),
            );
            return;
        }
        let scope = expression_scope(&spec, instance, &instance_doc.namespace, team_name, cluster);
        let mut rendered: Vec<(&str, ObjectKey, &[String])> = Vec::new();
        for (index, res) in definition.spec.resources.iter().enumerate() {
            if let Some(condition) = &res.include_when {
                match scope.condition(condition) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        self.errors.push(expression_error(format!(
                            "kind {kind}, resource {} on {}: includeWhen: {e}",
                            res.id, cluster.name
                        )));
                        continue;
                    }
                }
            }
            let mut object = match scope.render(&res.template) {
                Ok(o) => o,
                Err(e) => {
                    self.errors.push(expression_error(format!(
                        "kind {kind}, resource {} on {}: {e}",
                        res.id, cluster.name
                    )));
                    continue;
                }
            };
            let source = SourceRef {
                file: path.to_string(),
                line: doc.line,
            };
            if !self.place_in_team_namespace(&mut object, &instance_doc.namespace, doc) {
                continue;
            }
            stamp(&mut object, team_name, &source);
            let health = self
                .revision
                .kinds
                .health_rule(kind, index)
                .or_else(|| self.revision.health.for_object(&object));
            if let Some(key) = ObjectKey::of(&object) {
                if !definition.spec.requires.is_empty() {
                    self.requires
                        .entry(cluster.name.clone())
                        .or_default()
                        .insert(key.clone(), definition.spec.requires.clone());
                }
                rendered.push((&res.id, key, &res.depends_on));
            }
            let origin = Origin::Instance {
                doc,
                template: &res.template,
                kind,
                name: &instance.metadata.name,
                spec: &spec,
            };
            self.check_policies(&object, cluster, origin);
            self.objects_by_cluster
                .entry(cluster.name.clone())
                .or_default()
                .push(DesiredObject {
                    object: Arc::new(object.into()),
                    source,
                    applier: Applier::Team,
                    drift: instance_doc.drift,
                    ignore_fields: instance_doc.ignore_fields.clone(),
                    health,
                });
        }
        if let Some(chart) = &definition.spec.chart {
            self.add_kind_chart(instance_doc, chart, &scope, &spec, cluster, &mut rendered);
        }
        let name = instance_name(kind, &instance.metadata.name);
        self.dependencies.rendered(&name, &cluster.name, &rendered);
    }

    /// The instance's spec on one cluster: the cluster's override merged over the spec,
    /// validated against the kind's parameters with defaults filled. `None` (with the
    /// problems recorded, each at the value that was checked) when it is invalid.
    fn spec_on(&mut self, instance_doc: &InstanceDoc, cluster: &ClusterDef) -> Option<Value> {
        let InstanceDoc {
            path,
            doc,
            kind,
            definition,
            instance,
            ..
        } = instance_doc;
        let problems = match spec_for(definition, instance, &cluster.name) {
            Ok(valid) => return Some(valid),
            Err(problems) => problems,
        };
        let fields = doc.fields();
        for p in problems {
            // The value checked is the cluster's override where there is one, else the
            // spec's.
            let rest = p.field.strip_prefix("spec").unwrap_or(&p.field);
            let (line, column) = fields
                .find(&format!("overrides.{}{rest}", cluster.name))
                .unwrap_or_else(|| fields.position_of(&p.field));
            self.errors.push(
                diag(
                    path,
                    line,
                    column,
                    Some(self.team_name),
                    "invalid-spec",
                    format!(
                        "{kind} {} on {}: {}",
                        instance.metadata.name, cluster.name, p.message
                    ),
                )
                .on_cluster(&cluster.name),
            );
        }
        None
    }
}

/// An instance's spec on one cluster: the cluster's override merged over its `spec`,
/// validated against the kind's parameters with defaults filled; or every problem.
pub(super) fn spec_for(
    definition: &model::Kind,
    instance: &Instance,
    cluster: &str,
) -> Result<Value, Vec<schema::SpecProblem>> {
    let mut spec = instance.spec.clone();
    if let Some(o) = instance.overrides.get(cluster) {
        merge_override(&mut spec, o);
    }
    schema::validate(&definition.spec.parameters, &spec)
}

/// The variables a kind's expressions see for one instance on one cluster. `namespace`
/// is a reserved word in CEL: expressions read it as `metadata.namespace` (and the name
/// as `name` or `metadata.name`).
pub(super) fn expression_scope(
    spec: &Value,
    instance: &Instance,
    namespace: &str,
    team_name: &TeamName,
    cluster: &ClusterDef,
) -> expr::Scope {
    let cluster_v = json!({"name": cluster.name, "labels": cluster.labels});
    let (name_v, team_v) = (json!(instance.metadata.name), json!(team_name.0));
    let meta_v = json!({"name": instance.metadata.name, "namespace": namespace});
    expr::Scope::new(&[
        ("spec", spec),
        ("name", &name_v),
        ("metadata", &meta_v),
        ("team", &team_v),
        ("cluster", &cluster_v),
    ])
}

/// Deep merge of an override over a spec: objects merge key by key, anything else is
/// replaced.
pub fn merge_override(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge_override(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}
