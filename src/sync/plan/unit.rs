//! Planning one unit: the sync's own reads and decisions, then one answer per object.
//!
//! The steps are the sync's (`Syncer::sync_inner`), taken from the same functions so
//! that a plan cannot disagree with the sync it foretells: read the
//! inventory, resolve kinds, list what is live (`live`), ask the mass-deletion rule
//! (`prune::hold_mass_deletion`, a release for the planned revision counting), leave out
//! what another team owns and what exists without pontoon's labels (`live`, `adopt`).
//! Then each object still to apply is answered as cheaply as the answer allows:
//! * exactly as pontoon's last apply left it (its inventory entry's uid, resourceVersion
//!   and digest match the listed object and the desired manifest): unchanged, with no
//!   request at all, so a plan of an unchanged repository makes no dry run;
//! * its namespace (or its kind's CRD) comes with the same sync: the server cannot be
//!   asked before, so it would be created, checked as far as can be without them;
//! * otherwise a server-side apply with `dryRun=All`, as the identity the sync applies it
//!   with; a team's object refused as Forbidden where the same sync creates or changes the
//!   team's Role or RoleBinding is asked again as pontoon, since the sync grants before it
//!   applies.
//!
//! Reads and dry runs only: a plan never writes.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DynamicObject, Patch};
use serde_json::Value;

use super::{Action, PlannedObject, UnitPlan, comparable, diff};
use crate::cluster::{Cluster, ClusterError, Resolved};
use crate::describe;
use crate::desired::{
    Applier, DesiredState, ObjectKey, TEAM_ROLE, TeamName, UnitDesired, apply_params,
};
use crate::sync::inventory::{Entry, Inventory, InventoryError};
use crate::sync::live::LiveObjects;
use crate::sync::memory::Known;
use crate::sync::prune::{self, Hold};
use crate::sync::resolve::{self, Planned};
use crate::sync::{SyncError, Syncer, UnitResult, adopt};

/// Why a unit could not be planned at all (what concerns single objects is in the plan).
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The unit's inventory cannot be read, or does not parse: the sync would stop too.
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error("cannot read what is live: {}", describe(.0))]
    Read(kube::Error),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

impl PlanError {
    fn of_sync(e: SyncError) -> Self {
        match e {
            SyncError::Kube(e) => PlanError::Read(e),
            SyncError::Cluster(e) => PlanError::Cluster(e),
            SyncError::Inventory(e) => PlanError::Inventory(e),
        }
    }
}

/// What the per-object answers are judged against: the unit and what the sync's reads
/// found.
struct Seen<'a> {
    desired: &'a UnitDesired,
    previous: &'a Inventory,
    /// The unit's own live objects.
    live: &'a LiveObjects,
    /// Live objects that are not the unit's own but that the sync would take (adopted,
    /// or left by a team pontoon no longer manages here).
    taken: HashSet<ObjectKey>,
    /// Namespaces the sync would create: nothing can be dry-run in them before.
    new_namespaces: BTreeSet<String>,
    /// Namespaces where the sync creates or changes the team's Role or RoleBinding.
    team_rbac_changes: BTreeSet<String>,
}

/// Why a dry run failed.
struct Refused {
    message: String,
    forbidden: bool,
}

fn is_namespace(key: &ObjectKey) -> bool {
    key.group.is_empty() && key.kind == "Namespace"
}

fn is_team_rbac(key: &ObjectKey) -> bool {
    key.group == "rbac.authorization.k8s.io"
        && (key.kind == "Role" || key.kind == "RoleBinding")
        && key.name == TEAM_ROLE
}

/// A namespaced kind without a namespace, or a cluster-scoped one with one: the sync
/// refuses it before asking the server.
fn scope_problem(p: &Planned<'_>, res: &Resolved) -> Option<String> {
    match (res.namespaced, p.key.namespace.is_empty()) {
        (true, true) => Some(format!(
            "{} is namespaced but the object has no metadata.namespace (from {})",
            p.key.kind, p.object.source
        )),
        (false, false) => Some(format!(
            "{} is cluster-scoped but the object has metadata.namespace (from {})",
            p.key.kind, p.object.source
        )),
        _ => None,
    }
}

impl Syncer {
    /// What [`Syncer::sync`] would do to this unit, without writing anything; no release
    /// of the mass-deletion hold applies (see [`Syncer::plan_at`]).
    pub async fn plan(&self, desired: &UnitDesired) -> Result<UnitPlan, PlanError> {
        self.plan_at(desired, "").await
    }

    /// What [`Syncer::sync`] of `desired` at `revision` would do, without writing
    /// anything: a release of the hold for that revision counts, as in the sync. Fails
    /// when the unit's inventory cannot be read or does not parse, as the sync would.
    pub async fn plan_at(
        &self,
        desired: &UnitDesired,
        revision: &str,
    ) -> Result<UnitPlan, PlanError> {
        let desired = &*self.options.owner.owned(desired);
        let team = &desired.unit.team;
        let mut r = UnitResult::new(desired.unit.clone(), revision);
        let mut plan = UnitPlan::new(desired.unit.clone());
        if self.claims_inventory_namespace(desired, &mut r) {
            // The sync stops before anything else: the unit's one error is the plan.
            plan.objects = r
                .errors
                .into_iter()
                .map(|e| PlannedObject {
                    object: e.object,
                    action: Action::Error { message: e.message },
                })
                .collect();
            return Ok(plan);
        }
        let previous = match self.ensure_namespace().await {
            Ok(()) => Inventory::load(&self.inventory_api(), &self.options.owner, team).await?,
            // A read-only identity cannot create the namespace; then nothing was synced yet.
            Err(_) => Inventory::default(),
        };
        let mut planned = self.resolve_desired(desired, &mut r).await;
        let named = resolve::team_roles_named_by_discovery(&planned);
        resolve::put_named_roles(&mut planned, &named);
        let desired_keys: BTreeSet<ObjectKey> = planned.iter().map(|p| p.key.clone()).collect();
        let known = Known {
            last: None,
            inventory: &previous,
            unit: desired,
        };
        let (live, others) = self
            .list_unit(team, &planned, &previous, &known)
            .await
            .map_err(PlanError::Read)?;

        let to_prune = prune::candidates(&previous, &desired_keys);
        match prune::hold_mass_deletion(
            &to_prune,
            &previous,
            &desired.prune,
            &self.options.namespace,
            &self.options.owner,
            &mut r,
        ) {
            Hold::Held => plan.held = r.message.take(),
            Hold::Released(_) => plan.released_by = r.released.clone(),
            Hold::Clear => {}
        }
        let mut taken: HashSet<ObjectKey> = others.teams.keys().cloned().collect();
        let unmanaged = self
            .refuse_foreign_objects(&mut planned, &live, others, desired, &mut r)
            .await
            .map_err(PlanError::of_sync)?;
        taken.extend(unmanaged.keys().cloned());
        adopt::refuse_unmanaged(&mut planned, &unmanaged, &previous, desired, &mut r);
        // What is still planned and met as someone else's is what the sync would take.
        let still: HashSet<&ObjectKey> = planned.iter().map(|p| &p.key).collect();
        taken.retain(|k| still.contains(k));

        let mut seen = Seen {
            desired,
            previous: &previous,
            live: &live,
            taken,
            new_namespaces: BTreeSet::new(),
            team_rbac_changes: BTreeSet::new(),
        };
        seen.new_namespaces = self.new_namespaces(&planned, &seen).await;
        let actions = self.plan_objects(&planned, &mut seen).await;
        let left = self.left_by_prune(&to_prune, &live, desired).await;
        plan.objects = objects_of(desired, actions, &r, &to_prune, &live, &left);
        Ok(plan)
    }

    /// The prune's candidates that its guarded delete would leave, and why: what is under
    /// their names now is not what pontoon created. A candidate that cannot be read is
    /// shown as a prune, as the sync would try it.
    async fn left_by_prune(
        &self,
        to_prune: &[Entry],
        live: &LiveObjects,
        desired: &UnitDesired,
    ) -> BTreeMap<ObjectKey, String> {
        let mut left = BTreeMap::new();
        for e in to_prune {
            let key = e.key();
            if prune::kept_by_rule(e, live.get(&key), &desired.prune).is_some() {
                continue;
            }
            if let Ok(Some(why)) = self
                .would_leave(e, live.get(&key), &desired.unit.team)
                .await
            {
                left.insert(key, why);
            }
        }
        left
    }

    /// What the sync of `state` would do to the teams that left it on this cluster (see
    /// [`Syncer::removed_teams`]): each removal planned as the sync removes it, everything
    /// pruned under the platform's rules, the hold included.
    pub async fn plan_removals(&self, state: &DesiredState) -> Result<Vec<UnitPlan>, PlanError> {
        let teams = self.removed_teams(state).await.map_err(PlanError::Read)?;
        let mut out = Vec::with_capacity(teams.len());
        for team in teams {
            let removal = self.removal_of(&team, &state.default_prune);
            out.push(self.plan_at(&removal, &state.revision).await?);
        }
        Ok(out)
    }

    /// The planned Namespaces that do not exist yet (the unit's own are in its lists; one
    /// read for each of the others).
    async fn new_namespaces(&self, planned: &[Planned<'_>], seen: &Seen<'_>) -> BTreeSet<String> {
        let api: kube::Api<Namespace> = kube::Api::all(self.cluster.client().clone());
        let mut out = BTreeSet::new();
        for p in planned.iter().filter(|p| is_namespace(&p.key)) {
            if seen.live.contains_key(&p.key) {
                continue;
            }
            let found = {
                let _permit = self.cluster.read_permit().await;
                api.get_metadata_opt(&p.key.name).await
            };
            // A namespace that cannot be read is taken to exist: the dry runs say more.
            if matches!(found, Ok(None)) {
                out.insert(p.key.name.clone());
            }
        }
        out
    }

    /// Each planned object's action: the objects pontoon applies as itself first (the
    /// Namespaces and the team's base, the team's Role among them), then the team's, which
    /// need to know whether the sync changes the team's Role or RoleBinding first.
    async fn plan_objects(
        &self,
        planned: &[Planned<'_>],
        seen: &mut Seen<'_>,
    ) -> BTreeMap<ObjectKey, Action> {
        let (platform, team): (Vec<&Planned>, Vec<&Planned>) = planned
            .iter()
            .partition(|p| p.object.applier == Applier::Platform);
        let mut actions = BTreeMap::new();
        let answers =
            futures::future::join_all(platform.iter().map(|p| self.plan_object(p, seen))).await;
        for (p, action) in platform.iter().zip(answers) {
            if is_team_rbac(&p.key) && action != Action::Unchanged {
                seen.team_rbac_changes.insert(p.key.namespace.clone());
            }
            actions.insert(p.key.clone(), action);
        }
        let seen = &*seen;
        let answers =
            futures::future::join_all(team.iter().map(|p| self.plan_object(p, seen))).await;
        for (p, action) in team.iter().zip(answers) {
            actions.insert(p.key.clone(), action);
        }
        actions
    }

    /// What the sync would do to one object it would apply.
    async fn plan_object(&self, p: &Planned<'_>, seen: &Seen<'_>) -> Action {
        let Some(res) = &p.resolved else {
            return Action::CreateUnchecked {
                unchecked: "its kind comes with a CustomResourceDefinition this same sync applies first, so the server cannot dry-run it before".to_owned(),
            };
        };
        if let Some(message) = scope_problem(p, res) {
            return Action::Error { message };
        }
        let live = seen.live.get(&p.key);
        if let Some(l) = live
            && seen
                .previous
                .entries
                .get(&p.key)
                .is_some_and(|e| e.unchanged(&p.digest, &l.uid, &l.resource_version))
        {
            return Action::Unchanged;
        }
        if seen.new_namespaces.contains(&p.key.namespace) {
            return Action::CreateUnchecked {
                unchecked: format!(
                    "namespace {} comes with this same sync, so the server cannot dry-run objects in it before",
                    p.key.namespace
                ),
            };
        }
        let team = &seen.desired.unit.team;
        let mut dry = self.dry_run(p, res, p.object.applier, team).await;
        if p.object.applier == Applier::Team
            && seen.team_rbac_changes.contains(&p.key.namespace)
            && matches!(&dry, Err(e) if e.forbidden)
        {
            // The sync grants the team's permissions here before it applies this.
            dry = self.dry_run(p, res, Applier::Platform, team).await;
        }
        let dry = match dry {
            Ok(d) => d,
            Err(e) => {
                return Action::Error {
                    message: format!("{} (from {})", e.message, p.object.source),
                };
            }
        };
        // Known to be absent: no read needed. (The cluster-scoped kinds other teams hold
        // are listed for new objects only; read those to be sure.)
        if live.is_none() && !seen.taken.contains(&p.key) && res.namespaced {
            return Action::Create;
        }
        match self.read_live(p, res).await {
            Ok(None) => Action::Create,
            Ok(Some(l)) => {
                let changes = diff(&comparable(&l), &comparable(&dry));
                if changes.is_empty() {
                    Action::Unchanged
                } else {
                    Action::Update { changes }
                }
            }
            Err(message) => Action::Error { message },
        }
    }

    /// A server-side apply of `p` with `dryRun=All` as `applier`, under the cluster's write
    /// limit and the apply timeout: what the object would become.
    async fn dry_run(
        &self,
        p: &Planned<'_>,
        res: &Resolved,
        applier: Applier,
        team: &TeamName,
    ) -> Result<Value, Refused> {
        let refused = |message: String| Refused {
            message,
            forbidden: false,
        };
        let client = self
            .cluster
            .client_for(applier, team)
            .map_err(|e| refused(e.to_string()))?;
        let api: kube::Api<DynamicObject> = Cluster::api(client, res, &p.key.namespace);
        let params = apply_params(&self.options.owner).force().dry_run();
        let patch = Patch::Apply(&*p.object.object);
        let answer = {
            let _permit = self.cluster.write_permit().await;
            tokio::time::timeout(
                self.options.apply_timeout,
                api.patch(&p.key.name, &params, &patch),
            )
            .await
        };
        match answer {
            Err(_) => Err(refused(format!(
                "the dry run timed out after {:?}",
                self.options.apply_timeout
            ))),
            Ok(Ok(d)) => serde_json::to_value(d).map_err(|e| refused(e.to_string())),
            Ok(Err(kube::Error::Api(s))) => Err(Refused {
                forbidden: s.code == 403,
                message: format!("{} ({})", s.message, s.reason),
            }),
            Ok(Err(e)) => Err(refused(describe(&e))),
        }
    }

    /// The live object under `p`'s name, whole, read as pontoon.
    async fn read_live(&self, p: &Planned<'_>, res: &Resolved) -> Result<Option<Value>, String> {
        let api: kube::Api<DynamicObject> =
            Cluster::api(self.cluster.client().clone(), res, &p.key.namespace);
        let found = {
            let _permit = self.cluster.read_permit().await;
            api.get_opt(&p.key.name).await
        };
        match found {
            Ok(Some(o)) => serde_json::to_value(o).map(Some).map_err(|e| e.to_string()),
            Ok(None) => Ok(None),
            Err(e) => Err(describe(&e)),
        }
    }
}

/// The plan's objects in the order the repo gives them: each desired object with its
/// action, its refusal (from the sync's decisions in `r`), or why it is left out (a
/// Namespace refused with everything in it); then what `r` refuses that is no desired
/// object (the unit, a manifest without a name); then what the prune deletes or keeps.
fn objects_of(
    desired: &UnitDesired,
    mut actions: BTreeMap<ObjectKey, Action>,
    r: &UnitResult,
    to_prune: &[Entry],
    live: &LiveObjects,
    left: &BTreeMap<ObjectKey, String>,
) -> Vec<PlannedObject> {
    let mut errors: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for e in &r.errors {
        errors.entry(&e.object).or_default().push(&e.message);
    }
    let error = |object: &str| errors.get(object).map(|m| m.join("; "));
    let mut out = Vec::with_capacity(desired.objects.len() + to_prune.len());
    let mut shown = BTreeSet::new();
    for key in desired.objects.iter().filter_map(|o| o.key()) {
        let object = key.to_string();
        let action = if let Some(message) = error(&object) {
            Action::Error { message }
        } else if let Some(action) = actions.remove(&key) {
            action
        } else {
            let namespace = ObjectKey {
                group: String::new(),
                kind: "Namespace".to_owned(),
                namespace: String::new(),
                name: key.namespace.clone(),
            };
            let why = error(&namespace.to_string())
                .unwrap_or_else(|| "left out by the sync's checks".to_owned());
            Action::Error {
                message: format!("not applied: {why}"),
            }
        };
        out.push(PlannedObject {
            object: object.clone(),
            action,
        });
        shown.insert(object);
    }
    for (object, messages) in errors.iter().filter(|(o, _)| !shown.contains(**o)) {
        out.push(PlannedObject {
            object: (*object).to_owned(),
            action: Action::Error {
                message: messages.join("; "),
            },
        });
    }
    out.extend(to_prune.iter().map(|e| {
        let key = e.key();
        let action = match prune::kept_by_rule(e, live.get(&key), &desired.prune) {
            Some(reason) => Action::Keep {
                reason: reason.to_owned(),
            },
            None => match left.get(&key) {
                Some(why) => Action::Keep {
                    reason: format!("pontoon did not create what is there now: {why}"),
                },
                None => Action::Prune,
            },
        };
        PlannedObject {
            object: key.to_string(),
            action,
        }
    }));
    out
}
