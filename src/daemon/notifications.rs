//! When to notify: the daemon's side of notifications. Each finished sync is compared with
//! the unit's previous one, and only a change of state is an event (Failed, Synced again
//! after a failure, deletions held); drift events and rollout stages that stop a commit
//! are events as they come. A resync that finds nothing changed sends nothing. The engine
//! (`crate::notify`) sends each event once and queues it per receiver; nothing here waits
//! for a receiver, so a sync is never delayed by one.
//!
//! Which receivers: the platform's (`notifications.platform`) for every unit, plus those
//! the unit's team.yaml names (`notify`). A name the daemon's config does not define is a
//! warning at its team.yaml line, logged once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::desired::{DesiredState, Diagnostic, DriftMode, Severity, TeamName, UnitId};
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
    /// The receivers each team's team.yaml names, from the newest render.
    teams: BTreeMap<TeamName, Vec<String>>,
    /// Unknown receiver names already warned about (file:line: name).
    warned: BTreeSet<String>,
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

    fn send(&self, inner: &Inner, event: Event) {
        let team = inner
            .teams
            .get(&event.unit.team)
            .map_or(&[][..], Vec::as_slice);
        self.notifier.send(event, team);
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

    /// The unit's team fails to render at `state`'s revision: the unit shows Failed with
    /// the render's first error from now on, without a sync of its own.
    pub fn render_failed(&self, unit: &UnitId, state: &DesiredState) {
        let message = state
            .failed_teams
            .get(&unit.team)
            .and_then(|d| {
                d.iter()
                    .find(|d| d.severity == Severity::Error && d.concerns(&unit.cluster.0))
                    .or(d.first())
            })
            .map_or_else(
                || "its files fail to render".to_owned(),
                |d| format!("render failed: {d}"),
            );
        let mut inner = self.lock();
        let last = inner.last.entry(unit.clone()).or_insert_with(|| Last {
            state: UnitState::Synced,
            held: false,
            revision: state.revision.clone(),
        });
        if last.state == UnitState::Failed {
            return;
        }
        // The revision it runs stays the one drift is told at.
        last.state = UnitState::Failed;
        let event = Event {
            unit: unit.clone(),
            revision: state.revision.clone(),
            kind: EventKind::Failed { message },
        };
        self.send(&inner, event);
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

    /// Someone suspended `unit` (`Unit` `spec.suspend`). Told once per suspension: its
    /// start time stands where a revision stands for the other events.
    pub fn suspended(&self, unit: &UnitId, s: &crate::units::suspend::Suspension) {
        let inner = self.lock();
        let event = Event {
            unit: unit.clone(),
            revision: format!("suspended-at-{}", s.since),
            kind: EventKind::Suspended {
                by: s.by.clone(),
                reason: s.reason.clone(),
                until: s.until.clone(),
            },
        };
        self.send(&inner, event);
    }

    /// `unit` takes new revisions again, ending the suspension `ended` (by a person who
    /// cleared it, or at its expiry).
    pub fn resumed(&self, unit: &UnitId, ended: Option<&crate::units::suspend::Suspension>) {
        let inner = self.lock();
        let now = jiff::Timestamp::now();
        let by = ended.and_then(|s| (!s.expired(now)).then(|| s.by.clone()));
        let since = ended.map_or_else(|| now.to_string(), |s| s.since.clone());
        let event = Event {
            unit: unit.clone(),
            revision: format!("resumed-from-{since}"),
            kind: EventKind::Resumed { by },
        };
        self.send(&inner, event);
    }

    /// A new render: the receivers each team names from now on. Returns a warning for
    /// each name the config does not define, at its team.yaml line (each logged once).
    pub fn rendered(&self, state: &DesiredState) -> Vec<Diagnostic> {
        let mut inner = self.lock();
        let mut unknown = Vec::new();
        for (team, names) in &state.notify {
            for n in names.iter().filter(|n| !self.notifier.defines(&n.name)) {
                unknown.push(Diagnostic {
                    file: n.file.clone(),
                    line: n.line,
                    column: n.column,
                    team: Some(team.clone()),
                    cluster: None,
                    severity: Severity::Warning,
                    rule: "unknown-receiver".to_owned(),
                    message: format!(
                        "notify: no receiver named {:?} in the daemon config's notifications.receivers; the team is not notified there",
                        n.name
                    ),
                });
            }
        }
        inner.teams = state
            .notify
            .iter()
            .map(|(team, names)| (team.clone(), names.iter().map(|n| n.name.clone()).collect()))
            .collect();
        for d in &unknown {
            if inner
                .warned
                .insert(format!("{}:{}: {}", d.file, d.line, d.message))
            {
                tracing::warn!("{d}");
            }
        }
        unknown
    }

    /// Sends what is queued, at most `deadline`. Returns how many were left unsent.
    pub async fn finish(&self, deadline: Duration) -> usize {
        self.notifier.finish(deadline).await
    }
}

/// Notifications of a running daemon, when any receiver is configured.
pub type Shared = Option<Arc<Notifications>>;

/// Starts sending to the configured receivers (none configured: nothing to start).
pub fn start(
    config: &crate::config::NotificationsConfig,
    registry: &prometheus::Registry,
) -> anyhow::Result<Shared> {
    if config.receivers.is_empty() {
        return Ok(None);
    }
    let notifier =
        Notifier::start(config, registry).map_err(|e| anyhow::anyhow!("notifications: {e}"))?;
    Ok(Some(Arc::new(Notifications::new(notifier))))
}

/// At shutdown: sends what is owed within what is left of `deadline` since `started` (a
/// moment at least), and says what was not sent.
pub async fn drain(n: &Shared, deadline: Duration, started: tokio::time::Instant) {
    let Some(n) = n else { return };
    let left = deadline
        .saturating_sub(started.elapsed())
        .max(Duration::from_secs(2));
    let unsent = n.finish(left).await;
    if unsent > 0 {
        tracing::warn!(
            unsent,
            "shutdown deadline passed with notifications still owed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{ClusterName, ObjectKey};

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

    #[tokio::test]
    async fn a_receiver_the_config_does_not_define_is_a_warning_at_its_line() {
        let config = crate::config::NotificationsConfig {
            receivers: vec![crate::config::ReceiverConfig {
                name: "ops".into(),
                kind: crate::config::ReceiverKind::Slack,
                url: crate::config::ReceiverUrl::Inline("http://127.0.0.1:9/".into()),
                secret: None,
            }],
            ..Default::default()
        };
        let notifier = Notifier::start(&config, &prometheus::Registry::new()).expect("start");
        let n = Notifications::new(notifier);
        let at = |name: &str, line| crate::desired::ReceiverName {
            name: name.into(),
            file: "teams/shop/team.yaml".into(),
            line,
            column: 7,
        };
        let mut state = DesiredState::default();
        state
            .notify
            .insert(TeamName("shop".into()), vec![at("ops", 8), at("opps", 9)]);
        let warnings: Vec<String> = n.rendered(&state).iter().map(ToString::to_string).collect();
        assert_eq!(
            warnings,
            [
                "teams/shop/team.yaml:9:7: warning[unknown-receiver]: team shop: notify: no receiver named \"opps\" in the daemon config's notifications.receivers; the team is not notified there"
            ]
        );
        n.finish(Duration::ZERO).await;
    }

    #[tokio::test]
    async fn a_render_failure_is_one_failed_event_and_its_fix_a_recovery() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("addr"));
        drop(listener);
        let config = crate::config::NotificationsConfig {
            receivers: vec![crate::config::ReceiverConfig {
                name: "ops".into(),
                kind: crate::config::ReceiverKind::Slack,
                url: crate::config::ReceiverUrl::Inline(url),
                secret: None,
            }],
            platform: vec!["ops".into()],
            retry_initial: Duration::from_secs(60),
            retry_max: Duration::from_secs(60),
        };
        let notifier = Notifier::start(&config, &prometheus::Registry::new()).expect("start");
        let n = Notifications::new(notifier);
        let synced = result(UnitState::Synced, "a");
        n.reported(&synced, false);
        let mut state = DesiredState {
            revision: "b".into(),
            ..DesiredState::default()
        };
        state.failed_teams.insert(
            TeamName("shop".into()),
            vec![crate::model::diag(
                "teams/shop/web.yaml",
                3,
                1,
                Some(&TeamName("shop".into())),
                "schema",
                "nope",
            )],
        );
        n.render_failed(&synced.unit, &state);
        assert_eq!(
            n.notifier.outboxes_pending(),
            1,
            "told at the render, not at the next sync"
        );
        n.render_failed(&synced.unit, &state);
        // The resync of the last good state, shown Failed as the board shows it.
        n.reported(&result(UnitState::Failed, "a"), false);
        assert_eq!(n.notifier.outboxes_pending(), 1, "failed once");
        n.reported(&synced, false);
        assert_eq!(n.notifier.outboxes_pending(), 2, "then recovered");
        n.finish(Duration::ZERO).await;
    }

    #[tokio::test]
    async fn a_suspension_and_its_end_are_told_once_each() {
        let config = crate::config::NotificationsConfig {
            receivers: vec![crate::config::ReceiverConfig {
                name: "ops".into(),
                kind: crate::config::ReceiverKind::Slack,
                url: crate::config::ReceiverUrl::Inline("http://127.0.0.1:9/".into()),
                secret: None,
            }],
            platform: vec!["ops".into()],
            retry_initial: Duration::from_secs(60),
            retry_max: Duration::from_secs(60),
        };
        let notifier = Notifier::start(&config, &prometheus::Registry::new()).expect("start");
        let n = Notifications::new(notifier);
        let unit = result(UnitState::Synced, "a").unit;
        let s = crate::units::suspend::Suspension {
            reason: "INC-1234".into(),
            by: "alice".into(),
            since: "2026-11-27T03:00:00Z".into(),
            until: None,
            keep_correcting: false,
            description: "alice: INC-1234".into(),
        };
        n.suspended(&unit, &s);
        n.suspended(&unit, &s);
        assert_eq!(
            n.notifier.outboxes_pending(),
            1,
            "one suspension, told once"
        );
        n.resumed(&unit, Some(&s));
        n.resumed(&unit, Some(&s));
        assert_eq!(n.notifier.outboxes_pending(), 2, "its end, told once");
        let again = crate::units::suspend::Suspension {
            since: "2026-11-27T04:00:00Z".into(),
            ..s
        };
        n.suspended(&unit, &again);
        assert_eq!(
            n.notifier.outboxes_pending(),
            3,
            "a later suspension is new"
        );
        n.finish(Duration::ZERO).await;
    }
}
