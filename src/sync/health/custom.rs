//! The platform's own health rules: `readyWhen` / `failedWhen` CEL expressions over the
//! live object (`self`), from a Kind resource or from `platform.yaml` for a group and
//! kind. Evaluated with the renderer's CEL and its limits; the expressions were compiled
//! when the repo rendered, so what can go wrong here is only what the live object holds.

use serde_json::Value;

use super::Health;
use super::kstatus::stale_generation;
use crate::desired::HealthRule;
use crate::render::expr::Scope;

/// Health by the platform's rule, or `None` when the rule leaves it to the built-in rules
/// and kstatus (it has only `failedWhen`, and that does not hold).
///
/// A status of an older generation than the object says nothing yet. `failedWhen` comes
/// first; an expression that cannot be evaluated (a field the status does not have yet)
/// does not hold, and a `readyWhen` that cannot be evaluated is not yet ready.
pub(super) fn of(v: &Value, rule: &HealthRule) -> Option<Health> {
    if let Some(stale) = stale_generation(v) {
        return Some(Health::Progressing(stale));
    }
    let scope = Scope::new(&[("self", v)]);
    if let Some(failed_when) = &rule.failed_when
        && scope.condition(failed_when) == Ok(true)
    {
        let why =
            message(&scope, rule).unwrap_or_else(|| format!("failedWhen holds: {failed_when}"));
        return Some(Health::Failed(format!("{why} ({})", rule.source)));
    }
    let ready_when = rule.ready_when.as_ref()?;
    Some(match scope.condition(ready_when) {
        Ok(true) => Health::Healthy,
        Ok(false) => Health::Progressing(
            message(&scope, rule).unwrap_or_else(|| format!("waiting for readyWhen: {ready_when}")),
        ),
        Err(e) => Health::Progressing(format!("waiting for readyWhen: {e}")),
    })
}

/// The rule's message about `self`, if it has one and its expressions can be evaluated
/// (a status not written yet leaves the default message).
fn message(scope: &Scope, rule: &HealthRule) -> Option<String> {
    let text = rule.message.as_ref()?;
    match scope.render(&Value::String(text.clone())).ok()? {
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::SourceRef;
    use serde_json::json;

    fn rule(ready: Option<&str>, failed: Option<&str>, message: Option<&str>) -> HealthRule {
        HealthRule {
            ready_when: ready.map(str::to_owned),
            failed_when: failed.map(str::to_owned),
            message: message.map(str::to_owned),
            source: SourceRef {
                file: "platform.yaml".into(),
                line: 7,
            },
        }
    }

    fn cluster(phase: Option<&str>) -> Value {
        let mut v = json!({"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
                           "metadata": {"name": "db", "generation": 1}});
        if let Some(p) = phase {
            v["status"] = json!({"phase": p, "phaseReason": "disk full"});
        }
        v
    }

    #[test]
    fn ready_and_failed_expressions() {
        let cnpg = rule(
            Some("self.status.phase == 'Cluster in healthy state'"),
            Some("self.status.phase.startsWith('Failed')"),
            Some("${self.status.phase}: ${self.status.phaseReason}"),
        );
        let table = [
            (
                cluster(Some("Cluster in healthy state")),
                Some(Health::Healthy),
            ),
            (
                cluster(Some("Setting up primary")),
                Some(Health::Progressing("Setting up primary: disk full".into())),
            ),
            (
                cluster(Some("Failed to create")),
                Some(Health::Failed(
                    "Failed to create: disk full (platform.yaml:7)".into(),
                )),
            ),
        ];
        for (v, want) in table {
            assert_eq!(of(&v, &cnpg), want, "{v}");
        }
        // No status yet: the failed rule cannot hold, the ready rule is not yet true.
        assert!(matches!(
            of(&cluster(None), &cnpg),
            Some(Health::Progressing(m)) if m.starts_with("waiting for readyWhen:")
        ));
    }

    #[test]
    fn defaults_without_a_message_and_a_failed_rule_alone() {
        let ready = rule(Some("self.status.phase == 'ok'"), None, None);
        assert_eq!(
            of(&cluster(Some("starting")), &ready),
            Some(Health::Progressing(
                "waiting for readyWhen: self.status.phase == 'ok'".into()
            ))
        );
        let failed = rule(None, Some("self.status.phase == 'broken'"), None);
        assert_eq!(
            of(&cluster(Some("broken")), &failed),
            Some(Health::Failed(
                "failedWhen holds: self.status.phase == 'broken' (platform.yaml:7)".into()
            ))
        );
        // Not failed: the built-in rules and kstatus decide.
        assert_eq!(of(&cluster(Some("fine")), &failed), None);
    }

    #[test]
    fn a_stale_status_is_not_read() {
        let ready = rule(Some("true"), None, None);
        let mut v = cluster(Some("x"));
        v["metadata"]["generation"] = json!(2);
        v["status"]["observedGeneration"] = json!(1);
        assert!(
            matches!(of(&v, &ready), Some(Health::Progressing(m)) if m.contains("generation 2"))
        );
    }
}
