//! The result model of a sync: what one sync did to a unit, and the state it leaves the
//! unit in. Plain data; the state is decided in one place ([`UnitResult::finish`]) from
//! what happened, so every consumer (board, metrics, commit statuses) reads one verdict.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::desired::{ObjectKey, UnitId};

/// The state of a unit after a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum UnitState {
    Synced,
    OutOfSync,
    Progressing,
    Failed,
}

impl UnitState {
    pub fn as_str(self) -> &'static str {
        match self {
            UnitState::Synced => "Synced",
            UnitState::OutOfSync => "OutOfSync",
            UnitState::Progressing => "Progressing",
            UnitState::Failed => "Failed",
        }
    }
}

/// A problem with one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectError {
    pub object: String,
    pub message: String,
}

/// What one sync did.
#[derive(Debug, Clone, Serialize)]
pub struct UnitResult {
    pub unit: UnitId,
    pub revision: String,
    pub state: UnitState,
    pub created: Vec<ObjectKey>,
    pub updated: Vec<ObjectKey>,
    pub unchanged: usize,
    pub pruned: Vec<ObjectKey>,
    /// Objects that would have been pruned but were held (mass-deletion rule) or kept
    /// (`prune: disabled`, Namespaces or CRDs the platform does not let pontoon delete).
    pub held: Vec<ObjectKey>,
    pub kept: Vec<ObjectKey>,
    /// Inventory entries whose object is no longer the one pontoon applied (another uid,
    /// or without pontoon's labels for the team): dropped from the inventory, not deleted.
    pub left: Vec<ObjectKey>,
    /// Objects changed by someone else and left so, because their drift mode is `report`.
    pub drifted: Vec<ObjectKey>,
    pub errors: Vec<ObjectError>,
    /// Fields taken from other field managers (or refused, when forcing is off).
    pub conflicts: Vec<ObjectError>,
    /// Objects still rolling out, with what they wait for.
    pub not_ready: Vec<(ObjectKey, String)>,
    /// Objects healthy only in that they were applied: no health rule applies to them and
    /// they have no status to read (a kind the platform gave no `readyWhen`).
    pub no_health_rule: Vec<ObjectKey>,
    /// Who released the mass-deletion hold this sync went ahead on (field manager and
    /// time), when it did.
    pub released: Option<String>,
    /// Why the unit is not Synced, in one line.
    pub message: Option<String>,
    /// Requests that could change the cluster (apply, delete, inventory writes).
    pub writes: usize,
    pub duration: Duration,
}

impl UnitResult {
    pub fn new(unit: UnitId, revision: &str) -> Self {
        UnitResult {
            unit,
            revision: revision.to_owned(),
            state: UnitState::Synced,
            created: Vec::new(),
            updated: Vec::new(),
            unchanged: 0,
            pruned: Vec::new(),
            held: Vec::new(),
            kept: Vec::new(),
            released: None,
            left: Vec::new(),
            drifted: Vec::new(),
            errors: Vec::new(),
            conflicts: Vec::new(),
            not_ready: Vec::new(),
            no_health_rule: Vec::new(),
            message: None,
            writes: 0,
            duration: Duration::ZERO,
        }
    }

    pub(super) fn error(&mut self, object: impl ToString, message: impl Into<String>) {
        self.errors.push(ObjectError {
            object: object.to_string(),
            message: message.into(),
        });
    }

    /// Decides the state from what happened.
    pub(super) fn finish(&mut self, started: Instant) {
        self.duration = started.elapsed();
        self.state = if !self.errors.is_empty() {
            if self.message.is_none() {
                self.message = Some(format!(
                    "{} object{} failed; first: {}: {}",
                    self.errors.len(),
                    if self.errors.len() == 1 { "" } else { "s" },
                    self.errors[0].object,
                    self.errors[0].message
                ));
            }
            UnitState::Failed
        } else if !self.held.is_empty() {
            UnitState::OutOfSync
        } else if !self.drifted.is_empty() {
            if self.message.is_none() {
                self.message = Some(format!(
                    "{} {} drifted and left as {} (drift mode report); first: {}",
                    self.drifted.len(),
                    if self.drifted.len() == 1 {
                        "object"
                    } else {
                        "objects"
                    },
                    if self.drifted.len() == 1 {
                        "it is"
                    } else {
                        "they are"
                    },
                    self.drifted[0]
                ));
            }
            UnitState::OutOfSync
        } else if let Some((key, why)) = self.not_ready.first() {
            if self.message.is_none() {
                self.message = Some(format!("waiting for {key}: {why}"));
            }
            UnitState::Progressing
        } else {
            UnitState::Synced
        };
    }

    /// A result with the given state and nothing done, for tests of what consumes results.
    pub fn for_tests(unit: UnitId, state: UnitState) -> Self {
        let mut r = UnitResult::new(unit, "rev");
        r.state = state;
        r
    }

    /// Sets the message of a result built with [`UnitResult::for_tests`].
    pub fn message_for_tests(&mut self, message: &str) {
        self.message = Some(message.to_owned());
    }

    /// Number of objects the unit holds after this sync.
    pub fn applied(&self) -> usize {
        self.created.len() + self.updated.len() + self.unchanged
    }

    /// A one-line summary, e.g. `applied 12 (+2 ~1), pruned 1`, then what the prune rules
    /// kept, what pontoon left because it did not create it, what the mass-deletion rule
    /// held and how many errors, when any.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "applied {} (+{} ~{}), pruned {}",
            self.applied(),
            self.created.len(),
            self.updated.len(),
            self.pruned.len()
        );
        if !self.kept.is_empty() {
            s.push_str(&format!(", kept {}", self.kept.len()));
        }
        if !self.left.is_empty() {
            s.push_str(&format!(
                ", left {} {} pontoon did not create",
                self.left.len(),
                if self.left.len() == 1 {
                    "object"
                } else {
                    "objects"
                }
            ));
        }
        if !self.held.is_empty() {
            s.push_str(&format!(", held {}", self.held.len()));
        }
        if let Some(by) = &self.released {
            s.push_str(&format!(", hold released by {by}"));
        }
        if !self.errors.is_empty() {
            s.push_str(&format!(", {} errors", self.errors.len()));
        }
        if !self.no_health_rule.is_empty() {
            s.push_str(&format!(
                ", {} with {}",
                self.no_health_rule.len(),
                crate::sync::health::NO_HEALTH_RULE
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{ClusterName, TeamName};

    fn result() -> UnitResult {
        let unit = UnitId {
            team: TeamName("shop".into()),
            cluster: ClusterName("c".into()),
        };
        UnitResult::new(unit, "a")
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            group: String::new(),
            kind: "ConfigMap".into(),
            namespace: "shop".into(),
            name: name.into(),
        }
    }

    #[test]
    fn an_error_fails_the_unit_whatever_else_happened() {
        let mut r = result();
        r.held.push(key("a"));
        r.not_ready.push((key("b"), "rolling".into()));
        r.error(key("c"), "refused");
        r.finish(Instant::now());
        assert_eq!(r.state, UnitState::Failed);
        assert_eq!(
            r.message.as_deref(),
            Some("1 object failed; first: ConfigMap shop/c: refused")
        );
    }

    #[test]
    fn held_or_drifted_is_out_of_sync_and_waiting_is_progressing() {
        let mut r = result();
        r.held.push(key("a"));
        r.finish(Instant::now());
        assert_eq!(r.state, UnitState::OutOfSync);

        let mut r = result();
        r.drifted.extend([key("a"), key("b")]);
        r.finish(Instant::now());
        assert_eq!(r.state, UnitState::OutOfSync);
        assert_eq!(
            r.message.as_deref(),
            Some(
                "2 objects drifted and left as they are (drift mode report); first: ConfigMap shop/a"
            )
        );

        let mut r = result();
        r.not_ready.push((key("a"), "1 of 2 replicas ready".into()));
        r.finish(Instant::now());
        assert_eq!(r.state, UnitState::Progressing);
        assert_eq!(
            r.message.as_deref(),
            Some("waiting for ConfigMap shop/a: 1 of 2 replicas ready")
        );

        let mut r = result();
        r.finish(Instant::now());
        assert_eq!((r.state, r.message), (UnitState::Synced, None));
    }

    #[test]
    fn summary_names_only_what_happened() {
        let mut r = result();
        r.created.push(key("a"));
        r.unchanged = 2;
        assert_eq!(r.summary(), "applied 3 (+1 ~0), pruned 0");
        r.kept.push(key("b"));
        r.held.push(key("c"));
        r.error(key("d"), "x");
        assert_eq!(
            r.summary(),
            "applied 3 (+1 ~0), pruned 0, kept 1, held 1, 1 errors"
        );
        r.left.push(key("e"));
        assert_eq!(
            r.summary(),
            "applied 3 (+1 ~0), pruned 0, kept 1, left 1 object pontoon did not create, held 1, 1 errors"
        );
        r.no_health_rule.push(key("f"));
        assert!(r.summary().ends_with(", 1 errors, 1 with no health rule"));
    }
}
