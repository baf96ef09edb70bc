//! Resolving the desired objects: each manifest with what discovery says about its kind
//! (resource name, scope). A kind whose CRD arrives in the same sync cannot be resolved
//! yet; it waits until the CRDs are established. Resolving only reads (discovery).

use std::collections::BTreeSet;

use serde_json::Value;

use super::inventory::Entry;
use super::memory::object_hash;
use super::order::Phase;
use super::{Syncer, UnitResult};
use crate::cluster::{ClusterError, Resolved, gvk_of};
use crate::desired::{DesiredObject, ObjectKey, TeamName, UnitDesired};

/// A desired object with what discovery found about it.
pub(super) struct Planned<'a> {
    pub key: ObjectKey,
    pub object: &'a DesiredObject,
    /// `None` until the CRD that brings its kind is established.
    pub resolved: Option<Resolved>,
    pub hash: u64,
}

impl<'a> Planned<'a> {
    pub fn new(key: ObjectKey, object: &'a DesiredObject, resolved: Option<Resolved>) -> Self {
        Planned {
            hash: object_hash(object),
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
        }
    }
}

/// A manifest's apiVersion (`""` when missing).
pub(super) fn api_version_of(o: &Value) -> &str {
    o.get("apiVersion").and_then(Value::as_str).unwrap_or("")
}

/// The API groups of the CRDs among the desired objects: kinds of these groups may be
/// unknown to discovery until the sync applies their CRDs.
fn groups_of_crds(desired: &UnitDesired) -> BTreeSet<String> {
    desired
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
