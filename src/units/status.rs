//! A Unit's `status` as pontoon writes it, decided from a finished sync: the kstatus
//! conditions `Ready`, `Reconciling` and `Stalled`, the revision, the counts and the last
//! error. Pure: the caller gives the clock and what was written last, and writes only
//! when [`next_status`] returns something other than what is there.
//!
//! A condition's `lastTransitionTime` moves only when its status changes, and a resync
//! that changes nothing keeps the summary of the sync that brought the revision (as the
//! status page does), so a no-op resync decides exactly the status already written.
//!
//! The `platform` unit's status also carries each component's health (`components`), so
//! a replica that does not sync the `platform` unit reads it from there.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::suspend::Suspension;
use crate::sync::components::Readiness;
use crate::sync::{UnitResult, UnitState};

/// One kstatus condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_transition_time: String,
    #[serde(default)]
    pub observed_generation: i64,
}

/// What the last sync that changed something did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    #[serde(default)]
    /// Created or updated.
    pub applied: usize,
    #[serde(default)]
    pub unchanged: usize,
    #[serde(default)]
    pub pruned: usize,
    #[serde(default)]
    pub held: usize,
    /// As the status page says it: `applied 3 (+1 ~2), pruned 0`.
    #[serde(default)]
    pub text: String,
}

/// The Unit's `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnitStatus {
    #[serde(default)]
    pub observed_generation: i64,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub revision: String,
    #[serde(default)]
    pub short_revision: String,
    #[serde(default)]
    pub objects: usize,
    #[serde(default)]
    pub summary: Summary,
    #[serde(default)]
    pub drift: usize,
    #[serde(default)]
    pub held: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// The suspension in force (absent when none is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended: Option<Suspension>,
    /// The `platform` unit only: each component's health on this cluster.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub components: BTreeMap<String, ComponentHealth>,
}

impl UnitStatus {
    /// The condition of `type_`, when there is one.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// Whether the `type_` condition is `True`.
    pub fn is(&self, type_: &str) -> bool {
        self.condition(type_).is_some_and(|c| c.status == "True")
    }
}

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// What goes into the next status besides the sync's result.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The Unit's `metadata.generation`.
    pub generation: i64,
    /// The reconcile request this sync answers, or the one answered before.
    pub handled_reconcile: Option<&'a str>,
    /// Now, RFC 3339: the transition time of a condition that changes.
    pub now: &'a str,
    /// The suspension in force.
    pub suspended: Option<&'a Suspension>,
}

/// The status after `result`, given what is there (`previous`).
pub fn next_status(
    result: &UnitResult,
    previous: Option<&UnitStatus>,
    observed: Observed<'_>,
) -> UnitStatus {
    let message = result.message.clone().unwrap_or_default();
    let held = !result.held.is_empty();
    let (ready_reason, reconciling, stalled) = match result.state {
        UnitState::Synced => ("Synced", None, None),
        UnitState::Progressing => ("Progressing", Some("Progressing"), None),
        UnitState::OutOfSync if held => ("OutOfSync", None, Some("DeletionsHeld")),
        UnitState::OutOfSync => ("OutOfSync", None, None),
        UnitState::Failed => ("Failed", None, Some("Failed")),
    };
    let ready_message = if result.state == UnitState::Synced {
        format!("synced at {}", short(&result.revision))
    } else {
        message.clone()
    };
    let condition = |type_: &str, on: Option<&str>, msg: &str| {
        let (status, reason, message) = match on {
            Some(reason) => ("True", reason, msg.to_owned()),
            None => ("False", ready_reason, String::new()),
        };
        transition(
            previous.and_then(|p| p.condition(type_)),
            Condition {
                type_: type_.to_owned(),
                status: status.to_owned(),
                reason: reason.to_owned(),
                message,
                last_transition_time: String::new(),
                observed_generation: observed.generation,
            },
            observed.now,
        )
    };
    let ready = transition(
        previous.and_then(|p| p.condition(READY)),
        Condition {
            type_: READY.to_owned(),
            status: if result.state == UnitState::Synced {
                "True"
            } else {
                "False"
            }
            .to_owned(),
            reason: ready_reason.to_owned(),
            message: ready_message,
            last_transition_time: String::new(),
            observed_generation: observed.generation,
        },
        observed.now,
    );
    UnitStatus {
        observed_generation: observed.generation,
        conditions: vec![
            ready,
            condition(RECONCILING, reconciling, &message),
            condition(STALLED, stalled, &message),
        ],
        revision: result.revision.clone(),
        short_revision: short(&result.revision).to_owned(),
        objects: result.applied(),
        summary: summary(result, previous),
        drift: result.drifted.len(),
        held: result.held.len(),
        last_error: result
            .message
            .clone()
            .filter(|_| !matches!(result.state, UnitState::Synced)),
        last_handled_reconcile_at: observed.handled_reconcile.map(str::to_owned),
        suspended: observed.suspended.cloned(),
        components: BTreeMap::new(),
    }
}

/// One platform component's health on the cluster, as the `platform` unit's sync at
/// `revision` found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentHealth {
    pub healthy: bool,
    /// Why it is not healthy, in the platform unit's words (empty when healthy).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The revision of the platform repo the platform unit's sync that found it ran.
    #[serde(default)]
    pub revision: String,
}

/// The `components` of the platform unit's status from what its syncs found at `revision`.
pub fn component_health(
    revision: &str,
    found: &BTreeMap<String, Readiness>,
) -> BTreeMap<String, ComponentHealth> {
    found
        .iter()
        .map(|(name, r)| {
            let (healthy, reason) = match r {
                Readiness::Healthy => (true, String::new()),
                Readiness::NotHealthy(why) => (false, why.clone()),
            };
            let health = ComponentHealth {
                healthy,
                reason,
                revision: revision.to_owned(),
            };
            (name.clone(), health)
        })
        .collect()
}

/// What the platform unit's status says of its components, as a sync here would have
/// found it, and the revision it was found at (the newest any component names, else the
/// status's own); None when the status names no revision.
pub fn found_components(status: &UnitStatus) -> Option<(String, BTreeMap<String, Readiness>)> {
    let at = status
        .components
        .values()
        .map(|c| c.revision.as_str())
        .find(|r| !r.is_empty())
        .unwrap_or(status.revision.as_str());
    if at.is_empty() {
        return None;
    }
    let found = status
        .components
        .iter()
        .map(|(name, c)| {
            let r = if c.healthy {
                Readiness::Healthy
            } else {
                Readiness::NotHealthy(c.reason.clone())
            };
            (name.clone(), r)
        })
        .collect();
    Some((at.to_owned(), found))
}

/// `new` with the previous transition time when its status did not change.
fn transition(previous: Option<&Condition>, mut new: Condition, now: &str) -> Condition {
    new.last_transition_time = match previous {
        Some(p) if p.status == new.status && !p.last_transition_time.is_empty() => {
            p.last_transition_time.clone()
        }
        _ => now.to_owned(),
    };
    new
}

/// This sync's counts, or the previous ones when this sync changed nothing at the same
/// revision after a sync that went through.
fn summary(result: &UnitResult, previous: Option<&UnitStatus>) -> Summary {
    let quiet = result.created.is_empty()
        && result.updated.is_empty()
        && result.pruned.is_empty()
        && result.held.is_empty()
        && result.errors.is_empty();
    if let Some(p) = previous
        && quiet
        && p.revision == result.revision
        && !p.summary.text.is_empty()
        && !p.is(STALLED)
    {
        return p.summary.clone();
    }
    Summary {
        applied: result.created.len() + result.updated.len(),
        unchanged: result.unchanged,
        pruned: result.pruned.len(),
        held: result.held.len(),
        text: result.summary(),
    }
}

/// The first 7 characters of a commit (`dir-` and 7 of a folder's digest); anything
/// else as is.
pub fn short(revision: &str) -> &str {
    let prefix = if revision.starts_with("dir-") { 4 } else { 0 };
    let digest = &revision[prefix..];
    if digest.len() > 7 && digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        &revision[..prefix + 7]
    } else {
        revision
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{ClusterName, ObjectKey, TeamName, UnitId};

    const REV: &str = "0123456789abcdef0123456789abcdef01234567";

    fn result(state: UnitState) -> UnitResult {
        let mut r = UnitResult::new(
            UnitId {
                team: TeamName("shop".into()),
                cluster: ClusterName("prod".into()),
            },
            REV,
        );
        r.state = state;
        r
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            group: String::new(),
            kind: "ConfigMap".into(),
            namespace: "shop".into(),
            name: name.into(),
        }
    }

    fn at(now: &str) -> Observed<'_> {
        Observed {
            generation: 1,
            handled_reconcile: None,
            now,
            suspended: None,
        }
    }

    #[test]
    fn a_synced_unit_is_ready_and_neither_reconciling_nor_stalled() {
        let mut r = result(UnitState::Synced);
        r.created.push(key("a"));
        r.unchanged = 2;
        let s = next_status(&r, None, at("2026-01-01T00:00:00Z"));
        assert!(s.is(READY) && !s.is(RECONCILING) && !s.is(STALLED), "{s:?}");
        assert_eq!(
            s.condition(READY).map(|c| c.reason.as_str()),
            Some("Synced")
        );
        assert_eq!((s.objects, s.short_revision.as_str()), (3, "0123456"));
        assert_eq!(s.summary.applied, 1);
        assert_eq!(s.last_error, None);
    }

    #[test]
    fn a_failure_stalls_the_unit_with_its_message() {
        let mut r = result(UnitState::Failed);
        r.message = Some("cannot reach the cluster: refused".into());
        let s = next_status(&r, None, at("2026-01-01T00:00:00Z"));
        let stalled = s.condition(STALLED).expect("Stalled");
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", "Failed")
        );
        assert_eq!(stalled.message, "cannot reach the cluster: refused");
        assert!(!s.is(READY));
        assert_eq!(
            s.last_error.as_deref(),
            Some("cannot reach the cluster: refused")
        );
    }

    #[test]
    fn a_progressing_unit_is_reconciling() {
        let mut r = result(UnitState::Progressing);
        r.message = Some("waiting for Deployment.apps shop/web".into());
        let s = next_status(&r, None, at("2026-01-01T00:00:00Z"));
        assert!(s.is(RECONCILING) && !s.is(READY) && !s.is(STALLED), "{s:?}");
    }

    #[test]
    fn a_held_deletion_stalls_the_unit_until_someone_releases_it() {
        let mut r = result(UnitState::OutOfSync);
        r.held.push(key("a"));
        let s = next_status(&r, None, at("2026-01-01T00:00:00Z"));
        assert_eq!(
            s.condition(STALLED).map(|c| c.reason.as_str()),
            Some("DeletionsHeld")
        );
        assert_eq!(s.held, 1);
    }

    #[test]
    fn a_no_op_resync_decides_the_status_already_written() {
        let mut first = result(UnitState::Synced);
        first.created.push(key("a"));
        let written = next_status(&first, None, at("2026-01-01T00:00:00Z"));
        let mut resync = result(UnitState::Synced);
        resync.unchanged = 1;
        let again = next_status(&resync, Some(&written), at("2026-01-01T00:05:00Z"));
        assert_eq!(again, written);
    }

    #[test]
    fn a_transition_time_moves_only_when_the_condition_changes() {
        let synced = next_status(&result(UnitState::Synced), None, at("2026-01-01T00:00:00Z"));
        let mut failing = result(UnitState::Failed);
        failing.message = Some("boom".into());
        let failed = next_status(&failing, Some(&synced), at("2026-01-01T00:01:00Z"));
        assert_eq!(
            failed
                .condition(READY)
                .map(|c| c.last_transition_time.as_str()),
            Some("2026-01-01T00:01:00Z")
        );
        failing.message = Some("boom again".into());
        let still = next_status(&failing, Some(&failed), at("2026-01-01T00:02:00Z"));
        assert_eq!(
            still
                .condition(STALLED)
                .map(|c| (c.last_transition_time.as_str(), c.message.as_str())),
            Some(("2026-01-01T00:01:00Z", "boom again"))
        );
    }

    #[test]
    fn component_health_reads_back_as_the_platform_unit_found_it() {
        let found: BTreeMap<String, Readiness> = [
            ("cnpg".to_owned(), Readiness::Healthy),
            (
                "strimzi".to_owned(),
                Readiness::NotHealthy("Deployment.apps ops/strimzi: 0 of 1 ready".into()),
            ),
        ]
        .into();
        let mut status = next_status(&result(UnitState::Synced), None, at("2026-01-01T00:00:00Z"));
        status.components = component_health("r9", &found);
        let json = serde_json::to_value(&status).expect("json");
        assert_eq!(
            json["components"]["cnpg"],
            serde_json::json!({"healthy": true, "revision": "r9"})
        );
        assert_eq!(
            json["components"]["strimzi"]["reason"],
            "Deployment.apps ops/strimzi: 0 of 1 ready"
        );
        let back: UnitStatus = serde_json::from_value(json).expect("parses");
        assert_eq!(found_components(&back), Some(("r9".to_owned(), found)));
        // A team's status has none, and says nothing of them.
        let team = next_status(&result(UnitState::Synced), None, at("2026-01-01T00:00:00Z"));
        let json = serde_json::to_value(&team).expect("json");
        assert!(json.get("components").is_none(), "{json}");
    }

    #[test]
    fn a_revision_is_shortened_to_seven_digits() {
        assert_eq!(short("dir-01e868e2459f91147035"), "dir-01e868e");
        assert_eq!(short("dir:3f2a"), "dir:3f2a");
    }
}
