//! The platform's own rules (`platform.yaml` `spec.policies`) and their exceptions
//! (`spec.policyExceptions`): read and checked once per revision, then evaluated on every
//! object a team's files render to, on each cluster. A rule is CEL that must be true,
//! as a Kubernetes ValidatingAdmissionPolicy validation is.
//!
//! Pure like the rest of render: "today", which decides whether an exception still holds,
//! is an input. `pontoon audit` evaluates the same rules on live objects.

use jiff::civil::Date;
use serde_json::{Value, json};

use super::expr;
use crate::desired::{Diagnostic, Severity, TeamName, is_dns_label};
use crate::model::{
    self, ClusterDef, ClusterSelector, Document, Platform, PolicyAction, PolicyRule,
};

/// The rules of one revision, with the exceptions that hold today.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    rules: Vec<Rule>,
    exceptions: Vec<Exception>,
}

#[derive(Debug, Clone)]
struct Rule {
    def: PolicyRule,
    /// The rule's `fieldPath`, or the first `object.` path its expression reads.
    field_path: Option<String>,
}

/// An exception that holds today (expired ones are left out when read).
#[derive(Debug, Clone)]
struct Exception {
    policy: String,
    team: String,
    instance: Option<String>,
}

/// What one object is checked as.
pub struct Subject<'a> {
    pub object: &'a Value,
    pub team: &'a TeamName,
    pub cluster: &'a ClusterDef,
    /// The Kind instance it was rendered from: kind, name and spec on this cluster.
    pub instance: Option<(&'a str, &'a str, &'a Value)>,
}

/// One rule an object breaks.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub rule: String,
    pub action: PolicyAction,
    /// The rule's message, filled in.
    pub message: String,
    /// Where the offending value sits in the object (`spec.replicas`), wildcards
    /// resolved; `None` when the rule does not say and its expression names no path.
    pub field_path: Option<String>,
    /// An exception lets the object through: debt, not a diagnostic.
    pub exempted: bool,
}

impl Violation {
    /// The diagnostic rule id: `policy/<id>`.
    pub fn rule_id(&self) -> String {
        format!("policy/{}", self.rule)
    }
}

impl Policies {
    /// Reads and checks `spec.policies` and `spec.policyExceptions` of `platform.yaml`;
    /// `None` (with every problem in `diags`) when one is broken. An exception whose
    /// `expires` is before `today` no longer holds and says so in a warning; with no
    /// `today` (a render on its own, in tests and benchmarks), expiries are not checked.
    pub fn read(
        platform: &Platform,
        doc: &Document,
        today: Option<Date>,
        diags: &mut Vec<Diagnostic>,
    ) -> Option<Policies> {
        let before = diags.len();
        let rules = read_rules(platform, doc, diags);
        let mut exceptions = Vec::new();
        for (i, e) in platform.spec.policy_exceptions.iter().enumerate() {
            let at = format!("spec.policyExceptions[{i}]");
            let mut refuse = |field: &str, rule: &str, message: String| {
                diags.push(doc.diag_at(&format!("{at}.{field}"), None, rule, message));
            };
            if !rules.iter().any(|r| r.def.id == e.policy) {
                let known = rules.iter().map(|r| r.def.id.as_str());
                refuse(
                    "policy",
                    "unknown-policy",
                    format!(
                        "exception for policy {}, which spec.policies does not define{}",
                        e.policy,
                        model::did_you_mean(&e.policy, known)
                    ),
                );
            }
            if !is_dns_label(&e.team) {
                refuse(
                    "team",
                    "schema",
                    format!("{:?} is not a valid team name", e.team),
                );
            }
            if e.reason.trim().is_empty() {
                refuse("reason", "schema", "an exception needs a reason".to_owned());
            }
            let expires = match e.expires.as_deref().map(str::parse::<Date>) {
                None => None,
                Some(Ok(d)) => Some(d),
                Some(Err(_)) => {
                    refuse(
                        "expires",
                        "schema",
                        format!(
                            "expires must be a date such as 2026-12-31, not {:?}",
                            e.expires.as_deref().unwrap_or_default()
                        ),
                    );
                    continue;
                }
            };
            if let Some(expired) = expires.filter(|d| today.is_some_and(|t| *d < t)) {
                let mut w = doc.diag_at(
                    &format!("{at}.expires"),
                    None,
                    "policy-exception-expired",
                    format!(
                        "the exception of team {} from policy {} expired on {expired}: the rule holds for it again",
                        e.team, e.policy
                    ),
                );
                w.severity = Severity::Warning;
                diags.push(w);
                continue;
            }
            exceptions.push(Exception {
                policy: e.policy.clone(),
                team: e.team.clone(),
                instance: e.instance.clone(),
            });
        }
        (diags.len() == before || diags[before..].iter().all(is_warning))
            .then_some(Policies { rules, exceptions })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The (group, kind) pairs the rules name.
    pub fn kinds(&self) -> Vec<(String, String)> {
        self.rules
            .iter()
            .flat_map(|r| &r.def.matches.kinds)
            .map(|k| (k.group.clone(), k.kind.clone()))
            .collect()
    }

    /// Every rule `subject` breaks, exempted ones included (marked so).
    pub fn check(&self, subject: &Subject) -> Vec<Violation> {
        let (group, kind) = group_kind(subject.object);
        let matching: Vec<&Rule> = self
            .rules
            .iter()
            .filter(|r| r.matches(group, kind, subject))
            .collect();
        if matching.is_empty() {
            return Vec::new();
        }
        let scope = scope(subject);
        let mut out = Vec::new();
        for rule in matching {
            let failure = match scope.condition(&rule.def.expression) {
                Ok(true) => continue,
                Ok(false) => None,
                Err(e) => Some(e.to_string()),
            };
            let mut message = match scope.render(&Value::String(rule.def.message.clone())) {
                Ok(Value::String(m)) => m,
                Ok(other) => other.to_string(),
                Err(_) => rule.def.message.clone(),
            };
            if let Some(failure) = failure {
                message = format!("{message} (the rule cannot decide: {failure})");
            }
            out.push(Violation {
                rule: rule.def.id.clone(),
                action: rule.def.action,
                message,
                field_path: rule.field_path.as_deref().map(|p| {
                    let segs = segments(p);
                    let pick = offending_element(rule, subject, &segs);
                    let mut out = String::new();
                    resolve(subject.object, &segs, pick, &mut out);
                    out
                }),
                exempted: self.exempts(&rule.def.id, subject),
            });
        }
        out
    }

    fn exempts(&self, rule: &str, subject: &Subject) -> bool {
        self.exceptions.iter().any(|e| {
            e.policy == rule
                && e.team == subject.team.0
                && e.instance
                    .as_deref()
                    .is_none_or(|name| subject.instance.is_some_and(|(_, n, _)| n == name))
        })
    }
}

fn is_warning(d: &Diagnostic) -> bool {
    d.severity == Severity::Warning
}

/// The rules, each checked: an id, a match and an expression that parses.
fn read_rules(platform: &Platform, doc: &Document, diags: &mut Vec<Diagnostic>) -> Vec<Rule> {
    let mut rules: Vec<Rule> = Vec::new();
    for (i, r) in platform.spec.policies.iter().enumerate() {
        let at = format!("spec.policies[{i}]");
        let mut refuse = |field: &str, message: String| {
            diags.push(doc.diag_at(&format!("{at}.{field}"), None, "schema", message));
        };
        if !is_dns_label(&r.id) {
            refuse(
                "id",
                format!(
                    "{:?} is not a valid policy id (lower case, digits, -)",
                    r.id
                ),
            );
        } else if rules.iter().any(|o| o.def.id == r.id) {
            refuse("id", format!("policy {} is defined twice", r.id));
        }
        if let Err(e) = expr::check(&r.expression) {
            refuse("expression", format!("policy {}: {e}", r.id));
        }
        if r.message.trim().is_empty() {
            refuse("message", format!("policy {} needs a message", r.id));
        }
        for (j, k) in r.matches.kinds.iter().enumerate() {
            if k.kind.trim().is_empty() {
                refuse(
                    &format!("match.kinds[{j}]"),
                    "a kind needs a kind".to_owned(),
                );
            }
        }
        let field_path = r
            .field_path
            .clone()
            .or_else(|| first_object_path(&r.expression));
        rules.push(Rule {
            def: r.clone(),
            field_path,
        });
    }
    rules
}

impl Rule {
    fn matches(&self, group: &str, kind: &str, subject: &Subject) -> bool {
        let m = &self.def.matches;
        (m.kinds.is_empty() || m.kinds.iter().any(|k| k.group == group && k.kind == kind))
            && (m.teams.is_empty() || m.teams.contains(&subject.team.0))
            && m.clusters
                .as_ref()
                .is_none_or(|s| selects(s, subject.cluster))
    }
}

/// Whether a cluster selector picks `cluster`, as a team's `spec.clusters` would.
fn selects(selector: &ClusterSelector, cluster: &ClusterDef) -> bool {
    selector.names.contains(&cluster.name)
        || (!selector.match_labels.is_empty()
            && selector
                .match_labels
                .iter()
                .all(|(k, v)| cluster.labels.get(k) == Some(v)))
}

/// An object's API group and kind.
fn group_kind(object: &Value) -> (&str, &str) {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    (
        group,
        object.get("kind").and_then(Value::as_str).unwrap_or(""),
    )
}

/// The variables a rule sees. The object is converted once for every rule that matches.
fn scope(subject: &Subject) -> expr::Scope {
    let team = json!(subject.team.0);
    let cluster = json!({"name": subject.cluster.name, "labels": subject.cluster.labels});
    let instance = subject.instance.map_or(
        Value::Null,
        |(kind, name, spec)| json!({"kind": kind, "name": name, "spec": spec}),
    );
    expr::Scope::new(&[
        ("object", subject.object),
        ("team", &team),
        ("cluster", &cluster),
        ("instance", &instance),
    ])
}

/// The first path read from `object` in an expression: `object.spec.replicas >= 2` reads
/// `spec.replicas`; a macro or function called on it is not part of the path
/// (`object.spec.containers.all(...)` reads `spec.containers`).
pub(super) fn first_object_path(expression: &str) -> Option<String> {
    let bytes = expression.as_bytes();
    let mut from = 0;
    while let Some(found) = expression[from..].find("object.") {
        let start = from + found;
        from = start + "object.".len();
        let preceded = start > 0 && {
            let b = bytes[start - 1];
            b.is_ascii_alphanumeric() || b == b'_' || b == b'.'
        };
        if preceded {
            continue;
        }
        let rest = &expression[from..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(rest.len());
        let mut path = rest[..end].trim_end_matches('.').to_owned();
        if rest[end..].starts_with('(') {
            path = path.rsplit_once('.').map(|(p, _)| p.to_owned())?;
        }
        if !path.is_empty() {
            return Some(path);
        }
    }
    None
}

/// One segment of a field path: `spec`, `[2]`, `[*]`.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
    Any,
}

pub(super) fn segments(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let mut pieces = part.split('[');
        if let Some(key) = pieces.next().filter(|k| !k.is_empty()) {
            out.push(Seg::Key(key.to_owned()));
        }
        for p in pieces {
            let inner = p.trim_end_matches(']');
            out.push(match inner.parse() {
                Ok(i) => Seg::Index(i),
                Err(_) => Seg::Any,
            });
        }
    }
    out
}

/// Which element of the list at the path's first `[*]` breaks the rule: the rule is
/// evaluated again on the object with that list cut to each element alone, so a second
/// container's image is blamed, not the first's. Only run for a violation.
fn offending_element(rule: &Rule, subject: &Subject, segs: &[Seg]) -> Option<usize> {
    let at = segs.iter().position(|s| *s == Seg::Any)?;
    let pointer: String = segs[..at]
        .iter()
        .map(|s| match s {
            Seg::Key(k) => format!("/{}", k.replace('~', "~0").replace('/', "~1")),
            Seg::Index(i) => format!("/{i}"),
            Seg::Any => "/0".to_owned(),
        })
        .collect();
    let items = subject.object.pointer(&pointer)?.as_array()?;
    if items.len() < 2 {
        return None;
    }
    (0..items.len()).find(|&i| {
        let mut alone = subject.object.clone();
        if let Some(list) = alone.pointer_mut(&pointer) {
            *list = Value::Array(vec![items[i].clone()]);
        }
        let narrowed = Subject {
            object: &alone,
            ..*subject
        };
        !matches!(scope(&narrowed).condition(&rule.def.expression), Ok(true))
    })
}

/// `segs` as a concrete path: the first `[*]` is the element `pick` (when known), every
/// other the first element that has the rest of the path (else the first element).
fn resolve(value: &Value, segs: &[Seg], mut pick: Option<usize>, out: &mut String) {
    let Some((first, rest)) = segs.split_first() else {
        return;
    };
    match first {
        Seg::Key(k) => {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(k);
            resolve(value.get(k).unwrap_or(&Value::Null), rest, pick, out);
        }
        Seg::Index(i) => {
            out.push_str(&format!("[{i}]"));
            resolve(value.get(*i).unwrap_or(&Value::Null), rest, pick, out);
        }
        Seg::Any => {
            let items = value.as_array().map(Vec::as_slice).unwrap_or_default();
            let i = pick
                .take()
                .or_else(|| items.iter().position(|v| has_path(v, rest)))
                .unwrap_or(0);
            out.push_str(&format!("[{i}]"));
            resolve(items.get(i).unwrap_or(&Value::Null), rest, None, out);
        }
    }
}

fn has_path(value: &Value, segs: &[Seg]) -> bool {
    match segs.split_first() {
        None => !value.is_null(),
        Some((Seg::Key(k), rest)) => value.get(k).is_some_and(|v| has_path(v, rest)),
        Some((Seg::Index(i), rest)) => value.get(*i).is_some_and(|v| has_path(v, rest)),
        Some((Seg::Any, rest)) => value
            .as_array()
            .is_some_and(|a| a.iter().any(|v| has_path(v, rest))),
    }
}
