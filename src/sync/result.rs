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

/// An object that waits for its dependencies before it is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Waiting {
    pub object: ObjectKey,
    /// What it waits for, as the platform repo names it (`Database/ledger`).
    pub on: String,
    /// The objects of `on` that are not healthy yet (not applied yet, for one that waits
    /// itself).
    #[serde(skip)]
    pub until: Vec<ObjectKey>,
    /// The platform component it waits for (its Kind `requires` it), when that is what it
    /// waits for; `on` is then `component <name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// Why what it waits for is not healthy, where the sync knows it from elsewhere (a
    /// component: the platform unit's words).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
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
    /// Objects not applied yet because what they depend on (`dependsOn`) is not healthy
    /// yet: desired, never pruned, in the inventory only once they exist.
    pub waiting: Vec<Waiting>,
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
            waiting: Vec::new(),
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
        } else if let Some(w) = self.waiting.first() {
            if self.message.is_none() {
                self.message = Some(self.waiting_message(w));
            }
            UnitState::Progressing
        } else if let Some((key, why)) = self.not_ready.first() {
            if self.message.is_none() {
                self.message = Some(format!("waiting for {key}: {why}"));
            }
            UnitState::Progressing
        } else {
            UnitState::Synced
        };
    }

    /// `waiting for Database/ledger to be healthy (Cluster.postgresql.cnpg.io
    /// shop/ledger: …) before applying Deployment.apps shop/web and 1 more object`.
    fn waiting_message(&self, w: &Waiting) -> String {
        let why = match &w.reason {
            Some(why) => format!(" ({why})"),
            None => self
                .not_ready
                .iter()
                .find(|(k, _)| w.until.contains(k))
                .map(|(k, why)| format!(" ({k}: {why})"))
                .unwrap_or_default(),
        };
        let more = match self.waiting.len() {
            1 => String::new(),
            2 => " and 1 more object".to_owned(),
            n => format!(" and {} more objects", n - 1),
        };
        format!(
            "waiting for {} to be healthy{why} before applying {}{more}",
            w.on, w.object
        )
    }

    /// Whether what an object of this Progressing unit waits for has turned healthy since
    /// (none of its objects is still rolling out or waiting itself): another sync of the
    /// unit would apply it.
    pub fn dependencies_ready(&self) -> bool {
        let settled = |k: &ObjectKey| {
            !self.not_ready.iter().any(|(n, _)| n == k)
                && !self.waiting.iter().any(|o| o.object == *k)
        };
        self.state == UnitState::Progressing
            && self
                .waiting
                .iter()
                .any(|w| w.component.is_none() && w.until.iter().all(settled))
    }

    /// Whether this Progressing unit has objects waiting for a platform component: a
    /// sync applies them once the component is healthy on the cluster, which the
    /// `platform` unit's syncs find, not this unit's health checks.
    pub fn waits_for_components(&self) -> bool {
        self.state == UnitState::Progressing && self.waiting.iter().any(|w| w.component.is_some())
    }

    /// Counts into this result what an earlier sync of the same revision did (the waves
    /// applied before this one), so the unit's summary says what reaching it took: an
    /// object created then and found unchanged now counts as created.
    pub(super) fn carry(&mut self, earlier: &UnitResult) {
        let mut moved = 0;
        for (mine, theirs) in [
            (&mut self.created, &earlier.created),
            (&mut self.updated, &earlier.updated),
        ] {
            for k in theirs {
                if !mine.contains(k) {
                    mine.push(k.clone());
                    moved += 1;
                }
            }
            mine.sort();
        }
        self.unchanged = self.unchanged.saturating_sub(moved);
        for k in &earlier.pruned {
            if !self.pruned.contains(k) {
                self.pruned.push(k.clone());
            }
        }
        self.writes += earlier.writes;
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
    fn waiting_is_progressing_and_names_what_it_waits_for() {
        let mut r = result();
        let db = key("ledger");
        r.not_ready.push((db.clone(), "Ready=False".into()));
        r.waiting.push(Waiting {
            object: key("web"),
            on: "Database/ledger".into(),
            until: vec![db.clone()],
            component: None,
            reason: None,
        });
        r.waiting.push(Waiting {
            object: key("worker"),
            on: "ConfigMap/web".into(),
            until: vec![key("web")],
            component: None,
            reason: None,
        });
        r.finish(Instant::now());
        assert_eq!(r.state, UnitState::Progressing);
        assert_eq!(
            r.message.as_deref(),
            Some(
                "waiting for Database/ledger to be healthy (ConfigMap shop/ledger: Ready=False) before applying ConfigMap shop/web and 1 more object"
            )
        );
        // The dependency still rolls out, and the other waits on one that waits itself.
        assert!(!r.dependencies_ready());
        r.not_ready.clear();
        assert!(r.dependencies_ready());
        // A failed unit syncs again by its retry, not as a wave.
        r.error(&db, "failed");
        r.finish(Instant::now());
        assert!(!r.dependencies_ready());
    }

    #[test]
    fn an_earlier_wave_counts_in_the_summary() {
        let mut first = result();
        first.created.push(key("db"));
        first.writes = 2;
        let mut second = result();
        second.created.push(key("web"));
        second.unchanged = 1;
        second.writes = 1;
        second.carry(&first);
        assert_eq!(second.summary(), "applied 2 (+2 ~0), pruned 0");
        assert_eq!(second.writes, 3);
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
