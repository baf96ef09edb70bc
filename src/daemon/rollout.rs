//! Rollout stages in the running daemon: what each unit runs, what it last reported, and
//! from those (through the pure gate in `stages`) which units take the newest commit now
//! and which keep the revision they run. A unit held back keeps its worker and its work:
//! its resyncs and drift corrections go on at the revision it runs, never held.
//!
//! Kept in memory only. After a restart the gate starts again: a held unit's revision is
//! read back from its inventory and rendered again from the source (`gatekeeper`), and
//! a stage's soak time counts from the first Synced report the new process sees.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::desired::{DesiredState, UnitDesired, UnitId};
use crate::sync::{UnitResult, UnitState};

use super::stages::{Gate, Seen, decide};

/// What a unit was last handed: a revision and that revision's desired state of the unit.
#[derive(Debug, Clone)]
pub struct Running {
    pub revision: String,
    pub desired: Arc<UnitDesired>,
}

/// What the gate decided at one moment, for the daemon to act on.
#[derive(Debug, Default)]
pub struct Plan {
    /// Units that take the newest commit now, having run an older one.
    pub go: Vec<(UnitId, Running)>,
    /// Units held back: what each runs, `None` when nothing is known of it.
    pub held: BTreeMap<UnitId, Option<Running>>,
    /// Gate statuses not posted yet: unit, commit, stopped, description.
    pub statuses: Vec<(UnitId, String, bool, String)>,
    /// Every unit in a stage: the stage, and whether it waits on an earlier one.
    pub stages: BTreeMap<UnitId, (String, bool)>,
    /// When a soak now running ends.
    pub recheck: Option<Duration>,
    /// A unit whose running revision a restart found again is in this plan for the
    /// first time (the kinds it uses may need drift watches).
    pub restored: bool,
}

impl Plan {
    /// What the held units run, where that is known.
    pub fn held_running(&self) -> Vec<Arc<UnitDesired>> {
        self.held
            .values()
            .flatten()
            .map(|r| r.desired.clone())
            .collect()
    }

    /// The held units in the scheduler's terms.
    pub fn held_work(&self) -> BTreeMap<UnitId, Option<(Arc<UnitDesired>, String)>> {
        self.held
            .iter()
            .map(|(id, r)| {
                let work = r.as_ref().map(|r| (r.desired.clone(), r.revision.clone()));
                (id.clone(), work)
            })
            .collect()
    }
}

/// The daemon's memory of its rollout.
#[derive(Debug, Default)]
pub struct Rollout {
    running: BTreeMap<UnitId, Running>,
    seen: BTreeMap<UnitId, Seen>,
    /// The last gate status handed out per unit: commit and description.
    shown: BTreeMap<UnitId, (String, String)>,
    /// The newest render has stages: reports may open one.
    staged: bool,
    /// Units whose running revision a restart found again, not handed to a worker yet.
    restored: BTreeSet<UnitId>,
}

impl Rollout {
    /// A sync of `result.unit` finished (or is rolling out).
    pub fn reported(&mut self, result: &UnitResult, now: Instant) {
        if !self.staged {
            return;
        }
        let seen = self
            .seen
            .entry(result.unit.clone())
            .or_insert_with(|| Seen {
                revision: result.revision.clone(),
                synced_since: None,
                failed: false,
            });
        if seen.revision != result.revision {
            *seen = Seen {
                revision: result.revision.clone(),
                synced_since: None,
                failed: false,
            };
        }
        match result.state {
            UnitState::Synced => {
                seen.synced_since.get_or_insert(now);
            }
            UnitState::Failed => {
                seen.failed = true;
                seen.synced_since = None;
            }
            UnitState::Progressing | UnitState::OutOfSync => seen.synced_since = None,
        }
    }

    /// Whether the newest render has rollout stages (else no report changes a plan).
    pub fn staged(&self) -> bool {
        self.staged
    }

    /// What the unit runs, as a restart found it again (its inventory's revision).
    pub fn restored(&mut self, unit: UnitId, running: Running) {
        if !self.running.contains_key(&unit) {
            self.running.insert(unit.clone(), running);
            self.restored.insert(unit);
        }
    }

    /// The gate of every unit of `state` (the newest render) at `now`. Units that go are
    /// recorded as running the newest commit: the caller hands it to them.
    pub fn plan(&mut self, state: &DesiredState, now: Instant) -> Plan {
        let mut plan = Plan::default();
        if state.platform_failed {
            return plan;
        }
        self.staged = !state.rollout.stages.is_empty();
        if !self.staged {
            // Nothing to gate, nothing to remember: stages added later find what each
            // unit runs in its inventory, as after a restart.
            *self = Rollout::default();
            return plan;
        }
        // A team that left the repo (or a cluster) leaves the rollout; one that fails
        // to render keeps what it runs.
        let gone = |id: &UnitId| {
            !state.units.contains_key(id) && !state.failed_teams.contains_key(&id.team)
        };
        self.running.retain(|id, _| !gone(id));
        self.seen.retain(|id, _| !gone(id));
        self.shown.retain(|id, _| !gone(id));
        let units: BTreeSet<UnitId> = state.units.keys().cloned().collect();
        let decisions = decide(&state.rollout, &state.revision, &units, &self.seen, now);
        for (id, decision) in decisions {
            let Some(latest) = state.units.get(&id) else {
                continue;
            };
            let running = self.running.get(&id);
            // A commit that changes nothing of the unit holds nothing back.
            let unchanged = running.is_some_and(|r| *r.desired == *latest);
            let (stopped, description) = match decision.gate {
                _ if unchanged => (None, String::new()),
                Gate::Go => (None, String::new()),
                Gate::Wait {
                    description,
                    recheck,
                } => {
                    plan.recheck = match (plan.recheck, recheck) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    (Some(false), description)
                }
                Gate::Stopped { description } => (Some(true), description),
            };
            if let Some(stage) = &decision.stage {
                plan.stages
                    .insert(id.clone(), (stage.clone(), stopped == Some(false)));
            }
            match stopped {
                None => {
                    let restored = self.restored.remove(&id);
                    plan.restored |= restored;
                    if restored || running.is_none_or(|r| r.revision != state.revision) {
                        let now_running = Running {
                            revision: state.revision.clone(),
                            desired: Arc::new(latest.clone()),
                        };
                        plan.go.push((id.clone(), now_running.clone()));
                        self.running.insert(id, now_running);
                    }
                }
                Some(stopped) => {
                    plan.restored |= self.restored.remove(&id);
                    plan.held.insert(id.clone(), running.cloned());
                    let shown = (state.revision.clone(), description.clone());
                    if self.shown.get(&id) != Some(&shown) {
                        plan.statuses.push((
                            id.clone(),
                            state.revision.clone(),
                            stopped,
                            description,
                        ));
                        self.shown.insert(id, shown);
                    }
                }
            }
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{ClusterName, PrunePolicy, Rollout as Stages, Stage, TeamName};

    fn unit(cluster: &str) -> UnitId {
        UnitId {
            team: TeamName("shop".into()),
            cluster: ClusterName(cluster.into()),
        }
    }

    fn state(revision: &str, namespaces: &[&str]) -> DesiredState {
        let mut s = DesiredState {
            revision: revision.into(),
            rollout: Stages {
                stages: vec![
                    Stage {
                        name: "staging".into(),
                        clusters: vec![ClusterName("staging".into())],
                        soak: Duration::from_secs(3),
                    },
                    Stage {
                        name: "prod".into(),
                        clusters: vec![ClusterName("prod".into())],
                        soak: Duration::ZERO,
                    },
                ],
                skip_teams: BTreeSet::new(),
            },
            ..DesiredState::default()
        };
        for c in ["staging", "prod"] {
            s.units.insert(
                unit(c),
                UnitDesired {
                    unit: unit(c),
                    namespaces: namespaces.iter().map(|n| (*n).to_owned()).collect(),
                    objects: Vec::new(),
                    prune: PrunePolicy::default(),
                    adopt: Vec::new(),
                    dependencies: Default::default(),
                    components: Default::default(),
                },
            );
        }
        s
    }

    fn report(cluster: &str, revision: &str, state: UnitState) -> UnitResult {
        UnitResult {
            state,
            ..UnitResult::new(unit(cluster), revision)
        }
    }

    #[test]
    fn prod_keeps_its_revision_until_staging_soaked_then_takes_the_new_one() {
        let t0 = Instant::now();
        let mut rollout = Rollout::default();
        let first = state("a", &["one"]);
        let plan = rollout.plan(&first, t0);
        assert_eq!(plan.go.len(), 1, "staging goes");
        assert!(
            plan.held[&unit("prod")].is_none(),
            "nothing known of prod yet"
        );
        rollout.reported(&report("staging", "a", UnitState::Synced), t0);
        let plan = rollout.plan(&first, t0 + Duration::from_secs(3));
        assert_eq!(plan.go.len(), 1, "prod goes once staging soaked");
        rollout.reported(&report("prod", "a", UnitState::Synced), t0);

        let second = state("b", &["two"]);
        let t1 = t0 + Duration::from_secs(10);
        let plan = rollout.plan(&second, t1);
        let held = plan.held[&unit("prod")].as_ref().expect("prod runs a");
        assert_eq!(held.revision, "a");
        assert_eq!(held.desired.namespaces, vec!["one"]);
        assert_eq!(
            plan.statuses,
            vec![(
                unit("prod"),
                "b".to_owned(),
                false,
                "waiting for staging to sync and soak 3s".to_owned()
            )]
        );
        assert_eq!(plan.stages[&unit("prod")], ("prod".to_owned(), true));
        // The same wait is not posted twice.
        assert!(rollout.plan(&second, t1).statuses.is_empty());

        rollout.reported(&report("staging", "b", UnitState::Synced), t1);
        let plan = rollout.plan(&second, t1 + Duration::from_secs(1));
        assert_eq!(plan.recheck, Some(Duration::from_secs(2)));
        assert_eq!(
            plan.statuses[0].3,
            "waiting for staging: 2s of 3s soak left"
        );
        let plan = rollout.plan(&second, t1 + Duration::from_secs(3));
        assert!(plan.held.is_empty());
        assert_eq!(plan.go.len(), 1);
        assert_eq!(plan.go[0].1.revision, "b");
    }

    #[test]
    fn staging_failing_stops_prod_and_a_commit_changing_nothing_of_prod_goes() {
        let t0 = Instant::now();
        let mut rollout = Rollout::default();
        let first = state("a", &["one"]);
        rollout.restored(
            unit("prod"),
            Running {
                revision: "a".into(),
                desired: Arc::new(first.units[&unit("prod")].clone()),
            },
        );
        rollout.plan(&first, t0);
        let second = state("b", &["two"]);
        rollout.plan(&second, t0);
        rollout.reported(&report("staging", "b", UnitState::Failed), t0);
        let plan = rollout.plan(&second, t0);
        assert_eq!(
            plan.statuses,
            vec![(
                unit("prod"),
                "b".to_owned(),
                true,
                "stopped: staging failed".to_owned()
            )]
        );
        assert_eq!(plan.stages[&unit("prod")], ("prod".to_owned(), false));
        // Back to what prod runs: nothing to hold.
        let third = state("c", &["one"]);
        let plan = rollout.plan(&third, t0);
        assert!(plan.held.is_empty());
        assert_eq!(plan.go.len(), 2);
    }

    #[test]
    fn without_stages_nothing_is_held_or_remembered() {
        let mut rollout = Rollout::default();
        let mut plain = state("a", &["one"]);
        plain.rollout = Stages::default();
        let plan = rollout.plan(&plain, Instant::now());
        assert!(plan.held.is_empty() && plan.go.is_empty() && plan.stages.is_empty());
        rollout.reported(&report("prod", "a", UnitState::Synced), Instant::now());
        assert!(rollout.running.is_empty() && rollout.seen.is_empty());
    }
}
