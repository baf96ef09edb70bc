//! `pontoon plan`: what a sync of a unit would do, object by object, without writing
//! anything. The model of a plan and how it reads lives here; how a unit is planned, in
//! `unit`.
//!
//! A plan decides as the sync decides, with the sync's own steps: the same inventory, the
//! same lists of what is live, the same mass-deletion hold (and release), the same
//! refusals of what another team owns or what exists without pontoon's labels. Only the
//! apply is different: an object exactly as pontoon's last apply left it is unchanged from
//! the lists alone, one the server can be asked about is a server-side apply with
//! `dryRun=All` (defaulting, admission and the team's RBAC included), and one it cannot be
//! asked about yet (its namespace or its CRD comes with the same sync) would be created.

mod unit;

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::Value;

use crate::desired::UnitId;

pub use unit::PlanError;

/// What a sync would do to one object.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Action {
    Create,
    /// Would be created, but the server cannot be asked by a dry run before the sync: its
    /// namespace (or its kind's CustomResourceDefinition) comes with the same sync. Checked
    /// as far as it can be without them (its kind by discovery, its scope); `unchecked`
    /// says what could not be.
    #[serde(rename = "create")]
    CreateUnchecked {
        unchecked: String,
    },
    Update {
        changes: Vec<FieldChange>,
    },
    Prune,
    /// No longer desired, but the prune keeps it (and the inventory forgets it); `reason`
    /// is the rule.
    Keep {
        reason: String,
    },
    Unchanged,
    /// The apply would be refused; the message says why.
    Error {
        message: String,
    },
}

/// One field that would change: a dotted path with the old and new values. Both are
/// `None` when the value is never shown: a Secret's `data` and `stringData` (see
/// [`hide_secret_values`]); the change reads `~ data.password (secret changed)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    pub path: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedObject {
    pub object: String,
    #[serde(flatten)]
    pub action: Action,
}

/// The plan of one unit.
#[derive(Debug, Clone, Serialize)]
pub struct UnitPlan {
    pub unit: UnitId,
    /// What the sync would do to each object once it goes ahead (when it is held: once
    /// released).
    pub objects: Vec<PlannedObject>,
    /// The mass-deletion hold would stop the sync before it writes anything: the sync's
    /// own message (what it would delete, and how to release it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    /// Who released the hold for the planned revision, when the sync would go ahead on
    /// a release.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub released_by: Option<String>,
}

impl UnitPlan {
    pub fn new(unit: UnitId) -> Self {
        UnitPlan {
            unit,
            objects: Vec::new(),
            held: None,
            released_by: None,
        }
    }

    /// Objects to create, update, prune, and that would be refused.
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let mut c = (0, 0, 0, 0);
        for o in &self.objects {
            match o.action {
                Action::Create | Action::CreateUnchecked { .. } => c.0 += 1,
                Action::Update { .. } => c.1 += 1,
                Action::Prune => c.2 += 1,
                Action::Error { .. } => c.3 += 1,
                Action::Keep { .. } | Action::Unchanged => {}
            }
        }
        c
    }

    /// `+3 ~2 -1` (and `!1` for objects the server would refuse, `held` when the hold
    /// would stop the sync); `+0 ~0 -0, nothing to do` when a sync would write nothing.
    pub fn summary(&self) -> String {
        let (add, change, del, err) = self.counts();
        let mut s = format!("+{add} ~{change} -{del}");
        if err > 0 {
            s.push_str(&format!(" !{err}"));
        }
        if self.held.is_some() {
            s.push_str(" held");
        } else if !self.changes_anything() {
            s.push_str(", nothing to do");
        }
        s
    }

    /// Whether a sync would change or refuse anything (a held unit changes nothing, but
    /// is not as its repo says either).
    pub fn changes_anything(&self) -> bool {
        let (a, c, d, e) = self.counts();
        let kept = self
            .objects
            .iter()
            .any(|o| matches!(o.action, Action::Keep { .. }));
        a + c + d + e > 0 || kept || self.held.is_some()
    }
}

/// The parts of an object a change can be seen in: no server bookkeeping, no status.
pub fn comparable(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "managedFields",
            "resourceVersion",
            "generation",
            "uid",
            "creationTimestamp",
            "selfLink",
        ] {
            meta.remove(k);
        }
    }
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    v
}

/// Field-level differences between two objects, as dotted paths in sorted order. A
/// Secret's values are hidden ([`hide_secret_values`]).
pub fn diff(old: &Value, new: &Value) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk("", old, new, &mut out);
    if is_secret(new) || is_secret(old) {
        hide_secret_values(&mut out);
    }
    out
}

fn is_secret(v: &Value) -> bool {
    v.get("kind").and_then(Value::as_str) == Some("Secret")
        && v.get("apiVersion").and_then(Value::as_str) == Some("v1")
}

/// Drops the values of the changes under a Secret's `data` and `stringData`: a plan (on
/// the terminal, in a pull request) names the key that changes, never its value.
pub fn hide_secret_values(changes: &mut [FieldChange]) {
    for c in changes {
        let hidden = ["data", "stringData"]
            .iter()
            .any(|f| c.path == *f || c.path.starts_with(&format!("{f}.")));
        if hidden {
            c.old = None;
            c.new = None;
        }
    }
}

impl FieldChange {
    /// Whether the values of this change are hidden (a Secret's).
    pub fn is_hidden(&self) -> bool {
        self.old.is_none() && self.new.is_none()
    }
}

fn walk(path: &str, old: &Value, new: &Value, out: &mut Vec<FieldChange>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => walk(&p, x, y, out),
                    (x, y) => out.push(FieldChange {
                        path: p,
                        old: x.cloned(),
                        new: y.cloned(),
                    }),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                walk(&format!("{path}[{i}]"), x, y, out);
            }
        }
        _ if old != new => out.push(FieldChange {
            path: path.to_owned(),
            old: Some(old.clone()),
            new: Some(new.clone()),
        }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_secret_change_names_the_key_never_the_value() {
        let old = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                         "data": {"password": "b2xk", "same": "eA=="}});
        let new = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                         "data": {"password": "bmV3", "same": "eA==", "added": "eQ=="}});
        let changes = diff(&old, &new);
        let paths: Vec<_> = changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["data.added", "data.password"]);
        assert!(changes.iter().all(FieldChange::is_hidden), "{changes:?}");
        let text = serde_json::to_string(&changes).unwrap();
        assert!(!text.contains("bmV3") && !text.contains("b2xk") && !text.contains("eQ=="));
        // Not a Secret: values shown.
        let cm = diff(
            &json!({"kind": "ConfigMap", "data": {"k": "1"}}),
            &json!({"kind": "ConfigMap", "data": {"k": "2"}}),
        );
        assert!(!cm[0].is_hidden());
    }

    #[test]
    fn diff_names_each_changed_field() {
        let old = json!({"metadata": {"name": "a", "resourceVersion": "1", "labels": {"x": "1"}},
                         "spec": {"replicas": 2, "template": {"containers": [{"image": "a:1"}]}}});
        let new = json!({"metadata": {"name": "a", "resourceVersion": "2", "labels": {"x": "1", "y": "2"}},
                         "spec": {"replicas": 3, "template": {"containers": [{"image": "a:2"}]}}});
        let changes = diff(&comparable(&old), &comparable(&new));
        let paths: Vec<_> = changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "metadata.labels.y",
                "spec.replicas",
                "spec.template.containers[0].image"
            ]
        );
        assert_eq!(changes[1].old, Some(json!(2)));
        assert_eq!(changes[1].new, Some(json!(3)));
    }

    #[test]
    fn bookkeeping_is_not_a_change() {
        let a = json!({"metadata": {"name": "a", "resourceVersion": "1", "managedFields": [1]}, "status": {"x": 1}});
        let b = json!({"metadata": {"name": "a", "resourceVersion": "9", "managedFields": [2]}, "status": {"x": 2}});
        assert!(diff(&comparable(&a), &comparable(&b)).is_empty());
    }

    #[test]
    fn summary_counts() {
        let object = |name: &str, action| PlannedObject {
            object: name.into(),
            action,
        };
        let mut plan = UnitPlan::new(UnitId {
            team: crate::desired::TeamName("t".into()),
            cluster: crate::desired::ClusterName("c".into()),
        });
        plan.objects = vec![object("d", Action::Unchanged)];
        assert_eq!(plan.summary(), "+0 ~0 -0, nothing to do");
        assert!(!plan.changes_anything());
        // Something kept is no longer in the inventory: not nothing.
        plan.objects.push(object(
            "k",
            Action::Keep {
                reason: "marked".into(),
            },
        ));
        assert_eq!(plan.summary(), "+0 ~0 -0");
        assert!(plan.changes_anything());
        plan.objects.pop();
        plan.objects.extend([
            object("a", Action::Create),
            object(
                "a2",
                Action::CreateUnchecked {
                    unchecked: "its namespace comes with the sync".into(),
                },
            ),
            object("b", Action::Update { changes: vec![] }),
            object("c", Action::Prune),
        ]);
        assert_eq!(plan.summary(), "+2 ~1 -1");
        assert!(plan.changes_anything());
        plan.held = Some("held: ...".into());
        assert_eq!(plan.summary(), "+2 ~1 -1 held");
        // A held unit whose objects are all as they are still needs a release.
        plan.objects.truncate(1);
        assert_eq!(plan.summary(), "+0 ~0 -0 held");
        assert!(plan.changes_anything());
    }
}
