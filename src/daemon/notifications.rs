//! When to notify: the daemon's side of notifications. Each finished sync is compared with
//! the unit's previous one, and only a change of state is an event (Failed, Synced again
//! after a failure, deletions held); drift events and rollout stages that stop a commit
//! are events as they come. A resync that finds nothing changed sends nothing. The engine
//! (`crate::notify`) sends each event once and queues it per receiver; nothing here waits
//! for a receiver, so a sync is never delayed by one.
//!
//! Which receivers: the platform's (`notifications.platform`) for every unit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::desired::{DriftMode, UnitId};
use crate::drift::DriftEvent;
use crate::notify::{Event, EventKind, Notifier};
use crate::sync::{UnitResult, UnitState};

/// What the previous report of a unit said, as far as notifications care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Last {
    pub state: UnitState,
    /// Its deletions were held (mass-deletion rule).
    pub held: bool,
    pub revision: String,
}

impl Last {
    fn of(r: &UnitResult) -> Last {
        Last {
            state: r.state,
            held: is_held(r),
            revision: r.revision.clone(),
        }
    }
}

fn is_held(r: &UnitResult) -> bool {
    r.state == UnitState::OutOfSync && !r.held.is_empty()
}

/// The events a report makes, given the unit's previous one: state changes only.
pub fn changes(last: Option<&Last>, r: &UnitResult) -> Vec<EventKind> {
    let mut out = Vec::new();
    let was = last.map(|l| l.state);
    match r.state {
        UnitState::Failed if was != Some(UnitState::Failed) => out.push(EventKind::Failed {
            message: r
                .message
                .clone()
                .unwrap_or_else(|| "the sync failed".to_owned()),
        }),
        UnitState::Synced if was == Some(UnitState::Failed) => out.push(EventKind::Recovered),
        _ => {}
    }
    if is_held(r) && !last.is_some_and(|l| l.held) {
        out.push(EventKind::DeletionsHeld {
            count: r.held.len(),
            message: r.message.clone().unwrap_or_default(),
        });
    }
    out
}

#[derive(Default)]
struct Inner {
    last: HashMap<UnitId, Last>,
}

/// The daemon's notifications: change detection in front of the engine's queues.
pub struct Notifications {
    notifier: Notifier,
    inner: Mutex<Inner>,
}

impl Notifications {
    pub fn new(notifier: Notifier) -> Notifications {
        Notifications {
            notifier,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, _inner: &Inner, event: Event) {
        self.notifier.send(event, &[]);
    }

    /// A finished sync, as the board shows it.
    pub fn reported(&self, r: &UnitResult, removal: bool) {
        let mut inner = self.lock();
        if removal {
            if r.state == UnitState::Synced {
                inner.last.remove(&r.unit);
            }
            return;
        }
        let kinds = changes(inner.last.get(&r.unit), r);
        inner.last.insert(r.unit.clone(), Last::of(r));
        for kind in kinds {
            let event = Event {
                unit: r.unit.clone(),
                revision: r.revision.clone(),
                kind,
            };
            self.send(&inner, event);
        }
    }

    /// A drift event from the watches: detected (naming who) or corrected.
    pub fn drift(&self, e: &DriftEvent) {
        if e.again {
            return;
        }
        let inner = self.lock();
        let revision = inner
            .last
            .get(&e.unit)
            .map(|l| l.revision.clone())
            .unwrap_or_default();
        let object = e.key.to_string();
        let kind = if e.corrected {
            EventKind::DriftCorrected {
                object,
                by: e.manager.clone(),
            }
        } else {
            EventKind::DriftDetected {
                object,
                by: e.manager.clone(),
                by_person: e.by_person,
                corrects: e.mode == DriftMode::Correct,
            }
        };
        let event = Event {
            unit: e.unit.clone(),
            revision,
            kind,
        };
        self.send(&inner, event);
    }

    /// A rollout stage stopped `revision` from reaching `unit` (an earlier stage failed).
    pub fn rollout_stopped(&self, unit: &UnitId, revision: &str, reason: &str) {
        let inner = self.lock();
        let event = Event {
            unit: unit.clone(),
            revision: revision.to_owned(),
            kind: EventKind::RolloutStopped {
                reason: reason.to_owned(),
            },
        };
        self.send(&inner, event);
    }

    /// Sends what is queued, at most `deadline`. Returns how many were left unsent.
    pub async fn finish(&self, deadline: Duration) -> usize {
        self.notifier.finish(deadline).await
    }
}

/// Notifications of a running daemon, when any receiver is configured.
pub type Shared = Option<Arc<Notifications>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{ClusterName, ObjectKey, TeamName};

    fn result(state: UnitState, revision: &str) -> UnitResult {
        let mut r = UnitResult::for_tests(
            UnitId {
                team: TeamName("shop".into()),
                cluster: ClusterName("prod".into()),
            },
            state,
        );
        r.revision = revision.into();
        r
    }

    fn names(kinds: &[EventKind]) -> Vec<&'static str> {
        kinds.iter().map(EventKind::name).collect()
    }

    #[test]
    fn only_changes_of_state_are_events() {
        let synced = result(UnitState::Synced, "a");
        let failed = result(UnitState::Failed, "b");
        assert!(changes(None, &synced).is_empty(), "a first sync that works");
        assert_eq!(names(&changes(None, &failed)), ["failed"]);
        assert_eq!(
            names(&changes(Some(&Last::of(&synced)), &failed)),
            ["failed"]
        );
        assert!(
            changes(Some(&Last::of(&failed)), &failed).is_empty(),
            "still failing"
        );
        assert_eq!(
            names(&changes(Some(&Last::of(&failed)), &synced)),
            ["recovered"]
        );
        assert!(
            changes(Some(&Last::of(&synced)), &synced).is_empty(),
            "a resync"
        );
        let progressing = result(UnitState::Progressing, "b");
        assert!(changes(Some(&Last::of(&failed)), &progressing).is_empty());
    }

    #[test]
    fn a_hold_is_an_event_once_until_it_is_released() {
        let mut held = result(UnitState::OutOfSync, "b");
        held.held = vec![ObjectKey {
            group: String::new(),
            kind: "ConfigMap".into(),
            namespace: "shop".into(),
            name: "a".into(),
        }];
        held.message_for_tests("held: …");
        let synced = result(UnitState::Synced, "a");
        assert_eq!(
            changes(Some(&Last::of(&synced)), &held),
            [EventKind::DeletionsHeld {
                count: 1,
                message: "held: …".into()
            }]
        );
        assert!(changes(Some(&Last::of(&held)), &held).is_empty());
        assert!(changes(Some(&Last::of(&held)), &synced).is_empty());
    }
}
