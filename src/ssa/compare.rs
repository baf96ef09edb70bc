//! Comparing what pontoon applied with a live object, the way server-side apply sees it:
//! every leaf pontoon set must still hold the applied value. Fields pontoon never set
//! (defaults, status, other controllers' fields) are never looked at. Lists are matched
//! as SSA matches them: a list whose entries the live object's `managedFields` key by
//! fields (`k:{"name":"app"}`, from the schema's `x-kubernetes-list-map-keys`) is matched
//! entry by entry on those keys, a set (`v:`) by value, and only other lists (atomic, or
//! not described) by position and length. An entry another manager added to a keyed list
//! or a set is not pontoon's drift (a person's addition is found by `managed_fields`).
//!
//! A difference that may be the server's own rewriting of the applied value rather than
//! a change (a quantity such as `0.5` stored as `500m`, a zero value such as `false` an
//! `omitempty` field drops) is marked as such, so a caller that must not act on a false
//! difference can ask the server instead. Pure: no cluster, no clock.

use serde_json::{Map, Value};

/// Compares what pontoon applied with the live object: every leaf pontoon set must hold
/// the same value. Returns the paths that differ.
pub fn differences(desired: &Value, live: &Value, ignore: &[String]) -> Vec<String> {
    judged_differences(desired, live, ignore)
        .into_iter()
        .map(|d| d.path)
        .collect()
}

/// One field that no longer holds the applied value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// A JSON pointer into the live object (keyed list entries at their live index).
    pub path: String,
    /// Set when the server may have written the applied value this way itself (a
    /// normalised quantity, a dropped zero value): the difference may not be one.
    pub maybe_normalised: Option<&'static str>,
}

/// As [`differences`], with each difference marked when the server may have made it.
pub fn judged_differences(desired: &Value, live: &Value, ignore: &[String]) -> Vec<Difference> {
    let guide = list_types(live);
    let mut out = Vec::new();
    walk(desired, live, Some(&guide), String::new(), ignore, &mut out);
    out
}

fn certain(path: String) -> Difference {
    Difference {
        path,
        maybe_normalised: None,
    }
}

/// Every manager's `fieldsV1` of the live object merged into one tree: it says how each
/// list the apiserver has seen written is keyed, whoever wrote it.
fn list_types(live: &Value) -> Value {
    let mut merged = Value::Object(Map::new());
    for entry in live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(fields) = entry.get("fieldsV1") {
            merge(&mut merged, fields);
        }
    }
    merged
}

fn merge(into: &mut Value, from: &Value) {
    let (Value::Object(into), Value::Object(from)) = (into, from) else {
        return;
    };
    for (k, v) in from {
        merge(
            into.entry(k.clone())
                .or_insert_with(|| Value::Object(Map::new())),
            v,
        );
    }
}

/// How a list is matched, from the `fieldsV1` keys of its entries.
enum ListType {
    /// Entries keyed by these fields.
    Map(Vec<String>),
    /// Entries are their own keys.
    Set,
    Atomic,
}

fn list_type(guide: Option<&Value>) -> ListType {
    let keys = guide.and_then(Value::as_object).into_iter().flatten();
    for (k, _) in keys {
        if let Some(json) = k.strip_prefix("k:") {
            if let Ok(fields) = serde_json::from_str::<Map<String, Value>>(json) {
                return ListType::Map(fields.keys().cloned().collect());
            }
        } else if k.starts_with("v:") {
            return ListType::Set;
        }
    }
    ListType::Atomic
}

fn walk(
    desired: &Value,
    live: &Value,
    guide: Option<&Value>,
    path: String,
    ignore: &[String],
    out: &mut Vec<Difference>,
) {
    if ignore
        .iter()
        .any(|i| path == *i || path.starts_with(&format!("{i}/")))
    {
        return;
    }
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => {
            for (k, dv) in d {
                let p = format!("{path}/{}", k.replace('~', "~0").replace('/', "~1"));
                let child = guide.and_then(|g| g.get(format!("f:{k}")));
                match l.get(k) {
                    Some(lv) => walk(dv, lv, child, p, ignore, out),
                    // The apiserver drops null, empty lists and empty maps it is given
                    // (`omitempty`): their absence is the applied value.
                    None if is_empty(dv) => {}
                    None if is_zero(dv) => out.push(Difference {
                        path: p,
                        maybe_normalised: Some("a zero value the server may leave out"),
                    }),
                    // A Secret's `stringData` is stored in `data`, never as written.
                    None if path.is_empty() && k == "stringData" => out.push(Difference {
                        path: p,
                        maybe_normalised: Some(
                            "a Secret's stringData, which the server keeps in data",
                        ),
                    }),
                    None => out.push(certain(p)),
                }
            }
        }
        (Value::Array(d), Value::Array(l)) => match list_type(guide) {
            ListType::Map(keys) => {
                for dv in d {
                    let key: Map<String, Value> = keys
                        .iter()
                        .filter_map(|k| dv.get(k).map(|v| (k.clone(), v.clone())))
                        .collect();
                    let found = l.iter().position(|lv| {
                        key.iter()
                            .all(|(k, v)| lv.get(k).is_some_and(|lv| same(v, lv)))
                    });
                    match found {
                        Some(i) => {
                            let entry = guide.and_then(|g| {
                                g.as_object()?.iter().find_map(|(gk, gv)| {
                                    let gkey: Map<String, Value> =
                                        serde_json::from_str(gk.strip_prefix("k:")?).ok()?;
                                    gkey.iter()
                                        .all(|(k, v)| key.get(k).is_some_and(|kv| same(kv, v)))
                                        .then_some(gv)
                                })
                            });
                            walk(dv, &l[i], entry, format!("{path}/{i}"), ignore, out);
                        }
                        None => out.push(certain(path.clone())),
                    }
                }
            }
            ListType::Set => {
                if d.iter().any(|dv| !l.iter().any(|lv| same(dv, lv))) {
                    out.push(certain(path));
                }
            }
            ListType::Atomic => {
                if d.len() != l.len() {
                    out.push(certain(path));
                    return;
                }
                for (i, (dv, lv)) in d.iter().zip(l).enumerate() {
                    walk(dv, lv, None, format!("{path}/{i}"), ignore, out);
                }
            }
        },
        (d, l) if same(d, l) => {}
        (d, l) if quantity_like(d) && quantity_like(l) => out.push(Difference {
            path,
            maybe_normalised: Some("a quantity or number the server may write its own way"),
        }),
        _ => out.push(certain(path)),
    }
}

/// A number, or a string that reads as a Kubernetes quantity (`0.5`, `500m`, `1Gi`,
/// `1e3`): the server stores quantities in a canonical form of its own.
fn quantity_like(v: &Value) -> bool {
    let s = match v {
        Value::Number(_) => return true,
        Value::String(s) => s.as_str(),
        _ => return false,
    };
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let digits = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits);
    let mantissa = number.chars().any(|c| c.is_ascii_digit()) && number.matches('.').count() <= 1;
    let exponent = suffix
        .strip_prefix(['e', 'E'])
        .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e))
        .is_some_and(|e| !e.is_empty() && e.chars().all(|c| c.is_ascii_digit()));
    const SUFFIXES: [&str; 16] = [
        "", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
    ];
    mantissa && (exponent || SUFFIXES.contains(&suffix))
}

/// A value Go's `omitempty` leaves out of what the server returns.
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// Scalars equal as the apiserver hands them back: a number may come back as another JSON
/// number type (8080 vs 8080.0), and an int-or-string as a string of it.
fn same(d: &Value, l: &Value) -> bool {
    match (d, l) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Number(a), Value::String(b)) | (Value::String(b), Value::Number(a)) => {
            a.to_string() == *b
        }
        (d, l) => d == l,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_controller_fields_are_not_drift() {
        let desired = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "a:1", "ports": [{"containerPort": 8080}]}]}}}});
        let live = json!({"spec": {"replicas": 7, "template": {"spec": {"containers": [{"name": "app", "image": "a:1", "imagePullPolicy": "IfNotPresent",
                          "ports": [{"containerPort": 8080, "protocol": "TCP"}]}]}}}, "status": {"replicas": 7}});
        assert!(differences(&desired, &live, &[]).is_empty());
    }

    #[test]
    fn empty_lists_and_maps_the_apiserver_dropped_are_not_drift() {
        let desired = json!({"spec": {"containers": [{"name": "app", "args": [], "env": null, "resources": {}}]}});
        let live = json!({"spec": {"containers": [{"name": "app"}]}});
        assert!(differences(&desired, &live, &[]).is_empty());
        // A list pontoon gave entries to must still hold them.
        let desired = json!({"spec": {"containers": [{"name": "app", "args": ["--once"]}]}});
        assert_eq!(
            differences(&desired, &live, &[]),
            ["/spec/containers/0/args"]
        );
    }

    #[test]
    fn changed_removed_and_added_entries_are_drift() {
        let desired = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": "a:1"}]}});
        let live = json!({"metadata": {"labels": {}}, "spec": {"containers": [{"name": "app", "image": "a:2"}, {"name": "debug", "image": "busybox"}]}});
        assert_eq!(
            differences(&desired, &live, &[]),
            ["/metadata/labels/app", "/spec/containers"]
        );
        let live = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": "a:2"}]}});
        assert_eq!(
            differences(&desired, &live, &[]),
            ["/spec/containers/0/image"]
        );
        assert!(differences(&desired, &live, &["/spec/containers".to_owned()]).is_empty());
    }

    /// `managedFields` that key containers and env by name, as the apiserver writes them
    /// for a Deployment; `controller` owns the env entry it added.
    fn keyed(live: Value) -> Value {
        let mut live = live;
        live["metadata"]["managedFields"] = json!([
            {"manager": "pontoon", "operation": "Apply", "fieldsV1": {"f:spec": {"f:containers": {
                "k:{\"name\":\"app\"}": {".": {}, "f:name": {}, "f:image": {},
                    "f:env": {"k:{\"name\":\"A\"}": {".": {}, "f:name": {}, "f:value": {}}}}}}}},
            {"manager": "sidecar-injector", "operation": "Update", "fieldsV1": {"f:spec": {"f:containers": {
                "k:{\"name\":\"app\"}": {"f:env": {"k:{\"name\":\"B\"}": {".": {}, "f:name": {}, "f:value": {}}}},
                "k:{\"name\":\"proxy\"}": {".": {}, "f:name": {}, "f:image": {}}}}}}
        ]);
        live
    }

    #[test]
    fn keyed_list_entries_match_by_their_keys_and_others_entries_are_not_drift() {
        let desired = json!({"spec": {"containers": [{"name": "app", "image": "a:1", "env": [{"name": "A", "value": "1"}]}]}});
        // A controller put its sidecar first and appended an env var of its own.
        let live = keyed(json!({"metadata": {}, "spec": {"containers": [
            {"name": "proxy", "image": "envoy"},
            {"name": "app", "image": "a:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]}}));
        assert!(
            differences(&desired, &live, &[]).is_empty(),
            "{:?}",
            differences(&desired, &live, &[])
        );
        // Pontoon's own entry changed, or gone, is still drift, at the entry's live index.
        let mut changed = live.clone();
        changed["spec"]["containers"][1]["env"][0]["value"] = json!("9");
        assert_eq!(
            differences(&desired, &changed, &[]),
            ["/spec/containers/1/env/0/value"]
        );
        let mut gone = live.clone();
        gone["spec"]["containers"][1]["env"] = json!([{"name": "B", "value": "2"}]);
        assert_eq!(
            differences(&desired, &gone, &[]),
            ["/spec/containers/1/env"]
        );
    }

    #[test]
    fn without_managed_fields_lists_are_compared_by_position() {
        let desired = json!({"spec": {"containers": [{"name": "app", "env": [{"name": "A"}]}]}});
        let live = json!({"spec": {"containers": [{"name": "app", "env": [{"name": "A"}, {"name": "B"}]}]}});
        assert_eq!(
            differences(&desired, &live, &[]),
            ["/spec/containers/0/env"]
        );
    }

    #[test]
    fn what_the_server_may_have_rewritten_is_marked_and_the_rest_is_certain() {
        let desired = json!({"spec": {"cpu": "0.5", "memory": 1024, "hostNetwork": false,
            "image": "a:1", "name": "x", "tier": ""}});
        let live = json!({"spec": {"cpu": "500m", "memory": "1Ki", "image": "a:2", "name": "y"}});
        let judged = judged_differences(&desired, &live, &[]);
        let marked: Vec<(&str, bool)> = judged
            .iter()
            .map(|d| (d.path.as_str(), d.maybe_normalised.is_some()))
            .collect();
        assert_eq!(
            marked,
            [
                ("/spec/cpu", true),
                ("/spec/hostNetwork", true),
                ("/spec/image", false),
                ("/spec/memory", true),
                ("/spec/name", false),
                ("/spec/tier", true),
            ]
        );
        let secret = json!({"stringData": {"password": "x"}});
        let stored = json!({"data": {"password": "eA=="}});
        let judged = judged_differences(&secret, &stored, &[]);
        assert!(judged[0].maybe_normalised.is_some(), "{judged:?}");
        for q in ["1", "0.5", "500m", "1Gi", "2Ei", "1e3", "+1.5E-2", ".5"] {
            assert!(quantity_like(&json!(q)), "{q}");
        }
        for q in ["a:1", "1h", "1.2.3", "e3", "", "1Gb", "m"] {
            assert!(!quantity_like(&json!(q)), "{q}");
        }
    }

    #[test]
    fn a_set_holds_what_pontoon_put_in_it_whatever_else_it_holds() {
        let desired = json!({"metadata": {"finalizers": ["a"]}});
        let mut live = json!({"metadata": {"finalizers": ["b", "a"]}});
        live["metadata"]["managedFields"] = json!([{"manager": "pontoon", "fieldsV1": {"f:metadata": {"f:finalizers": {"v:\"a\"": {}}}}}]);
        assert!(differences(&desired, &live, &[]).is_empty());
        live["metadata"]["finalizers"] = json!(["b"]);
        assert_eq!(differences(&desired, &live, &[]), ["/metadata/finalizers"]);
    }
}
