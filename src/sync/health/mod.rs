//! Health of applied objects, read from the live object. One verdict per object, in this
//! order of precedence: the platform's rule (a Kind resource's `readyWhen`/`failedWhen`,
//! else `platform.yaml`'s for the group and kind, carried on the desired object), then
//! the built-in rule of the kind ([`builtin`]), then kstatus ([`kstatus`]). An object with
//! none of them and no status is healthy once applied, and says so ([`Health::NoRule`]).
//!
//! Kinds that never have anything to wait for (ConfigMaps, Secrets, RBAC, …) are not
//! read at all: sync lists and applies them as metadata only ([`read_whole`]).
//! Everything here is pure, so every rule has a unit test.

mod builtin;
mod custom;
mod kstatus;

use serde_json::Value;

use crate::desired::HealthRule;

/// What an object's status says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// Healthy once applied, because nothing can say otherwise: no rule applies and the
    /// object has no status. Reported, so that nobody takes it for a checked health.
    NoRule,
    /// Still rolling out; the text says what it waits for.
    Progressing(String),
    /// Will not get better by waiting.
    Failed(String),
}

/// How a result names an object of [`Health::NoRule`].
pub const NO_HEALTH_RULE: &str = "no health rule";

/// Kinds healthy by nature: nothing is ever waited for on them, so sync lists them and
/// has their applies answered with metadata only. Everything else (workloads, custom
/// resources, any kind this table does not know) is read whole for its health.
const NOTHING_TO_WAIT_FOR: &[(&str, &str)] = &[
    ("", "ConfigMap"),
    ("", "Secret"),
    ("", "ServiceAccount"),
    ("", "Namespace"),
    ("", "ResourceQuota"),
    ("", "LimitRange"),
    ("", "Endpoints"),
    ("batch", "CronJob"),
    ("discovery.k8s.io", "EndpointSlice"),
    ("rbac.authorization.k8s.io", "Role"),
    ("rbac.authorization.k8s.io", "RoleBinding"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("networking.k8s.io", "NetworkPolicy"),
    ("networking.k8s.io", "IngressClass"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("storage.k8s.io", "StorageClass"),
    ("node.k8s.io", "RuntimeClass"),
    ("coordination.k8s.io", "Lease"),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
    ),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    (
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicyBinding",
    ),
];

/// Whether objects of a group and kind are read whole (listed and answered with their
/// status) for their health: every kind but those healthy by nature, and those too when
/// the platform gave them a rule (`ruled`).
pub fn read_whole(group: &str, kind: &str, ruled: bool) -> bool {
    ruled || !NOTHING_TO_WAIT_FOR.contains(&(group, kind))
}

/// The API group of an `apiVersion` (`""` for the core group's `v1`).
fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

/// Health of one live object (read whole), by the platform's `rule` if it has one.
pub fn of(object: &Value, rule: Option<&HealthRule>) -> Health {
    if let Some(h) = rule.and_then(|r| custom::of(object, r)) {
        return h;
    }
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    let group = group_of(api_version);
    if !read_whole(group, kind, rule.is_some()) {
        return Health::Healthy;
    }
    match builtin::rule(group, kind) {
        Some(rule) => rule(object),
        None => kstatus::of(object),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::SourceRef;
    use serde_json::json;

    #[test]
    fn precedence_kind_rule_then_builtin_then_kstatus() {
        let rule = HealthRule {
            ready_when: Some("self.status.phase == 'Done'".into()),
            failed_when: None,
            message: None,
            source: SourceRef {
                file: "kinds/x.yaml".into(),
                line: 3,
            },
        };
        // A Job the platform reads by its own rule, not by the built-in one.
        let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
                         "status": {"phase": "Done", "conditions": []}});
        assert_eq!(of(&job, Some(&rule)), Health::Healthy);
        assert!(matches!(of(&job, None), Health::Progressing(_)));
        // A custom resource with a Ready condition: kstatus.
        let cr = json!({"apiVersion": "kafka.strimzi.io/v1beta2", "kind": "KafkaTopic",
                        "metadata": {"name": "t"},
                        "status": {"conditions": [{"type": "Ready", "status": "False", "message": "no broker"}]}});
        assert_eq!(
            of(&cr, None),
            Health::Progressing("not ready: no broker".into())
        );
        // A custom resource with no status and no rule.
        let rule_less = json!({"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
                               "metadata": {"name": "r"}, "spec": {}});
        assert_eq!(of(&rule_less, None), Health::NoRule);
    }

    #[test]
    fn kinds_healthy_by_nature_are_not_read_unless_ruled() {
        assert!(!read_whole("", "ConfigMap", false));
        assert!(!read_whole("rbac.authorization.k8s.io", "Role", false));
        assert!(read_whole("", "ConfigMap", true));
        assert!(read_whole("", "Service", false));
        assert!(!read_whole("batch", "CronJob", false));
        assert!(read_whole("example.com", "Widget", false));
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        assert_eq!(of(&cm, None), Health::Healthy);
        assert_eq!(group_of("apps/v1"), "apps");
        assert_eq!(group_of("v1"), "");
    }
}
