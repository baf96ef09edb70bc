//! What is live on the cluster, and who owns it: the unit's own objects (one list per kind
//! and namespace), the other teams' objects a unit must not take over, the objects that
//! exist without pontoon's labels (which `adopt` refuses unless the platform adopts them),
//! and which team holds each of pontoon's Namespaces.
//!
//! Everything here only reads. Ownership is what an object's labels say; an object of a
//! team whose inventory is gone from the cluster belongs to no one any more. An object
//! another daemon instance owns (another `sync.owner` in its `pontoon.dev/owner` label) is
//! that daemon's for good: it is never the unit's, never taken over, and never pruned.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kube::api::ListParams;
use serde_json::Value;

use super::adopt::Unmanaged;
use super::health::{self, Health};
use super::inventory::Inventory;
use super::memory::Known;
use super::resolve::{Planned, api_version_of};
use super::{SyncError, Syncer, UnitResult};
use crate::cluster::{Cluster, Resolved, gvk_of, retry_transport};
use crate::desired::HealthRule;
use crate::desired::{
    ANNOTATION_PRUNE, LABEL_MANAGED_BY, LABEL_TEAM, MANAGED_BY_VALUE, NamespaceOwners, ObjectKey,
    Owner, TeamName, UnitDesired, selector_team,
};

/// Live facts about an object, from the per-kind lists.
#[derive(Debug, Clone)]
pub(super) struct Live {
    pub resource_version: String,
    pub uid: String,
    pub prune_disabled: bool,
    /// For kinds read whole for their health: what the listed object says.
    pub health: Option<Health>,
    /// The whole object as listed, kept only for kinds listed whole and only when it may
    /// have moved since pontoon's last apply (the apply decision judges it from this
    /// rather than reading it again); `None` for everything else, so the lists of a large
    /// unit do not stay in memory.
    pub object: Option<Value>,
}

impl Live {
    /// The facts of an object read whole (from a list, a get or a dry run's answer).
    pub fn found(object: &Value) -> Live {
        let field = |path| {
            object
                .pointer(path)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Live {
            resource_version: field("/metadata/resourceVersion"),
            uid: field("/metadata/uid"),
            prune_disabled: false,
            health: None,
            object: None,
        }
    }
}

/// The unit's live objects by key.
pub(super) type LiveObjects = HashMap<ObjectKey, Live>;

/// Objects of other teams, by key, with the team their label names.
pub(super) type ForeignOwners = HashMap<ObjectKey, String>;

/// Objects of other daemon instances, by key, with the owner and team their labels name.
pub(super) type OtherDaemons = HashMap<ObjectKey, (String, String)>;

/// The live objects met that are not the unit's own.
#[derive(Debug, Default)]
pub(super) struct Others {
    /// Other teams' objects (of this daemon's owner).
    pub teams: ForeignOwners,
    /// Objects another daemon instance (another owner) applied, whatever their team.
    pub daemons: OtherDaemons,
    /// Objects without pontoon's labels (made by hand, by another tool, by a controller).
    pub unmanaged: Unmanaged,
}

/// Who an object belongs to, by its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HeldBy {
    /// This daemon's (its owner's), for the team its label names.
    Team(String),
    /// Another daemon instance's: the owner and the team its labels name.
    Daemon { owner: String, team: String },
    /// Not pontoon's: without `managed-by: pontoon` or without a team label.
    Unmanaged,
}

/// The team that holds an object, when it carries both of pontoon's labels.
pub(super) fn team_label(labels: Option<&BTreeMap<String, String>>) -> Option<&String> {
    let labels = labels?;
    (labels.get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGED_BY_VALUE))
        .then(|| labels.get(LABEL_TEAM))
        .flatten()
}

/// Who holds an object with `meta`, as seen by the daemon instance `me`.
fn held_by(meta: &kube::api::ObjectMeta, me: &Owner) -> HeldBy {
    let labels = meta.labels.as_ref();
    match team_label(labels) {
        None => HeldBy::Unmanaged,
        Some(team) if me.owns(labels) => HeldBy::Team(team.clone()),
        Some(team) => HeldBy::Daemon {
            owner: Owner::of_labels(labels).to_owned(),
            team: team.clone(),
        },
    }
}

/// Adds to `refused` (an error in `r` each) every planned object in a Namespace another
/// daemon instance holds: nothing is put into it, as nothing is put into a Namespace that
/// exists without pontoon's labels.
fn refuse_inside_other_daemons_namespaces(
    planned: &[Planned<'_>],
    daemons: &OtherDaemons,
    refused: &mut BTreeSet<ObjectKey>,
    r: &mut UnitResult,
) {
    let held: BTreeMap<&str, &str> = daemons
        .iter()
        .filter(|(k, _)| k.group.is_empty() && k.kind == "Namespace")
        .map(|(k, (owner, _))| (k.name.as_str(), owner.as_str()))
        .collect();
    for p in planned {
        let Some(owner) = held.get(p.key.namespace.as_str()) else {
            continue;
        };
        if refused.insert(p.key.clone()) {
            r.error(
                &p.key,
                format!(
                    "namespace {} belongs to the pontoon instance with owner {owner}; nothing is applied into it (from {})",
                    p.key.namespace, p.object.source
                ),
            );
        }
    }
}

/// Kinds to list, each with the namespaces to list it in (`""`: cluster-wide) and how
/// much of each object to read.
type KindsToList = BTreeMap<(String, String), (Resolved, BTreeSet<String>, Detail)>;

/// How much of each listed object to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detail {
    /// Metadata only.
    Metadata,
    /// The whole object: its health is read from it.
    Whole,
}

/// The platform's health rule of each planned object that has one.
type Rules<'a> = HashMap<&'a ObjectKey, &'a HealthRule>;

fn prune_disabled(meta: &kube::api::ObjectMeta) -> bool {
    let disabled = |m: &Option<BTreeMap<String, String>>| {
        m.as_ref()
            .and_then(|m| m.get(ANNOTATION_PRUNE))
            .is_some_and(|v| v == "disabled")
    };
    disabled(&meta.annotations) || disabled(&meta.labels)
}

pub(super) fn to_json<T: serde::Serialize>(o: T) -> Result<Value, kube::Error> {
    serde_json::to_value(o).map_err(kube::Error::SerdeError)
}

impl Syncer {
    /// Which team each of this daemon's owner's Namespaces on this cluster belongs to, by
    /// its team label: where a render with no earlier one to go by learns who held a
    /// namespace. Another owner's Namespaces are not listed: the sync refuses them.
    pub async fn namespace_owners(&self) -> Result<NamespaceOwners, kube::Error> {
        let api: kube::Api<k8s_openapi::api::core::v1::Namespace> =
            kube::Api::all(self.cluster.client().clone());
        let me = &self.options.owner;
        let items = self
            .list_pages(&me.selector_managed(), |p| {
                let api = api.clone();
                async move { api.list_metadata(&p).await }
            })
            .await?;
        Ok(items
            .into_iter()
            .filter(|n| me.owns(n.metadata.labels.as_ref()))
            .filter_map(|n| {
                let team = n.metadata.labels?.remove(LABEL_TEAM)?;
                Some((n.metadata.name?, TeamName(team)))
            })
            .collect())
    }

    /// Live state of everything the unit holds or will hold, and the other teams' objects
    /// met on the way: one list per kind and namespace it uses (a namespace's objects are
    /// what the server scans for it). A listed whole object is kept only if `known` says
    /// it may have moved since pontoon's last apply.
    pub(super) async fn list_unit(
        &self,
        team: &TeamName,
        planned: &[Planned<'_>],
        previous: &Inventory,
        known: &Known<'_>,
    ) -> Result<(LiveObjects, Others), kube::Error> {
        let mut kinds = KindsToList::new();
        let mut rules = Rules::new();
        for p in planned {
            if let Some(res) = &p.resolved {
                let ruled = p.object.health.is_some();
                let entry = kinds
                    .entry((
                        api_version_of(&p.object.object).to_owned(),
                        p.key.kind.clone(),
                    ))
                    .or_insert_with(|| (res.clone(), BTreeSet::new(), Detail::Metadata));
                entry.1.insert(p.key.namespace.clone());
                if health::read_whole(&p.key.group, &p.key.kind, ruled) {
                    entry.2 = Detail::Whole;
                }
            }
            if let Some(rule) = &p.object.health {
                rules.insert(&p.key, rule);
            }
        }
        // Kinds only the inventory names are listed for the prune: metadata is enough.
        for e in previous.entries.values() {
            if let Ok(res) = self.cluster.resolve(&gvk_of(&e.api_version, &e.kind)).await {
                kinds
                    .entry((e.api_version.clone(), e.kind.clone()))
                    .or_insert_with(|| (res, BTreeSet::new(), Detail::Metadata))
                    .1
                    .insert(e.namespace.clone());
            }
        }
        self.list_live(team, kinds.into_values(), &rules, known)
            .await
    }

    /// Lists the unit's live objects of the given kinds in the namespaces given with each,
    /// as much of each as its kind's [`Detail`] says; the health of each of the unit's
    /// objects read whole is read from it (by its platform rule in `rules`, if any).
    ///
    /// In a namespace the list takes every object of the kind, whatever its labels: the
    /// same request then also names the other teams' objects there, and the objects that
    /// exist without pontoon's labels, neither of which the unit may take over, so a
    /// first sync does not list each namespace twice nor read each new object. A
    /// cluster-scoped kind is listed for the team alone (every team's Namespaces would be
    /// a long list); the new cluster-scoped objects are looked for by
    /// [`Syncer::refuse_foreign_objects`].
    async fn list_live(
        &self,
        team: &TeamName,
        kinds: impl Iterator<Item = (Resolved, BTreeSet<String>, Detail)>,
        rules: &Rules<'_>,
        known: &Known<'_>,
    ) -> Result<(LiveObjects, Others), kube::Error> {
        let own = selector_team(team);
        let mut pending = Vec::new();
        for (res, namespaces, detail) in kinds {
            if res.namespaced {
                for namespace in namespaces {
                    pending.push(self.list_live_in(res.clone(), namespace, "", detail));
                }
            } else {
                pending.push(self.list_live_in(res, String::new(), &own, detail));
            }
        }
        let (mut live, mut others) = (HashMap::new(), Others::default());
        for found in futures::future::join_all(pending).await {
            for (key, held, l) in found? {
                match held {
                    HeldBy::Team(owner) if owner == team.0 => {
                        let mut l = l;
                        if let Some(object) = &l.object {
                            let rule = rules.get(&key).copied();
                            l.health = Some(health::of(object, rule));
                            if !known.moved(&key, &l.resource_version) {
                                l.object = None;
                            }
                        }
                        live.insert(key, l);
                    }
                    HeldBy::Team(owner) => {
                        others.teams.insert(key, owner);
                    }
                    HeldBy::Daemon { owner, team } => {
                        others.daemons.insert(key, (owner, team));
                    }
                    HeldBy::Unmanaged => {
                        others.unmanaged.insert(key, l.uid);
                    }
                }
            }
        }
        Ok((live, others))
    }

    /// One kind's objects matching `selector` in one namespace (`""`: cluster-wide), each
    /// with who its labels say owns it.
    async fn list_live_in(
        &self,
        res: Resolved,
        namespace: String,
        selector: &str,
        detail: Detail,
    ) -> Result<Vec<(ObjectKey, HeldBy, Live)>, kube::Error> {
        let api = &Cluster::api(self.cluster.client().clone(), &res, &namespace);
        let entry = |m: &kube::api::ObjectMeta, object| {
            let key = ObjectKey {
                group: res.resource.group.clone(),
                kind: res.resource.kind.clone(),
                namespace: m.namespace.clone().unwrap_or_default(),
                name: m.name.clone().unwrap_or_default(),
            };
            let owner = held_by(m, &self.options.owner);
            let live = Live {
                resource_version: m.resource_version.clone().unwrap_or_default(),
                uid: m.uid.clone().unwrap_or_default(),
                prune_disabled: prune_disabled(m),
                health: None,
                object,
            };
            (key, owner, live)
        };
        if detail == Detail::Metadata {
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
            out.push(entry(&o.metadata, Some(object)));
        }
        Ok(out)
    }

    /// Leaves out of `planned` every new object another team owns (an error in `r`); an
    /// object of a team pontoon no longer manages here is taken over instead. Returns the
    /// objects met that exist without pontoon's labels, for [`super::adopt`] to judge.
    ///
    /// A team pontoon no longer manages on this cluster (its removal is done, so its
    /// inventory is gone) owns nothing: what the prune rules kept of it, as they keep
    /// Namespaces, goes to the team the repo now gives it to (a renamed team, a namespace
    /// handed over).
    pub(super) async fn refuse_foreign_objects(
        &self,
        planned: &mut Vec<Planned<'_>>,
        live: &LiveObjects,
        mut others: Others,
        desired: &UnitDesired,
        r: &mut UnitResult,
    ) -> Result<Unmanaged, SyncError> {
        let team = &desired.unit.team;
        let new: Vec<&Planned> = planned
            .iter()
            .filter(|p| !live.contains_key(&p.key))
            .collect();
        let cluster_scoped = self.foreign_owners(&new, team).await?;
        others.teams.extend(cluster_scoped.teams);
        others.daemons.extend(cluster_scoped.daemons);
        others.unmanaged.extend(cluster_scoped.unmanaged);
        let foreign = others.teams;
        let me = &self.options.owner;
        let claimed: BTreeSet<&String> = new.iter().filter_map(|p| foreign.get(&p.key)).collect();
        let mut gone = BTreeSet::new();
        for owner in claimed {
            let owner = TeamName(owner.clone());
            if !Inventory::exists(&self.inventory_api(), me, &owner).await? {
                gone.insert(owner.0);
            }
        }
        let mut owned_elsewhere = BTreeSet::new();
        for p in &new {
            if let Some((owner, other_team)) = others.daemons.get(&p.key) {
                r.error(
                    &p.key,
                    format!(
                        "belongs to the pontoon instance with owner {owner} (team {other_team}); this one (sync.owner {me}) does not take over another instance's object (from {}, team {team})",
                        p.object.source
                    ),
                );
                owned_elsewhere.insert(p.key.clone());
            } else if let Some(owner) = foreign.get(&p.key).filter(|o| gone.contains(*o)) {
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
        refuse_inside_other_daemons_namespaces(planned, &others.daemons, &mut owned_elsewhere, r);
        planned.retain(|p| !owned_elsewhere.contains(&p.key));
        Ok(others.unmanaged)
    }

    /// Owners (other teams, other daemons, or none: no pontoon labels) of the
    /// cluster-scoped objects about to be created, from one metadata read of each by name
    /// (a 404 says it is free). The namespaced ones came with the unit's own lists. A list
    /// of the kind would see them too, but it returns every object of the kind on the
    /// cluster: every team's Namespace for each team's first sync, so a thousand teams'
    /// first syncs would read a million. A read per new object costs what the unit is.
    async fn foreign_owners(
        &self,
        new: &[&Planned<'_>],
        team: &TeamName,
    ) -> Result<Others, kube::Error> {
        let reads = new.iter().filter_map(|p| {
            let res = p.resolved.as_ref().filter(|r| !r.namespaced)?;
            Some(self.read_foreign(res, &p.key))
        });
        let found = futures::future::join_all(reads).await;
        let mut out = Others::default();
        for f in found {
            let Some((key, held, live)) = f? else {
                continue;
            };
            match held {
                HeldBy::Team(owner) if owner == team.0 => {}
                HeldBy::Team(owner) => {
                    out.teams.insert(key, owner);
                }
                HeldBy::Daemon { owner, team } => {
                    out.daemons.insert(key, (owner, team));
                }
                HeldBy::Unmanaged => {
                    out.unmanaged.insert(key, live.uid);
                }
            }
        }
        Ok(out)
    }

    /// One cluster-scoped object's metadata by name, with who its labels say owns it;
    /// `None` when there is no such object.
    async fn read_foreign(
        &self,
        res: &Resolved,
        key: &ObjectKey,
    ) -> Result<Option<(ObjectKey, HeldBy, Live)>, kube::Error> {
        let api = Cluster::api(self.cluster.client().clone(), res, "");
        let found = {
            let _permit = self.cluster.read_permit().await;
            retry_transport(|| api.get_metadata_opt(&key.name)).await?
        };
        Ok(found.map(|o| {
            let m = &o.metadata;
            let live = Live {
                resource_version: m.resource_version.clone().unwrap_or_default(),
                uid: m.uid.clone().unwrap_or_default(),
                prune_disabled: prune_disabled(m),
                health: None,
                object: None,
            };
            (key.clone(), held_by(m, &self.options.owner), live)
        }))
    }

    /// Every object matching `selector` (`""`: every object), page by page, each page under the cluster's read
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
        let mut params = ListParams::default().limit(500);
        if !selector.is_empty() {
            params = params.labels(selector);
        }
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
}
