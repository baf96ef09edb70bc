//! Teams that left: which teams still have an inventory on a cluster though the repo no
//! longer gives them a unit there, and removing what such a team left behind.
//!
//! A team whose render failed has not left: its clusters are left exactly as they are. A
//! removal prunes under the same rules as any sync (the mass-deletion hold included).

use std::collections::BTreeSet;
use std::time::Instant;

use super::inventory::Inventory;
use super::{Syncer, UnitResult};
use crate::desired::{DesiredState, PrunePolicy, TeamName, UnitDesired, UnitId};

impl Syncer {
    /// Teams with an inventory on this cluster that `state` gives no unit here and whose
    /// render did not fail: the teams that left the repo or stopped targeting this
    /// cluster. None when `platform.yaml` is broken.
    pub async fn removed_teams(&self, state: &DesiredState) -> Result<Vec<TeamName>, kube::Error> {
        if state.platform_failed {
            return Ok(Vec::new());
        }
        let present: BTreeSet<&TeamName> = state
            .units
            .keys()
            .filter(|id| id.cluster == self.cluster.name)
            .map(|id| &id.team)
            .collect();
        Ok(self
            .teams_on_cluster()
            .await?
            .into_iter()
            .filter(|t| !present.contains(t) && !state.failed_teams.contains_key(t))
            .collect())
    }

    /// The unit a removal syncs: `team` on this cluster with nothing desired, under the
    /// platform's prune rules `policy`.
    pub(super) fn removal_of(&self, team: &TeamName, policy: &PrunePolicy) -> UnitDesired {
        UnitDesired {
            unit: UnitId {
                team: team.clone(),
                cluster: self.cluster.name.clone(),
            },
            namespaces: Vec::new(),
            objects: Vec::new(),
            prune: policy.clone(),
            adopt: Vec::new(),
            dependencies: Default::default(),
            components: Default::default(),
        }
    }

    /// Removes everything a team that left the repo had on this cluster, under the same
    /// pruning rules as any sync (the mass-deletion hold included).
    pub async fn remove_team(
        &self,
        team: &TeamName,
        policy: &PrunePolicy,
        revision: &str,
    ) -> UnitResult {
        let started = Instant::now();
        let _running = self.in_flight.start(team);
        let desired = self.removal_of(team, policy);
        let mut result = UnitResult::new(desired.unit.clone(), revision);
        match self.sync_inner(&desired, &mut result).await {
            Ok(()) if result.errors.is_empty() && result.held.is_empty() => {
                match Inventory::delete(&self.inventory_api(), &self.options.owner, team).await {
                    Ok(()) => result.writes += 1,
                    Err(e) => result.error("inventory", e.to_string()),
                }
                self.memory.drop_team(team);
            }
            Ok(()) => {}
            Err(e) => result.error(result.unit.clone(), e.to_string()),
        }
        result.finish(started);
        result
    }
}
