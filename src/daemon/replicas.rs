//! The units other shard replicas sync, as their Units say. A replica that does not hold
//! the `platform` team's shard takes each component's health on a cluster from the
//! `platform` Unit's status, where the replica syncing that unit writes it, and uses it
//! exactly where it would use what its own sync of the unit found; the replica that posts
//! the per-cluster commit status summaries counts every unit from its Unit. All of it is
//! read from the watch of the Units each replica keeps for reconcile requests: no request
//! of its own, and nothing while nothing changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::ownership::Ownership;
use crate::desired::{ClusterName, DesiredState, PLATFORM_UNIT, TeamName, UnitId};
use crate::status::{Elsewhere, Notifier};
use crate::sync::{Syncer, UnitState};
use crate::units::control::Asked;
use crate::units::status::{READY, UnitStatus, found_components};

/// What one cluster's Units say of the units this replica does not sync.
pub(super) struct OtherReplicas {
    pub(super) cluster: ClusterName,
    pub(super) syncer: Arc<Syncer>,
    pub(super) ownership: Arc<Ownership>,
    pub(super) statuses: Option<Arc<Notifier>>,
}

impl OtherReplicas {
    /// A Unit as the watch saw it now.
    pub(super) fn observe(&self, a: &Asked) {
        if self.ownership.holds(&a.team) {
            // Written by this replica: what its syncs found is known here already.
            return;
        }
        if a.team.0 == PLATFORM_UNIT
            && !a.gone
            && let Some((at, found)) = a.status.as_ref().and_then(found_components)
        {
            self.syncer.components().observe(&at, found);
        }
        let Some(statuses) = &self.statuses else {
            return;
        };
        let now = if a.gone {
            Elsewhere::Gone
        } else {
            match a.status.as_ref().and_then(elsewhere) {
                Some(now) => now,
                None => return,
            }
        };
        let unit = UnitId {
            team: a.team.clone(),
            cluster: self.cluster.clone(),
        };
        statuses.observed(&unit, now);
    }
}

/// Where a unit stands by its Unit's status: its revision, and its state (the `Ready`
/// condition's reason) with why it is not Synced.
fn elsewhere(status: &UnitStatus) -> Option<Elsewhere> {
    let ready = status.condition(READY)?;
    let state = match ready.reason.as_str() {
        "Synced" => UnitState::Synced,
        "Progressing" => UnitState::Progressing,
        "OutOfSync" => UnitState::OutOfSync,
        "Failed" => UnitState::Failed,
        _ => return None,
    };
    if status.revision.is_empty() {
        return None;
    }
    Some(Elsewhere::At {
        revision: status.revision.clone(),
        state,
        message: status
            .last_error
            .clone()
            .unwrap_or_else(|| ready.message.clone()),
    })
}

/// Teams of a cluster wait for its `platform` unit's turn at a new revision, also where
/// another replica syncs that unit (its Unit saying it synced the revision ends the
/// wait), as long as some unit of this replica on the cluster takes the revision: a
/// stage holding the cluster back holds the platform unit back too.
pub(super) fn expect_platform_elsewhere<W>(
    syncers: &BTreeMap<ClusterName, Arc<Syncer>>,
    ownership: &Ownership,
    full: &DesiredState,
    mine: &DesiredState,
    held: &BTreeMap<UnitId, W>,
) {
    let platform = TeamName(PLATFORM_UNIT.to_owned());
    if ownership.holds(&platform) {
        return;
    }
    for id in full.units.keys().filter(|id| id.team == platform) {
        let takes = mine
            .units
            .keys()
            .any(|u| u.cluster == id.cluster && !held.contains_key(u));
        if takes && let Some(syncer) = syncers.get(&id.cluster) {
            syncer.components().expect_platform(&full.revision);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::UnitResult;
    use crate::units::status::{Observed, next_status};

    #[test]
    fn a_units_state_is_read_from_its_ready_condition() {
        let unit = UnitId {
            team: TeamName("shop".into()),
            cluster: ClusterName("prod".into()),
        };
        let mut r = UnitResult::new(unit, "abc");
        r.state = UnitState::Failed;
        r.message = Some("1 object failed".into());
        let observed = Observed {
            generation: 1,
            handled_reconcile: None,
            now: "2026-01-01T00:00:00Z",
            suspended: None,
        };
        let status = next_status(&r, None, observed);
        assert_eq!(
            elsewhere(&status),
            Some(Elsewhere::At {
                revision: "abc".into(),
                state: UnitState::Failed,
                message: "1 object failed".into(),
            })
        );
        assert_eq!(elsewhere(&UnitStatus::default()), None);
    }
}
