//! The platform's components on one cluster, as the team units there see them: whether
//! each is healthy (read from the `platform` unit's last result), and whether the
//! `platform` unit has had its turn at the newest revision (teams sync after it).
//!
//! A team's object whose Kind `requires` a component that is not healthy here is not
//! applied: it waits (`waiting for component cloudnative-pg`), desired, never pruned, like
//! an object whose `dependsOn` is not healthy, and the unit is Progressing for as long as
//! the component is not healthy, with the component's own reason. Nothing here sends a
//! request: it is what the `platform` unit's syncs found, on this replica or (when another
//! replica holds the `platform` team's shard) as that replica wrote it in the `platform`
//! Unit's status ([`ComponentBoard::observe`]).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::watch;

use super::result::{UnitResult, UnitState};
use crate::desired::{PLATFORM_UNIT, UnitDesired};

/// How long a team's sync waits for the `platform` unit's turn at a revision before it
/// goes ahead anyway: a stuck platform unit holds no team back for long.
pub const PLATFORM_FIRST_WAIT: Duration = Duration::from_secs(300);

/// One component's state on the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Healthy,
    /// Not healthy (yet, or failed), and why: the platform unit's own words.
    NotHealthy(String),
}

/// The components of one cluster and the platform unit's turn, shared by every unit's
/// sync on the cluster.
#[derive(Debug)]
pub struct ComponentBoard {
    readiness: watch::Sender<BTreeMap<String, Readiness>>,
    /// The revision the `platform` unit is to sync before teams do; `None`: no wait.
    platform_turn: watch::Sender<Option<String>>,
    /// The revision of the platform unit's sync that `readiness` is from.
    found_at: std::sync::Mutex<Option<String>>,
}

impl Default for ComponentBoard {
    fn default() -> Self {
        ComponentBoard {
            readiness: watch::Sender::new(BTreeMap::new()),
            platform_turn: watch::Sender::new(None),
            found_at: std::sync::Mutex::new(None),
        }
    }
}

impl ComponentBoard {
    /// The `platform` unit is about to sync `revision`: teams wait for its turn, unless
    /// what is known already comes from a sync of that revision.
    pub fn expect_platform(&self, revision: &str) {
        if self.found_at().as_deref() == Some(revision) {
            return;
        }
        self.platform_turn.send_replace(Some(revision.to_owned()));
    }

    fn found_at(&self) -> Option<String> {
        self.found_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Returns once the `platform` unit has had its turn at the revision it was handed,
    /// or after `PLATFORM_FIRST_WAIT`.
    pub async fn platform_first(&self) {
        let mut rx = self.platform_turn.subscribe();
        let turn = async { rx.wait_for(Option::is_none).await.is_ok() };
        if tokio::time::timeout(PLATFORM_FIRST_WAIT, turn)
            .await
            .is_err()
        {
            tracing::warn!(
                "the platform unit has not finished a sync in {PLATFORM_FIRST_WAIT:?}; team units go ahead"
            );
        }
    }

    /// Records what a sync (or a health check) of the `platform` unit found.
    pub fn record(&self, desired: &UnitDesired, r: &UnitResult) {
        if desired.unit.team.0 != PLATFORM_UNIT {
            return;
        }
        self.observe(&r.revision, readiness_of(desired, r));
    }

    /// Takes what a sync of the `platform` unit at `revision` found, here or on the
    /// replica that holds the `platform` team's shard (read from its Unit): dependents
    /// waiting for a component move, and teams waiting for the platform unit's turn at
    /// that revision go ahead.
    pub fn observe(&self, revision: &str, found: BTreeMap<String, Readiness>) {
        // Held while the readiness changes, so `found` reads the two together.
        let mut at = self.found_at.lock().unwrap_or_else(|e| e.into_inner());
        *at = Some(revision.to_owned());
        self.readiness.send_if_modified(|now| {
            let changed = *now != found;
            *now = found;
            changed
        });
        drop(at);
        self.platform_turn.send_if_modified(|turn| {
            let done = turn.as_deref() == Some(revision);
            if done {
                *turn = None;
            }
            done
        });
    }

    /// Each component's readiness and the revision of the platform unit's sync that found
    /// it; None before any was found.
    pub fn found(&self) -> Option<(String, BTreeMap<String, Readiness>)> {
        let at = self.found_at.lock().unwrap_or_else(|e| e.into_inner());
        let revision = at.clone()?;
        Some((revision, self.readiness.borrow().clone()))
    }

    /// The first of `required` that is not healthy on this cluster, and why.
    pub fn first_not_healthy<'a>(&self, required: &'a [String]) -> Option<(&'a str, String)> {
        let now = self.readiness.borrow();
        required.iter().find_map(|name| match now.get(name) {
            Some(Readiness::Healthy) => None,
            Some(Readiness::NotHealthy(why)) => Some((name.as_str(), why.clone())),
            None => Some((
                name.as_str(),
                "the platform unit has not synced it yet".to_owned(),
            )),
        })
    }

    /// Returns once a component `r` waits for is no longer as `r` saw it (healthy now,
    /// or not healthy for another reason): a sync of the unit then applies what waited,
    /// or shows the new reason.
    pub async fn moved_since(&self, r: &UnitResult) {
        let seen: Vec<(String, Option<String>)> = r
            .waiting
            .iter()
            .filter_map(|w| Some((w.component.clone()?, w.reason.clone())))
            .collect();
        if seen.is_empty() {
            return std::future::pending().await;
        }
        let mut rx = self.readiness.subscribe();
        let moved = rx
            .wait_for(|now| {
                seen.iter().any(|(name, why)| match now.get(name) {
                    Some(Readiness::Healthy) => true,
                    Some(Readiness::NotHealthy(now)) => why.as_ref() != Some(now),
                    None => false,
                })
            })
            .await
            .is_ok();
        if !moved {
            std::future::pending::<()>().await;
        }
    }
}

/// Each component's readiness from one result of the `platform` unit: healthy when none
/// of its objects failed, rolls out or waits, and the unit itself did not fail or hold.
fn readiness_of(desired: &UnitDesired, r: &UnitResult) -> BTreeMap<String, Readiness> {
    let provides = &desired.components.provides;
    let objects: Vec<String> = provides.values().flatten().map(|k| k.to_string()).collect();
    // A failure of the unit as a whole (the cluster out of reach, a corrupt inventory) or
    // a hold is every component's.
    let whole = if let Some(e) = r.errors.iter().find(|e| !objects.contains(&e.object)) {
        Some(format!("the platform unit failed: {}", e.message))
    } else if r.state == UnitState::OutOfSync && !r.held.is_empty() {
        Some(format!(
            "the platform unit is held: {}",
            r.message.as_deref().unwrap_or("")
        ))
    } else {
        None
    };
    provides
        .iter()
        .map(|(name, keys)| {
            let why = whole.clone().or_else(|| {
                keys.iter().find_map(|k| {
                    let text = k.to_string();
                    if let Some(e) = r.errors.iter().find(|e| e.object == text) {
                        Some(format!("{k} failed: {}", e.message))
                    } else if let Some((_, why)) = r.not_ready.iter().find(|(n, _)| n == k) {
                        Some(format!("{k}: {why}"))
                    } else if r.waiting.iter().any(|w| w.object == *k) {
                        Some(format!("{k} is not applied yet"))
                    } else {
                        None
                    }
                })
            });
            let readiness = match why {
                None => Readiness::Healthy,
                Some(why) => Readiness::NotHealthy(why),
            };
            (name.clone(), readiness)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{ClusterName, ObjectKey, PrunePolicy, TeamName, UnitComponents, UnitId};

    fn key(kind: &str, name: &str) -> ObjectKey {
        ObjectKey {
            group: "apps".into(),
            kind: kind.into(),
            namespace: "ops".into(),
            name: name.into(),
        }
    }

    fn platform() -> UnitDesired {
        let unit = UnitId {
            team: TeamName(PLATFORM_UNIT.into()),
            cluster: ClusterName("prod".into()),
        };
        UnitDesired {
            unit,
            namespaces: Vec::new(),
            objects: Vec::new(),
            prune: PrunePolicy::default(),
            adopt: Vec::new(),
            dependencies: Default::default(),
            components: UnitComponents {
                requires: Default::default(),
                provides: [
                    ("cnpg".to_owned(), vec![key("Deployment", "cnpg")]),
                    ("strimzi".to_owned(), vec![key("Deployment", "strimzi")]),
                ]
                .into(),
            },
        }
    }

    #[test]
    fn each_component_is_healthy_by_its_own_objects() {
        let board = ComponentBoard::default();
        let desired = platform();
        let required = ["cnpg".to_owned(), "strimzi".to_owned()];
        assert_eq!(
            board.first_not_healthy(&required),
            Some(("cnpg", "the platform unit has not synced it yet".into()))
        );
        let mut r = UnitResult::for_tests(desired.unit.clone(), UnitState::Progressing);
        r.not_ready
            .push((key("Deployment", "strimzi"), "0 of 1 replicas ready".into()));
        board.record(&desired, &r);
        assert_eq!(board.first_not_healthy(&required[..1]), None);
        assert_eq!(
            board.first_not_healthy(&required),
            Some((
                "strimzi",
                "Deployment.apps ops/strimzi: 0 of 1 replicas ready".into()
            ))
        );
        // The unit failing as a whole fails every component.
        let mut r = UnitResult::for_tests(desired.unit.clone(), UnitState::Failed);
        r.errors.push(crate::sync::ObjectError {
            object: desired.unit.to_string(),
            message: "cannot reach the cluster".into(),
        });
        board.record(&desired, &r);
        assert_eq!(
            board.first_not_healthy(&required[..1]),
            Some((
                "cnpg",
                "the platform unit failed: cannot reach the cluster".into()
            ))
        );
    }

    #[tokio::test]
    async fn what_another_replica_found_is_waited_for_and_used_as_a_sync_here_would_be() {
        let board = ComponentBoard::default();
        let required = ["cnpg".to_owned()];
        board.expect_platform("r2");
        let waiting = board.platform_first();
        tokio::pin!(waiting);
        // Found healthy at the previous revision: the teams of r2 still wait for the
        // platform unit's turn at r2, as they do on one replica.
        board.observe("r1", [("cnpg".to_owned(), Readiness::Healthy)].into());
        assert_eq!(board.first_not_healthy(&required), None);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut waiting)
                .await
                .is_err(),
            "a component found at r1 is not the platform unit's turn at r2"
        );
        let why = Readiness::NotHealthy("Deployment.apps ops/cnpg: 0 of 1 ready".into());
        board.observe("r2", [("cnpg".to_owned(), why)].into());
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the platform unit's sync at r2, read from its Unit, lets teams go");
        assert_eq!(
            board.first_not_healthy(&required),
            Some(("cnpg", "Deployment.apps ops/cnpg: 0 of 1 ready".into()))
        );
        assert_eq!(board.found().map(|(at, _)| at).as_deref(), Some("r2"));
        // Asked for a revision already found: no wait.
        board.expect_platform("r2");
        tokio::time::timeout(Duration::from_millis(500), board.platform_first())
            .await
            .expect("no wait for a turn already taken");
    }

    #[tokio::test]
    async fn teams_wait_for_the_platform_units_turn_at_its_revision() {
        let board = ComponentBoard::default();
        let desired = platform();
        // No platform unit expected: no wait.
        board.platform_first().await;
        board.expect_platform("r2");
        let waiting = board.platform_first();
        tokio::pin!(waiting);
        let r1 = UnitResult::for_tests(desired.unit.clone(), UnitState::Synced);
        board.record(&desired, &r1);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut waiting)
                .await
                .is_err(),
            "a sync of another revision is not the platform unit's turn"
        );
        let mut r2 = UnitResult::for_tests(desired.unit.clone(), UnitState::Failed);
        r2.revision = "r2".into();
        board.record(&desired, &r2);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("a finished turn, even a failed one, lets teams go");
    }
}
