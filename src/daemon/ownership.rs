//! Which teams this replica writes for: the teams of the shards it holds. The scheduler
//! asks it before it hands a unit any work (and before it removes a team that left the
//! repo), so no unit of a shard this replica does not hold gets a worker, whatever asks;
//! the render it is shown (board, metrics, rollout gate) is restricted to them. On the
//! forge it posts the statuses of those teams' units, and the per-cluster summaries while
//! it holds the shard of the `platform` team (whose unit on each cluster it then syncs).

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use super::shards::shard_of;
use crate::desired::{DesiredState, PLATFORM_UNIT, TeamName};

/// The shards held, shared by the scheduling loop (which changes it as Leases come and
/// go) and the scheduler (which checks it).
#[derive(Debug)]
pub struct Ownership {
    count: u32,
    held: RwLock<BTreeSet<u32>>,
}

impl Ownership {
    /// One shard, held: every team is this replica's (no sharding).
    pub fn everything() -> Ownership {
        Ownership {
            count: 1,
            held: RwLock::new(BTreeSet::from([0])),
        }
    }

    /// `count` shards, none held yet.
    pub fn none_of(count: u32) -> Ownership {
        Ownership {
            count: count.max(1),
            held: RwLock::new(BTreeSet::new()),
        }
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn held(&self) -> BTreeSet<u32> {
        self.held.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, held: BTreeSet<u32>) {
        *self.held.write().unwrap_or_else(|e| e.into_inner()) = held;
    }

    /// The shard of `team`.
    pub fn shard(&self, team: &TeamName) -> u32 {
        shard_of(&team.0, self.count)
    }

    /// Whether this replica writes for `team` now.
    pub fn holds(&self, team: &TeamName) -> bool {
        self.held
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&self.shard(team))
    }

    /// Whether every shard is held (then nothing needs restricting).
    pub fn holds_all(&self) -> bool {
        self.held.read().unwrap_or_else(|e| e.into_inner()).len() == self.count as usize
    }

    /// The teams of `state` this replica writes for, by name; None when it holds every
    /// shard.
    pub fn teams(&self, state: &DesiredState) -> Option<BTreeSet<TeamName>> {
        if self.holds_all() {
            return None;
        }
        let all = state
            .units
            .keys()
            .map(|u| &u.team)
            .chain(state.failed_teams.keys());
        Some(all.filter(|t| self.holds(t)).cloned().collect())
    }

    /// `state` restricted to the teams this replica writes for (the same state when it
    /// holds every shard): what its board, metrics, statuses and rollout gate see.
    pub fn restrict(&self, state: &Arc<DesiredState>) -> Arc<DesiredState> {
        if self.holds_all() {
            return state.clone();
        }
        let mine = DesiredState {
            revision: state.revision.clone(),
            units: state
                .units
                .iter()
                .filter(|(id, _)| self.holds(&id.team))
                .map(|(id, u)| (id.clone(), u.clone()))
                .collect(),
            failed_teams: state
                .failed_teams
                .iter()
                .filter(|(t, _)| self.holds(t))
                .map(|(t, d)| (t.clone(), d.clone()))
                .collect(),
            failed_team_clusters: state
                .failed_team_clusters
                .iter()
                .filter(|(t, _)| self.holds(t))
                .map(|(t, c)| (t.clone(), c.clone()))
                .collect(),
            platform_failed: state.platform_failed,
            default_prune: state.default_prune.clone(),
            diagnostics: state.diagnostics.clone(),
            namespace_owners: state.namespace_owners.clone(),
            rollout: state.rollout.clone(),
            policy_debt: state.policy_debt.clone(),
            notify: state.notify.clone(),
        };
        Arc::new(mine)
    }
}

impl crate::status::Scope for Ownership {
    fn reports(&self, team: &TeamName) -> bool {
        self.holds(team)
    }

    /// One replica posts the summaries: the one holding the `platform` team's shard
    /// (with one shard, the leader).
    fn summarizes(&self) -> bool {
        self.holds(&TeamName(PLATFORM_UNIT.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{ClusterName, PrunePolicy, UnitDesired, UnitId};

    fn state(teams: &[&str]) -> Arc<DesiredState> {
        let mut s = DesiredState::default();
        for t in teams {
            let id = UnitId {
                team: TeamName((*t).into()),
                cluster: ClusterName("c".into()),
            };
            let unit = UnitDesired {
                unit: id.clone(),
                namespaces: Vec::new(),
                objects: Vec::new(),
                prune: PrunePolicy::default(),
                adopt: Vec::new(),
                dependencies: Default::default(),
                components: Default::default(),
            };
            s.units.insert(id, unit);
        }
        Arc::new(s)
    }

    #[test]
    fn a_replica_sees_only_the_teams_of_its_shards() {
        let teams = ["shop", "payments", "search", "team-0001"];
        let o = Ownership::none_of(7);
        assert!(o.restrict(&state(&teams)).units.is_empty());
        // shop is shard 5, search shard 3.
        o.set(BTreeSet::from([5, 3]));
        let mine: Vec<String> = o
            .restrict(&state(&teams))
            .units
            .keys()
            .map(|u| u.team.0.clone())
            .collect();
        assert_eq!(mine, ["search", "shop"]);
        assert!(o.holds(&TeamName("shop".into())));
        assert!(!o.holds(&TeamName("payments".into())));
        let all = Ownership::everything();
        let s = state(&teams);
        assert!(Arc::ptr_eq(&all.restrict(&s), &s));
        assert_eq!(all.teams(&s), None);
    }
}
