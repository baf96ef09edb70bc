//! Comparing what pontoon applied with a live object, the way server-side apply sees it:
//! every leaf pontoon set must still hold the applied value. Fields pontoon never set
//! (defaults, status, other controllers' fields) are never looked at. Pure: no cluster,
//! no clock.

use serde_json::Value;

/// Compares what pontoon applied with the live object: every leaf pontoon set must hold
/// the same value. Lists are compared element by element; a list that grew or shrank is
/// drift (a container added by hand). Returns the paths that differ.
pub fn differences(desired: &Value, live: &Value, ignore: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    walk(desired, live, String::new(), ignore, &mut out);
    out
}

fn walk(desired: &Value, live: &Value, path: String, ignore: &[String], out: &mut Vec<String>) {
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
                match l.get(k) {
                    Some(lv) => walk(dv, lv, p, ignore, out),
                    // The apiserver drops null, empty lists and empty maps it is given
                    // (`omitempty`): their absence is the applied value.
                    None if is_empty(dv) => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(d), Value::Array(l)) => {
            if d.len() != l.len() {
                out.push(path);
                return;
            }
            for (i, (dv, lv)) in d.iter().zip(l).enumerate() {
                walk(dv, lv, format!("{path}/{i}"), ignore, out);
            }
        }
        // Numbers may come back as another JSON number type (8080 vs 8080.0).
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        // Kubernetes writes int-or-string ports and quantities back as given, but a
        // number may be read back as a string of it.
        (Value::Number(a), Value::String(b)) | (Value::String(b), Value::Number(a))
            if a.to_string() == *b => {}
        (d, l) if d == l => {}
        _ => out.push(path),
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
}
