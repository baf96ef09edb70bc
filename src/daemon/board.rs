//! The daemon's picture of every unit, built from scheduler reports, renders and drift;
//! read by the HTTP endpoints. A plain mutex, never held across an `.await`. States are
//! [`BoardState`] values; their names are text only where they are shown.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::desired::{ClusterName, DesiredState, Diagnostic, Severity, TeamName, UnitId};
use crate::server::{DriftView, StatusSource, UnitView};
use crate::sync::{UnitResult, UnitState};

/// What the board shows for a unit: Pending until its first sync attempt, then the state
/// of its last one (or Failed while its team does not render).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoardState {
    Pending,
    Synced,
    OutOfSync,
    Progressing,
    Failed,
}

impl BoardState {
    pub fn as_str(self) -> &'static str {
        match self {
            BoardState::Pending => "Pending",
            BoardState::Synced => UnitState::Synced.as_str(),
            BoardState::OutOfSync => UnitState::OutOfSync.as_str(),
            BoardState::Progressing => UnitState::Progressing.as_str(),
            BoardState::Failed => UnitState::Failed.as_str(),
        }
    }
}

impl From<UnitState> for BoardState {
    fn from(s: UnitState) -> Self {
        match s {
            UnitState::Synced => BoardState::Synced,
            UnitState::OutOfSync => BoardState::OutOfSync,
            UnitState::Progressing => BoardState::Progressing,
            UnitState::Failed => BoardState::Failed,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    state: BoardState,
    revision: String,
    finished: Option<Instant>,
    summary: String,
    last_error: Option<String>,
    drifted: Vec<DriftView>,
    /// The last failure to watch or correct the unit's drift, until drift is handled again
    /// or a sync ends Synced.
    drift_error: Option<String>,
    /// The objects the last sync found with no health rule and no status.
    no_health_rule: Vec<String>,
    /// The unit's suspension in force, as said.
    suspended: Option<String>,
}

impl Entry {
    fn pending() -> Self {
        Entry {
            state: BoardState::Pending,
            revision: String::new(),
            finished: None,
            summary: String::new(),
            last_error: None,
            drifted: Vec::new(),
            drift_error: None,
            no_health_rule: Vec::new(),
            suspended: None,
        }
    }
}

#[derive(Default)]
struct Inner {
    units: BTreeMap<UnitId, Entry>,
    revision: String,
    /// Units that must have been attempted once for `/readyz`.
    expected: BTreeSet<UnitId>,
    attempted: BTreeSet<UnitId>,
    /// Who holds each shard (with `sync.shards` > 1).
    shards: Vec<crate::server::ShardView>,
    /// Teams whose files fail to render at `revision`, with their diagnostics.
    render_failures: BTreeMap<TeamName, Vec<Diagnostic>>,
}

/// What a new render changed on the board.
#[derive(Debug, Default)]
pub struct Rendered {
    /// Units of teams that fail to render, now shown Failed.
    pub failed: Vec<UnitId>,
    /// Units no longer shown.
    pub dropped: Vec<UnitId>,
}

/// Shared status of every unit.
#[derive(Default)]
pub struct Board {
    inner: Mutex<Inner>,
    leading: AtomicBool,
    /// Set once the first render finished (before that nothing can be ready).
    rendered: AtomicBool,
}

impl Board {
    pub fn new() -> Self {
        Board::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::Relaxed);
    }

    /// A new render: units appear as Pending, units of teams that failed to render show
    /// the first diagnostic as their error (on the clusters the team has units on, or for
    /// a team not seen before, on those its team.yaml names, or on every cluster when it
    /// does not read), and units that left the repo disappear
    /// once their removal has been reported. Returns the units marked Failed, and those
    /// dropped: a team that failed before anything knew its clusters was shown on every
    /// cluster, and once it renders, the clusters it does not run on (never synced) go.
    pub fn rendered(&self, state: &DesiredState, clusters: &[String]) -> Rendered {
        let mut inner = self.lock();
        inner.revision = state.revision.clone();
        inner.expected = state.units.keys().cloned().collect();
        for id in state.units.keys() {
            inner.units.entry(id.clone()).or_insert_with(Entry::pending);
        }
        inner.render_failures = state.failed_teams.clone();
        let inner = &mut *inner;
        let dropped: Vec<UnitId> = inner
            .units
            .keys()
            .filter(|id| {
                !inner.expected.contains(*id)
                    && !inner.attempted.contains(*id)
                    && !inner.render_failures.contains_key(&id.team)
            })
            .cloned()
            .collect();
        for id in &dropped {
            inner.units.remove(id);
        }
        let mut failed = Vec::new();
        for (team, diags) in &inner.render_failures {
            // A unit the render holds is not failed: a `deny` policy stops a team on
            // some of its clusters only.
            let mut ids: Vec<UnitId> = inner
                .units
                .keys()
                .filter(|id| &id.team == team && !inner.expected.contains(*id))
                .cloned()
                .collect();
            if ids.is_empty() {
                let runs_on = state.failed_team_clusters.get(team);
                ids = clusters
                    .iter()
                    .map(|c| ClusterName(c.clone()))
                    .filter(|c| runs_on.is_none_or(|on| on.contains(c)))
                    .map(|cluster| UnitId {
                        team: team.clone(),
                        cluster,
                    })
                    .filter(|id| !inner.expected.contains(id))
                    .collect();
            }
            for id in ids {
                let e = inner.units.entry(id.clone()).or_insert_with(Entry::pending);
                e.state = BoardState::Failed;
                e.last_error = Some(render_failure(&state.revision, diags, &id.cluster));
                failed.push(id);
            }
        }
        self.rendered.store(true, Ordering::Relaxed);
        Rendered { failed, dropped }
    }

    /// The result as the board and the metrics show it. A team whose files fail to render
    /// at the newest revision is still synced to its last good state (drift is corrected,
    /// nothing is pruned), but its change did not arrive: its units stay Failed, with the
    /// render error, whatever that sync of the old state did.
    pub fn with_render_failure<'a>(&self, r: &'a UnitResult, removal: bool) -> Cow<'a, UnitResult> {
        let inner = self.lock();
        match inner.render_failures.get(&r.unit.team) {
            Some(diags) if !removal && !inner.expected.contains(&r.unit) => {
                let message = render_failure(&inner.revision, diags, &r.unit.cluster);
                let mut r = r.clone();
                r.message = Some(match &r.message {
                    Some(own) => format!("{message}; last sync of the previous state: {own}"),
                    None => message,
                });
                r.state = UnitState::Failed;
                Cow::Owned(r)
            }
            _ => Cow::Borrowed(r),
        }
    }

    /// A finished sync attempt.
    pub fn record(&self, r: &UnitResult, removal: bool) {
        let mut inner = self.lock();
        inner.attempted.insert(r.unit.clone());
        if removal && r.state == UnitState::Synced {
            inner.units.remove(&r.unit);
            return;
        }
        let e = inner
            .units
            .entry(r.unit.clone())
            .or_insert_with(Entry::pending);
        // A resync that changes nothing at the same revision keeps the summary of the
        // sync that brought the revision, as Argo CD keeps its last sync operation: a
        // periodic "+0 ~0" would hide what the commit did within seconds.
        let quiet = r.created.is_empty()
            && r.updated.is_empty()
            && r.pruned.is_empty()
            && r.held.is_empty()
            && r.errors.is_empty();
        let succeeded = matches!(
            e.state,
            BoardState::Synced | BoardState::Progressing | BoardState::OutOfSync
        );
        if !(quiet && succeeded && e.revision == r.revision && !e.summary.is_empty()) {
            e.summary = r.summary();
        }
        e.state = r.state.into();
        if r.state == UnitState::Synced {
            e.drift_error = None;
        }
        e.revision = r.revision.clone();
        e.finished = Some(Instant::now());
        e.last_error = r.message.clone();
        e.no_health_rule = r.no_health_rule.iter().map(ToString::to_string).collect();
    }

    /// A unit a rollout stage holds back with nothing to run yet (new on its cluster):
    /// counted as attempted for `/readyz`, since it waits on purpose, and showing why
    /// until its first sync.
    pub fn held_back(&self, unit: &UnitId, why: &str) {
        let mut inner = self.lock();
        inner.attempted.insert(unit.clone());
        let e = inner
            .units
            .entry(unit.clone())
            .or_insert_with(Entry::pending);
        if e.state == BoardState::Pending {
            e.summary = why.to_owned();
        }
    }

    /// Drift seen on a unit (most recent last; at most 20 kept).
    pub fn drift(&self, unit: &UnitId, view: DriftView, out_of_sync: bool) {
        let mut inner = self.lock();
        let e = inner
            .units
            .entry(unit.clone())
            .or_insert_with(Entry::pending);
        e.drifted.retain(|d| d.object != view.object);
        e.drifted.push(view);
        if e.drifted.len() > 20 {
            e.drifted.remove(0);
        }
        e.drift_error = None;
        if out_of_sync && e.state == BoardState::Synced {
            e.state = BoardState::OutOfSync;
        }
    }

    /// Drift on `unit`'s objects could not be watched or corrected: shown on the unit
    /// until drift is handled again or a sync ends Synced.
    pub fn drift_failed(&self, unit: &UnitId, message: String) {
        if let Some(e) = self.lock().units.get_mut(unit) {
            e.drift_error = Some(message);
        }
    }

    /// Who holds each shard now.
    pub fn set_shards(&self, shards: Vec<crate::server::ShardView>) {
        self.lock().shards = shards;
    }

    /// Takes the units of the teams `gone` says off the board (their shard went to another
    /// replica, which shows them now); returns them.
    pub fn forget_teams(&self, gone: impl Fn(&crate::desired::TeamName) -> bool) -> Vec<UnitId> {
        let mut inner = self.lock();
        let ids: Vec<UnitId> = inner
            .units
            .keys()
            .filter(|id| gone(&id.team))
            .cloned()
            .collect();
        for id in &ids {
            inner.units.remove(id);
            inner.attempted.remove(id);
            inner.expected.remove(id);
        }
        ids
    }

    /// The units the board shows on `cluster`.
    /// A unit's suspension (`suspended by alice: INC-1234`), or its end.
    pub fn suspended(&self, unit: &UnitId, why: Option<String>) {
        let mut inner = self.lock();
        let e = inner
            .units
            .entry(unit.clone())
            .or_insert_with(Entry::pending);
        e.suspended = why;
    }

    pub fn units_on(&self, cluster: &ClusterName) -> Vec<UnitId> {
        self.lock()
            .units
            .keys()
            .filter(|id| &id.cluster == cluster)
            .cloned()
            .collect()
    }

    pub fn state_of(&self, unit: &UnitId) -> Option<BoardState> {
        self.lock().units.get(unit).map(|e| e.state)
    }
}

impl StatusSource for Board {
    fn units(&self) -> Vec<UnitView> {
        self.lock()
            .units
            .iter()
            .map(|(id, e)| UnitView {
                team: id.team.0.clone(),
                cluster: id.cluster.0.clone(),
                state: e.state.as_str().to_owned(),
                revision: e.revision.clone(),
                seconds_since_sync: e.finished.map(|t| t.elapsed().as_secs()),
                summary: e.summary.clone(),
                last_error: e.last_error.clone(),
                drifted: e.drifted.clone(),
                drift_error: e.drift_error.clone(),
                no_health_rule: e.no_health_rule.clone(),
                suspended: e.suspended.clone(),
            })
            .collect()
    }

    fn revision(&self) -> String {
        self.lock().revision.clone()
    }

    fn ready(&self) -> bool {
        if !self.leading.load(Ordering::Relaxed) {
            // A standby is ready to take over as soon as it runs.
            return true;
        }
        let inner = self.lock();
        self.rendered.load(Ordering::Relaxed)
            && inner.expected.iter().all(|u| inner.attempted.contains(u))
    }

    fn leading(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }

    fn shards(&self) -> Vec<crate::server::ShardView> {
        self.lock().shards.clone()
    }
}

/// The error a unit of a team that fails to render shows: the first error about its
/// cluster (the team's diagnostics hold every cluster's), and how many more there are.
fn render_failure(revision: &str, diags: &[Diagnostic], cluster: &ClusterName) -> String {
    let errors: Vec<&Diagnostic> = diags
        .iter()
        .filter(|d| d.severity == Severity::Error && d.concerns(&cluster.0))
        .collect();
    // A team fails as a whole: a unit with no error of its own shows another cluster's.
    let first = errors
        .first()
        .copied()
        .or_else(|| diags.iter().find(|d| d.severity == Severity::Error))
        .or(diags.first())
        .map_or_else(|| "no diagnostic".to_owned(), |d| d.to_string());
    // The same problem found once per cluster is one error.
    let distinct: BTreeSet<&Diagnostic> = errors.into_iter().collect();
    let more = match distinct.len() {
        0 | 1 => String::new(),
        2 => " (and 1 more error)".to_owned(),
        n => format!(" (and {} more errors)", n - 1),
    };
    let short = crate::status::short(revision);
    format!("render failed at {short}, cluster left as it was: {first}{more}")
}

#[cfg(test)]
mod tests;
