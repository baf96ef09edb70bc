//! The per-cluster summary (`pontoon/<cluster>`) of a commit, and who posts it when shard
//! replicas split the units: each replica posts the statuses of the units it syncs
//! ([`Scope::reports`]), and only one posts the summaries ([`Scope::summarizes`]). That
//! one counts every unit on the cluster: its own from its sync reports, the others' from
//! their Units, which the replica syncing them writes and every replica watches
//! ([`Elsewhere`]). A summary is posted only when it changed, as every status is.

use super::{ClusterName, Commit, Progress, State, Status, TeamName, Tracker, UnitId};
use crate::sync::UnitState;

/// Which units a process speaks for on the forge.
pub trait Scope: Send + Sync {
    /// Whether this process posts the statuses of `team`'s units (it syncs them).
    fn reports(&self, team: &TeamName) -> bool;
    /// Whether this process posts the per-cluster summaries.
    fn summarizes(&self) -> bool;
}

impl std::fmt::Debug for dyn Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scope")
    }
}

/// One process for everything: every unit's statuses, and the summaries.
#[derive(Debug, Clone, Copy)]
pub struct Everything;

impl Scope for Everything {
    fn reports(&self, _: &TeamName) -> bool {
        true
    }
    fn summarizes(&self) -> bool {
        true
    }
}

/// Where a unit another replica syncs stands, as its Unit's status says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Elsewhere {
    /// Its last sync: the revision, the state, and why it is not Synced.
    At {
        revision: String,
        state: UnitState,
        message: String,
    },
    /// Its Unit was deleted: the team left the cluster.
    Gone,
}

impl Elsewhere {
    fn progress(&self) -> Option<Progress> {
        let Elsewhere::At { state, message, .. } = self else {
            return None;
        };
        Some(match state {
            UnitState::Synced => Progress::Succeeded,
            UnitState::Progressing => Progress::Progressing,
            UnitState::OutOfSync | UnitState::Failed => {
                Progress::Failed(format!("{}: {message}", state.as_str()))
            }
        })
    }
}

impl Tracker {
    /// A unit another replica syncs changed, as its Unit says: the summaries of the
    /// commits it concerns are posted again (by the replica that posts summaries).
    pub fn observed(&mut self, unit: &UnitId, now: Elsewhere) -> Vec<Status> {
        if self.scope.reports(&unit.team) {
            // This replica's own reports speak for its units.
            return Vec::new();
        }
        if self.elsewhere.get(unit) == Some(&now) {
            return Vec::new();
        }
        self.elsewhere.insert(unit.clone(), now.clone());
        self.settle(unit, &now)
    }

    /// What the other replicas' units did at the newest commit before this replica
    /// rendered it.
    pub(super) fn catch_up(&mut self) -> Vec<Status> {
        let Some(sha) = self.commits.back().map(|c| c.sha.clone()) else {
            return Vec::new();
        };
        let at_newest: Vec<(UnitId, Elsewhere)> = self
            .elsewhere
            .iter()
            .filter(|(id, e)| {
                !self.scope.reports(&id.team)
                    && match e {
                        Elsewhere::At { revision, .. } => *revision == sha,
                        Elsewhere::Gone => true,
                    }
            })
            .map(|(id, e)| (id.clone(), e.clone()))
            .collect();
        let mut out = Vec::new();
        for (id, e) in at_newest {
            out.extend(self.settle(&id, &e));
        }
        out
    }

    /// Puts where `unit` stands into the commits it concerns.
    fn settle(&mut self, unit: &UnitId, now: &Elsewhere) -> Vec<Status> {
        let summarizes = self.scope.summarizes();
        let mut out = Vec::new();
        let Some(next) = now.progress() else {
            // Gone: the removals of it that were waiting are done.
            for commit in self.commits.iter_mut() {
                if !commit.removed.contains(unit) {
                    continue;
                }
                let Some(p) = commit.units.get_mut(unit) else {
                    continue;
                };
                if p.finished() {
                    continue;
                }
                *p = Progress::Succeeded;
                if summarizes {
                    out.extend(summary(commit, &unit.cluster));
                }
            }
            return out;
        };
        let Elsewhere::At { revision, .. } = now else {
            return out;
        };
        let Some(index) = self.commits.iter().position(|c| c.sha == *revision) else {
            return out;
        };
        let commit = &mut self.commits[index];
        let Some(progress) = commit.units.get_mut(unit) else {
            return out;
        };
        // A resync of a commit that reached the cluster changes nothing about it.
        if *progress == Progress::Succeeded || *progress == next {
            return out;
        }
        *progress = next;
        if summarizes {
            out.extend(summary(commit, &unit.cluster));
        }
        out.extend(self.supersede(index, unit));
        out
    }
}

/// The `pontoon/<cluster>` status of a commit, or None when it has nothing there.
pub(super) fn summary(commit: &Commit, cluster: &ClusterName) -> Option<Status> {
    if let Some(p) = &commit.platform {
        return Some(Status::summary(
            &commit.sha,
            cluster,
            State::Failure,
            format!("nothing synced: {p}"),
        ));
    }
    let units: Vec<(&UnitId, &Progress)> = commit
        .units
        .iter()
        .filter(|(id, _)| &id.cluster == cluster)
        .collect();
    let broken: Vec<&TeamName> = commit
        .broken
        .keys()
        .filter(|id| &id.cluster == cluster)
        .map(|id| &id.team)
        .collect();
    if units.is_empty() && broken.is_empty() {
        return None;
    }
    let total = units.len() + broken.len();
    let synced = units
        .iter()
        .filter(|(_, p)| **p == Progress::Succeeded)
        .count();
    let failed: Vec<&str> = units
        .iter()
        .filter(|(_, p)| matches!(p, Progress::Failed(_)))
        .map(|(id, _)| id.team.0.as_str())
        .collect();
    let superseded: Vec<&str> = units
        .iter()
        .filter(|(_, p)| matches!(p, Progress::Superseded(_)))
        .map(|(id, _)| id.team.0.as_str())
        .collect();
    let waiting: Vec<&str> = units
        .iter()
        .filter(|(_, p)| !p.finished())
        .map(|(id, _)| id.team.0.as_str())
        .collect();
    let mut parts = vec![format!("{synced}/{total} teams synced")];
    if !failed.is_empty() {
        parts.push(format!("failed: {}", failed.join(", ")));
    }
    if !broken.is_empty() {
        let names: Vec<&str> = broken.iter().map(|t| t.0.as_str()).collect();
        parts.push(format!("not rendered: {}", names.join(", ")));
    }
    if !superseded.is_empty() {
        parts.push(format!("superseded: {}", superseded.join(", ")));
    }
    if !waiting.is_empty() {
        parts.push(format!("waiting: {}", waiting.join(", ")));
    }
    let state = if !waiting.is_empty() {
        State::Pending
    } else if !failed.is_empty() || !broken.is_empty() {
        State::Failure
    } else if !superseded.is_empty() {
        State::Error
    } else {
        State::Success
    };
    Some(Status::summary(
        &commit.sha,
        cluster,
        state,
        parts.join("; "),
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::desired::{DesiredState, UnitDesired};
    use crate::status::SyncReport;
    use crate::sync::UnitResult;

    /// A replica holding `teams`, posting the summaries or not.
    struct Shard(&'static [&'static str], bool);

    impl Scope for Shard {
        fn reports(&self, team: &TeamName) -> bool {
            self.0.contains(&team.0.as_str())
        }
        fn summarizes(&self) -> bool {
            self.1
        }
    }

    fn id(team: &str) -> UnitId {
        UnitId {
            team: TeamName(team.into()),
            cluster: ClusterName("prod".into()),
        }
    }

    fn state(rev: &str, teams: &[&str]) -> Arc<DesiredState> {
        let units = teams
            .iter()
            .map(|t| {
                let unit = UnitDesired {
                    unit: id(t),
                    namespaces: vec![(*t).into()],
                    objects: Vec::new(),
                    prune: Default::default(),
                    adopt: Vec::new(),
                    dependencies: Default::default(),
                    components: Default::default(),
                };
                (id(t), unit)
            })
            .collect();
        Arc::new(DesiredState {
            revision: rev.into(),
            units,
            ..Default::default()
        })
    }

    fn synced(rev: &str, team: &str) -> SyncReport {
        SyncReport {
            result: UnitResult::new(id(team), rev),
            first_attempt: false,
            removal: false,
        }
    }

    fn at(rev: &str, state: UnitState) -> Elsewhere {
        Elsewhere::At {
            revision: rev.into(),
            state,
            message: "0 of 1 ready".into(),
        }
    }

    fn tracker(scope: Shard) -> Tracker {
        let mut t = Tracker::new(["prod".to_owned()]);
        t.scope = Arc::new(scope);
        t
    }

    fn described(out: &[Status]) -> Vec<String> {
        out.iter()
            .map(|s| format!("{} {} {}", s.context, s.state.as_str(), s.description))
            .collect()
    }

    #[test]
    fn the_summary_counts_the_units_other_replicas_sync_from_their_units() {
        let mut t = tracker(Shard(&["platform", "a"], true));
        let out = t.rendered(&state("r1", &["platform", "a", "b"]));
        assert_eq!(
            described(&out),
            [
                "pontoon/prod/a pending syncing",
                "pontoon/prod/platform pending syncing",
                "pontoon/prod pending 0/3 teams synced; waiting: a, b, platform",
            ]
        );
        t.reported(&synced("r1", "platform"));
        let out = t.reported(&synced("r1", "a"));
        assert_eq!(
            described(&out)[1],
            "pontoon/prod pending 2/3 teams synced; waiting: b"
        );
        let out = t.observed(&id("b"), at("r1", UnitState::Progressing));
        assert_eq!(
            described(&out),
            ["pontoon/prod pending 2/3 teams synced; waiting: b"]
        );
        let out = t.observed(&id("b"), at("r1", UnitState::Synced));
        assert_eq!(described(&out), ["pontoon/prod success 3/3 teams synced"]);
        // The same again (the watch after a resync) changes nothing.
        assert!(t.observed(&id("b"), at("r1", UnitState::Synced)).is_empty());
        // Its own units speak through reports, not through their Units.
        assert!(t.observed(&id("a"), at("r1", UnitState::Failed)).is_empty());
    }

    #[test]
    fn a_unit_seen_at_a_commit_before_this_replica_rendered_it_counts_there() {
        let mut t = tracker(Shard(&["a"], true));
        t.rendered(&state("r1", &["a", "b"]));
        t.reported(&synced("r1", "a"));
        // b moved on to r2 (and failed) before this replica rendered r2.
        let out = t.observed(&id("b"), at("r2", UnitState::Failed));
        assert!(out.is_empty(), "{out:?}");
        let out = t.rendered(&state("r2", &["a", "b"]));
        let out = described(&out);
        assert!(
            out.contains(&"pontoon/prod error 1/2 teams synced; superseded: b".to_owned()),
            "r1's summary: {out:?}"
        );
        assert_eq!(
            out.last().map(String::as_str),
            Some("pontoon/prod pending 0/2 teams synced; failed: b; waiting: a")
        );
    }

    #[test]
    fn a_replica_without_the_platform_shard_posts_its_units_and_no_summary() {
        let mut t = tracker(Shard(&["b"], false));
        let out = t.rendered(&state("r1", &["platform", "a", "b"]));
        assert_eq!(described(&out), ["pontoon/prod/b pending syncing"]);
        let out = t.reported(&synced("r1", "b"));
        assert_eq!(
            described(&out),
            ["pontoon/prod/b success applied 0 (+0 ~0), pruned 0, 0 drift"]
        );
        assert!(t.observed(&id("a"), at("r1", UnitState::Synced)).is_empty());
    }

    #[test]
    fn a_removal_another_replica_carries_out_ends_when_its_unit_is_gone() {
        let mut t = tracker(Shard(&["a"], true));
        t.rendered(&state("r1", &["a", "b"]));
        t.rendered(&state("r2", &["a"]));
        t.reported(&synced("r2", "a"));
        let out = t.observed(&id("b"), Elsewhere::Gone);
        assert_eq!(
            described(&out).last().map(String::as_str),
            Some("pontoon/prod success 2/2 teams synced")
        );
    }
}
