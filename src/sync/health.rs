//! Health of applied objects, read from their status the way `kubectl rollout status`
//! does. Pure functions over the live object, so every rule has a unit test.

use serde_json::Value;

/// What an object's status says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// Still rolling out; the text says what it waits for.
    Progressing(String),
    /// Will not get better by waiting.
    Failed(String),
}

/// A health rule: reads what an object's status says.
type Rule = fn(&Value) -> Health;

/// The kinds whose health is read from their status, each with its rule. Every other kind
/// is healthy once applied.
const RULES: &[(&str, &str, Rule)] = &[
    ("apps/v1", "Deployment", deployment),
    ("apps/v1", "StatefulSet", statefulset),
    ("apps/v1", "DaemonSet", daemonset),
    ("batch/v1", "Job", job),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition", crd),
];

fn rule(api_version: &str, kind: &str) -> Option<Rule> {
    RULES
        .iter()
        .find(|(v, k, _)| *v == api_version && *k == kind)
        .map(|(_, _, rule)| *rule)
}

/// Whether a kind's health is read from its status (others are healthy once applied).
pub fn has_rule(api_version: &str, kind: &str) -> bool {
    rule(api_version, kind).is_some()
}

/// Health of one live object. Kinds without a rule are healthy once applied.
pub fn of(object: &Value) -> Health {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    rule(api_version, kind).map_or(Health::Healthy, |rule| rule(object))
}

fn int(v: &Value, path: &[&str]) -> Option<i64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_i64()
}

fn condition<'a>(v: &'a Value, type_: &str) -> Option<&'a str> {
    v.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))?
        .get("status")?
        .as_str()
}

fn condition_reason<'a>(v: &'a Value, type_: &str) -> Option<&'a str> {
    v.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))?
        .get("reason")?
        .as_str()
}

/// The controller has seen the latest spec.
fn observed(v: &Value) -> bool {
    let generation = int(v, &["metadata", "generation"]).unwrap_or(0);
    int(v, &["status", "observedGeneration"]).unwrap_or(-1) >= generation
}

fn deployment(v: &Value) -> Health {
    if condition_reason(v, "Progressing") == Some("ProgressDeadlineExceeded") {
        return Health::Failed("Deployment exceeded its progress deadline".to_owned());
    }
    if !observed(v) {
        return Health::Progressing(
            "waiting for the Deployment controller to observe the new spec".to_owned(),
        );
    }
    let want = int(v, &["spec", "replicas"]).unwrap_or(1);
    let updated = int(v, &["status", "updatedReplicas"]).unwrap_or(0);
    let replicas = int(v, &["status", "replicas"]).unwrap_or(0);
    let available = int(v, &["status", "availableReplicas"]).unwrap_or(0);
    if updated < want {
        Health::Progressing(format!("{updated} of {want} replicas updated"))
    } else if replicas > updated {
        Health::Progressing(format!(
            "{} old replicas pending termination",
            replicas - updated
        ))
    } else if available < updated {
        Health::Progressing(format!(
            "{available} of {updated} updated replicas available"
        ))
    } else {
        Health::Healthy
    }
}

fn statefulset(v: &Value) -> Health {
    if !observed(v) {
        return Health::Progressing(
            "waiting for the StatefulSet controller to observe the new spec".to_owned(),
        );
    }
    let want = int(v, &["spec", "replicas"]).unwrap_or(1);
    let ready = int(v, &["status", "readyReplicas"]).unwrap_or(0);
    let updated = int(v, &["status", "updatedReplicas"]).unwrap_or(0);
    if updated < want {
        Health::Progressing(format!("{updated} of {want} replicas updated"))
    } else if ready < want {
        Health::Progressing(format!("{ready} of {want} replicas ready"))
    } else {
        Health::Healthy
    }
}

fn daemonset(v: &Value) -> Health {
    if !observed(v) {
        return Health::Progressing(
            "waiting for the DaemonSet controller to observe the new spec".to_owned(),
        );
    }
    let want = int(v, &["status", "desiredNumberScheduled"]).unwrap_or(0);
    let updated = int(v, &["status", "updatedNumberScheduled"]).unwrap_or(0);
    let ready = int(v, &["status", "numberReady"]).unwrap_or(0);
    if updated < want {
        Health::Progressing(format!("{updated} of {want} pods updated"))
    } else if ready < want {
        Health::Progressing(format!("{ready} of {want} pods ready"))
    } else {
        Health::Healthy
    }
}

fn crd(v: &Value) -> Health {
    if condition(v, "Established") == Some("True") {
        Health::Healthy
    } else {
        Health::Progressing("CRD not yet established".to_owned())
    }
}

fn job(v: &Value) -> Health {
    if condition(v, "Failed") == Some("True") {
        let reason = condition_reason(v, "Failed").unwrap_or("Failed");
        return Health::Failed(format!("Job failed: {reason}"));
    }
    if condition(v, "Complete") == Some("True") {
        Health::Healthy
    } else {
        Health::Progressing("Job has not completed".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy(generation: i64, status: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "generation": generation},
               "spec": {"replicas": 3}, "status": status})
    }

    #[test]
    fn deployment_waits_for_observed_generation() {
        let h = of(&deploy(
            2,
            json!({"observedGeneration": 1, "updatedReplicas": 3, "replicas": 3, "availableReplicas": 3}),
        ));
        assert!(matches!(h, Health::Progressing(m) if m.contains("observe")));
    }

    #[test]
    fn deployment_rollout_steps() {
        let h = of(&deploy(
            1,
            json!({"observedGeneration": 1, "updatedReplicas": 1, "replicas": 3, "availableReplicas": 3}),
        ));
        assert_eq!(h, Health::Progressing("1 of 3 replicas updated".into()));
        let h = of(&deploy(
            1,
            json!({"observedGeneration": 1, "updatedReplicas": 3, "replicas": 4, "availableReplicas": 3}),
        ));
        assert_eq!(
            h,
            Health::Progressing("1 old replicas pending termination".into())
        );
        let h = of(&deploy(
            1,
            json!({"observedGeneration": 1, "updatedReplicas": 3, "replicas": 3, "availableReplicas": 2}),
        ));
        assert_eq!(
            h,
            Health::Progressing("2 of 3 updated replicas available".into())
        );
        let h = of(&deploy(
            1,
            json!({"observedGeneration": 1, "updatedReplicas": 3, "replicas": 3, "availableReplicas": 3}),
        ));
        assert_eq!(h, Health::Healthy);
    }

    #[test]
    fn deployment_past_its_deadline_failed() {
        let h = of(&deploy(
            1,
            json!({"observedGeneration": 1, "conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}),
        ));
        assert!(matches!(h, Health::Failed(_)));
    }

    #[test]
    fn jobs_and_crds() {
        let job = |conds: Value| json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "status": {"conditions": conds}});
        assert_eq!(
            of(&job(json!([{"type": "Complete", "status": "True"}]))),
            Health::Healthy
        );
        assert!(
            matches!(of(&job(json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]))), Health::Failed(m) if m.contains("BackoffLimitExceeded"))
        );
        assert!(matches!(of(&job(json!([]))), Health::Progressing(_)));
        let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "x"},
                         "status": {"conditions": [{"type": "Established", "status": "True"}]}});
        assert_eq!(of(&crd), Health::Healthy);
    }

    #[test]
    fn statefulset_and_daemonset() {
        let sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "generation": 1},
                         "spec": {"replicas": 2}, "status": {"observedGeneration": 1, "updatedReplicas": 2, "readyReplicas": 1}});
        assert_eq!(
            of(&sts),
            Health::Progressing("1 of 2 replicas ready".into())
        );
        let ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "generation": 1},
                        "status": {"observedGeneration": 1, "desiredNumberScheduled": 2, "updatedNumberScheduled": 2, "numberReady": 2}});
        assert_eq!(of(&ds), Health::Healthy);
    }

    #[test]
    fn every_kind_with_a_rule_is_read_from_its_status() {
        for (api_version, kind, _) in RULES {
            assert!(has_rule(api_version, kind));
            let empty = json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": "x", "generation": 1}});
            assert_ne!(of(&empty), Health::Healthy, "{kind} without status");
        }
        assert!(!has_rule("v1", "ConfigMap"));
    }

    #[test]
    fn other_kinds_are_healthy_once_applied() {
        assert_eq!(
            of(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})),
            Health::Healthy
        );
    }
}
