//! Reading `metadata.managedFields`: who changed a field (the manager that owns it now),
//! what a person added that pontoon never set, what pontoon's own apply owns that its
//! manifest no longer sets, and the JSON patch that removes a person's additions. Pure:
//! works on the object as JSON, never talks to the cluster.

use serde_json::Value;

use super::compare::differences;

/// Field managers that stand for people.
pub const HUMAN_MANAGERS: &[&str] = &[
    "kubectl-edit",
    "kubectl-patch",
    "kubectl-set",
    "kubectl-client-side-apply",
    "kubectl-label",
    "kubectl-annotate",
    "kubectl-scale",
    "kubectl",
];

/// The manager and time of the newest change to an object's spec-like fields (status
/// updates excluded).
pub fn last_writer(live: &Value) -> (String, String) {
    let entries = live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array);
    let newest = entries.and_then(|e| {
        e.iter()
            .filter(|m| m.get("subresource").and_then(Value::as_str).unwrap_or("") != "status")
            .max_by_key(|m| {
                m.get("time")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            })
    });
    match newest {
        Some(m) => (
            m.get("manager")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_owned(),
            m.get("time")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        ),
        None => ("unknown".to_owned(), String::new()),
    }
}

/// Who owns the drifted fields now: the newest of the field managers other than pontoon's
/// own (`ours`, the daemon's owner's field manager; status writers aside) whose `managedFields` cover one of `paths` (a changed value moves to whoever changed
/// it). `managedFields` times have whole seconds, so the newest entry alone cannot tell
/// a hand edit from pontoon's apply in the same second; ownership can.
pub fn changed_by(live: &Value, paths: &[String], ours: &str) -> Option<(String, String)> {
    let entries = live.pointer("/metadata/managedFields")?.as_array()?;
    let covers = |owned: &str, path: &str| {
        owned == path
            || path.starts_with(&format!("{owned}/"))
            || owned.starts_with(&format!("{path}/"))
    };
    entries
        .iter()
        .filter(|m| m.get("manager").and_then(Value::as_str) != Some(ours))
        // Writes through a subresource other than status (`kubectl scale` and an HPA go
        // through `scale`) are recorded in the object's own field paths: they count.
        .filter(|m| m.get("subresource").and_then(Value::as_str) != Some("status"))
        .filter(|m| {
            let mut leaves = Vec::new();
            if let Some(f) = m.get("fieldsV1") {
                owned_leaves(f, live, &mut Vec::new(), &mut leaves);
            }
            leaves
                .iter()
                .map(|l| pointer(l))
                .any(|owned| paths.iter().any(|p| covers(&owned, p)))
        })
        .max_by_key(|m| {
            m.get("time")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        })
        .map(|m| {
            let get = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            (get("manager"), get("time"))
        })
}

/// Whether pontoon's own entries (field manager `ours`) in `live`'s `managedFields` cover
/// every one of `paths`:
/// a change pontoon wrote itself. A field someone removed is owned by nobody any more, so
/// it is not covered (nor is one pontoon's manifest stopped setting).
pub fn written_by_pontoon(live: &Value, paths: &[String], ours: &str) -> bool {
    let Some(entries) = live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return false;
    };
    let mut leaves = Vec::new();
    for m in entries {
        let is_ours = m.get("manager").and_then(Value::as_str) == Some(ours);
        let main = m
            .get("subresource")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty();
        if let (true, true, Some(f)) = (is_ours, main, m.get("fieldsV1")) {
            owned_leaves(f, live, &mut Vec::new(), &mut leaves);
        }
    }
    let owned: Vec<String> = leaves.iter().map(|l| pointer(l)).collect();
    paths.iter().all(|p| {
        owned
            .iter()
            .any(|o| o == p || p.starts_with(&format!("{o}/")) || o.starts_with(&format!("{p}/")))
    })
}

/// pontoon's server-side apply entries (field manager `ours`, `operation: Apply`, on the
/// object itself, not a subresource) in `live`'s `managedFields`.
fn pontoon_applies<'a>(live: &'a Value, ours: &'a str) -> impl Iterator<Item = &'a Value> {
    live.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(move |m| {
            m.get("manager").and_then(Value::as_str) == Some(ours)
                && m.get("operation").and_then(Value::as_str) == Some("Apply")
                && m.get("subresource")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
        })
}

/// Whether `live` records a server-side apply of pontoon's, so what pontoon owns in it is
/// known.
pub fn applied_by_pontoon(live: &Value, ours: &str) -> bool {
    pontoon_applies(live, ours).next().is_some()
}

/// Fields pontoon's apply owns in `live` that `desired` does not set: an apply of
/// `desired` would remove them, so `live` was applied from another manifest. Entries of
/// keyed lists are matched on the key fields the desired entry sets (the server fills
/// in defaulted keys, such as a port's `protocol`).
pub fn owned_but_not_desired(desired: &Value, live: &Value, ours: &str) -> Vec<String> {
    let mut out = Vec::new();
    for m in pontoon_applies(live, ours) {
        if let Some(f) = m.get("fieldsV1") {
            owned_beyond(f, Some(desired), live, &mut Vec::new(), &mut out);
        }
    }
    let mut paths: Vec<String> = out.iter().map(|s| pointer(s)).collect();
    paths.sort();
    paths.dedup();
    paths
}

fn owned_beyond(
    fields: &Value,
    desired: Option<&Value>,
    live: &Value,
    at: &mut Vec<Step>,
    out: &mut Vec<Vec<Step>>,
) {
    let Some(map) = fields.as_object() else {
        return;
    };
    for (key, sub) in map {
        if key == "." {
            continue;
        }
        let Some((step, live_child)) = element_for_key(key, live) else {
            continue;
        };
        at.push(step);
        match desired.and_then(|d| desired_element_for_key(key, d)) {
            None => out.push(at.clone()),
            Some(d) => owned_beyond(sub, Some(d), live_child, at, out),
        }
        at.pop();
    }
}

/// The element of the desired object a managedFields key stands for. A `k:` key matches
/// the desired entry whose key fields it sets agree (the ones it leaves out are defaulted
/// by the server).
fn desired_element_for_key<'a>(key: &str, desired: &'a Value) -> Option<&'a Value> {
    let Some(k) = key.strip_prefix("k:") else {
        return element_for_key(key, desired).map(|(_, v)| v);
    };
    let wanted: serde_json::Map<String, Value> = serde_json::from_str(k).ok()?;
    desired.as_array()?.iter().find(|e| {
        let mut set = wanted
            .iter()
            .filter_map(|(f, v)| Some((e.get(f)?, v)))
            .peekable();
        set.peek().is_some() && set.all(|(ev, v)| differences(v, ev, &[]).is_empty())
    })
}

/// One step of a path into an object: a map key or a list index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Key(String),
    Index(usize),
}

fn pointer(steps: &[Step]) -> String {
    steps
        .iter()
        .map(|s| match s {
            Step::Key(k) => format!("/{}", k.replace('~', "~0").replace('/', "~1")),
            Step::Index(i) => format!("/{i}"),
        })
        .collect()
}

/// A field a person added: where it is in the live object, and who added it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addition {
    pub path: String,
    pub manager: String,
    steps: Vec<Step>,
}

/// Fields that managers standing for people (`humans`) own in `live` and that pontoon's
/// desired object does not set: an env var or a container added by `kubectl edit`, a
/// label added by `kubectl label`. Only the topmost such field is named (a whole added
/// container, not each of its fields). Fields another controller also owns are left
/// (something relies on them), and so are `ignore` pointers and prefixes of them. `ours`
/// is pontoon's own field manager (the daemon's owner's).
pub fn human_additions(
    desired: &Value,
    live: &Value,
    humans: &[String],
    ignore: &[String],
    ours: &str,
) -> Vec<Addition> {
    let Some(entries) = live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    let manager = |m: &Value| {
        m.get("manager")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let is_main = |m: &Value| {
        m.get("subresource")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
    };
    // What controllers (not people, not pontoon) own, to leave it alone.
    let mut controllers: Vec<Vec<Step>> = Vec::new();
    for m in entries {
        let name = manager(m);
        if humans.contains(&name) || name == ours {
            continue;
        }
        if let Some(f) = m.get("fieldsV1") {
            owned_leaves(f, live, &mut Vec::new(), &mut controllers);
        }
    }
    let mut out: Vec<Addition> = Vec::new();
    for m in entries.iter().filter(|m| is_main(m)) {
        let name = manager(m);
        if !humans.contains(&name) {
            continue;
        }
        let Some(f) = m.get("fieldsV1") else { continue };
        let mut found = Vec::new();
        additions_under(f, Some(desired), live, &mut Vec::new(), &mut found);
        for steps in found {
            let path = pointer(&steps);
            let ignored = ignore.iter().any(|i| {
                path == *i
                    || path.starts_with(&format!("{i}/"))
                    || i.starts_with(&format!("{path}/"))
            });
            let shared = controllers
                .iter()
                .any(|c| c.starts_with(&steps) || steps.starts_with(c));
            if ignored || shared || out.iter().any(|a| steps.starts_with(&a.steps)) {
                continue;
            }
            out.retain(|a| !a.steps.starts_with(&steps));
            out.push(Addition {
                path,
                manager: name.clone(),
                steps,
            });
        }
    }
    // Removing list entries from the highest index down keeps the other indexes valid.
    out.sort_by(|a, b| b.steps.cmp(&a.steps));
    out
}

/// The live element a managedFields key (`f:name`, `k:{"name":"x"}`, `v:"x"`, `i:3`)
/// stands for, with the step to it.
fn element_for_key<'a>(key: &str, value: &'a Value) -> Option<(Step, &'a Value)> {
    if let Some(name) = key.strip_prefix("f:") {
        return value.get(name).map(|v| (Step::Key(name.to_owned()), v));
    }
    let list = value.as_array()?;
    let index = if let Some(k) = key.strip_prefix("k:") {
        let wanted: serde_json::Map<String, Value> = serde_json::from_str(k).ok()?;
        list.iter().position(|e| {
            wanted.iter().all(|(f, v)| {
                e.get(f)
                    .is_some_and(|ev| differences(v, ev, &[]).is_empty())
            })
        })?
    } else if let Some(v) = key.strip_prefix("v:") {
        let wanted: Value = serde_json::from_str(v).ok()?;
        list.iter().position(|e| *e == wanted)?
    } else if let Some(i) = key.strip_prefix("i:") {
        i.parse().ok()?
    } else {
        return None;
    };
    list.get(index).map(|v| (Step::Index(index), v))
}

/// Walks a human's fieldsV1 over the live object and the desired one at once; a field
/// the desired object lacks is an addition (and is not descended into).
fn additions_under(
    fields: &Value,
    desired: Option<&Value>,
    live: &Value,
    at: &mut Vec<Step>,
    out: &mut Vec<Vec<Step>>,
) {
    let Some(map) = fields.as_object() else {
        return;
    };
    for (key, sub) in map {
        if key == "." {
            continue;
        }
        let Some((step, live_child)) = element_for_key(key, live) else {
            continue;
        };
        let desired_child = desired
            .and_then(|d| element_for_key(key, d))
            .map(|(_, v)| v);
        at.push(step);
        match desired_child {
            None => out.push(at.clone()),
            Some(d) => additions_under(sub, Some(d), live_child, at, out),
        }
        at.pop();
    }
}

/// Every field a manager owns, as paths into the live object.
fn owned_leaves(fields: &Value, live: &Value, at: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    let Some(map) = fields.as_object() else {
        return;
    };
    for (key, sub) in map {
        if key == "." {
            out.push(at.clone());
            continue;
        }
        let Some((step, live_child)) = element_for_key(key, live) else {
            continue;
        };
        at.push(step);
        if sub.as_object().is_some_and(|m| m.is_empty()) {
            out.push(at.clone());
        } else {
            owned_leaves(sub, live_child, at, out);
        }
        at.pop();
    }
}

/// The JSON patch that removes `additions` from the object at `resource_version`, and
/// fails (HTTP 422) if the object changed since it was read.
pub fn removal_patch(additions: &[Addition], resource_version: &str) -> Value {
    let mut ops = vec![serde_json::json!({
        "op": "test", "path": "/metadata/resourceVersion", "value": resource_version
    })];
    ops.extend(
        additions
            .iter()
            .map(|a| serde_json::json!({"op": "remove", "path": a.path})),
    );
    Value::Array(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn managed(entries: Value, rest: Value) -> Value {
        let mut live = rest;
        live["metadata"]["managedFields"] = entries;
        live
    }

    fn humans() -> Vec<String> {
        HUMAN_MANAGERS.iter().map(|m| (*m).to_owned()).collect()
    }

    #[test]
    fn fields_people_add_are_found_topmost_and_highest_index_first() {
        let desired = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "a:1", "env": [{"name": "MODE", "value": "prod"}]}]}}}});
        let live = managed(
            json!([
                {"manager": "pontoon", "operation": "Apply", "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}}}}},
                {"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"app\"}": {"f:env": {"k:{\"name\":\"DEBUG\"}": {".": {}, "f:name": {}, "f:value": {}}}}}}}}}},
                {"manager": "kubectl-label", "operation": "Update", "fieldsV1": {"f:metadata": {"f:labels": {"f:owner": {}}}}},
                {"manager": "kubectl-patch", "operation": "Update", "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"sidecar\"}": {".": {}, "f:name": {}, "f:image": {}}}}}}}}
            ]),
            json!({"metadata": {"labels": {"app": "web", "owner": "bob"}}, "spec": {"template": {"spec": {"containers": [
                {"name": "app", "image": "a:1", "env": [{"name": "MODE", "value": "prod"}, {"name": "DEBUG", "value": "1"}]},
                {"name": "sidecar", "image": "busybox"}]}}}}),
        );
        let found: Vec<(String, String)> =
            human_additions(&desired, &live, &humans(), &[], "pontoon")
                .into_iter()
                .map(|a| (a.path, a.manager))
                .collect();
        assert_eq!(
            found,
            [
                (
                    "/spec/template/spec/containers/1".to_owned(),
                    "kubectl-patch".to_owned()
                ),
                (
                    "/spec/template/spec/containers/0/env/1".to_owned(),
                    "kubectl-edit".to_owned()
                ),
                (
                    "/metadata/labels/owner".to_owned(),
                    "kubectl-label".to_owned()
                ),
            ]
        );
        let patch = removal_patch(
            &human_additions(&desired, &live, &humans(), &[], "pontoon"),
            "42",
        );
        assert_eq!(
            patch[0],
            json!({"op": "test", "path": "/metadata/resourceVersion", "value": "42"})
        );
        assert_eq!(
            patch[1],
            json!({"op": "remove", "path": "/spec/template/spec/containers/1"})
        );
    }

    #[test]
    fn changed_values_controllers_and_ignored_fields_are_not_additions() {
        let desired = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "a:1"}]}}}});
        let live = managed(
            json!([
                // A person changed a value pontoon sets: the re-apply puts it back.
                {"manager": "kubectl-set", "operation": "Update", "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"app\"}": {"f:image": {}}}}}}}},
                // A person scaled, and the HPA owns replicas too: left to the HPA.
                {"manager": "kubectl-scale", "operation": "Update", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
                {"manager": "kube-controller-manager", "operation": "Update", "subresource": "scale", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
                {"manager": "kubectl-annotate", "operation": "Update", "fieldsV1": {"f:metadata": {"f:annotations": {"f:note": {}}}}},
                // Not a person.
                {"manager": "some-operator", "operation": "Update", "fieldsV1": {"f:metadata": {"f:labels": {"f:x": {}}}}}
            ]),
            json!({"metadata": {"annotations": {"note": "hi"}, "labels": {"x": "y"}}, "spec": {"replicas": 4, "template": {"spec": {"containers": [{"name": "app", "image": "b:2"}]}}}}),
        );
        assert!(
            human_additions(
                &desired,
                &live,
                &humans(),
                &["/metadata/annotations".to_owned()],
                "pontoon"
            )
            .is_empty()
        );
    }

    #[test]
    fn the_owner_of_the_drifted_field_is_named_even_in_the_same_second_as_pontoon() {
        let live = json!({"data": {"colour": "red", "size": "m"}, "metadata": {"managedFields": [
            {"manager": "kubectl-edit", "operation": "Apply", "time": "2026-11-24T10:00:00Z",
             "fieldsV1": {"f:data": {"f:colour": {}}}},
            {"manager": "pontoon", "operation": "Apply", "time": "2026-11-24T10:00:00Z",
             "fieldsV1": {"f:data": {"f:size": {}}}}
        ]}});
        assert_eq!(
            changed_by(&live, &["/data/colour".to_owned()], "pontoon"),
            Some(("kubectl-edit".to_owned(), "2026-11-24T10:00:00Z".to_owned()))
        );
        assert_eq!(
            changed_by(&live, &["/data/size".to_owned()], "pontoon"),
            None
        );
    }

    #[test]
    fn fields_pontoon_applied_that_the_manifest_dropped_are_found() {
        let live = json!({"data": {"a": "1", "b": "2"}, "spec": {"ports": [{"port": 80, "protocol": "TCP"}]},
            "metadata": {"managedFields": [
            {"manager": "pontoon", "operation": "Apply", "fieldsV1": {"f:data": {"f:a": {}, "f:b": {}},
                "f:spec": {"f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:port": {}}}}}},
            {"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {"f:data": {"f:c": {}}}}
        ]}});
        assert!(applied_by_pontoon(&live, "pontoon"));
        // The port's protocol is the server's default: the entry is still the desired one.
        let desired = json!({"data": {"a": "1", "b": "2"}, "spec": {"ports": [{"port": 80}]}});
        assert!(owned_but_not_desired(&desired, &live, "pontoon").is_empty());
        let desired = json!({"data": {"a": "1"}, "spec": {"ports": [{"port": 81}]}});
        assert_eq!(
            owned_but_not_desired(&desired, &live, "pontoon"),
            ["/data/b", "/spec/ports/0"]
        );
        let updated = json!({"metadata": {"managedFields": [
            {"manager": "pontoon", "operation": "Update", "fieldsV1": {"f:data": {}}}]}});
        assert!(!applied_by_pontoon(&updated, "pontoon"));
    }

    #[test]
    fn the_newest_non_status_writer_is_named() {
        let live = json!({"metadata": {"managedFields": [
            {"manager": "pontoon", "operation": "Apply", "time": "2026-11-24T10:00:00Z"},
            {"manager": "kubectl-set", "operation": "Update", "time": "2026-11-24T10:05:00Z"},
            {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status", "time": "2026-11-24T10:06:00Z"}
        ]}});
        assert_eq!(
            last_writer(&live),
            ("kubectl-set".to_owned(), "2026-11-24T10:05:00Z".to_owned())
        );
    }

    #[test]
    fn a_value_pontoon_wrote_is_its_own_and_a_removed_field_is_nobodys() {
        let live = json!({"data": {"size": "l"}, "metadata": {"labels": {"app": "web"}, "managedFields": [
            {"manager": "pontoon", "operation": "Apply", "time": "2026-11-24T10:00:00Z",
             "fieldsV1": {"f:data": {"f:size": {}}, "f:metadata": {"f:labels": {"f:app": {}}}}}
        ]}});
        assert!(written_by_pontoon(
            &live,
            &["/data/size".to_owned()],
            "pontoon"
        ));
        // `tier` was removed: nobody owns it now.
        assert!(!written_by_pontoon(
            &live,
            &["/data/size".to_owned(), "/metadata/labels/tier".to_owned()],
            "pontoon"
        ));
        // Another owner's pontoon is not this one.
        assert!(!written_by_pontoon(
            &live,
            &["/data/size".to_owned()],
            "pontoon-blue"
        ));
        assert_eq!(
            changed_by(&live, &["/data/size".to_owned()], "pontoon-blue").map(|(m, _)| m),
            Some("pontoon".to_owned())
        );
    }
}
