//! The platform's health rules, checked at render time and carried on each desired
//! object for sync to read: a Kind resource's `readyWhen` / `failedWhen` (with its
//! `healthMessage`), and `platform.yaml`'s `spec.health` per group and kind for every
//! other object of that kind (plain manifests included). A Kind resource's rule comes
//! first. Every expression is parsed and held to the renderer's limits here, so a bad one
//! is a `validate` error at its file and line, never a surprise on the cluster.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::expr;
use crate::desired::{Diagnostic, HealthRule, SourceRef};
use crate::model::{Document, Kind, Platform};

/// The health rules `platform.yaml` gives, by (group, kind).
#[derive(Debug, Default)]
pub(super) struct PlatformHealth {
    by_kind: BTreeMap<(String, String), Arc<HealthRule>>,
}

impl PlatformHealth {
    /// The rule for an object (a manifest with `apiVersion` and `kind`), if the platform
    /// gives its group and kind one.
    pub fn for_object(&self, object: &Value) -> Option<Arc<HealthRule>> {
        let api_version = object.get("apiVersion")?.as_str()?;
        let kind = object.get("kind")?.as_str()?;
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        self.by_kind
            .get(&(group.to_owned(), kind.to_owned()))
            .cloned()
    }
}

/// The expressions of one rule, and where they are written.
struct Exprs<'a> {
    ready_when: Option<&'a String>,
    failed_when: Option<&'a String>,
    message: Option<&'a String>,
    /// The path of the rule's fields, e.g. `spec.health[0]`.
    at: String,
    /// What the message field is called there.
    message_field: &'static str,
}

impl Exprs<'_> {
    /// Every problem of the rule's expressions, each at its field.
    fn check(&self, doc: &Document, what: &str, out: &mut Vec<Diagnostic>) {
        let mut problem = |field: &str, message: String| {
            out.push(doc.diag_at(
                &format!("{}.{field}", self.at),
                None,
                "invalid-health",
                format!("{what}: {message}"),
            ));
        };
        for (field, e) in [
            ("readyWhen", self.ready_when),
            ("failedWhen", self.failed_when),
        ] {
            if let Some(Err(err)) = e.map(|e| expr::check(e)) {
                problem(field, format!("{field}: {err}"));
            }
        }
        if let Some(Err(err)) = self.message.map(|m| expr::check_template(m)) {
            problem(self.message_field, format!("{}: {err}", self.message_field));
        }
    }

    /// The rule, when it has an expression at all.
    fn rule(&self, doc: &Document) -> Option<Arc<HealthRule>> {
        if self.ready_when.is_none() && self.failed_when.is_none() {
            return None;
        }
        let (line, _) = doc.fields().position_of(&self.at);
        Some(Arc::new(HealthRule {
            ready_when: self.ready_when.cloned(),
            failed_when: self.failed_when.cloned(),
            message: self.message.cloned(),
            source: SourceRef {
                file: doc.file.clone(),
                line,
            },
        }))
    }
}

/// Reads `platform.yaml`'s `spec.health`; `None` (with the reasons in `diags`) when a rule
/// has no expression, a bad one, or repeats a group and kind.
pub(super) fn platform_rules(
    doc: &Document,
    p: &Platform,
    diags: &mut Vec<Diagnostic>,
) -> Option<PlatformHealth> {
    let before = diags.len();
    let mut out = PlatformHealth::default();
    for (i, h) in p.spec.health.iter().enumerate() {
        let exprs = Exprs {
            ready_when: h.ready_when.as_ref(),
            failed_when: h.failed_when.as_ref(),
            message: h.message.as_ref(),
            at: format!("spec.health[{i}]"),
            message_field: "message",
        };
        let what = format!("health rule for {}", group_kind(&h.group, &h.kind));
        exprs.check(doc, &what, diags);
        let Some(rule) = exprs.rule(doc) else {
            diags.push(doc.diag_at(
                &exprs.at,
                None,
                "invalid-health",
                format!("{what}: a health rule needs readyWhen, failedWhen or both"),
            ));
            continue;
        };
        let key = (h.group.clone(), h.kind.clone());
        if let Some(first) = out.by_kind.get(&key) {
            diags.push(doc.diag_at(
                &format!("{}.kind", exprs.at),
                None,
                "invalid-health",
                format!(
                    "{what}: {} already has one, at line {}",
                    key.1, first.source.line
                ),
            ));
            continue;
        }
        out.by_kind.insert(key, rule);
    }
    (diags.len() == before).then_some(out)
}

/// Every problem of a kind's `readyWhen` / `failedWhen` / `healthMessage`.
pub(super) fn check_kind(doc: &Document, k: &Kind) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (i, r) in k.spec.resources.iter().enumerate() {
        let what = format!("kind {}, resource {}", k.metadata.name, r.id);
        let exprs = resource_exprs(k, i);
        exprs.check(doc, &what, &mut out);
        if r.health_message.is_some() && exprs.rule(doc).is_none() {
            out.push(doc.diag_at(
                &format!("{}.healthMessage", exprs.at),
                None,
                "invalid-health",
                format!("{what}: healthMessage without readyWhen or failedWhen"),
            ));
        }
    }
    out
}

/// The rule of each of a kind's resources (by index), `None` where it has none.
pub(super) fn kind_rules(doc: &Document, k: &Kind) -> Vec<Option<Arc<HealthRule>>> {
    (0..k.spec.resources.len())
        .map(|i| resource_exprs(k, i).rule(doc))
        .collect()
}

fn resource_exprs(k: &Kind, i: usize) -> Exprs<'_> {
    let r = &k.spec.resources[i];
    Exprs {
        ready_when: r.ready_when.as_ref(),
        failed_when: r.failed_when.as_ref(),
        message: r.health_message.as_ref(),
        at: format!("spec.resources[{i}]"),
        message_field: "healthMessage",
    }
}

fn group_kind(group: &str, kind: &str) -> String {
    if group.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}.{group}")
    }
}
