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
            let mut ids: Vec<UnitId> = inner
                .units
                .keys()
                .filter(|id| &id.team == team)
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
            Some(diags) if !removal => {
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

    /// The units the board shows on `cluster`.
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
mod tests {
    use super::*;
    use crate::desired::{PrunePolicy, UnitDesired};

    fn unit(team: &str, cluster: &str) -> UnitId {
        UnitId {
            team: TeamName(team.into()),
            cluster: ClusterName(cluster.into()),
        }
    }

    fn render(revision: &str, broken: Option<&str>) -> DesiredState {
        let mut s = DesiredState {
            revision: revision.into(),
            ..DesiredState::default()
        };
        if let Some(team) = broken {
            s.failed_teams.insert(
                TeamName(team.into()),
                vec![Diagnostic {
                    file: format!("teams/{team}/app.yaml"),
                    line: 3,
                    column: 21,
                    team: Some(TeamName(team.into())),
                    cluster: None,
                    severity: Severity::Error,
                    rule: "namespace-not-owned".into(),
                    message: "ConfigMap in namespace b, which belongs to team b".into(),
                }],
            );
        }
        s
    }

    fn view(board: &Board, id: &UnitId) -> UnitView {
        board
            .units()
            .into_iter()
            .find(|u| u.team == id.team.0 && u.cluster == id.cluster.0)
            .expect("unit on the board")
    }

    /// Reports as the daemon's report loop hands them on.
    fn report(board: &Board, r: &UnitResult) -> UnitState {
        let shown = board.with_render_failure(r, false);
        board.record(&shown, false);
        shown.state
    }

    #[test]
    fn a_team_that_fails_to_render_stays_failed_while_its_last_good_state_is_resynced() {
        let board = Board::new();
        let shop = unit("shop", "prod");
        assert_eq!(
            report(&board, &UnitResult::new(shop.clone(), "aaaaaaa1")),
            UnitState::Synced
        );

        // The newest commit breaks the team: Failed at once, on the cluster it runs on only.
        let failed = board
            .rendered(
                &render("bbbbbbb2", Some("shop")),
                &["prod".into(), "dev".into()],
            )
            .failed;
        assert_eq!(failed, std::slice::from_ref(&shop));
        let v = view(&board, &shop);
        assert_eq!(v.state, "Failed");
        let error = v.last_error.expect("render error shown");
        assert!(error.contains("render failed at bbbbbbb"), "{error}");
        assert!(error.contains("teams/shop/app.yaml:3:21"), "{error}");

        // A resync of the last good state (drift, the periodic pass) does not hide it.
        assert_eq!(
            report(&board, &UnitResult::new(shop.clone(), "aaaaaaa1")),
            UnitState::Failed
        );
        let v = view(&board, &shop);
        assert_eq!(
            (v.state.as_str(), v.revision.as_str()),
            ("Failed", "aaaaaaa1")
        );
        assert!(
            v.last_error
                .is_some_and(|e| e.contains("teams/shop/app.yaml:3:21"))
        );

        // A commit that renders again clears it with the next sync.
        assert!(
            board
                .rendered(&render("ccccccc3", None), &["prod".into()])
                .failed
                .is_empty()
        );
        assert_eq!(
            report(&board, &UnitResult::new(shop.clone(), "ccccccc3")),
            UnitState::Synced
        );
        assert_eq!(view(&board, &shop).last_error, None);
    }

    #[test]
    fn each_unit_of_a_team_that_fails_to_render_shows_its_own_clusters_error() {
        let spec = |cluster: &str, line: u64| Diagnostic {
            file: "teams/data/pipeline.yaml".into(),
            line,
            column: 3,
            team: Some(TeamName("data".into())),
            cluster: Some(cluster.into()),
            severity: Severity::Error,
            rule: "invalid-spec".into(),
            message: format!("Topic clickstream on {cluster}: spec.partitions must be an integer"),
        };
        let everywhere = Diagnostic {
            cluster: None,
            rule: "namespace-not-owned".into(),
            message: "ConfigMap in namespace b, which belongs to team b".into(),
            ..spec("any", 20)
        };
        let mut state = render("bbbbbbb2", None);
        state.failed_teams.insert(
            TeamName("data".into()),
            vec![
                spec("staging", 6),
                spec("prod", 6),
                everywhere.clone(),
                everywhere,
            ],
        );
        let clusters = ["staging".into(), "prod".into(), "dev".into()];
        board_errors(&state, &clusters, |cluster, error| match cluster {
            "staging" | "prod" => {
                assert!(
                    error.contains(&format!("Topic clickstream on {cluster}:")),
                    "{error}"
                );
                assert!(error.ends_with("(and 1 more error)"), "{error}");
            }
            _ => {
                assert!(error.contains("belongs to team b"), "{error}");
                assert!(!error.contains("more error"), "{error}");
            }
        });

        // A unit with no error of its own still fails with its team, and says why.
        let mut state = render("bbbbbbb2", None);
        state
            .failed_teams
            .insert(TeamName("data".into()), vec![spec("staging", 6)]);
        board_errors(&state, &clusters[..2], |_, error| {
            assert!(error.contains("Topic clickstream on staging:"), "{error}");
        });
    }

    fn board_errors(state: &DesiredState, clusters: &[String], check: impl Fn(&str, &str)) {
        let board = Board::new();
        let failed = board.rendered(state, clusters).failed;
        assert_eq!(failed.len(), clusters.len());
        for id in failed {
            let error = view(&board, &id).last_error.expect("render error shown");
            check(&id.cluster.0, &error);
            // The same message after a resync of the last good state.
            let resync = UnitResult::new(id.clone(), "aaaaaaa1");
            let shown = board.with_render_failure(&resync, false);
            assert_eq!(shown.message.as_deref(), Some(error.as_str()));
        }
    }

    #[test]
    fn a_resync_that_changes_nothing_keeps_the_summary_of_what_the_revision_did() {
        let board = Board::new();
        let shop = unit("shop", "prod");
        let key = |name: &str| crate::desired::ObjectKey {
            group: String::new(),
            kind: "ConfigMap".into(),
            namespace: "shop".into(),
            name: name.into(),
        };
        let mut first = UnitResult::new(shop.clone(), "aaaaaaa1");
        first.created = vec![key("a"), key("b")];
        first.pruned = vec![key("old")];
        report(&board, &first);
        let did = "applied 2 (+2 ~0), pruned 1";
        assert_eq!(view(&board, &shop).summary, did);

        let mut resync = UnitResult::new(shop.clone(), "aaaaaaa1");
        resync.unchanged = 2;
        report(&board, &resync);
        assert_eq!(view(&board, &shop).summary, did);

        // A new revision that changes nothing here says so.
        let mut next = UnitResult::new(shop.clone(), "bbbbbbb2");
        next.unchanged = 2;
        report(&board, &next);
        assert_eq!(view(&board, &shop).summary, "applied 2 (+0 ~0), pruned 0");

        // After a failure, the quiet retry that recovers replaces the failure's summary.
        let mut failed = UnitResult::new(shop.clone(), "bbbbbbb2");
        failed.unchanged = 2;
        failed.message_for_tests("cannot reach the cluster");
        failed.errors.push(crate::sync::ObjectError {
            object: "ConfigMap shop/a".into(),
            message: "cannot reach the cluster".into(),
        });
        failed.state = UnitState::Failed;
        report(&board, &failed);
        assert_eq!(
            view(&board, &shop).summary,
            "applied 2 (+0 ~0), pruned 0, 1 errors"
        );
        report(&board, &next);
        assert_eq!(view(&board, &shop).summary, "applied 2 (+0 ~0), pruned 0");
        assert_eq!(view(&board, &shop).state, "Synced");
    }

    #[test]
    fn a_new_team_that_fails_to_render_shows_on_every_cluster_and_a_removal_is_not_rewritten() {
        let board = Board::new();
        let failed = board
            .rendered(
                &render("bbbbbbb2", Some("new")),
                &["prod".into(), "dev".into()],
            )
            .failed;
        assert_eq!(failed, [unit("new", "prod"), unit("new", "dev")]);
        let removal = UnitResult::new(unit("new", "prod"), "bbbbbbb2");
        assert_eq!(
            board.with_render_failure(&removal, true).state,
            UnitState::Synced
        );

        // When its team.yaml reads, only the clusters it names.
        let board = Board::new();
        let mut state = render("bbbbbbb2", Some("new"));
        state
            .failed_team_clusters
            .insert(TeamName("new".into()), vec![ClusterName("dev".into())]);
        let failed = board
            .rendered(&state, &["prod".into(), "dev".into()])
            .failed;
        assert_eq!(failed, [unit("new", "dev")]);
    }

    /// Once the new team renders, only the clusters it runs on stay on the board: a Failed
    /// unit nobody will ever sync would page on-call for good.
    #[test]
    fn a_new_team_that_renders_again_leaves_the_clusters_it_does_not_run_on() {
        let board = Board::new();
        let clusters = ["prod".into(), "dev".into()];
        board.rendered(&render("bbbbbbb2", Some("new")), &clusters);
        // A unit synced once stays until its removal is reported.
        assert_eq!(
            report(&board, &UnitResult::new(unit("shop", "dev"), "aaaaaaa1")),
            UnitState::Synced
        );
        let mut state = render("ccccccc3", None);
        state.units.insert(
            unit("new", "dev"),
            UnitDesired {
                unit: unit("new", "dev"),
                namespaces: vec!["new".into()],
                objects: Vec::new(),
                prune: PrunePolicy::default(),
            },
        );
        let r = board.rendered(&state, &clusters);
        assert!(r.failed.is_empty());
        assert_eq!(r.dropped, [unit("new", "prod")]);
        // Still showing the failure until its first sync.
        assert!(board.state_of(&unit("new", "dev")).is_some());
        assert_eq!(
            board.state_of(&unit("shop", "dev")),
            Some(BoardState::Synced)
        );
        assert_eq!(board.state_of(&unit("new", "prod")), None);
    }
}
