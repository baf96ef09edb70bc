//! A Unit's suspension as people set it (`spec.suspend: {reason, until, keepCorrecting}`,
//! by `pontoon suspend` or a plain `kubectl patch`), and who set it, read from the Unit's
//! `managedFields`: the field manager that owns `spec.suspend` and when it last wrote.
//! `pontoon suspend` writes as the field manager `pontoon-cli:<your user name>` (the name
//! the API server gave you, from a SelfSubjectReview), so the manager names the person;
//! `kubectl patch` records `kubectl-patch` (kubectl's own name, not the user: only the
//! audit log says who that was). Pure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use serde::{Deserialize, Serialize};

/// The prefix of the field manager `pontoon suspend` writes as; the user's name follows.
pub const CLI_MANAGER_PREFIX: &str = "pontoon-cli:";

/// `spec.suspend`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SuspendSpec {
    pub reason: String,
    /// RFC 3339; resumed by itself after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    #[serde(default)]
    pub keep_correcting: bool,
}

/// A suspension in force, as the status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Suspension {
    pub reason: String,
    /// Who set it: the user `pontoon suspend` ran as, or the field manager that did.
    pub by: String,
    /// When that manager last wrote the Unit's spec.
    #[serde(default)]
    pub since: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    #[serde(default)]
    pub keep_correcting: bool,
    /// `alice: INC-1234`, for `kubectl get units`.
    #[serde(default)]
    pub description: String,
}

impl Suspension {
    /// `suspended by alice: INC-1234`, `… until 2026-01-01T02:00:00Z`.
    pub fn describe(&self) -> String {
        let mut s = format!("suspended by {}: {}", self.by, self.reason);
        if let Some(until) = &self.until {
            s.push_str(&format!(" (until {until})"));
        }
        if self.keep_correcting {
            s.push_str(", drift still corrected");
        }
        s
    }

    /// Whether its `until` has passed at `now`; an `until` that is no time never passes
    /// (the API server checks its format).
    pub fn expired(&self, now: jiff::Timestamp) -> bool {
        self.until_time().is_some_and(|u| u <= now)
    }

    pub fn until_time(&self) -> Option<jiff::Timestamp> {
        self.until.as_deref().and_then(|u| u.parse().ok())
    }
}

/// The suspension `spec` asks for, with who set it from `managed_fields`.
pub fn suspension(spec: &SuspendSpec, managed_fields: &[ManagedFieldsEntry]) -> Suspension {
    // Managers that wrote under it, the latest last: a later patch that changed the
    // reason owns it, though the first still owns the map's existence.
    let setter = managed_fields
        .iter()
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .and_then(|f| f.0.get("f:spec"))
                .and_then(|s| s.get("f:suspend"))
                .is_some()
        })
        .max_by_key(|m| m.time.as_ref().map(|t| t.0));
    let by = setter
        .and_then(|m| m.manager.as_deref())
        .map(|m| m.strip_prefix(CLI_MANAGER_PREFIX).unwrap_or(m).to_owned())
        .unwrap_or_else(|| "someone".to_owned());
    Suspension {
        description: format!("{by}: {}", spec.reason),
        reason: spec.reason.clone(),
        by,
        since: setter
            .and_then(|m| m.time.as_ref())
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
        until: spec.until.clone(),
        keep_correcting: spec.keep_correcting,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, Time};
    use serde_json::json;

    fn entry(manager: &str, fields: serde_json::Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            fields_v1: Some(FieldsV1(fields)),
            ..ManagedFieldsEntry::default()
        }
    }

    fn spec() -> SuspendSpec {
        SuspendSpec {
            reason: "INC-1234".into(),
            until: Some("2026-01-01T02:00:00Z".into()),
            keep_correcting: false,
        }
    }

    #[test]
    fn who_suspended_is_the_manager_of_spec_suspend() {
        let fields = [
            entry("pontoon", json!({"f:spec": {"f:team": {}}})),
            entry(
                "pontoon-cli:alice",
                json!({"f:spec": {"f:suspend": {"f:reason": {}}}}),
            ),
        ];
        let s = suspension(&spec(), &fields);
        assert_eq!(s.by, "alice");
        assert_eq!(
            s.describe(),
            "suspended by alice: INC-1234 (until 2026-01-01T02:00:00Z)"
        );
        let mut first = entry(
            "pontoon-cli:alice",
            json!({"f:spec": {"f:suspend": {".": {}}}}),
        );
        first.time = Some(Time("2026-01-01T00:00:00Z".parse().expect("time")));
        let mut patched = entry(
            "kubectl-patch",
            json!({"f:spec": {"f:suspend": {"f:reason": {}}}}),
        );
        patched.time = Some(Time("2026-01-01T00:05:00Z".parse().expect("time")));
        let s = suspension(&spec(), &[first, patched]);
        assert_eq!(
            (s.by.as_str(), s.since.as_str()),
            ("kubectl-patch", "2026-01-01T00:05:00Z")
        );
    }

    #[test]
    fn a_suspension_expires_at_its_until() {
        let s = suspension(&spec(), &[]);
        assert!(!s.expired("2026-01-01T01:59:59Z".parse().expect("time")));
        assert!(s.expired("2026-01-01T02:00:00Z".parse().expect("time")));
        let forever = suspension(
            &SuspendSpec {
                until: None,
                ..spec()
            },
            &[],
        );
        assert!(!forever.expired(jiff::Timestamp::MAX));
    }
}
