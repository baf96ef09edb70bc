//! The stage gate, pure: from the platform's rollout stages, what each unit last reported
//! and the time, whether a unit may take the newest commit, must wait for an earlier stage
//! (and how long), or is stopped because an earlier stage failed at that commit. No
//! clock, no I/O: `rollout` feeds it and acts on its answers.
//!
//! A team's unit in stage N may take commit R once every unit of that team in each stage
//! before N has reported Synced at R, and has stayed Synced since, for that stage's soak
//! time. A unit of the team that reported Failed at R stops the team's later stages for
//! R. Clusters in no stage, and teams that skip stages, always go.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::desired::{Rollout, TeamName, UnitId};

/// What a unit last reported at the revision it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub revision: String,
    /// Since when its reports at `revision` have been Synced; `None` while not Synced.
    pub synced_since: Option<Instant>,
    /// It reported Failed at `revision` (kept until it runs another revision).
    pub failed: bool,
}

/// The gate's answer for one unit at the newest commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// It may take the commit.
    Go,
    /// An earlier stage has not finished: `description` says which and how long;
    /// `recheck` is when the soak now running ends, if one is.
    Wait {
        description: String,
        recheck: Option<Duration>,
    },
    /// An earlier stage failed at this commit: the unit never takes it.
    Stopped { description: String },
}

/// The gate for a unit, with the name of the stage the unit is in (for its metric).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub gate: Gate,
    pub stage: Option<String>,
}

/// Where a team's units in one stage are at a commit.
enum StageState {
    Passed,
    Failed,
    NotSynced,
    Soaking { left: Duration },
}

/// The gate of every unit in `units` (the units of the render of `revision`).
pub fn decide(
    rollout: &Rollout,
    revision: &str,
    units: &BTreeSet<UnitId>,
    seen: &BTreeMap<UnitId, Seen>,
    now: Instant,
) -> BTreeMap<UnitId, Decision> {
    let mut out = BTreeMap::new();
    for unit in units {
        let index = rollout.stage_of(&unit.cluster);
        let stage = index.map(|i| rollout.stages[i].name.clone());
        let gate = match index {
            Some(i) if !rollout.skip_teams.contains(&unit.team) => (0..i)
                .find_map(|j| {
                    let state = stage_state(rollout, j, &unit.team, revision, units, seen, now);
                    gate_behind(&rollout.stages[j], state)
                })
                .unwrap_or(Gate::Go),
            _ => Gate::Go,
        };
        out.insert(unit.clone(), Decision { gate, stage });
    }
    out
}

/// The gate of a unit behind stage `stage` in `state`; `None` once the stage passed.
fn gate_behind(stage: &crate::desired::Stage, state: StageState) -> Option<Gate> {
    let name = &stage.name;
    match state {
        StageState::Passed => None,
        StageState::Failed => Some(Gate::Stopped {
            description: format!("stopped: {name} failed"),
        }),
        StageState::NotSynced if stage.soak.is_zero() => Some(Gate::Wait {
            description: format!("waiting for {name} to sync"),
            recheck: None,
        }),
        StageState::NotSynced => Some(Gate::Wait {
            description: format!("waiting for {name} to sync and soak {}", human(stage.soak)),
            recheck: None,
        }),
        StageState::Soaking { left } => Some(Gate::Wait {
            description: format!(
                "waiting for {name}: {} of {} soak left",
                human(left),
                human(stage.soak)
            ),
            recheck: Some(left),
        }),
    }
}

/// Where `team`'s units in stage `index` are at `revision`.
fn stage_state(
    rollout: &Rollout,
    index: usize,
    team: &TeamName,
    revision: &str,
    units: &BTreeSet<UnitId>,
    seen: &BTreeMap<UnitId, Seen>,
    now: Instant,
) -> StageState {
    let stage = &rollout.stages[index];
    let mut left = Duration::ZERO;
    let mut synced = true;
    for unit in units
        .iter()
        .filter(|u| &u.team == team && stage.clusters.contains(&u.cluster))
    {
        let at_revision = seen.get(unit).filter(|s| s.revision == revision);
        match at_revision {
            Some(s) if s.failed => return StageState::Failed,
            Some(Seen {
                synced_since: Some(since),
                ..
            }) => {
                let soaked = now.saturating_duration_since(*since);
                left = left.max(stage.soak.saturating_sub(soaked));
            }
            _ => synced = false,
        }
    }
    if !synced {
        StageState::NotSynced
    } else if left.is_zero() {
        StageState::Passed
    } else {
        StageState::Soaking { left }
    }
}

/// A duration as a status description shows it, rounded up: `40s`, `4m`, `1h 30m`.
pub fn human(d: Duration) -> String {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    if secs < 60 {
        return format!("{secs}s");
    }
    let minutes = secs.div_ceil(60);
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m}m"),
        (h, 0) => format!("{h}h"),
        (h, m) => format!("{h}h {m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{ClusterName, Stage};

    fn unit(team: &str, cluster: &str) -> UnitId {
        UnitId {
            team: TeamName(team.into()),
            cluster: ClusterName(cluster.into()),
        }
    }

    fn stages(soak: Duration) -> Rollout {
        let stage = |name: &str, clusters: &[&str]| Stage {
            name: name.into(),
            clusters: clusters.iter().map(|c| ClusterName((*c).into())).collect(),
            soak,
        };
        Rollout {
            stages: vec![
                stage("staging", &["staging"]),
                stage("canary", &["canary"]),
                stage("prod", &["prod-eu", "prod-us"]),
            ],
            skip_teams: BTreeSet::new(),
        }
    }

    fn units(list: &[(&str, &str)]) -> BTreeSet<UnitId> {
        list.iter().map(|(t, c)| unit(t, c)).collect()
    }

    fn synced(revision: &str, since: Instant) -> Seen {
        Seen {
            revision: revision.into(),
            synced_since: Some(since),
            failed: false,
        }
    }

    fn gate(d: &BTreeMap<UnitId, Decision>, team: &str, cluster: &str) -> Gate {
        d[&unit(team, cluster)].gate.clone()
    }

    fn wait(description: &str, recheck: Option<Duration>) -> Gate {
        Gate::Wait {
            description: description.into(),
            recheck,
        }
    }

    const TEN_MINUTES: Duration = Duration::from_secs(600);

    #[test]
    fn the_first_stage_goes_and_later_ones_wait_for_it_to_sync() {
        let all = units(&[("shop", "staging"), ("shop", "canary"), ("shop", "prod-eu")]);
        let d = decide(
            &stages(TEN_MINUTES),
            "b",
            &all,
            &BTreeMap::new(),
            Instant::now(),
        );
        assert_eq!(gate(&d, "shop", "staging"), Gate::Go);
        let waiting = wait("waiting for staging to sync and soak 10m", None);
        assert_eq!(gate(&d, "shop", "canary"), waiting);
        assert_eq!(gate(&d, "shop", "prod-eu"), waiting);
        assert_eq!(d[&unit("shop", "prod-eu")].stage.as_deref(), Some("prod"));
    }

    #[test]
    fn a_stage_synced_at_an_older_commit_does_not_count() {
        let now = Instant::now();
        let all = units(&[("shop", "staging"), ("shop", "canary")]);
        let seen = BTreeMap::from([(unit("shop", "staging"), synced("a", now - TEN_MINUTES))]);
        let d = decide(&stages(TEN_MINUTES), "b", &all, &seen, now);
        assert_eq!(
            gate(&d, "shop", "canary"),
            wait("waiting for staging to sync and soak 10m", None)
        );
    }

    #[test]
    fn the_next_stage_waits_out_the_soak_then_goes() {
        let now = Instant::now();
        let all = units(&[("shop", "staging"), ("shop", "canary"), ("shop", "prod-eu")]);
        let since = now - Duration::from_secs(6 * 60);
        let seen = BTreeMap::from([(unit("shop", "staging"), synced("b", since))]);
        let d = decide(&stages(TEN_MINUTES), "b", &all, &seen, now);
        assert_eq!(
            gate(&d, "shop", "canary"),
            wait(
                "waiting for staging: 4m of 10m soak left",
                Some(Duration::from_secs(240))
            )
        );
        // prod waits for staging first, then for canary.
        assert_eq!(
            gate(&d, "shop", "prod-eu"),
            wait(
                "waiting for staging: 4m of 10m soak left",
                Some(Duration::from_secs(240))
            )
        );

        let later = since + TEN_MINUTES;
        let d = decide(&stages(TEN_MINUTES), "b", &all, &seen, later);
        assert_eq!(gate(&d, "shop", "canary"), Gate::Go);
        assert_eq!(
            gate(&d, "shop", "prod-eu"),
            wait("waiting for canary to sync and soak 10m", None)
        );
    }

    #[test]
    fn every_unit_of_a_stage_counts_and_the_last_to_sync_sets_the_soak() {
        let now = Instant::now();
        let mut rollout = stages(TEN_MINUTES);
        rollout.stages.remove(1);
        let all = units(&[
            ("shop", "prod-eu"),
            ("shop", "prod-us"),
            ("shop", "staging"),
        ]);
        rollout.stages.push(Stage {
            name: "last".into(),
            clusters: vec![ClusterName("dr".into())],
            soak: Duration::ZERO,
        });
        let all: BTreeSet<UnitId> = all.into_iter().chain([unit("shop", "dr")]).collect();
        let seen = BTreeMap::from([
            (unit("shop", "staging"), synced("b", now - TEN_MINUTES)),
            (unit("shop", "prod-eu"), synced("b", now - TEN_MINUTES)),
        ]);
        let d = decide(&rollout, "b", &all, &seen, now);
        assert_eq!(gate(&d, "shop", "prod-us"), Gate::Go);
        assert_eq!(
            gate(&d, "shop", "dr"),
            wait("waiting for prod to sync and soak 10m", None)
        );
        let mut seen = seen;
        seen.insert(
            unit("shop", "prod-us"),
            synced("b", now - Duration::from_secs(30)),
        );
        let d = decide(&rollout, "b", &all, &seen, now);
        assert_eq!(
            gate(&d, "shop", "dr"),
            wait(
                "waiting for prod: 10m of 10m soak left",
                Some(Duration::from_secs(570))
            )
        );
    }

    #[test]
    fn a_failure_stops_the_teams_later_stages_and_no_other_team() {
        let now = Instant::now();
        let all = units(&[
            ("shop", "staging"),
            ("shop", "canary"),
            ("shop", "prod-eu"),
            ("data", "staging"),
            ("data", "canary"),
        ]);
        let seen = BTreeMap::from([
            (
                unit("shop", "staging"),
                Seen {
                    revision: "b".into(),
                    synced_since: None,
                    failed: true,
                },
            ),
            (unit("data", "staging"), synced("b", now - TEN_MINUTES)),
        ]);
        let d = decide(&stages(TEN_MINUTES), "b", &all, &seen, now);
        assert_eq!(gate(&d, "shop", "staging"), Gate::Go);
        let stopped = Gate::Stopped {
            description: "stopped: staging failed".into(),
        };
        assert_eq!(gate(&d, "shop", "canary"), stopped);
        assert_eq!(gate(&d, "shop", "prod-eu"), stopped);
        assert_eq!(gate(&d, "data", "canary"), Gate::Go);
        // The next commit starts afresh.
        let d = decide(&stages(TEN_MINUTES), "c", &all, &seen, now);
        assert_eq!(
            gate(&d, "shop", "canary"),
            wait("waiting for staging to sync and soak 10m", None)
        );
    }

    #[test]
    fn a_team_without_units_in_a_stage_skips_it_and_a_team_may_skip_all() {
        let all = units(&[("shop", "prod-eu"), ("ops", "staging"), ("ops", "prod-eu")]);
        let mut rollout = stages(TEN_MINUTES);
        rollout.skip_teams.insert(TeamName("ops".into()));
        let d = decide(&rollout, "b", &all, &BTreeMap::new(), Instant::now());
        assert_eq!(gate(&d, "shop", "prod-eu"), Gate::Go);
        assert_eq!(gate(&d, "ops", "prod-eu"), Gate::Go);
    }

    #[test]
    fn clusters_in_no_stage_and_no_stages_at_all_go() {
        let all = units(&[("shop", "staging"), ("shop", "lab")]);
        let d = decide(
            &stages(TEN_MINUTES),
            "b",
            &all,
            &BTreeMap::new(),
            Instant::now(),
        );
        assert_eq!(gate(&d, "shop", "lab"), Gate::Go);
        assert_eq!(d[&unit("shop", "lab")].stage, None);
        let d = decide(
            &Rollout::default(),
            "b",
            &all,
            &BTreeMap::new(),
            Instant::now(),
        );
        assert!(d.values().all(|d| d.gate == Gate::Go));
    }

    #[test]
    fn without_a_soak_the_next_stage_goes_once_synced() {
        let now = Instant::now();
        let all = units(&[("shop", "staging"), ("shop", "canary")]);
        let d = decide(&stages(Duration::ZERO), "b", &all, &BTreeMap::new(), now);
        assert_eq!(
            gate(&d, "shop", "canary"),
            wait("waiting for staging to sync", None)
        );
        let seen = BTreeMap::from([(unit("shop", "staging"), synced("b", now))]);
        let d = decide(&stages(Duration::ZERO), "b", &all, &seen, now);
        assert_eq!(gate(&d, "shop", "canary"), Gate::Go);
    }

    #[test]
    fn durations_read_as_people_write_them_rounded_up() {
        assert_eq!(human(Duration::from_millis(2100)), "3s");
        assert_eq!(human(Duration::from_secs(59)), "59s");
        assert_eq!(human(Duration::from_secs(61)), "2m");
        assert_eq!(human(Duration::from_secs(3600)), "1h");
        assert_eq!(human(Duration::from_secs(5400)), "1h 30m");
    }
}
