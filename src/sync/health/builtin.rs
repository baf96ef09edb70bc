//! The built-in health rules: kinds whose status Kubernetes' own controllers write in a
//! shape of their own, read the way `kubectl rollout status` (and kstatus) read them.
//! Pure functions over the live object, each with its unit test.

use serde_json::Value;

use super::Health;

/// A health rule: reads what an object's status says.
type Rule = fn(&Value) -> Health;

/// The kinds with a rule of their own, by API group and kind (any version).
const RULES: &[(&str, &str, Rule)] = &[
    ("apps", "Deployment", deployment),
    ("apps", "StatefulSet", statefulset),
    ("apps", "DaemonSet", daemonset),
    ("batch", "Job", job),
    ("apiextensions.k8s.io", "CustomResourceDefinition", crd),
    ("", "PersistentVolumeClaim", pvc),
    ("", "Service", service),
    ("autoscaling", "HorizontalPodAutoscaler", hpa),
    ("policy", "PodDisruptionBudget", pdb),
];

/// The built-in rule of a group and kind, if it has one.
pub(super) fn rule(group: &str, kind: &str) -> Option<Rule> {
    RULES
        .iter()
        .find(|(g, k, _)| *g == group && *k == kind)
        .map(|(_, _, rule)| *rule)
}

pub(super) fn int(v: &Value, path: &[&str]) -> Option<i64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_i64()
}

pub(super) fn condition<'a>(v: &'a Value, type_: &str) -> Option<&'a str> {
    v.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))?
        .get("status")?
        .as_str()
}

pub(super) fn condition_message<'a>(v: &'a Value, type_: &str) -> Option<&'a str> {
    v.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))?
        .get("message")?
        .as_str()
        .filter(|m| !m.is_empty())
}

pub(super) fn condition_reason<'a>(v: &'a Value, type_: &str) -> Option<&'a str> {
    v.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))?
        .get("reason")?
        .as_str()
}

/// The controller has seen the latest spec.
pub(super) fn observed(v: &Value) -> bool {
    let generation = int(v, &["metadata", "generation"]).unwrap_or(0);
    int(v, &["status", "observedGeneration"]).unwrap_or(-1) >= generation
}

fn deployment(v: &Value) -> Health {
    if condition_reason(v, "Progressing") == Some("ProgressDeadlineExceeded") {
        // The deployment controller's own words name the ReplicaSet that timed out, and
        // stay short enough for a commit status's description.
        let said = condition_message(v, "Progressing").filter(|m| !m.is_empty());
        return Health::Failed(
            said.map_or("Deployment exceeded its progress deadline", |m| m)
                .to_owned(),
        );
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

fn pvc(v: &Value) -> Health {
    match v.pointer("/status/phase").and_then(Value::as_str) {
        Some("Bound") => Health::Healthy,
        Some("Lost") => Health::Failed("PersistentVolumeClaim lost its volume".to_owned()),
        phase => Health::Progressing(format!(
            "PersistentVolumeClaim is {}, not Bound",
            phase.unwrap_or("not yet reported")
        )),
    }
}

/// An address assigned in `status.loadBalancer.ingress`.
fn has_address(v: &Value) -> bool {
    v.pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
}

/// Only a Service of type LoadBalancer waits for something: its address.
fn service(v: &Value) -> Health {
    let kind = v.pointer("/spec/type").and_then(Value::as_str);
    if kind != Some("LoadBalancer") || has_address(v) {
        Health::Healthy
    } else {
        Health::Progressing("waiting for the load balancer to assign an address".to_owned())
    }
}

/// An autoscaler that cannot scale its target says so in `AbleToScale`; one without a
/// status yet has nothing to wait for (the workload it scales carries the rollout). Not
/// Failed: the target may be created a moment later in the same sync.
fn hpa(v: &Value) -> Health {
    if condition(v, "AbleToScale") == Some("False") {
        let message = condition_message(v, "AbleToScale").unwrap_or("AbleToScale is False");
        return Health::Progressing(format!("autoscaler cannot scale: {message}"));
    }
    Health::Healthy
}

fn pdb(v: &Value) -> Health {
    if v.pointer("/status/observedGeneration").is_none() || !observed(v) {
        return Health::Progressing(
            "waiting for the disruption controller to observe the budget".to_owned(),
        );
    }
    let current = int(v, &["status", "currentHealthy"]).unwrap_or(0);
    let desired = int(v, &["status", "desiredHealthy"]).unwrap_or(0);
    if current < desired {
        Health::Progressing(format!(
            "{current} of the {desired} healthy pods the budget needs"
        ))
    } else {
        Health::Healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn of(object: &Value) -> Health {
        super::super::of(object, None)
    }

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
        assert_eq!(
            h,
            Health::Failed("Deployment exceeded its progress deadline".into())
        );
    }

    #[test]
    fn deployment_past_its_deadline_says_what_the_controller_said() {
        let h = of(&deploy(
            1,
            json!({"observedGeneration": 1, "conditions": [
            {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
             "message": "Deployment does not have minimum availability."},
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
             "message": "ReplicaSet \"web-5d8f7c\" has timed out progressing."}]}),
        ));
        assert_eq!(
            h,
            Health::Failed("ReplicaSet \"web-5d8f7c\" has timed out progressing.".into())
        );
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
    fn core_kinds_that_wait_for_something() {
        let v = |api: &str, kind: &str, spec: Value, status: Value| {
            json!({"apiVersion": api, "kind": kind, "metadata": {"name": "x", "generation": 1},
                   "spec": spec, "status": status})
        };
        let lb = json!({"type": "LoadBalancer"});
        let address = json!({"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}});
        let table: Vec<(Value, Health)> = vec![
            (
                v(
                    "v1",
                    "PersistentVolumeClaim",
                    json!({}),
                    json!({"phase": "Pending"}),
                ),
                Health::Progressing("PersistentVolumeClaim is Pending, not Bound".into()),
            ),
            (
                v(
                    "v1",
                    "PersistentVolumeClaim",
                    json!({}),
                    json!({"phase": "Bound"}),
                ),
                Health::Healthy,
            ),
            (
                v(
                    "v1",
                    "PersistentVolumeClaim",
                    json!({}),
                    json!({"phase": "Lost"}),
                ),
                Health::Failed("PersistentVolumeClaim lost its volume".into()),
            ),
            (
                v("v1", "Service", lb.clone(), json!({"loadBalancer": {}})),
                Health::Progressing("waiting for the load balancer to assign an address".into()),
            ),
            (v("v1", "Service", lb, address.clone()), Health::Healthy),
            (
                v(
                    "v1",
                    "Service",
                    json!({"type": "ClusterIP"}),
                    json!({"loadBalancer": {}}),
                ),
                Health::Healthy,
            ),
            (
                // No address yet, and none needed: many ingress controllers never write one.
                v(
                    "networking.k8s.io/v1",
                    "Ingress",
                    json!({}),
                    json!({"loadBalancer": {}}),
                ),
                Health::Healthy,
            ),
            (
                v(
                    "autoscaling/v2",
                    "HorizontalPodAutoscaler",
                    json!({}),
                    json!({"conditions": [
                    {"type": "AbleToScale", "status": "False", "reason": "FailedGetScale",
                     "message": "deployments/scale.apps \"web\" not found"}]}),
                ),
                Health::Progressing(
                    "autoscaler cannot scale: deployments/scale.apps \"web\" not found".into(),
                ),
            ),
            (
                v(
                    "autoscaling/v2",
                    "HorizontalPodAutoscaler",
                    json!({}),
                    json!({}),
                ),
                Health::Healthy,
            ),
            (
                v("policy/v1", "PodDisruptionBudget", json!({}), json!({})),
                Health::Progressing(
                    "waiting for the disruption controller to observe the budget".into(),
                ),
            ),
            (
                v(
                    "policy/v1",
                    "PodDisruptionBudget",
                    json!({}),
                    json!({"observedGeneration": 1, "currentHealthy": 1, "desiredHealthy": 2}),
                ),
                Health::Progressing("1 of the 2 healthy pods the budget needs".into()),
            ),
            (
                v(
                    "policy/v1",
                    "PodDisruptionBudget",
                    json!({}),
                    json!({"observedGeneration": 1, "currentHealthy": 2, "desiredHealthy": 2}),
                ),
                Health::Healthy,
            ),
        ];
        for (object, want) in table {
            assert_eq!(of(&object), want, "{object}");
        }
    }

    #[test]
    fn workloads_without_a_status_are_not_healthy() {
        for (group, kind, _) in RULES {
            let api_version = if group.is_empty() {
                "v1".to_owned()
            } else {
                format!("{group}/v1")
            };
            let empty = json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": "x", "generation": 1}});
            let waits = !matches!(*kind, "Service" | "HorizontalPodAutoscaler");
            assert_eq!(
                of(&empty) != Health::Healthy,
                waits,
                "{kind} without status"
            );
        }
    }
}
