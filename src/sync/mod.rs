//! The sync engine: makes one unit (a team on a cluster) equal to its desired state.
//!
//! Order of one sync, and why:
//! 1. read the unit's inventory and list its live objects (one list per kind and
//!    namespace, filtered by the team's label; whole objects for kinds whose health is
//!    read from status, metadata for the rest) — reads only;
//! 2. if the desired objects and the live resourceVersions are what the last sync left,
//!    stop: no write request at all;
//! 3. refuse a sync that would delete more than the platform's share (held, reported);
//! 4. record `previous ∪ desired` in the inventory *before* applying, so a crash can
//!    never orphan an object;
//! 5. server-side apply in a safe order — CRDs (then wait until Established), Namespaces,
//!    other cluster-scoped objects, namespaced objects — concurrently within a phase,
//!    bounded by the cluster's request limit; team objects as the team's identity;
//! 6. prune what the previous inventory holds and the desired state does not, unless
//!    anything failed (a failed apply never deletes), respecting `pontoon.dev/prune:
//!    disabled` and the platform's rules for Namespaces and CRDs;
//! 7. shrink the inventory to what is desired; read health from what the apply returned.
//!
//! The engine never panics on server answers and never holds a lock across an await.

pub mod health;
pub mod inventory;
pub mod plan;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PropagationPolicy};
use kube::{Api, Client};
use serde::Serialize;
use serde_json::Value;

use crate::cluster::{Cluster, ClusterError, Resolved, gvk_of, retry_transport};
use crate::config::SyncConfig;
use crate::describe;
use crate::desired::{
    ANNOTATION_PRUNE, Applier, DesiredObject, DesiredState, LABEL_TEAM, ObjectKey, PrunePolicy,
    TEAM_ROLE, TeamName, UnitDesired, UnitId, apply_params, selector_managed, selector_other_teams,
    selector_team,
};
use health::Health;
use inventory::{Entry, Inventory};

/// Settings of the sync engine (from the daemon config's `sync` section).
#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub namespace: String,
    pub concurrency: usize,
    pub force_conflicts: bool,
    pub apply_timeout: Duration,
}

impl From<&SyncConfig> for SyncOptions {
    fn from(c: &SyncConfig) -> Self {
        SyncOptions {
            namespace: c.namespace.clone(),
            concurrency: c.concurrency,
            force_conflicts: c.force_conflicts,
            apply_timeout: c.apply_timeout,
        }
    }
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            namespace: crate::config::DEFAULT_NAMESPACE.to_owned(),
            concurrency: crate::config::DEFAULT_CONCURRENCY as usize,
            force_conflicts: true,
            apply_timeout: crate::config::DEFAULT_APPLY_TIMEOUT,
        }
    }
}

/// The state of a unit after a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum UnitState {
    Synced,
    OutOfSync,
    Progressing,
    Failed,
}

impl UnitState {
    pub fn as_str(self) -> &'static str {
        match self {
            UnitState::Synced => "Synced",
            UnitState::OutOfSync => "OutOfSync",
            UnitState::Progressing => "Progressing",
            UnitState::Failed => "Failed",
        }
    }
}

/// A problem with one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectError {
    pub object: String,
    pub message: String,
}

/// What one sync did.
#[derive(Debug, Clone, Serialize)]
pub struct UnitResult {
    pub unit: UnitId,
    pub revision: String,
    pub state: UnitState,
    pub created: Vec<ObjectKey>,
    pub updated: Vec<ObjectKey>,
    pub unchanged: usize,
    pub pruned: Vec<ObjectKey>,
    /// Objects that would have been pruned but were held (mass-deletion rule) or kept
    /// (`prune: disabled`, Namespaces or CRDs the platform does not let pontoon delete).
    pub held: Vec<ObjectKey>,
    pub kept: Vec<ObjectKey>,
    /// Objects changed by someone else and left so, because their drift mode is `report`.
    pub drifted: Vec<ObjectKey>,
    pub errors: Vec<ObjectError>,
    /// Fields taken from other field managers (or refused, when forcing is off).
    pub conflicts: Vec<ObjectError>,
    /// Objects still rolling out, with what they wait for.
    pub not_ready: Vec<(ObjectKey, String)>,
    /// Why the unit is not Synced, in one line.
    pub message: Option<String>,
    /// Requests that could change the cluster (apply, delete, inventory writes).
    pub writes: usize,
    pub duration: Duration,
}

impl UnitResult {
    pub fn new(unit: UnitId, revision: &str) -> Self {
        UnitResult {
            unit,
            revision: revision.to_owned(),
            state: UnitState::Synced,
            created: Vec::new(),
            updated: Vec::new(),
            unchanged: 0,
            pruned: Vec::new(),
            held: Vec::new(),
            kept: Vec::new(),
            drifted: Vec::new(),
            errors: Vec::new(),
            conflicts: Vec::new(),
            not_ready: Vec::new(),
            message: None,
            writes: 0,
            duration: Duration::ZERO,
        }
    }

    fn error(&mut self, object: impl ToString, message: impl Into<String>) {
        self.errors.push(ObjectError {
            object: object.to_string(),
            message: message.into(),
        });
    }

    /// Decides the state from what happened.
    fn finish(&mut self, started: Instant) {
        self.duration = started.elapsed();
        self.state = if !self.errors.is_empty() {
            if self.message.is_none() {
                self.message = Some(format!(
                    "{} object{} failed; first: {}: {}",
                    self.errors.len(),
                    if self.errors.len() == 1 { "" } else { "s" },
                    self.errors[0].object,
                    self.errors[0].message
                ));
            }
            UnitState::Failed
        } else if !self.held.is_empty() {
            UnitState::OutOfSync
        } else if !self.drifted.is_empty() {
            if self.message.is_none() {
                self.message = Some(format!(
                    "{} {} drifted and left as {} (drift mode report); first: {}",
                    self.drifted.len(),
                    if self.drifted.len() == 1 {
                        "object"
                    } else {
                        "objects"
                    },
                    if self.drifted.len() == 1 {
                        "it is"
                    } else {
                        "they are"
                    },
                    self.drifted[0]
                ));
            }
            UnitState::OutOfSync
        } else if let Some((key, why)) = self.not_ready.first() {
            if self.message.is_none() {
                self.message = Some(format!("waiting for {key}: {why}"));
            }
            UnitState::Progressing
        } else {
            UnitState::Synced
        };
    }

    /// A result with the given state and nothing done, for tests of what consumes results.
    pub fn for_tests(unit: UnitId, state: UnitState) -> Self {
        let mut r = UnitResult::new(unit, "rev");
        r.state = state;
        r
    }

    /// Sets the message of a result built with [`UnitResult::for_tests`].
    pub fn message_for_tests(&mut self, message: &str) {
        self.message = Some(message.to_owned());
    }

    /// Number of objects the unit holds after this sync.
    pub fn applied(&self) -> usize {
        self.created.len() + self.updated.len() + self.unchanged
    }

    /// A one-line summary, e.g. `applied 12 (+2 ~1), pruned 1`, then what the prune rules
    /// kept, what the mass-deletion rule held and how many errors, when any.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "applied {} (+{} ~{}), pruned {}",
            self.applied(),
            self.created.len(),
            self.updated.len(),
            self.pruned.len()
        );
        if !self.kept.is_empty() {
            s.push_str(&format!(", kept {}", self.kept.len()));
        }
        if !self.held.is_empty() {
            s.push_str(&format!(", held {}", self.held.len()));
        }
        if !self.errors.is_empty() {
            s.push_str(&format!(", {} errors", self.errors.len()));
        }
        s
    }
}

/// What the engine remembers about a unit's last complete apply, per object: the hash of
/// the desired manifest and the resourceVersion the apply produced.
#[derive(Debug, Clone, Default)]
struct Memo {
    objects: HashMap<ObjectKey, (u64, String)>,
    inventory: BTreeSet<ObjectKey>,
    healthy: bool,
}

/// An object as last applied, for the drift engine.
#[derive(Debug, Clone)]
pub struct AppliedObject {
    pub desired: DesiredObject,
    pub resolved: Resolved,
    pub resource_version: String,
}

/// Syncs units on one cluster.
pub struct Syncer {
    cluster: Arc<Cluster>,
    options: SyncOptions,
    memo: Mutex<HashMap<TeamName, Memo>>,
    applied: Mutex<HashMap<TeamName, Arc<BTreeMap<ObjectKey, AppliedObject>>>>,
    namespace_ready: tokio::sync::OnceCell<()>,
    /// Teams with a sync in flight (how many), so drift can tell pontoon's own write that
    /// has not been recorded yet from someone else's.
    syncing: Mutex<HashMap<TeamName, usize>>,
    /// Woken whenever a team's last sync in flight ends.
    sync_ended: tokio::sync::Notify,
}

/// Counts a sync in flight for its team until dropped.
struct InFlight<'a> {
    syncing: &'a Mutex<HashMap<TeamName, usize>>,
    ended: &'a tokio::sync::Notify,
    team: TeamName,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut syncing = self.syncing.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = syncing.get_mut(&self.team) {
            *n -= 1;
            if *n == 0 {
                syncing.remove(&self.team);
                self.ended.notify_waiters();
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error("cannot reach the cluster: {}", describe(.0))]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// A desired object with what discovery found about it.
struct Planned<'a> {
    key: ObjectKey,
    object: &'a DesiredObject,
    resolved: Option<Resolved>,
    hash: u64,
}

/// Live facts about an object, from the per-kind lists.
#[derive(Debug, Clone)]
struct Live {
    resource_version: String,
    prune_disabled: bool,
    /// For kinds whose health is read from status: what the listed object says.
    health: Option<Health>,
}

fn object_hash(o: &DesiredObject) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    // serde_json's output for the same Value is deterministic.
    serde_json::to_string(&o.object)
        .unwrap_or_default()
        .hash(&mut h);
    o.applier.hash(&mut h);
    h.finish()
}

/// Apply order: CRDs, Namespaces, other cluster-scoped objects, the platform's namespaced
/// objects (the team's RBAC among them), and last the team's own objects, which need
/// that RBAC to exist.
fn phase(key: &ObjectKey, namespaced: bool, applier: Applier) -> u8 {
    match (key.group.as_str(), key.kind.as_str()) {
        ("apiextensions.k8s.io", "CustomResourceDefinition") => 0,
        ("", "Namespace") => 1,
        _ if !namespaced => 2,
        _ if applier == Applier::Platform => 3,
        _ => 4,
    }
}

const LAST_PHASE: u8 = 4;

fn api_version_of(o: &Value) -> &str {
    o.get("apiVersion").and_then(Value::as_str).unwrap_or("")
}

fn prune_disabled(meta: &kube::api::ObjectMeta) -> bool {
    let disabled = |m: &Option<BTreeMap<String, String>>| {
        m.as_ref()
            .and_then(|m| m.get(ANNOTATION_PRUNE))
            .is_some_and(|v| v == "disabled")
    };
    disabled(&meta.annotations) || disabled(&meta.labels)
}

impl Syncer {
    pub fn new(cluster: Arc<Cluster>, options: SyncOptions) -> Self {
        Syncer {
            cluster,
            options,
            memo: Mutex::new(HashMap::new()),
            applied: Mutex::new(HashMap::new()),
            namespace_ready: tokio::sync::OnceCell::new(),
            syncing: Mutex::new(HashMap::new()),
            sync_ended: tokio::sync::Notify::new(),
        }
    }

    /// Marks a sync of `team` as running until the guard drops: the drift watch takes
    /// what it sees meanwhile as possibly this sync's own writes and deletions.
    fn in_flight(&self, team: &TeamName) -> InFlight<'_> {
        *self
            .syncing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(team.clone())
            .or_default() += 1;
        InFlight {
            syncing: &self.syncing,
            ended: &self.sync_ended,
            team: team.clone(),
        }
    }

    /// Returns once no sync of `team` is running on this cluster.
    pub async fn until_idle(&self, team: &TeamName) {
        loop {
            let ended = self.sync_ended.notified();
            tokio::pin!(ended);
            // Registered before the check, so an end between the two is not missed.
            ended.as_mut().enable();
            if !self.is_syncing(team) {
                return;
            }
            ended.await;
        }
    }

    /// Whether a sync of `team` is running on this cluster right now.
    pub fn is_syncing(&self, team: &TeamName) -> bool {
        self.syncing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(team)
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// What the last sync of `team` applied (for drift detection).
    pub fn applied(&self, team: &TeamName) -> Option<Arc<BTreeMap<ObjectKey, AppliedObject>>> {
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(team)
            .cloned()
    }

    /// Forgets what was applied, so the next sync re-checks every object.
    pub fn forget(&self, team: &TeamName) {
        self.memo
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(team);
    }

    fn inventory_api(&self) -> Api<ConfigMap> {
        Api::namespaced(self.cluster.client().clone(), &self.options.namespace)
    }

    async fn ensure_namespace(&self) -> Result<(), kube::Error> {
        self.namespace_ready
            .get_or_try_init(|| {
                inventory::ensure_namespace(self.cluster.client(), &self.options.namespace)
            })
            .await
            .map(|_| ())
    }

    /// Teams with an inventory on this cluster.
    pub async fn teams_on_cluster(&self) -> Result<Vec<TeamName>, kube::Error> {
        self.ensure_namespace().await?;
        inventory::teams_with_inventory(&self.inventory_api()).await
    }

    /// Makes the unit equal to `desired`. Never panics; every failure is in the result.
    pub async fn sync(&self, desired: &UnitDesired, revision: &str) -> UnitResult {
        let started = Instant::now();
        let _in_flight = self.in_flight(&desired.unit.team);
        let mut result = UnitResult::new(desired.unit.clone(), revision);
        if let Err(e) = self.sync_inner(desired, revision, &mut result).await {
            result.message = Some(e.to_string());
            result.error(&desired.unit, e.to_string());
        }
        result.finish(started);
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
        let units = state
            .units
            .values()
            .filter(|u| u.unit.cluster == self.cluster.name);
        let mut results: Vec<UnitResult> =
            futures::future::join_all(units.map(|u| self.sync(u, &state.revision))).await;
        let present: BTreeSet<&TeamName> = results.iter().map(|r| &r.unit.team).collect();
        let on_cluster = match self.teams_on_cluster().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(cluster = %self.cluster.name, error = %describe(&e), "cannot list inventories; removed teams are not pruned this time");
                return results;
            }
        };
        let removed: Vec<TeamName> = on_cluster
            .into_iter()
            .filter(|t| !present.contains(t) && !state.failed_teams.contains_key(t))
            .collect();
        for team in removed {
            results.push(
                self.remove_team(&team, &state.default_prune, &state.revision)
                    .await,
            );
        }
        results
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
        let _in_flight = self.in_flight(team);
        let unit = UnitId {
            team: team.clone(),
            cluster: self.cluster.name.clone(),
        };
        let desired = UnitDesired {
            unit: unit.clone(),
            namespaces: Vec::new(),
            objects: Vec::new(),
            prune: policy.clone(),
        };
        let mut result = UnitResult::new(unit, revision);
        match self.sync_inner(&desired, revision, &mut result).await {
            Ok(()) if result.errors.is_empty() && result.held.is_empty() => {
                match Inventory::delete(&self.inventory_api(), team).await {
                    Ok(()) => result.writes += 1,
                    Err(e) => result.error("inventory", e.to_string()),
                }
                self.memo
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(team);
                self.applied
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(team);
            }
            Ok(()) => {}
            Err(e) => result.error(result.unit.clone(), e.to_string()),
        }
        result.finish(started);
        result
    }

    async fn sync_inner(
        &self,
        desired: &UnitDesired,
        revision: &str,
        r: &mut UnitResult,
    ) -> Result<(), SyncError> {
        let team = &desired.unit.team;
        // The render refuses pontoon's default namespace; a daemon configured with another
        // one refuses it here, before anything is written.
        if desired.namespaces.contains(&self.options.namespace) {
            r.error(
                &desired.unit,
                format!(
                    "the team claims namespace {}, where pontoon keeps its inventories; nothing was applied",
                    self.options.namespace
                ),
            );
            return Ok(());
        }
        self.ensure_namespace().await?;
        let mut previous = Inventory::load(&self.inventory_api(), team).await?;
        // Gone though this process wrote it (deleted by hand): what pontoon applied last
        // still says what exists, so a prune is not lost, and the inventory is written again.
        if !previous.exists
            && let Some(last) = self.applied(team).filter(|l| !l.is_empty())
        {
            tracing::warn!(unit = %desired.unit, "the unit's inventory is gone from the cluster; it is written again from what pontoon applied last");
            previous.entries = last
                .iter()
                .map(|(k, a)| (k.clone(), entry_of_applied(k, a)))
                .collect();
        }

        // Resolve every desired object. Kinds whose CRD is in this very sync resolve later.
        let crd_groups: BTreeSet<String> = desired
            .objects
            .iter()
            .filter(|o| {
                o.object.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition")
            })
            .filter_map(|o| {
                o.object
                    .pointer("/spec/group")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .collect();
        let mut planned = Vec::with_capacity(desired.objects.len());
        for object in &desired.objects {
            let Some(key) = object.key() else {
                r.error(
                    format!("{}", object.source),
                    "object has no apiVersion, kind or metadata.name",
                );
                continue;
            };
            let gvk = gvk_of(api_version_of(&object.object), &key.kind);
            let resolved = match self.cluster.resolve(&gvk).await {
                Ok(res) => Some(res),
                Err(_) if crd_groups.contains(&key.group) => None,
                Err(e) => {
                    r.error(&key, format!("{e} (from {})", object.source));
                    continue;
                }
            };
            planned.push(Planned {
                hash: object_hash(object),
                key,
                object,
                resolved,
            });
        }
        let desired_keys: BTreeSet<ObjectKey> = planned.iter().map(|p| p.key.clone()).collect();

        // Live state of everything this unit holds or will hold: one list per kind and
        // namespace it uses (a namespace's objects are what the server scans for it).
        let mut kinds: BTreeMap<(String, String), (Resolved, BTreeSet<String>)> = BTreeMap::new();
        for p in &planned {
            if let Some(res) = &p.resolved {
                kinds
                    .entry((
                        api_version_of(&p.object.object).to_owned(),
                        p.key.kind.clone(),
                    ))
                    .or_insert_with(|| (res.clone(), BTreeSet::new()))
                    .1
                    .insert(p.key.namespace.clone());
            }
        }
        for e in previous.entries.values() {
            if let Ok(res) = self.cluster.resolve(&gvk_of(&e.api_version, &e.kind)).await {
                kinds
                    .entry((e.api_version.clone(), e.kind.clone()))
                    .or_insert_with(|| (res, BTreeSet::new()))
                    .1
                    .insert(e.namespace.clone());
            }
        }
        let (live, mut foreign) = self.list_live(team, kinds.into_values()).await?;

        // Nothing changed since the last sync: no writes at all.
        let memo = self
            .memo
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(team)
            .cloned();
        let unchanged_since_memo = |p: &Planned| {
            memo.as_ref()
                .and_then(|m| m.objects.get(&p.key))
                .zip(live.get(&p.key))
                .is_some_and(|((hash, rv), l)| *hash == p.hash && *rv == l.resource_version)
        };
        if r.errors.is_empty()
            && memo.as_ref().is_some_and(|m| {
                m.healthy
                    && previous.exists
                    && m.inventory == desired_keys
                    && previous.keys() == desired_keys
            })
            && planned.iter().all(unchanged_since_memo)
        {
            r.unchanged = planned.len();
            return Ok(());
        }

        // Pruning candidates and the mass-deletion hold, decided before anything is written.
        let to_prune: Vec<Entry> = previous
            .entries
            .iter()
            .filter(|(k, _)| !desired_keys.contains(*k))
            .map(|(_, e)| e.clone())
            .collect();
        if !to_prune.is_empty() && desired.prune.max_share < 1.0 {
            let share = to_prune.len() as f64 / previous.entries.len().max(1) as f64;
            if share > desired.prune.max_share {
                r.held = to_prune.iter().map(Entry::key).collect();
                r.message = Some(format!(
                    "held: this revision would delete {} of {} objects ({:.0}% > the platform's limit of {:.0}%); nothing was applied",
                    to_prune.len(),
                    previous.entries.len(),
                    share * 100.0,
                    desired.prune.max_share * 100.0
                ));
                return Ok(());
            }
        }

        // Never take over another team's object.
        let new: Vec<&Planned> = planned
            .iter()
            .filter(|p| !live.contains_key(&p.key))
            .collect();
        foreign.extend(self.foreign_owners(&new, team).await?);
        // A team pontoon no longer manages on this cluster (its removal is done, so its
        // inventory is gone) owns nothing: what the prune rules kept of it, as they keep
        // Namespaces, goes to the team the repo now gives it to (a renamed team, a
        // namespace handed over).
        let claimed: BTreeSet<&String> = new.iter().filter_map(|p| foreign.get(&p.key)).collect();
        let mut gone = BTreeSet::new();
        for owner in claimed {
            let owner = TeamName(owner.clone());
            if !Inventory::load(&self.inventory_api(), &owner).await?.exists {
                gone.insert(owner.0);
            }
        }
        let mut owned_elsewhere = BTreeSet::new();
        for p in &new {
            if let Some(owner) = foreign.get(&p.key).filter(|o| gone.contains(*o)) {
                tracing::info!(unit = %desired.unit, object = %p.key, from = %owner,
                    "adopting an object left by a team pontoon no longer manages here");
            } else if let Some(owner) = foreign.get(&p.key) {
                r.error(
                    &p.key,
                    format!(
                        "belongs to team {owner}; pontoon does not take over another team's object (from {})",
                        p.object.source
                    ),
                );
                owned_elsewhere.insert(p.key.clone());
            }
        }
        planned.retain(|p| !owned_elsewhere.contains(&p.key));

        // The team's identity prunes what the team no longer has; its Role, rendered from
        // the kinds the team uses now, may no longer allow that. Until the prune is done,
        // apply the Role with `delete` on those kinds too, and narrow it afterwards.
        let widened = self.widen_team_roles(&planned, &to_prune).await;
        let mut narrow_after = Vec::new();
        for p in planned.iter_mut() {
            if let Some(w) = widened.iter().find(|w| w.key().as_ref() == Some(&p.key)) {
                narrow_after.push((p.key.clone(), p.object, p.resolved.clone()));
                p.object = w;
                p.hash = object_hash(w);
            }
        }

        // Record everything that may exist before creating anything.
        let mut union = previous.clone();
        for p in &planned {
            union
                .entries
                .entry(p.key.clone())
                .or_insert_with(|| entry_of(p));
        }
        union.revision = revision.to_owned();
        let union_stored = !previous.exists || union.entries.len() != previous.entries.len();
        if union_stored {
            union.store(&self.inventory_api(), team).await?;
            r.writes += 1;
        }

        // Apply, phase by phase.
        let no_memo = memo.is_none();
        let mut applied: BTreeMap<ObjectKey, AppliedObject> = BTreeMap::new();
        let mut healthy = true;
        let mut phases: BTreeMap<u8, Vec<Planned>> = BTreeMap::new();
        let mut deferred = Vec::new();
        for p in planned {
            match &p.resolved {
                Some(res) => phases
                    .entry(phase(&p.key, res.namespaced, p.object.applier))
                    .or_default()
                    .push(p),
                None => deferred.push(p),
            }
        }
        let mut rbac_changed = false;
        // New objects whose apply got no answer: the server may have created them.
        let mut may_exist = Vec::new();
        for ph in 0u8..=LAST_PHASE {
            if ph == 2 {
                // CRDs are established by now: resolve the custom resources that came with them.
                for mut p in std::mem::take(&mut deferred) {
                    let gvk = gvk_of(api_version_of(&p.object.object), &p.key.kind);
                    match self.cluster.resolve(&gvk).await {
                        Ok(res) => {
                            let to = phase(&p.key, res.namespaced, p.object.applier);
                            p.resolved = Some(res);
                            phases.entry(to).or_default().push(p);
                        }
                        Err(e) => r.error(&p.key, format!("{e} (from {})", p.object.source)),
                    }
                }
            }
            let Some(mut batch) = phases.remove(&ph) else {
                continue;
            };
            // RBAC granted a moment ago reaches the authorizer a little later: the first
            // team object goes alone (retrying while it is refused), so the rest are not
            // all refused and retried together.
            let mut outcomes: Vec<(Planned, Result<Applied, ApplyError>)> =
                Vec::with_capacity(batch.len());
            if rbac_changed && ph == LAST_PHASE && batch.len() > 1 {
                let p = batch.remove(0);
                let out = self
                    .apply_one(
                        &p,
                        team,
                        live.get(&p.key),
                        memo.as_ref(),
                        no_memo,
                        rbac_changed,
                    )
                    .await;
                outcomes.push((p, out));
            }
            // Futures built in a loop rather than by a closure: the cluster's request
            // limit (a semaphore inside every call) bounds how many run at once.
            let mut pending = Vec::with_capacity(batch.len());
            for p in batch {
                let (live, memo) = (live.get(&p.key), memo.as_ref());
                pending.push(async move {
                    let out = self
                        .apply_one(&p, team, live, memo, no_memo, rbac_changed)
                        .await;
                    (p, out)
                });
            }
            outcomes.extend(futures::future::join_all(pending).await);
            let mut crds = Vec::new();
            for (p, out) in outcomes {
                match out {
                    Ok(a) => {
                        r.writes += a.writes;
                        if let Some(c) = a.conflict {
                            r.conflicts.push(ObjectError {
                                object: p.key.to_string(),
                                message: c,
                            });
                        }
                        if p.key.group == "rbac.authorization.k8s.io"
                            && !matches!(a.change, Change::Unchanged)
                        {
                            rbac_changed = true;
                        }
                        match a.change {
                            Change::Created => r.created.push(p.key.clone()),
                            Change::Updated => r.updated.push(p.key.clone()),
                            Change::Unchanged => r.unchanged += 1,
                            Change::LeftDrifted => {
                                r.unchanged += 1;
                                r.drifted.push(p.key.clone());
                            }
                        }
                        match a.health {
                            Health::Healthy => {}
                            Health::Progressing(why) => {
                                healthy = false;
                                if ph == 0 {
                                    crds.push(p.key.clone());
                                } else {
                                    r.not_ready.push((p.key.clone(), why));
                                }
                            }
                            Health::Failed(why) => {
                                healthy = false;
                                r.error(&p.key, why);
                            }
                        }
                        let resolved = p
                            .resolved
                            .clone()
                            .unwrap_or_else(|| unreachable_resolved(&p.key));
                        applied.insert(
                            p.key.clone(),
                            AppliedObject {
                                desired: p.object.clone(),
                                resolved,
                                resource_version: a.resource_version,
                            },
                        );
                    }
                    Err(e) => {
                        if e.unanswered && !previous.entries.contains_key(&p.key) {
                            may_exist.push(entry_of(&p));
                        }
                        r.error(&p.key, format!("{} (from {})", e.message, p.object.source))
                    }
                }
            }
            for crd in crds {
                if let Err(why) = self.wait_established(&crd.name).await {
                    r.error(&crd, why);
                }
            }
        }
        sort_keys(&mut r.created);
        sort_keys(&mut r.updated);

        // Prune, only after a clean apply.
        let mut final_inventory = Inventory {
            entries: BTreeMap::new(),
            revision: revision.to_owned(),
            exists: true,
        };
        for (k, a) in &applied {
            final_inventory
                .entries
                .insert(k.clone(), entry_of_applied(k, a));
        }
        if r.errors.is_empty() {
            let mut ordered = to_prune;
            ordered.sort_by_key(|e| std::cmp::Reverse(prune_rank(e)));
            for e in ordered {
                let key = e.key();
                let is_ns = key.group.is_empty() && key.kind == "Namespace";
                let is_crd =
                    key.group == "apiextensions.k8s.io" && key.kind == "CustomResourceDefinition";
                if live.get(&key).is_some_and(|l| l.prune_disabled)
                    || (is_ns && !desired.prune.namespaces)
                    || (is_crd && !desired.prune.crds)
                {
                    r.kept.push(key);
                    continue;
                }
                match self.delete(&e, team).await {
                    Ok(()) => {
                        r.writes += 1;
                        r.pruned.push(key);
                    }
                    Err(message) => {
                        r.error(&key, format!("prune failed: {message}"));
                        final_inventory.entries.insert(key, e);
                    }
                }
            }
        } else {
            // Keep every previous entry, and every new object an unanswered apply may have
            // created: a later clean sync prunes what is no longer desired.
            for e in may_exist {
                final_inventory.entries.insert(e.key(), e);
            }
            for (k, e) in &previous.entries {
                final_inventory
                    .entries
                    .entry(k.clone())
                    .or_insert_with(|| e.clone());
            }
        }
        for (key, exact, resolved) in narrow_after {
            if !applied.contains_key(&key) {
                continue;
            }
            let p = Planned {
                hash: object_hash(exact),
                key,
                object: exact,
                resolved,
            };
            match self
                .apply_one(&p, team, None, None, false, rbac_changed)
                .await
            {
                Ok(a) => {
                    r.writes += a.writes;
                    if let Some(o) = applied.get_mut(&p.key) {
                        o.desired = exact.clone();
                        o.resource_version = a.resource_version;
                    }
                }
                Err(e) => r.error(&p.key, format!("{} (from {})", e.message, exact.source)),
            }
        }
        // Written again only if it differs from what is stored now (on a first sync, or
        // with nothing pruned, the union already is the final inventory).
        let stored = if union_stored { &union } else { &previous };
        if final_inventory.entries != stored.entries || stored.revision != revision {
            final_inventory.store(&self.inventory_api(), team).await?;
            r.writes += 1;
        }

        if r.errors.is_empty() {
            self.memo.lock().unwrap_or_else(|e| e.into_inner()).insert(
                team.clone(),
                Memo {
                    objects: applied
                        .iter()
                        .map(|(k, a)| {
                            (
                                k.clone(),
                                (object_hash(&a.desired), a.resource_version.clone()),
                            )
                        })
                        .collect(),
                    inventory: applied.keys().cloned().collect(),
                    healthy,
                },
            );
        } else {
            self.forget(team);
        }
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(team.clone(), Arc::new(applied));
        Ok(())
    }

    /// The unit's team-identity Roles with `delete` added for the kinds of the team's
    /// objects about to be pruned that they do not already cover; empty when none need it.
    async fn widen_team_roles(
        &self,
        planned: &[Planned<'_>],
        to_prune: &[Entry],
    ) -> Vec<DesiredObject> {
        let mut needed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for e in to_prune.iter().filter(|e| e.applier == Applier::Team) {
            if let Ok(res) = self.cluster.resolve(&gvk_of(&e.api_version, &e.kind)).await {
                needed
                    .entry(res.resource.group.clone())
                    .or_default()
                    .insert(res.resource.plural.clone());
            }
        }
        if needed.is_empty() {
            return Vec::new();
        }
        planned
            .iter()
            .filter(|p| {
                p.object.applier == Applier::Platform
                    && p.key.group == "rbac.authorization.k8s.io"
                    && p.key.kind == "Role"
                    && p.key.name == TEAM_ROLE
            })
            .filter_map(|p| {
                let rules = p.object.object.get("rules").and_then(Value::as_array);
                let covers = |group: &str, plural: &str| {
                    rules.into_iter().flatten().any(|rule| {
                        let has = |field: &str, want: &str| {
                            rule.get(field)
                                .and_then(Value::as_array)
                                .is_some_and(|v| v.iter().any(|x| x == want || x == "*"))
                        };
                        has("apiGroups", group)
                            && has("resources", plural)
                            && has("verbs", "delete")
                    })
                };
                let missing: Vec<Value> = needed
                    .iter()
                    .filter_map(|(group, plurals)| {
                        let lacking: Vec<&String> =
                            plurals.iter().filter(|pl| !covers(group, pl)).collect();
                        (!lacking.is_empty()).then(|| {
                            serde_json::json!({"apiGroups": [group], "resources": lacking, "verbs": ["delete"]})
                        })
                    })
                    .collect();
                if missing.is_empty() {
                    return None;
                }
                let mut object = (*p.object.object).clone();
                match object.get_mut("rules").and_then(Value::as_array_mut) {
                    Some(rules) => rules.extend(missing),
                    None => object["rules"] = Value::Array(missing),
                }
                Some(DesiredObject {
                    object: Arc::new(object),
                    ..p.object.clone()
                })
            })
            .collect()
    }

    /// Which team each of pontoon's Namespaces on this cluster belongs to, by its team
    /// label: where a render with no earlier one to go by learns who held a namespace.
    pub async fn namespace_owners(&self) -> Result<crate::desired::NamespaceOwners, kube::Error> {
        let api: Api<k8s_openapi::api::core::v1::Namespace> =
            Api::all(self.cluster.client().clone());
        let selector = selector_managed();
        let items = self
            .list_pages(&selector, |p| {
                let api = api.clone();
                async move { api.list_metadata(&p).await }
            })
            .await?;
        Ok(items
            .into_iter()
            .filter_map(|n| {
                let team = n.metadata.labels?.remove(LABEL_TEAM)?;
                Some((n.metadata.name?, TeamName(team)))
            })
            .collect())
    }

    /// Lists the unit's live objects of the given kinds in the namespaces given with each:
    /// metadata only, except for kinds whose health is read from their status.
    ///
    /// In a namespace the list takes every pontoon object of the kind, whatever its team:
    /// the same request then also names the other teams' objects there, which the unit must
    /// not take over, so a first sync does not list each namespace twice. A cluster-scoped
    /// kind is listed for the team alone (every team's Namespaces would be a long list).
    async fn list_live(
        &self,
        team: &TeamName,
        kinds: impl Iterator<Item = (Resolved, BTreeSet<String>)>,
    ) -> Result<(HashMap<ObjectKey, Live>, HashMap<ObjectKey, String>), kube::Error> {
        let own = selector_team(team);
        let any = selector_managed();
        let mut pending = Vec::new();
        for (res, namespaces) in kinds {
            if res.namespaced {
                for namespace in namespaces {
                    pending.push(self.list_live_in(res.clone(), namespace, &any, true));
                }
            } else {
                pending.push(self.list_live_in(res, String::new(), &own, true));
            }
        }
        let (mut live, mut others) = (HashMap::new(), HashMap::new());
        for found in futures::future::join_all(pending).await {
            for (key, owner, l) in found? {
                match owner {
                    Some(owner) if owner == team.0 => {
                        live.insert(key, l);
                    }
                    Some(owner) => {
                        others.insert(key, owner);
                    }
                    None => {}
                }
            }
        }
        Ok((live, others))
    }

    /// One kind's pontoon objects in one namespace (`""`: cluster-wide), each with the team
    /// its label names; with `health`, whole objects for the kinds with a health rule.
    async fn list_live_in(
        &self,
        res: Resolved,
        namespace: String,
        selector: &str,
        health: bool,
    ) -> Result<Vec<(ObjectKey, Option<String>, Live)>, kube::Error> {
        let api = &Cluster::api(self.cluster.client().clone(), &res, &namespace);
        let entry = |m: &kube::api::ObjectMeta, health| {
            let key = ObjectKey {
                group: res.resource.group.clone(),
                kind: res.resource.kind.clone(),
                namespace: m.namespace.clone().unwrap_or_default(),
                name: m.name.clone().unwrap_or_default(),
            };
            let owner = m.labels.as_ref().and_then(|l| l.get(LABEL_TEAM)).cloned();
            let live = Live {
                resource_version: m.resource_version.clone().unwrap_or_default(),
                prune_disabled: prune_disabled(m),
                health,
            };
            (key, owner, live)
        };
        if !(health && health::has_rule(&res.resource.api_version, &res.resource.kind)) {
            let items = self
                .list_pages(selector, |p| async move { api.list_metadata(&p).await })
                .await?;
            return Ok(items.iter().map(|o| entry(&o.metadata, None)).collect());
        }
        // List items come without apiVersion and kind, which health reads.
        let items = self
            .list_pages(selector, |p| async move { api.list(&p).await })
            .await?;
        let mut out = Vec::with_capacity(items.len());
        for o in items {
            let mut object = to_json(&o)?;
            if let Some(fields) = object.as_object_mut() {
                fields.insert("apiVersion".into(), res.resource.api_version.clone().into());
                fields.insert("kind".into(), res.resource.kind.clone().into());
            }
            out.push(entry(&o.metadata, Some(health::of(&object))));
        }
        Ok(out)
    }

    /// Owners (other than `team`) of the cluster-scoped objects about to be created, from
    /// one list of other teams' pontoon objects per kind instead of one read per object.
    /// (The namespaced ones came with the unit's own lists.)
    async fn foreign_owners(
        &self,
        new: &[&Planned<'_>],
        team: &TeamName,
    ) -> Result<HashMap<ObjectKey, String>, kube::Error> {
        let mut kinds: BTreeMap<(String, String), (Resolved, BTreeSet<ObjectKey>)> =
            BTreeMap::new();
        for p in new {
            let Some(res) = p.resolved.as_ref().filter(|r| !r.namespaced) else {
                continue;
            };
            kinds
                .entry((res.resource.api_version.clone(), res.resource.kind.clone()))
                .or_insert_with(|| (res.clone(), BTreeSet::new()))
                .1
                .insert(p.key.clone());
        }
        let selector = selector_other_teams(team);
        let lists = futures::future::join_all(
            kinds
                .into_values()
                .map(|(res, keys)| self.list_foreign(res, keys, &selector)),
        )
        .await;
        let mut out = HashMap::new();
        for l in lists {
            out.extend(l?);
        }
        Ok(out)
    }

    /// Every object matching `selector`, page by page, each page under the cluster's read
    /// limit; `page` sends one list request.
    async fn list_pages<T, F, Fut>(
        &self,
        selector: &str,
        mut page: F,
    ) -> Result<Vec<T>, kube::Error>
    where
        T: Clone,
        F: FnMut(ListParams) -> Fut,
        Fut: std::future::Future<Output = Result<kube::core::ObjectList<T>, kube::Error>>,
    {
        let mut out = Vec::new();
        let mut params = ListParams::default().labels(selector).limit(500);
        loop {
            let list = {
                let _permit = self.cluster.read_permit().await;
                retry_transport(|| page(params.clone())).await?
            };
            out.extend(list.items);
            match list.metadata.continue_ {
                Some(c) if !c.is_empty() => params = params.continue_token(&c),
                _ => return Ok(out),
            }
        }
    }

    async fn list_foreign(
        &self,
        res: Resolved,
        keys: BTreeSet<ObjectKey>,
        selector: &str,
    ) -> Result<Vec<(ObjectKey, String)>, kube::Error> {
        Ok(self
            .list_live_in(res, String::new(), selector, false)
            .await?
            .into_iter()
            .filter(|(key, _, _)| keys.contains(key))
            .filter_map(|(key, owner, _)| Some((key, owner?)))
            .collect())
    }

    async fn apply_one(
        &self,
        p: &Planned<'_>,
        team: &TeamName,
        live: Option<&Live>,
        memo: Option<&Memo>,
        no_memo: bool,
        rbac_changed: bool,
    ) -> Result<Applied, ApplyError> {
        let Some(res) = &p.resolved else {
            return Err(ApplyError::refused("kind could not be resolved"));
        };
        let client = self
            .cluster
            .client_for(p.object.applier, team)
            .map_err(|e| ApplyError::refused(e.to_string()))?;
        let api = Cluster::api(client, res, &p.key.namespace);
        if res.namespaced && p.key.namespace.is_empty() {
            return Err(ApplyError::refused(format!(
                "{} is namespaced but the object has no metadata.namespace",
                p.key.kind
            )));
        }
        if !res.namespaced && !p.key.namespace.is_empty() {
            return Err(ApplyError::refused(format!(
                "{} is cluster-scoped but the object has metadata.namespace",
                p.key.kind
            )));
        }
        // The same manifest and the same live version as our last apply: nothing to do.
        if let (Some(m), Some(l)) = (memo, live)
            && m.objects
                .get(&p.key)
                .is_some_and(|(h, rv)| *h == p.hash && *rv == l.resource_version)
        {
            // Health read from status came with the list; other kinds are healthy.
            return Ok(Applied {
                change: Change::Unchanged,
                resource_version: l.resource_version.clone(),
                health: l.health.clone().unwrap_or(Health::Healthy),
                conflict: None,
                writes: 0,
            });
        }
        // After a restart nothing is remembered, and a live object whose version moved
        // since our apply (a controller wrote its status, an HPA its replicas) may still
        // hold everything we applied: ask the server whether an apply would change
        // anything before writing. A changed manifest is applied straight away.
        let same_manifest = memo
            .and_then(|m| m.objects.get(&p.key))
            .is_some_and(|(h, _)| *h == p.hash);
        if (no_memo || same_manifest)
            && let Some(l) = live
        {
            let dry = self
                .patch(
                    &api,
                    &p.key.name,
                    &p.object.object,
                    apply_params().force().dry_run(),
                    Answer::Object,
                )
                .await?;
            let current = self
                .get(&api, &p.key.name)
                .await
                .map_err(ApplyError::refused)?;
            if plan::comparable(&dry) == plan::comparable(&current) {
                return Ok(Applied {
                    change: Change::Unchanged,
                    resource_version: l.resource_version.clone(),
                    health: health::of(&current),
                    conflict: None,
                    writes: 0,
                });
            }
            // Drift in `report` mode: the desired state did not change since our last
            // apply, but what we applied did. Leave it; the unit reports OutOfSync.
            if same_manifest && p.object.drift == crate::desired::DriftMode::Report {
                return Ok(Applied {
                    change: Change::LeftDrifted,
                    resource_version: memo
                        .and_then(|m| m.objects.get(&p.key))
                        .map(|(_, rv)| rv.clone())
                        .unwrap_or_default(),
                    health: health::of(&current),
                    conflict: None,
                    writes: 0,
                });
            }
        }
        let mut conflict = None;
        let mut writes = 1;
        // Kinds healthy once applied need only the new resourceVersion back: the server
        // then encodes the metadata alone, not the whole object.
        let answer = if health::has_rule(api_version_of(&p.object.object), &p.key.kind) {
            Answer::Object
        } else {
            Answer::Metadata
        };
        let apply = || self.patch(&api, &p.key.name, &p.object.object, apply_params(), answer);
        let mut first = apply().await;
        // RBAC granted a moment ago in this sync reaches the authorizer's cache a little
        // later: a team's request may be refused for that moment, so retry briefly.
        if rbac_changed && p.object.applier == Applier::Team {
            let mut delay = Duration::from_millis(50);
            while matches!(&first, Err(e) if e.message.ends_with("(Forbidden)"))
                && delay < Duration::from_secs(3)
            {
                tokio::time::sleep(delay).await;
                delay *= 2;
                writes += 1;
                first = apply().await;
            }
        }
        let out = match first {
            Ok(o) => o,
            Err(ApplyError {
                message: detail,
                conflict: true,
                ..
            }) => {
                if !self.options.force_conflicts {
                    return Err(ApplyError::refused(format!(
                        "conflict with another field manager: {detail}"
                    )));
                }
                conflict = Some(format!("took ownership: {detail}"));
                writes += 1;
                self.patch(
                    &api,
                    &p.key.name,
                    &p.object.object,
                    apply_params().force(),
                    answer,
                )
                .await?
            }
            Err(e) => return Err(e),
        };
        let rv = out
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let change = match live {
            None => Change::Created,
            Some(l) if l.resource_version == rv => Change::Unchanged,
            Some(_) => Change::Updated,
        };
        Ok(Applied {
            change,
            resource_version: rv,
            health: health::of(&out),
            conflict,
            writes,
        })
    }

    async fn patch(
        &self,
        api: &Api<DynamicObject>,
        name: &str,
        object: &Value,
        params: PatchParams,
        answer: Answer,
    ) -> Result<Value, ApplyError> {
        let _permit = self.cluster.write_permit().await;
        let patch = Patch::Apply(object);
        let request = async {
            match answer {
                Answer::Object => retry_transport(|| api.patch(name, &params, &patch))
                    .await
                    .and_then(to_json),
                // Only the new resourceVersion is read: turning the rest of the metadata
                // (managed fields included) into a JSON value would be wasted work.
                Answer::Metadata => retry_transport(|| api.patch_metadata(name, &params, &patch))
                    .await
                    .map(|m| {
                        serde_json::json!({"metadata": {"resourceVersion": m.metadata.resource_version}})
                    }),
            }
        };
        match tokio::time::timeout(self.options.apply_timeout, request).await {
            Err(_) => Err(ApplyError::unanswered(format!(
                "apply timed out after {:?}",
                self.options.apply_timeout
            ))),
            Ok(Err(kube::Error::Api(s))) if s.code == 409 => Err(ApplyError {
                message: s.message,
                conflict: true,
                unanswered: false,
            }),
            Ok(Err(kube::Error::Api(s))) => {
                Err(ApplyError::refused(format!("{} ({})", s.message, s.reason)))
            }
            Ok(Err(e)) => Err(ApplyError::unanswered(describe(&e))),
            Ok(Ok(o)) => Ok(o),
        }
    }

    async fn get(&self, api: &Api<DynamicObject>, name: &str) -> Result<Value, String> {
        let _permit = self.cluster.read_permit().await;
        match retry_transport(|| api.get(name)).await {
            Ok(o) => serde_json::to_value(o).map_err(|e| e.to_string()),
            Err(e) => Err(describe(&e)),
        }
    }

    async fn delete(&self, e: &Entry, team: &TeamName) -> Result<(), String> {
        let res = self
            .cluster
            .resolve(&gvk_of(&e.api_version, &e.kind))
            .await
            .map_err(|err| err.to_string())?;
        let client = self
            .cluster
            .client_for(e.applier, team)
            .map_err(|err| err.to_string())?;
        let api = Cluster::api(client, &res, &e.namespace);
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        let _permit = self.cluster.write_permit().await;
        match retry_transport(|| api.delete(&e.name, &params)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(kube::Error::Api(s)) => Err(format!("{} ({})", s.message, s.reason)),
            Err(err) => Err(describe(&err)),
        }
    }

    async fn wait_established(&self, name: &str) -> Result<(), String> {
        let api: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
            Api::all(self.cluster.client().clone());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let crd = api.get(name).await.map_err(|e| e.to_string())?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("CRD not Established after 60s".to_owned());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Re-reads the health of the objects a Progressing result waits for.
    pub async fn check_health(&self, result: &UnitResult) -> Vec<(ObjectKey, Health)> {
        let applied = self.applied(&result.unit.team);
        let mut out = Vec::new();
        for (key, _) in &result.not_ready {
            let Some(a) = applied.as_ref().and_then(|m| m.get(key)) else {
                continue;
            };
            let api = Cluster::api(self.cluster.client().clone(), &a.resolved, &key.namespace);
            let h = match self.get(&api, &key.name).await {
                Ok(v) => health::of(&v),
                Err(e) => Health::Progressing(format!("cannot read: {e}")),
            };
            out.push((key.clone(), h));
        }
        out
    }

    /// Waits until a Progressing unit is healthy, or fails it after `timeout` (counted
    /// from `since`, the first time this revision was seen Progressing).
    pub async fn wait_healthy(
        &self,
        mut result: UnitResult,
        since: Instant,
        timeout: Duration,
        every: Duration,
    ) -> UnitResult {
        while result.state == UnitState::Progressing {
            let checks = self.check_health(&result).await;
            result.not_ready.clear();
            for (key, h) in checks {
                match h {
                    Health::Healthy => {}
                    Health::Progressing(why) => result.not_ready.push((key, why)),
                    Health::Failed(why) => result.error(&key, why),
                }
            }
            result.message = None;
            let d = result.duration;
            result.finish(Instant::now() - d);
            if result.state == UnitState::Progressing && since.elapsed() >= timeout {
                let (key, why) = result.not_ready[0].clone();
                result.message = Some(format!(
                    "not healthy after {}: {key}: {why}",
                    humantime::format_duration(timeout)
                ));
                result.state = UnitState::Failed;
                break;
            }
            if result.state == UnitState::Progressing {
                tokio::time::sleep(every).await;
            }
        }
        if result.state == UnitState::Synced
            && let Some(m) = self
                .memo
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(&result.unit.team)
        {
            m.healthy = true;
        }
        result
    }

    /// pontoon's own client, for callers that need raw access (drift, plan).
    pub fn client(&self) -> &Client {
        self.cluster.client()
    }
}

/// Why an apply failed.
struct ApplyError {
    message: String,
    /// Refused because another field manager owns a field (409).
    conflict: bool,
    /// No answer came (timeout, connection lost): the server may have applied it anyway.
    unanswered: bool,
}

impl ApplyError {
    fn refused(message: impl Into<String>) -> Self {
        ApplyError {
            message: message.into(),
            conflict: false,
            unanswered: false,
        }
    }

    fn unanswered(message: String) -> Self {
        ApplyError {
            message,
            conflict: false,
            unanswered: true,
        }
    }
}

enum Change {
    Created,
    Updated,
    Unchanged,
    /// Changed by someone else; drift mode `report` says leave it.
    LeftDrifted,
}

fn to_json<T: serde::Serialize>(o: T) -> Result<Value, kube::Error> {
    serde_json::to_value(o).map_err(kube::Error::SerdeError)
}

/// What an apply asks the server to send back.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// The whole object (its status tells the health).
    Object,
    /// Its metadata only (`as=PartialObjectMetadata`): the resourceVersion is all we need.
    Metadata,
}

struct Applied {
    change: Change,
    resource_version: String,
    /// Read from the object the server returned; the object itself is not kept, so a
    /// phase of ten thousand applies does not hold ten thousand responses.
    health: Health,
    conflict: Option<String>,
    writes: usize,
}

fn entry_of(p: &Planned) -> Entry {
    Entry {
        api_version: api_version_of(&p.object.object).to_owned(),
        kind: p.key.kind.clone(),
        namespace: p.key.namespace.clone(),
        name: p.key.name.clone(),
        applier: p.object.applier,
    }
}

fn entry_of_applied(k: &ObjectKey, a: &AppliedObject) -> Entry {
    Entry {
        api_version: api_version_of(&a.desired.object).to_owned(),
        kind: k.kind.clone(),
        namespace: k.namespace.clone(),
        name: k.name.clone(),
        applier: a.desired.applier,
    }
}

/// The team's own objects go first (the team's RBAC, a platform object, must outlive
/// them: they are deleted as the team), then the platform's namespaced objects,
/// cluster-scoped ones, Namespaces, and CRDs last.
fn prune_rank(e: &Entry) -> u8 {
    match (e.api_version.as_str(), e.kind.as_str()) {
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => 0,
        ("v1", "Namespace") => 1,
        _ if e.namespace.is_empty() => 2,
        _ if e.applier == Applier::Platform => 3,
        _ => 4,
    }
}

fn sort_keys(v: &mut [ObjectKey]) {
    v.sort();
}

fn unreachable_resolved(key: &ObjectKey) -> Resolved {
    // apply_one refuses unresolved objects, so an applied object always has one; this
    // keeps the type total without a panic.
    Resolved {
        resource: kube::api::ApiResource {
            group: key.group.clone(),
            version: String::new(),
            api_version: String::new(),
            kind: key.kind.clone(),
            plural: String::new(),
        },
        namespaced: !key.namespace.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(api_version: &str, kind: &str, namespace: &str, applier: Applier) -> Entry {
        Entry {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: namespace.into(),
            name: "x".into(),
            applier,
        }
    }

    /// The team's objects are deleted as the team, so the Role that allows it goes after
    /// them whatever their API group sorts like.
    #[test]
    fn prune_order_deletes_the_teams_objects_before_its_rbac_and_namespaces_last() {
        let mut entries = [
            entry(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                "",
                Applier::Platform,
            ),
            entry("v1", "Namespace", "", Applier::Platform),
            entry(
                "rbac.authorization.k8s.io/v1",
                "Role",
                "shop",
                Applier::Platform,
            ),
            entry("zz.example.com/v1", "Widget", "shop", Applier::Team),
            entry("v1", "ConfigMap", "shop", Applier::Team),
        ];
        entries.sort_by_key(|e| std::cmp::Reverse(prune_rank(e)));
        let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "Widget",
                "ConfigMap",
                "Role",
                "Namespace",
                "CustomResourceDefinition"
            ]
        );
    }
}
