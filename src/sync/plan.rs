//! `pontoon plan`: the sync computation as a dry run. Every create and update is a
//! server-side apply with `dryRun=All`, so the answer includes defaulting, admission and
//! the team's RBAC exactly as a real sync would meet them; nothing is written. An object
//! that exists without pontoon's labels for the team, and everything in such a Namespace,
//! is refused as the sync refuses it (see `adopt`), with the same rule ids.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::{DynamicObject, Patch};
use serde::Serialize;
use serde_json::Value;

use super::Syncer;
use super::adopt;
use super::inventory::{Inventory, InventoryError};
use super::live::team_label;
use super::resolve::api_version_of;
use crate::cluster::{Cluster, gvk_of};
use crate::desired::{DesiredObject, ObjectKey, UnitDesired, UnitId, apply_params};

/// What a sync would do to one object.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Action {
    Create,
    Update {
        changes: Vec<FieldChange>,
    },
    Prune,
    Unchanged,
    /// The apply would be refused; the message says why.
    Error {
        message: String,
    },
}

/// One field that would change: a dotted path with the old and new values.
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
    pub objects: Vec<PlannedObject>,
}

impl UnitPlan {
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let mut c = (0, 0, 0, 0);
        for o in &self.objects {
            match o.action {
                Action::Create => c.0 += 1,
                Action::Update { .. } => c.1 += 1,
                Action::Prune => c.2 += 1,
                Action::Error { .. } => c.3 += 1,
                Action::Unchanged => {}
            }
        }
        c
    }

    /// `+3 ~2 -1` (and `!1` for objects the server would refuse).
    pub fn summary(&self) -> String {
        let (add, change, del, err) = self.counts();
        let mut s = format!("+{add} ~{change} -{del}");
        if err > 0 {
            s.push_str(&format!(" !{err}"));
        }
        s
    }

    pub fn changes_anything(&self) -> bool {
        let (a, c, d, e) = self.counts();
        a + c + d + e > 0
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

/// Field-level differences between two objects, as dotted paths in sorted order.
pub fn diff(old: &Value, new: &Value) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk("", old, new, &mut out);
    out
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

impl Syncer {
    /// What [`Syncer::sync`] would do to this unit, without writing anything. Fails when
    /// the unit's inventory cannot be read or does not parse, as the sync would.
    pub async fn plan(&self, desired: &UnitDesired) -> Result<UnitPlan, InventoryError> {
        let team = &desired.unit.team;
        let previous = match self.ensure_namespace().await {
            Ok(()) => Inventory::load(&self.inventory_api(), team).await?,
            // A read-only identity cannot create the namespace; then nothing was synced yet.
            Err(_) => Inventory::default(),
        };
        let mut objects = Vec::new();
        let mut desired_keys = BTreeSet::new();
        // The Namespaces first: nothing is planned into one the team may not take.
        let mut namespaces = BTreeMap::new();
        for o in &desired.objects {
            let Some(key) = o
                .key()
                .filter(|k| k.group.is_empty() && k.kind == "Namespace")
            else {
                continue;
            };
            let action = self.plan_one(o, &key, desired, &previous).await;
            namespaces.insert(key.name.clone(), (key, action));
        }
        let refused = |ns: &str| {
            namespaces
                .get(ns)
                .filter(|(_, a)| is_refusal(a, adopt::RULE_NAMESPACE_EXISTS))
        };
        for o in &desired.objects {
            let Some(key) = o.key() else { continue };
            desired_keys.insert(key.clone());
            let action = if let Some((ns, _)) = refused(&key.namespace) {
                Action::Error {
                    message: format!("not applied: {}", adopt::refusal(ns, desired, &o.source)),
                }
            } else if let Some((_, a)) = namespaces.get(&key.name).filter(|(k, _)| *k == key) {
                a.clone()
            } else {
                self.plan_one(o, &key, desired, &previous).await
            };
            objects.push(PlannedObject {
                object: key.to_string(),
                action,
            });
        }
        for (key, _) in previous
            .entries
            .iter()
            .filter(|(k, _)| !desired_keys.contains(*k))
        {
            objects.push(PlannedObject {
                object: key.to_string(),
                action: Action::Prune,
            });
        }
        Ok(UnitPlan {
            unit: desired.unit.clone(),
            objects,
        })
    }

    async fn plan_one(
        &self,
        o: &DesiredObject,
        key: &ObjectKey,
        desired: &UnitDesired,
        previous: &Inventory,
    ) -> Action {
        let team = &desired.unit.team;
        let gvk = gvk_of(api_version_of(&o.object), &key.kind);
        let res = match self.cluster.resolve(&gvk).await {
            Ok(r) => r,
            // A kind whose CRD arrives in the same sync: it would be created.
            Err(_) if key.group.is_empty() => {
                return Action::Error {
                    message: format!("unknown kind {}", key.kind),
                };
            }
            Err(_) => return Action::Create,
        };
        let client = match self.cluster.client_for(o.applier, team) {
            Ok(c) => c,
            Err(e) => {
                return Action::Error {
                    message: e.to_string(),
                };
            }
        };
        let api: kube::Api<DynamicObject> = Cluster::api(client, &res, &key.namespace);
        let live = {
            let _permit = self.cluster.read_permit().await;
            api.get_opt(&key.name).await
        };
        let live = match live {
            Ok(l) => l,
            Err(e) => {
                return Action::Error {
                    message: e.to_string(),
                };
            }
        };
        // As the sync: an existing object without pontoon's labels for the team is not
        // applied over unless the platform adopts it.
        if let Some(l) = &live
            && team_label(l.metadata.labels.as_ref()).is_none()
            && !adopt::may_take(
                key,
                l.metadata.uid.as_deref().unwrap_or(""),
                desired,
                previous,
            )
        {
            return Action::Error {
                message: adopt::refusal(key, desired, &o.source),
            };
        }
        let dry = {
            let _permit = self.cluster.write_permit().await;
            api.patch(
                &key.name,
                &apply_params().force().dry_run(),
                &Patch::Apply(&o.object),
            )
            .await
        };
        let dry = match dry {
            Ok(d) => serde_json::to_value(d).unwrap_or(Value::Null),
            Err(kube::Error::Api(s)) => {
                return Action::Error {
                    message: format!("{} ({})", s.message, s.reason),
                };
            }
            Err(e) => {
                return Action::Error {
                    message: e.to_string(),
                };
            }
        };
        match live {
            None => Action::Create,
            Some(l) => {
                let l = serde_json::to_value(l).unwrap_or(Value::Null);
                let changes = diff(&comparable(&l), &comparable(&dry));
                if changes.is_empty() {
                    Action::Unchanged
                } else {
                    Action::Update { changes }
                }
            }
        }
    }
}

/// Whether `action` is a refusal under `rule`.
fn is_refusal(action: &Action, rule: &str) -> bool {
    matches!(action, Action::Error { message } if message.contains(&format!("error[{rule}]")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        let plan = UnitPlan {
            unit: UnitId {
                team: crate::desired::TeamName("t".into()),
                cluster: crate::desired::ClusterName("c".into()),
            },
            objects: vec![
                PlannedObject {
                    object: "a".into(),
                    action: Action::Create,
                },
                PlannedObject {
                    object: "b".into(),
                    action: Action::Update { changes: vec![] },
                },
                PlannedObject {
                    object: "c".into(),
                    action: Action::Prune,
                },
                PlannedObject {
                    object: "d".into(),
                    action: Action::Unchanged,
                },
            ],
        };
        assert_eq!(plan.summary(), "+1 ~1 -1");
        assert!(plan.changes_anything());
    }
}
