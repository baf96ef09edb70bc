//! Commit statuses: what each commit says about its units, decided from renders and sync
//! reports ([`Tracker`], pure), and posted to the forge in the background ([`forge`]).
//!
//! Contexts: `pontoon/<cluster>/<team>` for the units a commit changes (and the teams it
//! breaks or removes), `pontoon/<cluster>` as a summary of every unit of that cluster at
//! that commit. `pending` when the unit's work is handed to its worker, then `success`
//! (Synced), `failure` (Failed, OutOfSync, a render error) or `error` (superseded by a
//! newer commit before it finished). A unit a rollout stage holds back from a commit
//! stays `pending` with why, or turns `failure` when an earlier stage failed there.
//!
//! Across shard replicas ([`Scope`]): each posts the statuses of the units it syncs, and
//! one posts the summaries, counting the other replicas' units as their Units say they
//! stand ([`Notifier::observed`], in `summary`).

pub mod forge;
pub mod poster;
mod report;
mod summary;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::desired::{ClusterName, DesiredState, TeamName, UnitId};
use crate::sync::{UnitResult, UnitState};

pub use report::SyncReport;
use summary::summary;
pub use summary::{Elsewhere, Everything, Scope};

/// Why commit statuses cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("cannot build the HTTP client for the forge: {0}")]
    HttpClient(#[from] reqwest::Error),
    #[error("cannot register the commit status metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Commit statuses of a running daemon: a [`Tracker`] deciding, a [`poster::Poster`]
/// posting in the background.
pub struct Notifier {
    tracker: std::sync::Mutex<Tracker>,
    poster: poster::Poster,
    task: tokio::task::JoinHandle<()>,
}

impl Notifier {
    pub fn start(
        config: &crate::config::CommitStatusConfig,
        registry: &prometheus::Registry,
        clusters: impl IntoIterator<Item = String>,
    ) -> Result<Notifier, StatusError> {
        let forge = forge::Forge::new(config)?;
        let poster = poster::Poster::new(registry)?;
        let task = tokio::spawn(poster.clone().run(forge));
        Ok(Notifier {
            tracker: std::sync::Mutex::new(Tracker::new(clusters)),
            poster,
            task,
        })
    }

    fn tracker(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A render is being handed to the scheduler.
    pub fn rendered(&self, state: &std::sync::Arc<DesiredState>) {
        let out = self.tracker().rendered(state);
        self.poster.post(out);
    }

    /// A unit reported.
    pub fn reported(&self, report: &SyncReport) {
        let out = self.tracker().reported(report);
        self.poster.post(out);
    }

    /// A rollout stage holds a unit back from a commit (see [`Tracker::gated`]).
    pub fn gated(&self, sha: &str, unit: &UnitId, stopped: bool, description: &str) {
        let out = self.tracker().gated(sha, unit, stopped, description);
        self.poster.post(out);
    }

    /// Which units this process posts the statuses of, and whether it posts the
    /// summaries (default: every unit, and the summaries).
    pub fn set_scope(&self, scope: std::sync::Arc<dyn Scope>) {
        self.tracker().scope = scope;
    }

    /// Where a unit another replica syncs stands, as its Unit says.
    pub fn observed(&self, unit: &UnitId, now: Elsewhere) {
        let out = self.tracker().observed(unit, now);
        self.poster.post(out);
    }

    /// Queues statuses decided elsewhere (pull-request plans).
    pub fn post(&self, statuses: Vec<Status>) {
        self.poster.post(statuses);
    }

    /// Posts what is owed, at most `deadline`, then stops. Returns what was left unposted.
    pub async fn finish(&self, deadline: std::time::Duration) -> usize {
        let left = self.poster.flush(deadline).await;
        self.task.abort();
        left
    }
}

/// How many commits are followed at once; reports for older ones are ignored.
const TRACKED_REVISIONS: usize = 16;

/// The context of pull-request plans.
pub const PLAN_CONTEXT: &str = "pontoon/plan";

/// GitHub's limit on a status description, kept for every forge.
pub const DESCRIPTION_LIMIT: usize = 140;

/// The state of one commit status, in GitHub's vocabulary; providers translate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    Pending,
    Success,
    Failure,
    /// The check could not finish (superseded by a newer commit).
    Error,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Success => "success",
            State::Failure => "failure",
            State::Error => "error",
        }
    }
}

/// One status to post on one commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub sha: String,
    pub context: String,
    pub state: State,
    pub description: String,
    /// The unit it is about (`None` for a cluster summary or a plan), for the target URL.
    pub cluster: Option<String>,
    pub team: Option<String>,
}

impl Status {
    fn new(sha: &str, context: String, state: State, description: impl Into<String>) -> Self {
        Status {
            sha: sha.to_owned(),
            context,
            state,
            description: truncate(&description.into(), DESCRIPTION_LIMIT),
            cluster: None,
            team: None,
        }
    }

    /// The `pontoon/plan` status of a pull request's head commit.
    pub fn plan(sha: &str, state: State, description: impl Into<String>) -> Self {
        Status::new(sha, PLAN_CONTEXT.to_owned(), state, description)
    }

    fn unit(sha: &str, unit: &UnitId, state: State, description: impl Into<String>) -> Self {
        Status {
            cluster: Some(unit.cluster.0.clone()),
            team: Some(unit.team.0.clone()),
            ..Status::new(sha, unit_context(unit), state, description)
        }
    }

    fn summary(sha: &str, cluster: &ClusterName, state: State, description: String) -> Self {
        Status {
            cluster: Some(cluster.0.clone()),
            ..Status::new(sha, format!("pontoon/{cluster}"), state, description)
        }
    }
}

pub fn unit_context(unit: &UnitId) -> String {
    format!("pontoon/{}/{}", unit.cluster, unit.team)
}

/// Cuts `s` to at most `limit` characters, marking the cut with `…`.
pub fn truncate(s: &str, limit: usize) -> String {
    let s = s.trim();
    if s.chars().count() <= limit {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(limit.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Where one unit is at one commit.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Progress {
    Waiting,
    Progressing,
    Succeeded,
    Failed(String),
    /// The unit moved on to a newer commit before this one finished.
    Superseded(String),
}

impl Progress {
    fn finished(&self) -> bool {
        !matches!(self, Progress::Waiting | Progress::Progressing)
    }
}

/// One followed commit.
#[derive(Debug)]
struct Commit {
    sha: String,
    /// Every unit that syncs this commit (changed or not): the summaries count them all.
    units: BTreeMap<UnitId, Progress>,
    /// Units that get a status of their own: changed, removed or broken by this commit.
    own: BTreeSet<UnitId>,
    /// Teams whose files fail to render at this commit, per cluster they were on.
    broken: BTreeMap<UnitId, String>,
    /// Units this commit removes (their team left the repo or the cluster).
    removed: BTreeSet<UnitId>,
    /// The platform itself fails to render: one failure per cluster, nothing else.
    platform: Option<String>,
}

/// Decides which statuses a commit gets. Pure: feed it renders and reports, post what it
/// returns.
#[derive(Debug)]
pub struct Tracker {
    clusters: Vec<ClusterName>,
    /// The last good render, shared with the scheduler (never copied).
    last: Option<std::sync::Arc<DesiredState>>,
    commits: VecDeque<Commit>,
    /// Which units get their own statuses here, and whether the summaries are posted.
    scope: std::sync::Arc<dyn Scope>,
    /// Where the units another replica syncs stand, as their Units say.
    elsewhere: BTreeMap<UnitId, Elsewhere>,
}

impl Tracker {
    pub fn new(clusters: impl IntoIterator<Item = String>) -> Self {
        Tracker {
            clusters: clusters.into_iter().map(ClusterName).collect(),
            last: None,
            commits: VecDeque::new(),
            scope: std::sync::Arc::new(Everything),
            elsewhere: BTreeMap::new(),
        }
    }

    /// A new render (every team's, also those another replica syncs) was handed to the
    /// scheduler. The first render after start counts every unit as changed (there is
    /// nothing to compare with).
    pub fn rendered(&mut self, state: &std::sync::Arc<DesiredState>) -> Vec<Status> {
        if self.commits.iter().any(|c| c.sha == state.revision) {
            return Vec::new();
        }
        let (scope, summarizes) = (self.scope.clone(), self.scope.summarizes());
        let sha = state.revision.as_str();
        let mut out = Vec::new();
        let mut commit = Commit {
            sha: state.revision.clone(),
            units: BTreeMap::new(),
            own: BTreeSet::new(),
            broken: BTreeMap::new(),
            removed: BTreeSet::new(),
            platform: None,
        };
        if state.platform_failed {
            let first = state
                .diagnostics
                .iter()
                .find(|d| d.severity == crate::desired::Severity::Error)
                .map(|d| d.to_string())
                .unwrap_or_else(|| "the platform does not render".to_owned());
            for cluster in self.clusters.iter().filter(|_| summarizes) {
                out.push(Status::summary(
                    sha,
                    cluster,
                    State::Failure,
                    format!("nothing synced: {first}"),
                ));
            }
            commit.platform = Some(first);
            self.push(commit);
            // `last` stays: the next good commit is compared with the last good one.
            return out;
        }
        let previous = self.last.as_deref();
        for (id, unit) in &state.units {
            if !self.clusters.contains(&id.cluster) {
                continue;
            }
            commit.units.insert(id.clone(), Progress::Waiting);
            let changed = previous.is_none_or(|p| p.units.get(id) != Some(unit));
            if changed && scope.reports(&id.team) {
                commit.own.insert(id.clone());
                out.push(Status::unit(sha, id, State::Pending, "syncing"));
            }
        }
        // Teams that left the repo (or a cluster): their removal is this commit's doing.
        if let Some(previous) = previous {
            for id in previous.units.keys() {
                if state.units.contains_key(id) || state.failed_teams.contains_key(&id.team) {
                    continue;
                }
                if !self.clusters.contains(&id.cluster) {
                    continue;
                }
                commit.units.insert(id.clone(), Progress::Waiting);
                commit.removed.insert(id.clone());
                if !scope.reports(&id.team) {
                    continue;
                }
                commit.own.insert(id.clone());
                out.push(Status::unit(
                    sha,
                    id,
                    State::Pending,
                    "removing the team's objects",
                ));
            }
        }
        for (team, diagnostics) in &state.failed_teams {
            let first = diagnostics
                .first()
                .map(|d| d.to_string())
                .unwrap_or_else(|| format!("team {team} does not render"));
            for cluster in self.clusters_of(team, state, previous) {
                let id = UnitId {
                    team: team.clone(),
                    cluster,
                };
                // A `deny` policy stops a team on some clusters only: those it renders
                // on have their own statuses above.
                if state.units.contains_key(&id) {
                    continue;
                }
                let first = diagnostics
                    .iter()
                    .find(|d| d.concerns(&id.cluster.0))
                    .map_or_else(|| first.clone(), |d| d.to_string());
                if scope.reports(team) {
                    out.push(Status::unit(
                        sha,
                        &id,
                        State::Failure,
                        format!("not synced: {first}"),
                    ));
                }
                commit.broken.insert(id, first.clone());
            }
        }
        self.last = Some(std::sync::Arc::clone(state));
        self.push(commit);
        // What the other replicas' units did at this commit before it was rendered here.
        out.extend(self.catch_up());
        if summarizes && let Some(commit) = self.commits.back() {
            for cluster in &self.clusters {
                out.extend(summary(commit, cluster));
            }
        }
        out
    }

    /// A sync attempt finished (or is rolling out).
    pub fn reported(&mut self, report: &SyncReport) -> Vec<Status> {
        let result = &report.result;
        let mut out = Vec::new();
        let Some(index) = self.commits.iter().position(|c| c.sha == result.revision) else {
            return out;
        };
        let commit = &mut self.commits[index];
        if report.removal && !commit.units.contains_key(&result.unit) {
            // A team removed from the cluster that this process never saw in a render
            // (it started after the team left): the removal still belongs to this commit.
            commit.units.insert(result.unit.clone(), Progress::Waiting);
            commit.own.insert(result.unit.clone());
        }
        let Some(progress) = commit.units.get_mut(&result.unit) else {
            return out;
        };
        if *progress == Progress::Succeeded {
            // Resyncs of a commit that already reached the cluster change nothing about it.
            return out;
        }
        let (next, state, description) = outcome(result, report.removal);
        if *progress == next && next == Progress::Progressing {
            return out;
        }
        *progress = next;
        if commit.own.contains(&result.unit) {
            out.push(Status::unit(&commit.sha, &result.unit, state, description));
        }
        if self.scope.summarizes() {
            out.extend(summary(commit, &result.unit.cluster));
        }
        out.extend(self.supersede(index, &result.unit));
        out
    }

    /// The commits before `index` that `unit` never finished: it has moved on to the
    /// commit at `index`, they never will.
    fn supersede(&mut self, index: usize, unit: &UnitId) -> Vec<Status> {
        let mut out = Vec::new();
        let summarizes = self.scope.summarizes();
        let newer = short(&self.commits[index].sha).to_owned();
        for older in self.commits.iter_mut().take(index) {
            let Some(p) = older.units.get_mut(unit) else {
                continue;
            };
            if p.finished() {
                continue;
            }
            *p = Progress::Superseded(newer.clone());
            if older.own.contains(unit) {
                out.push(Status::unit(
                    &older.sha,
                    unit,
                    State::Error,
                    format!("superseded by {newer} before it finished"),
                ));
            }
            if summarizes {
                out.extend(summary(older, &unit.cluster));
            }
        }
        out
    }

    /// A rollout stage holds `unit` back from commit `sha`: `pending` with why while it
    /// waits for an earlier stage, `failure` once an earlier stage failed at that commit
    /// (`stopped`), which the unit then never takes.
    pub fn gated(
        &mut self,
        sha: &str,
        unit: &UnitId,
        stopped: bool,
        description: &str,
    ) -> Vec<Status> {
        let mut out = Vec::new();
        let Some(commit) = self.commits.iter_mut().find(|c| c.sha == sha) else {
            return out;
        };
        let Some(progress) = commit.units.get_mut(unit) else {
            return out;
        };
        if progress.finished() {
            return out;
        }
        let state = if stopped {
            *progress = Progress::Failed(description.to_owned());
            State::Failure
        } else {
            State::Pending
        };
        if commit.own.contains(unit) {
            out.push(Status::unit(sha, unit, state, description));
        }
        if self.scope.summarizes() {
            out.extend(summary(commit, &unit.cluster));
        }
        out
    }

    fn push(&mut self, commit: Commit) {
        self.commits.push_back(commit);
        while self.commits.len() > TRACKED_REVISIONS {
            self.commits.pop_front();
        }
    }

    /// The clusters a broken team was on: from the last good render, or every cluster
    /// when this process has not seen the team yet.
    /// Where a failed team's statuses go: the clusters it had units on, else those its
    /// team.yaml names, else every cluster.
    fn clusters_of(
        &self,
        team: &TeamName,
        state: &DesiredState,
        previous: Option<&DesiredState>,
    ) -> Vec<ClusterName> {
        let known: Vec<ClusterName> = previous
            .map(|p| {
                p.units
                    .keys()
                    .filter(|id| &id.team == team)
                    .map(|id| id.cluster.clone())
                    .collect()
            })
            .unwrap_or_default();
        if !known.is_empty() {
            return known;
        }
        match state.failed_team_clusters.get(team) {
            Some(on) => self
                .clusters
                .iter()
                .filter(|c| on.contains(c))
                .cloned()
                .collect(),
            None => self.clusters.clone(),
        }
    }
}

/// The status a result gives its unit.
fn outcome(result: &UnitResult, removal: bool) -> (Progress, State, String) {
    let why = result.message.clone().unwrap_or_default();
    match result.state {
        UnitState::Synced if removal => (
            Progress::Succeeded,
            State::Success,
            format!("team removed: pruned {}", result.pruned.len()),
        ),
        UnitState::Synced => (Progress::Succeeded, State::Success, counts(result)),
        UnitState::Progressing => (
            Progress::Progressing,
            State::Pending,
            format!("applied, rolling out: {why}"),
        ),
        UnitState::OutOfSync | UnitState::Failed => {
            let line = if why.is_empty() {
                format!("{}: {}", result.state.as_str(), counts(result))
            } else {
                format!("{}: {why}", result.state.as_str())
            };
            (Progress::Failed(line.clone()), State::Failure, line)
        }
    }
}

/// `applied 12 (+3 ~1), pruned 1, 0 drift`.
pub fn counts(result: &UnitResult) -> String {
    let mut s = format!(
        "applied {} (+{} ~{}), pruned {}",
        result.applied(),
        result.created.len(),
        result.updated.len(),
        result.pruned.len()
    );
    if !result.held.is_empty() {
        s.push_str(&format!(", held {}", result.held.len()));
    }
    s.push_str(&format!(", {} drift", result.drifted.len()));
    s
}

/// The first 7 characters of a commit id.
pub fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

#[cfg(test)]
mod tests;
