//! The daemon's picture of every unit, built from scheduler reports and renders; read by
//! the HTTP endpoints. A plain mutex, never held across an `.await`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::desired::{DesiredState, UnitId};
use crate::server::{DriftView, StatusSource, UnitView};
use crate::sync::UnitResult;

#[derive(Debug, Clone)]
struct Entry {
    state: String,
    revision: String,
    finished: Option<Instant>,
    summary: String,
    last_error: Option<String>,
    drifted: Vec<DriftView>,
}

impl Entry {
    fn pending() -> Self {
        Entry {
            state: "Pending".to_owned(),
            revision: String::new(),
            finished: None,
            summary: String::new(),
            last_error: None,
            drifted: Vec::new(),
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
    /// the first diagnostic as their error, and units that left the repo disappear once
    /// their removal has been reported.
    pub fn rendered(&self, state: &DesiredState, clusters: &[String]) {
        let mut inner = self.lock();
        inner.revision = state.revision.clone();
        inner.expected = state.units.keys().cloned().collect();
        for id in state.units.keys() {
            inner.units.entry(id.clone()).or_insert_with(Entry::pending);
        }
        for (team, diags) in &state.failed_teams {
            let first = diags
                .iter()
                .find(|d| d.severity == crate::desired::Severity::Error)
                .or(diags.first());
            let message = first
                .map(|d| d.to_string())
                .unwrap_or_else(|| "render failed".to_owned());
            for cluster in clusters {
                let id = UnitId {
                    team: team.clone(),
                    cluster: crate::desired::ClusterName(cluster.clone()),
                };
                let e = inner.units.entry(id).or_insert_with(Entry::pending);
                e.state = "Failed".to_owned();
                e.revision = state.revision.clone();
                e.last_error = Some(format!("render failed, cluster left as it was: {message}"));
            }
        }
        self.rendered.store(true, Ordering::Relaxed);
    }

    /// A finished sync attempt.
    pub fn record(&self, r: &UnitResult, removal: bool) {
        let mut inner = self.lock();
        inner.attempted.insert(r.unit.clone());
        if removal && r.state == crate::sync::UnitState::Synced {
            inner.units.remove(&r.unit);
            return;
        }
        let e = inner
            .units
            .entry(r.unit.clone())
            .or_insert_with(Entry::pending);
        e.state = r.state.as_str().to_owned();
        e.revision = r.revision.clone();
        e.finished = Some(Instant::now());
        e.summary = r.summary();
        e.last_error = r.message.clone();
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
        if out_of_sync && e.state == "Synced" {
            e.state = "OutOfSync".to_owned();
        }
    }

    pub fn state_of(&self, unit: &UnitId) -> Option<String> {
        self.lock().units.get(unit).map(|e| e.state.clone())
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
                state: e.state.clone(),
                revision: e.revision.clone(),
                seconds_since_sync: e.finished.map(|t| t.elapsed().as_secs()),
                summary: e.summary.clone(),
                last_error: e.last_error.clone(),
                drifted: e.drifted.clone(),
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
}
