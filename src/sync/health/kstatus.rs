//! The default for any kind without a rule of its own: kstatus, the conventions Flux and
//! `kubectl wait` read (sigs.k8s.io/cli-utils `pkg/kstatus/status`). In its order: an
//! object being deleted is not ready; a status of an older generation than the object's
//! says nothing yet; `Reconciling=True` is still in progress and `Stalled=True` has
//! failed, each with the condition's message; then a `Ready` condition, widely used
//! although no convention, is read; with none of these the object is current. An object
//! with no status at all has nothing to read: healthy once applied, reported as having
//! no health rule.

use serde_json::Value;

use super::Health;
use super::builtin::{condition, condition_message, condition_reason, int};

/// Health of an object by the kstatus conventions.
pub(super) fn of(v: &Value) -> Health {
    let status = v.get("status");
    if status.is_none_or(|s| s.as_object().is_none_or(|m| m.is_empty())) {
        return Health::NoRule;
    }
    if v.pointer("/metadata/deletionTimestamp").is_some() {
        return Health::Progressing("being deleted".to_owned());
    }
    if let Some(stale) = stale_generation(v) {
        return Health::Progressing(stale);
    }
    if condition(v, "Reconciling") == Some("True") {
        return Health::Progressing(said(v, "Reconciling"));
    }
    if condition(v, "Stalled") == Some("True") {
        return Health::Failed(said(v, "Stalled"));
    }
    match condition(v, "Ready") {
        Some("True") | None => Health::Healthy,
        Some(_) => Health::Progressing(format!("not ready: {}", said(v, "Ready"))),
    }
}

/// Why the status is of an older generation than the object, when it is: the object's
/// controller has not yet seen its latest spec. Only a status that says which generation
/// it observed can be stale.
pub(super) fn stale_generation(v: &Value) -> Option<String> {
    let observed = int(v, &["status", "observedGeneration"])?;
    let generation = int(v, &["metadata", "generation"])?;
    (observed != generation).then(|| {
        format!("generation {generation} not yet observed (the status is of generation {observed})")
    })
}

/// What a condition says: its message, else its reason, else its type.
fn said(v: &Value, type_: &str) -> String {
    condition_message(v, type_)
        .or_else(|| condition_reason(v, type_))
        .unwrap_or(type_)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(generation: i64, status: Value) -> Value {
        json!({"apiVersion": "example.com/v1", "kind": "Widget",
               "metadata": {"name": "w", "generation": generation}, "status": status})
    }

    fn cond(type_: &str, status: &str, message: &str) -> Value {
        json!({"type": type_, "status": status, "reason": "Why", "message": message})
    }

    #[test]
    fn the_kstatus_conventions_in_their_order() {
        let table: Vec<(Value, Health)> = vec![
            (
                json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}),
                Health::NoRule,
            ),
            (object(1, json!({})), Health::NoRule),
            (object(1, json!({"phase": "whatever"})), Health::Healthy),
            (
                object(1, json!({"conditions": [cond("Ready", "True", "")]})),
                Health::Healthy,
            ),
            (
                object(
                    1,
                    json!({"conditions": [cond("Ready", "False", "waiting for the broker")]}),
                ),
                Health::Progressing("not ready: waiting for the broker".into()),
            ),
            (
                object(1, json!({"conditions": [cond("Ready", "Unknown", "")]})),
                Health::Progressing("not ready: Why".into()),
            ),
            (
                object(
                    1,
                    json!({"conditions": [cond("Reconciling", "True", "creating the topic")]}),
                ),
                Health::Progressing("creating the topic".into()),
            ),
            (
                object(
                    1,
                    json!({"conditions": [
                    cond("Ready", "False", "x"), cond("Stalled", "True", "quota exceeded")]}),
                ),
                Health::Failed("quota exceeded".into()),
            ),
            (
                object(
                    3,
                    json!({"observedGeneration": 2, "conditions": [cond("Ready", "True", "")]}),
                ),
                Health::Progressing(
                    "generation 3 not yet observed (the status is of generation 2)".into(),
                ),
            ),
            (
                object(
                    2,
                    json!({"observedGeneration": 2, "conditions": [cond("Ready", "True", "")]}),
                ),
                Health::Healthy,
            ),
        ];
        for (v, want) in table {
            assert_eq!(of(&v), want, "{v}");
        }
        let mut deleting = object(1, json!({"conditions": []}));
        deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert_eq!(of(&deleting), Health::Progressing("being deleted".into()));
    }
}
