//! The units other shard replicas sync, as their Units say. A replica that does not hold
//! the `platform` team's shard takes each component's health on a cluster from the
//! `platform` Unit's status, where the replica syncing that unit writes it, and uses it
//! exactly where it would use what its own sync of the unit found. It is read from the
//! watch of the Units each replica keeps for reconcile requests: no request of its own,
//! and nothing while nothing changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::ownership::Ownership;
use crate::desired::{ClusterName, DesiredState, PLATFORM_UNIT, TeamName, UnitId};
use crate::sync::Syncer;
use crate::units::control::Asked;
use crate::units::status::found_components;

/// What one cluster's Units say of the units this replica does not sync.
pub(super) struct OtherReplicas {
    pub(super) syncer: Arc<Syncer>,
    pub(super) ownership: Arc<Ownership>,
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
    }
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
