//! The sync engine: makes one unit (a team on a cluster) equal to its desired state.
//!
//! One sync is the sequence of steps in [`Syncer::sync_inner`], and why in that order:
//! 1. read the unit's inventory and list its live objects (one list per kind and
//!    namespace, filtered by the team's label; whole objects for kinds whose health is
//!    read from them, metadata for the kinds healthy by nature) — reads only;
//! 2. if the desired objects and the live resourceVersions are what the last sync left,
//!    stop: no write request at all (with nothing remembered, after a restart, the
//!    inventory's uids, resourceVersions and digests say the same per object, and such an
//!    object gets no request in step 5); a resync after such a stop may take the live
//!    resourceVersions from the drift watches instead of the lists (`watched`), while they
//!    have run without a gap since;
//! 3. refuse a sync that would delete more than the platform's share of the team's own
//!    objects (held, reported), unless released for this revision; leave out what
//!    another team owns, and what exists without pontoon's labels unless the platform
//!    adopts it (`adopt`: nothing goes into a Namespace pontoon did not make);
//! 4. record `previous ∪ desired` in the inventory *before* applying, so a crash can
//!    never orphan an object;
//! 5. server-side apply in a safe order ([`order::Phase`]) — CRDs (then wait until
//!    Established), Namespaces, other cluster-scoped objects, namespaced objects —
//!    concurrently within a phase, bounded by the cluster's request limit; team objects
//!    as the team's identity; what depends on other objects in later waves, once those
//!    are healthy (`waves`), each wave recorded in the inventory before it is applied;
//! 6. prune what the previous inventory holds and the desired state does not, unless
//!    anything failed (a failed apply never deletes) or waits, respecting `pontoon.dev/prune:
//!    disabled` and the platform's rules for Namespaces and CRDs;
//! 7. shrink the inventory to what is desired; read health from what the apply returned.
//!
//! Where each part lives: the result model in `result`, resolving kinds in `resolve`,
//! what is live and who owns it in `live`, what a team may take over in `adopt`, one object's apply in `apply`, the phases in
//! `order` and `phases`, waves of what depends on other objects in `waves`, pruning in `prune` and its guarded delete in `delete`, what is
//! remembered between syncs in `memory`, what the drift watches saw (and the resyncs
//! answered from it) in `watched`, syncs in flight in `in_flight`, health rules in
//! `health` and the waits for them in `health_wait`, teams that left in `removal`, the
//! dry run in `plan`.
//!
//! The engine never panics on server answers and never holds a lock across an await.

pub mod adopt;
mod apply;
pub mod components;
mod delete;
pub mod health;
mod health_wait;
mod in_flight;
pub mod inventory;
mod inventory_pages;
mod live;
mod memory;
mod order;
mod phases;
pub mod plan;
mod prune;
pub mod rebuild;
mod removal;
mod resolve;
mod result;
mod watched;
mod waves;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};

use crate::cluster::{Cluster, ClusterError};
use crate::config::SyncConfig;
use crate::describe;
use crate::desired::{DesiredState, ObjectKey, Owner, PLATFORM_UNIT, TeamName, UnitDesired};
use in_flight::InFlight;
use inventory::{Entry, Inventory, InventoryError};
use memory::{Known, Memory};
use resolve::Planned;

pub use memory::AppliedObject;
pub use result::{ObjectError, UnitResult, UnitState, Waiting};
pub use watched::{Feed, Watched};

/// Settings of the sync engine (from the daemon config's `sync` section).
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// The daemon instance whose objects and inventories these are (`sync.owner`).
    pub owner: Owner,
    pub namespace: String,
    pub concurrency: usize,
    pub force_conflicts: bool,
    pub apply_timeout: Duration,
    /// Field managers that stand for people (kubectl's, and the drift config's): the
    /// fields they add to an object pontoon applies are removed when it is corrected.
    pub human_managers: Vec<String>,
    /// Of the resyncs of an unchanged unit, every this-many-th lists its objects even
    /// when the drift watches could answer it (`sync.fullResyncEvery`; 1: every one).
    pub full_resync_every: u32,
}

impl SyncOptions {
    /// Adds field managers that stand for people (the drift config's `humanManagers`).
    pub fn with_human_managers(mut self, extra: &[String]) -> Self {
        for m in extra {
            if !self.human_managers.contains(m) {
                self.human_managers.push(m.clone());
            }
        }
        self
    }
}

fn kubectl_managers() -> Vec<String> {
    crate::ssa::managed_fields::HUMAN_MANAGERS
        .iter()
        .map(|m| (*m).to_owned())
        .collect()
}

impl From<&SyncConfig> for SyncOptions {
    fn from(c: &SyncConfig) -> Self {
        SyncOptions {
            owner: c.owner.clone(),
            namespace: c.namespace.clone(),
            concurrency: c.concurrency,
            force_conflicts: c.force_conflicts,
            apply_timeout: c.apply_timeout,
            human_managers: kubectl_managers(),
            full_resync_every: c.full_resync_every,
        }
    }
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            owner: Owner::default(),
            namespace: crate::config::DEFAULT_NAMESPACE.to_owned(),
            concurrency: crate::config::DEFAULT_CONCURRENCY as usize,
            force_conflicts: true,
            apply_timeout: crate::config::DEFAULT_APPLY_TIMEOUT,
            human_managers: kubectl_managers(),
            full_resync_every: crate::config::full_resync_every_default(
                crate::config::DEFAULT_RESYNC_INTERVAL,
            ),
        }
    }
}

/// Why a sync stopped before its end (what concerns single objects is in the result).
#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error("{}", kube_failure(.0))]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The unit's inventory exists but does not parse: the unit is not synced at all.
    #[error(transparent)]
    Inventory(InventoryError),
}

/// A request the sync cannot do without: one refused as Forbidden is pontoon's own RBAC
/// (a kind teams write that `deploy/base/rbac.yaml` does not grant), not a cluster out of
/// reach, and the API server's own words name the permission.
fn kube_failure(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 403 => format!(
            "the cluster refuses pontoon's own account: {} (pontoon's RBAC, deploy/base/rbac.yaml, does not grant it)",
            s.message
        ),
        e => format!("cannot reach the cluster: {}", describe(e)),
    }
}

impl From<InventoryError> for SyncError {
    fn from(e: InventoryError) -> Self {
        match e {
            InventoryError::Read(e) => SyncError::Kube(e),
            corrupt => SyncError::Inventory(corrupt),
        }
    }
}

/// Syncs units on one cluster.
pub struct Syncer {
    cluster: Arc<Cluster>,
    options: SyncOptions,
    memory: Memory,
    namespace_ready: tokio::sync::OnceCell<()>,
    /// Teams with a sync in flight, so drift can tell pontoon's own write that has not
    /// been recorded yet from someone else's.
    in_flight: InFlight,
    /// The platform's components on this cluster, as team units wait for them.
    components: components::ComponentBoard,
    /// Teams suspended without correcting drift: drift leaves their objects as found.
    frozen: std::sync::Mutex<std::collections::BTreeSet<TeamName>>,
    /// What the drift watches of this cluster have seen, for resyncs answered without lists.
    watched: Arc<Watched>,
}

impl Syncer {
    pub fn new(cluster: Arc<Cluster>, options: SyncOptions) -> Self {
        Syncer {
            cluster,
            options,
            memory: Memory::default(),
            namespace_ready: tokio::sync::OnceCell::new(),
            in_flight: InFlight::default(),
            components: components::ComponentBoard::default(),
            frozen: Default::default(),
            watched: Arc::default(),
        }
    }

    /// The platform's components on this cluster: their health as the `platform` unit's
    /// syncs found it, and its turn before the teams'.
    pub fn components(&self) -> &components::ComponentBoard {
        &self.components
    }

    /// Returns once no sync of `team` is running on this cluster.
    pub async fn until_idle(&self, team: &TeamName) {
        self.in_flight.until_idle(team).await
    }

    /// Marks `team` suspended without correcting drift (or no longer): drift removes no
    /// field a person added to its objects while it is.
    pub fn set_frozen(&self, team: &TeamName, frozen: bool) {
        let mut set = self.frozen.lock().unwrap_or_else(|e| e.into_inner());
        if frozen {
            set.insert(team.clone());
        } else {
            set.remove(team);
        }
    }

    /// Whether `team` is suspended without correcting drift here.
    pub fn is_frozen(&self, team: &TeamName) -> bool {
        self.frozen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(team)
    }

    /// Whether a sync of `team` is running on this cluster right now.
    pub fn is_syncing(&self, team: &TeamName) -> bool {
        self.in_flight.contains(team)
    }

    /// Where the drift watches of this cluster leave what they see of pontoon's objects,
    /// so that a resync of an unchanged unit needs no list.
    pub fn watched(&self) -> &Arc<Watched> {
        &self.watched
    }

    /// The next sync of `team` lists its objects even if the drift watches could answer
    /// it: someone asked for a reconcile (`pontoon reconcile`, the Unit's annotation),
    /// and a reconcile asked for checks the cluster itself.
    pub fn list_on_next_sync(&self, team: &TeamName) {
        self.memory.checked(team, None);
    }

    /// The daemon instance this syncer writes as: it touches no other owner's objects.
    pub fn owner(&self) -> &Owner {
        &self.options.owner
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// pontoon's own client, for callers that need raw access (drift, plan).
    pub fn client(&self) -> &Client {
        self.cluster.client()
    }

    /// What the last sync of `team` applied (for drift detection).
    pub fn applied(&self, team: &TeamName) -> Option<Arc<BTreeMap<ObjectKey, AppliedObject>>> {
        self.memory.applied(team)
    }

    /// Forgets what was applied, so the next sync re-checks every object.
    pub fn forget(&self, team: &TeamName) {
        self.memory.forget_last_apply(team);
    }

    /// Forgets everything remembered of `team` (another replica syncs it now): its next
    /// sync here starts from its inventory, as after a restart.
    pub fn forget_team(&self, team: &TeamName) {
        self.memory.drop_team(team);
    }

    fn inventory_api(&self) -> Api<ConfigMap> {
        Api::namespaced(self.cluster.client().clone(), &self.options.namespace)
    }

    async fn ensure_namespace(&self) -> Result<(), kube::Error> {
        self.namespace_ready
            .get_or_try_init(|| {
                inventory::ensure_namespace(
                    self.cluster.client(),
                    &self.options.namespace,
                    &self.options.owner,
                )
            })
            .await
            .map(|_| ())
    }

    /// Teams with an inventory on this cluster.
    pub async fn teams_on_cluster(&self) -> Result<Vec<TeamName>, kube::Error> {
        self.ensure_namespace().await?;
        inventory::teams_with_inventory(&self.inventory_api(), &self.options.owner).await
    }

    /// Makes the unit equal to `desired`. Never panics; every failure is in the result.
    /// Every object is applied with this syncer's owner label (stamped here when the
    /// caller did not stamp it already).
    /// The revision the unit's inventory records as last applied; `None` when the unit
    /// has no inventory on this cluster.
    pub async fn inventory_revision(
        &self,
        team: &TeamName,
    ) -> Result<Option<String>, InventoryError> {
        let inventory = Inventory::load(&self.inventory_api(), &self.options.owner, team).await?;
        Ok(inventory.exists.then_some(inventory.revision))
    }

    pub async fn sync(&self, desired: &UnitDesired, revision: &str) -> UnitResult {
        let desired = &*self.options.owner.owned(desired);
        if desired.unit.team.0 != PLATFORM_UNIT {
            self.components.platform_first().await;
        }
        let started = Instant::now();
        let _running = self.in_flight.start(&desired.unit.team);
        let mut result = UnitResult::new(desired.unit.clone(), revision);
        if let Err(e) = self.sync_inner(desired, &mut result).await {
            result.message = Some(e.to_string());
            result.error(&desired.unit, e.to_string());
        }
        result.finish(started);
        self.components.record(desired, &result);
        result
    }

    /// Syncs every unit of `state` on this cluster and removes teams that left the repo
    /// (or stopped targeting this cluster). Teams whose render failed are not touched, and
    /// a broken `platform.yaml` touches nothing at all. Units run concurrently; the
    /// cluster's request limit bounds them together.
    pub async fn sync_cluster(&self, state: &DesiredState) -> Vec<UnitResult> {
        if state.platform_failed {
            return Vec::new();
        }
        // The platform's components first: the teams' objects may stand on them.
        let (platform, teams): (Vec<&UnitDesired>, Vec<&UnitDesired>) = state
            .units
            .values()
            .filter(|u| u.unit.cluster == self.cluster.name)
            .partition(|u| u.unit.team.0 == PLATFORM_UNIT);
        let mut results = Vec::new();
        for u in platform {
            results.push(self.sync(u, &state.revision).await);
        }
        results.extend(
            futures::future::join_all(teams.into_iter().map(|u| self.sync(u, &state.revision)))
                .await,
        );
        let removed = match self.removed_teams(state).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(cluster = %self.cluster.name, error = %describe(&e), "cannot list inventories; removed teams are not pruned this time");
                return results;
            }
        };
        for team in removed {
            results.push(
                self.remove_team(&team, &state.default_prune, &state.revision)
                    .await,
            );
        }
        results
    }

    /// One sync of a unit to the revision `r` is for, step by step; see the module
    /// documentation for why in this order. Returns early (with what happened in `r`) when
    /// a step says stop.
    async fn sync_inner(&self, desired: &UnitDesired, r: &mut UnitResult) -> Result<(), SyncError> {
        let team = &desired.unit.team;
        // Read: the inventory, the desired objects' kinds, what is live.
        if self.claims_inventory_namespace(desired, r) {
            return Ok(());
        }
        let previous = self.previous_inventory(desired).await?;
        let mut planned = self.resolve_desired(desired, r).await;
        let named = resolve::team_roles_named_by_discovery(&planned);
        resolve::put_named_roles(&mut planned, &named);
        let desired_keys: BTreeSet<ObjectKey> = planned.iter().map(|p| p.key.clone()).collect();
        let last = self.memory.last_apply(team);
        // Nothing changed since a full sync found nothing to do, as the drift watches
        // saw it: no list, no write.
        if r.errors.is_empty()
            && let Some(l) = &last
            && self.answered_by_watches(l, &previous, &desired_keys, &planned, r)
        {
            self.memory.answered(team);
            return Ok(());
        }
        let epochs = self.watched.epochs(&watched::kinds_of(&planned, &previous));
        let known = Known {
            last: last.as_ref(),
            inventory: &previous,
            unit: desired,
        };
        let (live, others) = self.list_unit(team, &planned, &previous, &known).await?;

        // Nothing changed since the last sync: no writes at all.
        if r.errors.is_empty()
            && last
                .as_ref()
                .is_some_and(|l| l.still_holds(&previous, &desired_keys, &planned, &live))
        {
            self.found_unchanged(team, &planned, &live, &previous, epochs, r);
            return Ok(());
        }

        // Decide, before anything is written: what to prune, whether to hold, what is
        // another team's or no team's (a team takes only what is free), and the Role the
        // prune needs.
        let to_prune = prune::candidates(&previous, &desired_keys);
        let release = match prune::hold_mass_deletion(
            &to_prune,
            &previous,
            &desired.prune,
            &self.options.namespace,
            &self.options.owner,
            r,
        ) {
            prune::Hold::Held => return Ok(()),
            prune::Hold::Clear => None,
            prune::Hold::Released(release) => Some(release),
        };
        let unmanaged = self
            .refuse_foreign_objects(&mut planned, &live, others, desired, r)
            .await?;
        adopt::refuse_unmanaged(&mut planned, &unmanaged, &previous, desired, r);
        let widened = self.widen_team_roles(&planned, &to_prune).await;
        let narrow_after = prune::put_widened_roles(&mut planned, &widened);

        // Write: record and apply, wave by wave (what depends on others after those are
        // healthy), prune (after a clean apply with nothing waiting only), narrow the
        // Role, shrink the inventory, remember.
        let mut recorded = None;
        let mut pass = self
            .apply_in_waves(planned, &mut recorded, &live, &known, r)
            .await?;
        let pruned = r.errors.is_empty() && pass.waiting.is_empty();
        let holds = self
            .prune_or_keep(to_prune, &pass, &previous, &live, desired, r)
            .await;
        if pruned {
            self.narrow_team_roles(narrow_after, &mut pass, team, r)
                .await;
        }
        let stored = recorded.as_ref().unwrap_or(&previous);
        self.store_final_inventory(holds, stored, &pass.unwritten, team, r)
            .await?;
        if let Some(release) = release.filter(|_| pruned) {
            self.spend_release(team, &release, r).await;
        }
        self.memory
            .record(team, pass.objects, r.errors.is_empty(), pass.healthy);
        Ok(())
    }

    /// The render refuses pontoon's default namespace; a daemon configured with another
    /// one refuses it here, before anything is written. True (an error in `r`) when the
    /// team claims it.
    fn claims_inventory_namespace(&self, desired: &UnitDesired, r: &mut UnitResult) -> bool {
        if !desired.namespaces.contains(&self.options.namespace) {
            return false;
        }
        r.error(
            &desired.unit,
            format!(
                "the team claims namespace {}, where pontoon keeps its inventories; nothing was applied",
                self.options.namespace
            ),
        );
        true
    }

    /// The unit's inventory as the last sync left it. One gone though this process wrote
    /// it (deleted by hand) is rebuilt from what pontoon applied last, which still says
    /// what exists, so a prune is not lost; the sync then writes it again. One that does
    /// not parse stops the sync before anything is written: what it held is unknown.
    async fn previous_inventory(&self, desired: &UnitDesired) -> Result<Inventory, SyncError> {
        let team = &desired.unit.team;
        self.ensure_namespace().await?;
        let mut previous =
            Inventory::load(&self.inventory_api(), &self.options.owner, team).await?;
        if !previous.exists
            && let Some(last) = self.applied(team).filter(|l| !l.is_empty())
        {
            tracing::warn!(unit = %desired.unit, "the unit's inventory is gone from the cluster; it is written again from what pontoon applied last");
            previous.entries = last.iter().map(|(k, a)| (k.clone(), a.entry(k))).collect();
        }
        Ok(previous)
    }

    /// Records everything that may exist, `previous ∪ planned`, before creating anything.
    /// Returns the inventory as stored when it had to be written.
    async fn record_union(
        &self,
        previous: &Inventory,
        planned: &[Planned<'_>],
        team: &TeamName,
        r: &mut UnitResult,
    ) -> Result<Option<Inventory>, kube::Error> {
        let mut union = previous.clone();
        for p in planned {
            union
                .entries
                .entry(p.key.clone())
                .or_insert_with(|| p.entry());
        }
        union.revision = r.revision.clone();
        if previous.exists && union.entries.len() == previous.entries.len() {
            return Ok(None);
        }
        union
            .store(&self.inventory_api(), &self.options.owner, team)
            .await?;
        r.writes += 1;
        Ok(Some(union))
    }

    /// Writes the inventory the unit holds after this sync, unless it is what is stored
    /// already (on a first sync, or with nothing pruned, the union is the final inventory).
    ///
    /// Each entry records the uid, the resourceVersion and the digest of the object's
    /// last apply, so that the next sync, even in another process, needs no request for
    /// an object still exactly so. A resourceVersion that moved while nothing of
    /// pontoon's changed (a controller wrote the status) is recorded with the next write,
    /// not with one of its own: a write per resync would cost more than the one local
    /// judgement it saves after a restart.
    async fn store_final_inventory(
        &self,
        mut holds: Inventory,
        stored: &Inventory,
        unwritten: &BTreeSet<ObjectKey>,
        team: &TeamName,
        r: &mut UnitResult,
    ) -> Result<(), kube::Error> {
        if !same_but_found_versions(&holds, stored, unwritten) || stored.revision != holds.revision
        {
            holds.resource_version = stored.resource_version.clone();
            holds
                .store(&self.inventory_api(), &self.options.owner, team)
                .await?;
            r.writes += 1;
        }
        Ok(())
    }
}

/// Whether `holds` records what `stored` does, but for the resourceVersions of objects no
/// request of the sync wrote.
fn same_but_found_versions(
    holds: &Inventory,
    stored: &Inventory,
    unwritten: &BTreeSet<ObjectKey>,
) -> bool {
    holds.entries.len() == stored.entries.len()
        && holds.entries.iter().all(|(k, e)| {
            stored.entries.get(k).is_some_and(|s| {
                s == e
                    || (unwritten.contains(k)
                        && Entry {
                            resource_version: s.resource_version.clone(),
                            ..e.clone()
                        } == *s)
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::Applier;

    fn entry(name: &str, rv: &str) -> Entry {
        Entry {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: "shop".into(),
            name: name.into(),
            applier: Applier::Team,
            uid: Some(format!("uid-{name}")),
            resource_version: Some(rv.into()),
            digest: None,
        }
    }

    fn inventory(entries: &[Entry]) -> Inventory {
        Inventory {
            entries: entries.iter().map(|e| (e.key(), e.clone())).collect(),
            exists: true,
            ..Inventory::default()
        }
    }

    #[test]
    fn a_version_found_moved_alone_is_no_reason_to_write_the_inventory() {
        let stored = inventory(&[entry("a", "1"), entry("b", "2")]);
        let found_moved = inventory(&[entry("a", "7"), entry("b", "2")]);
        let a: BTreeSet<ObjectKey> = [entry("a", "").key()].into();
        assert!(same_but_found_versions(&found_moved, &stored, &a));
        // Written by this sync: its new version is recorded.
        assert!(!same_but_found_versions(
            &found_moved,
            &stored,
            &BTreeSet::new()
        ));
        // Anything else that changed is.
        let mut other_uid = found_moved.clone();
        if let Some(e) = other_uid.entries.get_mut(&entry("a", "").key()) {
            e.uid = Some("another".into());
        }
        assert!(!same_but_found_versions(&other_uid, &stored, &a));
        let fewer = inventory(&[entry("a", "1")]);
        assert!(!same_but_found_versions(&fewer, &stored, &a));
    }
}
