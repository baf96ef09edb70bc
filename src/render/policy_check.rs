//! The platform's rules ([`super::policies`]) checked on each object a team's files render
//! to, on each cluster, with the diagnostic placed at the SOURCE of the offending value:
//! the plain manifest's field, or, for an object rendered from a Kind, the instance's
//! field the kind's template took it from, its cluster's override when that is what set
//! it. A `deny` withholds the team's unit on that cluster alone; a `warn` is a warning;
//! an exempted violation is only counted as debt.

use serde_json::Value;

use super::policies::{Seg, Subject, Violation, segments};
use super::team::TeamRender;
use crate::desired::{Diagnostic, PolicyDebt, Severity};
use crate::model::{ClusterDef, Document, Fields, PolicyAction};

/// Where a rendered object came from, for placing a diagnostic.
pub(super) enum Origin<'a> {
    /// A plain manifest: the document itself.
    Manifest(&'a Document),
    /// A Kind instance: its document, the resource template the object came from, and
    /// the instance's kind, name and spec on this cluster.
    Instance {
        doc: &'a Document,
        template: &'a Value,
        kind: &'a str,
        name: &'a str,
        spec: &'a Value,
    },
}

impl TeamRender<'_> {
    /// Checks one object on one cluster against every rule that matches it.
    pub(super) fn check_policies(&mut self, object: &Value, cluster: &ClusterDef, origin: Origin) {
        let policies = self.revision.policies;
        if policies.is_empty() {
            return;
        }
        let subject = Subject {
            object,
            team: self.team_name,
            cluster,
            instance: match &origin {
                Origin::Manifest(_) => None,
                Origin::Instance {
                    kind, name, spec, ..
                } => Some((*kind, *name, *spec)),
            },
        };
        for v in policies.check(&subject) {
            let debt = self.policy_debt.entry(v.rule.clone()).or_default();
            if v.exempted {
                debt.exempted += 1;
                continue;
            }
            match v.action {
                PolicyAction::Deny => debt.denied += 1,
                PolicyAction::Warn => debt.warned += 1,
            }
            let d = self.violation_diag(&v, object, cluster, &origin);
            // Repeats (a manifest's warning on each cluster) go when the render sorts
            // and dedups its diagnostics: no search here, which would grow with their
            // square.
            match v.action {
                PolicyAction::Deny => self.denied.push(d),
                PolicyAction::Warn => self.warnings.push(d),
            }
        }
    }

    fn violation_diag(
        &self,
        v: &Violation,
        object: &Value,
        cluster: &ClusterDef,
        origin: &Origin,
    ) -> Diagnostic {
        let what = object_name(object);
        let message = format!(
            "policy {} on {}: {what}: {}",
            v.rule, cluster.name, v.message
        );
        let rule = v.rule_id();
        let path = v.field_path.as_deref().unwrap_or("");
        let mut d = match origin {
            Origin::Manifest(doc) => doc.diag_at(path, Some(self.team_name), &rule, message),
            Origin::Instance { doc, template, .. } => {
                let mut d = doc.diag_at("", Some(self.team_name), &rule, message);
                let (line, column) = instance_source(doc, template, path, &cluster.name);
                (d.line, d.column) = (line, column);
                d
            }
        };
        if v.action == PolicyAction::Warn {
            d.severity = Severity::Warning;
        }
        d.on_cluster(&cluster.name)
    }
}

/// `Deployment shop/web`.
fn object_name(object: &Value) -> String {
    let field = |p: &str| object.pointer(p).and_then(Value::as_str).unwrap_or("");
    let (ns, name) = (field("/metadata/namespace"), field("/metadata/name"));
    let kind = field("/kind");
    if ns.is_empty() {
        format!("{kind} {name}")
    } else {
        format!("{kind} {ns}/{name}")
    }
}

/// Where an instance wrote the value at `path` of an object its kind rendered: the
/// template is followed along the path to the expressions that made the value, and the
/// first `spec.` field they read that the instance sets is the place — in the cluster's
/// override when that sets it, else in `spec`. A value the kind itself fixes, or that a
/// default filled, is placed at the instance's `spec` (or its first line).
fn instance_source(doc: &Document, template: &Value, path: &str, cluster: &str) -> (u64, u64) {
    let mut refs = Vec::new();
    let mut node = Some(template);
    for seg in segments(path) {
        let Some(n) = node else { break };
        if let Value::String(s) = n {
            spec_refs(s, &mut refs);
            node = None;
            break;
        }
        node = match seg {
            Seg::Key(k) => n.get(&k),
            Seg::Index(i) => n.get(i),
            Seg::Any => n.get(0),
        };
    }
    if let Some(n) = node {
        collect_refs(n, &mut refs);
    }
    let fields = doc.fields();
    let in_override = |r: &str| find_prefix(&fields, &format!("overrides.{cluster}.{r}"), 3);
    let in_spec = |r: &str| find_prefix(&fields, &format!("spec.{r}"), 2);
    refs.iter()
        .find_map(|r| in_override(r))
        .or_else(|| refs.iter().find_map(|r| in_spec(r)))
        .unwrap_or_else(|| fields.position_of("spec"))
}

/// The position of `path`, or of its longest parent the document writes, keeping at
/// least `keep` segments (an override of `resources` as a whole sets `resources.limits`).
fn find_prefix(fields: &Fields, path: &str, keep: usize) -> Option<(u64, u64)> {
    let parts: Vec<&str> = path.split('.').collect();
    (keep..=parts.len())
        .rev()
        .find_map(|n| fields.find(&parts[..n].join(".")))
}

fn collect_refs(v: &Value, refs: &mut Vec<String>) {
    match v {
        Value::String(s) => spec_refs(s, refs),
        Value::Array(items) => items.iter().for_each(|i| collect_refs(i, refs)),
        Value::Object(m) => m.values().for_each(|i| collect_refs(i, refs)),
        _ => {}
    }
}

/// The `spec.` paths read inside the `${...}` of a template string, without `spec.`:
/// `${spec.registry}/${spec.image}` reads `registry` and `image`.
fn spec_refs(s: &str, refs: &mut Vec<String>) {
    if !s.contains("${") {
        return;
    }
    let bytes = s.as_bytes();
    let mut from = 0;
    while let Some(found) = s[from..].find("spec.") {
        let start = from + found;
        from = start + "spec.".len();
        if start > 0 && {
            let b = bytes[start - 1];
            b.is_ascii_alphanumeric() || b == b'_' || b == b'.'
        } {
            continue;
        }
        let rest = &s[from..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(rest.len());
        let mut path = rest[..end].trim_end_matches('.');
        if rest[end..].starts_with('(') {
            path = path.rsplit_once('.').map_or("", |(p, _)| p);
        }
        if !path.is_empty() && !refs.iter().any(|r| r == path) {
            refs.push(path.to_owned());
        }
    }
}

/// Per rule, what this team's objects owe.
pub(super) type DebtByRule = std::collections::BTreeMap<String, PolicyDebt>;
