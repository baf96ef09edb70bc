//! Resolving the desired objects: each manifest with what discovery says about its kind
//! (resource name, scope). A kind whose CRD arrives in the same sync cannot be resolved
//! yet; it waits until the CRDs are established. Resolving only reads (discovery).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::Value;

use super::inventory::Entry;
use super::order::Phase;
use super::{Syncer, UnitResult};
use crate::cluster::{ClusterError, Resolved, gvk_of};
use crate::desired::{
    Applier, DesiredObject, Digest, Manifest, ObjectKey, TEAM_ROLE, TeamName, UnitDesired,
    plural_guess,
};

/// A desired object with what discovery found about it.
pub(super) struct Planned<'a> {
    pub key: ObjectKey,
    pub object: &'a DesiredObject,
    /// `None` until the CRD that brings its kind is established.
    pub resolved: Option<Resolved>,
    pub digest: Digest,
}

impl<'a> Planned<'a> {
    pub fn new(key: ObjectKey, object: &'a DesiredObject, resolved: Option<Resolved>) -> Self {
        Planned {
            digest: object.digest(),
            key,
            object,
            resolved,
        }
    }

    /// Its phase in a sync; `None` while its kind is not resolved.
    pub fn phase(&self) -> Option<Phase> {
        let res = self.resolved.as_ref()?;
        Some(Phase::of(
            &self.key.group,
            &self.key.kind,
            res.namespaced,
            self.object.applier,
        ))
    }

    /// The inventory entry that finds and deletes it with the right identity.
    pub fn entry(&self) -> Entry {
        Entry {
            api_version: api_version_of(&self.object.object).to_owned(),
            kind: self.key.kind.clone(),
            namespace: self.key.namespace.clone(),
            name: self.key.name.clone(),
            applier: self.object.applier,
            uid: None,
            resource_version: None,
            digest: Some(self.digest),
        }
    }
}

/// A manifest's apiVersion (`""` when missing), read from its text.
pub(super) fn api_version_of(o: &Manifest) -> &str {
    o.api_version()
}

/// The API groups of the CRDs among the desired objects: kinds of these groups may be
/// unknown to discovery until the sync applies their CRDs.
fn groups_of_crds(desired: &UnitDesired) -> BTreeSet<String> {
    desired
        .objects
        .iter()
        .filter(|o| o.object.kind() == "CustomResourceDefinition")
        .filter_map(|o| {
            o.object
                .to_value()
                .pointer("/spec/group")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect()
}

/// Why an object's kind could not be resolved, in one line naming where the object comes
/// from: its file and line, and the team.
fn unresolved(e: &ClusterError, object: &DesiredObject, team: &TeamName) -> String {
    format!(
        "{} (from {}, team {team})",
        crate::describe(e),
        object.source
    )
}

impl Syncer {
    /// Resolves every desired object; an object without a key, or of a kind the cluster
    /// does not know (and no CRD of this sync brings), is an error in `r` and left out.
    pub(super) async fn resolve_desired<'a>(
        &self,
        desired: &'a UnitDesired,
        r: &mut UnitResult,
    ) -> Vec<Planned<'a>> {
        let crd_groups = groups_of_crds(desired);
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
                // Its kind may come with a component it waits for: it is not applied
                // before that component is healthy, and is resolved then.
                Err(_) if self.waits_for_a_component(desired, &key) => None,
                Err(e) => {
                    let message = unresolved(&e, object, &desired.unit.team);
                    r.error(&key, message);
                    continue;
                }
            };
            planned.push(Planned::new(key, object, resolved));
        }
        planned
    }

    /// Whether `key` requires a platform component not healthy on this cluster.
    fn waits_for_a_component(&self, desired: &UnitDesired, key: &ObjectKey) -> bool {
        desired
            .components
            .requires
            .get(key)
            .is_some_and(|names| self.components.first_not_healthy(names).is_some())
    }

    /// Resolves an object whose kind came with a CRD of this sync, once the CRDs are
    /// established; an error in `r` when the kind is still unknown.
    pub(super) async fn resolve_deferred<'a>(
        &self,
        mut p: Planned<'a>,
        r: &mut UnitResult,
    ) -> Option<Planned<'a>> {
        let gvk = gvk_of(api_version_of(&p.object.object), &p.key.kind);
        match self.cluster.resolve(&gvk).await {
            Ok(res) => {
                p.resolved = Some(res);
                Some(p)
            }
            Err(e) => {
                let message = unresolved(&e, p.object, &r.unit.team);
                r.error(&p.key, message);
                None
            }
        }
    }
}

/// The unit's team Roles with each resource render guessed (see
/// [`crate::desired::plural_guess`]) replaced by the name discovery gives the kind of a
/// team object in this unit; empty when every guess was right. A Role naming a resource
/// the cluster does not serve would let the apiserver refuse the team's own objects.
pub(super) fn team_roles_named_by_discovery(planned: &[Planned<'_>]) -> Vec<DesiredObject> {
    let mut served: BTreeMap<(String, String), String> = BTreeMap::new();
    for p in planned.iter().filter(|p| p.object.applier == Applier::Team) {
        if let Some(res) = &p.resolved {
            let guess = plural_guess(&res.resource.kind);
            if guess != res.resource.plural {
                served.insert(
                    (res.resource.group.clone(), guess),
                    res.resource.plural.clone(),
                );
            }
        }
    }
    if served.is_empty() {
        return Vec::new();
    }
    planned
        .iter()
        .filter(|p| is_team_role(p))
        .filter_map(|p| {
            let mut object = (*p.object.object).clone();
            let mut renamed = false;
            for rule in object.get_mut("rules")?.as_array_mut()? {
                let groups: Vec<String> = rule
                    .get("apiGroups")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|g| g.as_str().map(str::to_owned))
                    .collect();
                let Some(resources) = rule.get_mut("resources").and_then(Value::as_array_mut)
                else {
                    continue;
                };
                for resource in resources.iter_mut() {
                    let Some(guess) = resource.as_str().map(str::to_owned) else {
                        continue;
                    };
                    if let Some(name) = groups
                        .iter()
                        .find_map(|g| served.get(&(g.clone(), guess.clone())))
                    {
                        *resource = Value::String(name.clone());
                        renamed = true;
                    }
                }
            }
            renamed.then(|| DesiredObject {
                object: Arc::new(object),
                ..p.object.clone()
            })
        })
        .collect()
}

/// Puts `named` Roles in place of the planned ones they stand for.
pub(super) fn put_named_roles<'a>(planned: &mut [Planned<'a>], named: &'a [DesiredObject]) {
    for p in planned.iter_mut() {
        if let Some(n) = named.iter().find(|n| n.key().as_ref() == Some(&p.key)) {
            *p = Planned::new(p.key.clone(), n, p.resolved.clone());
        }
    }
}

fn is_team_role(p: &Planned<'_>) -> bool {
    p.object.applier == Applier::Platform
        && p.key.group == "rbac.authorization.k8s.io"
        && p.key.kind == "Role"
        && p.key.name == TEAM_ROLE
}
