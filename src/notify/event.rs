//! What a notification is about: one change of one unit's state at one revision. The
//! daemon decides when a change happened; this file only says what each one is called,
//! which fields it carries, and how it reads in one line.

use crate::desired::UnitId;

/// One change of a unit worth telling people about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub unit: UnitId,
    /// The revision the unit runs (or was asked to run) when it happened.
    pub revision: String,
    pub kind: EventKind,
}

/// The changes pontoon notifies about. Each is sent once per (unit, kind, revision, and
/// for drift the object): see [`Event::key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// The unit's sync failed (it was not failed before).
    Failed { message: String },
    /// Synced again after a failure.
    Recovered,
    /// Someone changed an object pontoon manages. `corrects`: drift mode `correct`, so
    /// pontoon puts it back; otherwise it is left and reported.
    DriftDetected {
        object: String,
        by: String,
        by_person: bool,
        corrects: bool,
    },
    /// A drifted object is back to what pontoon applied.
    DriftCorrected { object: String, by: String },
    /// A revision would delete more than the platform allows: nothing applied until a
    /// platform owner releases it.
    DeletionsHeld { count: usize, message: String },
    /// A rollout stage failed, so the commit does not reach this unit.
    RolloutStopped { reason: String },
    /// Someone suspended the unit: no new revision is applied until it is resumed.
    Suspended {
        by: String,
        reason: String,
        until: Option<String>,
    },
    /// The unit takes new revisions again (by a person, or at the suspension's expiry).
    Resumed { by: Option<String> },
}

impl EventKind {
    /// The stable name receivers see (`event` in the webhook body).
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Failed { .. } => "failed",
            EventKind::Recovered => "recovered",
            EventKind::DriftDetected { .. } => "drift-detected",
            EventKind::DriftCorrected { .. } => "drift-corrected",
            EventKind::DeletionsHeld { .. } => "deletions-held",
            EventKind::RolloutStopped { .. } => "rollout-stopped",
            EventKind::Suspended { .. } => "suspended",
            EventKind::Resumed { .. } => "resumed",
        }
    }

    /// How bad it is, for colours and icons: `bad`, `good` or `info`.
    pub fn tone(&self) -> Tone {
        match self {
            EventKind::Failed { .. }
            | EventKind::DeletionsHeld { .. }
            | EventKind::RolloutStopped { .. } => Tone::Bad,
            EventKind::DriftDetected { .. } | EventKind::Suspended { .. } => Tone::Warning,
            EventKind::Recovered | EventKind::DriftCorrected { .. } | EventKind::Resumed { .. } => {
                Tone::Good
            }
        }
    }
}

/// How an event should look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Bad,
    Warning,
    Good,
}

impl Event {
    /// What makes two events the same notification: unit, kind, revision, and the object
    /// for drift (two objects drifting are two messages; one object drifting twice at a
    /// revision is one).
    pub fn key(&self) -> String {
        let subject = match &self.kind {
            EventKind::DriftDetected { object, .. } | EventKind::DriftCorrected { object, .. } => {
                object.as_str()
            }
            _ => "",
        };
        format!(
            "{}/{}/{}/{}/{subject}",
            self.unit.cluster,
            self.unit.team,
            self.kind.name(),
            self.revision
        )
    }

    /// The first seven characters of the revision.
    pub fn short_revision(&self) -> &str {
        self.revision.get(..7).unwrap_or(&self.revision)
    }

    /// One line: what happened to which unit.
    pub fn title(&self) -> String {
        let (team, cluster, rev) = (&self.unit.team, &self.unit.cluster, self.short_revision());
        match &self.kind {
            EventKind::Failed { .. } => format!("{team} on {cluster} failed at {rev}"),
            EventKind::Recovered => format!("{team} on {cluster} is Synced again at {rev}"),
            EventKind::DriftDetected { object, by, .. } => {
                format!("{team} on {cluster}: {by} changed {object}")
            }
            EventKind::DriftCorrected { object, .. } => {
                format!("{team} on {cluster}: {object} corrected")
            }
            EventKind::DeletionsHeld { count, .. } => {
                format!("{team} on {cluster}: {count} deletions held at {rev}")
            }
            EventKind::RolloutStopped { .. } => {
                format!("{team} on {cluster}: rollout of {rev} stopped")
            }
            EventKind::Suspended { by, .. } => format!("{team} on {cluster} suspended by {by}"),
            EventKind::Resumed { .. } => format!("{team} on {cluster} resumed"),
        }
    }

    /// What a person needs besides the title (may be empty).
    pub fn detail(&self) -> String {
        match &self.kind {
            EventKind::Failed { message } => message.clone(),
            EventKind::Recovered => String::new(),
            EventKind::DriftDetected {
                by_person,
                corrects,
                ..
            } => {
                let who = if *by_person { "a person" } else { "a program" };
                let what = if *corrects {
                    "pontoon puts it back"
                } else {
                    "drift mode report: left as it is"
                };
                format!("changed by {who}; {what}")
            }
            EventKind::DriftCorrected { by, .. } => format!("the change by {by} was undone"),
            EventKind::DeletionsHeld { message, .. } => message.clone(),
            EventKind::RolloutStopped { reason } => reason.clone(),
            EventKind::Suspended { reason, until, .. } => match until {
                Some(until) => format!("{reason} (until {until})"),
                None => reason.clone(),
            },
            EventKind::Resumed { by } => match by {
                Some(by) => format!("resumed by {by}"),
                None => "the suspension expired".to_owned(),
            },
        }
    }

    /// The fields of the generic webhook body beyond the common ones.
    pub fn fields(&self) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::json;
        let v = match &self.kind {
            EventKind::Failed { message } => json!({"message": message}),
            EventKind::Recovered => json!({}),
            EventKind::DriftDetected {
                object,
                by,
                by_person,
                corrects,
            } => json!({"object": object, "by": by, "byPerson": by_person, "corrects": corrects}),
            EventKind::DriftCorrected { object, by } => json!({"object": object, "by": by}),
            EventKind::DeletionsHeld { count, message } => {
                json!({"count": count, "message": message})
            }
            EventKind::RolloutStopped { reason } => json!({"reason": reason}),
            EventKind::Suspended { by, reason, until } => {
                json!({"by": by, "reason": reason, "until": until})
            }
            EventKind::Resumed { by } => json!({"by": by}),
        };
        match v {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        }
    }
}
